"""How far can an attention row concentrate? The l1/l2 sparsity of attention rows (Derived in P25).

P25 (kexue.fm/archives/9889) measures the concentration of an attention row
``a = (a_1, ..., a_n)`` by the scale-invariant l1/l2 ratio of P37::

    S(a) = mean_j |a_j| / sqrt(mean_j a_j^2) = ||a||_1 / (sqrt(n) ||a||_2)   in [1/sqrt(n), 1],

smaller meaning sparser (1 for a constant row, ``1/sqrt(n)`` for a one-hot row). For a row
``a_j = f(q . k_j)`` with i.i.d. keys and ``n -> inf`` the means become expectations over one
key. With Gaussian keys ``k = mu + sigma * eps`` the score is ``X = beta + gamma * Z``, ``Z ~ N(0, 1)``,
``beta = q . mu``, ``gamma = sigma ||q||``, and

* :func:`S_exp`       ``f = exp`` (softmax):          ``S = exp(-gamma^2 / 2)``, free of ``beta``;
* :func:`S_relu2`     ``f = relu^2`` (original GAU):  a function of ``r = beta / gamma`` only;
* :func:`S_identity`  ``f = id`` (bare linear):        ``S >= sqrt(2 / pi)``;
* :func:`S_linear`    non-negative kernel features:    ``(1 + q'Sq / (q'mu)^2)^(-1/2)``;
* :func:`S_linear_iid` i.i.d. feature components:     ``(1 + (sd/mean * ||q||_2/||q||_1)^2)^(-1/2)``;
* :func:`S_decay`     the fixed row ``(lam^(n-1), ..., lam, 1)`` of a decaying linear RNN.

:func:`gaussian_feature_moments` supplies ``mu`` and ``cov`` for :func:`S_linear` when the keys
are Gaussian with independent components and the feature map acts elementwise.

Empirical counterparts: :func:`row_sparsity` (the measure itself, reusing
``kexue_lib.sparsity.s_star``), :func:`kernel_rows` (rows ``f(scale q . k_j)``) and
:func:`linear_attention_rows` (rows of non-negative kernel linear attention).

Closed forms accept Python numbers, NumPy arrays or tensors (broadcast together) and return a
tensor on the inputs' device; Python numbers and NumPy arrays become float64.
"""
from __future__ import annotations

import math
from numbers import Real
from typing import Callable

import numpy as np
import torch

from ._checks import check_dim, check_int, check_real, check_tensor
from .attention import FEATURE_MAPS, resolve_feature_map  # the shared feature maps of linear attention (P04)
from .sparsity import s_star

__all__ = [
    "row_sparsity",
    "norm_ratio",
    "S_exp",
    "S_relu2",
    "S_identity",
    "S_linear",
    "S_linear_iid",
    "S_decay",
    "S_decay_bound",
    "kernel_rows",
    "linear_attention_rows",
    "gaussian_feature_moments",
    "FEATURE_MAPS",
    "KERNELS",
]

_SQRT_HALF_PI = math.sqrt(math.pi / 2)


# ----------------------------------------------------------------------------- helpers
def _as_tensor(x: object, name: str) -> torch.Tensor:
    """A finite floating tensor from a number, a NumPy array or a tensor (numbers -> float64)."""
    if isinstance(x, torch.Tensor):
        return check_tensor(x, name)
    if isinstance(x, (bool, np.bool_, str)):
        raise TypeError(f"{name} must be a real number, an array or a tensor, got {type(x).__name__}")
    if isinstance(x, Real):
        return torch.tensor(check_real(x, name), dtype=torch.float64)
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a real number, an array or a tensor, got {type(x).__name__}") from err
    return check_tensor(torch.from_numpy(arr), name)


def _pair(beta: object, gamma: object, *, gamma_zero_ok: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate and broadcast ``beta`` (real) and ``gamma`` (> 0, or >= 0 if allowed)."""
    b = _as_tensor(beta, "beta")
    g = _as_tensor(gamma, "gamma")
    if b.device != g.device:
        raise ValueError(f"beta and gamma must be on the same device, got {b.device} and {g.device}")
    if g.numel() and bool((g < 0).any() if gamma_zero_ok else (g <= 0).any()):
        raise ValueError(f"gamma must be {'>= 0' if gamma_zero_ok else '> 0'} (gamma = sigma * ||q||)")
    dtype = torch.promote_types(b.dtype, g.dtype)
    b, g = torch.broadcast_tensors(b.to(dtype), g.to(dtype))
    return b, g


def _work_dtype(x: torch.Tensor) -> torch.dtype:
    """float64 for the internal arithmetic wherever the device supports it."""
    return torch.float32 if x.device.type == "mps" else torch.float64


# ----------------------------------------------------------------------------- the measure
def row_sparsity(a: torch.Tensor, *, dim: int = -1) -> torch.Tensor:
    """The l1/l2 sparsity ``S(a) = mean|a| / sqrt(mean a^2) = ||a||_1 / (sqrt(n) ||a||_2)`` (P25, P37).

    In ``[1/sqrt(n), 1]``: 1 for a constant row, ``1/sqrt(n)`` for a one-hot row; smaller is
    sparser. Scale-invariant, so rows need not be normalised and may be signed. This is
    ``kexue_lib.sparsity.s_star`` with ``q=1, p=2`` (overflow-safe: rows are divided by their
    max first). Applied to i.i.d. samples of ``f(X)`` it is the Monte Carlo estimate of
    ``E|f(X)| / sqrt(E f(X)^2)``. Shapes: ``a`` ``(..., n, ...)``; output drops ``dim``.
    An all-zero row raises ``ValueError``.
    """
    return s_star(a, q=1.0, p=2.0, dim=dim)


def norm_ratio(q: torch.Tensor, *, dim: int = -1) -> torch.Tensor:
    """``||q||_2 / ||q||_1``, which lies in ``[1/sqrt(d), 1]`` (P25).

    The lower end is reached by a constant vector, the upper end by a one-hot vector; the
    ratio never exceeds 1, whatever ``d`` (the post's "maximum sqrt(d)" belongs to the
    reciprocal). Shapes: ``q`` ``(..., d, ...)``; output drops ``dim``.
    """
    check_tensor(q, "q", min_ndim=1)
    d = check_dim(dim, q)
    l1 = q.abs().sum(dim=d)
    if q.numel() and bool((l1 == 0).any()):
        raise ValueError("q must not be the zero vector along dim")
    return torch.linalg.vector_norm(q, ord=2, dim=d) / l1


# ----------------------------------------------------------------------------- closed forms
def S_exp(beta: object, gamma: object) -> torch.Tensor:
    """Limit sparsity of softmax rows: ``S = exp(-gamma^2 / 2)`` (Derived in P25).

    With ``X = beta + gamma Z``: ``E e^X = e^(beta + gamma^2/2)`` and ``E e^(2X) = e^(2 beta + 2 gamma^2)``,
    so ``S = E e^X / sqrt(E e^(2X)) = e^(-gamma^2/2)``, independent of ``beta``. ``beta`` only
    sets the broadcast shape and is validated. ``gamma >= 0``.
    """
    b, g = _pair(beta, gamma, gamma_zero_ok=True)
    return torch.exp(-0.5 * g * g) + 0 * b


def S_relu2(beta: object, gamma: object) -> torch.Tensor:
    """Limit sparsity of ``relu^2`` (original GAU) rows, a function of ``r = beta / gamma`` (P25).

    With ``Phi``, ``phi`` the standard normal cdf and pdf::

        E[X_+^2] / gamma^2 = (1 + r^2) Phi(r) + r phi(r),
        E[X_+^4] / gamma^4 = (r^4 + 6 r^2 + 3) Phi(r) + (r^3 + 5 r) phi(r),
        S = E[X_+^2] / sqrt(E[X_+^4]).

    ``S -> 1`` as ``r -> +inf`` and ``S -> 0`` only as ``r -> -inf`` (a negative bias). For
    ``r < 0`` the common factor ``phi(r)`` is taken out with the scaled complementary error
    function, so nothing underflows; for ``r < -8``, where that bracket would cancel, an
    asymptotic series in ``1/r^2`` is used. Computed in float64 (relative error below about
    ``1e-8`` everywhere, ``1e-13`` for ``r >= -4``). ``gamma > 0``.
    """
    b, g = _pair(beta, gamma, gamma_zero_ok=False)
    wd = _work_dtype(b)
    r = b.to(wd) / g.to(wd)
    # r >= 0: every term is positive.
    rp = r.clamp(min=0)
    cdf, pdf = torch.special.ndtr(rp), torch.exp(-0.5 * rp * rp) / math.sqrt(2 * math.pi)
    num_p = (1 + rp * rp) * cdf + rp * pdf
    den_p = (rp**4 + 6 * rp * rp + 3) * cdf + (rp**3 + 5 * rp) * pdf
    s_pos = num_p / torch.sqrt(den_p)
    # r < 0: Phi(r) = phi(r) * m(r) with the Mills-type ratio m(r) = sqrt(pi/2) erfcx(-r / sqrt 2).
    rn = r.clamp(max=0)
    m = _SQRT_HALF_PI * torch.special.erfcx(-rn / math.sqrt(2))
    num_n = (1 + rn * rn) * m + rn
    den_n = (rn**4 + 6 * rn * rn + 3) * m + rn**3 + 5 * rn
    sqrt_pdf = torch.exp(-0.25 * rn * rn) / (2 * math.pi) ** 0.25
    s_neg = sqrt_pdf * num_n / torch.sqrt(den_n)
    # r < -8: the bracket cancels badly; use the asymptotic series of E[X_+^k] / phi(r) instead.
    t = (-r).clamp(min=_SERIES_FROM)
    u = 1 / (t * t)
    p2, p4 = _horner(_SERIES[2], u), _horner(_SERIES[4], u)
    s_far = torch.exp(-0.25 * t * t) / (2 * math.pi) ** 0.25 * p2 / torch.sqrt(t * p4)
    return torch.where(r >= 0, s_pos, torch.where(r > -_SERIES_FROM, s_neg, s_far)).to(b.dtype)


#: For r < -8, E[(Z + r)_+^k] = phi(r) t^-(k+1) sum_j (-1/2)^j (k+2j)!/j! t^(-2j), t = -r (asymptotic
#: in 1/t; its smallest term near j = t^2/2 is below 1e-14 of the first for t >= 8).
_SERIES_FROM = 8.0
_SERIES = {k: [(-0.5) ** j * math.factorial(k + 2 * j) / math.factorial(j) for j in range(30)] for k in (2, 4)}


def _horner(coef: list[float], u: torch.Tensor) -> torch.Tensor:
    out = torch.full_like(u, coef[-1])
    for c in reversed(coef[:-1]):
        out = out * u + c
    return out


def S_identity(beta: object, gamma: object) -> torch.Tensor:
    """Limit sparsity of bare linear attention ``f(x) = x`` (Derived in P25)::

        E|X| = gamma sqrt(2/pi) e^(-beta^2 / (2 gamma^2)) + beta erf(beta / (sqrt(2) gamma)),
        E X^2 = beta^2 + gamma^2,   S = E|X| / sqrt(E X^2).

    Even in ``beta``, a function of ``r = beta / gamma`` only, with minimum ``sqrt(2/pi)`` at
    ``r = 0`` and ``S -> 1`` as ``|r| -> inf``: such rows never concentrate. ``gamma > 0``.
    """
    b, g = _pair(beta, gamma, gamma_zero_ok=False)
    r = b / g
    e_abs = math.sqrt(2 / math.pi) * torch.exp(-0.5 * r * r) + r * torch.erf(r / math.sqrt(2))
    return e_abs / torch.sqrt(1 + r * r)


def S_linear(q_feat: torch.Tensor, mu: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    """Limit sparsity of non-negative kernel linear attention ``a_j prop. q~ . k~_j`` (Derived in P25).

    With ``mu``, ``cov`` the mean and covariance of the key features ``k~`` (exact, no
    Gaussian assumption)::

        S = q~'mu / sqrt(q~'(mu mu' + cov) q~) = (1 + q~' cov q~ / (q~'mu)^2)^(-1/2).

    If ``mu`` and ``cov`` are the sample mean and the biased (``1/n``) sample covariance of the
    very features in a row, the identity holds exactly for that finite row.
    Shapes: ``q_feat`` ``(..., d)``, ``mu`` ``(..., d)``, ``cov`` ``(..., d, d)`` (broadcast) -> ``(...)``.
    Needs ``q~'mu > 0`` (true for non-negative features that are not all zero).
    """
    check_tensor(q_feat, "q_feat", min_ndim=1)
    check_tensor(mu, "mu", min_ndim=1)
    check_tensor(cov, "cov", min_ndim=2)
    d = q_feat.shape[-1]
    if mu.shape[-1] != d or cov.shape[-2:] != (d, d):
        raise ValueError(f"mu must end in ({d},) and cov in ({d}, {d}), got {tuple(mu.shape)} and {tuple(cov.shape)}")
    signal = (q_feat * mu).sum(-1)
    if bool((signal <= 0).any()):
        raise ValueError("q_feat . mu must be > 0 (non-negative features, not all zero)")
    noise = torch.einsum("...i,...ij,...j->...", q_feat, cov, q_feat)
    if bool((noise < -1e-12 * signal**2).any()):
        raise ValueError("cov must be positive semi-definite (q_feat' cov q_feat < 0)")
    return torch.rsqrt(1 + noise.clamp(min=0) / signal**2)


def S_linear_iid(q_feat: torch.Tensor, *, mean: object, std: object) -> torch.Tensor:
    """:func:`S_linear` when the ``d`` key-feature components are i.i.d. (Derived in P25).

    ``mu = mean * 1`` and ``cov = std^2 I`` give ``S = (1 + (std/mean * ||q~||_2 / ||q~||_1)^2)^(-1/2)``.
    Since ``||q~||_2 / ||q~||_1 <= 1`` (see :func:`norm_ratio`), ``S >= (1 + (std/mean)^2)^(-1/2)`` for
    every ``d``: a one-hot ``q~`` is the best case. Shapes: ``q_feat`` ``(..., d)`` -> ``(...)``;
    ``mean > 0``, ``std >= 0`` scalars.
    """
    mean = check_real(mean, "mean", gt=0)
    std = check_real(std, "std", ge=0)
    check_tensor(q_feat, "q_feat", min_ndim=1)
    if bool((q_feat < 0).any()):
        raise ValueError("q_feat must be non-negative (features of a non-negative kernel)")
    c = std / mean * norm_ratio(q_feat, dim=-1)
    return torch.rsqrt(1 + c * c)


def S_decay(lam: object, n: int) -> torch.Tensor:
    """Sparsity of the decay row ``(lam^(n-1), ..., lam, 1)`` of a linear RNN (Derived in P25)::

        S = sqrt( (1 - lam^n)(1 + lam) / (n (1 - lam)(1 + lam^n)) ),   0 < lam <= 1,

    equal to 1 at ``lam = 1`` and ``-> 0`` as ``n -> inf`` for ``lam < 1`` (like
    ``sqrt((1 + lam) / (n (1 - lam)))``). Computed with ``expm1``/``log1p`` so ``lam`` near 1 is
    accurate. ``lam``: number, array or tensor; ``n >= 1`` an int.
    """
    lam_t = _as_tensor(lam, "lam")
    n = check_int(n, "n", ge=1)
    if lam_t.numel() and bool(((lam_t <= 0) | (lam_t > 1)).any()):
        raise ValueError("lam must lie in (0, 1]")
    wd = _work_dtype(lam_t)
    x = lam_t.to(wd)
    log_lam = torch.log(x)
    lam_n = torch.exp(n * log_lam)
    # geometric sum (1 - lam^n) / (1 - lam) = expm1(n log lam) / expm1(log lam); n at lam = 1
    safe = torch.where(x < 1, log_lam, torch.full_like(log_lam, -1.0))
    geo = torch.where(x < 1, torch.expm1(n * safe) / torch.expm1(safe), torch.full_like(x, float(n)))
    return torch.sqrt(geo * (1 + x) / (n * (1 + lam_n))).to(lam_t.dtype)


def S_decay_bound(lam: object, n: int) -> torch.Tensor:
    """The post's upper bound ``sqrt((1 + lam) / (n (1 - lam)(1 + lam^n)))`` on :func:`S_decay`, ``0 < lam < 1``."""
    lam_t = _as_tensor(lam, "lam")
    n = check_int(n, "n", ge=1)
    if lam_t.numel() and bool(((lam_t <= 0) | (lam_t >= 1)).any()):
        raise ValueError("lam must lie in (0, 1) for the bound")
    return torch.sqrt((1 + lam_t) / (n * (1 - lam_t) * (1 + lam_t**n)))


# ----------------------------------------------------------------------------- empirical rows
#: Named score functions for :func:`kernel_rows`.
KERNELS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "exp": torch.exp,
    "relu2": lambda x: torch.relu(x) ** 2,
    "identity": lambda x: x,
}

#: Named non-negative feature maps for :func:`linear_attention_rows`.


def _check_qk(q: object, k: object) -> None:
    check_tensor(q, "q", min_ndim=2)
    check_tensor(k, "k", min_ndim=2)
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must share the last dimension, got {q.shape[-1]} and {k.shape[-1]}")
    if q.dtype != k.dtype or q.device != k.device:
        raise ValueError("q and k must have the same dtype and device")


def kernel_rows(q: torch.Tensor, k: torch.Tensor, f: str | Callable[[torch.Tensor], torch.Tensor] = "exp",
                *, scale: float = 1.0) -> torch.Tensor:
    """Attention rows ``a_ij = f(scale * q_i . k_j)`` (P25's ``a_j prop. f(q . k_j)``).

    ``f`` is ``"exp"`` (returned as ``torch.softmax``, i.e. normalised and overflow-free),
    ``"relu2"``, ``"identity"`` or a callable applied elementwise (returned unnormalised;
    :func:`row_sparsity` does not care). Shapes: ``q`` ``(..., m, d)``, ``k`` ``(..., n, d)`` ->
    ``(..., m, n)``.
    """
    _check_qk(q, k)
    scale = check_real(scale, "scale")
    s = scale * (q @ k.transpose(-2, -1))
    if isinstance(f, str):
        if f not in KERNELS:
            raise ValueError(f"f must be one of {tuple(KERNELS)} or a callable, got {f!r}")
        if f == "exp":
            return torch.softmax(s, dim=-1)
        return KERNELS[f](s)
    if not callable(f):
        raise TypeError(f"f must be a str or a callable, got {type(f).__name__}")
    return f(s)


def linear_attention_rows(q: torch.Tensor, k: torch.Tensor,
                          feature_map: str | Callable[[torch.Tensor], torch.Tensor] = "elu1") -> torch.Tensor:
    """Rows of non-negative kernel linear attention, ``a_ij = phi(q_i) . phi(k_j) / sum_l phi(q_i) . phi(k_l)``.

    ``feature_map`` is ``"elu1"`` (``elu + 1``), ``"relu"``, ``"softplus"`` or a callable with
    non-negative output. Rows sum to one. Shapes: ``q`` ``(..., m, d)``, ``k`` ``(..., n, d)`` ->
    ``(..., m, n)``. Derived in P25 (the row whose sparsity :func:`S_linear` predicts).
    """
    _check_qk(q, k)
    phi = resolve_feature_map(feature_map)
    fq, fk = phi(q), phi(k)
    if bool((fq < 0).any()) or bool((fk < 0).any()):
        raise ValueError("feature_map must return non-negative features")
    a = fq @ fk.transpose(-2, -1)
    z = a.sum(-1, keepdim=True)
    if bool((z <= 0).any()):
        raise ValueError("a row of phi(q) phi(k)^T is all zero; the normalised row is undefined")
    return a / z


def gaussian_feature_moments(mu: torch.Tensor, sigma: float,
                             feature_map: str | Callable[[torch.Tensor], torch.Tensor] = "elu1",
                             *, nodes: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of ``phi(mu_i + sigma Z)``, ``Z ~ N(0, 1)``, for each component ``i`` (P25).

    For keys ``k ~ N(mu, sigma^2 I)`` and an elementwise feature map the components of
    ``phi(k)`` are independent, so :func:`S_linear` needs ``cov = diag(var)``. With
    ``X = m + sigma Z``, ``r = m / sigma`` and ``Phi``, ``phi`` the standard normal cdf and pdf:

    * ``"relu"``: ``E X_+ = sigma phi(r) + m Phi(r)``, ``E X_+^2 = (m^2 + sigma^2) Phi(r) + m sigma phi(r)``;
    * ``"elu1"`` (``x + 1`` for ``x > 0``, ``e^x`` otherwise): the same pieces plus
      ``E[e^X; X <= 0] = e^(m + sigma^2/2) Phi(-r - sigma)`` and
      ``E[e^(2X); X <= 0] = e^(2m + 2 sigma^2) Phi(-r - 2 sigma)``;
    * ``"softplus"`` or a callable: Gauss-Hermite quadrature with ``nodes`` points (accurate for
      smooth maps only; a kink costs digits).

    Shapes: ``mu`` ``(..., d)`` -> two tensors ``(..., d)`` on ``mu``'s device and dtype.
    """
    check_tensor(mu, "mu", min_ndim=1)
    sigma = check_real(sigma, "sigma", gt=0)
    nodes = check_int(nodes, "nodes", ge=2, le=200)
    phi = resolve_feature_map(feature_map)
    wd = _work_dtype(mu)
    m = mu.to(wd)
    if feature_map in ("relu", "elu1"):
        r = m / sigma
        cdf, pdf = torch.special.ndtr(r), torch.exp(-0.5 * r * r) / math.sqrt(2 * math.pi)
        e1 = sigma * pdf + m * cdf                                   # E[X; X > 0]
        e2 = (m * m + sigma**2) * cdf + m * sigma * pdf              # E[X^2; X > 0]
        if feature_map == "relu":
            mean, second = e1, e2
        else:
            mean = e1 + cdf + torch.exp(m + sigma**2 / 2) * torch.special.ndtr(-r - sigma)
            second = e2 + 2 * e1 + cdf + torch.exp(2 * m + 2 * sigma**2) * torch.special.ndtr(-r - 2 * sigma)
        var = (second - mean * mean).clamp(min=0)
        return mean.to(mu.dtype), var.to(mu.dtype)
    z, w = np.polynomial.hermite_e.hermegauss(nodes)
    z_t = torch.as_tensor(z, dtype=wd, device=mu.device)
    w_t = torch.as_tensor(w / w.sum(), dtype=wd, device=mu.device)
    vals = phi(m.unsqueeze(-1) + sigma * z_t)                          # (..., d, nodes)
    mean = (vals * w_t).sum(-1)
    var = ((vals - mean.unsqueeze(-1)) ** 2 * w_t).sum(-1)
    return mean.to(mu.dtype), var.to(mu.dtype)
