"""How many training rows the photometric recipe (a spectroscopic model's companion) needs: its holdout accuracy
and macro-F1 on the real SDSS17 file against the number of distinct training rows, each a hash subsample of the
same TRAIN split (``SplitRule.sampled``, as ``companion_rows`` draws it), with the validation rows in proportion.

    python benchmarks/companion_rows.py [--csv ../shared/data/sdss17.csv] [--out benchmarks/results]

Every fit runs in this process (``trainer.fit_one`` on the in-process backend) with the default options; the
holdout is the same 20 % TEST split (19,999 rows) for every size. Writes ``companion_rows_sdss17.md`` and
``.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import date
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

ROOT = common.ROOT
DEFAULT_CSV = common.SDSS17
SIZES = (2_500, 5_000, 10_000, 20_000, 40_000, 0)  # 0: every training row


def measure(csv: Path) -> list[dict]:
    from sklearn.metrics import f1_score

    from astrodask import schema
    from astrodask.cluster.backend import InProcess
    from astrodask.dataset import HOLDOUT, TEST, TRAIN
    from astrodask.learn import blocks, trainer
    from astrodask.learn.config import TrainOptions

    df = pd.read_csv(csv).astype(dict.fromkeys((*schema.BANDS, schema.REDSHIFT), "float32"))
    rows = blocks.rows_from_frame(df, "photometric")
    split = HOLDOUT.of(rows.keys)
    n_train = int(((split == TRAIN) & (rows.labels >= 0)).sum())
    test = df[split == TEST]
    truth = test[schema.CLASS].to_numpy()
    out = []
    for size in SIZES:
        rule = HOLDOUT.sampled(size, n_train)
        t0 = time.perf_counter()
        fitted = trainer.fit_one(InProcess(), [rows], len(df), TrainOptions(features="photometric", report=False),
                                 rule, where=str(csv), quiet=True, log=lambda _: None, check_size=False)
        pred = fitted.model.predict(test)
        out.append({"requested": size, "train_rows": int(fitted.counts.train.sum()),
                    "valid_rows": int(fitted.counts.valid.sum()), "epochs": len(fitted.history),
                    "seconds": time.perf_counter() - t0, "accuracy": float((pred == truth).mean()),
                    "macro_f1": float(f1_score(truth, pred, average="macro")), "test_rows": len(truth)})
        print(json.dumps(out[-1]), flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args(argv)
    if not args.csv.is_file():
        print(f"needs the real SDSS17 file at {args.csv}")
        return 1
    res = measure(args.csv)
    lines = [f"# Photometric recipe vs training rows, SDSS17 ({date.today()})", "",
             "Hash subsamples of the same TRAIN split (`SplitRule.sampled`, as `companion_rows` draws the companion's "
             "rows), validation rows in proportion; default options; the same 20 % holdout for every size.", "",
             "| training rows | validation rows | epochs | holdout accuracy | holdout macro-F1 | fit s |",
             "|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['train_rows']:,} | {r['valid_rows']:,} | {r['epochs']} | {r['accuracy']:.4f} | "
              f"{r['macro_f1']:.4f} | {r['seconds']:.1f} |" for r in res]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "companion_rows_sdss17.md").write_text("\n".join(lines) + "\n")
    (args.out / "companion_rows_sdss17.json").write_text(json.dumps(res, indent=1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
