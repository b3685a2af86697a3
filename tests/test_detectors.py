import numpy as np
import pytest
import torch
from sklearn.base import clone

from oodkit import CDM, NoiseSchedule, UNet
from oodkit.data import ImageInputError, as_images, load_dataset
from oodkit.detectors import DETECTORS, TABLE, CDMDetector, make_detector
from oodkit.conformal import conformal_threshold
from oodkit.metrics import auroc
from oodkit.representation import clear_cache

from .tiny import seeded

CDM_DETECTORS = [n for n, (cls, _) in DETECTORS.items() if cls is CDMDetector]


def fixed_model(seed=0, T=50, rotations=0):
    """A fixed tiny CDM: seeded random weights with a non-zero head (no training, so
    the numbers below depend on nothing but the seed and the arithmetic); ``rotations=4``
    adds a rotation head, seeded after the net."""
    s = NoiseSchedule.uniform(T)
    net = UNet(ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), dropout=0.0, in_channels=1,
               image_size=8, num_classes=s.num_classes)
    return seeded(CDM(net, s, rotations=rotations), seed)


@pytest.fixture(scope="module")
def data():
    like = load_dataset("digits-0to4", "test")
    return {
        "train": as_images(load_dataset("digits-0to4", "train").images),
        "test": as_images(like.images),
        "letters": as_images(load_dataset("letters", "test").images),
        "noise": as_images(load_dataset("noise", "test", like=like).images),
    }


@pytest.mark.parametrize("name", CDM_DETECTORS)
def test_every_detector_contract(name, data):
    det = make_detector(name, model=fixed_model(rotations=4 if TABLE[name].rotation else 0), progress=False,
                        n_levels=8).fit(data["train"])
    s = det.score_samples(data["test"])
    assert s.dtype == np.float64 and s.shape == (len(data["test"]),) and np.isfinite(s).all()
    rep = det.representation(data["train"])
    # the profile's kNN scores its own training points leave-one-out
    train_s = det.scorer_.train_score(rep) if hasattr(det.scorer_, "train_score") else det.score_samples(data["train"])
    assert det.offset_ == conformal_threshold(train_s, 0.95)  # out-of-sample training scores, conformal rank
    np.testing.assert_allclose(det.decision_function(data["test"]), s - det.offset_)
    pred = det.predict(data["test"])
    assert set(np.unique(pred)) <= {-1, 1}
    np.testing.assert_array_equal(pred == 1, s >= det.offset_)
    np.testing.assert_allclose(det.ood_score(data["test"]), -s)


def test_clone_and_params_round_trip():
    det = CDMDetector(model="m.pt", score="profile", n_levels=12, density="gmm", contamination=0.1)
    params = det.get_params()
    assert params["n_levels"] == 12 and params["density"] == "gmm" and params["model"] == "m.pt"
    c = clone(det)
    assert c.get_params() == params and c is not det
    c.set_params(score="loglik")
    assert c.score == "loglik" and det.score == "profile"
    fitted = CDMDetector(model=fixed_model(), progress=False)
    assert clone(fitted).get_params()["score"] == "fused"  # the default


def test_scores_match_the_model(data):
    model = fixed_model()
    x = data["test"][:16]
    xf = x.float() * 2 / 255 - 1
    det = CDMDetector(model=model, score="loglik", progress=False).fit(data["train"])
    np.testing.assert_allclose(det.score_samples(x), model.log_prob(xf).numpy(), rtol=1e-6)
    post = CDMDetector(model=model, score="posterior", progress=False).fit(data["train"])
    np.testing.assert_allclose(post.score_samples(x), model.noise_posterior(xf)[:, 0].log().numpy(), rtol=1e-5,
                               atol=1e-6)
    et = CDMDetector(model=model, score="expected-t", progress=False).fit(data["train"])
    want = -(model.noise_posterior(xf) * torch.arange(model.T + 2)).sum(1).numpy()
    np.testing.assert_allclose(et.score_samples(x), want, rtol=1e-6)
    typ = CDMDetector(model=model, score="typicality", progress=False).fit(data["train"])
    mean = model.log_prob(data["train"].float() * 2 / 255 - 1).mean().item()
    np.testing.assert_allclose(typ.score_samples(x), -np.abs(model.log_prob(xf).numpy() - mean), rtol=1e-6, atol=1e-5)


def test_one_forward_pass_serves_every_detector(data):
    clear_cache()
    model = fixed_model(seed=3, rotations=4)  # every CDM detector runs on it, upright included
    calls = []
    model.net.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    dets = [make_detector(n, model=model, progress=False, batch_size=1000).fit(data["train"]) for n in CDM_DETECTORS]
    for d in dets:
        d.score_samples(data["test"])
    # one pass over the training images and one over the test images, whatever the detector count
    assert sum(calls) == len(data["train"]) + len(data["test"])
    with torch.no_grad():  # weights changed in place: the cache must not answer for them
        model.net.head.bias.add_(1.0)
    dets[0].score_samples(data["test"])
    assert sum(calls) == len(data["train"]) + 2 * len(data["test"])


def test_input_errors(data):
    det = CDMDetector(model=fixed_model(), progress=False).fit(data["train"])
    with pytest.raises(ImageInputError, match=r"model takes \(1, 8, 8\).*resize=True"):
        det.score_samples(np.zeros((2, 16, 16, 3), np.uint8))
    resized = CDMDetector(model=fixed_model(), progress=False, resize=True).fit(data["train"])
    assert resized.score_samples(np.zeros((2, 16, 16, 3), np.uint8)).shape == (2,)
    with pytest.raises(ImageInputError, match="NaN"):
        det.score_samples(np.full((2, 1, 8, 8), np.nan, np.float32))
    with pytest.raises(ValueError, match="unknown score"):
        CDMDetector(model=fixed_model(), score="elbo", progress=False).fit(data["train"])
    with pytest.raises(ValueError, match="unknown detector"):
        make_detector("nosuch")
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        CDMDetector(model=fixed_model()).score_samples(data["test"])


def test_fit_trains_a_model_when_none_is_given(data, tmp_path):
    det = CDMDetector(net="tiny", steps=3, T=20, progress=False, model_out=tmp_path / "m.pt").fit(data["train"][:64])
    assert det.model_.T == 20 and (tmp_path / "m.pt").exists()
    assert det.score_samples(data["test"][:5]).shape == (5,)
    big = CDMDetector(net="tiny", steps=2, T=20, image_size=16, resize=True, progress=False).fit(data["train"][:32])
    assert big.model_.image_shape == (1, 16, 16) and big.score_samples(data["test"][:3]).shape == (3,)


# Golden numbers: a fixed tiny model on fixed data. A change in any CDM arithmetic,
# the cumsum, Eq. 10, the profile levels or the density models moves these.
GOLDEN = {
    "loglik": {"letters": 0.748215811965812, "noise": 0.0},
    "posterior": {"letters": 0.0077510683760683725, "noise": 0.8907166666666667},
    "profile": {"letters": 0.764145299145299, "noise": 1.0},
    "complexity": {"letters": 0.661965811965812, "noise": 0.0},
}


def golden_values(data):
    out = {}
    for name in GOLDEN:
        det = make_detector(name, model=fixed_model(seed=11), progress=False, n_levels=10).fit(data["train"])
        s_id = det.score_samples(data["test"])
        out[name] = {k: auroc(s_id, det.score_samples(data[k])) for k in ("letters", "noise")}
    return out


def test_golden_aurocs(data):
    got = golden_values(data)
    for name, per in GOLDEN.items():
        for k, want in per.items():
            assert got[name][k] == pytest.approx(want, abs=1e-6), (name, k, got[name][k])


def test_fused_score_is_fitted_on_id_only_and_ignores_training_order(data):
    clear_cache()
    model = fixed_model(seed=5)
    perm = np.random.default_rng(0).permutation(len(data["train"]))
    a = make_detector("fused", model=model, progress=False).fit(data["train"])
    b = make_detector("fused", model=model, progress=False).fit(data["train"][torch.from_numpy(perm)])
    for k in ("test", "letters", "noise"):
        np.testing.assert_allclose(a.score_samples(data[k]), b.score_samples(data[k]), rtol=1e-12, atol=1e-12)
    # an image's score does not depend on what else is scored (nothing transductive)
    alone = a.score_samples(data["test"][:5])
    np.testing.assert_allclose(alone, a.score_samples(data["test"])[:5], rtol=1e-12)


def test_fused_is_fishers_rule_on_the_components_p_values(data):
    """Each part is log((#training scores <= s) + 1) / (n + 1)) inside the training range."""
    clear_cache()
    det = make_detector("fused", model=fixed_model(seed=6), progress=False).fit(data["train"])
    rep = det.representation(data["test"])
    parts = det.scorer_.parts(rep)
    assert set(parts) == {"profile", "complexity", "features"}
    from oodkit.detectors.scores import FeatureGauss

    assert isinstance(det.scorer_.components["features"], FeatureGauss)  # the Mahalanobis score (since format 2)
    np.testing.assert_allclose(sum(parts.values()), det.score_samples(data["test"]))
    comp = det.scorer_.components["complexity"]
    train_c = comp.score(det.representation(data["train"]))
    s = comp.score(rep)
    inside = s >= train_c.min()
    want = np.log(((train_c[None, :] <= s[:, None]).sum(1) + 1) / (len(train_c) + 1))
    np.testing.assert_allclose(parts["complexity"][inside], want[inside])
    assert (parts["complexity"][~inside] < np.log(1 / (len(train_c) + 1)) + 1e-12).all()


def test_gaussian_feature_reference_scores_are_out_of_sample():
    """The Mahalanobis part of fused is calibrated on training scores of images its
    Gaussian did not see: a threshold at their 10 % quantile rejects about 10 % of fresh
    ID images (in-sample distances are optimistic by O(d/n): 12-13 % at n = 300, d = 32)."""
    from types import SimpleNamespace

    from oodkit.detectors.scores import FeatureGauss

    rates = []
    for seed in range(20):
        r = np.random.default_rng(seed)
        train = SimpleNamespace(features=torch.from_numpy(r.normal(size=(300, 32))))
        fresh = SimpleNamespace(features=torch.from_numpy(r.normal(size=(3000, 32))))
        g = FeatureGauss().fit(train)
        rates.append((g.score(fresh) < np.quantile(g.train_score(train), 0.10)).mean())
    assert abs(np.mean(rates) - 0.10) < 0.01, np.mean(rates)
    # the folds follow the content, not the order
    perm = np.random.default_rng(0).permutation(300)
    shuffled = SimpleNamespace(features=train.features[torch.from_numpy(perm)])
    np.testing.assert_allclose(FeatureGauss().fit(shuffled).train_score(shuffled), g.train_score(train)[perm])


def test_gaussian_feature_leave_one_out_matches_refitting_without_each_image():
    """The closed form (Sherman-Morrison at the fitted shrinkage) against refitting the
    shrunk Gaussian on the other n - 1 images, one image at a time."""
    from types import SimpleNamespace

    from oodkit.detectors.scores import FeatureGauss

    x = np.random.default_rng(1).normal(size=(40, 5))
    rep = SimpleNamespace(features=torch.from_numpy(x))
    g = FeatureGauss().fit(rep)
    z, a = x, g.cov_.shrinkage_
    mu = np.trace(np.cov(z.T, bias=True)) / 5  # the shrinkage target, held at the full fit's
    want = []
    for i in range(40):
        rest = np.delete(z, i, 0)
        cov = (1 - a) * np.cov(rest.T, bias=True) + a * mu * np.eye(5)
        d = z[i] - rest.mean(0)
        want.append(-d @ np.linalg.solve(cov, d))
    np.testing.assert_allclose(g.train_score(rep), want, rtol=1e-10)


def test_gaussian_feature_score_is_the_mahalanobis_distance_of_the_raw_features():
    """Closed form: features drawn from N(mu, Sigma) score -(x - mu)^T Sigma^-1 (x - mu),
    the squared Mahalanobis distance. The features are not L2-normalised first: their
    norm carries signal (normalising the decoder output loses up to 0.013 AUROC on the
    far-OOD pairs, benchmarks/results/feature_layers.md)."""
    from types import SimpleNamespace

    from oodkit.detectors.scores import FeatureGauss

    r = np.random.default_rng(3)
    mu = np.array([3.0, -1.0, 0.5, 2.0])
    a = r.normal(size=(4, 4))
    sigma = a @ a.T + 0.5 * np.eye(4)
    train = r.multivariate_normal(mu, sigma, size=200_000)
    x = r.multivariate_normal(mu, 4 * sigma, size=50)
    g = FeatureGauss().fit(SimpleNamespace(features=torch.from_numpy(train)))
    d = x - mu
    want = -np.einsum("ij,ij->i", d @ np.linalg.inv(sigma), d)
    np.testing.assert_allclose(g.score(SimpleNamespace(features=torch.from_numpy(x))), want, rtol=0.02, atol=0.05)


def test_expected_t_of_an_image_does_not_depend_on_the_rows_scored_beside_it():
    """A chunked run scores images in other row groups than a whole one; a matrix-vector
    product's BLAS kernel changes with the number of rows (1e-13 apart was seen), a
    row-wise sum does not."""
    from oodkit.detectors.scores import ExpectedT

    class Rep:
        def __init__(self, logp):
            self.logp = logp

        def log_posterior(self):
            return self.logp

    z = np.random.default_rng(0).normal(size=(300, 1002)) * 3
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    whole = ExpectedT().score(Rep(logp))
    parts = np.concatenate([ExpectedT().score(Rep(logp[i:i + n])) for i, n in ((0, 1), (1, 7), (8, 20), (28, 272))])
    assert np.array_equal(whole, parts)


def test_calibrate_converts_the_held_out_images_once(monkeypatch):
    """calibrate scored the images and then asked which the network had seen, and each
    step converted the whole array again (as_images + conform: twice the time and memory
    for a large calibration set)."""
    import oodkit.detectors.base as base

    x = load_dataset("digits-0to4", "test").images
    det = make_detector("loglik", model=fixed_model(seed=0)).fit(as_images(x[:200]))
    calls = []
    real = base.as_images
    monkeypatch.setattr(base, "as_images", lambda *a, **k: calls.append(1) or real(*a, **k))
    det.calibrate(x[200:], tpr=0.9)
    assert len(calls) == 1
    expected = det.score_samples(x[200:])
    np.testing.assert_array_equal(det.calibration_scores_, np.sort(expected))
