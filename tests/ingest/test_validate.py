"""Convert's pure parts, without a cluster: column-name resolution, the block size, and every validation rule
(``ingest.validate``) on text and typed columns."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from astrodask import schema
from astrodask.ingest import plan, validate

KAGGLE = ["obj_ID", "alpha", "delta", "u", "g", "r", "i", "z", "class", "redshift", "MJD"]
BANDS = list(schema.BANDS)


def good_row(i: int, cls: str = "STAR") -> dict:
    return {"obj_ID": 1000 + i, "alpha": 10.0 + i / 100, "delta": -5.0 + i / 100, "u": 19.5, "g": 18.25,
            "r": 17.75, "i": 17.5, "z": 17.25, "class": cls, "redshift": 0.001 * i, "MJD": 55000 + i}


def test_canonical_names_kaggle_skyserver_and_duplicated_z():
    assert schema.canonical_names(KAGGLE) == {c: c for c in KAGGLE}
    sky = ["objid", "ra", "dec", "u", "g", "r", "i", "z", "run", "rerun", "camcol", "field", "specobjid",
           "class", "z", "plate", "mjd", "fiberid"]
    m = schema.canonical_names(sky)
    assert m["z"] == "z" and m["z.1"] == "redshift"
    assert set(m.values()) == set(schema.COLUMNS) - set(schema.PSF_BANDS) - {schema.ZWARNING}  # no PSF magnitudes, no zWarning
    assert m["objid"] == "obj_ID" and m["ra"] == "alpha" and m["camcol"] == "cam_col" and m["fiberid"] == "fiber_ID"
    # a pandas-style second z, and an explicit redshift winning over it
    assert schema.canonical_names(["objid", *BANDS, "z.1"])["z.1"] == "redshift"
    assert "z.1" not in schema.canonical_names(["objid", *BANDS, "z.1", "redshift"])
    # SkyServer's SpecObj.z beside prefixed band names is the redshift; modelMag wins over psfMag
    m = schema.canonical_names(["objID", *(f"psfMag_{b}" for b in BANDS), *(f"modelMag_{b}" for b in BANDS), "z"])
    assert m["z"] == "redshift" and m["modelMag_u"] == "u" and m["psfMag_u"] == "psf_u"  # kept as psf_u
    assert schema.unique_names(["z", "a", "z", "z"]) == ["z", "a", "z.1", "z.2"]


def test_auto_block_size_bounds():
    assert plan.auto_block_size(0, 2) == plan.MIN_BLOCK
    assert plan.auto_block_size(10 * 2**30, 2) == plan.MAX_BLOCK
    assert plan.auto_block_size(800 * 2**20, 2) == 100 * 2**20


# ------------------------------------------------------------------------------------------------ inputs


RULES = [
    # (column, bad text, expected reason, or None when the row stays with a null value)
    ("u", "-9999", None),
    ("g", "-999", None),
    ("redshift", "9999", None),
    ("z", "", None),
    ("u", "NaN", None),
    ("r", "nan", None),
    ("u", "abc", "non_numeric:u"),
    ("g", "1.2.3", "non_numeric:g"),
    ("i", "inf", "non_finite:i"),
    ("redshift", "-Infinity", "non_finite:redshift"),
    ("u", "1e39", "out_of_range:u"),
    ("alpha", "360.5", "out_of_range:alpha"),
    ("alpha", "-0.1", "out_of_range:alpha"),
    ("delta", "90.01", "out_of_range:delta"),
    ("delta", "-91", "out_of_range:delta"),
    ("class", "PLANET", "unknown_class"),
    ("class", "", None),  # unlabelled: kept, class null
    ("obj_ID", "NaN", "invalid_id:obj_ID"),
    ("obj_ID", "", "invalid_id:obj_ID"),
    ("obj_ID", "-5", "invalid_id:obj_ID"),
    ("obj_ID", "12x", "invalid_id:obj_ID"),
    ("obj_ID", "0x10", "invalid_id:obj_ID"),
    ("obj_ID", "18446744073709551616", "invalid_id:obj_ID"),
    ("obj_ID", "1.24E+18", "id_float_notation:obj_ID"),
    ("MJD", "5.5E+4", "id_float_notation:MJD"),
    ("MJD", "55000.5", "not_integer:MJD"),
    ("MJD", "-3", "out_of_range:MJD"),
    ("MJD", "4294967296", "out_of_range:MJD"),
    ("MJD", "-9999", None),
]


@pytest.mark.parametrize("column, text, reason", RULES, ids=[f"{c}={t!r}" for c, t, _ in RULES])
def test_validation_rule(column, text, reason):
    rows = [{c: str(v) for c, v in good_row(k).items()} for k in range(4)]
    rows[2][column] = text
    raw = pa.table({c: pa.array([r[c] for r in rows], pa.string()) for c in KAGGLE})
    good, rej = validate(raw, schema.canonical_names(KAGGLE))
    if reason is None:
        assert good.num_rows == 4 and rej.num_rows == 0
        assert good.column(column)[2].as_py() is None
        assert good.column(column)[1].is_valid
    else:
        assert good.num_rows == 3 and rej.column("reason").to_pylist() == [reason]
        assert rej.column("row").to_pylist() == [2]
        assert json.loads(rej.column("record")[0].as_py())[column] == text  # the raw text is kept
        assert 1002 not in good.column("obj_ID").to_pylist()


def test_validation_keeps_good_text_forms():
    """Whitespace, case, a leading +, zero-padded ids and "123.0" integers are read, not rejected."""
    raw = pa.table({c: pa.array([str(v)], pa.string()) for c, v in good_row(1).items()})
    raw = raw.set_column(0, "obj_ID", pa.array([" 0001001 "]))
    raw = raw.set_column(3, "u", pa.array(["+19.5 "]))
    raw = raw.set_column(8, "class", pa.array([" galaxy "]))
    raw = raw.set_column(10, "MJD", pa.array(["55001.0"]))
    good, rej = validate(raw, schema.canonical_names(KAGGLE))
    assert rej.num_rows == 0
    row = good.to_pylist()[0]
    assert (row["obj_ID"], row["u"], row["class"], row["MJD"]) == (1001, 19.5, "GALAXY", 55001)


def test_validation_of_typed_columns():
    """Parquet/FITS columns arrive typed: NaN and negative ids, float ids beyond 2**53, inf, sentinels."""
    raw = pa.table({
        "obj_ID": pa.array([1.0, np.nan, -2.0, 2.0**60, 5.0, 6.0, 7.0]),
        "u": pa.array([21, 22, 23, 24, -9999, 26, 27], pa.int64()),
        "g": pa.array([21.0, 22, 23, 24, 25, np.inf, 27]),
        **{b: pa.array([21.0] * 7, pa.float32()) for b in BANDS[2:]},
        "class": pa.array([b"STAR  ", b"QSO", b"QSO", b"QSO", b"GALAXY", b"QSO", b"COMET"]),
    })
    good, rej = validate(raw, schema.canonical_names(raw.column_names))
    assert good.column("obj_ID").to_pylist() == [1, 5]
    assert good.column("u").to_pylist() == [21.0, None]
    assert good.column("class").to_pylist() == ["STAR", "GALAXY"]
    assert rej.column("reason").to_pylist() == ["invalid_id:obj_ID", "invalid_id:obj_ID", "id_float_notation:obj_ID",
                                                "non_finite:g", "unknown_class"]


def test_validation_of_text_columns_with_nulls():
    """Parquet string columns may hold nulls: a null id is invalid, a null magnitude is missing."""
    raw = pa.table({
        "obj_ID": pa.array(["1", None, "3"]), **{b: pa.array(["21.5", None, "22"]) for b in BANDS},
        "class": pa.array(["STAR", "QSO", None]),
    })
    good, rej = validate(raw, schema.canonical_names(raw.column_names))
    assert good.column("obj_ID").to_pylist() == [1, 3]  # 3 is unlabelled: kept with a null class
    assert good.column("class").to_pylist() == ["STAR", None]
    assert rej.column("reason").to_pylist() == ["invalid_id:obj_ID"]
