"""DDPM baseline: a time-conditioned network predicting eps, trained with L_simple, and
its variational bound (ELBO) in bits per dimension with improved-diffusion's semantics
(reimplemented from the definitions, not copied):

* prior term ``KL(q(x_T | x0) || N(0, I))``;
* for t = 2..T, ``KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t))`` with the model's mean
  from its eps prediction and a fixed variance, ``beta_t`` ("beta") or the true
  posterior variance ("posterior"); at t = 1 both use the posterior variance of t = 2,
  since the true one is zero;
* at t = 1 the discretized-Gaussian decoder ``-log p(x0 | x1)`` over 256 bins of width
  2/255 on [-1, 1], the edge bins reaching to infinity.

Levels follow the shared :class:`~oodkit.NoiseSchedule`: 1..T are the noisy levels
(class 0 is clean data and T+1 pure noise, which a DDPM never sees).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..discrete import discretized_gaussian_log_likelihood, gaussian_kl
from ..schedules import NoiseSchedule
from .sampling import eta_for, sample_loop

__all__ = ["DDPM", "discretized_gaussian_log_likelihood", "gaussian_kl"]


class DDPM(nn.Module):
    """Denoising diffusion model: ``net(x_t, t)`` predicts eps for levels 1..T.

    Args:
        net: time-conditioned network (B, C, H, W), (B,) -> (B, C, H, W).
        schedule: shared noise schedule.
        var_type: the reverse process's fixed variance, ``"beta"`` or ``"posterior"``.
        cdl_weight: weight of the contrastive diffusion loss (Wu et al. 2024) added to
            L_simple; 0 disables it (see :mod:`oodkit.models.contrastive`).
        cdl_points: log-SNR points per density in the contrastive loss's estimator.
    """

    kind = "ddpm"

    def __init__(self, net: nn.Module, schedule: NoiseSchedule, var_type: str = "beta", cdl_weight: float = 0.0,
                 cdl_points: int = 4, image_shape=None):
        super().__init__()
        if var_type not in ("beta", "posterior"):
            raise ValueError(f"var_type must be 'beta' or 'posterior', got {var_type!r}")
        self.net, self.schedule, self.var_type = net, schedule, var_type
        self.cdl_weight, self.cdl_points = float(cdl_weight), int(cdl_points)
        cfg = getattr(net, "config", None)
        if cfg is not None and hasattr(cfg, "time_conditioning"):  # oodkit's UNet (other nets take t as they will)
            if not cfg.time_conditioning:
                raise ValueError("a DDPM needs a time-conditioned net (UNetConfig(time_conditioning=True))")
            image_shape = image_shape or (cfg.in_channels, cfg.image_size, cfg.image_size)
        self.image_shape = tuple(image_shape) if image_shape is not None else None
        ab = schedule.alpha_bar
        T = schedule.T
        t = torch.arange(1, T + 1)
        ab_t, ab_prev = ab[t], ab[t - 1]
        beta = 1 - ab_t / ab_prev
        post_var = beta * (1 - ab_prev) / (1 - ab_t)
        # index i holds level i+1; plain float64 tensors, not buffers: a .float() on the
        # module must not round the schedule
        self._c = {
            "ab": ab_t, "sqrt_ab": ab_t.sqrt(), "sqrt_1mab": (1 - ab_t).sqrt(),
            "coef_x0": beta * ab_prev.sqrt() / (1 - ab_t),
            "coef_xt": (1 - ab_prev) * (1 - beta).sqrt() / (1 - ab_t),
            "post_logvar": torch.log(torch.cat([post_var[1:2], post_var[1:]])) if T > 1 else torch.log(beta),
            "beta_logvar": torch.log(torch.cat([post_var[1:2], beta[1:]])) if T > 1 else torch.log(beta),
        }

    @property
    def T(self) -> int:
        return self.schedule.T

    def _coef(self, name, t, like):
        v = self._c[name].to(like.device)[(t - 1).long()]
        return v.view(-1, *([1] * (like.ndim - 1)))

    def _check(self, x):
        if x.ndim != 4 or (self.image_shape is not None and tuple(x.shape[1:]) != self.image_shape):
            raise ValueError(f"this model takes images of shape (B, {self.image_shape}), got {tuple(x.shape)}")

    def eps(self, x_t: torch.Tensor, t) -> torch.Tensor:
        """The network's eps prediction at levels ``t`` (B,) in 1..T."""
        t = torch.as_tensor(t, device=x_t.device).long().expand(x_t.shape[0])
        return self.net(x_t, t)

    # -- training -------------------------------------------------------------------
    def loss(self, x0: torch.Tensor, generator: torch.Generator | None = None):
        """L_simple (``MSE(eps, eps_hat)`` at t uniform in 1..T), plus the contrastive
        diffusion loss when ``cdl_weight > 0``. Returns ``(loss, parts)``."""
        self._check(x0)
        b = x0.shape[0]
        t = torch.randint(1, self.T + 1, (b,), generator=generator, device="cpu").to(x0.device)
        eps = torch.randn(x0.shape, generator=generator, device="cpu").to(x0.device, x0.dtype)
        x_t = self.schedule.q_sample(x0, t, eps)
        mse = ((eps - self.eps(x_t, t).float()) ** 2).mean()
        parts = {"mse": mse.detach()}
        loss = mse
        if self.cdl_weight > 0:
            from .contrastive import contrastive_diffusion_loss

            cdl = contrastive_diffusion_loss(self, x0, n_points=self.cdl_points, generator=generator)
            loss = loss + self.cdl_weight * cdl
            parts["cdl"] = cdl.detach()
        return loss, parts

    # -- the variational bound ----------------------------------------------------------
    def _model_logvar(self):
        return self._c["post_logvar" if self.var_type == "posterior" else "beta_logvar"]

    def vb_term(self, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, clip_denoised: bool = True) -> torch.Tensor:
        """The bound's term at levels ``t`` (B,) for noise ``eps`` (B or 1, C, H, W): the KL
        for t >= 2, the decoder NLL for t = 1. (B,) nats, float64. ``clip_denoised``
        clips the predicted x0 to [-1, 1] before it enters the model's mean, as the
        reference implementation does by default."""
        x_t = self.schedule.q_sample(x0, t, eps)
        with torch.no_grad():
            eps_hat = self.eps(x_t, t)
        x0d, xtd = x0.double(), x_t.double()
        x0_hat = (xtd - self._coef("sqrt_1mab", t, xtd) * eps_hat.double()) / self._coef("sqrt_ab", t, xtd)
        if clip_denoised:
            x0_hat = x0_hat.clamp(-1.0, 1.0)
        cx0, cxt = self._coef("coef_x0", t, xtd), self._coef("coef_xt", t, xtd)
        true_mean, model_mean = cx0 * x0d + cxt * xtd, cx0 * x0_hat + cxt * xtd
        model_logvar = self._model_logvar().to(x0.device)[(t - 1).long()].view(-1, 1, 1, 1).expand_as(x0d)
        true_logvar = self._c["post_logvar"].to(x0.device)[(t - 1).long()].view(-1, 1, 1, 1).expand_as(x0d)
        kl = gaussian_kl(true_mean, true_logvar, model_mean, model_logvar).flatten(1).sum(1)
        nll = -discretized_gaussian_log_likelihood(x0d, model_mean, 0.5 * model_logvar).flatten(1).sum(1)
        return torch.where(t == 1, nll, kl)

    def prior_nats(self, x0: torch.Tensor) -> torch.Tensor:
        """``KL(q(x_T | x0) || N(0, I))`` per image, nats float64 (B,)."""
        ab = self.schedule.alpha_bar[self.T].item()
        x = x0.double().flatten(1)
        return 0.5 * (-math.log(1 - ab) + (1 - ab) + ab * x**2 - 1).sum(1)

    @torch.no_grad()
    def vb_terms(self, x0: torch.Tensor, levels=None, generator: torch.Generator | None = None,
                 progress: bool = False, clip_denoised: bool = True, shared_noise: bool = False) -> torch.Tensor:
        """Per-level terms of the bound in bits/dim: (B, len(levels)), float64. ``levels``
        defaults to all of 1..T (column j is level j+1); one network call per level.
        ``shared_noise``: one noise image per level for the whole batch, so that with a
        fixed generator each image's terms do not depend on the batch it is in."""
        from tqdm.auto import tqdm

        self._check(x0)
        levels = list(range(1, self.T + 1)) if levels is None else [int(t) for t in levels]
        d = x0[0].numel()
        shape = (1, *x0.shape[1:]) if shared_noise else x0.shape
        out = torch.empty(x0.shape[0], len(levels), dtype=torch.float64)
        for j, lev in enumerate(tqdm(levels, desc="ELBO terms", disable=not progress, leave=False)):
            eps = torch.randn(shape, generator=generator, device="cpu").to(x0.device, x0.dtype)
            t = torch.full((x0.shape[0],), lev, device=x0.device, dtype=torch.long)
            out[:, j] = self.vb_term(x0, t, eps.expand_as(x0), clip_denoised).cpu() / (d * math.log(2))
        return out

    def stratified_levels(self, n_terms: int, generator: torch.Generator | None = None):
        """``(levels, weights)`` of the ``n_terms``-term estimate: level 1 (the decoder
        term, 30 - 60 % of the bound) with weight 1, and one level drawn uniformly in each
        of ``n_terms - 1`` equal strata of 2..T, weighted by its stratum's size. The
        weighted sum is an unbiased estimate of the sum over all levels."""
        if n_terms < 2:
            raise ValueError(f"n_terms must be at least 2 (the decoder term and one stratum), got {n_terms}")
        edges = torch.linspace(2, self.T + 1, n_terms).round().long().tolist()
        levels, weights = [1], [1.0]
        for lo, hi in zip(edges[:-1], edges[1:]):
            if hi > lo:
                levels.append(lo + int(torch.randint(0, hi - lo, (1,), generator=generator)))
                weights.append(float(hi - lo))
        return levels, torch.tensor(weights, dtype=torch.float64)

    @torch.no_grad()
    def elbo_bpd(self, x0: torch.Tensor, n_terms: int | None = None, generator: torch.Generator | None = None,
                 progress: bool = False, clip_denoised: bool = True, shared_noise: bool = False) -> torch.Tensor:
        """Negative ELBO in bits/dim (B,), float64: an upper bound on the NLL of 8-bit
        data. ``n_terms=None`` sums all T terms (T network calls); otherwise the prior and
        decoder terms exactly and the KL terms stratified (:meth:`stratified_levels`).
        ``clip_denoised`` (default, as in the reference implementation) clips the
        predicted x0 to [-1, 1]."""
        d = x0[0].numel()
        prior = (self.prior_nats(x0) / (d * math.log(2))).cpu()
        opts = dict(generator=generator, clip_denoised=clip_denoised, shared_noise=shared_noise)
        if n_terms is None or n_terms >= self.T:
            return prior + self.vb_terms(x0, progress=progress, **opts).sum(1)
        levels, weights = self.stratified_levels(n_terms, generator)
        return prior + self.vb_terms(x0, levels, progress=progress, **opts) @ weights

    # -- sampling ---------------------------------------------------------------------
    def sample(self, n: int, steps: int | None = None, method: str = "ddpm", generator=None, device=None,
               progress: bool = False) -> torch.Tensor:
        """``n`` images (n, C, H, W) by the sampler the CDM uses too."""
        eta = eta_for(method)
        device = device or next(self.parameters()).device
        with torch.no_grad():
            return sample_loop(self.eps, self.schedule, (n, *self.image_shape), steps=steps, eta=eta,
                               generator=generator, device=device, progress=progress)

    def config(self) -> dict:
        return {"var_type": self.var_type, "cdl_weight": self.cdl_weight, "cdl_points": self.cdl_points}
