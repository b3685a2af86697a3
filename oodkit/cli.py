"""The ``oodkit`` command."""
from __future__ import annotations

import functools
import sys
from pathlib import Path

import click

from . import __version__


def _friendly(fn):
    """Known failures become one-line errors (exit 1) instead of tracebacks."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from .checkpoint import CheckpointError
        from .data import DataNotFound, ImageInputError
        from .training import TrainingDiverged

        try:
            return fn(*args, **kwargs)
        except (CheckpointError, DataNotFound, ImageInputError, TrainingDiverged, ValueError, FileNotFoundError) as e:
            raise click.ClickException(str(e)) from None
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="oodkit")
def main():
    """Out-of-distribution detection with classification diffusion models.

    \b
    oodkit bench digits                          embedded demo, CPU, no downloads
    oodkit train --model cdm --data cifar10 --out cdm.pt
    oodkit score --model cdm.pt --data svhn --out svhn.csv
    oodkit bench cifar10-vs-svhn --model cdm.pt
    """


data_root_option = click.option(
    "--data-root", type=click.Path(path_type=Path), default=None,
    help="Folder with torchvision's files or <name>_<split>.npz arrays (default $OODKIT_DATA or ./data).",
)
download_option = click.option("--download", is_flag=True, help="Let torchvision download missing data sets.")
device_option = click.option("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available).")


@main.command()
@click.option("--model", "kind", type=click.Choice(["cdm"]), default="cdm", show_default=True, help="Model kind.")
@click.option("--data", "data_spec", required=True, help="Data set name, npz:PATH or folder:PATH (train split).")
@data_root_option
@download_option
@click.option("--net", default="small", show_default=True, help="UNet preset: tiny, small or paper.")
@click.option("--image-size", type=int, default=None, help="Resize images to this square size (default: native).")
@click.option("--channels", type=click.Choice(["1", "3"]), default=None, help="Convert images to 1 or 3 channels.")
@click.option("--schedule", type=click.Choice(["uniform", "linear", "cosine"]), default="uniform", show_default=True)
@click.option("-T", "--T", "T", type=int, default=1000, show_default=True, help="Number of noise levels.")
@click.option("--steps", type=int, default=2000, show_default=True, help="Optimizer steps in all.")
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--lr", type=float, default=2e-4, show_default=True)
@click.option("--warmup", type=int, default=100, show_default=True, help="Linear learning-rate warm-up steps.")
@click.option("--ema-decay", type=float, default=0.999, show_default=True)
@click.option("--grad-clip", type=float, default=1.0, show_default=True)
@click.option("--hflip", is_flag=True, help="Random horizontal flips.")
@click.option("--no-amp", is_flag=True, help="Train in float32 on GPU too (bf16 autocast otherwise).")
@click.option("--save-every", type=int, default=500, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Checkpoint file to write.")
@click.option("--resume", is_flag=True, help="Continue from --out, bit-for-bit.")
@device_option
@click.option("--quiet", is_flag=True, help="No progress bar.")
@_friendly
def train(kind, data_spec, data_root, download, net, image_size, channels, schedule, T, steps, batch_size, lr,
          warmup, ema_decay, grad_clip, hflip, no_amp, save_every, seed, out, resume, device, quiet):
    """Train a model (multi-GPU: torchrun --nproc-per-node N -m oodkit train ...)."""
    from .data import conform, load_dataset
    from .data.images import as_images
    from .training import TrainConfig, fit_model

    ds = load_dataset(data_spec, "train", root=data_root, download=download, holdout=True)
    x = as_images(ds.images)
    x = conform(x, image_size or x.shape[-1], int(channels) if channels else x.shape[1])
    cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, warmup=warmup, ema_decay=ema_decay,
                      grad_clip=grad_clip, hflip=hflip, amp=not no_amp, save_every=save_every, seed=seed)
    click.echo(f"training {kind} ({net}) on {ds.name}: {x.shape[0]} images {tuple(x.shape[1:])}", err=True)
    model = fit_model(x, kind=kind, net=net, T=T, schedule=schedule, config=cfg, out=out, resume=resume,
                      device=device, progress=not quiet, data_info={"dataset": data_spec})
    click.echo(f"wrote {out} (step {model.train_steps})")


@main.command()
@data_root_option
def datasets(data_root):
    """List registered data sets and what is available locally."""
    from .data import default_root, list_datasets

    rows = list_datasets(data_root)
    w = max(len(r["name"]) for r in rows)
    a = max(len(r["available"]) for r in rows)
    click.echo(f"data root: {data_root or default_root()}")
    click.echo(f"{'name':<{w}}  {'available':<{a}}  description")
    for r in rows:
        click.echo(f"{r['name']:<{w}}  {r['available']:<{a}}  {r['description']}")


if __name__ == "__main__":  # python -m oodkit.cli
    main()
