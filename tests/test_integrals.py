"""Tests for kexue_lib.integrals (P15): against SciPy quadrature, SymPy integration, mpmath and exact counting."""
from __future__ import annotations

import math
from fractions import Fraction

import mpmath as mp
import numpy as np
import pytest
import sympy as sp
import torch
from hypothesis import given, settings, strategies as st
from scipy import integrate

from kexue_lib import integrals as wi

F64 = torch.float64


def t(*v):
    return torch.tensor(v, dtype=F64)


# ----------------------------------------------------------------------------- the integral itself
def test_gamma_form_matches_quadrature_of_sin_and_cos_including_real_m():
    ms = [0, 1, 2, 3, 4, 7, 10, 20, 0.5, 2.7, 13.3, -0.5]
    got = wi.wallis_integral(torch.tensor(ms, dtype=F64))
    for m, g in zip(ms, got.tolist()):
        qs, _ = integrate.quad(lambda x: np.sin(x) ** m, 0, np.pi / 2, epsabs=1e-14, epsrel=1e-13)
        qc, _ = integrate.quad(lambda x: np.cos(x) ** m, 0, np.pi / 2, epsabs=1e-14, epsrel=1e-13)
        assert g == pytest.approx(qs, rel=1e-10) and g == pytest.approx(qc, rel=1e-10)


def test_exact_matches_sympy_integration():
    x = sp.symbols("x")
    for m in range(0, 9):
        q, has_pi = wi.wallis_exact(m)
        ref = sp.integrate(sp.sin(x) ** m, (x, 0, sp.pi / 2))
        mine = sp.Rational(q.numerator, q.denominator) * (sp.pi / 2 if has_pi else 1)
        assert sp.simplify(ref - mine) == 0, m
        assert has_pi == (m % 2 == 0)


def test_quoted_values():
    # I_2 = pi/4, I_4 = 3pi/16, I_6 = 5pi/32, I_10 = 63pi/512, I_20 ~ 0.276770
    assert wi.wallis_exact(4) == (Fraction(3, 8), True)
    assert wi.wallis_exact(10) == (Fraction(63, 256), True)
    assert wi.wallis_exact(5) == (Fraction(8, 15), False)
    vals = wi.wallis_integral(t(2, 4, 6, 10, 20))
    torch.testing.assert_close(vals, t(math.pi / 4, 3 * math.pi / 16, 5 * math.pi / 32, 63 * math.pi / 512, 0.27677),
                               rtol=2e-6, atol=0)


def test_table_matches_gamma_form_and_exact_rationals():
    tab = wi.wallis_table(200)
    torch.testing.assert_close(tab, wi.wallis_integral(torch.arange(201, dtype=F64)), rtol=1e-13, atol=0)
    for m in (0, 1, 2, 9, 50, 51):
        q, has_pi = wi.wallis_exact(m)
        assert float(tab[m]) == pytest.approx(float(q) * (math.pi / 2 if has_pi else 1), rel=1e-14)
    assert wi.wallis_table(0).tolist() == [math.pi / 2]
    assert wi.wallis_table(1, dtype=torch.float32).dtype == torch.float32


def test_large_m_against_mpmath():
    ms = [60.0, 99.0, 100.0, 101.0, 1e3 + 0.5, 1e5, 1e6, 1e8, 1e12]      # both sides of the Stirling switch
    got = wi.wallis_integral(torch.tensor(ms, dtype=F64))
    with mp.workdps(40):
        for m, g in zip(ms, got.tolist()):
            ref = mp.sqrt(mp.pi) * mp.gamma(mp.mpf(m + 1) / 2) / (2 * mp.gamma(mp.mpf(m) / 2 + 1))
            assert g == pytest.approx(float(ref), rel=2e-15), m


@settings(max_examples=40, deadline=None)
@given(m=st.floats(-0.99, 400.0))
def test_reduction_and_product_invariant_for_real_m(m):
    x = torch.tensor([m, m + 1, m + 2], dtype=F64)
    i0, i1, i2 = wi.wallis_integral(x).tolist()
    assert i2 == pytest.approx((m + 1) / (m + 2) * i0, rel=1e-12)            # I_{m+2} = (m+1)/(m+2) I_m
    assert i0 * i1 == pytest.approx(math.pi / (2 * (m + 1)), rel=1e-12)     # I_m I_{m+1} = pi / (2(m+1))
    assert i0 > i1 > i2 > 0                                                 # decreasing in m


# ----------------------------------------------------------------------------- asymptotics and the product
def test_asymptotic_orders_and_error_rates():
    m = torch.logspace(2, 4, 5, dtype=F64)
    exact = wi.wallis_integral(m)
    for order, coeff in ((0, 1 / 4), (1, -1 / 32), (2, -5 / 128)):
        rel = wi.wallis_asymptotic(m, order=order) / exact - 1
        # leading error: minus the first dropped term, -c / m^(order+1), of 1 - 1/(4m) + 1/(32m^2) + 5/(128m^3)
        torch.testing.assert_close(rel * m ** (order + 1), torch.full_like(m, coeff), rtol=0.03, atol=0)
    assert float(wi.wallis_integral(t(20.0)) / wi.wallis_asymptotic(t(20.0))) == pytest.approx(0.98758, abs=5e-6)


def test_partial_products_against_exact_fractions_and_rate():
    P = wi.wallis_partial_products(1000)
    exact = Fraction(1)
    for j in range(1, 31):
        exact *= Fraction(4 * j * j, 4 * j * j - 1)
        if j in (1, 2, 30):
            assert float(P[j - 1]) == pytest.approx(float(exact), rel=1e-14)
    assert float(P[-1]) == pytest.approx(1.5704039, abs=1e-7)
    k = torch.arange(1, 1001, dtype=F64)
    assert bool((P < math.pi / 2).all()) and bool((P.diff() > 0).all())
    # pi/2 - P_K = pi/(8K) - 5 pi/(64 K^2) + O(K^-3); the product equals (pi/2) I_{2K+1} / I_{2K}
    err = math.pi / 2 - P
    assert float(err[-1] * 8 * 1000 / math.pi) == pytest.approx(1 - 5 / 8000, rel=1e-5)
    torch.testing.assert_close(P, math.pi / 2 * wi.wallis_integral(2 * k + 1) / wi.wallis_integral(2 * k),
                               rtol=1e-12, atol=0)


# ----------------------------------------------------------------------------- random walk
def test_return_probability_exact_binomials():
    n = torch.arange(0, 60, dtype=F64)
    ref = torch.tensor([math.comb(2 * k, k) / 4**k for k in range(60)], dtype=F64)
    torch.testing.assert_close(wi.srw_return_prob(n), ref, rtol=1e-12, atol=0)
    torch.testing.assert_close(wi.srw_return_prob(n), 2 / math.pi * wi.wallis_table(118)[0::2], rtol=1e-12, atol=0)
    assert float(wi.srw_return_prob(t(10.0))) == pytest.approx(0.176197, abs=5e-7)
    big = float(wi.srw_return_prob(t(1e7)))
    assert big * math.sqrt(math.pi * 1e7) == pytest.approx(1 - 1 / 8e7, rel=1e-14)


def test_simulated_return_frequency_within_binomial_error():
    gen = torch.Generator().manual_seed(0)
    walks = 40_000
    freq = wi.simulate_srw_return(15, walks, generator=gen)
    p = wi.srw_return_prob(torch.arange(1, 16, dtype=F64))
    se = torch.sqrt(p * (1 - p) / walks)
    assert bool(((freq - p).abs() < 4.5 * se).all())
    # independent reference: the same walks counted by the number of +1 steps (exactly n of 2n)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    f = wi.simulate_srw_return(3, 1000, generator=g1)
    bits = torch.randint(0, 2, (1000, 6), generator=g2, dtype=torch.int16)
    ups = bits.to(torch.int64).cumsum(1)[:, 1::2]
    torch.testing.assert_close(f, (ups == torch.tensor([1, 2, 3])).double().mean(0))


# ----------------------------------------------------------------------------- validation
def test_validation_errors():
    with pytest.raises(ValueError, match="m must be > -1"):
        wi.wallis_integral(t(-1.0))
    with pytest.raises(TypeError, match="m must"):
        wi.wallis_integral(3)
    with pytest.raises(TypeError, match="m must have a floating"):
        wi.wallis_integral(torch.tensor([3]))
    with pytest.raises(ValueError, match="m contains NaN"):
        wi.wallis_integral(t(float("inf")))
    with pytest.raises(ValueError, match="m_max"):
        wi.wallis_table(-1)
    with pytest.raises(ValueError, match="m must be >= 0"):
        wi.wallis_exact(-2)
    with pytest.raises(TypeError, match="m must be an int"):
        wi.wallis_exact(2.0)
    with pytest.raises(ValueError, match="m must be > 0"):
        wi.wallis_asymptotic(t(0.0))
    with pytest.raises(ValueError, match="order"):
        wi.wallis_asymptotic(t(1.0), order=3)
    with pytest.raises(ValueError, match="K must be >= 1"):
        wi.wallis_partial_products(0)
    with pytest.raises(ValueError, match="n must be > -0.5"):
        wi.srw_return_prob(t(-0.5))
    with pytest.raises(ValueError, match="n_max"):
        wi.simulate_srw_return(0, 10)
    with pytest.raises(ValueError, match="num_walks"):
        wi.simulate_srw_return(3, 0)
    with pytest.raises(TypeError, match="generator"):
        wi.simulate_srw_return(3, 10, generator=1)
