"""Measures of sparsity and a randomized test of the Hurley-Rickard criteria (Derived in P37).

P37 (kexue.fm/archives/9595) builds a sparsity measure from "mean of |x| over max of |x|",
smooths the max into an ``l_p`` norm and rescales the result so that it satisfies all six
criteria of Hurley and Rickard (arXiv:0811.4706):

    S_0(x)       = mean|x| / max|x|
    S_{1,p}(x)   = (l_1(x) / n) / l_p(x)
    S*_{q,p}(x)  = n^{1/p - 1/q} l_q(x) / l_p(x) = M_q(|x|) / M_p(|x|),   0 < q < p <= inf,

where ``M_r`` is the power mean. In this convention (Su's) *smaller means sparser*; the
Gini index and Hoyer's measure use the opposite convention, as in the paper. Every measure
reduces over ``dim`` and keeps the other (batch) dimensions; new tensors take device and
dtype from the input.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch

from ._checks import check_dim, check_int, check_real, check_tensor
from .similarity import cosine

__all__ = [
    "zero_fraction",
    "s0",
    "s1p",
    "s_star",
    "hoyer",
    "gini_index",
    "renyi_entropy",
    "sign_cosine",
    "CRITERIA",
    "CriterionResult",
    "sparsity_criteria",
]


def _check_x(x: object, dim: object, *, min_n: int = 1, nonzero: bool = True) -> int:
    """Validate ``x`` (floating, finite, >= 1 dim, >= min_n entries along dim, no all-zero slice)."""
    check_tensor(x, "x", min_ndim=1)
    d = check_dim(dim, x)
    if x.shape[d] < min_n:
        raise ValueError(f"x must have at least {min_n} entries along dim={dim}, got shape {tuple(x.shape)}")
    if nonzero and x.numel() and bool((x.abs().amax(dim=d) == 0).any()):
        raise ValueError("x must not be the zero vector along dim (sparsity is undefined there)")
    return d


def _power_mean(a: torch.Tensor, r: float, dim: int) -> torch.Tensor:
    """Power mean ``(mean a^r)^(1/r)`` of non-negative ``a`` with max(a) = 1 along dim; r = inf gives max."""
    if math.isinf(r):
        return a.amax(dim=dim)
    return a.pow(r).mean(dim=dim).pow(1.0 / r)


def zero_fraction(x: torch.Tensor, *, atol: float = 0.0, dim: int = -1) -> torch.Tensor:
    """Fraction of entries with ``|x_i| <= atol`` (the narrow notion of sparsity; Derived in P37).

    Larger means sparser. ``atol`` is the threshold the post argues has no natural value.
    Shapes: ``x`` ``(..., n, ...)``; output drops ``dim``.
    """
    d = _check_x(x, dim, nonzero=False)
    atol = check_real(atol, "atol", ge=0.0)
    return (x.abs() <= atol).to(x.dtype).mean(dim=d)


def s0(x: torch.Tensor, *, dim: int = -1) -> torch.Tensor:
    """``S_0(x) = (sum_i |x_i| / n) / max_i |x_i|`` in ``[1/n, 1]``; smaller is sparser (Derived in P37).

    Shapes: ``x`` ``(..., n, ...)``; output drops ``dim``. The zero vector raises ``ValueError``.
    """
    d = _check_x(x, dim)
    a = x.abs()
    return a.mean(dim=d) / a.amax(dim=d)


def s1p(x: torch.Tensor, *, p: float = 2.0, dim: int = -1) -> torch.Tensor:
    """``S_{1,p}(x) = (l_1(x) / n) / l_p(x)`` for ``1 < p <= inf``; smaller is sparser (Derived in P37).

    The ``l_p`` norm is the positively homogeneous smooth stand-in for the max in :func:`s0`
    (``p = inf`` gives ``S_0`` back). Shapes: ``x`` ``(..., n, ...)``; output drops ``dim``.
    """
    d = _check_x(x, dim)
    p = _check_order(p, "p", gt=1.0)
    a = x.abs()
    a = a / a.amax(dim=d, keepdim=True)               # scale-free and overflow-safe
    n = x.shape[d]
    lp = a.amax(dim=d) if math.isinf(p) else a.pow(p).sum(dim=d).pow(1.0 / p)
    return a.sum(dim=d) / n / lp


def _check_order(v: object, name: str, *, gt: float) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(v).__name__}")
    v = float(v)
    if math.isnan(v) or not v > gt:
        raise ValueError(f"{name} must be > {gt} (inf allowed), got {v}")
    return v


def s_star(x: torch.Tensor, *, q: float = 1.0, p: float = 2.0, dim: int = -1) -> torch.Tensor:
    """``S*_{q,p}(x) = n^{1/p - 1/q} l_q(x) / l_p(x)`` for ``0 < q < p <= inf`` (Derived in P37).

    Equal to the power-mean ratio ``M_q(|x|) / M_p(|x|)``, so it lies in ``[n^{1/p-1/q}, 1]``:
    1 for a constant vector, the lower end for a one-hot vector. Smaller is sparser. The post's
    main case is ``q = 1, p = 2``: ``l_1 / (sqrt(n) l_2)``. Shapes: ``x`` ``(..., n, ...)``;
    output drops ``dim``.
    """
    d = _check_x(x, dim)
    q = _check_order(q, "q", gt=0.0)
    p = _check_order(p, "p", gt=0.0)
    if math.isinf(q) or not q < p:
        raise ValueError(f"q must be < p, got q={q}, p={p}")
    a = x.abs()
    a = a / a.amax(dim=d, keepdim=True)
    return _power_mean(a, q, d) / _power_mean(a, p, d)


def hoyer(x: torch.Tensor, *, dim: int = -1) -> torch.Tensor:
    """Hoyer's sparseness ``(sqrt(n) - l_1/l_2) / (sqrt(n) - 1)`` in ``[0, 1]``; larger is sparser.

    An affine function of ``S*_{1,2}`` at fixed n: ``hoyer = sqrt(n) (1 - S*_{1,2}) / (sqrt(n) - 1)``
    (P37). Needs ``n >= 2``. Shapes: ``x`` ``(..., n, ...)``; output drops ``dim``.
    """
    d = _check_x(x, dim, min_n=2)
    rn = math.sqrt(x.shape[d])
    a = x.abs()
    a = a / a.amax(dim=d, keepdim=True)
    return (rn - a.sum(dim=d) / torch.linalg.vector_norm(a, dim=d)) / (rn - 1)


def gini_index(x: torch.Tensor, *, dim: int = -1) -> torch.Tensor:
    """Gini index of ``|x|`` as defined by Hurley and Rickard; larger is sparser (P37).

    With ``c_(1) <= ... <= c_(n)`` the sorted magnitudes,
    ``G = 1 - 2 sum_k (c_(k) / l_1) (n - k + 1/2) / n``, which is 0 for a constant vector and
    ``1 - 1/n`` for a one-hot vector. Shapes: ``x`` ``(..., n, ...)``; output drops ``dim``.
    """
    d = _check_x(x, dim)
    c = x.abs().movedim(d, -1).sort(dim=-1).values
    n = c.shape[-1]
    k = torch.arange(1, n + 1, device=x.device, dtype=x.dtype)
    return 1 - 2 * ((c / c.sum(dim=-1, keepdim=True)) * (n - k + 0.5) / n).sum(dim=-1)


def renyi_entropy(x: torch.Tensor, *, alpha: float = 1.0, dim: int = -1, normalize: bool = True) -> torch.Tensor:
    """Renyi entropy ``H_alpha(p) = log(sum_i p_i^alpha) / (1 - alpha)`` of ``p = |x| / l_1(x)`` (P37).

    ``alpha = 1`` is Shannon's ``-sum p log p`` (computed with ``xlogy``, so zeros are fine),
    ``alpha = 0`` is ``log(#nonzero)``, ``alpha = inf`` is ``-log max p``. In nats, in ``[0, log n]``;
    larger is denser. With ``normalize=False`` ``x`` must already be a probability vector
    (non-negative, summing to 1 along ``dim``). Shapes: ``x`` ``(..., n, ...)``; output drops ``dim``.
    """
    d = _check_x(x, dim)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise TypeError(f"alpha must be a real number, got {type(alpha).__name__}")
    alpha = float(alpha)
    if math.isnan(alpha) or alpha < 0:
        raise ValueError(f"alpha must be >= 0 (inf allowed), got {alpha}")
    if normalize:
        pr = x.abs() / x.abs().sum(dim=d, keepdim=True)
    else:
        if bool((x < 0).any()) or bool(((x.sum(dim=d) - 1).abs() > 1e-6).any()):
            raise ValueError("x must be a probability vector along dim when normalize=False")
        pr = x
    if alpha == 1.0:
        return -torch.special.xlogy(pr, pr).sum(dim=d)
    if alpha == 0.0:
        return torch.log((pr > 0).to(x.dtype).sum(dim=d))
    if math.isinf(alpha):
        return -torch.log(pr.amax(dim=d))
    return torch.log(pr.pow(alpha).sum(dim=d)) / (1.0 - alpha)


def sign_cosine(x: torch.Tensor, *, dim: int = -1) -> torch.Tensor:
    """``cos(sign(x), x) = l_1(x) / (sqrt(k) l_2(x))``, k = #nonzero entries (Derived in P37).

    Equals ``S*_{1,2}(x)`` when ``x`` has no zeros. Shapes: ``x`` ``(..., n, ...)``; output drops ``dim``.
    """
    d = _check_x(x, dim)
    return cosine(torch.sign(x), x, dim=d)


# ----------------------------------------------------------------------------- criteria
#: The six criteria of Hurley and Rickard, in the paper's order.
CRITERIA = ("D1", "D2", "D3", "D4", "P1", "P2")


class CriterionResult(NamedTuple):
    """Outcome of one randomized criterion test (see :func:`sparsity_criteria`)."""

    trials: int                       #: number of random vectors tried
    violations: int                   #: how many of them broke the criterion
    example: torch.Tensor | None      #: one violating input vector (float64, CPU), or None


def _robin_hood(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Move a random share of half the gap from a richer to a poorer entry of each row.

    The pair is drawn among entries >= 10% of the row's max (with only one such entry, the
    max and a random other entry), so the change stays resolvable in float64.
    """
    b, n = x.shape
    eligible = x >= 0.1 * x.amax(dim=1, keepdim=True)
    keys = torch.rand(b, n, generator=gen, dtype=x.dtype) + eligible.to(x.dtype)
    i, j = keys.topk(2, dim=1).indices.unbind(1)
    rows = torch.arange(b)
    xi, xj = x[rows, i], x[rows, j]
    rich = torch.where(xi > xj, i, j)
    poor = torch.where(xi > xj, j, i)
    gap = (x[rows, rich] - x[rows, poor]).abs()
    alpha = gap / 2 * (0.05 + 0.9 * torch.rand(b, generator=gen, dtype=x.dtype))
    out = x.clone()
    out[rows, rich] -= alpha
    out[rows, poor] += alpha
    return out


def sparsity_criteria(
    measure: Callable[[torch.Tensor], torch.Tensor],
    *,
    larger_is_sparser: bool = False,
    n_trials: int = 200,
    n_min: int = 3,
    n_max: int = 12,
    gen: torch.Generator | None = None,
    device: torch.device | str | None = None,
    rtol: float = 1e-12,
) -> dict[str, CriterionResult]:
    """Test a sparsity measure against the six Hurley-Rickard criteria on random vectors (P37).

    ``measure(x)`` maps a batch ``(B, n)`` of non-negative vectors to ``(B,)``. In Su's
    convention (``larger_is_sparser=False``, smaller = sparser) the criteria read, for a
    density score ``s`` (``s = measure`` or ``-measure``):

    - D1 Robin Hood: moving ``0 < a < (x_i - x_j)/2`` from ``x_i > x_j`` to ``x_j`` raises s
      (the pair is drawn among entries >= 10% of the max, so the change is resolvable);
    - D2 scaling: ``s(c x) = s(x)`` for ``c > 0``;
    - D3 rising tide: ``s(x + c) > s(x)`` for ``c > 0`` (x not constant);
    - D4 cloning: ``s([x, x]) = s(x)``;
    - P1 Bill Gates: past some ``beta_i``, growing ``x_i`` further lowers s (tested with
      ``beta_i = 10 n max(x)`` and a further growth in ``(0.1, 1) beta_i``);
    - P2 babies: ``s([x, 0]) < s(x)``.

    Vectors have random length in ``[n_min, n_max]`` and entries ``U^g`` with ``U`` uniform on
    ``[0.05, 1]`` and random ``g in [0.5, 4]`` (generic: distinct, positive, of varied sparsity,
    smallest entries ~1e-5 so that strict changes stay far above rounding); they are drawn in
    float64 on the CPU from ``gen`` and moved to ``device``. "Strictly" means by more than
    ``rtol`` relative, "equal" within ``rtol`` relative. Returns ``{criterion: CriterionResult}``.
    """
    if not callable(measure):
        raise TypeError(f"measure must be callable, got {type(measure).__name__}")
    n_trials = check_int(n_trials, "n_trials", ge=1)
    n_min = check_int(n_min, "n_min", ge=2)
    n_max = check_int(n_max, "n_max", ge=n_min)
    rtol = check_real(rtol, "rtol", gt=0.0, lt=1.0)
    if gen is None:
        gen = torch.Generator(device="cpu").manual_seed(0)
    sign = -1.0 if larger_is_sparser else 1.0
    f64 = torch.float64

    def score(v: torch.Tensor) -> torch.Tensor:
        out = measure(v.to(device=device))
        if not isinstance(out, torch.Tensor) or out.shape != v.shape[:1]:
            raise ValueError(f"measure must map a (B, n) batch to a (B,) tensor, got {getattr(out, 'shape', type(out))}")
        return sign * out.to(device="cpu", dtype=f64)

    sizes = torch.randint(n_min, n_max + 1, (n_trials,), generator=gen)
    counts = {c: 0 for c in CRITERIA}
    examples: dict[str, torch.Tensor | None] = {c: None for c in CRITERIA}
    for n in sorted(set(sizes.tolist())):
        b = int((sizes == n).sum())
        g = 0.5 + 3.5 * torch.rand(b, 1, generator=gen, dtype=f64)
        x = (0.05 + 0.95 * torch.rand(b, n, generator=gen, dtype=f64)).pow(g)
        s = score(x)
        c = 0.1 + 2 * torch.rand(b, 1, generator=gen, dtype=f64)          # positive constants
        beta = 10 * n * x.amax(dim=1, keepdim=True)
        i = torch.randint(0, n, (b,), generator=gen)
        bump = torch.zeros_like(x)
        bump[torch.arange(b), i] = 1.0
        grow = (0.1 + 0.9 * torch.rand(b, 1, generator=gen, dtype=f64)) * beta
        s_big = score(x + beta * bump)
        tol = lambda u, v: rtol * (u.abs() + v.abs())                        # noqa: E731
        checks = {
            "D1": (lambda s2: s2 > s + tol(s, s2))(score(_robin_hood(x, gen))),
            "D2": (lambda s2: (s2 - s).abs() <= tol(s, s2))(score(c * x)),
            "D3": (lambda s2: s2 > s + tol(s, s2))(score(x + c)),
            "D4": (lambda s2: (s2 - s).abs() <= tol(s, s2))(score(torch.cat([x, x], dim=1))),
            "P1": (lambda s2: s2 < s_big - tol(s_big, s2))(score(x + (beta + grow) * bump)),
            "P2": (lambda s2: s2 < s - tol(s, s2))(score(torch.cat([x, torch.zeros_like(x[:, :1])], dim=1))),
        }
        for name, ok in checks.items():
            bad = ~ok
            counts[name] += int(bad.sum())
            if examples[name] is None and bool(bad.any()):
                examples[name] = x[bad.nonzero()[0, 0]].clone()
    return {name: CriterionResult(n_trials, counts[name], examples[name]) for name in CRITERIA}
