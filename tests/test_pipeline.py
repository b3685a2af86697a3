"""One flow: ``oodkit bench``, ``oodkit fit`` + ``score --detector`` and the Python API
score the same images identically, also for a pair of different image sizes."""
import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from oodkit import CDM, NoiseSchedule, UNet
from oodkit.checkpoint import save_checkpoint
from oodkit.data import as_images, conform, load_dataset
from oodkit.detectors import TABLE, make_detector
from oodkit.pipeline import Flow, align

from .test_detectors import fixed_model

NAMES = ["loglik", "typicality", "profile", "fused"]


@pytest.fixture(scope="module")
def sizes(tmp_path_factory):
    """ID images at 12x12 (digits brought up), an OOD set at 8x8 (letters), a 12x12 CDM."""
    d = tmp_path_factory.mktemp("pairs")
    up = conform(as_images(load_dataset("digits-0to4", "train").images), 12, 1).numpy().transpose(0, 2, 3, 1)
    np.savez(d / "big_train.npz", images=up[:200])
    np.savez(d / "big_test.npz", images=up[200:300])
    np.savez(d / "small_test.npz", images=as_images(load_dataset("letters", "test").images).numpy()
             .transpose(0, 2, 3, 1)[:80])
    s = NoiseSchedule.uniform(50)
    net = UNet(ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), dropout=0.0, in_channels=1,
               image_size=12, num_classes=s.num_classes)
    net.load_state_dict(fixed_model(seed=5).net.state_dict())
    save_checkpoint(d / "m.pt", CDM(net, s))
    return d


def test_bench_fit_score_and_the_api_give_identical_scores_on_a_pair_of_sizes(sizes, tmp_path, monkeypatch):
    from oodkit.cli import main

    monkeypatch.chdir(tmp_path)
    run = lambda *a: CliRunner().invoke(main, [str(x) for x in a], catch_exceptions=False)
    common = ("--data-root", sizes, "--quiet")
    r = run("bench", "big-vs-small", "--model", sizes / "m.pt", "--detectors", ",".join(NAMES), "--bootstrap", "0",
            "--output-dir", "b", *common)
    assert r.exit_code == 0, r.output
    bench = np.load(tmp_path / "b" / "scores.npz")
    # the README's recipe: fit with the pair's alignment, which the file carries to score
    r = run("fit", "--model", sizes / "m.pt", "--data", "big", "--detectors", ",".join(NAMES), "--align-px", "8",
            "--out", "det.npz", *common)
    assert r.exit_code == 0, r.output
    for data, key in (("big", "big@8px"), ("small", "small")):
        r = run("score", "--detector", "det.npz", "--data", data, "--out", f"{data}.csv", *common)
        assert r.exit_code == 0, r.output
        csv = pd.read_csv(tmp_path / f"{data}.csv")
        for n in NAMES:
            np.testing.assert_allclose(csv[n], bench[f"{n}/{key}"], rtol=1e-12, atol=0, err_msg=f"{n} {data}")
    # the Python API: conform through the pair's smaller size, then fit and score
    model = __import__("oodkit").load_model(sizes / "m.pt")
    train = as_images(load_dataset("big", "train", sizes).images)
    for n in NAMES:
        det = make_detector(n, model=model).fit(conform(train, 12, 1, ref_size=8))
        for data, key in (("big", "big@8px"), ("small", "small")):
            x = conform(as_images(load_dataset(data, "test", sizes).images), 12, 1, ref_size=8)
            np.testing.assert_array_equal(det.score_samples(x), bench[f"{n}/{key}"], err_msg=f"{n} {data}")


def test_a_flow_runs_the_network_once_per_image_set_whatever_the_detectors():
    model = fixed_model(seed=3)
    calls = []
    model.net.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    train = as_images(load_dataset("digits-0to4", "train").images)[:120]
    test = as_images(load_dataset("letters", "test").images)[:40]
    flow = Flow(batch_size=1000)
    names = [n for n, d in TABLE.items() if d.family == "cdm" and not d.labelled and not d.rotation]
    dets = flow.fit({n: model for n in names}, align(train, model))
    x = align(test, model)
    flow.score(dets, x)
    flow.score(dets, x)
    assert sum(calls) == len(train) + len(test)


def test_a_detector_without_id_statistics_scores_without_fit_and_one_that_has_them_refuses():
    model = fixed_model(seed=3)
    x = as_images(load_dataset("letters", "test").images)[:20]
    det = make_detector("loglik", model=model).prepare()
    np.testing.assert_allclose(det.score_samples(x), model.log_prob(x.float() * 2 / 255 - 1).numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="fits ID statistics: call fit"):
        make_detector("profile", model=model).prepare()


@pytest.mark.parametrize("channels", [1, 3])
def test_the_memory_layout_of_the_images_does_not_change_a_score(channels):
    """The same pixels under different strides (a grey channel added by numpy, a
    channels-last tensor) score bit for bit the same: convolution kernels pick their
    algorithm by stride, so the network must always see one layout. Found when a folder
    chunk and the whole folder scored 1e-6 apart."""
    from oodkit import CDM, NoiseSchedule, unet_from_preset
    from oodkit.representation import represent

    from .tiny import seeded

    s = NoiseSchedule.uniform(20)
    model = seeded(CDM(unet_from_preset("tiny", in_channels=channels, image_size=8, num_classes=s.num_classes), s), 4)
    x = torch.randint(0, 256, (37, channels, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    # numpy's added grey axis / channels-last: other strides, the same values
    odd = x.as_strided(x.shape, (64, 1, 8, 1)) if channels == 1 else x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    assert odd.stride() != x.stride() and torch.equal(odd, x)
    a, b = (represent(model, v, batch_size=16, cache=None) for v in (x, odd))
    assert torch.equal(a.logits, b.logits) and torch.equal(a.features, b.features)


@pytest.mark.parametrize("channels", [1, 3])
def test_the_network_sees_exact_strides_in_either_layout(channels):
    """The detection pass on the CPU runs channels-last (benchmarks/README.md, *Memory
    layout*): every input reaches the first convolution with exactly the strides of the
    layout it runs in, whatever strides it came with. torch's own .contiguous() keeps a
    size-1 channel's stride, which let a 1-channel subset of a data set score 2e-4 apart
    from the same pixels in a fresh tensor."""
    from oodkit.nn.unet import _in_layout

    x = torch.rand(4, channels, 5, 6)
    layouts = [x, x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2), x.as_strided(x.shape, (30, 1, 6, 1))]
    row_major, nhwc = (30 * channels, 30, 6, 1), (30 * channels, 1, 6 * channels, channels)
    for v in layouts[: 3 if channels == 1 else 2]:
        assert torch.equal(v, x)
        assert _in_layout(v, False).stride() == row_major and torch.equal(_in_layout(v, False), x)
        assert _in_layout(v, True).stride() == nhwc and torch.equal(_in_layout(v, True), x)


def test_the_detection_pass_runs_channels_last_on_the_cpu_and_gives_the_weights_back():
    from oodkit import load_model
    from oodkit.representation import represent

    model = load_model("cifar10")
    strides = {k: p.stride() for k, p in model.named_parameters()}
    seen = []
    model.net.conv_in.register_forward_hook(lambda m, i, o: seen.append((i[0].stride(), m.weight.stride())))
    represent(model, torch.zeros(2, 3, 32, 32, dtype=torch.uint8), cache=None)
    (x_strides, w_strides), = seen
    assert x_strides == (3 * 32 * 32, 1, 32 * 3, 3) and w_strides == (27, 1, 9, 3)  # NHWC input and weights
    assert {k: p.stride() for k, p in model.named_parameters()} == strides  # and row-major again after


def test_a_bf16_pass_on_the_cpu_runs_row_major():
    """In bf16 the CPU ran the grey-scale shipped nets 1.3-2.1x faster row-major than
    channels-last (the CIFAR-10 nets 8 % slower): benchmarks/README.md, *Throughput*."""
    from oodkit import load_model
    from oodkit.representation import represent

    model = load_model("fashionmnist")
    seen = []
    model.net.conv_in.register_forward_hook(lambda m, i, o: seen.append(i[0].stride()))
    represent(model, torch.zeros(2, 1, 28, 28, dtype=torch.uint8), cache=None, precision="bf16")
    assert seen == [(28 * 28, 28 * 28, 28, 1)]  # 16 rows (short batches are padded), row-major


def test_an_image_scores_the_same_in_a_short_batch_as_in_a_full_one():
    """An image alone in the last batch scores bit for bit as it does inside a full one:
    oneDNN picks another convolution algorithm for batches of fewer than about 16 rows
    (seen with 1 and 2 threads), which moved the shipped fashionmnist's logits by 5e-4
    nats (of ~1e3). Found when batch 7 and a shuffle scored images 2e-5 apart."""
    from oodkit import load_model
    from oodkit.representation import represent

    model = load_model("fashionmnist")
    x = torch.randint(0, 256, (19, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    whole = represent(model, x, batch_size=256, cache=None)
    for bs in (16, 7, 1):  # a last batch of 3 rows; batches of 7 and 5; single images
        part = represent(model, x, batch_size=bs, cache=None)
        assert torch.equal(part.logits, whole.logits), bs
        assert torch.equal(part.features, whole.features), bs


def test_bf16_passes_round_the_network_body_only_and_are_kept_apart(tiny_models, tiny_digits):
    """``precision="bf16"`` changes the numbers (it is not silently ignored) by little: the
    logits leave the network in float32 and Eq. 10 is taken in float64, so the ranking of
    images barely moves; a cached fp32 pass is never handed out for a bf16 one."""
    from scipy.stats import spearmanr

    from oodkit.representation import FeatureCache, represent

    model, x = tiny_models["cdm"], tiny_digits[:120]
    cache = FeatureCache()
    full = represent(model, x, 32, cache=cache)
    assert represent(model, x, 32, cache=cache) is full
    half = represent(model, x, 32, cache=cache, precision="bf16")
    assert half is not full and half.logits.dtype == torch.float32
    assert not torch.equal(half.logits, full.logits)
    assert np.abs(half.bpd - full.bpd).max() < 0.05
    assert spearmanr(half.loglik, full.loglik)[0] > 0.99
    assert torch.equal(Flow(32).representation(model, x).logits, full.logits)  # the default is full fp32
    with pytest.raises(ValueError, match="precision must be one of fp32, tf32, bf16, got 'fp16'"):
        represent(model, x, 32, cache=None, precision="fp16")


def test_a_detector_fits_and_scores_in_its_own_arithmetic(tiny_models, tiny_digits):
    """A detector's ``precision`` is the arithmetic of all its passes: ``fit`` and
    ``score_samples`` run in it, a representation made in another is refused at fit (the
    statistics would claim an arithmetic they were not made in), and changing it after fit
    asks for a new fit. A flow hands its precision to the detectors it makes."""
    from sklearn.exceptions import NotFittedError

    from oodkit.detectors import CDMDetector
    from oodkit.representation import represent

    model, x = tiny_models["cdm"], tiny_digits[:120]
    det = CDMDetector(model, "loglik", precision="bf16", progress=False).fit(x[:80])
    half = represent(model, x[80:], 32, cache=None, precision="bf16")
    np.testing.assert_array_equal(det.score_samples(x[80:]), half.loglik)
    assert half.precision == "bf16" and represent(model, x[80:], cache=None, precision="tf32").precision == "fp32"
    with pytest.raises(ValueError, match="ran in fp32 and this detector.s precision .bf16. runs in bf16 on cpu"):
        CDMDetector(model, "loglik", precision="bf16").fit_representation(represent(model, x[:80], cache=None))
    det.set_params(precision="fp32")
    with pytest.raises(NotFittedError, match="precision changed since fit"):
        det.score_samples(x[80:])
    flow = Flow(32, precision="bf16")
    fitted = flow.fit({"loglik": model}, x[:80])["loglik"]
    assert fitted.precision == "bf16"
    np.testing.assert_array_equal(flow.score({"loglik": fitted}, x[80:])["loglik"], half.loglik)


def test_a_detector_file_fitted_with_an_alignment_scores_the_same_in_python(tiny_models, tmp_path, monkeypatch):
    """``oodkit fit --align-px`` records the alignment in the file and ``score --detector``
    applies it; ``load_detector(file).score_samples`` ignored it (the audit: 190 nats
    apart, every calibration image called OOD). Both families: a CDM's detectors read the
    representation pass, a DDPM's run their own."""
    from oodkit import load_detector
    from oodkit.cli import main

    save_checkpoint(tmp_path / "ddpm.pt", tiny_models["ddpm"])
    monkeypatch.chdir(tmp_path)
    run = lambda *a: CliRunner().invoke(main, [str(x) for x in a], catch_exceptions=False)
    x = load_dataset("digits-0to4", "test").images
    for model, dets in (("digits-0to4", "fused,loglik"), ("ddpm.pt", "recon")):
        r = run("fit", "--model", model, "--data", "digits-0to4", "--detectors", dets, "--align-px", "4",
                "--calibrate-on", "digits-0to4", "--out", "d.npz", "--quiet", "--device", "cpu")
        assert r.exit_code == 0, r.output
        r = run("score", "--detector", "d.npz", "--data", "digits-0to4", "--out", "s.csv", "--quiet", "--device", "cpu")
        assert r.exit_code == 0, r.output
        csv = pd.read_csv("s.csv")
        for name in dets.split(","):
            det = load_detector("d.npz", name=name, device="cpu")
            np.testing.assert_array_equal(det.score_samples(x), csv[name], err_msg=name)
            np.testing.assert_array_equal(det.predict(x) == -1, csv[f"{name}_is_ood"], err_msg=name)
        (tmp_path / "s.csv").unlink()
