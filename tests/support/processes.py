"""Processes a test starts and kills: a job in its own process group, killed whole; waiting on what it writes."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from .cli import env

TIMEOUT = 240


@dataclass
class Job:
    """A CLI / job-script process in its own process group (so it and its LocalCluster die together)."""

    proc: subprocess.Popen
    out: Path
    err: Path

    @classmethod
    def start(cls, argv: list, cwd: Path, name: str) -> Job:
        out, err = cwd / f"{name}.stdout", cwd / f"{name}.stderr"
        with open(out, "wb") as o, open(err, "wb") as e:
            proc = subprocess.Popen([str(a) for a in argv], stdout=o, stderr=e, stdin=subprocess.DEVNULL, cwd=cwd,
                                    env=env(), start_new_session=True)
        return cls(proc, out, err)

    @property
    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    @property
    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    def wait(self, timeout: float = TIMEOUT) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.proc.args} did not finish in {timeout} s:\n{self.stderr}") from None

    def kill(self) -> None:
        """SIGKILL the whole process group (the job and, if it made one, its LocalCluster) and wait it out."""
        kill_group(self.proc)


def _group_members(pgid: int) -> list[psutil.Process]:
    alive = []
    for p in psutil.process_iter(["pid", "status"]):
        try:
            if os.getpgid(p.pid) == pgid and p.info["status"] != psutil.STATUS_ZOMBIE:
                alive.append(p)
        except (ProcessLookupError, psutil.Error):
            pass
    return alive


def kill_group(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=timeout)
    deadline = time.monotonic() + timeout
    while _group_members(proc.pid):
        assert time.monotonic() < deadline, f"processes of group {proc.pid} outlived SIGKILL"
        time.sleep(0.05)


def wait_until(cond, job: Job, what: str, timeout: float = 180.0, poll: float = 0.002):
    """Poll ``cond()`` until it returns something truthy (returned); fail if ``job`` ends first."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if job.proc.poll() is not None:
            raise AssertionError(f"the job ended (exit {job.proc.returncode}) before {what}:\n{job.stderr}")
        if time.monotonic() > deadline:
            job.kill()
            raise AssertionError(f"timed out waiting for {what}:\n{job.stderr}")
        time.sleep(poll)
