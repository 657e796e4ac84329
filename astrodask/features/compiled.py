"""Compiled scoring: a model's class probabilities row by row, in one pass, without the expanded features.

:func:`score_kernel` (numba, ``nogil``: Dask worker threads score their batches at the same time) does for
each row what ``FeatureSpec.linear`` followed by the link does for a block of rows (that NumPy path stays the
reference the kernel is tested against):

1. read the model's raw inputs, replacing a missing one (NaN) with the training median and setting its bit of
   the ``imputed`` mask (``schema.INPUT_BITS``);
2. the base features as ``spec.base_matrix`` makes them (bands, colours, ``asinh(z / REDSHIFT_SCALE)``) and
   their standardised values;
3. the non-zero values of each distinct B-spline basis (``splines.basis_parts``'s Cox-de Boor recursion, its
   denominators -- knot differences -- as reciprocals computed once per model);
4. the dot product with the weights, the scaler folded into them, block by block: standardised base features,
   spline bases, tensor products (only the (DEGREE+1)^2 non-zero products), interactions;
5. the link: softmax, or normalised sigmoids for a one-vs-rest model (or none: the logits).

All in float64: results equal the reference's to rounding (about 1e-15), not bit for bit
(tests/features/test_compiled.py holds them to 1e-6).

:func:`expand_kernel` shares steps 1-3 (:func:`_row_bases`) and writes the expanded features instead of
scoring them (``FeatureSpec.expand`` is its reference; the incremental mode's blocks).

:func:`score_kernel` runs steps 1-3 for CHUNK rows at a time (:func:`_bases_chunk`: the interval search and the
recursion vectorise over rows; the same values as :func:`_row_bases` to rounding), then steps 4-5 row by row.
:func:`compact_kernel` takes the same chunks and writes what a training row's gradient
needs -- the standardised base features and, per distinct basis, its DEGREE+1 non-zero values and the index of the
first -- a few hundred bytes instead of the expanded row (``learn.blocks``; :class:`Layout` says where each value
goes among the model's columns).

Everything the kernel needs about a model is in plain NumPy arrays (:class:`KernelParams`), built once per
model (``SoftmaxModel.kernel_params`` keeps them). Compiled code is cached beside this module (numba's
``cache=True``); where that directory is read-only numba uses the user's cache directory, and where there is no
writable one at all the kernel is compiled in each process (a few seconds, once, on first use).

The kernels are in one module because they share the per-row basis code (steps 1-3: :func:`_row_bases`,
:func:`_bases_chunk`), which must give every kernel the same values; that is why it is longer than most.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from .. import schema
from ..jit import jit
from .recipes import raw_columns
from .spec import REDSHIFT_SCALE
from .splines import DEGREE

# base feature kinds (column ``op[k, 0]``; ``op[k, 1]``, ``op[k, 2]`` are raw input indices)
RAW, DIFF, ASINH_Z = 0, 1, 2
# links
LOGITS, SOFTMAX, OVR = 0, 1, 2
_DEGREE = 3
"""features.DEGREE, written here: numba freezes globals into the compiled (and cached) code, and its cache is
invalidated only by changes to this file; kernel_params refuses a spec of another degree."""




@jit
def _row_bases(x, row, impute, bits, op, base_mean, base_std, basis_feat, knots, n_knots, redshift_scale, inv, raw,
               xb, zb, vals, first):
    """One row's imputed inputs (``raw``), base features (``xb``), standardised base features (``zb``) and the
    non-zero values of every distinct B-spline basis (``vals``, from column ``first``); returns its imputed
    mask. Used by :func:`expand_kernel`."""
    degree = _DEGREE
    n_raw = x.shape[0]
    n_base = op.shape[0]
    n_bases = basis_feat.shape[0]
    m = 0
    for c in range(n_raw):
        v = x[c, row]
        if np.isnan(v):
            v = impute[c]
            m |= bits[c]
        raw[c] = v
    for j in range(n_base):
        kind = op[j, 0]
        if kind == RAW:
            xb[j] = raw[op[j, 1]]
        elif kind == DIFF:
            xb[j] = raw[op[j, 1]] - raw[op[j, 2]]
        else:  # ASINH_Z
            xb[j] = math.asinh(raw[op[j, 1]] / redshift_scale)
        zb[j] = (xb[j] - base_mean[j]) / base_std[j]
    # the non-zero B-spline values of every distinct basis (splines.basis_parts, one row)
    for q in range(n_bases):
        lo = degree
        hi = n_knots[q] - degree - 2
        v = xb[basis_feat[q]]
        if v < knots[q, lo]:
            v = knots[q, lo]
        elif v > knots[q, hi + 1]:
            v = knots[q, hi + 1]
        i = lo
        for kk in range(lo + 1, hi + 1):
            i += v >= knots[q, kk]
        # Cox-de Boor for degree 3 in scalars: splines.basis_parts's recursion, its denominators (knot
        # differences, the same for every x in the interval) as precomputed reciprocals
        l1 = v - knots[q, i]
        l2 = v - knots[q, i - 1]
        l3 = v - knots[q, i - 2]
        r1 = knots[q, i + 1] - v
        r2 = knots[q, i + 2] - v
        r3 = knots[q, i + 3] - v
        d = inv[q, i]
        tmp = d[0]
        n0 = r1 * tmp
        n1 = l1 * tmp
        tmp = n0 * d[1]
        n0 = r1 * tmp
        saved = l2 * tmp
        tmp = n1 * d[2]
        n1 = r2 * tmp + saved
        n2 = l1 * tmp
        tmp = n0 * d[3]
        n0 = r1 * tmp
        saved = l3 * tmp
        tmp = n1 * d[4]
        n1 = r2 * tmp + saved
        saved = l2 * tmp
        tmp = n2 * d[5]
        n2 = r3 * tmp + saved
        vals[q, 0] = n0
        vals[q, 1] = n1
        vals[q, 2] = n2
        vals[q, 3] = l1 * tmp
        first[q] = i - degree
    return m


@jit
def _link(acc, link, out):
    """``out`` = the link of one row's class scores ``acc`` (overwritten): softmax, normalised sigmoids (OVR) or
    the scores themselves (LOGITS)."""
    k_cls = acc.shape[0]
    if link == SOFTMAX:
        top = acc[0]
        for k in range(1, k_cls):
            top = max(top, acc[k])
        total = 0.0
        for k in range(k_cls):
            acc[k] = math.exp(acc[k] - top)
            total += acc[k]
        for k in range(k_cls):
            out[k] = acc[k] / total
    elif link == OVR:
        total = 0.0
        for k in range(k_cls):
            acc[k] = 1.0 / (1.0 + math.exp(-acc[k]))
            total += acc[k]
        total = max(total, 1e-300)
        for k in range(k_cls):
            out[k] = acc[k] / total
    else:
        for k in range(k_cls):
            out[k] = acc[k]


@jit
def _chunk_scratch(n_raw, n_base, n_bases):
    """The per-chunk arrays :func:`_bases_chunk` fills (xb, zb, vals, first, mask, ood) and the open domain
    bounds (lo, hi: no row is out of domain) the kernels pass it."""
    return (np.empty((n_base, CHUNK)), np.empty((n_base, CHUNK)), np.empty((n_bases, _DEGREE + 1, CHUNK)),
            np.empty((n_bases, CHUNK), np.int64), np.empty(CHUNK, np.int64), np.empty(CHUNK, np.int64),
            np.full(n_raw, -np.inf), np.full(n_raw, np.inf))


@jit
def _dots3(start, m, zb, vals, first, spline, tensor, inter, w, bias, link, out):
    """:func:`_dots` for three classes: the three dot products in one pass over the model's blocks (each basis
    value read once for all classes; three independent sums instead of one chain at a time). Each class's sum takes
    the same terms in the same order as the general loop's, and the link is :func:`_link` too, so the results are
    the same bit for bit (tests/test_predict_io.py)."""
    degree = _DEGREE
    n_base = zb.shape[0]
    acc = np.empty(3)
    for r in range(m):
        a0 = bias[0]
        a1 = bias[1]
        a2 = bias[2]
        for j in range(n_base):
            v = zb[j, r]
            a0 += v * w[0, j]
            a1 += v * w[1, j]
            a2 += v * w[2, j]
        for s in range(spline.shape[0]):
            q = spline[s, 0]
            col = spline[s, 1] + first[q, r]
            for t in range(degree + 1):
                v = vals[q, t, r]
                a0 += v * w[0, col + t]
                a1 += v * w[1, col + t]
                a2 += v * w[2, col + t]
        for s in range(tensor.shape[0]):
            qa = tensor[s, 0]
            qb = tensor[s, 1]
            nb = tensor[s, 3]
            for u in range(degree + 1):
                col = tensor[s, 2] + (first[qa, r] + u) * nb + first[qb, r]
                p0 = 0.0
                p1 = 0.0
                p2 = 0.0
                for t in range(degree + 1):
                    v = vals[qb, t, r]
                    p0 += v * w[0, col + t]
                    p1 += v * w[1, col + t]
                    p2 += v * w[2, col + t]
                v = vals[qa, u, r]
                a0 += v * p0
                a1 += v * p1
                a2 += v * p2
        for s in range(inter.shape[0]):
            v = zb[inter[s, 0], r] * zb[inter[s, 1], r]
            c = inter[s, 2]
            a0 += v * w[0, c]
            a1 += v * w[1, c]
            a2 += v * w[2, c]
        acc[0] = a0
        acc[1] = a1
        acc[2] = a2
        _link(acc, link, out[start + r])


@jit
def _dots(start, m, zb, vals, first, spline, tensor, inter, w, bias, link, out):
    """Rows ``start .. start + m`` of ``out``: the link of each row's dot products with the weights, from the
    chunk's standardised base features and basis values (:func:`_bases_chunk`), one class at a time (a class's
    weights are contiguous)."""
    degree = _DEGREE  # a constant: LLVM unrolls the loops over the basis values
    k_cls = w.shape[0]
    n_base = zb.shape[0]
    acc = np.empty(k_cls)
    for r in range(m):
        for k in range(k_cls):
            a = bias[k]
            for j in range(n_base):
                a += zb[j, r] * w[k, j]
            for s in range(spline.shape[0]):
                q = spline[s, 0]
                col = spline[s, 1] + first[q, r]
                for t in range(degree + 1):
                    a += vals[q, t, r] * w[k, col + t]
            for s in range(tensor.shape[0]):  # only the (degree + 1)^2 non-zero products of the two bases
                qa = tensor[s, 0]
                qb = tensor[s, 1]
                nb = tensor[s, 3]
                for u in range(degree + 1):
                    col = tensor[s, 2] + (first[qa, r] + u) * nb + first[qb, r]
                    part = 0.0
                    for t in range(degree + 1):
                        part += vals[qb, t, r] * w[k, col + t]
                    a += vals[qa, u, r] * part
            for s in range(inter.shape[0]):
                a += zb[inter[s, 0], r] * zb[inter[s, 1], r] * w[k, inter[s, 2]]
            acc[k] = a
        _link(acc, link, out[start + r])


@jit
def score_kernel(x, impute, bits, op, base_mean, base_std, basis_feat, knots, n_knots, spline, tensor, inter,
                 w, bias, redshift_scale, inv, link, out, mask):
    """Score the rows of ``x`` (raw inputs x rows, float64, NaN = missing) into ``out`` (rows x classes) and
    ``mask`` (rows, uint16).

    ``impute``/``bits``: median and mask bit per raw input; ``op`` (base x 3): kind, raw a, raw b;
    ``base_mean``/``base_std``: the base scaler; ``basis_feat``/``knots``/``n_knots``: per distinct spline basis
    its base feature, (padded) knot vector and length; ``spline`` (n x 2): basis, first column; ``tensor``
    (n x 4): basis a, basis b, first column, size of basis b; ``inter`` (n x 3): base a, base b, column; ``w``
    (classes x features) and ``bias``: the weights with the scaler folded in; ``inv`` (bases x knots x 6): the
    reciprocal denominators of the recursion on each knot interval (:func:`_reciprocals`); ``link``: LOGITS,
    SOFTMAX or OVR.

    The bases of CHUNK rows at a time come from :func:`_bases_chunk` (its loops run over rows), then each row's
    dot products (:func:`_dots3` for astrodask's three classes, :func:`_dots` for any other number).
    """
    n = x.shape[1]
    xb, zb, vals, first, cmask, ood, lo, hi = _chunk_scratch(x.shape[0], op.shape[0], basis_feat.shape[0])
    for start in range(0, n, CHUNK):
        m = min(CHUNK, n - start)
        _bases_chunk(x, start, m, impute, bits, op, base_mean, base_std, basis_feat, knots, n_knots, redshift_scale,
                     inv, lo, hi, xb, zb, vals, first, cmask, ood)
        for r in range(m):
            mask[start + r] = cmask[r]
        if w.shape[0] == 3:
            _dots3(start, m, zb, vals, first, spline, tensor, inter, w, bias, link, out)
        else:
            _dots(start, m, zb, vals, first, spline, tensor, inter, w, bias, link, out)


@jit
def expand_kernel(x, impute, bits, op, base_mean, base_std, basis_feat, knots, n_knots, spline, tensor, inter,
                  redshift_scale, inv, out):
    """The unscaled expanded features of the rows of ``x`` (raw inputs x rows) into ``out`` (rows x features,
    float32, zero-filled by the caller: only the non-zero spline and tensor values are written), as
    ``FeatureSpec.expand(df, scaled=False)`` makes them. Arguments as :func:`score_kernel`'s."""
    n = x.shape[1]
    degree = _DEGREE
    n_base = op.shape[0]
    n_bases = basis_feat.shape[0]
    raw = np.empty(x.shape[0])
    xb = np.empty(n_base)
    zb = np.empty(n_base)
    vals = np.empty((n_bases, degree + 1))
    first = np.empty(n_bases, np.int64)
    for row in range(n):
        _row_bases(x, row, impute, bits, op, base_mean, base_std, basis_feat, knots, n_knots, redshift_scale, inv,
                   raw, xb, zb, vals, first)
        for j in range(n_base):
            out[row, j] = zb[j]
        for s in range(spline.shape[0]):
            q = spline[s, 0]
            col = spline[s, 1] + first[q]
            for r in range(degree + 1):
                out[row, col + r] = vals[q, r]
        for s in range(tensor.shape[0]):
            qa = tensor[s, 0]
            qb = tensor[s, 1]
            nb = tensor[s, 3]
            for r in range(degree + 1):
                col = tensor[s, 2] + (first[qa] + r) * nb + first[qb]
                for t in range(degree + 1):
                    out[row, col + t] = vals[qa, r] * vals[qb, t]
        for s in range(inter.shape[0]):
            out[row, inter[s, 2]] = zb[inter[s, 0]] * zb[inter[s, 1]]


CHUNK = 256
"""Rows whose bases :func:`_bases_chunk` computes together."""


@jit(fastmath={"contract"})
def _bases_chunk(x, start, m, impute, bits, op, base_mean, base_std, basis_feat, knots, n_knots, redshift_scale,
                 inv, lo, hi, xb, zb, vals, first, mask, ood):
    """:func:`_row_bases` of rows ``start .. start + m`` of ``x``, basis-major (``xb``/``zb`` base x CHUNK,
    ``vals`` bases x 4 x CHUNK, ``first`` bases x CHUNK), so the loops run over rows; also each row's imputed
    mask and its out-of-domain mask (bit set where the measured input lies outside ``lo``..``hi``)."""
    degree = _DEGREE
    n_raw = x.shape[0]
    n_base = op.shape[0]
    n_bases = basis_feat.shape[0]
    raw = np.empty((n_raw, CHUNK))
    for r in range(m):
        mask[r] = 0
        ood[r] = 0
    for c in range(n_raw):
        imp = impute[c]
        b = bits[c]
        low = lo[c]
        high = hi[c]
        for r in range(m):
            v = np.float64(x[c, start + r])
            if np.isnan(v):
                v = imp
                mask[r] |= b
            elif v < low or v > high:
                ood[r] |= b
            raw[c, r] = v
    for j in range(n_base):
        kind = op[j, 0]
        a = op[j, 1]
        bb = op[j, 2]
        mu = base_mean[j]
        sd = base_std[j]
        for r in range(m):
            if kind == RAW:
                v = raw[a, r]
            elif kind == DIFF:
                v = raw[a, r] - raw[bb, r]
            else:  # ASINH_Z
                v = math.asinh(raw[a, r] / redshift_scale)
            xb[j, r] = v
            zb[j, r] = (v - mu) / sd
    clipped = np.empty(CHUNK)
    interval = np.empty(CHUNK, np.int64)
    for q in range(n_bases):
        low_i = degree
        high_i = n_knots[q] - degree - 2
        f = basis_feat[q]
        tlo = knots[q, low_i]
        thi = knots[q, high_i + 1]
        for r in range(m):
            v = xb[f, r]
            clipped[r] = tlo if v < tlo else (thi if v > thi else v)
            interval[r] = low_i
        for kk in range(low_i + 1, high_i + 1):
            t = knots[q, kk]
            for r in range(m):
                interval[r] += clipped[r] >= t
        for r in range(m):  # _row_bases's recursion, the same operations in the same order
            i = interval[r]
            v = clipped[r]
            l1 = v - knots[q, i]
            l2 = v - knots[q, i - 1]
            l3 = v - knots[q, i - 2]
            r1 = knots[q, i + 1] - v
            r2 = knots[q, i + 2] - v
            r3 = knots[q, i + 3] - v
            tmp = inv[q, i, 0]
            n0 = r1 * tmp
            n1 = l1 * tmp
            tmp = n0 * inv[q, i, 1]
            n0 = r1 * tmp
            saved = l2 * tmp
            tmp = n1 * inv[q, i, 2]
            n1 = r2 * tmp + saved
            n2 = l1 * tmp
            tmp = n0 * inv[q, i, 3]
            n0 = r1 * tmp
            saved = l3 * tmp
            tmp = n1 * inv[q, i, 4]
            n1 = r2 * tmp + saved
            saved = l2 * tmp
            tmp = n2 * inv[q, i, 5]
            n2 = r3 * tmp + saved
            vals[q, 0, r] = n0
            vals[q, 1, r] = n1
            vals[q, 2, r] = n2
            vals[q, 3, r] = l1 * tmp
            first[q, r] = i - degree


@jit
def compact_kernel(x, impute, bits, op, base_mean, base_std, basis_feat, knots, n_knots, redshift_scale, inv,
                   zb_out, vals_out, first_out):
    """The compact training rows of ``x`` (raw inputs x rows, NaN = missing): ``zb_out`` (rows x base, float32)
    the standardised base features, ``vals_out`` (rows x bases x 4, float32) the non-zero values of each distinct
    basis and ``first_out`` (rows x bases, uint8) the index of the first (see :class:`Layout`)."""
    degree = _DEGREE
    n = x.shape[1]
    n_base = op.shape[0]
    n_bases = basis_feat.shape[0]
    xb, zb, vals, first, mask, ood, lo, hi = _chunk_scratch(x.shape[0], n_base, n_bases)
    for start in range(0, n, CHUNK):
        m = min(CHUNK, n - start)
        _bases_chunk(x, start, m, impute, bits, op, base_mean, base_std, basis_feat, knots, n_knots, redshift_scale,
                     inv, lo, hi, xb, zb, vals, first, mask, ood)
        for r in range(m):
            row = start + r
            for j in range(n_base):
                zb_out[row, j] = zb[j, r]
            for q in range(n_bases):
                first_out[row, q] = first[q, r]
                for t in range(degree + 1):
                    vals_out[row, q, t] = vals[q, t, r]


@dataclass(frozen=True, eq=False)
class KernelParams:
    """A model as the kernels' arguments: plain, contiguous NumPy arrays (see :func:`score_kernel`), and the raw
    input columns they read."""

    raw: tuple[str, ...]
    """Raw input columns, in the order of the rows of the kernel's ``x``."""
    link: int
    n_classes: int
    impute: np.ndarray
    bits: np.ndarray
    op: np.ndarray
    base_mean: np.ndarray
    base_std: np.ndarray
    basis_feat: np.ndarray
    knots: np.ndarray
    n_knots: np.ndarray
    spline: np.ndarray
    tensor: np.ndarray
    inter: np.ndarray
    w: np.ndarray
    bias: np.ndarray
    redshift_scale: float
    inv: np.ndarray

    def bases(self) -> tuple:
        """The arguments :func:`_row_bases` reads, in the kernels' order (``impute`` .. ``inter``)."""
        return (self.impute, self.bits, self.op, self.base_mean, self.base_std, self.basis_feat, self.knots,
                self.n_knots, self.spline, self.tensor, self.inter)


def kernel_params(spec, coef: np.ndarray, intercept: np.ndarray, link: str | None = None) -> KernelParams:
    """The kernel's arrays for a FeatureSpec and weights (``coef``: classes x features); ``link`` as in a
    model's ``info`` ("ovr" for normalised sigmoids, else softmax)."""
    if DEGREE != _DEGREE:
        raise ValueError(f"the kernel is compiled for degree {_DEGREE}, the features have degree {DEGREE}")
    raw = raw_columns(spec.feature_set)
    ridx = {c: k for k, c in enumerate(raw)}
    impute = np.array([spec.impute[c] for c in raw], np.float64)
    bits = np.array([1 << schema.INPUT_BITS.index(c) for c in raw], np.int64)
    op = np.full((len(spec.base), 3), -1, np.int64)
    for k, name in enumerate(spec.base):  # the cases of spec.base_matrix
        if name in schema.BANDS:
            op[k, :2] = RAW, ridx[name]
        elif name == "asinh_z":
            op[k, :2] = ASINH_Z, ridx[schema.REDSHIFT]
        else:
            a, b = name.split("-")
            op[k] = DIFF, ridx[a], ridx[b]
    base_idx = {b: k for k, b in enumerate(spec.base)}
    bases: dict = {}  # (feature, knots) -> basis index: tensors reuse the coarse bases, as FeatureSpec._blocks

    def basis(name, t):
        return bases.setdefault((name, np.asarray(t, np.float64).tobytes()), len(bases))

    col = len(spec.base)
    spline = []
    for b, t in spec.knots.items():
        spline.append((basis(b, t), col))
        col += len(t) - DEGREE - 1
    tensor = []
    for a, ta, b, tb in spec.tensors:
        na, nb = len(ta) - DEGREE - 1, len(tb) - DEGREE - 1
        tensor.append((basis(a, ta), basis(b, tb), col, nb))
        col += na * nb
    inter = []
    for a, b in spec.interactions:
        inter.append((base_idx[a], base_idx[b], col))
        col += 1
    if col != spec.n_features or np.shape(coef) != (len(intercept), col):
        raise ValueError(f"kernel layout has {col} columns, the spec {spec.n_features}; weights {np.shape(coef)}, "
                         f"intercept {np.shape(intercept)}")
    vectors = [np.frombuffer(key[1], np.float64) for key in bases]
    knots = np.zeros((len(vectors), max((len(t) for t in vectors), default=0)))
    for q, t in enumerate(vectors):
        knots[q, :len(t)] = t
    basis_feat = np.array([base_idx[key[0]] for key in bases], np.int64)
    n_knots = np.array([len(t) for t in vectors], np.int64)
    # the scaler folded into the weights exactly as FeatureSpec.linear folds it
    d = spec.n_features
    mean = np.zeros(d) if spec.mean is None else spec.mean
    w = np.asarray(coef, np.float64).T / (np.ones(d) if spec.scale is None else spec.scale)[:, None]
    bias = np.asarray(intercept, np.float64) - mean @ w

    def table(rows, width):
        return np.array(rows, np.int64).reshape(len(rows), width)

    return KernelParams(raw=raw, link=OVR if link == "ovr" else SOFTMAX, n_classes=len(bias), impute=impute,
                        bits=bits, op=op, base_mean=np.ascontiguousarray(spec.base_mean, np.float64),
                        base_std=np.ascontiguousarray(spec.base_std, np.float64), basis_feat=basis_feat, knots=knots,
                        n_knots=n_knots, spline=table(spline, 2), tensor=table(tensor, 4), inter=table(inter, 3),
                        w=np.ascontiguousarray(w.T), bias=np.ascontiguousarray(bias),
                        redshift_scale=float(REDSHIFT_SCALE), inv=_reciprocals(knots, n_knots))


_RECURSION_KNOTS = ((1, 0), (1, -1), (2, 0), (1, -2), (2, -1), (3, 0))
"""The denominators of the degree-3 Cox-de Boor recursion on knot interval i, in the kernel's order:
t[i + a] - t[i + b] for (a, b) here (levels j = 1, 2, 2, 3, 3, 3)."""


def _reciprocals(knots: np.ndarray, n_knots: np.ndarray) -> np.ndarray:
    """(bases x knots x 6) 1 / denominator of the recursion on each non-empty knot interval of each basis."""
    out = np.ones((knots.shape[0], knots.shape[1], len(_RECURSION_KNOTS)))
    for q in range(knots.shape[0]):
        t = knots[q, :n_knots[q]]
        for i in range(_DEGREE, n_knots[q] - _DEGREE - 1):  # interior knots strictly increase: all > 0
            out[q, i] = [1.0 / (t[i + a] - t[i + b]) for a, b in _RECURSION_KNOTS]
    return out


CHUNK_ROWS = 65536
"""Rows converted to the kernel's float64 input at a time, so the copy stays small (a few MB) for any frame."""


def _chunks(params: KernelParams, df):
    """(start, stop, inputs x rows float64) of ``df`` (a frame, or a pyarrow Table/RecordBatch) in CHUNK_ROWS
    pieces, read as spec.base_matrix reads them (float64, missing -> NaN), each input copied contiguously."""
    cols = [df[c] for c in params.raw]
    for start in range(0, len(df), CHUNK_ROWS):
        stop = min(len(df), start + CHUNK_ROWS)
        x = np.empty((len(cols), stop - start))
        for k, col in enumerate(cols):
            x[k] = schema.float64_values(col, start, stop)
        yield start, stop, x


def score(params: KernelParams, df, logits: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, or the logits with ``logits``: rows x classes float64; imputed mask: rows uint16) of the
    rows of ``df``, as ``SoftmaxModel.reference_predict_proba``/``reference_decision_function`` and
    ``features.imputed_mask`` give them."""
    n = len(df)
    out = np.empty((n, params.n_classes))
    mask = np.empty(n, np.uint16)
    link = LOGITS if logits else params.link
    for start, stop, x in _chunks(params, df):
        score_kernel(x, *params.bases(), params.w, params.bias, params.redshift_scale, params.inv, link,
                     out[start:stop], mask[start:stop])
    return out, mask


def input_matrix(raw: tuple[str, ...], columns) -> np.ndarray:
    """The kernels' ``x`` (inputs x rows, NaN = missing) from ``columns`` (input name -> a NumPy array, a pandas
    Series or an Arrow array): float32 when every input is float32 (a dataset's magnitudes: no copy wider than
    the data), else float64."""
    import pandas as pd

    arrays = []
    for c in raw:
        v = columns[c]
        if isinstance(v, pd.Series):  # NA -> NaN
            v = v.to_numpy(dtype=np.float32 if v.dtype == np.float32 else np.float64, na_value=np.nan)
        elif isinstance(v, pa.ChunkedArray):
            v = v.to_numpy()  # nulls of a float column become NaN
        elif isinstance(v, pa.Array):
            v = v.to_numpy(zero_copy_only=False)
        arrays.append(np.asarray(v))
    dtype = np.float32 if all(a.dtype == np.float32 for a in arrays) else np.float64
    x = np.empty((len(raw), len(arrays[0]) if arrays else 0), dtype)
    for k, a in enumerate(arrays):
        x[k] = a
    return x


@dataclass(frozen=True, eq=False)
class Layout:
    """Where the values of a compact training row go among a spec's expanded columns (and the spec's scaler),
    for the gradient kernels of ``learn.loss_kernel``.

    A compact row holds ``zb`` (the n_base standardised base features: the first n_base columns), and for each
    distinct B-spline basis q its DEGREE+1 non-zero values and the index ``first`` of the first. ``spline`` (n x 2:
    basis, first column), ``tensor`` (n x 4: basis a, basis b, first column, size of basis b) and ``inter`` (n x 3:
    base a, base b, column) say which columns they make, as in :func:`score_kernel`.
    """

    params: KernelParams
    """The spec's kernel arrays (zero weights): what :func:`compact_kernel` reads."""
    n_base: int
    n_bases: int
    n_features: int
    mean: np.ndarray
    """The expanded features' scaler (0 and 1 before it is fitted), float64."""
    scale: np.ndarray

    @property
    def row_bytes(self) -> int:
        """Bytes of one compact row: float32 base features, float32 basis values, uint8 first index, int8
        label."""
        return 4 * self.n_base + self.n_bases * (4 * (_DEGREE + 1) + 1) + 1


def layout(spec) -> Layout:
    """The compact layout of a FeatureSpec."""
    d = spec.n_features
    params = kernel_params(spec, np.zeros((1, d)), np.zeros(1))
    widest = int(params.n_knots.max(initial=0)) - _DEGREE - 1  # bases of the largest basis
    if widest > 256:
        raise ValueError(f"a basis of {widest} functions: the compact rows index at most 256")
    mean = np.zeros(d) if spec.mean is None else np.asarray(spec.mean, np.float64)
    scale = np.ones(d) if spec.scale is None else np.asarray(spec.scale, np.float64)
    return Layout(params, len(spec.base), len(params.basis_feat), d, mean, scale)


def compact(lay: Layout, columns) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(zb, vals, first) of the rows of ``columns`` (a frame, or input name -> array: :func:`input_matrix`) by
    :func:`compact_kernel`, CHUNK_ROWS rows at a time."""
    p = lay.params
    n = len(columns[p.raw[0]]) if p.raw else 0
    zb = np.empty((n, lay.n_base), np.float32)
    vals = np.empty((n, lay.n_bases, _DEGREE + 1), np.float32)
    first = np.empty((n, lay.n_bases), np.uint8)
    for start in range(0, n, CHUNK_ROWS):
        stop = min(n, start + CHUNK_ROWS)
        x = input_matrix(p.raw, {c: _rows(columns[c], start, stop) for c in p.raw})
        compact_kernel(x, p.impute, p.bits, p.op, p.base_mean, p.base_std, p.basis_feat, p.knots, p.n_knots,
                       p.redshift_scale, p.inv, zb[start:stop], vals[start:stop], first[start:stop])
    return zb, vals, first


def _rows(v, start: int, stop: int):
    return v.iloc[start:stop] if hasattr(v, "iloc") else v[start:stop]


def expand(spec, df) -> np.ndarray:
    """``spec.expand(df, scaled=False)`` (the NumPy reference) by :func:`expand_kernel`: rows x features,
    float32."""
    params = kernel_params(spec, np.zeros((1, spec.n_features)), np.zeros(1))
    out = np.zeros((len(df), spec.n_features), np.float32)
    for start, stop, x in _chunks(params, df):
        expand_kernel(x, *params.bases(), params.redshift_scale, params.inv, out[start:stop])
    return out


_warm = threading.Event()
_warm_lock = threading.Lock()


def warm_up() -> None:
    """Compile the kernel (or load it from numba's cache) now, once per process, on a few dummy rows."""
    if _warm.is_set():
        return
    with _warm_lock:
        if _warm.is_set():
            return
        import pandas as pd

        from .spec import FeatureSpec

        spec = FeatureSpec(feature_set="photometric", base=("u", "g-r"), impute=dict.fromkeys(schema.BANDS, 20.0),
                           base_mean=np.zeros(2), base_std=np.ones(2),
                           knots={"g-r": np.array([0.0] * 4 + [0.5] + [1.0] * 4)},
                           tensors=(("u", np.array([15.0] * 4 + [25.0] * 4), "g-r", np.array([0.0] * 4 + [1.0] * 4)),),
                           interactions=(("u", "g-r"),))
        coef = np.zeros((len(schema.CLASSES), spec.n_features))
        rows = pd.DataFrame({c: [20.0, np.nan] for c in schema.BANDS})
        score(kernel_params(spec, coef, np.zeros(len(schema.CLASSES))), rows)
        expand(spec, rows)
        _warm.set()
