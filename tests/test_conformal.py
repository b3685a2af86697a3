"""Thresholds with a guarantee: split-conformal calibration, p-values and BH screening.

Simulations on synthetic scores (seeded, thousands of replications) check the
finite-sample statements of oodkit.conformal; the detector tests check that every
detector's default threshold and p-values are built on out-of-sample scores and travel
with its file."""
import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from scipy import stats

from oodkit.checkpoint import save_checkpoint
from oodkit.conformal import bh_screen, conformal_threshold, min_calibration_size, pvalues
from oodkit.data import as_images, load_dataset
from oodkit.detectors import make_detector
from oodkit.detectors.base import BaseDetector
from oodkit.detectors.persist import load_detector
from oodkit.representation import clear_cache

from .test_detectors import fixed_model

REPS, FRESH = 3000, 100


class _Scores(BaseDetector):
    """A detector whose score is the input itself: the threshold logic alone."""

    def __init__(self, contamination=0.05):
        self.contamination = contamination

    def fit(self, X, y=None):
        self._set_offset(np.asarray(X, dtype=np.float64))
        return self

    def score_samples(self, X):
        return np.asarray(X, dtype=np.float64)


def _acceptance(n, tpr, how, rng):
    """Mean share of fresh ID scores accepted over REPS calibrations of n scores."""
    acc = np.empty(REPS)
    for r in range(REPS):
        cal, fresh = rng.standard_normal(n), rng.standard_normal(FRESH)
        det = _Scores(contamination=1 - tpr).fit(cal) if how == "default" else _Scores().fit(cal).calibrate(cal, tpr)
        acc[r] = (det.predict(fresh) == 1).mean()
    return acc.mean(), acc.std() / np.sqrt(REPS)


@pytest.mark.parametrize("how", ["calibrate", "default"])
@pytest.mark.parametrize("n", [20, 100, 1000])
def test_fresh_id_acceptance_is_at_least_tpr_for_every_n(n, how):
    # the old rule (ceil(tpr n) of n accepted; the contamination percentile) gave 0.905 at n = 20
    mean, se = _acceptance(n, 0.95, how, np.random.default_rng(n))
    k = int(np.floor((n + 1) * 0.05 + 1e-9))
    exact = (n + 1 - k) / (n + 1)  # the conformal guarantee's exact value for continuous scores
    assert mean >= 0.95 - 3 * se, (mean, se)
    assert abs(mean - exact) < 4 * se + 1e-3, (mean, exact)


def test_a_tpr_that_n_cannot_support_is_refused_with_the_count_needed():
    cal = np.random.default_rng(0).standard_normal(20)
    with pytest.raises(ValueError, match=r"^tpr=0.99 needs at least 99 held-out ID images for its guarantee, got 20$"):
        _Scores().fit(cal).calibrate(cal, tpr=0.99)
    assert min_calibration_size(0.95) == 19 and min_calibration_size(0.99) == 99 and min_calibration_size(0.9) == 9
    assert conformal_threshold(np.arange(19.0), 0.95) == 0.0  # n = 19 is the least that works for 0.95
    for bad in ("0.9", None, 1.0, 0.0, True, float("nan")):
        with pytest.raises(ValueError, match="tpr must"):
            _Scores().fit(cal).calibrate(cal, tpr=bad)
    for bad in ("auto", -0.1, 0.5, None, True):
        with pytest.raises(ValueError, match="contamination must be a number in \\[0, 0.5\\)"):
            _Scores(contamination=bad).fit(cal)


def test_too_few_fitting_images_for_the_default_threshold_warn():
    with pytest.warns(UserWarning, match="contamination=0.05 needs at least 19 fitting images .* got 10"):
        det = _Scores().fit(np.arange(10.0))
    assert det.offset_ == 0.0


def test_pvalues_are_uniform_under_id():
    rng = np.random.default_rng(1)
    n = 999
    p = np.array([pvalues(rng.standard_normal(n), rng.standard_normal(1))[0] for _ in range(4000)])
    assert stats.kstest(p, "uniform").pvalue > 0.01
    for a in (0.01, 0.05, 0.1, 0.5):  # super-uniform: P(p <= a) <= a (up to sampling error)
        assert (p <= a).mean() <= a + 3 * np.sqrt(a * (1 - a) / len(p))
    # exact form: (1 + #{calibration <= s}) / (n + 1)
    np.testing.assert_array_equal(pvalues([3.0, 1.0, 2.0], [0.5, 1.0, 2.5, 9.0]), [0.25, 0.5, 0.75, 1.0])


def test_bh_screen_keeps_the_false_discovery_rate():
    rng = np.random.default_rng(2)
    fdp, power = [], []
    for _ in range(1000):
        cal = rng.standard_normal(500)
        test_id, test_ood = rng.standard_normal(180), rng.standard_normal(20) - 3.0  # 10 % outliers, lower scores
        flagged = bh_screen(pvalues(cal, np.concatenate([test_id, test_ood])), 0.1)
        fdp.append(flagged[:180].sum() / max(1, flagged.sum()))
        power.append(flagged[180:].mean())
    assert np.mean(fdp) <= 0.1 + 3 * np.std(fdp) / np.sqrt(len(fdp)), np.mean(fdp)
    assert np.mean(power) > 0.5  # it does find outliers
    # the step-up rule by hand: the largest k with p_(k) <= k q / m
    np.testing.assert_array_equal(bh_screen([0.01, 0.04, 0.03, 0.5], 0.1), [True, True, True, False])
    np.testing.assert_array_equal(bh_screen([0.2, 0.3], 0.1), [False, False])
    with pytest.raises(ValueError, match="fdr must be a number in \\(0, 1\\)"):
        bh_screen([0.1], 1.5)


@pytest.fixture(scope="module")
def imgs():
    return {"train": as_images(load_dataset("digits-0to4", "train").images),
            "test": as_images(load_dataset("digits-0to4", "test").images),
            "letters": as_images(load_dataset("letters", "test").images)}


@pytest.mark.parametrize("name", ["loglik", "typicality", "profile", "profile-gmm", "features", "features-gauss",
                                  "fused"])
def test_default_threshold_comes_from_out_of_sample_training_scores(imgs, name):
    """The network has not seen these images (random weights), so held-out ID images are
    exchangeable with the fitting ones: the default threshold must accept about 0.95 of them.
    In-sample mixture densities accepted far fewer (the profile-gmm failure)."""
    clear_cache()
    det = make_detector(name, model=fixed_model(seed=11), progress=False, n_levels=20).fit(imgs["train"])
    held = np.concatenate([imgs["test"].numpy()])
    acc = (det.predict(held) == 1).mean()
    assert acc >= 0.95 - 3 * np.sqrt(0.05 * 0.95 / len(held)) - 0.01, (name, acc)
    assert det.threshold_source_.startswith("conformal, tpr 0.95, 601 training images")
    assert len(det.calibration_scores_) == len(imgs["train"])


class _Profiles:
    """A stand-in Representation: Gaussian profiles of 20 levels (what Profile reads)."""

    dim = 1

    def __init__(self, z):
        self.z = z

    def levels(self, t):
        return self.z[:, t]


@pytest.mark.parametrize("n", [500, pytest.param(2000, marks=pytest.mark.slow)])
def test_profile_gmm_threshold_from_cross_fitted_scores_accepts_tpr_of_fresh_id(n):
    """A 10-component full-covariance mixture in 20 dimensions overfits its fitting set:
    a threshold on its in-sample densities accepted 0.50 of fresh ID images at n = 500 and
    0.87 at n = 2,000. The 10-fold cross-fitted scores give one that accepts at least 0.95
    (a little more: each fold's mixture saw 90 % of the images)."""
    from oodkit.detectors.scores import Profile

    rng = np.random.default_rng(n)
    mix = rng.standard_normal((20, 20)) / 4
    train, fresh = (_Profiles(rng.standard_normal((m, 20)) @ mix + 3) for m in (n, 20000))
    prof = Profile(np.arange(20), density="gmm", n_components=10).fit(train)
    cross_cut = conformal_threshold(prof.train_score(train), 0.95)
    in_sample_cut = conformal_threshold(prof.score(train), 0.95)
    s = prof.score(fresh)
    assert 0.945 <= (s >= cross_cut).mean() <= 0.975, (s >= cross_cut).mean()
    assert (s >= in_sample_cut).mean() < 0.9  # what the in-sample threshold did


def test_pvalues_predict_fdr_and_files_round_trip(imgs, tmp_path):
    clear_cache()
    save_checkpoint(tmp_path / "m.pt", fixed_model(seed=2))
    det = make_detector("fused", model=str(tmp_path / "m.pt"), progress=False).fit(imgs["train"])
    det.calibrate(imgs["test"][:150], tpr=0.9)
    det.save(tmp_path / "d.npz")
    back = load_detector(tmp_path / "d.npz")
    np.testing.assert_array_equal(back.calibration_scores_, det.calibration_scores_)
    x = np.concatenate([imgs["test"][150:].numpy(), imgs["letters"][:50].numpy()])
    np.testing.assert_array_equal(back.pvalues(x), det.pvalues(x))
    flagged = det.predict(x, fdr=0.1)
    np.testing.assert_array_equal(back.predict(x, fdr=0.1), flagged)
    p = det.pvalues(x)
    np.testing.assert_array_equal(flagged == -1, bh_screen(p, 0.1))
    assert p.min() >= 1 / 151 and p.max() <= 1.0


def test_cli_score_with_fdr_writes_pvalues_and_flags(imgs, tmp_path, monkeypatch):
    from oodkit.cli import main

    monkeypatch.chdir(tmp_path)
    clear_cache()
    save_checkpoint(tmp_path / "m.pt", fixed_model(seed=7))
    run = lambda *a: CliRunner().invoke(main, [str(x) for x in a])
    r = run("fit", "--model", "m.pt", "--data", "digits-0to4", "--detectors", "loglik", "--out", "det.npz", "--quiet")
    assert r.exit_code == 0, r.output
    r = run("score", "--detector", "det.npz", "--data", "letters", "--out", "s.csv", "--fdr", "0.1", "--quiet")
    assert r.exit_code == 0, r.output
    df = pd.read_csv(tmp_path / "s.csv")
    det = load_detector(tmp_path / "det.npz")
    np.testing.assert_allclose(df["loglik_pvalue"], pvalues(det.calibration_scores_, df["loglik"]), rtol=0)
    np.testing.assert_array_equal(df["loglik_flagged"], bh_screen(df["loglik_pvalue"], 0.1))
    r = run("score", "--model", "m.pt", "--data", "letters", "--out", "t.csv", "--fdr", "0.1")
    assert r.exit_code == 2 and "--fdr screens against a detector file's calibration scores" in r.output
    r = run("score", "--detector", "det.npz", "--data", "letters", "--out", "t.csv", "--fdr", "1.5")
    assert r.exit_code == 2


def test_a_model_records_its_training_images_and_the_threshold_leaves_them_out(tmp_path):
    """A network scores the images it trained on too well. The checkpoint records them (by
    content hash); fitted on them and on others, a detector sets its threshold on the
    others only, and says so; fitted on them alone, it warns."""
    from oodkit.pretrained import load_model
    from oodkit.training import TrainConfig, fit_model

    x = as_images(load_dataset("digits-0to4", "train").images)
    seen, unseen = x[:200], x[200:]
    fit_model(seen, net="tiny", T=10, config=TrainConfig(steps=2, batch_size=8, save_every=0), out=tmp_path / "m.pt")
    model = load_model(tmp_path / "m.pt")
    assert len(model.data_info["image_hashes"]) == 200
    clear_cache()
    det = make_detector("loglik", model=model).fit(np.concatenate([seen.numpy(), unseen.numpy()]))
    assert len(det.calibration_scores_) == len(unseen)
    assert "did not train on (200 it did were left out)" in det.threshold_source_
    rep = det.representation(unseen)
    assert det.offset_ == conformal_threshold(det.scorer_.score(rep), 0.95)
    with pytest.warns(UserWarning, match="the network was trained on 200 of these 200 images: their scores are "
                                         "optimistic"):
        make_detector("loglik", model=model).fit(seen)


def test_fit_calibrates_on_a_held_out_part_of_the_training_split_never_the_fitting_images(tmp_path, monkeypatch):
    from oodkit.cli import main

    monkeypatch.chdir(tmp_path)
    # a model that records the images it trained on (none of these): training-split calibration needs that
    save_checkpoint(tmp_path / "m.pt", fixed_model(seed=7), data={"image_hashes": torch.zeros(0, dtype=torch.int64)})
    run = lambda *a: CliRunner().invoke(main, [str(x) for x in a])
    r = run("fit", "--model", "m.pt", "--data", "digits-0to4", "--detectors", "loglik", "--max-train", "400",
            "--calibrate-on", "digits-0to4", "--calibrate-split", "train", "--max-calibrate", "150", "--out", "d.npz",
            "--quiet")
    assert r.exit_code == 0 and "(train split, 150 images)" in r.output, r.output
    det = load_detector(tmp_path / "d.npz")
    x = as_images(load_dataset("digits-0to4", "train").images)
    fit_idx = np.sort(np.random.default_rng(0).choice(len(x), 400, replace=False))
    fitted = set(np.round(det.score_samples(x[fit_idx]), 9))
    cal = set(np.round(det.calibration_scores_, 9))
    assert len(cal) == 150 and not (cal & fitted)  # the calibration images are none of the fitting images
    r = run("fit", "--model", "m.pt", "--data", "digits-0to4", "--detectors", "loglik", "--calibrate-on",
            "digits-0to4", "--calibrate-split", "train", "--out", "e.npz", "--quiet")
    assert r.exit_code == 2 and "needs a held-out part: fit on fewer images with --max-train" in r.output


def test_a_calibration_file_of_its_own_is_used_whole_and_one_shared_with_the_data_is_split(tmp_path, monkeypatch):
    """The audit of 2026-12-04: a 200-image --calibrate-on file calibrated on 40 of them (the
    80/20 split meant for one file that is both fitting and calibration data)."""
    from oodkit.cli import main

    monkeypatch.chdir(tmp_path)
    save_checkpoint(tmp_path / "m.pt", fixed_model(seed=7))
    held_out = load_dataset("digits-0to4", "test").images
    np.savez(tmp_path / "val.npz", images=held_out[:200])
    np.savez(tmp_path / "both.npz", images=load_dataset("digits-0to4", "train").images[:300])
    run = lambda *a: CliRunner().invoke(main, [str(x) for x in a])
    r = run("fit", "--model", "m.pt", "--data", "digits-0to4", "--detectors", "loglik", "--calibrate-on",
            "npz:val.npz", "--out", "d.npz", "--quiet")
    assert r.exit_code == 0 and "200 images)" in r.output, r.output
    assert len(load_detector(tmp_path / "d.npz").calibration_scores_) == 200
    r = run("fit", "--model", "m.pt", "--data", "npz:both.npz", "--detectors", "loglik", "--calibrate-on",
            "npz:both.npz", "--out", "e.npz", "--quiet")
    assert r.exit_code == 0 and "fitted on 240 " in r.output and "60 images)" in r.output, r.output


def test_profile_gmm_fit_and_threshold_do_not_depend_on_the_order_of_the_training_images(imgs):
    """The mixture's k-means start and the cross-fitting folds follow the data, not their
    order: the same images in another order give the same scores and the same threshold."""
    clear_cache()
    model = fixed_model(seed=11)
    a = make_detector("profile-gmm", model=model, n_levels=20).fit(imgs["train"])
    b = make_detector("profile-gmm", model=model, n_levels=20, batch_size=7).fit(imgs["train"].flip(0))
    # batch 7 against 256 moves the float32 pass in its last bits, which EM carries to ~1e-9 relative
    np.testing.assert_allclose(a.score_samples(imgs["test"]), b.score_samples(imgs["test"]), rtol=1e-6)
    assert a.offset_ == pytest.approx(b.offset_, rel=1e-6)


@pytest.mark.parametrize("p,message", [([0.01, np.nan, 0.5], "NaN"), ([0.01, 1.5], r"in \[0, 1\]"),
                                       ([-0.1, 0.5], r"in \[0, 1\]"), ([[0.01, 0.5]], "one p-value per image")])
def test_bh_screen_refuses_what_are_not_p_values(p, message):
    """Audit 4: NaN was silently 'not flagged', values outside [0, 1] and a 2-D array
    (flattened) were taken as they were."""
    with pytest.raises(ValueError, match=message):
        bh_screen(np.array(p), 0.1)


def test_pvalues_keep_one_per_score():
    with pytest.raises(ValueError, match="one score per image"):
        pvalues(np.array([1.0, 2.0, 3.0]), np.ones((2, 2)))
    np.testing.assert_array_equal(pvalues(np.array([1.0, 2.0, 3.0]), [0.5, 2.0, 9.0]), [0.25, 0.75, 1.0])


# -- audit 7: thresholds and their guarantees -----------------------------------------------


def test_a_threshold_with_confidence_holds_for_the_stated_share_of_calibrations():
    """A conformal threshold accepts tpr of fresh ID images on average over calibration
    sets; one threshold accepts fewer than tpr about 45 % of the time (Beta(n+1-k, k)).
    With ``confidence``, at most 1 - confidence of thresholds fall short."""
    rng, n, tpr = np.random.default_rng(3), 300, 0.95
    short = {None: 0, 0.9: 0}
    for _ in range(2000):
        cal = rng.standard_normal(n)
        for conf in short:
            cut = conformal_threshold(cal, tpr, confidence=conf)
            short[conf] += stats.norm.sf(cut) < tpr  # the exact share of fresh N(0, 1) scores accepted
    assert 0.40 < short[None] / 2000 < 0.52  # the marginal guarantee: about half fall short
    assert short[0.9] / 2000 <= 0.10 + 3 * np.sqrt(0.1 * 0.9 / 2000)
    assert short[0.9] / 2000 > 0.05  # and not far more conservative than asked
    det = _Scores().fit(rng.standard_normal(50)).calibrate(np.arange(300.0), tpr, confidence=0.9)
    assert det.offset_ == conformal_threshold(np.arange(300.0), tpr, confidence=0.9) == 9.0  # k = 10 of 300
    assert "confidence 0.9" in det.threshold_source_
    assert min_calibration_size(0.95, confidence=0.9) == 45  # 0.95^45 <= 0.1 < 0.95^44
    with pytest.raises(ValueError, match="needs at least 45"):
        conformal_threshold(np.arange(44.0), 0.95, confidence=0.9)
    for bad in (1.0, 0, "0.9", True):
        with pytest.raises(ValueError, match="confidence must"):
            conformal_threshold(np.arange(300.0), tpr, confidence=bad)


def test_the_fewest_calibration_scores_agree_with_the_rank_rule():
    from oodkit.conformal import conformal_rank

    for tpr in (0.5, 0.9, 0.95, 0.99, 0.999, 0.9999, 0.99999, 1 / 3, 0.123):
        n = min_calibration_size(tpr)
        assert conformal_rank(n, tpr) >= 1 and conformal_rank(n - 1, tpr) < 1, tpr
    assert conformal_threshold(np.arange(9999.0), 0.9999) == 0.0


def test_calibration_scores_must_be_one_number_per_image():
    det = _Scores().fit(np.random.default_rng(0).standard_normal(50))
    with pytest.raises(ValueError, match=r"one score per image, shape \(m,\); got shape \(100, 1\)"):
        det.calibrate_scores(np.zeros((100, 1)), 0.95)
    with pytest.raises(ValueError, match=r"seen must hold one entry per calibration score: 3 for 40"):
        det.calibrate_scores(np.arange(40.0), 0.9, seen=np.ones(3, bool))
    with pytest.raises(ValueError, match="calibration scores must be real numbers"):
        conformal_threshold(["a", "b"], 0.5)
    with pytest.raises(ValueError, match="calibration scores must be real numbers"):
        conformal_threshold(np.arange(30) + 1j, 0.9)


def test_screening_that_can_flag_nothing_is_refused():
    det = _Scores().fit(np.arange(30.0)).calibrate(np.arange(30.0), 0.9)
    with pytest.raises(ValueError, match=r"fdr=0.01 with 30 calibration scores can flag nothing"):
        det.predict(np.arange(5.0) - 100, fdr=0.01)


def test_calibrating_after_contamination_changed_is_allowed():
    x = load_dataset("digits-0to4", "test").images
    det = make_detector("loglik", model=fixed_model()).fit(x[:100]).set_params(contamination=0.1)
    det.calibrate(x[100:200], 0.9)  # calibrate replaces the threshold contamination set
    assert det.predict(x[200:]).shape == (len(x) - 200,)


def test_thresholds_set_on_images_the_network_trained_on_say_so(tmp_path, monkeypatch):
    """The shipped digits-0to4 detectors' thresholds come from images the network trained
    on: they accepted 0.52-0.74 of fresh ID test images against a printed 0.95, and their
    p-values flagged ID images at --fdr. Scoring with them warns; screening is refused."""
    from oodkit.cli import main
    from oodkit.detectors.persist import load_detectors

    dets = load_detectors("digits-0to4")
    assert {d.threshold_guarantee() for d in dets.values()} == {"trained-on"}
    assert {d.threshold_guarantee() for d in load_detectors("fashionmnist").values()} == {"trained-on"}
    x = load_dataset("digits-0to4", "test").images[:40]
    with pytest.raises(ValueError, match="trained on"):
        dets["fused"].predict(x, fdr=0.1)
    with pytest.warns(UserWarning, match="trained on"):
        dets["fused"].pvalues(x)
    dets["fused"].calibrate(x, 0.9)
    assert dets["fused"].threshold_guarantee() == "held-out"
    dets["fused"].predict(x, fdr=0.1)
    monkeypatch.chdir(tmp_path)
    run = lambda *a: CliRunner().invoke(main, [str(v) for v in a])
    r = run("score", "--detector", "digits-0to4", "--data", "digits-0to4", "--out", "s.csv", "--quiet")
    assert r.exit_code == 0 and "Warning:" in r.output and "trained on" in r.output and "--calibrate-on" in r.output
    r = run("score", "--detector", "digits-0to4", "--data", "digits-0to4", "--out", "t.csv", "--fdr", "0.1")
    assert r.exit_code == 2 and "--calibrate-on" in r.output and len(r.output.strip().splitlines()) == 1
    r = run("score", "--model", "digits-0to4", "--data", "digits-0to4", "--out", "t.csv", "--fdr", "0.1")
    assert r.exit_code == 2 and "--calibrate-on" in r.output


def test_fit_tpr_needs_calibration_images_and_counts_them_before_fitting(tmp_path, monkeypatch):
    from oodkit.cli import main

    monkeypatch.chdir(tmp_path)
    run = lambda *a: CliRunner().invoke(main, [str(v) for v in a])
    r = run("fit", "--model", "digits-0to4", "--data", "digits-0to4", "--detectors", "loglik", "--tpr", "0.99",
            "--out", "d.npz")
    assert r.exit_code == 2 and "--calibrate-on" in r.output and not (tmp_path / "d.npz").exists()
    r = run("fit", "--model", "digits-0to4", "--data", "digits-0to4", "--detectors", "loglik", "--calibrate-on",
            "digits-0to4", "--max-calibrate", "10", "--out", "d.npz")  # refused before the fitting pass
    assert r.exit_code == 2 and "needs at least 19" in r.output and "forward" not in r.output
    r = run("fit", "--model", "digits-0to4", "--data", "digits-0to4", "--detectors", "loglik", "--calibrate-on",
            "digits-0to4", "--confidence", "0.9", "--out", "d.npz", "--quiet")
    assert r.exit_code == 0, r.output
    assert "Warning" not in r.output and "confidence 0.9" in load_detector("d.npz").threshold_source_
    assert "with probability 0.9" in r.output


# -- the review of audit 7 ------------------------------------------------------------------


def test_an_alignment_that_resamples_makes_the_training_record_unknown_not_held_out(tmp_path):
    """Hashes of images brought through --align-px match nothing the network trained on:
    all-False read as "held-out" and let --fdr through on training images."""
    from oodkit.pipeline import Flow, align
    from oodkit.pretrained import load_model
    from oodkit.training import TrainConfig, fit_model

    x = as_images(load_dataset("digits-0to4", "train").images)[:120]
    fit_model(x, net="tiny", T=10, config=TrainConfig(steps=1, batch_size=8, save_every=0), out=tmp_path / "m.pt")
    model = load_model(tmp_path / "m.pt")
    clear_cache()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dets = Flow(progress=False).fit({"loglik": model}, align(x, model, 4), align_px=4)
        assert dets["loglik"].threshold_guarantee() == "unknown"
        det = make_detector("loglik", model=model).fit(x)
    assert det.threshold_guarantee() == "trained-on"
    det.align_px_ = 4
    det.calibrate(x[:100], 0.9)  # the record cannot tell: nothing is left out, and nothing claimed
    assert "were left out" not in det.threshold_source_


def test_diffusion_calibrate_reads_its_images_once(tmp_path):
    from oodkit.models.ddpm import DDPM
    from oodkit.nn.unet import unet_from_preset
    from oodkit.schedules import NoiseSchedule

    s = NoiseSchedule.linear(10)
    ddpm = DDPM(unet_from_preset("tiny", in_channels=1, image_size=8, time_conditioning=True), s).eval()
    x = load_dataset("digits-0to4", "test").images
    det = make_detector("itd", model=ddpm, n_points=2, n_offset=30).fit(x[:40])
    det.calibrate((im for im in x[40:80]), 0.9)
    assert len(det.calibration_scores_) == 40


def test_screening_is_refused_alike_in_every_path(tmp_path):
    from oodkit.scoring import score_with_detectors

    with pytest.raises(ValueError, match="trained on"):
        score_with_detectors("digits-0to4", "digits-0to4", fdr=0.1)


def test_a_failed_calibration_keeps_the_changed_contamination_refused():
    x = load_dataset("digits-0to4", "test").images
    det = make_detector("loglik", model=fixed_model()).fit(x[:100]).set_params(contamination=0.2)
    with pytest.raises(ValueError, match="needs at least"):
        det.calibrate(x[100:105], 0.95)
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError, match="contamination"):
        det.predict(x[:3])
