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
import pyarrow.compute  # noqa: F401  (pa.compute)

from . import schema
from .console import log, track
from .dataset import open_dataset
from .errors import AstrodaskError, ConfigError
from .evaluate import PRED, PROB_PREFIX
from .features import raw_columns
from .model import SoftmaxModel
from .options import check_choices
from .storage import (
    Location,
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
IMPUTED = "imputed"
FORMATS = ("parquet", "hats")
HATS_PARTS = "_scored"
"""With ``--format hats``: where the scored partitions wait (inside the staging area) for hats-import."""
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

    def options(self) -> "PredictOptions":
        """Just the predict options (a PredictConfig without its paths and job flags)."""
        return PredictOptions(**{k: getattr(self, k) for k in PredictOptions.__dataclass_fields__})


@dataclass(frozen=True)
class PredictConfig(PredictOptions):
    """The ``predict`` stage: the predict options, plus what to score with which model and where it goes."""

    dataset: str
    """Parquet dataset to classify (a local path or an fsspec URL)."""
    model_dir: str
    """Model directory written by ``astrodask train`` (or ``SDSSClassifier.save``)."""
    out: str
    """Output directory of predictions (a local path or an fsspec URL)."""
    overwrite: bool = False
    """Replace an existing output (only one astrodask wrote)."""
    resume: bool = False
    """Continue an interrupted run (partitions already scored are kept); on a complete output made from the same
    dataset and model, succeed without changing it."""
    storage_options: dict = field(default_factory=dict)
    """fsspec storage options for URLs (credentials, endpoint...), e.g. ``{"anon": True}``."""
    quiet: bool = False
    """No progress bar."""

    def __post_init__(self):
        super().__post_init__()
        if self.storage_options is None:
            object.__setattr__(self, "storage_options", {})
        if Location.of(self.out, self.storage_options) == Location.of(self.dataset, self.storage_options):
            raise ConfigError("out", "is the input dataset", "write predictions to another directory")

    def __hash__(self):  # the storage options dict makes the generated hash fail
        return hash((self.dataset, self.model_dir, self.out))


def output_schema(carry: list[str]) -> pa.Schema:
    fields = [pa.field(schema.ID, pa.uint64(), nullable=False), pa.field(PRED, pa.string())]
    fields += [pa.field(PROB_PREFIX + c, pa.float32()) for c in schema.CLASSES]
    fields += [pa.field(IMPUTED, pa.uint16(), nullable=False)]
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
                    PRED: classes.take(p.argmax(axis=1))}
            for k, c in enumerate(model.classes_):
                cols[PROB_PREFIX + c] = pa.array(p[:, k].astype(np.float32))
            cols[IMPUTED] = pa.array(imp, pa.uint16())
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


def run(cfg: PredictConfig, client) -> dict:
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
        _hats_import_module()
    carry = [c for c in CARRY if c in ds.columns]
    dest = Location.of(cfg.out, so)
    fp = {**fingerprint(ds, model_dir, model), "format": cfg.format}
    with StagedOutput(dest, cfg.overwrite, cfg.resume, kind="predictions", fingerprint=fp,
                      inputs=(ds.location, model_dir)) as out:
        names = [f.name for f in ds.files]
        if out.done:
            meta = read_meta(dest)
            return {"out": str(dest), "rows": meta.get("rows"), "files": len(meta.get("parts", [])),
                    "imputed_rows": meta.get("imputed_rows")}
        if len(set(names)) != len(names):
            raise AstrodaskError(f"{ds.path}: partition file names repeat; reconvert the dataset")
        where = out.staging / HATS_PARTS if cfg.format == "hats" else out.staging
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
                f"(see their '{IMPUTED}' column)")
        if cfg.format == "hats":
            parts = _to_hats(client, out.staging, [where / n for n in names], sum(written), cfg.quiet, cfg.resume)
        else:
            parts = [{"file": n, "rows": r} for n, r in zip(names, written)]
        out.commit({"dataset": ds.path, "model": str(model_dir), "format": cfg.format,
                    "rows": sum(written), "parts": parts,
                    "classes": list(model.classes_), "imputed_rows": imputed,
                    "imputed_bits": list(schema.INPUT_BITS)})
    return {"out": str(dest), "rows": sum(written), "files": len(parts), "imputed_rows": imputed}


def _hats_import_module():
    """hats-import's ``pipeline_with_client``, or a one-line error saying how to install it."""
    try:
        from hats_import.pipeline import pipeline_with_client
    except ImportError:
        raise AstrodaskError("--format hats needs hats-import; pip install 'astrodask[hats]'") from None
    return pipeline_with_client


def _upath(loc: Location):
    """``loc`` for hats-import. On an object store without the listing cache: hats-import's tasks list prefixes
    other workers write to, and a long-lived worker's cached listing would hide their files."""
    from upath import UPath

    return UPath(loc.url, **{**loc.options, "use_listings_cache": False}) if not loc.is_local else UPath(loc.url)


HATS_TMP_ENV = "ASTRODASK_HATS_TMP"
"""A directory every worker sees (a local disk on one machine, else a shared filesystem) where hats-import keeps
its intermediate files and resume plan when the catalogue goes to an object store (default: the system's
temporary directory)."""


def _hats_tmp_dir(staging: Location) -> Location:
    """Where hats-import keeps its intermediate files and resume plan for ``staging``.

    Local catalogue: inside the staging area. Object store: a local directory named after the output, kept
    across a kill for ``--resume`` -- hats-import opens its resume plan (done markers, the pickled reader, the
    pixel alignment) with plain ``open``, which reaches no object store, and its intermediate Parquet is better
    off on a disk too (hats also walks the catalogue's directory to estimate its size, where a versioned store
    may still list the deleted intermediate prefixes)."""
    if staging.is_local:
        return staging / "_hats_tmp"
    import hashlib
    import os
    import tempfile

    base = os.environ.get(HATS_TMP_ENV) or os.path.join(tempfile.gettempdir(), "astrodask-hats")
    return Location.of(os.path.join(base, hashlib.sha256(staging.url.encode()).hexdigest()[:20]))


def _prepare_hats_tmp(client, where: Location, fresh: bool) -> None:
    """Make the local directory of an object-store catalogue (emptied unless resuming); every worker must see it,
    else stop with one line saying how to give a shared one."""
    import os

    if fresh:
        where.remove(recursive=True)
    where.mkdir()
    probe = where / f".probe-{os.getpid()}"
    probe.write_text("")
    try:
        seen = client.run(os.path.exists, probe.url)
    finally:
        probe.remove()
    if not all(seen.values()):
        raise AstrodaskError(f"--format hats to an object store: hats-import keeps its intermediate files in a local "
                             f"directory every worker must see, and {sum(not v for v in seen.values())} worker(s) "
                             f"do not see {where.parent}; set {HATS_TMP_ENV} to a shared directory")


def _to_hats(client, staging: Location, scored: list, rows: int, quiet: bool, resume: bool = False) -> list[dict]:
    """Partition the scored files by HEALPix with hats-import on ``client``'s workers, straight into the staging
    area (the catalogue's root); return the data files as manifest parts. hats-import keeps its own resume plan
    (:func:`_hats_tmp_dir`), so a killed run continues."""
    from hats_import.catalog.arguments import ImportArguments

    pipeline_with_client = _hats_import_module()
    tmp = _hats_tmp_dir(staging)
    if not (staging / "hats.properties").exists():
        if not staging.is_local:
            _prepare_hats_tmp(client, tmp, fresh=not resume)
        args = ImportArguments(
            input_file_list=[f.url if f.is_local else _upath(f) for f in scored], file_reader="parquet",
            ra_column="alpha", dec_column="delta",
            output_path=_upath(staging.parent), output_artifact_name=staging.name, sort_columns=schema.ID,
            tmp_dir=_upath(tmp), resume=True, expected_total_rows=rows,
            progress_bar=not quiet, simple_progress_bar=True,
        )
        pipeline_with_client(args, client)
    tmp.remove(recursive=True)
    for f in scored:
        f.remove()
    (staging / HATS_PARTS).remove(recursive=True)
    data = [f for f in (staging / "dataset").files() if f.name.endswith(".parquet") and f.name.startswith("Npix")]
    parts = [{"file": f.relative_to(staging), "rows": parquet_rows(f)} for f in data]
    if sum(p["rows"] or 0 for p in parts) != rows:
        raise AstrodaskError(f"the HATS catalogue holds {sum(p['rows'] or 0 for p in parts):,} rows, not {rows:,}; "
                             "rerun with --overwrite")
    return parts


def _imputed_in(path: Location) -> int:
    with parquet_file(path) as pf:
        col = pf.read(columns=[IMPUTED]).column(0)
    return int(pa.compute.sum(pa.compute.not_equal(col, 0)).as_py() or 0)


def _count_imputed(client, paths: list, quiet: bool) -> int:
    """Rows with an imputed input, counted from the written files (resumed partitions included)."""
    return sum(track(client.map(_imputed_in, paths, pure=False), "count imputed", quiet))
