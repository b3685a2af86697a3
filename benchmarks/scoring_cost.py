"""Scoring cost, measured side by side in one run on the same backbone preset, input
size and batch: CDM log-likelihood (Eq. 10, one forward pass) against a DDPM's ELBO
(all T terms: T passes; and an unbiased K-term estimate: K passes) and the
information-theoretic likelihood (N passes) on the DDPM and on the CDM (through
Theorem 3.1: a forward and a backward pass per point).

    python benchmarks/scoring_cost.py --net compact --size 32 --batch 16 --T 1000

Cost does not depend on the weights, so untrained networks serve.
"""
import argparse
import statistics
import time

import torch

from oodkit import CDM, NoiseSchedule, UNet, UNetConfig
from oodkit.itd import discrete_denoiser, itd_nll
from oodkit.models.ddpm import DDPM
from oodkit.nn.unet import PRESETS


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--net", default="compact")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--T", type=int, default=1000)
    p.add_argument("--k", type=int, default=50, help="terms of the ELBO estimate")
    p.add_argument("--points", type=int, default=64, help="log-SNR points of the ITD estimate")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = p.parse_args()
    torch.manual_seed(0)
    s = NoiseSchedule.uniform(a.T)
    base = dict(PRESETS[a.net], in_channels=a.channels, image_size=a.size)
    cdm = CDM(UNet(UNetConfig(**base, num_classes=s.num_classes)), s).to(a.device).eval()
    ddpm = DDPM(UNet(UNetConfig(**base, time_conditioning=True)), s).to(a.device).eval()
    x = torch.rand(a.batch, a.channels, a.size, a.size, device=a.device) * 2 - 1

    def timed(fn, reps=1, warm=True):
        if warm:
            fn()
        if a.device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        if a.device.startswith("cuda"):
            torch.cuda.synchronize()
        return (time.perf_counter() - t0) / reps

    g = lambda: torch.Generator().manual_seed(0)
    base_runs = []

    def with_baseline(t):
        # the CDM pass is re-timed after every row, so that load changes on a shared
        # machine reach the baseline as well as the rows
        base_runs.append(timed(lambda: cdm.log_prob(x), reps=5))
        return t

    base_runs.append(timed(lambda: cdm.log_prob(x), reps=5))
    rows = [
        (f"DDPM ELBO, {a.k}-term estimate", a.k,
         with_baseline(timed(lambda: ddpm.elbo_bpd(x, n_terms=a.k, generator=g())))),
        (f"DDPM ITD, {a.points} points", a.points,
         with_baseline(timed(lambda: itd_nll(x, discrete_denoiser(ddpm), a.points, generator=g())))),
        (f"CDM ITD (Theorem 3.1), {a.points} points", a.points,
         with_baseline(timed(lambda: itd_nll(x, discrete_denoiser(cdm), a.points, generator=g())))),
        (f"DDPM ELBO, exact (T={a.T} terms)", a.T, with_baseline(timed(lambda: ddpm.elbo_bpd(x, generator=g()), warm=False))),
    ]
    base_t = statistics.median(base_runs)
    rows.insert(0, ("CDM loglik (Eq. 10)", 1, base_t))
    print(f"net={a.net} input={a.channels}x{a.size}x{a.size} batch={a.batch} T={a.T} device={a.device} "
          f"threads={torch.get_num_threads()}")
    print("| score | network passes / image | images / s | time vs CDM loglik |\n|---|---|---|---|")
    for name, passes, t in rows:
        print(f"| {name} | {passes} | {a.batch / t:.3g} | {t / base_t:.0f}x |")
    print(f"\nCDM loglik timed {len(base_runs)} times between the rows: "
          f"{min(base_runs) * 1e3:.1f} to {max(base_runs) * 1e3:.1f} ms per batch (median used)")


if __name__ == "__main__":
    main()
