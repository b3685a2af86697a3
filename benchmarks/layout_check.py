"""Memory layout of the detection pass: row-major against channels-last, on every shipped
model, side by side in one run (the machine's load hits both alike).

    python benchmarks/layout_check.py --data-root DIR [--n 512] [--batch-size 256] [--repeats 5] [--device cuda]

For each model: the forward pass over ``--n`` ID test images in each layout, timed
``--repeats`` times in alternation (median images/s and the median of the per-round
ratios), and what the layout changes in the answers: bits/dim (mean and largest
difference) and Spearman's rank agreement of the log-likelihoods. Writes
``benchmarks/results/layout/layout.{md,json}``.
"""
import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from oodkit.data import as_images, load_dataset, to_float
from oodkit.models.cdm import bits_per_dim
from oodkit.pretrained import PRETRAINED_DIR, load_model
from oodkit.representation import full_fp32


def passes(model, x, batch_size, channels_last):
    """(seconds, log p(x) in nats (N,)) of one forward pass in the given layout."""
    out, sync = [], torch.cuda.synchronize if x.is_cuda else (lambda: None)
    with torch.no_grad(), full_fp32(), model.net.channels_last(channels_last):
        sync()
        t0 = time.perf_counter()
        for i in range(0, len(x), batch_size):
            out.append(model.log_prob(x[i:i + batch_size]))
        sync()
        return time.perf_counter() - t0, torch.cat(out).cpu().numpy()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=os.environ.get("OODKIT_DATA"))
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu", help="cpu, or cuda on a lent GPU (full fp32, TF32 off)")
    ap.add_argument("--out", default="benchmarks/results/layout")
    a = ap.parse_args()
    index = json.loads((PRETRAINED_DIR / "index.json").read_text())
    rows = []
    for name, rec in index.items():
        model = load_model(name, device=a.device).eval()
        ds = load_dataset(rec["dataset"], "test", a.data_root)
        x = to_float(as_images(ds.images[: a.n])).to(a.device)
        for cl in (False, True):  # warm-up: oneDNN builds its kernels on first use
            passes(model, x[: a.batch_size], a.batch_size, cl)
        times, loglik = {False: [], True: []}, {}
        for _ in range(a.repeats):
            for cl in (False, True):
                sec, lp = passes(model, x, a.batch_size, cl)
                times[cl].append(sec)
                loglik[cl] = lp
        d = x[0].numel()
        lp_rm, lp_cl = loglik[False], loglik[True]
        bpd_rm, bpd_cl = bits_per_dim(lp_rm, d), bits_per_dim(lp_cl, d)
        ratios = [r / c for r, c in zip(times[False], times[True])]
        rows.append({"model": name, "n": len(x), "row_major_img_s": round(len(x) / statistics.median(times[False]), 1),
                     "channels_last_img_s": round(len(x) / statistics.median(times[True]), 1),
                     "speed_ratio": round(statistics.median(ratios), 3),
                     "bpd_mean_diff": float(np.mean(np.abs(bpd_cl - bpd_rm))),
                     "bpd_max_diff": float(np.max(np.abs(bpd_cl - bpd_rm))),
                     "spearman_loglik": float(spearmanr(lp_rm, lp_cl)[0])})
        print(rows[-1], flush=True)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"device": a.device, "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
            "torch": torch.__version__, "batch_size": a.batch_size, "repeats": a.repeats}
    (out / "layout.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    lines = [f"# Row-major against channels-last forward passes ({a.device}, {meta['threads']} thread(s), torch {meta['torch']}, "
             f"batch {a.batch_size}, median of {a.repeats} alternating rounds)", "",
             "| model | images | row-major img/s | channels-last img/s | speed ratio | mean / max abs bits/dim difference "
             "| Spearman (log-likelihood) |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['n']} | {r['row_major_img_s']} | {r['channels_last_img_s']} | {r['speed_ratio']:.2f}x "
              f"| {r['bpd_mean_diff']:.1e} / {r['bpd_max_diff']:.1e} | {r['spearman_loglik']:.6f} |" for r in rows]
    (out / "layout.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
