"""Batch-queue clusters (SLURM, PBS, SGE, LSF, HTCondor) through dask-jobqueue, sized by the site's Dask config."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import threading
import warnings

from ..errors import AstrodaskError, ConfigError, terminate_as_interrupt
from .config import DEFAULT_JOB_MEMORY, JOBQUEUE_CLUSTERS, MIN_WORKER_MEMORY, ClusterConfig, note
from .workers import close_cluster, first_line, scale, wait_for_workers


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
    else:
        _check_job_memory(cfg, conf["memory"], processes)
    return kw


def _check_job_memory(cfg: ClusterConfig, memory, processes: int) -> None:
    """Refuse a jobqueue ``memory`` that gives each worker less than MIN_WORKER_MEMORY: its workers would pause or
    be restarted in a loop (an unreadable value is left to dask-jobqueue's own error)."""
    from dask.utils import parse_bytes

    try:
        per = parse_bytes(memory) // max(1, int(processes))
    except (ValueError, TypeError):
        return
    if per < MIN_WORKER_MEMORY:
        least = MIN_WORKER_MEMORY >> 20
        raise ConfigError(f"jobqueue.{cfg.cluster}.memory",
                          f"{memory} per job is {per >> 20} MiB per worker (processes {processes}), below the "
                          f"{least} MiB a worker needs",
                          f"set memory: {least * processes}MiB or more under jobqueue.{cfg.cluster} in the Dask "
                          f"config, or pass --memory-limit {least}MiB (per worker)")


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


def start_jobqueue(cfg: ClusterConfig, stack: contextlib.ExitStack, quiet: bool = False):
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
    stack.callback(close_cluster, cluster, f"{cfg.cluster} cluster (its jobs may still be queued: cancel them)")
    jobs = cfg.jobs or 1
    try:
        scale(cluster, jobs, cfg.worker_timeout)
    except TimeoutError:
        raise AstrodaskError(f"submitting {jobs} {cfg.cluster} job(s) took longer than {cfg.worker_timeout:g} s "
                             f"({submit} did not return); try again or raise --worker-timeout") from None
    except Exception as exc:  # noqa: BLE001 - the submit command failed: its stderr names the cause
        raise AstrodaskError(f"{submit} failed for --cluster {cfg.cluster} ({first_line(exc)}); "
                             f"check jobqueue.{cfg.cluster} (queue, account, walltime, memory) in the Dask "
                             "config") from None
    if cfg.adapt_max:
        cluster.adapt(minimum_jobs=jobs, maximum_jobs=cfg.adapt_max)
    ids = _job_ids(cluster)
    note(quiet, f"{cfg.cluster}: submitted {len(ids)} job(s) {', '.join(ids)}; waiting up to "
               f"{cfg.worker_timeout:g} s for the first worker")
    client = Client(cluster, set_as_default=False)
    stack.callback(client.close)

    def states() -> str:
        return _job_states(cfg.cluster, _job_ids(cluster)) or ", ".join(_job_ids(cluster))

    wait_for_workers(
        client, 1, cfg.worker_timeout,
        lambda have: (f"no worker joined from the {cfg.cluster} job(s) {states()} within {cfg.worker_timeout:g} s "
                      "(still queued, or failed: see the jobs' output files); give them longer with "
                      f"--worker-timeout, or check jobqueue.{cfg.cluster} in the Dask config"),
        progress=lambda: note(quiet, f"{cfg.cluster}: still waiting for a worker; jobs {states()}"))
    sizing = f"adaptive {jobs}-{cfg.adapt_max} jobs" if cfg.adapt_max else f"{jobs} job(s)"
    return client, f"{cfg.cluster} ({sizing}: {', '.join(_job_ids(cluster))})"


def _job_ids(cluster) -> list[str]:
    return [str(job.job_id) for job in list(cluster.workers.values()) if getattr(job, "job_id", None)]


def _job_states(kind: str, ids: list[str]) -> str:
    """``"12 RUNNING, 13 PENDING (Resources)"`` from squeue for SLURM; "" elsewhere or when squeue fails."""
    if kind != "slurm" or not ids or shutil.which("squeue") is None:
        return ""
    try:
        out = subprocess.run(["squeue", "-h", "-j", ",".join(ids), "-o", "%i %T %r"], capture_output=True, check=False,
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
    so the jobs are cancelled instead of left running until their walltime (also outside the command line)."""
    stack.enter_context(terminate_as_interrupt())
