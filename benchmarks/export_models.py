"""Ship trained CDMs: EMA weights in half precision into oodkit/weights/, with their
test bits/dim (measured on the rounded weights), training steps and CPU-hours, SHA-256,
and a grid of samples.

    python benchmarks/export_models.py --checkpoints DIR --data-root DATA [--train-log DIR/train.log]
    python benchmarks/export_models.py --checkpoints DIR --data-root DATA --names "cifar10,cifar10[0-5]" \
        --trained-on "H200 GPU, 479 s"

DIR holds ``<stem>_cdm.pt`` resumable checkpoints; the name is the data set the model
was trained on (a class subset such as ``cifar10[0-5]`` has the stem ``cifar10_0-5``),
so ``oodkit bench`` finds it as that set's pretrained model. CPU-hours come from the
round-robin training log (one thread per run, so wall time is CPU time); a model trained
elsewhere records ``--trained-on`` instead.
"""
import argparse
import json
import math
from pathlib import Path

import torch

from oodkit.atomic import atomic_write
from oodkit.data import conform, load_dataset
from oodkit.nn.unet import PRESETS
from oodkit.pretrained import PRETRAINED_DIR, export_model, load_model
from oodkit.representation import represent


def cpu_hours(log: Path, name: str) -> float | None:
    if not log or not log.exists():
        return None
    total, start = 0.0, None
    for line in log.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 7 and parts[4] == name:
            if parts[-1] == "start":
                start = float(parts[0])
            elif parts[-1] == "done" and start is not None:
                total, start = total + float(parts[0]) - start, None
    return round(total / 3600, 2)


def test_bpd(model, name, root) -> float:
    c, h, _ = model.image_shape
    x = conform(load_dataset(name, "test", root).tensor(), h, c)
    return float(represent(model, x, batch_size=500, progress=False).bpd.mean())  # oodkit's own pass


def preset_of(net: dict) -> str:
    """The UNet preset a checkpoint's network config matches, else "custom"."""
    cfg = net.get("config", {}) if isinstance(net, dict) else {}
    for name, fields in PRESETS.items():
        if all(list(v) == list(cfg.get(k, ())) if isinstance(v, tuple) else v == cfg.get(k) for k, v in fields.items()):
            return name
    return "custom"


def sample_grid(model, path: Path, n=36, steps=50):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = model.sample(n, steps=steps, method="ddim", generator=torch.Generator().manual_seed(0))
    imgs = ((x.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy()
    side = int(math.ceil(math.sqrt(n)))
    fig, axes = plt.subplots(side, side, figsize=(side * 0.9, side * 0.9))
    for ax, im in zip(axes.flat, imgs):
        ax.imshow(im.squeeze(), cmap="gray" if im.shape[-1] == 1 else None, vmin=0, vmax=1)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle(f"{path.stem}: DDIM, {steps} steps, Theorem 3.1 denoiser", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def file_stem(name: str) -> str:
    """``cifar10[0-5]`` -> ``cifar10_0-5``: a file name without brackets."""
    return name.replace("[", "_").replace("]", "").replace("+", "-")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--checkpoints", type=Path, required=True)
    p.add_argument("--data-root", type=Path, required=True)
    p.add_argument("--train-log", type=Path, default=None)
    p.add_argument("--names", default="cifar10,fashionmnist,mnist")
    p.add_argument("--samples", type=Path, default=Path("benchmarks/results/models"))
    p.add_argument("--trained-on", default=None, help="hardware and time, for models not trained by the CPU log")
    a = p.parse_args()
    index_path = PRETRAINED_DIR / "index.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else {}
    a.samples.mkdir(parents=True, exist_ok=True)
    for name in a.names.split(","):
        stem = file_stem(name)
        src = a.checkpoints / f"{stem}_cdm.pt"
        ckpt = torch.load(src, map_location="cpu", weights_only=False)
        staged = PRETRAINED_DIR / f"{stem}.pt.new"  # measured first, published with its index entry
        try:
            rec = publish(a, name, stem, src, ckpt, staged, index, index_path)
        finally:
            staged.unlink(missing_ok=True)  # left only if measuring failed
        print(json.dumps({name: rec}), flush=True)


def publish(a, name, stem, src, ckpt, staged, index, index_path) -> dict:
    """Export, measure, then put the weights and the index entry in place."""
    train_cfg = (ckpt.get("train_state") or {}).get("config", {})
    rec = export_model(src, staged, dataset=name)
    model = load_model(staged)
    rec.update(file=f"{stem}.pt", net=preset_of(ckpt.get("net")),
               image_size=model.image_shape[-1], channels=model.image_shape[0], T=model.T,
               batch_size=train_cfg.get("batch_size"),
               test_bpd=round(test_bpd(model, name, a.data_root), 4),
               size_mb=round(staged.stat().st_size / 2**20, 2))
    if a.trained_on:
        rec["trained_on"] = a.trained_on
    else:
        rec["cpu_hours"] = cpu_hours(a.train_log, name)
    sample_grid(model, a.samples / f"{stem}-samples.png")
    index[name] = rec
    # weights and index go in place by two renames right after each other, not minutes
    # apart: a bench started meanwhile sees a file and its SHA-256 that agree (a kill
    # between the two renames would still leave them apart; rerun the export)
    staged.replace(PRETRAINED_DIR / f"{stem}.pt")
    atomic_write(index_path, (json.dumps(index, indent=1) + "\n").encode())
    return rec


if __name__ == "__main__":
    main()
