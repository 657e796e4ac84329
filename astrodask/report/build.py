"""Writing a report page: the inputs' provenance, the model's training range and learning curve, and the page
drawn from the summed figures. Used by ``train``, ``predict --report``, ``evaluate`` and ``report``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from .. import schema
from ..console import log
from ..dataset import open_dataset
from ..errors import AstrodaskError
from ..metrics import METRICS_JSON, Metrics, finalize
from ..storage import Location, read_json, read_meta
from . import provenance
from .collect import sums_of
from .sums import INDEX, PartSums, Range

MODEL_REPORT_DIR = "report"
"""Where ``train`` puts the model's report, inside the model directory."""
PREDICTIONS_REPORT_DIR = "_report"
"""Where ``predict --report`` puts it, inside the predictions: a leading ``_``, so that Parquet readers
(pyarrow, pandas, Dask, Spark) take the predictions directory as a dataset without it."""


def page_of(report_dir: Location) -> str | None:
    """The page of the report in ``report_dir``, or None when no report was written there."""
    page = report_dir / INDEX
    return str(page) if page.exists() else None


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


@dataclass(frozen=True)
class Gathered:
    """A report's sums and the dataset whose magnitudes went into them (None: the figures by magnitude are
    empty)."""

    sums: PartSums
    data: object | None


def gather(client, pred: Location, meta: dict, pred_files, storage_options, quiet: bool,
           magnitudes: bool = True) -> Gathered:
    """The sums of predictions ``pred_files`` made on the workers, with the magnitudes of the dataset they were
    made from (``magnitudes``: when it is still there, unchanged, and its files pair with theirs)."""
    data = dataset_of(pred, meta, storage_options) if magnitudes else None
    pairs = paired_files(pred_files, data)
    if data is not None and pairs is None:
        log(f"the predictions' files do not pair with {data.path}'s: figures by magnitude are left empty")
        data = None
    return Gathered(sums_of(client, pred_files, pairs, quiet), data)


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


@dataclass(frozen=True)
class ReportResult:
    out: str
    rows: int
    labelled: int
    metrics: Metrics | None = None

    def lines(self) -> list[str]:
        out = [f"report: {self.out}/{INDEX} ({self.rows:,} rows, {self.labelled:,} with a true class)"]
        if self.metrics is not None:
            out.append(self.metrics.line())
        return out


def write_report(client, dest: Location, pred: Location, meta: dict, pred_files, storage_options, quiet: bool,
                 stages=()) -> ReportResult:
    """Compute the sums of predictions ``pred_files`` (with their dataset's magnitudes) and write the page into
    ``dest`` (called by the report stage and by ``predict --report``)."""
    t0 = time.perf_counter()
    g = gather(client, pred, meta, pred_files, storage_options, quiet)
    sums, data = g.sums, g.data
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
               ranges=ranges_of(model), provenance=prov, client=client)
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
