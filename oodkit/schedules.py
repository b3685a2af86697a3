"""Noise schedules over the T+2 classes of a classification diffusion model.

Level ``t = 0`` is clean data, ``t = 1..T`` the variance-preserving levels
``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`` and ``t = T+1`` pure ``N(0, I)``.
The schedule is held as a float64 ``alpha_bar`` tensor of length ``T+2`` with
``alpha_bar[0] == 1`` and ``alpha_bar[T+1] == 0``.
"""
from __future__ import annotations

import math

import torch

__all__ = ["NoiseSchedule"]


class NoiseSchedule:
    """Cumulative signal fractions ``alpha_bar`` for levels ``0..T+1``.

    Build one with :meth:`linear`, :meth:`uniform` or :meth:`cosine`, or pass any
    non-increasing float64 tensor that starts at 1 and ends at 0.
    """

    def __init__(self, alpha_bar: torch.Tensor, name: str = "custom"):
        ab = torch.as_tensor(alpha_bar, dtype=torch.float64).detach().cpu().clone()
        if ab.ndim != 1 or ab.numel() < 3:
            raise ValueError(f"alpha_bar must be 1-D with at least 3 entries, got shape {tuple(ab.shape)}")
        if not torch.isfinite(ab).all():
            raise ValueError("alpha_bar contains NaN or inf")
        if ab[0] != 1.0 or ab[-1] != 0.0:
            raise ValueError(
                f"alpha_bar must start at 1 (clean data) and end at 0 (pure noise); "
                f"got {ab[0].item():.6g} and {ab[-1].item():.6g}"
            )
        if (ab[1:] > ab[:-1]).any() or (ab < 0).any() or (ab > 1).any():
            raise ValueError("alpha_bar must be non-increasing and lie in [0, 1]")
        self.alpha_bar = ab
        self.name = str(name)
        self._device_cache: dict = {}

    # -- constructors ------------------------------------------------------------
    @classmethod
    def linear(cls, T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> "NoiseSchedule":
        """DDPM's schedule: betas linear in t, ``abar_t = prod_{s<=t} (1 - beta_s)``."""
        T = _check_T(T)
        betas = torch.linspace(beta_start, beta_end, T, dtype=torch.float64)
        mid = torch.cumprod(1.0 - betas, dim=0)
        return cls(torch.cat([_one(), mid, _zero()]), name="linear")

    @classmethod
    def uniform(cls, T: int = 1000) -> "NoiseSchedule":
        """The CDM paper's schedule: noise standard deviation ``sqrt(1 - abar_t) = t / (T+1)``."""
        T = _check_T(T)
        sigma = torch.arange(T + 2, dtype=torch.float64) / (T + 1)
        return cls(1.0 - sigma**2, name="uniform")

    @classmethod
    def cosine(cls, T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> "NoiseSchedule":
        """Nichol & Dhariwal's cosine schedule, betas clipped at ``max_beta`` so that
        ``abar_T`` stays above zero and level T differs from the pure-noise class."""
        T = _check_T(T)
        t = torch.arange(T + 1, dtype=torch.float64) / T
        f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
        betas = (1 - f[1:] / f[:-1]).clamp(max=max_beta)
        mid = torch.cumprod(1.0 - betas, dim=0)
        return cls(torch.cat([_one(), mid, _zero()]), name="cosine")

    @classmethod
    def from_name(cls, name: str, T: int = 1000) -> "NoiseSchedule":
        makers = {"linear": cls.linear, "uniform": cls.uniform, "cosine": cls.cosine}
        if name not in makers:
            raise ValueError(f"unknown schedule {name!r}; choose one of {sorted(makers)}")
        return makers[name](T)

    # -- properties --------------------------------------------------------------
    @property
    def T(self) -> int:
        """Number of noisy levels; there are ``T + 2`` classes in all."""
        return self.alpha_bar.numel() - 2

    @property
    def num_classes(self) -> int:
        return self.alpha_bar.numel()

    @property
    def sigma(self) -> torch.Tensor:
        """Noise standard deviation ``sqrt(1 - abar_t)`` per level, float64 (T+2,)."""
        return (1.0 - self.alpha_bar).clamp(min=0).sqrt()

    def coefficients(self, t: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(sqrt(abar_t), sqrt(1 - abar_t))`` for integer levels ``t`` (B,), shaped to
        broadcast against ``like`` (B, ...) and cast to its device and dtype."""
        ab = self._on(like.device)[t.long()].to(like.dtype)
        shape = (-1,) + (1,) * (like.ndim - 1)
        return ab.sqrt().view(shape), (1 - ab).clamp(min=0).sqrt().view(shape)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """Noised images ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`` (same shape as x0)."""
        if x0.shape != eps.shape:
            raise ValueError(f"x0 {tuple(x0.shape)} and eps {tuple(eps.shape)} differ in shape")
        t = torch.as_tensor(t, device=x0.device)
        if t.ndim == 0:
            t = t.expand(x0.shape[0])
        if t.shape != (x0.shape[0],):
            raise ValueError(f"t must be a scalar or shape ({x0.shape[0]},), got {tuple(t.shape)}")
        if (t < 0).any() or (t > self.T + 1).any():
            raise ValueError(f"levels must lie in 0..{self.T + 1}")
        a, s = self.coefficients(t, x0)
        return a * x0 + s * eps

    def _on(self, device: torch.device) -> torch.Tensor:
        key = str(device)
        if key not in self._device_cache:
            self._device_cache[key] = self.alpha_bar.to(device)
        return self._device_cache[key]

    # -- serialisation -----------------------------------------------------------
    def to_dict(self) -> dict:
        """Plain values and a tensor, safe for ``torch.load(weights_only=True)``."""
        return {"name": self.name, "T": self.T, "alpha_bar": self.alpha_bar.clone()}

    @classmethod
    def from_dict(cls, d: dict) -> "NoiseSchedule":
        try:
            return cls(d["alpha_bar"], name=d.get("name", "custom"))
        except (KeyError, TypeError) as e:
            raise ValueError(f"not a serialised NoiseSchedule: {e}") from None

    def __eq__(self, other) -> bool:
        return isinstance(other, NoiseSchedule) and torch.equal(self.alpha_bar, other.alpha_bar)

    def __repr__(self) -> str:
        return f"NoiseSchedule(name={self.name!r}, T={self.T})"


def _check_T(T) -> int:
    if int(T) != T or T < 1:
        raise ValueError(f"T must be a positive integer, got {T!r}")
    return int(T)


def _one():
    return torch.ones(1, dtype=torch.float64)


def _zero():
    return torch.zeros(1, dtype=torch.float64)
