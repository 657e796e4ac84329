"""Outputs: the manifest, ``_SUCCESS``, and :class:`StagedOutput` (staging, commit, overwrite, resume).

Local disks (rename is atomic): the job writes into ``.DEST.staging`` beside ``DEST`` and renames it into place,
holding ``.DEST.lock`` (exclusive create) meanwhile; readers only ever see the old complete ``DEST`` or the new
complete one (between the two renames of an overwrite, none).

Object stores (no rename: s3fs's ``mv`` is a copy then a delete, neither atomic nor cheap): the job writes
straight into ``DEST/`` with a ``_astrodask.staging.json`` marker; nothing there is complete until ``_SUCCESS`` is
written, after the manifest, and the marker is gone. :func:`incomplete_output` (marker, or manifest without
``_SUCCESS``) is what every reader refuses, in one line (``open_dataset``, the model loader). A writer SIGKILLed
mid-file leaves only a pending multipart upload (invisible, but stored and billed until aborted):
:func:`abort_uploads` aborts those below ``DEST`` when a job takes the output over. An overwrite writes the
deletes ``_SUCCESS`` first (without the permission to delete objects the old output is then left complete and
unchanged, and the error names the permission), then writes the marker (recording the output it replaces), then
deletes the files the old manifest lists and the manifest; a resume that finds the old manifest still there
finishes that deletion before continuing. So from the start of an overwrite until the new commit no complete
output exists, and a reader that started on the old one may fail on a deleted file.

The manifest lists every file (``files``) and records for each its size, content digest and Parquet rows
(``checksums``, :class:`~astrodask.storage.files.FileCheck`; ``digest_algorithm``). Readers check sizes and
rows (:func:`check_files`); ``astrodask verify`` recomputes the digests.

``--overwrite`` replaces only an output astrodask committed (its manifest present) holding nothing but the
files it lists, never a directory or prefix with anything else in it, the current directory, or an ancestor of
an input (or a whole bucket). No output is written inside another astrodask output, and a destination that is a
symbolic link is written through it (the link's target is replaced; the link stays). ``--resume`` on a complete
output checks that it was made from the same inputs and options (its fingerprint) and then succeeds without
writing anything; on an interrupted one it continues from the staging area (object stores: from the parts
already in ``DEST``). A prefix holding astrodask's staging marker or manifest is astrodask's interrupted output:
rerun without ``--resume`` clears it and starts again, like a local staging directory.

One module because these rules are one protocol: the staging, the commit, overwrite and resume read and write the
same marker and manifest, and splitting them would spread one invariant over several files.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import uuid
from dataclasses import dataclass, field

from ..errors import AstrodaskError
from .files import DIGEST_ALGORITHM, FileCheck, file_check, read_json, remove_files, to_json
from .location import Location, is_s3, os_error
from .lock import Lock

SUCCESS = "_SUCCESS"
META = "_astrodask.json"
STAGING_MARKER = "_astrodask.staging.json"


@dataclass(frozen=True)
class ManifestPart:
    """One data file of an output, as its manifest lists it under ``parts``."""

    file: str
    """Its path below the output (POSIX separators)."""
    rows: int | None
    source: str | None = None
    """The input it was made from (a dataset part: the catalogue file)."""
    check: FileCheck | None = field(default=None, compare=False)
    """Its size and digest as the writer computed them (recorded under the manifest's ``checksums``)."""

    def to_json(self) -> dict:
        doc = {"file": self.file, "rows": self.rows}
        if self.source is not None:
            doc["source"] = self.source
        return doc

    @classmethod
    def from_json(cls, doc) -> ManifestPart | None:
        """The part a manifest entry describes, or None when the entry is not one."""
        if not isinstance(doc, dict) or not isinstance(doc.get("file"), str):
            return None
        rows = doc.get("rows")
        return cls(doc["file"], int(rows) if isinstance(rows, int) else None, doc.get("source"))


def manifest_parts(meta: dict) -> list[ManifestPart] | None:
    """The parts a manifest lists, or None when it lists none (or not in the form astrodask writes)."""
    parts = [ManifestPart.from_json(x) for x in meta.get("parts") or []] if isinstance(meta.get("parts"), list) else []
    return parts if parts and all(p is not None for p in parts) else None


def manifest_checks(meta: dict) -> dict[str, FileCheck]:
    """File -> its size, digest and rows as the manifest records them ({} when it records none: an output
    written by an older astrodask)."""
    doc = meta.get("checksums")
    if not isinstance(doc, dict):
        return {}
    out = {}
    for rel, entry in doc.items():
        check = FileCheck.from_json(entry)
        if check is not None:
            out[rel] = check
    return out


def check_files(where, files, meta: dict, sizes: dict | None = None, rows: dict | None = None,
                fix: str = "rerun the stage that wrote it") -> None:
    """Refuse, in one line naming the file, a file of an output whose size or Parquet rows differ from its
    manifest's record (replaced by another file, truncated, damaged). ``sizes`` / ``rows``: Location -> what was
    found (from the listing and the footers a reader reads anyway: no data is read)."""
    checks = manifest_checks(meta)
    parts = {p.file: p.rows for p in manifest_parts(meta) or []}
    base = Location.of(where)
    for f in files:
        rel = f.relative_to(base)
        want = checks.get(rel)
        want_rows = want.rows if want is not None and want.rows is not None else parts.get(rel)
        got_rows = (rows or {}).get(f)
        if want_rows is not None and got_rows is not None and got_rows != want_rows:
            raise AstrodaskError(f"{f}: {got_rows:,} rows, the manifest records {want_rows:,} (the file was "
                                 f"replaced or damaged); restore it or {fix}")
        got_size = (sizes or {}).get(f)
        if want is not None and got_size is not None and got_size != want.size:
            raise AstrodaskError(f"{f}: {got_size:,} bytes, the manifest records {want.size:,} (the file was "
                                 f"replaced or damaged); restore it or {fix}")


def is_complete(path) -> bool:
    """True when ``path`` is a committed astrodask output (``_SUCCESS``, and on an object store no staging marker:
    an overwrite that has begun writes the marker before it deletes anything)."""
    loc = Location.of(path)
    try:
        return (loc / SUCCESS).is_file() and (loc.is_local or not (loc / STAGING_MARKER).is_file())
    except AstrodaskError:
        return False


def read_meta(path) -> dict:
    """An output's manifest (``_astrodask.json``), {} when there is none."""
    loc = Location.of(path) / META
    try:
        doc = read_json(loc)
    except FileNotFoundError:
        return {}
    except AstrodaskError:
        raise AstrodaskError(f"{loc}: unreadable metadata; rerun the stage with --overwrite") from None
    if not isinstance(doc, dict):
        raise AstrodaskError(f"{loc}: unreadable metadata; rerun the stage with --overwrite")
    return doc


def _diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Names of the fields that differ between two fingerprints."""
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _diff(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}")
    return out


def _canonical(obj):
    return json.loads(to_json(obj))


def incomplete_output(path) -> bool:
    """True when ``path`` holds an astrodask output that is not (or no longer) complete: our staging marker (being
    written, or an overwrite has begun: the marker goes in before anything is deleted), or our manifest without
    ``_SUCCESS`` (killed while committing or while deleting the old output). Object stores write outputs in
    place, so this is what they look like between start and commit; on a local disk ``DEST`` never holds them."""
    loc = Location.of(path)
    try:
        return (loc / STAGING_MARKER).is_file() or ((loc / META).is_file() and not (loc / SUCCESS).is_file())
    except AstrodaskError:
        return False


def require_not_incomplete(path, kind: str) -> None:
    """Refuse, in one line naming what was found, an output whose writer has not committed it (killed, or still
    running)."""
    loc = Location.of(path)
    if not incomplete_output(loc):
        return
    try:
        success = (loc / SUCCESS).is_file()
        marker = (loc / STAGING_MARKER).is_file()
    except AstrodaskError:
        success, marker = False, True
    if success and marker:
        raise AstrodaskError(f"{loc}: incomplete {kind}: an --overwrite of it started and did not finish "
                             f"({STAGING_MARKER} beside {SUCCESS}; an older astrodask wrote the marker first); "
                             "rerun that --overwrite (with --resume)")
    if marker:
        raise AstrodaskError(f"{loc}: incomplete {kind} (the job writing it was interrupted or is still running: "
                             f"{STAGING_MARKER}, no {SUCCESS}); rerun that job with --resume")
    raise AstrodaskError(f"{loc}: incomplete {kind} (interrupted while committing it or while an --overwrite was "
                         f"deleting the old one: {META} without {SUCCESS}); rerun that job with --resume")


def _delete(loc: Location, why: str, after: str = "") -> None:
    """Delete one file of an output; an object store's refusal names the permission it needs."""
    if loc.is_local:
        loc.remove()
        return
    try:
        loc.fs.rm(loc.path)
    except FileNotFoundError:
        pass
    except PermissionError as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AstrodaskError(f"{loc.parent}: {why} needs the permission to delete objects (s3:DeleteObject), "
                             f"refused for {loc.name} ({detail}){after}; grant it, or write to a new destination") \
            from None
    except OSError as exc:
        raise os_error(exc, loc, "delete") from None
    loc.fs.invalidate_cache(loc.path)


def output_holding(dest: Location) -> Location | None:
    """The astrodask output that ``dest`` lies inside (a parent holding its manifest or staging marker), or
    None. Walks the parents up to the root (object stores: the bucket)."""
    loc = dest.parent
    while True:
        if not loc.is_local and "/" not in loc.path.strip("/"):
            return None  # the bucket
        try:
            if any((loc / name).is_file() for name in (META, STAGING_MARKER)):
                return loc
        except AstrodaskError:
            return None
        parent = loc.parent
        if parent == loc or parent.url == loc.url:
            return None
        loc = parent


def abort_uploads(dest: Location) -> int:
    """Abort the pending S3 multipart uploads below ``dest`` (what a writer killed in the middle of a file leaves:
    invisible, but stored and billed until aborted); the number aborted. Called with ``dest``'s lock held.
    Best effort: without the permission to list uploads, nothing is done (a bucket lifecycle rule
    AbortIncompleteMultipartUpload cleans them up too)."""
    if not is_s3(dest):
        return 0
    fs = dest.fs
    bucket, _, key = dest.path.partition("/")
    prefix = key.rstrip("/") + "/"
    n = 0
    try:
        kw: dict = {}
        while True:
            page = fs.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=prefix, **kw)
            for up in page.get("Uploads", []) or []:
                with contextlib.suppress(FileNotFoundError, OSError):
                    fs.call_s3("abort_multipart_upload", Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"])
                    n += 1
            if not page.get("IsTruncated"):
                break
            kw = {"KeyMarker": page.get("NextKeyMarker"), "UploadIdMarker": page.get("NextUploadIdMarker")}
    except (OSError, ValueError, KeyError):
        pass
    return n


def check_overwrite_target(dest: Location, inputs=()) -> None:
    """Refuse to replace a destination that is the current directory, an ancestor of it, the root or home
    directory, or that contains one of ``inputs``."""
    if dest.is_local:
        cwd = Location.of(os.getcwd())
        home = Location.of(os.path.expanduser("~"))
        if cwd.is_within(dest) or dest.url in (os.sep, home.url) or home.is_within(dest):
            raise AstrodaskError(f"{dest} is the current directory, an ancestor of it or your home directory; "
                                 "astrodask never replaces it: choose a new destination directory")
    for src in inputs:
        loc = Location.of(src)
        if loc.is_within(dest):
            raise AstrodaskError(f"{dest} contains the input {loc}; choose a destination that does not hold "
                                 "your inputs")
    holder = output_holding(dest)
    if holder is not None:
        kind = read_meta(holder).get("kind") or "output"
        raise AstrodaskError(f"{dest} is inside the astrodask {kind} {holder}; astrodask writes no output into "
                             f"another (its --overwrite would then be refused): write it beside it, e.g. "
                             f"{holder.with_name(dest.name)}")


@dataclass
class StagedOutput:
    """An output directory being produced by one job: checks, lock, staging area, commit.

    Use as a context manager. ``done`` is True when ``resume`` found the output already complete with the same
    fingerprint: the caller then does nothing (``commit`` is a no-op). ``path(name)`` is where a file of the
    output is written; ``commit(meta)`` publishes the output. Leaving the block without committing keeps the
    staging area (for ``resume``) and releases the lock.
    """

    dest: Location
    overwrite: bool = False
    resume: bool = False
    kind: str = "output"
    fingerprint: dict = field(default_factory=dict)
    """What made this output (inputs' ids and fingerprints, options that change the result)."""
    inputs: tuple = ()
    """Input locations: the output may not contain any of them."""
    staging: Location = field(init=False)
    lock: Location = field(init=False)
    committed: bool = field(init=False, default=False)
    done: bool = field(init=False, default=False)

    def __post_init__(self):
        self.dest = Location.of(self.dest)
        if self.dest.is_local and os.path.islink(self.dest.url):  # write through the link: replace its target
            self.dest = Location.of(os.path.realpath(self.dest.url))
        if not self.dest.is_local and "/" not in self.dest.path.strip("/"):
            raise AstrodaskError(f"{self.dest}: is a whole bucket; astrodask writes an output to a prefix inside one "
                                 f"(its lock goes beside it): give e.g. {self.dest.url.rstrip('/')}/run1")
        if self.dest.is_local:
            self.staging = self.dest.with_name(f".{self.dest.name}.staging")
        else:
            self.staging = self.dest
        self.lock = self.dest.with_name(f".{self.dest.name}.lock")
        self.fingerprint = _canonical(self.fingerprint)
        self._lock = Lock(self.lock, self.dest)

    # -- entering -----------------------------------------------------------------------------------

    def __enter__(self) -> StagedOutput:
        check_overwrite_target(self.dest, self.inputs)
        if self._check_existing():
            return self
        if self.dest.is_local:
            parent = self.dest.parent
            if not parent.is_dir():
                parent.mkdir()
        self._lock.acquire()
        try:
            if self._check_existing():  # again under the lock: another job may have committed meanwhile
                self._lock.release()
                return self
            self._prepare()
        except BaseException:
            self._lock.release()
            raise
        return self

    def _state(self) -> str:
        """absent | complete | incomplete (object stores: our staging marker, or our manifest without
        ``_SUCCESS``: a job killed while committing or while starting an overwrite) | foreign."""
        if not self.dest.exists():
            return "absent"
        if is_complete(self.dest) and read_meta(self.dest).get("kind"):
            return "complete"
        if not self.dest.is_local:
            if incomplete_output(self.dest):
                return "incomplete"
            if not self.dest.files():
                return "absent"  # a bare prefix
        return "foreign"

    def _check_existing(self) -> bool:
        """Checks on what is at ``dest``; True when the output is already complete and matching (resume)."""
        state = self._state()
        if state in {"absent", "incomplete"}:
            return False
        if state == "foreign":
            raise AstrodaskError(
                f"{self.dest} already exists and was not written by astrodask (no {SUCCESS} and {META}); "
                "astrodask never replaces it: choose another destination"
            )
        meta = read_meta(self.dest)
        if meta.get("kind") != self.kind:
            raise AstrodaskError(f"{self.dest} is an astrodask {meta.get('kind')}, not a {self.kind}; "
                                 "choose another destination")
        if self.resume and not self.overwrite:  # (with both: continue an interrupted overwrite)
            old = meta.get("fingerprint")
            if old is None:
                raise AstrodaskError(f"{self.dest} was written by an older astrodask that did not record its inputs; "
                                     "pass --overwrite to make it again, or choose another destination")
            changed = _diff(old, self.fingerprint)
            if changed:
                raise AstrodaskError(
                    f"{self.dest} is complete but was made from other inputs or options (differ: "
                    f"{', '.join(changed[:6])}); rerun with the same ones, pass --overwrite to replace it, "
                    "or choose another destination"
                )
            self.done = True
            from ..console import log

            log(f"resume: {self.kind} {self.dest} already complete, made from the same inputs and options; kept as "
                "it is")
            return True
        if not self.overwrite:
            raise AstrodaskError(
                f"{self.dest} already exists (a complete {self.kind}); pass --resume to keep it if it was made from "
                "the same inputs and options, --overwrite to replace it, or choose another destination"
            )
        self._foreign_files(meta)  # raises when anything there is not astrodask's
        return False

    def _foreign_files(self, meta: dict) -> None:
        listed = meta.get("files")
        if not isinstance(listed, list):
            raise AstrodaskError(f"{self.dest} was written by an older astrodask that did not list its files; "
                                 "delete it yourself or choose another destination")
        ours = set(listed) | {META, SUCCESS, STAGING_MARKER}
        for f in self.dest.files():
            rel = f.relative_to(self.dest)
            if rel not in ours:
                raise AstrodaskError(
                    f"{self.dest} holds {rel}, which astrodask did not write; --overwrite replaces only "
                    "astrodask's own files: move it away or choose another destination"
                )

    def _prepare(self) -> None:
        """Make the staging area ready (we hold the lock)."""
        if self.dest.is_local:
            if self.staging.exists() and not self.resume:
                self.staging.remove(recursive=True)
            elif self.staging.exists():
                self._check_staging_fingerprint()
            self.staging.mkdir()
            (self.staging / STAGING_MARKER).write_text(to_json(self._marker()))
            return
        state = self._state()
        if state == "complete":  # overwrite: from here on the old output is no longer complete
            meta = read_meta(self.dest)
            self._foreign_files(meta)  # again, under the lock
            # _SUCCESS first: refused (no permission to delete), the old output is left complete and unchanged;
            # from then on until the new commit the prefix holds our manifest without _SUCCESS or our marker, so
            # it is never taken for a complete output nor for someone else's directory
            _delete(self.dest / SUCCESS, "--overwrite", f": the existing {self.kind} is unchanged")
            (self.dest / STAGING_MARKER).write_text(to_json({**self._marker(), "replacing": meta.get("output_id")}))
            self._remove_old(meta)
        elif state == "incomplete":
            if self.resume:
                self._check_staging_fingerprint()
                try:
                    replacing = read_json(self.dest / STAGING_MARKER).get("replacing")
                except (FileNotFoundError, AstrodaskError):
                    replacing = None
                meta = read_meta(self.dest)
                if replacing and meta.get("output_id") == replacing:
                    self._remove_old(meta)  # killed while deleting the output it replaces: finish that first
            else:  # an interrupted astrodask output (our marker or manifest is there): start again
                remove_files([f for f in self.dest.files() if f.name != STAGING_MARKER])
        abort_uploads(self.dest)  # parts of files a killed writer never completed (invisible, but stored)
        (self.dest / STAGING_MARKER).write_text(to_json(self._marker()))

    def _remove_old(self, meta: dict) -> None:
        """Delete the committed output ``meta`` describes: ``_SUCCESS``, then its files, then its manifest."""
        _delete(self.dest / SUCCESS, "--overwrite")
        remove_files([self.dest / rel for rel in meta.get("files", [])])
        _delete(self.dest / META, "--overwrite")

    def _marker(self) -> dict:
        return {"kind": self.kind, "fingerprint": self.fingerprint, "pid": os.getpid(),
                "host": socket.gethostname(), "started": time.time()}

    def _check_staging_fingerprint(self) -> None:
        try:
            old = read_json(self.staging / STAGING_MARKER)
        except (FileNotFoundError, AstrodaskError):
            if self.dest.is_local:
                return  # staging from an older version: the stage's own checks apply
            old = read_meta(self.dest)  # killed while committing: the manifest is there, the marker gone
            if not old:
                return
        changed = _diff(old.get("fingerprint", {}), self.fingerprint)
        if changed:
            raise AstrodaskError(
                f"the interrupted job writing {self.dest} had other inputs or options (differ: "
                f"{', '.join(changed[:6])}); rerun with the same ones, or without --resume to start again"
            )

    def __exit__(self, exc_type, exc, tb):
        if not self.done:
            self._lock.release()
        return False

    # -- writing ------------------------------------------------------------------------------------

    def path(self, name: str) -> Location:
        return self.staging / name

    def commit(self, meta: dict, parts: list[ManifestPart] | None = None,
               checks: dict[str, FileCheck] | None = None) -> None:
        """Write the manifest (``meta``, the data files ``parts``, and the size, digest and rows of every file)
        and the success marker, then publish the staging area as ``dest``.

        The checks come from the writers (``parts``' and ``checks``: relative path -> FileCheck); a file without
        one, or whose size no longer matches its writer's, is read here (small files: JSON, figures)."""
        if self.done:
            return
        # files a killed task left half-written (``.NAME.tmp-*``) are not part of the output
        files, sizes = [], {}
        for f, size in self.staging.sized_files():
            rel = f.relative_to(self.staging)
            if ".tmp" in f.name and f.name.startswith("."):
                f.remove()
            elif rel not in (META, SUCCESS, STAGING_MARKER):
                files.append(rel)
                sizes[rel] = size
        known = dict(checks or {})
        for p in parts or []:
            if p.check is not None:
                known.setdefault(p.file, p.check)
        recorded = {}
        for rel in sorted(files):
            c = known.get(rel)
            if c is None or (sizes[rel] is not None and c.size != sizes[rel]):
                c = file_check(self.staging / rel)
            recorded[rel] = c.to_json()
        doc = {"kind": self.kind, "fingerprint": self.fingerprint, "files": sorted(files),
               "output_id": uuid.uuid4().hex, "committed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "astrodask": _version(), **meta, "digest_algorithm": DIGEST_ALGORITHM, "checksums": recorded}
        if parts is not None:
            doc["parts"] = [p.to_json() for p in parts]
        (self.staging / META).write_text(to_json(doc))
        _delete(self.staging / STAGING_MARKER, "committing an output",
                " (written, not committed: rerun with --resume once it is granted)")
        (self.staging / SUCCESS).write_bytes(b"")
        if self.dest.is_local:
            old = None
            if self.dest.exists():
                old = self.dest.with_name(f".{self.dest.name}.old-{uuid.uuid4().hex[:8]}")
                os.replace(self.dest.url, old.url)
            os.replace(self.staging.url, self.dest.url)
            if old is not None:
                old.remove(recursive=True)
        self.committed = True


def _version() -> str:
    from .. import __version__

    return __version__
