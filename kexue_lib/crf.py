"""Linear-chain conditional random fields: forward algorithm, Viterbi, marginals (P14).

A linear-chain CRF scores a tag path ``y = (y_0, ..., y_{L-1})`` for a sequence with
per-position emission scores ``E[t, k]`` (from an encoder) and a transition matrix
``A[i, j]`` (the score of tag ``i`` followed by tag ``j``)::

    s(y) = start[y_0] + sum_t E[t, y_t] + sum_t A[y_t, y_{t+1}] + end[y_{L-1}]
    P(y | x) = exp(s(y)) / Z,    log Z = logsumexp over all K**L paths of s(y)

``log Z`` is computed by the forward algorithm, a loop over time only (``L`` steps, each
batched over sequences: a ``(B, K) @ (K, K)`` product in shifted exponential space when the
transitions are finite and moderate, else a log-sum-exp over a ``(B, K, K)`` tensor; both
exact up to rounding). The best path comes from the Viterbi algorithm (batched max/argmax,
then a batched backtrack). Gradients come from autograd.
The per-position and per-transition posteriors come from an explicit forward-backward
pass (``crf_marginals``), so that the identity

    d(-log P(y* | x)) / dA[i, j] = E_{y ~ P}[#(i -> j in y)] - #(i -> j in y*)

can be checked against autograd instead of being computed by it.

Conventions: tensors are batch-first, ``emissions`` is ``(B, L, K)``, ``tags`` is
``(B, L)`` (``torch.long``), ``mask`` is ``(B, L)`` (``True`` on real positions; each row
must be a prefix of ones with at least one one). ``transitions`` is ``(K, K)`` or one
matrix per sequence, ``(B, K, K)``; it may hold ``-inf`` for forbidden transitions.
``start_transitions``/``end_transitions`` are optional ``(K,)`` (or ``(B, K)``) vectors;
bert4keras's CRF has none, ``pytorch-crf`` has both.

Derived in P14 ("Your CRF layer's learning rate may not be large enough").
"""
from __future__ import annotations

import itertools
import math

import torch
from torch import nn

from ._checks import check_int, check_real, check_tensor

__all__ = [
    "BMES_TAGS",
    "bmes_allowed_mask",
    "sample_bmes_tags",
    "transition_counts",
    "crf_score",
    "crf_log_partition",
    "crf_nll",
    "crf_marginals",
    "viterbi_decode",
    "brute_force_log_partition",
    "brute_force_decode",
    "LinearChainCRF",
]

#: The four character tags of Chinese word segmentation, in the order used here:
#: single-character word, begin, middle, end of a multi-character word.
BMES_TAGS = ("s", "b", "m", "e")

_REDUCTIONS = ("none", "sum", "mean", "token_mean")


# ----------------------------------------------------------------------------- validation
def _check_emissions(emissions: object) -> torch.Tensor:
    e = check_tensor(emissions, "emissions", ndim=3)
    if e.shape[1] < 1 or e.shape[2] < 1:
        raise ValueError(f"emissions must have at least one position and one tag, got shape {tuple(e.shape)}")
    return e


def _check_scores(x: object, name: str, e: torch.Tensor, shapes: tuple[tuple[int, ...], ...]) -> torch.Tensor:
    """Transition-like scores: floating, same dtype/device as emissions, no NaN or +inf."""
    x = check_tensor(x, name, floating=True, finite=False)
    if tuple(x.shape) not in shapes:
        raise ValueError(f"{name} must have shape {' or '.join(str(s) for s in shapes)}, got {tuple(x.shape)}")
    if x.dtype != e.dtype:
        raise TypeError(f"{name} must have the dtype of emissions ({e.dtype}), got {x.dtype}")
    if x.device != e.device:
        raise ValueError(f"{name} must be on the device of emissions ({e.device}), got {x.device}")
    if x.numel() and bool((torch.isnan(x) | (x == math.inf)).any()):
        raise ValueError(f"{name} contains NaN or +inf (-inf is allowed for forbidden transitions)")
    return x


def _prepare(emissions, transitions, mask, start, end):
    """Validate the common arguments; return (e, A as (1|B, K, K), mask or None, start, end)."""
    e = _check_emissions(emissions)
    B, L, K = e.shape
    A = _check_scores(transitions, "transitions", e, ((K, K), (B, K, K)))
    if A.ndim == 2:
        A = A.unsqueeze(0)
    if start is not None:
        start = _check_scores(start, "start_transitions", e, ((K,), (B, K)))
    if end is not None:
        end = _check_scores(end, "end_transitions", e, ((K,), (B, K)))
    if mask is not None:
        if not isinstance(mask, torch.Tensor):
            raise TypeError(f"mask must be a torch.Tensor, got {type(mask).__name__}")
        if tuple(mask.shape) != (B, L):
            raise ValueError(f"mask must have shape {(B, L)}, got {tuple(mask.shape)}")
        if mask.dtype != torch.bool:
            if mask.is_floating_point() or mask.is_complex():
                raise TypeError(f"mask must be a bool or integer tensor, got {mask.dtype}")
            if bool(((mask != 0) & (mask != 1)).any()):
                raise ValueError("mask must contain only 0 and 1")
            mask = mask != 0
        if mask.device != e.device:
            raise ValueError(f"mask must be on the device of emissions ({e.device}), got {mask.device}")
        if not bool(mask[:, 0].all()):
            raise ValueError("mask: every sequence must have at least one position (mask[:, 0] all True)")
        if L > 1 and bool((mask[:, 1:] & ~mask[:, :-1]).any()):
            raise ValueError("mask: each row must be a prefix of ones (left-aligned sequences)")
        if bool(mask.all()):
            mask = None                                # nothing is padded: take the fast path
    return e, A, mask, start, end


def _check_tags(tags: object, e: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if not isinstance(tags, torch.Tensor):
        raise TypeError(f"tags must be a torch.Tensor, got {type(tags).__name__}")
    if tags.dtype != torch.long:
        raise TypeError(f"tags must have dtype torch.long, got {tags.dtype}")
    if tuple(tags.shape) != tuple(e.shape[:2]):
        raise ValueError(f"tags must have shape {tuple(e.shape[:2])}, got {tuple(tags.shape)}")
    if tags.device != e.device:
        raise ValueError(f"tags must be on the device of emissions ({e.device}), got {tags.device}")
    real = tags if mask is None else tags[mask]
    if real.numel() and bool(((real < 0) | (real >= e.shape[2])).any()):
        raise ValueError(f"tags must lie in [0, {e.shape[2]}) at unmasked positions")
    if mask is not None:                                # padded positions may hold anything
        tags = tags.masked_fill(~mask, 0)
    return tags


def _lengths(mask: torch.Tensor | None, B: int, L: int, device) -> torch.Tensor:
    if mask is None:
        return torch.full((B,), L, dtype=torch.long, device=device)
    return mask.sum(1)


def _at_last(x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """x is (B, L, ...) ; return x[b, lengths[b] - 1] (or x[:, -1] when lengths is None)."""
    if lengths is None:
        return x[:, -1]
    idx = (lengths - 1).view(-1, 1, *([1] * (x.ndim - 2))).expand(-1, 1, *x.shape[2:])
    return x.gather(1, idx).squeeze(1)


# ----------------------------------------------------------------------------- BMES helpers
def bmes_allowed_mask(*, device: torch.device | str | None = None) -> torch.Tensor:
    """The legal transitions of (s, b, m, e) tagging as a ``(4, 4)`` bool matrix.

    Row = previous tag, column = next tag, in the order of ``BMES_TAGS``. A word is either a
    single character (``s``) or ``b m* e``; so ``s`` and ``e`` (a word just ended) may be
    followed only by ``s`` or ``b``, and ``b``, ``m`` (inside a word) only by ``m`` or ``e``.
    Derived in P14.
    """
    ends = torch.tensor([True, False, False, True], device=device)     # s and e close a word
    starts = torch.tensor([True, True, False, False], device=device)   # s and b open one
    return ends[:, None] == starts[None, :]


def sample_bmes_tags(
    batch: int,
    length: int,
    *,
    max_word_len: int = 4,
    gen: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Random (s, b, m, e) tag sequences of a fixed length, as ``(batch, length)`` long.

    Word lengths are drawn uniformly from ``1..max_word_len`` (on the CPU with ``gen``,
    then moved to ``device``); the last word is cut at ``length``, and a cut word is
    tagged as if it ended there, so every row is a legal BMES sequence. Vectorised: word
    boundaries come from a cumulative sum and ``torch.searchsorted``. Used by P14.
    """
    batch = check_int(batch, "batch", ge=1)
    length = check_int(length, "length", ge=1)
    max_word_len = check_int(max_word_len, "max_word_len", ge=1)
    if gen is None:
        gen = torch.Generator().manual_seed(0)
    wl = torch.randint(1, max_word_len + 1, (batch, length), generator=gen)   # at most `length` words
    ends = wl.cumsum(1)                                     # exclusive end of each word
    pos = torch.arange(length).expand(batch, length).contiguous()
    w = torch.searchsorted(ends, pos, right=True)           # word index of each position
    end = ends.gather(1, w).clamp(max=length)                # the cut word ends at `length`
    begin = ends.gather(1, w) - wl.gather(1, w)
    first, last = pos == begin, pos == end - 1
    tags = torch.full((batch, length), 2, dtype=torch.long)                  # m
    tags[first & ~last] = 1                                                    # b
    tags[~first & last] = 3                                                    # e
    tags[first & last] = 0                                                     # s
    return tags.to(device)


def transition_counts(tags: torch.Tensor, num_tags: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """How often each transition occurs in each tag path: ``(B, K, K)`` with ``[b, i, j] = #(i -> j)``.

    ``tags`` is ``(B, L)`` long; only pairs of positions that are both unmasked count.
    Returned in ``torch.float64`` on the device of ``tags``. Used in P14 for the gradient
    identity (expected minus observed counts).
    """
    num_tags = check_int(num_tags, "num_tags", ge=1)
    if not isinstance(tags, torch.Tensor) or tags.dtype != torch.long or tags.ndim != 2:
        raise TypeError("tags must be a (B, L) torch.long tensor")
    B, L = tags.shape
    pair = tags[:, :-1] * num_tags + tags[:, 1:]
    w = torch.ones(B, max(L - 1, 0), dtype=torch.float64, device=tags.device)
    if mask is not None:
        w = w * mask[:, 1:].to(torch.float64)
    out = torch.zeros(B, num_tags * num_tags, dtype=torch.float64, device=tags.device)
    return out.scatter_add_(1, pair.clamp(0, num_tags * num_tags - 1), w).view(B, num_tags, num_tags)


# ----------------------------------------------------------------------------- core algorithms
def _logsumexp_mid(x: torch.Tensor, guard: bool) -> torch.Tensor:
    """``torch.logsumexp(x, dim=1)`` for a ``(B, K, K)`` tensor, in fewer, cheaper kernels.

    The shift ``m = max_i x[:, i, :]`` is exact per output column (so nothing overflows or
    underflows more than in ``torch.logsumexp``) and is detached: the value
    ``log sum_i exp(x_i - m) + m`` does not depend on ``m``, so autograd still returns the
    softmax of ``x`` as its gradient. On small CPU tensors this is several times faster
    than the built-in. ``guard=True`` (needed only when ``-inf`` scores are present) clamps
    the shift of an all-``-inf`` column to the lowest finite float, so that column gives
    ``-inf`` instead of NaN.
    """
    m = x.detach().max(dim=1).values
    if guard:
        m = m.clamp_min(torch.finfo(m.dtype).min)
    return (x - m.unsqueeze(1)).exp().sum(1).log() + m


#: Largest column range ``max_i A[i, j] - min_i A[i, j]`` for which the forward algorithm
#: takes its matrix-product path, by dtype (``exp(-range)`` stays far above underflow).
_MATMUL_RANGE = {torch.float16: 5.0, torch.bfloat16: 30.0, torch.float32: 30.0, torch.float64: 300.0}


def _forward_alphas(e: torch.Tensor, A: torch.Tensor, start: torch.Tensor | None) -> torch.Tensor:
    """alpha[b, t, j] = log-sum of exp(score) over prefixes y_0..y_t ending in j; (B, L, K).

    The recursion runs over time only (L - 1 steps, no masking: padded positions are
    computed too and never used; the caller picks each sequence's last alpha with one
    gather)::

        alpha_t[j] = logsumexp_i(alpha_{t-1}[i] + A[i, j]) + E_t[j]

    Two exact ways to evaluate one step, chosen once per call:

    * matrix-product path, when ``A`` is finite and every column's range is at most
      ``_MATMUL_RANGE`` (30 in float32): with ``m = max_i alpha[i]`` and
      ``c_j = max_i A[i, j]``, ``alpha_t[j] = m + c_j + log(sum_i exp(alpha[i] - m) exp(A[i, j] - c_j))``,
      a ``(B, K) @ (K, K)`` product. The term of ``i = argmax alpha`` is at least
      ``exp(-range_j)``, so nothing underflows and the relative rounding is that of
      ``torch.logsumexp``;
    * log-sum-exp path otherwise (``-inf`` or very spread transitions): a batched
      log-sum-exp over the ``(B, K, K)`` tensor ``alpha[:, :, None] + A``, shifted by its
      exact per-column maximum.
    """
    em = e.unbind(1)
    a = em[0] if start is None else em[0] + start
    out = [a]
    if len(em) == 1:
        return a.unsqueeze(1)
    finite = not bool(torch.isinf(A).any())
    if finite and float((A.detach().amax(-2) - A.detach().amin(-2)).max()) <= _MATMUL_RANGE.get(A.dtype, 5.0):
        c = A.detach().amax(-2, keepdim=True)                         # (1|B, 1, K), value-neutral
        P = (A - c).exp()
        c = c.squeeze(-2)
        P2 = P[0] if P.shape[0] == 1 else None
        for et in em[1:]:
            m = a.detach().amax(-1, keepdim=True)                      # (B, 1), value-neutral
            w = (a - m).exp()
            s = w @ P2 if P2 is not None else (w.unsqueeze(2) * P).sum(1)   # bmm is slow for tiny K
            a = s.log() + (m + c) + et
            out.append(a)
    else:
        guard = not finite or (start is not None and bool(torch.isinf(start).any()))
        for et in em[1:]:
            a = _logsumexp_mid(a.unsqueeze(2) + A, guard) + et
            out.append(a)
    return torch.stack(out, 1)


def _score(e, tags, A, mask, start, end) -> torch.Tensor:
    B, L, K = e.shape
    emit = e.gather(2, tags.unsqueeze(2)).squeeze(2)                         # (B, L)
    pair = tags[:, :-1] * K + tags[:, 1:]                                     # (B, L-1)
    trans = A.reshape(A.shape[0], K * K).expand(B, K * K).gather(1, pair)     # (B, L-1)
    if mask is not None:                  # where, not multiply: a forbidden (-inf) pair may sit in padding
        emit = torch.where(mask, emit, torch.zeros((), dtype=e.dtype, device=e.device))
        trans = torch.where(mask[:, 1:], trans, torch.zeros((), dtype=e.dtype, device=e.device))
    score = emit.sum(1) + trans.sum(1)
    if start is not None:
        score = score + start.expand(B, K).gather(1, tags[:, :1]).squeeze(1)
    if end is not None:
        last = _at_last(tags, None if mask is None else mask.sum(1))
        score = score + end.expand(B, K).gather(1, last.unsqueeze(1)).squeeze(1)
    return score


def crf_log_partition(
    emissions: torch.Tensor,
    transitions: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    start_transitions: torch.Tensor | None = None,
    end_transitions: torch.Tensor | None = None,
) -> torch.Tensor:
    """Log-partition function ``log Z`` of a linear-chain CRF by the forward algorithm.

    The recursion, for t = 1 .. L-1 (one batched step each, see the module notes)::

        alpha_0 = start + E_0
        alpha_t[j] = logsumexp_i(alpha_{t-1}[i] + A[i, j]) + E_t[j]
        log Z = logsumexp_j(alpha_{L-1}[j] + end[j])

    equals the log-sum-exp of the path score over all ``K**L`` paths. Differentiable by
    autograd. Derived in P14.

    Parameters
    ----------
    emissions : torch.Tensor
        ``(B, L, K)`` emission scores.
    transitions : torch.Tensor
        ``(K, K)`` or ``(B, K, K)``; ``[i, j]`` scores tag ``i`` followed by tag ``j``.
    mask : torch.Tensor, optional
        ``(B, L)`` bool (or 0/1 integer), prefix of ones per row; ``None`` = no padding.
    start_transitions, end_transitions : torch.Tensor, optional
        ``(K,)`` or ``(B, K)`` scores of the first and last tag.

    Returns
    -------
    torch.Tensor
        ``(B,)`` log-partition values.
    """
    e, A, mask, start, end = _prepare(emissions, transitions, mask, start_transitions, end_transitions)
    last = _at_last(_forward_alphas(e, A, start), None if mask is None else mask.sum(1))
    if end is not None:
        last = last + end
    return torch.logsumexp(last, dim=-1)


def crf_score(
    emissions: torch.Tensor,
    tags: torch.Tensor,
    transitions: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    start_transitions: torch.Tensor | None = None,
    end_transitions: torch.Tensor | None = None,
) -> torch.Tensor:
    """Score ``s(y)`` of given tag paths, fully vectorised (no loop over time).

    ``s(y) = start[y_0] + sum_t E[t, y_t] + sum_t A[y_t, y_{t+1}] + end[y_{L-1}]``, sums over
    unmasked positions only. ``emissions`` ``(B, L, K)``, ``tags`` ``(B, L)`` long,
    ``transitions`` ``(K, K)`` or ``(B, K, K)``; returns ``(B,)``. Derived in P14.
    """
    e, A, mask, start, end = _prepare(emissions, transitions, mask, start_transitions, end_transitions)
    return _score(e, _check_tags(tags, e, mask), A, mask, start, end)


def crf_nll(
    emissions: torch.Tensor,
    tags: torch.Tensor,
    transitions: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    start_transitions: torch.Tensor | None = None,
    end_transitions: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Negative log-likelihood ``log Z - s(y)`` of the gold paths ``tags``.

    Its gradient with respect to ``A[i, j]`` is the expected count of the transition
    ``i -> j`` under the model minus its count in ``tags`` (checked in P14's notebook and
    tests). ``reduction``: ``'none'`` (``(B,)``), ``'sum'``, ``'mean'`` (over sequences)
    or ``'token_mean'`` (sum divided by the number of unmasked positions). Derived in P14.
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    e, A, m, start, end = _prepare(emissions, transitions, mask, start_transitions, end_transitions)
    tags = _check_tags(tags, e, m)
    lengths = None if m is None else m.sum(1)
    last = _at_last(_forward_alphas(e, A, start), lengths)
    log_z = torch.logsumexp(last if end is None else last + end, dim=-1)
    nll = log_z - _score(e, tags, A, m, start, end)
    if reduction == "none":
        return nll
    if reduction == "sum":
        return nll.sum()
    if reduction == "mean":
        return nll.mean()
    n_tok = e.shape[0] * e.shape[1] if m is None else m.sum()
    return nll.sum() / n_tok


def crf_marginals(
    emissions: torch.Tensor,
    transitions: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    start_transitions: torch.Tensor | None = None,
    end_transitions: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior marginals by an explicit forward-backward pass (no autograd).

    With the forward messages ``alpha`` of ``crf_log_partition`` and the backward ones::

        beta_{L-1}[i] = end[i],   beta_t[i] = logsumexp_j(A[i, j] + E_{t+1}[j] + beta_{t+1}[j])

    the marginals are ``P(y_t = i) = exp(alpha_t[i] + beta_t[i] - log Z)`` and
    ``P(y_t = i, y_{t+1} = j) = exp(alpha_t[i] + A[i, j] + E_{t+1}[j] + beta_{t+1}[j] - log Z)``.
    Summing the second over ``t`` gives the expected transition counts. Derived in P14.

    Returns
    -------
    tuple of torch.Tensor
        ``(node, pair)``: ``node`` is ``(B, L, K)``, ``pair`` is ``(B, L-1, K, K)``; both are
        zero at padded positions (for ``pair``: where position ``t+1`` is padded).
    """
    e, A, mask, start, end = _prepare(emissions, transitions, mask, start_transitions, end_transitions)
    B, L, K = e.shape
    with torch.no_grad():
        alphas = _forward_alphas(e, A, start)
        beta = torch.zeros(B, K, dtype=e.dtype, device=e.device) if end is None else end.expand(B, K)
        betas = [beta]
        em = e.unbind(1)
        for t in range(L - 2, -1, -1):
            new = torch.logsumexp(A + (em[t + 1] + beta).unsqueeze(1), dim=2)
            beta = new if mask is None else torch.where(mask[:, t + 1, None], new, beta)
            betas.append(beta)
        betas = torch.stack(betas[::-1], 1)                                  # (B, L, K)
        log_z = torch.logsumexp(alphas[:, 0] + betas[:, 0], dim=-1)          # same for every t
        node = torch.exp(alphas + betas - log_z[:, None, None])
        pair = torch.exp(alphas[:, :-1, :, None] + A.unsqueeze(1)
                         + (e[:, 1:] + betas[:, 1:]).unsqueeze(2) - log_z[:, None, None, None])
        if mask is not None:              # where, not multiply: padded values may overflow
            zero = torch.zeros((), dtype=e.dtype, device=e.device)
            node = torch.where(mask[:, :, None], node, zero)
            pair = torch.where(mask[:, 1:, None, None], pair, zero)
    return node, pair


def viterbi_decode(
    emissions: torch.Tensor,
    transitions: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    start_transitions: torch.Tensor | None = None,
    end_transitions: torch.Tensor | None = None,
    pad_tag: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Highest-scoring tag path of each sequence (Viterbi), batched over sequences.

    Max-product version of the forward recursion, with back-pointers::

        delta_t[j] = max_i(delta_{t-1}[i] + A[i, j]) + E_t[j],   psi_t[j] = argmax_i(...)

    then a backtrack ``y_{t-1} = psi_t[y_t]`` done for all sequences at once (one gather
    per step, ``take`` on flat back-pointers). The forward loop ignores the mask; each
    sequence's final ``delta`` is picked at its own last position by one gather, and the
    back-pointers of padded steps are replaced by the identity in one ``torch.where``, so
    no Python code branches on a sequence.
    Runs under ``torch.no_grad``. Derived in P14.

    Returns
    -------
    tuple of torch.Tensor
        ``(tags, score)``: ``(B, L)`` long best paths (``pad_tag`` at padded positions) and
        ``(B,)`` their scores ``s(y)``.
    """
    pad_tag = check_int(pad_tag, "pad_tag")
    e, A, mask, start, end = _prepare(emissions, transitions, mask, start_transitions, end_transitions)
    B, L, K = e.shape
    with torch.no_grad():
        em = e.unbind(1)
        score = em[0] if start is None else em[0] + start
        scores, history = [score], []
        for et in em[1:]:
            best, idx = (score.unsqueeze(2) + A).max(dim=1)
            score = best + et
            if mask is not None:
                scores.append(score)
            history.append(idx)
        lengths = None if mask is None else mask.sum(1)
        final = _at_last(torch.stack(scores, 1), lengths) if lengths is not None else score
        if end is not None:
            final = final + end
        best_score, cur = final.max(dim=1)
        # back-pointers as flat indices b*K + i, the identity over padded steps, so that each
        # backtrack step is one ``take`` for all sequences and padding is walked through
        offs = torch.arange(B, device=e.device) * K
        cur = cur + offs
        path = [cur]
        if L > 1:
            G = torch.stack(history, 0).add_(offs.unsqueeze(-1))             # (L-1, B, K)
            if mask is not None:                                             # contiguous operands
                ident = torch.arange(B * K, device=e.device).view(B, K)       # keep G contiguous
                G = torch.where(mask[:, 1:].t().contiguous().unsqueeze(-1), G, ident)
            G = G.view(L - 1, B * K)
            for t in range(L - 2, -1, -1):                                   # y_t = psi_{t+1}[y_{t+1}]
                cur = G[t].take(cur)
                path.append(cur)
        tags = torch.stack(path[::-1], 1) - offs.unsqueeze(1)
        if mask is not None:
            tags = tags.masked_fill(~mask, pad_tag)
    return tags, best_score


# ----------------------------------------------------------------------------- brute force
_MAX_PATHS = 2_000_000


def _all_paths(K: int, L: int, device) -> torch.Tensor:
    if K**L > _MAX_PATHS:
        raise ValueError(f"brute force over K**L = {K}**{L} paths is too large (limit {_MAX_PATHS})")
    return torch.tensor(list(itertools.product(range(K), repeat=L)), dtype=torch.long, device=device).view(-1, L)


def _brute_scores(emissions, transitions, mask, start, end):
    """Yield (b, paths (P, L_b), scores (P,)) for every sequence, enumerating all paths."""
    e, A, mask, start, end = _prepare(emissions, transitions, mask, start, end)
    B, L, K = e.shape
    lengths = _lengths(mask, B, L, e.device).tolist()
    for b in range(B):                     # reference code: a plain loop over sequences is fine
        n = lengths[b]
        paths = _all_paths(K, n, e.device)
        Ab = A[0] if A.shape[0] == 1 else A[b]
        s = e[b, torch.arange(n, device=e.device), paths].sum(1)
        if n > 1:
            s = s + Ab[paths[:, :-1], paths[:, 1:]].sum(1)
        if start is not None:
            s = s + start.expand(B, K)[b, paths[:, 0]]
        if end is not None:
            s = s + end.expand(B, K)[b, paths[:, -1]]
        yield b, paths, s


def brute_force_log_partition(
    emissions: torch.Tensor,
    transitions: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    start_transitions: torch.Tensor | None = None,
    end_transitions: torch.Tensor | None = None,
) -> torch.Tensor:
    """Reference ``log Z``: log-sum-exp of ``s(y)`` over all ``K**L`` paths, one sequence at a time.

    Same arguments as ``crf_log_partition``; only for tests (``K**L`` is capped at 2e6).
    """
    out = [torch.logsumexp(s, 0) for _, _, s in
           _brute_scores(emissions, transitions, mask, start_transitions, end_transitions)]
    return torch.stack(out)


def brute_force_decode(
    emissions: torch.Tensor,
    transitions: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    start_transitions: torch.Tensor | None = None,
    end_transitions: torch.Tensor | None = None,
    pad_tag: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference decoder: the argmax of ``s(y)`` over all ``K**L`` paths, one sequence at a time.

    Same arguments and returns as ``viterbi_decode``; only for tests.
    """
    e = _check_emissions(emissions)
    B, L, _ = e.shape
    tags = torch.full((B, L), int(pad_tag), dtype=torch.long, device=e.device)
    scores = torch.empty(B, dtype=e.dtype, device=e.device)
    for b, paths, s in _brute_scores(emissions, transitions, mask, start_transitions, end_transitions):
        k = int(torch.argmax(s))
        tags[b, : paths.shape[1]] = paths[k]
        scores[b] = s[k]
    return tags, scores


# ----------------------------------------------------------------------------- module
class LinearChainCRF(nn.Module):
    """A linear-chain CRF layer whose transitions can learn faster than the encoder.

    The transition matrix is stored reparameterised, ``A = lr_multiplier * raw`` with
    ``raw = A_init / lr_multiplier`` (as bert4keras does). Then ``dL/draw = lambda dL/dA``,
    so one optimizer step on ``raw`` moves ``A`` by ``lambda**2`` times the plain SGD step,
    or about ``lambda`` times the plain Adam step (exactly an Adam step with learning rate
    ``lambda * lr`` and ``eps / lambda``). One optimizer and one learning rate then train
    the encoder at ``lr`` and the CRF at a multiplied rate. Derived in P14.

    Parameters
    ----------
    num_tags : int
        Number of tags ``K``.
    lr_multiplier : float
        ``lambda > 0``; 1 means no reparameterisation.
    init : str
        ``'glorot_uniform'`` (Keras's default, uniform on ``+-sqrt(6 / (2K))``), ``'normal'``
        (std 0.1) or ``'zeros'``.
    allowed : torch.Tensor, optional
        ``(K, K)`` bool; forbidden transitions get score ``-inf`` (e.g. ``bmes_allowed_mask()``).
    start_end : bool
        Also learn start and end scores (as ``pytorch-crf``); bert4keras has none.
    generator : torch.Generator, optional
        CPU generator for the initial values (drawn in float64 on the CPU, then cast).
    device, dtype
        Where and in which dtype to create the parameters.
    """

    def __init__(
        self,
        num_tags: int,
        *,
        lr_multiplier: float = 1.0,
        init: str = "glorot_uniform",
        allowed: torch.Tensor | None = None,
        start_end: bool = False,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.num_tags = check_int(num_tags, "num_tags", ge=1)
        self.lr_multiplier = check_real(lr_multiplier, "lr_multiplier", gt=0)
        if init not in ("glorot_uniform", "normal", "zeros"):
            raise ValueError(f"init must be 'glorot_uniform', 'normal' or 'zeros', got {init!r}")
        self.init = init
        K = self.num_tags
        fk = dict(device=device, dtype=dtype if dtype is not None else torch.get_default_dtype())
        self.raw_transitions = nn.Parameter(torch.empty(K, K, **fk))
        if start_end:
            self.raw_start = nn.Parameter(torch.empty(K, **fk))
            self.raw_end = nn.Parameter(torch.empty(K, **fk))
        else:
            self.register_parameter("raw_start", None)
            self.register_parameter("raw_end", None)
        if allowed is not None:
            if not isinstance(allowed, torch.Tensor) or allowed.dtype != torch.bool:
                raise TypeError("allowed must be a bool torch.Tensor")
            if tuple(allowed.shape) != (K, K):
                raise ValueError(f"allowed must have shape {(K, K)}, got {tuple(allowed.shape)}")
            allowed = allowed.to(device=self.raw_transitions.device)
        self.register_buffer("allowed", allowed)
        self.reset_parameters(generator=generator)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Draw ``A_init`` and store ``raw = A_init / lr_multiplier`` (start/end start at 0)."""
        K, lam = self.num_tags, self.lr_multiplier
        if self.init == "glorot_uniform":
            bound = math.sqrt(6.0 / (K + K))
            a0 = (2 * torch.rand(K, K, generator=generator, dtype=torch.float64) - 1) * bound
        elif self.init == "normal":
            a0 = 0.1 * torch.randn(K, K, generator=generator, dtype=torch.float64)
        else:
            a0 = torch.zeros(K, K, dtype=torch.float64)
        with torch.no_grad():
            self.raw_transitions.copy_(a0 / lam)
            if self.raw_start is not None:
                self.raw_start.zero_()
                self.raw_end.zero_()

    @property
    def transitions(self) -> torch.Tensor:
        """The effective ``(K, K)`` transition scores ``lambda * raw`` (``-inf`` where forbidden)."""
        a = self.lr_multiplier * self.raw_transitions
        if self.allowed is not None:
            a = a.masked_fill(~self.allowed, -math.inf)
        return a

    @property
    def start_transitions(self) -> torch.Tensor | None:
        """Effective start scores ``lambda * raw_start`` (``None`` without ``start_end``)."""
        return None if self.raw_start is None else self.lr_multiplier * self.raw_start

    @property
    def end_transitions(self) -> torch.Tensor | None:
        """Effective end scores ``lambda * raw_end`` (``None`` without ``start_end``)."""
        return None if self.raw_end is None else self.lr_multiplier * self.raw_end

    def _kw(self) -> dict:
        return dict(start_transitions=self.start_transitions, end_transitions=self.end_transitions)

    def log_partition(self, emissions: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``(B,)`` log Z; see ``crf_log_partition``."""
        return crf_log_partition(emissions, self.transitions, mask, **self._kw())

    def nll(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor | None = None,
            *, reduction: str = "mean") -> torch.Tensor:
        """Negative log-likelihood of ``tags``; see ``crf_nll``."""
        return crf_nll(emissions, tags, self.transitions, mask, reduction=reduction, **self._kw())

    def forward(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor | None = None,
                *, reduction: str = "mean") -> torch.Tensor:
        """The training loss: the negative log-likelihood (``pytorch-crf`` returns its negative)."""
        return self.nll(emissions, tags, mask, reduction=reduction)

    def marginals(self, emissions: torch.Tensor, mask: torch.Tensor | None = None):
        """``(node, pair)`` posterior marginals; see ``crf_marginals``."""
        return crf_marginals(emissions, self.transitions, mask, **self._kw())

    def viterbi(self, emissions: torch.Tensor, mask: torch.Tensor | None = None, *, pad_tag: int = 0):
        """``(tags, score)`` best paths; see ``viterbi_decode``."""
        return viterbi_decode(emissions, self.transitions, mask, pad_tag=pad_tag, **self._kw())

    decode = viterbi

    def extra_repr(self) -> str:
        return f"num_tags={self.num_tags}, lr_multiplier={self.lr_multiplier:g}, init={self.init!r}"
