"""Which models the warm start applies to (learn.trainer.warm_fraction), and the patience that follows it
(learn.trainer.patience_of), on their own."""

from __future__ import annotations

import numpy as np
import pytest

from astrodask.errors import ConfigError
from astrodask.learn.config import TrainOptions
from astrodask.learn.feature_stats import Counts
from astrodask.learn.trainer import (
    PATIENCE,
    WARM_AUTO_MIN,
    WARM_AUTO_ROWS,
    WARM_AUTO_SHARE,
    WARM_PATIENCE,
    patience_of,
    warm_fraction,
)


def _counts(n_train: int) -> Counts:
    by_split = np.zeros((3, 3), np.int64)
    by_split[0] = [n_train - 2 * (n_train // 3), n_train // 3, n_train // 3]
    return Counts(by_split)


@pytest.mark.parametrize("n_train, rows", [
    (70_000, 0),  # SDSS17's training split: a tenth is too few rows to start from
    (250_000, 0),  # a companion's default subsample
    (WARM_AUTO_MIN * 10 - 1, 0),
    (WARM_AUTO_MIN * 10, WARM_AUTO_MIN),  # a tenth of the rows
    (1_050_000, 105_000),  # 1.5M rows with the default split
    (7_000_000, WARM_AUTO_ROWS),  # capped
])
def test_unset_warm_start_rows_warm_starts_large_sets_on_a_tenth_at_most_the_cap(n_train, rows):
    share = warm_fraction(TrainOptions(), _counts(n_train))
    assert share * n_train == pytest.approx(rows)
    assert share <= WARM_AUTO_SHARE


@pytest.mark.parametrize("given, n_train, share", [
    (0, 7_000_000, 0.0),  # never
    (2000, 8000, 0.25),  # an explicit size is kept, however large its share
    (250_000, 70_000, 1.0),  # more than there are: every row
])
def test_an_explicit_warm_start_rows_is_kept(given, n_train, share):
    assert warm_fraction(TrainOptions(warm_start_rows=given), _counts(n_train)) == pytest.approx(share)


def test_the_incremental_mode_never_warm_starts():
    assert warm_fraction(TrainOptions(mode="incremental"), _counts(7_000_000)) == 0.0
    assert warm_fraction(TrainOptions(mode="incremental", warm_start_rows=1000), _counts(8000)) == 0.0


def test_a_negative_warm_start_rows_is_refused_naming_the_option():
    with pytest.raises(ConfigError, match="warm_start_rows"):
        TrainOptions(warm_start_rows=-1)


def test_unset_patience_is_shorter_after_a_warm_start_and_a_given_one_is_kept():
    assert WARM_PATIENCE < PATIENCE
    big, small = _counts(7_000_000), _counts(70_000)
    opts = TrainOptions()
    assert patience_of(opts, warm_fraction(opts, big)) == WARM_PATIENCE
    assert patience_of(opts, warm_fraction(opts, small)) == PATIENCE
    assert patience_of(TrainOptions(warm_start_rows=0), warm_fraction(TrainOptions(warm_start_rows=0), big)) == PATIENCE
    for given in (0, 4, 50):
        o = TrainOptions(patience=given)
        assert patience_of(o, warm_fraction(o, big)) == given
        assert patience_of(o, warm_fraction(o, small)) == given


def test_a_negative_patience_is_refused_naming_the_option():
    with pytest.raises(ConfigError, match="patience"):
        TrainOptions(patience=-1)
