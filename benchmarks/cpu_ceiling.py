"""How much two processes can get out of this machine's cores: the ceiling of the 2-workers-vs-1 target.

    python benchmarks/cpu_ceiling.py            # ~2 min

The training gradient kernel (``loss_kernel.compact_sums`` through ``blocks.grad_sums``) runs on one compact block
of real SDSS17 rows, with nothing else to do: no Dask, no I/O, no round trips. Each figure is the block's rows
per second, summed over the processes running it at once:

* ``kernel``: the gradient of a spectroscopic model (the training epoch's work) and of a photometric one;
* ``alu``: a numba loop of dependent float multiply-adds on registers (no memory traffic at all).

``2 processes / 1 process`` is then the most that two Dask workers can gain over one on the same machine, for
that work. Writes ``results/cpu_ceiling.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

HERE = Path(__file__).resolve().parent
SDSS17 = common.SDSS17


def _block(feature_set: str, copies: int):
    """A compact block of ``copies`` x SDSS17 (all labelled rows in TRAIN), its spec, weights and a theta."""
    import numpy as np
    import pandas as pd

    from astrodask.dataset import SplitRule
    from astrodask.learn import SDSSClassifier, blocks

    df = pd.read_csv(SDSS17)
    clf = SDSSClassifier(features=feature_set, max_iter=3).fit(df, df["class"])
    spec = clf.spec_
    rows = blocks.rows_from_frame(pd.concat([df] * copies, ignore_index=True), feature_set)
    rows = rows._replace(keys=np.arange(len(rows.labels), dtype=np.int64))
    rule = SplitRule(valid=(0.0, 0.0), test=(0.0, 0.0))
    weights = np.ones(3)
    block = blocks.make_block(rows, spec, weights, rule)
    theta = np.hstack([clf.coef_, clf.intercept_[:, None]]).astype(np.float64)
    return block, spec, weights, rule, theta


def _rate(call, units: int, seconds: float, barrier) -> float:
    """Units per second of ``call()`` (each call does ``units``) repeated for ``seconds``, started together."""
    call()  # compiled and warm
    barrier.wait()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        call()
        n += units
    return n / (time.perf_counter() - t0)


def _kernel_worker(args) -> float:
    feature_set, copies, seconds, barrier = args
    from astrodask.learn import blocks

    block, spec, weights, rule, theta = _block(feature_set, copies)
    return _rate(lambda: blocks.grad_sums(block, theta, spec, weights, rule), len(block.train.y), seconds, barrier)


def _alu_worker(args) -> float:
    _, _, seconds, barrier = args
    from astrodask.jit import jit

    @jit
    def spin(n):  # pragma: no cover - compiled
        a, b, c, d = 1.0, 1.1, 1.2, 1.3
        for _ in range(n):
            a = a * 0.999999 + 1e-7
            b = b * 0.999998 + 2e-7
            c = c * 0.999997 + 3e-7
            d = d * 0.999996 + 4e-7
        return a + b + c + d

    return _rate(lambda: spin(10_000_000), 10_000_000, seconds, barrier)


def measure(kind: str, feature_set: str, copies: int, processes: int, seconds: float) -> float:
    """Summed rate of ``processes`` processes running the same work at the same time."""
    work = {"kernel": _kernel_worker, "alu": _alu_worker}[kind]
    with mp.Manager() as manager:
        barrier = manager.Barrier(processes)
        with mp.get_context("spawn").Pool(processes) as pool:
            rates = pool.map(work, [(feature_set, copies, seconds, barrier)] * processes)
    return float(sum(rates))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=12.0, help="timed span of each run")
    ap.add_argument("--copies", type=int, default=3, help="SDSS17 copies in the block (3: ~300k rows, ~100 MB)")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    if not SDSS17.exists():
        print(f"skipped: {SDSS17} is absent (the shared SDSS data)", file=sys.stderr)
        return 0
    cases = [("kernel", "spectroscopic"), ("kernel", "photometric"), ("alu", "-")]
    rows = []
    for kind, fs in cases:
        one = measure(kind, fs, args.copies, 1, args.seconds)
        two = measure(kind, fs, args.copies, 2, args.seconds)
        rows.append({"work": kind, "features": fs, "one": one, "two": two, "ratio": two / one})
        print(f"{kind:6s} {fs:13s} 1 process {one:,.0f}/s  2 processes {two:,.0f}/s  ratio {two / one:.2f}",
              flush=True)
    mach = common.machine()
    meta = {"date": dt.datetime.now().isoformat(timespec="seconds"), "cpus": mach["nproc"], "cpu": mach["cpu"],
            "seconds": args.seconds, "copies": args.copies}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cpu_ceiling.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    unit = {"kernel": "rows/s", "alu": "multiply-adds/s (x4)"}
    lines = ["# Two processes against one on this machine's cores", "",
             f"{meta['date']}; {meta['cpus']} CPUs ({meta['cpu']}); each figure summed over the processes, "
             f"{args.seconds:g} s timed after compiling. Made by `benchmarks/cpu_ceiling.py`.", "",
             "| work | features | 1 process | 2 processes at once | 2 / 1 |", "|---|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['work']} | {r['features']} | {r['one']:,.0f} {unit[r['work']]} | {r['two']:,.0f} | "
                     f"{r['ratio']:.2f}x |")
    (args.out / "cpu_ceiling.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
