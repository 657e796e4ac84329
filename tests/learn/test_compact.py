"""The compact training rows (features.compiled.compact) and their gradient kernel (loss.compact_block_sums) against
an exact float64 reference: the dense expanded matrix built in NumPy from the same stored values, standardised in
float64, through loss.block_sums_numpy. On real rows: SDSS17 for the spectroscopic and photometric sets, the
SpecPhoto sample (PSF magnitudes) for photometric+morphology."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from support import SHARED_DATA

from astrodask import schema
from astrodask.cluster.backend import InProcess
from astrodask.dataset import HOLDOUT
from astrodask.features import compiled
from astrodask.learn import blocks
from astrodask.learn.feature_stats import class_weights, fit_features, fit_scaler
from astrodask.learn.loss import block_sums_numpy, compact_block_sums, objective

SDSS17 = SHARED_DATA / "sdss17.csv"
SPECPHOTO = SHARED_DATA / "sdss" / "specphoto_psf_model_astrohackweek2014.csv"


def _real(feature_set: str) -> pd.DataFrame:
    if feature_set == "photometric+morphology":
        if not SPECPHOTO.is_file():
            pytest.skip(f"real SpecPhoto sample not found at {SPECPHOTO}")
        raw = pd.read_csv(SPECPHOTO)
        df = pd.DataFrame({schema.ID: raw["objid"].astype("uint64"), schema.CLASS: raw["class"]})
        for b in schema.BANDS:
            df[b] = raw[f"dered_{b}"].astype("float32")
            df[f"psf_{b}"] = raw[f"mag_{b}"].astype("float32")
        return df
    if not SDSS17.is_file():
        pytest.skip(f"real SDSS data not found at {SDSS17} (see ../shared/data/README.md)")
    df = pd.read_csv(SDSS17)
    return df.astype(dict.fromkeys((*schema.BANDS, schema.REDSHIFT), "float32"))  # as a dataset stores them


FEATURE_SETS = ["spectroscopic", "photometric", "photometric+morphology"]


@pytest.fixture(scope="module", params=FEATURE_SETS)
def trained(request):
    """(feature set, scaled spec, class weights, the compact block of the real rows) fitted as training fits
    them: pass 1 and the scaler on the workers' functions, in this process."""
    fs = request.param
    rows = blocks.rows_from_frame(_real(fs), fs)
    fitted = fit_features(InProcess(), [rows], fs, HOLDOUT, "test")
    weights = class_weights(fitted.counts, "balanced")  # unequal row weights: the weight lookup is exercised
    spec = fit_scaler(InProcess(), [rows], fitted.spec, weights, HOLDOUT)
    return fs, spec, weights, blocks.make_block(rows, spec, weights, HOLDOUT, warm=0.3), rows


def _dense64(part: blocks.CompactPart, lay) -> np.ndarray:
    """The unscaled expanded features of compact rows, float64, in NumPy (every product in float64)."""
    n = len(part.y)
    u = np.zeros((n, lay.n_features))
    u[:, :lay.n_base] = part.zb
    v, f, rows = part.vals.astype(np.float64), part.first.astype(np.int64), np.arange(n)
    p = lay.params
    for q, col in p.spline:
        for r in range(4):
            u[rows, col + f[:, q] + r] = v[:, q, r]
    for qa, qb, col, nb in p.tensor:
        for r in range(4):
            for t in range(4):
                u[rows, col + (f[:, qa] + r) * nb + f[:, qb] + t] = v[:, qa, r] * v[:, qb, t]
    for a, b, col in p.inter:
        u[:, col] = part.zb[:, a].astype(np.float64) * part.zb[:, b].astype(np.float64)
    return u


def _thetas(d: int):
    rng = np.random.default_rng(7)
    return [np.zeros((3, d + 1)), rng.normal(0, 3 / np.sqrt(d), (3, d + 1)), rng.normal(0, 8 / np.sqrt(d), (3, d + 1))]


@pytest.mark.realdata
def test_compact_sums_equal_the_exact_float64_reference(trained):
    fs, spec, weights, block, _ = trained
    lay = compiled.layout(spec)
    for part in block:
        x = (_dense64(part, lay) - lay.mean) / lay.scale
        w = weights[part.y]
        assert len(part.y) > 500
        for theta in _thetas(spec.n_features):
            got = compact_block_sums(part.zb, part.vals, part.first, part.y, weights, theta, lay)
            ref = block_sums_numpy(x, part.y, w, theta)
            assert got.loss == pytest.approx(ref.loss, rel=1e-12), fs
            assert np.abs(got.grad - ref.grad).max() <= 1e-12 * np.abs(ref.grad).max(), fs
            assert got.weight == pytest.approx(ref.weight, rel=1e-12)
            assert got.correct == pytest.approx(ref.correct, rel=1e-12)


@pytest.mark.realdata
def test_compact_rows_hold_the_expanded_features_and_their_moments(trained):
    """The compact rows expand to FeatureSpec.expand's (the NumPy reference) features; their compiled moments are
    the float64 moments of those features."""
    fs, spec, weights, block, rows = trained
    lay = compiled.layout(spec)
    split = HOLDOUT.of(rows.keys)
    sub = blocks.warm_rows(rows.keys, 0.3)
    m = (split == 0) & (rows.labels >= 0)
    order = np.concatenate([np.flatnonzero(m & sub), np.flatnonzero(m & ~sub)])
    u = _dense64(block.train, lay)
    ref = spec.expand(rows.frame.iloc[order], scaled=False)
    np.testing.assert_allclose(u, ref, rtol=1e-6, atol=1e-6)
    assert block.train.n_warm == int((m & sub).sum()) and 0.25 < block.train.n_warm / m.sum() < 0.35
    mo = blocks.moments(block, spec, weights, HOLDOUT)
    assert mo.n == len(u)
    np.testing.assert_allclose(mo.sum, u.sum(axis=0), rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(mo.sumsq, (u * u).sum(axis=0), rtol=1e-12, atol=1e-9)


@pytest.mark.realdata
def test_compact_sums_equal_the_dense_float32_blocks_to_their_precision(trained):
    """Against the dense float32 block (the incremental mode's, and the parallel mode's before the compact
    rows): the same sums to float32 rounding, so models trained either way agree."""
    fs, spec, weights, block, rows = trained
    dense = blocks.dense_block(rows, spec, weights, HOLDOUT)
    rng = np.random.default_rng(3)
    theta = rng.normal(0, 3 / np.sqrt(spec.n_features), (3, spec.n_features + 1))
    got = blocks.grad_sums(block, theta, spec, weights, HOLDOUT)
    want = blocks.grad_sums(dense, theta, spec, weights, HOLDOUT)
    for a, b in ((got.train, want.train), (got.valid, want.valid)):
        assert a.loss == pytest.approx(b.loss, rel=1e-6)
        assert np.abs(a.grad - b.grad).max() <= 1e-5 * np.abs(b.grad).max()


def test_compact_gradient_matches_finite_differences():
    """The fold of the scaler into the weights and its inverse on the gradient, checked on the objective."""
    from astrodask.synth import synth_partition

    df = synth_partition(0, 3000, seed=5)
    rows = blocks.rows_from_frame(df, "spectroscopic")
    fitted = fit_features(InProcess(), [rows], "spectroscopic", HOLDOUT, "test")
    weights = np.array([0.7, 1.9, 1.1])
    spec = fit_scaler(InProcess(), [rows], fitted.spec, weights, HOLDOUT)
    lay = compiled.layout(spec)
    part = blocks.make_block(rows, spec, weights, HOLDOUT).train.head(300)
    rng = np.random.default_rng(1)
    theta = rng.normal(0, 0.5 / np.sqrt(spec.n_features), (3, spec.n_features + 1))

    def f(t):
        return objective(compact_block_sums(part.zb, part.vals, part.first, part.y, weights, t, lay), t, 1e-3)

    _, g = f(theta)
    eps = 1e-6
    for idx in [(0, 0), (1, 5), (2, 13), (0, 40), (1, spec.n_features - 1), (2, spec.n_features)]:
        t1, t2 = theta.copy(), theta.copy()
        t1[idx] += eps
        t2[idx] -= eps
        assert g[idx] == pytest.approx((f(t1)[0] - f(t2)[0]) / (2 * eps), rel=1e-5, abs=1e-8), idx


def test_a_row_far_below_the_top_class_gives_a_finite_compact_loss():
    from astrodask.synth import synth_partition

    rows = blocks.rows_from_frame(synth_partition(0, 2000, seed=2), "photometric")
    fitted = fit_features(InProcess(), [rows], "photometric", HOLDOUT, "test")
    spec = fit_scaler(InProcess(), [rows], fitted.spec, np.ones(3), HOLDOUT)
    part = blocks.make_block(rows, spec, np.ones(3), HOLDOUT).train
    theta = np.zeros((3, spec.n_features + 1))
    theta[part.y[0], -1] = -2000.0  # the first row's class 2000 nats below the others
    s = blocks.grad_sums(blocks.FeatureBlock(part.head(1), part.head(0)), theta, spec, np.ones(3), HOLDOUT)
    assert np.isfinite(s.train.loss) and s.train.loss == pytest.approx(2000.0 + np.log(2.0), rel=1e-12)
    assert np.isfinite(s.train.grad).all()


def test_dense_and_compact_blocks_keep_the_same_rows():
    from astrodask.synth import synth_partition

    rows = blocks.rows_from_frame(synth_partition(0, 4000, seed=9), "spectroscopic")
    fitted = fit_features(InProcess(), [rows], "spectroscopic", HOLDOUT, "test")
    spec = fit_scaler(InProcess(), [rows], fitted.spec, np.ones(3), HOLDOUT)
    compact, dense = blocks.make_block(rows, spec, np.ones(3), HOLDOUT, warm=0.5), \
        blocks.dense_block(rows, spec, np.ones(3), HOLDOUT)
    for c, d in zip(compact, dense):
        assert sorted(c.y.tolist()) == sorted(d.y.tolist()) and len(c.y) == len(d.y) > 0
    theta = np.random.default_rng(0).normal(0, 0.1, (3, spec.n_features + 1))
    a, b = blocks.grad_sums(compact, theta, spec, np.ones(3), HOLDOUT), \
        blocks.grad_sums(dense, theta, spec, np.ones(3), HOLDOUT)
    assert a.train.loss == pytest.approx(b.train.loss, rel=1e-6)
    sub = blocks.grad_sums(compact, theta, spec, np.ones(3), HOLDOUT, subsample=True)
    assert sub.train.weight == compact.train.n_warm and 0 < sub.train.weight < a.train.weight
