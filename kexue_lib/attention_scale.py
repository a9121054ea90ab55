"""Attention probabilities with an explicit scale, and the scale that maximises their gradient.

Derived in P12 (kexue.fm/archives/9812). Notation: ``s`` are the attention scores of one
query against ``n`` keys, ``alpha`` the scale (inverse temperature) and
``p = softmax(alpha * s)``. The post measures the gradient of ``p`` with respect to ``s`` by
half the entrywise l1 norm of the Jacobian,

    (1/2) * sum_ij |dp_i/ds_j| = alpha * (1 - sum_i p_i^2),

and picks ``alpha`` to maximise it. Three versions of that objective live here:

* :func:`mean_field_objective` -- the post's approximation, ``alpha (1 - g(2a) / (n g(a)^2))``
  with ``g`` the moment generating function of one score; :func:`optimal_scale` maximises it
  (``scipy.optimize.brentq`` on the stationarity condition).
* :func:`objective_mc` -- a Monte Carlo estimate of the exact finite-``n`` expectation
  ``E[alpha (1 - sum p_i^2)]`` over i.i.d. scores (torch, any device).
* :func:`expected_objective` -- the same expectation by deterministic quadrature (NumPy/SciPy),
  a reference for the Monte Carlo; :func:`top_gap_density` is its ``alpha -> inf`` limit.

Scores are i.i.d. ``N(0, 1)`` (``dist="normal"``: dot products divided by ``sqrt(d)``) or
cosines between independent uniform unit vectors in ``R^d`` (``dist="cosine"``, density
``prop. to (1 - s^2)^((d - 3) / 2)`` on ``[-1, 1]``). The special functions (Bessel ``I_nu``
of arbitrary order, the inverse regularised incomplete beta) exist in SciPy but not in torch,
so the deterministic pieces are NumPy/SciPy and return NumPy arrays.
"""
from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Sequence

import numpy as np
import torch
from scipy import integrate, optimize, signal, special, stats

from ._checks import check_int, check_real, check_tensor
from .device import generator as _generator, rand, randn

__all__ = [
    "attention_probs",
    "softmax_jacobian",
    "jacobian_l1_objective",
    "log_mgf",
    "mean_field_objective",
    "optimal_scale",
    "sample_scores",
    "objective_mc",
    "expected_objective",
    "top_gap_density",
    "log_n_rule",
    "inv_sqrt_d_scale",
]

_DISTS = ("normal", "cosine")
#: Coefficients of the post's fitted rules over n in [40, 20000]: 0.84 sqrt(ln n) (normal),
#: 3.5 ln n (cosine scores, d = 128 only).
RULE_COEF = {"normal": 0.84, "cosine": 3.5}


# ----------------------------------------------------------------------------- validation
def _check_dist(dist: object, d: object) -> int | None:
    if dist not in _DISTS:
        raise ValueError(f"dist must be one of {_DISTS}, got {dist!r}")
    if dist == "cosine":
        if d is None:
            raise ValueError("d is required for dist='cosine'")
        return check_int(d, "d", ge=2)
    if d is not None:
        check_int(d, "d", ge=1)
    return None


def _positive_array(x: object, name: str) -> np.ndarray:
    """A float64 array of finite values > 0 (scalars, sequences, NumPy arrays, tensors)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    if isinstance(x, (bool, np.bool_)) or isinstance(x, str):
        raise TypeError(f"{name} must be a real number or an array of them, got {type(x).__name__}")
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a real number or an array of them, got {type(x).__name__}") from err
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got NaN or inf")
    if not np.all(arr > 0):
        raise ValueError(f"{name} must be > 0, got min {arr.min() if arr.size else 'empty'}")
    return arr


def _int_array(x: object, name: str, *, ge: int) -> np.ndarray:
    """An int64 array of integers >= ``ge`` (scalars or sequences)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    if isinstance(x, (Integral, np.integer)) and not isinstance(x, bool):
        return np.asarray(check_int(int(x), name, ge=ge), dtype=np.int64)
    arr = np.asarray(x)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an int or an array of ints, got dtype {arr.dtype}")
    if arr.size and arr.min() < ge:
        raise ValueError(f"{name} must be >= {ge}, got min {arr.min()}")
    return arr.astype(np.int64)


def _scale(scale: object, name: str = "scale") -> float:
    return check_real(scale, name, gt=0)


# ----------------------------------------------------------------------------- the identity
def attention_probs(q: torch.Tensor, k: torch.Tensor, *, scale: float | None = None) -> torch.Tensor:
    """Scaled dot-product attention probabilities ``softmax(scale * q k^T)`` over the keys.

    Shapes: ``q`` (..., n_q, d), ``k`` (..., n_k, d) -> (..., n_q, n_k); rows sum to one.
    ``scale`` defaults to ``1 / sqrt(d)``; P12's suggestion is ``alpha / sqrt(d)`` with
    ``alpha`` from :func:`optimal_scale` (about 2.5 instead of 1). Derived in P12.
    """
    check_tensor(q, "q", min_ndim=2)
    check_tensor(k, "k", min_ndim=2)
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must share the last dimension, got {q.shape[-1]} and {k.shape[-1]}")
    if q.dtype != k.dtype:
        raise TypeError(f"q and k must have the same dtype, got {q.dtype} and {k.dtype}")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else _scale(scale)
    return torch.softmax(scale * (q @ k.transpose(-1, -2)), dim=-1)


def softmax_jacobian(scores: torch.Tensor, *, scale: float = 1.0) -> torch.Tensor:
    """Jacobian of ``p = softmax(scale * s)`` with respect to the scores ``s``.

    ``J[..., i, j] = dp_i / ds_j = scale * (p_i * delta_ij - p_i * p_j)``.
    Shapes: ``scores`` (..., n) -> (..., n, n); ``J`` is symmetric. Derived in P12.
    """
    check_tensor(scores, "scores", min_ndim=1)
    a = _scale(scale)
    p = torch.softmax(a * scores, dim=-1)
    return a * (torch.diag_embed(p) - p.unsqueeze(-1) * p.unsqueeze(-2))


def jacobian_l1_objective(scores: torch.Tensor, *, scale: float = 1.0) -> torch.Tensor:
    """P12's gradient size: half the entrywise l1 norm of :func:`softmax_jacobian`.

    ``(1/2) sum_ij |dp_i/ds_j| = scale * (1 - sum_i p_i^2)`` with ``p = softmax(scale * s)``;
    ``sum_i p_i^2 = exp(-H_2(p))`` is the collision probability (Renyi-2 entropy ``H_2``).
    Shapes: ``scores`` (..., n) -> (...). Derived in P12.
    """
    check_tensor(scores, "scores", min_ndim=1)
    a = _scale(scale)
    p = torch.softmax(a * scores, dim=-1)  # stable: torch subtracts the max
    return a * (1.0 - (p * p).sum(dim=-1))


# ----------------------------------------------------------------------------- mean field
def log_mgf(alpha: float | Sequence[float] | np.ndarray, *, dist: str = "normal", d: int | None = None) -> np.ndarray:
    """Log moment generating function ``log g(alpha) = log E[exp(alpha s)]`` of one score.

    normal: ``alpha^2 / 2``. cosine in ``R^d``:
    ``g(alpha) = 0F1(; d/2; alpha^2/4) = Gamma(d/2) (2/alpha)^(d/2-1) I_(d/2-1)(alpha)``,
    evaluated with the scaled Bessel function ``ive`` in log space (no overflow for large
    ``alpha``) and with SciPy's ``hyp0f1`` for ``alpha < 10`` or where ``ive`` underflows.
    Shapes: ``alpha`` any -> same. Derived in P12.
    """
    a = _positive_array(alpha, "alpha")
    d = _check_dist(dist, d)
    return _log_mgf(a, dist, d)


def _log_mgf(a: np.ndarray, dist: str, d: int | None) -> np.ndarray:
    """:func:`log_mgf` without argument checks (``a`` a float64 array > 0)."""
    if dist == "normal":
        return a * a / 2
    shape, a = a.shape, a.reshape(-1)
    # Scaled Bessel function in log space where it is representable; 0F1 (a short series)
    # for small alpha, and where ive underflows (d much larger than alpha).
    nu = d / 2 - 1
    with np.errstate(divide="ignore", over="ignore"):
        iv = special.ive(nu, a)
        out = special.gammaln(d / 2) + nu * np.log(2 / a) + np.log(iv) + a
        hyp = (a < 10) | (iv < 1e-250)
        out[hyp] = np.log(special.hyp0f1(d / 2, a[hyp] ** 2 / 4))
    if not np.all(np.isfinite(out)):
        raise ValueError(f"alpha: log_mgf overflows for d={d} at alpha={a[~np.isfinite(out)].min():g}")
    return out.reshape(shape)


def _dlog_mgf(a: np.ndarray, dist: str, d: int | None) -> np.ndarray:
    """Derivative of :func:`log_mgf` in ``alpha``: ``alpha`` (normal), ``I_(d/2)/I_(d/2-1)`` (cosine)."""
    if dist == "normal":
        return a
    shape, a = a.shape, a.reshape(-1)
    with np.errstate(over="ignore", invalid="ignore"):
        num = special.ive(d / 2, a)
        out = num / special.ive(d / 2 - 1, a)  # I_(nu+1) / I_nu
        hyp = (a < 10) | (num < 1e-250)
        x = a[hyp] ** 2 / 4
        out[hyp] = a[hyp] / d * special.hyp0f1(d / 2 + 1, x) / special.hyp0f1(d / 2, x)
    if not np.all(np.isfinite(out)):
        raise ValueError(f"alpha: the derivative of log_mgf overflows for d={d}")
    return out.reshape(shape)


def mean_field_objective(
    alpha: float | Sequence[float] | np.ndarray, n: int | Sequence[int] | np.ndarray, *,
    dist: str = "normal", d: int | None = None,
) -> np.ndarray:
    """The post's approximation of ``alpha (1 - sum p_i^2)`` for ``n`` i.i.d. scores.

    Replacing both sums in ``sum p^2 = sum e^(2 a s_i) / (sum e^(a s_i))^2`` by ``n`` times
    their expectations gives ``alpha * (1 - g(2 alpha) / (n g(alpha)^2))``; for normal scores
    ``alpha * (1 - exp(alpha^2) / n)``. ``alpha`` and ``n`` broadcast. Derived in P12.
    """
    a = _positive_array(alpha, "alpha")
    nn = _int_array(n, "n", ge=1)
    _check_dist(dist, d)
    log_r = _log_mgf(2 * a, dist, d) - 2 * _log_mgf(a, dist, d)
    with np.errstate(over="ignore"):  # very large alpha: the objective is -inf, not NaN
        return a * (1 - np.exp(log_r - np.log(nn)))


def _stationarity(a: float, log_n: float, dist: str, d: int | None) -> float:
    # d/da [a (1 - R(a)/n)] = 0  <=>  R (1 + a (log R)') = n, R = g(2a)/g(a)^2; in logs.
    if dist == "normal":  # log R = a^2, (log R)' = 2a
        return a * a + math.log1p(2 * a * a) - log_n
    arr = np.array([a, 2 * a])
    lg, dlg = _log_mgf(arr, dist, d), _dlog_mgf(arr, dist, d)
    return float(lg[1] - 2 * lg[0] + math.log1p(a * (2 * dlg[1] - 2 * dlg[0])) - log_n)


def optimal_scale(n: int | Sequence[int] | np.ndarray, *, dist: str = "normal", d: int | None = None,
                  xtol: float = 1e-12) -> float | np.ndarray:
    """Maximiser ``alpha*`` of :func:`mean_field_objective` for each ``n >= 2``.

    Solves the stationarity condition ``R(a) (1 + a R'(a)/R(a)) = n`` with
    ``R = g(2a)/g(a)^2`` by ``scipy.optimize.brentq``; for normal scores it reads
    ``exp(a^2) (1 + 2 a^2) = n``. The objective is concave in ``a`` (``R`` is increasing and
    log-convex), so the root is the maximum. One ``brentq`` per ``n`` (scalar root finder).
    Returns a float for a scalar ``n``, else an array of ``n``'s shape. Derived in P12.
    """
    nn = _int_array(n, "n", ge=2)
    _check_dist(dist, d)
    check_real(xtol, "xtol", gt=0)
    out = np.empty(nn.shape, dtype=np.float64)
    for idx, ni in np.ndenumerate(nn):  # brentq is scalar
        log_n = math.log(int(ni))
        hi = math.sqrt(log_n) if dist == "normal" else 1.0  # normal: R(sqrt(log n)) = n already
        while _stationarity(hi, log_n, dist, d) <= 0:
            hi *= 2.0
        out[idx] = optimize.brentq(_stationarity, 1e-9, hi, args=(log_n, dist, d), xtol=xtol)
    return float(out) if out.ndim == 0 else out


# ----------------------------------------------------------------------------- exact objective
def sample_scores(
    trials: int, n: int, *, dist: str = "normal", d: int | None = None,
    gen: torch.Generator | None = None, seed: int | None = None,
    device: torch.device | str | None = None, dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """``trials`` rows of ``n`` i.i.d. scores, shape (trials, n), drawn on the CPU then moved.

    normal: ``N(0, 1)``. cosine: ``s = 2 B - 1`` with ``B ~ Beta((d-1)/2, (d-1)/2)``, the law of
    the cosine between independent uniform unit vectors in ``R^d`` (and of one coordinate of a
    uniform unit vector), by inverse CDF (SciPy's ``betaincinv``) of CPU uniforms. Derived in P12.
    """
    trials = check_int(trials, "trials", ge=1)
    n = check_int(n, "n", ge=1)
    d = _check_dist(dist, d)
    if gen is None:
        gen = _generator(0 if seed is None else seed)
    elif seed is not None:
        raise ValueError("seed and gen: give one, not both")
    if dist == "normal":
        return randn(trials, n, gen=gen, device=device, dtype=dtype)
    u = rand(trials, n, gen=gen, dtype=torch.float64).numpy()
    s = 2.0 * special.betaincinv((d - 1) / 2, (d - 1) / 2, u) - 1.0
    return torch.from_numpy(s).to(device=device if device is not None else "cpu", dtype=dtype)


def objective_mc(
    alpha: float | Sequence[float] | np.ndarray | torch.Tensor, n: int, *, dist: str = "normal",
    d: int | None = None, trials: int = 256, gen: torch.Generator | None = None, seed: int | None = None,
    device: torch.device | str | None = None, dtype: torch.dtype = torch.float64,
    reduction: str = "mean", max_elements: int = 1 << 24,
) -> torch.Tensor:
    """Monte Carlo estimate of the exact finite-``n`` objective ``E[alpha (1 - sum_i p_i^2)]``.

    Draws ``trials`` score vectors once (:func:`sample_scores`) and evaluates every ``alpha`` on
    the same draws (common random numbers, so curves in ``alpha`` are smooth); vectorised over
    trials and over chunks of ``alpha`` holding at most ``max_elements`` numbers.
    Shapes: ``alpha`` (A,) or scalar -> (A,) (``reduction="mean"``) or (A, trials)
    (``reduction="none"``; take a median or a standard error from it). Derived in P12.
    """
    a = torch.as_tensor(_positive_array(alpha, "alpha"))
    scalar = a.ndim == 0
    a = a.reshape(-1)
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    max_elements = check_int(max_elements, "max_elements", ge=1)
    s = sample_scores(trials, n, dist=dist, d=d, gen=gen, seed=seed, device=device, dtype=dtype)
    a = a.to(device=s.device, dtype=s.dtype)
    chunk = max(1, max_elements // s.numel())
    vals = []
    for a_chunk in a.split(chunk):  # loop over chunks of alpha only, to bound memory
        p = torch.softmax(a_chunk[:, None, None] * s, dim=-1)  # (A, trials, n)
        vals.append(a_chunk[:, None] * (1.0 - (p * p).sum(dim=-1)))
    out = torch.cat(vals)
    if reduction == "mean":
        out = out.mean(dim=-1)
    return out[0] if scalar else out


def _score_law(dist: str, d: int | None):
    if dist == "normal":
        return stats.norm(), 10.0  # support cut at |s| <= 10 (tail mass 1.5e-23)
    return stats.beta((d - 1) / 2, (d - 1) / 2, loc=-1.0, scale=2.0), 1.0


def expected_objective(
    alpha: float | Sequence[float] | np.ndarray, n: int, *, dist: str = "normal", d: int | None = None,
    step: float = 0.05,
) -> np.ndarray:
    """The exact finite-``n`` objective ``E[alpha (1 - sum p_i^2)]`` by deterministic quadrature.

    With ``1/Z^2 = int_0^inf t e^(-t Z) dt`` and ``t = e^l``, independence of the scores gives

        E[sum p_i^2] = n int dl  E[exp(2w - e^w)] * (1 - E[1 - exp(-e^w)])^(n-1),  w = l + alpha s.

    Both inner expectations are convolutions in ``l`` with the law of ``alpha s``, done by FFT on
    a grid of spacing ``step * min(alpha, 1)`` with exact bin masses from the score CDF
    (relative error below about 5e-5 at the default step and 5e-6 at ``step=0.02``).
    Shapes: ``alpha`` (A,) or scalar -> same. A reference for :func:`objective_mc`. Derived in P12.
    """
    a_arr = _positive_array(alpha, "alpha")
    n = check_int(n, "n", ge=1)
    d = _check_dist(dist, d)
    step = check_real(step, "step", gt=0, le=0.1)
    law, smax = _score_law(dist, d)
    out = np.empty(a_arr.shape)
    for idx, a in np.ndenumerate(a_arr):  # one FFT convolution per alpha
        h = step * min(float(a), 1.0)
        m = int(math.ceil(a * smax / h))
        if (2 * a * smax + math.log(n) + 50.0) / h + 2 * m > 1 << 23:
            raise ValueError(f"alpha={a:g} needs a quadrature grid above 2^23 points; raise step or alpha")
        u = np.arange(-m, m + 1) * h  # kernel grid for alpha * s
        kern = np.diff(law.cdf(np.append(u - h / 2, u[-1] + h / 2) / a))
        lo, hi = -a * smax - math.log(n) - 40.0, a * smax + 10.0
        ell = np.arange(math.floor(lo / h), math.ceil(hi / h) + 1) * h
        w = np.arange(math.floor(lo / h) - m, math.ceil(hi / h) + m + 1) * h
        ew = np.exp(np.minimum(w, 700.0))
        big_a = signal.fftconvolve(np.exp(2 * w - ew), kern, mode="valid")  # E[exp(2w - e^w)]
        big_b = signal.fftconvolve(-np.expm1(-ew), kern, mode="valid")  # E[1 - exp(-e^w)]
        big_a, big_b = np.clip(big_a, 0.0, None), np.clip(big_b, 0.0, 1.0)
        with np.errstate(divide="ignore"):
            log_rest = (n - 1) * np.log1p(-big_b) if n > 1 else np.zeros_like(big_b)
        sum_p2 = n * integrate.trapezoid(big_a * np.exp(log_rest), ell[: big_a.size])
        out[idx] = a * (1.0 - sum_p2)
    return out


def top_gap_density(n: int, *, dist: str = "normal", d: int | None = None) -> float:
    """Density at 0 of the gap between the two largest of ``n`` i.i.d. scores.

    ``f_gap(0) = n (n-1) int f(x)^2 F(x)^(n-2) dx = n int_0^1 f(F^-1(v^(1/(n-1)))) dv``, and the
    limit ``lim_(alpha -> inf) E[alpha (1 - sum p_i^2)] = f_gap(0)``: only near-ties of the top two
    scores keep the gradient alive, and they occur with probability ``~ f_gap(0) / alpha``.
    Needs ``n >= 2``. Derived in P12 (this book's addition, not in the post).
    """
    n = check_int(n, "n", ge=2)
    d = _check_dist(dist, d)
    law, _ = _score_law(dist, d)

    def integrand(v: float) -> float:
        tail = -math.expm1(math.log(v) / (n - 1)) if v > 0 else 1.0  # 1 - v^(1/(n-1)), accurate
        return float(law.pdf(law.isf(tail)))

    val, _err = integrate.quad(integrand, 0.0, 1.0, limit=200)
    return n * val


# ----------------------------------------------------------------------------- rules of thumb
def log_n_rule(n: int | Sequence[int] | np.ndarray, *, dist: str = "normal", coef: float | None = None) -> float | np.ndarray:
    """The post's fitted rules: ``0.84 sqrt(ln n)`` (normal scores), ``3.5 ln n`` (cosine, d = 128).

    Both are least-squares-style fits over ``n`` in [40, 20000], not asymptotics; ``coef``
    overrides the coefficient. Returns a float for scalar ``n``. Derived in P12.
    """
    nn = _int_array(n, "n", ge=1)
    if dist not in _DISTS:
        raise ValueError(f"dist must be one of {_DISTS}, got {dist!r}")
    c = RULE_COEF[dist] if coef is None else check_real(coef, "coef", gt=0)
    out = c * (np.sqrt(np.log(nn)) if dist == "normal" else np.log(nn))
    return float(out) if out.ndim == 0 else out


def inv_sqrt_d_scale(d: int, *, alpha: float = 1.0) -> float:
    """Scale to put in front of ``q . k``: ``alpha / sqrt(d)``.

    ``alpha = 1`` is the standard rule (unit-variance scores for unit-variance ``q, k``); P12
    suggests ``alpha`` about 2.5, i.e. ``2.5 / sqrt(d)``. Derived in P12.
    """
    d = check_int(d, "d", ge=1)
    return _scale(alpha, "alpha") / math.sqrt(d)
