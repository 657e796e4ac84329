"""The ``astrodask`` command as a user meets it: help for every command, and one-line errors for bad input."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from support.cli import one_line_error, run_cli

SMALL = ["--workers", "1", "--quiet"]
COMMANDS = ("convert", "synth", "train", "predict", "evaluate", "run")


# ------------------------------------------------------------------------------------------------ help


def test_console_script_is_installed_and_runs():
    exe = Path(sys.executable).parent / "astrodask"
    assert exe.is_file() and os.access(exe, os.X_OK), f"no astrodask console script beside {sys.executable}"
    r = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "Usage: astrodask" in r.stdout
    for cmd in COMMANDS:
        assert re.search(rf"^\s+{cmd}\s", r.stdout, re.M), f"{cmd} missing from the command list"


def test_version():
    r = run_cli("--version")
    assert r.returncode == 0
    from astrodask import __version__

    assert __version__ in r.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_subcommand_help_shows_an_example(command):
    r = run_cli(command, "--help")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert f"Usage: astrodask {command}" in r.stdout
    assert re.search(rf"Example: astrodask {command}\b", r.stdout), r.stdout
    # every command takes the cluster options
    assert "--scheduler" in r.stdout and "DASK_SCHEDULER_ADDRESS" in r.stdout


# ------------------------------------------------------------------------------------------------ bad input


def test_missing_input_file(tmp_path):
    r = run_cli("convert", tmp_path / "nope.csv", tmp_path / "ds", *SMALL)
    line = one_line_error(r)
    assert "nope.csv" in line and "no such file" in line
    assert not (tmp_path / "ds").exists()


def test_csv_missing_a_required_column(small_csv, tmp_path):
    import pandas as pd

    src = tmp_path / "no_u.csv"
    pd.read_csv(small_csv, nrows=50).drop(columns=["u"]).to_csv(src, index=False)
    r = run_cli("convert", src, tmp_path / "ds", *SMALL)
    line = one_line_error(r)
    assert "missing required column(s) u " in line, line
    assert str(src) in line
    assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize("content, expect", [
    (bytes(range(256)) * 16, "binary"),
    (b"\x89PNG\r\n\x1a\n" + bytes(200), "binary"),
    (b"", "empty"),
    (b"\n\n  \n", "empty"),
], ids=["garbage", "png", "empty", "blank-lines"])
def test_unreadable_csv(tmp_path, content, expect):
    src = tmp_path / "bad.csv"
    src.write_bytes(content)
    r = run_cli("convert", src, tmp_path / "ds", *SMALL)
    line = one_line_error(r)
    assert expect in line and str(src) in line, line
    assert not (tmp_path / "ds").exists()


def test_spreadsheet_export_with_float_ids_is_refused(shared_data, tmp_path):
    """Ids rewritten as 1.24E+18 lost their digits: every row fails, so convert refuses with the cause."""
    dirty = shared_data / "dirty" / "sdss17_spreadsheet_export.csv"
    if not dirty.is_file():
        pytest.skip(f"dirty spreadsheet export not found at {dirty}")
    r = run_cli("convert", dirty, tmp_path / "ds", *SMALL)
    line = one_line_error(r)
    assert "obj_ID" in line and "floating-point notation" in line, line
    assert "all 9,999 rows rejected" in line, line
    assert "re-export the ids as integers or text" in line
    assert not (tmp_path / "ds").exists(), "no dataset with wrong ids may be published"


def test_float_ids_mixed_with_good_rows_are_quarantined(small_csv, tmp_path):
    """A few float-notation ids among good rows: those rows go to quarantine with the reason, the rest pass."""
    import pandas as pd
    import pyarrow.parquet as pq

    df = pd.read_csv(small_csv, nrows=300, dtype={"obj_ID": str})
    df.loc[[3, 7], "obj_ID"] = ["1.24E+18", "6.54E+18"]
    src = tmp_path / "mixed.csv"
    df.to_csv(src, index=False)
    r = run_cli("convert", src, tmp_path / "ds", *SMALL)
    assert r.returncode == 0, r.stderr
    assert "written 298  quarantined 2" in r.stdout
    assert "quarantined 2: id_float_notation:obj_ID" in r.stdout
    q = pq.read_table(tmp_path / "ds" / "_quarantine").to_pandas()
    assert sorted(q["reason"]) == ["id_float_notation:obj_ID"] * 2
    assert any("1.24E+18" in rec for rec in q["record"])
    ids = pq.read_table(tmp_path / "ds", columns=["obj_ID"]).column(0).to_pylist()
    assert sorted(ids) == sorted(int(i) for i in df["obj_ID"].drop(index=[3, 7]))


def test_train_on_missing_dataset(tmp_path):
    r = run_cli("train", tmp_path / "no_dataset", "--model", tmp_path / "model", *SMALL)
    line = one_line_error(r)
    assert "no_dataset" in line and "no such dataset" in line
    assert not (tmp_path / "model").exists()


def test_predict_with_missing_model(tmp_path):
    r = run_cli("predict", tmp_path / "ds", tmp_path / "no_model", tmp_path / "out", *SMALL)
    line = one_line_error(r)
    assert "no_model" in line and "no such model directory" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, names", [
    (["train", "DS", "--model", "M", "--epochs", "0"], "epochs"),
    (["train", "DS", "--model", "M", "--epochs", "many"], "--epochs"),
    (["train", "DS", "--model", "M", "--l2", "-1"], "l2"),
    (["train", "DS", "--model", "M", "--patience", "-3"], "patience"),
    (["train", "DS", "--model", "M", "--mode", "magic"], "--mode"),
    (["train", "DS", "--model", "M", "--features", "x-ray"], "--features"),
    (["convert", "SRC", "DS", "--block-size", "100"], "block_size"),
    (["convert", "SRC", "DS", "--block-size", "lots"], "block"),
    (["convert", "SRC", "DS", "--workers", "0"], "workers"),
    (["convert", "SRC", "DS", "--threads", "0"], "threads"),
    (["convert", "SRC", "DS", "--memory-limit", "lots"], "memory"),
    (["convert", "SRC", "DS", "--tls-ca", "ca.pem"], "tls"),
    (["convert", "SRC", "DS", "--frobnicate"], "--frobnicate"),
    (["convert"], "SOURCES"),
    (["train", "DS"], "--model"),
], ids=lambda v: "_".join(v) if isinstance(v, list) else v)
def test_bad_option_values(small_csv, tmp_path, args, names):
    subst = {"DS": tmp_path / "ds", "M": tmp_path / "model", "SRC": small_csv}
    r = run_cli(*[subst.get(a, a) for a in args], "--quiet")
    line = one_line_error(r)
    assert names in line, line
    assert not (tmp_path / "model").exists() and not (tmp_path / "ds").exists()
