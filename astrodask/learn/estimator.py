"""``SDSSClassifier``: the astrodask model as a scikit-learn estimator, on pandas or across a Dask cluster.

It is the ``train`` stage's model, trained by the same code (``trainer.fit``: the same feature fitting, blocks,
L-BFGS on summed gradients and epoch loop): a pandas frame is trained in this process (the worker functions
called here), a Dask DataFrame across the current client's workers (the client receives statistics, gradients
and weights, never the rows). Prediction on a Dask DataFrame is lazy and partition-wise, as dask-ml's
``ParallelPostFit``. ``save`` and ``load`` use the model files of the command line (JSON + npz, no pickle), so a
model trained with ``astrodask train`` loads as an estimator and an estimator's model scores with
``astrodask predict``.

One class with scikit-learn's whole surface (parameters, fit on pandas and on Dask, predict/predict_proba/
score, the Dask partition-wise paths, save/load, LSDB), which is why this module is longer than most.
"""

from __future__ import annotations

import hashlib
import numbers
import warnings
from dataclasses import replace

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from .. import labels, schema
from ..cluster.backend import InProcess, OnCluster
from ..console import log as console_log
from ..console import track
from ..dataset import validation_split
from ..errors import AstrodaskError, ConfigError
from ..features import FEATURE_SETS, resolve_feature_set
from ..model import HISTORY_JSON, ModelInfo, SoftmaxModel
from ..storage import Location, StagedOutput, is_complete, read_json, read_meta, write_json_atomic
from .config import DEFAULT_EPOCHS, TrainOptions
from .inputs import (
    MISSING_POLICIES,
    SENTINEL_POLICIES,
    InputReport,
    catalog_frame,
    checked_frame,
    inputs_of,
    is_dask_frame,
    is_dask_series,
    prepare,
    prepare_partition,
    prepared_rows,
    report_of,
    require_columns,
)
from .trainer import fit, small_data

K = len(schema.CLASSES)
LABEL = "__astrodask_label__"
_D = TrainOptions()
"""The training options' defaults: the estimator's parameters of the same name default to them."""


def _silent(msg: str) -> None:
    pass


class SDSSClassifier(ClassifierMixin, BaseEstimator):
    """Multinomial logistic regression on spline and tensor-product features of SDSS photometry (and redshift):
    STAR, GALAXY or QSO.

    Parameters
    ----------
    features : {"spectroscopic", "photometric", "photometric+morphology"}
        Feature set. ``spectroscopic`` reads ``u, g, r, i, z, redshift`` (and ``zwarning`` when X has it), and
        trains a photometric companion on the same rows (``companion_rows``) that scores every row whose redshift
        is no measurement (null, exactly 0, or flagged by a non-zero ``zwarning``): ``scored_by`` says which;
        ``photometric`` reads only the bands (and, with ``morphology``, ``psf_u..psf_z`` when X has them);
        ``photometric+morphology`` needs the PSF bands.
    morphology : bool
        With ``features="photometric"``: add the PSF - model magnitude differences when X has ``psf_u..psf_z``.
    l2 : float
        L2 strength: the objective is the mean log-loss + l2/2 * |W|^2 (scikit-learn's C = 1 / (l2 * n_train)).
    max_iter : int
        Maximum L-BFGS iterations (epochs: one pass over the data each).
    tol : float
        L-BFGS stops when the relative decrease of the objective falls below this.
    class_weight : None or "balanced"
        Row weights by class.
    patience : int or None
        Early stopping on the validation rows: stop when the monitored score has not improved by
        ``min_improvement`` for this many epochs and keep the best epoch's weights; 0 never stops early and keeps
        the last epoch's. None (the default): 5, or 3 after a warm start.
    min_improvement : float
        The least gain of the monitored score that counts as an improvement (0: any gain).
    monitor : {"accuracy", "loss"}
        Validation score watched by early stopping.
    validation_fraction : float
        Share of the rows held out for early stopping, chosen by a hash of ``obj_ID`` (or, without that column,
        of the row's values), so the same rows whatever the partitioning. 0: no validation rows (early stopping
        then watches the training score).
    sentinels : {"error", "missing"}
        An SDSS no-measurement sentinel (-9999, -999, 9999) in X is refused (``error``) or treated as a missing
        value (``missing``, as ``astrodask convert`` does).
    missing : {"impute", "error"}
        A missing value (NaN, None) is imputed with the training median (``impute``; see ``imputed_mask``) or
        refused (``error``).
    cache : {"auto", "memory", "spill", "stream"}
        Dask input: keep the training rows on the workers in a compact form (``memory``), on their local disks
        (``spill``), or remake them from the checked rows every pass (``stream``); ``auto`` keeps them in memory
        when they fit in half the workers' memory, else spills them.
    warm_start_rows : int or None
        First fit to convergence on a subsample of about this many training rows (by a hash of the row), then
        continue on all rows with the stopping rule; None (the default): a tenth of the training rows, at most
        250,000, when that is at least 100,000, else none; 0 starts from zero weights.
    companion_rows : int
        A spectroscopic model's photometric companion trains on a hash subsample of about this many training rows
        when there are more; 0: on all of them.
    priors : None, "estimate", or class fractions
        The class mix of the rows to classify: None keeps the training rows' mix; fractions (a mapping, or
        ``"GALAXY=0.55,QSO=0.15,STAR=0.30"``) re-weight the probabilities to it by Bayes' rule; ``"estimate"``
        estimates it on X itself by EM (Saerens et al. 2002; ``priors_estimate_``) and re-weights to that.
    verbose : bool
        Log the training steps and show progress bars.

    Attributes
    ----------
    classes_ : ndarray
        The columns of ``predict_proba`` and what ``predict`` returns: the names ``GALAXY, QSO, STAR``, or, when
        ``fit`` was given integer labels (class indices: 0 GALAXY, 1 QSO, 2 STAR, as scikit-learn's label
        encoding of the names gives them), ``0, 1, 2``.
    class_names_ : ndarray of str
        ``GALAXY, QSO, STAR`` (what ``classes_`` stands for).
    coef_ : ndarray (3, n_expanded)
        Weights of the expanded, standardised features (``expanded_feature_names_``), one row per class.
    intercept_ : ndarray (3,)
    feature_names_in_ : ndarray of str
        The catalogue columns X must have (other columns are ignored).
    n_features_in_ : int
        ``len(feature_names_in_)``.
    expanded_feature_names_ : ndarray of str
        Names of the expanded features (``coef_``'s columns): base features, B-spline bases, tensor products.
    n_iter_ : int
        Epochs run. ``best_epoch_``: the epoch whose weights were kept. ``history_``: one dict per epoch.
    n_imputed_ : int
        Training rows with at least one input imputed with the training median.
    n_unlabelled_ : int
        Rows of y without a label (null), left out of training.
    domain_ : TrainingDomain
        Where the training rows lay (per input, the bounds beyond which ``out_of_domain`` flags a row) and the
        training class fractions (``domain_.priors``).
    companion_ : SoftmaxModel or None
        A spectroscopic model's photometric companion.
    priors_estimate_ : priors.Estimate
        After a prediction with ``priors="estimate"``: the estimated class fractions, EM iterations, rows.
    """

    def __init__(self, features=_D.features, l2=_D.l2, max_iter=DEFAULT_EPOCHS["parallel"], tol=_D.tol,
                 class_weight=_D.class_weight, patience=_D.patience, min_improvement=_D.min_improvement,
                 monitor=_D.monitor, validation_fraction=0.1, sentinels="error", missing="impute", cache=_D.cache,
                 morphology=_D.morphology, priors=None, verbose=False, warm_start_rows=_D.warm_start_rows,
                 companion_rows=_D.companion_rows):
        self.features = features
        self.morphology = morphology
        self.l2 = l2
        self.max_iter = max_iter
        self.tol = tol
        self.class_weight = class_weight
        self.patience = patience
        self.min_improvement = min_improvement
        self.monitor = monitor
        self.validation_fraction = validation_fraction
        self.sentinels = sentinels
        self.missing = missing
        self.cache = cache
        self.priors = priors
        self.verbose = verbose
        self.warm_start_rows = warm_start_rows
        self.companion_rows = companion_rows

    # ------------------------------------------------------------------------------------------ parameters

    def _policies(self) -> None:
        if self.sentinels not in SENTINEL_POLICIES:
            raise ConfigError("sentinels", f"unknown value {self.sentinels!r}",
                              f"use one of {', '.join(SENTINEL_POLICIES)}")
        if self.missing not in MISSING_POLICIES:
            raise ConfigError("missing", f"unknown value {self.missing!r}", f"use one of {', '.join(MISSING_POLICIES)}")

    def _options(self) -> TrainOptions:
        """The parameters as the training options (checked: ConfigError names the parameter)."""
        self._policies()
        if isinstance(self.max_iter, bool) or not isinstance(self.max_iter, numbers.Integral) or self.max_iter < 1:
            raise ConfigError("max_iter", f"must be an integer >= 1, got {self.max_iter!r}", "use e.g. 400")
        vf = self.validation_fraction
        if isinstance(vf, bool) or not isinstance(vf, numbers.Real) or not 0 <= vf < 1:
            raise ConfigError("validation_fraction", f"must be in [0, 1), got {vf!r}", "use e.g. 0.1")
        for name in ("l2", "tol", "min_improvement"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Real):
                raise ConfigError(name, f"must be a number, got {v!r}", "use e.g. 1e-5")
        for name, fix in (("patience", "use e.g. 5, 0 or None"), ("warm_start_rows", "use e.g. 250000, 0 or None"),
                          ("companion_rows", "use e.g. 250000, or 0")):
            v = getattr(self, name)
            if name in ("patience", "warm_start_rows") and v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                raise ConfigError(name, f"must be an integer, got {v!r}", fix)
        patience = None if self.patience is None else int(self.patience)
        return TrainOptions(features=self.features, mode="parallel", epochs=int(self.max_iter), l2=float(self.l2),
                            class_weight=self.class_weight, patience=patience,
                            min_improvement=float(self.min_improvement), monitor=self.monitor,
                            tol=float(self.tol), cache=self.cache, report=False,
                            warm_start_rows=None if self.warm_start_rows is None else int(self.warm_start_rows),
                            companion_rows=int(self.companion_rows))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # missing values are imputed (missing="impute")
        tags.input_tags.string = False
        return tags

    # ------------------------------------------------------------------------------------------ fitting

    def fit(self, X, y):
        """Fit on X (a pandas DataFrame: in this process; a Dask DataFrame: on the current client's workers)
        and y (class names in any case, or integer class indices 0 GALAXY, 1 QSO, 2 STAR; null = unlabelled; for
        a Dask X, a Dask Series from the same frame). Returns self."""
        opts = self._options()
        indices = _integer_labels(y)
        y = _label_names(y)
        opts = replace(opts, features=self._feature_set(X, opts.features))
        companion = self._feature_set(X, "photometric") if opts.features == "spectroscopic" else None
        need = inputs_of(opts.features, companion)
        log = console_log if self.verbose else _silent
        if is_dask_frame(X):
            backend = OnCluster(_current_client(), quiet=not self.verbose)
            items, report = self._dask_rows(X, y, backend, need)
        else:
            require_columns(X, need, "X")
            y = _pandas_labels(y, len(X))
            backend = InProcess()
            prepared = prepare(X, y, need, where="X")
            items, report = [prepared.rows], prepared.report
        report.check(self.sentinels, self.missing, "X")
        if report.rows == 0:
            raise AstrodaskError("X has no rows; fit on a catalogue with labelled rows")
        if report.unlabelled:
            warnings.warn(f"{report.unlabelled:,} of {report.rows:,} rows have no label (null in y): left out of "
                          "training", UserWarning, stacklevel=2)
        rule = validation_split(self.validation_fraction)
        fitted = fit(backend, items, report.rows, opts, rule, where="X", config={"estimator": self.get_params()},
                     quiet=not self.verbose, log=log, companion=companion)
        small = small_data(fitted.counts, rule)
        if small:
            warnings.warn(f"X: {small}", UserWarning, stacklevel=2)
        self._set_model(fitted.model, [r.to_json() for r in fitted.history])
        if indices:  # predict and predict_proba speak the caller's labels (scikit-learn's cross_val_predict)
            self.classes_ = np.arange(K)
        self.n_imputed_ = int(report.imputed_rows)
        self.n_unlabelled_ = int(report.unlabelled)
        return self

    def _feature_set(self, X, features: str) -> str:
        """``photometric`` becomes ``photometric+morphology`` when X has PSF magnitudes (and ``morphology``)."""
        cols = list(getattr(X, "columns", []))
        empty = [] if is_dask_frame(X) else [c for c in schema.PSF_BANDS if c in cols and X[c].isna().all()]
        return resolve_feature_set(features, cols, empty, bool(self.morphology))

    def _dask_rows(self, X, y, backend, need: tuple[str, ...]) -> tuple[list, InputReport]:
        """Check the partitions of X and y on the workers; the checked rows stay there (futures)."""
        require_columns(X, need, "X")
        if not is_dask_series(y):
            raise AstrodaskError(f"y is a {type(y).__name__}: with a Dask DataFrame X, give y as a Dask Series from "
                                 "the same frame (e.g. y = ddf['class'])")
        cols = [c for c in (schema.ID, schema.ZWARNING) if c in X.columns] + list(need)
        try:
            frame = X[cols].assign(**{LABEL: y})
        except Exception as exc:  # noqa: BLE001 - dask's alignment errors have no common type
            raise AstrodaskError(f"y is not partitioned like X ({str(exc).splitlines()[0][:80]}); take X and y from "
                                 "one Dask DataFrame") from None
        parts = backend.client.compute(frame.to_delayed())
        prepared = backend.map(prepare_partition, parts, "check X", need=need, label=LABEL)
        del parts
        report = sum(backend.gather(backend.map(report_of, prepared)), InputReport())
        if report.rejected or report.unknown_labels:
            report.check(self.sentinels, self.missing, "X")
        return backend.map(prepared_rows, prepared), report

    def _set_model(self, model: SoftmaxModel, history: list) -> None:
        spec = model.spec
        self.spec_ = spec
        self.info_ = model.info
        self.domain_ = model.domain
        self.companion_ = model.companion
        self.class_names_ = np.asarray(model.classes_, dtype=object)
        self.classes_ = self.class_names_
        self.coef_ = np.asarray(model.coef, dtype=np.float64)
        self.intercept_ = np.asarray(model.intercept, dtype=np.float64)
        self.feature_names_in_ = np.asarray(model.inputs, dtype=object)
        self.n_features_in_ = len(self.feature_names_in_)
        self.expanded_feature_names_ = np.asarray(spec.names, dtype=object)
        self.history_ = list(history)
        self.n_iter_ = model.info.epochs_run or len(history)
        self.best_epoch_ = model.info.best_epoch or self.n_iter_

    @property
    def model_(self) -> SoftmaxModel:
        """The fitted model as data (what ``save`` writes and ``astrodask predict`` scores with)."""
        check_is_fitted(self, "coef_")
        return SoftmaxModel(self.spec_, self.coef_, self.intercept_, tuple(self.class_names_), info=self.info_,
                            domain=self.domain_, companion=self.companion_)

    # ------------------------------------------------------------------------------------------ prediction

    def _frame(self, X) -> pd.DataFrame:
        self._policies()
        model = self.model_
        require_columns(X, model.required, "X", model.optional)
        return checked_frame(X, model.columns_for(X.columns), self.sentinels, self.missing, "X")

    def _lazy(self, X, fn, meta, *args):
        self._policies()
        model = self.model_
        require_columns(X, model.required, "X", model.optional)
        return X.map_partitions(fn, model, self.sentinels, self.missing, *args, meta=meta)

    def _target_priors(self, X):
        """The priors the probabilities are re-weighted to: None (the training ones), the given fractions, or
        their EM estimate on X itself (``priors="estimate"``: summed on the workers for a Dask X)."""
        from .. import priors

        target = priors.parse(self.priors)
        if target != priors.ESTIMATE:
            return target
        model = self.model_
        if is_dask_frame(X):
            from dask import delayed

            self._policies()
            require_columns(X, model.required, "X", model.optional)
            parts = [delayed(_prior_sums_partition)(p, model, self.sentinels, self.missing) for p in X.to_delayed()]
            sums = sum(track(_current_client().compute(parts), "priors", quiet=True), priors.PriorSums())
        else:
            scored = model.score(self._frame(X))
            sums = priors.sums_of(scored.proba, scored.photometric)
        self.priors_estimate_ = priors.estimate(sums, model.path_priors())
        return self.priors_estimate_.priors

    def decision_function(self, X):
        """Class scores (n, 3) before the link (softmax): NumPy for pandas, a lazy Dask array for Dask."""
        X = catalog_frame(X)
        model = self.model_
        if is_dask_frame(X):
            return self._lazy(X, _decision_partition, np.empty((0, K)))
        return model.decision_function(self._frame(X))

    def predict_proba(self, X):
        """Probability of each class (columns ``classes_``): NumPy for pandas, a lazy Dask array (computed
        partition by partition on the workers) for a Dask DataFrame or an LSDB catalogue (its columns matched
        by convert's rules; ``astrodask.lsdb.classify`` returns the catalogue with the predictions instead)."""
        X = catalog_frame(X)
        model = self.model_
        target = self._target_priors(X)
        if is_dask_frame(X):
            return self._lazy(X, _proba_partition, np.empty((0, K)), target)
        return _proba(model, self._frame(X), target)

    def predict(self, X):
        """The most probable class of each row, as ``classes_`` (NumPy, or a lazy Dask array)."""
        X = catalog_frame(X)
        model = self.model_
        target = self._target_priors(X)
        if is_dask_frame(X):
            return self._lazy(X, _predict_partition, np.empty((0,), dtype=self.classes_.dtype), target,
                              self.classes_)
        return self.classes_[_proba(model, self._frame(X), target).argmax(axis=1)]

    def expanded_features(self, X) -> np.ndarray:
        """The model's input matrix of a pandas X: the expanded, standardised features (columns
        ``expanded_feature_names_``), so that ``decision_function(X) == expanded_features(X) @ coef_.T +
        intercept_`` (float32 precision). Scoring never builds it; it is for inspecting ``coef_``."""
        check_is_fitted(self, "coef_")
        if is_dask_frame(X):
            raise AstrodaskError("expanded_features takes a pandas DataFrame (the matrix is 330+ columns per row); "
                                 "use X.map_partitions for a Dask DataFrame")
        return self.spec_.expand(self._frame(X)).astype(np.float64)

    def imputed_mask(self, X):
        """Which inputs of each row are missing and imputed with the training median: a uint16 bit mask (bit k:
        ``schema.INPUT_BITS[k]``: u, g, r, i, z, redshift, psf_u..psf_z), as the ``imputed`` column of
        ``astrodask predict``; 0 means every input was measured."""
        return self._mask(X, "imputed")

    def out_of_domain(self, X):
        """Which inputs of each row lie outside the range of the training rows of the model that scores it: a
        uint16 bit mask in the order of ``imputed_mask``, as the ``out_of_domain`` column of ``astrodask
        predict``; 0 means every input is inside (the prediction is no extrapolation)."""
        return self._mask(X, "out_of_domain")

    def scored_by(self, X):
        """Which model scores each row: ``spectroscopic``, or ``photometric`` (a photometric model, or a
        spectroscopic model's companion for a row whose redshift is no measurement)."""
        return self._mask(X, "scored_by")

    def _mask(self, X, what: str):
        check_is_fitted(self, "coef_")
        X = catalog_frame(X)
        dtype = object if what == "scored_by" else np.uint16
        if is_dask_frame(X):
            return self._lazy(X, _mask_partition, np.empty((0,), dtype=dtype), what)
        return _mask_of(self.model_.score(self._frame(X)), what)

    def score(self, X, y, sample_weight=None):
        """Accuracy on the labelled rows of y (names in any case, or integer class indices as in ``fit``; null
        labels are left out)."""
        model = self.model_
        y = _label_names(y)
        if is_dask_frame(X):
            if sample_weight is not None:
                raise AstrodaskError("sample_weight is not supported with a Dask DataFrame X")
            if not is_dask_series(y):
                raise AstrodaskError(f"y is a {type(y).__name__}: with a Dask DataFrame X, give y as a Dask Series")
            self._policies()
            require_columns(X, model.required, "X", model.optional)
            cols = [*model.columns_for(X.columns), *[c for c in (schema.ZWARNING,) if c in X.columns]]
            frame = X[cols].assign(**{LABEL: y})
            total = frame.map_partitions(_score_partition, model, self.sentinels, self.missing,
                                         meta=np.empty((0, 2))).sum(axis=0)
            sums = track([_current_client().compute(total)], "score", quiet=True)[0]  # bounded (cluster.watch)
            correct, n = float(sums[0]), float(sums[1])
        else:
            codes = labels.encode(_pandas_labels(y, len(X)), where="y")
            pred = model.predict_proba(self._frame(X)).argmax(axis=1)
            w = np.ones(len(codes)) if sample_weight is None else np.asarray(sample_weight, np.float64)
            known = codes >= 0
            correct, n = float(w[known][pred[known] == codes[known]].sum()), float(w[known].sum())
        if n == 0:
            raise AstrodaskError("y has no labelled rows to score")
        return correct / n

    # ------------------------------------------------------------------------------------------ files

    def save(self, path, overwrite: bool = False) -> str:
        """Write the model directory (``model.json`` + ``weights.npz``, as ``astrodask train`` does, and
        ``history.json``) to ``path`` (a directory or URL), committed whole; returns where it went.

        A model (or other output) astrodask wrote at ``path`` is replaced only with ``overwrite=True``."""
        model = self.model_
        model = replace(model, info=replace(self.info_, config={"estimator": self.get_params()}))
        dest = Location.of(path)
        if not overwrite and is_complete(dest):
            kind = read_meta(dest).get("kind") or "output"
            raise AstrodaskError(f"{dest} already exists (an astrodask {kind}); pass overwrite=True to replace it, "
                                 "or choose another path")
        weights = hashlib.sha256(self.coef_.tobytes() + self.intercept_.tobytes()).hexdigest()[:16]
        fp = {"stage": "estimator", "weights": weights, "params": self.get_params()}
        with StagedOutput(dest, overwrite=overwrite, kind="model", fingerprint=fp) as out:
            model.save(out.staging)
            write_json_atomic(out.staging / HISTORY_JSON, self.history_)
            out.commit({"trained_by": type(self).__name__})
        return str(dest)

    @classmethod
    def load(cls, path) -> SDSSClassifier:
        """A fitted estimator from a model directory written by ``save`` or by ``astrodask train``."""
        model = SoftmaxModel.load(path)
        est = cls(**_params_from_info(model.info, model.spec.feature_set, cls._get_param_names()))
        try:
            history = read_json(Location.of(path) / HISTORY_JSON)
        except (FileNotFoundError, AstrodaskError):
            history = []
        est._set_model(model, history if isinstance(history, list) else [])
        return est


# ---------------------------------------------------------------------------------------------- helpers


def _current_client():
    try:
        from distributed import get_client

        return get_client()
    except (ImportError, ValueError):
        raise AstrodaskError("X is a Dask DataFrame but no Dask client is running; connect one first "
                             "(astrodask.cluster.connect(...) or distributed.Client(...))") from None


def _integer_labels(y) -> bool:
    if is_dask_series(y):
        return pd.api.types.is_integer_dtype(y.dtype) and not pd.api.types.is_bool_dtype(y.dtype)
    return y is not None and labels.integer_labels(y)


def _label_names(y):
    """``y`` with integer class indices read as class names (``labels.names_of_indices``); other labels as given."""
    if not _integer_labels(y):
        return y
    if is_dask_series(y):
        return y.map_partitions(labels.names_of_indices, meta=(y.name, object))
    return labels.names_of_indices(y if isinstance(y, pd.Series) else pd.Series(list(y), dtype=object))


def _pandas_labels(y, n: int) -> pd.Series:
    if y is None:
        raise AstrodaskError("y is required: pass the class names (e.g. df['class'])")
    if is_dask_series(y):
        raise AstrodaskError("y is a Dask Series but X is a pandas DataFrame; give both as pandas, or both as Dask")
    s = pd.Series(np.asarray(y, dtype=object) if not isinstance(y, pd.Series) else y.to_numpy(dtype=object))
    if s.ndim != 1 or len(s) != n:
        raise AstrodaskError(f"y has {len(s):,} labels for {n:,} rows of X; give one label per row")
    return s


def _params_from_info(info: ModelInfo, feature_set: str, names) -> dict:
    """Estimator parameters from a model's ``info``: an estimator's own, or mapped from ``astrodask train``'s
    settings; the feature set always from the model's features."""
    config = info.config
    if isinstance(config.get("estimator"), dict):
        params = {k: v for k, v in config["estimator"].items() if k in names}
    else:
        params = {k: config[k] for k in ("l2", "tol", "class_weight", "patience", "min_improvement", "monitor",
                                         "cache", "warm_start_rows", "companion_rows")
                  if k in config}
        epochs = config.get("epochs")
        params["max_iter"] = epochs if isinstance(epochs, int) and epochs >= 1 else DEFAULT_EPOCHS["parallel"]
    params["features"] = feature_set if feature_set in FEATURE_SETS else "spectroscopic"
    return params


def _checked(df, model, sentinels, missing):
    return checked_frame(df, model.columns_for(df.columns), sentinels, missing, "a partition of X")


def _proba(model: SoftmaxModel, frame: pd.DataFrame, target) -> np.ndarray:
    from .. import priors

    scored = model.score(frame)
    if target is None:
        return scored.proba
    return priors.apply(scored.proba, model.priors_of(scored.photometric), target)


def _mask_of(scored, what: str) -> np.ndarray:
    from ..model import PATHS

    if what == "scored_by":
        return np.asarray(PATHS, dtype=object)[scored.photometric.astype(int)]
    return getattr(scored, what)


def _decision_partition(df, model, sentinels, missing):
    return model.decision_function(_checked(df, model, sentinels, missing))


def _proba_partition(df, model, sentinels, missing, target=None):
    return _proba(model, _checked(df, model, sentinels, missing), target)


def _predict_partition(df, model, sentinels, missing, target=None, classes=None):
    p = _proba_partition(df, model, sentinels, missing, target)
    names = np.asarray(model.classes_, dtype=object) if classes is None else np.asarray(classes)
    return names[p.argmax(axis=1)]


def _mask_partition(df, model, sentinels, missing, what):
    return _mask_of(model.score(_checked(df, model, sentinels, missing)), what)


def _prior_sums_partition(df, model, sentinels, missing):
    from .. import priors

    scored = model.score(_checked(df, model, sentinels, missing))
    return priors.sums_of(scored.proba, scored.photometric)


def _score_partition(df, model, sentinels, missing):
    codes = labels.encode(df[LABEL], where="y")
    pred = _proba_partition(df.drop(columns=[LABEL]), model, sentinels, missing).argmax(axis=1)
    known = codes >= 0
    return np.array([[float((pred[known] == codes[known]).sum()), float(known.sum())]])
