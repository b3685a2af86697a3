"""A CDM with a class head: trained on labels beside the noise-level loss, read from the
same forward pass, fine-tuned from an unlabelled checkpoint, and refused where it does
not fit."""
import numpy as np
import pytest
import torch

from oodkit import CDM, NoiseSchedule, TrainConfig, fit_model, load_model, unet_from_preset
from oodkit.checkpoint import CheckpointError, load_checkpoint
from oodkit.data import load_dataset, to_float
from oodkit.representation import represent

FAST = dict(batch_size=32, warmup=5, save_every=0)


def _model(num_labels=3, **kw):
    torch.manual_seed(0)
    s = NoiseSchedule.uniform(20)
    return CDM(unet_from_preset("tiny", in_channels=1, image_size=8, num_classes=s.num_classes), s,
               num_labels=num_labels, **kw)


@pytest.fixture(scope="module")
def digits():
    ds = load_dataset("digits-0to4", "train")
    return ds.tensor(), torch.as_tensor(ds.labels)


def test_class_logits_come_from_the_features_of_the_one_forward_pass(digits):
    model = _model().eval()
    x = to_float(digits[0][:10])
    calls = []
    model.net.register_forward_hook(lambda *a: calls.append(1))
    rep = represent(model, x, progress=False)
    assert len(calls) == 1  # batch of 10 < 256: one network call for logits, features and classes
    assert rep.class_logits.shape == (10, 3) and rep.class_logits.dtype == torch.float32
    want = rep.features @ model.label_head.weight.T + model.label_head.bias
    torch.testing.assert_close(rep.class_logits, want.detach())


def test_a_model_without_class_head_has_no_class_logits(digits):
    model = _model(num_labels=0).eval()
    rep = represent(model, to_float(digits[0][:4]), progress=False)
    assert rep.class_logits is None and not model.needs_labels
    with pytest.raises(ValueError, match="no class head"):
        model.class_logits(rep.features)


def test_loss_adds_the_weighted_class_cross_entropy_on_clean_images(digits):
    model = _model(label_weight=0.5, noise_batch=4)
    x, y = to_float(digits[0][:12]), digits[1][:12] % 3
    loss, parts = model.loss(x, generator=torch.Generator().manual_seed(1), y=y)
    # the noise-level part alone, on the first noise_batch images with the same noise draws
    plain = _model(num_labels=0)
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("label_head")})
    noise, _ = plain.loss(x[:4], generator=torch.Generator().manual_seed(1))
    _, feats = model.net(x, return_features=True)
    ce = torch.nn.functional.cross_entropy(model.label_head(feats), y)
    torch.testing.assert_close(loss, noise + 0.5 * ce)
    torch.testing.assert_close(parts["label_ce"], ce.detach())
    with pytest.raises(ValueError, match="pass labels"):
        model.loss(x)


@pytest.mark.slow
def test_class_head_learns_the_labels_and_round_trips_through_a_checkpoint(digits, tmp_path):
    x, y = digits
    keep = y < 3
    m = fit_model(x[keep], net="tiny", T=20, config=TrainConfig(steps=120, lr=3e-3, ema_decay=0.9, **FAST),
                  out=tmp_path / "c.pt", labels=y[keep], model_options={"num_labels": "auto"}, progress=False)
    assert m.num_labels == 3
    back = load_model(tmp_path / "c.pt")
    rep = represent(back, x[keep], progress=False)
    acc = (rep.class_logits.argmax(1) == y[keep]).float().mean().item()
    assert acc > 0.8, acc  # chance is 1/3
    assert load_checkpoint(tmp_path / "c.pt")["model"]["num_labels"] == 3


def test_labels_outside_the_head_are_refused_before_training(digits):
    x, y = digits
    from oodkit import train

    with pytest.raises(ValueError, match="label 4 is outside the class head's 3 classes"):
        train(_model(), x, TrainConfig(steps=1, **FAST), labels=y, progress=False)


def test_init_starts_from_a_checkpoint_and_leaves_the_new_head_fresh(digits, tmp_path):
    x, y = digits
    cfg = TrainConfig(steps=3, **FAST)
    fit_model(x, net="tiny", T=20, config=cfg, out=tmp_path / "base.pt", progress=False)
    base = load_model(tmp_path / "base.pt")
    # zero steps of fine-tuning are not allowed; one step at a tiny rate barely moves the weights
    tuned = fit_model(x, net="tiny", T=20, config=TrainConfig(steps=1, lr=1e-12, warmup=0, batch_size=32, save_every=0),
                      out=tmp_path / "ft.pt", labels=y, model_options={"num_labels": "auto"},
                      init=tmp_path / "base.pt", progress=False)
    for k, v in base.state_dict().items():
        torch.testing.assert_close(tuned.state_dict()[k], v, atol=1e-6, rtol=0)
    info = load_checkpoint(tmp_path / "ft.pt")["data"]["init"]
    assert info["fresh"] == ["label_head.weight", "label_head.bias"] and info["steps"] == 3
    assert info["sha256"] == base.checkpoint_sha256


def test_init_refuses_another_network_or_kind(digits, tmp_path):
    x, _ = digits
    fit_model(x, net="tiny", T=20, config=TrainConfig(steps=1, **FAST), out=tmp_path / "base.pt", progress=False)
    with pytest.raises(CheckpointError, match="--init: .* has network ch=16"):
        fit_model(x, net="compact", T=20, config=TrainConfig(steps=1, **FAST), out=tmp_path / "o.pt",
                  init=tmp_path / "base.pt", progress=False)
    with pytest.raises(CheckpointError, match="another noise schedule or T"):
        fit_model(x, net="tiny", T=20, schedule="cosine", config=TrainConfig(steps=1, **FAST), out=tmp_path / "o.pt",
                  init=tmp_path / "base.pt", progress=False)
    with pytest.raises(CheckpointError, match="is a cdm model, this run trains a ddpm"):
        fit_model(x, kind="ddpm", net="tiny", T=20, config=TrainConfig(steps=1, **FAST), out=tmp_path / "o.pt",
                  init=tmp_path / "base.pt", progress=False)


def test_resume_refuses_a_checkpoint_with_another_head(digits, tmp_path):
    x, y = digits
    fit_model(x, net="tiny", T=20, config=TrainConfig(steps=2, **FAST), out=tmp_path / "p.pt", progress=False)
    with pytest.raises(CheckpointError, match=r"--resume: .*p.pt has model label_weight=None, this run asks 0.1"):
        fit_model(x, net="tiny", T=20, config=TrainConfig(steps=4, **FAST), out=tmp_path / "p.pt", resume=True,
                  labels=y, model_options={"num_labels": "auto"}, progress=False)


def test_cli_class_head_flags(tmp_path):
    from click.testing import CliRunner

    from oodkit.cli import main

    r = CliRunner().invoke(main, ["train", "--data", "digits-0to4", "--net", "tiny", "-T", "10", "--steps", "2",
                                  "--batch-size", "16", "--class-head", "--noise-batch", "4", "--quiet",
                                  "--out", str(tmp_path / "c.pt")])
    assert r.exit_code == 0, r.output
    ck = load_checkpoint(tmp_path / "c.pt")
    assert ck["model"]["num_labels"] == 5 and ck["model"]["noise_batch"] == 4
    bad = [(["--kind", "ddpm", "--class-head"], "for cdm models"),
           (["--class-head", "--noise-batch", "32"], "larger than --batch-size"),
           (["--label-weight", "0.5"], "add --class-head"),
           (["--noise-batch", "4"], "add --class-head"),
           (["--init", str(tmp_path / "none.pt")], "no checkpoint at"),
           (["--init", str(tmp_path / "c.pt"), "--resume"], "pass one of them")]
    for extra, msg in bad:
        r = CliRunner().invoke(main, ["train", "--data", "digits-0to4", "--net", "tiny", "-T", "10", "--steps", "2",
                                      "--batch-size", "16", "--quiet", "--out", str(tmp_path / "x.pt"), *extra])
        assert r.exit_code != 0 and msg in r.output, (extra, r.output)
        assert "Traceback" not in r.output


def test_msp_and_energy_run_on_a_labelled_cdm_from_its_one_pass(digits):
    from oodkit import CDMDetector
    from oodkit.detectors import make_detector

    model = _model(num_labels=5).eval()
    with torch.no_grad():
        model.label_head.weight.normal_()
    x = digits[0][:40]
    rep = represent(model, x, progress=False)
    logits = rep.class_logits.double()
    want = {"msp": torch.softmax(logits, 1).max(1).values, "energy": torch.logsumexp(logits, 1)}
    for name in ("msp", "energy"):
        det = make_detector(name, model=model, progress=False)
        assert isinstance(det, CDMDetector)
        det.fit_representation(rep)
        np.testing.assert_allclose(det.score_representation(rep), want[name].numpy(), rtol=1e-12)
        np.testing.assert_allclose(det.score_samples(x), want[name].numpy(), rtol=1e-12)  # cached pass, same numbers
    with pytest.raises(ValueError, match="no class head: msp and energy need one"):
        make_detector("msp", model=_model(num_labels=0).eval(), progress=False).fit(x)


def test_msp_on_a_checkpoint_path_picks_the_detector_by_the_model_kind(digits, tmp_path):
    from oodkit import CDMDetector, DiffusionDetector
    from oodkit.detectors import make_detector

    x, y = digits
    fit_model(x, net="tiny", T=10, config=TrainConfig(steps=1, **FAST), out=tmp_path / "c.pt", labels=y,
              model_options={"num_labels": "auto"}, progress=False)
    fit_model(x, kind="joint", net="tiny", T=10, config=TrainConfig(steps=1, **FAST), out=tmp_path / "j.pt",
              labels=y, progress=False)
    assert isinstance(make_detector("msp", model=str(tmp_path / "c.pt"), progress=False), CDMDetector)
    assert isinstance(make_detector("energy", model=tmp_path / "j.pt", progress=False), DiffusionDetector)


def test_bench_gives_class_scores_to_the_model_with_the_class_head():
    from oodkit.bench import assign_detectors, check_detectors

    plain, labelled = _model(num_labels=0), _model(num_labels=3)
    got = assign_detectors(["msp", "loglik"], [(plain, "a.pt"), (labelled, "b.pt")])
    assert got["msp"][1] == "b.pt" and got["loglik"][1] == "a.pt"
    with pytest.raises(ValueError, match="msp needs a model with a class head.*the pretrained model of the ID set, "
                                         "or one trained here, is a plain CDM"):  # not "would be trained"
        check_detectors(["msp"], model_given=False)
    with pytest.raises(ValueError, match="energy needs a model with a class head.*none of the given"):
        assign_detectors(["energy"], [(plain, "a.pt")])


def test_noise_batch_needs_a_class_head_and_fits_the_batch(digits):
    with pytest.raises(ValueError, match="noise_batch splits a batch .* needs a class head"):
        _model(num_labels=0, noise_batch=4)
    from oodkit import train

    x, y = digits
    with pytest.raises(ValueError, match="noise_batch 40 is larger than the batch of each process \\(32\\)"):
        train(_model(noise_batch=40), x, TrainConfig(steps=1, **FAST), labels=y % 3, progress=False)


def test_detector_file_round_trip_of_class_scores(digits, tmp_path):
    from oodkit import load_detector
    from oodkit.detectors import make_detector

    x, y = digits
    fit_model(x, net="tiny", T=10, config=TrainConfig(steps=2, **FAST), out=tmp_path / "c.pt", labels=y,
              model_options={"num_labels": "auto"}, progress=False)
    det = make_detector("energy", model=str(tmp_path / "c.pt"), progress=False).fit(x[:50])
    det.save(tmp_path / "d.npz")
    back = load_detector(tmp_path / "d.npz")
    s = back.score_samples(x[50:80])
    np.testing.assert_array_equal(s, det.score_samples(x[50:80]))
    logits = represent(back.model_, x[50:80], progress=False).class_logits.double()
    np.testing.assert_allclose(s, torch.logsumexp(logits, 1).numpy(), rtol=1e-12)


def test_a_resumed_fine_tune_keeps_its_init_record(digits, tmp_path):
    x, y = digits
    fit_model(x, net="tiny", T=10, config=TrainConfig(steps=1, **FAST), out=tmp_path / "base.pt", progress=False)
    kw = dict(net="tiny", T=10, out=tmp_path / "ft.pt", labels=y, model_options={"num_labels": "auto"}, progress=False)
    fit_model(x, config=TrainConfig(steps=1, **FAST), init=tmp_path / "base.pt", **kw)
    fit_model(x, config=TrainConfig(steps=2, **FAST), resume=True, **kw)
    ck = load_checkpoint(tmp_path / "ft.pt")
    assert ck["train_state"]["step"] == 2 and ck["data"]["init"]["path"] == str(tmp_path / "base.pt")


def test_init_from_a_labelled_checkpoint_needs_the_class_head(digits, tmp_path):
    x, y = digits
    fit_model(x, net="tiny", T=10, config=TrainConfig(steps=1, **FAST), out=tmp_path / "lab.pt", labels=y,
              model_options={"num_labels": "auto"}, progress=False)
    with pytest.raises(CheckpointError, match="has a class head and this model has none: add --class-head"):
        fit_model(x, net="tiny", T=10, config=TrainConfig(steps=1, **FAST), out=tmp_path / "o.pt",
                  init=tmp_path / "lab.pt", progress=False)


def test_fused_reads_a_labelled_models_features_by_knn_and_an_unlabelled_ones_by_gaussian(digits):
    """A class head clusters the features by class: one Gaussian's centre lies between the
    clusters, so a labelled model's fused score reads them by the kNN distance instead."""
    from oodkit import CDMDetector
    from oodkit.detectors.scores import Complexity, FeatureGauss, FeatureKNN, Fused, Profile, profile_levels

    x = digits[0][:80]
    for num_labels, feat in ((3, FeatureKNN(5)), (0, FeatureGauss())):
        model = _model(num_labels=num_labels).eval()
        rep, rep_test = represent(model, x[:60], progress=False), represent(model, x[60:], progress=False)
        det = CDMDetector(model, score="fused", progress=False).fit_representation(rep)
        key = "features-knn" if num_labels else "features"
        assert list(det.scorer_.components) == ["profile", "complexity", key]
        assert type(det.scorer_.components[key]) is type(feat)
        levels = profile_levels(model.T, model.schedule.alpha_bar.numpy(), 20)
        want = Fused({"profile": Profile(levels, "knn", 5, seed=0), "complexity": Complexity(), key: feat}).fit(rep)
        np.testing.assert_array_equal(det.score_representation(rep_test), want.score(rep_test))


def test_a_fused_file_fitted_with_other_feature_components_is_refused(digits, tmp_path):
    from oodkit import CDMDetector, load_detector
    from oodkit.detectors.persist import DetectorFileError
    from oodkit.detectors.scores import FeatureGauss

    x, y = digits
    fit_model(x, net="tiny", T=10, config=TrainConfig(steps=2, **FAST), out=tmp_path / "c.pt", labels=y,
              model_options={"num_labels": "auto"}, progress=False)
    det = CDMDetector(str(tmp_path / "c.pt"), score="fused", progress=False).fit(x[:50])
    # as a file written before labelled models read their features by kNN: a Gaussian component
    comps = det.scorer_.components
    comps["features"] = FeatureGauss().fit(represent(det.model_, x[:50], progress=False))
    det.scorer_.ref_["features"] = det.scorer_.ref_.pop("features-knn")
    del comps["features-knn"]
    det.save(tmp_path / "old.npz")
    with pytest.raises(DetectorFileError, match="old.npz: detector .*fused.* fitted on the components "
                                                "profile, complexity, features; this model's fused reads "
                                                "profile, complexity, features-knn \\(features: Mahalanobis, "
                                                "features-knn: kNN, upright: the rotation head\\): refit it with `oodkit fit`"):
        load_detector(tmp_path / "old.npz")
    fresh = CDMDetector(str(tmp_path / "c.pt"), score="fused", progress=False).fit(x[:50])
    fresh.save(tmp_path / "new.npz")
    np.testing.assert_array_equal(load_detector(tmp_path / "new.npz").score_samples(x[50:70]),
                                  fresh.score_samples(x[50:70]))


def test_a_labelled_cdm_runs_the_class_head_scores_by_default(digits, tmp_path):
    from oodkit.bench import assign_detectors
    from oodkit.detectors import default_detectors
    from oodkit.scoring import score_dataset

    plain, labelled = _model(num_labels=0), _model(num_labels=3)
    assert "msp" not in assign_detectors(None, [(plain, "a.pt")])
    got = assign_detectors(None, [(plain, "a.pt"), (labelled, "b.pt")])
    assert got["msp"][1] == got["energy"][1] == "b.pt" and got["fused"][1] == "a.pt"
    assert default_detectors(["cdm"]) == [n for n in default_detectors(["cdm"], labelled=["cdm"])
                                          if n not in ("msp", "energy")]
    x, y = digits
    fit_model(x, net="tiny", T=10, config=TrainConfig(steps=2, **FAST), out=tmp_path / "c.pt", labels=y,
              model_options={"num_labels": "auto"}, progress=False)
    frame, _ = score_dataset(str(tmp_path / "c.pt"), "digits-5to9", fit_data="digits-0to4", progress=False)
    logits = represent(load_model(tmp_path / "c.pt"), load_dataset("digits-5to9", "test").tensor(),
                       progress=False).class_logits.double()
    np.testing.assert_allclose(frame["energy"].to_numpy(), torch.logsumexp(logits, 1).numpy(), rtol=1e-12)
    assert {"msp", "fused", "loglik"} <= set(frame.columns)
