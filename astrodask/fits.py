"""FITS binary tables (e.g. specObj-dr17.fits) read in row ranges with astropy, array columns flattened.

SDSS stores the five bands as 5-element array columns (``MODELMAG``, ``PSFMAG``...): they become
``MODELMAG_u`` ... ``MODELMAG_z``, which the schema aliases map to ``u`` ... ``z``. When band arrays are
present, a scalar ``Z`` column is the spectroscopic redshift, not the z band.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import schema
from .errors import AstrodaskError


def _open(path: str):
    from astropy.io import fits

    try:
        return fits.open(path, memmap=True, use_fsspec="://" in path, lazy_load_hdus=True)
    except (OSError, ValueError) as exc:
        raise AstrodaskError(f"{path}: not a readable FITS file ({exc}); check the file") from None


def _table_hdu(hdul, path: str):
    for hdu in hdul[1:]:
        if hdu.header.get("XTENSION") == "BINTABLE":
            return hdu
    raise AstrodaskError(f"{path}: no binary table extension; give a FITS file with a table in HDU 1 or later")


def _layout(hdu) -> list[tuple[str, str, int | None]]:
    """(source column, flattened name, array index or None) for every readable column."""
    cols = hdu.columns
    has_bands = any(_width(c) == len(schema.BANDS) for c in cols)
    out = []
    for c in cols:
        w = _width(c)
        if w == 1:
            name = "redshift" if (has_bands and c.name.lower() == "z") else c.name
            out.append((c.name, name, None))
        elif w == len(schema.BANDS):
            out.extend((c.name, f"{c.name}_{b}", k) for k, b in enumerate(schema.BANDS))
        else:
            out.extend((c.name, f"{c.name}_{k}", k) for k in range(w))
    return out


def _width(col) -> int:
    dim = col.dim
    if dim:
        shape = tuple(int(x) for x in dim.strip("()").split(","))
        return int(np.prod(shape)) if len(shape) == 1 else -1
    fmt = col.format
    rep = "".join(ch for ch in str(fmt) if ch.isdigit())
    if str(fmt).rstrip("0123456789").endswith("A"):  # strings: repeat count is the width in characters
        return 1
    return int(rep) if rep else 1


def fits_columns(path: str) -> tuple[list[str], int]:
    """Flattened column names and row count of the first binary table."""
    with _open(path) as hdul:
        hdu = _table_hdu(hdul, path)
        return [name for _, name, _ in _layout(hdu)], int(hdu.header.get("NAXIS2", 0))


def read_fits_rows(path: str, start: int, length: int) -> pd.DataFrame:
    """Rows ``[start, start+length)`` as a DataFrame of flattened columns."""
    with _open(path) as hdul:
        hdu = _table_hdu(hdul, path)
        data = hdu.data[start:start + length]
        out = {}
        for src, name, k in _layout(hdu):
            col = np.asarray(data[src])
            if k is not None:
                col = col.reshape(len(data), -1)[:, k]
            if col.dtype.kind == "S":
                col = np.char.decode(col, "ascii", errors="replace")
            if col.dtype.byteorder not in ("=", "|"):
                col = col.astype(col.dtype.newbyteorder("="))
            out[name] = col
        return pd.DataFrame(out)
