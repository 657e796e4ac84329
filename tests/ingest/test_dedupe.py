"""ingest.dedupe's worker functions on hand-made parts, without a cluster: repeated ids found by bucket, and the
later occurrences moved to the duplicate quarantine with the part rewritten without them."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from astrodask import schema
from astrodask.ingest import dedupe
from astrodask.ingest.tasks import QUARANTINE_DIR, dup_name, part_name
from astrodask.storage import Location


def _part(stage, index: int, ids) -> Location:
    ids = np.asarray(ids, np.uint64)
    t = pa.table({schema.ID: pa.array(ids, pa.uint64()), "u": pa.array(np.arange(len(ids), dtype=np.float32))},
                 schema=schema.arrow_schema([schema.ID, "u"]))
    path = Location.of(stage) / part_name(index)
    pq.write_table(t, path.url)
    return path


def test_repeated_ids_are_found_in_every_bucket(tmp_path):
    files = [_part(tmp_path, 0, [1, 2, 3, 4]), _part(tmp_path, 1, [4, 5, 6, 1]), _part(tmp_path, 2, [7, 7, 8])]
    assert dedupe.dup_ids(files, 0, 1).tolist() == [1, 4, 7]
    found = np.concatenate([dedupe.dup_ids(files, b, 3) for b in range(3)])
    assert sorted(found.tolist()) == [1, 4, 7]  # split by id mod 3, none lost or doubled
    hits = dedupe.ids_in(files[1], np.array([1, 4], np.uint64))
    assert hits["row"].tolist() == [0, 3] and hits[schema.ID].tolist() == [4, 1]


def test_later_occurrences_move_to_quarantine_and_the_part_keeps_the_rest(tmp_path):
    (tmp_path / QUARANTINE_DIR).mkdir()
    _part(tmp_path, 1, [4, 5, 6, 1])
    assert dedupe.move_duplicates(Location.of(tmp_path), 1, [0, 3]) == 2
    kept = pq.read_table(tmp_path / part_name(1))
    assert kept.column(schema.ID).to_pylist() == [5, 6]
    q = pq.read_table(tmp_path / QUARANTINE_DIR / dup_name(1)).to_pandas()
    assert q["reason"].tolist() == ["duplicate_id", "duplicate_id"] and q["row"].tolist() == [0, 3]
    assert q.columns.tolist() == schema.QUARANTINE_SCHEMA.names
    assert q["source"].tolist() == [part_name(1)] * 2  # without its block: the part and the converted values
