"""Samplers that need only a noise predictor ``eps_fn(x_t, t)`` and a schedule, so the
CDM (eps from Theorem 3.1) and the DDPM baseline share them."""
from __future__ import annotations

import numbers
from typing import Callable

import torch
from tqdm.auto import tqdm

from ..schedules import NoiseSchedule

__all__ = ["sample_loop", "sampling_levels", "eta_for"]


def eta_for(method: str) -> float:
    """The sampler's eta for a method name: "ddpm" (ancestral, 1) or "ddim" (deterministic, 0)."""
    etas = {"ddpm": 1.0, "ddim": 0.0}
    if method not in etas:
        raise ValueError(f"method must be one of {sorted(etas)}, got {method!r}")
    return etas[method]


def sampling_levels(T: int, steps: int | None) -> list[int]:
    """Decreasing levels ``T = t_0 > t_1 > ... > 0`` visited by the sampler."""
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1):
        raise ValueError(f"steps must be a positive whole number (or None: every level), got {steps!r}")
    if steps is None or steps >= T:
        return list(range(T, 0, -1)) + [0]
    lv = torch.linspace(T, 0, steps + 1).round().long().tolist()
    return sorted(set(lv), reverse=True)


@torch.no_grad()
def sample_loop(
    eps_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    schedule: NoiseSchedule,
    shape: tuple,
    steps: int | None = None,
    eta: float = 1.0,
    clip: bool = True,
    generator: torch.Generator | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> torch.Tensor:
    """Generalised DDIM update between consecutive visited levels.

    ``eta = 1`` with every level is DDPM's ancestral sampler (posterior variance);
    ``eta = 0`` is deterministic DDIM. Starts from ``N(0, I)`` at level T and returns
    images at level 0 in [-1, 1] (clipped when ``clip``), shape ``shape``.
    """
    n = shape[0]
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
        raise ValueError(f"n must be a whole number of images, 0 or more, got {n!r}")
    device = torch.device(device)
    ab = schedule.alpha_bar.to(device)
    x = torch.randn(shape, generator=generator, device="cpu").to(device)
    levels = sampling_levels(schedule.T, steps)
    pairs = list(zip(levels[:-1], levels[1:]))
    for t, s in tqdm(pairs, desc="sampling", disable=not progress, leave=False):
        tt = torch.full((shape[0],), t, device=device, dtype=torch.long)
        eps = eps_fn(x, tt).to(x.dtype)
        a_t, a_s = ab[t].to(x.dtype), ab[s].to(x.dtype)
        x0 = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
        if clip:
            x0 = x0.clamp(-1, 1)
            eps = (x - a_t.sqrt() * x0) / (1 - a_t).sqrt()
        var = eta**2 * (1 - a_s) / (1 - a_t) * (1 - a_t / a_s)
        x = a_s.sqrt() * x0 + (1 - a_s - var).clamp(min=0).sqrt() * eps
        if s > 0 and eta > 0:
            x = x + var.sqrt() * torch.randn(shape, generator=generator, device="cpu").to(device)
    return x
