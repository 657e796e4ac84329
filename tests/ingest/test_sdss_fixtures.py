"""The SDSS FITS fixtures (tests/support/sdss_fixtures.py) are valid FITS in the data-model layouts, and their
ground-truth helpers match values published by SDSS.

Fast (a few seconds). The real-sweep comparison skips when ../shared/data is absent; the big
streaming check runs at 12 MB here and at any size with SDSS_FIXTURES_BIG_BYTES=50000000.
"""

from __future__ import annotations

import math
import mmap
import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from support import sdss_fixtures as sf

REAL_SWEEP = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "sdss" / "calibObj-004510-4-star.fits.gz"


def _header_layout(hdu) -> tuple:
    h = hdu.header
    return tuple((h[f"TTYPE{i}"], h[f"TFORM{i}"].strip()) for i in range(1, h["TFIELDS"] + 1))


def _raw_rows(path, layout) -> np.ndarray:
    """HDU 1's data unit read straight from the bytes (no astropy conversion)."""
    with fits.open(path) as hl:
        offset = hl[1].fileinfo()["datLoc"]
        nrows = hl[1].header["NAXIS2"]
    dt = sf.layout_dtype(layout)
    with open(path, "rb") as fh:
        fh.seek(offset)
        return np.frombuffer(fh.read(nrows * dt.itemsize), dtype=dt)


def _check_fits(path, layout) -> None:
    with fits.open(path) as hl:
        hl.verify("exception")
        assert len(hl) == 2 and hl[1].header["XTENSION"] == "BINTABLE"
        assert _header_layout(hl[1]) == tuple(layout)
        assert not any(k.startswith("TDIM") for k in hl[1].header)
        assert hl[1].header["NAXIS1"] == sf.layout_dtype(layout).itemsize
    assert os.path.getsize(path) % sf.FITS_BLOCK == 0


# ------------------------------------------------------------------------------------------ ground truth


@pytest.mark.parametrize("band", list(sf.BANDS))
@pytest.mark.parametrize("flux", [30.0, 1e3, 1e5])
def test_asinh_matches_pogson_for_bright_fluxes(band, flux):
    assert abs(sf.asinh_mag(flux, band) - (22.5 - 2.5 * math.log10(flux))) < 1e-3


def test_asinh_zero_flux_is_finite_and_equals_minus_ln_b():
    for i, band in enumerate(sf.BANDS):
        m0 = sf.asinh_mag(0.0, band)
        assert np.isfinite(m0)
        assert m0 == pytest.approx(-(2.5 / math.log(10)) * math.log(sf.ASINH_B[i]), rel=1e-12)
    # EDR Table 21: zero-flux magnitudes and m(f/f0 = 10 b), printed to 2 decimals
    zero = sf.asinh_mags(np.zeros(5))
    ten_b = sf.asinh_mags(10 * sf.ASINH_B / 1e-9)
    assert np.allclose(zero, sf.ZERO_FLUX_MAG_TABLE, atol=0.006)
    assert np.allclose(ten_b, sf.TEN_B_MAG_TABLE, atol=0.006)


def test_asinh_negative_flux_is_finite_and_monotonic():
    f = np.linspace(-5, 5, 101)
    for band in sf.BANDS:
        m = sf.asinh_mag(f, band)
        assert np.all(np.isfinite(m)) and np.all(np.diff(m) < 0)
    assert np.allclose(sf.asinh_mags(np.tile(f[:, None], 5)),
                       np.stack([sf.asinh_mag(f, b) for b in sf.BANDS], axis=1))


def test_compose_objid_real_skyserver_ids():
    # SkyServer DR13 query results (objid, run, rerun, camcol, field, obj) and the pydl doc example
    for objid, parts in [(1237671939804561654, (6162, 301, 3, 133, 246)),
                         (1237671939804628290, (6162, 301, 3, 134, 1346)),
                         (1237661382772195474, (3704, 301, 3, 91, 146))]:
        run, rerun, camcol, field, obj = parts
        assert sf.compose_objid(2, rerun, run, camcol, field, obj) == objid
        d = sf.decompose_objid(objid)
        assert (d["skyversion"], d["rerun"], d["run"], d["camcol"], d["field"], d["id"]) == (2, rerun, run, camcol,
                                                                                          field, obj)
        assert d["first_field"] == 0  # DR8+ never sets bit 28
        assert sf.decompose_objid(str(objid)) == d
    # DR7's firstField is bit 28 (CAS mask 0x0000000010000000); bit 63 stays unused
    assert sf.compose_objid(0, 0, 0, 0, 0, 0, first_field=1) == 0x10000000
    assert sf.compose_objid(15, 2047, 65535, 7, 4095, 65535, 1) == (1 << 63) - 1
    arr = sf.compose_objid(2, 301, np.array([6162, 6162]), 3, np.array([133, 134]), np.array([246, 1346]))
    assert arr.dtype == np.int64 and arr.tolist() == [1237671939804561654, 1237671939804628290]
    with pytest.raises(ValueError):
        sf.compose_objid(2, 301, 6162, 3, 4096, 1)


def test_specobjid_encoding():
    # lowest specObjID in SkyServer DR13 ("select top 1 specobjid ... order by specobjid"): plate 266, MJD 51630
    assert sf.compose_specobjid(266, 1, 51630, "26") == 299489677444933632
    assert sf.decompose_specobjid(299489677444933632) == {"plate": 266, "fiberid": 1, "mjd": 51630,
                                                          "run2d": 26, "line": 0}
    assert sf.run2d_code("v5_13_2") == 1302 and sf.run2d_code(b"103    ") == 103
    big = sf.compose_specobjid(12547, 1000, 58900, "v5_13_2")
    assert big > 2**63 and sf.decompose_specobjid(big)["plate"] == 12547


def test_survey_primary_mask():
    status = np.array([257, 513, 1025, 4113, 17, 1041, 256, 0])
    assert sf.survey_primary(status).tolist() == [True, False, False, False, False, False, True, False]


# ------------------------------------------------------------------------------------------ specObj


@pytest.fixture(scope="module")
def specobj(tmp_path_factory):
    path = tmp_path_factory.mktemp("sdss") / "specObj-dr17.fits"
    return sf.write_specobj(path, n=150, seed=3)


def test_specobj_is_valid_fits_in_dr17_layout(specobj):
    _check_fits(specobj.path, sf.SPECOBJ_DR17_LAYOUT)
    raw = _raw_rows(specobj.path, sf.SPECOBJ_DR17_LAYOUT)
    assert raw.dtype["Z"].byteorder == ">" and raw.dtype["SPECOBJID"] == np.dtype("S22")
    assert raw.dtype["BESTOBJID"] == np.dtype("S19") and raw.dtype["SPECPRIMARY"] == np.dtype("u1")
    assert raw.dtype["OBJID"].shape == (5,) and raw.dtype["SN_MEDIAN"].shape == (5,)
    # blank padding (no NULs), ids right-justified in 22 characters, classes left-justified
    assert all(b"\0" not in v for v in raw["SPECOBJID"]) and all(b"\0" not in v for v in raw["CLASS"])
    assert all(len(v) == 22 and v[:1] == b" " and v.strip().isdigit() for v in raw["SPECOBJID"].tolist())
    assert set(raw["CLASS"].tolist()) <= {b"GALAXY", b"QSO   ", b"STAR  "}


def test_specobj_truth_matches_file(specobj):
    t = specobj
    with fits.open(t.path) as hl:
        d = hl[1].data
        assert np.char.strip(d["CLASS"]).tolist() == t.cls.tolist()
        assert np.array_equal(d["Z"], t.z) and np.array_equal(d["ZWARNING"], t.zwarning)
        assert np.array_equal(d["SPECPRIMARY"], t.specprimary)
        ids = [int(s) for s in np.char.strip(d["SPECOBJID"])]
        best = [int(s) if s.strip() else 0 for s in d["BESTOBJID"]]
        run2d = np.char.strip(d["RUN2D"])
        plate, mjd, fiber = d["PLATE"], d["MJD"], d["FIBERID"]
    assert ids == t.specobjid and len(set(ids)) == t.n
    assert best == t.bestobjid.tolist()
    for i in range(t.n):
        assert sf.decompose_specobjid(ids[i]) == {"plate": plate[i], "fiberid": fiber[i], "mjd": mjd[i],
                                                  "run2d": sf.run2d_code(run2d[i]), "line": 0}
    assert set(t.cls) <= {"GALAXY", "QSO", "STAR"}
    assert np.all(t.z[t.cls == "QSO"] > 0.05)


def test_specobj_named_defects(specobj):
    t, r = specobj, specobj.rows
    raw = _raw_rows(t.path, sf.SPECOBJ_DR17_LAYOUT)
    assert len(r["not_primary"]) >= 2 and np.all(t.specprimary[r["not_primary"]] == 0)
    for i in r["not_primary"]:
        j = t.duplicate_of[int(i)]
        assert t.specprimary[j] == 1 and t.bestobjid[i] == t.bestobjid[j] != 0
    assert np.all(t.zwarning[r["zwarning"]] != 0) and np.all(t.specprimary[r["zwarning"]] == 1)
    assert {t.zwarning_bits[int(i)] for i in r["zwarning"]} >= {sf.ZW_SKY, sf.ZW_UNPLUGGED, sf.ZW_Z_FITLIMIT,
                                                                 sf.ZW_MANY_OUTLIERS, sf.ZW_NODATA}
    assert np.all(t.z_err[[i for i in r["zwarning"] if t.zwarning[i] == sf.ZW_Z_FITLIMIT]] == -1)
    both = r["not_primary_and_zwarning"]
    assert t.specprimary[both[0]] == 0 and t.zwarning[both[0]] != 0
    assert [raw["BESTOBJID"][i] for i in r["no_match_zero"]] == [b"0" + b" " * 18] * len(r["no_match_zero"])
    assert [raw["BESTOBJID"][i] for i in r["no_match_zero_rjust"]] == [b" " * 18 + b"0"] * len(r["no_match_zero_rjust"])
    assert [raw["BESTOBJID"][i] for i in r["no_match_blank"]] == [b" " * 19] * len(r["no_match_blank"])
    no_match = np.concatenate([r["no_match_zero"], r["no_match_zero_rjust"], r["no_match_blank"]])
    assert np.all(t.keep[no_match]) and not np.any(t.has_photo[no_match])
    assert not np.any(t.has_photo[r["zwarning_sky"]])
    # every row outside the named sets passes all cuts; the named ones fail exactly as documented
    named = np.unique(np.concatenate([r[k] for k in ("not_primary", "zwarning", "not_primary_and_zwarning")]))
    rest = np.setdiff1d(np.arange(t.n), np.concatenate([named, no_match]))
    assert np.all(t.keep_with_photo[rest]) and not np.any(t.keep[named])
    assert t.keep_with_photo.sum() == t.n - len(named) - len(no_match)
    kept = t.bestobjid[t.keep_with_photo]
    assert len(np.unique(kept)) == len(kept)  # SPECPRIMARY removes the repeat observations
    assert np.all(t.z[r["negative_z"]] < 0) and np.all(t.keep_with_photo[r["negative_z"]])


def test_fixtures_are_deterministic(tmp_path):
    a, b, c = tmp_path / "a.fits", tmp_path / "b.fits", tmp_path / "c.fits"
    sf.write_specobj(a, 60, seed=9)
    sf.write_specobj(b, 60, seed=9)
    sf.write_specobj(c, 60, seed=10)
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()


# ------------------------------------------------------------------------------------------ photoObj / photoPosPlate


def test_photoobj_layout_and_truth(tmp_path):
    t = sf.write_photoobj(tmp_path / "photoObj-003704-3-0091.fits", n=120, seed=5)
    _check_fits(t.path, sf.PHOTOOBJ_LAYOUT)
    raw = _raw_rows(t.path, sf.PHOTOOBJ_LAYOUT)
    assert raw.dtype["OBJID"] == np.dtype("S19") and raw.dtype["RERUN"] == np.dtype("S3")
    objid = np.array([int(s) for s in raw["OBJID"]])
    composed = sf.compose_objid(raw["SKYVERSION"], np.array([int(s) for s in raw["RERUN"]]), raw["RUN"],
                                raw["CAMCOL"], raw["FIELD"], raw["ID"])
    assert np.array_equal(objid, composed) and np.array_equal(objid, t.objid)
    assert np.all(raw["RUN"] == 3704) and raw["ID"].tolist() == list(range(1, 121))
    # magnitude columns are the asinh magnitudes of the stored fluxes
    for band in ("PSF", "MODEL", "CMODEL", "FIBER"):
        assert np.allclose(raw[band + "MAG"], sf.asinh_mags(raw[band + "FLUX"]), atol=2e-5)
    assert np.allclose(raw["PSFMAG"], t.psfmag, atol=2e-5) and np.allclose(raw["CMODELMAG"], t.cmodelmag, atol=2e-5)
    assert np.all(raw["PSFFLUX"][t.rows["zero_flux"], 0] == 0) and np.all(raw["PSFFLUX_IVAR"][t.rows["zero_flux"], 0] == 0)
    assert np.all(raw["PSFFLUX"][t.rows["negative_flux"], :2] < 0) and len(t.rows["negative_flux"]) >= 2
    assert np.all(np.isfinite(t.psfmag))
    assert np.array_equal(t.primary, raw["MODE"] == 1) and 0 < t.primary.sum() < t.n
    assert np.all(raw["MODE"][t.rows["secondary"]] == 2)
    assert set(raw["OBJC_TYPE"].tolist()) <= {3, 6} and np.all(raw["TYPE"] == raw["OBJC_TYPE"][:, None])
    assert np.any(raw["OBJC_FLAGS"] < 0)  # bit 31 set: a signed int32 in FITS


def test_photopos_is_row_matched_to_specobj(specobj, tmp_path):
    t = sf.photopos_for(tmp_path / "photoPosPlate.fits", specobj, seed=1)
    _check_fits(t.path, sf.PHOTOOBJ_LAYOUT)
    raw = _raw_rows(t.path, sf.PHOTOOBJ_LAYOUT)
    assert t.n == specobj.n == len(raw)
    objid = np.array([int(s) for s in raw["OBJID"]])
    assert np.array_equal(objid, t.objid)
    mism, empty = t.rows["mismatch"], t.rows["no_match"]
    assert len(mism) >= 2 and np.all(objid[mism] != specobj.bestobjid[mism])
    assert np.array_equal(np.sort(empty), np.flatnonzero(specobj.bestobjid == 0))
    assert np.all(objid[empty] == 0) and np.all(raw["RUN"][empty] == 0)
    others = np.setdiff1d(np.arange(t.n), np.concatenate([mism, empty]))
    assert np.array_equal(objid[others], specobj.bestobjid[others])
    assert np.array_equal(t.matches_spec, np.isin(np.arange(t.n), others))
    filled = np.setdiff1d(np.arange(t.n), empty)
    parts = sf.decompose_objid(objid[filled])
    assert np.array_equal(parts["run"], raw["RUN"][filled]) and np.array_equal(parts["id"], raw["ID"][filled])
    sep = np.hypot((raw["RA"] - specobj.plug_ra) * np.cos(np.radians(specobj.plug_dec)),
                   raw["DEC"] - specobj.plug_dec) * 3600
    assert np.all(sep[others] < 0.5) and np.all(sep[mism] > 1.5)


# ------------------------------------------------------------------------------------------ sweeps


@pytest.mark.parametrize("kind", ["star", "gal"])
def test_sweep_layout_and_truth(tmp_path, kind):
    t = sf.write_sweep(tmp_path / f"calibObj-004510-4-{kind}.fits", n=700, seed=2, kind=kind, chunk_rows=300,
                       frac_primary=0.1)
    _check_fits(t.path, sf.SWEEP_LAYOUTS[kind])
    raw = _raw_rows(t.path, sf.SWEEP_LAYOUTS[kind])
    assert "OBJID" not in raw.dtype.names and raw.dtype["RERUN"] == np.dtype("S3")
    assert np.array_equal(t.objid, sf.compose_objid(2, 301, raw["RUN"], raw["CAMCOL"], raw["FIELD"], raw["ID"]))
    assert len(np.unique(t.objid)) == t.n
    assert np.all(raw["OBJC_TYPE"] == (6 if kind == "star" else 3))
    assert t.primary.sum() == 70 and np.array_equal(t.primary, (raw["RESOLVE_STATUS"] & 256) != 0)
    assert np.array_equal(raw["PSFFLUX"], t.psfflux) and np.array_equal(raw["EXTINCTION"], t.extinction)
    assert np.all(raw["PSFFLUX"][t.rows["zero_flux"], 0] == 0) and np.all(raw["PSFFLUX"][t.rows["negative_flux"], 0] < 0)
    assert np.all(np.isfinite(t.dered_psfmag))


def test_empty_sweep_is_valid(tmp_path):
    t = sf.write_sweep(tmp_path / "empty.fits", n=0, seed=0)
    _check_fits(t.path, sf.SWEEP_STAR_LAYOUT)
    with fits.open(t.path) as hl:
        assert hl[1].header["NAXIS2"] == 0 and len(hl[1].data if hl[1].data is not None else []) == 0
    assert t.objid.shape == (0,)


@pytest.mark.realdata
def test_sweep_star_layout_equals_real_file(tmp_path):
    if not REAL_SWEEP.is_file():
        pytest.skip(f"real sweep file not found at {REAL_SWEEP} (see ../shared/data/README.md)")
    t = sf.write_sweep(tmp_path / "star.fits", n=50, seed=0, kind="star")
    with fits.open(REAL_SWEEP) as real, fits.open(t.path) as mine:
        assert _header_layout(real[1]) == _header_layout(mine[1]) == sf.SWEEP_STAR_LAYOUT
        assert [c.dim for c in real[1].columns] == [c.dim for c in mine[1].columns]
        assert real[1].header["NAXIS1"] == mine[1].header["NAXIS1"] == 577
        assert real[1].data.dtype == mine[1].data.dtype
        assert np.dtype(real[1].data.dtype.descr) == sf.layout_dtype(sf.SWEEP_STAR_LAYOUT)
        # the composed objID of a real row fits the DR8+ layout
        d = real[1].data[:3]
        ids = sf.compose_objid(2, np.array([int(r) for r in d["RERUN"]]), d["RUN"], d["CAMCOL"], d["FIELD"], d["ID"])
        assert sf.decompose_objid(ids)["run"].tolist() == d["RUN"].tolist()


def test_fitsio_reads_the_same_values(specobj, tmp_path):
    fitsio = pytest.importorskip("fitsio")
    sweep = sf.write_sweep(tmp_path / "gal.fits", n=80, seed=1, kind="gal")
    for path in (specobj.path, sweep.path):
        a = fitsio.read(str(path), ext=1)
        with fits.open(path) as hl:
            d = hl[1].data
            for name in d.names:
                x, y = np.asarray(d[name]), a[name]
                if x.dtype.kind in "SU":
                    assert np.char.rstrip(x.astype(str)).tolist() == np.char.rstrip(y.astype(str)).tolist(), name
                else:
                    assert np.array_equal(x, y), name


# ------------------------------------------------------------------------------------------ streamed big specObj


def _is_memory_mapped(arr) -> bool:
    """True when the array's buffer chain ends in a memory map of the file (astropy memmap=True)."""
    while arr is not None:
        if isinstance(arr, (np.memmap, mmap.mmap)):
            return True
        arr = getattr(arr, "base", None)
    return False


def _check_big(path, target, seed, chunk_rows):
    tracemalloc.start()
    try:
        info = sf.write_big_specobj(path, target, seed=seed, chunk_rows=chunk_rows)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.nrows == target // info.row_bytes
    assert info.file_bytes == os.path.getsize(path) and info.file_bytes % sf.FITS_BLOCK == 0
    assert 0 <= info.file_bytes - target < 40_000  # headers (133 columns: 8 blocks) + padding
    with fits.open(path, memmap=True) as hl:
        hl.verify("exception")
        assert _header_layout(hl[1]) == sf.SPECOBJ_DR17_LAYOUT and hl[1].header["NAXIS2"] == info.nrows
        d = hl[1].data
        assert _is_memory_mapped(d)
        n = info.nrows
        for s, e in [(0, 5), (498, 503), (n // 2, n // 2 + 7), (n - 4, n)]:
            ref = sf.big_specobj_rows(seed, n, s, e)
            got = np.asarray(d[s:e]).view(np.ndarray).astype(ref.dtype)
            assert got.tobytes() == ref.tobytes()
        assert int((d["SPECPRIMARY"] == 1).sum()) == info.n_primary
        assert int((d["ZWARNING"] == 0).sum()) == info.n_zwarning_ok
        assert int(((d["SPECPRIMARY"] == 1) & (d["ZWARNING"] == 0)).sum()) == info.n_keep
        assert sum(info.class_counts.values()) == n
        ids = np.char.strip(d["SPECOBJID"])
        assert len(np.unique(ids)) == n
    return info, peak


def test_big_specobj_streams_with_bounded_memory(tmp_path):
    """The writer's peak memory does not grow with the file: 2 MB and 16 MB files cost the same."""
    _, small_peak = _check_big(tmp_path / "small.fits", 2_000_000, seed=4, chunk_rows=500)
    target = 16_000_000
    _, peak = _check_big(tmp_path / "big.fits", target, seed=4, chunk_rows=500)
    assert peak < 1.25 * small_peak + 1e6, f"peak {peak / 1e6:.1f} MB vs {small_peak / 1e6:.1f} MB for 2 MB"
    assert peak < target, f"writer peak {peak / 1e6:.1f} MB for a {target / 1e6:.0f} MB table"


def test_big_specobj_at_requested_size(tmp_path):
    size = int(os.environ.get("SDSS_FIXTURES_BIG_BYTES", "0"))
    if size <= 0:
        pytest.skip("set SDSS_FIXTURES_BIG_BYTES (e.g. 50000000) to stream a big specObj file")
    _, peak = _check_big(tmp_path / "big.fits", size, seed=1, chunk_rows=20_000)
    assert peak < 200e6
