"""Compiled (numba) kernels of the training hot path: one pass over a block's rows each.

:func:`softmax_sums` is :func:`loss.block_sums_numpy` fused into one loop: each row's logits, softmax, loss and
gradient contribution are computed while the row is in cache, so a persisted float32 block is read once per
epoch (the NumPy version reads it twice through two BLAS calls of width 3, which run far below the memory
bandwidth). Sums are in float64 whatever the block's precision; its reductions may be reordered (``reassoc``)
so that they vectorise: results match the NumPy reference to floating-point rounding, not bit for bit
(tests/learn/test_loss.py).

:func:`compact_sums` and :func:`compact_moments` do the same for *compact* rows (``features.compiled.Layout``:
per row the standardised base features and, per distinct B-spline basis, its 4 non-zero values and the index of
the first), forming each non-zero expanded value as they go -- a spline's 4 columns, a tensor product's 16 -- so
a row costs its non-zeros (~120-220), not the model's 329-1,281 columns. They work on the *unscaled* features U
with the scaler folded into the weights (``loss.compact_block_sums``); the three classes are explicit scalars
(``schema.CLASSES``), and every product is taken in float64 from the stored float32 values, so the sums equal a
dense float64 pass over the same values to rounding (~1e-13; tests/learn/test_compact.py).
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


@jit(fastmath=FAST)
def compact_sums(zb, vals, first, y, class_weight, spline, tensor, inter, w, bias, grad):  # pragma: no cover
    """Add the weighted softmax gradient of compact rows (``zb`` rows x base, ``vals`` rows x bases x 4, ``first``
    rows x bases; labels ``y``; row weight ``class_weight[y]``) with respect to the unscaled features U into
    ``grad`` (3 x features + 1: the last column the intercept's); ``w`` (3 x features) and ``bias`` are the
    weights in U's space. Returns (loss, weight, correct) sums."""
    n = zb.shape[0]
    n_base = zb.shape[1]
    d = w.shape[1]
    loss = 0.0
    wsum = 0.0
    correct = 0.0
    for i in range(n):
        # logits: 12 independent running sums (4 lanes x 3 classes), so the loop is not one dependent chain
        a00 = a01 = a02 = a03 = 0.0
        a10 = a11 = a12 = a13 = 0.0
        a20 = a21 = a22 = a23 = 0.0
        b0 = bias[0]
        b1 = bias[1]
        b2 = bias[2]
        for j in range(n_base):
            v = np.float64(zb[i, j])
            b0 += v * w[0, j]
            b1 += v * w[1, j]
            b2 += v * w[2, j]
        for s in range(spline.shape[0]):
            q = spline[s, 0]
            c = spline[s, 1] + first[i, q]
            v0 = np.float64(vals[i, q, 0])
            v1 = np.float64(vals[i, q, 1])
            v2 = np.float64(vals[i, q, 2])
            v3 = np.float64(vals[i, q, 3])
            a00 += v0 * w[0, c]
            a01 += v1 * w[0, c + 1]
            a02 += v2 * w[0, c + 2]
            a03 += v3 * w[0, c + 3]
            a10 += v0 * w[1, c]
            a11 += v1 * w[1, c + 1]
            a12 += v2 * w[1, c + 2]
            a13 += v3 * w[1, c + 3]
            a20 += v0 * w[2, c]
            a21 += v1 * w[2, c + 1]
            a22 += v2 * w[2, c + 2]
            a23 += v3 * w[2, c + 3]
        for s in range(tensor.shape[0]):
            qa = tensor[s, 0]
            qb = tensor[s, 1]
            nb = tensor[s, 3]
            base = tensor[s, 2] + first[i, qa] * nb + first[i, qb]
            v0 = np.float64(vals[i, qb, 0])
            v1 = np.float64(vals[i, qb, 1])
            v2 = np.float64(vals[i, qb, 2])
            v3 = np.float64(vals[i, qb, 3])
            for r in range(4):
                c = base + r * nb
                va = np.float64(vals[i, qa, r])
                u0 = va * v0
                u1 = va * v1
                u2 = va * v2
                u3 = va * v3
                a00 += u0 * w[0, c]
                a01 += u1 * w[0, c + 1]
                a02 += u2 * w[0, c + 2]
                a03 += u3 * w[0, c + 3]
                a10 += u0 * w[1, c]
                a11 += u1 * w[1, c + 1]
                a12 += u2 * w[1, c + 2]
                a13 += u3 * w[1, c + 3]
                a20 += u0 * w[2, c]
                a21 += u1 * w[2, c + 1]
                a22 += u2 * w[2, c + 2]
                a23 += u3 * w[2, c + 3]
        for s in range(inter.shape[0]):
            v = np.float64(zb[i, inter[s, 0]]) * np.float64(zb[i, inter[s, 1]])
            c = inter[s, 2]
            b0 += v * w[0, c]
            b1 += v * w[1, c]
            b2 += v * w[2, c]
        l0 = b0 + ((a00 + a01) + (a02 + a03))
        l1 = b1 + ((a10 + a11) + (a12 + a13))
        l2 = b2 + ((a20 + a21) + (a22 + a23))
        yi = y[i]
        wi = class_weight[yi]
        top = 0
        m = l0
        if l1 > m:
            top = 1
            m = l1
        if l2 > m:
            top = 2
            m = l2
        e0 = np.exp(l0 - m)
        e1 = np.exp(l1 - m)
        e2 = np.exp(l2 - m)
        total = e0 + e1 + e2
        ly = (l0 if yi == 0 else (l1 if yi == 1 else l2)) - m  # log-sum-exp form (see softmax_sums)
        loss -= wi * (ly - np.log(total))
        wsum += wi
        if top == yi:
            correct += wi
        inv = wi / total
        g0 = e0 * inv - (wi if yi == 0 else 0.0)
        g1 = e1 * inv - (wi if yi == 1 else 0.0)
        g2 = e2 * inv - (wi if yi == 2 else 0.0)
        # the gradient: only the columns the row touches
        for j in range(n_base):
            v = np.float64(zb[i, j])
            grad[0, j] += g0 * v
            grad[1, j] += g1 * v
            grad[2, j] += g2 * v
        for s in range(spline.shape[0]):
            q = spline[s, 0]
            c = spline[s, 1] + first[i, q]
            for t in range(4):
                v = np.float64(vals[i, q, t])
                grad[0, c + t] += g0 * v
                grad[1, c + t] += g1 * v
                grad[2, c + t] += g2 * v
        for s in range(tensor.shape[0]):
            qa = tensor[s, 0]
            qb = tensor[s, 1]
            nb = tensor[s, 3]
            base = tensor[s, 2] + first[i, qa] * nb + first[i, qb]
            v0 = np.float64(vals[i, qb, 0])
            v1 = np.float64(vals[i, qb, 1])
            v2 = np.float64(vals[i, qb, 2])
            v3 = np.float64(vals[i, qb, 3])
            for r in range(4):
                c = base + r * nb
                va = np.float64(vals[i, qa, r])
                h0 = g0 * va
                h1 = g1 * va
                h2 = g2 * va
                grad[0, c] += h0 * v0
                grad[0, c + 1] += h0 * v1
                grad[0, c + 2] += h0 * v2
                grad[0, c + 3] += h0 * v3
                grad[1, c] += h1 * v0
                grad[1, c + 1] += h1 * v1
                grad[1, c + 2] += h1 * v2
                grad[1, c + 3] += h1 * v3
                grad[2, c] += h2 * v0
                grad[2, c + 1] += h2 * v1
                grad[2, c + 2] += h2 * v2
                grad[2, c + 3] += h2 * v3
        for s in range(inter.shape[0]):
            v = np.float64(zb[i, inter[s, 0]]) * np.float64(zb[i, inter[s, 1]])
            c = inter[s, 2]
            grad[0, c] += g0 * v
            grad[1, c] += g1 * v
            grad[2, c] += g2 * v
        grad[0, d] += g0
        grad[1, d] += g1
        grad[2, d] += g2
    return loss, wsum, correct


@jit  # no fastmath: it lets LLVM square in float32
def compact_moments(zb, vals, first, spline, tensor, inter, total, total_sq):  # pragma: no cover - compiled
    """Add the column sums and sums of squares of the unscaled expanded features of compact rows (float64; only
    the non-zeros contribute) into ``total`` and ``total_sq``."""
    n = zb.shape[0]
    n_base = zb.shape[1]
    for i in range(n):
        for j in range(n_base):
            v = np.float64(zb[i, j])
            total[j] += v
            total_sq[j] += v * v
        for s in range(spline.shape[0]):
            q = spline[s, 0]
            c = spline[s, 1] + first[i, q]
            for t in range(4):
                v = np.float64(vals[i, q, t])
                total[c + t] += v
                total_sq[c + t] += v * v
        for s in range(tensor.shape[0]):
            qa = tensor[s, 0]
            qb = tensor[s, 1]
            nb = tensor[s, 3]
            base = tensor[s, 2] + first[i, qa] * nb + first[i, qb]
            for r in range(4):
                va = np.float64(vals[i, qa, r])
                for t in range(4):
                    v = va * np.float64(vals[i, qb, t])
                    total[base + r * nb + t] += v
                    total_sq[base + r * nb + t] += v * v
        for s in range(inter.shape[0]):
            v = np.float64(zb[i, inter[s, 0]]) * np.float64(zb[i, inter[s, 1]])
            total[inter[s, 2]] += v
            total_sq[inter[s, 2]] += v * v
