"""Does the contrastive diffusion loss (Wu et al. 2024) improve a DDPM's density where it
matters for OOD detection: off the data distribution? A check with a known density.

Two DDPMs, identical but for the loss (L_simple, and L_simple + w * CDL), are trained on
a correlated Gaussian (each channel N(0, s^2 K (x) K), K[i, j] = rho^|i - j|, as in
nll_toy.py) and their information-theoretic NLL (oodkit.itd, 128 points) is compared
with the exact NLL on

* fresh samples of the data (in distribution), and
* the same samples noised to a log-SNR zeta, x_zeta = alpha x + sigma eps, evaluated
  under the *data* density: points the DDPM never sees clean, like OOD inputs.

    python benchmarks/cdl_toy.py --steps 1500 --cdl-weight 0.1 --out benchmarks/results/cdl_toy.json

NLL in continuous bits per dimension, -log p(x) / (d ln 2); "error" is estimate - truth,
averaged over test points, and "|error|" the mean per-point absolute error.
"""
import argparse
import json
import math
import time
from pathlib import Path

import torch

from nll_toy import make_gaussian
from oodkit import TrainConfig, fit_model
from oodkit.itd import discrete_denoiser, itd_nll, level_logsnr


def itd_bpd(model, x, n_points, seed):
    den = discrete_denoiser(model)
    dev = next(model.parameters()).device
    out = []
    for i, xb in enumerate(x.split(250)):
        nll, _ = itd_nll(xb.to(dev), den, n_points, generator=torch.Generator().manual_seed(seed + i))
        out.append(nll.cpu())
    return torch.cat(out) / (x[0].numel() * math.log(2))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=8)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--net", default="tiny")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--T", type=int, default=1000)
    p.add_argument("--cdl-weight", type=float, default=0.1)
    p.add_argument("--zetas", default="6,3", help="log-SNRs of the noised test points")
    p.add_argument("--n-train", type=int, default=20000)
    p.add_argument("--n-test", type=int, default=500)
    p.add_argument("--points", type=int, default=128, help="ITD points per evaluation")
    p.add_argument("--device", default=None)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    shape = (1, a.size, a.size)
    sample, truth = make_gaussian(shape=shape)
    x_train = sample(a.n_train, torch.Generator().manual_seed(0)).float()
    x_test = sample(a.n_test, torch.Generator().manual_seed(1)).float()

    models, seconds = {}, {}
    for w in (0.0, a.cdl_weight):
        t0 = time.time()
        cfg = TrainConfig(steps=a.steps, batch_size=a.batch, lr=a.lr, warmup=min(100, a.steps // 10), save_every=0)
        models[w] = fit_model(x_train, kind="ddpm", net=a.net, T=a.T, schedule="uniform", config=cfg,
                              device=a.device, progress=True, model_options={"cdl_weight": w})
        seconds[w] = round(time.time() - t0, 1)

    sets = {"data": x_test}
    snr = level_logsnr(models[0.0].schedule)
    for zeta in (float(z) for z in a.zetas.split(",") if z):
        # the model's level nearest to zeta, so the noised points are ones its own forward process makes
        t = int((snr[1:-1] - zeta).abs().argmin()) + 1
        noise = torch.randn(x_test.shape, generator=torch.Generator().manual_seed(2 + t))
        sets[f"noised logSNR {snr[t].item():.2f}"] = models[0.0].schedule.q_sample(
            x_test, torch.full((a.n_test,), t), noise).float()

    rows = []
    with torch.no_grad():
        for name, x in sets.items():
            true = truth(x)
            row = {"points": name, "true_bpd": true.mean().item()}
            for w, model in models.items():
                est = itd_bpd(model, x, a.points, seed=10)
                tag = "cdl" if w else "ddpm"
                row[f"{tag}_bpd"] = est.mean().item()
                row[f"{tag}_error"] = (est - true).mean().item()
                row[f"{tag}_abs_error"] = (est - true).abs().mean().item()
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"\n{a.net} DDPM, {shape[0]}x{a.size}x{a.size} correlated Gaussian, {a.steps} steps each; "
          f"training {seconds[0.0]} s (L_simple) vs {seconds[a.cdl_weight]} s (+ {a.cdl_weight} CDL)")
    print("\n| test points | true bits/dim | DDPM error | DDPM abs error | DDPM+CDL error | DDPM+CDL abs error |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['points']} | {r['true_bpd']:.4f} | {r['ddpm_error']:+.4f} | {r['ddpm_abs_error']:.4f} "
              f"| {r['cdl_error']:+.4f} | {r['cdl_abs_error']:.4f} |")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({"args": vars(a) | {"out": str(a.out)}, "train_seconds": list(seconds.values()),
                                     "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
