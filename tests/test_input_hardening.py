"""Silent wrong answers found by the API audit: image layout and value range in
``as_images``, and checkpoint loading/saving edge cases. Every refusal is one line."""
import builtins
import os
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from oodkit import CDM, CheckpointError, NoiseSchedule, load_model, save_checkpoint, unet_from_preset
from oodkit.checkpoint import load_checkpoint
from oodkit.data import ImageInputError, as_images

RNG = np.random.default_rng(0)


def u8(*shape):
    return RNG.integers(0, 256, shape, dtype=np.uint8)


def one_line_error(exc_type, fn, match):
    with pytest.raises(exc_type, match=match) as e:
        fn()
    assert "\n" not in str(e.value)
    return str(e.value)


# -- A1: unbatched images ------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(8, 8), (28, 28)])
def test_2d_image_is_refused_with_batch_axis_hint(shape):
    one_line_error(ImageInputError, lambda: as_images(u8(*shape)), r"x\[None\]")


@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3), (3, 32, 32), (3, 8, 8)])
def test_3d_single_image_is_refused_as_ambiguous(shape):
    msg = one_line_error(ImageInputError, lambda: as_images(u8(*shape)), "ambiguous")
    assert "x[None]" in msg


def test_3d_batches_that_cannot_be_one_image_stay_grey_batches():
    assert as_images(u8(4, 8, 8)).shape == (4, 1, 8, 8)
    assert as_images(u8(5, 28, 28)).shape == (5, 1, 28, 28)
    assert as_images(u8(1, 28, 28)).shape == (1, 1, 28, 28)  # one grey image either way
    assert as_images(u8(3, 4, 4)).shape == (3, 1, 4, 4)  # too small to look like an image
    x = u8(3, 32, 32)
    assert as_images(x[None]).shape == (1, 3, 32, 32)  # the fixes the message names
    assert as_images(x[:, None]).shape == (3, 1, 32, 32)


# -- A2: 4-D layout ------------------------------------------------------------------------


def test_channels_last_with_square_side_equal_to_a_channel_count():
    x = u8(2, 4, 4, 3)  # 4x4 RGB, channels-last
    got = as_images(x)
    assert got.shape == (2, 3, 4, 4)
    assert torch.equal(got, torch.from_numpy(x).permute(0, 3, 1, 2))
    assert as_images(u8(2, 8, 8, 4)).shape == (2, 3, 8, 8)  # RGBA channels-last, alpha dropped
    assert as_images(u8(2, 4, 8, 8)).shape == (2, 3, 8, 8)  # RGBA channels-first


@pytest.mark.parametrize("shape", [(2, 3, 3, 3), (2, 1, 4, 1), (2, 3, 5, 3), (2, 4, 4, 4)])
def test_ambiguous_numpy_layouts_are_refused(shape):
    msg = one_line_error(ImageInputError, lambda: as_images(u8(*shape)), "ambiguous")
    assert 'layout="nhwc"' in msg and "(0, 3, 1, 2)" in msg


def test_layout_keyword_and_tensors_resolve_ambiguity():
    x = u8(2, 3, 3, 3)
    nhwc = as_images(x, layout="nhwc")
    assert torch.equal(nhwc, torch.from_numpy(x).permute(0, 3, 1, 2))
    assert torch.equal(as_images(x, layout="nchw"), torch.from_numpy(x))
    # a torch tensor is (N, C, H, W) when its shape allows both: as_images is idempotent
    t = torch.from_numpy(np.transpose(x, (0, 3, 1, 2)).copy())
    assert torch.equal(as_images(t), nhwc)
    assert torch.equal(as_images(nhwc), nhwc)
    with pytest.raises(ImageInputError, match="layout"):
        as_images(x, layout="chw")
    with pytest.raises(ImageInputError, match="channels"):
        as_images(u8(2, 8, 8, 3), layout="nchw")  # 8 channels


# -- A3: float value range -----------------------------------------------------------------


@pytest.mark.parametrize("hi", [1.0, 0.5, 0.2])
def test_floats_in_0_1_are_refused(hi):
    x = RNG.uniform(0, hi, (2, 1, 8, 8)).astype(np.float32)
    msg = one_line_error(ImageInputError, lambda: as_images(x), r"\[-1, 1\]")
    assert "x * 2 - 1" in msg and "uint8" in msg
    t = torch.from_numpy(x)
    one_line_error(ImageInputError, lambda: as_images(t), r"x \* 2 - 1")


def test_value_range_keyword():
    x01 = RNG.uniform(0, 1, (2, 1, 8, 8)).astype(np.float32)
    torch.testing.assert_close(as_images(x01, value_range=(0, 1)), torch.from_numpy(x01) * 2 - 1)
    x255 = (x01 * 255).astype(np.float64)
    torch.testing.assert_close(as_images(x255, value_range=(0, 255)), torch.from_numpy(x01) * 2 - 1)
    bright = RNG.uniform(0, 1, (2, 1, 8, 8)).astype(np.float32)  # [-1, 1] data that happen to be >= 0
    torch.testing.assert_close(as_images(bright, value_range=(-1, 1)), torch.from_numpy(bright))
    signed = RNG.uniform(-1, 1, (2, 1, 8, 8)).astype(np.float32)
    torch.testing.assert_close(as_images(signed), torch.from_numpy(signed))
    one_line_error(ImageInputError, lambda: as_images(signed, value_range=(0, 1)), r"outside .*\[0, 1\]")
    one_line_error(ImageInputError, lambda: as_images(x255, value_range=(0, 1)), r"outside .*\[0, 1\]")
    one_line_error(ImageInputError, lambda: as_images(x01, value_range=(0, 2)), "value_range")
    # uint8 pixels are 0..255 whatever value_range says they are not
    one_line_error(ImageInputError, lambda: as_images(u8(2, 1, 8, 8), value_range=(0, 1)), "value_range")
    assert as_images(u8(2, 1, 8, 8), value_range=(0, 255)).dtype == torch.uint8


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("value_range", [None, (0, 1), (-1, 1)])
def test_non_finite_floats_are_refused(bad, value_range):
    x = RNG.uniform(0, 1, (2, 1, 8, 8)).astype(np.float32)
    x[1, 0, 3, 3] = bad
    one_line_error(ImageInputError, lambda: as_images(x, value_range=value_range), "NaN or inf")


# -- B: checkpoints ------------------------------------------------------------------------


def tiny_model(seed=0):
    torch.manual_seed(seed)
    s = NoiseSchedule.linear(20)
    net = unet_from_preset("tiny", in_channels=1, image_size=8, num_classes=s.num_classes)
    return CDM(net, s)


def _edit(path, out, **changes):
    ckpt = torch.load(path, weights_only=True)
    ckpt.update(changes)
    torch.save(ckpt, out)
    return out


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_b1_nan_weights_are_refused(tmp_path, bad):
    path = save_checkpoint(tmp_path / "m.pt", tiny_model())
    ckpt = torch.load(path, weights_only=True)
    key = next(k for k, v in ckpt["state_dict"].items() if v.is_floating_point() and v.numel() > 1)
    ckpt["state_dict"][key][0] = bad
    torch.save(ckpt, tmp_path / "diverged.pt")
    msg = one_line_error(CheckpointError, lambda: load_model(tmp_path / "diverged.pt"), "NaN/inf")
    assert f"(key {key})" in msg and "diverged or the file is corrupt" in msg


def test_b2_unreadable_file_is_not_called_truncated(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "m.pt", tiny_model())
    real_open = builtins.open

    def guarded_open(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and Path(file) == path:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded_open)
    msg = one_line_error(CheckpointError, lambda: load_model(path), "permission denied")
    assert msg == f"cannot read {path}: permission denied"


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads mode-000 files")
def test_b2_chmod_000(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", tiny_model())
    path.chmod(0)
    try:
        one_line_error(CheckpointError, lambda: load_model(path), "permission denied")
    finally:
        path.chmod(0o644)


@pytest.mark.parametrize("version", ["1", 0, -5, True, 1.0, None])
def test_b3_invalid_format_versions(tmp_path, version):
    path = save_checkpoint(tmp_path / "m.pt", tiny_model())
    bad = _edit(path, tmp_path / "v.pt", format_version=version)
    msg = one_line_error(CheckpointError, lambda: load_checkpoint(bad), "not a valid format version")
    assert "upgrade" not in msg
    assert load_checkpoint(path)["format_version"] == 1


def test_b4_shape_mismatch_names_the_key_and_both_shapes(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", tiny_model())
    ckpt = torch.load(path, weights_only=True)
    sd = ckpt["state_dict"]
    key = next(k for k, v in sd.items() if v.ndim == 4)
    want = tuple(sd[key].shape)
    sd[key] = sd[key][..., :1]
    torch.save(ckpt, tmp_path / "bad.pt")
    msg = one_line_error(CheckpointError, lambda: load_model(tmp_path / "bad.pt"), "does not match its model")
    assert key in msg and str(tuple(sd[key].shape)) in msg and str(want) in msg
    # a missing key is named too
    del sd[key]
    torch.save(ckpt, tmp_path / "missing.pt")
    msg = one_line_error(CheckpointError, lambda: load_model(tmp_path / "missing.pt"), "does not match its model")
    assert key in msg and "missing" in msg


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit])
def test_b5_interrupted_save_leaves_no_temp_file(tmp_path, monkeypatch, exc):
    import oodkit.checkpoint as ck

    def dying_save(obj, f, *a, **k):  # a path, or the buffer a checkpoint is serialised into first
        f.write(b"half a checkpoint") if hasattr(f, "write") else Path(f).write_bytes(b"half a checkpoint")
        raise exc()

    monkeypatch.setattr(ck.torch, "save", dying_save)
    with pytest.raises(exc):
        save_checkpoint(tmp_path / "m.pt", tiny_model())
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_b5_sigterm_during_save_leaves_no_temp_file(tmp_path):
    script = f"""
import os, signal, torch
import oodkit.checkpoint as ck
from oodkit import CDM, NoiseSchedule, unet_from_preset
s = NoiseSchedule.linear(20)
model = CDM(unet_from_preset("tiny", in_channels=1, image_size=8, num_classes=s.num_classes), s)
real = torch.save
def killed_save(obj, f, *a, **k):
    real(obj, f, *a, **k)
    os.kill(os.getpid(), signal.SIGTERM)
    import time; time.sleep(30)
ck.torch.save = killed_save
ck.save_checkpoint({str(tmp_path / "m.pt")!r}, model)
print("survived")
"""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=900, env=env)
    assert r.returncode == -signal.SIGTERM, r.stderr[-2000:]
    assert "survived" not in r.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_b6_checkpoint_mode_follows_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        path = save_checkpoint(tmp_path / "m.pt", tiny_model())
    finally:
        os.umask(old)
    assert (path.stat().st_mode & 0o777) == (0o666 & ~umask)
    assert zipfile.is_zipfile(path)


# -- the audit of 2026-12-04: library exceptions instead of ImageInputError ------------------


def test_wide_unsigned_pixels_read_like_uint8_and_beyond_255_are_refused():
    x = u8(5, 8, 8)
    assert torch.equal(as_images(x.astype(np.uint16)), as_images(x))
    assert torch.equal(as_images(x.astype(np.uint32)), as_images(x))
    one_line_error(ImageInputError, lambda: as_images(x.astype(np.uint16) * 300), "8-bit pixels 0..255")


@pytest.mark.parametrize("bad,match", [(np.uint8(3), "one number"), (np.array(7), "one number"),
                                       (np.empty((2, 8, 8), dtype=object), "dtype object"),
                                       (np.zeros((2, 8, 8), dtype="U1"), "dtype <U1")])
def test_scalars_and_object_arrays_are_refused_in_one_line(bad, match):
    one_line_error(ImageInputError, lambda: as_images(bad), match)


def test_float_tensors_are_checked_like_arrays_by_the_likelihood_methods():
    """Audit 4: log_prob / bpd / log_prob_levels took any float tensor as it was, so
    ToTensor's [0, 1] images, [0, 255] floats and NaN were scored silently, while the same
    values as a numpy array were refused; an empty batch and a noise level out of range
    were raw torch errors."""
    import torch

    from oodkit import load_model
    from oodkit.data import ImageInputError

    m = load_model("digits-0to4")
    g = torch.Generator().manual_seed(0)
    x01 = torch.rand(2, 1, 8, 8, generator=g)
    for method in (m.log_prob, m.bpd, m.log_prob_levels):
        with pytest.raises(ImageInputError, match="no negative value"):
            method(x01)
        with pytest.raises(ImageInputError, match=r"\[-1, 1\]"):
            method(x01 * 255)
        with pytest.raises(ImageInputError, match="NaN"):
            method(torch.full((2, 1, 8, 8), float("nan")))
        with pytest.raises(ImageInputError, match="no images"):
            method(torch.zeros(0, 1, 8, 8))
    ok = x01 * 2 - 1
    assert torch.equal(m.log_prob(ok), m.log_prob(ok.numpy()))  # the tensor as given, the array converted alike
    with pytest.raises(ValueError, match="noise levels t must be in 0..1001"):
        m.eps(ok, torch.tensor([5000, 1]))


def test_floats_on_the_8_bit_levels_score_as_the_pixels_they_are():
    """``x / 127.5 - 1`` (the usual conversion) differs from oodkit's ``x * (2/255) - 1`` by
    one float32 step in a third of the pixels, which moved ``loglik`` by 3e-4 nats and
    ``fused`` by 9e-5: the same images scored two ways gave two answers."""
    from oodkit.detectors import make_detector
    from oodkit.data import load_dataset

    px = load_dataset("digits-0to4", "test").images[:40]  # (N, 8, 8, 1) uint8
    f32 = px.astype(np.float32)
    ways = [f32 / 127.5 - 1, px / 127.5 - 1, torch.from_numpy(f32) * (2 / 255) - 1, (f32 / 255, (0, 1)),
            (f32, (0, 255)), (px / 255.0, (0, 1))]
    det = make_detector("fused", model="digits-0to4", device="cpu").fit(load_dataset("digits-0to4", "train").images)
    want_images, want = as_images(px), det.score_samples(px)
    for way in ways:
        x, value_range = way if isinstance(way, tuple) else (way, None)
        got = as_images(x, value_range=value_range)
        assert got.dtype == torch.uint8 and torch.equal(got, want_images)
        det.set_params(value_range=value_range)
        np.testing.assert_array_equal(det.score_samples(x), want)
    off = (f32 / 127.5 - 1) * 0.999  # not on the levels: kept as floats
    assert as_images(off).dtype == torch.float32
    model = det.model_  # the model's own methods, given a float tensor or an array of the same floats
    t = torch.from_numpy(f32 / 127.5 - 1).permute(0, 3, 1, 2).contiguous()
    want = model.log_prob(px)
    for x in (t, t.numpy(), torch.from_numpy(f32).permute(0, 3, 1, 2) * (2 / 255) - 1):
        assert torch.equal(model.log_prob(x), want)


# -- audit 7 (the Python API fed careless input) ------------------------------------------


@pytest.fixture(scope="module")
def digits_px():
    from oodkit.data import load_dataset

    return load_dataset("digits-0to4", "test").images[:12]  # (N, 8, 8, 1) uint8


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_copies_of_8_bit_pixels_are_those_pixels(digits_px, dtype):
    """float16 / bfloat16 copies of the 8-bit levels sit up to 4.9e-4 / 3.9e-3 from them
    (a fixed 1e-5 tolerance missed them): `loglik` moved by up to 0.38 nats."""
    want = as_images(digits_px)
    t = torch.from_numpy(digits_px).float()
    for x, value_range in [((t / 127.5 - 1).to(dtype), None), ((t.to(dtype) / 127.5 - 1), None),
                           ((t / 255).to(dtype), (0, 1)), (t.to(dtype), (0, 255))]:
        got = as_images(x, value_range=value_range)
        assert got.dtype == torch.uint8 and torch.equal(got, want), (dtype, value_range)
    model = load_model("digits-0to4")
    lp = model.log_prob(digits_px)
    x = (torch.from_numpy(digits_px).permute(0, 3, 1, 2).float() / 127.5 - 1).to(dtype)
    assert torch.equal(model.log_prob(x), lp)  # the model's own methods read them alike


def test_a_pixel_image_scores_the_same_beside_a_continuous_one(digits_px):
    """Whether floats snapped to their pixels was decided for the whole batch, so one
    continuous image beside them moved their scores (2e-4 nats): decided per image now."""
    from oodkit.detectors import make_detector

    xf = (digits_px.astype(np.float32) / 127.5 - 1)
    other = np.random.default_rng(1).uniform(-1, 1, (1, 8, 8, 1)).astype(np.float32)
    det = make_detector("loglik", model="digits-0to4", device="cpu").prepare()
    alone = det.score_samples(xf)
    np.testing.assert_array_equal(det.score_samples(np.concatenate([xf, other]))[:-1], alone)
    np.testing.assert_array_equal(det.score_samples(np.concatenate([other, xf]))[1:], alone)
    mixed = as_images(np.concatenate([xf, other]))
    assert mixed.dtype == torch.float32 and torch.equal(mixed[-1], torch.from_numpy(other[0]).permute(2, 0, 1))
    model = det.model_
    t = torch.from_numpy(np.concatenate([xf, other])).permute(0, 3, 1, 2).contiguous()
    assert torch.equal(model.log_prob(t)[:-1], model.log_prob(digits_px))


def test_conform_refuses_pixels_it_would_clamp_and_converts_integers(digits_px):
    """`oodkit.conform` clamped every non-uint8 result to [-1, 1]: float 0..255 pixels came
    back nearly black and int64 pixels as 0 / 1, with no word."""
    from oodkit import conform

    t = torch.from_numpy(digits_px).permute(0, 3, 1, 2).contiguous()
    want = conform(t, 16, 1)
    assert torch.equal(conform(t.long(), 16, 1), want)  # integer pixels are pixels
    one_line_error(ImageInputError, lambda: conform(t.float(), 16, 1), r"value_range=\(0, 255\)")
    one_line_error(ImageInputError, lambda: conform(t.float()[:0], 16, 1), "no images")
    one_line_error(ImageInputError, lambda: conform(t, 0, 1), "size")
    one_line_error(ImageInputError, lambda: conform(t, 16, 2), "channels")
    np.testing.assert_array_equal(conform(digits_px, 16, 1), want)  # an array in any layout as_images reads


def test_model_methods_check_and_cast_what_they_are_given(digits_px):
    """noise_posterior checked nothing ([0, 1] data and NaN gave rows); float64 / float16
    tensors off the levels crashed inside the network (double vs float bias); eps on uint8
    said 'only Tensors of floating point dtype can require gradients'."""
    model = load_model("digits-0to4")
    t = torch.from_numpy(digits_px).permute(0, 3, 1, 2).contiguous()
    xf = t.float() / 127.5 - 1
    np_ = model.noise_posterior(t)
    assert torch.equal(model.noise_posterior(xf), np_) and torch.equal(model.noise_posterior(digits_px), np_)
    one_line_error(ValueError, lambda: model.noise_posterior((xf + 1) / 2), r"value_range=\(0, 1\)")
    one_line_error(ValueError, lambda: model.noise_posterior(torch.full((2, 1, 8, 8), float("nan"))), "NaN")
    off = (xf * 0.999).double()  # not on the levels: a float64 tensor of continuous images
    torch.testing.assert_close(model.log_prob(off), model.log_prob(off.float()), rtol=0, atol=1e-3)
    assert model.bpd(off.half()).dtype == torch.float64
    one_line_error(TypeError, lambda: model.eps(t, torch.tensor([5] * len(t))), "float")
    one_line_error(ValueError, lambda: model.eps(torch.full((2, 1, 8, 8), float("nan")), 5), "NaN")
    e64 = model.eps(off, 5)
    assert e64.dtype == torch.float64 and torch.isfinite(e64).all()


@pytest.mark.parametrize("make", [lambda: torch.empty(2, 1, 8, 8, device="meta"),
                                  lambda: torch.zeros(2, 1, 8, 8).to_sparse()])
def test_meta_and_sparse_tensors_are_refused_in_one_line(make):
    from oodkit.detectors import make_detector

    det = make_detector("loglik", model="digits-0to4", device="cpu").prepare()
    one_line_error(ImageInputError, lambda: det.score_samples(make()), "dense")
    one_line_error(ImageInputError, lambda: as_images(make()), "dense")


def test_a_long_double_array_is_read_as_floats():
    px = u8(5, 8, 8)
    assert torch.equal(as_images(px.astype(np.longdouble) / 127.5 - 1), as_images(px))


def test_loading_onto_a_device_this_machine_lacks_is_one_line():
    import oodkit

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    one_line_error(ValueError, lambda: oodkit.load_model("digits-0to4", device="cuda"), "GPU")
    one_line_error(ValueError, lambda: oodkit.load_model("digits-0to4", device="gpu"), "device")
    one_line_error(ValueError, lambda: oodkit.load_detector("digits-0to4", name="loglik", device="cuda"), "GPU")
    one_line_error(TypeError, lambda: oodkit.load_model(None), "load_model")
    one_line_error(TypeError, lambda: oodkit.load_detector(None), "load_detector")


def test_a_one_shot_iterator_is_read_once(digits_px):
    """A generator handed to fit was read twice: a whole training run, then 'got no images'."""
    from oodkit.detectors import make_detector

    det = make_detector("loglik", model="digits-0to4", device="cpu")
    want = det.fit(list(digits_px)).score_samples(digits_px)
    det2 = make_detector("loglik", model="digits-0to4", device="cpu")
    np.testing.assert_array_equal(det2.fit(im for im in digits_px).score_samples(digits_px), want)
    assert make_detector("loglik", model="digits-0to4", device="cpu").fit_predict(im for im in digits_px).shape == (12,)


def test_messages_name_what_was_handed_over(digits_px):
    from oodkit.detectors import make_detector

    det = make_detector("loglik", model="digits-0to4", device="cpu").prepare()
    want = det.score_samples(digits_px)
    np.testing.assert_array_equal(det.score_samples(digits_px.tolist()), want)  # a nested list is an array
    one_line_error(ImageInputError, lambda: det.score_samples([{"image": digits_px[0], "label": 1}]), r"\['image'\]")
    one_line_error(ImageInputError, lambda: det.score_samples([(1, digits_px[0])]), "an int")
    one_line_error(ImageInputError, lambda: det.score_samples([digits_px[0], digits_px[1] / 127.5 - 1]), "dtype")
    from PIL import Image

    one_line_error(ImageInputError, lambda: det.score_samples(Image.fromarray(digits_px[0, ..., 0])), r"\[image\]")
    nchw = digits_px.transpose(0, 3, 1, 2)
    msg = one_line_error(ImageInputError, lambda: as_images(nchw, layout="nhwc"), "layout")
    assert str(nchw.shape) in msg


def test_a_channels_last_float_tensor_gets_the_permute_in_its_message(digits_px):
    model = load_model("digits-0to4")
    nhwc = torch.from_numpy(digits_px).float() / 127.5 - 1
    one_line_error(ValueError, lambda: model.log_prob(nhwc), r"x.permute\(0, 3, 1, 2\)")


def test_every_bfloat16_image_is_read_as_pixels_zero_included():
    x = torch.full((2, 1, 8, 8), -0.5, dtype=torch.bfloat16)
    x[:, :, 0, 0] = 0.0  # 0.0 sits halfway between levels 127 and 128
    assert as_images(x).dtype == torch.uint8


def test_a_half_precision_model_takes_pixels_too(digits_px):
    model = load_model("digits-0to4").to(torch.bfloat16)
    t = torch.from_numpy(digits_px).permute(0, 3, 1, 2).contiguous()
    assert model.log_prob(t).shape == (len(t),)
