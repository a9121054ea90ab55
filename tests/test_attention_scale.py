"""Tests for kexue_lib.attention_scale (P12): against autograd, SciPy quadrature, brute force and Monte Carlo."""
from __future__ import annotations

import math

import mpmath as mp
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from scipy import integrate, optimize, special, stats

from kexue_lib import attention_scale as at
from kexue_lib.device import randn

F64 = torch.float64


# ----------------------------------------------------------------------------- probabilities and Jacobian
def test_attention_probs_matches_explicit_softmax_and_default_scale():
    q, k = randn(2, 3, 5, 8, seed=0, dtype=F64), randn(2, 3, 7, 8, seed=1, dtype=F64)
    logits = torch.einsum("bhid,bhjd->bhij", q, k) / math.sqrt(8)
    ref = torch.exp(logits) / torch.exp(logits).sum(-1, keepdim=True)
    torch.testing.assert_close(at.attention_probs(q, k), ref, rtol=1e-12, atol=1e-14)
    ref2 = torch.softmax(2.5 * logits, -1)
    torch.testing.assert_close(at.attention_probs(q, k, scale=2.5 / math.sqrt(8)), ref2, rtol=1e-12, atol=1e-14)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 12), scale=st.floats(0.01, 30.0), seed=st.integers(0, 10_000), shift=st.floats(-5, 5))
def test_probs_sum_to_one_and_are_shift_invariant(n, scale, seed, shift):
    q, k = randn(3, 4, seed=seed, dtype=F64), randn(n, 4, seed=seed + 1, dtype=F64)
    p = at.attention_probs(q, k, scale=scale)
    torch.testing.assert_close(p.sum(-1), torch.ones(3, dtype=F64), rtol=0, atol=1e-12)
    assert bool((p >= 0).all())
    # adding the same vector c to every key shifts each row's scores by q.c: p is unchanged
    c = torch.full((1, 4), shift, dtype=F64)
    torch.testing.assert_close(at.attention_probs(q, k + c, scale=scale), p, rtol=1e-9, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 9), scale=st.floats(0.05, 20.0), seed=st.integers(0, 10_000))
def test_jacobian_and_l1_identity_against_autograd(n, scale, seed):
    s = 2 * randn(n, seed=seed, dtype=F64)
    jac = torch.autograd.functional.jacobian(lambda x: torch.softmax(scale * x, -1), s)
    torch.testing.assert_close(at.softmax_jacobian(s, scale=scale), jac, rtol=1e-10, atol=1e-12)
    half_l1 = 0.5 * jac.abs().sum()
    torch.testing.assert_close(at.jacobian_l1_objective(s, scale=scale), half_l1, rtol=1e-10, atol=1e-12)


def test_objective_batch_shape_and_bounds():
    s = randn(4, 5, 7, seed=3, dtype=F64)
    obj = at.jacobian_l1_objective(s, scale=1.7)
    assert obj.shape == (4, 5)
    # sum p^2 lies in [1/n, 1], so the objective lies in [0, alpha (1 - 1/n)]
    assert bool((obj >= 0).all()) and bool((obj <= 1.7 * (1 - 1 / 7) + 1e-12).all())


def test_objective_vanishes_at_both_ends_for_a_fixed_draw():
    s = randn(64, seed=0, dtype=F64)
    assert at.jacobian_l1_objective(s, scale=1e-5) < 1e-4
    assert at.jacobian_l1_objective(s, scale=1e5) < 1e-4
    assert at.jacobian_l1_objective(s, scale=2.0) > 1.0


# ----------------------------------------------------------------------------- mean field
@pytest.mark.parametrize("d", [3, 16, 128])
@pytest.mark.parametrize("alpha", [0.3, 5.0, 40.0, 300.0])
def test_cosine_mgf_against_direct_quadrature(d, alpha):
    # mpmath quadrature of the density (1 - s^2)^((d-3)/2), split at the integrand's mode
    mp.mp.dps = 30
    c = mp.mpf(d - 3) / 2
    m = float((-c + mp.sqrt(c * c + alpha**2)) / alpha)
    pts = sorted(set(np.linspace(-1, 1, 41).tolist()) | {m})
    num = mp.quad(lambda x: mp.exp(alpha * (x - 1)) * (1 - x * x) ** c, pts)
    ref = float(num / mp.quad(lambda x: (1 - x * x) ** c, [-1, 0, 1]))  # E[e^(alpha (s - 1))]
    got = at.log_mgf(alpha, dist="cosine", d=d) - alpha
    np.testing.assert_allclose(got, np.log(ref), rtol=1e-10, atol=1e-10)


def test_cosine_mgf_d2_is_bessel_i0():
    # d = 2: s = cos(theta) with theta uniform, and E[exp(alpha cos theta)] = I_0(alpha)
    a = np.array([0.3, 5.0, 40.0, 300.0, 3000.0])
    np.testing.assert_allclose(at.log_mgf(a, dist="cosine", d=2), np.log(special.i0e(a)) + a, rtol=1e-12)


def test_cosine_mgf_large_alpha_finite_and_normal_mgf():
    assert np.isfinite(at.log_mgf(5000.0, dist="cosine", d=128))
    np.testing.assert_allclose(at.log_mgf([0.5, 2.0], dist="normal"), [0.125, 2.0], rtol=1e-15)


def test_mean_field_objective_formula():
    np.testing.assert_allclose(at.mean_field_objective(2.0, 512), 2 * (1 - math.exp(4) / 512), rtol=1e-14)
    # the cosine version is the normal one in the limit of large d with alpha scaled by sqrt(d)
    d = 2_000
    np.testing.assert_allclose(at.mean_field_objective(2.0 * math.sqrt(d), 512, dist="cosine", d=d) / math.sqrt(d),
                               at.mean_field_objective(2.0, 512), rtol=5e-3)


@pytest.mark.parametrize("dist,d", [("normal", None), ("cosine", 64), ("cosine", 128)])
@pytest.mark.parametrize("n", [2, 40, 512, 20000])
def test_optimal_scale_matches_bounded_minimiser(dist, d, n):
    a_star = at.optimal_scale(n, dist=dist, d=d)
    res = optimize.minimize_scalar(lambda a: -float(at.mean_field_objective(a, n, dist=dist, d=d)),
                                   bounds=(1e-4, 5.0 if dist == "normal" else 200.0), method="bounded", options={"xatol": 1e-10})
    np.testing.assert_allclose(a_star, res.x, rtol=1e-5)


def test_optimal_scale_normal_closed_condition_and_brief_tables():
    ns = np.array([40, 128, 512, 1024, 2048, 4096, 8192, 20000])
    a = at.optimal_scale(ns)
    np.testing.assert_allclose(np.exp(a**2) * (1 + 2 * a**2), ns, rtol=1e-10)
    np.testing.assert_allclose(a, [1.434, 1.711, 2.008, 2.147, 2.279, 2.406, 2.527, 2.678], atol=1.5e-3)
    cos = at.optimal_scale(ns, dist="cosine", d=128)
    np.testing.assert_allclose(cos, [16.8, 20.3, 24.2, 26.1, 27.9, 29.7, 31.5, 33.7], atol=0.06)


def test_log_n_rule_and_inv_sqrt_d():
    np.testing.assert_allclose(at.log_n_rule(512), 0.84 * math.sqrt(math.log(512)), rtol=1e-15)
    np.testing.assert_allclose(at.log_n_rule([512], dist="cosine"), [3.5 * math.log(512)], rtol=1e-15)
    assert at.inv_sqrt_d_scale(64) == 0.125 and at.inv_sqrt_d_scale(64, alpha=2.5) == 2.5 / 8


# ----------------------------------------------------------------------------- exact objective
def test_cosine_sampler_matches_normalised_gaussian_vectors():
    d, m = 16, 4000
    s = at.sample_scores(1, m, dist="cosine", d=d, seed=0, dtype=F64).reshape(-1).numpy()
    z = randn(m, d, seed=1, dtype=F64)
    ref = (z[:, 0] / z.norm(dim=1)).numpy()  # first coordinate of a uniform unit vector
    assert stats.ks_2samp(s, ref).pvalue > 1e-3
    np.testing.assert_allclose(np.mean(s**2), 1 / d, rtol=0.06)
    assert s.min() >= -1 and s.max() <= 1


def test_sampler_is_reproducible_and_respects_device_dtype():
    a = at.sample_scores(3, 5, seed=7)
    b = at.sample_scores(3, 5, gen=torch.Generator().manual_seed(7))
    assert a.dtype == torch.float32 and a.device.type == "cpu"
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def _brute_expected_sum_p2(alpha, n):
    """n int t E[e^(2 a s) e^(-t e^(a s))] E[e^(-t e^(a s))]^(n-1) dt: adaptive quad in log t,
    probabilists' Gauss-Hermite (160 nodes) for the expectations over s ~ N(0, 1)."""
    x, w = special.roots_hermitenorm(160)
    w = w / w.sum()

    def f(ell):
        e = np.exp(ell + alpha * x)
        return n * np.exp(2 * ell) * (w * np.exp(2 * alpha * x - e)).sum() * (w * np.exp(-e)).sum() ** (n - 1)

    return integrate.quad(f, -12 * alpha - math.log(n) - 30, 12 * alpha + 10, limit=400, epsrel=1e-10)[0]


@pytest.mark.parametrize("alpha,n", [(0.7, 2), (1.5, 8)])
def test_expected_objective_against_nested_quad(alpha, n):
    ref = alpha * (1 - _brute_expected_sum_p2(alpha, n))
    np.testing.assert_allclose(at.expected_objective(alpha, n, step=0.02), ref, rtol=1e-5)
    np.testing.assert_allclose(at.expected_objective(alpha, n), ref, rtol=5e-5)  # default step


def test_expected_objective_n2_closed_form_and_n1():
    # n = 2: alpha (1 - p1^2 - p2^2) = alpha / (2 cosh^2(alpha D / 2)), D = s1 - s2 ~ N(0, 2)
    for alpha in (0.5, 3.0, 20.0):
        f = lambda x: stats.norm.pdf(x, scale=math.sqrt(2)) * alpha / (2 * math.cosh(alpha * x / 2) ** 2)
        ref = integrate.quad(f, -15, 15, points=[0.0], epsrel=1e-11, limit=200)[0]
        np.testing.assert_allclose(at.expected_objective(alpha, 2, step=0.02), ref, rtol=1e-5)
        np.testing.assert_allclose(at.expected_objective(alpha, 2), ref, rtol=5e-5)
    np.testing.assert_allclose(at.expected_objective([0.5, 5.0], 1), [0.0, 0.0], atol=1e-9)


@pytest.mark.parametrize("dist,d,n", [("normal", None, 64), ("cosine", 32, 64)])
def test_objective_mc_agrees_with_quadrature(dist, d, n):
    alphas = np.array([0.5, 2.0, 5.0]) * (1.0 if dist == "normal" else 5.0)
    vals = at.objective_mc(alphas, n, dist=dist, d=d, trials=4000, seed=0, reduction="none")
    mean, sem = vals.mean(-1).numpy(), (vals.std(-1) / math.sqrt(4000)).numpy()
    ref = at.expected_objective(alphas, n, dist=dist, d=d)
    assert np.all(np.abs(mean - ref) < 4 * sem + 1e-12), (mean, ref, sem)


def test_objective_mc_shapes_and_chunking():
    a = at.objective_mc([1.0, 2.0, 3.0], 16, trials=10, seed=1, max_elements=200, reduction="none")
    b = at.objective_mc([1.0, 2.0, 3.0], 16, trials=10, seed=1, reduction="none")
    assert a.shape == (3, 10)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert at.objective_mc(2.0, 16, trials=10, seed=1).ndim == 0


@pytest.mark.parametrize("dist,d,n", [("normal", None, 2), ("normal", None, 512), ("cosine", 128, 64)])
def test_top_gap_density_against_order_statistic_integral(dist, d, n):
    law = stats.norm() if dist == "normal" else stats.beta((d - 1) / 2, (d - 1) / 2, loc=-1, scale=2)
    lo, hi = (-12, 12) if dist == "normal" else (-1, 1)
    f = lambda x: n * (n - 1) * law.pdf(x) ** 2 * law.cdf(x) ** (n - 2)
    ref = integrate.quad(f, lo, hi, limit=400, points=[0.0, 0.3, 1.0, 2.0, 3.0][: 5 if dist == "normal" else 2])[0]
    np.testing.assert_allclose(at.top_gap_density(n, dist=dist, d=d), ref, rtol=1e-7)


def test_expected_objective_tends_to_top_gap_density():
    lim = at.top_gap_density(64)
    vals = at.expected_objective([50.0, 200.0], 64)
    assert vals[0] < vals[1] < lim
    np.testing.assert_allclose(vals[1], lim, rtol=2e-3)


# ----------------------------------------------------------------------------- validation
def test_validation_errors_name_the_argument():
    s = torch.zeros(5, dtype=F64)
    with pytest.raises(ValueError, match="scale"):
        at.jacobian_l1_objective(s, scale=0.0)
    with pytest.raises(ValueError, match="scale"):
        at.softmax_jacobian(s, scale=-1.0)
    with pytest.raises(ValueError, match="scale"):
        at.attention_probs(torch.ones(2, 3), torch.ones(4, 3), scale=float("nan"))
    with pytest.raises(ValueError, match="scores"):
        at.jacobian_l1_objective(torch.tensor([0.0, float("nan")]), scale=1.0)
    with pytest.raises(ValueError, match="scores"):
        at.softmax_jacobian(torch.tensor(1.0), scale=1.0)
    with pytest.raises(TypeError, match="scores"):
        at.jacobian_l1_objective([0.0, 1.0], scale=1.0)
    with pytest.raises(ValueError, match="q"):
        at.attention_probs(torch.ones(3), torch.ones(4, 3))
    with pytest.raises(ValueError, match="k"):
        at.attention_probs(torch.ones(2, 3), torch.ones(3))
    with pytest.raises(ValueError, match="last dimension"):
        at.attention_probs(torch.ones(2, 3), torch.ones(4, 2))
    with pytest.raises(ValueError, match="n"):
        at.optimal_scale(1)
    with pytest.raises(ValueError, match="n"):
        at.mean_field_objective(1.0, 0)
    with pytest.raises(TypeError, match="n"):
        at.mean_field_objective(1.0, 3.5)
    with pytest.raises(ValueError, match="n"):
        at.objective_mc(1.0, 0)
    with pytest.raises(ValueError, match="alpha"):
        at.mean_field_objective([1.0, float("nan")], 8)
    with pytest.raises(ValueError, match="alpha"):
        at.expected_objective(0.0, 8)
    with pytest.raises(ValueError, match="alpha"):
        at.objective_mc([-1.0], 8)
    with pytest.raises(ValueError, match="alpha"):
        at.log_mgf(-2.0)
    with pytest.raises(ValueError, match="d"):
        at.optimal_scale(64, dist="cosine")
    with pytest.raises(ValueError, match="d"):
        at.log_mgf(1.0, dist="cosine", d=1)
    with pytest.raises(ValueError, match="d"):
        at.inv_sqrt_d_scale(0)
    with pytest.raises(ValueError, match="dist"):
        at.optimal_scale(64, dist="uniform")
    with pytest.raises(ValueError, match="trials"):
        at.objective_mc(1.0, 8, trials=0)
    with pytest.raises(ValueError, match="reduction"):
        at.objective_mc(1.0, 8, reduction="sum")
    with pytest.raises(ValueError, match="n"):
        at.top_gap_density(1)
    with pytest.raises(ValueError, match="seed and gen"):
        at.sample_scores(2, 3, seed=1, gen=torch.Generator())
