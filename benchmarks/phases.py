"""Per-phase times of training on a dataset, in one process with a LocalCluster (2 workers): cluster start, the
quantile pass, persisting the feature blocks, the scaler, three gradient evaluations, the holdout evaluation.

    python benchmarks/phases.py benchmarks/work/speed/1.5M/dataset

Used for benchmarks/results/profile_speed.md (the dataset is the one benchmarks/speed.py makes).
"""

from __future__ import annotations

import sys
import time

T0 = time.perf_counter()
import numpy as np
from distributed import wait

from astrodask import schema
from astrodask.cluster import ClusterConfig, connect
from astrodask.cluster.backend import OnCluster
from astrodask.dataset import (
    HOLDOUT,
    open_dataset,
)
from astrodask.learn import blocks, feature_stats
from astrodask.model import SoftmaxModel
from astrodask.report.collect import holdout


def phase(name: str, t0: float) -> float:
    print(f"{name:24s} {time.perf_counter() - t0:6.2f} s", flush=True)
    return time.perf_counter()


def main(dataset: str) -> None:
    t = phase("imports", T0)
    with connect(ClusterConfig(), quiet=True) as client:
        t = phase("cluster start", t)
        ds = open_dataset(dataset)
        items, be = list(ds.files), OnCluster(client, quiet=True)
        fitted = feature_stats.fit_features(be, items, "spectroscopic", HOLDOUT, dataset)
        spec, counts = fitted.spec, fitted.counts
        t = phase("quantile pass", t)
        w = feature_stats.class_weights(counts, None)
        work = be.map(blocks.load_block, items, placed=True, spec=spec, weights=w, rule=HOLDOUT)
        wait(work)
        t = phase("persist blocks", t)
        spec = feature_stats.fit_scaler(be, work, spec, w, HOLDOUT)
        t = phase("scaler moments", t)
        theta = np.zeros((len(schema.CLASSES), spec.n_features + 1))
        for _ in range(3):
            be.group_sum(blocks.grad_sums, blocks.add_sums, work, theta=theta, spec=spec, weights=w, rule=HOLDOUT)
            t = phase("gradient evaluation", t)
        model = SoftmaxModel(spec, theta[:, :-1], theta[:, -1], schema.CLASSES, info={})
        holdout(client, model, ds.files, quiet=True)
        t = phase("holdout evaluation", t)
    phase("cluster close", t)


if __name__ == "__main__":
    main(sys.argv[1])
