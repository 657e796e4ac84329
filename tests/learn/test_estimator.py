"""``astrodask.SDSSClassifier``: a scikit-learn estimator on pandas and Dask, strict about its inputs, saved as the
command line's data-only model files."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from astrodask import SDSSClassifier
from astrodask.cluster.watch import workers_now
from astrodask.errors import AstrodaskError, ConfigError
from astrodask.model import SoftmaxModel

FAST = dict(max_iter=30, patience=0)
CLASSES = ["GALAXY", "QSO", "STAR"]


@pytest.fixture(scope="module")
def frame(small_csv) -> pd.DataFrame:
    return pd.read_csv(small_csv)


@pytest.fixture(scope="module")
def other() -> pd.DataFrame:
    """An independent catalogue (synthetic rows the model never saw)."""
    from astrodask.synth import synth_partition

    return synth_partition(7, 3000, seed=11)


@pytest.fixture(scope="module")
def fitted(frame) -> SDSSClassifier:
    return SDSSClassifier(**FAST).fit(frame, frame["class"])


# ------------------------------------------------------------------------------------------------ the API


def test_parameters_clone_and_set_params():
    from sklearn.base import clone

    est = SDSSClassifier(l2=1e-4, class_weight="balanced", patience=5)
    p = est.get_params()
    assert p["l2"] == 1e-4 and p["class_weight"] == "balanced" and p["patience"] == 5
    assert set(p) == {"features", "l2", "max_iter", "tol", "class_weight", "patience", "min_improvement", "monitor",
                      "validation_fraction", "sentinels", "missing", "cache", "morphology", "priors", "verbose",
                      "warm_start_rows", "companion_rows"}
    twin = clone(est)
    assert twin is not est and twin.get_params() == p
    assert est.set_params(max_iter=7) is est and est.max_iter == 7
    assert not [k for k in vars(SDSSClassifier()) if k.endswith("_")], "__init__ must only store parameters"


def test_fit_returns_self_and_sets_the_fitted_attributes(frame, fitted):
    assert isinstance(fitted, SDSSClassifier)
    assert list(fitted.classes_) == CLASSES
    assert list(fitted.feature_names_in_) == ["u", "g", "r", "i", "z", "redshift"] and fitted.n_features_in_ == 6
    d = len(fitted.expanded_feature_names_)
    assert fitted.coef_.shape == (3, d) and fitted.intercept_.shape == (3,) and d > 300
    assert fitted.n_iter_ == len(fitted.history_) == FAST["max_iter"]
    assert fitted.n_imputed_ == 0 and fitted.n_unlabelled_ == 0


def test_predictions_and_score(frame, fitted, other):
    p = fitted.predict_proba(other)
    assert isinstance(p, np.ndarray) and p.shape == (len(other), 3)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-12)
    pred = fitted.predict(other)
    assert (pred == fitted.classes_[p.argmax(axis=1)]).all()
    dec = fitted.decision_function(other)
    assert (dec.argmax(axis=1) == p.argmax(axis=1)).all()
    acc = fitted.score(other, other["class"])
    assert acc == pytest.approx((pred == other["class"].to_numpy()).mean()) and acc > 0.85


def test_coef_is_in_the_space_of_the_expanded_features(fitted, other):
    x = fitted.expanded_features(other.head(500))
    assert x.shape == (500, len(fitted.expanded_feature_names_))
    expected = x @ fitted.coef_.T + fitted.intercept_
    np.testing.assert_allclose(fitted.decision_function(other.head(500)), expected,
                               atol=1e-4 * np.abs(expected).max())


def test_unfitted_estimator_refuses_to_predict(other):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        SDSSClassifier().predict(other)


def test_labels_in_any_case_and_whitespace_train_the_same_model(frame, fitted):
    messy = frame["class"].str.lower().radd("  ").add(" ")
    again = SDSSClassifier(**FAST).fit(frame, messy)
    np.testing.assert_array_equal(again.coef_, fitted.coef_)
    assert again.score(frame, messy) == fitted.score(frame, frame["class"])


def test_unlabelled_rows_are_left_out_and_counted(frame):
    y = frame["class"].astype(object).copy()
    y.iloc[::7] = None
    with pytest.warns(UserWarning, match=f"{(y.isna()).sum():,} of {len(y):,} rows have no label"):
        a = SDSSClassifier(**FAST).fit(frame, y)
    keep = y.notna().to_numpy()
    b = SDSSClassifier(**FAST).fit(frame[keep], y[keep])
    assert a.n_unlabelled_ == int((~keep).sum())
    np.testing.assert_array_equal(a.coef_, b.coef_)  # the same rows trained, split by obj_ID
    assert a.score(frame, y) == b.score(frame[keep], y[keep])


def test_pipeline_and_cross_val_score(frame):
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    pipe = Pipeline([("catalogue_only", FunctionTransformer(_catalogue_columns)),
                     ("clf", SDSSClassifier(**FAST))])
    pipe.fit(frame, frame["class"])
    assert pipe.score(frame, frame["class"]) > 0.9
    scores = cross_val_score(SDSSClassifier(max_iter=20, patience=0), frame, frame["class"], cv=3)
    assert scores.shape == (3,) and (scores > 0.85).all()


def _catalogue_columns(df):
    return df[["obj_ID", "u", "g", "r", "i", "z", "redshift"]]


def test_photometric_features_need_no_redshift(frame, fitted, other):
    est = SDSSClassifier(features="photometric", **FAST).fit(frame.drop(columns=["redshift"]), frame["class"])
    assert list(est.feature_names_in_) == ["u", "g", "r", "i", "z"]
    assert est.predict(other.drop(columns=["redshift"])).shape == (len(other),)
    with pytest.raises(AstrodaskError) as info:  # training the spectroscopic model needs the redshift
        SDSSClassifier(**FAST).fit(frame.drop(columns=["redshift"]), frame["class"])
    assert "no column(s) redshift" in _one_line(info) and "features='photometric'" in str(info.value)


def test_rows_without_a_usable_redshift_are_scored_by_the_companion(fitted, other):
    bad = other.copy()
    bad.loc[bad.index[[2, 5]], "redshift"] = np.nan
    bad.loc[bad.index[7], "redshift"] = 0.0  # the SDSS17 export's placeholder for "no redshift"
    path = fitted.scored_by(bad)
    assert (path[[2, 5, 7]] == "photometric").all() and (np.delete(path, [2, 5, 7]) == "spectroscopic").all()
    companion = fitted.model_.companion
    np.testing.assert_allclose(fitted.predict_proba(bad)[[2, 5, 7]],
                               companion.score(bad.iloc[[2, 5, 7]]).proba, rtol=1e-6)
    assert (fitted.imputed_mask(bad)[[2, 5, 7]] == 0).all()  # a routed row has nothing imputed
    # a catalogue with no redshift column at all is scored by the companion alone
    alone = other.drop(columns=["redshift"])
    assert (fitted.scored_by(alone) == "photometric").all()
    np.testing.assert_allclose(fitted.predict_proba(alone), companion.score(alone).proba, rtol=1e-6)


# ------------------------------------------------------------------------------------------------ bad input


def _one_line(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg
    return msg


def test_a_sentinel_is_refused_by_default_and_imputed_on_request(frame, fitted, other):
    bad = other.copy()
    bad.loc[bad.index[[3, 9]], "u"] = -9999.0
    bad.loc[bad.index[4], "redshift"] = 9999.0
    with pytest.raises(AstrodaskError) as info:
        fitted.predict_proba(bad)
    msg = _one_line(info)
    assert "3 value(s) are SDSS no-measurement sentinels" in msg and "u 2" in msg and "redshift 1" in msg
    assert "sentinels='missing'" in msg
    with pytest.raises(AstrodaskError, match="sentinels"):
        SDSSClassifier(**FAST).fit(bad, bad["class"])
    lenient = SDSSClassifier(sentinels="missing", **FAST).fit(frame, frame["class"])
    p = lenient.predict_proba(bad)
    assert np.isfinite(p).all()
    mask = lenient.imputed_mask(bad)
    # u is imputed; the sentinel redshift makes row 4 a row without a usable redshift, scored photometrically
    assert mask[3] == mask[9] == 0b1 and (np.delete(mask, [3, 9]) == 0).all()
    assert lenient.scored_by(bad)[4] == "photometric" and (np.delete(lenient.scored_by(bad), 4) == "spectroscopic").all()
    # the sentinel row is scored as a row with u missing, not as a 100 % QSO at u = -9999
    missing = bad.copy()
    missing.loc[missing.index[[3, 9]], "u"] = np.nan
    missing.loc[missing.index[4], "redshift"] = np.nan
    np.testing.assert_array_equal(p, lenient.predict_proba(missing))


def test_missing_values_are_imputed_visibly_or_refused(frame, fitted, other):
    holes = frame.copy()
    holes.loc[holes.index[:40], "g"] = np.nan
    est = SDSSClassifier(**FAST).fit(holes, holes["class"])
    assert est.n_imputed_ == 40
    assert (est.imputed_mask(holes)[:40] == 0b10).all()
    with pytest.raises(AstrodaskError) as info:
        SDSSClassifier(missing="error", **FAST).fit(holes, holes["class"])
    assert "40 value(s) are missing (NaN or None) in column(s) g 40" in _one_line(info)
    with pytest.raises(AstrodaskError, match="missing"):
        fitted.set_params(missing="error").predict(holes)
    fitted.set_params(missing="impute")


@pytest.mark.parametrize("change, words", [
    (lambda df: df.assign(u=df["u"].where(df.index != 5, np.inf)), ["1 row(s)", "non_finite:u 1", "quarantine"]),
    (lambda df: df.assign(g=df["g"].astype("float64").where(df.index != 5, 1e39)), ["out_of_range:g 1"]),
    (lambda df: df.drop(columns=["r"]), ["no column(s) r", "reads u, g, r, i, z", "redshift"]),
    (lambda df: df.assign(z=df["z"].astype(str)), ["column z holds", "not numbers"]),
    (lambda df: df[["u", "g", "r", "i", "z", "redshift"]].to_numpy(), ["ndarray, not a pandas or Dask DataFrame"]),
], ids=["inf", "float32-overflow", "missing-column", "text", "array"])
def test_bad_x_is_refused_in_one_line(fitted, other, change, words):
    bad = change(other.copy())
    for call in (lambda: fitted.predict(bad), lambda: SDSSClassifier(**FAST).fit(bad, other["class"])):
        with pytest.raises(AstrodaskError) as info:
            call()
        msg = _one_line(info)
        for w in words:
            assert w in msg, msg


@pytest.mark.parametrize("y, words", [
    (lambda f: f["class"].replace({"QSO": "BLAZAR"}), ["label(s) are not one of GALAXY, QSO, STAR", "'BLAZAR'"]),
    (lambda f: f["class"].iloc[:-1], ["labels for", "rows of X"]),
    (lambda f: None, ["y is required"]),
    (lambda f: pd.Series(["galaxy"] * len(f)), ["labelled training rows are all GALAXY", "at least two classes"]),
], ids=["unknown", "short", "none", "one-class"])
def test_bad_y_is_refused(frame, y, words):
    with pytest.raises(AstrodaskError) as info:
        SDSSClassifier(**FAST).fit(frame, y(frame))
    msg = _one_line(info)
    for w in words:
        assert w in msg, msg


@pytest.mark.parametrize("params, field", [
    ({"max_iter": 0}, "max_iter"), ({"l2": -1.0}, "l2"), ({"class_weight": "equal"}, "class_weight"),
    ({"monitor": "f1"}, "monitor"), ({"validation_fraction": 1.0}, "validation_fraction"),
    ({"sentinels": "ignore"}, "sentinels"), ({"missing": "zero"}, "missing"), ({"features": "radio"}, "features"),
    ({"patience": -1}, "patience"), ({"cache": "disk"}, "cache"),
])
def test_bad_parameters_are_refused_at_fit_naming_the_parameter(frame, params, field):
    est = SDSSClassifier(**params)  # __init__ only stores
    with pytest.raises(ConfigError, match=f"^{field}: "):
        est.fit(frame, frame["class"])


# ------------------------------------------------------------------------------------------------ model files


def test_save_and_load_round_trip(fitted, other, tmp_path):
    where = fitted.save(tmp_path / "model")
    assert where == str(tmp_path / "model")
    for name in ("model.json", "weights.npz", "history.json", "_SUCCESS", "_astrodask.json"):
        assert (tmp_path / "model" / name).is_file(), name
    back = SDSSClassifier.load(tmp_path / "model")
    assert back.get_params() == fitted.get_params()
    np.testing.assert_array_equal(back.coef_, fitted.coef_)
    np.testing.assert_array_equal(back.predict_proba(other), fitted.predict_proba(other))
    assert back.history_ == fitted.history_ and back.n_iter_ == fitted.n_iter_
    with pytest.raises(AstrodaskError, match="already exists"):
        fitted.save(tmp_path / "model")
    fitted.save(tmp_path / "model", overwrite=True)


@pytest.fixture(scope="module")
def cli_model(small_csv, tmp_path_factory):
    """A model directory trained by the command line's stage, and its dataset."""
    from distributed import Client, LocalCluster

    from astrodask import ingest
    from astrodask.learn import TrainConfig, stage

    d = tmp_path_factory.mktemp("cli_model")
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster, set_as_default=False) as client, client.as_current():
        ingest.run(ingest.ConvertConfig((str(small_csv),), str(d / "ds"), quiet=True), client)
        stage.run(TrainConfig(str(d / "ds"), str(d / "model"), epochs=20, patience=5, l2=2e-5, report=False,
                              quiet=True), client)
    return d / "model", d / "ds"


def test_a_model_trained_by_the_command_line_loads_as_an_estimator(cli_model, other):
    model_dir, _ = cli_model
    est = SDSSClassifier.load(model_dir)
    model = SoftmaxModel.load(model_dir)
    assert est.l2 == 2e-5 and est.patience == 5 and est.max_iter == 20 and est.features == "spectroscopic"
    np.testing.assert_array_equal(est.predict_proba(other), model.predict_proba(other))
    assert est.score(other, other["class"]) > 0.85
    assert est.best_epoch_ == json.loads((model_dir / "model.json").read_text())["info"]["best_epoch"]


def test_an_estimator_model_scores_with_the_command_line(fitted, cli_model, tmp_path):
    """``astrodask predict`` reads the estimator's saved model: the same probabilities (stored as float32)."""
    import pyarrow.parquet as pq
    from distributed import Client, LocalCluster

    from astrodask import predict

    _, ds = cli_model
    fitted.save(tmp_path / "est")
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster, set_as_default=False) as client, client.as_current():
        predict.run(predict.PredictConfig(str(ds), str(tmp_path / "est"), str(tmp_path / "p"), quiet=True), client)
    out = pq.read_table(tmp_path / "p").to_pandas().sort_values("obj_ID").reset_index(drop=True)
    rows = pq.read_table(ds).to_pandas().sort_values("obj_ID").reset_index(drop=True)
    p = fitted.predict_proba(rows)
    np.testing.assert_allclose(out[["prob_GALAXY", "prob_QSO", "prob_STAR"]].to_numpy(), p, atol=1e-6)
    assert (out["predicted_class"].to_numpy() == fitted.predict(rows)).all()


# ------------------------------------------------------------------------------------------------ Dask


@pytest.fixture(scope="module")
def dask_client():
    from astrodask.cluster import ClusterConfig, connect

    with connect(ClusterConfig(n_workers=2, threads_per_worker=1), quiet=True) as client:
        yield client


def _dask(df, partitions):
    import dask.dataframe as dd

    return dd.from_pandas(df, npartitions=partitions, sort=False)


@pytest.mark.cluster
def test_dask_fit_matches_pandas_and_predicts_lazily(dask_client, frame, fitted, other, monkeypatch):
    import pickle

    import dask.array as da

    from astrodask.cluster.backend import OnCluster
    from astrodask.learn.blocks import FeatureBlock, Rows

    received = []  # everything the client receives from the workers while fitting
    for name in ("gather", "group_sum"):
        real = getattr(OnCluster, name)

        def spy(self, *args, _real=real, **kw):
            out = _real(self, *args, **kw)
            received.extend(out if isinstance(out, list) else [out])
            return out

        monkeypatch.setattr(OnCluster, name, spy)
    ddf = _dask(frame, 4)
    est = SDSSClassifier(**FAST).fit(ddf, ddf["class"])
    monkeypatch.undo()
    # reports, summaries, moments, gradient sums: never rows or feature blocks, and small
    assert received and not [x for x in received if isinstance(x, (pd.DataFrame, Rows, FeatureBlock, np.ndarray))]
    assert max(len(pickle.dumps(x)) for x in received) < 100_000
    assert est.coef_.shape == fitted.coef_.shape
    agree = (est.predict(other) == fitted.predict(other)).mean()
    assert agree >= 0.995, agree
    dother = _dask(other, 3)
    lazy = est.predict_proba(dother)
    assert isinstance(lazy, da.Array), type(lazy)
    np.testing.assert_allclose(lazy.compute(), est.predict_proba(other), rtol=0, atol=1e-12)
    labels = est.predict(dother)
    assert isinstance(labels, da.Array) and (labels.compute() == est.predict(other)).all()
    assert est.score(dother, dother["class"]) == pytest.approx(est.score(other, other["class"]), abs=1e-12)
    assert (est.imputed_mask(dother).compute() == 0).all()


@pytest.mark.cluster
def test_dask_input_errors_are_counted_over_all_partitions(dask_client, frame):
    bad = frame.copy()
    bad.loc[bad.index[[5, len(bad) // 2, len(bad) - 3]], "i"] = -9999.0  # in three partitions
    ddf = _dask(bad, 4)
    with pytest.raises(AstrodaskError) as info:
        SDSSClassifier(**FAST).fit(ddf, ddf["class"])
    assert "3 value(s) are SDSS no-measurement sentinels (-9999, -999, 9999) in column(s) i 3" in _one_line(info)
    with pytest.raises(AstrodaskError, match="give y as a Dask Series"):
        SDSSClassifier(**FAST).fit(ddf, bad["class"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning: every row has a label
        SDSSClassifier(sentinels="missing", max_iter=3, patience=0).fit(ddf, ddf["class"])


@pytest.mark.cluster
def test_dask_fit_without_a_client_is_refused(frame, monkeypatch):
    import distributed

    def no_client():
        raise ValueError("No clients found")

    monkeypatch.setattr(distributed, "get_client", no_client)
    ddf = _dask(frame, 2)
    with pytest.raises(AstrodaskError, match="no Dask client is running"):
        SDSSClassifier(**FAST).fit(ddf, ddf["class"])


# ------------------------------------------------------------------------------------------------ real data


@pytest.mark.realdata
@pytest.mark.cluster
def test_sdss17_in_pandas_and_in_dask_agree_on_an_independent_catalogue(shared_data, monkeypatch):
    """Fitted on SDSS17 in pandas and on the same rows as a Dask DataFrame (8 partitions, 2 workers), the two
    estimators agree on >= 99.5 % of the predictions of an independent catalogue (the embedded synthetic
    sample); the Dask predict_proba is lazy."""
    import dask.array as da
    import dask.dataframe as dd

    from astrodask.cluster import ClusterConfig, connect
    from astrodask.pipeline import default_source

    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    sdss = pd.read_csv(shared_data / "sdss17.csv")
    params = {}  # the defaults (this copy of SDSS17 has no sentinel row: the strict default accepts it)
    local = SDSSClassifier(**params).fit(sdss, sdss["class"])
    with connect(ClusterConfig(n_workers=2, threads_per_worker=1), quiet=True) as client:
        assert len(workers_now(client)) == 2
        ddf = dd.from_pandas(sdss, npartitions=8, sort=False)
        spread = SDSSClassifier(**params).fit(ddf, ddf["class"])
        independent = pd.read_csv(default_source())
        lazy = spread.predict_proba(dd.from_pandas(independent, npartitions=4, sort=False))
        assert isinstance(lazy, da.Array)
        p_spread = lazy.compute()
    p_local = local.predict_proba(independent)
    agree = (p_spread.argmax(axis=1) == p_local.argmax(axis=1)).mean()
    print(f"\npandas vs Dask estimators on {len(independent):,} independent rows: {agree:.4%} agree; "
          f"accuracy {local.score(independent, independent['class']):.4f} / "
          f"{(np.asarray(CLASSES)[p_spread.argmax(axis=1)] == independent['class']).mean():.4f}")
    assert agree >= 0.995


# ------------------------------------------------------------------------------------------------ packaging


def test_public_names_are_exported_lazily_and_lower_layers_never_import_learn():
    import subprocess
    import sys

    import astrodask

    for name in astrodask.__all__:
        assert getattr(astrodask, name) is not None, name
    assert astrodask.SDSSClassifier is SDSSClassifier
    code = ("import sys, astrodask, astrodask.model, astrodask.features, astrodask.evaluate, astrodask.predict, "
            "astrodask.dataset, astrodask.storage, astrodask.labels; "
            "bad = [m for m in ('astrodask.learn', 'sklearn') if m in sys.modules]; print(bad); sys.exit(bool(bad))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


# ------------------------------------------------------------------------------------------------ labels (issue 24)


def _indices(y: pd.Series) -> pd.Series:
    return y.map({"GALAXY": 0, "QSO": 1, "STAR": 2}).astype("int64")


def test_integer_labels_are_class_indices_in_schema_order(frame, fitted, other):
    """0 GALAXY, 1 QSO, 2 STAR (what a LabelEncoder gives the names): the same model as the names; classes_,
    predict and score then speak integers."""
    est = SDSSClassifier(**FAST).fit(frame, _indices(frame["class"]))
    np.testing.assert_array_equal(est.coef_, fitted.coef_)
    assert list(est.classes_) == [0, 1, 2] and list(est.class_names_) == CLASSES
    names = fitted.predict(other)
    np.testing.assert_array_equal(est.predict(other), pd.Series(names).map({"GALAXY": 0, "QSO": 1, "STAR": 2}))
    np.testing.assert_array_equal(est.predict_proba(other), fitted.predict_proba(other))
    assert est.score(frame, _indices(frame["class"])) == fitted.score(frame, frame["class"])


def test_digit_text_labels_are_no_class_indices(frame):
    with pytest.raises(AstrodaskError) as info:
        SDSSClassifier(**FAST).fit(frame, _indices(frame["class"]).astype(str))
    msg = str(info.value)
    assert "label(s) are not one of GALAXY, QSO, STAR: '0' (" in msg, msg
    assert msg.endswith("(class indices are read only from integers: 0 = GALAXY, 1 = QSO, 2 = STAR)"), msg


def test_an_integer_label_out_of_range_is_refused_with_the_mapping(frame):
    y = _indices(frame["class"])
    y.iloc[:5] = 3
    with pytest.raises(AstrodaskError) as info:
        SDSSClassifier(**FAST).fit(frame, y)
    assert str(info.value) == ("y: integer labels are class indices, 0 = GALAXY, 1 = QSO, 2 = STAR; 5 are not: 3 (5); "
                               "fix them, or give class names"), str(info.value)


def test_cross_val_predict_with_predict_proba(frame):
    """scikit-learn encodes the names as 0, 1, 2 for method='predict_proba' and checks classes_ against them."""
    from sklearn.model_selection import cross_val_predict

    p = cross_val_predict(SDSSClassifier(max_iter=20, patience=0), frame, frame["class"], cv=3,
                          method="predict_proba")
    assert p.shape == (len(frame), 3)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-9)
    truth = _indices(frame["class"]).to_numpy()
    assert (p.argmax(axis=1) == truth).mean() > 0.85


def test_save_into_an_existing_model_names_the_python_parameter(fitted, tmp_path):
    fitted.save(tmp_path / "model")
    with pytest.raises(AstrodaskError) as info:
        fitted.save(tmp_path / "model")
    msg = str(info.value)
    assert msg == (f"{tmp_path / 'model'} already exists (an astrodask model); pass overwrite=True to replace it, or "
                   "choose another path"), msg
    assert "--" not in msg


def test_small_training_data_is_warned_about_with_the_counts(frame):
    few = pd.concat([frame[frame["class"] == c].head(n) for c, n in (("GALAXY", 300), ("QSO", 40), ("STAR", 200))])
    with pytest.warns(UserWarning) as record:
        SDSSClassifier(**FAST).fit(few, few["class"])
    msgs = [str(w.message) for w in record if "labelled training rows" in str(w.message)]
    assert len(msgs) == 1, [str(w.message) for w in record]
    assert msgs[0].startswith("X: only "), msgs[0]
    assert "under ~100 training rows in a class and under ~100 validation rows" in msgs[0], msgs[0]
    assert "train on more rows" in msgs[0], msgs[0]


def test_enough_training_data_is_not_warned_about(frame):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SDSSClassifier(**FAST).fit(frame, frame["class"])


@pytest.mark.cluster
def test_dask_integer_labels_are_class_indices(dask_client, frame, other):
    """A Dask Series of integers: the same model as the names, and predict (lazy) returns the indices."""
    ddf = _dask(frame, 4)
    y = ddf["class"].map({"GALAXY": 0, "QSO": 1, "STAR": 2}, meta=("class", "int64"))
    est = SDSSClassifier(**FAST).fit(ddf, y)
    named = SDSSClassifier(**FAST).fit(ddf, ddf["class"])
    assert list(est.classes_) == [0, 1, 2]
    np.testing.assert_array_equal(est.coef_, named.coef_)
    lazy = est.predict(_dask(other, 3))
    expected = pd.Series(named.predict(other)).map({"GALAXY": 0, "QSO": 1, "STAR": 2}).to_numpy()
    np.testing.assert_array_equal(np.asarray(lazy.compute()).astype(np.int64), expected)
    assert est.score(ddf, y) == named.score(ddf, ddf["class"])


@pytest.mark.cluster
def test_dask_priors_estimate_matches_pandas(dask_client, frame, fitted, other):
    """priors="estimate" on a Dask X sums on the workers (a bounded wait) and gives pandas' probabilities."""
    est = SDSSClassifier(priors="estimate", **FAST).fit(frame, frame["class"])
    on_pandas = est.predict_proba(other)
    on_dask = np.asarray(est.predict_proba(_dask(other, 3)).compute())
    np.testing.assert_allclose(on_dask, on_pandas, rtol=1e-9, atol=1e-12)
    assert not np.allclose(on_pandas, fitted.predict_proba(other))  # the estimate moved them
