"""Never lose, swap or invent data (issue #13): user files, stale resumes, imputation, OS errors, model files.

Every case runs the ``astrodask`` command as a user would (against a real ``dask scheduler`` + 2 workers where
a cluster is needed) and checks the outcome: a correct result, or exactly one ``astrodask: error:`` line with
exit 1 — and that no file the user owns was touched.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from support.cli import CLI, message_lines, run_cli
from support.cli import one_line_error as _one_line_error

EPOCHS = "5"


def one_line_error(r: subprocess.CompletedProcess) -> str:
    """Exit 1 with exactly one ``astrodask: error:`` line (``[astrodask]`` progress notes before it allowed)."""
    notes = "".join(ln + "\n" for ln in r.stderr.splitlines() if not ln.startswith("[astrodask]"))
    return _one_line_error(subprocess.CompletedProcess(r.args, r.returncode, r.stdout, notes))


def snapshot(root: Path) -> dict:
    """Every file under ``root`` with its size and modification time."""
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def sched(dask_cluster) -> list[str]:
    return ["--scheduler", dask_cluster.address, "--quiet"]


@pytest.fixture(scope="module")
def job(sched, small_csv, tmp_path_factory) -> Path:
    """A finished ``astrodask run`` of the small sample: OUT/dataset, model, predictions, evaluation."""
    out = tmp_path_factory.mktemp("safety") / "out"
    r = run_cli("run", small_csv, "--out", out, "--epochs", EPOCHS, *sched)
    assert r.returncode == 0, r.stderr
    return out


def copy_job(job: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "out"
    shutil.copytree(job, dst)
    return dst


# ------------------------------------------------------------------------------------------------ 1. --overwrite


def test_overwrite_never_deletes_the_current_directory_or_a_users_directory(sched, small_csv, tmp_path):
    """The reproduction: `astrodask convert src/sample.csv . --overwrite` deleted src/ and docs/."""
    x = tmp_path / "x"
    (x / "src").mkdir(parents=True)
    (x / "docs").mkdir()
    shutil.copy(small_csv, x / "src" / "sample.csv")
    (x / "docs" / "thesis.tex").write_text("keep")
    before = snapshot(x)
    line = one_line_error(run_cli("convert", "src/sample.csv", ".", "--overwrite", *sched, cwd=x))
    assert "current directory" in line
    line = one_line_error(run_cli("convert", "src/sample.csv", "docs", "--overwrite", *sched, cwd=x))
    assert "not written by astrodask" in line and "--overwrite" not in line.split(";")[-1]
    # an ancestor of the current directory
    one_line_error(run_cli("convert", "sample.csv", "..", "--overwrite", *sched, cwd=x / "src"))
    assert snapshot(x) == before


def test_overwrite_refuses_an_output_that_holds_the_input(sched, small_csv, job, tmp_path):
    """`run X/dataset/in.csv --out X --overwrite` must not delete the input: not when X/dataset is the user's
    directory, and not when it is astrodask's dataset with the user's file put inside."""
    x = tmp_path / "X"
    (x / "dataset").mkdir(parents=True)
    shutil.copy(small_csv, x / "dataset" / "in.csv")
    before = snapshot(x)
    one_line_error(run_cli("run", x / "dataset" / "in.csv", "--out", x, "--overwrite", *sched))
    assert snapshot(x) == before

    out = copy_job(job, tmp_path)
    shutil.copy(small_csv, out / "dataset" / "in.csv")
    before = snapshot(out)
    line = one_line_error(run_cli("run", out / "dataset" / "in.csv", "--out", out, "--overwrite", *sched))
    assert "in.csv" in line
    assert snapshot(out) == before


def test_overwrite_replaces_only_astrodask_files(sched, small_csv, job, tmp_path):
    """A user's file inside a committed output makes --overwrite refuse; a clean output is replaced."""
    out = copy_job(job, tmp_path)
    (out / "dataset" / "notes.txt").write_text("mine")
    before = snapshot(out)
    line = one_line_error(run_cli("convert", small_csv, out / "dataset", "--overwrite", *sched))
    assert "notes.txt" in line
    assert snapshot(out) == before
    (out / "dataset" / "notes.txt").unlink()
    stamp = (out / "dataset" / "_SUCCESS").stat().st_mtime_ns
    r = run_cli("convert", small_csv, out / "dataset", "--overwrite", *sched)
    assert r.returncode == 0, r.stderr
    assert (out / "dataset" / "_SUCCESS").stat().st_mtime_ns != stamp


def test_already_exists_message_offers_resume_for_astrodask_outputs(sched, small_csv, job):
    line = one_line_error(run_cli("convert", small_csv, job / "dataset", *sched))
    assert "already exists" in line and "--resume" in line and "--overwrite" in line


# ------------------------------------------------------------------------------------------------ 4, 6. --resume


def test_resume_with_other_inputs_or_options_is_refused(sched, small_csv, job, tmp_path):
    out = copy_job(job, tmp_path)
    other = tmp_path / "other.csv"
    df = pd.read_csv(small_csv)
    df.iloc[: len(df) // 2].to_csv(other, index=False)
    before = snapshot(out)
    line = one_line_error(run_cli("run", other, "--out", out, "--resume", "--epochs", EPOCHS, *sched))
    assert "dataset" in line and "sources" in line
    line = one_line_error(run_cli("run", small_csv, "--out", out, "--resume", "--epochs", EPOCHS,
                                  "--features", "photometric", *sched))
    assert "model" in line and "features" in line
    assert snapshot(out) == before
    # the same command resumes to exactly the finished job
    r = run_cli("run", small_csv, "--out", out, "--resume", "--epochs", EPOCHS, *sched)
    assert r.returncode == 0, r.stderr
    assert snapshot(out) == before


def test_predict_resume_on_a_finished_output_succeeds_and_changes_nothing(sched, job, tmp_path):
    """Batch systems requeue jobs: a rerun of a finished predict must succeed without touching its output."""
    out = copy_job(job, tmp_path)
    before = snapshot(out)
    r = run_cli("predict", out / "dataset", out / "model", out / "predictions", "--resume", *sched)
    assert r.returncode == 0, r.stderr
    assert "already complete" in r.stderr
    assert snapshot(out) == before
    # the job's evaluation was made with the model's holdout metrics beside it: the same inputs again
    r = run_cli("evaluate", out / "predictions", "--out", out / "evaluation", "--holdout", out / "model", "--resume",
                *sched)
    assert r.returncode == 0, r.stderr
    assert snapshot(out) == before
    line = one_line_error(run_cli("evaluate", out / "predictions", "--out", out / "evaluation", "--resume", *sched))
    assert "differ: holdout" in line


# ------------------------------------------------------------------------------------------------ 3. imputation


def _csv_with(small_csv: Path, path: Path, change) -> Path:
    df = pd.read_csv(small_csv)
    change(df)
    df.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("empty", ["", "-9999"])
def test_a_redshift_that_is_entirely_missing_is_never_imputed(sched, small_csv, job, tmp_path, empty):
    """A dataset whose redshift is all null / -9999: imputing the training median (0.46) would call every row
    GALAXY. Predict scores every row with the photometric companion and says so; train refuses in one line."""
    src = _csv_with(small_csv, tmp_path / "noz.csv", lambda df: df.__setitem__("redshift", empty))
    ds = tmp_path / "ds"
    assert run_cli("convert", src, ds, *sched).returncode == 0
    r = run_cli("predict", ds, job / "model", tmp_path / "pred", *sched)
    assert r.returncode == 0, r.stderr
    assert "has no redshift: the model's photometric companion" in r.stderr
    p = pq.read_table(tmp_path / "pred").to_pandas()
    assert len(p) == len(pd.read_csv(src)) and (p["scored_by"] == "photometric").all()
    assert ((p["imputed"] & 32) == 0).all()
    line = one_line_error(run_cli("train", ds, "--model", tmp_path / "m", "--epochs", EPOCHS, *sched))
    assert "redshift" in line
    assert not (tmp_path / "m").exists()


def test_imputed_inputs_are_flagged_on_each_prediction(sched, small_csv, job, tmp_path):
    rng = np.random.default_rng(3)
    holes = {}

    def punch(df):
        for c in ("u", "z", "redshift"):
            rows = rng.choice(len(df), 40, replace=False)
            df.loc[rows, c] = np.nan
            holes[c] = set(df.loc[rows, "obj_ID"])

    src = _csv_with(small_csv, tmp_path / "holes.csv", punch)
    ds, pred = tmp_path / "ds", tmp_path / "pred"
    assert run_cli("convert", src, ds, *sched).returncode == 0
    r = run_cli("predict", ds, job / "model", pred, *sched)
    assert r.returncode == 0, r.stderr
    p = pq.read_table(pred).to_pandas()
    assert len(p) == len(pd.read_csv(src))
    bits = {"u": 1, "g": 2, "r": 4, "i": 8, "z": 16, "redshift": 32}
    for c, b in bits.items():
        flagged = set(p.loc[(p["imputed"] & b) != 0, "obj_ID"])
        # a missing redshift is never imputed: that row is scored by the photometric companion instead
        assert flagged == (set() if c == "redshift" else holes.get(c, set())), c
    routed = set(p.loc[p["scored_by"] == "photometric", "obj_ID"])
    src_df = pd.read_csv(src)
    assert routed == holes["redshift"] | set(src_df.loc[src_df["redshift"] == 0.0, "obj_ID"])  # SDSS's "no redshift"
    meta = json.loads((pred / "_astrodask.json").read_text())
    assert meta["imputed_rows"] == len(holes["u"] | holes["z"])
    assert meta["imputed_bits"][:6] == list(bits)
    assert meta["scored_by"] == {"spectroscopic": len(p) - len(routed), "photometric": len(routed)}


# ------------------------------------------------------------------------------------------------ 8. OS errors


def _mount_tmpfs(where: Path, *opts: str):
    where.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(opts), "tmpfs", str(where)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {r.stderr.decode().strip()}")


@pytest.fixture
def mounts(tmp_path):
    made = []

    def mount(name, *opts):
        where = tmp_path / name
        _mount_tmpfs(where, *opts)
        made.append(where)
        return where

    yield mount
    for m in made:
        subprocess.run(["umount", "-l", str(m)], capture_output=True)


def test_read_only_and_full_disks_give_one_line(sched, small_csv, mounts):
    ro = mounts("ro", "ro", "size=1m")
    line = one_line_error(run_cli("convert", small_csv, ro / "ds", *sched))
    assert "Read-only" in line or "read-only" in line
    full = mounts("full", "size=96k")
    line = one_line_error(run_cli("convert", small_csv, full / "ds", *sched))
    assert "space" in line.lower()


def test_a_dangling_symlink_input_gives_one_line(sched, tmp_path):
    link = tmp_path / "cat.csv"
    link.symlink_to(tmp_path / "gone.csv")
    line = one_line_error(run_cli("convert", link, tmp_path / "ds", *sched))
    assert "cat.csv" in line


def test_relative_paths_work_with_a_scheduler_in_another_directory(sched, small_csv, tmp_path):
    """The workers run in their own directories: relative paths are made absolute on the client."""
    shutil.copy(small_csv, tmp_path / "in.csv")
    for args in (("convert", "in.csv", "ds"),
                 ("train", "ds", "--model", "m", "--epochs", EPOCHS, "--no-report"),
                 ("predict", "ds", "m", "p"),
                 ("evaluate", "p", "--out", "e")):
        r = run_cli(*args, *sched, cwd=tmp_path)
        assert r.returncode == 0, (args, r.stderr)
    assert (tmp_path / "e" / "_SUCCESS").is_file()


# ------------------------------------------------------------------------------------------------ 9. model files


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("damage, words", [
    (lambda d: d["features"]["base_std"].__setitem__(0, float("nan")), ("base_std", "NaN")),
    (lambda d: d["features"]["scale"].__setitem__(3, 0.0), ("scale", "zero")),
    (lambda d: d["features"]["impute"].__setitem__("u", float("nan")), ("impute", "NaN")),
    (lambda d: d["features"].__setitem__("feature_set", "photometric"), ("redshift",)),
    (lambda d: d["features"].__setitem__("impute", {}), ("imputation",)),
    ("nested", ("nested",)),
], ids=["nan-base-std", "zero-scale", "nan-impute", "feature-set-changed", "no-impute", "deeply-nested"])
def test_tampered_model_files_are_refused_in_one_line(sched, job, tmp_path, damage, words):
    model = tmp_path / "model"
    shutil.copytree(job / "model", model)
    if damage == "nested":
        (model / "model.json").write_text(_nested(100_000))
    else:
        doc = json.loads((model / "model.json").read_text())
        damage(doc)
        (model / "model.json").write_text(json.dumps(doc))
    line = one_line_error(run_cli("predict", job / "dataset", model, tmp_path / "pred", *sched))
    for w in words:
        assert w in line, line
    assert not (tmp_path / "pred").exists()


# ------------------------------------------------------------------------------------------------ 10, 11


def test_ctrl_c_mid_training_ends_quietly_with_a_resume_hint(small_csv, tmp_path):
    """Ctrl-C reaches the whole foreground process group (the CLI and its LocalCluster workers)."""
    model = tmp_path / "m"
    ds = tmp_path / "ds"
    assert run_cli("convert", small_csv, ds, "--workers", "1", "--quiet").returncode == 0
    err = (tmp_path / "err.txt").open("w")
    proc = subprocess.Popen([*CLI, "train", str(ds), "--model", str(model), "--epochs", "60", "--patience", "0",
                             "--no-report", "--workers", "2"], stdout=subprocess.DEVNULL, stderr=err, start_new_session=True,
                            env={k: v for k, v in os.environ.items() if k != "DASK_SCHEDULER_ADDRESS"})
    ckpt = tmp_path / ".m.staging" / "checkpoint.json"
    deadline = time.monotonic() + 120
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ckpt.exists(), (tmp_path / "err.txt").read_text()
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=60)
    finally:
        err.close()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    stderr = (tmp_path / "err.txt").read_text()
    lines = [ln for ln in message_lines(stderr) if not ln.startswith("[astrodask]")]
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1 and "--resume" in lines[0], stderr
    r = run_cli("train", ds, "--model", model, "--epochs", "60", "--patience", "0", "--no-report", "--resume",
                "--workers", "1", "--quiet")
    assert r.returncode == 0, r.stderr
    assert (model / "_SUCCESS").is_file()


def _group_gone(pgid: int, timeout: float = 60) -> bool:
    """Wait until no process of group ``pgid`` is left (the CLI's LocalCluster and multiprocessing's resource
    tracker, which prints its leak warnings as it exits)."""
    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = []
        for p in psutil.process_iter(["pid", "status"]):
            try:
                if os.getpgid(p.pid) == pgid and p.info["status"] != psutil.STATUS_ZOMBIE:
                    left.append(p)
            except (ProcessLookupError, psutil.Error):
                pass
        if not left:
            return True
        time.sleep(0.1)
    return False


def test_sigterm_mid_training_ends_with_one_line_a_resume_hint_and_no_leak(small_csv, tmp_path):
    """SIGTERM (kill, a batch system's timeout) to the CLI alone, mid-training on its own LocalCluster: the cluster
    is closed in order (no leaked-semaphore warning from multiprocessing's resource tracker), one line with the
    --resume hint, exit 143 (128 + SIGTERM); --resume then finishes the model."""
    model, ds = tmp_path / "m", tmp_path / "ds"
    assert run_cli("convert", small_csv, ds, "--workers", "1", "--quiet").returncode == 0
    argv = ["train", str(ds), "--model", str(model), "--epochs", "60", "--patience", "0", "--no-report"]
    with (tmp_path / "err.txt").open("w") as err:
        proc = subprocess.Popen([*CLI, *argv, "--workers", "2"], stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=True,
                                env={k: v for k, v in os.environ.items() if k != "DASK_SCHEDULER_ADDRESS"})
        ckpt = tmp_path / ".m.staging" / "checkpoint.json"
        deadline = time.monotonic() + 120
        while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        try:
            assert ckpt.exists(), (tmp_path / "err.txt").read_text()
            proc.send_signal(signal.SIGTERM)  # the CLI only, not its workers
            proc.wait(timeout=90)
            assert _group_gone(proc.pid), "processes of the terminated job were left behind"
        finally:
            if proc.poll() is None or not _group_gone(proc.pid, 0):
                os.killpg(proc.pid, signal.SIGKILL)
    stderr = (tmp_path / "err.txt").read_text()
    lines = [ln for ln in message_lines(stderr) if not ln.startswith("[astrodask]")]
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "Traceback" not in stderr and "resource_tracker" not in stderr and "leaked" not in stderr, stderr
    assert lines == ["astrodask: terminated (SIGTERM); rerun the same command with --resume to continue"], stderr
    r = run_cli(*argv, "--resume", "--workers", "1", "--quiet")
    assert r.returncode == 0, r.stderr
    assert (model / "_SUCCESS").is_file()


def test_reports_say_which_rows_their_metrics_are_over(job):
    holdout = (job / "model" / "report" / "index.html").read_text()
    assert "Holdout rows" in holdout
    everything = (job / "evaluation" / "index.html").read_text()
    assert "Holdout rows" not in everything and "All predicted rows" in everything
    n_all = json.loads((job / "evaluation" / "metrics.json").read_text())["n"]
    assert f"{n_all:,}" in everything
    assert math.isclose(json.loads((job / "evaluation" / "holdout_metrics.json").read_text())["n"] / n_all, 0.2,
                        abs_tol=0.03)


# ------------------------------------------------------------------------------------------------ 12. integrity


def test_a_part_replaced_by_another_is_refused_naming_it_and_verify_finds_every_damage(sched, small_csv_parts, job,
                                                                                       tmp_path):
    """The issue's S2: a part overwritten by a copy of another part gave duplicated and missing ids, exit 0."""
    ds = tmp_path / "ds"
    shorter = tmp_path / "shorter.csv"
    shorter.write_text("".join(small_csv_parts[2].read_text().splitlines(keepends=True)[:1501]))
    assert run_cli("convert", *small_csv_parts[:2], shorter, ds, *sched).returncode == 0
    r = run_cli("verify", ds, *sched)
    assert r.returncode == 0 and r.stdout.strip().startswith(f"verified {ds}: 3 files"), r.stdout + r.stderr
    rows = [pq.ParquetFile(ds / f"part-0000{k}.parquet").metadata.num_rows for k in range(3)]
    assert rows[0] == rows[1] != rows[2]
    damaged = tmp_path / "damaged"
    shutil.copytree(ds, damaged)
    shutil.copy(damaged / "part-00002.parquet", damaged / "part-00000.parquet")  # fewer rows
    line = one_line_error(run_cli("predict", damaged, job / "model", tmp_path / "pred", *sched))
    assert f"{damaged}/part-00000.parquet: {rows[2]:,} rows, the manifest records {rows[0]:,}" in line
    line = one_line_error(run_cli("train", damaged, "--model", tmp_path / "m", "--epochs", EPOCHS, *sched))
    assert "part-00000.parquet" in line and "replaced or damaged" in line
    assert not (tmp_path / "pred").exists() and not (tmp_path / "m").exists()
    shutil.copy(ds / "part-00001.parquet", damaged / "part-00000.parquet")  # as many rows: the size tells
    line = one_line_error(run_cli("predict", damaged, job / "model", tmp_path / "pred", *sched))
    assert "part-00000.parquet" in line and "bytes, the manifest records" in line
    # the same size, other bytes: only the digest tells (what verify reads every byte for)
    shutil.copy(ds / "part-00000.parquet", damaged / "part-00000.parquet")
    data = bytearray((damaged / "part-00001.parquet").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (damaged / "part-00001.parquet").write_bytes(bytes(data))
    r = run_cli("verify", damaged, *sched)
    line = one_line_error(r)
    assert line.startswith(f"astrodask: error: {damaged}: 1 of 3 files differ from the manifest ({damaged}/"
                           "part-00001.parquet: digest crc32:"), line
    assert r.stdout.splitlines() == [next(ln for ln in r.stdout.splitlines() if ln.startswith("differs: "))]


def test_verify_checks_every_output_of_a_job_and_refuses_what_is_not_one(sched, job, tmp_path):
    r = run_cli("verify", job, *sched)
    assert r.returncode == 0, r.stderr
    meta = {k: json.loads((job / k / "_astrodask.json").read_text()) for k in ("dataset", "model", "predictions",
                                                                                 "evaluation")}
    n = sum(len(m["checksums"]) for m in meta.values())
    assert r.stdout.strip().startswith(f"verified 4 outputs: {n:,} files"), r.stdout
    assert all(set(m["checksums"]) == set(m["files"]) and m["digest_algorithm"] == "crc32" for m in meta.values())
    assert {"model.json", "weights.npz", "metrics.json"} <= set(meta["model"]["checksums"])
    line = one_line_error(run_cli("verify", tmp_path, *sched))
    assert "no astrodask output here" in line


def test_predict_on_a_catalogue_file_says_it_is_not_a_dataset(sched, small_csv, job, tmp_path):
    """The issue's M3: a Parquet error cut mid-sentence."""
    line = one_line_error(run_cli("predict", small_csv, job / "model", tmp_path / "pred", *sched))
    assert f"{small_csv} is a CSV file, not a dataset; convert it first (astrodask convert {small_csv} DATASET)" \
        in line
    line = one_line_error(run_cli("train", small_csv, "--model", tmp_path / "m", *sched))
    assert "is a CSV file, not a dataset" in line


def test_resume_sees_an_input_edited_with_the_same_size_and_modification_time(sched, small_csv, tmp_path):
    """The issue's S7: the fingerprint was size + mtime, so the stale dataset was kept."""
    src = tmp_path / "in.csv"
    shutil.copy(small_csv, src)
    ds = tmp_path / "ds"
    assert run_cli("convert", src, ds, *sched).returncode == 0
    st = src.stat()
    text = src.read_text()
    first = text.splitlines()[1].split(",")
    edited = first.copy()
    edited[3] = first[3][:-1] + ("1" if first[3][-1] != "1" else "2")  # u's last digit: same size
    src.write_text(text.replace(",".join(first), ",".join(edited), 1))
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert src.stat().st_size == st.st_size and src.stat().st_mtime_ns == st.st_mtime_ns
    line = one_line_error(run_cli("convert", src, ds, "--resume", *sched))
    assert "complete but was made from other inputs or options (differ: sources." in line


def test_no_stage_writes_inside_another_output_and_overwrite_writes_through_a_link(sched, small_csv, job, tmp_path):
    """The issue's M9 (predict/train inside a dataset, whose --overwrite was then refused) and S5 (a symlink DEST
    turned into a directory, its target keeping the old output)."""
    out = copy_job(job, tmp_path)
    for args in (("predict", out / "dataset", out / "model", out / "dataset" / "preds"),
                 ("train", out / "dataset", "--model", out / "dataset" / "model", "--epochs", EPOCHS)):
        line = one_line_error(run_cli(*args, *sched))
        assert f"is inside the astrodask dataset {out / 'dataset'}" in line, line
    assert not list((out / "dataset").glob("*preds*")) and not (out / "dataset" / "model").exists()
    link = tmp_path / "link"
    link.symlink_to(out / "dataset")
    small = tmp_path / "small.csv"
    small.write_text("".join(small_csv.read_text().splitlines(keepends=True)[:101]))
    r = run_cli("convert", small, link, "--overwrite", *sched)
    assert r.returncode == 0, r.stderr
    assert link.is_symlink() and json.loads((out / "dataset" / "_astrodask.json").read_text())["read"] == 100


@pytest.mark.realdata
def test_sweep_bands_without_a_measurement_are_imputed_and_flagged(sched, job, tmp_path):
    """The issue's S3: on the real sweep, 23 bands with MODELFLUX_IVAR = 0 became g = 25.11 and the like,
    imputed said 0, and a bright star (only g missing) was predicted GALAXY with p = 1.0."""
    from astropy.io import fits
    from support import SHARED_DATA

    sweep = SHARED_DATA / "sdss" / "calibObj-004510-4-star.fits.gz"
    if not sweep.is_file():
        pytest.skip(f"real sweep not found at {sweep}")
    with fits.open(sweep) as h:
        ivar = np.asarray(h[1].data["MODELFLUX_IVAR"])
    r = run_cli("convert", sweep, tmp_path / "sweep", "--no-cuts", *sched)
    assert r.returncode == 0, r.stderr
    assert "missing values (kept as nulls): u 3, g 11, i 2, z 7" in r.stdout, r.stdout
    r = run_cli("predict", tmp_path / "sweep", job / "model", tmp_path / "pred", *sched)
    assert r.returncode == 0, r.stderr
    p = pq.read_table(tmp_path / "pred").to_pandas()
    bits = ((ivar == 0) * (1 << np.arange(5))).sum(axis=1)  # u..z are bits 0..4 of imputed
    assert (p["imputed"].to_numpy() & 0b11111).tolist() == bits.tolist()
    assert int((p["imputed"] != 0).sum()) == 11
    meta = json.loads((tmp_path / "pred" / "_astrodask.json").read_text())
    assert meta["imputed_rows"] == 11
