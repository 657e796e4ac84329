"""The report's figures (matplotlib, Agg), drawn from summed counts only (:class:`~.sums.ReportSums`, and the
:class:`~astrodask.metrics.Metrics` where there are labels), never from rows.

Every builder returns a ``Figure`` of a fixed size in pixels (``FULL`` = 1200 px wide, ``HALF`` = 600 px; ``DPI``
100, saved without a tight bounding box so the PNG is exactly that size); :func:`draw` builds and renders one.
Legends sit outside the axes, so they never cover data; layout is matplotlib's constrained layout.

Every figure of the report is here (about fifteen), sharing one style, the pixel sizes and the layout helpers;
that shared look is why they are one module.
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib import patheffects
from matplotlib.colors import LogNorm, Normalize
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, MaxNLocator

from .. import schema
from ..metrics import REL_BINS, Metrics
from . import sums as S

DPI = 100
FULL = 12.0   # inches: 1200 px
HALF = 6.0    # 600 px
MIN_N = 20    # a bin with fewer rows is not drawn as a rate (accuracy, F1, share): too noisy
COLOURS = {"GALAXY": "#e08214", "QSO": "#7b3294", "STAR": "#2166ac"}
TRAIN_COLOUR = "#4daf4a"
STYLE = {"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "legend.fontsize": 10,
         "xtick.labelsize": 10, "ytick.labelsize": 10, "figure.titlesize": 13, "axes.grid": True,
         "grid.alpha": 0.3, "figure.facecolor": "white", "savefig.facecolor": "white"}


_plain = FuncFormatter(lambda v, _: f"{v:g}")


def _fig(w, h, **kw):
    with plt.rc_context(STYLE):
        return plt.figure(figsize=(w, h), dpi=DPI, layout="constrained", **kw)


def _over_counts(height: float):
    """A full-width figure: the main axes over a counts panel sharing its x axis; (fig, ax, axc)."""
    fig = _fig(FULL, height)
    gs = fig.add_gridspec(2, 1, height_ratios=[3, 1.3])
    ax = fig.add_subplot(gs[0])
    return fig, ax, fig.add_subplot(gs[1], sharex=ax)


_DRAWING = threading.Lock()
"""pyplot's figure registry and ``rc_context`` are process-global: one figure is drawn at a time per process
(a worker with several threads draws them in turn; several workers draw in parallel)."""


@dataclass(frozen=True)
class Png:
    """A drawn figure: its PNG bytes and size in pixels."""

    data: bytes
    width: int
    height: int


def draw(build, *args) -> Png:
    """``build(*args)`` (a figure builder of this module) drawn as a PNG of exactly the figure's size (no tight
    bbox)."""
    with _DRAWING:
        fig = build(*args)
        buf = io.BytesIO()
        with plt.rc_context(STYLE):
            fig.savefig(buf, dpi=DPI, format="png")
        w, h = (fig.get_size_inches() * DPI).round().astype(int)
        plt.close(fig)
    return Png(buf.getvalue(), int(w), int(h))


# ---- shared pieces ----------------------------------------------------------------------------------------------
def _train_range(axes, rng: S.Range | None, what: str = "r", unit: str = " mag"):
    """Mark the training range of ``what`` on every axis of ``axes`` (band + dashed edges); return a legend
    handle."""
    if rng is None:
        return None
    for ax in axes:
        ax.axvspan(rng.lo, rng.hi, color=TRAIN_COLOUR, alpha=0.10, zorder=0, lw=0)
        for x in (rng.lo, rng.hi):
            ax.axvline(x, color=TRAIN_COLOUR, ls="--", lw=1.3, zorder=1)
    q = f"{100 * rng.level:g}–{100 * (1 - rng.level):g} %"
    return Patch(facecolor=TRAIN_COLOUR, alpha=0.25, edgecolor=TRAIN_COLOUR, ls="--",
                 label=f"training data {what} range\n({q}: {rng.lo:.3g}–{rng.hi:.3g}{unit})")


def _r_axis(ax, r_range=None):
    edges = np.asarray(S.R_BINS.edges)
    lo, hi = edges[0], edges[-1]
    ax.set_xlim(lo, hi)
    ax.set_xticks(np.arange(lo, hi + 0.1, 1.0))
    ax.set_xlabel("r magnitude (mag)")


def _overflow_note(b, counts, what="rows", under_drawn=False):
    """Which rows a per-bin figure of axis ``b`` leaves out (under/overflow and missing values)."""
    nb = len(b.edges)
    under, over, miss = int(counts[0]), int(counts[nb]), int(counts[nb + 1])
    parts = []
    if under and not under_drawn:
        parts.append(f"{under:,} {what} with {b.name} < {b.edges[0]:g}")
    if over:
        parts.append(f"{over:,} with {b.name} ≥ {b.edges[-1]:g}")
    if miss:
        parts.append(f"{miss:,} without {b.name}")
    return ("not drawn: " + ", ".join(parts)) if parts else ""


def _steps_counts(ax, edges, counts_by_class, total, ylabel):
    for k, c in enumerate(S.CLASSES):
        ax.stairs(counts_by_class[:, k], edges, color=COLOURS[c], lw=1.4)
    ax.stairs(total, edges, color="black", lw=1.8)
    _log_counts(ax, float(np.max(total)) if len(total) else 0.0)
    ax.set_ylabel(ylabel)


def _log_counts(ax, top: float):
    """Log count axis from 0.8 (so a single object shows) to 3 x top; linear 0..1 when there is nothing."""
    if top > 0:
        ax.set_yscale("log")
        ax.set_ylim(0.8, top * 3)
    else:
        ax.set_ylim(0, 1)


def _side_legend(ax, handles):
    """A legend beside the axes (right, outside): it never covers data."""
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, borderaxespad=0)


def _rate_ylim(ax, values):
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    lo = 0.0 if not len(v) else max(0.0, np.floor((v.min() - 0.03) * 20) / 20)
    ax.set_ylim(lo, 1.005)


# ---- accuracy / F1 by a binned quantity -------------------------------------------------------------------------
def _z_plot_edges():
    """Edges to draw the redshift bins on a log axis: the stellar bin (z < 0.003) is drawn from 0.001."""
    e = np.asarray(S.Z_BINS.edges, float)
    return np.concatenate([[0.001], e])  # underflow + inner bins


def accuracy_by(st: S.ReportSums, axis: str = "r", rng: S.Range | None = None, title=None):
    """Accuracy (Wilson 68 % band) and per-class F1 per r or redshift bin, labelled counts per bin underneath;
    ``rng`` the training data's range of that quantity."""
    tab = st.by_r() if axis == "r" else st.by_z()
    nb = len(tab.bins.edges)
    if axis == "r":
        sl = slice(1, nb)
        edges = np.asarray(tab.bins.edges)
    else:
        sl = slice(0, nb)  # stellar bin + inner bins
        edges = _z_plot_edges()
    centres = np.sqrt(edges[:-1] * edges[1:]) if axis == "z" else (edges[:-1] + edges[1:]) / 2
    n = tab.n[sl]
    ok = n >= MIN_N
    fig, ax, axc = _over_counts(6.2)
    acc, lo, hi = (np.where(ok, a[sl], np.nan) for a in (tab.accuracy, tab.acc_lo, tab.acc_hi))
    ax.fill_between(centres, lo, hi, color="black", alpha=0.15, step=None, lw=0)
    ax.plot(centres, acc, "o-", color="black", lw=2, ms=5, label="accuracy (band: 68 % interval)")
    shown = [acc]
    for k, c in enumerate(S.CLASSES):
        f1 = np.where(tab.support[sl, k] >= MIN_N, tab.f1[sl, k], np.nan)
        shown.append(f1)
        ax.plot(centres, f1, "s--", color=COLOURS[c], lw=1.5, ms=4, label=f"F1 {c}")
    _rate_ylim(ax, np.concatenate(shown))
    ax.set_ylabel("accuracy, F1")
    _steps_counts(axc, edges, tab.support[sl], n, "labelled objects\nper bin")
    handles, _labels = ax.get_legend_handles_labels()
    h = _train_range([ax, axc], rng) if axis == "r" else _train_range([ax, axc], rng, "redshift", "")
    if h is not None:
        handles.append(h)
    if axis == "r":
        _r_axis(axc)
        what = "r magnitude"
    else:
        axc.set_xscale("log")
        axc.set_xlim(edges[0], edges[-1])
        ticks = [0.002, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5]
        axc.set_xticks(ticks, ["z<0.003\n(stellar)", "0.01", "0.02", "0.05", "0.1", "0.2", "0.5", "1", "2", "5"])
        axc.axvline(0.003, color="grey", lw=0.8)
        ax.axvline(0.003, color="grey", lw=0.8)
        axc.set_xlabel("spectroscopic redshift z (log scale; first bin: z < 0.003, stellar velocities)")
        what = "redshift"
    counts = [plt.Line2D([], [], color=COLOURS[c], lw=1.4, label=f"{c} objects") for c in S.CLASSES]
    counts.append(plt.Line2D([], [], color="black", lw=1.8, label="all labelled objects"))
    plt.setp(ax.get_xticklabels(), visible=False)
    _side_legend(ax, handles)
    _side_legend(axc, counts)
    note = _overflow_note(tab.bins, tab.n, "labelled rows", under_drawn=axis != "r")
    ax.set_title(title or f"Accuracy and per-class F1 by {what} "
                 f"({int(st.n_labelled):,} labelled objects; bins with < {MIN_N} objects not drawn)"
                 + (f"\n{note}" if note else ""), fontsize=11)
    return fig


def class_share_by_r(st: S.ReportSums, r_range=None):
    """Share of each predicted class per r bin (stacked), with the true shares (dashed) when labelled."""
    tab = st.by_r()
    nb = len(tab.bins.edges)
    sl = slice(1, nb)
    edges = np.asarray(tab.bins.edges)
    n_all = tab.n_all[sl]
    ok = n_all >= MIN_N
    fig, ax, axc = _over_counts(6.0)
    bottom = np.zeros(int(ok.sum()))
    left, right = edges[:-1][ok], edges[1:][ok]
    for k, c in enumerate(S.CLASSES):
        share = tab.pred_share[sl, k][ok]
        ax.bar(left, share, width=right - left, bottom=bottom, align="edge", color=COLOURS[c], alpha=0.75,
               edgecolor="white", lw=0.5, label=f"predicted {c}")
        bottom = bottom + share
    handles, _ = ax.get_legend_handles_labels()
    if st.labelled:
        okl = tab.n[sl] >= MIN_N
        cum = np.cumsum(np.nan_to_num(tab.true_share[sl]), axis=1)
        xc = (edges[:-1] + edges[1:]) / 2
        for k in range(len(S.CLASSES) - 1):  # NaN where too few: the line breaks rather than bridging a gap
            ax.plot(xc, np.where(okl, cum[:, k], np.nan), "k--", lw=1.6, marker="o", ms=3)
        handles.append(plt.Line2D([], [], color="black", ls="--", marker="o", ms=3,
                                  label="true class boundaries (labelled objects)"))
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of objects")
    counts = tab.pred_share[sl] * n_all[:, None]
    _steps_counts(axc, edges, np.nan_to_num(counts), n_all, "objects per bin")
    h = _train_range([ax, axc], r_range)
    if h is not None:
        handles.append(h)
    counts = [plt.Line2D([], [], color=COLOURS[c], lw=1.4, label=f"predicted {c}") for c in S.CLASSES]
    counts.append(plt.Line2D([], [], color="black", lw=1.8, label="all objects"))
    _r_axis(axc)
    plt.setp(ax.get_xticklabels(), visible=False)
    _side_legend(ax, handles[:S.K][::-1] + handles[S.K:])  # top to bottom, as stacked
    _side_legend(axc, counts)
    note = _overflow_note(tab.bins, tab.n_all, "objects")
    ax.set_title(f"Predicted class share by r magnitude ({int(st.n_rows):,} objects; "
                 f"bins with < {MIN_N} objects not drawn)" + (f"\n{note}" if note else ""), fontsize=11)
    return fig


# ---- confusion --------------------------------------------------------------------------------------------------
def confusion(m: Metrics):
    conf = np.asarray(m.confusion_matrix, float)
    norm = conf / np.maximum(conf.sum(axis=1, keepdims=True), 1)
    fig = _fig(HALF, 5.0)
    ax = fig.add_subplot()
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(S.K):
        for j in range(S.K):
            ax.text(j, i, f"{int(conf[i, j]):,}\n{norm[i, j]:.1%}", ha="center", va="center", fontsize=11,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(S.K), S.CLASSES)
    ax.set_yticks(range(S.K), S.CLASSES)
    ax.grid(False)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"Confusion matrix (accuracy {m.accuracy:.4f}, macro-F1 {m.macro_f1:.4f})", fontsize=11)
    fig.colorbar(im, ax=ax, shrink=0.85, label="share of the true class (row)")
    return fig


# ---- reliability ------------------------------------------------------------------------------------------------
def reliability(m: Metrics):
    """Per class: observed frequency vs mean predicted probability (Wilson 68 % bars), counts per bin under it;
    the expected calibration error of each class in the legend."""
    fig = _fig(FULL, 6.0)
    gs = fig.add_gridspec(2, S.K, height_ratios=[3, 1.2])
    edges = np.linspace(0, 1, REL_BINS + 1)
    handles = []
    for k, c in enumerate(S.CLASSES):
        ax = fig.add_subplot(gs[0, k])
        axc = fig.add_subplot(gs[1, k], sharex=ax)
        rel = m.reliability[c]
        cnt = np.asarray(rel.count, float)
        x = np.asarray(rel.mean_predicted, float)
        y = np.asarray(rel.fraction_true, float)
        lo, hi = S.wilson(np.nan_to_num(y) * cnt, cnt)
        ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1.2)
        big = cnt >= MIN_N
        # NaN in the small bins breaks the line there: only neighbouring well-filled bins are joined
        bars = np.clip([np.where(big, y - lo, 0), np.where(big, hi - y, 0)], 0, None)  # rounding: never < 0
        ax.errorbar(np.where(big, x, np.nan), np.where(big, y, np.nan), yerr=bars, fmt="o-", color=COLOURS[c],
                    ms=5, lw=1.6, capsize=2)
        small = (cnt > 0) & ~big
        ax.plot(x[small], y[small], "o", mfc="white", mec=COLOURS[c], ms=6)
        ax.set_xlim(0, 1)
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"{c}", color=COLOURS[c], fontweight="bold")
        if k == 0:
            ax.set_ylabel("observed frequency of the class")
            axc.set_ylabel("objects per bin")
        plt.setp(ax.get_xticklabels(), visible=False)
        axc.bar(edges[:-1], np.maximum(cnt, 0), width=1 / REL_BINS, align="edge", color=COLOURS[c], alpha=0.6,
                edgecolor="white")
        _log_counts(axc, float(cnt.max()))
        axc.set_xlabel(f"predicted probability p({c})")
        handles.append(plt.Line2D([], [], color=COLOURS[c], marker="o", lw=1.6,
                                  label=f"{c}: ECE {m.per_class[c].ece:.4f}"))
    handles.append(plt.Line2D([], [], color=COLOURS["QSO"], marker="o", mfc="white", lw=0,
                              label=f"bin with < {MIN_N} objects"))
    handles.append(plt.Line2D([], [], color="grey", ls=":", label="perfectly calibrated"))
    fig.legend(handles=handles, loc="outside lower center", ncol=5, frameon=False)
    fig.suptitle(f"Reliability (calibration) per class, {REL_BINS} bins of predicted probability; "
                 f"ECE = Σ_bins (n_bin / N) · |mean p − observed frequency|, N = {m.n:,}", fontsize=11)
    return fig


# ---- learning curve ---------------------------------------------------------------------------------------------
def learning_curve(history: list[dict], best_epoch: int, stop_reason: str, rule: str):
    """Train/validation loss (log) and validation accuracy per epoch; the kept epoch marked, the stopping rule
    and the reason training stopped stated under the plot."""
    import textwrap

    ep = np.array([h["epoch"] for h in history])
    fig = _fig(FULL, 5.4)
    gs = fig.add_gridspec(2, 1, height_ratios=[4, 0.9])
    ax = fig.add_subplot(gs[0])
    tax = fig.add_subplot(gs[1])
    tax.axis("off")
    ax.plot(ep, [h["train_loss"] for h in history], "-", color="tab:blue", lw=1.8, label="training log-loss")
    if any(h.get("valid_loss") is not None for h in history):
        ax.plot(ep, [np.nan if h.get("valid_loss") is None else h["valid_loss"] for h in history], "-",
                color="tab:red", lw=1.8, label="validation log-loss")
    ax.set_yscale("log")
    ax.set_xlabel("epoch (pass over the training data)")
    ax.set_ylabel("log-loss (per object, log scale)")
    ax.yaxis.set_major_formatter(_plain)
    ax.yaxis.set_minor_formatter(_plain)
    ax2 = ax.twinx()
    ax2.grid(False)
    if any(h.get("valid_accuracy") is not None for h in history):
        acc = np.array([np.nan if h.get("valid_accuracy") is None else h["valid_accuracy"] for h in history])
        ax2.plot(ep, acc, "--", color="tab:green", lw=1.6, label="validation accuracy")
        fin = acc[np.isfinite(acc)]
        if len(fin):
            ax2.set_ylim(max(0, np.percentile(fin, 10) - 0.01), min(1.0, fin.max() + 0.005))
    ax2.set_ylabel("validation accuracy")
    ax.axvline(best_epoch, color="black", lw=2)
    last = int(ep.max())
    if last > best_epoch:
        ax.axvspan(best_epoch, last, color="grey", alpha=0.15, lw=0)
    ax.set_xlim(ep.min() - 0.5, last + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    handles.append(plt.Line2D([], [], color="black", lw=2,
                              label=f"kept epoch {best_epoch}\n(its weights are the model)"))
    if last > best_epoch:
        handles.append(Patch(color="grey", alpha=0.3, label=f"epochs {best_epoch + 1}–{last}:\nno improvement"))
    ax2.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.09, 1.0), frameon=False, borderaxespad=0)
    ax.set_title(f"Learning curve: {len(ep)} epochs run, epoch {best_epoch} kept; stopped because "
                 f"{stop_reason}", fontsize=11, loc="left")
    tax.text(0, 1, "\n".join(textwrap.wrap("Stopping rule: " + rule, 150)), va="top", ha="left", fontsize=10,
             transform=tax.transAxes)
    return fig


# ---- colour-colour ----------------------------------------------------------------------------------------------
def colour_colour(st: S.ReportSums, name: str):
    """Density of objects per class in one colour-colour diagram: a row by true class (when labelled) and a row
    by predicted class; log colour scale shared by every panel; the grey contour is all objects."""
    xc, yc, xe, ye = S.DIAGRAMS[name]
    rows = ([("true", st.cc_true[name])] if st.labelled else []) + [("predicted", st.cc_pred[name])]
    n_in = int(rows[-1][1].sum())
    f = 1 if n_in >= 20000 else 2 if n_in >= 3000 else 4  # few objects: coarser display cells (exact sums)
    rows = [(kind, _rebin(h, f)) for kind, h in rows]
    xe, ye = xe[::f], ye[::f]
    step = S.CC_STEP * f
    fig = _fig(FULL, 4.4 * len(rows) + 0.9)
    axes = fig.subplots(len(rows), S.K, sharex=True, sharey=True, squeeze=False)
    vmax = max(1, *(int(h.max()) for _, h in rows))
    norm = LogNorm(vmin=1, vmax=vmax)
    total = _smooth(rows[-1][1].sum(axis=0).astype(float))
    lv = _enclosing_levels(total, (0.95, 0.68))
    xcen, ycen = (xe[:-1] + xe[1:]) / 2, (ye[:-1] + ye[1:]) / 2
    im = None
    for i, (kind, h) in enumerate(rows):
        for k, c in enumerate(S.CLASSES):
            ax = axes[i, k]
            ax.grid(False)
            img = np.ma.masked_equal(h[k].astype(float), 0)
            im = ax.pcolormesh(xe, ye, img, cmap="magma_r", norm=norm, rasterized=True)
            if lv:
                ax.contour(xcen, ycen, total, levels=lv, colors="0.45", linewidths=[0.8, 1.3][-len(lv):])
            ax.set_title(f"{kind} {c}: {int(h[k].sum()):,} objects", color=COLOURS[c], fontsize=11)
            if i == len(rows) - 1:
                ax.set_xlabel(f"{xc} (mag)")
            if k == 0:
                ax.set_ylabel(f"{yc} (mag)")
    cb = fig.colorbar(im, ax=axes, shrink=0.9, pad=0.01)
    cb.set_label(f"objects per {step:g} × {step:g} mag² cell")
    cb.ax.yaxis.set_major_formatter(_plain)
    cb.ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    out = int(st.cc_outside[list(S.DIAGRAMS).index(name)])
    fig.suptitle(f"Colour-colour diagram {yc} vs {xc} by class (grey contours enclose 95 % and 68 % of all "
                 f"objects; {out:,} objects outside the axes or without a colour)", fontsize=11)
    return fig


def _rebin(h: np.ndarray, f: int) -> np.ndarray:
    """Sum f x f blocks of the last two axes (their lengths are multiples of 4 by construction)."""
    if f == 1:
        return h
    *lead, ny, nx = h.shape
    return h.reshape(*lead, ny // f, f, nx // f, f).sum(axis=(-3, -1))


def _smooth(h: np.ndarray) -> np.ndarray:
    """3 x 3 box average (for contours of a noisy 2-D histogram)."""
    p = np.pad(h, 1)
    return sum(p[i:i + h.shape[0], j:j + h.shape[1]] for i in range(3) for j in range(3)) / 9.0


def _enclosing_levels(h: np.ndarray, fractions) -> list[float]:
    """Density levels whose super-level sets hold ``fractions`` of the total (highest-density regions);
    ascending, as contour wants them."""
    v = np.sort(h.ravel())[::-1]
    if v.sum() <= 0:
        return []
    cum = np.cumsum(v) / v.sum()
    lv = sorted({float(v[min(np.searchsorted(cum, f), len(v) - 1)]) for f in fractions})
    return [x for x in lv if x > 0]


# ---- sky --------------------------------------------------------------------------------------------------------
_GAL = np.array([[-0.0548755604, -0.8734370902, -0.4838350155],
                 [0.4941094279, -0.4448296300, 0.7469822445],
                 [-0.8676661490, -0.1980763734, 0.4559837762]])  # ICRS -> Galactic rotation


def _x(ra_deg):
    """Mollweide longitude (radians) of right ascension: RA 180 at the centre, increasing to the left (east)."""
    return np.radians(180.0 - np.asarray(ra_deg, float))


def _sky_axes(fig, spec):
    ax = fig.add_subplot(spec, projection="mollweide")
    xt = np.arange(-150, 151, 30)
    ax.set_xticks(np.radians(xt), [f"{(180 - v) % 360:d}°" for v in xt], fontsize=10)
    ax.set_yticks(np.radians(np.arange(-75, 76, 15)))
    ax.tick_params(axis="y", labelsize=10)
    halo = [patheffects.withStroke(linewidth=3, foreground="white")]
    for t in ax.get_xticklabels():
        t.set_path_effects(halo)
        t.set_zorder(10)
    ax.grid(True, alpha=0.4)
    ax.set_xlabel("right ascension α (deg, increasing to the left)")
    ax.set_ylabel("declination δ (deg)")
    ax.set_facecolor("#e9e9e9")
    return ax


def _galactic_plane(ax):
    lon = np.radians(np.linspace(0, 360, 721))  # Galactic longitude along b = 0
    v = _GAL.T @ np.vstack([np.cos(lon), np.sin(lon), np.zeros_like(lon)])
    ra = np.degrees(np.arctan2(v[1], v[0])) % 360
    dec = np.degrees(np.arcsin(v[2]))
    x = _x(ra)
    order = np.argsort(x)
    x, dec = x[order], dec[order]
    ax.plot(x, np.radians(dec), color="0.35", ls="--", lw=1.2)
    return plt.Line2D([], [], color="0.35", ls="--", lw=1.2, label="Galactic plane (b = 0)")


def _sky_mesh(ax, values, **kw):
    """pcolormesh of a (SKY_NDEC, SKY_NRA) array on the Mollweide axes."""
    xe = _x(S.SKY_RA_EDGES)[::-1]           # ascending: RA 360 .. 0
    ye = np.radians(S.SKY_DEC_EDGES)
    return ax.pcolormesh(xe, ye, values[:, ::-1], rasterized=True, **kw)


def _small_footprint(ax, occupied, handles):
    """When the data covers few cells, ring them so they are visible on the all-sky map."""
    rows, cols = np.nonzero(occupied)
    if 0 < len(rows) <= 40:
        ra = (S.SKY_RA_EDGES[cols] + S.SKY_RA_EDGES[cols + 1]) / 2
        dec = (S.SKY_DEC_EDGES[rows] + S.SKY_DEC_EDGES[rows + 1]) / 2
        ax.scatter(_x(ra), np.radians(dec), s=500, facecolors="none", edgecolors="red", lw=2, zorder=5)
        a0, a1 = S.SKY_RA_EDGES[cols].min(), S.SKY_RA_EDGES[cols + 1].max()
        d0, d1 = S.SKY_DEC_EDGES[rows].min(), S.SKY_DEC_EDGES[rows + 1].max()
        handles.append(plt.Line2D([], [], marker="o", mfc="none", mec="red", ms=14, lw=0, mew=2,
                                  label=f"the {len(rows)} occupied cell{'s' if len(rows) > 1 else ''} "
                                        f"(α {a0:.0f}–{a1:.0f}°, δ {d0:.1f}–{d1:.1f}°), ringed"))


def sky_density(st: S.ReportSums):
    """All objects per square degree on an equal-area grid, Mollweide projection."""
    dens = st.sky_density()
    fig = _fig(FULL, 6.9)
    ax = _sky_axes(fig, 111)
    m = np.ma.masked_equal(dens, 0)
    hi = max(dens.max(), 1 / S.SKY_CELL_DEG2 * 1.01)
    im = _sky_mesh(ax, m, cmap="viridis", norm=LogNorm(vmin=1 / S.SKY_CELL_DEG2, vmax=hi))
    handles = [_galactic_plane(ax)]
    _small_footprint(ax, dens > 0, handles)
    cb = fig.colorbar(im, ax=ax, orientation="horizontal", shrink=0.55, pad=0.02, aspect=40)
    cb.set_label(f"objects / deg²   (cells of {S.SKY_CELL_DEG2:.2f} deg², equal area; grey: no objects)")
    cb.ax.xaxis.set_major_formatter(_plain)
    n_pos = int(st.sky.sum())
    area = float((dens > 0).sum() * S.SKY_CELL_DEG2)
    fig.legend(handles=handles, loc="outside lower right", frameon=False)
    ax.set_title(f"Sky density of all {n_pos:,} objects with a position (occupied area {area:,.0f} deg²)",
                 pad=14)
    return fig


def sky_dominant(st: S.ReportSums):
    """The dominant predicted class of each sky cell; the colour's strength is that class's share of the cell."""
    counts = st.sky.astype(float)
    tot = counts.sum(axis=0)
    dom = counts.argmax(axis=0)
    share = np.divide(counts.max(axis=0), tot, out=np.zeros_like(tot), where=tot > 0)
    strength = np.clip((share - 1 / S.K) / (1 - 1 / S.K), 0, 1)
    base = np.array([matplotlib.colors.to_rgb(COLOURS[c]) for c in S.CLASSES])
    t = 0.35 + 0.65 * strength[..., None]
    rgba = np.ones((*tot.shape, 4))
    rgba[..., :3] = (1 - t) + t * base[dom]
    rgba[..., 3] = (tot > 0).astype(float)
    fig = _fig(FULL, 6.9)
    gs = fig.add_gridspec(1, 2, width_ratios=[1, 0.13])
    ax = _sky_axes(fig, gs[0])
    mesh = _sky_mesh(ax, np.zeros_like(tot))
    mesh.set_array(None)
    mesh.set_facecolor(rgba[:, ::-1].reshape(-1, 4))
    handles = [_galactic_plane(ax)]
    _small_footprint(ax, tot > 0, handles)
    # a colour key: one ramp per class, share of the dominant class from 1/3 to 1
    key = gs[1].subgridspec(S.K + 2, 1, height_ratios=[1.5] + [1] * S.K + [1.5])
    ramp = np.linspace(0, 1, 64)
    for k, c in enumerate(S.CLASSES):
        kax = fig.add_subplot(key[k + 1])
        tt = 0.35 + 0.65 * ramp[None, :, None]
        kax.imshow((1 - tt) + tt * base[k][None, None, :], aspect="auto", extent=(1 / S.K, 1, 0, 1))
        kax.set_yticks([])
        nc = int((tot > 0)[dom == k].sum())
        kax.set_title(f"{c}\n{nc:,} cell{'' if nc == 1 else 's'}", fontsize=10, color=COLOURS[c])
        kax.set_xticks([1 / 3, 2 / 3, 1], ["⅓", "⅔", "1"], fontsize=9)
        kax.grid(False)
        if k == S.K - 1:
            kax.set_xlabel("share of the\ndominant class", fontsize=9)
    fig.legend(handles=handles, loc="outside lower right", frameon=False)
    ax.set_title(f"Dominant predicted class per {S.SKY_CELL_DEG2:.2f} deg² cell "
                 f"({int(st.sky.sum()):,} objects; grey: no objects)", pad=14)
    return fig


def sky_ood(st: S.ReportSums):
    """Share of objects outside the training domain per sky cell."""
    tot = st.sky.sum(axis=0).astype(float)
    share = np.ma.masked_where(tot == 0, np.divide(st.sky_ood, tot, out=np.zeros_like(tot), where=tot > 0))
    fig = _fig(FULL, 6.9)
    ax = _sky_axes(fig, 111)
    im = _sky_mesh(ax, share, cmap="Reds", norm=Normalize(0, 1))
    handles = [_galactic_plane(ax)]
    _small_footprint(ax, tot > 0, handles)
    cb = fig.colorbar(im, ax=ax, orientation="horizontal", shrink=0.55, pad=0.02, aspect=40)
    cb.set_label("share of the cell's objects outside the training domain (any input)")
    fig.legend(handles=handles, loc="outside lower right", frameon=False)
    frac = float(st.sky_ood.sum() / max(st.sky.sum(), 1))
    ax.set_title(f"Objects outside the training domain on the sky ({int(st.sky_ood.sum()):,} of "
                 f"{int(st.sky.sum()):,}, {frac:.1%})", pad=14)
    return fig


# ---- unlabelled -------------------------------------------------------------------------------------------------
def probability_hists(st: S.ReportSums):
    """Per class: histogram of p(class) over every object, and of the winning probability of the objects
    predicted as that class."""
    fig = _fig(FULL, 4.6)
    axes = fig.subplots(1, S.K, sharey=True)
    edges = S.P_EDGES
    top = max(int(st.prob_hist.max()), int(st.maxp_hist.max()))
    for k, c in enumerate(S.CLASSES):
        ax = axes[k]
        ax.stairs(st.prob_hist[k], edges, color="0.3", lw=1.6, label="all objects: p(class)")
        ax.stairs(st.maxp_hist[k], edges, color=COLOURS[c], fill=True, alpha=0.55,
                  label="objects predicted as the class: their p(class)")
        _log_counts(ax, top)
        ax.set_xlim(0, 1)
        ax.axvline(1 / S.K, color="grey", ls=":", lw=1)
        ax.set_xlabel(f"predicted probability p({c})")
        n_pred = int(st.maxp_hist[k].sum())
        ax.set_title(f"{c}: {n_pred:,} predicted ({n_pred / max(int(st.n_rows), 1):.1%})", color=COLOURS[c])
    axes[0].set_ylabel(f"objects per {1 / S.P_BINS:g} in p")
    handles = [plt.Line2D([], [], color="0.3", lw=1.6, label="all objects: their p(class)"),
               Patch(color="0.5", alpha=0.55, label="objects predicted as the class (coloured): their p(class)"),
               plt.Line2D([], [], color="grey", ls=":", label="p = 1/3")]
    fig.legend(handles=handles, loc="outside upper center", ncol=3, frameon=False)
    return fig


def ood_by_r(st: S.ReportSums, r_range=None, bit_names=schema.INPUT_BITS):
    """Share of objects outside the training domain per r bin (any input, and per input that occurs)."""
    tab = st.by_r()
    nb = len(tab.bins.edges)
    sl = slice(1, nb)
    edges = np.asarray(tab.bins.edges)
    xc = (edges[:-1] + edges[1:]) / 2
    n_all = tab.n_all[sl]
    ok = n_all >= MIN_N
    fig, ax, axc = _over_counts(5.6)
    share = np.where(ok, tab.ood_share[sl], np.nan)
    ax.plot(xc, share, "o-", color="black", lw=2.2, label="any input outside the training range")
    bits = st.ood_r_bits[sl]
    present = [b for b in range(S.NBITS) if bits[:, b].sum() > 0]
    cmap = plt.get_cmap("tab10")
    for j, b in enumerate(present):
        name = bit_names[b] if b < len(bit_names) else f"bit {b}"
        ax.plot(xc, np.where(ok, bits[:, b] / np.maximum(n_all, 1), np.nan), ".--", color=cmap(j % 10), lw=1.2,
                label=f"{name} outside")
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("share of objects")
    handles = ax.get_legend_handles_labels()[0]
    axc.stairs(n_all, edges, color="black", lw=1.8)
    axc.stairs(st.ood_r[sl], edges, color="tab:red", lw=1.4, fill=True, alpha=0.4)
    _log_counts(axc, float(n_all.max()))
    axc.set_ylabel("objects per bin")
    counts = [plt.Line2D([], [], color="black", lw=1.8, label="all objects"),
              Patch(color="tab:red", alpha=0.4, label="outside the domain")]
    h = _train_range([ax, axc], r_range)
    if h is not None:
        handles.append(h)
    _r_axis(axc)
    plt.setp(ax.get_xticklabels(), visible=False)
    _side_legend(ax, handles)
    _side_legend(axc, counts)
    tot = int(st.ood_r.sum())
    known = max(int(st.n_rows), 1)
    ax.set_title(f"Objects outside the training domain by r magnitude: {tot:,} of {known:,} ({tot / known:.1%}); "
                 f"bins with < {MIN_N} objects not drawn", fontsize=11)
    return fig
