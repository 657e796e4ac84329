"""Stage 6: metrics from predictions, computed as mergeable sums on the workers.

Each partition returns an :class:`EvalSums` of fixed size (confusion matrix, log-loss and Brier sums,
reliability bins, histograms of redshift and sky position by predicted class); the sums of all partitions are
added (``+``) and :func:`finalize` derives the :class:`Metrics`: accuracy, per-class precision/recall/F1,
macro-F1, log-loss, Brier score and what the figures need. Rows never leave the workers.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import NamedTuple

import numpy as np
import pandas as pd

from . import labels, schema
from .console import track
from .dataset import HOLDOUT, TEST, open_dataset, read_part
from .errors import AstrodaskError
from .model import PATHS
from .options import JobFlags
from .storage import Location, StagedOutput, parquet_file, read_json, write_json_atomic

K = len(schema.CLASSES)
REL_BINS = 10
Z_EDGES = np.concatenate([[-np.inf], np.geomspace(1e-4, 10.0, 51)])  # first bin: z <= 1e-4 (stars)
SKY_SHAPE = (72, 36)  # 5 degree cells in alpha, delta
METRICS_JSON = "metrics.json"
HOLDOUT_JSON = "holdout_metrics.json"


# ------------------------------------------------------------------------------------------------ sums


def _zeros(shape) -> np.ndarray:
    return np.zeros(shape, np.float64)


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
    reliability: np.ndarray = field(default_factory=lambda: _zeros((K, REL_BINS, 3)))
    """Per class and probability bin: count, sum of p, sum of the outcome."""
    pred_counts: np.ndarray = field(default_factory=lambda: np.zeros(K, np.int64))
    z_hist: np.ndarray | None = None
    """(predicted class, Z_EDGES bin) counts, when the rows have a redshift."""
    sky: np.ndarray | None = None
    """(predicted class, alpha cell, delta cell) counts, when the rows have positions."""
    by_path: np.ndarray = field(default_factory=lambda: np.zeros((len(PATHS), K, K), np.int64))
    """(path, true class, predicted class) counts: the rows each path scored (``model.PATHS``)."""

    def __add__(self, other: EvalSums) -> EvalSums:
        def add(a, b):
            return b if a is None else a if b is None else a + b

        return EvalSums(self.n + other.n, self.n_unlabelled + other.n_unlabelled, self.confusion + other.confusion,
                        self.log_loss + other.log_loss, self.brier + other.brier,
                        self.reliability + other.reliability, self.pred_counts + other.pred_counts,
                        add(self.z_hist, other.z_hist), add(self.sky, other.sky), self.by_path + other.by_path)


def block_stats(y: np.ndarray, proba: np.ndarray, alpha=None, delta=None, redshift=None,
                photometric=None) -> EvalSums:
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
    rel = _zeros((K, REL_BINS, 3))
    b = np.minimum((proba * REL_BINS).astype(int), REL_BINS - 1)
    for k in range(K):
        np.add.at(rel[k, :, 0], b[:, k], 1)
        np.add.at(rel[k, :, 1], b[:, k], proba[:, k])
        np.add.at(rel[k, :, 2], b[:, k], onehot[:, k])
    z_hist = sky = None
    if redshift is not None:
        z = np.asarray(redshift, np.float64)[known]
        z_hist = np.stack([np.histogram(z[pred == k], Z_EDGES)[0] for k in range(K)])
    if alpha is not None and delta is not None:
        a, d = np.asarray(alpha, np.float64)[known], np.asarray(delta, np.float64)[known]
        sky = np.stack([np.histogram2d(a[pred == k], d[pred == k], bins=SKY_SHAPE, range=[[0, 360], [-90, 90]])[0]
                        for k in range(K)])
    return EvalSums(int(known.sum()), int((~known).sum()), conf,
                    float(-np.log(np.clip(proba[np.arange(len(y)), y], 1e-15, 1.0)).sum()),
                    float(((proba - onehot) ** 2).sum()), rel, np.bincount(pred, minlength=K), z_hist, sky, by_path)


# ------------------------------------------------------------------------------------------------ metrics


class ClassScores(NamedTuple):
    precision: float
    recall: float
    f1: float
    support: int


class Reliability(NamedTuple):
    """One class's reliability bins (probability deciles): rows, mean predicted probability, observed frequency
    (NaN where a bin is empty)."""

    count: list
    mean_predicted: list
    fraction_true: list


class PathScores(NamedTuple):
    """The rows one scoring path scored: how many, and how well."""

    n: int
    accuracy: float | None
    macro_f1: float | None


def _scores(conf: np.ndarray) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """(accuracy, precision, recall, F1 per class) of a confusion matrix (rows: true class)."""
    tp = np.diag(conf).astype(float)
    prec = np.divide(tp, conf.sum(axis=0), out=np.zeros(K), where=conf.sum(axis=0) > 0)
    rec = np.divide(tp, conf.sum(axis=1), out=np.zeros(K), where=conf.sum(axis=1) > 0)
    f1 = np.divide(2 * prec * rec, prec + rec, out=np.zeros(K), where=(prec + rec) > 0)
    return float(tp.sum() / max(conf.sum(), 1)), prec, rec, f1


class Histogram(NamedTuple):
    edges: list
    """Bin edges (a redshift histogram), or the grid's shape (a sky map)."""
    counts: list
    """Counts per predicted class."""


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
    redshift_hist: Histogram | None = None
    sky_hist: Histogram | None = None
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
        if self.redshift_hist is not None:
            doc["redshift_hist"] = self.redshift_hist._asdict()
        if self.sky_hist is not None:
            doc["sky_hist"] = {"shape": self.sky_hist.edges, "counts": self.sky_hist.counts}
        if self.train is not None:
            doc["train"] = dict(self.train)
        doc["paths"] = {k: v._asdict() for k, v in self.paths.items()}
        return doc

    @classmethod
    def from_json(cls, d: dict) -> Metrics:
        sky = d.get("sky_hist")
        z = d.get("redshift_hist")
        return cls(int(d["n"]), int(d.get("n_unlabelled", 0)), float(d["accuracy"]), float(d["macro_f1"]),
                   float(d["log_loss"]), float(d["brier"]),
                   {c: ClassScores(**v) for c, v in d["per_class"].items()},
                   tuple(tuple(int(x) for x in r) for r in d["confusion_matrix"]),
                   {c: Reliability(**v) for c, v in d["reliability"].items()},
                   {c: int(v) for c, v in d["predicted_counts"].items()},
                   Histogram(z["edges"], z["counts"]) if z else None,
                   Histogram(sky["shape"], sky["counts"]) if sky else None,
                   tuple(d.get("classes", schema.CLASSES)), d.get("train"),
                   {k: PathScores(**v) for k, v in d.get("paths", {}).items()})


def finalize(s: EvalSums) -> Metrics:
    """The metrics of summed statistics."""
    conf = s.confusion
    n = int(s.n)
    if n == 0:
        raise AstrodaskError(f"no labelled rows to evaluate ({s.n_unlabelled:,} rows have no class); "
                             "the data needs a class column with labels")
    accuracy, prec, rec, f1 = _scores(conf)
    rel = s.reliability
    paths = {}
    for k, name in enumerate(PATHS):
        m = s.by_path[k]
        a, _, _, f = _scores(m)
        paths[name] = PathScores(int(m.sum()), a if m.sum() else None, float(f.mean()) if m.sum() else None)

    def ratio(k, j):
        return np.divide(rel[k, :, j], rel[k, :, 0], out=np.full(REL_BINS, np.nan), where=rel[k, :, 0] > 0).tolist()

    return Metrics(
        n=n, n_unlabelled=int(s.n_unlabelled), accuracy=accuracy, macro_f1=float(f1.mean()),
        log_loss=s.log_loss / n, brier=s.brier / n,
        per_class={c: ClassScores(float(prec[k]), float(rec[k]), float(f1[k]), int(conf[k].sum()))
                   for k, c in enumerate(schema.CLASSES)},
        confusion_matrix=tuple(tuple(int(x) for x in r) for r in conf),
        reliability={c: Reliability(rel[k, :, 0].tolist(), ratio(k, 1), ratio(k, 2))
                     for k, c in enumerate(schema.CLASSES)},
        predicted_counts={c: int(v) for c, v in zip(schema.CLASSES, s.pred_counts)},
        redshift_hist=Histogram(Z_EDGES.tolist(), s.z_hist.tolist()) if s.z_hist is not None else None,
        sky_hist=Histogram(list(SKY_SHAPE), s.sky.tolist()) if s.sky is not None else None, paths=paths)


def _labels(df: pd.DataFrame, col: str, where: str) -> np.ndarray:
    """Class indices of the true labels (-1: unlabelled); an unknown label is refused."""
    return labels.encode(df[col], where=f"{where}: column {col}").astype(np.int64)


def _opt(df, col):
    return df[col].to_numpy(np.float64, na_value=np.nan) if col in df.columns else None


def _holdout_task(file: str, model) -> EvalSums:
    cols = list(dict.fromkeys([schema.ID, schema.CLASS, "alpha", "delta", schema.REDSHIFT, schema.ZWARNING,
                               *model.inputs]))
    with parquet_file(file) as pf:
        have = set(pf.schema_arrow.names)
    df = read_part(file, [c for c in cols if c in have])
    df = df[HOLDOUT.of(df[schema.ID].to_numpy()) == TEST]
    y = _labels(df, schema.CLASS, str(file))
    df = df[y >= 0]  # unlabelled holdout rows are not scored: only counted
    scored = model.score(df)
    s = block_stats(y[y >= 0], scored.proba, _opt(df, "alpha"), _opt(df, "delta"), _opt(df, schema.REDSHIFT),
                    scored.photometric)
    return replace(s, n_unlabelled=int((y < 0).sum()))


def _total(parts: list[EvalSums]) -> EvalSums:
    return sum(parts[1:], parts[0]) if parts else EvalSums()


def holdout(client, model, files, quiet: bool = False) -> Metrics:
    """Metrics of ``model`` on the labelled rows of the holdout split (``dataset.HOLDOUT``) of a dataset."""
    return finalize(_total(track(client.map(_holdout_task, list(files), model=model, pure=False), "evaluate", quiet)))


def _predictions_task(file: str) -> EvalSums:
    df = read_part(file)
    probs = df[list(schema.PROBS)].to_numpy(np.float64)
    phot = (df[schema.SCORED_BY].astype(str) == "photometric").to_numpy() if schema.SCORED_BY in df.columns else None
    return block_stats(_labels(df, schema.CLASS, str(file)), probs, _opt(df, "alpha"), _opt(df, "delta"),
                       _opt(df, schema.REDSHIFT), phot)


# ------------------------------------------------------------------------------------------------ the stage


@dataclass(frozen=True)
class EvaluateConfig(JobFlags):
    """The ``evaluate`` stage: a predictions dataset with true labels -> metrics (and, with ``out``, a report)."""

    predictions: str
    """Predictions written by ``astrodask predict`` that carry the true ``class`` (a local path or an fsspec URL)."""
    out: str | None = field(default=None, metadata={"metavar": "DIR"})
    """Where metrics.json, the figures and index.html go (a directory or URL); without it the metrics are only
    printed."""
    holdout: str | None = field(default=None, metadata={"metavar": "MODEL_DIR"})
    """A model directory whose holdout metrics are copied beside the evaluation (holdout_metrics.json), so the
    report tells the rows the model never trained on apart from all of them."""

    def __post_init__(self):
        self.check_flags()


@dataclass(frozen=True)
class EvaluateResult:
    """What ``evaluate.run`` found (and where it wrote it, when it did)."""

    metrics: Metrics
    out: str | None = None
    holdout: Metrics | None = None

    def lines(self) -> list[str]:
        out = [self.metrics.line()]
        out += [f"  {c:7s} precision {v.precision:.4f}  recall {v.recall:.4f}  F1 {v.f1:.4f}"
                for c, v in self.metrics.per_class.items()]
        if self.out:
            out.append(f"metrics: {self.out}/{METRICS_JSON}  report: {self.out}/index.html")
        return out


def run(cfg: EvaluateConfig, client) -> EvaluateResult:
    """Evaluate ``cfg.predictions``; with ``cfg.out``, write metrics.json, the figures and index.html there,
    committed atomically (with ``resume``, an evaluation already made of the same predictions is kept)."""
    from . import report

    so = cfg.storage_options
    ds = open_dataset(Location.of(cfg.predictions, so), kind="predictions")
    ds.require([schema.CLASS, *schema.PROBS], "to evaluate predictions")
    model_dir = Location.of(cfg.holdout, so) if cfg.holdout else None
    held = None
    if model_dir is not None:
        try:
            held = Metrics.from_json(read_json(model_dir / METRICS_JSON))
        except FileNotFoundError:
            raise AstrodaskError(f"--holdout {model_dir}: no {METRICS_JSON}; give a model directory written by "
                                 "`astrodask train`") from None
        except (KeyError, TypeError, ValueError):
            raise AstrodaskError(f"--holdout {model_dir}: {METRICS_JSON} is not astrodask's metrics; give a model "
                                 "directory written by `astrodask train`") from None

    def compute() -> Metrics:
        return finalize(_total(track(client.map(_predictions_task, list(ds.files), pure=False), "evaluate",
                                     cfg.quiet)))

    if not cfg.out:
        return EvaluateResult(compute(), None, held)
    dest = Location.of(cfg.out, so)
    fp = {"stage": "evaluate", "predictions": ds.identity(), "holdout": held.to_json() if held else None}
    inputs = (ds.location,) + ((model_dir,) if model_dir else ())
    with StagedOutput(dest, cfg.overwrite, cfg.resume, kind="evaluation", fingerprint=fp, inputs=inputs) as out:
        if out.done:
            return EvaluateResult(Metrics.from_json(read_json(dest / METRICS_JSON)), str(dest), held)
        metrics = compute()
        write_json_atomic(out.staging / METRICS_JSON, metrics.to_json())
        if held is not None:
            write_json_atomic(out.staging / HOLDOUT_JSON, held.to_json())
        title = "astrodask: predictions on the whole dataset" if held else "astrodask evaluation"
        rows = ("All predicted rows (training, validation and holdout rows together; the holdout alone is in "
                f"{HOLDOUT_JSON})") if held else "Predicted rows with a true class"
        report.write(out.staging, metrics, None, title=title, rows_label=rows)
        out.commit({"predictions": ds.path, "accuracy": metrics.accuracy})
    return EvaluateResult(metrics, str(dest), held)
