"""``astrodask verify OUTPUT``: every file of a committed output read whole on the workers and checked against
its manifest (size, ``crc32`` digest, Parquet rows), one task per file.

Readers already check the cheap things on every read (sizes and Parquet footer rows, ``storage.check_files``);
this reads every byte, so it also finds a file replaced by another of the same size or damaged inside. ``OUTPUT``
is one output (dataset, model, predictions, evaluation) or a directory holding several, such as the ``--out`` of
``astrodask run``. Nothing is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from .errors import AstrodaskError
from .options import JobFlags
from .storage import (
    DIGEST_ALGORITHM,
    META,
    FileCheck,
    Location,
    file_check,
    is_complete,
    manifest_checks,
    read_meta,
    require_not_incomplete,
)


@dataclass(frozen=True)
class VerifyConfig(JobFlags):
    """What ``astrodask verify`` checks (``overwrite`` and ``resume`` do not apply: nothing is written)."""

    output: str
    """An astrodask output (dataset, model, predictions, evaluation; a path or URL), or a directory holding
    several (the --out of astrodask run)."""

    def __post_init__(self):
        self.check_flags()


class Mismatch(NamedTuple):
    """One file that is not what its manifest records."""

    file: str
    """The file (path or URL)."""
    problem: str
    """What differs: missing, size, digest or rows, with both values."""


@dataclass(frozen=True)
class VerifyResult:
    """What ``run`` found: the outputs and files checked and every mismatch."""

    outputs: tuple[str, ...]
    files: int
    bytes: int
    mismatches: tuple[Mismatch, ...]
    algorithm: str = DIGEST_ALGORITHM

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def summary(self) -> str:
        """One line: what was checked and how it went."""
        where = self.outputs[0] if len(self.outputs) == 1 else f"{len(self.outputs)} outputs"
        if self.ok:
            return (f"verified {where}: {self.files:,} files, {self.bytes / 2**20:,.1f} MiB, every size, "
                    f"{self.algorithm} digest and row count as its manifest records")
        first = self.mismatches[0]
        more = f" and {len(self.mismatches) - 1} more" if len(self.mismatches) > 1 else ""
        return (f"{where}: {len(self.mismatches)} of {self.files:,} files differ from the manifest ({first.file}: "
                f"{first.problem}{more}): replaced or damaged since they were written; restore them from a copy or "
                "rerun the stage that wrote them")

    def lines(self) -> list[str]:
        return [f"differs: {m.file}: {m.problem}" for m in self.mismatches] + ([self.summary()] if self.ok else [])


def check_one(loc: Location, want: FileCheck) -> Mismatch | None:
    """Worker task: read ``loc`` whole and compare it with its manifest record."""
    try:
        got = file_check(loc, parquet=want.rows is not None)
    except FileNotFoundError:
        return Mismatch(loc.url, "missing")
    except OSError as exc:
        return Mismatch(loc.url, f"unreadable ({exc.strerror or type(exc).__name__})")
    if got.size != want.size:
        return Mismatch(loc.url, f"{got.size:,} bytes, the manifest records {want.size:,}")
    if got.digest != want.digest:
        return Mismatch(loc.url, f"digest {got.digest}, the manifest records {want.digest}")
    if want.rows is not None and got.rows != want.rows:
        return Mismatch(loc.url, f"{got.rows} rows, the manifest records {want.rows}")
    return None


def outputs_at(root: Location) -> list[Location]:
    """``root`` when it is an astrodask output, else the outputs directly inside it; refused when neither."""
    if (root / META).is_file():
        require_not_incomplete(root, read_meta(root).get("kind") or "output")
        if not is_complete(root):
            raise AstrodaskError(f"{root}: not a committed astrodask output (no _SUCCESS); finish it with --resume")
        return [root]
    inner = [d for d in root.glob("*") if (d / META).is_file()]
    for d in inner:
        require_not_incomplete(d, read_meta(d).get("kind") or "output")
    if not inner:
        raise AstrodaskError(f"{root}: no astrodask output here (no {META}, nor in a directory inside); give a "
                             "dataset, model, predictions or evaluation directory")
    return inner


def run(cfg: VerifyConfig, client) -> VerifyResult:
    """Check every file of ``cfg.output`` against its manifest, reading each whole on the workers of ``client``."""
    from .console import track

    root = Location.of(cfg.output, cfg.storage_options)
    if not root.exists():
        raise AstrodaskError(f"{root}: no such output; check the path")
    tasks: list[tuple[Location, FileCheck]] = []
    outputs = outputs_at(root)
    for out in outputs:
        meta = read_meta(out)
        checks = manifest_checks(meta)
        if not checks:
            raise AstrodaskError(f"{out}: its manifest records no digests (written by an older astrodask); "
                                 "rewrite it with --overwrite to verify it")
        if meta.get("digest_algorithm", DIGEST_ALGORITHM) != DIGEST_ALGORITHM:
            raise AstrodaskError(f"{out}: digests by {meta.get('digest_algorithm')!r}, this astrodask checks "
                                 f"{DIGEST_ALGORITHM}; verify it with the astrodask that wrote it")
        tasks += [(out / rel, want) for rel, want in sorted(checks.items())]
    found = track(client.map(check_one, [t[0] for t in tasks], [t[1] for t in tasks], pure=False), "verify",
                  cfg.quiet)
    return VerifyResult(tuple(o.url for o in outputs), len(tasks), sum(w.size for _, w in tasks),
                        tuple(m for m in found if m is not None))
