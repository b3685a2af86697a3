"""What a faster arithmetic does to each shipped model's answers, measured side by side in
one run: every model scores its ID test images and an OOD set with its shipped detectors
in full fp32 and in each other precision of ``oodkit.representation.PRECISIONS``.

    python benchmarks/precision_check.py --data-root DIR [--n 1000] [--device cuda] [--out DIR]

Per model and precision: the bits/dim drift against fp32 (mean and largest |difference|),
the rank agreement (Spearman) of the ``loglik`` and default ``fused`` scores, the fused
AUROC and its change, the share of fresh ID images the shipped threshold accepts, and
images/s of the forward pass (each precision timed in the same run). On a CPU without
native bf16 (AVX-512 BF16 / AMX) bf16 is emulated: its answers are the ones a GPU's bf16
gives up to kernel order, its speed is not. The machine and thread count are recorded.
Writes ``precision.json`` and ``precision.md``.
"""
import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from oodkit.data import load_dataset
from oodkit.metrics import auroc
from oodkit.pipeline import Flow, align
from oodkit.representation import PRECISIONS
from oodkit.scoring import detector_scorer

# (pretrained name, ID test set, OOD set of the same image size)
PAIRS = [
    ("digits-0to4", "digits-0to4", "digits-5to9"),
    ("fashionmnist", "fashionmnist", "mnist"),
    ("mnist", "mnist", "fashionmnist"),
    ("fashionmnist[0-4]", "fashionmnist[0-4]", "fashionmnist[5-9]"),
    ("cifar10[0-5]", "cifar10[0-5]", "cifar10[6-9]"),
    ("cifar10", "cifar10", "noise"),
]


def _subset(ds, n, seed=0):
    keep = np.sort(np.random.default_rng(seed).choice(len(ds), min(n, len(ds)), replace=False))
    return ds.subset(keep)


def _run(scorer, x, precision, batch_size, device):
    """Scores and bits/dim of ``x`` (aligned) in ``precision``, and the pass's images/s."""
    flow = Flow(batch_size, device, precision=precision)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    rep = flow.representation(scorer.model, x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    rate = len(x) / (time.perf_counter() - t0)
    scores = flow.score(scorer.detectors, x)
    return scores, rep.bpd, rate


def check(name, id_set, ood_set, args, device):
    scorer = detector_scorer(name, device=device)
    ids = _subset(load_dataset(id_set, "test", args.data_root), args.n)
    ood = _subset(load_dataset(ood_set, "test", args.data_root, like=ids), args.n, seed=1)
    x_id, x_ood = (align(d.tensor(), scorer.model) for d in (ids, ood))
    rows, ref = [], None
    for precision in args.precisions:  # warm-up: kernels, allocator, cuDNN plans, outside the timings
        Flow(args.batch_size, device, precision=precision).representation(scorer.model, x_id[:args.batch_size])
    for precision in args.precisions:
        s_id, bpd, rate = _run(scorer, x_id, precision, args.batch_size, device)
        s_ood, _, _ = _run(scorer, x_ood, precision, args.batch_size, device)
        fused = "fused" if "fused" in s_id else next(iter(s_id))
        row = {"model": name, "pair": f"{id_set} vs {ood_set}", "precision": precision, "images_per_s": rate,
               "bpd_mean": float(bpd.mean()), f"auroc_{fused}": auroc(s_id[fused], s_ood[fused]),
               "id_accepted": float(np.mean(s_id[fused] >= scorer.detectors[fused].offset_))}
        if ref is None:
            ref = (s_id, s_ood, bpd, row)
        else:
            r_id, r_ood, r_bpd, r_row = ref
            row.update(bpd_drift_mean=float(np.abs(bpd - r_bpd).mean()), bpd_drift_max=float(np.abs(bpd - r_bpd).max()),
                       auroc_change=row[f"auroc_{fused}"] - r_row[f"auroc_{fused}"],
                       speed_vs_fp32=rate / r_row["images_per_s"])
            for det in ("loglik", fused):
                both = np.r_[s_id[det], s_ood[det]], np.r_[r_id[det], r_ood[det]]
                row[f"spearman_{det}"] = float(spearmanr(*both)[0])
        rows.append(row)
        print({k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
    return rows


def cpu_name() -> str:
    """The CPU's model name (speeds are read against it)."""
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def _markdown(rows, meta) -> str:
    cols = ["model", "pair", "precision", "bpd_mean", "bpd_drift_mean", "bpd_drift_max", "spearman_loglik",
            "spearman_fused", "auroc_fused", "auroc_change", "id_accepted", "images_per_s", "speed_vs_fp32"]
    out = [f"# Precision check ({meta['device']}, {meta['threads']} threads, {meta['cpu']}, torch {meta['torch']})",
           "", f"{meta['n']} ID test and {meta['n']} OOD images per model; shipped detectors (fitted in fp32).", "",
           "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c, r.get("auroc_upright") if c == "auroc_fused" else "")
            cells.append(f"{v:.4g}" if isinstance(v, float) else str(v))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=os.environ.get("OODKIT_DATA"))
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--precisions", default=",".join(PRECISIONS), help="fp32 first: the reference")
    ap.add_argument("--names", default=None, help="comma-separated pretrained names (default: all)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "precision")
    args = ap.parse_args()
    args.precisions = args.precisions.split(",")
    device = torch.device(args.device)
    if device.type == "cpu":  # TF32 is a CUDA setting: on a CPU it is fp32 again
        args.precisions = [p for p in args.precisions if p != "tf32"]
    rows = []
    for name, id_set, ood_set in PAIRS:
        if args.names and name not in args.names.split(","):
            continue
        rows += check(name, id_set, ood_set, args, device)
    cpu = cpu_name()
    meta = {"device": str(device), "threads": torch.get_num_threads(), "cpu": cpu, "torch": torch.__version__,
            "n": args.n, "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "precision.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    (args.out / "precision.md").write_text(_markdown(rows, meta))
    print(_markdown(rows, meta))


if __name__ == "__main__":
    main()
