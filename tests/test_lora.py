"""Tests for kexue_lib.lora (P10, P29): autograd and float64 references, brute-force loops."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from kexue_lib import lora as L

F64 = torch.float64


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _rand(*shape, seed=0):
    return torch.randn(*shape, generator=_gen(seed), dtype=F64)


# ------------------------------------------------------------------------------ LoRALinear
@pytest.mark.parametrize("init", L.INITS)
def test_factored_and_merged_agree_in_values_and_gradients(init):
    n, m, r, b = 12, 7, 3, 5
    w0 = _rand(n, m, seed=1)
    layers = [L.LoRALinear(n, m, r, weight=w0, init=init, impl=impl, generator=_gen(2)) for impl in L.IMPLS]
    if init in ("B_zero", "A_zero"):                      # make both factors non-zero for a real test
        for lay in layers:
            with torch.no_grad():
                lay.A.copy_(_rand(n, r, seed=3))
                lay.B.copy_(_rand(r, m, seed=4))
    x, dy = _rand(b, n, seed=5), _rand(b, m, seed=6)
    outs = []
    for lay in layers:
        y = lay(x)
        (y * dy).sum().backward()
        outs.append((y.detach(), lay.A.grad.clone(), lay.B.grad.clone()))
    for u, v in zip(*outs):
        torch.testing.assert_close(u, v, rtol=1e-12, atol=1e-12)
    # closed forms: G = X^T dY, gA = G B^T, gB = A^T G
    lay = layers[0]
    G = x.T @ dy
    torch.testing.assert_close(outs[0][1], G @ lay.B.detach().T, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(outs[0][2], lay.A.detach().T @ G, rtol=1e-12, atol=1e-12)
    # the forward is X (W0 + A B), written out with plain loops over rows
    W = (lay.weight + lay.A @ lay.B).detach()
    ref = torch.stack([torch.stack([sum(x[i, k] * W[k, j] for k in range(n)) for j in range(m)]) for i in range(b)])
    torch.testing.assert_close(outs[0][0], ref, rtol=1e-12, atol=1e-12)


def test_inits_have_the_promised_structure_and_scales():
    n, m, r = 400, 300, 4
    w0 = _rand(n, m, seed=1)
    bz = L.LoRALinear(n, m, r, weight=w0, init="B_zero", generator=_gen(0), dtype=F64)
    az = L.LoRALinear(n, m, r, weight=w0, init="A_zero", generator=_gen(0), dtype=F64)
    sy = L.LoRALinear(n, m, r, weight=w0, init="symmetric", generator=_gen(0), dtype=F64)
    le = L.LoRALinear(n, m, r, weight=w0, init="lecun", generator=_gen(0), dtype=F64)
    assert torch.all(bz.B == 0) and torch.all(az.A == 0)
    assert not torch.all(sy.A == 0) and not torch.all(sy.B == 0)
    torch.testing.assert_close(sy.merge(), w0, rtol=0, atol=1e-12)
    torch.testing.assert_close(bz.merge(), w0, rtol=0, atol=0)
    assert math.isclose(le.A.std().item(), 1 / math.sqrt(n), rel_tol=0.05)
    assert math.isclose(le.B.std().item(), 1 / math.sqrt(r), rel_tol=0.05)
    assert (le.merge() - w0).abs().max() > 0.1
    assert bz.weight.requires_grad is False and [n for n, _ in bz.named_parameters()] == ["A", "B"]
    assert "r=4" in repr(bz)
    # the default frozen weight is zero and dtype follows torch's default
    z = L.LoRALinear(5, 3, 1)
    assert z.weight.dtype == torch.get_default_dtype() and torch.all(z.weight == 0)


def test_forward_supports_leading_batch_dims():
    lay = L.LoRALinear(6, 4, 2, init="lecun", generator=_gen(1), dtype=F64)
    x = _rand(2, 3, 6, seed=2)
    torch.testing.assert_close(lay(x), x @ lay.merge(), rtol=1e-12, atol=1e-12)


def test_lora_sgd_step_matches_closed_form_delta():
    n, m, r, lr = 9, 5, 2, 0.3
    lay = L.LoRALinear(n, m, r, weight=_rand(n, m, seed=1), init="lecun", generator=_gen(7), dtype=F64)
    x, dy = _rand(4, n, seed=2), _rand(4, m, seed=3)
    W_before, A0, B0 = lay.merge().detach(), lay.A.detach().clone(), lay.B.detach().clone()
    (lay(x) * dy).sum().backward()
    torch.optim.SGD(lay.parameters(), lr=lr).step()
    got = lay.merge().detach() - W_before
    G = x.T @ dy
    torch.testing.assert_close(got, L.lora_sgd_delta(G, A0, B0, lr=lr), rtol=1e-12, atol=1e-12)
    first = L.lora_sgd_delta(G, A0, B0, lr=lr, order=1)
    torch.testing.assert_close(first, -lr * (G @ B0.T @ B0 + A0 @ A0.T @ G), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got - first, lr**2 * G @ B0.T @ A0.T @ G, rtol=1e-12, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 7), m=st.integers(1, 7), r=st.integers(1, 4), seed=st.integers(0, 10_000),
       lr=st.floats(0.0, 2.0))
def test_sgd_delta_is_the_product_difference(n, m, r, seed, lr):
    G, A, B = _rand(n, m, seed=seed), _rand(n, r, seed=seed + 1), _rand(r, m, seed=seed + 2)
    gA, gB = L.lora_grads_from_full(G, A, B)
    exact = (A - lr * gA) @ (B - lr * gB) - A @ B
    torch.testing.assert_close(L.lora_sgd_delta(G, A, B, lr=lr), exact, rtol=1e-10, atol=1e-10)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 6), m=st.integers(1, 6), r=st.integers(1, 3), seed=st.integers(0, 10_000))
def test_projected_gradients_match_autograd_through_AB(n, m, r, seed):
    G, A, B = _rand(n, m, seed=seed), _rand(n, r, seed=seed + 1), _rand(r, m, seed=seed + 2)
    A_, B_ = A.clone().requires_grad_(), B.clone().requires_grad_()
    ((A_ @ B_) * G).sum().backward()            # L = <G, A B> has dL/dW = G
    gA, gB = L.lora_grads_from_full(G, A, B)
    torch.testing.assert_close(gA, A_.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gB, B_.grad, rtol=1e-12, atol=1e-12)


def test_lora_layer_gradcheck():
    lay = L.LoRALinear(4, 3, 2, init="lecun", generator=_gen(0), dtype=F64)
    x = _rand(2, 4, seed=1).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, a, b: x @ lay.weight + (x @ a) @ b, (x, lay.A, lay.B))


# ------------------------------------------------------------------------ random projection
def test_random_projection_has_mean_2rG():
    n, m, S = 4, 3, 40_000
    G = _rand(n, m, seed=1)
    for r in (1, 2):
        d = L.random_projection_delta(G.expand(S, n, m), lr=1.0, r=r, generator=_gen(r))
        mean = d.mean(0)
        # per-entry standard error <= ~ sqrt(2 r (n + m)) |G|max / sqrt(S); use a generous bound
        torch.testing.assert_close(mean, -2 * r * G, rtol=0, atol=0.15 * r)
    d1 = L.random_projection_delta(G, lr=0.5, generator=_gen(3))
    d2 = L.random_projection_delta(G, lr=0.5, generator=_gen(3))
    assert torch.equal(d1, d2) and d1.shape == (n, m)


def test_random_projection_is_the_formula_with_the_drawn_vectors():
    G = _rand(5, 3, seed=1)
    g = _gen(9)
    U = torch.randn(5, 1, generator=g, dtype=F64)
    V = torch.randn(1, 3, generator=g, dtype=F64)
    torch.testing.assert_close(L.random_projection_delta(G, lr=0.1, generator=_gen(9)),
                               -0.1 * (G @ V.T @ V + U @ U.T @ G), rtol=1e-12, atol=1e-12)


# -------------------------------------------------------------------------------- additive
def test_tile_identity_entries():
    T = L.tile_identity(3, 9, dtype=F64)
    ref = torch.tensor([[1.0 if j % 3 == k else 0.0 for j in range(9)] for k in range(3)], dtype=F64)
    assert torch.equal(T, ref)


@pytest.mark.parametrize("r", [1, 2, 3])
def test_additive_lora_matches_entrywise_definition_and_rank(r):
    n, m = 6, 12
    lay = L.AdditiveLoRALinear(n, m, r, weight=_rand(n, m, seed=1))
    with torch.no_grad():
        lay.A.copy_(_rand(n, r, seed=2))
        lay.B.copy_(_rand(r, m, seed=3))
    A, B = lay.A.detach(), lay.B.detach()
    ref = torch.tensor([[A[i, j % r] + B[i % r, j] for j in range(m)] for i in range(n)], dtype=F64)
    torch.testing.assert_close(lay.delta().detach(), ref, rtol=0, atol=1e-14)
    Tm, Tn = L.tile_identity(r, m, dtype=F64), L.tile_identity(r, n, dtype=F64)
    torch.testing.assert_close(lay.delta().detach(), A @ Tm + Tn.T @ B, rtol=0, atol=1e-14)
    assert torch.linalg.matrix_rank(ref).item() == min(2 * r, n)
    x = _rand(2, 5, n, seed=4)
    torch.testing.assert_close(lay(x), x @ lay.merge(), rtol=1e-12, atol=1e-12)
    assert "r=" in repr(lay)


def test_additive_gradients_are_row_and_column_sums():
    n, m = 5, 4
    lay = L.AdditiveLoRALinear(n, m, 1, dtype=F64)
    x, dy = _rand(3, n, seed=1), _rand(3, m, seed=2)
    (lay(x) * dy).sum().backward()
    G = x.T @ dy
    torch.testing.assert_close(lay.A.grad, G.sum(1, keepdim=True), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(lay.B.grad, G.sum(0, keepdim=True), rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------ param counts
def test_param_counts():
    assert L.lora_num_params(4096, 4096, 8) == 65_536
    lay = L.LoRALinear(30, 20, 3)
    assert sum(p.numel() for p in lay.parameters() if p.requires_grad) == L.lora_num_params(30, 20, 3)
    add = L.AdditiveLoRALinear(30, 20, 2)
    assert sum(p.numel() for p in add.parameters()) == L.lora_num_params(30, 20, 2)


# ----------------------------------------------------------------------------------- LoRA+
def test_lora_plus_groups_and_adam_step():
    torch.manual_seed(0)
    net = torch.nn.Sequential(L.LoRALinear(6, 5, 2, init="lecun", generator=_gen(0)), torch.nn.Tanh(),
                              torch.nn.Linear(5, 1))
    groups = L.lora_plus_param_groups(net, 1e-2, 8.0)
    assert [g["name"] for g in groups] == ["A", "B", "other"]
    assert [g["lr"] for g in groups] == [1e-2, 8e-2, 1e-2]
    assert groups[0]["params"][0] is net[0].A and groups[1]["params"][0] is net[0].B
    assert len(groups[2]["params"]) == 2
    # with SignSGD (Adam at beta1 = beta2 = 0, eps = 0) each entry moves by exactly its group's lr
    opt = torch.optim.Adam(groups, betas=(0.0, 0.0), eps=0.0)
    A0, B0 = net[0].A.detach().clone(), net[0].B.detach().clone()
    net(torch.randn(4, 6)).sum().backward()
    gA, gB = net[0].A.grad.clone(), net[0].B.grad.clone()
    opt.step()
    torch.testing.assert_close(net[0].A.detach(), A0 - 1e-2 * torch.sign(gA), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(net[0].B.detach(), B0 - 8e-2 * torch.sign(gB), rtol=1e-6, atol=1e-7)
    # frozen parameters are left out; a bare LoRA layer gives two groups
    net[2].bias.requires_grad_(False)
    assert len(L.lora_plus_param_groups(net, 1e-2)[2]["params"]) == 1
    assert [g["name"] for g in L.lora_plus_param_groups(net[0], 1.0, 2.0)] == ["A", "B"]


# ------------------------------------------------------------------------------ validation
def test_validation_errors():
    G, A, B = _rand(4, 3), _rand(4, 2), _rand(2, 3)
    with pytest.raises(ValueError, match="shapes"):
        L.lora_grads_from_full(G, A, _rand(2, 5))
    with pytest.raises(TypeError, match="G must be a torch.Tensor"):
        L.lora_grads_from_full([[1.0]], A, B)
    with pytest.raises(ValueError, match="A must have at least 2"):
        L.lora_grads_from_full(G, _rand(4), B)
    with pytest.raises(ValueError, match="lr must be >= 0"):
        L.lora_sgd_delta(G, A, B, lr=-1.0)
    with pytest.raises(ValueError, match="order must be <= 2"):
        L.lora_sgd_delta(G, A, B, lr=1.0, order=3)
    with pytest.raises(ValueError, match="G contains NaN"):
        L.lora_sgd_delta(torch.full((4, 3), float("nan"), dtype=F64), A, B, lr=1.0)
    with pytest.raises(ValueError, match="r must be >= 1"):
        L.random_projection_delta(G, r=0)
    with pytest.raises(TypeError, match="generator must be"):
        L.random_projection_delta(G, generator=0)
    with pytest.raises(ValueError, match="init must be one of"):
        L.LoRALinear(4, 3, 1, init="zeros")
    with pytest.raises(TypeError, match="impl must be a str"):
        L.LoRALinear(4, 3, 1, impl=1)
    with pytest.raises(ValueError, match="r must be >= 1"):
        L.LoRALinear(4, 3, 0)
    with pytest.raises(ValueError, match="weight must have shape"):
        L.LoRALinear(4, 3, 1, weight=_rand(3, 4))
    with pytest.raises(ValueError, match="x must have last dimension 4"):
        L.LoRALinear(4, 3, 1)(torch.randn(2, 3))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        L.LoRALinear(4, 3, 1)([1.0] * 4)
    with pytest.raises(ValueError, match="must divide"):
        L.AdditiveLoRALinear(6, 4, 3)
    with pytest.raises(ValueError, match="weight must have shape"):
        L.AdditiveLoRALinear(4, 2, 1, weight=_rand(2, 4))
    with pytest.raises(ValueError, match="x must have last dimension 4"):
        L.AdditiveLoRALinear(4, 2, 1)(torch.randn(3))
    with pytest.raises(ValueError, match="must divide"):
        L.tile_identity(3, 4)
    with pytest.raises(ValueError, match="in_features must be >= 1"):
        L.lora_num_params(0, 3, 1)
    with pytest.raises(TypeError, match="model must be"):
        L.lora_plus_param_groups([], 1e-3)
    with pytest.raises(ValueError, match="no LoRALinear"):
        L.lora_plus_param_groups(torch.nn.Linear(3, 2), 1e-3)
    with pytest.raises(ValueError, match="ratio must be > 0"):
        L.lora_plus_param_groups(L.LoRALinear(3, 2, 1), 1e-3, 0.0)
    with pytest.raises(ValueError, match="lr must be > 0"):
        L.lora_plus_param_groups(L.LoRALinear(3, 2, 1), 0.0)
