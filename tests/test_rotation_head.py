"""A label-free rotation head on the CDM (issue 19): its loss learns and ignores batch
order, the noise-level classifier stays exact (Eq. 10 on the analytic Gaussian), scoring
stays one forward pass, detectors round-trip, and checkpoints without the head load and
score as before."""
import copy

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from oodkit import CDM, NoiseSchedule, TrainConfig, load_model, train, unet_from_preset
from oodkit.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from oodkit.cli import main
from oodkit.data import as_images, load_dataset, to_float
from oodkit.detectors import make_detector
from oodkit.detectors.persist import load_detectors, save_detectors
from oodkit.models import has_rotation_head
from oodkit.representation import clear_cache, represent

from .gaussian import AnalyticGaussianNet, gaussian_params, sample_gaussian
from .test_cdm_exact import analytic_log_density


def _model(**kw):
    torch.manual_seed(0)
    s = NoiseSchedule.uniform(20)
    return CDM(unet_from_preset("tiny", in_channels=1, image_size=8, num_classes=s.num_classes), s, rotations=4, **kw)


@pytest.fixture(scope="module")
def digits():
    return as_images(load_dataset("digits-0to4", "train").images)


def test_rotation_loss_learns_and_ignores_batch_order(digits):
    model = _model(noise_batch=4, rotation_weight=1.0)
    x = to_float(digits[:64])
    with torch.no_grad():
        before = model.rotation_loss(x)[0].item()
        perm = torch.randperm(64, generator=torch.Generator().manual_seed(1))
        assert model.rotation_loss(x[perm])[0].item() == pytest.approx(before, rel=1e-6)
    assert before == pytest.approx(np.log(4), rel=0.2)  # untrained: about chance among 4 turns
    trained = train(copy.deepcopy(model), digits, TrainConfig(steps=60, batch_size=32, lr=2e-3, warmup=5,
                                                              save_every=0, amp=False))
    with torch.no_grad():
        after = trained.rotation_loss(x)[0].item()
    assert after < 0.5 * before, (before, after)


def test_loss_is_the_noise_loss_plus_the_weighted_rotation_loss(digits):
    model = _model(noise_batch=4, rotation_weight=0.3)
    x = to_float(digits[:8])
    loss, parts = model.loss(x, generator=torch.Generator().manual_seed(0))
    noise, _ = model._noise_loss(x[:4], torch.Generator().manual_seed(0))
    rot, feats = model.rotation_loss(x)
    torch.testing.assert_close(loss, noise + 0.3 * rot)
    assert set(parts) == {"ce", "mse", "rot_ce"}
    with pytest.raises(ValueError, match="rotations must be 0 .* or 4"):
        CDM(model.net, NoiseSchedule.uniform(20), rotations=3)


class _GaussianWithFeatures(AnalyticGaussianNet):
    """The exact Gaussian classifier, also returning pooled features (for a head)."""

    feature_channels = 1

    def forward(self, x, return_features=False):
        raw = super().forward(x)
        return (raw, x.mean(dim=(1, 2, 3))[:, None]) if return_features else raw


@pytest.mark.parametrize("head", [{"rotations": 4}, {"contrastive": 4}], ids=["rotation", "contrastive"])
def test_eq10_stays_exact_with_a_label_free_head(head):
    sched = NoiseSchedule.uniform(1000)
    mu, var = gaussian_params((1, 4, 4))
    model = CDM(_GaussianWithFeatures(mu, var, sched), sched, image_shape=(1, 4, 4), **head)
    x = sample_gaussian(mu, var, 5)
    torch.testing.assert_close(model.log_prob(x), analytic_log_density(x, mu, var), rtol=0, atol=1e-8 * 16)
    if "rotations" in head:
        assert model.rotation_logits(model.logits(x, return_features=True)[1]).shape == (5, 4)


def fit_and_score_in_one_pass(model, train_images, names):
    """Fit detectors ``names`` on ``train_images`` and score 50 letters with each, checking
    that the network saw every image once in all: ``(test, detectors, scores)``."""
    clear_cache()
    calls = []
    hook = model.net.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    test = as_images(load_dataset("letters", "test").images)[:50]
    dets = {n: make_detector(n, model=model).fit(train_images) for n in names}
    scores = {n: d.score_samples(test) for n, d in dets.items()}
    hook.remove()
    assert sum(calls) == len(train_images) + len(test)  # one pass per image set, for all of them
    return test, dets, scores


def test_upright_and_fused_read_one_pass_and_round_trip(digits, tmp_path):
    model = _model().eval()
    assert has_rotation_head(model)
    test, dets, scores = fit_and_score_in_one_pass(model, digits, ("upright", "fused", "features"))
    rep = represent(model, test)
    want = torch.log_softmax(model.rotation_head(rep.features).double(), 1)[:, 0].detach().numpy()
    np.testing.assert_allclose(scores["upright"], want, rtol=1e-6)
    # the rule chosen on held-out Fashion-MNIST classes for a rotation head
    assert list(dets["fused"].scorer_.components) == ["profile", "features-knn", "upright"]
    save_checkpoint(tmp_path / "m.pt", model)
    saved = {n: make_detector(n, model=str(tmp_path / "m.pt")).fit(digits) for n in dets}
    save_detectors(tmp_path / "d.npz", saved)
    back = load_detectors(tmp_path / "d.npz")
    for n in dets:
        np.testing.assert_array_equal(back[n].score_samples(test), saved[n].score_samples(test))
    assert load_model(tmp_path / "m.pt").rotations == 4  # recorded in the checkpoint
    assert load_checkpoint(tmp_path / "m.pt")["model"]["rotations"] == 4


def test_a_checkpoint_without_the_head_loads_and_scores_as_before():
    """The shipped fashionmnist predates the head: same Eq. 10 numbers as the code before
    it (golden values computed at commit 6f575bf), and fused keeps its Gaussian reading of
    the features."""
    model = load_model("fashionmnist")
    assert model.rotations == 0 and not has_rotation_head(model)
    x = torch.from_numpy(np.random.default_rng(5).integers(0, 256, (6, 1, 28, 28), dtype=np.uint8)).float()
    got = model.log_prob(x * (2 / 255) - 1).numpy()
    golden = [-954.6504106962175, -929.0284558531542, -964.8823051624629, -964.1531307301063,
              -1014.0524240375601, -1003.9092599600804]
    # float32 logits of ~1,000 nats: the thread count moves the last bit (6e-5 seen with 1 vs 2 threads)
    np.testing.assert_allclose(got, golden, rtol=0, atol=1e-3)
    det = make_detector("fused", model=model)
    assert list(det._make_scorer(model).components) == ["profile", "complexity", "features"]


def test_cli_rotation_flags(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = lambda *a: CliRunner().invoke(main, [str(x) for x in a])
    base = ["train", "--data", "digits-0to4", "--net", "tiny", "-T", "10", "--steps", "2", "--batch-size", "8",
            "--quiet", "--save-every", "0"]
    r = run(*base, "--rotation-head", "--rotation-weight", "0.2", "--noise-batch", "4", "--out", "rot.pt")
    assert r.exit_code == 0, r.output
    ck = load_checkpoint(tmp_path / "rot.pt")
    assert ck["model"]["rotations"] == 4 and ck["model"]["rotation_weight"] == 0.2 and ck["model"]["noise_batch"] == 4
    r = run(*base, "--rotation-weight", "0.2", "--out", "x.pt")
    assert r.exit_code == 2 and "--rotation-weight sets the rotation head's training: add --rotation-head" in r.output
    r = run(*base, "--noise-batch", "4", "--out", "x.pt")
    assert r.exit_code == 2 and "add --class-head, --rotation-head or --contrastive-head" in r.output
    r = run(*base, "--init", "rot.pt", "--out", "y.pt")
    assert r.exit_code == 2 and "has a rotation head and this model has none: add --rotation-head" in r.output
    r = run(*base, "--kind", "ddpm", "--rotation-head", "--out", "z.pt")
    assert r.exit_code == 2 and "are for cdm models" in r.output
    with pytest.raises(CheckpointError, match="rotation head"):
        from oodkit.checkpoint import load_initial_weights

        load_initial_weights(CDM(unet_from_preset("tiny", in_channels=1, image_size=8, num_classes=12),
                                 NoiseSchedule.uniform(10)), tmp_path / "rot.pt")
