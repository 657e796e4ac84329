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
from ..features import (
    QUANTILE_LEVELS,
    RECIPES,
    TAIL_LEVELS,
    FeatureSpec,
    merge_quantiles,
    raw_columns,
    spec_from_quantiles,
)
from ..model import TrainingDomain, domain_level
from ..storage import Location, read_json, write_json_atomic
from . import blocks
from .blocks import Moments, Summary

K = len(schema.CLASSES)
FEATURES_JSON = "features.json"
"""The fitted (scaled) feature spec in the model's staging directory, reused by ``--resume``."""


@dataclass(frozen=True)
class Counts:
    """Labelled rows by split and class, and the rows left out: unlabelled, and labelled but unusable (a
    spectroscopic model's rows without a usable redshift)."""

    by_split: np.ndarray
    """(split, class): rows TRAIN, VALID, TEST (``dataset`` constants)."""
    unlabelled: int = 0
    unusable: int = 0

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
        return {"by_split": self.by_split.tolist(), "unlabelled": self.unlabelled, "unusable": self.unusable}

    @classmethod
    def from_json(cls, d: dict) -> Counts:
        return cls(np.asarray(d["by_split"], np.int64), int(d.get("unlabelled", 0)), int(d.get("unusable", 0)))


@dataclass(frozen=True)
class FittedFeatures:
    """What pass 1 gives: the (unscaled) feature spec, the counts and the training domain."""

    spec: FeatureSpec
    counts: Counts
    domain: TrainingDomain


def features_from_summaries(summaries: list[Summary], feature_set: str, where: str) -> FittedFeatures:
    """The unscaled FeatureSpec, the counts and the training domain, from every partition's summary."""
    recipe = RECIPES[feature_set]
    counts = Counts(sum(s.counts for s in summaries), sum(s.unlabelled for s in summaries),
                    sum(s.unusable for s in summaries))
    if counts.train.sum() == 0:
        why = f" ({counts.unlabelled:,} rows have no class)" if counts.unlabelled else ""
        if counts.unusable:
            why += f" ({counts.unusable:,} labelled rows have no usable redshift)"
        raise AstrodaskError(f"{where}: no labelled training rows{why}; train on a catalogue with classes")
    n = sum(s.n for s in summaries)
    mean = sum(s.sum for s in summaries) / np.maximum(n, 1)
    std = np.sqrt(np.maximum(sum(s.sumsq for s in summaries) / np.maximum(n, 1) - mean**2, 0.0))
    raws = [s.raw for s in summaries]
    raw_q = merge_quantiles(raws, QUANTILE_LEVELS, TAIL_LEVELS)
    if recipe.knots_by == "class":  # each class's distribution weighs the same, whatever its share of the rows
        per_class = [(merge_quantiles([s.base_by_class[k] for s in summaries], QUANTILE_LEVELS),
                      sum(s.base_by_class[k][1] for s in summaries)) for k in range(K)]
        base_q = merge_quantiles(per_class, QUANTILE_LEVELS, equal=True)
    else:
        base_q = merge_quantiles([s.base for s in summaries], QUANTILE_LEVELS)
    raw = raw_columns(feature_set)
    if np.isnan(raw_q).any():
        empty = [c for k, c in enumerate(raw) if np.isnan(raw_q[:, k]).all()]
        raise AstrodaskError(
            f"{where}: column(s) {', '.join(empty)} have no values in the labelled training rows; "
            "use the photometric features if the catalogue has no redshift"
        )
    values = sum(r[1] for r in raws)
    bounds, levels = {}, {}
    for k, c in enumerate(raw):
        levels[c] = domain_level(values[k])
        lo, hi = merge_quantiles(raws, np.array([levels[c], 1.0 - levels[c]]), TAIL_LEVELS)[:, k]
        bounds[c] = (float(lo), float(hi))
    train = counts.train.astype(np.float64)
    domain = TrainingDomain(bounds, levels, tuple(train / train.sum()), int(train.sum()))
    return FittedFeatures(spec_from_quantiles(feature_set, recipe, raw_q, base_q, mean, std), counts, domain)


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


def fit_features(backend, items, feature_set: str, rule: SplitRule, where: str) -> FittedFeatures:
    """Pass 1 on the workers: the unscaled spec, the counts and the training domain."""
    recipe = RECIPES[feature_set]
    handles = backend.map(blocks.summarise, items, feature_set=feature_set, base_names=recipe.base, rule=rule,
                          by_class=recipe.knots_by == "class")
    return features_from_summaries(backend.gather(handles, "features: quantiles"), feature_set, where)


def fit_scaler(backend, items, spec: FeatureSpec, weights: np.ndarray, rule: SplitRule,
               warm: float = 0.0) -> FeatureSpec:
    """The scaler's statistics summed on the workers over ``items`` (compact blocks, or files and rows made into
    blocks on the fly, with the warm-start subsample ``warm``); returns the scaled spec."""
    handles = backend.map(blocks.moments, items, spec=spec, weights=weights, rule=rule, warm=warm)
    return scaler_from_moments(backend.gather(handles, "features: scaling"), spec)


def save_features(directory: Location, fingerprint: str, fitted: FittedFeatures) -> None:
    write_json_atomic(directory / FEATURES_JSON, {"fingerprint": fingerprint, "spec": fitted.spec.to_dict(),
                                                  "counts": fitted.counts.to_json(),
                                                  "domain": fitted.domain.to_json()})


def load_features(directory: Location, fingerprint: str) -> FittedFeatures | None:
    """The fitted features saved by an interrupted run with the same fingerprint, else None."""
    try:
        doc = read_json(directory / FEATURES_JSON)
    except (FileNotFoundError, AstrodaskError):
        return None
    if not isinstance(doc, dict) or doc.get("fingerprint") != fingerprint:
        return None
    try:
        spec = FeatureSpec.from_dict(doc["spec"])
        return FittedFeatures(spec, Counts.from_json(doc["counts"]),
                              TrainingDomain.from_json(doc["domain"], raw_columns(spec.feature_set)))
    except (KeyError, TypeError, ValueError, IndexError):
        return None  # written by another version, or damaged: fit again
