"""Tests for kexue_lib.approximation (P08): min-max fits against closed forms and the post's numbers."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from kexue_lib import activations as act
from kexue_lib import approximation as ap

F64 = torch.float64


def _line(x, c0, c1):
    return c0 + c1 * x


def test_best_line_for_exp_matches_chebyshev_closed_form():
    # For convex f on [a, b] the best line has the secant slope and touches the error +-E at
    # a, the tangency point xi (f'(xi) = slope) and b; E = (f(a) - line(a)) in magnitude.
    x = torch.linspace(0.0, 1.0, 20_001, dtype=F64)
    slope = math.e - 1.0
    xi = math.log(slope)
    icpt = (1.0 + math.exp(xi) - slope * xi) / 2.0
    err = icpt - 1.0                                 # line(0) - exp(0) = -E
    res = ap.minimax_fit(torch.exp, _line, x, bounds=[(0.0, 2.0), (0.0, 3.0)], x0=[1.0, 1.5])
    np.testing.assert_allclose(res.params, [icpt, slope], rtol=0, atol=2e-7)
    assert res.max_error == pytest.approx(abs(err), abs=2e-8)
    pts, vals = ap.equioscillation_points(_line(x, *res.params) - torch.exp(x), x, rtol=1e-4)
    np.testing.assert_allclose(pts.numpy(), [0.0, xi, 1.0], atol=1e-4)
    np.testing.assert_allclose(vals.numpy(), [err, -err, err], atol=1e-6)


def test_squareplus_softplus_minimax_reproduces_the_post():
    x = torch.arange(0.0, 20.0, 1e-3, dtype=F64)     # the error is even: x >= 0 suffices
    res = ap.minimax_fit(act.softplus, lambda t, b: act.squareplus(t, b=b), x, bounds=[(0.5, 3.0)])
    (b,) = res.params
    assert b == pytest.approx(1.52382103, abs=5e-8)          # the post: b = 1.52382103...
    assert res.max_error == pytest.approx(0.075931, abs=1e-6)  # the post: 0.075931...
    assert res.max_error == pytest.approx(ap.uniform_error(act.softplus, lambda t, c: act.squareplus(t, b=c), x, (b,)))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(3, 400))
def test_best_constant_is_the_midrange(seed, n):
    g = torch.Generator().manual_seed(seed)
    values = torch.randn(n, generator=g, dtype=F64)
    x = torch.arange(n, dtype=F64)
    lo, hi = float(values.min()), float(values.max())
    res = ap.minimax_fit(values, lambda t, c: torch.full_like(t, c), x, bounds=[(lo - 1, hi + 1)])
    assert res.params[0] == pytest.approx((lo + hi) / 2, abs=1e-8)
    assert res.max_error == pytest.approx((hi - lo) / 2, abs=1e-8)


def test_uniform_error_is_the_brute_force_maximum():
    x = torch.linspace(-2, 2, 101, dtype=F64)
    got = ap.uniform_error(torch.sin, _line, x, (0.1, 0.8))
    ref = max(abs(0.1 + 0.8 * v - math.sin(v)) for v in x.tolist())
    assert got == pytest.approx(ref, rel=1e-14)


def test_equioscillation_points_of_a_cosine_with_refinement():
    # cos(3 pi x) on [0, 1]: extrema +1, -1, +1, -1 at 0, 1/3, 2/3, 1; a grid that misses 1/3, 2/3
    x = torch.linspace(0.0, 1.0, 101, dtype=F64)
    pts, vals = ap.equioscillation_points(torch.cos(3 * math.pi * x), x)
    np.testing.assert_allclose(pts.numpy(), [0, 1 / 3, 2 / 3, 1], atol=1e-5)
    np.testing.assert_allclose(vals.numpy(), [1, -1, 1, -1], atol=1e-4)
    raw, _ = ap.equioscillation_points(torch.cos(3 * math.pi * x), x, refine=False)
    assert abs(float(raw[1]) - 1 / 3) > 1e-3, "without refinement the grid point is off by h/3"


def test_equioscillation_points_filter_small_peaks_and_plateaus():
    x = torch.linspace(0.0, 4.0, 401, dtype=F64)
    err = torch.sin(math.pi * x) * torch.where(x < 2, 1.0, 0.5)   # peaks +-1 then +-0.5
    pts, vals = ap.equioscillation_points(err, x, rtol=0.1)
    np.testing.assert_allclose(pts.numpy(), [0.5, 1.5], atol=1e-6)
    pts2, _ = ap.equioscillation_points(err, x, rtol=0.6)
    assert pts2.numel() == 4
    flat = torch.tensor([0.0, 1.0, 1.0, 1.0, 0.0], dtype=F64)
    p, _ = ap.equioscillation_points(flat, torch.arange(5, dtype=F64), refine=False)
    assert p.numel() == 1, "a plateau is reported once"


# ----------------------------------------------------------------------------- validation
X = torch.linspace(0, 1, 11, dtype=F64)


@pytest.mark.parametrize("kwargs, err, name", [
    (dict(bounds=[]), TypeError, "bounds"),
    (dict(bounds=[(1.0, 0.0)]), ValueError, r"bounds\[0\]\[1\]"),
    (dict(bounds=[(0.0, float("inf"))]), ValueError, r"bounds\[0\]\[1\]"),
    (dict(bounds=[(0.0,)]), TypeError, r"bounds\[0\]"),
    (dict(bounds=[(0.0, 1.0)], x0=[2.0]), ValueError, r"x0\[0\]"),
    (dict(bounds=[(0.0, 1.0)], x0=[0.5, 0.5]), ValueError, "x0"),
    (dict(bounds=[(0.0, 1.0)], xtol=0.0), ValueError, "xtol"),
    (dict(bounds=[(0.0, 1.0)], maxiter=0), ValueError, "maxiter"),
])
def test_minimax_fit_rejects_bad_options(kwargs, err, name):
    with pytest.raises(err, match=f"^{name}"):
        ap.minimax_fit(torch.exp, lambda t, c: t * c, X, **kwargs)


def test_minimax_fit_rejects_bad_grid_target_and_model():
    ok = dict(bounds=[(0.0, 1.0)])
    model = lambda t, c: t * c  # noqa: E731
    with pytest.raises(ValueError, match="^x "):
        ap.minimax_fit(torch.exp, model, X.reshape(1, -1), **ok)
    with pytest.raises(ValueError, match="^x "):
        ap.minimax_fit(torch.exp, model, torch.tensor([0.0, float("nan")]), **ok)
    with pytest.raises(TypeError, match="^x "):
        ap.minimax_fit(torch.exp, model, [0.0, 1.0], **ok)
    with pytest.raises(ValueError, match="^x "):
        ap.minimax_fit(torch.exp, model, X[:0], **ok)
    with pytest.raises(TypeError, match="^target"):
        ap.minimax_fit(3.0, model, X, **ok)
    with pytest.raises(ValueError, match="^target"):
        ap.minimax_fit(X[:5], model, X, **ok)
    with pytest.raises(ValueError, match="^target"):
        ap.minimax_fit(lambda t: t / 0.0, model, X, **ok)
    with pytest.raises(TypeError, match="^model"):
        ap.minimax_fit(torch.exp, "line", X, **ok)
    with pytest.raises(ValueError, match="^model"):
        ap.minimax_fit(torch.exp, lambda t, c: t[:3] * c, X, **ok)
    with pytest.raises(ValueError, match="^model"):
        ap.minimax_fit(torch.exp, lambda t, c: torch.log(t - c), X, **ok)
    with pytest.raises(TypeError, match="^model"):
        ap.minimax_fit(torch.exp, lambda t, c: float(c), X, **ok)
    with pytest.raises(TypeError, match=r"^params\[0\]"):
        ap.uniform_error(torch.exp, model, X, ("a",))


def test_equioscillation_points_rejects_bad_input():
    e = torch.sin(X)
    with pytest.raises(ValueError, match="^err"):
        ap.equioscillation_points(e[:5], X)
    with pytest.raises(ValueError, match="^err"):
        ap.equioscillation_points(e.clone().fill_(float("nan")), X)
    with pytest.raises(ValueError, match="^x "):
        ap.equioscillation_points(e, X.flip(0))
    with pytest.raises(ValueError, match="^x "):
        ap.equioscillation_points(e[:2], X[:2])
    with pytest.raises(ValueError, match="^rtol"):
        ap.equioscillation_points(e, X, rtol=1.0)
    with pytest.raises(TypeError, match="^refine"):
        ap.equioscillation_points(e, X, refine=1)
