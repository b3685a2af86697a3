"""Gaussians against 8-bit pixels: the discretized Gaussian that turns a density into
the probability of a pixel's bin (the DDPM decoder and the information-theoretic
estimate's last step) and the Gaussian KL divergence of the ELBO's terms. float64
where it matters: these are the tails of likelihoods."""
from __future__ import annotations

import torch

__all__ = ["discretized_gaussian_log_likelihood", "gaussian_kl"]


def gaussian_kl(mean1, logvar1, mean2, logvar2):
    """Elementwise ``KL(N(mean1, e^logvar1) || N(mean2, e^logvar2))`` in nats."""
    return 0.5 * (logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2) - 1.0)


def _log_diff_ndtr(b, a):
    """log(Phi(b) - Phi(a)) for b > a, stable in both tails."""
    # in the upper tail use the mirror image, where Phi is far from 1
    flip = a > 0
    lb, la = torch.where(flip, torch.special.log_ndtr(-a), torch.special.log_ndtr(b)), \
        torch.where(flip, torch.special.log_ndtr(-b), torch.special.log_ndtr(a))
    return lb + torch.log1p(-torch.exp((la - lb).clamp(max=0.0)).clamp(max=1.0 - 1e-15))


def discretized_gaussian_log_likelihood(x, mean, log_scale):
    """``log P(x)`` elementwise for 8-bit data x in [-1, 1] under a Gaussian discretized
    into bins of width 2/255, the first and last bins open to -inf / +inf. float64."""
    x, mean, log_scale = x.double(), mean.double(), log_scale.double()
    inv = torch.exp(-log_scale)
    lo = (x - mean - 1.0 / 255) * inv
    hi = (x - mean + 1.0 / 255) * inv
    mid = _log_diff_ndtr(hi, lo)
    left = torch.special.log_ndtr(hi)
    right = torch.special.log_ndtr(-lo)
    return torch.where(x < -0.999, left, torch.where(x > 0.999, right, mid))
