"""Stage 5: score a dataset with a model, one output file per input partition, on the workers.

Output columns: ``obj_ID``, ``predicted_class``, ``prob_GALAXY``, ``prob_QSO``, ``prob_STAR``, ``imputed`` and,
when the input has them, the ``CARRY`` columns (true ``class``, ``alpha``, ``delta``, ``redshift``, and the source
ids and row of a ``--row-ids`` conversion).
Every input row gets exactly one output row. A missing input value is imputed with the training median, and
the row says so: bit k of ``imputed`` is set when input ``schema.INPUT_BITS[k]`` (u, g, r, i, z, redshift, psf_u ..
psf_z; only the model's own inputs) was missing, so 0 means every input was measured.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute

from . import hats_output, schema
from .console import log, track
from .dataset import open_dataset
from .errors import AstrodaskError, ConfigError
from .features import raw_columns
from .model import SoftmaxModel
from .options import JobFlags, check_choices
from .storage import (
    Location,
    ManifestPart,
    StagedOutput,
    fingerprint_file,
    parquet_file,
    parquet_rows,
    read_meta,
    write_parquet_atomic,
)

CARRY = (schema.CLASS, "alpha", "delta", schema.REDSHIFT, schema.SOURCE_ID, schema.SOURCE_SPEC_ID, schema.SOURCE_ROW)
"""Columns copied from the dataset when it has them: labels and positions for evaluation and maps, and the
source's own id text and row position (``convert --row-ids``) so every prediction joins back to its input row."""
FORMATS = ("parquet", "hats")
BATCH_ROWS = 262144
"""Rows read and scored at a time (scoring never builds the expanded feature matrix: the compiled kernel of
astrodask.features.compiled scores row by row), so a task's memory does not grow with the partition size."""


@dataclass(frozen=True, kw_only=True)
class PredictOptions:
    """How predictions are written (every option a user sets; the same for ``predict`` and ``run``)."""

    format: str = field(default="parquet", metadata={"choices": FORMATS})
    """parquet: one file per input partition, the same rows in the same order; hats: a HATS catalogue
    (HEALPix-partitioned Parquet that lsdb.open_catalog opens, for cone searches and crossmatches), built by
    hats-import on the same workers; needs alpha and delta and the astrodask[hats] extra."""

    def __post_init__(self):
        check_choices(self)

    def options(self) -> PredictOptions:
        """Just the predict options (a PredictConfig without its paths and job flags)."""
        return PredictOptions(**{k: getattr(self, k) for k in PredictOptions.__dataclass_fields__})


@dataclass(frozen=True)
class PredictConfig(PredictOptions, JobFlags):
    """The ``predict`` stage: the predict options, plus what to score with which model and where it goes."""

    dataset: str
    """Parquet dataset to classify (a local path or an fsspec URL)."""
    model_dir: str
    """Model directory written by ``astrodask train`` (or ``SDSSClassifier.save``)."""
    out: str
    """Output directory of predictions (a local path or an fsspec URL)."""

    def __post_init__(self):
        PredictOptions.__post_init__(self)
        self.check_flags()
        if Location.of(self.out, self.storage_options) == Location.of(self.dataset, self.storage_options):
            raise ConfigError("out", "is the input dataset", "write predictions to another directory")


@dataclass(frozen=True)
class PredictResult:
    """What ``predict.run`` wrote."""

    out: str
    rows: int
    files: int
    imputed_rows: int
    """Rows with at least one input imputed (their ``imputed`` column is not 0)."""
    format: str = "parquet"

    @classmethod
    def of_manifest(cls, out: str, meta: dict) -> PredictResult:
        return cls(out, int(meta.get("rows") or 0), len(meta.get("parts") or []), int(meta.get("imputed_rows") or 0),
                   meta.get("format", "parquet"))

    def lines(self) -> list[str]:
        return [f"predictions: {self.out} ({self.rows:,} rows in {self.files} files)"]


def output_schema(carry: list[str]) -> pa.Schema:
    fields = [pa.field(schema.ID, pa.uint64(), nullable=False), pa.field(schema.PRED, pa.string())]
    fields += [pa.field(p, pa.float32()) for p in schema.PROBS]
    fields += [pa.field(schema.IMPUTED, pa.uint16(), nullable=False)]
    fields += [pa.field(c, schema.TYPES[c]) for c in carry]
    return pa.schema(fields)


def predict_file(src: Location, dst: Location, model: SoftmaxModel, carry: list[str]) -> tuple[int, int]:
    """Worker task: score one partition in batches of rows and write it; return (rows, rows with an imputed
    input)."""
    # imported here: numba loads in the processes that score, not in every command
    from .features import compiled

    compiled.warm_up()  # compile the scoring kernel (or load it from numba's cache), once per process
    inputs = [schema.ID, *raw_columns(model.spec.feature_set)]
    need = list(dict.fromkeys([*inputs, *carry]))
    out_schema = output_schema(carry)
    tables = []
    classes = pa.array(model.classes_, pa.string())
    n_imputed = 0
    with parquet_file(src) as pf:
        for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=need):
            df = batch.select(inputs).to_pandas()  # carried columns stay Arrow: no string conversion
            p, imp = model.predict_proba_and_mask(df)  # one compiled pass over the rows (astrodask.features.compiled)
            n_imputed += int(np.count_nonzero(imp))
            cols = {schema.ID: pa.array(df[schema.ID].to_numpy(np.uint64), pa.uint64()),
                    schema.PRED: classes.take(p.argmax(axis=1))}
            for k, c in enumerate(model.classes_):
                cols[schema.PROB_PREFIX + c] = pa.array(p[:, k].astype(np.float32))
            cols[schema.IMPUTED] = pa.array(imp, pa.uint16())
            for c in carry:
                cols[c] = batch.column(c).cast(schema.TYPES[c])
            tables.append(pa.table(cols, schema=out_schema))
    table = pa.concat_tables(tables) if tables else out_schema.empty_table()
    write_parquet_atomic(table, dst)
    return table.num_rows, n_imputed


def _identity(x):
    return x


def fingerprint(ds, model_dir: Location, model: SoftmaxModel) -> dict:
    """What makes these predictions: the dataset's identity and the model's."""
    mid = read_meta(model_dir).get("output_id") or {"weights": fingerprint_file(model_dir / "weights.npz")}
    return {"stage": "predict", "dataset": ds.identity(), "model": {"output_id": mid}}


def run(cfg: PredictConfig, client) -> PredictResult:
    """Score ``cfg.dataset`` with the model in ``cfg.model_dir`` into ``cfg.out``.

    With ``resume``, predictions already complete from the same dataset and model are kept as they are; an
    interrupted run continues (partitions already scored are kept).
    """
    so = cfg.storage_options
    model_dir = Location.of(cfg.model_dir, so)
    model = SoftmaxModel.load(model_dir)
    ds = open_dataset(Location.of(cfg.dataset, so))
    inputs = raw_columns(model.spec.feature_set)
    why = (f"by this {model.spec.feature_set} model (use a model trained with --features photometric for "
           "catalogues without redshift)")
    ds.require(inputs, why)
    ds.require_values(inputs, why)
    if cfg.format == "hats":
        ds.require(["alpha", "delta"], "to write a HATS catalogue (sky positions)")
        hats_output.require_hats_import()
    carry = [c for c in CARRY if c in ds.columns]
    dest = Location.of(cfg.out, so)
    fp = {**fingerprint(ds, model_dir, model), "format": cfg.format}
    with StagedOutput(dest, cfg.overwrite, cfg.resume, kind="predictions", fingerprint=fp,
                      inputs=(ds.location, model_dir)) as out:
        names = [f.name for f in ds.files]
        if out.done:
            return PredictResult.of_manifest(str(dest), read_meta(dest))
        if len(set(names)) != len(names):
            raise AstrodaskError(f"{ds.path}: partition file names repeat; reconvert the dataset")
        where = out.staging / hats_output.SCORED_DIR if cfg.format == "hats" else out.staging
        todo = [(f, where / n) for f, n, rows in zip(ds.files, names, ds.rows)
                if not (cfg.resume and parquet_rows(where / n) == rows)]
        if len(todo) < len(ds.files):
            log(f"resume: {len(ds.files) - len(todo)} of {len(ds.files)} partitions already scored")
        # the model as a task, not scattered data: if every worker holding it dies, the scheduler can make it again
        model_f = client.submit(_identity, model, pure=False)
        futs = [client.submit(predict_file, s, d, model_f, carry, pure=False) for s, d in todo]
        track(futs, "predict", cfg.quiet)
        written = [parquet_rows(where / n) for n in names]
        if written != list(ds.rows):
            raise AstrodaskError("predictions do not match the input row counts; rerun with --resume")
        imputed = _count_imputed(client, [where / n for n in names], cfg.quiet)
        if imputed:
            log(f"{imputed:,} of {sum(written):,} rows had a missing input imputed with the training median "
                f"(see their '{schema.IMPUTED}' column)")
        if cfg.format == "hats":
            parts = hats_output.write_catalogue(client, out.staging, [where / n for n in names], sum(written),
                                                cfg.quiet, cfg.resume)
        else:
            parts = [ManifestPart(n, r) for n, r in zip(names, written)]
        out.commit({"dataset": ds.path, "model": str(model_dir), "format": cfg.format, "rows": sum(written),
                    "classes": list(model.classes_), "imputed_rows": imputed,
                    "imputed_bits": list(schema.INPUT_BITS)}, parts)
    return PredictResult(str(dest), sum(written), len(parts), imputed, cfg.format)


def _imputed_in(path: Location) -> int:
    with parquet_file(path) as pf:
        col = pf.read(columns=[schema.IMPUTED]).column(0)
    return int(pa.compute.sum(pa.compute.not_equal(col, 0)).as_py() or 0)


def _count_imputed(client, paths: list, quiet: bool) -> int:
    """Rows with an imputed input, counted from the written files (resumed partitions included)."""
    return sum(track(client.map(_imputed_in, paths, pure=False), "count imputed", quiet))
