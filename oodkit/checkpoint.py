"""Checkpoints: a dict of plain values and tensors, written atomically and read with
``torch.load(weights_only=True)`` so that loading never executes pickled code.

Layout (format version 1)::

    {"format": "oodkit", "format_version": 1, "oodkit_version": str,
     "kind": "cdm", "net": {"name": "unet", "config": {...}},
     "model": {...model config...}, "schedule": {"name", "T", "alpha_bar"},
     "data": {...what it was trained on...},
     "state_dict": {...}, "ema_state_dict": {...} or None,
     "train_state": {...optimizer, step, RNG, config...} or None}
"""
from __future__ import annotations

import os
import pickle
import re
import tempfile
import zipfile
from pathlib import Path

import torch

from .schedules import NoiseSchedule

__all__ = ["save_checkpoint", "load_checkpoint", "load_model", "build_model", "CheckpointError", "file_sha256"]

FORMAT = "oodkit"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A file that is not a usable oodkit checkpoint."""


def _model_kinds():
    from .models.cdm import CDM
    from .models.ddpm import DDPM
    from .models.joint import JointDiffusion

    return {"cdm": CDM, "ddpm": DDPM, "joint": JointDiffusion}


def build_model(kind: str, net_config: dict, schedule: NoiseSchedule, model_config: dict | None = None):
    """Construct a fresh model of ``kind`` from plain configuration values."""
    from .nn.unet import UNet, UNetConfig

    kinds = _model_kinds()
    if kind not in kinds:
        raise CheckpointError(f"unknown model kind {kind!r}; this oodkit knows {sorted(kinds)}")
    net = UNet(UNetConfig.from_dict(net_config))
    cfg = dict(model_config or {})
    cfg.pop("image_shape", None)  # derived from the net's config
    return kinds[kind](net, schedule, **cfg)


def save_checkpoint(path, model, ema_state_dict=None, train_state=None, data=None) -> Path:
    """Write ``model`` (and optionally EMA weights and training state) to ``path``
    atomically: a killed run leaves the previous file intact, never half of a new one."""
    path = Path(path)
    net = model.net
    if not hasattr(net, "config"):
        raise TypeError("only models built on oodkit's UNet can be checkpointed")
    ckpt = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "oodkit_version": _version(),
        "kind": model.kind,
        "net": {"name": "unet", "config": net.config.to_dict()},
        "model": model.config(),
        "schedule": model.schedule.to_dict(),
        "data": dict(data or {}),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "ema_state_dict": ({k: v.detach().cpu() for k, v in ema_state_dict.items()} if ema_state_dict else None),
        "train_state": train_state,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(ckpt, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_checkpoint(path) -> dict:
    """Read and validate a checkpoint dict; raises :class:`CheckpointError` with a
    one-line reason for anything that is not a sound oodkit checkpoint."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"checkpoint path is a directory: {path}")
    if not zipfile.is_zipfile(path):  # torch.save always writes a zip archive
        raise CheckpointError(f"cannot read {path}: truncated or not a checkpoint (not a torch archive)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        what = f" ({found.group(1)})" if found else ""
        raise CheckpointError(
            f"refusing {path}: it holds pickled objects other than tensors and plain values{what}; nothing was executed"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise CheckpointError(
            f"cannot read {path}: truncated or not a checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:120]})"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an oodkit checkpoint (no 'format': 'oodkit' entry)")
    version = ckpt.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {version!r}; this oodkit reads up to {FORMAT_VERSION}: upgrade oodkit"
        )
    missing = [k for k in ("kind", "net", "model", "schedule", "state_dict") if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path} is an incomplete oodkit checkpoint: missing {missing}")
    return ckpt


def load_model(path, ema: bool = True, device=None):
    """Load a trained model in eval mode, with its EMA weights when it has them (``ema``).

    Returns a :class:`~oodkit.CDM` (or another model kind), on ``device`` (CPU by default).
    """
    ckpt = load_checkpoint(path)
    try:
        schedule = NoiseSchedule.from_dict(ckpt["schedule"])
        model = build_model(ckpt["kind"], ckpt["net"]["config"], schedule, ckpt["model"])
        weights = ckpt["ema_state_dict"] if (ema and ckpt.get("ema_state_dict")) else ckpt["state_dict"]
        model.load_state_dict(weights)
    except CheckpointError:
        raise
    except (ValueError, TypeError, KeyError, RuntimeError) as e:
        raise CheckpointError(f"{path}: checkpoint does not match its model ({str(e).splitlines()[0][:200]})") from None
    model.checkpoint_path = str(path)
    model.checkpoint_sha256 = file_sha256(path)
    model.train_steps = (ckpt.get("train_state") or {}).get("step")
    model.data_info = ckpt.get("data", {})
    return model.to(device or "cpu").eval()


def file_sha256(path) -> str:
    """SHA-256 of a file's bytes, hex."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _version() -> str:
    from . import __version__

    return __version__
