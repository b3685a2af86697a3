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
