"""CSV (and gzip/bz2/xz/zstd CSV): Kaggle SDSS17 or SkyServer/CasJobs exports.

The client reads the first 64 KiB (header line, delimiter); an uncompressed file is cut into byte ranges,
a compressed one is one block read in pieces that end at a line end. Values are read as text: the validation
parses them. One non-blank line is one row whatever its quotes (quotes are stripped from values, never joined
across lines), so the row count never depends on where blocks are cut.
"""

from __future__ import annotations

import csv as _csv
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from ... import schema
from ...errors import AstrodaskError
from ...storage import Location
from .base import Block, Chunk, Extent, MiB, Probe, Reader, ReaderOptions, one_line, open_input

HEADER_PROBE = 1 << 16
COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst", ".lz4")
COMPRESSED_CHUNK = 64 * MiB
"""Bytes of a compressed CSV decompressed and validated at a time (at most)."""


def split_ext(path: str) -> tuple[str, str | None]:
    """(extension without compression suffix, compression suffix or None), lower case."""
    low = path.lower().split("?", 1)[0]
    comp = next((c for c in COMPRESSIONS if low.endswith(c)), None)
    if comp:
        low = low[: -len(comp)]
    return Path(low).suffix, comp


@dataclass(frozen=True)
class CsvHeader:
    """Header facts of one CSV file."""

    delimiter: str
    data_offset: int
    """Byte offset (in the decompressed text) of the first data line, after the header and #comment lines."""
    compression: str | None
    """fsspec compression name, or None."""


@dataclass(frozen=True)
class ByteRange(Extent):
    """A CSV block: the lines starting after the first newline at or after ``start`` and at or before
    ``start + length`` (``length`` -1: the whole compressed file)."""

    start: int
    length: int
    delimiter: str = ","
    compression: str | None = None
    data_offset: int = 0
    chunk_bytes: int = COMPRESSED_CHUNK


def _compression(path: str) -> str | None:
    import fsspec

    return fsspec.utils.infer_compression(path) if split_ext(path)[1] else None


def read_header(loc: Location, source: str) -> tuple[list[str], int, CsvHeader]:
    """(column names, size in bytes, header facts); one-line errors for files that are not a text CSV."""
    comp = _compression(loc.url)
    try:
        with open_input(loc, comp) as fh:
            head = fh.read(HEADER_PROBE)
        size = loc.size()
    except (OSError, EOFError, ValueError) as exc:
        raise AstrodaskError(f"{source}: cannot read ({one_line(exc)}); the file is damaged or truncated, check it "
                             "or download it again") from None
    if not head.strip():
        raise AstrodaskError(f"{source}: file is empty; give a CSV with a header row and data")
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise AstrodaskError(f"{source}: is UTF-16 text (as spreadsheets save \"Unicode text\"); re-export it as a "
                             "UTF-8 CSV")
    if b"\x00" in head:
        raise AstrodaskError(f"{source}: is not a text CSV (binary data); give a CSV, Parquet or FITS file")
    offset = 0
    lines = head.split(b"\n")
    k = 0
    # skip blank lines and SkyServer's "#Table1" style comment lines before the header
    while k < len(lines) - 1 and (not lines[k].strip() or lines[k].lstrip().startswith(b"#")):
        offset += len(lines[k]) + 1
        k += 1
    if k == len(lines) - 1 and len(head) == HEADER_PROBE:
        raise AstrodaskError(f"{source}: no header line in the first {HEADER_PROBE // 1024} KiB; give a CSV with a "
                             "header row")
    line = lines[k].rstrip(b"\r")
    offset += len(lines[k]) + 1
    try:
        text = line.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise AstrodaskError(f"{source}: header row is not UTF-8 text; re-export the file as UTF-8 CSV") from None
    if sum(ch < " " and ch != "\t" for ch in text):
        raise AstrodaskError(f"{source}: is not a text CSV (binary data); give a CSV, Parquet or FITS file")
    delim = max(("\t", ",", ";", "|"), key=text.count)
    if text.count(delim) == 0:
        delim = "\t" if split_ext(loc.url)[0] == ".tsv" else ","
    cols = [c.strip() for c in next(_csv.reader([text], delimiter=delim))]
    if len(cols) < 2:
        raise AstrodaskError(f"{source}: first line is not a CSV header ({text[:60]!r}); give a CSV with a "
                             "header row")
    return cols, size, CsvHeader(delim, offset, comp)


class CsvReader(Reader):
    name = "csv"
    extensions = (".csv", ".txt", ".tsv", ".dat")

    def probe(self, loc: Location, source: str, options: ReaderOptions) -> Probe:
        cols, size, head = read_header(loc, source)
        return Probe(source, loc, self.name, tuple(schema.unique_names(cols)), size, layout="csv", detail=head,
                     header=tuple(cols))

    def plan(self, probe: Probe, block_bytes: int) -> list[tuple[Extent, int | None]]:
        head: CsvHeader = probe.detail
        if head.compression is not None:
            return [(ByteRange(0, -1, head.delimiter, head.compression, head.data_offset,
                               min(block_bytes, COMPRESSED_CHUNK)), 0)]
        out: list[tuple[Extent, int | None]] = []
        if head.data_offset < probe.nbytes:
            # a block starts at the newline before its first line (see ByteRange); one starting at the last
            # byte would hold nothing
            for s in range(head.data_offset - 1, probe.nbytes - 1, block_bytes):
                out.append((ByteRange(s, min(block_bytes, probe.nbytes - s), head.delimiter, None,
                                      head.data_offset), 0 if s == head.data_offset - 1 else None))
        return out

    def read(self, block: Block) -> Iterator[Chunk]:
        for data in _pieces(block):
            yield _parse(data, block)


def _pieces(b: Block):
    """The block's text in pieces that end at a line end (one piece unless the file is compressed)."""
    import fsspec

    e: ByteRange = b.extent
    try:
        if e.compression is None:
            with open_input(b.location) as fh:
                yield fsspec.utils.read_block(fh, e.start, e.length, delimiter=b"\n")
            return
        with open_input(b.location, e.compression) as fh:
            skip = e.data_offset
            while skip > 0:
                got = fh.read(min(skip, MiB))
                if not got:
                    return
                skip -= len(got)
            rest = b""
            while True:
                buf = fh.read(e.chunk_bytes)
                if not buf:
                    if rest:
                        yield rest
                    return
                if rest:
                    buf = rest + buf
                cut = buf.rfind(b"\n")
                if cut < 0:
                    rest = buf
                    continue
                rest = buf[cut + 1:]
                yield buf[: cut + 1]
    except (OSError, EOFError, ValueError) as exc:  # e.g. a truncated .gz: gzip raises EOFError
        raise AstrodaskError(f"{b.source}: cannot read ({one_line(exc)}); the file is damaged or truncated, "
                             "check it or download it again") from None


_BLANK = re.compile(rb"\s*")


def _parse(data: bytes, b: Block) -> Chunk:
    utf8_replaced = False
    if not data.isascii():
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            # keep the rows: bad bytes become U+FFFD and those rows are quarantined as invalid_utf8
            data = data.decode("utf-8", errors="replace").encode("utf-8")
            utf8_replaced = True
    malformed: list[tuple[int, str]] = []

    def on_bad(row):
        malformed.append((row.number if row.number is not None else -1, row.text))
        return "skip"

    if _BLANK.fullmatch(data):  # fails at the first non-blank byte: no copy of the block
        return Chunk(pa.table({c: pa.array([], pa.string()) for c in b.columns}), malformed)
    # One line is one row, whatever its quotes: a quote left open must not swallow the lines after it (and
    # make the row count depend on where blocks are cut), so quotes are not parsed but stripped afterwards.
    table = pacsv.read_csv(
        pa.BufferReader(pa.py_buffer(data)),
        read_options=pacsv.ReadOptions(column_names=list(b.columns), use_threads=False,
                                       block_size=max(1 << 20, min(len(data) + 1, 1 << 30))),
        parse_options=pacsv.ParseOptions(delimiter=b.extent.delimiter, quote_char=False, invalid_row_handler=on_bad),
        convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in b.columns},
                                             strings_can_be_null=False),
    )
    if b'"' in data:
        table = _unquote(table)
    return Chunk(table, malformed, utf8_replaced)


def _unquote(table: pa.Table) -> pa.Table:
    """``"GALAXY"`` -> ``GALAXY`` (and ``""`` -> ``"`` inside), in the columns that hold quotes."""
    for k, name in enumerate(table.column_names):
        col = table.column(k)
        if pc.any(pc.match_substring(col, '"')).as_py():
            col = pc.replace_substring(pc.replace_substring_regex(col, r'^\s*"(.*)"\s*$', r"\1"), '""', '"')
            table = table.set_column(k, name, col)
    return table
