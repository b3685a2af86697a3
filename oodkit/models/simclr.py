"""Label-free instance discrimination for a CDM's pooled features (SimCLR-style, Chen et
al. 2020): two random views of every clean image, and the NT-Xent loss that asks each
view's projected features to pick out its twin among the other ``2B - 2`` views. Only
training uses this; scoring reads the pooled features of the upright image as before.

Images are (B, C, H, W) in [-1, 1]; every random draw comes from a CPU generator, one
row per image in batch order, so a seeded training step repeats exactly.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["random_views", "nt_xent", "PROJECTION_DIM"]

PROJECTION_DIM = 64  # what `oodkit train --contrastive-head` projects the pooled features to


def random_views(x: torch.Tensor, generator: torch.Generator | None = None, crop=(0.5, 1.0),
                 jitter: float = 0.4, grey: float = 0.2) -> torch.Tensor:
    """One random view of each image (B, C, H, W), same shape and dtype, in [-1, 1].

    A square crop covering a fraction ``U(crop)`` of the image's area at a uniform
    position, resized back to H x W (bilinear, edges repeated); a mirror image with
    probability 1/2; contrast and brightness each moved by up to ``jitter`` (a factor
    ``1 +- jitter`` about the image's mean, a shift of ``+- jitter / 2`` in [-1, 1] units);
    for 3-channel images, grey with probability ``grey``. Label-free: nothing here reads a
    class."""
    b, c = x.shape[:2]
    u = torch.rand(b, 7, generator=generator).to(x.device, torch.float32)
    side = torch.sqrt(crop[0] + (crop[1] - crop[0]) * u[:, 0])
    theta = torch.zeros(b, 2, 3, device=x.device)
    theta[:, 0, 0] = torch.where(u[:, 3] < 0.5, -side, side)
    theta[:, 1, 1] = side
    theta[:, 0, 2] = (1 - side) * (2 * u[:, 1] - 1)
    theta[:, 1, 2] = (1 - side) * (2 * u[:, 2] - 1)
    grid = F.affine_grid(theta, (b, c, *x.shape[2:]), align_corners=False)
    v = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    mean = v.mean(dim=(1, 2, 3), keepdim=True)
    contrast = (1 + jitter * (2 * u[:, 4] - 1))[:, None, None, None]
    shift = (jitter / 2 * (2 * u[:, 5] - 1))[:, None, None, None]
    v = (v - mean) * contrast + mean + shift
    if c == 3:
        v = torch.where((u[:, 6] < grey)[:, None, None, None], v.mean(dim=1, keepdim=True).expand_as(v), v)
    return v.clamp(-1, 1).to(x.dtype)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """The normalised-temperature cross-entropy of two views' projections ``z1``, ``z2``
    (B, D): each of the 2B rows, L2-normalised, classifies its twin among the other
    2B - 1 rows by cosine similarity / ``temperature``. A mean over rows (nats, float32),
    so it does not depend on the order of the pairs; ``log(2B - 1)`` when the rows carry
    no information."""
    if z1.shape != z2.shape or z1.ndim != 2 or z1.shape[0] < 2:
        raise ValueError(f"nt_xent takes two (B, D) tensors of the same shape with B >= 2, got "
                         f"{tuple(z1.shape)} and {tuple(z2.shape)}")
    b = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    sim = (z @ z.T) / temperature
    sim = sim.masked_fill(torch.eye(2 * b, dtype=torch.bool, device=z.device), float("-inf"))
    twin = torch.cat([torch.arange(b, 2 * b), torch.arange(b)]).to(z.device)
    return F.cross_entropy(sim, twin)
