"""Synthetic SDSS-like catalogues calibrated to the real SDSS17 statistics, generated on the Dask workers.

The model, per class (mix of GALAXY / QSO / STAR as in SDSS17):

* a Gaussian mixture over ``(r, u-g, g-r, r-i, i-z, asinh(redshift / 1e-3))``; ``u g i z`` follow from ``r``
  and the colours; draws outside the class's real range of each feature are redrawn (then clipped), and
  magnitudes are clipped to the real per-band range;
* sky position from the class's coarse sky histogram: a cell drawn by its count, then a uniform point in it;
* MJD from the class's empirical quantiles (linear between them).

Columns the real file lacks (run, camera column, field, plate, fiber, spectroscopic id) are plausible
fillers: plate grows with MJD as in SDSS, and ``spec_obj_ID`` carries the plate in its top 14 bits as SDSS
ids do (so plates >= 8192 give ids above 2**63). Nothing here reads the real data: the numbers below were
measured once by ``astrodask/_calibrate.py``.

Every partition is a pure function of ``(seed, index, n)``; ``run`` writes one file per partition, each
made and written by its own task on a worker, so the client never holds rows.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from . import schema
from .errors import ConfigError
from .options import JobFlags, check_choices, check_count
from .storage import FileCheck, ManifestPart
from .synth_calibration import CALIBRATION

OBJ_ID_BASE = 1237645942904389632  # a real SDSS objID; synthetic ids are BASE + index * 2**32 + row
ROW_BITS = 32
MAX_PARTITION_ROWS = 2**ROW_BITS
MAX_PARTITIONS = 2**18  # spec_obj_ID keeps (index, row) in its low 50 bits: 18 + 32
ROWS_PER_PARTITION = 1_000_000
REDRAWS = 10  # rounds of redrawing out-of-range mixture samples before clipping

# Plausible ranges of the columns SDSS17 lacks (those of the full Kaggle SDSS17 export).
RUN_ID = (94, 8162)
RERUN_ID = 301
CAM_COL = (1, 6)
FIELD_ID = (11, 989)
PLATE = (266, 12547)
FIBER_ID = (1, 1000)
PLATE_MJD = (51608, 58932)  # MJD of the first and last plate: plate ~ linear in MJD, plus noise
PLATE_SCATTER = 300.0
_LOW50 = (1 << 50) - 1
_MIX = 0x9E3779B97F4A7C15 & _LOW50 | 1  # odd: multiplying by it permutes the integers mod 2**50

FORMATS = ("parquet", "csv")
COLUMNS = tuple(c for c in schema.COLUMNS if c != schema.ZWARNING)
"""The canonical columns but the redshift-fit warnings (a synthetic redshift is a measurement)."""
ARROW_SCHEMA = schema.arrow_schema(COLUMNS)
CSV_DECIMALS = {"alpha": 7, "delta": 7, **dict.fromkeys(schema.BANDS, 5), **dict.fromkeys(schema.PSF_BANDS, 4)}
CSV_SIGNIFICANT = {schema.REDSHIFT: 7}


@dataclass(frozen=True)
class _ClassModel:
    fraction: float
    weights: np.ndarray  # (K,)
    means: np.ndarray  # (K, 6)
    chol: np.ndarray  # (K, 6, 6) lower-triangular
    lo: np.ndarray  # (6,)
    hi: np.ndarray  # (6,)
    sky_p: np.ndarray  # (cells,) probability of each sky cell
    sky_alpha0: np.ndarray  # (cells,) lower right ascension of each cell
    sky_delta0: np.ndarray  # (cells,) lower declination of each cell
    mjd_q: np.ndarray  # MJD at equally spaced quantiles


@lru_cache(maxsize=1)
def _models() -> tuple[_ClassModel, ...]:
    """The calibration as arrays, one model per class in ``schema.CLASSES`` order (built once per process)."""
    cal = CALIBRATION
    grid = cal["sky_grid"]
    total = sum(cal["fractions"][c] for c in schema.CLASSES)
    models = []
    for c in schema.CLASSES:
        comps = cal["gmm"][c]
        d = len(comps[0][1])
        tril = np.tril_indices(d)
        chol = np.zeros((len(comps), d, d))
        for k, comp in enumerate(comps):
            chol[k][tril] = comp[2]
        w = np.array([comp[0] for comp in comps])
        counts = np.array([[float(v) for v in row.split()] for row in cal["sky"][c]])
        rows, cols = np.nonzero(counts)
        lo, hi = (np.array(b, dtype=np.float64) for b in cal["bounds"][c])
        models.append(_ClassModel(
            fraction=cal["fractions"][c] / total,
            weights=w / w.sum(),
            means=np.array([comp[1] for comp in comps]),
            chol=chol,
            lo=lo,
            hi=hi,
            sky_p=counts[rows, cols] / counts.sum(),
            sky_alpha0=cols * grid["alpha_step"],
            sky_delta0=grid["delta_min"] + rows * grid["delta_step"],
            mjd_q=np.array(cal["mjd"][c], dtype=np.float64),
        ))
    return tuple(models)


def _draw(rng: np.random.Generator, m: _ClassModel, comp: np.ndarray) -> np.ndarray:
    x = rng.standard_normal((len(comp), m.means.shape[1]))
    for k in range(len(m.weights)):
        sel = comp == k
        if sel.any():
            x[sel] = m.means[k] + x[sel] @ m.chol[k].T
    return x


def _features(rng: np.random.Generator, m: _ClassModel, n: int) -> np.ndarray:
    """``n`` draws of the class's mixture, within the class's real range of every feature."""
    comp = np.repeat(np.arange(len(m.weights)), rng.multinomial(n, m.weights))
    x = _draw(rng, m, comp)
    for _ in range(REDRAWS):
        bad = ((x < m.lo) | (x > m.hi)).any(axis=1)
        if not bad.any():
            break
        x[bad] = _draw(rng, m, comp[bad])
    return np.clip(x, m.lo, m.hi)


def _sky(rng: np.random.Generator, m: _ClassModel, n: int) -> tuple[np.ndarray, np.ndarray]:
    grid = CALIBRATION["sky_grid"]
    cell = rng.choice(len(m.sky_p), size=n, p=m.sky_p)
    alpha = m.sky_alpha0[cell] + rng.random(n) * grid["alpha_step"]
    delta = m.sky_delta0[cell] + rng.random(n) * grid["delta_step"]
    alpha = np.where(alpha >= 360.0, alpha - 360.0, alpha)  # float rounding at the last cell's edge
    return alpha, np.clip(delta, -90.0, 90.0)


def _mjd(rng: np.random.Generator, m: _ClassModel, n: int) -> np.ndarray:
    return np.rint(np.interp(rng.random(n), np.linspace(0.0, 1.0, len(m.mjd_q)), m.mjd_q))


# PSF minus model magnitude (the SDSS star/galaxy separator: objects with psfMag - cModelMag > 0.145 in r are
# extended). Point sources (stars, quasars) scatter around 0 with the photometric noise, which grows fainter;
# galaxies are clearly positive, by less for fainter (smaller) ones: ~1.4 mag at r = 15 down to ~0.4 at r = 22.
PSF_NOISE = (0.02, 20.5)  # sigma = 0.02 * (1 + 10**(0.4 (m - 20.5))): 0.02 bright, ~0.1 at m = 22.3
PSF_GALAXY = (1.4, 15.0, 0.14, 0.25)  # mean = 1.4 - 0.14 (r - 15), at least 0.25; lognormal scatter 0.25
PSF_BAND_SCALE = {"u": 0.8, "g": 1.0, "r": 1.0, "i": 1.0, "z": 0.9}


def psf_magnitudes(rng: np.random.Generator, mags: dict, classes: np.ndarray) -> dict:
    """``psf_u..psf_z`` from model magnitudes ``mags`` and classes (drawn from ``rng``, after the rest)."""
    r = mags["r"].astype(np.float64)
    gal = classes == "GALAXY"
    a, r0, slope, floor = PSF_GALAXY
    ext = np.maximum(a - slope * (r - r0), floor) * np.exp(rng.normal(0.0, 0.25, len(r)) - 0.03)
    out = {}
    for b in schema.BANDS:
        m = mags[b].astype(np.float64)
        sigma = PSF_NOISE[0] * (1 + 10 ** (0.4 * (m - PSF_NOISE[1])))
        delta = np.where(gal, ext * PSF_BAND_SCALE[b], 0.0) + rng.normal(0.0, 1.0, len(m)) * sigma
        lo, hi = schema.MAGNITUDE_RANGE
        out[f"psf_{b}"] = np.clip(m + delta, lo, hi).astype(np.float32)
    return out


def synth_partition(index: int, n: int, seed: int = 0) -> pd.DataFrame:
    """Partition ``index`` of a synthetic catalogue: ``n`` rows, a pure function of ``(seed, index, n)``.

    Columns are ``COLUMNS`` (the canonical ones but ``zwarning``) in order with the dtypes of ``schema.TYPES``
    (``class`` as ``str``).
    ``obj_ID`` is ``OBJ_ID_BASE + index * 2**32 + row`` and ``spec_obj_ID`` is unique over all partitions
    of one catalogue (``index < 2**18``, ``n <= 2**32``).
    """
    index, n, seed = int(index), int(n), int(seed)
    if not 0 <= index < MAX_PARTITIONS:
        raise ValueError(f"partition index {index} out of range [0, {MAX_PARTITIONS})")
    if not 0 <= n <= MAX_PARTITION_ROWS:
        raise ValueError(f"rows per partition {n} out of range [0, {MAX_PARTITION_ROWS}]")
    if seed < 0:
        raise ValueError(f"seed {seed} is negative")
    rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
    models = _models()
    counts = rng.multinomial(n, [m.fraction for m in models])
    x = np.empty((n, models[0].means.shape[1]))
    alpha, delta, mjd = np.empty(n), np.empty(n), np.empty(n)
    start = 0
    for m, k in zip(models, counts):
        sl = slice(start, start + k)
        x[sl] = _features(rng, m, k)
        alpha[sl], delta[sl] = _sky(rng, m, k)
        mjd[sl] = _mjd(rng, m, k)
        start += k
    cls = np.repeat(np.arange(len(models)), counts)
    perm = rng.permutation(n)
    x, alpha, delta, mjd, cls = x[perm], alpha[perm], delta[perm], mjd[perm], cls[perm]

    r = x[:, 0]
    g = r + x[:, 2]
    u = g + x[:, 1]
    i = r - x[:, 3]
    z = i - x[:, 4]
    mags = {}
    for b, v in zip(schema.BANDS, (u, g, r, i, z)):
        lo, hi = CALIBRATION["band_range"][b]
        mags[b] = np.clip(v, lo, hi).astype(np.float32)
    redshift = (CALIBRATION["redshift_scale"] * np.sinh(x[:, 5])).astype(np.float32)

    plate_lo, plate_hi = PLATE
    mjd_lo, mjd_hi = PLATE_MJD
    plate = plate_lo + (mjd - mjd_lo) / (mjd_hi - mjd_lo) * (plate_hi - plate_lo) + rng.normal(0, PLATE_SCATTER, n)
    plate = np.clip(np.rint(plate), plate_lo, plate_hi).astype(np.uint64)
    serial = (np.uint64(index) << np.uint64(ROW_BITS)) + np.arange(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        low = (serial * np.uint64(_MIX)) & np.uint64(_LOW50)
    spec_obj_id = (plate << np.uint64(50)) | low

    psf = psf_magnitudes(np.random.default_rng(np.random.SeedSequence([seed, index, 1])), mags,
                         np.asarray(schema.CLASSES)[cls])
    cols = {
        schema.ID: np.uint64(OBJ_ID_BASE) + serial,
        "alpha": alpha,
        "delta": delta,
        **mags,
        **psf,
        "run_ID": rng.integers(RUN_ID[0], RUN_ID[1] + 1, n).astype(np.uint32),
        "rerun_ID": np.full(n, RERUN_ID, dtype=np.uint32),
        "cam_col": rng.integers(CAM_COL[0], CAM_COL[1] + 1, n).astype(np.uint8),
        "field_ID": rng.integers(FIELD_ID[0], FIELD_ID[1] + 1, n).astype(np.uint32),
        "spec_obj_ID": spec_obj_id,
        schema.CLASS: pd.array(np.asarray(schema.CLASSES, dtype=object)[cls], dtype="str"),
        schema.REDSHIFT: redshift,
        "plate": plate.astype(np.uint32),
        "MJD": mjd.astype(np.uint32),
        "fiber_ID": rng.integers(FIBER_ID[0], FIBER_ID[1] + 1, n).astype(np.uint32),
    }
    return pd.DataFrame({c: cols[c] for c in COLUMNS})


# ------------------------------------------------------------------------------------------------ writing


def _round_significant(x: np.ndarray, digits: int) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    mag = np.floor(np.log10(np.abs(x), out=np.zeros_like(x), where=x != 0))
    scale = 10.0 ** (digits - 1 - mag)
    return np.round(x * scale) / scale


def _csv_frame(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with float columns rounded so the CSV prints them with sensible precision."""
    out = df.copy()
    for c, d in CSV_DECIMALS.items():
        out[c] = np.round(df[c].to_numpy(np.float64), d)
    for c, d in CSV_SIGNIFICANT.items():
        out[c] = _round_significant(df[c].to_numpy(np.float64), d)
    return out


def _write_csv(df: pd.DataFrame, path) -> FileCheck:
    """One CSV with a header (Kaggle SDSS17 column names), written whole (see storage.Location.write_bytes);
    its size and digest (``storage.FileCheck``)."""
    from .storage import Location, digest_of

    data = _csv_frame(df).to_csv(index=False).encode()
    Location.of(path).write_bytes(data)
    return FileCheck(len(data), digest_of(data))


def write_sample_csv(path: str | os.PathLike, rows: int = 20000, seed: int = 0) -> Path:
    """Write ``rows`` synthetic rows (partition 0 of ``seed``) to one CSV at ``path``, in this process."""
    path = Path(path)
    _write_csv(synth_partition(0, rows, seed=seed), path)
    return path


def _part_name(index: int, fmt: str) -> str:
    return f"part-{index:05d}.{fmt}"


def write_partition(index: int, n: int, staging, seed: int, fmt: str) -> ManifestPart:
    """Task: generate partition ``index`` and write it into ``staging``; return its file name, rows, size and
    digest."""
    from .storage import Location, write_parquet_atomic

    df = synth_partition(index, n, seed=seed)
    path = Location.of(staging) / _part_name(index, fmt)
    if fmt == "parquet":
        check = write_parquet_atomic(pa.Table.from_pandas(df, schema=ARROW_SCHEMA, preserve_index=False), path)
    else:
        check = _write_csv(df, path)
    return ManifestPart(path.name, len(df), check=check)


@dataclass(frozen=True)
class SynthConfig(JobFlags):
    """What ``astrodask synth`` makes."""

    dest: str
    """Output directory (a local path or an fsspec URL)."""
    rows: int = field(metadata={"flag": "--rows"})
    """Total number of rows to generate (a whole number >= 1; 1e6 is accepted)."""
    partitions: int | None = None
    """Number of output files (one task each); default: about 1,000,000 rows per file."""
    seed: int = 0
    """Random seed (>= 0); the same seed, rows and partitions give the same catalogue."""
    format: str = field(default="parquet", metadata={"choices": FORMATS})
    """parquet: a dataset the other stages read; csv: Kaggle SDSS17 column names (an input for convert)."""

    def __post_init__(self):
        self.check_flags()
        check_choices(self)
        check_count("rows", self.rows, 1, "pass e.g. --rows 1e6")
        if not isinstance(self.dest, (str, os.PathLike)) or not str(self.dest).strip():
            raise ConfigError("dest", f"must be a directory path, got {self.dest!r}", "pass an output directory")
        if self.partitions is not None:
            check_count("partitions", self.partitions, 1, "pass e.g. --partitions 8, or leave it out for ~1M rows "
                        "per file")
            if self.partitions > self.rows:
                raise ConfigError("partitions", f"{self.partitions} is more than the {self.rows} rows",
                                  "use at most one partition per row")
        n_parts = self.n_partitions
        if n_parts > MAX_PARTITIONS:
            raise ConfigError("partitions" if self.partitions else "rows",
                              f"{n_parts:,} partitions exceed the limit of {MAX_PARTITIONS:,}",
                              "use fewer partitions (up to 2**32 rows each) or fewer rows")
        if -(-self.rows // n_parts) > MAX_PARTITION_ROWS:
            raise ConfigError("partitions", f"more than {MAX_PARTITION_ROWS:,} rows per partition",
                              "use more partitions")
        check_count("seed", self.seed, 0, "pass e.g. --seed 0")

    @property
    def n_partitions(self) -> int:
        if self.partitions is not None:
            return int(self.partitions)
        return max(1, math.ceil(self.rows / ROWS_PER_PARTITION))

    def partition_rows(self) -> list[int]:
        """Rows of each partition: as equal as possible, the first ones one row longer."""
        q, r = divmod(int(self.rows), self.n_partitions)
        return [q + (1 if k < r else 0) for k in range(self.n_partitions)]


@dataclass(frozen=True)
class SynthResult:
    dest: str
    rows: int
    files: int

    def lines(self) -> list[str]:
        return [f"synthetic catalogue: {self.dest} ({self.rows:,} rows in {self.files} files)"]


def run(cfg: SynthConfig, client) -> SynthResult:
    """Generate the catalogue ``cfg`` on the workers of ``client`` (one task per file) and commit it."""
    from .console import track
    from .storage import Location, StagedOutput, read_meta

    sizes = cfg.partition_rows()
    fp = {"stage": "synth", "rows": int(cfg.rows), "partitions": len(sizes), "seed": int(cfg.seed),
          "format": cfg.format}
    dest = Location.of(cfg.dest, cfg.storage_options)
    with StagedOutput(dest, cfg.overwrite, cfg.resume, kind="dataset", fingerprint=fp) as out:
        if out.done:
            meta = read_meta(dest)
            return SynthResult(str(dest), int(meta.get("rows") or 0), len(meta.get("parts") or []))
        futures = client.map(write_partition, range(len(sizes)), sizes, staging=out.staging,
                             seed=int(cfg.seed), fmt=cfg.format, pure=False)
        parts = track(futures, "synth", cfg.quiet)
        written = sum(p.rows for p in parts)
        out.commit({"schema_version": schema.SCHEMA_VERSION, "columns": list(COLUMNS), "synthetic": True,
                    "seed": int(cfg.seed), "rows": written, "format": cfg.format, "read": written,
                    "written": written, "quarantined": 0, "reasons": {}}, parts)
    return SynthResult(str(dest), written, len(parts))
