"""Locks and staged outputs on a local disk (storage.lock, storage.output), without a cluster: exclusive
creation, a dead holder's lock taken over, a live one refused; staging, commit, overwrite, resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from astrodask.errors import AstrodaskError
from astrodask.storage import META, STAGING_MARKER, SUCCESS, Location, Lock, ManifestPart, StagedOutput, read_meta


def _dead_pid() -> int:
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True, timeout=60).stdout)


def test_a_lock_is_exclusive_and_released(tmp_path):
    loc = Location.of(tmp_path / ".out.lock")
    a, b = Lock(loc, "out"), Lock(loc, "out")
    a.acquire()
    assert json.loads(loc.read_text())["pid"] == os.getpid()
    with pytest.raises(AstrodaskError, match=r"another job \(pid \d+ on .*\) is writing out"):
        b.acquire()
    a.release()
    assert not loc.exists()
    b.acquire()  # free again
    b.release()


def test_a_dead_holders_lock_is_taken_over(tmp_path):
    import socket

    loc = Location.of(tmp_path / ".out.lock")
    loc.write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname(), "token": "x", "time": 0}))
    lock = Lock(loc, "out")
    lock.acquire()
    assert json.loads(loc.read_text())["token"] == lock.token
    lock.release()


def test_a_lock_of_another_host_is_refused_with_how_to_remove_it(tmp_path):
    loc = Location.of(tmp_path / ".out.lock")
    loc.write_text(json.dumps({"pid": 1, "host": "elsewhere", "token": "x", "time": 0}))
    with pytest.raises(AstrodaskError, match=f"delete {loc}"):
        Lock(loc, "out").acquire()


def _write(dest, name="part-0.parquet", data=b"data", fingerprint=None, **kw) -> StagedOutput:
    with StagedOutput(Location.of(dest), kind="dataset", fingerprint=fingerprint or {"v": 1}, **kw) as out:
        if out.done:
            return out
        assert out.staging.name == f".{dest.name}.staging" and (out.staging / STAGING_MARKER).exists()
        assert not dest.exists() or read_meta(dest)  # the destination is only ever a complete output
        out.path(name).write_bytes(data)
        out.commit({"rows": 1}, [ManifestPart(name, 1)])
    return out


def test_staged_output_commits_whole_with_the_manifest_and_success_last(tmp_path):
    dest = tmp_path / "out"
    out = _write(dest)
    assert out.committed and not out.staging.exists() and not (tmp_path / ".out.lock").exists()
    meta = read_meta(dest)
    assert meta["kind"] == "dataset" and meta["files"] == ["part-0.parquet"] and meta["fingerprint"] == {"v": 1}
    assert meta["parts"] == [{"file": "part-0.parquet", "rows": 1}]
    assert sorted(p.name for p in dest.iterdir()) == sorted([META, SUCCESS, "part-0.parquet"])


def test_an_existing_output_needs_overwrite_or_resume(tmp_path):
    dest = tmp_path / "out"
    _write(dest)
    with pytest.raises(AstrodaskError, match="already exists"):
        _write(dest)
    assert _write(dest, resume=True).done  # the same fingerprint: kept as it is
    with pytest.raises(AstrodaskError, match=r"differ: v"):
        _write(dest, fingerprint={"v": 2}, resume=True)
    _write(dest, name="part-1.parquet", data=b"new", overwrite=True)
    assert sorted(p.name for p in dest.iterdir()) == sorted([META, SUCCESS, "part-1.parquet"])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.old")]


def test_overwrite_refuses_a_directory_with_a_file_astrodask_did_not_write(tmp_path):
    dest = tmp_path / "out"
    _write(dest)
    (dest / "notes.txt").write_text("mine")
    with pytest.raises(AstrodaskError, match="holds notes.txt, which astrodask did not write"):
        _write(dest, overwrite=True)
    assert (dest / "notes.txt").read_text() == "mine"
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    with pytest.raises(AstrodaskError, match="was not written by astrodask"):
        _write(foreign, overwrite=True)


def test_an_interrupted_output_resumes_from_its_staging_area_or_starts_again(tmp_path):
    dest = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        with StagedOutput(Location.of(dest), kind="dataset", fingerprint={"v": 1}) as out:
            out.path("part-0.parquet").write_bytes(b"half")
            raise KeyboardInterrupt
    staging = tmp_path / ".out.staging"
    assert (staging / "part-0.parquet").exists() and not dest.exists()
    assert not (tmp_path / ".out.lock").exists()  # the lock is released on the way out
    with pytest.raises(AstrodaskError, match="other inputs or options"):
        _write(dest, fingerprint={"v": 2}, resume=True)
    with StagedOutput(Location.of(dest), resume=True, kind="dataset", fingerprint={"v": 1}) as out:
        assert out.path("part-0.parquet").read_bytes() == b"half"  # kept for the resumed run
    with StagedOutput(Location.of(dest), kind="dataset", fingerprint={"v": 1}) as out:
        assert not out.path("part-0.parquet").exists()  # without --resume: started again


def test_the_current_directory_and_inputs_are_never_a_destination(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(AstrodaskError, match="current directory"):
        _write(tmp_path.parent / tmp_path.name, overwrite=True)
    inp = tmp_path / "out" / "cat.csv"
    inp.parent.mkdir()
    inp.write_text("x")
    with pytest.raises(AstrodaskError, match="contains the input"):
        with StagedOutput(Location.of(tmp_path / "out"), overwrite=True, kind="dataset", inputs=(str(inp),)):
            pass
