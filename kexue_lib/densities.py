"""Fourier-series densities on [-1, 1] and, through a tanh map, on the real line (Derived in P02).

P02 (kexue.fm/archives/10007) fits a one-dimensional density with a truncated Fourier series

    f(x) = sum_{n=-N}^{N} c_n exp(i pi n x),        x in [-1, 1],

and makes it non-negative by construction: the coefficients are the autocorrelation
``c_n = sum_k a_k conj(a_{k+n})`` of free complex numbers ``a_0..a_N``, so the Toeplitz matrix
``(c_{m-n})`` is positive semi-definite and ``f(x) = |sum_k a_k exp(-i pi k x)|^2 >= 0``. Since
``int_{-1}^{1} f = 2 c_0`` the density is ``p = f / (2 c_0)``; its CDF has a closed form, so
sampling is an inverse-CDF bisection. The map ``x = tanh((y - loc) / scale)`` carries the
model to the real line. A Gaussian-mixture baseline fitted by EM is included for comparison.

Conventions: ``c`` holds ``c_0..c_N`` (complex, shape ``(..., N+1)``); ``c_{-n} = conj(c_n)``
is implied. Points ``x`` in the unit interval and the coefficients must share a real dtype
(``float32``/``float64``) and device; new tensors take both from the inputs.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ._checks import check_int, check_real, check_tensor

__all__ = [
    "autocorrelation",
    "toeplitz",
    "fourier_series",
    "trig_density",
    "trig_cdf",
    "trig_icdf",
    "smoothness_penalty",
    "FourierDensity",
    "fit_fourier_density",
    "gmm_em",
    "gmm_log_prob",
]


# ----------------------------------------------------------------------------- validation helpers
def _check_complex(a: object, name: str) -> torch.Tensor:
    check_tensor(a, name, min_ndim=1, floating=False)
    if not a.is_complex():
        raise TypeError(f"{name} must have a complex dtype, got {a.dtype}")
    if a.shape[-1] == 0:
        raise ValueError(f"{name} must have at least one entry in its last dimension, got shape {tuple(a.shape)}")
    return a


def _check_coeffs(c: object, name: str = "c") -> torch.Tensor:
    """1-D complex coefficients c_0..c_N with a real, positive c_0."""
    _check_complex(c, name)
    if c.ndim != 1:
        raise ValueError(f"{name} must have 1 dimension (c_0..c_N), got shape {tuple(c.shape)}")
    if not float(c[0].real) > 0:
        raise ValueError(f"{name}[0] (the mass c_0) must be positive, got {complex(c[0])}")
    return c


def _check_unit(x: object, name: str = "x") -> torch.Tensor:
    check_tensor(x, name)
    if x.numel() and bool((x.abs() > 1).any()):
        raise ValueError(f"{name} must lie in [-1, 1]")
    return x


def _harmonics(x: torch.Tensor, n_max: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n = 1..N`` (shape (N,)) and the phases ``pi n x`` (shape x.shape + (N,))."""
    n = torch.arange(1, n_max + 1, device=x.device, dtype=x.dtype)
    return n, math.pi * x[..., None] * n


# ----------------------------------------------------------------------------- coefficients
def autocorrelation(a: torch.Tensor) -> torch.Tensor:
    """Autocorrelation coefficients ``c_n = sum_{k=0}^{N-n} a_k conj(a_{k+n})``, n = 0..N (Derived in P02).

    ``a``: complex, shape ``(..., N+1)``; returns complex ``(..., N+1)``. With these coefficients
    ``sum_{n=-N}^{N} c_n e^{i pi n x} = |sum_k a_k e^{-i pi k x}|^2`` (so ``c_{-n} = conj(c_n)``
    and every Toeplitz section ``(c_{m-n})`` is positive semi-definite). Computed exactly by
    summing shifted products (O(N^2), no FFT rounding).
    """
    _check_complex(a, "a")
    length = a.shape[-1]
    padded = torch.cat([a, torch.zeros_like(a)], dim=-1)
    shifted = padded.unfold(-1, length, 1)[..., :length, :]      # shifted[..., n, k] = a_{k+n}
    return (a[..., None, :] * shifted.conj()).sum(-1)


def toeplitz(c: torch.Tensor, size: int) -> torch.Tensor:
    """Hermitian Toeplitz matrix ``T[m, n] = c_{m-n}`` of shape ``(..., size, size)`` (Derived in P02).

    ``c``: complex ``(..., N+1)`` holding ``c_0..c_N``; ``c_{-k} = conj(c_k)`` and ``c_k = 0``
    for ``|k| > N`` (zero padding, the truncation of the series). For the coefficients of a
    non-negative ``f`` this matrix is PSD for every ``size`` (Herglotz); its eigenvalues lie
    in ``[min f, max f]``.
    """
    _check_complex(c, "c")
    size = check_int(size, "size", ge=1)
    n_max = c.shape[-1] - 1
    pad = max(size - 1 - n_max, 0)
    zeros = torch.zeros(*c.shape[:-1], pad, dtype=c.dtype, device=c.device)
    # full[..., j] = c_{j - (size-1)} for j = 0..2(size-1)
    right = torch.cat([c, zeros], dim=-1)[..., :size]
    full = torch.cat([right[..., 1:].conj().flip(-1), right], dim=-1)
    idx = torch.arange(size, device=c.device)
    offsets = idx[:, None] - idx[None, :] + (size - 1)
    return full[..., offsets]


# ----------------------------------------------------------------------------- density, CDF, inverse CDF on [-1, 1]
def fourier_series(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Unnormalised series ``f(x) = c_0 + 2 Re sum_{n=1}^{N} c_n e^{i pi n x}`` (Derived in P02).

    ``x``: real, any shape, in [-1, 1]; ``c``: complex ``(N+1,)``. Returns ``x.shape``.
    """
    _check_coeffs(c)
    _check_unit(x)
    n, phase = _harmonics(x, c.shape[0] - 1)
    cr, ci = c.real.to(x.dtype), c.imag.to(x.dtype)
    return cr[0] + 2 * (cr[1:] * torch.cos(phase) - ci[1:] * torch.sin(phase)).sum(-1)


def trig_density(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Normalised density ``p(x) = f(x) / (2 c_0) = 1/2 + Re sum_{n>=1} (c_n/c_0) e^{i pi n x}`` (Derived in P02).

    Uses ``int_{-1}^{1} e^{i pi n x} dx = 2 [n = 0]``. ``x``: real, any shape, in [-1, 1];
    ``c``: complex ``(N+1,)``. Returns ``x.shape``.
    """
    return fourier_series(x, c) / (2 * c[0].real.to(x.dtype))


def trig_cdf(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Closed-form CDF on [-1, 1] (Derived in P02):

    ``Phi(x) = (x+1)/2 + Re sum_{n=1}^{N} (c_n/c_0) (e^{i pi n x} - (-1)^n) / (i pi n)``.

    ``x``: real, any shape, in [-1, 1]; ``c``: complex ``(N+1,)``. ``Phi(-1) = 0``, ``Phi(1) = 1``.
    """
    _check_coeffs(c)
    _check_unit(x)
    n, phase = _harmonics(x, c.shape[0] - 1)
    c0 = c[0].real.to(x.dtype)
    cr, ci = c.real[1:].to(x.dtype) / c0, c.imag[1:].to(x.dtype) / c0
    sign = 1 - 2 * torch.remainder(n, 2)                           # (-1)^n
    # Re[(cr + i ci)(cos + i sin - s) / (i pi n)] = (cr sin + ci (cos - s)) / (pi n)
    terms = (cr * torch.sin(phase) + ci * (torch.cos(phase) - sign)) / (math.pi * n)
    return (x + 1) / 2 + terms.sum(-1)


def trig_icdf(u: torch.Tensor, c: torch.Tensor, *, n_iter: int = 60) -> torch.Tensor:
    """Inverse CDF by vectorised bisection: the ``x`` in [-1, 1] with ``Phi(x) = u`` (Derived in P02).

    ``Phi`` is non-decreasing because ``p >= 0``, so bisection on ``[-1, 1]`` halves the
    bracket every step: ``n_iter`` steps give an error below ``2^{1-n_iter}``. ``u``: real,
    any shape, in [0, 1]; ``c``: complex ``(N+1,)``. Returns ``u.shape``.
    """
    check_tensor(u, "u")
    if u.numel() and bool(((u < 0) | (u > 1)).any()):
        raise ValueError("u must lie in [0, 1]")
    _check_coeffs(c)
    n_iter = check_int(n_iter, "n_iter", ge=1, le=200)
    lo, hi = -torch.ones_like(u), torch.ones_like(u)
    with torch.no_grad():
        for _ in range(n_iter):          # sequential in the iteration, vectorised over all u
            mid = (lo + hi) / 2
            below = trig_cdf(mid, c) < u
            lo = torch.where(below, mid, lo)
            hi = torch.where(below, hi, mid)
    return (lo + hi) / 2


def smoothness_penalty(c: torch.Tensor, *, normalized: bool = True) -> torch.Tensor:
    """Derivative energy ``int_{-1}^{1} |f'(x)|^2 dx = sum_{n=-N}^{N} 2 pi^2 n^2 |c_n|^2`` (Derived in P02).

    Parseval on an interval of length 2. With ``normalized=True`` (the default) the penalty is
    taken on the density ``p = f / (2 c_0)``, i.e. divided by ``(2 c_0)^2``, which makes it
    invariant to the scale of the parameters ``a`` (the post's version on ``f`` is not).
    ``c``: complex ``(..., N+1)``; returns ``c.shape[:-1]``.
    """
    _check_complex(c, "c")
    if not isinstance(normalized, bool):
        raise TypeError(f"normalized must be a bool, got {type(normalized).__name__}")
    n = torch.arange(c.shape[-1], device=c.device, dtype=c.real.dtype)
    energy = 4 * math.pi**2 * (n**2 * c.abs() ** 2).sum(-1)       # both n and -n
    if normalized:
        c0 = c[..., 0].real
        if c0.numel() and not bool((c0 > 0).all()):
            raise ValueError("c[..., 0] (the mass c_0) must be positive")
        energy = energy / (2 * c0) ** 2
    return energy


# ----------------------------------------------------------------------------- the model on the real line
def _log_cosh(z: torch.Tensor) -> torch.Tensor:
    a = z.abs()
    return a + torch.log1p(torch.exp(-2 * a)) - math.log(2.0)


class FourierDensity(nn.Module):
    """Fourier basis density on the real line, trained by maximum likelihood (Derived in P02).

    ``q(y) = (1/s) sech^2(z) p(tanh z)``, ``z = (y - loc)/s``, with ``p`` the normalised squared
    trigonometric polynomial ``p(x) = |sum_{k=0}^{N} a_k e^{-i pi k x}|^2 / (2 sum_k |a_k|^2)``.

    Parameters: ``a_real``, ``a_imag`` (each ``(N+1,)``, initialised to ``a = e_0``, the uniform
    density on [-1, 1]) and, if ``learn_affine``, ``loc`` and ``log_scale``. ``n_freqs`` is N.
    """

    def __init__(self, n_freqs: int, *, loc: float = 0.0, scale: float = 1.0, learn_affine: bool = True,
                 dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> None:
        super().__init__()
        n_freqs = check_int(n_freqs, "n_freqs", ge=0)
        loc = check_real(loc, "loc")
        scale = check_real(scale, "scale", gt=0)
        if not isinstance(learn_affine, bool):
            raise TypeError(f"learn_affine must be a bool, got {type(learn_affine).__name__}")
        if dtype not in (torch.float32, torch.float64):
            raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        self.n_freqs = n_freqs
        a_real = torch.zeros(n_freqs + 1, dtype=dtype, device=device)
        a_real[0] = 1.0
        self.a_real = nn.Parameter(a_real)
        self.a_imag = nn.Parameter(torch.zeros(n_freqs + 1, dtype=dtype, device=device))
        affine = [torch.tensor(loc, dtype=dtype, device=device), torch.tensor(math.log(scale), dtype=dtype, device=device)]
        if learn_affine:
            self.loc, self.log_scale = nn.Parameter(affine[0]), nn.Parameter(affine[1])
        else:
            self.register_buffer("loc", affine[0])
            self.register_buffer("log_scale", affine[1])

    # -- parameters
    def a(self) -> torch.Tensor:
        """The complex parameters ``a_0..a_N`` (shape ``(N+1,)``)."""
        return torch.complex(self.a_real, self.a_imag)

    def coefficients(self) -> torch.Tensor:
        """Fourier coefficients ``c_0..c_N`` of ``f`` (autocorrelation of ``a``), complex ``(N+1,)``."""
        return autocorrelation(self.a())

    def regularizer(self, *, normalized: bool = True) -> torch.Tensor:
        """Smoothness penalty ``int |p'|^2`` (or ``int |f'|^2`` if not ``normalized``) on [-1, 1]."""
        return smoothness_penalty(self.coefficients(), normalized=normalized)

    # -- the unit interval
    def unit_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``p(x) = |A(x)|^2 / (2 sum|a_k|^2)`` with ``A(x) = sum_k a_k e^{-i pi k x}``; x in [-1, 1]."""
        _check_unit(x)
        return self._unit_prob_from_basis(*self._basis(x))

    def _basis(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``cos(pi k x)``, ``sin(pi k x)`` for k = 0..N, each ``x.shape + (N+1,)``."""
        phase = math.pi * x[..., None] * torch.arange(self.n_freqs + 1, device=x.device, dtype=x.dtype)
        return torch.cos(phase), torch.sin(phase)

    def _unit_prob_from_basis(self, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        # A(x) = sum_k (ar_k + i ai_k)(cos - i sin) = (cos ar + sin ai) + i (cos ai - sin ar)
        ar, ai = self.a_real.to(cos.dtype), self.a_imag.to(cos.dtype)
        re = cos @ ar + sin @ ai
        im = cos @ ai - sin @ ar
        return (re**2 + im**2) / (2 * (ar**2 + ai**2).sum())

    def unit_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``log p(x)`` on [-1, 1], floored at the dtype's smallest normal number (never -inf)."""
        return torch.log(self.unit_prob(x).clamp_min(torch.finfo(x.dtype).tiny))

    # -- the real line
    def scale(self) -> torch.Tensor:
        return self.log_scale.exp()

    def _z(self, y: torch.Tensor) -> torch.Tensor:
        check_tensor(y, "y")
        return (y - self.loc.to(y.dtype)) / self.scale().to(y.dtype)

    def log_prob(self, y: torch.Tensor) -> torch.Tensor:
        """``log q(y) = log p(tanh z) - 2 log cosh z - log s``; ``y`` real, any shape."""
        z = self._z(y)
        return self.unit_log_prob(torch.tanh(z)) - 2 * _log_cosh(z) - self.log_scale.to(y.dtype)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`log_prob` (so ``-model(y).mean()`` is the NLL)."""
        return self.log_prob(y)

    def cdf(self, y: torch.Tensor) -> torch.Tensor:
        """``Q(y) = Phi(tanh z)`` with the closed-form unit CDF :func:`trig_cdf`."""
        return trig_cdf(torch.tanh(self._z(y)), self.coefficients()).clamp(0, 1)

    def icdf(self, u: torch.Tensor, *, n_iter: int = 60) -> torch.Tensor:
        """Quantile function ``y = loc + s artanh(Phi^{-1}(u))`` (bisection); ``u`` in (0, 1)."""
        x = trig_icdf(u, self.coefficients().detach(), n_iter=n_iter)
        edge = 1 - torch.finfo(x.dtype).eps
        return (self.loc.detach() + self.scale().detach() * torch.atanh(x.clamp(-edge, edge))).to(u.dtype)

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` samples by inverse-CDF sampling; uniforms drawn on the CPU, then moved."""
        n = check_int(n, "n", ge=0)
        u = torch.rand(n, generator=generator, dtype=torch.float64, device="cpu")
        return self.icdf(u.to(device=self.a_real.device, dtype=self.a_real.dtype))


def fit_fourier_density(y: torch.Tensor, n_freqs: int, *, gamma: float = 0.0, steps: int = 500,
                        lr: float = 0.05, learn_affine: bool = False, normalized: bool = True) -> FourierDensity:
    """Maximum-likelihood fit of :class:`FourierDensity` with Adam (Derived in P02).

    Minimises ``-mean_i log q(y_i) + gamma * int |p'|^2`` from ``a = e_0`` (uniform on [-1, 1]),
    ``loc = mean(y)``, ``scale = std(y)`` (the post's standardisation; trained too if
    ``learn_affine``, else fixed, which lets the basis be tabulated once). Deterministic: no
    random initialisation. ``normalized=False`` penalises ``int |f'|^2`` instead, as the post
    writes it (see :func:`smoothness_penalty`). ``y``: real ``(B,)`` with ``B >= 2``; dtype/device follow ``y``.
    """
    check_tensor(y, "y", ndim=1)
    if y.shape[0] < 2:
        raise ValueError(f"y must hold at least 2 samples, got {y.shape[0]}")
    gamma = check_real(gamma, "gamma", ge=0)
    steps = check_int(steps, "steps", ge=0)
    lr = check_real(lr, "lr", gt=0)
    if not isinstance(normalized, bool):
        raise TypeError(f"normalized must be a bool, got {type(normalized).__name__}")
    std = float(y.std())
    if not std > 0:
        raise ValueError("y must not be constant")
    model = FourierDensity(n_freqs, loc=float(y.mean()), scale=std, learn_affine=learn_affine,
                           dtype=y.dtype, device=y.device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    if not learn_affine:             # the map is fixed: tabulate the basis and the log-Jacobian once
        with torch.no_grad():
            z = model._z(y)
            basis = model._basis(torch.tanh(z))
            log_jac = -2 * _log_cosh(z) - model.log_scale
        tiny = torch.finfo(y.dtype).tiny

        def nll() -> torch.Tensor:
            return -(torch.log(model._unit_prob_from_basis(*basis).clamp_min(tiny)) + log_jac).mean()
    else:
        def nll() -> torch.Tensor:
            return -model.log_prob(y).mean()
    for _ in range(steps):
        opt.zero_grad()
        loss = nll()
        if gamma > 0:
            loss = loss + gamma * model.regularizer(normalized=normalized)
        loss.backward()
        opt.step()
    return model


# ----------------------------------------------------------------------------- Gaussian-mixture baseline
def gmm_log_prob(x: torch.Tensor, weights: torch.Tensor, means: torch.Tensor, stds: torch.Tensor) -> torch.Tensor:
    """``log sum_j w_j N(x; mu_j, sigma_j^2)`` for 1-D mixtures (baseline in P02).

    ``x``: real, any shape; ``weights``, ``means``, ``stds``: ``(K,)``. Returns ``x.shape``.
    """
    check_tensor(x, "x")
    for name, v in (("weights", weights), ("means", means), ("stds", stds)):
        check_tensor(v, name, ndim=1)
    if not weights.shape == means.shape == stds.shape:
        raise ValueError("weights, means and stds must have the same shape (K,)")
    if bool((stds <= 0).any()):
        raise ValueError("stds must be positive")
    if bool((weights < 0).any()) or abs(float(weights.sum()) - 1) > 1e-6:
        raise ValueError("weights must be non-negative and sum to 1")
    z = (x[..., None] - means) / stds
    comp = -0.5 * z**2 - torch.log(stds) - 0.5 * math.log(2 * math.pi) + torch.log(weights)
    return torch.logsumexp(comp, dim=-1)


def gmm_em(x: torch.Tensor, n_components: int, *, n_iter: int = 200,
           min_std: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fit a 1-D Gaussian mixture with free weights by expectation-maximisation (baseline in P02).

    Deterministic start: means at the quantiles ``(j + 1/2)/K`` of ``x``, all stds equal to
    ``std(x)``, equal weights. Each iteration computes responsibilities ``r_ij`` (E step) and
    sets ``w_j = mean_i r_ij``, ``mu_j``, ``sigma_j`` to the responsibility-weighted moments
    (M step); ``sigma_j`` is floored at ``min_std``. ``x``: real ``(B,)``. Returns
    ``(weights, means, stds)``, each ``(K,)``.
    """
    check_tensor(x, "x", ndim=1)
    k = check_int(n_components, "n_components", ge=1)
    n_iter = check_int(n_iter, "n_iter", ge=0)
    min_std = check_real(min_std, "min_std", gt=0)
    if x.shape[0] < k:
        raise ValueError(f"x must hold at least n_components={k} samples, got {x.shape[0]}")
    q = (torch.arange(k, device=x.device, dtype=x.dtype) + 0.5) / k
    means = torch.quantile(x, q)
    stds = x.std().clamp_min(min_std).expand(k).clone()
    weights = torch.full((k,), 1.0 / k, device=x.device, dtype=x.dtype)
    for _ in range(n_iter):               # EM is sequential in the iteration; vectorised over samples
        z = (x[:, None] - means) / stds
        comp = -0.5 * z**2 - torch.log(stds) + torch.log(weights)
        r = torch.softmax(comp, dim=-1)                              # (B, K) responsibilities
        mass = r.sum(0).clamp_min(torch.finfo(x.dtype).tiny)
        weights = mass / x.shape[0]
        means = (r * x[:, None]).sum(0) / mass
        var = (r * (x[:, None] - means) ** 2).sum(0) / mass
        stds = var.sqrt().clamp_min(min_std)
        weights = weights.clamp_min(torch.finfo(x.dtype).tiny)
        weights = weights / weights.sum()
    return weights, means, stds
