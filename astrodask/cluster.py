"""The one place that creates Dask clients: a LocalCluster by default, a running scheduler by address, or a
batch-queue cluster (SLURM, PBS, SGE, LSF, HTCondor) through dask-jobqueue.

The caller owns the client (``with connect(cfg) as client:``) and passes it to every stage. Every wait here is
bounded and ends in one ``AstrodaskError`` line: the scheduler must answer as a Dask scheduler within
``timeout`` and at least one worker must join within ``worker_timeout``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Iterator

import psutil
from distributed.diagnostics.plugin import WorkerPlugin

from .errors import AstrodaskError, ConfigError

JOBQUEUE_CLUSTERS = {"slurm": "SLURMCluster", "pbs": "PBSCluster", "sge": "SGECluster", "lsf": "LSFCluster",
                     "htcondor": "HTCondorCluster"}
"""``--cluster`` values served by dask-jobqueue, and its class for each (config section ``jobqueue.<name>``)."""
CLUSTERS = ("local", *JOBQUEUE_CLUSTERS)
SCHEMES = ("tcp", "tls", "inproc", "ucx", "ws", "wss")
"""Address schemes distributed can connect to (an address without one is tcp)."""
MIN_WORKER_MEMORY = 384 * 2**20
"""Smallest memory limit per worker. A worker process with astrodask's imports holds ~210 MiB before any task;
distributed pauses a worker at 80 % of its limit, so at 256 MiB the workers pause at once and the job hangs
(measured), and at 1 MiB the nanny kills the worker over and over."""
DEFAULT_JOB_MEMORY = "2GiB"
"""Memory of a batch worker when neither --memory-limit nor the jobqueue config gives one."""
PROGRESS_EVERY = 15.0
"""Seconds between progress lines while waiting for batch jobs to start."""


@dataclass(frozen=True)
class ClusterConfig:
    """Where the work runs."""

    scheduler: str | None = None
    """Address of a running scheduler (``tcp://host:8786``, ``tls://...``); None starts a cluster (``cluster``).
    Defaults to the DASK_SCHEDULER_ADDRESS environment variable when set (for ``cluster="local"``)."""
    n_workers: int | None = None
    """LocalCluster only: worker processes (default: one per core, at most 4)."""
    threads_per_worker: int = 1
    """Threads in each worker process (a LocalCluster's; a batch job's cores when its jobqueue config has none)."""
    memory_limit: str = "auto"
    """Memory per worker (``"4GiB"``; at least 384 MiB). ``"auto"``: LocalCluster = machine memory / workers,
    batch job = the jobqueue config's ``memory`` (else 2 GiB)."""
    tls_ca: str | None = None
    """CA certificate (PEM) that signed the scheduler's certificate; needed for ``tls://`` addresses."""
    tls_cert: str | None = None
    """This client's certificate (PEM)."""
    tls_key: str | None = None
    """This client's private key (PEM)."""
    timeout: float = 30.0
    """Seconds to wait for the scheduler to answer (connect and Dask handshake) before giving up."""
    worker_timeout: float = 60.0
    """Seconds to wait for workers before giving up: the first worker of a running scheduler or of batch jobs
    (raise it when jobs wait in a busy queue), every worker of a LocalCluster."""
    cluster: str = "local"
    """What to start when no scheduler address is given: ``local`` (a LocalCluster on this machine) or a batch
    queue through dask-jobqueue, ``slurm``, ``pbs``, ``sge``, ``lsf`` or ``htcondor``; jobs are sized by the
    standard Dask config (``jobqueue.<name>`` in ``~/.config/dask/jobqueue.yaml`` or ``$DASK_CONFIG``)."""
    jobs: int | None = None
    """Batch clusters only: jobs to submit, each running the config's ``processes`` workers (default 1)."""
    adapt_max: int | None = None
    """Batch clusters only: scale adaptively between ``jobs`` and this many jobs with the load (None: fixed)."""
    quiet: bool = False
    """Print nothing (no dashboard link)."""

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
    scheme = _scheme(address)
    if scheme in ("http", "https"):
        raise ConfigError(field, f"{address} looks like the dashboard's URL (a web page), not a scheduler address",
                          "pass the scheduler's tcp:// address, e.g. tcp://host:8786 (printed by `dask scheduler`)")
    if scheme not in SCHEMES:
        raise ConfigError(field, f"{address}: unknown address scheme {scheme!r}",
                          f"use one of {', '.join(s + '://' for s in SCHEMES)}, e.g. tcp://host:8786")


def _scheme(address: str) -> str:
    text = address.strip()
    return text.split("://", 1)[0].lower() if "://" in text else "tcp"


def _local_size(cfg: ClusterConfig) -> tuple[int, int]:
    cores = psutil.cpu_count(logical=True) or 1
    n = cfg.n_workers or max(1, min(4, cores // cfg.threads_per_worker))
    return n, cfg.threads_per_worker


def _note(cfg: ClusterConfig, msg: str) -> None:
    if not cfg.quiet:
        print(f"[astrodask] {msg}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def connect(cfg: ClusterConfig = ClusterConfig()) -> Iterator["distributed.Client"]:  # noqa: F821
    """Yield a connected client with at least one worker; on exit close it, and the cluster if one was started
    here (a batch cluster's jobs are cancelled)."""
    with contextlib.ExitStack() as stack:
        address = cfg.address
        if address:
            client, where = _connect_address(cfg, address, stack)
        elif cfg.cluster == "local":
            client, where = _start_local(cfg, stack)
        else:
            client, where = _start_jobqueue(cfg, stack)
        _register_malloc_plugin(client)
        _note(cfg, f"cluster: {where}; dashboard: {client.dashboard_link}")
        with client.as_current():
            yield client


# ------------------------------------------------------------------------------------------------ a running scheduler


def _connect_address(cfg: ClusterConfig, address: str, stack: contextlib.ExitStack):
    from distributed import Client

    check_address(address)  # also when it came from DASK_SCHEDULER_ADDRESS
    security = cfg.security()
    _check_tls(address, security)
    if _scheme(address) in ("tcp", "tls", "ws", "wss"):
        _probe_scheduler(address, security, cfg.timeout)
    try:
        client = Client(address, security=security, timeout=cfg.timeout, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise _unreachable(address, exc) from None
    stack.callback(client.close)
    _wait_for_workers(client, 1, cfg.worker_timeout, lambda have: (
        f"no Dask worker joined the scheduler at {address} within {cfg.worker_timeout:g} s; start workers "
        f"(dask worker {address}) or give them longer with --worker-timeout"))
    return client, address


def _unreachable(address: str, exc: BaseException) -> AstrodaskError:
    detail = re.sub(r"^in <[^>]*>: ", "", " ".join(str(exc).split())) or "no answer"  # distributed's comm prefix
    return AstrodaskError(
        f"cannot reach the Dask scheduler at {address} ({type(exc).__name__}: {detail}); "
        "check that it is running and the address, and pass --tls-ca/--tls-cert/--tls-key for tls://"
    )


def _probe_scheduler(address: str, security, timeout: float) -> dict:
    """Connect, do the Dask handshake and ask the peer who it is, all within ``timeout`` seconds.

    ``Client(address, timeout=...)`` bounds only the TCP connect: the Dask handshake that follows has no timeout
    (on purpose, says distributed.comm.core.connect), so an address that accepts connections but is not a Dask
    server, e.g. the dashboard's port, hangs it for ever. This probe owns its comm and closes it whatever happens.
    """
    from distributed.security import Security

    args = (security or Security()).get_connection_args("client")
    state = {"connected": False}

    async def identity():
        from distributed.comm import parse_address
        from distributed.comm.core import FatalCommClosedError
        from distributed.comm.registry import get_backend

        scheme, loc = parse_address(address)
        connector = get_backend(scheme).get_connector()
        deadline = time.monotonic() + timeout
        while True:  # like distributed: retry a refused connection until the deadline (a scheduler starting up)
            try:
                comm = await asyncio.wait_for(connector.connect(loc, deserialize=True, **args),
                                              max(0.01, deadline - time.monotonic()))
                break
            except FatalCommClosedError:  # e.g. a TLS certificate refused: retrying cannot help
                raise
            except OSError:
                if time.monotonic() + 0.2 >= deadline:
                    raise
                await asyncio.sleep(0.2)
        state["connected"] = True
        try:
            local = comm.handshake_info()
            await comm.write(local)
            remote = await comm.read()
            comm.handshake_options = comm.handshake_configuration(local, remote)
            await comm.write({"op": "identity", "reply": True})
            return await comm.read()
        finally:
            comm.abort()

    async def bounded():
        return await asyncio.wait_for(identity(), timeout)

    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="astrodask-probe") as pool:
        try:  # a thread of its own: connect() may be called from code that runs an event loop
            reply = pool.submit(asyncio.run, bounded()).result()
        except TimeoutError as exc:
            if not state["connected"]:
                raise _unreachable(address, TimeoutError(f"no connection within {timeout:g} s")) from None
            raise AstrodaskError(
                f"{address} accepted the connection but did not answer as a Dask scheduler within {timeout:g} s "
                "(is it the dashboard's port, 8787 by default?); pass the scheduler's address (tcp://host:8786 by "
                "default, printed by `dask scheduler`)") from exc
        except OSError as exc:
            raise _unreachable(address, exc) from None
        except Exception as exc:  # noqa: BLE001 - the peer sent something that is not Dask's protocol
            raise AstrodaskError(
                f"{address} is not a Dask scheduler (its answer was not the Dask protocol: {type(exc).__name__}); "
                "pass the scheduler's address (tcp://host:8786 by default, printed by `dask scheduler`)") from None
    kind = reply.get("type") if isinstance(reply, dict) else None
    if kind in ("Worker", "Nanny") or not isinstance(reply, dict):  # a Scheduler subclass has another type name
        raise AstrodaskError(f"{address} is a Dask {kind or 'server'}, not a scheduler; pass the scheduler's address "
                             "(tcp://host:8786 by default, printed by `dask scheduler`)")
    return reply


def _wait_for_workers(client, n: int, timeout: float, message, progress=None) -> None:
    """Wait until ``n`` workers are connected, for at most ``timeout`` seconds; then raise
    ``AstrodaskError(message(workers_now))``. ``progress()`` is called every PROGRESS_EVERY seconds."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        step = min(left, PROGRESS_EVERY) if progress else left
        try:
            client.wait_for_workers(n, timeout=max(step, 0.01))
            return
        except TimeoutError:
            if time.monotonic() >= deadline - 0.05:
                try:
                    have = len(client.scheduler_info(n_workers=-1)["workers"])
                except Exception:  # noqa: BLE001 - the count is only for the message
                    have = 0
                raise AstrodaskError(message(have)) from None
            if progress:
                progress()


# ------------------------------------------------------------------------------------------------ LocalCluster


def _start_local(cfg: ClusterConfig, stack: contextlib.ExitStack):
    from dask.utils import format_bytes
    from distributed import Client, LocalCluster

    n, threads = _local_size(cfg)
    memory = _local_memory(cfg.memory_limit, n)
    # no workers at construction (LocalCluster would wait for them without a bound): scale, then wait, bounded
    cluster = LocalCluster(n_workers=0, threads_per_worker=threads, memory_limit=memory,
                           dashboard_address="127.0.0.1:0", host="127.0.0.1", processes=True,
                           silence_logs=logging.CRITICAL)
    stack.callback(_close_cluster, cluster, "LocalCluster")
    each = memory if isinstance(memory, str) else format_bytes(memory)

    def failed(have: int) -> str:
        return (f"the LocalCluster's workers did not start within {cfg.worker_timeout:g} s ({have} of {n} running, "
                f"{each} each); check --memory-limit and --workers, or allow longer with --worker-timeout")

    try:
        with _sigint_ignored_by_children():
            _scale(cluster, n, cfg.worker_timeout)
    except TimeoutError:
        raise AstrodaskError(failed(0)) from None
    except Exception as exc:  # noqa: BLE001 - a worker process that died while starting
        raise AstrodaskError(f"the LocalCluster's workers failed to start ({_first_line(exc)}); check --memory-limit "
                             f"({each} each) and --workers") from None
    client = Client(cluster, set_as_default=False)
    stack.callback(client.close)
    _wait_for_workers(client, n, cfg.worker_timeout, failed)
    return client, f"LocalCluster ({len(client.scheduler_info(n_workers=-1)['workers'])} workers)"


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


def _scale(cluster, n: int, timeout: float) -> None:
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


def _close_cluster(cluster, what: str) -> None:
    try:
        cluster.close(timeout=60)
    except Exception as exc:  # noqa: BLE001 - never hide the job's own result or error behind a failed close
        print(f"[astrodask] note: could not close the {what} cleanly ({_first_line(exc)})", file=sys.stderr)


def _first_line(exc: BaseException) -> str:
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


# ------------------------------------------------------------------------------------------------ batch queues


def jobqueue_class(name: str):
    """The dask-jobqueue cluster class for ``--cluster name``; a one-line error when dask-jobqueue is missing."""
    previous = signal.getsignal(signal.SIGINT)
    try:
        import dask_jobqueue
    except ImportError:
        raise AstrodaskError(f"--cluster {name} needs dask-jobqueue, which is not installed; "
                             "pip install dask-jobqueue") from None
    finally:
        # dask_jobqueue.runner replaces the SIGINT handler with sys.exit() when imported: Ctrl-C would then end
        # the job with status 0 and skip the "interrupted" message. Put Python's handler back.
        if previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, previous)
    return getattr(dask_jobqueue, JOBQUEUE_CLUSTERS[name])


def jobqueue_kwargs(cfg: ClusterConfig) -> dict:
    """Keyword arguments for the dask-jobqueue cluster: only what the Dask config (``jobqueue.<name>``) leaves
    unset, so a site's profile is used unchanged. ``--memory-limit`` (per worker) overrides the config's
    memory; ``--threads`` gives the cores of a job when the config has none."""
    import dask
    from dask.utils import parse_bytes
    from distributed.deploy.local import nprocesses_nthreads

    conf = dask.config.get(f"jobqueue.{cfg.cluster}", default={}) or {}
    kw: dict = {}
    cores = conf.get("cores")
    if cores is None:
        cores = kw["cores"] = cfg.threads_per_worker
        if conf.get("processes") is None:
            kw["processes"] = 1
    processes = kw.get("processes") or conf.get("processes") or nprocesses_nthreads(cores)[0]
    if cfg.memory_limit != "auto":
        kw["memory"] = f"{parse_bytes(cfg.memory_limit) * processes}B"
    elif conf.get("memory") is None:
        kw["memory"] = f"{parse_bytes(DEFAULT_JOB_MEMORY) * processes}B"
    return kw


def job_script(cfg: ClusterConfig) -> str:
    """The batch script one worker job of ``cfg`` would be submitted with (nothing is started or submitted)."""
    if cfg.cluster == "local":
        raise ConfigError("cluster", "a LocalCluster has no job script", "pass --cluster slurm, pbs, sge, lsf or "
                          "htcondor")
    cls = jobqueue_class(cfg.cluster)
    try:
        job = cls.job_cls("tcp://<scheduler-address>:8786", name="<worker-name>", **jobqueue_kwargs(cfg))
    except (ValueError, TypeError) as exc:
        raise _jobqueue_config_error(cfg, exc) from None
    return job.job_script()


def _jobqueue_config_error(cfg: ClusterConfig, exc: BaseException) -> AstrodaskError:
    problem = " ".join(str(exc).split())[:300] or type(exc).__name__
    return AstrodaskError(f"--cluster {cfg.cluster}: {problem}; set it under jobqueue.{cfg.cluster} in "
                          "~/.config/dask/jobqueue.yaml (or a file in $DASK_CONFIG)")


def _start_jobqueue(cfg: ClusterConfig, stack: contextlib.ExitStack):
    from distributed import Client

    cls = jobqueue_class(cfg.cluster)
    submit = cls.job_cls.submit_command
    if not submit or shutil.which(submit.split()[0]) is None:
        raise AstrodaskError(f"--cluster {cfg.cluster} submits jobs with {submit!r}, which is not on PATH here; run "
                             "astrodask where jobs can be submitted (a login node)")
    _terminate_as_interrupt(stack)  # before any job exists
    try:
        with warnings.catch_warnings():  # the dashboard moves to a free port when 8787 is taken: its link is printed
            warnings.filterwarnings("ignore", message=r"Port \d+ is already in use", category=UserWarning)
            cluster = cls(**jobqueue_kwargs(cfg))
    except (ValueError, TypeError) as exc:
        raise _jobqueue_config_error(cfg, exc) from None
    stack.callback(_close_cluster, cluster, f"{cfg.cluster} cluster (its jobs may still be queued: cancel them)")
    jobs = cfg.jobs or 1
    try:
        _scale(cluster, jobs, cfg.worker_timeout)
    except TimeoutError:
        raise AstrodaskError(f"submitting {jobs} {cfg.cluster} job(s) took longer than {cfg.worker_timeout:g} s "
                             f"({submit} did not return); try again or raise --worker-timeout") from None
    except Exception as exc:  # noqa: BLE001 - the submit command failed: its stderr names the cause
        raise AstrodaskError(f"{submit} failed for --cluster {cfg.cluster} ({_first_line(exc)}); "
                             f"check jobqueue.{cfg.cluster} (queue, account, walltime, memory) in the Dask "
                             "config") from None
    if cfg.adapt_max:
        cluster.adapt(minimum_jobs=jobs, maximum_jobs=cfg.adapt_max)
    ids = _job_ids(cluster)
    _note(cfg, f"{cfg.cluster}: submitted {len(ids)} job(s) {', '.join(ids)}; waiting up to "
               f"{cfg.worker_timeout:g} s for the first worker")
    client = Client(cluster, set_as_default=False)
    stack.callback(client.close)

    def states() -> str:
        return _job_states(cfg.cluster, _job_ids(cluster)) or ", ".join(_job_ids(cluster))

    _wait_for_workers(
        client, 1, cfg.worker_timeout,
        lambda have: (f"no worker joined from the {cfg.cluster} job(s) {states()} within {cfg.worker_timeout:g} s "
                      "(still queued, or failed: see the jobs' output files); give them longer with "
                      f"--worker-timeout, or check jobqueue.{cfg.cluster} in the Dask config"),
        progress=lambda: _note(cfg, f"{cfg.cluster}: still waiting for a worker; jobs {states()}"))
    scale = f"adaptive {jobs}-{cfg.adapt_max} jobs" if cfg.adapt_max else f"{jobs} job(s)"
    return client, f"{cfg.cluster} ({scale}: {', '.join(_job_ids(cluster))})"


def _job_ids(cluster) -> list[str]:
    return [str(job.job_id) for job in list(cluster.workers.values()) if getattr(job, "job_id", None)]


def _job_states(kind: str, ids: list[str]) -> str:
    """``"12 RUNNING, 13 PENDING (Resources)"`` from squeue for SLURM; "" elsewhere or when squeue fails."""
    if kind != "slurm" or not ids or shutil.which("squeue") is None:
        return ""
    try:
        out = subprocess.run(["squeue", "-h", "-j", ",".join(ids), "-o", "%i %T %r"], capture_output=True,
                             text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    parts = []
    for line in out.splitlines():
        if len(line.split()) < 2:
            continue
        job, state, *reason = line.split(None, 2)
        why = reason[0] if reason and reason[0] not in ("None", "(null)") else ""
        parts.append(f"{job} {state}" + (f" ({why})" if why else ""))
    return ", ".join(parts)


def _terminate_as_interrupt(stack: contextlib.ExitStack) -> None:
    """While batch jobs run for us, SIGTERM (scancel of an enclosing job, kill, a CI timeout) unwinds like Ctrl-C,
    so the jobs are cancelled instead of left running until their walltime."""
    if threading.current_thread() is not threading.main_thread():
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    stack.callback(signal.signal, signal.SIGTERM, previous)


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
