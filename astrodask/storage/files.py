"""Files written whole or not at all (JSON, Parquet), reads, and fingerprints of inputs.

Each file is written whole or not at all: on a local disk under a temporary name renamed into place, on an object
store with one PUT (small JSON files) or, for Parquet parts (:class:`ParquetStream`), a multipart upload with
``autocommit=False`` -- completed by ``close()``, aborted by ``abort()``; a plain ``with fs.open(p, "wb")`` would
publish what was written so far when an exception unwinds it, and a write file left open at interpreter exit
hangs the process.

Every file astrodask writes is recorded in its output's manifest with a :class:`FileCheck`: its size, its content
digest (``crc32:%08x``, zlib's CRC-32 over the bytes: the same CRC-32 as S3's checksum, ~2 GB/s, no dependency;
:data:`DIGEST_ALGORITHM`) and, for Parquet, its rows. A :class:`ParquetStream` computes it while writing (the bytes
pass through it on their way to the object store) or from the local temporary file before renaming it into place.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import uuid
import zlib
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import AstrodaskError
from .location import Location, os_error


def _json_default(o):
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Location):
        return o.url
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def to_json(obj) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, default=_json_default)


def write_json_atomic(path, obj) -> None:
    Location.of(path).write_text(to_json(obj))


def read_json(path):
    """The JSON document at ``path`` (FileNotFoundError when missing; a one-line error when unreadable)."""
    loc = Location.of(path)
    try:
        return json.loads(loc.read_text())
    except FileNotFoundError:
        raise
    except (ValueError, RecursionError, UnicodeDecodeError) as exc:
        raise AstrodaskError(f"{loc}: not valid JSON ({type(exc).__name__}); rerun the stage that wrote it") from None


DIGEST_ALGORITHM = "crc32"
"""The content digest of every file in a manifest (``crc32:%08x``)."""
CHUNK = 8 << 20
HASH_LIMIT = 256 << 20
"""Local inputs up to this size are fingerprinted by their content (larger ones by size and time stamps)."""


def digest_of(data: bytes, crc: int = 0) -> str:
    """The manifest digest of ``data`` (continuing ``crc``, a running CRC-32)."""
    return f"{DIGEST_ALGORITHM}:{zlib.crc32(data, crc) & 0xFFFFFFFF:08x}"


@dataclass(frozen=True)
class FileCheck:
    """What a manifest records of one file astrodask wrote, and what a reader or ``astrodask verify`` checks."""

    size: int
    """Bytes."""
    digest: str
    """``crc32:%08x`` of the bytes."""
    rows: int | None = None
    """Rows (Parquet files: from the footer)."""

    def to_json(self) -> dict:
        doc = {"size": self.size, "digest": self.digest}
        if self.rows is not None:
            doc["rows"] = self.rows
        return doc

    @classmethod
    def from_json(cls, doc) -> FileCheck | None:
        """The check a manifest entry holds, or None when the entry is not one."""
        if not isinstance(doc, dict) or not isinstance(doc.get("size"), int) or not isinstance(doc.get("digest"), str):
            return None
        rows = doc.get("rows")
        return cls(doc["size"], doc["digest"], rows if isinstance(rows, int) and not isinstance(rows, bool) else None)


def _crc_of_stream(fh) -> tuple[int, int]:
    crc, size = 0, 0
    while True:
        piece = fh.read(CHUNK)
        if not piece:
            return crc & 0xFFFFFFFF, size
        crc = zlib.crc32(piece, crc)
        size += len(piece)


def file_check(path, parquet: bool | None = None) -> FileCheck:
    """Size, digest and (Parquet files, or ``parquet``) footer rows of the file at ``path``, read whole (a worker
    task for ``astrodask verify``; also how a file written without a check gets one)."""
    loc = Location.of(path)
    with loc.open("rb") as fh:
        crc, size = _crc_of_stream(fh)
    is_parquet = loc.name.endswith(".parquet") if parquet is None else parquet
    return FileCheck(size, f"{DIGEST_ALGORITHM}:{crc:08x}", parquet_rows(loc) if is_parquet else None)


class _DigestSink:
    """A write-only file passing the bytes on to ``fh`` and keeping their CRC-32 and count."""

    def __init__(self, fh):
        self.fh, self.crc, self.size = fh, 0, 0

    def write(self, data) -> int:
        self.crc = zlib.crc32(data, self.crc)
        self.size += len(memoryview(data))
        return self.fh.write(data)

    def flush(self) -> None:
        self.fh.flush()

    def tell(self) -> int:
        return self.size

    @property
    def closed(self) -> bool:
        return self.fh.closed

    def close(self) -> None:  # the stream closes (and commits) ``fh`` itself
        pass

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False


def write_parquet_atomic(table: pa.Table, path, row_group_size: int = 131072) -> FileCheck:
    """Write one Parquet file so that it appears whole or not at all; return its check (size, digest, rows)."""
    w = ParquetStream(Location.of(path), table.schema, row_group_size)
    try:
        w.write(table, row_group_size)
        w.close()
    except BaseException:
        w.abort()
        raise
    return w.check


class ParquetStream:
    """A Parquet file written in pieces that becomes visible whole on ``close`` (local: a temporary name
    renamed into place; object store: a multipart upload completed on close, discarded by ``abort``). After
    ``close``, ``check`` is its size, digest and rows."""

    def __init__(self, loc: Location, sch: pa.Schema, min_row_group: int = 131072, dictionary=True):
        """``dictionary``: pyarrow's ``use_dictionary`` (True, False or the columns to dictionary-encode: a float
        column chunk small enough for the 1 MB dictionary page is otherwise hashed and encoded value by value)."""
        self.loc, self.schema, self.min_row_group, self.dictionary = loc, sch, min_row_group, dictionary
        self.rows = 0
        self._pending: list = []
        self._pending_rows = 0
        self.check: FileCheck | None = None
        self._writer: pq.ParquetWriter | None = None
        self._fh = None
        self._sink: _DigestSink | None = None
        self._tmp = None

    def _open(self):
        if self.loc.is_local:
            os.makedirs(os.path.dirname(self.loc.url), exist_ok=True)
            self._tmp = f"{os.path.dirname(self.loc.url)}{os.sep}.{self.loc.name}.tmp-{uuid.uuid4().hex}"
            sink = self._tmp
        else:
            # autocommit off: the object appears only on commit(), and discard() aborts the multipart upload (an
            # fsspec file closed by an exception would otherwise publish what was written so far)
            self._fh = self.loc.fs.open(self.loc.path, "wb", autocommit=False)
            sink = self._sink = _DigestSink(self._fh)
        self._writer = pq.ParquetWriter(sink, self.schema, compression="zstd", use_dictionary=self.dictionary)

    def write(self, t: pa.Table, row_group_size: int | None = None) -> None:
        if self._writer is None:
            self._open()
        if t.num_rows:
            self._writer.write_table(t, row_group_size=row_group_size or max(self.min_row_group, t.num_rows))
            self.rows += t.num_rows

    def add(self, batch: pa.RecordBatch) -> None:
        """Append rows, written in row groups of exactly ``min_row_group`` rows as they fill (the last one on
        ``close``): a stream of small batches makes the same file as one large table, holding at most a row
        group in memory."""
        if not batch.num_rows:
            return
        self._pending.append(batch)
        self._pending_rows += batch.num_rows
        if self._pending_rows >= self.min_row_group:
            self._flush(whole_groups=True)

    def _flush(self, whole_groups: bool = False) -> None:
        t = pa.Table.from_batches(self._pending, schema=self.schema)
        n = (t.num_rows // self.min_row_group) * self.min_row_group if whole_groups else t.num_rows
        if n:
            self.write(t.slice(0, n), self.min_row_group)
        rest = t.slice(n)
        self._pending = rest.to_batches() if rest.num_rows else []
        self._pending_rows = rest.num_rows

    def close(self) -> None:
        if self._pending:
            self._flush()
        if self._writer is None:
            self._open()
        self._writer.close()
        if self._fh is not None:
            self._fh.close()
            self._fh.commit()
            self.loc.fs.invalidate_cache(self.loc.path)
            self.check = FileCheck(self._sink.size, f"{DIGEST_ALGORITHM}:{self._sink.crc & 0xFFFFFFFF:08x}",
                                   self.rows)
        if self._tmp is not None:
            with open(self._tmp, "rb") as fh:  # just written: read back from the page cache, before the rename
                crc, size = _crc_of_stream(fh)
            os.replace(self._tmp, self.loc.url)
            self.check = FileCheck(size, f"{DIGEST_ALGORITHM}:{crc:08x}", self.rows)

    def abort(self) -> None:
        if self._fh is not None:  # first: nothing of this file may become visible
            with contextlib.suppress(Exception):
                self._fh.discard()
            self._fh.closed = True
            self._writer = None  # its footer must not be written into the discarded file
        with contextlib.suppress(Exception):
            if self._writer is not None:
                self._writer.close()
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._tmp)


@contextlib.contextmanager
def parquet_file(path):
    """A ``pyarrow.parquet.ParquetFile`` over a local path or URL."""
    loc = Location.of(path)
    if loc.is_local:
        yield pq.ParquetFile(loc.url)
        return
    with loc.open("rb") as fh:
        yield pq.ParquetFile(fh)


def parquet_footer(path) -> tuple:
    """(footer metadata, Arrow schema, file size in bytes or None) of a Parquet file: what a reader checks
    against the manifest, in one open (no data is read)."""
    loc = Location.of(path)
    if loc.is_local:
        pf = pq.ParquetFile(loc.url)
        return pf.metadata, pf.schema_arrow, os.path.getsize(loc.url)
    with loc.open("rb") as fh:
        pf = pq.ParquetFile(fh)
        size = getattr(fh, "size", None)
        return pf.metadata, pf.schema_arrow, size if isinstance(size, int) else None


def read_parquet(path, columns=None) -> pa.Table:
    """A whole Parquet file (or the given columns) as an Arrow table."""
    loc = Location.of(path)
    cols = list(columns) if columns is not None else None
    if loc.is_local:
        return pq.read_table(loc.url, columns=cols)
    return pq.read_table(loc.path, columns=cols, filesystem=loc._fresh())


def parquet_rows(path) -> int | None:
    """Row count from a Parquet footer, or None if the file is missing or unreadable."""
    try:
        with parquet_file(path) as pf:
            return pf.metadata.num_rows
    except (OSError, pa.ArrowException, ValueError):
        return None


def fingerprint_file(path, limit: int = HASH_LIMIT) -> list:
    """What identifies a file's content for ``--resume``: a changed input changes it.

    Local files up to ``limit`` bytes: ``[size, "crc32:..."]``, their content (an edit that keeps the size and
    puts the modification time back is seen); larger ones ``[size, "mtime_ns:...", "ctime_ns:..."]`` (the change
    time cannot be set back). Object stores: ``[size, ETag]`` (a hash of the content, so re-uploading the same
    bytes keeps it) or their time stamp. ``[]`` for a file that cannot be read.
    """
    loc = Location.of(path)
    if loc.is_local:
        try:
            st = os.stat(loc.url)
            if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
                return [st.st_size, f"mtime_ns:{st.st_mtime_ns}", f"ctime_ns:{st.st_ctime_ns}"]
            with open(loc.url, "rb") as fh:
                crc, size = _crc_of_stream(fh)
            return [size, f"{DIGEST_ALGORITHM}:{crc:08x}"]
        except OSError:
            return []
    try:
        info = loc.info()
    except (OSError, ValueError, AstrodaskError):
        return []
    stamp = next((info[k] for k in ("ETag", "etag", "mtime", "LastModified", "last_modified", "created")
                  if info.get(k) is not None), None)
    return [info.get("size"), str(stamp) if stamp is not None else None]


def remove_files(locs) -> None:
    """Delete files (missing ones are fine); on an object store in batches (one request per 1,000 keys)."""
    locs = list(locs)
    remote = [x for x in locs if not x.is_local]
    for x in locs:
        if x.is_local:
            x.remove()
    by_fs: dict = {}
    for x in remote:
        by_fs.setdefault((x.protocol, x.options_json), []).append(x)
    for group in by_fs.values():
        fs = group[0].fs
        for i in range(0, len(group), 1000):
            chunk = group[i:i + 1000]
            try:
                fs.rm([x.path for x in chunk])
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise os_error(exc, chunk[0], "delete") from None
            for x in chunk:
                fs.invalidate_cache(x.path)
