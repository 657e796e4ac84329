"""The training cache policy (learn.blocks.compact_bytes and choose_cache) on its own."""

from __future__ import annotations

import numpy as np
import pytest

from astrodask.dataset import HOLDOUT, validation_split
from astrodask.features import RECIPES, spec_from_quantiles
from astrodask.features.splines import QUANTILE_LEVELS
from astrodask.learn.blocks import choose_cache, compact_bytes


def _spec(feature_set: str):
    recipe = RECIPES[feature_set]
    q = np.repeat(np.linspace(-1.0, 1.0, len(QUANTILE_LEVELS))[:, None], 6, axis=1)
    base = np.repeat(np.linspace(-1.0, 1.0, len(QUANTILE_LEVELS))[:, None], len(recipe.base), axis=1)
    return spec_from_quantiles(feature_set, recipe, q, base, np.zeros(len(recipe.base)), np.ones(len(recipe.base)))


@pytest.mark.parametrize("feature_set, per_row", [
    # 13 base features (float32); 15 distinct bases (10 splines at 10 knots, asinh_z and 4 colours at 5 knots
    # for the tensors) x (4 float32 values + a uint8 index); an int8 label
    ("spectroscopic", 13 * 4 + 15 * 17 + 1),
    # 12 base; 12 splines at 10 knots (the fine tensors reuse them) + the 5 tensor features at 7 knots
    ("photometric", 12 * 4 + 17 * 17 + 1),
])
def test_compact_bytes_count_the_training_and_validation_rows_only(feature_set, per_row):
    spec = _spec(feature_set)
    assert spec.n_features in (329, 1281)  # the dense rows were 4 bytes per feature
    # the holdout (20 %) is never kept: 80 % of the rows
    assert compact_bytes(1_000_000, spec, HOLDOUT) == pytest.approx(0.8 * 1_000_000 * per_row)
    # the estimator's split has no holdout: every row is kept
    assert compact_bytes(1000, spec, validation_split(0.1)) == pytest.approx(1000 * per_row)


@pytest.mark.parametrize("need, memory, expected", [
    (1.0, 0, "memory"),            # memory unknown (in this process): in memory
    (4.9 * 2**30, 10 * 2**30, "memory"),
    (5.0 * 2**30, 10 * 2**30, "spill"),  # at half of the workers' memory: to their disks
    (20 * 2**30, 10 * 2**30, "spill"),
])
def test_auto_keeps_the_blocks_in_memory_below_half_the_workers_memory(need, memory, expected):
    assert choose_cache("auto", need, memory) == expected


@pytest.mark.parametrize("choice", ["memory", "spill", "stream"])
def test_an_explicit_choice_is_kept_whatever_the_memory(choice):
    assert choose_cache(choice, 1e15, 1) == choice
    assert choose_cache(choice, 1.0, 0) == choice
