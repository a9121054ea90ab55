"""Sparse probability maps: sparsemax, entmax-1.5 and alpha-entmax, with their thresholds.

Derived in P01 (kexue.fm/archives/10145). Every map here has the form

    p = relu(beta * x - lam) ** (1 / beta),      alpha = 1 + beta,     sum(p) = 1,

a softmax ``exp(x - lam)`` whose exponential is replaced by the truncated power
``relu(1 + beta * x) ** (1 / beta)``. The normaliser ``lam`` (the *threshold*) is found by

* exactly for ``alpha = 2`` (sparsemax) and ``alpha = 1.5``, from the closed-form threshold of
  a candidate support, without sorting: candidates above a lower bound on ``lam`` shrink until
  they are consistent (Michelot's method; Newton steps for 1.5), with a sort and a cumulative
  sum as the fallback for rows that do not settle;
* a safeguarded Newton iteration (bisection fallback) for any other ``alpha > 1``.

All functions reduce over ``dim`` (any dimension, any batch shape), take device and dtype
from the input, and have closed-form backward passes
(``J = diag(s) - s s^T / sum(s)`` with ``s = p ** (2 - alpha)`` on the support).
"""
from __future__ import annotations

import torch

from ._checks import check_int, check_real, check_tensor
from .probability import _check_target, _check_x

__all__ = [
    "sparsemax_threshold",
    "sparsemax",
    "entmax15_threshold",
    "entmax15",
    "entmax_bisect_threshold",
    "entmax_bisect",
    "sparsemax_loss",
]


def _ranks(k: int, like: torch.Tensor) -> torch.Tensor:
    """The row vector 1, 2, ..., k in ``like``'s dtype and device."""
    return torch.arange(1, k + 1, device=like.device, dtype=like.dtype)


def _sparsemax_kernel(xs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``xs`` (R, k) sorted descending -> (lam, support), each (R, 1)."""
    top = xs[:, :1]
    zs = xs - top                                   # shift so the largest entry is 0
    csum = zs.cumsum(-1) - 1                        # k * lam_k = sum_{i<=k} z_i - 1
    support = (_ranks(xs.shape[1], xs) * zs > csum).sum(-1, keepdim=True)  # z_k > lam_k: a prefix
    lam = csum.gather(-1, support - 1) / support.to(xs.dtype)
    return lam + top, support


def _entmax15_kernel(xs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``xs`` (R, k) sorted descending -> (lam on the x/2 scale, support), each (R, 1)."""
    top = xs[:, :1]
    zs = (xs - top) * 0.5                           # z = x / 2, shifted so max z = 0
    k = _ranks(xs.shape[1], xs)
    mu = zs.cumsum(-1) / k
    var = (zs * zs).cumsum(-1) / k - mu * mu
    lam_k = mu - (1 / k - var).clamp_min_(0).sqrt_()
    # z_k >= lam_k holds exactly for k <= |support| (plus entries sitting on the threshold,
    # which give the same lam), so counting is the same as taking the largest such k.
    support = (zs >= lam_k).sum(-1, keepdim=True)
    return lam_k.gather(-1, support - 1) + top * 0.5, support


#: First partial-sort size of the sort-based thresholds (then x8, or a full sort).
TOPK_START = 64


def _sorted_threshold(x: torch.Tensor, dim: int, kernel) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply a sorted-prefix kernel along ``dim`` using partial sorts where they suffice.

    Because the support test holds on a prefix of the sorted entries, the top ``k`` entries
    determine the threshold whenever the support found among them is smaller than ``k``. Rows
    where it is not are retried with ``8k`` entries; a full sort is used once ``4k >= n`` or
    when more than half of the rows are still undecided (dense supports, where partial sorts
    do not pay).
    """
    n = x.shape[dim]
    xl = x.movedim(dim, -1)
    x2 = xl.reshape(-1, n)
    rows = x2.shape[0]
    lam = support = todo = None
    k = TOPK_START
    full = 4 * k >= n
    while True:
        sub = x2 if todo is None else x2[todo]
        xs = torch.sort(sub, dim=-1, descending=True)[0] if full else sub.topk(k, dim=-1)[0]
        lam_s, sup_s = kernel(xs)
        if lam is None:
            lam, support = lam_s, sup_s
        else:
            lam[todo], support[todo] = lam_s, sup_s
        if full:
            break
        unsure = (sup_s >= k).squeeze(-1)           # the support may extend past the top k
        n_unsure = int(unsure.sum())
        if n_unsure == 0:
            break
        k *= 8
        full = 4 * k >= n or 2 * n_unsure > rows
        if not (todo is None and n_unsure == rows):  # all rows undecided: no gather copy
            todo = unsure.nonzero().squeeze(-1) if todo is None else todo[unsure]
    shape = xl.shape[:-1] + (1,)
    return lam.reshape(shape).movedim(-1, dim), support.reshape(shape).movedim(-1, dim)


#: Most iterations of the sort-free support search before the remaining rows are sorted.
SUPPORT_ITERS = 24


class _Rows:
    """Per-row sums over candidate entries ``z > tau``: the full rows, or a compact list.

    Dense form: ``z`` (R, n). Compact form (when few entries can be in any support): the
    values ``vals`` (m,) of the entries above the starting ``tau`` with their row indices
    ``rows`` (m,); every other entry stays below ``tau`` (which only rises), so it never counts.
    """

    def __init__(self, z: torch.Tensor, tau: torch.Tensor):
        self.R, self.n = z.shape
        self.inf = torch.tensor(float("inf"), dtype=z.dtype, device=z.device)
        self.compact, self.first = False, None
        zmin = z.amin(-1, keepdim=True)
        if bool((zmin > tau).all()):               # every entry is a candidate (dense supports)
            self.z, self.first = z, (tau, None, zmin)
            return
        on = z > tau
        self.compact = 4 * int(torch.count_nonzero(on)) <= z.numel()   # one host sync
        if self.compact:
            flat = on.reshape(-1).nonzero().squeeze(-1)
            self.vals, self.rows = z.reshape(-1)[flat], flat // self.n
        else:
            self.z, self.first = z, (tau, on, None)   # the first moments() call reuses ``on``

    def _sum(self, v: torch.Tensor) -> torch.Tensor:
        if self.compact:
            return v.new_zeros(self.R).index_add_(0, self.rows, v).unsqueeze(-1)
        return v.sum(-1, keepdim=True)

    def _values(self, tau: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (self.vals, tau.squeeze(-1)[self.rows]) if self.compact else (self.z, tau)

    def moments(self, tau: torch.Tensor, squares: bool):
        """Count, sum, sum of squares (or None) and min of the entries ``z > tau``, each (R, 1)."""
        v, t = self._values(tau)
        first, self.first = self.first, None
        if first is not None and first[0] is tau and first[1] is None:   # all entries: no masks
            k = torch.full_like(first[2], float(self.n))
            return k, v.sum(-1, keepdim=True), (v * v).sum(-1, keepdim=True) if squares else None, first[2]
        on = first[1] if first is not None and first[0] is tau else v > t
        zon = torch.where(on, v, 0.0)
        masked = torch.where(on, v, self.inf)
        if self.compact:
            zmin = torch.full((self.R,), float("inf"), dtype=v.dtype, device=v.device)
            zmin = zmin.scatter_reduce_(0, self.rows, masked, "amin").unsqueeze(-1)
        else:
            zmin = masked.amin(-1, keepdim=True)
        szz = self._sum(zon * zon) if squares else None
        return self._sum(on.to(v.dtype)), self._sum(zon), szz, zmin

    def relu_sums(self, tau: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``sum relu(z - tau)`` and ``sum relu(z - tau)^2``, each (R, 1)."""
        v, t = self._values(tau)
        r = (v - t).clamp_min(0)
        return self._sum(r), self._sum(r * r)


def _support_search(z: torch.Tensor, tau: torch.Tensor, entmax15: bool):
    """Sort-free exact threshold on rows ``z`` (R, n) with ``max z = 0``, from ``tau <= lam``.

    Each iteration takes the candidate support ``S = {z > tau}`` (a superset of the true one
    while ``tau`` is below the root) and the closed-form threshold of ``S``: ``(sum_S z - 1)/k``
    (sparsemax) or ``mu_S - sqrt(1/k - var_S)`` (entmax-1.5, on the ``z = x/2`` scale). That
    candidate is the exact threshold iff every entry of ``S`` is at or above it (then the map
    restricted to ``S`` sums to one and nothing outside ``S`` is positive). Otherwise:

    * sparsemax: the candidate is still a lower bound, and iterating is Michelot's method
      (``S`` shrinks every step, so it ends in at most ``n`` steps; typically 2-4);
    * entmax-1.5: the candidate overshoots, so ``tau`` takes a Newton step on the convex,
      decreasing ``||relu(z - tau)||_2 - 1`` instead, which stays below the root.

    Dense supports finish in one iteration (``S`` = everything is already right). When few
    entries lie above the starting ``tau`` (sparse supports), they are gathered once into a
    compact list and the iterations run on that list only. Each iteration is a few elementwise
    passes, against ``O(n log n)`` for a sort. Returns the shifted threshold (R, 1) and a
    boolean mask of rows solved exactly (R,); rows still open after ``SUPPORT_ITERS``
    iterations are left to the sort-based path.
    """
    rows = _Rows(z, tau)
    done = torch.zeros(z.shape[0], dtype=torch.bool, device=z.device)
    for _ in range(SUPPORT_ITERS):
        k, sz, szz, zmin = rows.moments(tau, squares=entmax15)
        if entmax15:
            mu = sz / k
            var = szz / k - mu * mu
            cand = mu - (1 / k - var).clamp_min(0).sqrt()
            ok = (zmin >= cand) & (var <= 1 / k)
        else:
            cand = (sz - 1) / k
            ok = zmin >= cand
        done |= ok.squeeze(-1)
        if bool(done.all()):                       # one host sync per iteration
            return torch.where(ok, cand, tau), done
        if entmax15:                               # Newton on ||r||_2 - 1 from the left
            s1, s2 = rows.relu_sums(tau)
            tau = torch.where(ok, cand, tau + (s2 - s2.sqrt()) / s1)
        else:
            tau = cand
    return tau, done


def _threshold(x: torch.Tensor, dim: int, entmax15: bool):
    """Shifted threshold and row max: ``lam = lam_shift + top`` (entmax-1.5: on the x/2 scale).

    Returns ``(lam_shift, top, z)`` with ``z = (x - max) * scale`` moved to the last dimension
    and flattened to rows (R, n); ``lam_shift`` is (R, 1) on the scale of ``z``.
    """
    n = x.shape[dim]
    x2 = x.movedim(dim, -1).reshape(-1, n)
    top = x2.amax(-1, keepdim=True)
    z = x2 - top
    if entmax15:
        z.mul_(0.5)
        top = top * 0.5
    tau0 = torch.full_like(top, -1.0)              # lam >= -1: the top entry alone gives p = 1
    lam, done = _support_search(z, tau0, entmax15)
    if not bool(done.all()):
        todo = (~done).nonzero().squeeze(-1)
        kernel = _entmax15_kernel if entmax15 else _sparsemax_kernel
        rest, _ = _sorted_threshold(z[todo] * (2.0 if entmax15 else 1.0), -1, kernel)
        lam[todo] = rest
    return lam, top, z


def _lam_support(x: torch.Tensor, dim: int, entmax15: bool):
    """Threshold (on the scale of the API) and support size, shaped like ``x`` with 1 at dim."""
    lam, top, z = _threshold(x, dim, entmax15)
    support = (z > lam).sum(-1, keepdim=True)
    shape = x.movedim(dim, -1).shape[:-1] + (1,)
    return (lam + top).reshape(shape).movedim(-1, dim), support.reshape(shape).movedim(-1, dim)


def _map_forward(x: torch.Tensor, dim: int, entmax15: bool) -> torch.Tensor:
    """relu(z - lam) (sparsemax) or relu(z - lam) (entmax-1.5, r = sqrt(p)), shaped like x."""
    lam, _, z = _threshold(x, dim, entmax15)
    r = (z - lam).clamp_min_(0)                    # from the shifted z: no cancellation at large x
    return r.reshape(x.movedim(dim, -1).shape).movedim(-1, dim)


def _sparsemax_lam(x: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    return _lam_support(x, dim, entmax15=False)


def _entmax15_lam(x: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    return _lam_support(x, dim, entmax15=True)


def sparsemax_threshold(x: torch.Tensor, *, dim: int = -1) -> tuple[torch.Tensor, torch.Tensor]:
    """Threshold ``lam`` and support size of sparsemax (Derived in P01).

    With ``x`` sorted so that ``x_(1) >= ... >= x_(n)`` and ``lam_k = (sum_{i<=k} x_(i) - 1) / k``,
    the support size is the largest ``k`` with ``x_(k) > lam_k`` and ``lam = lam_k`` there.

    Shapes: ``x`` is ``(..., n, ...)`` with ``n`` at ``dim``; both outputs have size 1 at ``dim``
    (``lam`` in ``x.dtype``, the support size as ``int64``). Not differentiable; use
    :func:`sparsemax` for gradients.
    """
    dim = _check_x(x, dim)
    with torch.no_grad():
        return _sparsemax_lam(x, dim)


class _SparsemaxFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dim):
        p = _map_forward(x, dim, entmax15=False)
        ctx.dim = dim
        ctx.save_for_backward(p)
        return p

    @staticmethod
    def backward(ctx, g):
        (p,) = ctx.saved_tensors
        on = p > 0                                 # J = diag(on) - on on^T / |on|
        g_on = torch.where(on, g, 0.0)
        k = torch.count_nonzero(on, dim=ctx.dim).unsqueeze(ctx.dim)
        mean = g_on.sum(ctx.dim, keepdim=True) / k
        return torch.where(on, g_on - mean, 0.0), None


def sparsemax(x: torch.Tensor, *, dim: int = -1) -> torch.Tensor:
    """Sparsemax: the Euclidean projection of ``x`` onto the probability simplex (Derived in P01).

    ``sparsemax(x) = argmin_{p in simplex} ||p - x||^2 = relu(x - lam(x))`` with ``lam`` from
    :func:`sparsemax_threshold`. Jacobian on the support ``S``: ``delta_ij - 1/|S|``, zero
    elsewhere (closed-form backward). Martins & Astudillo, arXiv:1602.02068.

    Shapes: ``x`` ``(..., n, ...)``, output the same shape; sums to one along ``dim``.
    """
    dim = _check_x(x, dim)
    return _SparsemaxFn.apply(x, dim)


def entmax15_threshold(x: torch.Tensor, *, dim: int = -1) -> tuple[torch.Tensor, torch.Tensor]:
    """Threshold ``lam`` and support size of entmax-1.5, exactly (Derived in P01).

    With ``z = x / 2`` sorted descending, ``mu_k`` and ``sigma_k^2`` the mean and variance of the
    top ``k`` entries, the root of ``sum_{i<=k} (z_(i) - lam)^2 = 1`` below ``z_(k)`` is
    ``lam_k = mu_k - sqrt(1/k - sigma_k^2)``; the support size is the largest ``k`` with
    ``z_(k) >= lam_k`` (this also handles tied logits, where the post's strict two-sided test
    ``z_(k) > lam_k > z_(k+1)`` can select nothing).

    Shapes: as :func:`sparsemax_threshold`; ``lam`` is on the ``z = x/2`` scale.
    """
    dim = _check_x(x, dim)
    with torch.no_grad():
        return _entmax15_lam(x, dim)


class _Entmax15Fn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dim):
        r = _map_forward(x, dim, entmax15=True)    # r = sqrt(p)
        ctx.dim = dim
        ctx.save_for_backward(r)
        return r * r

    @staticmethod
    def backward(ctx, g):
        (r,) = ctx.saved_tensors                   # J = diag(r) - r r^T / sum(r)
        gr = g * r
        q = gr.sum(ctx.dim, keepdim=True) / r.sum(ctx.dim, keepdim=True)
        return gr - q * r, None


def entmax15(x: torch.Tensor, *, dim: int = -1) -> torch.Tensor:
    """Entmax-1.5: ``p = relu(x/2 - lam(x))^2`` with ``sum(p) = 1`` (Derived in P01).

    ``lam`` is computed exactly by :func:`entmax15_threshold` (sort + cumulative moments).
    Jacobian ``diag(r) - r r^T / sum(r)`` with ``r = sqrt(p)`` (closed-form backward).
    Peters, Niculae & Martins, arXiv:1905.05702.

    Shapes: ``x`` ``(..., n, ...)``, output the same shape; sums to one along ``dim``.
    """
    dim = _check_x(x, dim)
    return _Entmax15Fn.apply(x, dim)


_DEFAULT_TOL = {torch.float64: 1e-12, torch.float32: 1e-6}


def _entmax_newton(x: torch.Tensor, beta: float, dim: int, n_iter: int, tol: float):
    """Solve f(lam) = sum relu(z - lam)^q - 1 = 0 with z = beta (x - max x), q = 1/beta.

    Returns (lam, z, iterations); lam is on the shifted scale, in [-1, -n^(-beta)].

    A bracket [lo, hi] with f(lo) >= 0 >= f(hi) is kept; Newton steps that leave it are
    replaced by bisection. Between two consecutive sorted entries f is a sum of power
    functions with a fixed support, so it is smooth there:

    * q >= 1 (alpha <= 2): start at lo and step on psi(lam) = ||relu(z - lam)||_q - 1, which is
      convex, decreasing and homogeneous of degree one in the gaps (nearly linear), so the
      iterates rise monotonically and converge quadratically; finite for q = 1 (Michelot).
    * q < 1 (alpha > 2): each piece of f is concave, so Newton from a point right of the root
      (f <= 0) cannot overshoot within a piece. Start at hi, take Newton steps from points with
      f <= 0 and bisect after landing left of the root. An entry that has just entered the
      support has an unbounded slope and can make a step tiny far from the root, so a small
      step counts as converged only with |f| <= tol or when lam cannot move at all.

    A row is also done once its bracket is narrower than tol.
    """
    n = x.shape[dim]
    q = 1.0 / beta
    z = (x - x.amax(dim, keepdim=True)) * beta     # max z = 0 (shift invariance)
    lo = z.new_full(z.shape[:dim] + (1,) + z.shape[dim + 1:], -1.0)  # top entry alone gives 1
    hi = torch.full_like(lo, -(n ** -beta))        # every entry below 1/n: f(hi) <= 0
    lam = lo.clone() if q >= 1 else hi.clone()
    it = 0
    for it in range(1, n_iter + 1):
        r = (z - lam).clamp_min_(0)
        # total = sum r^q, slope = sum r^(q-1) > 0 (the top entry stays > 0), psi = total^(1/q);
        # fused reductions where possible (each a single read of r)
        if q == 2:                                 # alpha = 1.5: no powers at all
            psi = torch.linalg.vector_norm(r, ord=2, dim=dim, keepdim=True)
            total, slope = psi * psi, r.sum(dim, keepdim=True)
        elif q > 1:
            rq1 = r.pow(q - 1)
            total = (rq1 * r).sum(dim, keepdim=True)
            slope = rq1.sum(dim, keepdim=True)
            psi = total.pow(1.0 / q)
        elif q == 1:
            psi = total = r.sum(dim, keepdim=True)
            slope = torch.count_nonzero(r, dim=dim).unsqueeze(dim).to(z.dtype)
        else:
            rq1 = torch.where(r > 0, r.pow(q - 1), torch.zeros_like(r))
            total = (rq1 * r).sum(dim, keepdim=True)
            slope = rq1.sum(dim, keepdim=True)
        f = total - 1
        lo = torch.where(f >= 0, lam, lo)
        hi = torch.where(f <= 0, lam, hi)
        if q >= 1:                                 # psi' = -psi^(1-q) sum r^(q-1)
            newton = lam + (psi - 1) / (psi.pow(1.0 - q) * slope)
            ok = (newton >= lo) & (newton <= hi)
            done = ok & ((newton - lam).abs() <= tol)
        else:
            newton = lam + f / (q * slope)
            ok = (f <= 0) & (newton >= lo)
            done = ok & ((newton - lam).abs() <= tol) & ((f.abs() <= tol) | (newton == lam))
        lam = torch.where(ok, newton, (lo + hi) * 0.5)
        if bool((done | (hi - lo <= tol)).all()):  # one host sync per iteration
            break
    return lam, z, it


def entmax_bisect_threshold(
    x: torch.Tensor, *, alpha: float = 1.5, dim: int = -1, n_iter: int = 50, tol: float | None = None
) -> tuple[torch.Tensor, int]:
    """Threshold ``lam`` of alpha-entmax for any ``alpha > 1`` (Derived in P01).

    Solves ``f(lam) = sum_i relu(beta x_i - lam)^(1/beta) - 1 = 0`` (``beta = alpha - 1``).
    The root lies in ``[m - 1, m - n^(-beta)]`` with ``m = beta max(x)``: at the left end the top
    entry alone gives 1, at the right end every entry is below ``1/n``. Starting from the left
    end, Newton steps are taken while they stay inside the current bracket, bisection steps
    otherwise. For ``1 < alpha <= 2`` Newton runs on ``||relu(beta x - lam)||_q - 1``
    (``q = 1/beta``), which is convex and decreasing, so the iterates rise monotonically and
    converge quadratically (in finitely many steps for ``alpha = 2``: Michelot's method);
    typically 3-9 iterations. For ``alpha > 2`` the pieces of ``f`` are concave and Newton runs
    from the right end instead, with bisection after any step that lands left of the root.

    The logits are first shifted so that ``beta max(x) = 0``, which puts the root in
    ``[-1, -n^(-beta)]``, so ``tol`` is an absolute tolerance on an O(1) quantity. A row is
    done when its last update of ``lam`` is below ``tol`` (and, for ``alpha > 2``, also
    ``|f| <= tol``) or its bracket is narrower than ``tol``; the loop stops when every row is
    done or after ``n_iter`` iterations. Default ``tol`` is ``1e-12`` in float64, ``1e-6``
    in float32, ``1e-3`` otherwise. Returns ``(lam, iterations)``; ``lam`` has size 1 at
    ``dim`` and is on the ``beta * x`` scale.
    """
    dim = _check_x(x, dim)
    alpha = check_real(alpha, "alpha", gt=1.0)
    n_iter = check_int(n_iter, "n_iter", ge=1)
    tol = _DEFAULT_TOL.get(x.dtype, 1e-3) if tol is None else check_real(tol, "tol", ge=0.0)
    with torch.no_grad():
        lam, _, it = _entmax_newton(x, alpha - 1.0, dim, n_iter, tol)
        return lam + (alpha - 1.0) * x.amax(dim, keepdim=True), it


class _EntmaxBisectFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, alpha, dim, n_iter, tol):
        beta = alpha - 1.0
        lam, z, _ = _entmax_newton(x, beta, dim, n_iter, tol)
        p = (z - lam).clamp_min_(0).pow_(1.0 / beta)
        p = p / p.sum(dim, keepdim=True)
        ctx.dim, ctx.alpha = dim, alpha
        ctx.save_for_backward(p)
        return p

    @staticmethod
    def backward(ctx, g):
        (p,) = ctx.saved_tensors                   # J = diag(s) - s s^T / sum(s), s = p^(2-alpha)
        s = torch.where(p > 0, p.pow(2 - ctx.alpha), torch.zeros_like(p))
        gs = g * s
        q = gs.sum(ctx.dim, keepdim=True) / s.sum(ctx.dim, keepdim=True)
        return gs - q * s, None, None, None, None


def entmax_bisect(
    x: torch.Tensor, *, alpha: float = 1.5, dim: int = -1, n_iter: int = 50, tol: float | None = None
) -> torch.Tensor:
    """Alpha-entmax ``p = relu(beta x - lam)^(1/beta)``, ``beta = alpha - 1`` (Derived in P01).

    ``lam`` from :func:`entmax_bisect_threshold` (safeguarded Newton, at most ``n_iter``
    iterations, stopping when ``lam`` moves by less than ``tol``); the output is renormalised to
    sum to one. ``alpha -> 1`` tends to softmax, ``alpha = 2`` is sparsemax, ``alpha = 1.5`` is
    :func:`entmax15`. Closed-form backward ``diag(s) - s s^T / sum(s)``, ``s = p^(2 - alpha)``
    on the support. Peters, Niculae & Martins, arXiv:1905.05702.

    Shapes: ``x`` ``(..., n, ...)``, output the same shape. ``alpha`` is a Python float > 1.
    """
    dim = _check_x(x, dim)
    alpha = check_real(alpha, "alpha", gt=1.0)
    n_iter = check_int(n_iter, "n_iter", ge=1)
    tol = _DEFAULT_TOL.get(x.dtype, 1e-3) if tol is None else check_real(tol, "tol", ge=0.0)
    return _EntmaxBisectFn.apply(x, alpha, dim, n_iter, tol)


def sparsemax_loss(x: torch.Tensor, target: torch.Tensor, *, dim: int = -1) -> torch.Tensor:
    """Sparsemax loss ``L_t = 1/2 - x_t + 1/2 sum_{i in S} (x_i^2 - lam^2)`` (Derived in P01).

    ``S`` is the support of :func:`sparsemax` and ``lam`` its threshold. The formula is built so
    that ``dL/dx = sparsemax(x) - onehot(t)``; autograd differentiates it directly (``lam`` is a
    differentiable function of ``x`` on each piece). ``L >= 0``, and ``L -> 0`` as ``x_t -> inf``.
    Equal to the Fenchel-Young form ``1/2 - x_t + <x, p> - ||p||^2 / 2`` (arXiv:1901.02324).

    Shapes: ``x`` ``(..., n, ...)`` with ``n`` at ``dim``; ``target`` int64 of ``x``'s shape
    without ``dim``; output has ``target``'s shape.
    """
    dim = _check_x(x, dim)
    target = _check_target(target, x, dim)
    with torch.no_grad():
        lam, _ = _sparsemax_lam(x, dim)
    on = (x > lam).to(x.dtype)                     # the support S as a mask
    k = on.sum(dim, keepdim=True)
    lam = ((on * x).sum(dim, keepdim=True) - 1) / k    # differentiable: lam = (sum_S x - 1)/|S|
    sq = (on * (x * x - lam * lam)).sum(dim)
    x_t = x.gather(dim, target.unsqueeze(dim)).squeeze(dim)
    return 0.5 - x_t + 0.5 * sq
