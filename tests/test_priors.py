"""Class priors: parsing, Bayes' rule, and the EM estimate (Saerens et al. 2002) on the workers' histograms."""

from __future__ import annotations

import numpy as np
import pytest

from astrodask import priors, schema
from astrodask.errors import ConfigError

TRAIN = np.array([0.6, 0.2, 0.2])
MEANS = np.array([[0.0, 0.0], [1.6, 0.8], [-0.6, 1.7]])  # one 2-d Gaussian per class (unit variance)


def _posteriors(x: np.ndarray, pi: np.ndarray) -> np.ndarray:
    """The exact posteriors of the Gaussian classes under priors ``pi`` (what a calibrated model outputs)."""
    loglik = -0.5 * ((x[:, None, :] - MEANS[None]) ** 2).sum(axis=2)
    w = np.exp(loglik - loglik.max(axis=1, keepdims=True)) * pi
    return w / w.sum(axis=1, keepdims=True)


def _sample(pi, n, rng) -> tuple[np.ndarray, np.ndarray]:
    y = rng.choice(len(pi), size=n, p=pi)
    return MEANS[y] + rng.standard_normal((n, 2)), y


def _direct_em(p: np.ndarray, train: np.ndarray) -> np.ndarray:
    """EM on the rows themselves, written out from the paper (no histogram)."""
    pi = train.copy()
    for _ in range(5000):
        q = p * (pi / train)
        q /= q.sum(axis=1, keepdims=True)
        new = q.mean(axis=0)
        if np.abs(new - pi).max() < 1e-9:
            break
        pi = new
    return new


@pytest.mark.parametrize("text, expected", [
    ("GALAXY=0.55,QSO=0.15,STAR=0.30", (0.55, 0.15, 0.30)),
    ("star=0.3, qso=0.15, galaxy=0.55", (0.55, 0.15, 0.30)),
    ({"GALAXY": 0.5, "QSO": 0.25, "STAR": 0.25}, (0.5, 0.25, 0.25)),
    ("estimate", "estimate"), (None, None),
])
def test_parse(text, expected):
    got = priors.parse(text)
    assert got == (pytest.approx(expected) if isinstance(expected, tuple) else expected)
    assert schema.CLASSES == ("GALAXY", "QSO", "STAR")


@pytest.mark.parametrize("text, words", [
    ("GALAXY=0.5,QSO=0.5", ["gives GALAXY, QSO", "each of GALAXY, QSO, STAR"]),
    ("GALAXY=0.5,QSO=0.3,STAR=0.3", ["sum to 1.1"]),
    ("GALAXY=0.7,QSO=0.3,STAR=0", ["above 0"]),
    ("GALAXY=half,QSO=0.3,STAR=0.2", ["not a number"]),
    ("GALAXY 0.5", ["cannot read"]),
    (0.5, ["got float"]),
])
def test_parse_refuses_in_one_line(text, words):
    with pytest.raises(ConfigError) as info:
        priors.parse(text)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("priors")
    for w in words:
        assert w in msg, msg


def test_bayes_rule_gives_the_posteriors_under_the_target_priors():
    rng = np.random.default_rng(1)
    x, _ = _sample(TRAIN, 2000, rng)
    target = np.array([0.2, 0.5, 0.3])
    got = priors.apply(_posteriors(x, TRAIN), np.broadcast_to(TRAIN, (len(x), 3)), target)
    np.testing.assert_allclose(got, _posteriors(x, target), rtol=1e-10, atol=1e-14)
    same = priors.apply(_posteriors(x, TRAIN), np.broadcast_to(TRAIN, (len(x), 3)), TRAIN)
    np.testing.assert_allclose(same, _posteriors(x, TRAIN), rtol=1e-12)


@pytest.mark.parametrize("target", [(0.2, 0.5, 0.3), (0.05, 0.15, 0.8), (0.6, 0.2, 0.2)])
def test_em_recovers_the_priors_of_a_resampled_population(target):
    """Rows drawn with ``target`` priors, scored by a model trained under TRAIN: EM on the summed per-partition
    histograms finds ``target`` (to the sampling error) and agrees with EM on the rows themselves."""
    rng = np.random.default_rng(7)
    x, y = _sample(np.array(target), 60_000, rng)
    p = _posteriors(x, TRAIN)
    parts = np.array_split(np.arange(len(x)), 7)
    sums = sum((priors.sums_of(p[k]) for k in parts[1:]), priors.sums_of(p[parts[0]]))
    assert sums.rows == len(x)
    est = priors.estimate(sums, (TRAIN, TRAIN))
    assert est.converged and est.rows == len(x)
    truth = np.bincount(y, minlength=3) / len(y)
    np.testing.assert_allclose(est.priors, truth, atol=0.015)
    np.testing.assert_allclose(est.priors, _direct_em(p, TRAIN), atol=2e-3)
    assert abs(sum(est.priors) - 1) < 1e-9


def test_em_treats_each_path_with_its_own_training_priors():
    """Rows scored by two models trained under different priors (the spectroscopic path and its companion)."""
    rng = np.random.default_rng(3)
    target = np.array([0.3, 0.3, 0.4])
    other = np.array([0.2, 0.3, 0.5])
    x, y = _sample(target, 40_000, rng)
    photometric = rng.random(len(x)) < 0.4
    p = np.where(photometric[:, None], _posteriors(x, other), _posteriors(x, TRAIN))
    est = priors.estimate(priors.sums_of(p, photometric), (TRAIN, other))
    np.testing.assert_allclose(est.priors, np.bincount(y, minlength=3) / len(y), atol=0.015)
    wrong = priors.estimate(priors.sums_of(p), (TRAIN, TRAIN))  # every row taken to assume TRAIN
    assert np.abs(np.array(wrong.priors) - target).max() > 0.03


def test_em_on_no_rows_is_refused():
    with pytest.raises(ConfigError, match="no rows"):
        priors.estimate(priors.PriorSums(), (TRAIN, TRAIN))
