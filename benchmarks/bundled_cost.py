"""What a new user's first score costs with the detectors shipped beside a pretrained
model, measured side by side in one run (issue 22):

    python benchmarks/bundled_cost.py --data-root DIR [--model fashionmnist --ood mnist] [--out DIR]

* ``oodkit score --model M --data OOD`` run as a user runs it (a fresh process: imports,
  model and bundled statistics loaded and verified, data read, forward passes, scores,
  CSV), against the bare forward passes of the same images in this process (the floor);
* the same command on the ID test split, and the AUROC of every detector between the two
  CSVs, beside the committed bench run of the same model (its statistics fitted on 10,000
  training images) to show what the 5,000-image subsample behind the shipped statistics
  changes;
* what fitting the statistics on the whole training split would have cost instead, from
  the forward rate just measured (the old behaviour of ``oodkit score --model``).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from oodkit import load_dataset, load_model
from oodkit.metrics import auroc
from oodkit.pipeline import align
from oodkit.pretrained import list_models
from oodkit.representation import represent


def cli_seconds(args, env) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "oodkit", *args], check=True, env=env, capture_output=True)
    return time.perf_counter() - t0


def forward_seconds(model, x, batch_size=256) -> float:
    t0 = time.perf_counter()
    represent(model, x, batch_size, cache=None)
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=os.environ.get("OODKIT_DATA"))
    ap.add_argument("--model", default="fashionmnist")
    ap.add_argument("--ood", default="mnist")
    ap.add_argument("--committed", type=Path, default=Path("benchmarks/results/fashionmnist-vs-mnist/results.csv"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/bundled"))
    ap.add_argument("--repeats", type=int, default=3, help="alternating runs of the command and the bare passes")
    args = ap.parse_args()
    rec = next(r for r in list_models() if r["name"] == args.model)
    id_name, env = rec["dataset"], dict(os.environ)
    model = load_model(args.model)
    x = align(load_dataset(args.ood, "test", args.data_root).tensor(), model)
    forward_seconds(model, x[:512])  # warm-up: oneDNN builds its kernels on first use
    # the command and the bare passes alternate, so that the machine's load hits both alike
    runs = {"cli": [], "forward": []}
    with tempfile.TemporaryDirectory() as tmp:
        common = ["--model", args.model, "--data-root", str(args.data_root), "--quiet"]
        for _ in range(args.repeats):
            runs["cli"].append(cli_seconds(["score", *common, "--data", args.ood, "--out", f"{tmp}/ood.csv"], env))
            runs["forward"].append(forward_seconds(model, x))
        t_id = cli_seconds(["score", *common, "--data", id_name, "--out", f"{tmp}/id.csv"], env)
        ood, idd = pd.read_csv(f"{tmp}/ood.csv"), pd.read_csv(f"{tmp}/id.csv")
    t_ood, t_fwd = statistics.median(runs["cli"]), statistics.median(runs["forward"])
    n_train = len(load_dataset(id_name, "train", args.data_root))
    committed = pd.read_csv(args.committed) if args.committed.exists() else None
    rows = []
    for name in rec["detectors"]["names"]:
        row = {"detector": name, "auroc_shipped": auroc(idd[name].to_numpy(), ood[name].to_numpy())}
        if committed is not None:
            hit = committed[(committed.detector == name) & (committed.ood == args.ood)]
            row["auroc_committed_10k"] = float(hit.auroc.iloc[0]) if len(hit) else float("nan")
        rows.append(row)
    result = {
        "model": args.model, "ood": args.ood, "n_ood": len(ood), "n_id": len(idd),
        "shipped_statistics": rec["detectors"],
        "score_cli_s": round(t_ood, 2), "bare_forward_s": round(t_fwd, 2), "ratio": round(t_ood / t_fwd, 2),
        "runs_s": {k: [round(t, 2) for t in v] for k, v in runs.items()},
        "score_cli_id_s": round(t_id, 2),
        "fit_on_all_training_images_s_estimate": round(t_fwd * n_train / len(x), 1), "n_train": n_train,
        "cpu": os.popen("lscpu | grep 'Model name' | cut -d: -f2").read().strip(), "threads": torch.get_num_threads(),
        "aurocs": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.model}-vs-{args.ood}.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [f"`oodkit score --model {args.model} --data {args.ood}` ({len(ood)} images), fresh process: "
             f"{t_ood:.1f} s; the bare forward passes of those images: {t_fwd:.1f} s (medians of {args.repeats} "
             f"alternating runs); ratio {t_ood / t_fwd:.2f} "
             f"(target <= 1.5). Fitting the statistics on all {n_train} training images instead would add about "
             f"{t_fwd * n_train / len(x):.0f} s of forward passes. ({result['cpu']}, {result['threads']} threads)", "",
             "| detector | AUROC, shipped statistics (5,000 images) | AUROC, committed bench (10,000 images) |",
             "|---|---|---|"]
    lines += [f"| {r['detector']} | {r['auroc_shipped']:.4f} | {r.get('auroc_committed_10k', float('nan')):.4f} |"
              for r in rows]
    (args.out / f"{args.model}-vs-{args.ood}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
