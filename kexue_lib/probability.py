"""Softmax and its dense alternatives: maps from logits to probability vectors (Derived in P01).

P01 (kexue.fm/archives/10145) surveys maps ``R^n -> simplex`` that behave like a smoothed
``onehot(argmax(x))``. This module holds softmax with a temperature, its smooth-max partner
``logsumexp``, the softmax Jacobian, Taylor-softmax, top-k "Sparse Softmax", Perturb-Max by
deterministic quadrature, Gumbel-Max sampling, the AM-Softmax loss and the stop-gradient
surrogate loss. The sparse maps (sparsemax, entmax) live in :mod:`kexue_lib.sparsemax`.

Every map reduces over ``dim`` and keeps the other (batch) dimensions; new tensors take their
device and dtype from the inputs.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ._checks import check_dim, check_int, check_real, check_tensor

__all__ = [
    "softmax",
    "logsumexp",
    "softmax_jacobian",
    "taylor_exp",
    "taylor_softmax",
    "sparse_softmax",
    "sparse_softmax_loss",
    "perturb_max",
    "gumbel_max_sample",
    "am_softmax_loss",
    "grad_surrogate_loss",
]


def _check_x(x: object, dim: object, name: str = "x") -> int:
    """Validate logits ``x`` (floating, finite, >= 1 dim, non-empty along ``dim``); return dim.

    Finiteness is screened with one read-only reduction (a NaN or inf makes the sum non-finite);
    only if the sum is not finite (NaN/inf, or an overflow of huge finite values) does the exact
    elementwise check run and name the problem.
    """
    check_tensor(x, name, min_ndim=1, finite=False)
    if x.numel() and not bool(torch.isfinite(x.sum())):
        check_tensor(x, name, min_ndim=1, finite=True)
    d = check_dim(dim, x)
    if x.shape[d] == 0:
        raise ValueError(f"{name} must have at least one entry along dim={dim}, got shape {tuple(x.shape)}")
    return d


def _check_target(target: object, x: torch.Tensor, dim: int) -> torch.Tensor:
    """Validate class indices: integer tensor of ``x``'s shape without ``dim``, values in [0, n)."""
    check_tensor(target, "target", floating=False, finite=False)
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise TypeError(f"target must have an integer dtype, got {target.dtype}")
    want = x.shape[:dim] + x.shape[dim + 1:]
    if target.shape != want:
        raise ValueError(f"target must have shape {tuple(want)} (x's shape without dim), got {tuple(target.shape)}")
    n = x.shape[dim]
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= n):
        raise ValueError(f"target values must lie in [0, {n}), got range [{int(target.min())}, {int(target.max())}]")
    return target.to(device=x.device, dtype=torch.long)


def softmax(x: torch.Tensor, *, temperature: float = 1.0, dim: int = -1) -> torch.Tensor:
    """Softmax with a temperature: ``p_i = exp(x_i / T) / sum_j exp(x_j / T)`` (Derived in P01).

    Computed stably (the maximum is subtracted first). ``T -> 0+`` gives ``onehot(argmax x)``,
    ``T -> inf`` the uniform vector. Shapes: ``x`` ``(..., n, ...)``; output the same.
    """
    dim = _check_x(x, dim)
    temperature = check_real(temperature, "temperature", gt=0.0)
    return torch.softmax(x / temperature, dim=dim)


def logsumexp(x: torch.Tensor, *, temperature: float = 1.0, dim: int = -1) -> torch.Tensor:
    """Smooth maximum ``T * log sum_i exp(x_i / T)`` (Derived in P01).

    ``max(x) <= T logsumexp(x / T) <= max(x) + T log n``, so it tends to ``max(x)`` as
    ``T -> 0+``. Shapes: ``x`` ``(..., n, ...)``; output drops ``dim``.
    """
    dim = _check_x(x, dim)
    temperature = check_real(temperature, "temperature", gt=0.0)
    return temperature * torch.logsumexp(x / temperature, dim=dim)


def softmax_jacobian(p: torch.Tensor, *, dim: int = -1) -> torch.Tensor:
    """Jacobian of softmax written through its output: ``J = diag(p) - p p^T`` (Derived in P01).

    ``J_ij = dp_i / dx_j = p_i delta_ij - p_i p_j``; ``(1/2) sum_ij |J_ij| = 1 - sum_i p_i^2``.
    Shapes: ``p`` ``(..., n, ...)`` with ``n`` at ``dim``; output ``(*batch, n, n)`` where
    ``batch`` are ``p``'s other dimensions in order.
    """
    dim = _check_x(p, dim, name="p")
    pl = p.movedim(dim, -1)
    return torch.diag_embed(pl) - pl.unsqueeze(-1) * pl.unsqueeze(-2)


def taylor_exp(x: torch.Tensor, *, order: int) -> torch.Tensor:
    """Truncated exponential ``f_k(x) = sum_{m=0}^k x^m / m!`` elementwise (Derived in P01).

    For even ``k`` it is positive on the whole real line; for odd ``k`` it has a real root.
    Evaluated by Horner's rule. Shapes: any; output the same.
    """
    check_tensor(x, "x")
    order = check_int(order, "order", ge=0)
    acc = torch.ones_like(x)
    for m in range(order, 0, -1):
        acc = 1 + acc * x / m
    return acc


def taylor_softmax(x: torch.Tensor, *, order: int = 2, dim: int = -1) -> torch.Tensor:
    """Taylor-softmax ``p_i = f_k(x_i) / sum_j f_k(x_j)`` for even ``k`` (Derived in P01).

    ``f_k`` is :func:`taylor_exp`. Polynomial instead of exponential growth gives a heavier
    tail than softmax. Unlike softmax it is neither shift-invariant nor order-preserving
    (``f_k`` decreases for ``x`` below its minimum, e.g. ``x < -1`` for ``k = 2``).
    Shapes: ``x`` ``(..., n, ...)``; output the same. ``order`` must be a positive even int.
    """
    dim = _check_x(x, dim)
    order = check_int(order, "order", ge=2)
    if order % 2:
        raise ValueError(f"order must be even (odd orders give negative 'probabilities'), got {order}")
    f = taylor_exp(x, order=order)
    return f / f.sum(dim, keepdim=True)


def _check_k(k: object, x: torch.Tensor, dim: int) -> int:
    return check_int(k, "k", ge=1, le=x.shape[dim])


def sparse_softmax(x: torch.Tensor, *, k: int, dim: int = -1) -> torch.Tensor:
    """Top-k "Sparse Softmax": softmax over the ``k`` largest logits, zero elsewhere (Derived in P01).

    ``p_i = exp(x_i) / sum_{j in Omega_k} exp(x_j)`` for ``i in Omega_k``, else 0 (Su,
    arXiv:2112.12433). Among tied logits at the cut, ``torch.topk`` decides which are kept.
    Logits outside ``Omega_k`` receive no gradient. Shapes: ``x`` ``(..., n, ...)``; output the same.
    """
    dim = _check_x(x, dim)
    k = _check_k(k, x, dim)
    vals, idx = x.topk(k, dim=dim)
    return torch.zeros_like(x).scatter(dim, idx, torch.softmax(vals, dim=dim))


def sparse_softmax_loss(x: torch.Tensor, target: torch.Tensor, *, k: int, dim: int = -1) -> torch.Tensor:
    """Sparse-softmax cross-entropy ``log sum_{i in Omega_k} exp(x_i) - x_t`` (Derived in P01).

    Equals ``-log sparse_softmax(x)_t`` when ``t`` is among the top ``k``. Shapes: ``x``
    ``(..., n, ...)``; ``target`` int of ``x``'s shape without ``dim``; output ``target``'s shape.
    """
    dim = _check_x(x, dim)
    k = _check_k(k, x, dim)
    target = _check_target(target, x, dim)
    vals, _ = x.topk(k, dim=dim)
    return torch.logsumexp(vals, dim=dim) - x.gather(dim, target.unsqueeze(dim)).squeeze(dim)


_NOISES = ("normal", "gumbel")


def perturb_max(x: torch.Tensor, *, noise: str = "normal", n_quad: int = 256, dim: int = -1) -> torch.Tensor:
    """Perturb-Max ``p_i = P[argmax(x + eps) = i]`` with i.i.d. noise, by quadrature (Derived in P01).

    ``p_i = E_eps[ prod_{j != i} Phi(x_i - x_j + eps) ]`` with ``Phi`` the noise CDF. The
    expectation is a deterministic midpoint rule in probability space:
    ``eps_m = Phi^{-1}((m - 1/2) / M)``, ``m = 1..M`` (``M = n_quad``), so the endpoints
    ``Phi^{-1}(0), Phi^{-1}(1)`` are never evaluated. The result is *not* renormalised, so its sum
    measures the quadrature error. ``noise="gumbel"`` reproduces softmax (Gumbel-Max);
    ``"normal"`` has no closed form. Memory ``O(n^2 M)`` per row: meant for small ``n``.

    Shapes: ``x`` ``(..., n, ...)``; output the same.
    """
    dim = _check_x(x, dim)
    if noise not in _NOISES:
        raise ValueError(f"noise must be one of {_NOISES}, got {noise!r}")
    n_quad = check_int(n_quad, "n_quad", ge=1)
    t = (torch.arange(n_quad, device=x.device, dtype=torch.float64) + 0.5) / n_quad
    if noise == "normal":
        eps = torch.special.ndtri(t).to(x.dtype)
        log_cdf = torch.special.log_ndtr
    else:
        eps = (-torch.log(-torch.log(t))).to(x.dtype)
        log_cdf = lambda u: -torch.exp(-u)  # noqa: E731  (Gumbel CDF exp(-exp(-u)))
    xl = x.movedim(dim, -1)
    diff = xl.unsqueeze(-1) - xl.unsqueeze(-2)                 # (..., n, n): x_i - x_j
    logs = log_cdf(diff.unsqueeze(-1) + eps)                  # (..., n, n, M)
    log_prod = logs.sum(-2) - log_cdf(eps)                    # drop the j = i factor Phi(eps)
    return log_prod.exp().mean(-1).movedim(-1, dim)


def gumbel_max_sample(
    x: torch.Tensor, num_samples: int, *, generator: torch.Generator | None = None, dim: int = -1
) -> torch.Tensor:
    """Draw ``argmax(x + g)`` with i.i.d. standard Gumbel ``g = -log(-log U)`` (Derived in P01).

    The indices are distributed as ``softmax(x)`` (Gumbel-Max trick). Noise is drawn on the CPU
    from ``generator`` (float64) and moved to ``x``'s device, so CPU and GPU runs agree.
    Shapes: ``x`` ``(..., n, ...)``; output int64 ``(num_samples, *x.shape without dim)``.
    """
    dim = _check_x(x, dim)
    num_samples = check_int(num_samples, "num_samples", ge=1)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    u = torch.rand((num_samples, *x.shape), generator=generator, dtype=torch.float64, device="cpu")
    u = u.clamp_(min=torch.finfo(torch.float64).tiny)
    g = (-torch.log(-torch.log(u))).to(device=x.device, dtype=x.dtype)
    return (x.unsqueeze(0) + g).argmax(dim + 1)


def am_softmax_loss(
    z: torch.Tensor,
    centers: torch.Tensor,
    target: torch.Tensor,
    *,
    margin: float = 0.35,
    temperature: float = 1 / 30,
) -> torch.Tensor:
    """Additive-margin softmax loss (AM-Softmax) (Derived in P01).

    ``L = -log( e^{(cos_t - m)/T} / (e^{(cos_t - m)/T} + sum_{j != t} e^{cos_j / T}) )`` with
    ``cos_j = cos(z, c_j)``: the target must beat every other class by the margin ``m/T`` in
    logit units. Defaults ``m = 0.35``, ``T = 1/30`` (scale ``s = 30``) follow the AM-Softmax
    paper (Wang et al., arXiv:1801.05599); the post gives no values.

    Shapes: ``z`` ``(B, d)``, ``centers`` ``(n, d)``, ``target`` int ``(B,)``; output ``(B,)``.
    """
    check_tensor(z, "z", ndim=2)
    check_tensor(centers, "centers", ndim=2)
    if centers.shape[1] != z.shape[1]:
        raise ValueError(f"centers must have {z.shape[1]} columns like z, got shape {tuple(centers.shape)}")
    margin = check_real(margin, "margin", ge=0.0)
    temperature = check_real(temperature, "temperature", gt=0.0)
    cos = F.normalize(z, dim=1) @ F.normalize(centers, dim=1).T          # (B, n)
    target = _check_target(target, cos, 1)
    logits = (cos - margin * F.one_hot(target, cos.shape[1]).to(cos.dtype)) / temperature
    return F.cross_entropy(logits, target, reduction="none")


def grad_surrogate_loss(p: torch.Tensor, x: torch.Tensor, target: torch.Tensor, *, dim: int = -1) -> torch.Tensor:
    """Surrogate loss ``sg(p - onehot(t)) . x`` whose gradient in ``x`` is ``p - onehot(t)`` (P01).

    ``sg`` is stop-gradient (``detach``). Only the gradient is meaningful; the value can have
    either sign. (The post places ``sg`` on ``x`` instead, which gives the gradient
    ``J_p^T x``; see the P01 notebook.) Shapes: ``p`` and ``x`` ``(..., n, ...)``; ``target``
    int of their shape without ``dim``; output ``target``'s shape.
    """
    dim = _check_x(x, dim)
    _check_x(p, dim, name="p")
    if p.shape != x.shape:
        raise ValueError(f"p must have x's shape {tuple(x.shape)}, got {tuple(p.shape)}")
    target = _check_target(target, x, dim)
    onehot = torch.zeros_like(p).scatter(dim, target.unsqueeze(dim), 1.0)
    return ((p - onehot).detach() * x).sum(dim)
