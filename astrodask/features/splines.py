"""Cubic B-splines with knots at quantiles: fixed-size quantile summaries (mergeable across partitions), clamped
knot vectors, and the basis by the Cox-de Boor recursion."""

from __future__ import annotations

import numpy as np

QUANTILE_LEVELS = np.linspace(0.0, 1.0, 201)
DEGREE = 3
_TAILS = np.array([1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2])
TAIL_LEVELS = np.unique(np.concatenate([QUANTILE_LEVELS, _TAILS, 1.0 - _TAILS]))
"""QUANTILE_LEVELS plus finer steps in both tails (down to 0.01 %), so that merged summaries give the 0.1 %
quantiles of the training rows (the domain bounds) to within a small interpolation error."""


def quantile_summary(x: np.ndarray, levels: np.ndarray = QUANTILE_LEVELS) -> tuple[np.ndarray, np.ndarray]:
    """Per-column (quantiles at ``levels``, non-null counts): a fixed-size summary of a partition."""
    q = np.full((len(levels), x.shape[1]), np.nan)
    n = np.zeros(x.shape[1], dtype=np.int64)
    for k in range(x.shape[1]):
        v = x[:, k][np.isfinite(x[:, k])]
        n[k] = v.size
        if v.size:
            q[:, k] = sorted_quantiles(np.sort(v), levels)
    return q, n


def sorted_quantiles(s: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """``np.quantile(s, levels)`` (its default linear method, the same floating-point steps) of a sorted, finite,
    non-empty ``s``: a sort and a gather, where ``np.quantile``'s partition at 201 levels costs about five sorts."""
    virtual = (s.size - 1) * np.asarray(levels, np.float64)
    lo = np.floor(virtual)
    gamma = virtual - lo
    lo = np.clip(lo, 0, s.size - 1).astype(np.intp)
    hi = np.minimum(lo + 1, s.size - 1)
    a, b = s[lo], s[hi]
    diff = b - a
    return np.where(gamma >= 0.5, b - diff * (1 - gamma), a + diff * gamma)


def merge_quantiles(summaries: list[tuple[np.ndarray, np.ndarray]], levels: np.ndarray,
                    summary_levels: np.ndarray = QUANTILE_LEVELS, equal: bool = False) -> np.ndarray:
    """Approximate global quantiles at ``levels`` from summaries at ``summary_levels``: the mixture of their
    CDFs, weighted by their counts (``equal``: every summary with a value weighs the same, e.g. one per class)."""
    n_cols = summaries[0][0].shape[1]
    out = np.full((len(levels), n_cols), np.nan)
    for k in range(n_cols):
        parts = [(q[:, k], 1 if equal else n[k]) for q, n in summaries if n[k] > 0]
        if not parts:
            continue
        grid = np.unique(np.concatenate([q for q, _ in parts]))
        total = sum(n for _, n in parts)
        cdf = sum(n * np.interp(grid, q, summary_levels, left=0.0, right=1.0) for q, n in parts) / total
        cdf = np.maximum.accumulate(cdf)
        out[:, k] = np.interp(levels, cdf, grid)
    return out


def basis_parts(x: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The DEGREE+1 non-zero cubic B-spline values of each ``x`` on the clamped knot vector ``t`` (values
    outside are clipped) and the index of the first of them: Cox-de Boor recursion vectorised over rows."""
    lo, hi = DEGREE, len(t) - DEGREE - 2  # first and last non-empty knot interval
    x = np.clip(x, t[lo], t[hi + 1])
    i = np.full(len(x), lo)
    for knot in t[lo + 1:hi + 1]:  # the interval: count the interior knots at or below x (faster than searchsorted)
        i += x >= knot
    left = [None] + [x - t[i + 1 - j] for j in range(1, DEGREE + 1)]
    right = [None] + [t[i + j] - x for j in range(1, DEGREE + 1)]
    n = np.empty((DEGREE + 1, len(x)))
    n[0] = 1.0
    for j in range(1, DEGREE + 1):
        saved = 0.0
        for r in range(j):
            tmp = n[r] / (right[r + 1] + left[j - r])  # > 0: interior knots are distinct, so intervals are not empty
            np.multiply(right[r + 1], tmp, out=n[r])
            n[r] += saved
            saved = left[j - r] * tmp
        n[j] = saved
    return n.T, i - DEGREE


def basis_matrix(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Dense cubic B-spline basis of ``x`` on the clamped knot vector ``t`` (values outside are clipped)."""
    out = np.zeros((len(x), len(t) - DEGREE - 1))
    if len(x):
        vals, first = basis_parts(x, t)
        flat = out.reshape(-1)
        at = np.arange(len(x)) * out.shape[1] + first
        for j in range(DEGREE + 1):
            flat[at + j] = vals[:, j]
    return out


def is_clamped(t: np.ndarray) -> bool:
    """A knot vector _basis can use: finite, each boundary knot DEGREE+1 times, interior strictly increasing."""
    t = np.asarray(t, dtype=np.float64)
    if t.ndim != 1 or len(t) < 2 * (DEGREE + 1) or not np.isfinite(t).all():
        return False
    ends = np.all(t[:DEGREE + 1] == t[0]) and np.all(t[-DEGREE - 1:] == t[-1])
    return bool(ends and np.all(np.diff(t[DEGREE:-DEGREE]) > 0))


def knot_vector(q: np.ndarray, n_knots: int) -> np.ndarray | None:
    """Clamped knot vector: ``n_knots`` knots at evenly spaced quantiles (``q`` at QUANTILE_LEVELS), the two
    boundary knots at the 0.1 % and 99.9 % quantiles so a few wild values do not stretch the basis."""
    lo = float(np.interp(0.001, QUANTILE_LEVELS, q))
    hi = float(np.interp(0.999, QUANTILE_LEVELS, q))
    if not hi > lo:
        return None
    inner = np.interp(np.linspace(0.0, 1.0, n_knots)[1:-1], QUANTILE_LEVELS, q)
    inner = np.unique(inner[(inner > lo) & (inner < hi)])
    return np.concatenate([[lo] * (DEGREE + 1), inner, [hi] * (DEGREE + 1)])
