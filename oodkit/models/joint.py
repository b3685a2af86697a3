"""Joint diffusion model (Deja et al., 2023): one time-conditioned UNet both denoises and,
through a classifier head on global average pools of its encoder activations, labels
images. ``L = L_simple + ce_weight * CE(head(x0), y)``.

Its softmax gives the classifier OOD scores (maximum softmax probability, energy)
beside the diffusion likelihood, and its own head guides conditional sampling.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..schedules import NoiseSchedule
from .ddpm import DDPM
from .sampling import eta_for, sample_loop

__all__ = ["JointDiffusion"]


class JointDiffusion(DDPM):
    """A :class:`DDPM` with a classifier head over ``num_labels`` classes.

    The head reads the encoder at level 0 (the clean input); guidance applies it to
    noisy inputs at their own level, as the shared encoder is time-conditioned.
    """

    kind = "joint"
    needs_labels = True

    def __init__(self, net: nn.Module, schedule: NoiseSchedule, num_labels: int = 10, ce_weight: float = 1e-3,
                 var_type: str = "beta", image_shape=None, **ddpm_kwargs):
        super().__init__(net, schedule, var_type=var_type, image_shape=image_shape, **ddpm_kwargs)
        if not hasattr(net, "encoder_features"):
            raise TypeError("a joint diffusion model needs a net with encoder_features (oodkit's UNet)")
        self.num_labels, self.ce_weight = int(num_labels), float(ce_weight)
        self.head = nn.Sequential(nn.Linear(net.encoder_channels, 256), nn.SiLU(), nn.Linear(256, self.num_labels))

    def classify_logits(self, x: torch.Tensor, t=None) -> torch.Tensor:
        """Class logits (B, num_labels) of images at level ``t`` (0, clean, by default)."""
        t = torch.zeros(x.shape[0], dtype=torch.long, device=x.device) if t is None else \
            torch.as_tensor(t, device=x.device).long().expand(x.shape[0])
        return self.head(self.net.encoder_features(x, t)).float()

    def loss(self, x0: torch.Tensor, generator=None, y: torch.Tensor | None = None):
        loss, parts = super().loss(x0, generator=generator)
        if y is None:
            raise ValueError("a joint diffusion model trains on labels: pass labels to train()")
        ce = F.cross_entropy(self.classify_logits(x0), y.to(x0.device).long())
        parts["ce"] = ce.detach()
        return loss + self.ce_weight * ce, parts

    def sample(self, n: int, steps: int | None = None, method: str = "ddpm", generator=None, device=None,
               progress: bool = False, y=None, guidance: float = 1.0) -> torch.Tensor:
        """Unconditional, or conditioned on labels ``y`` (n,) by the model's own head:
        ``eps - guidance * sqrt(1 - abar_t) * grad log p(y | x_t)``."""
        if y is None:
            return super().sample(n, steps, method, generator, device, progress)
        device = device or next(self.parameters()).device
        y = torch.as_tensor(y, device=device).long().expand(n)

        def guided(x_t, t):
            with torch.enable_grad():
                x = x_t.detach().requires_grad_(True)
                logp = torch.log_softmax(self.classify_logits(x, t), dim=1).gather(1, y[:, None]).sum()
                (g,) = torch.autograd.grad(logp, x)
            sigma = (1 - self.schedule.alpha_bar.to(device)[t]).sqrt().to(x_t.dtype).view(-1, 1, 1, 1)
            return self.eps(x_t, t) - guidance * sigma * g

        return sample_loop(guided, self.schedule, (n, *self.image_shape), steps=steps, eta=eta_for(method),
                           generator=generator, device=device, progress=progress)

    def config(self) -> dict:
        return {**super().config(), "num_labels": self.num_labels, "ce_weight": self.ce_weight}
