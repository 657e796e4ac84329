"""The synthetic catalogue generator: determinism, schema, ids, calibration, files, and fidelity to SDSS17."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from astrodask import schema, synth
from astrodask.errors import AstrodaskError, ConfigError
from astrodask.synth import SynthConfig, synth_partition

SDSS17 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sdss17.csv"
needs_real = pytest.mark.skipif(not SDSS17.is_file(), reason=f"real SDSS17 data not found at {SDSS17}")


# ------------------------------------------------------------------------------------------------ partitions


def test_same_seed_and_index_give_the_same_frame():
    pd.testing.assert_frame_equal(synth_partition(2, 3000, seed=7), synth_partition(2, 3000, seed=7))


def test_other_index_or_seed_gives_other_rows():
    a = synth_partition(0, 2000, seed=7)
    b = synth_partition(1, 2000, seed=7)
    c = synth_partition(0, 2000, seed=8)
    for other in (b, c):
        assert not np.array_equal(a["r"].to_numpy(), other["r"].to_numpy())
        assert not np.array_equal(a["alpha"].to_numpy(), other["alpha"].to_numpy())
    assert set(a[schema.ID]).isdisjoint(b[schema.ID])
    assert a[schema.ID].equals(c[schema.ID])  # ids depend on (index, row) only


def test_columns_and_dtypes_follow_the_schema():
    df = synth_partition(0, 500)
    assert list(df.columns) == list(synth.COLUMNS)
    for name, typ in ((c, schema.TYPES[c]) for c in synth.COLUMNS):  # not the provenance columns of --row-ids
        if pa.types.is_string(typ):
            assert pd.api.types.is_string_dtype(df[name].dtype), name
        else:
            assert df[name].dtype == np.dtype(typ.to_pandas_dtype()), (name, df[name].dtype, typ)
    table = pa.Table.from_pandas(df, preserve_index=False)
    for name, typ in ((c, schema.TYPES[c]) for c in synth.COLUMNS):
        got = table.schema.field(name).type
        assert got == typ or (pa.types.is_string(typ) and pa.types.is_large_string(got)), (name, got, typ)
    assert pa.Table.from_pandas(df, schema=schema.arrow_schema(synth.COLUMNS), preserve_index=False).num_rows == 500
    assert not df.isna().any().any()


def test_empty_partition():
    df = synth_partition(0, 0)
    assert list(df.columns) == list(synth.COLUMNS) and len(df) == 0


def test_ids_unique_across_partitions():
    parts = [synth_partition(k, 3000, seed=3) for k in range(5)]
    df = pd.concat(parts, ignore_index=True)
    assert df[schema.ID].is_unique
    assert df["spec_obj_ID"].is_unique
    ids = df[schema.ID].to_numpy()
    assert ids.min() == synth.OBJ_ID_BASE
    assert ids.max() == synth.OBJ_ID_BASE + 4 * 2**32 + 2999
    spec = df["spec_obj_ID"].to_numpy()
    assert (spec > np.uint64(2**63)).any() and (spec < np.uint64(2**63)).any()
    assert (spec >> np.uint64(50) == df["plate"].to_numpy()).all()  # SDSS layout: plate in the top bits
    last = synth_partition(synth.MAX_PARTITIONS - 1, 3)
    assert last[schema.ID].to_numpy().max() < np.uint64(2**64 - 1)


def test_partition_arguments_are_checked():
    with pytest.raises(ValueError):
        synth_partition(-1, 10)
    with pytest.raises(ValueError):
        synth_partition(synth.MAX_PARTITIONS, 10)
    with pytest.raises(ValueError):
        synth_partition(0, -5)
    with pytest.raises(ValueError):
        synth_partition(0, 5, seed=-1)


def test_class_mix_matches_calibration():
    df = synth_partition(0, 50_000, seed=11)
    mix = df[schema.CLASS].value_counts(normalize=True)
    assert set(mix.index) == set(schema.CLASSES)
    for c in schema.CLASSES:
        assert abs(mix[c] - synth.CALIBRATION["fractions"][c]) <= 0.02, (c, mix[c])


def test_values_in_range():
    df = synth_partition(4, 20_000, seed=2)
    assert ((df["alpha"] >= 0) & (df["alpha"] < 360)).all()
    assert ((df["delta"] >= -90) & (df["delta"] <= 90)).all()
    for b in schema.BANDS:
        lo, hi = synth.CALIBRATION["band_range"][b]
        assert df[b].between(np.float32(lo), np.float32(hi)).all(), b
    assert np.isfinite(df[schema.REDSHIFT]).all()
    stars = df[df[schema.CLASS] == "STAR"][schema.REDSHIFT]
    assert stars.abs().max() < 0.01
    assert df.loc[df[schema.CLASS] == "QSO", schema.REDSHIFT].median() > 1.0
    for col, (lo, hi) in {"run_ID": synth.RUN_ID, "cam_col": synth.CAM_COL, "field_ID": synth.FIELD_ID,
                          "plate": synth.PLATE, "fiber_ID": synth.FIBER_ID}.items():
        assert df[col].between(lo, hi).all(), col
    assert (df["rerun_ID"] == synth.RERUN_ID).all()
    assert df["MJD"].between(51608, 58932).all()


# ------------------------------------------------------------------------------------------------ config


@pytest.mark.parametrize("kwargs, field", [
    ({"rows": 0}, "rows"),
    ({"rows": 2.5}, "rows"),
    ({"rows": True}, "rows"),
    ({"dest": ""}, "dest"),
    ({"partitions": 0}, "partitions"),
    ({"rows": 3, "partitions": 4}, "partitions"),
    ({"partitions": synth.MAX_PARTITIONS + 1, "rows": 10**9}, "partitions"),
    ({"rows": 10**15}, "rows"),
    ({"seed": -1}, "seed"),
    ({"format": "json"}, "format"),
])
def test_config_rejects(kwargs, field):
    args = {"rows": 100, "dest": "out", **kwargs}
    with pytest.raises(ConfigError) as err:
        SynthConfig(**args)
    assert err.value.field == field
    assert str(err.value).startswith(f"{field}: ")


def test_config_partitions():
    assert SynthConfig(rows=10, dest="x").partition_rows() == [10]
    assert SynthConfig(rows=2_500_000, dest="x").n_partitions == 3
    sizes = SynthConfig(rows=10, dest="x", partitions=3).partition_rows()
    assert sizes == [4, 3, 3] and sum(sizes) == 10


# ------------------------------------------------------------------------------------------------ files


def test_write_sample_csv(tmp_path):
    path = synth.write_sample_csv(tmp_path / "s.csv", rows=1000, seed=0)
    header = path.read_text().splitlines()[0].split(",")
    assert header == list(synth.COLUMNS)  # Kaggle SDSS17 names are the canonical ones
    back = pd.read_csv(path, dtype={schema.ID: "uint64", "spec_obj_ID": "uint64"})
    df = synth_partition(0, 1000, seed=0)
    assert (back[schema.ID].to_numpy() == df[schema.ID].to_numpy()).all()
    assert (back["spec_obj_ID"].to_numpy() == df["spec_obj_ID"].to_numpy()).all()
    assert (back[schema.CLASS].to_numpy() == df[schema.CLASS].to_numpy()).all()
    for b in schema.BANDS:
        np.testing.assert_allclose(back[b], df[b], atol=1e-5)
    np.testing.assert_allclose(back[schema.REDSHIFT], df[schema.REDSHIFT], rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(back["alpha"], df["alpha"], atol=1e-7)
    line = path.read_text().splitlines()[1].split(",")
    assert all(len(line[header.index(b)].split(".")[-1]) <= 5 for b in schema.BANDS)


def test_embedded_sample_is_current():
    """data/sdss_sample.csv is what data/make_sample.py writes with this generator."""
    sample = Path(__file__).resolve().parents[1] / "data" / "sdss_sample.csv"
    if not sample.is_file():
        pytest.skip(f"{sample} not present; run python data/make_sample.py")
    assert sample.stat().st_size < 4 * 2**20
    df = pd.read_csv(sample, dtype={schema.ID: "uint64"})
    assert list(df.columns) == list(synth.COLUMNS)
    head = synth_partition(0, len(df), seed=0).head(50)
    np.testing.assert_allclose(df["r"].head(50), head["r"], atol=1e-5)


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=":0",
                            set_as_default=False) as c:
        yield c


def test_run_writes_a_committed_dataset(client, tmp_path):
    from astrodask.dataset import open_dataset
    from astrodask.storage import is_complete, read_meta

    dest = tmp_path / "synthetic"
    out = synth.run(SynthConfig(rows=5000, dest=str(dest), partitions=3, seed=4, quiet=True), client)
    assert out == synth.SynthResult(str(dest.absolute()), 5000, 3)
    assert is_complete(dest)
    meta = read_meta(dest)
    assert meta["kind"] == "dataset" and meta["synthetic"] is True and meta["seed"] == 4
    assert meta["rows"] == meta["read"] == meta["written"] == 5000 and meta["quarantined"] == 0
    assert meta["columns"] == list(synth.COLUMNS) and meta["schema_version"] == schema.SCHEMA_VERSION
    assert [p["file"] for p in meta["parts"]] == [f"part-{k:05d}.parquet" for k in range(3)]
    assert [p["rows"] for p in meta["parts"]] == [1667, 1667, 1666]
    table = pq.read_table(dest / "part-00001.parquet")
    assert table.schema.equals(schema.arrow_schema(synth.COLUMNS), check_metadata=False)
    pd.testing.assert_frame_equal(table.to_pandas()[["obj_ID", "u", "class"]].astype({"class": "str"}),
                                  synth_partition(1, 1667, seed=4)[["obj_ID", "u", "class"]])
    ds = open_dataset(str(dest))
    assert ds.n_rows == 5000 and len(ds.files) == 3
    assert not list(tmp_path.glob(".synthetic*"))  # no staging or lock left behind

    with pytest.raises(AstrodaskError, match="already exists"):
        synth.run(SynthConfig(rows=10, dest=str(dest), quiet=True), client)
    synth.run(SynthConfig(rows=10, dest=str(dest), overwrite=True, quiet=True), client)
    assert read_meta(dest)["rows"] == 10


def test_run_csv(client, tmp_path):
    dest = tmp_path / "csv"
    out = synth.run(SynthConfig(rows=300, dest=str(dest), partitions=2, format="csv", quiet=True), client)
    assert out.files == 2
    files = sorted(p.name for p in dest.iterdir() if not p.name.startswith("_"))
    assert files == ["part-00000.csv", "part-00001.csv"]
    df = pd.read_csv(dest / "part-00001.csv")
    assert list(df.columns) == list(synth.COLUMNS) and len(df) == 150
    assert json.loads((dest / "_astrodask.json").read_text())["format"] == "csv"


# ------------------------------------------------------------------------------------------------ fidelity


def _features(df: pd.DataFrame) -> np.ndarray:
    m = [df[b].to_numpy(np.float64) for b in schema.BANDS]
    colours = [m[k] - m[k + 1] for k in range(4)]
    t = np.arcsinh(df[schema.REDSHIFT].to_numpy(np.float64) / 1e-3)
    return np.column_stack([*m, *colours, t])


def _classifier():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))


@pytest.fixture(scope="module")
def real_and_synthetic():
    real = pd.read_csv(SDSS17)
    syn = pd.concat([synth_partition(k, 25_000, seed=0) for k in range(2)], ignore_index=True)
    return (_features(real), real[schema.CLASS].to_numpy(str)), (_features(syn), syn[schema.CLASS].to_numpy(str))


@pytest.mark.realdata
@needs_real
def test_trained_on_synthetic_classifies_real(real_and_synthetic):
    (xr, yr), (xs, ys) = real_and_synthetic
    acc = (_classifier().fit(xs, ys).predict(xr) == yr).mean()
    assert acc >= 0.90, f"synthetic -> real accuracy {acc:.4f}"


@pytest.mark.realdata
@needs_real
def test_trained_on_real_classifies_synthetic(real_and_synthetic):
    (xr, yr), (xs, ys) = real_and_synthetic
    acc = (_classifier().fit(xr, yr).predict(xs) == ys).mean()
    assert acc >= 0.90, f"real -> synthetic accuracy {acc:.4f}"


def test_psf_magnitudes_separate_point_sources_from_galaxies():
    """psf - model: ~0 for stars and quasars (scatter growing fainter), clearly positive for galaxies (less for
    fainter ones): the SDSS separator psf_r - r > 0.145 classifies most rows right."""
    df = synth_partition(0, 20000, seed=3)
    d = (df["psf_r"] - df["r"]).to_numpy(np.float64)
    gal = (df[schema.CLASS] == "GALAXY").to_numpy()
    r = df["r"].to_numpy(np.float64)
    assert abs(np.median(d[~gal])) < 0.01 and np.median(d[gal]) > 0.4
    assert ((d > 0.145) == gal).mean() > 0.95
    bright, faint = r < 18, (r > 20.5) & (r < 22)
    assert np.std(d[~gal & bright]) < np.std(d[~gal & faint])  # noise grows fainter
    assert np.median(d[gal & bright]) > np.median(d[gal & faint]) > 0.145
    for b in schema.BANDS:
        assert df[f"psf_{b}"].dtype == np.float32 and df[f"psf_{b}"].notna().all()
