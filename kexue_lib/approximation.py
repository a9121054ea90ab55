"""Best uniform (min-max) approximation on a grid, and its equioscillation points (Derived in P08).

P08 asks for the ``b`` that makes SquarePlus closest to SoftPlus in the sup norm,

    min_theta  max_{x in grid} | model(x; theta) - target(x) |,

a non-smooth problem (the objective is a maximum of many smooth curves and has a kink at the
optimum). :func:`minimax_fit` hands it to SciPy: bounded Brent for one parameter, bounded
Nelder-Mead for several; neither needs gradients. The grid sets the accuracy: for a smooth
error curve the grid maximum is off by about ``|e''| h^2 / 8`` for a spacing ``h``.

At a min-max optimum the error reaches its largest magnitude at several points with
alternating signs (Chebyshev's equioscillation); :func:`equioscillation_points` finds them
on a grid so the property can be checked. These helpers are meant for every smooth
approximation in the book (ReLU, GELU, ... ).
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch
from scipy import optimize

from ._checks import check_int, check_real, check_tensor

__all__ = ["MinimaxResult", "uniform_error", "minimax_fit", "equioscillation_points"]

Target = Callable[[torch.Tensor], torch.Tensor] | torch.Tensor
Model = Callable[..., torch.Tensor]


class MinimaxResult(NamedTuple):
    """Result of :func:`minimax_fit`: the best parameters and the max error they reach on the grid."""

    params: tuple[float, ...]
    max_error: float


def _grid(x: object, name: str = "x") -> torch.Tensor:
    check_tensor(x, name, ndim=1)
    if x.numel() == 0:
        raise ValueError(f"{name} must not be empty")
    return x


def _target_values(target: object, x: torch.Tensor) -> torch.Tensor:
    if isinstance(target, torch.Tensor):
        values = target
    elif callable(target):
        values = target(x)
    else:
        raise TypeError(f"target must be a callable or a torch.Tensor, got {type(target).__name__}")
    check_tensor(values, "target")
    if values.shape != x.shape:
        raise ValueError(f"target must have x's shape {tuple(x.shape)}, got {tuple(values.shape)}")
    return values


def _model_values(model: Model, x: torch.Tensor, params: Sequence[float]) -> torch.Tensor:
    values = model(x, *params)
    if not isinstance(values, torch.Tensor):
        raise TypeError(f"model must return a torch.Tensor, got {type(values).__name__}")
    if values.shape != x.shape:
        raise ValueError(f"model must return x's shape {tuple(x.shape)}, got {tuple(values.shape)}")
    if not bool(torch.isfinite(values).all()):
        raise ValueError(f"model returned NaN or infinite values at params={tuple(params)}")
    return values


def uniform_error(target: Target, model: Model, x: torch.Tensor, params: Sequence[float]) -> float:
    """Sup-norm error ``max_i |model(x_i; params) - target(x_i)|`` on the grid (Derived in P08).

    ``target`` is a callable ``target(x)`` or its values on ``x``; ``model`` is called as
    ``model(x, *params)``. Shapes: ``x`` ``(n,)``; ``target(x)`` and ``model(x, ...)`` ``(n,)``.
    """
    x = _grid(x)
    t = _target_values(target, x)
    if not callable(model):
        raise TypeError(f"model must be callable, got {type(model).__name__}")
    params = tuple(check_real(p, f"params[{i}]") for i, p in enumerate(params))
    return float((_model_values(model, x, params) - t).abs().max())


def _check_bounds(bounds: object) -> list[tuple[float, float]]:
    if isinstance(bounds, (str, bytes)) or not isinstance(bounds, Sequence) or len(bounds) == 0:
        raise TypeError("bounds must be a non-empty sequence of (low, high) pairs, one per parameter")
    out = []
    for i, pair in enumerate(bounds):
        if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise TypeError(f"bounds[{i}] must be a (low, high) pair, got {pair!r}")
        lo = check_real(pair[0], f"bounds[{i}][0]")
        hi = check_real(pair[1], f"bounds[{i}][1]", gt=lo)
        out.append((lo, hi))
    return out


def minimax_fit(
    target: Target,
    model: Model,
    x: torch.Tensor,
    *,
    bounds: Sequence[tuple[float, float]],
    x0: Sequence[float] | None = None,
    xtol: float = 1e-10,
    maxiter: int = 5000,
) -> MinimaxResult:
    """Min-max fit ``argmin_theta max_i |model(x_i; theta) - target(x_i)|`` (Derived in P08).

    One parameter: ``scipy.optimize.minimize_scalar(method="bounded")`` (Brent) on
    ``bounds[0]``; this finds the global optimum when the sup error is unimodal in the
    parameter. Several parameters: ``scipy.optimize.minimize(method="Nelder-Mead")`` with
    ``bounds``, started at ``x0`` (default: the middle of the box); a local method, so start
    it near the answer. No gradients are used, the kink at the optimum does no harm.

    ``target`` is a callable or its values on ``x`` (evaluated once); ``model`` is called as
    ``model(x, *params)``. Shapes: ``x`` ``(n,)``. Returns ``MinimaxResult(params, max_error)``
    with ``max_error`` the sup error on the grid at ``params``.
    """
    x = _grid(x)
    t = _target_values(target, x)
    if not callable(model):
        raise TypeError(f"model must be callable, got {type(model).__name__}")
    box = _check_bounds(bounds)
    xtol = check_real(xtol, "xtol", gt=0.0)
    maxiter = check_int(maxiter, "maxiter", ge=1)
    if x0 is None:
        start = [(lo + hi) / 2 for lo, hi in box]
    else:
        if isinstance(x0, (str, bytes)) or not isinstance(x0, Sequence) or len(x0) != len(box):
            raise ValueError(f"x0 must be a sequence of {len(box)} number(s), one per bounds pair")
        start = [check_real(v, f"x0[{i}]", ge=box[i][0], le=box[i][1]) for i, v in enumerate(x0)]

    def objective(theta) -> float:
        params = tuple(float(v) for v in np.atleast_1d(theta))
        return float((_model_values(model, x, params) - t).abs().max())

    if len(box) == 1:
        res = optimize.minimize_scalar(objective, bounds=box[0], method="bounded",
                                       options={"xatol": xtol, "maxiter": maxiter})
        best = (float(res.x),)
    else:
        res = optimize.minimize(objective, np.asarray(start, dtype=float), method="Nelder-Mead",
                                bounds=box, options={"xatol": xtol, "fatol": 1e-15, "maxiter": maxiter,
                                                     "maxfev": 4 * maxiter, "adaptive": len(box) > 2})
        best = tuple(float(v) for v in res.x)
    return MinimaxResult(best, objective(best))


def equioscillation_points(
    err: torch.Tensor, x: torch.Tensor, *, rtol: float = 1e-3, refine: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Points where the error reaches its extreme magnitude ``E = max |err|`` (Derived in P08).

    Takes the local maxima of ``|err|`` on the grid (an endpoint counts if it beats its one
    neighbour) whose magnitude is at least ``(1 - rtol) E``. With ``refine=True`` each interior
    point is moved to the vertex of the parabola through it and its two neighbours, which makes
    positions and values accurate to ``O(h^3)`` rather than ``O(h)``. At a min-max optimum
    the returned values alternate in sign and all have magnitude about ``E``.

    Shapes: ``err``, ``x`` ``(n,)`` with ``x`` strictly increasing, ``n >= 3``. Returns
    ``(points, values)``, each ``(k,)``, sorted by position.
    """
    x = _grid(x)
    check_tensor(err, "err", ndim=1)
    if err.shape != x.shape:
        raise ValueError(f"err must have x's shape {tuple(x.shape)}, got {tuple(err.shape)}")
    if x.numel() < 3:
        raise ValueError(f"x must have at least 3 points, got {x.numel()}")
    if not bool((x[1:] > x[:-1]).all()):
        raise ValueError("x must be strictly increasing")
    rtol = check_real(rtol, "rtol", ge=0.0, lt=1.0)
    if not isinstance(refine, bool):
        raise TypeError(f"refine must be a bool, got {type(refine).__name__}")
    a = err.abs()
    low = torch.cat([a.new_full((1,), -1.0), a[:-1]])    # left neighbour (none at the left end)
    high = torch.cat([a[1:], a.new_full((1,), -1.0)])    # right neighbour (none at the right end)
    keep = (a >= low) & (a > high) & (a >= (1.0 - rtol) * a.max())
    idx = torch.nonzero(keep).flatten()
    pts, vals = x[idx].clone(), err[idx].clone()
    if refine:
        inner = (idx > 0) & (idx < x.numel() - 1)
        i = idx[inner]
        x0, x1, x2 = x[i - 1], x[i], x[i + 1]
        e0, e1, e2 = err[i - 1], err[i], err[i + 1]
        d1 = (e1 - e0) / (x1 - x0)                       # Newton divided differences
        curv = ((e2 - e1) / (x2 - x1) - d1) / (x2 - x0)
        safe = torch.where(curv == 0, torch.ones_like(curv), curv)
        t = torch.where(curv == 0, x1, (x0 + x1) / 2 - d1 / (2 * safe))
        t = torch.minimum(torch.maximum(t, x0), x2)
        pts[inner] = t
        vals[inner] = e0 + d1 * (t - x0) + curv * (t - x0) * (t - x1)
    return pts, vals
