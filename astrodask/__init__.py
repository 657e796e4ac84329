"""astrodask: classify SDSS objects as STAR, GALAXY or QSO at survey scale with Dask.

Public names (imported on first use, so ``import astrodask`` stays light):

* ``SDSSClassifier``: the scikit-learn / dask-ml estimator (pandas, Dask DataFrames, LSDB catalogues);
* ``classify``: an LSDB catalogue with the prediction columns appended (``astrodask.lsdb.classify``);
* ``ClusterConfig`` and ``connect``: the one way to get a Dask client (LocalCluster, address, batch queue);
* ``JobConfig`` and ``run``: the whole job (convert -> train -> predict -> evaluate) on a client;
* the stages' settings, each option declared once: ``ConvertConfig`` / ``ConvertOptions``, ``TrainConfig`` /
  ``TrainOptions``, ``PredictConfig`` / ``PredictOptions`` (the stages: ``astrodask.ingest.run``,
  ``astrodask.learn.stage.run``, ``astrodask.predict.run``, ``astrodask.evaluate.run``);
* ``Location``: a local path or fsspec URL with its storage options;
* ``AstrodaskError`` and ``ConfigError``: the one-line user errors.
"""

__version__ = "0.1.0"

_LAZY = {
    "SDSSClassifier": "astrodask.learn",
    "classify": "astrodask.lsdb",
    "ClusterConfig": "astrodask.cluster",
    "connect": "astrodask.cluster",
    "JobConfig": "astrodask.pipeline",
    "run": "astrodask.pipeline",
    "ConvertConfig": "astrodask.ingest",
    "ConvertOptions": "astrodask.ingest",
    "TrainConfig": "astrodask.learn",
    "TrainOptions": "astrodask.learn",
    "PredictConfig": "astrodask.predict",
    "PredictOptions": "astrodask.predict",
    "Location": "astrodask.storage",
    "AstrodaskError": "astrodask.errors",
    "ConfigError": "astrodask.errors",
}

__all__ = ["AstrodaskError", "ClusterConfig", "ConfigError", "ConvertConfig", "ConvertOptions", "JobConfig",
           "Location", "PredictConfig", "PredictOptions", "SDSSClassifier", "TrainConfig", "TrainOptions",
           "__version__", "classify", "connect", "run"]


def __getattr__(name: str):
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_LAZY])
