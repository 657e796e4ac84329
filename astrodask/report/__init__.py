"""Reports: what a person reads about a model, an evaluation or a set of predictions.

==============  ==============================================================================================
``sums``        fixed-size counts per block of rows (r and redshift bins, colour-colour cells, the sky grid,
                probability histograms, masks)
``collect``     the worker tasks that make those sums from predictions or a model's holdout, added on the workers
``figures``     matplotlib figures drawn from the summed counts (and the labelled rows' metrics)
``page``        the HTML page: figures, key numbers, provenance
``provenance``  inputs, options, versions, cluster, time per stage, the training run
``build``       one report written from its inputs (used by train, predict --report, evaluate and report)
``stage``       ``run(cfg, client)``: predictions -> a report (what ``astrodask report`` runs)
==============  ==============================================================================================

Every module but ``stage`` is a library that train, predict and evaluate use to describe their outputs; the
stage is imported on first use of its names, so those stages never load it.
"""

from __future__ import annotations

__all__ = ["ReportConfig", "ReportResult", "run"]


def __getattr__(name):
    if name in __all__:
        from . import stage

        return getattr(stage, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
