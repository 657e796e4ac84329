"""Stage 1: catalogue files (CSV, Parquet, FITS; local paths or fsspec URLs) -> validated Parquet dataset.

The client only plans: it reads each file's header (CSV header line, Parquet footer, FITS header) and cuts the
input into blocks (byte ranges of a CSV, row groups of a Parquet file, row ranges of a FITS table). Workers
read, validate and write one block each: valid rows to ``part-NNNNN.parquet`` in the canonical schema,
rejected rows to ``_quarantine/part-NNNNN.parquet`` with a reason and the raw record. A second pass on the
workers moves repeated ids (all but the first occurrence, in input order) to ``_quarantine/dup-NNNNN.parquet``.
For every block, rows read = rows written + rows quarantined; the totals are checked again before commit.

Validation is vectorised (Arrow compute kernels and NumPy on whole columns); only rejected rows are handled
one by one (to keep their raw text). Reasons are ``reason:column`` strings, the first rule a row broke:

==========================  ===========================================================================
``malformed_row``           the CSV parser could not split the line into the header's fields
``invalid_utf8``            the line holds bytes that are not UTF-8
``invalid_id:obj_ID``       missing, negative, non-integer or too large id
``id_float_notation:COL``   an integer column written like ``1.24E+18`` (digits lost by a spreadsheet)
``not_integer:COL``         non-integer text in an integer column
``out_of_range:COL``        coordinates outside [0, 360] / [-90, 90], integers too large for the column
``non_numeric:COL``         text that is not a number in a numeric column
``non_finite:COL``          +-inf
``missing_class``           empty class cell (when the input has a class column)
``unknown_class``           class other than GALAXY, QSO, STAR (compared after trimming, any case)
``duplicate_id``            an obj_ID already seen earlier in the input
==========================  ===========================================================================

Missing values (empty, ``NaN``, ``null``...) and SDSS sentinels (-9999, -999, 9999; for integer columns
-9999 and -999) become nulls; the id is never null.

Quarantine rows hold ``reason``, ``source`` (the input file), ``block``, ``row`` (position among the block's
rows, blank lines not counted) and ``record`` (the raw row as JSON: text for CSV). Rows moved by the duplicate
pass name their part file as ``source`` and their row in it, with the converted values as ``record``.
CSV quotes are stripped from values but never join lines: one non-blank line is one row.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from . import schema
from .console import log, track
from .errors import AstrodaskError, ConfigError
from .storage import StagedOutput, is_complete, parquet_rows, write_json_atomic

QUARANTINE_DIR = "_quarantine"
BLOCKS_DIR = "_blocks"
MiB = 1 << 20
MIN_BLOCK, MAX_BLOCK = 1 * MiB, 256 * MiB
ROW_GROUPS_PER_CHUNK = 4
PARQUET_BLOCK_ROWS = 1_000_000
HEADER_PROBE = 1 << 16

_COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst", ".lz4")
_EXTENSIONS = {".parquet": "parquet", ".pq": "parquet", ".fits": "fits", ".fit": "fits", ".fts": "fits",
               ".csv": "csv", ".txt": "csv", ".tsv": "csv", ".dat": "csv"}


@dataclass(frozen=True)
class ConvertConfig:
    """What to convert and where."""

    sources: tuple[str, ...]
    """Input files: local paths, globs, directories or fsspec URLs (CSV, .csv.gz, Parquet, FITS)."""
    dest: str
    """Output dataset directory (must not exist unless ``overwrite``)."""
    block_size: int | None = None
    """Bytes of CSV (or FITS) per block, one output file each; None picks by input size (1 MiB to 256 MiB)."""
    overwrite: bool = False
    """Replace an existing ``dest``."""
    resume: bool = False
    """Continue an interrupted conversion into the same ``dest``, skipping blocks already written."""
    row_group_size: int = 131072
    """Minimum rows per Parquet row group (a block is written as at most a few row groups)."""
    quiet: bool = False
    """No progress bar."""

    def __post_init__(self):
        if isinstance(self.sources, str):
            object.__setattr__(self, "sources", (self.sources,))
        if not self.sources:
            raise ConfigError("sources", "no input files given", "pass at least one CSV, Parquet or FITS path")
        if self.block_size is not None and self.block_size < 4096:
            raise ConfigError("block_size", f"{self.block_size} bytes is too small", "use at least 4096 (e.g. 64MiB)")
        if self.row_group_size < 1:
            raise ConfigError("row_group_size", "must be positive", "use e.g. 131072")


# ---------------------------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class Block:
    """One unit of work: a slice of one input file."""

    index: int
    source: str
    kind: str  # csv | parquet | fits
    start: int  # byte offset (csv: the block holds the lines starting after the first newline at or after it)
    # / first row group (parquet) / first row (fits)
    length: int  # bytes (csv, -1 = whole compressed file) / row groups / rows
    columns: tuple[str, ...]  # source column names, made unique (z, z.1)
    mapping: tuple[tuple[str, str], ...]  # source name -> canonical
    out_columns: tuple[str, ...] = ()  # canonical columns of every output part (the union over all inputs)
    delimiter: str = ","
    compression: str | None = None  # csv: fsspec compression name
    data_offset: int = 0  # csv: byte offset of the first data line (after the header and any #comment lines)
    chunk_bytes: int = 64 * MiB  # csv: bytes decompressed and validated at a time (compressed files)


def _split_ext(path: str) -> tuple[str, str | None]:
    low = path.lower().split("?", 1)[0]
    comp = next((c for c in _COMPRESSIONS if low.endswith(c)), None)
    if comp:
        low = low[: -len(comp)]
    return Path(low).suffix, comp


def _kind(path: str) -> str:
    ext, _ = _split_ext(path)
    return _EXTENSIONS.get(ext, "csv")


def _expand(sources: tuple[str, ...]) -> list[str]:
    """Input files in order (globs sorted, directories expanded to their catalogue files), each once."""
    files: list[str] = []
    for src in sources:
        src = str(src)
        url = "://" in src
        try:
            fs, _, paths = fsspec.get_fs_token_paths(src)
        except (ValueError, ImportError, OSError) as exc:
            raise AstrodaskError(f"{src}: cannot open ({exc}); check the path or URL") from None
        if not paths:
            raise AstrodaskError(f"{src}: no such file; check the path")
        for p in paths:
            try:
                isdir, exists = fs.isdir(p), fs.exists(p)
            except OSError as exc:
                raise AstrodaskError(f"{src}: cannot open ({exc}); check the path or URL") from None
            if isdir:
                inner = sorted(x for x in fs.find(p)
                               if not Path(x).name.startswith(("_", ".")) and _split_ext(x)[0] in _EXTENSIONS)
                if not inner:
                    raise AstrodaskError(f"{src}: directory holds no CSV, Parquet or FITS files")
                files.extend(fs.unstrip_protocol(x) if url else x for x in inner)
            elif exists:
                files.append(fs.unstrip_protocol(p) if url else os.path.abspath(p))
            else:
                raise AstrodaskError(f"{src}: no such file; check the path")
    seen: set[str] = set()
    unique = [f for f in files if not (f in seen or seen.add(f))]
    if len(unique) < len(files):
        log(f"{len(files) - len(unique)} input file(s) named more than once; each is read once")
    return unique


def _required_check(source: str, columns: list[str], mapping: dict[str, str], unread: list[str] = ()) -> None:
    missing = [c for c in schema.REQUIRED if c not in mapping.values()]
    if missing:
        shown = ", ".join(columns[:12]) + (" ..." if len(columns) > 12 else "")
        skipped = f"; not readable: {', '.join(unread)}" if unread else ""
        raise AstrodaskError(
            f"{source}: missing required column(s) {', '.join(missing)} (found: {shown}{skipped}); the input needs "
            "an id (obj_ID or objid) and the magnitudes u, g, r, i, z (FITS: five-element band arrays or scalars)"
        )


def _one_line(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()
    return msg[0] if msg else type(exc).__name__


def _csv_header(path: str) -> tuple[list[str], int, str, int]:
    """(column names, size in bytes, delimiter, offset of the first data line); one-line errors."""
    _, comp = _split_ext(path)
    comp_name = fsspec.utils.infer_compression(path) if comp else None
    try:
        with fsspec.open(path, "rb", compression=comp_name) as fh:
            head = fh.read(HEADER_PROBE)
        fs, p = fsspec.core.url_to_fs(path)
        size = fs.size(p)
    except (OSError, EOFError, ValueError) as exc:
        raise AstrodaskError(f"{path}: cannot read ({_one_line(exc)}); the file is damaged or truncated, check it "
                             "or download it again") from None
    if not head.strip():
        raise AstrodaskError(f"{path}: file is empty; give a CSV with a header row and data")
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise AstrodaskError(f"{path}: is UTF-16 text (as spreadsheets save \"Unicode text\"); re-export it as a UTF-8 "
                             "CSV")
    if b"\x00" in head:
        raise AstrodaskError(f"{path}: is not a text CSV (binary data); give a CSV, Parquet or FITS file")
    offset = 0
    lines = head.split(b"\n")
    k = 0
    # skip blank lines and SkyServer's "#Table1" style comment lines before the header
    while k < len(lines) - 1 and (not lines[k].strip() or lines[k].lstrip().startswith(b"#")):
        offset += len(lines[k]) + 1
        k += 1
    if k == len(lines) - 1 and len(head) == HEADER_PROBE:
        raise AstrodaskError(f"{path}: no header line in the first {HEADER_PROBE // 1024} KiB; give a CSV with a "
                             "header row")
    line = lines[k].rstrip(b"\r")
    offset += len(lines[k]) + 1
    try:
        text = line.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise AstrodaskError(f"{path}: header row is not UTF-8 text; re-export the file as UTF-8 CSV") from None
    if sum(ch < " " and ch != "\t" for ch in text):
        raise AstrodaskError(f"{path}: is not a text CSV (binary data); give a CSV, Parquet or FITS file")
    delim = max(("\t", ",", ";", "|"), key=text.count)
    if text.count(delim) == 0:
        delim = "\t" if _split_ext(path)[0] == ".tsv" else ","
    cols = [c.strip() for c in next(csv.reader([text], delimiter=delim))]
    if len(cols) < 2:
        raise AstrodaskError(f"{path}: first line is not a CSV header ({text[:60]!r}); give a CSV with a header row")
    return schema.unique_names(cols), size, delim, offset


def _auto_block_size(total: int, workers: int) -> int:
    target = total // max(1, 4 * workers)
    return int(min(MAX_BLOCK, max(MIN_BLOCK, target)))


def _parquet_info(path: str) -> tuple[list[str], pq.FileMetaData]:
    try:
        with fsspec.open(path, "rb") as fh:
            pf = pq.ParquetFile(fh)
            return list(pf.schema_arrow.names), pf.metadata
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise AstrodaskError(f"{path}: not a readable Parquet file ({_one_line(exc)}); check the file") from None


def plan_blocks(cfg: ConvertConfig, n_threads: int = 2) -> list[Block]:
    """Cut the inputs into blocks. Reads headers and footers only: no data row is read on the client."""
    from .fits import fits_info

    files = _expand(cfg.sources)
    info: dict[str, tuple] = {}
    sizes = 0
    for f in files:
        kind = _kind(f)
        if kind == "csv":
            cols, size, delim, offset = _csv_header(f)
            info[f] = (kind, cols, size, delim, offset)
            sizes += size
        elif kind == "parquet":
            cols, meta = _parquet_info(f)
            info[f] = (kind, schema.unique_names([c.strip() for c in cols]), meta)
        else:
            cols, nrows, row_bytes, unread = fits_info(f)
            info[f] = (kind, schema.unique_names([c.strip() for c in cols]), nrows, row_bytes, unread)
            sizes += nrows * row_bytes
    mappings = {}
    for f in files:
        cols = info[f][1]
        mappings[f] = schema.canonical_names(cols)
        _required_check(f, cols, mappings[f], info[f][4] if info[f][0] == "fits" else ())
    present = {c for m in mappings.values() for c in m.values()}
    out_columns = tuple(c for c in schema.COLUMNS if c in present)
    bs = cfg.block_size or _auto_block_size(sizes, n_threads)
    blocks: list[Block] = []

    def add(f, start, length, **kw):
        cols = info[f][1]
        blocks.append(Block(len(blocks), f, info[f][0], start, length, tuple(cols), tuple(mappings[f].items()),
                            out_columns, **kw))

    for f in files:
        kind = info[f][0]
        if kind == "csv":
            _, _, size, delim, offset = info[f]
            comp = fsspec.utils.infer_compression(f) if _split_ext(f)[1] else None
            if comp is not None:
                add(f, 0, -1, delimiter=delim, compression=comp, data_offset=offset, chunk_bytes=min(bs, 64 * MiB))
            elif offset < size:
                # a block starts at the newline before its first line (see Block.start)
                for s in range(offset - 1, size - 1, bs):  # a block starting at the last byte holds nothing
                    add(f, s, min(bs, size - s), delimiter=delim, data_offset=offset)
        elif kind == "parquet":
            meta = info[f][2]
            per_group = meta.num_rows / max(1, meta.num_row_groups)
            per = max(1, math.ceil(PARQUET_BLOCK_ROWS / max(1.0, per_group)))
            for rg in range(0, meta.num_row_groups, per):
                add(f, rg, min(per, meta.num_row_groups - rg))
        else:
            _, _, nrows, row_bytes, _ = info[f]
            step = max(1, bs // row_bytes)
            for start in range(0, nrows, step):
                add(f, start, min(step, nrows - start))
    return blocks


# ---------------------------------------------------------------------------------------------- reading


@dataclass
class Chunk:
    """Rows read from part of a block: the table (CSV: all text), the lines the parser rejected, flags."""

    table: pa.Table
    malformed: list[tuple[int, str]]
    utf8_replaced: bool = False


def _csv_bytes(b: Block):
    """The block's text in pieces that end at a line end (one piece unless the file is compressed)."""
    try:
        if b.compression is None:
            with fsspec.open(b.source, "rb") as fh:
                yield fsspec.utils.read_block(fh, b.start, b.length, delimiter=b"\n")
            return
        with fsspec.open(b.source, "rb", compression=b.compression) as fh:
            skip = b.data_offset
            while skip > 0:
                got = fh.read(min(skip, MiB))
                if not got:
                    return
                skip -= len(got)
            rest = b""
            while True:
                buf = fh.read(b.chunk_bytes)
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
        raise AstrodaskError(f"{b.source}: cannot read ({_one_line(exc)}); the file is damaged or truncated, "
                             "check it or download it again") from None


_BLANK = re.compile(rb"\s*")


def _parse_csv(data: bytes, b: Block) -> Chunk:
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
        parse_options=pacsv.ParseOptions(delimiter=b.delimiter, quote_char=False, invalid_row_handler=on_bad),
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


def _read_chunks(b: Block):
    """Chunks of one block (read on a worker)."""
    if b.kind == "csv":
        for data in _csv_bytes(b):
            yield _parse_csv(data, b)
        return
    if b.kind == "parquet":
        want = [src for src, _ in b.mapping]
        try:
            with fsspec.open(b.source, "rb") as fh:
                pf = pq.ParquetFile(fh)
                names = pf.schema_arrow.names
                unique = schema.unique_names([c.strip() for c in names])
                keep = [names[k] for k, u in enumerate(unique) if u in want]
                t = pf.read_row_groups(range(b.start, b.start + b.length), columns=keep)
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise AstrodaskError(f"{b.source}: cannot read row groups {b.start}..{b.start + b.length - 1} "
                                 f"({_one_line(exc)}); check the file") from None
        t = t.rename_columns([unique[names.index(c)] for c in t.column_names])
        yield Chunk(t, [])
        return
    from .fits import read_fits_rows

    yield Chunk(read_fits_rows(b.source, b.start, b.length), [])


# ---------------------------------------------------------------------------------------------- validation

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

    def reject(self, mask: np.ndarray, why: str) -> None:
        m = mask & (self.code < 0)
        if m.any():
            if why not in self.names:
                self.names.append(why)
            self.code[m] = self.names.index(why)

    @property
    def ok(self) -> np.ndarray:
        return self.code < 0

    def of(self, rows: np.ndarray) -> list[str]:
        return [self.names[c] for c in self.code[rows]]


def _canonical_arrays(raw: pa.Table, mapping: dict[str, str], reasons: _Reasons) -> dict[str, pa.Array]:
    """Parse and check every mapped column; record rejections in ``reasons``."""
    src_of = {canon: src for src, canon in mapping.items() if src in raw.column_names}
    arrays: dict[str, pa.Array] = {}
    for name in schema.COLUMNS:
        if name not in src_of:
            continue
        col = raw.column(src_of[name])
        typ = schema.TYPES[name]
        if name == schema.ID:
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
            empty = _np(pc.equal(text, pa.scalar("")))
            reasons.reject(empty, "missing_class")
            reasons.reject(~known, "unknown_class")
            arrays[name] = text.combine_chunks() if isinstance(text, pa.ChunkedArray) else text
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


def validate(raw: pa.Table | pd.DataFrame, mapping: dict[str, str], out_columns=None,
             utf8_replaced: bool = False) -> tuple[pa.Table, pa.Table]:
    """Split one chunk into (valid rows in the canonical schema, rejected rows).

    ``raw`` has the source columns (text for CSV, typed for Parquet/FITS). Rejected rows come back as a table
    with ``reason`` (the first rule the row broke), ``row`` (position in ``raw``) and ``record`` (the row's
    original values as JSON). Rows whose id repeats an earlier valid row of the chunk are rejected as
    ``duplicate_id``. ``out_columns`` (default: the mapped columns) are the output columns; absent ones are
    null. Only rejected rows are touched one by one.
    """
    if isinstance(raw, pd.DataFrame):
        raw = pa.Table.from_pandas(raw.reset_index(drop=True), preserve_index=False)
    n = raw.num_rows
    reasons = _Reasons(n)
    if utf8_replaced:
        bad = np.zeros(n, bool)
        for c in raw.column_names:
            col = raw.column(c)
            if _is_text(col.type):
                bad |= _np(pc.match_substring(col, "\ufffd"))
        reasons.reject(bad, "invalid_utf8")
    arrays = _canonical_arrays(raw, mapping, reasons)
    ok = reasons.ok
    if ok.any():
        ids = arrays[schema.ID].to_numpy()
        dup = np.zeros(n, bool)
        dup[ok] = pd.Series(ids[ok]).duplicated(keep="first").to_numpy()
        reasons.reject(dup, "duplicate_id")
        ok = reasons.ok
    cols = list(out_columns) if out_columns else [c for c in schema.COLUMNS if c in arrays]
    out_schema = schema.arrow_schema(cols)
    keep = None if ok.all() else pa.array(ok)
    good = pa.table({
        c: (arrays[c] if keep is None else arrays[c].filter(keep)) if c in arrays
        else pa.nulls(int(ok.sum()), schema.TYPES[c])
        for c in cols
    }, schema=out_schema)
    bad_idx = np.flatnonzero(~ok)
    records = raw.take(pa.array(bad_idx, pa.int64())).to_pylist() if len(bad_idx) else []
    rejected = pa.table({
        "reason": pa.array(reasons.of(bad_idx), pa.string()),
        "row": pa.array(bad_idx, pa.int64()),
        "record": pa.array([json.dumps(r, default=str) for r in records], pa.string()),
    })
    return good, rejected


# ---------------------------------------------------------------------------------------------- writing


def _part(i: int) -> str:
    return f"part-{i:05d}.parquet"


def _dup_part(i: int) -> str:
    return f"dup-{i:05d}.parquet"


def _marker(stage: Path, i: int) -> Path:
    return stage / BLOCKS_DIR / f"{i:05d}.json"


class _Writer:
    """A Parquet file written under a temporary name and renamed into place on ``close``."""

    def __init__(self, path: Path, sch: pa.Schema, min_row_group: int):
        self.path = path
        self.tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
        self.schema = sch
        self.min_row_group = min_row_group
        self.writer: pq.ParquetWriter | None = None
        self.rows = 0

    def write(self, t: pa.Table) -> None:
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.tmp, self.schema, compression="zstd", use_dictionary=[
                c for c in schema.DICTIONARY_COLUMNS if c in self.schema.names])
        if t.num_rows:
            rg = max(self.min_row_group, math.ceil(t.num_rows / ROW_GROUPS_PER_CHUNK))
            self.writer.write_table(t, row_group_size=rg)
            self.rows += t.num_rows

    def close(self) -> None:
        if self.writer is None:
            self.write(self.schema.empty_table())
        self.writer.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.close()
        Path(self.tmp).unlink(missing_ok=True)


def _quarantine_table(rej: pa.Table, source: str, block: int, row_offset: int = 0) -> pa.Table:
    n = rej.num_rows
    return pa.table({
        "reason": rej.column("reason"),
        "source": pa.array([source] * n, pa.string()),
        "block": pa.array(np.full(n, block, np.int64)),
        "row": pc.add(rej.column("row"), pa.scalar(row_offset, pa.int64())),
        "record": rej.column("record"),
    }, schema=schema.QUARANTINE_SCHEMA)


def _with_malformed(rej: pa.Table, n_parsed: int, malformed: list[tuple[int, str]]) -> pa.Table:
    """Rejected rows plus the lines the parser refused, ``row`` counted over all the chunk's data lines.

    The parser numbers its rows from 1 over the non-blank lines; the validation counts parsed rows only.
    """
    lines = np.array([r - 1 for r, _ in malformed], np.int64)
    rows = rej.column("row").to_numpy()
    if (lines >= 0).all():
        parsed_line = np.delete(np.arange(n_parsed + len(lines)), lines)
        rows = parsed_line[rows]
    bad = pa.table({
        "reason": pa.array(["malformed_row"] * len(malformed), pa.string()),
        "row": pa.array(lines),
        "record": pa.array([json.dumps({"text": t}) for _, t in malformed], pa.string()),
    })
    return pa.concat_tables([rej.set_column(1, "row", pa.array(rows, pa.int64())), bad])


def convert_block(b: Block, staging: str, row_group_size: int = 131072) -> dict:
    """Worker task: read, validate and write one block; return its counts (also written as its done-marker).

    ``row`` in the block's quarantine is the row's position (from 0) among the block's rows: its data lines,
    blank lines not counted (for a FITS or Parquet block, its rows).
    """
    stage = Path(staging)
    _marker(stage, b.index).unlink(missing_ok=True)
    (stage / QUARANTINE_DIR / _dup_part(b.index)).unlink(missing_ok=True)
    (stage / QUARANTINE_DIR / _part(b.index)).unlink(missing_ok=True)
    mapping = dict(b.mapping)
    out_cols = b.out_columns or tuple(c for c in schema.COLUMNS if c in mapping.values())
    good_w = _Writer(stage / _part(b.index), schema.arrow_schema(out_cols), row_group_size)
    quar_w = _Writer(stage / QUARANTINE_DIR / _part(b.index), schema.QUARANTINE_SCHEMA, row_group_size)
    read = 0
    reasons: dict[str, int] = {}
    chunks = 0
    try:
        for chunk in _read_chunks(b):
            good, rej = validate(chunk.table, mapping, out_cols, chunk.utf8_replaced)
            if chunk.malformed:
                rej = _with_malformed(rej, chunk.table.num_rows, chunk.malformed)
            good_w.write(good)
            if rej.num_rows:
                quar_w.write(_quarantine_table(rej, b.source, b.index, read))
                for vc in pc.value_counts(rej.column("reason")).to_pylist():
                    reasons[vc["values"]] = reasons.get(vc["values"], 0) + vc["counts"]
            read += chunk.table.num_rows + len(chunk.malformed)
            chunks += 1
        good_w.close()
        if quar_w.rows:
            quar_w.close()
        else:
            quar_w.abort()
    except BaseException:
        good_w.abort()
        quar_w.abort()
        raise
    counts = {
        "block": b.index,
        "source": b.source,
        "start": b.start,
        "length": b.length,
        "chunks": chunks,
        "read": read,
        "written": good_w.rows,
        "quarantined": quar_w.rows,
        "reasons": reasons,
    }
    if counts["read"] != counts["written"] + counts["quarantined"]:  # pragma: no cover - a bug
        raise AssertionError(f"block {b.index}: read {read} != written {good_w.rows} + quarantined {quar_w.rows}")
    write_json_atomic(_marker(stage, b.index), counts)
    return counts


def _block_done(stage: Path, b: Block) -> dict | None:
    """Counts of a block already converted and verified by row count (Parquet footers), else None."""
    try:
        counts = json.loads(_marker(stage, b.index).read_text())
    except (OSError, ValueError):
        return None
    if (counts.get("source"), counts.get("start"), counts.get("length")) != (b.source, b.start, b.length):
        return None
    good = parquet_rows(stage / _part(b.index))
    quar = parquet_rows(stage / QUARANTINE_DIR / _part(b.index)) if counts.get("quarantined") else 0
    dup = parquet_rows(stage / QUARANTINE_DIR / _dup_part(b.index)) or 0
    if good is None or quar is None or quar != counts["quarantined"] or good + quar + dup != counts["read"]:
        return None
    return counts


# ---------------------------------------------------------------------------------------------- duplicates


DEDUPE_BUCKET_ROWS = 4_000_000


def _dup_ids(files: list[str], bucket: int, n_buckets: int) -> np.ndarray:
    """Worker task: the ids of bucket ``bucket`` (id mod n_buckets) that occur more than once in ``files``."""
    ids = []
    for f in files:
        x = pq.read_table(f, columns=[schema.ID]).column(0).to_numpy()
        ids.append(x if n_buckets == 1 else x[x % np.uint64(n_buckets) == np.uint64(bucket)])
    allids = pd.Series(np.concatenate(ids) if ids else np.zeros(0, np.uint64))
    return np.unique(allids[allids.duplicated()].to_numpy())


def _ids_in(path: str, dups: np.ndarray) -> pd.DataFrame:
    """Worker task: (row, id) of the rows of ``path`` whose id is in ``dups``."""
    ids = pq.read_table(path, columns=[schema.ID]).column(0).to_numpy()
    rows = np.flatnonzero(np.isin(ids, dups))
    return pd.DataFrame({"row": rows, schema.ID: ids[rows]})


def _move_duplicates(staging: str, index: int, rows: list[int], row_group_size: int = 131072) -> int:
    """Worker task: move ``rows`` of part ``index`` to its duplicate quarantine file.

    The quarantine file is written first, then the part without those rows; a block whose part still holds
    them fails the resume check (rows + quarantined != read) and is converted again.
    """
    stage = Path(staging)
    t = pq.read_table(stage / _part(index))
    mask = np.zeros(t.num_rows, bool)
    mask[rows] = True
    moved = t.filter(pa.array(mask))
    records = [json.dumps(r, default=str) for r in moved.to_pylist()]
    q = pa.table({
        "reason": pa.array(["duplicate_id"] * len(rows), pa.string()),
        "source": pa.array([_part(index)] * len(rows), pa.string()),
        "block": pa.array([index] * len(rows), pa.int64()),
        "row": pa.array(rows, pa.int64()),
        "record": pa.array(records, pa.string()),
    }, schema=schema.QUARANTINE_SCHEMA)
    kept = t.filter(pa.array(~mask))
    for path, table in ((stage / QUARANTINE_DIR / _dup_part(index), q), (stage / _part(index), kept)):
        w = _Writer(path, table.schema, row_group_size)
        w.write(table)
        w.close()
    return len(rows)


def _dedupe(client, stage: Path, blocks: list[Block], cfg: ConvertConfig) -> int:
    """Move later occurrences of ids repeated across blocks (or across chunks of one block) to quarantine.

    First occurrence = lowest (block, row), i.e. input order. Only the repeated ids reach the client.
    """
    part_rows = {b.index: parquet_rows(stage / _part(b.index)) or 0 for b in blocks}
    files = [str(stage / _part(b.index)) for b in blocks if part_rows[b.index] > 0]
    multi_chunk = any(json.loads(_marker(stage, b.index).read_text()).get("chunks", 1) > 1 for b in blocks)
    if not files or (len(files) < 2 and not multi_chunk):
        return 0
    # ids hash-partitioned into buckets of a few million rows: each task holds one bucket's ids
    n_buckets = max(1, math.ceil(sum(part_rows.values()) / DEDUPE_BUCKET_ROWS))
    futs = [client.submit(_dup_ids, files, k, n_buckets, pure=False) for k in range(n_buckets)]
    dup_ids = np.concatenate(track(futs, "duplicates", cfg.quiet))
    if not len(dup_ids):
        return 0
    [dup_f] = client.scatter([dup_ids], broadcast=True)
    found = track(client.map(_ids_in, files, dups=dup_f, pure=False), "duplicates", cfg.quiet)
    hits = pd.concat([f.assign(part=int(Path(p).stem.split("-")[1])) for f, p in zip(found, files)])
    hits = hits.sort_values(["part", "row"], kind="stable")
    later = hits[hits.duplicated(schema.ID, keep="first")]
    moves = [(int(p), g["row"].tolist()) for p, g in later.groupby("part")]
    track([client.submit(_move_duplicates, str(stage), p, rows, cfg.row_group_size, pure=False) for p, rows in moves],
          "dedupe", cfg.quiet)
    log(f"moved {len(later):,} rows with repeated {schema.ID} to quarantine")
    return len(later)


# ---------------------------------------------------------------------------------------------- run


def _totals(stage: Path, blocks: list[Block]) -> dict:
    """Counts from the block markers and the Parquet footers (no data is read)."""
    read = written = quarantined = 0
    reasons: dict[str, int] = {}
    per_source: dict[str, int] = {}
    for b in blocks:
        m = json.loads(_marker(stage, b.index).read_text())
        read += m["read"]
        per_source[b.source] = per_source.get(b.source, 0) + m["read"]
        written += parquet_rows(stage / _part(b.index)) or 0
        if m["quarantined"]:
            quarantined += parquet_rows(stage / QUARANTINE_DIR / _part(b.index)) or 0
        for k, v in m["reasons"].items():
            reasons[k] = reasons.get(k, 0) + v
        dup = parquet_rows(stage / QUARANTINE_DIR / _dup_part(b.index)) or 0
        if dup:
            quarantined += dup
            reasons["duplicate_id"] = reasons.get("duplicate_id", 0) + dup
    reasons = dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])))
    return {"read": read, "written": written, "quarantined": quarantined, "reasons": reasons,
            "source_rows": per_source}


_HINTS = {
    "id_float_notation": "ids were written in floating-point notation such as 1.24E+18, so their digits are lost, "
                         "as a spreadsheet does; re-export the ids as integers or text",
    "malformed_row": "the lines do not have the header's number of fields; check the delimiter and the header",
    "invalid_utf8": "the file is not UTF-8 text; re-export it as UTF-8",
    "invalid_id": "the id column holds no valid unsigned integers; check which column is the id",
    "unknown_class": f"class values must be one of {', '.join(schema.CLASSES)}",
    "missing_class": "the class column is empty",
    "non_numeric": "the values are not numbers; check the delimiter and the decimal separator (a point)",
}


def _fingerprint(path: str) -> list:
    """Size and modification time (or ETag) of an input file, so --resume notices a changed input."""
    try:
        fs, p = fsspec.core.url_to_fs(path)
        info = fs.info(p)
    except (OSError, ValueError):
        return []
    stamp = next((info[k] for k in ("mtime", "LastModified", "last_modified", "ETag", "etag", "created")
                  if info.get(k) is not None), None)
    return [info.get("size"), str(stamp) if stamp is not None else None]


def _no_rows_error(cfg: ConvertConfig, totals: dict) -> AstrodaskError:
    where = ", ".join(cfg.sources)
    if totals["read"] == 0:
        return AstrodaskError(f"{where}: no data rows (only a header); give a file with data rows")
    top = next(iter(totals["reasons"]), "no data rows")
    hint = _HINTS.get(top.split(":")[0], "see the reasons above")
    return AstrodaskError(
        f"no valid rows in {where}: all {totals['read']:,} rows rejected, mostly {top} "
        f"({totals['reasons'][top]:,} rows): {hint}; nothing was written"
    )


def run(cfg: ConvertConfig, client) -> dict:
    """Convert ``cfg.sources`` into the dataset ``cfg.dest``; return the summary (counts per reason)."""
    from .cluster import n_worker_threads

    if cfg.resume and not cfg.overwrite and is_complete(cfg.dest):
        raise AstrodaskError(f"{cfg.dest}: already a complete dataset, nothing to resume; pass --overwrite to "
                             "convert again or choose another destination")
    blocks = plan_blocks(cfg, n_worker_threads(client))
    if not blocks:
        raise AstrodaskError(f"{', '.join(cfg.sources)}: no data rows (only headers); give files with data rows")
    plan = {"schema_version": schema.SCHEMA_VERSION,
            "files": {f: _fingerprint(f) for f in dict.fromkeys(b.source for b in blocks)},
            "blocks": [[b.source, b.kind, b.start, b.length, list(b.mapping), list(b.out_columns)] for b in blocks]}
    with StagedOutput(Path(cfg.dest), cfg.overwrite, cfg.resume, kind="dataset") as out:
        stage = out.staging
        plan_file = stage / "_plan.json"
        if cfg.resume and plan_file.is_file():
            try:
                old = json.loads(plan_file.read_text())
            except ValueError:
                old = None
            if old != json.loads(json.dumps(plan)):
                raise AstrodaskError(f"{cfg.dest}: the interrupted conversion had other inputs (or they changed "
                                     "since) or another block size; rerun with the same inputs and --block-size, "
                                     "or without --resume")
        (stage / QUARANTINE_DIR).mkdir(exist_ok=True)
        (stage / BLOCKS_DIR).mkdir(exist_ok=True)
        for tmp in stage.rglob(".*.tmp-*"):  # files an interrupted run was writing (we hold the lock)
            tmp.unlink(missing_ok=True)
        write_json_atomic(plan_file, plan)
        todo = [b for b in blocks if not (cfg.resume and _block_done(stage, b))]
        if len(todo) < len(blocks):
            log(f"resume: {len(blocks) - len(todo)} of {len(blocks)} blocks already converted, skipped")
        futs = client.map(convert_block, todo, staging=str(stage), row_group_size=cfg.row_group_size, pure=False)
        track(futs, "convert", cfg.quiet)
        _dedupe(client, stage, blocks, cfg)
        totals = _totals(stage, blocks)
        if totals["read"] != totals["written"] + totals["quarantined"] or \
                sum(totals["reasons"].values()) != totals["quarantined"]:
            raise AstrodaskError(
                f"internal accounting error: read {totals['read']} != written {totals['written']} + quarantined "
                f"{totals['quarantined']}; please report this; the output was not committed"
            )
        if totals["written"] == 0:
            shutil.rmtree(stage, ignore_errors=True)  # nothing worth resuming
            raise _no_rows_error(cfg, totals)
        plan_file.unlink()
        shutil.rmtree(stage / BLOCKS_DIR)  # the counts go into the metadata
        parts = [{"file": _part(b.index), "rows": parquet_rows(stage / _part(b.index)), "source": b.source}
                 for b in blocks]
        out.commit({
            "schema_version": schema.SCHEMA_VERSION,
            "columns": list(blocks[0].out_columns),
            "sources": list(dict.fromkeys(b.source for b in blocks)),
            "parts": parts,
            **totals,
        })
    return {"dest": str(Path(cfg.dest).absolute()), **totals}
