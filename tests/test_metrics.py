"""The metrics' mergeable sums (metrics.EvalSums, finalize) against scikit-learn on the same rows."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, brier_score_loss, confusion_matrix, f1_score, log_loss, precision_score

from astrodask import schema
from astrodask.metrics import EvalSums, Metrics, block_stats, finalize


def _rows(seed: int, n: int = 3000):
    rng = np.random.default_rng(seed)
    y = rng.choice(3, n, p=[0.6, 0.2, 0.2])
    logits = rng.normal(size=(n, 3)) + 2.5 * np.eye(3)[y] * rng.uniform(0, 1, (n, 1))
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    return y, p


def test_sums_of_partitions_equal_the_sums_of_all_rows_and_metrics_equal_scikit_learn():
    y, p = _rows(0)
    cuts = [0, 700, 701, 1900, len(y)]
    parts = [block_stats(y[i:j], p[i:j]) for i, j in itertools.pairwise(cuts)]
    total = sum(parts[1:], parts[0])
    whole = block_stats(y, p)
    np.testing.assert_array_equal(total.confusion, whole.confusion)
    np.testing.assert_allclose(total.reliability, whole.reliability)
    m = finalize(total)
    pred = p.argmax(axis=1)
    assert m.accuracy == pytest.approx(accuracy_score(y, pred))
    assert m.macro_f1 == pytest.approx(f1_score(y, pred, average="macro"))
    assert m.log_loss == pytest.approx(log_loss(y, p, labels=[0, 1, 2]))
    onehot = np.eye(3)[y]
    assert m.brier == pytest.approx(((p - onehot) ** 2).sum(axis=1).mean())
    assert m.brier == pytest.approx(sum(brier_score_loss(onehot[:, k], p[:, k]) for k in range(3)))
    assert [list(r) for r in m.confusion_matrix] == confusion_matrix(y, pred).tolist()
    for k, c in enumerate(schema.CLASSES):
        assert m.per_class[c].precision == pytest.approx(precision_score(y == k, pred == k))
        assert m.per_class[c].support == int((y == k).sum())
        # reliability: the observed frequency of the class in each probability decile
        b = np.minimum((p[:, k] * 10).astype(int), 9)
        for j in range(10):
            sel = b == j
            if sel.any():
                assert m.reliability[c].fraction_true[j] == pytest.approx((y[sel] == k).mean())
                assert m.reliability[c].count[j] == sel.sum()


def test_unlabelled_rows_are_counted_and_left_out():
    y, p = _rows(1, 500)
    y = y.copy()
    y[:50] = -1
    m = finalize(block_stats(y, p))
    assert (m.n, m.n_unlabelled) == (450, 50)
    assert m.accuracy == pytest.approx(accuracy_score(y[50:], p[50:].argmax(axis=1)))


def test_the_empty_sum_is_the_identity_and_metrics_round_trip_through_json():
    y, p = _rows(2, 400)
    sharp = 0.9 * np.eye(3)[p.argmax(axis=1)] + 0.1 / 3  # probabilities 0.033 or 0.933: empty middle bins
    s = block_stats(y, sharp)

    def doc(m: Metrics) -> str:  # strict JSON: an empty reliability bin is null, never NaN
        return json.dumps(m.to_json(), sort_keys=True, allow_nan=False)

    assert doc(finalize(EvalSums() + s)) == doc(finalize(s)) == doc(finalize(s + EvalSums()))
    m = finalize(s)
    assert any(v is None for r in m.reliability.values() for v in r.fraction_true)
    assert doc(Metrics.from_json(m.to_json())) == doc(m)
    assert Metrics.from_json(json.loads(doc(m))) == m
