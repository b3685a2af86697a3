"""The benchmark runner behind ``oodkit bench``, in four stages:

1. :func:`load_sets`: the ID train / test splits and every OOD set (all before any model
   work, so that a missing set fails fast);
2. :func:`resolve_models` and :func:`assign_detectors`: the models and which one runs
   each detector;
3. :func:`score_pairs`: per alignment size, every detector is **fitted on ID training
   images transformed exactly like that pair's ID test images** (DESIGN 4), then scores
   the ID test set once and each OOD set of that size;
4. :func:`oodkit.report.write_results`: tables with bootstrap intervals, provenance,
   plots, each file written atomically.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.base import clone

from .checkpoint import CheckpointError, load_checkpoint
from .conformal import cross_calibrated_rates
from .pretrained import cache_root, list_models, load_model
from .data import DataNotFound, as_images, conform, load_dataset
from .data.images import fingerprint, image_hashes, jpeg_roundtrip
from .data.registry import ood_group, path_kind, selection, source_of
from .data.sources import ImageSet
from .detectors import TABLE, detector_kinds, model_default_detectors
from .detectors.table import head_requirement
from .detectors.fileformat import VERSION as DETECTOR_FORMAT
from .distributed import rank_world
from .pipeline import Flow
from .metrics import bootstrap_intervals, check_bootstrap, ood_metrics
from .report import console_table, foreign_results, threshold_note, write_results
from .training import TrainConfig, fit_model
from .validation import did_you_mean

__all__ = ["SUITES", "BenchSpec", "BenchPlan", "parse_spec", "run_bench", "run_plan", "model_cache_dir", "load_sets", "resolve_models",
           "assign_detectors", "aligned_groups", "score_pairs"]

SUITES = {
    "digits": "digits-0to4-vs-digits-5to9,letters,sample-patches,noise,constant",
    "cifar10": "cifar10-vs-svhn,cifar100,mnist,fashionmnist,textures,celeba,noise,constant",
    "fashionmnist": "fashionmnist-vs-mnist,noise,constant",
    "mnist": "mnist-vs-fashionmnist,noise,constant",
    # near-OOD: held-out classes (needs a model trained on the ID classes only)
    "cifar10-near": "cifar10[0-5]-vs-cifar10[6-9]",
    "fashionmnist-near": "fashionmnist[0-4]-vs-fashionmnist[5-9]",
}
# What `oodkit bench digits` trains when no model is given: a few minutes on two CPU cores.
EMBEDDED_TRAINING = dict(net="tiny", steps=1500, T=1000, schedule="uniform", lr=1e-3, batch_size=64)


@dataclass
class BenchSpec:
    id: str
    oods: list = field(default_factory=list)
    suite: str | None = None


def parse_spec(spec: str) -> BenchSpec:
    """``IN-vs-OUT[,OUT...]`` or a suite name (``digits``, ``cifar10``, ...)."""
    if spec in SUITES:
        parsed = parse_spec(SUITES[spec])
        parsed.suite = spec
        return parsed
    if "-vs-" not in spec:
        raise ValueError(f"benchmark {spec!r}: write IN-vs-OUT[,OUT...] or a suite ({', '.join(SUITES)})")
    id_name, _, rest = spec.partition("-vs-")
    id_name = id_name.strip()
    oods = [o.strip() for o in rest.split(",") if o.strip()]
    if not id_name or not oods:
        raise ValueError(f"benchmark {spec!r}: need an in-distribution set and at least one OOD set")
    for a, b in zip(oods, oods[1:]):  # a comma in a file's name splits it into two sets
        if path_kind(a) and not Path(a.split(":", 1)[1]).expanduser().exists() and \
                Path(f"{a.split(':', 1)[1]},{b}").expanduser().exists():
            raise ValueError(f"benchmark {spec!r}: commas separate the OOD sets, and {a},{b} is a file: rename it "
                             "without the comma")
    seen = {}
    for o in oods:  # one set twice would be dropped, or counted twice in the means
        key = selection(o)
        if key in seen:
            raise ValueError(f"benchmark {spec!r}: OOD set {o!r} named twice ({seen[key]!r})")
        seen[key] = o
    return BenchSpec(id_name, oods)


def model_cache_dir() -> Path:
    return cache_root() / "models"


def _subsample(ds: ImageSet, n: int | None, seed: int) -> ImageSet:
    if n is None or len(ds) <= n:
        return ds
    idx = np.sort(np.random.default_rng(seed).choice(len(ds), n, replace=False))
    return ds.subset(idx)


# -- stage 1: data ---------------------------------------------------------------------
@dataclass
class Sets:
    spec: BenchSpec
    id_train: ImageSet
    id_test: ImageSet
    oods: dict
    skipped: list


def jpeg_applies(id_name: str, ood_name: str, quality: int | None) -> bool:
    """``--jpeg-ood`` re-encodes OOD sets from another source than the ID set: held-out
    classes of the ID set (``cifar10[6-9]`` against ``cifar10[0-5]``) already went
    through its encoding, and a second round trip would be an artefact to detect."""
    return quality is not None and source_of(ood_name) != source_of(id_name)


def load_sets(bs: BenchSpec, data_root=None, download=False, jpeg_ood=None, max_train=None, max_test=None,
              seed=0, echo=print) -> Sets:
    full_train = load_dataset(bs.id, "train", data_root, download, holdout=True)
    full_test = load_dataset(bs.id, "test", data_root, download, holdout=True)
    id_hashes = np.concatenate([image_hashes(torch.from_numpy(d.images)) for d in (full_train, full_test)])
    id_train, id_test = _subsample(full_train, max_train, seed), _subsample(full_test, max_test, seed + 1)
    echo(f"in-distribution: {bs.id} ({len(id_train)} train / {len(id_test)} test, "
         f"{id_train.size}x{id_train.size}x{id_train.channels})")
    oods, skipped = {}, []
    for name in bs.oods:
        try:
            ood = load_dataset(name, "test", data_root, download, like=id_test)
        except DataNotFound as e:
            if bs.suite:
                skipped.append(name)
                echo(f"skipping {name}: {e}")
                continue
            raise
        ood = _subsample(ood, max_test, seed + 2)
        if jpeg_applies(bs.id, name, jpeg_ood):
            ood = ImageSet(jpeg_roundtrip(ood.images, jpeg_ood), ood.labels, ood.name, ood.paths)
        shared = np.isin(image_hashes(torch.from_numpy(ood.images)), id_hashes)
        if 2 * shared.sum() >= len(ood):  # in any order or number: an AUROC of a set against itself measures nothing
            raise ValueError(f"{int(shared.sum())} of the {len(ood)} images of OOD set {name} are images of the "
                             f"in-distribution set {bs.id}: name another OOD set")
        if shared.any():  # an image of the ID set is no OOD example, whatever set it came with
            echo(f"left out {int(shared.sum())} of the {len(ood)} images of {name}: they are images of {bs.id}")
            ood = ood.subset(np.flatnonzero(~shared))
        oods[name] = ood
    if not oods:
        raise DataNotFound(f"none of the OOD sets {bs.oods} could be loaded")
    if jpeg_ood is not None and not any(jpeg_applies(bs.id, n, jpeg_ood) for n in oods):
        echo(f"note: --jpeg-ood {jpeg_ood} re-encoded no OOD set: held-out classes of {bs.id} already share its "
             "encoding")
    return Sets(bs, id_train, id_test, oods, skipped)


# -- stage 2: models and detectors -----------------------------------------------------
def _train_cached(x_train: torch.Tensor, id_name: str, training: dict, device, progress, echo):
    """A model trained here, cached by data and settings. Training writes to a
    ``.partial.pt`` file that is published under the final name only when finished, so
    the cache never holds a half-trained model; an interrupted run resumes from it."""
    key = json.dumps({"data": id_name, "n": int(x_train.shape[0]), **training}, sort_keys=True)
    digest = hashlib.sha1(key.encode() + fingerprint(x_train).encode()).hexdigest()[:12]
    path = model_cache_dir() / f"{id_name}-{training['net']}-{training['steps']}-{digest}.pt"
    partial = path.with_name(path.stem + ".partial.pt")
    if path.exists():
        try:
            m = load_model(path, device=device)
            if m.train_steps == training["steps"]:
                echo(f"model: reusing cached {path}")
                return m, str(path)
            echo(f"cached model {path} stopped at step {m.train_steps} of {training['steps']}; training again")
        except CheckpointError as e:
            echo(f"cached model unusable ({e}); training again")
        path.unlink()
    resume = False
    if partial.exists():
        try:
            step = (load_checkpoint(partial).get("train_state") or {}).get("step")
            resume = step is not None
            echo(f"model: resuming the interrupted training in {partial} at step {step}")
        except CheckpointError as e:
            echo(f"partial training run unusable ({e}); starting afresh")
            partial.unlink()
    if not resume:
        echo(f"model: training a {training['net']} CDM on {id_name} for {training['steps']} steps -> {path}")
    cfg = TrainConfig(steps=training["steps"], batch_size=training["batch_size"], lr=training["lr"],
                      warmup=min(100, training["steps"] // 10), seed=training.get("seed", 0),
                      save_every=max(100, training["steps"] // 5))
    m = fit_model(x_train, net=training["net"], T=training["T"], schedule=training["schedule"], config=cfg,
                  out=partial, resume=resume, device=device, progress=progress, data_info={"dataset": id_name},
                  resume_hint="run the same `oodkit bench` command again to resume")
    os.replace(partial, path)
    return load_model(path, device=device), str(path)


def resolve_models(model, sets: Sets, net=None, steps=None, T=None, image_size=None, seed=0, device=None,
                   progress=True, echo=print) -> list:
    """``[(model, path as given), ...]``: the given checkpoints (``a.pt,b.pt``), or a CDM
    trained here on the ID training split. All must take one input shape."""
    paths = check_model_request(model, net, steps, T, image_size)
    asked_to_train = any(v is not None for v in (net, steps, T, image_size))
    if not paths and not asked_to_train and \
            sets.spec.id in {r["name"] for r in list_models() if r["available"] != "missing"}:
        paths = [sets.spec.id]  # a pretrained model of the ID set: use it rather than train one
        echo(f"model: the pretrained {sets.spec.id!r} model (pass --model to use another, or --steps N to train one here)")
    if not paths:
        if rank_world()[1] > 1:
            raise ValueError("under torchrun, bench scores given or pretrained models: train one first "
                             "(torchrun ... -m oodkit train) and pass it with --model")
        x = sets.id_train.tensor()
        x = conform(x, image_size or x.shape[-1], x.shape[1])
        training = dict(EMBEDDED_TRAINING)
        if sets.spec.suite != "digits":
            training.update(net="small", steps=2000, lr=2e-4)
        training.update({k: v for k, v in dict(net=net, steps=steps, T=T).items() if v is not None})
        training["seed"] = seed
        return [_train_cached(x, sets.spec.id, training, device, progress, echo)]
    loaded = []
    for p in paths:
        m = load_model(p, device=device)
        echo(f"model: {p} ({m.kind}, input {m.image_shape}, T={m.T}, step {m.train_steps})")
        loaded.append((m, p))
    shapes = {tuple(m.image_shape) for m, _ in loaded}
    if len(shapes) > 1:
        raise ValueError(f"the models take different input shapes {sorted(shapes)}; compare models of one size")
    return loaded


def check_model_request(model, net=None, steps=None, T=None, image_size=None) -> list:
    """The checkpoints ``model`` names (``a.pt,b.pt`` or a list; ``[]`` for none), after
    refusing requests that contradict themselves: training settings (``net``, ``steps``,
    ``T``, ``image_size``) only apply to a model trained here, so not beside ``model``."""
    from .nn.unet import PRESETS

    given = [str(m) for m in model] if isinstance(model, (list, tuple)) else \
        (str(model).split(",") if model is not None else [])
    paths = [p.strip() for p in given if p.strip()]
    if model is not None and not paths:
        raise ValueError(f"--model {model!r} names no checkpoint")
    seen = {}
    for p in paths:  # one model twice would be loaded, passed over the images and reported twice
        key = os.path.realpath(os.path.expanduser(p))  # a file named two ways is one file
        if key in seen:
            raise ValueError(f"--model: {p!r} named twice ({seen[key]!r})")
        seen[key] = p
    if model is not None and any(v is not None for v in (net, steps, T, image_size)):
        raise ValueError("--net, --steps, -T and --image-size set a model trained here; drop them with --model")
    if net is not None and net not in PRESETS:
        raise ValueError(f"--net {net!r}: choose one of {', '.join(PRESETS)}")
    return paths


def check_detectors(names, model_given: bool):
    """Fail before any data or model work on unknown names and impossible requests."""
    twice = sorted({d for d in names if names.count(d) > 1})
    if twice:
        raise ValueError(f"detector(s) {twice} named twice")
    unknown = [d for d in names if d.partition("@")[0] not in TABLE]
    if unknown:
        hint = did_you_mean(unknown[0].partition("@")[0], TABLE)
        raise ValueError(f"unknown detector(s) {unknown}{hint}; choose from {', '.join(TABLE)}")
    for name in names:
        kinds, need = detector_kinds(name), head_requirement(name)
        if not model_given and ("cdm" not in kinds or need):
            what = need[0] if need else f"{' or '.join(kinds)} model"
            raise ValueError(f"detector {name} needs a {what}; pass one with --model "
                             "(none given: the pretrained model of the ID set, or one trained here, is a plain CDM)")


def assign_detectors(names, loaded) -> dict:
    """``{detector name: (model, path)}``: the first given model of the detector's most
    preferred kind (``itd`` runs on the DDPM when there is one; ``itd@cdm`` pins it)."""
    if names is None:
        names = model_default_detectors(m for m, _ in loaded)
    out = {}
    for name in names:
        fitting = [(m, p) for kind in detector_kinds(name) for m, p in loaded if m.kind == kind]
        need = head_requirement(name)
        if need:
            fitting = [(m, p) for m, p in fitting if need[1](m)]
            if not fitting:  # refused here rather than after a pass over the training images
                raise ValueError(f"detector {name} needs a {need[0]}; none of the given models has one")
        if not fitting:
            raise ValueError(f"detector {name} needs a {' or '.join(detector_kinds(name))} model; "
                             f"got {', '.join(m.kind for m, _ in loaded)}")
        out[name] = fitting[0]
    check_once_each([(name, model) for name, (model, _) in out.items()])
    return out


def check_once_each(pairs) -> None:
    """Refuse two names for one detector on one model (``fused`` and ``fused@cdm``, or a
    name twice) among ``(name, model)`` pairs: it would run twice and be reported twice."""
    seen = {}
    for name, model in pairs:
        key = (name.partition("@")[0], id(model))
        if key in seen:
            raise ValueError(f"detector {name} named twice ({seen[key]} runs the same on the same model)")
        seen[key] = name


# -- stage 3: scoring ------------------------------------------------------------------
def aligned_groups(sets: Sets, size: int, channels: int):
    """The image sets brought to a model's ``size`` and ``channels``, one group per
    alignment size (the smaller side of a pair): yields ``(ref, id_key, x_train, x_id,
    {ood name: x})``. Every detector is fitted on ``x_train`` of the group its test images
    are in, so that it sees exactly the transform they saw."""
    native = sets.id_test.size
    by_ref = {}
    for name, ood in sets.oods.items():
        by_ref.setdefault(min(native, ood.size), []).append(name)
    for ref, ood_names in by_ref.items():
        id_key = sets.spec.id if ref == native else f"{sets.spec.id}@{ref}px"
        yield (ref, id_key, conform(sets.id_train.tensor(), size, channels, ref_size=ref),
               conform(sets.id_test.tensor(), size, channels, ref_size=ref),
               {o: conform(sets.oods[o].tensor(), size, channels, ref_size=ref) for o in ood_names})


THRESHOLD_TPR = 0.95  # the bench's calibrated threshold, reported beside the AUROC
MIN_FOR_INTERVAL = 10  # fewer images per side: a bootstrap "interval" would be a point


def _pair_row(sets: Sets, dname: str, ood_name: str, ref: int, s_id, s_ood, n_boot: int, seed: int, echo) -> dict:
    """One line of the results table: AUROC and friends, the calibrated threshold's rates,
    bootstrap intervals when both sides are large enough."""
    few = min(len(s_id), len(s_ood)) < MIN_FOR_INTERVAL
    if n_boot and few:
        echo(f"no 95 % interval for {dname} on {ood_name}: {min(len(s_id), len(s_ood))} image(s) on "
             f"one side; a bootstrap needs at least {MIN_FOR_INTERVAL} per side")
    ci = bootstrap_intervals(s_id, s_ood, n_boot=n_boot, seed=seed) if n_boot and not few else {}
    return {"detector": dname, "id": sets.spec.id, "ood": ood_name, "group": ood_group(sets.spec.id, ood_name),
            "align_px": ref, **ood_metrics(s_id, s_ood),
            **{f"{k}@{THRESHOLD_TPR:g}": v for k, v in cross_calibrated_rates(s_id, s_ood, THRESHOLD_TPR, seed).items()},
            **{f"{k}_lo": v[0] for k, v in ci.items()}, **{f"{k}_hi": v[1] for k, v in ci.items()},
            "n_id": len(s_id), "n_ood": len(s_ood)}


def score_pairs(sets: Sets, assignment: dict, batch_size=256, device=None, seed=0, n_boot=1000, progress=True,
                echo=print, on_pair=None):
    """For each alignment size (the smaller side of a pair), fit every detector on the
    ID training images brought to that size, score the ID test images at that size once,
    and each OOD set of that size, through :class:`oodkit.pipeline.Flow`. Returns ``(rows,
    scores, pairs, fitted)``: the long results table, ``{detector: {set: scores}}``,
    ``{detector: [(ood, ID scores, OOD scores, ID key), ...]}`` and ``{detector: {size:
    offset_}}``."""
    c, h, _ = next(iter(assignment.values()))[0].image_shape
    rows, scores, pairs, fitted = [], {d: {} for d in assignment}, {d: [] for d in assignment}, {d: {} for d in assignment}
    models = {d: m for d, (m, _) in assignment.items()}
    for ref, id_key, x_train, x_id, x_oods in aligned_groups(sets, h, c):
        flow = Flow(batch_size, device, seed, progress)  # one pass per image set of this group
        for dname, model in models.items():  # detector by detector: a killed run keeps the finished pairs
            det = flow.fit({dname: model}, x_train, align_px=ref if ref != sets.id_test.size else None,
                           leave_out_seen=False)  # the bench reports no threshold
            fitted[dname][ref] = det[dname].offset_
            s_id = scores[dname][id_key] = flow.score(det, x_id, id_key)[dname]
            for ood_name, x_ood in x_oods.items():
                s_ood = scores[dname][ood_name] = flow.score(det, x_ood, ood_name)[dname]
                pairs[dname].append((ood_name, s_id, s_ood, id_key))
                rows.append(_pair_row(sets, dname, ood_name, ref, s_id, s_ood, n_boot, seed, echo))
                if on_pair is not None:
                    on_pair(rows, scores)
        echo(f"fitted {len(assignment)} detectors on {x_train.shape[0]} training images at {ref}px alignment")
    return rows, scores, pairs, fitted


def _git_commit(root: Path | None = None) -> str | None:
    """The commit of the oodkit code that runs, ``-dirty`` when that code (the package
    folder) differs from it. Output files in the same repository, such as the committed
    benchmark results a run rewrites, do not count."""
    import subprocess

    root = Path(root) if root is not None else Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if out.returncode == 0:
            dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--",
                                    "oodkit"], capture_output=True, text=True, timeout=5).stdout.strip()
            return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return None


@dataclass(frozen=True)
class BenchPlan:
    """What one ``oodkit bench`` run does, validated once (:meth:`check`) and written into
    ``results.json`` as its provenance. ``model``: checkpoint paths or pretrained names
    (None: the ID set's pretrained model, or one trained here with ``net``, ``steps``,
    ``T``, ``image_size``); ``detectors``: names (None: the models' defaults);
    ``bootstrap``: resamples for the 95 % intervals (0: none)."""

    spec: str
    model: object = None
    detectors: tuple | None = None
    data_root: object = None
    download: bool = False
    output_dir: object = "oodkit-results"
    net: str | None = None
    steps: int | None = None
    T: int | None = None
    image_size: int | None = None
    batch_size: int = 256
    device: object = None
    jpeg_ood: int | None = None
    max_train: int | None = None
    max_test: int | None = None
    seed: int = 0
    bootstrap: int = 1000
    command: str | None = None

    def check(self) -> BenchSpec:
        """Refuse a plan that contradicts itself, before any data or model work."""
        bs = parse_spec(self.spec)
        check_bootstrap(self.bootstrap)
        check_model_request(self.model, self.net, self.steps, self.T, self.image_size)
        if self.detectors is not None:
            check_detectors(list(self.detectors), self.model is not None)
        if not str(self.output_dir).strip():
            raise ValueError("--output-dir is empty: name a folder (an unset variable would write into, and clean, "
                             "the current one)")
        out = Path(self.output_dir)
        if out.exists() and not out.is_dir():
            raise ValueError(f"--output-dir {out} is a file, not a folder")
        out.mkdir(parents=True, exist_ok=True)
        if not os.access(out, os.W_OK):
            raise ValueError(f"--output-dir {out} is not writable")
        foreign = foreign_results(out)
        if foreign:  # a run replaces its own results only
            raise ValueError(f"--output-dir {out} holds {', '.join(foreign)}, which oodkit bench did not write: name "
                             "another folder, or move them")
        return bs


def _provenance(plan: BenchPlan, sets: Sets, loaded: list, assignment: dict) -> dict:
    """The ``meta`` block of results.json: what ran, on what, with which code."""
    from ._version import __version__

    names = list(assignment)
    return {
        "status": "running", "spec": plan.spec, "id": sets.spec.id, "ood": list(sets.oods), "skipped": sets.skipped,
        "groups": {o: ood_group(sets.spec.id, o) for o in sets.oods},
        "detectors": names, "units": {d: TABLE[d.partition("@")[0]].units for d in names},
        "detector_models": {d: p for d, (_, p) in assignment.items()},
        "models": [{"path": p, "kind": m.kind, "T": m.T, "image_shape": list(m.image_shape),
                    "sha256": getattr(m, "checkpoint_sha256", None), "train_steps": getattr(m, "train_steps", None),
                    "trained_on": getattr(m, "data_info", {}).get("dataset")} for m, p in loaded],
        "transform": {o: {"align_px": min(sets.id_test.size, ood.size), "model_px": loaded[0][0].image_shape[-1],
                          "jpeg_quality": plan.jpeg_ood if jpeg_applies(sets.spec.id, o, plan.jpeg_ood) else None}
                      for o, ood in sets.oods.items()},
        "n_train": len(sets.id_train), "n_test": len(sets.id_test), "max_train": plan.max_train,
        "max_test": plan.max_test, "seed": plan.seed, "bootstrap": plan.bootstrap,
        "device": str(plan.device or next(loaded[0][0].parameters()).device),
        "oodkit": __version__, "git_commit": _git_commit(), "torch": torch.__version__,
        "detector_format": DETECTOR_FORMAT,
        "command": plan.command if plan.command is not None else " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }


def _quiet(*args, **kwargs) -> None:
    """What the processes other than rank 0 print and write under torchrun."""


def _every(seconds: float, out: Path, meta: dict, write=None):
    """The partial results writer: a killed run keeps the pairs finished up to the last
    write, at most ``seconds`` of work ago (rewriting every file after every pair cost a
    third of a small run)."""
    last, write = [time.monotonic()], write or write_results

    def on_pair(rows, scores):
        if time.monotonic() - last[0] >= seconds:
            write(out, rows, scores, {}, meta, plots=False)
            last[0] = time.monotonic()

    return on_pair


def run_bench(spec: str, progress: bool = False, echo=print, **options) -> pd.DataFrame:
    """Fit every detector on IN's training split (aligned per pair), score IN's test split
    and every OOD set, and write results.csv / .md / .json, scores.npz, roc.png and
    histograms.png to ``output_dir``. ``options`` are the fields of :class:`BenchPlan`.
    Returns the long-form results table, with ``bootstrap``-sample 95 % intervals."""
    if isinstance(options.get("detectors"), str):  # "fused,loglik", as the command line takes them
        options["detectors"] = [d.strip() for d in options["detectors"].split(",") if d.strip()]
    if options.get("detectors") is not None:
        options["detectors"] = tuple(options["detectors"])
    return run_plan(BenchPlan(spec, **options), progress, echo)


def run_plan(plan: BenchPlan, progress: bool = False, echo=print) -> pd.DataFrame:
    """:func:`run_bench` on a plan: data -> models -> flow (fit, score) -> metrics -> report."""
    t_start = time.time()
    rank, world = rank_world()
    if rank:  # under torchrun every process scores its share of the batches; rank 0 speaks and writes
        echo = _quiet
    write = write_results if rank == 0 else _quiet
    bs, out = plan.check(), Path(plan.output_dir)
    sets = load_sets(bs, plan.data_root, plan.download, plan.jpeg_ood, plan.max_train, plan.max_test, plan.seed, echo)
    loaded = resolve_models(plan.model, sets, plan.net, plan.steps, plan.T, plan.image_size, plan.seed, plan.device,
                            progress, echo)
    assignment = assign_detectors(list(plan.detectors) if plan.detectors is not None else None, loaded)
    if len(loaded) > 1:
        for m, p in loaded:
            echo(f"  on {p}: {', '.join(d for d, (_, q) in assignment.items() if q == p) or '(none)'}")
    meta = {**_provenance(plan, sets, loaded, assignment), "processes": world}
    # a fresh run never mixes with an old one's files: mark it running, drop the old outputs
    write(out, [], {}, {}, meta, plots=False, clean=True)
    rows, scores, pairs, fitted = score_pairs(sets, assignment, plan.batch_size, plan.device, plan.seed,
                                              plan.bootstrap, progress, echo, on_pair=_every(2.0, out, meta, write))
    meta.update(status="complete", seconds=round(time.time() - t_start, 1),
                offsets={d: {str(k): v for k, v in per.items()} for d, per in fitted.items()})
    df = pd.DataFrame(rows)
    write(out, rows, scores, pairs, meta, plots=True)
    echo("")
    echo(console_table(df))
    echo("")
    if threshold_note(df):
        echo(threshold_note(df))
    echo(f"wrote {out.resolve()}/: results.csv, results.md, results.json, scores.npz, roc.png, histograms.png")
    return df
