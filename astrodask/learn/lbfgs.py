"""Parallel mode: L-BFGS on gradients summed over the workers, with an explicit, serialisable state.

Spark MLlib's design for logistic regression: every evaluation of the objective is one pass over the data in
which each worker computes the loss and gradient of its own blocks (``blocks.grad_sums``); the sums are added
in a fixed-order tree and only the summed gradient (classes x features numbers) reaches the client, which
takes the L-BFGS step. scipy's L-BFGS-B keeps its curvature pairs internally; here the whole state (point,
value, gradient, curvature pairs) is a small set of arrays, checkpointed after every iteration, so a resumed
minimisation continues exactly. A backtracking line search (Armijo) usually accepts the first step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .loop import EpochStats, OptimiserState
from .loss import SplitSums, objective


@dataclass
class LbfgsState:
    """Everything needed to continue a minimisation."""

    x: np.ndarray
    f: float
    g: np.ndarray
    s: list = field(default_factory=list)
    y: list = field(default_factory=list)
    iteration: int = 0
    evaluations: int = 1
    converged: bool = False

    def to_arrays(self) -> dict:
        m = len(self.s)
        return {"x": self.x, "f": np.array(self.f), "g": self.g,
                "s": np.array(self.s) if m else np.zeros((0, self.x.size)),
                "y": np.array(self.y) if m else np.zeros((0, self.x.size)),
                "counters": np.array([self.iteration, self.evaluations, int(self.converged)])}

    @classmethod
    def from_arrays(cls, a) -> LbfgsState:
        it, ev, conv = (int(v) for v in a["counters"])
        return cls(np.array(a["x"]), float(a["f"]), np.array(a["g"]), list(np.array(a["s"])), list(np.array(a["y"])),
                   it, ev, bool(conv))


def start(fun: Callable[[np.ndarray], tuple[float, np.ndarray]], x0: np.ndarray) -> LbfgsState:
    f, g = fun(x0)
    return LbfgsState(x0.copy(), f, g)


def _direction(st: LbfgsState) -> np.ndarray:
    q = -st.g.copy()
    alphas = []
    for s, y in zip(reversed(st.s), reversed(st.y)):
        rho = 1.0 / float(y @ s)
        a = rho * float(s @ q)
        alphas.append((a, rho, s, y))
        q -= a * y
    if st.s:
        s, y = st.s[-1], st.y[-1]
        q *= float(s @ y) / float(y @ y)
    else:
        q /= max(1.0, float(np.linalg.norm(st.g)))  # first step: unit length at most
    for a, rho, s, y in reversed(alphas):
        b = rho * float(y @ q)
        q += (a - b) * s
    return q


def step(fun, st: LbfgsState, memory: int = 20, tol: float = 1e-9, gtol: float = 1e-7,
         max_backtracks: int = 30) -> LbfgsState:
    """One L-BFGS iteration (one or more evaluations of ``fun``); returns the new state."""
    d = _direction(st)
    slope = float(st.g @ d)
    if slope >= 0:  # not a descent direction (numerical trouble): restart from steepest descent
        st.s, st.y = [], []
        d = _direction(st)
        slope = float(st.g @ d)
    t = 1.0
    for _ in range(max_backtracks):
        x_new = st.x + t * d
        f_new, g_new = fun(x_new)
        st.evaluations += 1
        if np.isfinite(f_new) and f_new <= st.f + 1e-4 * t * slope:
            break
        t *= 0.5
    else:
        st.converged = True  # no decrease possible at float precision
        return st
    s, y = x_new - st.x, g_new - st.g
    if float(s @ y) > 1e-12 * float(y @ y):
        st.s.append(s)
        st.y.append(y)
        if len(st.s) > memory:
            st.s.pop(0)
            st.y.pop(0)
    rel = (st.f - f_new) / max(abs(st.f), abs(f_new), 1.0)
    st.x, st.f, st.g = x_new, f_new, g_new
    st.iteration += 1
    st.converged = rel <= tol or float(np.abs(g_new).max()) <= gtol
    return st


class LbfgsOptimiser:
    """The parallel mode for the epoch loop: one L-BFGS iteration per epoch on the objective whose training sums
    ``evaluate(theta)`` returns (summed on the workers: ``fit.parallel_evaluator``).

    Each evaluation is one pass over the data and also returns the validation sums at the same point; the sums
    of the last evaluation (the accepted point of the line search) describe the epoch.
    """

    label = "train (L-BFGS)"

    def __init__(self, evaluate: Callable[[np.ndarray], SplitSums], shape: tuple[int, int], l2: float, tol: float,
                 warm: Callable[[], LbfgsState | None] | None = None, label: str | None = None):
        self.evaluate, self.shape, self.l2, self.tol = evaluate, shape, l2, tol
        self.warm = warm
        """Called by ``start``: a state to continue from (a minimisation of a subsample's objective), or None."""
        if label:
            self.label = label
        self.st: LbfgsState | None = None
        self._last: SplitSums | None = None

    def _fg(self, flat: np.ndarray) -> tuple[float, np.ndarray]:
        theta = flat.reshape(self.shape)
        self._last = self.evaluate(theta)
        f, g = objective(self._last.train, theta, self.l2)
        return f, g.ravel()

    def start(self) -> None:
        """From zero weights, or from the warm state: its point, re-evaluated here, and its curvature pairs (the
        subsample's objective is the mean loss of the same model, so its curvature is this one's, nearly)."""
        warm = self.warm() if self.warm is not None else None
        if warm is None:
            self.st = start(self._fg, np.zeros(self.shape).ravel())
            return
        f, g = self._fg(warm.x)
        self.st = LbfgsState(np.array(warm.x, copy=True), f, g, [np.array(v) for v in warm.s],
                             [np.array(v) for v in warm.y])

    def epoch(self, n: int) -> EpochStats | None:
        before = self.st.iteration
        self.st = step(self._fg, self.st, tol=self.tol)
        if self.st.iteration == before:  # the line search found no decrease: converged at float precision
            return None
        return EpochStats(self.theta, self._last, self.st.f, self.st.evaluations)

    @property
    def converged(self) -> bool:
        return self.st.converged

    @property
    def theta(self) -> np.ndarray:
        return self.st.x.reshape(self.shape)

    def state(self) -> OptimiserState:
        return OptimiserState(self.st.to_arrays())

    def restore(self, state: OptimiserState) -> None:
        self.st = LbfgsState.from_arrays(state.arrays)
