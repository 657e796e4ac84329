"""Sizes, digests and rows in every manifest (storage.files.FileCheck, StagedOutput.commit), the readers' cheap
checks (storage.check_files), content fingerprints for --resume, and where an output may be written (through a
symbolic link, never inside another output). No cluster."""

from __future__ import annotations

import os
import zlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from astrodask.errors import AstrodaskError
from astrodask.storage import (
    DIGEST_ALGORITHM,
    FileCheck,
    Location,
    ManifestPart,
    ParquetStream,
    StagedOutput,
    check_files,
    file_check,
    fingerprint_file,
    manifest_checks,
    read_meta,
    write_parquet_atomic,
)


def _crc(path) -> str:
    return f"crc32:{zlib.crc32(open(path, 'rb').read()) & 0xFFFFFFFF:08x}"


def _table(n: int, start: int = 0) -> pa.Table:
    return pa.table({"obj_ID": pa.array(np.arange(start, start + n, dtype=np.uint64)),
                     "u": pa.array(np.linspace(15, 20, n).astype(np.float32))})


def test_a_parquet_stream_computes_size_digest_and_rows_while_writing(tmp_path):
    path = tmp_path / "p.parquet"
    check = write_parquet_atomic(_table(1000), Location.of(path))
    assert check == FileCheck(path.stat().st_size, _crc(path), 1000)
    assert file_check(path) == check  # read back whole, as `astrodask verify` does
    w = ParquetStream(Location.of(tmp_path / "q.parquet"), _table(1).schema)
    w.write(_table(10))
    w.write(_table(5, 10))
    w.close()
    assert w.check == FileCheck((tmp_path / "q.parquet").stat().st_size, _crc(tmp_path / "q.parquet"), 15)


def test_the_digest_sink_sees_exactly_the_bytes_written_to_an_object_store(tmp_path):
    """Object stores get the bytes through a wrapper that keeps their CRC-32 (memory:// stands in for s3://)."""
    import fsspec

    loc = Location.of("memory://a24-bucket/digest/p.parquet")
    check = write_parquet_atomic(_table(500), loc)
    data = fsspec.filesystem("memory").cat_file("/a24-bucket/digest/p.parquet")
    assert check == FileCheck(len(data), f"crc32:{zlib.crc32(data) & 0xFFFFFFFF:08x}", 500)


def test_commit_records_every_file_with_its_size_digest_and_rows(tmp_path):
    dest = tmp_path / "out"
    with StagedOutput(Location.of(dest), kind="dataset", fingerprint={"v": 1}) as out:
        part = write_parquet_atomic(_table(7), out.path("part-00000.parquet"))
        write_parquet_atomic(_table(3), out.path("_quarantine/part-00000.parquet"))  # no check given: read
        out.path("notes.json").write_text('{"a": 1}')
        stale = FileCheck(1, "crc32:00000000", 7)  # a writer's check whose size no longer matches: recomputed
        out.commit({}, [ManifestPart("part-00000.parquet", 7, "in.csv", part)], {"notes.json": stale})
    meta = read_meta(dest)
    assert meta["digest_algorithm"] == DIGEST_ALGORITHM == "crc32"
    checks = manifest_checks(meta)
    assert sorted(checks) == sorted(meta["files"]) == ["_quarantine/part-00000.parquet", "notes.json",
                                                       "part-00000.parquet"]
    for rel, c in checks.items():
        assert (c.size, c.digest) == ((dest / rel).stat().st_size, _crc(dest / rel)), rel
    assert checks["part-00000.parquet"].rows == 7 and checks["_quarantine/part-00000.parquet"].rows == 3
    assert checks["notes.json"].rows is None
    assert meta["parts"] == [{"file": "part-00000.parquet", "rows": 7, "source": "in.csv"}]


def test_readers_refuse_a_file_whose_size_or_rows_differ_from_the_manifest(tmp_path):
    dest = tmp_path / "ds"
    with StagedOutput(Location.of(dest), kind="dataset", fingerprint={"v": 1}) as out:
        parts = [ManifestPart(f"part-0000{k}.parquet", n, None,
                              write_parquet_atomic(_table(n, 100 * k), out.path(f"part-0000{k}.parquet")))
                 for k, n in enumerate((40, 41))]
        out.commit({}, parts)
    meta = read_meta(dest)
    files = [Location.of(dest / p.file) for p in parts]

    def found():
        return ({f: os.path.getsize(f.url) for f in files}, {f: pq.ParquetFile(f.url).metadata.num_rows for f in files})

    check_files(dest, files, meta, *found())  # as written: fine
    os.replace(dest / "part-00001.parquet", dest / "part-00000.parquet.tmp")
    (dest / "part-00000.parquet").write_bytes((dest / "part-00000.parquet.tmp").read_bytes())  # a copy of part 1
    os.replace(dest / "part-00000.parquet.tmp", dest / "part-00001.parquet")
    sizes, rows = found()
    with pytest.raises(AstrodaskError, match=r"part-00000\.parquet: 41 rows, the manifest records 40 \(the file "
                                             r"was replaced or damaged\); restore it or rerun"):
        check_files(dest, files, meta, sizes, rows)
    with pytest.raises(AstrodaskError, match=r"part-00000\.parquet: [\d,]+ bytes, the manifest records [\d,]+ "
                                             r"\(the file was replaced or damaged\)"):
        check_files(dest, files, meta, sizes, {})


def test_resume_fingerprints_follow_the_content_not_the_time_stamps(tmp_path):
    """The issue's S7: an edit that keeps the size and puts the modification time back is seen."""
    f = tmp_path / "in.csv"
    f.write_text("obj_ID,u\n1,23.87882\n")
    before = fingerprint_file(f)
    st = f.stat()
    f.write_text("obj_ID,u\n1,19.87882\n")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = fingerprint_file(f)
    assert before[0] == after[0] and before != after and after[1] == _crc(f)
    big = fingerprint_file(f, limit=4)  # above the hashing limit: size and both time stamps
    assert big[0] == f.stat().st_size and big[1] == f"mtime_ns:{f.stat().st_mtime_ns}" and big[2].startswith("ctime_ns:")


def _commit(dest, data=b"x", **kw):
    with StagedOutput(Location.of(dest), kind="dataset", fingerprint={"v": 1}, **kw) as out:
        out.path("part-0.parquet").write_bytes(data)
        out.commit({})
    return out


def test_overwrite_through_a_symbolic_link_replaces_its_target_and_keeps_the_link(tmp_path):
    """The issue's S5: the link became a directory and its target kept the old output."""
    real, link = tmp_path / "real_ds", tmp_path / "link"
    _commit(real, b"old")
    link.symlink_to("real_ds")
    out = _commit(link, b"new", overwrite=True)
    assert link.is_symlink() and os.readlink(link) == "real_ds"
    assert (real / "part-0.parquet").read_bytes() == b"new"
    assert out.dest == Location.of(real)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".link")]  # lock and staging beside the target


def test_no_output_is_written_inside_another_astrodask_output(tmp_path):
    _commit(tmp_path / "ds")
    with pytest.raises(AstrodaskError, match=r"ds/preds is inside the astrodask dataset .*ds; astrodask writes no "
                                             r"output into another .*write it beside it, e.g. .*/preds$"):
        _commit(tmp_path / "ds" / "preds")
    with pytest.raises(AstrodaskError, match="is inside the astrodask dataset"):
        _commit(tmp_path / "ds" / "deeper" / "model")
    assert not (tmp_path / "ds" / "preds").exists() and not (tmp_path / "ds" / "deeper").exists()
    _commit(tmp_path / "preds")  # beside it: fine
