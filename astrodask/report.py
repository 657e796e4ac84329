"""Stage 7: the report: PNG figures (matplotlib) and an HTML page, drawn from merged metrics only."""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

if TYPE_CHECKING:
    from .evaluate import Metrics

COLOURS = {"GALAXY": "tab:orange", "QSO": "tab:purple", "STAR": "tab:blue"}


def _save(fig, path) -> str:
    import io

    from .storage import Location

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, dpi=110, format="png")
    plt.close(fig)
    loc = Location.of(path)
    loc.write_bytes(buf.getvalue())
    return loc.name


def confusion_png(metrics: Metrics, path: Path) -> str:
    conf = np.asarray(metrics.confusion_matrix, float)
    classes = metrics.classes
    norm = conf / np.maximum(conf.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(4.6, 4))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{int(conf[i, j]):,}\n{norm[i, j]:.1%}", ha="center", va="center",
                    color="white" if norm[i, j] > 0.5 else "black", fontsize=8)
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"accuracy {metrics.accuracy:.4f}")
    fig.colorbar(im, ax=ax, fraction=0.046)
    return _save(fig, path)


def per_class_png(metrics: Metrics, path: Path) -> str:
    classes = metrics.classes
    fig, ax = plt.subplots(figsize=(5, 3.2))
    w = 0.25
    for k, key in enumerate(("precision", "recall", "f1")):
        vals = [getattr(metrics.per_class[c], key) for c in classes]
        ax.bar(np.arange(len(classes)) + (k - 1) * w, vals, w, label=key)
    ax.set_xticks(range(len(classes)), classes)
    ax.set_ylim(min(0.8, min(metrics.per_class[c].f1 for c in classes) - 0.05), 1.0)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(f"per class (macro-F1 {metrics.macro_f1:.4f})")
    return _save(fig, path)


def learning_png(history: list[dict], path: Path) -> str:
    ep = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    ax.plot(ep, [h["train_loss"] for h in history], label="train loss")
    if any(h.get("valid_loss") is not None for h in history):
        ax.plot(ep, [h["valid_loss"] for h in history], label="validation loss")
    ax.set_xlabel("epoch (pass over the data)")
    ax.set_ylabel("log-loss")
    ax.set_yscale("log")
    ax2 = ax.twinx()
    if any(h.get("valid_accuracy") is not None for h in history):
        ax2.plot(ep, [h["valid_accuracy"] for h in history], color="tab:green", ls="--", label="validation accuracy")
    ax2.set_ylabel("accuracy")
    lines = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax.legend(lines, [ln.get_label() for ln in lines], fontsize=8, loc="center right")
    ax.set_title("learning curve")
    return _save(fig, path)


def reliability_png(metrics: Metrics, path: Path) -> str:
    fig, ax = plt.subplots(figsize=(4.4, 4))
    ax.plot([0, 1], [0, 1], color="grey", ls=":", label="perfectly calibrated")
    for c, r in metrics.reliability.items():
        x = np.asarray(r.mean_predicted, float)
        y = np.asarray(r.fraction_true, float)
        ok = np.isfinite(x) & np.isfinite(y)
        ax.plot(x[ok], y[ok], marker="o", ms=3, color=COLOURS.get(c), label=c)
    ax.set_xlabel("predicted probability")
    ax.set_ylabel("observed frequency")
    ax.set_title(f"reliability (log-loss {metrics.log_loss:.3f}, Brier {metrics.brier:.3f})", fontsize=9)
    ax.legend(fontsize=8)
    return _save(fig, path)


def redshift_png(metrics: Metrics, path: Path) -> str:
    h = metrics.redshift_hist
    edges = np.asarray(h.edges, float)
    edges[0] = edges[1] / 2  # the first bin holds z <= 1e-4 (stars): draw it just below
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for c, counts in zip(metrics.classes, h.counts):
        ax.stairs(counts, edges, label=c, color=COLOURS.get(c), lw=1.5)
    ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=10)
    ax.set_xlabel("redshift (first bin: z <= 1e-4)")
    ax.set_ylabel("objects")
    ax.set_title("redshift by predicted class")
    ax.legend(fontsize=8)
    return _save(fig, path)


def sky_png(metrics: Metrics, path: Path) -> str:
    counts = np.asarray(metrics.sky_hist.counts, float)  # (K, alpha bins, delta bins)
    fig, axes = plt.subplots(1, len(counts), figsize=(4 * len(counts), 2.6), sharey=True)
    for ax, c, cnt in zip(np.atleast_1d(axes), metrics.classes, counts):
        im = ax.imshow(np.ma.masked_equal(cnt.T, 0), origin="lower", extent=(0, 360, -90, 90), aspect="auto",
                       cmap="viridis")
        ax.set_xlim(360, 0)
        ax.set_title(f"predicted {c} ({int(cnt.sum()):,})", fontsize=9)
        ax.set_xlabel("alpha (deg)")
        fig.colorbar(im, ax=ax, fraction=0.05)
    np.atleast_1d(axes)[0].set_ylabel("delta (deg)")
    fig.suptitle("sky map by predicted class (objects per 5° cell)", fontsize=10)
    return _save(fig, path)


def write(out_dir, metrics: Metrics, history: list[dict] | None, title: str = "astrodask report",
          rows_label: str = "Rows") -> Location:  # noqa: F821
    """Write figures and ``index.html`` into ``out_dir`` (a path or URL); return the HTML's location.

    ``rows_label`` says which rows the metrics are over (the holdout, or every predicted row)."""
    from .storage import Location

    out = Location.of(out_dir)
    out.mkdir()
    figs = [("Confusion matrix", confusion_png(metrics, out / "confusion_matrix.png")),
            ("Precision, recall, F1", per_class_png(metrics, out / "per_class.png")),
            ("Reliability", reliability_png(metrics, out / "reliability.png"))]
    if history:
        figs.append(("Learning curve", learning_png(history, out / "learning_curve.png")))
    if metrics.redshift_hist is not None:
        figs.append(("Redshift by predicted class", redshift_png(metrics, out / "redshift_by_class.png")))
    if metrics.sky_hist is not None:
        figs.append(("Sky map", sky_png(metrics, out / "sky_map.png")))
    rows = "".join(
        f"<tr><td>{html.escape(c)}</td><td>{v.precision:.4f}</td><td>{v.recall:.4f}</td>"
        f"<td>{v.f1:.4f}</td><td>{v.support:,}</td></tr>" for c, v in metrics.per_class.items())
    imgs = "".join(f"<figure><img src='{f}' alt='{html.escape(t)}'><figcaption>{html.escape(t)}</figcaption></figure>"
                   for t, f in figs)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}td,th{{padding:2px 10px;text-align:right}}
figure{{display:inline-block;margin:8px}}img{{max-width:520px}}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{html.escape(rows_label)}: {metrics.n:,} &middot; accuracy <b>{metrics.accuracy:.4f}</b> &middot; macro-F1
{metrics.macro_f1:.4f} &middot; log-loss {metrics.log_loss:.4f} &middot; Brier {metrics.brier:.4f}</p>
<table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>{rows}</table>
{imgs}</body></html>"""
    (out / "index.html").write_text(page)
    return out / "index.html"
