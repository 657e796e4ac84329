"""Morphology (issue #14 item 3): with PSF magnitudes in the training data, the photometric model adds the
PSF - model differences (the SDSS point-source / extended separator) and records it in the model file.

Tested on synth catalogues, whose PSF magnitudes have a realistic PSF - model separation: no labelled real data
with PSF magnitudes is available here (the real sweep has no classes)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
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
                *common)
    assert r.returncode == 0, r.stderr
    assert "photometric+morphology" in r.stderr
    doc = json.loads((tmp_path / "m" / "model.json").read_text())
    assert doc["features"]["feature_set"] == "photometric+morphology"
    assert "psf_r-r" in doc["features"]["base"]

    r = run_cli("train", tmp_path / "ds", "--model", tmp_path / "m2", "--features", "photometric", "--epochs", "3",
                "--no-morphology", *common)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "m2" / "model.json").read_text())["features"]["feature_set"] == "photometric"

    bare = tmp_path / "bare.csv"
    pd.read_csv(src).drop(columns=list(schema.PSF_BANDS)).to_csv(bare, index=False)
    assert run_cli("convert", bare, tmp_path / "ds_bare", *common).returncode == 0
    line = one_line_error(run_cli("predict", tmp_path / "ds_bare", tmp_path / "m", tmp_path / "p", *common))
    assert "psf_u" in line
    r = run_cli("predict", tmp_path / "ds", tmp_path / "m", tmp_path / "p", *common)
    assert r.returncode == 0, r.stderr
