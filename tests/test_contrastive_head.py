"""A label-free contrastive projection on the CDM (issue 19, the SimCLR-style candidate):
NT-Xent against a brute-force reading, the views' geometry, the loss learns and ignores
batch order, scoring stays one forward pass and never touches the projection, detectors
round-trip, and checkpoints record it. Eq. 10 on the analytic Gaussian with this head is
in test_rotation_head.py (both label-free heads)."""
import copy
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from oodkit import CDM, NoiseSchedule, TrainConfig, load_model, train, unet_from_preset
from oodkit.checkpoint import CheckpointError, load_checkpoint, load_initial_weights, save_checkpoint
from oodkit.cli import main
from oodkit.data import as_images, load_dataset, to_float
from oodkit.detectors import make_detector
from oodkit.detectors.persist import load_detectors, save_detectors
from oodkit.models import has_contrastive_head
from oodkit.models.simclr import nt_xent, random_views

from .test_rotation_head import fit_and_score_in_one_pass



def _model(**kw):
    torch.manual_seed(0)
    s = NoiseSchedule.uniform(20)
    return CDM(unet_from_preset("tiny", in_channels=1, image_size=8, num_classes=s.num_classes), s,
               contrastive=16, **kw)


@pytest.fixture(scope="module")
def digits():
    return as_images(load_dataset("digits-0to4", "train").images)


def _nt_xent_by_hand(z1, z2, tau):
    """Row by row, in float64: each view against its twin among the other 2B - 1."""
    z = torch.cat([z1, z2]).double()
    z = z / z.norm(dim=1, keepdim=True)
    n, b = z.shape[0], z1.shape[0]
    total = 0.0
    for i in range(n):
        twin = (i + b) % n
        others = [j for j in range(n) if j != i]
        logits = torch.stack([z[i] @ z[j] / tau for j in others])
        total += -(z[i] @ z[twin] / tau - torch.logsumexp(logits, 0)).item()
    return total / n


def test_nt_xent_matches_its_definition_and_ignores_the_order_of_the_pairs():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    assert nt_xent(z1, z2, 0.3).item() == pytest.approx(_nt_xent_by_hand(z1, z2, 0.3), rel=1e-5)
    perm = torch.randperm(6, generator=g)
    assert nt_xent(z1[perm], z2[perm], 0.3).item() == pytest.approx(nt_xent(z1, z2, 0.3).item(), rel=1e-6)
    assert nt_xent(z2, z1, 0.3).item() == pytest.approx(nt_xent(z1, z2, 0.3).item(), rel=1e-6)
    same = torch.ones(6, 5)  # rows that carry nothing: chance among 2B - 1
    assert nt_xent(same, same).item() == pytest.approx(math.log(11), rel=1e-6)
    with pytest.raises(ValueError, match="same shape with B >= 2"):
        nt_xent(z1, z2[:5])


def test_views_are_crops_mirrors_and_jitter_drawn_from_the_generator():
    x = torch.rand(8, 3, 10, 10, generator=torch.Generator().manual_seed(1)) * 2 - 1
    v = random_views(x, torch.Generator().manual_seed(2))
    assert v.shape == x.shape and v.dtype == x.dtype and v.min() >= -1 and v.max() <= 1
    torch.testing.assert_close(v, random_views(x, torch.Generator().manual_seed(2)), rtol=0, atol=0)
    assert not torch.equal(v, random_views(x, torch.Generator().manual_seed(3)))
    # the whole image, no jitter, no grey: each view is the image or its mirror, and both occur
    whole = random_views(x, torch.Generator().manual_seed(4), crop=(1.0, 1.0), jitter=0.0, grey=0.0)
    mirrored = [bool(torch.allclose(w, xi.flip(-1), atol=1e-5)) for w, xi in zip(whole, x)]
    upright = [bool(torch.allclose(w, xi, atol=1e-5)) for w, xi in zip(whole, x)]
    assert all(m != u for m, u in zip(mirrored, upright)) and any(mirrored) and any(upright)
    # a quarter-area crop of a left-to-right ramp spans about half of its range
    ramp = torch.linspace(-1, 1, 64).expand(4, 1, 64, 64).contiguous()
    crop = random_views(ramp, torch.Generator().manual_seed(5), crop=(0.25, 0.25), jitter=0.0)
    span = crop[:, 0, 0, -1] - crop[:, 0, 0, 0]
    np.testing.assert_allclose(span.abs().numpy(), 1.0, atol=0.05)


def test_contrastive_loss_learns_and_ignores_batch_order(digits):
    model = _model(noise_batch=4, contrastive_weight=1.0)
    x = to_float(digits[:32])
    v1, v2 = random_views(x, torch.Generator().manual_seed(0)), random_views(x, torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = model.view_loss(v1, v2).item()
        perm = torch.randperm(32, generator=torch.Generator().manual_seed(2))
        assert model.view_loss(v1[perm], v2[perm]).item() == pytest.approx(before, rel=1e-5)
    assert before == pytest.approx(math.log(63), rel=0.1)  # untrained: near chance among 63 views
    trained = train(copy.deepcopy(model), digits, TrainConfig(steps=60, batch_size=32, lr=2e-3, warmup=5,
                                                              save_every=0, amp=False))
    with torch.no_grad():
        after = trained.view_loss(v1, v2).item()
    assert after < before - 0.5, (before, after)


def test_loss_is_the_noise_loss_plus_the_weighted_nt_xent(digits):
    model = _model(noise_batch=4, contrastive_weight=0.3)
    x = to_float(digits[:8])
    loss, parts = model.loss(x, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)  # the same draws in the same order: noise first, then the views
    noise, _ = model._noise_loss(x[:4], g)
    con = model.contrastive_loss(x, g)
    torch.testing.assert_close(loss, noise + 0.3 * con)
    assert set(parts) == {"ce", "mse", "nt_xent"}
    with pytest.raises(ValueError, match="temperature positive"):
        CDM(model.net, NoiseSchedule.uniform(20), contrastive=8, temperature=0.0)
    with pytest.raises(ValueError, match="no contrastive projection"):
        CDM(model.net, NoiseSchedule.uniform(20)).view_loss(x, x)


def test_scoring_is_one_pass_without_the_projection_and_round_trips(digits, tmp_path):
    model = _model().eval()
    assert has_contrastive_head(model)
    model.projection.register_forward_hook(lambda m, i, o: pytest.fail("the projection ran at scoring"))
    test, dets, scores = fit_and_score_in_one_pass(model, digits, ("fused", "features", "loglik"))
    # read as a plain CDM: no fusion of its features beat the plain model's on the choice split
    assert list(dets["fused"].scorer_.components) == ["profile", "complexity", "features"]
    save_checkpoint(tmp_path / "m.pt", model)
    assert load_checkpoint(tmp_path / "m.pt")["model"]["contrastive"] == 16
    back_model = load_model(tmp_path / "m.pt")
    assert back_model.contrastive == 16 and back_model.temperature == model.temperature
    saved = {n: make_detector(n, model=str(tmp_path / "m.pt")).fit(digits) for n in dets}
    for n in dets:
        np.testing.assert_allclose(saved[n].score_samples(test), scores[n], rtol=1e-6)
    save_detectors(tmp_path / "d.npz", saved)
    back = load_detectors(tmp_path / "d.npz")
    for n in dets:
        np.testing.assert_array_equal(back[n].score_samples(test), saved[n].score_samples(test))


def test_a_checkpoint_without_the_projection_loads_as_before():
    model = load_model("fashionmnist")
    assert model.contrastive == 0 and not has_contrastive_head(model) and not hasattr(model, "projection")


def test_cli_contrastive_flags(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = lambda *a: CliRunner().invoke(main, [str(x) for x in a])
    base = ["train", "--data", "digits-0to4", "--net", "tiny", "-T", "10", "--steps", "2", "--batch-size", "8",
            "--quiet", "--save-every", "0"]
    r = run(*base, "--contrastive-head", "--contrastive-weight", "0.2", "--temperature", "0.5", "--noise-batch", "4",
            "--out", "con.pt")
    assert r.exit_code == 0, r.output
    ck = load_checkpoint(tmp_path / "con.pt")["model"]
    assert (ck["contrastive"], ck["contrastive_weight"], ck["temperature"], ck["noise_batch"]) == (64, 0.2, 0.5, 4)
    for flag in ("--contrastive-weight", "--temperature"):
        r = run(*base, flag, "0.2", "--out", "x.pt")
        assert r.exit_code == 2 and f"{flag} sets the contrastive head's training: add --contrastive-head" in r.output
    r = run(*base, "--batch-size", "1", "--contrastive-head", "--out", "x.pt")  # the last --batch-size counts
    assert r.exit_code == 2 and "use --batch-size 2 or more" in r.output and not (tmp_path / "x.pt").exists()
    r = run(*base, "--temperature", "0", "--contrastive-head", "--out", "x.pt")
    assert r.exit_code == 2 and "--temperature" in r.output
    r = run(*base, "--init", "con.pt", "--out", "y.pt")
    assert r.exit_code == 2 and "has a contrastive head and this model has none: add --contrastive-head" in r.output
    r = run(*base, "--kind", "ddpm", "--contrastive-head", "--out", "z.pt")
    assert r.exit_code == 2 and "are for cdm models" in r.output
    r = run(*base, "--init", "con.pt", "--contrastive-head", "--out", "w.pt")  # a fine-tune keeps the projection
    assert r.exit_code == 0, r.output
    fresh = CDM(unet_from_preset("tiny", in_channels=1, image_size=8, num_classes=12), NoiseSchedule.uniform(10),
                contrastive=64)
    assert load_initial_weights(fresh, tmp_path / "con.pt")["fresh"] == []
    with pytest.raises(CheckpointError, match="contrastive head"):
        load_initial_weights(CDM(unet_from_preset("tiny", in_channels=1, image_size=8, num_classes=12),
                                 NoiseSchedule.uniform(10)), tmp_path / "con.pt")
