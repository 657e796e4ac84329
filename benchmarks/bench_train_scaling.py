"""Scaling of ``astrodask train`` (parallel mode) with the number of workers and the number of rows.

    python benchmarks/bench_train_scaling.py                    # 10M rows (the issue's size), ~30-60 min
    python benchmarks/bench_train_scaling.py --rows 1M --small-rows 200k   # a quick check

Two targets from the training issue, each run in its own child process (clean client memory), on synthetic
data made once under ``benchmarks/work/<size>/dataset`` (shared with benchmarks/run.py):

1. worker scaling: the same training (``--epochs`` L-BFGS epochs, patience 0, ``--cache memory``) on a
   LocalCluster of 2 workers vs 1 worker (1 thread each). Training rows/s = rows x epochs / ``train.seconds``
   of the model's metrics.json (fit time incl. persisting the features; not the quantile passes nor the
   holdout evaluation). Target: 2 workers >= 1.7x the rows/s of 1 worker.
2. client memory: the peak RSS of the client process (sampled every 0.1 s in a thread) while training with
   2 workers on ``--rows`` vs ``--small-rows``. Target: <= 1.2x (the client never holds rows).

Writes ``results_train_scaling.md`` and ``results_train_scaling.json`` into ``--out`` (benchmarks/results);
``benchmarks/run.py`` appends that table to ``results.md`` when it rebuilds the report.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from common import MiB, label, parse_count


def log(msg: str) -> None:
    print(f"[scaling {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def child(spec: dict) -> dict:
    """One training run (in a fresh process): returns timings and the client's peak RSS."""
    import psutil
    from common import Sampler, dask_workers

    from astrodask.cluster import ClusterConfig, connect
    from astrodask.learn import TrainConfig, stage

    baseline = psutil.Process().memory_info().rss
    with connect(ClusterConfig(n_workers=spec["workers"], threads_per_worker=1), quiet=True) as client:
        s = Sampler(dask_workers(client), interval=0.1)
        s.start()
        after_start = psutil.Process().memory_info().rss
        t0 = time.perf_counter()
        r = stage.run(TrainConfig(spec["dataset"], spec["model"], mode="parallel", epochs=spec["epochs"],
                                  patience=0, cache=spec["cache"], report=False, quiet=True, overwrite=True),
                      client)
        wall = time.perf_counter() - t0
        peaks = s.stop()
    m = r.metrics.train
    info = json.loads((Path(spec["model"]) / "model.json").read_text())["info"]
    hist = [e.to_json() for e in r.history]
    return {**spec, "wall_seconds": wall, "train_seconds": m["seconds"], "epochs_run": m["epochs"],
            "train_rows": m["rows"], "epoch_loop_seconds": hist[-1]["seconds"] if hist else None,
            "rows_per_s": spec["rows"] * m["epochs"] / m["seconds"],
            "accuracy": r.metrics.accuracy, "cache_used": info.get("cache"),
            "client_rss_before_mb": baseline / MiB, "client_rss_after_cluster_mb": after_start / MiB, **peaks}


def run_child(spec: dict, work: Path) -> dict:
    name = f"w{spec['workers']}-{label(spec['rows'])}"
    res_path = work / "scaling" / f"{name}.json"
    res_path.parent.mkdir(parents=True, exist_ok=True)
    spec_path = work / "scaling" / f"{name}.spec.json"
    spec_path.write_text(json.dumps(spec))
    logf = work / "scaling" / f"{name}.log"
    with open(logf, "w") as lf:
        p = subprocess.run([sys.executable, __file__, "--_child", str(spec_path), "--_result", str(res_path)],
                           stdout=lf, stderr=subprocess.STDOUT, env=common.clean_env())
    if p.returncode != 0:
        raise SystemExit(f"{name} failed (exit {p.returncode}); see {logf}")
    return json.loads(res_path.read_text())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="10M", help="rows of the large run (default 10M)")
    ap.add_argument("--small-rows", default="1M", help="rows of the small run for the client-memory ratio")
    ap.add_argument("--epochs", type=int, default=20, help="fixed L-BFGS epochs (patience 0)")
    ap.add_argument("--cache", default="memory", choices=["memory", "stream", "auto"],
                    help="feature cache (memory: persisted on the workers; needs rows x features x 4 bytes)")
    ap.add_argument("--work", default=str(common.WORK), help="data and cached runs (default benchmarks/work)")
    ap.add_argument("--out", default=str(common.HERE / "results"), help="report directory")
    ap.add_argument("--force", action="store_true", help="run again even when a cached result exists")
    ap.add_argument("--_child", help=argparse.SUPPRESS)
    ap.add_argument("--_result", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._child:
        res = child(json.loads(Path(args._child).read_text()))
        Path(args._result).write_text(json.dumps(res, indent=1, default=float))
        return 0
    big, small = parse_count(args.rows), parse_count(args.small_rows)
    runs = []
    # the small run first: it tells the features per row, to check the large run fits in memory
    plan = [(small, 2), (big, 2), (big, 1)]
    for rows, workers in plan:
        work = Path(args.work) / label(rows)
        ds = common.ensure_synth(rows, work / "dataset", "parquet", None, 2, log)
        spec = {"rows": rows, "workers": workers, "epochs": args.epochs, "cache": args.cache,
                "dataset": ds["path"], "model": str(work / "models" / f"scaling-w{workers}")}
        cached = work / "scaling" / f"w{workers}-{label(rows)}.json"
        if cached.is_file() and not args.force:
            res = json.loads(cached.read_text())
            if all(res.get(k) == spec[k] for k in ("epochs", "cache", "workers", "rows")):
                log(f"{label(rows)} rows, {workers} worker(s): cached")
                runs.append(res)
                continue
        if runs and args.cache == "memory":
            import psutil

            n_feat = len(json.loads((Path(runs[0]["model"]) / "model.json").read_text())["features"]["names"])
            need = rows * (n_feat + 2) * 4
            avail = psutil.virtual_memory().available
            log(f"{label(rows)} rows x {n_feat} features: ~{need / 2**30:.1f} GiB persisted on the workers "
                f"({avail / 2**30:.1f} GiB available)")
            if need > 0.85 * avail:
                raise SystemExit(f"the persisted features (~{need / 2**30:.1f} GiB) do not fit in the available "
                                 f"memory ({avail / 2**30:.1f} GiB); use --cache stream or fewer --rows")
        log(f"{label(rows)} rows, {workers} worker(s), {args.epochs} epochs, cache {args.cache} ...")
        res = run_child(spec, work)
        res["measured"] = dt.datetime.now().isoformat(timespec="seconds")
        cached.write_text(json.dumps(res, indent=1, default=float))
        log(f"  train {res['train_seconds']:.1f} s, {res['rows_per_s']:,.0f} rows/s, client peak "
            f"{res['client_peak_mb']:.0f} MB, workers peak {res['workers_peak_mb']:.0f} MB")
        runs.append(res)
    write(runs, big, small, Path(args.out), args)
    return 0


def write(runs: list[dict], big: int, small: int, out: Path, args) -> None:
    by = {(r["rows"], r["workers"]): r for r in runs}
    w1, w2, s2 = by[(big, 1)], by[(big, 2)], by[(small, 2)]
    speedup = w2["rows_per_s"] / w1["rows_per_s"]
    mem = w2["client_peak_mb"] / s2["client_peak_mb"]
    m = common.machine()
    lines = [
        "# astrodask train scaling",
        "",
        f"Date: {dt.datetime.now().isoformat(timespec='seconds')}; {m['nproc']} cores, {m['memory_gb']} GiB, "
        f"{m['cpu']}. Parallel mode, {args.epochs} L-BFGS epochs, patience 0, cache {args.cache}, LocalCluster "
        "with 1 thread per worker. Training rows/s = dataset rows x epochs / train.seconds (metrics.json: "
        "persisting the features + the epochs). Client peak = RSS of the driving process, sampled every 0.1 s.",
        "",
        "| rows | workers | train s | epochs | training rows/s | accuracy | peak client MB | peak workers MB | cache |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in (s2, w1, w2):
        lines.append(f"| {label(r['rows'])} | {r['workers']} | {r['train_seconds']:.1f} | {r['epochs_run']} | "
                     f"{r['rows_per_s']:,.0f} | {r['accuracy']:.4f} | {r['client_peak_mb']:,.0f} | "
                     f"{r['workers_peak_mb']:,.0f} | {r['cache_used']} |")
    lines += [
        "",
        "| target | measured | status |",
        "|---|---|---|",
        f"| training rows/s with 2 workers >= 1.7x 1 worker ({label(big)} rows) | {speedup:.2f}x | "
        f"**{'PASS' if speedup >= 1.7 else 'MISS'}** |",
        f"| client peak memory at {label(big)} <= 1.2x that at {label(small)} rows | {mem:.2f}x "
        f"({w2['client_peak_mb']:,.0f} vs {s2['client_peak_mb']:,.0f} MB) | **{'PASS' if mem <= 1.2 else 'MISS'}** |",
        "",
    ]
    out.mkdir(parents=True, exist_ok=True)
    (out / "results_train_scaling.md").write_text("\n".join(lines))
    (out / "results_train_scaling.json").write_text(json.dumps(
        {"runs": runs, "speedup_2_vs_1": speedup, "client_memory_ratio": mem, "machine": m,
         "versions": common.versions()}, indent=1, default=float))
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
