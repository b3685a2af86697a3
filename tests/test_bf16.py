"""bf16 autocast keeps the likelihood arithmetic in float32 or wider: bits/dim and the
Theorem 3.1 denoiser (double backprop) agree with float32."""
import torch

from oodkit.data import as_images, load_dataset, to_float
from oodkit.training import bf16_supported

from .test_detectors import fixed_model


def test_bf16_autocast_agrees_with_fp32_on_bpd_and_the_denoiser():
    m = fixed_model()
    x = to_float(as_images(load_dataset("digits-0to4", "test").images)[:32])
    t = torch.full((32,), 20)
    b32, e32 = m.bpd(x), m.eps(x, t)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert m.logits(x).dtype == torch.float32
        b16, e16 = m.bpd(x), m.eps(x, t)
        loss, _ = m.train().loss(x, generator=torch.Generator().manual_seed(0))
    m.eval()
    assert b16.dtype == torch.float64 and (b32 - b16).abs().max() < 1e-3
    assert (e32 - e16).norm() / e32.norm() < 1e-2
    loss.backward()  # the double backprop runs under autocast
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in m.parameters())


def test_bf16_is_used_only_where_the_hardware_runs_it(monkeypatch):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx512_bf16": False, "amx_bf16": False})
    assert not bf16_supported("cpu")
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx512_bf16": True})
    assert bf16_supported("cpu")
