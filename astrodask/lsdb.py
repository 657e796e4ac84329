"""Classify an LSDB catalogue (a lazy Dask frame over a HATS catalogue) where it lives.

:func:`classify` appends the prediction columns to every partition of the catalogue and returns an LSDB
``Catalog`` again: still lazy, still HEALPix-partitioned, so cone searches, crossmatches and ``write_catalog`` work
on the result. The catalogue's columns are matched to the model's inputs by the same rules as ``astrodask
convert`` (``objID``, ``modelMag_u``, ``ra``...: ``schema.resolve_columns``), and its values are checked as the
estimator checks a DataFrame (sentinels, impossible values: a clear error; missing values imputed and flagged in
the ``imputed`` column).

``SDSSClassifier.predict_proba`` and friends also accept an LSDB catalogue (as a lazy Dask array, like any Dask
frame, with the catalogue's own column names resolved the same way).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import schema
from .errors import AstrodaskError
from .features import raw_columns
from .learn.estimator import SDSSClassifier
from .learn.inputs import is_catalog


def input_columns(columns, feature_set: str) -> dict[str, str]:
    """Catalogue column -> model input (canonical name) for the inputs ``feature_set`` reads; refuses, naming
    them, inputs the catalogue does not have."""
    cmap = schema.resolve_columns(list(columns))
    need = set(raw_columns(feature_set)) | {schema.ID}
    found = {src: canon for src, canon in cmap.pairs if canon in need}
    missing = [c for c in raw_columns(feature_set) if c not in found.values()]
    if missing:
        shown = ", ".join(list(columns)[:12]) + (" ..." if len(columns) > 12 else "")
        raise AstrodaskError(f"the catalogue has no column for {', '.join(missing)} (found: {shown}); the model "
                             f"({feature_set}) needs {', '.join(raw_columns(feature_set))}")
    return found


def _classify_partition(df: pd.DataFrame, model, mapping: dict, sentinels: str, missing: str) -> pd.DataFrame:
    from .features import imputed_mask
    from .learn.inputs import checked_frame

    fs = model.spec.feature_set
    inputs = df[list(mapping)].rename(columns=mapping)
    frame = checked_frame(inputs, fs, sentinels, missing, "a partition of the catalogue")
    proba = model.predict_proba(frame) if len(frame) else np.zeros((0, len(model.classes_)))
    out = {schema.PRED: pd.Series(np.asarray(model.classes_, dtype=object)[proba.argmax(axis=1)]
                                        if len(frame) else [], index=df.index, dtype="string")}
    for k, c in enumerate(model.classes_):
        out[schema.PROB_PREFIX + c] = pd.Series(proba[:, k].astype(np.float32), index=df.index)
    out[schema.IMPUTED] = pd.Series(imputed_mask(frame, fs), index=df.index, dtype=np.uint16)
    return df.assign(**out)


def classify(catalog, model, sentinels: str = "error", missing: str = "impute"):
    """``catalog`` (an LSDB Catalog) with the columns ``predicted_class``, ``prob_GALAXY``, ``prob_QSO``,
    ``prob_STAR`` and ``imputed`` appended, lazily (nothing is computed until the result is).

    ``model`` is a fitted ``astrodask.SDSSClassifier`` or the path/URL of a model directory (``astrodask train``).
    ``sentinels`` / ``missing`` as ``SDSSClassifier``'s parameters: ``"error"`` refuses SDSS no-measurement values
    (-9999...), ``"missing"`` imputes them; ``missing="impute"`` imputes NaN (flagged in ``imputed``).
    """
    if not is_catalog(catalog):
        raise AstrodaskError(f"classify takes an LSDB catalogue (lsdb.open_catalog(...)), not a "
                             f"{type(catalog).__name__}")
    est = model if isinstance(model, SDSSClassifier) else SDSSClassifier.load(model)
    soft = est.model_
    mapping = input_columns(catalog.columns, soft.spec.feature_set)
    for name in schema.PREDICTION_COLUMNS:
        if name in catalog.columns:
            raise AstrodaskError(f"the catalogue already has a column {name}; drop or rename it before classifying")
    meta = catalog.to_dask_dataframe()._meta
    meta = _classify_partition(meta.iloc[:0], soft, mapping, "missing", "impute")
    return catalog.map_partitions(_classify_partition, soft, mapping, sentinels, missing, meta=meta)
