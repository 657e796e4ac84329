"""Fitting the feature transform out of core: knots, medians and scaler from statistics the workers send.

Pass 1 (:func:`fit_features`): each partition sends a :class:`blocks.Summary` (fixed-size quantile summaries of
its labelled training rows, moments, class counts); the client merges them into the unscaled FeatureSpec.
The scaler (:func:`fit_scaler`) is then fitted from the expanded features' moments, summed on the workers.
The client never sees a row.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .. import schema
from ..dataset import TEST, TRAIN, VALID, SplitRule
from ..errors import AstrodaskError
from ..features import QUANTILE_LEVELS, RECIPES, FeatureSpec, merge_quantiles, raw_columns, spec_from_quantiles
from ..storage import Location, read_json, write_json_atomic
from . import blocks
from .blocks import Moments, Summary

K = len(schema.CLASSES)
FEATURES_JSON = "features.json"
"""The fitted (scaled) feature spec in the model's staging directory, reused by ``--resume``."""


@dataclass(frozen=True)
class Counts:
    """Labelled rows by split and class, and the unlabelled rows left out."""

    by_split: np.ndarray
    """(split, class): rows TRAIN, VALID, TEST (``dataset`` constants)."""
    unlabelled: int = 0

    @property
    def train(self) -> np.ndarray:
        return self.by_split[TRAIN]

    @property
    def valid(self) -> np.ndarray:
        return self.by_split[VALID]

    @property
    def test(self) -> np.ndarray:
        return self.by_split[TEST]

    def to_json(self) -> dict:
        return {"by_split": self.by_split.tolist(), "unlabelled": self.unlabelled}

    @classmethod
    def from_json(cls, d: dict) -> Counts:
        return cls(np.asarray(d["by_split"], np.int64), int(d.get("unlabelled", 0)))


def features_from_summaries(summaries: list[Summary], feature_set: str, where: str) -> tuple[FeatureSpec, Counts]:
    """The unscaled FeatureSpec and the counts, from every partition's summary."""
    recipe = RECIPES[feature_set]
    counts = Counts(sum(s.counts for s in summaries), sum(s.unlabelled for s in summaries))
    if counts.train.sum() == 0:
        why = f" ({counts.unlabelled:,} rows have no class)" if counts.unlabelled else ""
        raise AstrodaskError(f"{where}: no labelled training rows{why}; train on a catalogue with classes")
    n = sum(s.n for s in summaries)
    mean = sum(s.sum for s in summaries) / np.maximum(n, 1)
    std = np.sqrt(np.maximum(sum(s.sumsq for s in summaries) / np.maximum(n, 1) - mean**2, 0.0))
    raw_q = merge_quantiles([s.raw for s in summaries], QUANTILE_LEVELS)
    base_q = merge_quantiles([s.base for s in summaries], QUANTILE_LEVELS)
    if np.isnan(raw_q).any():
        empty = [c for k, c in enumerate(raw_columns(feature_set)) if np.isnan(raw_q[:, k]).all()]
        raise AstrodaskError(
            f"{where}: column(s) {', '.join(empty)} have no values in the labelled training rows; "
            "use the photometric features if the catalogue has no redshift"
        )
    return spec_from_quantiles(feature_set, recipe, raw_q, base_q, mean, std), counts


def scaler_from_moments(moments: list[Moments], spec: FeatureSpec) -> FeatureSpec:
    """``spec`` with the scaler (mean and deviation of every expanded feature) from summed moments."""
    n_rows = sum(m.n for m in moments)
    mu = sum(m.sum for m in moments) / max(n_rows, 1)
    sd = np.sqrt(np.maximum(sum(m.sumsq for m in moments) / max(n_rows, 1) - mu**2, 0.0))
    return replace(spec, mean=mu, scale=np.where(sd > 1e-12, sd, 1.0))


def class_weights(counts: Counts, class_weight: str | None) -> np.ndarray:
    """Weight of a row of each class: 1, or n / (classes * n_class) with ``balanced`` (0 for an absent class)."""
    if class_weight != "balanced":
        return np.ones(K)
    c = counts.train.astype(np.float64)
    return np.where(c > 0, c.sum() / (K * np.maximum(c, 1)), 0.0)


def fit_features(backend, items, feature_set: str, rule: SplitRule, where: str) -> tuple[FeatureSpec, Counts]:
    """Pass 1 on the workers: the unscaled spec and the counts."""
    recipe = RECIPES[feature_set]
    handles = backend.map(blocks.summarise, items, feature_set=feature_set, base_names=recipe.base, rule=rule)
    return features_from_summaries(backend.gather(handles, "features: quantiles"), feature_set, where)


def fit_scaler(backend, items, spec: FeatureSpec, weights: np.ndarray, rule: SplitRule) -> FeatureSpec:
    """The scaler's statistics summed on the workers over ``items`` (unscaled persisted blocks, or files and
    rows expanded on the fly); returns the scaled spec."""
    handles = backend.map(blocks.moments, items, spec=spec, weights=weights, rule=rule)
    return scaler_from_moments(backend.gather(handles, "features: scaling"), spec)


def save_features(directory: Location, fingerprint: str, spec: FeatureSpec, counts: Counts) -> None:
    write_json_atomic(directory / FEATURES_JSON, {"fingerprint": fingerprint, "spec": spec.to_dict(),
                                                  "counts": counts.to_json()})


def load_features(directory: Location, fingerprint: str) -> tuple[FeatureSpec, Counts] | None:
    """The fitted features saved by an interrupted run with the same fingerprint, else None."""
    try:
        doc = read_json(directory / FEATURES_JSON)
    except FileNotFoundError:
        return None
    if not isinstance(doc, dict) or doc.get("fingerprint") != fingerprint:
        return None
    try:
        return FeatureSpec.from_dict(doc["spec"]), Counts.from_json(doc["counts"])
    except (KeyError, TypeError, ValueError):
        return None  # written by another version: fit again
