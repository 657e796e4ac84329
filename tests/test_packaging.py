"""Packaging: every package is installed, and a non-editable install runs the default job on the sample it
ships (issue #13: `pip install .` looked for site-packages/data/sdss_sample.csv and failed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "astrodask").rglob("__init__.py")}
    assert found - listed == set(), "packages missing from [tool.setuptools] packages in pyproject.toml"
    assert "astrodask.data" in listed


def test_a_non_editable_install_runs_the_default_job(tmp_path):
    import shutil

    src, target = tmp_path / "src", tmp_path / "site"
    for part in ("astrodask", "data"):  # a copy, so the build leaves nothing in the checkout
        shutil.copytree(ROOT / part, src / part, ignore=shutil.ignore_patterns("__pycache__"))
    for part in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / part, src / part)
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
                        str(src)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert (target / "astrodask" / "data" / "sdss_sample.csv").is_file()
    # from a directory outside the checkout, with only the installed copy importable
    env = {k: v for k, v in os.environ.items() if k not in ("DASK_SCHEDULER_ADDRESS", "PYTHONPATH")}
    env["PYTHONPATH"] = str(target)
    run = subprocess.run([sys.executable, "-c", "import astrodask, sys; print(astrodask.__file__)"],
                         capture_output=True, text=True, cwd=tmp_path, env=env)
    assert run.stdout.strip().startswith(str(target)), run.stdout + run.stderr
    r = subprocess.run([sys.executable, "-m", "astrodask.cli", "run", "--out", str(tmp_path / "out"), "--epochs", "3",
                        "--no-report", "--workers", "1", "--quiet"], capture_output=True, text=True, cwd=tmp_path, env=env,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    meta = json.loads((tmp_path / "out" / "dataset" / "_astrodask.json").read_text())
    assert meta["sources"] == [str(target / "astrodask" / "data" / "sdss_sample.csv")]
    assert meta["written"] > 0 and (tmp_path / "out" / "evaluation" / "_SUCCESS").is_file()
