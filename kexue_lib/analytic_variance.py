"""The optimal reverse variance of diffusion samplers (Analytic-DPM), in Su's notation.

Derived in P21 (Su Jianlin, "optimal diffusion variance estimation (I)", after Bao et al.,
Analytic-DPM, arXiv:2201.06503).

Convention (Su's, variance preserving). The forward marginal is

    x_t = abar_t x_0 + bbar_t eps,    abar_t^2 + bbar_t^2 = 1,

so **Su's abar_t is the square root of the DDPM paper's cumulative alpha-bar**. A sampling
path is given by the increasing sequence ``abar = (abar_{tau_0} = 1, abar_{tau_1}, ...,
abar_{tau_K})`` from data (index 0) to noise (index K); ``bbar`` is always
``sqrt(1 - abar^2)``.

One step of the DDIM family (P20) from time ``t`` to the previous time ``s`` uses

    p(x_s | x_t, x_0) = N(kappa x_t + gamma x_0, sigma^2 I),
    kappa = sqrt(bbar_s^2 - sigma^2) / bbar_t,   gamma = abar_s - abar_t kappa.

Plugging a point estimate ``xbar(x_t)`` of ``x_0`` ignores the spread of ``p(x_0 | x_t)``.
Approximating that posterior by ``N(xbar(x_t), sbar_t^2 I)`` and integrating ``x_0`` out gives
the corrected step variance ``sigma^2 + gamma^2 sbar_t^2``. The scalar ``sbar_t^2`` (the
posterior variance averaged over ``x_t`` and over the ``d`` coordinates) has two Monte Carlo
estimators: Su's, ``Var[x_0] - E||xbar(x_t) - E x_0||^2 / d``, and Analytic-DPM's,
``(bbar^2 / abar^2) (1 - E||eps_hat(x_t)||^2 / d)``. They agree for the exact model.
Su's form is far more stable at high noise.

Tensors: data batches are ``(N, d)``; stacked over timesteps they are ``(K, N, d)``. An
``eps_fn(x_t, abar, bbar)`` returns the predicted noise with the shape of ``x_t``; ``abar``
and ``bbar`` arrive as tensors broadcastable against ``x_t`` (0-d, or ``(K, 1, 1)``).
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from ._checks import check_int, check_real, check_tensor

__all__ = [
    "su_alpha_bar",
    "uniform_path",
    "ddim_sigma",
    "ddim_coefficients",
    "gaussian_posterior_var",
    "mixture_posterior",
    "posterior_var_su",
    "posterior_var_bao",
    "posterior_var_upper_bound",
    "clip_posterior_var",
    "posterior_var_table",
    "ddim_sample",
    "gaussian_sampler_var",
]

EpsFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _beta_bar(abar: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(torch.clamp(1.0 - abar * abar, min=0.0))


def _check_abar(abar: object, name: str = "alpha_bar", *, ndim: int | None = None) -> torch.Tensor:
    a = check_tensor(abar, name, ndim=ndim)
    if a.numel() and not bool(((a > 0) & (a <= 1)).all()):
        raise ValueError(f"{name} must lie in (0, 1]")
    return a


def _check_path(abar: object, name: str = "alpha_bar") -> torch.Tensor:
    a = _check_abar(abar, name, ndim=1)
    if a.numel() < 2:
        raise ValueError(f"{name} must have at least 2 entries (data and noise ends), got {a.numel()}")
    if float(a[0]) != 1.0:
        raise ValueError(f"{name}[0] must be 1 (the data end of the path), got {float(a[0])}")
    if not bool((a[1:] < a[:-1]).all()):
        raise ValueError(f"{name} must be strictly decreasing from data to noise")
    return a


def su_alpha_bar(T: int = 1000, *, c: float = 0.02, dtype: torch.dtype = torch.float64,
                 device: torch.device | str | None = None) -> torch.Tensor:
    """Su's schedule ``alpha_t = sqrt(1 - c t / T)``, cumulated: ``abar_t = prod_{k<=t} alpha_k``.

    Returns the ``(T + 1,)`` tensor ``abar_0 = 1, abar_1, ..., abar_T`` (Derived in P19;
    used in P21). For ``T = 1000, c = 0.02``, ``abar_T = 0.006482``.
    """
    T = check_int(T, "T", ge=1)
    c = check_real(c, "c", gt=0.0)
    if c >= 1.0:  # c t / T must stay < 1 for every t <= T
        raise ValueError(f"c must be < 1 so that every alpha_t > 0, got {c}")
    t = torch.arange(1, T + 1, dtype=dtype, device=device)
    log_a = 0.5 * torch.log1p(-c * t / T)
    out = torch.ones(T + 1, dtype=dtype, device=device)
    out[1:] = torch.exp(torch.cumsum(log_a, 0))
    return out


def uniform_path(alpha_bar: torch.Tensor, steps: int) -> torch.Tensor:
    """The sub-path ``abar[tau_i]`` with ``tau_i = round(i T / steps)``, ``i = 0..steps``.

    ``alpha_bar`` is a full schedule ``(T + 1,)`` starting at 1; the result has shape
    ``(steps + 1,)`` (step skipping as in P20/P21).
    """
    a = _check_path(alpha_bar)
    T = a.numel() - 1
    steps = check_int(steps, "steps", ge=1, le=T)
    idx = torch.round(torch.arange(steps + 1, dtype=torch.float64) * T / steps).long().to(a.device)
    return a[idx]


def ddim_sigma(alpha_bar_t: torch.Tensor, alpha_bar_s: torch.Tensor, *, eta: float = 1.0) -> torch.Tensor:
    """DDIM's noise scale for a step from ``t`` to ``s < t`` (Derived in P20).

    Equation::

        sigma = eta * (bbar_s / bbar_t) * sqrt(1 - abar_t^2 / abar_s^2)

    ``eta = 1`` is DDPM's posterior choice, ``eta = 0`` the deterministic DDIM.
    ``alpha_bar_t <= alpha_bar_s`` elementwise, any broadcastable shapes.
    """
    at = _check_abar(alpha_bar_t, "alpha_bar_t")
    as_ = _check_abar(alpha_bar_s, "alpha_bar_s")
    eta = check_real(eta, "eta", ge=0.0, le=1.0)
    if not bool((at <= as_).all()):
        raise ValueError("alpha_bar_t must be <= alpha_bar_s (t is the later, noisier time)")
    bt, bs = _beta_bar(at), _beta_bar(as_)
    ratio = torch.clamp(1.0 - (at / as_) ** 2, min=0.0)
    return eta * bs / torch.clamp(bt, min=torch.finfo(bt.dtype).tiny) * torch.sqrt(ratio)


def ddim_coefficients(alpha_bar_t: torch.Tensor, alpha_bar_s: torch.Tensor,
                      sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(kappa, gamma)`` of ``p(x_s | x_t, x_0) = N(kappa x_t + gamma x_0, sigma^2 I)`` (P20, P21).

    Equation::

        kappa = sqrt(bbar_s^2 - sigma^2) / bbar_t,    gamma = abar_s - abar_t * kappa

    Requires ``0 <= sigma <= bbar_s`` and ``alpha_bar_t < 1``. Broadcastable shapes.
    """
    at = _check_abar(alpha_bar_t, "alpha_bar_t")
    as_ = _check_abar(alpha_bar_s, "alpha_bar_s")
    sigma = check_tensor(sigma, "sigma")
    bt, bs = _beta_bar(at), _beta_bar(as_)
    if not bool((bt > 0).all()):
        raise ValueError("alpha_bar_t must be < 1 (bbar_t > 0)")
    if not bool(((sigma >= 0) & (sigma <= bs * (1 + 1e-12))).all()):
        raise ValueError("sigma must lie in [0, bbar_s]")
    kappa = torch.sqrt(torch.clamp(bs * bs - sigma * sigma, min=0.0)) / bt
    return kappa, as_ - at * kappa


def gaussian_posterior_var(data_var: float | torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """Exact ``Var[x_0 | x_t]`` per coordinate for data ``N(m, s^2 I)`` (P21's closed form).

    Equation::

        sbar_t^2 = s^2 bbar_t^2 / (abar_t^2 s^2 + bbar_t^2)

    ``data_var`` is ``s^2`` (scalar or broadcastable tensor); output has the broadcast shape.
    """
    a = _check_abar(alpha_bar)
    s2 = check_real(data_var, "data_var", ge=0.0) if not isinstance(data_var, torch.Tensor) else data_var
    if isinstance(s2, torch.Tensor):
        check_tensor(s2, "data_var")
        if not bool((s2 >= 0).all()):
            raise ValueError("data_var must be >= 0")
    b2 = 1.0 - a * a
    return s2 * b2 / (a * a * s2 + b2)


def mixture_posterior(x_t: torch.Tensor, means: torch.Tensor, stds: torch.Tensor, weights: torch.Tensor,
                      alpha_bar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact posterior mean and per-coordinate variance of ``x_0 | x_t`` for isotropic Gaussian-mixture data.

    Data: ``sum_c w_c N(m_c, s_c^2 I)`` in ``d`` dimensions. Each component stays Gaussian
    under ``x_t = abar x_0 + bbar eps`` (variance ``v_c = abar^2 s_c^2 + bbar^2``), and the
    posterior is a mixture with responsibilities ``r_c(x_t)`` (computed with ``logsumexp``)
    and component means ``m_c + abar s_c^2 (x_t - abar m_c) / v_c``.

    Parameters
    ----------
    x_t
        ``(..., N, d)`` noised points.
    means, stds, weights
        ``(C, d)``, ``(C,)`` with ``stds > 0``, ``(C,)`` with ``weights >= 0`` summing to 1.
    alpha_bar
        Su's ``abar`` in (0, 1), broadcastable against ``x_t`` (0-d or ``(K, 1, 1)``).

    Returns
    -------
    tuple of torch.Tensor
        ``E[x_0 | x_t]`` of shape ``(..., N, d)`` and ``tr Cov[x_0 | x_t] / d`` of shape
        ``(..., N)``. This is the oracle denoiser ``xbar`` used in P21.
    """
    x = check_tensor(x_t, "x_t", min_ndim=2)
    m = check_tensor(means, "means", ndim=2)
    s = check_tensor(stds, "stds", ndim=1)
    w = check_tensor(weights, "weights", ndim=1)
    a = _check_abar(alpha_bar)
    if m.shape[1] != x.shape[-1]:
        raise ValueError(f"means must have shape (C, {x.shape[-1]}), got {tuple(m.shape)}")
    if s.shape[0] != m.shape[0] or w.shape[0] != m.shape[0]:
        raise ValueError("stds and weights must have shape (C,) matching means")
    if not bool((s > 0).all()):
        raise ValueError("stds must be > 0")
    if not bool((w >= 0).all()) or abs(float(w.sum()) - 1.0) > 1e-6:
        raise ValueError("weights must be >= 0 and sum to 1")
    if not bool((a < 1).all()):
        raise ValueError("alpha_bar must be < 1 (some noise is needed for a posterior)")
    d = x.shape[-1]
    try:
        a_ = torch.broadcast_to(a, x.shape)[..., :1]             # (..., N, 1): one abar per point
    except RuntimeError:
        raise ValueError(f"alpha_bar of shape {tuple(a.shape)} does not broadcast against x_t {tuple(x.shape)}") from None
    b2 = 1.0 - a_ * a_
    v = a_ * a_ * s * s + b2                                     # (..., N, C) noised variances
    diff = x.unsqueeze(-2) - a_.unsqueeze(-1) * m                # (..., N, C, d)
    sq = (diff * diff).sum(-1)                                   # (..., N, C)
    logc = torch.log(w) - 0.5 * sq / v - 0.5 * d * torch.log(v)
    r = torch.softmax(logc, dim=-1)                              # responsibilities
    gain = (a_ * s * s / v).unsqueeze(-1)                        # (..., N, C, 1)
    mu_c = m + gain * diff                                       # (..., N, C, d)
    var_c = s * s * b2 / v                                       # (..., N, C) within-component
    mean = (r.unsqueeze(-1) * mu_c).sum(-2)
    second = (r * (var_c + (mu_c * mu_c).sum(-1) / d)).sum(-1)
    return mean, second - (mean * mean).sum(-1) / d


def posterior_var_su(x0: torch.Tensor, x0_hat: torch.Tensor) -> torch.Tensor:
    """Su's estimate of the averaged posterior variance (P21, eq. "var-1").

    Equation::

        sbar_t^2 = (1/d) E||x_0 - mu_0||^2 - (1/d) E||xbar(x_t) - mu_0||^2,   mu_0 = E x_0,

    with both expectations replaced by batch means (``mu_0`` is the batch mean of ``x0``;
    the data variance uses the ``1/N`` normalisation). ``x0``: ``(..., N, d)`` data samples;
    ``x0_hat``: ``(..., M, d)`` denoiser outputs ``xbar(x_t)`` at ``x_t`` drawn from the
    same data. Returns shape ``(...)``. No clipping: see :func:`clip_posterior_var`.
    """
    x0 = check_tensor(x0, "x0", min_ndim=2)
    xh = check_tensor(x0_hat, "x0_hat", min_ndim=2)
    if xh.shape[-1] != x0.shape[-1]:
        raise ValueError(f"x0_hat must have d={x0.shape[-1]} columns, got shape {tuple(xh.shape)}")
    mu0 = x0.mean(-2, keepdim=True)
    data_var = ((x0 - mu0) ** 2).sum(-1).mean(-1) / x0.shape[-1]
    spread = ((xh - mu0) ** 2).sum(-1).mean(-1) / x0.shape[-1]
    return data_var - spread


def posterior_var_bao(eps_hat: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """Analytic-DPM's estimate of the averaged posterior variance (P21, eq. "var-2").

    Equation::

        sbar_t^2 = (bbar_t^2 / abar_t^2) (1 - (1/d) E||eps_hat(x_t)||^2)

    ``eps_hat``: ``(..., N, d)`` predicted noise at ``x_t ~ p(x_t)``; ``alpha_bar``: Su's
    ``abar_t`` with shape ``(...)`` (or 0-d). Returns shape ``(...)``. The prefactor
    ``bbar^2 / abar^2`` multiplies the Monte Carlo error of ``E||eps_hat||^2``.
    """
    e = check_tensor(eps_hat, "eps_hat", min_ndim=2)
    a = _check_abar(alpha_bar)
    m2 = (e * e).sum(-1).mean(-1) / e.shape[-1]
    return (1.0 - a * a) / (a * a) * (1.0 - m2)


def posterior_var_upper_bound(data_var: float | torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """The smaller of the two upper bounds on ``sbar_t^2`` (P21): ``min(Var[x_0], bbar_t^2 / abar_t^2)``.

    Su's bound is ``Var[x_0]`` (itself ``<= ((b - a) / 2)^2`` for data in ``[a, b]``);
    Analytic-DPM's is ``bbar_t^2 / abar_t^2``. Shape: that of ``alpha_bar``.
    """
    a = _check_abar(alpha_bar)
    snr_bound = (1.0 - a * a) / (a * a)
    if isinstance(data_var, torch.Tensor):
        return torch.minimum(snr_bound, check_tensor(data_var, "data_var").to(snr_bound))
    return torch.clamp(snr_bound, max=check_real(data_var, "data_var", ge=0.0))


def clip_posterior_var(var: torch.Tensor, data_var: float | torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """Clip an estimate of ``sbar_t^2`` into ``[0, min(Var[x_0], bbar_t^2 / abar_t^2)]`` (P21).

    An imperfect model can make either estimator negative (Su's) or huge (Analytic-DPM's);
    the true value always lies in this interval. Shapes broadcast.
    """
    v = check_tensor(var, "var")
    return torch.minimum(torch.clamp(v, min=0.0), posterior_var_upper_bound(data_var, alpha_bar))


def posterior_var_table(eps_fn: EpsFn, x0: torch.Tensor, alpha_bar: torch.Tensor, *, method: str = "su",
                        clip: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
    """Monte Carlo table of ``sbar_t^2`` at ``K`` noise levels from a trained noise model (P21).

    For every level ``abar_k`` a fresh ``x_t = abar_k x_0 + bbar_k eps`` is drawn for each
    data row (noise drawn on the CPU from ``generator``, then moved to ``x0``'s device), the
    model is evaluated once on the whole ``(K, N, d)`` stack, and the chosen estimator is
    applied: ``"su"`` (:func:`posterior_var_su`, with ``xbar = (x_t - bbar eps_hat) / abar``)
    or ``"bao"`` (:func:`posterior_var_bao`).

    Parameters
    ----------
    eps_fn
        ``eps_fn(x_t, abar, bbar)`` with ``x_t`` of shape ``(K, N, d)`` and ``abar, bbar`` of
        shape ``(K, 1, 1)``; returns the predicted noise, shape ``(K, N, d)``.
    x0
        ``(N, d)`` data batch.
    alpha_bar
        ``(K,)`` Su's ``abar`` in (0, 1).
    method
        ``"su"`` or ``"bao"``.
    clip
        Clip into ``[0, min(Var[x_0], bbar^2 / abar^2)]`` with ``Var[x_0]`` the batch variance.
    generator
        CPU generator for the noise.

    Returns
    -------
    torch.Tensor
        ``(K,)`` estimates of ``sbar_t^2``.
    """
    x0 = check_tensor(x0, "x0", ndim=2)
    a = _check_abar(alpha_bar, "alpha_bar", ndim=1)
    if method not in ("su", "bao"):
        raise ValueError(f"method must be 'su' or 'bao', got {method!r}")
    if not bool((a < 1).all()):
        raise ValueError("alpha_bar must be < 1")
    K, (N, d) = a.numel(), x0.shape
    eps = torch.randn((K, N, d), generator=generator, dtype=x0.dtype).to(x0.device)
    ak = a.to(x0.dtype).view(K, 1, 1)
    bk = _beta_bar(ak)
    x_t = ak * x0 + bk * eps
    eps_hat = eps_fn(x_t, ak, bk)
    check_tensor(eps_hat, "eps_fn output")
    if eps_hat.shape != x_t.shape:
        raise ValueError(f"eps_fn must return shape {tuple(x_t.shape)}, got {tuple(eps_hat.shape)}")
    if method == "su":
        est = posterior_var_su(x0.expand(K, N, d), (x_t - bk * eps_hat) / ak)
    else:
        est = posterior_var_bao(eps_hat, a.to(x0.dtype))
    if clip:
        data_var = float(((x0 - x0.mean(0)) ** 2).mean())
        est = clip_posterior_var(est, data_var, a.to(x0.dtype))
    return est


def ddim_sample(eps_fn: EpsFn, x_T: torch.Tensor, alpha_bar: torch.Tensor, *, eta: float = 1.0,
                posterior_var: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """DDIM/DDPM sampling along a path, optionally with the Analytic-DPM variance (P20, P21).

    Step ``k -> k - 1`` (times ``t = tau_k``, ``s = tau_{k-1}``)::

        xbar  = (x_t - bbar_t eps_fn(x_t)) / abar_t
        x_s   = kappa x_t + gamma xbar + sqrt(sigma^2 + gamma^2 sbar_t^2) z,   z ~ N(0, I)

    with ``sigma = ddim_sigma(abar_t, abar_s, eta=eta)`` and ``kappa, gamma`` from
    :func:`ddim_coefficients`; ``sbar_t^2 = posterior_var[k - 1]`` (zero if ``None``, which is
    plain DDIM/DDPM). The loop over the ``K`` steps is sequential by nature; each step is
    batched over the ``(N, d)`` samples.

    Parameters
    ----------
    eps_fn
        ``eps_fn(x_t, abar, bbar)`` with 0-d ``abar, bbar``; returns the shape of ``x_t``.
    x_T
        ``(N, d)`` starting noise.
    alpha_bar
        ``(K + 1,)`` path, ``alpha_bar[0] = 1`` (data) strictly decreasing to the noise end.
    eta
        DDIM's ``eta`` in [0, 1].
    posterior_var
        ``(K,)`` values ``sbar^2`` at ``alpha_bar[1:]`` (>= 0), or ``None``.
    generator
        CPU generator for the step noise.

    Returns
    -------
    torch.Tensor
        ``(N, d)`` samples at the data end.
    """
    x = check_tensor(x_T, "x_T", ndim=2)
    a = _check_path(alpha_bar).to(device=x.device, dtype=x.dtype)
    eta = check_real(eta, "eta", ge=0.0, le=1.0)
    K = a.numel() - 1
    if posterior_var is not None:
        pv = check_tensor(posterior_var, "posterior_var", ndim=1)
        if pv.numel() != K:
            raise ValueError(f"posterior_var must have shape ({K},), got {tuple(pv.shape)}")
        if not bool((pv >= 0).all()):
            raise ValueError("posterior_var must be >= 0 (clip it first)")
        pv = pv.to(dtype=x.dtype, device=x.device)
    at_all, as_all = a[1:], a[:-1]                               # coefficients of all K steps at once
    sigma = ddim_sigma(at_all, as_all, eta=eta)
    kappa, gamma = ddim_coefficients(at_all, as_all, sigma)
    var = sigma * sigma + (gamma * gamma * pv if posterior_var is not None else 0.0)
    std, bt_all = torch.sqrt(var), _beta_bar(at_all)
    for k in range(K - 1, -1, -1):                                # step tau_{k+1} -> tau_k
        at, bt = at_all[k], bt_all[k]
        xbar = (x - bt * eps_fn(x, at, bt)) / at
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        x = kappa[k] * x + gamma[k] * xbar + std[k] * z
    return x


def gaussian_sampler_var(data_var: float, alpha_bar: torch.Tensor, *, eta: float = 1.0,
                         corrected: bool = False, init_var: float = 1.0) -> torch.Tensor:
    """Exact variance of the samples of :func:`ddim_sample` on data ``N(0, s^2 I)`` with the oracle model.

    For Gaussian data the oracle denoiser is linear, ``xbar(x) = c_t x`` with
    ``c_t = abar_t s^2 / (abar_t^2 s^2 + bbar_t^2)``, so one step maps the per-coordinate
    variance ``v`` to::

        v <- (kappa + gamma c_t)^2 v + sigma^2 + [corrected] gamma^2 sbar_t^2

    with ``sbar_t^2`` from :func:`gaussian_posterior_var`. Starting from ``init_var`` at the
    noise end (1 for ``x_T ~ N(0, I)``; ``abar_T^2 s^2 + bbar_T^2`` is the true ``p_T``), the
    result is the ``(K + 1,)`` variances along the path, index 0 being the final samples.
    With ``corrected=True`` and the true ``init_var`` every entry equals the true marginal
    variance ``abar^2 s^2 + bbar^2`` (P21).
    """
    s2 = check_real(data_var, "data_var", gt=0.0)
    a = _check_path(alpha_bar)
    eta = check_real(eta, "eta", ge=0.0, le=1.0)
    v0 = check_real(init_var, "init_var", ge=0.0)
    at, as_ = a[1:], a[:-1]
    sigma = ddim_sigma(at, as_, eta=eta)
    kappa, gamma = ddim_coefficients(at, as_, sigma)
    bt2 = 1.0 - at * at
    c = at * s2 / (at * at * s2 + bt2)
    add = sigma * sigma + (gamma * gamma * gaussian_posterior_var(s2, at) if corrected else 0.0)
    gain = (kappa + gamma * c) ** 2
    # v_{k-1} = gain_k v_k + add_k: an affine recursion run from the noise end to the data end.
    out = torch.empty_like(a)
    out[-1] = v0
    K = at.numel()
    for k in range(K, 0, -1):   # K scalar steps; cheap, and clearer than a log-space scan
        out[k - 1] = gain[k - 1] * out[k] + add[k - 1]
    return out
