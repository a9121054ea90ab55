"""Tests for kexue_lib.gau (P17): GAU against SDPA / explicit references, softmax_plus, counts."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st
from torch.utils.flop_counter import FlopCounterMode

from kexue_lib import gau as G
from kexue_lib.positions import apply_rope

F64 = torch.float64


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _rowwise_softmax_plus(a, mask, base=512.0):
    """One row at a time: softmax over the valid keys only, of the scores times log(l)/log(base)."""
    out = torch.zeros_like(a)
    for idx in np.ndindex(*a.shape[:-1]):
        keep = mask[idx]
        l = int(keep.sum())
        if l:
            out[idx][keep] = torch.softmax(a[idx][keep] * math.log(l) / math.log(base), -1)
    return out


def _bert4keras_order(a, mask, base=512.0):
    """bert4keras' order of operations: add -1e12 where masked, count scores > -1e11, then scale."""
    a = a + (~mask).to(a.dtype) * -1e12
    l = (a > -1e11).sum(-1, keepdim=True).clamp(min=1).to(a.dtype)
    return torch.softmax(a * torch.log(l) / math.log(base), -1)


# ---------------------------------------------------------------------------- normalisations

@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 9), causal=st.booleans())
def test_softmax_plus_matches_rowwise_reference(seed, n, causal):
    g = _gen(seed)
    a = 3 * torch.randn(2, n, n, generator=g, dtype=F64)
    mask = torch.rand(2, n, n, generator=g) > 0.3
    if causal:
        mask = mask & torch.ones(n, n, dtype=torch.bool).tril()
    got = G.softmax_plus(a, mask)
    torch.testing.assert_close(got, _rowwise_softmax_plus(a, mask), rtol=1e-12, atol=1e-300)
    sums = got.sum(-1)
    has = mask.any(-1)
    torch.testing.assert_close(sums[has], torch.ones_like(sums[has]), rtol=0, atol=1e-12)
    assert float(got[~mask].abs().max()) == 0.0 if (~mask).any() else True
    assert float(sums[~has].abs().max()) == 0.0 if (~has).any() else True


def test_softmax_plus_is_softmax_at_the_base_length_and_without_mask():
    a = torch.randn(3, 512, generator=_gen(1), dtype=F64)
    torch.testing.assert_close(G.softmax_plus(a), torch.softmax(a, -1), rtol=1e-15, atol=0)
    b = torch.randn(3, 100, generator=_gen(2), dtype=F64)
    torch.testing.assert_close(G.softmax_plus(b, base=100), torch.softmax(b, -1), rtol=1e-15, atol=0)


@pytest.mark.parametrize("l, factor", [(64, 0.667), (128, 0.778), (512, 1.0), (1024, 1.111), (2048, 1.222), (4096, 1.333)])
def test_softmax_plus_factor_read_off_from_probability_ratios(l, factor):
    # scores 0 and 1 in the first two slots; the log-ratio of their weights is the factor
    a = torch.zeros(1, 4096, dtype=F64)
    a[0, 1] = 1.0
    mask = torch.arange(4096) < l
    p = G.softmax_plus(a, mask)
    assert abs(float(torch.log(p[0, 1] / p[0, 0])) - factor) < 5e-4


def test_fully_masked_rows_give_zeros_and_finite_gradients():
    a = torch.randn(2, 4, 4, generator=_gen(3), dtype=F64, requires_grad=True)
    mask = torch.ones(2, 4, 4, dtype=torch.bool)
    mask[0, 1] = False
    for method in G.NORMS:
        p = G.attention_normalize(a, mask, method=method)
        assert float(p[0, 1].detach().abs().max()) == 0.0
        (grad,) = torch.autograd.grad((p * torch.arange(4.0, dtype=F64)).sum(), a)
        assert bool(torch.isfinite(grad).all())


def test_single_valid_key_is_one_hot_for_softmax_plus_unlike_the_bert4keras_order():
    a = torch.randn(5, 5, generator=_gen(4), dtype=F64)
    tril = torch.ones(5, 5, dtype=torch.bool).tril()
    p = G.softmax_plus(a, tril)
    assert float(p[0, 0]) == 1.0
    # scaling *after* adding -1e12 multiplies the mask by log(1) = 0: the first causal row leaks
    leaky = _bert4keras_order(a, tril)
    torch.testing.assert_close(leaky[0], torch.full((5,), 0.2, dtype=F64), rtol=0, atol=1e-15)
    torch.testing.assert_close(leaky[1:], p[1:], rtol=1e-12, atol=1e-300)


def test_relu2_and_softmax_against_explicit_formulas():
    a = torch.randn(2, 6, 6, generator=_gen(5), dtype=F64)
    mask = torch.rand(2, 6, 6, generator=_gen(6)) > 0.4
    l = mask.sum(-1, keepdim=True).clamp(min=1).double()
    ref = torch.where(mask, a.clamp(min=0) ** 2 / l, torch.zeros_like(a))
    torch.testing.assert_close(G.attention_normalize(a, mask, method="relu2"), ref, rtol=1e-14, atol=0)
    torch.testing.assert_close(G.attention_normalize(a, method="relu2"), a.clamp(min=0) ** 2 / 6, rtol=1e-14, atol=0)
    ref_sm = torch.softmax(a.masked_fill(~mask, -math.inf), -1).nan_to_num(0.0)
    torch.testing.assert_close(G.attention_normalize(a, mask, method="softmax"), ref_sm, rtol=1e-14, atol=1e-300)


def test_gradcheck_normalisations():
    a = torch.randn(2, 3, 5, generator=_gen(7), dtype=F64, requires_grad=True)
    mask = torch.rand(2, 3, 5, generator=_gen(8)) > 0.3
    for method in G.NORMS:
        # relu2 is not differentiable at 0; random scores avoid it
        assert torch.autograd.gradcheck(lambda t: G.attention_normalize(t, mask, method=method), (a,))


# ---------------------------------------------------------------------------- the GAU layer

def _reference_gau(m: G.GAU, x, key_padding_mask=None):
    """The same layer from its parameters, with torch's SDPA for the softmax variants."""
    e, s = m.hidden_size, m.key_size
    h = F.silu(x @ m.i_dense.weight.T + (0 if m.i_dense.bias is None else m.i_dense.bias))
    u, v, z = h[..., :e], h[..., e:2 * e], h[..., 2 * e:]
    beta = m.scale_offset.beta if m.scale_offset.beta is not None else torch.zeros(2, s, dtype=x.dtype)
    q, k = z * m.scale_offset.gamma[0] + beta[0], z * m.scale_offset.gamma[1] + beta[1]
    if m.rope:
        q, k = apply_rope(q), apply_rope(k)
    b, n, _ = x.shape
    valid = torch.ones(b, n, n, dtype=torch.bool)
    if key_padding_mask is not None:
        valid &= ~key_padding_mask[:, None, :]
    if m.causal:
        valid &= torch.ones(n, n, dtype=torch.bool).tril()
    if m.norm == "relu2":
        sc = q @ k.transpose(-1, -2) / math.sqrt(s)
        av = (torch.where(valid, sc.clamp(min=0) ** 2, 0.0) / valid.sum(-1, keepdim=True)) @ v
    else:
        if m.norm == "softmax_plus":      # fold the per-row factor log(l_i)/log(512) into q
            q = q * (torch.log(valid.sum(-1, keepdim=True).double()) / math.log(512)).to(x.dtype)
        av = F.scaled_dot_product_attention(q, k, v, attn_mask=valid, scale=1 / math.sqrt(s))
    out = (u * av) @ m.o_dense.weight.T
    return out if m.o_dense.bias is None else out + m.o_dense.bias


@pytest.mark.parametrize("norm", G.NORMS)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_gau_matches_reference(norm, causal, bias):
    torch.manual_seed(0)
    m = G.GAU(16, key_size=8, norm=norm, causal=causal, bias=bias, dtype=F64)
    if bias:
        with torch.no_grad():
            m.scale_offset.beta.normal_()
    x = torch.randn(3, 7, 16, generator=_gen(9), dtype=F64)
    kpm = torch.zeros(3, 7, dtype=torch.bool)
    kpm[1, 5:] = True
    kpm[2, 3:] = True
    torch.testing.assert_close(m(x, kpm), _reference_gau(m, x, kpm), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(m(x), _reference_gau(m, x), rtol=1e-10, atol=1e-12)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 1000), n_valid=st.integers(1, 8), norm=st.sampled_from(G.NORMS))
def test_padding_does_not_change_valid_outputs(seed, n_valid, norm):
    torch.manual_seed(seed)
    m = G.GAU(12, key_size=6, norm=norm, dtype=F64)
    x = torch.randn(1, 8, 12, generator=_gen(seed), dtype=F64)
    kpm = (torch.arange(8) >= n_valid)[None]
    full = m(x, kpm)[:, :n_valid]
    short = m(x[:, :n_valid])
    torch.testing.assert_close(full, short, rtol=1e-10, atol=1e-12)


def test_causal_output_ignores_the_future_and_weights_are_returned():
    torch.manual_seed(1)
    m = G.GAU(12, key_size=6, causal=True, dtype=F64)
    x = torch.randn(2, 9, 12, generator=_gen(10), dtype=F64)
    y = x.clone()
    y[:, 5:] += 1.0
    torch.testing.assert_close(m(x)[:, :5], m(y)[:, :5], rtol=0, atol=1e-13)
    with torch.no_grad():
        out, a = m(x, need_weights=True)
    assert out.shape == (2, 9, 12) and a.shape == (2, 9, 9)
    assert float(a.triu(1).abs().max()) == 0.0
    torch.testing.assert_close(a.sum(-1), torch.ones(2, 9, dtype=F64), rtol=0, atol=1e-12)


def test_gau_gradcheck_and_dropout_modes():
    torch.manual_seed(2)
    m = G.GAU(6, hidden_size=5, key_size=4, dtype=F64, dropout=0.5)
    x = torch.randn(1, 4, 6, generator=_gen(11), dtype=F64, requires_grad=True)
    m.eval()
    assert torch.autograd.gradcheck(lambda t: m(t), (x,))
    torch.testing.assert_close(m(x), m(x), rtol=0, atol=0)
    m.train()
    assert not torch.equal(m(x), m(x))


def test_scale_offset_init_and_shapes():
    torch.manual_seed(3)
    so = G.ScaleOffset(128, heads=2, gamma_init_std=0.02)
    assert 0.015 < float(so.gamma.detach().std()) < 0.025 and so.beta is None
    so1 = G.ScaleOffset(4, heads=3, bias=True)
    assert torch.equal(so1.gamma, torch.ones(3, 4)) and torch.equal(so1.beta, torch.zeros(3, 4))
    outs = so1(torch.randn(2, 5, 4))
    assert len(outs) == 3 and all(o.shape == (2, 5, 4) for o in outs)
    assert "norm='softmax_plus'" in repr(G.GAU(8, key_size=4))


# ---------------------------------------------------------------------------- counts

def test_post_parameter_count():
    assert G.gau_param_count(768) == 3_637_504 == 768 * (3072 + 128) + 1536 * 768 + 2 * 128
    assert sum(p.numel() for p in G.GAU(768).parameters()) == 3_637_504
    assert G.attention_ffn_param_count(768, bias=False, norm_params=False) == 12 * 768**2 == 7_077_888


@settings(max_examples=12, deadline=None)
@given(d=st.integers(1, 12), e=st.integers(1, 40), s=st.integers(1, 10), bias=st.booleans())
def test_gau_param_count_matches_module(d, e, s, bias):
    m = G.GAU(8 * d, hidden_size=e, key_size=2 * s, bias=bias)
    assert G.gau_param_count(8 * d, hidden_size=e, key_size=2 * s, bias=bias) == sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("d, nhead, ff", [(64, 4, None), (768, 12, 3072), (96, 3, 200)])
@pytest.mark.parametrize("bias", [True, False])
def test_attention_ffn_param_count_matches_torch_encoder_layer(d, nhead, ff, bias):
    layer = torch.nn.TransformerEncoderLayer(d, nhead, 4 * d if ff is None else ff, bias=bias)
    assert G.attention_ffn_param_count(d, dim_feedforward=ff, bias=bias) == sum(p.numel() for p in layer.parameters())


def test_mac_counts_match_torch_flop_counter():
    torch.manual_seed(4)
    d, n, s = 64, 48, 16
    m = G.GAU(d, key_size=s)
    x = torch.randn(1, n, d)
    with FlopCounterMode(display=False) as fc:
        m(x)
    assert fc.get_total_flops() == 2 * G.gau_macs(n, d, key_size=s)
    layer = torch.nn.TransformerEncoderLayer(d, 4, 3 * d, dropout=0.0, batch_first=True)
    # the layer's own forward uses a fused CPU attention kernel the counter does not see, so
    # count its attention with explicit weights (bmm) plus its two FFN linears
    with FlopCounterMode(display=False) as fc:
        layer.self_attn(x, x, x, need_weights=True)
        layer.linear2(layer.linear1(x))
    assert fc.get_total_flops() == 2 * G.attention_ffn_macs(n, d, dim_feedforward=3 * d)
    arr = G.gau_macs(np.array([1, 10, 100]), d)
    assert arr.tolist() == [G.gau_macs(k, d) for k in (1, 10, 100)]


# ---------------------------------------------------------------------------- validation

def test_validation_errors():
    a = torch.randn(3, 3)
    with pytest.raises(TypeError, match="scores"):
        G.softmax_plus([[1.0]])
    with pytest.raises(ValueError, match="scores"):
        G.softmax_plus(torch.full((2, 2), float("nan")))
    with pytest.raises(ValueError, match="base"):
        G.softmax_plus(a, base=1.0)
    with pytest.raises(TypeError, match="mask"):
        G.softmax_plus(a, mask=torch.ones(3, 3))
    with pytest.raises(TypeError, match="mask"):
        G.softmax_plus(a, mask=[[True]])
    with pytest.raises(ValueError, match="mask"):
        G.softmax_plus(a, mask=torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="method"):
        G.attention_normalize(a, method="sparsemax")
    with pytest.raises(ValueError, match="norm"):
        G.GAU(8, norm="relu")
    with pytest.raises(ValueError, match="key_size"):
        G.GAU(8, key_size=5)
    with pytest.raises(ValueError, match="d_model"):
        G.GAU(0)
    with pytest.raises(ValueError, match="dropout"):
        G.GAU(8, dropout=1.0)
    with pytest.raises(ValueError, match="gamma_init_std"):
        G.ScaleOffset(4, gamma_init_std=0.0)
    m = G.GAU(8, key_size=4)
    with pytest.raises(ValueError, match="x"):
        m(torch.randn(2, 8))
    with pytest.raises(ValueError, match="d_model"):
        m(torch.randn(1, 3, 6))
    with pytest.raises(TypeError, match="key_padding_mask"):
        m(torch.randn(1, 3, 8), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="key_padding_mask"):
        m(torch.randn(1, 3, 8), torch.zeros(1, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="key_size"):
        m.scale_offset(torch.randn(2, 5))
    with pytest.raises(ValueError, match="d_model"):
        G.gau_param_count(0)
    with pytest.raises(TypeError, match="hidden_size"):
        G.gau_param_count(8, hidden_size=2.5)
    with pytest.raises(ValueError, match="dim_feedforward"):
        G.attention_ffn_param_count(8, dim_feedforward=0)
    with pytest.raises(TypeError, match="n"):
        G.gau_macs(np.array([1.5]), 8)
    with pytest.raises(ValueError, match="n"):
        G.attention_ffn_macs(np.array([0, 4]), 8)
    with pytest.raises(ValueError, match="n"):
        G.gau_macs(0, 8)
    with pytest.raises(TypeError, match="dtype"):
        G.gau_macs(np.array(["a"]), 8)
