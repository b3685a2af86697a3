"""Redraw roc.png and histograms.png of committed benchmark runs from their own
scores.npz and results.json (no network pass: the plots change, the numbers cannot).

    python benchmarks/replot.py [benchmarks/results/RUN ...]   (default: every run folder)
"""
import json
import sys
from pathlib import Path

import numpy as np

from oodkit.report import plot_histograms, plot_roc


def pairs_of(folder: Path) -> tuple:
    doc = json.loads((folder / "results.json").read_text())
    meta = doc["meta"]
    with np.load(folder / "scores.npz") as z:
        scores = {k: z[k] for k in z.files}
    pairs = {}
    for row in doc["results"]:
        det, ood = row["detector"], row["ood"]
        # the ID scores at the pair's alignment: keyed NAME@Npx when aligned below native size
        id_key = f"{meta['id']}@{meta['transform'][ood]['align_px']}px"
        if f"{det}/{id_key}" not in scores:
            id_key = meta["id"]
        pairs.setdefault(det, []).append((ood, scores[f"{det}/{id_key}"], scores[f"{det}/{ood}"], id_key))
    return pairs, meta


def main(folders):
    for folder in folders:
        if json.loads((folder / "results.json").read_text())["meta"].get("status") != "complete":
            print(f"skipped {folder}: its run is not complete")
            continue
        pairs, meta = pairs_of(folder)
        title = f"ID: {meta['id']}"
        plot_roc(pairs, folder / "roc.png", title, meta)
        plot_histograms(pairs, folder / "histograms.png", title, meta)
        print(f"redrew {folder}")


if __name__ == "__main__":
    args = [Path(a) for a in sys.argv[1:]]
    main(args or sorted(p.parent for p in Path("benchmarks/results").glob("*/results.json")))
