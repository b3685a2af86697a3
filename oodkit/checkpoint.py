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

import errno
import hashlib
import io
import pickle
import re
import zipfile
from pathlib import Path

import torch

from .atomic import atomic_write
from .schedules import NoiseSchedule

__all__ = ["save_checkpoint", "load_checkpoint", "load_model", "load_initial_weights", "build_model", "CheckpointError",
           "file_sha256", "check_replaceable"]

FORMAT = "oodkit"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A file that is not a usable oodkit checkpoint."""


def build_model(kind: str, net_config: dict, schedule: NoiseSchedule, model_config: dict | None = None):
    """Construct a fresh model of ``kind`` from plain configuration values."""
    from .nn.unet import UNet, UNetConfig

    from .models import MODEL_KINDS

    if kind not in MODEL_KINDS:
        raise CheckpointError(f"unknown model kind {kind!r}; this oodkit knows {sorted(MODEL_KINDS)}")
    net = UNet(UNetConfig.from_dict(net_config))
    cfg = dict(model_config or {})
    cfg.pop("image_shape", None)  # derived from the net's config
    return MODEL_KINDS[kind].cls(net, schedule, **cfg)


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
    buf = io.BytesIO()  # serialised in memory: a full disk then fails as an OSError of the write, not in torch
    torch.save(ckpt, buf)
    return atomic_write(path, buf.getvalue())


def check_replaceable(path) -> None:
    """Refuse to write a checkpoint over a file that is not one (a run's output may replace
    an earlier checkpoint, of any version, never a file of the user's)."""
    path = Path(path)
    # what torch.save writes: a zip holding a pickle of tensors
    if path.exists() and not any(n.endswith("/data.pkl") for n in _zip_names(path)):
        raise CheckpointError(f"{path} exists and is not a checkpoint: remove it or write elsewhere")


def _zip_names(path) -> list:
    """The member names of a zip archive; [] for anything else."""
    try:
        with zipfile.ZipFile(path) as z:
            return z.namelist()
    except (zipfile.BadZipFile, OSError):
        return []


def _is_npz(path) -> bool:
    names = _zip_names(path)
    return bool(names) and all(n.endswith(".npy") for n in names)


def load_checkpoint(path) -> dict:
    """Read and validate a checkpoint dict; raises :class:`CheckpointError` with a
    one-line reason for anything that is not a sound oodkit checkpoint."""
    from .validation import regular_file

    path = regular_file(path, "checkpoint", CheckpointError)  # a device or pipe would hang the read
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {_reason(e)}") from None
    if not zipfile.is_zipfile(path):  # torch.save always writes a zip archive
        raise CheckpointError(f"cannot read {path}: truncated or not a checkpoint (not a torch archive)")
    if _is_npz(path):  # numpy's archives are zips too, and detector files are numpy's
        raise CheckpointError(f"{path} is a numpy .npz archive, not a model checkpoint: a detector file from "
                              "`oodkit fit` is read with --detector (oodkit.load_detector)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError as e:
        raise CheckpointError(f"cannot read {path}: {_reason(e)}") from None
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
        bare = isinstance(ckpt, dict) and ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values())
        raise CheckpointError(f"{path} is not an oodkit checkpoint (no 'format': 'oodkit' entry)" + (
            ": it holds bare weights (torch.save(model.state_dict())); save the model with "
            "oodkit.save_checkpoint(path, model)" if bare else ""))
    version = ckpt.get("format_version")
    if type(version) is not int or version < 1:  # bools are not versions
        raise CheckpointError(
            f"{path}: {version!r} is not a valid format version (expected an integer 1..{FORMAT_VERSION})"
        )
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {version!r}; this oodkit reads up to {FORMAT_VERSION}: upgrade oodkit"
        )
    missing = [k for k in ("kind", "net", "model", "schedule", "state_dict") if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path} is an incomplete oodkit checkpoint: missing {missing}")
    for key, optional in (("net", False), ("model", False), ("schedule", False), ("state_dict", False),
                          ("ema_state_dict", True), ("train_state", True), ("data", True)):
        if not isinstance(ckpt.get(key), dict) and not (optional and ckpt.get(key) is None):
            raise CheckpointError(f"{path}: damaged checkpoint ({key} is a {type(ckpt.get(key)).__name__}, not a "
                                  "table of values)")
    if not isinstance(ckpt["net"].get("config"), dict):
        raise CheckpointError(f"{path}: damaged checkpoint (net has no config table)")
    hashes = (ckpt.get("data") or {}).get("image_hashes")
    if hashes is not None and not (isinstance(hashes, torch.Tensor) and hashes.dtype == torch.int64
                                   and hashes.ndim == 1):
        raise CheckpointError(f"{path}: damaged checkpoint (data.image_hashes, the record of the images the network "
                              "trained on, is not a list of 64-bit hashes)")
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
        check_weights(path, model, weights)
        model.load_state_dict(weights)
    except CheckpointError:
        raise
    except (ValueError, TypeError, KeyError, RuntimeError) as e:
        raise CheckpointError(f"{path}: checkpoint does not match its model ({str(e).splitlines()[0][:200]})") from None
    model.checkpoint_path = str(path)
    model.checkpoint_sha256 = file_sha256(path)
    model.loaded_weights = weights_digest(model)
    model.train_steps = (ckpt.get("train_state") or {}).get("step")
    model.data_info = ckpt.get("data", {})
    return model.to(device or "cpu").eval()


def check_same_model(ckpt: dict, model, flag: str, path) -> None:
    """Refuse a checkpoint ``ckpt`` that does not fit ``model``: its kind, network
    settings and noise schedule, one line naming the first difference, prefixed by the
    ``flag`` (``--resume``, ``--init``) that asked for it."""
    if ckpt["kind"] != model.kind:
        raise CheckpointError(f"{flag}: {path} is a {ckpt['kind']} model, this run trains a {model.kind}")
    want, have = model.net.config.to_dict(), ckpt["net"].get("config", {})
    for k in sorted(set(want) | set(have)):
        if want.get(k) != have.get(k):
            from .nn.unet import PRESETS

            def same(a, b):
                return list(a) == list(b) if isinstance(a, (list, tuple)) else a == b

            preset = next((n for n, cfg in PRESETS.items() if all(same(v, have.get(f)) for f, v in cfg.items())), None)
            hint = f"it is a {preset} net: pass --net {preset}" if preset and k in PRESETS[preset] else \
                "another --net, --image-size or data?"
            raise CheckpointError(f"{flag}: {path} has network {k}={have.get(k)!r}, this run asks {want.get(k)!r} "
                                  f"({hint})")
    theirs = NoiseSchedule.from_dict(ckpt["schedule"])
    if theirs.T != model.schedule.T or not torch.allclose(theirs.alpha_bar, model.schedule.alpha_bar, rtol=0, atol=1e-12):
        raise CheckpointError(f"{flag}: {path} was trained with another noise schedule or T")


# the parameters of the heads a fine-tune may add (--class-head, --rotation-head, --contrastive-head)
HEADS = ("label_head.", "rotation_head.", "projection.")


def load_initial_weights(model, path) -> dict:
    """Start ``model`` from a trained checkpoint's weights (its EMA ones when it has them):
    a fine-tune. Kind, network and noise schedule must match; parts the checkpoint lacks
    (a new class head) keep their fresh initialisation. Returns what to record of the
    source: ``{"path", "sha256", "steps", "fresh": [missing keys]}``."""
    ckpt = load_checkpoint(path)
    check_same_model(ckpt, model, "--init", path)
    weights = ckpt["ema_state_dict"] or ckpt["state_dict"]
    if not all(isinstance(k, str) for k in weights):
        raise CheckpointError(f"--init: {path}: damaged checkpoint (weights not keyed by name)")
    expected = model.state_dict()
    for key, (head, flag) in zip(HEADS, (("class", "--class-head"), ("rotation", "--rotation-head"),
                                         ("contrastive", "--contrastive-head"))):
        if any(k.startswith(key) and k not in expected for k in weights):
            raise CheckpointError(f"--init: {path} has a {head} head and this model has none: add {flag}")
    fresh = [k for k in expected if k not in weights]
    core = [k for k in fresh if not k.startswith(HEADS)]
    if core:  # only a head this run adds may start fresh
        more = f" and {len(core) - 1} more" if len(core) > 1 else ""
        raise CheckpointError(f"--init: {path} does not hold this network's weights (missing key {core[0]}{more})")
    partial = {**{k: v for k, v in expected.items() if k in fresh}, **weights}
    check_weights(path, model, partial)
    model.load_state_dict(partial)
    return {"path": str(path), "sha256": file_sha256(path), "steps": (ckpt.get("train_state") or {}).get("step"),
            "fresh": fresh}


def _reason(e: OSError) -> str:
    if isinstance(e, PermissionError) or e.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    text = (e.strerror or str(e) or type(e).__name__).splitlines()[0]
    return text[:120]


def check_weights(path, model, weights) -> None:
    """One-line errors for weights that do not fit ``model`` (naming the first bad key)
    or that hold NaN/inf."""
    if not isinstance(weights, dict):
        raise CheckpointError(f"{path}: checkpoint does not match its model (weights are a {type(weights).__name__})")
    expected = model.state_dict()
    for k, v in weights.items():
        if k not in expected:
            raise CheckpointError(f"{path}: checkpoint does not match its model (unexpected key {k})")
        if not isinstance(v, torch.Tensor):
            raise CheckpointError(f"{path}: checkpoint does not match its model (key {k} holds a {type(v).__name__})")
        if tuple(v.shape) != tuple(expected[k].shape):
            raise CheckpointError(
                f"{path}: checkpoint does not match its model (key {k}: checkpoint shape {tuple(v.shape)}, "
                f"model shape {tuple(expected[k].shape)})"
            )
        want = expected[k].dtype
        real_float = v.is_floating_point() and not v.is_complex()
        if (real_float != want.is_floating_point) or (not real_float and v.dtype != want):
            raise CheckpointError(f"{path}: checkpoint does not match its model (key {k} holds "
                                  f"{str(v.dtype).removeprefix('torch.')} values, the model's are "
                                  f"{str(want).removeprefix('torch.')})")
    missing = [k for k in expected if k not in weights]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise CheckpointError(f"{path}: checkpoint does not match its model (missing key {missing[0]}{more})")
    for k, v in weights.items():
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise CheckpointError(f"{path}: weights contain NaN/inf (key {k}): the run diverged or the file is corrupt")


def weights_digest(model) -> str:
    """SHA-256 of a model's parameters and buffers as they are now (names, dtypes, values;
    not their device or memory layout): whether a model still holds what it was loaded with."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def file_sha256(path) -> str:
    """SHA-256 of a file's bytes, hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _version() -> str:
    from ._version import __version__

    return __version__
