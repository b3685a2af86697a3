"""Metrics against values worked out by hand (OOD positive; scores: higher = ID)."""
import numpy as np
import pytest

from oodkit.metrics import (aupr_in, aupr_out, auroc, fpr95_id_rejected, fpr95_ood_accepted, ood_metrics)

ID = np.arange(1, 21, dtype=float)  # 1..20


def test_case_one():
    ood = np.array([0.5, 1.5, 2.5, 25.0])
    # OOD below ID in 20 + 19 + 18 + 0 of 80 pairs
    assert auroc(ID, ood) == pytest.approx(57 / 80, abs=1e-15)
    # accept 95% of ID (19 of 20: scores >= 2): OOD 2.5 and 25 slip through
    assert fpr95_ood_accepted(ID, ood) == 0.5
    # catching 95% of 4 OOD means all 4, including 25: every ID image is rejected
    assert fpr95_id_rejected(ID, ood) == 1.0
    # OOD ranked first by score ascending: 0.5 (1/1), 1.5 (2/3), 2.5 (3/5), 25 (4/24)
    assert aupr_out(ID, ood) == pytest.approx((1 + 2 / 3 + 3 / 5 + 4 / 24) / 4, abs=1e-12)
    # ID ranked by score descending after OOD 25: k-th ID at rank k+1 for k <= 18,
    # then ID 2 at rank 21 and ID 1 at rank 23
    want = (sum(k / (k + 1) for k in range(1, 19)) + 19 / 21 + 20 / 23) / 20
    assert aupr_in(ID, ood) == pytest.approx(want, abs=1e-12)


def test_case_two_separates_the_conventions():
    ood = np.r_[np.arange(-17, 1, dtype=float), 1.5, 2.5]  # 20 OOD
    assert auroc(ID, ood) == pytest.approx((18 * 20 + 19 + 18) / 400, abs=1e-15)
    # threshold keeping 19/20 ID (>= 2) accepts only OOD 2.5
    assert fpr95_ood_accepted(ID, ood) == pytest.approx(1 / 20)
    # threshold catching 19/20 OOD (<= 1.5) rejects ID 1
    assert fpr95_id_rejected(ID, ood) == pytest.approx(1 / 20)


def test_perfect_and_reversed_and_errors():
    m = ood_metrics(ID, ID - 100)
    assert m == {"auroc": 1.0, "aupr_in": 1.0, "aupr_out": 1.0, "fpr95_ood_accepted": 0.0, "fpr95_id_rejected": 0.0}
    assert auroc(ID, ID + 100) == 0.0 and fpr95_ood_accepted(ID, ID + 100) == 1.0
    assert isinstance(auroc(ID.astype(np.float32), ID), float)
    with pytest.raises(ValueError, match="NaN"):
        auroc(ID, np.array([np.nan]))
    with pytest.raises(ValueError, match="at least one"):
        auroc([], ID)


def test_bootstrap_intervals_cover_a_known_auroc_at_the_nominal_rate():
    """ID ~ N(0, 1), OOD ~ N(-1, 1): AUROC = Phi(1 / sqrt 2). Over 200 independent
    samples the 95 % interval covers it about 95 % of the time."""
    from scipy.stats import norm

    from oodkit.metrics import bootstrap_intervals

    truth = norm.cdf(1 / np.sqrt(2))
    rng = np.random.default_rng(0)
    hits = 0
    for i in range(200):
        a, b = rng.normal(0, 1, 150), rng.normal(-1, 1, 100)
        lo, hi = bootstrap_intervals(a, b, n_boot=400, seed=i, metrics=["auroc"])["auroc"]
        assert lo <= auroc(a, b) <= hi
        hits += lo <= truth <= hi
    assert 0.89 <= hits / 200 <= 0.99, hits


def test_bootstrap_intervals_are_seeded_and_cover_every_metric():
    from oodkit.metrics import METRICS, bootstrap_intervals

    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, 60), rng.normal(-2, 1, 40)
    one = bootstrap_intervals(a, b, n_boot=100, seed=3)
    assert one == bootstrap_intervals(a, b, n_boot=100, seed=3) and set(one) == set(METRICS)
    for name, (lo, hi) in one.items():
        assert lo <= hi and 0 <= lo and hi <= 1, name


@pytest.mark.parametrize("decimals", [0, 1, 2, 12])
def test_every_resampled_metric_equals_its_scalar_definition_with_ties(decimals):
    """The bootstrap reads each resample as counts over the distinct scores; every row
    must equal the scalar metric (scikit-learn's tie rules) on that resample's scores, the
    FPR95s exactly (scikit-learn integrates AUROC by trapezoids: 1 ulp from the exact
    fraction computed here)."""
    from oodkit.metrics import METRICS, resampled_metrics

    rng = np.random.default_rng(decimals)
    for _ in range(10):
        n, m = rng.integers(2, 70, 2)
        a, b = np.round(rng.normal(0, 1, n), decimals), np.round(rng.normal(-0.7, 1, m), decimals)
        ia, ib = rng.integers(0, n, (7, n)), rng.integers(0, m, (7, m))
        rows = resampled_metrics(a, b, ia, ib)
        for name, fn in METRICS.items():
            want = [fn(a[ia[r]], b[ib[r]]) for r in range(7)]
            if not name.startswith("fpr"):
                np.testing.assert_allclose(rows[name], want, rtol=1e-13, err_msg=name)
            else:
                np.testing.assert_array_equal(rows[name], want, err_msg=name)


def test_resampled_metrics_do_not_depend_on_the_block_size():
    from oodkit import metrics as M

    rng = np.random.default_rng(5)
    a, b = np.round(rng.normal(size=300), 1), np.round(rng.normal(0.3, size=200), 1)
    ia, ib = rng.integers(0, 300, (50, 300)), rng.integers(0, 200, (50, 200))
    whole = M.resampled_metrics(a, b, ia, ib)
    for name, v in M.resampled_metrics(a, b, ia, ib, block=7).items():
        np.testing.assert_array_equal(v, whole[name])
