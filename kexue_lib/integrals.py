"""Wallis integrals: powers of sine and cosine on [0, pi/2] (Derived in P15).

``I_m = int_0^{pi/2} sin^m x dx = int_0^{pi/2} cos^m x dx``. Integration by parts gives the
reduction formula ``I_m = (m - 1)/m * I_{m-2}`` with ``I_0 = pi/2``, ``I_1 = 1``, hence

    I_{2n} = (2n-1)!!/(2n)!! * pi/2 = binom(2n, n) 4^{-n} * pi/2,     I_{2n+1} = (2n)!!/(2n+1)!!,

and for every real ``m > -1`` the Beta/Gamma form
``I_m = B((m+1)/2, 1/2) / 2 = sqrt(pi) Gamma((m+1)/2) / (2 Gamma(m/2 + 1))``. This module holds
those forms (float64, vectorised, ``torch.lgamma`` for large ``m``), the exact rational
coefficients, the Wallis product, the large-``m`` expansion and the random-walk reading
``P(S_{2n} = 0) = binom(2n, n) 4^{-n} = (2/pi) I_{2n}``.
"""
from __future__ import annotations

import math
from fractions import Fraction

import torch

from ._checks import check_int, check_tensor

__all__ = [
    "wallis_integral",
    "wallis_table",
    "wallis_exact",
    "wallis_asymptotic",
    "wallis_partial_products",
    "srw_return_prob",
    "simulate_srw_return",
]

F64 = torch.float64
_LOG_SQRT_PI = 0.5 * math.log(math.pi)
_STIRLING_FROM = 50.0   # above this x the Stirling difference is used (truncation error < 1e-15)


def _log_gamma_ratio_half(x: torch.Tensor) -> torch.Tensor:
    """``log Gamma(x + 1/2) - log Gamma(x + 1)`` for float64 ``x > -1/2``, accurate for huge ``x``.

    Subtracting two ``lgamma`` values of size ``x log x`` loses ``eps * x log x`` absolutely
    (``3e-8`` at ``x = 1e7``). For ``x >= 50`` we subtract the Stirling series analytically:
    ``1/2 + x log1p(-1/(2x+2)) - log(x+1)/2 + S(x+1/2) - S(x+1)``, with
    ``S(z) = 1/(12z) - 1/(360z^3) + 1/(1260z^5)``; every term is then O(1) or smaller.
    """
    small = torch.lgamma(x + 0.5) - torch.lgamma(x + 1)
    xb = torch.clamp(x, min=_STIRLING_FROM)

    def S(z):
        z2 = z * z
        return 1 / (12 * z) - 1 / (360 * z * z2) + 1 / (1260 * z * z2 * z2)

    big = 0.5 + xb * torch.log1p(-1 / (2 * xb + 2)) - 0.5 * torch.log(xb + 1) + S(xb + 0.5) - S(xb + 1)
    return torch.where(x >= _STIRLING_FROM, big, small)


def _check_m(m: object, name: str = "m", *, gt: float = -1.0) -> torch.Tensor:
    check_tensor(m, name)
    if m.numel() and not float(m.min()) > gt:
        raise ValueError(f"{name} must be > {gt}, got a minimum of {float(m.min())}")
    return m


def wallis_integral(m: torch.Tensor) -> torch.Tensor:
    """``I_m = int_0^{pi/2} sin^m x dx = sqrt(pi) Gamma((m+1)/2) / (2 Gamma(m/2 + 1))`` (Derived in P15).

    Valid for every real ``m > -1`` (the integral diverges at ``m = -1``). Evaluated in float64 as
    ``exp(log Gamma(x + 1/2) - log Gamma(x + 1))`` with ``x = m/2``: ``torch.lgamma`` for moderate
    ``m`` and the Stirling series of the *difference* for large ``m``, so nothing overflows and the
    relative error stays near machine precision even at ``m = 1e12``.
    Shapes: ``m`` any floating tensor; output the same shape and dtype.
    """
    _check_m(m)
    x = m.to(F64) / 2
    return (0.5 * math.sqrt(math.pi) * torch.exp(_log_gamma_ratio_half(x))).to(m.dtype)


def wallis_table(
    m_max: int, *, dtype: torch.dtype = F64, device: torch.device | str | None = None
) -> torch.Tensor:
    """``I_0, I_1, ..., I_{m_max}`` from the reduction formula ``I_m = (m-1)/m I_{m-2}`` (Derived in P15).

    The recursion is unrolled into two running products (one for even, one for odd ``m``),
    ``I_{2n} = pi/2 prod_{j<=n} (2j-1)/(2j)`` and ``I_{2n+1} = prod_{j<=n} (2j)/(2j+1)``, computed
    with ``cumprod`` in float64. Shapes: output ``(m_max + 1,)``.
    """
    m_max = check_int(m_max, "m_max", ge=0)
    m = torch.arange(2, max(m_max, 1) + 1, dtype=F64, device=device)
    ratio = (m - 1) / m                                        # I_m / I_{m-2}
    out = torch.empty(m_max + 1, dtype=F64, device=device)
    out[0] = math.pi / 2
    if m_max >= 1:
        out[1] = 1.0
    out[2::2] = (math.pi / 2) * torch.cumprod(ratio[0::2], 0)
    out[3::2] = torch.cumprod(ratio[1::2], 0)
    return out.to(dtype)


def wallis_exact(m: int) -> tuple[Fraction, bool]:
    """Exact ``I_m`` for an integer ``m >= 0`` as ``(q, has_pi)``: ``I_m = q * pi/2`` or ``q`` (Derived in P15).

    ``q = (m-1)!!/m!!`` in exact rational arithmetic; ``has_pi`` is True for even ``m``
    (``I_{2n} = q pi/2``) and False for odd ``m`` (``I_{2n+1} = q``).
    """
    m = check_int(m, "m", ge=0)
    q = Fraction(1)
    for j in range(m, 1, -2):
        q *= Fraction(j - 1, j)
    return q, m % 2 == 0


def wallis_asymptotic(m: torch.Tensor, *, order: int = 0) -> torch.Tensor:
    """Large-``m`` expansion ``I_m ~ sqrt(pi/(2m)) (1 - 1/(4m) + 1/(32 m^2) + ...)`` (Derived in P15).

    ``order`` (0, 1 or 2) is the number of correction terms kept; the relative error is
    ``O(m^{-order-1})``. From ``Gamma(x+1/2)/Gamma(x+1) = x^{-1/2}(1 - 1/(8x) + 1/(128x^2) + ...)``
    at ``x = m/2``. Shapes: ``m`` any floating tensor, ``> 0``; output the same.
    """
    order = check_int(order, "order", ge=0, le=2)
    _check_m(m, gt=0.0)
    lead = torch.sqrt(math.pi / (2 * m))
    corr = torch.ones_like(m)
    if order >= 1:
        corr = corr - 1 / (4 * m)
    if order >= 2:
        corr = corr + 1 / (32 * m * m)
    return lead * corr


def wallis_partial_products(
    K: int, *, dtype: torch.dtype = F64, device: torch.device | str | None = None
) -> torch.Tensor:
    """Partial Wallis products ``P_k = prod_{j<=k} 4j^2 / (4j^2 - 1)`` for ``k = 1..K`` (Derived in P15).

    ``P_k -> pi/2`` from below, with ``pi/2 - P_k ~ pi/(8k)``. Accumulated as a cumulative sum of
    logarithms (``log1p(1/(4j^2 - 1))``) in float64, which keeps the rounding error at the level of
    ``eps * log K`` rather than ``eps * K``. Shapes: output ``(K,)``.
    """
    K = check_int(K, "K", ge=1)
    j = torch.arange(1, K + 1, dtype=F64, device=device)
    return torch.exp(torch.cumsum(torch.log1p(1 / (4 * j * j - 1)), 0)).to(dtype)


def srw_return_prob(n: torch.Tensor) -> torch.Tensor:
    """``P(S_{2n} = 0) = binom(2n, n) / 4^n = (2/pi) I_{2n}`` for a simple random walk (Derived in P15).

    ``S_{2n}`` is the position after ``2n`` independent +-1 steps. Evaluated as
    ``Gamma(n + 1/2) / (sqrt(pi) Gamma(n + 1))`` in log space (as :func:`wallis_integral`), so it
    works for huge ``n`` (and interpolates to real ``n > -1/2``); ``~ 1/sqrt(pi n)``.
    Shapes: ``n`` any floating tensor; output the same.
    """
    _check_m(n, "n", gt=-0.5)
    return torch.exp(_log_gamma_ratio_half(n.to(F64)) - _LOG_SQRT_PI).to(n.dtype)


def simulate_srw_return(
    n_max: int,
    num_walks: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Monte-Carlo ``P(S_{2n} = 0)`` for ``n = 1..n_max`` from ``num_walks`` simulated walks (Derived in P15).

    Each walk takes ``2 n_max`` independent +-1 steps (drawn on the CPU from ``generator``, then
    moved to ``device``); the result is the fraction of walks at the origin after ``2n`` steps.
    The same walks are reused for every ``n`` (one path per walk). Shapes: output ``(n_max,)``.
    """
    n_max = check_int(n_max, "n_max", ge=1)
    num_walks = check_int(num_walks, "num_walks", ge=1)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    bits = torch.randint(0, 2, (num_walks, 2 * n_max), generator=generator, dtype=torch.int16, device="cpu")
    bits = bits.to(device=device if device is not None else "cpu")
    pos = torch.cumsum(2 * bits - 1, dim=1, dtype=torch.int32)[:, 1::2]   # S_2, S_4, ..., S_{2 n_max}
    return (pos == 0).to(F64).mean(0)
