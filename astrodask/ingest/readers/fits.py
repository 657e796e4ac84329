"""FITS binary tables (e.g. specObj-dr17.fits) read in row ranges with astropy, array columns flattened.

SDSS stores the five bands as 5-element array columns (``MODELMAG``, ``PSFMAG``...): they become
``MODELMAG_u`` ... ``MODELMAG_z``, which the schema aliases map to ``u`` ... ``z``. When band arrays are
present, a scalar ``Z`` column is the spectroscopic redshift, not the z band. Big-endian columns come out in
native byte order, fixed-width strings (``CLASS = 'GALAXY  '``) as text (trailing blanks are trimmed by the
validation), integer values equal to a column's ``TNULL`` as nulls. Variable-length arrays, bit fields and
multi-dimensional arrays are not carried.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from ... import schema
from ...errors import AstrodaskError
from ...storage import Location
from .base import Block, Chunk, Extent, Probe, Reader, ReaderOptions, RowRange


def open_fits(loc: Location, path: str):
    """The FITS file at ``loc`` (memory-mapped when local and uncompressed); ``path`` is the name errors show."""
    from astropy.io import fits

    quiet_astropy()  # astropy's verification chatter; errors are reported in one line below
    try:
        if not loc.is_local:
            return fits.open(loc.url, use_fsspec=True, fsspec_kwargs=loc.options, lazy_load_hdus=True)
        return fits.open(loc.url, memmap=not loc.url.lower().endswith((".gz", ".bz2")), lazy_load_hdus=True)
    except (OSError, ValueError, TypeError, EOFError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise AstrodaskError(f"{path}: not a readable FITS file ({msg}); check the file") from None


_QUIET = threading.Lock()
_TABLES = threading.RLock()
"""Held while astropy builds a table's columns. It parses their formats with ``ast.literal_eval`` (through
numpy's dtype strings), and CPython 3.11's AST constructor keeps its recursion depth in state shared by the
threads: two worker threads parsing at once fail now and then with "SystemError: AST constructor recursion depth
mismatch" (python/cpython#106905), which failed whole conversions. Reads of one process's threads take turns."""
_FITS_MODULES = (r"astropy\.io\.fits(\..*)?", r"astrodask\.ingest\.readers\.fits")


def quiet_astropy() -> None:
    """Ignore astropy's FITS warnings (raised in astropy.io.fits or attributed to this module), process-wide.

    Installed once, not per call with ``warnings.catch_warnings()``: the filters are one process-global list,
    and catch_warnings in worker threads (two blocks read at a time) saves and restores it across each other,
    leaving any thread's state, e.g. "ignore everything", to the whole process (pytest's checks included)."""
    from astropy.utils.exceptions import AstropyWarning

    with _QUIET:
        present = {(f[0], getattr(f[2], "__name__", None), getattr(f[3], "pattern", None)) for f in warnings.filters}
        for module in _FITS_MODULES:
            if ("ignore", AstropyWarning.__name__, module) not in present:
                warnings.filterwarnings("ignore", category=AstropyWarning, module=module)


def table_hdu(hdul, path: str):
    try:
        quiet_astropy()
        hdus = list(hdul[1:])
        for hdu in hdus:
            if hdu.header.get("XTENSION") == "BINTABLE":
                return hdu
    except (OSError, ValueError, IndexError) as exc:
        raise AstrodaskError(f"{path}: damaged FITS file ({exc}); check the file") from None
    raise AstrodaskError(f"{path}: no binary table extension; give a FITS file with a table in HDU 1 or later")


def _width(col) -> int:
    """Number of scalar values per row (1 for scalars and strings), 0 for columns that are not carried."""
    fmt = str(col.format).upper()
    code = fmt.lstrip("0123456789")[:1]
    if code in ("P", "Q", "X", "C", "M"):  # variable-length arrays, bits, complex numbers
        return 0
    if code == "A":  # strings: the repeat count is the width in characters
        return 1
    dim = col.dim
    if dim:
        shape = tuple(int(x) for x in str(dim).strip("()").split(",") if x.strip())
        if code != "A" and len(shape) != 1:
            return 0
        return shape[0]
    rep = fmt[: len(fmt) - len(fmt.lstrip("0123456789"))]
    return int(rep) if rep else 1


def _layout(hdu) -> list[tuple[str, str, int | None]]:
    """(source column, flattened name, array index or None) for every readable column."""
    cols = hdu.columns
    has_bands = any(_width(c) == len(schema.BANDS) for c in cols)
    out = []
    for c in cols:
        w = _width(c)
        if w == 1:
            name = schema.REDSHIFT if (has_bands and c.name.strip().lower() == "z") else c.name
            out.append((c.name, name, None))
        elif w == len(schema.BANDS):
            out.extend((c.name, f"{c.name}_{b}", k) for k, b in enumerate(schema.BANDS))
        elif w > 1:
            out.extend((c.name, f"{c.name}_{k}", k) for k in range(w))
    return out


def fits_info(loc: Location, path: str) -> tuple[list[str], int, int, list[str]]:
    """(flattened column names, row count, bytes per row, columns not carried with why) of the first binary
    table; reads the header only."""
    with _TABLES, open_fits(loc, path) as hdul:
        hdu = table_hdu(hdul, path)
        skipped = [f"{c.name} ({_why_not(c)})" for c in hdu.columns if _width(c) == 0]
        return ([name for _, name, _ in _layout(hdu)], int(hdu.header.get("NAXIS2", 0)),
                max(1, int(hdu.header.get("NAXIS1", 1))), skipped)


def _why_not(col) -> str:
    code = str(col.format).upper().lstrip("0123456789")[:1]
    kinds = {"P": "variable-length array", "Q": "variable-length array", "X": "bit field", "C": "complex",
             "M": "complex"}
    return kinds.get(code) or f"array of shape {col.dim}; only scalars and 1-D arrays are read"


def _native(col: np.ndarray) -> np.ndarray:
    if col.dtype.byteorder not in ("=", "|"):
        col = col.astype(col.dtype.newbyteorder("="))
    return col


def read_fits_rows(loc: Location, path: str, start: int, length: int) -> pa.Table:
    """Rows ``[start, start+length)`` as an Arrow table of flattened columns (called on workers)."""
    with _TABLES, open_fits(loc, path) as hdul:
        hdu = table_hdu(hdul, path)
        try:
            data = hdu.data[start:start + length]
            n = len(data)
            out: dict[str, pa.Array] = {}
            for src, name, k in _layout(hdu):
                fcol = hdu.columns[src]
                col = np.asarray(data[src])
                if k is not None:
                    col = col.reshape(n, -1)[:, k]
                if col.dtype.kind == "S":
                    col = np.char.decode(col, "ascii", errors="replace")
                col = _native(col)
                mask = None
                null = getattr(fcol, "null", None)
                if null is not None and col.dtype.kind in "iu" and not isinstance(null, str):
                    try:
                        mask = col == np.array(null).astype(col.dtype)
                    except (ValueError, OverflowError, TypeError):
                        mask = None
                out[name] = pa.array(col, mask=mask)
        except (OSError, ValueError, TypeError, EOFError) as exc:
            raise AstrodaskError(f"{path}: cannot read rows {start}..{start + length} ({exc}); "
                                 "check the file") from None
        return pa.table(out)


@dataclass(frozen=True)
class FitsTable:
    """Header facts of a FITS binary table."""

    row_bytes: int


class FitsReader(Reader):
    name = "fits"
    extensions = (".fits", ".fit", ".fts")

    def probe(self, loc: Location, source: str, options: ReaderOptions) -> Probe:
        cols, nrows, row_bytes, unread = fits_info(loc, source)
        header = tuple(c.strip() for c in cols)
        return Probe(source, loc, self.name, tuple(schema.unique_names(list(header))), nrows * row_bytes, nrows,
                     tuple(unread), layout="fits", detail=FitsTable(row_bytes), header=header)

    def plan(self, probe: Probe, block_bytes: int) -> list[tuple[Extent, int | None]]:
        step = max(1, block_bytes // probe.detail.row_bytes)
        return [(RowRange(s, min(step, probe.nrows - s)), s) for s in range(0, probe.nrows, step)]

    def read(self, block: Block) -> Iterator[Chunk]:
        e: RowRange = block.extent
        yield Chunk(read_fits_rows(block.location, block.source, e.start, e.length))


def read_columns(loc: Location, path: str, start: int, length: int, names: list[str]) -> dict[str, np.ndarray]:
    """Columns ``names`` of rows ``[start, start+length)`` of the first binary table, as native-endian NumPy
    arrays (5-element arrays as (n, 5); strings decoded and stripped). Only those columns' bytes are touched
    (the file is memory-mapped when local and uncompressed)."""
    with _TABLES, open_fits(loc, path) as hdul:
        hdu = table_hdu(hdul, path)
        out = {}
        try:
            data = hdu.data[start:start + length]
            for name in names:
                col = np.asarray(data[name])
                if col.dtype.kind == "S":
                    col = np.char.strip(np.char.decode(col, "ascii", errors="replace"))
                elif col.dtype.kind == "U":
                    col = np.char.strip(col)
                out[name] = _native(col).copy()
        except (OSError, ValueError, TypeError, EOFError, KeyError) as exc:
            raise AstrodaskError(f"{path}: cannot read rows {start}..{start + length} ({exc}); "
                                 "check the file") from None
        return out
