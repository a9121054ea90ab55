"""Gradient flows: GD as a discretised ODE, steepest descent under a norm, and Wasserstein flows (Derived in P11).

P11 (kexue.fm/archives/9660) starts from gradient descent ``x <- x - lr * grad f(x)`` and lets
the step size go to zero, which gives the gradient-flow ODE

    dx/dt = -grad f(x),        d f(x(t)) / dt = -||grad f(x(t))||^2 <= 0.

It then reads one GD step as a penalised minimisation ``argmin_x ||x - x_t||^2 / (2 lr) + f(x)``;
other penalties give other descents (an l_p norm: sign-like updates; a Fisher metric: natural
gradient), and on probability densities with a squared Wasserstein penalty the same recipe gives
the Wasserstein gradient flow. For ``KL(q || p)`` it moves particles along

    dx/dt = grad log p(x) - grad log q_t(x),

whose marginals are those of Langevin dynamics ``dx = grad log p dt + sqrt(2) dW``.

This module holds the simulators behind the chapter: the exact linear flow on a quadratic, GD
paths, a fixed-step ODE integrator, l_p steepest-descent directions, the closed-form KL flow
between diagonal Gaussians, score estimates for a particle cloud, the particle ODE and
Langevin dynamics. Particle clouds are ``(N, d)`` tensors (batch first); everything runs on the
inputs' device and dtype, and random draws come from a CPU generator and are then moved.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from ._checks import check_int, check_real, check_tensor
from .device import generator as _cpu_generator

__all__ = [
    "quadratic_flow",
    "gd_path",
    "gradient_flow",
    "steepest_direction",
    "steepest_step",
    "gaussian_kl_flow",
    "gaussian_kl",
    "gaussian_fit_score",
    "kde_score",
    "wflow_kl_particles",
    "langevin",
]

GradFn = Callable[[torch.Tensor], torch.Tensor]

#: Largest number of Gaussian draws made at once by :func:`langevin` (noise for several steps
#: is drawn in one call to keep the CPU-to-device traffic in a few large transfers).
NOISE_CHUNK = 1 << 22


def _check_callable(fn: object, name: str) -> None:
    if not callable(fn):
        raise TypeError(f"{name} must be callable, got {type(fn).__name__}")


def _apply(fn: GradFn, x: torch.Tensor, name: str) -> torch.Tensor:
    out = fn(x)
    if not isinstance(out, torch.Tensor) or out.shape != x.shape:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"{name} must return a tensor of shape {tuple(x.shape)}, got {shape}")
    return out


def _as_times(t: object, like: torch.Tensor, name: str = "t") -> torch.Tensor:
    if isinstance(t, torch.Tensor):
        check_tensor(t, name)
        return t.to(device=like.device, dtype=like.dtype)
    check_real(t, name)
    return torch.tensor(float(t), device=like.device, dtype=like.dtype)


def quadratic_flow(A: torch.Tensor, x0: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
    """Exact gradient flow of ``f(x) = x^T A x / 2`` (Derived in P11).

    For symmetric ``A`` the flow ``dx/dt = -A x`` is linear, so

        x(t) = expm(-t A) x0,

    computed with ``torch.linalg.matrix_exp`` (any square ``A`` is accepted: the result is then
    the solution of ``dx/dt = -A x``).

    Parameters
    ----------
    A : torch.Tensor
        ``(d, d)`` matrix.
    x0 : torch.Tensor
        ``(..., d)`` starting points (any batch shape).
    t : torch.Tensor or float
        A time, or a ``(T,)`` tensor of times.

    Returns
    -------
    torch.Tensor
        ``(..., d)`` for a scalar ``t``, else ``(T, ..., d)``.
    """
    check_tensor(A, "A", ndim=2)
    check_tensor(x0, "x0", min_ndim=1)
    if A.shape[0] != A.shape[1]:
        raise ValueError(f"A must be square, got shape {tuple(A.shape)}")
    if x0.shape[-1] != A.shape[0]:
        raise ValueError(f"x0 must end in dimension {A.shape[0]} to match A, got shape {tuple(x0.shape)}")
    times = _as_times(t, A)
    if times.ndim > 1:
        raise ValueError(f"t must be a scalar or a 1-D tensor, got shape {tuple(times.shape)}")
    E = torch.linalg.matrix_exp(-times.reshape(-1, 1, 1) * A)          # (T, d, d)
    out = torch.einsum("tij,...j->t...i", E, x0.to(A.dtype))
    return out[0] if times.ndim == 0 else out


def gd_path(grad_fn: GradFn, x0: torch.Tensor, *, lr: float | torch.Tensor, steps: int) -> torch.Tensor:
    """Gradient-descent iterates ``x_{k+1} = x_k - lr * grad f(x_k)`` (Derived in P11).

    The explicit Euler discretisation of the gradient flow with time step ``lr``. The loop over
    steps is sequential by nature; everything else is vectorised, so ``x0`` may hold a batch of
    runs, and ``lr`` may be a tensor broadcastable to ``x0`` (e.g. ``(N, 1)`` for one step size per
    run).

    Parameters
    ----------
    grad_fn : callable
        Maps a tensor shaped like ``x0`` to the gradient, same shape.
    x0 : torch.Tensor
        Starting point(s), any shape (batch first by convention).
    lr : float or torch.Tensor
        Step size(s), > 0.
    steps : int
        Number of steps, >= 0.

    Returns
    -------
    torch.Tensor
        ``(steps + 1, *x0.shape)``, the starting point included.
    """
    _check_callable(grad_fn, "grad_fn")
    check_tensor(x0, "x0")
    steps = check_int(steps, "steps", ge=0)
    if isinstance(lr, torch.Tensor):
        check_tensor(lr, "lr")
        if not bool((lr > 0).all()):
            raise ValueError("lr must be > 0")
        torch.broadcast_shapes(lr.shape, x0.shape)
        lr = lr.to(device=x0.device, dtype=x0.dtype)
    else:
        lr = check_real(lr, "lr", gt=0.0)
    out = [x0]
    x = x0
    for _ in range(steps):
        x = x - lr * _apply(grad_fn, x, "grad_fn")
        out.append(x)
    return torch.stack(out)


def gradient_flow(
    grad_fn: GradFn,
    x0: torch.Tensor,
    t: torch.Tensor,
    *,
    method: str = "rk4",
    substeps: int = 1,
) -> torch.Tensor:
    """Integrate the gradient flow ``dx/dt = -grad f(x)`` on a time grid (Derived in P11).

    Fixed-step integration: between consecutive grid times the interval is split into
    ``substeps`` equal steps of classical Runge-Kutta 4 (``method="rk4"``, error ``O(h^4)``) or
    explicit Euler (``method="euler"``, i.e. gradient descent, error ``O(h)``).

    Parameters
    ----------
    grad_fn : callable
        Maps a tensor shaped like ``x0`` to the gradient, same shape.
    x0 : torch.Tensor
        Starting point(s) at time ``t[0]``, any shape.
    t : torch.Tensor
        ``(T,)`` non-decreasing times.
    method : str
        ``"rk4"`` or ``"euler"``.
    substeps : int
        Integration steps per grid interval, >= 1.

    Returns
    -------
    torch.Tensor
        ``(T, *x0.shape)``: the state at each grid time.
    """
    _check_callable(grad_fn, "grad_fn")
    check_tensor(x0, "x0")
    check_tensor(t, "t", ndim=1)
    if t.numel() == 0:
        raise ValueError("t must hold at least one time")
    if t.numel() > 1 and not bool((t[1:] >= t[:-1]).all()):
        raise ValueError("t must be non-decreasing")
    if method not in ("rk4", "euler"):
        raise ValueError(f"method must be 'rk4' or 'euler', got {method!r}")
    substeps = check_int(substeps, "substeps", ge=1)
    v = lambda x: -_apply(grad_fn, x, "grad_fn")                    # noqa: E731
    hs = ((t[1:] - t[:-1]) / substeps).tolist()
    x, out = x0, [x0]
    for h in hs:
        for _ in range(substeps):
            if method == "euler":
                x = x + h * v(x)
            else:
                k1 = v(x)
                k2 = v(x + 0.5 * h * k1)
                k3 = v(x + 0.5 * h * k2)
                k4 = v(x + h * k3)
                x = x + (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
        out.append(x)
    return torch.stack(out)


def _check_p(p: object) -> float:
    if isinstance(p, float) and p == math.inf:
        return p
    return check_real(p, "p", ge=1.0)


def steepest_direction(g: torch.Tensor, p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Steepest-descent direction in the l_p norm and the dual norm of ``g`` (Derived in P11).

    The direction minimises the linearised change over the unit l_p sphere,

        phi = argmin_{||u||_p = 1} <g, u>,      <g, phi> = -||g||_q,   1/p + 1/q = 1,

    by Hoelder's inequality, with ``phi_i = -sign(g_i) |g_i|^(q-1) / ||g||_q^(q-1)`` for
    ``1 < p < inf``. Limits: ``p = 2`` gives ``-g / ||g||_2``; ``p = inf`` gives ``-sign(g)``
    (signSGD); ``p = 1`` gives ``-sign(g_i) e_i`` at the first ``i`` maximising ``|g_i|``. The
    l_p worked example is from Su's later Muon post, which traces the idea back to P11.
    A zero gradient gives a zero direction.

    Parameters
    ----------
    g : torch.Tensor
        ``(..., d)`` gradients (the last dimension is the vector).
    p : float
        Norm exponent, ``1 <= p <= inf`` (``float("inf")`` allowed).

    Returns
    -------
    phi : torch.Tensor
        ``(..., d)`` unit-l_p descent directions.
    dual_norm : torch.Tensor
        ``(...)`` values ``||g||_q``.
    """
    check_tensor(g, "g", min_ndim=1)
    p = _check_p(p)
    if math.isinf(p):
        return -torch.sign(g), torch.linalg.vector_norm(g, ord=1, dim=-1)
    if p == 1.0:
        idx = g.abs().argmax(dim=-1, keepdim=True)
        phi = torch.zeros_like(g).scatter(-1, idx, -torch.sign(g.gather(-1, idx)))
        return phi, g.abs().amax(dim=-1)
    q = p / (p - 1.0)
    scale = g.abs().amax(dim=-1, keepdim=True)
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    a = g.abs() / safe                                   # in [0, 1]: no overflow of |g|^(q-1)
    w = a ** (q - 1.0)
    nq = torch.linalg.vector_norm(a, ord=q, dim=-1, keepdim=True)
    nq_safe = torch.where(nq > 0, nq, torch.ones_like(nq))
    phi = -torch.sign(g) * w / nq_safe ** (q - 1.0)
    return phi, (nq * scale).squeeze(-1)


def steepest_step(g: torch.Tensor, *, lr: float, p: float) -> torch.Tensor:
    """Proximal step ``argmin_D ||D||_p^2 / (2 lr) + <g, D>`` in closed form (Derived in P11).

    Writing ``D = r u`` with ``||u||_p = 1`` and minimising first over ``u`` (Hoelder) and then over
    ``r >= 0`` gives

        D = lr * ||g||_q * phi,

    with ``phi`` from :func:`steepest_direction`. For ``p = 2`` this is the GD step ``-lr g``; for
    ``p = inf`` it is ``-lr ||g||_1 sign(g)``.

    Shapes: ``g`` is ``(..., d)``; the output has the same shape.
    """
    lr = check_real(lr, "lr", gt=0.0)
    phi, dual = steepest_direction(g, p)
    return lr * dual.unsqueeze(-1) * phi


def gaussian_kl_flow(
    mu0: torch.Tensor,
    var0: torch.Tensor,
    t: torch.Tensor,
    *,
    mu_p: float | torch.Tensor = 0.0,
    var_p: float | torch.Tensor = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance along the Wasserstein flow of ``KL(q || p)`` for diagonal Gaussians (Derived in P11).

    With ``p = N(mu_p, var_p)`` and ``q_0 = N(mu0, var0)`` (per coordinate), the particle velocity
    ``grad log p - grad log q_t = -(x - mu_p)/var_p + (x - mu_t)/var_t`` is affine in ``x``, so
    ``q_t`` stays Gaussian, with ``d mu/dt = -(mu - mu_p)/var_p`` and
    ``d var/dt = 2 - 2 var/var_p``:

        mu_t  = mu_p  + (mu0  - mu_p)  exp(-t / var_p),
        var_t = var_p + (var0 - var_p) exp(-2 t / var_p).

    Langevin dynamics (an Ornstein-Uhlenbeck process here) has the same marginals.

    Shapes: all arguments broadcast together; both outputs have the broadcast shape.
    """
    for name, v in (("mu0", mu0), ("var0", var0), ("t", t)):
        check_tensor(v, name)
    if not bool((var0 > 0).all()):
        raise ValueError("var0 must be > 0")
    if not bool((t >= 0).all()):
        raise ValueError("t must be >= 0")
    mu_p = _as_times(mu_p, mu0, "mu_p")
    var_p = _as_times(var_p, var0, "var_p")
    if not bool((var_p > 0).all()):
        raise ValueError("var_p must be > 0")
    mu_t = mu_p + (mu0 - mu_p) * torch.exp(-t / var_p)
    var_t = var_p + (var0 - var_p) * torch.exp(-2.0 * t / var_p)
    return mu_t, var_t


def gaussian_kl(
    mu_q: torch.Tensor, var_q: torch.Tensor, mu_p: torch.Tensor | float = 0.0, var_p: torch.Tensor | float = 1.0
) -> torch.Tensor:
    """``KL(N(mu_q, var_q) || N(mu_p, var_p))`` per coordinate (Used in P11).

        KL = ( var_q/var_p + (mu_q - mu_p)^2/var_p - 1 - log(var_q/var_p) ) / 2.

    Shapes: arguments broadcast together; sum the output over coordinates for a diagonal
    Gaussian in several dimensions.
    """
    check_tensor(mu_q, "mu_q")
    check_tensor(var_q, "var_q")
    mu_p = _as_times(mu_p, mu_q, "mu_p")
    var_p = _as_times(var_p, var_q, "var_p")
    if not bool((var_q > 0).all()) or not bool((var_p > 0).all()):
        raise ValueError("var_q and var_p must be > 0")
    ratio = var_q / var_p
    return 0.5 * (ratio + (mu_q - mu_p) ** 2 / var_p - 1.0 - torch.log(ratio))


def _check_particles(x: object, name: str = "x") -> torch.Tensor:
    return check_tensor(x, name, ndim=2)


def gaussian_fit_score(x: torch.Tensor) -> torch.Tensor:
    """Score ``grad log q`` of the Gaussian fitted to a particle cloud, at the particles (Used in P11).

    Fits the maximum-likelihood mean ``m`` and covariance ``C = mean((x - m)(x - m)^T)`` (divisor
    ``N``, not ``N - 1``) and returns ``-(x - m) C^{-1}``. With the ``1/N`` covariance, the
    particle ODE ``dx/dt = grad log p - score`` moves the cloud's own mean and covariance exactly
    along the closed-form Gaussian flow when ``p`` is Gaussian.

    Shapes: ``x`` is ``(N, d)`` with ``N > d``; the output is ``(N, d)``.
    """
    _check_particles(x)
    n, d = x.shape
    if n <= d:
        raise ValueError(f"x must hold more particles than dimensions, got shape {(n, d)}")
    xc = x - x.mean(dim=0, keepdim=True)
    cov = xc.T @ xc / n
    return -torch.linalg.solve(cov, xc.T).T


def kde_score(x: torch.Tensor, *, bandwidth: float, ref: torch.Tensor | None = None) -> torch.Tensor:
    """Score of a Gaussian kernel density estimate, ``grad log q_hat(x)`` (Used in P11).

    With ``q_hat(x) = mean_j N(x; y_j, h^2 I)`` built on the reference particles ``y`` (default:
    ``x`` itself),

        grad log q_hat(x_i) = sum_j w_ij (y_j - x_i) / h^2,   w_ij = softmax_j(-||x_i - y_j||^2 / (2 h^2)).

    Cost and memory ``O(N M)``; the weights use a log-sum-exp, so far-away points do not underflow.

    Shapes: ``x`` is ``(N, d)``, ``ref`` is ``(M, d)``; the output is ``(N, d)``.
    """
    _check_particles(x)
    h = check_real(bandwidth, "bandwidth", gt=0.0)
    y = x if ref is None else _check_particles(ref, "ref")
    if y.shape[1] != x.shape[1]:
        raise ValueError(f"ref must have {x.shape[1]} columns like x, got shape {tuple(y.shape)}")
    y = y.to(device=x.device, dtype=x.dtype)
    # ||x - y||^2 = ||x||^2 + ||y||^2 - 2 x.y in one matrix product (clamped: rounding can dip below 0)
    sq = torch.addmm((x * x).sum(1, keepdim=True) + (y * y).sum(1), x, y.T, alpha=-2.0).clamp_min(0.0)
    logits = -sq / (2.0 * h * h)
    w = torch.softmax(logits, dim=1)
    return (w @ y - x) / (h * h)


def _check_record(steps: object, record_every: object) -> tuple[int, int]:
    steps = check_int(steps, "steps", ge=0)
    record_every = check_int(record_every, "record_every", ge=1)
    if steps % record_every:
        raise ValueError(f"record_every={record_every} must divide steps={steps}")
    return steps, record_every


def wflow_kl_particles(
    x0: torch.Tensor,
    score_p: GradFn,
    *,
    dt: float,
    steps: int,
    q_score: str = "gaussian",
    bandwidth: float | None = None,
    record_every: int = 1,
) -> torch.Tensor:
    """Particle form of the Wasserstein gradient flow of ``KL(q || p)`` (Derived in P11).

    Each particle moves along ``dx/dt = grad log p(x) - grad log q_t(x)`` (explicit Euler with step
    ``dt``), where ``grad log q_t`` is estimated from the cloud itself: a fitted Gaussian
    (``q_score="gaussian"``, :func:`gaussian_fit_score`) or a Gaussian KDE
    (``q_score="kde"``, :func:`kde_score`, needs ``bandwidth``). Deterministic: no noise.

    Parameters
    ----------
    x0 : torch.Tensor
        ``(N, d)`` initial particles, drawn from ``q_0``.
    score_p : callable
        ``(N, d) -> (N, d)``, the target's score ``grad log p``.
    dt : float
        Time step, > 0.
    steps : int
        Number of steps, >= 0.
    q_score : str
        ``"gaussian"`` or ``"kde"``.
    bandwidth : float, optional
        KDE bandwidth (required for ``"kde"``).
    record_every : int
        Keep every ``record_every``-th state; must divide ``steps``.

    Returns
    -------
    torch.Tensor
        ``(steps // record_every + 1, N, d)``; entry ``k`` is the cloud at time ``k * record_every * dt``.
    """
    _check_particles(x0, "x0")
    _check_callable(score_p, "score_p")
    dt = check_real(dt, "dt", gt=0.0)
    steps, record_every = _check_record(steps, record_every)
    if q_score == "gaussian":
        est = gaussian_fit_score
    elif q_score == "kde":
        if bandwidth is None:
            raise ValueError("bandwidth is required when q_score='kde'")
        h = check_real(bandwidth, "bandwidth", gt=0.0)
        est = lambda z: kde_score(z, bandwidth=h)               # noqa: E731
    else:
        raise ValueError(f"q_score must be 'gaussian' or 'kde', got {q_score!r}")
    x, out = x0, [x0]
    for k in range(1, steps + 1):
        x = x + dt * (_apply(score_p, x, "score_p") - est(x))
        if k % record_every == 0:
            out.append(x)
    return torch.stack(out)


def langevin(
    x0: torch.Tensor,
    score_p: GradFn,
    *,
    dt: float,
    steps: int,
    gen: torch.Generator | None = None,
    record_every: int = 1,
) -> torch.Tensor:
    """Overdamped Langevin dynamics by Euler-Maruyama (Derived in P11).

        x <- x + dt * grad log p(x) + sqrt(2 dt) * xi,     xi ~ N(0, I).

    Its Fokker-Planck equation is the Wasserstein gradient flow of ``KL(q || p)``, so the
    particles' marginals follow the same ``q_t`` as :func:`wflow_kl_particles`, but each particle's
    path is random. The noise is drawn in float64 on the CPU from ``gen`` (default: a generator
    seeded with 0), several steps at a time, and moved to ``x0``'s device and dtype, so CPU and GPU
    runs see the same numbers.

    Parameters
    ----------
    x0 : torch.Tensor
        ``(N, d)`` initial particles.
    score_p : callable
        ``(N, d) -> (N, d)``, the target's score.
    dt : float
        Time step, > 0.
    steps : int
        Number of steps, >= 0.
    gen : torch.Generator, optional
        CPU generator for the noise.
    record_every : int
        Keep every ``record_every``-th state; must divide ``steps``.

    Returns
    -------
    torch.Tensor
        ``(steps // record_every + 1, N, d)``.
    """
    _check_particles(x0, "x0")
    _check_callable(score_p, "score_p")
    dt = check_real(dt, "dt", gt=0.0)
    steps, record_every = _check_record(steps, record_every)
    if gen is None:
        gen = _cpu_generator(0)
    elif not isinstance(gen, torch.Generator) or gen.device.type != "cpu":
        raise TypeError("gen must be a CPU torch.Generator")
    sigma = math.sqrt(2.0 * dt)
    chunk = max(1, NOISE_CHUNK // max(1, x0.numel()))
    x, out, noise, used = x0, [x0], None, 0
    for k in range(1, steps + 1):
        if noise is None or used == noise.shape[0]:
            n = min(chunk, steps - k + 1)
            noise = torch.randn((n, *x0.shape), generator=gen, dtype=torch.float64)
            noise = noise.to(device=x0.device, dtype=x0.dtype)
            used = 0
        x = x + dt * _apply(score_p, x, "score_p") + sigma * noise[used]
        used += 1
        if k % record_every == 0:
            out.append(x)
    return torch.stack(out)
