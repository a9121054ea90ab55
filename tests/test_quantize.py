"""Tests for kexue_lib.quantize (P13): brute force, dense float64 references, gradcheck, properties."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.cluster.vq as scvq
import torch
from hypothesis import given, settings, strategies as st

from kexue_lib import quantize as kq

F64 = torch.float64


def _rand(*shape, seed=0, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=F64).to(dtype)


def _dense_G(z, q):
    """float64 reference: G = (|q|/|z|) R with R from the (1 + cos theta) form of the post."""
    a, b = z / z.norm(dim=-1, keepdim=True), q / q.norm(dim=-1, keepdim=True)
    c = (a * b).sum(-1)[..., None, None]
    s = a + b
    R = torch.eye(z.shape[-1], dtype=z.dtype) + 2 * b[..., :, None] * a[..., None, :] - s[..., :, None] * s[..., None, :] / (1 + c)
    return (q.norm(dim=-1) / z.norm(dim=-1))[..., None, None] * R


def test_nearest_codeword_matches_brute_force():
    z, cb = _rand(3, 50, 5, seed=1), _rand(17, 5, seed=2)
    idx, q = kq.nearest_codeword(z, cb)
    ref = torch.cdist(z.reshape(-1, 5), cb).argmin(-1).reshape(3, 50)
    assert torch.equal(idx, ref)
    assert torch.equal(q, cb[ref])


def test_nearest_codeword_gradient_reaches_codebook_only_through_q():
    z, cb = _rand(20, 3, seed=1), _rand(4, 3, seed=2).requires_grad_()
    idx, q = kq.nearest_codeword(z, cb)
    q.sum().backward()
    counts = torch.bincount(idx, minlength=4).to(F64)
    torch.testing.assert_close(cb.grad, counts[:, None].expand(4, 3))


def test_rotation_matrix_properties_and_two_forms():
    z, q = _rand(6, 8, seed=3), _rand(6, 8, seed=4)
    R = kq.rotation_matrix(z, q)
    ref = _dense_G(z, q) * (z.norm(dim=-1) / q.norm(dim=-1))[:, None, None]
    torch.testing.assert_close(R, ref, rtol=0, atol=1e-14)
    eye = torch.eye(8, dtype=F64).expand(6, 8, 8)
    torch.testing.assert_close(R.transpose(-1, -2) @ R, eye, rtol=0, atol=1e-14)
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(6, dtype=F64), rtol=0, atol=1e-13)
    a, b = z / z.norm(dim=-1, keepdim=True), q / q.norm(dim=-1, keepdim=True)
    torch.testing.assert_close((R @ a[..., None]).squeeze(-1), b, rtol=0, atol=1e-14)
    # identity on the orthogonal complement of span(z, q)
    v = _rand(6, 8, seed=5)
    basis = torch.linalg.qr(torch.stack([z, q], -1)).Q
    v_perp = v - (basis @ (basis.transpose(-1, -2) @ v[..., None])).squeeze(-1)
    torch.testing.assert_close((R @ v_perp[..., None]).squeeze(-1), v_perp, rtol=0, atol=1e-14)


def test_rotate_scale_matches_dense_and_maps_z_to_q():
    z, q, x = _rand(5, 7, seed=6), _rand(5, 7, seed=7), _rand(5, 7, seed=8)
    G = _dense_G(z, q)
    torch.testing.assert_close(kq.rotate_scale(x, z, q), (G @ x[..., None]).squeeze(-1), rtol=0, atol=1e-13)
    torch.testing.assert_close(kq.rotate_scale(z, z, q), q, rtol=0, atol=1e-14)
    Gr = G * (z.norm(dim=-1) / q.norm(dim=-1))[:, None, None]
    torch.testing.assert_close(kq.rotate_scale(x, z, q, scale=False), (Gr @ x[..., None]).squeeze(-1), rtol=0, atol=1e-13)


def test_gradcheck_rotate_scale():
    z, q, x = (_rand(3, 5, seed=s).requires_grad_() for s in (9, 10, 11))
    assert torch.autograd.gradcheck(lambda x, z, q: kq.rotate_scale(x, z, q), (x, z, q))
    assert torch.autograd.gradcheck(lambda x, z, q: kq.rotate_scale(x, z, q, scale=False), (x, z, q))


def test_gradcheck_frozen_linearisation_equals_estimator_backward():
    """The rotation trick's backward is the Jacobian of x -> G(z0, q0) x, checked by finite differences."""
    z0, q0 = _rand(4, 6, seed=12), _rand(4, 6, seed=13)
    x = z0.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda x: kq.rotate_scale(x, z0, q0), (x,))
    g = _rand(4, 6, seed=14)
    z = z0.clone().requires_grad_()
    kq.rotation_trick(z, q0).backward(g)
    jac = torch.autograd.functional.jacobian(lambda x: kq.rotate_scale(x, z0[0], q0[0]), z0[0].clone())
    torch.testing.assert_close(z.grad[0], jac.T @ g[0], rtol=0, atol=1e-13)


@pytest.mark.parametrize("scale", [True, False])
def test_rotation_trick_forward_is_q_and_backward_is_G_transpose(scale):
    z, q, g = _rand(10, 8, seed=15), _rand(10, 8, seed=16), _rand(10, 8, seed=17)
    z.requires_grad_()
    zq = kq.rotation_trick(z, q, scale=scale)
    torch.testing.assert_close(zq, q, rtol=0, atol=1e-15)
    zq.backward(g)
    G = _dense_G(z.detach(), q)
    if not scale:
        G = G * (z.detach().norm(dim=-1) / q.norm(dim=-1))[:, None, None]
    torch.testing.assert_close(z.grad, (G.transpose(-1, -2) @ g[..., None]).squeeze(-1), rtol=0, atol=1e-13)


def test_generalized_ste_backward_is_transpose_and_reduces_to_ste():
    z, q, g = _rand(4, 3, seed=18), _rand(4, 3, seed=19), _rand(4, 3, seed=20)
    G = _rand(3, 3, seed=21).requires_grad_()
    zz = z.clone().requires_grad_()
    out = kq.generalized_straight_through(zz, q, G)
    torch.testing.assert_close(out, q, rtol=0, atol=1e-15)
    out.backward(g)
    torch.testing.assert_close(zz.grad, g @ G.detach(), rtol=0, atol=1e-14)
    assert G.grad is None
    z1, z2 = z.clone().requires_grad_(), z.clone().requires_grad_()
    kq.generalized_straight_through(z1, q, torch.eye(3, dtype=F64)).backward(g)
    kq.straight_through(z2, q).backward(g)
    torch.testing.assert_close(z1.grad, g)
    torch.testing.assert_close(z2.grad, g)
    # batched G
    Gb = _rand(4, 3, 3, seed=22)
    z3 = z.clone().requires_grad_()
    kq.generalized_straight_through(z3, q, Gb).backward(g)
    torch.testing.assert_close(z3.grad, (Gb.transpose(-1, -2) @ g[..., None]).squeeze(-1))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), d=st.integers(2, 12), scale=st.floats(1e-3, 1e3))
def test_property_norm_ratio_and_in_plane_angle(seed, d, scale):
    z, q = _rand(d, seed=seed), scale * _rand(d, seed=seed + 1)
    if float((z / z.norm()) @ (q / q.norm())) < -0.99:
        return
    g = _rand(d, seed=seed + 2)
    zz = z.clone().requires_grad_()
    kq.rotation_trick(zz, q).backward(g)
    assert abs(float(zz.grad.norm() / g.norm()) - float(q.norm() / z.norm())) <= 1e-9 * float(q.norm() / z.norm())
    # in-plane upstream gradient: the angle between the two gradients equals the angle between z and q
    P = torch.linalg.qr(torch.stack([z, q], -1)).Q
    gp = P @ (P.T @ g)
    zz = z.clone().requires_grad_()
    kq.rotation_trick(zz, q).backward(gp)
    cos_g = float(zz.grad @ gp / (zz.grad.norm() * gp.norm()))
    cos_zq = float(z @ q / (z.norm() * q.norm()))
    assert abs(cos_g - cos_zq) < 1e-8


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(1, 9))
def test_property_perplexity_bounds(seed, k):
    idx = torch.randint(0, k, (200,), generator=torch.Generator().manual_seed(seed))
    ppl, use = float(kq.codebook_perplexity(idx, k)), float(kq.codebook_usage(idx, k))
    n_used = len(set(idx.tolist()))
    assert 1 - 1e-9 <= ppl <= n_used + 1e-9
    assert use == pytest.approx(n_used / k)


def test_perplexity_closed_forms():
    assert float(kq.codebook_perplexity(torch.arange(8).repeat(5), 8)) == pytest.approx(8.0)
    assert float(kq.codebook_perplexity(torch.zeros(10, dtype=torch.long), 8)) == pytest.approx(1.0)
    p = np.array([3, 1]) / 4
    assert float(kq.codebook_perplexity(torch.tensor([0, 0, 0, 1]), 5)) == pytest.approx(np.exp(-(p * np.log(p)).sum()))
    assert float(kq.codebook_usage(torch.tensor([0, 0, 3]), 4)) == pytest.approx(0.5)


def test_kmeans_matches_scipy_lloyd_from_same_start():
    x = torch.cat([_rand(100, 2, seed=23) + 6 * torch.tensor([i % 2, i // 2], dtype=F64) for i in range(4)])
    gen = torch.Generator().manual_seed(5)
    perm = torch.randperm(400, generator=torch.Generator().manual_seed(5))[:4]
    c = kq.kmeans(x, 4, iters=30, generator=gen)
    ref, _ = scvq.kmeans2(x.numpy(), x[perm].numpy(), iter=30, minit="matrix")
    np.testing.assert_allclose(np.sort(c.numpy(), axis=0), np.sort(ref, axis=0), rtol=0, atol=1e-10)


def test_kmeans_inertia_never_increases_and_default_generator():
    x = _rand(300, 3, seed=24)
    inertia = []
    for it in range(6):
        c = kq.kmeans(x, 5, iters=it)
        _, q = kq.nearest_codeword(x, c)
        inertia.append(float((x - q).pow(2).sum(-1).mean()))
    assert all(b <= a + 1e-12 for a, b in zip(inertia, inertia[1:]))
    # an empty cluster keeps its centroid: duplicate points give an empty cluster
    xd = torch.zeros(6, 2, dtype=F64)
    c = kq.kmeans(xd, 3, iters=2)
    assert torch.equal(c, torch.zeros(3, 2, dtype=F64))


@pytest.mark.parametrize("estimator", ["ste", "rotation", "rotation_noscale"])
def test_vector_quantizer_forward_loss_and_gradients(estimator):
    vq = kq.VectorQuantizer(6, 4, estimator=estimator, beta=0.7, gamma=0.3, dtype=F64,
                            generator=torch.Generator().manual_seed(1))
    z = _rand(2, 9, 4, seed=25).requires_grad_()
    zq, loss, idx = vq(z)
    ref_idx = torch.cdist(z.detach().reshape(-1, 4), vq.weight.detach()).argmin(-1).reshape(2, 9)
    assert torch.equal(idx, ref_idx)
    q = vq.weight.detach()[ref_idx]
    torch.testing.assert_close(zq, q, rtol=0, atol=1e-14)
    torch.testing.assert_close(loss, (0.7 + 0.3) * (q - z.detach()).pow(2).mean())
    g = _rand(2, 9, 4, seed=26)
    (zq * g).sum().backward()
    if estimator == "ste":
        torch.testing.assert_close(z.grad, g)
    else:
        G = _dense_G(z.detach(), q)
        if estimator == "rotation_noscale":
            G = G * (z.detach().norm(dim=-1) / q.norm(dim=-1))[..., None, None]
        torch.testing.assert_close(z.grad, (G.transpose(-1, -2) @ g[..., None]).squeeze(-1))
    assert vq.weight.grad is None or float(vq.weight.grad.abs().max()) == 0.0
    assert estimator in repr(vq)


def test_vector_quantizer_codebook_gradient_is_beta_term_and_kmeans_init():
    vq = kq.VectorQuantizer(3, 2, beta=2.0, gamma=0.0, dtype=F64)
    z = _rand(12, 2, seed=27)
    _, loss, idx = vq(z)
    loss.backward()
    ref = torch.zeros(3, 2, dtype=F64).index_add_(0, idx, 2.0 * 2 * (vq.weight.detach()[idx] - z) / z.numel())
    torch.testing.assert_close(vq.weight.grad, ref)
    vq.init_kmeans(z, iters=10, generator=torch.Generator().manual_seed(3))
    ref_c = kq.kmeans(z, 3, iters=10, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(vq.weight.detach(), ref_c)


def test_float32_and_default_dtype():
    vq = kq.VectorQuantizer(4, 3, estimator="rotation", init_scale=0.1)
    assert vq.weight.dtype == torch.float32
    z = _rand(5, 3, seed=28, dtype=torch.float32).requires_grad_()
    zq, loss, _ = vq(z)
    (zq.sum() + loss).backward()
    assert torch.isfinite(z.grad).all()


# ---- validation errors -------------------------------------------------------------------

def test_validation_errors():
    z, cb = _rand(4, 3), _rand(5, 3)
    with pytest.raises(TypeError, match="z must be a torch.Tensor"):
        kq.nearest_codeword([1.0], cb)
    with pytest.raises(ValueError, match="codebook must have 2"):
        kq.nearest_codeword(z, cb[0])
    with pytest.raises(ValueError, match="codebook must have at least one row"):
        kq.nearest_codeword(z, cb[:0])
    with pytest.raises(ValueError, match="codebook must have 3 columns"):
        kq.nearest_codeword(z, _rand(5, 4))
    with pytest.raises(ValueError, match="z contains NaN"):
        kq.nearest_codeword(torch.full((2, 3), float("nan"), dtype=F64), cb)
    with pytest.raises(ValueError, match="q must have the shape"):
        kq.straight_through(z, _rand(4, 2))
    with pytest.raises(ValueError, match="G must end in"):
        kq.generalized_straight_through(z, z, _rand(2, 2))
    with pytest.raises(ValueError, match="G must have at least 2"):
        kq.generalized_straight_through(z, z, _rand(3))
    with pytest.raises(ValueError, match="v must have the shape"):
        kq.rotation_matrix(z, _rand(4, 2))
    with pytest.raises(ValueError, match="eps must be > 0"):
        kq.rotation_matrix(z, z, eps=0.0)
    with pytest.raises(ValueError, match="x must have the shape"):
        kq.rotate_scale(_rand(4, 2), z, z)
    with pytest.raises(TypeError, match="eps must be a real"):
        kq.rotation_trick(z, z, eps="small")
    with pytest.raises(TypeError, match="indices must have an integer dtype"):
        kq.codebook_usage(torch.zeros(3), 2)
    with pytest.raises(TypeError, match="indices must have an integer dtype"):
        kq.codebook_usage(torch.zeros(3, dtype=torch.bool), 2)
    with pytest.raises(ValueError, match="indices must not be empty"):
        kq.codebook_perplexity(torch.zeros(0, dtype=torch.long), 2)
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 2\)"):
        kq.codebook_perplexity(torch.tensor([0, 2]), 2)
    with pytest.raises(ValueError, match="num_embeddings must be >= 1"):
        kq.codebook_usage(torch.tensor([0]), 0)
    with pytest.raises(ValueError, match="num_clusters must be <= 4"):
        kq.kmeans(z, 5)
    with pytest.raises(ValueError, match="iters must be >= 0"):
        kq.kmeans(z, 2, iters=-1)
    with pytest.raises(ValueError, match="estimator must be one of"):
        kq.VectorQuantizer(4, 3, estimator="gumbel")
    with pytest.raises(ValueError, match="beta must be >= 0"):
        kq.VectorQuantizer(4, 3, beta=-1.0)
    with pytest.raises(ValueError, match="init_scale must be > 0"):
        kq.VectorQuantizer(4, 3, init_scale=0.0)
    with pytest.raises(ValueError, match="embedding_dim must be >= 1"):
        kq.VectorQuantizer(4, 0)
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        kq.kmeans(z, 2, generator=0)
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        kq.VectorQuantizer(4, 3, generator="seed")
    vq = kq.VectorQuantizer(4, 3)
    with pytest.raises(ValueError, match="z must end in 3"):
        vq(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="z must end in 3"):
        vq.init_kmeans(torch.zeros(8, 4))
