"""The ``evaluate`` stage: predictions with true classes -> metrics (and a report), from sums made on the workers.

Each predictions file's task returns fixed-size sums (``report.collect``); they are added on the workers and only
the total reaches the client, which derives the :class:`~astrodask.metrics.Metrics` and draws the report.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from . import schema
from .dataset import open_dataset
from .errors import AstrodaskError
from .metrics import HOLDOUT_JSON, METRICS_JSON, Metrics, finalize
from .options import JobFlags
from .report import build, provenance
from .report.collect import sums_of
from .storage import Location, StagedOutput, read_json, read_meta, write_json_atomic

# ------------------------------------------------------------------------------------------------ the stage


@dataclass(frozen=True)
class EvaluateConfig(JobFlags):
    """The ``evaluate`` stage: a predictions dataset with true labels -> metrics (and, with ``out``, a report)."""

    predictions: str
    """Predictions written by ``astrodask predict`` that carry the true ``class`` (a local path or an fsspec URL)."""
    out: str | None = field(default=None, metadata={"metavar": "DIR"})
    """Where metrics.json, the figures and index.html go (a directory or URL); without it the metrics are only
    printed."""
    holdout: str | None = field(default=None, metadata={"metavar": "MODEL_DIR"})
    """A model directory whose holdout metrics are copied beside the evaluation (holdout_metrics.json), so the
    report tells the rows the model never trained on apart from all of them."""

    def __post_init__(self):
        self.check_flags()


@dataclass(frozen=True)
class EvaluateResult:
    """What ``evaluate.run`` found (and where it wrote it, when it did)."""

    metrics: Metrics
    out: str | None = None
    holdout: Metrics | None = None

    def lines(self) -> list[str]:
        out = [self.metrics.line()]
        out += [f"  {c:7s} precision {v.precision:.4f}  recall {v.recall:.4f}  F1 {v.f1:.4f}"
                for c, v in self.metrics.per_class.items()]
        if self.out:
            out.append(f"metrics: {self.out}/{METRICS_JSON}  report: {self.out}/index.html")
        return out


def run(cfg: EvaluateConfig, client) -> EvaluateResult:
    """Evaluate ``cfg.predictions``; with ``cfg.out``, write metrics.json, the figures and index.html there,
    committed atomically (with ``resume``, an evaluation already made of the same predictions is kept)."""
    from .report import page  # matplotlib loads only where a report is drawn

    so = cfg.storage_options
    src = Location.of(cfg.predictions, so)
    ds = open_dataset(src, kind="predictions")
    ds.require([schema.CLASS, *schema.PROBS], "to evaluate predictions")
    model_dir = Location.of(cfg.holdout, so) if cfg.holdout else None
    held = None
    if model_dir is not None:
        try:
            held = Metrics.from_json(read_json(model_dir / METRICS_JSON))
        except FileNotFoundError:
            raise AstrodaskError(f"--holdout {model_dir}: no {METRICS_JSON}; give a model directory written by "
                                 "`astrodask train`") from None
        except (KeyError, TypeError, ValueError):
            raise AstrodaskError(f"--holdout {model_dir}: {METRICS_JSON} is not astrodask's metrics; give a model "
                                 "directory written by `astrodask train`") from None
    if not cfg.out:
        return EvaluateResult(finalize(sums_of(client, ds.files, None, cfg.quiet).metrics), None, held)
    meta = read_meta(src)
    dest = Location.of(cfg.out, so)
    fp = {"stage": "evaluate", "predictions": ds.identity(), "holdout": held.to_json() if held else None}
    inputs = (ds.location,) + ((model_dir,) if model_dir else ())
    with StagedOutput(dest, cfg.overwrite, cfg.resume, kind="evaluation", fingerprint=fp, inputs=inputs) as out:
        if out.done:
            return EvaluateResult(Metrics.from_json(read_json(dest / METRICS_JSON)), str(dest), held)
        t0 = time.perf_counter()
        data = build.dataset_of(src, meta, so) if meta.get("format") != "hats" else None
        sums = sums_of(client, ds.files, build.paired_files(ds.files, data), cfg.quiet)
        metrics = finalize(sums.metrics)
        write_json_atomic(out.staging / METRICS_JSON, metrics.to_json())
        if held is not None:
            write_json_atomic(out.staging / HOLDOUT_JSON, held.to_json())
        title = "astrodask: predictions on the whole dataset" if held else "astrodask evaluation"
        inputs_p = [provenance.input_record("predictions", src, meta)]
        if data is not None:
            inputs_p.append(provenance.input_record("dataset", data.location, read_meta(data.location)))
        prov = provenance.make(client, inputs_p, {"holdout": cfg.holdout},
                               (*build.stage_times(meta), provenance.StageTime("evaluate",
                                                                                      time.perf_counter() - t0)))
        rows = ("All predicted rows (training, validation and holdout rows together; the holdout alone is in "
                f"{HOLDOUT_JSON})") if held else None
        page.write(out.staging, sums.figures, metrics, kind="evaluation", title=title, subtitle=rows,
                   ranges=build.ranges_of(build.load_model(meta, so)), provenance=prov)
        out.commit({"predictions": ds.path, "accuracy": metrics.accuracy, "stage": "evaluate",
                    "seconds": time.perf_counter() - t0})
    return EvaluateResult(metrics, str(dest), held)
