"""The reader interface: one reader per input layout (CSV, Parquet, FITS, SDSS bulk files...).

A reader is a stateless object registered under a name. The client calls ``probe`` (headers and footers only)
and ``plan`` (cut the file into blocks); the workers call ``read`` on one block at a time. Everything that
crosses from the client to the workers is a frozen dataclass: a :class:`Block` with its reader's own
:class:`Extent`. ``read`` yields :class:`Chunk` tables whose columns are the block's source columns (the keys
of ``Block.mapping``); a reader that derives columns (magnitudes from fluxes, ids from their parts) gives them
canonical names and maps them to themselves.

Adding a layout = one module under ``readers/`` with a :class:`Reader` subclass, listed in ``readers.READERS``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from ...storage import Location

MiB = 1 << 20


@dataclass(frozen=True)
class ReaderOptions:
    """What a conversion tells the readers: the convert options that decide how a file is read."""

    magnitudes: str | None = None
    """Which magnitudes fill u..z (``model``, ``psf``, ``cmodel``; None: model, or the one system a file has)."""
    deredden: bool = False
    photometry: str | None = None
    """A specObj file's row-matched photometry (photoPosPlate)."""
    cuts: bool = True
    storage_options: dict = field(default_factory=dict, hash=False, compare=False)
    columns: tuple[tuple[str, str], ...] = ()
    """``--columns``: (source column, canonical column) pairs that come before the name rules."""

    @classmethod
    def of(cls, cfg) -> ReaderOptions:
        """The reader options of a ConvertConfig."""
        from ...schema import parse_overrides

        return cls(cfg.magnitudes, cfg.deredden, cfg.photometry, cfg.cuts, dict(cfg.storage_options),
                   parse_overrides(cfg.columns))


@dataclass(frozen=True)
class Extent:
    """Where a block lies in its file; each reader subclasses it with its own fields."""


@dataclass(frozen=True)
class RowRange(Extent):
    """Rows ``[start, start + length)`` of a table (FITS rows, Parquet row groups)."""

    start: int
    length: int


@dataclass(frozen=True)
class Probe:
    """What ``Reader.probe`` learnt from a file's header: enough to map and plan it, no data rows."""

    source: str
    """The input as it was named (URL or absolute path)."""
    location: Location
    reader: str
    """Name of the reader that recognised the file."""
    columns: tuple[str, ...]
    """Source column names, made unique (``z``, ``z.1``); array columns flattened (``MODELMAG_u``)."""
    nbytes: int
    """Bytes of data (for the automatic block size)."""
    nrows: int | None = None
    """Rows, when the header says (Parquet, FITS)."""
    unread: tuple[str, ...] = ()
    """Columns that cannot be read, with why (shown when a required column is missing)."""
    layout: str = ""
    """Layout name shown in the summary (``csv``, ``parquet``, ``fits``, ``sdss-specobj``...)."""
    detail: object = None
    """Reader-specific header facts (delimiter, row groups, row bytes...): a frozen dataclass."""
    header: tuple[str, ...] = ()
    """The names as the file gives them (stripped, repeats kept), when they can repeat: a name given twice is
    refused unless ``--columns`` says which fills it."""


@dataclass(frozen=True)
class Block:
    """One unit of work: a slice of one input file, read, validated and written by one worker task."""

    index: int
    source: str
    """The input as it was named (URL or absolute path): what summaries and the quarantine report."""
    location: Location
    """The input as the workers open it (with its storage options)."""
    reader: str
    extent: Extent
    columns: tuple[str, ...]
    """Source column names (unique) of the file."""
    mapping: tuple[tuple[str, str], ...]
    """(source column, canonical column) pairs; a source column may fill several canonical ones."""
    out_columns: tuple[str, ...] = ()
    """Canonical columns of every output part (the union over all inputs)."""
    first_row: int | None = None
    """Position of the block's first row in its file, when known (row ranges; CSV after the counting pass)."""
    options: object = None
    """Reader-specific options fixed at planning (e.g. which magnitudes, cuts): a frozen dataclass."""
    id_tag: int | None = None
    """With ``--row-ids``: the file's tag; ``obj_ID`` is generated from it and each row's position (ingest.ids)."""
    alternates: tuple[tuple[str, str], ...] = ()
    """(source column, canonical column): other columns the rules fill a canonical column from
    (``schema.ColumnMap.alternates``); read too, and compared with the one in ``mapping``."""


@dataclass
class Chunk:
    """Rows read from part of a block, as the reader hands them to the validation."""

    table: pa.Table
    """The block's source columns (text for CSV, typed for Parquet and FITS)."""
    malformed: list[tuple[int, str]] = field(default_factory=list)
    """Lines the parser could not split: (line number from 1 among the chunk's non-blank lines, text)."""
    utf8_replaced: bool = False
    """Invalid UTF-8 bytes were replaced by U+FFFD (those rows are quarantined as ``invalid_utf8``)."""
    cuts: dict[str, np.ndarray] = field(default_factory=dict)
    """Named quality cuts: cut name -> rows it removes (counted as filtered, not quarantined)."""
    rejects: dict[str, np.ndarray] = field(default_factory=dict)
    """Reasons the reader already knows: reason -> rows to quarantine with it (e.g. an id mismatch)."""

    @property
    def rows(self) -> int:
        return self.table.num_rows + len(self.malformed)


class Reader(ABC):
    """One input layout. Subclasses set ``name`` and implement ``probe``, ``plan`` and ``read``."""

    name: str = ""
    extensions: tuple[str, ...] = ()
    """File name endings this reader is tried on (after a compression suffix is removed)."""

    @abstractmethod
    def probe(self, loc: Location, source: str, options: ReaderOptions) -> Probe | None:
        """Read the file's header (client side); None when the file is not this reader's layout.

        ``source`` is the name errors show."""

    def columns(self, probe: Probe, options: ReaderOptions):
        """How the file's columns fill the canonical ones (a ``schema.ColumnMap``); the default resolves the
        names with ``schema.resolve_columns`` and the conversion's ``magnitudes`` / ``deredden`` options."""
        from ... import schema

        names = list(probe.header or probe.columns)  # resolve_columns makes them unique as the reader did
        return schema.resolve_columns(names, options.magnitudes, options.deredden, options.columns)

    def block_options(self, probe: Probe, options: ReaderOptions):
        """Reader-specific options every block of the file carries to the workers (a frozen dataclass)."""
        return None

    @abstractmethod
    def plan(self, probe: Probe, block_bytes: int) -> list[tuple[Extent, int | None]]:
        """Cut the file into extents, each with the position of its first row when known (client side)."""

    @abstractmethod
    def read(self, block: Block) -> Iterator[Chunk]:
        """The block's rows, one chunk at a time (worker side)."""


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message (or its type)."""
    msg = str(exc).strip().splitlines()
    return msg[0] if msg else type(exc).__name__


def open_input(loc: Location, compression: str | None = None):
    """An fsspec OpenFile for reading ``loc`` (local path or URL with its storage options)."""
    import fsspec

    return fsspec.open(loc.url, "rb", compression=compression, **loc.options)
