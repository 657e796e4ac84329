"""Which parallel optimiser: full-batch gradient summed across workers + L-BFGS, or per-worker SGD averaged?

    python benchmarks/optimizer_choice.py [--dataset DIR | --csv ../shared/data/sdss17.csv] [--epochs 40]

Both run on the same persisted feature blocks of a LocalCluster (2 workers) and are scored on the same
validation split after every epoch (one pass over the training rows):

* ``lbfgs``: astrodask's parallel mode (every worker computes the softmax loss gradient of its blocks, the
  sums are added on the workers, the client steps L-BFGS);
* ``sgd-avg``: each worker runs one epoch of mini-batch SGD on each of its blocks from the current weights,
  and the client averages the block results weighted by rows (one-shot parameter averaging, as in
  "parallelized SGD"); step size 1/sqrt(epoch) decay.

Writes ``optimizer_choice.md`` and ``optimizer_choice.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

ROOT = common.ROOT


def sgd_epoch(block, theta, lr, l2, seed, batch=256):
    """One pass of mini-batch softmax SGD over a block's training rows; returns (theta, rows)."""
    from astrodask.model import softmax

    x, y = block.train.x, block.train.y
    n = len(y)
    theta = theta.copy()
    order = np.random.default_rng(seed).permutation(n)
    for s in range(0, n, batch):
        idx = order[s:s + batch]
        xb, yb = x[idx].astype(np.float64), y[idx]
        p = softmax(xb @ theta[:, :-1].T + theta[:, -1])
        p[np.arange(len(yb)), yb] -= 1.0
        g = np.empty_like(theta)
        g[:, :-1] = p.T @ xb / len(yb) + l2 * theta[:, :-1]
        g[:, -1] = p.mean(axis=0)
        theta -= lr * g
    return theta, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv", default=str(common.SDSS17))
    ap.add_argument("--dataset", default=None, help="an astrodask dataset (default: convert --csv)")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--lr", type=float, default=0.5)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()

    from astrodask import ingest, schema
    from astrodask.cluster import ClusterConfig, connect
    from astrodask.cluster.backend import OnCluster
    from astrodask.dataset import HOLDOUT, open_dataset
    from astrodask.learn import TrainConfig, stage
    from astrodask.learn import blocks as wb
    from astrodask.learn.feature_stats import class_weights, fit_features
    from astrodask.learn.trainer import parallel_evaluator
    from astrodask.storage import is_complete

    work = ROOT / "benchmarks" / "work" / "optimizer"
    work.mkdir(parents=True, exist_ok=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with connect(ClusterConfig(n_workers=2), quiet=True) as client:
        dataset = Path(args.dataset) if args.dataset else work / "dataset"
        if not args.dataset and not is_complete(dataset):
            ingest.run(ingest.ConvertConfig((args.csv,), str(dataset), overwrite=True, quiet=True), client)
        cfg = TrainConfig(str(dataset), str(work / "lbfgs"), epochs=args.epochs, patience=0, overwrite=True,
                          quiet=True, report=False)
        r = stage.run(cfg, client)
        curves = {"lbfgs": [(h.seconds, h.valid_accuracy) for h in r.history]}

        # the same features and blocks (persisted as in the memory cache, from the fitted but unscaled
        # spec), driven by averaged per-block SGD
        backend = OnCluster(client, quiet=True)
        ds = open_dataset(str(dataset))
        fitted = fit_features(backend, list(ds.files), cfg.features, HOLDOUT, ds.path)
        spec, counts = fitted.spec, fitted.counts
        weights = class_weights(counts, cfg.class_weight)
        blocks = backend.map(wb.load_block, list(ds.files), "persist", spec=spec, weights=weights, rule=HOLDOUT)
        evaluate = parallel_evaluator(backend, blocks, spec, weights, HOLDOUT)
        theta = np.zeros((len(schema.CLASSES), spec.n_features + 1))
        t0 = time.perf_counter()
        sgd = []
        for epoch in range(1, args.epochs + 1):
            lr = args.lr / np.sqrt(epoch)
            res = client.gather(client.map(sgd_epoch, blocks, theta=theta, lr=lr, l2=cfg.l2, seed=epoch,
                                           pure=False))
            n = sum(k for _, k in res)
            theta = sum(t * (k / n) for t, k in res)
            sgd.append((time.perf_counter() - t0, evaluate(theta).valid.accuracy))
        curves["sgd-avg"] = sgd

    lines = ["# Parallel optimiser: L-BFGS on summed gradients vs averaged per-worker SGD", "",
             f"Dataset: {dataset} ; 2 workers ; validation accuracy after each epoch (one pass over the training rows).",
             "", "| epoch | L-BFGS accuracy | L-BFGS s | SGD-avg accuracy | SGD-avg s |", "|---|---|---|---|---|"]
    for e in sorted({1, 2, 5, 10, 20, 30, args.epochs} & set(range(1, args.epochs + 1))):
        a, b = curves["lbfgs"][min(e, len(curves["lbfgs"])) - 1], curves["sgd-avg"][e - 1]
        lines.append(f"| {e} | {a[1]:.4f} | {a[0]:.1f} | {b[1]:.4f} | {b[0]:.1f} |")
    (out / "optimizer_choice.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for name, c in curves.items():
        ax.plot(range(1, len(c) + 1), [a for _, a in c], label=name)
    ax.set_xlabel("epoch (pass over the training rows)")
    ax.set_ylabel("validation accuracy")
    ax.set_ylim(0.9, 0.985)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "optimizer_choice.png", dpi=110)


if __name__ == "__main__":
    main()
