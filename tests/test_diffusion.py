"""Tests for kexue_lib.diffusion (P19, P20): float64 references written from the DDPM/DDIM papers'
formulas (their convention, alphas_cumprod), autograd scores, brute force, and, when installed,
the ``diffusers`` DDPM/DDIM schedulers step by step."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from scipy import stats

from kexue_lib import diffusion as df
from kexue_lib import scores as sc

F64 = torch.float64
SCHED = df.Schedule.su_linear(1000)
SMALL = df.Schedule.su_linear(50)
MEANS = torch.tensor([[-1.0, 0.5], [1.5, -0.3], [0.2, 1.2]], dtype=F64)
STDS = torch.tensor([0.3, 0.1, 0.0], dtype=F64)
WEIGHTS = torch.tensor([0.5, 0.3, 0.2], dtype=F64)


def _paper(sched):
    """alphas_cumprod with the t = 0 entry 1 (DDPM/DDIM papers' convention), float64 numpy."""
    return np.concatenate([[1.0], np.cumprod(1 - 0.02 * np.arange(1, sched.T + 1) / sched.T)])


# -- schedules and conventions -----------------------------------------------------------
def test_su_linear_against_product_and_post_numbers():
    ac = _paper(SCHED)
    np.testing.assert_allclose(SCHED.alpha_bar.numpy(), np.sqrt(ac), rtol=1e-12)
    np.testing.assert_allclose(SCHED.alphas_cumprod().numpy(), ac[1:], rtol=1e-12)
    np.testing.assert_allclose((SCHED.alpha[1:] ** 2).numpy(), 1 - 0.02 * np.arange(1, 1001) / 1000, rtol=1e-12)
    np.testing.assert_allclose((SCHED.alpha**2 + SCHED.beta**2).numpy(), 1.0, rtol=1e-12)
    np.testing.assert_allclose((SCHED.alpha_bar**2 + SCHED.beta_bar**2).numpy(), 1.0, rtol=1e-12)
    assert abs(float(SCHED.alpha_bar[-1]) - 0.006482) < 5e-7
    ddpm = df.Schedule.from_ddpm_betas(torch.linspace(1e-4, 0.02, 1000, dtype=F64))
    assert abs(float(ddpm.alpha_bar[-1]) - 0.006353) < 5e-7
    assert ddpm.T == 1000


def test_exp_quadratic_and_bound():
    eq = df.Schedule.exp_quadratic(1000)
    for t, exact, approx in [(100, 0.95072, 0.95123), (500, 0.28459, 0.28650), (1000, 0.006482, 0.006738)]:
        assert abs(float(SCHED.alpha_bar[t]) - exact) < 6e-6
        assert abs(float(eq.alpha_bar[t]) - approx) < 6e-6
    t = torch.arange(1, 1001, dtype=F64)
    assert bool((SCHED.alpha_bar[1:] < torch.exp(-0.005 * t * (t + 1) / 1000)).all())


def test_converters_round_trip_and_to():
    ac = torch.tensor([0.64, 0.25, 1.0], dtype=F64)
    torch.testing.assert_close(df.su_from_ddpm(ac), torch.tensor([0.8, 0.5, 1.0], dtype=F64))
    torch.testing.assert_close(df.ddpm_from_su(df.su_from_ddpm(ac)), ac)
    s32 = SMALL.to(dtype=torch.float32)
    assert s32.alpha_bar.dtype == torch.float32 and s32.T == 50


def test_uniform_timesteps():
    assert df.uniform_timesteps(1000, 10) == list(range(1000, -1, -100))
    assert df.uniform_timesteps(10, 3) == [10, 7, 3, 0]


# -- forward process --------------------------------------------------------------------------
def test_chain_composes_to_marginal():
    gen = torch.Generator().manual_seed(0)
    n, t, x0 = 100_000, 40, 1.3
    x = torch.full((n, 1), x0, dtype=F64)
    for k in range(1, t + 1):
        x = SMALL.alpha[k] * x + SMALL.beta[k] * torch.randn(n, 1, generator=gen, dtype=F64)
    z = torch.randn(n, 1, generator=gen, dtype=F64)
    y = df.q_sample(torch.full((n, 1), x0, dtype=F64), t, SMALL, z)
    tol = 4 / math.sqrt(n)
    assert abs(x.mean() - x0 * SMALL.alpha_bar[t]) < tol and abs(y.mean() - x0 * SMALL.alpha_bar[t]) < tol
    assert abs(x.std() - SMALL.beta_bar[t]) < tol and abs(y.std() - SMALL.beta_bar[t]) < tol


# -- posterior and DDIM coefficients ------------------------------------------------------------
def test_ddpm_posterior_against_paper_eq7():
    ac = _paper(SCHED)
    x_t = torch.randn(5, 2, dtype=F64, generator=torch.Generator().manual_seed(1))
    x0 = torch.randn(5, 2, dtype=F64, generator=torch.Generator().manual_seed(2))
    for t in (1, 2, 400, 1000):
        beta = 1 - ac[t] / ac[t - 1]
        mu = (np.sqrt(ac[t - 1]) * beta * x0.numpy()
              + np.sqrt(1 - beta) * (1 - ac[t - 1]) * x_t.numpy()) / (1 - ac[t])
        var = (1 - ac[t - 1]) / (1 - ac[t]) * beta
        mean, std = df.ddpm_posterior(x_t, x0, SCHED, t)
        np.testing.assert_allclose(mean.numpy(), mu, rtol=1e-10, atol=1e-12)
        assert math.isclose(float(std) ** 2, var, rel_tol=1e-10, abs_tol=1e-300)
        kappa, lam = df.ddim_coeffs(SCHED, t, t - 1, df.sigma_eta(SCHED, t, t - 1, 1.0))
        np.testing.assert_allclose((kappa * x_t + lam * x0).numpy(), mu, rtol=1e-9, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 1000), st.integers(1, 999), st.floats(0.0, 1.0))
def test_ddim_coeffs_preserve_marginals(t, gap, frac):
    s = max(t - gap, 0)
    if s >= t:
        s = t - 1
    sigma = frac * float(SCHED.beta_bar[s])
    kappa, lam = df.ddim_coeffs(SCHED, t, s, sigma)
    assert math.isclose(float(kappa * SCHED.alpha_bar[t] + lam), float(SCHED.alpha_bar[s]), rel_tol=1e-10, abs_tol=1e-12)
    assert math.isclose(float(kappa**2 * SCHED.beta_bar[t] ** 2) + sigma**2, float(SCHED.beta_bar[s]) ** 2,
                        rel_tol=1e-9, abs_tol=1e-12)


def test_ddim_step_against_ddim_paper_eq12():
    ac = _paper(SCHED)
    g = torch.Generator().manual_seed(3)
    x, e, z = (torch.randn(4, 3, dtype=F64, generator=g) for _ in range(3))
    for t, s, eta in [(1000, 900, 0.0), (400, 399, 1.0), (250, 0, 0.5), (2, 1, 0.3)]:
        a_t, a_s = ac[t], ac[s]
        sig = eta * math.sqrt((1 - a_s) / (1 - a_t) * (1 - a_t / a_s))
        ref = (math.sqrt(a_s) * (x.numpy() - math.sqrt(1 - a_t) * e.numpy()) / math.sqrt(a_t)
               + math.sqrt(1 - a_s - sig**2) * e.numpy() + sig * z.numpy())
        sg = df.sigma_eta(SCHED, t, s, eta)
        assert math.isclose(float(sg), sig, rel_tol=1e-10, abs_tol=1e-14)
        out = df.ddim_step(x, e, SCHED, t, s, sigma=sg, noise=z)
        np.testing.assert_allclose(out.numpy(), ref, rtol=1e-9, atol=1e-11)
        # Su's form of the mean
        ab, bb = SCHED.alpha_bar, SCHED.beta_bar
        su = ab[s] / ab[t] * (x - (bb[t] - ab[t] / ab[s] * (bb[s] ** 2 - sg**2).sqrt()) * e) + sg * z
        torch.testing.assert_close(out, su, rtol=1e-9, atol=1e-11)


def test_sigma_beta_clipped():
    assert math.isclose(float(df.sigma_beta(SCHED, 400, 399)), float(SCHED.beta[400]), rel_tol=1e-12)
    assert float(df.sigma_beta(SCHED, 1, 0)) == 0.0          # clipped to bbar_0 = 0
    assert float(df.sigma_beta(SCHED, 1000, 0)) == 0.0


# -- Gaussian-mixture oracle ----------------------------------------------------------------------
def _log_marginal(x, alpha, beta):
    v = alpha**2 * STDS**2 + beta**2
    sq = ((x[:, None, :] - alpha * MEANS[None]) ** 2).sum(-1)
    return torch.logsumexp(torch.log(WEIGHTS) - 0.5 * sq / v - torch.log(2 * math.pi * v), -1)


def test_gmm_eps_is_tweedie_score():
    x = torch.randn(50, 2, dtype=F64, generator=torch.Generator().manual_seed(4)).requires_grad_(True)
    for alpha, beta in [(0.9, 0.4359), (0.3, 0.95), (0.99, 0.05)]:
        (score,) = torch.autograd.grad(_log_marginal(x, alpha, beta).sum(), x)
        eps = df.gmm_eps(x.detach(), MEANS, STDS, WEIGHTS, alpha=alpha, beta=beta)
        torch.testing.assert_close(eps, -beta * score, rtol=1e-9, atol=1e-10)


def test_gmm_posterior_mean_matches_1d_module_and_scipy():
    mix = sc.GaussianMixture1d(torch.tensor([-1.0, 1.5], dtype=F64), torch.tensor([0.2, 0.4], dtype=F64),
                               torch.tensor([0.4, 0.6], dtype=F64))
    x = torch.linspace(-3, 3, 31, dtype=F64)
    ours = df.gmm_posterior_mean(x[:, None], mix.means[:, None], mix.stds, mix.weights, alpha=0.8, beta=0.6)
    torch.testing.assert_close(ours[:, 0], mix.posterior_mean(x, alpha=0.8, beta=0.6), rtol=1e-10, atol=1e-12)
    # point masses: posterior mean is a softmax average of the points (scipy densities)
    pts = MEANS.numpy()
    xn = np.array([[0.1, 0.2], [1.0, -1.0]])
    w = np.stack([WEIGHTS.numpy()[k] * stats.multivariate_normal(0.7 * pts[k], 0.51 * np.eye(2)).pdf(xn)
                  for k in range(3)], 1)
    ref = (w / w.sum(1, keepdims=True)) @ pts
    got = df.gmm_posterior_mean(torch.tensor(xn), MEANS, torch.zeros(3, dtype=F64), WEIGHTS,
                                alpha=0.7, beta=math.sqrt(0.51))
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10)


def test_oracle_minimises_eps_loss():
    g = torch.Generator().manual_seed(5)
    n = 20_000
    k = torch.multinomial(WEIGHTS, n, replacement=True, generator=g)
    x0 = MEANS[k] + STDS[k, None] * torch.randn(n, 2, dtype=F64, generator=g)
    z = torch.randn(n, 2, dtype=F64, generator=g)
    t = 300

    def oracle(x, tt):
        return df.gmm_eps(x, MEANS, STDS, WEIGHTS, alpha=float(SCHED.alpha_bar[tt]), beta=float(SCHED.beta_bar[tt]))

    best = df.eps_loss(oracle, x0, SCHED, t, z).mean()
    for c in (0.9, 1.1):
        assert df.eps_loss(lambda x, tt: c * oracle(x, tt), x0, SCHED, t, z).mean() > best
    assert df.eps_loss(lambda x, tt: oracle(x, tt) + 0.05, x0, SCHED, t, z).mean() > best


# -- samplers ----------------------------------------------------------------------------------------
def test_gaussian_sampler_std_matches_brief_and_monte_carlo():
    ts = df.uniform_timesteps(1000, 10)
    assert abs(df.gaussian_sampler_std(0.5, SCHED, ts, eta=1.0) - 0.3346) < 6e-5
    assert abs(df.gaussian_sampler_std(0.5, SCHED, ts, eta=0.0) - 0.3727) < 6e-5
    assert abs(df.gaussian_sampler_std(0.5, SCHED, ts, sigma_rule="beta") - 0.2857) < 6e-5
    m, s = torch.zeros(1, 1, dtype=F64), torch.tensor([0.5], dtype=F64)
    w = torch.ones(1, dtype=F64)

    def eps_fn(x, t):
        return df.gmm_eps(x, m, s, w, alpha=float(SCHED.alpha_bar[t]), beta=float(SCHED.beta_bar[t]))

    g = torch.Generator().manual_seed(6)
    n = 40_000
    x_T = torch.randn(n, 1, dtype=F64, generator=g)
    for eta in (0.0, 1.0):
        x0 = df.sample(eps_fn, SCHED, x_T, timesteps=ts, eta=eta, generator=g)
        assert abs(float(x0.std()) - df.gaussian_sampler_std(0.5, SCHED, ts, eta=eta)) < 0.01
    traj = df.sample(eps_fn, SMALL, x_T[:7], eta=0.0, return_traj=True)
    assert traj.shape == (51, 7, 1)
    x0 = df.sample(eps_fn, SMALL, x_T[:7], timesteps=[50, 20, 0], sigma_rule="beta", generator=g)
    assert x0.shape == (7, 1)


def test_full_ddpm_recovers_point_mass():
    m = torch.tensor([[0.7, -0.4]], dtype=F64)

    def eps_fn(x, t):
        return df.gmm_eps(x, m, torch.zeros(1, dtype=F64), torch.ones(1, dtype=F64),
                          alpha=float(SMALL.alpha_bar[t]), beta=float(SMALL.beta_bar[t]))

    x_T = torch.randn(100, 2, dtype=F64, generator=torch.Generator().manual_seed(7))
    out = df.sample(eps_fn, SMALL, x_T, eta=1.0, generator=torch.Generator().manual_seed(8))
    torch.testing.assert_close(out, m.expand(100, 2), rtol=0, atol=1e-10)


# -- diffusers, step by step -----------------------------------------------------------------------
def _diffusers_setup(T=1000):
    diffusers = pytest.importorskip("diffusers")
    betas = 0.02 * np.arange(1, T + 1) / T                          # 1 - alpha_t^2 (Su) = beta_t (DDPM)
    return diffusers, betas, df.Schedule.su_linear(T)


def _eps_model(x, t):
    return torch.tanh(x) * 0.7 + 0.1 * x * math.cos(t)


def test_ddpm_matches_diffusers_scheduler_step_by_step():
    diffusers, betas, sched = _diffusers_setup(100)
    ds = diffusers.DDPMScheduler(num_train_timesteps=100, trained_betas=betas.tolist(), variance_type="fixed_small",
                                 clip_sample=False, prediction_type="epsilon")
    ds.set_timesteps(100)
    x = torch.randn(6, 2, dtype=F64, generator=torch.Generator().manual_seed(9))
    g1, g2 = torch.Generator().manual_seed(10), torch.Generator().manual_seed(10)
    for k in ds.timesteps.tolist():                                 # diffusers time k <-> our t = k + 1
        # each step from the same input; diffusers keeps alphas_cumprod in float32, hence rtol 1e-4
        sig = df.sigma_eta(sched, k + 1, k, 1.0)
        noise = torch.randn(x.shape, generator=g2, dtype=F64) if k > 0 else None
        ours = df.ddim_step(x, _eps_model(x, k + 1), sched, k + 1, k, sigma=sig if k > 0 else 0.0, noise=noise)
        x = ds.step(_eps_model(x, k + 1), k, x, generator=g1).prev_sample
        torch.testing.assert_close(ours, x.to(F64), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_ddim_matches_diffusers_scheduler_step_by_step(eta):
    diffusers, betas, sched = _diffusers_setup(1000)
    ds = diffusers.DDIMScheduler(num_train_timesteps=1000, trained_betas=betas.tolist(), clip_sample=False,
                                 set_alpha_to_one=True, prediction_type="epsilon", steps_offset=0)
    ds.set_timesteps(10)
    ks = ds.timesteps.tolist()                                      # 900, 800, ..., 0
    ts = [k + 1 for k in ks] + [0]                                  # our times: 901, ..., 1, 0
    x = torch.randn(6, 2, dtype=F64, generator=torch.Generator().manual_seed(11))
    g = torch.Generator().manual_seed(12)
    for k, t, s in zip(ks, ts[:-1], ts[1:]):
        z = torch.randn(x.shape, generator=g, dtype=F64)
        ours = df.ddim_step(x, _eps_model(x, t), sched, t, s, sigma=df.sigma_eta(sched, t, s, eta), noise=z)
        x = ds.step(_eps_model(x, t), k, x, eta=eta, variance_noise=z).prev_sample
        torch.testing.assert_close(ours, x.to(F64), rtol=1e-4, atol=1e-5)


# -- validation ----------------------------------------------------------------------------------------
def test_validation_errors():
    with pytest.raises(ValueError, match="alphas_cumprod"):
        df.su_from_ddpm(torch.tensor([0.0], dtype=F64))
    with pytest.raises(ValueError, match="alpha_bar"):
        df.ddpm_from_su(torch.tensor([1.5], dtype=F64))
    with pytest.raises(ValueError, match="alpha_bar"):
        df.Schedule(torch.tensor([1.0], dtype=F64))
    with pytest.raises(ValueError, match=r"alpha_bar\[0\]"):
        df.Schedule(torch.tensor([0.9, 0.5], dtype=F64))
    with pytest.raises(ValueError, match="decreasing"):
        df.Schedule(torch.tensor([1.0, 0.5, 0.6], dtype=F64))
    with pytest.raises(ValueError, match="betas"):
        df.Schedule.from_ddpm_betas(torch.tensor([0.1, 1.0], dtype=F64))
    with pytest.raises(ValueError, match="T"):
        df.Schedule.su_linear(0)
    with pytest.raises(ValueError, match="c"):
        df.Schedule.su_linear(10, c=1.5)
    with pytest.raises(ValueError, match="k"):
        df.Schedule.exp_quadratic(10, k=-1.0)
    with pytest.raises(TypeError, match="sched"):
        df.q_sample(torch.zeros(2, 1), 1, "no", torch.zeros(2, 1))
    with pytest.raises(ValueError, match="noise"):
        df.q_sample(torch.zeros(2, 1), 1, SMALL, torch.zeros(3, 1))
    with pytest.raises(ValueError, match="t"):
        df.q_sample(torch.zeros(2, 1), 51, SMALL, torch.zeros(2, 1))
    with pytest.raises(ValueError, match="t_prev"):
        df.ddim_coeffs(SMALL, 5, 5, 0.0)
    with pytest.raises(ValueError, match="sigma"):
        df.ddim_coeffs(SMALL, 5, 4, 1.0)
    with pytest.raises(ValueError, match="t_prev"):
        df.sigma_eta(SMALL, 5, 6)
    with pytest.raises(ValueError, match="eta"):
        df.sigma_eta(SMALL, 5, 4, 1.5)
    with pytest.raises(ValueError, match="t_prev"):
        df.sigma_beta(SMALL, 5, 5)
    with pytest.raises(ValueError, match="x0"):
        df.ddpm_posterior(torch.zeros(2, 1), torch.zeros(3, 1), SMALL, 3)
    with pytest.raises(ValueError, match="eps_hat"):
        df.ddim_step(torch.zeros(2, 1), torch.zeros(3, 1), SMALL, 3, 2)
    with pytest.raises(ValueError, match="noise is required"):
        df.ddim_step(torch.zeros(2, 1), torch.zeros(2, 1), SMALL, 3, 2, sigma=0.01)
    with pytest.raises(ValueError, match="noise"):
        df.ddim_step(torch.zeros(2, 1), torch.zeros(2, 1), SMALL, 3, 2, sigma=0.01, noise=torch.zeros(3, 1))
    with pytest.raises(TypeError, match="eps_fn"):
        df.sample(3, SMALL, torch.zeros(2, 1))
    with pytest.raises(ValueError, match="timesteps"):
        df.sample(lambda x, t: x, SMALL, torch.zeros(2, 1), timesteps=[50, 10])
    with pytest.raises(ValueError, match="sigma_rule"):
        df.sample(lambda x, t: x, SMALL, torch.zeros(2, 1), sigma_rule="zero")
    with pytest.raises(ValueError, match="timesteps"):
        df.gaussian_sampler_std(0.5, SMALL, [10, 10, 0])
    with pytest.raises(ValueError, match="sigma_rule"):
        df.gaussian_sampler_std(0.5, SMALL, [10, 0], sigma_rule="x")
    with pytest.raises(ValueError, match="stds and weights"):
        df.gmm_eps(torch.zeros(2, 2), MEANS, STDS[:2], WEIGHTS, alpha=0.5, beta=0.5)
    with pytest.raises(ValueError, match="stds"):
        df.gmm_eps(torch.zeros(2, 2, dtype=F64), MEANS, -STDS, WEIGHTS, alpha=0.5, beta=0.5)
    with pytest.raises(ValueError, match="weights"):
        df.gmm_eps(torch.zeros(2, 2, dtype=F64), MEANS, STDS, -WEIGHTS, alpha=0.5, beta=0.5)
    with pytest.raises(ValueError, match="columns"):
        df.gmm_eps(torch.zeros(2, 3, dtype=F64), MEANS, STDS, WEIGHTS, alpha=0.5, beta=0.5)
    with pytest.raises(ValueError, match="beta"):
        df.gmm_eps(torch.zeros(2, 2, dtype=F64), MEANS, STDS, WEIGHTS, alpha=0.5, beta=0.0)
    with pytest.raises(ValueError, match="K"):
        df.uniform_timesteps(10, 11)


@settings(max_examples=40, deadline=None)
@given(st.floats(0.05, 1.0), st.floats(-3, 3), st.floats(-3, 3))
def test_point_mass_posterior_mean_in_convex_hull(alpha, x1, x2):
    beta = math.sqrt(1 - alpha**2) if alpha < 1 else 0.01
    x = torch.tensor([[x1, x2]], dtype=F64)
    m = df.gmm_posterior_mean(x, MEANS, torch.zeros(3, dtype=F64), WEIGHTS, alpha=alpha, beta=beta)
    assert bool((m >= MEANS.min(0).values - 1e-12).all()) and bool((m <= MEANS.max(0).values + 1e-12).all())


def test_float32_inputs_keep_their_dtype():
    sched = df.Schedule.su_linear(20)

    def eps_fn(x, t):
        return df.gmm_eps(x, MEANS.float(), STDS.float(), WEIGHTS.float(),
                          alpha=float(sched.alpha_bar[t]), beta=float(sched.beta_bar[t]))

    x_T = torch.randn(16, 2, generator=torch.Generator().manual_seed(13))
    out32 = df.sample(eps_fn, sched, x_T, eta=1.0, generator=torch.Generator().manual_seed(14))
    assert out32.dtype == torch.float32
    out64 = df.sample(lambda x, t: eps_fn(x.float(), t).double(), sched, x_T.double(), eta=1.0,
                      generator=torch.Generator().manual_seed(14))
    torch.testing.assert_close(out32.double(), out64, rtol=1e-4, atol=1e-4)
    assert df.q_sample(x_T, 5, sched, x_T).dtype == torch.float32
