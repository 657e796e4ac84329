"""The one place that creates Dask clients: a LocalCluster by default, a running scheduler by address, or a
batch-queue cluster (SLURM, PBS, SGE, LSF, HTCondor) through dask-jobqueue.

The caller owns the client (``with connect(cfg) as client:``) and passes it to every stage. Every wait is
bounded and ends in one ``AstrodaskError`` line: the scheduler must answer as a Dask scheduler within
``timeout``, at least one worker must join within ``worker_timeout``, and while the stages wait for results a
cluster that cannot run them (no workers, all paused, restarting in a loop) ends the wait after
``worker_timeout``.

``config`` (ClusterConfig; no distributed import), ``address`` (a running scheduler), ``local`` (LocalCluster),
``jobqueue`` (batch queues), ``workers`` (waits, the allocator plugin, memory), ``watch`` (every wait for results
bounded: no workers, all paused or restarting for longer than ``worker_timeout`` ends it), ``backend`` (where
worker functions run: ``OnCluster`` or ``InProcess``, with the fixed-order ``tree_sum``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from .config import CLUSTERS, MIN_WORKER_MEMORY, ClusterConfig, check_address, note

_LAZY = {"job_script": ".jobqueue", "jobqueue_class": ".jobqueue", "jobqueue_kwargs": ".jobqueue",
         "TRIM_FRACTION": ".workers", "MallocPlugin": ".workers", "n_worker_threads": ".workers",
         "tune_malloc": ".workers", "worker_memory": ".workers"}
"""Names whose modules import distributed: loaded on first use, so ``ClusterConfig`` stays light."""


def __getattr__(name: str):
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["CLUSTERS", "MIN_WORKER_MEMORY", "TRIM_FRACTION", "ClusterConfig", "MallocPlugin", "check_address",
           "connect", "job_script", "jobqueue_class", "jobqueue_kwargs", "n_worker_threads", "tune_malloc",
           "worker_memory"]


@contextlib.contextmanager
def connect(cfg: ClusterConfig | None = None, quiet: bool = False) -> Iterator[distributed.Client]:  # noqa: F821
    """Yield a connected client with at least one worker (``cfg`` None: a LocalCluster sized to the machine); on
    exit close it, and the cluster if one was started here (a batch cluster's jobs are cancelled)."""
    cfg = cfg or ClusterConfig()
    with contextlib.ExitStack() as stack:
        address = cfg.address
        if address:
            from .address import connect_address

            client, where = connect_address(cfg, address, stack)
        elif cfg.cluster == "local":
            from .local import start_local

            client, where = start_local(cfg, stack)
        else:
            from .jobqueue import start_jobqueue

            client, where = start_jobqueue(cfg, stack, quiet)
        from .watch import bounded
        from .workers import register_malloc_plugin

        register_malloc_plugin(client)
        note(quiet, f"cluster: {where}; dashboard: {client.dashboard_link}")
        with client.as_current(), bounded(client, cfg.worker_timeout):
            yield client
