"""The device rule, for the command line and the library alike: the device asked for,
else CUDA when there is a GPU, else the CPU; a device this machine lacks is a one-line
ValueError before any work."""
from __future__ import annotations

import torch

__all__ = ["default_device", "resolve_device"]


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(value=None) -> torch.device:
    """``value`` (None, a string or a ``torch.device``) as a device that exists here."""
    if value is None:
        return default_device()
    try:
        dev = torch.device(value)
    except (RuntimeError, ValueError, TypeError):
        raise ValueError(f"{value!r} is not a device; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{value}: this machine has no CUDA GPU (use cpu)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"{value}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ValueError(f"{value}: this machine has no Apple MPS device (use cpu)")
    elif dev.type != "cpu":
        raise ValueError(f"{value}: oodkit runs on cpu, cuda or mps")
    return dev
