"""Training, written once for the ``train`` stage and the estimator: features -> blocks -> optimiser -> loop.

:func:`fit` takes *items* (dataset files, or rows already in memory) and a backend (the cluster's workers, or
this process) and returns the fitted model with its history. The stage (``stage.run``) and the estimator
(``estimator.SDSSClassifier.fit``) differ only in where the items come from and what they do with the result.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from .. import schema
from ..console import log as console_log
from ..dataset import SplitRule
from ..errors import AstrodaskError, ConfigError
from ..features import RECIPES
from ..model import ModelInfo, SoftmaxModel
from ..storage import Location
from . import blocks, loop
from .config import TrainOptions
from .feature_stats import (
    FEATURES_JSON,
    Counts,
    FittedFeatures,
    class_weights,
    features_from_summaries,
    fit_features,
    fit_scaler,
    load_features,
    save_features,
)
from .lbfgs import LbfgsOptimiser
from .loop import Checkpoint, EpochRecord, LoopSettings

K = len(schema.CLASSES)

PATIENCE = 5
WARM_PATIENCE = 3
"""Unset ``patience``: PATIENCE epochs, or WARM_PATIENCE when the model warm-starts. After a warm start the
full-data epochs begin next to the optimum and the validation accuracy only creeps: in every warm-started run
measured (1.5 M to 40 M rows) the best epoch fell within WARM_PATIENCE epochs of the last that improved by
``min_improvement``, so the two further epochs PATIENCE waits changed no model and cost a full pass each
(benchmarks/README.md, "patience after a warm start")."""


@dataclass(frozen=True)
class Workspace:
    """Where a training keeps what an interrupted run resumes from: the fitted features and the checkpoint."""

    directory: Location
    fingerprint: str
    """The settings and data the saved state belongs to; other settings never resume from it."""
    resume: bool = False

    def child(self, name: str) -> Workspace:
        """The workspace of a second model trained in the same run (the companion)."""
        return Workspace(self.directory / name, f"{self.fingerprint}-{name}", self.resume)


@dataclass(frozen=True)
class WarmStart:
    """What the warm start did: its subsample, epochs and time."""

    fraction: float
    """Of the training (and validation) rows."""
    rows: int
    """Training rows in the subsample."""
    epochs: int
    stop: str
    seconds: float
    objective: float | None

    def to_json(self) -> dict:
        return {"fraction": self.fraction, "rows": self.rows, "epochs": self.epochs, "stop": self.stop,
                "seconds": self.seconds, "objective": self.objective}


@dataclass(frozen=True)
class Fitted:
    """The result of :func:`fit`."""

    model: SoftmaxModel
    history: tuple[EpochRecord, ...]
    counts: Counts
    cache: str
    """``memory`` (compact blocks on the workers), ``spill`` (on their disks) or ``stream`` (re-read every
    pass)."""
    best_epoch: int
    stop: str
    """Why training ended: ``early_stop``, ``converged`` or ``max_epochs``."""
    seconds: float
    companion: Fitted | None = None
    """The photometric companion of a spectroscopic model, trained on the same rows (or a subsample of them)."""
    warm: WarmStart | None = None
    """The warm start, when there was one (not after a resume past it)."""
    patience: int = PATIENCE
    """The stopping rule's patience (``patience_of``)."""
    handoff: Handoff | None = None
    """What this model's persist made for its companion (only between :func:`fit_one` and :func:`fit`)."""


@dataclass(frozen=True)
class Handoff:
    """The companion's pass 1 and rows, made by the model's persist from the same reads of the files
    (``blocks.persist_pair``, on the companion's split ``companion_rule``): handles to results left on the
    workers."""

    summaries: list
    """Its pass 1 summary of each file."""
    rows: list
    """Its TRAIN and VALID rows of each file, on the worker that read it."""


SMALL = 100
"""Fewer labelled training rows than this in a class, or held-out rows in all, make :func:`small_data` warn."""


def small_data(counts: Counts, rule: SplitRule) -> str | None:
    """The warning for a training too small to trust (fewer than SMALL training rows in a class, or fewer than
    SMALL held-out rows: the holdout, or without one the validation rows), or None."""
    train = counts.train
    if rule.test[1] > rule.test[0]:
        held, name = int(counts.test.sum()), "holdout"
    elif rule.valid[1] > rule.valid[0]:
        held, name = int(counts.valid.sum()), "validation"
    else:
        held, name = None, ""  # no held-out rows asked for
    reasons = [f"under ~{SMALL} training rows in a class"] if train.min() < SMALL else []
    if held is not None and held < SMALL:
        reasons.append(f"under ~{SMALL} {name} rows")
    if not reasons:
        return None
    by_class = ", ".join(f"{c} {int(n):,}" for c, n in zip(schema.CLASSES, train))
    held_part = f" and {held:,} {name} rows" if held is not None else ""
    return (f"only {int(train.sum()):,} labelled training rows ({by_class}){held_part}: with "
            f"{' and '.join(reasons)} the model and its metrics are not reliable; train on more rows")


def parallel_evaluator(backend, items: list, spec, weights: np.ndarray, rule: SplitRule, warm: float = 0.0,
                       subsample: bool = False) -> Callable:
    """theta -> SplitSums of every item (of their warm-start subsamples with ``subsample``), each computed where
    the item lives and added in a fixed order (``backend.group_sum``)."""

    def evaluate(theta: np.ndarray):
        return backend.group_sum(blocks.grad_sums, blocks.add_sums, items, theta=theta, spec=spec, weights=weights,
                                 rule=rule, warm=warm, subsample=subsample)

    return evaluate


WARM_WINDOW = 5
WARM_RTOL = 3e-3
"""The warm start runs until the subsample's objective falls by less than WARM_RTOL (relative) over WARM_WINDOW
epochs: near its optimum; the full-data epochs that always follow refine it, so polishing the subsample's fit
further costs epochs for little accuracy (benchmarks/README.md, "the default warm start")."""

WARM_AUTO_ROWS = 250_000
WARM_AUTO_SHARE = 0.1
WARM_AUTO_MIN = 100_000
"""Unset ``warm_start_rows``: the warm start takes WARM_AUTO_SHARE of the training rows, at most WARM_AUTO_ROWS, and
none when that is under WARM_AUTO_MIN: full-data epochs are cheap there, and a companion warm-started from a tenth
of its 250,000 rows ended less accurate than from zero weights (benchmarks/README.md, "the default warm start")."""


def patience_of(opts: TrainOptions, warm: float) -> int:
    """The stopping rule's patience for a model whose warm-start share is ``warm``."""
    if opts.patience is not None:
        return opts.patience
    return WARM_PATIENCE if warm > 0 else PATIENCE


def warm_fraction(opts: TrainOptions, counts: Counts) -> float:
    """The share of the training rows in the warm-start subsample (1: all of them; 0: no warm start)."""
    n = int(counts.train.sum())
    if opts.mode != "parallel" or opts.warm_start_rows == 0 or n == 0:
        return 0.0
    if opts.warm_start_rows is None:
        rows = min(WARM_AUTO_ROWS, n * WARM_AUTO_SHARE)
        return rows / n if rows >= WARM_AUTO_MIN else 0.0
    return min(1.0, opts.warm_start_rows / n)


COMPANION = "companion"


def companion_rule(opts: TrainOptions, rule: SplitRule, counts: Counts) -> SplitRule:
    """The companion's split: ``rule`` sampled to ``companion_rows`` training rows (the incremental baseline's
    shuffled blocks are cut by the stage's own split: it trains on every row)."""
    return rule.sampled(opts.companion_rows, int(counts.train.sum())) if opts.mode == "parallel" else rule


def fit(backend, items: list, n_rows: int, opts: TrainOptions, rule: SplitRule, *, where: str,
        workspace: Workspace | None = None, shuffle: Callable | None = None, config: dict | None = None,
        quiet: bool = False, log: Callable[[str], None] = console_log, companion: str | None = None) -> Fitted:
    """Train the model of ``opts`` on ``items`` and, for a spectroscopic model, its photometric ``companion``
    (that feature set; it scores the rows without a usable redshift) on the same items and split.

    ``shuffle(spec, weights) -> blocks`` makes the incremental mode's shuffled blocks (the stage's dataset).
    ``config`` goes into the model's ``info`` as the settings it was trained with.
    """
    if opts.features != "spectroscopic":
        companion = None
    main = fit_one(backend, items, n_rows, opts, rule, where=where, workspace=workspace, shuffle=shuffle,
                   config=config, quiet=quiet, log=log, companion=companion)
    if companion is None:
        return main
    n_train = int(main.counts.train.sum())
    comp_rule = companion_rule(opts, rule, main.counts)
    sub, comp_where = "", where
    if comp_rule is not rule:  # the log and any error about its rows name the option that drew the subsample
        sub = (f"; trained on a hash subsample of ~{opts.companion_rows:,} of the {n_train:,} training rows "
               "(companion_rows)")
        comp_where = (f"{where} (the photometric companion's hash subsample of ~{opts.companion_rows:,} training "
                      "rows, companion_rows)")
    log(f"photometric companion ({companion}): scores every row whose redshift is no measurement (null, 0 or "
        f"flagged; {main.counts.unusable:,} of the labelled rows here){sub}")
    prefit, comp_items = None, items
    if main.handoff is not None:  # the model's persist read the files for the companion too
        prefit = features_from_summaries(backend.gather(main.handoff.summaries, "features: quantiles"), companion,
                                         comp_where)
        comp_items = main.handoff.rows
    comp = fit_one(backend, comp_items, n_rows, replace(opts, features=companion), comp_rule, where=comp_where,
                   workspace=workspace.child(COMPANION) if workspace is not None else None, shuffle=shuffle,
                   config=config, quiet=quiet, log=log, check_size=False, prefit=prefit)
    return replace(main, model=replace(main.model, companion=comp.model), companion=comp, handoff=None)


def fit_one(backend, items: list, n_rows: int, opts: TrainOptions, rule: SplitRule, *, where: str,
            workspace: Workspace | None = None, shuffle: Callable | None = None, config: dict | None = None,
            quiet: bool = False, log: Callable[[str], None] = console_log, check_size: bool = True,
            companion: str | None = None, prefit: FittedFeatures | None = None) -> Fitted:
    """Fit the features on ``items`` (pass 1; ``prefit``: already fitted), build the feature blocks by the cache
    policy, fit the scaler and run the epoch loop with the optimiser of ``opts.mode``: one model
    (``check_size``: log the :func:`small_data` warning). With ``companion`` (a feature set) and blocks kept in
    memory, the persist also makes the companion's pass 1 and rows (``Fitted.handoff``): one read of the files
    for both models."""
    resume = workspace is not None and workspace.resume
    fitted = load_features(workspace.directory, workspace.fingerprint) if resume else None
    if fitted is not None:
        log("resume: reusing fitted features")
    else:
        fitted = prefit if prefit is not None else fit_features(backend, items, opts.features, rule, where)
    spec, counts, domain = fitted.spec, fitted.counts, fitted.domain
    present = [c for c, n in zip(schema.CLASSES, counts.train) if n]
    if len(present) < 2:
        raise AstrodaskError(f"{where}: the labelled training rows are all {present[0]}; a classifier needs rows of "
                             "at least two classes")
    small = small_data(counts, rule) if check_size else None
    if small:
        log(f"warning: {small}")
    if counts.unlabelled:
        log(f"{counts.unlabelled:,} unlabelled rows (no class) left out of training and evaluation; "
            f"{int(counts.by_split.sum()):,} labelled rows used")
    if counts.unusable:
        log(f"{counts.unusable:,} labelled rows have no usable redshift (null, 0 or flagged): the spectroscopic model "
            "does not learn from them")
    weights = class_weights(counts, opts.class_weight)

    def scaled(spec, over, warm=0.0):
        spec = fit_scaler(backend, over, spec, weights, rule, warm)
        if workspace is not None:
            workspace.directory.mkdir()
            save_features(workspace.directory, workspace.fingerprint, replace(fitted, spec=spec))
        return spec

    t0 = time.perf_counter()
    warm_info: list[WarmStart] = []
    handoff = None
    if opts.mode == "parallel":
        need = blocks.compact_bytes(n_rows, spec, rule)
        memory = backend.memory()
        cache = blocks.choose_cache(opts.cache, need, memory)
        where_mem = f"workers have {memory / 2**30:.1f} GiB" if memory else "memory limit unknown"
        log(f"features: {spec.n_features} per row, ~{need / 2**30:.2f} GiB of compact training rows; {where_mem} "
            f"-> {cache}")
        warm = warm_fraction(opts, counts)
        work = list(items)
        kw = {"spec": spec, "weights": weights, "rule": rule, "warm": warm}
        if cache == "memory" and companion is not None:
            handoff, work = _persist_pair(backend, work, opts, rule, counts, companion, kw)
        elif cache == "memory":  # the compact rows do not depend on the scaler: built once, before it
            work = backend.map(blocks.load_block, work, "features: persist", placed=True, **kw)
        elif cache == "spill":
            work = backend.map(blocks.spill_block, work, "features: spill to the workers' disks", placed=True, **kw)
        if spec.mean is None:
            spec = scaled(spec, work, warm)
        shape = (K, spec.n_features + 1)
        start = _warm_start(backend, work, spec, weights, rule, warm, opts, counts, quiet, log, warm_info) \
            if warm > 0 else None
        opt = LbfgsOptimiser(parallel_evaluator(backend, work, spec, weights, rule, warm), shape, opts.l2, opts.tol,
                             warm=start)
    else:
        if shuffle is None:
            raise ConfigError("mode", "the incremental mode trains on a dataset on a Dask cluster",
                              "use the parallel mode")
        from .incremental import IncrementalOptimiser

        if spec.mean is None:
            spec = scaled(spec, list(items))
        cache = "memory"  # dask-ml trains on in-memory dask arrays: the shuffled blocks are always persisted
        work = shuffle(spec, weights)
        opt = IncrementalOptimiser(backend, work, parallel_evaluator(backend, work, spec, weights, rule),
                                   spec.n_features, weights, opts.l2, opts.learning_rate, opts.eta0, opts.seed,
                                   opts.class_weight == "balanced")
    checkpoint = Checkpoint(workspace.directory, workspace.fingerprint) if workspace is not None else None
    patience = patience_of(opts, warm_fraction(opts, counts))
    result = loop.run(opt, LoopSettings(opts.max_epochs, patience, opts.monitor, quiet,
                                                 opts.min_improvement), checkpoint, resume, log)
    seconds = time.perf_counter() - t0
    del work, opt
    theta = result.theta
    model = SoftmaxModel(spec, theta[:, :-1], theta[:, -1], schema.CLASSES, info=ModelInfo(
        link="softmax" if opts.mode == "parallel" else "ovr", config=dict(config or {}), cache=cache,
        n_train=int(counts.train.sum()), n_valid=int(counts.valid.sum()), n_test=int(counts.test.sum()),
        n_unlabelled=int(counts.unlabelled), train_seconds=seconds, epochs_run=len(result.history),
        best_epoch=result.best_epoch, stop=result.stop), domain=domain)
    return Fitted(model, result.history, counts, cache, result.best_epoch, result.stop, seconds,
                  warm=warm_info[0] if warm_info else None, patience=patience, handoff=handoff)


def _persist_pair(backend, items: list, opts: TrainOptions, rule: SplitRule, counts: Counts, companion: str,
                  kw: dict) -> tuple[Handoff, list]:
    """``blocks.persist_pair`` over ``items``: the companion's handoff, and the model's items (each on the worker
    that read its file, as the rows handed off are)."""
    recipe = RECIPES[companion]
    work = backend.map(blocks.persist_pair, items, "features: persist", placed=True, companion=companion,
                       companion_rule=companion_rule(opts, rule, counts), base_names=recipe.base,
                       by_class=recipe.knots_by == "class", **kw)
    handoff = Handoff(backend.map(blocks.field_of, work, name="summary"),
                      backend.map(blocks.field_of, work, placed=True, name="rows"))
    return handoff, work


def _warm_start(backend, work: list, spec, weights: np.ndarray, rule: SplitRule, warm: float, opts: TrainOptions,
                counts: Counts, quiet: bool, log: Callable[[str], None], record: list) -> Callable:
    """The optimiser's ``warm``: L-BFGS on the warm-start subsample of the same blocks (the same workers, no
    data moved) until its objective flattens (WARM_RTOL over WARM_WINDOW epochs); its state."""

    def run():
        t0 = time.perf_counter()
        rows = round(warm * int(counts.train.sum()))
        opt = LbfgsOptimiser(parallel_evaluator(backend, work, spec, weights, rule, warm, subsample=True),
                             (K, spec.n_features + 1), opts.l2, opts.tol, label="warm start (L-BFGS)")
        res = loop.run(opt, LoopSettings(opts.max_epochs, 0, opts.monitor, quiet, flat_window=WARM_WINDOW,
                                         flat_rtol=WARM_RTOL), None, False, log)
        last = res.history[-1] if res.history else None
        info = WarmStart(warm, rows, len(res.history), res.stop, time.perf_counter() - t0,
                         last.objective if last else None)
        record.append(info)
        share = "all" if warm >= 1 else f"{warm:.1%}"
        log(f"warm start: {info.epochs} epochs on ~{rows:,} training rows ({share} of them) in {info.seconds:.1f} s"
            + (f", validation accuracy {last.valid_accuracy:.4f}" if last and last.valid_accuracy else "")
            + "; continuing on all rows")
        return opt.st

    return run


def clear(workspace: Workspace) -> None:
    """Remove the resumable state (the companion's too) once the model is written."""
    for w in (workspace, workspace.child(COMPANION)):
        Checkpoint(w.directory, w.fingerprint).clear()
        (w.directory / FEATURES_JSON).remove()
    workspace.child(COMPANION).directory.remove()  # its directory, now empty (local disks)
