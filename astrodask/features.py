"""Stage 3: features for a linear model, fitted out of core and stored as data in the model file.

A ``FeatureSpec`` holds everything needed to turn catalogue rows into the model's input, so prediction
reproduces training exactly:

1. *base* features: magnitudes, colours (differences of bands) and, for the spectroscopic set, an
   ``asinh`` transform of the redshift (linear near 0, where stars scatter around z = 0, logarithmic above);
   missing values are imputed with the training median;
2. cubic B-spline bases of the base features, with knots at approximate quantiles computed on the cluster
   in one pass (each partition sends a fixed-size quantile summary, never rows);
3. products of pairs of standardised base features (interactions);
4. standardisation of the expanded vector with means and deviations summed on the workers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.interpolate import BSpline

from . import schema
from .errors import ConfigError

FEATURE_SETS = ("spectroscopic", "photometric")
QUANTILE_LEVELS = np.linspace(0.0, 1.0, 201)
DEGREE = 3
REDSHIFT_SCALE = 1e-3

_COLOURS = ("u-g", "g-r", "r-i", "i-z", "u-r", "g-i", "r-z")


@dataclass(frozen=True)
class FeatureRecipe:
    """Which features a feature set expands to (the choice; the fitted numbers live in FeatureSpec)."""

    base: tuple[str, ...]
    """Base features: band names, colours ``"a-b"``, ``"asinh_z"`` (scaled redshift)."""
    splines: dict
    """Base feature -> number of interior knots of its cubic B-spline basis."""
    interactions: tuple[tuple[str, str], ...]
    """Pairs of base features whose standardised product is a feature."""


RECIPES: dict[str, FeatureRecipe] = {
    "spectroscopic": FeatureRecipe(
        base=(*schema.BANDS, *_COLOURS, "asinh_z"),
        splines={**{c: 8 for c in _COLOURS}, "r": 8, "asinh_z": 16},
        interactions=tuple((a, "asinh_z") for a in ("u-g", "g-r", "r-i", "i-z", "r")),
    ),
    "photometric": FeatureRecipe(
        base=(*schema.BANDS, *_COLOURS),
        splines={**{c: 10 for c in _COLOURS}, "r": 10, "u": 6, "z": 6},
        interactions=tuple((a, b) for k, a in enumerate(_COLOURS[:4]) for b in (*_COLOURS[:4], "r")[k + 1:]),
    ),
}


def raw_columns(feature_set: str) -> tuple[str, ...]:
    """Catalogue columns a feature set reads."""
    check_feature_set(feature_set)
    return (*schema.BANDS, schema.REDSHIFT) if feature_set == "spectroscopic" else schema.BANDS


def check_feature_set(feature_set: str) -> None:
    if feature_set not in FEATURE_SETS:
        raise ConfigError("features", f"unknown feature set {feature_set!r}", f"use one of {', '.join(FEATURE_SETS)}")


def base_matrix(df: pd.DataFrame, names: tuple[str, ...], impute: dict[str, float] | None) -> np.ndarray:
    """Base features as float64 columns; missing inputs imputed when ``impute`` is given (else NaN)."""
    cols = {}
    for c in set(schema.BANDS) | {schema.REDSHIFT}:
        if c in df.columns:
            v = df[c].to_numpy(dtype="float64", na_value=np.nan)
            if impute is not None and c in impute:
                v = np.where(np.isnan(v), impute[c], v)
            cols[c] = v
    out = np.empty((len(df), len(names)), dtype=np.float64)
    for k, name in enumerate(names):
        if name in schema.BANDS:
            out[:, k] = cols[name]
        elif name == "asinh_z":
            out[:, k] = np.arcsinh(cols[schema.REDSHIFT] / REDSHIFT_SCALE)
        else:
            a, b = name.split("-")
            out[:, k] = cols[a] - cols[b]
    return out


def quantile_summary(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column (quantiles at QUANTILE_LEVELS, non-null counts): a fixed-size summary of a partition."""
    q = np.full((len(QUANTILE_LEVELS), x.shape[1]), np.nan)
    n = np.zeros(x.shape[1], dtype=np.int64)
    for k in range(x.shape[1]):
        v = x[:, k][np.isfinite(x[:, k])]
        n[k] = v.size
        if v.size:
            q[:, k] = np.quantile(v, QUANTILE_LEVELS)
    return q, n


def merge_quantiles(summaries: list[tuple[np.ndarray, np.ndarray]], levels: np.ndarray) -> np.ndarray:
    """Approximate global quantiles at ``levels`` from per-partition summaries (count-weighted mixture of CDFs)."""
    n_cols = summaries[0][0].shape[1]
    out = np.full((len(levels), n_cols), np.nan)
    for k in range(n_cols):
        parts = [(q[:, k], n[k]) for q, n in summaries if n[k] > 0]
        if not parts:
            continue
        grid = np.unique(np.concatenate([q for q, _ in parts]))
        total = sum(n for _, n in parts)
        cdf = sum(n * np.interp(grid, q, QUANTILE_LEVELS, left=0.0, right=1.0) for q, n in parts) / total
        cdf = np.maximum.accumulate(cdf)
        out[:, k] = np.interp(levels, cdf, grid)
    return out


@dataclass(frozen=True)
class FeatureSpec:
    """A fitted feature transform: all numbers needed to expand rows, stored in the model file."""

    feature_set: str
    base: tuple[str, ...]
    impute: dict
    """Raw column -> training median used for missing values."""
    base_mean: np.ndarray
    base_std: np.ndarray
    knots: dict = field(default_factory=dict)
    """Base feature -> full knot vector (boundary knots repeated DEGREE+1 times)."""
    interactions: tuple[tuple[str, str], ...] = ()
    mean: np.ndarray | None = None
    """Mean of each expanded feature (None until the scaler is fitted)."""
    scale: np.ndarray | None = None
    """Standard deviation of each expanded feature (1 where constant)."""

    @property
    def names(self) -> list[str]:
        names = list(self.base)
        for b, t in self.knots.items():
            names += [f"bs({b})[{j}]" for j in range(len(t) - DEGREE - 1)]
        names += [f"{a}*{b}" for a, b in self.interactions]
        return names

    @property
    def n_features(self) -> int:
        return len(self.names)

    def expand(self, df: pd.DataFrame, scaled: bool = True) -> np.ndarray:
        """Rows -> model input matrix (float32)."""
        xb = base_matrix(df, self.base, self.impute)
        zb = (xb - self.base_mean) / self.base_std
        blocks = [zb]
        idx = {b: k for k, b in enumerate(self.base)}
        for b, t in self.knots.items():
            x = np.clip(xb[:, idx[b]], t[DEGREE], t[-DEGREE - 1])
            if len(x):  # values are clipped into the knot range, so "extrapolate" only skips a slow check
                blocks.append(BSpline.design_matrix(x, t, DEGREE, extrapolate=True).toarray())
            else:
                blocks.append(np.zeros((0, len(t) - DEGREE - 1)))
        if self.interactions:
            blocks.append(np.column_stack([zb[:, idx[a]] * zb[:, idx[b]] for a, b in self.interactions]))
        x = np.hstack(blocks)
        if scaled and self.mean is not None:
            x = (x - self.mean) / self.scale
        return x.astype(np.float32)

    def to_dict(self) -> dict:
        return {
            "feature_set": self.feature_set,
            "base": list(self.base),
            "impute": {k: float(v) for k, v in self.impute.items()},
            "base_mean": self.base_mean.tolist(),
            "base_std": self.base_std.tolist(),
            # a list, not a mapping: the order of the spline blocks is the order of the model's columns
            "knots": [[k, np.asarray(v).tolist()] for k, v in self.knots.items()],
            "interactions": [list(p) for p in self.interactions],
            "mean": None if self.mean is None else self.mean.tolist(),
            "scale": None if self.scale is None else self.scale.tolist(),
            "degree": DEGREE,
            "redshift_scale": REDSHIFT_SCALE,
            "names": self.names,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureSpec":
        if d.get("degree", DEGREE) != DEGREE or d.get("redshift_scale", REDSHIFT_SCALE) != REDSHIFT_SCALE:
            raise ValueError("feature constants differ from this version")
        spec = cls(
            feature_set=str(d["feature_set"]),
            base=tuple(str(b) for b in d["base"]),
            impute={str(k): float(v) for k, v in d["impute"].items()},
            base_mean=np.asarray(d["base_mean"], dtype=np.float64),
            base_std=np.asarray(d["base_std"], dtype=np.float64),
            knots={str(k): np.asarray(v, dtype=np.float64) for k, v in d["knots"]},
            interactions=tuple((str(a), str(b)) for a, b in d["interactions"]),
            mean=None if d["mean"] is None else np.asarray(d["mean"], dtype=np.float64),
            scale=None if d["scale"] is None else np.asarray(d["scale"], dtype=np.float64),
        )
        check_feature_set(spec.feature_set)
        for name in spec.base:
            if name not in schema.BANDS and name != "asinh_z" and not (
                "-" in name and all(p in schema.BANDS for p in name.split("-"))
            ):
                raise ValueError(f"unknown base feature {name!r}")
        if spec.mean is not None and len(spec.mean) != spec.n_features:
            raise ValueError("scaler length does not match the features")
        return spec


def spec_from_quantiles(feature_set: str, recipe: FeatureRecipe, raw_q: np.ndarray, base_q: np.ndarray,
                        base_mean: np.ndarray, base_std: np.ndarray) -> FeatureSpec:
    """Build the (unscaled) spec from merged quantiles of the raw inputs and of the base features.

    ``raw_q`` and ``base_q`` are quantiles at QUANTILE_LEVELS of raw_columns(feature_set) and recipe.base.
    """
    raw = raw_columns(feature_set)
    mid = int(np.argmin(np.abs(QUANTILE_LEVELS - 0.5)))
    impute = {c: float(raw_q[mid, k]) for k, c in enumerate(raw)}
    knots = {}
    for b, n_inner in recipe.splines.items():
        k = recipe.base.index(b)
        # interior knots at evenly spaced quantiles; boundary knots at the 0.1 % / 99.9 % quantiles
        levels = np.linspace(0.0, 1.0, n_inner + 2)
        qs = np.interp(levels, QUANTILE_LEVELS, base_q[:, k])
        lo = float(np.interp(0.001, QUANTILE_LEVELS, base_q[:, k]))
        hi = float(np.interp(0.999, QUANTILE_LEVELS, base_q[:, k]))
        inner = np.unique(qs[1:-1][(qs[1:-1] > lo) & (qs[1:-1] < hi)])
        if hi <= lo:
            continue
        knots[b] = np.concatenate([[lo] * (DEGREE + 1), inner, [hi] * (DEGREE + 1)])
    return FeatureSpec(
        feature_set=feature_set,
        base=recipe.base,
        impute=impute,
        base_mean=base_mean,
        base_std=np.where(base_std > 0, base_std, 1.0),
        knots=knots,
        interactions=recipe.interactions,
    )
