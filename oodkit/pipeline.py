"""The one flow from images to scores, shared by ``oodkit bench``, ``oodkit fit``,
``oodkit score`` and the Python API::

    images -> align -> model -> one forward pass per image set -> detectors
    (fitted on ID training images) -> scores -> thresholds -> metrics -> report

:func:`align` brings images to a model's input, through the smaller side of an OOD pair
when there is one (so that both sides carry the same detail, DESIGN 4). :class:`Flow`
runs the network once per (model, image set) and hands that representation to every
detector of the CDM family (``fit_representation`` / ``score_representation``); the
diffusion family runs its own passes on the aligned images. Every caller goes through
the same three steps, so a detector file from ``oodkit fit`` scores exactly what
``oodkit bench`` scored.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np
import torch

from .data.images import conform
from .detectors import make_detector
from .detectors.registry import check_precision
from .detectors.cdm import trained_on
from .detectors.scores import MAX_BANK
from .representation import Representation, represent

__all__ = ["align", "Flow"]


def align(x: torch.Tensor, model, align_px: int | None = None) -> torch.Tensor:
    """Images (N, C, H, W) of any size brought to ``model``'s input: first down to
    ``align_px`` (the smaller side of an OOD pair) when they are larger, then to the
    model's size and channels. The same function for fitting and scoring images."""
    c, h, _ = model.image_shape
    return conform(x, h, c, ref_size=align_px)


@dataclass
class Flow:
    """One run's forward passes and detectors. ``batch_size``, ``device``, ``seed``,
    ``progress``, ``max_bank`` (the kNN bank size) and ``precision`` (the arithmetic of
    its passes) are handed to every detector it makes. Representations are kept per
    (model, image tensor) for the life of the flow: each set goes through the network once,
    whatever the number of detectors reading it."""

    batch_size: int = 256
    device: object = None
    seed: int = 0
    progress: bool = False
    precision: str = "fp32"  # the network's arithmetic (representation.PRECISIONS)
    shard: bool = True  # under torchrun, share each pass's batches out (False: each process its own images)
    max_bank: int | None = MAX_BANK  # kNN bank size of the detectors it makes (scores.KNNBank)
    _reps: dict = field(default_factory=dict, repr=False)
    _seen: dict = field(default_factory=dict, repr=False)

    def representation(self, model, x: torch.Tensor, desc: str = "forward") -> Representation:
        """The one forward pass of ``model`` over ``x`` (aligned images), computed once."""
        key = (id(model), id(x))
        if key not in self._reps:  # model and x are kept with the entry: their ids stay theirs
            rep = represent(model, x, self.batch_size, progress=self.progress, desc=f"forward {desc}", cache=None,
                            precision=self.precision, shard=self.shard)
            self._reps[key] = (model, x, rep)
        return self._reps[key][2]

    def _trained_on(self, model, x, align_px: int | None = None):
        key = (id(model), id(x), align_px)
        if key not in self._seen:
            self._seen[key] = (model, x, trained_on(model, x, align_px))
        return self._seen[key][2]

    def make(self, name: str, model):
        return make_detector(name, model=model, batch_size=self.batch_size, device=self.device, seed=self.seed,
                             progress=self.progress, max_bank=self.max_bank, precision=self.precision)

    def fit(self, assignment: dict, x_train: torch.Tensor, align_px: int | None = None, desc: str = "train",
            leave_out_seen: bool = True, seen=None) -> dict:
        """``{name: fitted detector}`` for ``assignment`` (``{detector name: model}``), fitted
        on aligned ID training images ``x_train``. With ``leave_out_seen``, images the model
        recorded training on are left out of the default thresholds (a benchmark, which
        reports no threshold, turns it off). ``align_px`` is recorded on each detector
        (``align_px_``) so that a detector file scores new images as it was fitted. ``seen``:
        (N,) bool, which images the network trained on, where the caller knows better than
        the model's record (a model exported without one)."""
        made = {name: self.make(name, model) for name, model in assignment.items()}  # every refusal before any pass
        dets = {}
        for name, det in made.items():
            model = assignment[name]
            if det.reads_representation:
                known = seen if seen is not None else self._trained_on(model, x_train, align_px) if leave_out_seen \
                    else None
                det.fit_representation(self.representation(model, x_train, desc), seen=known)
            else:
                det.fit(x_train)
            det.align_px_ = align_px
            dets[name] = det
        return dets

    def prepare(self, assignment: dict) -> dict:
        """Detectors that fit no ID statistics, ready to score without ID data (no
        threshold): for when no ID training images are at hand."""
        return {name: self.make(name, model).prepare() for name, model in assignment.items()}

    def score(self, detectors: dict, x: torch.Tensor, desc: str = "test") -> dict:
        """``{name: float64 (N,) scores}`` of aligned images ``x``, higher = more ID."""
        for name, det in detectors.items():  # loaded from a file, not made here
            check_precision(type(det), name, self.precision)
        out = {}
        for name, det in detectors.items():
            if det.reads_representation:
                out[name] = det.score_representation(self.representation(det.model_, x, desc))
            else:
                out[name] = np.asarray(det.score_images(x, shard=self.shard), dtype=np.float64)
        return out

    def calibrate(self, detectors: dict, x_val: torch.Tensor, tpr: float, confidence: float | None = None) -> None:
        """Set every detector's threshold on held-out aligned ID images ``x_val``
        (split-conformal, :meth:`BaseDetector.calibrate`; ``confidence`` as there), from
        one pass over them."""
        with contextlib.ExitStack() as replacing:
            for det in detectors.values():
                replacing.enter_context(det._replacing_threshold())
            for name, s in self.score(detectors, x_val, "calibration").items():
                det = detectors[name]
                det.calibrate_scores(s, tpr, seen=self._trained_on(det.model_, x_val, getattr(det, "align_px_", None)),
                                     confidence=confidence)
