"""Facts about S3 that astrodask's storage layer (``astrodask/storage.py``) relies on, each one measured against
a real S3 protocol server (moto on 127.0.0.1, ``tests/s3_server.py``).

Observed with moto 5.2.5, s3fs/fsspec 2026.9.0, botocore 1.43, pyarrow 26. Where moto differs from AWS the
docstring says so. Only what the design depends on is kept here (the whole job on S3 is ``tests/storage/test_s3.py``):

* the endpoint comes from ``AWS_ENDPOINT_URL`` alone, also in a fresh process (LocalCluster workers);
* conditional create (``If-None-Match: *``): of processes racing for one key exactly one wins -- the lock;
* conditional delete (``If-Match: ETag``): a key replaced since it was read is not deleted -- lock release and
  stale-lock takeover;
* anonymous reads of public-read objects (``anon=True``) -- per-URL ``{"anon": true}``;
* ``with fs.open(p, "wb")`` commits what was written even on an exception; ``autocommit=False`` + ``commit`` /
  ``discard`` is all or nothing -- ``ParquetStream``;
* a SIGKILLed writer leaves only an invisible pending multipart upload -- aborted when a job takes the output
  over (``storage.abort_uploads``);
* s3fs answers from stale cached listings -- ``Location._fresh()`` before every remote check or read;
* moto lists the prefixes of deleted keys in a versioned bucket (AWS does not) -- why hats-import's intermediate
  files stay off the object store.

Skipped when moto[server] or s3fs is not installed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("moto.server")
s3fs = pytest.importorskip("s3fs")
botocore = pytest.importorskip("botocore")

import fsspec
from support import s3_server as s3h  # the helper module (the fixture named s3_server is another object)

MB = 2**20
PY = sys.executable


def run_py(code: str, env: dict, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run a Python snippet in a fresh interpreter with ``env``; fail with its stderr if it fails."""
    p = subprocess.run([PY, "-c", textwrap.dedent(code), *args], env=env, capture_output=True, text=True,
                       timeout=timeout, stdin=subprocess.DEVNULL, check=False)
    assert p.returncode == 0, f"rc={p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr[-3000:]}"
    return p


def test_bucket_fixture_is_fresh_and_empty(s3_bucket):
    assert s3_bucket.keys() == [] and s3_bucket.uploads() == []
    s3_bucket.fs.pipe(s3_bucket.path("a/b.txt"), b"hi")
    assert s3_bucket.keys() == ["a/b.txt"]
    assert fsspec.open(s3_bucket.url("a/b.txt"), **s3_bucket.storage_options).open().read() == b"hi"


# ------------------------------------------------------------------------------------------ 1. endpoint


def test_1_endpoint_from_env_var_alone_in_subprocess(s3_bucket):
    s3_bucket.fs.pipe(s3_bucket.path("k"), b"v")
    out = run_py("""
        import sys, fsspec, s3fs
        print(fsspec.open(sys.argv[1]).open().read().decode())
        print(s3fs.S3FileSystem().s3.meta.endpoint_url)
    """, s3_bucket.env(), s3_bucket.url("k")).stdout.split()
    assert out == ["v", s3_bucket.endpoint]


# ------------------------------------------------------------------------------------------ 2. conditional writes


def test_2_race_processes_exactly_one_wins(s3_bucket, tmp_path):
    """4 fresh processes, started together on a go-file, each ``fs.pipe(path, data, mode="create")``."""
    go = tmp_path / "go"
    code = """
        import os, sys, time, fsspec
        fs = fsspec.filesystem("s3")
        fs.ls(sys.argv[1].split("/")[0])           # connect before the start line
        print("READY", flush=True)
        while not os.path.exists(sys.argv[2]):
            time.sleep(0.005)
        try:
            fs.pipe(sys.argv[1], sys.argv[3].encode(), mode="create")
            print("WIN")
        except Exception as e:
            print("LOSE", type(e).__name__)
    """
    procs = [subprocess.Popen([PY, "-c", textwrap.dedent(code), s3_bucket.path("lock"), str(go), str(i)],
                              env=s3_bucket.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(4)]
    for p in procs:  # all imported and connected
        assert p.stdout.readline().strip() == "READY"
    go.write_text("go")
    outs = [p.communicate(timeout=60) for p in procs]
    lines = [o[0].strip() for o in outs]
    assert sorted(lines) == ["LOSE FileExistsError"] * 3 + ["WIN"], outs
    winner = lines.index("WIN")
    assert s3_bucket.fs.cat(s3_bucket.path("lock")) == str(winner).encode()


def test_2_conditional_delete_only_of_the_object_read(s3_bucket):
    """``DeleteObject`` with ``If-Match: <ETag>`` deletes the key only while it is that object (AWS supports it on
    general purpose buckets too). s3fs has no API for it: ``fs.call_s3("delete_object", ..., IfMatch=etag)``; a
    mismatch is S3's 412 PreconditionFailed, which s3fs turns into a plain ``OSError(EINVAL)``."""
    fs, b = s3_bucket.fs, s3_bucket.name
    first = fs.pipe_file(s3_bucket.path("lock"), b"first", mode="create")["ETag"]
    fs.pipe_file(s3_bucket.path("lock"), b"second")  # another job's lock now
    with pytest.raises(OSError) as ei:
        fs.call_s3("delete_object", Bucket=b, Key="lock", IfMatch=first)
    assert type(ei.value) is OSError and ei.value.errno == 22
    assert ei.value.__cause__.response["Error"]["Code"] == "PreconditionFailed"  # botocore ClientError
    assert s3_bucket.client.get_object(Bucket=b, Key="lock")["Body"].read() == b"second"
    second = fs.info(s3_bucket.path("lock"), refresh=True)["ETag"]
    fs.call_s3("delete_object", Bucket=b, Key="lock", IfMatch=second)
    assert s3_bucket.keys() == []


# ------------------------------------------------------------------------------------------ 3. anonymous read


def anon_fs(endpoint):
    return s3fs.S3FileSystem(anon=True, endpoint_url=endpoint, skip_instance_cache=True)


def test_3_anonymous_read_public_object_acl(s3_bucket):
    c, b = s3_bucket.client, s3_bucket.name
    c.put_object(Bucket=b, Key="acl-later", Body=b"1")
    s3h.set_object_acl(s3_bucket.endpoint, b, "acl-later", client=c)   # put_object_acl(ACL="public-read")
    c.put_object(Bucket=b, Key="acl-on-put", Body=b"2", ACL="public-read")
    s3_bucket.fs.pipe(s3_bucket.path("acl-s3fs"), b"3", ACL="public-read")  # s3fs passes ACL through
    c.put_object(Bucket=b, Key="private", Body=b"secret")
    anon = anon_fs(s3_bucket.endpoint)
    assert anon.cat(s3_bucket.path("acl-later")) == b"1"
    assert anon.cat(s3_bucket.path("acl-on-put")) == b"2"
    assert anon.cat(s3_bucket.path("acl-s3fs")) == b"3"
    with anon.open(s3_bucket.path("acl-later"), "rb") as f:
        assert f.read() == b"1"
    for op in (anon.cat, anon.info, lambda p: anon.open(p, "rb")):
        with pytest.raises(PermissionError):
            op(s3_bucket.path("private"))
    with pytest.raises(FileNotFoundError):
        anon.cat(s3_bucket.path("missing"))


# ------------------------------------------------------------------------------------------ 6. abort / discard


def test_6_exception_inside_with_commits_what_was_written(s3_bucket):
    """``with fs.open(p, "wb")`` closes -- i.e. COMMITS -- on an exception too (fsspec __exit__ calls
    close()): the truncated data becomes a complete, visible object. No pending upload is left."""
    fs = s3_bucket.fs
    with pytest.raises(RuntimeError), fs.open(s3_bucket.path("big"), "wb", block_size=5 * MB) as f:
        f.write(b"a" * 12 * MB)  # uploaded as a part already (write >= block_size)
        f.write(b"b" * MB)       # buffered
        raise RuntimeError("writer failed half way")
    with pytest.raises(RuntimeError), fs.open(s3_bucket.path("small"), "wb") as f:
        f.write(b"a" * 100)
        raise RuntimeError("writer failed half way")
    assert sorted(s3_bucket.keys()) == ["big", "small"]
    assert fs.size(s3_bucket.path("big")) == 13 * MB
    assert s3_bucket.uploads() == []


def test_6_transaction_or_autocommit_false_is_all_or_nothing(s3_bucket):
    """The safe patterns: ``with fs.transaction:`` (files commit only if the block succeeds; on an
    exception they are discarded) or ``fs.open(p, "wb", autocommit=False)`` + explicit ``commit()``."""
    fs = s3_bucket.fs
    with pytest.raises(RuntimeError), fs.transaction:
        with fs.open(s3_bucket.path("tx-big"), "wb", block_size=5 * MB) as f:
            f.write(b"a" * 12 * MB)
        with fs.open(s3_bucket.path("tx-small"), "wb") as f:
            f.write(b"a")
        raise RuntimeError("fail before the transaction ends")
    assert s3_bucket.keys() == [] and s3_bucket.uploads() == []
    with fs.transaction:
        with fs.open(s3_bucket.path("tx-ok"), "wb") as f:
            f.write(b"ok")
        assert s3_bucket.keys() == []  # nothing visible until the transaction ends
    assert s3_bucket.keys() == ["tx-ok"]
    f = fs.open(s3_bucket.path("manual"), "wb", autocommit=False)
    f.write(b"m")
    f.close()
    assert s3_bucket.keys() == ["tx-ok"] and [u["Key"] for u in s3_bucket.uploads()] == ["manual"]
    f.commit()
    assert sorted(s3_bucket.keys()) == ["manual", "tx-ok"] and s3_bucket.uploads() == []


# ------------------------------------------------------------------------------------------ 7. killed writer


WRITER = """
    import sys, time, fsspec
    fs = fsspec.filesystem("s3")
    f = fs.open(sys.argv[1], "wb", block_size=5 * 2**20)
    for i in range(20):                        # 20 x 1 MB
        f.write(b"x" * 2**20)
        if len(f.parts or []) >= int(sys.argv[2]):
            print("PARTS", len(f.parts), flush=True)
            if sys.argv[3] == "sleep":
                time.sleep(120)
            raise SystemExit(3)                # exit with the file still open
"""


def test_7_sigkill_mid_upload_leaves_pending_multipart_upload(s3_bucket):
    """20 MB, block 5 MB, SIGKILL after 2 parts: no object is visible, one multipart upload stays
    pending with its 2 uploaded parts (stored and, on AWS, billed until aborted; use a lifecycle rule
    AbortIncompleteMultipartUpload). ``fs.clear_multipart_uploads(bucket)`` aborts them."""
    p = subprocess.Popen([PY, "-c", textwrap.dedent(WRITER), s3_bucket.path("big.bin"), "2", "sleep"],
                         env=s3_bucket.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().split() == ["PARTS", "2"]
        os.kill(p.pid, signal.SIGKILL)
        assert p.wait(timeout=30) == -signal.SIGKILL
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert s3_bucket.keys() == []
    ups = s3_bucket.uploads()
    assert [u["Key"] for u in ups] == ["big.bin"]
    parts = s3_bucket.client.list_parts(Bucket=s3_bucket.name, Key="big.bin", UploadId=ups[0]["UploadId"])["Parts"]
    assert [x["Size"] for x in parts] == [5 * MB, 5 * MB]
    assert s3_bucket.fs.list_multipart_uploads(s3_bucket.name)[0]["Key"] == "big.bin"
    s3_bucket.fs.clear_multipart_uploads(s3_bucket.name)
    assert s3_bucket.uploads() == [] and s3_bucket.keys() == []


# ------------------------------------------------------------------------------------------ 8. listing cache


def _other_process_writes(bucket, key, data=b"new"):
    run_py("""
        import sys, fsspec
        fsspec.filesystem("s3").pipe(sys.argv[1], sys.argv[2].encode())
    """, bucket.env(), bucket.path(key), data.decode())


def test_8_cached_listing_hides_other_writers(s3_bucket):
    """After ``ls`` of a prefix, s3fs answers ls/glob/exists/info/isfile/cat/open for paths in it
    from the listing cache: a key written by another process is invisible (FileNotFoundError even
    for cat/open, since both HEAD first and HEAD consults the cache). ``find`` re-lists. Fixes:
    ``ls(..., refresh=True)``, ``fs.invalidate_cache(path)`` / ``invalidate_cache()``."""
    fs = s3_bucket.fs
    d, new = s3_bucket.path("d"), s3_bucket.path("d/new")
    fs.pipe(s3_bucket.path("d/old"), b"1")
    assert fs.ls(d) == [s3_bucket.path("d/old")]
    _other_process_writes(s3_bucket, "d/new")
    assert sorted(s3_bucket.keys()) == ["d/new", "d/old"]  # the server has it
    assert fs.ls(d) == [s3_bucket.path("d/old")]
    assert fs.glob(s3_bucket.path("d/*")) == [s3_bucket.path("d/old")]
    assert not fs.exists(new) and not fs.isfile(new)
    for op in (fs.info, fs.cat, lambda p: fs.open(p, "rb")):
        with pytest.raises(FileNotFoundError):
            op(new)
    assert new in fs.find(s3_bucket.path(""))  # find does a fresh recursive listing
    assert fs.ls(d, refresh=True) == [new, s3_bucket.path("d/old")]
    assert fs.cat(new) == b"new"
    # deletions by others are hidden the same way, until invalidated
    run_py("import sys, fsspec; fsspec.filesystem('s3').rm(sys.argv[1])", s3_bucket.env(), s3_bucket.path("d/old"))
    assert fs.exists(s3_bucket.path("d/old"))
    with pytest.raises(FileNotFoundError):
        fs.cat(s3_bucket.path("d/old"))
    fs.invalidate_cache(d)
    assert fs.ls(d) == [new] and not fs.exists(s3_bucket.path("d/old"))


# ------------------------------------------------------------------------------------------ 9. moto and versioning


def test_9_moto_versioned_bucket_lists_prefixes_of_deleted_keys(s3_bucket):
    """moto differs from AWS: in a versioned bucket a prefix whose keys were all deleted (delete markers) is still
    listed as a CommonPrefix, so a directory walk (hats' catalogue size estimate) meets a "directory" whose
    ``info`` is FileNotFoundError. astrodask keeps hats-import's intermediate files on a local disk."""
    c, b = s3_bucket.client, s3_bucket.name
    c.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled"})
    c.put_object(Bucket=b, Key="t/a/b/c", Body=b"x")
    c.put_object(Bucket=b, Key="t/keep", Body=b"x")
    c.delete_object(Bucket=b, Key="t/a/b/c")
    r = c.list_objects_v2(Bucket=b, Prefix="t/", Delimiter="/")
    assert [p["Prefix"] for p in r.get("CommonPrefixes", [])] == ["t/a/"]  # AWS: []
    assert [o["Key"] for o in r["Contents"]] == ["t/keep"]
    for v in c.list_object_versions(Bucket=b).get("Versions", []) + \
            c.list_object_versions(Bucket=b).get("DeleteMarkers", []):  # let the fixture delete the bucket
        c.delete_object(Bucket=b, Key=v["Key"], VersionId=v["VersionId"])
