r"""The gated attention unit (GAU) of FLASH and GAU-α, with its attention normalisations (P17).

GAU (Hua et al., *Transformer Quality in Linear Time*, arXiv:2202.10447) fuses a GLU-style
feed-forward layer with single-head attention. For ``X`` of shape ``(n, d)``:

.. math::

    [U \,|\, V \,|\, Z] = \phi(X W_i),\qquad Q = Z\odot\gamma_q + \beta_q,\quad K = Z\odot\gamma_k + \beta_k,

    O = \big(U \odot A V\big) W_o,\qquad A = \mathrm{normalize}\Big(\frac{\mathrm{RoPE}(Q)\,\mathrm{RoPE}(K)^\top}{\sqrt s}\Big),

with ``U, V`` of width ``e`` (``hidden_size``), ``Z`` of width ``s`` (``key_size``) and
``phi`` = SiLU. GAU-α (Su, kexue.fm/archives/9052) uses no biases and the entropy-invariant
``softmax_plus`` normalisation, which multiplies the scores of a row by ``log(l) / log(512)``
where ``l`` is the number of keys the row may attend to. FLASH itself uses a squared ReLU.

The module also holds the parameter and multiply-accumulate counts used to compare two GAU
layers with one attention + FFN block.
"""
from __future__ import annotations

import math
from numbers import Integral

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_int, check_real, check_tensor
from .positions import apply_rope

__all__ = [
    "NORMS",
    "softmax_plus",
    "attention_normalize",
    "ScaleOffset",
    "GAU",
    "gau_param_count",
    "attention_ffn_param_count",
    "gau_macs",
    "attention_ffn_macs",
]

#: The attention normalisations :class:`GAU` accepts.
NORMS = ("softmax_plus", "softmax", "relu2")


def _check_mask(mask: object, scores: torch.Tensor) -> torch.Tensor | None:
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a torch.Tensor or None, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must have dtype torch.bool (True = may attend), got {mask.dtype}")
    try:
        return torch.broadcast_to(mask.to(scores.device), scores.shape)
    except RuntimeError as err:
        raise ValueError(
            f"mask of shape {tuple(mask.shape)} does not broadcast to scores of shape {tuple(scores.shape)}"
        ) from err


def _valid_counts(scores: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Number of keys each row may attend to, clamped to >= 1, shape ``(..., n_q, 1)``."""
    if mask is None:
        return scores.new_full((*scores.shape[:-1], 1), float(scores.shape[-1]))
    return mask.sum(-1, keepdim=True).clamp(min=1).to(scores.dtype)


def _masked_softmax(scores: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return torch.softmax(scores, dim=-1)
    # finfo.min instead of -inf: a fully masked row gives a uniform row (no NaN, also in the
    # backward pass), which the final multiplication by the mask turns into zeros.
    filled = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return torch.softmax(filled, dim=-1) * mask


def softmax_plus(scores: torch.Tensor, mask: torch.Tensor | None = None, *, base: float = 512.0) -> torch.Tensor:
    r"""Entropy-invariant softmax of GAU-α (``softmax_plus`` in bert4keras). Derived in P17.

    .. math::

        A_{ij} = \frac{\exp\big(\kappa_i\, a_{ij}\big)}{\sum_{j'\,\text{valid}}\exp\big(\kappa_i\, a_{ij'}\big)},
        \qquad \kappa_i = \frac{\log l_i}{\log \mathrm{base}},

    where :math:`l_i\ge1` is the number of keys row ``i`` may attend to (its unmasked entries;
    clamped to 1, so a row with a single key gets :math:`\kappa_i=0`). At :math:`l_i` equal
    to ``base`` (the pre-training length 512) it is the ordinary softmax; for other lengths the
    scale grows like :math:`\log l`, which keeps the attention entropy roughly constant
    (Su's "entropy invariance", kexue.fm/archives/8823).

    Parameters
    ----------
    scores
        Floating tensor ``(..., n_q, n_k)``: the already scaled scores, e.g. ``q k^T / sqrt(s)``.
    mask
        Optional bool tensor broadcastable to ``scores``; ``True`` = may attend (the convention
        of ``torch.nn.functional.scaled_dot_product_attention``). Rows with no valid key
        return zeros.
    base
        The length at which the factor is 1, ``> 1``.

    Returns
    -------
    ``torch.Tensor`` of the shape of ``scores``; each row with a valid key sums to 1 and is 0
    on masked keys.
    """
    check_tensor(scores, "scores", min_ndim=1)
    base = check_real(base, "base", gt=1.0)
    return _normalize(scores, _check_mask(mask, scores), "softmax_plus", base)


def _normalize(scores: torch.Tensor, m: torch.Tensor | None, method: str, base: float) -> torch.Tensor:
    """The normalisations without argument checks (``m`` already broadcast, or None)."""
    if method == "softmax":
        return _masked_softmax(scores, m)
    if method == "softmax_plus":
        kappa = torch.log(_valid_counts(scores, m)) / math.log(base)
        return _masked_softmax(scores * kappa, m)
    a = F.relu(scores).square() / _valid_counts(scores, m)
    return a if m is None else a * m


def attention_normalize(
    scores: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    method: str = "softmax_plus",
    base: float = 512.0,
) -> torch.Tensor:
    r"""Turn attention scores into attention weights by one of GAU's normalisations. Derived in P17.

    - ``'softmax'``: the ordinary masked softmax over the last axis;
    - ``'softmax_plus'``: :func:`softmax_plus` (scale :math:`\log l/\log\mathrm{base}`);
    - ``'relu2'``: :math:`A_{ij}=\mathrm{relu}(a_{ij})^2/l_i` with :math:`l_i` the number of
      valid keys, the squared-ReLU attention of FLASH in the :math:`1/n` form of Su's explainer
      (kexue.fm/archives/8934) and bert4keras. Rows do not sum to 1.

    ``scores`` is ``(..., n_q, n_k)``; ``mask`` is bool, broadcastable, ``True`` = may attend.
    Masked entries of the result are exactly 0.
    """
    if not isinstance(method, str) or method not in NORMS:
        raise ValueError(f"method must be one of {NORMS}, got {method!r}")
    check_tensor(scores, "scores", min_ndim=1)
    base = check_real(base, "base", gt=1.0)
    return _normalize(scores, _check_mask(mask, scores), method, base)


class ScaleOffset(nn.Module):
    r"""Per-dimension affine maps that make several "heads" (e.g. ``Q`` and ``K``) out of one ``Z``.

    ``forward(z)`` returns the tuple :math:`(z\odot\gamma_h+\beta_h)_{h=1..\mathrm{heads}}`, each
    of the shape of ``z`` ``(..., key_size)``. ``gamma`` has shape ``(heads, key_size)``;
    ``beta`` exists only with ``bias=True``. Used by :class:`GAU` (P17).

    Parameters
    ----------
    key_size
        Width ``s`` of ``z``.
    heads
        How many affine copies to return (2 for ``Q, K``).
    bias
        Whether to add the offsets ``beta`` (initialised to 0).
    gamma_init_std
        ``None`` initialises ``gamma`` to ones; a positive number draws it from
        ``N(0, gamma_init_std^2)`` instead, as the bert4torch port of GAU does (std 0.02).
    """

    def __init__(
        self,
        key_size: int,
        *,
        heads: int = 2,
        bias: bool = False,
        gamma_init_std: float | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.key_size = check_int(key_size, "key_size", ge=1)
        self.heads = check_int(heads, "heads", ge=1)
        self.gamma = nn.Parameter(torch.ones(self.heads, self.key_size, device=device, dtype=dtype))
        self.beta = (
            nn.Parameter(torch.zeros(self.heads, self.key_size, device=device, dtype=dtype)) if bias else None
        )
        if gamma_init_std is not None:
            std = check_real(gamma_init_std, "gamma_init_std", gt=0.0)
            nn.init.normal_(self.gamma, std=std)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
        check_tensor(z, "z", min_ndim=1, finite=False)
        if z.shape[-1] != self.key_size:
            raise ValueError(f"z: last dimension must be key_size = {self.key_size}, got {z.shape[-1]}")
        out = z.unsqueeze(-2) * self.gamma
        if self.beta is not None:
            out = out + self.beta
        return out.unbind(-2)


class GAU(nn.Module):
    r"""Gated attention unit, batch-first: ``(B, n, d_model) -> (B, n, d_model)``. Derived in P17.

    .. math::

        [U|V|Z]=\mathrm{SiLU}(XW_i),\quad Q,K=\mathrm{ScaleOffset}(Z),\quad
        A=\mathrm{normalize}\Big(\tfrac{\mathrm{RoPE}(Q)\mathrm{RoPE}(K)^\top}{\sqrt s}\Big),\quad
        O=(U\odot AV)W_o.

    The unit only; GAU-α wraps it as ``x = rms_norm(x + dropout(GAU(x)))`` (post-norm).
    The defaults are GAU-α's: ``hidden_size = 2 d_model``, ``key_size = 128``, no biases,
    RoPE, ``softmax_plus`` with base 512.

    ``forward(x, key_padding_mask=None, *, need_weights=False)``: ``x`` is ``(B, n, d_model)``;
    ``key_padding_mask`` is an optional bool ``(B, n)`` with ``True`` marking *padding* (the
    convention of ``torch.nn.MultiheadAttention``). Returns ``(B, n, d_model)``, or the pair
    ``(output, A)`` with ``A`` of shape ``(B, n, n)`` when ``need_weights=True``.

    Parameters
    ----------
    d_model
        Model width ``d``.
    hidden_size
        Width ``e`` of ``U`` and ``V`` (default ``2 * d_model``).
    key_size
        Width ``s`` of ``Z``, ``Q``, ``K`` (even when ``rope=True``).
    norm
        ``'softmax_plus'``, ``'softmax'`` or ``'relu2'``, see :func:`attention_normalize`.
    bias
        Biases in both linear maps and offsets in :class:`ScaleOffset`.
    rope
        Apply ``kexue_lib.positions.apply_rope`` to ``Q`` and ``K``.
    causal
        Row ``i`` attends to keys ``j <= i`` only (then ``softmax_plus`` uses ``l_i = i + 1``).
    base
        The ``softmax_plus`` base.
    dropout
        Dropout probability on the attention weights (training mode only).
    gamma_init_std
        Passed to :class:`ScaleOffset`.
    """

    def __init__(
        self,
        d_model: int,
        *,
        hidden_size: int | None = None,
        key_size: int = 128,
        norm: str = "softmax_plus",
        bias: bool = False,
        rope: bool = True,
        causal: bool = False,
        base: float = 512.0,
        dropout: float = 0.0,
        gamma_init_std: float | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.d_model = check_int(d_model, "d_model", ge=1)
        self.hidden_size = 2 * self.d_model if hidden_size is None else check_int(hidden_size, "hidden_size", ge=1)
        self.key_size = check_int(key_size, "key_size", ge=1)
        if not isinstance(norm, str) or norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        if rope and self.key_size % 2:
            raise ValueError(f"key_size must be even when rope=True, got {self.key_size}")
        self.norm, self.rope, self.causal = norm, bool(rope), bool(causal)
        self.base = check_real(base, "base", gt=1.0)
        kw = dict(device=device, dtype=dtype)
        self.i_dense = nn.Linear(self.d_model, 2 * self.hidden_size + self.key_size, bias=bias, **kw)
        self.scale_offset = ScaleOffset(self.key_size, heads=2, bias=bias, gamma_init_std=gamma_init_std, **kw)
        self.o_dense = nn.Linear(self.hidden_size, self.d_model, bias=bias, **kw)
        self.dropout = nn.Dropout(check_real(dropout, "dropout", ge=0.0, lt=1.0))

    def forward(
        self,
        x: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        *,
        need_weights: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        check_tensor(x, "x", ndim=3, finite=False)
        b, n, d = x.shape
        if d != self.d_model:
            raise ValueError(f"x: last dimension must be d_model = {self.d_model}, got {d}")
        e, s = self.hidden_size, self.key_size
        u, v, z = F.silu(self.i_dense(x)).split([e, e, s], dim=-1)
        q, k = self.scale_offset(z)
        if self.rope:
            q, k = apply_rope(q), apply_rope(k)
        scores = q @ k.transpose(-1, -2) / math.sqrt(s)              # (B, n, n)
        valid = None
        if key_padding_mask is not None:
            if not isinstance(key_padding_mask, torch.Tensor) or key_padding_mask.dtype != torch.bool:
                raise TypeError("key_padding_mask must be a bool torch.Tensor (True = padding)")
            if tuple(key_padding_mask.shape) != (b, n):
                raise ValueError(f"key_padding_mask must have shape {(b, n)}, got {tuple(key_padding_mask.shape)}")
            valid = ~key_padding_mask.to(x.device)[:, None, :]         # (B, 1, n)
        if self.causal:
            tri = torch.ones(n, n, dtype=torch.bool, device=x.device).tril()
            valid = tri if valid is None else valid & tri
        if valid is not None:
            valid = torch.broadcast_to(valid, scores.shape)
        a = _normalize(scores, valid, self.norm, self.base)    # inputs built here: no re-checks
        out = self.o_dense(u * (self.dropout(a) @ v))
        return (out, a) if need_weights else out

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, hidden_size={self.hidden_size}, key_size={self.key_size}, "
                f"norm={self.norm!r}, rope={self.rope}, causal={self.causal}")


# ----------------------------------------------------------------------------------------
# Parameter and multiply-accumulate counts


def _count(value: object, name: str) -> int:
    return check_int(value, name, ge=1)


def gau_param_count(
    d_model: int,
    *,
    hidden_size: int | None = None,
    key_size: int = 128,
    bias: bool = False,
    heads: int = 2,
) -> int:
    r"""Number of parameters of one :class:`GAU` layer. Derived in P17.

    .. math::

        d(2e+s) + e\,d + 2s \quad(\text{no bias}),\qquad
        +\,(2e+s) + d + 2s \quad(\text{with biases and offsets}),

    with ``e = hidden_size`` (default ``2 d``) and ``s = key_size``; ``heads`` is the number of
    ``ScaleOffset`` copies (2: ``Q`` and ``K``). GAU-α (``d = 768``): 3,637,504.
    """
    d = _count(d_model, "d_model")
    e = 2 * d if hidden_size is None else _count(hidden_size, "hidden_size")
    s, h = _count(key_size, "key_size"), _count(heads, "heads")
    total = d * (2 * e + s) + e * d + h * s
    if bias:
        total += (2 * e + s) + d + h * s
    return total


def attention_ffn_param_count(
    d_model: int,
    *,
    dim_feedforward: int | None = None,
    bias: bool = True,
    norm_params: bool = True,
) -> int:
    r"""Number of parameters of one standard Transformer block (multi-head attention + FFN). Derived in P17.

    .. math::

        \underbrace{4d^2}_{W_q,W_k,W_v,W_o} + \underbrace{2\,d\,f}_{\text{FFN}}
        + [\text{bias}]\,(4d + f + d) + [\text{norm\_params}]\,2\,(d + [\text{bias}]\,d),

    with ``f = dim_feedforward`` (default ``4 d``). The head count does not matter. With the
    defaults it equals ``torch.nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward)``
    (two LayerNorms with weight and, if ``bias``, bias); ``norm_params=False`` describes the
    parameter-free RMSNorm of RoFormerV2/GAU-α, where ``bias=False`` gives exactly ``12 d^2``.
    """
    d = _count(d_model, "d_model")
    f = 4 * d if dim_feedforward is None else _count(dim_feedforward, "dim_feedforward")
    total = 4 * d * d + 2 * d * f
    if bias:
        total += 4 * d + f + d
    if norm_params:
        total += 2 * (d + (d if bias else 0))
    return total


def _lengths(n: object) -> np.ndarray | int:
    if isinstance(n, Integral) and not isinstance(n, bool):
        return check_int(n, "n", ge=1)
    arr = np.asarray(n)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"n must be an int or an integer array, got dtype {arr.dtype}")
    if arr.size and arr.min() < 1:
        raise ValueError("n must be >= 1")
    return arr.astype(np.int64)


def gau_macs(
    n: int | np.ndarray,
    d_model: int,
    *,
    hidden_size: int | None = None,
    key_size: int = 128,
) -> int | np.ndarray:
    r"""Multiply-accumulates of one :class:`GAU` forward pass on one sequence of length ``n``. Derived in P17.

    .. math::

        \underbrace{n\,d\,(2e+s)}_{XW_i} + \underbrace{n^2 s}_{QK^\top} + \underbrace{n^2 e}_{AV}
        + \underbrace{n\,e\,d}_{(\cdot)W_o}

    (matrix products only). Note the :math:`n^2 e` of :math:`AV`: with :math:`e=2d` the
    quadratic part of one GAU, :math:`n^2(s+e)`, exceeds the :math:`2n^2d` of multi-head
    attention. ``n`` may be an int or an integer NumPy array.
    """
    n = _lengths(n)
    d = _count(d_model, "d_model")
    e = 2 * d if hidden_size is None else _count(hidden_size, "hidden_size")
    s = _count(key_size, "key_size")
    return n * d * (2 * e + s) + n * n * (s + e) + n * e * d


def attention_ffn_macs(
    n: int | np.ndarray,
    d_model: int,
    *,
    dim_feedforward: int | None = None,
) -> int | np.ndarray:
    r"""Multiply-accumulates of one multi-head attention + FFN block on one sequence. Derived in P17.

    .. math::

        \underbrace{4\,n\,d^2}_{\text{projections}} + \underbrace{2\,n^2 d}_{QK^\top,\ AV}
        + \underbrace{2\,n\,d\,f}_{\text{FFN}}

    (matrix products only; independent of the number of heads). ``n`` may be an int or an
    integer NumPy array.
    """
    n = _lengths(n)
    d = _count(d_model, "d_model")
    f = 4 * d if dim_feedforward is None else _count(dim_feedforward, "dim_feedforward")
    return 4 * n * d * d + 2 * n * n * d + 2 * n * d * f
