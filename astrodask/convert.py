"""Stage 1: catalogue files (CSV, Parquet, FITS; local paths or fsspec URLs) -> validated Parquet dataset.

The client only plans: it reads each file's header and cuts the input into blocks (byte ranges of a CSV,
row groups of a Parquet file, row ranges of a FITS table). Workers read, validate and write one block each:
valid rows to ``part-NNNNN.parquet`` in the canonical schema, rejected rows to ``_quarantine/`` with a
reason. A second pass on the workers moves duplicate ids (all but the first occurrence) to quarantine.
For every block, rows read = rows written + rows quarantined, and the totals are checked before commit.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from . import schema
from .console import log, track
from .errors import AstrodaskError, ConfigError
from .storage import StagedOutput, parquet_rows, write_json_atomic, write_parquet_atomic

QUARANTINE_DIR = "_quarantine"
BLOCKS_DIR = "_blocks"
MiB = 1 << 20


@dataclass(frozen=True)
class ConvertConfig:
    """What to convert and where."""

    sources: tuple[str, ...]
    """Input files: local paths, globs or fsspec URLs (CSV, .csv.gz, Parquet, FITS)."""
    dest: str
    """Output dataset directory (must not exist unless ``overwrite``)."""
    block_size: int | None = None
    """Bytes of CSV per block (one output file each); None picks by input size (1 MiB to 256 MiB)."""
    overwrite: bool = False
    """Replace an existing ``dest``."""
    resume: bool = False
    """Continue an interrupted conversion into the same ``dest``, skipping blocks already written."""
    row_group_size: int = 131072
    """Rows per Parquet row group."""
    quiet: bool = False
    """No progress bar."""

    def __post_init__(self):
        if not self.sources:
            raise ConfigError("sources", "no input files given", "pass at least one CSV, Parquet or FITS path")
        if self.block_size is not None and self.block_size < 4096:
            raise ConfigError("block_size", f"{self.block_size} bytes is too small", "use at least 4096 (e.g. 64MiB)")
        if self.row_group_size < 1:
            raise ConfigError("row_group_size", "must be positive", "use e.g. 131072")


# ---------------------------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class Block:
    """One unit of work: a slice of one input file."""

    index: int
    source: str
    kind: str  # csv | parquet | fits
    start: int  # byte offset (csv) / row group (parquet) / first row (fits)
    length: int  # bytes (csv, -1 = whole compressed file) / row groups / rows
    columns: tuple[str, ...]  # source header names
    mapping: tuple[tuple[str, str], ...]  # source name -> canonical


def _kind(path: str) -> str:
    low = path.lower()
    for ext, kind in ((".parquet", "parquet"), (".pq", "parquet"), (".fits", "fits"), (".fit", "fits"),
                      (".fits.gz", "fits"), (".csv", "csv"), (".csv.gz", "csv"), (".csv.bz2", "csv"),
                      (".txt", "csv"), (".tsv", "csv")):
        if low.endswith(ext):
            return kind
    return "csv"


def _expand(sources: tuple[str, ...]) -> list[str]:
    files: list[str] = []
    for src in sources:
        try:
            fs, _, paths = fsspec.get_fs_token_paths(src)
        except (ValueError, ImportError) as exc:
            raise AstrodaskError(f"{src}: cannot open ({exc}); check the path or URL") from None
        if not paths:
            raise AstrodaskError(f"{src}: no such file; check the path")
        for p in paths:
            if fs.isdir(p):
                inner = sorted(x for x in fs.find(p) if not Path(x).name.startswith(("_", ".")))
                if not inner:
                    raise AstrodaskError(f"{src}: directory holds no input files")
                files.extend(fs.unstrip_protocol(x) if "://" in src else x for x in inner)
            elif fs.exists(p):
                files.append(fs.unstrip_protocol(p) if "://" in src else p)
            else:
                raise AstrodaskError(f"{src}: no such file; check the path")
    return files


def _required_check(source: str, columns: list[str], mapping: dict[str, str]) -> None:
    missing = [c for c in schema.REQUIRED if c not in mapping.values()]
    if missing:
        shown = ", ".join(columns[:12]) + (" ..." if len(columns) > 12 else "")
        raise AstrodaskError(
            f"{source}: missing required column(s) {', '.join(missing)} (found: {shown}); the input needs an id "
            "(obj_ID or objid) and the magnitudes u, g, r, i, z"
        )


def _csv_header(path: str) -> tuple[list[str], int]:
    """(column names, size in bytes); raises a one-line error for unreadable input."""
    try:
        with fsspec.open(path, "rb", compression="infer") as fh:
            head = fh.read(1 << 16)
        size = fsspec.open(path).fs.size(fsspec.open(path).path)
    except (OSError, EOFError, ValueError) as exc:
        raise AstrodaskError(f"{path}: cannot read ({exc}); check the file") from None
    if not head.strip():
        raise AstrodaskError(f"{path}: file is empty; give a CSV with a header row and data")
    if b"\x00" in head:
        raise AstrodaskError(f"{path}: is not a text CSV (binary data); give a CSV, Parquet or FITS file")
    line = head.split(b"\n", 1)[0].rstrip(b"\r")
    try:
        text = line.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise AstrodaskError(f"{path}: header row is not UTF-8 text; re-export the file as UTF-8 CSV") from None
    delim = "\t" if text.count("\t") > text.count(",") else ","
    cols = [c.strip().strip('"') for c in text.split(delim)]
    if len(cols) < 2:
        raise AstrodaskError(f"{path}: first line is not a CSV header ({text[:60]!r}); give a CSV with a header row")
    return cols, size


def _auto_block_size(total: int, workers: int) -> int:
    target = total // max(1, 4 * workers)
    return int(min(256 * MiB, max(1 * MiB, target)))


def plan_blocks(cfg: ConvertConfig, n_threads: int = 2) -> list[Block]:
    """Cut the inputs into blocks (reads headers only)."""
    files = _expand(cfg.sources)
    blocks: list[Block] = []
    csv_sizes = {}
    headers = {}
    for f in files:
        kind = _kind(f)
        if kind == "csv":
            headers[f], csv_sizes[f] = _csv_header(f)
    bs = cfg.block_size or _auto_block_size(sum(csv_sizes.values()), n_threads)
    for f in files:
        kind = _kind(f)
        if kind == "csv":
            cols = headers[f]
            mapping = schema.canonical_names(cols)
            _required_check(f, cols, mapping)
            size = csv_sizes[f]
            compressed = fsspec.utils.infer_compression(f) is not None
            ranges = [(0, -1)] if compressed else [(o, min(bs, size - o)) for o in range(0, max(size, 1), bs)]
            for start, length in ranges:
                blocks.append(Block(len(blocks), f, kind, start, length, tuple(cols), tuple(mapping.items())))
        elif kind == "parquet":
            try:
                with fsspec.open(f, "rb") as fh:
                    meta = pq.ParquetFile(fh).metadata
                    cols = list(pq.ParquetFile(fh).schema_arrow.names)
            except (OSError, pa.ArrowException) as exc:
                raise AstrodaskError(f"{f}: not a readable Parquet file ({exc}); check the file") from None
            mapping = schema.canonical_names(cols)
            _required_check(f, cols, mapping)
            # about 1M rows per block
            per = max(1, math.ceil(1_000_000 / max(1, meta.num_rows / max(1, meta.num_row_groups))))
            for rg in range(0, meta.num_row_groups, per):
                n = min(per, meta.num_row_groups - rg)
                blocks.append(Block(len(blocks), f, kind, rg, n, tuple(cols), tuple(mapping.items())))
        else:
            from .fits import fits_columns

            cols, nrows = fits_columns(f)
            mapping = schema.canonical_names(cols)
            _required_check(f, cols, mapping)
            step = 1_000_000
            for start in range(0, max(nrows, 1), step):
                blocks.append(Block(len(blocks), f, kind, start, min(step, nrows - start), tuple(cols),
                                    tuple(mapping.items())))
    return blocks


# ---------------------------------------------------------------------------------------------- reading


def _read_csv_block(b: Block) -> tuple[pd.DataFrame, list[tuple[int, str]]]:
    """Rows of one CSV block as strings, plus rows the parser rejected (line in block, text)."""
    with fsspec.open(b.source, "rb", compression="infer") as fh:
        if b.length < 0:
            data = fh.read()
        else:
            data = fsspec.utils.read_block(fh, b.start, b.length, delimiter=b"\n")
    if b.start == 0 or b.length < 0:  # drop the header line
        nl = data.find(b"\n")
        data = data[nl + 1:] if nl >= 0 else b""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        # keep the row: the bad bytes become U+FFFD, so the value fails validation and is quarantined
        data = data.decode("utf-8", errors="replace").encode("utf-8")
    bad: list[tuple[int, str]] = []

    def on_bad(row):
        bad.append((row.number if row.number is not None else -1, row.text))
        return "skip"

    if not data.strip():
        return pd.DataFrame({c: pd.Series([], dtype=object) for c in b.columns}), bad
    delim = "\t" if b.source.lower().endswith(".tsv") else ","
    table = pacsv.read_csv(
        io.BytesIO(data),
        read_options=pacsv.ReadOptions(column_names=list(b.columns), use_threads=False),
        parse_options=pacsv.ParseOptions(delimiter=delim, invalid_row_handler=on_bad),
        convert_options=pacsv.ConvertOptions(
            column_types={c: pa.string() for c in b.columns}, strings_can_be_null=False, quoted_strings_can_be_null=False
        ),
    )
    return table.to_pandas(types_mapper=None), bad


def _read_block(b: Block) -> tuple[pd.DataFrame, list[tuple[int, str]]]:
    if b.kind == "csv":
        return _read_csv_block(b)
    if b.kind == "parquet":
        with fsspec.open(b.source, "rb") as fh:
            t = pq.ParquetFile(fh).read_row_groups(range(b.start, b.start + b.length))
        return t.to_pandas(), []
    from .fits import read_fits_rows

    return read_fits_rows(b.source, b.start, b.length), []


# ---------------------------------------------------------------------------------------------- validation

_NULL_TOKENS = {"", "nan", "NaN", "NAN", "null", "NULL", "None", "NA", "N/A", "n/a"}
_UINT64_MAX = "18446744073709551615"


def _as_text(s: pd.Series) -> pd.Series:
    return s.astype(object).where(s.notna(), "").map(str).str.strip()


def _parse_uint(s: pd.Series, bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values as uint64, ok mask, float-notation mask) for an id-like column of any dtype."""
    n = len(s)
    vals = np.zeros(n, dtype=np.uint64)
    if pd.api.types.is_integer_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
        present = s.notna().to_numpy()
        ints = s.fillna(0).to_numpy()
        ok = present & (ints >= 0)
        vals[ok] = ints[ok].astype(np.uint64)
        floaty = np.zeros(n, bool)
    elif pd.api.types.is_float_dtype(s.dtype):
        # floats above 2**53 no longer hold every integer: such ids have lost digits
        v = s.to_numpy(dtype="float64", na_value=np.nan)
        ok = np.isfinite(v) & (v >= 0) & (v == np.floor(v)) & (v < 2.0**53)
        vals[ok] = v[ok].astype(np.uint64)
        floaty = np.isfinite(v) & ~ok
    else:
        text = _as_text(s)
        ok = np.array(text.str.fullmatch(r"\d{1,20}").fillna(False), dtype=bool)
        long = ok & (text.str.len().to_numpy() == 20)
        if long.any():
            ok[long] = (text[long] <= _UINT64_MAX).to_numpy()
        if ok.any():
            vals[ok] = pa.compute.cast(pa.array(text[ok].tolist(), pa.string()), pa.uint64()).to_numpy()
        floaty = ~ok & text.str.fullmatch(r"[+-]?\d+(\.\d*)?[eE][+-]?\d+|\d+\.\d*").fillna(False).to_numpy(bool)
    if bits < 64:
        ok = ok & (vals <= np.uint64((1 << bits) - 1))
    return vals, ok, floaty


def _parse_float(s: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values float64 with NaN for missing, non-numeric mask, non-finite mask)."""
    if pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
        v = s.to_numpy(dtype="float64", na_value=np.nan)
        return v, np.zeros(len(s), bool), np.isinf(v)
    text = _as_text(s)
    missing = text.isin(_NULL_TOKENS).to_numpy()
    v = pd.to_numeric(text.where(~missing, None), errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    bad = np.isnan(v) & ~missing
    return v, bad, np.isinf(v)


def validate(raw: pd.DataFrame, mapping: dict[str, str]) -> tuple[pa.Table, pd.DataFrame]:
    """Split one block into (valid rows as an Arrow table in the canonical schema, rejected rows + reason).

    Rejected rows keep their original values (as a JSON record) and the first rule they broke.
    """
    raw = raw.reset_index(drop=True)
    n = len(raw)
    src_of = {canon: src for src, canon in mapping.items() if src in raw.columns}
    reason = np.full(n, None, dtype=object)

    def reject(mask: np.ndarray, why: str):
        m = mask & pd.isna(reason)
        reason[m] = why

    arrays: dict[str, pa.Array] = {}
    for name in schema.COLUMNS:
        if name not in src_of:
            continue
        s = raw[src_of[name]]
        typ = schema.TYPES[name]
        if name == schema.ID:
            vals, ok, floaty = _parse_uint(s, 64)
            reject(floaty, f"id_float_notation:{name}")
            reject(~ok, f"invalid_id:{name}")
            arrays[name] = pa.array(vals, pa.uint64())
        elif pa.types.is_integer(typ):
            text_missing = _as_text(s).isin(_NULL_TOKENS).to_numpy() if not pd.api.types.is_numeric_dtype(s.dtype) \
                else pd.isna(s).to_numpy()
            vals, ok, floaty = _parse_uint(s, typ.bit_width)
            reject(floaty & ~text_missing, f"id_float_notation:{name}")
            reject(~ok & ~text_missing, f"not_integer:{name}")
            arrays[name] = pa.array(vals, pa.uint64(), mask=~ok).cast(typ, safe=False)
        elif name == schema.CLASS:
            text = _as_text(s).str.upper()
            reject(~text.isin(schema.CLASSES).to_numpy(), "unknown_class")
            arrays[name] = pa.array(text.tolist(), pa.string())
        else:
            v, bad, inf = _parse_float(s)
            reject(bad, f"non_numeric:{name}")
            reject(inf, f"non_finite:{name}")
            v = np.where(np.isin(v, schema.SENTINELS), np.nan, v)
            if name in schema.RANGES:
                lo, hi = schema.RANGES[name]
                reject(~np.isnan(v) & ((v < lo) | (v > hi)), f"out_of_range:{name}")
            arrays[name] = pa.array(v, pa.float64(), from_pandas=True).cast(typ)
    ok_rows = pd.isna(reason)
    ids = arrays[schema.ID].to_numpy()
    dup = np.zeros(n, bool)
    dup[ok_rows] = pd.Series(ids[ok_rows]).duplicated(keep="first").to_numpy()
    reject(dup, "duplicate_id")
    ok_rows = pd.isna(reason)
    keep = pa.array(ok_rows)
    cols = [c for c in schema.COLUMNS if c in arrays]
    good = pa.table({c: arrays[c].filter(keep) for c in cols}, schema=schema.arrow_schema(cols))
    bad_idx = np.flatnonzero(~ok_rows)
    rejected = pd.DataFrame({
        "reason": reason[bad_idx].astype(str),
        "row": bad_idx.astype("int64"),
        "record": [json.dumps(r, default=str) for r in raw.iloc[bad_idx].to_dict("records")],
    })
    return good, rejected


def _quarantine_table(rej: pd.DataFrame, source: str, block: int) -> pa.Table:
    return pa.table({
        "reason": pa.array(rej["reason"].tolist(), pa.string()),
        "source": pa.array([source] * len(rej), pa.string()),
        "block": pa.array([block] * len(rej), pa.int64()),
        "row": pa.array(rej["row"].to_numpy(), pa.int64()),
        "record": pa.array(rej["record"].tolist(), pa.string()),
    }, schema=schema.QUARANTINE_SCHEMA)


def _part(i: int) -> str:
    return f"part-{i:05d}.parquet"


def convert_block(b: Block, staging: str, row_group_size: int) -> dict:
    """Worker task: read, validate and write one block; return its counts (also kept as a done marker)."""
    raw, unparsed = _read_block(b)
    good, rej = validate(raw, dict(b.mapping))
    if unparsed:
        rej = pd.concat([rej, pd.DataFrame({
            "reason": ["malformed_row"] * len(unparsed),
            "row": [r for r, _ in unparsed],
            "record": [json.dumps({"text": t}) for _, t in unparsed],
        })], ignore_index=True)
    stage = Path(staging)
    write_parquet_atomic(good, stage / _part(b.index), row_group_size)
    write_parquet_atomic(_quarantine_table(rej, b.source, b.index), stage / QUARANTINE_DIR / _part(b.index))
    counts = {
        "block": b.index,
        "source": b.source,
        "read": len(raw) + len(unparsed),
        "written": good.num_rows,
        "quarantined": len(rej),
        "reasons": rej["reason"].value_counts().to_dict(),
    }
    write_json_atomic(stage / BLOCKS_DIR / f"{b.index:05d}.json", counts)
    return counts


def _block_done(stage: Path, b: Block) -> dict | None:
    """Counts of a block already converted and verified by row count, else None."""
    marker = stage / BLOCKS_DIR / f"{b.index:05d}.json"
    if not marker.is_file():
        return None
    try:
        counts = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    good = parquet_rows(stage / _part(b.index))
    quar = parquet_rows(stage / QUARANTINE_DIR / _part(b.index))
    if good is None or quar is None or good + quar != counts["read"]:
        return None
    return counts


# ---------------------------------------------------------------------------------------------- duplicates


def _ids_in(path: str, dups: np.ndarray) -> pd.DataFrame:
    ids = pq.read_table(path, columns=[schema.ID]).column(0).to_numpy()
    rows = np.flatnonzero(np.isin(ids, dups))
    return pd.DataFrame({"row": rows, schema.ID: ids[rows]})


def _move_duplicates(staging: str, index: int, rows: list[int]) -> int:
    """Worker task: move ``rows`` of part ``index`` to its duplicate quarantine file (idempotent)."""
    stage = Path(staging)
    t = pq.read_table(stage / _part(index))
    mask = np.zeros(t.num_rows, bool)
    mask[rows] = True
    moved = t.filter(pa.array(mask))
    records = [json.dumps(r, default=str) for r in moved.to_pylist()]
    q = pa.table({
        "reason": pa.array(["duplicate_id"] * len(rows), pa.string()),
        "source": pa.array([f"{_part(index)}"] * len(rows), pa.string()),
        "block": pa.array([index] * len(rows), pa.int64()),
        "row": pa.array(rows, pa.int64()),
        "record": pa.array(records, pa.string()),
    }, schema=schema.QUARANTINE_SCHEMA)
    write_parquet_atomic(q, stage / QUARANTINE_DIR / f"dup-{index:05d}.parquet")
    write_parquet_atomic(t.filter(pa.array(~mask)), stage / _part(index))
    return len(rows)


def _dedupe(client, stage: Path, indices: list[int], quiet: bool) -> None:
    """Move later occurrences of ids repeated across blocks to quarantine. Only duplicate ids reach the client."""
    import dask.dataframe as dd

    files = [str(stage / _part(i)) for i in indices if (parquet_rows(stage / _part(i)) or 0) > 0]
    if len(files) < 2:
        return
    ids = dd.read_parquet(files, columns=[schema.ID])[schema.ID]
    counts = ids.value_counts(split_out=max(1, len(files) // 8))
    dups = client.compute(counts[counts > 1]).result()
    if dups.empty:
        return
    dup_ids = dups.index.to_numpy(dtype=np.uint64)
    futs = client.map(_ids_in, files, dups=dup_ids, pure=False)
    found = track(futs, "duplicates", quiet)
    hits = pd.concat([f.assign(part=int(Path(p).stem.split("-")[1])) for f, p in zip(found, files)])
    hits = hits.sort_values(["part", "row"])
    later = hits[hits.duplicated(schema.ID, keep="first")]
    moves = [(int(p), g["row"].tolist()) for p, g in later.groupby("part")]
    track([client.submit(_move_duplicates, str(stage), p, rows, pure=False) for p, rows in moves], "dedupe", quiet)
    log(f"moved {len(later):,} rows with repeated {schema.ID} to quarantine")


# ---------------------------------------------------------------------------------------------- run


def _totals(stage: Path, blocks: list[Block]) -> dict:
    read = sum(json.loads((stage / BLOCKS_DIR / f"{b.index:05d}.json").read_text())["read"] for b in blocks)
    written = sum(parquet_rows(stage / _part(b.index)) or 0 for b in blocks)
    reasons: dict[str, int] = {}
    quarantined = 0
    for q in sorted((stage / QUARANTINE_DIR).glob("*.parquet")):
        r = pq.read_table(q, columns=["reason"]).column(0).to_pandas().value_counts()
        quarantined += int(r.sum())
        for k, v in r.items():
            reasons[k] = reasons.get(k, 0) + int(v)
    return {"read": read, "written": written, "quarantined": quarantined, "reasons": reasons}


def run(cfg: ConvertConfig, client) -> dict:
    """Convert ``cfg.sources`` into the dataset ``cfg.dest``; return the summary (counts per reason)."""
    from .cluster import n_worker_threads

    blocks = plan_blocks(cfg, n_worker_threads(client))
    plan = {"sources": [b.source for b in blocks], "blocks": [[b.start, b.length] for b in blocks]}
    with StagedOutput(Path(cfg.dest), cfg.overwrite, cfg.resume, kind="dataset") as out:
        stage = out.staging
        plan_file = stage / "_plan.json"
        if cfg.resume and plan_file.is_file() and json.loads(plan_file.read_text()) != plan:
            raise AstrodaskError(
                f"{cfg.dest}: the interrupted conversion had other inputs or block size; rerun without --resume"
            )
        (stage / QUARANTINE_DIR).mkdir(exist_ok=True)
        (stage / BLOCKS_DIR).mkdir(exist_ok=True)
        write_json_atomic(plan_file, plan)
        todo = [b for b in blocks if not (cfg.resume and _block_done(stage, b))]
        if len(todo) < len(blocks):
            log(f"resume: {len(blocks) - len(todo)} of {len(blocks)} blocks already converted")
        futs = client.map(convert_block, todo, staging=str(stage), row_group_size=cfg.row_group_size, pure=False)
        track(futs, "convert", cfg.quiet)
        _dedupe(client, stage, [b.index for b in blocks], cfg.quiet)
        totals = _totals(stage, blocks)
        if totals["read"] != totals["written"] + totals["quarantined"]:
            raise AstrodaskError(
                f"internal accounting error: read {totals['read']} != written {totals['written']} + quarantined "
                f"{totals['quarantined']}; please report this; the output was not committed"
            )
        if totals["written"] == 0:
            top = max(totals["reasons"].items(), key=lambda kv: kv[1])[0] if totals["reasons"] else "no data rows"
            hint = {
                "id_float_notation": " (ids were written in floating-point notation such as 1.24E+18, so their "
                "digits are lost, as a spreadsheet does; re-export the ids as integers or text)",
            }.get(top.split(":")[0], "")
            raise AstrodaskError(
                f"no valid rows in {', '.join(cfg.sources)}: all {totals['read']:,} rows rejected, mostly "
                f"{top}{hint}"
            )
        columns = pq.read_schema(stage / _part(blocks[0].index)).names
        plan_file.unlink()
        parts = [{"file": _part(b.index), "rows": parquet_rows(stage / _part(b.index))} for b in blocks]
        out.commit({
            "schema_version": schema.SCHEMA_VERSION,
            "columns": columns,
            "sources": sorted(set(b.source for b in blocks)),
            "parts": parts,
            **totals,
        })
    return {"dest": str(Path(cfg.dest).absolute()), **totals}
