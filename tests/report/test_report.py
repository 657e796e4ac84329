"""The train, evaluate and predict reports, and ``astrodask report``: every figure present and of its stated size,
the numbers behind them against pandas on the same rows, provenance, unlabelled predictions of a real photoObj
field, refusals, and the client's memory not growing with the rows."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from support import SHARED_DATA
from support.browser import png_check
from support.cli import ok, one_line_error, run_cli

from astrodask import evaluate, ingest, predict, schema
from astrodask.dataset import HOLDOUT, TEST
from astrodask.metrics import Metrics
from astrodask.model import SoftmaxModel
from astrodask.report import ReportConfig, page
from astrodask.report import run as report_run
from astrodask.report import sums as S
from astrodask.report.build import MODEL_REPORT_DIR, PREDICTIONS_REPORT_DIR, ranges_of, training_run
from astrodask.report.page import SUMS_NPZ
from astrodask.storage import Location

PHOTOOBJ = SHARED_DATA / "sdss" / "photoObj-003900-6-0269.fits"
LABELLED = {"accuracy_by_r.png", "accuracy_by_redshift.png", "confusion_matrix.png", "reliability.png"}
EVERY = {"class_share_by_r.png", "probability_histograms.png", "out_of_domain_by_r.png", "sky_out_of_domain.png",
         "colour_ug_gr.png", "colour_gr_ri.png", "sky_density.png", "sky_dominant_class.png"}
MAPS = {"sky_density.png", "sky_dominant_class.png", "sky_out_of_domain.png"}


@pytest.fixture
def client(report_client):
    return report_client


@pytest.fixture
def job(report_job):
    return report_job


def _page(d: Path) -> str:
    return (d / "index.html").read_text()


def _images(html: str) -> list[tuple[str, int, int]]:
    return [(m[0], int(m[1]), int(m[2])) for m in re.findall(r"<img src='([^']+)' width='(\d+)' height='(\d+)'", html)]


def _sums(d: Path) -> S.ReportSums:
    with np.load(d / SUMS_NPZ) as z:
        return S.ReportSums.from_npz(dict(z))


def _check_figures(d: Path, want: set[str], absent: set[str] = frozenset()) -> None:
    shown = _images(_page(d))
    names = {n for n, _, _ in shown}
    assert want <= names, want - names
    assert not (absent & names), absent & names
    for name, w, h in shown:
        assert png_check(d / name) == (w, h), name  # a valid PNG of exactly the stated size
        assert w >= (900 if name in MAPS else 600), name


def _frame(ds: Path, pred: Path) -> pd.DataFrame:
    """Predictions joined with their dataset's magnitudes, row by row (the same order)."""
    p, x = pq.read_table(pred).to_pandas(), pq.read_table(ds).to_pandas()
    assert (p[schema.ID].to_numpy() == x[schema.ID].to_numpy()).all()
    return p.assign(**{b: x[b].to_numpy() for b in "ugri"})


def _r_bins(r) -> np.ndarray:
    edges = [-np.inf, *S.R_BINS.edges, np.inf]
    return pd.cut(pd.Series(r), edges, right=False, labels=False).fillna(len(edges) - 1).astype(int).to_numpy()


def test_the_model_report_holds_every_figure_and_the_training(job):
    d = job / "model" / MODEL_REPORT_DIR
    _check_figures(d, LABELLED | EVERY | {"learning_curve.png"})
    html = _page(d)
    for words in ("Provenance", "Inputs", "Versions", "workers × threads", "Wall time per stage", "Report written",
                  str(job / "ds"), "astrodask", "distributed", "pyarrow", "patience", "ECE"):
        assert words in html, words
    m = json.loads((job / "model" / "metrics.json").read_text())
    run = training_run(Metrics.from_json(m), json.loads((job / "model" / "history.json").read_text()))
    assert run.best_epoch == m["train"]["best_epoch"] and len(run.history) == m["train"]["epochs"]
    assert "patience" in run.rule and run.stop_reason


def test_the_model_report_numbers_are_the_holdout_rows(job):
    """Accuracy per r bin and predicted counts in the model report = pandas on the holdout rows scored here."""
    st = _sums(job / "model" / MODEL_REPORT_DIR)
    model = SoftmaxModel.load(job / "model")
    df = pq.read_table(job / "ds").to_pandas()
    df = df[(HOLDOUT.of(df[schema.ID].to_numpy()) == TEST) & df[schema.CLASS].notna()]
    s = model.score(df)
    pred = s.proba.argmax(axis=1)
    y = df[schema.CLASS].map({c: k for k, c in enumerate(schema.CLASSES)}).to_numpy()
    got = pd.DataFrame({"bin": _r_bins(df["r"].to_numpy()), "ok": pred == y}).groupby("bin")["ok"].agg(["mean", "size"])
    tab = st.by_r()
    for b, row in got.iterrows():
        assert tab.n[b] == row["size"] and tab.accuracy[b] == pytest.approx(row["mean"], abs=1e-12)
    assert st.n_rows == st.n_labelled == len(df)
    np.testing.assert_array_equal(st.pred_r.sum(axis=0), np.bincount(pred, minlength=3))
    r_lo, r_hi = model.domain.bounds["r"]
    assert f"{r_lo:.2f}–{r_hi:.2f} mag" in _page(job / "model" / MODEL_REPORT_DIR)  # the training range is marked


def test_the_predictions_report_counts_every_row(job):
    d = job / "pred" / PREDICTIONS_REPORT_DIR
    _check_figures(d, LABELLED | EVERY)
    st = _sums(d)
    df = _frame(job / "ds", job / "pred")
    pred = df[schema.PRED].map({c: k for k, c in enumerate(schema.CLASSES)}).to_numpy()
    assert st.n_rows == len(df)
    got = pd.crosstab(_r_bins(df["r"].to_numpy()), pred)
    for b, row in got.iterrows():
        for k, v in row.items():
            assert st.pred_r[b, k] == v
    ood = df[schema.OUT_OF_DOMAIN].to_numpy()
    assert st.ood_r.sum() == (ood != 0).sum()
    meta = json.loads((job / "pred" / "_astrodask.json").read_text())
    assert meta["report"].endswith(f"{PREDICTIONS_REPORT_DIR}/index.html") and f"{PREDICTIONS_REPORT_DIR}/index.html" in meta["files"]
    assert "predict" in _page(d) and "report figures" in _page(d)  # time per stage


def test_astrodask_report_on_predictions_draws_the_same_numbers(job, tmp_path):
    r = ok(run_cli("report", job / "pred", "--out", tmp_path / "rep", "--workers", "1", "-q"))
    assert f"report: {tmp_path / 'rep'}/index.html" in r.stdout
    a, b = _sums(job / "pred" / PREDICTIONS_REPORT_DIR).to_npz(), _sums(tmp_path / "rep").to_npz()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert (tmp_path / "rep" / "_SUCCESS").is_file()
    ok(run_cli("report", job / "pred", "--out", tmp_path / "rep", "--resume", "--workers", "1", "-q"))


def test_figures_drawn_on_the_workers_are_the_figures_drawn_here(job, client, tmp_path):
    """The cluster draws the figures in parallel (here two threads of one worker, which take turns); every PNG
    is byte for byte the one this process draws, and the page lists the same figures in the same order."""
    st = _sums(job / "pred" / PREDICTIONS_REPORT_DIR)
    ranges = ranges_of(SoftmaxModel.load(job / "model"))
    shown = {}
    for where, c in (("here", None), ("workers", client)):
        (tmp_path / where).mkdir()
        shown[where] = page._figures(Location.of(str(tmp_path / where)), st, None, ranges, None, c)
    assert shown["here"] == shown["workers"] and {s.file for s in shown["here"]} >= EVERY
    for s in shown["here"]:
        assert (tmp_path / "here" / s.file).read_bytes() == (tmp_path / "workers" / s.file).read_bytes(), s.file


def test_the_evaluation_report(job, client, tmp_path):
    res = evaluate.run(evaluate.EvaluateConfig(str(job / "pred"), str(tmp_path / "ev"), quiet=True), client)
    _check_figures(tmp_path / "ev", LABELLED | EVERY)
    assert res.metrics.n == _sums(tmp_path / "ev").n_labelled


def test_a_report_of_unlabelled_predictions_of_a_real_photoobj_field(job, client, tmp_path):
    if not PHOTOOBJ.is_file():
        pytest.skip(f"{PHOTOOBJ} not found (see ../shared/data/README.md)")
    ingest.run(ingest.ConvertConfig((str(PHOTOOBJ),), str(tmp_path / "field"), quiet=True), client)
    predict.run(predict.PredictConfig(str(tmp_path / "field"), str(job / "model"), str(tmp_path / "p"), quiet=True),
                client)
    res = report_run(ReportConfig(str(tmp_path / "p"), str(tmp_path / "rep"), quiet=True), client)
    assert res.labelled == 0 and res.metrics is None and res.rows == 703
    _check_figures(tmp_path / "rep", EVERY, absent=LABELLED | {"learning_curve.png"})
    st = _sums(tmp_path / "rep")
    df = _frame(tmp_path / "field", tmp_path / "p")
    assert st.ood_r.sum() == (df[schema.OUT_OF_DOMAIN] != 0).sum() > 100  # a field fainter than the training rows
    html = _page(tmp_path / "rep")
    share = (df[schema.PRED] == "QSO").mean()
    assert f"QSO {share:.1%}" in html and "predicted class" in html
    assert 1 <= (st.sky.sum(axis=0) > 0).sum() <= 4  # one 0.26 x 0.25 deg field


def test_report_refusals_are_one_line(job, tmp_path):
    line = one_line_error(run_cli("report", job / "ds", "--out", tmp_path / "x", "--workers", "1", "-q"))
    assert "not a predictions" in line or "is a dataset" in line
    # the dataset changed since the predictions were made: the figures would mix two datasets
    copy = tmp_path / "job"
    shutil.copytree(job, copy, ignore=shutil.ignore_patterns(".*"))
    meta = json.loads((copy / "pred" / "_astrodask.json").read_text())
    meta["dataset"] = str(copy / "ds")
    (copy / "pred" / "_astrodask.json").write_text(json.dumps(meta))
    ok(run_cli("convert", *sorted(Path(job / "ds").glob("part-*.parquet"))[:1], copy / "ds", "--overwrite",
               "--workers", "1", "-q"))
    line = one_line_error(run_cli("report", copy / "pred", "--out", tmp_path / "y", "--workers", "1", "-q"))
    assert "changed since the predictions" in line and "rerun predict" in line
    assert not (tmp_path / "y").exists()


def _client_peak(client, ds: Path, model: Path, out: Path, rows: int) -> int:
    """The client's peak allocation while a report's sums are made of ``rows`` predictions and their dataset's
    magnitudes (the page is then drawn from those fixed-size sums alone; tracemalloc would make drawing it the
    slowest minutes of the suite)."""
    import tracemalloc

    from astrodask.dataset import open_dataset
    from astrodask.report import build
    from astrodask.storage import Location, read_meta

    predict.run(predict.PredictConfig(str(ds), str(model), str(out), quiet=True), client)
    pred = open_dataset(Location.of(str(out)), kind="predictions")
    tracemalloc.start()
    sums = build.gather(client, pred.location, read_meta(pred.location), pred.files, None, True).sums
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert sums.figures.n_rows == rows and sums.figures.n_labelled == rows
    assert sum(int(h.sum()) for h in sums.figures.cc_pred.values()) > 0, "no magnitudes read: the dataset was not paired"
    return peak


def test_the_clients_memory_does_not_grow_with_the_rows(job, tmp_path):
    """A report's sums of 8x the rows: the client's peak allocation (tracemalloc) stays the same; the rows stay on
    the workers (a separate process) and only the fixed-size sums come back."""
    from distributed import Client, LocalCluster

    from astrodask import synth

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as lc, \
            Client(lc) as c:
        peaks = []
        for rows in (40_000, 320_000):
            ds = tmp_path / f"s{rows}"
            synth.run(synth.SynthConfig(str(ds), rows=rows, partitions=4, quiet=True), c)
            peaks.append(_client_peak(c, ds, job / "model", tmp_path / f"p{rows}", rows))
    assert peaks[1] < 1.5 * peaks[0] + (4 << 20), peaks  # 8x the rows: not 8x the memory
