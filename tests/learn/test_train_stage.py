"""Training across workers: same model whatever the worker count, exact resume, cache modes, report."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from astrodask import ingest
from astrodask.cluster import ClusterConfig, connect
from astrodask.learn import TrainConfig, loop, stage
from astrodask.model import SoftmaxModel

REAL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "sdss17.csv"


def _sample_csv(path: Path, rows: int) -> Path:
    """A fixed subsample of the real catalogue, or synthetic rows when the real file is absent."""
    import pandas as pd

    if REAL.exists():
        df = pd.read_csv(REAL).sample(n=rows, random_state=1).sort_values("obj_ID")
    else:
        synth = pytest.importorskip("astrodask.synth", reason="no real data and no synthetic generator")
        df = synth.synth_partition(0, rows, seed=1)
    df.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    d = tmp_path_factory.mktemp("train")
    src = _sample_csv(d / "sample.csv", 8000)
    with connect(ClusterConfig(n_workers=2), quiet=True) as client:
        ingest.run(ingest.ConvertConfig((str(src),), str(d / "ds"), block_size=64 * 1024, quiet=True), client)
    return d / "ds"


def _fit(ds, model_dir, workers=2, **kw):
    cfg = TrainConfig(str(ds), str(model_dir), quiet=True, **kw)
    with connect(ClusterConfig(n_workers=workers), quiet=True) as client:
        return stage.run(cfg, client)


def test_one_and_two_workers_give_the_same_model(small_dataset, tmp_path):
    r1 = _fit(small_dataset, tmp_path / "m1", workers=1, epochs=25, patience=0, report=False)
    r2 = _fit(small_dataset, tmp_path / "m2", workers=2, epochs=25, patience=0, report=False)
    m1, m2 = SoftmaxModel.load(tmp_path / "m1"), SoftmaxModel.load(tmp_path / "m2")
    assert len(r1.history) == len(r2.history) == 25
    np.testing.assert_allclose(m1.coef, m2.coef, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(m1.intercept, m2.intercept, rtol=1e-9, atol=1e-9)
    assert r1.metrics.accuracy == r2.metrics.accuracy > 0.9


@pytest.mark.parametrize("memory, expected", [(10**15, "memory"), (1, "spill")])
def test_auto_cache_follows_the_workers_memory(small_dataset, tmp_path, monkeypatch, memory, expected):
    """--cache auto keeps the compact blocks in memory when they fit in half the workers' memory, else spills
    them to the workers' disks."""
    monkeypatch.setattr("astrodask.cluster.workers.worker_memory", lambda client: memory)
    _fit(small_dataset, tmp_path / "m", epochs=2, patience=0, report=False)
    assert SoftmaxModel.load(tmp_path / "m").info.cache == expected


def test_stream_spill_and_memory_cache_give_the_same_model(small_dataset, tmp_path):
    kw = dict(epochs=15, patience=0, report=False, warm_start_rows=2000,  # a warm start on a subsample, then all
              companion_rows=1500)
    _fit(small_dataset, tmp_path / "mem", cache="memory", **kw)
    for other in ("stream", "spill"):
        r = _fit(small_dataset, tmp_path / other, cache=other, **kw)
        assert r.metrics.train["warm_start"]["rows"] < r.metrics.train["rows"]
        a, b = SoftmaxModel.load(tmp_path / "mem"), SoftmaxModel.load(tmp_path / other)
        assert b.info.cache == other
        np.testing.assert_allclose(a.coef, b.coef, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(a.companion.coef, b.companion.coef, rtol=1e-9, atol=1e-9)


def test_the_models_persist_reads_the_files_for_its_companion(small_dataset, monkeypatch):
    """With the blocks in memory the model's persist also makes its companion's pass 1 and rows: each file is read
    twice in all (pass 1, persist) instead of four times (spill: each model reads it twice), and the companion
    is the one the separate reads give, on its hash subsample and with the same holdout count."""
    from astrodask.cluster.backend import InProcess
    from astrodask.dataset import HOLDOUT, open_dataset
    from astrodask.learn import blocks, trainer
    from astrodask.learn.config import TrainOptions
    from astrodask.storage import Location

    ds = open_dataset(Location.of(str(small_dataset)))
    read = blocks._read
    reads: list[str] = []
    monkeypatch.setattr(blocks, "_read", lambda file, columns: reads.append(str(file)) or read(file, columns))
    fitted = {}
    for cache in ("memory", "spill"):
        reads.clear()
        opts = TrainOptions(features="spectroscopic", cache=cache, epochs=6, patience=0, companion_rows=1500)
        fitted[cache] = trainer.fit(InProcess(), list(ds.files), ds.n_rows, opts, HOLDOUT, where="test", quiet=True,
                                    log=lambda line: None, companion="photometric")
        assert fitted[cache].handoff is None
        assert sorted(reads) == sorted([str(f) for f in ds.files] * (2 if cache == "memory" else 4)), cache
    a, b = fitted["memory"].model, fitted["spill"].model
    assert a.info.cache == "memory" and b.info.cache == "spill"
    np.testing.assert_array_equal(a.coef, b.coef)
    np.testing.assert_array_equal(a.companion.coef, b.companion.coef)
    assert a.companion.spec.to_dict() == b.companion.spec.to_dict()
    assert 1300 < a.companion.info.n_train < 1700
    assert (a.companion.info.n_valid, a.companion.info.n_test) == (b.companion.info.n_valid, b.companion.info.n_test)
    assert a.companion.info.n_test > a.info.n_test  # the companion counts the holdout rows without a redshift too


def _block_bytes(item) -> int:
    from astrodask.learn import blocks

    return sum(part.nbytes for part in blocks.block_of(item, None, None, None))


def test_a_persisted_pair_is_counted_once_in_the_workers_memory(small_dataset):
    """The worker's memory manager counts each persisted block once, with the companion's rows and summaries
    beside it: counted twice, 40M training rows crossed the workers' spill threshold and trained 1.2x slower
    (benchmarks/README.md, 2026-12-06)."""
    from dask.sizeof import sizeof
    from distributed import wait

    from astrodask.cluster.backend import OnCluster
    from astrodask.dataset import HOLDOUT, open_dataset
    from astrodask.learn import trainer
    from astrodask.learn.config import TrainOptions
    from astrodask.learn.feature_stats import fit_features
    from astrodask.storage import Location

    files = list(open_dataset(Location.of(str(small_dataset))).files)
    with connect(ClusterConfig(n_workers=1), quiet=True) as client:
        backend = OnCluster(client, quiet=True)
        fitted = fit_features(backend, files, "spectroscopic", HOLDOUT, "test")
        kw = {"spec": fitted.spec, "weights": np.ones(3), "rule": HOLDOUT, "warm": 0.0}
        handoff, work = trainer._persist_pair(backend, files, TrainOptions(companion_rows=1500), HOLDOUT,
                                              fitted.counts, "photometric", kw)
        wait([*work, *handoff.summaries, *handoff.rows])
        managed = sum(client.run(lambda dask_worker: dask_worker.state.nbytes).values())
        held = sum(client.gather(client.map(_block_bytes, work, pure=False)))
        # the handoff (summaries, rows) is held twice, in the pair and on its own: small beside real blocks
        handed = sum(client.gather(client.map(sizeof, [*handoff.summaries, *handoff.rows], pure=False)))
        assert held > 0 and len(work) == len(files)
        assert held <= managed - 2 * handed < 1.25 * held
        # the model trains on the pairs themselves: a block taken out by a later task would be held under a second
        # key for as long as the pair lives (every block counted twice at once, before the pairs are released)
        assert all(str(f.key).startswith("persist_pair-") for f in work)


def test_by_default_only_a_model_with_enough_rows_warm_starts(small_dataset, tmp_path, monkeypatch):
    """Unset, the warm start takes a tenth of a model's training rows when that is at least WARM_AUTO_MIN: here the
    spectroscopic model (~5,600 rows) warm-starts and its companion's 1,500-row subsample does not."""
    monkeypatch.setattr("astrodask.learn.trainer.WARM_AUTO_MIN", 400)
    r = _fit(small_dataset, tmp_path / "m", epochs=15, patience=0, report=False, companion_rows=1500)
    warm, train = r.metrics.train["warm_start"], r.metrics.train["rows"]
    assert warm is not None and warm["fraction"] == pytest.approx(0.1)
    assert abs(warm["rows"] - 0.1 * train) <= 1 and warm["epochs"] > 0
    assert r.metrics.train["companion"]["rows"] < 1700 and r.metrics.train["companion"]["warm_start"] is None
    cold = _fit(small_dataset, tmp_path / "cold", epochs=15, patience=0, report=False, companion_rows=1500,
                warm_start_rows=0)
    assert cold.metrics.train["warm_start"] is None
    a, b = SoftmaxModel.load(tmp_path / "m"), SoftmaxModel.load(tmp_path / "cold")
    assert not np.allclose(a.coef, b.coef)  # the warm start changed where the full-data epochs began
    np.testing.assert_array_equal(a.companion.coef, b.companion.coef)


def test_unset_patience_is_the_warm_patience_for_a_warm_started_model_only(small_dataset, tmp_path, monkeypatch):
    """The stopping rule's patience, recorded in metrics.json: WARM_PATIENCE for the warm-started model, PATIENCE
    for its companion (no warm start), and a given patience for both; the early stop honours it."""
    from astrodask.learn.trainer import PATIENCE, WARM_PATIENCE

    monkeypatch.setattr("astrodask.learn.trainer.WARM_AUTO_MIN", 400)
    r = _fit(small_dataset, tmp_path / "m", epochs=60, report=False, companion_rows=1500, min_improvement=0.01)
    train = r.metrics.train
    assert train["warm_start"] is not None and train["companion"]["warm_start"] is None
    assert (train["patience"], train["companion"]["patience"]) == (WARM_PATIENCE, PATIENCE)
    paying, score = 0, -np.inf  # the last epoch that improved by min_improvement, from the history alone
    for rec in r.history:
        if rec.valid_accuracy > score + 0.01:
            paying, score = rec.epoch, rec.valid_accuracy
        if rec.epoch - paying >= WARM_PATIENCE:
            break
    assert train["stop"] == "early_stop" and len(r.history) == rec.epoch == paying + WARM_PATIENCE
    given = _fit(small_dataset, tmp_path / "given", epochs=60, report=False, companion_rows=1500,
                 min_improvement=0.01, patience=4).metrics.train
    assert (given["patience"], given["companion"]["patience"]) == (4, 4)


def test_the_companion_trains_on_a_hash_subsample_of_companion_rows(small_dataset, tmp_path):
    """With more training rows than ``companion_rows`` the companion trains on about that many (validation rows
    in proportion); the model itself and every holdout row are as with ``companion_rows=0``."""
    kw = dict(epochs=3, patience=0, report=False)
    _fit(small_dataset, tmp_path / "all", companion_rows=0, **kw)
    _fit(small_dataset, tmp_path / "sub", companion_rows=1500, **kw)
    full, sub = SoftmaxModel.load(tmp_path / "all"), SoftmaxModel.load(tmp_path / "sub")
    np.testing.assert_array_equal(full.coef, sub.coef)
    n = full.companion.info.n_train
    assert n > 4000 and 1300 < sub.companion.info.n_train < 1700
    assert abs(sub.companion.info.n_valid / full.companion.info.n_valid - 1500 / n) < 0.08
    assert sub.companion.info.n_test == full.companion.info.n_test
    assert not np.allclose(full.companion.coef, sub.companion.coef)


def test_a_companion_subsample_too_small_to_train_names_companion_rows(small_dataset, tmp_path):
    """A subsample of ~1 row holds no row, or rows of one class: the error says it is the companion's subsample
    and which option drew it, not only what is wrong with its rows."""
    from astrodask.errors import AstrodaskError

    with pytest.raises(AstrodaskError, match=r"photometric companion's hash subsample of ~1 training rows, "
                                             r"companion_rows\): (no labelled training rows|the labelled training "
                                             r"rows are all \w+)"):
        _fit(small_dataset, tmp_path / "m", companion_rows=1, epochs=2, patience=0, report=False)


def _checkpoint_epoch(staging: Path) -> int:
    try:
        return json.loads((staging / "checkpoint.json").read_text())["epoch"]
    except (OSError, ValueError, KeyError):
        return 0


@pytest.mark.slow
def test_killed_training_resumes_to_the_uninterrupted_model(small_dataset, tmp_path):
    args = [sys.executable, "-m", "astrodask.cli", "train", str(small_dataset), "--workers", "1", "--epochs", "40",
            "--patience", "0", "--no-report", "--quiet"]
    full = tmp_path / "full"
    subprocess.run([*args, "--model", str(full)], check=True, capture_output=True, timeout=300)

    cut = tmp_path / "cut"
    staging = tmp_path / ".cut.staging"
    proc = subprocess.Popen([*args, "--model", str(cut)], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while _checkpoint_epoch(staging) < 8 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "training finished before it could be interrupted"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = _checkpoint_epoch(staging)
    assert 8 <= killed_at < 40
    assert not cut.exists(), "a half-trained model is visible at the destination"

    out = subprocess.run([*args, "--model", str(cut), "--resume"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "resume: continuing from epoch" in out.stderr
    a, b = SoftmaxModel.load(full), SoftmaxModel.load(cut)
    np.testing.assert_allclose(a.coef, b.coef, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(a.intercept, b.intercept, rtol=1e-9, atol=1e-9)
    ha = json.loads((full / "history.json").read_text())
    hb = json.loads((cut / "history.json").read_text())
    assert [h["train_loss"] for h in ha] == pytest.approx([h["train_loss"] for h in hb], rel=1e-9)


class _Killed(Exception):
    """Raised right after a checkpoint is written: the job dies between two epochs."""


def _record_epoch_weights(monkeypatch) -> dict:
    """Weight shape -> epoch -> the weights after it, as the loop sees them (for both optimisers; the shape tells
    the spectroscopic model from its photometric companion, trained after it by the same loop)."""
    thetas: dict = {}
    real = loop.EpochRecord.of.__func__

    def of(cls, epoch, stats, seconds):
        thetas.setdefault(np.shape(stats.theta), {})[epoch] = np.array(stats.theta, copy=True)
        return real(cls, epoch, stats, seconds)

    monkeypatch.setattr(loop.EpochRecord, "of", classmethod(of))
    return thetas


@pytest.mark.parametrize("mode, warm", [("parallel", 0), ("incremental", 0), ("parallel", 2000)])
def test_both_modes_keep_the_best_epoch_and_resume_without_resetting_patience(small_dataset, tmp_path, monkeypatch,
                                                                              mode, warm):
    """One epoch loop for both optimisers: with patience the model is the best validation epoch's weights (not
    the last epoch's), and a training killed after the best epoch but before early stopping resumes with its
    best epoch and patience intact: it stops where the uninterrupted run stopped, with the same model (also
    after a warm start, which large training sets have by default: the resumed run does not repeat it, and keeps
    the unset patience's WARM_PATIENCE)."""
    from astrodask.learn.trainer import WARM_PATIENCE

    patience = WARM_PATIENCE
    kw = dict(mode=mode, epochs=40, patience=None if warm else patience, report=False, warm_start_rows=warm)
    thetas = _record_epoch_weights(monkeypatch)
    full = _fit(small_dataset, tmp_path / "full", **kw)
    hist = [h.to_json() for h in full.history]
    scores = [-h["valid_accuracy"] for h in hist]
    best = int(np.argmin(scores)) + 1  # the first epoch with the best score
    assert full.metrics.train["best_epoch"] == best and full.metrics.train["stop"] == "early_stop"
    assert len(hist) == best + patience < 40, "the test needs a run that stops early"
    model = SoftmaxModel.load(tmp_path / "full")
    theta = np.column_stack([model.coef, model.intercept])
    thetas = thetas[theta.shape]
    np.testing.assert_allclose(theta, thetas[best], rtol=1e-12, atol=1e-12)
    assert not np.allclose(theta, thetas[len(hist)]), "the model is the last epoch's weights"

    kill_after = best + 1  # past the best epoch, before early stopping
    real_save = loop.Checkpoint.save

    def save(self, state):
        real_save(self, state)
        if state.epoch == kill_after:
            raise _Killed

    monkeypatch.setattr(loop.Checkpoint, "save", save)
    with pytest.raises(_Killed):
        _fit(small_dataset, tmp_path / "cut", **kw)
    monkeypatch.setattr(loop.Checkpoint, "save", real_save)
    assert not (tmp_path / "cut").exists()
    resumed = _fit(small_dataset, tmp_path / "cut", resume=True, **kw)
    assert (full.metrics.train["warm_start"] is not None) == (warm > 0)
    assert resumed.metrics.train["warm_start"] is None  # resumed past it
    assert [h.epoch for h in resumed.history] == [h["epoch"] for h in hist]
    assert [h.valid_accuracy for h in resumed.history] == pytest.approx([h["valid_accuracy"] for h in hist],
                                                                        rel=1e-12)
    assert resumed.metrics.train["best_epoch"] == best
    a, b = SoftmaxModel.load(tmp_path / "full"), SoftmaxModel.load(tmp_path / "cut")
    np.testing.assert_allclose(a.coef, b.coef, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(a.companion.coef, b.companion.coef, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(a.intercept, b.intercept, rtol=1e-9, atol=1e-9)


def test_report_and_metrics_files(small_dataset, tmp_path):
    r = _fit(small_dataset, tmp_path / "m", epochs=30)
    m = tmp_path / "m"
    metrics = json.loads((m / "metrics.json").read_text())
    for key in ("accuracy", "macro_f1", "log_loss", "brier", "per_class", "confusion_matrix", "reliability"):
        assert key in metrics
    assert sum(map(sum, metrics["confusion_matrix"])) == metrics["n"] == r.metrics.n
    assert 0 < metrics["brier"] < 2 and metrics["log_loss"] > 0
    import matplotlib.image as mpimg

    for name in ("accuracy_by_r", "confusion_matrix", "learning_curve", "reliability", "colour_ug_gr", "sky_density"):
        img = mpimg.imread(m / "report" / f"{name}.png")
        assert img.shape[0] > 100 and img.shape[1] > 100
        assert img[..., :3].std() > 0.01, f"{name}.png is blank"
    html = (m / "report" / "index.html").read_text()
    assert "sky_density.png" in html and f"{metrics['accuracy']:.4f}" in html


def test_incremental_mode_runs_dask_ml(small_dataset, tmp_path):
    r = _fit(small_dataset, tmp_path / "inc", mode="incremental", epochs=3, report=False)
    assert len(r.history) == 3
    model = SoftmaxModel.load(tmp_path / "inc")
    assert model.info.link == "ovr"
    assert r.metrics.accuracy > 0.85


def test_balanced_class_weight_raises_qso_recall(small_dataset, tmp_path):
    plain = _fit(small_dataset, tmp_path / "plain", features="photometric", epochs=60, report=False)
    bal = _fit(small_dataset, tmp_path / "bal", features="photometric", epochs=60, class_weight="balanced",
               report=False)
    rec = lambda r: min(v.recall for v in r.metrics.per_class.values())
    assert rec(bal) > rec(plain)


def test_bad_training_options_name_the_field():
    from astrodask.errors import ConfigError

    with pytest.raises(ConfigError, match="^epochs:"):
        TrainConfig("d", "m", epochs=0)
    with pytest.raises(ConfigError, match="^mode:"):
        TrainConfig("d", "m", mode="fast")
    with pytest.raises(ConfigError, match="^features:"):
        TrainConfig("d", "m", features="radio")
