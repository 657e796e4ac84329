"""The workers: starting and stopping them within bounds, waiting for them, the allocator plugin, their memory."""

from __future__ import annotations

import asyncio
import functools
import os
import sys
import time

import psutil
from distributed.diagnostics.plugin import WorkerPlugin

from ..errors import AstrodaskError
from .config import PROGRESS_EVERY
from .watch import workers_now


def wait_for_workers(client, n: int, timeout: float, message, progress=None) -> None:
    """Wait until ``n`` workers have joined (running, or paused for memory: the stages' waits report a cluster
    that stays paused), for at most ``timeout`` seconds; then raise ``AstrodaskError(message(joined))``, joined
    being how many had. ``progress()`` is called every PROGRESS_EVERY seconds."""
    start = time.monotonic()
    deadline, next_note = start + timeout, start + PROGRESS_EVERY
    while True:
        info = workers_now(client)
        have = sum(w.get("status") in ("running", "paused") for w in info.values())
        if have >= n:
            return
        now = time.monotonic()
        if now >= deadline:
            raise AstrodaskError(message(have))
        if progress and now >= next_note:
            progress()
            next_note += PROGRESS_EVERY
        time.sleep(min(0.2, max(0.0, deadline - now)))


def scale(cluster, n: int, timeout: float) -> None:
    """Add worker specs up to ``n`` (a jobqueue cluster: ``n`` jobs) and wait, at most ``timeout`` s, until they
    have started (a job: been submitted), raising the first start error here.

    Not ``cluster.scale(n)``: it starts them from a loop callback whose errors tornado prints as a traceback
    ("Exception in callback"), and LocalCluster(n_workers=n) waits for them without a bound.
    """
    from distributed.core import Status

    async def scale_and_start():
        while len(cluster.worker_spec) < n:
            cluster.worker_spec.update(cluster.new_worker_spec())
        task = asyncio.ensure_future(cluster._correct_state())
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved even after our timeout
        # shielded: on timeout the start goes on, so the workers it makes are recorded and closed with the cluster
        await asyncio.wait_for(asyncio.shield(task), timeout)

    try:
        cluster.sync(scale_and_start)
    except Exception:
        # a job whose submission failed stays "created" (dask-jobqueue's Job.close does not change its status) and
        # SpecCluster.close() would then stop on an assertion: mark it failed
        for worker in list(getattr(cluster, "_created", ())):
            if getattr(worker, "status", None) == Status.created:
                worker.status = Status.failed
        raise


def close_cluster(cluster, what: str) -> None:
    try:
        cluster.close(timeout=60)
    except Exception as exc:  # noqa: BLE001 - never hide the job's own result or error behind a failed close
        print(f"[astrodask] note: could not close the {what} cleanly ({first_line(exc)})", file=sys.stderr)


def first_line(exc: BaseException) -> str:
    """One line about ``exc``; for a failed command (dask-jobqueue's RuntimeError with its output), its
    stderr lines that say "error"."""
    text = str(exc).strip()
    if "\nstderr:\n" in text:
        stderr = text.split("\nstderr:\n", 1)[1]
        lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
        errors = [ln for ln in lines if "error" in ln.lower()] or lines
        if errors:
            return "; ".join(dict.fromkeys(errors))[:400]
    return f"{type(exc).__name__}: {' '.join(text.split())}"[:400]


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters
MALLOC_KEEP = 8 << 20


@functools.lru_cache(maxsize=1)
def _libc():
    """glibc through ctypes, or None (another OS or C library)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:  # not glibc (e.g. musl): nothing to tune
        return None


def tune_malloc() -> bool:
    """Let glibc reuse freed memory for NumPy temporaries within a task: allocations below MALLOC_KEEP come
    from the heap, and up to MALLOC_KEEP of free heap is kept rather than returned to the OS. True if set.

    Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536`` (so freed memory goes back to the OS),
    which also pins glibc's mmap threshold at 128 KiB: every larger temporary is then fresh memory that the
    kernel faults in and zeroes, page by page, which made feature expansion and scoring ~2.5x slower on the
    workers than in a plain process. Heap memory freed by a task can be fragmented and stay with the process,
    so ``MallocPlugin`` gives it back after a task when memory is getting high (else a worker paused for
    memory could stay paused: no task would run to free it).
    """
    libc = _libc()
    if libc is None:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MALLOC_KEEP)) and bool(libc.mallopt(M_TRIM_THRESHOLD, MALLOC_KEEP))


def no_numpy_hugepages() -> bool:
    """Stop NumPy asking the kernel for transparent huge pages on its large arrays (``madvise(MADV_HUGEPAGE)``,
    on by default on Linux), unless ``NUMPY_MADVISE_HUGEPAGE`` is set in the environment (then that choice
    stands). True if turned off here.

    With THP in ``madvise`` mode (the common default) every 2 MiB page a new array touches is zeroed, and
    compacted for, at the fault: on the 2-core VMs measured, filling a fresh 57 MB array cost 140 ms with huge
    pages against 21 ms without, persisting the 10M-row training rows 5.0 s against 3.4-4.0 s, and the whole
    default ``astrodask train`` 32.6 s against 31.0 s (benchmarks/README.md, "huge pages"), with full-data
    epochs no slower."""
    if "NUMPY_MADVISE_HUGEPAGE" in os.environ:
        return False
    try:
        from numpy._core import multiarray
    except ImportError:  # NumPy 1.x
        from numpy.core import multiarray
    toggle = getattr(multiarray, "_set_madvise_hugepage", None)
    if toggle is None:
        return False
    toggle(False)
    return True


def release_memory() -> None:
    """Return the free heap memory of this process to the OS (glibc ``malloc_trim``)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


TRIM_FRACTION = 0.5
"""A task's end trims the heap when the worker's memory is above this fraction of its limit: below
distributed's default target (0.6), spill (0.7) and pause (0.8) thresholds, so a worker never pauses on
memory that trimming would give back, and memory-rich workers keep their heap for the next task."""


class MallocPlugin(WorkerPlugin):
    """Worker plugin: ``tune_malloc`` and ``no_numpy_hugepages`` on every worker, present and future, and
    ``release_memory`` when a task ends with the worker's memory above TRIM_FRACTION of its limit."""

    name = "astrodask-malloc"

    def setup(self, worker):
        tune_malloc()
        no_numpy_hugepages()
        self._limit = worker.memory_manager.memory_limit or 0
        self._process = psutil.Process()

    def transition(self, key, start, finish, **kwargs):
        if start == "executing" and self._limit and self._process.memory_info().rss > TRIM_FRACTION * self._limit:
            release_memory()


def register_malloc_plugin(client) -> None:
    try:
        client.register_plugin(MallocPlugin(), name=MallocPlugin.name)
    except Exception as exc:  # noqa: BLE001 - a speed tweak must never stop a job
        print(f"[astrodask] note: could not tune the workers' allocator ({type(exc).__name__}); continuing",
              file=sys.stderr)


def worker_memory(client) -> int:
    """Total memory limit of the cluster's workers in bytes (0 when unknown)."""
    return int(sum(w.get("memory_limit") or 0 for w in workers_now(client).values()))


def n_worker_threads(client) -> int:
    """Total threads across the cluster's workers (at least 1)."""
    return max(1, sum(client.nthreads().values()))
