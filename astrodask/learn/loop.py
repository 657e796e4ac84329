"""The one epoch loop, for every optimiser: history, early stopping, best weights, checkpoint, resume.

An optimiser (``lbfgs.LbfgsOptimiser``, ``incremental.IncrementalOptimiser``) only knows how to make one epoch
and how to save and restore its own state; everything around it is here, written once:

* after every epoch, an :class:`EpochRecord` (training and validation loss and accuracy at the epoch's weights)
  is added to the history;
* the best epoch (lowest :meth:`EpochRecord.score` of the monitored validation figure) and its weights are
  kept; with ``patience`` > 0 training stops once ``patience`` epochs have passed without an improvement of at
  least ``min_improvement`` over the score of the last epoch that made one (the stopping rule: more epochs have
  stopped paying), and the result is the best epoch's weights (with ``patience`` 0: never stops early, the result
  is the last epoch's);
* with ``flat_window`` > 0 training also ends ("converged") once the objective has fallen by less than
  ``flat_rtol`` (relative) over the last ``flat_window`` epochs: the warm start's rule, which runs to the
  optimum of its subsample;
* a :class:`Checkpoint` holding the optimiser's state, the history and the best epoch (score, epoch, weights)
  is written after every epoch; ``resume`` continues from it with nothing reset, so a killed run ends with the
  model of an uninterrupted one, early stopping included.
"""

from __future__ import annotations

import io
import sys
import time
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Protocol

import numpy as np

from ..console import log as console_log
from ..errors import AstrodaskError
from ..storage import Location, read_json, write_json_atomic
from .loss import SplitSums

CHECKPOINT_JSON = "checkpoint.json"
PREVIOUS_JSON = "checkpoint.prev.json"


@dataclass(frozen=True)
class EpochStats:
    """What an optimiser reports after one epoch."""

    theta: np.ndarray
    """The weights after the epoch, (classes, features + 1)."""
    sums: SplitSums
    """Loss sums of the training and validation rows at ``theta``."""
    objective: float | None = None
    """The regularised objective at ``theta`` (optimisers that minimise it exactly)."""
    passes: int | None = None
    """Passes over the data so far (function evaluations of L-BFGS)."""


@dataclass(frozen=True)
class OptimiserState:
    """An optimiser's state as data: arrays (to npz) and JSON scalars."""

    arrays: dict
    meta: dict = field(default_factory=dict)


class Optimiser(Protocol):
    label: str

    def start(self) -> None: ...

    def epoch(self, n: int) -> EpochStats | None:
        """Run epoch ``n``; None when no further progress is possible (converged at float precision)."""

    @property
    def converged(self) -> bool: ...

    @property
    def theta(self) -> np.ndarray: ...

    def state(self) -> OptimiserState: ...

    def restore(self, state: OptimiserState) -> None: ...


@dataclass(frozen=True)
class EpochRecord:
    """One line of the training history (``history.json``)."""

    epoch: int
    train_loss: float | None
    train_accuracy: float | None
    valid_loss: float | None
    valid_accuracy: float | None
    objective: float | None = None
    passes: int | None = None
    seconds: float = 0.0
    """Wall time since training started (across resumes)."""

    @classmethod
    def of(cls, epoch: int, stats: EpochStats, seconds: float) -> EpochRecord:
        t, v = stats.sums.train, stats.sums.valid
        return cls(epoch, t.mean_loss, t.accuracy, v.mean_loss, v.accuracy,
                   None if stats.objective is None else float(stats.objective), stats.passes, seconds)

    def score(self, monitor: str) -> float:
        """Early-stopping score, lower is better: the validation figure (the training one without validation
        rows)."""
        if monitor == "accuracy":
            acc = self.valid_accuracy if self.valid_accuracy is not None else self.train_accuracy
            return -(acc or 0.0)
        loss = self.valid_loss if self.valid_loss is not None else self.train_loss
        return np.inf if loss is None else loss

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> EpochRecord:
        return cls(**{k: d.get(k) for k in cls.__dataclass_fields__ if k in d})


@dataclass(frozen=True)
class Best:
    """The best epoch so far: its number (0: none yet), score and weights."""

    epoch: int
    score: float
    theta: np.ndarray


@dataclass(frozen=True)
class LoopSettings:
    max_epochs: int
    patience: int
    """0: no early stopping, the result is the last epoch's weights; else the best epoch's."""
    monitor: str
    quiet: bool = False
    min_improvement: float = 0.0
    """An epoch resets the patience count only when it beats the last such epoch's score by at least this much."""
    flat_window: int = 0
    """With > 0: stop ("converged") when the objective fell by less than ``flat_rtol`` over this many epochs."""
    flat_rtol: float = 0.0


@dataclass(frozen=True)
class LoopState:
    """Everything the loop needs to continue: saved after every epoch."""

    epoch: int
    history: tuple[EpochRecord, ...]
    best: Best
    stopped: bool
    optimiser: OptimiserState
    paying: int = 0
    """The last epoch that improved by at least ``min_improvement`` on the one before it that did (patience counts
    from it)."""


@dataclass(frozen=True)
class LoopResult:
    theta: np.ndarray
    """The model's weights: the best epoch's (patience > 0) or the last epoch's."""
    history: tuple[EpochRecord, ...]
    best_epoch: int
    stop: str
    """Why training ended: ``early_stop``, ``converged`` or ``max_epochs``."""


class Checkpoint:
    """The loop's state in a directory (the model's staging area), replaced after every epoch.

    ``checkpoint-NNNNNN.npz`` holds the arrays (optimiser state, best weights), ``checkpoint.json`` the history,
    the best epoch and counters; the JSON is written last and names its npz, so a kill between the two writes
    leaves the previous consistent pair. The pair before it is kept too (``checkpoint.prev.json`` and its npz):
    a damaged checkpoint (a truncated npz) is reported and the run resumes from the previous one, or restarts
    its epochs when that is damaged too. A checkpoint resumes only a run with the same ``fingerprint``.
    """

    def __init__(self, directory: Location, fingerprint: str):
        self.dir = Location.of(directory)
        self.json = self.dir / CHECKPOINT_JSON
        self.prev = self.dir / PREVIOUS_JSON
        self.fingerprint = fingerprint

    def save(self, state: LoopState) -> None:
        npz = self.dir / f"checkpoint-{state.epoch:06d}.npz"
        buf = io.BytesIO()
        np.savez(buf, best_theta=state.best.theta, **{f"opt_{k}": v for k, v in state.optimiser.arrays.items()})
        npz.write_bytes(buf.getvalue())
        keep = {npz.name}
        try:
            last = read_json(self.json)
        except (FileNotFoundError, AstrodaskError):
            last = None
        if isinstance(last, dict) and isinstance(last.get("arrays"), str) and last["arrays"] != npz.name \
                and (self.dir / last["arrays"]).is_file():
            write_json_atomic(self.prev, last)  # before the new JSON: a kill in between leaves two good pairs
            keep.add(last["arrays"])
        write_json_atomic(self.json, {
            "fingerprint": self.fingerprint, "arrays": npz.name, "epoch": state.epoch,
            "history": [r.to_json() for r in state.history], "best_epoch": state.best.epoch,
            "best_score": state.best.score, "stopped": state.stopped, "paying": state.paying,
            "optimiser": state.optimiser.meta})
        for old in self.dir.glob("checkpoint-*.npz"):
            if old.name not in keep:
                old.remove()

    def _read(self, path: Location) -> LoopState | None:
        """The state in ``path`` and its npz; None when absent. Raises ``_Damaged`` (why) when it does not read."""
        try:
            doc = read_json(path)
        except FileNotFoundError:
            return None
        except AstrodaskError:
            raise _Damaged("checkpoint", "not valid JSON") from None
        if not isinstance(doc, dict):
            raise _Damaged("checkpoint", "not a checkpoint")
        if doc.get("fingerprint") != self.fingerprint:
            raise AstrodaskError(
                "the interrupted training used other settings (dataset, features, mode, l2...); "
                "rerun with the same options, or without --resume to start again"
            )
        what = f"checkpoint of epoch {doc.get('epoch')}"
        try:
            with np.load(io.BytesIO((self.dir / doc["arrays"]).read_bytes()), allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            opt = OptimiserState({k[4:]: v for k, v in arrays.items() if k.startswith("opt_")}, doc["optimiser"])
            return LoopState(int(doc["epoch"]), tuple(EpochRecord.from_json(r) for r in doc["history"]),
                             Best(int(doc["best_epoch"]), float(doc["best_score"]), arrays["best_theta"]),
                             bool(doc["stopped"]), opt, int(doc.get("paying", doc["best_epoch"])))
        except (KeyError, TypeError, ValueError, OSError, EOFError, zipfile.BadZipFile, AstrodaskError) as exc:
            raise _Damaged(what, type(exc).__name__) from None

    def load(self, log: Callable[[str], None] = console_log) -> LoopState | None:
        """The last good checkpoint (None: none, start the epochs); a damaged one is logged in one line."""
        damaged = []
        for path in (self.json, self.prev):
            try:
                state = self._read(path)
            except _Damaged as d:
                damaged.append(d)
                continue
            if state is None:
                continue
            if damaged:
                log(f"resume: the {damaged[0].what} is damaged ({damaged[0].why}); continuing from epoch {state.epoch}")
            return state
        if damaged:
            log(f"resume: the {damaged[0].what} is damaged ({damaged[0].why}) and no earlier one is good; "
                "restarting the epochs")
        return None

    def clear(self) -> None:
        self.json.remove()
        self.prev.remove()
        for old in self.dir.glob("checkpoint-*.npz"):
            old.remove()


class _Damaged(Exception):
    def __init__(self, what: str, why: str):
        super().__init__(what, why)
        self.what, self.why = what, why


def _flat(history: list[EpochRecord], window: int, rtol: float) -> bool:
    """The objective fell by less than ``rtol`` (relative) over the last ``window`` epochs."""
    if len(history) <= window or history[-1].objective is None or history[-1 - window].objective is None:
        return False
    f, before = history[-1].objective, history[-1 - window].objective
    return before - f < rtol * abs(f)


def _bar(total: int, initial: int, desc: str, quiet: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="epoch", disable=quiet or None, file=sys.stderr,
                leave=False)


def run(opt: Optimiser, settings: LoopSettings, checkpoint: Checkpoint | None = None, resume: bool = False,
        log: Callable[[str], None] = console_log) -> LoopResult:
    """Train with ``opt`` until early stopping, convergence or ``settings.max_epochs``; see the module doc."""
    state = checkpoint.load(log) if (checkpoint is not None and resume) else None
    if state is not None:
        opt.restore(state.optimiser)
        epoch, history, best, stopped = state.epoch, list(state.history), state.best, state.stopped
        paying = state.paying
        log(f"resume: continuing from epoch {epoch}")
    else:
        opt.start()
        epoch, history, best, stopped = 0, [], Best(0, np.inf, opt.theta.copy()), False
        paying = 0
    paying_score = history[paying - 1].score(settings.monitor) if paying else np.inf
    t0 = time.perf_counter() - (history[-1].seconds if history else 0.0)
    bar = _bar(settings.max_epochs, epoch, opt.label, settings.quiet)
    stop = "early_stop" if stopped else "max_epochs"
    try:
        while not stopped and epoch < settings.max_epochs:
            if opt.converged:
                stop = "converged"
                break
            stats = opt.epoch(epoch + 1)
            if stats is None:
                stop = "converged"
                break
            epoch += 1
            rec = EpochRecord.of(epoch, stats, time.perf_counter() - t0)
            history.append(rec)
            score = rec.score(settings.monitor)
            if score < best.score:
                best = Best(epoch, score, np.array(stats.theta, copy=True))
            if score < paying_score - settings.min_improvement or not np.isfinite(paying_score):
                paying, paying_score = epoch, score
            if settings.patience and epoch - paying >= settings.patience:
                log(f"early stop at epoch {epoch}: validation {settings.monitor} has not improved by "
                    f"{settings.min_improvement:g} since epoch {paying} (best at epoch {best.epoch})")
                stopped, stop = True, "early_stop"
            if checkpoint is not None:
                checkpoint.save(LoopState(epoch, tuple(history), best, stopped, opt.state(), paying))
            bar.update(1)
            bar.set_postfix(valid_accuracy=f"{rec.valid_accuracy or 0:.4f}", valid_loss=f"{rec.valid_loss or 0:.4f}")
            if not stopped and settings.flat_window and _flat(history, settings.flat_window, settings.flat_rtol):
                stop = "converged"
                break
    finally:
        bar.close()
    if stop == "max_epochs" and opt.converged:
        stop = "converged"
    theta = best.theta if settings.patience else opt.theta
    return LoopResult(np.array(theta, copy=True), tuple(history), best.epoch if settings.patience else epoch, stop)
