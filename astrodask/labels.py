"""Class labels: names -> the model's class indices, with convert's rules.

A label is compared after trimming whitespace and upper-casing (as ``convert`` does); a missing label (null,
NaN, empty) means an unlabelled row (index -1: e.g. a photometric object without a spectrum), which trains
nothing and is left out of the metrics; any other value is refused, never guessed. Labels given as integers
(an integer dtype, as scikit-learn's label encoding gives) are class indices: 0 GALAXY, 1 QSO, 2 STAR
(``schema.CLASSES``, sorted as a ``LabelEncoder`` sorts the names); text such as ``"0"`` is not.
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


def integer_labels(values) -> bool:
    """True when ``values`` are integers by type: an integer NumPy/pandas dtype (nullable too), or a sequence of
    Python/NumPy integers and nulls (never booleans, floats or text)."""
    dtype = getattr(values, "dtype", None)
    if dtype is not None and getattr(dtype, "kind", "O") != "O":
        return pd.api.types.is_integer_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)
    items = [v for v in (values.tolist() if hasattr(values, "tolist") else list(values)) if not pd.isna(v)]
    return bool(items) and all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))
                               for v in items)


def names_of_indices(values, where: str = "y") -> pd.Series:
    """Class names (object Series; None for a null) of integer labels 0, 1, 2 (indices of ``schema.CLASSES``);
    AstrodaskError naming ``where`` and the values when one is no index."""
    s = pd.Series(values, copy=False) if not isinstance(values, pd.Series) else values
    known = s.notna().to_numpy()
    idx = s[known].astype(np.int64).to_numpy()
    bad = (idx < 0) | (idx >= len(schema.CLASSES))
    if bad.any():
        found = Counter(int(v) for v in idx[bad])
        listed = ", ".join(f"{v} ({n:,})" for v, n in found.most_common(3))
        raise AstrodaskError(
            f"{where}: integer labels are class indices, 0 = {schema.CLASSES[0]}, 1 = {schema.CLASSES[1]}, "
            f"2 = {schema.CLASSES[2]}; {sum(found.values()):,} are not: {listed}; fix them, or give class names")
    out = np.full(len(s), None, dtype=object)
    out[known] = np.asarray(schema.CLASSES, dtype=object)[idx]
    return pd.Series(out, index=s.index, name=s.name)


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
    digits = all(v.strip().lstrip("-").replace(".", "", 1).isdigit() for v in unknown)
    hint = (f" (class indices are read only from integers: 0 = {schema.CLASSES[0]}, 1 = {schema.CLASSES[1]}, "
            f"2 = {schema.CLASSES[2]})") if digits else ""
    raise AstrodaskError(
        f"{where}: {sum(unknown.values()):,} label(s) are not one of {', '.join(schema.CLASSES)}: {listed}{more}; "
        f"fix them, or make them null to leave those rows unlabelled{hint}"
    )


def encode(values, where: str = "class") -> np.ndarray:
    """Class indices (int8; -1 for a missing label) of ``values`` (any sequence of names or nulls).

    Raises AstrodaskError naming ``where``, the unknown values and their count when a label is not a class.
    """
    found = codes(values)
    if (found == UNKNOWN).any():
        refuse_unknown(unknown_values(values, found), where)
    return found
