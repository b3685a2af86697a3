"""The scikit-learn outlier-detector contract shared by every oodkit detector."""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.utils.validation import check_is_fitted

__all__ = ["BaseDetector"]


class BaseDetector(OutlierMixin, BaseEstimator):
    """Subclasses implement ``fit`` (ending in ``self._set_offset(train_scores)``) and
    ``score_samples``. Conventions: ``score_samples`` is float64 (n,), higher = more
    in-distribution; ``decision_function = score_samples - offset_`` is negative for
    outliers; ``predict`` gives +1 (inlier) / -1 (outlier); ``ood_score = -score_samples``.
    ``offset_`` is the ``contamination`` quantile of the training scores (5% by default).
    """

    def _set_offset(self, train_scores: np.ndarray) -> None:
        if not 0.0 <= self.contamination < 0.5:
            raise ValueError(f"contamination must lie in [0, 0.5), got {self.contamination}")
        self.offset_ = float(np.percentile(train_scores, 100.0 * self.contamination))

    def calibrate(self, X_val, tpr: float = 0.95):
        """Set the threshold ``offset_`` so that a share ``tpr`` of the held-out ID images
        ``X_val`` is accepted (``predict`` = +1): the ``1 - tpr`` quantile of their scores.
        Until called, ``offset_`` is the ``contamination`` quantile of the training scores."""
        check_is_fitted(self, "offset_")
        if not 0.0 < tpr < 1.0:
            raise ValueError(f"tpr must lie in (0, 1), got {tpr}")
        s = np.sort(self.score_samples(X_val))
        if len(s) == 0:
            raise ValueError("calibrate needs at least one held-out image")
        # the largest threshold that still accepts at least ceil(tpr * n) images
        k = len(s) - int(np.ceil(tpr * len(s) - 1e-9))
        self.offset_ = float(s[k])
        self.threshold_source_ = f"calibrated: {tpr:g} of {len(s)} held-out ID images accepted"
        return self

    def save(self, path, embed_model: bool = False):
        """Write this fitted detector to ``path`` (.npz, no pickle; see
        :func:`oodkit.load_detector`). The model is referenced by path and SHA-256, or
        embedded with ``embed_model`` (always when it was never saved to a file)."""
        from .persist import save_detectors

        return save_detectors(path, {getattr(self, "score", type(self).__name__): self}, embed_model)

    def decision_function(self, X) -> np.ndarray:
        check_is_fitted(self, "offset_")
        return self.score_samples(X) - self.offset_

    def predict(self, X) -> np.ndarray:
        return np.where(self.decision_function(X) >= 0, 1, -1)

    def ood_score(self, X) -> np.ndarray:
        """Higher = more out-of-distribution (the convention of most OOD papers)."""
        return -self.score_samples(X)

    def fit_predict(self, X, y=None):
        return self.fit(X).predict(X)
