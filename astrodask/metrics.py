"""Classification metrics as mergeable sums: what a worker computes of its labelled rows, and the numbers.

Each block of rows gives an :class:`EvalSums` of fixed size (confusion matrix, log-loss and Brier sums, reliability
bins, per-path confusion); the sums of all blocks are added (``+``) and :func:`finalize` derives the
:class:`Metrics`: accuracy, per-class precision / recall / F1 / expected calibration error, macro-F1, log-loss,
Brier score, the reliability curve and the accuracy per scoring path. Rows never leave the workers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from . import schema
from .errors import AstrodaskError
from .model import PATHS

K = len(schema.CLASSES)
REL_BINS = 10
"""Equal-width bins of predicted probability for the reliability curve and the ECE."""
METRICS_JSON = "metrics.json"
HOLDOUT_JSON = "holdout_metrics.json"


@dataclass(frozen=True)
class EvalSums:
    """Mergeable statistics of a set of labelled rows (``+`` adds two sets); all arrays of fixed shape."""

    n: int = 0
    """Labelled rows."""
    n_unlabelled: int = 0
    """Rows without a true class: counted, left out of everything else."""
    confusion: np.ndarray = field(default_factory=lambda: np.zeros((K, K), np.int64))
    """(true class, predicted class) counts."""
    log_loss: float = 0.0
    """Sum of -log p(true class)."""
    brier: float = 0.0
    """Sum of the squared distance between the probabilities and the one-hot truth."""
    reliability: np.ndarray = field(default_factory=lambda: np.zeros((K, REL_BINS, 3)))
    """Per class and probability bin: count, sum of p, sum of the outcome."""
    pred_counts: np.ndarray = field(default_factory=lambda: np.zeros(K, np.int64))
    by_path: np.ndarray = field(default_factory=lambda: np.zeros((len(PATHS), K, K), np.int64))
    """(path, true class, predicted class) counts: the rows each path scored (``model.PATHS``)."""

    def __add__(self, other: EvalSums) -> EvalSums:
        return EvalSums(self.n + other.n, self.n_unlabelled + other.n_unlabelled, self.confusion + other.confusion,
                        self.log_loss + other.log_loss, self.brier + other.brier,
                        self.reliability + other.reliability, self.pred_counts + other.pred_counts,
                        self.by_path + other.by_path)


def block_stats(y: np.ndarray, proba: np.ndarray, photometric=None) -> EvalSums:
    """The sums of one block's rows: ``y`` true class index (-1 = unlabelled: counted in ``n_unlabelled``,
    left out of everything else), ``proba`` (n, K), ``photometric`` (bool) which path scored each row."""
    known = y >= 0
    y, proba = y[known], proba[known]
    pred = proba.argmax(axis=1)
    conf = np.zeros((K, K), np.int64)
    np.add.at(conf, (y, pred), 1)
    by_path = np.zeros((len(PATHS), K, K), np.int64)
    path = np.asarray(photometric, bool)[known].astype(np.int64) if photometric is not None else \
        np.zeros(len(y), np.int64)
    np.add.at(by_path, (path, y, pred), 1)
    onehot = np.zeros_like(proba)
    onehot[np.arange(len(y)), y] = 1.0
    rel = np.zeros((K, REL_BINS, 3))
    b = np.minimum((proba * REL_BINS).astype(int), REL_BINS - 1)
    for k in range(K):
        rel[k, :, 0] = np.bincount(b[:, k], minlength=REL_BINS)
        rel[k, :, 1] = np.bincount(b[:, k], weights=proba[:, k], minlength=REL_BINS)
        rel[k, :, 2] = np.bincount(b[:, k], weights=onehot[:, k], minlength=REL_BINS)
    return EvalSums(int(known.sum()), int((~known).sum()), conf,
                    float(-np.log(np.clip(proba[np.arange(len(y)), y], 1e-15, 1.0)).sum()),
                    float(((proba - onehot) ** 2).sum()), rel, np.bincount(pred, minlength=K), by_path)


class ClassScores(NamedTuple):
    precision: float
    recall: float
    f1: float
    support: int
    ece: float = float("nan")
    """Expected calibration error of the class (one against the rest, ``REL_BINS`` bins of p):
    sum over bins of (rows in the bin / rows) * |mean p - observed frequency|."""


class Reliability(NamedTuple):
    """One class's reliability bins (probability deciles): rows, mean predicted probability, observed frequency
    (None where a bin is empty, so that ``metrics.json`` stays valid JSON)."""

    count: list
    mean_predicted: list
    fraction_true: list


class PathScores(NamedTuple):
    """The rows one scoring path scored: how many, and how well."""

    n: int
    accuracy: float | None
    macro_f1: float | None


def scores(conf: np.ndarray) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """(accuracy, precision, recall, F1 per class) of a confusion matrix (rows: true class); 0 where undefined."""
    conf = np.asarray(conf)
    tp = np.diag(conf).astype(float)
    prec = np.divide(tp, conf.sum(axis=0), out=np.zeros(K), where=conf.sum(axis=0) > 0)
    rec = np.divide(tp, conf.sum(axis=1), out=np.zeros(K), where=conf.sum(axis=1) > 0)
    f1 = np.divide(2 * prec * rec, prec + rec, out=np.zeros(K), where=(prec + rec) > 0)
    return float(tp.sum() / max(conf.sum(), 1)), prec, rec, f1


@dataclass(frozen=True)
class Metrics:
    """What an evaluation found (``metrics.json``)."""

    n: int
    n_unlabelled: int
    accuracy: float
    macro_f1: float
    log_loss: float
    """Mean log-loss."""
    brier: float
    """Mean Brier score (sum over classes)."""
    per_class: dict[str, ClassScores]
    confusion_matrix: tuple[tuple[int, ...], ...]
    """Rows: true class, columns: predicted class."""
    reliability: dict[str, Reliability]
    predicted_counts: dict[str, int]
    classes: tuple[str, ...] = schema.CLASSES
    train: dict | None = None
    """The training run the holdout metrics belong to (mode, features, epochs, best epoch, why it stopped...)."""
    paths: dict[str, PathScores] = field(default_factory=dict)
    """Per scoring path (``model.PATHS``): the rows it scored and how well (a spectroscopic model scores the
    rows without a usable redshift with its photometric companion)."""

    def line(self) -> str:
        """The headline, as the command line prints it (and each path's, when both scored rows)."""
        out = (f"accuracy {self.accuracy:.4f}  macro-F1 {self.macro_f1:.4f}  log-loss {self.log_loss:.4f}  "
               f"Brier {self.brier:.4f}  ({self.n:,} rows)")
        scored = {k: v for k, v in self.paths.items() if v.n}
        if len(scored) > 1:
            out += "; " + "; ".join(f"{k} path accuracy {v.accuracy:.4f} ({v.n:,} rows)" for k, v in scored.items())
        return out

    def to_json(self) -> dict:
        doc = {"n": self.n, "n_unlabelled": self.n_unlabelled, "accuracy": self.accuracy, "macro_f1": self.macro_f1,
               "log_loss": self.log_loss, "brier": self.brier, "classes": list(self.classes),
               "per_class": {c: v._asdict() for c, v in self.per_class.items()},
               "confusion_matrix": [list(r) for r in self.confusion_matrix],
               "confusion_matrix_axes": "rows: true class, columns: predicted class",
               "reliability": {c: v._asdict() for c, v in self.reliability.items()},
               "predicted_counts": dict(self.predicted_counts)}
        if self.train is not None:
            doc["train"] = dict(self.train)
        doc["paths"] = {k: v._asdict() for k, v in self.paths.items()}
        return doc

    @classmethod
    def from_json(cls, d: dict) -> Metrics:
        return cls(int(d["n"]), int(d.get("n_unlabelled", 0)), float(d["accuracy"]), float(d["macro_f1"]),
                   float(d["log_loss"]), float(d["brier"]),
                   {c: ClassScores(**v) for c, v in d["per_class"].items()},
                   tuple(tuple(int(x) for x in r) for r in d["confusion_matrix"]),
                   {c: Reliability(**v) for c, v in d["reliability"].items()},
                   {c: int(v) for c, v in d["predicted_counts"].items()},
                   tuple(d.get("classes", schema.CLASSES)), d.get("train"),
                   {k: PathScores(**d["paths"][k]) for k in PATHS if k in d.get("paths", {})})


def finalize(s: EvalSums) -> Metrics:
    """The metrics of summed statistics."""
    conf = s.confusion
    n = int(s.n)
    if n == 0:
        raise AstrodaskError(f"no labelled rows to evaluate ({s.n_unlabelled:,} rows have no class); "
                             "the data needs a class column with labels")
    accuracy, prec, rec, f1 = scores(conf)
    rel = s.reliability
    paths = {}
    for k, name in enumerate(PATHS):
        m = s.by_path[k]
        a, _, _, f = scores(m)
        paths[name] = PathScores(int(m.sum()), a if m.sum() else None, float(f.mean()) if m.sum() else None)

    def ratio(k, j):
        return [float(a / c) if c > 0 else None for a, c in zip(rel[k, :, j], rel[k, :, 0])]

    ece = np.abs(rel[:, :, 1] - rel[:, :, 2]).sum(axis=1) / n
    return Metrics(
        n=n, n_unlabelled=int(s.n_unlabelled), accuracy=accuracy, macro_f1=float(f1.mean()),
        log_loss=s.log_loss / n, brier=s.brier / n,
        per_class={c: ClassScores(float(prec[k]), float(rec[k]), float(f1[k]), int(conf[k].sum()), float(ece[k]))
                   for k, c in enumerate(schema.CLASSES)},
        confusion_matrix=tuple(tuple(int(x) for x in r) for r in conf),
        reliability={c: Reliability(rel[k, :, 0].tolist(), ratio(k, 1), ratio(k, 2))
                     for k, c in enumerate(schema.CLASSES)},
        predicted_counts={c: int(v) for c, v in zip(schema.CLASSES, s.pred_counts)}, paths=paths)
