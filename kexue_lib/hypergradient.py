"""Exponentiated gradient and multiplicative learning-rate adaptation by hypergradients (P09).

Two ideas from Su's post "指数梯度下降 + 元学习 = 自适应学习率" (kexue.fm/archives/8968, after
Amid, Anil, Fifty & Warmuth, arXiv:2202.00145):

* **Exponentiated gradient** (EG) for a non-negative parameter::

      theta_{t+1} = theta_t * exp(-lr * g_t)

  which keeps ``theta >= 0`` automatically. It is gradient descent on ``phi = log theta``
  with the factor ``exp(phi)`` of the chain rule dropped.
* **Hypergradient gains.** With ``theta_{t+1} = theta_t - lr * nu_{t+1} * g_t`` the derivative
  of ``L(theta_t)`` with respect to the gain ``nu_t`` is ``-lr * g_{t-1} * g_t``. Updating the
  (positive) gain by EG with the step ``lr`` folded into ``gamma`` gives::

      nu_{t+1} = nu_t * exp(gamma * s_t),    s_t = g_{t-1} * g_t   (one gain per coordinate)
                                             s_t = <g_{t-1}, g_t>  (one scalar gain)

  with ``g_{-1} = 0`` (so ``nu_1 = nu_0``). The book also offers normalised versions of
  ``s_t``: ``sign(s_t)`` and, for the scalar gain, the cosine of the two gradients.

Shapes: parameters are ``(*batch, d)``; reductions for the scalar gain run over the last
dimension, so a scalar gain has shape ``(*batch, 1)``. The simulation loop
``hypergradient_descent`` is sequential in time (each step needs the previous gradient) and
vectorised over the batch of runs. ``HypergradEG`` is the same rule as a
``torch.optim.Optimizer``.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from ._checks import check_int, check_real, check_tensor

__all__ = [
    "NORMALIZATIONS",
    "eg_step",
    "eg_step_",
    "lr_hypergradient",
    "gain_signal",
    "adapt_gain",
    "hypergradient_descent",
    "HypergradEG",
]

#: Accepted values of ``normalize``: the raw product, its sign, or the cosine (scalar gain only).
NORMALIZATIONS = ("none", "sign", "cosine")


# --------------------------------------------------------------------------------- validation
def _check_same_shape(a: Tensor, b: Tensor, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name_b} must have the shape of {name_a} {tuple(a.shape)}, got {tuple(b.shape)}")


def _check_mode(normalize: object, per_coordinate: object) -> tuple[str, bool]:
    if not isinstance(per_coordinate, bool):
        raise TypeError(f"per_coordinate must be a bool, got {type(per_coordinate).__name__}")
    if not isinstance(normalize, str) or normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    if normalize == "cosine" and per_coordinate:
        raise ValueError("normalize='cosine' needs a scalar gain (per_coordinate=False)")
    return normalize, per_coordinate


def _check_max_exponent(max_exponent: object) -> float | None:
    if max_exponent is None:
        return None
    return check_real(max_exponent, "max_exponent", gt=0.0)


def _exp_clamped(x: Tensor, max_exponent: float | None) -> Tensor:
    if max_exponent is not None:
        x = x.clamp(-max_exponent, max_exponent)
    return torch.exp(x)


# --------------------------------------------------------------------------- exponentiated GD
def eg_step(param: Tensor, grad: Tensor, *, lr: float, max_exponent: float | None = None) -> Tensor:
    """One exponentiated-gradient step, out of place (Derived in P09).

    ::

        theta_new = theta * exp(-lr * grad)

    The sign of every coordinate is preserved for any ``lr``, so a non-negative parameter stays
    non-negative. To first order in ``lr`` the step is ``-lr * theta * grad``: GD on
    ``log theta`` with the chain-rule factor ``theta`` dropped.

    Parameters
    ----------
    param : torch.Tensor
        Current parameter ``theta``, any shape, floating dtype, finite.
    grad : torch.Tensor
        Gradient ``dL/dtheta`` at ``param``, same shape.
    lr : float
        Step size, ``>= 0``.
    max_exponent : float or None
        If given, the exponent ``-lr * grad`` is clamped to ``[-max_exponent, max_exponent]``
        (guards against overflow of ``exp``).

    Returns
    -------
    torch.Tensor
        The new parameter, same shape, dtype and device as ``param``.
    """
    check_tensor(param, "param")
    check_tensor(grad, "grad")
    _check_same_shape(param, grad, "param", "grad")
    lr = check_real(lr, "lr", ge=0.0)
    return param * _exp_clamped(-lr * grad, _check_max_exponent(max_exponent))


def eg_step_(param: Tensor, grad: Tensor, *, lr: float, max_exponent: float | None = None) -> Tensor:
    """In-place version of ``eg_step``: multiplies ``param`` by ``exp(-lr * grad)`` and returns it.

    Parameters
    ----------
    param : torch.Tensor
        Parameter to update in place (a leaf that requires grad must be wrapped in
        ``torch.no_grad()`` by the caller).
    grad : torch.Tensor
        Gradient at ``param``, same shape.
    lr : float
        Step size, ``>= 0``.
    max_exponent : float or None
        Optional clamp of the exponent, as in ``eg_step``.

    Returns
    -------
    torch.Tensor
        ``param`` itself, updated.
    """
    check_tensor(param, "param")
    check_tensor(grad, "grad")
    _check_same_shape(param, grad, "param", "grad")
    lr = check_real(lr, "lr", ge=0.0)
    return param.mul_(_exp_clamped(-lr * grad, _check_max_exponent(max_exponent)))


# ------------------------------------------------------------------------------ hypergradient
def lr_hypergradient(grad_prev: Tensor, grad: Tensor, *, lr: float = 1.0, per_coordinate: bool = True) -> Tensor:
    """Derivative of the loss with respect to the step-size gain (Derived in P09).

    If ``theta_t = theta_{t-1} - lr * nu * g_{t-1}`` then by the chain rule

    ::

        dL(theta_t)/d nu = -lr * g_{t-1} * g_t          (nu one gain per coordinate)
        dL(theta_t)/d nu = -lr * <g_{t-1}, g_t>         (nu one scalar gain)

    where ``g_t`` is the gradient at ``theta_t``. With ``lr = 1`` and a scalar gain this is the
    derivative with respect to the learning rate itself.

    Parameters
    ----------
    grad_prev : torch.Tensor
        ``g_{t-1}``, shape ``(*batch, d)``.
    grad : torch.Tensor
        ``g_t``, same shape.
    lr : float
        The base step that multiplies the gain (``> 0``).
    per_coordinate : bool
        One gain per coordinate (shape ``(*batch, d)`` out) or one per run (``(*batch, 1)``).

    Returns
    -------
    torch.Tensor
        The hypergradient, shape ``(*batch, d)`` or ``(*batch, 1)``.
    """
    check_tensor(grad_prev, "grad_prev", min_ndim=1)
    check_tensor(grad, "grad", min_ndim=1)
    _check_same_shape(grad_prev, grad, "grad_prev", "grad")
    lr = check_real(lr, "lr", gt=0.0)
    _check_mode("none", per_coordinate)
    prod = grad_prev * grad
    if not per_coordinate:
        prod = prod.sum(dim=-1, keepdim=True)
    return -lr * prod


def gain_signal(grad_prev: Tensor, grad: Tensor, *, normalize: str = "none", per_coordinate: bool = True) -> Tensor:
    """The exponent signal ``s_t`` of the gain update (minus the hypergradient, normalised).

    ::

        none:    s = g_{t-1} * g_t                 or  <g_{t-1}, g_t>
        sign:    s = sign(g_{t-1} * g_t)           or  sign(<g_{t-1}, g_t>)
        cosine:  s = <g_{t-1}, g_t> / (|g_{t-1}| |g_t|)   (scalar gain only; 0 if a norm is 0)

    Parameters
    ----------
    grad_prev : torch.Tensor
        ``g_{t-1}``, shape ``(*batch, d)`` (zeros at the first step).
    grad : torch.Tensor
        ``g_t``, same shape.
    normalize : str
        One of ``"none"``, ``"sign"``, ``"cosine"``.
    per_coordinate : bool
        Per-coordinate signal ``(*batch, d)`` or a scalar one ``(*batch, 1)``.

    Returns
    -------
    torch.Tensor
        ``s_t``, shape ``(*batch, d)`` or ``(*batch, 1)``.
    """
    check_tensor(grad_prev, "grad_prev", min_ndim=1, finite=False)
    check_tensor(grad, "grad", min_ndim=1, finite=False)
    _check_same_shape(grad_prev, grad, "grad_prev", "grad")
    normalize, per_coordinate = _check_mode(normalize, per_coordinate)
    return _signal(grad_prev, grad, normalize, per_coordinate)


def _signal(gp: Tensor, g: Tensor, normalize: str, per_coordinate: bool) -> Tensor:
    prod = gp * g
    if not per_coordinate:
        prod = prod.sum(dim=-1, keepdim=True)
    if normalize == "sign":
        return torch.sign(prod)
    if normalize == "cosine":
        denom = gp.norm(dim=-1, keepdim=True) * g.norm(dim=-1, keepdim=True)
        return torch.where(denom > 0, prod / torch.where(denom > 0, denom, torch.ones_like(denom)),
                           torch.zeros_like(prod))
    return prod


def adapt_gain(gain: Tensor, grad_prev: Tensor, grad: Tensor, *, gamma: float, normalize: str = "none",
               per_coordinate: bool = True, max_exponent: float | None = None) -> Tensor:
    """One EG step on the step-size gain (Derived in P09).

    ::

        nu_{t+1} = nu_t * exp(gamma * s_t)

    with ``s_t`` from ``gain_signal``. With ``normalize="none"`` this is EG on ``nu`` with the
    hypergradient ``-lr * g_{t-1} * g_t`` and the base step ``lr`` folded into ``gamma``, as in
    the post.

    Parameters
    ----------
    gain : torch.Tensor
        ``nu_t > 0``, shape ``(*batch, d)`` (per coordinate) or ``(*batch, 1)`` (scalar).
    grad_prev : torch.Tensor
        ``g_{t-1}``, shape ``(*batch, d)``.
    grad : torch.Tensor
        ``g_t``, same shape.
    gamma : float
        Meta step size, ``>= 0``.
    normalize : str
        ``"none"``, ``"sign"`` or ``"cosine"`` (see ``gain_signal``).
    per_coordinate : bool
        Whether ``gain`` holds one value per coordinate.
    max_exponent : float or None
        Optional clamp of ``gamma * s_t`` to ``[-max_exponent, max_exponent]``.

    Returns
    -------
    torch.Tensor
        ``nu_{t+1}``, the shape of ``gain``.
    """
    check_tensor(gain, "gain", min_ndim=1)
    check_tensor(grad_prev, "grad_prev", min_ndim=1)
    check_tensor(grad, "grad", min_ndim=1)
    _check_same_shape(grad_prev, grad, "grad_prev", "grad")
    gamma = check_real(gamma, "gamma", ge=0.0)
    normalize, per_coordinate = _check_mode(normalize, per_coordinate)
    if bool((gain <= 0).any()):
        raise ValueError("gain must be positive")
    s = _signal(grad_prev, grad, normalize, per_coordinate)
    if gain.shape != s.shape:
        raise ValueError(f"gain must have shape {tuple(s.shape)} for per_coordinate={per_coordinate}, "
                         f"got {tuple(gain.shape)}")
    return gain * _exp_clamped(gamma * s, _check_max_exponent(max_exponent))


def hypergradient_descent(grad_fn: Callable[[Tensor], Tensor], theta0: Tensor, *, lr: float, gamma: float,
                          steps: int, normalize: str = "none", per_coordinate: bool = False,
                          gain0: float = 1.0, max_exponent: float | None = None) -> tuple[Tensor, Tensor]:
    """Run gradient descent whose step-size gain is adapted by EG on the hypergradient (Derived in P09).

    For ``t = 0, ..., steps - 1`` (with ``g_{-1} = 0``, ``nu_0 = gain0``)::

        g_t         = grad_fn(theta_t)
        nu_{t+1}    = nu_t * exp(gamma * s(g_{t-1}, g_t))
        theta_{t+1} = theta_t - lr * nu_{t+1} * g_t

    so the effective learning rate of step ``t`` is ``lr * nu_{t+1}``; with ``gamma = 0`` this is
    plain GD. The loop is sequential in ``t`` and vectorised over the leading batch dimensions.
    Divergence is not an error: a run that overflows simply carries ``inf``/``nan`` onwards.

    Parameters
    ----------
    grad_fn : callable
        Maps ``theta`` of shape ``(*batch, d)`` to the gradient of the same shape.
    theta0 : torch.Tensor
        Starting point, shape ``(*batch, d)``, floating dtype.
    lr : float
        Base learning rate ``> 0``.
    gamma : float
        Meta step size ``>= 0``.
    steps : int
        Number of steps ``>= 0``.
    normalize : str
        ``"none"`` (the post's rule), ``"sign"`` or ``"cosine"``.
    per_coordinate : bool
        One gain per coordinate (the post's rule) or one per run.
    gain0 : float
        Initial gain ``nu_0 > 0`` (the post uses 1).
    max_exponent : float or None
        Optional clamp of the gain's exponent.

    Returns
    -------
    tuple of torch.Tensor
        ``thetas`` of shape ``(steps + 1, *batch, d)`` (``thetas[0] = theta0``) and ``lrs`` of
        shape ``(steps, *batch, d)`` or ``(steps, *batch, 1)``: the effective learning rate
        ``lr * nu_{t+1}`` used at step ``t``.
    """
    if not callable(grad_fn):
        raise TypeError(f"grad_fn must be callable, got {type(grad_fn).__name__}")
    check_tensor(theta0, "theta0", min_ndim=1)
    lr = check_real(lr, "lr", gt=0.0)
    gamma = check_real(gamma, "gamma", ge=0.0)
    steps = check_int(steps, "steps", ge=0)
    normalize, per_coordinate = _check_mode(normalize, per_coordinate)
    gain0 = check_real(gain0, "gain0", gt=0.0)
    max_exponent = _check_max_exponent(max_exponent)

    theta = theta0.clone()
    g_prev = torch.zeros_like(theta)
    gain_shape = theta.shape if per_coordinate else (*theta.shape[:-1], 1)
    gain = torch.full(gain_shape, gain0, dtype=theta.dtype, device=theta.device)
    thetas, lrs = [theta], []
    for _ in range(steps):
        g = grad_fn(theta)
        if not isinstance(g, Tensor) or g.shape != theta.shape:
            raise ValueError(f"grad_fn must return a tensor of shape {tuple(theta.shape)}, "
                             f"got {tuple(g.shape) if isinstance(g, Tensor) else type(g).__name__}")
        gain = gain * _exp_clamped(gamma * _signal(g_prev, g, normalize, per_coordinate), max_exponent)
        theta = theta - lr * gain * g
        g_prev = g
        thetas.append(theta)
        lrs.append(lr * gain)
    empty = torch.empty((0, *gain_shape), dtype=theta.dtype, device=theta.device)
    return torch.stack(thetas), (torch.stack(lrs) if lrs else empty)


# -------------------------------------------------------------------------------- optimizer
class HypergradEG(torch.optim.Optimizer):
    """SGD with step-size gains adapted multiplicatively by the hypergradient (Derived in P09).

    For every parameter group, with ``g_t`` the current gradients and ``g_{t-1}`` those of the
    previous step (zero at the first step)::

        nu_{t+1}    = nu_t * exp(gamma * s(g_{t-1}, g_t))
        theta_{t+1} = theta_t - lr * nu_{t+1} * g_t

    With ``per_coordinate=True`` (the post's rule) ``nu`` has the shape of each parameter and
    ``s`` is elementwise. With ``per_coordinate=False`` there is one scalar gain per group and
    ``s`` uses the inner product of the *whole group's* gradients (all its tensors
    concatenated). ``normalize`` picks ``s``: the raw product, its sign, or (scalar gain only)
    the cosine. The gain of a parameter is exposed as ``optimizer.state[p]["gain"]``.

    Parameters
    ----------
    params : iterable
        Parameters or parameter groups, as for ``torch.optim.SGD``.
    lr : float
        Base learning rate ``> 0``.
    gamma : float
        Meta step size ``>= 0`` (0 gives plain SGD).
    per_coordinate : bool
        One gain per coordinate or one per group.
    normalize : str
        ``"none"``, ``"sign"`` or ``"cosine"``.
    max_exponent : float or None
        Clamp of ``gamma * s``; the default 20 keeps one step's change of the gain within
        ``exp(+-20)``. ``None`` disables the clamp.
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, *, gamma: float = 0.01,
                 per_coordinate: bool = True, normalize: str = "none",
                 max_exponent: float | None = 20.0) -> None:
        lr = check_real(lr, "lr", gt=0.0)
        gamma = check_real(gamma, "gamma", ge=0.0)
        normalize, per_coordinate = _check_mode(normalize, per_coordinate)
        max_exponent = _check_max_exponent(max_exponent)
        super().__init__(params, dict(lr=lr, gamma=gamma, per_coordinate=per_coordinate,
                                      normalize=normalize, max_exponent=max_exponent))

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one step; ``closure`` (optional) re-evaluates the loss and returns it."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            ps = [p for p in group["params"] if p.grad is not None]
            if not ps:
                continue
            gs = [p.grad for p in ps]
            for p, g in zip(ps, gs):
                st = self.state[p]
                if "prev_grad" not in st:
                    st["prev_grad"] = torch.zeros_like(p)
                    shape = p.shape if group["per_coordinate"] else ()
                    st["gain"] = torch.ones(shape, dtype=p.dtype, device=p.device)
            gamma, mx = group["gamma"], group["max_exponent"]
            if group["per_coordinate"]:
                for p, g in zip(ps, gs):
                    st = self.state[p]
                    s = _signal(st["prev_grad"], g, group["normalize"], True)
                    st["gain"].mul_(_exp_clamped(gamma * s, mx))
            else:
                gp = torch.cat([self.state[p]["prev_grad"].reshape(-1) for p in ps])
                gc = torch.cat([g.reshape(-1) for g in gs])
                s = _signal(gp, gc, group["normalize"], False).reshape(())
                gain = self.state[ps[0]]["gain"] * _exp_clamped(gamma * s, mx)
                for p in ps:
                    self.state[p]["gain"] = gain.to(p.dtype).clone()
            for p, g in zip(ps, gs):
                st = self.state[p]
                p.sub_(group["lr"] * st["gain"] * g)
                st["prev_grad"].copy_(g)
        return loss
