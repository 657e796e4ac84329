"""Stage 5: score a dataset with a model, one output file per input partition, on the workers.

Output columns: ``obj_ID``, ``predicted_class``, ``prob_GALAXY``, ``prob_QSO``, ``prob_STAR`` and, when the
input has them, the true ``class`` and ``alpha``, ``delta``, ``redshift`` (for evaluation and maps).
Every input row gets exactly one output row (missing inputs are imputed as in training).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from . import schema
from .console import log, track
from .dataset import open_dataset
from .errors import AstrodaskError, ConfigError
from .evaluate import PRED, PROB_PREFIX
from .features import raw_columns
from .model import SoftmaxModel
from .storage import StagedOutput, parquet_rows, write_parquet_atomic

CARRY = (schema.CLASS, "alpha", "delta", schema.REDSHIFT)
BATCH_ROWS = 262144
"""Rows read and scored at a time (scoring never builds the expanded feature matrix: see FeatureSpec.linear),
so a task's memory does not grow with the partition size."""


@dataclass(frozen=True)
class PredictConfig:
    """What to score and where the predictions go."""

    dataset: str
    """Parquet dataset to classify."""
    model_dir: str
    """Model directory written by ``astrodask train``."""
    out: str
    """Output dataset directory of predictions."""
    overwrite: bool = False
    """Replace an existing output."""
    resume: bool = False
    """Continue an interrupted run: partitions already written (and of the right length) are kept."""
    quiet: bool = False
    """No progress bar."""

    def __post_init__(self):
        if Path(self.out).absolute() == Path(self.dataset).absolute():
            raise ConfigError("out", "is the input dataset", "write predictions to another directory")


def output_schema(carry: list[str]) -> pa.Schema:
    fields = [pa.field(schema.ID, pa.uint64(), nullable=False), pa.field(PRED, pa.string())]
    fields += [pa.field(PROB_PREFIX + c, pa.float32()) for c in schema.CLASSES]
    fields += [pa.field(c, schema.TYPES[c]) for c in carry]
    return pa.schema(fields)


def predict_file(src: str, dst: str, model: SoftmaxModel, carry: list[str]) -> int:
    """Worker task: score one partition in batches of rows and write it; return the row count."""
    inputs = [schema.ID, *raw_columns(model.spec.feature_set)]
    need = list(dict.fromkeys([*inputs, *carry]))
    pf = pq.ParquetFile(src)
    out_schema = output_schema(carry)
    tables = []
    classes = pa.array(model.classes_, pa.string())
    for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=need):
        df = batch.select(inputs).to_pandas()  # carried columns stay Arrow: no string conversion
        p = model.predict_proba(df)
        cols = {schema.ID: pa.array(df[schema.ID].to_numpy(np.uint64), pa.uint64()),
                PRED: classes.take(p.argmax(axis=1))}
        for k, c in enumerate(model.classes_):
            cols[PROB_PREFIX + c] = pa.array(p[:, k].astype(np.float32))
        for c in carry:
            cols[c] = batch.column(c).cast(schema.TYPES[c])
        tables.append(pa.table(cols, schema=out_schema))
    table = pa.concat_tables(tables) if tables else out_schema.empty_table()
    write_parquet_atomic(table, dst)
    return table.num_rows


def _identity(x):
    return x


def run(cfg: PredictConfig, client) -> dict:
    """Score ``cfg.dataset`` with the model in ``cfg.model_dir`` into ``cfg.out``."""
    model = SoftmaxModel.load(cfg.model_dir)
    ds = open_dataset(cfg.dataset)
    ds.require(raw_columns(model.spec.feature_set), f"by this {model.spec.feature_set} model "
               "(use a model trained with --features photometric for catalogues without redshift)")
    carry = [c for c in CARRY if c in ds.columns]
    with StagedOutput(Path(cfg.out), cfg.overwrite, cfg.resume, kind="predictions") as out:
        names = [Path(f).name for f in ds.files]
        if len(set(names)) != len(names):
            raise AstrodaskError(f"{ds.path}: partition file names repeat; reconvert the dataset")
        todo = [(f, str(out.path(n))) for f, n, rows in zip(ds.files, names, ds.rows)
                if not (cfg.resume and parquet_rows(out.path(n)) == rows)]
        if len(todo) < len(ds.files):
            log(f"resume: {len(ds.files) - len(todo)} of {len(ds.files)} partitions already scored")
        # the model as a task, not scattered data: if every worker holding it dies, the scheduler can make it again
        model_f = client.submit(_identity, model, pure=False)
        futs = [client.submit(predict_file, s, d, model_f, carry, pure=False) for s, d in todo]
        track(futs, "predict", cfg.quiet)
        written = [parquet_rows(out.path(n)) for n in names]
        if written != list(ds.rows):
            raise AstrodaskError("predictions do not match the input row counts; rerun with --resume")
        out.commit({"dataset": str(Path(ds.path).absolute()), "model": str(Path(cfg.model_dir).absolute()),
                    "rows": sum(written), "parts": [{"file": n, "rows": r} for n, r in zip(names, written)],
                    "classes": list(model.classes_)})
    return {"out": str(Path(cfg.out).absolute()), "rows": sum(written), "files": len(names)}
