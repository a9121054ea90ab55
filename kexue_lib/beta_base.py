"""RoPE as a base-beta number: digits, and NTK-style base changes for longer contexts.

Derived in P34 ("Transformer Upgrade Road 11: taking beta-base positions all the way",
kexue.fm/archives/9706). Pair ``m`` of RoPE (counted from ``m = 1``, coordinates
``(2m-2, 2m-1)``) turns by the angle

    theta_m = n / beta**(m-1),    beta = base**(2/d),

the same quantity whose floor, taken modulo ``beta``, is the ``m``-th base-``beta`` digit
of ``n``. Extending the context ``k``-fold means switching to a mixed radix
``beta_m = beta * lambda_m``; the new angle is

    theta_m_new = n / (beta**(m-1) * lambda_1 * ... * lambda_m).

This module gives the exact mixed-radix digits of integers, the per-pair factors
``lambda_m`` of the rules discussed in the post (NTK-old, NTK-fixed, the mixed rule
``lambda_1 ... lambda_m = exp(a m**b)``, and position interpolation), the resulting
frequency ratios, the causal relative-position counts that motivate the mixed rule, and
the post-hoc ``log n`` scale.
"""
from __future__ import annotations

import math

import torch

from ._checks import check_int, check_real, check_tensor
from .positions import logn_scale, rope_frequencies

__all__ = [
    "mixed_radix_digits",
    "relative_position_counts",
    "mixed_base_exponent",
    "scale_factors",
    "frequency_ratios",
    "extended_rope_frequencies",
    "logn_dagger_scale",
    "METHODS",
]

#: The extension rules known to ``scale_factors``.
METHODS = ("old", "fixed", "mixed", "pi", "reddit")


def mixed_radix_digits(n: torch.Tensor, bases: torch.Tensor) -> torch.Tensor:
    """Digits of non-negative integers in a mixed radix, least significant first.

    Digit ``m`` (``m = 1..M``) of ``n`` in the radix ``(beta_1, ..., beta_M)`` is

        floor(n / (beta_1 * ... * beta_{m-1})) mod beta_m,

    and ``n = sum_m digit_m * beta_1 * ... * beta_{m-1}`` whenever
    ``n < beta_1 * ... * beta_M``. A constant radix ``beta`` gives ordinary base-``beta``
    digits. Derived in P34.

    Parameters
    ----------
    n
        Integer tensor of shape ``(...)`` with entries ``>= 0``.
    bases
        Integer tensor of shape ``(M,)`` with entries ``>= 2``.

    Returns
    -------
    ``torch.Tensor`` of shape ``(..., M)`` and the dtype of ``n``.
    """
    check_tensor(n, "n", floating=False)
    check_tensor(bases, "bases", ndim=1, floating=False)
    if n.dtype == torch.bool or n.is_complex():
        raise TypeError(f"n must have an integer dtype, got {n.dtype}")
    if bases.dtype == torch.bool or bases.is_complex():
        raise TypeError(f"bases must have an integer dtype, got {bases.dtype}")
    if bases.numel() == 0:
        raise ValueError("bases must hold at least one base")
    if bool((bases < 2).any()):
        raise ValueError("bases must all be >= 2")
    if n.numel() and bool((n < 0).any()):
        raise ValueError("n must be non-negative")
    bases = bases.to(device=n.device, dtype=torch.int64)
    place = torch.cumprod(torch.cat([bases.new_ones(1), bases[:-1]]), 0)   # (M,) place values
    digits = torch.div(n.to(torch.int64)[..., None], place, rounding_mode="floor") % bases
    return digits.to(n.dtype)


def relative_position_counts(length: int, *, device: torch.device | str | None = None) -> torch.Tensor:
    """How often each relative distance occurs in a causal ``length x length`` attention map.

    Query ``i`` attends to keys ``j <= i``; the distance ``r = i - j`` occurs ``length - r``
    times (a lower-triangular Toeplitz matrix). Small distances dominate, so the low-frequency
    pairs of RoPE (its "high digits") see the fewest training examples. Derived in P34.

    Parameters
    ----------
    length
        The sequence length, ``>= 1``.
    device
        Where to create the result.

    Returns
    -------
    ``torch.Tensor`` of shape ``(length,)``, dtype int64: entry ``r`` counts distance ``r``.
    """
    length = check_int(length, "length", ge=1)
    return torch.arange(length, 0, -1, device=device, dtype=torch.int64)


def _check_d_k(d: object, k: object) -> tuple[int, float]:
    d = check_int(d, "d", ge=2)
    if d % 2:
        raise ValueError(f"d must be even for RoPE, got {d}")
    k = check_real(k, "k", ge=1.0)
    return d, k


def mixed_base_exponent(d: int, k: float, *, b: float) -> float:
    """The coefficient ``a`` of the mixed rule ``lambda_1 ... lambda_m = exp(a m**b)``.

    The product of all ``d/2`` factors must be the extension ratio ``k``:

        a * (d/2)**b = log k    =>    a = log(k) / (d/2)**b.

    Derived in P34.

    Parameters
    ----------
    d
        The (even) head dimension.
    k
        The extension ratio, ``>= 1``.
    b
        The exponent, ``0 <= b <= 1`` (the range in which every factor is ``>= 1`` and
        the factors do not increase).

    Returns
    -------
    ``float``
    """
    d, k = _check_d_k(d, k)
    b = check_real(b, "b", ge=0.0, le=1.0)
    return math.log(k) / (d / 2) ** b


def scale_factors(
    d: int,
    k: float,
    *,
    method: str = "mixed",
    b: float = 0.625,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Per-pair radix factors ``lambda_m`` (``beta_m = beta * lambda_m``) of a context extension.

    With ``lambda = k**(2/d)``:

    * ``"fixed"`` (NTK-RoPE-fixed): ``lambda_m = lambda`` for every ``m``;
    * ``"old"`` (NTK-RoPE-old, base ``base * k``): ``lambda_1 = 1`` and ``lambda_m = lambda``
      for ``m >= 2``, so the product is only ``k**((d-2)/d)``;
    * ``"mixed"``: cumulative products ``P_m = exp(a m**b)`` with ``P_0 = 1`` and
      ``a = log(k)/(d/2)**b``, so ``lambda_m = P_m / P_{m-1}``; ``b = 1`` is ``"fixed"``
      and ``b = 0`` is ``"pi"``;
    * ``"pi"`` (position interpolation): ``lambda_1 = k`` and ``lambda_m = 1`` for ``m >= 2``;
    * ``"reddit"`` (the original NTK-aware rule, base ``base * k**(d/(d-2))``, needs ``d >= 4``):
      ``lambda_1 = 1`` and ``lambda_m = k**(2/(d-2))`` for ``m >= 2``; the product is ``k`` but
      the factors increase at ``m = 2``.

    Note ``P_0 = 1`` is the empty product: it is *not* ``exp(a * 0**b)``, which is ``exp(a)``
    at ``b = 0`` under the convention ``0**0 = 1``. Derived in P34.

    Parameters
    ----------
    d
        The (even) head dimension.
    k
        The extension ratio, ``>= 1``.
    method
        One of ``"old"``, ``"fixed"``, ``"mixed"``, ``"pi"``, ``"reddit"``.
    b
        Exponent of the mixed rule, ``0 <= b <= 1`` (ignored by the other methods).
    device, dtype
        Where and in which floating dtype to create the result.

    Returns
    -------
    ``torch.Tensor`` of shape ``(d // 2,)``, entry ``m - 1`` holding ``lambda_m``.
    """
    d, k = _check_d_k(d, k)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating dtype, got {dtype}")
    log_cum = _log_cumulative(d, k, method, b, device)
    zero = torch.zeros(1, device=log_cum.device, dtype=torch.float64)
    return torch.diff(log_cum, prepend=zero).exp().to(dtype)


def _log_cumulative(d: int, k: float, method: str, b: float, device) -> torch.Tensor:
    """log(lambda_1 ... lambda_m) for m = 1..d/2, in float64."""
    m = torch.arange(1, d // 2 + 1, device=device, dtype=torch.float64)
    lam = math.log(k) * 2 / d                       # log of k**(2/d)
    if method == "fixed":
        return lam * m
    if method == "old":
        return lam * (m - 1)
    if method == "pi":
        return torch.full_like(m, math.log(k))
    if method == "reddit":
        if d < 4:
            raise ValueError(f"d must be >= 4 for method='reddit', got {d}")
        return math.log(k) * 2 / (d - 2) * (m - 1)
    a = mixed_base_exponent(d, k, b=b)
    return a * m ** b


def frequency_ratios(
    d: int,
    k: float,
    *,
    method: str = "mixed",
    b: float = 0.625,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Ratio ``theta_m_new / theta_m = 1 / (lambda_1 ... lambda_m)`` for each RoPE pair.

    Pair ``m = 1`` is the fastest-turning pair (the lowest digit). For ``"fixed"`` the ratio
    is ``k**(-2m/d)``; for ``"old"`` it is ``k**(-2(m-1)/d)``; for ``"pi"`` it is ``1/k``;
    for ``"mixed"`` it is ``exp(-a m**b)``. Arguments as in ``scale_factors``. Derived
    in P34.

    Parameters
    ----------
    d
        The (even) head dimension.
    k
        The extension ratio, ``>= 1``.
    method
        One of ``"old"``, ``"fixed"``, ``"mixed"``, ``"pi"``, ``"reddit"``.
    b
        Exponent of the mixed rule, ``0 <= b <= 1``.
    device, dtype
        Where and in which floating dtype to create the result.

    Returns
    -------
    ``torch.Tensor`` of shape ``(d // 2,)``.
    """
    d, k = _check_d_k(d, k)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating dtype, got {dtype}")
    return (-_log_cumulative(d, k, method, b, device)).exp().to(dtype)


def extended_rope_frequencies(
    d: int,
    k: float,
    *,
    method: str = "mixed",
    b: float = 0.625,
    base: float = 10000.0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """RoPE frequencies after a ``k``-fold extension: ``beta**(-(m-1)) / (lambda_1 ... lambda_m)``.

    ``beta = base**(2/d)``. ``method="old"`` equals plain RoPE with base ``base * k``.
    Arguments as in ``scale_factors``; ``base > 1``. Derived in P34.

    Parameters
    ----------
    d
        The (even) head dimension.
    k
        The extension ratio, ``>= 1``.
    method
        One of ``"old"``, ``"fixed"``, ``"mixed"``, ``"pi"``, ``"reddit"``.
    b
        Exponent of the mixed rule, ``0 <= b <= 1``.
    base
        The RoPE base, ``> 1``.
    device, dtype
        Where and in which floating dtype to create the result.

    Returns
    -------
    ``torch.Tensor`` of shape ``(d // 2,)``.
    """
    ratio = frequency_ratios(d, k, method=method, b=b, device=device, dtype=torch.float64)
    return (rope_frequencies(d, base=base, device=device, dtype=torch.float64) * ratio).to(dtype)


def logn_dagger_scale(positions: torch.Tensor, *, maxlen: int) -> torch.Tensor:
    """The post-hoc query scale ``max(1, log(n) / log(maxlen))`` (the post's ``log n``-dagger).

    Multiplying the query at position ``n`` by this factor leaves a model unchanged up to its
    pre-training length ``maxlen`` and applies the entropy-invariant ``log n`` scaling beyond
    it. Derived in P34; the same factor as :func:`kexue_lib.positions.logn_scale` (P27).

    Parameters
    ----------
    positions
        Tensor of shape ``(...)`` with entries ``>= 1`` (1-based positions or lengths).
    maxlen
        The pre-training length, ``>= 2``.

    Returns
    -------
    ``torch.Tensor`` of shape ``(...)``, floating (float64 for integer input).
    """
    check_tensor(positions, "positions", floating=False)
    maxlen = check_int(maxlen, "maxlen", ge=2)
    if positions.numel() and bool((positions < 1).any()):
        raise ValueError("positions must be >= 1")
    return logn_scale(positions, train_length=maxlen)   # the same factor as P27's log-n scale
