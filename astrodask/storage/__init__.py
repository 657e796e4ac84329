"""Where data lives and how outputs are committed, on local disks and object stores (fsspec) alike.

This package is the one place that knows how an output is staged, committed, locked, resumed and overwritten; no
other module renames or deletes output files. Its rooms:

* ``location``: :class:`Location` (a local path made absolute on the client, or an fsspec URL with its storage
  options) and the storage options of ``--storage-options``;
* ``files``: whole-file writes (JSON, Parquet) that appear at once or not at all, reads, fingerprints, and the
  size, digest and rows of every file written (:class:`FileCheck`);
* ``lock``: the exclusive lock beside an output (``O_EXCL`` on local disks, conditional PUT on S3);
* ``output``: the manifest, ``_SUCCESS``, :class:`StagedOutput` (staging, commit, ``--overwrite``, ``--resume``).

A committed output ``DEST`` holds its files, ``_astrodask.json`` (kind, the fingerprint of the inputs and
options that made it, the list of every file astrodask wrote with its size, digest and rows, counts) and
``_SUCCESS``, written last. Readers trust an output only when ``_SUCCESS`` is there, read only the files its
manifest lists, and check their sizes and rows against it.
"""

from .files import (
    DIGEST_ALGORITHM,
    FileCheck,
    ParquetStream,
    digest_of,
    file_check,
    fingerprint_file,
    parquet_file,
    parquet_footer,
    parquet_rows,
    read_json,
    read_parquet,
    remove_files,
    to_json,
    write_json_atomic,
    write_parquet_atomic,
)
from .location import Location, is_s3, options_for, os_error
from .lock import Lock, locked
from .output import (
    META,
    STAGING_MARKER,
    SUCCESS,
    ManifestPart,
    StagedOutput,
    check_files,
    check_overwrite_target,
    incomplete_output,
    is_complete,
    manifest_checks,
    manifest_parts,
    output_holding,
    read_meta,
    require_not_incomplete,
)

__all__ = [
    "DIGEST_ALGORITHM", "META", "STAGING_MARKER", "SUCCESS", "FileCheck", "Location", "Lock", "ManifestPart",
    "ParquetStream", "StagedOutput", "check_files", "check_overwrite_target", "digest_of", "file_check",
    "fingerprint_file", "incomplete_output", "is_complete", "is_s3", "locked", "manifest_checks",
    "manifest_parts", "options_for", "os_error", "output_holding",
    "parquet_file", "parquet_footer", "parquet_rows", "read_json", "read_meta", "read_parquet", "remove_files",
    "require_not_incomplete", "to_json", "write_json_atomic", "write_parquet_atomic",
]
