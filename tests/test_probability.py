"""Tests for kexue_lib.probability (P01): softmax family, Taylor/top-k/Perturb-Max, losses.

References: closed forms, autograd of torch's own softmax, scipy quadrature, Monte Carlo with
a stated sigma bound, and the numbers of the P01 brief (recomputed there in NumPy).
"""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats

from kexue_lib.probability import (
    am_softmax_loss,
    grad_surrogate_loss,
    gumbel_max_sample,
    logsumexp,
    perturb_max,
    softmax,
    softmax_jacobian,
    sparse_softmax,
    sparse_softmax_loss,
    taylor_exp,
    taylor_softmax,
)

X_POST = torch.tensor([1.2, 0.9, 0.1, -0.4], dtype=torch.float64)


def t64(a):
    return torch.as_tensor(np.asarray(a, dtype=np.float64))


# ----------------------------------------------------------------------------- softmax
def test_softmax_post_numbers_and_temperature():
    torch.testing.assert_close(softmax(X_POST), t64([0.43945, 0.32555, 0.14628, 0.08872]), rtol=0, atol=1e-5)
    e = np.exp(X_POST.numpy() / 0.7)
    torch.testing.assert_close(softmax(X_POST, temperature=0.7), t64(e / e.sum()), rtol=0, atol=1e-14)


def test_temperature_limits():
    x = t64([[0.3, 2.0, -1.0, 1.9]])
    torch.testing.assert_close(softmax(x, temperature=1e-3), t64([[0, 1.0, 0, 0]]), rtol=0, atol=1e-12)
    torch.testing.assert_close(softmax(x, temperature=1e6), torch.full_like(x, 0.25), rtol=0, atol=1e-6)
    for tau in (1.0, 0.1, 0.01):
        smooth = logsumexp(x, temperature=tau)
        assert 0 <= (smooth - 2.0).item() <= tau * math.log(4) + 1e-15


def test_softmax_jacobian_vs_autograd_and_l1():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 4, generator=g, dtype=torch.float64)
    p = torch.softmax(x, dim=1)
    jac = softmax_jacobian(p, dim=1)                       # (3, 4, 5, 5)
    assert jac.shape == (3, 4, 5, 5)
    for b in range(3):
        for c in range(4):
            ref = torch.autograd.functional.jacobian(lambda v: torch.softmax(v, 0), x[b, :, c])
            torch.testing.assert_close(jac[b, c], ref, rtol=0, atol=1e-14)
    half_l1 = 0.5 * jac.abs().sum((-1, -2))
    torch.testing.assert_close(half_l1, 1 - (p * p).sum(1), rtol=0, atol=1e-12)
    assert abs(0.5 * softmax_jacobian(softmax(X_POST)).abs().sum().item() - 0.671634) < 1e-6


def test_cross_entropy_gradient_is_p_minus_onehot():
    x = X_POST.clone().requires_grad_()
    loss = -torch.log(softmax(x))[2]
    (grad,) = torch.autograd.grad(loss, x)
    torch.testing.assert_close(grad, softmax(X_POST) - F.one_hot(torch.tensor(2), 4).double())


# ----------------------------------------------------------------------------- Taylor
def test_taylor_exp_matches_series():
    x = torch.linspace(-6, 6, 101, dtype=torch.float64)
    for k in (0, 1, 2, 5, 8):
        ref = sum(x**m / math.factorial(m) for m in range(k + 1))
        torch.testing.assert_close(taylor_exp(x, order=k), ref, rtol=1e-13, atol=1e-13)


def test_taylor_even_positive_odd_not():
    x = torch.linspace(-30, 30, 200001, dtype=torch.float64)
    for k in (2, 4, 6):
        assert taylor_exp(x, order=k).min().item() > 0
    assert taylor_exp(x, order=3).min().item() < 0


def test_taylor_softmax_numbers_and_no_invariance():
    torch.testing.assert_close(taylor_softmax(X_POST), t64([0.41655, 0.32882, 0.15763, 0.09700]), rtol=0, atol=1e-5)
    assert (taylor_softmax(X_POST + 3) - taylor_softmax(X_POST)).abs().max() > 0.05      # not shift invariant
    p = taylor_softmax(t64([-1.0, -3.0]))
    assert p[1] > p[0]                                   # order reversed below the minimum at -1


# ----------------------------------------------------------------------------- sparse (top-k) softmax
def test_sparse_softmax_topk():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 10, generator=g, dtype=torch.float64)
    p = sparse_softmax(x, k=3)
    keep = x >= x.topk(3, dim=-1).values[:, -1:]
    ref = torch.where(keep, x.exp(), torch.zeros_like(x))
    torch.testing.assert_close(p, ref / ref.sum(-1, keepdim=True), rtol=0, atol=1e-14)
    torch.testing.assert_close(sparse_softmax(x, k=10), torch.softmax(x, -1), rtol=0, atol=1e-14)
    torch.testing.assert_close(sparse_softmax(x.T, k=3, dim=0), p.T, rtol=0, atol=1e-14)


def test_sparse_softmax_loss_and_zero_gradients():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(5, 8, generator=g, dtype=torch.float64).requires_grad_()
    t = x.detach().argmax(-1)
    loss = sparse_softmax_loss(x, t, k=3)
    torch.testing.assert_close(loss, -torch.log(sparse_softmax(x.detach(), k=3).gather(1, t[:, None]).squeeze(1)))
    (grad,) = torch.autograd.grad(loss.sum(), x)
    outside = x.detach() < x.detach().topk(3, dim=-1).values[:, -1:]
    assert bool((grad[outside] == 0).all())


# ----------------------------------------------------------------------------- Perturb-Max / Gumbel
def test_perturb_max_gumbel_is_softmax():
    torch.testing.assert_close(perturb_max(X_POST, noise="gumbel", n_quad=4096), softmax(X_POST), rtol=0, atol=1e-6)


def test_perturb_max_normal_vs_scipy_quad():
    xn = X_POST.numpy()
    ref = [integrate.quad(lambda e: stats.norm.pdf(e) * np.prod([stats.norm.cdf(xn[i] - xn[j] + e)
                                                                  for j in range(4) if j != i]),
                          -np.inf, np.inf, epsabs=1e-13)[0] for i in range(4)]
    np.testing.assert_allclose(ref, [0.49593, 0.34558, 0.11120, 0.04729], atol=1e-5)
    p = perturb_max(X_POST, n_quad=256)
    np.testing.assert_allclose(p.numpy(), ref, atol=1e-4)
    err256 = np.abs(p.numpy() - ref).max()
    err2048 = np.abs(perturb_max(X_POST, n_quad=2048).numpy() - ref).max()
    assert err2048 < err256 / 4


def test_perturb_max_shift_order_batch():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 6, generator=g, dtype=torch.float64)
    p = perturb_max(x)
    torch.testing.assert_close(perturb_max(x + 3.0), p, rtol=0, atol=1e-12)
    assert bool((torch.argsort(p, -1) == torch.argsort(x, -1)).all())
    torch.testing.assert_close(perturb_max(x.T, dim=0), p.T)
    assert (p.sum(-1) - 1).abs().max() < 1e-3


def test_gumbel_max_frequencies():
    gen = torch.Generator().manual_seed(4)
    n = 200_000
    idx = gumbel_max_sample(X_POST, n, generator=gen)
    assert idx.shape == (n,)
    freq = torch.bincount(idx, minlength=4).double() / n
    p = softmax(X_POST)
    sigma = torch.sqrt(p * (1 - p) / n)
    assert bool(((freq - p).abs() < 5 * sigma).all())
    batch = gumbel_max_sample(torch.stack([X_POST, -X_POST]), 10, generator=gen)
    assert batch.shape == (10, 2)


# ----------------------------------------------------------------------------- losses
def test_am_softmax_reduces_to_cross_entropy():
    g = torch.Generator().manual_seed(5)
    z, c = torch.randn(7, 3, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g, dtype=torch.float64)
    t = torch.randint(0, 5, (7,), generator=g)
    cos = F.cosine_similarity(z[:, None, :], c[None, :, :], dim=-1)
    ref = F.cross_entropy(cos / 0.1, t, reduction="none")
    torch.testing.assert_close(am_softmax_loss(z, c, t, margin=0.0, temperature=0.1), ref)
    l1 = am_softmax_loss(z, c, t, margin=0.2, temperature=0.1)
    l2 = am_softmax_loss(z, c, t, margin=0.4, temperature=0.1)
    assert bool((l2 > l1).all()) and bool((l1 > ref).all())
    # the margin enters as -m/T on the target logit
    ref_m = F.cross_entropy(cos / 0.1 - 2.0 * F.one_hot(t, 5), t, reduction="none")
    torch.testing.assert_close(l1, ref_m)


def test_grad_surrogate_loss_gradient():
    x = X_POST.clone().requires_grad_()
    for pmap in (torch.softmax, lambda v, d: sparse_softmax(v, k=2, dim=d)):
        p = pmap(x, -1)
        (grad,) = torch.autograd.grad(grad_surrogate_loss(p, x, torch.tensor(0)), x)
        torch.testing.assert_close(grad, p.detach() - F.one_hot(torch.tensor(0), 4).double())


# ----------------------------------------------------------------------------- properties
@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-10, 10, allow_nan=False, width=64), min_size=2, max_size=8), st.floats(-20, 20))
def test_property_shift_invariant_maps(row, c):
    x = t64(row)
    top = x.sort(descending=True).values
    maps = [softmax, perturb_max]
    if len(row) == 2 or top[1] - top[2] > 1e-6:      # top-k is discontinuous at ties at the cut
        maps.append(lambda v: sparse_softmax(v, k=2))
    for f in maps:
        p = f(x)
        torch.testing.assert_close(f(x + c), p, rtol=0, atol=1e-9)
        assert bool((p >= 0).all())
    torch.testing.assert_close(softmax(x).sum(), torch.tensor(1.0, dtype=torch.float64))


# ----------------------------------------------------------------------------- validation
@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_temperature_validation(bad):
    with pytest.raises(ValueError, match="temperature"):
        softmax(X_POST, temperature=bad)
    with pytest.raises(ValueError, match="temperature"):
        logsumexp(X_POST, temperature=bad)
    z = torch.ones(2, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="temperature"):
        am_softmax_loss(z, z, torch.tensor([0, 1]), temperature=bad)


@pytest.mark.parametrize("f", [softmax, logsumexp, taylor_softmax, perturb_max,
                               lambda x, dim=-1: sparse_softmax(x, k=1, dim=dim),
                               lambda x, dim=-1: softmax_jacobian(x, dim=dim)])
def test_input_validation(f):
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="x|p"):
            f(t64([1.0, bad]))
    with pytest.raises(ValueError, match="dim"):
        f(t64([1.0, 2.0]), dim=1)
    with pytest.raises(TypeError):
        f(torch.tensor([1, 2]))


def test_other_argument_validation():
    with pytest.raises(ValueError, match="order"):
        taylor_softmax(X_POST, order=3)
    with pytest.raises(ValueError, match="order"):
        taylor_softmax(X_POST, order=0)
    with pytest.raises(ValueError, match="k"):
        sparse_softmax(X_POST, k=5)
    with pytest.raises(ValueError, match="k"):
        sparse_softmax_loss(X_POST, torch.tensor(0), k=0)
    with pytest.raises(ValueError, match="noise"):
        perturb_max(X_POST, noise="cauchy")
    with pytest.raises(ValueError, match="n_quad"):
        perturb_max(X_POST, n_quad=0)
    with pytest.raises(ValueError, match="num_samples"):
        gumbel_max_sample(X_POST, 0)
    with pytest.raises(TypeError, match="generator"):
        gumbel_max_sample(X_POST, 3, generator=0)
    z = torch.ones(2, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="centers"):
        am_softmax_loss(z, torch.ones(4, 2, dtype=torch.float64), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="margin"):
        am_softmax_loss(z, z, torch.tensor([0, 1]), margin=-0.1)
    with pytest.raises(ValueError, match="target"):
        am_softmax_loss(z, z, torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="p"):
        grad_surrogate_loss(X_POST[:3], X_POST, torch.tensor(0))
    with pytest.raises(ValueError, match="target"):
        grad_surrogate_loss(X_POST, X_POST, torch.tensor([0]))
