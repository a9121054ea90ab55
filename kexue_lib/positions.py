"""Position encodings. For now only the rotary position embedding (RoPE); Part 4 extends this.

RoPE (Su et al., RoFormer, arXiv:2104.09864) rotates each pair of coordinates
``(x[2i], x[2i+1])`` of the vector at position ``m`` by the angle ``m * theta_i`` with
``theta_i = base ** (-2i / d)``. Rotations preserve norms, and because the rotation of
position ``m`` composed with the inverse rotation of position ``n`` is the rotation of
``m - n``, the inner product of a rotated query and a rotated key depends on the positions
only through ``m - n``. Used by the GAU layer of P17.
"""
from __future__ import annotations

import torch

from ._checks import check_real, check_tensor

__all__ = ["apply_rope"]


def apply_rope(
    x: torch.Tensor,
    *,
    positions: torch.Tensor | None = None,
    base: float = 10000.0,
) -> torch.Tensor:
    r"""Apply the rotary position embedding to the last dimension of ``x``.

    With :math:`\theta_i = \mathrm{base}^{-2i/d}`, the pair :math:`(x_{2i}, x_{2i+1})` of the
    vector at position :math:`m` becomes

    .. math::

        \begin{pmatrix} x_{2i}\cos m\theta_i - x_{2i+1}\sin m\theta_i \\
        x_{2i}\sin m\theta_i + x_{2i+1}\cos m\theta_i \end{pmatrix},

    the interleaved ("paired") layout of Su's posts, not the split-halves layout of some
    libraries. Consequently ``apply_rope(q)[m] @ apply_rope(k)[n]`` depends on ``m - n`` only.
    Used in P17 (GAU); Part 4 discusses RoPE itself.

    Parameters
    ----------
    x
        Floating tensor of shape ``(..., n, d)`` with ``d`` even; the second-to-last axis is
        the sequence axis.
    positions
        Optional positions of shape ``(n,)`` (integer or floating, may be negative or
        fractional); default ``0, 1, ..., n-1``.
    base
        The base of the geometric frequency sequence, ``> 1``.

    Returns
    -------
    ``torch.Tensor`` of the same shape, dtype and device as ``x``.
    """
    check_tensor(x, "x", min_ndim=2)
    base = check_real(base, "base", gt=1.0)
    n, d = x.shape[-2], x.shape[-1]
    if d % 2:
        raise ValueError(f"x: the last dimension must be even for RoPE, got {d}")
    wide = torch.float32 if x.device.type == "mps" else torch.float64   # MPS has no float64
    if positions is None:
        pos = torch.arange(n, device=x.device, dtype=wide)
    else:
        check_tensor(positions, "positions", ndim=1, floating=False)
        if positions.shape[0] != n:
            raise ValueError(f"positions must have length n = {n}, got {positions.shape[0]}")
        pos = positions.to(device=x.device, dtype=wide)
    # Frequencies in float64 so that large positions do not lose the angle's precision
    # before the cast back to x's dtype.
    inv_freq = base ** (-torch.arange(0, d, 2, device=x.device, dtype=wide) / d)
    angle = pos[:, None] * inv_freq[None, :]                    # (n, d/2)
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]                                  # (..., n, d/2)
    out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return out.flatten(-2)
