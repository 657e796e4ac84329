"""Planning (client side): find the input files, probe their headers, map their columns, cut them into blocks.

No data row is read here: only CSV header lines, Parquet footers and FITS headers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import fsspec

from .. import schema
from ..console import log
from ..errors import AstrodaskError, ConfigError
from ..schema import ColumnError, ColumnMap
from ..storage import Location, options_for
from . import readers
from .config import ConvertConfig
from .readers import Block, Probe, ReaderOptions
from .readers import hats as hats_reader
from .readers.csv import split_ext

MiB = 1 << 20
MIN_BLOCK, MAX_BLOCK = 1 * MiB, 256 * MiB


def expand(sources: tuple[str, ...], storage_options: dict | None = None) -> list[str]:
    """Input files in order (globs sorted, directories expanded to their catalogue files, a HATS catalogue to
    its data files), each once."""
    files: list[str] = []
    for src in map(str, sources):
        url = "://" in src
        opts = options_for(src, storage_options) if url else None  # per-URL options (storage.options_for)
        try:
            fs, _, paths = fsspec.get_fs_token_paths(src, storage_options=opts)
        except (ValueError, ImportError, OSError) as exc:
            raise AstrodaskError(f"{src}: cannot open ({exc}); check the path or URL") from None
        if not paths:
            raise AstrodaskError(f"{src}: no such file; check the path")
        for p in paths:
            try:
                isdir, exists = fs.isdir(p), fs.exists(p)
            except PermissionError as exc:
                raise AstrodaskError(f"{src}: cannot open ({exc}); check the permissions or credentials (a public "
                                     f"object is read anonymously with --storage-options "
                                     f"'{{\"{src.split('://')[0]}://BUCKET\": {{\"anon\": true}}}}')") from None
            except OSError as exc:
                raise AstrodaskError(f"{src}: cannot open ({exc}); check the path or URL") from None
            if isdir and fs.exists(f"{p.rstrip('/')}/{hats_reader.PROPERTIES}"):  # a HATS catalogue: its data files
                inner = sorted(x for x in fs.find(f"{p.rstrip('/')}/{hats_reader.DATASET}")
                               if x.endswith(".parquet") and "Npix=" in x and not Path(x).name.startswith(("_", ".")))
                if not inner:
                    raise AstrodaskError(f"{src}: HATS catalogue without data files; check the catalogue")
                files.extend(fs.unstrip_protocol(x) if url else x for x in inner)
            elif isdir:
                inner = sorted(x for x in fs.find(p)
                               if not Path(x).name.startswith(("_", ".")) and split_ext(x)[0] in readers.EXTENSIONS)
                if not inner:
                    raise AstrodaskError(f"{src}: directory holds no CSV, Parquet or FITS files")
                files.extend(fs.unstrip_protocol(x) if url else x for x in inner)
            elif exists:
                files.append(fs.unstrip_protocol(p) if url else os.path.abspath(p))
            else:
                raise AstrodaskError(f"{src}: no such file; check the path")
    seen: set[str] = set()
    unique = [f for f in files if not (f in seen or seen.add(f))]
    if len(unique) < len(files):
        log(f"{len(files) - len(unique)} input file(s) named more than once; each is read once")
    return unique


def required_check(probe: Probe, mapping, row_ids: bool = False) -> None:
    """Refuse a file without an id (unless ids are generated) or one of the magnitudes u..z, naming what it has."""
    have = {c for _, c in mapping}
    missing = [c for c in schema.REQUIRED if c not in have and not (row_ids and c == schema.ID)]
    if missing:
        columns = list(probe.columns)
        shown = ", ".join(columns[:12]) + (" ..." if len(columns) > 12 else "")
        skipped = f"; not readable: {', '.join(probe.unread)}" if probe.unread else ""
        raise AstrodaskError(
            f"{probe.source}: missing required column(s) {', '.join(missing)} (found: {shown}{skipped}); the input "
            "needs an id (obj_ID or objid) and the magnitudes u, g, r, i, z (FITS: five-element band arrays or "
            "scalars)"
        )


def auto_block_size(total: int, workers: int) -> int:
    """About four blocks per worker thread, between 1 MiB and 256 MiB."""
    target = total // max(1, 4 * workers)
    return int(min(MAX_BLOCK, max(MIN_BLOCK, target)))


@dataclass(frozen=True)
class InputFile:
    """One input as planned: its reader and how its columns fill the canonical ones."""

    source: str
    layout: str
    magnitudes: str
    """Which magnitudes fill u..z (``schema.ColumnMap.magnitudes``)."""
    columns_from: tuple[tuple[str, str], ...]
    """(canonical column, source column) pairs."""


@dataclass(frozen=True)
class Plan:
    """The blocks to convert and what was learnt about each input."""

    blocks: tuple[Block, ...]
    inputs: tuple[InputFile, ...]


def probe_all(cfg: ConvertConfig) -> list[tuple[Probe, ColumnMap]]:
    """(probe, column map) of every input file, checked for the required columns."""
    out = []
    options = ReaderOptions.of(cfg)
    for f in expand(cfg.sources, cfg.storage_options):
        loc = Location.of(f, cfg.storage_options)
        p = readers.probe(loc, f, options)
        try:
            cmap = readers.get(p.reader).columns(p, options)
        except ColumnError as exc:
            raise AstrodaskError(f"{f}: {exc}") from None
        required_check(p, cmap.pairs, cfg.row_ids)
        out.append((p, cmap))
    return out


def make_plan(cfg: ConvertConfig, n_threads: int = 2) -> Plan:
    """Cut the inputs into blocks. Reads headers and footers only: no data row is read on the client."""
    probed = probe_all(cfg)
    present = {c for _, m in probed for _, c in m.pairs}
    if cfg.row_ids:
        present |= {schema.ID, schema.SOURCE_ID, schema.SOURCE_ROW}
        if "spec_obj_ID" in present:
            present.add(schema.SOURCE_SPEC_ID)
    out_columns = tuple(c for c in schema.ALL_COLUMNS if c in present)
    bs = cfg.block_size or auto_block_size(sum(p.nbytes for p, _ in probed), n_threads)
    blocks: list[Block] = []
    if cfg.photometry and not any(p.layout == "sdss-specobj" for p, _ in probed):
        raise ConfigError("photometry", "is only for a specObj file", "drop --photometry or convert the specObj file")
    reader_options = ReaderOptions.of(cfg)
    for p, cmap in probed:
        reader = readers.get(p.reader)
        options = reader.block_options(p, reader_options)
        for extent, first_row in reader.plan(p, bs):
            blocks.append(Block(len(blocks), p.source, p.location, p.reader, extent, p.columns, cmap.pairs,
                                out_columns, first_row, options, alternates=cmap.alternates))
    inputs = tuple(InputFile(p.source, p.layout, m.magnitudes, tuple((c, s) for s, c in m.pairs)) for p, m in probed)
    return Plan(tuple(blocks), inputs)


def plan_blocks(cfg: ConvertConfig, n_threads: int = 2) -> list[Block]:
    """The blocks of :func:`make_plan`."""
    return list(make_plan(cfg, n_threads).blocks)
