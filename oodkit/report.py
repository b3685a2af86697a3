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


def foreign_results(out: Path) -> list:
    """The files of ``out`` named like bench's results that no bench run wrote (its
    results.json is missing, or is not one of bench's): a run would replace them."""
    present = [f for f in RESULT_FILES if (out / f).exists()]
    if not present:
        return []
    try:
        meta = json.loads((out / "results.json").read_text()).get("meta")
        if isinstance(meta, dict) and "status" in meta:  # bench marks every run: running, then complete
            return []
    except (OSError, ValueError, AttributeError):
        pass
    return present


def _means(df: pd.DataFrame, cols) -> pd.DataFrame:
    """The rows, then "mean (real)" over near + far sets and "mean (all)"."""
    rows = df[["ood", *cols]].reset_index(drop=True)
    extra = []
    real = df[df["group"] != "synthetic"] if "group" in df else df
    if len(real):  # near-only runs too: the row every table has
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
    note = threshold_note(df)
    if note:
        lines.append(f"\n{note}")
    return "\n".join(lines) + "\n"


def threshold_note(df: pd.DataFrame) -> str | None:
    """Why the threshold columns are empty, when they all are (too few ID test images)."""
    blank = [c for c in THRESHOLD_COLUMNS if c in df and df[c].isna().all()]
    if not blank or "n_id" not in df:
        return None
    from .conformal import min_calibration_size

    return (f"{' and '.join(blank)}: nan, because {int(df['n_id'].iloc[0])} ID test image(s) are too few: a "
            "threshold at 0.95, cross-calibrated on the ID test images, needs two halves of at least "
            f"{min_calibration_size(0.95)} (see oodkit.conformal.cross_calibrated_rates)")


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
    atomic_write(out / "results.json", json.dumps(_json_safe({"meta": meta, "results": rows}), indent=1,
                                                  default=float, allow_nan=False).encode())


def _json_safe(v):
    """``v`` with NaN and infinities as null: JSON has no such numbers, and strict readers
    (jq, JavaScript) refuse the file that writes them."""
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    if isinstance(v, (float, np.floating)):
        return float(v) if np.isfinite(v) else None
    return v


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


def _panel_title(ax, text: str) -> None:
    """A panel's title at 9 pt, smaller when long, so that a long model file name does not
    run into the next panel (about 52 characters fit a panel at 9 pt)."""
    ax.set_title(text, fontsize=max(6.0, min(9.0, 9.0 * 52 / len(text))))


def _savefig(plt, fig, path: Path, legend_rows: int = 0) -> Path:
    """The grid laid out by fixed margins in inches (room for the title, the axis labels
    and ``legend_rows`` rows of a figure legend below): the same look as tight_layout
    without its extra drawing passes, a third of the plotting time."""
    w, h = fig.get_size_inches()
    bottom = 0.55 + 0.2 * legend_rows
    fig.subplots_adjust(left=0.75 / w, right=1 - 0.2 / w, top=1 - 0.75 / h, bottom=bottom / h, wspace=0.3, hspace=0.45)
    buf = io.BytesIO()
    fig.savefig(buf, dpi=100, format="png")
    plt.close(fig)
    return atomic_write(path, buf.getvalue())


def _grid(plt, n: int, title: str, panel=(4.6, 3.6), extra_rows: int = 0):
    """A figure of ``n`` panels, at most three a row, with an overall title."""
    cols = min(3, n)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(panel[0] * cols, panel[1] * rows + 0.6 + 0.2 * extra_rows),
                             squeeze=False)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(title, fontsize=11, y=1 - 0.12 / fig.get_size_inches()[1], va="top")
    return fig, list(axes.flat)[:n]


def plot_roc(pairs: dict, path: Path, title: str = "", meta: dict | None = None) -> Path:
    """One panel per detector, laid out as a grid under one title: ROC curves with the
    false-positive rate on a log axis (where detectors differ; a linear axis puts every
    good curve in the corner), one curve per OOD set with its AUROC in the legend, the
    point where 95 % of OOD is caught marked, and the chance line. OOD is the positive
    class. ``pairs[detector] = [(ood, id_scores, ood_scores, id_key), ...]``."""
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = _plt()
    colours, dets = _colours(pairs), list(pairs)
    fig, axes = _grid(plt, len(dets), f"ROC curves, OOD positive: {title}")
    for ax, det in zip(axes, dets):
        n_id = max(len(p[1]) for p in pairs[det])
        floor = 1.0 / n_id / 2
        for name, s_id, s_ood, *_ in pairs[det]:
            y = np.r_[np.zeros(len(s_id)), np.ones(len(s_ood))]
            s = -np.r_[s_id, s_ood]
            fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
            k = np.searchsorted(tpr, 0.95, side="left")
            # the corners only (collinear points dropped): the same curve, a fraction of the drawing
            corner_fpr, corner_tpr, _ = roc_curve(y, s, drop_intermediate=True)
            ax.plot(np.maximum(corner_fpr, floor), corner_tpr, color=colours[name], lw=1.3,
                    label=f"{name} ({roc_auc_score(y, s):.3f})")
            ax.plot(max(fpr[k], floor), tpr[k], "o", color=colours[name], ms=4)
        grid = np.logspace(np.log10(floor), 0, 100)
        ax.plot(grid, grid, color="0.6", lw=0.8, ls="--", label="chance")
        ax.axhline(0.95, color="0.75", lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.set_xlim(floor, 1)
        ax.set_ylim(0, 1.01)
        _panel_title(ax, f"{det}{_model_of(meta, det)}")
        ax.set(xlabel="ID flagged (false positive rate, log)", ylabel="OOD caught (true positive rate)")
        ax.legend(fontsize=7, loc="lower right", title="OOD (AUROC); dot: 95 % caught", title_fontsize=7)
    return _savefig(plt, fig, path)


def _asinh_axis(v, centre, scale):
    return np.arcsinh((np.asarray(v, dtype=np.float64) - centre) / scale)


def plot_histograms(pairs: dict, path: Path, title: str = "", meta: dict | None = None) -> Path:
    """Per detector (a grid under one title): the ID test scores (filled) at each
    alignment size they were compared at and each OOD set (outline) in its own colour, on
    an arcsinh axis centred on the ID median in units of the ID spread, so that sets
    orders of magnitude away stay on the plot beside the ID bulk. The dashed line is the
    threshold that accepts 95 % of these ID images (conformal rank); left of it = flagged."""
    from .conformal import conformal_threshold

    plt = _plt()
    colours, dets = _colours(pairs), list(pairs)
    n_ids = len({key[0] if key else "ID" for det in dets for _, _, _, *key in pairs[det]})
    n_sets = n_ids + len(colours) + 1  # the legend below: ID sets, OOD sets, the threshold
    legend_rows = int(np.ceil(n_sets / 4))
    fig, axes = _grid(plt, len(dets), f"Scores (higher = more in-distribution): {title}", extra_rows=legend_rows)
    units = (meta or {}).get("units", {})
    for ax, det in zip(axes, dets):
        ids = {}
        for name, s_id, s_ood, *key in pairs[det]:
            ids.setdefault(key[0] if key else "ID", s_id)
        sets = [(f"{k} (ID)", v, "0.35", True) for k, v in ids.items()]
        sets += [(name, s_ood, colours[name], False) for name, _, s_ood, *_ in pairs[det]]
        idv = np.concatenate([v for _, v, _, filled in sets if filled])
        centre = float(np.median(idv))
        q25, q75 = np.percentile(idv, [25, 75])
        scale = float(q75 - q25) or float(np.std(idv)) or 1.0
        allv = np.concatenate([_asinh_axis(v, centre, scale) for _, v, _, _ in sets])
        allv = allv[np.isfinite(allv)]
        bins = np.linspace(allv.min(), allv.max() + 1e-9, 70)
        for i, (name, v, col, filled) in enumerate(sets):
            ax.hist(_asinh_axis(v, centre, scale), bins=bins, color=col, histtype="stepfilled" if filled else "step",
                    alpha=0.3 if filled else 0.95, lw=1.3, label=name, hatch="//" if filled and i else None)
        first_id = next(iter(ids.values()))
        if len(first_id) >= 19:
            cut = _asinh_axis(conformal_threshold(first_id, 0.95), centre, scale)
            ax.axvline(cut, color="k", ls="--", lw=1, label="threshold (95 % of ID kept)")
        ax.set_yscale("symlog", linthresh=1)
        _panel_title(ax, f"{det}{_model_of(meta, det)} [{units.get(det, 'a.u.')}]")
        ax.set(xlabel="asinh((score - ID median) / ID IQR)", ylabel="images per bin (symlog)")
    # one legend for the grid (the sets and colours are the same in every panel)
    handles, labels = max((ax.get_legend_handles_labels() for ax in axes), key=lambda hl: len(hl[1]))
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8, frameon=False)
    return _savefig(plt, fig, path, legend_rows=int(np.ceil(len(labels) / 4)))
