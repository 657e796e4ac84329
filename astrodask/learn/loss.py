"""The softmax (multinomial logistic) loss and its gradient: of one block of rows, and the regularised objective.

Pure NumPy, no Dask: a worker computes :func:`block_sums` of its rows, the sums of all blocks are added
(:meth:`LossSums.__add__`, mergeable in any grouping) and the client turns the total into the objective that
L-BFGS minimises (:func:`objective`): mean weighted log-loss + l2/2 * |W|^2 (the intercept is not penalised).
Spark MLlib's ``RDDLossFunction`` has the same shape: a per-partition aggregator, a tree merge, the
regularisation added on the driver.

``theta`` is (classes, features + 1): the coefficients, then the intercept in the last column.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LossSums:
    """Mergeable sums over a set of rows at one ``theta``."""

    loss: float
    """Sum of w * -log p(true class)."""
    grad: np.ndarray
    """Sum of the gradients of the weighted loss with respect to theta, (classes, features + 1)."""
    weight: float
    """Sum of the row weights."""
    correct: float
    """Sum of the weights of the rows whose most probable class is the true one."""

    @classmethod
    def zero(cls, shape) -> LossSums:
        return cls(0.0, np.zeros(shape), 0.0, 0.0)

    def __add__(self, other: LossSums) -> LossSums:
        return LossSums(self.loss + other.loss, self.grad + other.grad, self.weight + other.weight,
                        self.correct + other.correct)

    @property
    def mean_loss(self) -> float | None:
        return self.loss / self.weight if self.weight else None

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.weight if self.weight else None


@dataclass(frozen=True)
class SplitSums:
    """The sums of the training rows and of the validation rows (early stopping) at one ``theta``."""

    train: LossSums
    valid: LossSums

    def __add__(self, other: SplitSums) -> SplitSums:
        return SplitSums(self.train + other.train, self.valid + other.valid)


def block_sums(x: np.ndarray, y: np.ndarray, w: np.ndarray, theta: np.ndarray) -> LossSums:
    """Weighted softmax loss, gradient, weight and correct-weight sums of one block, in one compiled pass
    (``loss_kernel.softmax_sums``; :func:`block_sums_numpy` is the reference it is tested against).

    ``x`` (rows, features) float32 (the persisted blocks) or float64; sums in float64. ``y`` class indices,
    ``w`` row weights.
    """
    from .loss_kernel import softmax_sums

    g = np.zeros(theta.shape)
    if len(y) == 0:
        return LossSums(0.0, g, 0.0, 0.0)
    theta = np.asarray(theta, np.float64)
    loss, weight, correct = softmax_sums(np.ascontiguousarray(x), np.asarray(y), np.asarray(w),
                                         np.ascontiguousarray(theta[:, :-1]), np.ascontiguousarray(theta[:, -1]), g)
    return LossSums(float(loss), g, float(weight), float(correct))


def compact_block_sums(zb: np.ndarray, vals: np.ndarray, first: np.ndarray, y: np.ndarray, class_weight: np.ndarray,
                       theta: np.ndarray, lay) -> LossSums:
    """:func:`block_sums` of compact rows (``features.compiled.compact``; ``lay`` their ``Layout``), row weights
    ``class_weight[y]``, by ``loss_kernel.compact_sums``: the same sums as the standardised dense block gives.

    The kernel works on the unscaled features U; with X = (U - m) / s the standardised ones (``lay.mean``,
    ``lay.scale``) and theta = [W | b] in X's space, the logits are b' + W' U with W' = W / s and
    b' = b - W' m, and dL/dW = (G - R m) / s, dL/db = R, where G = sum_i r_i U_i and R = sum_i r_i
    (r_i = w_i (p_i - onehot(y_i))).
    """
    from .loss_kernel import compact_sums

    if theta.shape[0] != 3:
        raise ValueError(f"the compact kernel is written for 3 classes, theta has {theta.shape[0]}")
    theta = np.asarray(theta, np.float64)
    w = theta[:, :-1] / lay.scale
    bias = theta[:, -1] - w @ lay.mean
    g = np.zeros(theta.shape)
    if len(y) == 0:
        return LossSums(0.0, g, 0.0, 0.0)
    p = lay.params
    loss, weight, correct = compact_sums(zb, vals, first, y, np.asarray(class_weight, np.float64), p.spline, p.tensor,
                                         p.inter, np.ascontiguousarray(w), bias, g)
    r = g[:, -1].copy()
    g[:, :-1] -= r[:, None] * lay.mean
    g[:, :-1] /= lay.scale
    return LossSums(float(loss), g, float(weight), float(correct))


def block_sums_numpy(x: np.ndarray, y: np.ndarray, w: np.ndarray, theta: np.ndarray) -> LossSums:
    """:func:`block_sums` in NumPy (the reference): the products run in ``x``'s precision, the softmax in
    float64."""
    if len(y) == 0:
        return LossSums.zero(theta.shape)
    coef = theta[:, :-1].astype(x.dtype)
    logits = (x @ coef.T).astype(np.float64) + theta[:, -1]
    logits -= logits.max(axis=1, keepdims=True)
    lse = np.log(np.exp(logits).sum(axis=1))
    rows = np.arange(len(y))
    logp_true = logits[rows, y] - lse
    p = np.exp(logits - lse[:, None])
    correct = float(w[p.argmax(axis=1) == y].sum())
    r = p
    r[rows, y] -= 1.0
    r *= w[:, None]
    g = np.empty(theta.shape)
    # x.T @ r, not r.T @ x: BLAS is several times faster with the long dimension contiguous in both operands
    g[:, :-1] = (x.T @ r.astype(x.dtype)).T
    g[:, -1] = r.sum(axis=0)
    return LossSums(float(-(w * logp_true).sum()), g, float(w.sum()), correct)


def objective(sums: LossSums, theta: np.ndarray, l2: float) -> tuple[float, np.ndarray]:
    """(mean weighted log-loss + l2/2 |W|^2, its gradient) from the summed training rows; W excludes the
    intercept."""
    wsum = max(sums.weight, 1e-300)
    f = sums.loss / wsum + 0.5 * l2 * float((theta[:, :-1] ** 2).sum())
    g = sums.grad / wsum
    g[:, :-1] += l2 * theta[:, :-1]
    return f, g
