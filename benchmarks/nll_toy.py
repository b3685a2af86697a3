"""The CDM paper's appendix D check at d = 3x32x32: train a CDM on data whose density is
known exactly and compare its single-pass NLL with the truth.

* i.i.d. uniform pixels U[-g/2, g/2]: true NLL = ln g nats per dimension;
* a correlated Gaussian: each channel N(0, s^2 K (x) K), K[i, j] = rho^|i - j| along
  rows and columns.

    python benchmarks/nll_toy.py --steps 400 --net compact --out benchmarks/results/nll_toy.json

NLL is reported in continuous bits per dimension, -log p(x) / (d ln 2) (no +7: these
are densities on R^d, not 8-bit images), averaged over fresh test samples.
"""
import argparse
import json
import math
import time
from pathlib import Path

import torch

from oodkit import TrainConfig, fit_model

SHAPE = (3, 32, 32)
D = 3 * 32 * 32


def ar1_chol(n, rho):
    idx = torch.arange(n, dtype=torch.float64)
    k = rho ** (idx[:, None] - idx[None, :]).abs()
    return torch.linalg.cholesky(k)


def make_uniform(g):
    def sample(n, gen):
        return (torch.rand((n, *SHAPE), generator=gen, dtype=torch.float64) - 0.5) * g

    def nll_bpd(x):
        return torch.full((x.shape[0],), math.log(g) / math.log(2), dtype=torch.float64)

    return sample, nll_bpd


def make_gaussian(s=0.35, rho=0.8, shape=SHAPE):
    c, h, w = shape
    assert h == w, "square images"
    a = ar1_chol(h, rho)
    logdet_k = 2 * torch.log(torch.diagonal(a)).sum()
    # per channel: log det(s^2 K (x) K) = h*w log s^2 + 2 * h log det K
    logdet = c * (h * w * math.log(s * s) + 2 * h * logdet_k)
    a_inv = torch.linalg.inv(a)
    d = c * h * w

    def sample(n, gen):
        z = torch.randn((n, *shape), generator=gen, dtype=torch.float64)
        return s * a @ z @ a.T

    def nll_bpd(x):
        z = a_inv @ x.double() @ a_inv.T / s  # whitened
        nll = 0.5 * (z**2).flatten(1).sum(1) + 0.5 * logdet + 0.5 * d * math.log(2 * math.pi)
        return nll / (d * math.log(2))

    return sample, nll_bpd


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--net", default="compact")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--T", type=int, default=1000)
    p.add_argument("--n-train", type=int, default=8000)
    p.add_argument("--n-test", type=int, default=500)
    p.add_argument("--cases", default="uniform-0.5,uniform-1,uniform-2,gaussian")
    p.add_argument("--device", default=None)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    rows = []
    for case in a.cases.split(","):
        sample, truth = make_gaussian() if case == "gaussian" else make_uniform(float(case.split("-")[1]))
        x_train = sample(a.n_train, torch.Generator().manual_seed(0)).float()
        x_test = sample(a.n_test, torch.Generator().manual_seed(1)).float()
        t0 = time.time()
        cfg = TrainConfig(steps=a.steps, batch_size=a.batch, lr=a.lr, warmup=min(100, a.steps // 10), save_every=0)
        model = fit_model(x_train, net=a.net, T=a.T, schedule="uniform", config=cfg, device=a.device, progress=True)
        train_s = time.time() - t0
        with torch.no_grad():
            est = torch.cat([-model.log_prob(xb.to(next(model.parameters()).device)).cpu()
                             for xb in x_test.split(256)]) / (D * math.log(2))
        true = truth(x_test)
        row = {"case": case, "true_bpd": true.mean().item(), "cdm_bpd": est.mean().item(),
               "error_bpd": (est.mean() - true.mean()).item(), "abs_error_per_sample": (est - true).abs().mean().item(),
               "steps": a.steps, "net": a.net, "train_seconds": round(train_s, 1)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("\n| case | true bits/dim | CDM bits/dim (1 pass) | error |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['true_bpd']:.4f} | {r['cdm_bpd']:.4f} | {r['error_bpd']:+.4f} |")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({"args": vars(a) | {"out": str(a.out)}, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
