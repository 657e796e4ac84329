"""Locations: a local path (made absolute on the client, so workers in another directory find it) or an fsspec
URL (``s3://``, ``gs://``, ``file://``...) with its storage options. Locations are small frozen values, pickled
to the workers with their options.

Storage options come from ``--storage-options`` (:func:`options_for`: plain keys for every URL, keys that are URL
prefixes for the URLs below them, e.g. ``{"s3://public-bucket": {"anon": true}}``), and otherwise from where
fsspec and botocore look: ``AWS_*`` variables (``AWS_ENDPOINT_URL`` alone points s3fs at another endpoint, in
subprocesses too; LocalCluster workers inherit the environment as it is when they start, workers started
elsewhere do not -- explicit options always travel with the tasks), ``~/.aws``, fsspec's config.

s3fs caches directory listings per filesystem instance, and fsspec hands the same instance to everything in a
process with the same options: a listing taken before another process (a worker, another job) wrote or deleted
a key answers ``exists``/``info``/``open`` wrongly afterwards, so ``Location._fresh()`` drops the cached listing
before every remote check or read.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import json
import os
import posixpath
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from ..errors import AstrodaskError
from .options import check_storage_options


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
        keys = ", ".join(sorted(json.loads(options_json))) or "none"
        raise AstrodaskError(f"storage options (keys: {keys}) are not valid for {protocol}:// ({exc}); "
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
    def of(cls, where, storage_options: dict | None = None) -> Location:
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
            opts = options_for(url, storage_options)
            check_storage_options(protocol, opts)
            return cls(url, _options_json(opts))
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
    def parent(self) -> Location:
        if self.is_local:
            return Location(os.path.dirname(self.url))
        proto, rest = self.url.split("://", 1)
        return Location(f"{proto}://{posixpath.dirname(rest.rstrip('/')) or rest}", self.options_json)

    def __truediv__(self, name: str) -> Location:
        name = str(name)
        if self.is_local:
            return Location(os.path.join(self.url, name))
        return Location(f"{self.url.rstrip('/')}/{name}", self.options_json)

    def with_name(self, name: str) -> Location:
        return self.parent / name

    def relative_to(self, other: Location) -> str:
        """This location's path below ``other`` (POSIX separators)."""
        base = other.url.rstrip("/") + ("/" if not other.is_local else os.sep)
        if not self.url.startswith(base):
            raise ValueError(f"{self.url} is not inside {other.url}")
        return self.url[len(base):].replace(os.sep, "/")

    def is_within(self, other: Location) -> bool:
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
        return remote(lambda: self._fresh().exists(self.path), self, "check")

    def is_dir(self) -> bool:
        if self.is_local:
            return os.path.isdir(self.url)
        return remote(lambda: self._fresh().isdir(self.path), self, "check")

    def is_file(self) -> bool:
        if self.is_local:
            return os.path.isfile(self.url)
        return remote(lambda: self._fresh().isfile(self.path), self, "check")

    def info(self) -> dict:
        if self.is_local:
            st = os.stat(self.url)
            return {"size": st.st_size, "mtime": st.st_mtime_ns, "type": "directory" if os.path.isdir(self.url)
                    else "file"}
        return remote(lambda: self._fresh().info(self.path), self, "read")

    def size(self) -> int:
        return int(self.info()["size"])

    def files(self) -> list[Location]:
        """Every file below this directory (recursively), sorted; [] when it does not exist."""
        if self.is_local:
            if not os.path.isdir(self.url):
                return []
            out = []
            for root, _dirs, names in os.walk(self.url):
                out.extend(Location(os.path.join(root, n)) for n in names)
            return sorted(out, key=lambda loc: loc.url)
        found = remote(lambda: self._fresh().find(self.path), self, "list")
        return sorted(Location(f"{self.protocol}://{p}", self.options_json) for p in found
                      if p.rstrip("/") != self.path.rstrip("/"))

    def sized_files(self) -> list[tuple[Location, int | None]]:
        """:meth:`files` with each file's size (from one listing on an object store)."""
        if self.is_local:
            out = []
            for f in self.files():
                try:
                    out.append((f, os.path.getsize(f.url)))
                except OSError:
                    out.append((f, None))
            return out
        found = remote(lambda: self._fresh().find(self.path, detail=True), self, "list")
        return sorted((Location(f"{self.protocol}://{p}", self.options_json), info.get("size"))
                      for p, info in found.items() if p.rstrip("/") != self.path.rstrip("/"))

    def glob(self, pattern: str) -> list[Location]:
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
            raise os_error(exc, self, "list") from None
        return sorted(Location(f"{self.protocol}://{p}", self.options_json) for p in names
                      if fnmatch.fnmatch(posixpath.basename(p.rstrip("/")), pattern))

    def open(self, mode: str = "rb", **kw):
        if self.is_local:
            return open(self.url, mode, **kw)
        return self._fresh().open(self.path, mode, **kw)

    def read_bytes(self) -> bytes:
        if self.is_local:
            return Path(self.url).read_bytes()
        return remote(lambda: self._fresh().cat_file(self.path), self, "read")

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
        remote(lambda: self.fs.pipe_file(self.path, data), self, "write")  # one PUT: atomic on object stores

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
            raise os_error(exc, self, "delete") from None
        self.fs.invalidate_cache(self.path)

    def mkdir(self) -> None:
        """Create the directory (and parents) on a local disk; object stores have no directories."""
        if self.is_local:
            try:
                os.makedirs(self.url, exist_ok=True)
            except OSError as exc:
                raise os_error(exc, self, "create") from None


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


def os_error(exc: OSError, loc, what: str) -> AstrodaskError:
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


def remote(fn, loc: Location, what: str):
    try:
        return fn()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise os_error(exc, loc, what) from None


def is_s3(loc: Location) -> bool:
    return loc.protocol in ("s3", "s3a")
