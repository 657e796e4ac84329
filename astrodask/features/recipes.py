"""Which features each feature set expands to (the choices; the fitted numbers live in ``spec.FeatureSpec``)."""

from __future__ import annotations

from dataclasses import dataclass

from .. import schema
from ..errors import ConfigError

FEATURE_SETS = ("spectroscopic", "photometric", "photometric+morphology")
"""``photometric+morphology`` is the photometric set plus the PSF - model magnitude differences; ``--features
photometric`` becomes it when the training data has PSF magnitudes (see :func:`resolve_feature_set`)."""
MORPHOLOGY = tuple(f"psf_{b}-{b}" for b in schema.BANDS)
"""PSF - model magnitude per band: about 0 for point sources (stars, quasars), positive for extended objects
(SDSS's star/galaxy separator is psfMag - cModelMag > 0.145 in r)."""
COLOURS = ("u-g", "g-r", "r-i", "i-z")
_MORE_COLOURS = ("u-r", "g-i", "r-z")
_FINE_PAIRS = {("u-g", "g-r"), ("g-r", "r-i"), ("r-i", "i-z"), ("r", "u-g"), ("r", "g-r")}


@dataclass(frozen=True)
class FeatureRecipe:
    """Which features a feature set expands to (the choice; the fitted numbers live in FeatureSpec)."""

    base: tuple[str, ...]
    """Base features, each also used linearly: band names, colours ``"a-b"`` and ``"asinh_z"`` (asinh of
    redshift / 1e-3). No feature keys on an exact value: a redshift of exactly 0 (what SDSS writes when the fit
    failed or was not run) is no measurement, and such rows are scored by the photometric companion."""
    splines: dict
    """Base feature -> number of knots (boundaries included) of its cubic B-spline basis."""
    tensors: tuple[tuple[str, str, int], ...] = ()
    """(feature a, feature b, knots): products of every pair of the two coarse spline bases."""
    interactions: tuple[tuple[str, str], ...] = ()
    """Pairs of base features whose standardised product is a feature."""
    knots_by: str = "rows"
    """``rows``: spline knots at quantiles of the training rows; ``class``: at quantiles of the class-balanced
    mixture (each class's distribution weighted equally), so a class that is rare in the training sample still
    gets knots where it lies."""


_PHOTOMETRIC_TENSORS = tuple((a, b, 10 if (a, b) in _FINE_PAIRS else 7)
                             for k, a in enumerate(("r", *COLOURS)) for b in ("r", *COLOURS)[k + 1:])
_COLOUR_TENSORS = tuple((a, b, 6 if (a, b) in _FINE_PAIRS else 5)
                        for k, a in enumerate(COLOURS) for b in COLOURS[k + 1:])

# Chosen on validation splits only (the test splits untouched): SDSS17's for spectroscopic and photometric, the
# shared SpecPhoto sample's for photometric+morphology (docs/model.md, "Features").
RECIPES: dict[str, FeatureRecipe] = {
    "spectroscopic": FeatureRecipe(
        base=(*schema.BANDS, *COLOURS, *_MORE_COLOURS, "asinh_z"),
        splines=dict.fromkeys((*schema.BANDS, *COLOURS, "asinh_z"), 10),
        tensors=tuple(("asinh_z", c, 5) for c in COLOURS),
    ),
    "photometric": FeatureRecipe(
        base=(*schema.BANDS, *COLOURS, *_MORE_COLOURS),
        splines=dict.fromkeys((*schema.BANDS, *COLOURS, *_MORE_COLOURS), 10),
        # colour-colour and colour-magnitude diagrams: finer where the classes' loci cross
        tensors=_PHOTOMETRIC_TENSORS,
    ),
    "photometric+morphology": FeatureRecipe(
        base=(*schema.BANDS, *COLOURS, *_MORE_COLOURS, *MORPHOLOGY),
        splines=dict.fromkeys((*schema.BANDS, *COLOURS, *_MORE_COLOURS, *MORPHOLOGY), 10),
        # colour-colour diagrams and morphology against colour; no r tensors: a labelled sample with PSF
        # magnitudes is bright (SpecPhoto: r < 20.5), so they would learn nothing that holds at faint r
        tensors=(*_COLOUR_TENSORS, ("g-r", "psf_r-r", 5)),
        # its samples are rarely the sky's mix (SpecPhoto: 83 % QSO): knots where every class lies
        knots_by="class",
    ),
}


def raw_columns(feature_set: str) -> tuple[str, ...]:
    """Catalogue columns a feature set reads."""
    check_feature_set(feature_set)
    if feature_set == "spectroscopic":
        return (*schema.BANDS, schema.REDSHIFT)
    return (*schema.BANDS, *schema.PSF_BANDS) if feature_set == "photometric+morphology" else schema.BANDS


def resolve_feature_set(features: str, columns, empty=(), morphology: bool = True) -> str:
    """The feature set to train: ``photometric`` becomes ``photometric+morphology`` when ``morphology`` is on and
    the data has every PSF magnitude column (``columns``) with values (not in ``empty``)."""
    check_feature_set(features)
    if features == "photometric" and morphology and all(c in columns and c not in empty for c in schema.PSF_BANDS):
        return "photometric+morphology"
    return features


def check_feature_set(feature_set: str) -> None:
    if feature_set not in FEATURE_SETS:
        raise ConfigError("features", f"unknown feature set {feature_set!r}", f"use one of {', '.join(FEATURE_SETS)}")
