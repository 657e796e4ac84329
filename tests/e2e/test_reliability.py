"""Failures a batch job meets, against real processes on 127.0.0.1.

1. A ``dask worker`` SIGKILLed in the middle of training and of prediction (``dask scheduler`` + 2 workers):
   the job finishes once a replacement worker joins, with the model and predictions of an undisturbed run.
2. The job process itself SIGKILLed (its whole process group, LocalCluster included) in the middle of
   convert, train and predict, then rerun with ``--resume``: same output as an uninterrupted run, and
   while a stage has not committed, its destination is absent or still the old complete output.
5. Concurrency on one cluster: two jobs with different outputs do not interfere; two jobs with the same
   output: one wins whole, the other stops with one line naming the other job / the lock.

Undisturbed reference runs are made once per module on the same ``dask_cluster``: the two concurrent jobs of
(5) (a dataset of 3 partitions, the model, predictions) and a conversion with 8 KiB blocks (~85 partitions,
so that convert and predict take long enough to be interrupted). Training is deterministic whatever the
number of workers, so a run on a LocalCluster must match the references to 1e-9. Every job and training here
runs with ``--no-report``: nothing here looks at a report (``tests/report`` does).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support import ROOT
from support.cli import CLI, message_lines, ok, run_cli
from support.processes import Job, wait_until

from astrodask.cluster.watch import workers_now

pytestmark = pytest.mark.cluster

JOB = ROOT / "jobs" / "classify_sdss.py"
EPOCHS = 20  # every training here: --epochs 20 and the job's default patience (parallel L-BFGS, deterministic)
KILL_AT_EPOCH = 5
LOCAL = ["--workers", "2", "--threads", "1"]  # the killed job's own LocalCluster (2 worker processes)
LOCAL_RESUME = ["--workers", "1", "--threads", "1"]  # the rerun: another cluster size, same result
STAGES = ("dataset", "model", "predictions", "evaluation")


# ------------------------------------------------------------------------------------------------ helpers


def staging(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.staging")


def checkpoint_epoch(model_dir: Path) -> int:
    try:
        return int(json.loads((staging(model_dir) / "checkpoint.json").read_text())["epoch"])
    except (OSError, ValueError, KeyError):
        return 0


def count(directory: Path, pattern: str) -> int:
    try:
        return sum(1 for p in directory.glob(pattern) if p.is_file())
    except OSError:
        return 0


class DestinationWatch:
    """Watches a destination while a stage runs: it must be absent, or a complete output (``_SUCCESS``).

    A thread lists the directory every ~2 ms; a listing that exists without ``_SUCCESS`` is a violation.
    With ``old``, the destination must also keep exactly those files until the stage commits.
    """

    def __init__(self, dest: Path):
        self.dest = dest
        self.violations: list[str] = []
        self.seen_complete = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                names = os.listdir(self.dest)
            except FileNotFoundError:
                names = None
            except NotADirectoryError:
                names = ["(a file)"]
            if names is not None:
                if "_SUCCESS" not in names:
                    self.violations.append(f"{self.dest} visible without _SUCCESS: {sorted(names)[:8]}")
                else:
                    self.seen_complete += 1
            self._stop.wait(0.002)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)
        assert not self.violations, self.violations[:3]


def snapshot(directory: Path) -> dict[str, bytes]:
    """Relative path -> content of every file under ``directory``."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def assert_clean_output(dest: Path) -> None:
    """A committed output: _SUCCESS, no staging or lock beside it, no temporary files inside."""
    assert (dest / "_SUCCESS").is_file(), f"{dest} not committed"
    assert not staging(dest).exists(), f"staging directory left beside {dest}"
    assert not dest.with_name(f".{dest.name}.lock").exists(), f"lock left beside {dest}"
    leftovers = [str(p.relative_to(dest)) for p in dest.rglob("*") if ".tmp" in p.name]
    assert not leftovers, f"temporary files inside the committed {dest.name}: {leftovers}"


def input_ids(sources) -> np.ndarray:
    import pandas as pd

    return np.concatenate([pd.read_csv(s, usecols=["obj_ID"])["obj_ID"].to_numpy(np.uint64) for s in sources])


def read_predictions(d: Path) -> pa.Table:
    files = sorted(d.glob("part-*.parquet"))
    assert files, f"no prediction files in {d}"
    t = pa.concat_tables([pq.read_table(f) for f in files])
    return t.sort_by("obj_ID")


def assert_predictions_equal(got: Path, want: Path, sources) -> None:
    a, b = read_predictions(got), read_predictions(want)
    ids = a.column("obj_ID").to_numpy()
    expected = np.sort(input_ids(sources))
    assert len(ids) == len(expected), (len(ids), len(expected))
    assert (ids == expected).all(), "predicted ids differ from the input ids (lost, duplicated or invented rows)"
    assert sorted(p.name for p in got.glob("part-*.parquet")) == sorted(p.name for p in want.glob("part-*.parquet"))
    assert a.equals(b), "predictions differ from the undisturbed run"


def load_model(d: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(d / "weights.npz", allow_pickle=False) as w:
        return w["coef"].copy(), w["intercept"].copy()


def assert_same_model(got: Path, want: Path) -> None:
    (c1, i1), (c2, i2) = load_model(got), load_model(want)
    np.testing.assert_allclose(c1, c2, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(i1, i2, rtol=1e-9, atol=1e-12)
    h1 = json.loads((got / "history.json").read_text())
    h2 = json.loads((want / "history.json").read_text())
    assert [h["epoch"] for h in h1] == [h["epoch"] for h in h2]
    np.testing.assert_allclose([h["train_loss"] for h in h1], [h["train_loss"] for h in h2], rtol=1e-9)


def assert_same_dataset(got: Path, want: Path) -> None:
    parts = sorted(p.name for p in want.glob("part-*.parquet"))
    assert sorted(p.name for p in got.glob("part-*.parquet")) == parts
    for name in parts:
        assert pq.read_table(got / name).equals(pq.read_table(want / name)), name
    q1 = sorted(p.name for p in (got / "_quarantine").glob("*.parquet"))
    assert q1 == sorted(p.name for p in (want / "_quarantine").glob("*.parquet"))
    m1 = json.loads((got / "_astrodask.json").read_text())
    m2 = json.loads((want / "_astrodask.json").read_text())
    for key in ("read", "written", "quarantined", "reasons", "parts", "columns", "sources"):
        assert m1[key] == m2[key], key


# ------------------------------------------------------------------------------------------------ reference


@dataclass
class Reference:
    dir: Path
    sources: list[Path]
    job: Path  # an undisturbed whole job: dataset (3 partitions), model, predictions, evaluation
    ds_many: Path  # the same input converted with 8 KiB blocks: ~85 partitions
    pred_many: Path  # ds_many scored with the job's model

    @property
    def ds(self) -> Path:
        return self.job / "dataset"

    @property
    def model(self) -> Path:
        return self.job / "model"


@pytest.fixture(scope="module")
def job_pair(dask_cluster, small_csv_parts, tmp_path_factory):
    """Two whole jobs started together on one cluster, writing to different outputs (undisturbed runs)."""
    d = tmp_path_factory.mktemp("two_jobs")
    argv = [sys.executable, JOB, *small_csv_parts, "--scheduler", dask_cluster.address, "--epochs", EPOCHS,
            "--no-report", "--quiet", "--out"]
    jobs = [Job.start([*argv, d / f"out{k}"], d, f"job{k}") for k in (0, 1)]
    codes = [j.wait() for j in jobs]
    for j, c in zip(jobs, codes):
        assert c == 0, j.stderr
    return {"different": [d / "out0", d / "out1"], "jobs": jobs}


@pytest.fixture(scope="module")
def ref(dask_cluster, job_pair, small_csv_parts, tmp_path_factory) -> Reference:
    """Undisturbed runs on the real cluster."""
    d = tmp_path_factory.mktemp("reference")
    sched = ["--scheduler", dask_cluster.address, "-q"]
    r = Reference(d, list(small_csv_parts), job_pair["different"][0], d / "ds_many", d / "pred_many")
    ok(run_cli("convert", *r.sources, r.ds_many, "--block-size", "8KiB", *sched, cwd=d))
    ok(run_cli("predict", r.ds_many, r.model, r.pred_many, *sched, cwd=d))
    assert count(r.ds, "part-*.parquet") >= 3
    assert count(r.ds_many, "part-*.parquet") >= 60
    return r


def _live_workers(cluster) -> dict[str, subprocess.Popen]:
    """Scheduler's worker address -> the Popen of that ``dask worker`` (matched by its --name)."""
    by_name = {f"test-worker-{n}": p for n, p in enumerate(cluster.workers)}
    with cluster.client() as c:
        info = workers_now(c)
    return {addr: by_name[w["name"]] for addr, w in info.items() if w.get("name") in by_name}


def _replace_worker(cluster, victim: subprocess.Popen) -> None:
    """SIGKILL ``victim`` (nanny and worker), wait until the scheduler has dropped it, start a new worker."""
    before = len(_live_workers(cluster))
    cluster.kill_worker(victim)
    deadline = time.monotonic() + 60
    while cluster.n_workers() >= before:
        assert time.monotonic() < deadline, "the scheduler did not notice the killed worker"
        time.sleep(0.05)
    cluster.start_worker()


# ------------------------------------------------------------------------------------------------ 1. worker killed


@pytest.mark.slow
def test_worker_killed_mid_training(dask_cluster, ref, tmp_path):
    """SIGKILL the worker holding this training's persisted feature blocks at epoch >= 5; a new worker joins;
    the training finishes with the undisturbed model. A second ``train`` into the same model directory meanwhile
    meets the first one's lock (one line naming it) and changes nothing."""
    model = tmp_path / "model"
    argv = [*CLI, "train", ref.ds, "--model", model, "--epochs", EPOCHS, "--no-report", "--scheduler",
            dask_cluster.address, "-q"]
    job = Job.start(argv, tmp_path, "train")
    second = None
    lock = model.with_name(".model.lock")
    try:
        wait_until(lambda: lock.exists() and lock.stat().st_size > 0, job, "the training's lock", poll=0.01)
        # the first job paused (its lock stays live: same host, pid alive) while the second starts, so that the
        # second meets the lock however soon the first would finish
        os.kill(job.proc.pid, signal.SIGSTOP)
        try:
            second = Job.start(argv, tmp_path, "train-second")
            assert second.wait() == 1, second.stderr
        finally:
            os.kill(job.proc.pid, signal.SIGCONT)
        epoch = wait_until(lambda: checkpoint_epoch(model) >= KILL_AT_EPOCH and checkpoint_epoch(model), job,
                           f"epoch {KILL_AT_EPOCH}")
        workers = _live_workers(dask_cluster)
        with dask_cluster.client() as c:
            # the persisted blocks (learn.trainer: blocks.load_block, or blocks.persist_pair for a spectroscopic
            # model with its companion)
            held = {a: sum(("load_block" in str(k) or "persist_pair" in str(k)) for k in keys)
                    for a, keys in c.has_what().items()}
        victim_addr = max(workers, key=lambda a: held.get(a, 0))
        assert held.get(victim_addr, 0) > 0, f"no worker holds the training blocks: {held}"
        assert job.proc.poll() is None, "training finished before the worker could be killed"
        _replace_worker(dask_cluster, workers[victim_addr])
        assert job.wait() == 0, job.stderr
    finally:
        for j in (job, second):
            if j is not None and j.proc.poll() is None:
                j.kill()
    assert "Traceback" not in job.stderr + second.stderr
    assert KILL_AT_EPOCH <= epoch < EPOCHS
    assert_clean_output(model)
    assert_same_model(model, ref.model)
    lines = message_lines(second.stderr)
    assert len(lines) == 1 and lines[0].startswith("astrodask: error: "), second.stderr
    assert f"another job (pid {job.proc.pid}" in lines[0] and str(lock) in lines[0], lines[0]


@pytest.mark.slow
def test_worker_killed_mid_prediction(dask_cluster, ref, tmp_path):
    out = tmp_path / "pred"
    total = count(ref.ds_many, "part-*.parquet")
    job = Job.start([*CLI, "predict", ref.ds_many, ref.model, out, "--scheduler", dask_cluster.address, "-q"],
                    tmp_path, "predict")
    try:
        wait_until(lambda: count(staging(out), "part-*.parquet") >= 2, job, "the first prediction files")
        victim = next(iter(_live_workers(dask_cluster).values()))
        dask_cluster.kill_worker(victim)
        done_at_kill = count(staging(out), "part-*.parquet")
        committed_at_kill = out.exists()
        deadline = time.monotonic() + 60
        while dask_cluster.n_workers() >= 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        dask_cluster.start_worker()
        assert job.wait() == 0, job.stderr
    finally:
        if job.proc.poll() is None:
            job.kill()
    assert "Traceback" not in job.stderr
    assert not committed_at_kill and done_at_kill < total, \
        f"prediction was not mid-way when the worker died ({done_at_kill} of {total} files)"
    assert_clean_output(out)
    assert_predictions_equal(out, ref.pred_many, ref.sources)


# ------------------------------------------------------------------------------------------------ 2. job killed


@pytest.mark.slow
def test_job_killed_mid_convert_resumes(ref, tmp_path):
    dest = tmp_path / "ds"
    argv = [*CLI, "convert", *ref.sources, dest, "--block-size", "8KiB", *LOCAL, "-q"]
    n_blocks = count(ref.ds_many, "part-*.parquet")
    with DestinationWatch(dest):
        job = Job.start(argv, tmp_path, "convert-killed")
        wait_until(lambda: count(staging(dest) / "_blocks", "*.json") >= 10, job, "10 converted blocks")
        job.kill()
        done = count(staging(dest) / "_blocks", "*.json")
        assert not dest.exists(), "a half-converted dataset is visible at the destination"
        assert 10 <= done < n_blocks, f"convert was not mid-way when killed ({done} of {n_blocks} blocks)"
        # what a task SIGKILLed inside write_parquet_atomic leaves behind (the window is too short to hit
        # reliably by chance): half-written files under temporary names
        (staging(dest) / ".part-00003.parquet.tmp-0123456789abcdef").write_bytes(b"PAR1 half written")
        (staging(dest) / "_quarantine" / ".part-00003.parquet.tmp-fedcba9876543210").write_bytes(b"PAR1")

        again = Job.start([*argv, *LOCAL_RESUME, "--resume"], tmp_path, "convert-resumed")
        assert again.wait() == 0, again.stderr
    assert "Traceback" not in again.stderr
    m = re.search(r"resume: (\d+) of (\d+) blocks already converted", again.stderr)
    assert m and int(m.group(1)) >= done and int(m.group(2)) == n_blocks, again.stderr
    assert_clean_output(dest)
    assert_same_dataset(dest, ref.ds_many)


@pytest.mark.slow
def test_job_script_killed_mid_training_resumes(job_pair, small_csv_parts, tmp_path):
    """``jobs/classify_sdss.py`` on its own LocalCluster, SIGKILLed mid-train, rerun with --resume."""
    reference = job_pair["different"][0]
    out = tmp_path / "out"
    argv = [sys.executable, JOB, *small_csv_parts, "--out", out, "--epochs", EPOCHS, "--no-report", *LOCAL, "--quiet"]
    model = out / "model"
    with DestinationWatch(model):
        job = Job.start(argv, tmp_path, "job-killed")
        wait_until(lambda: checkpoint_epoch(model) >= KILL_AT_EPOCH, job, f"training epoch {KILL_AT_EPOCH}",
                   poll=0.01)
        job.kill()
        killed_at = checkpoint_epoch(model)
        assert KILL_AT_EPOCH <= killed_at < EPOCHS
        assert (out / "dataset" / "_SUCCESS").is_file()
        assert not model.exists(), "a half-trained model is visible"
        assert not (out / "predictions").exists() and not (out / "evaluation").exists()

        again = Job.start([*argv, *LOCAL_RESUME, "--resume"], tmp_path, "job-resumed")
        assert again.wait() == 0, again.stderr
    assert "Traceback" not in again.stderr
    assert f"resume: dataset {out / 'dataset'} already complete" in again.stderr
    assert f"resume: continuing from epoch {killed_at}" in again.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(STAGES), "staging, lock or old directories left"
    for stage in STAGES:
        assert_clean_output(out / stage)
    assert_same_dataset(out / "dataset", reference / "dataset")
    assert_same_model(model, reference / "model")
    assert_predictions_equal(out / "predictions", reference / "predictions", small_csv_parts)
    m1 = json.loads((out / "evaluation" / "metrics.json").read_text())
    m2 = json.loads((reference / "evaluation" / "metrics.json").read_text())
    assert m1["accuracy"] == m2["accuracy"] and m1["n"] == m2["n"]


@pytest.mark.slow
def test_job_killed_mid_predict_resumes_and_old_output_stays_whole(ref, tmp_path):
    """predict --overwrite over a complete older output, SIGKILLed mid-way: the old output stays whole and
    readable until the rerun (--overwrite --resume) commits the new one, which equals the reference."""
    out = tmp_path / "pred"
    shutil.copytree(ref.pred_many, out)
    # make the old output distinguishable from the new one
    (out / "old-marker.txt").write_text("old")
    meta = json.loads((out / "_astrodask.json").read_text())  # as if astrodask had written it
    meta["files"].append("old-marker.txt")
    (out / "_astrodask.json").write_text(json.dumps(meta))
    old = snapshot(out)
    total = count(ref.ds_many, "part-*.parquet")
    argv = [*CLI, "predict", ref.ds_many, ref.model, out, "--overwrite", *LOCAL, "-q"]
    with DestinationWatch(out) as watch:
        job = Job.start(argv, tmp_path, "predict-killed")
        wait_until(lambda: count(staging(out), "part-*.parquet") >= 1, job, "the first prediction file")
        job.kill()
        done = count(staging(out), "part-*.parquet")
        assert done < total, f"prediction was not mid-way when killed ({done} of {total} files)"
        assert snapshot(out) == old, "the old complete predictions changed before the new ones committed"

        again = Job.start([*argv, *LOCAL_RESUME, "--resume"], tmp_path, "predict-resumed")
        assert again.wait() == 0, again.stderr
    assert watch.seen_complete > 0
    assert "Traceback" not in again.stderr
    m = re.search(r"resume: (\d+) of (\d+) partitions already scored", again.stderr)
    assert m and int(m.group(1)) >= done and int(m.group(2)) == total, again.stderr
    assert not (out / "old-marker.txt").exists(), "the new output was mixed with the old one"
    assert not list(tmp_path.glob(".pred.old-*")), "the replaced output was not removed"
    assert_clean_output(out)
    assert_predictions_equal(out, ref.pred_many, ref.sources)


# ------------------------------------------------------------------------------------------------ 5. concurrency


def _check_job_output(out: Path, sources) -> None:
    assert sorted(p.name for p in out.iterdir()) == sorted(STAGES)
    for stage in STAGES:
        assert_clean_output(out / stage)
    meta = json.loads((out / "dataset" / "_astrodask.json").read_text())
    ids = input_ids(sources)
    assert meta["read"] == meta["written"] == len(ids) and meta["quarantined"] == 0
    pred = read_predictions(out / "predictions")
    assert (pred.column("obj_ID").to_numpy() == np.sort(ids)).all()
    ev = json.loads((out / "evaluation" / "metrics.json").read_text())
    assert ev["n"] == len(ids)


@pytest.mark.slow
def test_two_jobs_with_different_outputs_do_not_interfere(job_pair, small_csv_parts):
    a, b = job_pair["different"]
    for job in job_pair["jobs"]:
        assert "Traceback" not in job.stderr
    for out in (a, b):
        _check_job_output(out, small_csv_parts)
    # the same inputs and settings: the same results, to the bit
    assert_same_dataset(a / "dataset", b / "dataset")
    ca, cb = load_model(a / "model"), load_model(b / "model")
    assert (ca[0] == cb[0]).all() and (ca[1] == cb[1]).all()
    assert read_predictions(a / "predictions").equals(read_predictions(b / "predictions"))


@pytest.mark.slow
def test_two_jobs_with_the_same_output_one_wins_whole(dask_cluster, ref, small_csv_parts, tmp_path):
    """Two jobs started together with one --out, and a third one started with --overwrite while the winner trains
    on the dataset it has just committed: the winner's output is whole and correct; each of the others stops
    with one line naming the running job and its lock, and replaces nothing under it."""
    out = tmp_path / "out"
    argv = [sys.executable, JOB, *small_csv_parts, "--scheduler", dask_cluster.address, "--epochs", EPOCHS,
            "--no-report", "--quiet", "--out", out]
    with DestinationWatch(out / "dataset"), DestinationWatch(out / "model"), DestinationWatch(out / "predictions"):
        jobs = [Job.start(argv, tmp_path, f"same{k}") for k in (0, 1)]
        try:
            deadline = time.monotonic() + 180
            while checkpoint_epoch(out / "model") < 2:
                assert any(j.proc.poll() is None for j in jobs), [j.stderr for j in jobs]
                assert time.monotonic() < deadline, "no job reached training"
                time.sleep(0.01)
            dataset_id = (out / "dataset" / "_SUCCESS").stat().st_ino
            # the running jobs paused (their locks stay live: same host, pids alive) while the overwriter starts,
            # so that it meets the winner's lock however soon the winner would finish
            running = [j for j in jobs if j.proc.poll() is None]
            for j in running:
                os.kill(j.proc.pid, signal.SIGSTOP)
            try:
                jobs.append(Job.start([*argv, "--overwrite"], tmp_path, "overwriter"))
                jobs[2].wait()
            finally:
                for j in running:
                    os.kill(j.proc.pid, signal.SIGCONT)
            codes = [j.wait() for j in jobs]
        finally:
            for j in jobs:
                if j.proc.poll() is None:
                    j.kill()
    assert sorted(codes) == [0, 1, 1], [(c, j.stderr) for c, j in zip(codes, jobs)]
    assert codes[2] == 1, "the --overwrite job started while another job was running and succeeded"
    assert (out / "dataset" / "_SUCCESS").stat().st_ino == dataset_id, \
        "the --overwrite job replaced the dataset under the running job"
    winner = jobs[codes.index(0)]
    for loser in (j for j, c in zip(jobs, codes) if c != 0):
        assert "Traceback" not in loser.stderr
        lines = message_lines(loser.stderr)
        assert len(lines) == 1, loser.stderr
        line = lines[0]
        assert line.startswith("astrodask: error: "), line
        assert "another job" in line and f"pid {winner.proc.pid}" in line, line
        assert ".lock" in line, line  # and where the lock is, for a job that died
    assert "Traceback" not in winner.stderr
    # the winner's output is whole and the same as an undisturbed run's
    _check_job_output(out, small_csv_parts)
    assert_same_dataset(out / "dataset", ref.ds)
    assert_same_model(out / "model", ref.model)
    assert read_predictions(out / "predictions").equals(read_predictions(ref.job / "predictions"))
    assert not list(tmp_path.glob(".*")), f"lock or staging left: {list(tmp_path.glob('.*'))}"
