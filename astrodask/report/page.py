"""The HTML report: figures (PNG files beside the page), the key numbers, and a provenance block.

Self-contained: inline CSS, no script, no external resource; images are relative paths, so the directory works
from file:// and wherever it is copied. Every <img> states its pixel size, which is the PNG's size.
"""

from __future__ import annotations

import html
import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .. import schema
from ..metrics import Metrics
from . import figures as F
from . import sums as S
from .provenance import Provenance, TrainingRun

SUMS_NPZ = "sums.npz"
"""The summed counts the figures were drawn from, beside the page (``astrodask report`` redraws from them)."""
KINDS = {"model": "Holdout rows: the 20 % of the labelled rows (by obj_ID hash) the model never trained on",
         "evaluation": "Evaluation of predictions with true classes",
         "predictions": "Predictions: what the model says, and where it extrapolates"}


@dataclass(frozen=True)
class Shown:
    """One figure on the page."""

    file: str
    title: str
    caption: str
    width: int
    height: int
    section: str


def _esc(v) -> str:
    return html.escape(str(v))


def _fmt(v) -> str:
    if isinstance(v, bool) or v is None:
        return _esc("–" if v is None else v)
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if not np.isfinite(v):
            return "–"
        return f"{v:.4f}" if v == 0 or 1e-3 <= abs(v) < 1e6 else f"{v:.4g}"
    if isinstance(v, (dict, list, tuple)):
        return _esc(json.dumps(v, default=str))
    return _esc(v)


def _table(rows, head=None, cls="") -> str:
    h = "" if head is None else "<tr>" + "".join(f"<th>{_esc(c)}</th>" for c in head) + "</tr>"
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table class='{cls}'>{h}{body}</table>"


@dataclass(frozen=True)
class _Planned:
    """A figure to draw: where it goes on the page, and its builder with the builder's arguments."""

    file: str
    section: str
    title: str
    caption: str
    build: Callable
    args: tuple


def _figures(out, st: S.ReportSums, m: Metrics | None, ranges: dict, training: TrainingRun | None,
             client=None) -> list[Shown]:
    """Draw the page's figures into ``out``: on the workers of ``client`` when given (in parallel, from the summed
    counts sent to them once), else here."""
    plan = _plan(st, m, ranges, training)
    if client is None:
        drawn = [F.draw(p.build, *p.args) for p in plan]
    else:
        from ..console import track

        ref = client.scatter(st, hash=False)
        futs = [client.submit(F.draw, p.build, *(ref if a is st else a for a in p.args), pure=False)
                for p in plan]
        drawn = track(futs, "report figures", quiet=True)
        ref.release()
    shown = []
    for p, png in zip(plan, drawn):
        (out / p.file).write_bytes(png.data)
        shown.append(Shown(p.file, p.title, p.caption, png.width, png.height, p.section))
    return shown


def _plan(st: S.ReportSums, m: Metrics | None, ranges: dict, training: TrainingRun | None) -> list[_Planned]:
    plan = []

    def add(name, section, title, caption, build, *args):
        plan.append(_Planned(name, section, title, caption, build, args))

    r = ranges.get("r")
    rr = "" if r is None else (f" The green band marks the training data's r range ({100 * r.level:g}–"
                               f"{100 * (1 - r.level):g} % quantiles, {r.lo:.2f}–{r.hi:.2f} mag): beyond it the "
                               "model extrapolates.")
    if m is not None and st.labelled:
        add("accuracy_by_r.png", "Accuracy", "Accuracy and F1 by r magnitude",
            "Top: accuracy of the labelled objects per 0.5 mag bin of r (grey band: 68 % Wilson interval) and each "
            f"class's F1 (one class against the rest). Bottom: labelled objects per bin, by true class.{rr}",
            F.accuracy_by, st, "r", r)
        if int(st.conf_z[:len(S.Z_BINS.edges) + 1].sum()):
            add("accuracy_by_redshift.png", "Accuracy", "Accuracy and F1 by redshift",
                "The same by spectroscopic redshift (log axis; the first bin holds z < 0.003, stellar velocities "
                "below 900 km/s); the green band is the training data's redshift range.",
                F.accuracy_by, st, "z", ranges.get(schema.REDSHIFT))
        add("confusion_matrix.png", "Accuracy", "Confusion matrix",
            "Rows: true class; columns: predicted class; percentages of the true class.", F.confusion, m)
    add("class_share_by_r.png", "Classes", "Predicted class share by r magnitude",
        "Share of each predicted class per 0.5 mag bin of r (stacked)"
        + ("; dashed: the true classes' cumulative shares, so a gap between a dashed line and a colour boundary "
           "is a bias of the predicted mix." if st.labelled else ".")
        + " Bottom: objects per bin." + rr, F.class_share_by_r, st, r)
    add("probability_histograms.png", "Classes", "Probability distributions per class",
        "Per class: the histogram of p(class) over every object (grey line) and of the winning probability of the "
        "objects predicted as that class (filled): mass near 1 means confident calls, near 1/3 ambiguous ones.",
        F.probability_hists, st)
    if int(st.ood_r.sum()) or ranges:
        add("out_of_domain_by_r.png", "Domain", "Out-of-domain share by r magnitude",
            "Share of objects with at least one model input outside the training data's range (black), and per "
            "input; bottom: counts." + rr, F.ood_by_r, st, r)
        add("sky_out_of_domain.png", "Domain", "Out-of-domain share on the sky",
            "Share of each cell's objects with at least one input outside the training range.", F.sky_ood, st)
    for name, (xc, yc, _, _) in S.DIAGRAMS.items():
        add(f"colour_{name}.png", "Colours", f"Colour-colour diagram {yc} vs {xc}",
            ("Top row: objects by true class; bottom row: the same objects by predicted class. " if st.labelled
             else "Objects by predicted class. ")
            + "Colour: objects per cell (log scale, the same in every panel; 0.05 mag cells, coarser when there "
              "are few objects, as the colour bar states); grey contours enclose 95 % and 68 % of all objects.",
            F.colour_colour, st, name)
    add("sky_density.png", "Sky", "Sky density",
        "Objects per square degree on an equal-area grid (2° in right ascension × 1/45 in sin δ, 2.55 deg² per "
        "cell), Mollweide projection centred on α = 180°, east to the left; dashed: the Galactic plane.",
        F.sky_density, st)
    add("sky_dominant_class.png", "Sky", "Dominant predicted class on the sky",
        "The class with most objects in each cell; a stronger colour means a larger share of that class.",
        F.sky_dominant, st)
    if m is not None:
        add("reliability.png", "Calibration", "Reliability per class",
            "Observed frequency of each class against the mean predicted probability, in 10 bins of p (bars: 68 % "
            "Wilson intervals; hollow: bins with few objects, whose jumps are noise, not miscalibration); under "
            "each, the objects per bin. ECE in the legend.", F.reliability, m)
    if training is not None and training.history:
        add("learning_curve.png", "Training", "Learning curve",
            "Training and validation log-loss and validation accuracy per epoch; the black line is the epoch whose "
            "weights were kept, grey the epochs run after it; the stopping rule is stated under the plot.",
            F.learning_curve, training.history, training.best_epoch, training.stop_reason, training.rule)
    return plan


def _summary(st: S.ReportSums, m: Metrics | None) -> str:
    n = st.n_rows
    pred = st.pred_r.sum(axis=0)
    parts = []
    if m is not None:
        parts.append(_table([[n, m.n, m.accuracy, m.macro_f1, m.log_loss, m.brier]],
                            ["objects", "labelled", "accuracy", "macro-F1", "log-loss", "Brier"], "key"))
        parts.append(_table([[c, v.precision, v.recall, v.f1, v.support, v.ece, int(pred[k])]
                             for k, (c, v) in enumerate(m.per_class.items())],
                            ["class", "precision", "recall", "F1", "support (true)", "ECE", "predicted"]))
        scored = {p: s for p, s in m.paths.items() if s.n}
        if len(scored) > 1:
            parts.append(_table([[p, s.n, s.accuracy, s.macro_f1] for p, s in scored.items()],
                                ["scored by", "labelled objects", "accuracy", "macro-F1"]))
    else:
        parts.append(_table([[c, int(pred[k]), f"{pred[k] / max(n, 1):.2%}"] for k, c in enumerate(S.CLASSES)]
                            + [["all", n, "100%"]], ["predicted class", "objects", "share"]))
    rows = []
    paths = st.path_r.sum(axis=0)
    if paths[1]:
        rows += [[f"scored by the {p} path", int(paths[k]), f"{paths[k] / max(n, 1):.2%}"]
                 for k, p in enumerate(("spectroscopic", "photometric"))]
    rows.append(["outside the training domain (any input)", int(st.ood_r.sum()), f"{st.ood_r.sum() / max(n, 1):.2%}"])
    bits = st.ood_r_bits.sum(axis=0)
    rows += [[f"… {schema.INPUT_BITS[b]} outside", int(bits[b]), f"{bits[b] / max(n, 1):.2%}"]
             for b in range(S.NBITS) if bits[b]]
    rows.append(["with an imputed input", int(st.imputed_r.sum()), f"{st.imputed_r.sum() / max(n, 1):.2%}"])
    rows += [[f"… {schema.INPUT_BITS[b]} imputed", int(st.imputed_bits[b]), f"{st.imputed_bits[b] / max(n, 1):.2%}"]
             for b in range(S.NBITS) if st.imputed_bits[b]]
    rows.append(["without a sky position", st.sky_missing, f"{st.sky_missing / max(n, 1):.2%}"])
    area = float((st.sky.sum(axis=0) > 0).sum() * S.SKY_CELL_DEG2)
    rows.append(["sky area covered (cells with objects)", f"{area:,.0f} deg²", ""])
    parts.append(_table(rows, ["objects", "count", "share"]))
    return "".join(parts)


def _provenance(p: Provenance | None) -> str:
    if p is None:
        return "<p>No provenance recorded.</p>"
    out = []
    if p.inputs:
        out.append("<h3>Inputs</h3>" + _table([[i.role, i.path, i.rows, i.output_id or ""] for i in p.inputs],
                                              ["role", "path", "rows", "output id"], "inputs"))
    if p.options:
        out.append("<h3>Options</h3>" + _table(sorted(p.options.items()), ["option", "value"], "kv"))
    if p.versions:
        out.append("<h3>Versions</h3>" + _table(list(p.versions.items()), ["package", "version"], "kv"))
    if p.cluster is not None:
        c = p.cluster
        mem = f"{c.memory_per_worker / 2**30:.2f} GiB" if c.memory_per_worker else "no limit"
        out.append("<h3>Cluster</h3>" + _table([["workers × threads", f"{c.workers} × {c.threads_per_worker}"],
                                                ["memory per worker", mem], ["scheduler", c.scheduler]],
                                               None, "kv"))
    if p.stages:
        rows = [[s.stage, f"{s.seconds:.1f} s"] for s in p.stages]
        rows.append(["total", f"{sum(s.seconds for s in p.stages):.1f} s"])
        out.append("<h3>Wall time per stage</h3>" + _table(rows, ["stage", "wall time"], "kv"))
    if p.date:
        out.append(f"<p>Report written {_esc(p.date)}.</p>")
    return "".join(out)


CSS = """
body{font-family:"DejaVu Sans",Arial,Helvetica,sans-serif;max-width:1220px;margin:16px auto;padding:0 10px;
color:#222;line-height:1.4}
h1{font-size:1.6em;margin:.2em 0}h2{border-bottom:2px solid #ddd;padding-bottom:3px;margin-top:1.6em}
h3{margin:1em 0 .3em}
nav a{margin-right:14px}
table{border-collapse:collapse;margin:6px 0 12px}td,th{padding:3px 12px;border-bottom:1px solid #e4e4e4;
text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
table.kv td{text-align:left;font-family:"DejaVu Sans Mono",monospace;font-size:.9em;word-break:break-all}
table.key td{font-size:1.15em;font-weight:bold}
table.inputs td:nth-child(2),table.inputs td:nth-child(4){text-align:left;font-family:"DejaVu Sans Mono",monospace;
font-size:.9em;word-break:break-all}
figure{margin:10px 0 22px}figure img{max-width:100%;height:auto;border:1px solid #ddd;display:block}
figcaption{font-size:.95em;color:#444;max-width:1200px;margin-top:4px}
figcaption b{color:#000}
.sub{color:#555}
"""


def write(out, st: S.ReportSums, metrics: Metrics | None, *, kind: str, title: str, ranges: dict | None = None,
          training: TrainingRun | None = None, provenance: Provenance | None = None, subtitle: str | None = None,
          client=None):
    """Write the figures, ``sums.npz`` and ``index.html`` into ``out`` (a ``storage.Location``); return the page's
    location. ``kind``: ``model``, ``evaluation`` or ``predictions``; ``ranges``: input name -> ``figures.Range``
    of the training data (the model's domain); ``metrics``: the labelled rows' metrics (None: unlabelled);
    ``subtitle``: which rows these are, when ``kind``'s sentence does not say it; ``client``: draw the figures on
    its workers (in parallel), else in this process."""
    out.mkdir()
    buf = io.BytesIO()
    np.savez_compressed(buf, **st.to_npz())
    (out / SUMS_NPZ).write_bytes(buf.getvalue())
    t0 = time.perf_counter()
    shown = _figures(out, st, metrics, ranges or {}, training, client)
    if provenance is not None:
        provenance = provenance.with_stage("report figures", time.perf_counter() - t0)
    sections = list(dict.fromkeys(s.section for s in shown))
    nav = "".join(f"<a href='#{s.lower()}'>{_esc(s)}</a>" for s in ["Summary", *sections, "Provenance"])
    body = []
    for sec in sections:
        body.append(f"<h2 id='{sec.lower()}'>{_esc(sec)}</h2>")
        body += [f"<figure><img src='{_esc(f.file)}' width='{f.width}' height='{f.height}' alt='{_esc(f.title)}'>"
                 f"<figcaption><b>{_esc(f.title)}.</b> {_esc(f.caption)}</figcaption></figure>"
                 for f in shown if f.section == sec]
    n = st.n_rows
    if metrics is not None:
        key = f"accuracy <b>{metrics.accuracy:.4f}</b> · macro-F1 {metrics.macro_f1:.4f} on {metrics.n:,} objects"
    else:
        pred = st.pred_r.sum(axis=0)
        key = f"{n:,} objects · " + " · ".join(f"{c} {pred[k] / max(n, 1):.1%}" for k, c in enumerate(S.CLASSES))
    key += f" · outside the training domain {st.ood_r.sum() / max(n, 1):.1%}"
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{_esc(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head><body>
<h1>{_esc(title)}</h1><p class="sub">{_esc(subtitle or KINDS[kind])}. {key}</p>
<nav>{nav}</nav>
<h2 id="summary">Summary</h2>{_summary(st, metrics)}
{''.join(body)}
<h2 id="provenance">Provenance</h2>{_provenance(provenance)}
</body></html>
"""
    (out / S.INDEX).write_text(page)
    return out / S.INDEX
