import math

import pytest
import torch

from oodkit import NoiseSchedule


@pytest.mark.parametrize("make", [NoiseSchedule.linear, NoiseSchedule.uniform, NoiseSchedule.cosine])
def test_endpoints_and_monotone(make):
    s = make(T=100)
    assert s.alpha_bar.dtype == torch.float64 and s.alpha_bar.shape == (102,)
    assert s.alpha_bar[0] == 1 and s.alpha_bar[-1] == 0 and s.T == 100 and s.num_classes == 102
    assert (s.alpha_bar[1:] <= s.alpha_bar[:-1]).all()
    assert 0 < s.alpha_bar[100] < 1  # level T is not the pure-noise class


def test_linear_matches_ddpm_product():
    s = NoiseSchedule.linear(T=1000)
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    assert s.alpha_bar[1] == 1 - 1e-4
    assert math.isclose(s.alpha_bar[1000].item(), torch.prod(1 - betas).item(), rel_tol=1e-12)


def test_uniform_noise_std_is_linear_in_t():
    s = NoiseSchedule.uniform(T=9)
    torch.testing.assert_close(s.sigma, torch.arange(11, dtype=torch.float64) / 10, rtol=0, atol=1e-15)


def test_q_sample_and_coefficients():
    s = NoiseSchedule.uniform(T=3)  # sigma = t/4
    x0 = torch.ones(4, 1, 2, 2)
    eps = torch.full((4, 1, 2, 2), 2.0)
    xt = s.q_sample(x0, torch.tensor([0, 1, 2, 4]), eps)
    for i, t in enumerate([0, 1, 2, 4]):
        sig = t / 4
        assert torch.allclose(xt[i], torch.full((1, 2, 2), math.sqrt(1 - sig**2) + 2 * sig))
    with pytest.raises(ValueError, match="levels must lie"):
        s.q_sample(x0, torch.tensor([0, 1, 2, 5]), eps)
    with pytest.raises(ValueError, match="differ in shape"):
        s.q_sample(x0, 1, eps[:2])


def test_round_trip_and_validation():
    s = NoiseSchedule.cosine(T=50)
    s2 = NoiseSchedule.from_dict(s.to_dict())
    assert s2 == s and s2.name == "cosine"
    with pytest.raises(ValueError, match="start at 1"):
        NoiseSchedule(torch.tensor([0.9, 0.5, 0.0]))
    with pytest.raises(ValueError, match="non-increasing"):
        NoiseSchedule(torch.tensor([1.0, 0.2, 0.5, 0.0]))
    with pytest.raises(ValueError, match="positive integer"):
        NoiseSchedule.uniform(0)
    with pytest.raises(ValueError, match="unknown schedule"):
        NoiseSchedule.from_name("sigmoid")
