"""The end-to-end job (convert -> train -> predict -> evaluate) on a real multi-process cluster and on LocalCluster."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from astrodask.cluster import ClusterConfig, connect
from astrodask.cluster.watch import workers_now
from astrodask.learn import TrainOptions
from astrodask.pipeline import JobConfig
from astrodask.pipeline import run as run_job

ROOT = Path(__file__).resolve().parents[2]
JOB = ROOT / "jobs" / "classify_sdss.py"
CLASSES = {"GALAXY", "QSO", "STAR"}
PROBS = ["prob_GALAXY", "prob_QSO", "prob_STAR"]
EPOCHS = 60
STAGES = ("dataset", "model", "predictions", "evaluation")


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("ASTRODASK_DEBUG", "DASK_SCHEDULER_ADDRESS")}
    env.update(extra)
    return env


def run_job_script(sources, out: Path, *args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(JOB), *map(str, sources), "--out", str(out), "--quiet", *map(str, args)],
                          capture_output=True, text=True, env=_env(), cwd=cwd, timeout=300)


def error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.strip()]


def input_ids(sources) -> np.ndarray:
    return np.concatenate([pd.read_csv(s, usecols=["obj_ID"])["obj_ID"].to_numpy(np.uint64) for s in sources])


def read_predictions(out: Path) -> pd.DataFrame:
    import dask.dataframe as dd

    return dd.read_parquet(str(out / "predictions")).compute(scheduler="sync").reset_index(drop=True)


def check_job_outputs(out: Path, sources, min_accuracy: float = 0.9, report: bool = True) -> dict:
    """Everything a finished job must have written under ``out`` (with ``report``: the model's and the
    evaluation's reports; without: neither); returns the holdout and all-rows metrics."""
    ids = input_ids(sources)
    assert len(np.unique(ids)) == len(ids)
    # nothing else (no staging, lock or old directories) is left beside the four outputs
    assert sorted(p.name for p in out.iterdir()) == sorted(STAGES)
    for stage in STAGES:
        assert (out / stage / "_SUCCESS").is_file(), f"{stage} not committed"

    # dataset: several partitions holding every input row
    parts = sorted(p.name for p in (out / "dataset").glob("part-*.parquet"))
    assert len(parts) >= 2, f"expected several dataset part files, got {parts}"
    meta = json.loads((out / "dataset" / "_astrodask.json").read_text())
    assert meta["read"] == meta["written"] == len(ids) and meta["quarantined"] == 0

    # model: files, metrics and a report with real figures
    model = out / "model"
    for name in ("model.json", "weights.npz", "metrics.json"):
        assert (model / name).is_file() and (model / name).stat().st_size > 0, name
    for where in (model / "report", out / "evaluation"):
        if not report:
            assert not (where / "index.html").exists() and not list(where.glob("*.png")), where
            continue
        index = where / "index.html"
        assert index.is_file()
        pngs = sorted(where.glob("*.png"))
        assert len(pngs) >= 3, pngs
        html = index.read_text()
        for png in pngs:
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000, png
            assert png.name in html, f"{png.name} not shown in the report"
    holdout = json.loads((model / "metrics.json").read_text())
    assert holdout["accuracy"] > min_accuracy, holdout["accuracy"]
    assert 0.1 * len(ids) < holdout["n"] < 0.3 * len(ids)  # the 20 % id-hash holdout

    # predictions: one file per dataset partition, every input row exactly once; no page of their own (they are
    # labelled: the evaluation's page is theirs), as in the Python API's job
    assert sorted(p.name for p in (out / "predictions").glob("part-*.parquet")) == parts
    assert not (out / "predictions" / "_report").exists()
    pred = read_predictions(out)
    assert len(pred) == len(ids)
    got = pred["obj_ID"].to_numpy(np.uint64)
    assert len(np.unique(got)) == len(got), "an object was predicted twice"
    assert set(got.tolist()) == set(ids.tolist())
    p = pred[PROBS].to_numpy(np.float64)
    assert np.isfinite(p).all() and (p >= 0).all()
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=0, atol=1e-5)
    assert set(pred["predicted_class"].unique()) <= CLASSES
    assert (pred["predicted_class"].to_numpy() == np.array(sorted(CLASSES))[p.argmax(axis=1)]).all()

    # evaluation: every row, and consistent with the predictions themselves
    ev = json.loads((out / "evaluation" / "metrics.json").read_text())
    assert ev["n"] == len(ids)
    assert ev["accuracy"] == pytest.approx((pred["predicted_class"] == pred["class"]).mean(), abs=1e-12)
    assert ev["accuracy"] > min_accuracy
    assert (out / "evaluation" / "holdout_metrics.json").is_file()
    return {"holdout": holdout, "all_rows": ev}


def check_job_stdout(stdout: str, out: Path, metrics: dict, report: bool = True) -> None:
    for stage in STAGES:
        assert str(out.absolute() / stage) in stdout, f"{stage} path missing from:\n{stdout}"
    assert (f"report: {out.absolute() / 'model' / 'report' / 'index.html'}" in stdout) == report, stdout
    assert f"accuracy {metrics['holdout']['accuracy']:.4f}" in stdout
    assert f"accuracy {metrics['all_rows']['accuracy']:.4f}" in stdout


def _small_accuracy(small_sample) -> float:
    return 0.9 if small_sample[1] == "real" else 0.5


# ------------------------------------------------------------------------------------------------ cluster job


@pytest.fixture(scope="module")
def cluster_job(dask_cluster, small_csv_parts, tmp_path_factory):
    """The job script run once against the real scheduler + 2 worker processes."""
    work = tmp_path_factory.mktemp("cluster_job")
    out = work / "out"
    r = run_job_script(small_csv_parts, out, "--scheduler", dask_cluster.address, "--epochs", EPOCHS, cwd=work)
    return r, out


@pytest.mark.cluster
def test_job_script_on_a_real_cluster(cluster_job, small_csv_parts, small_sample):
    r, out = cluster_job
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    metrics = check_job_outputs(out, small_csv_parts, _small_accuracy(small_sample))
    check_job_stdout(r.stdout, out, metrics)
    print(f"\ncluster job: holdout accuracy {metrics['holdout']['accuracy']:.4f}")


@pytest.mark.cluster
def test_dask_scheduler_address_environment_variable(dask_cluster, small_csv, tmp_path):
    """With DASK_SCHEDULER_ADDRESS set and no --scheduler, the CLI works on that scheduler (not a LocalCluster)."""
    with dask_cluster.client() as c:
        before = c.run_on_scheduler(lambda dask_scheduler: dask_scheduler.transition_counter)
    r = subprocess.run([sys.executable, "-m", "astrodask.cli", "convert", str(small_csv), str(tmp_path / "ds")],
                       capture_output=True, text=True, cwd=tmp_path, timeout=180,
                       env=_env(DASK_SCHEDULER_ADDRESS=dask_cluster.address))
    assert r.returncode == 0, r.stderr
    assert f"[astrodask] cluster: {dask_cluster.address}; dashboard:" in r.stderr
    assert "LocalCluster" not in r.stderr
    assert f"dataset: {tmp_path / 'ds'}" in r.stdout
    with dask_cluster.client() as c:
        after = c.run_on_scheduler(lambda dask_scheduler: dask_scheduler.transition_counter)
    assert after > before, "the conversion ran somewhere else than the scheduler named by DASK_SCHEDULER_ADDRESS"


@pytest.mark.cluster
def test_resume_skips_finished_stages_and_overwrite_rules(cluster_job, dask_cluster, small_csv_parts, tmp_path):
    r0, done = cluster_job
    assert r0.returncode == 0, r0.stderr
    out = tmp_path / "out"
    shutil.copytree(done, out)
    before = read_predictions(out)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    sched = ["--scheduler", dask_cluster.address]

    # --resume on a finished job: every stage skipped, nothing rewritten, same results reported
    r = run_job_script(small_csv_parts, out, *sched, "--resume", "--epochs", EPOCHS, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    for kind in ("dataset", "model", "predictions", "evaluation"):
        assert f"resume: {kind} {out / kind} already complete" in r.stderr, r.stderr
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == stamps
    pd.testing.assert_frame_equal(read_predictions(out), before)
    check_job_stdout(r.stdout, out, check_job_outputs(out, small_csv_parts, 0.0))

    # again without --overwrite: refused in one line, outputs untouched
    r = run_job_script(small_csv_parts, out, *sched, "--epochs", EPOCHS, cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    lines = error_lines(r.stderr)
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("astrodask: error: ") and "already exists" in lines[0] and "--overwrite" in lines[0]
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == stamps

    # --resume and --overwrite together make no sense
    r = run_job_script(small_csv_parts, out, *sched, "--resume", "--overwrite", cwd=tmp_path)
    assert r.returncode == 1 and error_lines(r.stderr)[0].startswith("astrodask: error: resume:"), r.stderr

    # with --overwrite: everything redone, same (deterministic) predictions; --no-report: neither report drawn
    r = run_job_script(small_csv_parts, out, *sched, "--overwrite", "--epochs", EPOCHS, "--no-report", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    check_job_stdout(r.stdout, out, check_job_outputs(out, small_csv_parts, 0.0, report=False), report=False)
    assert (out / "predictions" / "_SUCCESS").stat().st_mtime_ns != stamps[out / "predictions" / "_SUCCESS"]
    after = read_predictions(out).sort_values("obj_ID").reset_index(drop=True)
    before = before.sort_values("obj_ID").reset_index(drop=True)
    assert (after["predicted_class"] == before["predicted_class"]).all()
    np.testing.assert_allclose(after[PROBS].to_numpy(), before[PROBS].to_numpy(), atol=1e-6)


# ------------------------------------------------------------------------------------------------ LocalCluster


@pytest.mark.cluster
def test_job_api_on_local_cluster(small_csv_parts, small_sample, tmp_path, monkeypatch):
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)  # ClusterConfig would connect there instead
    out = tmp_path / "out"
    cfg = JobConfig(sources=tuple(str(s) for s in small_csv_parts), out=str(out),
                    train=TrainOptions(epochs=EPOCHS, report=False), quiet=True)
    with connect(ClusterConfig(n_workers=2), quiet=True) as client:
        assert len(workers_now(client)) == 2
        result = run_job(cfg, client)
    assert [result.dataset.dest, result.model.model_dir, result.predictions.out, result.evaluation.out] == \
        [str(out.absolute() / s) for s in STAGES]
    metrics = check_job_outputs(out, small_csv_parts, _small_accuracy(small_sample), report=False)
    assert result.model.report is None and result.evaluation.report is None
    assert result.model.metrics.to_json() == metrics["holdout"]
    assert result.evaluation.metrics.to_json() == metrics["all_rows"]
    assert result.dataset.written == len(input_ids(small_csv_parts))


@pytest.mark.cluster
def test_local_cluster_memory_is_split_between_workers(monkeypatch):
    """--memory-limit auto: one worker gets the whole machine, two get half each (not a per-core share)."""
    from distributed.system import MEMORY_LIMIT

    from astrodask.cluster import worker_memory

    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    for n in (1, 2):
        with connect(ClusterConfig(n_workers=n), quiet=True) as client:
            limits = [w["memory_limit"] for w in workers_now(client).values()]
            assert len(limits) == n
            assert worker_memory(client) == pytest.approx(MEMORY_LIMIT, rel=1e-6)
    with connect(ClusterConfig(n_workers=1, memory_limit="1GiB"), quiet=True) as client:
        assert worker_memory(client) == 2**30


def _page_faults_of_numpy_temporaries() -> int:
    """Minor page faults of 50 rounds of 1 MiB NumPy temporaries in this process."""
    import resource

    import numpy as np

    warm = [np.ones(1 << 17) for _ in range(3)]
    del warm
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(50):
        a = np.ones(1 << 17)
        b = a * 2.0
        del a, b
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@pytest.mark.cluster
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the allocator tuning is for glibc (Linux)")
def test_workers_reuse_heap_memory_for_numpy_temporaries(monkeypatch):
    """Dask's nanny sets MALLOC_TRIM_THRESHOLD_, which makes every NumPy temporary over 128 KiB a fresh mmap
    (~256 page faults per MiB); connect() registers a plugin after which temporaries reuse heap memory."""
    from distributed import Client, LocalCluster

    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster, set_as_default=False) as plain:
        untuned = list(plain.run(_page_faults_of_numpy_temporaries).values())[0]
    with connect(ClusterConfig(n_workers=1), quiet=True) as client:
        assert all("astrodask-malloc" in p for p in client.run(lambda dask_worker: list(dask_worker.plugins)).values())
        tuned = list(client.run(_page_faults_of_numpy_temporaries).values())[0]
    assert untuned > 50 * 256  # the problem exists: at least one fresh 1 MiB mapping per round
    assert tuned < untuned / 20


_PINNED: list = []


def _fragment_heap() -> int:
    """Task: 300 MiB of 1 MiB NumPy arrays interleaved with small objects that stay alive (so the freed
    space is fragmented heap, not the top of it); returns how many small objects are pinned."""
    import numpy as np

    big = []
    for _ in range(300):
        big.append(np.ones(1 << 17))
        _PINNED.append(np.ones(16))  # pins the heap above each big block
    del big
    return len(_PINNED)


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


@pytest.mark.cluster
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the allocator tuning is for glibc (Linux)")
def test_workers_give_freed_memory_back_under_a_tight_limit(monkeypatch):
    """Memory a task freed must not stay with the worker: a worker paused for memory runs no task, so memory
    that only a task could release would keep it paused for ever (seen with predict at 512 MiB per worker)."""
    from astrodask.cluster import MIN_WORKER_MEMORY, TRIM_FRACTION

    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    # the smallest limit, which the fragmented 300 MiB push the worker over TRIM_FRACTION of (as under a tight
    # production limit)
    with connect(ClusterConfig(n_workers=1, memory_limit=f"{MIN_WORKER_MEMORY >> 20}MiB"), quiet=True) as client:
        before = list(client.run(_rss).values())[0]
        assert before < TRIM_FRACTION * MIN_WORKER_MEMORY, f"the worker starts at {before >> 20} MiB: raise the limit"
        assert before + (300 << 20) > TRIM_FRACTION * MIN_WORKER_MEMORY, "the task would not reach the trim threshold"
        assert client.submit(_fragment_heap, pure=False).result() == 300
        after = list(client.run(_rss).values())[0]
    assert after - before < 50 << 20, f"worker kept {(after - before) >> 20} MiB after the task"


# ------------------------------------------------------------------------------------------------ real data


@pytest.mark.realdata
def test_real_data_photometric_macro_f1(shared_data, tmp_path, monkeypatch):
    """The photometric model (no redshift) on the whole SDSS17 file: holdout macro-F1 >= 0.84."""
    from astrodask import ingest
    from astrodask.learn import TrainConfig, stage

    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    with connect(ClusterConfig(n_workers=2), quiet=True) as client:
        ingest.run(ingest.ConvertConfig((str(shared_data / "sdss17.csv"),), str(tmp_path / "ds"), quiet=True), client)
        r = stage.run(TrainConfig(str(tmp_path / "ds"), str(tmp_path / "model"), features="photometric",
                                        quiet=True, report=False), client)
    m = r.metrics
    print(f"\nSDSS17 photometric holdout: accuracy {m.accuracy:.4f}  macro-F1 {m.macro_f1:.4f}")
    assert 19_000 < m.n < 21_000
    assert "asinh_z" not in json.loads((tmp_path / "model" / "model.json").read_text())["features"]["base"]
    assert m.macro_f1 >= 0.84
