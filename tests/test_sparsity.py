"""Tests of kexue_lib.sparsity (P37): measures against numpy references, identities, criteria."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import entropy as scipy_entropy

from kexue_lib import sparsity as sp

F64 = torch.float64


def _rand(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _np_lp(a, p):
    return np.max(np.abs(a), axis=-1) if math.isinf(p) else np.sum(np.abs(a) ** p, axis=-1) ** (1 / p)


# ---------------------------------------------------------------- measures vs numpy references
def test_measures_match_numpy_references():
    x = _rand(6, 9, seed=1) - 0.3                     # signed entries: measures use |x|
    a = x.numpy()
    n = a.shape[-1]
    np.testing.assert_allclose(sp.s0(x).numpy(), np.mean(np.abs(a), -1) / np.max(np.abs(a), -1), rtol=1e-13)
    for p in (1.5, 2.0, 3.0, math.inf):
        np.testing.assert_allclose(sp.s1p(x, p=p).numpy(), _np_lp(a, 1) / n / _np_lp(a, p), rtol=1e-12)
    for q, p in ((1.0, 2.0), (0.5, 3.0), (2.0, 7.0), (1.0, math.inf)):
        ref = n ** ((0 if math.isinf(p) else 1 / p) - 1 / q) * _np_lp(a, q) / _np_lp(a, p)
        np.testing.assert_allclose(sp.s_star(x, q=q, p=p).numpy(), ref, rtol=1e-12)
    np.testing.assert_allclose(sp.hoyer(x).numpy(), (np.sqrt(n) - _np_lp(a, 1) / _np_lp(a, 2)) / (np.sqrt(n) - 1), rtol=1e-12)
    # Gini of Hurley & Rickard equals the classical mean-absolute-difference Gini coefficient
    c = np.abs(a)
    mad = np.abs(c[:, :, None] - c[:, None, :]).sum((-1, -2)) / (2 * n * c.sum(-1))
    np.testing.assert_allclose(sp.gini_index(x).numpy(), mad, rtol=1e-12)
    np.testing.assert_allclose(sp.renyi_entropy(x).numpy(), scipy_entropy(np.abs(a), axis=-1), rtol=1e-12)


def test_dim_argument_and_batch_shapes():
    x = _rand(3, 5, 4, seed=2)
    for f in (sp.s0, sp.s1p, sp.s_star, sp.hoyer, sp.gini_index, sp.renyi_entropy, sp.sign_cosine, sp.zero_fraction):
        out = f(x, dim=1)
        assert out.shape == (3, 4), f.__name__
        torch.testing.assert_close(out, f(x.transpose(1, 2)), rtol=1e-12, atol=1e-14)


def test_known_values_from_the_post():
    ones, onehot = torch.ones(4, dtype=F64), torch.tensor([0.0, 3.0, 0.0, 0.0], dtype=F64)
    assert abs(float(sp.s_star(ones)) - 1) < 1e-15 and abs(float(sp.s_star(onehot)) - 0.5) < 1e-15
    v = torch.tensor([1.0, 2.0, 3.0], dtype=F64)
    assert abs(float(sp.s_star(v)) - 6 / (math.sqrt(3) * math.sqrt(14))) < 1e-15     # 0.925820
    assert abs(float(sp.s_star(torch.cat([v, v]))) - float(sp.s_star(v))) < 1e-15
    assert abs(float(sp.s1p(torch.cat([v, v]))) - float(sp.s1p(v)) / math.sqrt(2)) < 1e-15
    assert abs(float(sp.gini_index(onehot)) - 0.75) < 1e-15 and abs(float(sp.gini_index(ones))) < 1e-15
    assert float(sp.zero_fraction(onehot)) == 0.75
    assert float(sp.zero_fraction(torch.tensor([1e-3, 1.0]), atol=1e-2)) == 0.5


def test_s1p_at_infinity_is_s0_and_hoyer_is_affine_in_s_star():
    x = _rand(5, 11, seed=3)
    torch.testing.assert_close(sp.s1p(x, p=math.inf), sp.s0(x), rtol=1e-14, atol=0)
    rn = math.sqrt(11)
    torch.testing.assert_close(sp.hoyer(x), rn * (1 - sp.s_star(x)) / (rn - 1), rtol=1e-12, atol=1e-14)


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 40), st.floats(0.1, 4.0), st.floats(0.05, 6.0), st.integers(0, 10_000))
def test_s_star_range_and_invariances(n, q, dp, seed):
    p = q + dp
    x = _rand(n, seed=seed) ** 3
    s = float(sp.s_star(x, q=q, p=p))
    lower = n ** (1 / p - 1 / q)
    assert lower - 1e-12 <= s <= 1 + 1e-12
    assert abs(float(sp.s_star(7.5 * x, q=q, p=p)) - s) < 1e-12                  # scaling
    assert abs(float(sp.s_star(torch.cat([x, x]), q=q, p=p)) - s) < 1e-12         # cloning
    e = torch.zeros(n, dtype=F64); e[seed % n] = 2.0
    assert abs(float(sp.s_star(e, q=q, p=p)) - lower) < 1e-12                      # one-hot attains the bound


def test_sign_cosine():
    x = _rand(4, 10, seed=4) - 0.5
    torch.testing.assert_close(sp.sign_cosine(x), sp.s_star(x), rtol=1e-13, atol=0)
    z = torch.tensor([0.0, 1.0, -2.0, 0.0], dtype=F64)                            # k = 2 nonzeros
    assert abs(float(sp.sign_cosine(z)) - 3 / (math.sqrt(2) * math.sqrt(5))) < 1e-15


def test_renyi_special_orders_limits_and_bounds():
    p = torch.tensor([0.5, 0.25, 0.125, 0.125, 0.0], dtype=F64)
    assert abs(float(sp.renyi_entropy(p, alpha=0)) - math.log(4)) < 1e-15
    assert abs(float(sp.renyi_entropy(p, alpha=2)) + math.log(float((p**2).sum()))) < 1e-15
    assert abs(float(sp.renyi_entropy(p, alpha=math.inf)) - math.log(2)) < 1e-15
    h1 = float(sp.renyi_entropy(p, alpha=1, normalize=False))
    for a in (1 - 1e-6, 1 + 1e-6):
        assert abs(float(sp.renyi_entropy(p, alpha=a)) - h1) < 1e-5
    n = 7
    assert abs(float(sp.renyi_entropy(torch.ones(n, dtype=F64), alpha=3))) - math.log(n) < 1e-14
    assert float(sp.renyi_entropy(torch.eye(n, dtype=F64)[2], alpha=0.5)) == 0.0


@settings(max_examples=50, deadline=None)
@given(st.integers(2, 20), st.floats(0.0, 5.0), st.floats(0.01, 3.0), st.integers(0, 10_000))
def test_renyi_non_increasing_in_order(n, a, da, seed):
    x = _rand(n, seed=seed) ** 2
    h_a, h_b = float(sp.renyi_entropy(x, alpha=a)), float(sp.renyi_entropy(x, alpha=a + da))
    assert h_b <= h_a + 1e-12 and -1e-12 <= h_b and h_a <= math.log(n) + 1e-12


# ---------------------------------------------------------------- criteria
def test_criteria_table_for_known_cases():
    gen = lambda: torch.Generator().manual_seed(7)   # noqa: E731
    full = sp.sparsity_criteria(sp.s_star, n_trials=150, gen=gen())
    assert all(r.violations == 0 and r.example is None and r.trials == 150 for r in full.values())
    gini = sp.sparsity_criteria(sp.gini_index, larger_is_sparser=True, n_trials=150, gen=gen())
    assert all(r.violations == 0 for r in gini.values())
    # S_{1,2} fails cloning on every vector (factor 2^{-1/2}) and nothing else
    s12 = sp.sparsity_criteria(sp.s1p, n_trials=150, gen=gen())
    assert s12["D4"].violations == 150 and sum(r.violations for k, r in s12.items() if k != "D4") == 0
    # S_0 fails Robin Hood when the transfer does not touch the maximum; the example is a real vector
    s0 = sp.sparsity_criteria(sp.s0, n_trials=150, gen=gen())
    assert s0["D1"].violations > 0 and s0["D1"].example.ndim == 1
    # the plain l1 norm is not scale invariant: the D2 test can fail
    l1 = sp.sparsity_criteria(lambda v: v.sum(-1), n_trials=50, gen=gen())
    assert l1["D2"].violations == 50 and l1["D3"].violations == 0
    # zero fraction: no change under Robin Hood, rising tide (no zeros) or Bill Gates
    zf = sp.sparsity_criteria(sp.zero_fraction, larger_is_sparser=True, n_trials=50, gen=gen())
    assert {k: r.violations for k, r in zf.items()} == {"D1": 50, "D2": 0, "D3": 50, "D4": 0, "P1": 50, "P2": 0}


def test_criteria_deterministic_given_generator():
    a = sp.sparsity_criteria(sp.s0, n_trials=80, gen=torch.Generator().manual_seed(1))
    b = sp.sparsity_criteria(sp.s0, n_trials=80, gen=torch.Generator().manual_seed(1))
    assert a["D1"].violations == b["D1"].violations
    torch.testing.assert_close(a["D1"].example, b["D1"].example)


@pytest.mark.parametrize(
    "kwargs, exc, msg",
    [
        ({"measure": 3}, TypeError, "measure must be callable"),
        ({"n_trials": 0}, ValueError, "n_trials must be >= 1"),
        ({"n_min": 1}, ValueError, "n_min must be >= 2"),
        ({"n_min": 5, "n_max": 4}, ValueError, "n_max must be >= 5"),
        ({"rtol": 0.0}, ValueError, "rtol must be > 0"),
        ({"measure": lambda v: v}, ValueError, r"measure must map a \(B, n\) batch"),
    ],
)
def test_criteria_validation(kwargs, exc, msg):
    kwargs = {"measure": sp.s0, **kwargs}
    measure = kwargs.pop("measure")
    with pytest.raises(exc, match=msg):
        sp.sparsity_criteria(measure, **kwargs)


# ---------------------------------------------------------------- validation of the measures
@pytest.mark.parametrize(
    "f, x, kwargs, exc, msg",
    [
        (sp.s0, [1.0, 2.0], {}, TypeError, "x must be a torch.Tensor"),
        (sp.s0, torch.zeros(3), {}, ValueError, "x must not be the zero vector"),
        (sp.s0, torch.tensor([1.0, float("nan")]), {}, ValueError, "x contains NaN"),
        (sp.s0, torch.ones(3), {"dim": 2}, ValueError, "dim=2 is out of range"),
        (sp.s0, torch.ones(2, 0), {}, ValueError, "at least 1 entries"),
        (sp.s1p, torch.ones(3), {"p": 1.0}, ValueError, "p must be > 1.0"),
        (sp.s1p, torch.ones(3), {"p": "2"}, TypeError, "p must be a real number"),
        (sp.s_star, torch.ones(3), {"q": 2.0, "p": 2.0}, ValueError, "q must be < p"),
        (sp.s_star, torch.ones(3), {"q": 0.0}, ValueError, "q must be > 0.0"),
        (sp.s_star, torch.ones(3), {"q": math.inf, "p": math.inf}, ValueError, "q must be < p"),
        (sp.hoyer, torch.ones(1), {}, ValueError, "at least 2 entries"),
        (sp.gini_index, torch.ones(3, dtype=torch.int64), {}, TypeError, "x must have a floating dtype"),
        (sp.renyi_entropy, torch.ones(3), {"alpha": -1.0}, ValueError, "alpha must be >= 0"),
        (sp.renyi_entropy, torch.ones(3), {"alpha": True}, TypeError, "alpha must be a real number"),
        (sp.renyi_entropy, torch.ones(3), {"normalize": False}, ValueError, "x must be a probability vector"),
        (sp.zero_fraction, torch.ones(3), {"atol": -1.0}, ValueError, "atol must be >= 0"),
        (sp.sign_cosine, torch.zeros(2), {}, ValueError, "x must not be the zero vector"),
    ],
)
def test_measure_validation(f, x, kwargs, exc, msg):
    with pytest.raises(exc, match=msg):
        f(x, **kwargs)


def test_zero_fraction_accepts_zero_vector():
    assert float(sp.zero_fraction(torch.zeros(4))) == 1.0
