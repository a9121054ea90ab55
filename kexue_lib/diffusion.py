"""Discrete-time Gaussian diffusion: schedules, forward marginals, DDPM/DDIM samplers (P19, P20).

Convention (Su's, used throughout the module): the forward marginal is

    q(x_t | x_0) = N(abar_t x_0, bbar_t^2 I),    abar_t^2 + bbar_t^2 = 1,

so Su's ``abar_t`` is the *square root* of the DDPM/DDIM papers' cumulative product
(DDPM's ``alphas_cumprod``, DDIM's ``alpha_t``). The one-step coefficients are
``alpha_t = abar_t / abar_{t-1}`` and ``beta_t = sqrt(1 - alpha_t^2)``, so
``alpha_t^2 = 1 - beta_t^DDPM``. A :class:`Schedule` stores ``abar_0 = 1, ..., abar_T``
(length ``T + 1``); :func:`su_from_ddpm` and :func:`ddpm_from_su` convert.

The samplers run sequentially over a decreasing sub-sequence of time steps (a reverse
chain cannot be parallelised); each step is vectorised over the batch. Every tensor is
created on the device and in the dtype of the schedule.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from ._checks import check_int, check_real, check_tensor

__all__ = [
    "Schedule",
    "su_from_ddpm",
    "ddpm_from_su",
    "uniform_timesteps",
    "q_sample",
    "ddpm_posterior",
    "ddim_coeffs",
    "sigma_eta",
    "sigma_beta",
    "ddim_step",
    "sample",
    "eps_loss",
    "gmm_posterior_mean",
    "gmm_eps",
    "gaussian_sampler_std",
]

EpsFn = Callable[[torch.Tensor, int], torch.Tensor]


def su_from_ddpm(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Su's ``abar_t`` from the DDPM papers' ``alphas_cumprod``: ``abar_t = sqrt(alphas_cumprod_t)``.

    Shapes are preserved. Raises ``ValueError`` unless every entry lies in ``(0, 1]``.
    """
    check_tensor(alphas_cumprod, "alphas_cumprod")
    if bool(((alphas_cumprod <= 0) | (alphas_cumprod > 1)).any()):
        raise ValueError("alphas_cumprod must lie in (0, 1]")
    return alphas_cumprod.sqrt()


def ddpm_from_su(alpha_bar: torch.Tensor) -> torch.Tensor:
    """The DDPM papers' ``alphas_cumprod`` from Su's ``abar_t``: ``alphas_cumprod_t = abar_t^2``."""
    check_tensor(alpha_bar, "alpha_bar")
    if bool(((alpha_bar <= 0) | (alpha_bar > 1)).any()):
        raise ValueError("alpha_bar must lie in (0, 1]")
    return alpha_bar**2


@dataclass(frozen=True, eq=False)
class Schedule:
    """A variance-preserving noise schedule in Su's convention (Derived in P19).

    ``alpha_bar`` has shape ``(T + 1,)`` with ``alpha_bar[0] = 1`` and strictly decreasing
    positive entries; ``beta_bar = sqrt(1 - alpha_bar^2)``. Single-step quantities follow:

        alpha_t = abar_t / abar_{t-1},   beta_t = sqrt(1 - alpha_t^2),   t = 1..T.

    Build one with :meth:`Schedule.su_linear` (``alpha_t = sqrt(1 - c t / T)``), :meth:`Schedule.from_ddpm_betas`
    (the DDPM paper's ``beta_t``) or :meth:`Schedule.exp_quadratic` (``abar_t = exp(-k t^2 / T^2)``).
    """

    alpha_bar: torch.Tensor

    def __post_init__(self) -> None:
        a = check_tensor(self.alpha_bar, "alpha_bar", ndim=1)
        if a.numel() < 2:
            raise ValueError("alpha_bar must hold abar_0 = 1 and at least one more step")
        if float(a[0]) != 1.0:
            raise ValueError("alpha_bar[0] must equal 1 (no noise at t = 0)")
        if bool((a[1:] <= 0).any()) or bool((a[1:] >= a[:-1]).any()):
            raise ValueError("alpha_bar must be positive and strictly decreasing")
        # derived tables, computed once (the dataclass is frozen, hence object.__setattr__)
        alpha = torch.cat([a[:1], a[1:] / a[:-1]])
        object.__setattr__(self, "_beta_bar", (1 - a**2).clamp_min(0).sqrt())
        object.__setattr__(self, "_alpha", alpha)
        object.__setattr__(self, "_beta", (1 - alpha**2).clamp_min(0).sqrt())

    @property
    def T(self) -> int:
        """Number of diffusion steps."""
        return self.alpha_bar.numel() - 1

    @property
    def beta_bar(self) -> torch.Tensor:
        """``bbar_t = sqrt(1 - abar_t^2)``, shape ``(T + 1,)``, ``bbar_0 = 0``."""
        return self._beta_bar

    @property
    def alpha(self) -> torch.Tensor:
        """``alpha_t = abar_t / abar_{t-1}`` for ``t = 1..T`` (index 0 holds 1), shape ``(T + 1,)``."""
        return self._alpha

    @property
    def beta(self) -> torch.Tensor:
        """``beta_t = sqrt(1 - alpha_t^2)``, shape ``(T + 1,)`` (index 0 holds 0)."""
        return self._beta

    def alphas_cumprod(self) -> torch.Tensor:
        """The DDPM papers' ``alphas_cumprod`` for ``t = 1..T`` (shape ``(T,)``): ``abar_t^2``."""
        return ddpm_from_su(self.alpha_bar[1:])

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "Schedule":
        """A copy on another device and/or dtype."""
        return Schedule(self.alpha_bar.to(device=device, dtype=dtype))

    @classmethod
    def su_linear(cls, T: int = 1000, *, c: float = 0.02, dtype: torch.dtype = torch.float64,
                  device: torch.device | str | None = None) -> "Schedule":
        """``alpha_t = sqrt(1 - c t / T)``, the schedule of P19/P20 (``T = 1000``, ``c = 0.02``)."""
        T = check_int(T, "T", ge=1)
        c = check_real(c, "c", gt=0, lt=1)
        t = torch.arange(1, T + 1, dtype=dtype, device=device)
        log_abar = 0.5 * torch.cumsum(torch.log1p(-c * t / T), 0)
        return cls(torch.cat([torch.ones(1, dtype=dtype, device=device), log_abar.exp()]))

    @classmethod
    def from_ddpm_betas(cls, betas: torch.Tensor) -> "Schedule":
        """From the DDPM paper's per-step variances ``beta_t`` (shape ``(T,)``, entries in (0, 1))."""
        check_tensor(betas, "betas", ndim=1)
        if bool(((betas <= 0) | (betas >= 1)).any()):
            raise ValueError("betas must lie in (0, 1)")
        ac = torch.cumprod(1 - betas, 0)
        return cls(torch.cat([torch.ones(1, dtype=betas.dtype, device=betas.device), su_from_ddpm(ac)]))

    @classmethod
    def exp_quadratic(cls, T: int = 1000, *, k: float = 5.0, dtype: torch.dtype = torch.float64,
                      device: torch.device | str | None = None) -> "Schedule":
        """``abar_t = exp(-k t^2 / T^2)``, P20's closed-form approximation of :meth:`Schedule.su_linear`."""
        T = check_int(T, "T", ge=1)
        k = check_real(k, "k", gt=0)
        t = torch.arange(0, T + 1, dtype=dtype, device=device)
        return cls(torch.exp(-k * t**2 / T**2))


def _check_sched(sched: object) -> Schedule:
    if not isinstance(sched, Schedule):
        raise TypeError(f"sched must be a Schedule, got {type(sched).__name__}")
    return sched


def _check_t(t: object, sched: Schedule, name: str = "t", *, ge: int = 0) -> int:
    return check_int(t, name, ge=ge, le=sched.T)


def uniform_timesteps(T: int, K: int) -> list[int]:
    """The decreasing sub-sequence ``[T, T - T/K, ..., 0]`` of ``K + 1`` times (rounded; P20).

    ``K`` reverse steps; the sequence always starts at ``T`` and ends at ``0``.
    """
    T = check_int(T, "T", ge=1)
    K = check_int(K, "K", ge=1, le=T)
    return [round(T * i / K) for i in range(K, -1, -1)]


def q_sample(x0: torch.Tensor, t: int, sched: Schedule, noise: torch.Tensor) -> torch.Tensor:
    """Draw from the forward marginal ``x_t = abar_t x_0 + bbar_t eps`` (Derived in P19).

    ``x0`` and ``noise`` have the same shape ``(..., d)``; returns that shape.
    """
    sched = _check_sched(sched)
    check_tensor(x0, "x0")
    check_tensor(noise, "noise")
    if noise.shape != x0.shape:
        raise ValueError(f"noise must have the shape of x0 {tuple(x0.shape)}, got {tuple(noise.shape)}")
    t = _check_t(t, sched)
    a, b = sched.alpha_bar[t].to(x0.dtype), sched.beta_bar[t].to(x0.dtype)
    return a * x0 + b * noise


def ddim_coeffs(sched: Schedule, t: int, t_prev: int, sigma: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
    """Coefficients of ``p(x_s | x_t, x_0) = N(kappa x_t + lam x_0, sigma^2 I)``, ``s = t_prev < t`` (P20).

    Solving ``abar_s = kappa abar_t + lam`` and ``bbar_s^2 = kappa^2 bbar_t^2 + sigma^2``:

        kappa = sqrt(bbar_s^2 - sigma^2) / bbar_t,   lam = abar_s - abar_t kappa.

    Requires ``0 <= sigma <= bbar_s``. Returns two 0-d tensors in the schedule's dtype.
    """
    sched = _check_sched(sched)
    t = _check_t(t, sched, ge=1)
    t_prev = _check_t(t_prev, sched, "t_prev")
    if t_prev >= t:
        raise ValueError(f"t_prev must be < t, got t_prev={t_prev}, t={t}")
    sig = check_real(sigma, "sigma", ge=0)
    bs = sched.beta_bar[t_prev]
    if sig > float(bs) * (1 + 1e-12) + 1e-15:
        raise ValueError(f"sigma must be <= bbar_(t_prev) = {float(bs):.6g}, got {sig:.6g}")
    root = (bs**2 - sig**2).clamp_min(0).sqrt()
    kappa = root / sched.beta_bar[t]
    lam = sched.alpha_bar[t_prev] - sched.alpha_bar[t] * kappa
    return kappa, lam


def sigma_eta(sched: Schedule, t: int, t_prev: int, eta: float = 1.0) -> torch.Tensor:
    """DDIM's ``sigma = eta * (bbar_s / bbar_t) sqrt(1 - abar_t^2 / abar_s^2)``, ``s = t_prev`` (P20).

    ``eta = 1`` is the DDPM posterior standard deviation, ``eta = 0`` the deterministic DDIM.
    """
    sched = _check_sched(sched)
    t = _check_t(t, sched, ge=1)
    t_prev = _check_t(t_prev, sched, "t_prev")
    if t_prev >= t:
        raise ValueError(f"t_prev must be < t, got t_prev={t_prev}, t={t}")
    eta = check_real(eta, "eta", ge=0, le=1)
    a, bb = sched.alpha_bar, sched.beta_bar
    return eta * bb[t_prev] / bb[t] * (1 - (a[t] / a[t_prev]) ** 2).clamp_min(0).sqrt()


def sigma_beta(sched: Schedule, t: int, t_prev: int) -> torch.Tensor:
    """The other classic choice ``sigma = sqrt(1 - abar_t^2 / abar_s^2)`` (``= beta_t`` for one step).

    Clipped to ``bbar_s`` so that ``kappa`` stays real (it is not at the last step otherwise).
    """
    sched = _check_sched(sched)
    t = _check_t(t, sched, ge=1)
    t_prev = _check_t(t_prev, sched, "t_prev")
    if t_prev >= t:
        raise ValueError(f"t_prev must be < t, got t_prev={t_prev}, t={t}")
    a = sched.alpha_bar
    return torch.minimum((1 - (a[t] / a[t_prev]) ** 2).sqrt(), sched.beta_bar[t_prev])


def ddpm_posterior(x_t: torch.Tensor, x0: torch.Tensor, sched: Schedule, t: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std of the DDPM posterior ``p(x_{t-1} | x_t, x_0)`` by Bayes (P19, P20).

        mean = (abar_{t-1} beta_t^2 x_0 + alpha_t bbar_{t-1}^2 x_t) / bbar_t^2,
        std  = bbar_{t-1} beta_t / bbar_t.

    ``x_t`` and ``x0`` have the same shape; returns ``(mean, std)`` with ``std`` a 0-d tensor.
    """
    sched = _check_sched(sched)
    check_tensor(x_t, "x_t")
    check_tensor(x0, "x0")
    if x_t.shape != x0.shape:
        raise ValueError(f"x0 must have the shape of x_t {tuple(x_t.shape)}, got {tuple(x0.shape)}")
    t = _check_t(t, sched, ge=1)
    ab, bb, al, be = sched.alpha_bar, sched.beta_bar, sched.alpha, sched.beta
    mean = (ab[t - 1] * be[t] ** 2 * x0 + al[t] * bb[t - 1] ** 2 * x_t) / bb[t] ** 2
    return mean.to(x_t.dtype), (bb[t - 1] * be[t] / bb[t]).to(x_t.dtype)


def ddim_step(x_t: torch.Tensor, eps_hat: torch.Tensor, sched: Schedule, t: int, t_prev: int, *,
              sigma: torch.Tensor | float = 0.0, noise: torch.Tensor | None = None) -> torch.Tensor:
    """One generalised reverse step ``x_t -> x_s`` (``s = t_prev``) with the plug-in estimate of ``x_0`` (P20).

        x0_hat = (x_t - bbar_t eps_hat) / abar_t,
        x_s    = kappa x_t + lam x0_hat + sigma z,

    which equals Su's ``(abar_s/abar_t) (x_t - (bbar_t - (abar_t/abar_s) sqrt(bbar_s^2 - sigma^2)) eps_hat) + sigma z``.
    ``x_t``, ``eps_hat`` and ``noise`` (needed when ``sigma > 0``) share the shape ``(B, ...)``.
    """
    check_tensor(x_t, "x_t")
    check_tensor(eps_hat, "eps_hat")
    if eps_hat.shape != x_t.shape:
        raise ValueError(f"eps_hat must have the shape of x_t {tuple(x_t.shape)}, got {tuple(eps_hat.shape)}")
    kappa, lam = ddim_coeffs(sched, t, t_prev, sigma)
    x0_hat = (x_t - sched.beta_bar[t] * eps_hat) / sched.alpha_bar[t]
    out = kappa * x_t + lam * x0_hat
    sig = float(sigma)
    if sig > 0:
        if noise is None:
            raise ValueError("noise is required when sigma > 0")
        check_tensor(noise, "noise")
        if noise.shape != x_t.shape:
            raise ValueError(f"noise must have the shape of x_t {tuple(x_t.shape)}, got {tuple(noise.shape)}")
        out = out + sig * noise
    return out.to(x_t.dtype)


def sample(eps_fn: EpsFn, sched: Schedule, x_T: torch.Tensor, *, timesteps: Sequence[int] | None = None,
           eta: float = 1.0, sigma_rule: str = "eta", generator: torch.Generator | None = None,
           return_traj: bool = False) -> torch.Tensor:
    """Reverse diffusion from ``x_T`` along a decreasing ``timesteps`` list ending at 0 (P19, P20).

    ``eps_fn(x, t)`` predicts the noise at integer time ``t``. ``sigma_rule="eta"`` uses
    :func:`sigma_eta` (``eta = 1``: DDPM ancestral sampling; ``eta = 0``: DDIM), ``"beta"`` uses
    :func:`sigma_beta`. Default ``timesteps``: all of ``T, T-1, ..., 0``. Noise is drawn on the
    CPU in float64 from ``generator`` and cast to ``x_T``'s device and dtype. Returns ``x_0``
    of shape ``x_T.shape``, or with ``return_traj=True`` the stack of all visited states,
    shape ``(len(timesteps), *x_T.shape)``. The loop over steps is sequential by nature.
    """
    sched = _check_sched(sched)
    check_tensor(x_T, "x_T", min_ndim=1)
    if not callable(eps_fn):
        raise TypeError("eps_fn must be callable")
    ts = list(range(sched.T, -1, -1)) if timesteps is None else [int(v) for v in timesteps]
    if len(ts) < 2 or ts[-1] != 0 or any(a <= b for a, b in zip(ts, ts[1:])) or ts[0] > sched.T:
        raise ValueError("timesteps must be strictly decreasing, within [0, T], and end at 0")
    if sigma_rule not in ("eta", "beta"):
        raise ValueError(f"sigma_rule must be 'eta' or 'beta', got {sigma_rule!r}")
    eta = check_real(eta, "eta", ge=0, le=1)
    x = x_T
    traj = [x]
    for t, s in zip(ts[:-1], ts[1:]):
        sig = sigma_eta(sched, t, s, eta) if sigma_rule == "eta" else sigma_beta(sched, t, s)
        noise = None
        if float(sig) > 0:
            # float64 on the CPU, then cast: the draws do not depend on dtype or device
            noise = torch.randn(x.shape, generator=generator, dtype=torch.float64).to(device=x.device, dtype=x.dtype)
        x = ddim_step(x, eps_fn(x, t), sched, t, s, sigma=sig, noise=noise)
        traj.append(x)
    return torch.stack(traj) if return_traj else x


def eps_loss(eps_fn: EpsFn, x0: torch.Tensor, sched: Schedule, t: int, noise: torch.Tensor) -> torch.Tensor:
    """The noise-prediction loss ``||eps - eps_fn(abar_t x_0 + bbar_t eps, t)||^2`` per sample (P19).

    ``x0``, ``noise``: shape ``(B, d)``; returns the per-sample sum of squares, shape ``(B,)``.
    """
    check_tensor(x0, "x0", ndim=2)
    x_t = q_sample(x0, t, sched, noise)
    return ((noise - eps_fn(x_t, t)) ** 2).sum(-1)


def _gmm_args(means: torch.Tensor, stds: torch.Tensor, weights: torch.Tensor) -> None:
    check_tensor(means, "means", ndim=2)
    check_tensor(stds, "stds", ndim=1)
    check_tensor(weights, "weights", ndim=1)
    K = means.shape[0]
    if stds.shape[0] != K or weights.shape[0] != K:
        raise ValueError(f"stds and weights must have length K = {K} (rows of means)")
    if bool((stds < 0).any()):
        raise ValueError("stds must be >= 0")
    if bool((weights <= 0).any()):
        raise ValueError("weights must be > 0")


def gmm_posterior_mean(x: torch.Tensor, means: torch.Tensor, stds: torch.Tensor, weights: torch.Tensor, *,
                       alpha: float, beta: float) -> torch.Tensor:
    """Exact ``E[x_0 | x]`` for ``x = alpha x_0 + beta eps`` and isotropic Gaussian-mixture data (P19, P20).

    Data: ``x_0 ~ sum_k w_k N(m_k, s_k^2 I)`` in ``d`` dimensions (``means`` ``(K, d)``, ``stds``
    ``(K,)``, a zero std is a point mass; ``weights`` ``(K,)``, normalised here). Per component,
    ``x | k ~ N(alpha m_k, (alpha^2 s_k^2 + beta^2) I)`` and

        E[x_0 | x, k] = m_k + alpha s_k^2 (x - alpha m_k) / (alpha^2 s_k^2 + beta^2);

    the components are weighted by their posterior responsibilities (a ``logsumexp`` softmax).
    ``x``: ``(B, d)``; returns ``(B, d)``. Needs ``beta > 0``.
    """
    check_tensor(x, "x", ndim=2)
    _gmm_args(means, stds, weights)
    if means.shape[1] != x.shape[1]:
        raise ValueError(f"means must have d = {x.shape[1]} columns, got {means.shape[1]}")
    alpha = check_real(alpha, "alpha", ge=0)
    beta = check_real(beta, "beta", gt=0)
    m, s2 = means.to(x.dtype), stds.to(x.dtype) ** 2
    v = alpha**2 * s2 + beta**2                                         # (K,)
    d = x.shape[1]
    sq = ((x[:, None, :] - alpha * m[None]) ** 2).sum(-1)               # (B, K)
    logits = torch.log(weights.to(x.dtype)) - 0.5 * sq / v - 0.5 * d * torch.log(v)
    r = torch.exp(logits - torch.logsumexp(logits, dim=-1, keepdim=True))  # (B, K) responsibilities
    cond = m[None] + (alpha * s2 / v)[None, :, None] * (x[:, None, :] - alpha * m[None])
    return (r[..., None] * cond).sum(1)


def gmm_eps(x: torch.Tensor, means: torch.Tensor, stds: torch.Tensor, weights: torch.Tensor, *,
            alpha: float, beta: float) -> torch.Tensor:
    """The optimal noise predictor ``E[eps | x] = (x - alpha E[x_0 | x]) / beta`` (P19, P20).

    Same arguments and shapes as :func:`gmm_posterior_mean`; it minimises the loss of :func:`eps_loss`.
    """
    x0 = gmm_posterior_mean(x, means, stds, weights, alpha=alpha, beta=beta)
    return (x - alpha * x0) / beta


def gaussian_sampler_std(s: float, sched: Schedule, timesteps: Sequence[int], *, eta: float = 1.0,
                         sigma_rule: str = "eta") -> float:
    """Exact final std of a sampler with the *oracle* noise model on 1-D data ``N(0, s^2)`` (P20).

    The oracle is linear, ``eps*(x) = bbar_t x / (abar_t^2 s^2 + bbar_t^2)``, so each step maps
    ``x -> g x + sigma z`` and the variance obeys ``v <- g^2 v + sigma^2`` from ``v_T = 1``.
    """
    s = check_real(s, "s", gt=0)
    sched = _check_sched(sched)
    ts = [int(v) for v in timesteps]
    if len(ts) < 2 or ts[-1] != 0 or any(a <= b for a, b in zip(ts, ts[1:])) or ts[0] > sched.T:
        raise ValueError("timesteps must be strictly decreasing, within [0, T], and end at 0")
    if sigma_rule not in ("eta", "beta"):
        raise ValueError(f"sigma_rule must be 'eta' or 'beta', got {sigma_rule!r}")
    v = torch.ones((), dtype=sched.alpha_bar.dtype, device=sched.alpha_bar.device)
    a, b = sched.alpha_bar, sched.beta_bar
    for t, u in zip(ts[:-1], ts[1:]):
        sig = sigma_eta(sched, t, u, eta) if sigma_rule == "eta" else sigma_beta(sched, t, u)
        kappa, lam = ddim_coeffs(sched, t, u, sig)
        c = b[t] / (a[t] ** 2 * s**2 + b[t] ** 2)
        g = kappa + lam * (1 - b[t] * c) / a[t]
        v = g**2 * v + sig**2
    return float(v.sqrt())
