"""The convert stage: catalogue files -> validated Parquet dataset (``run``).

``run(cfg, client)``: plan (client: headers only, ``plan.py``) -> one task per block on the workers (read by
the file's reader, ``readers/``; validated, ``validate.py``; written, ``tasks.py``) -> repeated ids moved to
quarantine (``dedupe.py``) -> the accounting reduced from the block markers and Parquet footers -> commit.
For every block, rows read = rows written + rows quarantined; the totals are checked again before commit.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field, fields, replace

from .. import schema
from ..console import log, track
from ..errors import AstrodaskError
from ..storage import (
    Location,
    ManifestPart,
    StagedOutput,
    fingerprint_file,
    parquet_rows,
    read_json,
    read_meta,
    write_json_atomic,
)
from .config import ConvertConfig
from .dedupe import dedupe
from .plan import Plan, make_plan
from .readers import Block
from .tasks import (
    BLOCKS_DIR,
    QUARANTINE_DIR,
    BlockCounts,
    block_done,
    convert_block,
    count_rows,
    dup_name,
    marker,
    part_name,
    part_nulls,
)


def totals(stage: Location, blocks: list[Block]) -> dict:
    """Counts from the block markers and the Parquet footers (no data is read)."""
    read = written = quarantined = 0
    reasons: dict[str, int] = {}
    per_source: dict[str, int] = {}
    nulls: dict[str, int] = {}
    filtered: dict[str, int] = {}
    for b in blocks:
        own = {c for _, c in b.mapping}  # a column the file lacks is all null: not a missing value
        for c, n in part_nulls(stage / part_name(b.index)).items():
            if c in own and c != schema.ID:
                nulls[c] = nulls.get(c, 0) + n
        m = read_json(marker(stage, b.index))
        read += m["read"]
        per_source[b.source] = per_source.get(b.source, 0) + m["read"]
        written += parquet_rows(stage / part_name(b.index)) or 0
        if m["quarantined"]:
            quarantined += parquet_rows(stage / QUARANTINE_DIR / part_name(b.index)) or 0
        for k, v in m["reasons"].items():
            reasons[k] = reasons.get(k, 0) + v
        for k, v in m.get("filtered", {}).items():
            filtered[k] = filtered.get(k, 0) + v
        dup = parquet_rows(stage / QUARANTINE_DIR / dup_name(b.index)) or 0
        if dup:
            quarantined += dup
            reasons["duplicate_id"] = reasons.get("duplicate_id", 0) + dup
    reasons = dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])))
    order = {c: k for k, c in enumerate(schema.COLUMNS)}
    nulls = {c: n for c, n in sorted(nulls.items(), key=lambda kv: order.get(kv[0], len(order))) if n}
    return {"read": read, "written": written, "quarantined": quarantined, "reasons": reasons,
            "filtered": filtered, "source_rows": per_source, "nulls": nulls}


def block_checks(stage: Location, blocks: list[Block]) -> dict:
    """Size, digest and rows of every file the blocks wrote, as their writers computed them (block markers)."""
    out = {}
    for b in blocks:
        out.update(BlockCounts.from_json(read_json(marker(stage, b.index))).file_checks())
    return out


def provenance(plan: Plan) -> dict:
    """Which source column filled each canonical column, and which magnitudes filled u..z, per input and
    (when every input agrees) for the whole dataset."""
    inputs = [{"file": i.source, "layout": i.layout, "magnitudes": i.magnitudes, "columns_from": dict(i.columns_from)}
              for i in plan.inputs]
    merged: dict[str, list] = {}
    for i in inputs:
        for c, s in i["columns_from"].items():
            if s not in merged.setdefault(c, []):
                merged[c].append(s)
    order = {c: k for k, c in enumerate(schema.COLUMNS)}
    columns_from = {c: (v[0] if len(v) == 1 else v) for c, v in sorted(merged.items(),
                                                                          key=lambda kv: order.get(kv[0], 99))}
    systems = list(dict.fromkeys(i["magnitudes"] for i in inputs if i["magnitudes"]))
    return {"columns_from": columns_from, "magnitudes": systems[0] if len(systems) == 1 else systems,
            "inputs": inputs}


@dataclass(frozen=True)
class ConvertResult:
    """What ``run`` made: the counts (rows read = written + quarantined + filtered), the reasons, and where each
    canonical column came from (also in the dataset's ``_astrodask.json``)."""

    dest: str
    read: int
    written: int
    quarantined: int
    reasons: dict = field(default_factory=dict)
    """Quarantine reason -> rows."""
    filtered: dict = field(default_factory=dict)
    """Quality cut -> rows removed."""
    source_rows: dict = field(default_factory=dict)
    """Input file -> rows read."""
    nulls: dict = field(default_factory=dict)
    """Column -> missing values kept as nulls."""
    columns_from: dict = field(default_factory=dict)
    """Canonical column -> the source column(s) that filled it."""
    magnitudes: str | list = ""
    """Which magnitudes fill u..z (one description, or one per input when they differ)."""
    inputs: list = field(default_factory=list)
    """Per input: file, layout, magnitudes, columns_from."""
    row_ids: dict | None = None
    """With ``--row-ids``: how the ids were generated."""
    columns: dict = field(default_factory=dict)
    """``--columns``: source column -> the canonical column it was told to fill."""

    @classmethod
    def of(cls, dest: str, doc: dict) -> ConvertResult:
        """From the summary (or the manifest that holds it)."""
        names = {f.name for f in fields(cls)} - {"dest"}
        return cls(dest, **{k: doc[k] for k in names if doc.get(k) is not None})

    def summary(self) -> dict:
        """The fields as the manifest stores them."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "dest"}

    def lines(self) -> list[str]:
        """The summary as the command line prints it."""
        out = [f"dataset: {self.dest}",
               f"rows read {self.read:,}  written {self.written:,}  quarantined {self.quarantined:,}"
               + (f"  filtered {sum(self.filtered.values()):,}" if self.filtered else "")]
        out += [f"  quarantined {n:,}: {reason}" for reason, n in sorted(self.reasons.items(), key=lambda kv: -kv[1])]
        out += [f"  filtered {n:,}: {cut}" for cut, n in self.filtered.items()]
        if self.magnitudes:
            mags = self.magnitudes
            out.append(f"magnitudes u..z: {mags if isinstance(mags, str) else '; '.join(mags)}")
        if self.columns:
            out.append("columns given: " + ", ".join(f"{src}={canon}" for src, canon in self.columns.items()))
        if self.row_ids:
            out.append(f"ids: generated ({self.row_ids['why']})")
        if self.nulls:
            out.append("missing values (kept as nulls): " + ", ".join(f"{c} {n:,}" for c, n in self.nulls.items()))
        return out

HINTS = {
    "id_float_notation": "ids were written in floating-point notation such as 1.24E+18, so their digits are lost, "
                         "as a spreadsheet (or pandas, for Kaggle's file) does; re-export the ids as integers or "
                         "text, or convert with --row-ids (each row gets a generated id, the id text is kept in "
                         "source_obj_ID)",
    "malformed_row": "the lines do not have the header's number of fields; check the delimiter and the header",
    "invalid_utf8": "the file is not UTF-8 text; re-export it as UTF-8",
    "invalid_id": "the id column holds no valid unsigned integers; check which column is the id",
    "unknown_class": f"class values must be one of {', '.join(schema.CLASSES)}",
    "non_numeric": "the values are not numbers; check the delimiter and the decimal separator (a point)",
}


def no_rows_error(cfg: ConvertConfig, t: dict) -> AstrodaskError:
    where = ", ".join(cfg.sources)
    if t["read"] == 0:
        return AstrodaskError(f"{where}: no data rows (only a header); give a file with data rows")
    if not t["reasons"]:
        cuts = ", ".join(f"{k} {v:,}" for k, v in t["filtered"].items())
        return AstrodaskError(f"no rows left in {where}: all {t['read']:,} rows removed by the quality cuts ({cuts}); "
                              "convert with --no-cuts to keep them; nothing was written")
    top = next(iter(t["reasons"]), "no data rows")
    hint = HINTS.get(top.split(":")[0], "see the reasons above")
    return AstrodaskError(
        f"no valid rows in {where}: all {t['read']:,} rows rejected, mostly {top} "
        f"({t['reasons'][top]:,} rows): {hint}; nothing was written"
    )


CLIENT_HASH_BYTES = 1 << 30
"""Inputs to hash for the fingerprint beyond this many bytes in all are hashed on the workers."""


def _hashed_bytes(locs) -> int:
    """Bytes ``fingerprint_file`` reads to fingerprint ``locs`` (local files up to its limit)."""
    from ..storage.files import HASH_LIMIT

    total = 0
    for loc in locs:
        if loc.is_local:
            try:
                size = os.path.getsize(loc.url)
            except OSError:
                continue
            total += size if size <= HASH_LIMIT else 0
    return total


def fingerprint(cfg: ConvertConfig, files: list[str], client=None) -> dict:
    """What makes this dataset: the inputs (``storage.fingerprint_file``: their content up to 256 MiB each, else
    size and time stamps; ETags on object stores; hashed on the workers of ``client`` when there is more than
    :data:`CLIENT_HASH_BYTES` of it) and the options that change it."""
    locs = [Location.of(f, cfg.storage_options) for f in files]
    if cfg.photometry:
        locs.append(Location.of(cfg.photometry, cfg.storage_options))
    if client is not None and _hashed_bytes(locs) > CLIENT_HASH_BYTES:
        prints = track(client.map(fingerprint_file, locs, pure=False), "fingerprint inputs", cfg.quiet)
    else:
        prints = [fingerprint_file(loc) for loc in locs]
    return {"stage": "convert", "schema_version": schema.SCHEMA_VERSION,
            "sources": dict(zip(files, prints)),
            "options": {"block_size": cfg.block_size, "row_group_size": cfg.row_group_size,
                        "magnitudes": cfg.magnitudes, "deredden": cfg.deredden, "row_ids": cfg.row_ids,
                        "photometry": Location.of(cfg.photometry, cfg.storage_options).url if cfg.photometry
                        else None, "cuts": cfg.cuts, "columns": cfg.columns,
                        "photometry_file": prints[-1] if cfg.photometry else None}}


def _plan_doc(blocks: list[Block]) -> dict:
    return {"schema_version": schema.SCHEMA_VERSION,
            "blocks": [[b.source, b.reader, json.loads(json.dumps(b.extent.__dict__)), list(b.mapping),
                        list(b.out_columns), b.first_row, b.id_tag] for b in blocks]}


def number_rows(client, blocks: list[Block], quiet: bool) -> tuple[list[Block], dict]:
    """``--row-ids``: each file's tag (from its content hash, on the workers) and each block's first row (a
    counting pass on the workers over the blocks whose first row the plan does not know)."""
    from .ids import HASH_PIECE, file_digest, hash_piece, tag_of

    locs = {b.source: b.location for b in blocks}
    sizes = {f: loc.size() for f, loc in locs.items()}
    futs = {f: [client.submit(hash_piece, loc, k, pure=False) for k in range(max(1, -(-sizes[f] // HASH_PIECE)))]
            for f, loc in locs.items()}
    flat = track([x for fs in futs.values() for x in fs], "hash", quiet)
    digests, k = {}, 0
    for f, fs in futs.items():
        digests[f] = file_digest(flat[k:k + len(fs)], sizes[f])
        k += len(fs)
    tags: dict[int, str] = {}
    for f, d in digests.items():
        other = tags.setdefault(tag_of(d), f)
        if other != f and digests[other] != d:
            raise AstrodaskError(f"{other} and {f}: their generated-id tags collide (23 bits of different content "
                                 "hashes); convert them into separate datasets")
    need = {b.source for b in blocks if b.first_row is None}
    unknown = [b for b in blocks if b.source in need]  # every block of a file whose rows must be counted
    counted = dict(zip((b.index for b in unknown),
                       track(client.map(count_rows, unknown, pure=False), "count rows", quiet))) if unknown else {}
    out, next_row = [], {}
    for b in blocks:
        first = b.first_row if b.first_row is not None else next_row[b.source]
        n = counted.get(b.index)
        next_row[b.source] = first + n if n is not None else None
        out.append(replace(b, first_row=first, id_tag=tag_of(digests[b.source])))
    info = {"generated": True, "why": "--row-ids: the source's ids are not used (e.g. written as floats); obj_ID = "
            "2**63 | file tag << 40 | row, the source id text in source_obj_ID, the row in source_row",
            "files": {f: {"blake2b": d, "tag": tag_of(d)} for f, d in digests.items()}}
    return out, info


def run(cfg: ConvertConfig, client) -> ConvertResult:
    """Convert ``cfg.sources`` into the dataset ``cfg.dest``; return the summary (counts per reason).

    With ``resume``, a complete dataset made from the same inputs and options is kept as it is (its summary
    returned); an interrupted conversion continues.
    """
    from ..cluster import n_worker_threads

    t0 = time.perf_counter()
    planned = make_plan(cfg, n_worker_threads(client))
    blocks = list(planned.blocks)
    ids_info = None
    if not blocks:
        raise AstrodaskError(f"{', '.join(cfg.sources)}: no data rows (only headers); give files with data rows")
    files = list(dict.fromkeys(b.source for b in blocks))
    dest = Location.of(cfg.dest, cfg.storage_options)
    with StagedOutput(dest, cfg.overwrite, cfg.resume, kind="dataset", fingerprint=fingerprint(cfg, files, client),
                      inputs=tuple(Location.of(f, cfg.storage_options) for f in files)) as out:
        if out.done:
            return ConvertResult.of(str(dest), read_meta(dest))
        if cfg.row_ids:
            blocks, ids_info = number_rows(client, blocks, cfg.quiet)
        plan = _plan_doc(blocks)
        stage = out.staging
        plan_file = stage / "_plan.json"
        if cfg.resume and plan_file.is_file():
            try:
                old = read_json(plan_file)
            except AstrodaskError:
                old = None
            if old != json.loads(json.dumps(plan)):
                raise AstrodaskError(f"{cfg.dest}: the interrupted conversion had other inputs (or they changed "
                                     "since) or another block size; rerun with the same inputs and --block-size, "
                                     "or without --resume")
        (stage / QUARANTINE_DIR).mkdir()
        (stage / BLOCKS_DIR).mkdir()
        for tmp in stage.files():  # files an interrupted run was writing (we hold the lock)
            if tmp.name.startswith(".") and ".tmp-" in tmp.name:
                tmp.remove()
        write_json_atomic(plan_file, plan)
        todo = [b for b in blocks if not (cfg.resume and block_done(stage, b))]
        if len(todo) < len(blocks):
            log(f"resume: {len(blocks) - len(todo)} of {len(blocks)} blocks already converted, skipped")
        futs = client.map(convert_block, todo, staging=stage, row_group_size=cfg.row_group_size, pure=False)
        track(futs, "convert", cfg.quiet)
        dedupe(client, stage, blocks, cfg.row_group_size, cfg.quiet)
        t = totals(stage, blocks)
        n_filtered = sum(t["filtered"].values())
        if t["read"] != t["written"] + t["quarantined"] + n_filtered or \
                sum(t["reasons"].values()) != t["quarantined"]:
            raise AstrodaskError(
                f"internal accounting error: read {t['read']} != written {t['written']} + quarantined "
                f"{t['quarantined']} + filtered {n_filtered}; please report this; the output was not committed"
            )
        if t["written"] == 0:
            for f in stage.files():  # nothing worth resuming
                f.remove()
            stage.remove(recursive=True)
            raise no_rows_error(cfg, t)
        checks = block_checks(stage, blocks)
        plan_file.remove()
        (stage / BLOCKS_DIR).remove(recursive=True)  # the counts go into the metadata
        parts = [ManifestPart(part_name(b.index), parquet_rows(stage / part_name(b.index)), b.source,
                              checks.get(part_name(b.index))) for b in blocks]
        t.update(provenance(planned))
        if ids_info:
            t["row_ids"] = ids_info
        t["columns"] = dict(schema.parse_overrides(cfg.columns))
        result = ConvertResult.of(str(dest), t)
        out.commit({"schema_version": schema.SCHEMA_VERSION, "columns": list(blocks[0].out_columns),
                    "sources": files, **result.summary(), "stage": "convert",
                    "seconds": time.perf_counter() - t0}, parts, checks)
    return result
