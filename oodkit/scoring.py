"""Per-sample scores of one data set under a trained model or a detector file (``oodkit
score``), through the one flow of :mod:`oodkit.pipeline`."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .conformal import bh_screen, pvalues
from .data import DataNotFound, load_dataset
from .detectors import TABLE, model_default_detectors
from .detectors.persist import load_detectors
from .pipeline import Flow, align
from .pretrained import bundled_detectors, load_model

__all__ = ["score_dataset", "score_with_detectors"]


def _load(data_spec, split, data_root, download, resize, num_workers=0):
    """The set as stored (native size), and the CSV's leading columns: index, path
    (files), label."""
    ds = load_dataset(data_spec, split, data_root, download, resize=resize, num_workers=num_workers)
    cols = {"index": range(len(ds))}
    if getattr(ds, "paths", None) is not None:
        cols["path"] = ds.paths
    if ds.labels is not None:
        cols["label"] = ds.labels
    return ds, cols


def _threshold_columns(frame: pd.DataFrame, name: str, det, s: np.ndarray) -> None:
    frame[f"{name}_threshold"] = det.offset_
    frame[f"{name}_is_ood"] = s < det.offset_


def score_with_detectors(path, data_spec, split="test", data_root=None, download=False, device=None,
                         progress=False, resize=None, num_workers=0, fdr=None, batch_size=256) -> pd.DataFrame:
    """Scores of ``data_spec`` under the fitted detectors in ``path`` (from ``oodkit
    fit``): index, path (folders), label, then per detector its score, threshold,
    ``is_ood`` (score below the threshold) and conformal ``pvalue`` against the file's
    calibration scores; with ``fdr``, ``flagged`` instead of ``is_ood``: the images
    Benjamini-Hochberg calls out-of-distribution at that false discovery rate. Images are
    aligned as the detectors' fitting images were (``align_px_``, ``oodkit fit --align-px``)."""
    dets = load_detectors(path, device=device, progress=progress)
    aligns = {getattr(d, "align_px_", None) for d in dets.values()}
    if len(aligns) > 1:
        raise ValueError(f"{path} holds detectors fitted under different alignments {sorted(map(str, aligns))}: "
                         "score them from separate files")
    model = next(iter(dets.values())).model_
    ds, cols = _load(data_spec, split, data_root, download, resize, num_workers)
    flow = Flow(batch_size, device, progress=progress)
    frame = pd.DataFrame(cols)
    for name, s in flow.score(dets, align(ds.tensor(), model, aligns.pop()), ds.name).items():
        det = dets[name]
        frame[name] = s
        _threshold_columns(frame, name, det, s)
        frame[f"{name}_pvalue"] = p = pvalues(det.calibration_scores_, s)
        if fdr is not None:
            frame[f"{name}_flagged"] = bh_screen(p, fdr)
    return frame


def _fitting_images(model, fit_data, data_root, download):
    """The ID training images for the detectors' statistics (aligned), and their name:
    ``fit_data``, else the model's recorded training set when it can be loaded, else
    ``(None, None)``."""
    name = fit_data or (model.data_info or {}).get("dataset")
    if not name:
        return None, None
    try:
        return align(load_dataset(name, "train", data_root, download, holdout=True).tensor(), model), name
    except DataNotFound:
        if fit_data:
            raise
        return None, None


def score_dataset(model_path, data_spec, split="test", fit_data=None, data_root=None, download=False,
                  batch_size=256, device=None, progress=False, resize=None, num_workers=0):
    """Every default score of the model's kind (and of its class head, if it has one) for
    ``data_spec`` as a DataFrame (index, label, bpd for a CDM, then one column per
    detector, higher = more in-distribution, with its threshold and ``is_ood``).
    Detectors that fit ID statistics are added when ``fit_data`` (or the model's recorded
    training set) can be loaded; without ID data the others are scored without a
    threshold. Returns ``(frame, name of the fitting data or None)``."""
    model = load_model(model_path, device=device)
    ds, cols = _load(data_spec, split, data_root, download, resize, num_workers)
    x = align(ds.tensor(), model)
    flow = Flow(batch_size, device, progress=progress)
    dets, fitted_on = _detectors(flow, model, model_path, fit_data, data_root, download)
    model = next((d.model_ for d in dets.values()), model)  # the detectors' own: one pass serves all
    if model.kind == "cdm":
        cols["bpd"] = flow.representation(model, x, ds.name).bpd
    frame = pd.DataFrame(cols)
    for name, s in flow.score(dets, x, ds.name).items():
        frame[name] = s
        if fitted_on is not None:  # a threshold only where ID training images set it
            _threshold_columns(frame, name, dets[name], s)
    return frame, fitted_on


def _detectors(flow: Flow, model, model_path, fit_data, data_root, download):
    """The model's default detectors and what their ID statistics came from: the ones
    shipped with a pretrained model (no pass over its training set), else fitted on
    ``fit_data`` or the model's recorded training set; without any ID data, those that fit
    no statistics (``fitted_on`` None)."""
    names = model_default_detectors([model])
    bundled = bundled_detectors(model_path) if fit_data is None else None
    if bundled is not None:
        dets = load_detectors(bundled, device=flow.device, progress=flow.progress)
        if list(dets) == names:  # shipped for this very model: its SHA-256 was checked on load
            return dets, f"{model.data_info.get('dataset')} (statistics shipped with the model)"
    # ID training images only where a detector fits statistics on them (a DDPM's scores
    # fit none, and a threshold of theirs would cost hundreds of passes per image)
    x_fit, fitted_on = (_fitting_images(model, fit_data, data_root, download)
                        if any(TABLE[n].fitted for n in names) else (None, None))
    if x_fit is not None:
        return flow.fit({n: model for n in names}, x_fit), fitted_on
    return flow.prepare({n: model for n in names if not TABLE[n].fitted}), None
