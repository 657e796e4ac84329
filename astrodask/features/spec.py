"""The fitted feature transform (stored in the model file), and its NumPy reference implementation.

``FeatureSpec.expand`` and ``FeatureSpec.linear`` are the reference the compiled kernels (``compiled``) are
tested against; training and scoring use the kernels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .. import schema
from .recipes import FeatureRecipe, check_feature_set, raw_columns
from .splines import DEGREE, QUANTILE_LEVELS, basis_matrix, is_clamped, knot_vector

REDSHIFT_SCALE = 1e-3
EXPAND_CHUNK_BYTES = 32 << 20

def base_matrix(df: pd.DataFrame, names: tuple[str, ...], impute: dict[str, float] | None) -> np.ndarray:
    """Base features as float64 columns; missing inputs imputed when ``impute`` is given (else NaN)."""
    cols = {}
    for c in (*schema.BANDS, schema.REDSHIFT, *schema.PSF_BANDS):
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


def imputed_mask(df: pd.DataFrame, feature_set: str) -> np.ndarray:
    """The imputed bit mask of each row (uint16): bit k set when input ``schema.INPUT_BITS[k]`` is missing (and so
    replaced by the training median); 0 means every input of the feature set was measured."""
    mask = np.zeros(len(df), np.uint16)
    for c in raw_columns(feature_set):
        missing = df[c].isna().to_numpy()
        mask |= (missing.astype(np.uint16) << np.uint16(schema.INPUT_BITS.index(c)))
    return mask


@dataclass(frozen=True)
class FeatureSpec:
    """A fitted feature transform: all numbers needed to expand rows, stored in the model file.

    Columns, in order: standardised base features; each spline basis of ``knots``; each tensor product of
    ``tensors``; the standardised products of ``interactions``. ``mean``/``scale`` then standardise all.
    """

    feature_set: str
    base: tuple[str, ...]
    impute: dict
    """Raw column -> training median used for missing values."""
    base_mean: np.ndarray
    base_std: np.ndarray
    knots: dict = field(default_factory=dict)
    """Base feature -> full knot vector (boundary knots repeated DEGREE+1 times)."""
    tensors: tuple = ()
    """(feature a, knots of a, feature b, knots of b): products of the two bases, every pair."""
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
        for a, ta, b, tb in self.tensors:
            names += [f"bs({a})[{i}]*bs({b})[{j}]" for i in range(len(ta) - DEGREE - 1)
                      for j in range(len(tb) - DEGREE - 1)]
        names += [f"{a}*{b}" for a, b in self.interactions]
        return names

    @property
    def n_features(self) -> int:
        return len(self.names)

    def expand(self, df: pd.DataFrame, scaled: bool = True) -> np.ndarray:
        """Rows -> model input matrix (float32), built in row chunks so the float64 temporaries stay small
        (about EXPAND_CHUNK_BYTES each) whatever the partition size, then standardised in place."""
        step = max(1024, EXPAND_CHUNK_BYTES // (8 * self.n_features))
        out = np.empty((len(df), self.n_features), dtype=np.float32)
        for start in range(0, len(df), step):
            self._expand(df.iloc[start:start + step], out[start:start + step])
        if scaled:
            self.standardise(out)
        return out

    def standardise(self, x: np.ndarray) -> np.ndarray:
        """Apply the scaler to an unscaled float32 feature matrix in place (no float64 copies); returns ``x``."""
        if self.mean is not None:
            x -= self.mean.astype(np.float32)
            x *= (1.0 / self.scale).astype(np.float32)
        return x

    def _expand(self, df: pd.DataFrame, out: np.ndarray) -> None:
        """Unscaled features of ``df`` written into ``out`` (rows x n_features, float32)."""
        col = 0
        for block in self._blocks(df):
            if len(block) == 1:
                k = block[0].shape[1]
                out[:, col:col + k] = block[0]
            else:  # the outer product written straight into its columns (a view: splitting the contiguous last axis)
                ba, bb = block
                k = ba.shape[1] * bb.shape[1]
                dst = out[:, col:col + k].reshape(len(df), ba.shape[1], bb.shape[1])
                np.multiply(ba[:, :, None], bb[:, None, :], out=dst, casting="same_kind")
            col += k

    def _blocks(self, df: pd.DataFrame):
        """The unscaled feature columns of ``df`` in model order, as ``(dense block,)`` or, for a tensor
        product, ``(basis a, basis b)`` whose row-wise outer product (a-major) is the block."""
        xb = base_matrix(df, self.base, self.impute)
        zb = (xb - self.base_mean) / self.base_std
        idx = {b: k for k, b in enumerate(self.base)}
        memo: dict = {}

        def basis(name: str, t: np.ndarray) -> np.ndarray:  # tensors reuse the same coarse bases
            key = (name, t.tobytes())
            if key not in memo:
                memo[key] = basis_matrix(xb[:, idx[name]], t)
            return memo[key]

        yield (zb,)
        for b, t in self.knots.items():
            yield (basis(b, t),)
        for a, ta, b, tb in self.tensors:
            yield basis(a, ta), basis(b, tb)
        if self.interactions:
            yield (np.column_stack([zb[:, idx[a]] * zb[:, idx[b]] for a, b in self.interactions]),)

    def linear(self, df: pd.DataFrame, coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
        """``expand(df) @ coef.T + intercept`` in float64 without building the expanded matrix: the scaler is
        folded into the weights and each block is multiplied as it is made (a tensor product as
        ``((basis a) @ W_block) * basis b``), so scoring costs a fraction of the expansion."""
        d = self.n_features
        mean = np.zeros(d) if self.mean is None else self.mean
        w = coef.T / (np.ones(d) if self.scale is None else self.scale)[:, None]  # (features, classes)
        b = intercept - mean @ w
        k = w.shape[1]
        step = 32768  # rows: the bases of a chunk take ~50 MB
        out = np.empty((len(df), k))
        for start in range(0, len(df), step):
            part = df.iloc[start:start + step]
            acc = np.broadcast_to(b, (len(part), k)).copy()
            col = 0
            for block in self._blocks(part):
                if len(block) == 1:
                    m = block[0].shape[1]
                    acc += block[0] @ w[col:col + m]
                else:
                    ba, bb = block
                    na, nb = ba.shape[1], bb.shape[1]
                    m = na * nb
                    # W block as (a, class, b): the contraction with basis b then runs over a contiguous axis
                    wt = w[col:col + m].reshape(na, nb, k).transpose(0, 2, 1).reshape(na, k * nb)
                    acc += np.einsum("nkj,nj->nk", (ba @ wt).reshape(len(part), k, nb), bb)
                col += m
            out[start:start + step] = acc
        return out

    def to_dict(self) -> dict:
        return {
            "feature_set": self.feature_set,
            "base": list(self.base),
            "impute": {k: float(v) for k, v in self.impute.items()},
            "base_mean": self.base_mean.tolist(),
            "base_std": self.base_std.tolist(),
            # lists, not mappings: their order is the order of the model's columns
            "knots": [[k, np.asarray(v).tolist()] for k, v in self.knots.items()],
            "tensors": [[a, np.asarray(ta).tolist(), b, np.asarray(tb).tolist()] for a, ta, b, tb in self.tensors],
            "interactions": [list(p) for p in self.interactions],
            "mean": None if self.mean is None else self.mean.tolist(),
            "scale": None if self.scale is None else self.scale.tolist(),
            "degree": DEGREE,
            "redshift_scale": REDSHIFT_SCALE,
            "names": self.names,
        }

    @classmethod
    def from_dict(cls, d: dict) -> FeatureSpec:
        if d.get("degree", DEGREE) != DEGREE or d.get("redshift_scale", REDSHIFT_SCALE) != REDSHIFT_SCALE:
            raise ValueError("feature constants differ from this version")
        arr = lambda v: np.asarray(v, dtype=np.float64)  # noqa: E731
        spec = cls(
            feature_set=str(d["feature_set"]),
            base=tuple(str(b) for b in d["base"]),
            impute={str(k): float(v) for k, v in d["impute"].items()},
            base_mean=arr(d["base_mean"]),
            base_std=arr(d["base_std"]),
            knots={str(k): arr(v) for k, v in d["knots"]},
            tensors=tuple((str(a), arr(ta), str(b), arr(tb)) for a, ta, b, tb in d.get("tensors", [])),
            interactions=tuple((str(a), str(b)) for a, b in d["interactions"]),
            mean=None if d["mean"] is None else arr(d["mean"]),
            scale=None if d["scale"] is None else arr(d["scale"]),
        )
        check_feature_set(spec.feature_set)
        raw = raw_columns(spec.feature_set)
        for name in spec.base:
            if name == "asinh_z" and schema.REDSHIFT not in raw:
                raise ValueError(f"base feature {name} needs the redshift, which a {spec.feature_set} model "
                                 "does not read")
            if name not in schema.BANDS and name != "asinh_z" and not (
                "-" in name and all(p in raw for p in name.split("-"))
            ):
                raise ValueError(f"unknown base feature {name!r}")
        used = [*spec.knots, *(t[0] for t in spec.tensors), *(t[2] for t in spec.tensors),
                *(x for p in spec.interactions for x in p)]
        if any(u not in spec.base for u in used):
            raise ValueError("a spline, tensor or interaction refers to a feature that is not a base feature")
        for t in [*spec.knots.values(), *(t[1] for t in spec.tensors), *(t[3] for t in spec.tensors)]:
            if not is_clamped(t):
                raise ValueError("a knot vector is not clamped cubic (finite, boundaries repeated, interior "
                                 "increasing)")
        if spec.mean is not None and (len(spec.mean) != spec.n_features or len(spec.scale) != spec.n_features):
            raise ValueError("scaler length does not match the features")
        if len(spec.base_mean) != len(spec.base) or len(spec.base_std) != len(spec.base):
            raise ValueError("base statistics do not match the base features")
        missing = [c for c in raw if c not in spec.impute]
        if missing:
            raise ValueError(f"no imputation value for {', '.join(missing)}")
        # numbers that would turn every probability into NaN (or infinity) are refused here, not at scoring
        checks = [("impute", np.array(list(spec.impute.values())), False), ("base_mean", spec.base_mean, False),
                  ("base_std", spec.base_std, True)]
        if spec.mean is not None:
            checks += [("mean", spec.mean, False), ("scale", spec.scale, True)]
        for name, v, positive in checks:
            if not np.isfinite(v).all():
                raise ValueError(f"{name} holds NaN or infinity")
            if positive and not (v > 0).all():
                raise ValueError(f"{name} holds zero or negative values")
        return spec


def spec_from_quantiles(feature_set: str, recipe: FeatureRecipe, raw_q: np.ndarray, base_q: np.ndarray,
                        base_mean: np.ndarray, base_std: np.ndarray) -> FeatureSpec:
    """Build the (unscaled) spec from merged quantiles of the raw inputs and of the base features.

    ``raw_q`` and ``base_q`` are quantiles at QUANTILE_LEVELS of raw_columns(feature_set) and recipe.base.
    """
    raw = raw_columns(feature_set)
    mid = int(np.argmin(np.abs(QUANTILE_LEVELS - 0.5)))
    impute = {c: float(raw_q[mid, k]) for k, c in enumerate(raw)}
    col = {b: base_q[:, k] for k, b in enumerate(recipe.base)}
    knots = {b: t for b, n in recipe.splines.items() if (t := knot_vector(col[b], n)) is not None}
    tensors = []
    for a, b, n in recipe.tensors:
        ta, tb = knot_vector(col[a], n), knot_vector(col[b], n)
        if ta is not None and tb is not None:
            tensors.append((a, ta, b, tb))
    return FeatureSpec(
        feature_set=feature_set,
        base=recipe.base,
        impute=impute,
        base_mean=base_mean,
        base_std=np.where(base_std > 0, base_std, 1.0),
        knots=knots,
        tensors=tuple(tensors),
        interactions=recipe.interactions,
    )
