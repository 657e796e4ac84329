"""The per-system runs of ``benchmarks/run.py``: one function per (stage, system), each run in a fresh child
process by the harness, returning its measurement as a JSON-ready dict."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from common import MiB

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

    return connect(ClusterConfig(n_workers=ctx["workers"], threads_per_worker=1), quiet=True)


def _result(ctx, seconds, sampler_peaks, **kw) -> dict:
    rows = ctx["rows"]
    return {"rows": rows, "seconds": seconds, "rows_per_s": rows / seconds if seconds else None,
            **sampler_peaks, **kw}


def job_convert_astrodask(ctx):
    from common import Sampler, dask_workers

    from astrodask import ingest

    dest = Path(ctx["scratch"]) / "dataset"
    with _cluster(ctx) as client:
        s = Sampler(dask_workers(client))
        s.start()
        t0 = time.perf_counter()
        r = ingest.run(ingest.ConvertConfig(tuple(ctx["csv_files"]), str(dest), overwrite=True, quiet=True), client)
        sec = time.perf_counter() - t0
        peaks = s.stop()
    assert r.written == ctx["rows"], r
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
    from common import Sampler, dask_workers

    from astrodask.learn import TrainConfig, stage

    model_dir = Path(ctx["models"]) / ctx["system"]
    epochs = {("parallel", "spectroscopic"): ctx["epochs"], ("parallel", "photometric"): ctx["phot_epochs"]}.get(
        (mode, features), ctx["incremental_epochs"])
    if mode == "incremental":
        # the incremental mode always persists its shuffled feature blocks (and astrodask versions that
        # gather them with console.track hold a second copy on the client)
        import psutil

        ref = Path(ctx["models"]) / "astrodask-parallel" / "model.json"
        n_feat = len(json.loads(ref.read_text())["features"]["names"]) if ref.is_file() else 330
        need = ctx["rows"] * (n_feat + 2) * 4
        avail = psutil.virtual_memory().available
        if need > 0.8 * avail:
            return {"rows": ctx["rows"], "skipped": f"needs ~{need / 2**30:.0f} GiB (the persisted features), "
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
    hist = [e.to_json() for e in r.history]
    k = _first_reaching(hist, ctx["target"]) if features == "spectroscopic" else None
    # a run that stopped at the first epoch reaching the target would have skipped the epochs after it
    tta = wall - (hist[-1]["seconds"] - hist[k]["seconds"]) if k is not None else None
    m = r.metrics
    return _result(ctx, tta if tta is not None else wall, peaks, reached=k is not None,
                   epochs_to_target=None if k is None else hist[k]["epoch"],
                   accuracy=m.accuracy, valid_accuracy=hist[-1].get("valid_accuracy"),
                   full_seconds=wall, train_seconds=m.train["seconds"], epochs_run=len(hist),
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
    from common import Sampler
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    from astrodask import schema
    from astrodask.dataset import HOLDOUT, TEST, TRAIN, VALID
    from astrodask.features import RECIPES, base_matrix
    from astrodask.model import SoftmaxModel

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
    from common import Sampler, dask_workers
    from dask_ml.preprocessing import StandardScaler
    from dask_ml.wrappers import Incremental
    from sklearn.linear_model import SGDClassifier

    from astrodask import schema
    from astrodask.dataset import HOLDOUT, TEST, TRAIN, VALID
    from astrodask.features import RECIPES, base_matrix

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
    from common import (
        SPARK_FEATURES,
        Sampler,
        child_processes,
        spark_base_columns,
        spark_label,
        spark_session,
        spark_split,
    )
    from pyspark.ml import PipelineModel
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import StandardScaler, VectorAssembler
    from pyspark.sql import functions as F

    from astrodask.dataset import TEST, TRAIN, VALID

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
    from common import Sampler, dask_workers

    from astrodask import predict

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
    assert r.rows == ctx["rows"], r
    return _result(ctx, sec, peaks, output_mb=common.dir_bytes(dest) / MiB, model=model_name)


def job_predict_spark(ctx):
    from common import Sampler, child_processes, spark_base_columns, spark_session
    from pyspark.ml import PipelineModel
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    from astrodask import schema

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
