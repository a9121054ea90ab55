"""Attention primitives: masks, softmax and linear attention, mask reachability (Derived in P04).

Conventions (shared by the chapters that import this module):

* ``q``: ``(..., n_q, d)``, ``k``: ``(..., n_k, d)``, ``v``: ``(..., n_k, d_v)``; leading
  dimensions (batch, heads) broadcast as in ``torch.matmul``.
* A boolean mask ``M`` has ``M[i, j] = True`` when query ``i`` **may attend** to key ``j``,
  the same convention as the boolean ``attn_mask`` of
  ``torch.nn.functional.scaled_dot_product_attention``.
* The attention matrix ``A`` has rows that sum to 1, and the output is ``A v``.

P04 (kexue.fm/archives/9529) compares bidirectional, causal (forward), anti-causal
(backward) and prefix (UniLM) masks, and softmax against linear attention:

    softmax:  A = softmax(q k^T * scale + log M)           (rows, masked entries 0)
    linear:   A_ij = phi(q_i).phi(k_j) M_ij / sum_l phi(q_i).phi(k_l) M_il

The causal linear attention output is computed without forming ``A``, by running sums
(``cumsum``) of ``phi(k_j) v_j^T`` and ``phi(k_j)``.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from ._checks import check_int, check_real, check_tensor

__all__ = [
    "MASK_KINDS",
    "FEATURE_MAPS",
    "resolve_feature_map",
    "make_mask",
    "mixed_direction_masks",
    "reachability",
    "scores",
    "softmax_attention",
    "linear_attention",
]

#: The mask kinds :func:`make_mask` knows.
MASK_KINDS = ("bi", "causal", "anticausal", "prefix")


def _elu1(x: torch.Tensor) -> torch.Tensor:
    return F.elu(x) + 1.0


#: Named positive feature maps for :func:`linear_attention`.
FEATURE_MAPS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "elu1": _elu1,
    "relu": torch.relu,
    "softplus": F.softplus,
    "exp": torch.exp,
}


def resolve_feature_map(feature_map: object) -> Callable[[torch.Tensor], torch.Tensor]:
    """The feature map ``phi`` named by ``feature_map`` (a key of ``FEATURE_MAPS``) or the callable itself."""
    if isinstance(feature_map, str):
        if feature_map not in FEATURE_MAPS:
            raise ValueError(f"feature_map must be one of {tuple(FEATURE_MAPS)} or a callable, got {feature_map!r}")
        return FEATURE_MAPS[feature_map]
    if callable(feature_map):
        return feature_map
    raise TypeError(f"feature_map must be a str or a callable, got {type(feature_map).__name__}")


# ----------------------------------------------------------------------------- masks
def make_mask(
    n: int,
    kind: str = "causal",
    *,
    prefix_len: int | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Boolean ``(n, n)`` attention mask, ``True`` where query ``i`` may see key ``j`` (Derived in P04).

    ``kind``:

    * ``'bi'``: every entry ``True`` (BERT, a T5 encoder);
    * ``'causal'``: ``j <= i``, lower-triangular (GPT; "forward");
    * ``'anticausal'``: ``j >= i``, upper-triangular ("backward");
    * ``'prefix'``: the UniLM mask: every query sees the first ``prefix_len`` positions, and
      positions from ``prefix_len`` on also see themselves and earlier positions
      (``j < prefix_len or j <= i``). ``prefix_len=0`` is ``'causal'``, ``prefix_len=n`` is ``'bi'``.
    """
    n = check_int(n, "n", ge=1)
    if kind not in MASK_KINDS:
        raise ValueError(f"kind must be one of {MASK_KINDS}, got {kind!r}")
    if kind == "prefix":
        if prefix_len is None:
            raise ValueError("prefix_len is required when kind='prefix'")
        prefix_len = check_int(prefix_len, "prefix_len", ge=0, le=n)
    elif prefix_len is not None:
        raise ValueError(f"prefix_len is only used with kind='prefix', got kind={kind!r}")
    i = torch.arange(n, device=device).unsqueeze(-1)
    j = torch.arange(n, device=device).unsqueeze(0)
    if kind == "bi":
        return torch.ones(n, n, dtype=torch.bool, device=device)
    if kind == "causal":
        return j <= i
    if kind == "anticausal":
        return j >= i
    return (j < prefix_len) | (j <= i)


def mixed_direction_masks(
    n: int,
    n_heads: int,
    *,
    mode: str = "heads",
    layer_idx: int = 0,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Per-head masks ``(n_heads, n, n)`` for P04's forward/backward mixed attention (Derived in P04).

    ``mode='heads'``: in every layer the first ``ceil(n_heads / 2)`` heads are causal
    (lower-triangular) and the rest anti-causal (upper-triangular); ``layer_idx`` is ignored.
    ``mode='layers'``: all heads are causal in even layers (``layer_idx = 0, 2, ...``) and
    anti-causal in odd ones. Either way each head's matrix stays triangular (full rank), while
    information can still flow both ways: see :func:`reachability`.
    """
    n = check_int(n, "n", ge=1)
    n_heads = check_int(n_heads, "n_heads", ge=1)
    layer_idx = check_int(layer_idx, "layer_idx", ge=0)
    causal = make_mask(n, "causal", device=device)
    if mode == "heads":
        forward = torch.arange(n_heads, device=device) < (n_heads + 1) // 2
    elif mode == "layers":
        forward = torch.full((n_heads,), layer_idx % 2 == 0, dtype=torch.bool, device=device)
    else:
        raise ValueError(f"mode must be 'heads' or 'layers', got {mode!r}")
    return torch.where(forward[:, None, None], causal, causal.T)


def reachability(masks: torch.Tensor | Sequence[torch.Tensor], *, cumulative: bool = False) -> torch.Tensor:
    """Which inputs each output can depend on after a stack of masked attention layers (Derived in P04).

    Layer ``l`` with mask ``M_l`` lets position ``i`` read position ``j`` iff ``M_l[i, j]``.
    After layers ``1..L`` output ``i`` depends on input ``j`` iff there is a path
    ``j = p_0 -> p_1 -> ... -> p_L = i`` with ``M_l[p_l, p_{l-1}]`` for every ``l``: the Boolean
    product ``R = M_L M_{L-1} ... M_1``. A layer given with a heads dimension ``(H, n, n)`` uses
    the union of its heads' masks (any head can carry the information). Residual connections
    are the same as a ``True`` diagonal, which every mask from :func:`make_mask` already has.

    Shapes: ``masks`` a bool tensor ``(L, n, n)`` or ``(L, H, n, n)``, or a sequence of ``(n, n)``
    / ``(H, n, n)`` bool tensors, layer 1 first. Output ``(n, n)``, or ``(L, n, n)`` with
    ``cumulative=True`` (entry ``l`` is the reachability after layers ``1..l+1``).
    """
    if isinstance(masks, torch.Tensor):
        layers = list(masks.unbind(0)) if masks.ndim >= 3 else None
        if layers is None:
            raise ValueError(f"masks must have shape (L, n, n) or (L, H, n, n), got {tuple(masks.shape)}")
    else:
        layers = list(masks)
    if not layers:
        raise ValueError("masks must contain at least one layer")
    reach, out = None, []
    for idx, m in enumerate(layers):
        check_tensor(m, f"masks[{idx}]", floating=False, finite=False)
        if m.dtype != torch.bool:
            raise TypeError(f"masks[{idx}] must be a bool tensor, got {m.dtype}")
        if m.ndim == 3:
            m = m.any(0)
        if m.ndim != 2 or m.shape[0] != m.shape[1]:
            raise ValueError(f"masks[{idx}] must have shape (n, n) or (H, n, n), got {tuple(m.shape)}")
        if reach is not None and m.shape != reach.shape:
            raise ValueError(f"masks[{idx}] has shape {tuple(m.shape)}, but earlier layers have {tuple(reach.shape)}")
        # Boolean product via counts of paths: (m @ reach)[i, j] = #{k: m[i, k] and reach[k, j]}
        reach = m if reach is None else (m.to(torch.float32) @ reach.to(torch.float32)) > 0
        out.append(reach)
    return torch.stack(out) if cumulative else reach


# ----------------------------------------------------------------------------- softmax attention
def _check_qk(q: object, k: object) -> tuple[torch.Tensor, torch.Tensor]:
    q = check_tensor(q, "q", min_ndim=2)
    k = check_tensor(k, "k", min_ndim=2)
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must share their last dimension d, got {q.shape[-1]} and {k.shape[-1]}")
    if q.dtype != k.dtype or q.device != k.device:
        raise TypeError(f"q and k must share dtype and device, got {q.dtype}/{q.device} and {k.dtype}/{k.device}")
    try:
        torch.broadcast_shapes(q.shape[:-2], k.shape[:-2])
    except RuntimeError as err:
        raise ValueError(f"q and k batch dimensions do not broadcast: {tuple(q.shape)} vs {tuple(k.shape)}") from err
    return q, k


def _check_v(v: object, k: torch.Tensor) -> torch.Tensor:
    v = check_tensor(v, "v", min_ndim=2)
    if v.shape[-2] != k.shape[-2]:
        raise ValueError(f"v must have as many rows as k (n_k = {k.shape[-2]}), got shape {tuple(v.shape)}")
    if v.dtype != k.dtype or v.device != k.device:
        raise TypeError(f"v must share dtype and device with q and k, got {v.dtype}/{v.device}")
    return v


def scores(q: torch.Tensor, k: torch.Tensor, *, scale: float | None = None) -> torch.Tensor:
    """Attention logits ``scale * q k^T`` with default ``scale = 1/sqrt(d)`` (Derived in P04).

    The matrix has rank at most ``d``, the "low-rank" starting point of P04.
    Shapes: ``q`` ``(..., n_q, d)``, ``k`` ``(..., n_k, d)``; output ``(..., n_q, n_k)``.
    """
    q, k = _check_qk(q, k)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else check_real(scale, "scale", gt=0.0)
    return (q @ k.transpose(-2, -1)) * scale


def _check_mask(mask: object, shape: torch.Size, device: torch.device) -> torch.Tensor:
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a torch.Tensor, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor (True = may attend), got {mask.dtype}")
    if mask.device != device:
        raise TypeError(f"mask must be on the same device as q ({device}), got {mask.device}")
    try:
        full = torch.broadcast_shapes(mask.shape, shape)
    except RuntimeError as err:
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to scores {tuple(shape)}") from err
    if full != shape:
        raise ValueError(f"mask of shape {tuple(mask.shape)} would enlarge scores {tuple(shape)}")
    if not bool(mask.any(-1).all()):
        raise ValueError("mask has a row with no allowed key: its softmax would be 0/0")
    return mask


def softmax_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    scale: float | None = None,
    return_probs: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Scaled dot-product attention ``softmax(scale q k^T, masked) v`` (Derived in P04).

    ``A = softmax(s)`` row-wise with ``s_ij = scale * q_i.k_j`` where ``mask[i, j]`` and
    ``s_ij = -inf`` elsewhere, so masked weights are exactly 0 (a causal ``A`` is exactly
    lower-triangular). Same result as ``torch.nn.functional.scaled_dot_product_attention``
    with a boolean ``attn_mask``; here the probabilities can be returned too.

    Shapes: ``q`` ``(..., n_q, d)``, ``k`` ``(..., n_k, d)``, ``v`` ``(..., n_k, d_v)``, ``mask``
    bool, broadcastable to ``(..., n_q, n_k)`` with at least one ``True`` per row. Output
    ``(..., n_q, d_v)``, and ``A`` ``(..., n_q, n_k)`` if ``return_probs``.
    """
    s = scores(q, k, scale=scale)
    v = _check_v(v, k)
    if mask is not None:
        mask = _check_mask(mask, s.shape, s.device)
        s = s.masked_fill(~mask, float("-inf"))
    probs = torch.softmax(s, dim=-1)
    out = probs @ v
    return (out, probs) if return_probs else out


# ----------------------------------------------------------------------------- linear attention
def linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    feature_map: str | Callable[[torch.Tensor], torch.Tensor] = "elu1",
    causal: bool = False,
    return_matrix: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Normalised linear attention ``phi(q_i)^T S_i / phi(q_i)^T z_i`` (Derived in P04).

    With ``S = sum_j phi(k_j) v_j^T`` and ``z = sum_j phi(k_j)`` over all keys (``causal=False``)
    or over ``j <= i`` (``causal=True``, computed by ``cumsum``, O(n d d_v) memory, no ``n x n``
    matrix). The implied attention matrix is ``A = D^{-1} (phi(Q) phi(K)^T)`` (times the causal
    mask), whose bidirectional version has rank at most ``d``. ``feature_map`` is ``'elu1'``
    (``elu(x) + 1``, Katharopoulos et al. 2020), ``'softplus'``, ``'exp'`` or a callable
    returning non-negative features; every normaliser ``phi(q_i)^T z_i`` must be positive.

    Shapes: ``q`` ``(..., n, d)``, ``k`` ``(..., n_k, d)``, ``v`` ``(..., n_k, d_v)`` (causal needs
    ``n_k = n``). Output ``(..., n, d_v)``, and ``A`` ``(..., n, n_k)`` if ``return_matrix``.
    """
    q, k = _check_qk(q, k)
    v = _check_v(v, k)
    phi = resolve_feature_map(feature_map)
    if not isinstance(causal, bool):
        raise TypeError(f"causal must be a bool, got {type(causal).__name__}")
    if causal and q.shape[-2] != k.shape[-2]:
        raise ValueError(f"causal linear attention needs as many queries as keys, got {q.shape[-2]} and {k.shape[-2]}")
    fq, fk = phi(q), phi(k)
    if not (isinstance(fq, torch.Tensor) and fq.shape == q.shape and fk.shape == k.shape):
        raise ValueError("feature_map must return a tensor of the same shape as its input")
    if bool((fq < 0).any()) or bool((fk < 0).any()):
        raise ValueError("feature_map must return non-negative features")
    if causal:
        kv = torch.cumsum(fk.unsqueeze(-1) * v.unsqueeze(-2), dim=-3)   # (..., n, d, d_v): S_i
        z = torch.cumsum(fk, dim=-2)                                      # (..., n, d):      z_i
        num = (fq.unsqueeze(-2) @ kv).squeeze(-2)
        den = (fq * z).sum(-1, keepdim=True)
    else:
        num = fq @ (fk.transpose(-2, -1) @ v)
        den = fq @ fk.sum(-2).unsqueeze(-1)
    if not bool((den > 0).all()):
        raise ValueError("linear attention normaliser phi(q_i).z_i is not positive for some query")
    out = num / den
    if not return_matrix:
        return out
    w = fq @ fk.transpose(-2, -1)
    if causal:
        w = torch.tril(w)
    return out, w / den
