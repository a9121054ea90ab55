"""Tests for kexue_lib.analytic_variance (P21): closed forms, brute-force Gaussian conditioning, scipy quadrature."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from scipy import integrate, stats

from kexue_lib import analytic_variance as av
from kexue_lib import scores as sc

F64 = torch.float64


def t64(*v):
    return torch.tensor(v, dtype=F64)


MEANS, STDS, WEIGHTS = t64(-0.8, 0.1, 0.7), t64(0.05, 0.1, 0.05), t64(0.3, 0.3, 0.4)


def _quad_posterior_var(A: float) -> tuple[float, float, float]:
    """E Var[x0|xt], E (E[x0|xt] - mu)^2 and E eps*^2 by scipy quadrature, written independently."""
    m, s, w = MEANS.numpy(), STDS.numpy(), WEIGHTS.numpy()
    B = math.sqrt(1 - A * A)
    v = A * A * s * s + B * B

    def post(x):
        c = w * stats.norm.pdf(x, A * m, np.sqrt(v))
        p = c.sum()
        r = c / p
        mu = m + A * s * s * (x - A * m) / v
        var = s * s * B * B / v
        mean = (r * mu).sum()
        return p, mean, (r * (var + mu * mu)).sum() - mean * mean

    mu0 = float((w * m).sum())
    kw = dict(points=list(A * m), limit=200, epsabs=1e-12)
    ev = integrate.quad(lambda x: post(x)[0] * post(x)[2], -12, 12, **kw)[0]
    em = integrate.quad(lambda x: post(x)[0] * (post(x)[1] - mu0) ** 2, -12, 12, **kw)[0]
    ee = integrate.quad(lambda x: post(x)[0] * ((x - A * post(x)[1]) / B) ** 2, -12, 12, **kw)[0]
    return ev, em, ee


def test_su_schedule_values_and_uniform_path():
    ab = av.su_alpha_bar(1000)
    assert ab.shape == (1001,) and float(ab[0]) == 1.0
    assert abs(float(ab[-1]) - 0.006482) < 5e-7                  # P19's number
    ref = np.cumprod(np.sqrt(1 - 0.02 * np.arange(1, 1001) / 1000))
    np.testing.assert_allclose(ab[1:].numpy(), ref, rtol=1e-12)
    p = av.uniform_path(ab, 10)
    torch.testing.assert_close(p, ab[::100])


def test_ddim_coefficients_reproduce_ddpm_posterior():
    ab = av.su_alpha_bar(1000)
    at, as_ = ab[400], ab[399]
    alpha = at / as_
    beta = math.sqrt(1 - float(alpha) ** 2)
    bt, bs = math.sqrt(1 - float(at) ** 2), math.sqrt(1 - float(as_) ** 2)
    sigma = av.ddim_sigma(at, as_, eta=1.0)
    assert math.isclose(float(sigma), bs * beta / bt, rel_tol=1e-12)
    kappa, gamma = av.ddim_coefficients(at, as_, sigma)
    # DDPM posterior q(x_{t-1}|x_t,x_0): mean coefficients alpha bs^2/bt^2 and as beta^2/bt^2
    assert math.isclose(float(kappa), float(alpha) * bs**2 / bt**2, rel_tol=1e-10)
    assert math.isclose(float(gamma), float(as_) * beta**2 / bt**2, rel_tol=1e-10)


@settings(max_examples=40, deadline=None)
@given(at=st.floats(0.05, 0.97), frac=st.floats(0.0, 0.99), eta=st.floats(0.0, 1.0), s2=st.floats(0.01, 4.0))
def test_corrected_kernel_equals_exact_gaussian_conditional(at, frac, eta, s2):
    """For x0 ~ N(0, s2): Var[x_s | x_t] under the DDIM joint = sigma^2 + gamma^2 sbar^2 (brute-force conditioning)."""
    as_ = at + frac * (1 - at)
    A, S = t64(at), t64(as_)
    sigma = av.ddim_sigma(A, S, eta=eta)
    kappa, gamma = av.ddim_coefficients(A, S, sigma)
    bt2 = 1 - at * at
    # joint covariance of (x_t, x_s): x_t = at x0 + bt e, x_s = kappa x_t + gamma x0 + sigma e'
    c_tt = at * at * s2 + bt2
    c_ts = float(kappa) * c_tt + float(gamma) * at * s2
    c_ss = float(kappa) ** 2 * c_tt + 2 * float(kappa * gamma) * at * s2 + float(gamma) ** 2 * s2 + float(sigma) ** 2
    cond = c_ss - c_ts**2 / c_tt
    pred = float(sigma) ** 2 + float(gamma) ** 2 * float(av.gaussian_posterior_var(s2, A))
    assert math.isclose(cond, pred, rel_tol=1e-9, abs_tol=1e-12)
    # the DDIM marginal constraint: Var[x_s] = as^2 s2 + bs^2
    assert math.isclose(c_ss, as_ * as_ * s2 + 1 - as_ * as_, rel_tol=1e-9)


def test_mixture_posterior_matches_scores_module_and_multidim_factorisation():
    g = sc.GaussianMixture1d(MEANS, STDS, WEIGHTS)
    x = torch.linspace(-2, 2, 41, dtype=F64)
    for A in (0.3, 0.9):
        B = math.sqrt(1 - A * A)
        mean, var = av.mixture_posterior(x[:, None], MEANS[:, None], STDS, WEIGHTS, t64(A))
        torch.testing.assert_close(mean[:, 0], g.posterior_mean(x, alpha=A, beta=B), rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(var, g.posterior_var(x, alpha=A, beta=B), rtol=1e-9, atol=1e-12)
    # a single component in d=3 is a Gaussian: posterior var = s^2 b^2 / (a^2 s^2 + b^2)
    xs = torch.randn(5, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    _, v = av.mixture_posterior(xs, torch.zeros(1, 3, dtype=F64), t64(0.5), t64(1.0), t64(0.6))
    torch.testing.assert_close(v, av.gaussian_posterior_var(0.25, t64(0.6)).expand(5), rtol=1e-12, atol=0)
    # batched (K, 1, 1) alpha_bar agrees with a loop
    ab = t64(0.2, 0.7).view(2, 1, 1)
    xb = xs.expand(2, 5, 3)
    mb, vb = av.mixture_posterior(xb, torch.randn(2, 3, dtype=F64), t64(0.3, 0.6), t64(0.5, 0.5), ab)
    assert mb.shape == (2, 5, 3) and vb.shape == (2, 5)


@pytest.mark.parametrize("A", [0.95, 0.7, 0.3, 0.05])
def test_both_estimators_equal_true_value_for_exact_model(A):
    """Exact expectations (scipy.quad) of Su's and Analytic-DPM's forms equal E Var[x0|xt] (brief's GMM)."""
    ev, em, ee = _quad_posterior_var(A)
    g = sc.GaussianMixture1d(MEANS, STDS, WEIGHTS)
    su = float(g.variance) - em
    bao = (1 - A * A) / (A * A) * (1 - ee)
    assert math.isclose(su, ev, rel_tol=1e-7)
    assert math.isclose(bao, ev, rel_tol=1e-6)
    # and the library's Monte Carlo estimators converge to it (Su's form is the tighter one)
    gen = torch.Generator().manual_seed(1)
    N = 200_000
    comp = torch.multinomial(WEIGHTS, N, replacement=True, generator=gen)
    x0 = (MEANS[comp] + STDS[comp] * torch.randn(N, dtype=F64, generator=gen))[:, None]

    def eps_fn(x_t, a, b):
        return (x_t - a * av.mixture_posterior(x_t, MEANS[:, None], STDS, WEIGHTS, a)[0]) / b

    tab_su = av.posterior_var_table(eps_fn, x0, t64(A), method="su", clip=False, generator=gen)
    assert abs(float(tab_su[0]) - ev) < 0.01
    tab_bao = av.posterior_var_table(eps_fn, x0, t64(A), method="bao", clip=True, generator=gen)
    assert 0 <= float(tab_bao[0]) <= min(float(x0.var(unbiased=False)), (1 - A * A) / A**2) + 1e-12


def test_estimators_on_direct_inputs():
    x0 = t64(1.0, 2.0, 3.0, 6.0).view(4, 1)                         # variance 3.5
    xh = t64(2.0, 4.0).view(2, 1)                                   # mean-3 spread: (1 + 1)/2 = 1
    assert math.isclose(float(av.posterior_var_su(x0, xh)), 2.5, rel_tol=1e-12)
    e = t64(1.0, -1.0, 0.5, 0.5).view(2, 2)                         # E||e||^2/d = (2 + 0.5)/2/2 = 0.625
    A = 0.6
    assert math.isclose(float(av.posterior_var_bao(e, t64(A))), 0.64 / 0.36 * 0.375, rel_tol=1e-12)
    assert math.isclose(float(av.posterior_var_upper_bound(0.5, t64(0.6))), 0.5)
    assert math.isclose(float(av.posterior_var_upper_bound(t64(5.0), t64(0.6))), 0.64 / 0.36, rel_tol=1e-12)
    c = av.clip_posterior_var(t64(-1.0, 0.2, 9.0), 0.5, t64(0.6, 0.6, 0.6))
    torch.testing.assert_close(c, t64(0.0, 0.2, 0.5))
    assert math.isclose(float(av.gaussian_posterior_var(t64(0.25), t64(0.6))), 0.25 * 0.64 / (0.36 * 0.25 + 0.64), rel_tol=1e-12)


def test_gaussian_sampler_var_reproduces_p20_table_and_exactness():
    ab = av.su_alpha_bar(1000)
    p10 = av.uniform_path(ab, 10)
    assert abs(math.sqrt(float(av.gaussian_sampler_var(0.25, p10, eta=1.0)[0])) - 0.3346) < 1e-4
    assert abs(math.sqrt(float(av.gaussian_sampler_var(0.25, p10, eta=0.0)[0])) - 0.3727) < 1e-4
    for K in (1, 3, 10, 1000):
        p = av.uniform_path(ab, K)
        true_T = float(p[-1]) ** 2 * 0.25 + 1 - float(p[-1]) ** 2
        for eta in (0.0, 0.4, 1.0):
            v = av.gaussian_sampler_var(0.25, p, eta=eta, corrected=True, init_var=true_T)
            torch.testing.assert_close(v, p**2 * 0.25 + 1 - p**2, rtol=1e-10, atol=1e-12)


def test_ddim_sample_matches_variance_recursion():
    ab = av.uniform_path(av.su_alpha_bar(1000), 10)
    gen = torch.Generator().manual_seed(2)
    s2 = 0.25

    def eps_fn(x, a, b):                                           # oracle for N(0, s2)
        return b * x / (a * a * s2 + b * b)

    xT = torch.randn(200_000, 1, dtype=F64, generator=gen)
    pv = av.gaussian_posterior_var(s2, ab[1:])
    for eta, corr in ((1.0, False), (0.0, True), (0.5, True)):
        out = av.ddim_sample(eps_fn, xT, ab, eta=eta, posterior_var=pv if corr else None, generator=gen)
        ref = float(av.gaussian_sampler_var(s2, ab, eta=eta, corrected=corr)[0])
        assert abs(float(out.var()) - ref) < 4 * ref * math.sqrt(2 / xT.shape[0]) + 1e-12


def test_float32_and_devices_follow_inputs():
    x = torch.randn(8, 2)
    out = av.ddim_sample(lambda z, a, b: 0 * z, x, av.uniform_path(av.su_alpha_bar(50, dtype=torch.float32), 5))
    assert out.dtype == torch.float32 and out.device == x.device


def test_validation_errors():
    ab = av.su_alpha_bar(20)
    with pytest.raises(ValueError, match="c must be < 1"):
        av.su_alpha_bar(10, c=1.0)
    with pytest.raises(ValueError, match="T must be >= 1"):
        av.su_alpha_bar(0)
    with pytest.raises(ValueError, match="steps must be <= 20"):
        av.uniform_path(ab, 21)
    with pytest.raises(ValueError, match=r"alpha_bar\[0\] must be 1"):
        av.uniform_path(ab[1:], 2)
    with pytest.raises(ValueError, match="strictly decreasing"):
        av.uniform_path(ab.flip(0).roll(1), 2)
    with pytest.raises(ValueError, match="at least 2 entries"):
        av.uniform_path(ab[:1], 1)
    with pytest.raises(ValueError, match=r"alpha_bar_t must lie in \(0, 1\]"):
        av.ddim_sigma(t64(0.0), t64(0.5))
    with pytest.raises(ValueError, match="alpha_bar_t must be <= alpha_bar_s"):
        av.ddim_sigma(t64(0.9), t64(0.5))
    with pytest.raises(ValueError, match="eta must be <= 1"):
        av.ddim_sigma(t64(0.5), t64(0.9), eta=2.0)
    with pytest.raises(ValueError, match="sigma must lie"):
        av.ddim_coefficients(t64(0.5), t64(0.9), t64(0.9))
    with pytest.raises(ValueError, match="alpha_bar_t must be < 1"):
        av.ddim_coefficients(t64(1.0), t64(1.0), t64(0.0))
    with pytest.raises(ValueError, match="data_var must be >= 0"):
        av.gaussian_posterior_var(t64(-1.0), t64(0.5))
    with pytest.raises(ValueError, match="data_var must be >= 0"):
        av.gaussian_posterior_var(-1.0, t64(0.5))
    with pytest.raises(TypeError, match="x0 must be a torch.Tensor"):
        av.posterior_var_su([1.0], t64(1.0).view(1, 1))
    with pytest.raises(ValueError, match="x0_hat must have d=2"):
        av.posterior_var_su(torch.zeros(3, 2, dtype=F64), torch.zeros(3, 1, dtype=F64))
    with pytest.raises(ValueError, match="eps_hat must have at least 2"):
        av.posterior_var_bao(t64(1.0), t64(0.5))
    with pytest.raises(ValueError, match="var contains NaN"):
        av.clip_posterior_var(t64(float("nan")), 1.0, t64(0.5))
    x1 = torch.zeros(4, 1, dtype=F64)
    m1, s1, w1 = MEANS[:, None], STDS, WEIGHTS
    with pytest.raises(ValueError, match="means must have shape"):
        av.mixture_posterior(x1, torch.zeros(3, 2, dtype=F64), s1, w1, t64(0.5))
    with pytest.raises(ValueError, match="stds and weights must have shape"):
        av.mixture_posterior(x1, m1, s1[:2], w1, t64(0.5))
    with pytest.raises(ValueError, match="stds must be > 0"):
        av.mixture_posterior(x1, m1, -s1, w1, t64(0.5))
    with pytest.raises(ValueError, match="weights must be >= 0 and sum to 1"):
        av.mixture_posterior(x1, m1, s1, 2 * w1, t64(0.5))
    with pytest.raises(ValueError, match="alpha_bar must be < 1"):
        av.mixture_posterior(x1, m1, s1, w1, t64(1.0))
    eps_fn = lambda x, a, b: 0 * x
    with pytest.raises(ValueError, match="method must be"):
        av.posterior_var_table(eps_fn, x1, t64(0.5), method="x")
    with pytest.raises(ValueError, match="alpha_bar must be < 1"):
        av.posterior_var_table(eps_fn, x1, t64(1.0))
    with pytest.raises(ValueError, match="eps_fn must return shape"):
        av.posterior_var_table(lambda x, a, b: x[..., :1, :], torch.zeros(4, 1, dtype=F64), t64(0.5))
    p = av.uniform_path(ab, 4)
    with pytest.raises(ValueError, match=r"posterior_var must have shape \(4,\)"):
        av.ddim_sample(eps_fn, x1, p, posterior_var=t64(0.1))
    with pytest.raises(ValueError, match="posterior_var must be >= 0"):
        av.ddim_sample(eps_fn, x1, p, posterior_var=t64(0.1, 0.1, -0.1, 0.1))
    with pytest.raises(ValueError, match="x_T must have 2"):
        av.ddim_sample(eps_fn, torch.zeros(4, dtype=F64), p)
    with pytest.raises(ValueError, match="data_var must be > 0"):
        av.gaussian_sampler_var(0.0, p)


def test_mixture_posterior_rejects_non_broadcastable_alpha():
    with pytest.raises(ValueError, match="does not broadcast"):
        av.mixture_posterior(torch.zeros(4, 1, dtype=F64), MEANS[:, None], STDS, WEIGHTS, t64(0.5, 0.6, 0.7))
