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
