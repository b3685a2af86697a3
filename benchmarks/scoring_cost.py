"""Scoring cost, measured side by side in one run on the same backbone preset, input
size and batch: CDM log-likelihood (Eq. 10, one forward pass) in fp32, bf16 autocast and
torch.compile (inductor), against a DDPM's ELBO (all T terms: T passes; and the
stratified K-term estimate: K passes) and the discrete information-theoretic likelihood
(N passes) on the DDPM and on the CDM (through Theorem 3.1: a forward and a backward pass
per point). Each row also gets its GFLOP/s and their share of the 2048x2048 matmul rate
measured in the same run (see train_step_cost.py for how FLOPs are counted).

    OMP_NUM_THREADS=1 python benchmarks/scoring_cost.py --net compact --size 32 --batch 16 --T 1000 \
        [--k 50] [--points 64] [--repeats 3] [--threads 1] [--exact-levels 100] [--no-compile]

``--exact-levels L`` times the exact ELBO on L evenly spaced levels and scales to T (one
network call per level either way); by default all T are run. Cost does not depend on
the weights, so untrained networks serve.
"""
import argparse
import statistics
import time

import torch

from oodkit import NoiseSchedule
from oodkit.checkpoint import build_model
from oodkit.itd import discrete_denoiser, itd_nll
from oodkit.nn.unet import PRESETS, UNetConfig
from oodkit.training import bf16_supported
from train_step_cost import count_flops, error_line, fresh_inductor_cache, matmul_gflops, timed


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--net", default="compact")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--T", type=int, default=1000)
    p.add_argument("--k", type=int, default=50, help="terms of the ELBO estimate")
    p.add_argument("--points", type=int, default=64, help="log-SNR points of the ITD estimate")
    p.add_argument("--repeats", type=int, default=3, help="rounds of the CDM loglik variants (5 batches each)")
    p.add_argument("--exact-levels", type=int, default=None, help="time the exact ELBO on this many levels, scaled to T")
    p.add_argument("--threads", type=int, default=1, help="torch threads (pinned; default 1)")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    fresh_inductor_cache()
    import torch._inductor.config as inductor_config

    inductor_config.compile_threads = a.threads
    dev, b = a.device, a.batch
    torch.manual_seed(0)
    s = NoiseSchedule.uniform(a.T)
    base = dict(PRESETS[a.net], in_channels=a.channels, image_size=a.size)
    cdm = build_model("cdm", UNetConfig(**base, num_classes=s.num_classes).to_dict(), s).to(dev).eval()
    ddpm = build_model("ddpm", UNetConfig(**base, time_conditioning=True).to_dict(), s).to(dev).eval()
    x = torch.rand(b, a.channels, a.size, a.size, device=dev) * 2 - 1
    g = lambda: torch.Generator().manual_seed(0)
    amp = lambda: torch.autocast(torch.device(dev).type, dtype=torch.bfloat16)

    rate = {"fp32": matmul_gflops(torch.float32, dev), "bf16": matmul_gflops(torch.bfloat16, dev)}
    mid = torch.full((b,), a.T // 2, device=dev)
    f_cdm, how = count_flops(lambda: cdm.log_prob(x))
    f_ddpm, _ = count_flops(lambda: ddpm.eps(x, mid))
    f_thm, how_thm = count_flops(lambda: cdm.eps(x, mid))  # forward + input gradient
    f_cdm, f_ddpm, f_thm = f_cdm / b, f_ddpm / b, f_thm / b  # per image

    # the CDM loglik: fp32, bf16 and compiled, alternating in rounds of 5 batches
    def bf16_loglik():
        with amp():
            cdm.log_prob(x)

    variants = {"fp32 eager": (lambda: cdm.log_prob(x), "fp32"), "bf16 autocast": (bf16_loglik, "bf16")}
    compile_note = "skipped (--no-compile)"
    if not a.no_compile:
        compiled = type(cdm)(torch.compile(cdm.net), s).eval()  # same weights
        try:
            t_first = timed(lambda: compiled.log_prob(x), dev)
            variants["torch.compile"] = (lambda: compiled.log_prob(x), "fp32")
        except Exception as e:
            compile_note = error_line(e)
    times = {k: [] for k in variants}
    for _ in range(a.repeats):
        for k, (fn, _) in variants.items():
            fn()  # warm-up, and keeps the rounds alike
            times[k].append(timed(fn, dev, reps=5))
    med = {k: statistics.median(v) for k, v in times.items()}

    # the slow scores; the fp32 CDM pass is re-timed after each, so that load changes on
    # a shared machine reach the baseline as well as the rows
    base_runs = list(times["fp32 eager"])

    def row(fn, warm=True):
        if warm:
            fn()
        t = timed(fn, dev)
        base_runs.append(timed(lambda: cdm.log_prob(x), dev, reps=5))
        return t

    exact_levels = a.T if a.exact_levels is None else min(a.exact_levels, a.T)
    some = torch.linspace(1, a.T, exact_levels).round().long().tolist()
    t_exact = row(lambda: ddpm.elbo_bpd(x, generator=g(), shared_noise=True) if exact_levels == a.T
                  else ddpm.vb_terms(x, some, generator=g(), shared_noise=True), warm=False) * a.T / exact_levels
    slow = [
        (f"DDPM ELBO, {a.k}-term stratified estimate", a.k, f_ddpm,
         row(lambda: ddpm.elbo_bpd(x, n_terms=a.k, generator=g(), shared_noise=True))),
        (f"DDPM ITD (discrete), {a.points} points", a.points, f_ddpm,
         row(lambda: itd_nll(x, discrete_denoiser(ddpm), a.points, generator=g(), discrete=True, shared_noise=True))),
        (f"CDM ITD (discrete, Theorem 3.1), {a.points} points", a.points, f_thm,
         row(lambda: itd_nll(x, discrete_denoiser(cdm), a.points, generator=g(), discrete=True, shared_noise=True))),
        (f"DDPM ELBO, exact (T={a.T} terms)" + ("" if exact_levels == a.T else f", timed on {exact_levels} levels, scaled"),
         a.T, f_ddpm, t_exact),
    ]
    base_t = statistics.median(base_runs)

    print(f"net={a.net} input={a.channels}x{a.size}x{a.size} batch={b} T={a.T} device={dev} "
          f"threads={torch.get_num_threads()} (pinned) torch={torch.__version__}")
    print(f"matmul 2048x2048 in this run: fp32 {rate['fp32']:.1f} GFLOP/s, bf16 {rate['bf16']:.1f} GFLOP/s; "
          f"bf16_supported({dev}) = {bf16_supported(dev)}" + ("" if bf16_supported(dev) else " (bf16 emulated)"))
    print(f"FLOPs per image: CDM forward {f_cdm / 1e9:.3f} G, DDPM forward {f_ddpm / 1e9:.3f} G ({how}); "
          f"CDM eps by Theorem 3.1 {f_thm / 1e9:.3f} G = {f_thm / f_cdm:.2f}x forward ({how_thm.split(' (')[0]})")
    print("\n| score | network passes / image | ms / image | images / s | time vs CDM loglik fp32 | GFLOP/s | share of matmul rate |")
    print("|---|---|---|---|---|---|---|")

    def line(name, passes, t, flops, ref, dt="fp32"):
        gf = passes * flops * b / t / 1e9
        print(f"| {name} | {passes} | {t / b * 1e3:.2f} | {b / t:.3g} | {t / ref:.3g}x | {gf:.1f} | {gf / rate[dt]:.0%} of {dt} |")

    for k, (_, dt) in variants.items():  # these against their own side-by-side fp32 median
        line(f"CDM loglik (Eq. 10), {k}", 1, med[k], f_cdm, med["fp32 eager"], dt)
    if "torch.compile" not in variants:
        print(f"| CDM loglik (Eq. 10), torch.compile | {compile_note} | | | | | |")
    for name, passes, flops, t in slow:
        line(name, passes, t, flops, base_t)
    print(f"\nCDM loglik variants: median of {a.repeats} alternating rounds of 5 batches each. "
          f"Slow rows against the fp32 CDM loglik timed {len(base_runs)} times "
          f"({min(base_runs) * 1e3:.1f} to {max(base_runs) * 1e3:.1f} ms per batch, median used).")
    if "torch.compile" in variants:
        gain = med["fp32 eager"] - med["torch.compile"]
        even = f"pays back after {(t_first - med['torch.compile']) / gain:.0f} batches" if gain > 0 else "never pays back"
        print(f"torch.compile(cdm.net), inductor, cold cache: first call (compile + run) {t_first:.1f} s, then "
              f"{med['torch.compile'] * 1e3:.1f} ms per batch against {med['fp32 eager'] * 1e3:.1f} eager: {even}.")
    else:
        print(f"torch.compile: {compile_note}")


if __name__ == "__main__":
    main()
