"""learn.lbfgs on its own: the minimum it reaches against scipy's L-BFGS-B on the same objective, and a state
that round-trips through arrays so a resumed minimisation continues exactly."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.optimize import minimize

from astrodask.learn import lbfgs
from astrodask.learn.loss import block_sums, objective


def _softmax_problem(seed: int, n: int = 400, d: int = 5, k: int = 3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    true = rng.normal(size=(k, d))
    y = (x @ true.T + rng.gumbel(size=(n, k))).argmax(axis=1).astype(np.int8)
    w = np.ones(n)
    shape = (k, d + 1)

    def fun(flat):
        theta = flat.reshape(shape)
        f, g = objective(block_sums(x, y, w, theta), theta, 1e-2)
        return f, g.ravel()

    return fun, np.zeros(shape).ravel()


def _minimise(fun, x0, steps: int = 500, tol: float = 1e-12):
    st = lbfgs.start(fun, x0)
    for _ in range(steps):
        if st.converged:
            break
        st = lbfgs.step(fun, st, tol=tol)
    return st


def test_rosenbrock_minimum():
    def fun(v):
        x, y = v
        return (1 - x) ** 2 + 100 * (y - x * x) ** 2, np.array([-2 * (1 - x) - 400 * x * (y - x * x),
                                                               200 * (y - x * x)])

    st = _minimise(fun, np.array([-1.2, 1.0]), steps=2000, tol=0.0)
    np.testing.assert_allclose(st.x, [1.0, 1.0], atol=1e-5)


@pytest.mark.parametrize("seed", range(3))
def test_same_optimum_as_scipy_on_the_softmax_objective(seed):
    fun, x0 = _softmax_problem(seed)
    ours = _minimise(fun, x0)
    ref = minimize(fun, x0, jac=True, method="L-BFGS-B", options={"maxiter": 5000, "ftol": 1e-15, "gtol": 1e-10})
    assert ours.f == pytest.approx(ref.fun, rel=1e-9, abs=1e-12)
    np.testing.assert_allclose(ours.x, ref.x, atol=1e-4)
    assert ours.iteration < 200


def test_state_round_trips_and_a_resumed_minimisation_continues_exactly():
    fun, x0 = _softmax_problem(4)
    whole = lbfgs.start(fun, x0)
    for _ in range(12):
        whole = lbfgs.step(fun, whole)
    half = lbfgs.start(fun, x0)
    for _ in range(5):
        half = lbfgs.step(fun, half)
    resumed = lbfgs.LbfgsState.from_arrays(half.to_arrays())
    for _ in range(7):
        resumed = lbfgs.step(fun, resumed)
    np.testing.assert_array_equal(resumed.x, whole.x)
    assert (resumed.iteration, resumed.evaluations) == (whole.iteration, whole.evaluations)


def test_a_descent_is_taken_every_step_and_memory_is_bounded():
    fun, x0 = _softmax_problem(5)
    st = lbfgs.start(fun, x0)
    values = [st.f]
    for _ in range(40):
        st = lbfgs.step(fun, st, memory=4)
        values.append(st.f)
        assert len(st.s) <= 4
    assert all(b <= a for a, b in itertools.pairwise(values))
