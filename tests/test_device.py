"""The device rule: the CLI resolves --device once (CUDA if available, else CPU); the
library runs a model where it is and never moves a model it was given."""
import numpy as np
import pytest
import torch

from oodkit.data import as_images, load_dataset
from oodkit.detectors import make_detector
from oodkit.representation import clear_cache, represent

from .test_detectors import fixed_model


def test_cli_default_device_resolution(monkeypatch):
    from oodkit.cli import UserError, _device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _device(None) == torch.device("cpu")
    with pytest.raises(UserError, match="no CUDA GPU"):
        _device("cuda")
    with pytest.raises(UserError, match="is not a device"):
        _device("gpu0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert _device(None) == torch.device("cuda")


def test_the_library_never_moves_a_users_model(monkeypatch):
    clear_cache()
    model = fixed_model()
    x = as_images(load_dataset("digits-0to4", "train").images)[:64]
    moved = []
    for m in (model, model.net):
        monkeypatch.setattr(m, "to", lambda *a, **k: moved.append(a) or m)
    represent(model, x, progress=False)
    det = make_detector("fused", model=model, progress=False).fit(x)
    det.score_samples(x[:8])
    assert moved == [] and next(model.parameters()).device.type == "cpu"
    # asking a detector for another device works on a copy, not on the user's model
    det = make_detector("loglik", model=model, progress=False, device="cpu").fit(x)
    assert det.model_ is model  # same device: no copy either


def _tf32_settings():
    from oodkit.representation import precision_knobs

    return [getattr(obj, attr) for obj, attr, _ in precision_knobs()]


def _full_fp32_settings():
    from oodkit.representation import precision_knobs

    return [value for _, _, value in precision_knobs()]


def test_the_forward_pass_runs_without_tf32_and_restores_the_flags(monkeypatch):
    """TF32 convolutions (PyTorch's CUDA default) moved bits/dim by 1.5e-4 on an H200
    (benchmarks/results/gpu_check.json); the likelihood's forward pass runs in full fp32."""
    clear_cache()
    model = fixed_model()
    seen = []
    real = model.logits

    def spy(*a, **k):
        seen.append(_tf32_settings())
        return real(*a, **k)

    monkeypatch.setattr(model, "logits", spy)
    before = _tf32_settings()
    x = as_images(load_dataset("digits-0to4", "train").images)[:8]
    represent(model, x, progress=False)
    assert seen and all(s == _full_fp32_settings() for s in seen)
    assert before != _full_fp32_settings()  # PyTorch's default: TF32 convolutions
    assert _tf32_settings() == before


def test_precision_settings_are_restored_after_an_error():
    from oodkit.representation import full_fp32

    before = _tf32_settings()
    with pytest.raises(RuntimeError, match="boom"):
        with full_fp32():
            raise RuntimeError("boom")
    assert _tf32_settings() == before


@pytest.mark.skipif(not hasattr(torch.backends, "fp32_precision"), reason="PyTorch < 2.9: no fp32_precision API")
def test_scoring_works_for_a_user_of_the_new_precision_api():
    """Once fp32_precision is set, PyTorch refuses reads of the legacy allow_tf32 flags."""
    clear_cache()
    saved = torch.backends.fp32_precision
    torch.backends.fp32_precision = "tf32"
    try:
        rep = represent(fixed_model(), as_images(load_dataset("digits-0to4", "train").images)[:8], progress=False)
        assert np.isfinite(rep.bpd).all()
        assert torch.backends.fp32_precision == "tf32"
    finally:
        torch.backends.fp32_precision = saved
