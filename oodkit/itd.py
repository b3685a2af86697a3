"""Information-theoretic likelihood (Kong, Brekelmans & Ver Steeg, ICLR 2023).

For a standard-normal base,

    -log p(x) = (d/2) log(2 pi e) + 1/2 * integral over log-SNR a of [mmse(x, a) - d * sigmoid(a)]

with ``mmse(x, a) = E ||eps - eps_hat(z_a, a)||^2`` and
``z_a = sqrt(sigmoid(a)) x + sqrt(sigmoid(-a)) eps``. The identity holds pointwise for
the optimal denoiser. The integral is estimated by importance sampling ``a`` from a
logistic distribution truncated to ``[a_min, a_max]`` (stratified), one ``eps`` per
point; the truncated tails decay like ``e^-|a|``.

Any model serves through a *denoiser* ``(z, a) -> eps_hat``: :func:`discrete_denoiser`
adapts a model with integer levels (DDPM, or a CDM through Theorem 3.1). Its sampled
log-SNRs are snapped to the nearest level *before* ``z_a`` is drawn, so the network only
ever sees inputs noised to its own levels and the estimate becomes a Riemann sum over
them (exact as the level spacing shrinks).

``base_logsnr`` gives the density of a noised distribution instead: ``p_zeta`` of
``x_zeta = sqrt(sigmoid(zeta)) x0 + sqrt(sigmoid(-zeta)) eps``. Noising ``z ~ p_zeta``
further to log-SNR ``b`` is noising ``x0`` to ``a`` with ``sigmoid(a) =
sigmoid(b) sigmoid(zeta)``, and by Tweedie the eps of that further step is
``sqrt(sigmoid(-b) / (1 - sigmoid(a)))`` times the data denoiser's eps.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

__all__ = ["itd_nll", "discrete_denoiser", "level_logsnr"]


def level_logsnr(schedule) -> torch.Tensor:
    """``log(abar_t / (1 - abar_t))`` for t = 0..T+1 (+inf and -inf at the ends), float64."""
    ab = schedule.alpha_bar
    return torch.log(ab) - torch.log1p(-ab)


def discrete_denoiser(model) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``(z (B, ...), a (B,)) -> eps_hat`` from ``model.eps(x_t, t)`` at the level of nearest
    log-SNR among 1..T. The snap costs accuracy of order the levels' log-SNR spacing."""
    snr = level_logsnr(model.schedule)[1:-1]

    def denoise(z, a):
        t = (snr[None, :] - a.double().cpu()[:, None]).abs().argmin(1) + 1
        return model.eps(z, t.to(z.device))

    denoise.logsnr = snr
    return denoise


def _snap(a: float, levels: torch.Tensor | None) -> float:
    if levels is None:
        return a
    return levels[(levels - a).abs().argmin()].item()


def _logistic_cdf(a, loc, scale):
    return torch.sigmoid((a - loc) / scale)


@torch.no_grad()
def itd_nll(
    x: torch.Tensor,
    denoiser: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    n_points: int = 64,
    loc: float = 1.0,
    scale: float = 2.0,
    a_min: float = -12.0,
    a_max: float = 14.0,
    generator: torch.Generator | None = None,
    grad: bool = False,
    base_logsnr: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``-log p(x)`` in nats (B,) float64, and the standard error of the estimate (B,).

    ``n_points`` denoiser calls per batch. ``grad=True`` keeps the graph through the
    denoiser (for training losses built on the estimate). ``base_logsnr``: the density of
    the data noised to that log-SNR rather than of the data."""
    levels = getattr(denoiser, "logsnr", None)
    with torch.set_grad_enabled(grad):
        b, d = x.shape[0], x[0].numel()
        lo = _logistic_cdf(torch.tensor(a_min, dtype=torch.float64), loc, scale)
        hi = _logistic_cdf(torch.tensor(a_max, dtype=torch.float64), loc, scale)
        # stratified uniforms -> truncated logistic, shared across the batch
        u = (torch.arange(n_points, dtype=torch.float64) + torch.rand(n_points, generator=generator, dtype=torch.float64)) / n_points
        u = lo + (hi - lo) * u
        a = loc + scale * torch.log(u / (1 - u))
        s = torch.sigmoid((a - loc) / scale)
        q = s * (1 - s) / scale / (hi - lo)  # density of the truncated logistic
        vals = []
        s_base = 1.0 if base_logsnr is None else 1.0 / (1.0 + math.exp(-base_logsnr))
        for ai, qi in zip(a, q):
            eps = torch.randn(x.shape, generator=generator, device="cpu").to(x.device, x.dtype)
            # the data's own log-SNR at this point, snapped to a level the model knows
            s_data = torch.sigmoid(ai).item() * s_base
            a_data = _snap(math.log(s_data) - math.log1p(-s_data), levels)
            s_data = 1.0 / (1.0 + math.exp(-a_data))
            sb = s_data / s_base  # sigmoid of the step from x's own distribution
            if not 0.0 < sb < 1.0:
                vals.append(torch.zeros(b, dtype=torch.float64, device=x.device))
                continue
            z = math.sqrt(sb) * x + math.sqrt(1 - sb) * eps
            eps_hat = denoiser(z, torch.full((b,), a_data, dtype=torch.float64))
            eps_hat = eps_hat * math.sqrt((1 - sb) / (1 - s_data))
            err = ((eps - eps_hat) ** 2).flatten(1).sum(1).double()
            vals.append((err - d * sb) / qi.item())
        vals = torch.stack(vals, dim=1)  # (B, n_points)
        integral = vals.mean(1)
        stderr = 0.5 * vals.std(1) / math.sqrt(n_points) if n_points > 1 else torch.full_like(integral, float("nan"))
        nll = 0.5 * d * math.log(2 * math.pi * math.e) + 0.5 * integral
        return nll, stderr.detach()
