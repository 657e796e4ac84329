"""The bad-input corpus (tests/data/bad/): every file gives a clear outcome, never a traceback or a silent drop.

For each input the CLI (``astrodask convert`` for data files, ``astrodask predict`` for model directories) runs
against a real ``dask scheduler`` + 2 workers and must either

* fail: exit 1 and exactly one non-empty stderr line ``astrodask: error: PROBLEM; FIX`` that names the
  problem (the words in the table below) and says what to do (the text after ``; ``), no traceback, and
  nothing at the destination; or
* succeed with the bad rows quarantined: ``DEST/_quarantine`` holds exactly the expected rows per reason (its
  ``reason`` column, read with pyarrow), ``DEST/_astrodask.json`` says rows read = written + quarantined, and
  rows read is the number of data rows in the file (nothing dropped silently).

``CASES`` is the table; ``tests/data/bad/EXPECTED.md`` is the same table for people, regenerated with
``python tests/ingest/test_bad_inputs.py`` (a test checks that it is up to date). The corpus files are made by
``tests/data/bad/make_corpus.py``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

BAD = Path(__file__).resolve().parents[1] / "data" / "bad"
EXPECTED_MD = BAD / "EXPECTED.md"
CLI = [sys.executable, "-m", "astrodask.cli"]
_PROGRESS = re.compile(r"\r|\d+%\|")
# the dataset every model directory is tried on: 12 rows in two files, one of them empty
PREDICT_DATASET = BAD / "dataset_with_empty_partition"


@dataclass(frozen=True)
class Case:
    source: str
    """File or directory under tests/data/bad."""
    what: str
    """What is wrong with it."""
    error: tuple = ()
    """Failure expected: words the one error line must contain (a tuple inside = any of these)."""
    read: int | None = None
    """Success expected: rows read (= data rows in the input),"""
    quarantined: dict = field(default_factory=dict)
    """... rows quarantined per reason (every other row written)."""
    nulls: dict = field(default_factory=dict)
    """... and null counts of columns in the written dataset (values read as missing, rows kept)."""
    bug: str = ""
    """Non-empty: the library does not do this yet (the case is xfail(strict=True) with this reason)."""

    @property
    def command(self) -> str:
        return "predict" if self.source.startswith("model_") else "convert"


CASES: list[Case] = [
    # ---------------------------------------------------------------------------------------- CSV
    Case("good.csv", "control: a valid file", read=12),
    Case("truncated_last_row.csv", "cut off in the middle of its last row", read=10,
         quarantined={"malformed_row": 1}),
    Case("truncated.csv.gz", "gzip stream cut in the middle", error=(("ended", "truncated", "corrupt", "cannot read"),)),
    Case("wrong_header.csv", "unknown column names (mag_u, type ...)", error=("obj_ID", "u, g, r, i, z")),
    Case("no_header.csv", "no header row: the first line is data (shown in the error)",
         error=("obj_ID", "1237645942904389632")),
    Case("swapped_class_redshift.csv", "class and redshift values swapped in every row", error=("class",)),
    Case("swapped_class_redshift_3_rows.csv", "class and redshift swapped in 3 rows", read=12,
         quarantined={"unknown_class": 3}),
    Case("strings_in_numeric.csv", "text in u, r and MJD; an empty g (missing, kept)", read=12,
         quarantined={"non_numeric:u": 1, "non_numeric:r": 1, "not_integer:MJD": 1}, nulls={"g": 1}),
    Case("nan_inf.csv", "nan (missing, kept) and inf, -inf, Infinity (rejected)", read=12,
         quarantined={"non_finite:r": 1, "non_finite:z": 1, "non_finite:u": 1}, nulls={"g": 1}),
    Case("sentinel_9999.csv", "-9999 / -999 'no measurement' values: nulls, rows kept", read=12,
         nulls={"u": 1, "z": 1, "redshift": 1}),
    Case("unknown_class.csv", "classes PLANET (rejected), empty (unlabelled: kept, class null), galaxy (accepted)",
         read=12, quarantined={"unknown_class": 1}, nulls={"class": 1}),
    Case("duplicate_ids.csv", "3 repeated obj_IDs in one file (first occurrence kept)", read=12,
         quarantined={"duplicate_id": 3}),
    Case("dup_across_files", "a directory of 2 files sharing 4 obj_IDs", read=16, quarantined={"duplicate_id": 4}),
    Case("empty.csv", "0 bytes", error=("empty",)),
    Case("header_only.csv", "a header and no rows", error=(("no data rows", "no rows", "empty"),)),
    Case("header_only_beside_good", "a header-only file beside a good one: one empty partition", read=12),
    Case("non_utf8_values.csv", "Latin-1 bytes in a class and in a magnitude", read=12,
         quarantined={"invalid_utf8": 2}),
    Case("non_utf8_header.csv", "Latin-1 bytes in the header", error=("UTF-8",)),
    Case("utf16.csv", "UTF-16 text", error=(("UTF-16", "binary", "not a text"),)),
    Case("bom_crlf.csv", "UTF-8 byte order mark and CRLF line ends: valid", read=12),
    Case("ragged_rows.csv", "a row with a missing and one with an extra field", read=12,
         quarantined={"malformed_row": 2}),
    Case("quoted_newline.csv", "a quoted class value with a line break inside (valid CSV quoting)", read=12,
         quarantined={"unknown_class": 1},
         bug="convert splits a quoted value with a line break into 2 malformed_row rows (read 13 for 12 records)"),
    Case("id_float_notation.csv", "ids in floating-point notation (digits lost)", error=("obj_ID", "floating")),
    Case("bad_ids.csv", "ids -5, 2**64, 12abc and empty", read=12, quarantined={"invalid_id:obj_ID": 4}),
    Case("out_of_range.csv", "alpha 361.5 and delta -91", read=12,
         quarantined={"out_of_range:alpha": 1, "out_of_range:delta": 1}),
    Case("binary_garbage.csv", "binary bytes with a .csv name", error=(("binary", "not a text"),)),
    Case("impossible_values.csv", "u = 99, g = 0, redshift 1e6 (physically impossible)", read=12,
         quarantined={"out_of_range:u": 1, "out_of_range:g": 1, "out_of_range:redshift": 1}),
    Case("skyserver_spec_first.csv", "SkyServer header specobjid,class,z,objid,ra,dec,u,g,r,i,z: z by its "
         "neighbours (redshift beside class, band after i)", read=12),
    Case("skyserver_photo_first.csv", "SkyServer header objid,...,u,g,r,i,z,specobjid,class,z (the other order)",
         read=12),
    Case("ambiguous_z.csv", "two z columns both beside band names: which is the redshift cannot be told",
         error=("ambiguous", "z (column 4)", "z (column 9)", "redshift")),
    Case("ra_and_alpha_differ.csv", "columns ra and alpha both present, different values in 2 rows",
         error=("ra and alpha", "differ in 2 of 12 rows", "--columns")),
    Case("two_magnitude_systems.csv", "psfMag_* and cModelMag_*, no model magnitudes", error=("--magnitudes",)),
    # ---------------------------------------------------------------------------------------- Parquet
    Case("parquet_mags_as_strings.parquet", "magnitudes stored as strings, one not a number", read=12,
         quarantined={"non_numeric:u": 1}),
    Case("parquet_id_as_float.parquet", "64-bit obj_ID stored as float64 (digits lost)", error=("obj_ID", "float")),
    Case("parquet_missing_z.parquet", "no z column", error=("z",)),
    Case("parquet_class_as_int.parquet", "class stored as integer codes", error=("class",)),
    Case("parquet_list_column.parquet", "u stored as a list per row", error=("u",)),
    Case("parquet_truncated.parquet", "cut in the middle", error=("Parquet",)),
    Case("dataset_with_empty_partition", "a Parquet dataset directory with a 0-row file beside a full one", read=12),
    # ---------------------------------------------------------------------------------------- FITS
    Case("fits_good.fits", "control: SDSS layout, 5-element MODELMAG, Z, CLASS", read=12),
    Case("fits_band_array_2d.fits", "MODELMAG of shape (2, 5) per row", error=("MODELMAG",)),
    Case("fits_band_array_4.fits", "MODELMAG with 4 values per row (no z band)", error=("MODELMAG", "u, g, r, i, z")),
    Case("fits_variable_length_bands.fits", "MODELMAG as a variable-length array", error=("MODELMAG",)),
    Case("fits_string_magnitude.fits", "u stored as text, one value 'bad'", read=12,
         quarantined={"non_numeric:u": 1}),
    Case("fits_no_table.fits", "an image, no table", error=("table",)),
    Case("fits_truncated.fits", "cut in the middle of the table data",
         error=(("truncated", "damaged", "cannot read"),)),
    # ---------------------------------------------------------------------------------------- models
    Case("model_good", "control: a valid model (used on dataset_with_empty_partition)", read=12),
    Case("model_wrong_version", "model.json format_version 99", error=("format version", "99")),
    Case("model_missing_fields", "model.json without its features", error=("features",)),
    Case("model_pickle_weights", "a pickle renamed to weights.npz", error=("weights.npz", "pickle")),
    Case("model_wrong_shape", "weights of the wrong shape for the features", error=("shape",)),
    Case("model_swapped_weights", "the weights of another model of the same shape copied in",
         error=("weights.npz", "digest")),
]
BY_NAME = {c.source: c for c in CASES}


# ------------------------------------------------------------------------------------------------ running


def _env() -> dict:
    return {k: v for k, v in os.environ.items() if k not in ("ASTRODASK_DEBUG", "DASK_SCHEDULER_ADDRESS")}


def message_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.strip() and not _PROGRESS.search(ln)]


# One CLI process per corpus entry, forked from a "zygote" process that has already imported astrodask, dask,
# pandas, pyarrow and astropy: each entry runs ``astrodask.cli.main`` in its own process with its own stdout and
# stderr files and exit status (an uncaught exception prints its traceback there, as in a fresh process), but
# without paying ~1.5 s of CPU for the imports 45 times over. The zygote runs the entries of a batch a few at a
# time and prints one JSON line per entry: its id and exit status.
_ZYGOTE = r"""
import json, os, sys
os.environ.pop("ASTRODASK_DEBUG", None)
os.environ.pop("DASK_SCHEDULER_ADDRESS", None)
import astrodask.cli, astrodask.cluster, astrodask.ingest, astrodask.predict, astrodask.model
import distributed, pandas, pyarrow.csv, pyarrow.parquet
try:
    import astropy.io.fits
except ImportError:
    pass
from astrodask.cli import main

parallel = int(sys.argv[1])
batches = json.loads(sys.stdin.read())
results = []
for batch in batches:
    queue, running = list(batch), {}
    while queue or running:
        while queue and len(running) < parallel:
            req = queue.pop(0)
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:  # the CLI process for this entry
                for fd, name, flags in ((0, os.devnull, os.O_RDONLY),
                                        (1, req["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                                        (2, req["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)):
                    new = os.open(name, flags, 0o644)
                    os.dup2(new, fd)
                    os.close(new)
                os.chdir(req["cwd"])
                sys.argv = ["astrodask", *req["argv"]]
                raise SystemExit(main(req["argv"]))
            running[pid] = req["id"]
        pid, status = os.wait()
        results.append({"id": running.pop(pid), "code": os.waitstatus_to_exitcode(status)})
print("\n".join(json.dumps(r) for r in results))
"""


def run_cli_many(batches: list[list[dict]], cwd: Path, parallel: int = 3, timeout: float = 600) -> dict:
    """Run CLI invocations {"id", "argv"} batch after batch; return id -> CompletedProcess."""
    reqs = []
    for batch in batches:
        for req in batch:
            req.update(cwd=str(cwd), stdout=str(cwd / f"{req['id']}.stdout"), stderr=str(cwd / f"{req['id']}.stderr"))
            req["argv"] = [str(a) for a in req["argv"]]
            reqs.append(req)
    proc = subprocess.Popen([sys.executable, "-c", _ZYGOTE, str(parallel)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=cwd,
                            start_new_session=True)
    try:
        out, err = proc.communicate(json.dumps(batches), timeout=timeout)
    finally:
        try:  # the zygote and any entry still running
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    assert proc.returncode == 0, err
    codes = {d["id"]: d["code"] for d in map(json.loads, out.splitlines())}
    return {r["id"]: subprocess.CompletedProcess(["astrodask", *r["argv"]], codes[r["id"]],
                                                 Path(r["stdout"]).read_text(errors="replace"),
                                                 Path(r["stderr"]).read_text(errors="replace")) for r in reqs}


def _dest(case: Case, work: Path) -> Path:
    return work / case.source.replace(".", "_")


def _request(case: Case, address: str, work: Path, dataset: Path) -> dict:
    if case.command == "convert":
        args = ["convert", BAD / case.source, _dest(case, work)]
    else:
        args = ["predict", dataset, BAD / case.source, _dest(case, work)]
    return {"id": case.source.replace(".", "_"), "argv": [*args, "--scheduler", address, "-q"]}


@pytest.fixture(scope="module")
def outcomes(dask_cluster, tmp_path_factory):
    """Run the CLI on every corpus entry and keep (CompletedProcess, destination) per entry."""
    missing = [c.source for c in CASES if not (BAD / c.source).exists()]
    assert not missing, f"corpus files missing (run tests/data/bad/make_corpus.py): {missing}"
    work = tmp_path_factory.mktemp("bad_inputs")
    done = run_cli_many([[_request(c, dask_cluster.address, work, PREDICT_DATASET) for c in CASES]], work)
    return {c.source: (done[c.source.replace(".", "_")], _dest(c, work)) for c in CASES}


def _reasons(dest: Path) -> dict[str, int]:
    import pyarrow.parquet as pq

    files = sorted((dest / "_quarantine").glob("*.parquet"))
    counts: dict[str, int] = {}
    for f in files:
        for reason in pq.read_table(f, columns=["reason"]).column("reason").to_pylist():
            counts[reason] = counts.get(reason, 0) + 1
    return counts


def _check_error(case: Case, r: subprocess.CompletedProcess, dest: Path) -> None:
    assert r.returncode != 0, f"expected a refusal, got exit 0:\n{r.stdout}"
    lines = message_lines(r.stderr)
    assert len(lines) == 1, f"expected exactly one stderr line, got {len(lines)}:\n{r.stderr}"
    line = lines[0]
    assert line.startswith("astrodask: error: "), line
    assert r.returncode == 1, (r.returncode, line)
    message = line.replace(str(BAD / case.source), "INPUT")  # the words must be in the message, not the path
    for word in case.error:
        alternatives = word if isinstance(word, tuple) else (word,)
        assert any(w.lower() in message.lower() for w in alternatives), f"{alternatives} not named in: {line}"
    problem, sep, fix = message.partition("; ")
    assert sep and re.search(r"[A-Za-z]{4}", fix), f"the error names no fix ('PROBLEM; FIX'): {line}"
    assert not dest.exists(), f"a refused {case.command} left {dest}"


def _check_success(case: Case, r: subprocess.CompletedProcess, dest: Path) -> None:
    import pyarrow.parquet as pq

    assert r.returncode == 0, f"exit {r.returncode}:\n{r.stderr}"
    assert (dest / "_SUCCESS").is_file()
    parts = sorted(dest.glob("part-*.parquet"))
    rows = sum(pq.ParquetFile(p).metadata.num_rows for p in parts)
    if case.command == "predict":
        assert rows == case.read
        ids = pq.read_table(dest, columns=["obj_ID"]).column(0).to_pylist()
        assert len(set(ids)) == len(ids) == case.read
        return
    meta = json.loads((dest / "_astrodask.json").read_text())
    reasons = _reasons(dest)
    assert reasons == case.quarantined, f"quarantine reasons {reasons}, expected {case.quarantined}"
    n_quarantined = sum(case.quarantined.values())
    assert (meta["read"], meta["written"], meta["quarantined"]) == (case.read, case.read - n_quarantined,
                                                                    n_quarantined), meta
    assert meta["read"] == meta["written"] + meta["quarantined"], meta
    assert rows == meta["written"], f"{rows} rows in the part files, metadata says {meta['written']}"
    assert f"rows read {case.read:,}  written {case.read - n_quarantined:,}  quarantined {n_quarantined:,}" \
        in r.stdout, r.stdout
    table = pq.read_table(dest, columns=None)
    for column, n in case.nulls.items():
        assert table.column(column).null_count == n, (column, table.column(column).null_count)
        assert meta["nulls"].get(column) == n, (column, meta["nulls"])
        assert f"{column} {n:,}" in r.stdout.split("missing values")[1], r.stdout
    if "class" in table.column_names:
        assert set(table.column("class").to_pylist()) <= {"GALAXY", "QSO", "STAR", None}  # None: unlabelled


def _param(case: Case):
    marks = [pytest.mark.xfail(strict=True, reason=case.bug)] if case.bug else []
    return pytest.param(case, id=case.source, marks=marks)


@pytest.mark.cluster
@pytest.mark.slow  # the module fixture runs the CLI ~50 times (~30 s of CPU)
@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_bad_input(outcomes, case):
    r, dest = outcomes[case.source]
    assert "Traceback" not in r.stderr + r.stdout, r.stderr
    assert "internal error" not in r.stderr, r.stderr
    if case.error:
        _check_error(case, r, dest)
    else:
        _check_success(case, r, dest)


def test_corpus_is_big_and_small():
    assert len(CASES) >= 20
    assert len({c.source for c in CASES}) == len(CASES)
    for c in CASES:
        assert bool(c.error) != (c.read is not None), c.source  # exactly one outcome
        p = BAD / c.source
        size = sum(f.stat().st_size for f in p.rglob("*")) if p.is_dir() else p.stat().st_size
        assert size < 64 * 1024, f"{c.source} is {size} bytes: keep the corpus small"
    on_disk = {p.name for p in BAD.iterdir() if p.name not in ("make_corpus.py", "EXPECTED.md", "__pycache__")}
    assert on_disk == {c.source for c in CASES}, "corpus entries without an expectation (or the reverse)"


# ------------------------------------------------------------------------------------------------ EXPECTED.md


def expected_markdown() -> str:
    lines = [
        "# Bad-input corpus: what each input must give",
        "",
        "Generated from `CASES` in `tests/ingest/test_bad_inputs.py` (`python tests/ingest/test_bad_inputs.py` rewrites this",
        "file); the inputs are made by `make_corpus.py`. Data files are converted (`astrodask convert FILE DEST`),",
        "model directories are used to predict (`astrodask predict DATASET MODEL OUT`).",
        "",
        "*error*: exit 1, one stderr line `astrodask: error: PROBLEM; FIX` naming the words shown, nothing written.",
        "*ok*: exit 0; the rows shown quarantined in `DEST/_quarantine` with that `reason`, every other row written;",
        "read = written + quarantined in `DEST/_astrodask.json`. **Known bug** rows are xfail(strict) in the test.",
        "",
        "| input | what is wrong | expected | known bug |",
        "|---|---|---|---|",
    ]
    for c in CASES:
        if c.error:
            words = ", ".join(" or ".join(f"`{w}`" for w in (x if isinstance(x, tuple) else (x,))) for x in c.error)
            expect = f"error naming {words}"
        else:
            q = ", ".join(f"`{k}` x{v}" for k, v in c.quarantined.items()) or "none"
            n = sum(c.quarantined.values())
            expect = f"ok: read {c.read}, written {c.read - n}, quarantined: {q}"
            if c.nulls:
                expect += "; nulls kept: " + ", ".join(f"`{k}` x{v}" for k, v in c.nulls.items())
            if c.command == "predict":
                expect = f"ok: {c.read} predictions (one per input row)"
        lines.append(f"| `{c.source}` | {c.what} | {expect} | {c.bug} |")
    return "\n".join(lines) + "\n"


def test_expected_md_is_up_to_date():
    assert EXPECTED_MD.read_text() == expected_markdown(), "run: python tests/ingest/test_bad_inputs.py"


if __name__ == "__main__":
    EXPECTED_MD.write_text(expected_markdown())
    print(f"wrote {EXPECTED_MD}")
