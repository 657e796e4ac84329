#!/usr/bin/env python
"""Predict at scale under tight worker memory: does the job finish without a worker being killed for memory?

Starts its own ``dask scheduler`` and ``dask worker`` processes on 127.0.0.1 with a low ``--memory-limit``
(so the workers' memory manager has to spill, pause and, past 95 %, restart workers), makes a catalogue of
``--rows`` rows, trains a small model on a slice of it (both on a roomy LocalCluster of their own), then runs ``astrodask predict`` on the whole catalogue
against that cluster while sampling every worker process's memory (RSS, every 0.1 s) and the scheduler's
view (spilled bytes, worker addresses). Prints peak worker memory against the limit, whether any worker was
restarted (a new worker process, a new address, or a nanny "exceeded ... memory" log line), and the rows/s.

The catalogue comes from ``astrodask synth`` when astrodask/synth.py exists (and works); otherwise the real
SDSS17 file (../shared/data/sdss17.csv) is tiled with fresh ids.

    python benchmarks/bench_spill.py                          # 10,000,000 rows, 2 workers x 512 MiB
    python benchmarks/bench_spill.py --rows 2e5 --partition-rows 1e5   # a quick check

Exit status: 0 when predict succeeded with every row and no worker restarted; 1 otherwise. Not a test:
pytest does not collect it (tests live in tests/).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

from astrodask.cluster.watch import workers_now

ROOT = common.ROOT
REAL = common.SDSS17
CLI = [sys.executable, "-m", "astrodask.cli"]
MEMORY_LOG = re.compile(r"exceeded \d+% memory budget|Restarting worker|KilledWorker|Worker process \d+ was killed",
                        re.I)


def _env() -> dict:
    return {k: v for k, v in os.environ.items() if k not in ("ASTRODASK_DEBUG", "DASK_SCHEDULER_ADDRESS")}


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


# ------------------------------------------------------------------------------------------------ cluster


class Cluster:
    """``dask scheduler`` + one ``dask worker --nworkers N`` process group, logs in ``work``."""

    def __init__(self, work: Path, workers: int, memory_limit: str):
        self.work, self.n, self.memory_limit = work, workers, memory_limit
        self.procs: list[subprocess.Popen] = []
        self.address = ""

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        with open(self.work / f"{name}.log", "wb") as fh:
            p = subprocess.Popen([sys.executable, "-m", *args], stdout=fh, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, cwd=self.work, start_new_session=True, env=_env())
        self.procs.append(p)
        return p

    def start(self) -> None:
        info = self.work / "scheduler.json"
        self._spawn("scheduler", ["distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
                                  "--dashboard-address", "127.0.0.1:0", "--scheduler-file", str(info)])
        deadline = time.monotonic() + 60
        while not self.address:
            try:
                self.address = json.loads(info.read_text())["address"]
            except (OSError, ValueError, KeyError):
                if time.monotonic() > deadline:
                    raise RuntimeError("the scheduler did not start; see scheduler.log") from None
                time.sleep(0.1)
        self.worker_group = self._spawn("workers", [
            "distributed.cli.dask_worker", self.address, "--host", "127.0.0.1", "--nworkers", str(self.n),
            "--nthreads", "1", "--memory-limit", self.memory_limit, "--no-dashboard",
            "--local-directory", str(self.work / "worker-space"), "--death-timeout", "60"])
        from distributed import Client

        with Client(self.address, timeout=60, set_as_default=False) as c:
            c.wait_for_workers(self.n, timeout=120)

    def worker_processes(self) -> list:
        """The worker processes proper (the nannies' children), not the nannies nor multiprocessing helpers."""
        import psutil

        try:
            top = psutil.Process(self.worker_group.pid)
            out = []
            for p in top.children(recursive=True):
                cmd = " ".join(p.cmdline())
                if "dask_worker" in cmd or "resource_tracker" in cmd or "forkserver" in cmd:
                    continue
                out.append(p)
            return out
        except psutil.Error:
            return []

    def memory_log_lines(self) -> list[str]:
        lines = []
        for log in self.work.glob("*.log"):
            lines += [ln.strip() for ln in log.read_text(errors="replace").splitlines() if MEMORY_LOG.search(ln)]
        return lines

    def close(self) -> None:
        for p in reversed(self.procs):
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(p.pid, sig)
                except (ProcessLookupError, PermissionError):
                    break
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    continue
                try:  # the group may outlive its leader
                    os.killpg(p.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                break


class Monitor(threading.Thread):
    """Samples worker RSS (psutil, 0.1 s) and the scheduler's worker list / spilled bytes (0.5 s)."""

    def __init__(self, cluster: Cluster):
        super().__init__(daemon=True)
        self.cluster = cluster
        self.stop = threading.Event()
        self.peak_rss = 0
        self.peak_rss_sum = 0
        self.pids: set[int] = set()
        self.addresses: set[str] = set()
        self.peak_spilled = 0
        self.peak_managed = 0

    def run(self) -> None:
        from distributed import Client

        with Client(self.cluster.address, timeout=60, set_as_default=False) as c:
            last = 0.0
            while not self.stop.is_set():
                procs = self.cluster.worker_processes()
                total = 0
                for p in procs:
                    try:
                        rss = p.memory_info().rss
                    except Exception:  # noqa: BLE001 - the process just ended
                        continue
                    self.pids.add(p.pid)
                    self.peak_rss = max(self.peak_rss, rss)
                    total += rss
                self.peak_rss_sum = max(self.peak_rss_sum, total)
                if time.monotonic() - last > 0.5:
                    last = time.monotonic()
                    info = workers_now(c)  # {} when the scheduler does not answer: keep sampling
                    for addr, w in info.items():
                        self.addresses.add(addr)
                        m = w.get("metrics", {})
                        self.peak_spilled = max(self.peak_spilled, int(m.get("spilled_bytes", {}).get("disk", 0)))
                        self.peak_managed = max(self.peak_managed, int(m.get("managed_bytes", 0)))
                self.stop.wait(0.1)


# ------------------------------------------------------------------------------------------------ data


def _tile_partition(index: int, start: int, n: int, base, dest: str) -> int:
    """Worker task: rows ``start .. start+n`` of the real catalogue repeated, with fresh ids 1e9 + row."""
    import numpy as np
    import pyarrow as pa

    from astrodask import schema
    from astrodask.storage import write_parquet_atomic

    rows = (np.arange(start, start + n) % base.num_rows).astype(np.int64)
    t = base.take(pa.array(rows))
    t = t.set_column(t.schema.get_field_index(schema.ID), schema.ID,
                     pa.array(np.arange(start, start + n, dtype=np.uint64) + np.uint64(10**9), pa.uint64()))
    write_parquet_atomic(t, Path(dest) / f"part-{index:05d}.parquet")
    return n


def tile_real_data(client, rows: int, partition_rows: int, dest: Path) -> None:
    import pandas as pd
    import pyarrow as pa

    from astrodask import schema
    from astrodask.storage import write_json_atomic

    if not REAL.is_file():
        raise SystemExit(f"no astrodask synth and no real data at {REAL}: nothing to tile")
    df = pd.read_csv(REAL)
    cols = [c for c in schema.COLUMNS if c in df.columns]
    base = pa.Table.from_pandas(df[cols], preserve_index=False).cast(schema.arrow_schema(cols))
    dest.mkdir(parents=True)
    base_f = client.scatter(base, broadcast=True)
    n_parts = math.ceil(rows / partition_rows)
    futs = [client.submit(_tile_partition, k, k * partition_rows, min(partition_rows, rows - k * partition_rows),
                          base_f, str(dest), pure=False) for k in range(n_parts)]
    written = sum(client.gather(futs))
    assert written == rows
    write_json_atomic(dest / "_astrodask.json", {"kind": "dataset", "rows": rows, "tiled_from": str(REAL)})
    (dest / "_SUCCESS").write_text("")


ROOMY = ["--workers", "2", "--memory-limit", "3GiB"]  # data generation and training: not what is measured


def make_catalogue(rows: int, partition_rows: int, dest: Path) -> str:
    """Make the catalogue on a roomy LocalCluster of its own; return how it was made."""
    if (ROOT / "astrodask" / "synth.py").is_file():
        parts = max(1, math.ceil(rows / partition_rows))
        r = subprocess.run([*CLI, "synth", "--rows", str(rows), "--partitions", str(parts), str(dest), *ROOMY, "-q"],
                           capture_output=True, text=True, env=_env())
        if r.returncode == 0:
            return "astrodask synth"
        print(f"astrodask synth failed (exit {r.returncode}): {r.stderr.strip().splitlines()[-1:]}; "
              "tiling the real data instead", flush=True)
        shutil.rmtree(dest, ignore_errors=True)
    from astrodask.cluster import ClusterConfig, connect

    with connect(ClusterConfig(n_workers=2, memory_limit="3GiB"), quiet=True) as c:
        tile_real_data(c, rows, partition_rows, dest)
    return f"tiled {REAL.name} with fresh ids"


def _rows_in(d: Path) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(f).metadata.num_rows for f in d.glob("part-*.parquet"))


def _subset(src: Path, dest: Path, rows: int) -> None:
    """A small training dataset: the first ``rows`` rows of the catalogue's first file."""
    import pyarrow.parquet as pq

    first = sorted(src.glob("part-*.parquet"))[0]
    dest.mkdir()
    t = pq.ParquetFile(first).read_row_groups([0]).slice(0, rows)
    pq.write_table(t, dest / "part-00000.parquet")
    (dest / "_SUCCESS").write_text("")
    (dest / "_astrodask.json").write_text(json.dumps({"kind": "dataset"}))


# ------------------------------------------------------------------------------------------------ main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=float, default=1e7, help="catalogue rows (default 1e7)")
    ap.add_argument("--partition-rows", type=float, default=1e6, help="rows per input file (default 1e6)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--memory-limit", default="512MiB",
                    help="per worker (default 512MiB: predict's working set crosses the spill and pause thresholds)")
    ap.add_argument("--train-rows", type=int, default=20_000)
    ap.add_argument("--work", default=None, help="working directory (default: a temporary one, removed)")
    ap.add_argument("--keep", action="store_true", help="keep the working directory")
    args = ap.parse_args(argv)
    rows, partition_rows = int(args.rows), int(args.partition_rows)

    from dask.utils import parse_bytes

    limit = parse_bytes(args.memory_limit)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench_spill-"))
    work.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(work, args.workers, args.memory_limit)
    try:
        t0 = time.perf_counter()
        catalogue = work / "catalogue"
        if (catalogue / "_SUCCESS").is_file() and _rows_in(catalogue) == rows:
            how = "reused from --work"
        else:
            shutil.rmtree(catalogue, ignore_errors=True)
            how = make_catalogue(rows, partition_rows, catalogue)
        print(f"catalogue: {rows:,} rows in {len(list(catalogue.glob('part-*')))} files ({how}) "
              f"in {time.perf_counter() - t0:.0f} s", flush=True)
        if not (work / "model" / "_SUCCESS").is_file():
            shutil.rmtree(work / "train", ignore_errors=True)
            _subset(catalogue, work / "train", min(args.train_rows, rows))
            r = subprocess.run([*CLI, "train", str(work / "train"), "--model", str(work / "model"), "--epochs", "10",
                                "--patience", "0", *ROOMY, "-q"], capture_output=True, text=True, env=_env())
            if r.returncode != 0:
                print(f"training failed: {r.stderr.strip()}")
                return 1
        n_features = len(json.loads((work / "model" / "model.json").read_text())["features"]["names"])
        print(f"model: {n_features} features", flush=True)
        shutil.rmtree(work / "predictions", ignore_errors=True)

        cluster.start()
        print(f"cluster: {cluster.address}, {args.workers} workers x {args.memory_limit}, 1 thread each", flush=True)
        start_pids = {p.pid for p in cluster.worker_processes()}
        start_logs = len(cluster.memory_log_lines())
        mon = Monitor(cluster)
        mon.start()
        t1 = time.perf_counter()
        r = subprocess.run([*CLI, "predict", str(catalogue), str(work / "model"), str(work / "predictions"),
                            "--scheduler", cluster.address, "-q"], capture_output=True, text=True, env=_env())
        seconds = time.perf_counter() - t1
        mon.stop.set()
        mon.join(timeout=10)

        import pyarrow.parquet as pq

        predicted = sum(pq.ParquetFile(f).metadata.num_rows for f in (work / "predictions").glob("part-*.parquet")) \
            if r.returncode == 0 else 0
        new_pids = mon.pids - start_pids
        memory_lines = cluster.memory_log_lines()[start_logs:]
        restarted = bool(new_pids) or len(mon.addresses) > args.workers or bool(memory_lines)
        print(f"predict: exit {r.returncode}, {predicted:,} of {rows:,} rows in {seconds:.1f} s "
              f"({rows / max(seconds, 1e-9):,.0f} rows/s)")
        if r.returncode != 0:
            print(f"  stderr: {r.stderr.strip()}")
        print(f"peak worker memory: {_gib(mon.peak_rss)} in one worker ({100 * mon.peak_rss / limit:.0f} % of its "
              f"{args.memory_limit} limit), {_gib(mon.peak_rss_sum)} all workers")
        print(f"peak managed memory {_gib(mon.peak_managed)}, peak spilled to disk {_gib(mon.peak_spilled)}")
        print(f"worker restarted: {'YES' if restarted else 'no'} ({len(new_pids)} new worker processes, "
              f"{len(mon.addresses)} worker addresses seen for {args.workers} workers)")
        for line in memory_lines[:10]:
            print(f"  {line}")
        return 0 if r.returncode == 0 and predicted == rows and not restarted else 1
    finally:
        cluster.close()
        if args.work is None and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        elif args.keep or args.work:
            print(f"work directory: {work}")


if __name__ == "__main__":
    sys.exit(main())
