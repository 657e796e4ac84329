"""The lock beside an output: ``.DEST.lock``, held while a job writes ``DEST``.

On S3 it is created with a conditional PUT (``If-None-Match: *``: of any number of racing jobs exactly one gets
it -- AWS guarantees it; moto checks then puts without a lock, one winner was observed in every race) and deleted
with a conditional DELETE (``If-Match`` its ETag), so releasing it or taking over a dead job's lock never deletes
a lock another job has made meanwhile. Other object stores have no conditional create through fsspec here, nor do
S3-compatible stores that answer it 501 Not Implemented: check, write, read back, which narrows the race to about
one round trip but does not close it. A lock whose holder died on this host is taken over; one from another host
cannot be checked and is reported with its age and how to remove it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import uuid

from ..errors import AstrodaskError
from .location import Location, is_s3, os_error

LOCK_STALE_SECONDS = 6 * 3600
"""A lock on an object store (where the holder's process cannot be checked) older than this, without a
heartbeat, is reported as probably stale in the refusal message."""


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
    back: this narrows the race to about one round trip but does not close it (docs/object-stores.md). A lock
    left by a dead process of this host is taken over; one from another host is reported with how to remove it
    (its process cannot be checked from here).
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
                raise os_error(exc, self.loc, "create the lock") from None
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
                if is_s3(self.loc):
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
    if loc.is_local or not is_s3(loc) or not etag:
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
            raise os_error(exc, loc, "delete the lock") from None
    finally:
        fs.invalidate_cache(loc.path)


def _conditional_put(loc: Location, data: bytes) -> tuple[bool, str | None]:
    """Create ``loc`` only if it does not exist: (True if this call created it, its ETag on S3).

    On S3 (s3fs) this is a PUT with ``If-None-Match: *``: the store lets exactly one writer create the key and
    answers the others 412 (s3fs: FileExistsError) or, under contention, 409 (s3fs: OSError EBUSY).
    """
    fs = loc._fresh()
    if is_s3(loc):
        try:
            out = fs.pipe_file(loc.path, data, mode="create")
        except FileExistsError:
            return False, None
        except OSError as exc:
            if exc.errno == 16:  # EBUSY: a concurrent conditional write won
                return False, None
            if not _not_supported(exc):
                raise os_error(exc, loc, "create the lock") from None
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
