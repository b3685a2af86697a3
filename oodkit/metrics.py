"""OOD metrics, with OOD as the positive class, from in-distribution scores.

Every function takes ``scores_id`` and ``scores_ood`` in the scikit-learn convention
(higher = more in-distribution, as ``score_samples`` returns) and works in float64.

The two "FPR at 95% TPR" conventions of the literature, named so nobody has to guess:

* ``fpr95_ood_accepted`` (ODIN / energy papers): the threshold keeps 95% of the ID
  data; the value is the share of OOD data that is accepted as well.
* ``fpr95_id_rejected`` (OpenOOD): the threshold catches 95% of the OOD data; the value
  is the share of ID data rejected as well.
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

__all__ = ["auroc", "aupr_in", "aupr_out", "fpr95_ood_accepted", "fpr95_id_rejected", "ood_metrics", "METRICS",
           "bootstrap_intervals"]


def _check(scores_id, scores_ood):
    a = np.asarray(scores_id, dtype=np.float64).ravel()
    b = np.asarray(scores_ood, dtype=np.float64).ravel()
    if a.size == 0 or b.size == 0:
        raise ValueError("need at least one in-distribution and one OOD score")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("scores contain NaN or inf")
    return a, b


def _labels(a, b):
    y_ood = np.concatenate([np.zeros(a.size), np.ones(b.size)])
    ood_score = -np.concatenate([a, b])  # OOD is positive: lower ID-score = more OOD
    return y_ood, ood_score


def auroc(scores_id, scores_ood) -> float:
    """Area under the ROC curve of separating OOD (positive) from ID."""
    a, b = _check(scores_id, scores_ood)
    return float(roc_auc_score(*_labels(a, b)))


def aupr_out(scores_id, scores_ood) -> float:
    """Average precision with OOD as the positive class."""
    a, b = _check(scores_id, scores_ood)
    return float(average_precision_score(*_labels(a, b)))


def aupr_in(scores_id, scores_ood) -> float:
    """Average precision with ID as the positive class (higher score = ID)."""
    a, b = _check(scores_id, scores_ood)
    y = np.concatenate([np.ones(a.size), np.zeros(b.size)])
    return float(average_precision_score(y, np.concatenate([a, b])))


def _fpr_at_tpr(y_pos, score, tpr_level):
    fpr, tpr, _ = roc_curve(y_pos, score, drop_intermediate=False)
    return float(fpr[np.searchsorted(tpr, tpr_level, side="left")])


def fpr95_ood_accepted(scores_id, scores_ood, level: float = 0.95) -> float:
    """Share of OOD accepted at the threshold that accepts ``level`` of ID (ODIN, energy)."""
    a, b = _check(scores_id, scores_ood)
    y = np.concatenate([np.ones(a.size), np.zeros(b.size)])  # ID positive: "accepted"
    return _fpr_at_tpr(y, np.concatenate([a, b]), level)


def fpr95_id_rejected(scores_id, scores_ood, level: float = 0.95) -> float:
    """Share of ID rejected at the threshold that rejects ``level`` of OOD (OpenOOD)."""
    a, b = _check(scores_id, scores_ood)
    return _fpr_at_tpr(*_labels(a, b), level)


METRICS = {
    "auroc": auroc,
    "aupr_in": aupr_in,
    "aupr_out": aupr_out,
    "fpr95_ood_accepted": fpr95_ood_accepted,
    "fpr95_id_rejected": fpr95_id_rejected,
}


def ood_metrics(scores_id, scores_ood) -> dict[str, float]:
    """All of :data:`METRICS` as a dict of floats."""
    return {name: fn(scores_id, scores_ood) for name, fn in METRICS.items()}


def _auroc_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """AUROC of each row pair of (R, n) ID and (R, m) OOD scores, by ranks (ties count
    half, as in roc_auc_score)."""
    from scipy.stats import rankdata

    ranks = rankdata(-np.concatenate([a, b], axis=1), axis=1)  # OOD positive: rank by -score
    m, n = b.shape[1], a.shape[1]
    return (ranks[:, n:].sum(1) - m * (m + 1) / 2) / (n * m)


def bootstrap_intervals(scores_id, scores_ood, n_boot: int = 1000, level: float = 0.95, seed: int = 0,
                        metrics=None) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals ``{metric: (low, high)}`` at ``level``, resampling
    the ID and the OOD scores separately (each side keeps its size). Seeded, so a
    report is reproducible. Every metric is computed row-wise over the resamples."""
    a, b = _check(scores_id, scores_ood)
    rng = np.random.default_rng(seed)
    ia = rng.integers(0, a.size, (n_boot, a.size), dtype=np.int32)
    ib = rng.integers(0, b.size, (n_boot, b.size), dtype=np.int32)
    q = [(1 - level) / 2, (1 + level) / 2]
    out = {}
    chunk = max(1, int(4e6 // (a.size + b.size)))  # bounded memory for large sets
    rows = {name: [] for name in (metrics or METRICS)}
    both = {"aupr_in", "aupr_out"} <= set(rows)  # one sort serves the two
    for i in range(0, n_boot, chunk):
        ra, rb = a[ia[i:i + chunk]], b[ib[i:i + chunk]]
        if both:
            ap_in, ap_out = _ap_both_rows(ra, rb)
            rows["aupr_in"].append(ap_in)
            rows["aupr_out"].append(ap_out)
        for name in rows:
            if not (both and name in ("aupr_in", "aupr_out")):
                rows[name].append(_ROW_METRICS[name](ra, rb))
    return {name: tuple(float(v) for v in np.quantile(np.concatenate(vals), q)) for name, vals in rows.items()}


def _fpr95_rows(a: np.ndarray, b: np.ndarray, level: float = 0.95) -> np.ndarray:
    """``fpr95_ood_accepted`` per row: the threshold is the k-th largest ID score,
    k = ceil(level * n), and the value the share of OOD scores at or above it."""
    k = int(np.ceil(level * a.shape[1] - 1e-9))
    thr = -np.partition(-a, k - 1, axis=1)[:, k - 1]
    return (b >= thr[:, None]).mean(1)


def _ap_rows(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """Average precision per row with ``pos`` the positive class's scores (higher =
    positive), ties grouped as scikit-learn groups them (one step per distinct score)."""
    s, y = _sorted_rows(pos, neg)
    return _ap_sorted(s, y, pos.shape[1])


def _sorted_rows(pos: np.ndarray, neg: np.ndarray):
    """Each row of ``[pos, neg]`` in descending order, and its labels (1 = from ``pos``)."""
    s = np.concatenate([pos, neg], axis=1)
    y = np.concatenate([np.ones_like(pos), np.zeros_like(neg)], axis=1)
    order = np.argsort(-s, axis=1, kind="mergesort")
    return np.take_along_axis(s, order, 1), np.take_along_axis(y, order, 1)


def _ap_both_rows(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUPR-IN and AUPR-OUT per row from one sort: read backwards, the descending order of
    the scores is the descending order of minus the scores (OOD positive). Within a tie the
    order differs, but average precision only reads the ends of tie groups, so both equal
    :func:`_ap_rows` exactly."""
    s, y = _sorted_rows(a, b)
    return _ap_sorted(s, y, a.shape[1]), _ap_sorted(-s[:, ::-1], 1.0 - y[:, ::-1], b.shape[1])


def _ap_sorted(s: np.ndarray, y: np.ndarray, n_pos: int) -> np.ndarray:
    tps = np.cumsum(y, axis=1)
    end = np.ones_like(s, dtype=bool)
    end[:, :-1] = s[:, :-1] != s[:, 1:]  # the last position of each tie group
    at_end = np.where(end, tps, 0.0)
    prev = np.zeros_like(at_end)
    prev[:, 1:] = np.maximum.accumulate(at_end, axis=1)[:, :-1]
    gain = np.where(end, tps - prev, 0.0)
    precision = tps / np.arange(1, s.shape[1] + 1)
    return (gain * precision).sum(1) / n_pos


# row-wise versions of METRICS for the bootstrap (each checked against the scalar one in the tests)
_ROW_METRICS = {
    "auroc": _auroc_rows,
    "aupr_in": lambda a, b: _ap_rows(a, b),
    "aupr_out": lambda a, b: _ap_rows(-b, -a),
    "fpr95_ood_accepted": _fpr95_rows,
    "fpr95_id_rejected": lambda a, b: _fpr95_rows(-b, -a),
}
