"""The scikit-learn outlier-detector contract shared by every oodkit detector."""
from __future__ import annotations

import contextlib
import os
import warnings

import numpy as np
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.utils.validation import check_is_fitted

from ..data import ImageInputError, as_images, conform
from ..conformal import bh_screen, check_screen, conformal_threshold, min_calibration_size, one_per_image, pvalues
from ..validation import check_params

__all__ = ["BaseDetector", "ArithmeticWarning", "on_device"]


class ArithmeticWarning(UserWarning):
    """Scores made in another arithmetic than the detector's fitted statistics: its
    threshold and p-values compare numbers of two arithmetics. ``fitted`` and ``scored``
    name them; ``how`` says what to do (default: score in the fit's)."""

    def __init__(self, fitted: str, scored: str, how: str | None = None):
        super().__init__(f"the ID statistics were fitted in {fitted} and these scores are in {scored}: thresholds "
                         "and p-values assume one arithmetic (the shipped thresholds' ID acceptance moved by up to "
                         f"0.013 in benchmarks/results/precision); {how or f'score in {fitted}'}")
        self.fitted, self.scored = fitted, scored


def _comparable(v):
    """A parameter value as compared for "changed since fit": a list is its tuple, a path
    its string (a model object stays itself: the same object or not)."""
    if isinstance(v, list):
        return tuple(v)
    if isinstance(v, os.PathLike):
        return os.fspath(v)
    return v


def on_device(model, device):
    """The user's model where it is, or a copy on ``device`` when one is asked for: a
    detector never moves a model it was given."""
    import copy

    import torch

    if device is None or next(model.parameters()).device == torch.device(device):
        return model.eval()
    return copy.deepcopy(model).to(device).eval()


def check_contamination(c) -> float:
    if isinstance(c, bool) or not isinstance(c, (int, float, np.integer, np.floating)) or not 0.0 <= c < 0.5:
        raise ValueError(f"contamination must be a number in [0, 0.5), got {c!r}")
    return float(c)


class OptimisticThresholdWarning(UserWarning):
    """A threshold or p-values set on images the network trained on: they accept fewer
    fresh ID images than they say."""


# How a threshold_source_ ends says what its threshold promises (threshold_guarantee)
TRAINED_ON = "which the network trained on (optimistic)"
NOT_TRAINED_ON = "the network did not train on"
CALIBRATED = "calibrated:"


def replayable(X):
    """``X``, or the images of a one-shot iterator (a generator) as a list, so that a
    method that reads its input twice (training, then fitting) reads the same images."""
    if hasattr(X, "__next__") and iter(X) is X:
        return list(X)
    return X


class BaseDetector(OutlierMixin, BaseEstimator):
    """Subclasses implement ``fit`` (ending in ``self._set_offset(train_scores)`` with
    out-of-sample training scores) and ``score_samples``. Conventions: ``score_samples``
    is float64 (n,), higher = more in-distribution; ``decision_function = score_samples -
    offset_`` is negative for outliers; ``predict`` gives +1 (inlier) / -1 (outlier);
    ``ood_score = -score_samples``.

    Thresholds are split-conformal (:mod:`oodkit.conformal`): ``offset_`` is chosen from
    ``calibration_scores_`` so that a fresh in-distribution image is accepted with
    probability at least ``tpr`` (``1 - contamination`` after ``fit``), for any number n of
    calibration images that supports ``tpr`` (n >= ceil(1/(1-tpr)) - 1; with fewer, and
    with ``contamination=0``, the threshold is the lowest score, which accepts n/(n+1)),
    **provided** the calibration images and the fresh one are exchangeable: drawn from the same distribution, and unseen by the network and by the
    detector's fitted statistics. ``fit`` uses out-of-sample (leave-one-out or K-fold)
    training scores, which takes care of the statistics; a network trained on the fitting
    images still scores them too well, so set the threshold with :meth:`calibrate` on
    held-out ID images for a threshold you can trust.
    """

    # {parameter: constraint} (oodkit.validation), checked by _check_params at fit and load
    _constraints: dict = {}
    # True: scores come from a shared representation (one CDM forward pass) through
    # fit_representation / score_representation; False: the detector runs its own passes
    reads_representation = False

    def _check_params(self) -> None:
        check_params(self, self._constraints)
        if getattr(self, "device", None) is not None:  # a device this machine lacks: one line, before any work
            from ..devices import resolve_device

            try:
                resolve_device(self.device)
            except ValueError as e:
                raise ValueError(f"{type(self).__name__} parameter device {e}") from None

    # the parameters a fitted detector answers for (subclasses name theirs): scoring after
    # set_params changed one refuses until fit runs again
    _FIXED_AT_FIT: tuple = ()

    def _fixed_names(self) -> tuple:
        return self._FIXED_AT_FIT

    def _fixed_params(self) -> dict:
        return {k: _comparable(getattr(self, k)) for k in self._fixed_names()}

    def _remember_fit(self) -> None:
        self._fitted_for = self._fixed_params()

    def _check_unchanged(self) -> None:
        """Before scoring: the parameters are still valid, and those it was fitted under unchanged."""
        self._check_params()
        now = self._fixed_params()
        fitted = getattr(self, "_fitted_for", now)
        if isinstance(fitted, tuple):  # pickled before the record was keyed: the names it had, in order
            fitted = dict(zip(self._FIXED_AT_FIT, fitted))
        changed = [k for k in now if k in fitted and _comparable(fitted[k]) != now[k]]
        if changed:
            from sklearn.exceptions import NotFittedError

            raise NotFittedError(f"{', '.join(changed)} changed since fit (set_params); call fit again")

    def _bind_model(self, model) -> None:
        """``model_`` is ``model``, loaded for the ``model`` parameter as it is now (what a
        later fit compares to know whether to load it again)."""
        self.model_, self._model_of = model, self.model

    def _model_is_current(self) -> bool:
        return hasattr(self, "model_") and _comparable(getattr(self, "_model_of", self.model)) == \
            _comparable(self.model)

    def _model_images(self, X, model):
        """``X`` as the model's input, uint8 or float (N, C, H, W): converted by
        ``layout`` / ``value_range``, then brought through the alignment the detector was
        fitted under (``align_px_``, as ``oodkit score --detector`` does), else resized
        when ``resize`` allows it. Every image a detector scores or fits goes through here."""
        x = as_images(X, layout=self.layout, value_range=self.value_range)
        c, h, w = model.image_shape
        align_px = getattr(self, "align_px_", None)
        if align_px is not None:
            from ..pipeline import align  # the flow's one alignment (it imports the detectors)

            return align(x, model, align_px)
        if tuple(x.shape[1:]) != (c, h, w):
            if not self.resize:
                raise ImageInputError(f"images are {tuple(x.shape[1:])} (C, H, W) but the model takes {(c, h, w)}; "
                                      "pass resize=True or align them with oodkit.data.conform")
            x = conform(x, h, c)
        return x

    def _set_offset(self, train_scores: np.ndarray, source: str = "training images (out-of-sample scores)") -> None:
        c = check_contamination(self.contamination)
        s = np.sort(np.asarray(train_scores, dtype=np.float64))
        self.calibration_scores_ = s
        if c == 0 or len(s) < min_calibration_size(1.0 - c):
            if c:
                warnings.warn(f"contamination={c:g} needs at least {min_calibration_size(1.0 - c)} fitting images for "
                              f"a conformal threshold, got {len(s)}: the threshold is their lowest score", stacklevel=3)
            self.offset_ = float(s[0])
            self.threshold_source_ = f"lowest score of {len(s)} {source}"
            return
        self.offset_ = conformal_threshold(s, 1.0 - c)
        self.threshold_source_ = f"conformal, tpr {1.0 - c:g}, {len(s)} {source}"

    def _set_offset_unseen(self, train_scores: np.ndarray, seen) -> None:
        """``_set_offset`` on the fitting images the network did not train on (``seen``:
        (N,) bool or None = unknown)."""
        if seen is None:
            self._set_offset(train_scores)
            return
        seen = np.asarray(seen, dtype=bool)
        if not seen.any():
            self._set_offset(train_scores, f"fitting images {NOT_TRAINED_ON} (out-of-sample scores)")
            return
        unseen, c = int((~seen).sum()), check_contamination(self.contamination)
        if c and unseen >= min_calibration_size(1.0 - c):
            self._set_offset(train_scores[~seen], f"fitting images {NOT_TRAINED_ON} ({int(seen.sum())} "
                             "it did were left out)")
            return
        warnings.warn(f"the network was trained on {int(seen.sum())} of these {len(seen)} images: their scores are "
                      f"optimistic, so the default threshold accepts fewer than {100 * (1 - c):g} % of fresh ID "
                      "images; set it with calibrate() on held-out ID images (oodkit fit --calibrate-on)",
                      OptimisticThresholdWarning, stacklevel=3)
        self._set_offset(train_scores, f"fitting images, {TRAINED_ON}")

    def threshold_guarantee(self) -> str:
        """What the threshold ``offset_`` and the p-values promise, from where they were set:
        ``"held-out"`` (calibrated on held-out ID images, or fitted on images the network
        did not train on: the conformal guarantee holds), ``"trained-on"`` (set on images
        the network trained on: fresh ID images are accepted less often than the tpr, and
        p-values are too small) or ``"unknown"`` (fitting images the network may have
        trained on: a model that does not record them)."""
        check_is_fitted(self, "offset_")
        source = getattr(self, "threshold_source_", "")
        if source.startswith(CALIBRATED) or NOT_TRAINED_ON in source:
            return "held-out"
        return "trained-on" if source.endswith(TRAINED_ON) else "unknown"

    def calibrate(self, X_val, tpr: float = 0.95, confidence: float | None = None):
        """Set the threshold ``offset_`` on held-out ID images ``X_val`` (unseen by the
        network and by :meth:`fit`): split-conformal, so that a fresh ID image exchangeable
        with them is accepted (``predict`` = +1) with probability at least ``tpr`` and at
        most ``tpr + 1/(n+1)`` (n = len(X_val), continuous scores), on average over the
        draw of ``X_val``; with ``confidence``, one threshold accepts at least ``tpr`` of
        fresh ID images with probability ``confidence`` (:mod:`oodkit.conformal`; the upper
        bound then no longer holds: the threshold is lower). Refuses
        a ``tpr`` that n images cannot support (it needs ``ceil(1/(1-tpr)) - 1``: 19 for
        0.95, 99 for 0.99; 45 for 0.95 with confidence 0.9). Their scores become
        ``calibration_scores_``, which :meth:`pvalues` reads. Images the network recorded
        training on are left out (its scores of them are optimistic); if too few others
        remain, a ValueError says so."""
        check_is_fitted(self, "offset_")
        with self._replacing_threshold():
            scores, seen = self._calibration_scores(X_val)
            return self.calibrate_scores(scores, tpr, seen=seen, confidence=confidence)

    @contextlib.contextmanager
    def _replacing_threshold(self):
        """``contamination`` set only the threshold that calibration replaces: a change of it
        since fit does not stand in the way of the calibration, and stands again if the
        calibration fails."""
        fitted = getattr(self, "_fitted_for", None)
        if not (isinstance(fitted, dict) and "contamination" in fitted and hasattr(self, "contamination")):
            yield
            return
        before = fitted["contamination"]
        fitted["contamination"] = _comparable(self.contamination)
        try:
            yield
        except BaseException:
            fitted["contamination"] = before
            raise

    def _calibration_scores(self, X):
        """``(scores (N,), seen)`` of held-out images ``X``: this detector's scores, and which
        of them the network trained on ((N,) bool; None where that is unknown), from one
        reading of ``X``."""
        return self.score_samples(X), None

    def calibrate_scores(self, scores, tpr: float = 0.95, seen=None, confidence: float | None = None):
        """:meth:`calibrate` on the scores of held-out ID images already computed
        (float (n,), this detector's ``score_samples``); ``seen``: (n,) bool, the images
        the network trained on, which are left out."""
        s = one_per_image(scores, "scores", "score")
        conformal_threshold(s, tpr, confidence)  # an invalid tpr or confidence is named before anything else
        left_out = ""
        if seen is not None:
            seen = np.asarray(seen, dtype=bool).ravel()
            if len(seen) != len(s):
                raise ValueError(f"seen must hold one entry per calibration score: {len(seen)} for {len(s)}")
        if seen is not None and seen.any():
            unseen = s[~seen]
            if len(unseen) < min_calibration_size(tpr, confidence):
                raise ValueError(f"the network was trained on {int(seen.sum())} of these {len(s)} calibration images "
                                 f"(its scores of them are optimistic) and tpr={float(tpr):g} needs at least "
                                 f"{min_calibration_size(tpr, confidence)} others, got {len(unseen)}: calibrate on ID "
                                 "images it did not train on")
            s, left_out = unseen, f" ({int(seen.sum())} the network trained on were left out)"
        with self._replacing_threshold():
            self.offset_ = conformal_threshold(s, tpr, confidence)
        self.calibration_scores_ = np.sort(s)
        conf = f", confidence {float(confidence):g}" if confidence is not None else ""
        self.threshold_source_ = f"{CALIBRATED} conformal, tpr {float(tpr):g}{conf}, {len(s)} held-out ID images{left_out}"
        return self

    def pvalues(self, X) -> np.ndarray:
        """Conformal p-values of ``X`` against ``calibration_scores_``: float64 (n,) in (0, 1],
        ``(1 + #{calibration scores <= s}) / (n_cal + 1)``. Under exchangeability a fresh
        ID image has ``P(p <= a) <= a``; small p = unlike the ID images."""
        check_is_fitted(self, "calibration_scores_")
        if self.threshold_guarantee() == "trained-on":
            warnings.warn("these p-values are against calibration scores of images the network trained on: they are "
                          "too small for fresh ID images; calibrate() on held-out ID images for valid ones",
                          OptimisticThresholdWarning, stacklevel=2)
        return pvalues(self.calibration_scores_, self.score_samples(X))

    # -- what fit learned, as plain arrays (detector files) ------------------------------
    def get_state(self) -> dict:
        """What :meth:`fit` learned, for a detector file: ``offset`` (float),
        ``threshold_source`` (str), ``calibration`` (float64 (n,), sorted), ``align_px``
        (the pair alignment of the images it was fitted on, or None), ``arithmetic`` (what
        the network's passes really ran in: ``arithmetic_``) and ``arrays`` (``{name:
        float64 array}``, the fitted ID statistics)."""
        check_is_fitted(self, "offset_")
        return {"offset": float(self.offset_), "threshold_source": getattr(self, "threshold_source_", ""),
                "calibration": np.asarray(self.calibration_scores_, dtype=np.float64),
                "align_px": getattr(self, "align_px_", None), "arithmetic": getattr(self, "arithmetic_", "fp32"),
                "arrays": {k: np.asarray(v, dtype=np.float64) for k, v in self._fitted_arrays().items()}}

    def set_state(self, state: dict, model):
        """Become the fitted detector that :meth:`get_state` described, on ``model`` (the
        loaded model it was fitted with). A state that does not fit this detector or model
        is a one-line ValueError."""
        try:
            self._check_params()
        except ValueError as err:
            raise ValueError(f": {err}") from None
        self._bind_model(model)
        self._restore(state.get("arrays", {}), model)
        self.offset_ = float(state["offset"])
        self.threshold_source_ = state.get("threshold_source", "")
        self.calibration_scores_ = np.sort(np.asarray(state["calibration"], dtype=np.float64))
        self.align_px_ = state.get("align_px")
        self.arithmetic_ = state["arithmetic"]
        self.n_features_in_ = int(np.prod(model.image_shape))
        self._remember_fit()
        return self

    def _fitted_arrays(self) -> dict:
        """The fitted ID statistics as ``{name: array}`` (none by default)."""
        return {}

    def _restore(self, arrays: dict, model) -> None:
        """Rebuild the fitted statistics from :meth:`_fitted_arrays`' output."""

    def save(self, path, embed_model: bool = False):
        """Write this fitted detector to ``path`` (.npz, no pickle; see
        :func:`oodkit.load_detector`) under its table name. The model is referenced by path
        and SHA-256, or embedded with ``embed_model`` (always when it was never saved to a
        file)."""
        from .fileformat import save_detectors
        from .table import table_name

        return save_detectors(path, {table_name(self): self}, embed_model)

    def decision_function(self, X) -> np.ndarray:
        check_is_fitted(self, "offset_")
        return self.score_samples(X) - self.offset_

    def predict(self, X, fdr: float | None = None) -> np.ndarray:
        """+1 (inlier) / -1 (outlier), int (n,). By the threshold ``offset_``; or, with
        ``fdr``, as a screened batch: Benjamini-Hochberg on :meth:`pvalues` flags images so
        that the expected share of ID images among the flagged is at most ``fdr``."""
        if fdr is not None:
            self.check_screen(fdr)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", OptimisticThresholdWarning)
                return np.where(bh_screen(self.pvalues(X), fdr), -1, 1)
        return np.where(self.decision_function(X) >= 0, 1, -1)

    def check_screen(self, fdr: float) -> None:
        """A one-line ValueError when screening at ``fdr`` cannot keep its promise: the
        calibration scores are too few to flag anything, or come from images the network
        trained on (their p-values run small)."""
        check_is_fitted(self, "calibration_scores_")
        check_screen(fdr, len(self.calibration_scores_))
        if self.threshold_guarantee() == "trained-on":
            raise ValueError("fdr screening needs p-values from held-out ID images, and these calibration scores "
                             "come from images the network trained on: calibrate() on held-out ID images first")

    def ood_score(self, X) -> np.ndarray:
        """Higher = more out-of-distribution (the convention of most OOD papers)."""
        return -self.score_samples(X)

    def fit_predict(self, X, y=None):
        X = replayable(X)
        return self.fit(X).predict(X)
