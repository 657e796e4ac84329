"""Shared fixtures: the real SDSS data, a small sample CSV, and a real multi-process Dask cluster.

Nothing here is autouse: a test pays only for the fixtures it asks for.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from support import SHARED_DATA

from astrodask.cluster.watch import workers_now

pytest_plugins = ["support.s3_fixtures"]  # s3_server, s3_bucket, s3_env (they skip without moto and s3fs)
SDSS17 = SHARED_DATA / "sdss17.csv"
DIRTY_EXPORT = SHARED_DATA / "dirty" / "sdss17_spreadsheet_export.csv"

SMALL_ROWS = 6000
SMALL_SEED = 1
SMALL_PARTS = 3


# ------------------------------------------------------------------------------------------------ data


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared real-data directory (``../shared/data`` beside the project); skip when absent."""
    if not SDSS17.is_file():
        pytest.skip(f"real SDSS data not found at {SDSS17} (see ../shared/data/README.md)")
    return SHARED_DATA


def _small_frame():
    """~6,000 rows: a fixed subsample of the real catalogue, else synthetic rows, else skip."""
    import pandas as pd

    if SDSS17.is_file():
        df = pd.read_csv(SDSS17).sample(n=SMALL_ROWS, random_state=SMALL_SEED)
        return df.sort_values("obj_ID").reset_index(drop=True), "real"
    try:
        from astrodask.synth import synth_partition
    except ImportError:
        pytest.skip(f"no real data at {SDSS17} and astrodask.synth is not importable: no test input")
    return synth_partition(0, SMALL_ROWS, seed=SMALL_SEED), "synthetic"


@pytest.fixture(scope="session")
def small_sample(tmp_path_factory):
    """(path of a ~6,000-row CSV, "real" | "synthetic"); the real subsample is preferred."""
    df, origin = _small_frame()
    path = tmp_path_factory.mktemp("small") / "sample.csv"
    df.to_csv(path, index=False)
    return path, origin


@pytest.fixture(scope="session")
def small_csv(small_sample) -> Path:
    """A ~6,000-row CSV in the canonical column names (see ``small_sample``)."""
    return small_sample[0]


@pytest.fixture(scope="session")
def small_csv_parts(small_csv, tmp_path_factory) -> list[Path]:
    """``small_csv`` cut into three CSV files with the header each, so a dataset has several partitions."""
    lines = small_csv.read_text().splitlines(keepends=True)
    header, body = lines[0], lines[1:]
    d = tmp_path_factory.mktemp("small_parts")
    step = -(-len(body) // SMALL_PARTS)
    paths = []
    for k in range(SMALL_PARTS):
        p = d / f"sample-{k}.csv"
        p.write_text(header + "".join(body[k * step:(k + 1) * step]))
        paths.append(p)
    return paths


# ------------------------------------------------------------------------------------------------ cluster

CLUSTER_WORKERS = 2
START_TIMEOUT = 60.0


def _stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """Terminate a process we started and everything in its process group (a nanny's worker), then kill."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    # the group may outlive its leader (a nanny's child): kill whatever is left of it
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:  # pragma: no cover - a zombie we cannot reap
        pass


def _tail(path: Path, n: int = 20) -> str:
    try:
        return "".join(path.read_text(errors="replace").splitlines(keepends=True)[-n:])
    except OSError:
        return "(no log)"


@dataclass
class DaskProcesses:
    """A real ``dask scheduler`` + ``dask worker`` processes on 127.0.0.1, each in its own process group.

    ``address`` is the scheduler's; ``workers`` holds the Popen of every worker started (dead ones too);
    ``start_worker()`` adds one, ``kill_worker(proc)`` stops one (SIGKILL by default, like a crash).
    """

    directory: Path
    scheduler: subprocess.Popen | None = None
    address: str = ""
    workers: list[subprocess.Popen] = field(default_factory=list)
    logs: dict[int, Path] = field(default_factory=dict)

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        log = self.directory / f"{name}.log"
        fh = open(log, "wb")
        try:
            proc = subprocess.Popen([sys.executable, "-m", *args], stdout=fh, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, cwd=self.directory, start_new_session=True)
        finally:
            fh.close()
        self.logs[proc.pid] = log
        return proc

    def start_scheduler(self) -> None:
        info = self.directory / "scheduler.json"
        self.scheduler = self._spawn("scheduler", [
            "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
            "--dashboard-address", "127.0.0.1:0", "--scheduler-file", str(info)])
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.scheduler.poll() is not None:
                raise RuntimeError(f"dask scheduler exited ({self.scheduler.returncode}):\n"
                                   f"{_tail(self.logs[self.scheduler.pid])}")
            try:
                self.address = json.loads(info.read_text())["address"]
                return
            except (OSError, ValueError, KeyError):
                time.sleep(0.1)
        raise RuntimeError(f"dask scheduler did not start in {START_TIMEOUT:.0f} s:\n"
                           f"{_tail(self.logs[self.scheduler.pid])}")

    def start_worker(self, wait: bool = True) -> subprocess.Popen:
        """Start one more ``dask worker`` (1 process, 1 thread, 2 GiB); with ``wait``, until it has joined."""
        n = len(self.workers)
        expected = self.n_workers() + 1 if wait else None
        proc = self._spawn(f"worker-{n}", [
            "distributed.cli.dask_worker", self.address, "--host", "127.0.0.1", "--nthreads", "1",
            "--nworkers", "1", "--memory-limit", "2GiB", "--no-dashboard", "--name", f"test-worker-{n}",
            "--local-directory", str(self.directory / f"worker-{n}"), "--death-timeout", "60"])
        self.workers.append(proc)
        if wait:
            self.wait_for_workers(expected)
        return proc

    def kill_worker(self, proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
        """Stop one worker (its nanny and worker process): SIGKILL = crash, SIGTERM = graceful."""
        if sig == signal.SIGKILL:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=30)
        else:
            _stop(proc)

    def client(self, **kw):
        from distributed import Client

        return Client(self.address, timeout=START_TIMEOUT, set_as_default=False, **kw)

    def n_workers(self) -> int:
        with self.client() as c:
            return len(workers_now(c))

    def wait_for_workers(self, n: int, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        with self.client() as c:
            while True:
                have = len(workers_now(c))
                if have >= n:
                    return
                if self.scheduler.poll() is not None:
                    raise RuntimeError(f"dask scheduler died:\n{_tail(self.logs[self.scheduler.pid])}")
                if time.monotonic() > deadline:
                    logs = "\n".join(f"--- {p.name}\n{_tail(p)}" for p in self.logs.values())
                    raise RuntimeError(f"only {have} of {n} dask workers connected after {timeout:.0f} s\n{logs}")
                time.sleep(0.2)

    def close(self) -> None:
        for proc in self.workers:
            _stop(proc)
        if self.scheduler is not None:
            _stop(self.scheduler)


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    """A real scheduler and two worker processes on 127.0.0.1 (random free ports), torn down after the module.

    Yields a ``DaskProcesses``: ``.address`` for ``--scheduler``, ``.workers`` (Popen handles),
    ``.start_worker()``, ``.kill_worker(proc)``, ``.client()``.
    """
    procs = DaskProcesses(tmp_path_factory.mktemp("dask_cluster"))
    try:
        procs.start_scheduler()
        for _ in range(CLUSTER_WORKERS):
            procs.start_worker(wait=False)
        procs.wait_for_workers(CLUSTER_WORKERS)
        yield procs
    finally:
        procs.close()
