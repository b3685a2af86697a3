"""The contrast models against closed forms: Gaussian data with the exact posterior-mean
denoiser makes every ELBO term and the information-theoretic likelihood analytic."""
import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from oodkit import CDM, NoiseSchedule, TrainConfig, fit_model, load_model
from oodkit.itd import discrete_denoiser, discrete_logsnr_max, itd_nll
from oodkit.models.ddpm import DDPM, discretized_gaussian_log_likelihood

from .gaussian import AnalyticGaussianNet, gaussian_params, sample_gaussian

SHAPE = (1, 4, 4)


class ExactEpsNet(torch.nn.Module):
    """E[eps | x_t] for Gaussian data at integer levels: the optimal DDPM network."""

    def __init__(self, mu, var, schedule):
        super().__init__()
        self.g = AnalyticGaussianNet(mu, var, schedule)
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x_t, t):
        return self.g.posterior_eps(x_t, t).to(x_t.dtype)


def exact_ddpm(var_type="beta", T=100, schedule="linear"):
    sched = NoiseSchedule.from_name(schedule, T)
    mu, var = gaussian_params(SHAPE)
    mu = mu.clamp(-0.5, 0.5)
    return DDPM(ExactEpsNet(mu, var, sched), sched, var_type=var_type, image_shape=SHAPE), mu, var


def closed_form_term(x0, t, eps, mu, var, ab, var_type, clip=False):
    """The bound's term written out from the Gaussian posterior, independently of the model code."""
    ab_t, ab_p = ab[t].item(), ab[t - 1].item()
    beta = 1 - ab_t / ab_p
    pv = lambda s: (1 - ab[s].item() / ab[s - 1].item()) * (1 - ab[s - 1].item()) / (1 - ab[s].item())
    x0, mu, var = x0.double().numpy(), mu.numpy(), var.numpy()
    x_t = math.sqrt(ab_t) * x0 + math.sqrt(1 - ab_t) * eps.double().numpy()
    x0_hat = mu + math.sqrt(ab_t) * var / (ab_t * var + 1 - ab_t) * (x_t - math.sqrt(ab_t) * mu)
    if clip:
        x0_hat = np.clip(x0_hat, -1, 1)
    c0 = beta * math.sqrt(ab_p) / (1 - ab_t)
    ct = (1 - ab_p) * math.sqrt(1 - beta) / (1 - ab_t)
    model_mean = c0 * x0_hat + ct * x_t
    v = pv(2) if t == 1 else (pv(t) if var_type == "posterior" else beta)
    if t == 1:
        sd = math.sqrt(v)
        p = norm.cdf((x0 + 1 / 255 - model_mean) / sd) - norm.cdf((x0 - 1 / 255 - model_mean) / sd)
        return -np.log(p).sum()
    post = pv(t)
    return 0.5 * (np.log(v / post) + post / v - 1 + (c0 * (x0 - x0_hat)) ** 2 / v).sum()


@pytest.mark.parametrize("var_type", ["beta", "posterior"])
@pytest.mark.parametrize("t", [1, 2, 37, 100])
def test_vb_terms_match_closed_forms(var_type, t):
    model, mu, var = exact_ddpm(var_type)
    x0 = sample_gaussian(mu, var, 3, seed=4).clamp(-0.98, 0.98)
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(t), dtype=torch.float64)
    for clip in (False, True):
        got = model.vb_term(x0, torch.full((3,), t), eps, clip_denoised=clip)
        for i in range(3):
            want = closed_form_term(x0[i], t, eps[i], mu, var, model.schedule.alpha_bar, var_type, clip)
            assert got[i].item() == pytest.approx(want, rel=1e-8, abs=1e-9)


def test_clipping_the_predicted_x0_is_the_default_and_matters():
    model, mu, var = exact_ddpm()
    x0 = torch.full((1, *SHAPE), 0.97, dtype=torch.float64)
    eps = torch.full_like(x0, 2.5)  # x_t far out: the exact posterior mean leaves [-1, 1]
    t = torch.full((1,), 60)
    clipped, raw = model.vb_term(x0, t, eps), model.vb_term(x0, t, eps, clip_denoised=False)
    assert clipped.item() == model.vb_term(x0, t, eps, clip_denoised=True).item()
    assert clipped.item() != pytest.approx(raw.item(), rel=1e-6)


def test_prior_term_closed_form():
    model, mu, var = exact_ddpm()
    x0 = sample_gaussian(mu, var, 2)
    ab = model.schedule.alpha_bar[model.T].item()
    want = 0.5 * (ab * x0.double() ** 2 + (1 - ab) - 1 - math.log(1 - ab)).flatten(1).sum(1)
    torch.testing.assert_close(model.prior_nats(x0), want)


def test_elbo_full_and_unbiased_estimate():
    model, mu, var = exact_ddpm(T=40)
    x0 = sample_gaussian(mu, var, 2).clamp(-0.98, 0.98)
    terms = model.vb_terms(x0, generator=torch.Generator().manual_seed(0))
    assert terms.shape == (2, 40) and (terms[:, 1:] >= -1e-12).all()  # KLs are non-negative
    full = model.elbo_bpd(x0, generator=torch.Generator().manual_seed(0))
    prior = model.prior_nats(x0) / (16 * math.log(2))
    torch.testing.assert_close(full, prior + terms.sum(1))
    fulls = torch.stack([model.elbo_bpd(x0, generator=torch.Generator().manual_seed(s)) for s in range(30)])
    ests = torch.stack([model.elbo_bpd(x0, n_terms=8, generator=torch.Generator().manual_seed(100 + s))
                        for s in range(400)])
    se = ests.std(0) / math.sqrt(len(ests)) + fulls.std(0) / math.sqrt(len(fulls))
    assert ((ests.mean(0) - fulls.mean(0)).abs() < 4 * se).all(), (ests.mean(0), fulls.mean(0), se)
    # the decoder term is always in, and stratification covers 2..T once each
    levels, weights = model.stratified_levels(8, torch.Generator().manual_seed(0))
    assert levels[0] == 1 and weights[0] == 1 and weights.sum() == 40 and len(levels) == 8
    assert all(lo < hi for lo, hi in zip(levels[1:], levels[2:]))


def test_decoder_bins_sum_to_one():
    centers = torch.linspace(-1, 1, 256, dtype=torch.float64)
    lp = discretized_gaussian_log_likelihood(centers, torch.tensor(0.3), torch.tensor(math.log(0.2)))
    assert lp.exp().sum().item() == pytest.approx(1.0, abs=1e-12)


def gaussian_continuous_denoiser(mu, var):
    def den(z, a):
        s = torch.sigmoid(a.double()).view(-1, 1, 1, 1)
        return ((1 - s).sqrt() * (z.double() - s.sqrt() * mu) / (s * var + 1 - s))
    return den


def analytic_nll(x, mu, var):
    return (0.5 * ((x.double() - mu) ** 2 / var + var.log() + math.log(2 * math.pi))).flatten(1).sum(1)


def check_unbiased(nll, want, se, bias_tol):
    """Over many images: the mean error is zero within its standard error (and under
    bias_tol nats), and the per-image standard errors cover the errors as they should."""
    diff = nll - want
    se_mean = diff.std() / math.sqrt(len(diff))
    assert diff.mean().abs() < 4 * se_mean + bias_tol, (diff.mean(), se_mean)
    assert ((diff.abs() < 2 * se).double().mean() > 0.85), (diff.abs() / se)


def test_itd_recovers_the_gaussian_log_density():
    mu, var = gaussian_params(SHAPE)
    x = sample_gaussian(mu, var, 512, seed=9)
    nll, se = itd_nll(x, gaussian_continuous_denoiser(mu, var), n_points=8000,
                      generator=torch.Generator().manual_seed(0))
    check_unbiased(nll, analytic_nll(x, mu, var), se, bias_tol=0.02)
    assert se.mean() < 2.0


def test_itd_on_the_cdm_theorem_denoiser():
    sched = NoiseSchedule.linear(300)
    mu, var = gaussian_params(SHAPE)
    cdm = CDM(AnalyticGaussianNet(mu, var, sched), sched, image_shape=SHAPE)
    x = sample_gaussian(mu, var, 64, seed=2)
    nll, se = itd_nll(x, discrete_denoiser(cdm), n_points=600, generator=torch.Generator().manual_seed(1))
    # Eq. 10 on the same exact classifier; snapping to the levels' log-SNR grid makes the
    # integral a Riemann sum, whence a small extra tolerance
    check_unbiased(nll, -cdm.log_prob(x), se, bias_tol=0.15)


def test_noised_base_density():
    """base_logsnr gives the density of the zeta-noised data: N(sqrt(s) mu, s var + 1 - s)."""
    mu, var = gaussian_params(SHAPE)
    zeta = 0.5
    s = 1 / (1 + math.exp(-zeta))
    x = sample_gaussian(mu * math.sqrt(s), s * var + 1 - s, 512, seed=5)
    nll, se = itd_nll(x, gaussian_continuous_denoiser(mu, var), n_points=8000, base_logsnr=zeta,
                      generator=torch.Generator().manual_seed(3))
    check_unbiased(nll, analytic_nll(x, mu * math.sqrt(s), s * var + 1 - s), se, bias_tol=0.02)


def test_ddpm_joint_cdl_training_and_checkpoints(tiny_digits, tmp_path):
    from oodkit.data import load_dataset, to_float

    labels = load_dataset("digits-0to4", "train").labels
    cfg = TrainConfig(steps=25, batch_size=32, lr=2e-3, warmup=5, save_every=0)
    ddpm = fit_model(tiny_digits, kind="ddpm", net="tiny", T=50, config=cfg, out=tmp_path / "d.pt", progress=False)
    x = to_float(tiny_digits[:64])
    g = lambda: torch.Generator().manual_seed(0)
    fresh = fit_model(tiny_digits, kind="ddpm", net="tiny", T=50, config=TrainConfig(steps=1, save_every=0),
                      progress=False)
    assert ddpm.loss(x, generator=g())[0] < fresh.loss(x, generator=g())[0]
    assert load_model(tmp_path / "d.pt").kind == "ddpm"
    assert ddpm.sample(2, steps=5, method="ddim").shape == (2, 1, 8, 8)
    joint = fit_model(tiny_digits, kind="joint", net="tiny", T=50, config=TrainConfig(steps=10, lr=3e-3, batch_size=32,
                      ema_decay=0.9, save_every=0), labels=labels, out=tmp_path / "j.pt", progress=False)
    loaded = load_model(tmp_path / "j.pt")
    assert loaded.kind == "joint" and loaded.num_labels == 5
    torch.testing.assert_close(loaded.classify_logits(x[:4]), joint.classify_logits(x[:4]))
    guided = joint.sample(3, steps=4, y=2, guidance=2.0, generator=torch.Generator().manual_seed(0))
    assert guided.shape == (3, 1, 8, 8) and torch.isfinite(guided).all()
    with pytest.raises(ValueError, match="labels"):
        fit_model(tiny_digits, kind="joint", net="tiny", T=10, config=TrainConfig(steps=1), progress=False)
    cdl = fit_model(tiny_digits[:64], kind="ddpm", net="tiny", T=20, model_options={"cdl_weight": 0.01},
                    config=TrainConfig(steps=2, batch_size=8, save_every=0), progress=False)
    loss, parts = cdl.train().loss(x[:8], generator=g())
    assert "cdl" in parts and torch.isfinite(parts["cdl"])
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in cdl.parameters())


def test_diffusion_detectors(tiny_digits, tmp_path):
    from oodkit.data import as_images, load_dataset
    from oodkit.detectors import make_detector

    labels = load_dataset("digits-0to4", "train").labels
    cfg = TrainConfig(steps=3, batch_size=16, save_every=0)
    ddpm = fit_model(tiny_digits, kind="ddpm", net="tiny", T=30, config=cfg, progress=False)
    joint = fit_model(tiny_digits, kind="joint", net="tiny", T=30, config=cfg, labels=labels, progress=False)
    x_test = as_images(load_dataset("letters", "test").images)[:20]
    for name, model in [("elbo", ddpm), ("elbo-k", ddpm), ("itd", ddpm), ("recon", ddpm), ("msp", joint),
                        ("energy", joint)]:
        det = make_detector(name, model=model, progress=False, n_points=8).fit(tiny_digits[:40])
        s = det.score_samples(x_test)
        assert s.shape == (20,) and s.dtype == np.float64 and np.isfinite(s).all(), name
        assert set(np.unique(det.predict(x_test))) <= {-1, 1}
    assert make_detector("elbo", model=ddpm, progress=False).fit(tiny_digits[:8]).passes_per_image == 30
    with pytest.raises(ValueError, match="needs a joint model"):
        make_detector("msp", model=ddpm, progress=False).fit(tiny_digits[:8])


class DiscretePixels:
    """i.i.d. 8-bit pixels with a known pmf on the 256 values of [-1, 1]: the exact
    posterior-mean denoiser and the exact -log P(x) are both a sum over 256 values."""

    def __init__(self, std=0.35, shift=0.1):
        self.values = torch.linspace(-1, 1, 256, dtype=torch.float64)
        logits = -0.5 * ((self.values - shift) / std) ** 2
        self.logp = logits - torch.logsumexp(logits, 0)

    def sample(self, n, shape, seed):
        g = torch.Generator().manual_seed(seed)
        idx = torch.multinomial(self.logp.exp(), n * int(np.prod(shape)), replacement=True, generator=g)
        return self.values[idx].view(n, *shape)

    def nll(self, x):
        idx = ((x.double() + 1) * 127.5).round().long()
        return -self.logp[idx].flatten(1).sum(1)

    def denoiser(self, z, a):
        s = torch.sigmoid(a.double()).view(-1, 1, 1, 1, 1)
        zz = z.double()[..., None]
        ll = -0.5 * (zz - s.sqrt() * self.values) ** 2 / (1 - s) + self.logp
        x_hat = (torch.softmax(ll, -1) * self.values).sum(-1)
        s = s[..., 0]
        return (z.double() - s.sqrt() * x_hat) / (1 - s).sqrt()


def test_itd_discrete_matches_the_discrete_truth():
    """On 8-bit data the discrete estimator recovers -log2 P(x) within 0.05 bits/dim and
    does not depend on where the integral is cut; the continuous identity would."""
    px = DiscretePixels()
    x = px.sample(300, SHAPE, seed=0)
    d = x[0].numel()
    truth = px.nll(x) / (d * math.log(2))
    got = {}
    for a_max in (discrete_logsnr_max(), 20.0):
        nll, se = itd_nll(x, px.denoiser, n_points=400, discrete=True, a_max=a_max,
                          generator=torch.Generator().manual_seed(0))
        got[a_max] = nll / (d * math.log(2))
        assert (got[a_max] - truth).mean().abs() < 0.05, (got[a_max].mean(), truth.mean())
    assert (got[20.0] - got[discrete_logsnr_max()]).mean().abs() < 0.02
    assert 7.0 < truth.mean() < 8.0  # a realistic 8-bit entropy, not a degenerate case


def test_itd_and_elbo_scores_are_functions_of_the_image_alone(tiny_digits):
    """The same images scored in other batch sizes and orders give the same scores, and
    two halves of one set score as one distribution (the detectors fix one quadrature)."""
    from oodkit.detectors import make_detector

    cfg = TrainConfig(steps=3, batch_size=16, save_every=0)
    ddpm = fit_model(tiny_digits, kind="ddpm", net="tiny", T=40, config=cfg, progress=False)
    x = tiny_digits[:48]
    perm = torch.randperm(48, generator=torch.Generator().manual_seed(1))
    for name in ("elbo-k", "itd", "recon"):
        det = make_detector(name, model=ddpm, progress=False, n_points=6, batch_size=16).fit(x[:8])
        a = det.score_samples(x)
        det.set_params(batch_size=7)
        b = det.score_samples(x[perm])
        np.testing.assert_allclose(b, a[perm.numpy()], rtol=1e-9, atol=1e-9, err_msg=name)
        det.set_params(batch_size=48)
        np.testing.assert_allclose(det.score_samples(x), a, rtol=1e-9, atol=1e-9, err_msg=name)


def test_itd_discrete_on_a_ddpms_levels_reaches_pixel_resolution():
    """A DDPM's linear schedule stops at log-SNR 9.2, short of the pixel bins: the
    decoder term carries the rest, so the estimate stays within 0.05 bits/dim of the
    discrete truth on the model's own levels (snapped, as a real model is used)."""
    px = DiscretePixels()
    sched = NoiseSchedule.linear(1000)
    levels = torch.log(sched.alpha_bar[1:-1]) - torch.log1p(-sched.alpha_bar[1:-1])
    den = px.denoiser
    den_levels = lambda z, a: den(z, a)
    den_levels.logsnr = levels
    x = px.sample(300, SHAPE, seed=0)
    d = x[0].numel()
    truth = px.nll(x) / (d * math.log(2))
    nll, _ = itd_nll(x, den_levels, n_points=400, discrete=True, generator=torch.Generator().manual_seed(0))
    got = nll / (d * math.log(2))
    assert levels.max() < 9.3
    assert (got - truth).mean().abs() < 0.05, (got.mean(), truth.mean())


def test_diffusion_scores_run_without_tf32(tiny_digits, monkeypatch):
    """Like the CDM's forward pass, the multi-pass likelihood scores run in full fp32
    (PyTorch's CUDA convolutions default to TF32) and leave the settings as they were."""
    from oodkit.detectors import make_detector
    from oodkit.representation import precision_knobs

    settings = lambda: [getattr(obj, attr) for obj, attr, _ in precision_knobs()]
    full = [value for _, _, value in precision_knobs()]
    cfg = TrainConfig(steps=2, batch_size=16, save_every=0)
    ddpm = fit_model(tiny_digits, kind="ddpm", net="tiny", T=40, config=cfg, progress=False)
    seen, real = [], ddpm.eps
    monkeypatch.setattr(ddpm, "eps", lambda *a, **k: seen.append(settings()) or real(*a, **k))
    before = settings()
    make_detector("recon", model=ddpm, progress=False).fit(tiny_digits[:8])
    assert seen and all(s == full for s in seen)
    assert settings() == before != full


def test_a_ddpm_refuses_a_net_that_ignores_the_noise_level():
    """A DDPM given image_shape skipped the check that its UNet is time-conditioned, and
    the UNet ignored the t it was passed: a model whose eps prediction cannot depend on
    the noise level, built and trained without a word (the test suite's own tiny DDPM was
    one)."""
    from oodkit import DDPM, JointDiffusion, NoiseSchedule, unet_from_preset

    s = NoiseSchedule.uniform(20)
    for cls in (DDPM, JointDiffusion):
        with pytest.raises(ValueError, match="needs a time-conditioned net"):
            cls(unet_from_preset("tiny", in_channels=1, image_size=8), s, image_shape=(1, 8, 8))
    with pytest.raises(ValueError, match="not time-conditioned: call it as net"):
        unet_from_preset("tiny", in_channels=1, image_size=8)(torch.zeros(2, 1, 8, 8), torch.tensor([1, 2]))


@pytest.mark.parametrize("name,kind", [("itd@cdm", "cdm"), ("recon", "ddpm"), ("elbo", "ddpm")])
def test_diffusion_scores_do_not_depend_on_the_batch_size(tiny_models, name, kind):
    """itd@cdm moved by 6.6e-5 between batch 7 and batch 64: the diffusion detectors did not
    pad short batches the way the CDM pass does, and convolutions pick their kernels by rows. On a CPU whose kernels
    do not change with the batch size the old code passed as well."""
    from oodkit.data import load_dataset
    from oodkit.detectors import make_detector

    x = load_dataset("digits-0to4", "test").images[:20]
    extra = {"n_points": 4} if name.startswith("itd") else {"n_terms": 3} if name == "elbo" else {}
    scores = [make_detector(name, model=tiny_models[kind], batch_size=b, **extra).prepare().score_samples(x)
              for b in (1, 7, 64)]
    for s in scores[1:]:
        np.testing.assert_array_equal(s, scores[0])
