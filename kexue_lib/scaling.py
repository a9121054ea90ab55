"""Scaling laws from the quantization hypothesis (Derived in P03).

P03 (kexue.fm/archives/9607, after Michaud et al., arXiv:2303.13506) models a "perfect
model" as countably many skills (*quanta*) used with Zipf frequencies

    p_k = k^{-(gamma+1)} / Z_gamma,   Z_gamma = zeta(gamma + 1),   k = 1, 2, ...

A model that has learned the set ``S`` of quanta has loss ``a`` on their samples and ``b``
elsewhere, so ``L = a + (b - a) * sum_{k not in S} p_k``. Learning the ``n`` most frequent
quanta leaves the tail ``sum_{k>n} p_k ~ n^{-gamma} / (gamma Z_gamma)``; tying ``n`` to
parameters (``n ~ N``), data (``D p_n = tau``) or steps (``S B p_n = tau``) gives the
exponents ``gamma`` and ``gamma / (gamma + 1)``.

The exact tails use SciPy's Hurwitz zeta ``zeta(s, q) = sum_{k>=0} (k + q)^{-s}`` (evaluated on
the CPU in float64; results come back on the input's device). Random draws use a CPU
``torch.Generator`` and are moved afterwards, so CPU and GPU runs see the same numbers.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy import special

from ._checks import check_int, check_real, check_tensor

__all__ = [
    "zipf_normaliser",
    "zipf_probs",
    "zipf_tail",
    "zipf_tail_asymptotic",
    "quanta_loss",
    "quanta_from_data",
    "truncation_for",
    "expected_data_loss",
    "expected_data_loss_asymptotic",
    "simulate_data_loss",
    "simulate_steps_loss",
    "fit_power_law",
]

F64 = torch.float64


def _gamma(gamma: object) -> float:
    return check_real(gamma, "gamma", gt=0.0)


def _check_generator(generator: object) -> None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")


def _positive(x: object, name: str, *, ge: float | None = None, gt: float | None = None) -> torch.Tensor:
    check_tensor(x, name)
    if x.numel():
        lo = float(x.min())
        if ge is not None and lo < ge:
            raise ValueError(f"{name} must be >= {ge}, got a minimum of {lo}")
        if gt is not None and not lo > gt:
            raise ValueError(f"{name} must be > {gt}, got a minimum of {lo}")
    return x


def zipf_normaliser(gamma: float) -> float:
    """``Z_gamma = sum_{k>=1} k^{-(gamma+1)} = zeta(gamma + 1)`` (Derived in P03)."""
    return float(special.zeta(_gamma(gamma) + 1.0))


def zipf_probs(
    gamma: float,
    num_quanta: int,
    *,
    dtype: torch.dtype = F64,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Zipf frequencies ``p_k = k^{-(gamma+1)} / Z_gamma`` for ``k = 1..num_quanta`` (Derived in P03).

    Normalised over *all* quanta, so the entries sum to ``1 - zipf_tail(num_quanta)``, not 1.
    Shapes: output ``(num_quanta,)``.
    """
    g = _gamma(gamma)
    num_quanta = check_int(num_quanta, "num_quanta", ge=1)
    k = torch.arange(1, num_quanta + 1, dtype=F64, device=device)
    return (k.pow(-(g + 1.0)) / zipf_normaliser(g)).to(dtype)


def zipf_tail(n: torch.Tensor, gamma: float) -> torch.Tensor:
    """Exact tail mass ``sum_{k>n} p_k = zeta(gamma + 1, n + 1) / zeta(gamma + 1)`` (Derived in P03).

    ``n`` (any shape, floating, ``>= 0``) may be non-integer: the Hurwitz zeta interpolates.
    Shapes: output ``n``'s shape, dtype and device.
    """
    g = _gamma(gamma)
    _positive(n, "n", ge=0.0)
    q = n.detach().to("cpu", F64).numpy() + 1.0
    tail = special.zeta(g + 1.0, q) / special.zeta(g + 1.0)
    return torch.as_tensor(np.asarray(tail), dtype=F64).to(device=n.device, dtype=n.dtype)


def zipf_tail_asymptotic(n: torch.Tensor, gamma: float, *, order: int = 0) -> torch.Tensor:
    """Euler-Maclaurin approximation of ``sum_{k>n} p_k`` (Derived in P03).

    ``order=0`` is the post's integral ``int_n^inf x^{-(gamma+1)} dx / Z = n^{-gamma} / (gamma Z)``;
    ``order=1`` subtracts ``n^{-(gamma+1)} / (2 Z)``; ``order=2`` adds
    ``(gamma + 1) n^{-(gamma+2)} / (12 Z)``. The relative error of order ``j`` is
    ``O(n^{-j-1})`` (order 2 jumps to ``O(n^{-4})``: the ``n^{-3}`` term is zero).
    Shapes: ``n`` any (floating, ``> 0``); output the same.
    """
    g = _gamma(gamma)
    order = check_int(order, "order", ge=0, le=2)
    _positive(n, "n", gt=0.0)
    z = zipf_normaliser(g)
    out = n.pow(-g) / (g * z)
    if order >= 1:
        out = out - n.pow(-g - 1.0) / (2.0 * z)
    if order >= 2:
        out = out + (g + 1.0) * n.pow(-g - 2.0) / (12.0 * z)
    return out


def quanta_loss(n: torch.Tensor, gamma: float, *, a: float = 0.0, b: float = 1.0) -> torch.Tensor:
    """Loss after learning the ``n`` most frequent quanta: ``L = a + (b - a) sum_{k>n} p_k`` (Derived in P03).

    ``a`` is the loss on samples of learned quanta, ``b > a`` on the others. Shapes: ``n``
    any (floating, ``>= 0``); output the same.
    """
    a = check_real(a, "a")
    b = check_real(b, "b", gt=a)
    return a + (b - a) * zipf_tail(n, gamma)


def quanta_from_data(D: torch.Tensor, gamma: float, *, tau: float) -> torch.Tensor:
    """Sharp-threshold number of learnable quanta ``n = (D / (tau Z))^{1/(gamma+1)}`` (Derived in P03).

    Solves ``D p_n = tau``: quantum ``k`` is learned iff its expected count ``D p_k`` reaches
    ``tau``, so exactly the quanta ``k <= n`` are learned. The same formula gives the steps
    law with ``D = S B`` (steps times batch size). Shapes: ``D`` any; output the same.
    """
    g = _gamma(gamma)
    tau = check_real(tau, "tau", gt=0.0)
    _positive(D, "D", ge=0.0)
    return (D / (tau * zipf_normaliser(g))).pow(1.0 / (g + 1.0))


def truncation_for(D_max: float, gamma: float, *, tau: float, margin: float = 20.0) -> int:
    """Number of quanta to simulate so that every quantum beyond it has ``D_max p_k <= tau / margin``.

    Quanta past the cut are treated as never learned; with ``tau = 10``, ``margin = 20`` the
    chance that a Poisson(0.5) count reaches 10 is below ``3e-10``. (Derived in P03.)
    """
    g = _gamma(gamma)
    D_max = check_real(D_max, "D_max", gt=0.0)
    tau = check_real(tau, "tau", gt=0.0)
    margin = check_real(margin, "margin", ge=1.0)
    k = (margin * D_max / (tau * zipf_normaliser(g))) ** (1.0 / (g + 1.0))
    return max(1, int(math.ceil(k)))


def _truncation(D: torch.Tensor, gamma: float, tau: float, num_quanta: int | None) -> int:
    if num_quanta is None:
        return truncation_for(max(float(D.max()), 1.0) if D.numel() else 1.0, gamma, tau=tau)
    return check_int(num_quanta, "num_quanta", ge=1)


def expected_data_loss(
    D: torch.Tensor, gamma: float, *, tau: int, num_quanta: int | None = None
) -> torch.Tensor:
    """Expected loss (``a=0, b=1``) when quantum ``k`` is learned iff its count reaches ``tau`` (Derived in P03).

    With Poisson counts ``c_k ~ Poisson(D p_k)`` (a data set of Poisson size ``D``),
    ``E[L] = sum_k p_k P(c_k < tau) = sum_k p_k Q(tau, D p_k)``, ``Q`` the regularised upper
    incomplete gamma function (SciPy's ``gammaincc``). Quanta beyond ``num_quanta`` (default:
    :func:`truncation_for` at ``max(D)``) count as unlearned. Shapes: ``D`` ``(m,)``; output ``(m,)``.
    """
    g = _gamma(gamma)
    tau = check_int(tau, "tau", ge=1)
    check_tensor(D, "D", ndim=1)
    _positive(D, "D", ge=0.0)
    K = _truncation(D, g, tau, num_quanta)
    p = zipf_probs(g, K).numpy()
    d = D.detach().to("cpu", F64).numpy()
    loss = (p * special.gammaincc(tau, d[:, None] * p)).sum(-1) + float(zipf_tail(torch.tensor(float(K), dtype=F64), g))
    return torch.as_tensor(loss, dtype=F64).to(device=D.device, dtype=D.dtype)


def expected_data_loss_asymptotic(D: torch.Tensor, gamma: float, *, tau: float) -> torch.Tensor:
    """Large-``D`` form of :func:`expected_data_loss`: the sharp law times a Poisson factor (Derived in P03).

    With ``alpha = gamma / (gamma + 1)``, replacing the sum over ``k`` by an integral and
    substituting ``u = D p_k`` gives

        E[L] ~ c_tau * (tau Z)^alpha / (gamma Z) * D^{-alpha},   c_tau = Gamma(tau + alpha) / (Gamma(tau) tau^alpha),

    using ``int_0^inf u^{alpha-1} Q(tau, u) du = Gamma(tau + alpha) / (alpha Gamma(tau))``. The
    second factor is the sharp-threshold law (:func:`quanta_from_data` in the integral tail), so
    Poisson noise changes only the prefactor, by ``c_tau = 1 - alpha (1 - alpha) / (2 tau) + ...``.
    Shapes: ``D`` any (floating, ``> 0``); output the same.
    """
    g = _gamma(gamma)
    tau = check_real(tau, "tau", gt=0.0)
    _positive(D, "D", gt=0.0)
    alpha = g / (g + 1.0)
    c_tau = math.exp(math.lgamma(tau + alpha) - math.lgamma(tau)) / tau**alpha
    return c_tau * zipf_tail_asymptotic(quanta_from_data(D, g, tau=tau), g)


def simulate_data_loss(
    D: torch.Tensor,
    gamma: float,
    *,
    tau: int,
    num_quanta: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One Monte-Carlo draw of the data-limited loss for each data size in ``D`` (Derived in P03).

    Each quantum's training count is ``c_k ~ Poisson(D p_k)`` (independent counts: the data set
    has Poisson(D) samples); quantum ``k`` is learned iff ``c_k >= tau``; the returned loss is the
    test loss ``sum_{k unlearned} p_k`` (``a=0, b=1``), exact given the learned set.
    Shapes: ``D`` ``(m,)``; output ``(m,)``.
    """
    g = _gamma(gamma)
    tau = check_int(tau, "tau", ge=1)
    check_tensor(D, "D", ndim=1)
    _positive(D, "D", ge=0.0)
    _check_generator(generator)
    K = _truncation(D, g, tau, num_quanta)
    p = zipf_probs(g, K)
    counts = torch.poisson(D.detach().to("cpu", F64)[:, None] * p, generator=generator)
    loss = (p * (counts < tau)).sum(-1) + zipf_tail(torch.tensor(float(K), dtype=F64), g)
    return loss.to(device=D.device, dtype=D.dtype)


def simulate_steps_loss(
    steps: torch.Tensor,
    gamma: float,
    *,
    batch_size: int,
    tau: int,
    num_quanta: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Loss along one online training run, read at the checkpoints ``steps`` (Derived in P03).

    Every step draws a fresh batch of ``batch_size`` samples, so quantum ``k`` gains
    ``Poisson(batch_size p_k)`` samples per step. The counts between consecutive checkpoints are
    drawn in one go (a sum of independent Poissons is Poisson) and accumulated, so the curve is
    one path, not independent draws. Quantum ``k`` is learned once its count reaches ``tau``.
    Shapes: ``steps`` ``(m,)`` strictly increasing, ``>= 1``; output ``(m,)``.
    """
    g = _gamma(gamma)
    batch_size = check_int(batch_size, "batch_size", ge=1)
    tau = check_int(tau, "tau", ge=1)
    check_tensor(steps, "steps", ndim=1)
    _positive(steps, "steps", ge=1.0)
    if steps.numel() > 1 and not bool((steps.diff() > 0).all()):
        raise ValueError("steps must be strictly increasing")
    _check_generator(generator)
    s = steps.detach().to("cpu", F64)
    K = _truncation(s * batch_size, g, tau, num_quanta)
    p = zipf_probs(g, K)
    gaps = torch.diff(s, prepend=s.new_zeros(1))
    counts = torch.poisson(gaps[:, None] * batch_size * p, generator=generator).cumsum(0)
    loss = (p * (counts < tau)).sum(-1) + zipf_tail(torch.tensor(float(K), dtype=F64), g)
    return loss.to(device=steps.device, dtype=steps.dtype)


def fit_power_law(x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Least-squares fit of ``log y = slope * log x + intercept`` (Derived in P03).

    Returns ``(slope, intercept)`` (natural logarithms), so ``y ~ exp(intercept) x^slope``.
    Shapes: ``x``, ``y`` ``(m,)`` with ``m >= 2``, positive, ``x`` not all equal.
    """
    check_tensor(x, "x", ndim=1)
    check_tensor(y, "y", ndim=1)
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.numel() < 2:
        raise ValueError(f"x must hold at least 2 points, got {x.numel()}")
    _positive(x, "x", gt=0.0)
    _positive(y, "y", gt=0.0)
    lx, ly = x.to(F64).log(), y.to(F64).log()
    cx = lx - lx.mean()
    var = float((cx * cx).sum())
    if var <= 0.0:
        raise ValueError("x must not be all equal")
    slope = float((cx * (ly - ly.mean())).sum()) / var
    return slope, float(ly.mean()) - slope * float(lx.mean())
