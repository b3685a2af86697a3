"""Seeded random weights for tiny test models (no training: the numbers they give depend
on nothing but the seed and the arithmetic)."""
import torch


def seeded(model, seed: int):
    """``model`` in eval mode with weights drawn from N(0, 0.2^2) (biases N(0, 0.05^2))."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.2 if p.ndim > 1 else 0.05))
    return model.eval()
