"""Tests for kexue_lib.activations (P08): against high-precision mpmath, autograd, and the post's numbers."""
from __future__ import annotations

import math

import mpmath
import pytest
import torch
from hypothesis import given, settings, strategies as st

from kexue_lib import activations as act

F64, F32 = torch.float64, torch.float32


def _mp_squareplus(x: float, b: float) -> float:
    with mpmath.workdps(200):             # enough digits to survive the cancellation at x = -1e30
        x, b = mpmath.mpf(x), mpmath.mpf(b)
        return float((x + mpmath.sqrt(x * x + b)) / 2)


def _mp_softplus(x: float) -> float:
    with mpmath.workdps(50):
        return float(mpmath.log1p(mpmath.exp(mpmath.mpf(x))))


# One grid spanning the cancellation region (x << 0), the bend, and the linear tail.
XS = [-1e30, -1e15, -1e8, -12345.6, -100.0, -7.5, -1.0, -1e-3, 0.0, 1e-3, 0.7, 3.5646, 40.0, 1e6, 1e20]


@pytest.mark.parametrize("b", [1e-6, 0.3, act.B_MINIMAX, act.B_UPPER, 4.0, 250.0])
def test_squareplus_matches_mpmath_in_float64_and_float32(b):
    ref = torch.tensor([_mp_squareplus(v, b) for v in XS], dtype=F64)
    got = act.squareplus(torch.tensor(XS, dtype=F64), b=b)
    torch.testing.assert_close(got, ref, rtol=4e-16, atol=0)
    got32 = act.squareplus(torch.tensor(XS, dtype=F32), b=b)
    mask = ref.abs() > 1e-37          # results below float32's normal range are allowed to flush
    torch.testing.assert_close(got32.double()[mask], ref[mask], rtol=3e-7, atol=0)


def test_naive_formula_loses_the_negative_tail_but_stable_form_does_not():
    x = torch.tensor([-1e4, -1e5, -1e6], dtype=F32)
    b = act.B_MINIMAX
    naive = (x + torch.sqrt(x * x + b)) / 2
    ref = torch.tensor([_mp_squareplus(v, b) for v in x.tolist()], dtype=F64)
    assert bool((naive == 0).all()), "the float32 textbook formula should cancel to 0 here"
    torch.testing.assert_close(act.squareplus(x, b=b).double(), ref, rtol=3e-7, atol=0)


def test_softplus_matches_mpmath_and_has_no_threshold_error():
    xs = [-700.0, -50.0, -1.0, 0.0, 1e-8, 2.0, 25.0, 700.0, 1e300]
    ref = torch.tensor([_mp_softplus(v) if v < 1e5 else v for v in xs], dtype=F64)
    torch.testing.assert_close(act.softplus(torch.tensor(xs, dtype=F64)), ref, rtol=4e-16, atol=0)
    x32 = torch.tensor([-80.0, 0.0, 100.0], dtype=F32)
    assert bool(torch.isfinite(act.softplus(x32)).all()) and float(act.softplus(x32)[0]) > 0


@settings(max_examples=40, deadline=None)
@given(b=st.floats(1e-3, 50.0), seed=st.integers(0, 10_000), scale=st.floats(0.1, 30.0))
def test_derivatives_match_autograd(b, seed, scale):
    g = torch.Generator().manual_seed(seed)
    x = (scale * torch.randn(64, generator=g, dtype=F64)).requires_grad_(True)
    (d1,) = torch.autograd.grad(act.squareplus(x, b=b).sum(), x, create_graph=True)
    (d2,) = torch.autograd.grad(d1.sum(), x)
    torch.testing.assert_close(act.squareplus_grad(x.detach(), b=b), d1.detach(), rtol=1e-12, atol=1e-300)
    torch.testing.assert_close(act.squareplus_grad2(x.detach(), b=b), d2, rtol=1e-9, atol=1e-300)
    (s1,) = torch.autograd.grad(act.softplus(x).sum(), x, create_graph=True)
    (s2,) = torch.autograd.grad(s1.sum(), x)
    torch.testing.assert_close(act.softplus_grad(x.detach()), s1.detach(), rtol=1e-12, atol=1e-300)
    torch.testing.assert_close(act.softplus_grad2(x.detach()), s2, rtol=1e-10, atol=1e-300)


def test_closed_form_derivatives_against_the_naive_formula_and_gradcheck():
    b = 1.7
    x = torch.linspace(-6, 6, 101, dtype=F64)
    r = torch.sqrt(x * x + b)
    torch.testing.assert_close(act.squareplus_grad(x, b=b), (1 + x / r) / 2, rtol=1e-13, atol=0)
    torch.testing.assert_close(act.squareplus_grad2(x, b=b), b / (2 * r**3), rtol=1e-13, atol=0)
    xg = torch.tensor([-40.0, -2.0, -1e-7, 0.0, 1e-7, 0.5, 30.0], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: act.squareplus(t, b=b), (xg,))
    assert torch.autograd.gradgradcheck(lambda t: act.squareplus(t, b=b), (xg,))


def test_gradients_stay_finite_at_extreme_inputs_in_float32():
    x = torch.tensor([-3e38, -1e20, -1e4, 0.0, 1e4, 1e20, 3e38], dtype=F32, requires_grad=True)
    y = act.squareplus(x, b=2.0)
    (gx,) = torch.autograd.grad(y.sum(), x)
    assert bool(torch.isfinite(y).all()) and bool(torch.isfinite(gx).all())
    assert float(gx[3]) == 0.5 and float(gx[-1]) == 1.0
    # the stable closed-form derivative stays positive far left (the naive one rounds to 0)
    assert float(act.squareplus_grad(torch.tensor([-1e4], dtype=F32), b=2.0)) > 0


@settings(max_examples=60, deadline=None)
@given(x=st.floats(-1e6, 1e6), y=st.floats(-1e6, 1e6), b=st.floats(1e-4, 100.0))
def test_shape_properties(x, y, b):
    t = torch.tensor([x, -x, y], dtype=F64)
    s = act.squareplus(t, b=b)
    # g(x) - x = g(-x) for SquarePlus and SoftPlus alike
    assert math.isclose(float(s[0]) - x, float(s[1]), rel_tol=1e-12, abs_tol=1e-9)
    p = act.softplus(t)
    assert math.isclose(float(p[0]) - x, float(p[1]), rel_tol=1e-12, abs_tol=1e-9)
    assert bool((s > 0).all()) and bool((s >= torch.relu(t)).all())
    assert float((s - torch.relu(t)).max()) <= math.sqrt(b) / 2 * (1 + 1e-12)   # gap largest at 0
    lo, hi = sorted((x, y))
    s_lo, s_hi = act.squareplus(t.new_tensor([lo, hi]), b=b).tolist()
    assert s_lo <= s_hi * (1 + 4e-16), "monotone up to rounding"


@settings(max_examples=60, deadline=None)
@given(x=st.floats(-60.0, 60.0), extra=st.floats(0.0, 10.0))
def test_squareplus_dominates_softplus_iff_b_at_least_4log2sq(x, extra):
    t = torch.tensor([x, 0.0], dtype=F64)
    diff = act.squareplus(t, b=act.B_UPPER + extra) - act.softplus(t)
    assert float(diff.min()) >= -1e-15
    below = act.squareplus(t[1:], b=act.B_UPPER - 1e-6) - act.softplus(t[1:])
    assert float(below) < 0


def test_constants_match_the_post():
    assert math.isclose(act.B_UPPER, 1.921812055672, rel_tol=1e-11)   # the post: 1.921812...
    assert math.isclose(act.B_MINIMAX, 1.52382103, rel_tol=0, abs_tol=1e-8)


def test_module_matches_function_and_keeps_device_dtype():
    m = act.SquarePlus(b=0.9)
    assert "b=0.9" in repr(m)
    x = torch.linspace(-3, 3, 7, dtype=F32)
    y = m(x)
    assert y.dtype == F32 and y.device == x.device
    torch.testing.assert_close(y, act.squareplus(x, b=0.9))
    assert act.SquarePlus()(torch.zeros(1)).item() == pytest.approx(1.0)   # default b=4: sqrt(4)/2
    assert list(m.parameters()) == []


# ----------------------------------------------------------------------------- validation
@pytest.mark.parametrize("fn", [act.squareplus, act.squareplus_grad, act.squareplus_grad2])
@pytest.mark.parametrize("b, err", [(0.0, ValueError), (-1.0, ValueError), (float("nan"), ValueError),
                                    (float("inf"), ValueError), ("2", TypeError), (True, TypeError)])
def test_bad_b_is_rejected(fn, b, err):
    with pytest.raises(err, match="^b "):
        fn(torch.zeros(3), b=b)


@pytest.mark.parametrize("fn", [act.squareplus, act.squareplus_grad, act.squareplus_grad2,
                                act.softplus, act.softplus_grad, act.softplus_grad2])
def test_bad_x_is_rejected(fn):
    with pytest.raises(ValueError, match="^x "):
        fn(torch.tensor([0.0, float("nan")]))
    with pytest.raises(ValueError, match="^x "):
        fn(torch.tensor([float("-inf")]))
    with pytest.raises(TypeError, match="^x "):
        fn([0.0, 1.0])
    with pytest.raises(TypeError, match="^x "):
        fn(torch.arange(3))


def test_module_rejects_bad_b():
    with pytest.raises(ValueError, match="^b "):
        act.SquarePlus(b=0.0)
    with pytest.raises(TypeError, match="^b "):
        act.SquarePlus(b=None)
