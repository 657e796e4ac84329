"""Every wait for a cluster is bounded and ends in one line: a scheduler with no workers, an address that is not a
scheduler (a dashboard, any HTTP server), a dashboard URL given as the address, workers without enough memory.

Real processes: a ``dask scheduler`` with no workers and an ``http.server`` on 127.0.0.1; the CLI runs as a
subprocess, as a user runs it. Also: ClusterConfig's validation of the batch-cluster options, the CLI mirroring
ClusterConfig, and a missing dask-jobqueue.
"""

from __future__ import annotations

import dataclasses
import functools
import http.server
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from astrodask.cluster import MIN_WORKER_MEMORY, ClusterConfig
from astrodask.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "sdss_sample.csv"
CLI = [sys.executable, "-m", "astrodask.cli"]
GUARD = 120  # subprocess timeout: only a guard against a hang, never a measured duration
_PROGRESS = re.compile(r"\r|\d+%\|")


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("ASTRODASK_DEBUG", "DASK_SCHEDULER_ADDRESS")}
    env.update(extra)
    return env


def run_cli(*args, env=None, cwd=None) -> subprocess.CompletedProcess:
    """The CLI as a subprocess; a hang fails the test at GUARD seconds instead of blocking the suite."""
    try:
        return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, env=env or _env(), cwd=cwd,
                              timeout=GUARD, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"astrodask {' '.join(map(str, args))} still running after {GUARD} s (hang); stderr:\n"
                    f"{(exc.stderr or b'')[-2000:]!r}")


def one_line_error(r: subprocess.CompletedProcess) -> str:
    """Exit 1 and exactly one non-empty stderr line, ``astrodask: error: ...`` (no traceback, no late
    ``Client.__del__`` or asyncio noise); return the line."""
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and not _PROGRESS.search(ln)]
    assert len(lines) == 1, f"expected one error line, got {len(lines)}:\n{r.stderr}"
    assert lines[0].startswith("astrodask: error: "), lines[0]
    assert r.returncode == 1, (r.returncode, r.stderr)
    return lines[0]


def _stop(proc: subprocess.Popen) -> None:
    """Terminate a process we started (and its process group), then kill it."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None:
            break
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


# ------------------------------------------------------------------------------------------------ real servers


@dataclasses.dataclass
class Scheduler:
    address: str
    dashboard_port: int


@pytest.fixture(scope="module")
def lonely_scheduler(tmp_path_factory):
    """A real ``dask scheduler`` on 127.0.0.1 that no worker ever joins."""
    d = tmp_path_factory.mktemp("lonely_scheduler")
    info = d / "scheduler.json"
    log = open(d / "scheduler.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                             "--port", "0", "--dashboard-address", "127.0.0.1:0", "--scheduler-file", str(info)],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=d,
                            start_new_session=True)
    log.close()
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                data = json.loads(info.read_text())
                yield Scheduler(data["address"], int(data["services"]["dashboard"]))
                break
            except (OSError, ValueError, KeyError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"dask scheduler did not start:\n{(d / 'scheduler.log').read_text()[-2000:]}")
                time.sleep(0.1)
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def http_server(tmp_path_factory):
    """A real ``http.server`` on 127.0.0.1 (a random free port); yields the port."""
    d = tmp_path_factory.mktemp("www")
    (d / "index.html").write_text("<html>not a scheduler</html>")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(d)))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


# ------------------------------------------------------------------------------------------------ bounded waits


@pytest.mark.cluster
def test_scheduler_without_workers_gives_up_after_worker_timeout(lonely_scheduler, tmp_path):
    """(a) A scheduler that no worker joins: one line after --worker-timeout, not a job waiting for ever."""
    dest = tmp_path / "ds"
    r = run_cli("convert", SAMPLE, dest, "--scheduler", lonely_scheduler.address, "--worker-timeout", "3")
    line = one_line_error(r)
    assert "no Dask worker joined" in line and lonely_scheduler.address in line, line
    assert "--worker-timeout" in line, line
    assert not dest.exists()


@pytest.mark.cluster
@pytest.mark.parametrize("server", ["dask-dashboard", "http.server"])
def test_address_that_is_not_a_scheduler_is_refused_within_timeout(lonely_scheduler, http_server, tmp_path,
                                                                   server):
    """(c) tcp:// to an HTTP server (the dashboard's port, or any web server) accepts the connection and then never
    answers the Dask handshake, which distributed does not bound: refused after --timeout, in one line."""
    port = lonely_scheduler.dashboard_port if server == "dask-dashboard" else http_server
    address = f"tcp://127.0.0.1:{port}"
    r = run_cli("convert", SAMPLE, tmp_path / "ds", "--scheduler", address, "--timeout", "3")
    line = one_line_error(r)
    assert address in line and "did not answer as a Dask scheduler" in line, line
    assert "dashboard" in line and "tcp://host:8786" in line, line
    assert not (tmp_path / "ds").exists()


@pytest.mark.cluster
@pytest.mark.parametrize("how", ["option", "environment"])
@pytest.mark.parametrize("scheme", ["http", "https"])
def test_dashboard_url_is_refused_up_front(lonely_scheduler, tmp_path, scheme, how):
    """(d) An http(s):// address (the dashboard link, copied from the browser) is refused at once: it looks like
    the dashboard URL, pass the scheduler's tcp:// address. Before: a 60 s stall and a Client.__del__ traceback."""
    url = f"{scheme}://127.0.0.1:{lonely_scheduler.dashboard_port}/status"
    if how == "option":
        r = run_cli("convert", SAMPLE, tmp_path / "ds", "--scheduler", url)
    else:
        r = run_cli("convert", SAMPLE, tmp_path / "ds", env=_env(DASK_SCHEDULER_ADDRESS=url))
    line = one_line_error(r)
    assert url in line and "dashboard" in line and "tcp://" in line, line


@pytest.mark.cluster
def test_memory_limit_too_small_for_a_worker_is_refused(tmp_path):
    """(b) --memory-limit 1MiB: the LocalCluster's workers cannot run (the job hung); refused naming the field."""
    r = run_cli("convert", SAMPLE, tmp_path / "ds", "--memory-limit", "1MiB", "--workers", "1")
    line = one_line_error(r)
    assert "memory_limit" in line and "1MiB" in line and f"{MIN_WORKER_MEMORY >> 20}MiB" in line, line
    assert not (tmp_path / "ds").exists()


@pytest.mark.cluster
def test_unknown_address_scheme_is_refused(tmp_path):
    r = run_cli("convert", SAMPLE, tmp_path / "ds", "--scheduler", "ftp://127.0.0.1:8786")
    line = one_line_error(r)
    assert "scheme 'ftp'" in line and "tcp://" in line, line


@pytest.mark.cluster
def test_workers_that_cannot_start_are_reported_in_one_line(tmp_path):
    """A LocalCluster whose worker processes die while starting (here: a preload module that does not exist) is
    one user error naming the sizing options, not a RuntimeError traceback."""
    r = run_cli("convert", SAMPLE, tmp_path / "ds", "--workers", "1",
                env=_env(DASK_DISTRIBUTED__WORKER__PRELOAD='["astrodask_test_no_such_module"]'))
    line = one_line_error(r)
    assert "LocalCluster's workers" in line and "--memory-limit" in line, line
    assert not (tmp_path / "ds").exists()


# ------------------------------------------------------------------------------------------------ configuration


@pytest.mark.parametrize("kwargs, field", [
    ({"cluster": "kubernetes"}, "cluster"),
    ({"cluster": "slurm", "scheduler": "tcp://127.0.0.1:8786"}, "cluster"),
    ({"jobs": 2}, "jobs"),
    ({"adapt_max": 4}, "adapt_max"),
    ({"cluster": "slurm", "jobs": 0}, "jobs"),
    ({"cluster": "slurm", "adapt_max": 0}, "adapt_max"),
    ({"cluster": "slurm", "jobs": 3, "adapt_max": 2}, "adapt_max"),
    ({"cluster": "slurm", "n_workers": 2}, "n_workers"),
    ({"cluster": "pbs", "tls_ca": __file__, "tls_cert": __file__, "tls_key": __file__}, "tls"),
    ({"memory_limit": "1MiB"}, "memory_limit"),
    ({"memory_limit": "256MiB"}, "memory_limit"),
    ({"memory_limit": "639MiB"}, "memory_limit"),
    ({"worker_timeout": 0}, "worker_timeout"),
    ({"timeout": -1}, "timeout"),
    ({"scheduler": "http://127.0.0.1:8787/status"}, "scheduler"),
    ({"scheduler": "https://dask.example.org/"}, "scheduler"),
    ({"scheduler": "gopher://127.0.0.1:70"}, "scheduler"),
])
def test_cluster_config_refuses_with_the_field_named(kwargs, field):
    with pytest.raises(ConfigError) as info:
        ClusterConfig(**kwargs)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ") and "; " in str(info.value)  # the problem; the fix


@pytest.mark.parametrize("kwargs", [
    {},
    {"cluster": "slurm", "jobs": 2},
    {"cluster": "slurm", "jobs": 2, "adapt_max": 8},
    {"cluster": "htcondor", "adapt_max": 3},
    {"scheduler": "tls://10.0.0.5:8786"},
    {"scheduler": "127.0.0.1:8786"},
    {"memory_limit": "640MiB"},
])
def test_cluster_config_accepts(kwargs):
    ClusterConfig(**kwargs)


def test_explicit_batch_cluster_ignores_a_scheduler_address_in_the_environment(monkeypatch):
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "tcp://10.0.0.5:8786")
    assert ClusterConfig().address == "tcp://10.0.0.5:8786"
    assert ClusterConfig(cluster="slurm").address is None


@pytest.mark.parametrize("args, field", [
    (["--cluster", "slurm", "--scheduler", "tcp://127.0.0.1:8786"], "cluster"),
    (["--jobs", "2"], "jobs"),
    (["--cluster", "slurm", "--jobs", "2", "--adapt-max", "1"], "adapt_max"),
    (["--cluster", "slurm", "--workers", "2"], "n_workers"),
    (["--worker-timeout", "0"], "worker_timeout"),
    (["--cluster", "yarn"], "--cluster"),
], ids=lambda v: "_".join(v) if isinstance(v, list) else v)
def test_bad_cluster_options_give_one_line(tmp_path, args, field):
    r = run_cli("convert", SAMPLE, tmp_path / "ds", *args)
    line = one_line_error(r)
    assert field in line, line
    assert not (tmp_path / "ds").exists()


def test_missing_dask_jobqueue_names_the_install_command(tmp_path):
    """Without dask-jobqueue, --cluster slurm is one line naming `pip install dask-jobqueue`."""
    shadow = tmp_path / "shadow" / "dask_jobqueue"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'dask_jobqueue'\", "
                                        "name='dask_jobqueue')\n")
    path = os.pathsep.join([str(tmp_path / "shadow"), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    r = run_cli("convert", SAMPLE, tmp_path / "ds", "--cluster", "slurm", "--jobs", "2", env=_env(PYTHONPATH=path))
    line = one_line_error(r)
    assert "dask-jobqueue" in line and "pip install dask-jobqueue" in line, line
    assert not (tmp_path / "ds").exists()


def test_batch_cluster_without_its_submit_command_is_one_line(tmp_path):
    """--cluster pbs where qsub is not on PATH (not a login node): one line naming the command, nothing started."""
    pytest.importorskip("dask_jobqueue")
    r = run_cli("convert", SAMPLE, tmp_path / "ds", "--cluster", "pbs", "--jobs", "2",
                env=_env(PATH=os.path.dirname(sys.executable)))
    line = one_line_error(r)
    assert "'qsub'" in line and "not on PATH" in line, line
    assert not (tmp_path / "ds").exists()


def test_importing_dask_jobqueue_keeps_ctrl_c_an_interrupt():
    """dask_jobqueue.runner sets SIGINT to sys.exit() at import (a Ctrl-C would end the job with status 0 and no
    cleanup message): jobqueue_class puts the previous handler back."""
    pytest.importorskip("dask_jobqueue")
    code = ("import signal\n"
            "from astrodask.cluster import jobqueue_class\n"
            "before = signal.getsignal(signal.SIGINT)\n"
            "jobqueue_class('slurm')\n"
            "print(signal.getsignal(signal.SIGINT) is before, before is signal.default_int_handler)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=GUARD)
    assert r.stdout.split() == ["True", "True"], r.stdout + r.stderr


@pytest.mark.parametrize("text, cause", [
    ("jobqueue:\n  slurm:\n    cores: 2\n    memory: [2GiB\n",
     "while parsing a flow sequence (line 4, column 13): expected ',' or ']', but got '<stream end>' (line 5, column 1)"),
    ("jobqueue:\n  slurm:\n\tcores: 2\n",
     "while scanning for the next token: found character '\\t' that cannot start any token (line 3, column 1)"),
])
def test_a_malformed_dask_config_file_is_one_line_with_its_whole_cause(tmp_path, text, cause):
    """I4: Dask reads every YAML file of its config directories at import: the CLI names the file and YAML's full
    cause (what and where), not only the first line of dask's message."""
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "jobqueue.yaml").write_text(text)
    r = subprocess.run([sys.executable, "-m", "astrodask.cli", "convert", "in.csv", str(tmp_path / "ds"), "-q"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=120,
                       env={**os.environ, "DASK_CONFIG": str(conf)})
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 1 and len(lines) == 1, r.stderr
    assert lines[0] == (f"astrodask: error: the Dask config file {conf / 'jobqueue.yaml'} is not valid ({cause}); fix "
                        "it or move it away (Dask reads every YAML file in $DASK_CONFIG, ~/.config/dask and "
                        "/etc/dask)"), lines[0]


def test_worker_records_do_not_come_from_the_clients_cached_identity(monkeypatch):
    """``Client.scheduler_info`` returns the client's cached identity, which the client's 2-second refresh (no
    workers in it) can overwrite between fetch and return: training then planned its blocks on no worker. The
    worker slots, the memory and the provenance ask the scheduler instead: with that cache empty they still see
    both workers and their threads."""
    from astrodask.cluster import connect, worker_memory
    from astrodask.cluster.backend import OnCluster
    from astrodask.report.provenance import cluster_info

    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    with connect(ClusterConfig(n_workers=2, threads_per_worker=2, memory_limit="1GiB"), quiet=True) as client:
        monkeypatch.setattr(client, "scheduler_info", lambda *a, **k: {"workers": {}})
        slots = OnCluster(client, quiet=True).slots()
        assert len(slots) == 4 and len(set(slots)) == 2, slots
        assert worker_memory(client) == 2 * 2**30
        info = cluster_info(client)
        assert (info.workers, info.threads_per_worker, info.memory_per_worker) == (2, 2, 2**30), info


def test_a_cluster_without_workers_stops_training_in_one_line(lonely_scheduler):
    """No worker to plan the blocks on: a named error, not an IndexError."""
    from distributed import Client

    from astrodask.cluster.backend import OnCluster
    from astrodask.errors import AstrodaskError

    with Client(lonely_scheduler.address, timeout=30, set_as_default=False) as c:
        with pytest.raises(AstrodaskError, match="no workers"):
            OnCluster(c, quiet=True).map(abs, [1, 2, 3], placed=True)


def _numpy_hugepages() -> bool:
    try:
        from numpy._core import multiarray
    except ImportError:  # NumPy 1.x
        from numpy.core import multiarray
    return bool(multiarray._get_madvise_hugepage())


@pytest.mark.parametrize("environ, expected", [(None, False), ("1", True)])
def test_workers_allocate_without_numpy_huge_pages_unless_the_environment_says(monkeypatch, environ, expected):
    """Real LocalCluster workers: NumPy's huge-page madvise is off on them (their large arrays are cheaper to
    fault in), unless NUMPY_MADVISE_HUGEPAGE in their environment chose; the client's own NumPy is left alone."""
    from astrodask.cluster import connect

    if environ is None:
        monkeypatch.delenv("NUMPY_MADVISE_HUGEPAGE", raising=False)
    else:
        monkeypatch.setenv("NUMPY_MADVISE_HUGEPAGE", environ)
    here = _numpy_hugepages()
    with connect(ClusterConfig(n_workers=2, threads_per_worker=1), quiet=True) as client:
        on_workers = client.run(_numpy_hugepages)
    assert len(on_workers) == 2 and set(on_workers.values()) == {expected}
    assert _numpy_hugepages() == here
