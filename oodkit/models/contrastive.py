"""Contrastive diffusion loss (Wu et al., NeurIPS 2024).

A diffusion model is an implicit classifier between the data and a noised copy of it:
``logit(z) = log p(z) - log p_zeta(z)``, both log-densities from the
information-theoretic estimator (:mod:`oodkit.itd`) on the model's own denoiser. The
loss ``softplus(-y * logit(z))`` (y = +1 for a clean image, -1 for its zeta-noised copy)
trains the denoiser on the off-distribution inputs that samplers and OOD data visit.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..itd import discrete_denoiser, itd_nll, level_logsnr

__all__ = ["contrastive_diffusion_loss"]


def contrastive_diffusion_loss(model, x0: torch.Tensor, n_points: int = 4, generator=None) -> torch.Tensor:
    """Mean logistic loss over the batch and its noised copies (one zeta per call, drawn
    among the model's levels); differentiable through ``model.eps``. Each density uses
    ``n_points`` denoiser calls on 2B images, with the same random points for both so that
    their difference has low variance."""
    T = model.schedule.T
    t = int(torch.randint(1, T + 1, (1,), generator=generator))
    zeta = level_logsnr(model.schedule)[t].item()
    eps = torch.randn(x0.shape, generator=generator, device="cpu").to(x0.device, x0.dtype)
    x_zeta = model.schedule.q_sample(x0, torch.full((x0.shape[0],), t, device=x0.device), eps)
    z = torch.cat([x0, x_zeta])
    y = torch.cat([torch.ones(x0.shape[0]), -torch.ones(x0.shape[0])]).to(x0.device, torch.float64)
    den = discrete_denoiser(model)
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    nll, _ = itd_nll(z, den, n_points, generator=torch.Generator().manual_seed(seed), grad=True, tails=False)
    nll_zeta, _ = itd_nll(z, den, n_points, generator=torch.Generator().manual_seed(seed), grad=True, tails=False,
                          base_logsnr=zeta)
    logit = nll_zeta - nll  # log p(z) - log p_zeta(z)
    return F.softplus(-y * logit).mean().float()
