"""The training cache policy (learn.blocks.expanded_bytes and choose_cache) on its own."""

from __future__ import annotations

import pytest

from astrodask.dataset import HOLDOUT, validation_split
from astrodask.learn.blocks import choose_cache, expanded_bytes


def test_expanded_bytes_counts_the_training_and_validation_rows_only():
    # the holdout (20 %) is never persisted: 80 % of the rows, features + label + weight, 4 bytes each
    assert expanded_bytes(1_000_000, 330, HOLDOUT) == pytest.approx(0.8 * 1_000_000 * 332 * 4)
    # the estimator's split has no holdout: every row is kept
    assert expanded_bytes(1000, 10, validation_split(0.1)) == pytest.approx(1000 * 12 * 4)


@pytest.mark.parametrize("need, memory, expected", [
    (1.0, 0, "memory"),            # memory unknown (in this process): persist
    (4.9 * 2**30, 10 * 2**30, "memory"),
    (5.0 * 2**30, 10 * 2**30, "stream"),  # at half of the workers' memory: stream
    (20 * 2**30, 10 * 2**30, "stream"),
])
def test_auto_persists_below_half_the_workers_memory(need, memory, expected):
    assert choose_cache("auto", need, memory) == expected


@pytest.mark.parametrize("choice", ["memory", "stream"])
def test_an_explicit_choice_is_kept_whatever_the_memory(choice):
    assert choose_cache(choice, 1e15, 1) == choice
    assert choose_cache(choice, 1.0, 0) == choice
