"""Causal attention as a recurrence: online softmax, the per-query RNN, linear-attention RNNs (P30).

P30 (kexue.fm/archives/10017) observes that causal softmax attention of one query ``q_t``
is an ordinary RNN over the key/value stream: the numerator ``y = sum_j e^{s_j} v_j`` and
the denominator ``z = sum_j e^{s_j}`` (``s_j = q_t . k_j``) are running sums. Because every
position has its own query, the RNN must be run again from scratch for each ``t``: causal
attention is a *quadratic-complexity RNN* whose state is constant-size.

This module implements that recurrence in numerically stable form. The state after ``j`` keys
is ``(m, l, o)``: the running maximum score ``m``, the rescaled normaliser
``l = sum_i e^{s_i - m}`` and the *normalised* output ``o`` (attention over the keys seen so
far). Adding one key with score ``s`` and value ``v``::

    m' = max(m, s),   l' = e^{m - m'} l + e^{s - m'},   g = e^{s - m'} / l',
    o' = o + g (v - o).

``g`` is the softmax weight of the newest key among those seen, so the output update has the
"new observation minus old prediction" shape of a delta rule. A block of keys is added the
same way (FlashAttention, arXiv:2205.14135; Rabe & Staats, arXiv:2112.05682).

Functions:

- :func:`online_softmax_attention`: attention of all queries at once, sequential over key
  blocks (``block=None``: one key at a time, the RNN itself).
- :func:`softmax_attention_as_rnn`: the trajectory ``o_1, ..., o_n`` of one query's RNN and
  its gates ``g_j``.
- :func:`linear_attention_rnn`: (decayed) linear attention as an RNN with a ``d x d_v`` state.
- :func:`attention_stack` / :func:`attention_stack_recompute`: a small multi-layer causal
  attention model, evaluated in parallel or with constant memory by recomputation.

Shapes are batch-first, ``(..., n, d)``; outputs live on the inputs' device and dtype.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import torch

from ._checks import check_int, check_real, check_tensor

__all__ = [
    "SoftmaxRNNState",
    "softmax_rnn_init",
    "softmax_rnn_step",
    "online_softmax_attention",
    "softmax_attention_as_rnn",
    "linear_attention_rnn",
    "AttentionLayer",
    "attention_stack",
    "attention_stack_recompute",
]


class SoftmaxRNNState(NamedTuple):
    """State of the softmax-attention RNN after some keys (Derived in P30).

    ``m`` (running max score, shape ``(...)``), ``l`` (normaliser ``sum e^{s - m}``, shape
    ``(...)``) and ``o`` (attention output over the keys seen so far, shape ``(..., d_v)``).
    ``m + log(l)`` is the log-partition function ``log Z``.
    """

    m: torch.Tensor
    l: torch.Tensor
    o: torch.Tensor


def _check_qkv(q: object, k: object, v: object) -> None:
    for t, name in ((q, "q"), (k, "k"), (v, "v")):
        check_tensor(t, name, min_ndim=2, finite=False)
    if q.dtype != k.dtype or q.dtype != v.dtype:
        raise TypeError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if q.device != k.device or q.device != v.device:
        raise ValueError(f"q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")
    if q.shape[:-2] != k.shape[:-2] or q.shape[:-2] != v.shape[:-2]:
        raise ValueError(
            f"q, k, v must share their leading (batch) dimensions, got shapes "
            f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if k.shape[-1] != q.shape[-1]:
        raise ValueError(f"k must have the head size of q ({q.shape[-1]}), got shape {tuple(k.shape)}")
    if v.shape[-2] != k.shape[-2]:
        raise ValueError(f"v must have as many rows as k ({k.shape[-2]}), got shape {tuple(v.shape)}")
    for t, name in ((q, "q"), (k, "k"), (v, "v")):
        check_tensor(t, name)


def _scale(scale: object, d: int) -> float:
    if scale is None:
        return 1.0 / math.sqrt(d)
    return check_real(scale, "scale", gt=0.0)


def softmax_rnn_init(q: torch.Tensor, d_v: int) -> SoftmaxRNNState:
    """The empty state ``(m, l, o) = (-inf, 0, 0)`` for queries ``q`` of shape ``(..., d)`` (P30).

    ``d_v`` is the value size; the state takes ``q``'s batch shape, device and dtype.
    """
    check_tensor(q, "q", min_ndim=1)
    d_v = check_int(d_v, "d_v", ge=1)
    batch = q.shape[:-1]
    m = torch.full(batch, -math.inf, dtype=q.dtype, device=q.device)
    return SoftmaxRNNState(m, torch.zeros_like(m), q.new_zeros(*batch, d_v))


def softmax_rnn_step(state: SoftmaxRNNState, s: torch.Tensor, v: torch.Tensor) -> tuple[SoftmaxRNNState, torch.Tensor]:
    """Add one key with score ``s`` (shape ``(...)``) and value ``v`` (``(..., d_v)``) to the state (P30).

    Returns the new state and the gate ``g = e^{s - m'} / l'``, the weight of this key in the
    softmax over all keys seen so far:

        m' = max(m, s),  l' = e^{m - m'} l + e^{s - m'},  o' = o + g (v - o).

    Scores are finite; the first step from the empty state gives ``g = 1``, ``o' = v``.
    """
    if not isinstance(state, SoftmaxRNNState):
        raise TypeError(f"state must be a SoftmaxRNNState, got {type(state).__name__}")
    check_tensor(s, "s")
    check_tensor(v, "v", min_ndim=1)
    if s.shape != state.m.shape or v.shape != state.o.shape:
        raise ValueError(
            f"s and v must have shapes {tuple(state.m.shape)} and {tuple(state.o.shape)}, "
            f"got {tuple(s.shape)} and {tuple(v.shape)}"
        )
    m_new = torch.maximum(state.m, s)
    b = torch.exp(s - m_new)
    l_new = torch.exp(state.m - m_new) * state.l + b
    g = b / l_new
    o_new = state.o + g.unsqueeze(-1) * (v - state.o)
    return SoftmaxRNNState(m_new, l_new, o_new), g


def online_softmax_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = True,
    block: int | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Softmax attention by the online-softmax recurrence over key blocks (Derived in P30).

    ``o_i = sum_j softmax_j(scale * q_i . k_j) v_j`` (over ``j <= i`` if ``causal``), computed
    without ever forming the ``n x n`` matrix: the state ``(m, l, o)`` of every query is
    updated block by block,

        m' = max(m, max_j s_j),  l' = e^{m - m'} l + sum_j e^{s_j - m'},
        o' = (e^{m - m'} l / l') o + sum_j (e^{s_j - m'} / l') v_j.

    ``block=None`` adds one key per step: this *is* the RNN of P30, run for all queries in
    parallel. ``block=B`` adds ``B`` keys per step, as FlashAttention does. Vectorised over
    batch and queries; the loop is over key blocks only. With ``causal=True`` the queries
    before a block are skipped (their state would not change).

    Shapes: ``q (..., n_q, d)``, ``k (..., n_k, d)``, ``v (..., n_k, d_v)`` -> ``(..., n_q, d_v)``;
    ``causal`` requires ``n_q == n_k``. ``scale`` defaults to ``1/sqrt(d)`` as in
    ``torch.nn.functional.scaled_dot_product_attention``.
    """
    _check_qkv(q, k, v)
    if not isinstance(causal, bool):
        raise TypeError(f"causal must be a bool, got {type(causal).__name__}")
    b = 1 if block is None else check_int(block, "block", ge=1)
    n_q, n_k = q.shape[-2], k.shape[-2]
    if causal and n_q != n_k:
        raise ValueError(f"causal=True needs as many queries as keys, got n_q={n_q}, n_k={n_k}")
    if n_k == 0:
        raise ValueError("k must have at least one key")
    c = _scale(scale, q.shape[-1])
    batch = q.shape[:-2]
    m = torch.full((*batch, n_q), -math.inf, dtype=q.dtype, device=q.device)
    l = torch.zeros_like(m)
    o = q.new_zeros(*batch, n_q, v.shape[-1])
    pos = torch.arange(n_q, device=q.device)
    for start in range(0, n_k, b):
        stop = min(start + b, n_k)
        rows = start if causal else 0           # queries before the block see none of its keys
        qs = q[..., rows:, :]
        s = c * (qs @ k[..., start:stop, :].transpose(-1, -2))            # (..., n_q - rows, B)
        if causal:
            keep = pos[start:stop].unsqueeze(0) <= pos[rows:].unsqueeze(1)
            s = s.masked_fill(~keep, -math.inf)
        m_old, l_old, o_old = m[..., rows:], l[..., rows:], o[..., rows:, :]
        m_new = torch.maximum(m_old, s.amax(-1))                          # finite: key `rows` is always visible
        p = torch.exp(s - m_new.unsqueeze(-1))
        carry = torch.exp(m_old - m_new) * l_old
        l_new = carry + p.sum(-1)
        o_new = (carry / l_new).unsqueeze(-1) * o_old + (p @ v[..., start:stop, :]) / l_new.unsqueeze(-1)
        if rows:
            m = torch.cat([m[..., :rows], m_new], dim=-1)
            l = torch.cat([l[..., :rows], l_new], dim=-1)
            o = torch.cat([o[..., :rows, :], o_new], dim=-2)
        else:
            m, l, o = m_new, l_new, o_new
    return o


def softmax_attention_as_rnn(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    scale: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the softmax-attention RNN of one fixed query over a key/value stream (Derived in P30).

    For the query ``q`` and keys ``k_1..k_n`` in the given order, returns the trajectory
    ``o_j = sum_{i<=j} e^{s_i} v_i / sum_{i<=j} e^{s_i}`` (``s_i = scale * q . k_i``) for
    ``j = 1..n`` and the gates ``g_j = e^{s_j} / sum_{i<=j} e^{s_i}``, computed by
    :func:`softmax_rnn_step`. The last row ``o_n`` is attention of ``q`` over all ``n`` keys;
    ``g_1 = 1``, and the weight of key ``i`` in ``o_n`` is ``g_i prod_{j>i} (1 - g_j)``.

    Shapes: ``q (..., d)``, ``k (..., n, d)``, ``v (..., n, d_v)`` -> ``o (..., n, d_v)``,
    ``g (..., n)``. Sequential over the ``n`` keys (it is the RNN), vectorised over the batch.
    """
    check_tensor(q, "q", min_ndim=1)
    _check_qkv(q.unsqueeze(-2), k, v)
    if k.shape[-2] == 0:
        raise ValueError("k must have at least one key")
    s = _scale(scale, q.shape[-1]) * (k @ q.unsqueeze(-1)).squeeze(-1)    # (..., n)
    state = softmax_rnn_init(q, v.shape[-1])
    outs, gates = [], []
    for j in range(k.shape[-2]):
        state, g = softmax_rnn_step(state, s[..., j], v[..., j, :])
        outs.append(state.o)
        gates.append(g)
    return torch.stack(outs, dim=-2), torch.stack(gates, dim=-1)


def linear_attention_rnn(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    decay: float | torch.Tensor | None = None,
    return_state: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Causal (decayed) linear attention run as an RNN with a constant-size state (Derived in P30).

        S_t = gamma_t S_{t-1} + k_t v_t^T,   o_t = S_t^T q_t,   S_0 = 0,

    i.e. ``o_t = sum_{j<=t} (prod_{j<i<=t} gamma_i) (q_t . k_j) v_j``, the matrix form
    ``(Q K^T * D) V`` with the causal decay mask ``D``. ``decay=None`` means ``gamma = 1``
    (plain linear attention), a float in ``(0, 1]`` a fixed decay (RetNet-style), a tensor of
    shape ``(..., n)`` with entries in ``[0, 1]`` a gate per step. Feature maps (``elu + 1``
    etc.) and normalisation are left to the caller: pass ``phi(q)``, ``phi(k)``.

    Shapes: ``q, k (..., n, d)``, ``v (..., n, d_v)`` -> ``(..., n, d_v)``; with
    ``return_state=True`` also the final state ``S_n`` of shape ``(..., d, d_v)``, whose size
    does not depend on ``n``. Sequential over ``n`` (the RNN form), vectorised over the batch.
    """
    _check_qkv(q, k, v)
    if q.shape[-2] != k.shape[-2]:
        raise ValueError(f"q and k must have the same length, got {q.shape[-2]} and {k.shape[-2]}")
    n = q.shape[-2]
    if decay is None:
        gam = None
    elif isinstance(decay, torch.Tensor):
        check_tensor(decay, "decay")
        if decay.shape != q.shape[:-1]:
            raise ValueError(f"decay must have shape {tuple(q.shape[:-1])}, got {tuple(decay.shape)}")
        if bool(((decay < 0) | (decay > 1)).any()):
            raise ValueError("decay must lie in [0, 1]")
        gam = decay.to(dtype=q.dtype, device=q.device)
    else:
        gam = check_real(decay, "decay", gt=0.0, le=1.0)
    S = q.new_zeros(*q.shape[:-2], q.shape[-1], v.shape[-1])
    outs = []
    for t in range(n):
        if gam is not None:
            S = S * (gam[..., t, None, None] if isinstance(gam, torch.Tensor) else gam)
        S = S + k[..., t, :, None] * v[..., t, None, :]
        outs.append((q[..., t, None, :] @ S).squeeze(-2))
    out = torch.stack(outs, dim=-2) if outs else q.new_zeros(*q.shape[:-1], v.shape[-1])
    return (out, S) if return_state else out


class AttentionLayer(NamedTuple):
    """Weights of one layer of :func:`attention_stack`: four ``(d, d)`` matrices (P30)."""

    w_q: torch.Tensor
    w_k: torch.Tensor
    w_v: torch.Tensor
    w_o: torch.Tensor


def _check_layers(layers: object, x: torch.Tensor) -> list[AttentionLayer]:
    if not isinstance(layers, Sequence) or len(layers) == 0:
        raise ValueError("layers must be a non-empty sequence of AttentionLayer")
    d = x.shape[-1]
    out = []
    for i, layer in enumerate(layers):
        if not isinstance(layer, AttentionLayer):
            raise TypeError(f"layers[{i}] must be an AttentionLayer, got {type(layer).__name__}")
        for name, w in layer._asdict().items():
            check_tensor(w, f"layers[{i}].{name}", ndim=2)
            if w.shape != (d, d) or w.dtype != x.dtype or w.device != x.device:
                raise ValueError(
                    f"layers[{i}].{name} must be a ({d}, {d}) tensor of x's dtype and device, "
                    f"got {tuple(w.shape)} {w.dtype} {w.device}"
                )
        out.append(layer)
    return out


def attention_stack(x: torch.Tensor, layers: Sequence[AttentionLayer]) -> torch.Tensor:
    """A toy multi-layer causal attention model, evaluated the usual parallel way (P30).

    Layer ``l`` maps hidden states ``H`` (``(n, d)``) to
    ``H + tanh(Attn(H W_q, H W_k, H W_v) W_o)`` with causal softmax attention (scale
    ``1/sqrt(d)``, ``torch.nn.functional.scaled_dot_product_attention``). Keys and values of
    every layer are computed once and kept: ``2 n d`` floats per layer, the KV cache.

    Shapes: ``x (..., n, d)`` -> ``(..., n, d)``.
    """
    check_tensor(x, "x", min_ndim=2)
    h = x
    for layer in _check_layers(layers, x):
        a = torch.nn.functional.scaled_dot_product_attention(h @ layer.w_q, h @ layer.w_k, h @ layer.w_v, is_causal=True)
        h = h + torch.tanh(a @ layer.w_o)
    return h


def attention_stack_recompute(
    x: torch.Tensor, layers: Sequence[AttentionLayer], *, positions: Sequence[int] | None = None
) -> tuple[torch.Tensor, dict[str, int]]:
    """Evaluate :func:`attention_stack` with memory independent of the length (Derived in P30).

    No keys or values are stored. The hidden state of layer ``l`` at position ``i`` is
    computed by running the softmax RNN of its query over positions ``j = i, i-1, ..., 1``
    (newest first, as in the post), where each key/value of layer ``l`` is obtained by
    recomputing the hidden state of layer ``l - 1`` at position ``j`` from the input ``x``,
    recursively. ``x`` plays the role of the read-only input ("the hard disk"); what is held
    in working memory is a few vectors per layer.

    Returns the outputs at ``positions`` (default: all) and counters:

    - ``reads``: rows of ``x`` read, i.e. layer-0 evaluations. For ``N`` layers the output at
      0-based position ``i`` needs ``C(i + N, N)`` reads, all ``n`` positions
      ``C(n + N, N + 1)``: polynomial of degree ``N + 1`` in ``n``.
    - ``peak_floats``: the largest number of floats held at once by the recursion's frames
      (each frame: its input row, query, ``m``, ``l``, ``o`` and the current key/value row).
    - ``max_depth``: deepest recursion (``N + 1`` frames including the read).

    Deliberately slow (Python recursion): meant for ``n`` of a few dozen and ``N <= 3``.
    Shapes: ``x (n, d)`` (no batch dimension) -> ``(len(positions), d)``.
    """
    check_tensor(x, "x", ndim=2)
    layers = _check_layers(layers, x)
    n, d = x.shape
    if positions is None:
        positions = range(n)
    pos = [check_int(p, "positions", ge=0, le=n - 1) for p in positions]
    c = 1.0 / math.sqrt(d)
    stats = {"reads": 0, "peak_floats": 0, "max_depth": 0}
    held = [0] * (len(layers) + 1)                   # floats held by the frame at each level

    def hold(level: int, floats: int) -> None:
        held[level] = floats
        stats["peak_floats"] = max(stats["peak_floats"], sum(held))

    def hidden(level: int, i: int, depth: int) -> torch.Tensor:
        stats["max_depth"] = max(stats["max_depth"], depth)
        if level == 0:
            stats["reads"] += 1
            row = x[i]
            hold(0, d)
            hold(0, 0)                               # handed to the caller, which counts it
            return row
        h_i = hidden(level - 1, i, depth + 1)
        layer = layers[level - 1]
        q = h_i @ layer.w_q
        state = softmax_rnn_init(q, d)
        base = 3 * d + 2                             # h_i, q, and the state (m, l, o)
        hold(level, base)
        for j in range(i, -1, -1):
            h_j = h_i if j == i else hidden(level - 1, j, depth + 1)
            hold(level, base + 3 * d)                # h_j, k_j, v_j while the step runs
            kj, vj = h_j @ layer.w_k, h_j @ layer.w_v
            state, _ = softmax_rnn_step(state, c * (q @ kj), vj)
            hold(level, base)
        hold(level, 0)
        return h_i + torch.tanh(state.o @ layer.w_o)

    out = torch.stack([hidden(len(layers), i, 1) for i in pos]) if pos else x.new_zeros(0, d)
    return out, stats
