"""Issue #18: ids written as floats (Kaggle's star_classification.csv: ``1.237660961327743e+18``, 16 digits, so
ids collide). Refused without ``--row-ids`` (the refusal says how to get in); with it every row is written
under a generated id (bit 63 set: never a real objID; stable across reruns and block sizes), the source's id
text kept in ``source_obj_ID`` and the row's position in ``source_row``, and the whole job trains and
predicts as well as on the integer-id copy, each prediction joinable back to its input row."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from astrodask import ingest
from astrodask.errors import AstrodaskError
from astrodask.ingest import ConvertConfig
from astrodask.ingest.ids import FLAG, ROW_BITS, generated_ids, is_generated
from astrodask.pipeline import default_source

DIRTY = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "dirty" / "sdss17_spreadsheet_export.csv"


@pytest.fixture(scope="module")
def client():
    from distributed import Client

    with Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=":0") as c:
        yield c


def kaggle_format(df: pd.DataFrame) -> pd.DataFrame:
    """The ids as pandas writes float64 columns (what Kaggle's file holds)."""
    return df.assign(obj_ID=df["obj_ID"].astype("float64"), spec_obj_ID=df["spec_obj_ID"].astype("float64"))


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    return pd.read_csv(default_source(), nrows=6000)


@pytest.fixture(scope="module")
def kaggle_csv(sample, tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("kaggle") / "star_classification.csv"
    kaggle_format(sample).to_csv(p, index=False)
    return p


def convert(client, src, dest, **kw) -> dict:
    return ingest.run(ConvertConfig((str(src),), str(dest), quiet=True, **kw), client)


def read(dest) -> pd.DataFrame:
    return pq.read_table(dest).to_pandas()


def test_float_ids_collide_and_are_refused_without_the_flag(client, kaggle_csv, sample, tmp_path):
    text = kaggle_csv.read_text().splitlines()[1].split(",")[0]
    assert "e+18" in text and 15 <= len(text.split("e")[0].replace(".", "")) <= 17, text
    assert kaggle_format(sample)["obj_ID"].nunique() < len(sample) // 10  # rounded ids collide
    with pytest.raises(AstrodaskError) as e:
        convert(client, kaggle_csv, tmp_path / "ds")
    assert "id_float_notation:obj_ID" in str(e.value) and "--row-ids" in str(e.value)
    assert not (tmp_path / "ds").exists()


def test_row_ids_write_every_row_with_generated_ids_and_keep_the_source_text(client, kaggle_csv, sample, tmp_path):
    s = convert(client, kaggle_csv, tmp_path / "a", block_size=64 * 1024, row_ids=True)
    assert (s.read, s.written, s.quarantined) == (len(sample), len(sample), 0)
    out = read(tmp_path / "a")
    assert len(out) == len(sample) and out["obj_ID"].is_unique
    assert is_generated(out["obj_ID"]).all()  # bit 63: never a CAS objID (those leave it 0)
    tag = s.row_ids["files"][str(kaggle_csv)]["tag"]
    assert (out["obj_ID"].to_numpy() == generated_ids(tag, np.arange(len(sample)))).all()
    assert out["source_row"].tolist() == list(range(len(sample)))
    raw = pd.read_csv(kaggle_csv, dtype=str)
    assert out["source_obj_ID"].tolist() == raw["obj_ID"].tolist()
    assert out["source_spec_obj_ID"].tolist() == raw["spec_obj_ID"].tolist()
    assert out["spec_obj_ID"].isna().all()  # not exact integers: null, the text kept beside
    np.testing.assert_allclose(out["u"], sample["u"], rtol=1e-6)
    meta = json.loads((tmp_path / "a" / "_astrodask.json").read_text())
    assert meta["row_ids"]["generated"] and "--row-ids" in meta["row_ids"]["why"]
    # stable across reruns and block sizes
    s2 = convert(client, kaggle_csv, tmp_path / "b", row_ids=True)
    assert s2.row_ids["files"] == s.row_ids["files"]
    assert read(tmp_path / "b")["obj_ID"].tolist() == out["obj_ID"].tolist()
    assert FLAG | (tag << ROW_BITS) == int(out["obj_ID"].min())


def test_row_numbers_count_every_data_row_whatever_the_blocks(client, tmp_path):
    """source_row is the position among the file's data rows: malformed and quarantined rows count, blank
    lines do not, and block boundaries change nothing."""
    header = "obj_ID,u,g,r,i,z,class"
    rows = [f"{1.2376459429043896e18 + 256 * k!r},19,18,17,16,15,STAR" for k in range(3000)]
    rows[10] = "oops,too,many,fields,,,,,"  # malformed: quarantined, still row 10
    rows[20] = rows[20].replace("STAR", "COMET")  # quarantined
    text = header + "\n" + "\n".join(rows[:1500]) + "\n\n" + "\n".join(rows[1500:]) + "\n"
    (tmp_path / "f.csv").write_text(text)
    ref = None
    for bs in (4096, 32 * 1024, None):
        dest = tmp_path / f"ds{bs}"
        s = convert(client, tmp_path / "f.csv", dest, block_size=bs, row_ids=True)
        assert (s.read, s.quarantined) == (3000, 2)
        out = read(dest)
        assert out["source_row"].tolist() == [k for k in range(3000) if k not in (10, 20)]
        assert (out["source_obj_ID"] == pd.Series(rows).drop([10, 20]).str.split(",").str[0].tolist()).all()
        ref = out["obj_ID"].tolist() if ref is None else ref
        assert out["obj_ID"].tolist() == ref


@pytest.mark.realdata
def test_spreadsheet_export_converts_with_row_ids(client, tmp_path):
    if not DIRTY.is_file():
        pytest.skip(f"dirty spreadsheet export not found at {DIRTY}")
    s = convert(client, DIRTY, tmp_path / "ds", row_ids=True)
    assert (s.written, s.quarantined) == (9_999, 0)
    out = read(tmp_path / "ds")
    assert out["source_obj_ID"].iloc[0] == pd.read_csv(DIRTY, dtype=str, nrows=1)["obj_ID"].iloc[0]


@pytest.mark.cluster
def test_kaggle_format_whole_job_matches_the_integer_copy_and_joins_back(client, sample, kaggle_csv, tmp_path):
    """The job on the Kaggle-format file (with --row-ids) and on the integer-id copy: every row written and
    predicted, accuracy alike (the id-hash split differs, so not identical), and each prediction joins back
    to its input row through the dataset's source_row."""
    from astrodask.ingest import ConvertOptions
    from astrodask.learn import TrainOptions
    from astrodask.pipeline import JobConfig, run

    ints = tmp_path / "ints.csv"
    sample.to_csv(ints, index=False)
    res = {}
    for name, src, row_ids in (("ints", ints, False), ("kaggle", kaggle_csv, True)):
        cfg = JobConfig(sources=(str(src),), out=str(tmp_path / name), train=TrainOptions(epochs=40, report=False),
                        quiet=True,
                        convert=ConvertOptions(row_ids=row_ids))
        res[name] = run(cfg, client)
        assert res[name].model.report is None and res[name].evaluation.report is None  # report=False: neither
    assert res["kaggle"].dataset.written == len(sample)
    assert abs(res["kaggle"].evaluation.metrics.accuracy - res["ints"].evaluation.metrics.accuracy) < 0.02, res
    assert abs(res["kaggle"].model.metrics.accuracy - res["ints"].model.metrics.accuracy) < 0.03, res
    # the predictions themselves carry the source's id text and row: the join needs nothing else
    joined = read(tmp_path / "kaggle" / "predictions")
    assert len(joined) == len(sample) and joined["obj_ID"].is_unique and joined["source_row"].is_unique
    back = sample.iloc[joined["source_row"].to_numpy()]
    assert (joined["class"].to_numpy() == back["class"].to_numpy()).all()
    assert (joined["source_obj_ID"].to_numpy() == pd.read_csv(kaggle_csv, dtype=str)["obj_ID"]
            .iloc[joined["source_row"].to_numpy()].to_numpy()).all()


def test_cli_row_ids_summary(kaggle_csv, tmp_path):
    r = subprocess.run([sys.executable, "-m", "astrodask.cli", "convert", str(kaggle_csv), str(tmp_path / "ds"),
                        "--row-ids", "--workers", "1", "-q"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "written 6,000  quarantined 0" in r.stdout and "ids: generated (--row-ids" in r.stdout
