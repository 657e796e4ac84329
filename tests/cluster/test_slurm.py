"""astrodask on a real SLURM: worker jobs through dask-jobqueue (``--cluster slurm``), the whole job inside one
allocation (``sbatch jobs/classify_sdss.sbatch``), and the job script generated from a jobqueue.yaml.

The SLURM tests need the one-node SLURM of ``.ci/slurm-setup.sh`` (started here when we are root; CI runs it
first). They skip, with the reason, only where SLURM is absent and cannot be started (not root), never under
CI=true. The job-script test needs no SLURM and runs everywhere.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from support import preloads
from support.slurm_util import cancel, require_slurm, squeue, wait_until_gone

from astrodask.cluster import MIN_WORKER_MEMORY

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "sdss_sample.csv"
SBATCH_SCRIPT = ROOT / "jobs" / "classify_sdss.sbatch"
CLI = [sys.executable, "-m", "astrodask.cli"]
GUARD = 300  # subprocess timeouts: guards against a hang, never measured durations
EPOCHS = "5"
MIN_MIB = MIN_WORKER_MEMORY >> 20


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("ASTRODASK_DEBUG", "DASK_SCHEDULER_ADDRESS", "DASK_CONFIG") and not k.startswith("SLURM_")}
    env.update(extra)
    return env


def _job_name() -> str:
    return f"astrodask-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def slurm():
    require_slurm()


@pytest.fixture
def jobqueue_config(tmp_path):
    """A DASK_CONFIG directory whose jobqueue.yaml only names the worker jobs (to find them in squeue) and keeps
    the in-process scheduler on 127.0.0.1; cores, memory and python come from astrodask's defaults."""
    name = _job_name()
    d = tmp_path / "dask-config"
    d.mkdir()
    (d / "jobqueue.yaml").write_text(textwrap.dedent(f"""\
        jobqueue:
          slurm:
            name: {name}
            walltime: "00:15:00"
            death-timeout: 30
            scheduler-options:
              host: 127.0.0.1
              dashboard_address: "127.0.0.1:0"
        """))
    try:
        yield d, name
    finally:
        cancel(name=name)  # whatever happened, no test job is left to its walltime


# ------------------------------------------------------------------------------------------------ --cluster slurm


@pytest.mark.cluster
def test_run_with_slurm_worker_jobs(slurm, jobqueue_config, tmp_path):
    """`astrodask run --cluster slurm --jobs 2`: two worker jobs are submitted, the job completes, and no job is
    left in the queue afterwards."""
    config, name = jobqueue_config
    out = tmp_path / "out"
    r = subprocess.run([*CLI, "run", str(SAMPLE), "--out", str(out), "--epochs", EPOCHS, "--no-report", "--cluster",
                        "slurm", "--jobs", "2"], capture_output=True, text=True, cwd=tmp_path, timeout=GUARD,
                       env=_env(DASK_CONFIG=str(config)), stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (out / "predictions" / "_SUCCESS").is_file()
    submitted = re.search(r"slurm: submitted 2 job\(s\) (\d+), (\d+);", r.stderr)
    assert submitted, r.stderr[-3000:]
    ids = list(submitted.groups())
    assert re.search(r"cluster: slurm \(2 job\(s\): \d+, \d+\); dashboard: http://127\.0\.0\.1:\d+", r.stderr)
    # each worker ran as a SLURM job: SLURM wrote its output file (dask-jobqueue's default slurm-<id>.out), and the
    # worker in it registered with our scheduler
    for job in ids:
        log = (tmp_path / f"slurm-{job}.out").read_text(errors="replace")
        assert "Registered to" in log and "tcp://127.0.0.1:" in log, log[-2000:]
    assert wait_until_gone(ids) == [], "worker jobs left in the queue after the run"


@pytest.mark.cluster
def test_connect_workers_are_slurm_jobs(slurm, jobqueue_config, tmp_path, monkeypatch):
    """From Python: connect() waits for the worker jobs; every worker has the SLURM_JOB_ID of a job astrodask
    submitted (seen from inside the worker), and leaving the block cancels the jobs."""
    import dask

    from astrodask.cluster import ClusterConfig, connect

    config, name = jobqueue_config
    monkeypatch.chdir(tmp_path)  # sbatch runs the jobs in the submitting directory
    with dask.config.set({"jobqueue.slurm.name": name, "jobqueue.slurm.log-directory": str(tmp_path),
                          "jobqueue.slurm.scheduler-options": {"host": "127.0.0.1", "dashboard_address": ":0"}}):
        with connect(ClusterConfig(cluster="slurm", jobs=2), quiet=True) as client:
            queued = {job for job, _, _ in squeue(name=name)}
            client.wait_for_workers(2, timeout=120)
            seen = client.run(lambda: os.environ.get("SLURM_JOB_ID"))
            python = set(client.run(lambda: sys.executable).values())
    assert len(seen) == 2 and all(seen.values()), seen
    assert set(seen.values()) == queued, (seen, queued)
    assert python == {sys.executable}
    assert wait_until_gone(sorted(queued)) == []


@pytest.mark.cluster
def test_submission_error_is_one_line_and_leaves_no_job(slurm, jobqueue_config, tmp_path):
    """A jobqueue config that SLURM refuses (no such partition): sbatch's own error, in one line."""
    config, name = jobqueue_config
    with open(config / "jobqueue.yaml", "a") as f:
        f.write("    queue: no-such-partition\n")
    r = subprocess.run([*CLI, "convert", str(SAMPLE), str(tmp_path / "ds"), "--cluster", "slurm", "-q"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=GUARD,
                       env=_env(DASK_CONFIG=str(config)), stdin=subprocess.DEVNULL)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 1 and len(lines) == 1, r.stderr
    assert lines[0].startswith("astrodask: error: sbatch failed") and "partition" in lines[0], lines[0]
    assert squeue(name=name) == []


@pytest.mark.cluster
def test_jobs_that_start_no_worker_in_time_are_cancelled(slurm, jobqueue_config, tmp_path):
    """Worker jobs that do not bring up a worker within --worker-timeout: one line with the job ids and their
    state, and the jobs are cancelled (not left to run until their walltime)."""
    config, name = jobqueue_config
    with open(config / "jobqueue.yaml", "a") as f:
        f.write("    job-script-prologue: ['sleep 300']\n")  # the worker would start only after 5 minutes
    r = subprocess.run([*CLI, "convert", str(SAMPLE), str(tmp_path / "ds"), "--cluster", "slurm", "--jobs", "2",
                        "--worker-timeout", "5", "-q"], capture_output=True, text=True, cwd=tmp_path,
                       timeout=GUARD, env=_env(DASK_CONFIG=str(config)), stdin=subprocess.DEVNULL)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 1 and len(lines) == 1, r.stderr
    assert re.match(r"astrodask: error: no worker joined from the slurm job\(s\) \d+ \w+, \d+ \w+ within 5 s",
                    lines[0]), lines[0]
    assert wait_until_gone(name=name) == [], "jobs left in the queue"


@pytest.mark.cluster
def test_jobqueue_memory_under_the_floor_is_refused_before_any_job(slurm, jobqueue_config, tmp_path):
    """jobqueue memory too small for a worker (its workers restarted in a loop): refused in one line, up front,
    naming the per-worker memory and both fixes; nothing is submitted."""
    config, name = jobqueue_config
    with open(config / "jobqueue.yaml", "a") as f:
        f.write("    memory: 100MiB\n")
    r = subprocess.run([*CLI, "convert", str(SAMPLE), str(tmp_path / "ds"), "--cluster", "slurm", "-q"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=GUARD,
                       env=_env(DASK_CONFIG=str(config)), stdin=subprocess.DEVNULL)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 1 and len(lines) == 1, r.stderr
    assert lines[0] == (f"astrodask: error: jobqueue.slurm.memory: 100MiB per job is 100 MiB per worker (processes 1), "
                        f"below the {MIN_MIB} MiB a worker needs; set memory: {MIN_MIB}MiB or more under jobqueue.slurm "
                        f"in the Dask config, or pass --memory-limit {MIN_MIB}MiB (per worker)"), lines[0]
    assert squeue(name=name) == []


@pytest.mark.cluster
@pytest.mark.slow
def test_worker_jobs_restarting_in_a_loop_end_the_job_at_the_worker_timeout(slurm, jobqueue_config, tmp_path):
    """A worker job whose worker its nanny restarts over and over for memory (joined paused, then over 95 % of its
    limit: no task ever dies on it, so distributed never gives up): one line once --worker-timeout has passed with
    no task finished, and the job is cancelled."""
    config, name = jobqueue_config
    preload = preloads.restarting(tmp_path / "restart_preload.py")
    with open(config / "jobqueue.yaml", "a") as f:
        f.write(f"    memory: 1GiB\n    worker-extra-args: ['--preload', '{preload}']\n")
    r = subprocess.run([*CLI, "convert", str(SAMPLE), str(tmp_path / "ds"), "--cluster", "slurm", "--worker-timeout",
                        "30", "-q"], capture_output=True, text=True, cwd=tmp_path, timeout=GUARD,
                       env=_env(DASK_CONFIG=str(config)), stdin=subprocess.DEVNULL)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 1 and len(lines) == 1, r.stderr
    assert lines[0].startswith("astrodask: error: convert: the Dask workers keep restarting ("), lines[0]
    assert "without a task finishing" in lines[0] and lines[0].endswith("--resume"), lines[0]
    logs = "".join(p.read_text(errors="replace") for p in tmp_path.glob("slurm-*.out"))
    assert logs.count("Restarting") >= 2, logs[-3000:]  # the nanny's "exceeded 95% memory budget. Restarting..."
    assert wait_until_gone(name=name) == [], "jobs left in the queue"
    assert not (tmp_path / "ds").exists()


# ------------------------------------------------------------------------------------------------ one allocation


@pytest.mark.cluster
def test_sbatch_script_runs_the_whole_job_in_one_allocation(slurm, tmp_path):
    """`sbatch --wait jobs/classify_sdss.sbatch SOURCES --out OUT`: scheduler, workers (one per task) and client
    inside one allocation; exit status 0 and the outputs."""
    out = tmp_path / "out"
    logs = tmp_path / "job-logs"
    name = _job_name()
    env = _env(ASTRODASK_PYTHON=sys.executable, ASTRODASK_JOB_DIR=str(logs), ASTRODASK_SCHEDULER_HOST="127.0.0.1")
    try:
        r = subprocess.run(["sbatch", "--wait", f"--job-name={name}", str(SBATCH_SCRIPT), str(SAMPLE),
                            "--out", str(out), "--epochs", EPOCHS, "--no-report", "-q"], capture_output=True, text=True,
                           cwd=tmp_path, env=env, timeout=GUARD, stdin=subprocess.DEVNULL)
    finally:
        cancel(name=name)
    job = re.search(r"Submitted batch job (\d+)", r.stdout)
    assert job, r.stdout + r.stderr
    output = tmp_path / f"astrodask-{job.group(1)}.out"
    text = output.read_text(errors="replace") if output.exists() else "(no job output)"
    assert r.returncode == 0, f"{r.stderr}\n{text[-3000:]}"
    assert (out / "predictions" / "_SUCCESS").is_file(), text[-3000:]
    assert (out / "evaluation").is_dir()
    assert f"astrodask job {job.group(1)}: scheduler tcp://127.0.0.1:" in text and "2 worker(s)" in text, text
    assert "holdout:" in text, text
    # the two workers were tasks of the job's step (srun), and both joined the scheduler
    workers = (logs / "workers.log").read_text(errors="replace")
    assert workers.count("Registered to:") == 2, workers[-3000:]
    assert wait_until_gone([job.group(1)]) == []


# ------------------------------------------------------------------------------------------------ job script


def test_job_script_follows_the_jobqueue_yaml_given_by_dask_config(tmp_path):
    """The worker job script is generated from jobqueue.slurm in the Dask config (a site's profile, here through
    DASK_CONFIG); astrodask fills in only what it leaves unset. Needs no SLURM."""
    if os.environ.get("CI", "").lower() != "true":
        pytest.importorskip("dask_jobqueue", reason="dask-jobqueue is not installed (pip install -e .[hpc])")
    site = tmp_path / "site"
    site.mkdir()
    (site / "jobqueue.yaml").write_text(textwrap.dedent("""\
        jobqueue:
          slurm:
            name: sdss-worker
            cores: 8
            memory: 32GiB
            processes: 2
            queue: astro
            account: sdss-dr17
            walltime: "04:00:00"
            python: /opt/astro/venv/bin/python
            local-directory: $TMPDIR
            job-extra-directives: ["--constraint=haswell", "--qos=long"]
            job-script-prologue: ["module load python/3.11"]
          pbs:
            cores: 4
            memory: 16GiB
            queue: workq
            walltime: "01:00:00"
        """))
    code = textwrap.dedent("""\
        import json
        from astrodask.cluster import ClusterConfig, job_script
        print(json.dumps({
            "site": job_script(ClusterConfig(cluster="slurm")),
            "memory_override": job_script(ClusterConfig(cluster="slurm", memory_limit="6GiB")),
            "pbs": job_script(ClusterConfig(cluster="pbs")),
        }))
        """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env=_env(DASK_CONFIG=str(site)))
    assert r.returncode == 0, r.stderr
    scripts = json.loads(r.stdout)
    site_script = scripts["site"]
    for line in ("#SBATCH -J sdss-worker", "#SBATCH -p astro", "#SBATCH -A sdss-dr17", "#SBATCH -n 1",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --mem=32G", "#SBATCH -t 04:00:00",
                 "#SBATCH --constraint=haswell", "#SBATCH --qos=long", "module load python/3.11"):
        assert line in site_script.splitlines(), f"{line!r} missing:\n{site_script}"
    worker = [ln for ln in site_script.splitlines() if "distributed.cli.dask_worker" in ln]
    assert len(worker) == 1, site_script
    assert worker[0].startswith("/opt/astro/venv/bin/python -m distributed.cli.dask_worker "), worker[0]
    assert "--nthreads 4" in worker[0] and "--nworkers 2" in worker[0] and "--memory-limit 16.00GiB" in worker[0]
    assert "--local-directory $TMPDIR" in worker[0]
    # --memory-limit is per worker: the job asks for it times the config's processes
    assert "#SBATCH --mem=12G" in scripts["memory_override"].splitlines(), scripts["memory_override"]
    pbs = scripts["pbs"].splitlines()
    assert "#PBS -q workq" in pbs and "#PBS -l walltime=01:00:00" in pbs, scripts["pbs"]


def test_job_script_without_a_site_profile_runs_this_python(tmp_path):
    """No jobqueue config at all (Dask's own defaults have no cores or memory): one worker with --threads
    threads and 2 GiB, started with the Python that runs astrodask, so the job imports the same astrodask."""
    if os.environ.get("CI", "").lower() != "true":
        pytest.importorskip("dask_jobqueue", reason="dask-jobqueue is not installed (pip install -e .[hpc])")
    empty = tmp_path / "empty"
    empty.mkdir()
    code = ("from astrodask.cluster import ClusterConfig, job_script\n"
            "print(job_script(ClusterConfig(cluster='slurm', threads_per_worker=2)))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env=_env(DASK_CONFIG=str(empty), HOME=str(tmp_path)))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "#SBATCH --cpus-per-task=2" in lines and "#SBATCH --mem=2G" in lines, r.stdout
    worker = next(ln for ln in lines if "distributed.cli.dask_worker" in ln)
    assert worker.startswith(f"{sys.executable} -m distributed.cli.dask_worker"), worker
    assert "--nthreads 2" in worker and "--memory-limit 2.00GiB" in worker, worker
    assert shutil.which("bash")  # the generated script's shebang
    assert lines[0] == "#!/usr/bin/env bash"


def test_job_script_refuses_a_jobqueue_memory_under_the_floor(tmp_path):
    """The per-worker share of jobqueue memory is checked for job_script as for a run; --memory-limit (per
    worker) overrides it. Needs no SLURM; in a subprocess with its own DASK_CONFIG, like the tests above."""
    if os.environ.get("CI", "").lower() != "true":
        pytest.importorskip("dask_jobqueue", reason="dask-jobqueue is not installed (pip install -e .[hpc])")
    site = tmp_path / "site"
    site.mkdir()
    (site / "jobqueue.yaml").write_text("jobqueue:\n  slurm:\n    cores: 2\n    memory: 1GiB\n    processes: 2\n")
    code = textwrap.dedent(f"""\
        import json
        from astrodask.cluster import ClusterConfig, job_script
        from astrodask.errors import ConfigError
        try:
            job_script(ClusterConfig(cluster="slurm"))
            refused = None
        except ConfigError as exc:
            refused = str(exc)
        script = job_script(ClusterConfig(cluster="slurm", memory_limit="{MIN_MIB}MiB"))
        print(json.dumps({{"refused": refused, "script": script}}))
        """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env=_env(DASK_CONFIG=str(site)))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["refused"] is not None and out["refused"].startswith(
        f"jobqueue.slurm.memory: 1GiB per job is 512 MiB per worker (processes 2), below the {MIN_MIB} MiB a worker "
        f"needs; set memory: {2 * MIN_MIB}MiB"), out["refused"]
    assert f"--memory-limit {MIN_MIB}.00MiB --nworkers 2" in out["script"], out["script"]
