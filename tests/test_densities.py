"""Tests for kexue_lib.densities (P02): against brute force, SciPy quadrature, autograd and closed forms."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from scipy import integrate, stats

from kexue_lib import densities as D
from kexue_lib.device import randn

F64, C128 = torch.float64, torch.complex128


def rand_a(n_freqs: int, seed: int) -> torch.Tensor:
    z = randn(2, n_freqs + 1, seed=seed, dtype=F64)
    return torch.complex(z[0], z[1])


def scalar(fn):
    """Wrap a torch function of x into a float -> float function for scipy.integrate.quad."""
    return lambda t: float(fn(torch.tensor(t, dtype=F64)))


# ----------------------------------------------------------------------------- coefficients
@settings(max_examples=25, deadline=None)
@given(n=st.integers(0, 12), seed=st.integers(0, 10_000))
def test_autocorrelation_matches_double_loop(n, seed):
    a = rand_a(n, seed)
    ref = [sum(a[k] * a[k + m].conj() for k in range(n + 1 - m)) for m in range(n + 1)]
    torch.testing.assert_close(D.autocorrelation(a), torch.stack(ref), rtol=1e-12, atol=1e-12)


def test_autocorrelation_is_batched_and_gives_the_fejer_kernel():
    a = torch.stack([rand_a(5, 1), rand_a(5, 2)])
    c = D.autocorrelation(a)
    assert c.shape == (2, 6)
    torch.testing.assert_close(c[1], D.autocorrelation(a[1]))
    # a = (1, ..., 1): c_n = N + 1 - n (the Fejer kernel's coefficients)
    ones = torch.ones(8, dtype=C128)
    torch.testing.assert_close(D.autocorrelation(ones).real, torch.arange(8, 0, -1, dtype=F64))


@settings(max_examples=25, deadline=None)
@given(n=st.integers(0, 10), seed=st.integers(0, 10_000))
def test_series_is_squared_modulus_and_density_integrates_to_one(n, seed):
    a = rand_a(n, seed)
    c = D.autocorrelation(a)
    x = torch.linspace(-1, 1, 513, dtype=F64)
    big_a = (a * torch.exp(-1j * math.pi * x[:, None] * torch.arange(n + 1))).sum(-1)
    torch.testing.assert_close(D.fourier_series(x, c), big_a.abs() ** 2, rtol=1e-10, atol=1e-10)
    mass, _ = integrate.quad(scalar(lambda t: D.trig_density(t, c)), -1, 1, limit=200)
    assert abs(mass - 1) < 1e-9


def test_toeplitz_entries_hermitian_and_padding():
    c = D.autocorrelation(rand_a(3, 5))
    t = D.toeplitz(c, 6)
    for m in range(6):
        for n in range(6):
            d = m - n
            want = 0 if abs(d) > 3 else (c[d] if d >= 0 else c[-d].conj())
            assert complex(t[m, n]) == pytest.approx(complex(want), abs=1e-14)
    torch.testing.assert_close(t, t.mH)
    assert D.toeplitz(c, 2).shape == (2, 2)
    assert D.toeplitz(torch.stack([c, 2 * c]), 7).shape == (2, 7, 7)


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 8), seed=st.integers(0, 10_000), extra=st.integers(0, 30))
def test_toeplitz_of_autocorrelation_is_psd_with_eigs_inside_range_of_f(n, seed, extra):
    c = D.autocorrelation(rand_a(n, seed))
    eig = torch.linalg.eigvalsh(D.toeplitz(c, n + 1 + extra))
    f = D.fourier_series(torch.linspace(-1, 1, 20001, dtype=F64), c)
    tol = 1e-9 * float(c[0].real)
    assert float(eig.min()) >= max(float(f.min()), 0) - tol
    assert float(eig.max()) <= float(f.max()) + tol


def test_non_psd_coefficients_give_a_negative_series():
    # c_0 = 1/2, c_1 = 0.4: f = 1/2 + 0.8 cos(pi x) < 0 at x = 1, and a large Toeplitz section sees it
    c = torch.tensor([0.5, 0.4], dtype=C128)
    assert float(D.fourier_series(torch.tensor(1.0, dtype=F64), c)) == pytest.approx(-0.3)
    assert float(torch.linalg.eigvalsh(D.toeplitz(c, 40)).min()) < -0.25
    assert float(torch.linalg.eigvalsh(D.toeplitz(c, 2)).min()) > 0       # the 2x2 section is still PD


# ----------------------------------------------------------------------------- CDF and inverse CDF
@settings(max_examples=15, deadline=None)
@given(n=st.integers(0, 8), seed=st.integers(0, 10_000))
def test_cdf_matches_quadrature_and_endpoints(n, seed):
    c = D.autocorrelation(rand_a(n, seed))
    xs = torch.tensor([-1.0, -0.7, -0.1, 0.3, 0.95, 1.0], dtype=F64)
    ref = [integrate.quad(scalar(lambda t: D.trig_density(t, c)), -1, float(x), limit=200)[0] for x in xs]
    torch.testing.assert_close(D.trig_cdf(xs, c), torch.tensor(ref, dtype=F64), rtol=0, atol=1e-10)


def test_cdf_derivative_is_density_and_icdf_inverts_it():
    c = D.autocorrelation(rand_a(7, 11))
    x = torch.linspace(-0.99, 0.99, 41, dtype=F64, requires_grad=True)
    (grad,) = torch.autograd.grad(D.trig_cdf(x, c).sum(), x)
    torch.testing.assert_close(grad, D.trig_density(x.detach(), c), rtol=1e-10, atol=1e-12)
    u = torch.rand(200, generator=torch.Generator().manual_seed(0), dtype=F64)
    torch.testing.assert_close(D.trig_cdf(D.trig_icdf(u, c), c), u, rtol=0, atol=1e-12)
    ends = D.trig_icdf(torch.tensor([0.0, 1.0], dtype=F64), c, n_iter=80)
    torch.testing.assert_close(ends, torch.tensor([-1.0, 1.0], dtype=F64), rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- smoothness penalty
@settings(max_examples=10, deadline=None)
@given(n=st.integers(0, 8), seed=st.integers(0, 10_000))
def test_smoothness_penalty_matches_quadrature_of_squared_derivative(n, seed):
    c = D.autocorrelation(rand_a(n, seed))

    def dfdx2(t):
        x = torch.tensor(t, dtype=F64, requires_grad=True)
        (g,) = torch.autograd.grad(D.fourier_series(x, c), x)
        return float(g) ** 2

    ref, _ = integrate.quad(dfdx2, -1, 1, limit=400)
    got = float(D.smoothness_penalty(c, normalized=False))
    assert got == pytest.approx(ref, rel=1e-7, abs=1e-9)
    assert float(D.smoothness_penalty(c)) == pytest.approx(ref / (2 * float(c[0].real)) ** 2, rel=1e-7, abs=1e-9)


def test_smoothness_penalty_scale_behaviour_and_batch():
    a = rand_a(5, 3)
    c, c3 = D.autocorrelation(a), D.autocorrelation(3 * a)
    # f scales like |a|^2, so the post's penalty on f scales like |a|^4; the normalised one does not move
    torch.testing.assert_close(D.smoothness_penalty(c3, normalized=False), 81 * D.smoothness_penalty(c, normalized=False))
    torch.testing.assert_close(D.smoothness_penalty(c3), D.smoothness_penalty(c))
    assert D.smoothness_penalty(torch.stack([c, c3])).shape == (2,)
    assert float(D.smoothness_penalty(D.autocorrelation(torch.ones(1, dtype=C128)))) == 0.0


# ----------------------------------------------------------------------------- the module on the real line
def _model(n_freqs=6, seed=0, **kw) -> D.FourierDensity:
    m = D.FourierDensity(n_freqs, loc=0.3, scale=1.7, dtype=F64, **kw)
    a = rand_a(n_freqs, seed)
    with torch.no_grad():
        m.a_real.copy_(a.real)
        m.a_imag.copy_(a.imag)
    return m


def test_module_unit_density_agrees_with_coefficient_formula():
    m = _model()
    x = torch.linspace(-1, 1, 301, dtype=F64)
    with torch.no_grad():
        torch.testing.assert_close(m.unit_prob(x), D.trig_density(x, m.coefficients()), rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(m.unit_log_prob(x), torch.log(m.unit_prob(x)))
    torch.testing.assert_close(m.a(), torch.complex(m.a_real, m.a_imag))


def test_module_log_prob_integrates_to_one_and_cdf_is_its_integral():
    m = _model(seed=4)
    with torch.no_grad():
        mass, _ = integrate.quad(scalar(lambda t: m.log_prob(t).exp()), -np.inf, np.inf, limit=400)
        assert abs(mass - 1) < 1e-8
        for y in (-3.0, 0.0, 1.2, 5.0):
            ref, _ = integrate.quad(scalar(lambda t: m.log_prob(t).exp()), -np.inf, y, limit=400)
            assert float(m.cdf(torch.tensor(y, dtype=F64))) == pytest.approx(ref, abs=1e-8)
        y = torch.linspace(-40, 40, 9, dtype=F64)
        torch.testing.assert_close(m(y), m.log_prob(y))
        assert bool(torch.isfinite(m.log_prob(torch.tensor([-1e4, 1e4], dtype=F64))).all())


def test_module_sampling_icdf_and_ks():
    m = _model(seed=7)
    with torch.no_grad():
        u = torch.tensor([0.01, 0.3, 0.5, 0.9, 0.999], dtype=F64)
        torch.testing.assert_close(m.cdf(m.icdf(u)), u, rtol=0, atol=1e-10)
        s = m.sample(4000, generator=torch.Generator().manual_seed(0))
        assert s.shape == (4000,) and s.dtype == F64
        ks = stats.kstest(s.numpy(), lambda t: m.cdf(torch.as_tensor(t, dtype=F64)).numpy())
        assert ks.pvalue > 1e-3
        # a point mass would be rejected: the KS test can fail
        bad = stats.kstest(s.numpy() + 0.3, lambda t: m.cdf(torch.as_tensor(t, dtype=F64)).numpy())
        assert bad.pvalue < 1e-6
    assert m.sample(0).shape == (0,)


def test_module_buffers_dtype_and_regularizer():
    m = D.FourierDensity(4, learn_affine=False)
    names = {n for n, _ in m.named_parameters()}
    assert names == {"a_real", "a_imag"} and m.a_real.dtype == torch.float32
    y = torch.linspace(-3, 3, 7)
    with torch.no_grad():
        assert float(m.regularizer()) == 0.0                    # a = e_0: the uniform density
        torch.testing.assert_close(m.log_prob(y), torch.log(0.5 / torch.cosh(y) ** 2), rtol=1e-5, atol=1e-6)
    m2 = _model()
    torch.testing.assert_close(m2.regularizer(), D.smoothness_penalty(m2.coefficients()))


def test_fit_improves_likelihood_and_gamma_smooths():
    g = torch.Generator().manual_seed(0)
    y = torch.cat([torch.randn(600, generator=g, dtype=F64) * 0.3 - 1.5, torch.randn(600, generator=g, dtype=F64) + 1])
    ref = float(torch.tensor(stats.norm.logpdf(y.numpy(), y.mean().item(), y.std().item())).mean())
    m0 = D.fit_fourier_density(y, 12, steps=200)
    m1 = D.fit_fourier_density(y, 12, steps=200, gamma=1e-2)
    m2 = D.fit_fourier_density(y, 12, steps=60, learn_affine=True)
    with torch.no_grad():
        ll0, ll2 = float(m0.log_prob(y).mean()), float(m2.log_prob(y).mean())
        assert ll0 > ref + 0.05 and ll2 > ref + 0.05             # beats the single Gaussian on a bimodal sample
        assert float(m1.regularizer()) < 0.5 * float(m0.regularizer())
        assert float(m1.log_prob(y).mean()) < ll0
    assert {n for n, _ in m2.named_parameters()} == {"a_real", "a_imag", "loc", "log_scale"}


# ----------------------------------------------------------------------------- Gaussian mixture baseline
def test_gmm_log_prob_matches_scipy():
    w, mu, sd = (torch.tensor(v, dtype=F64) for v in ([0.3, 0.7], [-1.0, 2.0], [0.5, 1.5]))
    x = torch.linspace(-4, 6, 11, dtype=F64)
    ref = np.log(0.3 * stats.norm.pdf(x.numpy(), -1, 0.5) + 0.7 * stats.norm.pdf(x.numpy(), 2, 1.5))
    torch.testing.assert_close(D.gmm_log_prob(x, w, mu, sd), torch.tensor(ref, dtype=F64), rtol=1e-12, atol=1e-12)


def test_gmm_em_recovers_separated_mixture_and_likelihood_increases():
    g = torch.Generator().manual_seed(1)
    x = torch.cat([torch.randn(3000, generator=g, dtype=F64) * 0.5 - 3, torch.randn(7000, generator=g, dtype=F64) + 2])
    w, mu, sd = D.gmm_em(x, 2, n_iter=100)
    torch.testing.assert_close(w, torch.tensor([0.3, 0.7], dtype=F64), rtol=0, atol=0.02)
    torch.testing.assert_close(mu, torch.tensor([-3.0, 2.0], dtype=F64), rtol=0, atol=0.05)
    torch.testing.assert_close(sd, torch.tensor([0.5, 1.0], dtype=F64), rtol=0, atol=0.05)
    lls = [float(D.gmm_log_prob(x, *D.gmm_em(x, 3, n_iter=k)).mean()) for k in (0, 1, 5, 20)]
    assert all(b >= a - 1e-12 for a, b in zip(lls, lls[1:]))


# ----------------------------------------------------------------------------- validation
def test_validation_errors_name_the_argument():
    c = D.autocorrelation(rand_a(3, 0))
    x = torch.zeros(3, dtype=F64)
    with pytest.raises(TypeError, match="a must have a complex dtype"):
        D.autocorrelation(torch.ones(3))
    with pytest.raises(TypeError, match="a must be a torch.Tensor"):
        D.autocorrelation([1, 2])
    with pytest.raises(ValueError, match="a must have at least one entry"):
        D.autocorrelation(torch.ones(0, dtype=C128))
    with pytest.raises(ValueError, match="a contains NaN"):
        D.autocorrelation(torch.tensor([1, float("nan")], dtype=C128))
    with pytest.raises(ValueError, match="size must be >= 1"):
        D.toeplitz(c, 0)
    with pytest.raises(ValueError, match="c must have 1 dimension"):
        D.fourier_series(x, torch.stack([c, c]))
    with pytest.raises(ValueError, match=r"c\[0\]"):
        D.trig_density(x, -c)
    with pytest.raises(ValueError, match="x must lie in"):
        D.trig_cdf(torch.tensor([1.5], dtype=F64), c)
    with pytest.raises(TypeError, match="x must have a floating dtype"):
        D.fourier_series(torch.zeros(3, dtype=torch.long), c)
    with pytest.raises(ValueError, match="u must lie in"):
        D.trig_icdf(torch.tensor([1.2], dtype=F64), c)
    with pytest.raises(ValueError, match="n_iter must be >= 1"):
        D.trig_icdf(x, c, n_iter=0)
    with pytest.raises(TypeError, match="normalized must be a bool"):
        D.smoothness_penalty(c, normalized=1)
    with pytest.raises(ValueError, match="the mass c_0"):
        D.smoothness_penalty(torch.zeros(3, dtype=C128))
    with pytest.raises(ValueError, match="n_freqs must be >= 0"):
        D.FourierDensity(-1)
    with pytest.raises(ValueError, match="scale must be > 0"):
        D.FourierDensity(2, scale=0.0)
    with pytest.raises(TypeError, match="learn_affine must be a bool"):
        D.FourierDensity(2, learn_affine="yes")
    with pytest.raises(TypeError, match="dtype must be"):
        D.FourierDensity(2, dtype=torch.float16)
    m = D.FourierDensity(2, dtype=F64)
    with pytest.raises(ValueError, match="y contains NaN"):
        m.log_prob(torch.tensor([float("inf")], dtype=F64))
    with pytest.raises(ValueError, match="n must be >= 0"):
        m.sample(-1)
    y = torch.randn(50, dtype=F64)
    with pytest.raises(ValueError, match="y must have 1 dimension"):
        D.fit_fourier_density(y[None], 3)
    with pytest.raises(ValueError, match="y must hold at least 2"):
        D.fit_fourier_density(y[:1], 3)
    with pytest.raises(ValueError, match="gamma must be >= 0"):
        D.fit_fourier_density(y, 3, gamma=-1.0)
    with pytest.raises(ValueError, match="y must not be constant"):
        D.fit_fourier_density(torch.ones(5, dtype=F64), 3)
    with pytest.raises(ValueError, match="lr must be > 0"):
        D.fit_fourier_density(y, 3, lr=0.0)
    with pytest.raises(TypeError, match="normalized must be a bool"):
        D.fit_fourier_density(y, 3, normalized="no")
    w, mu, sd = (torch.tensor(v, dtype=F64) for v in ([0.5, 0.5], [0.0, 1.0], [1.0, 1.0]))
    with pytest.raises(ValueError, match="same shape"):
        D.gmm_log_prob(x, w, mu, sd[:1])
    with pytest.raises(ValueError, match="stds must be positive"):
        D.gmm_log_prob(x, w, mu, -sd)
    with pytest.raises(ValueError, match="weights must be non-negative"):
        D.gmm_log_prob(x, 2 * w, mu, sd)
    with pytest.raises(ValueError, match="means must have 1 dimension"):
        D.gmm_log_prob(x, w, mu[None], sd)
    with pytest.raises(ValueError, match="n_components must be >= 1"):
        D.gmm_em(y, 0)
    with pytest.raises(ValueError, match="x must hold at least n_components"):
        D.gmm_em(y[:2], 3)
    with pytest.raises(ValueError, match="min_std must be > 0"):
        D.gmm_em(y, 2, min_std=0.0)
