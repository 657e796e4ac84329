"""The ``evaluate`` stage: predictions with true classes -> metrics (and a report), from sums made on the workers.

Each predictions file's task returns fixed-size sums (``report.collect``); they are added on the workers and only
the total reaches the client, which derives the :class:`~astrodask.metrics.Metrics` and draws the report.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from . import schema
from .console import log
from .dataset import open_dataset
from .errors import AstrodaskError
from .metrics import HOLDOUT_JSON, METRICS_JSON, Metrics, finalize
from .options import JobFlags
from .report import build, provenance
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
    report: bool = True
    """Draw the figures and index.html beside metrics.json in --out (--no-report: metrics.json only)."""

    def __post_init__(self):
        self.check_flags()


@dataclass(frozen=True)
class EvaluateResult:
    """What ``evaluate.run`` found (and where it wrote it, when it did)."""

    metrics: Metrics
    out: str | None = None
    holdout: Metrics | None = None
    report: str | None = None
    """The report's page, when one was drawn."""

    def lines(self) -> list[str]:
        out = [self.metrics.line()]
        out += [f"  {c:7s} precision {v.precision:.4f}  recall {v.recall:.4f}  F1 {v.f1:.4f}"
                for c, v in self.metrics.per_class.items()]
        if self.out:
            out.append(f"metrics: {self.out}/{METRICS_JSON}" + (f"  report: {self.report}" if self.report else ""))
        return out


def run(cfg: EvaluateConfig, client) -> EvaluateResult:
    """Evaluate ``cfg.predictions``; with ``cfg.out``, write metrics.json, the figures and index.html there,
    committed atomically (with ``resume``, an evaluation already made of the same predictions is kept)."""
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
        sums = build.gather(client, src, {}, ds.files, so, cfg.quiet, magnitudes=False).sums
        return EvaluateResult(finalize(sums.metrics), None, held)
    meta = read_meta(src)
    dest = Location.of(cfg.out, so)
    fp = {"stage": "evaluate", "predictions": ds.identity(), "holdout": held.to_json() if held else None}
    inputs = (ds.location,) + ((model_dir,) if model_dir else ())
    with StagedOutput(dest, cfg.overwrite, cfg.resume, kind="evaluation", fingerprint=fp, inputs=inputs) as out:
        if out.done:
            page_loc = build.page_of(dest)
            if cfg.report and page_loc is None:
                log(f"{dest}: the finished evaluation has no report; draw one with --overwrite")
            return EvaluateResult(Metrics.from_json(read_json(dest / METRICS_JSON)), str(dest), held, page_loc)
        t0 = time.perf_counter()
        # the dataset's magnitudes are read for the report's figures only
        g = build.gather(client, src, meta, ds.files, so, cfg.quiet,
                         magnitudes=cfg.report and meta.get("format") != "hats")
        metrics = finalize(g.sums.metrics)
        write_json_atomic(out.staging / METRICS_JSON, metrics.to_json())
        if held is not None:
            write_json_atomic(out.staging / HOLDOUT_JSON, held.to_json())
        if cfg.report:
            _page(client, out.staging, src, meta, g.data, g.sums.figures, metrics, cfg, held is not None,
                  time.perf_counter() - t0)
        out.commit({"predictions": ds.path, "accuracy": metrics.accuracy, "stage": "evaluate",
                    "seconds": time.perf_counter() - t0})
    return EvaluateResult(metrics, str(dest), held, str(dest / build.INDEX) if cfg.report else None)


def _page(client, dest, src, meta, data, figures, metrics: Metrics, cfg: EvaluateConfig, whole: bool,
          seconds: float) -> None:
    """The evaluation's report: its figures, provenance and index.html, into ``dest``."""
    from .report import page  # matplotlib loads only where a report is drawn

    title = "astrodask: predictions on the whole dataset" if whole else "astrodask evaluation"
    inputs = [provenance.input_record("predictions", src, meta)]
    if data is not None:
        inputs.append(provenance.input_record("dataset", data.location, read_meta(data.location)))
    prov = provenance.make(client, inputs, {"holdout": cfg.holdout},
                           (*build.stage_times(meta), provenance.StageTime("evaluate", seconds)))
    rows = ("All predicted rows (training, validation and holdout rows together; the holdout alone is in "
            f"{HOLDOUT_JSON})") if whole else None
    page.write(dest, figures, metrics, kind="evaluation", title=title, subtitle=rows,
               ranges=build.ranges_of(build.load_model(meta, cfg.storage_options)), provenance=prov,
               client=client)
