"""The feature maths on its own: the B-spline basis against scipy, and the folded scoring path
(``FeatureSpec.linear``, used by predict) against the expanded matrix that training uses."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.interpolate import BSpline
from support.models import fitted_spec

from astrodask.features import (
    DEGREE,
    QUANTILE_LEVELS,
    TAIL_LEVELS,
)
from astrodask.features.splines import basis_matrix, knot_vector, quantile_summary, sorted_quantiles
from astrodask.model import SoftmaxModel
from astrodask.synth import synth_partition


def _scipybasis_matrix(x, t):
    x = np.clip(x, t[DEGREE], t[-DEGREE - 1])
    return BSpline.design_matrix(x, t, DEGREE).toarray()


@pytest.mark.parametrize("seed", range(4))
def test_sorted_quantiles_equal_numpy_bit_for_bit(seed):
    """The summaries' quantiles are ``np.quantile``'s, to the last bit: wide and narrow scales, heavy tails,
    ties, and samples from one value up."""
    rng = np.random.default_rng(seed)
    for n in (1, 2, 3, 7, 100, 4099):
        for x in (rng.normal(size=n) * 10 ** rng.uniform(-6, 6), rng.standard_cauchy(n),
                  rng.integers(0, 4, n).astype(np.float64), rng.random(n).astype(np.float32).astype(np.float64)):
            for levels in (QUANTILE_LEVELS, TAIL_LEVELS, np.array([0.0, 0.25, 0.5, 1.0])):
                np.testing.assert_array_equal(sorted_quantiles(np.sort(x), levels), np.quantile(x, levels))


def test_quantile_summary_skips_non_finite_values_per_column():
    x = np.array([[1.0, np.nan], [np.inf, np.nan], [3.0, np.nan], [2.0, np.nan]])
    q, n = quantile_summary(x, np.array([0.0, 0.5, 1.0]))
    np.testing.assert_array_equal(n, [3, 0])
    np.testing.assert_array_equal(q[:, 0], [1.0, 2.0, 3.0])
    assert np.isnan(q[:, 1]).all()


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("n_knots", [3, 5, 10])
def test_basis_matches_scipy(seed, n_knots):
    rng = np.random.default_rng(seed)
    x = rng.standard_t(3, size=5000)
    t = knot_vector(np.quantile(x, QUANTILE_LEVELS), n_knots)
    # outside the range, on the boundaries and exactly on every knot
    x = np.concatenate([x, [-1e6, 1e6, t[0], t[-1]], np.unique(t)])
    got = basis_matrix(x, t)
    np.testing.assert_allclose(got, _scipybasis_matrix(x, t), atol=1e-12)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-12)  # a partition of unity
    assert basis_matrix(x[:0], t).shape == (0, len(t) - DEGREE - 1)


@pytest.mark.parametrize("feature_set", ["spectroscopic", "photometric"])
def test_folded_scores_equal_the_expanded_matrix_product(feature_set):
    df = synth_partition(0, 20000, seed=3)
    spec = fitted_spec(feature_set, df)
    rng = np.random.default_rng(0)
    model = SoftmaxModel(spec, rng.normal(0, 0.3, (3, spec.n_features)), rng.normal(0, 1, 3))
    rows = synth_partition(1, 70000, seed=4)  # more rows than one scoring chunk
    rows.loc[rows.index[:50], "u"] = np.nan  # imputed like in training
    if feature_set == "spectroscopic":
        rows.loc[rows.index[50:60], "redshift"] = np.nan
    expected = spec.expand(rows).astype(np.float64) @ model.coef.T + model.intercept
    got = model.decision_function(rows)
    assert got.shape == (len(rows), 3) and np.isfinite(got).all()
    # the expanded matrix is float32: agreement to its precision
    np.testing.assert_allclose(got, expected, atol=2e-5 * np.abs(expected).max())
    p = model.predict_proba(rows)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-12)
    assert (p.argmax(axis=1) == expected.argmax(axis=1)).mean() > 0.9999
    assert model.decision_function(rows.iloc[:0]).shape == (0, 3)
