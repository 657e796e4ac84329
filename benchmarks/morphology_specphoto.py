"""Photometric+morphology on the real SpecPhoto sample: astrodask next to HistGradientBoosting, same features.

    python benchmarks/morphology_specphoto.py [--csv ../shared/data/sdss/specphoto_psf_model_astrohackweek2014.csv]

Converts the sample with ``--columns mag_u=psf_u,...`` (its ``mag_*`` are PSF magnitudes), trains astrodask with
``--features photometric`` (photometric+morphology, default options) and without morphology, and fits
scikit-learn's ``HistGradientBoostingClassifier`` (defaults; and class_weight balanced) on the same 17 base
features (magnitudes, colours, PSF - model) of the same labelled non-holdout rows. All are scored on the same
hash-split holdout (20 %, never trained on).

The holdout (about 1,500 rows) is too small to choose a recipe on, so the benchmark also reports K-fold
cross-validation inside the non-holdout rows only (the holdout rows are never read for it): the non-holdout
buckets 200..999 of the obj_ID hash cut into ``--folds`` folds (160 buckets each for 5); for each fold the model
trains on the others by the library's own trainer (``trainer.fit_one``, in this process, default options), with
the first 1/8 of each training fold's buckets as its early-stopping validation rows (the stage's 10 of 80), and
HistGradientBoosting on all of the other folds' rows. ``--repeats R`` adds R - 1 more fold assignments (another
obj_ID hash). ``--train-options JSON`` sets TrainOptions fields for every astrodask fit (holdout and CV), e.g.
``'{"l2": 0.01, "patience": 0}'``; ``--label`` names the results. Writes ``morphology_specphoto[_LABEL].md`` /
``.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

ROOT = common.ROOT
DEFAULT_CSV = common.SHARED / "sdss" / "specphoto_psf_model_astrohackweek2014.csv"


def _scores(y, pred) -> dict:
    from sklearn.metrics import accuracy_score, f1_score

    return {"accuracy": float(accuracy_score(y, pred)), "macro_f1": float(f1_score(y, pred, average="macro"))}


def fold_assignment(ids: np.ndarray, repeat: int, folds: int) -> tuple[np.ndarray, np.ndarray]:
    """(fold, early-stopping row) of non-holdout rows: repeat 0 by the dataset's own hash bucket (200..999, cut in
    ``folds`` ranges), other repeats by the bucket of the ids XOR a constant (0..999); the first 1/8 of each
    fold's range validates when the fold trains."""
    from astrodask.dataset import N_BUCKETS, bucket

    if repeat == 0:
        b, lo = bucket(ids).astype(np.int64) - 200, 200
    else:
        b, lo = bucket(ids ^ np.uint64(0x9E3779B97F4A7C15 * repeat % 2**64)).astype(np.int64), 0
    width = (N_BUCKETS - lo) / folds
    fold = np.minimum((b / width).astype(np.int64), folds - 1)
    return fold, (b - fold * width) < width / 8


def cross_validate(df: pd.DataFrame, folds: int, repeats: int, train_options: dict | None = None) -> dict:
    """Macro-F1 per fold of astrodask photometric+morphology (default options) and HistGradientBoosting (defaults,
    and balanced) on the same folds of ``df`` (non-holdout labelled rows only)."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import f1_score

    from astrodask import schema
    from astrodask.cluster.backend import InProcess
    from astrodask.dataset import TEST, TRAIN, VALID, SplitRule
    from astrodask.features import RECIPES, base_matrix
    from astrodask.learn.blocks import rows_from_frame
    from astrodask.learn.config import TrainOptions
    from astrodask.learn.trainer import fit_one

    @dataclass(frozen=True, eq=False)
    class FoldSplit(SplitRule):
        """The split of one fold: looked up by id (the hash-bucket ranges of SplitRule cannot express it)."""

        ids: np.ndarray = None
        split: np.ndarray = None

        def of(self, keys):
            return self.split[np.searchsorted(self.ids, keys)]

    ids = df[schema.ID].to_numpy(np.uint64)
    order = np.argsort(ids)
    y = df[schema.CLASS].to_numpy()
    items = [rows_from_frame(df, "photometric+morphology")]
    x = base_matrix(df, RECIPES["photometric+morphology"].base, None)
    names = ("astrodask photometric+morphology", "HistGradientBoosting", "HistGradientBoosting balanced")
    out = {n: [] for n in names}
    opts = TrainOptions(**{"features": "photometric+morphology", "report": False, **(train_options or {})})
    for r in range(repeats):
        fold, early = fold_assignment(ids, r, folds)
        for f in range(folds):
            held = fold == f
            split = np.where(held, TEST, np.where(early, VALID, TRAIN)).astype(np.int8)
            rule = FoldSplit(test=(0, 200), valid=(200, 300), ids=ids[order], split=split[order])
            fitted = fit_one(InProcess(), items, len(df), opts, rule, where=f"fold {f}", quiet=True,
                             log=lambda m: None, check_size=False)
            out[names[0]].append(f1_score(y[held], np.asarray(fitted.model.predict(df[held])), average="macro"))
            for name, kw in zip(names[1:], ({}, {"class_weight": "balanced"})):
                hgb = HistGradientBoostingClassifier(random_state=0, **kw).fit(x[~held], y[~held])
                out[name].append(f1_score(y[held], hgb.predict(x[held]), average="macro"))
            print(f"repeat {r} fold {f}: " + ", ".join(f"{n} {v[-1]:.4f}" for n, v in out.items()), flush=True)
    return {n: {"macro_f1": [float(v) for v in vals], "mean": float(np.mean(vals)), "std": float(np.std(vals)),
                "wins_vs_hgb": int(np.sum(np.array(vals) > np.array(out[names[1]])))}
            for n, vals in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv", default=str(DEFAULT_CSV))
    ap.add_argument("--work", default=str(ROOT / "benchmarks" / "work" / "morphology"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--folds", type=int, default=5, help="cross-validation folds inside the non-holdout rows")
    ap.add_argument("--repeats", type=int, default=1, help="fold assignments (repeated K-fold); 0: no CV")
    ap.add_argument("--train-options", type=json.loads, default={}, help="TrainOptions fields as JSON, every fit")
    ap.add_argument("--label", default="", help="suffix of the result files")
    args = ap.parse_args()

    from sklearn.ensemble import HistGradientBoostingClassifier

    from astrodask import ingest, schema
    from astrodask.cluster import ClusterConfig, connect
    from astrodask.dataset import HOLDOUT, TEST, open_dataset, read_part
    from astrodask.features import RECIPES, base_matrix
    from astrodask.learn import TrainConfig, stage

    work, out = Path(args.work), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    dataset = work / "dataset"
    given = ",".join(f"mag_{b}=psf_{b}" for b in schema.BANDS)
    rows = {}
    with connect(ClusterConfig(n_workers=args.workers), quiet=True) as client:
        ingest.run(ingest.ConvertConfig((args.csv,), str(dataset), columns=given, overwrite=True, quiet=True), client)
        for name, morphology in (("astrodask photometric+morphology", True), ("astrodask photometric", False)):
            t0 = time.perf_counter()
            r = stage.run(TrainConfig(str(dataset), str(work / name.replace(" ", "_")), features="photometric",
                                      morphology=morphology, overwrite=True, quiet=True, report=False,
                                      **args.train_options), client)
            rows[name] = {"accuracy": r.metrics.accuracy, "macro_f1": r.metrics.macro_f1,
                          "seconds": time.perf_counter() - t0, "epochs": len(r.history)}

    df = pd.concat([read_part(f) for f in open_dataset(str(dataset)).files], ignore_index=True)
    df = df[df[schema.CLASS].notna()]
    test = HOLDOUT.of(df[schema.ID].to_numpy(np.uint64)) == TEST
    x = base_matrix(df, RECIPES["photometric+morphology"].base, None)
    y = df[schema.CLASS].to_numpy()
    for name, kw in (("HistGradientBoosting", {}), ("HistGradientBoosting balanced", {"class_weight": "balanced"})):
        t0 = time.perf_counter()
        hgb = HistGradientBoostingClassifier(random_state=0, **kw).fit(x[~test], y[~test])
        rows[name] = {**_scores(y[test], hgb.predict(x[test])), "seconds": time.perf_counter() - t0}

    cv = (cross_validate(df[~test].reset_index(drop=True), args.folds, args.repeats, args.train_options)
          if args.repeats else {})

    doc = {"date": date.today().isoformat(), "machine": platform.platform(), "csv": args.csv,
           "holdout_rows": int(test.sum()), "train_rows": int((~test).sum()), "results": rows,
           "train_options": args.train_options,
           "cv": {"folds": args.folds, "repeats": args.repeats, "rows": int((~test).sum()), "results": cv}}
    name = "morphology_specphoto" + (f"_{args.label}" if args.label else "")
    (out / f"{name}.json").write_text(json.dumps(doc, indent=2) + "\n")
    lines = [f"# Photometric+morphology on the real SpecPhoto sample ({doc['date']})", "",
             f"{doc['train_rows']:,} labelled rows to learn from, {doc['holdout_rows']:,} holdout rows (hash split); "
             "same 17 base features for HistGradientBoosting."
             + (f" astrodask's options: `{json.dumps(args.train_options)}`." if args.train_options else ""), "",
             "| model | holdout accuracy | holdout macro-F1 | seconds |", "|---|---|---|---|"]
    lines += [f"| {k} | {v['accuracy']:.4f} | {v['macro_f1']:.4f} | {v['seconds']:.1f} |" for k, v in rows.items()]
    if cv:
        n = args.folds * args.repeats
        lines += ["", f"Cross-validation inside the {int((~test).sum()):,} non-holdout rows ({args.folds} folds by "
                  f"obj_ID hash{f', {args.repeats} fold assignments' if args.repeats > 1 else ''}; the holdout rows "
                  "never read): macro-F1 mean +- standard deviation over the folds, and per fold.", "",
                  f"| model | CV macro-F1 | folds above HistGradientBoosting (of {n}) | per fold |", "|---|---|---|---|"]
        lines += [f"| {k} | {v['mean']:.4f} +- {v['std']:.4f} | {v['wins_vs_hgb'] if 'balanced' in k or 'astro' in k else '-'}"
                  f" | {' '.join(f'{m:.3f}' for m in v['macro_f1'])} |" for k, v in cv.items()]
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
