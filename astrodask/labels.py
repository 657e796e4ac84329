"""Class labels: names -> the model's class indices, with convert's rules.

A label is compared after trimming whitespace and upper-casing (as ``convert`` does); a missing label (null,
NaN, empty) means an unlabelled row (index -1: e.g. a photometric object without a spectrum), which trains
nothing and is left out of the metrics; any other value is refused, never guessed.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from . import schema
from .errors import AstrodaskError

UNLABELLED = -1
UNKNOWN = -2
"""What :func:`codes` gives a value that is not a class name (never returned by :func:`encode`)."""
UNUSABLE = -3
"""A labelled row that a model does not learn from (a spectroscopic model: its redshift is no measurement);
training code marks such rows, :func:`codes` never gives it."""
CLASS_INDEX = {c: k for k, c in enumerate(schema.CLASSES)}
_CLASSES = pa.array(schema.CLASSES, pa.string())


def _exact(s: pd.Series) -> np.ndarray | None:
    """Indices when every non-null value is exactly a class name (Arrow kernels: fast), else None."""
    try:
        arr = pa.array(s, from_pandas=True)
        if pa.types.is_dictionary(arr.type):
            arr = arr.cast(arr.type.value_type)
        if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
            return None
        idx = pc.index_in(arr, value_set=_CLASSES)
    except (pa.ArrowException, TypeError, ValueError):
        return None
    if pc.any(pc.and_(idx.is_null(), arr.is_valid())).as_py():
        return None
    return idx.fill_null(UNLABELLED).to_numpy(zero_copy_only=False).astype(np.int8)


def codes(values) -> np.ndarray:
    """Class index of each value (int8): -1 for a missing label, -2 (UNKNOWN) for a value that is no class."""
    s = values if isinstance(values, pd.Series) else pd.Series(values, copy=False)
    if len(s) == 0:
        return np.zeros(0, np.int8)
    fast = _exact(s)  # converted datasets hold the canonical names: no string work
    if fast is not None:
        return fast
    missing = s.isna().to_numpy().copy()
    text = s.astype("string").str.strip().str.upper()
    missing |= (text == "").fillna(True).to_numpy(dtype=bool)
    codes = text.map(CLASS_INDEX)
    known = codes.notna().to_numpy()
    out = np.full(len(s), UNLABELLED, np.int8)
    out[known] = codes[known].to_numpy(dtype=np.int64)
    out[~known & ~missing] = UNKNOWN
    return out


def unknown_values(values, codes: np.ndarray) -> Counter:
    """How often each value that is no class occurs (``codes`` from :func:`codes`)."""
    bad = codes == UNKNOWN
    if not bad.any():
        return Counter()
    return Counter(str(v) for v in np.asarray(values, dtype=object)[bad])


def refuse_unknown(unknown: Counter, where: str) -> None:
    """Raise the one-line error for labels that are no class (nothing when ``unknown`` is empty)."""
    if not unknown:
        return
    listed = ", ".join(f"{v!r} ({n:,})" for v, n in unknown.most_common(3))
    more = f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
    raise AstrodaskError(
        f"{where}: {sum(unknown.values()):,} label(s) are not one of {', '.join(schema.CLASSES)}: {listed}{more}; "
        "fix them, or make them null to leave those rows unlabelled"
    )


def encode(values, where: str = "class") -> np.ndarray:
    """Class indices (int8; -1 for a missing label) of ``values`` (any sequence of names or nulls).

    Raises AstrodaskError naming ``where``, the unknown values and their count when a label is not a class.
    """
    found = codes(values)
    if (found == UNKNOWN).any():
        refuse_unknown(unknown_values(values, found), where)
    return found
