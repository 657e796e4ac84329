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
import math
import os
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from common import MiB, label, parse_count  # noqa: E402

STAGES = ("convert", "train", "predict")
FAMILIES = ("astrodask", "sklearn", "dask-ml", "spark", "raw")
# (stage, system, family): in the order they run (models are made before the jobs that need them)
JOBS = (
    ("convert", "astrodask", "astrodask"),
    ("convert", "raw", "raw"),
    ("train", "astrodask-parallel", "astrodask"),
    ("train", "astrodask-parallel-phot", "astrodask"),
    ("train", "astrodask-incremental", "astrodask"),
    ("train", "sklearn", "sklearn"),
    ("train", "dask-ml", "dask-ml"),
    ("train", "spark", "spark"),
    ("predict", "astrodask", "astrodask"),
    ("predict", "astrodask-phot", "astrodask"),
    ("predict", "spark", "spark"),
    ("predict", "raw", "raw"),
)
DESCRIPTION = {
    ("convert", "astrodask"): "astrodask convert (LocalCluster 2x1)",
    ("convert", "raw"): "pyarrow read_csv + write_table (raw limit)",
    ("train", "astrodask-parallel"): "astrodask parallel (2x1 workers)",
    ("train", "astrodask-parallel-phot"): "astrodask parallel, photometric",
    ("train", "astrodask-incremental"): "astrodask incremental (dask-ml SGD)",
    ("train", "sklearn"): "scikit-learn LogisticRegression (1 process)",
    ("train", "dask-ml"): "dask-ml defaults (Incremental(SGDClassifier()), 1 pass)",
    ("train", "spark"): "Spark MLlib LogisticRegression local[2]",
    ("predict", "astrodask"): "astrodask predict (spectroscopic)",
    ("predict", "astrodask-phot"): "astrodask predict (photometric)",
    ("predict", "spark"): "Spark transform + write parquet",
    ("predict", "raw"): "pyarrow read + write, no model (raw limit)",
}
SURVEY_ROWS = 1_200_000_000  # photometric objects to score (SDSS-scale survey)
SURVEY_BUDGET_S = 30 * 60
PRED_COLUMNS = ("obj_ID", "u", "g", "r", "i", "z", "redshift", "class", "alpha", "delta")


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ================================================================================================ children
# Every job runs in a fresh interpreter: ``run.py --_job STAGE/SYSTEM --_ctx CTX.json --_result OUT.json``.


def _cluster(ctx):
    from astrodask.cluster import ClusterConfig, connect

    return connect(ClusterConfig(n_workers=ctx["workers"], threads_per_worker=1, quiet=True))


def _result(ctx, seconds, sampler_peaks, **kw) -> dict:
    rows = ctx["rows"]
    return {"rows": rows, "seconds": seconds, "rows_per_s": rows / seconds if seconds else None,
            **sampler_peaks, **kw}


def job_convert_astrodask(ctx):
    from astrodask import ingest

    from common import Sampler, dask_workers

    dest = Path(ctx["scratch"]) / "dataset"
    with _cluster(ctx) as client:
        s = Sampler(dask_workers(client))
        s.start()
        t0 = time.perf_counter()
        r = ingest.run(ingest.ConvertConfig(tuple(ctx["csv_files"]), str(dest), overwrite=True, quiet=True), client)
        sec = time.perf_counter() - t0
        peaks = s.stop()
    assert r["written"] == ctx["rows"], r
    return _result(ctx, sec, peaks, output_mb=common.dir_bytes(dest) / MiB)


def job_convert_raw(ctx):
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from common import Sampler

    dest = Path(ctx["scratch"]) / "pyarrow"
    dest.mkdir(parents=True, exist_ok=True)
    s = Sampler()
    s.start()
    t0 = time.perf_counter()
    n = 0
    for f in ctx["csv_files"]:
        t = pacsv.read_csv(f)
        pq.write_table(t, dest / (Path(f).stem + ".parquet"), compression="zstd", row_group_size=131072)
        n += t.num_rows
        del t
    sec = time.perf_counter() - t0
    peaks = s.stop()
    assert n == ctx["rows"], n
    return _result(ctx, sec, peaks, output_mb=common.dir_bytes(dest) / MiB)


def _first_reaching(history, target):
    for k, h in enumerate(history):
        if h.get("valid_accuracy") is not None and h["valid_accuracy"] >= target:
            return k
    return None


def job_train_astrodask(ctx, mode: str, features: str):
    from astrodask.learn import TrainConfig, stage

    from common import Sampler, dask_workers

    model_dir = Path(ctx["models"]) / ctx["system"]
    epochs = {("parallel", "spectroscopic"): ctx["epochs"], ("parallel", "photometric"): ctx["phot_epochs"]}.get(
        (mode, features), ctx["incremental_epochs"])
    if mode == "incremental":
        # the incremental mode always persists its shuffled feature blocks (and astrodask versions that
        # gather them with console.track hold a second copy on the client)
        import psutil

        ref = Path(ctx["models"]) / "astrodask-parallel" / "model.json"
        n_feat = len(json.loads(ref.read_text())["features"]["names"]) if ref.is_file() else 330
        copies = 2 if common.client_gathers_blocks() else 1
        need = copies * ctx["rows"] * (n_feat + 2) * 4
        avail = psutil.virtual_memory().available
        if need > 0.8 * avail:
            return {"rows": ctx["rows"], "skipped": f"needs ~{need / 2**30:.0f} GiB (the persisted features"
                    f"{' on the workers and their copy gathered by the client' if copies == 2 else ''}), "
                    f"{avail / 2**30:.0f} GiB available"}
    cfg = TrainConfig(ctx["dataset"], str(model_dir), features=features, mode=mode, epochs=epochs,
                      report=False, quiet=True, overwrite=True)
    with _cluster(ctx) as client:
        s = Sampler(dask_workers(client))
        s.start()
        t0 = time.perf_counter()
        r = stage.run(cfg, client)
        wall = time.perf_counter() - t0
        peaks = s.stop()
    hist = r.history
    k = _first_reaching(hist, ctx["target"]) if features == "spectroscopic" else None
    # a run that stopped at the first epoch reaching the target would have skipped the epochs after it
    tta = wall - (hist[-1]["seconds"] - hist[k]["seconds"]) if k is not None else None
    m = r.metrics
    return _result(ctx, tta if tta is not None else wall, peaks, reached=k is not None,
                   epochs_to_target=None if k is None else hist[k]["epoch"],
                   accuracy=m["accuracy"], valid_accuracy=hist[-1].get("valid_accuracy"),
                   full_seconds=wall, train_seconds=m["train"]["seconds"], epochs_run=len(hist),
                   epoch_seconds=[h["seconds"] for h in hist], features=features, mode=mode,
                   n_features=len(json.loads((model_dir / "model.json").read_text())["features"]["names"]),
                   cache=json.loads((model_dir / "model.json").read_text())["info"].get("cache"))


def _search(fit, max_iter: int, target: float):
    """Time to target for a solver without per-iteration accuracy: fit to convergence (``max_iter``, for the
    final accuracy), then find the smallest iteration budget whose VALID accuracy reaches the target:
    budgets 1, 2, 4, ... until one reaches it, then bisection below it."""
    final = fit(max_iter)
    tried = [final]
    if final["valid_accuracy"] < target:
        return None, final, tried
    cap = max(1, min(max_iter, final["iterations"]))
    lo, hi, best, k = 0, cap, final, 1
    while k < cap:
        r = fit(k)
        tried.append(r)
        if r["valid_accuracy"] >= target:
            hi, best = k, r
            break
        lo, k = k, 2 * k
    while hi - lo > 1:
        mid = (lo + hi) // 2
        r = fit(mid)
        tried.append(r)
        if r["valid_accuracy"] >= target:
            hi, best = mid, r
        else:
            lo = mid
    return best, final, tried


def job_train_sklearn(ctx):
    import warnings

    import numpy as np
    import psutil
    import pyarrow.parquet as pq
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    from astrodask import schema
    from astrodask.dataset import HOLDOUT, TEST, TRAIN, VALID
    from astrodask.features import RECIPES, base_matrix
    from astrodask.model import SoftmaxModel

    from common import Sampler

    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    spec_dir = Path(ctx["models"]) / "astrodask-parallel"
    spec = SoftmaxModel.load(spec_dir).spec if (spec_dir / "model.json").is_file() else None
    n_feat = spec.n_features if spec is not None else len(RECIPES["spectroscopic"].base)
    rows = ctx["rows"]
    need = rows * n_feat * (0.7 * 8 + 0.3 * 4) * 1.15  # float64 train rows + float32 holdout + slack
    limit = ctx["sklearn_max_gb"] * 2**30 if ctx["sklearn_max_gb"] else 0.6 * psutil.virtual_memory().available
    if need > limit:
        return {"rows": rows, "skipped": f"needs ~{need / 2**30:.1f} GiB in one process, over the limit of "
                                         f"{limit / 2**30:.1f} GiB (--sklearn-max-gb)"}
    s = Sampler()
    s.start()
    t0 = time.perf_counter()
    cols = [schema.ID, schema.CLASS, *schema.BANDS, schema.REDSHIFT]
    parts = {TRAIN: [], VALID: [], TEST: []}
    ys = {TRAIN: [], VALID: [], TEST: []}
    lab = {c: k for k, c in enumerate(schema.CLASSES)}
    for f in ctx["files"]:
        df = pq.read_table(f, columns=cols).to_pandas()
        sp = HOLDOUT.of(df[schema.ID].to_numpy())
        x = spec.expand(df) if spec is not None else base_matrix(df, RECIPES["spectroscopic"].base, None)
        y = df[schema.CLASS].map(lab).to_numpy(np.int8)
        for k in parts:
            parts[k].append(np.asarray(x[sp == k], np.float64 if k == TRAIN else np.float32))
            ys[k].append(y[sp == k])
        del df, x
    X = {k: np.concatenate(v) for k, v in parts.items()}
    Y = {k: np.concatenate(v) for k, v in ys.items()}
    del parts
    if spec is None:  # base features: standardise with the training rows
        mu, sd = X[TRAIN].mean(axis=0), X[TRAIN].std(axis=0)
        for k in X:
            X[k] = ((X[k] - mu) / np.where(sd > 0, sd, 1)).astype(X[k].dtype)
    prep = time.perf_counter() - t0
    c = 1.0 / (ctx["l2"] * len(Y[TRAIN]))

    def fit(max_iter):
        t = time.perf_counter()
        m = LogisticRegression(C=c, max_iter=max_iter, tol=1e-6).fit(X[TRAIN], Y[TRAIN])
        fit_s = time.perf_counter() - t
        t = time.perf_counter()
        va = float((m.predict(X[VALID]) == Y[VALID]).mean())
        te = float((m.predict(X[TEST]) == Y[TEST]).mean())
        return {"max_iter": max_iter, "iterations": int(np.max(m.n_iter_)), "fit_seconds": fit_s,
                "eval_seconds": time.perf_counter() - t, "valid_accuracy": va, "accuracy": te}

    best, final, tried = _search(fit, ctx["max_iter"], ctx["target"])
    peaks = s.stop()
    chosen = best or final
    return _result(ctx, prep + chosen["fit_seconds"] + chosen["eval_seconds"], peaks, reached=best is not None,
                   iterations_to_target=best["iterations"] if best else None, accuracy=final["accuracy"],
                   accuracy_at_target=best["accuracy"] if best else None, valid_accuracy=final["valid_accuracy"],
                   prep_seconds=prep, full_seconds=prep + final["fit_seconds"] + final["eval_seconds"],
                   fits=tried, features="astrodask FeatureSpec" if spec is not None else "base",
                   n_features=n_feat)


def job_train_daskml(ctx):
    import dask.dataframe as dd
    import numpy as np
    import pandas as pd
    from dask_ml.preprocessing import StandardScaler
    from dask_ml.wrappers import Incremental
    from sklearn.linear_model import SGDClassifier

    from astrodask import schema
    from astrodask.dataset import HOLDOUT, TEST, TRAIN, VALID
    from astrodask.features import RECIPES, base_matrix

    from common import Sampler, dask_workers

    base = RECIPES["spectroscopic"].base
    names = [f"f{k}" for k in range(len(base))]
    lab = {c: k for k, c in enumerate(schema.CLASSES)}

    def prep(df):
        x = base_matrix(df, base, None)
        out = pd.DataFrame(x, columns=names, index=df.index)
        out["y"] = df[schema.CLASS].map(lab).astype("int8").to_numpy()
        out["split"] = HOLDOUT.of(df[schema.ID].to_numpy())
        return out

    meta = pd.DataFrame({**{n: pd.Series(dtype="float64") for n in names}, "y": pd.Series(dtype="int8"),
                         "split": pd.Series(dtype="int8")})
    with _cluster(ctx) as client:
        s = Sampler(dask_workers(client))
        s.start()
        t0 = time.perf_counter()
        ddf = dd.read_parquet(ctx["files"], columns=[schema.ID, schema.CLASS, *schema.BANDS, schema.REDSHIFT])
        feats = ddf.map_partitions(prep, meta=meta).persist()

        def arrays(split):
            part = feats[feats["split"] == split]
            return part[names].to_dask_array(lengths=True), part["y"].to_dask_array(lengths=True)

        X, y = arrays(TRAIN)
        scaler = StandardScaler().fit(X)
        inc = Incremental(SGDClassifier()).fit(scaler.transform(X), y, classes=np.arange(len(schema.CLASSES)))
        acc = {}
        for split in (VALID, TEST):
            Xs, ys = arrays(split)
            acc[split] = float((inc.predict(scaler.transform(Xs)) == ys).mean().compute())
        sec = time.perf_counter() - t0
        peaks = s.stop()
    return _result(ctx, sec, peaks, reached=acc[VALID] >= ctx["target"], accuracy=acc[TEST],
                   valid_accuracy=acc[VALID], full_seconds=sec, passes=1, features="base (13), StandardScaler")


def job_train_spark(ctx):
    from pyspark.ml import PipelineModel
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import StandardScaler, VectorAssembler
    from pyspark.sql import functions as F

    from astrodask.dataset import TEST, TRAIN, VALID

    from common import SPARK_FEATURES, Sampler, child_processes, spark_base_columns, spark_label, spark_session, \
        spark_split

    spark = spark_session(ctx["workers"], ctx["spark_memory"])
    s = Sampler(child_processes())
    s.start()
    t0 = time.perf_counter()
    df = spark.read.parquet(*ctx["files"])
    df = df.select(spark_split().alias("split"), spark_label(), *spark_base_columns(df))
    assembler = VectorAssembler(inputCols=list(SPARK_FEATURES), outputCol="raw", handleInvalid="keep")
    df = assembler.transform(df).select("split", "label", "raw")
    train_raw = df.where(F.col("split") == TRAIN)
    scaler = StandardScaler(inputCol="raw", outputCol="features", withMean=True, withStd=True).fit(train_raw)
    data = {}
    for sp in (TRAIN, VALID, TEST):
        data[sp] = scaler.transform(df.where(F.col("split") == sp)).select("label", "features").cache()
        data[sp].count()
    prep = time.perf_counter() - t0
    n_train = data[TRAIN].count()
    models = {}

    def accuracy(model, sp):
        out = model.transform(data[sp])
        return float(out.agg(F.avg((F.col("prediction") == F.col("label")).cast("double"))).first()[0])

    def fit(max_iter):
        lr = LogisticRegression(family="multinomial", maxIter=max_iter, regParam=ctx["l2"], elasticNetParam=0.0,
                                tol=1e-6, featuresCol="features", labelCol="label")
        t = time.perf_counter()
        m = lr.fit(data[TRAIN])
        fit_s = time.perf_counter() - t
        t = time.perf_counter()
        va, te = accuracy(m, VALID), accuracy(m, TEST)
        models[max_iter] = m
        return {"max_iter": max_iter, "iterations": int(m.summary.totalIterations), "fit_seconds": fit_s,
                "eval_seconds": time.perf_counter() - t, "valid_accuracy": va, "accuracy": te}

    best, final, tried = _search(fit, ctx["max_iter"], ctx["target"])
    peaks = s.stop()
    PipelineModel(stages=[assembler, scaler, models[final["max_iter"]]]).write().overwrite().save(
        str(Path(ctx["models"]) / "spark"))
    chosen = best or final
    spark.stop()
    return _result(ctx, prep + chosen["fit_seconds"] + chosen["eval_seconds"], peaks, reached=best is not None,
                   iterations_to_target=best["iterations"] if best else None, accuracy=final["accuracy"],
                   accuracy_at_target=best["accuracy"] if best else None, valid_accuracy=final["valid_accuracy"],
                   prep_seconds=prep, full_seconds=prep + final["fit_seconds"] + final["eval_seconds"], fits=tried,
                   n_train=n_train, features=f"base ({len(SPARK_FEATURES)}), StandardScaler")


def job_predict_astrodask(ctx, model_name: str):
    from astrodask import predict

    from common import Sampler, dask_workers

    model = Path(ctx["predict_models"]) / model_name
    if not (model / "model.json").is_file():
        return {"rows": ctx["rows"], "skipped": f"no model at {model} (run the train stage of astrodask first)"}
    dest = Path(ctx["scratch"]) / "predictions"
    with _cluster(ctx) as client:
        s = Sampler(dask_workers(client))
        s.start()
        t0 = time.perf_counter()
        r = predict.run(predict.PredictConfig(ctx["dataset"], str(model), str(dest), overwrite=True, quiet=True),
                        client)
        sec = time.perf_counter() - t0
        peaks = s.stop()
    assert r["rows"] == ctx["rows"], r
    return _result(ctx, sec, peaks, output_mb=common.dir_bytes(dest) / MiB, model=model_name)


def job_predict_spark(ctx):
    from pyspark.ml import PipelineModel
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    from astrodask import schema

    from common import Sampler, child_processes, spark_base_columns, spark_session

    model_dir = Path(ctx["predict_models"]) / "spark"
    if not model_dir.is_dir():
        return {"rows": ctx["rows"], "skipped": f"no Spark model at {model_dir} (run the Spark train stage first)"}
    spark = spark_session(ctx["workers"], ctx["spark_memory"])
    spark.conf.set("spark.sql.parquet.compression.codec", "zstd")
    model = PipelineModel.load(str(model_dir))
    dest = Path(ctx["scratch"]) / "spark-predictions"
    s = Sampler(child_processes())
    s.start()
    t0 = time.perf_counter()
    df = spark.read.parquet(*ctx["files"])
    carry = ["class", "alpha", "delta", "redshift"]
    out = model.transform(df.select("obj_ID", *carry, *spark_base_columns(df)))
    names = F.array(*[F.lit(c) for c in schema.CLASSES])
    prob = vector_to_array(F.col("probability"))
    out = out.select("obj_ID", F.element_at(names, F.col("prediction").cast("int") + 1).alias("predicted_class"),
                     *[prob[k].cast("float").alias(f"prob_{c}") for k, c in enumerate(schema.CLASSES)], *carry)
    out.write.mode("overwrite").parquet(str(dest))
    sec = time.perf_counter() - t0
    peaks = s.stop()
    n = spark.read.parquet(str(dest)).count()
    spark.stop()
    assert n == ctx["rows"], n
    return _result(ctx, sec, peaks, output_mb=common.dir_bytes(dest) / MiB)


def job_predict_raw(ctx):
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow.parquet as pq

    from common import Sampler

    dest = Path(ctx["scratch"]) / "raw"
    dest.mkdir(parents=True, exist_ok=True)

    def copy(f):
        t = pq.read_table(f, columns=list(PRED_COLUMNS))
        pq.write_table(t, dest / Path(f).name, compression="zstd", row_group_size=131072)
        return t.num_rows

    s = Sampler()
    s.start()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(ctx["workers"]) as pool:
        n = sum(pool.map(copy, ctx["files"]))
    sec = time.perf_counter() - t0
    peaks = s.stop()
    assert n == ctx["rows"], n
    return _result(ctx, sec, peaks, output_mb=common.dir_bytes(dest) / MiB, threads=ctx["workers"])


def run_job(name: str, ctx: dict) -> dict:
    stage, system = name.split("/")
    ctx = {**ctx, "stage": stage, "system": system}
    fn = {
        "convert/astrodask": job_convert_astrodask,
        "convert/raw": job_convert_raw,
        "train/astrodask-parallel": lambda c: job_train_astrodask(c, "parallel", "spectroscopic"),
        "train/astrodask-parallel-phot": lambda c: job_train_astrodask(c, "parallel", "photometric"),
        "train/astrodask-incremental": lambda c: job_train_astrodask(c, "incremental", "spectroscopic"),
        "train/sklearn": job_train_sklearn,
        "train/dask-ml": job_train_daskml,
        "train/spark": job_train_spark,
        "predict/astrodask": lambda c: job_predict_astrodask(c, "astrodask-parallel"),
        "predict/astrodask-phot": lambda c: job_predict_astrodask(c, "astrodask-parallel-phot"),
        "predict/spark": job_predict_spark,
        "predict/raw": job_predict_raw,
    }[name]
    return fn(ctx)


def child_main(name: str, ctx_path: str, result_path: str) -> int:
    ctx = json.loads(Path(ctx_path).read_text())
    scratch = Path(ctx["scratch_root"]) / name.replace("/", "-")
    common.rmtree(scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    ctx["scratch"] = str(scratch)
    try:
        res = run_job(name, ctx)
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


def _ok(r: dict | None) -> bool:
    return bool(r) and "error" not in r and "skipped" not in r and r.get("seconds")


def fit_projection(points: list[tuple[int, float]], rows: int) -> dict:
    """Seconds for ``rows`` from (rows, seconds) measurements: log-log least squares and a linear fit."""
    import numpy as np

    pts = sorted(p for p in points if p[1] > 0)
    if not pts:
        return {}
    n = np.array([p[0] for p in pts], float)
    t = np.array([p[1] for p in pts], float)
    out = {"sizes": [int(x) for x in n]}
    if len(pts) >= 2:
        b, a = np.polyfit(np.log(n), np.log(t), 1)
        out["loglog_slope"] = float(b)
        out["loglog_seconds"] = float(math.exp(a) * rows**b)
        c1, c0 = np.polyfit(n, t, 1)
        out["linear_seconds_per_row"] = float(c1)
        out["linear_intercept_s"] = float(c0)
        out["linear_seconds"] = float(c0 + c1 * rows)
    else:  # one size: its rows/s, held constant
        out["linear_seconds"] = float(t[-1] / n[-1] * rows)
    # the verdict uses the slower of the two extrapolations
    out["seconds"] = max(v for k, v in out.items() if k in ("loglog_seconds", "linear_seconds"))
    return out


def _total_mem(r: dict) -> float:
    return (r.get("client_peak_mb") or 0) + (r.get("workers_peak_mb") or 0)


def evaluate_targets(sizes: list[dict]) -> list[dict]:
    by = {s["rows"]: s["results"] for s in sizes}
    rows_sorted = sorted(by)
    largest = rows_sorted[-1] if rows_sorted else None

    def pick(prefer: int):
        if prefer in by:
            return prefer, ""
        return largest, f" (measured at {label(largest)} rows, not {label(prefer)}: provisional)"

    targets = []
    # 1. train time-to-accuracy vs Spark at 10M
    n, note = pick(10_000_000)
    a, s = by.get(n, {}).get("train/astrodask-parallel"), by.get(n, {}).get("train/spark")
    if _ok(a) and _ok(s):
        speed = s["seconds"] / a["seconds"]
        dacc = a["accuracy"] - s["accuracy"]
        ok = speed >= 2.0 and dacc >= -0.003 and a.get("reached") and True
        targets.append({"target": "train: time to accuracy >= 2x faster than Spark local[2] at 10M rows, "
                                  "accuracy within 0.3 pt", "value": f"{speed:.2f}x faster; test accuracy "
                                  f"{a['accuracy']:.4f} vs Spark {s['accuracy']:.4f} ({100 * dacc:+.2f} pt)"
                                  f"{'' if s.get('reached') else '; Spark did not reach the target'}{note}",
                        "status": "PASS" if ok else "MISS", "rows": n})
    else:
        targets.append({"target": "train: time to accuracy >= 2x faster than Spark at 10M rows",
                        "value": "not measured (needs train/astrodask-parallel and train/spark)", "status": "n/a"})
    # 2. predict rows/s vs Spark and vs raw
    n, note = pick(10_000_000)
    a, s, r = (by.get(n, {}).get(f"predict/{x}") for x in ("astrodask", "spark", "raw"))
    if _ok(a) and (_ok(s) or _ok(r)):
        parts, ok = [], True
        if _ok(s):
            q = a["rows_per_s"] / s["rows_per_s"]
            parts.append(f"{q:.2f}x Spark")
            ok &= q >= 3.0
        else:
            parts.append("Spark not measured")
            ok = False
        if _ok(r):
            q = a["rows_per_s"] / r["rows_per_s"]
            parts.append(f"{q:.2f}x raw pyarrow")
            ok &= q >= 0.6
        targets.append({"target": "predict: rows/s >= 3x Spark and >= 0.6x raw pyarrow read+write",
                        "value": ", ".join(parts) + note, "status": "PASS" if ok else "MISS", "rows": n})
    else:
        targets.append({"target": "predict: rows/s >= 3x Spark and >= 0.6x raw", "value": "not measured",
                        "status": "n/a"})
    # 3. memory at 100M vs 10M
    if 100_000_000 in by and 10_000_000 in by:
        vals, ok, missing = [], True, []
        for job in ("train/astrodask-parallel", "predict/astrodask"):
            big, small = by[100_000_000].get(job), by[10_000_000].get(job)
            if _ok(big) and _ok(small):
                q = _total_mem(big) / max(_total_mem(small), 1e-9)
                cq = big["client_peak_mb"] / max(small["client_peak_mb"], 1e-9)
                vals.append(f"{job}: {q:.2f}x (client {cq:.2f}x)")
                ok &= q <= 1.2
            else:
                missing.append(job)
        status = ("PASS" if ok else "MISS") if vals else "n/a"
        if vals and missing:
            vals.append(f"{', '.join(missing)}: not run at both sizes")
            status += " (partial)"
        targets.append({"target": "peak memory (client + workers) at 100M <= 1.2x that at 10M",
                        "value": "; ".join(vals) or "not measured", "status": status})
    else:
        targets.append({"target": "peak memory at 100M <= 1.2x that at 10M",
                        "value": "needs both 10M and 100M runs", "status": "n/a"})
    # 4. projection of 1.2 billion photometric rows
    pts = [(n, by[n]["predict/astrodask-phot"]["seconds"]) for n in rows_sorted
           if _ok(by[n].get("predict/astrodask-phot"))]
    proj = fit_projection(pts, SURVEY_ROWS)
    if proj:
        how = (f"log-log slope {proj['loglog_slope']:.2f} -> {proj['loglog_seconds'] / 60:.1f} min, linear -> "
               f"{proj['linear_seconds'] / 60:.1f} min" if "loglog_seconds" in proj
               else f"one size ({label(pts[0][0])}), constant rows/s -> {proj['linear_seconds'] / 60:.1f} min")
        targets.append({"target": "projected scoring of 1.2 billion photometric rows on this machine < 30 min",
                        "value": f"{proj['seconds'] / 60:.1f} min ({how}; from {', '.join(label(p[0]) for p in pts)})",
                        "status": "PASS" if proj["seconds"] < SURVEY_BUDGET_S else "MISS", "projection": proj})
    else:
        targets.append({"target": "projected 1.2 billion photometric rows < 30 min", "value": "not measured",
                        "status": "n/a"})
    return targets


def _fmt(x, spec=",.0f", empty="–"):
    return empty if x is None else format(x, spec)


def stage_table(stage: str, sizes: list[dict], target: float) -> list[str]:
    lines = []
    hdr = ["system", "rows", "wall s", "rows/s", "accuracy", "peak client MB", "peak workers MB",
           "rows/s ÷ Spark", "rows/s ÷ raw", "notes"]
    lines.append("| " + " | ".join(hdr) + " |")
    lines.append("|" + "|".join(["---"] + ["---:"] * 8 + ["---"]) + "|")
    any_row = False
    for s in sizes:
        res = s["results"]
        spark, raw = res.get(f"{stage}/spark"), res.get(f"{stage}/raw")
        for st, system, _ in JOBS:
            if st != stage:
                continue
            r = res.get(f"{stage}/{system}")
            if r is None:
                continue
            any_row = True
            name = DESCRIPTION[(stage, system)]
            if "error" in r or "skipped" in r:
                why = r.get("error") or r.get("skipped")
                lines.append(f"| {name} | {label(s['rows'])} | – | – | – | – | – | – | – | "
                             f"{'FAILED: ' if 'error' in r else 'skipped: '}{why} |")
                continue
            notes = []
            if stage == "train":
                if r.get("reached"):
                    if "epochs_to_target" in r:
                        notes.append(f"target at epoch {r['epochs_to_target']} of {r['epochs_run']}")
                    elif "iterations_to_target" in r:
                        notes.append(f"target at {r['iterations_to_target']} iterations")
                    else:
                        notes.append("target reached")
                elif r.get("features") == "photometric":
                    notes.append("no redshift: no target; wall = full run")
                else:
                    notes.append(f"target {target} NOT reached: wall = full run")
                if r.get("full_seconds") and abs(r["full_seconds"] - r["seconds"]) > 0.05:
                    notes.append(f"full run {r['full_seconds']:.1f} s")
                if r.get("cache"):
                    notes.append(f"cache {r['cache']}")
            if r.get("features") and stage == "train" and not str(r["features"]).startswith(("spectro", "photo")):
                notes.append(f"features: {r['features']}")
            if r.get("n_features") and stage == "train":
                notes.append(f"{r['n_features']} features")
            comparable = system not in ("spark", "astrodask-parallel-phot")  # Spark trains on redshift too
            vs_spark = (r["rows_per_s"] / spark["rows_per_s"]) if _ok(spark) and comparable else None
            vs_raw = (r["rows_per_s"] / raw["rows_per_s"]) if _ok(raw) and system != "raw" else None
            acc = r.get("accuracy")
            lines.append(
                f"| {name} | {label(s['rows'])} | {r['seconds']:.1f} | {_fmt(r['rows_per_s'])} | "
                f"{_fmt(acc, '.4f')} | {_fmt(r.get('client_peak_mb'))} | {_fmt(r.get('workers_peak_mb'))} | "
                f"{_fmt(vs_spark, '.2f')} | {_fmt(vs_raw, '.2f')} | {'; '.join(notes)} |")
    return lines if any_row else []


def write_report(sizes: list[dict], args, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    targets = evaluate_targets(sizes)
    info = {"date": dt.datetime.now().isoformat(timespec="seconds"), "machine": common.machine(),
            "versions": common.versions(), "target_accuracy": args.target, "workers": args.workers,
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])}
    doc = {**info, "targets": targets, "sizes": sizes}
    (out / "results.json").write_text(json.dumps(doc, indent=1, default=float))
    m, v = info["machine"], info["versions"]
    md = [
        "# astrodask benchmarks",
        "",
        f"Date: {info['date']}. Machine: {m['nproc']} cores, {m['memory_gb']} GiB memory, {m['cpu']}, {m['os']}, "
        f"Python {m['python']} (1-min load average at report time: {m['load_avg_1m']}).",
        "",
        "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val) + ".",
        "",
        f"Command: `python benchmarks/{info['command']}`. Dask runs a LocalCluster of {args.workers} workers x 1 "
        f"thread; Spark runs local[{args.workers}]. Cluster/session start-up is not timed. Train wall time is the "
        f"time to reach {args.target} accuracy on the id-hash VALID split (see README); the accuracy column is "
        "the final TEST-split accuracy. Ratios are rows/s of the row's system divided by that of Spark or of the "
        "raw pyarrow limit at the same size (> 1: faster).",
        "",
        "## Targets",
        "",
        "| target | measured | status |",
        "|---|---|---|",
        *[f"| {t['target']} | {t['value']} | **{t['status']}** |" for t in targets],
        "",
    ]
    for stage in STAGES:
        tbl = stage_table(stage, sizes, args.target)
        if tbl:
            md += [f"## {stage}", "", *tbl, ""]
    scaling = out / "results_train_scaling.md"
    if scaling.is_file():
        md += ["## train scaling (benchmarks/bench_train_scaling.py)", "",
               *[ln for ln in scaling.read_text().splitlines() if not ln.startswith("# ")], ""]
    md += ["![throughput and peak memory](throughput.png)", ""]
    (out / "results.md").write_text("\n".join(md))
    plot(sizes, out / "throughput.png")
    return doc


def plot(sizes: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(16, 8.5), squeeze=False)
    for col, stage in enumerate(STAGES):
        ax_r, ax_m = axes[0][col], axes[1][col]
        for st, system, _ in JOBS:
            if st != stage:
                continue
            pts = [(s["rows"], s["results"].get(f"{stage}/{system}")) for s in sizes]
            pts = [(n, r) for n, r in pts if _ok(r)]
            if not pts:
                continue
            n = [p[0] for p in pts]
            style = "--" if system in ("raw", "spark") else "-"
            ax_r.plot(n, [p[1]["rows_per_s"] for p in pts], style, marker="o", label=system)
            ax_m.plot(n, [_total_mem(p[1]) for p in pts], style, marker="o", label=system)
        for ax, ylabel in ((ax_r, "rows/s"), (ax_m, "peak memory MB (client + workers)")):
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("rows")
            ax.set_ylabel(ylabel)
            ax.grid(True, which="both", alpha=0.3)
            if ax.lines:
                ax.legend(fontsize=8)
        ax_r.set_title(f"{stage}: throughput" + (" (to target accuracy)" if stage == "train" else ""))
        ax_m.set_title(f"{stage}: peak memory")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ================================================================================================ profile


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
    if 100_000_000 <= max(args.rows) and not args.report_only:
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
