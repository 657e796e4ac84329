"""Incremental mode: the library baseline, dask-ml ``Incremental(SGDClassifier(loss="log_loss"))``.

dask-ml calls ``partial_fit`` on one block at a time. The rows are first spread over the blocks by a hash of
their id on the workers (:func:`shuffled_blocks`: partitions may be sorted by sky position, so they are not
IID); dask-ml has no epochs, so each epoch permutes the rows within each block and the order of the blocks and
calls ``partial_fit`` over all blocks once. After every epoch the softmax loss of the SGD weights is measured on
the same blocks (the common yardstick of the epoch loop). The optimiser's state for the checkpoint is the
weights and scikit-learn's step counter ``t_``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from .. import schema
from ..dataset import SplitRule, hash64
from ..features import FeatureSpec, raw_columns
from . import blocks
from .loop import EpochStats, OptimiserState
from .loss import SplitSums

K = len(schema.CLASSES)
SHUFFLE_SALT = 0x5EED


def _block_ids(ids: pd.Series, n: int, salt: int) -> pd.Series:
    return pd.Series((hash64(ids.to_numpy(), salt) % np.uint64(n)).astype(np.int64), index=ids.index)


def shuffled_blocks(backend, ds, spec: FeatureSpec, weights: np.ndarray, rule: SplitRule, seed: int) -> list:
    """Feature blocks (futures) of rows spread over as many blocks as the dataset has files, by a hash of their
    id: after this shuffle on the workers every block is a random sample of the whole catalogue."""
    cols = [schema.ID, schema.CLASS, *raw_columns(spec.feature_set)]
    ddf = ds.to_dask(columns=list(dict.fromkeys(cols)))
    n = ddf.npartitions
    ddf = ddf.assign(_block=ddf[schema.ID].map_partitions(_block_ids, n, SHUFFLE_SALT + seed, meta=(None, "int64")))
    parts = backend.client.compute(ddf.shuffle(on="_block", npartitions=n).to_delayed())
    return backend.map(blocks.frame_block, parts, "features: shuffle", spec=spec, weights=weights, rule=rule)


class IncrementalOptimiser:
    """dask-ml Incremental SGD over persisted, shuffled blocks, one ``partial_fit`` pass per epoch."""

    label = "train (incremental)"

    def __init__(self, backend, shuffled: list, evaluate: Callable[[np.ndarray], SplitSums], n_features: int,
                 weights: np.ndarray, l2: float, learning_rate: str, eta0: float, seed: int,
                 balanced: bool):
        from dask_ml.wrappers import Incremental
        from sklearn.linear_model import SGDClassifier

        self.backend, self.evaluate, self.d, self.seed = backend, evaluate, n_features, seed
        sizes = backend.gather(backend.map(blocks.n_train, shuffled))
        self.nonempty = [(b, n) for b, n in zip(shuffled, sizes) if n]
        cw = {k: float(weights[k]) for k in range(K)} if balanced else None
        self.sgd = SGDClassifier(loss="log_loss", penalty="l2", alpha=max(l2, 1e-12), learning_rate=learning_rate,
                                 eta0=eta0, random_state=seed, class_weight=cw, average=False)
        self.inc = Incremental(self.sgd, shuffle_blocks=True, random_state=seed, scoring=None)
        self._theta = np.zeros((K, n_features + 1))

    def start(self) -> None:
        pass  # the first partial_fit initialises the SGD state

    def epoch(self, n: int) -> EpochStats:
        import dask.array as da
        from dask import delayed

        client = self.backend.client
        perm = [client.submit(blocks.permuted, b, self.seed * 100003 + n * 7919 + i, pure=False)
                for i, (b, _) in enumerate(self.nonempty)]
        xs = [da.from_delayed(delayed(_first)(f), shape=(m, self.d), dtype=np.float32)
              for f, (_, m) in zip(perm, self.nonempty)]
        ys = [da.from_delayed(delayed(_second)(f), shape=(m,), dtype=np.int8) for f, (_, m) in zip(perm, self.nonempty)]
        self.inc.random_state = self.seed + n
        self.inc.partial_fit(da.concatenate(xs), da.concatenate(ys), classes=np.arange(K))
        est = self.inc.estimator_
        self._theta = np.column_stack([est.coef_, est.intercept_])
        return EpochStats(self._theta, self.evaluate(self._theta))

    @property
    def converged(self) -> bool:
        return False

    @property
    def theta(self) -> np.ndarray:
        return self._theta

    def state(self) -> OptimiserState:
        est = getattr(self.inc, "estimator_", None)
        return OptimiserState({"theta": self._theta}, {"t": float(est.t_) if est is not None else 1.0})

    def restore(self, state: OptimiserState) -> None:
        from sklearn.linear_model import SGDClassifier

        theta = np.asarray(state.arrays["theta"])
        # initialise scikit-learn's internal state on dummy rows (no data travels), then restore (in the dtype
        # scikit-learn keeps for float32 rows)
        est = SGDClassifier(**self.sgd.get_params()).partial_fit(np.zeros((K, self.d), np.float32), np.arange(K),
                                                                 classes=np.arange(K))
        dtype = est.coef_.dtype
        est.coef_, est.intercept_ = theta[:, :-1].astype(dtype), theta[:, -1].astype(dtype)
        est.t_ = state.meta["t"]
        self.inc.estimator_ = est
        self._theta = theta


def _first(t):
    return t[0]


def _second(t):
    return t[1]
