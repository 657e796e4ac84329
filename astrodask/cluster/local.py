"""A LocalCluster on this machine, sized to it, started with a bound on every wait."""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading

import psutil

from ..errors import AstrodaskError, ConfigError
from .config import MIN_WORKER_MEMORY, ClusterConfig
from .watch import workers_now
from .workers import close_cluster, first_line, scale, wait_for_workers


def local_size(cfg: ClusterConfig) -> tuple[int, int]:
    cores = psutil.cpu_count(logical=True) or 1
    n = cfg.n_workers or max(1, min(4, cores // cfg.threads_per_worker))
    return n, cfg.threads_per_worker


def start_local(cfg: ClusterConfig, stack: contextlib.ExitStack):
    from dask.utils import format_bytes
    from distributed import Client, LocalCluster

    n, threads = local_size(cfg)
    memory = local_memory(cfg.memory_limit, n)
    check_local_memory(cfg, n, memory)
    # no workers at construction (LocalCluster would wait for them without a bound): scale, then wait, bounded
    cluster = LocalCluster(n_workers=0, threads_per_worker=threads, memory_limit=memory,
                           dashboard_address="127.0.0.1:0", host="127.0.0.1", processes=True,
                           silence_logs=logging.CRITICAL)
    stack.callback(close_cluster, cluster, "LocalCluster")
    each = memory if isinstance(memory, str) else format_bytes(memory)

    def failed(have: int) -> str:
        return (f"the LocalCluster's workers did not start within {cfg.worker_timeout:g} s ({have} of {n} running, "
                f"{each} each); check --memory-limit and --workers, or allow longer with --worker-timeout")

    try:
        with _sigint_ignored_by_children():
            scale(cluster, n, cfg.worker_timeout)
    except TimeoutError:
        raise AstrodaskError(failed(0)) from None
    except Exception as exc:  # noqa: BLE001 - a worker process that died while starting
        raise AstrodaskError(f"the LocalCluster's workers failed to start ({first_line(exc)}); check --memory-limit "
                             f"({each} each) and --workers") from None
    client = Client(cluster, set_as_default=False)
    stack.callback(client.close)
    wait_for_workers(client, n, cfg.worker_timeout, failed)
    return client, f"LocalCluster ({len(workers_now(client))} workers)"


@contextlib.contextmanager
def _sigint_ignored_by_children():
    """Worker processes started in this block ignore SIGINT (they inherit an ignored signal; Python installs its
    KeyboardInterrupt handler only where SIGINT is not ignored at start-up).

    A Ctrl-C in a terminal goes to the whole foreground process group: without this, every LocalCluster worker
    prints its own traceback while this process is already closing the cluster in order."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def local_memory(limit: str, n_workers: int) -> str | int:
    """Per-worker memory limit: ``auto`` is the machine's (or container's) memory split evenly between the
    workers; distributed's own ``auto`` gives each worker only its threads' share of the cores, so fewer
    single-threaded workers than cores would leave memory unused and spill early."""
    if limit != "auto":
        return limit
    from distributed.system import MEMORY_LIMIT

    return int(MEMORY_LIMIT // max(1, n_workers))


def check_local_memory(cfg: ClusterConfig, n: int, memory: str | int) -> None:
    """Refuse up front a LocalCluster whose automatic memory per worker is under MIN_WORKER_MEMORY (its workers
    would pause or be restarted for ever); warn when explicit limits add up to more than the machine has."""
    from dask.utils import format_bytes, parse_bytes
    from distributed.system import MEMORY_LIMIT

    machine = int(MEMORY_LIMIT)
    least = f"{MIN_WORKER_MEMORY >> 20} MiB"
    if cfg.memory_limit == "auto" and int(memory) < MIN_WORKER_MEMORY:
        most = machine // MIN_WORKER_MEMORY
        fix = (f"use at most {most} workers (--workers {most})" if most >= 1 else
               "run on a machine with more memory, or on a cluster (--scheduler, --cluster)")
        workers = f"--workers {n}" if cfg.n_workers else f"{n} workers (one per core)"
        raise ConfigError("n_workers", f"{workers}: this machine's {format_bytes(machine)} split {n} ways is "
                          f"{int(memory) >> 20} MiB per worker, below the {least} a worker needs", fix)
    if cfg.memory_limit != "auto" and n * parse_bytes(cfg.memory_limit) > machine:
        print(f"[astrodask] warning: {n} workers x {cfg.memory_limit} is more memory than this machine has "
              f"({format_bytes(machine)}): the system may kill workers; use fewer --workers or a smaller "
              "--memory-limit", file=sys.stderr, flush=True)
