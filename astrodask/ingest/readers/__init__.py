"""The registry of input readers. A file is offered to the readers whose extensions match its name, in
``READERS`` order (layouts recognised from their columns come before the generic reader of their format);
the first whose ``probe`` accepts it reads it. Files with an unknown extension are read as CSV."""

from __future__ import annotations

from ...storage import Location
from .base import Block, Chunk, Extent, Probe, Reader, ReaderOptions, RowRange
from .csv import CsvReader, split_ext
from .fits import FitsReader
from .hats import HatsReader
from .parquet import ParquetReader
from .sdss import SdssReader

READERS: tuple[Reader, ...] = (HatsReader(), ParquetReader(), SdssReader(), FitsReader(), CsvReader())
BY_NAME = {r.name: r for r in READERS}
EXTENSIONS = frozenset(e for r in READERS for e in r.extensions)
FALLBACK = "csv"


def get(name: str) -> Reader:
    return BY_NAME[name]


def probe(loc: Location, source: str, options: ReaderOptions) -> Probe:
    """The first registered reader that recognises the file; its probe (headers only)."""
    ext, _ = split_ext(loc.url)
    candidates = [r for r in READERS if ext in r.extensions] or [BY_NAME[FALLBACK]]
    for reader in candidates:
        found = reader.probe(loc, source, options)
        if found is not None:
            return found
    return BY_NAME[FALLBACK].probe(loc, source, options)  # pragma: no cover - the generic readers accept all


__all__ = ["EXTENSIONS", "READERS", "Block", "Chunk", "Extent", "Probe", "Reader", "ReaderOptions", "RowRange", "get",
           "probe"]
