"""Reports: what a person reads about a model, an evaluation or a set of predictions.

==============  ==============================================================================================
``sums``        fixed-size counts per block of rows (r and redshift bins, colour-colour cells, the sky grid,
                probability histograms, masks), added on the workers
``figures``     matplotlib figures drawn from the summed counts (and the labelled rows' metrics)
``page``        the HTML page: figures, key numbers, provenance
``provenance``  inputs, options, versions, cluster, time per stage, the training run
``stage``       ``run(cfg, client)``: predictions -> a report (what ``astrodask report`` runs)
==============  ==============================================================================================
"""

from __future__ import annotations

from .stage import ReportConfig, ReportResult, run

__all__ = ["ReportConfig", "ReportResult", "run"]
