"""Stage 2: the Parquet dataset as the later stages see it: its files, schema checks, and the id-hash split.

A dataset is a directory of ``part-*.parquet`` files (written by ``convert``, or any Parquet directory with the
canonical column names). Each file is one partition: stages map one task per file, so outputs line up
file by file with the input and no row ever travels to the client.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from . import schema
from .errors import AstrodaskError
from .storage import META, SUCCESS, read_meta

N_BUCKETS = 1000
TEST_BUCKETS = 200  # buckets [0, 200): holdout test (20 %)
VALID_BUCKETS = 100  # buckets [200, 300): validation for early stopping (10 %); the rest trains
TRAIN, VALID, TEST = 0, 1, 2


def hash64(ids, salt: int = 0) -> np.ndarray:
    """splitmix64 of uint64 ids (plus ``salt``): well-mixed bits whatever the id pattern."""
    z = np.asarray(ids, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = z + np.uint64(0x9E3779B97F4A7C15) + np.uint64(salt)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def bucket(ids) -> np.ndarray:
    """Hash of the ids modulo 1000: a stable split whatever the partitioning."""
    return (hash64(ids) % np.uint64(N_BUCKETS)).astype(np.int16)


def split_of(ids) -> np.ndarray:
    """TRAIN, VALID or TEST for each id."""
    b = bucket(ids)
    return np.where(b < TEST_BUCKETS, TEST, np.where(b < TEST_BUCKETS + VALID_BUCKETS, VALID, TRAIN)).astype(np.int8)


@dataclass(frozen=True)
class Dataset:
    """A readable Parquet dataset."""

    path: str
    files: tuple[str, ...]
    rows: tuple[int, ...]
    columns: tuple[str, ...]

    @property
    def n_rows(self) -> int:
        return sum(self.rows)

    @property
    def nbytes(self) -> int:
        return sum(Path(f).stat().st_size for f in self.files)

    def require(self, columns, why: str) -> None:
        missing = [c for c in columns if c not in self.columns]
        if missing:
            raise AstrodaskError(
                f"{self.path}: dataset has no column(s) {', '.join(missing)}, needed {why}; "
                "convert a catalogue that has them"
            )

    def to_dask(self, columns=None):
        """The dataset as a Dask DataFrame (one partition per file)."""
        import dask.dataframe as dd

        return dd.read_parquet(list(self.files), columns=list(columns) if columns else None)


def open_dataset(path: str, kind: str = "dataset") -> Dataset:
    """Check and describe the dataset (or predictions, with ``kind``) at ``path`` (reads file footers only)."""
    p = Path(path)
    if not p.exists():
        raise AstrodaskError(f"{p}: no such dataset; check the path (make one with `astrodask convert`)")
    if p.is_file():
        files = [p]
    else:
        if (p / META).exists() and not (p / SUCCESS).exists():
            raise AstrodaskError(f"{p}: incomplete dataset (its conversion did not finish); rerun convert with --resume")
        meta = read_meta(p)
        if meta.get("kind") not in (None, kind):
            raise AstrodaskError(f"{p}: is a {meta['kind']}, not a {kind}; check the path")
        files = sorted(f for f in p.glob("*.parquet") if not f.name.startswith(("_", ".")))
    if not files:
        raise AstrodaskError(f"{p}: no Parquet files; make a dataset with `astrodask convert`")
    rows, first_schema = [], None
    for f in files:
        try:
            pf = pq.ParquetFile(f)
        except (OSError, pa.ArrowException) as exc:
            raise AstrodaskError(f"{f}: not a readable Parquet file ({exc}); reconvert the dataset") from None
        rows.append(pf.metadata.num_rows)
        if first_schema is None:
            first_schema = pf.schema_arrow
        elif not pf.schema_arrow.equals(first_schema):
            raise AstrodaskError(f"{f}: schema differs from {files[0].name}; reconvert the dataset")
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
    ds = Dataset(str(p), tuple(str(f) for f in files), tuple(rows), cols)
    ds.require([schema.ID, *schema.BANDS] if kind == "dataset" else [schema.ID], "by every stage")
    return ds


def read_part(file: str, columns=None) -> pd.DataFrame:
    """One partition as pandas (called on workers)."""
    return pq.read_table(file, columns=list(columns) if columns else None).to_pandas()
