"""Where data lives and how outputs are committed, on local disks and object stores (fsspec) alike.

This is the one module that knows how an output is staged, committed, locked, resumed and overwritten; no
other module renames or deletes output files. Every path is a :class:`Location`: a local path (made absolute
on the client, so workers in another directory find it) or an fsspec URL (``s3://``, ``gs://``, ``file://``...)
with its storage options. Locations are small frozen values, pickled to the workers with their options.

Storage options come from ``--storage-options`` (:func:`options_for`: plain keys for every URL, keys that are URL
prefixes for the URLs below them, e.g. ``{"s3://public-bucket": {"anon": true}}``), and otherwise from where
fsspec and botocore look: ``AWS_*`` variables (``AWS_ENDPOINT_URL`` alone points s3fs at another endpoint, in
subprocesses too; LocalCluster workers inherit the environment as it is when they start, workers started
elsewhere do not -- explicit options always travel with the tasks), ``~/.aws``, fsspec's config.

A committed output ``DEST`` holds its files, ``_astrodask.json`` (kind, the fingerprint of the inputs and
options that made it, the list of every file astrodask wrote, counts) and ``_SUCCESS``, written last. Readers
trust an output only when ``_SUCCESS`` is there, and read only the files its manifest lists.

Local disks (rename is atomic): the job writes into ``.DEST.staging`` beside ``DEST`` and renames it into place,
holding ``.DEST.lock`` (exclusive create) meanwhile; readers only ever see the old complete ``DEST`` or the new
complete one (between the two renames of an overwrite, none).

Object stores (no rename: s3fs's ``mv`` is a copy then a delete, neither atomic nor cheap): the job writes
straight into ``DEST/`` with a ``_astrodask.staging.json`` marker; nothing there is complete until ``_SUCCESS`` is
written, after the manifest, and the marker is gone. :func:`incomplete_output` (marker, or manifest without
``_SUCCESS``) is what every reader refuses, in one line (``open_dataset``, the model loader). Each file is
written whole or not at all: small JSON files with one PUT, Parquet parts (:class:`ParquetStream`) as a
multipart upload with ``autocommit=False`` -- completed by ``commit()``, aborted by ``discard()``; a plain
``with fs.open(p, "wb")`` would publish what was written so far when an exception unwinds it, and a write file
left open at interpreter exit hangs the process. A writer SIGKILLed mid-file leaves only a pending multipart
upload (invisible, but stored and billed until aborted): :func:`abort_uploads` aborts those below ``DEST`` when
a job takes the output over. An overwrite writes the marker first (recording the output it replaces), then
deletes ``_SUCCESS``, the files the old manifest lists, the manifest; a resume that finds the old manifest
still there finishes that deletion before continuing. So from the start of an overwrite until the new commit
no complete output exists, and a reader that started on the old one may fail on a deleted file.

Locks (:class:`Lock`): ``.DEST.lock`` beside ``DEST``. On S3 it is created with a conditional PUT
(``If-None-Match: *``: of any number of racing jobs exactly one gets it -- AWS guarantees it; moto checks then
puts without a lock, one winner was observed in every race) and deleted with a conditional DELETE (``If-Match``
its ETag), so releasing it or taking over a dead job's lock never deletes a lock another job has made
meanwhile. Other object stores have no conditional create through fsspec here, nor do S3-compatible stores that
answer it 501 Not Implemented: check, write, read back, which narrows the race to about one round trip but does
not close it. A lock whose holder died on this host is taken
over; one from another host cannot be checked and is reported with its age and how to remove it.

s3fs caches directory listings per filesystem instance, and fsspec hands the same instance to everything in a
process with the same options: a listing taken before another process (a worker, another job) wrote or deleted
a key answers ``exists``/``info``/``open`` wrongly afterwards, so ``Location._fresh()`` drops the cached listing
before every remote check or read.

``--overwrite`` replaces only an output astrodask committed (its manifest present) holding nothing but the
files it lists, never a directory or prefix with anything else in it, the current directory, or an ancestor of
an input (or a whole bucket). ``--resume`` on a complete output checks that it was made from the same inputs and
options (its fingerprint) and then succeeds without writing anything; on an interrupted one it continues from
the staging area (object stores: from the parts already in ``DEST``). A prefix holding astrodask's staging
marker or manifest is astrodask's interrupted output: rerun without ``--resume`` clears it and starts again,
like a local staging directory.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import json
import os
import posixpath
import shutil
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import AstrodaskError

SUCCESS = "_SUCCESS"
META = "_astrodask.json"
STAGING_MARKER = "_astrodask.staging.json"
LOCK_STALE_SECONDS = 6 * 3600
"""A lock on an object store (where the holder's process cannot be checked) older than this, without a
heartbeat, is reported as probably stale in the refusal message."""


# ------------------------------------------------------------------------------------------------ locations


def _is_url(s: str) -> bool:
    return "://" in s and not s.startswith("file://")


@functools.lru_cache(maxsize=32)
def _filesystem(protocol: str, options_json: str):
    import fsspec

    try:
        return fsspec.filesystem(protocol, **json.loads(options_json))
    except ImportError as exc:
        pkg = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs"}.get(protocol)
        fix = f"pip install {pkg}" if pkg else "install the fsspec backend for it"
        raise AstrodaskError(f"{protocol}:// paths need a filesystem package that is not installed ({exc}); {fix}") \
            from None
    except (TypeError, ValueError) as exc:
        raise AstrodaskError(f"storage options {options_json} are not valid for {protocol}:// ({exc}); "
                             "fix --storage-options") from None


@dataclass(frozen=True, order=True)
class Location:
    """A file or directory: an absolute local path, or an fsspec URL with its storage options.

    Build with :meth:`of`. ``loc / "name"`` joins; ``str(loc)`` is the URL (or local path).
    """

    url: str
    options_json: str = "{}"
    """Storage options (credentials, endpoint...) as canonical JSON: hashable, and never shown by ``repr``."""

    @classmethod
    def of(cls, where, storage_options: dict | None = None) -> "Location":
        """A Location from a path, URL, ``os.PathLike`` or Location (``storage_options`` apply to URLs)."""
        if isinstance(where, Location):
            if storage_options and where.options_json == "{}" and not where.is_local:
                return cls(where.url, _options_json(options_for(where.url, storage_options)))
            return where
        s = os.fspath(where)
        if not isinstance(s, str):
            raise AstrodaskError(f"{where!r}: not a path; give a path or URL")
        if s.startswith("file://"):
            s = s[len("file://"):]
        if _is_url(s):
            protocol, rest = s.split("://", 1)
            if not protocol or not rest:
                raise AstrodaskError(f"{s}: not a valid URL; give e.g. s3://bucket/key or a local path")
            url = f"{protocol.lower()}://{rest.rstrip('/') or rest}"
            return cls(url, _options_json(options_for(url, storage_options)))
        if not s:
            raise AstrodaskError("an empty path was given; give a file or directory path")
        return cls(os.path.abspath(os.path.expanduser(s)))

    # -- identity -----------------------------------------------------------------------------------

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"Location({self.url!r})"

    def __fspath__(self) -> str:
        if not self.is_local:
            raise TypeError(f"{self.url} is not a local path")
        return self.url

    @property
    def is_local(self) -> bool:
        return not _is_url(self.url)

    @property
    def protocol(self) -> str:
        return self.url.split("://", 1)[0] if not self.is_local else "file"

    @property
    def options(self) -> dict:
        return json.loads(self.options_json)

    @property
    def name(self) -> str:
        return posixpath.basename(self.url.rstrip("/")) if not self.is_local else os.path.basename(self.url)

    @property
    def parent(self) -> "Location":
        if self.is_local:
            return Location(os.path.dirname(self.url))
        proto, rest = self.url.split("://", 1)
        return Location(f"{proto}://{posixpath.dirname(rest.rstrip('/')) or rest}", self.options_json)

    def __truediv__(self, name: str) -> "Location":
        name = str(name)
        if self.is_local:
            return Location(os.path.join(self.url, name))
        return Location(f"{self.url.rstrip('/')}/{name}", self.options_json)

    def with_name(self, name: str) -> "Location":
        return self.parent / name

    def relative_to(self, other: "Location") -> str:
        """This location's path below ``other`` (POSIX separators)."""
        base = other.url.rstrip("/") + ("/" if not other.is_local else os.sep)
        if not self.url.startswith(base):
            raise ValueError(f"{self.url} is not inside {other.url}")
        return self.url[len(base):].replace(os.sep, "/")

    def is_within(self, other: "Location") -> bool:
        """True when this location is ``other`` or inside it."""
        if self.is_local != other.is_local or (not self.is_local and self.protocol != other.protocol):
            return False
        a, b = self.url.rstrip("/\\") or "/", other.url.rstrip("/\\") or "/"
        sep = os.sep if self.is_local else "/"
        return a == b or a.startswith(b if b.endswith(sep) else b + sep)

    # -- the filesystem -----------------------------------------------------------------------------

    @property
    def fs(self):
        """The fsspec filesystem (local paths: fsspec's LocalFileSystem)."""
        return _filesystem(self.protocol, self.options_json)

    @property
    def path(self) -> str:
        """The path as the filesystem names it (no protocol)."""
        return self.url if self.is_local else self.url.split("://", 1)[1]

    def _fresh(self):
        """The filesystem, with its cached listings of this path and its parents dropped: other processes
        (workers, other jobs) write here, and s3fs would answer from a stale listing."""
        fs = self.fs
        fs.invalidate_cache(self.path)
        return fs

    def exists(self) -> bool:
        if self.is_local:
            return os.path.lexists(self.url)
        return _remote(lambda: self._fresh().exists(self.path), self, "check")

    def is_dir(self) -> bool:
        if self.is_local:
            return os.path.isdir(self.url)
        return _remote(lambda: self._fresh().isdir(self.path), self, "check")

    def is_file(self) -> bool:
        if self.is_local:
            return os.path.isfile(self.url)
        return _remote(lambda: self._fresh().isfile(self.path), self, "check")

    def info(self) -> dict:
        if self.is_local:
            st = os.stat(self.url)
            return {"size": st.st_size, "mtime": st.st_mtime_ns, "type": "directory" if os.path.isdir(self.url)
                    else "file"}
        return _remote(lambda: self._fresh().info(self.path), self, "read")

    def size(self) -> int:
        return int(self.info()["size"])

    def files(self) -> list["Location"]:
        """Every file below this directory (recursively), sorted; [] when it does not exist."""
        if self.is_local:
            if not os.path.isdir(self.url):
                return []
            out = []
            for root, _dirs, names in os.walk(self.url):
                out.extend(Location(os.path.join(root, n)) for n in names)
            return sorted(out, key=lambda loc: loc.url)
        found = _remote(lambda: self._fresh().find(self.path), self, "list")
        return sorted(Location(f"{self.protocol}://{p}", self.options_json) for p in found
                      if p.rstrip("/") != self.path.rstrip("/"))

    def glob(self, pattern: str) -> list["Location"]:
        """Direct children whose name matches ``pattern`` (sorted)."""
        if self.is_local:
            if not os.path.isdir(self.url):
                return []
            return sorted(self / n for n in os.listdir(self.url) if fnmatch.fnmatch(n, pattern))
        try:
            names = self._fresh().ls(self.path, detail=False)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise _os_error(exc, self, "list") from None
        return sorted(Location(f"{self.protocol}://{p}", self.options_json) for p in names
                      if fnmatch.fnmatch(posixpath.basename(p.rstrip("/")), pattern))

    def open(self, mode: str = "rb", **kw):
        if self.is_local:
            return open(self.url, mode, **kw)
        return self._fresh().open(self.path, mode, **kw)

    def read_bytes(self) -> bytes:
        if self.is_local:
            return Path(self.url).read_bytes()
        return _remote(lambda: self._fresh().cat_file(self.path), self, "read")

    def read_text(self) -> str:
        return self.read_bytes().decode("utf-8")

    def write_bytes(self, data: bytes) -> None:
        """Write the whole file at once: a reader sees the old file or the new one, never a part of it."""
        if self.is_local:
            os.makedirs(os.path.dirname(self.url), exist_ok=True)
            tmp = f"{os.path.dirname(self.url)}{os.sep}.{os.path.basename(self.url)}.tmp-{uuid.uuid4().hex}"
            try:
                with open(tmp, "wb") as fh:
                    fh.write(data)
                os.replace(tmp, self.url)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            return
        _remote(lambda: self.fs.pipe_file(self.path, data), self, "write")  # one PUT: atomic on object stores

    def write_text(self, text: str) -> None:
        self.write_bytes(text.encode("utf-8"))

    def remove(self, recursive: bool = False) -> None:
        """Delete this file (or directory, with ``recursive``); missing is fine."""
        if self.is_local:
            if os.path.isdir(self.url) and not os.path.islink(self.url):
                if recursive:
                    shutil.rmtree(self.url, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        os.rmdir(self.url)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.url)
            return
        try:
            self.fs.rm(self.path, recursive=recursive)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise _os_error(exc, self, "delete") from None
        self.fs.invalidate_cache(self.path)

    def mkdir(self) -> None:
        """Create the directory (and parents) on a local disk; object stores have no directories."""
        if self.is_local:
            try:
                os.makedirs(self.url, exist_ok=True)
            except OSError as exc:
                raise _os_error(exc, self, "create") from None


def _prefix_matches(url: str, prefix: str) -> bool:
    """True when ``url`` is ``prefix`` or below it (``s3://`` alone matches every s3 URL)."""
    proto, _, rest = prefix.partition("://")
    uproto, _, urest = url.partition("://")
    if proto.lower() != uproto.lower():
        return False
    rest = rest.rstrip("/")
    return not rest or urest == rest or urest.startswith(rest + "/")


def options_for(url: str, storage_options: dict | None) -> dict:
    """The fsspec options for ``url`` out of ``--storage-options``.

    Plain keys apply to every URL. A key that is itself a URL (``"s3://public-bucket/sdss"``) holds options for
    the URLs below it, laid over the plain ones (a longer prefix over a shorter one), e.g.
    ``{"endpoint_url": "http://127.0.0.1:9000", "s3://public-bucket": {"anon": true}}`` reads the public bucket
    anonymously and writes everything else with the usual credentials.
    """
    so = storage_options or {}
    if not isinstance(so, dict):
        raise AstrodaskError(f"storage options must be a JSON object, got {type(so).__name__}; fix --storage-options")
    out = {k: v for k, v in so.items() if "://" not in k}
    for key in sorted((k for k in so if "://" in k), key=lambda k: len(k.rstrip("/"))):
        sub = so[key]
        if not isinstance(sub, dict):
            raise AstrodaskError(f"storage options for {key} must be a JSON object of options, got "
                                 f"{json.dumps(sub)[:40]}; fix --storage-options")
        if _prefix_matches(url, key):
            out.update(sub)
    return out


def _options_json(options: dict) -> str:
    try:
        return json.dumps(options or {}, sort_keys=True)
    except TypeError as exc:
        raise AstrodaskError(f"storage options must be JSON ({exc}); fix --storage-options") from None


def _os_error(exc: OSError, loc, what: str) -> AstrodaskError:
    """An OSError as the one-line error the CLI prints."""
    why = exc.strerror or str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, PermissionError):
        fix = "check the permissions or credentials"
    elif getattr(exc, "errno", None) == 28:  # ENOSPC
        fix = "free some space or write elsewhere"
    elif getattr(exc, "errno", None) == 30:  # EROFS
        fix = "write to a writable location"
    elif isinstance(exc, FileNotFoundError):
        fix = "check the path"
    else:
        fix = "check the path and the storage"
    return AstrodaskError(f"{loc}: cannot {what} ({why}); {fix}")


def _remote(fn, loc: Location, what: str):
    try:
        return fn()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise _os_error(exc, loc, what) from None


def as_location(where, storage_options: dict | None = None) -> Location:
    """Shorthand for :meth:`Location.of`."""
    return Location.of(where, storage_options)


# ------------------------------------------------------------------------------------------------ files


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


# ------------------------------------------------------------------------------------------------ outputs


def is_complete(path) -> bool:
    """True when ``path`` is a committed astrodask output (``_SUCCESS``, and on an object store no staging marker:
    an overwrite that has begun writes the marker before it deletes anything)."""
    loc = Location.of(path)
    try:
        return (loc / SUCCESS).is_file() and (loc.is_local or not (loc / STAGING_MARKER).is_file())
    except AstrodaskError:
        return False


def read_meta(path) -> dict:
    """An output's manifest (``_astrodask.json``), {} when there is none."""
    loc = Location.of(path) / META
    try:
        doc = read_json(loc)
    except FileNotFoundError:
        return {}
    except AstrodaskError:
        raise AstrodaskError(f"{loc}: unreadable metadata; rerun the stage with --overwrite") from None
    if not isinstance(doc, dict):
        raise AstrodaskError(f"{loc}: unreadable metadata; rerun the stage with --overwrite")
    return doc


def require_complete(path, kind: str, option: str = "") -> dict:
    """Check that ``path`` is a committed output of ``kind``; return its metadata."""
    loc = Location.of(path)
    if not loc.exists():
        raise AstrodaskError(f"{loc}: no such {kind}; check the path{option}")
    if not is_complete(loc):
        raise AstrodaskError(
            f"{loc}: not a complete astrodask {kind} (no {SUCCESS} marker: the job that wrote it did not finish); "
            "rerun that stage with --resume"
        )
    meta = read_meta(loc)
    if meta.get("kind") not in (None, kind):
        raise AstrodaskError(f"{loc}: is a {meta.get('kind')}, not a {kind}; check the path{option}")
    return meta


def output_id(path) -> str | None:
    """The unique id a committed output got when it was committed (what later stages fingerprint)."""
    return read_meta(path).get("output_id")


def _diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Names of the fields that differ between two fingerprints."""
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _diff(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}")
    return out


def _canonical(obj):
    return json.loads(to_json(obj))


def incomplete_output(path) -> bool:
    """True when ``path`` holds an astrodask output that is not (or no longer) complete: our staging marker (being
    written, or an overwrite has begun: the marker goes in before anything is deleted), or our manifest without
    ``_SUCCESS`` (killed while committing or while deleting the old output). Object stores write outputs in
    place, so this is what they look like between start and commit; on a local disk ``DEST`` never holds them."""
    loc = Location.of(path)
    try:
        return (loc / STAGING_MARKER).is_file() or ((loc / META).is_file() and not (loc / SUCCESS).is_file())
    except AstrodaskError:
        return False


def require_not_incomplete(path, kind: str) -> None:
    """Refuse, in one line, an output whose writer has not committed it (killed, or still running)."""
    loc = Location.of(path)
    if incomplete_output(loc):
        raise AstrodaskError(f"{loc}: incomplete {kind} (the job writing it was interrupted or is still running: "
                             f"no {SUCCESS}); rerun that job with --resume")


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
                raise _os_error(exc, chunk[0], "delete") from None
            for x in chunk:
                fs.invalidate_cache(x.path)


def abort_uploads(dest: Location) -> int:
    """Abort the pending S3 multipart uploads below ``dest`` (what a writer killed in the middle of a file leaves:
    invisible, but stored and billed until aborted); the number aborted. Called with ``dest``'s lock held.
    Best effort: without the permission to list uploads, nothing is done (a bucket lifecycle rule
    AbortIncompleteMultipartUpload cleans them up too)."""
    if not _is_s3(dest):
        return 0
    fs = dest.fs
    bucket, _, key = dest.path.partition("/")
    prefix = key.rstrip("/") + "/"
    n = 0
    try:
        kw: dict = {}
        while True:
            page = fs.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=prefix, **kw)
            for up in page.get("Uploads", []) or []:
                with contextlib.suppress(FileNotFoundError, OSError):
                    fs.call_s3("abort_multipart_upload", Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"])
                    n += 1
            if not page.get("IsTruncated"):
                break
            kw = {"KeyMarker": page.get("NextKeyMarker"), "UploadIdMarker": page.get("NextUploadIdMarker")}
    except (OSError, ValueError, KeyError):
        pass
    return n


# ------------------------------------------------------------------------------------------------ locks


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OverflowError, ValueError):
        return False
    return True


class Lock:
    """An exclusive lock file for writing ``dest``, holding the holder's pid and host.

    Local disks: created with O_EXCL. S3: created with a conditional PUT (``If-None-Match: *``), so of two jobs
    racing for it exactly one wins, and deleted with a conditional DELETE (``If-Match: <its ETag>``), so a job only
    ever deletes the very lock object it created or judged stale (never one another job made meanwhile). Other
    object stores (and S3-compatible ones answering 501 to conditional requests) fall back to check, write, read
    back: this narrows the race to about one round trip but does not close it (README, "Object stores"). A lock left by a dead process of this host is taken over; one from
    another host is reported with how to remove it (its process cannot be checked from here).
    """

    def __init__(self, loc: Location, dest):
        self.loc, self.dest = loc, dest
        self.token = uuid.uuid4().hex
        self.me = {"pid": os.getpid(), "host": socket.gethostname(), "token": self.token, "time": time.time()}
        self._etag: str | None = None

    def _create(self) -> bool:
        data = json.dumps(self.me).encode()
        if self.loc.is_local:
            try:
                fd = os.open(self.loc.url, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            except OSError as exc:
                raise _os_error(exc, self.loc, "create the lock") from None
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            return True
        created, self._etag = _conditional_put(self.loc, data)
        return created

    def _holder(self) -> tuple[dict | None, str | None]:
        """(the holder's record, the lock object's ETag on S3); (None, None) when there is no lock."""
        for _ in range(20):  # a local holder may not have written its pid yet (created, then written)
            etag = None
            try:
                if _is_s3(self.loc):
                    etag = self.loc.info().get("ETag")
                doc = json.loads(self.loc.read_text() or "{}")
            except FileNotFoundError:
                return None, None
            except (OSError, ValueError, AstrodaskError):
                doc = {}
            if doc:
                return doc, etag
            time.sleep(0.05)
        return {}, None

    def acquire(self) -> None:
        for _ in range(5):
            if self._create():
                return
            other, etag = self._holder()
            if other is None:
                continue  # released meanwhile: try again
            same_host = other.get("host") == self.me["host"]
            if same_host and not _pid_alive(int(other.get("pid", -1) or -1)):
                # its holder died: remove exactly that lock object (on S3: only if it is still the one read)
                _remove_if_unchanged(self.loc, etag)
                continue
            age = time.time() - float(other.get("time", time.time()) or time.time())
            stale = "" if same_host or age < LOCK_STALE_SECONDS else f", taken {age / 3600:.0f} h ago"
            raise AstrodaskError(
                f"another job (pid {other.get('pid', '?')} on {other.get('host', '?')}{stale}) is writing "
                f"{self.dest}; wait for it to finish, or delete {self.loc} if that job is dead"
            )
        raise AstrodaskError(f"cannot take the lock {self.loc}; delete it if no job is writing {self.dest}")

    def release(self) -> None:
        if self.loc.is_local:
            self.loc.remove()
            return
        if self._etag is not None:
            _remove_if_unchanged(self.loc, self._etag)
            return
        with contextlib.suppress(FileNotFoundError, AstrodaskError, ValueError):
            if json.loads(self.loc.read_text()).get("token") == self.token:
                self.loc.remove()


def _is_s3(loc: Location) -> bool:
    return loc.protocol in ("s3", "s3a")


def _precondition_failed(exc: BaseException) -> bool:
    """True when an s3fs error is S3's 412 Precondition Failed (s3fs maps it to a plain OSError EINVAL)."""
    for e in (exc, exc.__cause__, exc.__context__):
        resp = getattr(e, "response", None)
        if isinstance(resp, dict):
            err = resp.get("Error", {})
            if err.get("Code") == "PreconditionFailed" or \
                    resp.get("ResponseMetadata", {}).get("HTTPStatusCode") == 412:
                return True
    return "pre-condition" in str(exc).lower() or "precondition" in str(exc).lower()


def _not_supported(exc: OSError) -> bool:
    """True for a store's "not implemented" answer (s3fs: ENOSYS for 501 NotImplemented)."""
    return getattr(exc, "errno", None) in (38, 95) or "notimplemented" in str(exc).lower().replace(" ", "")


def _remove_if_unchanged(loc: Location, etag: str | None) -> None:
    """Delete ``loc``; on S3 with ``etag``, only while it is still that object (``If-Match``): a lock another
    job created meanwhile stays. A store that refuses conditional deletes gets a plain delete."""
    if loc.is_local or not _is_s3(loc) or not etag:
        loc.remove()
        return
    fs = loc.fs
    bucket, key = loc.path.split("/", 1)
    try:
        fs.call_s3("delete_object", Bucket=bucket, Key=key, IfMatch=etag)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if _precondition_failed(exc):
            pass  # another job's lock now: not ours to delete
        elif _not_supported(exc):
            loc.remove()  # an S3-compatible store without conditional deletes
        else:
            raise _os_error(exc, loc, "delete the lock") from None
    finally:
        fs.invalidate_cache(loc.path)


def _conditional_put(loc: Location, data: bytes) -> tuple[bool, str | None]:
    """Create ``loc`` only if it does not exist: (True if this call created it, its ETag on S3).

    On S3 (s3fs) this is a PUT with ``If-None-Match: *``: the store lets exactly one writer create the key and
    answers the others 412 (s3fs: FileExistsError) or, under contention, 409 (s3fs: OSError EBUSY).
    """
    fs = loc._fresh()
    if _is_s3(loc):
        try:
            out = fs.pipe_file(loc.path, data, mode="create")
        except FileExistsError:
            return False, None
        except OSError as exc:
            if exc.errno == 16:  # EBUSY: a concurrent conditional write won
                return False, None
            if not _not_supported(exc):
                raise _os_error(exc, loc, "create the lock") from None
            # an S3-compatible store without conditional writes (501 NotImplemented): as other stores, below
        else:
            fs.invalidate_cache(loc.path)
            return True, (out or {}).get("ETag")
    # other stores: create if absent, then read back (not race-free; see Lock)
    if loc.exists():
        return False, None
    loc.write_bytes(data)
    return json.loads(loc.read_text()).get("token") == json.loads(data).get("token"), None


@contextlib.contextmanager
def locked(lock, dest):
    """Hold the lock at ``lock`` for writing ``dest`` for the duration of the block."""
    lk = Lock(Location.of(lock), dest)
    lk.acquire()
    try:
        yield lk
    finally:
        lk.release()


# ------------------------------------------------------------------------------------------------ staging


def check_overwrite_target(dest: Location, inputs=()) -> None:
    """Refuse to replace a destination that is the current directory, an ancestor of it, the root or home
    directory, or that contains one of ``inputs``."""
    if dest.is_local:
        cwd = Location.of(os.getcwd())
        home = Location.of(os.path.expanduser("~"))
        if cwd.is_within(dest) or dest.url in (os.sep, home.url) or home.is_within(dest):
            raise AstrodaskError(f"{dest} is the current directory, an ancestor of it or your home directory; "
                                 "astrodask never replaces it: choose a new destination directory")
    for src in inputs:
        loc = Location.of(src)
        if loc.is_within(dest):
            raise AstrodaskError(f"{dest} contains the input {loc}; choose a destination that does not hold "
                                 "your inputs")


@dataclass
class StagedOutput:
    """An output directory being produced by one job: checks, lock, staging area, commit.

    Use as a context manager. ``done`` is True when ``resume`` found the output already complete with the same
    fingerprint: the caller then does nothing (``commit`` is a no-op). ``path(name)`` is where a file of the
    output is written; ``commit(meta)`` publishes the output. Leaving the block without committing keeps the
    staging area (for ``resume``) and releases the lock.
    """

    dest: Location
    overwrite: bool = False
    resume: bool = False
    kind: str = "output"
    fingerprint: dict = field(default_factory=dict)
    """What made this output (inputs' ids and fingerprints, options that change the result)."""
    inputs: tuple = ()
    """Input locations: the output may not contain any of them."""
    staging: Location = field(init=False)
    lock: Location = field(init=False)
    committed: bool = field(init=False, default=False)
    done: bool = field(init=False, default=False)

    def __post_init__(self):
        self.dest = Location.of(self.dest)
        if not self.dest.is_local and "/" not in self.dest.path.strip("/"):
            raise AstrodaskError(f"{self.dest}: is a whole bucket; astrodask writes an output to a prefix inside one "
                                 f"(its lock goes beside it): give e.g. {self.dest.url.rstrip('/')}/run1")
        if self.dest.is_local:
            self.staging = self.dest.with_name(f".{self.dest.name}.staging")
        else:
            self.staging = self.dest
        self.lock = self.dest.with_name(f".{self.dest.name}.lock")
        self.fingerprint = _canonical(self.fingerprint)
        self._lock = Lock(self.lock, self.dest)

    # -- entering -----------------------------------------------------------------------------------

    def __enter__(self) -> "StagedOutput":
        check_overwrite_target(self.dest, self.inputs)
        if self._check_existing():
            return self
        if self.dest.is_local:
            parent = self.dest.parent
            if not parent.is_dir():
                parent.mkdir()
        self._lock.acquire()
        try:
            if self._check_existing():  # again under the lock: another job may have committed meanwhile
                self._lock.release()
                return self
            self._prepare()
        except BaseException:
            self._lock.release()
            raise
        return self

    def _state(self) -> str:
        """absent | complete | incomplete (object stores: our staging marker, or our manifest without
        ``_SUCCESS``: a job killed while committing or while starting an overwrite) | foreign."""
        if not self.dest.exists():
            return "absent"
        if is_complete(self.dest) and read_meta(self.dest).get("kind"):
            return "complete"
        if not self.dest.is_local:
            if incomplete_output(self.dest):
                return "incomplete"
            if not self.dest.files():
                return "absent"  # a bare prefix
        return "foreign"

    def _check_existing(self) -> bool:
        """Checks on what is at ``dest``; True when the output is already complete and matching (resume)."""
        state = self._state()
        if state == "absent" or state == "incomplete":
            return False
        if state == "foreign":
            raise AstrodaskError(
                f"{self.dest} already exists and was not written by astrodask (no {SUCCESS} and {META}); "
                "astrodask never replaces it: choose another destination"
            )
        meta = read_meta(self.dest)
        if meta.get("kind") != self.kind:
            raise AstrodaskError(f"{self.dest} is an astrodask {meta.get('kind')}, not a {self.kind}; "
                                 "choose another destination")
        if self.resume and not self.overwrite:  # (with both: continue an interrupted overwrite)
            old = meta.get("fingerprint")
            if old is None:
                raise AstrodaskError(f"{self.dest} was written by an older astrodask that did not record its inputs; "
                                     "pass --overwrite to make it again, or choose another destination")
            changed = _diff(old, self.fingerprint)
            if changed:
                raise AstrodaskError(
                    f"{self.dest} is complete but was made from other inputs or options (differ: "
                    f"{', '.join(changed[:6])}); rerun with the same ones, pass --overwrite to replace it, "
                    "or choose another destination"
                )
            self.done = True
            from .console import log

            log(f"resume: {self.kind} {self.dest} already complete, made from the same inputs and options; kept as it is")
            return True
        if not self.overwrite:
            raise AstrodaskError(
                f"{self.dest} already exists (a complete {self.kind}); pass --resume to keep it if it was made from "
                "the same inputs and options, --overwrite to replace it, or choose another destination"
            )
        self._foreign_files(meta)  # raises when anything there is not astrodask's
        return False

    def _foreign_files(self, meta: dict) -> None:
        listed = meta.get("files")
        if not isinstance(listed, list):
            raise AstrodaskError(f"{self.dest} was written by an older astrodask that did not list its files; "
                                 "delete it yourself or choose another destination")
        ours = set(listed) | {META, SUCCESS, STAGING_MARKER}
        for f in self.dest.files():
            rel = f.relative_to(self.dest)
            if rel not in ours:
                raise AstrodaskError(
                    f"{self.dest} holds {rel}, which astrodask did not write; --overwrite replaces only "
                    "astrodask's own files: move it away or choose another destination"
                )

    def _prepare(self) -> None:
        """Make the staging area ready (we hold the lock)."""
        if self.dest.is_local:
            if self.staging.exists() and not self.resume:
                self.staging.remove(recursive=True)
            elif self.staging.exists():
                self._check_staging_fingerprint()
            self.staging.mkdir()
            (self.staging / STAGING_MARKER).write_text(to_json(self._marker()))
            return
        state = self._state()
        if state == "complete":  # overwrite: from here on the old output is no longer complete
            meta = read_meta(self.dest)
            self._foreign_files(meta)  # again, under the lock
            # the marker first: at every moment until the new commit the prefix holds our marker or our manifest
            # without _SUCCESS, so it is never taken for a complete output nor for someone else's directory
            (self.dest / STAGING_MARKER).write_text(to_json({**self._marker(), "replacing": meta.get("output_id")}))
            self._remove_old(meta)
        elif state == "incomplete":
            if self.resume:
                self._check_staging_fingerprint()
                try:
                    replacing = read_json(self.dest / STAGING_MARKER).get("replacing")
                except (FileNotFoundError, AstrodaskError):
                    replacing = None
                meta = read_meta(self.dest)
                if replacing and meta.get("output_id") == replacing:
                    self._remove_old(meta)  # killed while deleting the output it replaces: finish that first
            else:  # an interrupted astrodask output (our marker or manifest is there): start again
                remove_files([f for f in self.dest.files() if f.name != STAGING_MARKER])
        abort_uploads(self.dest)  # parts of files a killed writer never completed (invisible, but stored)
        (self.dest / STAGING_MARKER).write_text(to_json(self._marker()))

    def _remove_old(self, meta: dict) -> None:
        """Delete the committed output ``meta`` describes: ``_SUCCESS``, then its files, then its manifest."""
        (self.dest / SUCCESS).remove()
        remove_files([self.dest / rel for rel in meta.get("files", [])])
        (self.dest / META).remove()

    def _marker(self) -> dict:
        return {"kind": self.kind, "fingerprint": self.fingerprint, "pid": os.getpid(),
                "host": socket.gethostname(), "started": time.time()}

    def _check_staging_fingerprint(self) -> None:
        try:
            old = read_json(self.staging / STAGING_MARKER)
        except (FileNotFoundError, AstrodaskError):
            if self.dest.is_local:
                return  # staging from an older version: the stage's own checks apply
            old = read_meta(self.dest)  # killed while committing: the manifest is there, the marker gone
            if not old:
                return
        changed = _diff(old.get("fingerprint", {}), self.fingerprint)
        if changed:
            raise AstrodaskError(
                f"the interrupted job writing {self.dest} had other inputs or options (differ: "
                f"{', '.join(changed[:6])}); rerun with the same ones, or without --resume to start again"
            )

    def __exit__(self, exc_type, exc, tb):
        if not self.done:
            self._lock.release()
        return False

    # -- writing ------------------------------------------------------------------------------------

    def path(self, name: str) -> Location:
        return self.staging / name

    def commit(self, meta: dict) -> None:
        """Write the manifest and the success marker, then publish the staging area as ``dest``."""
        if self.done:
            return
        # files a killed task left half-written (``.NAME.tmp-*``) are not part of the output
        files = []
        for f in self.staging.files():
            rel = f.relative_to(self.staging)
            if ".tmp" in f.name and f.name.startswith("."):
                f.remove()
            elif rel not in (META, SUCCESS, STAGING_MARKER):
                files.append(rel)
        doc = {"kind": self.kind, "fingerprint": self.fingerprint, "files": sorted(files),
               "output_id": uuid.uuid4().hex, "committed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "astrodask": _version(), **meta}
        (self.staging / META).write_text(to_json(doc))
        (self.staging / STAGING_MARKER).remove()
        (self.staging / SUCCESS).write_bytes(b"")
        if self.dest.is_local:
            old = None
            if self.dest.exists():
                old = self.dest.with_name(f".{self.dest.name}.old-{uuid.uuid4().hex[:8]}")
                os.replace(self.dest.url, old.url)
            os.replace(self.staging.url, self.dest.url)
            if old is not None:
                old.remove(recursive=True)
        self.committed = True


def _version() -> str:
    from . import __version__

    return __version__
