"""What the workers hold and compute: rows, their split, feature blocks, and the cache policy.

Every function here is module-level and pure (no client, no globals), so it runs as a Dask task on a worker or
in this process for a pandas frame, and is tested without a cluster. An *item* is what one task works on: a
dataset file (a Location, read on the worker), a :class:`Rows` (rows already in memory: the estimator's), or a
:class:`FeatureBlock` (expanded features persisted on a worker).

Rows are split by a :class:`dataset.SplitRule` on a key (``obj_ID``, or a hash of the row's values): the
``train`` stage's ``dataset.HOLDOUT``, or the estimator's ``dataset.validation_split``. Unlabelled rows (no
class) are counted and left out of everything; so are, for a spectroscopic model, labelled rows whose redshift is
no measurement (``schema.usable_redshift``: its photometric companion learns from them).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from .. import labels, schema
from ..dataset import N_BUCKETS, TEST, TRAIN, VALID, SplitRule, read_part
from ..features import TAIL_LEVELS, FeatureSpec, base_matrix, quantile_summary, raw_columns
from .loss import SplitSums, block_sums

K = len(schema.CLASSES)
SPLITS = (TRAIN, VALID, TEST)


# ------------------------------------------------------------------------------------------------ rows


class Rows(NamedTuple):
    """Rows in memory: the model's raw inputs, their labels and split keys."""

    frame: pd.DataFrame
    """The raw columns the feature set reads (``features.raw_columns``), float, NaN where missing."""
    labels: np.ndarray
    """Class index of each row (int8), ``labels.UNLABELLED`` (-1) when the row has no class, ``labels.UNUSABLE``
    (-3) when the model does not learn from it (no usable redshift for a spectroscopic model)."""
    keys: np.ndarray
    """uint64 key of each row for the split (``obj_ID``, or a hash of the row's values)."""
    zwarning: np.ndarray | None = None
    """SDSS's redshift-fit warning bits of each row (float, NaN: none recorded), when the source has them."""


def usable(labels_: np.ndarray, frame: pd.DataFrame, feature_set: str, zwarning=None) -> np.ndarray:
    """``labels_`` with the labelled rows the feature set cannot learn from marked ``labels.UNUSABLE``: for the
    spectroscopic set, rows whose redshift is no measurement (``schema.usable_redshift``)."""
    if feature_set != "spectroscopic":
        return labels_
    ok = schema.usable_redshift(frame[schema.REDSHIFT].to_numpy(np.float64, na_value=np.nan), zwarning)
    return np.where((labels_ >= 0) & ~ok, labels.UNUSABLE, labels_).astype(np.int8)


def rows_from_frame(df: pd.DataFrame, feature_set: str, where: str = "a partition") -> Rows:
    """Rows of a frame in the dataset's columns (``obj_ID``, ``class`` and ``zwarning`` when present, the raw
    inputs)."""
    y = labels.encode(df[schema.CLASS], where=f"{where}: column {schema.CLASS}") if schema.CLASS in df.columns \
        else np.full(len(df), labels.UNLABELLED, np.int8)
    frame = df[list(raw_columns(feature_set))]
    zw = df[schema.ZWARNING].to_numpy(np.float64, na_value=np.nan) if schema.ZWARNING in df.columns else None
    return Rows(frame, usable(y, frame, feature_set, zw), df[schema.ID].to_numpy(np.uint64), zw)


def read_rows(file, feature_set: str) -> Rows:
    """One dataset file's rows (on a worker)."""
    from ..storage import parquet_file

    with parquet_file(file) as pf:
        have = set(pf.schema_arrow.names)
    cols = [c for c in (schema.ID, schema.CLASS, schema.ZWARNING) if c in have] + list(raw_columns(feature_set))
    return rows_from_frame(read_part(file, columns=list(dict.fromkeys(cols))), feature_set, where=str(file))


def rows_of(item, feature_set: str) -> Rows:
    """An item's rows as ``feature_set`` reads them: its raw columns, and labels marked where it cannot learn
    (in-memory rows may hold the columns of several feature sets: a spectroscopic model and its companion)."""
    if not isinstance(item, Rows):
        return read_rows(item, feature_set)
    cols = list(raw_columns(feature_set))
    frame = item.frame if list(item.frame.columns) == cols else item.frame[cols]
    return Rows(frame, usable(item.labels, item.frame, feature_set, item.zwarning), item.keys, item.zwarning)


# ------------------------------------------------------------------------------------------------ pass 1


class Summary(NamedTuple):
    """Pass 1 over one partition: fixed-size statistics of its labelled training rows, and counts."""

    raw: tuple
    """Quantile summary (``features.quantile_summary``) of the raw inputs at ``features.TAIL_LEVELS``: medians
    and the training domain's bounds."""
    base: tuple
    """Quantile summary of the base features."""
    base_by_class: tuple | None
    """One quantile summary of the base features per class (class-balanced knots), or None."""
    n: np.ndarray
    """Finite values of each base feature."""
    sum: np.ndarray
    sumsq: np.ndarray
    counts: np.ndarray
    """(split, class) labelled rows: row TRAIN, VALID, TEST."""
    unlabelled: int
    """Rows without a class (in every split), left out."""
    unusable: int = 0
    """Labelled rows the feature set cannot learn from (no usable redshift), left out."""


def summarise(item, feature_set: str, base_names: tuple[str, ...], rule: SplitRule,
              by_class: bool = False) -> Summary:
    """Quantile summaries of the raw inputs and base features (also per class with ``by_class``), their moments
    and the class counts."""
    rows = rows_of(item, feature_set)
    split = rule.of(rows.keys)
    known = rows.labels >= 0
    train = (split == TRAIN) & known
    tr = rows.frame[train]
    raw = tr[list(raw_columns(feature_set))].to_numpy(dtype="float64", na_value=np.nan)
    base = base_matrix(tr, base_names, None)
    finite = np.isfinite(base)
    b0 = np.where(finite, base, 0.0)
    counts = np.stack([np.bincount(rows.labels[(split == s) & known], minlength=K) for s in SPLITS])
    per_class = None
    if by_class:
        y = rows.labels[train]
        per_class = tuple(quantile_summary(base[y == k]) for k in range(K))
    return Summary(quantile_summary(raw, TAIL_LEVELS), quantile_summary(base), per_class, finite.sum(axis=0),
                   b0.sum(axis=0), (b0 * b0).sum(axis=0), counts, int((rows.labels == labels.UNLABELLED).sum()),
                   int((rows.labels == labels.UNUSABLE).sum()))


# ------------------------------------------------------------------------------------------------ blocks


class Part(NamedTuple):
    """The rows of one split of a block."""

    x: np.ndarray
    """Expanded features (rows, features), float32."""
    y: np.ndarray
    """Class index (int8)."""
    w: np.ndarray
    """Row weight (float32, the class weight)."""


class FeatureBlock(NamedTuple):
    """A partition's labelled training and validation rows as expanded features (holdout rows are not kept)."""

    train: Part
    valid: Part


def make_block(rows: Rows, spec: FeatureSpec, weights: np.ndarray, rule: SplitRule) -> FeatureBlock:
    """Expand the labelled TRAIN and VALID rows (standardised when ``spec`` has its scaler)."""
    from ..features import compiled
    split = rule.of(rows.keys)
    known = rows.labels >= 0
    parts = []
    for s in (TRAIN, VALID):
        m = (split == s) & known
        y = rows.labels[m]
        x = spec.standardise(compiled.expand(spec, rows.frame[m]))  # spec.expand, compiled
        parts.append(Part(x, y, weights[y].astype(np.float32)))
    return FeatureBlock(*parts)


def load_block(item, spec: FeatureSpec, weights: np.ndarray, rule: SplitRule) -> FeatureBlock:
    """A file's or Rows' feature block (the task whose results are persisted with the memory cache)."""
    return make_block(rows_of(item, spec.feature_set), spec, weights, rule)


def frame_block(df: pd.DataFrame, spec: FeatureSpec, weights: np.ndarray, rule: SplitRule) -> FeatureBlock:
    """The feature block of a frame in the dataset's columns (the incremental mode's shuffled partitions)."""
    return make_block(rows_from_frame(df, spec.feature_set), spec, weights, rule)


def block_of(item, spec: FeatureSpec, weights: np.ndarray, rule: SplitRule) -> FeatureBlock:
    return item if isinstance(item, FeatureBlock) else load_block(item, spec, weights, rule)


class Moments(NamedTuple):
    """Count, sum and sum of squares of expanded training features: the scaler's statistics."""

    n: int
    sum: np.ndarray
    sumsq: np.ndarray


def moments(item, spec: FeatureSpec, weights: np.ndarray, rule: SplitRule) -> Moments:
    """Moments of a block's (unscaled) training features, summed in float64 in one compiled pass."""
    from .loss_kernel import column_moments

    x = block_of(item, spec, weights, rule).train.x
    s, ss = np.zeros(x.shape[1]), np.zeros(x.shape[1])
    column_moments(np.ascontiguousarray(x), s, ss)
    return Moments(len(x), s, ss)


def standardise_block(block: FeatureBlock, spec: FeatureSpec) -> FeatureBlock:
    """Apply the fitted scaler to a block persisted unscaled, in place (a copy would double the workers'
    memory); returns the block."""
    for part in block:
        spec.standardise(part.x)
    return block


def grad_sums(item, theta: np.ndarray, spec: FeatureSpec, weights: np.ndarray, rule: SplitRule) -> SplitSums:
    """Loss and gradient sums of a block's training and validation rows at ``theta``."""
    b = block_of(item, spec, weights, rule)
    return SplitSums(block_sums(*b.train, theta), block_sums(*b.valid, theta))


def add_sums(*parts: SplitSums) -> SplitSums:
    """The sum of several blocks' sums, added in the order given."""
    out = parts[0]
    for p in parts[1:]:
        out = out + p
    return out


def permuted(block: FeatureBlock, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A block's training rows in a random order (features, labels)."""
    idx = np.random.default_rng(seed).permutation(len(block.train.y))
    return block.train.x[idx], block.train.y[idx]


def n_train(block: FeatureBlock) -> int:
    return len(block.train.y)


# ------------------------------------------------------------------------------------------------ cache


def expanded_bytes(n_rows: int, n_features: int, rule: SplitRule) -> float:
    """Bytes of the persisted blocks of ``n_rows`` rows: TRAIN and VALID rows, float32 features + label + weight."""
    kept = 1 - (rule.test[1] - rule.test[0]) / N_BUCKETS
    return n_rows * kept * (n_features + 2) * 4


def choose_cache(cache: str, need: float, memory: int) -> str:
    """``memory`` or ``stream``: ``auto`` persists when the blocks take under half the workers' memory (or the
    memory is unknown, e.g. in this process)."""
    if cache != "auto":
        return cache
    return "memory" if memory == 0 or need < 0.5 * memory else "stream"
