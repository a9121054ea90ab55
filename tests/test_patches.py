"""Tests for kexue_lib.patches (P28): loop references, the post's numbers, validation errors."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from kexue_lib import patches as P


def _patchify_loop(x: torch.Tensor, ph: int, pw: int) -> torch.Tensor:
    """Reference: walk the patches in raster order, flatten each as (p_h, p_w, C)."""
    B, C, H, W = x.shape
    rows = []
    for b in range(B):
        toks = []
        for i in range(H // ph):
            for j in range(W // pw):
                patch = x[b, :, i * ph:(i + 1) * ph, j * pw:(j + 1) * pw]   # [C, ph, pw]
                toks.append(patch.permute(1, 2, 0).reshape(-1))
        rows.append(torch.stack(toks))
    return torch.stack(rows)


@pytest.mark.parametrize("shape,p", [((2, 3, 8, 12), 4), ((1, 1, 6, 6), (2, 3)), ((3, 2, 5, 7), 1),
                                     ((1, 3, 8, 8), 8)])
def test_patchify_matches_loop(shape, p):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ph, pw = (p, p) if isinstance(p, int) else p
    assert torch.equal(P.patchify(x, p), _patchify_loop(x, ph, pw))


def test_patch_shapes_of_the_post():
    # P28's experiment: 64x64 and 128x128 CelebA-HQ reshaped to 16x16x48 and 16x16x192.
    assert P.patchify(torch.zeros(1, 3, 64, 64), 4).shape == (1, 256, 48)
    assert P.patchify(torch.zeros(1, 3, 128, 128), 8).shape == (1, 256, 192)


@settings(max_examples=40, deadline=None)
@given(B=st.integers(1, 3), C=st.integers(1, 4), s=st.integers(1, 4), t=st.integers(1, 4),
       ph=st.integers(1, 4), pw=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_roundtrip_is_bit_exact_for_integer_pixels(B, C, s, t, ph, pw, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (B, C, s * ph, t * pw), generator=g, dtype=torch.uint8)
    tok = P.patchify(x, (ph, pw))
    assert tok.dtype == torch.uint8 and tok.shape == (B, s * t, ph * pw * C)
    assert torch.equal(P.unpatchify(tok, (ph, pw), height=s * ph, width=t * pw), x)


@settings(max_examples=20, deadline=None)
@given(s=st.integers(1, 3), t=st.integers(1, 3), p=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_unpatchify_then_patchify_is_identity(s, t, p, seed):
    tok = torch.randn(2, s * t, p * p * 3, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(P.patchify(P.unpatchify(tok, p, height=s * p, width=t * p), p), tok)


def test_bits_per_token_reproduces_post_numbers():
    # 64x64x3 at 3 bits/dim = 36864 bits; L = 1024 -> 36 bits, L = 256 -> 144 bits.
    assert P.lossless_bits_per_token(height=64, width=64, channels=3, bits_per_dim=3, n_tokens=1024) == 36.0
    assert P.lossless_bits_per_token(height=64, width=64, channels=3, bits_per_dim=3, n_tokens=256) == 144.0
    assert math.isclose(2.0**36, 7e10, rel_tol=0.02)
    assert math.isclose(2.0**144, 2e43, rel_tol=0.12)
    # 16x16 tokens on a 256x256 image would need 2304 bits per token
    assert P.lossless_bits_per_token(height=256, width=256, channels=3, bits_per_dim=3, n_tokens=256) == 2304.0


@pytest.mark.parametrize("V", [2, 3, 1024, 2**14, 100_003])
def test_tokens_for_lossless_is_minimal(V):
    L = P.tokens_for_lossless(height=64, width=64, channels=3, bits_per_dim=3, codebook_size=V)
    total = 64 * 64 * 3 * 3
    assert L * math.log2(V) >= total - 1e-6
    assert (L - 1) * math.log2(V) < total


def test_tokens_for_lossless_exact_power_of_two():
    # 36864 bits / 36 bits = 1024 exactly; no spurious +1 from rounding
    assert P.tokens_for_lossless(height=64, width=64, channels=3, bits_per_dim=3, codebook_size=2**36) == 1024


def test_patch_vq_distortion_matches_brute_force():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64)
    cb = torch.randn(5, 12, generator=g, dtype=torch.float64)
    z = _patchify_loop(x, 2, 2).reshape(-1, 12)
    d = ((z[:, None, :] - cb[None]) ** 2).sum(-1).min(1).values.mean() / 12
    torch.testing.assert_close(P.patch_vq_distortion(x, cb, 2), d, rtol=1e-12, atol=0)


def test_patch_vq_distortion_zero_when_codebook_holds_every_patch():
    x = torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    cb = P.patchify(x, 2)[0]
    assert P.patch_vq_distortion(x, cb, 2).item() == 0.0


def test_validation_errors():
    x = torch.zeros(1, 3, 8, 8)
    with pytest.raises(TypeError, match="x"):
        P.patchify([[1.0]], 2)
    with pytest.raises(ValueError, match="x"):
        P.patchify(torch.zeros(3, 8, 8), 2)
    with pytest.raises(ValueError, match="divisible"):
        P.patchify(x, 3)
    with pytest.raises(ValueError, match="patch_size"):
        P.patchify(x, 0)
    with pytest.raises(ValueError, match="patch_size"):
        P.patchify(x, (2, 2, 2))
    with pytest.raises(TypeError, match="patch_size"):
        P.patchify(x, 2.0)
    with pytest.raises(ValueError, match="x contains NaN"):
        P.patchify(torch.full((1, 1, 2, 2), float("nan")), 1)
    tok = P.patchify(x, 2)
    with pytest.raises(ValueError, match="tokens"):
        P.unpatchify(tok[0], 2, height=8, width=8)
    with pytest.raises(ValueError, match="divisible"):
        P.unpatchify(tok, 2, height=9, width=8)
    with pytest.raises(ValueError, match="16 patches"):
        P.unpatchify(tok[:, :3], 2, height=8, width=8)
    with pytest.raises(ValueError, match="patch area"):
        P.unpatchify(torch.zeros(1, 16, 5), 2, height=8, width=8)
    with pytest.raises(ValueError, match="height"):
        P.unpatchify(tok, 2, height=0, width=8)
    kw = dict(height=8, width=8, channels=3)
    with pytest.raises(ValueError, match="bits_per_dim"):
        P.lossless_bits_per_token(**kw, bits_per_dim=-1.0, n_tokens=4)
    with pytest.raises(ValueError, match="n_tokens"):
        P.lossless_bits_per_token(**kw, bits_per_dim=3.0, n_tokens=0)
    with pytest.raises(TypeError, match="channels"):
        P.lossless_bits_per_token(height=8, width=8, channels=3.0, bits_per_dim=3.0, n_tokens=4)
    with pytest.raises(ValueError, match="codebook_size"):
        P.tokens_for_lossless(**kw, bits_per_dim=3.0, codebook_size=1)
    with pytest.raises(ValueError, match="codebook must have 12 columns"):
        P.patch_vq_distortion(x, torch.zeros(4, 11), 2)
    with pytest.raises(TypeError, match="x"):
        P.patch_vq_distortion(x.long(), torch.zeros(4, 12), 2)
    with pytest.raises(ValueError, match="codebook"):
        P.patch_vq_distortion(x, torch.zeros(12), 2)
