"""Spark MLlib's side of benchmarks/speed.py, run as a whole process the way a user runs a Spark job.

    python benchmarks/spark_job.py fit DATASET MODEL_DIR RESULT.json
    python benchmarks/spark_job.py predict DATASET MODEL_DIR OUT RESULT.json

``fit``: Spark's default LogisticRegression (multinomial, maxIter 100, regParam 0, tol 1e-6, standardization on)
on astrodask's base spectroscopic features (bands, colours, asinh(z / 1e-3)), trained on the TRAIN split of
``astrodask.dataset.HOLDOUT`` and scored on its TEST split (the same rows astrodask's metrics use); the fitted
PipelineModel is saved for ``predict``. ``predict``: load it, transform, write Parquet (zstd) with the id, the
class, the three probabilities and the carried columns, as ``astrodask predict`` does.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

T0 = time.perf_counter()
sys.path.insert(0, str(Path(__file__).resolve().parent))


def fit(dataset: str, model_dir: str, result: str) -> None:
    from common import (
        SPARK_FEATURES,
        data_files,
        spark_base_columns,
        spark_label,
        spark_session,
        spark_split,
    )
    from pyspark.ml import PipelineModel
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import VectorAssembler
    from pyspark.sql import functions as F

    from astrodask.dataset import TEST, TRAIN

    spark = spark_session(2, "8g")
    df = spark.read.parquet(*data_files(dataset, "parquet"))
    df = df.where(F.col("class").isNotNull()).select(spark_split().alias("split"), spark_label(),
                                                     *spark_base_columns(df))
    assembler = VectorAssembler(inputCols=list(SPARK_FEATURES), outputCol="features", handleInvalid="skip")
    df = assembler.transform(df).select("split", "label", "features")
    t = time.perf_counter()
    model = LogisticRegression(family="multinomial").fit(df.where(F.col("split") == TRAIN))
    fit_s = time.perf_counter() - t
    test = model.transform(df.where(F.col("split") == TEST))
    acc = float(test.agg(F.avg((F.col("prediction") == F.col("label")).cast("double"))).first()[0])
    PipelineModel(stages=[assembler, model]).write().overwrite().save(model_dir)
    iterations = int(model.summary.totalIterations)
    spark.stop()
    _write(result, {"accuracy": acc, "iterations": iterations, "fit_seconds_in_session": fit_s})


def predict(dataset: str, model_dir: str, out: str, result: str) -> None:
    from common import data_files, spark_base_columns, spark_session
    from pyspark.ml import PipelineModel
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    from astrodask import schema

    spark = spark_session(2, "8g")
    spark.conf.set("spark.sql.parquet.compression.codec", "zstd")
    model = PipelineModel.load(model_dir)
    df = spark.read.parquet(*data_files(dataset, "parquet"))
    carry = ["class", "alpha", "delta", "redshift"]
    scored = model.transform(df.select("obj_ID", *carry, *spark_base_columns(df)))
    names = F.array(*[F.lit(c) for c in schema.CLASSES])
    prob = vector_to_array(F.col("probability"))
    scored = scored.select("obj_ID", F.element_at(names, F.col("prediction").cast("int") + 1).alias("predicted_class"),
                           *[prob[k].cast("float").alias(f"prob_{c}") for k, c in enumerate(schema.CLASSES)], *carry)
    scored.write.mode("overwrite").parquet(out)
    spark.stop()
    _write(result, {})


def _write(path: str, doc: dict) -> None:
    doc["process_seconds_after_start"] = time.perf_counter() - T0
    Path(path).write_text(json.dumps(doc))


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    {"fit": fit, "predict": predict}[cmd](*args)
