"""Scores of noised 1-D Gaussian mixtures, score-matching objectives, flows and 1-D W distances.

Derived in P05 (score matching = conditional score matching) and P32 (W distance <= score
matching). Everything is one-dimensional: a data point is a scalar, a batch is a tensor of
shape ``(N,)``.

Convention (Su's). The forward corruption is

    x_t = alpha * x_0 + beta * eps,    eps ~ N(0, 1),

so ``p(x_t | x_0) = N(alpha x_0, beta^2)``. In a variance-preserving schedule Su writes
``alpha = bar-alpha_t`` and ``beta = bar-beta_t`` with ``alpha^2 + beta^2 = 1``: Su's
bar-alpha is the *square root* of the DDPM paper's bar-alpha. :func:`su_from_ddpm` and
:func:`ddpm_from_su` convert. Nothing here requires ``alpha^2 + beta^2 = 1``, so variance
exploding corruptions (``alpha = 1``) are covered too.

A Gaussian mixture stays a Gaussian mixture under this corruption, which is why every score,
posterior moment and objective below is exact (up to quadrature error), and can serve as an
oracle for Monte Carlo estimates.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ._checks import check_int, check_real, check_tensor

__all__ = [
    "su_from_ddpm",
    "ddpm_from_su",
    "GaussianMixture1d",
    "conditional_score",
    "ratio_score_estimate",
    "sm_loss",
    "csm_loss",
    "sm_loss_quad",
    "csm_loss_quad",
    "csm_sm_gap",
    "odeint_rk4",
    "sde_euler_maruyama",
    "w2_gaussian_1d",
    "wasserstein_1d",
    "wasserstein_gmm_1d",
]

ScoreFn = Callable[[torch.Tensor], torch.Tensor]


def su_from_ddpm(alpha_bar: float) -> tuple[float, float]:
    """Su's ``(bar-alpha, bar-beta)`` from the DDPM paper's cumulative ``bar-alpha``.

    Su's coefficients are ``sqrt(alpha_bar)`` and ``sqrt(1 - alpha_bar)``, so that
    ``x_t = bar-alpha x_0 + bar-beta eps`` (see the notation warning in P05/P32).
    ``alpha_bar`` must lie in (0, 1].
    """
    a = check_real(alpha_bar, "alpha_bar", gt=0.0, le=1.0)
    return math.sqrt(a), math.sqrt(1.0 - a)


def ddpm_from_su(alpha: float) -> float:
    """The DDPM paper's cumulative ``bar-alpha`` from Su's ``bar-alpha``: its square."""
    a = check_real(alpha, "alpha", gt=0.0, le=1.0)
    return a * a


def _check_ab(alpha: object, beta: object) -> tuple[float, float]:
    return check_real(alpha, "alpha", ge=0.0), check_real(beta, "beta", gt=0.0)


@dataclass(frozen=True)
class GaussianMixture1d:
    """A 1-D Gaussian mixture ``sum_k w_k N(mu_k, s_k^2)`` with exact scores (Derived in P05).

    Parameters
    ----------
    means, stds, weights
        Tensors of shape ``(K,)`` and one floating dtype. ``stds`` > 0; ``weights`` >= 0 and
        summing to 1 (to 1e-6 relative). All outputs take the device and dtype of ``means``.
    """

    means: torch.Tensor
    stds: torch.Tensor
    weights: torch.Tensor

    def __post_init__(self) -> None:
        m = check_tensor(self.means, "means", ndim=1)
        s = check_tensor(self.stds, "stds", ndim=1)
        w = check_tensor(self.weights, "weights", ndim=1)
        if m.numel() == 0:
            raise ValueError("means must have at least one component")
        if s.shape != m.shape or w.shape != m.shape:
            raise ValueError(f"means, stds and weights must have the same shape (K,), got "
                             f"{tuple(m.shape)}, {tuple(s.shape)}, {tuple(w.shape)}")
        if s.dtype != m.dtype or w.dtype != m.dtype:
            raise TypeError("means, stds and weights must share one dtype")
        if not bool((s > 0).all()):
            raise ValueError("stds must be > 0")
        if not bool((w >= 0).all()) or abs(float(w.sum()) - 1.0) > 1e-6:
            raise ValueError("weights must be >= 0 and sum to 1")

    # -- basic quantities ---------------------------------------------------------------
    @property
    def mean(self) -> torch.Tensor:
        """Mixture mean ``sum_k w_k mu_k`` (0-d tensor)."""
        return (self.weights * self.means).sum()

    @property
    def variance(self) -> torch.Tensor:
        """Mixture variance ``sum_k w_k (s_k^2 + mu_k^2) - mean^2`` (0-d tensor)."""
        return (self.weights * (self.stds**2 + self.means**2)).sum() - self.mean**2

    def noised(self, *, alpha: float, beta: float) -> "GaussianMixture1d":
        """Law of ``alpha x_0 + beta eps``: means ``alpha mu_k``, variances ``alpha^2 s_k^2 + beta^2``."""
        a, b = _check_ab(alpha, beta)
        return GaussianMixture1d(a * self.means, torch.sqrt(a * a * self.stds**2 + b * b), self.weights)

    def _x(self, x: object, name: str = "x") -> torch.Tensor:
        x = check_tensor(x, name)
        if x.dtype != self.means.dtype or x.device != self.means.device:
            raise TypeError(f"{name} must have the mixture's dtype and device ({self.means.dtype}, {self.means.device})")
        return x

    def _log_resp(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-component ``log w_k + log N(x; mu_k, s_k^2)`` of shape ``x.shape + (K,)`` and its logsumexp."""
        z = (x.unsqueeze(-1) - self.means) / self.stds
        logc = torch.log(self.weights) - 0.5 * z * z - torch.log(self.stds) - 0.5 * math.log(2 * math.pi)
        return logc, torch.logsumexp(logc, dim=-1)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``log p(x)`` by logsumexp over components. Shapes: ``x`` any; output the same."""
        return self._log_resp(self._x(x))[1]

    def cdf(self, x: torch.Tensor) -> torch.Tensor:
        """``P(X <= x) = sum_k w_k Phi((x - mu_k)/s_k)``. Shapes: ``x`` any; output the same."""
        x = self._x(x)
        z = (x.unsqueeze(-1) - self.means) / self.stds
        return (self.weights * 0.5 * torch.erfc(-z / math.sqrt(2.0))).sum(-1)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """Exact score ``d/dx log p(x) = sum_k r_k(x) (mu_k - x)/s_k^2`` (r = responsibilities)."""
        x = self._x(x)
        logc, lse = self._log_resp(x)
        r = torch.exp(logc - lse.unsqueeze(-1))
        return (r * (self.means - x.unsqueeze(-1)) / self.stds**2).sum(-1)

    def score_derivative(self, x: torch.Tensor) -> torch.Tensor:
        """``d/dx`` of the score: ``Var_r[u_k] - E_r[1/s_k^2]`` with ``u_k = (mu_k - x)/s_k^2``.

        In 1-D the one-sided Lipschitz constant of a field is the supremum of its derivative
        (P32), so this gives it for fields built from the score.
        """
        x = self._x(x)
        logc, lse = self._log_resp(x)
        r = torch.exp(logc - lse.unsqueeze(-1))
        u = (self.means - x.unsqueeze(-1)) / self.stds**2
        eu = (r * u).sum(-1)
        return (r * u * u).sum(-1) - eu * eu - (r / self.stds**2).sum(-1)

    def sample(self, n: int, *, gen: torch.Generator | None = None) -> torch.Tensor:
        """``n`` samples, drawn on the CPU with ``gen`` (float64) and moved to the mixture's device."""
        n = check_int(n, "n", ge=0)
        w = self.weights.detach().to("cpu", torch.float64)
        k = torch.multinomial(w, n, replacement=True, generator=gen) if n else torch.zeros(0, dtype=torch.long)
        e = torch.randn(n, generator=gen, dtype=torch.float64)
        k = k.to(self.means.device)
        return self.means[k] + self.stds[k] * e.to(self.means.device, self.means.dtype)

    def quantile(self, u: torch.Tensor, *, iters: int = 100) -> torch.Tensor:
        """Inverse CDF by vectorised bisection (``iters`` halvings of a bracketing interval).

        ``u`` must lie in (0, 1). Shapes: ``u`` any; output the same.
        """
        u = self._x(u, "u")
        if u.numel() and not bool(((u > 0) & (u < 1)).all()):
            raise ValueError("u must lie in the open interval (0, 1)")
        return self._bisect(lambda x: self.cdf(x) < u, u, iters)

    def normal_quantile(self, z: torch.Tensor, *, iters: int = 100) -> torch.Tensor:
        """``Q(Phi(z))``: the quantile at the standard-normal level of ``z``, accurate in both tails.

        For ``z > 0`` the bisection compares survival functions, ``P(X > x)`` against
        ``Phi(-z)``, so levels within 1e-16 of 1 are not rounded to 1. Shapes: ``z`` any.
        """
        z = self._x(z, "z")
        lower = 0.5 * torch.erfc(z.abs() / math.sqrt(2.0))       # Phi(-|z|), no cancellation

        def below(x):
            zz = (x.unsqueeze(-1) - self.means) / self.stds
            cdf = (self.weights * 0.5 * torch.erfc(-zz / math.sqrt(2.0))).sum(-1)
            sf = (self.weights * 0.5 * torch.erfc(zz / math.sqrt(2.0))).sum(-1)
            return torch.where(z <= 0, cdf < lower, sf > lower)

        return self._bisect(below, z, iters)

    def _bisect(self, below, like: torch.Tensor, iters: int) -> torch.Tensor:
        iters = check_int(iters, "iters", ge=1)
        span = 40.0 * float(self.stds.max())
        lo = torch.full_like(like, float(self.means.min()) - span)
        hi = torch.full_like(like, float(self.means.max()) + span)
        for _ in range(iters):               # sequential by nature; each step is vectorised
            mid = 0.5 * (lo + hi)
            b = below(mid)
            lo, hi = torch.where(b, mid, lo), torch.where(b, hi, mid)
        return 0.5 * (lo + hi)

    # -- posterior of x_0 given x_t --------------------------------------------------------
    def _posterior(self, x: torch.Tensor, alpha: float, beta: float):
        a, b = _check_ab(alpha, beta)
        x = self._x(x)
        vt = a * a * self.stds**2 + b * b                       # (K,) noised variances
        nz = GaussianMixture1d(a * self.means, torch.sqrt(vt), self.weights)
        logc, lse = nz._log_resp(x)
        r = torch.exp(logc - lse.unsqueeze(-1))
        mu = self.means + a * self.stds**2 * (x.unsqueeze(-1) - a * self.means) / vt
        var = self.stds**2 * b * b / vt
        return r, mu, var

    def posterior_mean(self, x: torch.Tensor, *, alpha: float, beta: float) -> torch.Tensor:
        """``E[x_0 | x_t = x]`` for ``x_t = alpha x_0 + beta eps``. Shapes: ``x`` any; output the same."""
        r, mu, _ = self._posterior(x, alpha, beta)
        return (r * mu).sum(-1)

    def posterior_var(self, x: torch.Tensor, *, alpha: float, beta: float) -> torch.Tensor:
        """``Var[x_0 | x_t = x]``: within-component variance plus spread of component means."""
        r, mu, var = self._posterior(x, alpha, beta)
        m = (r * mu).sum(-1)
        return (r * (var + mu * mu)).sum(-1) - m * m


def conditional_score(x_t: torch.Tensor, x0: torch.Tensor, *, alpha: float, beta: float) -> torch.Tensor:
    """Score of the Gaussian kernel, ``d/dx_t log p(x_t | x_0) = -(x_t - alpha x_0) / beta^2`` (P05).

    Shapes: ``x_t`` and ``x0`` broadcastable; output their broadcast shape.
    """
    a, b = _check_ab(alpha, beta)
    check_tensor(x_t, "x_t")
    check_tensor(x0, "x0")
    return -(x_t - a * x0) / (b * b)


def ratio_score_estimate(x_t: torch.Tensor, x0: torch.Tensor, *, alpha: float, beta: float) -> torch.Tensor:
    """Self-normalised (ratio) Monte Carlo estimate of the marginal score (P05, eq. "score-1").

    With ``M`` data samples ``x0_1..x0_M`` and kernel weights ``w_i = N(x_t; alpha x0_i, beta^2)``,

        s_hat(x_t) = sum_i w_i * (-(x_t - alpha x0_i)/beta^2) / sum_i w_i .

    The weights are normalised with ``softmax`` (logsumexp), so they never underflow at small
    ``beta``. The estimator is consistent but biased for finite ``M`` (a ratio of two means).

    Parameters
    ----------
    x_t
        Points, shape ``(N,)``.
    x0
        Data batch, shape ``(M,)`` (shared by all points) or ``(N, M)`` (one batch per point).
    alpha, beta
        Corruption coefficients, ``alpha >= 0``, ``beta > 0``.

    Returns
    -------
    torch.Tensor
        Shape ``(N,)``.
    """
    a, b = _check_ab(alpha, beta)
    check_tensor(x_t, "x_t", ndim=1)
    check_tensor(x0, "x0", min_ndim=1)
    if x0.ndim > 2 or (x0.ndim == 2 and x0.shape[0] != x_t.shape[0]):
        raise ValueError(f"x0 must have shape (M,) or (N, M) with N = {x_t.shape[0]}, got {tuple(x0.shape)}")
    if x0.shape[-1] == 0:
        raise ValueError("x0 must hold at least one sample")
    diff = x_t.unsqueeze(-1) - a * x0                     # (N, M)
    w = torch.softmax(-0.5 * diff * diff / (b * b), dim=-1)
    return (w * (-diff / (b * b))).sum(-1)


def sm_loss(score_fn: ScoreFn, x_t: torch.Tensor, score_true: torch.Tensor) -> torch.Tensor:
    """Explicit score matching by Monte Carlo, ``mean_i (score_true_i - s(x_t_i))^2`` (P05).

    ``x_t`` are samples of ``p_t`` and ``score_true`` the exact (or estimated) marginal score
    there, both of shape ``(N,)``. Returns a 0-d tensor.
    """
    check_tensor(x_t, "x_t", ndim=1)
    check_tensor(score_true, "score_true", ndim=1)
    if score_true.shape != x_t.shape:
        raise ValueError("score_true must have the shape of x_t")
    return ((score_true - score_fn(x_t)) ** 2).mean()


def csm_loss(score_fn: ScoreFn, x0: torch.Tensor, eps: torch.Tensor, *, alpha: float, beta: float) -> torch.Tensor:
    """Conditional (denoising) score matching by Monte Carlo (P05).

    One pair per term: ``x_t = alpha x0 + beta eps`` and the target is the kernel score
    ``-(x_t - alpha x0)/beta^2 = -eps/beta``, so the loss is ``mean_i (-eps_i/beta - s(x_t_i))^2``,
    an unbiased estimate of the CSM objective. ``x0``, ``eps``: shape ``(N,)``. Returns 0-d.
    """
    a, b = _check_ab(alpha, beta)
    check_tensor(x0, "x0", ndim=1)
    check_tensor(eps, "eps", ndim=1)
    if eps.shape != x0.shape:
        raise ValueError("eps must have the shape of x0")
    x_t = a * x0 + b * eps
    return ((-eps / b - score_fn(x_t)) ** 2).mean()


def _hermite(n: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilists' Gauss-Hermite nodes and weights normalised to integrate against N(0, 1)."""
    n = check_int(n, "n_nodes", ge=2, le=400)
    z, w = np.polynomial.hermite_e.hermegauss(n)
    return (torch.as_tensor(z, dtype=like.dtype, device=like.device),
            torch.as_tensor(w / math.sqrt(2 * math.pi), dtype=like.dtype, device=like.device))


def sm_loss_quad(score_fn: ScoreFn, data: GaussianMixture1d, *, alpha: float, beta: float,
                 n_nodes: int = 160) -> torch.Tensor:
    """Explicit score-matching objective ``E_{x_t ~ p_t}(score_t(x_t) - s(x_t))^2`` by quadrature (P05).

    ``p_t`` is the noised mixture; each of its components is integrated with ``n_nodes``
    Gauss-Hermite nodes. Exact for polynomial integrands up to degree ``2 n_nodes - 1``.
    Returns a 0-d tensor.
    """
    pt = data.noised(alpha=alpha, beta=beta)
    z, w = _hermite(n_nodes, data.means)
    x = pt.means.unsqueeze(-1) + pt.stds.unsqueeze(-1) * z          # (K, n)
    err = (pt.score(x) - score_fn(x.reshape(-1)).reshape(x.shape)) ** 2
    return (pt.weights * (err * w).sum(-1)).sum()


def csm_loss_quad(score_fn: ScoreFn, data: GaussianMixture1d, *, alpha: float, beta: float,
                  n_nodes: int = 80) -> torch.Tensor:
    """Conditional score-matching objective by a double Gauss-Hermite rule (P05).

    ``E_{x_0, eps} (-eps/beta - s(alpha x_0 + beta eps))^2`` with ``x_0`` over each mixture
    component and ``eps`` over N(0, 1), ``n_nodes`` nodes each. It never uses the marginal
    score, so it is an independent route to the objective. Returns a 0-d tensor.
    """
    a, b = _check_ab(alpha, beta)
    z, w = _hermite(n_nodes, data.means)
    x0 = data.means[:, None, None] + data.stds[:, None, None] * z[None, :, None]   # (K, n, 1)
    eps = z[None, None, :]                                                          # (1, 1, n)
    x_t = a * x0 + b * eps
    err = (-eps / b - score_fn(x_t.reshape(-1)).reshape(x_t.shape)) ** 2
    return (data.weights * (err * w[:, None] * w[None, :]).sum((-1, -2))).sum()


def csm_sm_gap(data: GaussianMixture1d, *, alpha: float, beta: float, n_nodes: int = 160) -> torch.Tensor:
    """The model-independent constant ``L_CSM - L_SM`` as a posterior variance (P05 with P21).

    For the Gaussian kernel the conditional score is ``-(x_t - alpha x_0)/beta^2``, so the
    constant ``E_{x_t}[E_{x_0|x_t}|cond. score|^2 - |score|^2]`` is a posterior variance:

        L_CSM - L_SM = (alpha^2 / beta^4) * E_{x_t ~ p_t} Var[x_0 | x_t],

    the averaged posterior variance of P21 times ``alpha^2/beta^4``. Computed by Gauss-Hermite
    quadrature over ``p_t``. Returns a 0-d tensor.
    """
    a, b = _check_ab(alpha, beta)
    pt = data.noised(alpha=a, beta=b)
    z, w = _hermite(n_nodes, data.means)
    x = pt.means.unsqueeze(-1) + pt.stds.unsqueeze(-1) * z
    pv = data.posterior_var(x, alpha=a, beta=b)
    return (a * a / b**4) * (pt.weights * (pv * w).sum(-1)).sum()


def odeint_rk4(field: Callable[[torch.Tensor, float], torch.Tensor], x: torch.Tensor, t0: float, t1: float,
               *, steps: int = 200, return_path: bool = False) -> torch.Tensor:
    """Classical fixed-step RK4 for ``dx/dt = field(x, t)`` from ``t0`` to ``t1`` (P32).

    ``t1 < t0`` integrates backwards in time (the sampling direction of a probability-flow
    ODE). The loop over steps is sequential by nature; each step is vectorised over the batch.

    Parameters
    ----------
    field
        ``field(x, t) -> dx/dt``, with ``x`` of the shape of the state and ``t`` a float.
    x
        Initial state at ``t0``, any shape (a batch of particles).
    t0, t1
        Start and end times.
    steps
        Number of equal steps.
    return_path
        If True, return all ``steps + 1`` states stacked on a new first dimension.

    Returns
    -------
    torch.Tensor
        The state at ``t1`` (shape of ``x``), or the path of shape ``(steps + 1,) + x.shape``.
    """
    check_tensor(x, "x")
    t0, t1 = check_real(t0, "t0"), check_real(t1, "t1")
    steps = check_int(steps, "steps", ge=1)
    h = (t1 - t0) / steps
    path = [x]
    for i in range(steps):
        t = t0 + i * h
        k1 = field(x, t)
        k2 = field(x + 0.5 * h * k1, t + 0.5 * h)
        k3 = field(x + 0.5 * h * k2, t + 0.5 * h)
        k4 = field(x + h * k3, t + h)
        x = x + (h / 6.0) * (k1 + 2 * k2 + 2 * k3 + k4)
        if return_path:
            path.append(x)
    return torch.stack(path) if return_path else x


def sde_euler_maruyama(drift: Callable[[torch.Tensor, float], torch.Tensor], diffusion: Callable[[float], float],
                       x: torch.Tensor, t0: float, t1: float, noise: torch.Tensor) -> torch.Tensor:
    """Euler-Maruyama for ``dx = drift(x, t) dt + g(t) dw`` from ``t0`` to ``t1`` (P32).

    The standard normal increments are passed in as ``noise`` of shape ``(steps,) + x.shape``,
    so two SDEs can be driven by the *same* Brownian path (the synchronous coupling used in
    P32 for the SDE case). Works in either time direction; with ``|dt| = |t1 - t0|/steps`` the
    noise term of a step is ``g(t) sqrt(|dt|) noise[i]``. Returns the state at ``t1``.
    """
    check_tensor(x, "x")
    check_tensor(noise, "noise", min_ndim=1)
    t0, t1 = check_real(t0, "t0"), check_real(t1, "t1")
    if tuple(noise.shape[1:]) != tuple(x.shape) or noise.shape[0] < 1:
        raise ValueError(f"noise must have shape (steps,) + {tuple(x.shape)}, got {tuple(noise.shape)}")
    steps = noise.shape[0]
    h = (t1 - t0) / steps
    for i in range(steps):
        t = t0 + i * h
        x = x + drift(x, t) * h + diffusion(t) * math.sqrt(abs(h)) * noise[i]
    return x


def w2_gaussian_1d(m1: float, s1: float, m2: float, s2: float) -> float:
    """Closed-form ``W_2(N(m1, s1^2), N(m2, s2^2)) = sqrt((m1 - m2)^2 + (s1 - s2)^2)`` (P32)."""
    m1, m2 = check_real(m1, "m1"), check_real(m2, "m2")
    s1, s2 = check_real(s1, "s1", ge=0.0), check_real(s2, "s2", ge=0.0)
    return math.hypot(m1 - m2, s1 - s2)


def wasserstein_1d(x: torch.Tensor, y: torch.Tensor, *, p: float = 2.0) -> torch.Tensor:
    """Exact ``W_p`` between two empirical 1-D distributions via their quantile functions (P32).

    In 1-D the optimal coupling is monotone: ``W_p^p = int_0^1 |Q_x(u) - Q_y(u)|^p du``. For
    empirical measures both quantile functions are step functions; the integral is summed
    exactly over the merged breakpoints ``i/n`` and ``j/m``. Equal sizes reduce to pairing the
    sorted samples. ``x``: ``(n,)``, ``y``: ``(m,)``, ``p >= 1``. Returns a 0-d tensor.
    """
    check_tensor(x, "x", ndim=1)
    check_tensor(y, "y", ndim=1)
    p = check_real(p, "p", ge=1.0)
    if x.numel() == 0 or y.numel() == 0:
        raise ValueError("x and y must be non-empty")
    xs, ys = torch.sort(x).values, torch.sort(y).values
    n, m = xs.numel(), ys.numel()
    if n == m:
        return ((xs - ys).abs() ** p).mean() ** (1.0 / p)
    levels = torch.cat([torch.arange(1, n + 1, device=x.device, dtype=x.dtype) / n,
                        torch.arange(1, m + 1, device=x.device, dtype=x.dtype) / m])
    levels = torch.unique(torch.cat([levels.new_zeros(1), levels.clamp(max=1.0)]))
    du = levels[1:] - levels[:-1]
    mid = 0.5 * (levels[1:] + levels[:-1])
    ix = torch.clamp(torch.ceil(mid * n).long() - 1, 0, n - 1)
    iy = torch.clamp(torch.ceil(mid * m).long() - 1, 0, m - 1)
    return (du * (xs[ix] - ys[iy]).abs() ** p).sum() ** (1.0 / p)


def wasserstein_gmm_1d(p_mix: GaussianMixture1d, q_mix: GaussianMixture1d, *, p: float = 2.0,
                       n_grid: int = 20001) -> torch.Tensor:
    """``W_p`` between two 1-D Gaussian mixtures from their quantile functions (P32).

    ``W_p^p = int_0^1 |Q_p(u) - Q_q(u)|^p du``. Both CDFs are tabulated on one grid of
    ``n_grid`` points covering 12 standard deviations around every component; the quantile
    functions are the inverses of the piecewise-linear CDFs. The integral over ``u`` is summed
    over the merged CDF levels of both tables, so a quantile function that jumps (a gap of
    low density between modes) is resolved by the ``x`` grid rather than by a ``u`` grid. The
    error is ``O(h^2)`` in the grid step ``h``. Returns a 0-d tensor.
    """
    p = check_real(p, "p", ge=1.0)
    n_grid = check_int(n_grid, "n_grid", ge=3)
    if q_mix.means.dtype != p_mix.means.dtype or q_mix.means.device != p_mix.means.device:
        raise TypeError("p_mix and q_mix must share dtype and device")
    lo = min(float((m.means - 12 * m.stds).min()) for m in (p_mix, q_mix))
    hi = max(float((m.means + 12 * m.stds).max()) for m in (p_mix, q_mix))
    x = torch.linspace(lo, hi, n_grid, device=p_mix.means.device, dtype=p_mix.means.dtype)
    fp, fq = p_mix.cdf(x), q_mix.cdf(x)
    levels = torch.unique(torch.cat([fp, fq, fp.new_tensor([0.0, 1.0])]))     # sorted
    mid = 0.5 * (levels[1:] + levels[:-1])
    du = levels[1:] - levels[:-1]

    def inv(f: torch.Tensor) -> torch.Tensor:          # inverse of the piecewise-linear CDF
        j = torch.clamp(torch.searchsorted(f, mid), 1, n_grid - 1)
        f0, f1 = f[j - 1], f[j]
        w = torch.where(f1 > f0, (mid - f0) / (f1 - f0).clamp_min(1e-300), torch.full_like(mid, 0.5))
        return x[j - 1] + w.clamp(0.0, 1.0) * (x[j] - x[j - 1])

    return (du * (inv(fp) - inv(fq)).abs() ** p).sum() ** (1.0 / p)
