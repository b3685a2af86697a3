"""One table over every committed benchmark: for each result folder (one in-distribution
set and its model) and each detector, the AUROC on the worst real OOD set (near or far)
and, beside it, on the worst synthetic set; the model and its step come from each run's
provenance, with a note where a run used a pretrained model that has since been replaced
(its SHA-256 differs from the installed one) or the format-1 `fused` (kNN features).
Folders whose results.json is not ``complete`` are listed as such.

    python benchmarks/summary.py [benchmarks/results] > benchmarks/results/summary.md
"""
import json
import sys
from pathlib import Path

from oodkit.detectors import TABLE
from oodkit.pretrained import list_models

# detector formats whose scores changed meaning (version 2: fused read the features by their
# Gaussian score; version 3: the features became the pooled decoder output). Version 4 only
# added calibration scores to detector files; no score changed.
CHANGED_SINCE = {2: {"fused"}, 3: {"features", "features-gauss", "fused"}}

ORDER = list(TABLE)  # the registry's order; detectors a run did not use are left out


def worst(rows, groups):
    rows = [r for r in rows if r["group"] in groups]
    if not rows:
        return ""
    r = min(rows, key=lambda r: r["auroc"])
    return f"{r['auroc']:.4f} ({r['ood']})"


def main(root: Path) -> None:
    runs = []
    for f in sorted(root.glob("*/results.json")):
        doc = json.loads(f.read_text())
        runs.append((f.parent.name, doc["meta"], doc["results"]))
    detectors = [d for d in ORDER if any(r["detector"] == d for _, _, rows in runs for r in rows)]
    installed = {m["name"]: m["sha256"] for m in list_models()}

    def notes(meta):
        out = [f"{m['path']}: replaced since" for m in meta["models"]
               if m["path"] in installed and m.get("sha256") not in (None, installed[m["path"]])]
        fmt = meta.get("detector_format", 1)
        stale = {d for v, scores in CHANGED_SINCE.items() if v > fmt for d in scores} & set(meta.get("detectors", []))
        if stale:
            out.append(f"{', '.join(sorted(stale))} of detector format {fmt} (changed since)")
        return "; ".join(out)
    print("Worst real OOD set (near or far) per detector and run: AUROC, OOD positive (set in brackets).")
    print("Every folder's own results.md has each set with 95 % intervals.\n")
    print("| run | ID | model (step) | " + " | ".join(detectors) + " | notes |")
    print("|---|---|---|" + "---|" * len(detectors) + "---|")
    for name, meta, rows in runs:
        if meta.get("status") != "complete":
            print(f"| {name} | {meta.get('id')} | (unfinished run) |" + " |" * (len(detectors) + 1))
            continue
        models = ", ".join(f"{Path(m['path']).name} ({m.get('train_steps')})" for m in meta["models"])
        cells = [worst([r for r in rows if r["detector"] == d], {"near", "far"}) for d in detectors]
        print(f"| {name} | {meta['id']} | {models} | " + " | ".join(cells) + f" | {notes(meta)} |")
    print("\nWorst synthetic set (noise, constant) per detector and run:\n")
    print("| run | " + " | ".join(detectors) + " |")
    print("|---|" + "---|" * len(detectors))
    for name, meta, rows in runs:
        if meta.get("status") == "complete":
            cells = [worst([r for r in rows if r["detector"] == d], {"synthetic"}) for d in detectors]
            print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results"))
