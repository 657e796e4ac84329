"""The estimator's input checks: as strict as ``convert``'s, and with convert's own rules.

A frame's model columns are run through convert's ``validate`` (the same function that quarantines rows of a
catalogue), so a value convert would quarantine (infinite, out of the column's range, ...) is refused here,
naming the column, the reason and the count. What convert turns into a null is decided explicitly:

* a missing value (NaN, None, pd.NA) is missing: imputed with the training median, as for a converted dataset,
  and visible (``InputReport.imputed_rows``, ``SDSSClassifier.imputed_mask``); ``missing="error"`` refuses it;
* an SDSS no-measurement sentinel (-9999, -999, 9999: convert makes them null) is refused by default, because
  in a frame it is more often an unnoticed sentinel than a choice; ``sentinels="missing"`` treats it as missing.

Labels follow ``labels``: any case and whitespace, null = unlabelled (left out), anything else refused.
A check of a partition returns an :class:`InputReport` (counts only) so the client can add up the reports of
every partition and refuse once, with totals, before any training.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa

from .. import labels, schema
from ..dataset import hash64
from ..errors import AstrodaskError
from ..features import raw_columns
from ..ingest.validate import validate
from .blocks import Rows

SENTINEL_POLICIES = ("error", "missing")
MISSING_POLICIES = ("impute", "error")
_ROW = "__astrodask_row__"


@dataclass(frozen=True)
class InputReport:
    """What the checks of a frame (or of one partition) found; reports add up."""

    rows: int = 0
    missing: Counter = field(default_factory=Counter)
    """Column -> values that are missing (NaN, None)."""
    sentinels: Counter = field(default_factory=Counter)
    """Column -> values that are SDSS no-measurement sentinels (-9999, -999, 9999)."""
    rejected: Counter = field(default_factory=Counter)
    """convert's quarantine reason (``non_finite:u``...) -> rows."""
    imputed_rows: int = 0
    """Rows with at least one input missing (after the sentinel policy): imputed with the training median."""
    unlabelled: int = 0
    """Rows whose label is missing (left out of training and scoring)."""
    unknown_labels: Counter = field(default_factory=Counter)
    """Label values that are no class -> count."""

    def __add__(self, other: InputReport) -> InputReport:
        return InputReport(self.rows + other.rows, self.missing + other.missing, self.sentinels + other.sentinels,
                           self.rejected + other.rejected, self.imputed_rows + other.imputed_rows,
                           self.unlabelled + other.unlabelled, self.unknown_labels + other.unknown_labels)

    def check(self, sentinels: str, missing: str, where: str = "X") -> None:
        """Raise the one-line error for the first problem found, in the order: rejected values, sentinels,
        missing values, unknown labels."""
        if self.rejected:
            n = sum(self.rejected.values())
            raise AstrodaskError(
                f"{where}: {n:,} row(s) hold values that `astrodask convert` would quarantine "
                f"({_listed(self.rejected)}); fix or drop those rows"
            )
        if sentinels == "error" and self.sentinels:
            raise AstrodaskError(
                f"{where}: {sum(self.sentinels.values()):,} value(s) are SDSS no-measurement sentinels (-9999, -999, "
                f"9999) in column(s) {_listed(self.sentinels)}; pass sentinels='missing' to impute them with the "
                "training median (as convert does), or drop those rows"
            )
        if missing == "error" and self.missing:
            raise AstrodaskError(
                f"{where}: {sum(self.missing.values()):,} value(s) are missing (NaN or None) in column(s) "
                f"{_listed(self.missing)}; pass missing='impute' to impute them with the training median, or drop "
                "those rows"
            )
        labels.refuse_unknown(self.unknown_labels, "y")


def _listed(c: Counter) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in c.most_common())


def is_dask_frame(X) -> bool:
    try:
        import dask.dataframe as dd
    except ImportError:  # pragma: no cover
        return False
    return isinstance(X, dd.DataFrame)


def is_dask_series(y) -> bool:
    try:
        import dask.dataframe as dd
    except ImportError:  # pragma: no cover
        return False
    return isinstance(y, dd.Series)


def is_catalog(obj) -> bool:
    """True for an LSDB catalogue (checked without importing lsdb)."""
    return type(obj).__module__.startswith("lsdb.") and hasattr(obj, "to_dask_dataframe") and hasattr(
        obj, "map_partitions")


def canonical_frame(catalog):
    """The catalogue as a lazy Dask DataFrame with the model inputs under their canonical names."""
    ddf = catalog.to_dask_dataframe()
    mapping = schema.resolve_columns(list(ddf.columns)).mapping
    keep = {src: canon for src, canon in mapping.items() if src in ddf.columns and canon not in ddf.columns}
    return ddf.rename(columns=keep) if keep else ddf


def catalog_frame(X):
    """An LSDB catalogue as a lazy Dask frame with the model inputs under their canonical names; else X."""
    return canonical_frame(X) if is_catalog(X) else X


def inputs_of(*feature_sets: str) -> tuple[str, ...]:
    """The catalogue columns a model of these feature sets (a spectroscopic one and its companion) reads."""
    return tuple(dict.fromkeys(c for fs in feature_sets if fs for c in raw_columns(fs)))


def require_columns(X, need: tuple[str, ...], where: str = "X", optional: tuple[str, ...] = ()) -> tuple[str, ...]:
    """``need`` (the model's input columns, ``inputs_of``); refuses an X that is not a frame or lacks one.
    ``optional`` columns are read where X has them (a routing model's redshift)."""
    if not (isinstance(X, pd.DataFrame) or is_dask_frame(X)):
        raise AstrodaskError(
            f"{where} is a {type(X).__name__}, not a pandas or Dask DataFrame; pass the catalogue as a DataFrame "
            f"with the columns {', '.join(need)} (column names say which value is which)"
        )
    missing = [c for c in need if c not in X.columns]
    if missing:
        if missing == [schema.REDSHIFT]:
            fix = "; without a redshift, use features='photometric'"
        elif set(missing) <= set(schema.PSF_BANDS):
            fix = "; without PSF magnitudes, use features='photometric' with morphology=False"
        else:
            fix = ""
        also = f", and {', '.join(optional)} where there is one" if optional else ""
        raise AstrodaskError(f"{where} has no column(s) {', '.join(missing)}: the model reads {', '.join(need)} "
                             f"(SDSS17 names){also}{fix}")
    return need


def _floats(s: pd.Series, name: str, where: str) -> np.ndarray:
    dtype = s.dtype
    if pd.api.types.is_bool_dtype(dtype) or not pd.api.types.is_numeric_dtype(dtype):
        raise AstrodaskError(
            f"{where}: column {name} holds {dtype} values, not numbers; convert it (e.g. pd.to_numeric) first"
        )
    return s.to_numpy(dtype=np.float64, na_value=np.nan)


def clean(df: pd.DataFrame, need: tuple[str, ...], where: str = "X") -> tuple[pd.DataFrame, InputReport]:
    """The model columns ``need`` of ``df`` (and ``zwarning`` when it has one) as convert would store them
    (float32; null and sentinels -> NaN) and the report of what was found (which ``InputReport.check`` judges by
    the policies). When the report has rejected rows, the frame holds only the others. A missing redshift is not
    a missing value: it is never imputed (a spectroscopic model scores such a row with its companion)."""
    cols = list(require_columns(df, need, where))
    if schema.ZWARNING in df.columns:
        cols.append(schema.ZWARNING)
    values = {c: _floats(df[c], c, where) for c in cols}
    n = len(df)
    imputable = [c for c in cols if c not in (schema.REDSHIFT, schema.ZWARNING)]
    missing = Counter({c: int(np.isnan(values[c]).sum()) for c in imputable})
    sentinel = Counter({c: int(np.isin(v, schema.SENTINELS).sum()) for c, v in values.items()})
    table = pa.table({_ROW: pa.array(np.arange(n, dtype=np.uint64)), **{c: pa.array(v) for c, v in values.items()}})
    good, rejected = validate(table, {_ROW: schema.ID, **{c: c for c in cols}}, out_columns=[schema.ID, *cols])
    frame = pd.DataFrame({c: good.column(c).to_numpy(zero_copy_only=False) for c in cols})
    nan_rows = int(frame[imputable].isna().any(axis=1).sum())
    report = InputReport(n, +missing, +sentinel, Counter(rejected.column("reason").to_pylist()), nan_rows)
    return frame, report


def row_keys(df: pd.DataFrame, frame: pd.DataFrame, where: str = "X") -> np.ndarray:
    """The split key of each row: ``obj_ID`` when X has it, else a hash of the row's (cleaned) values, so the
    validation rows do not depend on the partitioning or the row order."""
    if schema.ID in df.columns:
        ids = df[schema.ID]
        if not pd.api.types.is_integer_dtype(ids.dtype) or ids.isna().any():
            raise AstrodaskError(
                f"{where}: column {schema.ID} is {ids.dtype} or has missing values; it chooses the validation rows, "
                "so give integer ids, or drop the column (rows are then chosen by a hash of their values)"
            )
        return ids.to_numpy(np.int64).view(np.uint64) if ids.dtype.kind == "i" else ids.to_numpy(np.uint64)
    key = np.zeros(len(frame), np.uint64)
    for c in frame.columns:
        v = frame[c].to_numpy(np.float32)
        bits = np.where(np.isnan(v), np.float32(np.nan), v).view(np.uint32).astype(np.uint64)
        key = hash64(key ^ bits)
    return key


class Prepared(NamedTuple):
    """A frame checked and ready to train on: its rows (None when the report refuses them) and the report."""

    rows: Rows | None
    report: InputReport


def prepare(df: pd.DataFrame, y, need: tuple[str, ...], where: str = "X") -> Prepared:
    """Check ``df`` (the columns ``need``) and its labels ``y`` (same length) and make the training rows (raw
    labels: ``blocks.rows_of`` marks what each feature set cannot learn from)."""
    frame, report = clean(df, need, where)
    codes = labels.codes(y)
    unknown = labels.unknown_values(y, codes)
    report = InputReport(report.rows, report.missing, report.sentinels, report.rejected, report.imputed_rows,
                         int((codes == labels.UNLABELLED).sum()), unknown)
    if report.rejected or unknown:
        return Prepared(None, report)
    zw = frame[schema.ZWARNING].to_numpy(np.float64) if schema.ZWARNING in frame.columns else None
    data = frame.drop(columns=[schema.ZWARNING]) if zw is not None else frame
    return Prepared(Rows(data, codes, row_keys(df, data, where), zw), report)


# -- the Dask side: one task per partition; the rows stay on the worker, the report goes to the client


def prepare_partition(df: pd.DataFrame, need: tuple[str, ...], label: str) -> Prepared:
    return prepare(df.drop(columns=[label]), df[label], need, where="X")


def report_of(p: Prepared) -> InputReport:
    return p.report


def prepared_rows(p: Prepared) -> Rows:
    return p.rows


def checked_frame(df: pd.DataFrame, need: tuple[str, ...], sentinels: str, missing: str,
                  where: str = "X") -> pd.DataFrame:
    """The cleaned model columns of a frame to score; refuses what the report refuses."""
    frame, report = clean(df, need, where)
    report.check(sentinels, missing, where)
    return frame
