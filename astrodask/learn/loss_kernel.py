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
    weights in U's space. Returns (loss, weight, correct) sums.

    The spline and tensor columns are addressed in the flat ``w`` and ``grad`` by unsigned offsets: numba then
    adds no negative-index test to each access, and LLVM sees the 4 consecutive columns of a basis as one
    vector (~10 % faster than 2-d signed indexing)."""
    if not (w.flags.c_contiguous and grad.flags.c_contiguous):
        raise ValueError("w and grad must be C-contiguous (they are addressed flat)")
    n = zb.shape[0]
    n_base = zb.shape[1]
    d = w.shape[1]
    one, two, three = np.uint64(1), np.uint64(2), np.uint64(3)
    w_row, g_row = np.uint64(d), np.uint64(d + 1)  # class k's row starts at k * w_row (k * g_row) in the flat arrays
    wf = w.ravel()
    gf = grad.ravel()
    sp_basis, sp_col = spline[:, 0].astype(np.uint64), spline[:, 1].astype(np.uint64)
    t_a, t_b = tensor[:, 0].astype(np.uint64), tensor[:, 1].astype(np.uint64)
    t_col, t_nb = tensor[:, 2].astype(np.uint64), tensor[:, 3].astype(np.uint64)
    loss = 0.0
    wsum = 0.0
    correct = 0.0
    for i in range(n):
        zi = zb[i]
        fi = first[i]
        vi = vals[i]
        # logits: 12 independent running sums (4 lanes x 3 classes), so the loop is not one dependent chain
        a00 = a01 = a02 = a03 = 0.0
        a10 = a11 = a12 = a13 = 0.0
        a20 = a21 = a22 = a23 = 0.0
        b0 = bias[0]
        b1 = bias[1]
        b2 = bias[2]
        for j in range(n_base):
            v = np.float64(zi[j])
            b0 += v * w[0, j]
            b1 += v * w[1, j]
            b2 += v * w[2, j]
        for s in range(sp_basis.shape[0]):
            q = sp_basis[s]
            c = sp_col[s] + np.uint64(fi[q])
            v0 = np.float64(vi[q, 0])
            v1 = np.float64(vi[q, 1])
            v2 = np.float64(vi[q, 2])
            v3 = np.float64(vi[q, 3])
            a00 += v0 * wf[c]
            a01 += v1 * wf[c + one]
            a02 += v2 * wf[c + two]
            a03 += v3 * wf[c + three]
            c += w_row
            a10 += v0 * wf[c]
            a11 += v1 * wf[c + one]
            a12 += v2 * wf[c + two]
            a13 += v3 * wf[c + three]
            c += w_row
            a20 += v0 * wf[c]
            a21 += v1 * wf[c + one]
            a22 += v2 * wf[c + two]
            a23 += v3 * wf[c + three]
        for s in range(t_a.shape[0]):
            qa = t_a[s]
            qb = t_b[s]
            nb = t_nb[s]
            row = t_col[s] + np.uint64(fi[qa]) * nb + np.uint64(fi[qb])
            v0 = np.float64(vi[qb, 0])
            v1 = np.float64(vi[qb, 1])
            v2 = np.float64(vi[qb, 2])
            v3 = np.float64(vi[qb, 3])
            for r in range(4):
                va = np.float64(vi[qa, r])
                u0 = va * v0
                u1 = va * v1
                u2 = va * v2
                u3 = va * v3
                c = row
                a00 += u0 * wf[c]
                a01 += u1 * wf[c + one]
                a02 += u2 * wf[c + two]
                a03 += u3 * wf[c + three]
                c += w_row
                a10 += u0 * wf[c]
                a11 += u1 * wf[c + one]
                a12 += u2 * wf[c + two]
                a13 += u3 * wf[c + three]
                c += w_row
                a20 += u0 * wf[c]
                a21 += u1 * wf[c + one]
                a22 += u2 * wf[c + two]
                a23 += u3 * wf[c + three]
                row += nb
        for s in range(inter.shape[0]):
            v = np.float64(zi[inter[s, 0]]) * np.float64(zi[inter[s, 1]])
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
            v = np.float64(zi[j])
            grad[0, j] += g0 * v
            grad[1, j] += g1 * v
            grad[2, j] += g2 * v
        for s in range(sp_basis.shape[0]):
            q = sp_basis[s]
            c = sp_col[s] + np.uint64(fi[q])
            v0 = np.float64(vi[q, 0])
            v1 = np.float64(vi[q, 1])
            v2 = np.float64(vi[q, 2])
            v3 = np.float64(vi[q, 3])
            gf[c] += g0 * v0
            gf[c + one] += g0 * v1
            gf[c + two] += g0 * v2
            gf[c + three] += g0 * v3
            c += g_row
            gf[c] += g1 * v0
            gf[c + one] += g1 * v1
            gf[c + two] += g1 * v2
            gf[c + three] += g1 * v3
            c += g_row
            gf[c] += g2 * v0
            gf[c + one] += g2 * v1
            gf[c + two] += g2 * v2
            gf[c + three] += g2 * v3
        for s in range(t_a.shape[0]):
            qa = t_a[s]
            qb = t_b[s]
            nb = t_nb[s]
            row = t_col[s] + np.uint64(fi[qa]) * nb + np.uint64(fi[qb])
            v0 = np.float64(vi[qb, 0])
            v1 = np.float64(vi[qb, 1])
            v2 = np.float64(vi[qb, 2])
            v3 = np.float64(vi[qb, 3])
            for r in range(4):
                va = np.float64(vi[qa, r])
                h0 = g0 * va
                h1 = g1 * va
                h2 = g2 * va
                c = row
                gf[c] += h0 * v0
                gf[c + one] += h0 * v1
                gf[c + two] += h0 * v2
                gf[c + three] += h0 * v3
                c += g_row
                gf[c] += h1 * v0
                gf[c + one] += h1 * v1
                gf[c + two] += h1 * v2
                gf[c + three] += h1 * v3
                c += g_row
                gf[c] += h2 * v0
                gf[c + one] += h2 * v1
                gf[c + two] += h2 * v2
                gf[c + three] += h2 * v3
                row += nb
        for s in range(inter.shape[0]):
            v = np.float64(zi[inter[s, 0]]) * np.float64(zi[inter[s, 1]])
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
