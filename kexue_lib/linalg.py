"""Rank, effective rank and triangular log-determinants of (attention) matrices (Derived in P04).

P04 (kexue.fm/archives/9529) argues that a causal attention matrix is always full rank because
it is lower-triangular with a positive diagonal, while a bidirectional one is built from an
``n x d`` times ``d x n`` product. Telling "full rank" from "numerically well spread" needs
three small tools:

* :func:`numerical_rank` counts singular values above ``rtol * sigma_max``;
* :func:`effective_rank` is the entropy effective rank of Roy and Vetterli (2007),
  ``exp(H(p))`` with ``p_i = sigma_i / sum_j sigma_j``: a smooth number between 1 and
  ``min(m, n)``;
* :func:`tri_logdet` / :func:`tri_slogdet` read the determinant of a triangular matrix off its
  diagonal, ``log|det M| = sum_i log|M_ii|``. For causal attention matrices this is exact
  where ``torch.linalg.slogdet`` (an LU factorisation with pivoting) is not: the matrices
  are so badly conditioned that LU's rounding errors swamp the true pivots.

All functions accept a batch ``(..., m, n)`` of matrices and work on the input's device and
dtype.
"""
from __future__ import annotations

import torch

from ._checks import check_real, check_tensor

__all__ = [
    "singular_values",
    "effective_rank",
    "effective_rank_sv",
    "numerical_rank",
    "numerical_rank_sv",
    "tri_slogdet",
    "tri_logdet",
]


def _check_matrix(M: object, name: str = "M", *, square: bool = False) -> torch.Tensor:
    M = check_tensor(M, name, min_ndim=2)
    if M.shape[-1] == 0 or M.shape[-2] == 0:
        raise ValueError(f"{name} must have non-empty matrix dimensions, got shape {tuple(M.shape)}")
    if square and M.shape[-1] != M.shape[-2]:
        raise ValueError(f"{name} must be square in its last two dimensions, got shape {tuple(M.shape)}")
    return M


def singular_values(M: torch.Tensor) -> torch.Tensor:
    """Singular values in descending order (Derived in P04).

    A validated wrapper of ``torch.linalg.svdvals``. Shapes: ``M`` ``(..., m, n)``; output
    ``(..., min(m, n))``.
    """
    M = _check_matrix(M)
    return torch.linalg.svdvals(M)


def _check_sv(s: object) -> torch.Tensor:
    s = check_tensor(s, "s", min_ndim=1)
    if s.shape[-1] == 0:
        raise ValueError("s must hold at least one singular value")
    if bool((s < 0).any()):
        raise ValueError("s must be non-negative (singular values)")
    return s


def effective_rank_sv(s: torch.Tensor) -> torch.Tensor:
    """Entropy effective rank from singular values ``s`` (any order): see :func:`effective_rank`.

    Use it to reuse one SVD for several summaries. Shapes: ``s`` ``(..., r)``; output ``(...)``.
    """
    s = _check_sv(s)
    total = s.sum(-1, keepdim=True)
    if bool((total == 0).any()):
        raise ValueError("M must not be an all-zero matrix (its effective rank is undefined)")
    p = s / total
    plogp = torch.where(p > 0, p * torch.log(torch.where(p > 0, p, torch.ones_like(p))), torch.zeros_like(p))
    return torch.exp(-plogp.sum(-1))


def effective_rank(M: torch.Tensor) -> torch.Tensor:
    """Entropy effective rank ``exp(-sum_i p_i log p_i)``, ``p_i = sigma_i / sum_j sigma_j`` (Derived in P04).

    Roy and Vetterli's effective rank: it equals ``r`` for a matrix with ``r`` equal non-zero
    singular values and lies in ``[1, min(m, n)]`` for every non-zero matrix. It ignores
    the overall scale of ``M`` and, unlike :func:`numerical_rank`, needs no tolerance: a
    tail of tiny singular values adds almost nothing. Terms with ``p_i = 0`` count as 0.

    Shapes: ``M`` ``(..., m, n)``; output ``(...)``. Raises ``ValueError`` for an all-zero matrix.
    """
    return effective_rank_sv(singular_values(M))


def numerical_rank_sv(s: torch.Tensor, *, rtol: float) -> torch.Tensor:
    """Number of singular values ``s_i > rtol * max(s)``: see :func:`numerical_rank`.

    Shapes: ``s`` ``(..., r)`` (any order); output ``(...)``, dtype ``torch.int64``.
    """
    s = _check_sv(s)
    rtol = check_real(rtol, "rtol", ge=0.0, lt=1.0)
    smax = s.amax(-1, keepdim=True)
    return ((s > rtol * smax) & (smax > 0)).sum(-1)


def numerical_rank(M: torch.Tensor, *, rtol: float | None = None) -> torch.Tensor:
    """Number of singular values ``sigma_i > rtol * sigma_max`` (Derived in P04).

    The default ``rtol = max(m, n) * eps(dtype)`` is NumPy's and PyTorch's ``matrix_rank``
    default. In exact arithmetic a triangular matrix with a non-zero diagonal has rank
    ``n``; in floating point its numerical rank can be smaller when it is badly conditioned,
    which is the point of P04's caveats. Returns 0 for an all-zero matrix.

    Shapes: ``M`` ``(..., m, n)``; output ``(...)``, dtype ``torch.int64``.
    """
    s = singular_values(M)
    if rtol is None:
        rtol = max(M.shape[-2:]) * torch.finfo(M.dtype).eps
    return numerical_rank_sv(s, rtol=rtol)


def _triangular_side(M: torch.Tensor, lower: bool | None) -> None:
    if lower is None:
        # each matrix of the batch may be lower or upper triangular on its own
        is_lower = (torch.triu(M, 1) == 0).all(-1).all(-1)
        is_upper = (torch.tril(M, -1) == 0).all(-1).all(-1)
        if bool((is_lower | is_upper).all()):
            return
        raise ValueError("M must be triangular (all entries above, or all below, the diagonal equal to 0)")
    if not isinstance(lower, bool):
        raise TypeError(f"lower must be a bool or None, got {type(lower).__name__}")
    off = torch.triu(M, 1) if lower else torch.tril(M, -1)
    if not bool((off == 0).all()):
        side = "above" if lower else "below"
        raise ValueError(f"M must be {'lower' if lower else 'upper'}-triangular: it has non-zero entries {side} the diagonal")


def tri_slogdet(M: torch.Tensor, *, lower: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Sign and ``log|det M|`` of a triangular matrix from its diagonal (Derived in P04).

    ``det M = prod_i M_ii``, so ``log|det M| = sum_i log|M_ii|`` and the sign is the product of
    the diagonal's signs. Same return convention as ``torch.linalg.slogdet``: a zero on the
    diagonal gives sign 0 and ``-inf``. ``lower=True``/``False`` demands a lower/upper
    triangular ``M``; ``None`` accepts either, matrix by matrix in a batch. A matrix that is not triangular raises
    ``ValueError`` (use ``torch.linalg.slogdet`` for general matrices).

    Shapes: ``M`` ``(..., n, n)``; outputs ``(...)`` each.
    """
    M = _check_matrix(M, square=True)
    _triangular_side(M, lower)
    diag = torch.diagonal(M, dim1=-2, dim2=-1)
    return torch.sign(diag).prod(-1), torch.log(diag.abs()).sum(-1)


def tri_logdet(M: torch.Tensor, *, lower: bool | None = None) -> torch.Tensor:
    """``log|det M| = sum_i log|M_ii|`` for a triangular ``M`` (Derived in P04).

    For a causal attention matrix every ``M_ii > 0``, so this is ``log det M`` itself. See
    :func:`tri_slogdet` for the sign and the checks. Shapes: ``M`` ``(..., n, n)``; output ``(...)``.
    """
    return tri_slogdet(M, lower=lower)[1]
