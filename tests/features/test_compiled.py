"""The compiled scoring kernel (astrodask.features.compiled) against the NumPy reference (``FeatureSpec.linear`` + the
link: ``SoftmaxModel.reference_predict_proba``) on real rows, the embedded sample, rows with missing inputs and
values far outside the knots, for every feature set; its imputed mask against ``features.imputed_mask``; the
predict task that uses it; and numba's on-disk cache, including where no cache directory is writable."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from dataclasses import replace
from importlib.resources import files
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support.models import random_model

from astrodask import schema
from astrodask.features import compiled as kernels
from astrodask.features import (
    imputed_mask,
    raw_columns,
)
from astrodask.model import ModelInfo, SoftmaxModel

ROOT = Path(__file__).resolve().parents[2]
SDSS17 = ROOT.parent / "shared" / "data" / "sdss17.csv"
ATOL = 1e-6  # the contract: the kernel's probabilities equal the reference's to 1e-6


def _sample() -> pd.DataFrame:
    """The embedded sample (installed as astrodask.data): u..z, psf_u..psf_z, redshift, class."""
    return pd.read_csv(files("astrodask.data") / "sdss_sample.csv")


def _real() -> pd.DataFrame:
    if not SDSS17.is_file():
        pytest.skip(f"real SDSS data not found at {SDSS17} (see ../shared/data/README.md)")
    return pd.read_csv(SDSS17)


def _with_missing(df: pd.DataFrame, feature_set: str, seed: int = 1) -> pd.DataFrame:
    """``df`` with about 3 % of every input missing, and some rows missing all of them."""
    df = df.copy()
    rng = np.random.default_rng(seed)
    cols = list(raw_columns(feature_set))
    for c in cols:
        df.loc[rng.random(len(df)) < 0.03, c] = np.nan
    df.loc[df.index[:5], cols] = np.nan
    return df


def _extremes(model: SoftmaxModel, df: pd.DataFrame, seed: int = 2) -> pd.DataFrame:
    """Rows of ``df`` with inputs set far outside the knot range, on every knot and boundary, and to 0."""
    rng = np.random.default_rng(seed)
    cols = list(raw_columns(model.spec.feature_set))
    knot_values = np.unique(np.concatenate([*model.spec.knots.values(), *(t[1] for t in model.spec.tensors),
                                            *(t[3] for t in model.spec.tensors)]))
    values = np.concatenate([[-1e6, -1e3, -60.0, -5.0, -0.01, 0.0, 1e-9, 7.5, 45.0, 99.0, 1e3, 1e6], knot_values])
    out = df.sample(n=2000, replace=True, random_state=seed).reset_index(drop=True)
    for c in cols:
        hit = rng.random(len(out)) < 0.3
        out.loc[hit, c] = rng.choice(values, hit.sum())
    return out


def _check(model: SoftmaxModel, df: pd.DataFrame) -> None:
    p, mask = model.score(df)[:2]
    ref = model.reference_predict_proba(df)
    assert p.shape == ref.shape == (len(df), len(schema.CLASSES)) and p.dtype == np.float64
    assert np.isfinite(ref).all(), "the reference itself gave NaN: a bad test input"
    np.testing.assert_allclose(p, ref, rtol=0, atol=ATOL)
    logits, ref_logits = model.decision_function(df), model.reference_decision_function(df)
    err = np.abs(logits - ref_logits) / (1.0 + np.abs(ref_logits).max(axis=1, keepdims=True))
    assert err.max() < 1e-9, f"logits differ by {err.max():.2e} (relative to the row's largest)"
    np.testing.assert_array_equal(mask, imputed_mask(df, model.spec.feature_set))
    np.testing.assert_array_equal(model.predict_proba(df), p)


FEATURE_SETS = ["spectroscopic", "photometric", "photometric+morphology"]


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    return _sample()


@pytest.fixture(scope="module")
def sample_models(sample) -> dict:
    return {fs: random_model(fs, sample.iloc[:12000], seed=k) for k, fs in enumerate(FEATURE_SETS)}


@pytest.mark.parametrize("feature_set", FEATURE_SETS)
def test_sample_rows_equal_the_reference(sample_models, sample, feature_set):
    model = sample_models[feature_set]
    _check(model, sample.iloc[12000:])  # rows the spec was not fitted on
    p = model.predict_proba(sample)
    assert 0.05 < p.max(axis=1).mean() < 0.999  # probabilities spread: a wrong weight would show


@pytest.mark.parametrize("feature_set", FEATURE_SETS)
def test_missing_inputs_are_imputed_as_the_reference_does(sample_models, sample, feature_set, monkeypatch):
    monkeypatch.setattr(kernels, "CHUNK_ROWS", 999)  # several chunks, the last one short
    model = sample_models[feature_set]
    rows = _with_missing(sample.iloc[12000:], feature_set)
    mask = model.score(rows).imputed
    assert (mask != 0).sum() > 500 and (mask == 0).sum() > 500
    _check(model, rows)


@pytest.mark.parametrize("feature_set", FEATURE_SETS)
def test_values_outside_the_knots_equal_the_reference(sample_models, sample, feature_set):
    model = sample_models[feature_set]
    _check(model, _extremes(model, sample))


@pytest.mark.realdata
@pytest.mark.parametrize("feature_set", ["spectroscopic", "photometric"])
def test_real_rows_equal_the_reference(feature_set):
    """SDSS17 (no PSF magnitudes, so no morphology model): the whole file, with missing and extreme inputs."""
    real = _real()
    model = random_model(feature_set, real.sample(n=30000, random_state=3), seed=7)
    _check(model, real)
    _check(model, _with_missing(real.sample(n=20000, random_state=4), feature_set))
    _check(model, _extremes(model, real))


@pytest.mark.parametrize("feature_set", ["spectroscopic", "photometric+morphology"])
def test_one_vs_rest_link(sample, feature_set):
    model = random_model(feature_set, sample.iloc[:8000], seed=11, link="ovr")
    _check(model, _with_missing(sample.iloc[8000:], feature_set))


def test_interactions_and_no_scaler(sample):
    """Parts of FeatureSpec no recipe uses today: interactions, and a spec before its scaler is fitted."""
    model = random_model("spectroscopic", sample.iloc[:8000], seed=5)
    spec = replace(model.spec, interactions=(("r", "g-r"), ("asinh_z", "u-g")))
    spec = replace(spec, mean=None, scale=None)
    rng = np.random.default_rng(6)
    coef = rng.normal(0.0, 0.05, (3, spec.n_features))
    _check(SoftmaxModel(spec, coef, np.zeros(3)), _with_missing(sample.iloc[8000:], "spectroscopic"))


def test_empty_frame_and_float32_columns(sample_models, sample):
    model = sample_models["photometric+morphology"]
    p, mask = model.score(sample.iloc[:0])[:2]
    assert p.shape == (0, 3) and mask.shape == (0,)
    as32 = sample.iloc[12000:].astype(dict.fromkeys(raw_columns(model.spec.feature_set), "float32"))
    _check(model, as32)  # the Parquet datasets hold float32 magnitudes


def test_kernel_arrays_follow_the_weights_and_are_not_pickled(sample_models, sample):
    model = replace(sample_models["spectroscopic"])
    rows = sample.iloc[12000:13000]
    before = model.predict_proba(rows)
    assert model._kernel is not None
    back = pickle.loads(pickle.dumps(model))
    assert back._kernel is None
    np.testing.assert_array_equal(back.predict_proba(rows), before)
    model.coef = model.coef * 0.5  # a new array: the kernel arrays are rebuilt
    np.testing.assert_allclose(model.predict_proba(rows), model.reference_predict_proba(rows), rtol=0, atol=ATOL)
    assert np.abs(model.predict_proba(rows) - before).max() > 1e-3
    model.info = ModelInfo(link="ovr")
    np.testing.assert_allclose(model.predict_proba(rows), model.reference_predict_proba(rows), rtol=0, atol=ATOL)


def test_kernel_arrays_refuse_weights_of_another_shape(sample_models):
    spec = sample_models["photometric"].spec
    with pytest.raises(ValueError, match="weights"):
        kernels.kernel_params(spec, np.zeros((3, spec.n_features - 1)), np.zeros(3))
    with pytest.raises(ValueError, match="intercept"):
        kernels.kernel_params(spec, np.zeros((3, spec.n_features)), np.zeros(2))


def test_predict_file_writes_the_reference_probabilities(sample_models, sample, tmp_path):
    """The predict task: every row once, probabilities (float32) and imputed bits as the reference gives."""
    from astrodask import predict
    from astrodask.schema import IMPUTED, PRED, PROB_PREFIX
    from astrodask.storage import Location

    model = sample_models["spectroscopic"]
    rows = _with_missing(sample, "spectroscopic")
    rows[schema.ID] = rows[schema.ID].astype("uint64")
    src = tmp_path / "part-0.parquet"
    pq.write_table(pa.Table.from_pandas(rows, preserve_index=False), src, row_group_size=3000)
    carry = [schema.CLASS, "alpha", "delta", schema.REDSHIFT]
    n = predict.predict_file(Location.of(src), Location.of(tmp_path / "out.parquet"), model, carry).rows
    out = pq.read_table(tmp_path / "out.parquet").to_pandas()
    ref = model.reference_predict_proba(rows)
    mask = imputed_mask(rows, "spectroscopic")
    assert n == len(rows) == len(out)
    counts = predict.counts_in(Location.of(tmp_path / "out.parquet"))
    assert (counts.rows, counts.imputed) == (n, np.count_nonzero(mask))
    assert (out[schema.SCORED_BY] == "spectroscopic").all()  # a model without a companion scores every row
    np.testing.assert_array_equal(out[schema.ID].to_numpy(), rows[schema.ID].to_numpy())
    got = out[[PROB_PREFIX + c for c in schema.CLASSES]].to_numpy(np.float64)
    np.testing.assert_allclose(got, ref, rtol=0, atol=ATOL)
    np.testing.assert_array_equal(out[IMPUTED].to_numpy(), mask)
    clear = np.sort(ref, axis=1)[:, -1] - np.sort(ref, axis=1)[:, -2] > 1e-6  # no near-ties
    np.testing.assert_array_equal(out[PRED].to_numpy()[clear],
                                  np.asarray(schema.CLASSES)[ref.argmax(axis=1)][clear])


# ------------------------------------------------------------------------------------------------ numba's cache

_PROBE = """
import json, astrodask
from astrodask.features import compiled as kernels
kernels.warm_up()
stats = kernels.score_kernel.stats
print(json.dumps({"file": astrodask.__file__, "hits": sum(stats.cache_hits.values()),
                  "cache": type(kernels.score_kernel._cache).__name__}))
"""


def _installed_copy(tmp_path: Path) -> Path:
    """The package copied to ``tmp_path/site`` (no compiled files), as a non-editable install would lay it out."""
    site = tmp_path / "site"
    shutil.copytree(ROOT / "astrodask", site / "astrodask", ignore=shutil.ignore_patterns("__pycache__"))
    return site


def _probe(site: Path, cache_home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_") and k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(site), XDG_CACHE_HOME=str(cache_home))
    r = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, env=env, cwd=site,
                       timeout=300, check=False)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["file"] == str(site / "astrodask" / "__init__.py")
    return out


def _cache_files(where: Path) -> list[Path]:
    return sorted(where.rglob("compiled.score_kernel-*.nb[ic]")) if where.exists() else []


def test_compiled_kernel_is_cached_beside_the_module(tmp_path):
    site = _installed_copy(tmp_path)
    first = _probe(site, tmp_path / "xdg")
    assert first["hits"] == 0 and first["cache"] == "FunctionCache"
    assert _cache_files(site / "astrodask" / "features" / "__pycache__")
    assert _probe(site, tmp_path / "xdg")["hits"] >= 1  # the next process loads it instead of compiling
    assert not _cache_files(tmp_path / "xdg")


def test_without_a_writable_cache_directory_the_kernel_still_runs(tmp_path):
    """A read-only install with no writable home: numba finds no cache directory (and would raise at import);
    the kernel is compiled in the process instead. Simulated with files where the directories would go, since
    permission bits do not stop root."""
    site = _installed_copy(tmp_path)
    (site / "astrodask" / "features" / "__pycache__").write_text("")  # the module's directory: not a place for a cache
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    out = _probe(site, blocked / "cache")  # ~/.cache equivalent: cannot be created
    assert out["cache"] == "NullCache" and out["hits"] == 0
    assert not _cache_files(tmp_path)


def test_read_only_module_directory_falls_back_to_the_user_cache(tmp_path):
    site = _installed_copy(tmp_path)
    (site / "astrodask" / "features" / "__pycache__").write_text("")
    out = _probe(site, tmp_path / "xdg")
    assert out["cache"] == "FunctionCache"
    assert _cache_files(tmp_path / "xdg" / "numba")
    assert _probe(site, tmp_path / "xdg")["hits"] >= 1


@pytest.mark.parametrize("feature_set", FEATURE_SETS)
def test_compiled_expansion_equals_the_reference(sample_models, sample, feature_set, monkeypatch):
    """kernels.expand (the training blocks' features) against FeatureSpec.expand(scaled=False), on rows with
    missing inputs (imputed) and values outside the knots, across several chunks."""
    monkeypatch.setattr(kernels, "CHUNK_ROWS", 999)
    model = sample_models[feature_set]
    spec = model.spec
    rows = pd.concat([_with_missing(sample.iloc[12000:], feature_set), _extremes(model, sample)], ignore_index=True)
    got, ref = kernels.expand(spec, rows), spec.expand(rows, scaled=False)
    assert got.dtype == np.float32 and got.shape == ref.shape == (len(rows), spec.n_features)
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)
    assert (ref != 0).sum(axis=1).min() < spec.n_features  # the sparse spline columns are covered
