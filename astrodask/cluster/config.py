"""Where the work runs: :class:`ClusterConfig`, checked on construction, and the address rules.

This module imports nothing from distributed, so the command line can derive its cluster options from
ClusterConfig's fields without loading Dask.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

from ..errors import ConfigError

JOBQUEUE_CLUSTERS = {"slurm": "SLURMCluster", "pbs": "PBSCluster", "sge": "SGECluster", "lsf": "LSFCluster",
                     "htcondor": "HTCondorCluster"}
"""``--cluster`` values served by dask-jobqueue, and its class for each (config section ``jobqueue.<name>``)."""
CLUSTERS = ("local", *JOBQUEUE_CLUSTERS)
SCHEMES = ("tcp", "tls", "inproc", "ucx", "ws", "wss")
"""Address schemes distributed can connect to (an address without one is tcp)."""
MIN_WORKER_MEMORY = 640 * 2**20
"""Smallest memory limit per worker. A worker that has run astrodask's tasks holds ~400-450 MiB (resident) before
any data: distributed, pandas, pyarrow, numba and the compiled kernels, most of it library pages that nothing can
give back. distributed pauses a worker at 80 % of its limit and restarts it at 95 %, so under ~560 MiB the
workers pause for good or are restarted over and over; at 640 MiB training and prediction run with a cold numba
cache (peak ~450 MiB of the 512 MiB pause threshold)."""
DEFAULT_JOB_MEMORY = "2GiB"
"""Memory of a batch worker when neither --memory-limit nor the jobqueue config gives one."""
PROGRESS_EVERY = 15.0
"""Seconds between progress lines while waiting for batch jobs to start."""


@dataclass(frozen=True)
class ClusterConfig:
    """Where the work runs."""

    scheduler: str | None = field(default=None, metadata={"metavar": "ADDRESS"})
    """Address of a running scheduler (``tcp://host:8786``, ``tls://...``); None starts a cluster (``cluster``).
    Defaults to the DASK_SCHEDULER_ADDRESS environment variable when set (for ``cluster="local"``)."""
    n_workers: int | None = field(default=None, metadata={"flag": "--workers"})
    """LocalCluster only: worker processes (default: one per core, at most 4)."""
    threads_per_worker: int = field(default=1, metadata={"flag": "--threads"})
    """Threads in each worker process (a LocalCluster's; a batch job's cores when its jobqueue config has none)."""
    memory_limit: str = "auto"
    """Memory per worker (``"4GiB"``; at least 640 MiB). ``"auto"``: LocalCluster = machine memory / workers,
    batch job = the jobqueue config's ``memory`` (else 2 GiB)."""
    tls_ca: str | None = None
    """CA certificate (PEM) that signed the scheduler's certificate; needed for ``tls://`` addresses."""
    tls_cert: str | None = None
    """This client's certificate (PEM)."""
    tls_key: str | None = None
    """This client's private key (PEM)."""
    timeout: float = field(default=30.0, metadata={"metavar": "SECONDS"})
    """Seconds to wait for the scheduler to answer (connect and Dask handshake) before giving up."""
    worker_timeout: float = field(default=60.0, metadata={"metavar": "SECONDS"})
    """Seconds to wait for workers before giving up: the first worker of a running scheduler or of batch jobs
    (raise it when jobs wait in a busy queue), every worker of a LocalCluster; and, mid-job, a cluster that has
    no running worker (all lost, or paused for memory) or whose workers keep restarting."""
    cluster: str = field(default="local", metadata={"choices": CLUSTERS})
    """What to start when no scheduler address is given: ``local`` (a LocalCluster on this machine) or a batch
    queue through dask-jobqueue, ``slurm``, ``pbs``, ``sge``, ``lsf`` or ``htcondor``; jobs are sized by the
    standard Dask config (``jobqueue.<name>`` in ``~/.config/dask/jobqueue.yaml`` or ``$DASK_CONFIG``)."""
    jobs: int | None = None
    """Batch clusters only: jobs to submit, each running the config's ``processes`` workers (default 1)."""
    adapt_max: int | None = field(default=None, metadata={"metavar": "N"})
    """Batch clusters only: scale adaptively between ``jobs`` and this many jobs with the load (None: fixed)."""

    def __post_init__(self):
        if self.cluster not in CLUSTERS:
            raise ConfigError("cluster", f"unknown cluster {self.cluster!r}",
                              f"pass --cluster {', '.join(CLUSTERS[:-1])} or {CLUSTERS[-1]}")
        batch = self.cluster != "local"
        if self.scheduler is not None:
            if batch:
                raise ConfigError("cluster", f"--scheduler and --cluster {self.cluster} are mutually exclusive "
                                  f"(--cluster {self.cluster} starts its own scheduler)",
                                  "give --scheduler to use a running cluster or --cluster to start one, not both")
            check_address(self.scheduler)
        if self.n_workers is not None:
            if self.n_workers < 1:
                raise ConfigError("n_workers", f"must be at least 1, got {self.n_workers}", "pass --workers 1 or more")
            if batch:
                raise ConfigError("n_workers", f"--workers sizes a LocalCluster, not --cluster {self.cluster}",
                                  "pass --jobs N (and the workers per job as jobqueue processes in the Dask config)")
        if self.threads_per_worker < 1:
            raise ConfigError("threads_per_worker", "must be at least 1", "pass --threads 1 or more")
        if self.memory_limit != "auto":
            from dask.utils import parse_bytes

            try:
                size = parse_bytes(self.memory_limit)
            except (ValueError, TypeError):
                raise ConfigError("memory_limit", f"cannot read {self.memory_limit!r} as a size",
                                  "pass e.g. --memory-limit 4GiB or auto") from None
            if size < MIN_WORKER_MEMORY:
                least = f"{MIN_WORKER_MEMORY >> 20}MiB"
                raise ConfigError("memory_limit", f"{self.memory_limit} per worker is below the {least} a worker "
                                  "needs to start and run", f"pass --memory-limit {least} or more (or auto)")
        for name, value in (("jobs", self.jobs), ("adapt_max", self.adapt_max)):
            if value is None:
                continue
            option = "--" + name.replace("_", "-")
            if not batch:
                raise ConfigError(name, f"{option} is for a batch cluster",
                                  "add --cluster slurm (or pbs, sge, lsf, htcondor), or size a LocalCluster with "
                                  "--workers")
            if value < 1:
                raise ConfigError(name, f"must be at least 1, got {value}", f"pass {option} 1 or more")
        if self.adapt_max is not None and self.adapt_max < (self.jobs or 1):
            raise ConfigError("adapt_max", f"{self.adapt_max} is below --jobs {self.jobs}",
                              "pass --adapt-max at least --jobs (the jobs kept running)")
        tls = [self.tls_ca, self.tls_cert, self.tls_key]
        if any(tls) and not all(tls):
            raise ConfigError("tls", "--tls-ca, --tls-cert and --tls-key go together", "give all three or none")
        if any(tls) and batch:
            raise ConfigError("tls", f"--tls-ca/--tls-cert/--tls-key are for a tls:// --scheduler, not for "
                              f"--cluster {self.cluster}", "leave them out (set TLS in the Dask config instead)")
        for name, path in (("tls_ca", self.tls_ca), ("tls_cert", self.tls_cert), ("tls_key", self.tls_key)):
            if path and not os.path.isfile(path):
                raise ConfigError(name, f"file {path!r} does not exist", "give the path of a PEM file")
        if not self.timeout > 0:
            raise ConfigError("timeout", "must be positive", "pass a number of seconds")
        if not self.worker_timeout > 0:
            raise ConfigError("worker_timeout", "must be positive", "pass --worker-timeout SECONDS")

    @property
    def address(self) -> str | None:
        if self.scheduler:
            return self.scheduler
        if self.cluster == "local":
            return os.environ.get("DASK_SCHEDULER_ADDRESS") or None
        return None

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


def check_address(address: str, field: str = "scheduler") -> None:
    """Refuse an address distributed cannot connect to, e.g. the dashboard's http:// URL (distributed would
    stall for a minute on it and then print a ``Client.__del__`` traceback)."""
    scheme = scheme_of(address)
    if scheme in ("http", "https"):
        raise ConfigError(field, f"{address} looks like the dashboard's URL (a web page), not a scheduler address",
                          "pass the scheduler's tcp:// address, e.g. tcp://host:8786 (printed by `dask scheduler`)")
    if scheme not in SCHEMES:
        raise ConfigError(field, f"{address}: unknown address scheme {scheme!r}",
                          f"use one of {', '.join(s + '://' for s in SCHEMES)}, e.g. tcp://host:8786")


def scheme_of(address: str) -> str:
    text = address.strip()
    return text.split("://", 1)[0].lower() if "://" in text else "tcp"



def note(quiet: bool, msg: str) -> None:
    if not quiet:
        print(f"[astrodask] {msg}", file=sys.stderr, flush=True)
