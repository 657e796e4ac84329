"""Files written whole or not at all (JSON, Parquet), reads, and fingerprints of inputs.

Each file is written whole or not at all: on a local disk under a temporary name renamed into place, on an object
store with one PUT (small JSON files) or, for Parquet parts (:class:`ParquetStream`), a multipart upload with
``autocommit=False`` -- completed by ``close()``, aborted by ``abort()``; a plain ``with fs.open(p, "wb")`` would
publish what was written so far when an exception unwinds it, and a write file left open at interpreter exit
hangs the process.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid

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


def write_parquet_atomic(table: pa.Table, path, row_group_size: int = 131072) -> None:
    """Write one Parquet file so that it appears whole or not at all."""
    w = ParquetStream(Location.of(path), table.schema, row_group_size)
    try:
        w.write(table, row_group_size)
        w.close()
    except BaseException:
        w.abort()
        raise


class ParquetStream:
    """A Parquet file written in pieces that becomes visible whole on ``close`` (local: a temporary name
    renamed into place; object store: a multipart upload completed on close, discarded by ``abort``)."""

    def __init__(self, loc: Location, sch: pa.Schema, min_row_group: int = 131072, dictionary=True):
        self.loc, self.schema, self.min_row_group, self.dictionary = loc, sch, min_row_group, dictionary
        self.rows = 0
        self._writer: pq.ParquetWriter | None = None
        self._fh = None
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
            sink = self._fh
        self._writer = pq.ParquetWriter(sink, self.schema, compression="zstd", use_dictionary=self.dictionary)

    def write(self, t: pa.Table, row_group_size: int | None = None) -> None:
        if self._writer is None:
            self._open()
        if t.num_rows:
            self._writer.write_table(t, row_group_size=row_group_size or max(self.min_row_group, t.num_rows))
            self.rows += t.num_rows

    def close(self) -> None:
        if self._writer is None:
            self._open()
        self._writer.close()
        if self._fh is not None:
            self._fh.close()
            self._fh.commit()
            self.loc.fs.invalidate_cache(self.loc.path)
        if self._tmp is not None:
            os.replace(self._tmp, self.loc.url)

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


def fingerprint_file(path) -> list:
    """Size and ETag (object stores: a hash of the content, so re-uploading the same bytes keeps it) or
    modification time (local disks) of a file: a changed input changes its fingerprint."""
    loc = Location.of(path)
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
