"""Cosine similarity of split vectors: local (per block) versus global (Derived in P26).

P26 (kexue.fm/archives/9931) asks whether large cosines on every block of two split vectors
(per layer, per parameter tensor) force a large cosine of the whole vectors. They do not:
with block vectors ``x = [x_1, ..., x_K]``, ``y = [y_1, ..., y_K]``, block norms
``a_k = ||x_k||``, ``b_k = ||y_k||`` and local cosines ``c_k = cos(x_k, y_k)``,

    cos(x, y) = cos(a, b) * sum_k w_k c_k,     w_k = a_k b_k / <a, b>,   sum_k w_k = 1,

so the global cosine is a weighted mean of the local ones shrunk by ``cos(a, b)``, the
agreement of the two block-norm profiles. Pearson's correlation is the cosine of centred
vectors, which gives Simpson's paradox the same algebra.

Every function keeps device and dtype of its inputs.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import torch

from ._checks import check_dim, check_real, check_tensor

__all__ = [
    "cosine",
    "BlockCosine",
    "blockwise_cosine",
    "pearson",
    "group_cross_products",
]


def _check_pair(x: object, y: object, dim: object) -> int:
    check_tensor(x, "x", min_ndim=1)
    check_tensor(y, "y", min_ndim=1)
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    d = check_dim(dim, x)
    if x.shape[d] == 0:
        raise ValueError(f"x must have at least one entry along dim={dim}, got shape {tuple(x.shape)}")
    return d


def _check_parts(xs: object, ys: object, part: str, kind: str, ndim: int | None) -> tuple[list, list]:
    """Validate two equally long, non-empty sequences of tensors (blocks or groups)."""
    if isinstance(xs, torch.Tensor) or isinstance(ys, torch.Tensor):
        raise TypeError(f"xs and ys must be sequences of {kind} (one per {part}), not a single tensor")
    xs, ys = list(xs), list(ys)
    if len(xs) == 0 or len(xs) != len(ys):
        raise ValueError(f"xs and ys must hold the same, non-zero number of {part}s, got {len(xs)} and {len(ys)}")
    for k, (xk, yk) in enumerate(zip(xs, ys)):
        check_tensor(xk, f"xs[{k}]", ndim=ndim)
        check_tensor(yk, f"ys[{k}]", ndim=ndim)
    return xs, ys


def cosine(x: torch.Tensor, y: torch.Tensor, *, dim: int = -1, eps: float = 0.0) -> torch.Tensor:
    """Cosine similarity ``<x, y> / (||x|| ||y|| + eps)`` along ``dim`` (Derived in P26).

    Shapes: ``x``, ``y`` ``(..., n, ...)`` (equal shapes); output drops ``dim``. With the default
    ``eps=0`` a zero vector raises ``ValueError`` (its cosine is undefined) instead of
    returning NaN; with ``eps > 0`` a zero vector gets cosine 0.
    """
    d = _check_pair(x, y, dim)
    eps = check_real(eps, "eps", ge=0.0)
    den = torch.linalg.vector_norm(x, dim=d) * torch.linalg.vector_norm(y, dim=d)
    if eps == 0.0 and bool((den == 0).any()):
        raise ValueError("x and y: a zero vector has no cosine; pass eps > 0 to map it to 0")
    return (x * y).sum(dim=d) / (den + eps)


class BlockCosine(NamedTuple):
    """Result of :func:`blockwise_cosine`; all fields are tensors on the inputs' device."""

    local: torch.Tensor     #: (K,) cosine of each block pair, 0 for a block with a zero side
    global_: torch.Tensor   #: () cosine of the concatenated vectors
    weights: torch.Tensor   #: (K,) w_k = a_k b_k / <a, b>, non-negative, summing to 1
    norm_cos: torch.Tensor  #: () cos(a, b) of the block-norm profiles a_k = ||x_k||, b_k = ||y_k||
    norms_x: torch.Tensor   #: (K,) a_k
    norms_y: torch.Tensor   #: (K,) b_k


def blockwise_cosine(xs: Sequence[torch.Tensor], ys: Sequence[torch.Tensor]) -> BlockCosine:
    """Local and global cosines of block vectors and the weights linking them (Derived in P26).

    ``xs`` and ``ys`` are sequences of K tensors (e.g. ``[p.grad for p in model.parameters()]``);
    block k pairs ``xs[k]`` with ``ys[k]`` (equal shapes, any rank, flattened). Returns
    :class:`BlockCosine` with

        cos(x, y) = norm_cos * sum_k weights_k * local_k,    weights_k = a_k b_k / <a, b>.

    A block where ``x_k`` or ``y_k`` is zero has no cosine of its own; it gets ``local = 0`` and
    ``weight = 0`` (it adds nothing to ``<x, y>``), so the identity still holds. Raises
    ``ValueError`` if every block has a zero side (then the global cosine is undefined).
    """
    xs, ys = _check_parts(xs, ys, "block", "tensors", None)
    for k, (xk, yk) in enumerate(zip(xs, ys)):
        if xk.shape != yk.shape:
            raise ValueError(f"xs[{k}] and ys[{k}] must have the same shape, got {tuple(xk.shape)} and {tuple(yk.shape)}")
        if xk.numel() == 0:
            raise ValueError(f"xs[{k}] must not be empty")
    dot = torch.stack([(xk * yk).sum() for xk, yk in zip(xs, ys)])          # <x_k, y_k>
    a = torch.stack([torch.linalg.vector_norm(xk) for xk in xs]).to(dot)    # ||x_k||
    b = torch.stack([torch.linalg.vector_norm(yk) for yk in ys]).to(dot)    # ||y_k||
    ab = a * b
    ab_sum = ab.sum()
    if not bool(ab_sum > 0):
        raise ValueError("xs and ys: every block has a zero side, so no cosine is defined")
    local = torch.where(ab > 0, dot / torch.where(ab > 0, ab, torch.ones_like(ab)), torch.zeros_like(ab))
    weights = ab / ab_sum
    norm_cos = ab_sum / (torch.linalg.vector_norm(a) * torch.linalg.vector_norm(b))
    global_ = dot.sum() / (torch.linalg.vector_norm(a) * torch.linalg.vector_norm(b))
    return BlockCosine(local, global_, weights, norm_cos, a, b)


def pearson(x: torch.Tensor, y: torch.Tensor, *, dim: int = -1) -> torch.Tensor:
    """Pearson correlation ``r = cos(x - mean(x), y - mean(y))`` along ``dim`` (Derived in P26).

    Shapes: ``x``, ``y`` ``(..., n, ...)``; output drops ``dim``. Raises ``ValueError`` if ``x``
    or ``y`` is constant along ``dim`` (zero variance, ``r`` undefined) or ``n < 2``.
    """
    d = _check_pair(x, y, dim)
    if x.shape[d] < 2:
        raise ValueError(f"x must have at least two entries along dim={dim}, got shape {tuple(x.shape)}")
    xc = x - x.mean(dim=d, keepdim=True)
    yc = y - y.mean(dim=d, keepdim=True)
    if bool((torch.linalg.vector_norm(xc, dim=d) == 0).any()) or bool((torch.linalg.vector_norm(yc, dim=d) == 0).any()):
        raise ValueError("x and y must not be constant along dim (Pearson's r is undefined)")
    return cosine(xc, yc, dim=d)


def group_cross_products(xs: Sequence[torch.Tensor], ys: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Split the pooled centred cross-product into within- and between-group parts (Derived in P26).

    For groups g with samples ``xs[g]``, ``ys[g]`` (1-D, equal lengths n_g) and pooled means
    ``xbar``, ``ybar``:

        sum_i (x_i - xbar)(y_i - ybar) = sum_g sum_{i in g} (x_i - xbar_g)(y_i - ybar_g)     [within]
                                       + sum_g n_g (xbar_g - xbar)(ybar_g - ybar)           [between]

    Returns ``(within, between)`` as 0-dim tensors. Simpson's paradox is a ``between`` term of
    the opposite sign that outweighs ``within``.
    """
    xs, ys = _check_parts(xs, ys, "group", "1-D tensors", 1)
    for g, (xg, yg) in enumerate(zip(xs, ys)):
        if xg.shape != yg.shape or xg.numel() == 0:
            raise ValueError(f"xs[{g}] and ys[{g}] must be non-empty with equal lengths, got {xg.numel()} and {yg.numel()}")
    xbar, ybar = torch.cat(xs).mean(), torch.cat(ys).mean()
    within = sum(((xg - xg.mean()) * (yg - yg.mean())).sum() for xg, yg in zip(xs, ys))
    between = sum(xg.numel() * (xg.mean() - xbar) * (yg.mean() - ybar) for xg, yg in zip(xs, ys))
    return within, between
