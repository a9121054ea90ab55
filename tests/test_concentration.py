"""Tests of kexue_lib.concentration (P25): closed forms against quadrature, mpmath and Monte Carlo."""
from __future__ import annotations

import math

import mpmath as mp
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats

from kexue_lib import concentration as c

F64 = torch.float64


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _quad_S(f, beta, gamma):
    """E|f(X)| / sqrt(E f(X)^2) for X = beta + gamma Z by scipy quadrature over z."""
    w = lambda z: stats.norm.pdf(z)                                           # noqa: E731
    lo, hi = -40.0, 40.0 + 4 * gamma                                          # the exp tails sit near z = 2 gamma
    m1 = integrate.quad(lambda z: abs(f(beta + gamma * z)) * w(z), lo, hi, epsabs=0, epsrel=1e-12, limit=200)[0]
    m2 = integrate.quad(lambda z: f(beta + gamma * z) ** 2 * w(z), lo, hi, epsabs=0, epsrel=1e-12, limit=200)[0]
    return m1 / math.sqrt(m2)


def _mp_relu2(r):
    with mp.workdps(80):
        r = mp.mpf(r)
        P, p = mp.ncdf(r), mp.npdf(r)
        e2 = (1 + r**2) * P + r * p
        e4 = (r**4 + 6 * r**2 + 3) * P + (r**3 + 5 * r) * p
        return float(e2 / mp.sqrt(e4))


# ---------------------------------------------------------------- the measure
def test_row_sparsity_matches_numpy_and_extremes():
    a = torch.rand(5, 11, generator=_gen(0), dtype=F64) - 0.4
    x = a.numpy()
    ref = np.mean(np.abs(x), -1) / np.sqrt(np.mean(x**2, -1))
    np.testing.assert_allclose(c.row_sparsity(a).numpy(), ref, rtol=1e-13)
    onehot = torch.zeros(16, dtype=F64)
    onehot[3] = 7.0
    assert abs(float(c.row_sparsity(onehot)) - 0.25) < 1e-15
    assert abs(float(c.row_sparsity(torch.full((9,), 2.5, dtype=F64))) - 1) < 1e-15
    torch.testing.assert_close(c.row_sparsity(a.T, dim=0), c.row_sparsity(a), rtol=1e-14, atol=0)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 50), scale=st.floats(1e-3, 1e3))
def test_row_sparsity_bounds_and_scale_invariance(seed, n, scale):
    a = torch.randn(n, generator=_gen(seed), dtype=F64)
    s = float(c.row_sparsity(a))
    assert 1 / math.sqrt(n) - 1e-12 <= s <= 1 + 1e-12
    assert abs(float(c.row_sparsity(scale * a)) - s) < 1e-12


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), d=st.integers(1, 64))
def test_norm_ratio_bounds(seed, d):
    q = torch.randn(d, generator=_gen(seed), dtype=F64)
    r = float(c.norm_ratio(q))
    assert 1 / math.sqrt(d) - 1e-12 <= r <= 1 + 1e-12
    assert abs(float(c.norm_ratio(torch.ones(d, dtype=F64))) - 1 / math.sqrt(d)) < 1e-14
    e = torch.zeros(d, dtype=F64)
    e[0] = 3.0
    assert float(c.norm_ratio(e)) == 1.0


# ---------------------------------------------------------------- closed forms vs quadrature
@pytest.mark.parametrize("beta,gamma", [(1.0, 1.0), (0.0, 0.5), (-2.0, 1.7), (3.0, 0.2)])
def test_S_exp_matches_quadrature_and_is_beta_free(beta, gamma):
    ref = _quad_S(math.exp, beta, gamma)
    assert abs(float(c.S_exp(beta, gamma)) - ref) < 1e-9
    assert abs(float(c.S_exp(beta, gamma)) - math.exp(-gamma**2 / 2)) < 1e-15


@pytest.mark.parametrize("beta,gamma", [(0.0, 1.0), (1.0, 1.0), (-1.0, 1.0), (-2.0, 1.0), (2.0, 0.5), (-3.0, 2.0)])
def test_S_relu2_matches_quadrature(beta, gamma):
    f = lambda x: max(x, 0.0) ** 2                                             # noqa: E731
    w = lambda z: stats.norm.pdf(z)                                           # noqa: E731
    z0 = -beta / gamma                                                        # integrate only where relu > 0
    m1 = integrate.quad(lambda z: f(beta + gamma * z) * w(z), z0, np.inf, epsabs=0, epsrel=1e-12)[0]
    m2 = integrate.quad(lambda z: f(beta + gamma * z) ** 2 * w(z), z0, np.inf, epsabs=0, epsrel=1e-12)[0]
    assert abs(float(c.S_relu2(beta, gamma)) / (m1 / math.sqrt(m2)) - 1) < 1e-9


def test_S_relu2_brief_values():
    table = {0: 1 / math.sqrt(6), 1: 0.61277, -1: 0.20526, -2: 0.07201, -3: 0.01671, -4: 0.00248}
    for r, v in table.items():
        assert abs(float(c.S_relu2(float(r), 1.0)) - v) < 6e-6, r
    assert abs(float(c.S_relu2(2.0, 0.5)) - 0.90227) < 6e-6


@pytest.mark.parametrize("r", [-37.0, -30.0, -12.0, -8.0001, -7.9999, -5.0, -2.5, -0.3, 0.0, 0.7, 4.0, 40.0])
def test_S_relu2_against_mpmath_over_the_whole_range(r):
    ref = _mp_relu2(r)
    tol = 1e-12 if r >= -4 else 1e-8
    assert abs(float(c.S_relu2(r, 1.0)) / ref - 1) < tol


def test_S_relu2_limits_and_dtype():
    r = torch.tensor([-1e6, 1e6], dtype=F64)
    out = c.S_relu2(r, torch.ones((), dtype=F64))
    assert float(out[0]) == 0.0 and abs(float(out[1]) - 1) < 1e-9
    out32 = c.S_relu2(torch.tensor([0.0, -2.0]), torch.tensor(1.0))
    assert out32.dtype == torch.float32
    assert abs(float(out32[0]) - 1 / math.sqrt(6)) < 1e-7


@pytest.mark.parametrize("beta,gamma", [(0.0, 1.0), (1.0, 1.0), (-1.0, 2.0), (3.0, 1.0), (-0.4, 0.1)])
def test_S_identity_matches_quadrature(beta, gamma):
    assert abs(float(c.S_identity(beta, gamma)) - _quad_S(lambda x: x, beta, gamma)) < 1e-9


def test_S_identity_brief_values_even_and_minimum():
    for (b, g), v in {(0.0, 1.0): 0.79788, (1.0, 1.0): 0.82493, (-1.0, 2.0): 0.80104, (3.0, 1.0): 0.94892}.items():
        assert abs(float(c.S_identity(b, g)) - v) < 6e-6
    r = torch.linspace(-50, 50, 20001, dtype=F64)
    s = c.S_identity(r, 1.0)
    torch.testing.assert_close(s, c.S_identity(-r, 1.0), rtol=0, atol=1e-15)
    assert abs(float(s.min()) - math.sqrt(2 / math.pi)) < 1e-15 and int(s.argmin()) == 10000
    assert float(s[0]) > 0.9997


def test_closed_forms_against_monte_carlo():
    n = 400_000
    z = torch.randn(n, generator=_gen(1), dtype=F64)
    for b, g in ((1.0, 1.0), (0.0, 0.5), (-0.5, 1.2)):
        x = b + g * z
        for name, S in (("exp", c.S_exp), ("relu2", c.S_relu2), ("identity", c.S_identity)):
            mc = float(c.row_sparsity(c.KERNELS[name](x)))
            assert abs(mc - float(S(b, g))) < 5e-3, (name, b, g)


def test_broadcasting_devices_and_numpy_inputs():
    b = np.array([[0.0], [1.0]])
    g = torch.tensor([0.5, 1.0, 2.0], dtype=F64)
    for S in (c.S_exp, c.S_relu2, c.S_identity):
        out = S(b, g)
        assert out.shape == (2, 3) and out.dtype == F64
    assert float(c.S_exp(0.0, 0.0)) == 1.0


# ---------------------------------------------------------------- decay rows
@pytest.mark.parametrize("lam,n,ref", [(0.9, 10, 0.95790), (0.99, 1000, 0.44607), (0.5, 100, math.sqrt(0.03))])
def test_S_decay_brief_values_and_direct_vector(lam, n, ref):
    a = lam ** torch.arange(n - 1, -1, -1, dtype=F64)
    direct = float(c.row_sparsity(a))
    got = float(c.S_decay(lam, n))
    assert abs(got - direct) < 1e-13 and abs(got - ref) < 6e-6


def test_S_decay_near_one_limit_and_bound():
    lam = torch.tensor([1.0, 1 - 1e-13, 1 - 1e-6, 0.3], dtype=F64)
    out = c.S_decay(lam, 50)
    assert abs(float(out[0]) - 1) < 1e-15 and abs(float(out[1]) - 1) < 1e-9
    direct = float(c.row_sparsity((1 - 1e-6) ** torch.arange(49, -1, -1, dtype=F64)))
    assert abs(float(out[2]) - direct) < 1e-12
    lam2 = torch.linspace(0.01, 0.99, 99, dtype=F64)
    for n in (1, 2, 10, 1000):                                  # S / bound = sqrt(1 - lam^n) < 1
        torch.testing.assert_close(c.S_decay(lam2, n) / c.S_decay_bound(lam2, n), torch.sqrt(1 - lam2**n), rtol=1e-13, atol=0)


# ---------------------------------------------------------------- linear attention
def test_S_linear_exact_on_a_finite_row_and_population():
    d, n = 6, 20_000
    g = _gen(3)
    A = torch.randn(d, d, generator=g, dtype=F64)
    keys = torch.randn(n, d, generator=g, dtype=F64) @ A.T + 0.5
    fk = torch.nn.functional.softplus(keys)
    fq = torch.rand(3, d, generator=g, dtype=F64)
    rows = fq @ fk.T
    mu = fk.mean(0)
    cov = (fk - mu).T @ (fk - mu) / n                                          # biased: exact identity
    torch.testing.assert_close(c.S_linear(fq, mu, cov), c.row_sparsity(rows), rtol=1e-12, atol=0)
    q1 = fq[0]
    alt = (q1 @ mu) / torch.sqrt(q1 @ (torch.outer(mu, mu) + cov) @ q1)
    assert abs(float(c.S_linear(q1, mu, cov)) - float(alt)) < 1e-14


def test_S_linear_iid_special_case_and_bound():
    d = 8
    q = torch.rand(5, d, generator=_gen(4), dtype=F64)
    mean, std = 1.3, 0.7
    mu = torch.full((d,), mean, dtype=F64)
    cov = std**2 * torch.eye(d, dtype=F64)
    torch.testing.assert_close(c.S_linear_iid(q, mean=mean, std=std), c.S_linear(q, mu, cov), rtol=1e-13, atol=0)
    floor = 1 / math.sqrt(1 + (std / mean) ** 2)
    assert bool((c.S_linear_iid(q, mean=mean, std=std) >= floor - 1e-15).all())
    e = torch.zeros(d, dtype=F64)
    e[2] = 1.0
    assert abs(float(c.S_linear_iid(e, mean=mean, std=std)) - floor) < 1e-15


def test_S_linear_iid_against_gamma_features():
    g = _gen(5)
    n, d = 200_000, 16
    # gamma(shape 4, scale 1/4): mean 1, sd 0.5
    fk = torch.distributions.Gamma(torch.tensor(4.0, dtype=F64), torch.tensor(4.0, dtype=F64)).sample((n, d))
    fq = torch.rand(d, generator=g, dtype=F64)
    emp = float(c.row_sparsity(fk @ fq))
    assert abs(emp - float(c.S_linear_iid(fq, mean=1.0, std=0.5))) < 2e-3


def test_kernel_rows_and_linear_rows():
    g = _gen(6)
    q = torch.randn(2, 3, 5, generator=g, dtype=F64)
    k = torch.randn(2, 7, 5, generator=g, dtype=F64)
    s = 0.7 * torch.einsum("bmd,bnd->bmn", q, k)
    torch.testing.assert_close(c.kernel_rows(q, k, "exp", scale=0.7), torch.softmax(s, -1), rtol=1e-14, atol=0)
    torch.testing.assert_close(c.kernel_rows(q, k, "relu2", scale=0.7), torch.relu(s) ** 2, rtol=1e-14, atol=0)
    torch.testing.assert_close(c.kernel_rows(q, k, "identity", scale=0.7), s, rtol=1e-14, atol=0)
    torch.testing.assert_close(c.kernel_rows(q, k, torch.tanh, scale=0.7), torch.tanh(s), rtol=1e-14, atol=0)
    lin = c.linear_attention_rows(q, k)
    fq, fk = torch.nn.functional.elu(q) + 1, torch.nn.functional.elu(k) + 1
    ref = torch.einsum("bmd,bnd->bmn", fq, fk)
    torch.testing.assert_close(lin, ref / ref.sum(-1, keepdim=True), rtol=1e-14, atol=0)
    torch.testing.assert_close(lin.sum(-1), torch.ones(2, 3, dtype=F64), rtol=0, atol=1e-14)
    for fm in ("relu", "softplus", torch.exp):
        assert c.linear_attention_rows(q.abs() + 0.1, k.abs() + 0.1, fm).shape == (2, 3, 7)


def test_softmax_rows_are_invariant_to_a_key_shift():
    g = _gen(7)
    q, k = torch.randn(4, 8, generator=g, dtype=F64), torch.randn(50, 8, generator=g, dtype=F64)
    mu = 3 * torch.randn(8, generator=g, dtype=F64)
    torch.testing.assert_close(c.kernel_rows(q, k + mu), c.kernel_rows(q, k), rtol=1e-12, atol=1e-15)


def test_gaussian_feature_moments_against_closed_forms_and_quadrature():
    mu = torch.tensor([-1.5, 0.0, 0.4, 2.0], dtype=F64)
    sigma = 1.3
    mean, var = c.gaussian_feature_moments(mu, sigma, "relu")
    r = mu.numpy() / sigma
    e1 = sigma * stats.norm.pdf(r) + mu.numpy() * stats.norm.cdf(r)           # E relu(X)
    e2 = (mu.numpy() ** 2 + sigma**2) * stats.norm.cdf(r) + mu.numpy() * sigma * stats.norm.pdf(r)
    np.testing.assert_allclose(mean.numpy(), e1, rtol=1e-13)
    np.testing.assert_allclose(var.numpy(), e2 - e1**2, rtol=1e-12)
    big = torch.randn(400_000, generator=_gen(8), dtype=F64)
    mc = torch.relu(mu[0] + sigma * big)                                      # Monte Carlo, independent of the formula
    assert abs(float(mc.mean()) - float(mean[0])) < 4 * float(mc.std()) / 400_000**0.5
    mean, var = c.gaussian_feature_moments(mu, sigma, "elu1")
    for i, m in enumerate(mu.tolist()):
        f = lambda z: (m + sigma * z + 1 if m + sigma * z > 0 else math.exp(m + sigma * z)) * stats.norm.pdf(z)  # noqa: E731
        g = lambda z: (m + sigma * z + 1 if m + sigma * z > 0 else math.exp(m + sigma * z)) ** 2 * stats.norm.pdf(z)  # noqa: E731
        cut = -m / sigma
        e1 = sum(integrate.quad(f, a, b, epsabs=0, epsrel=1e-12)[0] for a, b in ((-40, cut), (cut, 40)))
        e2 = sum(integrate.quad(g, a, b, epsabs=0, epsrel=1e-12)[0] for a, b in ((-40, cut), (cut, 40)))
        assert abs(float(mean[i]) - e1) < 1e-10 * e1 and abs(float(var[i]) - (e2 - e1**2)) < 1e-9 * (e2 - e1**2)
    ms, vs = c.gaussian_feature_moments(mu, sigma, "softplus", nodes=120)    # smooth: Gauss-Hermite
    f = lambda z: math.log1p(math.exp(0.4 + sigma * z)) * stats.norm.pdf(z)  # noqa: E731
    assert abs(float(ms[2]) - integrate.quad(f, -40, 40, epsabs=0, epsrel=1e-12)[0]) < 1e-6
    m2, v2 = c.gaussian_feature_moments(mu, sigma, torch.exp)                 # lognormal: exact
    torch.testing.assert_close(m2, torch.exp(mu + sigma**2 / 2), rtol=1e-10, atol=0)
    torch.testing.assert_close(v2, (math.exp(sigma**2) - 1) * torch.exp(2 * mu + sigma**2), rtol=1e-8, atol=0)


# ---------------------------------------------------------------- validation errors
def test_validation_errors():
    with pytest.raises(ValueError, match="gamma"):
        c.S_relu2(0.0, 0.0)
    with pytest.raises(ValueError, match="gamma"):
        c.S_exp(0.0, -1.0)
    with pytest.raises(ValueError, match="gamma"):
        c.S_identity(0.0, torch.tensor([1.0, 0.0]))
    with pytest.raises(TypeError, match="beta"):
        c.S_exp("x", 1.0)
    with pytest.raises(TypeError, match="beta"):
        c.S_exp(True, 1.0)
    with pytest.raises(TypeError, match="gamma"):
        c.S_exp(0.0, object())
    with pytest.raises(ValueError, match="beta"):
        c.S_exp(float("nan"), 1.0)
    with pytest.raises(ValueError, match="beta"):
        c.S_exp(np.array([np.inf]), 1.0)
    with pytest.raises(ValueError, match="lam"):
        c.S_decay(1.5, 10)
    with pytest.raises(ValueError, match="lam"):
        c.S_decay_bound(1.0, 10)
    with pytest.raises(ValueError, match="n"):
        c.S_decay(0.5, 0)
    with pytest.raises(TypeError, match="n"):
        c.S_decay(0.5, 2.5)
    q = torch.rand(4, dtype=F64)
    with pytest.raises(ValueError, match="mu"):
        c.S_linear(q, torch.rand(3, dtype=F64), torch.eye(4, dtype=F64))
    with pytest.raises(ValueError, match="q_feat . mu"):
        c.S_linear(q, -torch.ones(4, dtype=F64), torch.eye(4, dtype=F64))
    with pytest.raises(ValueError, match="semi-definite"):
        c.S_linear(q, torch.ones(4, dtype=F64), -torch.eye(4, dtype=F64))
    with pytest.raises(TypeError, match="q_feat"):
        c.S_linear([1.0], torch.ones(1), torch.eye(1))
    with pytest.raises(ValueError, match="mean"):
        c.S_linear_iid(q, mean=0.0, std=1.0)
    with pytest.raises(ValueError, match="std"):
        c.S_linear_iid(q, mean=1.0, std=-1.0)
    with pytest.raises(ValueError, match="non-negative"):
        c.S_linear_iid(-q, mean=1.0, std=1.0)
    with pytest.raises(ValueError, match="zero vector"):
        c.norm_ratio(torch.zeros(3, dtype=F64))
    with pytest.raises(ValueError, match="zero vector"):
        c.row_sparsity(torch.zeros(2, 3, dtype=F64))
    k = torch.rand(5, 4, dtype=F64)
    with pytest.raises(ValueError, match="last dimension"):
        c.kernel_rows(torch.rand(2, 3, dtype=F64), k)
    with pytest.raises(ValueError, match="dtype"):
        c.kernel_rows(torch.rand(2, 4), k)
    with pytest.raises(ValueError, match="f must be one of"):
        c.kernel_rows(torch.rand(2, 4, dtype=F64), k, "gelu")
    with pytest.raises(TypeError, match="f must be"):
        c.kernel_rows(torch.rand(2, 4, dtype=F64), k, 3)
    with pytest.raises(ValueError, match="scale"):
        c.kernel_rows(torch.rand(2, 4, dtype=F64), k, scale=float("inf"))
    with pytest.raises(ValueError, match="feature_map must be one of"):
        c.linear_attention_rows(torch.rand(2, 4, dtype=F64), k, "tanh")
    with pytest.raises(TypeError, match="feature_map"):
        c.linear_attention_rows(torch.rand(2, 4, dtype=F64), k, 1)
    with pytest.raises(ValueError, match="non-negative features"):
        c.linear_attention_rows(torch.rand(2, 4, dtype=F64), k, lambda x: x - 10)
    with pytest.raises(ValueError, match="sigma"):
        c.gaussian_feature_moments(torch.zeros(3, dtype=F64), 0.0)
    with pytest.raises(ValueError, match="feature_map must be one of"):
        c.gaussian_feature_moments(torch.zeros(3, dtype=F64), 1.0, "tanh")
    with pytest.raises(TypeError, match="feature_map"):
        c.gaussian_feature_moments(torch.zeros(3, dtype=F64), 1.0, 2)
    with pytest.raises(ValueError, match="all zero"):
        c.linear_attention_rows(-torch.rand(2, 4, dtype=F64), -k, "relu")
