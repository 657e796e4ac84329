"""Repeated ids across blocks and files: all but the first occurrence (in input order) go to quarantine.

Runs after every block is written. Ids are hash-partitioned into buckets of a few million rows, one task
each; only the repeated ids reach the client. The rows moved are recorded like every other quarantined row (input
file as ``source``, row in its block, raw input record) in ``_quarantine/dup-NNNNN.parquet``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, replace

import numpy as np
import pandas as pd
import pyarrow as pa

from .. import schema
from ..console import log, track
from ..storage import Location, parquet_rows, read_json, read_parquet, write_json_atomic
from .readers import Block
from .tasks import QUARANTINE_DIR, BlockCounts, PartWriter, dup_name, input_records, marker, part_name

DEDUPE_BUCKET_ROWS = 4_000_000


def dup_ids(files: list, bucket: int, n_buckets: int) -> np.ndarray:
    """Worker task: the ids of bucket ``bucket`` (id mod n_buckets) that occur more than once in ``files``."""
    ids = []
    for f in files:
        x = read_parquet(f, columns=[schema.ID]).column(0).to_numpy()
        ids.append(x if n_buckets == 1 else x[x % np.uint64(n_buckets) == np.uint64(bucket)])
    allids = pd.Series(np.concatenate(ids) if ids else np.zeros(0, np.uint64))
    return np.unique(allids[allids.duplicated()].to_numpy())


def ids_in(path: Location, dups: np.ndarray) -> pd.DataFrame:
    """Worker task: (row, id) of the rows of ``path`` whose id is in ``dups``."""
    ids = read_parquet(path, columns=[schema.ID]).column(0).to_numpy()
    rows = np.flatnonzero(np.isin(ids, dups))
    return pd.DataFrame({"row": rows, schema.ID: ids[rows]})


def move_duplicates(staging: Location, index: int, rows: list[int], row_group_size: int = 131072,
                    block: Block | None = None) -> int:
    """Worker task: move ``rows`` of part ``index`` to its duplicate quarantine file.

    With ``block`` (the part's block), each moved row is recorded as every other quarantined row is: its input
    file, its row in the block and the raw input record (the block is read again to find them); without it, or
    when the input no longer gives the part, the part's name, its row in the part and the converted values.

    The quarantine file is written first, then the part without those rows, then the block's marker with their
    new sizes and digests; a block whose part still holds them fails the resume check (rows + quarantined !=
    read), and one whose part no longer has the marker's size is converted again.
    """
    stage = Location.of(staging)
    t = read_parquet(stage / part_name(index))
    mask = np.zeros(t.num_rows, bool)
    mask[rows] = True
    rows = sorted(rows)
    found = input_records(block, rows) if block is not None else None
    if found is not None:
        source, (where, records) = block.source, found
    else:
        source, where = part_name(index), rows
        records = [json.dumps(r, default=str) for r in t.filter(pa.array(mask)).to_pylist()]
    q = pa.table({
        "reason": pa.array(["duplicate_id"] * len(rows), pa.string()),
        "source": pa.array([source] * len(rows), pa.string()),
        "block": pa.array([index] * len(rows), pa.int64()),
        "row": pa.array(where, pa.int64()),
        "record": pa.array(records, pa.string()),
    }, schema=schema.QUARANTINE_SCHEMA)
    kept = t.filter(pa.array(~mask))
    checks = {}
    for rel, table in ((f"{QUARANTINE_DIR}/{dup_name(index)}", q), (part_name(index), kept)):
        w = PartWriter(stage / rel, table.schema, row_group_size)
        w.write(table)
        w.close()
        checks[rel] = w.check.to_json()
    try:
        counts = BlockCounts.from_json(read_json(marker(stage, index)))
    except FileNotFoundError:  # no marker: nothing records the part's old check
        return len(rows)
    write_json_atomic(marker(stage, index), asdict(replace(counts, checks={**counts.checks, **checks})))
    return len(rows)


def dedupe(client, stage: Location, blocks: list[Block], row_group_size: int, quiet: bool) -> int:
    """Move later occurrences of ids repeated across blocks (or across chunks of one block) to quarantine.

    First occurrence = lowest (block, row), i.e. input order. Only the repeated ids reach the client.
    """
    part_rows = {b.index: parquet_rows(stage / part_name(b.index)) or 0 for b in blocks}
    files = [stage / part_name(b.index) for b in blocks if part_rows[b.index] > 0]
    multi_chunk = any(read_json(marker(stage, b.index)).get("chunks", 1) > 1 for b in blocks)
    if not files or (len(files) < 2 and not multi_chunk):
        return 0
    n_buckets = max(1, math.ceil(sum(part_rows.values()) / DEDUPE_BUCKET_ROWS))
    futs = [client.submit(dup_ids, files, k, n_buckets, pure=False) for k in range(n_buckets)]
    found_ids = np.concatenate(track(futs, "duplicates", quiet))
    if not len(found_ids):
        return 0
    [dup_f] = client.scatter([found_ids], broadcast=True)
    found = track(client.map(ids_in, files, dups=dup_f, pure=False), "duplicates", quiet)
    hits = pd.concat([f.assign(part=int(p.name.split(".")[0].split("-")[1])) for f, p in zip(found, files)])
    hits = hits.sort_values(["part", "row"], kind="stable")
    later = hits[hits.duplicated(schema.ID, keep="first")]
    moves = [(int(p), g["row"].tolist()) for p, g in later.groupby("part")]
    by_index = {b.index: b for b in blocks}
    track([client.submit(move_duplicates, stage, p, rows, row_group_size, by_index.get(p), pure=False)
           for p, rows in moves], "dedupe", quiet)
    log(f"moved {len(later):,} rows with repeated {schema.ID} to quarantine")
    return len(later)
