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
           "bootstrap_intervals", "check_bootstrap", "MIN_BOOTSTRAP", "resampled_metrics"]


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


# Fewer resamples put a 95 % percentile interval's ends on single draws (with 1, the
# "interval" is one resample and may exclude the estimate itself).
MIN_BOOTSTRAP = 100
# More resamples move a 95 % interval's ends by less than its own Monte-Carlo error at 1,000
# and cost time and memory in proportion (index arrays of resamples x images).
MAX_BOOTSTRAP = 100_000


def check_bootstrap(n_boot: int) -> None:
    """Refuse a resample count that cannot give a 95 % interval (0: no intervals), or that
    would cost far more than an interval needs."""
    if n_boot != 0 and n_boot < MIN_BOOTSTRAP:
        raise ValueError(f"--bootstrap {n_boot}: a 95 % interval needs at least {MIN_BOOTSTRAP} resamples "
                         "(0: no intervals)")
    if n_boot > MAX_BOOTSTRAP:
        raise ValueError(f"--bootstrap {n_boot}: at most {MAX_BOOTSTRAP:,} resamples (1,000 already put a 95 % "
                         "interval's ends within their Monte-Carlo error)")


def bootstrap_intervals(scores_id, scores_ood, n_boot: int = 1000, level: float = 0.95, seed: int = 0,
                        metrics=None) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals ``{metric: (low, high)}`` at ``level``, resampling
    the ID and the OOD scores separately (each side keeps its size). Seeded, so a
    report is reproducible. Every metric is computed from how many times each distinct
    score is drawn (:func:`resampled_metrics`): no resample is sorted."""
    check_bootstrap(n_boot)
    a, b = _check(scores_id, scores_ood)
    rng = np.random.default_rng(seed)
    ia = rng.integers(0, a.size, (n_boot, a.size), dtype=np.int32)
    ib = rng.integers(0, b.size, (n_boot, b.size), dtype=np.int32)
    q = [(1 - level) / 2, (1 + level) / 2]
    names = list(metrics or METRICS)
    rows = resampled_metrics(a, b, ia, ib, names)
    return {name: tuple(float(v) for v in np.quantile(rows[name], q)) for name in names}


def resampled_metrics(a: np.ndarray, b: np.ndarray, ia: np.ndarray, ib: np.ndarray, names=None,
                      level: float = 0.95, block: int | None = None) -> dict[str, np.ndarray]:
    """``{metric: (R,) values}`` on R resamples: row r scores ID ``a[ia[r]]`` against OOD
    ``b[ib[r]]``, each metric equal to its scalar definition in :data:`METRICS` on that
    row (ties as scikit-learn counts them).

    The distinct scores are sorted once (descending); a resample is then two count
    vectors over them, ID ``P`` and OOD ``N``, and every metric a function of their
    running sums: AUROC = sum_g N_g (TP_g - P_g / 2) / (n m) with TP the ID drawn at or
    above each score; average precision sums P_g TP_g / (TP_g + FP_g) over the steps;
    the FPR95 thresholds are the first score where a running sum reaches 95 %. Counts
    are integers in float64, so the sums are exact; memory is bounded by working in
    ``block`` resamples at a time (default: 4 million counts)."""
    names = list(names or METRICS)
    u, inv = np.unique(-np.concatenate([a, b]), return_inverse=True)  # distinct scores, descending
    ga, gb, G = inv[: a.size], inv[a.size :], u.size
    out = {name: [] for name in names}
    block = block or max(1, int(4e6 // G))
    for i in range(0, len(ia), block):
        P, N = _counts(ga[ia[i : i + block]], G), _counts(gb[ib[i : i + block]], G)
        for name, v in _count_metrics(P, N, a.size, b.size, names, level).items():
            out[name].append(v)
    return {name: np.concatenate(v) for name, v in out.items()}


def _counts(groups: np.ndarray, G: int) -> np.ndarray:
    """(R, G) float64: how often each distinct score appears in each row of ``groups``."""
    R = groups.shape[0]
    flat = (np.arange(R, dtype=np.int64)[:, None] * G + groups).ravel()
    return np.bincount(flat, minlength=R * G).reshape(R, G).astype(np.float64)


def _precision_sum(pos: np.ndarray, neg: np.ndarray, n_pos: int) -> np.ndarray:
    """Average precision per row, ``pos`` / ``neg`` the counts in descending score order."""
    tp, fp = np.cumsum(pos, 1), np.cumsum(neg, 1)
    precision = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=pos > 0)
    return (pos * precision).sum(1) / n_pos


def _first_reaching(running: np.ndarray, k: int) -> np.ndarray:
    """Index, per row, of the first column where ``running`` reaches ``k``."""
    return np.argmax(running >= k, axis=1)


def _count_metrics(P, N, n, m, names, level) -> dict:
    rows = np.arange(P.shape[0])
    TP, FP = np.cumsum(P, 1), np.cumsum(N, 1)  # ID / OOD drawn at or above each score
    out = {}
    if "auroc" in names:
        out["auroc"] = (N * (TP - 0.5 * P)).sum(1) / (n * m)
    if "aupr_in" in names:
        out["aupr_in"] = _precision_sum(P, N, n)
    if "aupr_out" in names:  # OOD positive, lower score first
        out["aupr_out"] = _precision_sum(N[:, ::-1], P[:, ::-1], m)
    if "fpr95_ood_accepted" in names:  # threshold at the k-th highest ID score; OOD at or above it
        k = int(np.ceil(level * n - 1e-9))
        out["fpr95_ood_accepted"] = FP[rows, _first_reaching(TP, k)] / m
    if "fpr95_id_rejected" in names:  # threshold at the k-th lowest OOD score; ID at or below it
        k = int(np.ceil(level * m - 1e-9))
        low_ood, low_id = np.cumsum(N[:, ::-1], 1), np.cumsum(P[:, ::-1], 1)
        out["fpr95_id_rejected"] = low_id[rows, _first_reaching(low_ood, k)] / n
    return out
