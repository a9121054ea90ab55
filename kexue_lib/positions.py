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

P27 adds the training-free length-extrapolation tools: the number of turns each frequency makes
over the training length, position interpolation, the NTK-aware base, YaRN's ramp and logit
temperature, the ``log n`` scale, and Leaky ReRoPE / ReRoPE scores built both directly from a
modified relative-position matrix and in the two-pass form used in practice.
"""
from __future__ import annotations

import math

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
    "rope_turns",
    "ntk_base",
    "yarn_ramp",
    "scaled_rope_frequencies",
    "yarn_logit_scale",
    "logn_scale",
    "leaky_rerope_positions",
    "rope_relative_scores",
    "leaky_rerope_scores",
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


# ---------------------------------------------------------------------------------------------
# P27: training-free length extrapolation
# ---------------------------------------------------------------------------------------------
def rope_turns(
    d: int,
    *,
    train_length: float,
    base: float = 10000.0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    r"""Turns :math:`r_i = L_{train}\theta_i/(2\pi)` made by each RoPE frequency during training.

    A pair whose point :math:`e^{\mathrm i r\theta_i}` circled the unit circle many times
    (:math:`r_i` large) has seen every angle; one with :math:`r_i<1` has seen only an arc.
    Derived in P27.

    Parameters
    ----------
    d
        The (even) head dimension.
    train_length
        The training length :math:`L_{train}`, ``> 0``.
    base
        The RoPE base, ``> 1``.
    device, dtype
        Where and in which floating dtype to create the result.

    Returns
    -------
    ``torch.Tensor`` of shape ``(d // 2,)``.
    """
    length = check_real(train_length, "train_length", gt=0.0)
    return rope_frequencies(d, base=base, device=device, dtype=dtype) * (length / (2 * math.pi))


def ntk_base(d: int, *, scale: float, base: float = 10000.0) -> float:
    r"""The NTK-aware RoPE base :math:`\mathrm{base}\cdot\kappa` with :math:`\kappa = s^{d/(d-2)}`.

    Chosen so that the lowest frequency (``i = d/2 - 1``) is divided by exactly the scale
    :math:`s = L_{test}/L_{train}` (interpolated) while :math:`\theta_0 = 1` is untouched
    (extrapolated): :math:`(\mathrm{base}\,\kappa)^{-(d-2)/d} = s^{-1}\mathrm{base}^{-(d-2)/d}`.
    Derived in P27 (Reddit NTK-aware scaled RoPE; P34 discusses other variants).

    Parameters
    ----------
    d
        The (even) head dimension, ``>= 4``.
    scale
        The extension factor :math:`s = L_{test}/L_{train}`, ``> 0``.
    base
        The original RoPE base, ``> 1``.

    Returns
    -------
    float
        The new base.
    """
    d = check_int(d, "d", ge=4)
    if d % 2:
        raise ValueError(f"d must be even for RoPE, got {d}")
    s = check_real(scale, "scale", gt=0.0)
    base = check_real(base, "base", gt=1.0)
    return base * s ** (d / (d - 2))


def yarn_ramp(
    d: int,
    *,
    train_length: float,
    base: float = 10000.0,
    tau: float = 32.0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    r"""YaRN's ramp :math:`\gamma_i`: 1 keeps frequency ``i``, 0 interpolates it fully.

    With the turn counts :math:`r_i` of ``rope_turns``,

    .. math::

        \gamma_i = \begin{cases}1 & r_i > \tau\\ 0 & r_i < 1\\ (r_i-1)/(\tau-1) & \text{otherwise}
        \end{cases} = \mathrm{clip}\Big(\frac{r_i-1}{\tau-1}, 0, 1\Big).

    The YaRN paper's Llama defaults are :math:`\alpha=1`, :math:`\beta=\tau=32`. Derived in P27.

    Parameters
    ----------
    d
        The (even) head dimension.
    train_length
        The training length, ``> 0``.
    base
        The RoPE base, ``> 1``.
    tau
        The turn threshold above which a frequency is left alone, ``> 1``.
    device, dtype
        Where and in which floating dtype to create the result.

    Returns
    -------
    ``torch.Tensor`` of shape ``(d // 2,)`` with values in ``[0, 1]``.
    """
    tau = check_real(tau, "tau", gt=1.0)
    r = rope_turns(d, train_length=train_length, base=base, device=device, dtype=dtype)
    return ((r - 1) / (tau - 1)).clamp(0.0, 1.0)


_METHODS = ("none", "pi", "ntk", "yarn")


def scaled_rope_frequencies(
    d: int,
    *,
    method: str,
    scale: float,
    base: float = 10000.0,
    train_length: float | None = None,
    tau: float = 32.0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    r"""RoPE frequencies rescaled for a context :math:`s = L_{test}/L_{train}` times longer.

    - ``"none"``: :math:`\theta_i` unchanged (direct extrapolation).
    - ``"pi"`` (position interpolation): :math:`\theta_i/s`, i.e. every position times :math:`1/s`.
    - ``"ntk"``: :math:`\theta_i` with the base replaced by ``ntk_base(d, scale=s)``.
    - ``"yarn"``: :math:`\theta_i^{new}=[\gamma_i+(1-\gamma_i)/s]\,\theta_i` with the ramp of
      ``yarn_ramp`` (needs ``train_length``).

    Derived in P27.

    Parameters
    ----------
    d
        The (even) head dimension.
    method
        One of ``"none"``, ``"pi"``, ``"ntk"``, ``"yarn"``.
    scale
        The extension factor :math:`s`, ``> 0``.
    base
        The original RoPE base, ``> 1``.
    train_length
        The training length (only used, and required, by ``"yarn"``).
    tau
        YaRN's turn threshold, ``> 1``.
    device, dtype
        Where and in which floating dtype to create the result.

    Returns
    -------
    ``torch.Tensor`` of shape ``(d // 2,)``.
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    s = check_real(scale, "scale", gt=0.0)
    if method == "ntk":
        return rope_frequencies(d, base=ntk_base(d, scale=s, base=base), device=device, dtype=dtype)
    theta = rope_frequencies(d, base=base, device=device, dtype=dtype)
    if method == "none":
        return theta
    if method == "pi":
        return theta / s
    if train_length is None:
        raise ValueError("train_length is required for method='yarn'")
    gamma = yarn_ramp(d, train_length=train_length, base=base, tau=tau, device=device, dtype=dtype)
    return (gamma + (1 - gamma) / s) * theta


def yarn_logit_scale(scale: float) -> float:
    r"""YaRN's attention-logit factor :math:`\lambda=(1+0.1\ln s)^2` (1 for :math:`s\le1`).

    An empirical fit, not a derivation; :math:`\lambda\approx1+0.2\ln s` for small
    :math:`\ln s`. Compare the entropy-invariant ``logn_scale``. Derived in P27.

    Parameters
    ----------
    scale
        The extension factor :math:`s = L_{test}/L_{train}`, ``> 0``.

    Returns
    -------
    float
        The factor multiplying the attention logits.
    """
    s = check_real(scale, "scale", gt=0.0)
    return (1.0 + 0.1 * math.log(max(s, 1.0))) ** 2


def logn_scale(n: torch.Tensor, *, train_length: float) -> torch.Tensor:
    r"""The clipped entropy-invariant logit factor :math:`\lambda_n=\max(1,\log n/\log L_{train})`.

    ``n`` is the number of keys the query at that position sees (its 1-based position in a
    causal model). Since :math:`\log L_{test}/\log L_{train} = 1+\log(L_{test}/L_{train})/\log
    L_{train}`, it has the form of YaRN's linearised factor with coefficient
    :math:`1/\log L_{train}` instead of 0.2. Derived in P27 (from the entropy argument of P12).

    Parameters
    ----------
    n
        Tensor (integer or floating) of key counts, all ``>= 1``, any shape.
    train_length
        The training length, ``> 1``.

    Returns
    -------
    ``torch.Tensor`` of ``n``'s shape, floating (float64 for integer input, float32 on MPS).
    """
    check_tensor(n, "n", floating=False)
    length = check_real(train_length, "train_length", gt=1.0)
    nn = n if n.is_floating_point() else n.to(_wide(n.device))
    if nn.numel() and bool((nn < 1).any()):
        raise ValueError("n must be >= 1 everywhere")
    return (nn.log() / math.log(length)).clamp(min=1.0)


def leaky_rerope_positions(
    rel: torch.Tensor,
    *,
    window: float,
    leak: float = math.inf,
) -> torch.Tensor:
    r"""Leaky ReRoPE's relative positions: keep the near, compress the far.

    .. math::

        \tilde r = \begin{cases} r & r < w\\ w + (r-w)/k & r\ge w\end{cases},

    with window :math:`w` and leak :math:`k>1`; ``leak=inf`` is ReRoPE,
    :math:`\tilde r=\min(r,w)`. Derived in P27 (ReRoPE: Su's post 9708).

    Parameters
    ----------
    rel
        Tensor of relative positions :math:`r = m - n` (query minus key), any shape.
    window
        The window :math:`w`, ``>= 0``.
    leak
        The compression factor :math:`k`, ``>= 1`` (``math.inf`` for ReRoPE).

    Returns
    -------
    ``torch.Tensor`` of ``rel``'s shape, floating.
    """
    check_tensor(rel, "rel", floating=False)
    w = check_real(window, "window", ge=0.0)
    if isinstance(leak, bool) or not isinstance(leak, (int, float)) or math.isnan(leak) or leak < 1:
        raise ValueError(f"leak must be a number >= 1 (or math.inf), got {leak!r}")
    r = rel if rel.is_floating_point() else rel.to(_wide(rel.device))
    far = torch.full_like(r, w) if math.isinf(leak) else w + (r - w) / leak
    return torch.where(r < w, r, far)


def _rotate_freq(x: torch.Tensor, pos: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` (..., d) to positions ``pos`` (broadcasting) with frequencies ``inv_freq``."""
    angle = pos.to(inv_freq.dtype)[..., None] * inv_freq
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)


def _qk_freq(q: torch.Tensor, k: torch.Tensor, inv_freq: torch.Tensor | None, base: float) -> torch.Tensor:
    check_tensor(q, "q", min_ndim=2)
    check_tensor(k, "k", min_ndim=2)
    d = q.shape[-1]
    if k.shape[-1] != d:
        raise ValueError(f"q and k must have the same last dimension, got {d} and {k.shape[-1]}")
    if d % 2:
        raise ValueError(f"q: the last dimension must be even for RoPE, got {d}")
    if inv_freq is None:
        return rope_frequencies(d, base=base, device=q.device, dtype=_wide(q.device))
    check_tensor(inv_freq, "inv_freq", ndim=1)
    if inv_freq.shape[0] != d // 2:
        raise ValueError(f"inv_freq must have length d // 2 = {d // 2}, got {inv_freq.shape[0]}")
    return inv_freq.to(device=q.device, dtype=_wide(q.device))


def rope_relative_scores(
    q: torch.Tensor,
    k: torch.Tensor,
    rel: torch.Tensor,
    *,
    inv_freq: torch.Tensor | None = None,
    base: float = 10000.0,
) -> torch.Tensor:
    r"""RoPE scores built directly from an arbitrary relative-position matrix (the oracle).

    .. math::

        s_{mn} = q_m^\top \mathcal R_{-\tilde r_{mn}} k_n ,

    which for :math:`\tilde r_{mn}=m-n` is the ordinary :math:`(\mathcal R_m q_m)^\top(\mathcal R_n
    k_n)`. Costs :math:`O(L_q L_k d)` memory: meant for checks and small sizes. No
    :math:`1/\sqrt d`. Derived in P27.

    Parameters
    ----------
    q
        Floating tensor ``(..., Lq, d)``, ``d`` even.
    k
        Floating tensor ``(..., Lk, d)``.
    rel
        Relative positions ``(Lq, Lk)`` (integer or floating), query minus key.
    inv_freq
        Optional frequencies ``(d // 2,)`` (e.g. from ``scaled_rope_frequencies``); default
        ``rope_frequencies(d, base=base)``.
    base
        The RoPE base when ``inv_freq`` is not given.

    Returns
    -------
    ``torch.Tensor`` of shape ``(..., Lq, Lk)``.
    """
    theta = _qk_freq(q, k, inv_freq, base)
    check_tensor(rel, "rel", ndim=2, floating=False)
    if tuple(rel.shape) != (q.shape[-2], k.shape[-2]):
        raise ValueError(f"rel must have shape (Lq, Lk) = {(q.shape[-2], k.shape[-2])}, got {tuple(rel.shape)}")
    rk = _rotate_freq(k[..., None, :, :], -rel.to(q.device), theta)       # (..., Lq, Lk, d)
    return (q[..., :, None, :] * rk).sum(-1)


def leaky_rerope_scores(
    q: torch.Tensor,
    k: torch.Tensor,
    *,
    window: float,
    leak: float = math.inf,
    inv_freq: torch.Tensor | None = None,
    base: float = 10000.0,
) -> torch.Tensor:
    r"""Leaky ReRoPE / ReRoPE scores in the two-pass form (ordinary RoPE rotations only).

    Pass 1 is plain RoPE, :math:`A^{(1)}_{mn}=(\mathcal R_m q_m)^\top(\mathcal R_n k_n)` with
    relative position :math:`m-n`. Pass 2 rotates the query to :math:`m/k+w(1-1/k)` and the key
    to :math:`n/k`, so its relative position is :math:`w+(m-n-w)/k`; for ReRoPE
    (:math:`k=\infty`) the query sits at :math:`w` and the key at 0. The result is
    ``where(m - n < w, A1, A2)``, which equals ``rope_relative_scores`` on the matrix of
    ``leaky_rerope_positions``. Positions are ``0..L-1`` for both ``q`` and ``k``. Derived in
    P27.

    Parameters
    ----------
    q, k
        Floating tensors ``(..., L, d)`` (same ``L``), ``d`` even.
    window
        The window :math:`w`, ``>= 0``.
    leak
        The compression factor :math:`k`, ``>= 1`` (``math.inf`` for ReRoPE).
    inv_freq
        Optional frequencies ``(d // 2,)``; default ``rope_frequencies(d, base=base)``.
    base
        The RoPE base when ``inv_freq`` is not given.

    Returns
    -------
    ``torch.Tensor`` of shape ``(..., L, L)``.
    """
    theta = _qk_freq(q, k, inv_freq, base)
    w = check_real(window, "window", ge=0.0)
    if isinstance(leak, bool) or not isinstance(leak, (int, float)) or math.isnan(leak) or leak < 1:
        raise ValueError(f"leak must be a number >= 1 (or math.inf), got {leak!r}")
    n = q.shape[-2]
    if k.shape[-2] != n:
        raise ValueError(f"q and k must have the same length, got {n} and {k.shape[-2]}")
    pos = torch.arange(n, device=q.device, dtype=theta.dtype)
    a1 = _rotate_freq(q, pos, theta) @ _rotate_freq(k, pos, theta).transpose(-1, -2)
    if math.isinf(leak):
        q_pos, k_pos = torch.full_like(pos, w), torch.zeros_like(pos)
    else:
        q_pos, k_pos = pos / leak + w * (1 - 1 / leak), pos / leak
    a2 = _rotate_freq(q, q_pos, theta) @ _rotate_freq(k, k_pos, theta).transpose(-1, -2)
    near = (pos[:, None] - pos[None, :]) < w
    return torch.where(near, a1, a2)
