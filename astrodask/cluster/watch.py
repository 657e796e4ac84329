"""Bounded waits for futures: a cluster that cannot make progress ends the job in one line.

distributed never gives up on a future whose scheduler has no workers left, or whose workers are all paused for
memory, or keep being restarted: the future stays pending for ever. Every wait for results (``console.track``,
the backends' ``gather`` and ``tree_sum``) goes through :func:`as_done`, which looks at the cluster whenever
nothing has finished for a second and raises AstrodaskError, naming the cause, once for longer than the client's
worker timeout (``--worker-timeout``, registered by ``connect``) the cluster has had

- no worker at all (all were lost, and none joined);
- workers, but all paused (Dask stops starting tasks on a worker above 80 % of its memory limit);
- no task finished while every worker it had was lost and replaced at least twice (a restart loop).

A task that merely takes long is never cut short: a running worker resets the first two clocks, and a worker
that has lived through the whole wait rules out a restart loop.
"""

from __future__ import annotations

import contextlib
import queue
import time
from collections.abc import Callable, Iterable, Iterator

from ..errors import AstrodaskError
from .config import ClusterConfig

CHECK_EVERY = 1.0
"""Seconds without a finished future between two looks at the cluster."""
LOOK_TIMEOUT = 10.0
"""Seconds the scheduler has to answer one look."""
RESTARTS = 2
"""Workers lost without a task finishing (and no worker surviving) that make a restart loop."""
RESUME = "then rerun the same command with --resume"

_BOUNDS: dict[str, float] = {}
"""client id -> its worker timeout (seconds), set by ``connect``; other clients get ClusterConfig's default."""


def bound(client) -> float:
    """The seconds a wait on ``client``'s futures tolerates a cluster that cannot make progress."""
    return _BOUNDS.get(getattr(client, "id", None), ClusterConfig.worker_timeout)


@contextlib.contextmanager
def bounded(client, seconds: float) -> Iterator[None]:
    """Waits on ``client``'s futures give up after ``seconds`` without progress (inside the block)."""
    _BOUNDS[client.id] = float(seconds)
    try:
        yield
    finally:
        _BOUNDS.pop(client.id, None)


def as_done(futures: Iterable, what: str) -> Iterator:
    """Yield each of ``futures`` as it finishes (done, failed or cancelled), in the order they finish.

    Raises AstrodaskError (naming ``what``, the stage or step) when the cluster cannot run them (module doc).
    """
    futures = list(futures)
    if not futures:
        return
    done: queue.SimpleQueue = queue.SimpleQueue()
    for f in futures:
        f.add_done_callback(done.put)
    client = futures[0].client
    watch = Watch(bound(client), what, lambda: look(client), had_workers=getattr(client, "id", None) in _BOUNDS)
    left = len(futures)
    while left:
        try:
            fut = done.get(timeout=CHECK_EVERY)
        except queue.Empty:
            watch.check()
            continue
        left -= 1
        watch.progress()
        yield fut


def look(client) -> dict | None:
    """The scheduler's view of its workers (address -> identity), or None when it does not answer in time."""
    try:
        info = client.sync(client.scheduler.identity, n_workers=-1, callback_timeout=LOOK_TIMEOUT)
    except Exception:  # noqa: BLE001 - an unreachable or closed scheduler: the watch counts it as no answer
        return None
    return dict(info.get("workers") or {}) if isinstance(info, dict) else None


def workers_now(client) -> dict:
    """The scheduler's record of each worker (address -> identity), asked now; {} when it does not answer.

    Not ``Client.scheduler_info``: it returns the client's cached identity, which the client's periodic refresh
    (every 2 s, without workers) can overwrite between the fetch and the return, so it sometimes lists none."""
    return look(client) or {}


class Watch:
    """The clocks of one wait; ``check`` looks at the cluster (``workers()``) and raises when a clock runs out."""

    def __init__(self, limit: float, what: str, workers: Callable[[], dict | None], had_workers: bool = False,
                 clock: Callable[[], float] = time.monotonic):
        self.limit, self.what, self.workers, self.clock = limit, what, workers, clock
        self.started = self.last_progress = clock()
        self.stalled_since: float | None = None
        self.born: dict[str, float] = {}
        self.lost = self.checks = 0
        self.had_workers = had_workers
        """The cluster had a worker before this wait (``connect`` waited for one) or at one of its looks."""

    def progress(self) -> None:
        self.last_progress = self.clock()
        self.stalled_since = None
        self.lost = 0

    def check(self) -> None:
        now = self.clock()
        info = self.workers()
        if info is None:
            self._stalled(now)
            if now - self.stalled_since >= self.limit:
                raise AstrodaskError(f"{self.what}: the Dask scheduler has not answered for "
                                     f"{now - self.stalled_since:.0f} s (--worker-timeout {self.limit:g}); check "
                                     f"that it is running, {RESUME}")
            return
        first_look = self.checks == 0
        self.checks += 1
        gone = [a for a in self.born if a not in info]
        self.lost += len(gone)
        for a in gone:
            del self.born[a]
        for a in info:  # workers there at the first look count as older than the wait
            self.born.setdefault(a, -float("inf") if first_look else now)
        self.had_workers = self.had_workers or bool(info)
        running = [w for w in info.values() if w.get("status") == "running"]
        if running:
            self.stalled_since = None
        else:
            self._stalled(now)
        idle = now - self.last_progress
        survivor = any(t <= self.last_progress for t in self.born.values())
        if self.lost >= RESTARTS and idle >= self.limit and not survivor:
            raise AstrodaskError(
                f"{self.what}: the Dask workers keep restarting ({self.lost} lost and replaced in {idle:.0f} s "
                f"without a task finishing; most often they run out of memory); give each worker more memory "
                f"(--memory-limit, or the cluster's), {RESUME}")
        if self.stalled_since is not None and now - self.stalled_since >= self.limit:
            raise AstrodaskError(self._paused(info) if info else self._no_workers(now))

    def _stalled(self, now: float) -> None:
        if self.stalled_since is None:
            self.stalled_since = now

    def _no_workers(self, now: float) -> str:
        since = now - self.stalled_since
        if self.had_workers:
            return (f"{self.what}: the cluster lost all its workers and none joined within {since:.0f} s "
                    f"(--worker-timeout {self.limit:g}); start workers (a worker that died was most often out of "
                    f"memory: give workers more with --memory-limit), {RESUME}")
        return (f"{self.what}: the cluster has had no workers for {since:.0f} s (--worker-timeout {self.limit:g}); "
                f"start workers, {RESUME}")

    def _paused(self, info: dict) -> str:
        from dask.config import get

        used = sorted(int((w.get("metrics") or {}).get("memory") or 0) >> 20 for w in info.values())
        limits = sorted(int(w.get("memory_limit") or 0) >> 20 for w in info.values())
        at = f"{used[0]}" if used[0] == used[-1] else f"{used[0]}-{used[-1]}"
        of = f"{limits[0]}" if limits[0] == limits[-1] else f"{limits[0]}-{limits[-1]}"
        pause = get("distributed.worker.memory.pause", 0.8)
        rule = f" (Dask pauses a worker above {pause:.0%} of its memory limit)" if pause else ""
        n = len(info)
        who = "the only worker has" if n == 1 else f"all {n} workers have"
        return (f"{self.what}: {who} been paused for {self.clock() - self.stalled_since:.0f} s at {at} of {of} MiB "
                f"of memory{rule}, so no task can run (--worker-timeout {self.limit:g}); give each worker more "
                f"memory (--memory-limit, or the cluster's) or make smaller partitions (convert --block-size), "
                f"{RESUME}")
