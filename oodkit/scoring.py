"""Per-sample scores of one data set under a trained model (``oodkit score``)."""
from __future__ import annotations

import pandas as pd

from .pretrained import load_model
from .data import DataNotFound, as_images, conform, load_dataset
from .detectors import TABLE, make_detector, model_default_detectors
from .representation import represent

__all__ = ["score_dataset", "score_with_detectors"]


def _load(data_spec, split, data_root, download, resize, c, h, num_workers=0):
    """The set at the model's size, and the CSV's leading columns: index, path (files),
    label."""
    ds = load_dataset(data_spec, split, data_root, download, resize=resize, num_workers=num_workers)
    cols = {"index": range(len(ds))}
    if getattr(ds, "paths", None) is not None:
        cols["path"] = ds.paths
    if ds.labels is not None:
        cols["label"] = ds.labels
    return ds, conform(ds.tensor(), h, c), cols


def score_with_detectors(path, data_spec, split="test", data_root=None, download=False, device=None,
                         progress=False, resize=None, num_workers=0, fdr=None) -> pd.DataFrame:
    """Scores of ``data_spec`` under the fitted detectors in ``path`` (from ``oodkit
    fit``): index, path (folders), label, then per detector its score, threshold,
    ``is_ood`` (score below the threshold) and conformal ``pvalue`` against the file's
    calibration scores; with ``fdr``, ``flagged`` instead of ``is_ood``: the images
    Benjamini-Hochberg calls out-of-distribution at that false discovery rate."""
    from .conformal import bh_screen, pvalues
    from .detectors.persist import load_detectors

    dets = load_detectors(path, device=device)
    model = next(iter(dets.values())).model_
    c, h, _ = model.image_shape
    _, x, cols = _load(data_spec, split, data_root, download, resize, c, h, num_workers)
    frame = pd.DataFrame(cols)
    for name, det in dets.items():
        det.set_params(progress=progress)
        s = det.score_samples(x)
        frame[name] = s
        frame[f"{name}_threshold"] = det.offset_
        frame[f"{name}_is_ood"] = s < det.offset_
        frame[f"{name}_pvalue"] = p = pvalues(det.calibration_scores_, s)
        if fdr is not None:
            frame[f"{name}_flagged"] = bh_screen(p, fdr)
    return frame


def score_dataset(model_path, data_spec, split="test", fit_data=None, data_root=None, download=False,
                  batch_size=256, device=None, progress=False, resize=None, num_workers=0):
    """Every default score of the model's kind (and of its class head, if it has one) for
    ``data_spec`` as a DataFrame (index, label, bpd for a CDM, then one column per
    detector, higher = more in-distribution).
    Detectors that fit ID statistics are added when ``fit_data`` (or the model's recorded
    training set) can be loaded. Returns ``(frame, name of the fitting data or None)``."""
    model = load_model(model_path, device=device)
    c, h, _ = model.image_shape
    ds, x, cols = _load(data_spec, split, data_root, download, resize, c, h, num_workers)
    names = model_default_detectors([model])
    rep = None
    if model.kind == "cdm":
        rep = represent(model, x, batch_size, device, progress=progress, desc=f"forward {ds.name}")
        cols["bpd"] = rep.bpd
    frame = pd.DataFrame(cols)
    x_fit, fitted_on = None, fit_data or model.data_info.get("dataset")
    if fitted_on and any(TABLE[n].fitted for n in names):
        try:
            x_fit = conform(load_dataset(fitted_on, "train", data_root, download, holdout=True).tensor(), h, c)
        except DataNotFound:
            if fit_data:
                raise
            fitted_on = None
    for name in names:
        if TABLE[name].fitted and x_fit is None:
            continue
        det = make_detector(name, model=model, batch_size=batch_size, device=device, progress=progress)
        if x_fit is not None:
            det.fit(x_fit)
        elif rep is not None:  # no ID data: a score that fits nothing, without a threshold
            det.fit_representation(rep)
        else:  # a multi-pass score: fit only loads the model (its threshold, not reported, costs passes)
            det.set_params(n_offset=min(16, len(x))).fit(x[:16])
        frame[name] = s = det.score_representation(rep) if rep is not None else det.score_samples(x)
        if x_fit is not None:  # a threshold only where ID training images set it
            frame[f"{name}_threshold"] = det.offset_
            frame[f"{name}_is_ood"] = s < det.offset_
    return frame, (fitted_on if x_fit is not None else None)
