"""Parquet files: cut into groups of row groups (about a million rows per block), read column by column."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from ... import schema
from ...errors import AstrodaskError
from ...storage import Location
from .base import Block, Chunk, Extent, Probe, Reader, ReaderOptions, one_line, open_input

PARQUET_BLOCK_ROWS = 1_000_000


@dataclass(frozen=True)
class RowGroups(Extent):
    """Row groups ``[start, start + count)`` of a Parquet file."""

    start: int
    count: int


@dataclass(frozen=True)
class ParquetFooter:
    """Row counts of one Parquet file's row groups."""

    group_rows: tuple[int, ...]


class ParquetReader(Reader):
    name = "parquet"
    extensions = (".parquet", ".pq")

    def probe(self, loc: Location, source: str, options: ReaderOptions) -> Probe:
        try:
            with open_input(loc) as fh:
                pf = pq.ParquetFile(fh)
                names, md = list(pf.schema_arrow.names), pf.metadata
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise AstrodaskError(f"{source}: not a readable Parquet file ({one_line(exc)}); check the file") from None
        groups = tuple(md.row_group(k).num_rows for k in range(md.num_row_groups))
        header = tuple(c.strip() for c in names)
        return Probe(source, loc, self.name, tuple(schema.unique_names(list(header))), 0, md.num_rows,
                     layout="parquet", detail=ParquetFooter(groups), header=header)

    def plan(self, probe: Probe, block_bytes: int) -> list[tuple[Extent, int | None]]:
        groups = probe.detail.group_rows
        per_group = sum(groups) / max(1, len(groups))
        per = max(1, math.ceil(PARQUET_BLOCK_ROWS / max(1.0, per_group)))
        out: list[tuple[Extent, int | None]] = []
        for rg in range(0, len(groups), per):
            out.append((RowGroups(rg, min(per, len(groups) - rg)), sum(groups[:rg])))
        return out

    def read(self, block: Block) -> Iterator[Chunk]:
        e: RowGroups = block.extent
        want = {src for src, _ in (*block.mapping, *block.alternates)}
        try:
            with open_input(block.location) as fh:
                pf = pq.ParquetFile(fh)
                names = pf.schema_arrow.names
                unique = schema.unique_names([c.strip() for c in names])
                keep = [names[k] for k, u in enumerate(unique) if u in want]
                t = pf.read_row_groups(range(e.start, e.start + e.count), columns=keep)
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise AstrodaskError(f"{block.source}: cannot read row groups {e.start}..{e.start + e.count - 1} "
                                 f"({one_line(exc)}); check the file") from None
        t = t.rename_columns([unique[names.index(c)] for c in t.column_names])
        yield Chunk(t)
