"""Sums on the workers: each task reads one file (predictions, or a dataset's holdout rows scored by a model)
and returns fixed-size :class:`~.sums.PartSums`; they are added on the workers
(``cluster.backend.OnCluster.tree_sum``) and only the total reaches the client.

Used by ``train`` (its holdout), ``predict --report``, ``evaluate`` and ``report``.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .. import labels, schema
from ..cluster.backend import OnCluster
from ..console import track
from ..dataset import HOLDOUT, TEST, read_part
from ..errors import AstrodaskError
from ..metrics import Metrics, block_stats, finalize
from ..storage import parquet_file
from .sums import PartSums, add, figure_sums

BANDS = ("u", "g", "r", "i")
"""The magnitudes the figures bin (r; u-g, g-r, r-i)."""
PRED_COLUMNS = (schema.ID, *schema.PROBS, schema.IMPUTED, schema.SCORED_BY, schema.OUT_OF_DOMAIN, schema.CLASS,
                "alpha", "delta", schema.REDSHIFT, *BANDS)


def frame_sums(df, proba, photometric=None, imputed=None, out_of_domain=None) -> PartSums:
    """The sums of rows in ``df`` (canonical columns: class when labelled, u g r i, redshift, alpha, delta)."""
    y = labels.encode(df[schema.CLASS], where="class").astype(np.int64) if schema.CLASS in df.columns else \
        np.full(len(df), -1, np.int64)
    cols = {c: schema.float64_values(df[c]) for c in (*BANDS, schema.REDSHIFT, "alpha", "delta") if c in df.columns}
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


def _holdout_task(file: str, model) -> PartSums:
    cols = list(dict.fromkeys([schema.ID, schema.CLASS, "alpha", "delta", schema.REDSHIFT, schema.ZWARNING,
                               *model.inputs]))
    with parquet_file(file) as pf:
        have = set(pf.schema_arrow.names)
    df = read_part(file, [c for c in cols if c in have])
    df = df[HOLDOUT.of(df[schema.ID].to_numpy()) == TEST]
    y = labels.encode(df[schema.CLASS], where=f"{file}: column {schema.CLASS}").astype(np.int64)
    unlabelled = int((y < 0).sum())
    df = df[y >= 0]  # unlabelled holdout rows are not scored: only counted
    s = model.score(df)
    part = frame_sums(df, s.proba, s.photometric, s.imputed, s.out_of_domain)
    return PartSums(replace(part.metrics, n_unlabelled=unlabelled), part.figures)


def holdout_sums(client, model, files, quiet: bool = False) -> PartSums:
    """The sums of ``model`` on the labelled rows of the holdout split (``dataset.HOLDOUT``) of a dataset's files,
    added on the workers."""
    futs = client.map(_holdout_task, list(files), model=model, pure=False)
    track(futs, "evaluate", quiet, gather=False)
    return OnCluster(client, quiet).tree_sum(add, futs)


def holdout(client, model, files, quiet: bool = False) -> Metrics:
    """Metrics of ``model`` on the labelled rows of the holdout split (``dataset.HOLDOUT``) of a dataset."""
    return finalize(holdout_sums(client, model, files, quiet).metrics)
