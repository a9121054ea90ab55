"""Rectified flow: straight interpolation paths, their exact marginal velocity, few-step samplers (Derived in P33).

P33 (kexue.fm/archives/9497) builds an ODE between a data law ``p_0`` and a noise law ``p_1``
in two steps: pick a path ``x_t = phi_t(x_0, x_1)`` between *independent* samples, and regress a
function of ``(x_t, t)`` onto the path's time derivative. The regression optimum is the
conditional expectation

    v*(x, t) = E[ d phi_t / dt | x_t = x ],

and the ODE ``dx/dt = v*(x, t)`` has the same marginals as the path. For the straight line
(rectified flow, Liu, Gong and Liu, arXiv:2209.03003)

    x_t = (1 - t) x_0 + t x_1,        d x_t / dt = x_1 - x_0.

Conventions follow Su's post: ``x_0`` is data at ``t = 0``, ``x_1`` is noise at ``t = 1``, and
sampling integrates the ODE *backwards*, from ``t = 1`` to ``t = 0``. (The paper swaps the roles
of the two ends.)

When both ends are Gaussian mixtures, every quantity is closed form: given the component pair
``(k, l)``, ``x_t`` and ``u = x_1 - x_0`` are jointly Gaussian, so ``v*`` is a responsibility-weighted
sum of affine maps (:func:`marginal_velocity`). This module holds that oracle, fixed-step
Euler/Heun/RK4 integrators that count function evaluations (NFE), the straightness measure of
the paper, the reflow coupling, the regression loss, and a small time-conditioned MLP. Point
clouds are ``(N, d)`` tensors (batch first) and all outputs take the inputs' device and dtype.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from ._checks import check_int, check_real, check_tensor

__all__ = [
    "GaussianMixture",
    "interpolate",
    "path_marginal",
    "marginal_velocity",
    "odeint_fixed",
    "METHODS",
    "PATHS",
    "straightness",
    "reflow_pairs",
    "rf_loss",
    "VelocityMLP",
    "train_velocity",
]

Field = Callable[[torch.Tensor, float], torch.Tensor]

#: Fixed-step methods of :func:`odeint_fixed` and the field evaluations each step costs.
METHODS = {"euler": 1, "heun": 2, "rk4": 4}


def _check_callable(fn: object, name: str) -> None:
    if not callable(fn):
        raise TypeError(f"{name} must be callable, got {type(fn).__name__}")


def _check_points(x: object, name: str = "x") -> torch.Tensor:
    return check_tensor(x, name, ndim=2)


class GaussianMixture:
    """A Gaussian mixture in ``d`` dimensions with diagonal covariances (Derived in P33).

    ``p(x) = sum_k w_k N(x; mu_k, diag(s_k^2))``. Used as the two ends of a rectified flow,
    where the marginal velocity is then closed form (:func:`marginal_velocity`).

    Parameters
    ----------
    means
        ``(K, d)`` component means, floating dtype.
    stds
        ``(K,)`` isotropic or ``(K, d)`` per-coordinate standard deviations, all > 0.
    weights
        ``(K,)`` non-negative weights summing to 1 (to 1e-6).
    """

    def __init__(self, means: torch.Tensor, stds: torch.Tensor, weights: torch.Tensor) -> None:
        m = check_tensor(means, "means", ndim=2)
        s = check_tensor(stds, "stds", min_ndim=1)
        w = check_tensor(weights, "weights", ndim=1)
        k, d = m.shape
        if k == 0 or d == 0:
            raise ValueError(f"means must have shape (K, d) with K, d >= 1, got {tuple(m.shape)}")
        if s.ndim == 1 and s.shape[0] == k:
            s = s.unsqueeze(-1).expand(k, d)
        if s.shape != (k, d):
            raise ValueError(f"stds must have shape ({k},) or ({k}, {d}), got {tuple(stds.shape)}")
        if w.shape != (k,):
            raise ValueError(f"weights must have shape ({k},), got {tuple(w.shape)}")
        if s.dtype != m.dtype or w.dtype != m.dtype or s.device != m.device or w.device != m.device:
            raise TypeError("means, stds and weights must share one dtype and device")
        if not bool((s > 0).all()):
            raise ValueError("stds must be > 0")
        if not bool((w >= 0).all()) or abs(float(w.sum()) - 1.0) > 1e-6:
            raise ValueError("weights must be >= 0 and sum to 1")
        self.means, self.stds, self.weights = m, s.contiguous(), w

    @property
    def dim(self) -> int:
        """Dimension ``d`` of the space."""
        return self.means.shape[1]

    @property
    def mean(self) -> torch.Tensor:
        """Mixture mean ``sum_k w_k mu_k``, shape ``(d,)``."""
        return self.weights @ self.means

    def _x(self, x: object, name: str = "x") -> torch.Tensor:
        x = _check_points(x, name)
        if x.shape[1] != self.dim:
            raise ValueError(f"{name} must have shape (N, {self.dim}), got {tuple(x.shape)}")
        if x.dtype != self.means.dtype or x.device != self.means.device:
            raise TypeError(f"{name} must have the mixture's dtype and device ({self.means.dtype}, {self.means.device})")
        return x

    def _log_comp(self, x: torch.Tensor) -> torch.Tensor:
        """``log w_k + log N(x; mu_k, s_k^2)``, shape ``(N, K)``."""
        z = (x.unsqueeze(1) - self.means) / self.stds                        # (N, K, d)
        return (torch.log(self.weights) - 0.5 * (z * z).sum(-1) - torch.log(self.stds).sum(-1)
                - 0.5 * self.dim * math.log(2 * math.pi))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``log p(x)`` by logsumexp over components. ``x``: ``(N, d)``; output ``(N,)``."""
        return torch.logsumexp(self._log_comp(self._x(x)), dim=-1)

    def sample(self, n: int, *, gen: torch.Generator | None = None) -> torch.Tensor:
        """``n`` samples ``(n, d)``, drawn in float64 on the CPU with ``gen`` and then moved."""
        n = check_int(n, "n", ge=0)
        w = self.weights.detach().to("cpu", torch.float64)
        k = torch.multinomial(w, n, replacement=True, generator=gen) if n else torch.zeros(0, dtype=torch.long)
        e = torch.randn(n, self.dim, generator=gen, dtype=torch.float64)
        k = k.to(self.means.device)
        return self.means[k] + self.stds[k] * e.to(self.means.device, self.means.dtype)


#: Interpolation paths ``x_t = a_t x_0 + b_t x_1`` known to :func:`interpolate` and friends.
PATHS = ("linear", "cosine")


def _coeffs(t: torch.Tensor, path: object) -> tuple[torch.Tensor, ...]:
    """``(a_t, b_t, a'_t, b'_t)`` of an affine path, elementwise in ``t``."""
    if path == "linear":
        return 1 - t, t, -torch.ones_like(t), torch.ones_like(t)
    if path == "cosine":
        h = 0.5 * math.pi
        return torch.cos(h * t), torch.sin(h * t), -h * torch.sin(h * t), h * torch.cos(h * t)
    raise ValueError(f"path must be one of {PATHS}, got {path!r}")


def _check_pair(data: object, noise: object) -> tuple[GaussianMixture, GaussianMixture]:
    for obj, name in ((data, "data"), (noise, "noise")):
        if not isinstance(obj, GaussianMixture):
            raise TypeError(f"{name} must be a GaussianMixture, got {type(obj).__name__}")
    if data.dim != noise.dim:
        raise ValueError(f"data and noise must live in the same dimension, got {data.dim} and {noise.dim}")
    if data.means.dtype != noise.means.dtype or data.means.device != noise.means.device:
        raise TypeError("data and noise must share one dtype and device")
    return data, noise


def _times(t: object, n: int, like: torch.Tensor, *, lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
    """``t`` as an ``(n, 1)`` column of ``like``'s dtype/device, checked to lie in [lo, hi]."""
    if isinstance(t, torch.Tensor) and t.numel() != 1:
        t = check_tensor(t, "t", ndim=1)
        if t.shape[0] != n:
            raise ValueError(f"t must be a scalar or have shape ({n},), got {tuple(t.shape)}")
        if not bool(((t >= lo) & (t <= hi)).all()):
            raise ValueError(f"t must lie in [{lo}, {hi}]")
        return t.to(like.dtype).unsqueeze(-1)
    if isinstance(t, torch.Tensor):
        check_tensor(t, "t")
        tt = t.reshape(1, 1).to(like.dtype)
        if not lo <= float(tt) <= hi:
            raise ValueError(f"t must lie in [{lo}, {hi}], got {float(tt)}")
        return tt.expand(n, 1)
    tv = check_real(t, "t", ge=lo, le=hi)
    return torch.full((n, 1), tv, dtype=like.dtype, device=like.device)


def interpolate(x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor | float, *,
                path: str = "linear") -> tuple[torch.Tensor, torch.Tensor]:
    """Interpolation path between paired samples and its velocity (Derived in P33).

    Equations (``path="linear"`` is rectified flow; ``"cosine"`` is the trigonometric path
    ``a_t = cos(pi t / 2)``, ``b_t = sin(pi t / 2)``, another valid choice)::

        linear: x_t = (1 - t) x_0 + t x_1,        d x_t / dt = x_1 - x_0,
        affine: x_t = a_t x_0 + b_t x_1,          d x_t / dt = a'_t x_0 + b'_t x_1.

    Parameters
    ----------
    x0, x1
        ``(N, d)`` data and noise samples (paired row by row).
    t
        A scalar or an ``(N,)`` tensor of times in ``[0, 1]``.
    path
        ``"linear"`` (default) or ``"cosine"``.

    Returns
    -------
    tuple of torch.Tensor
        ``(x_t, u)``, both ``(N, d)``, with ``u = d x_t / dt`` the regression target.
    """
    x0, x1 = _check_points(x0, "x0"), _check_points(x1, "x1")
    if x0.shape != x1.shape:
        raise ValueError(f"x0 and x1 must have the same shape, got {tuple(x0.shape)} and {tuple(x1.shape)}")
    tt = _times(t, x0.shape[0], x0)
    a, b, da, db = _coeffs(tt, path)
    return a * x0 + b * x1, da * x0 + db * x1


def _pair_params(data: GaussianMixture, noise: GaussianMixture, t: torch.Tensor, path: str = "linear"):
    """Per pair ``(k, l)``: means ``(N, K, L, d)``, variances, covariances, log weights, mean velocity."""
    a, s2 = data.means[:, None, :], (data.stds**2)[:, None, :]             # (K, 1, d)
    b, r2 = noise.means[None, :, :], (noise.stds**2)[None, :, :]           # (1, L, d)
    ca, cb, da, db = _coeffs(t[:, :, None, None], path)                     # each (N, 1, 1, 1)
    mean = ca * a + cb * b                                                  # (N, K, L, d)
    var = ca**2 * s2 + cb**2 * r2                                           # Var x_t | (k, l)
    cov = ca * da * s2 + cb * db * r2                                       # Cov(u, x_t) | (k, l)
    logw = torch.log(data.weights)[:, None] + torch.log(noise.weights)[None, :]   # (K, L)
    return mean, var, cov, logw, da * a + db * b


def path_marginal(data: GaussianMixture, noise: GaussianMixture, t: float, *,
                  path: str = "linear") -> GaussianMixture:
    """Law of ``x_t = (1 - t) x_0 + t x_1`` for independent mixture ends (Derived in P33).

    A mixture over all ``K * L`` component pairs, with means ``(1 - t) a_k + t b_l``, variances
    ``(1 - t)^2 s_k^2 + t^2 r_l^2`` and weights ``w_k w'_l``. ``t`` is a float in ``[0, 1]``;
    ``path="cosine"`` replaces ``(1 - t, t)`` by ``(cos(pi t/2), sin(pi t/2))``.
    """
    data, noise = _check_pair(data, noise)
    tt = _times(t, 1, data.means)
    mean, var, _, logw, _ = _pair_params(data, noise, tt, path)
    d = data.dim
    return GaussianMixture(mean.reshape(-1, d), var.sqrt().reshape(-1, d), logw.exp().reshape(-1))


def marginal_velocity(x: torch.Tensor, t: torch.Tensor | float, data: GaussianMixture,
                      noise: GaussianMixture, *, path: str = "linear") -> torch.Tensor:
    """Exact rectified-flow velocity ``v*(x, t) = E[x_1 - x_0 | x_t = x]`` for mixture ends (Derived in P33).

    Given the component pair ``(k, l)`` (data component ``N(a_k, s_k^2)``, noise component
    ``N(b_l, r_l^2)``, per coordinate), ``x_t`` and ``u = x_1 - x_0`` are jointly Gaussian, so::

        E[u | x_t = x, k, l] = (b_l - a_k) + (t r_l^2 - (1 - t) s_k^2) / V_kl * (x - m_kl),
        m_kl = (1 - t) a_k + t b_l,     V_kl = (1 - t)^2 s_k^2 + t^2 r_l^2,

    and ``v*`` averages these with the posterior weights ``pi_kl(x) ~ w_k w'_l N(x; m_kl, V_kl)``
    (computed with logsumexp). Finite on all of ``[0, 1]`` because every ``V_kl > 0``. For an
    affine path ``a_t x_0 + b_t x_1`` (``path="cosine"``) the same holds with mean velocity
    ``a'_t a_k + b'_t b_l``, ``m_kl = a_t a_k + b_t b_l``, ``V_kl = a_t^2 s_k^2 + b_t^2 r_l^2`` and
    covariance ``a_t a'_t s_k^2 + b_t b'_t r_l^2``.

    Parameters
    ----------
    x
        ``(N, d)`` points, with the mixtures' dtype and device.
    t
        A float or an ``(N,)`` tensor of times in ``[0, 1]``.
    data, noise
        The ends ``p_0`` and ``p_1`` as :class:`GaussianMixture` objects.
    path
        ``"linear"`` (rectified flow, default) or ``"cosine"``.

    Returns
    -------
    torch.Tensor
        ``(N, d)`` velocities ``dx/dt``.
    """
    data, noise = _check_pair(data, noise)
    x = data._x(x)
    tt = _times(t, x.shape[0], x)
    mean, var, cov, logw, du = _pair_params(data, noise, tt, path)
    diff = x[:, None, None, :] - mean                                        # (N, K, L, d)
    logp = logw - 0.5 * (diff * diff / var + torch.log(var)).sum(-1)         # (N, K, L)
    n = x.shape[0]
    pi = torch.softmax(logp.reshape(n, -1), dim=-1).reshape(logp.shape)
    cond = du + cov / var * diff                                             # (N, K, L, d)
    return (pi[..., None] * cond).sum(dim=(1, 2))


def odeint_fixed(field: Field, x: torch.Tensor, *, t0: float = 1.0, t1: float = 0.0, steps: int,
                 method: str = "euler", return_path: bool = False) -> tuple[torch.Tensor, int]:
    """Fixed-step Euler, Heun or RK4 for ``dx/dt = field(x, t)``, counting evaluations (Derived in P33).

    ``t1 < t0`` integrates backwards (the sampling direction in Su's convention, noise at
    ``t = 1``). With ``h = (t1 - t0) / steps`` one step is::

        euler: x + h k1                                   (1 evaluation)
        heun:  x + h (k1 + k2) / 2, k2 = f(x + h k1, t + h)   (2 evaluations)
        rk4:   x + h (k1 + 2 k2 + 2 k3 + k4) / 6            (4 evaluations)

    The loop over steps is sequential by nature; every step is vectorised over the batch.

    Parameters
    ----------
    field
        ``field(x, t) -> dx/dt`` with ``x`` of shape ``(N, d)`` and ``t`` a Python float.
    x
        ``(N, d)`` initial state at ``t0``.
    t0, t1
        Start and end times.
    steps
        Number of equal steps (>= 1).
    method
        ``"euler"``, ``"heun"`` or ``"rk4"``.
    return_path
        If True, return all ``steps + 1`` states stacked as ``(steps + 1, N, d)``.

    Returns
    -------
    tuple
        ``(x_end, nfe)``: the state at ``t1`` (or the path) and the number of field evaluations.
    """
    _check_callable(field, "field")
    x = _check_points(x)
    t0, t1 = check_real(t0, "t0"), check_real(t1, "t1")
    steps = check_int(steps, "steps", ge=1)
    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
    h = (t1 - t0) / steps
    ts = [t0 + (t1 - t0) * i / steps for i in range(steps)] + [t1]    # exact ends, no drift past t1
    path = [x]
    for i in range(steps):
        t, tn = ts[i], ts[i + 1]
        k1 = field(x, t)
        if method == "euler":
            x = x + h * k1
        elif method == "heun":
            k2 = field(x + h * k1, tn)
            x = x + 0.5 * h * (k1 + k2)
        else:
            tm = 0.5 * (t + tn)
            k2 = field(x + 0.5 * h * k1, tm)
            k3 = field(x + 0.5 * h * k2, tm)
            k4 = field(x + h * k3, tn)
            x = x + (h / 6.0) * (k1 + 2 * k2 + 2 * k3 + k4)
        if return_path:
            path.append(x)
    out = torch.stack(path) if return_path else x
    return out, steps * METHODS[method]


def straightness(field: Field, x: torch.Tensor, *, t0: float = 1.0, t1: float = 0.0,
                 steps: int = 64, weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Straightness of the ODE trajectories started at ``x`` (Derived in P33, from arXiv:2209.03003).

    The paper's measure, for a trajectory ``z_t`` from ``t0`` to ``t1``::

        S = 1/|t1 - t0| * integral || dz_t/dt - (z_t1 - z_t0)/(t1 - t0) ||^2 dt,

    averaged over the starting points (or weighted by ``weights``, e.g. quadrature weights
    of Gauss-Hermite nodes). ``S = 0`` exactly when every trajectory is a straight
    line travelled at constant speed, so that one Euler step is exact. The trajectory is
    integrated with RK4 (``steps`` steps) and the integral is the trapezoidal rule over the
    ``steps + 1`` grid velocities.

    Parameters
    ----------
    field
        ``field(x, t) -> dx/dt`` as in :func:`odeint_fixed`.
    x
        ``(N, d)`` starting points at ``t0``.
    t0, t1
        Start and end times (``t0 != t1``).
    steps
        RK4 steps (>= 1).
    weights
        Optional ``(N,)`` non-negative weights summing to 1; default uniform ``1/N``.

    Returns
    -------
    tuple of torch.Tensor
        ``(S, x_end)``: the 0-d straightness and the ``(N, d)`` end points.
    """
    _check_callable(field, "field")
    x = _check_points(x)
    t0, t1 = check_real(t0, "t0"), check_real(t1, "t1")
    if t0 == t1:
        raise ValueError("t0 and t1 must differ")
    steps = check_int(steps, "steps", ge=1)
    if weights is None:
        weights = torch.full((x.shape[0],), 1.0 / max(x.shape[0], 1), dtype=x.dtype, device=x.device)
    else:
        weights = check_tensor(weights, "weights", ndim=1)
        if weights.shape[0] != x.shape[0]:
            raise ValueError(f"weights must have shape ({x.shape[0]},), got {tuple(weights.shape)}")
        if not bool((weights >= 0).all()) or abs(float(weights.sum()) - 1.0) > 1e-6:
            raise ValueError("weights must be >= 0 and sum to 1")
    path, _ = odeint_fixed(field, x, t0=t0, t1=t1, steps=steps, method="rk4", return_path=True)
    times = [t0 + (t1 - t0) * i / steps for i in range(steps)] + [t1]
    vel = torch.stack([field(path[i], times[i]) for i in range(steps + 1)])     # (steps + 1, N, d)
    mean_v = (path[-1] - path[0]) / (t1 - t0)
    dev = ((vel - mean_v) ** 2).sum(-1) @ weights.to(vel.dtype)                  # (steps + 1,)
    w = torch.ones(steps + 1, dtype=dev.dtype, device=dev.device)
    w[0] = w[-1] = 0.5
    return (w * dev).sum() / steps, path[-1]


def reflow_pairs(field: Field, x1: torch.Tensor, *, steps: int = 32,
                 method: str = "rk4") -> tuple[torch.Tensor, torch.Tensor]:
    """The reflow coupling: pair each noise sample with the ODE's output (Derived in P33).

    Integrates ``dx/dt = field(x, t)`` from ``t = 1`` (noise ``x1``) to ``t = 0`` and returns
    ``(x0, x1)`` with ``x0`` the end points. Training a new velocity on the straight paths of
    these *deterministic* pairs (instead of independent pairs) is one round of reflow; it does
    not increase any convex transport cost and makes paths straighter (arXiv:2209.03003).
    Shapes: ``x1`` ``(N, d)``; outputs ``(N, d)`` each.
    """
    x0, _ = odeint_fixed(field, x1, t0=1.0, t1=0.0, steps=steps, method=method)
    return x0.detach(), x1


def rf_loss(v_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x0: torch.Tensor,
            x1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Rectified-flow regression loss ``mean ||v(x_t, t) - (x_1 - x_0)||^2`` (Derived in P33).

    ``x0``, ``x1``: ``(N, d)`` paired samples; ``t``: ``(N,)`` times in ``[0, 1]``;
    ``v_fn(x_t, t)`` maps ``(N, d)`` and ``(N,)`` to ``(N, d)``. Returns a 0-d tensor (the
    squared norm summed over coordinates, averaged over rows).
    """
    _check_callable(v_fn, "v_fn")
    t = check_tensor(t, "t", ndim=1)
    xt, u = interpolate(x0, x1, t)
    v = v_fn(xt, t)
    if not isinstance(v, torch.Tensor) or v.shape != u.shape:
        raise ValueError(f"v_fn must return a tensor of shape {tuple(u.shape)}")
    return ((v - u) ** 2).sum(-1).mean()


class VelocityMLP(nn.Module):
    """A small time-conditioned MLP ``v_theta(x, t)`` for rectified flow (Derived in P33).

    Input ``[x, t]`` of width ``d + 1``, ``depth`` hidden SiLU layers of width ``hidden``,
    output width ``d``. ``forward(x, t)`` takes ``x`` ``(N, d)`` and ``t`` a float or ``(N,)``.
    """

    def __init__(self, dim: int, *, hidden: int = 64, depth: int = 2) -> None:
        super().__init__()
        dim = check_int(dim, "dim", ge=1)
        hidden = check_int(hidden, "hidden", ge=1)
        depth = check_int(depth, "depth", ge=1)
        layers: list[nn.Module] = [nn.Linear(dim + 1, hidden), nn.SiLU()]
        for _ in range(depth - 1):
            layers += [nn.Linear(hidden, hidden), nn.SiLU()]
        layers.append(nn.Linear(hidden, dim))
        self.net = nn.Sequential(*layers)
        self.dim = dim

    def forward(self, x: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        x = _check_points(x)
        if x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (N, {self.dim}), got {tuple(x.shape)}")
        tt = _times(t, x.shape[0], x, lo=-math.inf, hi=math.inf)
        return self.net(torch.cat([x, tt], dim=-1))


def train_velocity(model: nn.Module, x0: torch.Tensor, x1: torch.Tensor, *, steps: int,
                   batch_size: int = 256, lr: float = 3e-3, gen: torch.Generator | None = None) -> list[float]:
    """Fit ``model(x_t, t)`` to ``x1 - x0`` on random pairs and times with Adam (Derived in P33).

    Each step draws ``batch_size`` rows of the paired ``(N, d)`` tensors and times
    ``t ~ U(0, 1)`` from the CPU generator ``gen`` (so runs are reproducible) and takes one Adam
    step on :func:`rf_loss`; the learning rate decays by cosine to 0. Returns the per-step losses.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    x0, x1 = _check_points(x0, "x0"), _check_points(x1, "x1")
    if x0.shape != x1.shape:
        raise ValueError(f"x0 and x1 must have the same shape, got {tuple(x0.shape)} and {tuple(x1.shape)}")
    steps = check_int(steps, "steps", ge=1)
    batch_size = check_int(batch_size, "batch_size", ge=1)
    lr = check_real(lr, "lr", gt=0)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    losses = []
    n = x0.shape[0]
    for _ in range(steps):
        idx = torch.randint(0, n, (batch_size,), generator=gen).to(x0.device)
        t = torch.rand(batch_size, generator=gen, dtype=torch.float64).to(x0.device, x0.dtype)
        loss = rf_loss(model, x0[idx], x1[idx], t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    return losses
