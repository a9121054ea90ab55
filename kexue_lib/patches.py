"""Raw image patches as tokens, and what discrete tokens cost in bits (P28).

P28 argues that a multimodal model should read images losslessly, as raw pixel patches,
instead of through a discrete image tokenizer. This module holds the three pieces the
chapter needs: the bijective reshape between an image batch ``[B, C, H, W]`` and a patch
sequence ``[B, N, p_h * p_w * C]`` (``patchify`` / ``unpatchify``), the information count
that says how large a codebook a lossless discrete tokenizer would need
(``lossless_bits_per_token``, ``tokens_for_lossless``), and the mean squared error of
vector-quantising patches with a given codebook (``patch_vq_distortion``). Derived in P28.
"""
from __future__ import annotations

import math

import torch

from ._checks import check_int, check_real, check_tensor
from .quantize import nearest_codeword

__all__ = [
    "patchify",
    "unpatchify",
    "lossless_bits_per_token",
    "tokens_for_lossless",
    "patch_vq_distortion",
]


def _patch_hw(patch_size: object) -> tuple[int, int]:
    if isinstance(patch_size, tuple):
        if len(patch_size) != 2:
            raise ValueError(f"patch_size must be an int or a pair of ints, got {patch_size!r}")
        ph = check_int(patch_size[0], "patch_size", ge=1)
        pw = check_int(patch_size[1], "patch_size", ge=1)
        return ph, pw
    p = check_int(patch_size, "patch_size", ge=1)
    return p, p


def patchify(x: torch.Tensor, patch_size: int | tuple[int, int]) -> torch.Tensor:
    """Cut an image batch into non-overlapping patches, one flattened patch per token.

    With patch size ``(p_h, p_w)`` and ``s = H / p_h``, ``t = W / p_w`` patches along the two
    axes, the map is a pure reshape and transpose,

        [B, C, H, W] -> [B, C, s, p_h, t, p_w] -> [B, s, t, p_h, p_w, C] -> [B, s*t, p_h*p_w*C],

    so it is a bijection (lossless; ``unpatchify`` inverts it bit-exactly) and works for any
    dtype, integer pixels included. Tokens are in raster order (row of patches by row);
    inside a token the layout is ``(p_h, p_w, C)`` with the channel fastest, as in ViT.
    A 64 x 64 RGB image with ``p = 4`` becomes 256 tokens of 48 numbers. Derived in P28.

    Parameters
    ----------
    x : torch.Tensor
        Images, shape ``[B, C, H, W]``; ``H`` and ``W`` divisible by the patch size.
    patch_size : int or tuple of int
        ``p`` (square patches) or ``(p_h, p_w)``.

    Returns
    -------
    torch.Tensor
        Tokens of shape ``[B, (H / p_h) * (W / p_w), p_h * p_w * C]``.
    """
    check_tensor(x, "x", ndim=4, floating=False)
    ph, pw = _patch_hw(patch_size)
    B, C, H, W = x.shape
    if H % ph or W % pw:
        raise ValueError(f"x: height {H} and width {W} must be divisible by patch_size ({ph}, {pw})")
    s, t = H // ph, W // pw
    return x.reshape(B, C, s, ph, t, pw).permute(0, 2, 4, 3, 5, 1).reshape(B, s * t, ph * pw * C)


def unpatchify(tokens: torch.Tensor, patch_size: int | tuple[int, int], *, height: int,
               width: int) -> torch.Tensor:
    """Inverse of ``patchify``: put the flattened patches back into ``[B, C, H, W]`` images.

    The number of channels is read off the token width, ``C = D / (p_h * p_w)``. Derived in P28.

    Parameters
    ----------
    tokens : torch.Tensor
        Patch tokens, shape ``[B, N, D]`` with ``N = (H / p_h) * (W / p_w)`` and ``D``
        divisible by ``p_h * p_w``.
    patch_size : int or tuple of int
        ``p`` or ``(p_h, p_w)``, as passed to ``patchify``.
    height : int
        Image height ``H``.
    width : int
        Image width ``W``.

    Returns
    -------
    torch.Tensor
        Images of shape ``[B, C, H, W]``.
    """
    check_tensor(tokens, "tokens", ndim=3, floating=False)
    ph, pw = _patch_hw(patch_size)
    H = check_int(height, "height", ge=1)
    W = check_int(width, "width", ge=1)
    if H % ph or W % pw:
        raise ValueError(f"height {H} and width {W} must be divisible by patch_size ({ph}, {pw})")
    B, N, D = tokens.shape
    s, t = H // ph, W // pw
    if N != s * t:
        raise ValueError(f"tokens must hold {s * t} patches for a {H} x {W} image, got {N}")
    if D % (ph * pw):
        raise ValueError(f"tokens: width {D} is not a multiple of the patch area {ph * pw}")
    C = D // (ph * pw)
    return tokens.reshape(B, s, t, ph, pw, C).permute(0, 5, 1, 3, 2, 4).reshape(B, C, H, W)


def lossless_bits_per_token(*, height: int, width: int, channels: int, bits_per_dim: float,
                            n_tokens: int) -> float:
    """Bits each of ``n_tokens`` discrete tokens must carry to code an image losslessly.

    An image of ``H * W * C`` values with entropy ``b`` bits per value holds ``H W C b`` bits
    on average; ``L`` tokens from a vocabulary of size ``V`` carry at most ``L log2 V`` bits.
    Losslessness therefore needs

        log2 V >= H * W * C * b / L.

    The returned number is that lower bound on ``log2 V``. P28's example: 64 x 64 x 3 at
    ``b = 3`` with ``L = 1024`` gives 36, with ``L = 256`` gives 144. Derived in P28.

    Parameters
    ----------
    height, width, channels : int
        Image shape ``H``, ``W``, ``C``.
    bits_per_dim : float
        Entropy per value ``b`` (bits per sub-pixel), ``>= 0``.
    n_tokens : int
        Sequence length ``L``.

    Returns
    -------
    float
        Minimal ``log2`` of the codebook size.
    """
    H = check_int(height, "height", ge=1)
    W = check_int(width, "width", ge=1)
    C = check_int(channels, "channels", ge=1)
    b = check_real(bits_per_dim, "bits_per_dim", ge=0)
    L = check_int(n_tokens, "n_tokens", ge=1)
    return H * W * C * b / L


def tokens_for_lossless(*, height: int, width: int, channels: int, bits_per_dim: float,
                        codebook_size: int) -> int:
    """Fewest tokens from a codebook of size ``V`` that can code an image losslessly.

    The same count as ``lossless_bits_per_token`` read the other way round,

        L_min = ceil(H * W * C * b / log2 V).

    Derived in P28.

    Parameters
    ----------
    height, width, channels : int
        Image shape ``H``, ``W``, ``C``.
    bits_per_dim : float
        Entropy per value ``b``, ``>= 0``.
    codebook_size : int
        Vocabulary size ``V >= 2``.

    Returns
    -------
    int
        Minimal sequence length.
    """
    H = check_int(height, "height", ge=1)
    W = check_int(width, "width", ge=1)
    C = check_int(channels, "channels", ge=1)
    b = check_real(bits_per_dim, "bits_per_dim", ge=0)
    V = check_int(codebook_size, "codebook_size", ge=2)
    return math.ceil(H * W * C * b / math.log2(V) - 1e-9)


def patch_vq_distortion(x: torch.Tensor, codebook: torch.Tensor,
                        patch_size: int | tuple[int, int]) -> torch.Tensor:
    """Mean squared error per pixel value after replacing every patch by its nearest codeword.

    With tokens ``z_n = patchify(x)`` of width ``D`` and codewords ``e_k``,

        distortion = mean_n min_k |z_n - e_k|^2 / D,

    the quantity a VQ image tokenizer without an encoder (codebook on raw patches) pays.
    Derived in P28.

    Parameters
    ----------
    x : torch.Tensor
        Floating images, shape ``[B, C, H, W]``.
    codebook : torch.Tensor
        Codewords, shape ``[K, p_h * p_w * C]``.
    patch_size : int or tuple of int
        ``p`` or ``(p_h, p_w)``.

    Returns
    -------
    torch.Tensor
        Scalar tensor (dtype of ``x``).
    """
    check_tensor(x, "x", ndim=4)
    check_tensor(codebook, "codebook", ndim=2)
    z = patchify(x, patch_size).reshape(-1, x.shape[1] * math.prod(_patch_hw(patch_size)))
    if codebook.shape[1] != z.shape[1]:
        raise ValueError(f"codebook must have {z.shape[1]} columns (patch size), got {codebook.shape[1]}")
    _, q = nearest_codeword(z, codebook.to(z.dtype))
    return (z - q).pow(2).mean()
