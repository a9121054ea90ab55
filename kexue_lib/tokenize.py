"""Random tokenization over a unigram vocabulary: Viterbi decoding, log Z, and exact sampling.

Derived in P24 ("Random tokenization revisited: from Viterbi Sampling to a perfect sampling
algorithm", https://kexue.fm/archives/9811).

A string ``text`` of length ``L`` and a vocabulary ``{token: log p(token)}`` define a
*lattice*: one edge ``(s, e)`` for every substring ``text[s:e]`` that is a token. A
segmentation is a path of edges from position 0 to position ``L``; its score is the sum of
its tokens' log-probabilities, and the target distribution is

    P(seg) = exp(alpha * score(seg)) / Z(alpha),    Z(alpha) = sum over all segmentations.

Everything here is batch-first over *draws*: the samplers return ``num_samples`` independent
segmentations at once as a boolean boundary mask of shape ``[num_samples, L + 1]``. The
dynamic programmes over positions are sequential scans by nature (each position needs the
previous ones); every step is vectorised over the edges ending there or over the draws.

Samplers (``method`` of :func:`sample`):

``"perfect"``
    forward filtering, backward sampling: log Z by the forward recursion, then every draw
    walks back from ``L`` choosing the last token with weight ``Z(prefix) * p(token)^alpha``.
``"reservoir"``
    the corrected Viterbi Sampling of the post: one forward pass over the edges in scan
    order, a running log-normaliser per end position, and a weighted-reservoir replacement.
``"legacy"``
    the original Viterbi Sampling: the newcomer replaces the incumbent with probability
    ``sigmoid(alpha * (s_new - s_old))`` of the two *path* scores (biased; kept to show it).
``"path_score"``
    a tempting but wrong fix: a weighted reservoir whose weight is ``exp(alpha * path
    score)`` of the sampled prefix instead of the accumulated ``Z`` (biased; a negative
    control).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch

from ._checks import check_int, check_real, check_tensor

__all__ = [
    "Lattice",
    "build_lattice",
    "candidate_bound",
    "logsumexp2",
    "viterbi_decode",
    "log_partition",
    "sample",
    "stream_select",
    "boundaries_to_codes",
    "pieces_to_code",
    "boundaries_to_pieces",
    "enumerate_segmentations",
    "segmentation_score",
    "exact_distribution",
    "SAMPLING_METHODS",
]

#: Names accepted by ``sample(..., method=...)``.
SAMPLING_METHODS = ("perfect", "reservoir", "legacy", "path_score")


@dataclass(frozen=True)
class Lattice:
    """All vocabulary matches of a string (built by :func:`build_lattice`).

    Attributes
    ----------
    text : str
        The string, of length ``L``.
    starts, ends : torch.Tensor
        ``int64 [E]``: edge ``k`` is the token ``text[starts[k]:ends[k]]``.
    logp : torch.Tensor
        ``[E]``: the token's log-probability (floating dtype of the lattice).
    pieces : tuple of str
        The ``E`` token strings.

    Edges are sorted by end position, and for one end position from the longest token to
    the shortest, the order in which an Aho-Corasick automaton reports matches.
    """

    text: str
    starts: torch.Tensor
    ends: torch.Tensor
    logp: torch.Tensor
    pieces: tuple[str, ...]

    @property
    def length(self) -> int:
        """``L``, the number of characters."""
        return len(self.text)

    @property
    def num_edges(self) -> int:
        """``E``, the number of candidate tokens."""
        return len(self.pieces)


def _check_vocab(vocab: object) -> dict[str, float]:
    if not isinstance(vocab, Mapping):
        raise TypeError(f"vocab must be a mapping from str to float, got {type(vocab).__name__}")
    if len(vocab) == 0:
        raise ValueError("vocab must not be empty")
    out = {}
    for tok, v in vocab.items():
        if not isinstance(tok, str):
            raise TypeError(f"vocab keys must be str, got {type(tok).__name__}")
        if tok == "":
            raise ValueError("vocab must not contain the empty string")
        out[tok] = check_real(v, f"vocab[{tok!r}]")
    return out


def _check_text(text: object) -> str:
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if text == "":
        raise ValueError("text must not be empty")
    return text


def build_lattice(
    text: str,
    vocab: Mapping[str, float],
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> Lattice:
    """All tokens of ``vocab`` that occur in ``text``, as a :class:`Lattice`.

    With maximum token length ``m`` at most ``l m - m (m - 1) / 2`` edges are found (see
    :func:`candidate_bound`). The scan is a plain loop over (start, length) pairs, the job a
    trie or Aho-Corasick automaton does in a production tokenizer. Derived in P24.

    Parameters
    ----------
    text : str
        Non-empty string of length ``L``.
    vocab : dict
        Token (str) -> log-probability (float; any finite score works, any mapping type).
    dtype : torch.dtype
        Floating dtype of ``logp`` (default float64).
    device : torch.device or str, optional
        Device of the lattice's tensors (default CPU).

    Returns
    -------
    Lattice
        With ``E`` edges ordered by end, longest first.

    Raises
    ------
    ValueError
        If ``text`` cannot be segmented into tokens of ``vocab``.
    """
    text = _check_text(text)
    vocab = _check_vocab(vocab)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    m = max(len(t) for t in vocab)
    L = len(text)
    starts, ends, logp, pieces = [], [], [], []
    reach = [True] + [False] * L
    for e in range(1, L + 1):
        for s in range(max(0, e - m), e):          # longest first
            tok = text[s:e]
            if tok in vocab:
                starts.append(s)
                ends.append(e)
                logp.append(vocab[tok])
                pieces.append(tok)
                reach[e] = reach[e] or reach[s]
    if not reach[L]:
        raise ValueError("text cannot be segmented into tokens of vocab")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    return Lattice(
        text=text,
        starts=torch.tensor(starts, dtype=torch.int64, device=dev),
        ends=torch.tensor(ends, dtype=torch.int64, device=dev),
        logp=torch.tensor(logp, dtype=dtype, device=dev),
        pieces=tuple(pieces),
    )


def candidate_bound(length: int, max_len: int) -> int:
    """Most candidate tokens a string of ``length`` can hold with tokens of at most ``max_len``.

    The count of substrings of length ``1..m`` of a string of length ``l >= m``:

        l + (l - 1) + ... + (l - m + 1) = l m - m (m - 1) / 2.

    Derived in P24.
    """
    length = check_int(length, "length", ge=1)
    max_len = check_int(max_len, "max_len", ge=1)
    if max_len > length:
        raise ValueError(f"max_len must be <= length, got max_len={max_len}, length={length}")
    return length * max_len - max_len * (max_len - 1) // 2


def logsumexp2(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Elementwise ``log(exp(x) + exp(y))``, stable for any gap and for ``-inf`` inputs.

        logsumexp(x, y) = max(x, y) + log1p(exp(-|x - y|)),

    with ``logsumexp(-inf, -inf) = -inf``. Shapes broadcast. Derived in P24.
    """
    x = check_tensor(x, "x", finite=False)
    y = check_tensor(y, "y", finite=False)
    if torch.isnan(x).any() or torch.isnan(y).any():
        raise ValueError("x and y must not contain NaN")
    m = torch.maximum(x, y)
    gap = -(x - y).abs()
    gap = torch.where(torch.isfinite(m), gap, torch.full_like(gap, -torch.inf))
    return m + torch.log1p(torch.exp(gap))


def _check_lattice(lattice: object) -> Lattice:
    if not isinstance(lattice, Lattice):
        raise TypeError(f"lattice must be a kexue_lib.tokenize.Lattice, got {type(lattice).__name__}")
    return lattice


def _incoming(lat: Lattice) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded edge indices ending at each position: ``idx [L + 1, K]`` and ``valid [L + 1, K]``."""
    L, dev = lat.length, lat.ends.device
    counts = torch.bincount(lat.ends, minlength=L + 1)
    K = int(counts.max())
    order = torch.argsort(lat.ends, stable=True)
    first = torch.cumsum(counts, 0) - counts
    slot = torch.arange(lat.num_edges, device=dev) - first[lat.ends[order]]
    idx = torch.zeros(L + 1, K, dtype=torch.int64, device=dev)
    valid = torch.zeros(L + 1, K, dtype=torch.bool, device=dev)
    idx[lat.ends[order], slot] = order
    valid[lat.ends[order], slot] = True
    return idx, valid


def _forward(lat: Lattice, alpha: float, reduce: str) -> torch.Tensor:
    """Forward scan over positions; ``reduce`` is 'logsumexp' (log Z) or 'max' (Viterbi)."""
    idx, valid = _incoming(lat)
    neg = torch.tensor(-torch.inf, dtype=lat.logp.dtype, device=lat.logp.device)
    acc = [torch.zeros((), dtype=lat.logp.dtype, device=lat.logp.device)]
    w = alpha * lat.logp if reduce == "logsumexp" else lat.logp
    for e in range(1, lat.length + 1):          # sequential over positions, vectorised over edges
        prev = torch.stack(acc)
        vals = torch.where(valid[e], prev[lat.starts[idx[e]].clamp(max=e - 1)] + w[idx[e]], neg)
        acc.append(torch.logsumexp(vals, 0) if reduce == "logsumexp" else vals.max())
    return torch.stack(acc)


def log_partition(lattice: Lattice, *, alpha: float = 1.0, prefixes: bool = False) -> torch.Tensor:
    """``log Z(alpha)``: the forward recursion with logsumexp in place of Viterbi's max.

        log Z(c_1..c_e) = logsumexp over tokens (s, e) of [log Z(c_1..c_s) + alpha log p(c_{s+1..e})],

    with ``log Z`` of the empty prefix equal to 0. Differentiable in ``lattice.logp``
    (its gradient is ``alpha`` times the marginal probability of each edge). Derived in P24.

    Parameters
    ----------
    lattice : Lattice
        From :func:`build_lattice`.
    alpha : float
        Inverse temperature, ``>= 0``.
    prefixes : bool
        If True return ``log Z`` of every prefix, shape ``[L + 1]``; else a scalar.

    Returns
    -------
    torch.Tensor
        Scalar, or ``[L + 1]`` if ``prefixes``.
    """
    lat = _check_lattice(lattice)
    alpha = check_real(alpha, "alpha", ge=0.0)
    out = _forward(lat, alpha, "logsumexp")
    return out if prefixes else out[-1]


def viterbi_decode(lattice: Lattice) -> tuple[tuple[str, ...], float]:
    """The highest-scoring segmentation and its score.

        S*(c_1..c_e) = max over tokens (s, e) of [S*(c_1..c_s) + log p(c_{s+1..e})].

    Ties go to the longest last token. Derived in P24.

    Returns
    -------
    tuple
        ``(pieces, score)``: the tokens in order and the sum of their log-probabilities.
    """
    lat = _check_lattice(lattice)
    best = _forward(lat, 1.0, "max")
    idx, valid = _incoming(lat)
    pieces, e = [], lat.length
    neg = torch.tensor(-torch.inf, dtype=lat.logp.dtype, device=lat.logp.device)
    while e > 0:
        vals = torch.where(valid[e], best[lat.starts[idx[e]].clamp(max=e - 1)] + lat.logp[idx[e]], neg)
        k = int(idx[e, int(torch.argmax(vals))])       # first maximum = longest token
        pieces.append(lat.pieces[k])
        e = int(lat.starts[k])
    return tuple(reversed(pieces)), float(best[-1])


def _uniform(shape: tuple[int, ...], generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    u = torch.rand(shape, generator=generator, dtype=torch.float64, device="cpu")
    return u.to(device=like.device, dtype=like.dtype)


def _check_generator(generator: object) -> torch.Generator | None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    return generator


def sample(
    lattice: Lattice,
    num_samples: int,
    *,
    alpha: float = 1.0,
    method: str = "perfect",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw ``num_samples`` random segmentations at once (see the module docstring for methods).

    ``"perfect"`` and ``"reservoir"`` are exact samplers of

        P(seg) = exp(alpha * sum_t log p(t)) / Z(alpha) = prod_t p(t)^alpha / Z(alpha).

    ``"perfect"`` (forward filtering, backward sampling) picks the last token ending at ``e``
    with probability ``Z(c_1..c_s) p(c_{s+1..e})^alpha / Z(c_1..c_e)`` and recurses into the
    prefix. ``"reservoir"`` scans the edges once; for the ``i``-th edge into ``e`` it forms
    ``u_i = log Z(c_1..c_s) + alpha log p``, updates ``Z_i^log = logsumexp(Z_{i-1}^log, u_i)``
    and replaces the stored back-pointer with probability ``exp(u_i - Z_i^log)``.
    Uniforms are drawn on the CPU from ``generator`` and moved to the lattice's device.
    Derived in P24.

    Parameters
    ----------
    lattice : Lattice
        From :func:`build_lattice`.
    num_samples : int
        Number of independent draws ``N >= 1``.
    alpha : float
        Inverse temperature, ``>= 0``.
    method : str
        One of ``SAMPLING_METHODS``.
    generator : torch.Generator, optional
        CPU generator for reproducible draws.

    Returns
    -------
    torch.Tensor
        ``bool [N, L + 1]``: ``True`` at the token boundaries (always at 0 and ``L``).
    """
    lat = _check_lattice(lattice)
    n = check_int(num_samples, "num_samples", ge=1)
    alpha = check_real(alpha, "alpha", ge=0.0)
    generator = _check_generator(generator)
    if method not in SAMPLING_METHODS:
        raise ValueError(f"method must be one of {SAMPLING_METHODS}, got {method!r}")
    if method == "perfect":
        return _sample_ffbs(lat, n, alpha, generator)
    bp = _online(lat, n, alpha, method, generator)
    return _backtrace(bp, lat.length)


def _sample_ffbs(lat: Lattice, n: int, alpha: float, gen) -> torch.Tensor:
    logz = _forward(lat, alpha, "logsumexp")
    idx, valid = _incoming(lat)
    L, dev = lat.length, lat.ends.device
    start_of = torch.where(valid, lat.starts[idx], 0)               # [L + 1, K]; padding -> 0
    w = torch.where(valid, logz[start_of] + alpha * lat.logp[idx], -torch.inf)
    cdf = torch.cumsum(torch.softmax(w[1:], dim=-1), dim=-1)      # rows e = 1..L
    cdf = torch.cat([torch.ones_like(cdf[:1]), cdf])
    last = (valid.sum(-1) - 1).clamp(min=0)      # guard against a cdf that rounds below 1
    pos = torch.full((n,), L, dtype=torch.int64, device=dev)
    visited = [pos]
    for _ in range(L):                        # each step moves every unfinished draw left
        u = _uniform((n, 1), gen, cdf)
        k = torch.minimum((u > cdf[pos]).sum(-1), last[pos])
        pos = start_of[pos, k]                # position 0 maps to itself (row 0 is padding)
        visited.append(pos)
    bounds = torch.zeros(n, L + 1, dtype=torch.bool, device=dev)
    return bounds.scatter_(1, torch.stack(visited, 1), True)


def _online(lat: Lattice, n: int, alpha: float, method: str, gen) -> torch.Tensor:
    """One pass over the edges in scan order; returns back-pointers ``[L + 1, N]``."""
    L, dev, dt = lat.length, lat.logp.device, lat.logp.dtype
    bp = torch.zeros(L + 1, n, dtype=torch.int64, device=dev)     # position-major: rows contiguous
    if method == "reservoir":
        logz = torch.full((L + 1,), -torch.inf, dtype=dt, device=dev)   # deterministic, shared by draws
        logz[0] = 0.0
    else:
        score = torch.full((L + 1, n), -torch.inf, dtype=dt, device=dev)  # per-draw path score
        score[0] = 0.0
        logz = torch.full((L + 1, n), -torch.inf, dtype=dt, device=dev)   # only for path_score
    starts, ends = lat.starts.tolist(), lat.ends.tolist()
    for k in range(lat.num_edges):            # sequential over edges, vectorised over draws
        s, e, v = starts[k], ends[k], lat.logp[k]
        u = _uniform((n,), gen, lat.logp)
        if method == "reservoir":
            w = logz[s] + alpha * v
            logz[e] = logsumexp2(logz[e], w)
            p = torch.exp(w - logz[e]) if torch.isfinite(w) else torch.zeros((), dtype=dt, device=dev)
            accept = u < p
        else:
            cand, inc = score[s] + v, score[e]
            if method == "legacy":
                p = torch.where(torch.isinf(inc), torch.ones_like(inc), torch.sigmoid(alpha * (cand - inc)))
            else:  # path_score: reservoir weighted by exp(alpha * sampled path score)
                w = alpha * cand
                logz[e] = logsumexp2(logz[e], w)
                p = torch.where(torch.isfinite(w), torch.exp(w - logz[e]), torch.zeros_like(w))
            accept = u < p
            score[e] = torch.where(accept, cand, inc)
        bp[e] = torch.where(accept, s, bp[e])
    return bp


def _backtrace(bp: torch.Tensor, L: int) -> torch.Tensor:
    n, dev = bp.shape[1], bp.device
    pos = torch.full((n,), L, dtype=torch.int64, device=dev)
    cols = torch.arange(n, device=dev)
    visited = [pos]
    for _ in range(L):
        pos = bp[pos, cols]                   # bp[0] = 0, so finished draws stay at 0
        visited.append(pos)
    bounds = torch.zeros(n, L + 1, dtype=torch.bool, device=dev)
    return bounds.scatter_(1, torch.stack(visited, 1), True)


def stream_select(
    log_weights: torch.Tensor,
    num_samples: int,
    *,
    rule: str = "reservoir",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick one of ``k`` candidates that arrive one at a time, ``num_samples`` times at once.

    ``rule="reservoir"`` (weighted reservoir sampling): keep ``Z_i = Z_{i-1} + w_i`` and let
    the ``i``-th arrival replace the kept one with probability ``w_i / Z_i``; then

        P(i) = (w_i / Z_i) prod_{j > i} Z_{j-1} / Z_j = w_i / Z_k.

    ``rule="legacy"`` (the old Viterbi Sampling step): the arrival replaces the kept one with
    probability ``w_i / (w_i + w_kept)``, which dilutes early arrivals. Derived in P24.

    Parameters
    ----------
    log_weights : torch.Tensor
        ``[k]`` finite log-weights ``log w_i``, in arrival order.
    num_samples : int
        Number of independent selections ``N``.
    rule : str
        ``"reservoir"`` or ``"legacy"``.
    generator : torch.Generator, optional
        CPU generator.

    Returns
    -------
    torch.Tensor
        ``int64 [N]``: the selected index of every draw.
    """
    lw = check_tensor(log_weights, "log_weights", ndim=1)
    if lw.numel() == 0:
        raise ValueError("log_weights must hold at least one weight")
    n = check_int(num_samples, "num_samples", ge=1)
    generator = _check_generator(generator)
    if rule not in ("reservoir", "legacy"):
        raise ValueError(f"rule must be 'reservoir' or 'legacy', got {rule!r}")
    chosen = torch.zeros(n, dtype=torch.int64, device=lw.device)
    logz = lw[0]
    for i in range(1, lw.numel()):
        u = _uniform((n,), generator, lw)
        if rule == "reservoir":
            logz = torch.logaddexp(logz, lw[i])
            p = torch.exp(lw[i] - logz)
        else:
            p = torch.sigmoid(lw[i] - lw[chosen])
        chosen = torch.where(u < p, torch.full_like(chosen, i), chosen)
    return chosen


def boundaries_to_codes(bounds: torch.Tensor) -> torch.Tensor:
    """Encode boundary masks ``bool [N, L + 1]`` as integers: bit ``j - 1`` set iff a cut at ``j``.

    Only the inner positions ``1..L-1`` are encoded (``L <= 63``). Returns ``int64 [N]``.
    """
    b = check_tensor(bounds, "bounds", ndim=2, floating=False)
    if b.dtype != torch.bool:
        raise TypeError(f"bounds must be a bool tensor, got {b.dtype}")
    L = b.shape[1] - 1
    if not 1 <= L <= 63:
        raise ValueError(f"bounds must have between 2 and 64 columns, got {b.shape[1]}")
    weights = torch.bitwise_left_shift(torch.ones(max(L - 1, 0), dtype=torch.int64, device=b.device),
                                       torch.arange(max(L - 1, 0), device=b.device))
    return (b[:, 1:L].to(torch.int64) * weights).sum(-1)


def pieces_to_code(pieces: Sequence[str]) -> int:
    """The integer code (see :func:`boundaries_to_codes`) of a segmentation given as tokens."""
    if isinstance(pieces, str) or not all(isinstance(p, str) and p for p in pieces) or len(pieces) == 0:
        raise TypeError("pieces must be a non-empty sequence of non-empty str")
    code, pos = 0, 0
    for p in pieces[:-1]:
        pos += len(p)
        code |= 1 << (pos - 1)
    return code


def boundaries_to_pieces(text: str, bounds: torch.Tensor) -> tuple[str, ...]:
    """The tokens of one boundary mask ``bool [L + 1]`` over ``text``."""
    text = _check_text(text)
    b = check_tensor(bounds, "bounds", ndim=1, floating=False)
    if b.shape[0] != len(text) + 1:
        raise ValueError(f"bounds must have len(text) + 1 = {len(text) + 1} entries, got {b.shape[0]}")
    cuts = torch.nonzero(b).flatten().tolist()
    return tuple(text[a:c] for a, c in zip(cuts[:-1], cuts[1:]))


def enumerate_segmentations(text: str, vocab: Mapping[str, float]) -> list[tuple[str, ...]]:
    """Every segmentation of ``text`` into tokens of ``vocab`` (brute force, exponential).

    For checking the dynamic programmes on short strings. Derived in P24.
    """
    text = _check_text(text)
    vocab = _check_vocab(vocab)
    m = max(len(t) for t in vocab)
    table: list[list[tuple[str, ...]]] = [[()]]
    for e in range(1, len(text) + 1):
        table.append([seg + (text[s:e],) for s in range(max(0, e - m), e)
                      if text[s:e] in vocab for seg in table[s]])
    return table[-1]


def segmentation_score(pieces: Sequence[str], vocab: Mapping[str, float]) -> float:
    """``sum_t log p(t)`` over the tokens of one segmentation."""
    vocab = _check_vocab(vocab)
    missing = [p for p in pieces if p not in vocab]
    if missing:
        raise ValueError(f"pieces contains tokens not in vocab: {missing[:3]}")
    return float(sum(vocab[p] for p in pieces))


def exact_distribution(
    text: str, vocab: Mapping[str, float], *, alpha: float = 1.0
) -> tuple[list[tuple[str, ...]], torch.Tensor]:
    """All segmentations and their exact probabilities ``exp(alpha s) / sum exp(alpha s)``.

    Brute force over :func:`enumerate_segmentations`, in float64. Derived in P24.

    Returns
    -------
    tuple
        ``(segmentations, probs)`` with ``probs`` of shape ``[n_seg]``.
    """
    alpha = check_real(alpha, "alpha", ge=0.0)
    segs = enumerate_segmentations(text, vocab)
    if not segs:
        raise ValueError("text cannot be segmented into tokens of vocab")
    scores = torch.tensor([segmentation_score(s, vocab) for s in segs], dtype=torch.float64)
    return segs, torch.softmax(alpha * scores, 0)
