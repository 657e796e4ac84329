"""The canonical catalogue schema: column names, types, aliases of external exports, and value rules.

Everything that knows what an SDSS column is called or typed lives here; every other module imports it.
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = 1

ID = "obj_ID"
BANDS = ("u", "g", "r", "i", "z")
CLASS = "class"
REDSHIFT = "redshift"
CLASSES = ("GALAXY", "QSO", "STAR")  # sorted: the model's class order

# Canonical columns in file order. Only ID and BANDS are required; the rest are carried when present.
FIELDS: tuple[pa.Field, ...] = (
    pa.field(ID, pa.uint64(), nullable=False),
    pa.field("alpha", pa.float64()),
    pa.field("delta", pa.float64()),
    *(pa.field(b, pa.float32()) for b in BANDS),
    pa.field("run_ID", pa.uint32()),
    pa.field("rerun_ID", pa.uint32()),
    pa.field("cam_col", pa.uint8()),
    pa.field("field_ID", pa.uint32()),
    pa.field("spec_obj_ID", pa.uint64()),
    pa.field(CLASS, pa.string()),
    pa.field(REDSHIFT, pa.float32()),
    pa.field("plate", pa.uint32()),
    pa.field("MJD", pa.uint32()),
    pa.field("fiber_ID", pa.uint32()),
)
COLUMNS = tuple(f.name for f in FIELDS)
# Columns with few distinct values: Parquet dictionary-encodes these only (trying it on the float columns
# costs write time and makes the files larger).
DICTIONARY_COLUMNS = ("run_ID", "rerun_ID", "cam_col", "field_ID", CLASS, "plate", "MJD", "fiber_ID",
                      "reason", "source")
TYPES = {f.name: f.type for f in FIELDS}
REQUIRED = (ID, *BANDS)
FLOAT_COLUMNS = tuple(f.name for f in FIELDS if pa.types.is_floating(f.type))
INT_COLUMNS = tuple(f.name for f in FIELDS if pa.types.is_integer(f.type))

# Values that SDSS and its exports use for "no measurement"; they become null.
SENTINELS = (-9999.0, -999.0, 9999.0)
# Integer columns: only the negative ones (9999 is a valid plate or field number).
INT_SENTINELS = (-9999, -999)
# Text that means "no value" in a CSV cell (compared after trimming, case-insensitively).
NULL_TOKENS = ("", "nan", "-nan", "+nan", "null", "none", "na", "n/a", "#n/a", "nil")

RANGES = {"alpha": (0.0, 360.0), "delta": (-90.0, 90.0)}

# External names (compared case-insensitively) -> canonical. Kaggle SDSS17 names are the canonical ones.
# When several source columns map to the same canonical column, the canonical name wins, then the alias
# listed first here (so ``modelMag_u`` is preferred over ``psfMag_u``, ``objid`` over ``bestobjid``).
ALIASES: dict[str, str] = {
    # SkyServer / CasJobs native names
    "objid": ID,
    "bestobjid": ID,
    "ra": "alpha",
    "dec": "delta",
    "run": "run_ID",
    "rerun": "rerun_ID",
    "camcol": "cam_col",
    "field": "field_ID",
    "specobjid": "spec_obj_ID",
    "mjd": "MJD",
    "fiberid": "fiber_ID",
    "plate": "plate",
    "class": CLASS,
    "redshift": REDSHIFT,
    "z_spec": REDSHIFT,
    "specz": REDSHIFT,
    "plug_ra": "alpha",
    "plug_dec": "delta",
    # SkyServer magnitude names (FITS array columns are flattened to e.g. MODELMAG_u)
    **{f"{kind}_{b}": b for kind in ("modelmag", "cmodelmag", "psfmag", "dered") for b in BANDS},
}
for _c in COLUMNS:
    ALIASES[_c.lower()] = _c
_RANK = {name: k for k, name in enumerate(ALIASES)}


def unique_names(columns: list[str] | tuple[str, ...]) -> list[str]:
    """Header names made unique the way pandas does it: a repeated ``z`` becomes ``z.1`` (then ``z.2``...).

    SkyServer joins of PhotoObj and SpecObj give two ``z`` columns (the z-band magnitude, then the
    redshift); readers need distinct names, and :func:`canonical_names` knows what ``z.1`` means.
    """
    seen: set[str] = set()
    out: list[str] = []
    for c in columns:
        name, k = c, 0
        while name in seen:
            k += 1
            name = f"{c}.{k}"
        seen.add(name)
        out.append(name)
    return out


def _is_second_z(low: str) -> bool:
    return low in ("z_1",) or (low.startswith("z.") and low[2:].isdigit())


def canonical_names(columns: list[str] | tuple[str, ...]) -> dict[str, str]:
    """Map source column names to canonical ones; unknown columns are left out (they are not carried).

    Names are first made unique with :func:`unique_names` (the keys of the result are those unique names),
    so a header with two ``z`` columns maps the first to the z band and the second (``z.1``) to the redshift.
    A SkyServer ``z`` beside prefixed band names (``modelMag_z``...) and no redshift column is the redshift.
    Where several columns map to one canonical column, the best-ranked alias wins (see ``ALIASES``).
    """
    names = unique_names([c.strip() for c in columns])
    lower = {c: c.lower() for c in names}
    lows = set(lower.values())
    plain_bands = all(b in lows for b in BANDS[:-1])
    has_redshift = any(ALIASES.get(v) == REDSHIFT for v in lows)
    best: dict[str, tuple[int, str]] = {}
    for col, low in lower.items():
        target = ALIASES.get(low)
        rank = _RANK.get(low, 0)
        if low == "z" and not plain_bands and not has_redshift:
            target, rank = REDSHIFT, len(_RANK)  # SpecObj.z beside modelMag_z
        elif _is_second_z(low):
            target, rank = (None, 0) if has_redshift else (REDSHIFT, len(_RANK) + 1)
        if target is None:
            continue
        if low == target.lower():
            rank = -1
        if target not in best or rank < best[target][0]:
            best[target] = (rank, col)
    order = {c: k for k, c in enumerate(names)}
    return {col: target for target, (_, col) in sorted(best.items(), key=lambda kv: order[kv[1][1]])}


def arrow_schema(columns: list[str] | tuple[str, ...]) -> pa.Schema:
    """The canonical Arrow schema restricted to ``columns`` (in canonical order)."""
    present = set(columns)
    return pa.schema([f for f in FIELDS if f.name in present])


QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("reason", pa.string()),
        pa.field("source", pa.string()),
        pa.field("block", pa.int64()),
        pa.field("row", pa.int64()),
        pa.field("record", pa.string()),  # the raw row as JSON, so nothing is lost
    ]
)
