"""astrodask against Spark MLlib, scikit-learn, dask-ml and the raw pyarrow limit, in one run on one machine.

    python benchmarks/run.py --rows 1M                          # ~15 min on 2 cores
    python benchmarks/run.py --rows 1M --rows 10M               # the issue's sizes
    python benchmarks/run.py --rows 100M                        # opt-in: ~10 GB of disk, checked first
    python benchmarks/run.py --rows 1M --systems astrodask,raw --stages train,predict
    python benchmarks/run.py --rows 1M --rows 10M --report-only # rebuild the report from cached results

For every size N: a synthetic catalogue (``astrodask synth``: a Parquet dataset, plus CSV files for the
convert stage) is made once under ``--work`` (default ``benchmarks/work/``, git-ignored) and reused. Then,
on that same Parquet, each (stage, system) is measured in its own child process (clean peak memory; Dask
cluster / Spark session start-up not timed):

convert  ``astrodask convert`` of the CSV files (LocalCluster) vs pyarrow.csv.read_csv + pyarrow.parquet.write_table
train    time to a holdout accuracy target (``--target``, judged on the id-hash VALID split; final accuracy on
         the TEST split of ``astrodask.dataset.HOLDOUT``, the same for every system) of
         astrodask parallel, astrodask incremental, scikit-learn LogisticRegression (one process, in memory,
         on astrodask's expanded features), dask-ml defaults (Incremental(SGDClassifier()), one pass) and
         Spark MLlib LogisticRegression (local[2], multinomial, VectorAssembler + StandardScaler)
predict  Parquet -> Parquet: ``astrodask predict`` (spectroscopic and photometric models) vs Spark
         ``model.transform`` + write vs the raw limit (pyarrow read + write of the same columns, no model)

Each result is cached as JSON under ``WORK/<size>/results/`` (``--force`` measures again), so an interrupted
run resumes. The report (``results.md``, ``results.json``, ``throughput.png`` in ``--out``) covers the sizes
given with ``--rows``. See benchmarks/README.md for how to read it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import systems
from common import label, parse_count
from report import write_report
from systems import FAMILIES, JOBS, STAGES, log


def child_main(name: str, ctx_path: str, result_path: str) -> int:
    ctx = json.loads(Path(ctx_path).read_text())
    scratch = Path(ctx["scratch_root"]) / name.replace("/", "-")
    common.rmtree(scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    ctx["scratch"] = str(scratch)
    try:
        res = systems.run_job(name, ctx)
    finally:
        common.rmtree(scratch)  # outputs are measured, not kept (disk)
    Path(result_path).write_text(json.dumps(res, indent=1, default=float))
    return 0


# ================================================================================================ parent


def plan_disk(rows: int, stages: set[str], convert_max: int) -> int:
    """Bytes of disk a size needs: Parquet, CSV (convert stage), and the largest scratch output."""
    need = rows * common.PARQUET_BYTES_PER_ROW if stages & {"train", "predict"} else 0
    if "convert" in stages and rows <= convert_max:
        need += rows * (common.CSV_BYTES_PER_ROW + common.PARQUET_BYTES_PER_ROW)
    if "predict" in stages:
        need += rows * 40
    return int(need)


def measure_size(rows: int, args, jobs: list[tuple[str, str, str]]) -> dict:
    work = Path(args.work) / label(rows)
    (work / "results").mkdir(parents=True, exist_ok=True)
    (work / "logs").mkdir(parents=True, exist_ok=True)
    stages = {j[0] for j in jobs}
    need = plan_disk(rows, stages, args.convert_max_rows)
    free = shutil.disk_usage(Path(args.work)).free
    have = sum(common.dir_bytes(work / d) for d in ("dataset", "csv") if (work / d).exists())
    log(f"{label(rows)} rows: needs ~{need / 1e9:.1f} GB of disk under {work} ({have / 1e9:.1f} GB already there, "
        f"{free / 1e9:.1f} GB free)")
    if need - have > free * 0.95:
        raise SystemExit(f"not enough free disk for {label(rows)} rows: need ~{need / 1e9:.1f} GB, "
                         f"{free / 1e9:.1f} GB free under {args.work}")
    dataset = None
    if stages & {"train", "predict"}:
        dataset = common.ensure_synth(rows, work / "dataset", "parquet", args.partitions, args.workers, log)
    csv = None
    if "convert" in stages:
        if rows <= args.convert_max_rows:
            csv = common.ensure_synth(rows, work / "csv", "csv", args.partitions, args.workers, log)
        else:
            log(f"convert stage skipped at {label(rows)} rows (> --convert-max-rows {label(args.convert_max_rows)})")
    ctx = {
        "rows": rows, "workers": args.workers, "dataset": dataset["path"] if dataset else None,
        "files": common.data_files(work / "dataset", "parquet") if dataset else [],
        "csv_files": common.data_files(work / "csv", "csv") if csv else [],
        "models": str(work / "models"), "scratch_root": str(work / "scratch"),
        "predict_models": str(Path(args.work) / label(args.models_from) / "models") if args.models_from
        else str(work / "models"),
        "target": args.target, "epochs": args.epochs, "incremental_epochs": args.incremental_epochs,
        "phot_epochs": args.phot_epochs,
        "max_iter": args.max_iter, "l2": 1e-5, "spark_memory": args.spark_memory,
        "sklearn_max_gb": args.sklearn_max_gb,
    }
    ctx_path = work / "ctx.json"
    ctx_path.write_text(json.dumps(ctx, indent=1))
    results = {}
    for stage, system, _ in jobs:
        name = f"{stage}/{system}"
        out = work / "results" / f"{stage}__{system}.json"
        if stage == "convert" and not csv:
            continue
        if out.is_file() and not args.force:
            results[name] = json.loads(out.read_text())
            log(f"{label(rows)} {name}: cached ({out.name})")
            continue
        if system == "spark" and not common.have_pyspark():
            log(f"{label(rows)} {name}: skipped (pyspark or java not installed: pip install -e .[bench])")
            continue
        log(f"{label(rows)} {name} ...")
        logf = work / "logs" / f"{stage}__{system}.log"
        t0 = time.perf_counter()
        with open(logf, "w") as lf:
            p = subprocess.run([sys.executable, __file__, "--_job", name, "--_ctx", str(ctx_path), "--_result",
                                str(out)], stdout=lf, stderr=subprocess.STDOUT, env=common.clean_env(),
                               timeout=args.job_timeout)
        if p.returncode != 0 or not out.is_file():
            tail = logf.read_text(errors="replace").strip().splitlines()[-3:]
            log(f"{label(rows)} {name}: FAILED (exit {p.returncode}); see {logf}: {' | '.join(tail)}")
            results[name] = {"rows": rows, "error": f"exit {p.returncode}: {tail[-1] if tail else ''}"}
            continue
        res = json.loads(out.read_text())
        res.update(stage=stage, system=system, measured=dt.datetime.now().isoformat(timespec="seconds"),
                   job_seconds=time.perf_counter() - t0, load_avg_1m=round(os.getloadavg()[0], 2))
        out.write_text(json.dumps(res, indent=1, default=float))
        results[name] = res
        if "skipped" in res:
            log(f"{label(rows)} {name}: skipped: {res['skipped']}")
        else:
            acc = f", accuracy {res['accuracy']:.4f}" if res.get("accuracy") is not None else ""
            log(f"{label(rows)} {name}: {res['seconds']:.1f} s, {res['rows_per_s']:,.0f} rows/s{acc} "
                f"(job {res['job_seconds']:.0f} s)")
    return {"rows": rows, "data": {"parquet": dataset, "csv": csv}, "results": results}


def load_cached(rows: int, args) -> dict:
    work = Path(args.work) / label(rows)
    results = {}
    for f in sorted((work / "results").glob("*__*.json")):
        stage, system = f.stem.split("__")
        results[f"{stage}/{system}"] = json.loads(f.read_text())
    return {"rows": rows, "results": results}


# ================================================================================================ report


def profile(rows: int, args) -> Path:
    """cProfile of the task functions of the hot paths, in this process, on one partition of the dataset.

    train (parallel): ``learn.blocks.load_block`` (read + expand a partition; once per partition with cache
    memory, every epoch with cache stream) and ``learn.blocks.grad_sums`` on the loaded block (every epoch);
    predict: ``predict_file``.
    Needs the dataset and the astrodask-parallel model of ``rows`` (run the train stage first).
    """
    import cProfile
    import io
    import pstats

    import numpy as np

    from astrodask import predict, schema
    from astrodask.dataset import HOLDOUT
    from astrodask.learn import blocks as wb
    from astrodask.model import SoftmaxModel

    work = Path(args.work) / label(rows)
    model_dir = work / "models" / "astrodask-parallel"
    if not (model_dir / "model.json").is_file():
        raise SystemExit(f"no model at {model_dir}: run `benchmarks/run.py --rows {label(rows)} --stages train` first")
    model = SoftmaxModel.load(model_dir)
    spec = model.spec
    files = common.data_files(work / "dataset", "parquet")
    f = files[0]
    weights = np.ones(len(schema.CLASSES))
    theta = np.column_stack([model.coef, model.intercept])
    scratch = work / "scratch" / "profile"
    scratch.mkdir(parents=True, exist_ok=True)
    import pyarrow.parquet as pq

    part_rows = pq.ParquetFile(f).metadata.num_rows
    report = [f"# profile of the hot path: one partition of {part_rows:,} rows ({label(rows)}-row dataset), "
              f"{spec.n_features} features, {time.strftime('%Y-%m-%d %H:%M')}", ""]

    def prof(title, fn, repeat=1):
        fn()  # warm-up (imports, caches)
        pr = cProfile.Profile()
        t0 = time.perf_counter()
        pr.enable()
        for _ in range(repeat):
            out = fn()
        pr.disable()
        wall = (time.perf_counter() - t0) / repeat
        buf = io.StringIO()
        st = pstats.Stats(pr, stream=buf)
        total = st.total_tt
        rows_ = []
        for (file_, line, func), (cc, nc, tt, ct, callers) in st.stats.items():
            rows_.append((tt, ct, nc, f"{Path(file_).name}:{line}({func})"))
        report.append(f"## {title}: {wall:.3f} s per call ({part_rows / wall:,.0f} rows/s on one core)")
        report.append("")
        report.append("| function | own time % | cumulative % | calls |")
        report.append("|---|---:|---:|---:|")
        for tt, ct, nc, name in sorted(rows_, reverse=True)[:12]:
            report.append(f"| `{name}` | {100 * tt / total:.1f} | {100 * ct / total:.1f} | {nc // repeat} |")
        report.append("")
        report.append("Top by cumulative time:")
        report.append("")
        report.append("| function | cumulative % |")
        report.append("|---|---:|")
        for tt, ct, nc, name in sorted(rows_, key=lambda r: -r[1])[:15]:
            report.append(f"| `{name}` | {100 * ct / total:.1f} |")
        report.append("")
        log(f"profile {title}: {wall:.3f} s")
        return out

    block = prof("train: load_block (read + expand features)",
                 lambda: wb.load_block(f, spec, weights, HOLDOUT), 2)
    prof("train: grad_sums on a persisted block (one epoch's work)",
         lambda: wb.grad_sums(block, theta, spec, weights, HOLDOUT), 5)
    prof("train: grad_sums on a file (cache stream: read + expand + gradient)",
         lambda: wb.grad_sums(f, theta, spec, weights, HOLDOUT), 2)
    carry = [c for c in predict.CARRY]
    prof("predict: predict_file (read + features + softmax + write)",
         lambda: predict.predict_file(f, str(scratch / "p.parquet"), model, carry), 2)
    phot_dir = work / "models" / "astrodask-parallel-phot"
    if (phot_dir / "model.json").is_file():
        phot = SoftmaxModel.load(phot_dir)
        prof("predict: predict_file, photometric model",
             lambda: predict.predict_file(f, str(scratch / "p.parquet"), phot, carry), 2)
    common.rmtree(scratch)
    out = Path(args.out) / "profile.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(report) + "\n")
    return out


# ================================================================================================ main


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", action="append", default=None, metavar="N",
                    help="rows per size (repeatable: --rows 1M --rows 10M); default 1M")
    ap.add_argument("--systems", default=",".join(FAMILIES),
                    help=f"comma-separated subset of {','.join(FAMILIES)} (default: all)")
    ap.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    ap.add_argument("--out", default=str(common.HERE / "results"), help="report directory (default benchmarks/results)")
    ap.add_argument("--work", default=str(common.WORK), help="data and cached results (default benchmarks/work)")
    ap.add_argument("--workers", type=int, default=2, help="Dask workers (1 thread each) and Spark local[N] cores")
    ap.add_argument("--target", type=float, default=0.965, help="holdout accuracy target of the train stage")
    ap.add_argument("--epochs", type=int, default=20, help="astrodask parallel: max L-BFGS epochs (patience 20)")
    ap.add_argument("--phot-epochs", type=int, default=10,
                    help="astrodask parallel, photometric model (for the predict stage): L-BFGS epochs")
    ap.add_argument("--incremental-epochs", type=int, default=10, help="astrodask incremental: SGD epochs")
    ap.add_argument("--max-iter", type=int, default=100, help="Spark / scikit-learn: iterations of the final fit")
    ap.add_argument("--partitions", type=int, default=None, help="files per dataset (default max(4, rows/500k))")
    ap.add_argument("--convert-max-rows", default="10M", help="skip the convert stage (CSV) above this size")
    ap.add_argument("--models-from", default=None, metavar="N",
                    help="predict with the models trained at size N (e.g. --rows 100M --stages predict "
                         "--models-from 10M) instead of those of the same size")
    ap.add_argument("--spark-memory", default="8g", help="spark.driver.memory (local mode: the whole JVM)")
    ap.add_argument("--sklearn-max-gb", type=float, default=None,
                    help="skip scikit-learn when its arrays would exceed this (default 60%% of available memory)")
    ap.add_argument("--job-timeout", type=float, default=None, help="seconds before a job is killed")
    ap.add_argument("--force", action="store_true", help="measure again even when a cached result exists")
    ap.add_argument("--report-only", action="store_true", help="only rebuild the report from cached results")
    ap.add_argument("--profile", action="store_true",
                    help="cProfile the train/predict task functions on one partition of the (first) --rows dataset "
                         "into OUT/profile.md (needs its astrodask models: run the train stage first)")
    ap.add_argument("--_job", help=argparse.SUPPRESS)
    ap.add_argument("--_ctx", help=argparse.SUPPRESS)
    ap.add_argument("--_result", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.rows = [parse_count(r) for r in (args.rows or ["1M"])]
    args.convert_max_rows = parse_count(args.convert_max_rows)
    args.models_from = parse_count(args.models_from) if args.models_from else None
    fams = {x.strip() for x in args.systems.split(",") if x.strip()}
    stages = {x.strip() for x in args.stages.split(",") if x.strip()}
    bad = (fams - set(FAMILIES)) | (stages - set(STAGES))
    if bad:
        ap.error(f"unknown system(s)/stage(s): {', '.join(sorted(bad))}")
    args.jobs = [j for j in JOBS if j[0] in stages and j[2] in fams]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args._job:
        return child_main(args._job, args._ctx, args._result)
    Path(args.work).mkdir(parents=True, exist_ok=True)
    if args.profile:
        log(f"profile written to {profile(args.rows[0], args)}")
        return 0
    if max(args.rows) >= 100_000_000 and not args.report_only:
        big = max(args.rows)
        log(f"{label(big)} rows is the opt-in size: it needs ~{plan_disk(big, {j[0] for j in args.jobs}, args.convert_max_rows) / 1e9:.0f} GB "
            f"of free disk (checked next) and hours of machine time")
    if "spark" in {j[2] for j in args.jobs} and not common.have_pyspark():
        log("pyspark (or java) is not installed: the Spark rows are skipped; install with pip install -e .[bench]")
    sizes = []
    for rows in sorted(set(args.rows)):
        if args.report_only:
            sizes.append(load_cached(rows, args))
            continue
        try:
            sizes.append(measure_size(rows, args, args.jobs))
        except subprocess.TimeoutExpired as exc:
            log(f"{label(rows)}: a job exceeded --job-timeout ({exc}); continuing with the report")
            sizes.append(load_cached(rows, args))
    out = Path(args.out)
    doc = write_report(sizes, args, out)
    for t in doc["targets"]:
        log(f"{t['status']:4s} {t['target']}: {t['value']}")
    log(f"report: {out / 'results.md'}, {out / 'throughput.png'}, {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception:  # noqa: BLE001 - a child's failure must leave a readable trace in its log
        traceback.print_exc()
        sys.exit(1)
