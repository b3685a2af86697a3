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
@click.option("--model", "kind", type=click.Choice(["cdm", "ddpm", "joint"]), default="cdm", show_default=True,
              help="cdm; ddpm (the ELBO baseline); joint (DDPM + classifier head, needs labels).")
@click.option("--data", "data_spec", required=True, help="Data set name, npz:PATH or folder:PATH (train split).")
@data_root_option
@download_option
@click.option("--net", default="small", show_default=True, help="UNet preset: tiny, compact, small or paper.")
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
@click.option("--var-type", type=click.Choice(["beta", "posterior"]), default="beta", show_default=True,
              help="ddpm/joint: the reverse process's fixed variance (for the ELBO).")
@click.option("--cdl-weight", type=float, default=0.0, show_default=True,
              help="ddpm/joint: weight of the contrastive diffusion loss (Wu et al. 2024); 0 = off.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Checkpoint file to write.")
@click.option("--resume", is_flag=True, help="Continue from --out, bit-for-bit.")
@device_option
@click.option("--quiet", is_flag=True, help="No progress bar.")
@_friendly
def train(kind, data_spec, data_root, download, net, image_size, channels, schedule, T, steps, batch_size, lr,
          warmup, ema_decay, grad_clip, hflip, no_amp, save_every, seed, var_type, cdl_weight, out, resume, device,
          quiet):
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
    options = {} if kind == "cdm" else {"var_type": var_type, "cdl_weight": cdl_weight}
    if kind == "joint" and ds.labels is None:
        raise click.ClickException(f"{ds.name} has no labels: a joint model needs them")
    model = fit_model(x, kind=kind, net=net, T=T, schedule=schedule, config=cfg, out=out, resume=resume,
                      device=device, progress=not quiet, data_info={"dataset": data_spec},
                      labels=ds.labels if kind == "joint" else None, model_options=options)
    click.echo(f"wrote {out} (step {model.train_steps})")


def _split_list(value):
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


@main.command()
@click.argument("spec")
@click.option("--model", default=None,
              help="Trained checkpoint(s), comma-separated (cdm, ddpm, joint); absent: train a CDM on IN's "
                   "training split (cached).")
@data_root_option
@download_option
@click.option("--detectors", default=None,
              help="Comma-separated detectors (default: every detector the given models support; "
                   "CDM: loglik,posterior,expected-t,typicality,complexity,profile; DDPM: elbo-k,itd,recon; "
                   "joint: msp,energy,elbo-k,recon). With several models each detector runs on the model "
                   "it belongs to (itd: the DDPM); NAME@KIND pins one, e.g. itd@cdm.")
@click.option("--output-dir", type=click.Path(path_type=Path), default=Path("oodkit-results"), show_default=True)
@click.option("--net", default=None, help="Preset for a model trained here (digits: tiny, others: small).")
@click.option("--steps", type=int, default=None, help="Training steps for a model trained here.")
@click.option("-T", "--T", "T", type=int, default=None, help="Noise levels for a model trained here (1000).")
@click.option("--image-size", type=int, default=None, help="Model input size for a model trained here.")
@click.option("--batch-size", type=int, default=256, show_default=True, help="Scoring batch size.")
@click.option("--jpeg-ood", type=int, default=None,
              help="Pass OOD sets through JPEG at this quality (75 matches the local CIFAR-10 copy).")
@click.option("--max-train", type=int, default=None, help="Use at most this many ID training images.")
@click.option("--max-test", type=int, default=None, help="Use at most this many images per test set.")
@click.option("--seed", type=int, default=0, show_default=True)
@device_option
@click.option("--quiet", is_flag=True, help="No progress bars.")
@_friendly
def bench(spec, model, data_root, download, detectors, output_dir, net, steps, T, image_size, batch_size, jpeg_ood,
          max_train, max_test, seed, device, quiet):
    """Benchmark detectors on IN-vs-OUT[,OUT...] or a suite.

    \b
    Suites: digits (embedded, no downloads), cifar10, fashionmnist, mnist.
    Examples:
      oodkit bench digits
      oodkit bench fashionmnist-vs-mnist --model fmnist.pt --data-root DIR
      oodkit bench cifar10-vs-svhn,cifar100 --model cdm.pt --detectors loglik,profile
    """
    from .bench import run_bench

    run_bench(spec, model=model, detectors=_split_list(detectors), data_root=data_root, download=download,
              output_dir=output_dir, net=net, steps=steps, T=T, image_size=image_size, batch_size=batch_size,
              device=device, jpeg_ood=jpeg_ood, max_train=max_train, max_test=max_test, seed=seed,
              progress=not quiet, echo=lambda m: click.echo(m))


@main.command()
@click.option("--model", type=click.Path(path_type=Path), required=True, help="Trained checkpoint.")
@click.option("--data", "data_spec", required=True, help="Data set name, npz:PATH or folder:PATH.")
@click.option("--split", type=click.Choice(["train", "test"]), default="test", show_default=True)
@click.option("--fit-data", default=None,
              help="ID data (train split) to fit typicality and profile on (default: the model's training set, "
                   "when it can be found).")
@data_root_option
@download_option
@click.option("--out", type=click.Path(path_type=Path), required=True, help="CSV file to write.")
@click.option("--batch-size", type=int, default=256, show_default=True)
@device_option
@click.option("--quiet", is_flag=True)
@_friendly
def score(model, data_spec, split, fit_data, data_root, download, out, batch_size, device, quiet):
    """Per-sample scores of a data set (CSV, one column per score, higher = more ID)."""
    from .scoring import score_dataset

    df, fitted_on = score_dataset(model, data_spec, split=split, fit_data=fit_data, data_root=data_root,
                                  download=download, batch_size=batch_size, device=device, progress=not quiet)
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False)
    note = f"; typicality and profile fitted on {fitted_on}" if fitted_on else "; no ID data for typicality/profile"
    click.echo(f"wrote {out}: {len(df)} rows, columns {', '.join(df.columns)}{note}")


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
