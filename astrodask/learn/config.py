"""The training options, declared once.

:class:`TrainOptions` holds every option a user sets to train a model; the ``train`` and ``run`` commands derive
their options from its fields (help text from the docstrings, choices from the metadata), ``JobConfig`` holds one,
and the estimator builds one from its parameters. :class:`TrainConfig` adds what the ``train`` stage needs
besides: the dataset, the model directory and the job flags.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import ConfigError
from ..features import FEATURE_SETS
from ..options import JobFlags, check_choices

MODES = ("parallel", "incremental")
CACHES = ("auto", "memory", "spill", "stream")
MONITORS = ("accuracy", "loss")
CLASS_WEIGHTS = ("balanced",)
SCHEDULES = ("optimal", "invscaling", "adaptive", "constant")
DEFAULT_EPOCHS = {"parallel": 400, "incremental": 10}


@dataclass(frozen=True, kw_only=True)
class TrainOptions:
    """How to train a model (every option a user sets; the same for ``train``, ``run`` and the estimator)."""

    features: str = field(default="spectroscopic", metadata={"choices": FEATURE_SETS})
    """``spectroscopic`` (bands, colours, redshift) or ``photometric`` (no redshift, for objects without a
    spectrum); ``photometric+morphology`` adds the PSF - model magnitude differences (needs psf_u..psf_z)."""
    morphology: bool = True
    """With ``--features photometric``: add the PSF - model magnitude differences (the SDSS point-source /
    extended separator) when the training data has psf_u..psf_z with values (the model then needs them too)."""
    mode: str = field(default="parallel", metadata={"choices": MODES})
    """``parallel``: every worker computes the gradient of its partitions at once, the client steps L-BFGS;
    ``incremental``: the dask-ml Incremental(SGDClassifier) baseline."""
    epochs: int | None = None
    """Maximum passes over the training data: L-BFGS iterations (parallel, default 400) or SGD epochs
    (incremental, default 10)."""
    l2: float = 1e-5
    """L2 strength on the weights: the objective is mean log-loss + l2/2 * |W|^2 (scikit-learn's
    C = 1 / (l2 * n_train))."""
    class_weight: str | None = field(default=None, metadata={"choices": CLASS_WEIGHTS})
    """None (every row weighs 1) or ``balanced`` (rows weighted by n / (classes * n_class))."""
    patience: int | None = None
    """Early stopping: stop when the monitored validation score has not improved by ``min_improvement`` for this
    many epochs, and keep the best epoch's weights; 0 never stops early and keeps the last epoch's. Unset (the
    default): 5, or 3 after a warm start (its full-data epochs start next to the optimum)."""
    min_improvement: float = 0.0005
    """Early stopping: the least gain of the monitored validation score (accuracy as a fraction, or log-loss)
    that counts as an improvement; 0 counts any gain (with ``--patience 50``: train to the optimum)."""
    monitor: str = field(default="accuracy", metadata={"choices": MONITORS})
    """Validation score watched by early stopping: ``accuracy`` or ``loss`` (log-loss)."""
    tol: float = 1e-9
    """Parallel mode: L-BFGS stops when the relative decrease of the objective falls below this."""
    learning_rate: str = field(default="optimal", metadata={"choices": SCHEDULES})
    """Incremental mode: scikit-learn's SGD learning-rate schedule."""
    eta0: float = 0.01
    """Incremental mode: initial learning rate of the ``invscaling``, ``adaptive`` and ``constant`` schedules."""
    cache: str = field(default="auto", metadata={"choices": CACHES})
    """Parallel mode: ``memory`` keeps the training rows on the workers in a compact form (about 300 bytes a row),
    ``spill`` keeps them on the workers' local disks (read back memory-mapped every pass), ``stream`` re-reads
    and re-expands the data every pass; ``auto`` keeps them in memory when they fit in half the workers' memory,
    else spills them (the incremental mode always keeps its shuffled blocks in memory)."""
    warm_start_rows: int | None = None
    """Parallel mode: first fit the model until its objective flattens on a hash subsample of about this many
    training rows, then continue on all rows from there with the stopping rule. Unset (the default): a tenth of
    the model's training rows, at most 250,000, when that is at least 100,000 (from ~1M training rows), else none;
    0: start from zero weights."""
    companion_rows: int = 250_000
    """Parallel mode: a spectroscopic model's photometric companion (it scores the rows without a usable redshift)
    trains on a hash subsample of about this many of the training rows, and validates on the validation rows in
    proportion, when there are more; 0: on all of them. A photometric model's accuracy stops moving before
    this many rows (docs/model.md), its cost does not."""
    seed: int = 0
    """Seed of the incremental mode's shuffles (the parallel mode is deterministic)."""
    report: bool = True
    """Write the HTML report with figures beside the model."""

    def __post_init__(self):
        check_choices(self)
        if self.epochs is not None and self.epochs < 1:
            raise ConfigError("epochs", f"must be at least 1, got {self.epochs}", "use 1 or more")
        if not (self.l2 >= 0 and np.isfinite(self.l2)):
            raise ConfigError("l2", f"must be a finite number >= 0, got {self.l2}", "use e.g. 1e-5")
        if self.patience is not None and self.patience < 0:
            raise ConfigError("patience", f"must be >= 0, got {self.patience}", "use 0 to disable early stopping")
        if not (self.min_improvement >= 0 and np.isfinite(self.min_improvement)):
            raise ConfigError("min_improvement", f"must be a finite number >= 0, got {self.min_improvement}",
                              "use e.g. 0.0005, or 0 to count any gain")
        if not (self.tol >= 0 and np.isfinite(self.tol)):
            raise ConfigError("tol", f"must be a finite number >= 0, got {self.tol}", "use e.g. 1e-9")
        if self.warm_start_rows is not None and self.warm_start_rows < 0:
            raise ConfigError("warm_start_rows", f"must be >= 0, got {self.warm_start_rows}",
                              "use e.g. 250000, or 0 to start from zero weights")
        if self.companion_rows < 0:
            raise ConfigError("companion_rows", f"must be >= 0, got {self.companion_rows}",
                              "use e.g. 250000, or 0 to train the companion on every training row")
        if not (self.eta0 > 0 and np.isfinite(self.eta0)):
            raise ConfigError("eta0", f"must be a positive number, got {self.eta0}", "use e.g. 0.01")

    @property
    def max_epochs(self) -> int:
        return self.epochs or DEFAULT_EPOCHS[self.mode]

    def options(self) -> TrainOptions:
        """Just the training options (a TrainConfig without its dataset, model directory and job flags)."""
        return TrainOptions(**{k: getattr(self, k) for k in TrainOptions.__dataclass_fields__})


@dataclass(frozen=True)
class TrainConfig(TrainOptions, JobFlags):
    """The ``train`` stage: the training options, plus where the data comes from and the model goes."""

    dataset: str
    """Parquet dataset made by ``astrodask convert`` (or ``synth``); its labelled rows (a ``class``) train."""
    model_dir: str = field(metadata={"flag": "--model", "metavar": "DIR"})
    """Where the model directory goes (model.json, weights.npz, metrics.json, history.json, report/)."""

    def __post_init__(self):
        TrainOptions.__post_init__(self)
        self.check_flags()

    def fingerprint(self, dataset_identity: dict) -> dict:
        """What makes this model: the dataset's identity and every option that changes the model (not the job
        flags, the paths, ``report`` or ``cache``). The model directory's manifest records it, ``--resume``
        compares it, and the training checkpoint belongs to it (``digest``)."""
        keep = {k: v for k, v in asdict(self).items()
                if k not in ("overwrite", "resume", "quiet", "storage_options", "report", "model_dir", "dataset",
                             "cache")}
        return {"stage": "train", "dataset": dataset_identity, "options": keep}


def digest(fingerprint: dict) -> str:
    """A short hash of a fingerprint (what a saved training state is labelled with)."""
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True, default=str).encode()).hexdigest()[:16]
