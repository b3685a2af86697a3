"""What a subsampled kNN bank changes (issue 22), on real representations: one forward
pass over the ID training set and the test sets, then the kNN detectors fitted again and
again on those passes with banks of several sizes, side by side with the exact bank (every
training image) in one run.

    python benchmarks/knn_bank.py --data-root DIR [--model 'fashionmnist[0-4]']
        [--spec 'fashionmnist[0-4]-vs-fashionmnist[5-9],mnist'] [--banks 1000 3000 10000]
        [--max-test 5000] [--out DIR]

Per detector and bank size: the time of fit plus the out-of-sample training scores, the
AUROC of every pair and its change against the exact bank, the rank agreement (Spearman)
of the test scores with the exact bank's, and the share of fresh ID test images the
default threshold accepts. The network was trained on the fitting images, so that share
is below 0.95 for every bank (the README's calibration advice); what matters here is that
the bank does not move it. Writes ``knn_bank.json`` and ``knn_bank.md``.
"""
import argparse
import json
import os
import platform
import shlex
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from oodkit.bench import load_sets, parse_spec
from oodkit.metrics import auroc
from oodkit.pipeline import Flow, align
from oodkit.pretrained import load_model


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=os.environ.get("OODKIT_DATA"))
    ap.add_argument("--model", default="fashionmnist[0-4]")
    ap.add_argument("--spec", default="fashionmnist[0-4]-vs-fashionmnist[5-9],mnist")
    ap.add_argument("--detectors", default="fused,features,profile")
    ap.add_argument("--banks", type=int, nargs="+", default=[1000, 3000, 10000])
    ap.add_argument("--max-test", type=int, default=5000)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/knn_bank"))
    args = ap.parse_args()

    model = load_model(args.model)
    sets = load_sets(parse_spec(args.spec), args.data_root, max_test=args.max_test)
    flow = Flow(args.batch_size, progress=True)
    x_train, x_id = align(sets.id_train.tensor(), model), align(sets.id_test.tensor(), model)
    x_ood = {name: align(ds.tensor(), model) for name, ds in sets.oods.items()}
    for x, desc in [(x_train, "train"), (x_id, "id test"), *((x, n) for n, x in x_ood.items())]:
        flow.representation(model, x, desc)  # every pass before any clock starts

    names, rows, exact = args.detectors.split(","), [], {}
    for bank in [None, *sorted(args.banks, reverse=True)]:
        flow.max_bank = bank
        for name in names:
            t0 = time.perf_counter()
            det = flow.fit({name: model}, x_train, leave_out_seen=False)[name]
            fit_s = time.perf_counter() - t0
            s_id = flow.score({name: det}, x_id)[name]
            s_ood = {n: flow.score({name: det}, x)[name] for n, x in x_ood.items()}
            both = np.concatenate([s_id, *s_ood.values()])
            if bank is None:
                exact[name] = (both, {n: auroc(s_id, s) for n, s in s_ood.items()})
            row = {"detector": name, "bank": bank or len(x_train), "exact": bank is None, "fit_s": round(fit_s, 2),
                   "accept_fresh_id": round(float((s_id >= det.offset_).mean()), 4),
                   "spearman_vs_exact": round(float(spearmanr(both, exact[name][0])[0]), 5)}
            for n, s in s_ood.items():
                a = auroc(s_id, s)
                row[f"auroc {n}"], row[f"change {n}"] = round(a, 4), round(a - exact[name][1][n], 4)
            rows.append(row)
            print(row, flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"model": args.model, "spec": args.spec, "n_train": len(x_train), "n_id_test": len(x_id),
            "n_ood": {n: len(x) for n, x in x_ood.items()}, "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(), "command": "python benchmarks/knn_bank.py " + " ".join(
                f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else shlex.quote(str(v))}"
                for k, v in vars(args).items() if k != "data_root")}
    (args.out / "knn_bank.json").write_text(json.dumps({**meta, "rows": rows}, indent=1) + "\n")
    cols = list(rows[0])
    md = [f"`{args.model}` on {args.spec}: {len(x_train):,} ID training images, {len(x_id):,} ID test images; "
          f"one forward pass per set, every fit on the same passes ({meta['threads']} thread(s)).", "",
          "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    md += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    (args.out / "knn_bank.md").write_text("\n".join(md) + "\n")
    print(f"wrote {args.out}/knn_bank.md and knn_bank.json")


if __name__ == "__main__":
    main()
