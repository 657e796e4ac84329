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
from .learn.estimator import SDSSClassifier
from .learn.inputs import is_catalog


def input_columns(columns, need: tuple[str, ...], read: tuple[str, ...] = ()) -> dict[str, str]:
    """Catalogue column -> model input (canonical name) for the inputs ``need``, and those of ``read`` and
    ``zwarning`` the catalogue has; refuses, naming them, inputs of ``need`` the catalogue does not have."""
    cmap = schema.resolve_columns(list(columns))
    want = set(need) | set(read) | {schema.ID, schema.ZWARNING}
    found = {src: canon for src, canon in cmap.pairs if canon in want}
    missing = [c for c in need if c not in found.values()]
    if missing:
        shown = ", ".join(list(columns)[:12]) + (" ..." if len(columns) > 12 else "")
        raise AstrodaskError(f"the catalogue has no column for {', '.join(missing)} (found: {shown}); the model "
                             f"needs {', '.join(need)}")
    return found


def _classify_partition(df: pd.DataFrame, model, mapping: dict, sentinels: str, missing: str,
                        target=None) -> pd.DataFrame:
    from . import priors
    from .learn.inputs import checked_frame
    from .model import PATHS

    inputs = df[list(mapping)].rename(columns=mapping)
    frame = checked_frame(inputs, model.columns_for(inputs.columns), sentinels, missing,
                          "a partition of the catalogue")
    scored = model.score(frame)
    proba = scored.proba if target is None else priors.apply(scored.proba, model.priors_of(scored.photometric),
                                                             target)
    out = {schema.PRED: pd.Series(np.asarray(model.classes_, dtype=object)[proba.argmax(axis=1)],
                                  index=df.index, dtype="string")}
    for k, c in enumerate(model.classes_):
        out[schema.PROB_PREFIX + c] = pd.Series(proba[:, k].astype(np.float32), index=df.index)
    out[schema.IMPUTED] = pd.Series(scored.imputed, index=df.index, dtype=np.uint16)
    out[schema.SCORED_BY] = pd.Series(np.asarray(PATHS, dtype=object)[scored.photometric.astype(int)],
                                      index=df.index, dtype="string")
    out[schema.OUT_OF_DOMAIN] = pd.Series(scored.out_of_domain, index=df.index, dtype=np.uint16)
    return df.assign(**out)


def _prior_sums(df: pd.DataFrame, model, mapping: dict, sentinels: str, missing: str):
    from . import priors
    from .learn.inputs import checked_frame

    inputs = df[list(mapping)].rename(columns=mapping)
    frame = checked_frame(inputs, model.columns_for(inputs.columns), sentinels, missing,
                          "a partition of the catalogue")
    scored = model.score(frame)
    return priors.sums_of(scored.proba, scored.photometric)


def classify(catalog, model, sentinels: str = "error", missing: str = "impute", priors=None):
    """``catalog`` (an LSDB Catalog) with the prediction columns (``predicted_class``, ``prob_GALAXY``,
    ``prob_QSO``, ``prob_STAR``, ``imputed``, ``scored_by``, ``out_of_domain``) appended, lazily (nothing is
    computed until the result is).

    ``model`` is a fitted ``astrodask.SDSSClassifier`` or the path/URL of a model directory (``astrodask train``).
    ``sentinels`` / ``missing`` as ``SDSSClassifier``'s parameters: ``"error"`` refuses SDSS no-measurement values
    (-9999...), ``"missing"`` imputes them; ``missing="impute"`` imputes NaN (flagged in ``imputed``).
    ``priors``: None (the training mix), class fractions (``"GALAXY=0.55,QSO=0.15,STAR=0.30"`` or a mapping) or
    ``"estimate"`` (EM on the catalogue, one pass over it on the workers before the lazy result).
    """
    from . import priors as priors_mod

    if not is_catalog(catalog):
        raise AstrodaskError(f"classify takes an LSDB catalogue (lsdb.open_catalog(...)), not a "
                             f"{type(catalog).__name__}")
    est = model if isinstance(model, SDSSClassifier) else SDSSClassifier.load(model)
    soft = est.model_
    mapping = input_columns(catalog.columns, soft.required, soft.inputs)
    for name in schema.PREDICTION_COLUMNS:
        if name in catalog.columns:
            raise AstrodaskError(f"the catalogue already has a column {name}; drop or rename it before classifying")
    target = priors_mod.parse(priors)
    if target == priors_mod.ESTIMATE:
        from dask import delayed
        from distributed import get_client

        parts = [delayed(_prior_sums)(p, soft, mapping, sentinels, missing)
                 for p in catalog.to_dask_dataframe().to_delayed()]
        sums = sum(get_client().compute(parts, sync=True), priors_mod.PriorSums())
        target = priors_mod.estimate(sums, soft.path_priors()).priors
    meta = catalog.to_dask_dataframe()._meta
    meta = _classify_partition(meta.iloc[:0], soft, mapping, "missing", "impute")
    return catalog.map_partitions(_classify_partition, soft, mapping, sentinels, missing, target, meta=meta)
