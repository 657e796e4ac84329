"""Which source column fills which canonical column: z (band or redshift) by its neighbours in the header,
the magnitude system that fills u..z, and what the summary and ``_astrodask.json`` record about them
(``columns_from``, ``magnitudes``, per-column null counts)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from astrodask import ingest, schema
from astrodask.errors import AstrodaskError
from astrodask.ingest import ConvertConfig
from astrodask.storage import META

BANDS = list(schema.BANDS)


@pytest.fixture(scope="module")
def client():
    from distributed import Client

    with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=":0") as c:
        yield c


def frame(n: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(5)
    return pd.DataFrame({
        "objid": np.arange(n, dtype=np.uint64) + 1237645942904389632,
        "ra": rng.uniform(0, 360, n).round(6), "dec": rng.uniform(-10, 60, n).round(6),
        **{b: rng.uniform(15, 23, n).round(4) for b in BANDS},
        "specobjid": np.arange(n, dtype=np.uint64) * 4096 + 299489677444933632,
        "class": rng.choice(schema.CLASSES, n),
        "redshift": rng.uniform(0.5, 3.0, n).round(5),  # never in the magnitudes' range: a swap would show
    })


def write(path, df: pd.DataFrame, header: list[str]) -> None:
    """``df``'s columns in ``header`` order, where ``z`` in the header means the band and ``zz`` the redshift."""
    cols = [("redshift" if h == "zz" else h) for h in header]
    text = df[cols].to_csv(index=False, header=False)
    path.write_text(",".join("z" if h == "zz" else h for h in header) + "\n" + text)


def convert(client, src, dest, **kw) -> dict:
    return ingest.run(ConvertConfig((str(src),), str(dest), quiet=True, **kw), client)


@pytest.mark.parametrize("header", [
    ["specobjid", "class", "zz", "objid", "ra", "dec", "u", "g", "r", "i", "z"],  # the export
    ["objid", "ra", "dec", "u", "g", "r", "i", "z", "specobjid", "class", "zz"],
    ["objid", "ra", "dec", "u", "g", "r", "i", "z", "zz", "class"],
    ["zz", "class", "objid", "u", "g", "r", "i", "z"],
], ids=["spec-first", "photo-first", "z-z-class", "redshift-first"])
def test_skyserver_z_columns_resolved_by_their_neighbours(client, tmp_path, header):
    df = frame()
    write(tmp_path / "sky.csv", df, header)
    s = convert(client, tmp_path / "sky.csv", tmp_path / "ds")
    assert s.written == len(df) and s.quarantined == 0
    out = pq.read_table(tmp_path / "ds").to_pandas()
    np.testing.assert_allclose(out["z"], df["z"], rtol=1e-6)
    np.testing.assert_allclose(out["redshift"], df["redshift"], rtol=1e-6)
    meta = json.loads((tmp_path / "ds" / META).read_text())
    band_first = header.index("z") < header.index("zz")  # the header's second z is named z.1
    assert meta["columns_from"]["z"] == ("z" if band_first else "z.1")
    assert meta["columns_from"]["redshift"] == ("z.1" if band_first else "z")


@pytest.mark.parametrize("header", [
    ["objid", "ra", "dec", "zz", "u", "g", "r", "i", "z"],  # both beside band names
    ["objid", "u", "g", "r", "i", "ra", "zz", "dec", "z"],  # neither beside anything telling
])
def test_ambiguous_z_columns_are_refused(client, tmp_path, header):
    write(tmp_path / "amb.csv", frame(), header)
    with pytest.raises(AstrodaskError) as e:
        convert(client, tmp_path / "amb.csv", tmp_path / "ds")
    msg = str(e.value)
    assert "ambiguous columns" in msg and "\n" not in msg
    zs = [k + 1 for k, h in enumerate(header) if h in ("z", "zz")]
    assert all(f"z (column {k})" in msg for k in zs), msg
    assert not (tmp_path / "ds").exists()


def _mags(df: pd.DataFrame, prefix: str, shift: float) -> dict:
    return {f"{prefix}{b}": df[b] + shift for b in BANDS}


def test_magnitude_system_is_chosen_by_rule_and_recorded(client, tmp_path):
    df = frame()
    base = df[["objid", "class"]]
    # psf and dered, no plain/model: dereddened model magnitudes fill u..z (the rule), and the summary says so
    pd.concat([base, pd.DataFrame({**_mags(df, "psfMag_", 0.3), **_mags(df, "dered_", -0.1)})], axis=1) \
        .to_csv(tmp_path / "a.csv", index=False)
    s = convert(client, tmp_path / "a.csv", tmp_path / "a")
    out = pq.read_table(tmp_path / "a").to_pandas()
    np.testing.assert_allclose(out["u"], df["u"] - 0.1, rtol=1e-6)
    assert s.magnitudes.startswith("model, dereddened (dered_u..z")
    assert s.columns_from["u"] == "dered_u"
    # --magnitudes psf takes the PSF magnitudes instead
    s = convert(client, tmp_path / "a.csv", tmp_path / "b", magnitudes="psf")
    np.testing.assert_allclose(pq.read_table(tmp_path / "b").to_pandas()["u"], df["u"] + 0.3, rtol=1e-6)
    assert s.magnitudes == "psf (psfMag_u..z)" and s.columns_from["u"] == "psfMag_u"
    # a system the file lacks, asked for explicitly: refused
    with pytest.raises(AstrodaskError, match="--magnitudes cmodel: the file has no cmodel magnitudes"):
        convert(client, tmp_path / "a.csv", tmp_path / "c", magnitudes="cmodel")
    # plain u..z beside psfMag_*: the plain (model) magnitudes, as before; recorded
    pd.concat([df[["objid", "class", *BANDS]], pd.DataFrame(_mags(df, "psfMag_", 0.3))], axis=1) \
        .to_csv(tmp_path / "d.csv", index=False)
    s = convert(client, tmp_path / "d.csv", tmp_path / "d")
    np.testing.assert_allclose(pq.read_table(tmp_path / "d").to_pandas()["u"], df["u"], rtol=1e-6)
    assert s.magnitudes == "model (u..z)"
    meta = json.loads((tmp_path / "d" / META).read_text())
    assert meta["columns_from"]["u"] == "u" and meta["magnitudes"] == "model (u..z)"
    assert meta["inputs"][0]["columns_from"]["obj_ID"] == "objid"


def test_null_counts_in_summary_and_metadata(client, tmp_path):
    df = frame()
    df["u"] = df["u"].astype(object)
    df.loc[[1, 2, 3], "u"] = ["", "-9999", "NaN"]
    df.loc[5, "redshift"] = np.nan
    df[["objid", *BANDS, "class", "redshift"]].to_csv(tmp_path / "n.csv", index=False)
    other = frame().assign(objid=lambda d: d["objid"] + 10**6)[["objid", *BANDS]]  # no class, no redshift
    other.to_csv(tmp_path / "m.csv", index=False)
    s = ingest.run(ConvertConfig((str(tmp_path / "n.csv"), str(tmp_path / "m.csv")), str(tmp_path / "ds"),
                                 quiet=True), client)
    # m.csv's rows have no redshift column at all: those nulls are not missing values
    assert s.nulls == {"u": 3, "redshift": 1}
    assert json.loads((tmp_path / "ds" / META).read_text())["nulls"] == {"u": 3, "redshift": 1}


def test_cli_summary_prints_magnitudes_and_missing_values(tmp_path):
    import subprocess
    import sys

    df = frame(20)
    df["g"] = df["g"].astype(object)
    df.loc[4, "g"] = ""
    df[["objid", *BANDS, "class"]].to_csv(tmp_path / "c.csv", index=False)
    r = subprocess.run([sys.executable, "-m", "astrodask.cli", "convert", str(tmp_path / "c.csv"),
                        str(tmp_path / "ds"), "--workers", "1", "-q"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "magnitudes u..z: model (u..z)" in r.stdout
    assert "missing values (kept as nulls): g 1" in r.stdout




# ------------------------------------------------------------------------------------------------ --columns


def _specphoto_like(df: pd.DataFrame) -> pd.DataFrame:
    """A SkyServer SpecPhoto export as its query aliased it: dered_u..z (model), mag_u..z (PSF), spec_z."""
    return pd.concat([df[["objid", "class"]], pd.DataFrame({**_mags(df, "dered_", 0.0), **_mags(df, "mag_", 0.4)}),
                      df[["redshift"]].rename(columns={"redshift": "spec_z"})], axis=1)


def test_columns_maps_a_source_to_a_canonical_column_and_is_recorded(client, tmp_path):
    df = frame()
    _specphoto_like(df).to_csv(tmp_path / "sp.csv", index=False)
    plain = convert(client, tmp_path / "sp.csv", tmp_path / "plain")
    assert not any(c.startswith("psf_") for c in pq.read_table(tmp_path / "plain").schema.names)  # mag_* unknown names
    given = ",".join(f"mag_{b}=psf_{b}" for b in BANDS)
    s = convert(client, tmp_path / "sp.csv", tmp_path / "ds", columns=given)
    out = pq.read_table(tmp_path / "ds").to_pandas()
    np.testing.assert_allclose(out[[f"psf_{b}" for b in BANDS]].to_numpy(), df[BANDS].to_numpy() + 0.4, rtol=1e-6)
    np.testing.assert_allclose(out[BANDS].to_numpy(), df[BANDS].to_numpy(), rtol=1e-6)  # dered_* still u..z
    np.testing.assert_allclose(out["redshift"], df["redshift"], rtol=1e-6)
    assert s.columns == {f"mag_{b}": f"psf_{b}" for b in BANDS} and s.columns_from["psf_g"] == "mag_g"
    meta = json.loads((tmp_path / "ds" / META).read_text())
    assert meta["columns"] == s.columns and meta["columns_from"]["psf_r"] == "mag_r"
    assert plain.columns == {}
    # the same from Python as a mapping; an override also wins over a column the rules would take
    s = convert(client, tmp_path / "sp.csv", tmp_path / "py", columns={"mag_r": "r"})
    np.testing.assert_allclose(pq.read_table(tmp_path / "py").to_pandas()["r"], df["r"] + 0.4, rtol=1e-6)
    assert s.columns_from["r"] == "mag_r"


@pytest.mark.parametrize("given, words", [
    ("mag_u=psf_q", ["psf_q is not a column astrodask knows"]),
    ("mag_u=psf_u,mag_g=psf_u", ["psf_u is given twice"]),
    ("mag_u=psf_u,mag_u=psf_g", ["mag_u is given 2 times"]),
    ("mag_x=psf_u", ["the file has no column mag_x"]),
    ("mag_u", ["cannot read 'mag_u'", "SOURCE=CANONICAL"]),
    ("mag_u=class", ["the file's own column class is class"]),
], ids=["unknown-target", "target-twice", "source-twice", "unknown-source", "unreadable", "taken"])
def test_columns_refusals_are_one_line(tmp_path, given, words):
    from support.cli import one_line_error, run_cli

    _specphoto_like(frame(10)).to_csv(tmp_path / "sp.csv", index=False)
    line = one_line_error(run_cli("convert", tmp_path / "sp.csv", tmp_path / "ds", "--columns", given,
                                  "--workers", "1", "-q"))
    for w in words:
        assert w in line, line
    assert not (tmp_path / "ds").exists()


def test_a_repeated_column_name_is_refused_unless_columns_says_which(client, tmp_path):
    df = frame(12)
    body = df[["objid", "class", *BANDS, "redshift"]].assign(g2=df["g"] + 1.0)
    text = body.to_csv(index=False, header=False)
    (tmp_path / "twice.csv").write_text("objid,class,u,g,r,i,z,redshift,g\n" + text)
    with pytest.raises(AstrodaskError, match=r"names g 2 times .*--columns"):
        convert(client, tmp_path / "twice.csv", tmp_path / "x")
    names = schema.unique_names(["objid", "class", "u", "g", "r", "i", "z", "redshift", "g"])
    s = convert(client, tmp_path / "twice.csv", tmp_path / "ds", columns=f"{names[-1]}=g")
    np.testing.assert_allclose(pq.read_table(tmp_path / "ds").to_pandas()["g"], df["g"] + 1.0, rtol=1e-6)
    assert s.columns_from["g"] == names[-1]


def _ra_and_alpha(df: pd.DataFrame, alpha) -> pd.DataFrame:
    return df[["objid", "ra", "dec", *BANDS, "class", "redshift"]].assign(alpha=alpha)


def test_two_columns_for_one_canonical_column_with_different_values_are_refused(client, tmp_path):
    df = frame(12)
    alpha = df["ra"].to_numpy().copy()
    alpha[[3, 7]] += 1.0
    _ra_and_alpha(df, alpha).to_csv(tmp_path / "both.csv", index=False)
    with pytest.raises(AstrodaskError) as err:
        convert(client, tmp_path / "both.csv", tmp_path / "x")
    line = str(err.value)
    assert "\n" not in line
    for w in ("both.csv", "columns ra and alpha both give alpha", "differ in 2 of 12 rows",
              f"(first: ra {df['ra'][3]}, alpha {alpha[3]:.6f})", "--columns ra=alpha", "--columns alpha=alpha"):
        assert w in line, line
    assert not (tmp_path / "x" / META).exists()
    # --columns says which: that one fills alpha, the other is not compared
    for src, want in (("ra", df["ra"]), ("alpha", alpha)):
        s = convert(client, tmp_path / "both.csv", tmp_path / src, columns=f"{src}=alpha")
        assert s.columns_from["alpha"] == src
        np.testing.assert_allclose(pq.read_table(tmp_path / src).to_pandas().sort_values("obj_ID")["alpha"],
                                   want, rtol=0, atol=1e-9)


def test_two_columns_for_one_canonical_column_with_equal_values_convert(client, tmp_path):
    df = frame(12)
    alpha = df["ra"].to_numpy() + 0.1 / 3600  # within an arcsecond: the same position
    _ra_and_alpha(df, alpha).to_csv(tmp_path / "both.csv", index=False)
    s = convert(client, tmp_path / "both.csv", tmp_path / "ds")
    assert s.columns_from["alpha"] == "alpha" and s.written == 12
    # a value beside a missing one differs
    alpha[5] = np.nan
    _ra_and_alpha(df, alpha).to_csv(tmp_path / "gap.csv", index=False)
    with pytest.raises(AstrodaskError, match="differ in 1 of 12 rows"):
        convert(client, tmp_path / "gap.csv", tmp_path / "y")


def test_plain_and_model_magnitudes_that_differ_are_refused(client, tmp_path):
    df = frame(12)
    body = df[["objid", "class", "redshift", *BANDS]].assign(**{f"modelMag_{b}": df[b] for b in BANDS})
    body.to_csv(tmp_path / "same.csv", index=False)
    assert convert(client, tmp_path / "same.csv", tmp_path / "ds").written == 12
    body["modelMag_r"] = body["modelMag_r"] + 0.25
    body.to_csv(tmp_path / "diff.csv", index=False)
    with pytest.raises(AstrodaskError, match=r"columns modelMag_r and r both give r and differ in 12 of 12 rows"):
        convert(client, tmp_path / "diff.csv", tmp_path / "x")


def test_resolve_columns_lists_the_alternates():
    cmap = schema.resolve_columns(["objid", "ra", "alpha", "dec", *BANDS, "class", "redshift"])
    assert ("ra", "alpha") in cmap.alternates and cmap.mapping["alpha"] == "alpha"
    picked = schema.resolve_columns(["objid", "ra", "alpha", "dec", *BANDS, "class", "redshift"],
                                    overrides=(("ra", "alpha"),))
    assert picked.alternates == () and picked.mapping["ra"] == "alpha" and "alpha" not in picked.mapping
