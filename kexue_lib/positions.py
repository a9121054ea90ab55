"""Position encodings: the rotary position embedding (RoPE) and the biased RoPE score (P17, P35).

RoPE (Su et al., RoFormer, arXiv:2104.09864) rotates each pair of coordinates
``(x[2i], x[2i+1])`` of the vector at position ``m`` by the angle ``m * theta_i`` with
``theta_i = base ** (-2i / d)``. Rotations preserve norms, and because the rotation of
position ``m`` composed with the inverse rotation of position ``n`` is the rotation of
``m - n``, the inner product of a rotated query and a rotated key depends on the positions
only through ``m - n``. Used by the GAU layer of P17.

P35 adds the pieces needed to study bias vectors on queries and keys: the frequencies, the
rotation matrix ``R_m`` itself, the rotation of vectors by arbitrary (broadcast) positions,
the RoPE score ``(R_m q)^T (R_n k) = q^T R_{n-m} k``, its four-term decomposition when a query
bias ``a`` and a key bias ``b`` are added, and the distance profile
``f(r) = sum_i w_i cos(r theta_i)`` (the Sandwich bias when all ``w_i`` are equal).
"""
from __future__ import annotations

import torch

from ._checks import check_int, check_real, check_tensor

__all__ = [
    "apply_rope",
    "rope_frequencies",
    "rope_matrix",
    "rope_rotate",
    "rope_score",
    "rope_bias_terms",
    "rope_distance_profile",
]


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


def _wide(device: torch.device) -> torch.dtype:
    """The widest float dtype available on ``device`` (MPS has no float64)."""
    return torch.float32 if torch.device(device).type == "mps" else torch.float64


def _as_positions(positions: object, name: str, device: torch.device) -> torch.Tensor:
    """Positions as a tensor in the widest float dtype of ``device`` (a number or a tensor)."""
    if isinstance(positions, torch.Tensor):
        check_tensor(positions, name, floating=False)
        return positions.to(device=device, dtype=_wide(device))
    value = check_real(positions, name)
    return torch.tensor(value, device=device, dtype=_wide(device))


def rope_frequencies(
    d: int,
    *,
    base: float = 10000.0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    r"""The RoPE rotation frequencies :math:`\theta_i = \mathrm{base}^{-2i/d}`, ``i = 0..d/2-1``.

    Pair ``i`` of coordinates, ``(x[2i], x[2i+1])``, turns by the angle :math:`m\theta_i` at
    position :math:`m`. The frequencies fall geometrically from 1 to almost ``1/base``.
    Derived in P35 (and used in P17).

    Parameters
    ----------
    d
        The (even, positive) head dimension.
    base
        The base of the geometric sequence, ``> 1``.
    device, dtype
        Where and in which floating dtype to create the result.

    Returns
    -------
    ``torch.Tensor`` of shape ``(d // 2,)``.
    """
    d = check_int(d, "d", ge=2)
    if d % 2:
        raise ValueError(f"d must be even for RoPE, got {d}")
    base = check_real(base, "base", gt=1.0)
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating dtype, got {dtype}")
    wide = _wide(torch.device(device) if device is not None else torch.device("cpu"))
    i = torch.arange(0, d, 2, device=device, dtype=wide)
    return (base ** (-i / d)).to(dtype)


def rope_matrix(
    positions: torch.Tensor | float,
    d: int,
    *,
    base: float = 10000.0,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    r"""The block-diagonal RoPE rotation matrix :math:`\mathcal R_m` for each position ``m``.

    Block ``i`` (rows and columns ``2i, 2i+1``) is

    .. math::

        \begin{pmatrix}\cos m\theta_i & -\sin m\theta_i\\ \sin m\theta_i & \cos m\theta_i\end{pmatrix},

    so that ``rope_matrix(m, d) @ x`` is ``x`` rotated to position ``m`` (the paired layout of
    Su's posts). It satisfies :math:`\mathcal R_m^\top\mathcal R_n=\mathcal R_{n-m}`. Meant for
    checks and small ``d``: the fast path is ``rope_rotate``. Derived in P35.

    Parameters
    ----------
    positions
        A number or a tensor of positions of any shape ``(...)`` (integer or floating).
    d
        The (even) dimension.
    base
        The RoPE base, ``> 1``.
    dtype
        Floating dtype of the result.

    Returns
    -------
    ``torch.Tensor`` of shape ``(..., d, d)`` on the device of ``positions`` (CPU for a number).
    """
    device = positions.device if isinstance(positions, torch.Tensor) else torch.device("cpu")
    pos = _as_positions(positions, "positions", device)
    inv_freq = rope_frequencies(d, base=base, device=device, dtype=pos.dtype)
    angle = pos[..., None] * inv_freq                                     # (..., d/2)
    cos, sin = angle.cos().to(dtype), angle.sin().to(dtype)
    out = torch.zeros(*pos.shape, d, d, device=device, dtype=dtype)
    even = torch.arange(0, d, 2, device=device)
    out[..., even, even] = cos
    out[..., even + 1, even + 1] = cos
    out[..., even, even + 1] = -sin
    out[..., even + 1, even] = sin
    return out


def rope_rotate(
    x: torch.Tensor,
    positions: torch.Tensor | float,
    *,
    base: float = 10000.0,
) -> torch.Tensor:
    r"""Rotate vectors by RoPE to given positions: :math:`\mathcal R_m x`, with broadcasting.

    Unlike ``apply_rope`` (one position per row of a sequence), the positions here broadcast
    against the leading dimensions of ``x``: a single vector can be rotated to many
    positions, or many vectors to one. The angle is computed in float64 (float32 on MPS)
    before the cast to ``x``'s dtype. Derived in P35.

    Parameters
    ----------
    x
        Floating tensor of shape ``(..., d)`` with ``d`` even.
    positions
        A number or a tensor (integer or floating) whose shape broadcasts with ``x.shape[:-1]``.
    base
        The RoPE base, ``> 1``.

    Returns
    -------
    ``torch.Tensor`` of shape ``broadcast(x.shape[:-1], positions.shape) + (d,)`` and
    ``x``'s dtype.
    """
    check_tensor(x, "x", min_ndim=1)
    d = x.shape[-1]
    if d % 2:
        raise ValueError(f"x: the last dimension must be even for RoPE, got {d}")
    pos = _as_positions(positions, "positions", x.device)
    try:
        torch.broadcast_shapes(pos.shape, x.shape[:-1])
    except RuntimeError:
        raise ValueError(
            f"positions of shape {tuple(pos.shape)} do not broadcast with x's leading shape {tuple(x.shape[:-1])}"
        ) from None
    inv_freq = rope_frequencies(d, base=base, device=x.device, dtype=pos.dtype)
    angle = pos[..., None] * inv_freq                                     # (..., d/2)
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)


def rope_score(
    q: torch.Tensor,
    k: torch.Tensor,
    m: torch.Tensor | float,
    n: torch.Tensor | float,
    *,
    base: float = 10000.0,
) -> torch.Tensor:
    r"""The RoPE attention score of a query at position ``m`` and a key at position ``n``.

    .. math::

        s_{mn} = (\mathcal R_m q)^\top(\mathcal R_n k) = q^\top\mathcal R_m^\top\mathcal R_n k
               = q^\top\mathcal R_{n-m}k .

    Computed as the last form (one rotation, by ``n - m``), so it depends on the positions
    only through their difference. No ``1/sqrt(d)`` scale is applied. Derived in P35.

    Parameters
    ----------
    q, k
        Floating tensors of shape ``(..., d)`` (broadcastable to each other), ``d`` even.
    m, n
        Numbers or tensors of positions broadcastable with the leading shape.
    base
        The RoPE base, ``> 1``.

    Returns
    -------
    ``torch.Tensor`` of the broadcast leading shape.
    """
    check_tensor(q, "q", min_ndim=1)
    check_tensor(k, "k", min_ndim=1)
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must have the same last dimension, got {q.shape[-1]} and {k.shape[-1]}")
    pm = _as_positions(m, "m", k.device)
    pn = _as_positions(n, "n", k.device)
    return (q * rope_rotate(k, pn - pm, base=base)).sum(-1)


def rope_bias_terms(
    q: torch.Tensor,
    k: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    r: torch.Tensor | float,
    *,
    base: float = 10000.0,
) -> torch.Tensor:
    r"""The four terms of the RoPE score when the query and key carry biases ``a`` and ``b``.

    With :math:`\mathcal R_m^\top\mathcal R_n=\mathcal R_r`, :math:`r=n-m`,

    .. math::

        (q+a)^\top\mathcal R_r(k+b) = \underbrace{q^\top\mathcal R_r k}_{1}
          + \underbrace{a^\top\mathcal R_r k}_{2} + \underbrace{q^\top\mathcal R_r b}_{3}
          + \underbrace{a^\top\mathcal R_r b}_{4}.

    Term 4 is the deterministic relative-position bias of GAU's pseudo-code (the Sandwich
    bias for ``a = b = [sqrt(lam), 0, sqrt(lam), 0, ...]``); terms 2 and 3 are the cross
    terms. The four terms sum to ``rope_score(q + a, k + b, 0, r)``. Derived in P35.

    Parameters
    ----------
    q, k
        Floating tensors of shape ``(..., d)``, ``d`` even (query and key without bias).
    a, b
        Floating bias tensors of shape ``(d,)`` or broadcastable to ``q``/``k``.
    r
        Relative distance(s) ``n - m``: a number or a tensor broadcastable with the leading shape.
    base
        The RoPE base, ``> 1``.

    Returns
    -------
    torch.Tensor
        Shape ``broadcast_leading_shape + (4,)``: the four terms, in order.
    """
    for name, t in (("q", q), ("k", k), ("a", a), ("b", b)):
        check_tensor(t, name, min_ndim=1)
    d = q.shape[-1]
    for name, t in (("k", k), ("a", a), ("b", b)):
        if t.shape[-1] != d:
            raise ValueError(f"{name} must have last dimension {d} like q, got {t.shape[-1]}")
    rk = rope_rotate(k, r, base=base)
    rb = rope_rotate(b, r, base=base)
    terms = ((q * rk).sum(-1), (a * rk).sum(-1), (q * rb).sum(-1), (a * rb).sum(-1))
    return torch.stack(torch.broadcast_tensors(*terms), dim=-1)


def rope_distance_profile(
    r: torch.Tensor,
    d: int,
    *,
    base: float = 10000.0,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""The distance profile :math:`f(r)=\sum_{i=0}^{d/2-1} w_i\cos(r\theta_i)` of a RoPE bias.

    For one vector ``a`` on both sides, :math:`a^\top\mathcal R_r a=\sum_i\rho_i^2\cos(r\theta_i)`
    with :math:`\rho_i^2=a_{2i}^2+a_{2i+1}^2` (the sine parts cancel), so ``weights`` are the
    squared pair norms of ``a``. All weights equal to :math:`\lambda` (the default is all ones)
    give the Sandwich bias :math:`\lambda\sum_i\cos(r\theta_i)` of Chi et al.
    (arXiv:2212.10356), which is maximal at ``r = 0`` and decays, with ripples, in ``|r|``.
    Derived in P35.

    Parameters
    ----------
    r
        Floating or integer tensor of relative distances, any shape ``(...)``.
    d
        The (even) head dimension.
    base
        The RoPE base, ``> 1``.
    weights
        Optional weights of shape ``(d // 2,)`` (any sign); default all ones.

    Returns
    -------
    ``torch.Tensor`` of ``r``'s shape, in float64 (float32 on MPS) or ``weights``' dtype.
    """
    check_tensor(r, "r", floating=False)
    pos = _as_positions(r, "r", r.device)
    inv_freq = rope_frequencies(d, base=base, device=r.device, dtype=pos.dtype)
    if weights is None:
        w = torch.ones_like(inv_freq)
    else:
        check_tensor(weights, "weights", ndim=1)
        if weights.shape[0] != inv_freq.shape[0]:
            raise ValueError(f"weights must have length d // 2 = {inv_freq.shape[0]}, got {weights.shape[0]}")
        w = weights.to(device=r.device, dtype=pos.dtype)
    out = (torch.cos(pos[..., None] * inv_freq) * w).sum(-1)
    return out if weights is None else out.to(weights.dtype)
