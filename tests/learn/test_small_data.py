"""Training too small to trust is warned about, naming the counts (issue 24, M10): fewer than ~100 training rows in
a class, or fewer than ~100 held-out rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
from support.cli import message_lines, ok, run_cli

from astrodask.dataset import SplitRule
from astrodask.learn.feature_stats import Counts
from astrodask.learn.trainer import small_data

HOLDOUT = SplitRule(test=(0, 10), valid=(10, 20))
NO_HOLDOUT = SplitRule(test=(0, 0), valid=(0, 10))
NOTHING_HELD = SplitRule(test=(0, 0), valid=(0, 0))


def counts(train, valid=(0, 0, 0), test=(0, 0, 0)) -> Counts:
    return Counts(np.array([train, valid, test], dtype=np.int64))


def test_enough_rows_are_not_warned_about():
    assert small_data(counts((100, 100, 100), (40, 40, 40), (34, 33, 33)), HOLDOUT) is None


def test_a_small_class_is_named_with_every_count():
    msg = small_data(counts((5000, 99, 3000), (50, 50, 50), (50, 50, 50)), HOLDOUT)
    assert msg == ("only 8,099 labelled training rows (GALAXY 5,000, QSO 99, STAR 3,000) and 150 holdout rows: with "
                   "under ~100 training rows in a class the model and its metrics are not reliable; train on more "
                   "rows"), msg


def test_a_small_holdout_is_named():
    msg = small_data(counts((500, 500, 500), (300, 300, 300), (30, 30, 39)), HOLDOUT)
    assert msg is not None and "and 99 holdout rows: with under ~100 holdout rows the model" in msg, msg


def test_without_a_holdout_the_validation_rows_are_counted():
    msg = small_data(counts((500, 500, 500), (20, 20, 20)), NO_HOLDOUT)
    assert msg is not None and "and 60 validation rows: with under ~100 validation rows" in msg, msg
    assert small_data(counts((500, 500, 500)), NOTHING_HELD) is None


def test_cli_train_prints_the_warning_line(small_csv, tmp_path):
    few = pd.read_csv(small_csv).groupby("class").head(60)
    few.to_csv(tmp_path / "few.csv", index=False)
    ok(run_cli("convert", tmp_path / "few.csv", tmp_path / "ds", "--workers", "1", "-q", timeout=300))
    r = ok(run_cli("train", tmp_path / "ds", "--model", tmp_path / "m", "--epochs", "3", "--no-report", "--workers",
                   "1", "-q", timeout=300))
    assert "report:" not in r.stdout and not (tmp_path / "m" / "report").exists(), r.stdout  # --no-report
    warned = [ln for ln in message_lines(r.stderr) if "labelled training rows" in ln]
    assert len(warned) == 1, r.stderr
    assert warned[0].startswith("[astrodask] warning: only "), warned[0]
    assert "under ~100 training rows in a class" in warned[0] and "holdout rows" in warned[0], warned[0]


def test_a_sampled_split_skips_train_and_valid_rows_by_a_second_hash_and_keeps_the_holdout():
    """``SplitRule.sampled`` (the companion's ``companion_rows``): a share of the TRAIN and VALID rows, each kept row
    in its own split, the TEST rows untouched, the same rows whatever their order."""
    from astrodask.dataset import HOLDOUT as RULE
    from astrodask.dataset import SKIPPED, TEST, TRAIN, VALID

    keys = np.arange(1, 200_001, dtype=np.uint64) * np.uint64(7919)
    full, part = RULE.of(keys), RULE.sampled(50, 200).of(keys)
    assert RULE.sampled(50, 200).sample == 0.25
    assert (part[full == TEST] == TEST).all() and (part[full != TEST] != TEST).all()
    kept = part != SKIPPED
    assert (part[kept] == full[kept]).all()
    for s in (TRAIN, VALID):
        assert abs((part[full == s] == s).mean() - 0.25) < 0.02, s
    assert (RULE.sampled(50, 200).of(keys[::-1]) == part[::-1]).all()
    assert RULE.sampled(0, 200) is RULE and RULE.sampled(200, 200) is RULE and RULE.sampled(10**9, 200) is RULE

