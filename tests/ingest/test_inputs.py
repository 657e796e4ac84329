"""Which files a conversion reads: never astrodask's own outputs (datasets, their ``_quarantine``), nor files
beside the catalogues that are not catalogues (README.txt, notes.md, .json), nor a FIFO."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from astrodask import ingest
from astrodask.errors import AstrodaskError
from astrodask.ingest import ConvertConfig

BAD = Path(__file__).resolve().parents[1] / "data" / "bad"


@pytest.fixture(scope="module")
def client():
    from distributed import Client

    with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=":0") as c:
        yield c


def convert(client, src, dest, **kw):
    return ingest.run(ConvertConfig(tuple(map(str, src)), str(dest), quiet=True, **kw), client)


def _inputs(tmp_path: Path) -> Path:
    """A directory with good.csv (12 rows) and duplicate_ids.csv (12 rows, 3 repeated ids, ids not in good.csv's)."""
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(BAD / "good.csv", src / "a.csv")
    text = (BAD / "duplicate_ids.csv").read_text().replace("12376459429", "12376459439")
    (src / "b.csv").write_text(text)
    return src


def test_outputs_and_non_catalogue_files_in_an_input_directory_are_skipped_with_a_note(client, tmp_path, capsys):
    src = _inputs(tmp_path)
    first = convert(client, [src], src / "ds")  # a dataset written into the input directory, with a quarantine
    assert (first.read, first.written, first.reasons) == (24, 21, {"duplicate_id": 3})
    assert list((src / "ds" / "_quarantine").glob("*.parquet"))
    (src / "README.txt").write_text("Data from SDSS DR17, exported 2026.\n")
    (src / "notes.md").write_text("# notes\n")
    (src / "columns.json").write_text("{}\n")
    capsys.readouterr()
    again = convert(client, [src], tmp_path / "ds2")
    assert (again.read, again.written, again.reasons) == (24, 21, {"duplicate_id": 3})
    assert sorted(again.source_rows) == sorted(str(src / n) for n in ("a.csv", "b.csv"))
    err = capsys.readouterr().err
    assert f"skipped {src / 'ds'}: an astrodask output, not a catalogue" in err
    assert f"skipped {src / 'README.txt'}: not a catalogue (missing required column(s)" in err
    assert "skipped 2 file(s) in" in err and "columns.json, notes.md" in err
    assert pq.read_table(tmp_path / "ds2").num_rows == 21


def test_an_output_named_as_input_and_a_damaged_catalogue_in_a_directory_are_refused(client, tmp_path):
    src = _inputs(tmp_path)
    convert(client, [src], tmp_path / "ds")
    with pytest.raises(AstrodaskError, match=r"ds: an astrodask dataset \(it holds _astrodask.json or _SUCCESS\), "
                                             r"not a catalogue; give the catalogue files"):
        convert(client, [tmp_path / "ds"], tmp_path / "x")
    # a README.txt named explicitly, or a catalogue that does not read, is refused, not skipped
    (src / "README.txt").write_text("Data from SDSS DR17, exported 2026.\n")
    with pytest.raises(AstrodaskError, match="README.txt: missing required column"):
        convert(client, [src / "README.txt"], tmp_path / "y")
    (src / "README.txt").unlink()
    shutil.copy(BAD / "wrong_header.csv", src / "c.csv")
    with pytest.raises(AstrodaskError, match="c.csv: missing required column"):
        convert(client, [src], tmp_path / "z")
    # a directory with nothing but a note
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "README.txt").write_text("nothing here\n")
    with pytest.raises(AstrodaskError, match=r"no catalogue files \(skipped .*README.txt\)"):
        convert(client, [tmp_path / "notes"], tmp_path / "w")
    assert not any((tmp_path / d).exists() for d in ("x", "y", "z", "w"))


def test_a_fifo_is_refused_up_front(tmp_path):
    from support.cli import one_line_error, run_cli

    fifo = tmp_path / "m.csv"
    os.mkfifo(fifo)
    try:
        r = run_cli("convert", fifo, tmp_path / "ds", "--workers", "1", "-q", timeout=120)
    except subprocess.TimeoutExpired:  # pragma: no cover - the bug: opening the FIFO waits for a writer
        pytest.fail("convert waited on the FIFO")
    line = one_line_error(r)
    assert "m.csv: not a regular file (a FIFO); give a catalogue file" in line, line
    assert not (tmp_path / "ds").exists()
