"""Benchmark reports: console and Markdown tables, ROC curves and score histograms."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .metrics import METRICS

__all__ = ["console_table", "markdown_table", "plot_roc", "plot_histograms"]

METRIC_COLUMNS = list(METRICS)


def _with_means(df: pd.DataFrame) -> pd.DataFrame:
    rows = df[["ood", *METRIC_COLUMNS]].copy()
    mean = rows[METRIC_COLUMNS].mean().to_frame().T
    mean.insert(0, "ood", "mean")
    return pd.concat([rows, mean], ignore_index=True)


def console_table(df: pd.DataFrame) -> str:
    """One block per detector: rows are OOD sets (and their mean), columns the metrics."""
    out = []
    for det, block in df.groupby("detector", sort=False):
        out.append(f"[{det}]  in-distribution: {block['id'].iloc[0]}")
        out.append(_with_means(block).to_string(index=False, float_format=lambda v: f"{v:.4f}"))
        out.append("")
    return "\n".join(out).rstrip()


def markdown_table(df: pd.DataFrame) -> str:
    """AUROC per OOD set (rows) and detector (columns), then the full metrics per detector."""
    lines = []
    pivot = df.pivot(index="ood", columns="detector", values="auroc").reindex(
        index=list(dict.fromkeys(df["ood"])), columns=list(dict.fromkeys(df["detector"]))
    )
    pivot.loc["mean"] = pivot.mean()
    lines.append("AUROC (OOD positive; in-distribution: " + ", ".join(dict.fromkeys(df["id"])) + ")\n")
    lines.append("| ood | " + " | ".join(pivot.columns) + " |")
    lines.append("|---|" + "---|" * len(pivot.columns))
    for ood, row in pivot.iterrows():
        lines.append(f"| {ood} | " + " | ".join(f"{v:.4f}" for v in row) + " |")
    for det, block in df.groupby("detector", sort=False):
        lines.append(f"\n**{det}**\n")
        t = _with_means(block)
        lines.append("| ood | " + " | ".join(METRIC_COLUMNS) + " |")
        lines.append("|---|" + "---|" * len(METRIC_COLUMNS))
        for _, row in t.iterrows():
            lines.append(f"| {row['ood']} | " + " | ".join(f"{row[c]:.4f}" for c in METRIC_COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _grid(plt, pairs, height):
    dets = list(pairs)
    cols = min(3, len(dets))
    rows = int(np.ceil(len(dets) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, height * rows), squeeze=False)
    return fig, axes, dets


def _save(plt, fig, axes, used: int, path: Path) -> Path:
    for ax in list(axes.flat)[used:]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_roc(pairs: dict, path: Path) -> Path:
    """ROC curves, one panel per detector, one curve per OOD set; OOD is the positive
    class. ``pairs[detector] = [(ood_name, id_scores, ood_scores), ...]``."""
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = _plt()
    fig, axes, dets = _grid(plt, pairs, 3.8)
    for ax, det in zip(axes.flat, dets):
        for name, s_id, s_ood in pairs[det]:
            y = np.r_[np.zeros(len(s_id)), np.ones(len(s_ood))]
            s = -np.r_[s_id, s_ood]
            fpr, tpr, _ = roc_curve(y, s)
            ax.plot(fpr, tpr, label=f"{name} ({roc_auc_score(y, s):.3f})")
        ax.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls="--")
        ax.set(title=det, xlabel="false positive rate (ID flagged)", ylabel="true positive rate (OOD caught)")
        ax.legend(fontsize=7, loc="lower right")
    return _save(plt, fig, axes, len(dets), path)


def plot_histograms(pairs: dict, id_name: str, path: Path) -> Path:
    """Score histograms per detector: the ID test set against each OOD set."""
    plt = _plt()
    fig, axes, dets = _grid(plt, pairs, 3.4)
    for ax, det in zip(axes.flat, dets):
        sets = {id_name: pairs[det][0][1], **{name: s for name, _, s in pairs[det]}}
        allv = np.concatenate(list(sets.values()))
        lo, hi = np.percentile(allv, [0.5, 99.5])
        bins = np.linspace(lo, hi if hi > lo else lo + 1, 50)
        for name, s in sets.items():
            ax.hist(np.clip(s, lo, hi), bins=bins, density=True, histtype="step" if name != id_name else "stepfilled",
                    alpha=0.35 if name == id_name else 0.9, label=name + (" (ID)" if name == id_name else ""))
        ax.set(title=det, xlabel="score (higher = more in-distribution)", ylabel="density")
        ax.legend(fontsize=7)
    return _save(plt, fig, axes, len(dets), path)
