"""Model directories: they load back exactly, and damaged or hostile files are refused without running code."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from astrodask import ingest
from astrodask.dataset import open_dataset
from astrodask.errors import AstrodaskError
from astrodask.learn import TrainConfig, stage
from astrodask.model import FORMAT_VERSION, MODEL_JSON, WEIGHTS, SoftmaxModel, weights_digest
from astrodask.report.collect import holdout

EPOCHS = 30


@pytest.fixture(scope="module")
def trained(small_csv, tmp_path_factory):
    """(in-process client, dataset, model dir, rows as pandas): one small model trained for the module.

    The stages expect the client to be current, as ``astrodask.cluster.connect`` makes it."""
    import pandas as pd
    from distributed import Client, LocalCluster

    d = tmp_path_factory.mktemp("model_files")
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster, set_as_default=False) as client, client.as_current():
        ingest.run(ingest.ConvertConfig((str(small_csv),), str(d / "ds"), block_size=256 * 1024, quiet=True),
                    client)
        stage.run(TrainConfig(str(d / "ds"), str(d / "model"), epochs=EPOCHS, patience=0, report=False,
                                    quiet=True), client)
        ds = open_dataset(str(d / "ds"))
        rows = pd.concat([pd.read_parquet(f) for f in ds.files], ignore_index=True)
        yield client, ds, d / "model", rows


@pytest.fixture
def model_copy(trained, tmp_path) -> Path:
    """A private copy of the trained model directory, free to damage."""
    dst = tmp_path / "model"
    shutil.copytree(trained[2], dst)
    return dst


class _Payload:
    """Unpickling this writes ``marker``: proof that a loader executed code from a file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('code from a model file ran')",)


def _hostile_pickle(marker: Path, protocol: int = pickle.HIGHEST_PROTOCOL) -> bytes:
    return pickle.dumps(_Payload(marker), protocol=protocol)


def _doc(model_dir: Path) -> dict:
    return json.loads((model_dir / MODEL_JSON).read_text())


def _write_doc(model_dir: Path, doc: dict) -> None:
    (model_dir / MODEL_JSON).write_text(json.dumps(doc))


def _seal(model_dir: Path) -> None:
    """Record the digest of the (tampered) weights in model.json, as a tamperer who edits both files would: the
    checks after the digest's must hold on their own."""
    doc = _doc(model_dir)
    doc["weights_digest"] = weights_digest((model_dir / WEIGHTS).read_bytes())
    _write_doc(model_dir, doc)


def _refused(model_dir: Path, *words: str) -> str:
    with pytest.raises(AstrodaskError) as info:
        SoftmaxModel.load(model_dir)
    msg = str(info.value)
    assert "\n" not in msg, msg
    for w in words:
        assert w in msg, msg
    return msg


# ------------------------------------------------------------------------------------------------ round trip


def test_model_directory_contents(trained):
    _, _, model_dir, _ = trained
    for name in (MODEL_JSON, WEIGHTS, "metrics.json", "history.json", "_SUCCESS"):
        assert (model_dir / name).is_file(), name
    doc = _doc(model_dir)
    assert doc["format_version"] == FORMAT_VERSION
    assert doc["classes"] == ["GALAXY", "QSO", "STAR"]
    assert doc["info"]["epochs_run"] == EPOCHS
    with np.load(model_dir / WEIGHTS, allow_pickle=False) as w:
        assert sorted(w.files) == ["coef", "companion_coef", "companion_intercept", "intercept"]
        assert w["coef"].shape == (3, len(doc["features"]["names"]))
        assert w["companion_coef"].shape == (3, len(doc["companion"]["features"]["names"]))
    assert doc["companion"]["features"]["feature_set"] in ("photometric", "photometric+morphology")
    assert doc["weights_digest"] == weights_digest((model_dir / WEIGHTS).read_bytes())


def test_weights_of_another_model_of_the_same_shape_are_refused(trained, model_copy):
    """A weights.npz copied in from another model (every shape right, every value finite) is not the file
    model.json was written with: refused by its digest, whatever the numbers."""
    _, _, model_dir, _ = trained
    with np.load(model_dir / WEIGHTS) as w:
        arrays = {k: w[k][::-1].copy() for k in w.files}
    np.savez(model_copy / WEIGHTS, **arrays)
    _refused(model_copy, WEIGHTS, "digest differs")


def test_loaded_model_reproduces_the_training_metrics(trained):
    """metrics.json was computed with the in-memory model before saving; the loaded model gives the same."""
    client, ds, model_dir, _ = trained
    saved = json.loads((model_dir / "metrics.json").read_text())
    again = holdout(client, SoftmaxModel.load(model_dir), ds.files, quiet=True)
    assert [list(r) for r in again.confusion_matrix] == saved["confusion_matrix"]
    assert again.accuracy == saved["accuracy"] > 0.9
    assert again.log_loss == pytest.approx(saved["log_loss"], rel=1e-12)
    assert again.brier == pytest.approx(saved["brier"], rel=1e-12)


def test_save_load_round_trip_gives_identical_predictions(trained, tmp_path):
    _, _, model_dir, rows = trained
    first = SoftmaxModel.load(model_dir)
    p1 = first.predict_proba(rows)
    assert p1.shape == (len(rows), 3)
    np.testing.assert_allclose(p1.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    first.save(tmp_path / "again")
    moved = tmp_path / "moved"
    shutil.copytree(model_dir, moved)  # nothing in a model depends on where it lives
    for other in (SoftmaxModel.load(tmp_path / "again"), SoftmaxModel.load(moved)):
        np.testing.assert_array_equal(other.coef, first.coef)
        np.testing.assert_array_equal(other.intercept, first.intercept)
        np.testing.assert_array_equal(other.predict_proba(rows), p1)
        np.testing.assert_array_equal(other.predict(rows), first.predict(rows))
    # and the predictions are right most of the time
    assert (first.predict(rows) == rows["class"].to_numpy()).mean() > 0.9


# ------------------------------------------------------------------------------------------------ bad model.json


@pytest.mark.parametrize("version", [FORMAT_VERSION + 1, 0, "1", 1.5])
def test_wrong_format_version_is_refused(model_copy, version):
    doc = _doc(model_copy)
    doc["format_version"] = version
    _write_doc(model_copy, doc)
    _refused(model_copy, f"version {version!r}", f"reads version {FORMAT_VERSION}")


@pytest.mark.parametrize("field, words", [
    ("format", ["not an astrodask model"]),
    ("format_version", ["version None"]),
    ("classes", ["lacks", "classes"]),
    ("features", ["lacks", "features"]),
])
def test_missing_fields_are_refused(model_copy, field, words):
    doc = _doc(model_copy)
    del doc[field]
    _write_doc(model_copy, doc)
    _refused(model_copy, *words)


@pytest.mark.parametrize("key", ["knots", "base", "impute", "feature_set"])
def test_incomplete_feature_definition_is_refused(model_copy, key):
    doc = _doc(model_copy)
    del doc["features"][key]
    _write_doc(model_copy, doc)
    _refused(model_copy, "feature definition")


@pytest.mark.parametrize("change", ["unsorted", "repeated interior", "nan", "short"])
def test_knot_vectors_that_are_not_clamped_are_refused(model_copy, change):
    """Scoring divides by knot spans: a crafted knot vector must be refused, not give NaN probabilities."""
    doc = _doc(model_copy)
    name, t = doc["features"]["knots"][0]
    t = list(t)
    if change == "unsorted":
        t[4], t[5] = t[5], t[4]
    elif change == "repeated interior":
        t[5] = t[4]
    elif change == "nan":
        t[4] = float("nan")
    else:
        t = t[:6]
    doc["features"]["knots"][0] = [name, t]
    _write_doc(model_copy, doc)
    _refused(model_copy, "feature definition", "knot vector")


@pytest.mark.parametrize("field, value, word", [
    ("features", [], "feature definition"),
    ("features", "spectroscopic", "feature definition"),
    ("classes", 3, "classes"),
    ("classes", "GALAXY", "classes"),
    ("classes", ["GALAXY", "QSO"], "classes"),
    ("classes", ["STAR", "QSO", "GALAXY"], "classes"),  # same names, other order: columns would be mislabelled
    ("classes", ["GALAXY", "QSO", "BLAZAR"], "classes"),
    ("info", ["softmax"], "info"),
])
def test_fields_of_the_wrong_type_are_refused(model_copy, field, value, word):
    doc = _doc(model_copy)
    doc[field] = value
    _write_doc(model_copy, doc)
    _refused(model_copy, word)


@pytest.mark.parametrize("content", [b"", b"{not json", b"[1, 2, 3]", b"\xff\xfe\x00binary"],
                         ids=["empty", "broken", "list", "binary"])
def test_model_json_that_is_not_a_model_is_refused(model_copy, content):
    (model_copy / MODEL_JSON).write_bytes(content)
    _refused(model_copy, MODEL_JSON)


def test_missing_model_json_or_directory(model_copy, tmp_path):
    _refused(tmp_path / "nowhere", "no such model directory")
    (model_copy / MODEL_JSON).unlink()
    _refused(model_copy, f"no {MODEL_JSON}")


# ------------------------------------------------------------------------------------------------ hostile files


def test_the_payload_really_runs_code_when_unpickled(tmp_path):
    """Control: the hostile pickle used below does create its marker when a loader unpickles it."""
    marker = tmp_path / "control-marker"
    pickle.loads(_hostile_pickle(marker))
    assert marker.is_file()


@pytest.mark.parametrize("protocol", [0, pickle.HIGHEST_PROTOCOL])
def test_weights_pickle_is_refused_without_running_it(model_copy, tmp_path, protocol):
    marker = tmp_path / "pwned"
    (model_copy / WEIGHTS).write_bytes(_hostile_pickle(marker, protocol))
    _refused(model_copy, WEIGHTS, "digest differs")  # not the file model.json was written with
    _seal(model_copy)
    _refused(model_copy, WEIGHTS, "not a numeric weights file")
    assert not marker.exists(), "loading a model executed code from weights.npz"


def test_npz_with_pickled_object_array_is_refused_without_running_it(model_copy, tmp_path):
    marker = tmp_path / "pwned"
    coef = np.empty(1, dtype=object)
    coef[0] = _Payload(marker)
    with np.load(model_copy / WEIGHTS) as w:
        intercept = w["intercept"]
    np.savez(model_copy / WEIGHTS, coef=coef, intercept=intercept)
    _seal(model_copy)
    _refused(model_copy, WEIGHTS)
    assert not marker.exists(), "loading a model executed code from an object array"


@pytest.mark.parametrize("protocol", [0, pickle.HIGHEST_PROTOCOL])
def test_model_json_pickle_is_refused_without_running_it(model_copy, tmp_path, protocol):
    marker = tmp_path / "pwned"
    (model_copy / MODEL_JSON).write_bytes(_hostile_pickle(marker, protocol))
    _refused(model_copy, MODEL_JSON)
    assert not marker.exists(), "loading a model executed code from model.json"


def _rewrite_weights(model_dir: Path, fn) -> None:
    with np.load(model_dir / WEIGHTS) as w:
        arrays = {k: w[k].copy() for k in w.files}
    arrays["coef"], arrays["intercept"] = fn(arrays["coef"], arrays["intercept"])
    np.savez(model_dir / WEIGHTS, **arrays)
    _seal(model_dir)


def _nan_coef(c, i):
    c[1, 5] = np.nan
    return c, i


def _inf_intercept(c, i):
    i[0] = np.inf
    return c, i


@pytest.mark.parametrize("damage, words", [
    (_nan_coef, ["NaN"]),
    (_inf_intercept, ["infinity"]),
    (lambda c, i: (c[:, :-1], i), ["shape"]),
    (lambda c, i: (c, i[:2]), ["shape"]),
], ids=["nan", "inf", "narrow", "short-intercept"])
def test_non_finite_or_misshapen_weights_are_refused(model_copy, damage, words):
    _rewrite_weights(model_copy, damage)
    _refused(model_copy, *words)


@pytest.mark.parametrize("content", [None, b"", b"PK\x03\x04 truncated zip"], ids=["missing", "empty", "truncated"])
def test_missing_or_truncated_weights_are_refused(model_copy, content):
    if content is None:
        (model_copy / WEIGHTS).unlink()
    else:
        (model_copy / WEIGHTS).write_bytes(content)
    _refused(model_copy, WEIGHTS)


def test_weights_without_intercept_are_refused(model_copy):
    with np.load(model_copy / WEIGHTS) as w:
        coef = w["coef"].copy()
    np.savez(model_copy / WEIGHTS, coef=coef)
    _seal(model_copy)
    _refused(model_copy, WEIGHTS)


# ------------------------------------------------------------------------------------------------ via the CLI


def _damage_pickle(model_dir: Path, marker: Path) -> str:
    (model_dir / WEIGHTS).write_bytes(_hostile_pickle(marker))
    _seal(model_dir)
    return "pickles are refused"


def _damage_nan(model_dir: Path, marker: Path) -> str:
    _rewrite_weights(model_dir, _nan_coef)
    return "NaN"


def _damage_version(model_dir: Path, marker: Path) -> str:
    doc = _doc(model_dir)
    doc["format_version"] = 99
    _write_doc(model_dir, doc)
    return "version 99"


@pytest.mark.parametrize("damage", [_damage_pickle, _damage_nan, _damage_version], ids=["pickle", "nan", "version"])
def test_predict_cli_refuses_a_bad_model_in_one_line(trained, model_copy, tmp_path, damage):
    _, ds, _, _ = trained
    marker = tmp_path / "pwned"
    word = damage(model_copy, marker)
    out = tmp_path / "predictions"
    env = {k: v for k, v in os.environ.items() if k not in ("ASTRODASK_DEBUG", "DASK_SCHEDULER_ADDRESS")}
    r = subprocess.run([sys.executable, "-m", "astrodask.cli", "predict", ds.path, str(model_copy), str(out),
                        "--workers", "1", "--quiet"], capture_output=True, text=True, env=env, timeout=180)
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("astrodask: error: ") and word in lines[0], lines[0]
    assert str(model_copy) in lines[0]
    assert r.returncode == 1
    assert r.stdout == ""
    assert not out.exists()
    assert not marker.exists()
