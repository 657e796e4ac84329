"""The ``train`` stage: a Parquet dataset -> a model directory (model.json, weights.npz, metrics.json,
history.json, report/), written through ``storage.StagedOutput``.

The dataset's rows are split by a hash of ``obj_ID`` (:data:`dataset.HOLDOUT`): 70 % train, 10 % validate (early
stopping), 20 % are the holdout on which ``metrics.json`` is computed. Rows without a class train nothing and
are left out of the metrics (their number is logged and stored). The staging directory holds the fitted
features and the loop's checkpoint, so ``resume`` continues an interrupted training where it stopped.
"""

from __future__ import annotations

import importlib
import threading
import time
from dataclasses import asdict, dataclass, replace

from .. import schema
from ..cluster.backend import OnCluster
from ..console import log
from ..dataset import HOLDOUT, open_dataset
from ..features import raw_columns, resolve_feature_set
from ..metrics import METRICS_JSON, Metrics, finalize
from ..model import HISTORY_JSON
from ..report.build import INDEX, MODEL_REPORT_DIR, page_of
from ..report.collect import holdout_sums
from ..storage import Location, StagedOutput, read_json, read_meta, write_json_atomic
from .config import TrainConfig, digest
from .loop import EpochRecord
from .trainer import Fitted, Workspace, clear, fit


@dataclass(frozen=True)
class TrainResult:
    """What ``run`` made."""

    model_dir: str
    metrics: Metrics
    """The holdout metrics (``metrics.json``), with the training run in ``metrics.train``."""
    history: tuple[EpochRecord, ...]
    """One record per epoch (``history.json``)."""
    report: str | None = None
    """The report's page, when the model directory has one (not with ``--no-report``)."""

    def lines(self) -> list[str]:
        return [f"model: {self.model_dir}", f"holdout: {self.metrics.line()}",
                *([f"report: {self.report}"] if self.report else [])]


def _training_record(fitted: Fitted, cfg: TrainConfig) -> dict:
    """How one model was trained, for ``metrics.json`` and the report."""
    return {"mode": cfg.mode, "features": cfg.features, "epochs": len(fitted.history),
            "best_epoch": fitted.best_epoch, "stop": fitted.stop, "seconds": fitted.seconds,
            "rows": int(fitted.counts.train.sum()), "unlabelled_rows": fitted.counts.unlabelled,
            "unusable_rows": fitted.counts.unusable, "patience": fitted.patience,
            "min_improvement": cfg.min_improvement, "monitor": cfg.monitor, "cache": fitted.cache,
            "warm_start": fitted.warm.to_json() if fitted.warm is not None else None}


def _report(client, dest, ds, cfg: TrainConfig, model, figures, metrics: Metrics, history, seconds: float) -> None:
    """The model's report: the holdout's figures, the learning curve, provenance."""
    from ..report import page, provenance
    from ..report.build import ranges_of, training_run

    prov = provenance.make(client, [provenance.input_record("dataset", ds.location, read_meta(ds.location))],
                           asdict(cfg.options()), [provenance.StageTime("train", seconds)])
    page.write(dest, figures, metrics, kind="model", title=f"astrodask model: {cfg.features}, {cfg.mode}",
               ranges=ranges_of(model), training=training_run(metrics, history), provenance=prov, client=client)


def run(cfg: TrainConfig, client) -> TrainResult:
    """Train a model on ``cfg.dataset``; write it with its holdout metrics and report to ``cfg.model_dir``.

    With ``resume``, a complete model made from the same dataset and settings is kept as it is; an interrupted
    training continues from its last checkpoint.
    """
    ds = open_dataset(Location.of(cfg.dataset, cfg.storage_options))
    empty = [c for c, n in (ds.null_counts or {}).items() if n is not None and n >= ds.n_rows]
    features = resolve_feature_set(cfg.features, ds.columns, empty, cfg.morphology)
    if features != cfg.features:
        log(f"features: {features} (the dataset has PSF magnitudes; --no-morphology leaves them out)")
        cfg = replace(cfg, features=features)
    why = f"to train with --features {cfg.features}"
    ds.require([schema.CLASS, *raw_columns(cfg.features)], why)
    ds.require_values(raw_columns(cfg.features), why)
    # a spectroscopic model's rows without a usable redshift are scored by a photometric model of the same rows
    companion = resolve_feature_set("photometric", ds.columns, empty, cfg.morphology) \
        if cfg.features == "spectroscopic" else None
    dest = Location.of(cfg.model_dir, cfg.storage_options)
    if cfg.report:  # matplotlib (~0.6 s) loads while the workers train: the client is idle then
        threading.Thread(target=importlib.import_module, args=("astrodask.report.page",), daemon=True).start()
    t0 = time.perf_counter()
    fingerprint = cfg.fingerprint(ds.identity())
    with StagedOutput(dest, cfg.overwrite, cfg.resume, kind="model", fingerprint=fingerprint,
                      inputs=(ds.location,)) as out:
        if out.done:
            return TrainResult(str(dest), Metrics.from_json(read_json(dest / METRICS_JSON)),
                               tuple(EpochRecord.from_json(r) for r in read_json(dest / HISTORY_JSON)),
                               page_of(dest / MODEL_REPORT_DIR))
        backend = OnCluster(client, cfg.quiet)
        workspace = Workspace(out.staging, digest(fingerprint), cfg.resume)

        def shuffle(spec, weights):
            from .incremental import shuffled_blocks

            return shuffled_blocks(backend, ds, spec, weights, HOLDOUT, cfg.seed)

        fitted = fit(backend, list(ds.files), ds.n_rows, cfg.options(), HOLDOUT, where=ds.path, workspace=workspace,
                     shuffle=shuffle, quiet=cfg.quiet,
                     config={k: v for k, v in asdict(cfg).items() if k not in cfg.flags()}, companion=companion)
        model = fitted.model
        train = _training_record(fitted, cfg)
        if fitted.companion is not None:
            train["companion"] = _training_record(fitted.companion, replace(cfg, features=companion))
        sums = holdout_sums(client, model, ds.files, quiet=cfg.quiet)
        metrics = replace(finalize(sums.metrics), train=train)
        history = [r.to_json() for r in fitted.history]
        model.save(out.staging)
        write_json_atomic(out.staging / METRICS_JSON, metrics.to_json())
        write_json_atomic(out.staging / HISTORY_JSON, history)
        if cfg.report:
            _report(client, out.staging / MODEL_REPORT_DIR, ds, cfg, model, sums.figures, metrics, history,
                    time.perf_counter() - t0)
        clear(workspace)
        out.commit({"dataset": ds.path, "accuracy": metrics.accuracy, "stage": "train",
                    "seconds": time.perf_counter() - t0})
    return TrainResult(str(dest), metrics, tuple(fitted.history),
                       str(dest / MODEL_REPORT_DIR / INDEX) if cfg.report else None)
