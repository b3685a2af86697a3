"""How fitting and scoring grow with the number of ID training images (issue 22), on
synthetic representations (what one forward pass gives: 20 profile levels, 32 pooled
features, log-likelihoods, PNG lengths; the network is not the subject here):

    python benchmarks/fit_scaling.py [--n 10000 50000 200000] [--exact-n 200000] [--queries 10000] [--out DIR]

For each detector's scorer and each n, with the default kNN bank (at most
``scores.MAX_BANK`` training rows searched) and, for the ``--exact-n`` sizes, also with
every row in the bank (the cost before banks), in a fresh process (so that its peak resident
memory is its own): the time of ``fit`` plus the out-of-sample training scores the
threshold needs (leave-one-out for kNN, closed form for the Gaussian), the time to score
``--queries`` new images, and the process's peak RSS. Writes a Markdown table and JSON.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from oodkit.detectors.scores import MAX_BANK

SCORERS = ("profile", "features", "features-gauss", "fused")


class SyntheticRep:
    """The fields of a Representation the scorers read, drawn at random (seeded)."""

    def __init__(self, n, seed, levels=1001, d=784):
        g = np.random.default_rng(seed)
        self.dim = d
        self._levels = g.standard_normal((n, 20)).cumsum(1) * 50 - 3000  # smooth per-image profiles
        self.features = torch.from_numpy(g.standard_normal((n, 32)).astype(np.float32))
        self.loglik = self._levels[:, 0].copy()
        self.png_bits = g.normal(4000, 300, n)

    def __len__(self):
        return len(self.loglik)

    def levels(self, t):
        return self._levels[:, : len(t)]


def make(name, bank, device=None):
    from oodkit.detectors.scores import Complexity, FeatureGauss, FeatureKNN, Fused, Profile

    levels = np.arange(20)
    profile = lambda: Profile(levels, "knn", max_bank=bank, search_device=device)  # noqa: E731
    return {"profile": profile, "features": lambda: FeatureKNN(5, bank, search_device=device),
            "features-gauss": FeatureGauss,
            "fused": lambda: Fused({"profile": profile(), "complexity": Complexity(),
                                    "features": FeatureGauss()})}[name]()


def one(name, n, queries, exact, device=None):
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", os.cpu_count())))
    train, test = SyntheticRep(n, 0), SyntheticRep(queries, 1)
    scorer = make(name, None if exact else MAX_BANK, device)  # imports done before the clock starts
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    s = scorer.fit(train)
    loo = s.train_score(train) if hasattr(s, "train_score") else s.score(train)
    t1 = time.perf_counter()
    scores = s.score(test)
    t2 = time.perf_counter()
    assert np.isfinite(loo).all() and np.isfinite(scores).all()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    bank = "-" if name == "features-gauss" else n if exact else min(n, MAX_BANK)
    return {"scorer": name, "n": n, "bank": bank, "search": device or "scikit-learn", "fit_and_loo_s": round(t1 - t0, 3), "score_s": round(t2 - t1, 3),
            "queries": queries, "peak_rss_mb": round(peak / 1024, 1), "fit_peak_mb": round((peak - base) / 1024, 1)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[10000, 50000, 200000])
    ap.add_argument("--exact-n", type=int, nargs="*", default=[200000],
                    help="sizes also run with every training row in the kNN bank")
    ap.add_argument("--queries", type=int, default=10000)
    ap.add_argument("--search-device", default=None,
                    help="search the kNN banks in torch blocks on this device (e.g. cuda) instead of scikit-learn")
    ap.add_argument("--scorers", default=",".join(SCORERS))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/fit_scaling"))
    ap.add_argument("--one", nargs=3, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one[0], int(args.one[1]), args.queries, args.one[2] == "exact",
                             args.search_device)))
        return
    rows = []
    for name in args.scorers.split(","):
        runs = [(n, "bank") for n in args.n]
        if name != "features-gauss":  # no bank to subsample
            runs += [(n, "exact") for n in args.exact_n if n > MAX_BANK]
        for n, how in sorted(runs):
            device = ["--search-device", args.search_device] if args.search_device else []
            r = subprocess.run([sys.executable, __file__, "--one", name, str(n), how, "--queries", str(args.queries),
                                *device], capture_output=True, text=True, check=True)
            rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    cpu = os.popen("lscpu | grep 'Model name' | cut -d: -f2").read().strip()
    threads = int(os.environ.get("OMP_NUM_THREADS", os.cpu_count()))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scaling.json").write_text(json.dumps({"cpu": cpu, "threads": threads, "rows": rows},
                                                      indent=1) + "\n")
    lines = [f"Synthetic representations (20 levels, 32 features); {cpu}, {threads} thread(s), one process "
             "per row; the memory the fit added is the rise of the peak resident set over the set before fitting.", "",
             f"| scorer | n | kNN bank | search | fit + out-of-sample training scores (s) | score {args.queries:,} (s) | memory the fit added (MB) | peak RSS (MB) |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['scorer']} | {r['n']:,} | {r['bank'] if r['bank'] == '-' else format(r['bank'], ',')} | {r.get('search', 'scikit-learn')} | {r['fit_and_loo_s']:.2f} | {r['score_s']:.2f} | {r['fit_peak_mb']:.0f} "
              f"| {r['peak_rss_mb']:.0f} |" for r in rows]
    (args.out / "scaling.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
