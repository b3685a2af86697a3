"""Benchmark reports: console and Markdown tables with bootstrap intervals, the results
files (each written atomically), ROC curves and score histograms.

A reader tells a finished run from an unfinished one by ``results.json``'s
``meta.status`` ("complete" or "running"); a run starting in an old output folder first
removes the old run's files, so the two never mix.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd

from .atomic import atomic_write
from .metrics import METRICS

__all__ = ["console_table", "markdown_table", "plot_roc", "plot_histograms", "write_results", "RESULT_FILES"]

METRIC_COLUMNS = list(METRICS)
# what the bench's calibrated threshold does (oodkit.conformal.cross_calibrated_rates)
THRESHOLD_COLUMNS = ["id_accepted@0.95", "ood_caught@0.95"]


def _columns(df: pd.DataFrame) -> list:
    return METRIC_COLUMNS + [c for c in THRESHOLD_COLUMNS if c in df]
RESULT_FILES = ("results.csv", "results.md", "results.json", "scores.npz", "roc.png", "histograms.png")


def _means(df: pd.DataFrame, cols) -> pd.DataFrame:
    """The rows, then "mean (real)" over near + far sets and "mean (all)"."""
    rows = df[["ood", *cols]].reset_index(drop=True)
    extra = []
    real = df[df["group"] != "synthetic"] if "group" in df else df
    if len(real) and len(real) < len(df):
        extra.append(("mean (real)", real[cols].mean()))
    extra.append(("mean (all)", df[cols].mean()))
    for label, vals in extra:
        rows.loc[len(rows)] = [label, *vals.tolist()]
    return rows


def _fmt(row, metric) -> str:
    v = row[metric]
    lo, hi = row.get(f"{metric}_lo"), row.get(f"{metric}_hi")
    if lo is None or pd.isna(lo):
        return f"{v:.4f}"
    return f"{v:.4f} [{lo:.4f}, {hi:.4f}]"


def console_table(df: pd.DataFrame) -> str:
    """One block per detector: rows are OOD sets (and the means), columns the metrics."""
    out = []
    for det, block in df.groupby("detector", sort=False):
        out.append(f"[{det}]  in-distribution: {block['id'].iloc[0]}")
        t = _means(block, _columns(block))
        out.append(t.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
        worst = block[block.get("group", "far") != "synthetic"] if "group" in block else block
        if len(worst):
            w = worst.loc[worst["auroc"].idxmin()]
            out.append(f"worst real OOD set: {w['ood']} (AUROC {_fmt(w, 'auroc')})")
        out.append("")
    return "\n".join(out).rstrip()


def markdown_table(df: pd.DataFrame, meta: dict | None = None) -> str:
    """AUROC per OOD set (rows) and detector (columns) with 95 % intervals, the means over
    real sets and over all, then every metric per detector."""
    lines = []
    oods, dets = list(dict.fromkeys(df["ood"])), list(dict.fromkeys(df["detector"]))
    groups = dict(zip(df["ood"], df["group"])) if "group" in df else {}
    n = dict(zip(df["ood"], df["n_ood"]))
    head = "AUROC, OOD positive; in-distribution: " + ", ".join(dict.fromkeys(df["id"]))
    if "n_id" in df:
        head += f" ({int(df['n_id'].iloc[0])} test images)"
    if "auroc_lo" in df:
        head += "; [95 % bootstrap interval]"
    lines.append(head + "\n")
    lines.append("| ood | group | n | " + " | ".join(dets) + " |")
    lines.append("|---|---|---|" + "---|" * len(dets))
    by = {(r["ood"], r["detector"]): r for _, r in df.iterrows()}
    for o in oods:
        cells = [_fmt(by[o, d], "auroc") if (o, d) in by else "" for d in dets]
        lines.append(f"| {o} | {groups.get(o, '')} | {n[o]} | " + " | ".join(cells) + " |")
    piv = df.pivot(index="ood", columns="detector", values="auroc").reindex(index=oods, columns=dets)
    real = [o for o in oods if groups.get(o) != "synthetic"]
    if real and len(real) < len(oods):
        lines.append("| **mean (real)** | | | " + " | ".join(f"{v:.4f}" for v in piv.loc[real].mean()) + " |")
        lines.append("| **worst (real)** | | | " + " | ".join(f"{v:.4f}" for v in piv.loc[real].min()) + " |")
    lines.append("| **mean (all)** | | | " + " | ".join(f"{v:.4f}" for v in piv.mean()) + " |")
    if meta and len(set(meta.get("detector_models", {}).values())) > 1:
        per = {}
        for d, p in meta["detector_models"].items():
            per.setdefault(p, []).append(d)
        lines.append("\nModels: " + "; ".join(f"{', '.join(ds)} on `{Path(p).name}`" for p, ds in per.items()))
    for det, block in df.groupby("detector", sort=False):
        lines.append(f"\n**{det}**" + (f" ({meta['units'].get(det)})" if meta and meta.get("units") else "") + "\n")
        cols = _columns(block)
        lines.append("| ood | " + " | ".join(cols) + " |")
        lines.append("|---|" + "---|" * len(cols))
        for _, row in block.iterrows():
            lines.append(f"| {row['ood']} | " + " | ".join(_fmt(row, c) for c in cols) + " |")
        for label, vals in _means(block, cols).iloc[len(block):].iterrows():
            lines.append(f"| {vals['ood']} | " + " | ".join(f"{vals[c]:.4f}" for c in cols) + " |")
    return "\n".join(lines) + "\n"


def write_results(out: Path, rows, scores, pairs, meta: dict, plots: bool = True, clean: bool = False) -> None:
    """results.csv / .md / .json and scores.npz (and with ``plots`` roc.png and
    histograms.png), each atomically. ``clean`` first removes an old run's files."""
    out = Path(out)
    if clean:  # results.json first: an old "complete" must never outlive the files it describes
        for name in ("results.json", *[f for f in RESULT_FILES if f != "results.json"]):
            (out / name).unlink(missing_ok=True)
    df = pd.DataFrame(rows)
    if len(df):
        atomic_write(out / "results.csv", df.to_csv(index=False).encode())
        atomic_write(out / "results.md", markdown_table(df, meta).encode())
        buf = io.BytesIO()
        np.savez_compressed(buf, **{f"{d}/{s}": v for d, per in scores.items() for s, v in per.items()})
        atomic_write(out / "scores.npz", buf.getvalue())
    # results.json last: "complete" appears only once everything it describes is on disk
    if plots and pairs:
        title = f"ID: {meta['id']}"
        plot_roc(pairs, out / "roc.png", title, meta)
        plot_histograms(pairs, out / "histograms.png", title, meta)
    atomic_write(out / "results.json", json.dumps({"meta": meta, "results": rows}, indent=1, default=float).encode())


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colours(pairs: dict) -> dict:
    """One colour per OOD set, the same in every panel and figure."""
    names = list(dict.fromkeys(o for per in pairs.values() for o, *_ in per))
    cmap = ["tab:red", "tab:blue", "tab:green", "tab:purple", "tab:orange", "tab:brown", "tab:pink", "tab:olive",
            "tab:cyan", "tab:gray"]
    return {n: cmap[i % len(cmap)] for i, n in enumerate(names)}


def _model_of(meta, det) -> str:
    p = (meta or {}).get("detector_models", {}).get(det)
    return f" on {Path(p).name}" if p else ""


def _savefig(plt, fig, path: Path) -> Path:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, dpi=100, format="png")
    plt.close(fig)
    return atomic_write(path, buf.getvalue())


def plot_roc(pairs: dict, path: Path, title: str = "", meta: dict | None = None) -> Path:
    """Two panels per detector: the ROC curve (linear FPR) and the low-FPR region (log
    FPR), one curve per OOD set with the FPR95 point (95 % of OOD caught) marked. OOD is
    the positive class. ``pairs[detector] = [(ood, id_scores, ood_scores, id_key), ...]``."""
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = _plt()
    colours, dets = _colours(pairs), list(pairs)
    fig, axes = plt.subplots(len(dets), 2, figsize=(9, 3.4 * len(dets)), squeeze=False)
    for (ax, axl), det in zip(axes, dets):
        for name, s_id, s_ood, *_ in pairs[det]:
            y = np.r_[np.zeros(len(s_id)), np.ones(len(s_ood))]
            s = -np.r_[s_id, s_ood]
            fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
            k = np.searchsorted(tpr, 0.95, side="left")
            for a in (ax, axl):
                a.plot(fpr, tpr, color=colours[name], lw=1.3, label=f"{name} ({roc_auc_score(y, s):.3f})")
                a.plot(fpr[k], tpr[k], "o", color=colours[name], ms=4)
        ax.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls="--")
        ax.set_title(f"{title}\n{det}{_model_of(meta, det)}", fontsize=9)
        ax.set(xlabel="false positive rate (ID flagged)", ylabel="true positive rate (OOD caught)")
        ax.legend(fontsize=7, loc="lower right", title="OOD (AUROC); dot: 95 % TPR", title_fontsize=7)
        n_id = max(len(p[1]) for p in pairs[det])
        axl.set_xscale("log")
        axl.set_xlim(1.0 / n_id / 2, 1)
        axl.set(title="low false-positive region (log scale)", xlabel="false positive rate (log)",
                ylabel="true positive rate")
        axl.axhline(0.95, color="0.7", lw=0.8, ls=":")
    return _savefig(plt, fig, path)


def plot_histograms(pairs: dict, path: Path, title: str = "", meta: dict | None = None) -> Path:
    """Per detector: the ID test scores (filled) at each alignment size they were compared
    at, and each OOD set (outline) in its own colour. The axis spans the ID scores
    (0.5 - 99.5 %) and one ID width either side; scores beyond it are not piled into the
    edge bins but counted in the legend."""
    plt = _plt()
    colours, dets = _colours(pairs), list(pairs)
    cols = min(3, len(dets))
    rows = int(np.ceil(len(dets) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.8 * cols, 3.6 * rows), squeeze=False)
    units = (meta or {}).get("units", {})
    for ax, det in zip(axes.flat, dets):
        ids = {}
        for name, s_id, s_ood, *key in pairs[det]:
            ids.setdefault(key[0] if key else "ID", s_id)
        sets = [(f"{k} (ID)", v, "0.35", True) for k, v in ids.items()]
        sets += [(name, s_ood, colours[name], False) for name, _, s_ood, *_ in pairs[det]]
        # the axis frames the ID scores and their surroundings (one ID width either side):
        # OOD sets far away are counted in the legend rather than squeezing the ID
        idv = np.concatenate([v for _, v, _, filled in sets if filled])
        lo, hi = np.percentile(idv, [0.5, 99.5])
        width = hi - lo if hi > lo else 1.0
        allv = np.concatenate([v for _, v, _, _ in sets])
        lo, hi = max(lo - width, allv.min()), min(hi + width, allv.max())
        pad = 0.02 * (hi - lo)
        bins = np.linspace(lo - pad, hi + pad, 60)
        for i, (name, v, col, filled) in enumerate(sets):
            out = int(((v < bins[0]) | (v > bins[-1])).sum())
            label = name + (f" ({out} off-axis)" if out else "")
            ax.hist(v[(v >= bins[0]) & (v <= bins[-1])], bins=bins, density=False, color=col,
                    histtype="stepfilled" if filled else "step", alpha=0.3 if filled else 0.95,
                    lw=1.3, label=label, hatch="//" if filled and i else None)
        ax.set_title(f"{title}\n{det}{_model_of(meta, det)}", fontsize=9)
        ax.set(xlabel=f"score, {units.get(det, 'a.u.')} (higher = more in-distribution)", ylabel="images per bin")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(dets):]:
        ax.axis("off")
    return _savefig(plt, fig, path)
