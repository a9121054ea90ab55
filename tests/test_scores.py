"""Tests for kexue_lib.scores (P05, P32): against scipy, autograd, closed forms and brute force."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from scipy import integrate, stats

from kexue_lib import scores as sc

F64 = torch.float64


def T(*v, dtype=F64):
    return torch.tensor(v, dtype=dtype)


MIX = sc.GaussianMixture1d(T(-1.0, 1.5), T(0.2, 0.4), T(0.4, 0.6))
GAUSS = sc.GaussianMixture1d(T(0.3), T(0.8), T(1.0))


def _np(mix):
    return tuple(t.numpy() for t in (mix.means, mix.stds, mix.weights))


def _mixtures():
    """Hypothesis strategy: random 1-3 component mixtures."""
    return st.integers(1, 3).flatmap(lambda k: st.tuples(
        st.lists(st.floats(-2, 2), min_size=k, max_size=k),
        st.lists(st.floats(0.15, 1.5), min_size=k, max_size=k),
        st.lists(st.floats(0.1, 1.0), min_size=k, max_size=k),
    )).map(lambda t: sc.GaussianMixture1d(torch.tensor(t[0], dtype=F64), torch.tensor(t[1], dtype=F64),
                                          torch.tensor(t[2], dtype=F64) / sum(t[2])))


# -- conventions ----------------------------------------------------------------------------
def test_convention_converters_round_trip():
    a, b = sc.su_from_ddpm(0.64)
    assert math.isclose(a, 0.8) and math.isclose(b, 0.6) and math.isclose(sc.ddpm_from_su(a), 0.64)
    assert sc.su_from_ddpm(1.0) == (1.0, 0.0)
    with pytest.raises(ValueError, match="alpha_bar"):
        sc.su_from_ddpm(0.0)
    with pytest.raises(ValueError, match="alpha"):
        sc.ddpm_from_su(1.5)


# -- the mixture oracle -------------------------------------------------------------------------
def test_log_prob_cdf_moments_against_scipy():
    m, s, w = _np(MIX)
    x = np.linspace(-4, 4, 41)
    pdf = (w * stats.norm.pdf(x[:, None], m, s)).sum(1)
    cdf = (w * stats.norm.cdf(x[:, None], m, s)).sum(1)
    xt = torch.tensor(x, dtype=F64)
    np.testing.assert_allclose(MIX.log_prob(xt).numpy(), np.log(pdf), rtol=1e-12)
    np.testing.assert_allclose(MIX.cdf(xt).numpy(), cdf, rtol=1e-12, atol=1e-15)
    mean = integrate.quad(lambda y: y * (w * stats.norm.pdf(y, m, s)).sum(), -10, 10, points=[-1, 1.5])[0]
    var = integrate.quad(lambda y: (y - mean) ** 2 * (w * stats.norm.pdf(y, m, s)).sum(), -10, 10, points=[-1, 1.5])[0]
    assert math.isclose(MIX.mean.item(), mean, rel_tol=1e-10) and math.isclose(MIX.variance.item(), var, rel_tol=1e-9)


@settings(max_examples=30, deadline=None)
@given(mix=_mixtures(), alpha=st.floats(0.0, 1.0), beta=st.floats(0.05, 2.0))
def test_score_and_its_derivative_match_autograd(mix, alpha, beta):
    pt = mix.noised(alpha=alpha, beta=beta)
    x = torch.linspace(-5, 5, 57, dtype=F64).requires_grad_(True)
    (d1,) = torch.autograd.grad(pt.log_prob(x).sum(), x, create_graph=True)
    (d2,) = torch.autograd.grad(d1.sum(), x)
    torch.testing.assert_close(pt.score(x.detach()), d1.detach(), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(pt.score_derivative(x.detach()), d2, rtol=1e-8, atol=1e-8)


@settings(max_examples=20, deadline=None)
@given(mix=_mixtures(), alpha=st.floats(0.1, 1.0), beta=st.floats(0.1, 1.5))
def test_tweedie_links_score_and_posterior_mean(mix, alpha, beta):
    x = torch.linspace(-4, 4, 33, dtype=F64)
    lhs = mix.noised(alpha=alpha, beta=beta).score(x)
    rhs = (alpha * mix.posterior_mean(x, alpha=alpha, beta=beta) - x) / beta**2
    torch.testing.assert_close(lhs, rhs, rtol=1e-9, atol=1e-9)


def test_posterior_moments_against_quadrature():
    m, s, w = _np(MIX)
    a, b = 0.8, 0.6
    for x in (-1.7, 0.2, 1.1, 2.8):
        joint = lambda z: (w * stats.norm.pdf(z, m, s)).sum() * stats.norm.pdf(x, a * z, b)
        Z = integrate.quad(joint, -6, 6, points=[-1, 1.5], epsabs=1e-14)[0]
        mu = integrate.quad(lambda z: z * joint(z), -6, 6, points=[-1, 1.5], epsabs=1e-14)[0] / Z
        var = integrate.quad(lambda z: (z - mu) ** 2 * joint(z), -6, 6, points=[-1, 1.5], epsabs=1e-14)[0] / Z
        assert math.isclose(MIX.posterior_mean(T(x), alpha=a, beta=b).item(), mu, rel_tol=1e-8, abs_tol=1e-10)
        assert math.isclose(MIX.posterior_var(T(x), alpha=a, beta=b).item(), var, rel_tol=1e-8)


def test_noised_parameters_and_samples():
    pt = MIX.noised(alpha=0.6, beta=0.8)
    torch.testing.assert_close(pt.means, 0.6 * MIX.means)
    torch.testing.assert_close(pt.stds, torch.sqrt(0.36 * MIX.stds**2 + 0.64))
    x = MIX.sample(200_000, gen=torch.Generator().manual_seed(0))
    assert x.dtype == F64 and x.shape == (200_000,)
    assert abs(x.mean().item() - MIX.mean.item()) < 4 * math.sqrt(MIX.variance.item() / 2e5)
    assert abs(x.var().item() / MIX.variance.item() - 1) < 0.02
    assert MIX.sample(0).shape == (0,)


def test_quantiles_invert_the_cdf_in_both_tails():
    u = torch.tensor([1e-12, 0.01, 0.3, 0.5, 0.77, 0.999], dtype=F64)
    torch.testing.assert_close(MIX.cdf(MIX.quantile(u)), u, rtol=1e-9, atol=1e-15)
    z = torch.linspace(-12, 12, 25, dtype=F64)                 # Phi(12) rounds to 1 in float64
    torch.testing.assert_close(GAUSS.normal_quantile(z), 0.3 + 0.8 * z, rtol=0, atol=1e-10)
    zq = torch.tensor([-3.0, 0.5, 2.0], dtype=F64)
    torch.testing.assert_close(MIX.normal_quantile(zq), MIX.quantile(torch.special.ndtr(zq)), rtol=0, atol=1e-10)


# -- score estimates and objectives ------------------------------------------------------------
def test_conditional_score_and_ratio_estimate():
    a, b = 0.6, 0.8
    x_t, x0 = T(0.4, -1.2), T(1.0, 0.5)
    torch.testing.assert_close(sc.conditional_score(x_t, x0, alpha=a, beta=b), -(x_t - a * x0) / b**2)
    # one data point: the ratio estimate is that point's kernel score
    torch.testing.assert_close(sc.ratio_score_estimate(x_t, x0[:, None], alpha=a, beta=b),
                               sc.conditional_score(x_t, x0, alpha=a, beta=b))
    # many data points: close to the exact score
    big = GAUSS.sample(400_000, gen=torch.Generator().manual_seed(1))
    est = sc.ratio_score_estimate(x_t, big, alpha=a, beta=b)
    torch.testing.assert_close(est, GAUSS.noised(alpha=a, beta=b).score(x_t), rtol=0, atol=0.01)
    # tiny beta: the softmax weights must not underflow into NaN
    tiny = sc.ratio_score_estimate(T(0.5), T(0.1, 0.9, 3.0), alpha=1.0, beta=1e-3)
    assert bool(torch.isfinite(tiny).all())


def test_gaussian_objectives_have_the_closed_forms():
    a, b, s = 0.6, 0.8, 1.0
    data = sc.GaussianMixture1d(T(0.0), T(s), T(1.0))
    v = a * a * s * s + b * b
    for c1, c0 in [(0.0, 0.0), (-1.0, 0.3), (2.0, 1.0)]:
        fn = lambda x: c1 * x + c0
        assert math.isclose(sc.sm_loss_quad(fn, data, alpha=a, beta=b).item(), c1**2 * v + 2 * c1 + 1 / v + c0**2, rel_tol=1e-12)
        assert math.isclose(sc.csm_loss_quad(fn, data, alpha=a, beta=b).item(), c1**2 * v + 2 * c1 + 1 / b**2 + c0**2, rel_tol=1e-12)
    assert math.isclose(sc.csm_sm_gap(data, alpha=a, beta=b).item(), 0.5625, rel_tol=1e-12)


@settings(max_examples=15, deadline=None)
@given(mix=_mixtures(), alpha=st.floats(0.2, 0.95), c1=st.floats(-2, 2), c0=st.floats(-1, 1))
def test_csm_minus_sm_is_the_posterior_variance_constant(mix, alpha, c1, c0):
    beta = math.sqrt(1 - alpha * alpha)
    fn = lambda x: c1 * torch.tanh(x) + c0 * x
    gap = (sc.csm_loss_quad(fn, mix, alpha=alpha, beta=beta) - sc.sm_loss_quad(fn, mix, alpha=alpha, beta=beta)).item()
    assert gap >= 0
    assert math.isclose(gap, sc.csm_sm_gap(mix, alpha=alpha, beta=beta).item(), rel_tol=1e-6, abs_tol=1e-8)


def test_monte_carlo_losses_agree_with_quadrature():
    a, b = 0.8, 0.6
    g = torch.Generator().manual_seed(2)
    x0 = MIX.sample(400_000, gen=g)
    eps = torch.randn(400_000, generator=g, dtype=F64)
    x_t = a * x0 + b * eps
    fn = lambda x: -x + 0.3
    sm = sc.sm_loss(fn, x_t, MIX.noised(alpha=a, beta=b).score(x_t)).item()
    csm = sc.csm_loss(fn, x0, eps, alpha=a, beta=b).item()
    assert abs(sm - sc.sm_loss_quad(fn, MIX, alpha=a, beta=b).item()) < 0.01
    assert abs(csm - sc.csm_loss_quad(fn, MIX, alpha=a, beta=b).item()) < 0.02


# -- flows ----------------------------------------------------------------------------------
def test_rk4_matches_exponential_in_both_directions():
    x = T(1.0, -2.0)
    out = sc.odeint_rk4(lambda y, t: -y, x, 0.0, 2.0, steps=200)
    torch.testing.assert_close(out, x * math.exp(-2.0), rtol=1e-9, atol=0)
    back = sc.odeint_rk4(lambda y, t: -y, out, 2.0, 0.0, steps=200)
    torch.testing.assert_close(back, x, rtol=1e-9, atol=0)
    path = sc.odeint_rk4(lambda y, t: t * torch.ones_like(y), x, 0.0, 1.0, steps=10, return_path=True)
    assert path.shape == (11, 2)
    torch.testing.assert_close(path[-1], x + 0.5)


def test_euler_maruyama_shares_noise_and_reduces_to_euler():
    g = torch.Generator().manual_seed(3)
    x = T(0.0, 1.0)
    noise = torch.randn(50, 2, generator=g, dtype=F64)
    pure = sc.sde_euler_maruyama(lambda y, t: 0 * y, lambda t: 2.0, x, 1.0, 0.0, noise)
    torch.testing.assert_close(pure, x + 2.0 * math.sqrt(1 / 50) * noise.sum(0))
    det = sc.sde_euler_maruyama(lambda y, t: -y, lambda t: 0.0, x, 0.0, 1.0, noise)
    torch.testing.assert_close(det, x * (1 - 1 / 50) ** 50)


# -- Wasserstein distances --------------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 40), m=st.integers(1, 40), seed=st.integers(0, 1000))
def test_empirical_w1_matches_scipy(n, m, seed):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, generator=g, dtype=F64), 2 * torch.randn(m, generator=g, dtype=F64) + 0.5
    assert math.isclose(sc.wasserstein_1d(x, y, p=1).item(), stats.wasserstein_distance(x.numpy(), y.numpy()),
                        rel_tol=1e-10, abs_tol=1e-12)


def test_empirical_w2_unequal_sizes_by_replication():
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(4, generator=g, dtype=F64), torch.randn(6, generator=g, dtype=F64)
    xr, yr = x.repeat_interleave(3), y.repeat_interleave(2)         # both of size 12, same measures
    ref = ((torch.sort(xr).values - torch.sort(yr).values) ** 2).mean().sqrt()
    torch.testing.assert_close(sc.wasserstein_1d(x, y, p=2), ref, rtol=1e-12, atol=0)


def test_gaussian_and_mixture_w2():
    assert math.isclose(sc.w2_gaussian_1d(0.0, 1.0, 3.0, 5.0), 5.0)
    g2 = sc.GaussianMixture1d(T(-0.4), T(0.3), T(1.0))
    assert math.isclose(sc.wasserstein_gmm_1d(GAUSS, g2).item(), sc.w2_gaussian_1d(0.3, 0.8, -0.4, 0.3), rel_tol=1e-6)
    # O(h^2): ten times the grid points, a hundred times smaller error
    e1 = abs(sc.wasserstein_gmm_1d(GAUSS, g2, n_grid=1001).item() - sc.w2_gaussian_1d(0.3, 0.8, -0.4, 0.3))
    e2 = abs(sc.wasserstein_gmm_1d(GAUSS, g2, n_grid=10001).item() - sc.w2_gaussian_1d(0.3, 0.8, -0.4, 0.3))
    assert 50 < e1 / e2 < 200
    # W1 of two mixtures equals the integral of |F - G| (scipy quad)
    m1, s1, w1 = _np(MIX)
    m2, s2, w2 = _np(g2)
    ref = integrate.quad(lambda y: abs((w1 * stats.norm.cdf(y, m1, s1)).sum() - (w2 * stats.norm.cdf(y, m2, s2)).sum()),
                         -8, 8, points=[-1, -0.4, 1.5], limit=200, epsabs=1e-12)[0]
    assert math.isclose(sc.wasserstein_gmm_1d(MIX, g2, p=1).item(), ref, rel_tol=1e-6)


# -- validation ------------------------------------------------------------------------------
def test_mixture_validation():
    with pytest.raises(TypeError, match="means"):
        sc.GaussianMixture1d([0.0], T(1.0), T(1.0))
    with pytest.raises(ValueError, match="at least one"):
        sc.GaussianMixture1d(T(), T(), T())
    with pytest.raises(ValueError, match="same shape"):
        sc.GaussianMixture1d(T(0.0, 1.0), T(1.0), T(1.0))
    with pytest.raises(TypeError, match="dtype"):
        sc.GaussianMixture1d(T(0.0), T(1.0, dtype=torch.float32), T(1.0))
    with pytest.raises(ValueError, match="stds"):
        sc.GaussianMixture1d(T(0.0), T(0.0), T(1.0))
    with pytest.raises(ValueError, match="weights"):
        sc.GaussianMixture1d(T(0.0, 1.0), T(1.0, 1.0), T(0.7, 0.7))
    with pytest.raises(TypeError, match="x must have"):
        MIX.score(torch.zeros(3, dtype=torch.float32))
    with pytest.raises(ValueError, match="NaN"):
        MIX.log_prob(T(float("nan")))
    with pytest.raises(ValueError, match="open interval"):
        MIX.quantile(T(0.0, 0.5))
    with pytest.raises(ValueError, match="beta"):
        MIX.noised(alpha=0.5, beta=0.0)
    with pytest.raises(ValueError, match="alpha"):
        MIX.posterior_mean(T(0.0), alpha=-0.1, beta=1.0)
    with pytest.raises(ValueError, match="n"):
        MIX.sample(-1)
    with pytest.raises(ValueError, match="iters"):
        MIX.quantile(T(0.5), iters=0)


def test_function_validation():
    fn = lambda x: x
    with pytest.raises(ValueError, match="x0 must have shape"):
        sc.ratio_score_estimate(T(0.0, 1.0), torch.zeros(3, 2, dtype=F64), alpha=1.0, beta=1.0)
    with pytest.raises(ValueError, match="at least one sample"):
        sc.ratio_score_estimate(T(0.0), torch.zeros(1, 0, dtype=F64), alpha=1.0, beta=1.0)
    with pytest.raises(ValueError, match="x_t"):
        sc.ratio_score_estimate(torch.zeros(2, 2, dtype=F64), T(0.0), alpha=1.0, beta=1.0)
    with pytest.raises(ValueError, match="score_true"):
        sc.sm_loss(fn, T(0.0, 1.0), T(0.0))
    with pytest.raises(ValueError, match="eps"):
        sc.csm_loss(fn, T(0.0, 1.0), T(0.0), alpha=1.0, beta=1.0)
    with pytest.raises(ValueError, match="n_nodes"):
        sc.sm_loss_quad(fn, MIX, alpha=1.0, beta=1.0, n_nodes=1)
    with pytest.raises(ValueError, match="steps"):
        sc.odeint_rk4(lambda x, t: x, T(0.0), 0.0, 1.0, steps=0)
    with pytest.raises(ValueError, match="noise"):
        sc.sde_euler_maruyama(lambda x, t: x, lambda t: 1.0, T(0.0, 1.0), 0.0, 1.0, torch.zeros(5, 3, dtype=F64))
    with pytest.raises(ValueError, match="s1"):
        sc.w2_gaussian_1d(0.0, -1.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="p"):
        sc.wasserstein_1d(T(0.0), T(1.0), p=0.5)
    with pytest.raises(ValueError, match="non-empty"):
        sc.wasserstein_1d(T(), T(1.0))
    with pytest.raises(TypeError, match="share"):
        sc.wasserstein_gmm_1d(MIX, sc.GaussianMixture1d(T(0.0, dtype=torch.float32), T(1.0, dtype=torch.float32),
                                                        T(1.0, dtype=torch.float32)))
    with pytest.raises(TypeError, match="conditional|x_t"):
        sc.conditional_score([0.0], T(0.0), alpha=1.0, beta=1.0)
