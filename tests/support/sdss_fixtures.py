"""Synthetic SDSS bulk FITS files in the real data-model layouts, with their ground truth.

A plain module (no pytest fixtures inside): tests import it, call a ``write_*`` function with a path,
a size and a seed, and get back a small dataclass holding what a correct converter must produce
(ids, classes, redshifts, quality masks, magnitudes) computed independently of ``astrodask``.

Every file is a FITS file whose HDU 0 is an empty primary HDU and whose HDU 1 is a binary table
(``XTENSION = 'BINTABLE'``) with exactly the column names, order and ``TFORM`` codes of the SDSS
data model, big-endian as FITS requires, strings blank-padded on the right the way the SDSS IDL
writer (MWRFITS) pads them, no ``TDIM`` on the 5-element arrays (the real sweep file has none).
The table header is made by ``astropy.io.fits.BinTableHDU.from_columns``; the rows are written as the
exact big-endian bytes of a packed NumPy record array (astropy would NUL-pad strings), so the small
writers and the streaming writer (:func:`write_big_specobj`) share one code path.

Layouts and where each one comes from
-------------------------------------
``SPECOBJ_DR17_LAYOUT`` (133 columns) -- ``specObj-dr17.fits``
    Data model page https://data.sdss.org/datamodel/files/SPECTRO_REDUX/specObj.html, whose source is
    ``datamodel/products/yaml/specObj.yaml`` in github.com/sdss/datamodel (commit cdcba73f, the
    DR17 entry, read from the real file: types like ``char[22]``, ``int32[5]``). The ``bool`` type of
    that generator stands for TFORM ``B`` or ``L``; the older rendering of the same page says
    ``int1`` for SPECPRIMARY, so the SPEC* flags are written as ``B`` (uint8).
    SPECOBJID, BESTOBJID, FLUXOBJID, TARGETOBJID and PLATEID are *strings* (``22A``/``19A``/``20A``)
    because DR14+ specObjIDs exceed 2**63.
``PHOTOOBJ_LAYOUT`` (139 columns) -- ``photoObj-RUN6-CAMCOL-FIELD4.fits`` and ``photoPosPlate``
    https://data.sdss.org/datamodel/files/BOSS_PHOTOOBJ/RERUN/RUN/CAMCOL/photoObj.html (DR16 copy
    https://dr16.sdss.org/datamodel/files/BOSS_PHOTOOBJ/RERUN/RUN/CAMCOL/photoObj.html: ``OBJID
    string``, ``SKYVERSION int8``, ``MODE int8``), types from ``datamodel/products/yaml/photoObj.yaml``
    (commit e6b9aaa2, example photoObj-002507-1-0011.fits). OBJID, PARENTID and FIELDID are
    19-character strings, not integers. photoPosPlate: "The structure of the data in this file is
    identical to that in the photoObj files" (https://data.sdss.org/datamodel/files/SPECTRO_REDUX/
    photoPosPlate.html), one row per specObj row, same order.
``SWEEP_STAR_LAYOUT`` (65 columns) -- ``calibObj-RUN6-CAMCOL-star.fits.gz``
    Copied column by column (name, TFORM, order; NAXIS1 = 577) from the real file
    ``../shared/data/sdss/calibObj-004510-4-star.fits.gz`` (eBOSS sweep v5b, photoop v1_12_0).
    No OBJID column; RERUN is ``3A``; CAMCOL is ``B``. Page:
    https://data.sdss.org/datamodel/files/PHOTO_SWEEP/RERUN/calibObj.html
``SWEEP_GAL_LAYOUT`` (49 columns) -- ``calibObj-RUN6-CAMCOL-gal.fits.gz``
    From ``datamodel/products/yaml/calibObj.yaml`` (commit d0ca358b, DR17 entry, example
    301/calibObj-000094-1-gal.fits.gz); not checked against a real gal file here.

Formulas (written from the SDSS pages, not from astrodask)
----------------------------------------------------------
* Fluxes are in nanomaggies: Pogson m = 22.5 - 2.5 log10(f)
  (https://www.sdss4.org/dr17/algorithms/magnitudes/).
* asinh magnitudes m = -(2.5/ln 10) [asinh((f/f0)/(2b)) + ln b], f/f0 = f_nmgy * 1e-9,
  b = 1.4e-10, 0.9e-10, 1.2e-10, 1.8e-10, 7.4e-10 for u g r i z; zero-flux magnitudes
  24.63 25.11 24.80 24.36 22.83 (EDR Table 21, http://classic.sdss.org/dr4/algorithms/edr.tb21.html).
* objID (DR8+, https://www.sdss3.org/dr8/glossary.php#ObjID, same layout on the Gaia DR1 page
  https://gea.esac.esa.int/archive/documentation/GDR1/datamodel/Ch3/sdssdr9_original_valid.html):
  bit 63 unused, 59-62 skyVersion, 48-58 rerun, 32-47 run, 29-31 camcol, 28 unused (0), 16-27 field,
  0-15 id. Before DR8 (http://cas.sdss.org/dr4/en/help/docs/algorithm.asp?key=objID, bits counted
  from the most significant one) bit 28 was ``firstField`` (mask 0x10000000); DR8+ objIDs never set
  it. fieldID is the same with id = 0. DR8+ objIDs use skyVersion 2 (e.g. run 3704, rerun 301,
  camcol 3, field 91, id 146 -> 1237661382772195474, the pydl ``sdss_objid`` doc example; SkyServer
  DR13 query results recorded in SciServer's SciScript test data: objID 1237671939804561654 is run
  6162, rerun 301, camcol 3, field 133, obj 246).
* specObjID (DR8+): plate << 50 | fiberid << 38 | (mjd - 50000) << 24 | run2d << 10 | line, with
  run2d 'vN_M_P' -> (N-5)*10000 + M*100 + P and a numeric run2d ('26', '103', '104') as is
  (bit layout as summarised at http://cluster.shao.ac.cn/~shen/wiki/index.php/SpecobjID; checked on
  the lowest DR13 specObjID, 299489677444933632 = plate 266, fiber 1, MJD 51630, run2d 26).
* RESOLVE_STATUS (https://sdss3.org/dr10/algorithms/bitmask_resolve_status.php): RUN_PRIMARY 0,
  RUN_RAMP 1, RUN_OVERLAPONLY 2, RUN_IGNORE 3, RUN_EDGE 4, RUN_DUPLICATE 5, SURVEY_PRIMARY 8,
  SURVEY_BEST 9, SURVEY_SECONDARY 10, SURVEY_BADFIELD 11, SURVEY_EDGE 12; the survey-unique set is
  ``RESOLVE_STATUS & 256``.
* ZWARNING (https://sdss3.org/dr10/algorithms/bitmask_zwarning.php): SKY 0, LITTLE_COVERAGE 1,
  SMALL_DELTA_CHI2 2, NEGATIVE_MODEL 3, MANY_OUTLIERS 4, Z_FITLIMIT 5, NEGATIVE_EMISSION 6,
  UNPLUGGED 7, BAD_TARGET 8, NODATA 9; 0 means no known problem.

String conventions, and what is assumed rather than read from a page or a file
-------------------------------------------------------------------------------
* SPECOBJID (``22A``) is right-justified with leading blanks. This one is *observed*, not assumed: a
  published column dump of specObj-dr17 (https://huggingface.co/datasets/LSDB/mmu_sdss_sdss, column
  ``object_id`` = SPECOBJID) shows ``b'    299489677444933632'`` and ``b'   2575025233207519232'``
  (22 bytes; IDL's default I22 format for 64-bit integers), and the MultimodalUniverse build script
  that made it compares SURVEY with ``'sdss  '`` and PLATEQUALITY with ``'good    '``, i.e. the
  other strings are left-justified and blank-padded. TARGETOBJID (also ``22A``) is assumed to be
  right-justified the same way; BESTOBJID/FLUXOBJID (``19A``: every DR8+ objID has 19 digits) and
  PLATEID (``20A``) are assumed left-justified. How an unmatched BESTOBJID is spelled is not
  documented: the specObj fixture carries three spellings ('0' left-justified, '0' right-justified,
  all blanks), each in named rows.
* Assumed: an unmatched photoPosPlate row is an all-zero row with OBJID '0'; MODE = 1 when
  SURVEY_PRIMARY is set, 2 when SURVEY_SECONDARY or SURVEY_BEST is set, else 3; SPECPRIMARY etc. are
  ``B`` not ``L``; no TDIM on PROFMEAN_NMGY (75E) / APERFLUX (40E) in photoObj and gal sweeps.
* Values are synthetic but shaped like the real ones: fluxes in nanomaggies with noise, so faint
  objects have negative fluxes, plus exactly-zero fluxes with zero inverse variance (as in the real
  sweep); EXTINCTION = E(B-V) * (4.239, 3.303, 2.285, 1.698, 1.263) (the real sweep's band ratios);
  RESOLVE_STATUS values and frequencies as in the real sweep; OBJC_FLAGS sometimes negative (bit 31).

Data-model disagreements noticed while building this (pages vs the files they describe)
-------------------------------------------------------------------------------------
* specObj: the page's older rendering (127 columns) says BLUE_FIBER, TCOLUMN float32[10],
  FRACNSIGHI/FRACNSIGLO scalar, VDISP_DOF, VDISPNPIX int32, SPECIAL_TARGET1/2 int32; the DR17 entry
  read from specObj-dr17.fits (133 columns, used here) has BLUEFIBER, TCOLUMN int32[10] (10J),
  FRACNSIGHI/LO float32[10], VDISPDOF, VDISPNPIX float32, SPECIAL_TARGET1/2 int64, plus THING_ID,
  THING_ID_TARGETING, EBOSS_TARGET1/2, EBOSS_TARGET_ID. Its changelog says "No changes" between
  releases although the per-release column lists differ.
* calibObj: the data model documents only a gal example (49 columns, DR13+); the real star file
  (65 columns) has star-only columns (OBJC_ROWC, ROWVDEG..COLVDEGERR, SKYFLUX, PM_*, TMASS_*,
  APERFLUX6 5E, ZHEDFLAG) and lacks the gal ones (PETRO*, THETA_*, FRACDEV, *_LNL, DEVFLUX, EXPFLUX,
  APERFLUX 40E). The data model's type name ``bool`` for CAMCOL is TFORM ``B`` (uint8) in the real
  file. The page's star selection (at least one extinction-corrected PSF magnitude brighter than
  22.5, 22.5, 22.5, 22, 21.5) holds for all 5,232 rows of the real file.

Example
-------
>>> truth = write_specobj(tmp / "specObj-dr17.fits", n=200, seed=0)     # doctest: +SKIP
>>> truth.keep_with_photo.sum(), truth.rows["no_match_blank"]            # doctest: +SKIP
>>> pos = photopos_for(tmp / "photoPosPlate.fits", truth)                # doctest: +SKIP
>>> sweep = write_sweep(tmp / "calibObj-004510-4-star.fits", 5000, kind="star")  # doctest: +SKIP
>>> big = write_big_specobj(tmp / "big.fits", 1_000_000_000)             # doctest: +SKIP
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits

# ------------------------------------------------------------------------------------------ constants

BANDS = "ugriz"
#: asinh softening parameters b for u g r i z (EDR Table 21 / SDSS magnitudes page)
ASINH_B = np.array([1.4e-10, 0.9e-10, 1.2e-10, 1.8e-10, 7.4e-10])
#: asinh magnitude of a zero flux, u g r i z, as printed in EDR Table 21 (2 decimals)
ZERO_FLUX_MAG_TABLE = np.array([24.63, 25.11, 24.80, 24.36, 22.83])
#: asinh magnitude at f/f0 = 10 b, u g r i z, as printed in EDR Table 21
TEN_B_MAG_TABLE = np.array([22.12, 22.60, 22.29, 21.85, 20.32])
POGSON_ZP_NMGY = 22.5
#: A_band / E(B-V) used for EXTINCTION (their ratios match the real sweep file's EXTINCTION ratios)
EXTINCTION_COEFF = np.array([4.239, 3.303, 2.285, 1.698, 1.263])

# RESOLVE_STATUS bits (sdss3.org/dr10/algorithms/bitmask_resolve_status.php)
RUN_PRIMARY = 1 << 0
RUN_RAMP = 1 << 1
RUN_OVERLAPONLY = 1 << 2
RUN_IGNORE = 1 << 3
RUN_EDGE = 1 << 4
RUN_DUPLICATE = 1 << 5
SURVEY_PRIMARY = 1 << 8
SURVEY_BEST = 1 << 9
SURVEY_SECONDARY = 1 << 10
SURVEY_BADFIELD = 1 << 11
SURVEY_EDGE = 1 << 12

# ZWARNING bits (sdss3.org/dr10/algorithms/bitmask_zwarning.php)
ZW_SKY = 1 << 0
ZW_LITTLE_COVERAGE = 1 << 1
ZW_SMALL_DELTA_CHI2 = 1 << 2
ZW_NEGATIVE_MODEL = 1 << 3
ZW_MANY_OUTLIERS = 1 << 4
ZW_Z_FITLIMIT = 1 << 5
ZW_NEGATIVE_EMISSION = 1 << 6
ZW_UNPLUGGED = 1 << 7
ZW_BAD_TARGET = 1 << 8
ZW_NODATA = 1 << 9

OBJC_TYPE_GALAXY = 3
OBJC_TYPE_STAR = 6
DR8_SKYVERSION = 2
FITS_BLOCK = 2880

# ------------------------------------------------------------------------------------------ layouts

Layout = tuple[tuple[str, str], ...]

#: specObj-dr17.fits HDU 1, in file order (sdss/datamodel specObj.yaml, DR17 entry)
SPECOBJ_DR17_LAYOUT: Layout = (
    ("SURVEY", "6A"), ("INSTRUMENT", "4A"), ("CHUNK", "16A"), ("PROGRAMNAME", "27A"), ("PLATERUN", "16A"),
    ("PLATEQUALITY", "8A"), ("PLATESN2", "E"), ("DEREDSN2", "E"), ("LAMBDA_EFF", "E"), ("BLUEFIBER", "J"),
    ("ZOFFSET", "E"), ("SNTURNOFF", "E"), ("NTURNOFF", "J"), ("SPECPRIMARY", "B"), ("SPECSDSS", "B"),
    ("SPECLEGACY", "B"), ("SPECSEGUE", "B"), ("SPECSEGUE1", "B"), ("SPECSEGUE2", "B"), ("SPECBOSS", "B"),
    ("BOSS_SPECOBJ_ID", "J"), ("SPECOBJID", "22A"), ("FLUXOBJID", "19A"), ("BESTOBJID", "19A"),
    ("TARGETOBJID", "22A"), ("PLATEID", "20A"), ("NSPECOBS", "I"), ("FIRSTRELEASE", "4A"), ("RUN2D", "7A"),
    ("RUN1D", "7A"), ("DESIGNID", "J"), ("CX", "D"), ("CY", "D"), ("CZ", "D"), ("XFOCAL", "E"),
    ("YFOCAL", "E"), ("SOURCETYPE", "25A"), ("TARGETTYPE", "8A"), ("THING_ID_TARGETING", "K"),
    ("THING_ID", "J"), ("PRIMTARGET", "J"), ("SECTARGET", "J"), ("LEGACY_TARGET1", "J"),
    ("LEGACY_TARGET2", "J"), ("SPECIAL_TARGET1", "K"), ("SPECIAL_TARGET2", "K"), ("SEGUE1_TARGET1", "J"),
    ("SEGUE1_TARGET2", "J"), ("SEGUE2_TARGET1", "J"), ("SEGUE2_TARGET2", "J"), ("MARVELS_TARGET1", "J"),
    ("MARVELS_TARGET2", "J"), ("BOSS_TARGET1", "K"), ("BOSS_TARGET2", "K"), ("EBOSS_TARGET0", "K"),
    ("EBOSS_TARGET1", "K"), ("EBOSS_TARGET2", "K"), ("EBOSS_TARGET_ID", "K"), ("ANCILLARY_TARGET1", "K"),
    ("ANCILLARY_TARGET2", "K"), ("SPECTROGRAPHID", "I"), ("PLATE", "J"), ("TILE", "J"), ("MJD", "J"),
    ("FIBERID", "J"), ("OBJID", "5J"), ("PLUG_RA", "D"), ("PLUG_DEC", "D"), ("CLASS", "6A"),
    ("SUBCLASS", "21A"), ("Z", "E"), ("Z_ERR", "E"), ("RCHI2", "E"), ("DOF", "J"), ("RCHI2DIFF", "E"),
    ("TFILE", "24A"), ("TCOLUMN", "10J"), ("NPOLY", "J"), ("THETA", "10E"), ("VDISP", "E"),
    ("VDISP_ERR", "E"), ("VDISPZ", "E"), ("VDISPZ_ERR", "E"), ("VDISPCHI2", "E"), ("VDISPNPIX", "E"),
    ("VDISPDOF", "J"), ("WAVEMIN", "E"), ("WAVEMAX", "E"), ("WCOVERAGE", "E"), ("ZWARNING", "J"),
    ("SN_MEDIAN_ALL", "E"), ("SN_MEDIAN", "5E"), ("CHI68P", "E"), ("FRACNSIGMA", "10E"),
    ("FRACNSIGHI", "10E"), ("FRACNSIGLO", "10E"), ("SPECTROFLUX", "5E"), ("SPECTROFLUX_IVAR", "5E"),
    ("SPECTROSYNFLUX", "5E"), ("SPECTROSYNFLUX_IVAR", "5E"), ("SPECTROSKYFLUX", "5E"), ("ANYANDMASK", "J"),
    ("ANYORMASK", "J"), ("SPEC1_G", "E"), ("SPEC1_R", "E"), ("SPEC1_I", "E"), ("SPEC2_G", "E"),
    ("SPEC2_R", "E"), ("SPEC2_I", "E"), ("ELODIE_FILENAME", "25A"), ("ELODIE_OBJECT", "21A"),
    ("ELODIE_SPTYPE", "12A"), ("ELODIE_BV", "E"), ("ELODIE_TEFF", "E"), ("ELODIE_LOGG", "E"),
    ("ELODIE_FEH", "E"), ("ELODIE_Z", "E"), ("ELODIE_Z_ERR", "E"), ("ELODIE_Z_MODELERR", "E"),
    ("ELODIE_RCHI2", "E"), ("ELODIE_DOF", "J"), ("Z_NOQSO", "E"), ("Z_ERR_NOQSO", "E"),
    ("ZWARNING_NOQSO", "J"), ("CLASS_NOQSO", "6A"), ("SUBCLASS_NOQSO", "21A"), ("RCHI2DIFF_NOQSO", "E"),
    ("Z_PERSON", "E"), ("CLASS_PERSON", "J"), ("Z_CONF_PERSON", "J"), ("COMMENTS_PERSON", "A"),
    ("CALIBFLUX", "5E"), ("CALIBFLUX_IVAR", "5E"),
)

#: photoObj-RUN6-CAMCOL-FIELD4.fits / photoPosPlate HDU 1, in file order (sdss/datamodel photoObj.yaml)
PHOTOOBJ_LAYOUT: Layout = (
    ("OBJID", "19A"), ("PARENTID", "19A"), ("FIELDID", "19A"), ("SKYVERSION", "B"), ("MODE", "B"),
    ("CLEAN", "B"), ("RUN", "I"), ("RERUN", "3A"), ("CAMCOL", "B"), ("FIELD", "I"), ("ID", "I"),
    ("PARENT", "I"), ("NCHILD", "I"), ("OBJC_TYPE", "J"), ("OBJC_PROB_PSF", "E"), ("OBJC_FLAGS", "J"),
    ("OBJC_FLAGS2", "J"), ("OBJC_ROWC", "E"), ("OBJC_ROWCERR", "E"), ("OBJC_COLC", "E"),
    ("OBJC_COLCERR", "E"), ("ROWVDEG", "E"), ("ROWVDEGERR", "E"), ("COLVDEG", "E"), ("COLVDEGERR", "E"),
    ("ROWC", "5E"), ("ROWCERR", "5E"), ("COLC", "5E"), ("COLCERR", "5E"), ("PETROTHETA", "5E"),
    ("PETROTHETAERR", "5E"), ("PETROTH50", "5E"), ("PETROTH50ERR", "5E"), ("PETROTH90", "5E"),
    ("PETROTH90ERR", "5E"), ("Q", "5E"), ("QERR", "5E"), ("U", "5E"), ("UERR", "5E"), ("M_E1", "5E"),
    ("M_E2", "5E"), ("M_E1E1ERR", "5E"), ("M_E1E2ERR", "5E"), ("M_E2E2ERR", "5E"), ("M_RR_CC", "5E"),
    ("M_RR_CCERR", "5E"), ("M_CR4", "5E"), ("M_E1_PSF", "5E"), ("M_E2_PSF", "5E"), ("M_RR_CC_PSF", "5E"),
    ("M_CR4_PSF", "5E"), ("THETA_DEV", "5E"), ("THETA_DEVERR", "5E"), ("AB_DEV", "5E"),
    ("AB_DEVERR", "5E"), ("THETA_EXP", "5E"), ("THETA_EXPERR", "5E"), ("AB_EXP", "5E"),
    ("AB_EXPERR", "5E"), ("FRACDEV", "5E"), ("FLAGS", "5J"), ("FLAGS2", "5J"), ("TYPE", "5J"),
    ("PROB_PSF", "5E"), ("NPROF", "5J"), ("PROFMEAN_NMGY", "75E"), ("PROFERR_NMGY", "75E"),
    ("STAR_LNL", "5E"), ("EXP_LNL", "5E"), ("DEV_LNL", "5E"), ("PSP_STATUS", "5J"), ("PIXSCALE", "5E"),
    ("RA", "D"), ("DEC", "D"), ("CX", "D"), ("CY", "D"), ("CZ", "D"), ("RAERR", "D"), ("DECERR", "D"),
    ("L", "D"), ("B", "D"), ("OFFSETRA", "5E"), ("OFFSETDEC", "5E"), ("PSF_FWHM", "5E"), ("MJD", "J"),
    ("AIRMASS", "5E"), ("PHI_OFFSET", "5E"), ("PHI_DEV_DEG", "5E"), ("PHI_EXP_DEG", "5E"),
    ("EXTINCTION", "5E"), ("SKYFLUX", "5E"), ("SKYFLUX_IVAR", "5E"), ("PSFFLUX", "5E"),
    ("PSFFLUX_IVAR", "5E"), ("PSFMAG", "5E"), ("PSFMAGERR", "5E"), ("FIBERFLUX", "5E"),
    ("FIBERFLUX_IVAR", "5E"), ("FIBERMAG", "5E"), ("FIBERMAGERR", "5E"), ("FIBER2FLUX", "5E"),
    ("FIBER2FLUX_IVAR", "5E"), ("FIBER2MAG", "5E"), ("FIBER2MAGERR", "5E"), ("CMODELFLUX", "5E"),
    ("CMODELFLUX_IVAR", "5E"), ("CMODELMAG", "5E"), ("CMODELMAGERR", "5E"), ("MODELFLUX", "5E"),
    ("MODELFLUX_IVAR", "5E"), ("MODELMAG", "5E"), ("MODELMAGERR", "5E"), ("PETROFLUX", "5E"),
    ("PETROFLUX_IVAR", "5E"), ("PETROMAG", "5E"), ("PETROMAGERR", "5E"), ("DEVFLUX", "5E"),
    ("DEVFLUX_IVAR", "5E"), ("DEVMAG", "5E"), ("DEVMAGERR", "5E"), ("EXPFLUX", "5E"),
    ("EXPFLUX_IVAR", "5E"), ("EXPMAG", "5E"), ("EXPMAGERR", "5E"), ("APERFLUX", "40E"),
    ("APERFLUX_IVAR", "40E"), ("CLOUDCAM", "5J"), ("CALIB_STATUS", "5J"), ("NMGYPERCOUNT", "5E"),
    ("NMGYPERCOUNT_IVAR", "5E"), ("TAI", "5D"), ("RESOLVE_STATUS", "J"), ("THING_ID", "J"),
    ("IFIELD", "J"), ("BALKAN_ID", "J"), ("NOBSERVE", "J"), ("NDETECT", "J"), ("NEDGE", "J"),
    ("SCORE", "E"),
)

#: calibObj-*-star.fits.gz HDU 1, copied from the real calibObj-004510-4-star.fits.gz (NAXIS1 = 577)
SWEEP_STAR_LAYOUT: Layout = (
    ("RUN", "I"), ("RERUN", "3A"), ("CAMCOL", "B"), ("FIELD", "I"), ("ID", "I"), ("OBJC_TYPE", "J"),
    ("OBJC_FLAGS", "J"), ("OBJC_FLAGS2", "J"), ("OBJC_ROWC", "E"), ("ROWVDEG", "E"), ("ROWVDEGERR", "E"),
    ("COLVDEG", "E"), ("COLVDEGERR", "E"), ("ROWC", "5E"), ("COLC", "5E"), ("M_RR_CC", "5E"),
    ("M_RR_CC_PSF", "5E"), ("FLAGS", "5J"), ("FLAGS2", "5J"), ("PSP_STATUS", "5J"), ("RA", "D"),
    ("DEC", "D"), ("PSF_FWHM", "5E"), ("EXTINCTION", "5E"), ("SKYFLUX", "5E"), ("PSFFLUX", "5E"),
    ("PSFFLUX_IVAR", "5E"), ("FIBERFLUX", "5E"), ("FIBERFLUX_IVAR", "5E"), ("FIBER2FLUX", "5E"),
    ("FIBER2FLUX_IVAR", "5E"), ("MODELFLUX", "5E"), ("MODELFLUX_IVAR", "5E"), ("CALIB_STATUS", "5J"),
    ("NMGYPERCOUNT", "5E"), ("RESOLVE_STATUS", "J"), ("THING_ID", "J"), ("IFIELD", "J"),
    ("BALKAN_ID", "J"), ("NDETECT", "J"), ("PM_MATCH", "J"), ("PMRA", "E"), ("PMDEC", "E"),
    ("PMRAERR", "E"), ("PMDECERR", "E"), ("PM_SIGRA", "E"), ("PM_SIGDEC", "E"), ("PM_NFIT", "J"),
    ("PM_DIST22", "E"), ("TMASS_J", "E"), ("TMASS_J_IVAR", "E"), ("TMASS_H", "E"), ("TMASS_H_IVAR", "E"),
    ("TMASS_K", "E"), ("TMASS_K_IVAR", "E"), ("TMASS_PH_QUAL", "A"), ("TMASS_RD_FLG", "I"),
    ("TMASS_BL_FLG", "I"), ("TMASS_CC_FLG", "A"), ("TMASS_GAL_CONTAM", "B"), ("TMASS_MP_FLG", "B"),
    ("TMASS_HEMIS", "A"), ("TMASS_JDATE", "D"), ("APERFLUX6", "5E"), ("ZHEDFLAG", "I"),
)

#: calibObj-*-gal.fits.gz HDU 1 (sdss/datamodel calibObj.yaml, DR13-DR17 entries)
SWEEP_GAL_LAYOUT: Layout = (
    ("RUN", "I"), ("RERUN", "3A"), ("CAMCOL", "B"), ("FIELD", "I"), ("ID", "I"), ("OBJC_TYPE", "J"),
    ("OBJC_FLAGS", "J"), ("OBJC_FLAGS2", "J"), ("ROWC", "5E"), ("COLC", "5E"), ("PETROTH50", "5E"),
    ("PETROTH90", "5E"), ("M_RR_CC", "5E"), ("M_RR_CC_PSF", "5E"), ("THETA_DEV", "5E"),
    ("THETA_EXP", "5E"), ("FRACDEV", "5E"), ("FLAGS", "5J"), ("FLAGS2", "5J"), ("STAR_LNL", "5E"),
    ("EXP_LNL", "5E"), ("DEV_LNL", "5E"), ("PSP_STATUS", "5J"), ("RA", "D"), ("DEC", "D"),
    ("PSF_FWHM", "5E"), ("EXTINCTION", "5E"), ("PSFFLUX", "5E"), ("PSFFLUX_IVAR", "5E"),
    ("FIBERFLUX", "5E"), ("FIBERFLUX_IVAR", "5E"), ("FIBER2FLUX", "5E"), ("FIBER2FLUX_IVAR", "5E"),
    ("MODELFLUX", "5E"), ("MODELFLUX_IVAR", "5E"), ("PETROFLUX", "5E"), ("PETROFLUX_IVAR", "5E"),
    ("DEVFLUX", "5E"), ("DEVFLUX_IVAR", "5E"), ("EXPFLUX", "5E"), ("EXPFLUX_IVAR", "5E"),
    ("APERFLUX", "40E"), ("CALIB_STATUS", "5J"), ("NMGYPERCOUNT", "5E"), ("RESOLVE_STATUS", "J"),
    ("THING_ID", "J"), ("IFIELD", "J"), ("BALKAN_ID", "J"), ("NDETECT", "J"),
)

SWEEP_LAYOUTS = {"star": SWEEP_STAR_LAYOUT, "gal": SWEEP_GAL_LAYOUT}

_TFORM_RE = re.compile(r"^(\d*)([ABIJKED])$")
_TFORM_DTYPE = {"B": "u1", "I": ">i2", "J": ">i4", "K": ">i8", "E": ">f4", "D": ">f8"}


def tform_dtype(tform: str) -> tuple[str, tuple[int, ...]]:
    """(NumPy base dtype, shape) of one FITS binary-table TFORM: '5E' -> ('>f4', (5,)), '22A' -> ('S22', ())."""
    m = _TFORM_RE.match(tform)
    if not m:
        raise ValueError(f"unsupported TFORM {tform!r}")
    repeat = int(m.group(1)) if m.group(1) else 1
    code = m.group(2)
    if code == "A":
        return f"S{repeat}", ()
    return _TFORM_DTYPE[code], ((repeat,) if repeat > 1 else ())


def layout_dtype(layout: Layout) -> np.dtype:
    """The packed, big-endian record dtype whose bytes are one FITS row of ``layout``."""
    fields = []
    for name, tform in layout:
        base, shape = tform_dtype(tform)
        fields.append((name, base, shape) if shape else (name, base))
    dt = np.dtype(fields)
    assert not dt.isalignedstruct
    return dt


# ------------------------------------------------------------------------------------------ ground truth


def band_index(band) -> int:
    """'u'..'z' or 0..4 -> 0..4."""
    if isinstance(band, str):
        return BANDS.index(band)
    i = int(band)
    if not 0 <= i < 5:
        raise ValueError(f"band index {band!r} out of range")
    return i


def pogson_mag(flux_nmgy) -> np.ndarray:
    """m = 22.5 - 2.5 log10(f) for f in nanomaggies (NaN where f <= 0)."""
    f = np.asarray(flux_nmgy, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(f > 0, POGSON_ZP_NMGY - 2.5 * np.log10(np.where(f > 0, f, 1.0)), np.nan)


def asinh_mag(flux_nmgy, band) -> np.ndarray:
    """SDSS asinh magnitude of a flux in nanomaggies in one band.

    m = -(2.5/ln 10) * [asinh((f/f0)/(2b)) + ln b], with f/f0 = flux_nmgy * 1e-9 and b from
    ``ASINH_B``. Finite for zero and negative fluxes.
    """
    b = ASINH_B[band_index(band)]
    x = np.asarray(flux_nmgy, dtype=np.float64) * 1e-9
    return -(2.5 / math.log(10.0)) * (np.arcsinh(x / (2.0 * b)) + math.log(b))


def asinh_mags(flux_nmgy_5) -> np.ndarray:
    """asinh magnitudes of an (..., 5) array of u g r i z fluxes in nanomaggies."""
    x = np.asarray(flux_nmgy_5, dtype=np.float64) * 1e-9
    if x.shape[-1] != 5:
        raise ValueError("last axis must be the 5 bands u g r i z")
    return -(2.5 / math.log(10.0)) * (np.arcsinh(x / (2.0 * ASINH_B)) + np.log(ASINH_B))


def asinh_mag_err(flux_nmgy_5, ivar_5) -> np.ndarray:
    """1-sigma error of the asinh magnitudes: dm = (2.5/ln 10) (df/f0)/(2b) / sqrt(1 + ((f/f0)/(2b))^2).

    df = 1/sqrt(ivar) nanomaggies; NaN where ivar <= 0.
    """
    f = np.asarray(flux_nmgy_5, dtype=np.float64) * 1e-9
    iv = np.asarray(ivar_5, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = np.where(iv > 0, 1.0 / np.sqrt(np.where(iv > 0, iv, 1.0)), np.nan) * 1e-9
    y = f / (2.0 * ASINH_B)
    return (2.5 / math.log(10.0)) * (df / (2.0 * ASINH_B)) / np.sqrt(1.0 + y * y)


_OBJID_FIELDS = (  # name, low bit, width  (DR8+ layout; bit 28 is DR7's firstField)
    ("skyversion", 59, 4), ("rerun", 48, 11), ("run", 32, 16), ("camcol", 29, 3),
    ("first_field", 28, 1), ("field", 16, 12), ("id", 0, 16),
)


def compose_objid(skyversion, rerun, run, camcol, field, id, first_field=0):
    """CAS objID: skyVersion<<59 | rerun<<48 | run<<32 | camcol<<29 | firstField<<28 | field<<16 | id.

    Scalars give a Python int, arrays an int64 array. ``first_field`` is DR7's bit 28 (always 0 in
    DR8 and later). Raises ValueError when a part does not fit its bits.
    """
    parts = {"skyversion": skyversion, "rerun": rerun, "run": run, "camcol": camcol, "first_field": first_field,
             "field": field, "id": id}
    scalar = all(np.ndim(v) == 0 for v in parts.values())
    out = np.zeros(np.broadcast(*[np.asarray(v) for v in parts.values()]).shape, dtype=np.int64)
    for name, shift, width in _OBJID_FIELDS:
        v = np.asarray(parts[name]).astype(np.int64)
        if np.any(v < 0) or np.any(v >= (1 << width)):
            raise ValueError(f"objID part {name}={parts[name]!r} does not fit in {width} bits")
        out |= v << np.int64(shift)
    return int(out) if scalar else out


def decompose_objid(objid) -> dict:
    """The parts of a CAS objID (int, numeric string, or int64 array) as a dict of ints/arrays."""
    if isinstance(objid, (str, bytes)):
        objid = int(objid)
    scalar = np.ndim(objid) == 0
    o = np.asarray(objid).astype(np.int64)
    out = {name: (o >> np.int64(shift)) & np.int64((1 << width) - 1) for name, shift, width in _OBJID_FIELDS}
    return {k: int(v) for k, v in out.items()} if scalar else out


def run2d_code(run2d) -> int:
    """specObjID's run2d number: '26' -> 26, 'v5_13_2' -> (5-5)*10000 + 13*100 + 2 = 1302."""
    if isinstance(run2d, (int, np.integer)):
        return int(run2d)
    s = run2d.decode() if isinstance(run2d, bytes) else str(run2d)
    s = s.strip()
    m = re.fullmatch(r"v(\d+)_(\d+)_(\d+)", s)
    if m:
        n, mi, p = (int(g) for g in m.groups())
        return (n - 5) * 10000 + mi * 100 + p
    return int(s)


def compose_specobjid(plate, fiberid, mjd, run2d, line=0) -> int:
    """DR8+ specObjID = plate<<50 | fiberid<<38 | (mjd-50000)<<24 | run2d<<10 | line (Python int: may exceed 2**63)."""
    r = run2d_code(run2d)
    for name, v, width in (("plate", plate, 14), ("fiberid", fiberid, 12), ("mjd-50000", mjd - 50000, 14),
                           ("run2d", r, 14), ("line", line, 10)):
        if not 0 <= int(v) < (1 << width):
            raise ValueError(f"specObjID part {name}={v} does not fit in {width} bits")
    return (int(plate) << 50) | (int(fiberid) << 38) | ((int(mjd) - 50000) << 24) | (r << 10) | int(line)


def decompose_specobjid(specobjid) -> dict:
    """Inverse of :func:`compose_specobjid` (run2d is returned as its number)."""
    s = int(specobjid)
    return {"plate": s >> 50, "fiberid": (s >> 38) & 0xFFF, "mjd": ((s >> 24) & 0x3FFF) + 50000,
            "run2d": (s >> 10) & 0x3FFF, "line": s & 0x3FF}


def survey_primary(resolve_status) -> np.ndarray:
    """The survey-unique (SURVEY_PRIMARY) mask: (RESOLVE_STATUS & 256) != 0."""
    return (np.asarray(resolve_status).astype(np.int64) & SURVEY_PRIMARY) != 0


def radec_to_cxyz(ra, dec):
    """J2000 unit vector (CX, CY, CZ) of (ra, dec) in degrees."""
    r, d = np.radians(ra), np.radians(dec)
    return np.cos(d) * np.cos(r), np.cos(d) * np.sin(r), np.sin(d)


# ------------------------------------------------------------------------------------------ FITS writing


def _blank_rows(layout: Layout, n: int) -> np.ndarray:
    """n zeroed rows of ``layout`` with every string field set to blanks (MWRFITS pads with blanks)."""
    dt = layout_dtype(layout)
    rows = np.zeros(n, dtype=dt)
    for name in dt.names:
        if dt[name].kind == "S":
            rows[name] = b" " * dt[name].itemsize
    return rows


def _concat_rows(parts: list, layout: Layout) -> np.ndarray:
    """Concatenate record arrays keeping the packed big-endian dtype (np.concatenate would go native-endian)."""
    dt = layout_dtype(layout)
    out = np.empty(sum(len(p) for p in parts), dtype=dt)
    i = 0
    for p in parts:
        out[i:i + len(p)] = p
        i += len(p)
    return out


def _put_str(rows: np.ndarray, name: str, values, justify: str = "left") -> None:
    """Store strings in a fixed-width field, blank-padded (left-justified) or blank-filled (right-justified)."""
    width = rows.dtype[name].itemsize
    vals = np.asarray(values)
    if vals.dtype.kind == "U":
        vals = np.char.encode(vals, "ascii")
    vals = np.broadcast_to(vals.astype(f"S{max(vals.dtype.itemsize, 1)}"), rows.shape)
    if np.any(np.char.str_len(vals) > width):
        raise ValueError(f"{name}: value longer than {width} characters")
    rows[name] = np.char.rjust(vals, width) if justify == "right" else np.char.ljust(vals, width)


def _int_strings(values) -> np.ndarray:
    return np.array([str(int(v)).encode() for v in np.asarray(values).ravel()], dtype="S22").reshape(np.shape(values))


def _table_header(layout: Layout, nrows: int, cards: Iterable = ()) -> fits.Header:
    hdu = fits.BinTableHDU.from_columns([fits.Column(name=n, format=f) for n, f in layout], nrows=0)
    hdr = hdu.header.copy()
    hdr["NAXIS2"] = nrows
    if hdr["NAXIS1"] != layout_dtype(layout).itemsize:
        raise AssertionError("astropy row length differs from the packed dtype")
    for key, value, comment in cards:
        hdr[key] = (value, comment)
    return hdr


def _primary_header(cards: Iterable = ()) -> fits.Header:
    hdr = fits.PrimaryHDU().header
    for key, value, comment in cards:
        hdr[key] = (value, comment)
    hdr.add_comment("Synthetic test fixture written by astrodask tests/support/sdss_fixtures.py (not SDSS data)")
    return hdr


def write_table_stream(path, layout: Layout, nrows: int, chunks: Iterable[np.ndarray],
                       primary_cards: Iterable = (), table_cards: Iterable = ()) -> int:
    """Write a 2-HDU FITS file whose HDU 1 has ``nrows`` rows taken from ``chunks``, one chunk at a time.

    The headers are written first (NAXIS2 already ``nrows``), then each chunk's big-endian bytes are
    appended and the data unit is padded with NULs to a multiple of 2880 bytes, so memory use is one
    chunk. Returns the file size in bytes. Raises if the chunks do not add up to ``nrows`` rows.
    """
    dt = layout_dtype(layout)
    written = 0
    with open(path, "wb") as fh:
        fh.write(_primary_header(primary_cards).tostring().encode("ascii"))
        fh.write(_table_header(layout, nrows, table_cards).tostring().encode("ascii"))
        for chunk in chunks:
            if chunk.dtype != dt:
                raise TypeError("chunk dtype differs from the layout's packed big-endian dtype")
            if written + len(chunk) > nrows:
                raise ValueError("more rows than declared in NAXIS2")
            fh.write(chunk.tobytes())
            written += len(chunk)
        if written != nrows:
            raise ValueError(f"wrote {written} rows, NAXIS2 says {nrows}")
        nbytes = nrows * dt.itemsize
        fh.write(b"\0" * ((-nbytes) % FITS_BLOCK))
        return fh.tell()


def write_table(path, layout: Layout, rows: np.ndarray, primary_cards: Iterable = (),
                table_cards: Iterable = ()) -> int:
    """Write ``rows`` (a record array of ``layout_dtype(layout)``) as HDU 1 of a new FITS file."""
    return write_table_stream(path, layout, len(rows), [rows], primary_cards, table_cards)


# ------------------------------------------------------------------------------------------ photometry model

_CLASSES = ("GALAXY", "QSO", "STAR")
#: 5-sigma PSF depths (u g r i z) used for the flux noise
_DEPTH_5SIG = np.array([22.0, 22.2, 22.2, 21.3, 20.5])
_SKY_SIGMA = 10 ** ((POGSON_ZP_NMGY - _DEPTH_5SIG) / 2.5) / 5.0
_NMGYPERCOUNT = np.array([0.0098, 0.0036, 0.0051, 0.0062, 0.0363])


def _true_mags(rng, cls: np.ndarray, rmag: np.ndarray) -> np.ndarray:
    """Pogson u g r i z magnitudes for objects of the given classes and r magnitudes."""
    n = len(cls)
    gr = np.empty(n)
    ug, ri, iz = np.empty(n), np.empty(n), np.empty(n)
    star, gal, qso = cls == "STAR", cls == "GALAXY", cls == "QSO"
    gr[star] = rng.uniform(0.15, 1.5, star.sum())
    ug[star] = 0.8 + 1.1 * gr[star] + rng.normal(0, 0.15, star.sum())
    ri[star] = 0.05 + 0.45 * gr[star] + rng.normal(0, 0.05, star.sum())
    iz[star] = 0.02 + 0.25 * gr[star] + rng.normal(0, 0.05, star.sum())
    gr[gal] = rng.normal(0.8, 0.2, gal.sum())
    ug[gal] = rng.normal(1.6, 0.3, gal.sum())
    ri[gal] = rng.normal(0.4, 0.1, gal.sum())
    iz[gal] = rng.normal(0.3, 0.1, gal.sum())
    gr[qso] = rng.normal(0.15, 0.15, qso.sum())
    ug[qso] = rng.normal(0.25, 0.25, qso.sum())
    ri[qso] = rng.normal(0.1, 0.1, qso.sum())
    iz[qso] = rng.normal(0.05, 0.1, qso.sum())
    g = rmag + gr
    return np.stack([g + ug, g, rmag, rmag - ri, rmag - ri - iz], axis=1)


def _measure(rng, true_flux: np.ndarray, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Noisy measured flux (nmgy) and its inverse variance for true fluxes (n, 5)."""
    sigma = np.sqrt((scale * _SKY_SIGMA) ** 2 + 0.002 * np.abs(true_flux))
    flux = true_flux + rng.normal(0.0, 1.0, true_flux.shape) * sigma
    return flux.astype(np.float32), (1.0 / sigma ** 2).astype(np.float32)


def _photo_fluxes(rng, cls: np.ndarray, rmag: np.ndarray) -> dict:
    """All flux measurements of a set of objects, as float32 (n, 5) arrays in nanomaggies."""
    n = len(cls)
    true_mag = _true_mags(rng, cls, rmag)
    total = 10 ** ((POGSON_ZP_NMGY - true_mag) / 2.5)
    point = (cls != "GALAXY")[:, None]
    psf_frac = np.where(point, 1.0, rng.uniform(0.25, 0.6, (n, 1)))
    out = {}
    out["PSFFLUX"], out["PSFFLUX_IVAR"] = _measure(rng, total * psf_frac)
    out["MODELFLUX"], out["MODELFLUX_IVAR"] = _measure(rng, total, 1.1)
    out["CMODELFLUX"], out["CMODELFLUX_IVAR"] = _measure(rng, total, 1.1)
    out["PETROFLUX"], out["PETROFLUX_IVAR"] = _measure(rng, total * 0.95, 1.5)
    out["DEVFLUX"], out["DEVFLUX_IVAR"] = _measure(rng, total * 1.05, 1.2)
    out["EXPFLUX"], out["EXPFLUX_IVAR"] = _measure(rng, total * 0.97, 1.2)
    out["FIBERFLUX"], out["FIBERFLUX_IVAR"] = _measure(rng, total * psf_frac * 0.75, 0.9)
    out["FIBER2FLUX"], out["FIBER2FLUX_IVAR"] = _measure(rng, total * psf_frac * 0.55, 0.7)
    return out


def _force_nonpositive(rng, fluxes: dict, n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Make k rows' u-band PSF/model/cModel/fiber flux exactly 0 (ivar 0) and k other rows' u and g fluxes negative.

    Returns (zero_rows, negative_rows). Exactly-zero fluxes come with zero inverse variance, as in
    the real sweep file (every zero PSFFLUX there has PSFFLUX_IVAR == 0).
    """
    k = min(k, n // 2)
    pick = rng.choice(n, 2 * k, replace=False) if k else np.array([], dtype=int)
    zero, neg = np.sort(pick[:k]), np.sort(pick[k:])
    for name in ("PSFFLUX", "MODELFLUX", "CMODELFLUX", "FIBERFLUX", "FIBER2FLUX", "PETROFLUX",
                 "DEVFLUX", "EXPFLUX"):
        if name not in fluxes:
            continue
        fluxes[name][zero, 0] = 0.0
        fluxes[name + "_IVAR"][zero, 0] = 0.0
        fluxes[name][neg, 0] = -rng.uniform(0.05, 1.0, len(neg)).astype(np.float32)
        fluxes[name][neg, 1] = -rng.uniform(0.01, 0.3, len(neg)).astype(np.float32)
    return zero, neg


def _mag_columns(rows: np.ndarray, fluxes: dict) -> None:
    """Fill the photoObj *MAG/*MAGERR columns from the stored float32 fluxes (asinh magnitudes)."""
    for base in ("PSF", "FIBER", "FIBER2", "CMODEL", "MODEL", "PETRO", "DEV", "EXP"):
        f = rows[base + "FLUX"]
        rows[base + "MAG"] = asinh_mags(f).astype(np.float32)
        err = asinh_mag_err(f, rows[base + "FLUX_IVAR"])
        rows[base + "MAGERR"] = np.where(np.isfinite(err), err, -9999.0).astype(np.float32)


def _photo_flags(rng, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Plausible photo FLAGS (per band) and OBJC_FLAGS: BINNED1 (bit 28) always set, as in the real sweep;
    a few rows with bit 31 set so OBJC_FLAGS is negative as a signed int32."""
    binned1 = np.int64(1 << 28)
    extra_bits = np.array([1 << 4, 1 << 3, 1 << 15, 1 << 8, 1 << 17, 1 << 19], dtype=np.int64)
    pick = rng.random((n, len(extra_bits))) < 0.2
    objc = binned1 | (pick * extra_bits).sum(axis=1)
    top = rng.random(n) < 0.1
    objc = np.where(top, objc | (np.int64(1) << 31), objc)
    objc32 = objc.astype(np.uint32).view(np.int32)
    band = np.repeat(objc[:, None], 5, axis=1) & np.int64(0x7FFFFFFF)
    band |= (rng.random((n, 5)) < 0.1) * np.int64(1 << 18)
    return band.astype(np.int32), objc32


def _resolve_status(rng, n: int, frac_primary: float) -> np.ndarray:
    """RESOLVE_STATUS values in the proportions of the real star sweep, with ``frac_primary`` of SURVEY_PRIMARY.

    The real file holds 257 (RUN_PRIMARY|SURVEY_PRIMARY) 2.8 %, 513 (RUN_PRIMARY|SURVEY_BEST) 12.5 %,
    1025 (RUN_PRIMARY|SURVEY_SECONDARY) 80.9 %, 4113 (RUN_PRIMARY|RUN_EDGE|SURVEY_EDGE) 3.2 %,
    17 (RUN_PRIMARY|RUN_EDGE) 0.3 %, 1041 (RUN_PRIMARY|RUN_EDGE|SURVEY_SECONDARY) 0.2 %.
    """
    others = np.array([RUN_PRIMARY | SURVEY_BEST, RUN_PRIMARY | SURVEY_SECONDARY,
                       RUN_PRIMARY | RUN_EDGE | SURVEY_EDGE, RUN_PRIMARY | RUN_EDGE,
                       RUN_PRIMARY | RUN_EDGE | SURVEY_SECONDARY])
    w = np.array([653, 4234, 170, 18, 10], dtype=float)
    status = rng.choice(others, n, p=w / w.sum())
    n_primary = round(frac_primary * n)
    if n_primary:
        status[rng.choice(n, n_primary, replace=False)] = RUN_PRIMARY | SURVEY_PRIMARY
    return status.astype(np.int32)


def _mode_from_status(status: np.ndarray) -> np.ndarray:
    s = status.astype(np.int64)
    return np.where(s & SURVEY_PRIMARY, 1, np.where(s & (SURVEY_SECONDARY | SURVEY_BEST), 2, 3)).astype(np.uint8)


def _extinction(rng, n: int) -> np.ndarray:
    ebv = rng.uniform(0.005, 0.12, n)
    return (ebv[:, None] * EXTINCTION_COEFF).astype(np.float32)


# ------------------------------------------------------------------------------------------ truth records


@dataclass
class SpecObjTruth:
    """What a converter must find in a specObj fixture (row order = file order).

    ``rows`` names the deliberately defective rows:

    * ``not_primary`` -- SPECPRIMARY == 0: repeat spectra of another row's object (same BESTOBJID,
      ``duplicate_of`` gives that row); ZWARNING == 0 and a valid BESTOBJID.
    * ``zwarning`` -- ZWARNING != 0 (one bit pattern each, see ``zwarning_bits``); SPECPRIMARY == 1.
      ``zwarning_sky`` (SKY fibers, TARGETTYPE 'SKY') is a subset and has BESTOBJID '0' too.
    * ``not_primary_and_zwarning`` -- both defects in one row.
    * ``no_match_zero`` -- BESTOBJID '0' (left-justified, i.e. '0' + 18 blanks).
    * ``no_match_zero_rjust`` -- BESTOBJID '0' right-justified (18 blanks + '0').
    * ``no_match_blank`` -- BESTOBJID all blanks.
      The three no-match sets are SPECPRIMARY == 1 and ZWARNING == 0: they pass the spectroscopic
      cuts and have no photometry.
    * ``negative_z`` -- clean STAR rows with Z < 0 (real stars have small negative redshifts): keep.
    """

    path: Path
    n: int
    specobjid: list            # Python ints (DR17 ids can exceed 2**63)
    specobjid_str: np.ndarray  # the raw 22-byte SPECOBJID strings as stored
    bestobjid: np.ndarray      # int64, 0 where there is no photometric match
    cls: np.ndarray            # 'GALAXY' | 'QSO' | 'STAR' (unpadded)
    subclass: np.ndarray
    z: np.ndarray              # float32 as stored
    z_err: np.ndarray
    zwarning: np.ndarray
    specprimary: np.ndarray
    plate: np.ndarray
    mjd: np.ndarray
    fiberid: np.ndarray
    run2d: np.ndarray
    survey: np.ndarray
    plug_ra: np.ndarray
    plug_dec: np.ndarray
    rows: dict = field(default_factory=dict)
    zwarning_bits: dict = field(default_factory=dict)
    duplicate_of: dict = field(default_factory=dict)

    @property
    def primary(self) -> np.ndarray:
        return self.specprimary == 1

    @property
    def zwarning_ok(self) -> np.ndarray:
        return self.zwarning == 0

    @property
    def has_photo(self) -> np.ndarray:
        return self.bestobjid != 0

    @property
    def keep(self) -> np.ndarray:
        """The spectroscopic quality cuts: SPECPRIMARY == 1 and ZWARNING == 0."""
        return self.primary & self.zwarning_ok

    @property
    def keep_with_photo(self) -> np.ndarray:
        """``keep`` and a photometric match (BESTOBJID not '0'/blank)."""
        return self.keep & self.has_photo


@dataclass
class PhotoTruth:
    """What a converter must find in a photoObj / photoPosPlate / sweep fixture (row order = file order).

    Magnitudes are recomputed here with :func:`asinh_mags` from the float32 fluxes *as stored*, so a
    converter that reads the file's fluxes must reproduce them to float32 round-off.
    ``rows``: ``zero_flux`` (u-band fluxes exactly 0 with ivar 0), ``negative_flux`` (u and g < 0),
    plus writer-specific sets documented on each writer.
    """

    path: Path
    n: int
    objid: np.ndarray           # int64 composed objID (0 for an empty photoPosPlate row)
    run: np.ndarray
    rerun: np.ndarray
    camcol: np.ndarray
    field: np.ndarray
    id: np.ndarray
    ra: np.ndarray
    dec: np.ndarray
    objc_type: np.ndarray
    resolve_status: np.ndarray
    true_class: np.ndarray      # class used to generate the colours ('' for empty rows)
    psfflux: np.ndarray         # float32 (n, 5) as stored, nanomaggies
    modelflux: np.ndarray
    fiberflux: np.ndarray
    cmodelflux: np.ndarray | None
    extinction: np.ndarray
    rows: dict = field(default_factory=dict)

    @property
    def primary(self) -> np.ndarray:
        return survey_primary(self.resolve_status)

    @property
    def psfmag(self) -> np.ndarray:
        return asinh_mags(self.psfflux)

    @property
    def modelmag(self) -> np.ndarray:
        return asinh_mags(self.modelflux)

    @property
    def fibermag(self) -> np.ndarray:
        return asinh_mags(self.fiberflux)

    @property
    def cmodelmag(self) -> np.ndarray:
        if self.cmodelflux is None:
            raise AttributeError("this layout has no CMODELFLUX")
        return asinh_mags(self.cmodelflux)

    @property
    def dered_psfmag(self) -> np.ndarray:
        return self.psfmag - self.extinction

    @property
    def dered_modelmag(self) -> np.ndarray:
        return self.modelmag - self.extinction


@dataclass
class PhotoPosTruth(PhotoTruth):
    """photoPosPlate truth: also whether row i's OBJID equals the specObj row i's BESTOBJID.

    ``rows['mismatch']``: OBJID deliberately differs (a neighbour in the same field);
    ``rows['no_match']``: the spectrum has no photometric match and the row is empty (OBJID '0').
    """

    spec_bestobjid: np.ndarray = None

    @property
    def matches_spec(self) -> np.ndarray:
        return (self.objid == self.spec_bestobjid) & (self.spec_bestobjid != 0)


@dataclass
class BigSpecObjInfo:
    """Summary of a streamed specObj file; rows can be regenerated with :func:`big_specobj_rows`."""

    path: Path
    seed: int
    nrows: int
    row_bytes: int
    file_bytes: int
    rows_per_plate: int
    n_primary: int
    n_zwarning_ok: int
    n_keep: int
    class_counts: dict


# ------------------------------------------------------------------------------------------ specObj

_SURVEY_PLATES = (  # (first plate, last plate, survey, instrument, run2d, run1d, programname, firstrelease, nfiber)
    (266, 1959, "sdss", "SDSS", "26", "", "legacy", "dr8", 640),
    (1960, 2399, "segue1", "SDSS", "103", "", "segue", "dr8", 640),
    (2400, 2899, "sdss", "SDSS", "26", "", "legacy", "dr8", 640),
    (2900, 3509, "segue2", "SDSS", "104", "", "segue2", "dr8", 640),
    (3510, 7565, "boss", "BOSS", "v5_13_2", "v5_13_2", "boss", "dr12", 1000),
    (7566, 12547, "eboss", "BOSS", "v5_13_2", "v5_13_2", "eboss", "dr16", 1000),
)
_N_PLATE_SLOTS = 12547 - 266 + 1
_CLASS_P = {"sdss": (0.70, 0.10, 0.20), "segue1": (0.03, 0.02, 0.95), "segue2": (0.02, 0.01, 0.97),
            "boss": (0.72, 0.22, 0.06), "eboss": (0.45, 0.50, 0.05)}
_SUBCLASSES = {
    "GALAXY": ("", "", "STARFORMING", "STARBURST", "AGN", "STARFORMING BROADLINE", "BROADLINE"),
    "QSO": ("", "BROADLINE", "STARBURST BROADLINE", "AGN BROADLINE"),
    "STAR": ("A0", "F5", "F9", "G2", "K1", "K3", "K5", "K7", "M0", "M2", "M5", "WD", "CV", "OB", "Carbon"),
}
_TFILES = {"GALAXY": "spEigenGal-55740.fits", "QSO": "spEigenQSO-55732.fits", "STAR": "spEigenStar-55734.fits"}
_RUNS = (94, 125, 756, 1035, 2583, 3704, 4510, 5323, 6314, 7717)


def _plate_info(k: int):
    """Deterministic plate description for global plate slot k (unique (plate, mjd) for every k)."""
    p = (k * 7919) % _N_PLATE_SLOTS   # 7919 is prime and does not divide 12282: a bijection of k mod 12282
    plate = 266 + p
    for lo, hi, survey, instrument, run2d, run1d, program, release, nfiber in _SURVEY_PLATES:
        if lo <= plate <= hi:
            break
    if plate <= 3509:
        mjd = 51602 + int((plate - 266) / (3509 - 266) * 3000)
    elif plate <= 7565:
        mjd = 55170 + int((plate - 3510) / (7565 - 3510) * 1600)
    else:
        mjd = 56800 + int((plate - 7566) / (12547 - 7566) * 2100)
    mjd += 3 * (k // _N_PLATE_SLOTS)
    return {"plate": plate, "mjd": mjd, "survey": survey, "instrument": instrument, "run2d": run2d,
            "run1d": run1d, "programname": program, "firstrelease": release, "nfiber": nfiber}


def _specobj_plate(seed: int, k: int, nrows: int) -> np.ndarray:
    """``nrows`` clean specObj rows (SPECPRIMARY 1, ZWARNING 0, photometric match) on plate slot k."""
    info = _plate_info(k)
    rng = np.random.default_rng([seed, k, 11])
    if nrows > info["nfiber"]:
        raise ValueError(f"plate slot {k} has only {info['nfiber']} fibers")
    rows = _blank_rows(SPECOBJ_DR17_LAYOUT, nrows)
    n = nrows
    survey, boss = info["survey"], info["instrument"] == "BOSS"

    _put_str(rows, "SURVEY", survey)
    _put_str(rows, "INSTRUMENT", info["instrument"])
    _put_str(rows, "CHUNK", f"{'boss' if boss else 'chunk'}{1 + k % 90}")
    _put_str(rows, "PROGRAMNAME", info["programname"])
    _put_str(rows, "PLATERUN", f"{'boss' if boss else 'plate'}{k % 400}")
    quality = rng.choice(["good", "marginal", "bad"], p=[0.9, 0.07, 0.03])
    _put_str(rows, "PLATEQUALITY", quality)
    rows["PLATESN2"] = 0.0 if boss else rng.uniform(15, 40)
    rows["DEREDSN2"] = rng.uniform(5, 20) if boss else 0.0
    rows["SNTURNOFF"] = -9999.0
    rows["SPECPRIMARY"] = 1
    rows["SPECSDSS"] = 0 if boss else 1
    rows["SPECLEGACY"] = 1 if survey == "sdss" else 0
    rows["SPECSEGUE"] = 1 if survey.startswith("segue") else 0
    rows["SPECSEGUE1"] = 1 if survey == "segue1" else 0
    rows["SPECSEGUE2"] = 1 if survey == "segue2" else 0
    rows["SPECBOSS"] = 1 if boss else 0
    _put_str(rows, "FIRSTRELEASE", info["firstrelease"])
    _put_str(rows, "RUN2D", info["run2d"])
    _put_str(rows, "RUN1D", info["run1d"])
    rows["DESIGNID"] = (k * 13) % 30000 if boss else -1
    rows["PLATE"] = info["plate"]
    rows["TILE"] = -1 if boss else 1 + info["plate"] // 2
    rows["MJD"] = info["mjd"]

    fibers = np.sort(rng.choice(np.arange(1, info["nfiber"] + 1), n, replace=False))
    rows["FIBERID"] = fibers
    rows["SPECTROGRAPHID"] = np.where(fibers <= info["nfiber"] // 2, 1, 2)
    rows["BOSS_SPECOBJ_ID"] = fibers if boss else 0

    ra0, dec0 = rng.uniform(0, 360), np.degrees(np.arcsin(rng.uniform(-0.2, 1.0)))
    r = 1.49 * np.sqrt(rng.random(n))
    th = rng.uniform(0, 2 * np.pi, n)
    dra, ddec = r * np.cos(th), r * np.sin(th)
    dec = np.clip(dec0 + ddec, -89.9, 89.9)
    ra = np.mod(ra0 + dra / np.cos(np.radians(dec)), 360.0)
    rows["PLUG_RA"], rows["PLUG_DEC"] = ra, dec
    rows["CX"], rows["CY"], rows["CZ"] = radec_to_cxyz(ra, dec)
    rows["XFOCAL"], rows["YFOCAL"] = 217.7 * dra, 217.7 * ddec
    rows["LAMBDA_EFF"] = 5400.0

    cls = rng.choice(np.array(_CLASSES), n, p=_CLASS_P[survey])
    _put_str(rows, "CLASS", cls)
    _put_str(rows, "SUBCLASS", [_SUBCLASSES[c][rng.integers(len(_SUBCLASSES[c]))] for c in cls])
    z = np.empty(n)
    gal, qso, star = cls == "GALAXY", cls == "QSO", cls == "STAR"
    z[gal] = (rng.gamma(4.0, 0.03, gal.sum()) if survey == "sdss"
              else rng.uniform(0.15, 1.1, gal.sum()))
    z[qso] = np.minimum(rng.lognormal(0.6, 0.5, qso.sum()), 6.9)
    z[star] = rng.normal(0.0, 3e-4, star.sum())
    rows["Z"] = z
    rows["Z_ERR"] = np.where(qso, rng.uniform(2e-4, 2e-3, n), rng.uniform(5e-6, 1e-4, n))
    rows["LAMBDA_EFF"] = np.where(qso & boss, 4000.0, 5400.0)
    rows["RCHI2"] = rng.normal(1.05, 0.1, n)
    rows["DOF"] = rng.integers(3500, 4600, n)
    rows["RCHI2DIFF"] = rng.uniform(0.02, 2.0, n)
    _put_str(rows, "TFILE", [_TFILES[c] for c in cls])
    rows["TCOLUMN"] = np.where(np.arange(10) < 4, np.arange(10), -1)
    rows["NPOLY"] = np.where(star, 3, 0)
    rows["THETA"] = rng.normal(0, 1, (n, 10)) * (np.arange(10) < 4)
    rows["VDISP"] = np.where(gal, rng.uniform(50, 350, n), 0.0)
    rows["VDISP_ERR"] = np.where(gal, rng.uniform(5, 40, n), -1.0)
    rows["VDISPZ"] = np.where(gal, z, 0.0)
    rows["VDISPZ_ERR"] = np.where(gal, rows["Z_ERR"], 0.0)
    rows["VDISPCHI2"] = np.where(gal, rng.uniform(2000, 5000, n), 0.0)
    rows["VDISPNPIX"] = np.where(gal, rng.integers(2000, 4000, n), 0)
    rows["VDISPDOF"] = np.where(gal, rows["VDISPNPIX"] - 5, 0)
    rows["WAVEMIN"] = 3600.0 if boss else 3800.0
    rows["WAVEMAX"] = 10400.0 if boss else 9200.0
    rows["WCOVERAGE"] = 0.46 if boss else 0.38
    rows["ZWARNING"] = 0
    sn = rng.lognormal(1.5, 0.6, n)
    rows["SN_MEDIAN_ALL"] = sn
    rows["SN_MEDIAN"] = sn[:, None] * np.array([0.3, 0.9, 1.1, 1.2, 0.8])
    rows["CHI68P"] = rng.normal(1.0, 0.08, n)
    frac = np.sort(rng.uniform(0, 0.3, (n, 10)), axis=1)[:, ::-1]
    rows["FRACNSIGMA"] = frac
    rows["FRACNSIGHI"] = frac / 2
    rows["FRACNSIGLO"] = frac / 2

    rmag = np.where(star, rng.uniform(15.0, 20.5, n), np.where(qso, rng.uniform(17.5, 21.8, n),
                                                               rng.uniform(15.0, 21.5 if boss else 17.8, n)))
    flux = 10 ** ((POGSON_ZP_NMGY - _true_mags(rng, cls, rmag)) / 2.5)
    rows["SPECTROFLUX"] = flux * rng.normal(1.0, 0.05, (n, 5))
    rows["SPECTROFLUX_IVAR"] = 1.0 / (0.05 * flux + 0.3) ** 2
    rows["SPECTROSYNFLUX"] = flux
    rows["SPECTROSYNFLUX_IVAR"] = rows["SPECTROFLUX_IVAR"]
    rows["SPECTROSKYFLUX"] = np.array([1.0, 1.4, 3.0, 4.6, 12.7]) * rng.uniform(0.8, 1.4, (n, 1))
    rows["CALIBFLUX"] = flux
    rows["CALIBFLUX_IVAR"] = 1.0 / (0.02 * flux + 0.1) ** 2
    for key in ("SPEC1_G", "SPEC1_R", "SPEC1_I", "SPEC2_G", "SPEC2_R", "SPEC2_I"):
        rows[key] = rng.uniform(10, 30)
    _put_str(rows, "ELODIE_FILENAME", "HD123456.fits")
    _put_str(rows, "ELODIE_OBJECT", "HD 123456")
    _put_str(rows, "ELODIE_SPTYPE", np.where(star, "G2V", "K0III"))
    rows["ELODIE_BV"], rows["ELODIE_TEFF"] = 0.65, 5800.0
    rows["ELODIE_LOGG"], rows["ELODIE_FEH"] = 4.4, -0.2
    rows["ELODIE_Z"] = np.where(star, z, 0.0)
    rows["ELODIE_Z_ERR"] = 1e-5
    rows["ELODIE_RCHI2"] = rng.uniform(1, 5, n)
    rows["ELODIE_DOF"] = rows["DOF"]
    rows["Z_NOQSO"] = np.where(boss & ~qso, z, 0.0)
    rows["Z_ERR_NOQSO"] = np.where(boss & ~qso, rows["Z_ERR"], 0.0)
    _put_str(rows, "CLASS_NOQSO", np.where(boss, np.where(qso, "GALAXY", cls), ""))
    rows["RCHI2DIFF_NOQSO"] = np.where(boss, rows["RCHI2DIFF"], 0.0)

    targettype = np.where(star & (rng.random(n) < 0.15), "STANDARD", "SCIENCE")
    _put_str(rows, "TARGETTYPE", targettype)
    src = np.where(gal, "LRG" if boss else "GALAXY", np.where(qso, "QSO", "STAR"))
    src = np.where(targettype == "STANDARD", "SPECTROPHOTO_STD", src)
    _put_str(rows, "SOURCETYPE", src)
    if survey == "sdss":
        rows["LEGACY_TARGET1"] = np.where(gal, 64, np.where(qso, 1, 0x100000))
        rows["PRIMTARGET"] = rows["LEGACY_TARGET1"]
    elif survey.startswith("segue"):
        rows[f"{survey.upper()}_TARGET1"] = 1 << rng.integers(0, 20, n)
    elif survey == "boss":
        rows["BOSS_TARGET1"] = np.where(gal, 2, np.where(qso, 1 << 10, 1 << 20))
    else:
        rows["EBOSS_TARGET1"] = np.where(gal, 1 << 1, np.where(qso, 1 << 10, 1 << 30))

    # photometric identity of each target (a unique (run, camcol, field) per plate slot, id = 1..n)
    run = _RUNS[k % len(_RUNS)]
    camcol = 1 + (k // len(_RUNS)) % 6
    field_ = 11 + k // (6 * len(_RUNS))
    ids = np.arange(1, n + 1)
    rows["OBJID"] = np.stack([np.full(n, run), np.full(n, 301), np.full(n, camcol), np.full(n, field_), ids], axis=1)
    objid = compose_objid(DR8_SKYVERSION, 301, run, camcol, field_, ids)
    objstr = _int_strings(objid)
    _put_str(rows, "BESTOBJID", objstr)
    _put_str(rows, "FLUXOBJID", objstr)
    _put_str(rows, "TARGETOBJID", objstr, justify="right")
    thing = (k * 100003 + ids * 7 + 1) % 2_000_000_000
    rows["THING_ID"] = thing
    rows["THING_ID_TARGETING"] = thing
    rows["NSPECOBS"] = 1

    specid = [compose_specobjid(info["plate"], f, info["mjd"], info["run2d"]) for f in fibers]
    _put_str(rows, "SPECOBJID", _int_strings(specid), justify="right")
    plateid = compose_specobjid(info["plate"], 0, info["mjd"], info["run2d"])
    _put_str(rows, "PLATEID", str(plateid))
    return rows


def _specobj_truth(path, rows: np.ndarray) -> SpecObjTruth:
    def strip(name):
        return np.char.decode(np.char.strip(rows[name]), "ascii")

    best = np.char.strip(rows["BESTOBJID"])
    bestobjid = np.array([int(b) if b else 0 for b in best], dtype=np.int64)
    return SpecObjTruth(
        path=Path(path), n=len(rows),
        specobjid=[int(s) for s in np.char.strip(rows["SPECOBJID"])],
        specobjid_str=rows["SPECOBJID"].copy(),
        bestobjid=bestobjid, cls=strip("CLASS"), subclass=strip("SUBCLASS"),
        z=rows["Z"].astype(np.float32), z_err=rows["Z_ERR"].astype(np.float32),
        zwarning=rows["ZWARNING"].astype(np.int32), specprimary=rows["SPECPRIMARY"].astype(np.uint8),
        plate=rows["PLATE"].astype(np.int32), mjd=rows["MJD"].astype(np.int32),
        fiberid=rows["FIBERID"].astype(np.int32), run2d=strip("RUN2D"), survey=strip("SURVEY"),
        plug_ra=rows["PLUG_RA"].astype(np.float64), plug_dec=rows["PLUG_DEC"].astype(np.float64),
    )


#: ZWARNING patterns used for the named defective rows (one each, cycled)
ZWARNING_EDGE_PATTERNS = (
    ZW_SMALL_DELTA_CHI2, ZW_MANY_OUTLIERS, ZW_SMALL_DELTA_CHI2 | ZW_MANY_OUTLIERS, ZW_Z_FITLIMIT,
    ZW_UNPLUGGED, ZW_SKY, ZW_NODATA, ZW_LITTLE_COVERAGE, ZW_NEGATIVE_MODEL, ZW_BAD_TARGET,
    ZW_NEGATIVE_EMISSION,
)


def _set_zwarning(rows, i, bits):
    rows["ZWARNING"][i] = bits
    if bits & ZW_Z_FITLIMIT:
        rows["Z_ERR"][i] = -1.0
    if bits & (ZW_UNPLUGGED | ZW_NODATA):
        rows["SN_MEDIAN_ALL"][i] = 0.0
        rows["SN_MEDIAN"][i] = 0.0
        rows["Z"][i] = 0.0
        rows["Z_ERR"][i] = 0.0
    if bits & ZW_SKY:
        _put_str(rows[i:i + 1], "TARGETTYPE", "SKY")
        _put_str(rows[i:i + 1], "SOURCETYPE", "SKY")
        for name in ("BESTOBJID", "FLUXOBJID"):
            _put_str(rows[i:i + 1], name, "0")
        _put_str(rows[i:i + 1], "TARGETOBJID", "0", justify="right")
        rows["OBJID"][i] = 0
        rows["THING_ID"][i] = -1
        rows["THING_ID_TARGETING"][i] = -1
    if bits & ZW_NEGATIVE_EMISSION:
        _put_str(rows[i:i + 1], "CLASS", "QSO")
    if bits & ZW_NEGATIVE_MODEL and rows["CLASS"][i].strip() == b"GALAXY":
        _put_str(rows[i:i + 1], "CLASS", "STAR")


def _make_duplicate(rows, i, j, rng):
    """Row i becomes a non-primary repeat spectrum of row j's object."""
    rows["SPECPRIMARY"][i] = 0
    for name in ("SPECLEGACY", "SPECSEGUE", "SPECSEGUE1", "SPECSEGUE2", "SPECBOSS", "SPECSDSS"):
        rows[name][i] = 0
    for name in ("BESTOBJID", "FLUXOBJID", "TARGETOBJID", "OBJID", "THING_ID", "THING_ID_TARGETING",
                 "CLASS", "SUBCLASS"):
        rows[name][i] = rows[name][j]
    rows["PLUG_RA"][i] = rows["PLUG_RA"][j] + rng.normal(0, 1e-5)
    rows["PLUG_DEC"][i] = rows["PLUG_DEC"][j] + rng.normal(0, 1e-5)
    rows["Z"][i] = rows["Z"][j] + rng.normal(0, 1e-4)
    rows["NSPECOBS"][i] = rows["NSPECOBS"][j] = 2


def _plate_sizes(rng, n: int, lo: int, hi: int) -> list[int]:
    sizes = []
    while sum(sizes) < n:
        sizes.append(int(min(rng.integers(lo, hi + 1), n - sum(sizes))))
    return sizes


def write_specobj(path, n: int = 200, seed: int = 0, *, edge_cases: bool = True) -> SpecObjTruth:
    """Write a specObj-dr17-layout FITS file of ``n`` spectra and return its :class:`SpecObjTruth`.

    Rows come in plate blocks (several surveys: sdss/segue1/segue2/boss/eboss, run2d '26', '103',
    '104', 'v5_13_2'), sorted by plate then fiber as in the real file. With ``edge_cases`` (needs
    n >= 40) some rows are made defective on purpose; ``truth.rows`` names them (see
    :class:`SpecObjTruth`): SPECPRIMARY == 0 duplicates, ZWARNING != 0 rows (SKY, UNPLUGGED,
    Z_FITLIMIT with Z_ERR = -1, MANY_OUTLIERS, ...), and BESTOBJID '0' / right-justified '0' / blank.
    """
    rng = np.random.default_rng([seed, 1])
    sizes = _plate_sizes(rng, n, 5, 40)
    base = int(rng.integers(0, 50_000))
    rows = _concat_rows([_specobj_plate(seed, base + k, s) for k, s in enumerate(sizes)], SPECOBJ_DR17_LAYOUT)
    named: dict[str, np.ndarray] = {}
    zw_bits: dict[int, int] = {}
    dup_of: dict[int, int] = {}
    if edge_cases:
        if n < 40:
            raise ValueError("edge_cases needs n >= 40")
        n_dup = max(2, n // 25)
        n_zw = max(len(ZWARNING_EDGE_PATTERNS), n // 20)
        n_nm = max(1, n // 100)
        order = rng.permutation(n)
        take = iter(order)
        dup = np.array([next(take) for _ in range(n_dup)])
        zw = np.array([next(take) for _ in range(n_zw)])
        both = np.array([next(take)])
        nm0 = np.array([next(take) for _ in range(n_nm)])
        nm0r = np.array([next(take) for _ in range(n_nm)])
        nmb = np.array([next(take) for _ in range(n_nm)])
        protected = set(np.concatenate([dup, zw, both, nm0, nm0r, nmb]).tolist())
        originals = [i for i in order if i not in protected]
        for i, j in zip(dup, originals):
            _make_duplicate(rows, i, j, rng)
            dup_of[int(i)] = int(j)
        for idx, i in enumerate(zw):
            bits = ZWARNING_EDGE_PATTERNS[idx % len(ZWARNING_EDGE_PATTERNS)]
            _set_zwarning(rows, i, bits)
            zw_bits[int(i)] = bits
        _make_duplicate(rows, both[0], originals[len(dup)], rng)
        dup_of[int(both[0])] = int(originals[len(dup)])
        _set_zwarning(rows, both[0], ZW_SMALL_DELTA_CHI2)
        zw_bits[int(both[0])] = ZW_SMALL_DELTA_CHI2
        for i in nm0:
            _put_str(rows[i:i + 1], "BESTOBJID", "0")
        for i in nm0r:
            _put_str(rows[i:i + 1], "BESTOBJID", "0", justify="right")
        for i in nmb:
            _put_str(rows[i:i + 1], "BESTOBJID", "")
        named = {
            "not_primary": np.sort(dup), "zwarning": np.sort(zw),
            "zwarning_sky": np.sort([i for i in zw if zw_bits[int(i)] & ZW_SKY]),
            "not_primary_and_zwarning": both, "no_match_zero": np.sort(nm0),
            "no_match_zero_rjust": np.sort(nm0r), "no_match_blank": np.sort(nmb),
        }
    write_table(path, SPECOBJ_DR17_LAYOUT, rows,
                primary_cards=[("SAS_VERS", "fixture", "Version of sas used to create file"),
                               ("TREE_VER", "dr17", "Version of tree used to create file")])
    truth = _specobj_truth(path, rows)
    clean = truth.keep_with_photo.copy()
    for key in ("not_primary", "zwarning", "not_primary_and_zwarning"):
        clean[named.get(key, [])] = False
    named["negative_z"] = np.flatnonzero((truth.cls == "STAR") & (truth.z < 0) & clean)
    truth.rows = {k: np.asarray(v, dtype=np.int64) for k, v in named.items()}
    truth.zwarning_bits = zw_bits
    truth.duplicate_of = dup_of
    return truth


# ------------------------------------------------------------------------------------------ photoObj / photoPosPlate


def _photo_rows(rng, run, rerun, camcol, field_, ids, ra, dec, cls, rmag, mjd, frac_primary,
                n_nonpositive) -> tuple[np.ndarray, dict]:
    """photoObj-layout rows for objects with the given identities, positions and classes."""
    n = len(ids)
    rows = _blank_rows(PHOTOOBJ_LAYOUT, n)
    objid = compose_objid(DR8_SKYVERSION, rerun, run, camcol, field_, ids)
    fieldid = compose_objid(DR8_SKYVERSION, rerun, run, camcol, field_, np.zeros(n, dtype=np.int64))
    _put_str(rows, "OBJID", _int_strings(objid))
    _put_str(rows, "FIELDID", _int_strings(fieldid))
    _put_str(rows, "PARENTID", "0")
    rows["SKYVERSION"] = DR8_SKYVERSION
    rows["RUN"], rows["CAMCOL"], rows["FIELD"], rows["ID"] = run, camcol, field_, ids
    _put_str(rows, "RERUN", _int_strings(np.broadcast_to(rerun, (n,))))
    rows["PARENT"] = -1
    point = cls != "GALAXY"
    otype = np.where(point, OBJC_TYPE_STAR, OBJC_TYPE_GALAXY)
    rows["OBJC_TYPE"] = otype
    rows["TYPE"] = otype[:, None]
    rows["OBJC_PROB_PSF"] = point.astype(np.float32)
    rows["PROB_PSF"] = point[:, None].astype(np.float32)
    rows["CLEAN"] = (rng.random(n) < 0.85).astype(np.uint8)
    flags, objc_flags = _photo_flags(rng, n)
    rows["FLAGS"], rows["OBJC_FLAGS"] = flags, objc_flags
    rows["OBJC_FLAGS2"] = rng.choice([16, 8208, 8192, 0], n)
    rows["FLAGS2"] = rng.choice([0, 64, 2097152], (n, 5))
    rowc = rng.uniform(60, 1430, n)
    colc = rng.uniform(20, 2030, n)
    rows["OBJC_ROWC"], rows["OBJC_COLC"] = rowc, colc
    rows["OBJC_ROWCERR"] = rows["OBJC_COLCERR"] = 0.05
    rows["ROWC"] = rowc[:, None] + np.array([5.0, 10.0, 0.0, 2.5, 7.5])
    rows["COLC"] = colc[:, None] + np.array([4.0, 5.5, 0.0, 2.0, 4.5])
    rows["ROWCERR"] = rows["COLCERR"] = 0.05
    moving = rng.random(n) < 0.9
    for name, scale in (("ROWVDEG", 0.01), ("ROWVDEGERR", 0.006), ("COLVDEG", 0.01), ("COLVDEGERR", 0.007)):
        rows[name] = np.where(moving, rng.normal(0, scale, n), -9999.0)
    size = np.where(point, 0.0, rng.uniform(0.5, 6.0, n))[:, None]
    rows["PETROTHETA"] = 1.2 + 2 * size
    rows["PETROTH50"] = 0.7 + size
    rows["PETROTH90"] = 1.8 + 2.5 * size
    rows["THETA_DEV"] = rows["THETA_EXP"] = 0.1 + size
    rows["AB_DEV"] = rows["AB_EXP"] = np.where(point[:, None], 0.95, rng.uniform(0.2, 1.0, (n, 1)))
    rows["FRACDEV"] = np.where(point[:, None], 0.0, rng.uniform(0, 1, (n, 1)))
    rows["M_RR_CC_PSF"] = np.array([3.0, 2.9, 2.4, 2.1, 2.2])
    rows["M_RR_CC"] = rows["M_RR_CC_PSF"] + 4 * size
    rows["NPROF"] = np.where(point, 6, 9)[:, None]
    rows["STAR_LNL"] = np.where(point[:, None], -5.0, -500.0)
    rows["EXP_LNL"] = rows["DEV_LNL"] = np.where(point[:, None], -50.0, -5.0)
    rows["PSP_STATUS"] = rng.choice([0, 1, 32, 64, 96], (n, 5))
    rows["PIXSCALE"] = 0.396
    rows["RA"], rows["DEC"] = ra, dec
    rows["CX"], rows["CY"], rows["CZ"] = radec_to_cxyz(ra, dec)
    rows["RAERR"] = rows["DECERR"] = 0.03
    rows["PSF_FWHM"] = np.array([1.16, 1.13, 1.02, 0.95, 0.98]) * rng.uniform(0.9, 1.2, (n, 1))
    rows["MJD"] = mjd
    rows["AIRMASS"] = rng.uniform(1.0, 1.4, (n, 1))
    rows["EXTINCTION"] = _extinction(rng, n)
    rows["SKYFLUX"] = np.array([1.0, 1.34, 3.03, 4.67, 12.8]) * rng.uniform(0.9, 1.3, (n, 1))
    rows["SKYFLUX_IVAR"] = 100.0
    fluxes = _photo_fluxes(rng, cls, rmag)
    zero, neg = _force_nonpositive(rng, fluxes, n, n_nonpositive)
    for name, arr in fluxes.items():
        rows[name] = arr
    _mag_columns(rows, fluxes)
    radii = np.array([0.223, 0.670, 1.024, 1.745, 2.972, 4.584, 7.359, 11.306])
    enc = 1 - np.exp(-(radii / 1.2) ** 2)   # enclosed PSF flux fraction
    rows["APERFLUX"] = (rows["PSFFLUX"][:, :, None] * enc).reshape(n, 40)
    rows["APERFLUX_IVAR"] = (rows["PSFFLUX_IVAR"][:, :, None] / np.maximum(enc, 0.05)).reshape(n, 40)
    rows["PROFMEAN_NMGY"] = np.repeat(rows["PSFFLUX"] / 10.0, 15, axis=1)
    rows["PROFERR_NMGY"] = 0.01
    rows["CLOUDCAM"] = 1
    rows["CALIB_STATUS"] = 1
    rows["NMGYPERCOUNT"] = _NMGYPERCOUNT
    rows["NMGYPERCOUNT_IVAR"] = 1e8
    rows["TAI"] = (np.asarray(mjd, dtype=np.float64) * 86400.0 + 3000.0)[..., None] + np.array(
        [-144.0, 216.0, 0.0, -72.0, 288.0])
    status = _resolve_status(rng, n, frac_primary)
    rows["RESOLVE_STATUS"] = status
    rows["MODE"] = _mode_from_status(status)
    rows["THING_ID"] = np.where(rng.random(n) < 0.02, -1, rng.integers(1, 2**31 - 1, n))
    rows["IFIELD"] = 700000 + np.asarray(field_)
    rows["BALKAN_ID"] = rng.integers(2_000_000, 2_400_000, n)
    rows["NOBSERVE"] = rng.integers(1, 5, n)
    rows["NDETECT"] = np.minimum(rows["NOBSERVE"], rng.integers(0, 5, n))
    rows["SCORE"] = rng.uniform(0.5, 1.0, n)
    return rows, {"zero_flux": zero, "negative_flux": neg}


def _photo_truth(cls_, path, rows, classes, named, **extra):
    objid = np.array([int(s) if s else 0 for s in np.char.strip(rows["OBJID"])], dtype=np.int64)
    rerun = np.array([int(s) if s else 0 for s in np.char.strip(rows["RERUN"])], dtype=np.int64)
    return cls_(
        path=Path(path), n=len(rows), objid=objid, run=rows["RUN"].astype(np.int64), rerun=rerun,
        camcol=rows["CAMCOL"].astype(np.int64), field=rows["FIELD"].astype(np.int64),
        id=rows["ID"].astype(np.int64), ra=rows["RA"].astype(np.float64), dec=rows["DEC"].astype(np.float64),
        objc_type=rows["OBJC_TYPE"].astype(np.int32), resolve_status=rows["RESOLVE_STATUS"].astype(np.int32),
        true_class=np.asarray(classes), psfflux=rows["PSFFLUX"].astype(np.float32),
        modelflux=rows["MODELFLUX"].astype(np.float32), fiberflux=rows["FIBERFLUX"].astype(np.float32),
        cmodelflux=rows["CMODELFLUX"].astype(np.float32) if "CMODELFLUX" in rows.dtype.names else None,
        extinction=rows["EXTINCTION"].astype(np.float32),
        rows={k: np.asarray(v, dtype=np.int64) for k, v in named.items()}, **extra)


def write_photoobj(path, n: int = 200, seed: int = 0, *, run: int = 3704, rerun: int = 301, camcol: int = 3,
                   field: int = 91, frac_primary: float = 0.6, n_nonpositive: int | None = None) -> PhotoTruth:
    """Write a photoObj-RUN6-CAMCOL-FIELD4 layout file (one field, IDs 1..n) and return its :class:`PhotoTruth`.

    OBJID/PARENTID/FIELDID are 19-character strings, as in the real files. Mixed stars, galaxies and
    QSOs (r = 14-23); RESOLVE_STATUS has ``frac_primary`` SURVEY_PRIMARY rows and secondaries/best/
    edge rows otherwise; MODE follows it. ``truth.rows``: ``zero_flux``, ``negative_flux``,
    ``secondary`` (MODE 2), ``primary``.
    """
    rng = np.random.default_rng([seed, 2])
    cls = rng.choice(np.array(_CLASSES), n, p=[0.5, 0.1, 0.4])
    rmag = rng.uniform(14.0, 23.0, n)
    ra0, dec0 = rng.uniform(0, 360), rng.uniform(-10, 70)
    ra = np.mod(ra0 + rng.uniform(0, 0.15, n), 360.0)
    dec = dec0 + rng.uniform(0, 0.22, n)
    k = max(2, n // 20) if n_nonpositive is None else n_nonpositive
    rows, named = _photo_rows(rng, run, rerun, camcol, field, np.arange(1, n + 1), ra, dec, cls, rmag,
                              51600 + run % 5000, frac_primary, k)
    write_table(path, PHOTOOBJ_LAYOUT, rows, primary_cards=[
        ("RUN", run, "Imaging run number"), ("RERUN", rerun, "Processing rerun number"),
        ("CAMCOL", camcol, "Column in the imaging camera"), ("FIELD", field, "Field sequence number"),
        ("FILTERS", "u g r i z", "Filter order in arrays")])
    named["primary"] = np.flatnonzero(rows["MODE"] == 1)
    named["secondary"] = np.flatnonzero(rows["MODE"] == 2)
    return _photo_truth(PhotoTruth, path, rows, cls, named)


def photopos_for(path, spec: SpecObjTruth, seed: int = 0, *, n_mismatch: int | None = None) -> PhotoPosTruth:
    """Write a photoPosPlate-layout file row-matched to a specObj fixture (same row count and order).

    Row i is the photometry of spectrum i's BESTOBJID object (RUN/RERUN/CAMCOL/FIELD/ID decompose
    from it; RA/DEC within 0.3" of PLUG_RA/PLUG_DEC; colours of the spectroscopic class), except:

    * ``rows['mismatch']`` (``n_mismatch`` rows, default max(2, n//30)): a neighbouring object of the
      same field (ID + 1000), 2-5" away -- OBJID deliberately != BESTOBJID;
    * ``rows['no_match']``: spectra whose BESTOBJID is '0'/blank get an all-zero row with OBJID '0'.
    """
    rng = np.random.default_rng([seed, 3])
    n = spec.n
    matched = np.flatnonzero(spec.bestobjid != 0)
    k = max(2, n // 30) if n_mismatch is None else n_mismatch
    mismatch = np.sort(rng.choice(matched, min(k, len(matched)), replace=False))
    objid = spec.bestobjid.copy()
    parts = decompose_objid(objid)
    parts["id"] = parts["id"].copy()
    parts["id"][mismatch] += 1000
    cls = np.where(spec.cls == "", "GALAXY", spec.cls)
    rmag = rng.uniform(15.0, 21.5, n)
    off = rng.uniform(0.02, 0.3, n) / 3600.0
    off[mismatch] = rng.uniform(2.0, 5.0, len(mismatch)) / 3600.0
    th = rng.uniform(0, 2 * np.pi, n)
    dec = np.clip(spec.plug_dec + off * np.sin(th), -90, 90)
    ra = np.mod(spec.plug_ra + off * np.cos(th) / np.cos(np.radians(dec)), 360.0)
    safe = lambda a: np.where(objid != 0, a, 1)  # placeholder ids for empty rows (overwritten below)
    rows, named = _photo_rows(rng, safe(parts["run"]), 301, safe(parts["camcol"]), safe(parts["field"]),
                              safe(parts["id"]), ra, dec, cls, rmag, spec.mjd, 0.7, max(2, n // 30))
    empty = np.flatnonzero(objid == 0)
    if len(empty):
        blank = _blank_rows(PHOTOOBJ_LAYOUT, len(empty))
        for name in ("OBJID", "PARENTID", "FIELDID"):
            _put_str(blank, name, "0")
        rows[empty] = blank
        cls = cls.copy()
        cls[empty] = ""
    named = {key: np.setdiff1d(v, empty) for key, v in named.items()}
    named["mismatch"], named["no_match"] = mismatch, empty
    write_table(path, PHOTOOBJ_LAYOUT, rows)
    truth = _photo_truth(PhotoPosTruth, path, rows, cls, named, spec_bestobjid=spec.bestobjid.copy())
    return truth


# ------------------------------------------------------------------------------------------ sweeps (calibObj)


def _sweep_rows(rng, kind: str, start: int, n: int, run: int, rerun: str, camcol: int, field0: int,
                objs_per_field: int, frac_primary: float, frac_nonpositive: float):
    """Rows [start, start + n) of a sweep, their named rows, and the class used for their colours
    (star sweeps: 8 % QSO-coloured point sources, still OBJC_TYPE 6)."""
    layout = SWEEP_LAYOUTS[kind]
    rows = _blank_rows(layout, n)
    idx = start + np.arange(n)
    field_ = field0 + idx // objs_per_field
    ids = 1 + idx % objs_per_field
    if np.any(field_ >= 4096):
        raise ValueError("too many rows for one run/camcol (field >= 4096): raise objs_per_field")
    rows["RUN"], rows["CAMCOL"], rows["FIELD"], rows["ID"] = run, camcol, field_, ids
    _put_str(rows, "RERUN", rerun)
    is_star = kind == "star"
    cls = np.full(n, "STAR" if is_star else "GALAXY")
    if is_star:
        cls[rng.random(n) < 0.08] = "QSO"
    rows["OBJC_TYPE"] = OBJC_TYPE_STAR if is_star else OBJC_TYPE_GALAXY
    flags, objc_flags = _photo_flags(rng, n)
    rows["FLAGS"], rows["OBJC_FLAGS"] = flags, objc_flags
    rows["OBJC_FLAGS2"] = rng.choice([16, 8208, 8192, 0], n)
    rows["FLAGS2"] = rng.choice([0, 64, 2097152, 536870912], (n, 5))
    rows["PSP_STATUS"] = rng.choice([0, 1, 32, 64, 96], (n, 5), p=[0.44, 0.04, 0.17, 0.23, 0.12])
    rowc = rng.uniform(67, 1430, n)
    colc = rng.uniform(21, 2030, n)
    rows["ROWC"] = rowc[:, None] + np.array([5.0, 10.0, 0.0, 2.5, 7.5])
    rows["COLC"] = colc[:, None] + np.array([4.0, 5.5, 0.0, 2.0, 4.5])
    rows["M_RR_CC_PSF"] = np.array([3.07, 2.95, 2.39, 2.09, 2.20]) * rng.uniform(0.9, 1.1, (n, 1))
    rows["M_RR_CC"] = rows["M_RR_CC_PSF"] * (1.0 if is_star else rng.uniform(1.5, 6.0, (n, 1)))
    rows["M_RR_CC"][rng.random((n, 5)) < 0.07] = -9999.0
    dec0, ra0 = 36.4 + 0.9 * rng.random(), 196.8
    rows["RA"] = ra0 + 5.8 * (idx % 997) / 997 + rng.normal(0, 0.01, n)
    rows["DEC"] = dec0 + rng.uniform(0, 0.22, n)
    rows["PSF_FWHM"] = np.array([1.155, 1.133, 1.020, 0.953, 0.978]) * rng.uniform(0.93, 1.1, (n, 1))
    rows["EXTINCTION"] = _extinction(rng, n)
    rmag = rng.uniform(16.0, 23.8, n) if is_star else rng.uniform(15.0, 22.5, n)
    fluxes = _photo_fluxes(rng, cls, rmag)
    kneg = round(frac_nonpositive * n)
    zero, neg = _force_nonpositive(rng, fluxes, n, kneg)
    for name in layout_dtype(layout).names:
        if name in fluxes:
            rows[name] = fluxes[name]
    rows["CALIB_STATUS"] = 1
    rows["NMGYPERCOUNT"] = _NMGYPERCOUNT * rng.uniform(0.98, 1.02, (n, 1))
    status = _resolve_status(rng, n, frac_primary)
    rows["RESOLVE_STATUS"] = status
    rows["THING_ID"] = np.where(rng.random(n) < 0.02, -1, 411_000_000 + idx)
    rows["IFIELD"] = 702_316 + field_
    rows["BALKAN_ID"] = rng.integers(2_155_000, 2_361_000, n)
    rows["NDETECT"] = rng.choice([0, 1, 2, 3, 4], n, p=[0.004, 0.148, 0.165, 0.679, 0.004])
    if is_star:
        rows["OBJC_ROWC"] = rowc
        moving = rng.random(n) >= 0.066
        for name, scale in (("ROWVDEG", 0.01), ("ROWVDEGERR", 0.006), ("COLVDEG", 0.01), ("COLVDEGERR", 0.007)):
            rows[name] = np.where(moving, rng.normal(0, scale, n), -9999.0)
        rows["SKYFLUX"] = np.array([0.98, 1.34, 3.03, 4.67, 12.78]) * rng.uniform(0.95, 1.25, (n, 1))
        for name in ("TMASS_PH_QUAL", "TMASS_CC_FLG", "TMASS_HEMIS"):
            _put_str(rows, name, "")
        rows["APERFLUX6"] = rows["PSFFLUX"] * 1.03
        rows["ZHEDFLAG"] = rng.choice([0, 1, 2, 3, 4, 6], n, p=[0.893, 0.057, 0.044, 0.0044, 0.0013, 0.0003])
    else:
        size = rng.uniform(0.5, 6.0, (n, 1))
        rows["PETROTH50"], rows["PETROTH90"] = 0.7 + size, 1.8 + 2.5 * size
        rows["THETA_DEV"] = rows["THETA_EXP"] = 0.1 + size
        rows["FRACDEV"] = rng.uniform(0, 1, (n, 1))
        rows["STAR_LNL"] = -500.0
        rows["EXP_LNL"] = rows["DEV_LNL"] = -5.0
        radii = np.array([0.223, 0.670, 1.024, 1.745, 2.972, 4.584, 7.359, 11.306])
        enc = 1 - np.exp(-(radii / (1.2 + size)) ** 2)
        rows["APERFLUX"] = (rows["MODELFLUX"][:, :, None] * enc[:, None, :]).reshape(n, 40)
    return rows, {"zero_flux": start + zero, "negative_flux": start + neg}, cls


def write_sweep(path, n: int = 500, seed: int = 0, kind: str = "star", *, run: int = 4510, rerun: str = "301",
                camcol: int = 4, field0: int = 11, objs_per_field: int = 200, frac_primary: float = 0.03,
                frac_nonpositive: float = 0.02, chunk_rows: int = 100_000) -> PhotoTruth:
    """Write a calibObj (datasweep) file, ``kind`` "star" or "gal", and return its :class:`PhotoTruth`.

    The star layout is the real calibObj-004510-4-star.fits.gz's, column for column; the gal layout is
    the DR17 data model's. There is no OBJID column: ``truth.objid`` is
    ``compose_objid(2, int(RERUN), RUN, CAMCOL, FIELD, ID)`` (DR8+ skyVersion 2). RESOLVE_STATUS has
    ``frac_primary`` SURVEY_PRIMARY rows (the real star file: 2.8 %); ``frac_nonpositive`` of the rows
    have a u flux of exactly 0 (ivar 0) and as many have negative u and g fluxes. Rows are generated
    and written ``chunk_rows`` at a time, so big sweeps cost one chunk of memory (the truth arrays
    still hold ~120 bytes a row). ``n = 0`` writes a valid empty table.
    """
    if kind not in SWEEP_LAYOUTS:
        raise ValueError("kind must be 'star' or 'gal'")
    layout = SWEEP_LAYOUTS[kind]
    parts: dict[str, list] = {k: [] for k in ("run", "camcol", "field", "id", "ra", "dec", "objc_type",
                                              "resolve_status", "psf", "model", "fiber", "ext", "cls")}
    named: dict[str, list] = {"zero_flux": [], "negative_flux": []}

    def chunks() -> Iterator[np.ndarray]:
        for c, start in enumerate(range(0, n, chunk_rows)):
            m = min(chunk_rows, n - start)
            rng = np.random.default_rng([seed, 4, c])
            rows, nm, cls = _sweep_rows(rng, kind, start, m, run, rerun, camcol, field0, objs_per_field,
                                        frac_primary, frac_nonpositive)
            for key, col in (("run", "RUN"), ("camcol", "CAMCOL"), ("field", "FIELD"), ("id", "ID"),
                             ("ra", "RA"), ("dec", "DEC"), ("objc_type", "OBJC_TYPE"),
                             ("resolve_status", "RESOLVE_STATUS"), ("psf", "PSFFLUX"), ("model", "MODELFLUX"),
                             ("fiber", "FIBERFLUX"), ("ext", "EXTINCTION")):
                parts[key].append(rows[col].copy())
            parts["cls"].append(cls)
            for key, v in nm.items():
                named[key].append(v)
            yield rows

    write_table_stream(path, layout, n, chunks(), table_cards=[
        ("VERSION", "v1_12_0", "photoop version"), ("CALIB", "fixture", "PHOTO_CALIB dir"),
        ("SWEEP", "fixture", "PHOTO_SWEEP dir")])

    def cat(key, dtype, shape=()):
        return np.concatenate(parts[key]).astype(dtype) if parts[key] else np.zeros((0, *shape), dtype)

    run_a, camcol_a = cat("run", np.int64), cat("camcol", np.int64)
    field_a, id_a = cat("field", np.int64), cat("id", np.int64)
    rerun_i = int(rerun)
    objid = compose_objid(DR8_SKYVERSION, np.full(n, rerun_i), run_a, camcol_a, field_a, id_a) if n else \
        np.zeros(0, np.int64)
    return PhotoTruth(
        path=Path(path), n=n, objid=objid, run=run_a, rerun=np.full(n, rerun_i, dtype=np.int64), camcol=camcol_a,
        field=field_a, id=id_a, ra=cat("ra", np.float64), dec=cat("dec", np.float64),
        objc_type=cat("objc_type", np.int32), resolve_status=cat("resolve_status", np.int32),
        true_class=cat("cls", "U6"), psfflux=cat("psf", np.float32, (5,)), modelflux=cat("model", np.float32, (5,)),
        fiberflux=cat("fiber", np.float32, (5,)), cmodelflux=None, extinction=cat("ext", np.float32, (5,)),
        rows={k: (np.concatenate(v).astype(np.int64) if v else np.zeros(0, np.int64)) for k, v in named.items()})


# ------------------------------------------------------------------------------------------ big streamed specObj

BIG_ROWS_PER_PLATE = 500
BIG_DEFECT_RATE = 0.05


def _big_plate(seed: int, k: int, nrows: int) -> np.ndarray:
    """Rows of plate k of a big specObj file: clean rows, then ~5 % SPECPRIMARY 0 and ~5 % ZWARNING != 0."""
    rows = _specobj_plate(seed, k, nrows)
    rng = np.random.default_rng([seed, k, 12])
    notp = rng.random(nrows) < BIG_DEFECT_RATE
    rows["SPECPRIMARY"][notp] = 0
    zw = rng.random(nrows) < BIG_DEFECT_RATE
    bits = np.array(ZWARNING_EDGE_PATTERNS)[rng.integers(0, len(ZWARNING_EDGE_PATTERNS), nrows)]
    for i in np.flatnonzero(zw):
        _set_zwarning(rows, i, int(bits[i]))
    return rows


def big_specobj_rows(seed: int, nrows: int, start: int, stop: int) -> np.ndarray:
    """Regenerate rows [start, stop) of ``write_big_specobj(..., seed)`` holding ``nrows`` rows (for checks)."""
    if not 0 <= start <= stop <= nrows:
        raise ValueError("row range outside the file")
    out = []
    for k in range(start // BIG_ROWS_PER_PLATE, (stop - 1) // BIG_ROWS_PER_PLATE + 1 if stop > start else 0):
        lo = k * BIG_ROWS_PER_PLATE
        plate_rows = _big_plate(seed, k, min(BIG_ROWS_PER_PLATE, nrows - lo))
        out.append(plate_rows[max(start - lo, 0):stop - lo])
    return _concat_rows(out, SPECOBJ_DR17_LAYOUT)


def write_big_specobj(path, target_bytes: int, seed: int = 0, *, chunk_rows: int = 20_000,
                      progress: Callable[[int, int], None] | None = None) -> BigSpecObjInfo:
    """Stream a specObj-dr17-layout file whose data unit is about ``target_bytes`` (e.g. 1 GB) to ``path``.

    NAXIS2 = target_bytes // row_bytes is fixed up front; the writer then generates and appends
    whole plates of 500 rows, about ``chunk_rows`` rows at a time, and pads the data unit to 2880
    bytes -- the whole table is never in memory. Row i is a pure function of (seed, i): use
    :func:`big_specobj_rows` to regenerate any slice for comparison. Returns a :class:`BigSpecObjInfo`
    with counts a converter's output can be checked against (SPECPRIMARY, ZWARNING, classes).
    """
    row_bytes = layout_dtype(SPECOBJ_DR17_LAYOUT).itemsize
    nrows = max(1, int(target_bytes) // row_bytes)
    n_plates = -(-nrows // BIG_ROWS_PER_PLATE)
    plates_per_chunk = max(1, chunk_rows // BIG_ROWS_PER_PLATE)
    stats = {"primary": 0, "zw_ok": 0, "keep": 0, "classes": dict.fromkeys(_CLASSES, 0)}

    def chunks() -> Iterator[np.ndarray]:
        done = 0
        for k0 in range(0, n_plates, plates_per_chunk):
            block = [_big_plate(seed, k, min(BIG_ROWS_PER_PLATE, nrows - k * BIG_ROWS_PER_PLATE))
                     for k in range(k0, min(k0 + plates_per_chunk, n_plates))]
            rows = _concat_rows(block, SPECOBJ_DR17_LAYOUT)
            del block
            prim, ok = rows["SPECPRIMARY"] == 1, rows["ZWARNING"] == 0
            stats["primary"] += int(prim.sum())
            stats["zw_ok"] += int(ok.sum())
            stats["keep"] += int((prim & ok).sum())
            cls, counts = np.unique(np.char.strip(rows["CLASS"]), return_counts=True)
            for c, m in zip(cls, counts):
                stats["classes"][c.decode()] = stats["classes"].get(c.decode(), 0) + int(m)
            done += len(rows)
            if progress:
                progress(done, nrows)
            yield rows

    size = write_table_stream(path, SPECOBJ_DR17_LAYOUT, nrows, chunks(),
                              primary_cards=[("SAS_VERS", "fixture", "Version of sas used to create file"),
                                             ("TREE_VER", "dr17", "Version of tree used to create file")])
    return BigSpecObjInfo(path=Path(path), seed=seed, nrows=nrows, row_bytes=row_bytes, file_bytes=size,
                          rows_per_plate=BIG_ROWS_PER_PLATE, n_primary=stats["primary"],
                          n_zwarning_ok=stats["zw_ok"], n_keep=stats["keep"], class_counts=stats["classes"])
