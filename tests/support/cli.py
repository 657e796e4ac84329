"""Running the ``astrodask`` command as a user does, and reading what it printed."""

from __future__ import annotations

import os
import re
import subprocess
import sys

CLI = [sys.executable, "-m", "astrodask.cli"]
_PROGRESS = re.compile(r"\r|\d+%\|")
"""tqdm progress bars redraw with carriage returns; such lines are not messages."""


def env(extra: dict | None = None) -> dict:
    """The environment of a user's shell: no debug switch, no scheduler address left over."""
    e = {k: v for k, v in os.environ.items() if k not in ("ASTRODASK_DEBUG", "DASK_SCHEDULER_ADDRESS")}
    return {**e, **(extra or {})}


def run_cli(*args, cwd=None, env_extra=None, timeout: float = 180) -> subprocess.CompletedProcess:
    """``astrodask ARGS...`` in a subprocess; never a traceback, whatever the outcome."""
    r = subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env(env_extra),
                       timeout=timeout)
    assert "Traceback" not in r.stderr + r.stdout, r.stderr
    return r


def ok(r: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert r.returncode == 0, f"exit {r.returncode}:\n{r.stderr}"
    return r


def message_lines(stderr: str) -> list[str]:
    """Non-blank stderr lines, without progress-bar redraws."""
    return [ln for ln in stderr.splitlines() if ln.strip() and not _PROGRESS.search(ln)]


def one_line_error(r: subprocess.CompletedProcess) -> str:
    """Assert the run failed as a user error (exit 1, exactly one 'astrodask: error:' line); return the line."""
    assert "Traceback" not in r.stderr + r.stdout, r.stderr
    lines = message_lines(r.stderr)
    assert len(lines) == 1, f"expected one error line, got {len(lines)}:\n{r.stderr}"
    assert lines[0].startswith("astrodask: error: "), lines[0]
    assert r.returncode == 1, (r.returncode, r.stderr)
    return lines[0]
