"""Models for the scoring tests: a feature spec fitted on a frame, with random weights that spread the
probabilities (not all 0 or 1), so a wrong column shows in them."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from astrodask import schema
from astrodask.features import RECIPES, base_matrix, quantile_summary, raw_columns, spec_from_quantiles
from astrodask.model import ModelInfo, SoftmaxModel


def fitted_spec(feature_set: str, df: pd.DataFrame):
    """The spec of ``feature_set`` fitted on ``df``: knots at its quantiles, its medians, its scaler."""
    recipe = RECIPES[feature_set]
    raw = df[list(raw_columns(feature_set))].to_numpy(dtype="float64", na_value=np.nan)
    base = base_matrix(df, recipe.base, None)
    spec = spec_from_quantiles(feature_set, recipe, quantile_summary(raw)[0], quantile_summary(base)[0],
                               np.nanmean(base, axis=0), np.nanstd(base, axis=0))
    x = spec.expand(df).astype(np.float64)
    sd = x.std(axis=0)
    return replace(spec, mean=x.mean(axis=0), scale=np.where(sd > 1e-12, sd, 1.0))


def random_model(feature_set: str, df: pd.DataFrame, seed: int = 0, link: str | None = None,
                 domain=None) -> SoftmaxModel:
    """A model over ``fitted_spec(feature_set, df)`` with random weights of a size that spreads the probabilities."""
    spec = fitted_spec(feature_set, df)
    rng = np.random.default_rng(seed)
    d = spec.n_features
    coef = rng.normal(0.0, 3.0 / np.sqrt(d), (len(schema.CLASSES), d))
    info = ModelInfo(link=link) if link else ModelInfo()
    return SoftmaxModel(spec, coef, rng.normal(0.0, 1.0, len(schema.CLASSES)), info=info, domain=domain)
