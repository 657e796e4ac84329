"""Atomic outputs: every stage writes into a staging directory and commits it with one rename.

Layout of a committed output directory ``DEST``::

    DEST/part-00000.parquet ...   data (or model files)
    DEST/_astrodask.json          metadata (kind, schema version, counts, sources)
    DEST/_SUCCESS                 marker, written last inside staging, before the rename

While a job runs, it writes to ``.DEST.staging`` beside ``DEST`` and holds ``.DEST.lock``. Readers only ever
see the old complete ``DEST`` or the new complete one (between the two renames of an overwrite, none).
Each task writes its file under a temporary name and renames it, so a part file that exists is whole;
``--resume`` keeps the staging directory and skips parts already written and verified.
"""

from __future__ import annotations

import contextlib
import json
import os
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


def is_complete(path: str | os.PathLike) -> bool:
    """True when ``path`` is a committed astrodask output."""
    return (Path(path) / SUCCESS).is_file()


def read_meta(path: str | os.PathLike) -> dict:
    p = Path(path) / META
    if not p.is_file():
        return {}
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise AstrodaskError(f"{p}: unreadable metadata ({exc}); rerun the stage with --overwrite") from None


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default))
    os.replace(tmp, path)


def _json_default(o):
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_parquet_atomic(table: pa.Table, path: str | os.PathLike, row_group_size: int = 131072) -> None:
    """Write one Parquet file under a temporary name and rename it into place."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
    pq.write_table(table, tmp, row_group_size=row_group_size, compression="zstd")
    os.replace(tmp, path)


def parquet_rows(path: str | os.PathLike) -> int | None:
    """Row count from a Parquet footer, or None if the file is missing or unreadable."""
    try:
        return pq.ParquetFile(path).metadata.num_rows
    except (OSError, pa.ArrowException):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def take_lock(lock: Path, dest: Path) -> None:
    """Create the lock file ``lock`` (holding this pid and host) for writing ``dest``, or raise the one-line error
    naming the job that holds it. A lock left by a dead process of this host is taken over."""
    me = {"pid": os.getpid(), "host": socket.gethostname()}
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            other = {}
            for _attempt in range(20):  # the holder may not have written its pid yet (created, then written)
                try:
                    other = json.loads(lock.read_text() or "{}")
                except FileNotFoundError:
                    break  # released meanwhile: try to take it again
                except (OSError, ValueError):
                    other = {}
                if other:
                    break
                time.sleep(0.05)
            if not lock.exists():
                continue
            stale = other.get("host") == me["host"] and not _pid_alive(int(other.get("pid", -1)))
            if stale:
                lock.unlink(missing_ok=True)
                continue
            raise AstrodaskError(
                f"another job (pid {other.get('pid', '?')} on {other.get('host', '?')}) is writing "
                f"{dest}; wait for it to finish, or delete {lock} if that job is dead"
            ) from None
        with os.fdopen(fd, "w") as fh:
            json.dump(me, fh)
        return
    raise AstrodaskError(f"cannot take the lock {lock}; delete it if no job is writing {dest}")


@contextlib.contextmanager
def locked(lock: str | os.PathLike, dest: str | os.PathLike):
    """Hold ``lock`` for writing ``dest`` for the duration of the block (see ``take_lock``)."""
    lock = Path(lock)
    take_lock(lock, Path(dest))
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


@dataclass
class StagedOutput:
    """An output directory being produced by one job: lock, staging directory, commit.

    Use as a context manager; ``commit(meta)`` publishes the staging directory as ``dest``. Leaving the
    block without committing keeps the staging directory (for ``--resume``) and releases the lock.
    """

    dest: Path
    overwrite: bool = False
    resume: bool = False
    kind: str = "output"
    staging: Path = field(init=False)
    lock: Path = field(init=False)
    committed: bool = field(init=False, default=False)

    def __post_init__(self):
        self.dest = Path(self.dest).absolute()
        self.staging = self.dest.with_name(f".{self.dest.name}.staging")
        self.lock = self.dest.with_name(f".{self.dest.name}.lock")

    def __enter__(self) -> "StagedOutput":
        self._check_free()
        if not self.dest.parent.is_dir():
            try:
                self.dest.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise AstrodaskError(f"cannot create {self.dest.parent}: {exc.strerror}; check the path") from None
        self._take_lock()
        try:
            # again under the lock: another job may have committed ``dest`` since the first check
            self._check_free()
        except AstrodaskError:
            self.lock.unlink(missing_ok=True)
            raise
        if self.staging.exists() and not self.resume:
            shutil.rmtree(self.staging)
        self.staging.mkdir(exist_ok=True)
        return self

    def _check_free(self) -> None:
        if self.dest.exists() and not self.overwrite:
            what = "a complete" if is_complete(self.dest) else "an incomplete or foreign"
            raise AstrodaskError(
                f"{self.dest} already exists ({what} {self.kind}); pass --overwrite to replace it "
                "or choose another destination"
            )

    def _take_lock(self):
        take_lock(self.lock, self.dest)

    def __exit__(self, exc_type, exc, tb):
        self.lock.unlink(missing_ok=True)
        return False

    def path(self, name: str) -> Path:
        return self.staging / name

    def commit(self, meta: dict) -> None:
        """Write metadata and the success marker into staging, then swap it in for ``dest``."""
        # files a killed task left half-written (``.NAME.tmp-*``) are not part of the output
        for tmp in [p for p in self.staging.rglob(".*") if ".tmp" in p.name and p.is_file()]:
            tmp.unlink(missing_ok=True)
        write_json_atomic(self.staging / META, {"kind": self.kind, **meta})
        (self.staging / SUCCESS).write_text("")
        old = None
        if self.dest.exists():
            old = self.dest.with_name(f".{self.dest.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(self.dest, old)
        os.replace(self.staging, self.dest)
        self.committed = True
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def require_complete(path: str | os.PathLike, kind: str, option: str = "") -> dict:
    """Check that ``path`` is a committed output of ``kind``; return its metadata."""
    p = Path(path)
    if not p.exists():
        raise AstrodaskError(f"{p}: no such {kind}; check the path{option}")
    if not is_complete(p):
        raise AstrodaskError(
            f"{p}: not a complete astrodask {kind} (no {SUCCESS} marker: the job that wrote it did not finish); "
            "rerun that stage"
        )
    meta = read_meta(p)
    if meta.get("kind") not in (None, kind):
        raise AstrodaskError(f"{p}: is a {meta.get('kind')}, not a {kind}; check the path{option}")
    return meta
