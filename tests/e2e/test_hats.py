"""HATS / LSDB (issue #16): predictions written as a HATS catalogue that LSDB opens, cone-searches and
crossmatches; a HATS catalogue as convert's input; an LSDB catalogue classified by the estimator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

lsdb = pytest.importorskip("lsdb", reason="lsdb is in the astrodask[hats] extra (installed by [test])")
pytest.importorskip("hats_import", reason="hats-import is in the astrodask[hats] extra (installed by [test])")

from astrodask import schema
from astrodask.ingest import ConvertConfig
from astrodask.ingest import run as convert
from astrodask.predict import PredictConfig
from astrodask.predict import run as predict

EPOCHS = 8


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster, set_as_default=False) as c, c.as_current():
        yield c


@pytest.fixture(scope="module")
def job(client, small_csv, tmp_path_factory):
    """A dataset (3 partitions) and a model trained on it."""
    from astrodask.cli import main

    d = tmp_path_factory.mktemp("hats")
    convert(ConvertConfig((str(small_csv),), str(d / "ds"), block_size=200_000, quiet=True), client)
    assert main(["train", str(d / "ds"), "--model", str(d / "model"), "--epochs", str(EPOCHS), "--no-report", "--quiet",
                 "--scheduler", client.scheduler.address]) == 0
    return d


def _hats_predictions(client, job: Path, out: Path):
    return predict(PredictConfig(str(job / "ds"), str(job / "model"), str(out), format="hats", quiet=True), client)


def test_predictions_as_a_hats_catalogue_open_in_lsdb(client, job, tmp_path):
    out = tmp_path / "pred_hats"
    r = _hats_predictions(client, job, out)
    ds_rows = sum(pq.ParquetFile(f).metadata.num_rows for f in (job / "ds").glob("part-*.parquet"))
    assert r.rows == ds_rows
    assert (out / "_SUCCESS").is_file() and (out / "hats.properties").is_file()
    assert not list(tmp_path.glob(".pred_hats*")), "staging or lock left behind"

    cat = lsdb.open_catalog(out)
    frame = cat.compute()
    assert len(frame) == ds_rows and frame[schema.ID].is_unique
    assert {"predicted_class", "prob_GALAXY", "prob_QSO", "prob_STAR", "alpha", "delta"} <= set(frame.columns)
    # the same predictions as the Parquet format, row for row
    plain = predict(PredictConfig(str(job / "ds"), str(job / "model"), str(tmp_path / "pred"), quiet=True), client)
    assert plain.rows == ds_rows
    p = pd.read_parquet(tmp_path / "pred").set_index(schema.ID).sort_index()
    h = frame.set_index(schema.ID).sort_index()
    assert (p.index.to_numpy() == h.index.to_numpy().astype(np.uint64)).all()
    assert (p["predicted_class"].to_numpy() == h["predicted_class"].to_numpy().astype(str)).all()
    assert np.allclose(p["prob_QSO"].to_numpy(), h["prob_QSO"].to_numpy(dtype=np.float32))

    # a cone search returns exactly the rows within the radius
    ra0, dec0 = float(frame["alpha"].iloc[0]), float(frame["delta"].iloc[0])
    radius_deg = 5.0
    cone = cat.cone_search(ra=ra0, dec=dec0, radius_arcsec=radius_deg * 3600).compute()
    a, d = np.radians(frame["alpha"]), np.radians(frame["delta"])
    cosd = (np.sin(np.radians(dec0)) * np.sin(d) + np.cos(np.radians(dec0)) * np.cos(d) * np.cos(a - np.radians(ra0)))
    inside = frame[np.degrees(np.arccos(np.clip(cosd, -1, 1))) < radius_deg - 1e-6]
    assert len(cone) > 0 and set(inside[schema.ID]) <= set(cone[schema.ID])

    # a crossmatch with another catalogue finds each object at its own position
    sample = frame.sample(200, random_state=0)
    other = lsdb.from_dataframe(sample[[schema.ID, "alpha", "delta"]].rename(columns={schema.ID: "their_id"}),
                                ra_column="alpha", dec_column="delta")
    xm = cat.crossmatch(other, radius_arcsec=1.0, suffixes=("", "_other")).compute()
    assert len(xm) == 200
    assert (xm[schema.ID].to_numpy() == xm["their_id_other"].to_numpy()).all()

    # evaluate reads it through its manifest like any predictions output
    from astrodask import evaluate

    m = evaluate.run(evaluate.EvaluateConfig(str(out), quiet=True), client).metrics
    assert m.n == ds_rows


def test_hats_needs_sky_positions(client, job, small_csv, tmp_path):
    from astrodask.errors import AstrodaskError

    df = pd.read_csv(small_csv).drop(columns=["alpha", "delta"])
    src = tmp_path / "nosky.csv"
    df.to_csv(src, index=False)
    convert(ConvertConfig((str(src),), str(tmp_path / "ds"), quiet=True), client)
    with pytest.raises(AstrodaskError, match="alpha, delta"):
        predict(PredictConfig(str(tmp_path / "ds"), str(job / "model"), str(tmp_path / "p"), format="hats",
                              quiet=True), client)
    assert not (tmp_path / "p").exists()


def test_convert_reads_a_hats_catalogue(client, small_csv, tmp_path):
    """A HATS catalogue directory as input: its data files, its own RA/Dec columns as alpha/delta."""
    from hats_import.catalog.arguments import ImportArguments
    from hats_import.pipeline import pipeline_with_client

    src = pd.read_csv(small_csv, dtype={schema.ID: "uint64"})
    renamed = src.rename(columns={"alpha": "RA_ICRS", "delta": "DE_ICRS"})
    (tmp_path / "in").mkdir()
    renamed.to_parquet(tmp_path / "in" / "cat.parquet")
    pipeline_with_client(ImportArguments(
        input_file_list=[str(tmp_path / "in" / "cat.parquet")], file_reader="parquet", ra_column="RA_ICRS",
        dec_column="DE_ICRS", output_path=str(tmp_path), output_artifact_name="cat", progress_bar=False,
        pixel_threshold=1500), client)
    assert len(list((tmp_path / "cat" / "dataset").rglob("Npix=*.parquet"))) > 1

    s = convert(ConvertConfig((str(tmp_path / "cat"),), str(tmp_path / "ds"), quiet=True), client)
    assert s.read == s.written == len(src)
    got = pd.read_parquet(tmp_path / "ds").set_index(schema.ID).sort_index()
    want = src.set_index(schema.ID).sort_index()
    assert (got.index == want.index).all()
    assert np.allclose(got["alpha"], want["alpha"]) and np.allclose(got["delta"], want["delta"])
    assert np.allclose(got["u"], want["u"], atol=1e-4)
    assert "_healpix_29" not in got.columns
    meta = json.loads((tmp_path / "ds" / "_astrodask.json").read_text())
    layouts = {i["layout"] for i in meta["inputs"]}
    assert layouts == {"hats"}


@pytest.fixture(scope="module")
def sdss_catalog(client, small_csv, tmp_path_factory):
    """The small sample as a HATS catalogue with SkyServer column names (objID, ra, dec, modelMag_u...)."""
    from hats_import.catalog.arguments import ImportArguments
    from hats_import.pipeline import pipeline_with_client

    d = tmp_path_factory.mktemp("sdss_hats")
    df = pd.read_csv(small_csv, dtype={schema.ID: "uint64"})
    names = {schema.ID: "objID", "alpha": "ra", "delta": "dec", **{b: f"modelMag_{b}" for b in schema.BANDS},
             "redshift": "z_spec"}
    df.rename(columns=names)[list(names.values()) + ["class"]].to_parquet(d / "in.parquet")
    pipeline_with_client(ImportArguments(
        input_file_list=[str(d / "in.parquet")], file_reader="parquet", ra_column="ra", dec_column="dec",
        output_path=str(d), output_artifact_name="sdss", progress_bar=False, pixel_threshold=1500), client)
    return d / "sdss", df


def test_an_lsdb_catalogue_is_classified_where_it_lives(client, job, sdss_catalog):
    import dask.array as da

    from astrodask import SDSSClassifier, classify

    path, df = sdss_catalog
    est = SDSSClassifier.load(job / "model")
    cat = lsdb.open_catalog(path)
    result = classify(cat, est)
    assert isinstance(result, lsdb.Catalog)  # lazy, still HEALPix-partitioned
    # a cone search on the classified catalogue returns classified rows
    row = df.iloc[0]
    cone = result.cone_search(ra=float(row["alpha"]), dec=float(row["delta"]), radius_arcsec=7200).compute()
    assert len(cone) > 0 and {"predicted_class", "prob_QSO", "imputed"} <= set(cone.columns)
    # the same predictions as the estimator on the pandas frame
    got = result.compute().set_index("objID").sort_index()
    want = est.predict_proba(df.sort_values(schema.ID))
    assert np.allclose(got["prob_GALAXY"].to_numpy(), want[:, 0], atol=1e-6)
    assert (got.index.to_numpy().astype(np.uint64) == np.sort(df[schema.ID].to_numpy())).all()
    # predict_proba takes the catalogue too: a lazy Dask array
    lazy = est.predict_proba(cat)
    assert isinstance(lazy, da.Array)
    assert lazy.compute().shape == (len(df), 3)


def test_classify_names_what_the_catalogue_lacks(job, sdss_catalog):
    from astrodask import SDSSClassifier, classify
    from astrodask.errors import AstrodaskError

    path, _ = sdss_catalog
    cat = lsdb.open_catalog(path, columns=["objID", "ra", "dec", "modelMag_u", "modelMag_g"])
    with pytest.raises(AstrodaskError, match="r, i, z"):
        classify(cat, SDSSClassifier.load(job / "model"))
