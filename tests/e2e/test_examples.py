"""The example notebook (examples/notebook.py) runs end to end, as a user runs it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "notebook.py"


def test_the_notebook_runs(tmp_path):
    pytest.importorskip("lsdb", reason="lsdb is in the astrodask[hats] extra (installed by [test])")
    env = {k: v for k, v in os.environ.items() if k != "DASK_SCHEDULER_ADDRESS"}
    r = subprocess.run([sys.executable, str(EXAMPLE), str(tmp_path)], capture_output=True, text=True, cwd=tmp_path,
                       env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    acc = float(re.search(r"pandas: \d+ epochs, test accuracy (\d\.\d+)", r.stdout).group(1))
    assert acc > 0.9, r.stdout
    agree = float(re.search(r"agrees with the pandas fit on ([\d.]+)%", r.stdout).group(1))
    assert agree > 98.0, r.stdout
    n = int(re.search(r"lsdb: (\d+) objects within", r.stdout).group(1))
    assert n > 0, r.stdout
    assert (tmp_path / "model" / "model.json").is_file() and (tmp_path / "model" / "_SUCCESS").is_file()
