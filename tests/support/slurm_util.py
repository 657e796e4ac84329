"""Helpers for the tests that run astrodask through a real SLURM (tests/cluster/test_slurm.py).

``require_slurm()`` makes sure the one-node SLURM of ``.ci/slurm-setup.sh`` answers: as root it starts it (the
script installs and starts what is missing); a user who is not root and has no ``sinfo`` gets a skip with the
reason; everywhere else (and always under CI=true) a SLURM that does not come up fails the test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SETUP = ROOT / ".ci" / "slurm-setup.sh"
SETUP_TIMEOUT = 900  # an apt-get install of slurm-wlm on a fresh machine included
READY_STATES = ("idle", "mixed", "allocated", "completing")


def _run(args: list[str], timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def slurm_state() -> tuple[bool, str]:
    """(ready, what sinfo says): ready when a node of the default partition accepts jobs."""
    if shutil.which("sinfo") is None:
        return False, "sinfo is not installed"
    try:
        r = _run(["sinfo", "-h", "-o", "%T"])
    except (OSError, subprocess.SubprocessError) as exc:
        return False, f"sinfo failed: {exc}"
    states = r.stdout.split()
    if r.returncode != 0:
        return False, f"sinfo failed: {(r.stderr or r.stdout).strip()[:200]}"
    if any(s.rstrip("*~#") in READY_STATES for s in states):
        return True, ",".join(states)
    return False, f"no node ready (sinfo: {','.join(states) or 'no nodes'})"


def require_slurm() -> None:
    """Return when SLURM accepts jobs; else start it (root), skip (not root, no sinfo) or fail."""
    ready, why = slurm_state()
    if ready:
        return
    ci = os.environ.get("CI", "").lower() in ("1", "true", "yes")
    root = os.geteuid() == 0
    if not root and shutil.which("sinfo") is None and not ci:
        pytest.skip(f"SLURM is not installed here ({why}) and starting it needs root: run `sudo {SETUP}` first")
    if root:
        try:
            r = subprocess.run(["bash", str(SETUP)], capture_output=True, text=True, timeout=SETUP_TIMEOUT,
                               stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{SETUP} did not finish in {SETUP_TIMEOUT} s")
        ready, why = slurm_state()
        if ready:
            return
        pytest.fail(f"SLURM did not come up with {SETUP} (exit {r.returncode}; {why}):\n{r.stdout[-2000:]}\n"
                    f"{r.stderr[-2000:]}")
    pytest.fail(f"SLURM is not up ({why}){' under CI=true' if ci else ''}: run {SETUP} as root before the tests")


def squeue(ids: list[str] | None = None, name: str | None = None) -> list[tuple[str, str, str]]:
    """(job id, name, state) of the jobs in the queue, all or those with the given ids / name."""
    args = ["squeue", "-h", "-o", "%i|%j|%T"]
    if name:
        args += ["-n", name]
    r = _run(args)
    rows = [tuple(line.split("|", 2)) for line in r.stdout.splitlines() if line.strip()]
    return [row for row in rows if ids is None or row[0] in ids]


def wait_until_gone(ids: list[str] | None = None, name: str | None = None, timeout: float = 30.0) -> list:
    """Wait (at most ``timeout`` s) until none of these jobs is in the queue (a cancelled job lingers a moment as
    COMPLETING); return those still there."""
    deadline = time.monotonic() + timeout
    while True:
        left = squeue(ids, name)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


def cancel(ids: list[str] | None = None, name: str | None = None) -> None:
    """scancel jobs a test made (by id or by its unique job name): never leave them to their walltime."""
    args = ["scancel"]
    if name:
        args += ["-n", name]
    if ids:
        args += list(ids)
    if len(args) > 1 and shutil.which("scancel"):
        _run(args)
