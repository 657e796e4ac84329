"""The canonical catalogue schema: column names, types, aliases of external exports, and value rules.

Everything that knows what an SDSS column is called or typed lives here; every other module imports it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from .errors import AstrodaskError

SCHEMA_VERSION = 1

ID = "obj_ID"
BANDS = ("u", "g", "r", "i", "z")
CLASS = "class"
REDSHIFT = "redshift"
ZWARNING = "zwarning"
"""SDSS's redshift-fit warning bits (specObj ZWARNING; 0 = no warning), carried when the source has it."""
CLASSES = ("GALAXY", "QSO", "STAR")  # sorted: the model's class order

# Canonical columns in file order. Only ID and BANDS are required; the rest are carried when present.
FIELDS: tuple[pa.Field, ...] = (
    pa.field(ID, pa.uint64(), nullable=False),
    pa.field("alpha", pa.float64()),
    pa.field("delta", pa.float64()),
    *(pa.field(b, pa.float32()) for b in BANDS),
    *(pa.field(f"psf_{b}", pa.float32()) for b in BANDS),
    pa.field("run_ID", pa.uint32()),
    pa.field("rerun_ID", pa.uint32()),
    pa.field("cam_col", pa.uint8()),
    pa.field("field_ID", pa.uint32()),
    pa.field("spec_obj_ID", pa.uint64()),
    pa.field(CLASS, pa.string()),
    pa.field(REDSHIFT, pa.float32()),
    pa.field(ZWARNING, pa.uint32()),
    pa.field("plate", pa.uint32()),
    pa.field("MJD", pa.uint32()),
    pa.field("fiber_ID", pa.uint32()),
)
COLUMNS = tuple(f.name for f in FIELDS)
# Where a row came from, written by ``convert --row-ids`` (ids generated because the source's ids are not exact
# integers): the source's id text, as it was, and the row's position among the file's data rows (from 0).
SOURCE_ID = "source_obj_ID"
SOURCE_SPEC_ID = "source_spec_obj_ID"
SOURCE_ROW = "source_row"
PROVENANCE_FIELDS: tuple[pa.Field, ...] = (
    pa.field(SOURCE_ID, pa.string()),
    pa.field(SOURCE_SPEC_ID, pa.string()),
    pa.field(SOURCE_ROW, pa.uint64()),
)
ALL_FIELDS = FIELDS + PROVENANCE_FIELDS
ALL_COLUMNS = tuple(f.name for f in ALL_FIELDS)
# Columns with few distinct values: Parquet dictionary-encodes these only (trying it on the float columns
# costs write time and makes the files larger).
DICTIONARY_COLUMNS = ("run_ID", "rerun_ID", "cam_col", "field_ID", CLASS, "plate", "MJD", "fiber_ID",
                      "reason", "source")
TYPES = {f.name: f.type for f in ALL_FIELDS}
REQUIRED = (ID, *BANDS)
PSF_BANDS = tuple(f"psf_{b}" for b in BANDS)
"""PSF magnitudes u..z, kept beside u..z when the source has them (psf - model separates stars from galaxies)."""
INPUT_BITS = (*BANDS, REDSHIFT, *PSF_BANDS)
"""Every column a model can read, in bit order: bit k of a prediction's ``imputed`` (and ``out_of_domain``) mask
stands for ``INPUT_BITS[k]``; only a model's own inputs are ever set."""

# The prediction columns: what ``predict`` writes and ``evaluate``, ``classify`` and the report read.
PRED = "predicted_class"
PROB_PREFIX = "prob_"
PROBS = tuple(PROB_PREFIX + c for c in CLASSES)
"""One probability column per class, in the model's class order."""
IMPUTED = "imputed"
"""uint16 bit mask: bit k set when the model's input ``INPUT_BITS[k]`` was missing and imputed."""
SCORED_BY = "scored_by"
"""Which model scored the row: ``spectroscopic`` (from its redshift) or ``photometric`` (a photometric model, or a
spectroscopic model's photometric companion for a row whose redshift is no measurement)."""
OUT_OF_DOMAIN = "out_of_domain"
"""uint16 bit mask: bit k set when input ``INPUT_BITS[k]`` lies outside the range of the training rows of the
model that scored the row (0: every input inside): the prediction is an extrapolation there."""
PREDICTION_COLUMNS = (PRED, *PROBS, IMPUTED, SCORED_BY, OUT_OF_DOMAIN)

# Values that SDSS and its exports use for "no measurement"; they become null.
SENTINELS = (-9999.0, -999.0, 9999.0)
# Integer columns: only the negative ones (9999 is a valid plate or field number).
INT_SENTINELS = (-9999, -999)
# Text that means "no value" in a CSV cell (compared after trimming, case-insensitively).
NULL_TOKENS = ("", "nan", "-nan", "+nan", "null", "none", "na", "n/a", "#n/a", "nil")

def usable_redshift(redshift, zwarning=None) -> np.ndarray:
    """True where a redshift is a measurement: finite, not exactly 0.0 (what SDSS writes where the fit failed or
    was not run) and, where the file has SDSS's quality bits, not flagged (ZWARNING 0 or unknown)."""
    z = np.asarray(redshift, np.float64)
    ok = np.isfinite(z) & (z != 0.0)
    if zwarning is not None:
        w = np.asarray(zwarning, np.float64)  # nulls as NaN: no flag recorded
        ok &= ~(np.isfinite(w) & (w != 0))
    return ok


# Physically possible values; anything outside is quarantined as ``out_of_range:COLUMN``.
# Magnitudes: SDSS catalogue magnitudes are asinh magnitudes (Lupton et al. 1999), finite for zero and negative
# fluxes: zero flux gives 24.63 25.11 24.80 24.36 22.83 (u g r i z) and the most negative fluxes of real files
# (a few nanomaggies: -5.1 in g in the calibObj-004510-4 sweep) give < 30; SDSS17's extremes are 9.47 and 32.78.
# An asinh magnitude of 40 needs a flux of about -3e5 nanomaggies in u (a -10^5 sigma measurement), so 40 is
# beyond any real measurement; below 2 nothing exists in the SDSS footprint's catalogues (the camera saturates
# at r ~ 14 and the brightest catalogued objects are ~ 9.5), while 0 and 99 are common "no value" fillers.
MAGNITUDE_RANGE = (2.0, 40.0)
# Redshift: the SDSS spectroscopic pipeline fits stars as velocities (SDSS17: z >= -0.00997, i.e. -3,000 km/s),
# galaxies from -0.01 and quasars up to z = 7.0 (SDSS17's maximum 7.011 sits at that fit boundary). The bounds
# leave a margin of 10x below and > 1 above; 1e6 or -1 are not redshifts of any SDSS object.
REDSHIFT_RANGE = (-0.1, 8.0)
RANGES = {"alpha": (0.0, 360.0), "delta": (-90.0, 90.0), **dict.fromkeys((*BANDS, *PSF_BANDS), MAGNITUDE_RANGE),
          REDSHIFT: REDSHIFT_RANGE}

# External names (compared case-insensitively) -> canonical. Kaggle SDSS17 names are the canonical ones.
# When several source columns map to the same canonical column, the canonical name wins, then the alias
# listed first here (so ``objid`` is preferred over ``bestobjid``). Magnitudes and ``z`` are resolved apart
# (see :func:`resolve_columns`).
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
    "spec_z": REDSHIFT,
    "specz": REDSHIFT,
    "zwarn": ZWARNING,
    "z_warning": ZWARNING,
    "plug_ra": "alpha",
    "plug_dec": "delta",
}
for _c in COLUMNS:
    if _c not in BANDS:
        ALIASES[_c.lower()] = _c
_RANK = {name: k for k, name in enumerate(ALIASES)}

# Magnitude systems that can fill u..z, and the (lower-case) prefixes of their SkyServer / FITS column names
# (FITS 5-element arrays are flattened to e.g. MODELMAG_u). Plain u..z (Kaggle, SkyServer PhotoObj) are model
# magnitudes; SkyServer's dered_u..z are model magnitudes minus the Galactic extinction.
MAGNITUDE_SYSTEMS = ("model", "psf", "cmodel")
MAGNITUDE_PREFIXES = {"model": "modelmag_", "psf": "psfmag_", "cmodel": "cmodelmag_"}
DERED_PREFIX = "dered_"
# Names that, right beside a ``z`` column, make it the redshift (SkyServer's SpecObj columns).
SPECTRO_NEIGHBOURS = frozenset({"class", "subclass", "specobjid", "zerr", "z_err", "zwarning", "zwarn",
                                "z_warning", "zconf", "veldisp", "veldisperr", "sn_median_all"})


def unique_names(columns: list[str] | tuple[str, ...]) -> list[str]:
    """Header names made unique the way pandas does it: a repeated ``z`` becomes ``z.1`` (then ``z.2``...).

    SkyServer joins of PhotoObj and SpecObj give two ``z`` columns (the z-band magnitude and the redshift);
    readers need distinct names, and :func:`resolve_columns` tells which is which.
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


def _is_z(low: str) -> bool:
    return low in ("z", "z_1") or (low.startswith("z.") and low[2:].isdigit())


class ColumnError(AstrodaskError):
    """The header does not say which column is which (one line naming the columns and the fix)."""


@dataclass(frozen=True)
class ColumnMap:
    """How a file's columns fill the canonical ones."""

    pairs: tuple[tuple[str, str], ...]
    """(source column, canonical column), in source order; a source column may fill several canonical ones."""
    magnitudes: str = ""
    """Which magnitudes fill u..z, e.g. ``model (modelMag_u..z)``; empty when the file has none."""
    alternates: tuple[tuple[str, str], ...] = ()
    """(source column, canonical column): columns that fill that canonical column by the rules too but lost to
    the one in ``pairs`` (``ra`` beside ``alpha``, ``modelMag_u`` beside ``u``). A conversion compares their values
    and refuses the file where they differ, unless ``--columns`` says which fills it."""

    @property
    def mapping(self) -> dict[str, str]:
        """Source -> canonical (the first canonical column of each source column)."""
        out: dict[str, str] = {}
        for src, canon in self.pairs:
            out.setdefault(src, canon)
        return out


def _z_role(names: list[str], k: int) -> str | None:
    """"band", "redshift" or None (undecided) for the ``z`` column at position ``k``, from its neighbours."""
    near = {names[j].lower() for j in (k - 1, k + 1) if 0 <= j < len(names)}
    band = bool(near & {"u", "g", "r", "i"})
    spectro = bool(near & SPECTRO_NEIGHBOURS)
    if band == spectro:
        return None
    return "band" if band else "redshift"


def _resolve_z(names: list[str], lows: list[str]) -> tuple[str | None, str | None]:
    """(the z-band column, the redshift column) among the ``z`` columns, or a ColumnError."""
    zs = [k for k, low in enumerate(lows) if _is_z(low)]
    if not zs:
        return None, None
    lowset = set(lows)
    plain = all(b in lowset for b in ("u", "g", "r", "i"))
    explicit = any(ALIASES.get(low) == REDSHIFT for low in lows)
    roles = {k: _z_role(names, k) for k in zs}
    if len(zs) == 1:
        k = zs[0]
        if explicit:
            return names[k], None
        if not plain:
            return None, names[k]  # SpecObj.z beside prefixed band names (modelMag_z...) is the redshift
        return (None, names[k]) if roles[k] == "redshift" else (names[k], None)
    bands = [k for k in zs if roles[k] == "band"]
    reds = [k for k in zs if roles[k] == "redshift"]
    unknown = [k for k in zs if roles[k] is None]
    if explicit and len(bands) == 1:
        return names[bands[0]], None
    if not explicit and len(zs) == 2:
        if len(bands) == 1 and len(reds) + len(unknown) == 1:
            return names[bands[0]], names[(reds + unknown)[0]]
        if len(reds) == 1 and len(unknown) == 1:
            return names[unknown[0]], names[reds[0]]
    shown = ", ".join(f"z (column {k + 1})" for k in zs)
    raise ColumnError(
        f"ambiguous columns {shown}: the header does not tell the z-band magnitude from the redshift (a z beside "
        "class/specobjid/zErr is the redshift, a z among u, g, r, i the band); rename the redshift column to "
        "redshift (or the band to modelMag_z) and convert again")


def _system_columns(names: list[str], lows: list[str], prefix: str) -> dict[str, str] | None:
    got = {}
    for b in BANDS:
        want = f"{prefix}{b}"
        hit = next((names[k] for k, low in enumerate(lows) if low == want), None)
        if hit is None:
            return None
        got[b] = hit
    return got


def _describe(system: str, cols: dict[str, str], note: str = "") -> str:
    first, last = cols["u"], cols["z"]
    span = f"{first}..{last}" if first[:-1] != last[:-1] or len(first) == 1 else f"{first}..{last[-1]}"
    return f"{system} ({span}{'; ' + note if note else ''})"


def _choose_magnitudes(names, lows, band_z: str | None, magnitudes: str | None,
                       deredden: bool) -> tuple[dict[str, str], str]:
    """(band -> source column, description) by the rule documented in :func:`resolve_columns`."""
    found: dict[str, dict[str, str]] = {}
    lowset = set(lows)
    if band_z is not None and all(b in lowset for b in ("u", "g", "r", "i")):
        found["plain"] = {**{b: names[lows.index(b)] for b in ("u", "g", "r", "i")}, "z": band_z}
    for system, prefix in MAGNITUDE_PREFIXES.items():
        cols = _system_columns(names, lows, prefix)
        if cols:
            found[system] = cols
    dered = _system_columns(names, lows, DERED_PREFIX)
    present = [s for s in ("plain", *MAGNITUDE_SYSTEMS) if s in found] + (["dered"] if dered else [])
    have = ", ".join({"plain": "u..z", "dered": "dered_u..z"}.get(s) or f"{s} magnitudes" for s in present) or "none"
    if deredden:
        if dered and (magnitudes or "model") == "model":
            return dered, _describe("model, dereddened", dered)
        raise ColumnError(f"--deredden needs dereddened magnitudes (SkyServer dered_u..z) or an SDSS bulk file "
                          f"with EXTINCTION (this file has: {have}); drop --deredden")
    want = magnitudes or "model"
    order = ("plain", "model") if want == "model" else (want,)
    for s in order:
        if s in found:
            return found[s], _describe("model" if s == "plain" else s, found[s])
    if want == "model" and dered:
        return dered, _describe("model, dereddened", dered, "the file has no plain model magnitudes")
    others = [s for s in MAGNITUDE_SYSTEMS if s in found and s != want]
    if magnitudes is None and len(others) == 1:
        return found[others[0]], _describe(others[0], found[others[0]], "the file has no model magnitudes")
    if magnitudes is None and len(others) > 1:
        raise ColumnError(f"u..z could come from {' or '.join(o + ' magnitudes' for o in others)} and the file has no "
                          f"model magnitudes; choose with --magnitudes {'|'.join(others)}")
    if magnitudes is not None:
        raise ColumnError(f"--magnitudes {magnitudes}: the file has no {magnitudes} magnitudes (it has: {have}); "
                          "choose a system it has")
    partial = {b: names[lows.index(b)] for b in ("u", "g", "r", "i") if b in lowset}  # so the refusal names
    if band_z is not None:                                                            # the missing bands
        partial["z"] = band_z
    return partial, ""


def resolve_columns(columns: list[str] | tuple[str, ...], magnitudes: str | None = None,
                    deredden: bool = False, overrides: tuple[tuple[str, str], ...] = ()) -> ColumnMap:
    """Map source column names to canonical ones; unknown columns are left out (they are not carried).

    Names are first made unique with :func:`unique_names` (the pairs name those unique names).

    * ``z``: a ``z`` right beside ``class``, ``specobjid``, ``zErr``, ``zWarning``... is the redshift, a ``z``
      beside ``u``, ``g``, ``r`` or ``i`` the z band, whatever the column order. A single ``z`` is the band when
      plain ``u g r i`` are present (unless its neighbours make it the redshift) and the redshift beside prefixed
      band names (``modelMag_z``...); with an explicit ``redshift`` column it is the band. When two ``z`` cannot
      be told apart this way (both beside bands, or neither beside anything telling), :class:`ColumnError`.
    * u..z: from ``magnitudes`` (``model``, ``psf`` or ``cmodel``; None = model when the file has it). Model
      magnitudes are plain ``u..z`` (Kaggle, SkyServer PhotoObj), else ``modelMag_u..z`` / FITS ``MODELMAG``,
      else SkyServer's ``dered_u..z`` (then recorded as dereddened). Without ``magnitudes`` and without model
      magnitudes, the one other system in the file is used (and recorded); two others are refused. An explicit
      system the file lacks is refused. ``deredden`` takes ``dered_u..z`` (model only).
    * everything else through ``ALIASES``; where several columns map to one canonical column, the best-ranked
      alias wins (the canonical name first) and the others are ``alternates``: a conversion refuses the file where
      their values differ from the winner's (``ra`` and ``alpha`` with different values).
    * ``overrides`` (``convert --columns``: (source, canonical) pairs) come before every rule: that source fills
      that canonical column, and no other source does.

    A header naming one column twice (other than ``z``, resolved by meaning) where that column would fill a
    canonical one is refused, unless ``overrides`` say which fills it.
    """
    stripped = [c.strip() for c in columns]
    names = unique_names(stripped)
    overrides = _check_overrides(names, overrides, stripped)
    _refuse_repeated_names(stripped, names, overrides)
    lows = [c.lower() for c in names]
    band_z, redshift_z = _resolve_z(names, lows)
    bands, described = _choose_magnitudes(names, lows, band_z, magnitudes, deredden)
    best: dict[str, tuple[int, str]] = {}
    also: list[tuple[str, str]] = []
    for col, low in zip(names, lows):
        if _is_z(low) or low in ("u", "g", "r", "i"):
            continue
        target = ALIASES.get(low)
        if target is None:
            continue
        rank = -1 if low == target.lower() else _RANK.get(low, 0)
        if target not in best or rank < best[target][0]:
            if target in best:
                also.append((best[target][1], target))
            best[target] = (rank, col)
        else:
            also.append((col, target))
    if redshift_z is not None and REDSHIFT not in best:
        best[REDSHIFT] = (len(_RANK), redshift_z)
    pairs = [(col, target) for target, (_, col) in best.items()] + [(col, b) for b, col in bands.items()]
    psf = _system_columns(names, lows, MAGNITUDE_PREFIXES["psf"])
    if psf:
        pairs += [(col, f"psf_{b}") for b, col in psf.items() if f"psf_{b}" not in best]
        also += [(col, f"psf_{b}") for b, col in psf.items() if f"psf_{b}" in best]
    model = _system_columns(names, lows, MAGNITUDE_PREFIXES["model"])
    if model and described.startswith("model (") and all(bands.get(b) not in (None, model[b]) for b in BANDS):
        also += [(model[b], b) for b in BANDS]  # plain u..z chosen; modelMag_u..z are the same magnitudes
    if overrides:
        taken = {canon for _, canon in overrides}
        given = {src for src, _ in overrides}
        pairs = [(src, canon) for src, canon in pairs if canon not in taken and src not in given] + list(overrides)
        also = [(src, canon) for src, canon in also if canon not in taken and src not in given]
        if taken & set(BANDS):
            cols = {canon: src for src, canon in overrides}
            described = f"given by --columns ({', '.join(f'{cols[b]}={b}' for b in BANDS if b in cols)})"
    order = {c: k for k, c in enumerate(names)}
    canon_order = {c: k for k, c in enumerate(COLUMNS)}
    pairs.sort(key=lambda p: (order[p[0]], canon_order.get(p[1], len(canon_order))))
    used = {src for src, _ in pairs}
    also = sorted({(src, canon) for src, canon in also if src not in used}, key=lambda p: order[p[0]])
    return ColumnMap(tuple(pairs), described, tuple(also))


def parse_overrides(text: str | None) -> tuple[tuple[str, str], ...]:
    """``"mag_u=psf_u,mag_g=psf_g"`` -> (("mag_u", "psf_u"), ("mag_g", "psf_g")); ColumnError when unreadable,
    when the target is not a canonical column, or when two sources fill one target."""
    if not text:
        return ()
    out, seen = [], {}
    for item in str(text).split(","):
        src, sep, canon = (x.strip() for x in item.partition("="))
        if not sep or not src or not canon:
            raise ColumnError(f"--columns: cannot read {item.strip()!r}; give SOURCE=CANONICAL pairs, e.g. "
                              "'mag_u=psf_u,mag_g=psf_g'")
        if canon not in COLUMNS:
            raise ColumnError(f"--columns {src}={canon}: {canon} is not a column astrodask knows (one of "
                              f"{', '.join(COLUMNS)})")
        if canon in seen:
            raise ColumnError(f"--columns: {canon} is given twice ({seen[canon]} and {src}); give one source per "
                              "column")
        seen[canon] = src
        out.append((src, canon))
    return tuple(out)


def _check_overrides(names: list[str], overrides, stripped: list[str]) -> tuple[tuple[str, str], ...]:
    """The overrides with each source matched to the header's (unique) names; ColumnError for a source the file
    lacks, a source given twice, or a target the file has a column of that very name for (it is taken). The
    override wins over a column the rules would have taken by alias or prefix (that one is then not read)."""
    by_low = {n.lower(): n for n in names}
    out = []
    for src, canon in overrides:
        hit = src if src in names else by_low.get(src.lower())
        if hit is None:
            shown = ", ".join(names[:12]) + (" ..." if len(names) > 12 else "")
            raise ColumnError(f"--columns {src}={canon}: the file has no column {src} (it has: {shown})")
        out.append((hit, canon))
    sources = [hit for hit, _ in out]
    for hit, canon in out:
        if sources.count(hit) > 1:
            raise ColumnError(f"--columns: {hit} is given {sources.count(hit)} times; one source fills one column")
        holder = by_low.get(canon.lower())
        repeat = stripped[names.index(hit)].lower() == canon.lower()  # picks one of a name the header repeats
        candidate = _rule_target(hit.lower()) == canon  # picks one of two columns the rules both fill it from
        if holder is not None and holder != hit and holder not in sources and not repeat and not candidate:
            raise ColumnError(f"--columns {hit}={canon}: the file's own column {holder} is {canon}; map {holder} "
                              f"to another column too (e.g. '{holder}=...') or rename it, so that no value is "
                              "silently replaced")
    return tuple(out)


def _rule_target(low: str) -> str | None:
    """The canonical column a (lower-case) name fills by the rules alone: an alias, or a magnitude system's band
    (``modelmag_u`` -> u, ``psfmag_u`` -> psf_u)."""
    if low in ALIASES:
        return ALIASES[low]
    for b in BANDS:
        if low == f"{MAGNITUDE_PREFIXES['model']}{b}":
            return b
        if low == f"{MAGNITUDE_PREFIXES['psf']}{b}":
            return f"psf_{b}"
    return None


def _refuse_repeated_names(stripped: list[str], names: list[str], overrides) -> None:
    """ColumnError for a name the header gives twice when that name fills a canonical column by the rules and
    ``overrides`` do not say which of them does (``z`` is resolved by meaning instead)."""
    given = {src for src, _ in overrides}
    counts: dict[str, list[int]] = {}
    for k, c in enumerate(stripped):
        counts.setdefault(c.lower(), []).append(k)
    for low, where in counts.items():
        if len(where) < 2 or _is_z(low):
            continue
        canon = ALIASES.get(low) or (low if low in BANDS else None) or next(
            (f"{b}" for sys, pre in MAGNITUDE_PREFIXES.items() for b in BANDS if low == f"{pre}{b}"), None)
        if canon is None or any(names[k] in given for k in where):
            continue
        shown = " and ".join(f"{names[k]} (column {k + 1})" for k in where)
        raise ColumnError(f"the header names {stripped[where[0]]} {len(where)} times ({shown}); astrodask never "
                          f"picks one silently: say which fills it with --columns '{names[where[0]]}=...' (or "
                          f"'{names[where[1]]}=...'), or rename one")


def canonical_names(columns: list[str] | tuple[str, ...], magnitudes: str | None = None) -> dict[str, str]:
    """Source -> canonical column names (see :func:`resolve_columns`); raises ColumnError when ambiguous."""
    return resolve_columns(columns, magnitudes).mapping


def arrow_schema(columns: list[str] | tuple[str, ...]) -> pa.Schema:
    """The canonical Arrow schema restricted to ``columns`` (in canonical order)."""
    present = set(columns)
    return pa.schema([f for f in ALL_FIELDS if f.name in present])


QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("reason", pa.string()),
        pa.field("source", pa.string()),
        pa.field("block", pa.int64()),
        pa.field("row", pa.int64()),
        pa.field("record", pa.string()),  # the raw row as JSON, so nothing is lost
    ]
)


def column_names(table) -> list[str]:
    """The column names of a pandas DataFrame or a pyarrow Table/RecordBatch."""
    return list(table.schema.names) if isinstance(table, (pa.Table, pa.RecordBatch)) else list(table.columns)


def float64_values(col, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Rows ``start:stop`` of a pandas Series or a pyarrow (Chunked)Array as float64, missing values as NaN."""
    if isinstance(col, (pa.Array, pa.ChunkedArray)):
        stop = len(col) if stop is None else stop
        return np.asarray(col.slice(start, stop - start).to_numpy(zero_copy_only=False), np.float64)
    return col.iloc[start:stop].to_numpy(dtype="float64", na_value=np.nan)
