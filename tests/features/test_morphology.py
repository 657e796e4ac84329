"""Morphology (issue #14 item 3): with PSF magnitudes in the training data, the photometric model adds the
PSF - model differences (the SDSS point-source / extended separator) and records it in the model file.

Tested on synth catalogues, whose PSF magnitudes have a realistic PSF - model separation, and on the real SpecPhoto
sample in ../shared (PSF and model magnitudes with spectroscopic classes) next to scikit-learn's
HistGradientBoosting on the same base features and the same hash split."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from support import SHARED_DATA
from support.cli import one_line_error, run_cli

from astrodask import SDSSClassifier, schema
from astrodask.synth import synth_partition


@pytest.fixture(scope="module")
def frames():
    return synth_partition(0, 24000, seed=11), synth_partition(1, 12000, seed=11)


def test_psf_magnitudes_add_morphology_and_separate_the_classes_better(frames):
    train, test = frames
    assert set(schema.PSF_BANDS) <= set(train.columns)
    plain = SDSSClassifier(features="photometric", morphology=False, max_iter=120).fit(train, train["class"])
    morph = SDSSClassifier(features="photometric", max_iter=120).fit(train, train["class"])
    assert plain.spec_.feature_set == "photometric"
    assert morph.spec_.feature_set == "photometric+morphology"
    assert {f"psf_{b}-{b}" for b in schema.BANDS} <= set(morph.spec_.base)
    assert set(schema.PSF_BANDS) <= set(morph.feature_names_in_)
    gain = morph.score(test, test["class"]) - plain.score(test, test["class"])
    assert gain > 0.03, gain
    # without PSF magnitudes in the data the photometric set stays as it was
    bare = SDSSClassifier(features="photometric", max_iter=5).fit(train.drop(columns=list(schema.PSF_BANDS)),
                                                                 train["class"])
    assert bare.spec_.feature_set == "photometric"


def test_the_model_file_records_morphology_and_predict_needs_psf(frames, tmp_path):
    train, _ = frames
    src = tmp_path / "cat.csv"
    train.to_csv(src, index=False)
    common = ["--workers", "1", "--quiet"]
    assert run_cli("convert", src, tmp_path / "ds", *common).returncode == 0
    r = run_cli("train", tmp_path / "ds", "--model", tmp_path / "m", "--features", "photometric", "--epochs", "20",
                "--no-report", *common)
    assert r.returncode == 0, r.stderr
    assert "photometric+morphology" in r.stderr
    doc = json.loads((tmp_path / "m" / "model.json").read_text())
    assert doc["features"]["feature_set"] == "photometric+morphology"
    assert "psf_r-r" in doc["features"]["base"]

    r = run_cli("train", tmp_path / "ds", "--model", tmp_path / "m2", "--features", "photometric", "--epochs", "3",
                "--no-morphology", "--no-report", *common)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "m2" / "model.json").read_text())["features"]["feature_set"] == "photometric"

    bare = tmp_path / "bare.csv"
    pd.read_csv(src).drop(columns=list(schema.PSF_BANDS)).to_csv(bare, index=False)
    assert run_cli("convert", bare, tmp_path / "ds_bare", *common).returncode == 0
    line = one_line_error(run_cli("predict", tmp_path / "ds_bare", tmp_path / "m", tmp_path / "p", *common))
    assert "psf_u" in line
    r = run_cli("predict", tmp_path / "ds", tmp_path / "m", tmp_path / "p", *common)
    assert r.returncode == 0, r.stderr


SPECPHOTO = SHARED_DATA / "sdss" / "specphoto_psf_model_astrohackweek2014.csv"


@pytest.mark.realdata
def test_real_specphoto_morphology_model_next_to_gradient_boosting(tmp_path):
    """photometric+morphology trained on the real SpecPhoto sample (its mag_u..z are PSF magnitudes): holdout
    macro-F1 on the hash split at least that of HistGradientBoosting on the same 17 base features, and above the
    model without morphology."""
    if not SPECPHOTO.is_file():
        pytest.skip(f"real SpecPhoto sample not found at {SPECPHOTO} (see ../shared/data/README.md)")
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import f1_score

    from astrodask.dataset import HOLDOUT, TEST, open_dataset, read_part
    from astrodask.features import RECIPES, base_matrix

    common = ["--workers", "1", "--quiet"]
    given = ",".join(f"mag_{b}=psf_{b}" for b in schema.BANDS)
    assert run_cli("convert", SPECPHOTO, tmp_path / "ds", "--columns", given, *common).returncode == 0
    scores = {}
    for name, more in (("morphology", []), ("plain", ["--no-morphology"])):
        r = run_cli("train", tmp_path / "ds", "--model", tmp_path / name, "--features", "photometric", *more,
                    "--no-report", *common, timeout=600)
        assert r.returncode == 0, r.stderr
        scores[name] = json.loads((tmp_path / name / "metrics.json").read_text())["macro_f1"]
    assert json.loads((tmp_path / "morphology" / "model.json").read_text())["features"]["feature_set"] == \
        "photometric+morphology"

    df = pd.concat([read_part(f) for f in open_dataset(str(tmp_path / "ds")).files], ignore_index=True)
    df = df[df[schema.CLASS].notna()]
    test = HOLDOUT.of(df[schema.ID].to_numpy(np.uint64)) == TEST
    x = base_matrix(df, RECIPES["photometric+morphology"].base, None)
    hgb = HistGradientBoostingClassifier(random_state=0).fit(x[~test], df[schema.CLASS][~test])
    scores["hgb"] = f1_score(df[schema.CLASS][test], hgb.predict(x[test]), average="macro")
    print(f"\nSpecPhoto holdout macro-F1 ({test.sum():,} rows): photometric+morphology {scores['morphology']:.4f}, "
          f"HistGradientBoosting {scores['hgb']:.4f}, without morphology {scores['plain']:.4f}")
    assert scores["morphology"] >= scores["hgb"] - 0.005
    assert scores["morphology"] > scores["plain"] + 0.02
