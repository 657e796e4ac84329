"""Compiled (numba) kernels of the training hot path: one pass over a block's rows each.

:func:`softmax_sums` is :func:`loss.block_sums_numpy` fused into one loop: each row's logits, softmax, loss and
gradient contribution are computed while the row is in cache, so a persisted float32 block is read once per
epoch (the NumPy version reads it twice through two BLAS calls of width 3, which run far below the memory
bandwidth). Sums are in float64 whatever the block's precision; its reductions may be reordered (``reassoc``)
so that they vectorise: results match the NumPy reference to floating-point rounding, not bit for bit
(tests/learn/test_loss.py). :func:`column_moments` is the scaler's sums.
"""

from __future__ import annotations

import numpy as np

from ..jit import jit

FAST = {"reassoc", "contract"}  # vectorised reductions; no approximate exp/log, NaN and Inf kept


@jit(fastmath=FAST)
def softmax_sums(x, y, w, coef, intercept, grad):  # pragma: no cover - compiled
    """Add the weighted softmax gradient of rows ``x`` (labels ``y``, weights ``w``) at ``coef``/``intercept``
    into ``grad`` (classes, features + 1, float64); return (loss, weight, correct) sums."""
    n, d = x.shape
    k_classes = coef.shape[0]
    z = np.empty(k_classes)
    loss = 0.0
    wsum = 0.0
    correct = 0.0
    for i in range(n):
        for k in range(k_classes):
            s = 0.0
            for j in range(d):
                s += coef[k, j] * x[i, j]
            z[k] = s + intercept[k]
        top = 0
        for k in range(1, k_classes):
            if z[k] > z[top]:
                top = k
        m = z[top]
        yi = y[i]
        ly = z[yi] - m  # the log-sum-exp form: exp(z_y - m) underflows when z_y is > ~745 below the top class
        total = 0.0
        for k in range(k_classes):
            z[k] = np.exp(z[k] - m)
            total += z[k]
        wi = np.float64(w[i])
        loss -= wi * (ly - np.log(total))
        wsum += wi
        if top == yi:
            correct += wi
        for k in range(k_classes):
            r = z[k] / total
            if k == yi:
                r -= 1.0
            r *= wi
            grad[k, d] += r
            for j in range(d):
                grad[k, j] += r * x[i, j]
    return loss, wsum, correct


@jit  # no fastmath: it lets LLVM square in float32; the j loop vectorises anyway
def column_moments(x, total, total_sq):  # pragma: no cover - compiled
    """Add the column sums and sums of squares of ``x`` (float64) into ``total`` and ``total_sq``."""
    n, d = x.shape
    for i in range(n):
        for j in range(d):
            v = np.float64(x[i, j])
            total[j] += v
            total_sq[j] += v * v

