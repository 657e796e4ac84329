"""The report of ``benchmarks/run.py``: targets, tables, the throughput figure, from cached measurements."""

from __future__ import annotations

import datetime as dt
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from common import label
from systems import DESCRIPTION, JOBS, STAGES, SURVEY_BUDGET_S, SURVEY_ROWS


def _ok(r: dict | None) -> bool:
    return bool(r) and "error" not in r and "skipped" not in r and r.get("seconds")


def fit_projection(points: list[tuple[int, float]], rows: int) -> dict:
    """Seconds for ``rows`` from (rows, seconds) measurements: log-log least squares and a linear fit."""
    import numpy as np

    pts = sorted(p for p in points if p[1] > 0)
    if not pts:
        return {}
    n = np.array([p[0] for p in pts], float)
    t = np.array([p[1] for p in pts], float)
    out = {"sizes": [int(x) for x in n]}
    if len(pts) >= 2:
        b, a = np.polyfit(np.log(n), np.log(t), 1)
        out["loglog_slope"] = float(b)
        out["loglog_seconds"] = float(math.exp(a) * rows**b)
        c1, c0 = np.polyfit(n, t, 1)
        out["linear_seconds_per_row"] = float(c1)
        out["linear_intercept_s"] = float(c0)
        out["linear_seconds"] = float(c0 + c1 * rows)
    else:  # one size: its rows/s, held constant
        out["linear_seconds"] = float(t[-1] / n[-1] * rows)
    # the verdict uses the slower of the two extrapolations
    out["seconds"] = max(v for k, v in out.items() if k in ("loglog_seconds", "linear_seconds"))
    return out


def _total_mem(r: dict) -> float:
    return (r.get("client_peak_mb") or 0) + (r.get("workers_peak_mb") or 0)


def evaluate_targets(sizes: list[dict]) -> list[dict]:
    by = {s["rows"]: s["results"] for s in sizes}
    rows_sorted = sorted(by)
    largest = rows_sorted[-1] if rows_sorted else None

    def pick(prefer: int):
        if prefer in by:
            return prefer, ""
        return largest, f" (measured at {label(largest)} rows, not {label(prefer)}: provisional)"

    targets = []
    # 1. train time-to-accuracy vs Spark at 10M
    n, note = pick(10_000_000)
    a, s = by.get(n, {}).get("train/astrodask-parallel"), by.get(n, {}).get("train/spark")
    if _ok(a) and _ok(s):
        speed = s["seconds"] / a["seconds"]
        dacc = a["accuracy"] - s["accuracy"]
        ok = speed >= 2.0 and dacc >= -0.003 and a.get("reached") and True
        targets.append({"target": "train: time to accuracy >= 2x faster than Spark local[2] at 10M rows, "
                                  "accuracy within 0.3 pt", "value": f"{speed:.2f}x faster; test accuracy "
                                  f"{a['accuracy']:.4f} vs Spark {s['accuracy']:.4f} ({100 * dacc:+.2f} pt)"
                                  f"{'' if s.get('reached') else '; Spark did not reach the target'}{note}",
                        "status": "PASS" if ok else "MISS", "rows": n})
    else:
        targets.append({"target": "train: time to accuracy >= 2x faster than Spark at 10M rows",
                        "value": "not measured (needs train/astrodask-parallel and train/spark)", "status": "n/a"})
    # 2. predict rows/s vs Spark and vs raw
    n, note = pick(10_000_000)
    a, s, r = (by.get(n, {}).get(f"predict/{x}") for x in ("astrodask", "spark", "raw"))
    if _ok(a) and (_ok(s) or _ok(r)):
        parts, ok = [], True
        if _ok(s):
            q = a["rows_per_s"] / s["rows_per_s"]
            parts.append(f"{q:.2f}x Spark")
            ok &= q >= 3.0
        else:
            parts.append("Spark not measured")
            ok = False
        if _ok(r):
            q = a["rows_per_s"] / r["rows_per_s"]
            parts.append(f"{q:.2f}x raw pyarrow")
            ok &= q >= 0.6
        targets.append({"target": "predict: rows/s >= 3x Spark and >= 0.6x raw pyarrow read+write",
                        "value": ", ".join(parts) + note, "status": "PASS" if ok else "MISS", "rows": n})
    else:
        targets.append({"target": "predict: rows/s >= 3x Spark and >= 0.6x raw", "value": "not measured",
                        "status": "n/a"})
    # 3. memory at 100M vs 10M
    if 100_000_000 in by and 10_000_000 in by:
        vals, ok, missing = [], True, []
        for job in ("train/astrodask-parallel", "predict/astrodask"):
            big, small = by[100_000_000].get(job), by[10_000_000].get(job)
            if _ok(big) and _ok(small):
                q = _total_mem(big) / max(_total_mem(small), 1e-9)
                cq = big["client_peak_mb"] / max(small["client_peak_mb"], 1e-9)
                vals.append(f"{job}: {q:.2f}x (client {cq:.2f}x)")
                ok &= q <= 1.2
            else:
                missing.append(job)
        status = ("PASS" if ok else "MISS") if vals else "n/a"
        if vals and missing:
            vals.append(f"{', '.join(missing)}: not run at both sizes")
            status += " (partial)"
        targets.append({"target": "peak memory (client + workers) at 100M <= 1.2x that at 10M",
                        "value": "; ".join(vals) or "not measured", "status": status})
    else:
        targets.append({"target": "peak memory at 100M <= 1.2x that at 10M",
                        "value": "needs both 10M and 100M runs", "status": "n/a"})
    # 4. projection of 1.2 billion photometric rows
    pts = [(n, by[n]["predict/astrodask-phot"]["seconds"]) for n in rows_sorted
           if _ok(by[n].get("predict/astrodask-phot"))]
    proj = fit_projection(pts, SURVEY_ROWS)
    if proj:
        how = (f"log-log slope {proj['loglog_slope']:.2f} -> {proj['loglog_seconds'] / 60:.1f} min, linear -> "
               f"{proj['linear_seconds'] / 60:.1f} min" if "loglog_seconds" in proj
               else f"one size ({label(pts[0][0])}), constant rows/s -> {proj['linear_seconds'] / 60:.1f} min")
        targets.append({"target": "projected scoring of 1.2 billion photometric rows on this machine < 30 min",
                        "value": f"{proj['seconds'] / 60:.1f} min ({how}; from {', '.join(label(p[0]) for p in pts)})",
                        "status": "PASS" if proj["seconds"] < SURVEY_BUDGET_S else "MISS", "projection": proj})
    else:
        targets.append({"target": "projected 1.2 billion photometric rows < 30 min", "value": "not measured",
                        "status": "n/a"})
    return targets


def _fmt(x, spec=",.0f", empty="–"):
    return empty if x is None else format(x, spec)


def stage_table(stage: str, sizes: list[dict], target: float) -> list[str]:
    lines = []
    hdr = ["system", "rows", "wall s", "rows/s", "accuracy", "peak client MB", "peak workers MB",
           "rows/s ÷ Spark", "rows/s ÷ raw", "notes"]
    lines.append("| " + " | ".join(hdr) + " |")
    lines.append("|" + "|".join(["---"] + ["---:"] * 8 + ["---"]) + "|")
    any_row = False
    for s in sizes:
        res = s["results"]
        spark, raw = res.get(f"{stage}/spark"), res.get(f"{stage}/raw")
        for st, system, _ in JOBS:
            if st != stage:
                continue
            r = res.get(f"{stage}/{system}")
            if r is None:
                continue
            any_row = True
            name = DESCRIPTION[(stage, system)]
            if "error" in r or "skipped" in r:
                why = r.get("error") or r.get("skipped")
                lines.append(f"| {name} | {label(s['rows'])} | – | – | – | – | – | – | – | "
                             f"{'FAILED: ' if 'error' in r else 'skipped: '}{why} |")
                continue
            notes = []
            if stage == "train":
                if r.get("reached"):
                    if "epochs_to_target" in r:
                        notes.append(f"target at epoch {r['epochs_to_target']} of {r['epochs_run']}")
                    elif "iterations_to_target" in r:
                        notes.append(f"target at {r['iterations_to_target']} iterations")
                    else:
                        notes.append("target reached")
                elif r.get("features") == "photometric":
                    notes.append("no redshift: no target; wall = full run")
                else:
                    notes.append(f"target {target} NOT reached: wall = full run")
                if r.get("full_seconds") and abs(r["full_seconds"] - r["seconds"]) > 0.05:
                    notes.append(f"full run {r['full_seconds']:.1f} s")
                if r.get("cache"):
                    notes.append(f"cache {r['cache']}")
            if r.get("features") and stage == "train" and not str(r["features"]).startswith(("spectro", "photo")):
                notes.append(f"features: {r['features']}")
            if r.get("n_features") and stage == "train":
                notes.append(f"{r['n_features']} features")
            comparable = system not in ("spark", "astrodask-parallel-phot")  # Spark trains on redshift too
            vs_spark = (r["rows_per_s"] / spark["rows_per_s"]) if _ok(spark) and comparable else None
            vs_raw = (r["rows_per_s"] / raw["rows_per_s"]) if _ok(raw) and system != "raw" else None
            acc = r.get("accuracy")
            lines.append(
                f"| {name} | {label(s['rows'])} | {r['seconds']:.1f} | {_fmt(r['rows_per_s'])} | "
                f"{_fmt(acc, '.4f')} | {_fmt(r.get('client_peak_mb'))} | {_fmt(r.get('workers_peak_mb'))} | "
                f"{_fmt(vs_spark, '.2f')} | {_fmt(vs_raw, '.2f')} | {'; '.join(notes)} |")
    return lines if any_row else []


def write_report(sizes: list[dict], args, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    targets = evaluate_targets(sizes)
    info = {"date": dt.datetime.now().isoformat(timespec="seconds"), "machine": common.machine(),
            "versions": common.versions(), "target_accuracy": args.target, "workers": args.workers,
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])}
    doc = {**info, "targets": targets, "sizes": sizes}
    (out / "results.json").write_text(json.dumps(doc, indent=1, default=float))
    m, v = info["machine"], info["versions"]
    md = [
        "# astrodask benchmarks",
        "",
        f"Date: {info['date']}. Machine: {m['nproc']} cores, {m['memory_gb']} GiB memory, {m['cpu']}, {m['os']}, "
        f"Python {m['python']} (1-min load average at report time: {m['load_avg_1m']}).",
        "",
        "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val) + ".",
        "",
        f"Command: `python benchmarks/{info['command']}`. Dask runs a LocalCluster of {args.workers} workers x 1 "
        f"thread; Spark runs local[{args.workers}]. Cluster/session start-up is not timed. Train wall time is the "
        f"time to reach {args.target} accuracy on the id-hash VALID split (see README); the accuracy column is "
        "the final TEST-split accuracy. Ratios are rows/s of the row's system divided by that of Spark or of the "
        "raw pyarrow limit at the same size (> 1: faster).",
        "",
        "## Targets",
        "",
        "| target | measured | status |",
        "|---|---|---|",
        *[f"| {t['target']} | {t['value']} | **{t['status']}** |" for t in targets],
        "",
    ]
    for stage in STAGES:
        tbl = stage_table(stage, sizes, args.target)
        if tbl:
            md += [f"## {stage}", "", *tbl, ""]
    scaling = out / "results_train_scaling.md"
    if scaling.is_file():
        md += ["## train scaling (benchmarks/bench_train_scaling.py)", "",
               *[ln for ln in scaling.read_text().splitlines() if not ln.startswith("# ")], ""]
    md += ["![throughput and peak memory](throughput.png)", ""]
    (out / "results.md").write_text("\n".join(md))
    plot(sizes, out / "throughput.png")
    return doc


def plot(sizes: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(16, 8.5), squeeze=False)
    for col, stage in enumerate(STAGES):
        ax_r, ax_m = axes[0][col], axes[1][col]
        for st, system, _ in JOBS:
            if st != stage:
                continue
            pts = [(s["rows"], s["results"].get(f"{stage}/{system}")) for s in sizes]
            pts = [(n, r) for n, r in pts if _ok(r)]
            if not pts:
                continue
            n = [p[0] for p in pts]
            style = "--" if system in ("raw", "spark") else "-"
            ax_r.plot(n, [p[1]["rows_per_s"] for p in pts], style, marker="o", label=system)
            ax_m.plot(n, [_total_mem(p[1]) for p in pts], style, marker="o", label=system)
        for ax, ylabel in ((ax_r, "rows/s"), (ax_m, "peak memory MB (client + workers)")):
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("rows")
            ax.set_ylabel(ylabel)
            ax.grid(True, which="both", alpha=0.3)
            if ax.lines:
                ax.legend(fontsize=8)
        ax_r.set_title(f"{stage}: throughput" + (" (to target accuracy)" if stage == "train" else ""))
        ax_m.set_title(f"{stage}: peak memory")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ================================================================================================ profile


