"""Tests for kexue_lib.positions (RoPE, used in P17): rotation matrices, relative positions, norms."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from kexue_lib.positions import apply_rope

F64 = torch.float64


def _rotation_matrix(m: float, d: int, base: float) -> torch.Tensor:
    """Block-diagonal d x d rotation of position m, built entry by entry (brute force)."""
    r = torch.zeros(d, d, dtype=F64)
    for i in range(d // 2):
        a = m * base ** (-2 * i / d)
        c, s = math.cos(a), math.sin(a)
        r[2 * i, 2 * i], r[2 * i, 2 * i + 1] = c, -s
        r[2 * i + 1, 2 * i], r[2 * i + 1, 2 * i + 1] = s, c
    return r


@pytest.mark.parametrize("base", [10000.0, 100.0])
def test_matches_block_diagonal_rotation(base):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 7, 8, generator=g, dtype=F64)
    ref = torch.stack([x[:, m] @ _rotation_matrix(m, 8, base).T for m in range(7)], dim=1)
    torch.testing.assert_close(apply_rope(x, base=base), ref, rtol=0, atol=1e-13)


def test_matches_complex_multiplication_with_custom_positions():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 16, generator=g, dtype=F64)
    pos = torch.tensor([0, 3, -2, 100, 7])
    theta = 10000.0 ** (-torch.arange(0, 16, 2, dtype=F64) / 16)
    z = torch.view_as_complex(x.reshape(5, 8, 2).contiguous())
    ref = torch.view_as_real(z * torch.polar(torch.ones(5, 8, dtype=F64), pos[:, None].double() * theta)).reshape(5, 16)
    torch.testing.assert_close(apply_rope(x, positions=pos), ref, rtol=0, atol=1e-12)


def test_position_zero_is_identity_and_dtype_device_kept():
    x = torch.randn(2, 4, 6)
    y = apply_rope(x)
    assert y.dtype == x.dtype and y.device == x.device and y.shape == x.shape
    torch.testing.assert_close(y[:, 0], x[:, 0], rtol=0, atol=0)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), shift=st.integers(-50, 50), half=st.integers(1, 16))
def test_scores_depend_only_on_relative_position(seed, shift, half):
    d, n = 2 * half, 12
    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(n, d, generator=g, dtype=F64), torch.randn(n, d, generator=g, dtype=F64)
    pos = torch.arange(n)
    s0 = apply_rope(q, positions=pos) @ apply_rope(k, positions=pos).T
    s1 = apply_rope(q, positions=pos + shift) @ apply_rope(k, positions=pos + shift).T
    torch.testing.assert_close(s0, s1, rtol=0, atol=1e-11)
    # one fixed q and k at all positions: the score matrix is Toeplitz (constant along diagonals)
    qq, kk = q[:1].expand(n, d), k[:1].expand(n, d)
    s = apply_rope(qq) @ apply_rope(kk).T
    for off in range(-n + 1, n):
        diag = torch.diagonal(s, offset=off)
        assert float((diag - diag[0]).abs().max()) < 1e-11


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), half=st.integers(1, 32))
def test_preserves_norms(seed, half):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 9, 2 * half, generator=g, dtype=F64)
    torch.testing.assert_close(apply_rope(x).norm(dim=-1), x.norm(dim=-1), rtol=1e-13, atol=0)


def test_float32_large_positions_keep_the_angle():
    x = torch.randn(1, 4, dtype=torch.float32)
    pos = torch.tensor([100_000])
    ref = apply_rope(x.double(), positions=pos).float()
    torch.testing.assert_close(apply_rope(x, positions=pos), ref, rtol=1e-6, atol=1e-6)


def test_validation_errors():
    with pytest.raises(TypeError, match="x"):
        apply_rope([[1.0, 2.0]])
    with pytest.raises(ValueError, match="x"):
        apply_rope(torch.randn(4))
    with pytest.raises(ValueError, match="even"):
        apply_rope(torch.randn(3, 5))
    with pytest.raises(ValueError, match="base"):
        apply_rope(torch.randn(3, 4), base=1.0)
    with pytest.raises(ValueError, match="positions"):
        apply_rope(torch.randn(3, 4), positions=torch.arange(2))
    with pytest.raises(ValueError, match="positions"):
        apply_rope(torch.randn(3, 4), positions=torch.zeros(3, 1))
    with pytest.raises(ValueError, match="x"):
        apply_rope(torch.full((3, 4), float("nan")))


# ---------------------------------------------------------------------------------------------
# P35: frequencies, rotation matrices, broadcast rotation, the biased score and the profile f(r)
# ---------------------------------------------------------------------------------------------
from kexue_lib.positions import (  # noqa: E402
    rope_bias_terms,
    rope_distance_profile,
    rope_frequencies,
    rope_matrix,
    rope_rotate,
    rope_score,
)


def test_frequencies_closed_form_and_dtype():
    th = rope_frequencies(8, base=100.0)
    ref = torch.tensor([100.0 ** (-2 * i / 8) for i in range(4)], dtype=F64)
    torch.testing.assert_close(th, ref, rtol=1e-15, atol=0)
    assert rope_frequencies(6, dtype=torch.float32).dtype == torch.float32
    assert float(rope_frequencies(128)[0]) == 1.0


@pytest.mark.parametrize("base", [10000.0, 50.0])
def test_rope_matrix_matches_brute_force_and_apply_rope(base):
    pos = torch.tensor([0.0, 1.0, -3.5, 250.0], dtype=F64)
    mats = rope_matrix(pos, 10, base=base)
    assert mats.shape == (4, 10, 10)
    for j, m in enumerate(pos.tolist()):
        torch.testing.assert_close(mats[j], _rotation_matrix(m, 10, base), rtol=0, atol=1e-13)
    x = torch.randn(3, 6, 10, generator=torch.Generator().manual_seed(2), dtype=F64)
    ref = torch.einsum("nij,bnj->bni", rope_matrix(torch.arange(6), 10, base=base), x)
    torch.testing.assert_close(apply_rope(x, base=base), ref, rtol=0, atol=1e-13)
    # a Python number gives a single matrix
    torch.testing.assert_close(rope_matrix(2.0, 4, base=base), _rotation_matrix(2.0, 4, base), rtol=0, atol=1e-14)


@settings(max_examples=25, deadline=None)
@given(m=st.integers(-500, 500), n=st.integers(-500, 500), half=st.integers(1, 12))
def test_relative_rotation_identity(m, n, half):
    d = 2 * half
    rm, rn, rr = rope_matrix(float(m), d), rope_matrix(float(n), d), rope_matrix(float(n - m), d)
    torch.testing.assert_close(rm.T @ rn, rr, rtol=0, atol=1e-12)
    torch.testing.assert_close(rm.T @ rm, torch.eye(d, dtype=F64), rtol=0, atol=1e-13)


def test_rope_rotate_broadcasts_and_matches_matrix():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(8, generator=g, dtype=F64)
    pos = torch.arange(-5, 20)
    got = rope_rotate(x, pos)                                   # one vector, many positions
    ref = rope_matrix(pos, 8) @ x
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-13)
    xs = torch.randn(2, 25, 8, generator=g, dtype=F64)          # agrees with apply_rope row-wise
    torch.testing.assert_close(rope_rotate(xs, torch.arange(25)), apply_rope(xs), rtol=0, atol=1e-13)
    torch.testing.assert_close(rope_rotate(xs, 0), xs, rtol=0, atol=0)
    y = rope_rotate(xs.float(), 7.0)
    assert y.dtype == torch.float32 and y.shape == xs.shape


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), m=st.integers(-300, 300), n=st.integers(-300, 300))
def test_score_is_rotated_dot_product_and_depends_on_difference(seed, m, n):
    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(2, 16, generator=g, dtype=F64)
    ref = (rope_matrix(float(m), 16) @ q) @ (rope_matrix(float(n), 16) @ k)
    torch.testing.assert_close(rope_score(q, k, m, n), ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(rope_score(q, k, m + 17, n + 17), ref, rtol=1e-11, atol=1e-11)


def test_bias_terms_brute_force_and_sum():
    g = torch.Generator().manual_seed(4)
    q, k = torch.randn(5, 12, generator=g, dtype=F64), torch.randn(5, 12, generator=g, dtype=F64)
    a, b = torch.randn(12, generator=g, dtype=F64), torch.randn(12, generator=g, dtype=F64)
    r = torch.tensor([0, 1, 7, -30, 1000])
    terms = rope_bias_terms(q, k, a, b, r)
    assert terms.shape == (5, 4)
    R = rope_matrix(r, 12)                                     # (5, 12, 12)
    Rk, Rb = torch.einsum("nij,nj->ni", R, k), torch.einsum("nij,j->ni", R, b)
    ref = torch.stack([(q * Rk).sum(-1), (a * Rk).sum(-1), (q * Rb).sum(-1), (a * Rb).sum(-1)], -1)
    torch.testing.assert_close(terms, ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(terms.sum(-1), rope_score(q + a, k + b, 0, r), rtol=0, atol=1e-12)
    # broadcasting a fixed (q, k) pair over many distances
    many = rope_bias_terms(q[0], k[0], a, b, torch.arange(40))
    assert many.shape == (40, 4)
    torch.testing.assert_close(many[7], rope_bias_terms(q[0], k[0], a, b, 7), rtol=0, atol=1e-13)


def test_distance_profile_reference_values_and_sandwich_identity():
    # f(r) = sum_{i<64} cos(r * 10000^(-2i/128)), values quoted (2 decimals) in the brief of P35
    r = torch.tensor([0, 1, 10, 100, 200, 500, 1000, 2000, 4000])
    ref = torch.tensor([64, 62.09, 42.82, 30.54, 19.56, 19.10, 10.18, 1.86, 0.53], dtype=F64)
    torch.testing.assert_close(rope_distance_profile(r, 128), ref, rtol=0, atol=6e-3)
    # Sandwich: a = b = [sqrt(lam), 0, sqrt(lam), 0, ...] gives lam * f(r)
    lam = 0.37
    a = torch.zeros(128, dtype=F64)
    a[0::2] = math.sqrt(lam)
    via_rotation = (a * rope_rotate(a, r)).sum(-1)
    torch.testing.assert_close(via_rotation, lam * rope_distance_profile(r, 128), rtol=1e-13, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), half=st.integers(1, 16))
def test_profile_with_pair_norm_weights_equals_self_score(seed, half):
    d = 2 * half
    a = torch.randn(d, generator=torch.Generator().manual_seed(seed), dtype=F64)
    r = torch.linspace(-300, 300, 31, dtype=F64)
    w = a[0::2] ** 2 + a[1::2] ** 2
    prof = rope_distance_profile(r, d, weights=w)
    torch.testing.assert_close(prof, (a * rope_rotate(a, r)).sum(-1), rtol=1e-11, atol=1e-11)
    assert bool((prof <= prof[15] + 1e-12).all())            # a positive cosine sum peaks at r = 0
    assert rope_distance_profile(r.float(), d, weights=w.float()).dtype == torch.float32


def test_p35_validation_errors():
    x = torch.randn(3, 4)
    with pytest.raises(ValueError, match="d"):
        rope_frequencies(5)
    with pytest.raises(ValueError, match="d"):
        rope_frequencies(0)
    with pytest.raises(TypeError, match="d"):
        rope_frequencies(4.0)
    with pytest.raises(ValueError, match="base"):
        rope_frequencies(4, base=0.5)
    with pytest.raises(TypeError, match="dtype"):
        rope_frequencies(4, dtype=torch.int64)
    with pytest.raises(ValueError, match="even"):
        rope_rotate(torch.randn(3, 5), 1.0)
    with pytest.raises(TypeError, match="x"):
        rope_rotate([1.0, 2.0], 1.0)
    with pytest.raises(ValueError, match="positions"):
        rope_rotate(x, torch.arange(5))
    with pytest.raises(ValueError, match="positions"):
        rope_rotate(x, float("nan"))
    with pytest.raises(TypeError, match="positions"):
        rope_rotate(x, "3")
    with pytest.raises(ValueError, match="positions"):
        rope_matrix(torch.tensor([float("inf")]), 4)
    with pytest.raises(ValueError, match="same last dimension"):
        rope_score(x, torch.randn(3, 6), 0, 1)
    with pytest.raises(TypeError, match="m"):
        rope_score(x, x, "0", 1)
    with pytest.raises(ValueError, match="b"):
        rope_bias_terms(x, x, torch.randn(4), torch.randn(6), 1)
    with pytest.raises(ValueError, match="a"):
        rope_bias_terms(x, x, torch.full((4,), float("nan")), torch.randn(4), 1)
    with pytest.raises(TypeError, match="r"):
        rope_distance_profile([1.0], 4)
    with pytest.raises(ValueError, match="weights"):
        rope_distance_profile(torch.arange(3), 8, weights=torch.ones(3))
    with pytest.raises(ValueError, match="weights"):
        rope_distance_profile(torch.arange(3), 8, weights=torch.ones(2, 2))


# ---------------------------------------------------------------------------------------------
# P27: length extrapolation (turns, PI, NTK, YaRN, logit scales, Leaky ReRoPE / ReRoPE)
# ---------------------------------------------------------------------------------------------
from kexue_lib.positions import (  # noqa: E402
    leaky_rerope_positions,
    leaky_rerope_scores,
    logn_scale,
    ntk_base,
    rope_relative_scores,
    rope_turns,
    scaled_rope_frequencies,
    yarn_logit_scale,
    yarn_ramp,
)


def test_turn_counts_and_yarn_ramp_post_numbers():
    ref = [4096 * 10000.0 ** (-2 * i / 128) / (2 * math.pi) for i in range(64)]
    r = rope_turns(128, train_length=4096)
    torch.testing.assert_close(r, torch.tensor(ref, dtype=F64), rtol=1e-14, atol=0)
    assert int((r < 1).sum()) == 18 and int((r > 32).sum()) == 21
    g = yarn_ramp(128, train_length=4096, tau=32.0)
    ref_g = [min(1.0, max(0.0, (x - 1) / 31)) for x in ref]
    torch.testing.assert_close(g, torch.tensor(ref_g, dtype=F64), rtol=1e-14, atol=0)
    assert g.dtype == F64 and yarn_ramp(8, train_length=64, dtype=torch.float32).dtype == torch.float32


@pytest.mark.parametrize("d", [4, 64, 128])
@pytest.mark.parametrize("s", [1.0, 2.0, 8.0, 3.7])
def test_ntk_interpolates_lowest_frequency_exactly(d, s):
    new = scaled_rope_frequencies(d, method="ntk", scale=s)
    old = rope_frequencies(d)
    assert abs(float(new[-1] / old[-1]) - 1 / s) < 1e-13
    assert float(new[0]) == 1.0
    assert abs(ntk_base(d, scale=s, base=500.0) - 500.0 * s ** (d / (d - 2))) < 1e-9 * 500 * s ** 2


def test_ntk_kappa_post_value():
    assert abs(ntk_base(128, scale=8) / 10000 - 8.2685) < 1e-4


def test_scaled_frequencies_none_pi_yarn():
    th = rope_frequencies(64)
    torch.testing.assert_close(scaled_rope_frequencies(64, method="none", scale=5.0), th, rtol=0, atol=0)
    torch.testing.assert_close(scaled_rope_frequencies(64, method="pi", scale=5.0), th / 5, rtol=1e-15, atol=0)
    y = scaled_rope_frequencies(64, method="yarn", scale=5.0, train_length=1024, tau=16.0)
    turns = [1024 * float(t) / (2 * math.pi) for t in th]
    for i, t in enumerate(turns):
        ref = float(th[i]) if t > 16 else float(th[i]) / 5 if t < 1 else ((t - 1) / 15 + (1 - (t - 1) / 15) / 5) * float(th[i])
        assert abs(float(y[i]) - ref) < 1e-14
    # s = 1 changes nothing for any method
    for m in ("pi", "ntk", "yarn"):
        torch.testing.assert_close(scaled_rope_frequencies(64, method=m, scale=1.0, train_length=1024), th, rtol=1e-14, atol=0)


def test_logit_scales():
    assert abs(yarn_logit_scale(8) - 1.4591) < 5e-5
    assert yarn_logit_scale(0.5) == 1.0 == yarn_logit_scale(1)
    n = torch.tensor([1, 5, 2048, 4096, 16384])
    ref = torch.tensor([max(1.0, math.log(v) / math.log(2048)) for v in n.tolist()], dtype=F64)
    torch.testing.assert_close(logn_scale(n, train_length=2048), ref, rtol=1e-15, atol=0)
    assert logn_scale(torch.tensor([3.0]), train_length=2).dtype == torch.float32


def test_leaky_rerope_positions_formula():
    r = torch.arange(-3, 30)
    out = leaky_rerope_positions(r, window=8, leak=4)
    ref = torch.tensor([x if x < 8 else 8 + (x - 8) / 4 for x in r.tolist()], dtype=F64)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    rr = leaky_rerope_positions(r.double(), window=8)
    torch.testing.assert_close(rr, r.double().clamp(max=8), rtol=0, atol=0)
    # leak 1 is plain RoPE
    torch.testing.assert_close(leaky_rerope_positions(r, window=8, leak=1), r.double(), rtol=0, atol=0)


def test_relative_scores_brute_force_and_plain_rope():
    g = torch.Generator().manual_seed(3)
    q, k = torch.randn(5, 8, generator=g, dtype=F64), torch.randn(7, 8, generator=g, dtype=F64)
    rel = torch.randn(5, 7, generator=g, dtype=F64) * 10
    out = rope_relative_scores(q, k, rel, base=100.0)
    ref = torch.tensor([[float(q[m] @ _rotation_matrix(-float(rel[m, n]), 8, 100.0) @ k[n]) for n in range(7)]
                        for m in range(5)], dtype=F64)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    p = torch.arange(5)
    plain = rope_relative_scores(q, k[:5], p[:, None] - p[None, :])
    torch.testing.assert_close(plain, apply_rope(q) @ apply_rope(k[:5]).T, rtol=0, atol=1e-12)
    # custom frequencies: equals scaling positions for PI
    th = scaled_rope_frequencies(8, method="pi", scale=4.0)
    rel2 = (p[:, None] - p[None, :]).double()
    torch.testing.assert_close(rope_relative_scores(q, k[:5], rel2, inv_freq=th),
                               rope_relative_scores(q, k[:5], rel2 / 4), rtol=0, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), half=st.integers(1, 8), n=st.integers(1, 30),
       window=st.integers(0, 12), leak=st.sampled_from([1.0, 2.0, 4.0, 7.5, math.inf]))
def test_two_pass_equals_direct(seed, half, n, window, leak):
    g = torch.Generator().manual_seed(seed)
    d = 2 * half
    q, k = torch.randn(2, n, d, generator=g, dtype=F64), torch.randn(2, n, d, generator=g, dtype=F64)
    p = torch.arange(n)
    rel = leaky_rerope_positions(p[:, None] - p[None, :], window=window, leak=leak)
    torch.testing.assert_close(leaky_rerope_scores(q, k, window=window, leak=leak),
                               rope_relative_scores(q, k, rel), rtol=0, atol=1e-10)


def test_two_pass_custom_frequencies_and_float32():
    g = torch.Generator().manual_seed(4)
    q, k = torch.randn(12, 8, generator=g), torch.randn(12, 8, generator=g)
    th = scaled_rope_frequencies(8, method="ntk", scale=3.0)
    out = leaky_rerope_scores(q, k, window=4, leak=3.0, inv_freq=th)
    assert out.dtype == torch.float32 and out.shape == (12, 12)
    p = torch.arange(12)
    ref = rope_relative_scores(q.double(), k.double(), leaky_rerope_positions(p[:, None] - p[None, :], window=4, leak=3.0),
                               inv_freq=th)
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=1e-4)


def test_p27_validation_errors():
    x = torch.randn(4, 6)
    with pytest.raises(ValueError, match="train_length"):
        rope_turns(8, train_length=0)
    with pytest.raises(ValueError, match="scale"):
        ntk_base(8, scale=-1.0)
    with pytest.raises(ValueError, match="d"):
        ntk_base(2, scale=2.0)
    with pytest.raises(ValueError, match="even"):
        ntk_base(7, scale=2.0)
    with pytest.raises(ValueError, match="tau"):
        yarn_ramp(8, train_length=10, tau=1.0)
    with pytest.raises(ValueError, match="method"):
        scaled_rope_frequencies(8, method="abf", scale=2.0)
    with pytest.raises(ValueError, match="train_length"):
        scaled_rope_frequencies(8, method="yarn", scale=2.0)
    with pytest.raises(ValueError, match="scale"):
        yarn_logit_scale(0.0)
    with pytest.raises(ValueError, match="n must be >= 1"):
        logn_scale(torch.tensor([0, 3]), train_length=10)
    with pytest.raises(ValueError, match="train_length"):
        logn_scale(torch.tensor([3]), train_length=1)
    with pytest.raises(TypeError, match="rel"):
        leaky_rerope_positions([1, 2], window=2)
    with pytest.raises(ValueError, match="window"):
        leaky_rerope_positions(torch.arange(3), window=-1)
    with pytest.raises(ValueError, match="leak"):
        leaky_rerope_positions(torch.arange(3), window=1, leak=0.5)
    with pytest.raises(ValueError, match="leak"):
        leaky_rerope_scores(x, x, window=1, leak=float("nan"))
    with pytest.raises(ValueError, match="same last dimension"):
        leaky_rerope_scores(x, torch.randn(4, 8), window=1)
    with pytest.raises(ValueError, match="even"):
        leaky_rerope_scores(torch.randn(4, 5), torch.randn(4, 5), window=1)
    with pytest.raises(ValueError, match="same length"):
        leaky_rerope_scores(x, torch.randn(5, 6), window=1)
    with pytest.raises(ValueError, match="inv_freq"):
        leaky_rerope_scores(x, x, window=1, inv_freq=torch.ones(4))
    with pytest.raises(ValueError, match="rel"):
        rope_relative_scores(x, x, torch.zeros(4, 5))
    with pytest.raises(ValueError, match="q"):
        rope_relative_scores(torch.randn(6), torch.randn(6), torch.zeros(1, 1))


def test_rerope_two_pass_fixed_case():
    g = torch.Generator().manual_seed(5)
    q, k = torch.randn(40, 16, generator=g, dtype=F64), torch.randn(40, 16, generator=g, dtype=F64)
    p = torch.arange(40)
    rel = (p[:, None] - p[None, :]).clamp(max=8)
    torch.testing.assert_close(leaky_rerope_scores(q, k, window=8), rope_relative_scores(q, k, rel), rtol=0, atol=1e-12)
