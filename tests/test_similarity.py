"""Tests of kexue_lib.similarity (P26): cosines, block decomposition, Pearson, group split."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kexue_lib import similarity as sim

F64 = torch.float64


def _np_cos(x, y):
    x, y = np.ravel(x), np.ravel(y)
    return float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))


# ---------------------------------------------------------------- cosine
def test_cosine_matches_numpy_and_torch():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(5, 7, generator=g, dtype=F64), torch.randn(5, 7, generator=g, dtype=F64)
    got = sim.cosine(x, y)
    ref = torch.tensor([_np_cos(a.numpy(), b.numpy()) for a, b in zip(x, y)], dtype=F64)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=0)
    torch.testing.assert_close(sim.cosine(x, y, dim=0), torch.nn.functional.cosine_similarity(x, y, dim=0),
                               rtol=1e-12, atol=1e-15)


def test_cosine_known_value_and_zero_vector():
    x, y = torch.tensor([1.0, 1.0], dtype=F64), torch.tensor([1.0, 2.0], dtype=F64)
    assert abs(float(sim.cosine(x, y)) - 3 / np.sqrt(10)) < 1e-15
    z = torch.zeros(3)
    with pytest.raises(ValueError, match="x and y: a zero vector"):
        sim.cosine(z, torch.ones(3))
    assert float(sim.cosine(z, torch.ones(3), eps=1e-12)) == 0.0


@pytest.mark.parametrize(
    "args, kwargs, exc, msg",
    [
        (([1.0], torch.ones(1)), {}, TypeError, "x must be a torch.Tensor"),
        ((torch.ones(2), torch.ones(3)), {}, ValueError, "x and y must have the same shape"),
        ((torch.ones(2), torch.ones(2, dtype=torch.int64)), {}, TypeError, "y must have a floating dtype"),
        ((torch.ones(2), torch.tensor([1.0, float("nan")])), {}, ValueError, "y contains NaN"),
        ((torch.ones(2), torch.ones(2)), {"dim": 1}, ValueError, "dim=1 is out of range"),
        ((torch.ones(2), torch.ones(2)), {"eps": -1.0}, ValueError, "eps must be >= 0"),
        ((torch.ones(2, 0), torch.ones(2, 0)), {}, ValueError, "x must have at least one entry"),
    ],
)
def test_cosine_validation(args, kwargs, exc, msg):
    with pytest.raises(exc, match=msg):
        sim.cosine(*args, **kwargs)


# ---------------------------------------------------------------- blockwise cosine
@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), st.integers(0, 10_000))
def test_blockwise_identity_and_bounds(k, seed):
    g = torch.Generator().manual_seed(seed)
    sizes = torch.randint(1, 6, (k,), generator=g).tolist()
    xs = [torch.randn(s, generator=g, dtype=F64) * torch.rand(1, generator=g, dtype=F64) * 5 for s in sizes]
    ys = [torch.randn(s, generator=g, dtype=F64) * torch.rand(1, generator=g, dtype=F64) * 5 for s in sizes]
    r = sim.blockwise_cosine(xs, ys)
    ref = _np_cos(torch.cat(xs).numpy(), torch.cat(ys).numpy())
    assert abs(float(r.global_) - ref) < 1e-12
    assert abs(float(r.norm_cos * (r.weights * r.local).sum()) - ref) < 1e-12
    assert abs(float(r.weights.sum()) - 1) < 1e-12 and bool((r.weights >= 0).all())
    lo, hi = float(r.local.min()), float(r.local.max())
    c = float(r.norm_cos)
    assert c * lo - 1e-12 <= ref <= c * hi + 1e-12        # weighted mean shrunk towards 0
    if lo >= 0:
        assert ref <= hi + 1e-12                            # the post's upper bound


def test_blockwise_matches_brute_force_per_block_and_shapes():
    g = torch.Generator().manual_seed(3)
    xs = [torch.randn(2, 3, generator=g, dtype=F64), torch.randn(4, generator=g, dtype=F64)]
    ys = [torch.randn(2, 3, generator=g, dtype=F64), torch.randn(4, generator=g, dtype=F64)]
    r = sim.blockwise_cosine(xs, ys)
    assert r.local.shape == (2,) and r.global_.shape == () and r.weights.shape == (2,)
    for k in range(2):
        assert abs(float(r.local[k]) - _np_cos(xs[k].numpy(), ys[k].numpy())) < 1e-12
        assert abs(float(r.norms_x[k]) - np.linalg.norm(xs[k].numpy())) < 1e-12


def test_blockwise_vanishing_construction():
    # x = [eps u, v], y = [u, eps v]: both local cosines 1, global 2 eps / (1 + eps^2).
    u, v = torch.tensor([0.6, 0.8], dtype=F64), torch.tensor([0.0, 1.0, 0.0], dtype=F64)
    for eps in (0.5, 0.1, 1e-3):
        r = sim.blockwise_cosine([eps * u, v], [u, eps * v])
        torch.testing.assert_close(r.local, torch.ones(2, dtype=F64), rtol=0, atol=1e-14)
        assert abs(float(r.global_) - 2 * eps / (1 + eps**2)) < 1e-14


def test_blockwise_zero_block_gets_zero_weight():
    xs = [torch.zeros(3), torch.tensor([1.0, 2.0])]
    ys = [torch.ones(3), torch.tensor([2.0, 1.0])]
    r = sim.blockwise_cosine(xs, ys)
    assert float(r.local[0]) == 0.0 and float(r.weights[0]) == 0.0
    assert abs(float(r.global_) - _np_cos([0, 0, 0, 1, 2], [1, 1, 1, 2, 1])) < 1e-6


@pytest.mark.parametrize(
    "xs, ys, exc, msg",
    [
        (torch.ones(3), [torch.ones(3)], TypeError, "xs and ys must be sequences"),
        ([], [], ValueError, "same, non-zero number of blocks"),
        ([torch.ones(2)], [torch.ones(2), torch.ones(2)], ValueError, "same, non-zero number of blocks"),
        ([torch.ones(2)], [torch.ones(3)], ValueError, r"xs\[0\] and ys\[0\] must have the same shape"),
        ([torch.ones(2), torch.tensor([float("inf"), 1.0])], [torch.ones(2)] * 2, ValueError, r"xs\[1\] contains NaN"),
        ([torch.ones(0)], [torch.ones(0)], ValueError, r"xs\[0\] must not be empty"),
        ([torch.zeros(2)], [torch.ones(2)], ValueError, "every block has a zero side"),
        ([torch.ones(2)], [torch.ones(2, dtype=torch.int32)], TypeError, r"ys\[0\] must have a floating dtype"),
    ],
)
def test_blockwise_validation(xs, ys, exc, msg):
    with pytest.raises(exc, match=msg):
        sim.blockwise_cosine(xs, ys)


# ---------------------------------------------------------------- Pearson and groups
@settings(max_examples=40, deadline=None)
@given(st.integers(2, 30), st.integers(0, 10_000))
def test_pearson_matches_numpy(n, seed):
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=n), rng.normal(size=n)
    got = float(sim.pearson(torch.tensor(x), torch.tensor(y)))
    assert abs(got - np.corrcoef(x, y)[0, 1]) < 1e-10


def test_pearson_batched_and_invariances():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(4, 9, generator=g, dtype=F64), torch.randn(4, 9, generator=g, dtype=F64)
    r = sim.pearson(x, y)
    torch.testing.assert_close(sim.pearson(3 * x + 7, 0.5 * y - 2), r, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(sim.pearson(x.T, y.T, dim=0), r, rtol=1e-12, atol=1e-14)


def test_simpson_example_numbers():
    xa = torch.tensor([0.0, 1, 2], dtype=F64)
    xb = torch.tensor([10.0, 11, 12], dtype=F64)
    ya, yb = xa + 10, torch.tensor([0.0, 1, 2], dtype=F64)
    assert abs(float(sim.pearson(xa, ya)) - 1) < 1e-14 and abs(float(sim.pearson(xb, yb)) - 1) < 1e-14
    pooled = float(sim.pearson(torch.cat([xa, xb]), torch.cat([ya, yb])))
    assert abs(pooled - (-146 / 154)) < 1e-14           # hand-computed: -146 / 154 = -0.948052
    within, between = sim.group_cross_products([xa, xb], [ya, yb])
    assert float(within) == pytest.approx(4.0, abs=1e-12) and float(between) == pytest.approx(-150.0, abs=1e-12)


@pytest.mark.parametrize(
    "x, y, exc, msg",
    [
        (torch.ones(4), torch.arange(4.0), ValueError, "must not be constant"),
        (torch.ones(1), torch.ones(1), ValueError, "at least two entries"),
        (torch.ones(3), "abc", TypeError, "y must be a torch.Tensor"),
    ],
)
def test_pearson_validation(x, y, exc, msg):
    with pytest.raises(exc, match=msg):
        sim.pearson(x, y)


@pytest.mark.parametrize(
    "xs, ys, exc, msg",
    [
        (torch.ones(3), [torch.ones(3)], TypeError, "sequences of 1-D tensors"),
        ([], [], ValueError, "same, non-zero number of groups"),
        ([torch.ones(2, 2)], [torch.ones(2, 2)], ValueError, r"xs\[0\] must have 1 dimension"),
        ([torch.ones(2)], [torch.ones(3)], ValueError, r"xs\[0\] and ys\[0\] must be non-empty"),
    ],
)
def test_group_cross_products_validation(xs, ys, exc, msg):
    with pytest.raises(exc, match=msg):
        sim.group_cross_products(xs, ys)


def test_group_split_sums_to_pooled():
    g = torch.Generator().manual_seed(5)
    xs = [torch.randn(n, generator=g, dtype=F64) + 3 * i for i, n in enumerate((4, 6, 5))]
    ys = [torch.randn(n, generator=g, dtype=F64) - 2 * i for i, n in enumerate((4, 6, 5))]
    w, b = sim.group_cross_products(xs, ys)
    x, y = torch.cat(xs), torch.cat(ys)
    assert abs(float(w + b) - float(((x - x.mean()) * (y - y.mean())).sum())) < 1e-10
