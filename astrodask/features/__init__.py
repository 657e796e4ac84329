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

Rooms: ``recipes`` (which features each feature set expands to), ``splines`` (quantile summaries, knots, the
B-spline basis), ``spec`` (the fitted FeatureSpec, stored in the model; the NumPy reference of expansion and
scoring), ``compiled`` (the numba kernels that score and expand row by row; imported on first use).
"""

from .recipes import (
    COLOURS,
    FEATURE_SETS,
    MORPHOLOGY,
    RECIPES,
    FeatureRecipe,
    check_feature_set,
    raw_columns,
    resolve_feature_set,
)
from .spec import REDSHIFT_SCALE, FeatureSpec, base_matrix, imputed_mask, spec_from_quantiles
from .splines import DEGREE, QUANTILE_LEVELS, TAIL_LEVELS, merge_quantiles, quantile_summary

__all__ = ["COLOURS", "DEGREE", "FEATURE_SETS", "MORPHOLOGY", "QUANTILE_LEVELS", "RECIPES", "REDSHIFT_SCALE",
           "TAIL_LEVELS", "FeatureRecipe", "FeatureSpec", "base_matrix", "check_feature_set", "imputed_mask",
           "merge_quantiles", "quantile_summary", "raw_columns", "resolve_feature_set", "spec_from_quantiles"]
