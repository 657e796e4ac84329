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
TYPES = {f.name: f.type for f in FIELDS}
REQUIRED = (ID, *BANDS)
FLOAT_COLUMNS = tuple(f.name for f in FIELDS if pa.types.is_floating(f.type))
INT_COLUMNS = tuple(f.name for f in FIELDS if pa.types.is_integer(f.type))

# Values that SDSS and its exports use for "no measurement"; they become null.
SENTINELS = (-9999.0, -999.0, 9999.0)

RANGES = {"alpha": (0.0, 360.0), "delta": (-90.0, 90.0)}

# External names (compared case-insensitively) -> canonical. Kaggle SDSS17 names are the canonical ones.
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
    # SkyServer magnitude names
    **{f"{kind}_{b}": b for kind in ("modelmag", "dered", "psfmag", "cmodelmag") for b in BANDS},
}
for _c in COLUMNS:
    ALIASES[_c.lower()] = _c

def canonical_names(columns: list[str]) -> dict[str, str]:
    """Map source column names to canonical ones.

    SkyServer joins of PhotoObj and SpecObj name both the z-band magnitude and the redshift ``z``; a CSV
    reader then calls the second one ``z.1``: with five bands present and no ``redshift``, a second ``z``
    is the redshift. Unknown columns are left out of the mapping (they are not carried).
    """
    mapping: dict[str, str] = {}
    taken: set[str] = set()
    lower = {c: c.strip().lower() for c in columns}
    has_redshift = any(ALIASES.get(v) == REDSHIFT for v in lower.values())
    for col, low in lower.items():
        target = ALIASES.get(low)
        if target is None and low in ("z.1", "z_1") and not has_redshift:
            target = REDSHIFT
        if target is None and low == "z" and "z" in taken and not has_redshift:
            target = REDSHIFT
        if target is None or target in taken:
            continue
        mapping[col] = target
        taken.add(target)
    return mapping


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
