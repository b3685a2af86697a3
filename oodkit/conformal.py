"""Split-conformal thresholds, p-values and batch screening (Bates et al., "Testing for
outliers with conformal p-values", Annals of Statistics 2023).

Everything here rests on one assumption: the calibration scores and the score of a fresh
in-distribution (ID) image are **exchangeable** (for instance, drawn independently from
the same distribution, by a network and detector statistics that did not see them).
Under it, with n calibration scores:

* :func:`conformal_threshold` ``(scores, tpr)`` accepts a fresh ID image (score >=
  threshold) with probability at least ``tpr``, and at most ``tpr + 1/(n+1)`` when
  scores have no ties, for every n: the threshold is the k-th smallest calibration score
  with ``k = floor((n+1)(1-tpr))``. That probability is **on average over the draw of the
  calibration images**: the share of fresh ID images one threshold accepts is itself
  random, Beta(n+1-k, k) for continuous scores, and below ``tpr`` for nearly half of all
  calibration sets (0.46 at n = 300 and tpr = 0.95, where one in five accepts less than
  0.94). ``confidence`` asks for more: with probability at least ``confidence`` over the
  calibration draw, the threshold accepts at least ``tpr`` of fresh ID images (the
  largest k with ``P(Binomial(n, 1-tpr) <= k-1) <= 1 - confidence``; Vovk 2012,
  "training-conditional" validity), at the cost of a lower threshold;
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
           "cross_calibrated_rates", "check_confidence", "check_screen"]

# (n + 1)(1 - tpr) is compared with an integer: a tolerance keeps tpr = 0.95, n = 19 at k = 1
_EPS = 1e-9


def conformal_rank(n: int, tpr: float, confidence: float | None = None) -> int:
    """The rank k (1-based, from the lowest) of the calibration score that serves as
    threshold; 0 when n is too small for ``tpr`` (and ``confidence``). Without
    ``confidence``: ``k = floor((n+1)(1-tpr))``; with it, the largest k up to that one
    whose threshold accepts at least ``tpr`` of fresh ID images with probability >=
    ``confidence`` (never above the marginal rank: a confidence below about 0.5 changes
    nothing)."""
    k = int(math.floor((n + 1) * (1.0 - tpr) + _EPS))
    if confidence is None or k < 1:
        return k
    from scipy.stats import binom

    # the k-th lowest of n uniform ranks lies above 1 - tpr (the threshold accepts fewer than tpr)
    # exactly when fewer than k of them lie below it: P = binom.cdf(k - 1, n, 1 - tpr)
    ks = np.arange(1, k + 1)
    ok = binom.cdf(ks - 1, n, 1.0 - tpr) <= 1.0 - confidence + _EPS
    return int(ks[ok].max()) if ok.any() else 0


def min_calibration_size(tpr: float, confidence: float | None = None) -> int:
    """The fewest calibration scores for which a threshold with guarantee ``tpr`` (and
    ``confidence``) rejects anything: 19 for 0.95, 99 for 0.99 (``ceil(1/(1-tpr)) - 1``);
    45 for 0.95 with confidence 0.9 (``tpr^n <= 1 - confidence``)."""
    if confidence is None:
        n = max(1, int(math.ceil((1.0 - _EPS) / (1.0 - tpr) - 1.0)))
    else:
        n = max(1, int(math.ceil(math.log1p(-confidence) / math.log(tpr) - _EPS)))
    while n > 1 and conformal_rank(n - 1, tpr, confidence) >= 1:  # the rank rule itself decides the edge
        n -= 1
    while conformal_rank(n, tpr, confidence) < 1:
        n += 1
    return n


def check_confidence(value) -> float | None:
    """None, or a number strictly between 0 and 1 (a one-line ValueError otherwise)."""
    return None if value is None else _check_share(value, "confidence")


def _check_share(value, name: str = "tpr") -> float:
    """A number strictly between 0 and 1 (``tpr``, ``fdr``), or a one-line ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number in (0, 1), got {value!r}")
    value = float(value)
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be a number in (0, 1), got {value!r}")
    return value


def one_per_image(values, name: str, what: str) -> np.ndarray:
    """float64 (m,) of a 1-D sequence (a scalar is one value); anything else is a ValueError."""
    a = np.asarray(values, dtype=np.float64)
    if a.ndim > 1:
        raise ValueError(f"{name} must hold one {what} per image, shape (m,); got shape {a.shape}")
    return a.ravel()


def _scores(scores, what="calibration scores") -> np.ndarray:
    a = np.asarray(scores)
    if a.dtype.kind not in "biuf":
        raise ValueError(f"{what} must be real numbers, got {a.dtype} values")
    if a.ndim > 1:
        raise ValueError(f"{what} must hold one score per image, shape (m,); got shape {a.shape}")
    s = np.sort(a.astype(np.float64).ravel())
    if len(s) == 0:
        raise ValueError(f"no {what}: calibration needs at least one held-out ID image")
    if not np.isfinite(s).all():
        raise ValueError(f"{what} hold NaN or infinite values")
    return s


def conformal_threshold(scores, tpr: float, confidence: float | None = None) -> float:
    """The split-conformal threshold: a fresh exchangeable ID score is >= it with
    probability >= ``tpr`` (on average over calibration sets); with ``confidence``, the
    share of fresh ID scores >= it is at least ``tpr`` with probability >= ``confidence``.
    Refuses (ValueError) a ``tpr`` that ``len(scores)`` cannot support, saying how many
    scores it needs."""
    tpr, confidence = _check_share(tpr), check_confidence(confidence)
    s = _scores(scores)
    k = conformal_rank(len(s), tpr, confidence)
    if k < 1:
        with_conf = f" with confidence {confidence:g}" if confidence is not None else ""
        raise ValueError(f"tpr={tpr:g}{with_conf} needs at least {min_calibration_size(tpr, confidence)} held-out "
                         f"ID images for its guarantee, got {len(s)}")
    return float(s[k - 1])


def pvalues(calibration_scores, scores) -> np.ndarray:
    """Conformal p-values ``(1 + #{calibration <= s}) / (n + 1)`` for each score ``s``:
    float64 (m,) in (0, 1]; small = unlike the calibration (ID) images."""
    cal = _scores(calibration_scores)
    s = one_per_image(scores, "scores", "score")
    if np.isnan(s).any():
        raise ValueError("scores hold NaN: no p-value for them")
    return (1.0 + np.searchsorted(cal, s, side="right")) / (len(cal) + 1.0)


def check_screen(fdr: float, n_calibration: int) -> float:
    """``fdr``, checked against the n calibration scores behind the p-values: none is
    below 1/(n+1), so with ``(n+1) fdr < 1`` Benjamini-Hochberg can flag nothing (a
    one-line ValueError says how many scores it needs)."""
    fdr = _check_share(fdr, "fdr")
    if (n_calibration + 1) * fdr < 1.0 - _EPS:
        raise ValueError(f"fdr={fdr:g} with {n_calibration} calibration scores can flag nothing (no p-value is below "
                         f"1/{n_calibration + 1}): calibrate on at least {math.ceil(1.0 / fdr - _EPS) - 1} "
                         "held-out ID images")
    return fdr


def bh_screen(p, fdr: float) -> np.ndarray:
    """Benjamini-Hochberg at level ``fdr`` on p-values ``p`` (m,): a boolean mask of the
    flagged (rejected = called out-of-distribution) entries."""
    fdr = _check_share(fdr, "fdr")
    p = one_per_image(p, "p", "p-value")
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
