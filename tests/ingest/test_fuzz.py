"""Property test of the convert stage: random corrupt rows mixed into valid ones.

Whatever the mix (garbage text, NaN/inf, -9999, unknown classes, repeated ids, extra or missing fields,
non-UTF-8 bytes, empty lines, a last line without newline), rows read = written + quarantined, and the
output holds exactly the first valid occurrence of every valid id; every other row is in quarantine with a
reason.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from astrodask import ingest, schema
from astrodask.errors import AstrodaskError
from astrodask.ingest import ConvertConfig

HEADER = ["obj_ID", "alpha", "delta", "u", "g", "r", "i", "z", "class", "redshift", "MJD"]
FLOATS = ["alpha", "delta", "u", "g", "r", "i", "z", "redshift"]
ID_POOL = [0, 1, 7, 2**53 + 1, 2**63, 2**64 - 1] + [10**15 + 37 * k for k in range(24)]
# garbage: always at least one letter, and no letter of nan/inf/null/none/na/e, so it is never a number,
# a null token or a class name; no comma, quote or newline (those change the row structure, tested apart)
LETTERS = "bcdghjkmpqrstvwxzBCDGHJKMPQRSTVWXZ漢"
GARBAGE_ALPHABET = LETTERS + "0123456789 .-+_#@!$%&*()[]{}:;/|~'?<>^=é"
BAD_BYTES = [b"\xff", b"\xfe", b"\xc3\x28", b"\x80", b"\xed\xa0\x80"]


@pytest.fixture(scope="module")
def client():
    from distributed import Client

    with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=":0") as c:
        yield c


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


garbage = st.text(GARBAGE_ALPHABET, min_size=1, max_size=8).filter(lambda s: any(c in LETTERS for c in s))


@st.composite
def valid_row(draw) -> dict:
    mag = st.one_of(st.floats(*schema.MAGNITUDE_RANGE).map(repr), st.sampled_from(["-9999", "-9999.0", "", "nan", "NaN"]))
    row = {
        "obj_ID": str(draw(st.sampled_from(ID_POOL))),
        "alpha": repr(draw(st.floats(0, 360))),
        "delta": repr(draw(st.floats(-90, 90))),
        **{b: draw(mag) for b in schema.BANDS},
        "class": draw(st.sampled_from(schema.CLASSES).flatmap(
            lambda c: st.sampled_from([c, c.lower(), f" {c} ", c.title()]))),
        "redshift": draw(st.one_of(st.floats(*schema.REDSHIFT_RANGE).map(repr), st.just("-9999"))),
        "MJD": draw(st.one_of(st.integers(0, 2**32 - 1).map(str), st.just(""), st.just("-9999"))),
    }
    return row


@st.composite
def line(draw) -> tuple[str, bytes, dict | None]:
    """(kind, the line's bytes, the valid row or None). kind "empty" is no row at all."""
    row = draw(valid_row())
    kind = draw(st.sampled_from(["valid"] * 6 + ["garbage", "garbage_id", "non_finite", "nan_id", "class",
                                                  "range", "impossible", "extra", "missing", "utf8", "empty"]))
    fields = [row[c] for c in HEADER]
    if kind == "garbage":
        fields[HEADER.index(draw(st.sampled_from(FLOATS[2:] + ["MJD"])))] = draw(garbage)
    elif kind == "garbage_id":
        fields[0] = draw(garbage)
    elif kind == "non_finite":
        fields[HEADER.index(draw(st.sampled_from(FLOATS)))] = draw(st.sampled_from(["inf", "-inf", "Infinity"]))
    elif kind == "nan_id":
        fields[0] = draw(st.sampled_from(["nan", "NaN", "", "-1", "1.24E+18"]))
    elif kind == "class":
        fields[HEADER.index("class")] = draw(garbage)
    elif kind == "range":
        fields[1], fields[2] = draw(st.sampled_from([("360.5", "0"), ("-1", "0"), ("10", "90.5"), ("10", "-95")]))
    elif kind == "impossible":  # physically impossible magnitudes and redshifts
        column, text = draw(st.sampled_from([("u", "99"), ("g", "0"), ("r", "-3.5"), ("redshift", "1e6"),
                                             ("redshift", "-2")]))
        fields[HEADER.index(column)] = text
    elif kind == "extra":
        fields.append(draw(garbage))
    elif kind == "missing":
        fields = fields[: draw(st.integers(1, len(fields) - 1))]
    elif kind == "empty":
        return kind, b"", None
    data = ",".join(fields).encode()
    if kind == "utf8":
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.sampled_from(BAD_BYTES)) + data[at:]
    return kind, data, (row if kind == "valid" else None)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(lines=st.lists(line(), min_size=1, max_size=120), final_newline=st.booleans())
def test_random_corrupt_rows_are_accounted_for(client, workdir, lines, final_newline):
    d = workdir / uuid.uuid4().hex
    d.mkdir()
    src, dest = d / "in.csv", d / "ds"
    body = b"\n".join(data for _, data, _ in lines)
    if lines[-1][0] == "empty" and not final_newline:
        body += b"\n"  # an empty last "line" needs its newline to exist at all
    src.write_bytes(",".join(HEADER).encode() + b"\n" + body + (b"\n" if final_newline else b""))

    n_rows = sum(kind != "empty" for kind, _, _ in lines)
    valid = [row for _, _, row in lines if row is not None]
    first: dict[int, dict] = {}
    for row in valid:
        first.setdefault(int(row["obj_ID"]), row)
    cfg = ConvertConfig((str(src),), str(dest), block_size=4096, quiet=True)
    try:
        if not first:
            with pytest.raises(AstrodaskError) as e:
                ingest.run(cfg, client)
            assert "\n" not in str(e.value)
            assert ("no data rows" if n_rows == 0 else f"all {n_rows:,} rows rejected") in str(e.value)
            assert not dest.exists()
            return
        s = ingest.run(cfg, client)
        assert s.read == n_rows
        assert s.read == s.written + s.quarantined
        assert sum(s.reasons.values()) == s.quarantined
        assert s.written == len(first)

        out = pq.read_table(sorted(dest.glob("part-*.parquet"))).to_pandas()
        assert len(out) == s.written
        ids = [int(x) for x in out["obj_ID"]]
        assert len(set(ids)) == len(ids), "an id was written twice"
        assert set(ids) == set(first), "a valid id is missing from the output"
        # the kept row is the first valid occurrence (alpha is written as float64, exactly)
        for obj_id, alpha in zip(ids, out["alpha"]):
            assert alpha == float(first[obj_id]["alpha"])

        qfiles = sorted((dest / ingest.QUARANTINE_DIR).glob("*.parquet"))
        q = pa.concat_tables([pq.read_table(f) for f in qfiles]).to_pandas() if qfiles else None
        assert (0 if q is None else len(q)) == s.quarantined
        if q is not None:
            assert q["reason"].str.len().min() > 0
            assert Counter(q["reason"]) == Counter(s.reasons)
            # later valid occurrences of an id are the duplicate_id rows, one record each
            dup_ids = Counter(int(str(json.loads(r)["obj_ID"]).strip()) for r in q.loc[q["reason"] == "duplicate_id",
                                                                                            "record"])
            expected = Counter(int(row["obj_ID"]) for row in valid) - Counter(first.keys())
            assert dup_ids == expected
        else:
            assert len(valid) == len(first) == n_rows
    finally:
        shutil.rmtree(d, ignore_errors=True)
