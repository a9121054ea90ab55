"""SquarePlus, SoftPlus and their derivatives: smooth rectifiers (Derived in P08).

P08 (kexue.fm/archives/8833, after Barron, arXiv:2112.11687) smooths
``ReLU(x) = (x + sqrt(x^2)) / 2`` by adding ``b > 0`` under the square root:

    SquarePlus(x; b) = (x + sqrt(x^2 + b)) / 2.

The textbook formula subtracts two nearly equal numbers when ``x << 0`` and returns 0 (all
digits lost) in float32 already for ``x ~ -1e4``. Every function here uses the
cancellation-free form instead: for ``x < 0`` multiply by the conjugate,

    SquarePlus(x; b) = b / (2 (sqrt(x^2 + b) - x)),

and compute ``sqrt(x^2 + b)`` as ``hypot(x, sqrt(b))`` so that ``x^2`` never overflows.
SoftPlus is ``logaddexp(x, 0)``, which neither overflows for large ``x`` nor rounds to 0 for
very negative ``x``. All functions are elementwise: any shape in, the same shape out, on the
input's device and dtype.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ._checks import check_real, check_tensor

__all__ = [
    "B_UPPER",
    "B_MINIMAX",
    "squareplus",
    "squareplus_grad",
    "squareplus_grad2",
    "softplus",
    "softplus_grad",
    "softplus_grad2",
    "SquarePlus",
]

#: Smallest ``b`` with SquarePlus >= SoftPlus everywhere: ``4 log^2 2`` (Derived in P08).
B_UPPER: float = 4.0 * math.log(2.0) ** 2
#: The post's min-max value of ``b`` (best uniform approximation of SoftPlus), as reported.
B_MINIMAX: float = 1.52382103


def _split(x: torch.Tensor, b: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return ``(xn, rn, xp, rp)``: ``xn = min(x, 0)``, ``xp = max(x, 0)``, ``r. = sqrt(x.^2 + b)``.

    Each branch only ever sees its own half-line, so both stay finite and well conditioned
    everywhere and ``torch.where`` never routes a NaN/inf gradient from the unused branch.
    """
    sqrt_b = math.sqrt(b)
    xn, xp = torch.clamp(x, max=0.0), torch.clamp(x, min=0.0)
    return xn, torch.hypot(xn, xn.new_tensor(sqrt_b)), xp, torch.hypot(xp, xp.new_tensor(sqrt_b))


def _validate(x: object, b: object) -> float:
    check_tensor(x, "x")
    return check_real(b, "b", gt=0.0)


def squareplus(x: torch.Tensor, *, b: float = 4.0) -> torch.Tensor:
    """SquarePlus ``(x + sqrt(x^2 + b)) / 2`` in cancellation-free form (Derived in P08).

    With ``r = sqrt(x^2 + b)``: ``b / (2 (r - x))`` for ``x < 0`` (the conjugate form) and
    ``(x + r) / 2`` for ``x >= 0``. Neither subtracts nearly equal numbers, so the relative
    error stays at a few ulps for every finite ``x``. ``b`` must be > 0 (``b = 0`` is ReLU:
    use ``torch.relu``). The default ``b = 4`` is JAX's and Keras's; it matches SoftPlus's
    curvature ``1/4`` at 0.

    Shapes: ``x`` any; output the same.
    """
    b = _validate(x, b)
    xn, rn, xp, rp = _split(x, b)
    sqrt_b = math.sqrt(b)
    # (sqrt(b)/2) * sqrt(b)/(r - x) rather than b/(2(r - x)): both branches then give exactly
    # sqrt(b)/2 next to 0, so rounding cannot make the function step down at the switch.
    return torch.where(x < 0, (sqrt_b / 2.0) * (sqrt_b / (rn - xn)), xp / 2.0 + rp / 2.0)


def squareplus_grad(x: torch.Tensor, *, b: float = 4.0) -> torch.Tensor:
    """First derivative ``(1 + x / sqrt(x^2 + b)) / 2`` in (0, 1) (Derived in P08).

    For ``x < 0`` it is evaluated as ``b / (2 r (r - x))`` (same conjugate trick), so it is
    accurate far into the negative tail. Shapes: ``x`` any; output the same.
    """
    b = _validate(x, b)
    xn, rn, xp, rp = _split(x, b)
    return torch.where(x < 0, b / (2.0 * rn * (rn - xn)), (1.0 + xp / rp) / 2.0)


def squareplus_grad2(x: torch.Tensor, *, b: float = 4.0) -> torch.Tensor:
    """Second derivative ``b / (2 (x^2 + b)^{3/2}) > 0``, so SquarePlus is convex (Derived in P08).

    Shapes: ``x`` any; output the same.
    """
    b = _validate(x, b)
    r = torch.hypot(x, x.new_tensor(math.sqrt(b)))
    return (b / (2.0 * r)) / r / r


def softplus(x: torch.Tensor) -> torch.Tensor:
    """SoftPlus ``log(1 + e^x)``, computed as ``logaddexp(x, 0)`` (Derived in P08).

    No overflow for large ``x`` and no rounding to 0 for very negative ``x`` (unlike
    ``log(1 + exp(x))``); unlike ``torch.nn.functional.softplus`` there is no linear cut-off
    threshold. Shapes: ``x`` any; output the same.
    """
    check_tensor(x, "x")
    return torch.logaddexp(x, torch.zeros_like(x))


def softplus_grad(x: torch.Tensor) -> torch.Tensor:
    """First derivative of SoftPlus: the logistic sigmoid ``1 / (1 + e^{-x})`` (Derived in P08)."""
    check_tensor(x, "x")
    return torch.sigmoid(x)


def softplus_grad2(x: torch.Tensor) -> torch.Tensor:
    """Second derivative of SoftPlus ``sigma(x) sigma(-x)``, 1/4 at 0 (Derived in P08)."""
    check_tensor(x, "x")
    return torch.sigmoid(x) * torch.sigmoid(-x)


class SquarePlus(nn.Module):
    """Module form of :func:`squareplus`: ``SquarePlus(b=4.0)(x)`` (Derived in P08).

    Args:
        b: the smoothing constant under the square root, a finite real > 0.

    Shape: input any, output the same.
    """

    def __init__(self, b: float = 4.0) -> None:
        super().__init__()
        self.b = check_real(b, "b", gt=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return squareplus(x, b=self.b)

    def extra_repr(self) -> str:
        return f"b={self.b:g}"
