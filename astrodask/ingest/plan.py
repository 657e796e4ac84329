"""Planning (client side): find the input files, probe their headers, map their columns, cut them into blocks.

No data row is read here: only CSV header lines, Parquet footers and FITS headers.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import fsspec

from .. import schema
from ..console import log
from ..errors import AstrodaskError, ConfigError
from ..schema import ColumnError, ColumnMap
from ..storage import META, STAGING_MARKER, SUCCESS, Location, options_for
from ..storage.options import check_storage_options
from . import readers
from .config import ConvertConfig
from .readers import Block, Probe, ReaderOptions
from .readers import hats as hats_reader
from .readers.csv import split_ext

MiB = 1 << 20
MIN_BLOCK, MAX_BLOCK = 1 * MiB, 256 * MiB


OUTPUT_MARKERS = (META, SUCCESS, STAGING_MARKER)
"""A directory holding one of these is an astrodask output (dataset, quarantine, predictions, model...)."""
LOOSE_TEXT = (".txt", ".dat")
"""Found in a directory, a file with one of these extensions that is not a catalogue (a README.txt) is skipped."""


class Source(NamedTuple):
    """One input file and whether it was found by walking a directory (not named, nor matched by a glob)."""

    path: str
    found: bool = False


def _output_kind(fs, path: str) -> str | None:
    """``"dataset"`` etc. when ``path`` (a directory) is an astrodask output, else None."""
    root = path.rstrip("/")
    if not any(fs.exists(f"{root}/{m}") for m in OUTPUT_MARKERS):
        return None
    try:
        with fs.open(f"{root}/{META}", "rb") as fh:
            return str(json.load(fh).get("kind") or "output")
    except (OSError, ValueError, AttributeError):
        return "output"


def _walk(fs, root: str) -> tuple[list[str], list[str], list[str]]:
    """(catalogue files, astrodask outputs inside, other files) under the directory ``root``. A path with a part
    starting with ``_`` or ``.`` (``_quarantine``, a staging directory) is never an input."""
    root = root.rstrip("/")
    everything = sorted(fs.find(root))
    outputs = sorted({x.rsplit("/", 1)[0] for x in everything if x.rsplit("/", 1)[-1] in OUTPUT_MARKERS})
    files, other = [], []
    for x in everything:
        rel = x[len(root):].strip("/").split("/")
        if any(part.startswith(("_", ".")) for part in rel) or any(x.startswith(o + "/") for o in outputs):
            continue
        (files if split_ext(x)[0] in readers.EXTENSIONS else other).append(x)
    return files, outputs, other


def _regular_file(src: str, p: str) -> None:
    """Refuse a local FIFO, socket or device up front (opening a FIFO would wait for a writer forever)."""
    try:
        mode = os.stat(p).st_mode
    except OSError:
        return
    if not stat.S_ISREG(mode):
        kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a file")
        raise AstrodaskError(f"{src}: not a regular file ({kind}); give a catalogue file (CSV, Parquet or FITS) "
                             "or a directory of them")


def expand(sources: tuple[str, ...], storage_options: dict | None = None) -> list[Source]:
    """Input files in order (globs sorted, directories expanded to their catalogue files, a HATS catalogue to
    its data files), each once. Never astrodask's own outputs: one named is refused, one inside a directory is
    skipped with a note, as are files there that are not catalogues (README.md, .json)."""
    files: list[Source] = []
    for src in map(str, sources):
        url = "://" in src
        opts = options_for(src, storage_options) if url else None  # per-URL options (storage.options_for)
        if url:
            check_storage_options(src.split("://", 1)[0], opts)
        try:
            fs, _, paths = fsspec.get_fs_token_paths(src, storage_options=opts)
        except (ValueError, ImportError, OSError) as exc:
            raise AstrodaskError(f"{src}: cannot open ({exc}); check the path or URL") from None
        if not paths:
            raise AstrodaskError(f"{src}: no such file; check the path")
        for p in paths:
            try:
                isdir, exists = fs.isdir(p), fs.exists(p)
                kind = _output_kind(fs, p) if isdir else None
            except PermissionError as exc:
                raise AstrodaskError(f"{src}: cannot open ({exc}); check the permissions or credentials (a public "
                                     f"object is read anonymously with --storage-options "
                                     f"'{{\"{src.split('://')[0]}://BUCKET\": {{\"anon\": true}}}}')") from None
            except OSError as exc:
                raise AstrodaskError(f"{src}: cannot open ({exc}); check the path or URL") from None
            if kind is not None:
                raise AstrodaskError(f"{src}: an astrodask {kind} (it holds {META} or {SUCCESS}), not a catalogue; "
                                     "give the catalogue files it was made from")
            if isdir and fs.exists(f"{p.rstrip('/')}/{hats_reader.PROPERTIES}"):  # a HATS catalogue: its data files
                inner = sorted(x for x in fs.find(f"{p.rstrip('/')}/{hats_reader.DATASET}")
                               if x.endswith(".parquet") and "Npix=" in x and not Path(x).name.startswith(("_", ".")))
                if not inner:
                    raise AstrodaskError(f"{src}: HATS catalogue without data files; check the catalogue")
                files.extend(Source(fs.unstrip_protocol(x) if url else x) for x in inner)
            elif isdir:
                inner, outputs, other = _walk(fs, p)
                for o in outputs:
                    log(f"skipped {fs.unstrip_protocol(o) if url else o}: an astrodask output, not a catalogue")
                if other:
                    shown = ", ".join(Path(x).name for x in other[:5]) + (" ..." if len(other) > 5 else "")
                    log(f"skipped {len(other)} file(s) in {src} that are not catalogues by their name: {shown}")
                if not inner:
                    raise AstrodaskError(f"{src}: directory holds no CSV, Parquet or FITS files")
                files.extend(Source(fs.unstrip_protocol(x) if url else x, found=True) for x in inner)
            elif exists:
                if not url:
                    _regular_file(src, p)
                files.append(Source(fs.unstrip_protocol(p) if url else os.path.abspath(p)))
            else:
                raise AstrodaskError(f"{src}: no such file; check the path")
    seen: set[str] = set()
    unique = [f for f in files if not (f.path in seen or seen.add(f.path))]
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
    skipped = []
    for f, found in expand(cfg.sources, cfg.storage_options):
        loc = Location.of(f, cfg.storage_options)
        try:
            p = readers.probe(loc, f, options)
            try:
                cmap = readers.get(p.reader).columns(p, options)
            except ColumnError as exc:
                raise AstrodaskError(f"{f}: {exc}") from None
            required_check(p, cmap.pairs, cfg.row_ids)
        except AstrodaskError as exc:
            if not (found and split_ext(f)[0] in LOOSE_TEXT):
                raise
            log(f"skipped {f}: not a catalogue ({str(exc).removeprefix(f + ': ').split(';')[0]})")
            skipped.append(f)
            continue
        out.append((p, cmap))
    if not out:
        raise AstrodaskError(f"{', '.join(cfg.sources)}: no catalogue files (skipped {', '.join(skipped)}); give "
                             "CSV, Parquet or FITS catalogues")
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
