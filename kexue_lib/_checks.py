"""Argument validation shared by every public kexue_lib function.

Each helper raises ``TypeError`` (wrong kind of object) or ``ValueError`` (right kind,
wrong value) with a message that starts with the argument's name, so a reader sees at
once which argument was bad. None of them copies data; the finiteness check is one
reduction over the tensor.
"""
from __future__ import annotations

import math
from numbers import Integral, Real

import torch

__all__ = [
    "check_tensor",
    "check_dim",
    "check_real",
    "check_int",
]


def check_tensor(
    x: object,
    name: str,
    *,
    min_ndim: int = 0,
    ndim: int | None = None,
    floating: bool = True,
    finite: bool = True,
) -> torch.Tensor:
    """Check that ``x`` is a tensor of the expected rank, dtype and finiteness.

    Raises ``TypeError`` if ``x`` is not a ``torch.Tensor`` or (``floating=True``) not of a
    floating dtype; ``ValueError`` if its rank is wrong or (``finite=True``) it holds NaN/inf.
    Returns ``x`` unchanged.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if floating and not x.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype, got {x.dtype}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {tuple(x.shape)}")
    if x.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimension(s), got shape {tuple(x.shape)}")
    if finite and x.numel() > 0 and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def check_dim(dim: object, x: torch.Tensor, name: str = "dim") -> int:
    """Check that ``dim`` indexes a dimension of ``x``; return it as a non-negative int."""
    if isinstance(dim, bool) or not isinstance(dim, Integral):
        raise TypeError(f"{name} must be an int, got {type(dim).__name__}")
    nd = max(x.ndim, 1)
    if not -nd <= int(dim) < nd:
        raise ValueError(f"{name}={dim} is out of range for a tensor with {x.ndim} dimension(s)")
    return int(dim) % nd


def check_real(
    value: object,
    name: str,
    *,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
) -> float:
    """Check that ``value`` is a finite real number within the given bounds; return it as float."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    if gt is not None and not v > gt:
        raise ValueError(f"{name} must be > {gt}, got {v}")
    if ge is not None and not v >= ge:
        raise ValueError(f"{name} must be >= {ge}, got {v}")
    if lt is not None and not v < lt:
        raise ValueError(f"{name} must be < {lt}, got {v}")
    if le is not None and not v <= le:
        raise ValueError(f"{name} must be <= {le}, got {v}")
    return v


def check_int(value: object, name: str, *, ge: int | None = None, le: int | None = None) -> int:
    """Check that ``value`` is an integer within the given bounds; return it as int."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    v = int(value)
    if ge is not None and v < ge:
        raise ValueError(f"{name} must be >= {ge}, got {v}")
    if le is not None and v > le:
        raise ValueError(f"{name} must be <= {le}, got {v}")
    return v
