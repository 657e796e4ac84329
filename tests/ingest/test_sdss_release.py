"""The SDSS release as published (issue #14): the real calibObj sweep, and specObj / photoPosPlate / photoObj /
sweep fixtures written from the data model (tests/support/sdss_fixtures.py, whose ground truth is computed without
astrodask): ids, asinh magnitudes, PSF magnitudes, dereddening, the quality cuts (counted), the row-position
join of a specObj file with its photometry (a mismatched id quarantined), and rows read = written +
quarantined + filtered."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from support import sdss_fixtures as sf

from astrodask import ingest, schema
from astrodask.errors import AstrodaskError
from astrodask.ingest import ConvertConfig

REAL_SDSS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "sdss"
REAL_SWEEP = REAL_SDSS / "calibObj-004510-4-star.fits.gz"
REAL_PHOTOOBJ = REAL_SDSS / "photoObj-003900-6-0269.fits"
BANDS = list(schema.BANDS)
PSF = list(schema.PSF_BANDS)


@pytest.fixture(scope="module")
def client():
    from distributed import Client

    with Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=":0") as c:
        yield c


def convert(client, src, dest, **kw) -> ingest.ConvertResult:
    sources = tuple(str(s) for s in (src if isinstance(src, (list, tuple)) else [src]))
    return ingest.run(ConvertConfig(sources, str(dest), quiet=True, **kw), client)


def read(dest):
    return pq.read_table(dest).to_pandas()


def quarantine(dest):
    q = Path(dest) / "_quarantine"
    return pq.read_table(q).to_pandas() if q.exists() else None


def accounting(s: dict) -> None:
    assert s.read == s.written + s.quarantined + sum(s.filtered.values()), s


def measured(mags: np.ndarray, *truths) -> np.ndarray:
    """The fixtures' magnitudes as a conversion gives them: null (NaN) where the flux has no measurement (its
    u band in the ``zero_flux`` rows, where the fixtures write inverse variance 0)."""
    out = np.array(mags, np.float64, copy=True)
    start = 0
    for t in truths:
        out[start + np.asarray(t.rows["zero_flux"], int), 0] = np.nan
        start += t.n
    return out


# ------------------------------------------------------------------------------------------------ real sweep


@pytest.mark.realdata
def test_real_sweep_ids_magnitudes_and_cuts(client, tmp_path):
    if not REAL_SWEEP.is_file():
        pytest.skip(f"real sweep not found at {REAL_SWEEP} (see ../shared/data/README.md)")
    from astropy.io import fits

    with fits.open(REAL_SWEEP) as h:
        d = h[1].data
        rerun = np.array([int(x) for x in d["RERUN"]])
        objid = sf.compose_objid(2, rerun, d["RUN"], d["CAMCOL"], d["FIELD"], d["ID"]).astype(np.uint64)
        model, psf = sf.asinh_mags(d["MODELFLUX"]), sf.asinh_mags(d["PSFFLUX"])
        no_model, no_psf = d["MODELFLUX_IVAR"] == 0, d["PSFFLUX_IVAR"] == 0
        ext = d["EXTINCTION"].astype(np.float64)
        primary = sf.survey_primary(d["RESOLVE_STATUS"])
        ra = d["RA"].astype(np.float64)
    s = convert(client, REAL_SWEEP, tmp_path / "all", cuts=False)
    assert (s.read, s.written, s.quarantined, s.filtered) == (5232, 5232, 0, {})
    out = read(tmp_path / "all")
    assert out["obj_ID"].tolist() == objid.tolist()
    np.testing.assert_allclose(out[BANDS].to_numpy(), np.where(no_model, np.nan, model), atol=2e-5)  # float32
    np.testing.assert_allclose(out[PSF].to_numpy(), np.where(no_psf, np.nan, psf), atol=2e-5)
    np.testing.assert_array_equal(out["alpha"].to_numpy(), ra)
    assert (out["run_ID"] == 4510).all() and (out["rerun_ID"] == 301).all() and (out["cam_col"] == 4).all()
    # a band with MODELFLUX_IVAR = 0 is no measurement (its flux is exactly 0): null, counted, never the zero-flux
    # asinh magnitude (g = 25.11); every other zero or negative flux keeps its finite magnitude
    assert int(no_model.sum()) == 23 and no_model.sum(axis=0).tolist() == [3, 11, 0, 2, 7]
    np.testing.assert_array_equal(out[BANDS].isna().to_numpy(), no_model)
    np.testing.assert_array_equal(out[PSF].isna().to_numpy(), no_psf)
    assert s.nulls == {c: int(n) for c, n in zip(BANDS + PSF, [*no_model.sum(axis=0), *no_psf.sum(axis=0)]) if n}
    # the default cut: survey-primary detections only, the rest counted
    s = convert(client, REAL_SWEEP, tmp_path / "cut")
    accounting(s)
    assert (s.written, s.filtered) == (int(primary.sum()), {"survey_primary": 5232 - int(primary.sum())})
    assert int(primary.sum()) == 147
    assert read(tmp_path / "cut")["obj_ID"].tolist() == objid[primary].tolist()
    meta = json.loads((tmp_path / "cut" / "_astrodask.json").read_text())
    assert meta["filtered"] == {"survey_primary": 5085} and "MODELFLUX" in meta["magnitudes"]
    assert meta["inputs"][0]["layout"] == "sdss-sweep"
    # --deredden and --magnitudes psf
    convert(client, REAL_SWEEP, tmp_path / "dered", cuts=False, deredden=True, magnitudes="psf")
    dered = read(tmp_path / "dered")
    np.testing.assert_allclose(dered[BANDS].to_numpy(), np.where(no_psf, np.nan, psf - ext), atol=2e-5)
    np.testing.assert_allclose(dered[PSF].to_numpy(), np.where(no_psf, np.nan, psf - ext), atol=2e-5)


@pytest.mark.realdata
def test_real_photoobj_layout(client, tmp_path):
    """The real photoObj file: 139 columns, OBJID strings, RESOLVE_STATUS, the [5] flux and magnitude arrays."""
    if not REAL_PHOTOOBJ.is_file():
        pytest.skip(f"real photoObj file not found at {REAL_PHOTOOBJ} (see ../shared/data/README.md)")
    from astropy.io import fits

    with fits.open(REAL_PHOTOOBJ) as h:
        d = h[1].data
        assert len(h[1].columns) == 139 and h[1].columns["OBJID"].format == "19A"
        objid = np.array([int(x) for x in d["OBJID"]], dtype=np.uint64)
        primary = sf.survey_primary(d["RESOLVE_STATUS"])
        modelmag, psfmag = d["MODELMAG"].astype(np.float64), d["PSFMAG"].astype(np.float64)
        cmodelmag = d["CMODELMAG"].astype(np.float64)
        ra, dec = d["RA"].astype(np.float64), d["DEC"].astype(np.float64)
    assert len(objid) == 981 and int(primary.sum()) == 703
    # every row: the bands with inverse variance 0 are null exactly where SDSS's own magnitudes are -9999
    s = convert(client, REAL_PHOTOOBJ, tmp_path / "all", cuts=False)
    out = read(tmp_path / "all")
    no_measurement = modelmag == -9999
    assert int(no_measurement.sum()) == 179 and not (no_measurement & primary[:, None]).any()
    np.testing.assert_array_equal(out[BANDS].isna().to_numpy(), no_measurement)
    np.testing.assert_array_equal(out[PSF].isna().to_numpy(), psfmag == -9999)
    np.testing.assert_allclose(out[BANDS].to_numpy(), np.where(no_measurement, np.nan, modelmag), atol=2e-5)
    assert sum(s.nulls.get(b, 0) for b in BANDS) == 179
    convert(client, REAL_PHOTOOBJ, tmp_path / "cmodel", cuts=False, magnitudes="cmodel")
    np.testing.assert_array_equal(read(tmp_path / "cmodel")[BANDS].isna().to_numpy(), cmodelmag == -9999)
    s = convert(client, REAL_PHOTOOBJ, tmp_path / "ds")
    accounting(s)
    assert (s.read, s.written, s.filtered) == (981, 703, {"survey_primary": 278})
    out = read(tmp_path / "ds")
    assert out["obj_ID"].tolist() == objid[primary].tolist()
    # the asinh magnitudes of MODELFLUX / PSFFLUX are the file's own MODELMAG / PSFMAG
    np.testing.assert_allclose(out[BANDS].to_numpy(), modelmag[primary], atol=2e-5)
    np.testing.assert_allclose(out[PSF].to_numpy(), psfmag[primary], atol=2e-5)
    np.testing.assert_array_equal(out["alpha"].to_numpy(), ra[primary])
    np.testing.assert_array_equal(out["delta"].to_numpy(), dec[primary])
    assert (out["run_ID"] == 3900).all() and (out["cam_col"] == 6).all() and (out["field_ID"] == 269).all()
    meta = json.loads((tmp_path / "ds" / "_astrodask.json").read_text())
    assert meta["inputs"][0]["layout"] == "sdss-photoobj" and "MODELFLUX" in meta["magnitudes"]
    assert "class" not in out.columns or out["class"].isna().all()  # photometry: no labels


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def spec_pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("spec")
    spec = sf.write_specobj(d / "specObj-dr17.fits", n=400, seed=1)
    photo = sf.photopos_for(d / "photoPosPlate-dr17.fits", spec, seed=1)
    return spec, photo


def test_specobj_with_photoposplate_cuts_and_row_join(client, spec_pair, tmp_path):
    spec, photo = spec_pair
    s = convert(client, spec.path, tmp_path / "ds", photometry=str(photo.path), block_size=64 * 1024)
    accounting(s)
    keep = spec.keep
    assert s.filtered == {"spec_primary": int((~spec.primary).sum()),
                             "zwarning": int((spec.primary & ~spec.zwarning_ok).sum())}
    no_photo = keep & ~spec.has_photo
    mismatch = np.zeros(spec.n, bool)
    mismatch[photo.rows["mismatch"]] = True
    mismatch &= keep & spec.has_photo
    assert s.reasons == {k: v for k, v in {"no_photometry": int(no_photo.sum()),
                                              "objid_mismatch": int(mismatch.sum())}.items() if v}
    assert mismatch.sum() > 0 and no_photo.sum() > 0
    good = keep & spec.has_photo & ~mismatch
    out = read(tmp_path / "ds")
    assert len(out) == good.sum() == s.written
    assert out["spec_obj_ID"].tolist() == [v for v, g in zip(spec.specobjid, good) if g]  # > 2**63 exact
    assert out["obj_ID"].tolist() == spec.bestobjid[good].astype(np.uint64).tolist()
    assert out["class"].tolist() == spec.cls[good].tolist()
    np.testing.assert_array_equal(out["redshift"].to_numpy(), spec.z[good])
    np.testing.assert_allclose(out[BANDS].to_numpy(), measured(photo.modelmag, photo)[good], atol=2e-5)
    np.testing.assert_allclose(out[PSF].to_numpy(), measured(photo.psfmag, photo)[good], atol=2e-5)
    assert out["plate"].tolist() == spec.plate[good].tolist() and out["MJD"].tolist() == spec.mjd[good].tolist()
    q = quarantine(tmp_path / "ds")
    assert set(q["reason"]) == {"no_photometry", "objid_mismatch"}
    # --no-cuts: every row, the defective spectra too (still quarantined where the photometry is missing/wrong)
    s = convert(client, spec.path, tmp_path / "all", photometry=str(photo.path), cuts=False)
    accounting(s)
    assert s.filtered == {} and s.written + s.quarantined == spec.n


def test_specobj_records_the_magnitude_system_of_its_photometry(client, spec_pair, tmp_path):
    """The issue's M2: a specObj + photoPosPlate conversion recorded no magnitudes ("magnitudes": []) and not
    whether it was dereddened."""
    spec, photo = spec_pair
    s = convert(client, spec.path, tmp_path / "dered", photometry=str(photo.path), deredden=True, cuts=False)
    want = "model, dereddened (asinh magnitudes of MODELFLUX - EXTINCTION; from photoPosPlate-dr17.fits)"
    assert s.magnitudes == want and f"magnitudes u..z: {want}" in s.lines()
    meta = json.loads((tmp_path / "dered" / "_astrodask.json").read_text())
    assert meta["magnitudes"] == want and meta["inputs"][0]["magnitudes"] == want
    assert meta["fingerprint"]["options"]["photometry"] == str(photo.path.resolve())
    out = read(tmp_path / "dered")
    row = {v: k for k, v in enumerate(spec.specobjid)}
    rows = [row[v] for v in out["spec_obj_ID"]]
    np.testing.assert_allclose(out[BANDS].to_numpy(), measured(photo.dered_modelmag, photo)[rows], atol=2e-5)


def test_specobj_needs_matching_photometry(client, spec_pair, tmp_path):
    spec, photo = spec_pair
    with pytest.raises(AstrodaskError, match="--photometry"):
        convert(client, spec.path, tmp_path / "a")
    other = sf.write_photoobj(tmp_path / "photoObj.fits", n=50, seed=2)
    with pytest.raises(AstrodaskError, match="row-matched"):
        convert(client, spec.path, tmp_path / "b", photometry=str(other.path))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_photoobj_string_objids_and_mode(client, tmp_path):
    t = sf.write_photoobj(tmp_path / "photoObj-003704-3-0091.fits", n=300, seed=4)
    s = convert(client, t.path, tmp_path / "ds")
    accounting(s)
    assert s.filtered == {"survey_primary": int((~t.primary).sum())}
    out = read(tmp_path / "ds")
    assert out["obj_ID"].tolist() == t.objid[t.primary].astype(np.uint64).tolist()
    np.testing.assert_allclose(out[BANDS].to_numpy(), measured(t.modelmag, t)[t.primary], atol=2e-5)
    s = convert(client, t.path, tmp_path / "cm", magnitudes="cmodel", cuts=False)
    np.testing.assert_allclose(read(tmp_path / "cm")[BANDS].to_numpy(), measured(t.cmodelmag, t), atol=2e-5)
    assert s.magnitudes.startswith("cmodel")
    zero, neg = t.rows["zero_flux"], t.rows["negative_flux"]
    assert len(zero) and read(tmp_path / "cm")["u"].isna().to_numpy()[zero].all()  # inverse variance 0: null
    assert s.nulls["u"] == len(zero) and s.nulls["psf_u"] == len(zero)
    assert np.isfinite(read(tmp_path / "cm")[["u", "g"]].to_numpy()[neg]).all()  # measured, negative: finite


def test_sweeps_star_and_gal_in_blocks(client, tmp_path):
    star = sf.write_sweep(tmp_path / "calibObj-004510-4-star.fits", n=3000, seed=5, kind="star")
    gal = sf.write_sweep(tmp_path / "calibObj-004510-4-gal.fits", n=2000, seed=6, kind="gal", field0=400)
    s = convert(client, [star.path, gal.path], tmp_path / "ds", cuts=False, block_size=256 * 1024)
    assert (s.read, s.written, s.quarantined) == (5000, 5000, 0)
    out = read(tmp_path / "ds")
    assert out["obj_ID"].tolist() == [*star.objid.tolist(), *gal.objid.tolist()]
    np.testing.assert_allclose(out[BANDS].to_numpy(), measured(np.vstack([star.modelmag, gal.modelmag]), star, gal),
                               atol=2e-5)
    assert len(list((tmp_path / "ds").glob("part-*.parquet"))) > 4  # uncompressed: read in row ranges
    with pytest.raises(AstrodaskError, match="CMODELFLUX"):
        convert(client, star.path, tmp_path / "x", magnitudes="cmodel")


def test_unlabelled_rows_are_kept_with_a_null_class(client, tmp_path):
    """A PhotoObj LEFT JOIN SpecObj export: most objects have no spectrum, so no class."""
    rows = ["objid,u,g,r,i,z,class,redshift"] + [
        f"{1237645942904389632 + k},19.1,18.2,17.9,17.7,17.6,{'STAR' if k % 4 == 0 else ''},"
        f"{'0.0001' if k % 4 == 0 else ''}" for k in range(40)]
    (tmp_path / "join.csv").write_text("\n".join(rows) + "\n")
    s = convert(client, tmp_path / "join.csv", tmp_path / "ds")
    assert (s.written, s.quarantined) == (40, 0)
    assert s.nulls == {"class": 30, "redshift": 30}
    assert read(tmp_path / "ds")["class"].isna().sum() == 30
