"""Validation: one table of source columns -> (rows in the canonical schema, rejected rows with a reason).

Pure functions (no I/O): the convert stage calls them on the workers for every chunk, and the Python estimator
calls :func:`validate` to check a user's DataFrame as strictly. Vectorised (Arrow compute kernels and NumPy on
whole columns); only rejected rows are handled one by one (to keep their raw values). Reasons are
``reason:column`` strings, the first rule a row broke:

==========================  ===========================================================================
``malformed_row``           the CSV parser could not split the line into the header's fields
``invalid_utf8``            the line holds bytes that are not UTF-8
``invalid_id:obj_ID``       missing, negative, non-integer or too large id
``id_float_notation:COL``   an integer column written like ``1.24E+18`` (digits lost by a spreadsheet)
``not_integer:COL``         non-integer text in an integer column
``out_of_range:COL``        coordinates outside [0, 360] / [-90, 90], integers too large for the column
``non_numeric:COL``         text that is not a number in a numeric column
``non_finite:COL``          +-inf
``unknown_class``           class other than GALAXY, QSO, STAR (compared after trimming, any case); an
                            empty class is an unlabelled row: kept, ``class`` null
``duplicate_id``            an obj_ID already seen earlier in the input
==========================  ===========================================================================

Missing values (empty, ``NaN``, ``null``...) and SDSS sentinels (-9999, -999, 9999; for integer columns
-9999 and -999) become nulls; the id is never null.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .. import schema

_NULLS = pa.array(schema.NULL_TOKENS, pa.string())
_NUMBER_RE = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"
_INF_RE = r"^[+-]?(inf|infinity)$"
_INT_RE = r"^\+?\d+(\.0*)?$"
_NEG_INT_RE = r"^-\d+(\.0*)?$"
_FLOAT_NOTATION_RE = r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$"
_UINT64_MAX = "18446744073709551615"
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _np(arr, dtype=None) -> np.ndarray:
    """An Arrow boolean/numeric result as NumPy (nulls -> False for booleans, NaN for floats); may be read-only."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    if pa.types.is_boolean(arr.type):
        arr = arr.fill_null(False)
    out = arr.to_numpy(zero_copy_only=False)
    if dtype is not None:
        out = out.astype(dtype, copy=False)
    return out


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _to_text(col: pa.ChunkedArray) -> pa.ChunkedArray | None:
    """Text view of a column (strings, binary, dictionaries of them), or None for other types."""
    t = col.type
    if pa.types.is_dictionary(t):
        col = col.cast(t.value_type)
        t = t.value_type
    if _is_text(t):
        return col
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        try:
            return col.cast(pa.string())
        except pa.ArrowInvalid:
            return pc.cast(col, pa.string(), safe=False)  # invalid bytes: the values then fail validation
    return None


def _missing_text(t) -> np.ndarray:
    """Trimmed text that means "no value" (including nulls)."""
    return _np(pc.is_in(pc.utf8_lower(t), value_set=_NULLS)) | _np(pc.is_null(t))


def _parse_float(col: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(float64 values with NaN for missing, non-numeric mask) of a column of any type."""
    n = len(col)
    text = _to_text(col)
    if text is None:
        t = col.type
        if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
            return _np(pc.cast(col, pa.float64(), safe=False), np.float64), np.zeros(n, bool)
        return np.full(n, np.nan), ~_np(pc.is_null(col))
    try:  # fast path: every cell is a number (nan, inf and +5 included)
        return _np(pc.cast(text, pa.float64()), np.float64), np.zeros(n, bool)
    except pa.ArrowInvalid:
        pass
    t = pc.utf8_trim_whitespace(text)
    missing = _missing_text(t)
    number = _np(pc.match_substring_regex(t, _NUMBER_RE)) | _np(pc.match_substring_regex(t, _INF_RE,
                                                                                          ignore_case=True))
    number &= ~missing
    v = _np(pc.cast(pc.if_else(pa.array(number), t, pa.scalar(None, pa.string())), pa.float64()), np.float64)
    return v, ~number & ~missing


def _parse_uint(col: pa.ChunkedArray, bits: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(values as uint64, masks) of an integer-like column of any type.

    Masks: ``missing`` (empty/NaN, sentinels), ``sentinel`` (-9999, -999), ``float_notation`` (digits lost:
    1.24E+18, or a float >= 2**53), ``negative``, ``too_large`` (above the column's range), ``not_integer``
    (anything else that is not a whole number). Valid = none of them.
    """
    n = len(col)
    vals = np.zeros(n, np.uint64)
    z = np.zeros(n, bool)
    masks = {"missing": z.copy(), "sentinel": z.copy(), "float_notation": z.copy(), "negative": z.copy(),
             "too_large": z.copy(), "not_integer": z.copy()}
    text = _to_text(col)
    t = col.type
    if text is None and pa.types.is_integer(t):
        masks["missing"] = _np(pc.is_null(col))
        ints = _np(col.fill_null(0))
        if pa.types.is_signed_integer(t):
            neg = ints < 0
            masks["sentinel"] = np.isin(ints, schema.INT_SENTINELS)
            masks["negative"] = neg & ~masks["sentinel"]
            ints = np.where(neg, 0, ints)
        vals = ints.astype(np.uint64)
    elif text is None and pa.types.is_floating(t):
        v = _np(pc.cast(col, pa.float64()), np.float64)
        masks["missing"] = np.isnan(v)
        finite = np.isfinite(v)
        whole = finite & (v == np.floor(np.where(finite, v, 0)))
        masks["sentinel"] = np.isin(v, schema.INT_SENTINELS)
        masks["negative"] = finite & (v < 0) & ~masks["sentinel"]
        exact = whole & (v >= 0) & (v < 2.0 ** 53)
        masks["float_notation"] = whole & (v >= 2.0 ** 53)
        masks["not_integer"] = ~masks["missing"] & ~exact & ~masks["sentinel"] & ~masks["negative"] \
            & ~masks["float_notation"]
        vals[exact] = v[exact].astype(np.uint64)
    elif text is None:
        masks["missing"] = _np(pc.is_null(col))
        masks["not_integer"] = ~masks["missing"]
    else:
        fast = False
        if text.null_count == 0 and pc.all(pc.ascii_is_decimal(text)).as_py():  # only ASCII digits, no empty cell
            try:
                vals = _np(pc.cast(text, pa.uint64()), np.uint64)
                fast = True
            except pa.ArrowInvalid:  # above 2**64 - 1
                pass
        if not fast:
            tt = pc.utf8_trim_whitespace(text)
            masks["missing"] = _missing_text(tt)
            pos = _np(pc.match_substring_regex(tt, _INT_RE))
            neg = _np(pc.match_substring_regex(tt, _NEG_INT_RE))
            # the digits without sign, leading zeros and a ".000" tail
            core = pc.replace_substring_regex(tt, r"^[+-]?0*|\.0*$", "")
            core = pc.if_else(pc.equal(core, ""), pa.scalar("0"), core).fill_null("0")
            length = _np(pc.utf8_length(core), np.int64)
            fits64 = (length < 20) | ((length == 20) & _np(pc.less_equal(core, pa.scalar(_UINT64_MAX))))
            masks["sentinel"] = neg & _np(pc.is_in(core, value_set=pa.array([str(-s) for s in schema.INT_SENTINELS])))
            masks["negative"] = neg & ~masks["sentinel"] & _np(pc.not_equal(core, pa.scalar("0")))
            zero_neg = neg & ~masks["sentinel"] & ~masks["negative"]
            ok = (pos | zero_neg) & fits64
            masks["too_large"] = pos & ~fits64
            masks["float_notation"] = _np(pc.match_substring_regex(tt, _FLOAT_NOTATION_RE)) & ~masks["missing"]
            masks["not_integer"] = ~(ok | masks["missing"] | masks["sentinel"] | masks["negative"]
                                     | masks["too_large"] | masks["float_notation"])
            if ok.any():
                good = pc.if_else(pa.array(ok), core, pa.scalar("0"))
                vals = _np(pc.cast(good, pa.uint64()), np.uint64)
    if bits < 64:
        valid = ~(masks["missing"] | masks["sentinel"] | masks["negative"] | masks["float_notation"]
                  | masks["not_integer"])
        masks["too_large"] |= valid & (vals > np.uint64((1 << bits) - 1))
    return vals, masks


class _Reasons:
    """The first reason each row was rejected (vectorised: one small int per row)."""

    def __init__(self, n: int):
        self.code = np.full(n, -1, np.int16)
        self.names: list[str] = []

    FILTERED = -2

    def filter(self, mask: np.ndarray) -> np.ndarray:
        """Mark rows removed by a quality cut (not rejected); return those newly marked."""
        m = mask & (self.code == -1)
        self.code[m] = self.FILTERED
        return m

    def reject(self, mask: np.ndarray, why: str) -> None:
        m = mask & (self.code == -1)
        if m.any():
            if why not in self.names:
                self.names.append(why)
            self.code[m] = self.names.index(why)

    @property
    def ok(self) -> np.ndarray:
        return self.code == -1

    def of(self, rows: np.ndarray) -> list[str]:
        return [self.names[c] for c in self.code[rows]]


def pairs_of(mapping) -> list[tuple[str, str]]:
    """(source, canonical) pairs of a mapping given as a dict (source -> canonical) or as pairs."""
    return list(mapping.items()) if isinstance(mapping, dict) else [(s, c) for s, c in mapping]


def _id_text(col) -> pa.Array:
    """An id column as the text it was written as (trimmed; missing values null)."""
    text = _to_text(col)
    if text is None:
        t = col.type
        if pa.types.is_floating(t):  # a float id: its shortest repr, as pandas writes it
            text = pa.array([None if v is None or math.isnan(v) else repr(float(v)) for v in col.to_pylist()],
                            pa.string())
        else:
            text = pc.cast(col, pa.string(), safe=False)
    text = pc.utf8_trim_whitespace(text)
    text = text.combine_chunks() if isinstance(text, pa.ChunkedArray) else text
    return pc.if_else(pa.array(_missing_text(text)), pa.scalar(None, pa.string()), text)


def _canonical_arrays(raw: pa.Table, mapping, reasons: _Reasons, row_ids=None) -> dict[str, pa.Array]:
    """Parse and check every mapped column; record rejections in ``reasons``."""
    src_of = {canon: src for src, canon in pairs_of(mapping) if src in raw.column_names}
    arrays: dict[str, pa.Array] = {}
    if row_ids is not None:
        from .ids import generated_ids

        arrays[schema.ID] = pa.array(generated_ids(row_ids.tag, row_ids.rows), pa.uint64())
        arrays[schema.SOURCE_ROW] = pa.array(np.asarray(row_ids.rows, np.uint64), pa.uint64())
        for name, keep in ((schema.ID, schema.SOURCE_ID), ("spec_obj_ID", schema.SOURCE_SPEC_ID)):
            if name in src_of:
                arrays[keep] = _id_text(raw.column(src_of[name]))
    for name in schema.COLUMNS:
        if name not in src_of or (row_ids is not None and name == schema.ID):
            continue
        col = raw.column(src_of[name])
        typ = schema.TYPES[name]
        if name == "spec_obj_ID" and row_ids is not None:  # not exact: null here, its text in source_spec_obj_ID
            vals, m = _parse_uint(col, 64)
            null = m["missing"] | m["sentinel"] | m["negative"] | m["too_large"] | m["not_integer"] \
                | m["float_notation"]
            arrays[name] = pa.array(vals, pa.uint64(), mask=null)
        elif name == schema.ID:
            vals, m = _parse_uint(col, 64)
            reasons.reject(m["float_notation"], f"id_float_notation:{name}")
            reasons.reject(m["missing"] | m["sentinel"] | m["negative"] | m["too_large"] | m["not_integer"],
                           f"invalid_id:{name}")
            arrays[name] = pa.array(vals, pa.uint64())
        elif pa.types.is_integer(typ):
            vals, m = _parse_uint(col, typ.bit_width)
            reasons.reject(m["float_notation"], f"id_float_notation:{name}")
            reasons.reject(m["not_integer"], f"not_integer:{name}")
            reasons.reject(m["negative"] | m["too_large"], f"out_of_range:{name}")
            null = m["missing"] | m["sentinel"] | ~reasons.ok  # values under the mask do not matter
            arrays[name] = pa.array(vals, pa.uint64(), mask=null).cast(typ)
        elif name == schema.CLASS:
            text = _to_text(col)
            if text is None:
                text = pc.cast(col, pa.string(), safe=False)
            text = pc.utf8_upper(pc.utf8_trim_whitespace(text.fill_null("")))
            known = _np(pc.is_in(text, value_set=pa.array(schema.CLASSES)))
            empty = _missing_text(text)  # unlabelled (e.g. a PhotoObj LEFT JOIN SpecObj row): kept, class null
            reasons.reject(~known & ~empty, "unknown_class")
            text = text.combine_chunks() if isinstance(text, pa.ChunkedArray) else text
            arrays[name] = pc.if_else(pa.array(empty), pa.scalar(None, pa.string()), text)
        else:
            v, bad = _parse_float(col)
            reasons.reject(bad, f"non_numeric:{name}")
            reasons.reject(np.isinf(v), f"non_finite:{name}")
            null = np.isnan(v) | np.isin(v, schema.SENTINELS)
            if name in schema.RANGES:
                lo, hi = schema.RANGES[name]
                reasons.reject(~null & ((v < lo) | (v > hi)), f"out_of_range:{name}")
            if typ == pa.float32():
                reasons.reject(~null & (np.abs(v) > _FLOAT32_MAX), f"out_of_range:{name}")
            null |= ~reasons.ok  # rejected rows are dropped: their values do not matter
            with np.errstate(over="ignore", invalid="ignore"):
                vals = v.astype(typ.to_pandas_dtype(), copy=False)
            arrays[name] = pa.array(vals, typ, mask=null)
    return arrays


ARCSECOND = 1.0 / 3600.0
"""Two positions this close (degrees) are one position (``ra`` and SpecObj's ``plug_ra`` differ by less)."""


def _comparable(col, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(values, missing) of a source column as the canonical column ``name`` reads it."""
    typ = schema.TYPES[name]
    if name == schema.CLASS:
        text = _to_text(col)
        text = pc.cast(col, pa.string(), safe=False) if text is None else text
        text = pc.utf8_upper(pc.utf8_trim_whitespace(text.fill_null("")))
        return _np(text).astype(object), _missing_text(text)
    if pa.types.is_integer(typ):
        vals, m = _parse_uint(col, 64)
        return vals, m["missing"] | m["sentinel"]
    v, _ = _parse_float(col)
    missing = np.isnan(v) | np.isin(v, schema.SENTINELS)
    return (v.astype(np.float32).astype(np.float64) if typ == pa.float32() else v), missing


def refuse_differing_alternates(raw: pa.Table, mapping, alternates) -> None:
    """``schema.ColumnError`` naming both columns when a column the rules would also fill a canonical column
    from holds other values than the one mapped to it (never one of them chosen silently). Values that are equal
    as the canonical column stores them are the same (float32 magnitudes; positions within an arcsecond); a
    value beside a missing one differs."""
    src_of = {canon: src for src, canon in pairs_of(mapping) if src in raw.column_names}
    for alt, canon in alternates:
        chosen = src_of.get(canon)
        if chosen is None or alt not in raw.column_names or alt == chosen:
            continue
        a, a_missing = _comparable(raw.column(chosen), canon)
        b, b_missing = _comparable(raw.column(alt), canon)
        both = ~a_missing & ~b_missing
        if canon in ("alpha", "delta"):
            d = np.abs(np.where(both, a, 0.0) - np.where(both, b, 0.0))
            if canon == "alpha":
                d = np.minimum(d, 360.0 - d)
            unequal = both & (d > ARCSECOND)
        else:
            unequal = both & (a != b)
        differ = unequal | (a_missing != b_missing)
        n = int(differ.sum())
        if n:
            k = int(np.flatnonzero(differ)[0])
            shown = {c: ("missing" if (v := raw.column(c)[k].as_py()) is None or v == "" else v) for c in (alt, chosen)}
            raise schema.ColumnError(
                f"columns {alt} and {chosen} both give {canon} and differ in {n:,} of {len(differ):,} rows (first: "
                f"{alt} {shown[alt]}, {chosen} {shown[chosen]}); astrodask never picks one silently: say which "
                f"fills {canon} with --columns {chosen}={canon} or --columns {alt}={canon}, or drop one")


@dataclass
class Checked:
    """One chunk checked: rows kept, rows rejected (reason, row, record), rows removed by each named cut."""

    good: pa.Table
    rejected: pa.Table
    filtered: dict[str, int]
    kept: np.ndarray | None = None
    """Position in the chunk of each row of ``good``."""


def validate(raw: pa.Table | pd.DataFrame, mapping: dict[str, str] | tuple, out_columns=None,
             utf8_replaced: bool = False, *, row_ids=None) -> tuple[pa.Table, pa.Table]:
    """Split one table into (valid rows in the canonical schema, rejected rows); see :func:`check`."""
    c = check(raw, mapping, out_columns, utf8_replaced, row_ids=row_ids)
    return c.good, c.rejected


def check(raw: pa.Table | pd.DataFrame, mapping: dict[str, str] | tuple, out_columns=None,
          utf8_replaced: bool = False, *, row_ids=None, cuts: dict | None = None,
          rejects: dict | None = None, alternates=()) -> Checked:
    """Check one chunk: (valid rows in the canonical schema, rejected rows, rows removed by each cut).

    ``cuts`` (name -> mask) remove rows before any check (counted in ``filtered``, neither kept nor rejected);
    ``rejects`` (reason -> mask) are reasons the reader already knows. ``raw`` has the source columns (text for
    CSV, typed for Parquet/FITS). Rejected rows come back as a table
    with ``reason`` (the first rule the row broke), ``row`` (position in ``raw``) and ``record`` (the row's
    original values as JSON). Rows whose id repeats an earlier valid row of the chunk are rejected as
    ``duplicate_id``. ``out_columns`` (default: the mapped columns) are the output columns; absent ones are
    null. Only rejected rows are touched one by one.

    ``row_ids`` (an ``ingest.ids.RowIds``: file tag and each row's position in its file) generates ``obj_ID``
    instead of reading it, and keeps the source's id text in ``source_obj_ID`` (``spec_obj_ID``'s in
    ``source_spec_obj_ID``; a ``spec_obj_ID`` that is not an exact integer is then null, not rejected) and the
    position in ``source_row``.

    ``alternates`` ((source, canonical) pairs, ``schema.ColumnMap.alternates``): other columns that fill a mapped
    canonical column by the rules; where their values differ from the mapped column's, ``schema.ColumnError``.
    """
    if isinstance(raw, pd.DataFrame):
        raw = pa.Table.from_pandas(raw.reset_index(drop=True), preserve_index=False)
    refuse_differing_alternates(raw, mapping, alternates)
    n = raw.num_rows
    reasons = _Reasons(n)
    filtered = {name: int(reasons.filter(np.asarray(mask, bool)).sum()) for name, mask in (cuts or {}).items()}
    for why, mask in (rejects or {}).items():
        reasons.reject(np.asarray(mask, bool), why)
    if utf8_replaced:
        bad = np.zeros(n, bool)
        for c in raw.column_names:
            col = raw.column(c)
            if _is_text(col.type):
                bad |= _np(pc.match_substring(col, "\ufffd"))
        reasons.reject(bad, "invalid_utf8")
    arrays = _canonical_arrays(raw, mapping, reasons, row_ids)
    ok = reasons.ok
    if ok.any():
        ids = arrays[schema.ID].to_numpy()
        dup = np.zeros(n, bool)
        dup[ok] = pd.Series(ids[ok]).duplicated(keep="first").to_numpy()
        reasons.reject(dup, "duplicate_id")
        ok = reasons.ok
    cols = list(out_columns) if out_columns else [c for c in schema.ALL_COLUMNS if c in arrays]
    out_schema = schema.arrow_schema(cols)
    keep = None if ok.all() else pa.array(ok)
    good = pa.table({
        c: (arrays[c] if keep is None else arrays[c].filter(keep)) if c in arrays
        else pa.nulls(int(ok.sum()), schema.TYPES[c])
        for c in cols
    }, schema=out_schema)
    bad_idx = np.flatnonzero(reasons.code >= 0)
    records = raw.take(pa.array(bad_idx, pa.int64())).to_pylist() if len(bad_idx) else []
    rejected = pa.table({
        "reason": pa.array(reasons.of(bad_idx), pa.string()),
        "row": pa.array(bad_idx, pa.int64()),
        "record": pa.array([json.dumps(r, default=str) for r in records], pa.string()),
    })
    return Checked(good, rejected, filtered, np.flatnonzero(ok))

