"""Split-conformal thresholds, p-values and batch screening (Bates et al., "Testing for
outliers with conformal p-values", Annals of Statistics 2023).

Everything here rests on one assumption: the calibration scores and the score of a fresh
in-distribution (ID) image are **exchangeable** (for instance, drawn independently from
the same distribution, by a network and detector statistics that did not see them).
Under it, with n calibration scores:

* :func:`conformal_threshold` ``(scores, tpr)`` accepts a fresh ID image (score >=
  threshold) with probability at least ``tpr``, and at most ``tpr + 1/(n+1)`` when
  scores have no ties, for every n: the threshold is the k-th smallest calibration score
  with ``k = floor((n+1)(1-tpr))``;
* :func:`pvalues` are super-uniform for a fresh ID image: ``P(p <= a) <= a``;
* :func:`bh_screen` (Benjamini-Hochberg on those p-values) keeps the expected share of ID
  images among the flagged ones at most ``fdr`` (the p-values of one batch against the
  same calibration set are positively dependent, for which BH holds, Bates et al. Th. 2).

Scores follow the package convention: higher = more in-distribution.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["conformal_rank", "min_calibration_size", "conformal_threshold", "pvalues", "bh_screen",
           "cross_calibrated_rates"]

# (n + 1)(1 - tpr) is compared with an integer: a tolerance keeps tpr = 0.95, n = 19 at k = 1
_EPS = 1e-9


def conformal_rank(n: int, tpr: float) -> int:
    """``k = floor((n+1)(1-tpr))``: the rank (1-based, from the lowest) of the calibration
    score that serves as threshold; 0 when n is too small for ``tpr``."""
    return int(math.floor((n + 1) * (1.0 - tpr) + _EPS))


def min_calibration_size(tpr: float) -> int:
    """The fewest calibration scores for which a threshold with guarantee ``tpr`` rejects
    anything: ``ceil(1/(1-tpr)) - 1`` (19 for 0.95, 99 for 0.99)."""
    return int(math.ceil(1.0 / (1.0 - tpr) - _EPS)) - 1


def _check_share(value, name: str = "tpr") -> float:
    """A number strictly between 0 and 1 (``tpr``, ``fdr``), or a one-line ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number in (0, 1), got {value!r}")
    value = float(value)
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be a number in (0, 1), got {value!r}")
    return value


def _one_per_image(values, name: str, what: str) -> np.ndarray:
    """float64 (m,) of a 1-D sequence (a scalar is one value); anything else is a ValueError."""
    a = np.asarray(values, dtype=np.float64)
    if a.ndim > 1:
        raise ValueError(f"{name} must hold one {what} per image, shape (m,); got shape {a.shape}")
    return a.ravel()


def _scores(scores, what="calibration scores") -> np.ndarray:
    s = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    if len(s) == 0:
        raise ValueError(f"no {what}: calibration needs at least one held-out ID image")
    if not np.isfinite(s).all():
        raise ValueError(f"{what} hold NaN or infinite values")
    return s


def conformal_threshold(scores, tpr: float) -> float:
    """The split-conformal threshold: a fresh exchangeable ID score is >= it with
    probability >= ``tpr``. Refuses (ValueError) a ``tpr`` that ``len(scores)`` cannot
    support, saying how many scores it needs."""
    tpr = _check_share(tpr)
    s = _scores(scores)
    k = conformal_rank(len(s), tpr)
    if k < 1:
        raise ValueError(f"tpr={tpr:g} needs at least {min_calibration_size(tpr)} held-out ID images for its "
                         f"guarantee, got {len(s)}")
    return float(s[k - 1])


def pvalues(calibration_scores, scores) -> np.ndarray:
    """Conformal p-values ``(1 + #{calibration <= s}) / (n + 1)`` for each score ``s``:
    float64 (m,) in (0, 1]; small = unlike the calibration (ID) images."""
    cal = _scores(calibration_scores)
    s = _one_per_image(scores, "scores", "score")
    if np.isnan(s).any():
        raise ValueError("scores hold NaN: no p-value for them")
    return (1.0 + np.searchsorted(cal, s, side="right")) / (len(cal) + 1.0)


def bh_screen(p, fdr: float) -> np.ndarray:
    """Benjamini-Hochberg at level ``fdr`` on p-values ``p`` (m,): a boolean mask of the
    flagged (rejected = called out-of-distribution) entries."""
    fdr = _check_share(fdr, "fdr")
    p = _one_per_image(p, "p", "p-value")
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValueError("p must hold p-values in [0, 1]" + (" (it holds NaN)" if np.isnan(p).any() else ""))
    m = len(p)
    if m == 0:
        return np.zeros(0, dtype=bool)
    order = np.sort(p)
    ok = order <= fdr * np.arange(1, m + 1) / m
    if not ok.any():
        return np.zeros(m, dtype=bool)
    cut = order[np.nonzero(ok)[0].max()]
    return p <= cut


def cross_calibrated_rates(s_id, s_ood, tpr: float = 0.95, seed: int = 0) -> dict:
    """What a threshold calibrated on held-out ID images does on a benchmark pair, without
    calibrating on the images it is judged on: the ID test scores are split in two seeded
    halves; each half's conformal threshold (at ``tpr``) is applied to the other half and to
    the OOD scores; the two results are averaged. Returns ``{"id_accepted", "ood_caught"}``
    (shares in [0, 1]; NaN when a half is too small for ``tpr``)."""
    tpr = _check_share(tpr)
    s_id, s_ood = np.asarray(s_id, dtype=np.float64), np.asarray(s_ood, dtype=np.float64)
    halves = np.array_split(np.random.default_rng(seed).permutation(len(s_id)), 2)
    if min(len(h) for h in halves) < min_calibration_size(tpr):
        return {"id_accepted": float("nan"), "ood_caught": float("nan")}
    acc, caught = [], []
    for cal, held in (halves, halves[::-1]):
        cut = conformal_threshold(s_id[cal], tpr)
        acc.append(float(np.mean(s_id[held] >= cut)))
        caught.append(float(np.mean(s_ood < cut)))
    return {"id_accepted": float(np.mean(acc)), "ood_caught": float(np.mean(caught))}
