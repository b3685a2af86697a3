"""Per-sample scores of one data set under a trained model (``oodkit score``)."""
from __future__ import annotations

import pandas as pd

from .checkpoint import load_model
from .data import DataNotFound, as_images, conform, load_dataset
from .detectors import make_detector
from .representation import represent

__all__ = ["score_dataset"]

UNFITTED = ["loglik", "posterior", "expected-t", "complexity"]
FITTED = ["typicality", "profile"]
# DDPM-family scores need no ID statistics; they are fitted on a few images only to set
# offset_, which the CSV does not use
DIFFUSION = {"ddpm": ["elbo-k", "itd", "recon"], "joint": ["msp", "energy", "elbo-k", "itd", "recon"]}


def score_dataset(model_path, data_spec, split="test", fit_data=None, data_root=None, download=False,
                  batch_size=256, device=None, progress=True):
    """Every score of ``data_spec`` as a DataFrame (index, label, bpd, then one column per
    detector, higher = more in-distribution). Scores that need ID statistics are added
    when ``fit_data`` (or the model's recorded training set) can be loaded.
    Returns ``(frame, name of the fitting data or None)``."""
    model = load_model(model_path, device=device)
    c, h, _ = model.image_shape
    ds = load_dataset(data_spec, split, data_root, download)
    x = conform(as_images(ds.images), h, c)
    cols = {"index": range(len(ds))}
    if ds.labels is not None:
        cols["label"] = ds.labels
    if model.kind in DIFFUSION:
        frame = pd.DataFrame(cols)
        for name in DIFFUSION[model.kind]:
            det = make_detector(name, model=model, batch_size=batch_size, device=device, progress=progress)
            frame[name] = det.fit(x[:16]).score_samples(x)
        return frame, None
    rep = represent(model, x, batch_size, device, progress=progress, desc=f"forward {ds.name}")
    cols["bpd"] = rep.bpd
    frame = pd.DataFrame(cols)
    x_fit, fitted_on = None, fit_data or model.data_info.get("dataset")
    if fitted_on:
        try:
            x_fit = conform(as_images(load_dataset(fitted_on, "train", data_root, download, holdout=True).images), h, c)
        except DataNotFound:
            if fit_data:
                raise
            fitted_on = None
    for name in UNFITTED + (FITTED if x_fit is not None else []):
        det = make_detector(name, model=model, batch_size=batch_size, device=device, progress=progress)
        det.fit(x_fit if x_fit is not None else x)  # unfitted scores ignore the fit data's statistics
        frame[name] = det.score_representation(rep)
    return frame, fitted_on
