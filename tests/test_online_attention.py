"""Tests for kexue_lib.online_attention (P30): against SDPA, float64 brute force and closed forms."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from kexue_lib import online_attention as oa

F64, F32 = torch.float64, torch.float32
sdpa = torch.nn.functional.scaled_dot_product_attention


def _qkv(*shape, dv=None, seed=0, dtype=F64, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    *batch, n, d = shape
    q = scale * torch.randn(*batch, n, d, generator=g, dtype=F64)
    k = scale * torch.randn(*batch, n, d, generator=g, dtype=F64)
    v = torch.randn(*batch, n, dv or d, generator=g, dtype=F64)
    return q.to(dtype), k.to(dtype), v.to(dtype)


def _brute(q, k, v, causal=True, scale=None):
    """Float64 softmax attention from the definition (explicit exp and normaliser)."""
    q, k, v = q.double(), k.double(), v.double()
    c = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = c * q @ k.transpose(-1, -2)
    if causal:
        s = s.masked_fill(torch.ones_like(s, dtype=torch.bool).triu(1), -math.inf)
    w = torch.exp(s - s.amax(-1, keepdim=True))
    return (w / w.sum(-1, keepdim=True)) @ v


@pytest.mark.parametrize("block", [None, 1, 3, 8, 64])
@pytest.mark.parametrize("causal", [True, False])
def test_online_matches_sdpa_and_brute_force(block, causal):
    q, k, v = _qkv(2, 3, 29, 8, dv=5, seed=1)
    got = oa.online_softmax_attention(q, k, v, causal=causal, block=block)
    torch.testing.assert_close(got, sdpa(q, k, v, is_causal=causal), rtol=0, atol=1e-13)
    torch.testing.assert_close(got, _brute(q, k, v, causal), rtol=0, atol=1e-13)


def test_online_noncausal_with_different_lengths_and_scale():
    q, _, _ = _qkv(4, 11, 6, seed=2)
    _, k, v = _qkv(4, 17, 6, dv=3, seed=3)
    got = oa.online_softmax_attention(q, k, v, causal=False, block=5, scale=0.7)
    torch.testing.assert_close(got, _brute(q, k, v, causal=False, scale=0.7), rtol=0, atol=1e-13)
    torch.testing.assert_close(got, sdpa(q, k, v, scale=0.7), rtol=0, atol=1e-13)


def test_online_is_stable_where_naive_exp_overflows():
    q, k, v = _qkv(16, 4, seed=4, dtype=F32, scale=12.0)   # scores of several hundred
    s = (q @ k.T) / 2
    assert bool(torch.isinf(torch.exp(s)).any()), "the test should hit float32 overflow"
    got = oa.online_softmax_attention(q, k, v, block=3)
    assert bool(torch.isfinite(got).all())
    torch.testing.assert_close(got.double(), _brute(q, k, v), rtol=0, atol=1e-4)


def test_online_gradients_match_sdpa():
    q, k, v = (t.requires_grad_() for t in _qkv(2, 13, 4, seed=5))
    oa.online_softmax_attention(q, k, v, block=4).pow(2).sum().backward()
    grads = [t.grad.clone() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    sdpa(q, k, v, is_causal=True).pow(2).sum().backward()
    for a, b in zip(grads, (q.grad, k.grad, v.grad)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    assert torch.autograd.gradcheck(lambda a, b, c: oa.online_softmax_attention(a, b, c, block=3), (q, k, v))


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 20), block=st.integers(1, 25), seed=st.integers(0, 1000), causal=st.booleans())
def test_result_does_not_depend_on_block_size(n, block, seed, causal):
    q, k, v = _qkv(2, n, 3, seed=seed)
    a = oa.online_softmax_attention(q, k, v, causal=causal, block=block)
    b = oa.online_softmax_attention(q, k, v, causal=causal)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-13)
    torch.testing.assert_close(a, _brute(q, k, v, causal), rtol=0, atol=1e-13)


def test_rnn_trajectory_is_prefix_attention_and_gates_give_weights():
    q, k, v = _qkv(3, 12, 4, dv=2, seed=6)
    qt = q[:, 5]                                                       # one query per batch entry
    o, g = oa.softmax_attention_as_rnn(qt, k, v)
    s = (k @ qt.unsqueeze(-1)).squeeze(-1) / 2
    for j in range(12):                                                # o_j = attention over keys 1..j
        w = torch.softmax(s[:, : j + 1], -1)
        torch.testing.assert_close(o[:, j], (w.unsqueeze(-1) * v[:, : j + 1]).sum(1), rtol=0, atol=1e-14)
    torch.testing.assert_close(g[:, 0], torch.ones(3, dtype=F64))
    torch.testing.assert_close(g, torch.exp(s) / torch.cumsum(torch.exp(s), -1), rtol=1e-13, atol=0)
    # product form: alpha_{n,i} = g_i prod_{j>i} (1 - g_j)
    tail = torch.flip(torch.cumprod(torch.flip(1 - g, [-1]), -1), [-1])
    prod_form = g * torch.cat([tail[:, 1:], torch.ones(3, 1, dtype=F64)], -1)
    torch.testing.assert_close(prod_form, torch.softmax(s, -1), rtol=0, atol=1e-14)


def test_rnn_state_step_and_init():
    q = torch.zeros(2, 3, dtype=F64)
    st0 = oa.softmax_rnn_init(q, 4)
    assert st0.o.shape == (2, 4) and bool(torch.isinf(st0.m).all()) and float(st0.l.abs().max()) == 0
    v = torch.ones(2, 4, dtype=F64)
    st1, g = oa.softmax_rnn_step(st0, torch.tensor([3.0, -1.0], dtype=F64), v)
    torch.testing.assert_close(st1.o, v)
    torch.testing.assert_close(g, torch.ones(2, dtype=F64))
    # log Z = m + log l after two keys equals logsumexp of the two scores
    st2, _ = oa.softmax_rnn_step(st1, torch.tensor([5.0, -4.0], dtype=F64), 2 * v)
    lse = torch.logsumexp(torch.tensor([[3.0, 5.0], [-1.0, -4.0]], dtype=F64), -1)
    torch.testing.assert_close(st2.m + torch.log(st2.l), lse, rtol=1e-15, atol=0)


def _linear_matrix_form(q, k, v, gam):
    """(Q K^T * D) V with D_tj = prod_{j<i<=t} gamma_i (float64 brute force)."""
    n = q.shape[-2]
    logg = torch.log(gam.double())
    cum = torch.cumsum(logg, -1)
    D = torch.exp(cum.unsqueeze(-1) - cum.unsqueeze(-2)) * torch.ones(n, n, dtype=F64).tril()
    return ((q.double() @ k.double().transpose(-1, -2)) * D) @ v.double()


@pytest.mark.parametrize("decay", [None, 0.9, "tensor"])
def test_linear_attention_rnn_equals_matrix_form(decay):
    q, k, v = _qkv(2, 15, 4, dv=3, seed=7)
    if decay is None:
        gam = torch.ones(2, 15, dtype=F64)
    elif decay == "tensor":
        gam = decay = torch.rand(2, 15, generator=torch.Generator().manual_seed(8), dtype=F64) * 0.5 + 0.5
    else:
        gam = torch.full((2, 15), decay, dtype=F64)
    out, S = oa.linear_attention_rnn(q, k, v, decay=decay, return_state=True)
    torch.testing.assert_close(out, _linear_matrix_form(q, k, v, gam), rtol=1e-12, atol=1e-12)
    assert S.shape == (2, 4, 3)
    if decay is None:
        torch.testing.assert_close(S, k.transpose(-1, -2) @ v, rtol=1e-13, atol=1e-13)


def test_linear_attention_zero_decay_forgets_everything():
    q, k, v = _qkv(6, 3, seed=9)
    out = oa.linear_attention_rnn(q, k, v, decay=torch.zeros(6, dtype=F64))
    torch.testing.assert_close(out, (q * k).sum(-1, keepdim=True) * v, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("n_layers, n", [(1, 9), (2, 8), (3, 6)])
def test_recompute_stack_equals_parallel_and_counts(n_layers, n):
    d = 4
    g = torch.Generator().manual_seed(10 + n_layers)
    x = torch.randn(n, d, generator=g, dtype=F64)
    layers = [oa.AttentionLayer(*(0.7 * torch.randn(d, d, generator=g, dtype=F64) for _ in range(4)))
              for _ in range(n_layers)]
    ref = oa.attention_stack(x, layers)
    got, stats = oa.attention_stack_recompute(x, layers)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-13)
    assert stats["reads"] == math.comb(n + n_layers, n_layers + 1)
    assert stats["peak_floats"] == n_layers * (3 * d + 2) + 3 * d
    assert stats["max_depth"] == n_layers + 1
    one, st1 = oa.attention_stack_recompute(x, layers, positions=[n - 1])
    torch.testing.assert_close(one[0], ref[-1], rtol=0, atol=1e-13)
    assert st1["reads"] == math.comb(n - 1 + n_layers, n_layers)
    empty, _ = oa.attention_stack_recompute(x, layers, positions=[])
    assert empty.shape == (0, d)


def test_stack_brute_force_layer():
    d, n = 3, 5
    g = torch.Generator().manual_seed(3)
    x = torch.randn(n, d, generator=g, dtype=F64)
    lay = oa.AttentionLayer(*(torch.randn(d, d, generator=g, dtype=F64) for _ in range(4)))
    ref = x + torch.tanh(_brute(x @ lay.w_q, x @ lay.w_k, x @ lay.w_v) @ lay.w_o)
    torch.testing.assert_close(oa.attention_stack(x, [lay]), ref, rtol=0, atol=1e-13)


def test_empty_linear_sequence():
    q, k, v = (torch.zeros(2, 0, 3, dtype=F64) for _ in range(3))
    assert oa.linear_attention_rnn(q, k, v).shape == (2, 0, 3)


# ---- validation -------------------------------------------------------------------------

def test_validation_errors():
    q, k, v = _qkv(5, 3, seed=11)
    with pytest.raises(TypeError, match="q must be a torch.Tensor"):
        oa.online_softmax_attention(q.numpy(), k, v)
    with pytest.raises(ValueError, match="q must have at least 2"):
        oa.online_softmax_attention(q[0], k, v)
    with pytest.raises(TypeError, match="share a dtype"):
        oa.online_softmax_attention(q.float(), k, v)
    with pytest.raises(ValueError, match="leading"):
        oa.online_softmax_attention(q.unsqueeze(0), k, v)
    with pytest.raises(ValueError, match="head size"):
        oa.online_softmax_attention(q, k[:, :2], v)
    with pytest.raises(ValueError, match="as many rows"):
        oa.online_softmax_attention(q, k, v[:4])
    with pytest.raises(ValueError, match="causal=True"):
        oa.online_softmax_attention(q, k[:4], v[:4])
    with pytest.raises(ValueError, match="at least one key"):
        oa.online_softmax_attention(q, k[:0], v[:0], causal=False)
    with pytest.raises(TypeError, match="causal must be a bool"):
        oa.online_softmax_attention(q, k, v, causal=1)
    with pytest.raises(ValueError, match="block must be >= 1"):
        oa.online_softmax_attention(q, k, v, block=0)
    with pytest.raises(TypeError, match="block must be an int"):
        oa.online_softmax_attention(q, k, v, block=2.5)
    with pytest.raises(ValueError, match="scale must be > 0"):
        oa.online_softmax_attention(q, k, v, scale=-1.0)
    with pytest.raises(ValueError, match="q contains NaN"):
        oa.online_softmax_attention(q.clone().fill_(math.nan), k, v)


def test_device_mismatch_is_rejected():
    q, k, v = _qkv(5, 3, seed=12)
    meta = torch.empty(5, 3, dtype=F64, device="meta")
    with pytest.raises(ValueError, match="one device"):
        oa._check_qkv(q, meta, v)


def test_rnn_validation_errors():
    q, k, v = _qkv(5, 3, seed=13)
    with pytest.raises(ValueError, match="at least one key"):
        oa.softmax_attention_as_rnn(q[0], k[:0], v[:0])
    with pytest.raises(TypeError, match="state must be a SoftmaxRNNState"):
        oa.softmax_rnn_step((1, 2, 3), torch.zeros(()), torch.zeros(3))
    state = oa.softmax_rnn_init(q[0], 3)
    with pytest.raises(ValueError, match="s and v must have shapes"):
        oa.softmax_rnn_step(state, torch.zeros(2, dtype=F64), torch.zeros(3, dtype=F64))
    with pytest.raises(ValueError, match="d_v must be >= 1"):
        oa.softmax_rnn_init(q[0], 0)


def test_linear_validation_errors():
    q, k, v = _qkv(5, 3, seed=14)
    with pytest.raises(ValueError, match="same length"):
        oa.linear_attention_rnn(q, k[:4], v[:4])
    with pytest.raises(ValueError, match="decay must be <= 1"):
        oa.linear_attention_rnn(q, k, v, decay=1.5)
    with pytest.raises(ValueError, match="decay must be > 0"):
        oa.linear_attention_rnn(q, k, v, decay=0.0)
    with pytest.raises(ValueError, match="decay must have shape"):
        oa.linear_attention_rnn(q, k, v, decay=torch.ones(4, dtype=F64))
    with pytest.raises(ValueError, match=r"decay must lie in \[0, 1\]"):
        oa.linear_attention_rnn(q, k, v, decay=torch.full((5,), 2.0, dtype=F64))


def test_stack_validation_errors():
    x = torch.randn(4, 3, dtype=F64)
    w = torch.eye(3, dtype=F64)
    with pytest.raises(ValueError, match="non-empty sequence"):
        oa.attention_stack(x, [])
    with pytest.raises(TypeError, match=r"layers\[0\] must be an AttentionLayer"):
        oa.attention_stack(x, [(w, w, w, w)])
    with pytest.raises(ValueError, match=r"layers\[0\].w_k must be a \(3, 3\)"):
        oa.attention_stack(x, [oa.AttentionLayer(w, torch.eye(2, dtype=F64), w, w)])
    with pytest.raises(ValueError, match="x must have 2 dimension"):
        oa.attention_stack_recompute(x.unsqueeze(0), [oa.AttentionLayer(w, w, w, w)])
    with pytest.raises(ValueError, match="positions must be <= 3"):
        oa.attention_stack_recompute(x, [oa.AttentionLayer(w, w, w, w)], positions=[4])
