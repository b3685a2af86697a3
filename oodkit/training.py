"""Training loop shared by every model kind (anything with ``loss(x0, generator)``).

Determinism is by construction rather than by saved RNG state: the data order of an
epoch and every step's noise and dropout are seeded from ``(seed, step, rank)``, so a
run resumed from a checkpoint continues bit-for-bit on the same device.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .distributed import maybe_init, rank_world
from .train_config import TrainConfig
from .checkpoint import (CheckpointError, build_model, check_replaceable, check_same_model, check_weights,
                         load_checkpoint, save_checkpoint)
from .data.images import image_hashes, to_float
from .devices import default_device
from .schedules import NoiseSchedule

__all__ = ["TrainConfig", "train", "fit_model", "TrainingDiverged", "default_device", "bf16_supported"]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def bf16_supported(device) -> bool:
    """Whether bf16 autocast pays on ``device``: CUDA GPUs that support it, and CPUs
    with native bf16 instructions (AVX-512 BF16 or AMX). oneDNN also "supports" bf16 on
    plain AVX-512 by emulation, which measured 2.3x slower than fp32 for a CDM step on
    such a CPU, so the instruction set is checked rather than the library."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        caps = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
        if caps:
            return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))
        try:
            flags = Path("/proc/cpuinfo").read_text().split()
        except OSError:
            return False
        return "avx512_bf16" in flags or "amx_bf16" in flags
    return False


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)[0] >> 1)


def _batch_indices(n: int, batch: int, step: int, seed: int) -> torch.Tensor:
    """Indices of global batch ``step``: epochs are seeded permutations, so any step's
    batch is known without replaying the run."""
    per_epoch = max(1, n // batch)
    epoch, pos = divmod(step, per_epoch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(_seed(seed, epoch, 7)))
    if n < batch:  # small data: sample with replacement inside the epoch
        return torch.randint(0, n, (batch,), generator=torch.Generator().manual_seed(_seed(seed, step, 8)))
    return perm[pos * batch : (pos + 1) * batch]


@torch.no_grad()
def _update_ema(ema: dict, state: dict, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * state for float tensors; others are copied.
    One fused call over all tensors: on a GPU a per-tensor loop costs more launches
    than the training step's own kernels for a small network."""
    keys = [k for k, v in state.items() if v.is_floating_point()]
    if keys:
        avg = [ema[k] for k in keys]
        torch._foreach_mul_(avg, decay)
        torch._foreach_add_(avg, [state[k].detach() for k in keys], alpha=1 - decay)
    for k, v in state.items():
        if not v.is_floating_point():
            ema[k].copy_(v)


class _Objective(nn.Module):
    """Wraps ``model.loss`` as ``forward`` so that DistributedDataParallel sees it."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x0, generator, y=None):
        if y is None:
            return self.model.loss(x0, generator=generator)
        return self.model.loss(x0, generator=generator, y=y)


class _Stop:
    """Turns SIGTERM into KeyboardInterrupt so that a killed run saves first."""

    def __enter__(self):
        self.prev = None
        if threading.current_thread() is threading.main_thread():
            self.prev = signal.signal(signal.SIGTERM, self._raise)
        return self

    @staticmethod
    def _raise(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    def __exit__(self, *exc):
        if self.prev is not None:
            signal.signal(signal.SIGTERM, self.prev)
        return False


# settings a resumed run must share with the checkpoint's (steps and save_every may change)
RESUME_MUST_MATCH = ("batch_size", "lr", "warmup", "ema_decay", "grad_clip", "hflip", "amp", "seed")


def _check_resume(out, ckpt: dict, model, cfg: "TrainConfig", data: dict) -> None:
    """Refuse to continue a run with other settings, data or network: one line naming
    the first difference."""
    check_same_model(ckpt, model, "--resume", out)
    mine, saved_model = model.config(), ckpt.get("model") or {}
    for k in sorted(set(mine) | set(saved_model)):
        if k != "image_shape" and mine.get(k) != saved_model.get(k):
            raise CheckpointError(f"--resume: {out} has model {k}={saved_model.get(k)!r}, this run asks {mine.get(k)!r}")
    saved = (ckpt.get("train_state") or {}).get("config", {})
    now = asdict(cfg)
    for k in RESUME_MUST_MATCH:
        if k in saved and saved[k] != now[k]:
            raise CheckpointError(f"--resume: {out} was trained with {k}={saved[k]!r}, this run asks {now[k]!r}")
    old = ckpt.get("data") or {}
    for k in ("dataset", "n_images", "image_size", "channels"):
        if k in old and k in data and old[k] != data[k]:
            raise CheckpointError(f"--resume: {out} was trained on {k}={old[k]!r}, this run has {data[k]!r}")
    if int((ckpt.get("train_state") or {}).get("step", 0)) > cfg.steps:
        raise CheckpointError(f"--resume: {out} is already at step {ckpt['train_state']['step']}, past --steps "
                              f"{cfg.steps}")


def _checked_labels(model, images: torch.Tensor, labels, cfg: TrainConfig, world: int):
    """Refuse what cannot train, before any work; the labels as a long tensor (or None)."""
    if cfg.batch_size % world:
        raise ValueError(f"batch size {cfg.batch_size} does not split over {world} processes")
    noise_batch = getattr(model, "noise_batch", None)
    if noise_batch is not None and noise_batch > cfg.batch_size // world:
        raise ValueError(f"noise_batch {noise_batch} is larger than the batch of each process "
                         f"({cfg.batch_size // world})")
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"training images must be (N, C, H, W), got {tuple(images.shape)}")
    if getattr(model, "needs_labels", False) and labels is None:
        raise ValueError(f"a {model.kind} model trains on labels, and the training data has none")
    if labels is not None:
        labels = torch.as_tensor(labels).long()
        if labels.shape != (images.shape[0],):
            raise ValueError(f"{images.shape[0]} images but labels of shape {tuple(labels.shape)}")
        k = int(getattr(model, "num_labels", 0) or 0)
        if k and len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= k):
            bad = int(labels.max()) if int(labels.max()) >= k else int(labels.min())
            raise ValueError(f"label {bad} is outside the class head's {k} classes (0..{k - 1})")
    if model.image_shape is not None and tuple(images.shape[1:]) != tuple(model.image_shape):
        raise ValueError(f"training images {tuple(images.shape[1:])} do not match the model's {model.image_shape}")
    return labels


def _resume_from(out, model, opt, cfg: TrainConfig, data: dict, device):
    """Load ``out``'s weights and optimizer into ``model`` and ``opt``; returns (EMA
    weights, step, checkpoint)."""
    if out is None or not out.exists():
        raise CheckpointError(f"--resume: no checkpoint at {out}")
    ckpt = load_checkpoint(out)
    state = ckpt.get("train_state") or {}
    if "optimizer" not in state:
        raise CheckpointError(f"{out} holds no training state to resume from")
    step = state.get("step")
    if type(step) is not int or step < 0:
        raise CheckpointError(f"--resume: {out}: damaged training state (step {step!r}; a whole number >= 0 is "
                              "needed)")
    _check_resume(out, ckpt, model, cfg, data)
    ema = ckpt.get("ema_state_dict") or ckpt["state_dict"]
    check_weights(out, model, ckpt["state_dict"])
    check_weights(out, model, ema)
    model.load_state_dict(ckpt["state_dict"])
    try:
        opt.load_state_dict(state["optimizer"])
    except (ValueError, KeyError, TypeError, AttributeError, RuntimeError, IndexError) as e:
        raise CheckpointError(f"--resume: {out}: damaged optimizer state ({type(e).__name__}); start afresh with "
                              "--overwrite") from None
    return {k: v.to(device) for k, v in ema.items()}, step, ckpt


def _step(objective, model, opt, images, labels, cfg: TrainConfig, step: int, rank: int, local: int, device,
          use_amp: bool, out):
    """One optimizer step (the batch, flips, warm-up, loss, clipping): every random draw
    seeded by (seed, step, rank), so that a resumed run repeats an uninterrupted one.
    Returns (loss, its parts, batch size)."""
    idx = _batch_indices(images.shape[0], cfg.batch_size, step, cfg.seed)[rank * local : (rank + 1) * local]
    x0 = to_float(images[idx]).to(device)
    gen = torch.Generator().manual_seed(_seed(cfg.seed, step, rank, 1))
    if cfg.hflip:
        flip = torch.rand(x0.shape[0], generator=gen) < 0.5
        x0 = torch.where(flip.to(device)[:, None, None, None], x0.flip(-1), x0)
    for g in opt.param_groups:
        g["lr"] = cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup))
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(_seed(cfg.seed, step, rank, 2))
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
            y = labels[idx].to(device) if labels is not None and getattr(model, "needs_labels", False) else None
            loss, parts = objective(x0, gen, y)
        if not torch.isfinite(loss):
            raise TrainingDiverged(
                f"loss became {loss.item()} at step {step}: lower --lr (now {cfg.lr:g}) or --grad-clip"
                + (f"; the last good checkpoint is {out}" if out is not None and out.exists() else "")
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
    if cfg.grad_clip:
        nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    opt.step()
    return loss, parts, x0.shape[0]


def _start(model, opt, images, cfg: TrainConfig, out, resume: bool, data_info, device, world: int):
    """The objective (DDP-wrapped under torchrun), the EMA weights, the first step and the
    record of the data that checkpoints carry; resumed from ``out`` with ``resume``."""
    info = {**(data_info or {}), "n_images": int(images.shape[0])}
    start, ckpt = 0, None
    if resume:
        ema, start, ckpt = _resume_from(out, model, opt, cfg, info, device)
    objective = _Objective(model)
    if world > 1:  # DDP broadcasts rank 0's weights here
        objective = nn.parallel.DistributedDataParallel(
            objective, device_ids=[device.index] if device.type == "cuda" else None
        )
    if not resume:
        ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if resume and "init" in (ckpt.get("data") or {}):  # the resumed run's saves would otherwise drop it
        info.setdefault("init", ckpt["data"]["init"])
    # which images the network sees: a detector fitted on them later sets its threshold on the others
    info["image_hashes"] = torch.from_numpy(np.sort(image_hashes(images)))
    return objective, ema, start, info


class _Interrupted(Exception):
    def __init__(self, step):
        super().__init__(step)
        self.step = step


def _loop(one_step, model, ema: dict, cfg: TrainConfig, start: int, world: int, save, bar) -> int:
    """Steps from ``start`` to ``cfg.steps``: EMA, progress, periodic checkpoints. On
    Ctrl-C or SIGTERM it saves and raises :class:`_Interrupted`. Returns the last step."""
    step, t0, seen = start, time.perf_counter(), 0
    try:
        with _Stop():
            while step < cfg.steps:
                loss, parts, b = one_step(step)
                step += 1
                _update_ema(ema, model.state_dict(), min(cfg.ema_decay, (1 + step) / (10 + step)))
                seen += b * world
                bar.update(1)
                if step % 10 == 0 or step == cfg.steps:
                    bar.set_postfix(loss=f"{loss.item():.4f}", **{k: f"{v.item():.4f}" for k, v in parts.items()},
                                    img_s=f"{seen / max(1e-9, time.perf_counter() - t0):.0f}")
                if cfg.save_every and step % cfg.save_every == 0 and step < cfg.steps:
                    save(step)
    except KeyboardInterrupt:
        save(step)
        raise _Interrupted(step) from None
    return step


def train(
    model,
    images: torch.Tensor,
    config: TrainConfig | None = None,
    out=None,
    resume: bool = False,
    device=None,
    progress: bool = False,
    data_info: dict | None = None,
    labels: torch.Tensor | None = None,
    resume_hint: str = "continue with --resume",
):
    """Train ``model`` on ``images`` (uint8 or float (N, C, H, W) at the model's size),
    with integer ``labels`` (N,) for models that need them (``model.needs_labels``).

    Writes checkpoints to ``out`` every ``save_every`` steps, at the end, and when the
    run is interrupted (Ctrl-C or SIGTERM). With ``resume`` it continues from ``out``.
    Under ``torchrun`` it trains with DistributedDataParallel (rank 0 writes).
    Returns the model in eval mode carrying its EMA weights.
    """
    cfg = config or TrainConfig()
    cfg.validate()
    device = torch.device(device) if device is not None else default_device()
    if device.type == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    maybe_init(device)
    rank, world = rank_world()
    labels = _checked_labels(model, images, labels, cfg, world)
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    out = Path(out).expanduser() if out is not None else None
    if out is not None and not resume:
        check_replaceable(out)
    objective, ema, start, info = _start(model, opt, images, cfg, out, resume, data_info, device, world)
    use_amp = cfg.amp and bf16_supported(device)
    local = cfg.batch_size // world

    def save(step):
        if out is None or rank != 0:
            return
        bad = next((k for k, v in [*model.state_dict().items(), *ema.items()]
                    if v.is_floating_point() and not torch.isfinite(v).all()), None)
        if bad is not None:  # never written over the last good checkpoint
            raise TrainingDiverged(f"weights are not finite at step {step} ({bad}): lower --lr (now {cfg.lr:g}) or "
                                   "--grad-clip" + (f"; the last good checkpoint is {out}" if out.exists() else ""))
        state = {"step": step, "optimizer": opt.state_dict(), "config": asdict(cfg), "world_size": world}
        save_checkpoint(out, model, ema_state_dict=ema, train_state=state, data=info)

    def one_step(step):
        return _step(objective, model, opt, images, labels, cfg, step, rank, local, device, use_amp, out)

    bar = tqdm(total=cfg.steps, initial=start, desc="train", disable=not progress or rank != 0, dynamic_ncols=True)
    try:
        step = _loop(one_step, model, ema, cfg, start, world, save, bar)
    except _Interrupted as stop:
        bar.close()
        if out is not None and rank == 0:
            print(f"\ninterrupted at step {stop.step}: saved {out}; {resume_hint}")
        raise KeyboardInterrupt from None
    bar.close()
    save(step)
    model.load_state_dict(ema)
    model.train_steps = step
    return model.eval()


def fit_model(
    images: torch.Tensor,
    kind: str = "cdm",
    net: str = "small",
    T: int = 1000,
    schedule: str = "uniform",
    config: TrainConfig | None = None,
    out=None,
    resume: bool = False,
    device=None,
    progress: bool = False,
    data_info: dict | None = None,
    net_overrides: dict | None = None,
    labels: torch.Tensor | None = None,
    model_options: dict | None = None,
    resume_hint: str = "continue with --resume",
    init=None,
):
    """Build a model of ``kind`` ("cdm", "ddpm", "joint") for ``images`` (N, C, H, W)
    from a network preset and train it. ``model_options`` go to the model's constructor
    (e.g. ``var_type``, ``cdl_weight``, ``num_labels``). ``init``: a checkpoint to start
    from (a fine-tune, see :func:`~oodkit.checkpoint.load_initial_weights`); recorded in
    the checkpoint's data as ``init``."""
    from .nn.unet import PRESETS, UNetConfig

    if net not in PRESETS:
        raise ValueError(f"unknown network preset {net!r}; choose one of {sorted(PRESETS)}")
    from .models import model_kind

    info_kind = model_kind(kind)
    sched = NoiseSchedule.from_name(schedule, T)
    c, h, w = images.shape[1:]
    net_cfg = UNetConfig(**{**PRESETS[net], **(net_overrides or {})}, in_channels=c, image_size=h,
                         num_classes=sched.num_classes if info_kind.head == "classifier" else None,
                         time_conditioning=info_kind.time_conditioning)
    options = dict(model_options or {})
    if options.get("num_labels") == "auto" or (info_kind.needs_labels and "num_labels" not in options):
        if labels is None:
            raise ValueError(f"a {kind} model with a class head trains on labels, and the training data has none")
        classes = torch.unique(torch.as_tensor(labels))
        if len(classes) < 2:
            raise ValueError(f"a class head learns to tell the training classes apart, and every label is "
                             f"{int(classes[0])}: it needs at least 2 classes")
        options["num_labels"] = int(classes.max()) + 1
        if options["num_labels"] > 100_000:  # a head of that width is a mistake in the labels, not a class count
            raise ValueError(f"labels go up to {options['num_labels'] - 1}: a class head takes labels 0..99999 "
                             "(are these labels class indices?)")
    if init is not None and resume:
        raise ValueError("--init starts a run from another checkpoint's weights; --resume continues --out: pass one")
    seed = (config or TrainConfig()).seed
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # same initial weights on every rank and every rerun
        model = build_model(kind, net_cfg.to_dict(), sched, options)
    info = {"image_size": h, "channels": c, **(data_info or {})}
    if init is not None:
        from .checkpoint import load_initial_weights

        info["init"] = load_initial_weights(model, init)
    return train(model, images, config, out=out, resume=resume, device=device, progress=progress, data_info=info,
                 labels=labels, resume_hint=resume_hint)
