"""Convert with real worker processes: fsspec ``file://`` URLs on a LocalCluster (blocks are read by the
workers, never by the client), and a CLI conversion killed with SIGKILL then resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from astrodask import ingest, schema
from astrodask.ingest import ConvertConfig

SDSS17 = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "sdss17.csv"
pytestmark = pytest.mark.cluster


def sample_frame(n: int) -> pd.DataFrame:
    """``n`` rows of the real SDSS17 file (repeated with fresh ids if needed), or synthetic rows."""
    if SDSS17.is_file():
        df = pd.read_csv(SDSS17, nrows=min(n, 99_999))
        df = pd.concat([df] * -(-n // len(df)), ignore_index=True).iloc[:n]
        return df.assign(obj_ID=np.arange(n, dtype=np.uint64) + 1237645879578460000)
    rng = np.random.default_rng(7)
    return pd.DataFrame({
        "obj_ID": np.arange(n, dtype=np.uint64) + 1237645879578460000,
        "alpha": rng.uniform(0, 360, n).round(8), "delta": rng.uniform(-20, 80, n).round(8),
        **{b: rng.uniform(14, 26, n).round(5) for b in schema.BANDS},
        "class": rng.choice(schema.CLASSES, n), "redshift": rng.uniform(0, 3, n).round(6),
        "MJD": rng.integers(51000, 59000, n),
    })


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "DASK_SCHEDULER_ADDRESS"}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def test_file_urls_on_a_local_cluster_are_read_by_the_workers(tmp_path, monkeypatch):
    from distributed import Client, LocalCluster

    df = sample_frame(3000)
    df.iloc[:2000].to_csv(tmp_path / "a.csv", index=False)
    pq.write_table(pa.Table.from_pandas(df.iloc[2000:], preserve_index=False), tmp_path / "b.parquet",
                   row_group_size=250)

    def no_rows_on_the_client(*a, **k):
        raise AssertionError("the client read data rows: blocks must be read on the workers")

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                      memory_limit="1GiB") as cluster, Client(cluster) as client:
        cfg = ConvertConfig((f"file://{tmp_path}/a.csv", (tmp_path / "b.parquet").as_uri()), str(tmp_path / "ds"),
                            block_size=64 * 1024, quiet=True)
        s = _run_with_client_guard(cfg, client, monkeypatch, no_rows_on_the_client)
    assert (s.read, s.written, s.quarantined) == (3000, 3000, 0)
    out = pq.read_table(tmp_path / "ds").to_pandas()
    assert out["obj_ID"].tolist() == df["obj_ID"].tolist()
    meta = json.loads((tmp_path / "ds" / "_astrodask.json").read_text())
    assert meta["sources"] == [f"file://{tmp_path}/a.csv", f"file://{tmp_path}/b.parquet"]


def _run_with_client_guard(cfg, client, monkeypatch, guard):
    """Run the conversion while the client's copies of the readers raise: the workers are separate (spawned)
    processes, and ``convert_block`` is sent to them by reference, so they use their own, unpatched copies."""
    import astrodask.ingest.tasks as blocks
    from astrodask.ingest.readers import csv, fits, parquet, sdss

    for module, name in ((csv, "_parse"), (csv, "_pieces"), (blocks, "check"), (fits, "read_fits_rows"),
                         (fits, "read_columns"), (sdss, "read_columns")):
        monkeypatch.setattr(module, name, guard)
    for reader in (csv.CsvReader, parquet.ParquetReader, fits.FitsReader, sdss.SdssReader):
        monkeypatch.setattr(reader, "read", guard)
    try:
        return ingest.run(cfg, client)
    finally:
        monkeypatch.undo()


def test_sdss_pair_is_read_by_the_workers(tmp_path, monkeypatch):
    """A specObj file and its photoPosPlate: the client reads headers only, the workers read the rows."""
    from distributed import Client, LocalCluster
    from support import sdss_fixtures as sf

    spec = sf.write_specobj(tmp_path / "specObj-dr17.fits", n=300, seed=8)
    photo = sf.photopos_for(tmp_path / "photoPosPlate-dr17.fits", spec, seed=8)

    def no_rows_on_the_client(*a, **k):
        raise AssertionError("the client read data rows: blocks must be read on the workers")

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                      memory_limit="1GiB") as cluster, Client(cluster) as client:
        cfg = ConvertConfig((str(spec.path),), str(tmp_path / "ds"), photometry=str(photo.path),
                            block_size=64 * 1024, quiet=True)
        s = _run_with_client_guard(cfg, client, monkeypatch, no_rows_on_the_client)
    assert s.read == 300 and s.read == s.written + s.quarantined + sum(s.filtered.values())
    assert len(list((tmp_path / "ds").glob("part-*.parquet"))) > 2


def _markers(stage: Path) -> int:
    return len(list((stage / ingest.BLOCKS_DIR).glob("*.json")))


def _group_gone(pgid: int, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_cli_conversion_killed_then_resumed(tmp_path):
    """SIGKILL the whole `astrodask convert` (client, scheduler and workers) mid-way: nothing is published;
    --resume skips the verified blocks and the result equals an uninterrupted conversion."""
    from distributed import Client

    src = tmp_path / "cat.csv"
    df = sample_frame(36_000)  # ~4 MB of CSV: ~60 blocks of 64 KiB
    df.loc[30_000, "obj_ID"] = df.loc[10, "obj_ID"]  # a cross-block duplicate, so the dedupe pass has work
    df.loc[20_000, "class"] = "BLOB"
    df.to_csv(src, index=False)
    dest, stage = tmp_path / "ds", tmp_path / ".ds.staging"
    cmd = [sys.executable, "-m", "astrodask.cli", "convert", str(src), str(dest), "--block-size", "64KiB",
           "--workers", "2", "--quiet"]
    with open(tmp_path / "first.log", "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_env(), cwd=tmp_path,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while proc.poll() is None and _markers(stage) < 4 and time.monotonic() < deadline:
            time.sleep(0.005)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the CLI and every worker it started
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)
        assert _group_gone(proc.pid), "worker processes survived the kill"
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "first.log").read_text()
    done = _markers(stage)
    n_blocks = len(ingest.plan_blocks(ConvertConfig((str(src),), str(dest), block_size=64 * 1024)))
    assert 4 <= done < n_blocks, f"killed after {done} of {n_blocks} blocks"
    assert not dest.exists(), "a killed conversion must not publish anything"

    r = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    skipped = int(r.stderr.split("resume: ")[1].split(" of ")[0])
    assert f"resume: {skipped} of {n_blocks} blocks already converted" in r.stderr
    assert skipped >= done  # a block's marker is written after its files: every marked block is kept
    assert "rows read 36,000  written 35,998  quarantined 2" in r.stdout
    assert not stage.exists() and not (tmp_path / ".ds.lock").exists()
    assert not [p for p in dest.rglob(".*")], "temporary files of the killed run were published"

    ref = tmp_path / "ref"
    with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=":0") as client:
        ingest.run(ConvertConfig((str(src),), str(ref), block_size=64 * 1024, quiet=True), client)
    names = sorted(p.relative_to(ref) for p in ref.rglob("*.parquet"))
    assert names == sorted(p.relative_to(dest) for p in dest.rglob("*.parquet"))
    for name in names:
        assert pq.read_table(dest / name).equals(pq.read_table(ref / name)), name
    a, b = (json.loads((d / "_astrodask.json").read_text()) for d in (dest, ref))
    for key in ("read", "written", "quarantined", "reasons", "parts", "columns"):
        assert a[key] == b[key], key
