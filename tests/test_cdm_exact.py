"""With the exact classifier of Gaussian data, Eq. 10 and Theorem 3.1 are exact."""
import math

import pytest
import torch

from oodkit import CDM, NoiseSchedule
from oodkit.models.cdm import log_std_normal

from .gaussian import AnalyticGaussianNet, gaussian_params, sample_gaussian

SCHEDULES = {"uniform": NoiseSchedule.uniform, "linear": NoiseSchedule.linear}
SHAPES = [(1, 4, 4), (3, 32, 32)]


def make(schedule_name, shape, T=1000):
    sched = SCHEDULES[schedule_name](T)
    mu, var = gaussian_params(shape)
    net = AnalyticGaussianNet(mu, var, sched)
    return CDM(net, sched, image_shape=shape), net, mu, var


def analytic_log_density(x, mu, var):
    x = x.reshape(x.shape[0], -1).double()
    mu, var = mu.reshape(1, -1), var.reshape(1, -1)
    return (-0.5 * ((x - mu) ** 2 / var + var.log() + math.log(2 * math.pi))).sum(1)


@pytest.mark.parametrize("schedule_name", SCHEDULES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_log_prob_is_analytic_density(schedule_name, shape):
    model, net, mu, var = make(schedule_name, shape)
    x = sample_gaussian(mu, var, 5)
    got = model.log_prob(x)
    want = analytic_log_density(x, mu, var)
    assert got.dtype == torch.float64 and got.shape == (5,)
    # float64 cumsum over T+2 entries of a few thousand nats
    torch.testing.assert_close(got, want, rtol=0, atol=1e-8 * shape[0] * shape[1] * shape[2])


@pytest.mark.parametrize("schedule_name", SCHEDULES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_log_prob_levels_match_every_level(schedule_name, shape):
    model, net, mu, var = make(schedule_name, shape)
    x = sample_gaussian(mu, var, 3, seed=7)
    got = model.log_prob_levels(x)
    want = net.log_p_levels(x)
    assert got.shape == (3, model.T + 2)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-8 * x[0].numel())
    # the pure-noise class is the standard normal exactly
    torch.testing.assert_close(got[:, -1], log_std_normal(x), rtol=0, atol=1e-9 * x[0].numel())


@pytest.mark.parametrize("schedule_name", SCHEDULES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_eps_is_posterior_mean(schedule_name, shape):
    model, net, mu, var = make(schedule_name, shape)
    x0 = sample_gaussian(mu, var, 4, seed=3)
    t = torch.tensor([1, 17, 500, model.T])
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    x_t = model.schedule.q_sample(x0, t, eps)
    with torch.no_grad():  # Theorem 3.1 needs autograd even inside no_grad callers
        got = model.eps(x_t, t)
    want = net.posterior_eps(x_t, t)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


def test_eps_boundary_levels():
    model, net, mu, var = make("uniform", (1, 4, 4))
    x = sample_gaussian(mu, var, 2)
    torch.testing.assert_close(model.eps(x, torch.tensor([0, 0])), torch.zeros_like(x))
    torch.testing.assert_close(model.eps(x, torch.tensor([model.T + 1] * 2)), x)


def test_float32_matches_to_float32_rounding():
    model, net, mu, var = make("uniform", (3, 32, 32))
    x = sample_gaussian(mu, var, 4, dtype=torch.float32)
    got = model.log_prob(x)
    want = analytic_log_density(x, mu, var)
    # float32 cumsum of ~1000 terms of size ~1e3: relative rounding ~1e-6 of the total
    torch.testing.assert_close(got, want, rtol=2e-5, atol=0.0)
    t = torch.tensor([10, 300, 700, 1000])
    x_t = model.schedule.q_sample(x, t, torch.randn_like(x))
    torch.testing.assert_close(model.eps(x_t, t).double(), net.posterior_eps(x_t, t), rtol=1e-3, atol=1e-3)


def test_noise_posterior_is_bayes_posterior():
    model, net, mu, var = make("linear", (1, 4, 4), T=50)
    x = sample_gaussian(mu, var, 3)
    post = model.noise_posterior(x)
    want = torch.softmax(net.log_p_levels(x), dim=1)
    torch.testing.assert_close(post, want, rtol=0, atol=1e-12)
    torch.testing.assert_close(post.sum(1), torch.ones(3, dtype=torch.float64))


def test_bpd_formula():
    model, net, mu, var = make("uniform", (3, 32, 32))
    x = sample_gaussian(mu, var, 2)
    d = 3 * 32 * 32
    torch.testing.assert_close(model.bpd(x), -analytic_log_density(x, mu, var) / (d * math.log(2)) + 7)


def test_exact_classifier_has_zero_mse_gradient_in_expectation_and_loss_parts():
    # At the optimum the MSE equals the MMSE; check the loss runs with create_graph on
    # an analytic net and that the t=0 and t=T+1 images contribute no MSE.
    model, net, mu, var = make("uniform", (1, 4, 4), T=20)
    x0 = sample_gaussian(mu, var, 64)
    loss, parts = model.loss(x0, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(loss) and parts["mse"] >= 0 and parts["ce"] > 0
    t = torch.tensor([0, model.T + 1])
    eps = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    x_t = model.schedule.q_sample(x0[:2], t, eps)
    torch.testing.assert_close(model.eps(x_t, t)[1], eps[1])


def test_a_models_likelihoods_do_not_depend_on_the_batch_an_image_is_in():
    """``log_prob``, ``log_prob_levels`` and ``bpd`` of one image moved by 1.8e-4 nats
    between batch 1 and batch 64 (convolutions pick their algorithm by batch size); the
    detectors' pass pads short batches, the model's own methods did not. On a CPU whose kernels
    do not change with the batch size the old code passed as well."""
    from oodkit import load_model
    from oodkit.data import load_dataset

    model = load_model("digits-0to4", device="cpu")
    x = torch.from_numpy(load_dataset("digits-0to4", "test").images[:40]).permute(0, 3, 1, 2).contiguous()
    xf = x.float() * (2 / 255) - 1  # noise_posterior takes floats only
    for name, data in (("log_prob", x), ("log_prob_levels", x), ("bpd", x), ("noise_posterior", xf)):
        method = getattr(model, name)
        whole = method(data)
        for size in (1, 3, 17):
            parts = torch.cat([method(xb) for xb in data.split(size)])
            assert torch.equal(parts, whole), (name, size, (parts - whole).abs().max().item())
