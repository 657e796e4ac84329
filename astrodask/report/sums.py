"""The report's mergeable statistics: fixed-size counts per block of rows, added on the workers.

:func:`figure_sums` turns one block's rows (their magnitudes, positions, predictions and masks) into a
:class:`ReportSums` whose shapes depend only on this module's bins, never on the rows, so any two add with ``+``
and a whole survey reduces to one object of ~1.2 MB. Every figure is drawn from these sums (and, where there are
labels, from the :class:`~astrodask.metrics.Metrics`); :class:`PartSums` carries both through one tree sum.

Bins (rule everywhere: x is in bin i when edges[i] <= x < edges[i + 1]):

* r magnitude: 0.5 mag from 12 to 25 (26 bins), plus r < 12, r >= 25 and r missing;
* redshift: z < 0.003 (stellar velocities, |cz| < 900 km/s), then 0.003 ... 7.5 in 21 bins of growing width,
  then z >= 7.5, then missing;
* colour-colour: u-g in [-1, 5), g-r in [-0.75, 3.25), r-i in [-0.75, 2.25), 0.05 mag cells;
* probability histograms: 20 bins of p;
* sky: an equal-area grid of 180 (right ascension, 2 deg) x 90 (sin declination, 1/45) cells, each
  4 pi / 16200 sr = 2.546 deg^2, drawn on matplotlib's Mollweide projection.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .. import schema
from ..metrics import EvalSums

INDEX = "index.html"
"""A report's page, in its directory beside the figures and the sums."""
CLASSES = schema.CLASSES
K = len(CLASSES)
NBITS = len(schema.INPUT_BITS)
"""Bits of the ``imputed`` / ``out_of_domain`` masks (bit k: input ``schema.INPUT_BITS[k]``)."""


@dataclass(frozen=True)
class Bins:
    """Bin edges of one axis: index 0 is x < edges[0], 1..len(edges)-1 the inner bins, len(edges) is
    x >= edges[-1], len(edges)+1 is missing (NaN)."""

    name: str
    edges: tuple
    unit: str

    @property
    def n(self) -> int:
        return len(self.edges) + 2

    def index(self, x) -> np.ndarray:
        x = np.asarray(x, np.float64)
        idx = np.searchsorted(np.asarray(self.edges), x, side="right")
        idx[np.isnan(x)] = len(self.edges) + 1
        return idx


R_BINS = Bins("r", tuple(np.round(np.arange(12.0, 25.0 + 1e-9, 0.5), 6)), "mag")
Z_BINS = Bins("redshift", (0.003, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 2.5,
                           3.0, 3.5, 4.0, 5.0, 7.5), "")
CC_STEP = 0.05
UG_EDGES = np.round(np.arange(-1.0, 5.0 + 1e-9, CC_STEP), 6)
GR_EDGES = np.round(np.arange(-0.75, 3.25 + 1e-9, CC_STEP), 6)
RI_EDGES = np.round(np.arange(-0.75, 2.25 + 1e-9, CC_STEP), 6)
DIAGRAMS = {"ug_gr": ("g-r", "u-g", GR_EDGES, UG_EDGES), "gr_ri": ("r-i", "g-r", RI_EDGES, GR_EDGES)}
"""Colour-colour diagrams: name -> (x colour, y colour, x edges, y edges); arrays are indexed [class, y, x]."""
P_BINS = 20
P_EDGES = np.linspace(0.0, 1.0, P_BINS + 1)

SKY_NRA, SKY_NDEC = 180, 90
SKY_RA_EDGES = np.linspace(0.0, 360.0, SKY_NRA + 1)
SKY_SINDEC_EDGES = np.linspace(-1.0, 1.0, SKY_NDEC + 1)
SKY_DEC_EDGES = np.degrees(np.arcsin(SKY_SINDEC_EDGES))
SKY_CELL_DEG2 = 4 * np.pi / (SKY_NRA * SKY_NDEC) * (180 / np.pi) ** 2
"""Equal-area cells (uniform in right ascension and in sin(declination)): 2.546 deg^2 each."""


def _count(indices: tuple, shape: tuple, keep=None) -> np.ndarray:
    """Counts (int64, ``shape``) of the rows' multi-indices (rows where ``keep`` is False left out)."""
    if keep is not None:
        indices = tuple(np.asarray(i)[keep] for i in indices)
    flat = np.ravel_multi_index(tuple(np.asarray(i, np.int64) for i in indices), shape)
    return np.bincount(flat, minlength=int(np.prod(shape))).reshape(shape).astype(np.int64)


def _cell(x, edges) -> np.ndarray:
    """Cell index of x in regular ``edges`` (-1: outside or NaN)."""
    x = np.asarray(x, np.float64)
    idx = np.searchsorted(edges, x, side="right") - 1
    idx[(idx >= len(edges) - 1) | np.isnan(x)] = -1
    return idx


def sky_cells(alpha, delta) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sin-dec row, right-ascension column, valid) of positions in degrees on the equal-area grid."""
    a = np.mod(np.asarray(alpha, np.float64), 360.0)
    d = np.asarray(delta, np.float64)
    valid = np.isfinite(a) & np.isfinite(d) & (np.abs(d) <= 90.0)
    s = np.sin(np.radians(np.where(valid, d, 0.0)))
    row = np.clip(np.searchsorted(SKY_SINDEC_EDGES, s, side="right") - 1, 0, SKY_NDEC - 1)
    col = np.clip(np.searchsorted(SKY_RA_EDGES, np.where(valid, a, 0.0), side="right") - 1, 0, SKY_NRA - 1)
    return row, col, valid


@dataclass(frozen=True, eq=False)
class ReportSums:
    """The counts of a set of rows (``+`` adds two sets). ``R`` / ``Z``: the r / redshift bins (with under-,
    overflow and missing), ``C``: classes in ``schema.CLASSES`` order; "labelled": rows with a true class only."""

    n_rows: int
    n_labelled: int
    conf_r: np.ndarray
    """(R, C true, C predicted) labelled rows per r bin."""
    conf_z: np.ndarray
    """(Z, C, C) labelled rows per redshift bin."""
    pred_r: np.ndarray
    """(R, C) every row: predicted class per r bin."""
    pred_z: np.ndarray
    """(Z, C) every row: predicted class per redshift bin."""
    path_r: np.ndarray
    """(R, 2) every row: rows per r bin scored by each path (``model.PATHS``)."""
    cc_true: dict
    """Diagram name -> (C, ny, nx) labelled rows by true class."""
    cc_pred: dict
    """Diagram name -> (C, ny, nx) every row by predicted class."""
    cc_outside: np.ndarray
    """(diagrams,) rows outside a diagram's range or without one of its colours."""
    prob_hist: np.ndarray
    """(C, P_BINS) every row: histogram of p(class)."""
    maxp_hist: np.ndarray
    """(C, P_BINS) the winning probability of the rows predicted as each class."""
    ood_r: np.ndarray
    """(R,) rows with any out-of-domain bit, per r bin."""
    ood_r_bits: np.ndarray
    """(R, NBITS) rows with out-of-domain bit b, per r bin."""
    imputed_r: np.ndarray
    """(R,) rows with any imputed input, per r bin."""
    imputed_bits: np.ndarray
    """(NBITS,) rows with imputed bit b."""
    sky: np.ndarray
    """(C, SKY_NDEC, SKY_NRA) rows with a position, by predicted class."""
    sky_ood: np.ndarray
    """(SKY_NDEC, SKY_NRA) rows with a position and any out-of-domain bit."""
    sky_missing: int
    """Rows without a valid position."""

    @property
    def labelled(self) -> bool:
        return self.n_labelled > 0

    def _arrays(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def __add__(self, other: ReportSums) -> ReportSums:
        kw = {}
        for name, a in self._arrays().items():
            b = getattr(other, name)
            kw[name] = {k: a[k] + b[k] for k in a} if isinstance(a, dict) else a + b
        return ReportSums(**kw)

    def to_npz(self) -> dict[str, np.ndarray]:
        """Flat name -> array (dict fields as ``cc_true.ug_gr``), for ``np.savez``."""
        out = {}
        for name, v in self._arrays().items():
            if isinstance(v, dict):
                out.update({f"{name}.{k}": a for k, a in v.items()})
            else:
                out[name] = np.asarray(v)
        return out

    @classmethod
    def from_npz(cls, arrays) -> ReportSums:
        """From ``to_npz``'s arrays; ValueError when they are not this layout's."""
        want = ReportSums.empty().to_npz()
        if sorted(arrays.keys()) != sorted(want) or any(np.shape(arrays[k]) != np.shape(v) for k, v in want.items()):
            raise ValueError("the saved report sums have another layout")
        kw = {}
        for f in dataclasses.fields(cls):
            if f.name in arrays:
                v = np.array(arrays[f.name])
                kw[f.name] = int(v) if v.ndim == 0 else v
            else:
                kw[f.name] = {k.split(".", 1)[1]: np.array(arrays[k]) for k in arrays if k.startswith(f.name + ".")}
        return cls(**kw)

    @classmethod
    def empty(cls) -> ReportSums:
        return figure_sums(np.zeros((0, K)), {})

    # ---- derived numbers

    def confusion(self) -> np.ndarray:
        return self.conf_r.sum(axis=0)

    def by_r(self) -> BinTable:
        return BinTable.of(R_BINS, self.conf_r, self.pred_r, self.ood_r, self.imputed_r)

    def by_z(self) -> BinTable:
        return BinTable.of(Z_BINS, self.conf_z, self.pred_z, None, None)

    def sky_density(self) -> np.ndarray:
        """Objects per square degree per sky cell."""
        return self.sky.sum(axis=0) / SKY_CELL_DEG2


def figure_sums(proba: np.ndarray, columns: dict, y=None, photometric=None, imputed=None,
                out_of_domain=None) -> ReportSums:
    """The counts of one block of rows: ``proba`` (n, C); ``columns`` canonical name -> values for whichever of
    u, g, r, i, redshift, alpha, delta the rows have (missing ones count in the "missing" bins); ``y`` true class
    index (-1: unlabelled) or None; ``photometric`` (bool) the path that scored each row; ``imputed`` and
    ``out_of_domain`` uint16 masks (None: not known)."""
    proba = np.asarray(proba, np.float64).reshape(-1, K)
    n = len(proba)

    def col(c):
        v = columns.get(c)
        return np.full(n, np.nan) if v is None else np.asarray(v, np.float64).reshape(n)

    y = np.full(n, -1, np.int64) if y is None else np.asarray(y, np.int64).reshape(n)
    pred = proba.argmax(axis=1) if n else np.zeros(0, np.int64)
    lab = y >= 0
    yl = np.where(lab, y, 0)
    r = col("r")
    rb, zb = R_BINS.index(r), Z_BINS.index(col(schema.REDSHIFT))
    path = np.zeros(n, np.int64) if photometric is None else np.asarray(photometric, bool).astype(np.int64)

    pb = np.minimum((proba * P_BINS).astype(np.int64), P_BINS - 1)
    prob_hist = np.stack([np.bincount(pb[:, k], minlength=P_BINS) for k in range(K)]).astype(np.int64)
    maxp_hist = _count((pred, pb[np.arange(n), pred]), (K, P_BINS))

    bands = {b: col(b) for b in "ugri"}
    cc_true, cc_pred, outside = {}, {}, []
    for name, (xc, yc, xe, ye) in DIAGRAMS.items():
        x = bands[xc[0]] - bands[xc[2]]
        yv = bands[yc[0]] - bands[yc[2]]
        ix, iy = _cell(x, xe), _cell(yv, ye)
        ok = (ix >= 0) & (iy >= 0)
        shape = (K, len(ye) - 1, len(xe) - 1)
        cc_pred[name] = _count((pred, iy, ix), shape, ok)
        cc_true[name] = _count((yl, iy, ix), shape, ok & lab)
        outside.append(int((~ok).sum()))

    ood = np.zeros(n, np.uint16) if out_of_domain is None else np.asarray(out_of_domain).astype(np.uint16)
    imp = np.zeros(n, np.uint16) if imputed is None else np.asarray(imputed).astype(np.uint16)
    bit = np.arange(NBITS, dtype=np.uint16)
    ood_bits = ((ood[:, None] >> bit[None, :]) & 1).astype(bool)
    ood_r_bits = np.stack([np.bincount(rb[ood_bits[:, b]], minlength=R_BINS.n) for b in range(NBITS)], axis=1)
    imputed_bits = ((imp[:, None] >> bit[None, :]) & 1).sum(axis=0).astype(np.int64)

    alpha, delta = columns.get("alpha"), columns.get("delta")
    if alpha is None or delta is None:
        row, cell, valid = np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, bool)
    else:
        row, cell, valid = sky_cells(alpha, delta)
    return ReportSums(
        n_rows=n, n_labelled=int(lab.sum()),
        conf_r=_count((rb, yl, pred), (R_BINS.n, K, K), lab),
        conf_z=_count((zb, yl, pred), (Z_BINS.n, K, K), lab),
        pred_r=_count((rb, pred), (R_BINS.n, K)),
        pred_z=_count((zb, pred), (Z_BINS.n, K)),
        path_r=_count((rb, path), (R_BINS.n, 2)),
        cc_true=cc_true, cc_pred=cc_pred, cc_outside=np.array(outside, np.int64),
        prob_hist=prob_hist, maxp_hist=maxp_hist,
        ood_r=np.bincount(rb[ood != 0], minlength=R_BINS.n).astype(np.int64),
        ood_r_bits=ood_r_bits.astype(np.int64),
        imputed_r=np.bincount(rb[imp != 0], minlength=R_BINS.n).astype(np.int64),
        imputed_bits=imputed_bits,
        sky=_count((pred, row, cell), (K, SKY_NDEC, SKY_NRA), valid),
        sky_ood=_count((row, cell), (SKY_NDEC, SKY_NRA), valid & (ood != 0)),
        sky_missing=int((~valid).sum()),
    )


class Range(NamedTuple):
    """The training data's range of an input: its ``level`` and 1 - ``level`` quantiles (the model's domain)."""

    lo: float
    hi: float
    level: float = 0.001


@dataclass(frozen=True)
class PartSums:
    """What a report's worker task returns: the metrics' sums (labelled rows) and the figures' counts."""

    metrics: EvalSums
    figures: ReportSums

    def __add__(self, other: PartSums) -> PartSums:
        return PartSums(self.metrics + other.metrics, self.figures + other.figures)


def add(*parts):
    """``parts[0] + parts[1] + ...`` (the tree sum's function)."""
    return sum(parts[1:], parts[0])


def _div(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.divide(a, b, out=np.full(np.broadcast(a, b).shape, np.nan), where=b > 0)


@dataclass(frozen=True)
class BinTable:
    """Per-bin numbers of one axis (every bin: underflow, inner, overflow, missing).

    ``n`` labelled rows; ``accuracy`` with a Wilson 68 % interval (``acc_lo``, ``acc_hi``); ``f1`` (bins, C) one
    against the rest; ``support`` (bins, C) true rows per class; ``n_all`` every row; ``pred_share`` (bins, C)
    share of each predicted class among every row; ``true_share`` among labelled rows; ``ood_share`` and
    ``imputed_share`` of every row."""

    bins: Bins
    n: np.ndarray
    accuracy: np.ndarray
    acc_lo: np.ndarray
    acc_hi: np.ndarray
    f1: np.ndarray
    support: np.ndarray
    n_all: np.ndarray
    pred_share: np.ndarray
    true_share: np.ndarray
    ood_share: np.ndarray | None
    imputed_share: np.ndarray | None

    @classmethod
    def of(cls, bins, conf, pred, ood, imputed) -> BinTable:
        conf = conf.astype(np.float64)
        n = conf.sum(axis=(1, 2))
        tp = np.einsum("bkk->bk", conf)
        lo, hi = wilson(tp.sum(axis=1), n)
        rows, cols = conf.sum(axis=2), conf.sum(axis=1)
        n_all = pred.sum(axis=1).astype(np.float64)
        return cls(bins, n, _div(tp.sum(axis=1), n), lo, hi, _div(2 * tp, rows + cols), rows, n_all,
                   _div(pred, n_all[:, None]), _div(rows, n[:, None]),
                   None if ood is None else _div(ood, n_all), None if imputed is None else _div(imputed, n_all))


def wilson(k, n, z: float = 1.0):
    """Wilson score interval (z = 1: 68 %) of a proportion k / n; NaN where n = 0."""
    k, n = np.asarray(k, np.float64), np.asarray(n, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        den = 1 + z * z / n
        centre = (p + z * z / (2 * n)) / den
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    bad = n <= 0
    return np.where(bad, np.nan, centre - half), np.where(bad, np.nan, centre + half)
