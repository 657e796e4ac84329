"""astrodask against Spark MLlib local[2] and raw pyarrow, every step a whole process as a user runs it.

    python benchmarks/speed.py --rows 1.5M                 # ~10 min on 2 cores
    python benchmarks/speed.py --rows 1.5M --rows 10M      # the issue's sizes (~40 min, ~3 GB of disk)

For each size N, N rows are drawn with replacement from the real SDSS17 file (``../shared/data/sdss17.csv``),
given ids 1..N, written as Parquet and converted once with ``astrodask convert`` (cached under
``benchmarks/work/speed/``). On that one dataset, each step runs as its own process and is timed from launch to
exit (interpreter, imports, LocalCluster or JVM start included):

* ``astrodask train`` with the defaults (the warm start from ~1M training rows; the stopping rule: patience 5
  epochs, 3 after a warm start, at 0.0005 validation accuracy),
  and trained to the optimum (``--patience 50 --min-improvement 0``, the old default);
* Spark's default multinomial LogisticRegression on the base features (``spark_job.py fit``);
* ``astrodask predict`` (Parquet -> Parquet) vs ``spark_job.py predict`` vs raw pyarrow (read the same columns,
  write them back, no model, in one process: the I/O limit).

Accuracy is on the TEST split of ``astrodask.dataset.HOLDOUT`` for both systems. Results go to
``benchmarks/results/speed.json`` and ``speed.md`` (``--out``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import common
from common import label, parse_count

SDSS17 = common.SDSS17
PRED_COLUMNS = ("obj_ID", "u", "g", "r", "i", "z", "redshift", "class", "alpha", "delta")
ROWS_PER_SOURCE_FILE = 250_000


def log(msg: str) -> None:
    print(f"[{dt.datetime.now():%H:%M:%S}] {msg}", flush=True)


def make_dataset(rows: int, work: Path) -> Path:
    """``rows`` real SDSS17 rows drawn with replacement (seed 17), ids 1..rows, converted by astrodask."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    ds = work / "dataset"
    if common.is_complete(ds):
        return ds
    src = work / "source"
    src.mkdir(parents=True, exist_ok=True)
    real = pd.read_csv(SDSS17)
    rng = np.random.default_rng(17)
    for k, start in enumerate(range(0, rows, ROWS_PER_SOURCE_FILE)):
        n = min(ROWS_PER_SOURCE_FILE, rows - start)
        part = real.iloc[rng.integers(0, len(real), n)].reset_index(drop=True)
        part["obj_ID"] = np.arange(start + 1, start + n + 1, dtype=np.int64)
        part["spec_obj_ID"] = part["obj_ID"] + 10**12
        pq.write_table(pa.Table.from_pandas(part, preserve_index=False), src / f"part-{k:04d}.parquet")
    log(f"{label(rows)}: converting {rows:,} resampled SDSS17 rows")
    run([*common.astrodask_cmd(), "convert", str(src), str(ds), "--overwrite", "--quiet"])
    return ds


PEAKS: dict = {}
"""The last :func:`run`'s peak memory (MiB): ``tree`` (the command and every process it started, summed at each
sample) and ``worker_max`` (the largest of them: a Dask worker, Spark's JVM)."""


def run(cmd: list[str]) -> float:
    """Run ``cmd`` to completion; its wall time from launch to exit (its peak memory into ``PEAKS``)."""
    import psutil

    t0 = time.perf_counter()
    with open(os.devnull, "w") as null, tempfile.TemporaryFile("w+") as err:
        p = subprocess.Popen(cmd, env=common.clean_env(), stdout=null, stderr=err, text=True)
        me = psutil.Process(p.pid)

        def tree():
            try:
                return [me, *me.children(recursive=True)]
            except psutil.Error:  # the command has ended
                return []

        sampler = common.Sampler(tree)
        sampler.start()
        p.wait()
        seconds = time.perf_counter() - t0
        peaks = sampler.stop()
        err.seek(0)
        tail = err.read()[-4000:]
    PEAKS.update(tree=peaks["workers_peak_mb"], worker_max=peaks["worker_max_mb"])
    if p.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{tail}")
    return seconds


def astrodask_train(ds: Path, model: Path, *extra: str) -> dict:
    seconds = run([*common.astrodask_cmd(), "train", str(ds), "--model", str(model), "--overwrite", "--quiet",
                   *extra])
    metrics = json.loads((model / "metrics.json").read_text())
    epochs = json.loads((model / "history.json").read_text())
    return {"seconds": seconds, "accuracy": metrics["accuracy"], "epochs": len(epochs), "peak_mb": dict(PEAKS),
            "curve": [(e["epoch"], e["seconds"], e["valid_accuracy"]) for e in epochs]}


def spark(cmd: str, *args: str) -> dict:
    result = Path(args[-1])
    seconds = run([sys.executable, str(HERE / "spark_job.py"), cmd, *args])
    return {"seconds": seconds, "peak_mb": dict(PEAKS), **json.loads(result.read_text())}


RAW = """
import sys, time, pyarrow.parquet as pq
from pathlib import Path
src, dst = Path(sys.argv[1]), Path(sys.argv[2]); dst.mkdir(parents=True, exist_ok=True)
cols = sys.argv[3].split(",")
t = time.perf_counter()
for f in sorted(p for p in src.rglob("*.parquet") if not p.name.startswith((".", "_"))):
    pq.write_table(pq.read_table(f, columns=cols), dst / f.name, compression="zstd")
print(time.perf_counter() - t)
"""


def raw_copy(ds: Path, dest: Path) -> dict:
    common.rmtree(dest)
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", RAW, str(ds), str(dest), ",".join(PRED_COLUMNS)], check=True,
                       capture_output=True, text=True)
    return {"seconds": time.perf_counter() - t0, "in_process_seconds": float(p.stdout.strip())}


def measure(rows: int, work_root: Path, optimum: bool = True) -> dict:
    work = work_root / label(rows)
    ds = make_dataset(rows, work)
    out: dict = {"rows": rows}
    log(f"{label(rows)}: astrodask train (defaults)")
    out["train_default"] = astrodask_train(ds, work / "model-default")
    if optimum:
        log(f"{label(rows)}: astrodask train to the optimum (--patience 50 --min-improvement 0)")
        out["train_optimum"] = astrodask_train(ds, work / "model-optimum", "--patience", "50", "--min-improvement",
                                               "0")
    log(f"{label(rows)}: Spark fit")
    out["spark_fit"] = spark("fit", str(ds), str(work / "model-spark"), str(work / "spark-fit.json"))
    log(f"{label(rows)}: astrodask predict")
    common.rmtree(work / "pred")
    out["predict"] = {"seconds": run([*common.astrodask_cmd(), "predict", str(ds), str(work / "model-default"),
                                      str(work / "pred"), "--overwrite", "--quiet"])}
    log(f"{label(rows)}: Spark predict")
    out["spark_predict"] = spark("predict", str(ds), str(work / "model-spark"), str(work / "spark-pred"),
                                 str(work / "spark-predict.json"))
    log(f"{label(rows)}: raw pyarrow read + write")
    out["raw"] = raw_copy(ds, work / "raw")
    for d in ("pred", "spark-pred", "raw"):
        common.rmtree(work / d)
    t, s = out["train_default"], out["spark_fit"]
    out["ratios"] = {
        "fit_vs_spark": s["seconds"] / t["seconds"],
        "optimum_fit_vs_spark": s["seconds"] / out["train_optimum"]["seconds"] if optimum else None,
        "accuracy_minus_spark": t["accuracy"] - s["accuracy"],
        "predict_vs_spark": out["spark_predict"]["seconds"] / out["predict"]["seconds"],
        "predict_vs_raw": out["raw"]["seconds"] / out["predict"]["seconds"],
    }
    log(f"{label(rows)}: {json.dumps(out['ratios'])}")
    return out


def startup() -> dict:
    """Fixed cost of a command: ``astrodask --help`` (imports) and a LocalCluster start and stop."""
    helps = [run([*common.astrodask_cmd(), "--help"]) for _ in range(3)]
    cluster = run([sys.executable, "-c", "from astrodask.cluster import ClusterConfig, connect\n"
                   "with connect(ClusterConfig(), quiet=True) as c: pass"])
    return {"help_seconds": min(helps), "local_cluster_seconds": cluster}


def plot_curve(results: list[dict], path: Path) -> None:
    """Validation accuracy by epoch of the run to the optimum, with where the default rule stopped."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for r in results:
        if "train_optimum" not in r:
            continue
        curve = r["train_optimum"]["curve"]
        line, = ax.plot([c[0] for c in curve], [c[2] for c in curve], label=f"{label(r['rows'])} rows")
        stop = r["train_default"]["epochs"]
        ax.axvline(stop, color=line.get_color(), ls="--", lw=0.8)
        ax.axhline(r["spark_fit"]["accuracy"], color=line.get_color(), ls=":", lw=0.8)
    ax.set_xlabel("L-BFGS epoch")
    ax.set_ylabel("validation accuracy")
    ax.set_ylim(0.96, 0.98)
    ax.set_title("to the optimum (patience 50); dashed: default stop; dotted: Spark test accuracy", fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def mem(step: dict) -> str:
    """A step's peak memory: every process it started summed / the largest one."""
    p = step.get("peak_mb")
    return f"{p['tree'] / 1024:.1f} / {p['worker_max'] / 1024:.1f} GiB" if p else ""


def report(results: list[dict], start: dict, path: Path) -> str:
    lines = [f"# astrodask vs Spark MLlib local[2] — whole processes ({dt.date.today()})", "",
             f"Machine: {json.dumps(common.machine())}", "",
             "Rows drawn with replacement from the real SDSS17 file; accuracy on the same TEST split for both. "
             "Times are whole processes from launch to exit.", "",
             "| rows | astrodask train (default) | acc | epochs | peak memory (all processes / largest worker) "
             "| to the optimum | acc | epochs | Spark fit | acc | Spark peak memory "
             "| fit vs Spark | astrodask predict | Spark predict | raw pyarrow | predict vs Spark | predict vs raw |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        d, s, q = r["train_default"], r["spark_fit"], r["ratios"]
        o = r.get("train_optimum")
        opt = f"{o['seconds']:.1f} s | {o['accuracy']:.4f} | {o['epochs']}" if o else "not run | | "
        lines.append(f"| {label(r['rows'])} | {d['seconds']:.1f} s | {d['accuracy']:.4f} | {d['epochs']} | "
                     f"{mem(d)} | {opt} | {s['seconds']:.1f} s | {s['accuracy']:.4f} | {mem(s)} | "
                     f"{q['fit_vs_spark']:.2f}x | {r['predict']['seconds']:.1f} s | "
                     f"{r['spark_predict']['seconds']:.1f} s | {r['raw']['seconds']:.1f} s | "
                     f"{q['predict_vs_spark']:.2f}x | {q['predict_vs_raw']:.2f}x |")
    lines += ["", f"Start-up: `astrodask --help` {start['help_seconds']:.2f} s, LocalCluster start + stop "
              f"{start['local_cluster_seconds']:.2f} s (whole processes).", ""]
    if any("train_optimum" in r for r in results):
        plot_curve(results, path.with_name(path.name + "_curve.png"))
    text = "\n".join(lines)
    path.with_suffix(".md").write_text(text)
    path.with_suffix(".json").write_text(json.dumps({"machine": common.machine(), "startup": start,
                                                     "results": results}, indent=1))
    return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", action="append", type=parse_count, help="catalogue size (e.g. 1.5M); repeatable")
    ap.add_argument("--work", type=Path, default=common.WORK / "speed")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "speed")
    ap.add_argument("--no-optimum", action="store_true", help="skip the training to the optimum (large sizes)")
    args = ap.parse_args(argv)
    if not SDSS17.is_file():
        print(f"needs the real SDSS17 file at {SDSS17}", file=sys.stderr)
        return 1
    if not common.have_pyspark():
        print("needs pyspark and java: pip install -e '.[bench]'", file=sys.stderr)
        return 1
    start = startup()
    results = [measure(n, args.work, not args.no_optimum) for n in (args.rows or [1_500_000])]
    print(report(results, start, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
