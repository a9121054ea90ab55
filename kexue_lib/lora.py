"""LoRA seen from the gradient: layers, projected gradients, SGD deltas, LoRA+ groups (P10, P29).

Conventions follow Su's posts, which use *row* vectors: a dense layer maps ``X`` of shape
``(..., n)`` to ``Y = X W`` of shape ``(..., m)`` with ``W`` of shape ``(n, m)`` (the transpose
of ``torch.nn.Linear.weight``). LoRA freezes ``W0`` and trains a low-rank increment

    W = W0 + A B,        A: (n, r) input side,   B: (r, m) output side.

The LoRA paper (arXiv:2106.09685) writes ``h = W0 x + B A x`` with column vectors; its
``A`` (r, n) is also the input-side factor and its ``B`` (m, r) the output-side one, so the
letters agree and the shapes are transposed. The paper's default (``B = 0``, ``A`` random)
is ``init="B_zero"`` here.

With ``G = dL/dW = X^T dL/dY`` (P10),

    dL/dA = G B^T,       dL/dB = A^T G,

and one SGD step on ``(A, B)`` changes ``W`` by exactly

    A'B' - AB = -lr (G B^T B + A A^T G) + lr^2 G B^T A^T G.

LoRA+ (arXiv:2402.12354, P29) gives the output-side factor ``B`` a learning rate
``ratio`` times that of ``A``: ``lora_plus_param_groups``.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ._checks import check_int, check_real, check_tensor

__all__ = [
    "INITS",
    "IMPLS",
    "LoRALinear",
    "AdditiveLoRALinear",
    "tile_identity",
    "lora_num_params",
    "lora_grads_from_full",
    "lora_sgd_delta",
    "random_projection_delta",
    "lora_plus_param_groups",
]

#: Initialisations of ``LoRALinear``.
INITS = ("B_zero", "A_zero", "symmetric", "lecun")
#: Forward implementations of ``LoRALinear``.
IMPLS = ("factored", "merged")


def _check_choice(value: object, name: str, options: tuple[str, ...]) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    if value not in options:
        raise ValueError(f"{name} must be one of {options}, got {value!r}")
    return value


def _check_gen(generator: object) -> torch.Generator | None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    return generator


def _normal(shape: tuple[int, ...], std: float, generator: torch.Generator | None,
            device: Any, dtype: torch.dtype) -> torch.Tensor:
    """N(0, std^2) drawn in float64 on the CPU (reproducible across devices), then moved."""
    x = torch.randn(shape, generator=generator, dtype=torch.float64, device="cpu") * std
    return x.to(device=device, dtype=dtype)


def _check_matmul_dims(G: torch.Tensor, A: torch.Tensor, B: torch.Tensor) -> None:
    if A.shape[-2] != G.shape[-2] or B.shape[-1] != G.shape[-1] or A.shape[-1] != B.shape[-2]:
        raise ValueError(
            f"shapes do not fit W = A B with G like W: G {tuple(G.shape)}, A {tuple(A.shape)}, B {tuple(B.shape)}")


# ----------------------------------------------------------------------------------- counts
def lora_num_params(in_features: int, out_features: int, r: int) -> int:
    """Trainable parameters of a rank-``r`` LoRA on an ``(n, m)`` weight: ``r (n + m)`` (P10).

    The same count holds for the additive variant (``AdditiveLoRALinear``). Full
    fine-tuning trains ``n m``; for ``n = m = 4096``, ``r = 8`` the ratio is 0.39 %.
    """
    n = check_int(in_features, "in_features", ge=1)
    m = check_int(out_features, "out_features", ge=1)
    r = check_int(r, "r", ge=1)
    return r * (n + m)


# ------------------------------------------------------------------------------ gradients
def lora_grads_from_full(G: torch.Tensor, A: torch.Tensor, B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Project the full weight gradient onto the LoRA factors (Derived in P10).

    Equation::

        dL/dA = G B^T,    dL/dB = A^T G.

    This is how an optimizer that sees ``G = dL/dW`` can run LoRA without changing the
    network (the post's "optimizer view").

    Parameters
    ----------
    G : torch.Tensor
        ``(..., n, m)``, gradient with respect to ``W = W0 + A B``.
    A : torch.Tensor
        ``(..., n, r)`` input-side factor.
    B : torch.Tensor
        ``(..., r, m)`` output-side factor.

    Returns
    -------
    tuple of torch.Tensor
        ``(gA, gB)`` with the shapes of ``A`` and ``B`` (leading dims broadcast).
    """
    for x, name in ((G, "G"), (A, "A"), (B, "B")):
        check_tensor(x, name, min_ndim=2)
    _check_matmul_dims(G, A, B)
    return G @ B.transpose(-1, -2), A.transpose(-1, -2) @ G


def lora_sgd_delta(G: torch.Tensor, A: torch.Tensor, B: torch.Tensor, *, lr: float,
                   order: int = 2) -> torch.Tensor:
    """Change of ``W = W0 + A B`` after one SGD step on ``(A, B)``, in closed form (P10).

    With ``A' = A - lr G B^T`` and ``B' = B - lr A^T G``::

        A'B' - AB = -lr (G B^T B + A A^T G) + lr^2 G B^T A^T G.

    ``order=2`` returns the exact change (both terms), ``order=1`` only the first-order
    term, which is "SGD with ``G`` replaced by ``G B^T B + A A^T G``".

    Parameters
    ----------
    G : torch.Tensor
        ``(..., n, m)`` gradient with respect to ``W``.
    A : torch.Tensor
        ``(..., n, r)``.
    B : torch.Tensor
        ``(..., r, m)``.
    lr : float
        SGD step size ``>= 0``.
    order : int
        1 or 2.

    Returns
    -------
    torch.Tensor
        ``(..., n, m)``.
    """
    gA, gB = lora_grads_from_full(G, A, B)
    lr = check_real(lr, "lr", ge=0.0)
    order = check_int(order, "order", ge=1, le=2)
    first = gA @ B + A @ gB
    if order == 1:
        return -lr * first
    return -lr * first + lr**2 * (gA @ gB)


def random_projection_delta(G: torch.Tensor, *, lr: float = 1.0, r: int = 1,
                            generator: torch.Generator | None = None) -> torch.Tensor:
    """LoRA's first-order update with freshly drawn random factors (the post's conjecture, P10).

    Draw ``U`` of shape ``(..., n, r)`` and ``V`` of shape ``(..., r, m)`` with i.i.d.
    N(0, 1) entries (new ones every call) and return::

        dW = -lr (G V^T V + U U^T G).

    Since ``E[U U^T] = r I_n`` and ``E[V^T V] = r I_m``, ``E[dW] = -2 r lr G``: full-rank SGD
    in expectation, up to the factor ``2 r`` (which the post, at ``r = 1``, leaves out).
    Pass ``G`` with leading batch dimensions to draw many independent samples at once.

    Parameters
    ----------
    G : torch.Tensor
        ``(..., n, m)``.
    lr : float
        step size ``>= 0``.
    r : int
        rank of the random factors, ``>= 1``.
    generator : torch.Generator or None
        CPU generator; the draws are made in float64 on the CPU and moved to ``G``'s device.

    Returns
    -------
    torch.Tensor
        ``(..., n, m)``.
    """
    check_tensor(G, "G", min_ndim=2)
    lr = check_real(lr, "lr", ge=0.0)
    r = check_int(r, "r", ge=1)
    generator = _check_gen(generator)
    *batch, n, m = G.shape
    U = _normal((*batch, n, r), 1.0, generator, G.device, G.dtype)
    V = _normal((*batch, r, m), 1.0, generator, G.device, G.dtype)
    return -lr * (G @ V.transpose(-1, -2) @ V + U @ (U.transpose(-1, -2) @ G))


# --------------------------------------------------------------------------------- layers
class LoRALinear(nn.Module):
    """A frozen dense weight plus a trainable low-rank increment, ``Y = X (W0 + A B)`` (P10).

    Row-vector convention: ``weight`` (a buffer, never trained) has shape
    ``(in_features, out_features) = (n, m)``; ``A`` is ``(n, r)``, ``B`` is ``(r, m)``.
    Two forward implementations give the same values and the same gradients:

        "factored":  Y = X W0 + (X A) B      (keeps only (..., r) intermediates)
        "merged":    Y = X (W0 + A B)        (materialises the n x m matrix and its gradient)

    Initialisations (LeCun scales, so that ``X``, ``X A`` and ``X A B`` are all O(1), P29):

        "B_zero":    A ~ N(0, 1/n), B = 0          (the LoRA paper's default)
        "A_zero":    A = 0,         B ~ N(0, 1/r)
        "symmetric": A ~ N(0, 1/n), B ~ N(0, 1/r), frozen weight stored as W0 - A0 B0
        "lecun":     A ~ N(0, 1/n), B ~ N(0, 1/r), no correction (the function changes)

    so ``"symmetric"`` still computes ``X W0`` at step 0 while both factors are non-zero.

    Parameters
    ----------
    in_features : int
        ``n``.
    out_features : int
        ``m``.
    r : int
        rank, ``1 <= r``.
    weight : torch.Tensor or None
        the frozen ``W0``, shape ``(n, m)``; zeros if ``None``.
    init : str
        one of ``INITS``.
    impl : str
        one of ``IMPLS``.
    generator : torch.Generator or None
        CPU generator for the initialisation.
    device, dtype
        as in ``torch.nn.Linear`` (default: those of ``weight``, else CPU float32).
    """

    def __init__(self, in_features: int, out_features: int, r: int, *, weight: torch.Tensor | None = None,
                 init: str = "B_zero", impl: str = "factored", generator: torch.Generator | None = None,
                 device: Any = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        n = check_int(in_features, "in_features", ge=1)
        m = check_int(out_features, "out_features", ge=1)
        r = check_int(r, "r", ge=1)
        self.init = _check_choice(init, "init", INITS)
        self.impl = _check_choice(impl, "impl", IMPLS)
        generator = _check_gen(generator)
        if weight is not None:
            check_tensor(weight, "weight", ndim=2)
            if tuple(weight.shape) != (n, m):
                raise ValueError(f"weight must have shape (in_features, out_features) = {(n, m)}, "
                                 f"got {tuple(weight.shape)}")
            device = weight.device if device is None else device
            dtype = weight.dtype if dtype is None else dtype
        dtype = torch.get_default_dtype() if dtype is None else dtype
        self.in_features, self.out_features, self.r = n, m, r
        w0 = torch.zeros(n, m, device=device, dtype=dtype) if weight is None else weight.detach().to(device, dtype)
        a = _normal((n, r), 1.0 / math.sqrt(n), generator, device, dtype)
        b = _normal((r, m), 1.0 / math.sqrt(r), generator, device, dtype)
        if init == "B_zero":
            b = torch.zeros_like(b)
        elif init == "A_zero":
            a = torch.zeros_like(a)
        elif init == "symmetric":
            w0 = w0 - a @ b
        self.register_buffer("weight", w0.clone())
        self.A = nn.Parameter(a)
        self.B = nn.Parameter(b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., n) -> (..., m)``."""
        check_tensor(x, "x", min_ndim=1, finite=False)
        if x.shape[-1] != self.in_features:
            raise ValueError(f"x must have last dimension {self.in_features}, got shape {tuple(x.shape)}")
        if self.impl == "merged":
            return x @ self.merge()
        return x @ self.weight + (x @ self.A) @ self.B

    def merge(self) -> torch.Tensor:
        """The effective weight ``W0 + A B`` (``(n, m)``; differentiable in ``A``, ``B``)."""
        return self.weight + self.A @ self.B

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, r={self.r}, " \
               f"init={self.init!r}, impl={self.impl!r}"


def tile_identity(r: int, m: int, *, device: Any = None, dtype: torch.dtype | None = None) -> torch.Tensor:
    """The ``(r, m)`` matrix of ``m / r`` copies of ``I_r`` side by side (P10).

    Entry ``(k, j)`` is 1 when ``j mod r == k``. Its transpose is the ``(m, r)`` stack of
    ``I_r`` blocks. ``r`` must divide ``m``.
    """
    r = check_int(r, "r", ge=1)
    m = check_int(m, "m", ge=1)
    if m % r:
        raise ValueError(f"r={r} must divide m={m}")
    eye = torch.eye(r, device=device, dtype=dtype if dtype is not None else torch.get_default_dtype())
    return eye.repeat(1, m // r)


class AdditiveLoRALinear(nn.Module):
    """Su's additive variant: ``Delta W_ij = A[i, j mod r] + B[i mod r, j]`` (P10).

    In matrix form ``W = W0 + A T_m + T_n^T B`` with ``T_k = tile_identity(r, k)``,
    ``A`` of shape ``(n, r)`` and ``B`` of shape ``(r, m)``: the same ``r (n + m)``
    parameters as LoRA, but the increment can have rank up to ``2 r`` (LoRA: ``r``). At
    ``r = 1`` the gradients are the row sums and the column sums of ``G``. ``r`` must
    divide both ``n`` and ``m``. The forward never builds ``T``: ``X A T_m`` is a tiling
    of ``X A`` and ``X T_n^T`` a sum of ``n / r`` slices of ``X``. Both factors start at 0.

    Parameters
    ----------
    in_features : int
        ``n``.
    out_features : int
        ``m``.
    r : int
        block size, dividing ``n`` and ``m``.
    weight : torch.Tensor or None
        frozen ``(n, m)`` weight; zeros if ``None``.
    device, dtype
        as in ``torch.nn.Linear``.
    """

    def __init__(self, in_features: int, out_features: int, r: int = 1, *, weight: torch.Tensor | None = None,
                 device: Any = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        n = check_int(in_features, "in_features", ge=1)
        m = check_int(out_features, "out_features", ge=1)
        r = check_int(r, "r", ge=1)
        if n % r or m % r:
            raise ValueError(f"r={r} must divide in_features={n} and out_features={m}")
        if weight is not None:
            check_tensor(weight, "weight", ndim=2)
            if tuple(weight.shape) != (n, m):
                raise ValueError(f"weight must have shape {(n, m)}, got {tuple(weight.shape)}")
            device = weight.device if device is None else device
            dtype = weight.dtype if dtype is None else dtype
        dtype = torch.get_default_dtype() if dtype is None else dtype
        self.in_features, self.out_features, self.r = n, m, r
        w0 = torch.zeros(n, m, device=device, dtype=dtype) if weight is None else weight.detach().to(device, dtype)
        self.register_buffer("weight", w0.clone())
        self.A = nn.Parameter(torch.zeros(n, r, device=device, dtype=dtype))
        self.B = nn.Parameter(torch.zeros(r, m, device=device, dtype=dtype))

    def delta(self) -> torch.Tensor:
        """The increment ``A T_m + T_n^T B`` of shape ``(n, m)``."""
        n, m, r = self.in_features, self.out_features, self.r
        return self.A.repeat(1, m // r) + self.B.repeat(n // r, 1)

    def merge(self) -> torch.Tensor:
        """The effective weight ``W0 + A T_m + T_n^T B``."""
        return self.weight + self.delta()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., n) -> (..., m)``."""
        check_tensor(x, "x", min_ndim=1, finite=False)
        n, m, r = self.in_features, self.out_features, self.r
        if x.shape[-1] != n:
            raise ValueError(f"x must have last dimension {n}, got shape {tuple(x.shape)}")
        xs = x.reshape(*x.shape[:-1], n // r, r).sum(-2)          # X T_n^T, shape (..., r)
        return x @ self.weight + (x @ self.A).repeat(*([1] * (x.ndim - 1)), m // r) + xs @ self.B

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, r={self.r}"


# ----------------------------------------------------------------------------------- LoRA+
def lora_plus_param_groups(model: nn.Module, lr: float, ratio: float = 16.0) -> list[dict[str, Any]]:
    """Parameter groups for LoRA+: the output-side factor learns ``ratio`` times faster (P29).

    For every ``LoRALinear`` in ``model``, ``A`` goes into a group with learning rate
    ``lr`` and ``B`` into a group with ``ratio * lr``; every other trainable parameter goes
    with ``A`` (base ``lr``). LoRA+ (arXiv:2402.12354) recommends ``ratio = 2^4 = 16``; Su's
    estimate for equal per-step loss contributions under SignSGD is ``sqrt(n/r)`` for square
    ``(n, n)`` layers (the post writes ``(n/m) sqrt(n/r)``; for ``m != n`` the gradient ratio
    is ``n / sqrt(m r)``, see P29). Pass the result to any ``torch.optim`` optimizer,
    e.g. ``torch.optim.AdamW(lora_plus_param_groups(model, 1e-4, 16))``. Empty groups are
    dropped; each group carries a ``"name"`` key (``"A"``, ``"B"`` or ``"other"``).

    Parameters
    ----------
    model : torch.nn.Module
        contains at least one ``LoRALinear``.
    lr : float
        learning rate of ``A`` and of the other parameters, ``> 0``.
    ratio : float
        ``eta_B / eta_A``, ``> 0``.

    Returns
    -------
    list of dict
        parameter groups.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    lr = check_real(lr, "lr", gt=0.0)
    ratio = check_real(ratio, "ratio", gt=0.0)
    a_ids, b_ids = set(), set()
    for mod in model.modules():
        if isinstance(mod, LoRALinear):
            a_ids.add(id(mod.A))
            b_ids.add(id(mod.B))
    if not a_ids:
        raise ValueError("model contains no LoRALinear layer")
    groups: dict[str, list[nn.Parameter]] = {"A": [], "B": [], "other": []}
    for p in model.parameters():
        if not p.requires_grad:
            continue
        key = "A" if id(p) in a_ids else "B" if id(p) in b_ids else "other"
        groups[key].append(p)
    out = [dict(params=groups["A"], lr=lr, name="A"), dict(params=groups["B"], lr=ratio * lr, name="B"),
           dict(params=groups["other"], lr=lr, name="other")]
    return [g for g in out if g["params"]]
