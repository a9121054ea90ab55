"""Tests of kexue_lib.losses: multi-label softmax+CE (P18), TaiLr and ECE (P31)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from kexue_lib import losses as L

f64 = torch.float64


def _rand(*shape, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(*shape, generator=g, dtype=f64)


def _soft_targets(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=g, dtype=f64)


def _hard_targets(*shape, seed=0, p=0.3):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(*shape, generator=g, dtype=f64) < p).to(f64)


# ------------------------------------------------------------------ P18: references
def _hard_ref(s: np.ndarray, t: np.ndarray) -> float:
    """Brute force on one row: the post's equation with Python sums."""
    neg = sum(math.exp(v) for v, y in zip(s, t) if y == 0)
    pos = sum(math.exp(-v) for v, y in zip(s, t) if y == 1)
    return math.log(1 + neg) + math.log(1 + pos)


def _soft_ref(s: np.ndarray, t: np.ndarray) -> float:
    return math.log(1 + sum(ti * math.exp(-si) for si, ti in zip(s, t))) + math.log(
        1 + sum((1 - ti) * math.exp(si) for si, ti in zip(s, t)))


def test_hard_loss_matches_brute_force():
    s, t = _rand(6, 9, seed=1, scale=2), _hard_targets(6, 9, seed=2)
    got = L.multilabel_hard_ce(s, t, reduction="none")
    want = torch.tensor([_hard_ref(a, b) for a, b in zip(s.numpy(), t.numpy())], dtype=f64)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(L.multilabel_hard_ce(s, t.bool(), reduction="sum"), want.sum())


def test_soft_loss_matches_brute_force():
    s, t = _rand(5, 7, seed=3, scale=2), _soft_targets(5, 7, seed=4)
    got = L.multilabel_ce(s, t, reduction="none")
    want = torch.tensor([_soft_ref(a, b) for a, b in zip(s.numpy(), t.numpy())], dtype=f64)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(L.multilabel_ce(s, t), want.mean())


def test_soft_reduces_to_hard_exactly():
    s, t = _rand(4, 3, 11, seed=5, scale=3), _hard_targets(4, 3, 11, seed=6)
    torch.testing.assert_close(L.multilabel_ce(s, t, reduction="none"),
                               L.multilabel_hard_ce(s, t, reduction="none"), rtol=0, atol=1e-14)
    hard = L.multilabel_hard_ce(s, t, reduction="none")
    # the post's clip-and-drop recipe is off by at most 2 eps (log(1 - eps) stays in both sums)
    post = L.multilabel_ce(s, t, eps=1e-7, reduction="none")
    assert 1e-12 < (post - hard).abs().max() < 2e-7
    # clip-only is off by O(eps) terms as well, never exact
    clip_only = L.multilabel_ce(s, t, eps=1e-7, fix_clip=False, reduction="none")
    assert (clip_only - hard).abs().max() > 1e-12


def test_hard_loss_at_most_bce():
    s, t = _rand(50, 8, seed=7, scale=2), _hard_targets(50, 8, seed=8)
    bce = F.binary_cross_entropy_with_logits(s, t, reduction="none").sum(-1)
    assert bool((L.multilabel_hard_ce(s, t, reduction="none") <= bce + 1e-12).all())


def test_masking_pitfall_and_fix():
    s = torch.tensor([[2.0, -1.0, 0.5, -1e7]], dtype=f64)
    t = torch.tensor([[0.8, 0.1, 0.6, 0.0]], dtype=f64)
    broken = L.multilabel_ce(s, t, eps=1e-7, fix_clip=False)
    assert broken > 1e6
    for eps in (1e-7, 0.0):
        fixed = L.multilabel_ce(s, t, eps=eps)
        dropped = L.multilabel_ce(s[:, :3], t[:, :3], eps=eps)
        torch.testing.assert_close(fixed, dropped, rtol=1e-14, atol=0)
    # gradients stay finite and the masked score gets none
    x = s.clone().requires_grad_()
    L.multilabel_ce(x, t).backward()
    assert bool(torch.isfinite(x.grad).all()) and x.grad[0, 3].item() == 0.0


def test_gradient_formula_matches_autograd():
    s = _rand(3, 6, seed=9, scale=2).requires_grad_()
    t = _soft_targets(3, 6, seed=10)
    t[0, 0], t[1, 1] = 0.0, 1.0
    L.multilabel_ce(s, t, reduction="sum").backward()
    torch.testing.assert_close(L.multilabel_ce_grad(s.detach(), t), s.grad, rtol=1e-12, atol=1e-14)


def test_optimum_and_minimum():
    t = torch.tensor([0.9, 0.3, 0.05, 0.5, 0.999], dtype=f64)
    s_star = L.multilabel_optimal_scores(t)
    torch.testing.assert_close(s_star, torch.tensor([1.098612, -0.423649, -1.472219, 0.0, 3.453377], dtype=f64),
                               rtol=0, atol=1e-6)
    torch.testing.assert_close(L.multilabel_ce_grad(s_star, t), torch.zeros_like(t), rtol=0, atol=1e-14)
    torch.testing.assert_close(L.multilabel_ce(s_star, t), L.multilabel_min_loss(t), rtol=1e-14, atol=0)
    assert abs(L.multilabel_min_loss(t).item() - 1.838819) < 1e-6
    torch.testing.assert_close(L.multilabel_prob(s_star), t, rtol=1e-12, atol=0)
    # perturbing any coordinate increases the loss
    base = L.multilabel_ce(s_star, t)
    for i in range(5):
        for d in (-1e-3, 1e-3):
            s = s_star.clone()
            s[i] += d
            assert L.multilabel_ce(s, t) > base


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 8), st.integers(0, 10_000))
def test_soft_loss_convex_along_segments(n, seed):
    s0, s1 = _rand(n, seed=seed, scale=3), _rand(n, seed=seed + 1, scale=3)
    t = _soft_targets(n, seed=seed + 2)
    lam = torch.linspace(0, 1, 11, dtype=f64)[:, None]
    vals = L.multilabel_ce((1 - lam) * s0 + lam * s1, t.expand(11, n), reduction="none")
    chord = (1 - lam[:, 0]) * vals[0] + lam[:, 0] * vals[-1]
    assert bool((vals <= chord + 1e-12).all())


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 6), st.integers(0, 10_000))
def test_min_loss_is_lower_bound(n, seed):
    t = _soft_targets(n, seed=seed).clamp(1e-3, 1 - 1e-3)
    s = _rand(20, n, seed=seed + 1, scale=2)
    assert bool((L.multilabel_ce(s, t.expand(20, n), reduction="none") >= L.multilabel_min_loss(t) - 1e-12).all())


def test_min_loss_zero_for_hard_labels():
    assert L.multilabel_min_loss(torch.tensor([0.0, 1.0, 1.0], dtype=f64)).item() == 0.0


def test_multilabel_float32_and_shapes():
    s = _rand(2, 3, 4, seed=11).float()
    t = _soft_targets(2, 3, 4, seed=12).float()
    out = L.multilabel_ce(s, t, reduction="none")
    assert out.shape == (2, 3) and out.dtype == torch.float32
    torch.testing.assert_close(out.double(), L.multilabel_ce(s.double(), t.double(), reduction="none"),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "fn, args, kwargs, exc, msg",
    [
        (L.multilabel_ce, ([1.0], torch.zeros(1)), {}, TypeError, "input"),
        (L.multilabel_ce, (torch.zeros(3), torch.zeros(4)), {}, ValueError, "target must have the shape"),
        (L.multilabel_ce, (torch.zeros(3), torch.tensor([0.0, 1.5, 0.0])), {}, ValueError, "target must lie"),
        (L.multilabel_ce, (torch.zeros(3), torch.zeros(3)), {"eps": -1e-7}, ValueError, "eps"),
        (L.multilabel_ce, (torch.zeros(3), torch.zeros(3)), {"fix_clip": 1}, TypeError, "fix_clip"),
        (L.multilabel_ce, (torch.zeros(3), torch.zeros(3)), {"reduction": "avg"}, ValueError, "reduction"),
        (L.multilabel_ce, (torch.tensor([float("nan")]), torch.zeros(1)), {}, ValueError, "input contains NaN"),
        (L.multilabel_hard_ce, (torch.zeros(3), torch.full((3,), 0.5)), {}, ValueError, "target must hold only"),
        (L.multilabel_hard_ce, (torch.zeros(3), torch.zeros(2)), {}, ValueError, "target must have the shape"),
        (L.multilabel_hard_ce, (torch.zeros(()), torch.zeros(())), {}, ValueError, "input must have at least"),
        (L.multilabel_ce_grad, (torch.zeros(2), torch.ones(3)), {}, ValueError, "target must have the shape"),
        (L.multilabel_prob, (torch.zeros(2, dtype=torch.int64),), {}, TypeError, "input must have a floating"),
        (L.multilabel_optimal_scores, (torch.tensor([0.0, 0.5]),), {}, ValueError, "strictly inside"),
        (L.multilabel_min_loss, (torch.tensor([-0.1, 0.5]),), {}, ValueError, "target must lie"),
    ],
)
def test_multilabel_validation(fn, args, kwargs, exc, msg):
    with pytest.raises(exc, match=msg):
        fn(*args, **kwargs)


# ------------------------------------------------------------------ P31: TaiLr
def _tailr_ref(p: float, gamma: float) -> float:
    if gamma == 1:
        return 1 - p
    return -math.log(gamma + (1 - gamma) * p) / (1 - gamma)


@pytest.mark.parametrize("gamma", [0.0, 1e-7, 0.1, 0.3, 0.5, 0.8, 0.99, 1.0])
def test_tailr_nll_matches_reference(gamma):
    p = torch.tensor([1e-6, 0.01, 0.2, 0.5, 0.9, 1.0], dtype=f64)
    want = torch.tensor([_tailr_ref(v, gamma) for v in p.tolist()], dtype=f64)
    torch.testing.assert_close(L.tailr_nll(torch.log(p), gamma=gamma), want, rtol=1e-10, atol=1e-15)


def test_tailr_post_tables():
    p = torch.tensor([0.01, 0.5], dtype=f64)
    table = {0.0: (4.6052, 0.6931), 0.1: (2.4627, 0.6643), 0.5: (1.3664, 0.5754), 0.8: (1.1032, 0.5268)}
    for g, want in table.items():
        got = L.tailr_nll(torch.log(p), gamma=g)
        assert np.allclose(got.numpy(), want, atol=5e-5), g
    w = {0.0: (1, 1), 0.1: (0.0917, 0.989), 0.5: (0.0198, 0.947), 0.8: (0.0125, 0.918)}
    for g, want in w.items():
        got = L.tailr_weight(torch.tensor([0.01, 0.9], dtype=f64), gamma=g)
        assert np.allclose(got.numpy(), want, atol=5e-4), g


def test_tailr_limits_are_stable():
    lp = torch.tensor([-1e4, -50.0, -1e-12], dtype=f64)
    # tiny gamma, tiny p: no underflow to log(0)
    out = L.tailr_nll(lp, gamma=1e-300)
    assert bool(torch.isfinite(out).all()) and out[0].item() == pytest.approx(-math.log(1e-300), rel=1e-12)
    # gamma -> 1: 1 - p with error ~ (1 - gamma)(1 - p)^2 / 2
    p = torch.linspace(0, 1, 101, dtype=f64)
    out = L.tailr_nll(torch.log(p), gamma=1 - 1e-12)
    torch.testing.assert_close(out, 1 - p, rtol=0, atol=1e-12)
    assert L.tailr_nll(torch.tensor([-math.inf], dtype=f64), gamma=0.5).item() == pytest.approx(2 * math.log(2))


def test_tailr_loss_gamma0_is_cross_entropy_and_grad_equals_weighted():
    x, y = _rand(16, 5, seed=20, scale=2), torch.randint(0, 5, (16,), generator=torch.Generator().manual_seed(21))
    torch.testing.assert_close(L.tailr_loss(x, y, gamma=0.0), F.cross_entropy(x, y), rtol=1e-14, atol=0)
    for g in (0.1, 0.5, 0.9):
        a = x.clone().requires_grad_()
        b = x.clone().requires_grad_()
        L.tailr_loss(a, y, gamma=g, reduction="sum").backward()
        L.tailr_weighted_nll_loss(b, y, gamma=g, reduction="sum").backward()
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-12, atol=1e-14)
    # with a floor b > 0 the gradients differ
    a = x.clone().requires_grad_()
    b = x.clone().requires_grad_()
    L.tailr_loss(a, y, gamma=0.8).backward()
    L.tailr_weighted_nll_loss(b, y, gamma=0.8, min_weight=0.5).backward()
    assert (a.grad - b.grad).abs().max() > 1e-3


@settings(max_examples=40, deadline=None)
@given(st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_tailr_monotone_and_bounded(gamma, b):
    p = torch.linspace(1e-6, 1, 200, dtype=f64)
    loss = L.tailr_nll(torch.log(p), gamma=gamma)
    assert bool((loss[1:] <= loss[:-1] + 1e-12).all())        # decreasing in p
    assert abs(loss[-1].item()) < 1e-12                          # zero at p = 1
    assert bool((loss >= 1 - p - 1e-12).all())                  # above the gamma=1 limit
    assert bool((loss <= -torch.log(p) + 1e-12).all())          # below cross-entropy
    w = L.tailr_weight(p, gamma=gamma, min_weight=b)
    assert bool((w >= b - 1e-15).all()) and bool((w <= 1 + 1e-12).all())


@pytest.mark.parametrize(
    "fn, args, kwargs, exc, msg",
    [
        (L.tailr_nll, (torch.zeros(2),), {"gamma": 1.5}, ValueError, "gamma"),
        (L.tailr_nll, (torch.zeros(2),), {"gamma": "a"}, TypeError, "gamma"),
        (L.tailr_nll, (torch.tensor([0.1]),), {"gamma": 0.5}, ValueError, "log_prob must be <= 0"),
        (L.tailr_nll, (torch.tensor([float("nan")]),), {"gamma": 0.5}, ValueError, "log_prob must be <= 0"),
        (L.tailr_nll, (torch.tensor([-math.inf]),), {"gamma": 0.0}, ValueError, "log_prob must be finite"),
        (L.tailr_loss, (torch.zeros(3, 4), torch.zeros(3)), {"gamma": 0.1}, TypeError, "target must have dtype"),
        (L.tailr_loss, (torch.zeros(3, 4), [0, 1, 2]), {"gamma": 0.1}, TypeError, "target must be a torch.Tensor"),
        (L.tailr_loss, (torch.zeros(3, 4), torch.zeros(2, dtype=torch.int64)), {"gamma": 0.1}, ValueError, "target must have shape"),
        (L.tailr_loss, (torch.zeros(3, 4), torch.full((3,), 4)), {"gamma": 0.1}, ValueError, "class indices"),
        (L.tailr_loss, (torch.zeros(3, 4), torch.zeros(3, dtype=torch.int64)), {"gamma": 0.1, "reduction": "x"}, ValueError, "reduction"),
        (L.tailr_weight, (torch.tensor([1.2]),), {"gamma": 0.1}, ValueError, "prob must lie"),
        (L.tailr_weight, (torch.tensor([0.2]),), {"gamma": 0.1, "min_weight": -1}, ValueError, "min_weight"),
        (L.tailr_weighted_nll_loss, (torch.zeros(3, 4), torch.zeros(3, dtype=torch.int64)), {"gamma": 2.0}, ValueError, "gamma"),
    ],
)
def test_tailr_validation(fn, args, kwargs, exc, msg):
    with pytest.raises(exc, match=msg):
        fn(*args, **kwargs)


# ------------------------------------------------------------------ P31: ECE
def _ece_ref(probs: np.ndarray, y: np.ndarray, n_bins: int) -> float:
    """Loop over bins with explicit interval tests, as in the textbook definition."""
    conf, pred = probs.max(1), probs.argmax(1)
    total = 0.0
    for k in range(n_bins):
        lo, hi = k / n_bins, (k + 1) / n_bins
        sel = (conf > lo) & (conf <= hi) if k else (conf <= hi)
        if sel.any():
            total += sel.sum() / len(y) * abs((pred[sel] == y[sel]).mean() - conf[sel].mean())
    return total


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 300), st.integers(2, 6), st.integers(1, 20), st.integers(0, 10_000))
def test_ece_matches_loop(n, c, n_bins, seed):
    probs = torch.softmax(_rand(n, c, seed=seed, scale=3), -1)
    y = torch.randint(0, c, (n,), generator=torch.Generator().manual_seed(seed + 1))
    got = L.expected_calibration_error(probs, y, n_bins=n_bins).item()
    assert got == pytest.approx(_ece_ref(probs.numpy(), y.numpy(), n_bins), abs=1e-12)
    assert 0 <= got <= 1


def test_ece_known_values_and_bin_edges():
    # two samples at confidence 0.85 (one right, one wrong) and one at 0.65 (right), 10 bins
    probs = torch.tensor([[0.85, 0.15], [0.85, 0.15], [0.35, 0.65]], dtype=f64)
    y = torch.tensor([0, 1, 1])
    count, acc, conf = L.reliability_bins(probs, y, n_bins=10)
    assert count.tolist() == [0, 0, 0, 0, 0, 0, 1, 0, 2, 0]
    assert acc[8].item() == 0.5 and acc[6].item() == 1.0
    # |0.5 - 0.85| * 2/3 + |1 - 0.65| * 1/3
    assert L.expected_calibration_error(probs, y, n_bins=10).item() == pytest.approx(0.35, abs=1e-12)
    # confidence exactly 1 lands in the last bin; a right one-hot classifier has ECE 0
    onehot = F.one_hot(torch.tensor([2, 0, 1]), 3).to(f64)
    assert L.expected_calibration_error(onehot, torch.tensor([2, 0, 1])).item() == 0.0
    assert L.reliability_bins(onehot, torch.tensor([2, 0, 1]), n_bins=4)[0].tolist() == [0, 0, 0, 3]


def test_ece_of_sampled_labels_is_small():
    g = torch.Generator().manual_seed(30)
    probs = torch.softmax(3 * torch.randn(200_000, 4, generator=g, dtype=f64), -1)
    y = torch.multinomial(probs, 1, generator=g).squeeze(-1)
    assert L.expected_calibration_error(probs, y).item() < 0.01


@pytest.mark.parametrize(
    "args, kwargs, exc, msg",
    [
        ((torch.full((2, 2), 0.5), torch.zeros(2, dtype=torch.int64)), {"n_bins": 0}, ValueError, "n_bins"),
        ((torch.full((2,), 0.5), torch.zeros(2, dtype=torch.int64)), {}, ValueError, "probs must have 2"),
        ((torch.full((2, 2), 0.7), torch.zeros(2, dtype=torch.int64)), {}, ValueError, "probs rows must sum"),
        ((torch.tensor([[1.5, -0.5]]), torch.zeros(1, dtype=torch.int64)), {}, ValueError, "probs must lie"),
        ((torch.full((2, 2), 0.5), torch.zeros(2)), {}, TypeError, "target must be an int64"),
        ((torch.full((2, 2), 0.5), torch.zeros(3, dtype=torch.int64)), {}, ValueError, "target must have shape"),
        ((torch.zeros(0, 2), torch.zeros(0, dtype=torch.int64)), {}, ValueError, "at least one sample"),
    ],
)
def test_ece_validation(args, kwargs, exc, msg):
    with pytest.raises(exc, match=msg):
        L.expected_calibration_error(*args, **kwargs)
