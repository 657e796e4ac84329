"""The softmax loss and gradient of one block (learn.loss) against finite differences, and their sums."""

from __future__ import annotations

import numpy as np
import pytest

from astrodask.learn.loss import block_sums, objective


def _problem(seed=0, n=200, d=6, k=3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = rng.integers(0, k, n).astype(np.int8)
    w = rng.uniform(0.2, 2.0, n)
    theta = rng.normal(scale=0.5, size=(k, d + 1))
    return x, y, w, theta


def _f(x, y, w, theta, l2):
    return objective(block_sums(x, y, w, theta), theta, l2)


@pytest.mark.parametrize("l2", [0.0, 0.1])
@pytest.mark.parametrize("seed", range(3))
def test_gradient_matches_finite_differences(seed, l2):
    x, y, w, theta = _problem(seed)
    f, g = _f(x, y, w, theta, l2)
    eps = 1e-6
    num = np.zeros_like(theta)
    for idx in np.ndindex(theta.shape):
        t1, t2 = theta.copy(), theta.copy()
        t1[idx] += eps
        t2[idx] -= eps
        num[idx] = (_f(x, y, w, t1, l2)[0] - _f(x, y, w, t2, l2)[0]) / (2 * eps)
    np.testing.assert_allclose(g, num, rtol=1e-6, atol=1e-8)


def test_loss_is_the_weighted_mean_log_loss_plus_the_penalty_on_coefficients_only():
    x, y, w, theta = _problem(1)
    logits = x @ theta[:, :-1].T + theta[:, -1]
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    expected = -(w * np.log(p[np.arange(len(y)), y])).sum() / w.sum() + 0.05 * (theta[:, :-1] ** 2).sum()
    f, _ = _f(x, y, w, theta, 0.1)
    assert f == pytest.approx(expected, rel=1e-12)
    s = block_sums(x, y, w, theta)
    assert s.weight == pytest.approx(w.sum())
    assert s.correct == pytest.approx(w[p.argmax(axis=1) == y].sum())
    assert s.accuracy == pytest.approx(s.correct / s.weight)


def test_sums_of_blocks_add_up_to_the_sums_of_all_rows():
    x, y, w, theta = _problem(2, n=300)
    whole = block_sums(x, y, w, theta)
    parts = [block_sums(x[a:b], y[a:b], w[a:b], theta) for a, b in ((0, 100), (100, 100), (100, 300))]
    total = parts[0] + parts[1] + parts[2]
    assert total.loss == pytest.approx(whole.loss, rel=1e-12)
    np.testing.assert_allclose(total.grad, whole.grad, rtol=1e-12, atol=1e-12)
    assert total.weight == pytest.approx(whole.weight) and total.correct == pytest.approx(whole.correct)
    empty = parts[1]
    assert (empty.loss, empty.weight, empty.correct) == (0.0, 0.0, 0.0) and not empty.grad.any()
    assert empty.grad.shape == theta.shape
    assert parts[1].accuracy is None and parts[1].mean_loss is None


def test_float32_blocks_give_the_float64_result_to_float32_precision():
    x, y, w, theta = _problem(3, n=2000, d=40)
    a = block_sums(x, y, w, theta)
    b = block_sums(x.astype(np.float32), y, w.astype(np.float32), theta)
    assert b.loss == pytest.approx(a.loss, rel=1e-5)
    np.testing.assert_allclose(b.grad, a.grad, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_compiled_pass_matches_the_numpy_reference(dtype):
    """block_sums (one numba pass per row) against block_sums_numpy (two BLAS products), on the block shape
    training uses (hundreds of features), float32 as persisted and float64 as in memory."""
    from astrodask.learn.loss import block_sums_numpy

    x, y, w, theta = _problem(4, n=5000, d=330)
    x, w = x.astype(dtype), w.astype(dtype)
    a, b = block_sums(x, y, w, theta), block_sums_numpy(x, y, w, theta)
    rtol = 1e-10 if dtype == np.float64 else 1e-4
    assert a.loss == pytest.approx(b.loss, rel=rtol) and a.weight == pytest.approx(b.weight, rel=rtol)
    np.testing.assert_allclose(a.grad, b.grad, rtol=rtol, atol=rtol * np.abs(b.grad).max())
    flips = 0 if dtype == np.float64 else w.max()  # a near-tie of two classes may flip in float32
    assert abs(a.correct - b.correct) <= flips + 1e-9 * b.weight


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_a_row_far_below_the_top_class_gives_a_finite_loss(dtype):
    """A row whose true class is ~1000 nats below the top one (wild photometry at sharp weights): exp of its
    shifted logit underflows to 0, so the loss must be taken in the log-sum-exp form, not as log(exp(.))."""
    from astrodask.learn.loss import block_sums_numpy

    x = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]], dtype)
    y = np.array([1, 0, 2], np.int8)
    w = np.ones(3, dtype)
    theta = np.array([[1000.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    a, b = block_sums(x, y, w, theta), block_sums_numpy(x, y, w, theta)
    assert np.isfinite(a.loss) and a.loss > 1000  # row 0 alone costs ~1000 nats
    rtol = 1e-12 if dtype == np.float64 else 1e-6  # the reference multiplies in the block's precision
    assert a.loss == pytest.approx(b.loss, rel=rtol)
    np.testing.assert_allclose(a.grad, b.grad, rtol=rtol, atol=rtol)
