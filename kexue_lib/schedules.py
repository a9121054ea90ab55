"""Learning-rate and weight-decay schedules derived from the Amos optimizer's ideas (P07).

A generic optimizer step with decoupled weight decay is written
``theta_{t+1} = theta_t - (alpha_t * u_t + rho_t * theta_t)``. Asking the decay to be of
second order (``rho = O(alpha^2)``) and to cancel the ``alpha^2 ||u||^2`` term in the
squared distance to the optimum gives (Su, P07, after Tian & Parikh, arXiv:2210.11693)

    alpha_t = alpha0 * ||eps_0|| / ||u_t|| * exp(-2 S_t),    rho_t = alpha0^2 / (2 q) * exp(-2 S_t),

where ``S`` obeys the difference equation ``S_{t+1} = S_t + alpha0 * p * exp(-S_t)``
(constant convergence rate ``p``) or ``S_{t+1} = S_t + alpha0 * p0 * exp(-2 S_t)``
(rate decaying like the distance). Replacing the difference by a derivative gives the
inverse-square and the inverse-time decay. This module holds the closed forms, the exact
recursion, half-life conversions, the per-tensor step and a ``LambdaLR`` factory.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from ._checks import check_int, check_real, check_tensor

__all__ = [
    "amos_inverse_square",
    "amos_inverse_time",
    "amos_decay",
    "solve_S_recursion",
    "half_life_to_rate",
    "rate_to_half_life",
    "amos_eps0_norm",
    "amos_lr_wd",
    "amos_step",
    "amos_lion_hparams",
    "amos_lr_lambda",
]

_KINDS = ("inv_square", "inv_time", "constant")


def _check_kind(kind: object, allowed: tuple[str, ...] = _KINDS) -> str:
    if not isinstance(kind, str):
        raise TypeError(f"kind must be a str, got {type(kind).__name__}")
    if kind not in allowed:
        raise ValueError(f"kind must be one of {allowed}, got {kind!r}")
    return kind


def _time(t: object) -> torch.Tensor | float:
    """Validate a step count: a non-negative real number or a tensor of them."""
    if isinstance(t, torch.Tensor):
        if not (t.is_floating_point() or t.dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)):
            raise TypeError(f"t must be a real (integer or floating) tensor, got {t.dtype}")
        if not t.is_floating_point():
            t = t.to(torch.get_default_dtype())
        check_tensor(t, "t")
        if t.numel() > 0 and bool((t < 0).any()):
            raise ValueError("t must be >= 0")
        return t
    return check_real(t, "t", ge=0)


def amos_inverse_square(t: float | torch.Tensor, *, alpha0: float, p: float) -> float | torch.Tensor:
    """Inverse-square decay factor ``exp(-2 S_t) = 1 / (alpha0 * p * t + 1)^2`` (constant rate).

    Solution of ``dS/dt = alpha0 * p * exp(-S)``, ``S(0) = 0``. Derived in P07; the learning
    rate and the decoupled decay of the Amos-style rule are both proportional to it.

    Parameters
    ----------
    t : float or torch.Tensor
        Step(s), ``>= 0``; a tensor of any shape gives a tensor of the same shape (integer
        tensors are promoted to the default floating dtype).
    alpha0 : float
        Global relative step size, ``> 0``.
    p : float
        Assumed ``cos(u_t, eps_t)``, ``> 0``.

    Returns
    -------
    float or torch.Tensor
        The decay factor, in ``(0, 1]``.
    """
    t = _time(t)
    c = check_real(alpha0, "alpha0", gt=0) * check_real(p, "p", gt=0)
    return 1.0 / (c * t + 1.0) ** 2


def amos_inverse_time(t: float | torch.Tensor, *, alpha0: float, p0: float) -> float | torch.Tensor:
    """Inverse-time decay factor ``exp(-2 S_t) = 1 / (2 * alpha0 * p0 * t + 1)`` (slowing rate).

    Solution of ``dS/dt = alpha0 * p0 * exp(-2 S)``, ``S(0) = 0``, i.e. of the constant-rate
    equation with ``p_t = p0 * exp(-S_t)``. Derived in P07 (P06 writes ``kappa = 2 alpha0 p0``).

    Parameters
    ----------
    t : float or torch.Tensor
        Step(s), ``>= 0``, any shape.
    alpha0 : float
        Global relative step size, ``> 0``.
    p0 : float
        Initial ``cos(u_t, eps_t)``, ``> 0``.

    Returns
    -------
    float or torch.Tensor
        The decay factor, in ``(0, 1]``.
    """
    t = _time(t)
    c = check_real(alpha0, "alpha0", gt=0) * check_real(p0, "p0", gt=0)
    return 1.0 / (2.0 * c * t + 1.0)


def amos_decay(t: float | torch.Tensor, *, alpha0: float, p: float, kind: str = "inv_time") -> float | torch.Tensor:
    """Dispatch to :func:`amos_inverse_square` (``kind="inv_square"``), :func:`amos_inverse_time`
    (``kind="inv_time"``, where ``p`` plays the role of ``p0``) or a constant 1 (``kind="constant"``).

    Derived in P07. ``t`` may be a number or a tensor; the result has the same type/shape.
    """
    kind = _check_kind(kind)
    if kind == "inv_square":
        return amos_inverse_square(t, alpha0=alpha0, p=p)
    if kind == "inv_time":
        return amos_inverse_time(t, alpha0=alpha0, p0=p)
    t = _time(t)
    check_real(alpha0, "alpha0", gt=0)
    check_real(p, "p", gt=0)
    return torch.ones_like(t) if isinstance(t, torch.Tensor) else 1.0


def _batch(x: object, name: str) -> tuple[np.ndarray, torch.Tensor | None]:
    """A positive real number or 1-D tensor, as a float64 NumPy array (plus the tensor, if any)."""
    if isinstance(x, torch.Tensor) and x.ndim > 0:
        check_tensor(x, name, ndim=1)
        if x.numel() == 0:
            raise ValueError(f"{name} must not be empty")
        arr = x.detach().to("cpu", torch.float64).numpy()
        if not (arr > 0).all():
            raise ValueError(f"{name} must be > 0")
        return arr, x
    return np.array([check_real(x, name, gt=0)]), None


def _batch_recursion(c: np.ndarray, power: float, steps: int) -> np.ndarray:
    S = np.zeros((steps + 1, c.size))
    s = np.zeros(c.size)
    for i in range(steps):                       # sequential by nature
        s = s + c * np.exp(-power * s)
        S[i + 1] = s
    return S


def solve_S_recursion(steps: int, *, alpha0: float | torch.Tensor, p: float | torch.Tensor | None = None,
                      p0: float | torch.Tensor | None = None) -> torch.Tensor:
    """The exact discrete recursion of P07, before the derivative replaces the difference.

    With ``p`` (constant convergence rate): ``S_{t+1} = S_t + alpha0 * p * exp(-S_t)``.
    With ``p0`` (rate ``p_t = p0 * exp(-S_t)``): ``S_{t+1} = S_t + alpha0 * p0 * exp(-2 S_t)``.
    Both start from ``S_0 = 0``; the decay factor of the learning rate is ``exp(-2 S_t)``.
    The recursion is sequential in ``t``: the loop runs over time in float64 NumPy,
    vectorised over a batch of ``(alpha0, p)`` pairs. Derived in P07.

    Parameters
    ----------
    steps : int
        Number of steps ``T >= 0``.
    alpha0 : float or torch.Tensor
        ``> 0``; a number or a 1-D tensor of shape ``(B,)``.
    p : float or torch.Tensor, optional
        Constant rate, ``> 0``, number or shape ``(B,)``. Give exactly one of ``p``, ``p0``.
    p0 : float or torch.Tensor, optional
        Initial rate of the dynamic version, ``> 0``, number or shape ``(B,)``.

    Returns
    -------
    torch.Tensor
        ``S_0, ..., S_T``: shape ``(T + 1,)`` if every input is a number, else ``(B, T + 1)``.
        Float64 (or the floating dtype of a tensor input) on the device of a tensor input.
    """
    steps = check_int(steps, "steps", ge=0)
    if (p is None) == (p0 is None):
        raise ValueError("give exactly one of p (constant rate) and p0 (dynamic rate)")
    power = 1.0 if p is not None else 2.0
    a, ta = _batch(alpha0, "alpha0")
    r, tr = _batch(p if p is not None else p0, "p" if p is not None else "p0")
    if a.size != r.size and 1 not in (a.size, r.size):
        raise ValueError(f"alpha0 and p/p0 have incompatible batch sizes {a.size} and {r.size}")
    c = a * r
    if c.size == 1:                              # one sequence: a plain float loop is fastest
        s1, c1, out = 0.0, float(c[0]), [0.0]
        for _ in range(steps):
            s1 += c1 * math.exp(-power * s1)
            out.append(s1)
        S = np.array(out)[:, None]
    else:
        S = _batch_recursion(c, power, steps)
    ref = ta if ta is not None else tr
    if ref is None:
        return torch.from_numpy(S[:, 0].copy())
    return torch.from_numpy(np.ascontiguousarray(S.T)).to(device=ref.device, dtype=ref.dtype)


def half_life_to_rate(half_life: float, *, kind: str = "inv_time") -> float:
    """The product ``alpha0 * p`` (or ``alpha0 * p0``) that halves the learning rate after ``half_life`` steps.

    Inverse-square: ``(alpha0 p T + 1)^2 = 2`` gives ``alpha0 * p = (sqrt(2) - 1) / T`` (P07).
    Inverse-time: ``2 alpha0 p0 T + 1 = 2`` gives ``alpha0 * p0 = 1 / (2 T)``.

    Parameters
    ----------
    half_life : float
        ``T > 0`` steps.
    kind : str
        ``"inv_square"`` or ``"inv_time"``.

    Returns
    -------
    float
        The rate ``alpha0 * p`` (divide by ``alpha0`` for the implied cosine ``p``, which must be <= 1).
    """
    kind = _check_kind(kind, _KINDS[:2])
    T = check_real(half_life, "half_life", gt=0)
    return (math.sqrt(2.0) - 1.0) / T if kind == "inv_square" else 1.0 / (2.0 * T)


def rate_to_half_life(rate: float, *, kind: str = "inv_time") -> float:
    """Inverse of :func:`half_life_to_rate`: the half-life ``T`` of the rate ``alpha0 * p`` (P07)."""
    kind = _check_kind(kind, _KINDS[:2])
    c = check_real(rate, "rate", gt=0)
    return (math.sqrt(2.0) - 1.0) / c if kind == "inv_square" else 1.0 / (2.0 * c)


def amos_eps0_norm(numel: int, *, sigma: float, random_init: bool = False) -> float:
    """Prior guess of the initial distance ``||eps_0|| = ||theta_0 - theta*||`` of a tensor with ``numel`` entries.

    P07 writes the common form ``||eps_0||^2 ~ k sigma^2`` (``sigma``: init std of a kernel, or
    ~0.5 for zero-initialised biases / norm ``beta`` and for norm ``gamma``). For a randomly
    initialised kernel whose optimum is an independent draw of the same scale the same post
    derives ``2 k sigma^2``; ``random_init=True`` keeps that factor 2.

    Parameters
    ----------
    numel : int
        ``k >= 1``.
    sigma : float
        Scale of change, ``> 0``.
    random_init : bool
        Keep the factor 2 of a random kernel.

    Returns
    -------
    float
        ``sqrt(k) * sigma`` or ``sqrt(2 k) * sigma``.
    """
    k = check_int(numel, "numel", ge=1)
    s = check_real(sigma, "sigma", gt=0)
    if not isinstance(random_init, bool):
        raise TypeError(f"random_init must be a bool, got {type(random_init).__name__}")
    return math.sqrt((2 if random_init else 1) * k) * s


def amos_lr_wd(t: float | torch.Tensor, *, alpha0: float, eps0_norm: float | torch.Tensor, u_norm: float | torch.Tensor, p: float, q: float = 1.0,
               kind: str = "inv_time") -> tuple[float | torch.Tensor, float | torch.Tensor]:
    """Per-tensor learning rate and absolute decoupled decay of the Amos-style rule (P07):

        alpha_t = alpha0 * ||eps_0|| / ||u_t|| * f(t),      rho_t = alpha0^2 / (2 q) * f(t),

    with ``f`` the inverse-square (``kind="inv_square"``, rate ``p``), inverse-time
    (``kind="inv_time"``, ``p`` meaning ``p0``) or constant decay. ``rho_t`` is the *absolute*
    per-step shrink factor; PyTorch's ``weight_decay`` would be ``rho_t / alpha_t``.

    Parameters
    ----------
    t : float or torch.Tensor
        Step(s), ``>= 0``.
    alpha0 : float
        Relative step size, ``> 0``.
    eps0_norm : float or torch.Tensor
        Scale ``||eps_0|| > 0`` (see :func:`amos_eps0_norm`); broadcastable against ``t`` and ``u_norm``.
    u_norm : float or torch.Tensor
        ``||u_t|| > 0`` of each tensor's update direction.
    p : float
        ``p`` or ``p0``, ``> 0``.
    q : float
        The fudge factor in ``theta . eps ~ q ||eps||^2``, ``> 0``.
    kind : str
        ``"inv_time"``, ``"inv_square"`` or ``"constant"``.

    Returns
    -------
    tuple
        ``(alpha_t, rho_t)``, numbers or broadcast tensors.
    """
    f = amos_decay(t, alpha0=alpha0, p=p, kind=kind)
    a0 = float(alpha0)
    q = check_real(q, "q", gt=0)
    for name, v in (("eps0_norm", eps0_norm), ("u_norm", u_norm)):
        if isinstance(v, torch.Tensor):
            check_tensor(v, name)
            if v.numel() > 0 and not bool((v > 0).all()):
                raise ValueError(f"{name} must be > 0")
        else:
            check_real(v, name, gt=0)
    return a0 * eps0_norm / u_norm * f, a0 * a0 / (2.0 * q) * f


def amos_step(theta: torch.Tensor, u: torch.Tensor, *, alpha0: float, eps0_norm: float | torch.Tensor, decay: float | torch.Tensor,
              q: float = 1.0) -> torch.Tensor:
    """One Amos-style step ``theta - (alpha_t * u + rho_t * theta)`` for a batch of flattened tensors (P07).

    ``alpha_t = alpha0 * eps0_norm * decay / ||u||`` (norm over the last dimension, so each row
    is one parameter tensor, LAMB-like) and ``rho_t = alpha0^2 / (2 q) * decay``. A row with
    ``u = 0`` gets no update step (only the decay).

    Parameters
    ----------
    theta : torch.Tensor
        Shape ``(..., k)``, floating.
    u : torch.Tensor
        Update direction, same shape as ``theta``.
    alpha0 : float
        ``> 0``.
    eps0_norm : float or torch.Tensor
        ``> 0``, a number or a tensor broadcastable to ``theta.shape[:-1]``.
    decay : float or torch.Tensor
        Decay factor ``f(t)`` in ``(0, 1]``, number or broadcastable to ``theta.shape[:-1]``.
    q : float
        ``> 0``.

    Returns
    -------
    torch.Tensor
        The new parameters, shape ``(..., k)``.
    """
    check_tensor(theta, "theta", min_ndim=1)
    check_tensor(u, "u")
    if u.shape != theta.shape:
        raise ValueError(f"u must have the shape of theta {tuple(theta.shape)}, got {tuple(u.shape)}")
    a0 = check_real(alpha0, "alpha0", gt=0)
    q = check_real(q, "q", gt=0)
    for name, v in (("eps0_norm", eps0_norm), ("decay", decay)):
        if isinstance(v, torch.Tensor):
            check_tensor(v, name)
            if v.numel() > 0 and not bool((v > 0).all()):
                raise ValueError(f"{name} must be > 0")
        else:
            check_real(v, name, gt=0)
    un = torch.linalg.vector_norm(u, dim=-1)
    scale = a0 * eps0_norm * decay / torch.where(un > 0, un, torch.ones_like(un))
    rho = a0 * a0 / (2.0 * q) * decay
    rho = rho.unsqueeze(-1) if isinstance(rho, torch.Tensor) else rho
    return theta - (scale.unsqueeze(-1) * u + rho * theta)


def amos_lion_hparams(*, alpha0: float, sigma: float, kappa: float = 0.0, t: float = 0.0, q: float = 1.0,
                      eps0_factor: float = 1.0) -> tuple[float, float]:
    """Lion's ``(lr, weight_decay)`` from the inverse-time rule with ``||u|| = sqrt(k)`` (P06, from P07).

    With ``||eps_0|| = eps0_factor * sqrt(k) * sigma`` the ``sqrt(k)`` cancels:

        lr = alpha0 * eps0_factor * sigma / (kappa * t + 1),   weight_decay = rho / lr = alpha0 / (2 q eps0_factor sigma).

    The post uses ``eps0_factor = 1``; a random kernel has ``eps0_factor = sqrt(2)`` (P07).

    Parameters
    ----------
    alpha0 : float
        ``> 0``.
    sigma : float
        Parameter scale, ``> 0``.
    kappa : float
        Decay speed ``2 alpha0 p0``, ``>= 0``.
    t : float
        Step, ``>= 0``.
    q : float
        ``> 0``.
    eps0_factor : float
        ``> 0``.

    Returns
    -------
    tuple of float
        ``(lr, weight_decay)`` in PyTorch's convention (absolute decay per step ``lr * weight_decay``).
    """
    a0 = check_real(alpha0, "alpha0", gt=0)
    s = check_real(sigma, "sigma", gt=0)
    kappa = check_real(kappa, "kappa", ge=0)
    t = check_real(t, "t", ge=0)
    q = check_real(q, "q", gt=0)
    c = check_real(eps0_factor, "eps0_factor", gt=0)
    lr = a0 * c * s / (kappa * t + 1.0)
    return lr, a0 / (2.0 * q * c * s)


def amos_lr_lambda(*, half_life: float, kind: str = "inv_time") -> Callable[[int], float]:
    """A multiplier ``t -> f(t)`` for ``torch.optim.lr_scheduler.LambdaLR`` (P07).

    ``f(t) = 1 / ((sqrt(2) - 1) t / T + 1)^2`` (``"inv_square"``) or ``1 / (t / T + 1)``
    (``"inv_time"``), so that ``f(T) = 1/2``. With a decoupled-decay optimizer such as
    ``torch.optim.AdamW`` the absolute decay per step is ``lr_t * weight_decay``, so it decays by
    the same ``f(t)``, as the rule asks.

    Parameters
    ----------
    half_life : float
        ``T > 0`` steps.
    kind : str
        ``"inv_square"`` or ``"inv_time"``.

    Returns
    -------
    callable
        ``f(step: int) -> float``.
    """
    kind = _check_kind(kind, _KINDS[:2])
    rate = half_life_to_rate(half_life, kind=kind)
    if kind == "inv_square":
        return lambda step: 1.0 / (rate * step + 1.0) ** 2
    return lambda step: 1.0 / (2.0 * rate * step + 1.0)
