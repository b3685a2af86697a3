"""The benchmark runner behind ``oodkit bench``.

Data flows one way: data sets -> aligned model inputs -> one cached forward pass per
set -> every detector's scores -> metrics -> tables, files and plots.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .checkpoint import CheckpointError, load_model
from .data import DataNotFound, as_images, conform, load_dataset
from .data.images import fingerprint, jpeg_roundtrip
from .data.sources import ImageSet
from .detectors import DETECTORS, detector_kinds, make_detector
from .metrics import ood_metrics
from .report import console_table, markdown_table, plot_histograms, plot_roc
from .data.images import to_float
from .training import TrainConfig, fit_model

__all__ = ["SUITES", "BenchSpec", "parse_spec", "run_bench", "DEFAULT_DETECTORS", "model_cache_dir"]

SUITES = {
    "digits": "digits-0to4-vs-digits-5to9,letters,sample-patches,noise,constant",
    "cifar10": "cifar10-vs-svhn,cifar100,mnist,fashionmnist,textures,celeba,noise,constant",
    "fashionmnist": "fashionmnist-vs-mnist,noise,constant",
    "mnist": "mnist-vs-fashionmnist,noise,constant",
}
DEFAULT_DETECTORS = ["loglik", "posterior", "expected-t", "typicality", "complexity", "profile"]
# what each model kind adds to the default comparison
DEFAULT_BY_KIND = {"cdm": DEFAULT_DETECTORS, "ddpm": ["elbo-k", "itd", "recon"],
                   "joint": ["msp", "energy", "elbo-k", "recon"]}
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
    oods = [o.strip() for o in rest.split(",") if o.strip()]
    if not id_name or not oods:
        raise ValueError(f"benchmark {spec!r}: need an in-distribution set and at least one OOD set")
    return BenchSpec(id_name, oods)


def model_cache_dir() -> Path:
    return Path(os.environ.get("OODKIT_CACHE", Path.home() / ".cache" / "oodkit")) / "models"


def _subsample(ds: ImageSet, n: int | None, seed: int) -> ImageSet:
    if n is None or len(ds) <= n:
        return ds
    idx = np.sort(np.random.default_rng(seed).choice(len(ds), n, replace=False))
    return ds.subset(idx)


def _obtain_model(model, id_train: torch.Tensor, id_name: str, training: dict, device, progress, echo):
    if model is not None:
        m = load_model(model, device=device)
        echo(f"model: {model} ({m.kind}, input {m.image_shape}, T={m.T})")
        return m, str(model)
    key = json.dumps({"data": id_name, "n": int(id_train.shape[0]), **training}, sort_keys=True)
    digest = hashlib.sha1(key.encode() + fingerprint(id_train).encode()).hexdigest()[:12]
    path = model_cache_dir() / f"{id_name}-{training['net']}-{training['steps']}-{digest}.pt"
    if path.exists():
        try:
            m = load_model(path, device=device)
            echo(f"model: reusing cached {path}")
            return m, str(path)
        except CheckpointError as e:
            echo(f"cached model unusable ({e}); training afresh")
    echo(f"model: training a {training['net']} CDM on {id_name} for {training['steps']} steps -> {path}")
    cfg = TrainConfig(steps=training["steps"], batch_size=training["batch_size"], lr=training["lr"],
                      warmup=min(100, training["steps"] // 10), seed=training.get("seed", 0),
                      save_every=max(100, training["steps"] // 5))
    m = fit_model(id_train, net=training["net"], T=training["T"], schedule=training["schedule"], config=cfg,
                  out=path, device=device, progress=progress,
                  data_info={"dataset": id_name})
    return m, str(path)


def run_bench(
    spec: str,
    model=None,
    detectors=None,
    data_root=None,
    download: bool = False,
    output_dir="oodkit-results",
    net: str | None = None,
    steps: int | None = None,
    T: int | None = None,
    image_size: int | None = None,
    batch_size: int = 256,
    device=None,
    jpeg_ood: int | None = None,
    max_train: int | None = None,
    max_test: int | None = None,
    seed: int = 0,
    progress: bool = True,
    echo=print,
) -> pd.DataFrame:
    """Fit every detector on IN's training split, score IN's test split and every OOD
    set, and write results.csv / .md / .json, scores.npz, roc.png and histograms.png
    to ``output_dir``. Returns the long-form results table."""
    t_start = time.time()
    bs = parse_spec(spec)
    names = detectors or DEFAULT_DETECTORS
    unknown = [d for d in names if d.partition("@")[0] not in DETECTORS]
    if unknown:
        raise ValueError(f"unknown detector(s) {unknown}; choose from {', '.join(DETECTORS)}")
    for name in names:
        detector_kinds(name)  # a bad @KIND fails before any data is loaded
    if model is None and detectors:  # the model trained here is a CDM: say so before training it
        for name in names:
            if "cdm" not in detector_kinds(name):
                raise ValueError(f"detector {name} needs a {' or '.join(detector_kinds(name))} model; "
                                 "pass one with --model (none given: a CDM would be trained)")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)

    id_train = _subsample(load_dataset(bs.id, "train", data_root, download, holdout=True), max_train, seed)
    id_test = _subsample(load_dataset(bs.id, "test", data_root, download, holdout=True), max_test, seed + 1)
    echo(f"in-distribution: {bs.id} ({len(id_train)} train / {len(id_test)} test, "
         f"{id_train.size}x{id_train.size}x{id_train.channels})")

    # every OOD set before any model work, so that a missing one fails fast
    ood_sets, skipped = {}, []
    for ood_name in bs.oods:
        try:
            ood = load_dataset(ood_name, "test", data_root, download, like=id_test)
        except DataNotFound as e:
            if bs.suite:
                skipped.append(ood_name)
                echo(f"skipping {ood_name}: {e}")
                continue
            raise
        ood = _subsample(ood, max_test, seed + 2)
        if jpeg_ood is not None:
            ood = ImageSet(jpeg_roundtrip(ood.images, jpeg_ood), ood.labels, ood.name)
        ood_sets[ood_name] = ood
    if not ood_sets:
        raise DataNotFound(f"none of the OOD sets {bs.oods} could be loaded")

    x_train = as_images(id_train.images)
    paths = [str(m) for m in model] if isinstance(model, (list, tuple)) else \
        ([p for p in str(model).split(",") if p] if model is not None else [])
    if len(paths) > 1:
        loaded = [_obtain_model(p, None, bs.id, {}, device, progress, echo) for p in paths]
        shapes = {tuple(m.image_shape) for m, _ in loaded}
        if len(shapes) > 1:
            raise ValueError(f"the models take different input shapes {sorted(shapes)}; compare models of one size")
        primary, model_path = loaded[0]
    elif not paths:
        size = image_size or x_train.shape[-1]
        x_train = conform(x_train, size, x_train.shape[1])
        training = dict(EMBEDDED_TRAINING)
        if bs.suite != "digits":
            training.update(net="small", steps=2000, lr=2e-4)
        training.update({k: v for k, v in dict(net=net, steps=steps, T=T).items() if v is not None})
        training["seed"] = seed
        primary, model_path = _obtain_model(None, x_train, bs.id, training, device, progress, echo)
    if len(paths) == 1:
        primary, model_path = _obtain_model(paths[0], x_train, bs.id, {}, device, progress, echo)
    if len(paths) <= 1:
        loaded = [(primary, model_path)]
    c, h, _ = primary.image_shape
    x_train = conform(x_train, h, c)

    if detectors is None:
        names = list(dict.fromkeys(d for m, _ in loaded for d in DEFAULT_BY_KIND[m.kind]))
    dets, det_model = {}, {}
    for name in names:
        # the first given model of the most preferred kind: `itd` runs on the DDPM when there is one
        fitting = [(m, p) for kind in detector_kinds(name) for m, p in loaded if m.kind == kind]
        if not fitting:
            raise ValueError(f"detector {name} needs a {' or '.join(detector_kinds(name))} model; "
                             f"got {', '.join(m.kind for m, _ in loaded)}")
        m, p = fitting[0]
        det = make_detector(name, model=m, batch_size=batch_size, device=device, seed=seed, progress=progress)
        dets[name], det_model[name] = det.fit(x_train), p
    echo(f"fitted {len(dets)} detectors on {x_train.shape[0]} training images")
    if len(loaded) > 1:
        for _, p in loaded:
            echo(f"  on {p}: {', '.join(d for d in dets if det_model[d] == p) or '(none)'}")
    accuracy = None
    joint = next((m for m, _ in loaded if m.kind == "joint"), None)
    if joint is not None and id_test.labels is not None:
        with torch.no_grad():
            xt = conform(as_images(id_test.images), h, c)
            pred = torch.cat([joint.classify_logits(to_float(b).to(next(joint.parameters()).device)).argmax(1).cpu()
                              for b in xt.split(batch_size)])
        accuracy = float((pred.numpy() == id_test.labels).mean())
        echo(f"joint model classification accuracy on {bs.id} test: {accuracy:.4f}")

    rows, scores, pairs = [], {d: {} for d in dets}, {d: [] for d in dets}
    id_scores = {}  # (detector, ref size) -> ID test scores: the ID set is scored once per detail level
    for ood_name, ood in ood_sets.items():
        # Both sides of a pair at the same detail before the common resize (DESIGN 4).
        ref = min(id_test.size, ood.size)
        x_id = conform(as_images(id_test.images), h, c, ref_size=ref)
        x_ood = conform(as_images(ood.images), h, c, ref_size=ref)
        for dname, det in dets.items():
            if (dname, ref) not in id_scores:
                id_scores[dname, ref] = det.score_samples(x_id)
            s_id, s_ood = id_scores[dname, ref], det.score_samples(x_ood)
            id_key = bs.id if ref == id_test.size else f"{bs.id}@{ref}px"
            scores[dname].setdefault(id_key, s_id)
            scores[dname][ood_name] = s_ood
            pairs[dname].append((ood_name, s_id, s_ood))
            rows.append({"detector": dname, "id": bs.id, "ood": ood_name, **ood_metrics(s_id, s_ood),
                         "n_id": len(s_id), "n_ood": len(s_ood)})
        _write(out, rows, scores, bs, meta=None)  # a killed run keeps the sets finished so far

    df = pd.DataFrame(rows)
    meta = {
        "spec": spec, "id": bs.id, "ood": [o for o in bs.oods if o not in skipped], "skipped": skipped,
        "detectors": names, "model": model_path, "model_kind": primary.kind, "T": primary.T,
        "detector_models": det_model, "id_accuracy": accuracy,
        "image_shape": list(primary.image_shape), "jpeg_ood": jpeg_ood, "n_train": int(x_train.shape[0]),
        "seconds": round(time.time() - t_start, 1), "torch": torch.__version__,
    }
    _write(out, rows, scores, bs, meta)
    plot_roc(pairs, out / "roc.png")
    plot_histograms(pairs, bs.id, out / "histograms.png")
    echo("")
    echo(console_table(df))
    echo("")
    echo(f"wrote {out.resolve()}/: results.csv, results.md, results.json, scores.npz, roc.png, histograms.png")
    return df


def _write(out: Path, rows, scores, bs: BenchSpec, meta):
    df = pd.DataFrame(rows)
    df.to_csv(out / "results.csv", index=False)
    text = markdown_table(df)
    if meta and len(set(meta["detector_models"].values())) > 1:
        per = {}
        for d, p in meta["detector_models"].items():
            per.setdefault(p, []).append(d)
        text += "\nModels: " + "; ".join(f"{', '.join(ds)} on `{Path(p).name}`" for p, ds in per.items()) + "\n"
    (out / "results.md").write_text(text)
    (out / "results.json").write_text(json.dumps({"meta": meta, "results": rows}, indent=1))
    np.savez_compressed(out / "scores.npz", **{f"{d}/{s}": v for d, per in scores.items() for s, v in per.items()})
