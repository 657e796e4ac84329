"""Stage 2: the Parquet dataset as the later stages see it: its files, schema checks, and the id-hash split
(:data:`HOLDOUT`, the one split rule).

A dataset is a directory of ``part-*.parquet`` files (written by ``convert``, or any Parquet directory with the
canonical column names). Each file is one partition: stages map one task per file, so outputs line up
file by file with the input and no row ever travels to the client.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import pyarrow as pa

from . import schema
from .errors import AstrodaskError
from .storage import (
    Location,
    check_files,
    fingerprint_file,
    manifest_parts,
    parquet_footer,
    read_meta,
    read_parquet,
    require_not_incomplete,
)

N_BUCKETS = 1000
TRAIN, VALID, TEST = 0, 1, 2
SKIPPED = 3
"""A TRAIN or VALID row outside a :class:`SplitRule`'s ``sample``: neither trains nor validates."""
SAMPLE_SALT = 0x5A3


def hash64(ids, salt: int = 0) -> np.ndarray:
    """splitmix64 of uint64 ids (plus ``salt``): well-mixed bits whatever the id pattern."""
    z = np.asarray(ids, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = z + np.uint64(0x9E3779B97F4A7C15) + np.uint64(salt)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def in_share(ids, salt: int, fraction: float) -> np.ndarray:
    """True for about ``fraction`` of the ids, picked by their ``salt``-ed hash (the same ids whatever the
    partitioning or order; independent of the split and of other salts)."""
    h = (hash64(ids, salt) >> np.uint64(11)).astype(np.float64)  # 53 bits, uniform in [0, 2**53)
    return h < fraction * 2.0**53


def bucket(ids) -> np.ndarray:
    """Hash of the ids modulo 1000: a stable split whatever the partitioning."""
    return (hash64(ids) % np.uint64(N_BUCKETS)).astype(np.int16)


@dataclass(frozen=True)
class SplitRule:
    """Which rows are held out (TEST), which validate (VALID), the rest train: by the hash bucket of their key
    (``dataset.bucket``: 0..N_BUCKETS-1), so the same row lands in the same split whatever the partitioning."""

    test: tuple[int, int]
    """Buckets [lo, hi) of the holdout rows (never trained on or used for early stopping)."""
    valid: tuple[int, int]
    """Buckets [lo, hi) of the validation rows (early stopping)."""
    sample: float = 1.0
    """The share of the TRAIN and VALID rows that train and validate, chosen by a second, independent hash of the
    key; the others are SKIPPED (the TEST rows stay as they are). 1: every row."""

    def of(self, keys: np.ndarray) -> np.ndarray:
        """TRAIN, VALID, TEST or SKIPPED (int8) of each key."""
        b = bucket(keys)
        out = np.full(len(b), TRAIN, np.int8)
        out[(b >= self.valid[0]) & (b < self.valid[1])] = VALID
        out[(b >= self.test[0]) & (b < self.test[1])] = TEST
        if self.sample < 1:
            out[~in_share(keys, SAMPLE_SALT, self.sample) & (out != TEST)] = SKIPPED
        return out

    def sampled(self, rows: int, of: int) -> SplitRule:
        """This rule keeping about ``rows`` of ``of`` TRAIN rows (and the VALID rows in proportion); itself when
        ``rows`` is 0 or not fewer."""
        if rows <= 0 or rows >= of:
            return self
        return replace(self, sample=self.sample * rows / of)


HOLDOUT = SplitRule(test=(0, 200), valid=(200, 300))
"""The split of every dataset (the ``train`` stage's, the evaluation's holdout): buckets [0, 200) are the holdout
(20 %, never trained on), [200, 300) validate (10 %, early stopping), the rest train."""


def validation_split(fraction: float) -> SplitRule:
    """No holdout; ``fraction`` of the rows (rounded to 1/N_BUCKETS) validate, the rest train."""
    return SplitRule(test=(0, 0), valid=(0, round(fraction * N_BUCKETS)))


@dataclass(frozen=True)
class Dataset:
    """A readable Parquet dataset: its files (Locations), their row counts and its columns."""

    path: str
    files: tuple[Location, ...]
    rows: tuple[int, ...]
    columns: tuple[str, ...]
    location: Location | None = None
    meta: dict | None = None
    """The manifest of a committed astrodask output ({} for a plain Parquet directory)."""
    null_counts: dict | None = None
    """Column -> null count, from the Parquet footers' statistics (None for a column without statistics)."""

    @property
    def n_rows(self) -> int:
        return sum(self.rows)

    @property
    def output_id(self) -> str | None:
        return (self.meta or {}).get("output_id")

    def identity(self) -> dict:
        """What identifies this dataset's content for a fingerprint: its commit id, or its files' sizes and
        modification times when it is a plain Parquet directory (not its path: a copied job still resumes)."""
        if self.output_id:
            return {"output_id": self.output_id}
        return {"files": {f.name: fingerprint_file(f) for f in self.files}}

    def require(self, columns, why: str) -> None:
        missing = [c for c in columns if c not in self.columns]
        if missing:
            raise AstrodaskError(
                f"{self.path}: dataset has no column(s) {', '.join(missing)}, needed {why}; "
                "convert a catalogue that has them"
            )

    def has_values(self, column: str) -> bool:
        """False when the footers say the column is entirely null (True when they do not tell)."""
        n = (self.null_counts or {}).get(column)
        return not (n is not None and self.n_rows and n >= self.n_rows)

    def require_values(self, columns, why: str) -> None:
        """Refuse a column that is entirely null (nothing to learn from or predict with; imputing it would be
        inventing it)."""
        for c in columns:
            if not self.has_values(c):
                fix = "use --features photometric, or" if c == schema.REDSHIFT else \
                    "use a model trained without morphology (--no-morphology), or" if c in schema.PSF_BANDS else "use"
                raise AstrodaskError(
                    f"{self.path}: column {c} is empty (all {self.n_rows:,} values null or no-measurement "
                    f"sentinels), needed {why}; {fix} a catalogue that has {c}"
                )

    def to_dask(self, columns=None):
        """The dataset as a Dask DataFrame (one partition per file)."""
        import dask.dataframe as dd

        opts = self.files[0].options if self.files and not self.files[0].is_local else None
        return dd.read_parquet([f.url for f in self.files], columns=list(columns) if columns else None,
                               storage_options=opts)


def _null_counts(md, names) -> dict:
    out: dict = {}
    for k, name in enumerate(names):
        total = 0
        for rg in range(md.num_row_groups):
            col = md.row_group(rg).column(k)
            st = col.statistics
            if st is None or not st.has_null_count:
                total = None
                break
            total += st.null_count
        out[name] = total
    return out


def open_dataset(path, kind: str = "dataset") -> Dataset:
    """Check and describe the dataset (or predictions, with ``kind``) at ``path`` (reads file footers only).

    A committed astrodask output is read through its manifest (only the files it lists); a directory of Parquet
    files without one is read whole; an astrodask output without ``_SUCCESS`` is refused.
    """
    p = Location.of(path)
    if not p.exists():
        raise AstrodaskError(f"{p}: no such {kind}; check the path (make one with `astrodask convert`)")
    meta: dict = {}
    if p.is_file():
        _require_parquet_file(p, kind)
        files = [p]
    else:
        require_not_incomplete(p, kind)  # being written or replaced (object stores write in place)
        meta = read_meta(p)
        if meta.get("kind") not in (None, kind):
            raise AstrodaskError(f"{p}: is a {meta['kind']}, not a {kind}; check the path")
        parts = manifest_parts(meta)
        if parts and all(x.file.endswith(".parquet") for x in parts):
            files = [p / x.file for x in parts]
        else:
            files = [f for f in p.glob("*.parquet") if not f.name.startswith(("_", "."))]
    if not files:
        raise AstrodaskError(f"{p}: no Parquet files; make a dataset with `astrodask convert`")
    rows, first_schema, nulls, sizes = [], None, {}, {}
    for f in files:
        try:
            md, sch, sizes[f] = parquet_footer(f)
        except FileNotFoundError:
            raise AstrodaskError(f"{f}: listed in the manifest but missing; rerun the stage that wrote {p}") from None
        except (OSError, pa.ArrowException, ValueError) as exc:
            from .ingest.readers.base import one_line

            raise AstrodaskError(f"{f}: not a readable Parquet file ({one_line(exc)}); reconvert the dataset") \
                from None
        rows.append(md.num_rows)
        if first_schema is None:
            first_schema = sch
        elif not sch.equals(first_schema):
            raise AstrodaskError(f"{f}: schema differs from {files[0].name}; reconvert the dataset")
        for c, n in _null_counts(md, sch.names).items():
            nulls[c] = None if (n is None or nulls.get(c, 0) is None) else nulls.get(c, 0) + n
    if meta:  # a part replaced by another file, truncated or damaged: refused before anything reads it
        check_files(p, files, meta, sizes, dict(zip(files, rows)),
                    fix=f"rerun the stage that wrote {p} (`astrodask verify {p}` checks every file's digest)")
    cols = tuple(first_schema.names)
    for name in cols:
        want = schema.TYPES.get(name)
        got = first_schema.field(name).type
        if want is None:
            continue
        ok = (pa.types.is_integer(want) and pa.types.is_integer(got)) or (
            pa.types.is_floating(want) and (pa.types.is_floating(got) or pa.types.is_integer(got))
        ) or (pa.types.is_string(want) and (pa.types.is_string(got) or pa.types.is_large_string(got)
                                             or pa.types.is_dictionary(got)))
        if not ok:
            raise AstrodaskError(
                f"{files[0]}: column {name} is {got}, expected {want}; convert the source with `astrodask convert`"
            )
    ds = Dataset(str(p), tuple(files), tuple(rows), cols, p, meta, nulls)
    ds.require([schema.ID, *schema.BANDS] if kind == "dataset" else [schema.ID], "by every stage")
    return ds


def _require_parquet_file(p: Location, kind: str) -> None:
    """Refuse, naming what it is, a single file given where a dataset is read that is not Parquet (a CSV or FITS
    catalogue to convert first)."""
    try:
        with p.open("rb") as fh:
            head = fh.read(4)
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - 4))
            tail = fh.read(4)
    except OSError:
        return  # the Parquet reader says what is wrong
    if head == b"PAR1" and tail == b"PAR1":
        return
    from .ingest.readers.csv import split_ext

    ext, _ = split_ext(p.url)
    what = {".fits": "a FITS file", ".fit": "a FITS file", ".fts": "a FITS file", ".csv": "a CSV file",
            ".tsv": "a CSV file", ".txt": "a text file", ".dat": "a text file"}.get(ext, "not a Parquet file")
    if head[:4] == b"SIMP":
        what = "a FITS file"
    raise AstrodaskError(f"{p} is {what}, not a {kind}; convert it first (astrodask convert {p} DATASET) or run the "
                         f"whole job on it (astrodask run {p})")


def read_part(file, columns=None) -> pd.DataFrame:
    """One partition as pandas (called on workers)."""
    return read_parquet(file, columns).to_pandas()
