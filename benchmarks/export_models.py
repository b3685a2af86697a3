"""Ship trained CDMs: EMA weights in half precision into oodkit/weights/, with their
test bits/dim (measured on the rounded weights), training steps and CPU-hours, SHA-256,
and a grid of samples.

    python benchmarks/export_models.py --checkpoints DIR --data-root DATA [--train-log DIR/train.log]

DIR holds ``<name>_cdm.pt`` resumable checkpoints (name = data set). CPU-hours come from
the round-robin training log (one thread per run, so wall time is CPU time).
"""
import argparse
import json
import math
from pathlib import Path

import torch

from oodkit.data import conform, load_dataset, to_float
from oodkit.pretrained import PRETRAINED_DIR, export_model, load_model


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


@torch.no_grad()
def test_bpd(model, name, root, batch=500) -> float:
    ds = load_dataset(name, "test", root)
    c, h, _ = model.image_shape
    x = conform(ds.tensor(), h, c)
    bpd = torch.cat([model.bpd(to_float(xb)) for xb in x.split(batch)])
    return float(bpd.mean())


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


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--checkpoints", type=Path, required=True)
    p.add_argument("--data-root", type=Path, required=True)
    p.add_argument("--train-log", type=Path, default=None)
    p.add_argument("--names", default="cifar10,fashionmnist,mnist")
    p.add_argument("--samples", type=Path, default=Path("benchmarks/results/models"))
    a = p.parse_args()
    index_path = PRETRAINED_DIR / "index.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else {}
    a.samples.mkdir(parents=True, exist_ok=True)
    for name in a.names.split(","):
        src = a.checkpoints / f"{name}_cdm.pt"
        rec = export_model(src, PRETRAINED_DIR / f"{name}.pt", dataset=name)
        model = load_model(PRETRAINED_DIR / f"{name}.pt")
        rec.update(file=f"{name}.pt", net="compact", image_size=model.image_shape[-1],
                   channels=model.image_shape[0], T=model.T,
                   test_bpd=round(test_bpd(model, name, a.data_root), 4),
                   cpu_hours=cpu_hours(a.train_log, name), size_mb=round((PRETRAINED_DIR / f"{name}.pt").stat().st_size / 2**20, 2))
        sample_grid(model, a.samples / f"{name}-samples.png")
        index[name] = rec
        print(json.dumps({name: rec}), flush=True)
    index_path.write_text(json.dumps(index, indent=1) + "\n")


if __name__ == "__main__":
    main()
