"""The model as data: a multinomial logistic regression over a FeatureSpec, saved as JSON + npz.

``MODEL_DIR/model.json`` holds the format version, class names, feature definitions with their fitted
statistics, the training domain (where the training rows lay, the training class fractions), training settings,
library versions and the digest of ``MODEL_DIR/weights.npz``, which holds ``coef`` (classes x features) and
``intercept``, read with ``allow_pickle=False``. Loading parses JSON and numeric arrays only, so a model file can
never run code, and weights that are not the ones ``model.json`` was written with are refused.

A spectroscopic model carries a photometric *companion*, trained in the same run on the same rows (or a hash
subsample of them: ``companion_rows``) and saved in the same two files (``companion`` in model.json,
``companion_coef``/``companion_intercept`` in the npz): a row whose redshift is no measurement
(``schema.usable_redshift``) is scored by it, and every prediction says which path scored it.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pandas as pd

from . import __version__, schema
from .errors import AstrodaskError
from .features import FeatureSpec, raw_columns
from .storage import Location, require_not_incomplete

if TYPE_CHECKING:
    from .features.compiled import KernelParams

FORMAT = "astrodask-softmax"
FORMAT_VERSION = 2
MODEL_JSON = "model.json"
WEIGHTS = "weights.npz"
HISTORY_JSON = "history.json"
"""The training history beside the model (one record per epoch)."""


LINKS = ("softmax", "ovr")


@dataclass(frozen=True)
class ModelInfo:
    """How a model was trained (``model.json``'s ``info``). ``link`` also decides how it scores."""

    link: str = "softmax"
    """``softmax`` (multinomial logistic regression) or ``ovr`` (normalised one-vs-rest sigmoids, as scikit-learn's
    SGDClassifier: the incremental mode)."""
    config: dict = field(default_factory=dict, hash=False)
    """The settings it was trained with (the train options, or ``{"estimator": params}``)."""
    cache: str | None = None
    """Where the training features lived: ``memory`` or ``stream``."""
    n_train: int = 0
    n_valid: int = 0
    n_test: int = 0
    n_unlabelled: int = 0
    train_seconds: float = 0.0
    epochs_run: int = 0
    best_epoch: int = 0
    stop: str | None = None
    """Why training ended: ``early_stop``, ``converged`` or ``max_epochs``."""

    def to_json(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, doc: dict) -> ModelInfo:
        """The info of a model file; ValueError naming the field that is not what a model file holds."""
        known = {f.name: f for f in fields(cls)}
        values = {k: v for k, v in doc.items() if k in known}  # fields of other versions are ignored
        if values.get("link", "softmax") not in LINKS:
            raise ValueError(f"info.link {values['link']!r} is not one of {', '.join(LINKS)}")
        if not isinstance(values.get("config", {}), dict):
            raise ValueError("info.config is not a mapping")
        for name in ("n_train", "n_valid", "n_test", "n_unlabelled", "epochs_run", "best_epoch"):
            if name in values and (isinstance(values[name], bool) or not isinstance(values[name], int)):
                raise ValueError(f"info.{name} is not a whole number")
        return cls(**values)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


DOMAIN_LEVEL = 0.001
"""The tail of the training rows left outside each input's domain bounds (0.1 % at each end)..."""
DOMAIN_ROWS = 20
"""...but at least this many rows beyond each bound, so a bound is never set by a handful of rows (a training
set of n rows uses the level max(0.001, 20 / n))."""


def domain_level(n: int) -> float:
    """The tail level of an input with ``n`` training values."""
    return min(0.25, max(DOMAIN_LEVEL, DOMAIN_ROWS / max(int(n), 1)))


@dataclass(frozen=True)
class TrainingDomain:
    """Where a model's training rows lay: per input, the range holding all but a small tail of its values
    (``level`` at each end), and the training class fractions (the priors the probabilities assume)."""

    bounds: dict[str, tuple[float, float]]
    """Model input -> (low, high) bound of its training values."""
    level: dict[str, float]
    """Model input -> the tail level the bounds were taken at (``domain_level``)."""
    priors: tuple[float, ...]
    """Class fractions of the labelled training rows, in ``schema.CLASSES`` order."""
    rows: int = 0
    """Labelled training rows."""

    def mask(self, df) -> np.ndarray:
        """uint16 per row of ``df`` (a frame, or a pyarrow Table/RecordBatch): bit k set when input
        ``schema.INPUT_BITS[k]`` is measured and outside its bounds."""
        out = np.zeros(len(df), np.uint16)
        have = set(schema.column_names(df))
        for c, (lo, hi) in self.bounds.items():
            v = schema.float64_values(df[c]) if c in have else np.full(len(df), np.nan)
            with np.errstate(invalid="ignore"):
                outside = (v < lo) | (v > hi)
            out |= outside.astype(np.uint16) << np.uint16(schema.INPUT_BITS.index(c))
        return out

    def to_json(self) -> dict:
        return {"bounds": {c: [float(lo), float(hi)] for c, (lo, hi) in self.bounds.items()},
                "level": {c: float(v) for c, v in self.level.items()}, "priors": [float(p) for p in self.priors],
                "rows": int(self.rows)}

    @classmethod
    def from_json(cls, doc, inputs) -> TrainingDomain:
        """The domain of a model file whose inputs are ``inputs``; ValueError naming what is wrong."""
        if not isinstance(doc, dict):
            raise ValueError("domain is not a mapping")
        bounds = {str(c): (float(b[0]), float(b[1])) for c, b in dict(doc["bounds"]).items()}
        if sorted(bounds) != sorted(inputs):
            raise ValueError(f"domain bounds are for {', '.join(sorted(bounds))}, not the model's inputs")
        if not all(np.isfinite(b).all() and b[0] <= b[1] for b in bounds.values()):
            raise ValueError("a domain bound is not finite or low > high")
        priors = tuple(float(p) for p in doc["priors"])
        if len(priors) != len(schema.CLASSES) or not all(0 <= p <= 1 for p in priors) or abs(sum(priors) - 1) > 1e-6:
            raise ValueError("domain priors are not class fractions that sum to 1")
        return cls(bounds, {str(c): float(v) for c, v in dict(doc.get("level", {})).items()}, priors,
                   int(doc.get("rows", 0)))


class Scores(NamedTuple):
    """What scoring a frame gives, per row."""

    proba: np.ndarray
    """(rows, classes) float64 probabilities (logits with ``logits=True``)."""
    imputed: np.ndarray
    """uint16: bit k set when input ``schema.INPUT_BITS[k]`` was missing and imputed with the training median."""
    out_of_domain: np.ndarray
    """uint16: bit k set when input ``schema.INPUT_BITS[k]`` lies outside the training domain of the path that
    scored the row."""
    photometric: np.ndarray
    """bool: the row was scored by a photometric model (a spectroscopic model's companion, or a photometric
    model itself), not from its redshift."""


PATHS = ("spectroscopic", "photometric")
"""The scoring paths, the values of the predictions' ``scored_by`` column (index: ``Scores.photometric``)."""


@dataclass
class SoftmaxModel:
    """Multinomial logistic regression with the scikit-learn conventions ``classes_``, ``predict_proba``."""

    spec: FeatureSpec
    coef: np.ndarray
    intercept: np.ndarray
    classes_: tuple[str, ...] = schema.CLASSES
    info: ModelInfo = field(default_factory=ModelInfo)
    """How it was trained; ``info.link`` is how it scores."""
    domain: TrainingDomain | None = None
    """Where its training rows lay (None: not recorded, e.g. a model built by hand; nothing is flagged)."""
    companion: SoftmaxModel | None = None
    """A spectroscopic model's photometric companion: scores the rows without a usable redshift."""
    _kernel: tuple | None = field(default=None, init=False, repr=False, compare=False)
    """((spec, coef, intercept), link, KernelParams): the kernel arrays and what they were built from."""

    @property
    def inputs(self) -> tuple[str, ...]:
        """Every catalogue column the model reads (its own and its companion's)."""
        own = raw_columns(self.spec.feature_set)
        more = self.companion.inputs if self.companion is not None else ()
        return tuple(dict.fromkeys([*own, *more]))

    @property
    def routes(self) -> bool:
        """True for a spectroscopic model with a companion: rows without a usable redshift go to the companion."""
        return self.spec.feature_set == "spectroscopic" and self.companion is not None

    @property
    def required(self) -> tuple[str, ...]:
        """The columns a catalogue must have to be scored (a routing model scores a catalogue without redshift
        with its companion alone)."""
        return tuple(c for c in self.inputs if not (self.routes and c == schema.REDSHIFT))

    @property
    def optional(self) -> tuple[str, ...]:
        """Inputs read where a catalogue has them (a routing model's redshift)."""
        return tuple(c for c in self.inputs if c not in self.required)

    def columns_for(self, columns) -> tuple[str, ...]:
        """The inputs to read from a catalogue with ``columns``: the required ones, and the redshift when there."""
        return tuple(c for c in self.inputs if c in self.required or c in columns)

    def score(self, df, logits: bool = False) -> Scores:
        """Probabilities (or logits), the imputed and out-of-domain masks, and the path of every row, in one
        compiled pass per path (:mod:`astrodask.features.compiled`). ``df``: a frame, or for a model that does not
        route (:attr:`routes`) also a pyarrow Table/RecordBatch."""
        from .features import compiled

        n = len(df)
        spectroscopic = self.spec.feature_set == "spectroscopic"
        if not spectroscopic or self.companion is None:
            p, imp = compiled.score(self.kernel_params(), df, logits=logits)
            ood = self.domain.mask(df) if self.domain is not None else np.zeros(n, np.uint16)
            return Scores(p, imp, ood, np.full(n, not spectroscopic))
        zw = df[schema.ZWARNING] if schema.ZWARNING in df.columns else None
        z = df[schema.REDSHIFT].to_numpy(np.float64, na_value=np.nan) if schema.REDSHIFT in df.columns else \
            np.full(n, np.nan)
        phot = ~schema.usable_redshift(z, zw)
        p = np.empty((n, len(self.classes_)))
        imp = np.zeros(n, np.uint16)
        ood = np.zeros(n, np.uint16)
        for rows, scorer in ((~phot, None), (phot, self.companion)):
            if not rows.any():
                continue
            part = df[rows] if not rows.all() else df
            if scorer is None:
                p[rows], imp[rows] = compiled.score(self.kernel_params(), part, logits=logits)
                if self.domain is not None:
                    ood[rows] = self.domain.mask(part)
            else:
                s = scorer.score(part, logits=logits)
                p[rows], imp[rows], ood[rows] = s.proba, s.imputed, s.out_of_domain
        return Scores(p, imp, ood, phot)

    def path_priors(self) -> tuple[np.ndarray, np.ndarray]:
        """The training class fractions of the spectroscopic and of the photometric path."""
        return self.priors_of(np.array([False])).ravel(), self.priors_of(np.array([True])).ravel()

    def priors_of(self, photometric: np.ndarray) -> np.ndarray:
        """(rows, classes): the training class fractions of the path that scored each row."""
        own = np.asarray(self.domain.priors if self.domain is not None else _even(self.classes_))
        other = own if self.companion is None or self.companion.domain is None else \
            np.asarray(self.companion.domain.priors)
        return np.where(np.asarray(photometric)[:, None] & (self.spec.feature_set == "spectroscopic"), other, own)

    def decision_function(self, df: pd.DataFrame) -> np.ndarray:
        """Class scores before the link (rows x classes), of the path that scores each row."""
        return self.score(df, logits=True).proba

    def predict_proba(self, df: pd.DataFrame) -> np.ndarray:
        """Class probabilities (rows x classes), of the path that scores each row."""
        return self.score(df).proba

    def kernel_params(self) -> KernelParams:
        """The model as the compiled kernel's arrays, built on first use and kept until ``spec``, ``coef``,
        ``intercept`` or the link is replaced (not noticed: changing the arrays in place)."""
        from .features.compiled import kernel_params

        link = self.info.link
        key = (self.spec, self.coef, self.intercept)
        cached = self._kernel
        if cached is None or cached[1] != link or any(a is not b for a, b in zip(cached[0], key)):
            cached = (key, link, kernel_params(self.spec, self.coef, self.intercept, link))
            self._kernel = cached
        return cached[2]

    def __getstate__(self):  # the kernel arrays are not pickled: a worker builds its own from the weights
        return {k: v for k, v in self.__dict__.items() if k != "_kernel"}

    def reference_decision_function(self, df: pd.DataFrame) -> np.ndarray:
        """The logits of this model (no routing) by the NumPy implementation (``FeatureSpec.linear``): the
        reference the kernel is tested against."""
        return self.spec.linear(df, self.coef, self.intercept)

    def reference_predict_proba(self, df: pd.DataFrame) -> np.ndarray:
        """The probabilities of this model (no routing) by the NumPy implementation: the kernel's reference."""
        return self.proba_from_logits(self.reference_decision_function(df))

    def proba_from_logits(self, logits: np.ndarray) -> np.ndarray:
        if self.info.link == "ovr":  # one-vs-rest SGD: normalised sigmoids, as scikit-learn does
            from scipy.special import expit

            p = expit(logits)
            return p / np.maximum(p.sum(axis=1, keepdims=True), 1e-300)
        return softmax(logits)

    def predict(self, df: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.classes_, dtype=object)[self.predict_proba(df).argmax(axis=1)]

    # ------------------------------------------------------------------------------------------ files

    def _doc(self) -> dict:
        return {"features": self.spec.to_dict(), "info": self.info.to_json(),
                "domain": None if self.domain is None else self.domain.to_json()}

    def save(self, directory) -> None:
        import io

        d = Location.of(directory)
        d.mkdir()
        arrays = {"coef": self.coef.astype(np.float64), "intercept": self.intercept.astype(np.float64)}
        if self.companion is not None:
            arrays |= {"companion_coef": self.companion.coef.astype(np.float64),
                       "companion_intercept": self.companion.intercept.astype(np.float64)}
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        weights = buf.getvalue()
        (d / WEIGHTS).write_bytes(weights)
        doc = {"format": FORMAT, "format_version": FORMAT_VERSION, "classes": list(self.classes_), **self._doc(),
               "companion": None if self.companion is None else self.companion._doc(),
               "weights_digest": weights_digest(weights), "versions": _versions()}
        (d / MODEL_JSON).write_text(json.dumps(doc, indent=1, default=_np_default))

    @classmethod
    def load(cls, directory) -> SoftmaxModel:
        d = Location.of(directory)
        where = f"model {d}"
        if d.is_local and not d.is_dir():
            raise AstrodaskError(f"{where}: no such model directory; train one with `astrodask train`")
        require_not_incomplete(d, "model")  # a training still running or killed (object stores write in place)
        try:
            doc = json.loads((d / MODEL_JSON).read_bytes().decode("utf-8"))
        except FileNotFoundError:
            raise AstrodaskError(f"{where}: no {MODEL_JSON}; train a model with `astrodask train`") from None
        except (UnicodeDecodeError, ValueError):
            raise AstrodaskError(f"{where}: {MODEL_JSON} is not JSON (not a model file); retrain the model") from None
        except RecursionError:
            raise AstrodaskError(f"{where}: {MODEL_JSON} is nested too deeply to be a model file; retrain the model") \
                from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise AstrodaskError(f"{where}: {MODEL_JSON} is not an astrodask model; retrain the model")
        if doc.get("format_version") != FORMAT_VERSION:
            raise AstrodaskError(
                f"{where}: model format version {doc.get('format_version')!r}, this astrodask reads version "
                f"{FORMAT_VERSION}; retrain the model with this version"
            )
        missing = [k for k in ("classes", "features", "weights_digest") if k not in doc]
        if missing:
            raise AstrodaskError(f"{where}: {MODEL_JSON} lacks field(s) {', '.join(missing)}; retrain the model")
        if not isinstance(doc["classes"], list) or tuple(doc["classes"]) != schema.CLASSES:
            raise AstrodaskError(f"{where}: classes {doc['classes']!r:.60} are not {', '.join(schema.CLASSES)}; "
                                 "retrain the model")
        try:
            weights = (d / WEIGHTS).read_bytes()
        except FileNotFoundError:
            raise AstrodaskError(f"{where}: no {WEIGHTS}; retrain the model") from None
        if weights_digest(weights) != doc["weights_digest"]:
            raise AstrodaskError(f"{where}: {WEIGHTS} is not the weights file {MODEL_JSON} was written with (its "
                                 "digest differs: replaced or damaged); copy the whole model directory again, or "
                                 "retrain the model")
        arrays = _read_weights(weights, where)
        classes = tuple(str(c) for c in doc["classes"])
        model = _model_of(doc, arrays.get("coef"), arrays.get("intercept"), classes, where, "")
        comp = doc.get("companion")
        if comp is not None:
            if model.spec.feature_set != "spectroscopic":
                raise AstrodaskError(f"{where}: only a spectroscopic model has a companion; retrain the model")
            model.companion = _model_of(comp, arrays.get("companion_coef"), arrays.get("companion_intercept"),
                                        classes, where, "companion ")
            if model.companion.spec.feature_set == "spectroscopic":
                raise AstrodaskError(f"{where}: the companion is not a photometric model; retrain the model")
        return model


def weights_digest(data: bytes) -> str:
    """The content digest of a weights file (BLAKE2b, 128 bits, hex)."""
    return "blake2b:" + hashlib.blake2b(data, digest_size=16).hexdigest()


def _read_weights(data: bytes, where: str) -> dict:
    import io

    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as w:
            return {k: np.asarray(w[k], np.float64) for k in w.files}
    except (ValueError, KeyError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise AstrodaskError(f"{where}: {WEIGHTS} is not a numeric weights file ({type(exc).__name__}; pickles are "
                             "refused); retrain the model") from None


def _model_of(doc, coef, intercept, classes, where: str, which: str) -> SoftmaxModel:
    """One model (the main one, or the companion) from its part of model.json and its weights, validated."""
    if not isinstance(doc, dict) or "features" not in doc:
        raise AstrodaskError(f"{where}: the {which}model lacks its features; retrain the model")
    try:
        spec = FeatureSpec.from_dict(doc["features"])
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, RecursionError) as exc:
        what = f"missing field {exc}" if isinstance(exc, KeyError) else f"{exc!s:.80}"
        raise AstrodaskError(f"{where}: bad {which}feature definition ({what}); retrain the model") from None
    if not isinstance(doc.get("info", {}), dict):
        raise AstrodaskError(f"{where}: field {which}info is not a mapping; retrain the model")
    try:
        info = ModelInfo.from_json(doc.get("info", {}))
        domain = None if doc.get("domain") is None else TrainingDomain.from_json(doc["domain"],
                                                                                  raw_columns(spec.feature_set))
    except (TypeError, ValueError, KeyError, IndexError) as exc:
        raise AstrodaskError(f"{where}: {which}{exc}; retrain the model") from None
    if coef is None or intercept is None:
        raise AstrodaskError(f"{where}: {WEIGHTS} lacks the {which}weights; retrain the model")
    if coef.shape != (len(classes), spec.n_features) or intercept.shape != (len(classes),):
        raise AstrodaskError(f"{where}: {which}weights have shape {coef.shape}, expected "
                             f"{(len(classes), spec.n_features)}; retrain the model")
    if not (np.isfinite(coef).all() and np.isfinite(intercept).all()):
        raise AstrodaskError(f"{where}: {which}weights hold NaN or infinity; retrain the model")
    return SoftmaxModel(spec, coef, intercept, classes, info, domain)


def _even(classes) -> tuple[float, ...]:
    return tuple(1.0 / len(classes) for _ in classes)


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    import dask

    try:  # from the installed metadata: importing scikit-learn takes ~1.5 s
        sklearn_version = version("scikit-learn")
    except PackageNotFoundError:
        sklearn_version = None
    return {"astrodask": __version__, "dask": dask.__version__, "numpy": np.__version__,
            "scikit-learn": sklearn_version}


def _np_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o).__name__)
