"""The ``report`` stage: predictions (labelled or not) -> an HTML report drawn from sums made on the workers.

Predictions keep their input's rows in the same order, file by file, so each worker task reads one predictions
file and the dataset file it was made from (magnitudes for the r bins and colour-colour diagrams), checks that
their ids line up, and returns fixed-size :class:`~.sums.PartSums`; they are added on the workers
(``cluster.backend.OnCluster.tree_sum``) and only the total reaches the client.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .. import labels, schema
from ..cluster.backend import OnCluster
from ..console import log, track
from ..dataset import open_dataset, read_part
from ..errors import AstrodaskError
from ..metrics import METRICS_JSON, Metrics, block_stats, finalize
from ..options import JobFlags
from ..storage import Location, StagedOutput, parquet_file, read_json, read_meta
from . import provenance
from .sums import PartSums, Range, add, figure_sums

MODEL_REPORT_DIR = "report"
"""Where ``train`` puts the model's report, inside the model directory."""
PREDICTIONS_REPORT_DIR = "_report"
"""Where ``predict --report`` puts it, inside the predictions: a leading ``_``, so that Parquet readers
(pyarrow, pandas, Dask, Spark) take the predictions directory as a dataset without it."""
BANDS = ("u", "g", "r", "i")
"""The magnitudes the figures bin (r; u-g, g-r, r-i)."""
PRED_COLUMNS = (schema.ID, *schema.PROBS, schema.IMPUTED, schema.SCORED_BY, schema.OUT_OF_DOMAIN, schema.CLASS,
                "alpha", "delta", schema.REDSHIFT, *BANDS)


def _floats(df, c):
    return df[c].to_numpy(np.float64, na_value=np.nan) if c in df.columns else None


def frame_sums(df, proba, photometric=None, imputed=None, out_of_domain=None) -> PartSums:
    """The sums of rows in ``df`` (canonical columns: class when labelled, u g r i, redshift, alpha, delta)."""
    y = labels.encode(df[schema.CLASS], where="class").astype(np.int64) if schema.CLASS in df.columns else \
        np.full(len(df), -1, np.int64)
    cols = {c: _floats(df, c) for c in (*BANDS, schema.REDSHIFT, "alpha", "delta") if c in df.columns}
    return PartSums(block_stats(y, proba, photometric),
                    figure_sums(proba, cols, y, photometric, imputed, out_of_domain))


def predictions_task(pred_file, data_file=None) -> PartSums:
    """Worker task: the sums of one predictions file (with the magnitudes of its dataset file, when given)."""
    with parquet_file(pred_file) as pf:
        have = set(pf.schema_arrow.names)
    df = read_part(pred_file, [c for c in PRED_COLUMNS if c in have])
    if data_file is not None:
        with parquet_file(data_file) as pf:
            extra = [c for c in (*BANDS, schema.REDSHIFT) if c in pf.schema_arrow.names and c not in df.columns]
        data = read_part(data_file, [schema.ID, *extra])
        if len(data) != len(df) or not np.array_equal(data[schema.ID].to_numpy(), df[schema.ID].to_numpy()):
            raise AstrodaskError(f"{pred_file}: its rows do not line up with {data_file} (the dataset it was made "
                                 "from changed?); rerun predict")
        for c in extra:
            df[c] = data[c].to_numpy()
    proba = df[list(schema.PROBS)].to_numpy(np.float64)
    phot = (df[schema.SCORED_BY].astype(str) == "photometric").to_numpy() if schema.SCORED_BY in df.columns else None
    return frame_sums(df, proba, phot, _opt_mask(df, schema.IMPUTED), _opt_mask(df, schema.OUT_OF_DOMAIN))


def _opt_mask(df, c):
    return df[c].to_numpy(np.uint16) if c in df.columns else None


def sums_of(client, pred_files, data_files=None, quiet: bool = False) -> PartSums:
    """The total of ``predictions_task`` over the files, added on the workers."""
    data_files = list(data_files) if data_files is not None else [None] * len(pred_files)
    futs = client.map(predictions_task, list(pred_files), data_files, pure=False)
    track(futs, "report sums", quiet, gather=False)
    return OnCluster(client, quiet).tree_sum(add, futs)


def dataset_of(pred_loc: Location, meta: dict, storage_options) -> object | None:
    """The dataset predictions were made from, when it is still there and unchanged (else None, with why)."""
    path = meta.get("dataset")
    if not path:
        return None
    try:
        data = open_dataset(Location.of(path, storage_options))
    except AstrodaskError as exc:
        log(f"the dataset these predictions were made from is not readable ({exc}): the figures by magnitude "
            "and the colour-colour diagrams are left empty")
        return None
    made_from = ((meta.get("fingerprint") or {}).get("dataset"))
    if made_from is not None and made_from != data.identity():
        raise AstrodaskError(f"{path} changed since the predictions {pred_loc} were made from it; rerun predict")
    return data


def paired_files(pred_files, data) -> list | None:
    """The dataset file of each predictions file (same name), or None when they do not pair up."""
    if data is None:
        return None
    by_name = {f.name: f for f in data.files}
    out = [by_name.get(f.name) for f in pred_files]
    return out if all(x is not None for x in out) else None


def ranges_of(model) -> dict:
    """Input -> the training data's ``Range`` (the model's domain: r, and redshift for a spectroscopic one)."""
    if model is None or model.domain is None:
        return {}
    d = model.domain
    return {c: Range(lo, hi, d.level.get(c, 0.001)) for c, (lo, hi) in d.bounds.items()
            if c in ("r", schema.REDSHIFT)}


def training_run(metrics: Metrics, history: list) -> provenance.TrainingRun | None:
    """The learning curve's record of the training behind holdout ``metrics``."""
    t = metrics.train or {}
    if not history or "best_epoch" not in t:
        return None
    why = {"early_stop": f"the validation {t.get('monitor', 'accuracy')} did not improve by "
                         f"{t.get('min_improvement')} for {t.get('patience')} epochs",
           "converged": "the optimiser converged", "max_epochs": "it reached the epoch limit"}
    rule = (f"keep the epoch with the best validation {t.get('monitor', 'accuracy')}; stop when it has not improved "
            f"by at least {t.get('min_improvement')} for {t.get('patience')} epochs (patience), when the optimiser "
            f"converges, or at the epoch limit. Mode {t.get('mode')}, features {t.get('features')}.")
    return provenance.TrainingRun(history, int(t["best_epoch"]), why.get(t.get("stop"), str(t.get("stop"))), rule)


def stage_times(*metas) -> tuple:
    """(stage, seconds) records of the outputs' manifests that recorded their wall time."""
    return tuple(provenance.StageTime(m["stage"], float(m["seconds"])) for m in metas
                 if m and m.get("seconds") is not None and m.get("stage"))


# ------------------------------------------------------------------------------------------------ the stage


@dataclass(frozen=True)
class ReportConfig(JobFlags):
    """The ``report`` stage: predictions -> an HTML report (class fractions and probabilities by magnitude, the
    domain, colour-colour diagrams, the sky; accuracy and calibration too when the rows have true classes)."""

    predictions: str
    """Predictions written by ``astrodask predict`` (a local path or an fsspec URL)."""
    out: str = field(metadata={"metavar": "DIR"})
    """Where index.html, its figures and sums.npz go (a directory or URL)."""

    def __post_init__(self):
        self.check_flags()


@dataclass(frozen=True)
class ReportResult:
    out: str
    rows: int
    labelled: int
    metrics: Metrics | None = None

    def lines(self) -> list[str]:
        out = [f"report: {self.out}/index.html ({self.rows:,} rows, {self.labelled:,} with a true class)"]
        if self.metrics is not None:
            out.append(self.metrics.line())
        return out


def write_report(client, dest: Location, pred: Location, meta: dict, pred_files, storage_options, quiet: bool,
                 stages=()) -> ReportResult:
    """Compute the sums of predictions ``pred_files`` (with their dataset's magnitudes) and write the page into
    ``dest`` (called by the report stage and by ``predict --report``)."""
    t0 = time.perf_counter()
    data = dataset_of(pred, meta, storage_options)
    pairs = paired_files(pred_files, data)
    if data is not None and pairs is None:
        log(f"the predictions' files do not pair with {data.path}'s: figures by magnitude are left empty")
    sums = sums_of(client, pred_files, pairs, quiet)
    model = load_model(meta, storage_options)
    metrics = finalize(sums.metrics) if sums.metrics.n else None
    model_meta = read_meta(Location.of(meta["model"], storage_options)) if meta.get("model") else {}
    inputs = [provenance.input_record("predictions", pred, meta)]
    if data is not None:
        inputs.append(provenance.input_record("dataset", data.location, read_meta(data.location)))
    if meta.get("model"):
        inputs.append(provenance.input_record("model", meta["model"], model_meta))
    options = {"priors": meta.get("priors"), "format": meta.get("format", "parquet")}
    times = (*stage_times(read_meta(data.location) if data is not None else {}, _train_meta(meta, storage_options),
                          meta), *stages, provenance.StageTime("report sums", time.perf_counter() - t0))
    prov = provenance.make(client, inputs, options, times)
    from . import page  # matplotlib loads only where a report is drawn

    page.write(dest, sums.figures, metrics, kind="evaluation" if metrics is not None else "predictions",
               title="astrodask report: predictions" + (" with true classes" if metrics is not None else ""),
               ranges=ranges_of(model), provenance=prov)
    return ReportResult(str(dest), sums.figures.n_rows, sums.figures.n_labelled, metrics)


def load_model(meta: dict, storage_options):
    from ..model import SoftmaxModel

    if not meta.get("model"):
        return None
    try:
        return SoftmaxModel.load(Location.of(meta["model"], storage_options))
    except AstrodaskError as exc:
        log(f"the model of these predictions is not readable ({exc}): the training range is not marked")
        return None


def _train_meta(meta: dict, storage_options) -> dict:
    """The model's training record as a stage-time record (its wall time is in metrics.json)."""
    if not meta.get("model"):
        return {}
    try:
        t = read_json(Location.of(meta["model"], storage_options) / METRICS_JSON).get("train") or {}
    except (FileNotFoundError, ValueError, OSError):
        return {}
    return {"stage": "train", "seconds": t.get("seconds")}


def run(cfg: ReportConfig, client) -> ReportResult:
    """Write the report of ``cfg.predictions`` into ``cfg.out``, committed atomically."""
    so = cfg.storage_options
    src = Location.of(cfg.predictions, so)
    ds = open_dataset(src, kind="predictions")
    ds.require(list(schema.PROBS), "to report on predictions")
    meta = read_meta(src)
    if meta.get("format") == "hats":
        raise AstrodaskError(f"{src} is a HATS catalogue: its rows are ordered by sky position, not as the dataset's, "
                             "so its report is made when it is written: astrodask predict --format hats --report")
    dest = Location.of(cfg.out, so)
    fp = {"stage": "report", "predictions": ds.identity()}
    with StagedOutput(dest, cfg.overwrite, cfg.resume, kind="report", fingerprint=fp, inputs=(src,)) as out:
        if out.done:
            done = read_meta(dest)
            return ReportResult(str(dest), int(done.get("rows", 0)), int(done.get("labelled", 0)))
        t0 = time.perf_counter()
        result = write_report(client, out.staging, src, meta, ds.files, so, cfg.quiet)
        out.commit({"predictions": ds.path, "rows": result.rows, "labelled": result.labelled, "stage": "report",
                    "seconds": time.perf_counter() - t0})
    return ReportResult(str(dest), result.rows, result.labelled, result.metrics)
