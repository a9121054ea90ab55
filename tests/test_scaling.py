"""Tests for kexue_lib.scaling (P03): against mpmath/sympy sums, brute-force sampling and closed forms."""
from __future__ import annotations

import math

import mpmath as mp
import numpy as np
import pytest
import sympy as sp
import torch
from hypothesis import given, settings, strategies as st
from scipy import stats

from kexue_lib import scaling as sc

F64 = torch.float64


def t(*v):
    return torch.tensor(v, dtype=F64)


# ----------------------------------------------------------------------------- Zipf sums
def test_normaliser_and_probs_match_mpmath():
    for g in (0.3, 1.0, 2.5):
        assert sc.zipf_normaliser(g) == pytest.approx(float(mp.zeta(g + 1)), rel=1e-13)
    assert sc.zipf_normaliser(1.0) == pytest.approx(math.pi**2 / 6, rel=1e-14)
    p = sc.zipf_probs(1.0, 5)
    ref = torch.tensor([6 / math.pi**2 / k**2 for k in range(1, 6)], dtype=F64)
    torch.testing.assert_close(p, ref, rtol=1e-14, atol=0)
    assert sc.zipf_probs(1.0, 3, dtype=torch.float32).dtype == torch.float32


def test_tail_matches_exact_sympy_values_for_gamma_one():
    # sum_{k>n} k^-2 / zeta(2) = 1 - (6/pi^2) H_n^(2), exactly
    for n, quoted in ((10, 0.057854), (100, 0.0060490), (1000, 0.00060762)):
        exact = 1 - 6 / sp.pi**2 * sp.harmonic(n, 2)
        got = float(sc.zipf_tail(t(n), 1.0))
        assert got == pytest.approx(float(exact), rel=1e-12)
        assert got == pytest.approx(quoted, rel=2e-5)


@settings(max_examples=25, deadline=None)
@given(g=st.floats(0.2, 3.0), n=st.integers(0, 60))
def test_tail_matches_mpmath_hurwitz_and_brute_force(g, n):
    got = float(sc.zipf_tail(t(n), g))
    ref = float(mp.zeta(g + 1, n + 1) / mp.zeta(g + 1))
    assert got == pytest.approx(ref, rel=1e-10)
    # brute force: 1 - head sum (float64), fine for moderate gamma
    head = float(sc.zipf_probs(g, n).sum()) if n else 0.0
    assert got == pytest.approx(1 - head, rel=1e-8, abs=1e-13)


def test_tail_is_decreasing_and_starts_at_one():
    n = torch.arange(0, 50, dtype=F64)
    tail = sc.zipf_tail(n, 0.7)
    assert float(tail[0]) == pytest.approx(1.0, abs=1e-14)
    assert bool((tail.diff() < 0).all())


def test_asymptotic_orders_and_relative_error_gamma_over_2n():
    for g in (0.5, 1.0, 2.0):
        n = t(100.0, 1000.0, 10000.0)
        exact = sc.zipf_tail(n, g)
        r0 = sc.zipf_tail_asymptotic(n, g, order=0) / exact - 1
        # relative error of the integral approximation ~ gamma / (2n)
        torch.testing.assert_close(r0 * 2 * n / g, torch.ones(3, dtype=F64), rtol=0, atol=0.02)
        r1 = (sc.zipf_tail_asymptotic(n, g, order=1) / exact - 1).abs()
        r2 = (sc.zipf_tail_asymptotic(n, g, order=2) / exact - 1).abs()
        assert bool((r1 < 2 * (g + 1) / n**2).all()) and bool((r2 < 1e-8).all())
        # each order shrinks the error at n = 100 by at least 10x
        assert float(r1[0]) < float(r0[0].abs()) / 10 and float(r2[0]) < float(r1[0]) / 10


def test_quanta_loss_affine_in_tail():
    n = t(0.0, 3.0, 30.0)
    torch.testing.assert_close(sc.quanta_loss(n, 1.0), sc.zipf_tail(n, 1.0))
    torch.testing.assert_close(sc.quanta_loss(n, 1.0, a=0.5, b=2.0), 0.5 + 1.5 * sc.zipf_tail(n, 1.0))
    assert float(sc.quanta_loss(t(0.0), 1.3, a=0.2, b=0.9)) == pytest.approx(0.9)


# ----------------------------------------------------------------------------- data and steps laws
def test_quanta_from_data_solves_threshold_equation():
    g, tau = 0.8, 7.0
    D = t(1e3, 1e5, 1e7)
    n = sc.quanta_from_data(D, g, tau=tau)
    torch.testing.assert_close(D * n.pow(-g - 1) / sc.zipf_normaliser(g), torch.full_like(D, tau), rtol=1e-12, atol=0)


def test_truncation_for_margin():
    g, tau, D = 1.0, 10.0, 1e6
    K = sc.truncation_for(D, g, tau=tau)
    p = sc.zipf_probs(g, K + 1)
    assert float(D * p[-1]) <= tau / 20 < float(D * p[-3])
    assert sc.truncation_for(1e-9, 2.0, tau=10.0) == 1


def test_expected_loss_equals_direct_poisson_sum():
    g, tau, K = 1.0, 5, 200
    D = t(10.0, 300.0, 3000.0)
    p = sc.zipf_probs(g, K).numpy()
    ref = [(p * stats.poisson.cdf(tau - 1, d * p)).sum() + 1 - p.sum() for d in D.tolist()]
    torch.testing.assert_close(sc.expected_data_loss(D, g, tau=tau, num_quanta=K), torch.tensor(ref, dtype=F64),
                               rtol=1e-10, atol=1e-14)
    # no data: nothing learned
    assert float(sc.expected_data_loss(t(0.0), g, tau=tau)) == pytest.approx(1.0, abs=1e-12)


def test_expected_loss_asymptotic_prefactor():
    # the Mellin identity behind it, by quadrature: int_0^inf u^(a-1) Q(tau, u) du = Gamma(tau+a) / (a Gamma(tau))
    from scipy import integrate, special
    for tau, a in ((3, 0.5), (10, 2 / 3), (7, 0.2)):
        val, _ = integrate.quad(lambda u: u ** (a - 1) * special.gammaincc(tau, u), 0, np.inf, limit=200)
        assert val == pytest.approx(math.gamma(tau + a) / (a * math.gamma(tau)), rel=1e-7)
    for g, tau in ((0.5, 3), (1.0, 10), (2.0, 30)):
        D = t(1e7, 1e8)
        torch.testing.assert_close(sc.expected_data_loss_asymptotic(D, g, tau=tau),
                                   sc.expected_data_loss(D, g, tau=tau), rtol=1e-4, atol=0)
    # the factor tends to 1 as tau grows (counts concentrate): ratio to the sharp law
    D = t(1e6)
    r = [float(sc.expected_data_loss_asymptotic(D, 1.0, tau=tau) / sc.zipf_tail_asymptotic(
        sc.quanta_from_data(D, 1.0, tau=tau), 1.0)) for tau in (1, 10, 100, 1000)]
    assert r == sorted(r) and r[0] == pytest.approx(math.gamma(1.5), rel=1e-12)
    for tau, ri in zip((100, 1000), r[2:]):             # 1 - c_tau ~ alpha (1 - alpha) / (2 tau), alpha = 1/2
        assert 1 - ri == pytest.approx(0.25 / (2 * tau), rel=0.02)


def test_simulated_mean_matches_expectation():
    g, tau = 1.0, 10
    D = t(30.0, 1e3, 1e5)
    gen = torch.Generator().manual_seed(0)
    sims = torch.stack([sc.simulate_data_loss(D, g, tau=tau, generator=gen) for _ in range(200)])
    mean, se = sims.mean(0), sims.std(0) / math.sqrt(200)
    exp = sc.expected_data_loss(D, g, tau=tau)
    assert bool(((mean - exp).abs() < 4 * se + 1e-12).all()), (mean, exp, se)


def test_poisson_counts_agree_with_exact_multinomial_draws():
    # brute force: D actual samples from Zipf (truncated at K, overflow bucket = never learned)
    g, tau, D, K, reps = 1.0, 5, 2000, 400, 150
    p = sc.zipf_probs(g, K)
    probs = torch.cat([p, 1 - p.sum().reshape(1)])
    gen = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(reps):
        draws = torch.multinomial(probs, D, replacement=True, generator=gen)
        counts = torch.bincount(draws, minlength=K + 1)[:K]
        losses.append(float((p * (counts < tau)).sum() + probs[-1]))
    sims = torch.stack([sc.simulate_data_loss(t(D), g, tau=tau, num_quanta=K, generator=gen) for _ in range(reps)])
    a, b = np.array(losses), sims.squeeze(1).numpy()
    se = math.sqrt(a.var() / reps + b.var() / reps)
    assert abs(a.mean() - b.mean()) < 4 * se


def test_data_exponent_from_expectation_and_simulation():
    for g in (0.5, 1.0, 2.0):
        D = torch.logspace(4, 7, 7, dtype=F64)
        slope, _ = sc.fit_power_law(D, sc.expected_data_loss(D, g, tau=10))
        assert slope == pytest.approx(-g / (g + 1), abs=2e-3)
    gen = torch.Generator().manual_seed(2)
    D = torch.logspace(4, 7, 7, dtype=F64)
    sim = torch.stack([sc.simulate_data_loss(D, 1.0, tau=10, generator=gen) for _ in range(4)]).mean(0)
    slope, _ = sc.fit_power_law(D, sim)
    assert slope == pytest.approx(-0.5, abs=0.02)


def test_steps_loss_is_monotone_path_with_data_exponent():
    gen = torch.Generator().manual_seed(3)
    steps = torch.logspace(2, 6, 9, dtype=F64).round()
    L = sc.simulate_steps_loss(steps, 1.0, batch_size=64, tau=10, generator=gen)
    assert bool((L.diff() <= 0).all())        # one run: counts only grow, so the loss never rises
    slope, _ = sc.fit_power_law(steps, L)
    assert slope == pytest.approx(-0.5, abs=0.03)
    # its mean over runs matches the data law at D = S * B
    runs = torch.stack([sc.simulate_steps_loss(steps[:3], 1.0, batch_size=64, tau=10, generator=gen)
                        for _ in range(100)])
    exp = sc.expected_data_loss(steps[:3] * 64, 1.0, tau=10)
    assert bool(((runs.mean(0) - exp).abs() < 4 * runs.std(0) / 10 + 1e-12).all())


@settings(max_examples=25, deadline=None)
@given(slope=st.floats(-3, 3), c=st.floats(-5, 5), m=st.integers(2, 20))
def test_fit_power_law_recovers_exact_power_and_matches_polyfit(slope, c, m):
    x = torch.logspace(0, 3, m, dtype=F64)
    s, i = sc.fit_power_law(x, math.exp(c) * x.pow(slope))
    assert s == pytest.approx(slope, abs=1e-9) and i == pytest.approx(c, abs=1e-8)
    y = x.pow(slope) * torch.exp(torch.linspace(-0.3, 0.3, m, dtype=F64).sin())
    ref = np.polyfit(np.log(x.numpy()), np.log(y.numpy()), 1)
    s2, i2 = sc.fit_power_law(x, y)
    assert s2 == pytest.approx(ref[0], abs=1e-9) and i2 == pytest.approx(ref[1], abs=1e-8)


def test_parameter_exponent_from_tail():
    n = torch.logspace(2, 4, 5, dtype=F64)
    for g in (0.3, 1.0, 2.0):
        slope, _ = sc.fit_power_law(n, sc.quanta_loss(n, g))
        assert slope == pytest.approx(-g, abs=0.02 * (1 + g))


# ----------------------------------------------------------------------------- validation
def test_validation_errors():
    with pytest.raises(ValueError, match="gamma"):
        sc.zipf_normaliser(0.0)
    with pytest.raises(TypeError, match="gamma"):
        sc.zipf_probs("1", 3)
    with pytest.raises(ValueError, match="num_quanta"):
        sc.zipf_probs(1.0, 0)
    with pytest.raises(ValueError, match="n must be >= 0"):
        sc.zipf_tail(t(-1.0), 1.0)
    with pytest.raises(TypeError, match="n must"):
        sc.zipf_tail([1.0], 1.0)
    with pytest.raises(ValueError, match="n contains NaN"):
        sc.zipf_tail(t(float("nan")), 1.0)
    with pytest.raises(ValueError, match="n must be > 0"):
        sc.zipf_tail_asymptotic(t(0.0), 1.0)
    with pytest.raises(ValueError, match="order"):
        sc.zipf_tail_asymptotic(t(1.0), 1.0, order=3)
    with pytest.raises(ValueError, match="b must be >"):
        sc.quanta_loss(t(1.0), 1.0, a=1.0, b=0.5)
    with pytest.raises(ValueError, match="tau"):
        sc.quanta_from_data(t(1.0), 1.0, tau=0.0)
    with pytest.raises(ValueError, match="D must be >= 0"):
        sc.quanta_from_data(t(-1.0), 1.0, tau=1.0)
    with pytest.raises(ValueError, match="margin"):
        sc.truncation_for(10.0, 1.0, tau=1.0, margin=0.5)
    with pytest.raises(ValueError, match="D must have 1"):
        sc.expected_data_loss(torch.ones(2, 2, dtype=F64), 1.0, tau=3)
    with pytest.raises(TypeError, match="tau"):
        sc.expected_data_loss(t(1.0), 1.0, tau=2.5)
    with pytest.raises(ValueError, match="D must be > 0"):
        sc.expected_data_loss_asymptotic(t(0.0), 1.0, tau=3)
    with pytest.raises(ValueError, match="num_quanta"):
        sc.simulate_data_loss(t(1.0), 1.0, tau=2, num_quanta=0)
    with pytest.raises(TypeError, match="generator"):
        sc.simulate_data_loss(t(1.0), 1.0, tau=2, generator=0)
    with pytest.raises(ValueError, match="strictly increasing"):
        sc.simulate_steps_loss(t(5.0, 5.0), 1.0, batch_size=2, tau=2)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        sc.simulate_steps_loss(t(0.0, 5.0), 1.0, batch_size=2, tau=2)
    with pytest.raises(ValueError, match="batch_size"):
        sc.simulate_steps_loss(t(1.0), 1.0, batch_size=0, tau=2)
    with pytest.raises(ValueError, match="same shape"):
        sc.fit_power_law(t(1.0, 2.0), t(1.0))
    with pytest.raises(ValueError, match="at least 2"):
        sc.fit_power_law(t(1.0), t(1.0))
    with pytest.raises(ValueError, match="y must be > 0"):
        sc.fit_power_law(t(1.0, 2.0), t(1.0, 0.0))
    with pytest.raises(ValueError, match="all equal"):
        sc.fit_power_law(t(2.0, 2.0), t(1.0, 3.0))
