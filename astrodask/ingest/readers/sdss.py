"""The SDSS release as published: ``specObj-dr17.fits`` (+ its row-matched ``photoPosPlate-dr17.fits``),
``photoObj-RUN6-CAMCOL-FIELD4.fits`` and ``calibObj-RUN6-CAMCOL-{star,gal}.fits.gz`` sweeps.

Recognised from their columns (not their names): photometry has RUN, RERUN, CAMCOL, FIELD, ID, RESOLVE_STATUS
and 5-element flux arrays (MODELFLUX, PSFFLUX... in nanomaggies); a specObj has SPECOBJID, CLASS, Z, ZWARNING and
SPECPRIMARY. Derived on the workers, block by block:

* u..z: SDSS asinh magnitudes of MODELFLUX (``--magnitudes psf|cmodel``: PSFFLUX / CMODELFLUX),
  m = -(2.5 / ln 10) [asinh((f / f0) / (2b)) + ln b], f / f0 = flux * 1e-9, b per band (``ASINH_B``): finite for
  zero and negative fluxes. ``psf_u..psf_z`` from PSFFLUX. ``--deredden`` subtracts EXTINCTION from both. A band
  whose inverse variance (MODELFLUX_IVAR, PSFFLUX_IVAR, CMODELFLUX_IVAR) is 0 holds no measurement (SDSS's own
  MODELMAG is -9999 there): it is null (counted in the summary's nulls, imputed and flagged by a model), never the
  magnitude of its placeholder flux.
* ``obj_ID``: OBJID (a string in photoObj files), or composed as CAS does where there is none (sweeps):
  skyVersion 2 << 59 | rerun << 48 | run << 32 | camcol << 29 | field << 16 | id.
* specObj: ``spec_obj_ID`` from the string SPECOBJID, class, redshift Z, its warning bits ZWARNING (``zwarning``:
  with ``--no-cuts``, a flagged redshift is kept and a spectroscopic model scores that row photometrically),
  plate, MJD, fiber; with
  ``--photometry photoPosPlate`` the photometry of row i is row i of that file: where both carry an object id
  (BESTOBJID, OBJID) they must agree, else the row is quarantined (``objid_mismatch``); a spectrum without a
  photometric match (BESTOBJID '0' or blank) is quarantined as ``no_photometry``.

Quality cuts, on unless ``--no-cuts``, each counted as filtered rows: ``spec_primary`` (SPECPRIMARY == 1),
``zwarning`` (ZWARNING == 0), ``survey_primary`` (RESOLVE_STATUS bit 8, SURVEY_PRIMARY; MODE == 1 where
RESOLVE_STATUS is absent). Uncompressed files are read in row ranges (memory-mapped: only the needed columns'
bytes are touched); a gzipped file is one block (astropy decompresses it whole).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from ... import schema
from ...errors import AstrodaskError
from ...storage import Location
from .base import Block, Chunk, Extent, Probe, Reader, ReaderOptions, RowRange
from .fits import fits_info, read_columns

ASINH_B = np.array([1.4e-10, 0.9e-10, 1.2e-10, 1.8e-10, 7.4e-10])
"""Asinh softening b for u g r i z (Lupton, Gunn & Szalay 1999; SDSS EDR Table 21)."""
SKY_VERSION = 2
"""DR8 and later objIDs."""
SURVEY_PRIMARY = 1 << 8
FLUXES = {"model": "MODELFLUX", "psf": "PSFFLUX", "cmodel": "CMODELFLUX"}
PHOTO_COLUMNS = ("RUN", "RERUN", "CAMCOL", "FIELD", "ID", "RA", "DEC")
SPEC_COLUMNS = ("SPECOBJID", "CLASS", "ZWARNING", "SPECPRIMARY", "PLUG_RA", "PLUG_DEC")


def asinh_mags(flux_nmgy: np.ndarray) -> np.ndarray:
    """SDSS asinh magnitudes of (n, 5) u g r i z fluxes in nanomaggies."""
    x = np.asarray(flux_nmgy, np.float64) * 1e-9
    return -(2.5 / math.log(10.0)) * (np.arcsinh(x / (2.0 * ASINH_B)) + np.log(ASINH_B))


def no_measurement(flux: np.ndarray, ivar: np.ndarray | None) -> np.ndarray:
    """(n, 5) True where a band holds no measurement: inverse variance 0 (SDSS's mark: the flux is then a
    placeholder, often exactly 0, and the catalogue's own magnitude -9999), or a flux that is not finite. Such a
    band is null, not the finite asinh magnitude of its placeholder flux."""
    bad = ~np.isfinite(np.asarray(flux, np.float64))
    if ivar is not None:
        bad |= ~(np.asarray(ivar, np.float64) > 0)
    return bad


def compose_objid(rerun, run, camcol, field, ident) -> np.ndarray:
    """CAS objIDs (DR8+, skyVersion 2) from their parts, as uint64."""
    parts = [np.asarray(v).astype(np.uint64) for v in (rerun, run, camcol, field, ident)]
    rerun, run, camcol, field, ident = parts
    return (np.uint64(SKY_VERSION << 59) | rerun << np.uint64(48) | run << np.uint64(32) | camcol << np.uint64(29)
            | field << np.uint64(16) | ident)


def _has_flux(cols: set[str], base: str) -> bool:
    return all(f"{base}_{b}" in cols for b in schema.BANDS)


def layout_of(columns) -> str | None:
    """``specobj``, ``photoobj`` (OBJID present: photoObj / photoPosPlate), ``sweep``, or None."""
    cols = set(columns)
    if all(c in cols for c in SPEC_COLUMNS) and ("Z" in cols or schema.REDSHIFT in cols):
        return "specobj"
    if all(c in cols for c in PHOTO_COLUMNS) and _has_flux(cols, "MODELFLUX") and _has_flux(cols, "PSFFLUX") \
            and ("RESOLVE_STATUS" in cols or "MODE" in cols):
        return "photoobj" if "OBJID" in cols else "sweep"
    return None


@dataclass(frozen=True)
class SdssFile:
    """Header facts of an SDSS bulk file."""

    kind: str
    row_bytes: int
    compressed: bool


@dataclass(frozen=True)
class SdssOptions:
    """What the workers derive, fixed at planning."""

    kind: str
    magnitudes: str
    deredden: bool
    cuts: bool
    photometry: Location | None = None
    """specObj: the row-matched photometry file (photoPosPlate)."""
    photometry_source: str = ""
    photometry_columns: tuple[str, ...] = ()


def _derived_pairs(kind: str, paired: bool) -> tuple[tuple[str, str], ...]:
    cols = []
    if kind != "specobj" or paired:
        cols += [schema.ID, "alpha", "delta", *schema.BANDS, *schema.PSF_BANDS, "run_ID", "rerun_ID", "cam_col",
                 "field_ID"]
    if kind == "specobj":
        cols += ["spec_obj_ID", schema.CLASS, schema.REDSHIFT, schema.ZWARNING, "plate", "MJD", "fiber_ID"]
        if not paired:
            cols += ["alpha", "delta"]
    order = {c: k for k, c in enumerate(schema.COLUMNS)}
    return tuple((c, c) for c in sorted(dict.fromkeys(cols), key=order.get))


class SdssReader(Reader):
    name = "sdss"
    extensions = (".fits", ".fit", ".fts")

    def probe(self, loc: Location, source: str, options: ReaderOptions) -> Probe | None:
        cols, nrows, row_bytes, unread = fits_info(loc, source)
        kind = layout_of(cols)
        if kind is None:
            return None
        compressed = loc.url.lower().endswith((".gz", ".bz2"))
        return Probe(source, loc, self.name, tuple(cols), nrows * row_bytes, nrows, tuple(unread),
                     layout=f"sdss-{kind}", detail=SdssFile(kind, row_bytes, compressed))

    def columns(self, probe: Probe, options: ReaderOptions):
        kind = probe.detail.kind
        mags = options.magnitudes or "model"
        cols = set(probe.columns)
        photometry = options.photometry
        if options.columns:
            raise AstrodaskError(f"{probe.source}: --columns is for catalogue exports; an SDSS bulk file's columns are "
                                 "derived from its data model (drop --columns)")
        if kind == "specobj" and not photometry:
            raise AstrodaskError(f"{probe.source}: a specObj file has no magnitudes; give its row-matched "
                                 "photometry with --photometry photoPosPlate-dr17.fits")
        if kind != "specobj" and not _has_flux(cols, FLUXES[mags]):
            raise AstrodaskError(f"{probe.source}: --magnitudes {mags}: the file has no {FLUXES[mags]}; choose "
                                 "model or psf")
        if options.deredden and kind != "specobj" and not _has_flux(cols, "EXTINCTION"):
            raise AstrodaskError(f"{probe.source}: --deredden needs EXTINCTION, which the file lacks; drop "
                                 "--deredden")
        origin = f"; from {Location.of(photometry).name}" if kind == "specobj" else ""
        described = f"{mags}{', dereddened' if options.deredden else ''} (asinh magnitudes of " \
            f"{FLUXES[mags]}{' - EXTINCTION' if options.deredden else ''}{origin})"
        return schema.ColumnMap(_derived_pairs(kind, bool(photometry)), described)

    def block_options(self, probe: Probe, options: ReaderOptions) -> SdssOptions:
        photometry = options.photometry if probe.detail.kind == "specobj" else None
        loc, cols = None, ()
        if photometry:
            loc = Location.of(photometry, options.storage_options)
            pcols, pn, _, _ = fits_info(loc, photometry)
            if layout_of(pcols) != "photoobj":
                raise AstrodaskError(f"{photometry}: --photometry must be a photoPosPlate / photoObj-layout file "
                                     "(OBJID, RUN..ID, MODELFLUX, PSFFLUX, RESOLVE_STATUS); check the file")
            if pn != probe.nrows:
                raise AstrodaskError(f"{photometry}: {pn:,} rows, but {probe.source} has {probe.nrows:,}; the "
                                     "photometry must be row-matched to the specObj file (same release)")
            cols = tuple(pcols)
        return SdssOptions(probe.detail.kind, options.magnitudes or "model",
                           options.deredden, options.cuts,
                           loc, photometry or "", cols)

    def plan(self, probe: Probe, block_bytes: int) -> list[tuple[Extent, int | None]]:
        if probe.detail.compressed:
            return [(RowRange(0, probe.nrows), 0)] if probe.nrows else []
        step = max(1, block_bytes // probe.detail.row_bytes)
        return [(RowRange(s, min(step, probe.nrows - s)), s) for s in range(0, probe.nrows, step)]

    def read(self, block: Block) -> Iterator[Chunk]:
        o: SdssOptions = block.options
        e: RowRange = block.extent
        out: dict[str, pa.Array] = {}
        cuts: dict[str, np.ndarray] = {}
        rejects: dict[str, np.ndarray] = {}
        photo_loc, photo_src, photo_cols = block.location, block.source, set(block.columns)
        if o.kind == "specobj":
            s = read_columns(block.location, block.source, e.start, e.length,
                             ["SPECOBJID", "BESTOBJID", "CLASS", "Z", "ZWARNING", "SPECPRIMARY", "PLATE", "MJD",
                              "FIBERID", "PLUG_RA", "PLUG_DEC"])
            out["spec_obj_ID"] = pa.array(s["SPECOBJID"], pa.string())
            out[schema.CLASS] = pa.array(s["CLASS"], pa.string())
            out[schema.REDSHIFT] = pa.array(s["Z"])
            out[schema.ZWARNING] = pa.array(s["ZWARNING"])
            for src, dst in (("PLATE", "plate"), ("MJD", "MJD"), ("FIBERID", "fiber_ID")):
                out[dst] = pa.array(s[src])
            if o.cuts:
                cuts["spec_primary"] = s["SPECPRIMARY"] != 1
                cuts["zwarning"] = s["ZWARNING"] != 0
            if o.photometry is None:
                out["alpha"], out["delta"] = pa.array(s["PLUG_RA"]), pa.array(s["PLUG_DEC"])
                yield Chunk(pa.table(out), cuts=cuts)
                return
            photo_loc, photo_src, photo_cols = o.photometry, o.photometry_source, set(o.photometry_columns)
            best = _objid_values(s["BESTOBJID"])
        mags = FLUXES[o.magnitudes]
        want = [*PHOTO_COLUMNS, *(c for c in ("OBJID", "RESOLVE_STATUS", "MODE") if c in photo_cols)]
        bases = [mags, "PSFFLUX"] + (["EXTINCTION"] if o.deredden else [])
        ivars = [f"{b}_IVAR" for b in (mags, "PSFFLUX") if _has_flux(photo_cols, f"{b}_IVAR")]
        p = read_columns(photo_loc, photo_src, e.start, e.length, want + bases + ivars)
        n = e.length
        rerun = np.array([int(x) if x.isdigit() else 0 for x in p["RERUN"]], np.int64) \
            if p["RERUN"].dtype.kind in "US" else p["RERUN"].astype(np.int64)
        if "OBJID" in p:
            objid = _objid_values(p["OBJID"])
            out[schema.ID] = pa.array(p["OBJID"], pa.string()) if p["OBJID"].dtype.kind in "US" \
                else pa.array(p["OBJID"])
        else:
            objid = compose_objid(rerun, p["RUN"], p["CAMCOL"], p["FIELD"], p["ID"])
            out[schema.ID] = pa.array(objid, pa.uint64())
        out["alpha"], out["delta"] = pa.array(p["RA"]), pa.array(p["DEC"])
        ext = p["EXTINCTION"].astype(np.float64) if o.deredden else 0.0
        for base, names in ((mags, schema.BANDS), ("PSFFLUX", schema.PSF_BANDS)):
            m = asinh_mags(p[base]) - ext
            unmeasured = no_measurement(p[base], p.get(f"{base}_IVAR"))
            for k, name in enumerate(names):
                out[name] = pa.array(m[:, k].astype(np.float32), mask=unmeasured[:, k])
        out["run_ID"], out["cam_col"], out["field_ID"] = (pa.array(p[c]) for c in ("RUN", "CAMCOL", "FIELD"))
        out["rerun_ID"] = pa.array(rerun)
        if o.cuts and o.kind != "specobj":
            if "RESOLVE_STATUS" in p:
                cuts["survey_primary"] = (p["RESOLVE_STATUS"].astype(np.int64) & SURVEY_PRIMARY) == 0
            else:
                cuts["survey_primary"] = p["MODE"] != 1
        if o.kind == "specobj":
            missing = (best == 0) | (objid == 0)
            rejects["no_photometry"] = missing
            rejects["objid_mismatch"] = ~missing & (best != objid)
            for name in (*schema.BANDS, *schema.PSF_BANDS, "run_ID", "rerun_ID", "cam_col", "field_ID"):
                col = out[name]
                null = missing | col.is_null().to_numpy(zero_copy_only=False)
                out[name] = pa.array(col.to_numpy(zero_copy_only=False), mask=null)
        table = pa.table({c: out[c] for c, _ in block.mapping})
        assert table.num_rows == n
        yield Chunk(table, cuts=cuts, rejects=rejects)


def _objid_values(col: np.ndarray) -> np.ndarray:
    """Object ids as uint64 from strings ('0' or blank: 0) or integers."""
    if col.dtype.kind in "US":
        return np.array([int(x) if x.isdigit() else 0 for x in col], np.uint64)
    return np.where(col < 0, 0, col).astype(np.uint64)
