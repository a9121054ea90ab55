"""GAN losses designed in the dual space: the likelihood-ratio construction (Derived in P16).

P16 (kexue.fm/archives/7210, after Basioti & Moustakides, arXiv:2002.00865) builds a GAN
from two scalar functions ``phi, psi`` of the discriminator output ``t``. With the density
ratio ``r = q/p`` (``p`` real data, ``q`` generator; real label 0, fake label 1),

    d(r) = max_{t in Omega} phi(t) + r psi(t),     t*(r) = omega(r),

and ``min_q max_t E_p[phi(t)] + E_q[psi(t)] = min_q  integral p d(q/p) dx``. Conclusion 1 of
the post: if ``omega`` is strictly increasing, ``rho = psi' > 0`` on ``Omega`` and

    phi'(t) = -omega^{-1}(t) rho(t),    psi'(t) = rho(t),    psi(omega(1)) = 0,

then ``d`` is convex with its minimum at ``r = 1`` (an f-divergence). Conclusion 2: the
generator may use another pair ``(alpha, beta)`` and minimise ``E_q[beta(t)]``; the value at
the optimal discriminator is ``d(r) = alpha(omega(r)) + r beta(omega(r))``.

A family is a :class:`DualFamily` of elementwise torch-callables; :data:`FAMILIES` holds the
post's examples. Everything is vectorised and keeps the input's device and dtype.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable

import torch
import torch.nn.functional as F

from ._checks import check_int, check_real, check_tensor

__all__ = [
    "DualFamily",
    "FAMILIES",
    "lsgan_family",
    "with_generator",
    "optimal_discriminator",
    "d_of_r",
    "d_of_r_numeric",
    "generator_signal",
    "disc_loss",
    "gen_loss",
    "fdiv_quadrature",
]

Fn = Callable[[torch.Tensor], torch.Tensor]
_LOG2 = math.log(2.0)


@dataclass(frozen=True)
class DualFamily:
    """One GAN of the likelihood-ratio construction (Derived in P16).

    The discriminator maximises ``E_p[phi(t)] + E_q[psi(t)]`` over ``t`` in ``t_bounds``;
    its pointwise optimum is ``t = omega(q/p)``. The generator minimises ``E_q[beta(t)]``
    (``beta = psi`` and ``alpha = phi`` unless given: the single-objective GAN of
    Conclusion 1).

    Attributes
    ----------
    name : str
        Label used in the registry and in plots.
    phi, psi : callable
        Elementwise losses on real (``p``) and fake (``q``) discriminator outputs.
    omega : callable
        Optimal discriminator as a function of ``r = q/p`` (tensor in, tensor out).
    omega_inv : callable or None
        Inverse of ``omega``, equal to ``-phi'/psi'``.
    rho : callable or None
        ``psi'``; positive on ``Omega`` for Conclusion 1.
    t_bounds : tuple of float
        The range ``Omega`` of the discriminator output (``inf`` allowed).
    alpha, beta : callable or None
        Generator pair of Conclusion 2.
    """

    name: str
    phi: Fn
    psi: Fn
    omega: Fn
    omega_inv: Fn | None = None
    rho: Fn | None = None
    t_bounds: tuple[float, float] = (-math.inf, math.inf)
    alpha: Fn | None = None
    beta: Fn | None = None

    @property
    def gen_alpha(self) -> Fn:
        """The generator's ``alpha`` (``phi`` if not set)."""
        return self.alpha if self.alpha is not None else self.phi

    @property
    def gen_beta(self) -> Fn:
        """The generator's ``beta`` (``psi`` if not set)."""
        return self.beta if self.beta is not None else self.psi


def lsgan_family(a: float = -1.0, b: float = 1.0) -> DualFamily:
    """LSGAN as a dual family (Derived in P16): real target ``a``, fake target ``b > a``.

    ``omega(r) = (a + b r)/(1 + r)``, ``rho(t) = 2 (b - t)``, ``phi = -(t - a)^2`` and
    ``psi = -(t - b)^2 + ((b - a)/2)^2`` (shifted so that ``psi(omega(1)) = 0``). The generator
    uses ``alpha = beta = ((2t - a - b)/(b - a))^2``, giving ``d(r) = (r - 1)^2/(r + 1)``.

    Parameters
    ----------
    a, b : float
        Targets of real and fake samples, ``b > a``.

    Returns
    -------
    DualFamily
    """
    a = check_real(a, "a")
    b = check_real(b, "b", gt=a)
    half = (b - a) / 2
    mid = (a + b) / 2

    def beta(t: torch.Tensor) -> torch.Tensor:
        return ((t - mid) / half) ** 2

    return DualFamily(
        name=f"lsgan(a={a:g},b={b:g})",
        phi=lambda t: -(t - a) ** 2,
        psi=lambda t: half**2 - (t - b) ** 2,
        omega=lambda r: (a + b * r) / (1 + r),
        omega_inv=lambda t: (t - a) / (b - t),
        rho=lambda t: 2 * (b - t),
        t_bounds=(a, b),
        alpha=beta,
        beta=beta,
    )


def with_generator(family: DualFamily, *, alpha: Fn | None, beta: Fn, name: str) -> DualFamily:
    """Return ``family`` with the generator pair ``(alpha, beta)`` of Conclusion 2 (P16).

    ``alpha=None`` means ``alpha = 0`` (it never reaches the generator's gradient).
    """
    if not isinstance(family, DualFamily):
        raise TypeError(f"family must be a DualFamily, got {type(family).__name__}")
    if not callable(beta):
        raise TypeError("beta must be callable")
    a = alpha if alpha is not None else (lambda t: torch.zeros_like(t))
    return replace(family, name=name, alpha=a, beta=beta)


_VANILLA = DualFamily(
    name="vanilla",
    phi=lambda t: -F.softplus(t),
    psi=lambda t: _LOG2 - F.softplus(-t),
    omega=torch.log,
    omega_inv=torch.exp,
    rho=lambda t: torch.sigmoid(-t),
)

#: The post's examples, keyed by short names (Derived in P16). ``tv`` is total variation
#: (its ``omega`` is decreasing: the flipped-label case); ``vanilla`` is the original GAN with
#: ``t`` a logit; ``log`` is the same GAN with ``t`` a probability (``psi = log t``, shifted
#: by ``log 2``); ``exp`` has ``phi = -e^t, psi = 1 - e^{-t}``; ``lsgan`` is
#: ``lsgan_family(-1, 1)``; ``vanilla-t`` and ``vanilla-ns`` are Conclusion 2's generators
#: ``beta = t`` and ``beta = softplus(t)`` (the non-saturating loss) on the vanilla discriminator.
FAMILIES: dict[str, DualFamily] = {
    "tv": DualFamily(
        name="tv",
        phi=lambda t: t,
        psi=lambda t: -t,
        omega=lambda r: torch.sign(1 - r),
        t_bounds=(-1.0, 1.0),
    ),
    "vanilla": _VANILLA,
    "log": DualFamily(
        name="log",
        phi=lambda t: torch.log1p(-t),
        psi=lambda t: torch.log(t) + _LOG2,
        omega=lambda r: r / (1 + r),
        omega_inv=lambda t: t / (1 - t),
        rho=lambda t: 1 / t,
        t_bounds=(0.0, 1.0),
    ),
    "exp": DualFamily(
        name="exp",
        phi=lambda t: -torch.exp(t),
        psi=lambda t: 1 - torch.exp(-t),
        omega=lambda r: 0.5 * torch.log(r),
        omega_inv=lambda t: torch.exp(2 * t),
        rho=lambda t: torch.exp(-t),
    ),
    "lsgan": replace(lsgan_family(-1.0, 1.0), name="lsgan"),
    "vanilla-t": with_generator(_VANILLA, alpha=None, beta=lambda t: t, name="vanilla-t"),
    "vanilla-ns": with_generator(_VANILLA, alpha=F.softplus, beta=F.softplus, name="vanilla-ns"),
}


def _family(family: object) -> DualFamily:
    if isinstance(family, str):
        if family not in FAMILIES:
            raise ValueError(f"family must be one of {sorted(FAMILIES)}, got {family!r}")
        return FAMILIES[family]
    if not isinstance(family, DualFamily):
        raise TypeError(f"family must be a DualFamily or a name, got {type(family).__name__}")
    return family


def _ratio(r: object) -> torch.Tensor:
    check_tensor(r, "r")
    if r.numel() and bool((r < 0).any()):
        raise ValueError("r must be >= 0 (it is the density ratio q/p)")
    return r


def optimal_discriminator(family: DualFamily | str, r: torch.Tensor) -> torch.Tensor:
    """Optimal discriminator output ``t*(r) = omega(r)`` for ``r = q/p`` (Derived in P16).

    Parameters
    ----------
    family : DualFamily or str
        A family or a key of :data:`FAMILIES`.
    r : torch.Tensor
        Density ratios ``q(x)/p(x) >= 0``, any shape.

    Returns
    -------
    torch.Tensor
        ``omega(r)``, same shape.
    """
    fam = _family(family)
    return fam.omega(_ratio(r))


def d_of_r(family: DualFamily | str, r: torch.Tensor) -> torch.Tensor:
    """Closed-form ``d(r) = alpha(omega(r)) + r beta(omega(r))`` (Derived in P16).

    With the default generator (``alpha = phi``, ``beta = psi``) this is the discriminator's
    optimal value ``max_t phi(t) + r psi(t)``, and ``integral p d(q/p)`` is the f-divergence
    the GAN minimises.

    Parameters
    ----------
    family : DualFamily or str
        A family or a key of :data:`FAMILIES`.
    r : torch.Tensor
        Density ratios ``>= 0``, any shape.

    Returns
    -------
    torch.Tensor
        ``d(r)``, same shape.
    """
    fam = _family(family)
    t = fam.omega(_ratio(r))
    return fam.gen_alpha(t) + r * fam.gen_beta(t)


def d_of_r_numeric(
    phi: Fn,
    psi: Fn,
    r: torch.Tensor,
    *,
    t_bounds: tuple[float, float],
    n_grid: int = 2001,
    n_refine: int = 60,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Numerical ``max_t phi(t) + r psi(t)`` over ``t_bounds``, vectorised over ``r`` (P16).

    A grid search on ``n_grid`` points followed by ``n_refine`` golden-section steps in the
    bracket around the best grid point (the objective is unimodal under Conclusion 1).
    Endpoints are included, so boundary maxima (total variation) are found too; open
    endpoints where ``phi``/``psi`` are infinite are handled by evaluating them as ``-inf``.

    Parameters
    ----------
    phi, psi : callable
        Elementwise functions of ``t``.
    r : torch.Tensor
        Ratios ``>= 0``, shape ``(N,)``.
    t_bounds : tuple of float
        Finite search interval ``(lo, hi)``.
    n_grid, n_refine : int
        Grid size and number of golden-section steps.

    Returns
    -------
    tuple of torch.Tensor
        ``(d, t_star)``, each of shape ``(N,)``.
    """
    _ratio(r)
    if r.ndim != 1:
        raise ValueError(f"r must have 1 dimension(s), got shape {tuple(r.shape)}")
    if not isinstance(t_bounds, tuple) or len(t_bounds) != 2:
        raise TypeError("t_bounds must be a tuple (lo, hi)")
    lo = check_real(t_bounds[0], "t_bounds[0]")
    hi = check_real(t_bounds[1], "t_bounds[1]", gt=lo)
    n_grid = check_int(n_grid, "n_grid", ge=3)
    n_refine = check_int(n_refine, "n_refine", ge=0)

    def obj(t: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            v = phi(t) + r[:, None] * psi(t)
        return torch.nan_to_num(v, nan=-math.inf)

    grid = torch.linspace(lo, hi, n_grid, device=r.device, dtype=r.dtype)
    vals = obj(grid.expand(r.numel(), -1))
    idx = vals.argmax(dim=1)
    h = (hi - lo) / (n_grid - 1)
    a = (grid[idx] - h).clamp(min=lo)
    b = (grid[idx] + h).clamp(max=hi)
    best_t, best_v = grid[idx], vals.gather(1, idx[:, None])[:, 0]
    g = (math.sqrt(5) - 1) / 2
    for _ in range(n_refine):
        c, d = b - g * (b - a), a + g * (b - a)
        fc, fd = obj(torch.stack([c, d], 1)).unbind(1)
        left = fc >= fd
        b = torch.where(left, d, b)
        a = torch.where(left, a, c)
    mid = (a + b) / 2
    fm = obj(mid[:, None])[:, 0]
    better = fm > best_v
    return torch.where(better, fm, best_v), torch.where(better, mid, best_t)


def generator_signal(family: DualFamily | str, r: torch.Tensor) -> torch.Tensor:
    """Per-sample generator loss ``beta(omega(r))`` at the optimal discriminator (P16).

    With the discriminator frozen, the generator's gradient is ``integral dq(x) beta(t(x))``,
    so it follows the divergence ``integral p G(q/p)`` with ``G' = beta o omega`` (this
    matches ``d'`` only up to a constant when ``alpha' + omega^{-1} beta' = 0`` holds up to a
    factor ``1/omega'``, see the notebook's caveat).

    Parameters
    ----------
    family : DualFamily or str
        A family or a key of :data:`FAMILIES`.
    r : torch.Tensor
        Ratios ``>= 0``, any shape.

    Returns
    -------
    torch.Tensor
        ``beta(omega(r))``, same shape.
    """
    fam = _family(family)
    return fam.gen_beta(fam.omega(_ratio(r)))


def disc_loss(family: DualFamily | str, t_real: torch.Tensor, t_fake: torch.Tensor) -> torch.Tensor:
    """Discriminator loss ``-(mean phi(t_real) + mean psi(t_fake))`` to minimise (P16).

    Parameters
    ----------
    family : DualFamily or str
        A family or a key of :data:`FAMILIES`.
    t_real : torch.Tensor
        Discriminator outputs on real samples, shape ``(N,)`` (or any shape).
    t_fake : torch.Tensor
        Discriminator outputs on generated samples, shape ``(M,)`` (or any shape).

    Returns
    -------
    torch.Tensor
        Scalar loss.
    """
    fam = _family(family)
    check_tensor(t_real, "t_real", min_ndim=1)
    check_tensor(t_fake, "t_fake", min_ndim=1)
    return -(fam.phi(t_real).mean() + fam.psi(t_fake).mean())


def gen_loss(family: DualFamily | str, t_fake: torch.Tensor) -> torch.Tensor:
    """Generator loss ``mean beta(t_fake)`` to minimise (``beta = psi`` by default; P16).

    Parameters
    ----------
    family : DualFamily or str
        A family or a key of :data:`FAMILIES`.
    t_fake : torch.Tensor
        Discriminator outputs on generated samples, any shape with at least one dimension.

    Returns
    -------
    torch.Tensor
        Scalar loss.
    """
    fam = _family(family)
    check_tensor(t_fake, "t_fake", min_ndim=1)
    return fam.gen_beta(t_fake).mean()


def fdiv_quadrature(
    d: Fn, p_pdf: torch.Tensor, q_pdf: torch.Tensor, grid: torch.Tensor
) -> torch.Tensor:
    """Trapezoid value of ``integral p(x) d(q(x)/p(x)) dx`` on a 1-D grid (P16).

    Parameters
    ----------
    d : callable
        Elementwise function of the ratio ``r``.
    p_pdf, q_pdf : torch.Tensor
        Densities on the grid, shape ``(G,)``, ``p_pdf > 0``.
    grid : torch.Tensor
        Increasing grid points, shape ``(G,)``.

    Returns
    -------
    torch.Tensor
        Scalar.
    """
    if not callable(d):
        raise TypeError("d must be callable")
    check_tensor(grid, "grid", ndim=1)
    check_tensor(p_pdf, "p_pdf", ndim=1)
    check_tensor(q_pdf, "q_pdf", ndim=1)
    if not p_pdf.shape == q_pdf.shape == grid.shape:
        raise ValueError("p_pdf, q_pdf and grid must have the same shape")
    if grid.numel() < 2 or not bool((grid[1:] > grid[:-1]).all()):
        raise ValueError("grid must be strictly increasing with at least 2 points")
    if not bool((p_pdf > 0).all()):
        raise ValueError("p_pdf must be > 0 on the grid")
    if bool((q_pdf < 0).any()):
        raise ValueError("q_pdf must be >= 0")
    return torch.trapezoid(p_pdf * d(q_pdf / p_pdf), grid)
