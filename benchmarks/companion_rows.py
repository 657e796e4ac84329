"""How many training rows the photometric recipe (a spectroscopic model's companion) needs: its holdout accuracy
and macro-F1 on the real SDSS17 file against the number of distinct training rows, each a hash subsample of the
same TRAIN split (``SplitRule.sampled``, as ``companion_rows`` draws it), with the validation rows in proportion.

    python benchmarks/companion_rows.py [--csv ../shared/data/sdss17.csv] [--out benchmarks/results]
    python benchmarks/companion_rows.py --synth 4M     # astrodask.synth rows: past SDSS17's 70k training rows

Every fit runs in this process (``trainer.fit_one`` on the in-process backend) with the default options; the
holdout is the same 20 % TEST split (19,999 rows) for every size. Writes ``companion_rows_sdss17.md`` and
``.json`` into ``--out``. SDSS17 has too few rows to show where more stop helping at survey sizes: ``--synth N``
draws N rows from ``astrodask.synth`` (a population with no repeated objects) instead, with larger sizes, and
writes ``companion_rows_synth_N``.
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
SYNTH_SIZES = (50_000, 125_000, 250_000, 500_000, 1_000_000, 2_000_000, 0)


def measure(df: pd.DataFrame, where: str, sizes=SIZES) -> list[dict]:
    from sklearn.metrics import f1_score

    from astrodask import schema
    from astrodask.cluster.backend import InProcess
    from astrodask.dataset import HOLDOUT, TEST, TRAIN
    from astrodask.learn import blocks, trainer
    from astrodask.learn.config import TrainOptions

    df = df.astype(dict.fromkeys((*schema.BANDS, schema.REDSHIFT), "float32"))
    rows = blocks.rows_from_frame(df, "photometric")
    split = HOLDOUT.of(rows.keys)
    n_train = int(((split == TRAIN) & (rows.labels >= 0)).sum())
    test = df[split == TEST]
    truth = test[schema.CLASS].to_numpy()
    out = []
    for size in sizes:
        rule = HOLDOUT.sampled(size, n_train)
        t0 = time.perf_counter()
        fitted = trainer.fit_one(InProcess(), [rows], len(df), TrainOptions(features="photometric", report=False),
                                 rule, where=where, quiet=True, log=lambda _: None, check_size=False)
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
    ap.add_argument("--synth", type=common.parse_count, default=0, help="rows of astrodask.synth instead of --csv")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args(argv)
    if not args.synth and not args.csv.is_file():
        print(f"needs the real SDSS17 file at {args.csv}")
        return 1
    if args.synth:
        source = where = f"{common.label(args.synth)} rows of astrodask.synth"
        name, sizes = f"companion_rows_synth_{common.label(args.synth)}", SYNTH_SIZES
        df = pd.concat(common.synth_frames(args.synth, 250_000), ignore_index=True)
    else:
        source, where, name, sizes = "SDSS17", str(args.csv), "companion_rows_sdss17", SIZES
        df = pd.read_csv(args.csv)
    res = measure(df, where, sizes)
    lines = [f"# Photometric recipe vs training rows, {source} ({date.today()})", "",
             "Hash subsamples of the same TRAIN split (`SplitRule.sampled`, as `companion_rows` draws the companion's "
             "rows), validation rows in proportion; default options; the same 20 % holdout for every size.", "",
             "| training rows | validation rows | epochs | holdout accuracy | holdout macro-F1 | fit s |",
             "|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['train_rows']:,} | {r['valid_rows']:,} | {r['epochs']} | {r['accuracy']:.4f} | "
              f"{r['macro_f1']:.4f} | {r['seconds']:.1f} |" for r in res]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.md").write_text("\n".join(lines) + "\n")
    (args.out / f"{name}.json").write_text(json.dumps(res, indent=1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
