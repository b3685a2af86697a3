"""The ``oodkit`` command."""
from __future__ import annotations

import contextlib
import functools
import os
import sys
import warnings
from pathlib import Path

import click

from ._version import __version__
from .train_config import MAX_SEED, TrainConfig


class UserError(click.ClickException):
    """A mistake in what the user asked for: one line, exit status 2 (as click's own
    usage errors)."""

    exit_code = 2


def _debug() -> bool:
    ctx = click.get_current_context(silent=True)
    return bool(ctx and (ctx.find_root().params.get("debug")))


_PACKAGE = Path(__file__).resolve().parent


def _raised_here(e: BaseException) -> bool:
    """Whether oodkit's own code raised ``e`` (its checks of what the user asked for), not
    a library it called."""
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and Path(tb.tb_frame.f_code.co_filename).resolve().is_relative_to(_PACKAGE)


@contextlib.contextmanager
def _one_line_warnings():
    """A command shows each warning once, as ``Warning: ...`` on stderr: the same fact met
    by several detectors is one line, and no source line of oodkit is printed to the user."""
    shown, before = set(), warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        text = str(message).strip()
        if text not in shown:
            shown.add(text)
            click.echo(f"Warning: {text}", err=True)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = before


def _friendly(fn):
    """Known failures become one-line errors (exit 2) instead of tracebacks; ``oodkit
    --debug ...`` shows the traceback instead."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from .checkpoint import CheckpointError
        from .data import DataNotFound, ImageInputError
        from .training import TrainingDiverged

        try:
            with _one_line_warnings():
                return fn(*args, **kwargs)
        except (CheckpointError, DataNotFound, ImageInputError, TrainingDiverged, ValueError, FileNotFoundError,
                PermissionError, IsADirectoryError, NotADirectoryError) as e:
            if _debug() or (type(e) is ValueError and not _raised_here(e)):
                raise  # a ValueError from inside a library is a bug to report, not a mistake of the user's
            if isinstance(e, OSError) and e.strerror:  # the system's own: its path and words, not "[Errno 13] ..."
                advice = " (check its permissions)" if isinstance(e, PermissionError) else ""
                raise UserError(f"{e.filename or ''}{': ' if e.filename else ''}{e.strerror}{advice}") from None
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(msg) from None
        except OSError as e:  # a full disk, a read-only folder, a name too long: one line naming the path
            if _debug():
                raise
            where = f"{e.filename}: " if getattr(e, "filename", None) else ""
            raise UserError(f"{where}{e.strerror or e} (nothing was left half-written)") from None
        except MemoryError:
            if _debug():
                raise
            raise UserError("out of memory: use a smaller --batch-size, --image-size or data set") from None
        except KeyboardInterrupt:
            from .streaming import parts_dir

            ctx = click.get_current_context(silent=True)
            out = ctx.params.get("out") if ctx is not None and ctx.command.name == "score" else None
            kept = out is not None and parts_dir(out).is_dir()
            click.echo("interrupted" + (f": the finished chunks are kept in {parts_dir(out)}; run the same command "
                                        "again to resume" if kept else ""), err=True)
            sys.exit(130)

    return wrapper


def _locks(param: str, what: str):
    """Hold the output lock of the path in ``param`` while the command runs
    (:func:`oodkit.atomic.output_lock`): a second run on the same output refuses."""

    def wrap(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            from .atomic import output_lock

            path = kwargs.get(param)
            # under torchrun only rank 0 writes; the other ranks must not contend for its lock
            if path is None or os.environ.get("RANK", "0") != "0":
                return fn(*args, **kwargs)
            # the output's new folders, made now so that its lock can be taken, and removed again if the
            # command fails while they are still empty (a usage error leaves nothing behind)
            new = [p for p in [Path(path).parent, *Path(path).parent.parents] if not p.exists()]
            with contextlib.suppress(OSError):
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            if not Path(path).parent.is_dir():  # it cannot be made: the command's own check says why
                return fn(*args, **kwargs)
            try:
                with output_lock(path, what):
                    return fn(*args, **kwargs)
            except BaseException:
                for p in new:  # deepest first
                    with contextlib.suppress(OSError):
                        p.rmdir()
                raise

        return wrapper

    return wrap


def _data_options_apply(data_spec: str, resize, num_workers: int) -> None:
    """--resize, --num-workers and --split act on some data only; given (on the command line
    or in a --config file) for other data they are refused rather than dropped: a user who
    asked for them expects them to act."""
    from .data.registry import path_kind

    kind = path_kind(data_spec)
    if resize is not None and kind not in ("folder", "tar"):
        raise UserError(f"--resize applies to folder: and tar: data; {data_spec} is read at the size its arrays "
                        "are stored in")
    if num_workers and kind != "folder":
        raise UserError(f"--num-workers applies to folder: data (image files decoded in parallel); {data_spec} is "
                        "not decoded file by file")
    most = 4 * (os.cpu_count() or 1)  # more processes than that only wait for the cores (500 took 35 s for 40 images)
    if num_workers > most:
        raise UserError(f"--num-workers {num_workers}: this machine has {os.cpu_count()} CPU cores; use at most {most}")
    source = click.get_current_context().get_parameter_source("split")
    given = source in (click.core.ParameterSource.COMMANDLINE, click.core.ParameterSource.DEFAULT_MAP)
    if given and kind is not None and "{split}" not in data_spec:
        raise UserError(f"{data_spec} is one set without splits, so score reads all of it and --split has no "
                        "effect (oodkit fit and --fit-data hold out 20 % of such a set for calibration): name one "
                        "file per split with {split} in the path, or leave --split out")


def _writable_file(path: Path, what: str) -> None:
    """Fail before any work when ``path`` cannot be written as a file."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{what} {path} is a folder; give a file name")
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise UserError(f"{what} {path} exists and is not a regular file (a link, device or pipe): oodkit replaces "
                        "only regular files; give another name")
    parent = path.parent if str(path.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise UserError(f"{what} {path}: {parent} is a file, not a folder")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{what} {path}: cannot create {parent} ({e.strerror})") from None
    if not os.access(parent, os.W_OK):
        raise UserError(f"{what} {path}: {parent} is not writable")


def _not_an_input(out: Path, what: str, *inputs) -> None:
    """Refuse an output that names one of the command's input files, or that an input
    folder would read (it would be lost or mixed in): a checkpoint, or a data spec of any
    path kind (``npz:``, ``folder:``, ``tar:``, with ``{split}`` standing for each split)."""
    from .data.registry import expand_spec, path_kind
    from .data.shards import folder_reads

    out = Path(out)
    for name, value in inputs:
        if value is None:
            continue
        text = expand_spec(os.path.expanduser(str(value)))
        kind = path_kind(text)
        text = text.split(":", 1)[1] if kind else text
        for path in {Path(text.replace("{split}", split)) for split in ("train", "test")}:
            if not path.exists():
                continue
            if path.is_dir() and kind and folder_reads(kind, path, out):
                raise UserError(f"{what} {out} would be read as part of {path} ({name}): give another output name")
            try:
                same = out.exists() and os.path.samefile(path, out)
            except OSError:
                same = False
            if same or out.resolve() == path.resolve():
                raise UserError(f"{what} {out} is the {name} this command reads: give another output name")


def _named_folder(value):
    """``--output-dir``: an empty value (an unset shell variable) would mean the current
    folder, whose old results the run would clean away."""
    if not str(value).strip():
        raise click.BadParameter("is empty: name a folder (an unset variable would write into, and clean, the "
                                 "current one)")
    return Path(value)


def _replaces_a_detector_file(out: Path) -> None:
    """``oodkit fit --out``: an existing file is replaced only when it is a detector file."""
    if not Path(out).is_file():
        return
    from .detectors.fileformat import DetectorFileError, read_file

    try:
        read_file(out)
    except DetectorFileError:
        raise UserError(f"--out {out} exists and is not an oodkit detector file: remove it or give another name "
                        "(`oodkit fit` replaces only its own files)") from None


def _setting_names(command, aliases: bool = True) -> dict:
    """``{name: parameter}`` of a command's settings: a setting is named as its option
    (data = ... for --data, dashes or underscores) or as its parameter; ``aliases=False``:
    not by an option's older spellings (train's --model for --kind), which a file's
    top-level keys, meant for every command, must not reach."""
    params = {p.name: p for p in command.params}
    for p in command.params:
        for opt in getattr(p, "opts", [])[: None if aliases else 1]:
            params.setdefault(opt.lstrip("-").replace("-", "_"), p)
    return params


def _device(value):
    """:func:`oodkit.devices.resolve_device` for ``--device``: a one-line error here."""
    from .devices import resolve_device

    try:
        return resolve_device(value)
    except ValueError as e:
        raise UserError(f"--device {e}") from None


def _load_config(ctx, param, value):
    """``--config FILE.toml``: its keys (option names, dashes or underscores) become this
    command's defaults, so flags on the command line still win."""
    if value is None:
        return None
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        raise click.BadParameter("reading TOML needs Python 3.11 or newer") from None
    if not Path(value).is_file():
        raise click.BadParameter(f"{value} is not a file")
    try:
        with open(value, "rb") as f:
            data = tomllib.loads(f.read().decode("utf-8").removeprefix("\ufeff"))  # Notepad's byte-order mark
    except OSError as e:
        raise click.BadParameter(f"cannot read {value}: {e.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise click.BadParameter(f"{value} is not valid UTF-8 TOML ({str(e).splitlines()[0][:120]})") from None
    commands = set(main.commands)
    for c in sorted(commands & set(data)):  # every command's table is checked, whichever command reads the file
        if not isinstance(data[c], dict):
            raise click.BadParameter(f"{value}: [{c}] must be a table of settings")
    table = data.get(ctx.info_name, {})  # a [bench] / [train] table ...
    # ... beside the top-level settings, which apply to every command (the table wins); other commands'
    # tables are theirs
    top = {k: v for k, v in data.items() if k not in commands}
    resolved = {}
    for level, aliases in ((top, False), (table, True)):  # the table's settings win over the top level's
        params, keys = _setting_names(ctx.command, aliases), {}
        for key, v in level.items():
            name = key.replace("-", "_")
            if name not in params or name == "config":
                owners = [c for c in sorted(commands) if name in _setting_names(main.commands[c], False)] \
                    if level is top else []
                hint = (" (top-level settings apply to every command: put it under "
                        f"{' or '.join(f'[{c}]' for c in owners)})" if owners else "")
                raise click.BadParameter(f"{value}: unknown setting {key!r} for `oodkit {ctx.info_name}`{hint}")
            param = params[name].name
            if param in keys:  # the last would win without a word
                raise click.BadParameter(f"{value}: {keys[param]!r} and {key!r} set the same option; keep one")
            keys[param] = key
            resolved[param] = _config_value(value, key, params[name], v)
    if not resolved:
        tables = [f"[{c}]" for c in sorted(commands & set(data))]
        click.echo(f"Warning: {value} sets nothing for `oodkit {ctx.info_name}`"
                   + (f" (it has {', '.join(tables)})" if tables else "") + "; running with the defaults", err=True)
    ctx.default_map = {**(ctx.default_map or {}), **resolved}
    return value


def _config_value(path, key, param, v):
    """A TOML value as the option expects it, without silent conversions: a float or a
    boolean is not an integer, a string is not a flag, a table or a date is no value."""
    import datetime

    def bad(want):
        return click.BadParameter(f"{path}: {key} must be {want}, got {v!r} ({type(v).__name__})")

    if isinstance(v, list):
        if not all(isinstance(a, (str, int, float)) and not isinstance(a, bool) for a in v):
            raise bad("a list of names or numbers")
        return ",".join(map(str, v))
    if isinstance(v, (dict, datetime.date, datetime.time)):
        raise bad("a plain value")
    if getattr(param, "is_flag", False):
        if not isinstance(v, bool):
            raise bad("true or false")
        return v
    kind = getattr(param.type, "name", "")
    if isinstance(param.type, click.types.IntParamType) or kind == "integer range":
        if isinstance(v, bool) or not isinstance(v, int):
            raise bad("an integer")
    elif isinstance(param.type, click.types.FloatParamType) or kind == "float range":
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise bad("a number")
    elif isinstance(v, bool):
        raise bad("a value, not true or false")
    return v


class UserPath(click.Path):
    """A path with ``~`` made the home folder: a shell leaves it alone after ``=`` or in
    quotes (``--out='~/s.csv'``), and a config file never expands it."""

    def convert(self, value, param, ctx):
        if isinstance(value, str) and not value.strip():
            self.fail("is empty: give a path", param, ctx)
        return super().convert(os.path.expanduser(value) if isinstance(value, str) else value, param, ctx)


config_option = click.option("--config", type=UserPath(dir_okay=False), default=None, is_eager=True,
                             expose_value=False, callback=_load_config,
                             help="TOML file of settings for this command (flags override it).")

class Finite(click.FloatRange):
    """A float range that also refuses NaN and inf (plain ranges let NaN through)."""

    def convert(self, value, param, ctx):
        import math

        v = super().convert(value, param, ctx)
        if not math.isfinite(v):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return v


POS = click.IntRange(min=1)
# sizes beyond these cannot be allocated on any machine oodkit runs on: refused before any work
BATCH = click.IntRange(1, 1_000_000)
SIZE = click.IntRange(1, 4096)
ALIGN = click.IntRange(4, 4096)  # a side of 1-3 pixels leaves nothing of an image to score (1 made fused 0.64)
NET_SIZE = click.IntRange(8, 64)  # nn.unet.IMAGE_SIZES, the input sides the nets take (a test checks the copy)
LEVELS = click.IntRange(2, 100_000)  # one level is no diffusion: Eq. 10 and itd need T >= 2
NONNEG = click.IntRange(min=0)
SEED = click.IntRange(0, MAX_SEED)
# representation.PRECISIONS' names (tests/test_detector_files.py checks), spelled out so that --help needs no torch
PRECISION_CHOICES = ("fp32", "tf32", "bf16")
PRECISION_HELP = ("fp32 (what reported bits/dim use), tf32 (CUDA only) or bf16 (faster on GPUs and on CPUs with "
                  "AVX-512 BF16/AMX; logits leave the net in fp32, Eq. 10 in fp64; drift per model in "
                  "benchmarks/results/precision/).")


@contextlib.contextmanager
def _one_line_usage(path: str):
    """Click's own refusals (a missing option, a value out of range, a --config problem)
    as one ``Error:`` line naming the help to read, like every other user error (click
    prints Usage, Try, a blank and Error). ``path``: the command named when the refusal
    carries none."""
    try:
        yield
    except getattr(click.exceptions, "NoArgsIsHelpError", ()):  # click 8.2 on; before, no error at all
        raise  # `oodkit` alone: the help
    except click.UsageError as e:
        path = e.ctx.command_path if e.ctx is not None else path
        raise UserError(f"{e.format_message()} (see `{path} --help`)") from None


class _OneLineGroup(click.Group):
    def make_context(self, info_name, args, parent=None, **extra):
        with _one_line_usage(info_name or "oodkit"):
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx):
        # the subcommand about to run, named before click takes its words off the context
        held = vars(ctx).get("_protected_args", vars(ctx).get("protected_args", []))  # click 8.2 / 8.1
        words = [*held, *ctx.args]
        sub = next((w for w in words if w in self.commands), None)
        with _one_line_usage(f"{ctx.command_path} {sub}" if sub else ctx.command_path):
            return super().invoke(ctx)


@click.group(cls=_OneLineGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="oodkit")
@click.option("--debug", is_flag=True, help="Show the full traceback of an error.")
def main(debug):
    """Out-of-distribution detection with classification diffusion models.

    \b
    oodkit bench digits                         embedded demo, CPU, no downloads
    oodkit models                               pretrained CDMs (--model names)
    oodkit score --model fashionmnist --data mnist --out s.csv
    oodkit fit --model fashionmnist --data fashionmnist --out det.npz
    oodkit score --detector det.npz --data folder:imgs --out s.csv
    oodkit train --kind cdm --data cifar10 --out cdm.pt
    oodkit bench cifar10-vs-svhn --model cdm.pt
    """


data_root_option = click.option(
    "--data-root", type=UserPath(path_type=Path), default=None,
    help="Folder with torchvision's files or <name>_<split>.npz arrays (default $OODKIT_DATA or ./data).",
)
download_option = click.option("--download", is_flag=True, help="Let torchvision download missing data sets.")
device_option = click.option("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available).")


@main.command()
@click.option("--kind", "--model", "kind", type=click.Choice(["cdm", "ddpm", "joint"]), default="cdm",
              show_default=True,
              help="Model kind: cdm; ddpm (the ELBO baseline); joint (DDPM + classifier head, needs labels). "
                   "(--model is the older spelling.)")
@click.option("--data", "data_spec", required=True, help="Data set name, npz:PATH, tar:PATH or folder:PATH (train split).")
@data_root_option
@download_option
@click.option("--net", default="small", show_default=True, help="UNet preset: tiny, compact, small or paper.")
@click.option("--image-size", type=NET_SIZE, default=None,
              help="Resize images to this square size (default: native).")
@click.option("--channels", type=click.Choice(["1", "3"]), default=None, help="Convert images to 1 or 3 channels.")
@click.option("--schedule", type=click.Choice(["uniform", "linear", "cosine"]), default="uniform", show_default=True)
@click.option("-T", "--T", "T", type=LEVELS, default=1000, show_default=True,
              help="Number of noise levels.")
@click.option("--steps", type=POS, default=TrainConfig.steps, show_default=True, help="Optimizer steps in all.")
@click.option("--batch-size", type=BATCH, default=TrainConfig.batch_size, show_default=True)
@click.option("--lr", type=Finite(0, 1, min_open=True), default=TrainConfig.lr, show_default=True)
@click.option("--warmup", type=NONNEG, default=TrainConfig.warmup, show_default=True, help="Linear learning-rate warm-up steps.")
@click.option("--ema-decay", type=Finite(0, 1, max_open=True), default=TrainConfig.ema_decay, show_default=True)
@click.option("--grad-clip", type=Finite(min=0), default=TrainConfig.grad_clip, show_default=True,
              help="Clip the gradient norm to this (0 = no clipping).")
@click.option("--hflip", is_flag=True, help="Random horizontal flips.")
@click.option("--no-amp", is_flag=True, help="Train in float32 (default: bf16 autocast where the CPU or GPU runs bf16 natively).")
@click.option("--save-every", type=NONNEG, default=TrainConfig.save_every, show_default=True, help="Checkpoint every N steps (0: at the end).")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--var-type", type=click.Choice(["beta", "posterior"]), default="beta", show_default=True,
              help="ddpm/joint: the reverse process's fixed variance (for the ELBO).")
@click.option("--cdl-weight", type=Finite(0, 1e3), default=0.0, show_default=True,
              help="ddpm/joint: weight of the contrastive diffusion loss (Wu et al. 2024); 0 = off.")
@click.option("--class-head", is_flag=True,
              help="cdm: also train a linear class head on the data's labels (msp / energy scores, features "
                   "shaped by the classes); joint models always have one.")
@click.option("--label-weight", type=Finite(0, 1e3), default=None,
              help="cdm --class-head: weight of the class cross-entropy (default: the CDM's).")
@click.option("--rotation-head", is_flag=True,
              help="cdm: also train a label-free rotation head (4 quarter turns of each clean image): features "
                   "shaped by what images show, without labels; adds the upright score.")
@click.option("--rotation-weight", type=Finite(0, 1e3), default=None,
              help="cdm --rotation-head: weight of the rotation cross-entropy (default: the CDM's, 0.5).")
@click.option("--contrastive-head", is_flag=True,
              help="cdm: also train a label-free contrastive projection (SimCLR-style NT-Xent between two random "
                   "views of each clean image: crop, mirror, contrast); features shaped by what images show.")
@click.option("--contrastive-weight", type=Finite(0, 1e3), default=None,
              help="cdm --contrastive-head: weight of the NT-Xent loss (default: the CDM's, 0.1).")
@click.option("--temperature", type=Finite(0, 1e3, min_open=True), default=None,
              help="cdm --contrastive-head: NT-Xent's temperature (default: the CDM's, 0.2).")
@click.option("--noise-batch", type=POS, default=None,
              help="cdm --class-head / --rotation-head / --contrastive-head: images of each process's batch the noise-level loss uses "
                   "(default: all); the rest of the compute goes to the head losses.")
@click.option("--init", "init", type=UserPath(path_type=Path, dir_okay=False), default=None,
              help="Start from this checkpoint's weights, or a pretrained model's (a name of `oodkit models`; "
                   "a fine-tune: same kind, --net and data shape); a new head starts fresh.")
@click.option("--out", type=UserPath(path_type=Path), required=True, help="Checkpoint file to write.")
@click.option("--resume", is_flag=True, help="Continue from --out, bit-for-bit (the run's settings must match).")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out checkpoint.")
@device_option
@click.option("--quiet", is_flag=True, help="No progress bar.")
@config_option
@_friendly
@_locks("out", "checkpoint")
def train(kind, data_spec, data_root, download, net, image_size, channels, schedule, T, steps, batch_size, lr,
          warmup, ema_decay, grad_clip, hflip, no_amp, save_every, seed, var_type, cdl_weight, class_head,
          rotation_head, rotation_weight, contrastive_head, contrastive_weight, temperature, label_weight,
          noise_batch, init, out, resume, overwrite, device, quiet):
    """Train a model (multi-GPU: torchrun --nproc-per-node N -m oodkit train ...)."""
    from .data import conform, load_dataset
    from .data.images import as_images
    from .models.simclr import PROJECTION_DIM
    from .nn.unet import PRESETS
    from .training import TrainConfig, fit_model

    if net not in PRESETS:
        raise UserError(f"--net {net!r}: choose one of {', '.join(PRESETS)}")
    _writable_file(out, "--out")
    if out.exists() and not (resume or overwrite):
        raise UserError(f"{out} exists: pass --resume to continue it or --overwrite to replace it")
    if resume and overwrite:
        raise UserError("--resume and --overwrite contradict each other")
    if init is not None and resume:
        raise UserError("--init starts a run from another checkpoint; --resume continues --out: pass one of them")
    ctx = click.get_current_context()
    for name, flag in (("var_type", "--var-type"), ("cdl_weight", "--cdl-weight")):
        if kind == "cdm" and ctx.get_parameter_source(name) != click.core.ParameterSource.DEFAULT:
            raise UserError(f"{flag} sets a ddpm / joint model's training; a cdm has none: drop it")
    if kind != "cdm" and (class_head or rotation_head or contrastive_head or noise_batch is not None):
        raise UserError(f"--class-head, --rotation-head, --contrastive-head and --noise-batch are for cdm models, "
                        f"not {kind}")
    # each head's settings: (CDM option, value, its flag, whether the head is on, the head)
    head_settings = [("label_weight", label_weight, "--label-weight", class_head, "class"),
                     ("rotation_weight", rotation_weight, "--rotation-weight", rotation_head, "rotation"),
                     ("contrastive_weight", contrastive_weight, "--contrastive-weight", contrastive_head, "contrastive"),
                     ("temperature", temperature, "--temperature", contrastive_head, "contrastive")]
    for _, value, flag, on, head in head_settings:
        if value is not None and not on:
            raise UserError(f"{flag} sets the {head} head's training: add --{head}-head or drop it")
    if noise_batch is not None and not (class_head or rotation_head or contrastive_head):
        raise UserError("--noise-batch splits the batch with a head's loss: add --class-head, --rotation-head or "
                        "--contrastive-head, or drop it")
    if contrastive_head and batch_size < 2:
        raise UserError("--contrastive-head tells each image from the others in its batch: use --batch-size 2 or more")
    if noise_batch is not None and noise_batch > batch_size:
        raise UserError(f"--noise-batch {noise_batch} is larger than --batch-size {batch_size}")
    if init is not None and not init.is_file():
        from .pretrained import resolve_model

        init = resolve_model(str(init))  # a pretrained name: its weights file
        if not init.is_file():
            raise UserError(f"--init: no checkpoint at {init} (give a checkpoint path or a pretrained name, see "
                            "`oodkit models`)")
    _not_an_input(out, "--out", ("--init checkpoint", init), ("--data file", data_spec))
    if overwrite:
        from .checkpoint import check_replaceable

        check_replaceable(out)  # before the data is read; fit_model checks again
    device = _device(device)
    ds = load_dataset(data_spec, "train", root=data_root, download=download, holdout=True)
    x = ds.tensor()
    given = click.get_current_context().get_parameter_source("batch_size") != click.core.ParameterSource.DEFAULT
    if given and batch_size > len(ds):  # a batch past the data repeats images in each step; its memory grows with it
        raise UserError(f"--batch-size {batch_size} is more than the {len(ds)} training images of {ds.name}: "
                        f"use at most {len(ds)}")
    x = conform(x, image_size or x.shape[-1], int(channels) if channels else x.shape[1])
    cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, warmup=warmup, ema_decay=ema_decay,
                      grad_clip=grad_clip, hflip=hflip, amp=not no_amp, save_every=save_every, seed=seed)
    click.echo(f"training {kind} ({net}) on {ds.name}: {x.shape[0]} images {tuple(x.shape[1:])}", err=True)
    options = {} if kind == "cdm" else {"var_type": var_type, "cdl_weight": cdl_weight}
    if class_head:
        options["num_labels"] = "auto"
    if rotation_head:
        options["rotations"] = 4
    if contrastive_head:
        options["contrastive"] = PROJECTION_DIM
    options.update({key: value for key, value, *_ in head_settings if value is not None})  # only a head that is on
    if noise_batch is not None:
        options["noise_batch"] = noise_batch
    labelled = kind == "joint" or class_head
    if labelled and ds.labels is None:
        raise UserError(f"{ds.name} has no labels: a {'joint model' if kind == 'joint' else 'class head'} needs them")
    model = fit_model(x, kind=kind, net=net, T=T, schedule=schedule, config=cfg, out=out, resume=resume,
                      device=device, progress=not quiet, data_info={"dataset": data_spec},
                      labels=ds.labels if labelled else None, model_options=options, init=init)
    click.echo(f"wrote {out} (step {model.train_steps})")


def _split_list(value):
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


DETECTORS_HELP = ("Comma-separated detectors (default: those of the given models' kinds, with msp and energy for "
                  "a model with a class head, upright for one with a rotation head). With several models each runs "
                  "on the model it belongs to; NAME@KIND pins one, e.g. itd@cdm. The detectors are listed below.")


class _WithDetectors(click.Command):
    """A command whose help ends with the detector table, read when help is shown."""

    def format_epilog(self, ctx, formatter):
        from .detectors import describe_detectors

        formatter.write_paragraph()
        formatter.write_text("Detectors [units; model kinds]:")
        for line in describe_detectors(width=formatter.width - 4 if formatter.width else 76).splitlines():
            formatter.write(f"  {line}\n")


def _command_line() -> str:
    """The command as invoked, rebuilt from its parsed parameters (those not left at
    their defaults), so that it reads the same however oodkit was started."""
    import shlex

    ctx = click.get_current_context()
    parts = ["oodkit", ctx.info_name]
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if ctx.get_parameter_source(param.name) == click.core.ParameterSource.DEFAULT:
            continue
        if isinstance(param, click.Argument):
            parts.append(shlex.quote(str(value)))
        elif param.is_flag:
            parts.append(param.opts[-1]) if value else None
        else:
            parts += [param.opts[-1], shlex.quote(str(value))]
    return " ".join(parts)


@main.command(cls=_WithDetectors)
@click.argument("spec")
@click.option("--model", default=None,
              help="Checkpoint(s) or pretrained names, comma-separated (cdm, ddpm, joint); absent: the "
                   "pretrained model of IN if there is one, else a CDM trained on IN's training split (cached).")
@data_root_option
@download_option
@click.option("--detectors", default=None, help=DETECTORS_HELP)
@click.option("--output-dir", type=UserPath(), default="oodkit-results", show_default=True,
              callback=lambda ctx, param, v: _named_folder(v),
              help="Folder for the tables, scores and plots; an earlier bench run's are replaced, files bench did "
                   "not write never are.")
@click.option("--net", default=None, help="Preset for a model trained here (the digits suite: tiny, others: small).")
@click.option("--steps", type=POS, default=None, help="Training steps for a model trained here.")
@click.option("-T", "--T", "T", type=LEVELS, default=None, help="Noise levels for a model trained here (1000).")
@click.option("--image-size", type=NET_SIZE, default=None, help="Model input size for a model trained here.")
@click.option("--batch-size", type=BATCH, default=256, show_default=True, help="Scoring batch size.")
@click.option("--jpeg-ood", type=click.IntRange(1, 100), default=None,
              help="Pass OOD sets from other sources through JPEG at this quality (75 matches the "
                   "local CIFAR-10 copy); held-out classes of the ID set keep its encoding.")
@click.option("--max-train", type=POS, default=None, help="Use at most this many ID training images.")
@click.option("--max-test", type=POS, default=None, help="Use at most this many images per test set.")
# metrics.MIN_BOOTSTRAP / MAX_BOOTSTRAP, spelled out so that --help needs no scikit-learn (a test checks the copy)
@click.option("--bootstrap", type=int, default=1000, show_default=True, metavar="N",
              help="Bootstrap resamples for the 95 % intervals: 0 (none) or 100..100,000.")
@click.option("--seed", type=SEED, default=0, show_default=True)
@device_option
@click.option("--quiet", is_flag=True, help="No progress bars.")
@config_option
@_friendly
@_locks("output_dir", "results folder")
def bench(spec, model, data_root, download, detectors, output_dir, net, steps, T, image_size, batch_size, jpeg_ood,
          max_train, max_test, bootstrap, seed, device, quiet):
    """Benchmark detectors on IN-vs-OUT[,OUT...] or a suite.

    \b
    Suites: digits (embedded, no downloads), cifar10, fashionmnist, mnist;
    near-OOD (held-out classes): cifar10-near, fashionmnist-near.
    Examples:
      oodkit bench digits
      oodkit bench fashionmnist-vs-mnist --model fmnist.pt --data-root DIR
      oodkit bench cifar10-vs-svhn,cifar100 --model cdm.pt --detectors fused
    """
    from .bench import run_bench

    names = _split_list(detectors)
    if detectors is not None and not names:
        raise UserError(f"--detectors {detectors!r} names no detector")
    device, _ = _join_group(_device(device))  # under torchrun: the batches of each pass shared out
    run_bench(spec, model=model, detectors=names, data_root=data_root, download=download,
              output_dir=output_dir, net=net, steps=steps, T=T, image_size=image_size, batch_size=batch_size,
              device=device, jpeg_ood=jpeg_ood, max_train=max_train, max_test=max_test, seed=seed,
              bootstrap=bootstrap, progress=not quiet, echo=lambda m: click.echo(m), command=_command_line())


def _calibration_set(full, keep, data_spec, spec, split, limit, data_root, download, seed):
    """The held-out ID images a threshold is calibrated on: never the fitting images."""
    import numpy as np

    from .data import load_dataset

    if split == "train" and spec == data_spec:
        rest = np.setdiff1d(np.arange(len(full)), keep)
        if not len(rest):
            raise UserError("--calibrate-split train on the fitting data needs a held-out part: fit on fewer "
                            f"images with --max-train (now all {len(full)} are used)")
        cal = full.subset(rest)
    else:
        # a single file is split 80/20 only when it is also the fitting data; another one is all held out
        cal = load_dataset(spec, split, data_root, download, holdout=spec == data_spec)
    if limit is not None and len(cal) > limit:
        cal = cal.subset(np.sort(np.random.default_rng(seed + 1).choice(len(cal), limit, replace=False)))
    return cal


@main.command(cls=_WithDetectors)
@click.option("--model", required=True, help="Trained checkpoint, or a pretrained name (see `oodkit models`).")
@click.option("--data", "data_spec", required=True, help="ID data set to fit on (its train split).")
@click.option("--detectors", default=None, help=DETECTORS_HELP)
@click.option("--calibrate-on", default=None,
              help="Held-out ID data to set each threshold on (conformal: fresh images like it are accepted "
                   "with probability >= --tpr, on average over the draw of these images; see --confidence).")
@click.option("--calibrate-split", type=click.Choice(["test", "train"]), default=None,
              help="Split of --calibrate-on. train with --calibrate-on = --data: the training images that "
                   "--max-train left out (a held-out part, never the fitting images); train needs a model that "
                   "records the images it trained on. Default: test.")
@click.option("--max-calibrate", type=POS, default=None, help="Calibrate on at most this many images (seeded).")
@click.option("--tpr", type=Finite(0, 1, min_open=True, max_open=True), default=None,
              help="With --calibrate-on: the share of fresh ID images each threshold accepts (default 0.95).")
@click.option("--confidence", type=Finite(0, 1, min_open=True, max_open=True), default=None,
              help="With --calibrate-on: each threshold accepts at least --tpr of fresh ID images with this "
                   "probability over the draw of the calibration images (default: --tpr on average, which one "
                   "threshold misses about half the time); needs more images (45 for 0.95 at 0.9).")
@click.option("--max-train", type=POS, default=None, help="Fit on at most this many images (seeded subsample).")
@click.option("--max-bank", type=NONNEG, default=None,
              help="kNN scores search at most this many training images (seeded subsample; default 100,000; 0: "
                   "all). Fitting costs images x bank; every image still sets the threshold.")
@click.option("--align-px", type=ALIGN, default=None,
              help="Bring images through this size first (the smaller side of an OOD pair, as `oodkit bench` "
                   "does); recorded in the file and applied by `score --detector`.")
@click.option("--out", type=UserPath(path_type=Path), required=True, help="Detector file to write (.npz).")
@click.option("--embed-model", is_flag=True, help="Store the model's weights in the detector file.")
@click.option("--precision", type=click.Choice(PRECISION_CHOICES), default="fp32", show_default=True,
              help="The network's arithmetic for fitting and calibrating: " + PRECISION_HELP + " Recorded in the "
                   "file: `score --detector` scores in it by default, so its thresholds hold.")
@data_root_option
@download_option
@click.option("--batch-size", type=BATCH, default=256, show_default=True)
@click.option("--seed", type=SEED, default=0, show_default=True)
@device_option
@click.option("--quiet", is_flag=True, help="No progress bars.")
@config_option
@_friendly
@_locks("out", "detector file")
def fit(model, data_spec, detectors, calibrate_on, calibrate_split, max_calibrate, tpr, confidence, max_train, max_bank,
        align_px, out, embed_model, precision, data_root, download, batch_size, seed, device, quiet):
    """Fit detectors once and save them, to score later with `oodkit score --detector`."""
    import numpy as np

    from .data import load_dataset
    from .detectors import model_default_detectors
    from .detectors.persist import save_detectors
    from .pipeline import Flow, align
    from .pretrained import load_model

    from .bench import assign_detectors
    from .detectors.base import OptimisticThresholdWarning
    from .detectors.cdm import records_training_images
    from .detectors.fileformat import check_detector_name

    _writable_file(out, "--out")
    _not_an_input(out, "--out", ("--model checkpoint", model), ("--data file", data_spec),
                  ("--calibrate-on file", calibrate_on))
    _replaces_a_detector_file(out)
    try:
        check_detector_name(out)
    except ValueError as e:
        raise UserError(f"--out {e}") from None
    given = [f for f, v in (("--tpr", tpr), ("--confidence", confidence), ("--calibrate-split", calibrate_split),
                            ("--max-calibrate", max_calibrate)) if v is not None]
    if given and not calibrate_on:
        raise UserError(f"{given[0]} applies to the held-out ID images the thresholds are set on: pass them with "
                        "--calibrate-on (without it the thresholds come from the fitting images at tpr 0.95)")
    tpr = 0.95 if tpr is None else tpr
    calibrate_split = calibrate_split or "test"
    device = _device(device)
    if detectors is not None and not _split_list(detectors):
        raise UserError(f"--detectors {detectors!r} names no detector")
    m = load_model(model, device=device)
    m.reference = model  # the file records the name or path as given
    if calibrate_on and calibrate_split == "train" and not records_training_images(m):
        raise UserError(f"--calibrate-split train: {model} does not record which images it trained on, so training "
                        "images may be among them, and thresholds set on images the network saw accept fewer fresh "
                        "images than --tpr (0.929 for 0.95 measured on fashionmnist): use --calibrate-split test")
    names = _split_list(detectors) or model_default_detectors([m])
    assign_detectors(names, [(m, model)])  # each runs on this model's kind, and once
    flow = Flow(batch_size, device, seed, progress=not quiet, precision=precision)
    if max_bank is not None:
        from .detectors import CDMDetector

        try:
            CDMDetector(max_bank=max_bank or None)._check_params()  # before any forward pass
        except ValueError as e:
            raise UserError(f"--max-bank {max_bank}: {e} (0 keeps every image)") from None
        flow.max_bank = max_bank or None
    for n in names:  # every detector's own refusals (a name, a precision it cannot run in) before the data is read
        flow.make(n, m)
    full = load_dataset(data_spec, "train", data_root, download, holdout=True)
    keep = np.arange(len(full))
    ds = full  # the same arrays bench reads: a copy could change the memory layout and the last float bits
    if max_train is not None and len(full) > max_train:
        keep = np.sort(np.random.default_rng(seed).choice(len(full), max_train, replace=False))
        ds = full.subset(keep)
    cal = None
    if calibrate_on:  # read, and counted against --tpr, before the fitting pass
        from .conformal import min_calibration_size

        cal = _calibration_set(full, keep, data_spec, calibrate_on, calibrate_split, max_calibrate, data_root,
                               download, seed)
        need = min_calibration_size(tpr, confidence)
        if len(cal) < need:
            raise UserError(f"--calibrate-on {calibrate_on}: tpr={tpr:g}"
                            + (f" with confidence {confidence:g}" if confidence is not None else "")
                            + f" needs at least {need} held-out ID images for its guarantee, got {len(cal)}")
    with warnings.catch_warnings():
        if calibrate_on:  # the thresholds the fitting images set are replaced below
            warnings.simplefilter("ignore", OptimisticThresholdWarning)
        dets = flow.fit({n: m for n in names}, align(ds.tensor(), m, align_px), align_px=align_px)
    x_val = None
    if calibrate_on:
        x_val = align(cal.tensor(), m, align_px)
        flow.calibrate(dets, x_val, tpr, confidence)
    save_detectors(out, dets, embed_model=embed_model)
    used = min(len(d.calibration_scores_) for d in dets.values()) if calibrate_on else 0
    kept = (f"with probability {confidence:g} each threshold accepts at least {tpr:g} of fresh images"
            if confidence is not None else f"conformal thresholds accept {tpr:g} of fresh images on average")
    how = (f"{kept} like {calibrate_on} ({calibrate_split} "
           f"split, {used} images" + (f"; {len(x_val) - used} the network trained on were left out)"
                                     if used < len(x_val) else ")")
           if calibrate_on else "thresholds: conformal at 0.95 on out-of-sample training scores (optimistic when "
           "the model was trained on these images: pass --calibrate-on)")
    ran = {getattr(d, "arithmetic_", "fp32") for d in dets.values()} - {"fp32"}  # what the passes really ran in
    arith = f" in {', '.join(sorted(ran))}" if ran else ""
    click.echo(f"wrote {out}: {', '.join(dets)} fitted on {len(ds)} {ds.name} images{arith}; {how}")


@main.command()
@click.option("--model", default=None, help="Trained checkpoint, or a pretrained name (see `oodkit models`).")
@click.option("--detector", "detector_file", type=UserPath(path_type=Path), default=None,
              help="Detector file from `oodkit fit`, or a pretrained name (its shipped detectors); no training set needed.")
@click.option("--data", "data_spec", required=True,
              help="Data set name, npz:PATH, tar:PATH or folder:PATH ({split} in PATH names one file per split).")
@click.option("--split", type=click.Choice(["train", "test"]), default="test", show_default=True,
              help="Which split of a named set (or of a PATH with {split}) to score; a single file is scored whole.")
@click.option("--resize", type=SIZE, default=None,
              help="folder: and tar: data: bring every image to this square size (mixed sizes are refused otherwise).")
@click.option("--num-workers", type=NONNEG, default=0, show_default=True,
              help="folder: data: decode the files in this many DataLoader worker processes.")
@click.option("--fit-data", default=None,
              help="With --model: ID data (train split) to fit the detectors' ID statistics on (default: the "
                   "model's "
                   "training set, when it can be found).")
@data_root_option
@download_option
@click.option("--out", type=UserPath(path_type=Path), required=True,
              help="CSV file to write (Parquet for a .parquet name; needs pyarrow).")
@click.option("--chunk", type=POS, default=10000, show_default=True,
              help="Read and score this many images at a time (rounded up to whole batches; npz and tar shards: at "
                   "most a shard), writing each chunk's rows under OUT.parts/ as it is done; the same command after "
                   "a kill resumes there.")
@click.option("--fdr", type=Finite(0, 1, min_open=True, max_open=True), default=None,
              help="With --detector: screen the batch at this false discovery rate (Benjamini-Hochberg on the "
                   "conformal p-values); adds a DETECTOR_flagged column.")
@click.option("--batch-size", type=BATCH, default=256, show_default=True)
@click.option("--precision", type=click.Choice(PRECISION_CHOICES), default=None,
              help="The network's arithmetic: " + PRECISION_HELP + " Default: a --detector file's own (`oodkit fit "
                   "--precision`), else fp32. Shipped statistics are fp32; thresholds against statistics fitted in "
                   "another arithmetic warn; --fit-data fits in this one.")
@device_option
@click.option("--quiet", is_flag=True, help="No progress bars.")
@config_option
@_friendly
@_locks("out", "score file")
def score(model, detector_file, data_spec, split, resize, num_workers, fit_data, data_root, download, out, chunk,
          fdr, batch_size, precision, device, quiet):
    """Per-sample scores of a data set (CSV, one column per score, higher = more ID)."""
    from .data.chunks import plan_chunks
    from .detectors import TABLE, model_default_detectors
    from .scoring import detector_scorer, model_scorer
    from .streaming import check_format, score_in_chunks

    if (model is None) == (detector_file is None):
        raise UserError("give exactly one of --model (fit here) and --detector (a file from `oodkit fit`)")
    if fit_data is not None and detector_file is not None:
        raise UserError("--fit-data fits a --model's ID statistics; a --detector file carries its own")
    if fdr is not None and detector_file is None:
        from .scoring import FIX

        raise UserError("--fdr screens against a detector file's calibration scores on held-out ID images: "
                        + FIX.replace("MODEL", str(model)))
    _data_options_apply(data_spec, resize, num_workers)
    _writable_file(out, "--out")
    _not_an_input(out, "--out", ("--model checkpoint", model), ("--detector file", detector_file),
                  ("--data file", data_spec))
    check_format(out)
    device, rank = _join_group(_device(device))
    # whole batches per chunk: the network then sees the batches of a whole-set run, number for number
    chunk = -(-chunk // batch_size) * batch_size
    chunks = plan_chunks(data_spec, split, data_root, download, resize=resize, num_workers=num_workers, size=chunk)
    if detector_file is not None:
        scorer, note = detector_scorer(detector_file, device, not quiet), ""
        precision = scorer.scoring_precision(precision)
        if fdr is not None:
            try:
                scorer.check_screen(fdr)
            except ValueError as e:
                raise UserError(str(e)) from None
    else:
        precision = precision or "fp32"
        scorer = model_scorer(model, fit_data, data_root, download, batch_size, device, not quiet, precision)
        note = (f"; ID statistics fitted on {scorer.source}" if scorer.source
                else "; no ID data: detectors that fit ID statistics left out (give it with --fit-data)"
                if any(TABLE[n].fitted for n in model_default_detectors([scorer.model]))
                else "; its detectors fit no ID statistics, so no thresholds")
    scorer.identity.update(data=data_spec, split=split, resize=resize)
    n, columns = score_in_chunks(scorer, chunks, out, batch_size, device, fdr=fdr, progress=not quiet,
                                 echo=functools.partial(click.echo, err=True), precision=precision)
    if rank == 0:  # under torchrun every process scored its share of the batches; one writes
        if scorer.threshold_warning():
            click.echo(f"Warning: {scorer.threshold_warning()}", err=True)
        click.echo(f"wrote {out}: {n} rows, columns {', '.join(columns)}{note}")


def _join_group(device):
    """Under ``torchrun``: this process's device (``cuda:LOCAL_RANK`` for CUDA) after
    joining the process group, and its rank; otherwise ``(device, 0)``."""
    import torch

    from .distributed import maybe_init, rank_world

    if device.type == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    maybe_init(device)
    return device, rank_world()[0]


@main.command()
def models():
    """List the pretrained models (names usable wherever --model takes a checkpoint)."""
    from .pretrained import list_models

    rows = list_models()
    if not rows:
        click.echo("no pretrained models are installed")
        return
    def trained(r):  # where and how long: CPU-hours of the CPU runs, the hardware otherwise
        return r.get("trained_on") or (f"{r['cpu_hours']:.1f} CPU-h" if r.get("cpu_hours") is not None else "?")

    table = [["name", "data", "steps", "batch", "heads", "trained", "test bpd", "available", "sha256"]]
    table += [[r["name"], r.get("dataset", "?"), str(r.get("steps") or 0), str(r.get("batch_size") or "?"),
               r.get("heads") or "-", trained(r), f"{r.get('test_bpd') or float('nan'):.3f}", r["available"],
               r["sha256"][:16]]
              for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    right = {2, 3, 6}  # numbers
    for row in table:
        click.echo("  ".join(v.rjust(w) if i in right else v.ljust(w)
                             for i, (v, w) in enumerate(zip(row, widths))).rstrip())


@main.command()
@data_root_option
def datasets(data_root):
    """List registered data sets and what is available locally."""
    from .data import default_root, list_datasets

    root = Path(data_root) if data_root is not None else default_root()
    where = "--data-root" if data_root is not None else "the data root ($OODKIT_DATA or ./data)"
    if root.exists() and not root.is_dir():  # a missing default root only means nothing is on disk yet
        raise UserError(f"{where} {root} is not a folder")
    if data_root is not None and not root.exists():
        raise UserError(f"--data-root {data_root} does not exist")
    rows = list_datasets(data_root)
    w = max(len(r["name"]) for r in [*rows, {"name": "name"}])
    a = max(len(r["available"]) for r in [*rows, {"available": "available"}])
    click.echo(f"data root: {data_root or default_root()}")
    click.echo(f"{'name':<{w}}  {'available':<{a}}  description")
    for r in rows:
        click.echo(f"{r['name']:<{w}}  {r['available']:<{a}}  {r['description']}")


if __name__ == "__main__":  # python -m oodkit.cli
    main()
