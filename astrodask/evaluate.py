"""Stage 6: metrics from predictions, computed as mergeable sums on the workers.

Each partition returns fixed-size statistics (confusion matrix, log-loss and Brier sums, reliability bins,
histograms of redshift and sky position by predicted class); the client adds them up and derives accuracy,
per-class precision/recall/F1, macro-F1, log-loss, Brier score and the figures. Rows never leave the workers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import labels, schema
from .console import track
from .dataset import HOLDOUT, TEST, read_part
from .errors import AstrodaskError

K = len(schema.CLASSES)
REL_BINS = 10
Z_EDGES = np.concatenate([[-np.inf], np.geomspace(1e-4, 10.0, 51)])  # first bin: z <= 1e-4 (stars)
SKY_SHAPE = (72, 36)  # 5 degree cells in alpha, delta


def block_stats(y: np.ndarray, proba: np.ndarray, alpha=None, delta=None, redshift=None) -> dict:
    """Mergeable statistics of one block's labelled rows: ``y`` true class index (-1 = unlabelled: counted in
    ``n_unlabelled``, left out of everything else), ``proba`` (n, K)."""
    known = y >= 0
    y, proba = y[known], proba[known]
    pred = proba.argmax(axis=1)
    conf = np.zeros((K, K), np.int64)
    np.add.at(conf, (y, pred), 1)
    onehot = np.zeros_like(proba)
    onehot[np.arange(len(y)), y] = 1.0
    rel = np.zeros((K, REL_BINS, 3))  # per class and bin: count, sum of p, sum of outcome
    b = np.minimum((proba * REL_BINS).astype(int), REL_BINS - 1)
    for k in range(K):
        np.add.at(rel[k, :, 0], b[:, k], 1)
        np.add.at(rel[k, :, 1], b[:, k], proba[:, k])
        np.add.at(rel[k, :, 2], b[:, k], onehot[:, k])
    out = {
        "n": int(known.sum()),
        "n_unlabelled": int((~known).sum()),
        "confusion": conf,
        "log_loss": float(-np.log(np.clip(proba[np.arange(len(y)), y], 1e-15, 1.0)).sum()),
        "brier": float(((proba - onehot) ** 2).sum()),
        "reliability": rel,
        "pred_counts": np.bincount(pred, minlength=K),
    }
    if redshift is not None:
        z = np.asarray(redshift, np.float64)[known]
        out["z_hist"] = np.stack([np.histogram(z[pred == k], Z_EDGES)[0] for k in range(K)])
    if alpha is not None and delta is not None:
        a, d = np.asarray(alpha, np.float64)[known], np.asarray(delta, np.float64)[known]
        out["sky"] = np.stack([
            np.histogram2d(a[pred == k], d[pred == k], bins=SKY_SHAPE, range=[[0, 360], [-90, 90]])[0]
            for k in range(K)])
    return out


def merge(parts: list[dict]) -> dict:
    out = {}
    for key in parts[0]:
        vals = [p[key] for p in parts if key in p]
        out[key] = sum(vals[1:], vals[0].copy() if isinstance(vals[0], np.ndarray) else vals[0])
    return out


def finalize(s: dict) -> dict:
    """Metrics (JSON-ready) from merged statistics."""
    conf = s["confusion"]
    n = int(s["n"])
    if n == 0:
        raise AstrodaskError(f"no labelled rows to evaluate ({int(s.get('n_unlabelled', 0)):,} rows have no class); "
                             "the data needs a class column with labels")
    tp = np.diag(conf).astype(float)
    prec = np.divide(tp, conf.sum(axis=0), out=np.zeros(K), where=conf.sum(axis=0) > 0)
    rec = np.divide(tp, conf.sum(axis=1), out=np.zeros(K), where=conf.sum(axis=1) > 0)
    f1 = np.divide(2 * prec * rec, prec + rec, out=np.zeros(K), where=(prec + rec) > 0)
    rel = s["reliability"]
    m = {
        "n": n,
        "n_unlabelled": int(s.get("n_unlabelled", 0)),
        "accuracy": float(tp.sum() / n),
        "macro_f1": float(f1.mean()),
        "log_loss": s["log_loss"] / n,
        "brier": s["brier"] / n,
        "classes": list(schema.CLASSES),
        "per_class": {c: {"precision": float(prec[k]), "recall": float(rec[k]), "f1": float(f1[k]),
                          "support": int(conf[k].sum())} for k, c in enumerate(schema.CLASSES)},
        "confusion_matrix": conf.tolist(),
        "confusion_matrix_axes": "rows: true class, columns: predicted class",
        "reliability": {c: {"count": rel[k, :, 0].tolist(),
                            "mean_predicted": np.divide(rel[k, :, 1], rel[k, :, 0], out=np.full(REL_BINS, np.nan),
                                                        where=rel[k, :, 0] > 0).tolist(),
                            "fraction_true": np.divide(rel[k, :, 2], rel[k, :, 0], out=np.full(REL_BINS, np.nan),
                                                       where=rel[k, :, 0] > 0).tolist()}
                        for k, c in enumerate(schema.CLASSES)},
        "predicted_counts": {c: int(v) for c, v in zip(schema.CLASSES, s["pred_counts"])},
    }
    if "z_hist" in s:
        m["redshift_hist"] = {"edges": Z_EDGES.tolist(), "counts": s["z_hist"].tolist()}
    if "sky" in s:
        m["sky_hist"] = {"shape": list(SKY_SHAPE), "counts": s["sky"].tolist()}
    return m


def _labels(df: pd.DataFrame, col: str, where: str) -> np.ndarray:
    """Class indices of the true labels (-1: unlabelled); an unknown label is refused."""
    return labels.encode(df[col], where=f"{where}: column {col}").astype(np.int64)


def _opt(df, col):
    return df[col].to_numpy(np.float64, na_value=np.nan) if col in df.columns else None


def _holdout_task(file: str, model) -> dict:
    from .features import raw_columns
    from .storage import parquet_file

    cols = list(dict.fromkeys([schema.ID, schema.CLASS, "alpha", "delta", schema.REDSHIFT,
                               *raw_columns(model.spec.feature_set)]))
    with parquet_file(file) as pf:
        have = set(pf.schema_arrow.names)
    df = read_part(file, [c for c in cols if c in have])
    df = df[HOLDOUT.of(df[schema.ID].to_numpy()) == TEST]
    y = _labels(df, schema.CLASS, str(file))
    df = df[y >= 0]  # unlabelled holdout rows are not scored: only counted
    return block_stats(y[y >= 0], model.predict_proba(df), _opt(df, "alpha"), _opt(df, "delta"),
                       _opt(df, schema.REDSHIFT)) | {"n_unlabelled": int((y < 0).sum())}


def holdout(client, model, files, quiet: bool = False) -> dict:
    """Metrics of ``model`` on the labelled rows of the holdout split (id hash) of a dataset."""
    parts = track(client.map(_holdout_task, list(files), model=model, pure=False), "evaluate", quiet)
    return finalize(merge(parts))


def _predictions_task(file: str) -> dict:
    df = read_part(file)
    probs = df[list(schema.PROBS)].to_numpy(np.float64)
    return block_stats(_labels(df, schema.CLASS, str(file)), probs, _opt(df, "alpha"), _opt(df, "delta"),
                       _opt(df, schema.REDSHIFT))


def predictions(client, path, quiet: bool = False, storage_options: dict | None = None) -> dict:
    """Metrics of a predictions dataset written by ``astrodask predict`` (needs the true ``class`` column)."""
    from .dataset import open_dataset
    from .storage import Location

    ds = open_dataset(Location.of(path, storage_options), kind="predictions")
    ds.require([schema.CLASS, *schema.PROBS], "to evaluate predictions")
    parts = track(client.map(_predictions_task, list(ds.files), pure=False), "evaluate", quiet)
    return finalize(merge(parts))


def run(client, predictions_path, out_dir, overwrite: bool = False, resume: bool = False,
        quiet: bool = False, title: str = "astrodask evaluation", extra: dict | None = None,
        storage_options: dict | None = None) -> dict:
    """Evaluate a predictions dataset into ``out_dir`` (metrics.json, figures, index.html), committed atomically.

    ``extra`` maps file names to files copied in beside the metrics (e.g. the model's holdout metrics). With
    ``resume``, an evaluation already made of the same predictions is kept as it is.
    """
    from . import report
    from .dataset import open_dataset
    from .storage import Location, StagedOutput, read_json, write_json_atomic

    ds = open_dataset(Location.of(predictions_path, storage_options), kind="predictions")
    dest = Location.of(out_dir, storage_options)
    fp = {"stage": "evaluate", "predictions": ds.identity()}
    with StagedOutput(dest, overwrite, resume, kind="evaluation", fingerprint=fp, inputs=(ds.location,)) as out:
        if out.done:
            return read_json(dest / "metrics.json")
        metrics = predictions(client, ds.location, quiet=quiet)
        write_json_atomic(out.staging / "metrics.json", metrics)
        report.write(out.staging, metrics, None, title=title,
                     rows_label="All predicted rows (training, validation and holdout rows together; the holdout "
                                "alone is in holdout_metrics.json)" if extra else "Predicted rows with a true class")
        for name, src in (extra or {}).items():
            (out.staging / name).write_bytes(Location.of(src, storage_options).read_bytes())
        out.commit({"predictions": ds.path, "accuracy": metrics["accuracy"]})
    return metrics
