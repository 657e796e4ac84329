"""The worker task of the convert stage: read, validate and write one block; the files it leaves behind.

Valid rows go to ``part-NNNNN.parquet`` in the canonical schema, rejected rows to
``_quarantine/part-NNNNN.parquet``, and the block's counts to ``_blocks/NNNNN.json`` (written last: a block
whose marker is there and whose files agree with it is done, see :func:`block_done`).

Quarantine rows hold ``reason``, ``source`` (the input file), ``block``, ``row`` (position among the block's
rows, blank lines not counted) and ``record`` (the raw row as JSON: text for CSV).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import asdict, astuple, dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .. import schema
from ..storage import FileCheck, Location, ParquetStream, parquet_rows, read_json, write_json_atomic
from . import readers
from .ids import RowIds
from .readers import Block, Chunk
from .validate import Checked, check

QUARANTINE_DIR = "_quarantine"
BLOCKS_DIR = "_blocks"
ROW_GROUPS_PER_CHUNK = 4


def part_name(i: int) -> str:
    return f"part-{i:05d}.parquet"


def dup_name(i: int) -> str:
    return f"dup-{i:05d}.parquet"


def marker(stage: Location, i: int) -> Location:
    return stage / BLOCKS_DIR / f"{i:05d}.json"


@dataclass
class BlockCounts:
    """What one block task did (also its done-marker, as JSON)."""

    block: int
    source: str
    extent: list
    """The block's extent (its reader's fields, in order): a marker is only trusted for the same extent."""
    chunks: int = 0
    read: int = 0
    written: int = 0
    quarantined: int = 0
    reasons: dict = field(default_factory=dict)
    filtered: dict = field(default_factory=dict)
    """Rows removed by each named quality cut."""
    checks: dict = field(default_factory=dict)
    """Size, digest and rows of each file the block wrote (path below the dataset -> ``FileCheck.to_json()``),
    for the manifest."""

    @classmethod
    def from_json(cls, doc: dict) -> BlockCounts:
        return cls(**{k: doc[k] for k in cls.__dataclass_fields__ if k in doc})

    def file_checks(self) -> dict[str, FileCheck]:
        return {rel: c for rel, c in ((rel, FileCheck.from_json(d)) for rel, d in self.checks.items()) if c}


def extent_key(b: Block) -> list:
    """A block's extent as JSON values: what a done-marker is checked against."""
    return json.loads(json.dumps(astuple(b.extent)))


class PartWriter(ParquetStream):
    """A Parquet part file that becomes visible whole on ``close`` (see storage.ParquetStream)."""

    def __init__(self, path: Location, sch: pa.Schema, min_row_group: int):
        super().__init__(path, sch, min_row_group,
                         dictionary=[c for c in schema.DICTIONARY_COLUMNS if c in sch.names])

    def write(self, t: pa.Table) -> None:
        super().write(t, max(self.min_row_group, math.ceil(t.num_rows / ROW_GROUPS_PER_CHUNK)))


def quarantine_table(rej: pa.Table, source: str, block: int, row_offset: int = 0) -> pa.Table:
    n = rej.num_rows
    return pa.table({
        "reason": rej.column("reason"),
        "source": pa.array([source] * n, pa.string()),
        "block": pa.array(np.full(n, block, np.int64)),
        "row": pc.add(rej.column("row"), pa.scalar(row_offset, pa.int64())),
        "record": rej.column("record"),
    }, schema=schema.QUARANTINE_SCHEMA)


def with_malformed(rej: pa.Table, n_parsed: int, malformed: list[tuple[int, str]]) -> pa.Table:
    """Rejected rows plus the lines the parser refused, ``row`` counted over all the chunk's data lines.

    The parser numbers its rows from 1 over the non-blank lines; the validation counts parsed rows only.
    """
    lines = np.array([r - 1 for r, _ in malformed], np.int64)
    rows = rej.column("row").to_numpy()
    if (lines >= 0).all():
        parsed_line = np.delete(np.arange(n_parsed + len(lines)), lines)
        rows = parsed_line[rows]
    bad = pa.table({
        "reason": pa.array(["malformed_row"] * len(malformed), pa.string()),
        "row": pa.array(lines),
        "record": pa.array([json.dumps({"text": t}) for _, t in malformed], pa.string()),
    })
    return pa.concat_tables([rej.set_column(1, "row", pa.array(rows, pa.int64())), bad])


def parsed_positions(chunk) -> np.ndarray:
    """Position of each parsed row among the chunk's rows (the parser's refused lines count as rows)."""
    n = chunk.table.num_rows
    lines = np.array([r - 1 for r, _ in chunk.malformed], np.int64)
    if len(lines) and (lines >= 0).all():
        return np.delete(np.arange(n + len(lines)), lines).astype(np.uint64)
    return np.arange(n, dtype=np.uint64)


def count_rows(b: Block) -> int:
    """Worker task: the block's rows as the conversion counts them (the row-numbering pass of --row-ids)."""
    return sum(chunk.rows for chunk in readers.get(b.reader).read(b))


def block_columns(b: Block) -> tuple[str, ...]:
    return b.out_columns or tuple(c for c in schema.COLUMNS if c in {c for _, c in b.mapping})


def checked_chunks(b: Block, out_cols) -> Iterator[tuple[Chunk, Checked, int]]:
    """(chunk, its check, the block's rows before it) for each chunk of ``b``: what ``convert_block`` writes, and
    what the dedupe pass replays to find a part row's input record."""
    before = 0
    for chunk in readers.get(b.reader).read(b):
        row_ids = None
        if b.id_tag is not None:
            row_ids = RowIds(b.id_tag, np.uint64(b.first_row + before) + parsed_positions(chunk))
        try:
            checked = check(chunk.table, b.mapping, out_cols, chunk.utf8_replaced, row_ids=row_ids,
                            cuts=chunk.cuts, rejects=chunk.rejects, alternates=b.alternates)
        except schema.ColumnError as exc:
            raise schema.ColumnError(f"{b.source}: {exc}") from None
        yield chunk, checked, before
        before += chunk.rows


def input_records(b: Block, part_rows: list[int]) -> tuple[list[int], list[str]] | None:
    """(row in the block, raw input record as JSON) of rows ``part_rows`` of ``b``'s part, by reading the block
    again; None when the block no longer gives that part (the input changed)."""
    want = np.asarray(sorted(part_rows), np.int64)
    rows, records, at = [], [], 0
    for chunk, checked, before in checked_chunks(b, block_columns(b)):
        kept = checked.kept
        here = want[(want >= at) & (want < at + len(kept))] - at
        if len(here):
            pos = kept[here]
            rows += (before + parsed_positions(chunk)[pos].astype(np.int64)).tolist()
            records += [json.dumps(r, default=str) for r in chunk.table.take(pa.array(pos, pa.int64())).to_pylist()]
        at += len(kept)
    return (rows, records) if len(rows) == len(want) else None


def convert_block(b: Block, staging: Location, row_group_size: int = 131072) -> BlockCounts:
    """Worker task: read, validate and write one block; return its counts (also written as its done-marker).

    ``row`` in the block's quarantine is the row's position (from 0) among the block's rows: its data lines,
    blank lines not counted (for a FITS or Parquet block, its rows).
    """
    stage = Location.of(staging)
    marker(stage, b.index).remove()
    (stage / QUARANTINE_DIR / dup_name(b.index)).remove()
    (stage / QUARANTINE_DIR / part_name(b.index)).remove()
    out_cols = block_columns(b)
    good_w = PartWriter(stage / part_name(b.index), schema.arrow_schema(out_cols), row_group_size)
    quar_w = PartWriter(stage / QUARANTINE_DIR / part_name(b.index), schema.QUARANTINE_SCHEMA, row_group_size)
    counts = BlockCounts(b.index, b.source, extent_key(b))
    try:
        for chunk, checked, _ in checked_chunks(b, out_cols):
            good, rej = checked.good, checked.rejected
            for cut, n in checked.filtered.items():
                counts.filtered[cut] = counts.filtered.get(cut, 0) + n
            if chunk.malformed:
                rej = with_malformed(rej, chunk.table.num_rows, chunk.malformed)
            good_w.write(good)
            if rej.num_rows:
                quar_w.write(quarantine_table(rej, b.source, b.index, counts.read))
                for vc in pc.value_counts(rej.column("reason")).to_pylist():
                    counts.reasons[vc["values"]] = counts.reasons.get(vc["values"], 0) + vc["counts"]
            counts.read += chunk.rows
            counts.chunks += 1
        good_w.close()
        counts.checks[part_name(b.index)] = good_w.check.to_json()
        if quar_w.rows:
            quar_w.close()
            counts.checks[f"{QUARANTINE_DIR}/{part_name(b.index)}"] = quar_w.check.to_json()
        else:
            quar_w.abort()
    except BaseException:
        good_w.abort()
        quar_w.abort()
        raise
    counts.written, counts.quarantined = good_w.rows, quar_w.rows
    if counts.read != counts.written + counts.quarantined + sum(counts.filtered.values()):  # pragma: no cover
        raise AssertionError(f"block {b.index}: read {counts.read} != written {counts.written} + quarantined "
                             f"{counts.quarantined}")
    write_json_atomic(marker(stage, b.index), asdict(counts))
    return counts


def part_nulls(path: Location) -> dict[str, int]:
    """Null count of every column of a Parquet part, from its footer statistics (no data is read)."""
    from ..storage import parquet_file

    out: dict[str, int] = {}
    try:
        with parquet_file(path) as pf:
            md, names = pf.metadata, pf.schema_arrow.names
    except (OSError, pa.ArrowException, ValueError):
        return out
    for k, name in enumerate(names):
        n = 0
        for rg in range(md.num_row_groups):
            st = md.row_group(rg).column(k).statistics
            if st is None or not st.has_null_count:
                n = None
                break
            n += st.null_count
        if n is not None:
            out[name] = n
    return out


def block_done(stage: Location, b: Block) -> BlockCounts | None:
    """Counts of a block already converted and verified by row count (Parquet footers), else None."""
    try:
        counts = BlockCounts.from_json(read_json(marker(stage, b.index)))
    except (OSError, ValueError, TypeError, KeyError, Exception):  # noqa: BLE001 - any unreadable marker
        return None
    if (counts.source, counts.extent) != (b.source, extent_key(b)):
        return None
    recorded = counts.file_checks().get(part_name(b.index))
    try:  # a part rewritten after its marker (the duplicates moved out, the marker not yet updated): redo it
        if recorded is not None and (stage / part_name(b.index)).size() != recorded.size:
            return None
    except (OSError, KeyError, ValueError):
        return None
    good = parquet_rows(stage / part_name(b.index))
    quar = parquet_rows(stage / QUARANTINE_DIR / part_name(b.index)) if counts.quarantined else 0
    dup = parquet_rows(stage / QUARANTINE_DIR / dup_name(b.index)) or 0
    if good is None or quar is None or quar != counts.quarantined or \
            good + quar + dup + sum(counts.filtered.values()) != counts.read:
        return None
    return counts
