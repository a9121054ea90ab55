"""Linear recurrences and the Linear Recurrent Unit (Derived in P23).

P23 (kexue.fm/archives/9554, on Orvieto et al., arXiv:2303.06349) reduces a linear RNN
``x_t = A x_{t-1} + u_t`` to an element-wise complex recurrence

    x_t = lambda_t * x_{t-1} + u_t,     x_t = sum_{k <= t} (prod_{j=k+1}^{t} lambda_j) u_k,

by diagonalising ``A`` over the complex numbers. This module holds

* :func:`linear_scan`: that recurrence along one axis, sequentially (a Python loop over
  time, the reference) or by a log-depth parallel scan (Su's "Upper/Lower" divide and
  conquer, Hillis-Steele doubling, or the work-efficient Odd/Even scheme), plus the naive
  ``cumsum`` formula that overflows;
* :func:`ring_init` and :class:`LRU`: the LRU layer with the exponential parametrisation
  ``lambda = exp(-exp(nu_log) + i exp(theta_log))``, ring initialisation and the
  normaliser ``gamma = sqrt(1 - |lambda|^2)``; ``real=True`` gives Su's real variant SLRU;
* :func:`diagonalize_linear_rnn`: the change of basis that turns a dense linear RNN into
  the diagonal complex one;
* :func:`rwkv_wkv` and :func:`rwkv_su_form`: RWKV-4's time-mixing "wkv" (numerically
  stable, with a running maximum) and Su's rewriting of it as a ratio of two real scans.

Everything is batch-first, complex-capable, and takes device and dtype from its inputs.
"""
from __future__ import annotations

import math
from numbers import Number

import torch
from torch import nn

from ._checks import check_dim, check_int, check_real, check_tensor

__all__ = [
    "SCAN_METHODS",
    "linear_scan",
    "scan_depth",
    "ring_init",
    "LRU",
    "diagonalize_linear_rnn",
    "rwkv_wkv",
    "rwkv_su_form",
]

#: Methods accepted by :func:`linear_scan`.
SCAN_METHODS = ("sequential", "parallel", "doubling", "odd_even", "cumsum")


def _check_num(x: object, name: str) -> torch.Tensor:
    """A real-floating or complex tensor without NaN/inf."""
    check_tensor(x, name, floating=False)
    if not (x.is_floating_point() or x.is_complex()):
        raise TypeError(f"{name} must have a floating or complex dtype, got {x.dtype}")
    return x


def scan_depth(n: int) -> int:
    """Number of sequential combine steps of the parallel scans for length ``n``: ``ceil(log2 n)``."""
    n = check_int(n, "n", ge=1)
    return (n - 1).bit_length()


def _scan_sequential(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    # The reference: one step per time index (inherently sequential, O(n) depth).
    state = x[..., 0]
    out = [state]
    for t in range(1, x.shape[-1]):
        state = a[..., t] * state + x[..., t]
        out.append(state)
    return torch.stack(out, dim=-1)


def _scan_upper_lower(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    # Su's "Upper/Lower" divide and conquer, bottom up. After the level with block size b,
    # x holds the scan of every block of b steps started from a zero state, and a holds the
    # product of the lambdas from the block's start. Merging two neighbouring blocks adds
    # (product so far in the right block) * (last state of the left block) to the right block:
    # x_T = lambda^{T-t} x_t + sum_{k=t+1}^T lambda^{T-k} u_k.
    n = x.shape[-1]
    size = 1 << scan_depth(n)
    if size != n:  # pad at the end with lambda = 1, u = 0: earlier outputs are unaffected
        pad = size - n
        x = torch.cat([x, x.new_zeros(x.shape[:-1] + (pad,))], dim=-1)
        a = torch.cat([a, a.new_ones(a.shape[:-1] + (pad,))], dim=-1)
    batch = x.shape[:-1]
    if not (torch.is_grad_enabled() and (a.requires_grad or x.requires_grad)):
        return _scan_upper_lower_inplace(a.clone(), x.clone(), batch, size)[..., :n]
    b = 1
    while b < size:
        xs = x.reshape(*batch, size // (2 * b), 2, b)
        as_ = a.reshape(*batch, size // (2 * b), 2, b)
        right = xs[..., 1, :] + as_[..., 1, :] * xs[..., 0, b - 1 : b]
        x = torch.stack([xs[..., 0, :], right], dim=-2).reshape(*batch, size)
        if 2 * b < size:  # the last level does not need the products any more
            a_right = as_[..., 1, :] * as_[..., 0, b - 1 : b]
            a = torch.stack([as_[..., 0, :], a_right], dim=-2).reshape(*batch, size)
        b *= 2
    return x[..., :n]


def _scan_upper_lower_inplace(a: torch.Tensor, x: torch.Tensor, batch: torch.Size, size: int) -> torch.Tensor:
    # The same levels as _scan_upper_lower, updating views of owned buffers in place (no
    # autograd graph is needed): no copies per level.
    b = 1
    while b < size:
        xs = x.view(*batch, size // (2 * b), 2, b)
        as_ = a.view(*batch, size // (2 * b), 2, b)
        xs[..., 1, :].addcmul_(as_[..., 1, :], xs[..., 0, b - 1 : b])
        if 2 * b < size:
            as_[..., 1, :].mul_(as_[..., 0, b - 1 : b])
        b *= 2
    return x


def _scan_doubling(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    # Hillis-Steele: after the step with shift s, x[t] is the scan over the window of the last
    # 2s inputs ending at t, and a[t] the product of the lambdas over that window.
    n = x.shape[-1]
    s = 1
    if not (torch.is_grad_enabled() and (a.requires_grad or x.requires_grad)):
        a, x = a.clone(), x.clone()        # owned buffers: update in place, one temporary per step
        while s < n:
            x[..., s:] += a[..., s:] * x[..., :-s]
            if 2 * s < n:
                a[..., s:] *= a[..., :-s].clone()
            s *= 2
        return x
    while s < n:
        x = torch.cat([x[..., :s], x[..., s:] + a[..., s:] * x[..., :-s]], dim=-1)
        if 2 * s < n:
            a = torch.cat([a[..., :s], a[..., s:] * a[..., :-s]], dim=-1)
        s *= 2
    return x


def _scan_odd_even(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    # The work-efficient "Odd/Even" scheme (Blelloch's tree scan written recursively): merge
    # neighbours (2j, 2j+1) into one step, scan the half-length sequence (whose outputs are the
    # states at the odd positions), then fill in the even positions from their left neighbours.
    # Work O(n), depth 2 ceil(log2 n).
    n = x.shape[-1]
    if n == 1:
        return x
    if n % 2:  # pad one step with lambda = 1, u = 0 at the end
        x = torch.cat([x, x.new_zeros(x.shape[:-1] + (1,))], dim=-1)
        a = torch.cat([a, a.new_ones(a.shape[:-1] + (1,))], dim=-1)
    a_e, a_o, x_e, x_o = a[..., 0::2], a[..., 1::2], x[..., 0::2], x[..., 1::2]
    odd = _scan_odd_even(a_e * a_o, a_o * x_e + x_o)
    prev = torch.cat([torch.zeros_like(odd[..., :1]), odd[..., :-1]], dim=-1)
    even = x_e + a_e * prev
    return torch.stack([even, odd], dim=-1).reshape(x.shape)[..., :n]


def _scan_cumsum(lam: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    # x_t = lambda^t * cumsum_k(lambda^{-k} u_k), powers as exp(k log lambda). Exact in exact
    # arithmetic; |lambda|^{-k} overflows once k > log(max) / (-log|lambda|).
    n = x.shape[-1]
    log_lam = torch.log(lam)
    k = torch.arange(n, device=x.device, dtype=log_lam.real.dtype)
    return torch.exp(k * log_lam) * torch.cumsum(torch.exp(-k * log_lam) * x, dim=-1)


def linear_scan(
    lam: torch.Tensor | complex | float,
    u: torch.Tensor,
    *,
    dim: int = -2,
    method: str = "parallel",
    h0: torch.Tensor | None = None,
) -> torch.Tensor:
    """States of the element-wise linear recurrence ``x_t = lam_t * x_{t-1} + u_t`` (Derived in P23).

    With ``x_{-1} = h0`` (zero by default) the result is

        x_t = sum_{k=0}^{t} (prod_{j=k+1}^{t} lam_j) u_k  +  (prod_{j=0}^{t} lam_j) h0,

    which for a time-invariant ``lam`` is ``x_t = sum_k lam^{t-k} u_k``.

    Args:
        lam: the decay, real or complex. It must broadcast to ``u`` (dimensions aligned from
            the right), e.g. shape ``(d,)`` for a time-invariant diagonal recurrence over
            ``u`` of shape ``(..., n, d)``, or ``u``'s own shape for a time-varying one.
            A Python number is accepted too.
        u: inputs of shape ``(..., n, d)`` (time along ``dim``), real or complex.
        dim: the time axis of ``u`` (default ``-2``, batch-first ``(batch, n, d)``).
        method: ``"sequential"`` (a loop over time: the reference, depth ``n``),
            ``"parallel"`` (Su's Upper/Lower divide and conquer: ``ceil(log2 n)`` levels,
            each a vectorised update of half the sequence), ``"doubling"`` (Hillis-Steele
            doubling, also ``ceil(log2 n)`` levels), ``"odd_even"`` (the work-efficient
            Odd/Even or Blelloch scheme: ``O(n)`` work, ``2 ceil(log2 n)`` levels), or
            ``"cumsum"`` (the naive formula
            ``lam^t cumsum(lam^{-k} u_k)``; time-invariant ``lam`` only, with no zero or
            negative real values; it overflows for long sequences, by design: it is here to
            be shown failing).
        h0: optional initial state, ``u`` without its time axis (broadcastable).

    Returns:
        The states, shape of ``u``, dtype ``promote_types(lam.dtype, u.dtype)``. All methods
        are differentiable by autograd.
    """
    _check_num(u, "u")
    if u.ndim < 1:
        raise ValueError(f"u must have at least 1 dimension, got shape {tuple(u.shape)}")
    dim = check_dim(dim, u)
    if u.shape[dim] < 1:
        raise ValueError("u must have at least one time step along dim")
    if not isinstance(method, str) or method not in SCAN_METHODS:
        raise ValueError(f"method must be one of {SCAN_METHODS}, got {method!r}")
    if isinstance(lam, Number) and not isinstance(lam, bool):
        real_dtype = u.real.dtype if u.is_complex() else u.dtype
        lam_dtype = _complex_of(real_dtype) if isinstance(lam, complex) else real_dtype
        lam = torch.tensor(lam, device=u.device, dtype=lam_dtype)
    _check_num(lam, "lam")
    try:
        ok = lam.ndim <= u.ndim and torch.broadcast_shapes(lam.shape, u.shape) == u.shape
    except RuntimeError:
        ok = False
    if not ok:
        raise ValueError(f"lam with shape {tuple(lam.shape)} does not broadcast to u's shape {tuple(u.shape)}")
    dtype = torch.promote_types(lam.dtype, u.dtype)
    lam = lam.reshape((1,) * (u.ndim - lam.ndim) + tuple(lam.shape)).to(dtype)
    x = u.to(dtype).movedim(dim, -1)
    if h0 is not None:
        _check_num(h0, "h0")
        hshape = u.shape[:dim] + u.shape[dim + 1 :]
        try:
            h0 = torch.broadcast_to(h0, hshape)
        except RuntimeError as err:
            raise ValueError(f"h0 with shape {tuple(h0.shape)} does not broadcast to {tuple(hshape)}") from err
        lam0 = lam.movedim(dim, -1)[..., 0]
        x = torch.cat([(x[..., 0] + lam0 * h0.to(dtype)).unsqueeze(-1), x[..., 1:]], dim=-1)
    if method == "cumsum":
        if lam.shape[dim] != 1:
            raise ValueError("method='cumsum' needs a time-invariant lam (size 1 along dim)")
        if not lam.is_complex() and bool((lam <= 0).any()):
            raise ValueError("method='cumsum' needs a real lam > 0 (or a complex lam)")
        if bool((lam == 0).any()):
            raise ValueError("method='cumsum' needs lam != 0")
        out = _scan_cumsum(lam.movedim(dim, -1), x)
        return out.movedim(-1, dim)
    a = lam.expand(u.shape).movedim(dim, -1)
    if method == "sequential":
        out = _scan_sequential(a, x)
    elif method == "parallel":
        out = _scan_upper_lower(a, x)
    elif method == "odd_even":
        out = _scan_odd_even(a, x)
    else:
        out = _scan_doubling(a, x)
    return out.movedim(-1, dim)


def _complex_of(dtype: torch.dtype) -> torch.dtype:
    return {torch.float32: torch.complex64, torch.float64: torch.complex128,
            torch.float16: torch.complex32}.get(dtype, torch.complex64)


def ring_init(
    d: int,
    *,
    r_min: float = 0.9,
    r_max: float = 0.999,
    max_phase: float = 2 * math.pi,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """``d`` eigenvalues drawn uniformly from the ring ``r_min <= |lambda| <= r_max`` (Derived in P23).

    Uniform on the ring (area measure) means, from ``dx dy = r dr dtheta = d(r^2) dtheta / 2``,

        r^2 ~ U[r_min^2, r_max^2],     theta ~ U[0, max_phase],     lambda = r e^{i theta}.

    ``r_min = 0, r_max = 1, max_phase = 2 pi`` is the uniform unit disk, where a Glorot matrix's
    eigenvalues lie (circular law); the LRU paper's default ring is ``[0.9, 0.999]``. The numbers
    are drawn on the CPU (seeded by ``generator``) in float64, then moved to ``device``.

    Returns:
        Complex tensor of shape ``(d,)`` (``complex64`` for ``dtype=float32``, ``complex128``
        for ``float64``).
    """
    d = check_int(d, "d", ge=1)
    r_min = check_real(r_min, "r_min", ge=0.0)
    r_max = check_real(r_max, "r_max", ge=r_min, le=1.0)
    max_phase = check_real(max_phase, "max_phase", ge=0.0, le=2 * math.pi)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a real floating torch.dtype, got {dtype}")
    u1 = torch.rand(d, generator=generator, dtype=torch.float64)
    u2 = torch.rand(d, generator=generator, dtype=torch.float64)
    r = torch.sqrt(u1 * (r_max**2 - r_min**2) + r_min**2)
    lam = torch.polar(r, max_phase * u2)
    return lam.to(device=device if device is not None else "cpu", dtype=_complex_of(dtype))


class LRU(nn.Module):
    """The Linear Recurrent Unit of Orvieto et al. (arXiv:2303.06349), as derived in P23.

    For inputs ``u`` of shape ``(..., L, d_model)``:

        x_t = lambda * x_{t-1} + gamma * (B u_t),      y_t = Re(C x_t) + D * u_t,

    with the diagonal ``lambda = exp(-exp(nu_log) + i exp(theta_log))`` (so ``|lambda| < 1``
    for every real parameter value), ``gamma = exp(gamma_log)`` initialised to
    ``sqrt(1 - |lambda|^2)`` (this keeps ``E|x_t|^2 <= E|B u|^2`` at initialisation), complex
    ``B`` (``d_state x d_model``, entries ``N(0, 1/(2 d_model))`` per real/imaginary part),
    complex ``C`` (``d_model x d_state``, ``N(0, 1/d_state)`` per part) and real ``D``.
    ``lambda`` comes from :func:`ring_init`.

    ``real=True`` gives SLRU (Su's "simpler" LRU): ``lambda = exp(-exp(nu_log))`` real, real
    ``B ~ N(0, 1/d_model)`` and ``C ~ N(0, 1/d_state)``, no phase parameter.

    Args:
        d_model: input/output width ``H``.
        d_state: number of complex (or real) state channels ``N``.
        r_min, r_max, max_phase: the ring initialisation of :func:`ring_init`.
        real: SLRU instead of LRU.
        method: default scan method of ``forward`` (see :func:`linear_scan`).
        generator: CPU generator for the initialisation (reproducible across devices).
        device, dtype: of the real parameters (the complex ones follow).
    """

    def __init__(
        self,
        d_model: int,
        d_state: int,
        *,
        r_min: float = 0.9,
        r_max: float = 0.999,
        max_phase: float = 2 * math.pi,
        real: bool = False,
        method: str = "parallel",
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        self.d_model = H = check_int(d_model, "d_model", ge=1)
        self.d_state = N = check_int(d_state, "d_state", ge=1)
        check_real(r_max, "r_max", lt=1.0)
        check_real(r_min, "r_min", gt=0.0)
        if method not in SCAN_METHODS:
            raise ValueError(f"method must be one of {SCAN_METHODS}, got {method!r}")
        self.real, self.method = bool(real), method
        lam = ring_init(N, r_min=r_min, r_max=r_max, max_phase=max_phase, generator=generator, dtype=torch.float64)
        r = lam.abs()
        kw = dict(device=device, dtype=dtype)

        def randn(*shape: int, std: float) -> torch.Tensor:
            return (std * torch.randn(*shape, generator=generator, dtype=torch.float64)).to(**kw)

        self.nu_log = nn.Parameter(torch.log(-torch.log(r)).to(**kw))
        self.gamma_log = nn.Parameter(torch.log(torch.sqrt(1 - r**2)).to(**kw))
        if self.real:
            self.register_parameter("theta_log", None)
            self.B_re = nn.Parameter(randn(N, H, std=1 / math.sqrt(H)))
            self.C_re = nn.Parameter(randn(H, N, std=1 / math.sqrt(N)))
            self.register_parameter("B_im", None)
            self.register_parameter("C_im", None)
        else:
            theta = torch.remainder(lam.angle(), 2 * math.pi).clamp_min(1e-12)
            self.theta_log = nn.Parameter(torch.log(theta).to(**kw))
            self.B_re = nn.Parameter(randn(N, H, std=1 / math.sqrt(2 * H)))
            self.B_im = nn.Parameter(randn(N, H, std=1 / math.sqrt(2 * H)))
            self.C_re = nn.Parameter(randn(H, N, std=1 / math.sqrt(N)))
            self.C_im = nn.Parameter(randn(H, N, std=1 / math.sqrt(N)))
        self.D = nn.Parameter(randn(H, std=1.0))

    def lam(self) -> torch.Tensor:
        """The diagonal ``lambda``: ``exp(-exp(nu_log) + i exp(theta_log))``, shape ``(d_state,)``."""
        if self.real:
            return torch.exp(-torch.exp(self.nu_log))
        return torch.exp(torch.complex(-torch.exp(self.nu_log), torch.exp(self.theta_log)))

    def B(self) -> torch.Tensor:
        """Input projection ``(d_state, d_model)``, complex unless ``real``."""
        return self.B_re if self.real else torch.complex(self.B_re, self.B_im)

    def C(self) -> torch.Tensor:
        """Output projection ``(d_model, d_state)``, complex unless ``real``."""
        return self.C_re if self.real else torch.complex(self.C_re, self.C_im)

    def states(self, u: torch.Tensor, *, method: str | None = None) -> torch.Tensor:
        """The hidden states ``x_t``, shape ``(..., L, d_state)``."""
        check_tensor(u, "u", min_ndim=2)
        if u.shape[-1] != self.d_model:
            raise ValueError(f"u must have last dimension d_model={self.d_model}, got shape {tuple(u.shape)}")
        B = self.B()
        bu = (u.to(B.dtype) @ B.transpose(0, 1)) * torch.exp(self.gamma_log)
        return linear_scan(self.lam(), bu, dim=-2, method=method or self.method)

    def forward(self, u: torch.Tensor, *, method: str | None = None) -> torch.Tensor:
        """``y = Re(C x) + D u`` for ``u`` of shape ``(..., L, d_model)``; output the same shape."""
        x = self.states(u, method=method)
        y = x @ self.C().transpose(0, 1)
        return (y.real if y.is_complex() else y) + self.D * u

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, d_state={self.d_state}, real={self.real}, method={self.method!r}"


def diagonalize_linear_rnn(
    A: torch.Tensor, B: torch.Tensor, C: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Diagonal complex form of the linear RNN ``x_t = A x_{t-1} + B u_t, y_t = C x_t`` (Derived in P23).

    With ``A = P diag(lambda) P^{-1}`` (``torch.linalg.eig``), the states ``z_t = P^{-1} x_t``
    obey ``z_t = lambda * z_t-1 + (P^{-1} B) u_t`` and ``y_t = (C P) z_t``. Returns
    ``(lambda, P^{-1} B, C P)``, all complex. Needs ``A`` diagonalisable; for a nearly
    defective ``A`` the matrix ``P`` is ill-conditioned and so is the result.

    Shapes: ``A (d, d)``, ``B (d, h_in)``, ``C (h_out, d)``.
    """
    check_tensor(A, "A", ndim=2)
    check_tensor(B, "B", ndim=2)
    check_tensor(C, "C", ndim=2)
    d = A.shape[0]
    if A.shape[1] != d:
        raise ValueError(f"A must be square, got shape {tuple(A.shape)}")
    if B.shape[0] != d or C.shape[1] != d:
        raise ValueError(f"B must have {d} rows and C {d} columns, got {tuple(B.shape)} and {tuple(C.shape)}")
    lam, P = torch.linalg.eig(A)
    B_t = torch.linalg.solve(P, B.to(P.dtype))
    return lam, B_t, C.to(P.dtype) @ P


def _check_rwkv(k: object, v: object) -> None:
    check_tensor(k, "k", min_ndim=2)
    check_tensor(v, "v", min_ndim=2)
    if k.shape != v.shape:
        raise ValueError(f"k and v must have the same shape, got {tuple(k.shape)} and {tuple(v.shape)}")


def _channel_param(x: object, name: str, k: torch.Tensor) -> torch.Tensor:
    check_tensor(x, name, ndim=1)
    if x.shape[0] != k.shape[-1]:
        raise ValueError(f"{name} must have shape ({k.shape[-1]},), got {tuple(x.shape)}")
    return x.to(k.dtype)


def rwkv_wkv(k: torch.Tensor, v: torch.Tensor, w: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """RWKV-4's time-mixing average "wkv", stable for any ``k`` (Derived in P23).

        wkv_t = (sum_{i<t} e^{-(t-1-i) w + k_i} v_i + e^{u + k_t} v_t)
                / (sum_{i<t} e^{-(t-1-i) w + k_i} + e^{u + k_t})

    per channel, with decay rate ``w`` (``lambda = e^{-w}``) and the current token's "bonus"
    ``u`` (``gamma = e^{u}``). Evaluated as RWKV's recurrent form: numerator and denominator
    are kept as ``(a, b) * e^{p}`` with a running maximum exponent ``p``, so no ``exp`` ever
    overflows. A loop over time (sequential, like RWKV's inference kernel); vectorised over
    batch and channels.

    Shapes: ``k, v (..., n, d)``; ``w, u (d,)``. Returns ``(..., n, d)``.
    """
    _check_rwkv(k, v)
    w = _channel_param(w, "w", k)
    u = _channel_param(u, "u", k)
    a = torch.zeros_like(k[..., 0, :])
    b = torch.zeros_like(a)
    p = torch.full_like(a, -math.inf)
    out = []
    for t in range(k.shape[-2]):
        kt, vt = k[..., t, :], v[..., t, :]
        ww = u + kt
        q = torch.maximum(p, ww)
        e1, e2 = torch.exp(p - q), torch.exp(ww - q)
        out.append((e1 * a + e2 * vt) / (e1 * b + e2))
        ww = p - w
        q = torch.maximum(ww, kt)
        e1, e2 = torch.exp(ww - q), torch.exp(kt - q)
        a, b, p = e1 * a + e2 * vt, e1 * b + e2, q
    return torch.stack(out, dim=-2)


def rwkv_su_form(
    k: torch.Tensor, v: torch.Tensor, lam: torch.Tensor, gamma: torch.Tensor, *, method: str = "parallel"
) -> torch.Tensor:
    """RWKV's time mixing written as two real linear scans, as in P23 (Derived in P23).

        y_t = lam y_{t-1} + e^{k_t} v_t,   z_t = lam z_{t-1} + e^{k_t},
        out_t = (y_t + (gamma lam - 1) e^{k_t} v_t) / (z_t + (gamma lam - 1) e^{k_t}).

    Equals :func:`rwkv_wkv` with ``lam = e^{-w}``, ``gamma = e^{u}`` (the ``lam`` factors cancel
    in the ratio). Unlike :func:`rwkv_wkv` this form exponentiates ``k`` directly, so it
    overflows for large keys (``k > 88`` in float32): it is the readable form, not the
    production one. The output gate ``sigma(r_t)`` is left to the caller.

    Shapes: ``k, v (..., n, d)``; ``lam, gamma (d,)`` with ``0 < lam``. Returns ``(..., n, d)``.
    """
    _check_rwkv(k, v)
    lam = _channel_param(lam, "lam", k)
    gamma = _channel_param(gamma, "gamma", k)
    if bool((lam <= 0).any()):
        raise ValueError("lam must be > 0")
    ek = torch.exp(k)
    if not bool(torch.isfinite(ek).all()):
        raise ValueError(f"k: exp(k) overflows in {k.dtype} (max k = {float(k.max()):.4g}); use rwkv_wkv, "
                         "which keeps a running maximum")
    y = linear_scan(lam, ek * v, dim=-2, method=method)
    z = linear_scan(lam, ek, dim=-2, method=method)
    c = (gamma * lam - 1) * ek
    return (y + c * v) / (z + c)
