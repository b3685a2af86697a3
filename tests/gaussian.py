"""Closed forms for Gaussian data: a classifier whose cumulative sum is the analytic
``log p_t(x)`` is the exact CE-optimal CDM, so every CDM quantity has a known answer."""
import math

import torch
from torch import nn


class AnalyticGaussianNet(nn.Module):
    """Data ``x0 ~ N(mu, diag(var))``; returns the neighbour differences of the analytic
    ``log p_t(x)`` so that their cumulative sum is ``log p_t(x)`` itself."""

    def __init__(self, mu: torch.Tensor, var: torch.Tensor, schedule):
        super().__init__()
        self.mu, self.var, self.schedule = mu.double(), var.double(), schedule

    def log_p_levels(self, x):
        ab = self.schedule.alpha_bar.to(x.device, torch.float64)[None, :, None]
        xf = x.reshape(x.shape[0], 1, -1).double()
        mean = ab.sqrt() * self.mu.reshape(1, 1, -1)
        var = ab * self.var.reshape(1, 1, -1) + (1 - ab)
        lp = -0.5 * ((xf - mean) ** 2 / var + var.log() + math.log(2 * math.pi))
        return lp.sum(-1)

    def posterior_eps(self, x_t, t):
        ab = self.schedule.alpha_bar[t].double().view(-1, 1, 1, 1)
        mu = self.mu.view(1, *x_t.shape[1:])
        var = self.var.view(1, *x_t.shape[1:])
        return (1 - ab).sqrt() * (x_t.double() - ab.sqrt() * mu) / (ab * var + 1 - ab)

    def forward(self, x):
        lp = self.log_p_levels(x)
        raw = torch.cat([lp[:, :1], lp[:, 1:] - lp[:, :-1]], dim=1)
        return raw.to(x.dtype)


def gaussian_params(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    mu = 0.5 * torch.randn(shape, generator=g, dtype=torch.float64)
    var = 0.05 + 0.3 * torch.rand(shape, generator=g, dtype=torch.float64)
    return mu, var


def sample_gaussian(mu, var, n, seed=1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (mu + var.sqrt() * torch.randn((n, *mu.shape), generator=g, dtype=torch.float64)).to(dtype)
