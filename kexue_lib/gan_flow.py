"""GAN training read as a discretised Wasserstein gradient flow (Derived in P36).

P36 (kexue.fm/archives/9662, after MonoFlow, arXiv 2302.01075) reads alternating GAN training
as a diffusion ODE in "training time". The Wasserstein gradient flow of ``KL(q || p)`` moves
samples along

    dx/dt = grad log r_t(x),       r_t = p / q_t,

and a vanilla-GAN discriminator trained on samples of ``p`` (label 1) and ``q_t`` (label 0)
has optimum ``D* = log(p / q_t)``. One Euler step moves the generator's samples,

    x_{t+1} = x_t + eps * grad D(x_t),

and the generator is regressed onto the moved samples:

    theta_{t+1} = argmin_theta  E_z || g_theta(z) - x_{t+1}(z) ||^2.

At ``theta = theta_t`` the gradient of that regression loss is ``2 eps`` times the gradient of
the usual generator loss ``E_z[-D(g_theta(z))]``, so ONE gradient step on either loss is the
same move; several steps are not. MonoFlow replaces ``D`` by ``h(D)`` for an increasing ``h``.

This module holds the pieces: the Euler (particle) step, the two generator losses, the exact
log-ratio of two 1-D Gaussians (the optimal discriminator of the toy), a quadratic logistic
discriminator fitted by Newton's method, and the toy training loop of an affine generator
``g(z) = a z + b`` with a configurable number of generator steps per discriminator step.
Tensors are batch-first; new tensors take the inputs' device and dtype; random draws are made
on a CPU generator and then moved.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from ._checks import check_int, check_real, check_tensor
from .device import generator as _cpu_generator

__all__ = [
    "flow_step",
    "neg_d_loss",
    "regression_loss",
    "gaussian_logratio_coeffs",
    "quadratic_disc",
    "fit_quadratic_logistic",
    "train_affine_gan",
]

Fn = Callable[[torch.Tensor], torch.Tensor]

LOSSES = ("negD", "regression")


def _check_callable(fn: object, name: str) -> None:
    if not callable(fn):
        raise TypeError(f"{name} must be callable, got {type(fn).__name__}")


def _disc_values(disc: Fn, x: torch.Tensor, h: Fn | None) -> torch.Tensor:
    out = disc(x)
    if not isinstance(out, torch.Tensor) or out.shape != x.shape[:1]:
        raise ValueError(f"disc must map (N, d) to (N,), got {getattr(out, 'shape', type(out))}")
    return out if h is None else h(out)


def flow_step(x: torch.Tensor, disc: Fn, *, eps: float, h: Fn | None = None) -> torch.Tensor:
    """One Euler step of the particle ODE ``dx/dt = grad h(D(x))`` (Derived in P36).

        x_new = x + eps * grad_x h(D(x)).

    With ``D = log(p / q_t)`` and ``h`` the identity this is one step of the Wasserstein gradient
    flow of ``KL(q || p)``; an increasing ``h`` gives MonoFlow's variant. The gradient is taken by
    autograd; the result is detached (it is a regression target).

    Parameters
    ----------
    x : torch.Tensor
        ``(N, d)`` samples of the current generator.
    disc : callable
        ``(N, d) -> (N,)`` discriminator (differentiable in ``x``).
    eps : float
        Step size, > 0.
    h : callable, optional
        Elementwise increasing function applied to ``D`` (default: identity).

    Returns
    -------
    torch.Tensor
        ``(N, d)`` moved samples.
    """
    check_tensor(x, "x", ndim=2)
    _check_callable(disc, "disc")
    if h is not None:
        _check_callable(h, "h")
    eps = check_real(eps, "eps", gt=0.0)
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(_disc_values(disc, xr, h).sum(), xr)
    return (x.detach() + eps * grad).detach()


def neg_d_loss(fake: torch.Tensor, disc: Fn, *, h: Fn | None = None) -> torch.Tensor:
    """The usual generator loss ``mean_i -h(D(fake_i))`` (Derived in P36).

    Parameters
    ----------
    fake : torch.Tensor
        ``(N, d)`` generator outputs ``g_theta(z)`` (carrying the graph to ``theta``).
    disc : callable
        ``(N, d) -> (N,)`` discriminator.
    h : callable, optional
        Elementwise increasing function (MonoFlow); default identity.

    Returns
    -------
    torch.Tensor
        Scalar loss.
    """
    check_tensor(fake, "fake", ndim=2)
    _check_callable(disc, "disc")
    if h is not None:
        _check_callable(h, "h")
    return -_disc_values(disc, fake, h).mean()


def regression_loss(fake: torch.Tensor, target: torch.Tensor, *, eps: float) -> torch.Tensor:
    """The regression-form generator loss, scaled by ``1 / (2 eps)`` (Derived in P36).

        L(theta) = mean_i || g_theta(z_i) - x_target_i ||^2 / (2 eps),

    with ``x_target = flow_step(g_{theta_t}(z), D, eps=eps)`` fixed. The scale makes its gradient
    at ``theta = theta_t`` equal to that of :func:`neg_d_loss` (the post's loss has no scale,
    so its gradient there is ``2 eps`` times larger).

    Parameters
    ----------
    fake : torch.Tensor
        ``(N, d)`` outputs ``g_theta(z)`` of the generator being trained.
    target : torch.Tensor
        ``(N, d)`` moved samples (treated as constants).
    eps : float
        Step size used to build ``target``, > 0.

    Returns
    -------
    torch.Tensor
        Scalar loss.
    """
    check_tensor(fake, "fake", ndim=2)
    check_tensor(target, "target", ndim=2)
    if target.shape != fake.shape:
        raise ValueError(f"target must have shape {tuple(fake.shape)} like fake, got {tuple(target.shape)}")
    eps = check_real(eps, "eps", gt=0.0)
    return ((fake - target.detach()) ** 2).sum(dim=1).mean() / (2.0 * eps)


def gaussian_logratio_coeffs(
    mu_p: torch.Tensor, var_p: torch.Tensor, mu_q: torch.Tensor, var_q: torch.Tensor
) -> torch.Tensor:
    """Coefficients ``(c0, c1, c2)`` of ``log N(x; mu_p, var_p) - log N(x; mu_q, var_q)`` (Used in P36).

    The log-ratio of two 1-D Gaussians is exactly quadratic:

        log p/q = c0 + c1 x + c2 x^2,
        c2 = 1/(2 var_q) - 1/(2 var_p),   c1 = mu_p/var_p - mu_q/var_q,
        c0 = mu_q^2/(2 var_q) - mu_p^2/(2 var_p) + log(var_q/var_p)/2.

    It is the optimal vanilla-GAN discriminator (real = ``p``) when the generator is Gaussian.

    Shapes: arguments broadcast together; the output has the broadcast shape plus a trailing 3.
    """
    for name, v in (("mu_p", mu_p), ("var_p", var_p), ("mu_q", mu_q), ("var_q", var_q)):
        check_tensor(v, name)
    if not bool((var_p > 0).all()) or not bool((var_q > 0).all()):
        raise ValueError("var_p and var_q must be > 0")
    c2 = 0.5 / var_q - 0.5 / var_p
    c1 = mu_p / var_p - mu_q / var_q
    c0 = 0.5 * mu_q**2 / var_q - 0.5 * mu_p**2 / var_p + 0.5 * torch.log(var_q / var_p)
    return torch.stack(torch.broadcast_tensors(c0, c1, c2), dim=-1)


def quadratic_disc(coeffs: torch.Tensor) -> Fn:
    """The 1-D discriminator ``D(x) = c0 + c1 x + c2 x^2`` as a callable ``(N, 1) -> (N,)`` (Used in P36).

    ``coeffs`` is a ``(3,)`` tensor ``(c0, c1, c2)``.
    """
    check_tensor(coeffs, "coeffs", ndim=1)
    if coeffs.shape[0] != 3:
        raise ValueError(f"coeffs must have shape (3,), got {tuple(coeffs.shape)}")

    def disc(x: torch.Tensor) -> torch.Tensor:
        u = x[:, 0]
        return coeffs[0] + coeffs[1] * u + coeffs[2] * u * u

    return disc


def fit_quadratic_logistic(x_p: torch.Tensor, x_q: torch.Tensor, *, n_newton: int = 25) -> torch.Tensor:
    """Vanilla-GAN discriminator with features ``(1, x, x^2)``, fitted by Newton's method (Used in P36).

    Maximises ``mean_p log sigma(D) + mean_q log(1 - sigma(D))`` (real label 1) over
    ``D(x) = c0 + c1 x + c2 x^2``; with equal sample sizes its optimum is ``D* = log p/q``,
    which is exactly quadratic for two Gaussians. Computed in float64; a tiny ridge
    (``1e-10``) keeps the Newton system solvable.

    Parameters
    ----------
    x_p : torch.Tensor
        ``(N,)`` real samples.
    x_q : torch.Tensor
        ``(M,)`` generated samples.
    n_newton : int
        Number of Newton iterations, >= 1.

    Returns
    -------
    torch.Tensor
        ``(3,)`` coefficients ``(c0, c1, c2)`` in ``x_p``'s dtype and device.
    """
    check_tensor(x_p, "x_p", ndim=1)
    check_tensor(x_q, "x_q", ndim=1)
    n_newton = check_int(n_newton, "n_newton", ge=1)
    if x_p.numel() < 2 or x_q.numel() < 2:
        raise ValueError("x_p and x_q need at least 2 samples each")
    x = torch.cat([x_p, x_q.to(x_p)]).double()
    y = torch.cat([torch.ones_like(x_p), torch.zeros_like(x_q, device=x_p.device)]).double()
    w = torch.cat([x_p.new_full(x_p.shape, 0.5 / x_p.numel()), x_p.new_full(x_q.shape, 0.5 / x_q.numel())]).double()
    feats = torch.stack([torch.ones_like(x), x, x * x], dim=1)           # (N+M, 3)
    # standardise the features (columns 1, 2) for a well-conditioned Newton system
    scale = feats.abs().amax(dim=0).clamp_min(1e-12)
    f = feats / scale
    c = torch.zeros(3, dtype=torch.float64, device=x.device)
    ridge = 1e-10 * torch.eye(3, dtype=torch.float64, device=x.device)
    for _ in range(n_newton):
        s = torch.sigmoid(f @ c)
        grad = f.T @ (w * (y - s))
        hess = (f * (w * s * (1 - s)).unsqueeze(1)).T @ f + ridge
        c = c + torch.linalg.solve(hess, grad)
    return (c / scale).to(dtype=x_p.dtype)


def train_affine_gan(
    theta0: torch.Tensor,
    *,
    mu_p: float,
    std_p: float,
    outer_steps: int,
    inner_steps: int,
    lr: float,
    eps: float,
    loss: str = "negD",
    n_z: int = 4000,
    gen: torch.Generator | None = None,
) -> torch.Tensor:
    """Toy GAN-as-flow: affine generator, exact discriminator, ``k`` generator steps each (Derived in P36).

    Generator ``g(z) = a z + b`` with ``z ~ N(0, 1)``, so ``q_t = N(b, a^2)``; target
    ``p = N(mu_p, std_p^2)``. At each outer iteration the discriminator is set to its optimum
    ``D = log p/q_t`` (:func:`gaussian_logratio_coeffs`), a fresh batch of ``n_z`` noises is drawn,
    and the generator takes ``inner_steps`` plain gradient steps (learning rate ``lr``) on

        "negD":        mean_z -D(a z + b)                                   (D held fixed)
        "regression":  mean_z (a z + b - x_target)^2 / (2 eps),
                       x_target = a_t z + b_t + eps * D'(a_t z + b_t)       (target held fixed)

    Both gradients are exact sample averages. Because ``D`` is quadratic and ``g`` affine they
    depend on the batch only through ``mean z`` and ``mean z^2``, which is what the loop uses
    (no autograd); the tests compare it with an autograd implementation. The first inner step
    is the same for both losses.

    Parameters
    ----------
    theta0 : torch.Tensor
        ``(2,)`` initial ``(a, b)`` with ``a != 0``; sets device and dtype.
    mu_p, std_p : float
        Target mean and standard deviation (> 0).
    outer_steps : int
        Discriminator updates, >= 0.
    inner_steps : int
        Generator steps per discriminator update, >= 1.
    lr : float
        Generator learning rate, > 0.
    eps : float
        Flow step size in the regression target, > 0.
    loss : str
        ``"negD"`` or ``"regression"``.
    n_z : int
        Noise samples per outer iteration, >= 2.
    gen : torch.Generator, optional
        CPU generator for the noise (default: seeded with 0).

    Returns
    -------
    torch.Tensor
        ``(outer_steps + 1, 2)`` trajectory of ``(a, b)``. Once ``(a, b)`` stops being finite
        (or ``a`` hits 0) the generator has blown up and the remaining rows are ``nan``.
    """
    check_tensor(theta0, "theta0", ndim=1)
    if theta0.shape[0] != 2:
        raise ValueError(f"theta0 must have shape (2,), got {tuple(theta0.shape)}")
    if float(theta0[0]) == 0.0:
        raise ValueError("theta0[0] (the generator scale a) must be nonzero")
    mu_p = check_real(mu_p, "mu_p")
    std_p = check_real(std_p, "std_p", gt=0.0)
    outer_steps = check_int(outer_steps, "outer_steps", ge=0)
    inner_steps = check_int(inner_steps, "inner_steps", ge=1)
    lr = check_real(lr, "lr", gt=0.0)
    eps = check_real(eps, "eps", gt=0.0)
    n_z = check_int(n_z, "n_z", ge=2)
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    g = _cpu_generator(0) if gen is None else gen
    z = torch.randn(outer_steps, n_z, generator=g, dtype=torch.float64)
    # Because D is quadratic and g affine, the batch enters only through mean z and mean z^2;
    # the loop runs on these two numbers per iteration (Python floats: it is sequential anyway).
    m1s, m2s = z.mean(dim=1).tolist(), (z * z).mean(dim=1).tolist()
    a, b = (float(v) for v in theta0.detach().cpu().double())
    vp = std_p * std_p
    rows = [(a, b)]
    for t in range(outer_steps):
        if not (math.isfinite(a) and math.isfinite(b) and a != 0.0 and math.isfinite(a * a)):
            rows += [(math.nan, math.nan)] * (outer_steps - t)    # blown up: nothing left to train
            break
        # exact discriminator D = log p/q_t = c0 + c1 x + c2 x^2  (see gaussian_logratio_coeffs)
        c2 = 0.5 / (a * a) - 0.5 / vp
        c1 = mu_p / vp - b / (a * a)
        # moved samples x_target = a_t z + b_t + eps D'(a_t z + b_t) = A z + B
        A, B = a * (1 + 2 * eps * c2), b + eps * (c1 + 2 * c2 * b)
        m1, m2 = m1s[t], m2s[t]
        for _ in range(inner_steps):
            if loss == "negD":
                # D'(x) = c1 + 2 c2 x at x = a z + b;  grad = -mean(D'(x) * (z, 1))
                ga = -(c1 * m1 + 2 * c2 * (a * m2 + b * m1))
                gb = -(c1 + 2 * c2 * (a * m1 + b))
            else:
                da, db = a - A, b - B
                ga = (da * m2 + db * m1) / eps
                gb = (da * m1 + db) / eps
            a, b = a - lr * ga, b - lr * gb
        rows.append((a, b))
    traj = torch.tensor(rows, dtype=torch.float64).to(device=theta0.device, dtype=theta0.dtype)
    return traj

