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


def plot(rows, out: Path) -> None:
    """Fit time against n, log-log: each kNN scorer with its bank capped and whole, beside
    the n and n^2 slopes, so that a reader sees where the cap bends the curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, name in enumerate(dict.fromkeys(r["scorer"] for r in rows)):
        mine = [r for r in rows if r["scorer"] == name]
        capped = sorted((r["n"], r["fit_and_loo_s"]) for r in mine if r["bank"] in ("-", min(r["n"], MAX_BANK)))
        whole = [(r["n"], r["fit_and_loo_s"]) for r in mine if r["bank"] == r["n"] and r["n"] > MAX_BANK]
        color = f"C{i}"
        ax.plot(*zip(*capped), "o-", color=color, label=name)
        for n, t in whole:
            near = max((c for c in capped if c[0] < n), default=None)
            ax.plot(*zip(*[near, (n, t)]) if near else ([n], [t]), "x--", color=color, alpha=0.7)
    n0 = min(r["n"] for r in rows)
    t0 = max(r["fit_and_loo_s"] for r in rows if r["n"] == n0)
    ns = np.array(sorted({r["n"] for r in rows}), dtype=float)
    ax.plot(ns, t0 * (ns / n0), ":", color="grey", label="slope n")
    ax.plot(ns, t0 * (ns / n0) ** 2, "-.", color="grey", label="slope n^2")
    ax.axvline(MAX_BANK, color="k", lw=0.8, alpha=0.5)
    ax.text(MAX_BANK * 1.05, 0.03, f"bank cap {MAX_BANK:,}", fontsize=8, transform=ax.get_xaxis_transform())
    ax.set(xscale="log", yscale="log", xlabel="ID training images n",
           ylabel="fit + out-of-sample training scores (s)",
           title="kNN fitting: bank capped (o, solid) or whole (x, dashed)")
    ax.legend(fontsize=8, loc="upper left")
    fig.savefig(out, dpi=120, bbox_inches="tight")
    plt.close(fig)


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
    ap.add_argument("--plot-only", action="store_true", help="redraw OUT/scaling.png from OUT/scaling.json")
    args = ap.parse_args()
    if args.plot_only:
        plot(json.loads((args.out / "scaling.json").read_text())["rows"], args.out / "scaling.png")
        return
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
    plot(rows, args.out / "scaling.png")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
