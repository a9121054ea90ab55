"""Classification losses designed by hand: multi-label "softmax + CE" and TaiLr.

Two families, both with plain functional APIs that reduce over the last dimension and
keep any batch dimensions in front.

*Multi-label "softmax + cross-entropy"* (P18, kexue.fm/archives/9064; ZLPR, arXiv:2208.02955).
Scores ``s`` of shape ``(..., n)``, targets ``t`` of the same shape in ``[0, 1]``::

    hard:  log(1 + sum_{neg} e^{s_i}) + log(1 + sum_{pos} e^{-s_j})
    soft:  log(1 + sum_i t_i e^{-s_i}) + log(1 + sum_i (1 - t_i) e^{s_i})

Both are ``logsumexp`` over the scores with a zero column appended. The soft loss is
minimised at ``s_i = logit(t_i) / 2``, so probabilities are read out as ``sigmoid(2 s)``.

*TaiLr* (P31, kexue.fm/archives/9526; Ji et al., arXiv:2302.13344). For the probability
``p`` a classifier gives the labelled class::

    L_gamma(p) = -log(gamma + (1 - gamma) p) / (1 - gamma)

which is cross-entropy at ``gamma = 0`` and tends to ``1 - p`` as ``gamma -> 1``. Its
gradient is cross-entropy's scaled by the weight ``p / (gamma + (1 - gamma) p)``.
:func:`expected_calibration_error` measures the over-confidence the loss is meant to reduce.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ._checks import check_int, check_real, check_tensor

__all__ = [
    # P18
    "multilabel_hard_ce",
    "multilabel_ce",
    "multilabel_ce_grad",
    "multilabel_prob",
    "multilabel_optimal_scores",
    "multilabel_min_loss",
    # P31
    "tailr_nll",
    "tailr_loss",
    "tailr_weight",
    "tailr_weighted_nll_loss",
    "reliability_bins",
    "expected_calibration_error",
]

_REDUCTIONS = ("mean", "sum", "none")


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def _check_reduction(reduction: object) -> str:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    return reduction  # type: ignore[return-value]


def _check_scores_targets(input: object, target: object) -> tuple[torch.Tensor, torch.Tensor]:
    s = check_tensor(input, "input", min_ndim=1)
    t = check_tensor(target, "target", min_ndim=1)
    if t.shape != s.shape:
        raise ValueError(f"target must have the shape of input {tuple(s.shape)}, got {tuple(t.shape)}")
    if t.numel() and not bool(((t >= 0) & (t <= 1)).all()):
        raise ValueError("target must lie in [0, 1]")
    return s, t


def _lse_with_zero(a: torch.Tensor) -> torch.Tensor:
    """log(1 + sum_i exp(a_i)) over the last dim, i.e. logsumexp with a zero column."""
    zero = torch.zeros_like(a[..., :1])
    return torch.logsumexp(torch.cat([zero, a], dim=-1), dim=-1)


# --------------------------------------------------------------------------- P18
def multilabel_hard_ce(input: torch.Tensor, target: torch.Tensor, *, reduction: str = "mean") -> torch.Tensor:
    """Multi-label "softmax + cross-entropy" for hard 0/1 labels (the loss P18 generalises).

    ``l = log(1 + sum_{i: t_i=0} e^{s_i}) + log(1 + sum_{j: t_j=1} e^{-s_j})``.

    Shapes: ``input`` (..., n) real scores, ``target`` (..., n) with entries exactly 0 or 1
    (float or bool). Returns (...) for ``reduction="none"``, else a scalar. Implemented by
    sending the excluded class of each sum to ``-inf`` before a ``logsumexp`` with an
    appended zero. Derived in P18 (originally kexue.fm/archives/7359).
    """
    reduction = _check_reduction(reduction)
    s = check_tensor(input, "input", min_ndim=1)
    if isinstance(target, torch.Tensor) and target.dtype == torch.bool:
        target = target.to(s.dtype)
    t = check_tensor(target, "target", min_ndim=1)
    if t.shape != s.shape:
        raise ValueError(f"target must have the shape of input {tuple(s.shape)}, got {tuple(t.shape)}")
    if t.numel() and not bool(((t == 0) | (t == 1)).all()):
        raise ValueError("target must hold only 0 and 1 (use multilabel_ce for soft labels)")
    pos = t == 1
    neg_inf = torch.full_like(s, -math.inf)
    loss = _lse_with_zero(torch.where(pos, neg_inf, s)) + _lse_with_zero(torch.where(pos, -s, neg_inf))
    return _reduce(loss, reduction)


def _multilabel_exponents(
    s: torch.Tensor, t: torch.Tensor, eps: float, fix_clip: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """The exponents ``-s_i + log t_i`` and ``s_i + log(1 - t_i)`` of the two sums (``-inf`` = dropped)."""
    if eps > 0:                                   # the post's recipe: clip, then (optionally) drop
        tc = t.clamp(eps, 1 - eps)
        log_t, log_1mt = torch.log(tc), torch.log1p(-tc)
        if fix_clip:
            log_t = log_t.masked_fill(t < eps, -math.inf)
            log_1mt = log_1mt.masked_fill(t > 1 - eps, -math.inf)
    else:                                         # exact: log 0 = -inf, no clipping at all
        zero, one = t == 0, t == 1
        log_t = torch.log(t.masked_fill(zero, 1.0)).masked_fill(zero, -math.inf)
        log_1mt = torch.log1p(-t.masked_fill(one, 0.0)).masked_fill(one, -math.inf)
    return -s + log_t, s + log_1mt


def multilabel_ce(
    input: torch.Tensor,
    target: torch.Tensor,
    *,
    eps: float = 0.0,
    fix_clip: bool = True,
    reduction: str = "mean",
) -> torch.Tensor:
    """Soft-label multi-label "softmax + cross-entropy".

    ``l = log(1 + sum_i e^{-s_i + log t_i}) + log(1 + sum_i e^{s_i + log(1 - t_i)})``,
    computed as two ``logsumexp`` with an appended zero.

    ``eps = 0`` (default) is exact: an entry with ``t_i = 0`` (``t_i = 1``) drops out of the
    first (second) sum, so 0/1 targets give :func:`multilabel_hard_ce` to rounding error.
    ``eps > 0`` follows the post's implementation: clip ``t`` to ``[eps, 1 - eps]`` before
    the logs; with ``fix_clip=True`` entries whose original target is ``< eps``
    (``> 1 - eps``) are then dropped from the first (second) sum, which keeps masked scores
    such as ``s_i = -1e7`` harmless; ``fix_clip=False`` is clip-only, kept to show the pitfall.

    Shapes: ``input`` (..., n), ``target`` (..., n) in [0, 1]. Returns (...) for
    ``reduction="none"``, else a scalar. Derived in P18.
    """
    reduction = _check_reduction(reduction)
    eps = check_real(eps, "eps", ge=0, lt=0.5)
    if not isinstance(fix_clip, bool):
        raise TypeError(f"fix_clip must be a bool, got {type(fix_clip).__name__}")
    s, t = _check_scores_targets(input, target)
    a_pos, a_neg = _multilabel_exponents(s, t, eps, fix_clip)
    return _reduce(_lse_with_zero(a_pos) + _lse_with_zero(a_neg), reduction)


def multilabel_ce_grad(input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Closed-form gradient of the soft multi-label loss (``eps = 0``) with respect to the scores.

    ``dl/ds_i = -t_i e^{-s_i} / (1 + sum_j t_j e^{-s_j}) + (1 - t_i) e^{s_i} / (1 + sum_j (1 - t_j) e^{s_j})``,
    evaluated as two softmaxes over the exponents with a zero column appended.
    Shapes: ``input``, ``target`` (..., n) -> (..., n). Derived in P18.
    """
    s, t = _check_scores_targets(input, target)
    a_pos, a_neg = _multilabel_exponents(s, t, 0.0, True)
    return (-torch.exp(a_pos - _lse_with_zero(a_pos)[..., None])
            + torch.exp(a_neg - _lse_with_zero(a_neg)[..., None]))


def multilabel_prob(input: torch.Tensor) -> torch.Tensor:
    """Probability read-out of a model trained with :func:`multilabel_ce`: ``sigmoid(2 s)``.

    At the loss's optimum ``t_i e^{-s_i} = (1 - t_i) e^{s_i}``, i.e. ``t_i = sigmoid(2 s_i)``.
    Shape: any -> same. Derived in P18.
    """
    s = check_tensor(input, "input")
    return torch.sigmoid(2 * s)


def multilabel_optimal_scores(target: torch.Tensor) -> torch.Tensor:
    """The minimiser of the soft multi-label loss: ``s*_i = logit(t_i) / 2``.

    Needs ``0 < t_i < 1`` (hard labels have no finite minimiser). Shape: (..., n) -> (..., n).
    Derived in P18.
    """
    t = check_tensor(target, "target")
    if t.numel() and not bool(((t > 0) & (t < 1)).all()):
        raise ValueError("target must lie strictly inside (0, 1) for a finite optimum")
    return 0.5 * torch.logit(t)


def multilabel_min_loss(target: torch.Tensor) -> torch.Tensor:
    """Minimum of the soft multi-label loss: ``2 log(1 + sum_i sqrt(t_i (1 - t_i)))``.

    At ``s*`` both sums equal ``sum_i sqrt(t_i (1 - t_i))``. For 0/1 targets this is 0, the
    infimum (approached as the scores diverge). Shape: (..., n) -> (...). Derived in P18
    (the closed form is this book's addition; the post stops at the optimality condition).
    """
    t = check_tensor(target, "target", min_ndim=1)
    if t.numel() and not bool(((t >= 0) & (t <= 1)).all()):
        raise ValueError("target must lie in [0, 1]")
    return 2 * torch.log1p(torch.sqrt(t * (1 - t)).sum(dim=-1))


# --------------------------------------------------------------------------- P31
def _check_gamma(gamma: object) -> float:
    return check_real(gamma, "gamma", ge=0, le=1)


def tailr_nll(log_prob: torch.Tensor, *, gamma: float) -> torch.Tensor:
    """TaiLr's loss as a function of the log-probability of the labelled class.

    ``L_gamma = -log(gamma + (1 - gamma) p) / (1 - gamma)``, ``0 <= gamma <= 1``:
    ``-log p`` (cross-entropy) at ``gamma = 0``, ``1 - p`` at ``gamma = 1`` (the limit).
    Evaluated stably: for ``gamma < 1/2`` as ``logaddexp(log gamma, log(1 - gamma) + log p)``
    (no underflow for tiny ``p``); for ``gamma >= 1/2`` as
    ``-log1p(-(1 - gamma)(1 - p)) / (1 - gamma)`` (no cancellation as ``gamma -> 1``).
    Shape: any -> same; ``log_prob <= 0`` (``-inf`` allowed when ``gamma > 0``). Derived in P31.
    """
    gamma = _check_gamma(gamma)
    lp = check_tensor(log_prob, "log_prob", finite=False)
    if bool(torch.isnan(lp).any()) or bool((lp > 0).any()):
        raise ValueError("log_prob must be <= 0 and not NaN")
    if gamma == 0.0:
        if bool(torch.isinf(lp).any()):
            raise ValueError("log_prob must be finite when gamma = 0 (cross-entropy of p = 0 is infinite)")
        return -lp
    one_minus_p = -torch.expm1(lp)
    if gamma == 1.0:
        return one_minus_p
    if gamma < 0.5:
        mix = torch.logaddexp(torch.full_like(lp, math.log(gamma)), math.log1p(-gamma) + lp)
        return -mix / (1 - gamma)
    return -torch.log1p(-(1 - gamma) * one_minus_p) / (1 - gamma)


def _class_log_prob(input: object, target: object) -> torch.Tensor:
    x = check_tensor(input, "input", min_ndim=1)
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    if target.dtype != torch.int64:
        raise TypeError(f"target must have dtype torch.int64 (class indices), got {target.dtype}")
    if target.shape != x.shape[:-1]:
        raise ValueError(f"target must have shape {tuple(x.shape[:-1])} (input without its class dim), "
                         f"got {tuple(target.shape)}")
    if target.numel() and not bool(((target >= 0) & (target < x.shape[-1])).all()):
        raise ValueError(f"target must hold class indices in [0, {x.shape[-1]})")
    return F.log_softmax(x, dim=-1).gather(-1, target[..., None]).squeeze(-1)


def tailr_loss(input: torch.Tensor, target: torch.Tensor, *, gamma: float, reduction: str = "mean") -> torch.Tensor:
    """TaiLr loss on logits: ``-log(gamma + (1 - gamma) p_y) / (1 - gamma)``, ``p = softmax(input)``.

    Shapes: ``input`` (..., C) logits, ``target`` (...) int64 class indices. Returns (...) for
    ``reduction="none"``, else a scalar. ``gamma = 0`` is ``F.cross_entropy``. Derived in P31.
    """
    reduction = _check_reduction(reduction)
    gamma = _check_gamma(gamma)
    return _reduce(tailr_nll(_class_log_prob(input, target), gamma=gamma), reduction)


def tailr_weight(prob: torch.Tensor, *, gamma: float, min_weight: float = 0.0) -> torch.Tensor:
    """Per-sample weight TaiLr puts on the cross-entropy gradient: ``max(b, p / (gamma + (1 - gamma) p))``.

    ``dL_gamma = -dp / (gamma + (1 - gamma) p) = w(p) * d(-log p)``. The weight is 1 for
    every ``p`` at ``gamma = 0`` and ``p`` at ``gamma = 1``; ``b = min_weight`` is the floor of
    the paper's gradient form. Shape: any -> same; ``prob`` in [0, 1]. Derived in P31.
    """
    gamma = _check_gamma(gamma)
    b = check_real(min_weight, "min_weight", ge=0, le=1)
    p = check_tensor(prob, "prob")
    if p.numel() and not bool(((p >= 0) & (p <= 1)).all()):
        raise ValueError("prob must lie in [0, 1]")
    w = torch.ones_like(p) if gamma == 0.0 else p / (gamma + (1 - gamma) * p)
    return w.clamp_min(b)


def tailr_weighted_nll_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    *,
    gamma: float,
    min_weight: float = 0.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """TaiLr in the paper's gradient form: ``-sg[max(b, p / (gamma + (1 - gamma) p))] log p``.

    ``sg`` is a stop-gradient (``detach``). Its value differs from :func:`tailr_loss`, but
    with ``min_weight = 0`` its gradient is the same. Shapes: ``input`` (..., C) logits,
    ``target`` (...) int64. Derived in P31.
    """
    reduction = _check_reduction(reduction)
    lp = _class_log_prob(input, target)
    w = tailr_weight(lp.detach().exp(), gamma=gamma, min_weight=min_weight)
    return _reduce(-w * lp, reduction)


def reliability_bins(
    probs: torch.Tensor, target: torch.Tensor, *, n_bins: int = 15
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Equal-width confidence bins of a classifier: (count, accuracy, mean confidence) per bin.

    Confidence is ``max_c probs[..., c]``, the prediction its argmax; bin ``k`` holds the
    confidences in ``(k / n_bins, (k + 1) / n_bins]`` (confidence 0 goes to bin 0). Shapes:
    ``probs`` (N, C) with rows in the simplex, ``target`` (N,) int64 -> three (n_bins,)
    tensors; accuracy and confidence are 0 in empty bins. Used in P31.
    """
    n_bins = check_int(n_bins, "n_bins", ge=1)
    p = check_tensor(probs, "probs", ndim=2)
    if p.numel() and not bool(((p >= 0) & (p <= 1)).all()):
        raise ValueError("probs must lie in [0, 1]")
    if p.numel() and not torch.allclose(p.sum(-1), torch.ones_like(p[:, 0]), atol=1e-4, rtol=0):
        raise ValueError("probs rows must sum to 1 (pass softmax outputs)")
    if not isinstance(target, torch.Tensor) or target.dtype != torch.int64:
        raise TypeError("target must be an int64 torch.Tensor of class indices")
    if target.shape != p.shape[:1]:
        raise ValueError(f"target must have shape ({p.shape[0]},), got {tuple(target.shape)}")
    conf, pred = p.max(dim=-1)
    correct = (pred == target).to(p.dtype)
    edges = torch.linspace(0, 1, n_bins + 1, dtype=p.dtype, device=p.device)[1:-1]
    idx = torch.bucketize(conf, edges, right=False)          # (k/n, (k+1)/n] -> k
    count = torch.zeros(n_bins, dtype=p.dtype, device=p.device).index_add_(0, idx, torch.ones_like(conf))
    acc_sum = torch.zeros_like(count).index_add_(0, idx, correct)
    conf_sum = torch.zeros_like(count).index_add_(0, idx, conf)
    safe = count.clamp_min(1)
    return count, acc_sum / safe, conf_sum / safe


def expected_calibration_error(probs: torch.Tensor, target: torch.Tensor, *, n_bins: int = 15) -> torch.Tensor:
    """Expected calibration error with equal-width bins: ``sum_k (n_k / N) |acc_k - conf_k|``.

    Shapes: ``probs`` (N, C) rows in the simplex, ``target`` (N,) int64 -> scalar in [0, 1].
    See :func:`reliability_bins` for the binning. Used in P31.
    """
    count, acc, conf = reliability_bins(probs, target, n_bins=n_bins)
    if count.sum() == 0:
        raise ValueError("probs must hold at least one sample")
    return (count * (acc - conf).abs()).sum() / count.sum()
