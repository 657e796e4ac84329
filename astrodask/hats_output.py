"""Predictions as a HATS catalogue (HEALPix-partitioned Parquet that ``lsdb.open_catalog`` opens), built by
hats-import on the job's own workers from the scored partitions (``predict --format hats``).

The HATS reader of convert is ``ingest/readers/hats.py``; this is its writer.
"""

from __future__ import annotations

from . import schema
from .errors import AstrodaskError
from .storage import Location, ManifestPart, parquet_rows

SCORED_DIR = "_scored"
"""Where the scored partitions wait (inside the staging area) for hats-import."""


def require_hats_import():
    """hats-import's ``pipeline_with_client``, or a one-line error saying how to install it."""
    try:
        from hats_import.pipeline import pipeline_with_client
    except ImportError:
        raise AstrodaskError("--format hats needs hats-import; pip install 'astrodask[hats]'") from None
    return pipeline_with_client


def _upath(loc: Location):
    """``loc`` for hats-import. On an object store without the listing cache: hats-import's tasks list prefixes
    other workers write to, and a long-lived worker's cached listing would hide their files."""
    from upath import UPath

    return UPath(loc.url, **{**loc.options, "use_listings_cache": False}) if not loc.is_local else UPath(loc.url)


HATS_TMP_ENV = "ASTRODASK_HATS_TMP"
"""A directory every worker sees (a local disk on one machine, else a shared filesystem) where hats-import keeps
its intermediate files and resume plan when the catalogue goes to an object store (default: the system's
temporary directory)."""


def _hats_tmp_dir(staging: Location) -> Location:
    """Where hats-import keeps its intermediate files and resume plan for ``staging``.

    Local catalogue: inside the staging area. Object store: a local directory named after the output, kept
    across a kill for ``--resume`` -- hats-import opens its resume plan (done markers, the pickled reader, the
    pixel alignment) with plain ``open``, which reaches no object store, and its intermediate Parquet is better
    off on a disk too (hats also walks the catalogue's directory to estimate its size, where a versioned store
    may still list the deleted intermediate prefixes)."""
    if staging.is_local:
        return staging / "_hats_tmp"
    import hashlib
    import os
    import tempfile

    base = os.environ.get(HATS_TMP_ENV) or os.path.join(tempfile.gettempdir(), "astrodask-hats")
    return Location.of(os.path.join(base, hashlib.sha256(staging.url.encode()).hexdigest()[:20]))


def _prepare_hats_tmp(client, where: Location, fresh: bool) -> None:
    """Make the local directory of an object-store catalogue (emptied unless resuming); every worker must see it,
    else stop with one line saying how to give a shared one."""
    import os

    if fresh:
        where.remove(recursive=True)
    where.mkdir()
    probe = where / f".probe-{os.getpid()}"
    probe.write_text("")
    try:
        seen = client.run(os.path.exists, probe.url)
    finally:
        probe.remove()
    if not all(seen.values()):
        raise AstrodaskError(f"--format hats to an object store: hats-import keeps its intermediate files in a local "
                             f"directory every worker must see, and {sum(not v for v in seen.values())} worker(s) "
                             f"do not see {where.parent}; set {HATS_TMP_ENV} to a shared directory")


def write_catalogue(client, staging: Location, scored: list, rows: int, quiet: bool,
                    resume: bool = False) -> list[ManifestPart]:
    """Partition the scored files by HEALPix with hats-import on ``client``'s workers, straight into the staging
    area (the catalogue's root); return the data files as manifest parts. hats-import keeps its own resume plan
    (:func:`_hats_tmp_dir`), so a killed run continues."""
    from hats_import.catalog.arguments import ImportArguments

    pipeline_with_client = require_hats_import()
    tmp = _hats_tmp_dir(staging)
    if not (staging / "hats.properties").exists():
        if not staging.is_local:
            _prepare_hats_tmp(client, tmp, fresh=not resume)
        args = ImportArguments(
            input_file_list=[f.url if f.is_local else _upath(f) for f in scored], file_reader="parquet",
            ra_column="alpha", dec_column="delta",
            output_path=_upath(staging.parent), output_artifact_name=staging.name, sort_columns=schema.ID,
            tmp_dir=_upath(tmp), resume=True, expected_total_rows=rows,
            progress_bar=not quiet, simple_progress_bar=True,
        )
        pipeline_with_client(args, client)
    tmp.remove(recursive=True)
    for f in scored:
        f.remove()
    (staging / SCORED_DIR).remove(recursive=True)
    data = [f for f in (staging / "dataset").files() if f.name.endswith(".parquet") and f.name.startswith("Npix")]
    parts = [ManifestPart(f.relative_to(staging), parquet_rows(f)) for f in data]
    if sum(p.rows or 0 for p in parts) != rows:
        raise AstrodaskError(f"the HATS catalogue holds {sum(p.rows or 0 for p in parts):,} rows, not {rows:,}; "
                             "rerun with --overwrite")
    return parts
