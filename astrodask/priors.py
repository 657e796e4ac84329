"""Class priors of the population being classified: Bayes' rule on a model's probabilities, and their estimate.

A model's probabilities assume the class fractions of its training rows (``TrainingDomain.priors``; SDSS17 is
59 % GALAXY, 19 % QSO, 22 % STAR, a spectroscopic sample's selection, not the sky's). For a target population with
fractions ``pi'`` the posterior is p'(k|x) proportional to p(k|x) pi'_k / pi_k (Bayes' rule, no retraining).

When the target fractions are unknown they are estimated on the classified rows themselves by EM (Saerens,
Latinne & Decaestecker, Neural Computation 14, 2002): alternate the re-weighted posteriors and their mean until the
priors stop changing. The rows never leave the workers: each partition sends :class:`PriorSums`, a fixed-size
histogram of its probability vectors (counts and summed probabilities in cells of the log-ratio plane), the sums
of all partitions are added, and EM runs on the summed cells. It estimates a change of class mix; it cannot see
a change of the inputs themselves (fainter objects than the training rows), for which ``out_of_domain`` speaks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from . import schema
from .errors import ConfigError

ESTIMATE = "estimate"
"""The ``priors`` value that estimates the target priors on the classified rows (EM)."""
K = len(schema.CLASSES)
CELLS = 200
"""Bins per axis of the log-ratio histogram (log p_k - log p_STAR for GALAXY and QSO, clipped to +-CLIP)."""
CLIP = 12.0
TOL = 1e-6
"""EM stops when no prior changes by more than this between iterations..."""
MAX_ITER = 1000
"""...or after this many iterations (then the estimate is reported as not converged)."""


def parse(value) -> tuple[float, ...] | str | None:
    """``None``, ``"estimate"``, or the target class fractions in ``schema.CLASSES`` order from
    ``"GALAXY=0.55,QSO=0.15,STAR=0.30"`` or a mapping; ConfigError for anything else."""
    if value is None or value == ESTIMATE:
        return value
    if isinstance(value, str):
        pairs = {}
        for item in value.split(","):
            name, sep, number = item.partition("=")
            if not sep:
                raise ConfigError("priors", f"cannot read {item.strip()!r}",
                                  "give CLASS=FRACTION for every class, e.g. GALAXY=0.55,QSO=0.15,STAR=0.30, or "
                                  "estimate")
            pairs[name.strip().upper()] = number.strip()
        value = pairs
    if not isinstance(value, dict):
        raise ConfigError("priors", f"must be class fractions or {ESTIMATE!r}, got {type(value).__name__}",
                          "give e.g. GALAXY=0.55,QSO=0.15,STAR=0.30")
    given = {str(k).upper(): v for k, v in value.items()}
    if sorted(given) != sorted(schema.CLASSES):
        raise ConfigError("priors", f"gives {', '.join(sorted(given)) or 'no class'}",
                          f"give a fraction for each of {', '.join(schema.CLASSES)}")
    try:
        out = tuple(float(given[c]) for c in schema.CLASSES)
    except (TypeError, ValueError):
        raise ConfigError("priors", "a fraction is not a number", "give e.g. GALAXY=0.55,QSO=0.15,STAR=0.30") from None
    if not all(np.isfinite(p) and 0 < p <= 1 for p in out):
        raise ConfigError("priors", "every fraction must be above 0 and at most 1",
                          "give each class a fraction in (0, 1]")
    if abs(sum(out) - 1.0) > 1e-6:
        raise ConfigError("priors", f"the fractions sum to {sum(out):.6g}, not 1", "make them add up to 1")
    return out


def apply(proba: np.ndarray, train_priors: np.ndarray, target) -> np.ndarray:
    """Bayes' rule: ``proba`` (rows, classes) re-weighted from ``train_priors`` (rows, classes: the priors of the
    path that scored each row, ``SoftmaxModel.priors_of``) to ``target`` (classes)."""
    p = proba * (np.asarray(target, np.float64) / np.maximum(train_priors, 1e-300))
    return p / np.maximum(p.sum(axis=1, keepdims=True), 1e-300)


def _cells(proba: np.ndarray) -> np.ndarray:
    logp = np.log(np.clip(proba, 1e-300, None))
    star = schema.CLASSES.index("STAR")
    ax = [k for k in range(K) if k != star]
    ratio = np.clip(logp[:, ax] - logp[:, [star]], -CLIP, CLIP)
    b = np.minimum(((ratio + CLIP) / (2 * CLIP) * CELLS).astype(np.int64), CELLS - 1)
    return b[:, 0] * CELLS + b[:, 1]


def _empty() -> np.ndarray:
    return np.zeros((2, CELLS * CELLS, K + 1))


@dataclass(frozen=True)
class PriorSums:
    """Mergeable (``+``) histogram of probability vectors, per scoring path: in each cell the row count and the
    summed probabilities. Fixed size whatever the rows."""

    cells: np.ndarray = field(default_factory=_empty)
    """(path: spectroscopic, photometric; cell; count and K summed probabilities)."""

    def __add__(self, other: PriorSums) -> PriorSums:
        return PriorSums(self.cells + other.cells)

    @property
    def rows(self) -> int:
        return int(self.cells[:, :, 0].sum())


def sums_of(proba: np.ndarray, photometric: np.ndarray | None = None) -> PriorSums:
    """The histogram of one block's probabilities (``photometric``: which path scored each row)."""
    out = _empty()
    path = np.zeros(len(proba), np.int64) if photometric is None else np.asarray(photometric, bool).astype(np.int64)
    cell = _cells(proba)
    for j in range(2):
        sel = path == j
        np.add.at(out[j, :, 0], cell[sel], 1.0)
        for k in range(K):
            np.add.at(out[j, :, 1 + k], cell[sel], proba[sel, k])
    return PriorSums(out)


class Estimate(NamedTuple):
    """The EM estimate of the target priors."""

    priors: tuple[float, ...]
    iterations: int
    converged: bool
    rows: int


def estimate(sums: PriorSums, train_priors: tuple[np.ndarray, np.ndarray]) -> Estimate:
    """EM on the summed histogram: ``train_priors`` (the spectroscopic path's, the photometric path's) are what
    each path's probabilities assume; starts from the rows' mean training priors."""
    c = sums.cells
    counts = c[:, :, 0]
    keep = counts > 0
    n = counts.sum()
    if n == 0:
        raise ConfigError("priors", "there are no rows to estimate them on", "classify a dataset with rows")
    mean_p = np.zeros_like(c[:, :, 1:])
    mean_p[keep] = c[:, :, 1:][keep] / counts[keep][:, None]
    train = np.stack([np.asarray(p, np.float64) for p in train_priors])  # (path, classes)
    pi = (counts.sum(axis=1) @ train) / n
    for it in range(1, MAX_ITER + 1):
        q = mean_p * (pi / np.maximum(train, 1e-300))[:, None, :]
        q /= np.maximum(q.sum(axis=2, keepdims=True), 1e-300)
        new = (q * counts[:, :, None]).sum(axis=(0, 1)) / n
        if np.abs(new - pi).max() < TOL:
            return Estimate(tuple(float(x) for x in new), it, True, int(n))
        pi = new
    return Estimate(tuple(float(x) for x in pi), MAX_ITER, False, int(n))
