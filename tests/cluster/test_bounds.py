"""Every wait on a cluster is bounded, every memory floor is real (issue 24: H1, H2, H4, paused and restarting
workers).

Real processes: a ``dask scheduler`` and ``dask worker`` processes on 127.0.0.1 started here (a worker killed
mid-predict; a worker paused for memory; a worker its nanny restarts over and over for memory), the CLI as a
subprocess; a LocalCluster at exactly ``MIN_WORKER_MEMORY`` per worker with a cold numba cache. The watchdog's
clocks (``astrodask.cluster.watch.Watch``) are also driven directly with a fake clock and fake cluster views.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import ROOT, preloads
from support.cli import CLI, env, message_lines, ok, one_line_error, run_cli
from support.processes import Job, wait_until

from astrodask.cluster import MIN_WORKER_MEMORY
from astrodask.cluster.watch import Watch, workers_now
from astrodask.errors import AstrodaskError

SAMPLE = ROOT / "data" / "sdss_sample.csv"
TIMEOUT = 20  # --worker-timeout of the jobs that must give up (a bound under test, never a measured duration)


# ------------------------------------------------------------------------------------------------ the clocks


class Cluster:
    """A fake cluster view for ``Watch``: ``workers`` is what the next look returns (address -> identity)."""

    def __init__(self):
        self.now = 0.0
        self.workers: dict | None = {}

    def clock(self) -> float:
        return self.now

    def look(self):
        return None if self.workers is None else dict(self.workers)

    def watch(self, limit: float = 20, had_workers: bool = True) -> Watch:
        return Watch(limit, "predict", self.look, had_workers=had_workers, clock=self.clock)


def worker(status: str = "running", memory_mib: int = 400, limit_mib: int = 448) -> dict:
    return {"status": status, "memory_limit": limit_mib << 20, "metrics": {"memory": memory_mib << 20}}


def run_for(cluster: Cluster, watch: Watch, seconds: float, change=None) -> None:
    """Look once a second for ``seconds``; ``change(t)`` updates the cluster before each look."""
    end = cluster.now + seconds
    while cluster.now < end:
        cluster.now += 1
        if change:
            change(cluster.now)
        watch.check()


def test_a_cluster_without_workers_ends_the_wait_after_the_worker_timeout():
    c = Cluster()
    c.workers = {"a": worker()}
    w = c.watch()
    run_for(c, w, 5)
    c.workers = {}
    run_for(c, w, 19)  # not yet: 19 s without a worker
    with pytest.raises(AstrodaskError) as info:
        run_for(c, w, 2)
    msg = str(info.value)
    assert msg.startswith("predict: the cluster lost all its workers and none joined within 20 s"), msg
    assert "--worker-timeout 20" in msg and "rerun the same command with --resume" in msg, msg


def test_a_worker_that_joins_in_time_resets_the_clock():
    c = Cluster()
    w = c.watch()
    run_for(c, w, 15)  # no worker yet
    c.workers = {"b": worker()}
    run_for(c, w, 60)  # a long task on a running worker: never cut short
    c.workers = {}
    run_for(c, w, 19)


def test_workers_all_paused_end_the_wait_naming_their_memory():
    c = Cluster()
    c.workers = {"a": worker("paused", 389), "b": worker("running", 300)}
    w = c.watch()
    run_for(c, w, 30)  # one worker still runs tasks
    c.workers["b"] = worker("paused", 374)
    run_for(c, w, 19)
    with pytest.raises(AstrodaskError) as info:
        run_for(c, w, 2)
    msg = str(info.value)
    assert msg.startswith("predict: all 2 workers have been paused for 20 s at 374-389 of 448 MiB of memory"), msg
    assert "Dask pauses a worker above 80% of its memory limit" in msg and "--memory-limit" in msg, msg
    assert "--resume" in msg, msg


def test_progress_resets_the_paused_clock():
    c = Cluster()
    c.workers = {"a": worker("paused")}
    w = c.watch()
    run_for(c, w, 15)
    w.progress()  # a task finished (the worker ran it before pausing)
    run_for(c, w, 15)


def test_workers_restarted_over_and_over_end_the_wait():
    c = Cluster()
    w = c.watch()

    def restarted(t):  # a new worker every 4 s, running for 2 s (its first task never ends) before its nanny kills it
        c.workers = {f"w{int(t) // 4}": worker("running" if t % 4 < 2 else "paused")}

    run_for(c, w, 19, restarted)
    with pytest.raises(AstrodaskError) as info:
        run_for(c, w, 1, restarted)
    msg = str(info.value)
    assert msg.startswith("predict: the Dask workers keep restarting (5 lost and replaced in 20 s without a task "
                          "finishing"), msg
    assert "--memory-limit" in msg and "--resume" in msg, msg


def test_workers_retired_beside_a_long_task_are_no_restart_loop():
    """An adaptive cluster retiring idle workers while one worker runs a long task: that worker outlives the
    wait, so it is no restart loop, however many others come and go."""
    c = Cluster()
    c.workers = {"long": worker()}
    w = c.watch()

    def retire_and_add(t):
        c.workers = {"long": worker(), f"x{int(t)}": worker("closing_gracefully")}

    run_for(c, w, 120, retire_and_add)


def test_a_scheduler_that_stops_answering_ends_the_wait():
    c = Cluster()
    c.workers = {"a": worker()}
    w = c.watch()
    run_for(c, w, 3)
    c.workers = None
    run_for(c, w, 19)
    with pytest.raises(AstrodaskError, match=r"^predict: the Dask scheduler has not answered for 20 s"):
        run_for(c, w, 2)


# ------------------------------------------------------------------------------------------------ real processes


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)


class Processes:
    """A ``dask scheduler`` on 127.0.0.1 and the ``dask worker`` processes a test starts on it."""

    def __init__(self, directory: Path):
        self.dir, self.procs, self.address = directory, [], ""
        info = directory / "scheduler.json"
        self.scheduler = self._spawn("scheduler", ["distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                                                   "--port", "0", "--dashboard-address", "127.0.0.1:0",
                                                   "--scheduler-file", str(info)])
        deadline = time.monotonic() + 60
        while not self.address:
            try:
                self.address = json.loads(info.read_text())["address"]
            except (OSError, ValueError, KeyError):
                assert self.scheduler.poll() is None and time.monotonic() < deadline, self.log("scheduler")
                time.sleep(0.1)

    def _spawn(self, name: str, args: list[str], extra_env: dict | None = None) -> subprocess.Popen:
        with open(self.dir / f"{name}.log", "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", *args], stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, cwd=self.dir, start_new_session=True,
                                    env=env(extra_env))
        self.procs.append(proc)
        return proc

    def log(self, name: str) -> str:
        return (self.dir / f"{name}.log").read_text(errors="replace")[-3000:]

    def worker(self, name: str, *args: str) -> subprocess.Popen:
        """A ``dask worker`` (1 process, 1 thread) with ``args`` (default memory limit 2 GiB)."""
        limit = [] if "--memory-limit" in args else ["--memory-limit", "2GiB"]
        return self._spawn(name, ["distributed.cli.dask_worker", self.address, "--host", "127.0.0.1", "--nthreads",
                                  "1", "--no-dashboard", "--name", name, "--local-directory", str(self.dir / name),
                                  "--death-timeout", "60", *limit, *args])

    def n_workers(self) -> int:
        from distributed import Client

        with Client(self.address, timeout=60, set_as_default=False) as c:
            return len(workers_now(c))

    def wait_for(self, n: int) -> None:
        deadline = time.monotonic() + 120
        while self.n_workers() != n:
            assert time.monotonic() < deadline, f"the scheduler does not have {n} worker(s)"
            time.sleep(0.2)

    def close(self) -> None:
        for p in self.procs:
            _stop(p)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    procs = Processes(tmp_path_factory.mktemp("bounds_cluster"))
    try:
        yield procs
    finally:
        procs.close()


@pytest.fixture(scope="module")
def inputs(cluster, tmp_path_factory):
    """A dataset of ~60 partitions and a model, made with one healthy worker that then stops."""
    d = tmp_path_factory.mktemp("bounds_inputs")
    healthy = cluster.worker("healthy")
    cluster.wait_for(1)
    sched = ["--scheduler", cluster.address, "-q"]
    ok(run_cli("convert", SAMPLE, d / "ds", "--block-size", "32KiB", *sched, cwd=d))
    ok(run_cli("train", d / "ds", "--model", d / "model", "--features", "photometric", "--no-morphology", "--epochs",
               "3", "--no-report", *sched, cwd=d))
    _stop(healthy)
    cluster.wait_for(0)
    assert len(list((d / "ds").glob("part-*.parquet"))) >= 40
    return d / "ds", d / "model"


def _staged(out: Path) -> int:
    return len(list(out.with_name(f".{out.name}.staging").glob("part-*.parquet")))


def _predict(cluster, inputs, out: Path, *extra) -> list:
    ds, model = inputs
    return [*CLI, "predict", ds, model, out, "--scheduler", cluster.address, "--worker-timeout", TIMEOUT, "-q",
            *extra]


def _result(job: Job) -> str:
    """The job's one error line (exit 1, nothing else on stderr)."""
    code = job.wait(timeout=180)
    lines = message_lines(job.stderr)
    assert code == 1 and len(lines) == 1 and lines[0].startswith("astrodask: error: "), (code, job.stderr)
    return lines[0]


@pytest.mark.cluster
@pytest.mark.slow
def test_the_only_worker_killed_mid_predict_ends_the_job_then_resume_finishes(cluster, inputs, tmp_path):
    """H2: the scheduler loses its only worker mid-predict: one line after --worker-timeout, naming the cause, with
    the --resume hint; a new worker and --resume then finish the predictions."""
    ds, _ = inputs
    parts = len(list(ds.glob("part-*.parquet")))
    out = tmp_path / "pred"
    w = cluster.worker("w-killed")
    cluster.wait_for(1)
    job = Job.start(_predict(cluster, inputs, out), tmp_path, "predict")
    try:
        wait_until(lambda: _staged(out) >= 2, job, "the first predictions")
        _stop(w)
        done_at_kill = _staged(out)
        line = _result(job)
    finally:
        if job.proc.poll() is None:
            job.kill()
    assert done_at_kill < parts, "the prediction was over before the worker died"
    assert line.startswith(f"astrodask: error: predict: the cluster lost all its workers and none joined within "
                           f"{TIMEOUT} s (--worker-timeout {TIMEOUT})"), line
    assert line.endswith("then rerun the same command with --resume"), line
    assert not out.exists()
    cluster.worker("w-new")
    cluster.wait_for(1)
    ok(run_cli(*_predict(cluster, inputs, out, "--resume")[len(CLI):], cwd=tmp_path))
    assert len(list(out.glob("part-*.parquet"))) == parts
    _stop(cluster.procs[-1])
    cluster.wait_for(0)


@pytest.mark.cluster
@pytest.mark.slow
def test_a_worker_paused_for_memory_ends_the_job_naming_its_memory(cluster, inputs, tmp_path):
    """A worker held at 90 % of its memory limit is paused by distributed and never runs a task again (what
    --memory-limit 448MiB did to astrodask's workers): one line after --worker-timeout."""
    preload = preloads.paused(tmp_path / "paused_preload.py")
    w = cluster.worker("w-paused", "--no-nanny", "--memory-limit", "1GiB", "--preload", str(preload))
    cluster.wait_for(1)
    try:
        line = _result(Job.start(_predict(cluster, inputs, tmp_path / "pred"), tmp_path, "predict"))
    finally:
        _stop(w)
    assert line.startswith("astrodask: error: predict: the only worker has been paused for "), line
    assert " of 1024 MiB of memory (Dask pauses a worker above 80% of its memory limit), so no task can run " \
           f"(--worker-timeout {TIMEOUT})" in line, line
    assert line.endswith("then rerun the same command with --resume"), line
    assert not (tmp_path / "pred").exists()
    cluster.wait_for(0)


@pytest.mark.cluster
@pytest.mark.slow
def test_workers_restarting_in_a_loop_end_the_job(cluster, inputs, tmp_path):
    """H3's restart loop: a worker that joins paused and then grows over 95 % of its limit is restarted by its
    nanny, over and over, without running a task (nothing for distributed's allowed-failures to count)."""
    preload = preloads.restarting(tmp_path / "restart_preload.py")
    w = cluster.worker("w-restarting", "--memory-limit", "1GiB", "--preload", str(preload))
    try:
        line = _result(Job.start(_predict(cluster, inputs, tmp_path / "pred", "--worker-timeout", "30"), tmp_path,
                                 "predict"))
    finally:
        _stop(w)
    assert "restarted" in cluster.log("w-restarting").lower() or "restarting" in cluster.log("w-restarting").lower()
    assert line.startswith("astrodask: error: predict: the Dask workers keep restarting ("), line
    assert "lost and replaced in" in line and "without a task finishing" in line and "--memory-limit" in line, line
    assert line.endswith("then rerun the same command with --resume"), line
    cluster.wait_for(0)


# ------------------------------------------------------------------------------------------------ floors


@pytest.mark.cluster
@pytest.mark.slow
def test_train_and_predict_run_at_the_documented_minimum_memory_with_a_cold_numba_cache(tmp_path):
    """H1: MIN_WORKER_MEMORY per worker works, numba compiling everything afresh (as in a fresh clone)."""
    limit = ["--workers", "2", "--memory-limit", f"{MIN_WORKER_MEMORY >> 20}MiB", "-q"]
    cold = {"NUMBA_CACHE_DIR": str(tmp_path / "numba-cache")}
    ok(run_cli("convert", SAMPLE, tmp_path / "ds", *limit, env_extra=cold, timeout=300))
    ok(run_cli("train", tmp_path / "ds", "--model", tmp_path / "model", "--no-report", *limit, env_extra=cold,
               timeout=300))
    r = ok(run_cli("predict", tmp_path / "ds", tmp_path / "model", tmp_path / "pred", *limit, env_extra=cold,
                   timeout=300))
    assert "20,000 rows" in r.stdout, r.stdout
    assert list((tmp_path / "numba-cache").rglob("*.nbi")), "numba did not compile into the cold cache"


@pytest.mark.cluster
def test_more_local_workers_than_the_memory_allows_are_refused_up_front(tmp_path):
    """H4: --workers N whose automatic share of the machine's memory is under the floor: one line, at once."""
    from distributed.system import MEMORY_LIMIT

    most = int(MEMORY_LIMIT) // MIN_WORKER_MEMORY
    line = one_line_error(run_cli("convert", SAMPLE, tmp_path / "ds", "--workers", most + 1))
    share = int(MEMORY_LIMIT) // (most + 1) >> 20
    assert line.startswith(f"astrodask: error: n_workers: --workers {most + 1}: this machine's "), line
    assert f"split {most + 1} ways is {share} MiB per worker, below the {MIN_WORKER_MEMORY >> 20} MiB a worker " \
           f"needs; use at most {most} workers (--workers {most})" in line, line
    assert not (tmp_path / "ds").exists()


def test_explicit_limits_over_the_machine_memory_are_warned_about(capsys):
    from distributed.system import MEMORY_LIMIT

    from astrodask.cluster import ClusterConfig
    from astrodask.cluster.local import check_local_memory

    big = f"{int(MEMORY_LIMIT) // 2**20}MiB"
    check_local_memory(ClusterConfig(n_workers=2, memory_limit=big), 2, big)
    err = capsys.readouterr().err
    assert err.startswith(f"[astrodask] warning: 2 workers x {big} is more memory than this machine has"), err
    check_local_memory(ClusterConfig(n_workers=1, memory_limit=big), 1, big)
    assert capsys.readouterr().err == ""
