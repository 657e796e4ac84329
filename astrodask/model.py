"""The model as data: a multinomial logistic regression over a FeatureSpec, saved as JSON + npz.

``MODEL_DIR/model.json`` holds the format version, class names, feature definitions with their fitted
statistics, training settings and library versions; ``MODEL_DIR/weights.npz`` holds ``coef`` (classes x
features) and ``intercept``, read with ``allow_pickle=False``. Loading parses JSON and numeric arrays only,
so a model file can never run code.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from . import __version__, schema
from .errors import AstrodaskError
from .features import FeatureSpec
from .storage import Location, require_not_incomplete

if TYPE_CHECKING:
    from .features.compiled import KernelParams

FORMAT = "astrodask-softmax"
FORMAT_VERSION = 1
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


@dataclass
class SoftmaxModel:
    """Multinomial logistic regression with the scikit-learn conventions ``classes_``, ``predict_proba``."""

    spec: FeatureSpec
    coef: np.ndarray
    intercept: np.ndarray
    classes_: tuple[str, ...] = schema.CLASSES
    info: ModelInfo = field(default_factory=ModelInfo)
    """How it was trained; ``info.link`` is how it scores."""
    _kernel: tuple | None = field(default=None, init=False, repr=False, compare=False)
    """((spec, coef, intercept), link, KernelParams): the kernel arrays and what they were built from."""

    def decision_function(self, df: pd.DataFrame) -> np.ndarray:
        """Class scores before the link (rows x classes), by the compiled kernel
        (:mod:`astrodask.features.compiled`)."""
        from .features import compiled

        return compiled.score(self.kernel_params(), df, logits=True)[0]

    def predict_proba(self, df: pd.DataFrame) -> np.ndarray:
        """Class probabilities (rows x classes), by the compiled kernel (:mod:`astrodask.features.compiled`)."""
        return self.predict_proba_and_mask(df)[0]

    def predict_proba_and_mask(self, df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(class probabilities, the imputed bit mask of each row as ``features.imputed_mask`` gives it) in one
        compiled pass over the rows."""
        from .features import compiled

        return compiled.score(self.kernel_params(), df)

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
        """:meth:`decision_function` by the NumPy implementation (``FeatureSpec.linear``): the reference."""
        return self.spec.linear(df, self.coef, self.intercept)

    def reference_predict_proba(self, df: pd.DataFrame) -> np.ndarray:
        """:meth:`predict_proba` by the NumPy implementation: the reference the kernel is tested against."""
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

    def save(self, directory) -> None:
        import io

        d = Location.of(directory)
        d.mkdir()
        buf = io.BytesIO()
        np.savez(buf, coef=self.coef.astype(np.float64), intercept=self.intercept.astype(np.float64))
        (d / WEIGHTS).write_bytes(buf.getvalue())
        doc = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "classes": list(self.classes_),
            "features": self.spec.to_dict(),
            "info": self.info.to_json(),
            "versions": _versions(),
        }
        (d / MODEL_JSON).write_text(json.dumps(doc, indent=1, default=_np_default))

    @classmethod
    def load(cls, directory) -> SoftmaxModel:
        import io

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
        missing = [k for k in ("classes", "features") if k not in doc]
        if missing:
            raise AstrodaskError(f"{where}: {MODEL_JSON} lacks field(s) {', '.join(missing)}; retrain the model")
        try:
            spec = FeatureSpec.from_dict(doc["features"])
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, RecursionError) as exc:
            what = f"missing field {exc}" if isinstance(exc, KeyError) else f"{exc!s:.80}"
            raise AstrodaskError(f"{where}: bad feature definition ({what}); retrain the model") from None
        try:
            with np.load(io.BytesIO((d / WEIGHTS).read_bytes()), allow_pickle=False) as w:
                coef, intercept = np.asarray(w["coef"], np.float64), np.asarray(w["intercept"], np.float64)
        except FileNotFoundError:
            raise AstrodaskError(f"{where}: no {WEIGHTS}; retrain the model") from None
        except (ValueError, KeyError, OSError, zipfile.BadZipFile, EOFError) as exc:
            raise AstrodaskError(
                f"{where}: {WEIGHTS} is not a numeric weights file ({type(exc).__name__}; pickles are refused); "
                "retrain the model"
            ) from None
        if not isinstance(doc["classes"], list) or tuple(doc["classes"]) != schema.CLASSES:
            raise AstrodaskError(f"{where}: classes {doc['classes']!r:.60} are not {', '.join(schema.CLASSES)}; "
                                 "retrain the model")
        if not isinstance(doc.get("info", {}), dict):
            raise AstrodaskError(f"{where}: field info is not a mapping; retrain the model")
        try:
            info = ModelInfo.from_json(doc.get("info", {}))
        except (TypeError, ValueError) as exc:
            raise AstrodaskError(f"{where}: {exc}; retrain the model") from None
        classes = tuple(str(c) for c in doc["classes"])
        if coef.shape != (len(classes), spec.n_features) or intercept.shape != (len(classes),):
            raise AstrodaskError(
                f"{where}: weights have shape {coef.shape}, expected {(len(classes), spec.n_features)}; retrain"
            )
        if not (np.isfinite(coef).all() and np.isfinite(intercept).all()):
            raise AstrodaskError(f"{where}: weights hold NaN or infinity; retrain the model")
        return cls(spec, coef, intercept, classes, info)


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
