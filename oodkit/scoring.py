"""Per-sample scores of one data set under a trained model or a detector file (``oodkit
score``), through the one flow of :mod:`oodkit.pipeline`.

A :class:`Scorer` is the fitted half (detectors, the alignment they were fitted under,
which columns they can give); :meth:`Scorer.frame` scores any piece of a data set, so a
set scored whole and one scored chunk by chunk (:mod:`oodkit.streaming`) give the same
rows."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .checkpoint import file_sha256
from .conformal import bh_screen, pvalues
from .data import DataNotFound, load_dataset
from .detectors import TABLE, model_default_detectors
from .detectors.base import ArithmeticWarning
from .detectors.persist import load_detectors
from .pipeline import Flow, align
from .pretrained import bundled_detectors, load_model, pretrained_name

__all__ = ["Scorer", "detector_scorer", "model_scorer", "screen", "score_dataset", "score_with_detectors"]


# how to get thresholds and p-values with a guarantee, in the command line's words
FIX = ("fit detectors with `oodkit fit --model MODEL --data ID --calibrate-on HELD_OUT_ID --out d.npz` and pass "
       "--detector d.npz")


@dataclass
class Scorer:
    """Fitted detectors ready to score images.

    Attributes:
        detectors: ``{name: fitted detector}``, all on one model.
        align_px: the size the fitting images were brought through (``align_px_``).
        thresholds: add ``NAME_threshold`` and ``NAME_is_ood`` (score below it) columns.
        with_pvalues: add ``NAME_pvalue`` (conformal, against the calibration scores).
        bpd: add the model's bits/dim (a CDM scored from a checkpoint).
        source: what the ID statistics came from (None: no ID data).
        identity: what the scores depend on (files' SHA-256, names): a resumed run must
            match it.
    """

    detectors: dict
    align_px: int | None = None
    thresholds: bool = True
    with_pvalues: bool = False
    bpd: bool = False
    source: str | None = None
    identity: dict = field(default_factory=dict)

    @property
    def model(self):
        return next(iter(self.detectors.values())).model_

    @property
    def precision(self) -> str | None:
        """The arithmetic the detectors' ID statistics were fitted in (``arithmetic_`` of
        those that read the network's pass; None when none does; a ValueError when they
        differ)."""
        found = _fitted_arithmetics(self.detectors)
        if len(found) > 1:
            raise ValueError(f"{self.identity.get('detector', 'these detectors')}: the detectors were fitted in "
                             f"different arithmetics ({', '.join(sorted(found))}): name the precision to score in "
                             "(thresholds of the others then warn), or score them from separate files")
        return found.pop() if found else None

    def scoring_precision(self, asked: str | None) -> str:
        """The arithmetic to score in: ``asked``, else the one the statistics were fitted
        in (their thresholds hold there), else fp32."""
        return asked or self.precision or "fp32"

    def _guarantees(self) -> dict:
        """``{name: threshold_guarantee()}`` of the detectors whose thresholds or p-values
        the scores carry."""
        if not (self.thresholds or self.with_pvalues):
            return {}
        return {n: d.threshold_guarantee() for n, d in self.detectors.items() if hasattr(d, "offset_")}

    def threshold_warning(self) -> str | None:
        """One line for thresholds and p-values that promise more than they keep (set on
        images the network trained on, or may have); None when every one was set on
        held-out ID images."""
        found = self._guarantees()
        what = self.identity.get("detector") or self.identity.get("model") or "these detectors"
        fix = f"for a guarantee set them on held-out ID images: {FIX}"
        if "trained-on" in found.values():
            return (f"the thresholds and p-values of {what} were set on images its network trained on: nothing "
                    f"guarantees their tpr on fresh ID images (a network that knows its training images well "
                    f"accepts far fewer) and the p-values may run small; {fix}")
        if "unknown" in found.values():
            return (f"the thresholds and p-values of {what} were set on its fitting images, which the network may "
                    f"have trained on (the model does not record them): if it did, they accept fewer fresh ID images "
                    f"than their tpr; {fix}")
        return None

    def check_screen(self, fdr: float) -> None:
        """A ValueError when ``fdr`` screening cannot keep its promise with these detectors
        (:meth:`BaseDetector.check_screen`), in the command line's words."""
        bad = [n for n, g in self._guarantees().items() if g == "trained-on"]
        if bad:
            what = self.identity.get("detector") or "these detectors"
            raise ValueError(f"--fdr needs p-values against held-out ID images, and the calibration scores of {what} "
                             f"({', '.join(bad)}) come from images its network trained on: {FIX}")
        for name, det in self.detectors.items():
            try:
                det.check_screen(fdr)
            except ValueError as e:
                raise ValueError(f"--fdr: {name}: {e}") from None

    def _rewarn(self, caught) -> None:
        """Warnings met while scoring, shown again; the detectors' ArithmeticWarnings once,
        with what to do in this command, and only where a threshold or p-value reads them."""
        mismatch = [w.message for w in caught if issubclass(w.category, ArithmeticWarning)]
        for w in caught:
            if not issubclass(w.category, ArithmeticWarning):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        if not mismatch or not (self.thresholds or self.with_pvalues):
            return
        fitted, now = " and ".join(sorted({m.fitted for m in mismatch})), mismatch[0].scored
        if len(_fitted_arithmetics(self.detectors)) > 1:
            how = "score the detectors of each arithmetic from a file of their own"
        elif "detector" in self.identity:
            how = f"score in {fitted} (the file's own) or refit with `oodkit fit --precision {now}`"
        else:
            how = f"score in {fitted}, or fit them in {now} with --fit-data"
        warnings.warn(ArithmeticWarning(fitted, now, how), stacklevel=3)

    def frame(self, flow: Flow, ds, start: int = 0) -> pd.DataFrame:
        """Rows for ImageSet ``ds``, the images ``start...`` of a set: index, path (files),
        label (if any), bpd, then per detector its score (float64, higher = more ID) and
        the columns the scorer gives."""
        cols = {"index": np.arange(start, start + len(ds))}
        if getattr(ds, "paths", None) is not None:
            cols["path"] = ds.paths
        if ds.labels is not None:
            cols["label"] = ds.labels
        x = align(ds.tensor(), self.model, self.align_px)
        if self.bpd:
            cols["bpd"] = flow.representation(self.model, x, ds.name).bpd
        frame = pd.DataFrame(cols)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ArithmeticWarning)
            scores = flow.score(self.detectors, x, ds.name)
        self._rewarn(caught)
        for name, s in scores.items():
            det = self.detectors[name]
            frame[name] = s
            if self.thresholds:
                frame[f"{name}_threshold"] = det.offset_
                frame[f"{name}_is_ood"] = s < det.offset_
            if self.with_pvalues:
                frame[f"{name}_pvalue"] = pvalues(det.calibration_scores_, s)
        return frame


def _fitted_arithmetics(detectors: dict) -> set:
    """What the fitting passes of the detectors that fitted statistics on the network's
    pass ran in (``arithmetic_``)."""
    return {d.arithmetic_ for d in detectors.values() if d.reads_representation and hasattr(d, "arithmetic_")}


def screen(frame: pd.DataFrame, fdr: float) -> pd.DataFrame:
    """Add ``NAME_flagged`` per ``NAME_pvalue`` column: the images Benjamini-Hochberg
    calls out-of-distribution at false discovery rate ``fdr`` over the whole frame."""
    for col in [c for c in frame.columns if c.endswith("_pvalue")]:
        frame[col.removesuffix("_pvalue") + "_flagged"] = bh_screen(frame[col].to_numpy(), fdr)
    return frame


def _sha256(path) -> str | None:
    """The file's SHA-256; None for a pretrained name (checked against its own when loaded)."""
    return file_sha256(path) if Path(path).is_file() else None


def detector_scorer(path, device=None, progress=False) -> Scorer:
    """The fitted detectors of a file from ``oodkit fit`` (or a pretrained name's shipped
    ones), with thresholds and p-values."""
    dets = load_detectors(path, device=device, progress=progress)
    aligns = {getattr(d, "align_px_", None) for d in dets.values()}
    if len(aligns) > 1:
        raise ValueError(f"{path} holds detectors fitted under different alignments {sorted(map(str, aligns))}: "
                         "score them from separate files")
    return Scorer(dets, aligns.pop(), thresholds=True, with_pvalues=True,
                  identity={"detector": str(path), "sha256": _sha256(path)})


def model_scorer(model_path, fit_data=None, data_root=None, download=False, batch_size=256, device=None,
                 progress=False, precision="fp32") -> Scorer:
    """Every default detector of the model's kind (and of its heads), fitted on
    ``fit_data`` or the model's recorded training set when it can be loaded (a pretrained
    model's shipped statistics when neither is asked for); without ID data, the detectors
    that fit no statistics, without thresholds. Statistics fitted here are fitted in
    ``precision`` (shipped ones were fitted in fp32)."""
    model = load_model(model_path, device=device)
    dets, source = _detectors(Flow(batch_size, device, progress=progress, precision=precision), model, model_path,
                              fit_data, data_root, download)
    model = next((d.model_ for d in dets.values()), model)  # the detectors' own: one pass serves all
    return Scorer(dets, None, thresholds=source is not None, bpd=model.kind == "cdm", source=source,
                  identity={"model": str(model_path), "sha256": _sha256(model_path), "fit_data": fit_data,
                            "statistics": _learned(dets)})


def _learned(detectors: dict) -> str:
    """A short digest of what ``detectors`` learned (statistics, thresholds, calibration
    scores): a resumed run must score against the same, whatever file or data root the
    fitting images came from this time."""
    import hashlib

    h = hashlib.sha1()
    for name, det in detectors.items():
        if not hasattr(det, "offset_"):  # fits no statistics
            continue
        state = det.get_state()
        h.update(f"{name}|{state['offset']!r}|".encode())
        for key, a in sorted({**state["arrays"], "__calibration__": state["calibration"]}.items()):
            h.update(f"{key}|{a.shape}|".encode())
            h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def score_with_detectors(path, data_spec, split="test", data_root=None, download=False, device=None,
                         progress=False, resize=None, num_workers=0, fdr=None, batch_size=256,
                         precision=None) -> pd.DataFrame:
    """Scores of ``data_spec`` under the fitted detectors in ``path`` (from ``oodkit
    fit``): index, path (folders), label, then per detector its score, threshold,
    ``is_ood`` (score below the threshold) and conformal ``pvalue`` against the file's
    calibration scores; with ``fdr``, also ``flagged``: the images Benjamini-Hochberg
    calls out-of-distribution at that false discovery rate. Images are aligned as the
    detectors' fitting images were (``align_px_``, ``oodkit fit --align-px``), in the
    arithmetic they were fitted in unless ``precision`` says otherwise."""
    scorer = detector_scorer(path, device, progress)
    precision = scorer.scoring_precision(precision)
    if fdr is not None:
        scorer.check_screen(fdr)
    ds = load_dataset(data_spec, split, data_root, download, resize=resize, num_workers=num_workers)
    frame = scorer.frame(Flow(batch_size, device, progress=progress, precision=precision), ds)
    return screen(frame, fdr) if fdr is not None else frame


def score_dataset(model_path, data_spec, split="test", fit_data=None, data_root=None, download=False,
                  batch_size=256, device=None, progress=False, resize=None, num_workers=0, precision="fp32"):
    """Every default score of the model's kind (and of its class head, if it has one) for
    ``data_spec`` as a DataFrame (index, label, bpd for a CDM, then one column per
    detector, higher = more in-distribution, with its threshold and ``is_ood``).
    Detectors that fit ID statistics are added when ``fit_data`` (or the model's recorded
    training set) can be loaded; without ID data the others are scored without a
    threshold. ``precision``: the network's arithmetic (``representation.PRECISIONS``).
    Returns ``(frame, name of the fitting data or None)``."""
    scorer = model_scorer(model_path, fit_data, data_root, download, batch_size, device, progress, precision)
    ds = load_dataset(data_spec, split, data_root, download, resize=resize, num_workers=num_workers)
    return scorer.frame(Flow(batch_size, device, progress=progress, precision=precision), ds), scorer.source


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


def _detectors(flow: Flow, model, model_path, fit_data, data_root, download):
    """The model's default detectors and what their ID statistics came from: the ones
    shipped with a pretrained model (no pass over its training set), else fitted on
    ``fit_data`` or the model's recorded training set; without any ID data, those that fit
    no statistics (``fitted_on`` None). Shipped statistics were fitted in fp32 (their
    detectors' ``precision``); the others are fitted in ``flow.precision``."""
    names = model_default_detectors([model])
    # a copy of a shipped model's file has its shipped statistics too
    bundled = bundled_detectors(pretrained_name(model_path) or model_path) if fit_data is None else None
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
