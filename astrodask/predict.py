"""Stage 5: score a dataset with a model, one output file per input partition, on the workers.

Output columns: ``obj_ID``, ``predicted_class``, ``prob_GALAXY``, ``prob_QSO``, ``prob_STAR``, ``imputed``,
``scored_by``, ``out_of_domain`` and, when the input has them, the ``CARRY`` columns (true ``class``, ``alpha``,
``delta``, ``redshift``, ``zwarning``, and the source ids and row of a ``--row-ids`` conversion).

Every input row gets exactly one output row, and says how far to trust it: bit k of ``imputed`` is set when input
``schema.INPUT_BITS[k]`` (u, g, r, i, z, redshift, psf_u .. psf_z; only the model's own inputs) was missing and
imputed with the training median; bit k of ``out_of_domain`` when it lies outside the range of the training rows
(the model's ``TrainingDomain``: the prediction extrapolates); ``scored_by`` is ``photometric`` for a row a
spectroscopic model scored with its photometric companion (its redshift is no measurement). ``--priors``
re-weights the probabilities to another class mix (``astrodask.priors``). The manifest counts the rows of each.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute

from . import hats_output, priors, schema
from .cluster.backend import OnCluster
from .console import log, track
from .dataset import open_dataset
from .errors import AstrodaskError, ConfigError
from .model import MODEL_JSON, PATHS, WEIGHTS, SoftmaxModel
from .options import JobFlags, check_choices
from .report.build import INDEX, PREDICTIONS_REPORT_DIR, write_report
from .report.provenance import StageTime
from .storage import (
    FileCheck,
    Location,
    ManifestPart,
    ParquetStream,
    StagedOutput,
    file_check,
    fingerprint_file,
    parquet_file,
    parquet_rows,
    read_meta,
)

CARRY = (schema.CLASS, "alpha", "delta", schema.REDSHIFT, schema.ZWARNING, schema.SOURCE_ID, schema.SOURCE_SPEC_ID,
         schema.SOURCE_ROW)
"""Columns copied from the dataset when it has them: labels and positions for evaluation and maps, and the
source's own id text and row position (``convert --row-ids``) so every prediction joins back to its input row."""
FORMATS = ("parquet", "hats")
BATCH_ROWS = 262144
"""Rows read and scored at a time (scoring never builds the expanded feature matrix: the compiled kernel of
astrodask.features.compiled scores row by row), so a task's memory does not grow with the partition size."""
ROW_GROUP_ROWS = 1 << 20
"""Rows per row group of a predictions file (pyarrow's default): batches are written as a row group fills, so a
task holds at most one row group of output."""
DICTIONARY_COLUMNS = (schema.PRED, schema.SCORED_BY, schema.CLASS)
"""The only columns of a predictions file stored dictionary-encoded (a few distinct strings each). The others are
stored plain: with small row groups the writer would hash every probability, position and redshift into a
dictionary page (CPU several times the plain encoding's, and a larger file). ``predicted_class`` and ``class``
stay strings to every reader; only their Parquet pages are dictionary-encoded."""


@dataclass(frozen=True, kw_only=True)
class PredictOptions:
    """How predictions are written (every option a user sets; the same for ``predict`` and ``run``)."""

    format: str = field(default="parquet", metadata={"choices": FORMATS})
    """parquet: one file per input partition, the same rows in the same order; hats: a HATS catalogue
    (HEALPix-partitioned Parquet that lsdb.open_catalog opens, for cone searches and crossmatches), built by
    hats-import on the same workers; needs alpha and delta and the astrodask[hats] extra."""
    priors: str | None = field(default=None, metadata={"metavar": "GALAXY=F,QSO=F,STAR=F|estimate"})
    """The class mix of the rows to classify: class fractions (e.g. GALAXY=0.55,QSO=0.15,STAR=0.30) re-weight the
    probabilities to it by Bayes' rule (the model's assume its training rows' mix, stored in the model);
    ``estimate`` estimates the mix on the rows themselves by EM across the workers first (Saerens et al. 2002),
    and reports it. Default: the training mix."""
    report: bool = False
    """Also write a report of the predictions into OUT/_report/ (class fractions and probabilities by magnitude,
    the out-of-domain share, colour-colour diagrams, the sky; accuracy and calibration where the rows have a true
    class), drawn from sums made on the workers."""

    def __post_init__(self):
        check_choices(self)
        priors.parse(self.priors)  # refused here, in one line, before any work

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
    scored_by: dict = field(default_factory=dict)
    """Path (``spectroscopic``, ``photometric``) -> rows it scored."""
    out_of_domain_rows: int = 0
    """Rows with at least one input outside the training domain (their ``out_of_domain`` column is not 0)."""
    out_of_domain: dict = field(default_factory=dict)
    """Input -> rows where it lies outside the training domain."""
    priors: dict | None = None
    """The class mix the probabilities were re-weighted to (``target``), and for ``--priors estimate`` how it was
    estimated (``iterations``, ``converged``); None: the training mix."""
    report: str | None = None
    """The report's page (``predict --report``)."""

    @classmethod
    def of_manifest(cls, out: str, meta: dict) -> PredictResult:
        return cls(out, int(meta.get("rows") or 0), len(meta.get("parts") or []), int(meta.get("imputed_rows") or 0),
                   meta.get("format", "parquet"), dict(meta.get("scored_by") or {}),
                   int(meta.get("out_of_domain_rows") or 0), dict(meta.get("out_of_domain") or {}),
                   meta.get("priors"), meta.get("report"))

    def summary(self) -> dict:
        """What the manifest records of the rows."""
        return {"rows": self.rows, "imputed_rows": self.imputed_rows, "scored_by": self.scored_by,
                "out_of_domain_rows": self.out_of_domain_rows, "out_of_domain": self.out_of_domain,
                "priors": self.priors, "report": self.report}

    def lines(self) -> list[str]:
        out = [f"predictions: {self.out} ({self.rows:,} rows in {self.files} files)"]
        if self.scored_by:
            out.append("scored by: " + ", ".join(f"{k} {v:,}" for k, v in self.scored_by.items()))
        share = self.out_of_domain_rows / self.rows if self.rows else 0.0
        out.append(f"outside the training domain: {self.out_of_domain_rows:,} rows ({share:.1%})"
                   + (" - " + ", ".join(f"{c} {n:,}" for c, n in self.out_of_domain.items() if n)
                      if self.out_of_domain_rows else ""))
        if self.priors:
            target = ", ".join(f"{c} {p:.3f}" for c, p in zip(schema.CLASSES, self.priors["target"]))
            how = (f"estimated by EM in {self.priors['iterations']} iterations" if self.priors.get("estimated")
                   else "given")
            out.append(f"class priors ({how}): {target}")
        if self.report:
            out.append(f"report: {self.report}")
        return out


@dataclass(frozen=True)
class RowCounts:
    """What a written predictions file holds, counted on a worker; mergeable (``+``)."""

    rows: int = 0
    imputed: int = 0
    by_path: tuple[int, ...] = (0, 0)
    """Rows scored by each path (``model.PATHS``)."""
    out_of_domain: int = 0
    by_input: tuple[int, ...] = (0,) * len(schema.INPUT_BITS)
    """Rows with each input (``schema.INPUT_BITS``) outside the training domain."""

    def __add__(self, other: RowCounts) -> RowCounts:
        return RowCounts(self.rows + other.rows, self.imputed + other.imputed,
                         tuple(a + b for a, b in zip(self.by_path, other.by_path)),
                         self.out_of_domain + other.out_of_domain,
                         tuple(a + b for a, b in zip(self.by_input, other.by_input)))


def row_counts(imputed: np.ndarray, photometric: np.ndarray, out_of_domain: np.ndarray) -> RowCounts:
    """The counts of rows with these ``imputed``, ``scored_by`` (True: photometric) and ``out_of_domain``."""
    phot = int(np.count_nonzero(photometric))
    by_input = tuple(int(np.count_nonzero(out_of_domain & np.uint16(1 << k))) for k in range(len(schema.INPUT_BITS)))
    return RowCounts(len(imputed), int(np.count_nonzero(imputed)), (len(imputed) - phot, phot),
                     int(np.count_nonzero(out_of_domain)), by_input)


@dataclass(frozen=True)
class PredictedFile:
    """What ``predict_file`` wrote: the file's check (size, digest, rows) and the counts of its rows."""

    check: FileCheck
    counts: RowCounts

    @property
    def rows(self) -> int:
        return self.check.rows


_PATHS = pa.array(PATHS, pa.string())


def output_schema(carry: list[str]) -> pa.Schema:
    fields = [pa.field(schema.ID, pa.uint64(), nullable=False), pa.field(schema.PRED, pa.string())]
    fields += [pa.field(p, pa.float32()) for p in schema.PROBS]
    fields += [pa.field(schema.IMPUTED, pa.uint16(), nullable=False),
               pa.field(schema.SCORED_BY, pa.dictionary(pa.int8(), pa.string()), nullable=False),
               pa.field(schema.OUT_OF_DOMAIN, pa.uint16(), nullable=False)]
    fields += [pa.field(c, schema.TYPES[c]) for c in carry]
    return pa.schema(fields)


def _frames(src: Location, model: SoftmaxModel, carry: list[str], frames: bool = True):
    """(batch, its model inputs as pandas or, without ``frames``, None) of a dataset file, BATCH_ROWS rows at a
    time."""
    with parquet_file(src) as pf:
        have = set(pf.schema_arrow.names)
        inputs = [schema.ID, *model.columns_for(have), *([schema.ZWARNING] if schema.ZWARNING in have else [])]
        need = list(dict.fromkeys([*inputs, *carry]))
        for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=need):
            # carried columns stay Arrow: no string conversion
            yield batch, batch.select(inputs).to_pandas() if frames else None


def predict_file(src: Location, dst: Location, model: SoftmaxModel, carry: list[str], target=None) -> PredictedFile:
    """Worker task: score one partition in batches of rows and write it as they are scored (probabilities
    re-weighted to the class mix ``target`` when given); return its check (rows, size, digest) and the counts of
    its rows."""
    # imported here: numba loads in the processes that score, not in every command
    from .features import compiled

    compiled.warm_up()  # compile the scoring kernel (or load it from numba's cache), once per process
    out_schema = output_schema(carry)
    classes = pa.array(model.classes_, pa.string())
    dictionary = [c for c in DICTIONARY_COLUMNS if c in out_schema.names]
    w = ParquetStream(dst, out_schema, ROW_GROUP_ROWS, dictionary=dictionary)
    counts = RowCounts()
    try:
        for batch, df in _frames(src, model, carry, frames=model.routes):
            # one compiled pass per path (astrodask.features.compiled); a model without routing reads the Arrow
            # columns, a routing model the frame (its rows split by path)
            s = model.score(batch if df is None else df)
            p = s.proba if target is None else priors.apply(s.proba, model.priors_of(s.photometric), target)
            cols = [batch.column(schema.ID).cast(pa.uint64()), classes.take(pa.array(p.argmax(axis=1)))]
            cols += [pa.array(p[:, k].astype(np.float32)) for k in range(len(model.classes_))]
            cols += [pa.array(s.imputed, pa.uint16()),
                     pa.DictionaryArray.from_arrays(pa.array(s.photometric.astype(np.int8)), _PATHS),
                     pa.array(s.out_of_domain, pa.uint16())]
            cols += [batch.column(c).cast(schema.TYPES[c]) for c in carry]
            w.add(pa.RecordBatch.from_arrays(cols, schema=out_schema))
            counts = counts + row_counts(s.imputed, s.photometric, s.out_of_domain)
        w.close()
    except BaseException:
        w.abort()
        raise
    return PredictedFile(w.check, counts)


def prior_sums_file(src: Location, model: SoftmaxModel) -> priors.PriorSums:
    """Worker task: the histogram of one partition's probabilities, for the EM estimate of the priors."""
    from .features import compiled

    compiled.warm_up()
    out = priors.PriorSums()
    for _, df in _frames(src, model, []):
        s = model.score(df)
        out = out + priors.sums_of(s.proba, s.photometric)
    return out


def _add(*parts):
    return sum(parts[1:], parts[0])


def _identity(x):
    return x


def fingerprint(ds, model_dir: Location, model: SoftmaxModel) -> dict:
    """What makes these predictions: the dataset's identity and the model's."""
    mid = read_meta(model_dir).get("output_id") or {"weights": fingerprint_file(model_dir / WEIGHTS)}
    files = {name: fingerprint_file(model_dir / name) for name in (MODEL_JSON, WEIGHTS)}  # their content
    return {"stage": "predict", "dataset": ds.identity(), "model": {"output_id": mid, "files": files}}


def run(cfg: PredictConfig, client) -> PredictResult:
    """Score ``cfg.dataset`` with the model in ``cfg.model_dir`` into ``cfg.out``.

    With ``resume``, predictions already complete from the same dataset and model are kept as they are; an
    interrupted run continues (partitions already scored are kept).
    """
    so = cfg.storage_options
    model_dir = Location.of(cfg.model_dir, so)
    model = SoftmaxModel.load(model_dir)
    ds = open_dataset(Location.of(cfg.dataset, so))
    inputs = model.required
    comp = f" and its {model.companion.spec.feature_set} companion" if model.companion is not None else ""
    why = f"by this model ({model.spec.feature_set}{comp}: it reads {', '.join(model.inputs)})"
    ds.require(inputs, why)
    ds.require_values(inputs, why)
    if model.routes and (schema.REDSHIFT not in ds.columns or not ds.has_values(schema.REDSHIFT)):
        log(f"{ds.path} has no redshift: the model's photometric companion ({model.companion.spec.feature_set}) "
            "scores every row (their scored_by says so)")
    if cfg.format == "hats":
        ds.require(["alpha", "delta"], "to write a HATS catalogue (sky positions)")
        hats_output.require_hats_import()
    carry = [c for c in CARRY if c in ds.columns]
    dest = Location.of(cfg.out, so)
    # the report is an addition to the predictions, not an option of them: a rerun with or without it keeps them
    fp = {**fingerprint(ds, model_dir, model), "format": cfg.format}
    t0 = time.perf_counter()
    with StagedOutput(dest, cfg.overwrite, cfg.resume, kind="predictions", fingerprint=fp,
                      inputs=(ds.location, model_dir)) as out:
        names = [f.name for f in ds.files]
        if out.done:
            done = PredictResult.of_manifest(str(dest), read_meta(dest))
            if cfg.report and not done.report:
                log(f"{dest}: the finished predictions have no report; write one with "
                    f"`astrodask report {dest} --out DIR`")
            return done
        if len(set(names)) != len(names):
            raise AstrodaskError(f"{ds.path}: partition file names repeat; reconvert the dataset")
        where = out.staging / hats_output.SCORED_DIR if cfg.format == "hats" else out.staging
        todo = [(f, where / n) for f, n, rows in zip(ds.files, names, ds.rows)
                if not (cfg.resume and parquet_rows(where / n) == rows)]
        if len(todo) < len(ds.files):
            log(f"resume: {len(ds.files) - len(todo)} of {len(ds.files)} partitions already scored")
        # the model as a task, not scattered data: if every worker holding it dies, the scheduler can make it again
        model_f = client.submit(_identity, model, pure=False)
        target, prior_info = _target_priors(cfg, client, model, model_f, ds)
        futs = [client.submit(predict_file, s, d, model_f, carry, target, pure=False) for s, d in todo]
        scored = dict(zip((d.name for _, d in todo), track(futs, "predict", cfg.quiet)))
        checks = {n: f.check for n, f in scored.items()}
        written = [scored[n].rows if n in scored else parquet_rows(where / n) for n in names]
        if written != list(ds.rows):
            raise AstrodaskError("predictions do not match the input row counts; rerun with --resume")
        # each task counted its rows; only partitions scored by an interrupted run are read back for theirs
        resumed = [n for n in names if n not in scored]
        counts = sum((f.counts for f in scored.values()), _count(client, [where / n for n in resumed], cfg.quiet))
        if counts.imputed:
            log(f"{counts.imputed:,} of {counts.rows:,} rows had a missing input imputed with the training median "
                f"(see their '{schema.IMPUTED}' column)")
        summary = {"dataset": ds.path, "model": str(model_dir), "format": cfg.format, "fingerprint": fp,
                   "priors": prior_info, "rows": counts.rows}
        if cfg.report:  # before a HATS catalogue reorders the rows: they still line up with the dataset's
            write_report(client, out.staging / PREDICTIONS_REPORT_DIR, dest, summary, [where / n for n in names],
                         cfg.storage_options, cfg.quiet, (StageTime("predict", time.perf_counter() - t0),))
        if cfg.format == "hats":
            parts = hats_output.write_catalogue(client, out.staging, [where / n for n in names], sum(written),
                                                cfg.quiet, cfg.resume)
        else:
            # scored by the interrupted run: read on the workers
            checks.update(zip(resumed, track(client.map(file_check, [where / n for n in resumed], pure=False),
                                             "checksums", cfg.quiet)))
            parts = [ManifestPart(n, r, check=checks[n]) for n, r in zip(names, written)]
        result = PredictResult(str(dest), counts.rows, len(parts), counts.imputed, cfg.format,
                               dict(zip(PATHS, counts.by_path)), counts.out_of_domain,
                               {c: n for c, n in zip(schema.INPUT_BITS, counts.by_input) if c in model.inputs},
                               prior_info, f"{dest}/{PREDICTIONS_REPORT_DIR}/{INDEX}" if cfg.report else None)
        out.commit({"dataset": ds.path, "model": str(model_dir), "format": cfg.format,
                    "classes": list(model.classes_), "imputed_bits": list(schema.INPUT_BITS),
                    "out_of_domain_bits": list(schema.INPUT_BITS), **result.summary(), "stage": "predict",
                    "seconds": time.perf_counter() - t0}, parts)
    return result


def _target_priors(cfg: PredictConfig, client, model: SoftmaxModel, model_f, ds) -> tuple:
    """(the class mix to re-weight to or None, what the manifest records of it)."""
    target = priors.parse(cfg.priors)
    if target is None:
        return None, None
    if target != priors.ESTIMATE:
        return target, {"target": list(target), "estimated": False}
    parts = [client.submit(prior_sums_file, f, model_f, pure=False) for f in ds.files]
    track(parts, "priors: EM sums", cfg.quiet, gather=False)
    sums = OnCluster(client, cfg.quiet).tree_sum(_add, parts)  # added on the workers: one histogram comes back
    est = priors.estimate(sums, model.path_priors())
    note = "" if est.converged else f" (not converged after {est.iterations} iterations)"
    log("class priors estimated by EM on the rows to classify: "
        + ", ".join(f"{c} {p:.3f}" for c, p in zip(schema.CLASSES, est.priors)) + note
        + " (the model was trained on "
        + ", ".join(f"{c} {p:.3f}" for c, p in zip(schema.CLASSES, model.path_priors()[0])) + ")")
    return est.priors, {"target": list(est.priors), "estimated": True, "iterations": est.iterations,
                        "converged": est.converged, "rows": est.rows}


def counts_in(path: Location) -> RowCounts:
    """Worker task: what a written predictions file holds (imputed rows, rows per path, out-of-domain rows)."""
    with parquet_file(path) as pf:
        t = pf.read(columns=[schema.IMPUTED, schema.SCORED_BY, schema.OUT_OF_DOMAIN])
    phot = (t.column(1).combine_chunks().indices.to_numpy() if t.num_rows else np.zeros(0, np.int8)).astype(bool)
    return row_counts(t.column(0).to_numpy(), phot, t.column(2).to_numpy())


def _count(client, paths: list, quiet: bool) -> RowCounts:
    """The counts of the written files ``paths``, read back on the workers."""
    return sum(track(client.map(counts_in, paths, pure=False), "count", quiet), RowCounts())
