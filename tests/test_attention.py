"""Tests for kexue_lib.attention (P04): against torch's scaled_dot_product_attention, brute force
float64 matrices and brute-force path enumeration."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from kexue_lib import attention as at
from kexue_lib.device import randn

F64 = torch.float64


# ----------------------------------------------------------------------------- masks
def test_make_mask_kinds_match_explicit_loops():
    n = 7
    ref = {
        "bi": lambda i, j: True,
        "causal": lambda i, j: j <= i,
        "anticausal": lambda i, j: j >= i,
    }
    for kind, rule in ref.items():
        expected = torch.tensor([[rule(i, j) for j in range(n)] for i in range(n)])
        got = at.make_mask(n, kind)
        assert got.dtype == torch.bool and torch.equal(got, expected)
    for p in range(n + 1):
        expected = torch.tensor([[j < p or j <= i for j in range(n)] for i in range(n)])
        assert torch.equal(at.make_mask(n, "prefix", prefix_len=p), expected)
    assert torch.equal(at.make_mask(n, "prefix", prefix_len=0), at.make_mask(n, "causal"))
    assert torch.equal(at.make_mask(n, "prefix", prefix_len=n), at.make_mask(n, "bi"))


def test_mixed_direction_masks():
    n = 5
    L, U = at.make_mask(n, "causal"), at.make_mask(n, "anticausal")
    heads = at.mixed_direction_masks(n, 4, mode="heads")
    assert heads.shape == (4, n, n)
    assert all(torch.equal(heads[h], L) for h in (0, 1)) and all(torch.equal(heads[h], U) for h in (2, 3))
    odd = at.mixed_direction_masks(n, 3, mode="heads")
    assert [torch.equal(m, L) for m in odd] == [True, True, False]
    for layer in range(4):
        m = at.mixed_direction_masks(n, 2, mode="layers", layer_idx=layer)
        assert all(torch.equal(h, L if layer % 2 == 0 else U) for h in m)


def _brute_reach(masks):
    """Enumerate all paths j -> p_1 -> ... -> i explicitly."""
    n = masks[0].shape[-1]
    out = np.zeros((n, n), dtype=bool)
    for i, j in itertools.product(range(n), repeat=2):
        for path in itertools.product(range(n), repeat=len(masks) - 1):
            nodes = (j, *path, i)
            if all(bool(masks[l][nodes[l + 1], nodes[l]]) for l in range(len(masks))):
                out[i, j] = True
                break
    return torch.from_numpy(out)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 5), layers=st.integers(1, 3), seed=st.integers(0, 10_000))
def test_reachability_matches_path_enumeration(n, layers, seed):
    g = torch.Generator().manual_seed(seed)
    masks = [torch.rand(n, n, generator=g) < 0.4 for _ in range(layers)]
    assert torch.equal(at.reachability(masks), _brute_reach(masks))
    cum = at.reachability(torch.stack(masks), cumulative=True)
    assert cum.shape == (layers, n, n)
    for l in range(layers):
        assert torch.equal(cum[l], _brute_reach(masks[: l + 1]))


def test_reachability_of_mixed_stacks():
    n = 9
    L, U = at.make_mask(n, "causal"), at.make_mask(n, "anticausal")
    full = torch.ones(n, n, dtype=torch.bool)
    assert torch.equal(at.reachability([L] * 5), L)              # causal stays causal at any depth
    assert torch.equal(at.reachability([L, U]), full)            # forward then backward: all pairs
    assert torch.equal(at.reachability([at.mixed_direction_masks(n, 2)]), full)   # head split, one layer
    per_layer = torch.stack([at.mixed_direction_masks(n, 2, mode="layers", layer_idx=l) for l in range(3)])
    cum = at.reachability(per_layer, cumulative=True)
    assert torch.equal(cum[0], L) and torch.equal(cum[1], full) and torch.equal(cum[2], full)


# ----------------------------------------------------------------------------- softmax attention
@pytest.mark.parametrize("kind", ["bi", "causal", "anticausal", "prefix"])
def test_softmax_attention_matches_sdpa(kind):
    q, k, v = (randn(2, 3, 6, 4, seed=s, dtype=F64) for s in (0, 1, 2))
    mask = at.make_mask(6, kind, prefix_len=2 if kind == "prefix" else None)
    out, probs = at.softmax_attention(q, k, v, mask=mask, return_probs=True)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    assert bool((probs[..., ~mask] == 0).all())                  # masked weights are exactly 0
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 3, 6, dtype=F64), rtol=0, atol=1e-13)
    out2 = at.softmax_attention(q, k, v, mask=mask, scale=0.3)
    torch.testing.assert_close(out2, F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.3),
                               rtol=1e-12, atol=1e-12)


def test_softmax_attention_explicit_float64_and_per_head_masks():
    q, k, v = randn(1, 2, 5, 3, seed=3, dtype=F64), randn(1, 2, 7, 3, seed=4, dtype=F64), randn(1, 2, 7, 2, seed=5, dtype=F64)
    s = q @ k.transpose(-2, -1) / math.sqrt(3)
    ref = torch.exp(s) / torch.exp(s).sum(-1, keepdim=True) @ v
    torch.testing.assert_close(at.softmax_attention(q, k, v), ref, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(at.scores(q, k), s, rtol=1e-13, atol=1e-14)
    m = at.mixed_direction_masks(5, 2)                           # (H, n, n), one mask per head
    qq, kk, vv = randn(2, 5, 3, seed=6, dtype=F64), randn(2, 5, 3, seed=7, dtype=F64), randn(2, 5, 3, seed=8, dtype=F64)
    torch.testing.assert_close(at.softmax_attention(qq, kk, vv, mask=m),
                               F.scaled_dot_product_attention(qq, kk, vv, attn_mask=m), rtol=1e-12, atol=1e-12)


def test_causal_softmax_matrix_is_triangular_with_positive_diagonal_and_gradients_flow():
    q = randn(6, 4, seed=9, dtype=F64).requires_grad_()
    k, v = randn(6, 4, seed=10, dtype=F64), randn(6, 4, seed=11, dtype=F64)
    _, A = at.softmax_attention(q, k, v, mask=at.make_mask(6, "causal"), return_probs=True)
    assert bool((torch.triu(A, 1) == 0).all()) and bool((torch.diagonal(A) > 0).all())
    assert torch.autograd.gradcheck(lambda x: at.softmax_attention(x, k, v, mask=at.make_mask(6, "causal")), (q,))


# ----------------------------------------------------------------------------- linear attention
def _linear_reference(q, k, v, phi, causal):
    w = phi(q) @ phi(k).T
    if causal:
        w = torch.tril(w)
    A = w / w.sum(-1, keepdim=True)
    return A @ v, A


@pytest.mark.parametrize("fm", ["elu1", "softplus", "exp"])
@pytest.mark.parametrize("causal", [False, True])
def test_linear_attention_matches_explicit_matrix(fm, causal):
    q, k, v = randn(8, 3, seed=12, dtype=F64), randn(8, 3, seed=13, dtype=F64), randn(8, 5, seed=14, dtype=F64)
    phi = at.FEATURE_MAPS[fm]
    ref_out, ref_A = _linear_reference(q, k, v, phi, causal)
    out, A = at.linear_attention(q, k, v, feature_map=fm, causal=causal, return_matrix=True)
    torch.testing.assert_close(out, ref_out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(A, ref_A, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(at.linear_attention(q, k, v, feature_map=phi, causal=causal), ref_out, rtol=1e-12, atol=1e-12)


def test_linear_attention_batched_and_elu1_definition():
    q, k, v = randn(2, 3, 6, 4, seed=15, dtype=F64), randn(2, 3, 6, 4, seed=16, dtype=F64), randn(2, 3, 6, 2, seed=17, dtype=F64)
    out = at.linear_attention(q, k, v, causal=True)
    for b, h in itertools.product(range(2), range(3)):
        ref, _ = _linear_reference(q[b, h], k[b, h], v[b, h], lambda x: torch.where(x > 0, x + 1, torch.exp(x)), True)
        torch.testing.assert_close(out[b, h], ref, rtol=1e-12, atol=1e-12)


@settings(max_examples=20, deadline=None)
@given(n=st.integers(2, 24), d=st.integers(1, 6), seed=st.integers(0, 10_000))
def test_bidirectional_linear_attention_rank_at_most_d_causal_full(n, d, seed):
    q, k = randn(n, d, seed=seed, dtype=F64), randn(n, d, seed=seed + 1, dtype=F64)
    _, A = at.linear_attention(q, k, k, return_matrix=True)
    assert int(torch.linalg.matrix_rank(A)) <= d
    _, C = at.linear_attention(q, k, k, causal=True, return_matrix=True)
    assert bool((torch.diagonal(C) > 0).all()) and bool((torch.triu(C, 1) == 0).all())


# ----------------------------------------------------------------------------- validation
def test_validation_errors():
    q = randn(4, 3, seed=0, dtype=F64)
    with pytest.raises(ValueError, match="kind must be one of"):
        at.make_mask(4, "diagonal")
    with pytest.raises(ValueError, match="prefix_len is required"):
        at.make_mask(4, "prefix")
    with pytest.raises(ValueError, match="prefix_len must be <= 4"):
        at.make_mask(4, "prefix", prefix_len=5)
    with pytest.raises(ValueError, match="only used with kind='prefix'"):
        at.make_mask(4, "causal", prefix_len=2)
    with pytest.raises(ValueError, match="n must be >= 1"):
        at.make_mask(0)
    with pytest.raises(ValueError, match="mode must be"):
        at.mixed_direction_masks(4, 2, mode="rows")
    with pytest.raises(ValueError, match="at least one layer"):
        at.reachability([])
    with pytest.raises(ValueError, match=r"shape \(L, n, n\)"):
        at.reachability(torch.ones(3, 3, dtype=torch.bool))
    with pytest.raises(TypeError, match="bool tensor"):
        at.reachability([torch.ones(3, 3)])
    with pytest.raises(ValueError, match=r"shape \(n, n\) or \(H, n, n\)"):
        at.reachability([torch.ones(3, 4, dtype=torch.bool)])
    with pytest.raises(ValueError, match="earlier layers"):
        at.reachability([torch.ones(3, 3, dtype=torch.bool), torch.ones(4, 4, dtype=torch.bool)])
    with pytest.raises(TypeError, match="q must be a torch.Tensor"):
        at.scores([[1.0]], q)
    with pytest.raises(ValueError, match="share their last dimension"):
        at.scores(q, randn(4, 2, seed=1, dtype=F64))
    with pytest.raises(TypeError, match="share dtype and device"):
        at.scores(q, q.float())
    with pytest.raises(ValueError, match="do not broadcast"):
        at.scores(randn(2, 4, 3, seed=0, dtype=F64), randn(3, 4, 3, seed=0, dtype=F64))
    with pytest.raises(ValueError, match="scale must be > 0"):
        at.scores(q, q, scale=0.0)
    with pytest.raises(ValueError, match="v must have as many rows"):
        at.softmax_attention(q, q, randn(5, 3, seed=2, dtype=F64))
    with pytest.raises(TypeError, match="v must share dtype"):
        at.softmax_attention(q, q, q.float())
    with pytest.raises(TypeError, match="mask must be a torch.Tensor"):
        at.softmax_attention(q, q, q, mask=np.ones((4, 4), dtype=bool))
    with pytest.raises(TypeError, match="mask must be a bool tensor"):
        at.softmax_attention(q, q, q, mask=torch.ones(4, 4))
    with pytest.raises(ValueError, match="does not broadcast"):
        at.softmax_attention(q, q, q, mask=torch.ones(3, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="would enlarge"):
        at.softmax_attention(q, q, q, mask=torch.ones(2, 4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="no allowed key"):
        at.softmax_attention(q, q, q, mask=torch.zeros(4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="feature_map must be one of"):
        at.linear_attention(q, q, q, feature_map="gelu")
    with pytest.raises(TypeError, match="feature_map must be a str or a callable"):
        at.linear_attention(q, q, q, feature_map=3)
    with pytest.raises(TypeError, match="causal must be a bool"):
        at.linear_attention(q, q, q, causal=1)
    with pytest.raises(ValueError, match="as many queries as keys"):
        at.linear_attention(randn(3, 3, seed=3, dtype=F64), q, q, causal=True)
    with pytest.raises(ValueError, match="same shape"):
        at.linear_attention(q, q, q, feature_map=lambda x: x.sum(-1))
    with pytest.raises(ValueError, match="non-negative"):
        at.linear_attention(q, q, q, feature_map=lambda x: x)
    with pytest.raises(ValueError, match="normaliser"):
        at.linear_attention(q, q, q, feature_map=torch.zeros_like)
