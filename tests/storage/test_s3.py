"""astrodask on an object store: every stage from ``s3://`` to ``s3://`` against a real S3 protocol server.

The server is moto's ``ThreadedMotoServer`` on 127.0.0.1 (``tests/s3_server.py``), started once per session; the
jobs are real ``astrodask`` processes (their own LocalCluster, or the module's ``dask scheduler`` + 2 ``dask
worker`` processes). What each test proves:

1. ``astrodask run s3://B/in/sdss17.csv --out s3://B/run1`` with only ``AWS_ENDPOINT_URL`` (and dummy keys) in
   the environment gives the holdout metrics, evaluation and predictions of the same job run on local disk;
   every output has ``_SUCCESS`` and ``_astrodask.json``, no lock, staging marker or pending upload is left.
2. ``--storage-options`` (endpoint and credentials) alone, without any AWS_* variable, works for every command
   (convert, train, predict, evaluate, run) on a separately started scheduler + workers that never saw the
   endpoint; the credentials are written into no output.
3. A predict SIGKILLed (process group, LocalCluster included) while it writes parts to S3: while it is dead the
   output is refused by every reader (no ``_SUCCESS``); ``--resume`` finishes it and it equals an undisturbed
   predict row for row; the multipart uploads the kill left pending are aborted by the resume.
4. ``--overwrite`` on S3 refuses a prefix holding a user's object (intact) and an astrodask output with a user's
   object put inside; it replaces an astrodask output leaving no object of the old one; ``--resume`` on finished
   outputs succeeds and writes or deletes nothing (object versions unchanged).
5. Two jobs racing for one S3 output: exactly one proceeds, the other stops with one line naming the winner's
   pid and lock (the lock is a conditional PUT); four processes racing for the lock itself: exactly one wins; a
   dead job's lock is taken over, but only the very object judged stale is deleted (conditional DELETE).
6. An anonymous read of a public-read input (``{"s3://PUBLIC": {"anon": true}}`` in ``--storage-options``)
   while the outputs are written with credentials given for their bucket; a private object is refused in one
   line, and no credentials at all give one line saying where to put them.
7. Outputs whose writer was killed (a convert, a train) are refused in one line by every reader (open_dataset,
   train, predict); the killed convert resumes to the undisturbed dataset.
8. ``predict --format hats`` to S3: a HATS catalogue that lsdb opens, with every row.
9. The instants a kill only hits by chance, made exactly (in-process): an overwrite killed while deleting the
   old output and a commit killed between the manifest and ``_SUCCESS`` are refused by readers and resume clean.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("moto.server", reason="needs moto[server] (pip install 'astrodask[test]')")
pytest.importorskip("s3fs", reason="needs s3fs (pip install 'astrodask[s3]')")

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from support import ROOT
from support import s3_server as s3h  # the helper module (the fixture named s3_server is another object)
from support.processes import kill_group, wait_until

pytestmark = pytest.mark.cluster


SDSS17 = ROOT.parent / "shared" / "data" / "sdss17.csv"
SAMPLE = ROOT / "data" / "sdss_sample.csv"
SOURCE = SDSS17 if SDSS17.is_file() else SAMPLE
CLI = [sys.executable, "-m", "astrodask.cli"]
EPOCHS = ["--epochs", "20", "--patience", "0"]
LOCAL2 = ["--workers", "2", "--threads", "1", "-q"]
SMALL_ROWS = 4000  # in/small.csv: the stage tests, and (8 KiB blocks) the ~50-partition dataset
BLOCK = "8KiB"
KEY_ID = "AKIDASTRODASKTEST"
SECRET = f"astrodask-secret-{uuid.uuid4().hex}"  # searched for in every object written with it
_PROGRESS = re.compile(r"\r|\d+%\|")


# ------------------------------------------------------------------------------------------------ helpers


class Budget:
    """A test's time bound: every wait below takes its timeout from what is left of it."""

    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self, cap: float = 600.0) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            pytest.fail("the test ran over its time budget")
        return min(left, cap)


def message_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.strip() and not _PROGRESS.search(ln)
            and not ln.startswith("[astrodask]")]


def run_cli(*args, env: dict, timeout: float, cwd=None) -> subprocess.CompletedProcess:
    r = subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout,
                       stdin=subprocess.DEVNULL, cwd=cwd, check=False)
    assert "Traceback" not in r.stderr, r.stderr
    return r


def ok(r: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert r.returncode == 0, f"exit {r.returncode}:\n{r.stderr[-3000:]}"
    return r


def one_line_error(r: subprocess.CompletedProcess) -> str:
    lines = message_lines(r.stderr)
    assert r.returncode == 1 and len(lines) == 1 and lines[0].startswith("astrodask: error: "), \
        f"exit {r.returncode}, expected one error line:\n{r.stderr[-3000:]}"
    return lines[0]


@dataclass
class Job:
    """A CLI process in its own process group (so it and its LocalCluster die together)."""

    proc: subprocess.Popen
    err: Path

    @classmethod
    def start(cls, args, env: dict, cwd: Path, name: str) -> Job:
        err = cwd / f"{name}.stderr"
        with open(err, "wb") as e:
            proc = subprocess.Popen([*CLI, *map(str, args)], stdout=subprocess.DEVNULL, stderr=e,
                                    stdin=subprocess.DEVNULL, env=env, cwd=cwd, start_new_session=True)
        return cls(proc, err)

    @property
    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.proc.args} did not finish in {timeout:.0f} s:\n{self.stderr}") from None

    def kill(self) -> None:
        """SIGKILL the whole process group (the CLI and its LocalCluster's workers) and wait it out."""
        kill_group(self.proc)


@dataclass
class S3:
    """The module's bucket on the session's moto server (versioned: every PUT and DELETE leaves a trace)."""

    endpoint: str
    bucket: str
    client: object

    def url(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{key}"

    def env(self) -> dict:
        """Endpoint and dummy credentials from the environment only (AWS_ENDPOINT_URL)."""
        env = s3h.s3_env(self.endpoint)
        for k in ("ASTRODASK_DEBUG", "DASK_SCHEDULER_ADDRESS"):
            env.pop(k, None)
        return env

    def bare_env(self) -> dict:
        """No endpoint, no credentials, no region, no ~/.aws, no instance metadata: only --storage-options."""
        env = self.env()
        for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
                  "AWS_REGION"):
            env.pop(k, None)
        return env

    def options(self, **extra) -> dict:
        return {"endpoint_url": self.endpoint, "key": KEY_ID, "secret": SECRET,
                "client_kwargs": {"region_name": s3h.REGION}, **extra}

    def so(self, **extra) -> list[str]:
        return ["--storage-options", json.dumps(self.options(**extra))]

    def keys(self, prefix: str) -> list[str]:
        return s3h.list_keys(self.endpoint, self.bucket, prefix, client=self.client)

    def objects(self, prefix: str) -> dict:
        """key -> (ETag, LastModified) of the current objects under ``prefix``."""
        out = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for o in page.get("Contents", []):
                out[o["Key"]] = (o["ETag"], o["LastModified"])
        return out

    def versions(self, prefix: str) -> tuple[set, set]:
        """(object versions, delete markers) under ``prefix``: any PUT or DELETE adds one."""
        v, d = set(), set()
        for page in self.client.get_paginator("list_object_versions").paginate(Bucket=self.bucket, Prefix=prefix):
            v |= {(o["Key"], o["VersionId"]) for o in page.get("Versions", [])}
            d |= {(o["Key"], o["VersionId"]) for o in page.get("DeleteMarkers", [])}
        return v, d

    def uploads(self, prefix: str) -> list[dict]:
        return [u for u in s3h.list_multipart_uploads(self.endpoint, self.bucket, client=self.client)
                if u["Key"].startswith(prefix)]

    def get(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def put(self, key: str, data: bytes, **kw) -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data, **kw)

    def parts(self, prefix: str) -> list[str]:
        return sorted(k for k in self.keys(prefix.rstrip("/") + "/") if re.search(r"/part-\d+\.parquet$", k))

    def table(self, prefix: str) -> pa.Table:
        """Every ``part-*.parquet`` under ``prefix``, in name order (fetched with boto, no s3fs cache)."""
        files = self.parts(prefix)
        assert files, f"no part files under {prefix}"
        return pa.concat_tables([pq.read_table(pa.BufferReader(self.get(k))) for k in files])

    def json(self, key: str):
        return json.loads(self.get(key))


def assert_clean_output(s3: S3, prefix: str) -> None:
    """A committed output on S3: _SUCCESS and the manifest, no staging marker inside, no lock beside it, nothing
    under temporary names, no pending multipart upload; the manifest lists exactly the files there."""
    prefix = prefix.rstrip("/")
    keys = s3.keys(prefix + "/")
    rel = {k[len(prefix) + 1:] for k in keys}
    assert "_SUCCESS" in rel and "_astrodask.json" in rel, f"{prefix} not committed: {sorted(rel)[:10]}"
    assert "_astrodask.staging.json" not in rel, f"staging marker left in {prefix}"
    parent, name = prefix.rsplit("/", 1) if "/" in prefix else ("", prefix)
    lock = f"{parent}/.{name}.lock" if parent else f".{name}.lock"
    assert s3.keys(lock) == [], f"lock {lock} left beside {prefix}"
    assert not [r for r in rel if ".tmp" in r or r.startswith(("_hats_tmp", "_blocks"))], sorted(rel)
    assert s3.uploads(prefix + "/") == [], f"pending multipart uploads under {prefix}"
    meta = s3.json(f"{prefix}/_astrodask.json")
    assert set(meta["files"]) | {"_SUCCESS", "_astrodask.json"} == rel, "manifest and objects differ"


def assert_report(s3: S3, prefix: str) -> None:
    """A report page on S3 whose every figure is a PNG beside it."""
    page = s3.get(f"{prefix}/index.html").decode()
    pngs = [k for k in s3.keys(prefix + "/") if k.endswith(".png") and "/" not in k[len(prefix) + 1:]]
    assert len(pngs) >= 3, pngs
    for k in pngs:
        assert s3.get(k)[:8] == b"\x89PNG\r\n\x1a\n" and k.rsplit("/", 1)[1] in page, k


def assert_same_predictions(s3: S3, got: str, want: str) -> None:
    a, b = s3.parts(got), s3.parts(want)
    assert [k.rsplit("/", 1)[1] for k in a] == [k.rsplit("/", 1)[1] for k in b], "partition files differ"
    ta, tb = s3.table(got), s3.table(want)
    assert ta.num_rows == tb.num_rows and ta.equals(tb), "predictions differ from the undisturbed run"


def make_small_csv(path: Path, rows: int) -> Path:
    with open(SOURCE) as src, open(path, "w") as dst:
        for k, line in enumerate(src):
            if k > rows:
                break
            dst.write(line)
    return path


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def s3(s3_server) -> S3:
    bucket = s3h.create_bucket(s3_server.endpoint, client=s3_server.client)
    s3_server.client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return S3(s3_server.endpoint, bucket, s3_server.client)


@pytest.fixture(scope="module")
def inputs(s3, tmp_path_factory) -> dict:
    """The catalogue at s3://B/in/sdss17.csv and a 4,000-row slice of it at s3://B/in/small.csv."""
    d = tmp_path_factory.mktemp("s3_inputs")
    small = make_small_csv(d / "small.csv", SMALL_ROWS)
    s3.put("in/sdss17.csv", SOURCE.read_bytes())
    s3.put("in/small.csv", small.read_bytes())
    return {"sdss17": SOURCE, "small": small, "dir": d}


@pytest.fixture(scope="module")
def sched(dask_cluster) -> list[str]:
    return ["--scheduler", dask_cluster.address, "-q"]


@pytest.fixture(scope="module")
def job(s3, inputs, sched, tmp_path_factory) -> dict:
    """The whole job run twice, undisturbed: from s3:// to s3:// on its own LocalCluster (endpoint from
    AWS_ENDPOINT_URL only, which the workers inherit), and from the local file to a local directory (on the
    module's cluster: training gives the same model whatever the number of workers). Neither draws its reports:
    the options test below writes and checks a model's and an evaluation's report on S3."""
    d = tmp_path_factory.mktemp("s3_job")
    budget = Budget(420)
    t0 = time.monotonic()
    remote = ok(run_cli("run", s3.url("in/sdss17.csv"), "--out", s3.url("run1"), *EPOCHS, "--no-report", *LOCAL2,
                        env=s3.env(), timeout=budget.left(), cwd=d))
    t_remote = time.monotonic() - t0
    local = ok(run_cli("run", inputs["sdss17"], "--out", d / "local", *EPOCHS, "--no-report", *sched, env=s3.bare_env(),
                       timeout=budget.left(), cwd=d))
    return {"remote": remote, "local": local, "local_out": d / "local", "seconds": t_remote}


@pytest.fixture(scope="module")
def many(s3, inputs, job, sched) -> dict:
    """in/small.csv converted with 8 KiB blocks (~50 partitions) and scored with the job's model, undisturbed
    (on the module's cluster, with --storage-options)."""
    budget = Budget(240)
    ok(run_cli("convert", s3.url("in/small.csv"), s3.url("many"), "--block-size", BLOCK, *sched, *s3.so(),
               env=s3.bare_env(), timeout=budget.left()))
    ok(run_cli("predict", s3.url("many"), s3.url("run1/model"), s3.url("pred_ref"), *sched, *s3.so(),
               env=s3.bare_env(), timeout=budget.left()))
    n = len(s3.parts("many"))
    assert n >= 30, f"only {n} partitions: the kill tests need a predict that takes a while"
    return {"dataset": "many", "pred": "pred_ref", "parts": n}


# ------------------------------------------------------------------------------------------------ 1. s3 -> s3


def test_whole_job_s3_to_s3_matches_the_local_run(s3, job, capsys):
    """The acceptance run of issue #15: the same holdout metrics (and evaluation, and predictions row for row) as
    the local run, every output committed and clean."""
    out = job["local_out"]
    remote_lines = [ln for ln in job["remote"].stdout.splitlines() if ln.startswith(("holdout:", "all rows:"))]
    local_lines = [ln for ln in job["local"].stdout.splitlines() if ln.startswith(("holdout:", "all rows:"))]
    assert len(remote_lines) == 2 and remote_lines == local_lines, (remote_lines, local_lines)
    h_remote = s3.json("run1/model/metrics.json")
    h_local = json.loads((out / "model" / "metrics.json").read_text())
    for k in ("n", "accuracy", "macro_f1", "confusion_matrix", "per_class"):
        assert h_remote[k] == h_local[k], k
    assert h_remote["log_loss"] == pytest.approx(h_local["log_loss"], rel=1e-9)
    e_remote, e_local = s3.json("run1/evaluation/metrics.json"), json.loads((out / "evaluation" / "metrics.json")
                                                                             .read_text())
    assert e_remote["accuracy"] == e_local["accuracy"] and e_remote["n"] == e_local["n"]
    assert json.loads(s3.get("run1/evaluation/holdout_metrics.json"))["accuracy"] == h_local["accuracy"]
    # predictions: the same rows, the same classes and probabilities
    local_pred = pa.concat_tables([pq.read_table(p) for p in sorted((out / "predictions").glob("part-*.parquet"))])
    assert s3.table("run1/predictions").equals(local_pred)
    ds = s3.json("run1/dataset/_astrodask.json")
    assert ds["read"] == ds["written"] + ds["quarantined"] and ds["sources"] == [s3.url("in/sdss17.csv")]
    for stage in ("dataset", "model", "predictions", "evaluation"):
        assert_clean_output(s3, f"run1/{stage}")
    assert sorted({k.split("/")[1] for k in s3.keys("run1/")}) == ["dataset", "evaluation", "model", "predictions"], \
        "the job lock or another object was left in run1/"
    with capsys.disabled():
        print(f"\n[s3] whole job s3->s3 on {SOURCE.name} ({h_remote['n']:,} holdout rows): {job['seconds']:.1f} s; "
              f"holdout accuracy {h_remote['accuracy']:.4f}")


# ------------------------------------------------------------------------------------------------ 2. options


def test_storage_options_alone_on_a_separate_cluster_for_every_command(s3, inputs, job, sched, dask_cluster):
    """No AWS_* variable anywhere (the CLI's environment has none; the workers were started without them): the
    endpoint and credentials come from --storage-options only, travel with the tasks, and are written nowhere."""
    budget = Budget(300)
    with dask_cluster.client() as c:
        seen = c.run(lambda: {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID")})
    assert all(v == {"AWS_ENDPOINT_URL": None, "AWS_ACCESS_KEY_ID": None} for v in seen.values()), seen
    env, so = s3.bare_env(), s3.so()
    assert not [k for k in env if k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")]
    runs = [
        ok(run_cli("convert", s3.url("in/small.csv"), s3.url("opt/dataset"), *sched, *so, env=env,
                   timeout=budget.left())),
        ok(run_cli("train", s3.url("opt/dataset"), "--model", s3.url("opt/model"), "--epochs", "5", *sched, *so,
                   env=env, timeout=budget.left())),
        ok(run_cli("predict", s3.url("opt/dataset"), s3.url("opt/model"), s3.url("opt/predictions"), *sched, *so,
                   env=env, timeout=budget.left())),
        ok(run_cli("evaluate", s3.url("opt/predictions"), "--out", s3.url("opt/evaluation"), *sched, *so, env=env,
                   timeout=budget.left())),
        ok(run_cli("evaluate", s3.url("opt/predictions"), *sched, *so, env=env, timeout=budget.left())),
        ok(run_cli("run", s3.url("in/small.csv"), "--out", s3.url("opt/job"), "--epochs", "5", "--no-report", *sched,
                   *so, env=env, timeout=budget.left())),
    ]
    assert_report(s3, "opt/model/report")
    assert_report(s3, "opt/evaluation")  # its dataset's magnitudes and its model read with the options too
    assert f"rows read {SMALL_ROWS:,}  written {SMALL_ROWS:,}" in runs[0].stdout
    assert "accuracy" in runs[4].stdout
    for p in ("opt/dataset", "opt/model", "opt/predictions", "opt/evaluation",
              *(f"opt/job/{s}" for s in ("dataset", "model", "predictions", "evaluation"))):
        assert_clean_output(s3, p)
    assert s3.table("opt/predictions").num_rows == SMALL_ROWS
    for r in runs:
        assert SECRET not in r.stdout + r.stderr
    leaked = [k for k in s3.keys("opt/") if SECRET.encode() in s3.get(k) or KEY_ID.encode() in s3.get(k)]
    assert not leaked, f"credentials written into {leaked}"


# ------------------------------------------------------------------------------------------------ 3. killed predict


def test_predict_killed_mid_way_on_s3_resumes_to_the_undisturbed_output(s3, many, sched, tmp_path, capsys):
    budget = Budget(300)
    out = "pred_killed"
    argv = ["predict", s3.url(many["dataset"]), s3.url("run1/model"), s3.url(out), *LOCAL2]
    job = Job.start(argv, s3.env(), tmp_path, "predict-killed")
    try:
        wait_until(lambda: len(s3.parts(out)) >= 3, job, "the first prediction parts on S3", budget.left(300),
                   poll=0.05)
    finally:
        job.kill()
    done = len(s3.parts(out))
    assert done < many["parts"], f"predict was not mid-way when killed ({done} of {many['parts']} parts)"
    pending = s3.uploads(out + "/")

    # while it is dead: parts are there, but nothing reads them as a complete output
    assert s3.keys(f"{out}/_SUCCESS") == [] and s3.keys(f"{out}/_astrodask.staging.json")
    from astrodask.dataset import open_dataset
    from astrodask.errors import AstrodaskError
    from astrodask.storage import Location

    with pytest.raises(AstrodaskError, match="incomplete predictions"):
        open_dataset(Location.of(s3.url(out), s3.options()), kind="predictions")
    line = one_line_error(run_cli("evaluate", s3.url(out), *sched, *s3.so(), env=s3.bare_env(),
                                  timeout=budget.left()))
    assert "incomplete predictions" in line and "--resume" in line, line
    # the lock of the dead job is still there: a rerun without --resume on another host would be told so
    assert s3.keys(f".{out}.lock")

    again = run_cli(*argv[:4], "--workers", "1", "-q", "--resume", env=s3.env(), timeout=budget.left())
    ok(again)
    m = re.search(r"resume: (\d+) of (\d+) partitions already scored", again.stderr)
    assert m and int(m.group(1)) >= done and int(m.group(2)) == many["parts"], again.stderr
    assert_clean_output(s3, out)  # includes: no pending multipart upload left under it
    assert_same_predictions(s3, out, many["pred"])
    with capsys.disabled():
        print(f"\n[s3] predict killed at {done}/{many['parts']} parts; pending multipart uploads left by the kill: "
              f"{len(pending)} (aborted by the resume)")


# ------------------------------------------------------------------------------------------------ 4. overwrite


def test_overwrite_on_s3_replaces_only_astrodask_outputs(s3, many, job, sched):
    budget = Budget(240)
    env, so = s3.bare_env(), s3.so()
    predict = ["predict", s3.url("run1/dataset"), s3.url("run1/model")]
    # a prefix holding a user's object: refused, the object intact
    s3.put("user/notes.txt", b"mine")
    before = s3.objects("user/")
    line = one_line_error(run_cli(*predict, s3.url("user"), "--overwrite", *sched, *so, env=env,
                                  timeout=budget.left()))
    assert "not written by astrodask" in line, line
    assert s3.objects("user/") == before and s3.get("user/notes.txt") == b"mine"
    assert s3.keys(".user.lock") == []

    # an astrodask output (the ~50-part predictions), replaced by one of 8 parts: nothing of the old one remains
    ok(run_cli("predict", s3.url(many["dataset"]), s3.url("run1/model"), s3.url("ow"), *sched, *so, env=env,
               timeout=budget.left()))
    old = s3.objects("ow/")
    old_id = s3.json("ow/_astrodask.json")["output_id"]
    assert len(s3.parts("ow")) == many["parts"]
    # ... but first with a user's object inside it: refused naming it, nothing touched
    s3.put("ow/notes.txt", b"mine")
    line = one_line_error(run_cli(*predict, s3.url("ow"), "--overwrite", *sched, *so, env=env,
                                  timeout=budget.left()))
    assert "notes.txt" in line, line
    assert {k: v for k, v in s3.objects("ow/").items() if k != "ow/notes.txt"} == old
    s3.client.delete_object(Bucket=s3.bucket, Key="ow/notes.txt")
    ok(run_cli(*predict, s3.url("ow"), "--overwrite", *sched, *so, env=env, timeout=budget.left()))
    assert_clean_output(s3, "ow")
    new_meta = s3.json("ow/_astrodask.json")
    assert new_meta["output_id"] != old_id and new_meta["dataset"] == s3.url("run1/dataset")
    assert len(s3.parts("ow")) == len(s3.parts("run1/predictions")) < many["parts"]
    assert set(s3.keys("ow/")) == {f"ow/{f}" for f in new_meta["files"]} | {"ow/_SUCCESS", "ow/_astrodask.json"}
    assert_same_predictions(s3, "ow", "run1/predictions")

    # --resume on finished outputs: succeeds, and not one object is written or deleted
    before = s3.versions("run1/")
    r = ok(run_cli("run", s3.url("in/sdss17.csv"), "--out", s3.url("run1"), *EPOCHS, "--resume", *sched, *so,
                   env=env, timeout=budget.left()))
    assert r.stderr.count("already complete") == 4, r.stderr
    r = ok(run_cli(*predict, s3.url("run1/predictions"), "--resume", *sched, *so, env=env, timeout=budget.left()))
    assert "already complete" in r.stderr
    after = s3.versions("run1/")

    def outputs(vs):  # the job lock run1/.job.lock is taken and released by `run`: not an output
        return {v for v in vs if not v[0].endswith(".job.lock")}

    assert outputs(after[0]) == outputs(before[0]) and outputs(after[1]) == outputs(before[1]), \
        "--resume on a complete output wrote or deleted objects"
    assert s3.keys("run1/.job.lock") == []


# ------------------------------------------------------------------------------------------------ 5. races


LOCK_RACER = """
    import os, sys, time, json
    from astrodask.storage import Location, Lock
    from astrodask.errors import AstrodaskError
    loc = Location.of(sys.argv[1], json.loads(sys.argv[3]))
    lock = Lock(loc, "s3://race")
    loc.fs.ls(loc.path.split("/")[0])  # connected before the start
    print("READY", flush=True)
    while not os.path.exists(sys.argv[2]):
        time.sleep(0.002)
    try:
        lock.acquire()
    except AstrodaskError as e:
        print("LOSE", e, flush=True)
    else:
        print("WIN", flush=True)
        deadline = time.monotonic() + 120
        while not os.path.exists(sys.argv[4]) and time.monotonic() < deadline:
            time.sleep(0.01)  # held until the test has every answer: a late racer cannot find it released
        lock.release()
"""


def _line(proc: subprocess.Popen, timeout: float) -> str:
    """The next line ``proc`` prints, waited for at most ``timeout`` s ("" if none came)."""
    import select

    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline().strip() if ready else ""


def test_two_jobs_racing_for_one_s3_output(s3, many, sched, tmp_path):
    budget = Budget(240)
    env, so = s3.bare_env(), s3.so()
    argv = ["predict", s3.url(many["dataset"]), s3.url("run1/model"), s3.url("race"), *sched, *so]
    winner = Job.start(argv, env, tmp_path, "race0")
    wait_until(lambda: s3.keys(".race.lock"), winner, "the first job's lock", timeout=budget.left(), poll=0.02)
    # the first job paused (its lock stays live: same host, pid alive) while the second starts, so that the second
    # meets the lock however soon the first would finish (started together, a slow start of one on a loaded
    # machine let the other finish first); the lock's own race is the four racers' below
    os.kill(winner.proc.pid, signal.SIGSTOP)
    try:
        loser = Job.start(argv, env, tmp_path, "race1")
        lost = loser.wait(budget.left())
    finally:
        os.kill(winner.proc.pid, signal.SIGCONT)
    codes = [winner.wait(budget.left()), lost]
    assert codes == [0, 1], [(c, j.stderr) for c, j in zip(codes, (winner, loser))]
    line = one_line_error(subprocess.CompletedProcess([], 1, "", loser.stderr))
    assert f"another job (pid {winner.proc.pid} on " in line and s3.url(".race.lock") in line, line
    assert_clean_output(s3, "race")
    assert_same_predictions(s3, "race", many["pred"])

    # the lock alone, four processes released together: exactly one wins (it holds the lock until all answered)
    go, done = tmp_path / "go", tmp_path / "done"
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(LOCK_RACER), s3.url(".race2.lock"), str(go),
                               json.dumps(s3.options()), str(done)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    try:
        for p in procs:
            assert _line(p, budget.left(60)) == "READY", p.stderr.read()
        go.write_text("go")
        outs = [_line(p, budget.left(60)) for p in procs]
        done.write_text("done")
        outs = [o + p.communicate(timeout=budget.left(60))[0].rstrip() for o, p in zip(outs, procs)]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert sorted(o.split()[0] for o in outs) == ["LOSE"] * 3 + ["WIN"], outs
    winner_pid = procs[[o.split()[0] for o in outs].index("WIN")].pid
    assert all(f"another job (pid {winner_pid} on" in o for o in outs if o.startswith("LOSE")), outs
    assert s3.keys(".race2.lock") == []


def test_a_dead_jobs_s3_lock_is_taken_over_but_never_a_live_one(s3_bucket):
    """Same host, dead pid: the lock is taken over. The takeover deletes only the object it judged stale
    (``If-Match`` its ETag): had another job replaced the lock meanwhile, that lock would stay."""
    import socket

    from astrodask.storage import Location, Lock
    from astrodask.storage.lock import _remove_if_unchanged

    so = s3_bucket.storage_options
    loc = Location.of(s3_bucket.url(".out.lock"), so)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True, timeout=60)
    stale = {"pid": int(dead.stdout), "host": socket.gethostname(), "token": "stale", "time": time.time()}
    s3_bucket.fs.pipe(s3_bucket.path(".out.lock"), json.dumps(stale).encode())
    old_etag = s3_bucket.fs.info(s3_bucket.path(".out.lock"))["ETag"]
    lock = Lock(loc, "s3://out")
    lock.acquire()
    assert json.loads(s3_bucket.fs.cat(s3_bucket.path(".out.lock")))["token"] == lock.token
    # a stale judgement that arrives late: the object is another one now, and stays
    _remove_if_unchanged(loc, old_etag)
    assert json.loads(s3_bucket.fs.cat(s3_bucket.path(".out.lock")))["token"] == lock.token
    # a live holder (this process) is never taken over
    with pytest.raises(Exception, match=f"another job \\(pid {os.getpid()} on"):
        Lock(loc, "s3://out").acquire()
    lock.release()
    assert s3_bucket.keys() == []


# ------------------------------------------------------------------------------------------------ 6. anonymous


def test_anonymous_read_of_a_public_input_with_credentials_for_the_outputs(s3, s3_server, inputs, job, sched):
    budget = Budget(180)
    pub = s3h.create_bucket(s3.endpoint, client=s3.client)
    data = inputs["small"].read_bytes()
    s3.client.put_object(Bucket=pub, Key="sdss/small.csv", Body=data, ACL="public-read")
    s3.client.put_object(Bucket=pub, Key="sdss/private.csv", Body=data)
    env = s3.bare_env()  # no credentials anywhere but in the options below
    base = {"endpoint_url": s3.endpoint, "client_kwargs": {"region_name": s3h.REGION}}
    per_url = {**base, f"s3://{pub}": {"anon": True}, s3.url(): {"key": KEY_ID, "secret": SECRET}}
    so = ["--storage-options", json.dumps(per_url)]
    r = ok(run_cli("convert", f"s3://{pub}/sdss/small.csv", s3.url("anon/dataset"), *sched, *so, env=env,
                   timeout=budget.left()))
    assert f"rows read {SMALL_ROWS:,}  written {SMALL_ROWS:,}" in r.stdout
    ok(run_cli("predict", s3.url("anon/dataset"), s3.url("run1/model"), s3.url("anon/predictions"), *sched, *so,
               env=env, timeout=budget.left()))
    assert_clean_output(s3, "anon/dataset")
    assert_clean_output(s3, "anon/predictions")
    assert s3.table("anon/predictions").num_rows == SMALL_ROWS
    # the same options on a private object: refused in one line (so the public one was read anonymously)
    line = one_line_error(run_cli("convert", f"s3://{pub}/sdss/private.csv", s3.url("anon/private"), *sched, *so,
                                  env=env, timeout=budget.left()))
    assert "private.csv" in line and "credentials" in line, line
    # and without the anonymous entry there are no credentials for the input at all: one line saying where to
    # put them
    line = one_line_error(run_cli("convert", f"s3://{pub}/sdss/small.csv", s3.url("anon/nocreds"), *sched,
                                  "--storage-options", json.dumps(base), env=env, timeout=budget.left()))
    assert "no credentials" in line and '"anon": true' in line, line
    assert s3.keys("anon/private") == [] and s3.keys("anon/nocreds") == []


def test_per_url_storage_options():
    from astrodask.storage import Location, options_for

    so = {"endpoint_url": "http://e", "s3://pub": {"anon": True}, "s3://pub/deep": {"anon": False, "x": 1},
          "gs://": {"token": "t"}}
    assert options_for("s3://pub/a.csv", so) == {"endpoint_url": "http://e", "anon": True}
    assert options_for("s3://pub", so) == {"endpoint_url": "http://e", "anon": True}
    assert options_for("s3://public/a.csv", so) == {"endpoint_url": "http://e"}
    assert options_for("s3://pub/deep/x", so) == {"endpoint_url": "http://e", "anon": False, "x": 1}
    assert options_for("gs://b/k", so) == {"endpoint_url": "http://e", "token": "t"}
    loc = Location.of("s3://pub/a.csv", so)
    assert loc.options == {"endpoint_url": "http://e", "anon": True}
    assert (Location.of("s3://out", so) / "x").options == {"endpoint_url": "http://e"}
    assert Location.of("/tmp/x", so).options == {}


# ------------------------------------------------------------------------------------------------ 7. killed writers


def test_outputs_of_killed_writers_are_refused_by_every_reader(s3, many, sched, tmp_path):
    """A convert and a train SIGKILLed mid-way on S3 leave prefixes that open_dataset, train and predict refuse in
    one line; the convert resumes to the undisturbed dataset."""
    from astrodask.dataset import open_dataset
    from astrodask.errors import AstrodaskError
    from astrodask.model import SoftmaxModel
    from astrodask.storage import Location

    budget = Budget(300)
    env, so = s3.bare_env(), s3.so()
    conv = ["convert", s3.url("in/small.csv"), s3.url("killed/dataset"), "--block-size", BLOCK, *LOCAL2]
    job = Job.start(conv, s3.env(), tmp_path, "convert-killed")
    try:
        wait_until(lambda: len(s3.keys("killed/dataset/_blocks/")) >= 3, job, "3 converted blocks",
                   budget.left(300), poll=0.02)
    finally:
        job.kill()
    assert s3.keys("killed/dataset/_SUCCESS") == []
    with pytest.raises(AstrodaskError, match="incomplete dataset"):
        open_dataset(Location.of(s3.url("killed/dataset"), s3.options()))
    line = one_line_error(run_cli("train", s3.url("killed/dataset"), "--model", s3.url("killed/m"), *sched, *so,
                                  env=env, timeout=budget.left()))
    assert "incomplete dataset" in line, line
    line = one_line_error(run_cli("predict", s3.url("killed/dataset"), s3.url("run1/model"), s3.url("killed/p"),
                                  *sched, *so, env=env, timeout=budget.left()))
    assert "incomplete dataset" in line, line
    assert s3.keys("killed/m") == [] and s3.keys("killed/p") == []
    ok(run_cli(*conv[:5], *sched, *so, "--resume", env=env, timeout=budget.left()))
    assert_clean_output(s3, "killed/dataset")
    assert [k.rsplit("/", 1)[1] for k in s3.parts("killed/dataset")] == [k.rsplit("/", 1)[1] for k in s3.parts("many")]
    assert s3.table("killed/dataset").equals(s3.table("many"))

    # a training killed after its first checkpoint: its model directory is not a model
    train = ["train", s3.url("run1/dataset"), "--model", s3.url("killed/model"), "--epochs", "500", "--patience",
             "0", *LOCAL2]
    job = Job.start(train, s3.env(), tmp_path, "train-killed")
    try:
        wait_until(lambda: s3.keys("killed/model/checkpoint.json"), job, "the first checkpoint",
                   budget.left(300), poll=0.02)
    finally:
        job.kill()
    with pytest.raises(AstrodaskError, match="incomplete model"):
        SoftmaxModel.load(Location.of(s3.url("killed/model"), s3.options()))
    line = one_line_error(run_cli("predict", s3.url("run1/dataset"), s3.url("killed/model"), s3.url("killed/p2"),
                                  *sched, *so, env=env, timeout=budget.left()))
    assert "incomplete model" in line and "--resume" in line, line
    assert s3.keys("killed/p2") == []


# ------------------------------------------------------------------------------------------------ 8. HATS


def test_predict_format_hats_to_s3(s3, many, sched, dask_cluster):
    pytest.importorskip("hats_import", reason="needs the astrodask[hats] extra")
    lsdb = pytest.importorskip("lsdb", reason="needs the astrodask[hats] extra")
    budget = Budget(240)
    r = ok(run_cli("predict", s3.url(many["dataset"]), s3.url("run1/model"), s3.url("hats"), "--format", "hats",
                   *sched, *s3.so(), env=s3.bare_env(), timeout=budget.left()))
    assert f"({SMALL_ROWS:,} rows" in r.stdout, r.stdout
    assert_clean_output(s3, "hats")
    assert not [k for k in s3.keys("hats/") if "_scored" in k or "intermediate" in k]
    # (hats assumes anonymous access to s3:// unless told otherwise: "anon": False with the credentials)
    cat = lsdb.open_catalog(s3.url("hats"), storage_options=s3.options(anon=False))
    df = cat.compute()
    assert len(df) == SMALL_ROWS and df["obj_ID"].is_unique
    ours = s3.table(many["pred"]).to_pandas().sort_values("obj_ID")
    theirs = df.sort_values("obj_ID")
    for c in ("obj_ID", "predicted_class", "prob_GALAXY", "prob_QSO", "prob_STAR"):
        np.testing.assert_array_equal(theirs[c].to_numpy(), ours[c].to_numpy(), err_msg=c)
    line = ok(run_cli("evaluate", s3.url("hats"), *sched, *s3.so(), env=s3.bare_env(), timeout=budget.left()))
    assert f"({SMALL_ROWS:,} rows)" in line.stdout


# ------------------------------------------------------------------------------------------------ 9. in between


def _commit(dest, names, fp, **kw):
    from astrodask.storage import StagedOutput

    with StagedOutput(dest, kind="predictions", fingerprint=fp, **kw) as out:
        if out.done:
            return out
        for n in names:
            out.path(n).write_bytes(f"{n} of {fp}".encode())
        out.commit({})
    return out


def test_an_overwrite_or_commit_killed_half_way_is_never_complete_and_resumes_clean(s3_bucket, monkeypatch):
    """The moments between a job's first and last write, made exactly (a kill lands there only by chance): an
    overwrite killed while deleting the old output, and a commit killed between the manifest and ``_SUCCESS``.
    Readers refuse both; ``--resume`` finishes the deletion first (nothing of the old output survives into the
    new one); a rerun without it starts again."""
    import astrodask.storage as st
    from astrodask.errors import AstrodaskError

    dest = st.Location.of(s3_bucket.url("out"), s3_bucket.storage_options)
    _commit(dest, [f"part-{i}.parquet" for i in range(4)], {"v": "old"})
    old_id = st.read_meta(dest)["output_id"]

    calls = []
    real = st.remove_files

    def dies_half_way(locs):
        locs = list(locs)
        calls.append(len(locs))
        real(locs[:2])
        raise KeyboardInterrupt  # the job killed after deleting two of the old parts

    monkeypatch.setattr(st.output, "remove_files", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        _commit(dest, ["part-0.parquet"], {"v": "new"}, overwrite=True)
    monkeypatch.setattr(st.output, "remove_files", real)
    assert calls == [4]
    left = sorted(k.split("/", 1)[1] for k in s3_bucket.keys("out/"))
    assert left == ["_astrodask.json", "_astrodask.staging.json", "part-2.parquet", "part-3.parquet"], left
    assert not st.is_complete(dest) and st.incomplete_output(dest)
    with pytest.raises(AstrodaskError, match="incomplete predictions"):
        st.require_not_incomplete(dest, "predictions")
    assert s3_bucket.keys(".out.lock") == []  # released on the way out (a SIGKILL would leave it: taken over)

    # resume: the rest of the old output goes before anything new is kept
    out = _commit(dest, ["part-0.parquet"], {"v": "new"}, overwrite=True, resume=True)
    assert out.committed
    assert sorted(k.split("/", 1)[1] for k in s3_bucket.keys("out/")) == \
        ["_SUCCESS", "_astrodask.json", "part-0.parquet"]
    assert st.read_meta(dest)["output_id"] != old_id and st.read_meta(dest)["fingerprint"] == {"v": "new"}
    assert s3_bucket.fs.cat(s3_bucket.path("out/part-0.parquet")) == b"part-0.parquet of {'v': 'new'}"

    # a commit killed between the manifest and _SUCCESS: refused, then resumed (fingerprint from the manifest)
    monkeypatch.setattr(st.Location, "write_bytes", _fail_on(st.Location.write_bytes, st.SUCCESS))
    with pytest.raises(KeyboardInterrupt):
        _commit(dest, ["part-0.parquet", "part-1.parquet"], {"v": "newer"}, overwrite=True)
    monkeypatch.undo()
    assert not st.is_complete(dest) and st.incomplete_output(dest)
    with pytest.raises(AstrodaskError, match="differ: v"):
        _commit(dest, ["part-0.parquet"], {"v": "other"}, resume=True)
    _commit(dest, ["part-0.parquet", "part-1.parquet"], {"v": "newer"}, resume=True)
    assert st.is_complete(dest) and st.read_meta(dest)["fingerprint"] == {"v": "newer"}

    # an interrupted output rerun without --resume starts again from nothing
    (dest / st.STAGING_MARKER).write_text("{}")
    (dest / st.SUCCESS).remove()
    _commit(dest, ["part-9.parquet"], {"v": "again"})
    assert sorted(k.split("/", 1)[1] for k in s3_bucket.keys("out/")) == \
        ["_SUCCESS", "_astrodask.json", "part-9.parquet"]


def test_without_the_permission_to_delete_no_reader_sees_success_beside_a_staging_marker(s3_bucket, monkeypatch):
    """The issue's M1: an S3 user without s3:DeleteObject got ``_SUCCESS`` beside the staging marker and a message
    about something else. Now the overwrite is refused before it changes anything, and a new output's commit
    (which must delete its marker) before it writes ``_SUCCESS``; both name the permission."""
    import astrodask.storage as st
    from astrodask.errors import AstrodaskError

    dest = st.Location.of(s3_bucket.url("nodelete"), s3_bucket.storage_options)
    _commit(dest, ["part-0.parquet"], {"v": "old"})

    def denied(path, *a, **kw):
        raise PermissionError("Access Denied")

    monkeypatch.setattr(dest.fs, "rm", denied)
    with pytest.raises(AstrodaskError) as err:
        _commit(dest, ["part-0.parquet"], {"v": "new"}, overwrite=True)
    assert "needs the permission to delete objects (s3:DeleteObject)" in str(err.value)
    assert "the existing predictions is unchanged" in str(err.value)
    assert sorted(k.split("/", 1)[1] for k in s3_bucket.keys("nodelete/")) == \
        ["_SUCCESS", "_astrodask.json", "part-0.parquet"]
    assert st.is_complete(dest) and st.read_meta(dest)["fingerprint"] == {"v": "old"}

    fresh = st.Location.of(s3_bucket.url("nodelete-new"), s3_bucket.storage_options)
    with pytest.raises(AstrodaskError, match=r"committing an output needs the permission to delete objects "
                                             r"\(s3:DeleteObject\)"):
        _commit(fresh, ["part-0.parquet"], {"v": "new"})
    keys = [k.split("/", 1)[1] for k in s3_bucket.keys("nodelete-new/")]
    assert "_SUCCESS" not in keys and not st.is_complete(fresh), keys
    with pytest.raises(AstrodaskError, match="incomplete predictions"):
        st.require_not_incomplete(fresh, "predictions")


def _fail_on(write_bytes, name):
    def wrapped(self, data):
        if self.name == name:
            raise KeyboardInterrupt
        return write_bytes(self, data)

    return wrapped
