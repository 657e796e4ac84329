"""The ``report`` stage: predictions (labelled or not) -> an HTML report drawn from sums made on the workers.

Predictions keep their input's rows in the same order, file by file, so each worker task reads one predictions
file and the dataset file it was made from (magnitudes for the r bins and colour-colour diagrams), checks that
their ids line up, and returns fixed-size :class:`~.sums.PartSums`; they are added on the workers
(``cluster.backend.OnCluster.tree_sum``) and only the total reaches the client.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .. import schema
from ..dataset import open_dataset
from ..errors import AstrodaskError
from ..options import JobFlags
from ..storage import Location, StagedOutput, read_meta
from .build import ReportResult, write_report


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
