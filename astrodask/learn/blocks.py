"""What the workers hold and compute: rows, their split, feature blocks, and the cache policy.

Every function here is module-level and pure (no client, no globals), so it runs as a Dask task on a worker or
in this process for a pandas frame, and is tested without a cluster. An *item* is what one task works on: a
dataset file (a Location, read on the worker), a :class:`Rows` (rows already in memory: the estimator's), a
:class:`FeatureBlock` (a partition's training rows persisted on a worker) or a :class:`SpilledBlock` (the same,
saved to the worker's local disk).

The parallel mode's blocks are *compact* (:class:`CompactPart`): per row what the gradient needs -- the
standardised base features and each distinct B-spline basis's 4 non-zero values with the index of the first --
about 300 bytes a row whatever the number of expanded columns (329-1,281); the gradient kernel forms the
expanded values itself (``loss.compact_block_sums``). They do not depend on the expanded features' scaler (it is
folded into the weights), so they are built once, before it is fitted. The incremental mode's blocks are dense
(:class:`Part`: dask-ml trains on arrays).

Rows are split by a :class:`dataset.SplitRule` on a key (``obj_ID``, or a hash of the row's values): the
``train`` stage's ``dataset.HOLDOUT``, or the estimator's ``dataset.validation_split``. Unlabelled rows (no
class) are counted and left out of everything; so are, for a spectroscopic model, labelled rows whose redshift is
no measurement (``schema.usable_redshift``: its photometric companion learns from them).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import weakref
from typing import NamedTuple

import numpy as np
import pandas as pd

from .. import labels, schema
from ..dataset import N_BUCKETS, TEST, TRAIN, VALID, SplitRule, in_share, read_part
from ..errors import AstrodaskError
from ..features import TAIL_LEVELS, FeatureSpec, base_matrix, quantile_summary, raw_columns
from .loss import LossSums, SplitSums, block_sums, compact_block_sums

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


def _frame_rows(df: pd.DataFrame, columns: list[str], where: str) -> Rows:
    """Rows of a frame in the dataset's columns, ``columns`` kept, labels as the frame has them (none marked)."""
    y = labels.encode(df[schema.CLASS], where=f"{where}: column {schema.CLASS}") if schema.CLASS in df.columns \
        else np.full(len(df), labels.UNLABELLED, np.int8)
    zw = df[schema.ZWARNING].to_numpy(np.float64, na_value=np.nan) if schema.ZWARNING in df.columns else None
    return Rows(df[columns], y, df[schema.ID].to_numpy(np.uint64), zw)


def rows_from_frame(df: pd.DataFrame, feature_set: str, where: str = "a partition") -> Rows:
    """Rows of a frame in the dataset's columns (``obj_ID``, ``class`` and ``zwarning`` when present, the raw
    inputs)."""
    rows = _frame_rows(df, list(raw_columns(feature_set)), where)
    return rows._replace(labels=usable(rows.labels, rows.frame, feature_set, rows.zwarning))


def _read(file, columns: list[str]) -> pd.DataFrame:
    from ..storage import parquet_file

    with parquet_file(file) as pf:
        have = set(pf.schema_arrow.names)
    keys = [c for c in (schema.ID, schema.CLASS, schema.ZWARNING) if c in have]
    return read_part(file, columns=list(dict.fromkeys(keys + columns)))


def read_rows(file, feature_set: str) -> Rows:
    """One dataset file's rows (on a worker)."""
    return rows_from_frame(_read(file, list(raw_columns(feature_set))), feature_set, where=str(file))


def rows_for(item, feature_sets: tuple[str, ...]) -> Rows:
    """An item's rows with the raw columns of every one of ``feature_sets``, no label marked (``rows_of`` marks
    them for each): a file read once for two models."""
    if isinstance(item, Rows):
        return item
    cols = list(dict.fromkeys(c for fs in feature_sets for c in raw_columns(fs)))
    return _frame_rows(_read(item, cols), cols, str(item))


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
    base: tuple | None
    """Quantile summary of the base features (None with ``base_by_class``: the knots come from those)."""
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


def _counts(y: np.ndarray, split: np.ndarray) -> dict:
    """A Summary's counts of rows with labels ``y`` in ``split``: (split, class) labelled rows, unlabelled,
    unusable."""
    known = y >= 0
    return {"counts": np.stack([np.bincount(y[(split == s) & known], minlength=K) for s in SPLITS]),
            "unlabelled": int((y == labels.UNLABELLED).sum()), "unusable": int((y == labels.UNUSABLE).sum())}


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
    b0 = base if finite.all() else np.where(finite, base, 0.0)
    whole, per_class = None, None
    if by_class:
        y = rows.labels[train]
        per_class = tuple(quantile_summary(base[y == k]) for k in range(K))
    else:
        whole = quantile_summary(base)
    # count_nonzero and einsum: a third of the time of bool sums and a squared temporary (pass 1 reads every row)
    return Summary(quantile_summary(raw, TAIL_LEVELS), whole, per_class,
                   np.count_nonzero(finite, axis=0), b0.sum(axis=0), np.einsum("ij,ij->j", b0, b0),
                   **_counts(rows.labels, split))


# ------------------------------------------------------------------------------------------------ blocks


class Part(NamedTuple):
    """The rows of one split of a dense block (the incremental mode's)."""

    x: np.ndarray
    """Expanded, standardised features (rows, features), float32."""
    y: np.ndarray
    """Class index (int8)."""
    w: np.ndarray
    """Row weight (float32, the class weight)."""


class CompactPart(NamedTuple):
    """The rows of one split of a compact block (``features.compiled.compact``): the parallel mode's."""

    zb: np.ndarray
    """Standardised base features (rows, base), float32."""
    vals: np.ndarray
    """The 4 non-zero values of each distinct B-spline basis (rows, bases, 4), float32."""
    first: np.ndarray
    """Index of the first of them (rows, bases), uint8."""
    y: np.ndarray
    """Class index (int8); the row weight is the class's (``weights[y]``)."""
    n_warm: int = 0
    """The first ``n_warm`` rows are the warm-start subsample (:func:`warm_rows`)."""

    def head(self, n: int) -> CompactPart:
        return CompactPart(self.zb[:n], self.vals[:n], self.first[:n], self.y[:n], n)

    @property
    def nbytes(self) -> int:
        return self.zb.nbytes + self.vals.nbytes + self.first.nbytes + self.y.nbytes


class FeatureBlock(NamedTuple):
    """A partition's labelled training and validation rows (holdout rows are not kept): compact parts (parallel
    mode) or dense ones (incremental mode)."""

    train: Part | CompactPart
    valid: Part | CompactPart


WARM_SALT = 0x3A7
"""Salt of the hash that picks the warm-start subsample (independent of the split's)."""


def warm_rows(keys: np.ndarray, fraction: float) -> np.ndarray:
    """True for the rows in the warm-start subsample: ``fraction`` of the rows, by a salted hash of their key (the
    same rows whatever the partitioning)."""
    if fraction <= 0:
        return np.zeros(len(keys), bool)
    return in_share(keys, WARM_SALT, fraction)


def make_block(rows: Rows, spec: FeatureSpec, weights: np.ndarray, rule: SplitRule, warm: float = 0.0) -> FeatureBlock:
    """The compact block of the labelled TRAIN and VALID rows, the warm-start subsample (``warm`` of them) first."""
    from ..features import compiled

    lay = layout_of(spec)
    split = rule.of(rows.keys)
    known = rows.labels >= 0
    sub = warm_rows(rows.keys, warm)
    parts = []
    for s in (TRAIN, VALID):
        m = (split == s) & known
        order = np.concatenate([np.flatnonzero(m & sub), np.flatnonzero(m & ~sub)])
        frame = rows.frame.iloc[order]
        zb, vals, first = compiled.compact(lay, frame)
        parts.append(CompactPart(zb, vals, first, rows.labels[order].astype(np.int8), int((m & sub).sum())))
    return FeatureBlock(*parts)


def dense_block(rows: Rows, spec: FeatureSpec, weights: np.ndarray, rule: SplitRule) -> FeatureBlock:
    """The labelled TRAIN and VALID rows as expanded, standardised features (``spec`` scaled)."""
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


def load_block(item, spec: FeatureSpec, weights: np.ndarray, rule: SplitRule, warm: float = 0.0) -> FeatureBlock:
    """A file's or Rows' compact block (the task whose results are persisted with ``--cache memory``)."""
    return make_block(rows_of(item, spec.feature_set), spec, weights, rule, warm)


class Persisted(NamedTuple):
    """One read of a file for a spectroscopic model and its photometric companion (:func:`persist_pair`): the
    model's block, the companion's pass 1 summary, and the rows the companion trains and validates on. The
    model trains on it as on its block: a worker holds and counts the block once (a task taking the block out
    of it would hold it under two keys, and the worker's memory manager would count it twice)."""

    block: FeatureBlock
    summary: Summary
    rows: Rows


def persist_pair(item, spec: FeatureSpec, weights: np.ndarray, rule: SplitRule, warm: float, companion: str,
                 companion_rule: SplitRule, base_names: tuple[str, ...], by_class: bool) -> Persisted:
    """The model's compact block (``load_block``) and, from the same rows, the companion's :func:`summarise` on
    ``companion_rule`` and its TRAIN and VALID rows (its holdout rows and the rows it skips are only counted)."""
    rows = rows_for(item, (spec.feature_set, companion))
    block = make_block(rows_of(rows, spec.feature_set), spec, weights, rule, warm)
    split = companion_rule.of(rows.keys)
    keep = np.flatnonzero((split == TRAIN) | (split == VALID))
    cols = [rows.frame.columns.get_loc(c) for c in raw_columns(companion)]
    zw = rows.zwarning[keep] if rows.zwarning is not None else None
    kept = Rows(rows.frame.iloc[keep, cols], rows.labels[keep], rows.keys[keep], zw)
    summary = summarise(kept, companion, base_names, companion_rule, by_class)._replace(
        **_counts(usable(rows.labels, rows.frame, companion, rows.zwarning), split))  # the counts of every row
    return Persisted(block, summary, kept)


def field_of(record: tuple, name: str):
    """``getattr(record, name)``, as a task: a field of a result left on a worker, kept there."""
    return getattr(record, name)


def frame_block(df: pd.DataFrame, spec: FeatureSpec, weights: np.ndarray, rule: SplitRule) -> FeatureBlock:
    """The dense block of a frame in the dataset's columns (the incremental mode's shuffled partitions)."""
    return dense_block(rows_from_frame(df, spec.feature_set), spec, weights, rule)


class SpilledBlock:
    """A compact block saved to the local disk of the worker that built it (``np.save``), read back
    memory-mapped at every pass: ``--cache spill``, for blocks that do not fit in the workers' memory. The files
    are removed when the object goes (its future released, or the worker process ending). Sent to another
    process it travels as the in-memory block."""

    _ARRAYS = ("zb", "vals", "first", "y")

    def __init__(self, block: FeatureBlock, directory: str | None = None):
        directory = directory or spill_directory()
        try:
            self.path = tempfile.mkdtemp(prefix="astrodask-block-", dir=directory)
        except OSError as exc:
            raise AstrodaskError(f"cannot spill training blocks to {directory} ({exc.strerror}); give the workers a "
                                 "writable local directory, or use --cache stream") from None
        self._finalizer = weakref.finalize(self, shutil.rmtree, self.path, True)
        self.n_warm = (block.train.n_warm, block.valid.n_warm)
        self.rows = (len(block.train.y), len(block.valid.y))
        try:
            for split, part in zip(("train", "valid"), block):
                for name in self._ARRAYS:
                    np.save(os.path.join(self.path, f"{split}-{name}.npy"), getattr(part, name), allow_pickle=False)
        except OSError as exc:
            self._finalizer()
            need = sum(p.nbytes for p in block) / 2**20
            raise AstrodaskError(f"cannot spill a training block ({need:,.0f} MiB) to {directory}: {exc.strerror}; "
                                 "free space there (dask's temporary-directory), add workers, or use --cache "
                                 "stream") from None

    def load(self) -> FeatureBlock:
        """The block, its arrays memory-mapped (read from disk as the kernel reaches them)."""
        parts = []
        for split, n_warm in zip(("train", "valid"), self.n_warm):
            arrays = [np.asarray(np.load(os.path.join(self.path, f"{split}-{name}.npy"), mmap_mode="r",
                                         allow_pickle=False)) for name in self._ARRAYS]
            parts.append(CompactPart(*arrays, n_warm))
        return FeatureBlock(*parts)

    def __reduce__(self):
        block = self.load()
        return FeatureBlock, tuple(CompactPart(*(np.array(a) for a in p[:4]), p.n_warm) for p in block)

    def __sizeof__(self) -> int:  # what the worker holds in memory: the paths
        return 1024


def spill_directory() -> str:
    """Where a worker spills: its local directory (dask's temporary-directory), or the system's outside Dask."""
    try:
        from distributed import get_worker

        return get_worker().local_directory
    except (ImportError, ValueError):
        return tempfile.gettempdir()


def spill_block(item, spec: FeatureSpec, weights: np.ndarray, rule: SplitRule, warm: float = 0.0) -> SpilledBlock:
    """A file's or Rows' compact block saved to this worker's local disk (``--cache spill``)."""
    return SpilledBlock(load_block(item, spec, weights, rule, warm))


def block_of(item, spec: FeatureSpec, weights: np.ndarray, rule: SplitRule, warm: float = 0.0) -> FeatureBlock:
    """The block of an item: persisted (alone, or with a companion's pass 1 and rows), spilled (memory-mapped), or
    built from a file or Rows (``--cache stream``)."""
    if isinstance(item, FeatureBlock):
        return item
    if isinstance(item, Persisted):
        return item.block
    if isinstance(item, SpilledBlock):
        return item.load()
    return load_block(item, spec, weights, rule, warm)


_LAYOUTS: dict = {}
_LAYOUTS_LOCK = threading.Lock()


def layout_of(spec: FeatureSpec):
    """``features.compiled.layout(spec)``, kept for the last few specs (a task sums many blocks with one)."""
    from ..features import compiled

    hit = _LAYOUTS.get(id(spec))
    if hit is not None and hit[0] is spec:
        return hit[1]
    lay = compiled.layout(spec)
    with _LAYOUTS_LOCK:
        if len(_LAYOUTS) >= 8:
            _LAYOUTS.clear()
        _LAYOUTS[id(spec)] = (spec, lay)
    return lay


class Moments(NamedTuple):
    """Count, sum and sum of squares of expanded training features: the scaler's statistics."""

    n: int
    sum: np.ndarray
    sumsq: np.ndarray


def moments(item, spec: FeatureSpec, weights: np.ndarray, rule: SplitRule, warm: float = 0.0) -> Moments:
    """Moments of a block's unscaled training features, summed in float64 in one compiled pass."""
    from .loss_kernel import compact_moments

    part = block_of(item, spec, weights, rule, warm).train
    p = layout_of(spec).params
    s, ss = np.zeros(spec.n_features), np.zeros(spec.n_features)
    compact_moments(part.zb, part.vals, part.first, p.spline, p.tensor, p.inter, s, ss)
    return Moments(len(part.y), s, ss)


def _part_sums(part: Part | CompactPart, theta: np.ndarray, spec: FeatureSpec, weights: np.ndarray) -> LossSums:
    if isinstance(part, Part):
        return block_sums(*part, theta)
    return compact_block_sums(part.zb, part.vals, part.first, part.y, weights, theta, layout_of(spec))


def grad_sums(item, theta: np.ndarray, spec: FeatureSpec, weights: np.ndarray, rule: SplitRule, warm: float = 0.0,
              subsample: bool = False) -> SplitSums:
    """Loss and gradient sums of a block's training and validation rows at ``theta`` (with ``subsample``: of its
    warm-start rows only)."""
    b = block_of(item, spec, weights, rule, warm)
    train, valid = (b.train.head(b.train.n_warm), b.valid.head(b.valid.n_warm)) if subsample else b
    return SplitSums(_part_sums(train, theta, spec, weights), _part_sums(valid, theta, spec, weights))


def add_sums(*parts: SplitSums) -> SplitSums:
    """The sum of several blocks' sums, added in the order given."""
    out = parts[0]
    for p in parts[1:]:
        out = out + p
    return out


def permuted(block: FeatureBlock, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A dense block's training rows in a random order (features, labels)."""
    idx = np.random.default_rng(seed).permutation(len(block.train.y))
    return block.train.x[idx], block.train.y[idx]


def n_train(block: FeatureBlock) -> int:
    return len(block.train.y)


# ------------------------------------------------------------------------------------------------ cache


def compact_bytes(n_rows: int, spec: FeatureSpec, rule: SplitRule) -> float:
    """Bytes of the compact blocks of ``n_rows`` rows: their TRAIN and VALID rows (``Layout.row_bytes`` each)."""
    kept = (1 - (rule.test[1] - rule.test[0]) / N_BUCKETS) * rule.sample
    return n_rows * kept * layout_of(spec).row_bytes


def choose_cache(cache: str, need: float, memory: int) -> str:
    """``memory``, ``spill`` or ``stream``: ``auto`` keeps the blocks in memory when they take under half the
    workers' memory (or the memory is unknown, e.g. in this process), else spills them to the workers' disks."""
    if cache != "auto":
        return cache
    return "memory" if memory == 0 or need < 0.5 * memory else "spill"
