"""Tests for kexue_lib.linalg (P04): against NumPy/SciPy, torch.linalg and closed forms."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from scipy import special

from kexue_lib import linalg as la
from kexue_lib.device import randn

F64 = torch.float64


def _np_effective_rank(M: np.ndarray) -> float:
    s = np.linalg.svd(M, compute_uv=False)
    p = s / s.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def test_effective_rank_matches_numpy_on_a_batch():
    M = randn(3, 7, 5, seed=0, dtype=F64)
    ref = torch.tensor([_np_effective_rank(m) for m in M.numpy()], dtype=F64)
    torch.testing.assert_close(la.effective_rank(M), ref, rtol=1e-12, atol=0)


def test_effective_rank_of_equal_singular_values_is_their_count():
    # r equal non-zero singular values -> effective rank exactly r (orthogonal Q times diag)
    Q, _ = torch.linalg.qr(randn(9, 9, seed=1, dtype=F64))
    for r in (1, 3, 9):
        D = torch.diag(torch.tensor([2.5] * r + [0.0] * (9 - r), dtype=F64))
        assert abs(float(la.effective_rank(Q @ D @ Q.T)) - r) < 1e-9


@settings(max_examples=40, deadline=None)
@given(m=st.integers(1, 8), n=st.integers(1, 8), seed=st.integers(0, 10_000), c=st.floats(1e-3, 1e3))
def test_effective_rank_is_scale_invariant_and_bounded(m, n, seed, c):
    M = randn(m, n, seed=seed, dtype=F64)
    er = float(la.effective_rank(M))
    assert 1 - 1e-12 <= er <= min(m, n) + 1e-9
    assert abs(float(la.effective_rank(c * M)) - er) < 1e-9 * er


def test_numerical_rank_matches_torch_matrix_rank():
    A = randn(6, 3, seed=2, dtype=F64) @ randn(3, 8, seed=3, dtype=F64)     # rank 3 exactly
    for rtol in (None, 1e-12, 1e-6):
        expected = torch.linalg.matrix_rank(A) if rtol is None else torch.linalg.matrix_rank(A, rtol=rtol)
        assert int(la.numerical_rank(A, rtol=rtol)) == int(expected) == 3
    B = torch.stack([A[:, :6], torch.eye(6, dtype=F64)])
    assert la.numerical_rank(B).tolist() == [3, 6]
    assert int(la.numerical_rank(torch.zeros(4, 4, dtype=F64))) == 0
    assert int(la.numerical_rank(torch.diag(torch.tensor([1.0, 1e-3, 1e-9], dtype=F64)), rtol=1e-6)) == 2


def test_singular_values_descending_like_numpy():
    M = randn(5, 4, seed=4, dtype=F64)
    np.testing.assert_allclose(la.singular_values(M).numpy(), np.linalg.svd(M.numpy(), compute_uv=False), rtol=1e-12)


def test_tri_slogdet_matches_slogdet_on_well_conditioned_triangles():
    L = torch.tril(randn(4, 6, 6, seed=5, dtype=F64)) + 3 * torch.eye(6, dtype=F64)
    L[0, 2, 2] = -1.5                                    # one negative pivot: sign -1
    sign, logabs = torch.linalg.slogdet(L)
    s2, l2 = la.tri_slogdet(L, lower=True)
    torch.testing.assert_close(l2, logabs, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(s2, sign)
    assert float(s2[0]) == -1.0
    U = L.transpose(-2, -1)
    torch.testing.assert_close(la.tri_logdet(U, lower=False), logabs, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(la.tri_logdet(U), logabs, rtol=1e-12, atol=1e-12)


def test_tri_logdet_of_uniform_causal_attention_is_minus_log_factorial():
    n = 256
    A = torch.tril(torch.ones(n, n, dtype=F64)) / torch.arange(1, n + 1, dtype=F64)[:, None]
    ref = -special.gammaln(n + 1)
    assert abs(float(la.tri_logdet(A)) - ref) < 1e-9
    assert abs(ref - (-1167.257)) < 1e-3                # the brief's number


def test_tri_slogdet_zero_diagonal():
    M = torch.tril(torch.ones(3, 3, dtype=F64))
    M[1, 1] = 0.0
    sign, logabs = la.tri_slogdet(M)
    assert float(sign) == 0.0 and math.isinf(float(logabs)) and float(logabs) < 0


# ----------------------------------------------------------------------------- validation
def test_validation_errors():
    with pytest.raises(TypeError, match="M must be a torch.Tensor"):
        la.effective_rank(np.eye(3))
    with pytest.raises(TypeError, match="floating"):
        la.numerical_rank(torch.eye(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="at least 2 dimension"):
        la.effective_rank(torch.ones(3, dtype=F64))
    with pytest.raises(ValueError, match="non-empty"):
        la.effective_rank(torch.ones(0, 3, dtype=F64))
    with pytest.raises(ValueError, match="NaN"):
        la.numerical_rank(torch.tensor([[1.0, float("nan")], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="all-zero"):
        la.effective_rank(torch.zeros(2, 3, 3, dtype=F64))
    with pytest.raises(ValueError, match="rtol"):
        la.numerical_rank(torch.eye(3, dtype=F64), rtol=-1e-3)
    with pytest.raises(ValueError, match="square"):
        la.tri_logdet(torch.ones(3, 4, dtype=F64))
    with pytest.raises(ValueError, match="must be triangular"):
        la.tri_logdet(torch.ones(3, 3, dtype=F64))
    with pytest.raises(ValueError, match="lower-triangular"):
        la.tri_logdet(torch.triu(torch.ones(3, 3, dtype=F64)), lower=True)
    with pytest.raises(ValueError, match="upper-triangular"):
        la.tri_logdet(torch.tril(torch.ones(3, 3, dtype=F64)), lower=False)
    with pytest.raises(TypeError, match="lower must be a bool"):
        la.tri_logdet(torch.eye(3, dtype=F64), lower="yes")


def test_sv_variants_agree_with_matrix_versions_and_validate():
    M = randn(2, 6, 4, seed=7, dtype=F64)
    s = la.singular_values(M)
    torch.testing.assert_close(la.effective_rank_sv(s.flip(-1)), la.effective_rank(M), rtol=1e-13, atol=0)
    assert torch.equal(la.numerical_rank_sv(s, rtol=1e-6), la.numerical_rank(M, rtol=1e-6))
    with pytest.raises(ValueError, match="non-negative"):
        la.effective_rank_sv(torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match="at least one"):
        la.numerical_rank_sv(torch.ones(0), rtol=0.1)
    with pytest.raises(ValueError, match="at least 1 dimension"):
        la.effective_rank_sv(torch.tensor(1.0))


def test_tri_logdet_accepts_a_batch_mixing_lower_and_upper():
    L = torch.tril(randn(6, 6, seed=8, dtype=F64)) + 4 * torch.eye(6, dtype=F64)
    B = torch.stack([L, L.T])
    torch.testing.assert_close(la.tri_logdet(B), torch.linalg.slogdet(B)[1], rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="must be triangular"):
        la.tri_logdet(torch.stack([L, L @ L.T]))
