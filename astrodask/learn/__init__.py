"""Training: the ``train`` stage and the ``SDSSClassifier`` estimator, on one training code path.

=================  ==========================================================================================
``config``         TrainOptions (every training option, declared once), TrainConfig (the stage's settings)
``blocks``         worker functions: rows, their split, feature blocks, gradient sums; the cache policy
``loss``           the softmax loss and gradient of one block (pure), the regularised objective
``loss_kernel``    the compiled (numba) pass over a block: loss, gradient, the scaler's moments
``feature_stats``  feature fitting from the workers' summaries: knots, medians, scaler, class weights
``loop``           the one epoch loop: history, early stopping, best weights, checkpoint, resume
``lbfgs``          parallel mode: L-BFGS on summed gradients, serialisable state
``incremental``    the dask-ml Incremental(SGDClassifier) baseline
``trainer``        features -> blocks -> optimiser -> loop -> SoftmaxModel (shared by the stage and estimator)
``stage``          ``run(cfg, client)``: dataset -> model directory (what ``astrodask train`` runs)
``inputs``         the estimator's input checks (convert's rules)
``estimator``      SDSSClassifier
=================  ==========================================================================================

The light names (the options) are imported eagerly, for the command line; the rest on first use.
"""

from __future__ import annotations

from .config import CACHES, MODES, TrainConfig, TrainOptions

__all__ = ["CACHES", "MODES", "SDSSClassifier", "TrainConfig", "TrainOptions", "TrainResult", "run"]

_LAZY = {"SDSSClassifier": ".estimator", "TrainResult": ".stage", "run": ".stage"}


def __getattr__(name: str):
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
