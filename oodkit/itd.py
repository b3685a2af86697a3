"""Information-theoretic likelihood (Kong, Brekelmans & Ver Steeg, ICLR 2023).

With ``mmse(x, a) = E ||eps - eps_hat(z_a, a)||^2`` and
``z_a = sqrt(sigmoid(a)) x + sqrt(sigmoid(-a)) eps``, pointwise for the optimal denoiser:

* **continuous density** (nats, on the [-1, 1] scale, standard-normal base)::

      -log p(x) = (d/2) log(2 pi e) + 1/2 * integral over a of [mmse(x, a) - d * sigmoid(a)]

* **discrete probability** of 8-bit data (nats of ``P(x)`` over the 256^d pixel values)::

      -log P(x) = 1/2 * integral over a of mmse(x, a)

  Above the span's top ``a_max`` the rest of the integral is ``-log P(x | z_a_max)``,
  the information still needed to resolve each pixel: it is taken as the ELBO's decoder
  term (a Gaussian around the denoiser's x0 with the noise's std, discretized into the
  pixel bins), so a model whose levels stop short of pixel resolution (a DDPM's linear
  schedule ends at log-SNR 9.2) is not cut off there.

  For discrete data the continuous identity diverges as ``a -> inf`` (the denoiser
  recovers ``x`` exactly, ``mmse -> 0``, and ``-d sigmoid(a)`` is left), which made the
  old estimate depend on where the integral was cut. The discrete integrand decays at
  both ends, so the estimate does not: ``discrete=True`` is what 8-bit images need.
  Its upper bound, where no denoiser is given levels, is tied to the pixel bin:
  :func:`discrete_logsnr_max` (noise std one eighth of half a bin).

The integral over ``[a_lo, a_hi]`` is estimated by importance sampling ``a`` from a
truncated logistic (densities) or uniformly (discrete), stratified. ``a_lo, a_hi``
default to the span of the model's levels when the denoiser has them (nothing outside
it was ever trained). Below the span (and above it, for densities) the integrands decay
like ``e^-|a - a_end|`` (exactly so for Gaussian data at the low end), so the proposal
reaches past the span and a point there counts as the end's integrand damped by that
factor: those tails are in the estimate and in its standard error.

Any model serves through a *denoiser* ``(z, a) -> eps_hat``: :func:`discrete_denoiser`
adapts a model with integer levels (DDPM, or a CDM through Theorem 3.1). Its sampled
log-SNRs are snapped to the nearest level *before* ``z_a`` is drawn, so the network only
ever sees inputs noised to its own levels and the estimate becomes a Riemann sum over
them (exact as the level spacing shrinks).

``shared_noise=True`` uses one noise image per point for every image of the batch, so
that with a fixed generator the estimate is a deterministic function of each image,
whatever the batch it is scored in.

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

from .discrete import discretized_gaussian_log_likelihood

__all__ = ["itd_nll", "discrete_denoiser", "level_logsnr", "discrete_logsnr_max"]


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


LOGISTIC_REACH = 20.0  # how far past the span each proposal reaches; e^-20 of the end value is nothing,
UNIFORM_REACH = 3.0  # and a uniform spends few points on the e^-3 = 5 % of a tail it leaves out


def discrete_logsnr_max(levels: int = 256) -> float:
    """Log-SNR at which the noise std, on the [-1, 1] scale, is one eighth of half a pixel
    bin (``1 / (levels - 1)``): beyond it an 8-bit image's denoising error is negligible."""
    half_bin = 1.0 / (levels - 1)
    return -2.0 * math.log(half_bin / 8.0)


@torch.no_grad()
def itd_nll(
    x: torch.Tensor,
    denoiser: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    n_points: int = 64,
    loc: float = 1.0,
    scale: float = 2.0,
    a_min: float | None = None,
    a_max: float | None = None,
    generator: torch.Generator | None = None,
    grad: bool = False,
    base_logsnr: float | None = None,
    discrete: bool = False,
    shared_noise: bool = False,
    tails: bool = True,
    proposal: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``-log p(x)`` in nats (B,) float64, and the standard error of the estimate (B,).

    ``discrete``: ``-log P(x)`` of 8-bit data (divide by ``d ln 2`` for bits/dim, the
    units of a DDPM's ELBO); otherwise the continuous density on [-1, 1].
    ``a_min, a_max``: the integration span; defaults: the denoiser's level span, else
    ``[-12, 14]`` (continuous) or ``[-12, discrete_logsnr_max()]`` (discrete).
    ``n_points`` denoiser calls per batch (+1 for the decoder term when ``discrete``);
    ``tails`` adds the tails.
    ``proposal``: ``"logistic"`` (default for densities) or ``"uniform"`` (default for
    ``discrete``: its integrand is near d over most of the span, and a logistic leaves
    the high-SNR end, where 8-bit pixels are resolved, with few points). ``grad=True`` keeps the
    graph through the denoiser (for training losses). ``base_logsnr``: the density of the
    data noised to that log-SNR rather than of the data (continuous only)."""
    levels = getattr(denoiser, "logsnr", None)
    proposal = proposal or ("uniform" if discrete else "logistic")
    if discrete and base_logsnr is not None:
        raise ValueError("base_logsnr gives a continuous density; it does not combine with discrete=True")
    a_min, a_max = _span(levels, discrete, a_min, a_max)
    # the proposal reaches past each end of the span: a point there is the end's integrand
    # damped by e^-|a - end|, so the tails are part of the estimate and of its error
    reach = (LOGISTIC_REACH if proposal == "logistic" else UNIFORM_REACH) if tails else 0.0
    # discrete data: above the span the integrand does not decay until the noise is below
    # a pixel bin, so the upper tail is the decoder term -log P(x | z_{a_max}) instead
    lo_a, hi_a = a_min - reach, a_max + (0.0 if discrete else reach)
    with torch.set_grad_enabled(grad):
        b, d = x.shape[0], x[0].numel()
        a, q = _points(n_points, generator, proposal, lo_a, hi_a, loc, scale)
        s_base = 1.0 if base_logsnr is None else 1.0 / (1.0 + math.exp(-base_logsnr))
        noise_shape = (1, *x.shape[1:]) if shared_noise else x.shape
        vals = []
        for ai, qi in zip(a.tolist(), q.tolist()):
            eps = torch.randn(noise_shape, generator=generator, device="cpu").to(x.device, x.dtype)
            end = min(max(ai, a_min), a_max)
            err, sb = _squared_error(x, eps, denoiser, end, s_base, levels)
            vals.append(torch.zeros(b, dtype=torch.float64, device=x.device) if err is None else
                        (err if discrete else err - d * sb) * (math.exp(-abs(ai - end)) / qi))
        vals = torch.stack(vals, dim=1)  # (B, n_points)
        integral = vals.mean(1)
        stderr = 0.5 * vals.std(1) / math.sqrt(n_points) if n_points > 1 else torch.full_like(integral, float("nan"))
        nll = 0.5 * integral if discrete else 0.5 * d * math.log(2 * math.pi * math.e) + 0.5 * integral
        if discrete and tails:
            nll = nll + _decoder_nats(x, denoiser, a_max, levels, noise_shape, generator)
        return nll, stderr.detach()


def _span(levels, discrete: bool, a_min, a_max) -> tuple[float, float]:
    """The integration span: the given ends within the denoiser's level span, else its
    span, else [-12, 14] (continuous) or [-12, discrete_logsnr_max()] (discrete)."""
    span_lo = float(levels.min()) if levels is not None else -12.0
    span_hi = float(levels.max()) if levels is not None else (discrete_logsnr_max() if discrete else 14.0)
    a_min = span_lo if a_min is None else max(float(a_min), span_lo) if levels is not None else float(a_min)
    a_max = span_hi if a_max is None else min(float(a_max), span_hi) if levels is not None else float(a_max)
    if not a_min < a_max:
        raise ValueError(f"empty integration span [{a_min}, {a_max}]")
    return a_min, a_max


def _points(n_points: int, generator, proposal: str, lo_a: float, hi_a: float, loc: float, scale: float):
    """Stratified log-SNR points on [lo_a, hi_a] under the proposal, shared across the
    batch, and the proposal's density at each: float64 (n_points,) twice."""
    u = (torch.arange(n_points, dtype=torch.float64) + torch.rand(n_points, generator=generator, dtype=torch.float64)) / n_points
    if proposal == "logistic":  # truncated logistic, Kong et al.'s choice for densities
        lo = _logistic_cdf(torch.tensor(lo_a, dtype=torch.float64), loc, scale)
        hi = _logistic_cdf(torch.tensor(hi_a, dtype=torch.float64), loc, scale)
        u = lo + (hi - lo) * u
        a = loc + scale * torch.log(u / (1 - u))
        s = torch.sigmoid((a - loc) / scale)
        return a, s * (1 - s) / scale / (hi - lo)
    if proposal == "uniform":  # the discrete integrand is near d over most of the span
        a = lo_a + (hi_a - lo_a) * u
        return a, torch.full_like(a, 1.0 / (hi_a - lo_a))
    raise ValueError(f"proposal must be 'logistic' or 'uniform', got {proposal!r}")


def _squared_error(x, eps, denoiser, end: float, s_base: float, levels):
    """``||eps - eps_hat||^2`` (B,) float64 at log-SNR ``end`` (snapped to a level the model
    knows), and the step's signal share ``sb``; ``(None, sb)`` where the step is empty."""
    s_data = 1.0 / (1.0 + math.exp(-end)) * s_base
    a_data = _snap(math.log(s_data) - math.log1p(-s_data), levels)
    s_data = 1.0 / (1.0 + math.exp(-a_data))
    sb = s_data / s_base  # sigmoid of the step from x's own distribution
    if not 0.0 < sb < 1.0:
        return None, sb
    z = math.sqrt(sb) * x + math.sqrt(1 - sb) * eps
    eps_hat = denoiser(z, torch.full((x.shape[0],), a_data, dtype=torch.float64))
    eps_hat = eps_hat * math.sqrt((1 - sb) / (1 - s_data))
    return ((eps - eps_hat) ** 2).flatten(1).sum(1).double(), sb


def _decoder_nats(x, denoiser, a_top, levels, noise_shape, generator) -> torch.Tensor:
    """``-log P(x | z)`` at log-SNR ``a_top``: what is left to resolve the 8-bit pixels
    once the noise is at ``a_top``. By the I-MMSE identity it is half the integral of the
    discrete integrand above ``a_top``; it is estimated as the ELBO's decoder does, a
    Gaussian around the denoiser's x0 with the noise's std ``e^(-a/2)``, discretized
    into the 256 bins. (B,) nats, float64."""
    a_top = _snap(a_top, levels)
    s = 1.0 / (1.0 + math.exp(-a_top))
    eps = torch.randn(noise_shape, generator=generator, device="cpu").to(x.device, x.dtype)
    z = math.sqrt(s) * x + math.sqrt(1 - s) * eps
    eps_hat = denoiser(z, torch.full((x.shape[0],), a_top, dtype=torch.float64))
    x0 = ((z.double() - math.sqrt(1 - s) * eps_hat.double()) / math.sqrt(s)).clamp(-1, 1)
    log_scale = torch.full_like(x0, -0.5 * a_top)
    return -discretized_gaussian_log_likelihood(x.double(), x0, log_scale).flatten(1).sum(1)
