"""The SDSS17 model on its own holdout and beyond it, through the command line as a user runs it.

One spectroscopic model (and its photometric companion) is trained on the whole of ``sdss17.csv``; then:

* its holdout accuracy, calibration, and the zero-redshift rows scored by the companion (counted per path);
* ``out_of_domain`` bits of a real sample it never saw (the SpecPhoto export), checked against the 0.1 % / 99.9 %
  quantiles (at the model's recorded level) of the training rows computed here with numpy;
* that SpecPhoto export converted with ``--columns`` and classified with and without ``--priors estimate``;
* ``--priors estimate`` on a resampled holdout whose class mix differs from training recovers it, and given
  priors are Bayes' rule on the stored training priors.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from support.cli import ok, run_cli

from astrodask import schema
from astrodask.dataset import HOLDOUT, TEST, TRAIN
from astrodask.model import SoftmaxModel
from astrodask.storage import META

pytestmark = pytest.mark.realdata

SMALL = ["--workers", "2", "--quiet"]
SPECPHOTO_COLUMNS = ",".join(f"mag_{b}=psf_{b}" for b in schema.BANDS)
CLASSES = list(schema.CLASSES)


@pytest.fixture(scope="module")
def run(shared_data, tmp_path_factory):
    """SDSS17 converted and trained with the defaults (spectroscopic features, photometric companion)."""
    d = tmp_path_factory.mktemp("sdss17")
    r = ok(run_cli("convert", shared_data / "sdss17.csv", d / "ds", *SMALL, timeout=600))
    assert "rows read 99,999  written 99,999  quarantined 0" in r.stdout
    train = ok(run_cli("train", d / "ds", "--model", d / "model", "--no-report", *SMALL, timeout=1200))
    return d, train


def _predict(run_dir: Path, ds: Path, out: Path, *more) -> tuple[pd.DataFrame, dict]:
    ok(run_cli("predict", ds, run_dir / "model", out, *SMALL, *more, timeout=600))
    return pq.read_table(out).to_pandas(), json.loads((out / META).read_text())


def _accuracy(df: pd.DataFrame) -> float:
    return float((df[schema.PRED] == df[schema.CLASS]).mean())


def test_holdout_accuracy_and_calibration(run):
    d, train = run
    m = json.loads((d / "model" / "metrics.json").read_text())
    print(f"\nSDSS17 holdout: accuracy {m['accuracy']:.4f}  macro-F1 {m['macro_f1']:.4f}  ({m['n']:,} rows)")
    assert f"accuracy {m['accuracy']:.4f}" in train.stdout
    assert 19_000 < m["n"] < 21_000  # the 20 % holdout, never trained on
    assert m["accuracy"] >= 0.973 and m["macro_f1"] >= 0.965
    assert m["log_loss"] < 0.1 and m["brier"] < 0.05
    model = SoftmaxModel.load(d / "model")
    assert model.routes and model.companion.spec.feature_set == "photometric"
    assert "z_is_zero" not in json.dumps(json.loads((d / "model" / "model.json").read_text())["features"])


def test_zero_redshift_rows_are_scored_by_the_companion_and_counted(run, tmp_path):
    d, _ = run
    pred, meta = _predict(d, d / "ds", tmp_path / "p")
    zero = pred[schema.REDSHIFT].to_numpy() == 0.0
    assert zero.sum() > 100  # SDSS17 has a few hundred z = 0 rows
    assert (pred.loc[zero, schema.SCORED_BY] == "photometric").all()
    assert (pred.loc[~zero, schema.SCORED_BY] == "spectroscopic").all()
    assert meta["scored_by"] == {"spectroscopic": int((~zero).sum()), "photometric": int(zero.sum())}
    bits = pred[schema.OUT_OF_DOMAIN].to_numpy()
    assert meta["out_of_domain_rows"] == int((bits != 0).sum())
    for k, c in enumerate(schema.INPUT_BITS):
        assert meta["out_of_domain"].get(c, 0) == int(((bits >> k) & 1).sum()), c
    # a held-out sample of the training population: about 2 x 0.1 % per input is outside, no more
    assert 0.001 < meta["out_of_domain_rows"] / len(pred) < 0.02


def _training_rows(ds: Path) -> pd.DataFrame:
    df = pq.read_table(ds).to_pandas()
    split = HOLDOUT.of(df[schema.ID].to_numpy(np.uint64))
    return df[(split == TRAIN) & df[schema.CLASS].notna()]


def test_out_of_domain_bits_match_the_training_quantiles(run, shared_data, tmp_path):
    """Each path's bounds are, to the sketch's interpolation error, np.quantile of its own training rows at the
    recorded level; a row of another sample has bit k set exactly when input k lies beyond them."""
    d, _ = run
    model = SoftmaxModel.load(d / "model")
    rows = _training_rows(d / "ds")
    usable = schema.usable_redshift(rows[schema.REDSHIFT])
    src = shared_data / "sdss" / "specphoto_psf_model_astrohackweek2014.csv"
    ok(run_cli("convert", src, tmp_path / "sp", "--columns", SPECPHOTO_COLUMNS, *SMALL))
    pred, _ = _predict(d, tmp_path / "sp", tmp_path / "p")
    data = pq.read_table(tmp_path / "sp").to_pandas()
    assert (data[schema.ID].to_numpy() == pred[schema.ID].to_numpy()).all()
    bits = pred[schema.OUT_OF_DOMAIN].to_numpy()
    checked = 0
    for path, m, train in (("spectroscopic", model, rows[usable]), ("photometric", model.companion, rows)):
        on = (pred[schema.SCORED_BY] == path).to_numpy()
        for c, (lo, hi) in m.domain.bounds.items():
            level = m.domain.level[c]
            v = train[c].dropna().to_numpy(np.float64)
            exact_lo, exact_hi = np.quantile(v, [level, 1 - level])
            # the recorded bound sits at the right rank of the training values
            assert abs((v < lo).mean() - level) < 2e-4 and abs((v > hi).mean() - level) < 2e-4, (path, c)
            x = data.loc[on, c].to_numpy(np.float64)
            got = ((bits[on] >> schema.INPUT_BITS.index(c)) & 1).astype(bool)
            want = (x < exact_lo) | (x > exact_hi)
            between = ((x >= min(lo, exact_lo)) & (x <= max(lo, exact_lo))) | \
                      ((x >= min(hi, exact_hi)) & (x <= max(hi, exact_hi)))
            assert (got == want)[~between].all(), (path, c)  # any difference is a value between the two bounds
            assert (got != want).sum() <= max(2, 0.002 * on.sum()), (path, c)
            checked += int(want.sum())
        assert not (bits[on] & ~np.uint16(sum(1 << schema.INPUT_BITS.index(c) for c in m.domain.bounds))).any()
    assert checked > 50, "the sample has rows outside the training range"


def test_specphoto_export_as_it_comes(run, shared_data, tmp_path):
    """A SkyServer SpecPhoto export (other selection: 83 % QSO, low-redshift AGN): --columns maps its PSF
    magnitudes; the SDSS17 model classifies it >= 0.90, and >= 0.95 where spectroscopic and inside the domain with
    the class mix estimated."""
    d, _ = run
    src = shared_data / "sdss" / "specphoto_psf_model_astrohackweek2014.csv"
    r = ok(run_cli("convert", src, tmp_path / "sp", "--columns", SPECPHOTO_COLUMNS, *SMALL[:2]))
    assert "columns given: mag_u=psf_u" in r.stdout
    meta = json.loads((tmp_path / "sp" / META).read_text())
    assert meta["columns"] == {f"mag_{b}": f"psf_{b}" for b in schema.BANDS}
    assert meta["columns_from"]["u"] == "dered_u" and meta["columns_from"]["redshift"] == "spec_z"
    plain, _ = _predict(d, tmp_path / "sp", tmp_path / "plain")
    est, meta = _predict(d, tmp_path / "sp", tmp_path / "est", "--priors", "estimate")
    inside = (est[schema.SCORED_BY] == "spectroscopic") & (est[schema.OUT_OF_DOMAIN] == 0)
    print(f"\nSpecPhoto: accuracy {_accuracy(plain):.4f}; --priors estimate {_accuracy(est):.4f}, spectroscopic "
          f"inside the domain {_accuracy(est[inside]):.4f} ({inside.sum():,} rows); priors {meta['priors']}")
    assert _accuracy(plain) >= 0.90 and _accuracy(est) >= 0.90
    assert inside.mean() > 0.8 and _accuracy(est[inside]) >= 0.95
    got = dict(zip(CLASSES, meta["priors"]["target"]))
    assert got["QSO"] > 0.7 and meta["priors"]["converged"]  # the sample is 83 % QSO


def test_priors_estimate_recovers_a_resampled_class_mix(run, tmp_path):
    """Holdout rows resampled to 20 % GALAXY, 30 % QSO, 50 % STAR (training: 59 / 19 / 22)."""
    d, _ = run
    df = pq.read_table(d / "ds").to_pandas()
    hold = df[HOLDOUT.of(df[schema.ID].to_numpy(np.uint64)) == TEST]
    want = {"GALAXY": 0.2, "QSO": 0.3, "STAR": 0.5}
    n = 3_000
    parts = [hold[hold[schema.CLASS] == c].sample(int(n * f), random_state=1) for c, f in want.items()]
    mixed = pd.concat(parts).sample(frac=1.0, random_state=2)
    (tmp_path / "mix").mkdir()
    mixed.to_parquet(tmp_path / "mix" / "part-00000.parquet", index=False)
    plain, _ = _predict(d, tmp_path / "mix", tmp_path / "plain")
    est, meta = _predict(d, tmp_path / "mix", tmp_path / "est", "--priors", "estimate")
    got = dict(zip(CLASSES, meta["priors"]["target"]))
    print(f"\nresampled holdout: estimated priors {got}; accuracy {_accuracy(plain):.4f} -> {_accuracy(est):.4f}")
    for c, f in want.items():
        assert abs(got[c] - f) < 0.02, (c, got)
    # given priors: Bayes' rule on the stored training priors of the path that scored each row
    given = "GALAXY=0.2,QSO=0.3,STAR=0.5"
    bayes, meta = _predict(d, tmp_path / "mix", tmp_path / "given", "--priors", given)
    model = SoftmaxModel.load(d / "model")
    train = np.where((plain[schema.SCORED_BY] == "photometric").to_numpy()[:, None],
                     model.companion.domain.priors, model.domain.priors)
    p = plain[list(schema.PROBS)].to_numpy(np.float64) * np.array([want[c] for c in CLASSES]) / train
    p /= p.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(bayes[list(schema.PROBS)].to_numpy(np.float64), p, rtol=1e-5, atol=1e-6)
    assert meta["priors"]["target"] == pytest.approx([0.2, 0.3, 0.5])
