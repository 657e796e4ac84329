"""Accuracy on the real SDSS17 file: astrodask parallel and incremental modes vs scikit-learn in memory.

    python benchmarks/parity_sdss17.py [--csv ../shared/data/sdss17.csv] [--out benchmarks/results]

For each feature set, trains astrodask (parallel, default options; incremental, default options) on the
converted dataset, then fits scikit-learn's ``LogisticRegression`` in one process on exactly the same
expanded features (the parallel model's FeatureSpec) and the same id-hash split, with the same L2
strength (C = 1 / (l2 * n_train)), and reports holdout accuracy and macro-F1 side by side.
Writes ``parity_sdss17.md`` and ``parity_sdss17.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

ROOT = common.ROOT
DEFAULT_CSV = common.SDSS17


def _sklearn(model_dir: Path, dataset: Path, l2: float) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score, log_loss

    from astrodask.dataset import HOLDOUT, TEST, TRAIN, open_dataset, read_part
    from astrodask.model import SoftmaxModel

    spec = SoftmaxModel.load(model_dir).spec
    df = pd.concat([read_part(f) for f in open_dataset(str(dataset)).files], ignore_index=True)
    split = HOLDOUT.of(df["obj_ID"].to_numpy())
    x, y = spec.expand(df), df["class"].to_numpy()
    tr, te = split == TRAIN, split == TEST
    t0 = time.perf_counter()
    clf = LogisticRegression(C=1.0 / (l2 * tr.sum()), max_iter=5000).fit(x[tr], y[tr])
    pred = clf.predict(x[te])
    proba = clf.predict_proba(x[te])
    onehot = (y[te][:, None] == clf.classes_[None, :]).astype(float)
    return {"accuracy": accuracy_score(y[te], pred), "macro_f1": f1_score(y[te], pred, average="macro"),
            "log_loss": log_loss(y[te], proba, labels=clf.classes_),
            "brier": float(((proba - onehot) ** 2).sum(axis=1).mean()),  # as astrodask.evaluate: summed over classes
            "seconds": time.perf_counter() - t0, "iterations": int(np.max(clf.n_iter_)), "features": x.shape[1]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv", default=str(DEFAULT_CSV))
    ap.add_argument("--work", default=str(ROOT / "benchmarks" / "work" / "parity"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    from astrodask import ingest
    from astrodask.cluster import ClusterConfig, connect
    from astrodask.learn import TrainConfig, TrainOptions, stage
    from astrodask.storage import is_complete

    work, out = Path(args.work), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    dataset = work / "dataset"
    rows = []
    with connect(ClusterConfig(n_workers=args.workers), quiet=True) as client:
        if not is_complete(dataset):
            ingest.run(ingest.ConvertConfig((args.csv,), str(dataset), overwrite=True, quiet=True), client)
        for features in ("spectroscopic", "photometric"):
            res = {}
            for mode in ("parallel", "incremental"):
                cfg = TrainConfig(str(dataset), str(work / f"{features}-{mode}"), features=features, mode=mode,
                                  overwrite=True, quiet=True, report=False)
                t0 = time.perf_counter()
                r = stage.run(cfg, client)
                res[mode] = {"accuracy": r.metrics.accuracy, "macro_f1": r.metrics.macro_f1,
                             "log_loss": r.metrics.log_loss, "brier": r.metrics.brier,
                             "epochs": len(r.history), "seconds": time.perf_counter() - t0}
                print(features, mode, res[mode], flush=True)
            res["sklearn"] = _sklearn(work / f"{features}-parallel", dataset, TrainOptions().l2)
            print(features, "sklearn", res["sklearn"], flush=True)
            rows.append((features, res))

    lines = [f"# Holdout accuracy on SDSS17 ({Path(args.csv).name}), {date.today()}", "",
             f"Machine: {platform.node()}, {platform.processor() or platform.machine()}; "
             f"{args.workers} workers. Holdout: 20 % of rows by obj_ID hash (19,999 rows).", "",
             "| features | system | accuracy | macro-F1 | log-loss | Brier | epochs | seconds |",
             "|---|---|---|---|---|---|---|---|"]
    for features, res in rows:
        for name, key in (("astrodask parallel (L-BFGS)", "parallel"), ("astrodask incremental (dask-ml SGD)",
                                                                           "incremental"),
                          ("scikit-learn LogisticRegression, in memory, same features", "sklearn")):
            r = res[key]
            lines.append(f"| {features} | {name} | {r['accuracy']:.4f} | {r['macro_f1']:.4f} | "
                         f"{r.get('log_loss', float('nan')):.4f} | {r.get('brier', float('nan')):.4f} | "
                         f"{r.get('epochs', r.get('iterations'))} | {r['seconds']:.0f} |")
        gap = 100 * (res["parallel"]["accuracy"] - res["sklearn"]["accuracy"])
        lines.append(f"| {features} | parallel - scikit-learn | {gap:+.2f} pt | | | | | |")
    (out / "parity_sdss17.md").write_text("\n".join(lines) + "\n")
    (out / "parity_sdss17.json").write_text(json.dumps(rows, indent=1, default=float))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
