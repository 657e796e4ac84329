"""The one place that creates Dask clients: a LocalCluster by default, or a running scheduler by address.

The caller owns the client (``with connect(cfg) as client:``) and passes it to every stage.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
from dataclasses import dataclass
from typing import Iterator

import psutil
from distributed.diagnostics.plugin import WorkerPlugin

from .errors import AstrodaskError, ConfigError


@dataclass(frozen=True)
class ClusterConfig:
    """Where the work runs."""

    scheduler: str | None = None
    """Address of a running scheduler (``tcp://host:8786``, ``tls://...``); None starts a LocalCluster.
    Defaults to the DASK_SCHEDULER_ADDRESS environment variable when set."""
    n_workers: int | None = None
    """LocalCluster only: worker processes (default: one per core, at most 4)."""
    threads_per_worker: int = 1
    """LocalCluster only: threads in each worker process."""
    memory_limit: str = "auto"
    """LocalCluster only: memory per worker (``"4GiB"``, ``"auto"`` = machine memory / workers)."""
    tls_ca: str | None = None
    """CA certificate (PEM) that signed the scheduler's certificate; needed for ``tls://`` addresses."""
    tls_cert: str | None = None
    """This client's certificate (PEM)."""
    tls_key: str | None = None
    """This client's private key (PEM)."""
    timeout: float = 30.0
    """Seconds to wait for the scheduler before giving up."""
    quiet: bool = False
    """Print nothing (no dashboard link)."""

    def __post_init__(self):
        if self.n_workers is not None and self.n_workers < 1:
            raise ConfigError("n_workers", f"must be at least 1, got {self.n_workers}", "pass --workers 1 or more")
        if self.threads_per_worker < 1:
            raise ConfigError("threads_per_worker", "must be at least 1", "pass --threads 1 or more")
        if self.memory_limit != "auto":
            from dask.utils import parse_bytes

            try:
                parse_bytes(self.memory_limit)
            except (ValueError, TypeError):
                raise ConfigError("memory_limit", f"cannot read {self.memory_limit!r} as a size",
                                  "pass e.g. --memory-limit 4GiB or auto") from None
        tls = [self.tls_ca, self.tls_cert, self.tls_key]
        if any(tls) and not all(tls):
            raise ConfigError("tls", "--tls-ca, --tls-cert and --tls-key go together", "give all three or none")
        for name, path in (("tls_ca", self.tls_ca), ("tls_cert", self.tls_cert), ("tls_key", self.tls_key)):
            if path and not os.path.isfile(path):
                raise ConfigError(name, f"file {path!r} does not exist", "give the path of a PEM file")
        if self.timeout <= 0:
            raise ConfigError("timeout", "must be positive", "pass a number of seconds")

    @property
    def address(self) -> str | None:
        return self.scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS") or None

    def security(self):
        """A distributed ``Security`` object for the TLS files, or None."""
        if not self.tls_ca:
            return None
        from distributed.security import Security

        return Security(
            tls_ca_file=self.tls_ca,
            tls_client_cert=self.tls_cert,
            tls_client_key=self.tls_key,
            require_encryption=True,
        )


def _local_size(cfg: ClusterConfig) -> tuple[int, int]:
    cores = psutil.cpu_count(logical=True) or 1
    n = cfg.n_workers or max(1, min(4, cores // cfg.threads_per_worker))
    return n, cfg.threads_per_worker


@contextlib.contextmanager
def connect(cfg: ClusterConfig = ClusterConfig()) -> Iterator["distributed.Client"]:  # noqa: F821
    """Yield a connected client; close it (and the LocalCluster, if one was started) on exit."""
    from distributed import Client, LocalCluster

    address = cfg.address
    cluster = None
    try:
        if address:
            security = cfg.security()
            _check_tls(address, security)
            try:
                client = Client(address, security=security, timeout=cfg.timeout, set_as_default=False)
            except (OSError, TimeoutError) as exc:
                raise AstrodaskError(
                    f"cannot reach the Dask scheduler at {address} ({type(exc).__name__}: {exc}); "
                    "check that it is running and the address, and pass --tls-ca/--tls-cert/--tls-key for tls://"
                ) from None
        else:
            n, threads = _local_size(cfg)
            cluster = LocalCluster(
                n_workers=n,
                threads_per_worker=threads,
                memory_limit=_local_memory(cfg.memory_limit, n),
                dashboard_address="127.0.0.1:0",
                host="127.0.0.1",
                processes=True,
                silence_logs=logging.CRITICAL,
            )
            client = Client(cluster, set_as_default=False)
    except AstrodaskError:
        raise
    _register_malloc_plugin(client)
    if not cfg.quiet:
        where = address or f"LocalCluster ({len(client.scheduler_info(n_workers=-1)['workers'])} workers)"
        print(f"[astrodask] cluster: {where}; dashboard: {client.dashboard_link}", file=sys.stderr)
    try:
        with client.as_current():
            yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


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
    """Worker plugin: ``tune_malloc`` on every worker, present and future, and ``release_memory`` when a
    task ends with the worker's memory above TRIM_FRACTION of its limit."""

    name = "astrodask-malloc"

    def setup(self, worker):
        tune_malloc()
        self._limit = worker.memory_manager.memory_limit or 0
        self._process = psutil.Process()

    def transition(self, key, start, finish, **kwargs):
        if start == "executing" and self._limit and self._process.memory_info().rss > TRIM_FRACTION * self._limit:
            release_memory()


def _register_malloc_plugin(client) -> None:
    try:
        client.register_plugin(MallocPlugin(), name=MallocPlugin.name)
    except Exception as exc:  # noqa: BLE001 - a speed tweak must never stop a job
        print(f"[astrodask] note: could not tune the workers' allocator ({type(exc).__name__}); continuing",
              file=sys.stderr)


def _check_tls(address: str, security) -> None:
    """Refuse in one line the address/TLS mismatches that distributed reports with a TypeError or
    RuntimeError (and then a 60 s hang while the half-made client closes)."""
    tls_address = address.strip().lower().startswith("tls://")
    if tls_address and security is None:
        from distributed.security import Security

        if Security().get_connection_args("client").get("ssl_context") is None:  # nor in the Dask config
            raise AstrodaskError(
                f"{address} is a TLS scheduler and no certificates were given; pass --tls-ca, --tls-cert and "
                "--tls-key (the cluster's CA certificate and this client's certificate and key)"
            )
    if security is not None and not tls_address:
        raise AstrodaskError(
            f"--tls-ca/--tls-cert/--tls-key were given but the scheduler address {address} is not tls://; "
            "use the tls:// address of the scheduler, or leave out the TLS options"
        )


def _local_memory(limit: str, n_workers: int) -> str | int:
    """Per-worker memory limit: ``auto`` is the machine's (or container's) memory split evenly between the
    workers; distributed's own ``auto`` gives each worker only its threads' share of the cores, so fewer
    single-threaded workers than cores would leave memory unused and spill early."""
    if limit != "auto":
        return limit
    from distributed.system import MEMORY_LIMIT

    return int(MEMORY_LIMIT // max(1, n_workers))


def worker_memory(client) -> int:
    """Total memory limit of the cluster's workers in bytes (0 when unknown)."""
    info = client.scheduler_info(n_workers=-1)["workers"].values()
    return int(sum(w.get("memory_limit") or 0 for w in info))


def n_worker_threads(client) -> int:
    """Total threads across the cluster's workers (at least 1)."""
    return max(1, sum(client.nthreads().values()))
