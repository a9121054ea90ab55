"""Tests for kexue_lib.sparsemax (P01): sparsemax, entmax-1.5, alpha-entmax, sparsemax loss.

References are independent of the code under test: a plain NumPy bisection on the threshold
(float64, 200 halvings), scipy's SLSQP on the defining optimisation problems, finite
differences (gradcheck) and numbers from the post.
"""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize

import kexue_lib.sparsemax as sm
from kexue_lib.sparsemax import (
    entmax15,
    entmax15_threshold,
    entmax_bisect,
    entmax_bisect_threshold,
    sparsemax,
    sparsemax_loss,
    sparsemax_threshold,
)

X_POST = [1.2, 0.9, 0.1, -0.4]


def ref_entmax(x: np.ndarray, alpha: float) -> np.ndarray:
    """relu(beta x - lam)^(1/beta) with sum 1, lam by 200 bisection steps, row by row."""
    beta = alpha - 1.0
    out = np.empty_like(x)
    for i, row in enumerate(x.reshape(-1, x.shape[-1])):
        z = beta * (row - row.max())
        lo, hi = -1.0, 0.0
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            if (np.maximum(z - mid, 0) ** (1 / beta)).sum() >= 1:
                lo = mid
            else:
                hi = mid
        p = np.maximum(z - lo, 0) ** (1 / beta)
        out.reshape(-1, x.shape[-1])[i] = p / p.sum()
    return out


def t64(a):
    return torch.as_tensor(np.asarray(a, dtype=np.float64))


# ----------------------------------------------------------------------------- post's numbers
def test_post_example_sparsemax():
    x = t64(X_POST)
    lam, k = sparsemax_threshold(x)
    assert abs(lam.item() - 0.55) < 1e-12 and k.item() == 2
    torch.testing.assert_close(sparsemax(x), t64([0.65, 0.35, 0, 0]), rtol=0, atol=1e-12)


def test_post_example_entmax15():
    x = t64(X_POST)
    lam, k = entmax15_threshold(x)
    assert abs(lam.item() - (-0.161958)) < 1e-6 and k.item() == 3
    torch.testing.assert_close(entmax15(x), t64([0.580581, 0.374493, 0.044926, 0]), rtol=0, atol=1e-6)


def test_post_example_sparsemax_loss():
    x = t64(X_POST).requires_grad_()
    loss = sparsemax_loss(x, torch.tensor(1))
    assert abs(loss.item() - 0.4225) < 1e-12
    (g,) = torch.autograd.grad(loss, x)
    torch.testing.assert_close(g, t64([0.65, -0.65, 0, 0]), rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- vs references
@pytest.mark.parametrize("scale", [0.01, 0.5, 3.0])
@pytest.mark.parametrize("alpha", [1.2, 1.5, 2.0, 2.5, 3.0])
def test_against_numpy_bisection(alpha, scale):
    g = torch.Generator().manual_seed(int(alpha * 10 + scale * 100))
    x = torch.randn(40, 17, generator=g, dtype=torch.float64) * scale
    ref = t64(ref_entmax(x.numpy(), alpha))
    torch.testing.assert_close(entmax_bisect(x, alpha=alpha), ref, rtol=0, atol=1e-9)
    if alpha == 1.5:
        torch.testing.assert_close(entmax15(x), ref, rtol=0, atol=1e-12)
    if alpha == 2.0:
        torch.testing.assert_close(sparsemax(x), ref, rtol=0, atol=1e-12)


def test_ties_and_thresholds_on_entries():
    # rows where the threshold sits exactly on an entry or on tied entries
    x = t64([[2, 0, 0], [2, 0, -1], [1, 1, 1], [3, 3, 0], [0, 0, 0], [4, 2, 2]])
    for alpha, f in [(1.5, entmax15), (2.0, sparsemax)]:
        ref = t64(ref_entmax(x.numpy(), alpha))
        torch.testing.assert_close(f(x), ref, rtol=0, atol=1e-12)
        torch.testing.assert_close(entmax_bisect(x, alpha=alpha), ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(entmax15(t64([2, 0, 0])), t64([1, 0, 0]), rtol=0, atol=1e-15)


def test_integer_rounded_logits_many_ties():
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(200, 30, generator=g, dtype=torch.float64) * 2).round()
    for alpha, f in [(1.5, entmax15), (2.0, sparsemax)]:
        torch.testing.assert_close(f(x), t64(ref_entmax(x.numpy(), alpha)), rtol=0, atol=1e-12)


@pytest.mark.parametrize("f, alpha", [(sparsemax, 2.0), (entmax15, 1.5)])
def test_partial_sort_rounds(monkeypatch, f, alpha):
    """Force several top-k rounds (k = 2, 16, full) on rows with mixed support sizes."""
    monkeypatch.setattr(sm, "TOPK_START", 2)
    monkeypatch.setattr(sm, "SUPPORT_ITERS", 0)     # skip the sort-free search: sort every row
    g = torch.Generator().manual_seed(5)
    scales = torch.tensor([10.0, 0.01, 1.0, 0.1] * 10, dtype=torch.float64).unsqueeze(1)
    x = torch.randn(40, 300, generator=g, dtype=torch.float64) * scales
    torch.testing.assert_close(f(x), t64(ref_entmax(x.numpy(), alpha)), rtol=0, atol=1e-12)
    # only a few rows undecided after the first round: the gather path
    x2 = torch.randn(40, 300, generator=g, dtype=torch.float64) * 10
    x2[3] *= 1e-3
    torch.testing.assert_close(f(x2), t64(ref_entmax(x2.numpy(), alpha)), rtol=0, atol=1e-12)
    # every support smaller than the first k: one top-k round settles all rows
    x3 = torch.randn(10, 300, generator=g, dtype=torch.float64) * 100
    torch.testing.assert_close(f(x3), t64(ref_entmax(x3.numpy(), alpha)), rtol=0, atol=1e-12)


@pytest.mark.parametrize("iters", [1, 2, 3])
@pytest.mark.parametrize("f, alpha", [(sparsemax, 2.0), (entmax15, 1.5)])
def test_sort_free_search_with_sorted_fallback(monkeypatch, f, alpha, iters):
    """Few iterations of the sort-free search: unsettled rows go to the sorted path."""
    monkeypatch.setattr(sm, "SUPPORT_ITERS", iters)
    g = torch.Generator().manual_seed(6)
    scales = torch.tensor([3.0, 0.01, 1.0, 0.3, 10.0] * 8, dtype=torch.float64).unsqueeze(1)
    for n in (50, 400):                             # dense search (many candidates) and compact
        x = torch.randn(40, n, generator=g, dtype=torch.float64) * scales
        torch.testing.assert_close(f(x), t64(ref_entmax(x.numpy(), alpha)), rtol=0, atol=1e-12)


@pytest.mark.parametrize("f, alpha", [(sparsemax, 2.0), (entmax15, 1.5)])
def test_sort_free_search_settles_without_sorting(monkeypatch, f, alpha):
    """On dense, sparse and moderate rows the exact support is found without any sort."""
    def no_sort(*args, **kwargs):
        raise AssertionError("sorted fallback used")

    monkeypatch.setattr(sm, "_sorted_threshold", no_sort)
    g = torch.Generator().manual_seed(8)
    for scale in (1e-5, 0.1, 1.0, 10.0):
        x = torch.randn(64, 500, generator=g, dtype=torch.float64) * scale
        torch.testing.assert_close(f(x), t64(ref_entmax(x.numpy(), alpha)), rtol=0, atol=1e-12)


@pytest.mark.parametrize("f", [sparsemax, entmax15])
def test_float32_large_logits_keep_precision(f):
    """Outputs are computed from max-shifted logits: no cancellation at |x| ~ 1e3 in float32."""
    g = torch.Generator().manual_seed(9)
    x = (torch.randn(16, 300, generator=g, dtype=torch.float64) * 10 + 1000.0).float()
    ref = t64(ref_entmax(x.double().numpy(), 2.0 if f is sparsemax else 1.5))
    assert (f(x).double() - ref).abs().max().item() < 1e-6


@pytest.mark.parametrize("dim", [0, 1, 2, -1, -2])
def test_any_dim(dim):
    g = torch.Generator().manual_seed(11)
    x = torch.randn(5, 6, 7, generator=g, dtype=torch.float64)
    for f in (sparsemax, entmax15, lambda t, dim: entmax_bisect(t, alpha=1.7, dim=dim)):
        out = f(x, dim=dim)
        ref = f(x.movedim(dim, -1).contiguous(), dim=-1).movedim(-1, dim)
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-13)
        torch.testing.assert_close(out.sum(dim), torch.ones_like(out.sum(dim)), rtol=0, atol=1e-12)


def _simplex_solve(obj, n):
    cons = [{"type": "eq", "fun": lambda p: p.sum() - 1, "jac": lambda p: np.ones_like(p)}]
    res = minimize(obj, np.full(n, 1 / n), method="SLSQP", bounds=[(0, 1)] * n, constraints=cons,
                   options={"ftol": 1e-14, "maxiter": 500})
    return res.x


def test_sparsemax_is_euclidean_projection_scipy():
    rng = np.random.default_rng(0)
    for _ in range(10):
        x = rng.normal(size=6) * 1.5
        ref = _simplex_solve(lambda p: ((p - x) ** 2).sum(), 6)
        np.testing.assert_allclose(sparsemax(t64(x)).numpy(), ref, atol=1e-6)


@pytest.mark.parametrize("alpha", [1.5, 1.3])
def test_entmax_maximises_tsallis_regularised_score_scipy(alpha):
    """Paper definition: argmax_p <p, x> + (sum_j p_j - p_j^alpha) / (alpha (alpha - 1))."""
    rng = np.random.default_rng(1)
    for _ in range(6):
        x = rng.normal(size=5) * 2
        obj = lambda p: -(p @ x + (p - np.clip(p, 0, None) ** alpha).sum() / (alpha * (alpha - 1)))  # noqa: E731
        ref = _simplex_solve(obj, 5)
        np.testing.assert_allclose(entmax_bisect(t64(x), alpha=alpha).numpy(), ref, atol=2e-5)


def test_limits_in_alpha():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(20, 8, generator=g, dtype=torch.float64)
    torch.testing.assert_close(entmax_bisect(x, alpha=1.0001), torch.softmax(x, -1), rtol=0, atol=1e-3)
    err_a = (entmax_bisect(x, alpha=1.001) - torch.softmax(x, -1)).abs().max()
    err_b = (entmax_bisect(x, alpha=1.01) - torch.softmax(x, -1)).abs().max()
    assert err_a < err_b / 5, "alpha -> 1 should approach softmax roughly linearly"


def test_support_non_increasing_in_alpha():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(300, 10, generator=g, dtype=torch.float64) * 2
    sizes = torch.stack([(entmax_bisect(x, alpha=a) > 0).sum(-1) for a in np.linspace(1.05, 4, 25)])
    assert bool((sizes[1:] <= sizes[:-1]).all())


def test_bisection_few_iterations_and_tolerance():
    g = torch.Generator().manual_seed(6)
    x = torch.randn(64, 500, generator=g, dtype=torch.float64)
    for alpha in (1.25, 1.5, 2.0):
        _, it = entmax_bisect_threshold(x, alpha=alpha)
        assert it <= 12, (alpha, it)
    _, it = entmax_bisect_threshold(x, alpha=1.5, n_iter=2)
    assert it == 2
    coarse = entmax_bisect(x, alpha=1.5, tol=1e-3)
    assert (coarse - entmax15(x)).abs().max() < 1e-2


def test_threshold_consistency():
    g = torch.Generator().manual_seed(7)
    x = torch.randn(30, 12, generator=g, dtype=torch.float64)
    lam15, _ = entmax15_threshold(x)
    lamb, _ = entmax_bisect_threshold(x, alpha=1.5)
    torch.testing.assert_close(lam15, lamb, rtol=0, atol=1e-11)
    lam2, k2 = sparsemax_threshold(x)
    torch.testing.assert_close(k2.squeeze(-1), (sparsemax(x) > 0).sum(-1))


def test_float32_and_dtype_preserved():
    g = torch.Generator().manual_seed(8)
    x = torch.randn(16, 100, generator=g)
    for f in (sparsemax, entmax15, lambda t: entmax_bisect(t, alpha=1.5)):
        out = f(x)
        assert out.dtype == torch.float32
        torch.testing.assert_close(out.double(), entmax15(x.double()) if f is not sparsemax else sparsemax(x.double()),
                                   rtol=0, atol=2e-6)


def test_large_logits_stable():
    x = t64([1000.0, 999.5, -1000.0])
    torch.testing.assert_close(sparsemax(x), t64([0.75, 0.25, 0]))
    assert torch.isfinite(entmax15(x * 1e3)).all() and torch.isfinite(entmax_bisect(x * 1e3, alpha=1.2)).all()


# ----------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("name", ["sparsemax", "entmax15", "bisect1.3", "bisect1.5", "bisect1.8"])
def test_gradcheck(name):
    g = torch.Generator().manual_seed(9)
    x = (torch.randn(3, 7, generator=g, dtype=torch.float64) * 1.5).requires_grad_()
    f = {"sparsemax": sparsemax, "entmax15": entmax15,
         "bisect1.3": lambda t: entmax_bisect(t, alpha=1.3),
         "bisect1.5": lambda t: entmax_bisect(t, alpha=1.5),
         "bisect1.8": lambda t: entmax_bisect(t, alpha=1.8)}[name]
    assert torch.autograd.gradcheck(f, (x,), eps=1e-6, atol=1e-6)
    xt = x.detach().T.contiguous().requires_grad_()
    fd = {"sparsemax": lambda t: sparsemax(t, dim=0), "entmax15": lambda t: entmax15(t, dim=0)}.get(name)
    if fd is not None:
        assert torch.autograd.gradcheck(fd, (xt,), eps=1e-6, atol=1e-6)


def test_sparsemax_jacobian_formula():
    x = t64(X_POST)
    jac = torch.autograd.functional.jacobian(sparsemax, x)
    on = torch.tensor([1.0, 1.0, 0, 0], dtype=torch.float64)
    want = torch.diag(on) - torch.outer(on, on) / 2
    torch.testing.assert_close(jac, want, rtol=0, atol=1e-14)


# ----------------------------------------------------------------------------- sparsemax loss
def test_sparsemax_loss_gradient_and_fenchel_young():
    g = torch.Generator().manual_seed(10)
    x = (torch.randn(50, 9, generator=g, dtype=torch.float64) * 2).requires_grad_()
    t = torch.randint(0, 9, (50,), generator=g)
    loss = sparsemax_loss(x, t)
    (grad,) = torch.autograd.grad(loss.sum(), x)
    p = sparsemax(x.detach())
    torch.testing.assert_close(grad, p - torch.nn.functional.one_hot(t, 9).double(), rtol=0, atol=1e-12)
    xd = x.detach()
    fy = 0.5 - xd.gather(1, t[:, None]).squeeze(1) + (xd * p).sum(1) - 0.5 * (p * p).sum(1)
    torch.testing.assert_close(loss.detach(), fy, rtol=0, atol=1e-12)
    assert bool((loss >= -1e-12).all())
    assert torch.autograd.gradcheck(lambda z: sparsemax_loss(z, t[:4]), (x[:4].detach().clone().requires_grad_(),))


def test_sparsemax_loss_zero_when_separated_by_margin_one():
    x = t64([[5.0, 3.9, 0.0], [5.0, 4.2, 0.0]])
    loss = sparsemax_loss(x, torch.tensor([0, 0]))
    assert abs(loss[0].item()) < 1e-12 and loss[1].item() > 0.01


def test_sparsemax_loss_dim():
    g = torch.Generator().manual_seed(12)
    x = torch.randn(4, 6, 3, generator=g, dtype=torch.float64)
    t = torch.randint(0, 6, (4, 3), generator=g)
    ref = sparsemax_loss(x.movedim(1, -1), t)
    torch.testing.assert_close(sparsemax_loss(x, t, dim=1), ref)


# ----------------------------------------------------------------------------- properties
logit_rows = st.lists(st.floats(-20, 20, allow_nan=False, width=64), min_size=1, max_size=12)


@settings(max_examples=60, deadline=None)
@given(logit_rows, st.floats(-50, 50), st.sampled_from([1.5, 2.0, 1.25, 3.0]))
def test_property_simplex_shift_monotone(row, c, alpha):
    x = t64(row)
    for p in ([sparsemax(x)] if alpha == 2 else []) + ([entmax15(x)] if alpha == 1.5 else []) + [entmax_bisect(x, alpha=alpha)]:
        assert bool((p >= 0).all()) and abs(p.sum().item() - 1) < 1e-9
        order = torch.argsort(x)
        assert bool((p[order][1:] >= p[order][:-1] - 1e-9).all()), "weakly order preserving"
    for f in (sparsemax, entmax15):
        torch.testing.assert_close(f(x + c), f(x), rtol=0, atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(logit_rows)
def test_property_projection_idempotent(row):
    p = sparsemax(t64(row))
    torch.testing.assert_close(sparsemax(p), p, rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- validation
@pytest.mark.parametrize("bad", [1.0, 0.5, -2.0])
def test_alpha_validation(bad):
    with pytest.raises(ValueError, match="alpha"):
        entmax_bisect(t64(X_POST), alpha=bad)
    with pytest.raises(ValueError, match="alpha"):
        entmax_bisect_threshold(t64(X_POST), alpha=bad)


@pytest.mark.parametrize("f", [sparsemax, entmax15, sparsemax_threshold, entmax15_threshold,
                               lambda x, dim=-1: entmax_bisect(x, alpha=1.5, dim=dim)])
def test_input_validation(f):
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ValueError, match="x"):
            f(t64([1.0, bad, 0.0]))
    with pytest.raises(ValueError, match="dim"):
        f(t64([[1.0, 2.0]]), dim=2)
    with pytest.raises(TypeError, match="dim"):
        f(t64([1.0, 2.0]), dim=0.5)
    with pytest.raises(TypeError, match="x"):
        f(torch.tensor([1, 2, 3]))
    with pytest.raises(TypeError, match="x"):
        f([1.0, 2.0])
    with pytest.raises(ValueError, match="x"):
        f(torch.tensor(1.0, dtype=torch.float64))
    with pytest.raises(ValueError, match="x"):
        f(torch.zeros(3, 0, dtype=torch.float64))


def test_iteration_argument_validation():
    with pytest.raises(ValueError, match="n_iter"):
        entmax_bisect(t64(X_POST), n_iter=0)
    with pytest.raises(ValueError, match="tol"):
        entmax_bisect(t64(X_POST), tol=-1.0)


def test_loss_target_validation():
    x = t64([[1.0, 2.0, 3.0]])
    with pytest.raises(ValueError, match="target"):
        sparsemax_loss(x, torch.tensor([3]))
    with pytest.raises(ValueError, match="target"):
        sparsemax_loss(x, torch.tensor([[0]]))
    with pytest.raises(TypeError, match="target"):
        sparsemax_loss(x, torch.tensor([0.0]))
    with pytest.raises(ValueError, match="x"):
        sparsemax_loss(t64([[1.0, float("nan")]]), torch.tensor([0]))
