"""Helpers shared by the benchmark scripts (not part of the library; pytest does not collect them).

* row counts written as ``1M``, ``2.5e6``, ``100k``;
* synthetic data made once per size under ``benchmarks/work/`` with ``astrodask synth`` and reused;
* a peak-memory sampler (this process, plus Dask worker processes or Spark's JVM);
* the machine and library versions for the report;
* Spark: session, the id-hash split of ``astrodask.dataset.HOLDOUT`` as a SQL expression, base features.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / "work"
SHARED = ROOT.parent / "shared" / "data"  # the real SDSS data, beside the checkout
SDSS17 = SHARED / "sdss17.csv"
MiB = 2**20

# bytes per row measured on `astrodask synth` output (1M rows): for the disk check before a run
PARQUET_BYTES_PER_ROW = 72
CSV_BYTES_PER_ROW = 150
IN_PROCESS_SYNTH_ROWS = 200_000  # up to this size `astrodask synth`'s generator runs in this process (threads)


# ------------------------------------------------------------------------------------------------ counts


def parse_count(text) -> int:
    """``"1M"`` -> 1_000_000; also ``100k``, ``1e7``, ``2.5M``, ``1G``/``1B``."""
    t = str(text).strip().lower().replace("_", "").replace(",", "")
    mult = {"k": 10**3, "m": 10**6, "g": 10**9, "b": 10**9}.get(t[-1:], 1)
    value = float(t[:-1] if mult > 1 else t) * mult
    if value < 1 or value != int(value):
        raise ValueError(f"not a positive whole number of rows: {text!r}")
    return int(value)


def label(rows: int) -> str:
    """1_000_000 -> ``1M``; 20_000 -> ``20k``; 1_500_000 -> ``1.5M``."""
    for div, suffix in ((10**9, "G"), (10**6, "M"), (10**3, "k")):
        if rows >= div:
            v = rows / div
            return f"{v:g}{suffix}" if v == round(v, 3) else str(rows)
    return str(rows)


def default_partitions(rows: int) -> int:
    """Files per dataset: ~500k rows each, at least 4 (so 2 workers both have work at small sizes)."""
    return max(4, math.ceil(rows / 500_000))


# ------------------------------------------------------------------------------------------------ data


def astrodask_cmd() -> list[str]:
    """The ``astrodask`` command of the running interpreter (works without the venv's bin on PATH)."""
    return [sys.executable, "-c", "import sys; from astrodask.cli import main; sys.exit(main())"]


def is_complete(path: Path) -> bool:
    return (Path(path) / "_SUCCESS").is_file()


def ensure_synth(rows: int, dest: Path, fmt: str = "parquet", partitions: int | None = None,
                 workers: int = 2, log=None) -> dict:
    """Make ``rows`` synthetic rows at ``dest`` with ``astrodask synth`` unless a complete copy is there."""
    dest = Path(dest)
    if is_complete(dest):
        meta = json.loads((dest / "_astrodask.json").read_text())
        if meta.get("rows") == rows and meta.get("format", "parquet") == fmt:
            return {"path": str(dest), "rows": rows, "generated": False, "seconds": 0.0}
    dest.parent.mkdir(parents=True, exist_ok=True)
    if log:
        log(f"generating {label(rows)} rows of {fmt} at {dest} ...")
    t0 = time.perf_counter()
    if rows <= IN_PROCESS_SYNTH_ROWS:  # tiny (tests): the same generator, on threads, without worker start-up
        from distributed import Client, LocalCluster

        from astrodask import synth

        with LocalCluster(processes=False, n_workers=1, threads_per_worker=workers, dashboard_address=":0") as lc, \
                Client(lc, set_as_default=False) as client:
            synth.run(synth.SynthConfig(str(dest), rows=rows, partitions=partitions or default_partitions(rows), format=fmt,
                                        overwrite=True, quiet=True), client)
        return {"path": str(dest), "rows": rows, "generated": True, "seconds": time.perf_counter() - t0}
    cmd = [*astrodask_cmd(), "synth", "--rows", str(rows), "--partitions", str(partitions or default_partitions(rows)),
           "--format", fmt, "--overwrite", "--quiet", "--workers", str(workers), str(dest)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=clean_env())
    return {"path": str(dest), "rows": rows, "generated": True, "seconds": time.perf_counter() - t0}


def synth_frames(rows: int, chunk_rows: int, seed: int = 0):
    """``rows`` rows of ``astrodask.synth`` (partitions 0, 1, ... of ``chunk_rows``), one frame per partition."""
    from astrodask.synth import synth_partition

    for k, start in enumerate(range(0, rows, chunk_rows)):
        yield synth_partition(k, min(chunk_rows, rows - start), seed=seed)


def data_files(dest: Path, ext: str) -> list[str]:
    return sorted(str(p) for p in Path(dest).glob(f"part-*.{ext}"))


def clean_env() -> dict:
    """Environment for child processes: never attach to a scheduler someone else set in the environment."""
    env = dict(os.environ)
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    env.setdefault("PYTHONWARNINGS", "ignore")
    return env


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    for sibling in (Path(path).parent / f".{Path(path).name}.staging", Path(path).parent / f".{Path(path).name}.lock"):
        if sibling.is_dir():
            shutil.rmtree(sibling, ignore_errors=True)
        elif sibling.exists():
            sibling.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------------ memory


class Sampler(threading.Thread):
    """Peak RSS of this process ("client") and of a set of other processes ("workers"), every ``interval`` s.

    ``workers`` is a callable returning the current ``psutil.Process`` list (Dask worker pids, or the Spark
    JVM found among this process's children); their RSS is summed at each sample, so ``workers_peak`` is the
    largest total at one moment. ``reset()`` starts a new measurement window.
    """

    def __init__(self, workers=None, interval: float = 0.5):
        super().__init__(daemon=True)
        self.me = psutil.Process()
        self.has_workers = workers is not None
        self.find_workers = workers or (list)
        self.interval = interval
        self.halt = threading.Event()
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with getattr(self, "lock", threading.Lock()):
            self.client_peak = 0
            self.workers_peak = 0
            self.worker_max = 0  # largest single worker process

    def sample(self) -> None:
        try:
            me = self.me.memory_info().rss
        except psutil.Error:
            me = 0
        rss = []
        for p in self.find_workers():
            try:
                rss.append(p.memory_info().rss)
            except psutil.Error:  # a worker restarting or gone
                pass
        with self.lock:
            self.client_peak = max(self.client_peak, me)
            if rss:
                self.workers_peak = max(self.workers_peak, sum(rss))
                self.worker_max = max(self.worker_max, max(rss))

    def run(self) -> None:
        while not self.halt.is_set():
            self.sample()
            self.halt.wait(self.interval)

    def stop(self) -> dict:
        self.halt.set()
        if self.is_alive():
            self.join()
        self.sample()
        return self.peaks()

    def peaks(self) -> dict:
        with self.lock:
            if not self.has_workers:  # one process: no worker column
                return {"client_peak_mb": self.client_peak / MiB, "workers_peak_mb": None, "worker_max_mb": None}
            return {"client_peak_mb": self.client_peak / MiB, "workers_peak_mb": self.workers_peak / MiB,
                    "worker_max_mb": self.worker_max / MiB}


def dask_workers(client):
    """A ``Sampler`` workers callable for the worker processes of a local Dask cluster."""
    procs = [psutil.Process(pid) for pid in client.run(os.getpid).values()]
    return lambda: procs


def child_processes():
    """A ``Sampler`` workers callable: all descendants of this process (Spark's JVM and its children)."""
    me = psutil.Process()

    def find():
        try:
            return me.children(recursive=True)
        except psutil.Error:
            return []

    return find


# ------------------------------------------------------------------------------------------------ machine


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor() or "unknown"
    vm = psutil.virtual_memory()
    return {"nproc": os.cpu_count(), "memory_gb": round(vm.total / 2**30, 1), "cpu": cpu,
            "os": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
            "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None}


def versions() -> dict:
    import importlib.metadata as md

    out = {}
    for name in ("astrodask", "dask", "distributed", "dask-ml", "scikit-learn", "numpy", "pandas", "pyarrow",
                 "pyspark"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    try:
        r = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=30)
        out["java"] = (r.stderr or r.stdout).splitlines()[0].strip()
    except (OSError, subprocess.SubprocessError, IndexError):
        out["java"] = None
    return out


def have_pyspark() -> bool:
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return False
    return shutil.which("java") is not None or bool(os.environ.get("JAVA_HOME"))


# ------------------------------------------------------------------------------------------------ spark

SPARK_COLOURS = ("u-g", "g-r", "r-i", "i-z", "u-r", "g-i", "r-z")  # the base colours of astrodask.features
SPARK_FEATURES = ("u", "g", "r", "i", "z", *(c.replace("-", "_") for c in SPARK_COLOURS), "asinh_z")


def spark_session(cores: int = 2, driver_memory: str = "8g"):
    """A quiet local Spark session (ANSI off so that 64-bit multiplication wraps, as the id hash needs)."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from pyspark.sql import SparkSession

    spark = (SparkSession.builder.master(f"local[{cores}]").appName("astrodask-bench")
             .config("spark.driver.memory", driver_memory)
             .config("spark.sql.ansi.enabled", "false")
             .config("spark.ui.enabled", "false")
             .config("spark.ui.showConsoleProgress", "false")
             .config("spark.sql.shuffle.partitions", str(max(2, 2 * cores)))
             .config("spark.driver.extraJavaOptions", "-Dlog4j2.rootLogger.level=error")
             .getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def _signed(x: int) -> int:
    return x - (1 << 64) if x >= 1 << 63 else x


def spark_split(id_col: str = "obj_ID"):
    """``astrodask.dataset.HOLDOUT`` (splitmix64 of the id, mod 1000) as a Spark column: 0 train, 1 valid, 2 test.

    The id is a Parquet uint64 (Spark reads decimal(20,0)); ids below 2**63, as SDSS ids are, cast to the
    same bits as a signed long. The unsigned modulo is taken as 2 * ((z >>> 1) % 500) + (z & 1).
    """
    from pyspark.sql import functions as F

    from astrodask.dataset import HOLDOUT, TEST, TRAIN, VALID

    z = F.col(id_col).cast("long") + F.lit(_signed(0x9E3779B97F4A7C15))
    z = z.bitwiseXOR(F.shiftrightunsigned(z, 30)) * F.lit(_signed(0xBF58476D1CE4E5B9))
    z = z.bitwiseXOR(F.shiftrightunsigned(z, 27)) * F.lit(_signed(0x94D049BB133111EB))
    z = z.bitwiseXOR(F.shiftrightunsigned(z, 31))
    b = F.pmod(F.shiftrightunsigned(z, 1), F.lit(500)) * 2 + z.bitwiseAND(F.lit(1))
    return (F.when(b < HOLDOUT.test[1], TEST).when(b < HOLDOUT.valid[1], VALID).otherwise(TRAIN)
            .cast("int"))


def spark_base_columns(df):
    """Bands, colours and asinh(redshift / 1e-3), as astrodask's base spectroscopic features."""
    from pyspark.sql import functions as F

    from astrodask.features import REDSHIFT_SCALE

    cols = [F.col(b).cast("double").alias(b) for b in "ugriz"]
    for c in SPARK_COLOURS:
        a, b = c.split("-")
        cols.append((F.col(a).cast("double") - F.col(b).cast("double")).alias(c.replace("-", "_")))
    cols.append(F.asinh(F.col("redshift").cast("double") / REDSHIFT_SCALE).alias("asinh_z"))
    return cols


def spark_label():
    """class -> 0, 1, 2 in ``astrodask.schema.CLASSES`` order (a fixed mapping, no StringIndexer pass)."""
    from pyspark.sql import functions as F

    from astrodask import schema

    expr = None
    for k, c in enumerate(schema.CLASSES):
        expr = F.when(F.col("class") == c, float(k)) if expr is None else expr.when(F.col("class") == c, float(k))
    return expr.otherwise(None).alias("label")
