"""Tests for kexue_lib.recurrent (P23): scans against a brute-force sum, LRU against a dense loop, RWKV forms."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from kexue_lib import recurrent as rc

F64, C128 = torch.float64, torch.complex128


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _brute_force(lam: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """x_t = sum_k lam^{t-k} u_k for time-invariant lam (d,), u (..., n, d), via an explicit n x n kernel."""
    n = u.shape[-2]
    k = torch.arange(n)
    expo = (k[:, None] - k[None, :]).clamp(min=0).to(F64)
    kern = torch.where((k[:, None] >= k[None, :])[..., None], lam.to(C128) ** expo[..., None], 0)
    return torch.einsum("tkd,...kd->...td", kern, u.to(C128))


def _random_lam(d: int, g: torch.Generator) -> torch.Tensor:
    r = 0.5 + 0.5 * torch.rand(d, generator=g, dtype=F64)
    return torch.polar(r, 2 * math.pi * torch.rand(d, generator=g, dtype=F64))


@pytest.mark.parametrize("method", ["sequential", "parallel", "doubling", "odd_even", "cumsum"])
@pytest.mark.parametrize("n", [1, 2, 3, 7, 16, 37, 100])
def test_scan_matches_brute_force_complex(method, n):
    g = _gen(n)
    lam = _random_lam(6, g)
    u = torch.randn(2, n, 6, generator=g, dtype=C128)
    got = rc.linear_scan(lam, u, method=method)
    torch.testing.assert_close(got, _brute_force(lam, u), rtol=0, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 90), seed=st.integers(0, 10_000), method=st.sampled_from(["parallel", "doubling", "odd_even"]))
def test_parallel_scans_equal_sequential_time_varying(n, seed, method):
    g = _gen(seed)
    lam = torch.complex(torch.randn(3, n, 4, generator=g, dtype=F64), torch.randn(3, n, 4, generator=g, dtype=F64)) / 2
    u = torch.randn(3, n, 4, generator=g, dtype=F64)
    torch.testing.assert_close(rc.linear_scan(lam, u, method=method),
                               rc.linear_scan(lam, u, method="sequential"), rtol=1e-12, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 60), seed=st.integers(0, 10_000))
def test_scan_is_linear_and_splits_at_any_point(n, seed):
    # Invariants: linear in u; scanning [0, t) then continuing from its last state equals one scan.
    g = _gen(seed)
    lam = _random_lam(3, g)
    u1, u2 = (torch.randn(n, 3, generator=g, dtype=C128) for _ in range(2))
    x = rc.linear_scan(lam, u1 + 2 * u2)
    torch.testing.assert_close(x, rc.linear_scan(lam, u1) + 2 * rc.linear_scan(lam, u2), rtol=1e-12, atol=1e-12)
    t = int(torch.randint(1, n, (1,), generator=g))
    head = rc.linear_scan(lam, u1[:t])
    tail = rc.linear_scan(lam, u1[t:], h0=head[-1])
    torch.testing.assert_close(torch.cat([head, tail]), rc.linear_scan(lam, u1), rtol=1e-12, atol=1e-12)


def test_other_time_axis_h0_and_python_scalars():
    g = _gen(1)
    u = torch.randn(4, 11, 5, generator=g, dtype=F64)          # time along the last axis (dim=-1)
    h0 = torch.randn(4, 11, generator=g, dtype=F64)
    ref = torch.stack([h0 * 0.8**(t + 1) + sum(0.8**(t - k) * u[..., k] for k in range(t + 1)) for t in range(5)], -1)
    for m in rc.SCAN_METHODS:
        torch.testing.assert_close(rc.linear_scan(0.8, u, dim=-1, method=m, h0=h0), ref, rtol=1e-12, atol=1e-12)
    out = rc.linear_scan(0.5j, torch.ones(3, 1, dtype=torch.float32))
    assert out.dtype == torch.complex64
    torch.testing.assert_close(out[:, 0], torch.tensor([1, 1 + 0.5j, 1 + 0.5j - 0.25], dtype=torch.complex64))
    u32 = torch.ones(4, 2, dtype=torch.float32)
    assert rc.linear_scan(0.5, u32).dtype == torch.float32
    assert rc.linear_scan(0.5, u32.to(torch.complex64)).dtype == torch.complex64
    assert rc.linear_scan(torch.tensor([0.5, 0.25], dtype=F64), u32).dtype == F64


def test_scan_gradients():
    g = _gen(2)
    lam = (0.3 + 0.6 * torch.rand(3, generator=g, dtype=F64)).requires_grad_(True)
    u = torch.randn(9, 3, generator=g, dtype=F64, requires_grad=True)
    for m in ("parallel", "doubling", "odd_even", "cumsum"):
        assert torch.autograd.gradcheck(lambda a, b: rc.linear_scan(a, b, method=m), (lam, u))
    gs = torch.autograd.grad(rc.linear_scan(lam, u, method="sequential").sum(), (lam, u))
    gp = torch.autograd.grad(rc.linear_scan(lam, u, method="parallel").sum(), (lam, u))
    for a, b in zip(gs, gp):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_cumsum_overflows_where_predicted_and_parallel_does_not():
    lam = torch.polar(torch.tensor([0.9]), torch.tensor([0.3]))
    u = torch.randn(2000, 1, generator=_gen(0)).to(torch.complex64)
    naive = rc.linear_scan(lam, u, method="cumsum")[:, 0]
    first_bad = int((~torch.isfinite(naive)).nonzero()[0])
    k_star = math.log(torch.finfo(torch.float32).max) / -math.log(0.9)     # |lam|^{-k} alone overflows past k*
    assert 780 < first_bad <= math.floor(k_star) + 1
    assert bool(torch.isfinite(rc.linear_scan(lam, u)).all())


def test_scan_depth():
    assert [rc.scan_depth(n) for n in (1, 2, 3, 4, 5, 1024, 1025)] == [0, 1, 2, 2, 3, 10, 11]


def test_ring_init_statistics():
    lam = rc.ring_init(20000, r_min=0.4, r_max=0.9, max_phase=math.pi, generator=_gen(3), dtype=F64)
    assert lam.dtype == C128 and lam.shape == (20000,)
    r2 = lam.abs() ** 2
    assert float(r2.min()) >= 0.16 - 1e-12 and float(r2.max()) <= 0.81 + 1e-12
    from scipy import stats
    assert stats.kstest(((r2 - 0.16) / 0.65).numpy(), "uniform").pvalue > 1e-3
    assert stats.kstest((lam.angle() / math.pi).numpy(), "uniform").pvalue > 1e-3
    assert rc.ring_init(5).dtype == torch.complex64


def test_lru_matches_dense_loop_and_init():
    g = _gen(4)
    H, N, L = 3, 8, 40
    lru = rc.LRU(H, N, generator=g, dtype=F64)
    u = torch.randn(2, L, H, generator=g, dtype=F64)
    lam = torch.exp(torch.complex(-torch.exp(lru.nu_log), torch.exp(lru.theta_log))).detach()
    B = torch.complex(lru.B_re, lru.B_im).detach() * torch.exp(lru.gamma_log).detach()[:, None]
    C = torch.complex(lru.C_re, lru.C_im).detach()
    x = torch.zeros(2, N, dtype=C128)
    ys = []
    for t in range(L):
        x = lam * x + u[:, t].to(C128) @ B.T
        ys.append((x @ C.T).real + lru.D.detach() * u[:, t])
    ref = torch.stack(ys, 1)
    for m in ("parallel", "sequential", "doubling", "odd_even"):
        torch.testing.assert_close(lru(u, method=m).detach(), ref, rtol=1e-12, atol=1e-12)
    r = lam.abs()
    assert float(r.min()) >= 0.9 and float(r.max()) <= 0.999
    torch.testing.assert_close(torch.exp(lru.gamma_log).detach(), torch.sqrt(1 - r**2), rtol=1e-12, atol=0)
    assert "d_state=8" in repr(lru)
    y = lru(u)
    y.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in lru.parameters())


def test_slru_is_real_and_matches_dense_loop():
    g = _gen(5)
    lru = rc.LRU(2, 4, real=True, generator=g, dtype=F64, method="doubling")
    assert lru.theta_log is None and lru.B_im is None
    lam = lru.lam().detach()
    assert lam.dtype == F64 and bool(((lam >= 0.9) & (lam <= 0.999)).all())
    u = torch.randn(13, 2, generator=g, dtype=F64)
    B = lru.B().detach() * torch.exp(lru.gamma_log).detach()[:, None]
    x, ys = torch.zeros(4, dtype=F64), []
    for t in range(13):
        x = lam * x + B @ u[t]
        ys.append(lru.C().detach() @ x + lru.D.detach() * u[t])
    torch.testing.assert_close(lru(u).detach(), torch.stack(ys), rtol=1e-12, atol=1e-12)


def test_lru_normalised_state_variance():
    # E|x_t|^2 = E|B u|^2 (1 - r^{2(t+1)}) with gamma = sqrt(1 - r^2): at most E|Bu|^2.
    g = _gen(6)
    lru = rc.LRU(4, 6, r_min=0.5, r_max=0.9, generator=g, dtype=F64)
    u = torch.randn(20000, 30, 4, generator=g, dtype=F64)
    with torch.no_grad():
        x = lru.states(u)
        bu2 = (lru.B().abs() ** 2).sum(-1)     # E|B u|^2 per state for unit-variance u
        r2 = lru.lam().abs() ** 2
    t = torch.arange(30, dtype=F64)[:, None]
    theory = bu2 * (1 - r2 ** (t + 1))
    torch.testing.assert_close((x.abs() ** 2).mean(0), theory, rtol=0.05, atol=0)


def test_diagonalize_linear_rnn_equivalence():
    g = _gen(7)
    d, L = 6, 25
    A = torch.randn(d, d, generator=g, dtype=F64) / math.sqrt(d)
    B = torch.randn(d, 2, generator=g, dtype=F64)
    C = torch.randn(3, d, generator=g, dtype=F64)
    u = torch.randn(L, 2, generator=g, dtype=F64)
    x, ys = torch.zeros(d, dtype=F64), []
    for t in range(L):
        x = A @ x + B @ u[t]
        ys.append(C @ x)
    lam, Bt, Ct = rc.diagonalize_linear_rnn(A, B, C)
    z = rc.linear_scan(lam, u.to(C128) @ Bt.T)
    y = z @ Ct.T
    torch.testing.assert_close(y.real, torch.stack(ys), rtol=1e-10, atol=1e-10)
    assert float(y.imag.abs().max()) < 1e-10


def _wkv_direct(k, v, w, u):
    n = k.shape[-2]
    out = []
    for t in range(n):
        i = torch.arange(t)
        wts = torch.exp(-(t - 1 - i)[:, None] * w + k[..., :t, :])
        cur = torch.exp(u + k[..., t, :])
        out.append(((wts * v[..., :t, :]).sum(-2) + cur * v[..., t, :]) / (wts.sum(-2) + cur))
    return torch.stack(out, -2)


def test_rwkv_forms_agree_with_direct_sum():
    g = _gen(8)
    k = torch.randn(2, 17, 5, generator=g, dtype=F64)
    v = torch.randn(2, 17, 5, generator=g, dtype=F64)
    w = torch.rand(5, generator=g, dtype=F64) + 0.05
    u = torch.randn(5, generator=g, dtype=F64)
    ref = _wkv_direct(k, v, w, u)
    torch.testing.assert_close(rc.rwkv_wkv(k, v, w, u), ref, rtol=1e-12, atol=1e-12)
    for m in ("parallel", "sequential"):
        torch.testing.assert_close(rc.rwkv_su_form(k, v, torch.exp(-w), torch.exp(u), method=m), ref,
                                   rtol=1e-10, atol=1e-10)


def test_rwkv_wkv_stable_for_huge_keys_where_su_form_overflows():
    g = _gen(9)
    k = 100 + 5 * torch.randn(1, 12, 3, generator=g)
    v = torch.randn(1, 12, 3, generator=g)
    w, u = torch.full((3,), 0.3), torch.zeros(3)
    stable = rc.rwkv_wkv(k, v, w, u)
    ref = _wkv_direct((k - 100).double(), v.double(), w.double(), u.double())   # shifting all k cancels
    torch.testing.assert_close(stable.double(), ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="exp\\(k\\) overflows"):
        rc.rwkv_su_form(k, v, torch.exp(-w), torch.exp(u))


# ---- validation errors -------------------------------------------------------------------

def test_linear_scan_validation():
    u = torch.ones(4, 2)
    with pytest.raises(TypeError, match="u must be a torch.Tensor"):
        rc.linear_scan(0.5, [1.0, 2.0])
    with pytest.raises(TypeError, match="u must have a floating or complex"):
        rc.linear_scan(0.5, torch.ones(4, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="u contains NaN"):
        rc.linear_scan(0.5, torch.full((4, 2), float("nan")))
    with pytest.raises(ValueError, match="at least 1 dimension"):
        rc.linear_scan(0.5, torch.tensor(1.0))
    with pytest.raises(ValueError, match="at least one time step"):
        rc.linear_scan(0.5, torch.ones(0, 2))
    with pytest.raises(ValueError, match="dim=5 is out of range"):
        rc.linear_scan(0.5, u, dim=5)
    with pytest.raises(ValueError, match="method must be one of"):
        rc.linear_scan(0.5, u, method="blelloch_tree")
    with pytest.raises(ValueError, match="does not broadcast to u"):
        rc.linear_scan(torch.ones(3), u)
    with pytest.raises(TypeError, match="lam must have a floating or complex"):
        rc.linear_scan(torch.ones(2, dtype=torch.int32), u)
    with pytest.raises(ValueError, match="h0 with shape"):
        rc.linear_scan(0.5, u, h0=torch.ones(3))
    with pytest.raises(ValueError, match="time-invariant"):
        rc.linear_scan(torch.full((4, 2), 0.5), u, method="cumsum")
    with pytest.raises(ValueError, match="real lam > 0"):
        rc.linear_scan(-0.5, u, method="cumsum")
    with pytest.raises(ValueError, match="lam != 0"):
        rc.linear_scan(torch.zeros(2, dtype=torch.complex64), u, method="cumsum")
    with pytest.raises(ValueError, match="n must be >= 1"):
        rc.scan_depth(0)


def test_ring_init_and_lru_validation():
    with pytest.raises(ValueError, match="r_max must be >="):
        rc.ring_init(4, r_min=0.9, r_max=0.5)
    with pytest.raises(ValueError, match="max_phase must be <="):
        rc.ring_init(4, max_phase=7.0)
    with pytest.raises(ValueError, match="d must be >= 1"):
        rc.ring_init(0)
    with pytest.raises(TypeError, match="dtype must be a real floating"):
        rc.ring_init(4, dtype=torch.int64)
    with pytest.raises(ValueError, match="r_max must be < 1"):
        rc.LRU(2, 3, r_max=1.0)
    with pytest.raises(ValueError, match="r_min must be > 0"):
        rc.LRU(2, 3, r_min=0.0)
    with pytest.raises(ValueError, match="method must be one of"):
        rc.LRU(2, 3, method="fft")
    lru = rc.LRU(2, 3)
    with pytest.raises(ValueError, match="last dimension d_model=2"):
        lru(torch.ones(5, 3))
    with pytest.raises(ValueError, match="at least 2 dimension"):
        lru(torch.ones(5))


def test_diagonalize_and_rwkv_validation():
    A, B, C = torch.eye(3, dtype=F64), torch.ones(3, 2, dtype=F64), torch.ones(1, 3, dtype=F64)
    with pytest.raises(ValueError, match="A must be square"):
        rc.diagonalize_linear_rnn(torch.ones(3, 2, dtype=F64), B, C)
    with pytest.raises(ValueError, match="B must have 3 rows"):
        rc.diagonalize_linear_rnn(A, torch.ones(2, 2, dtype=F64), C)
    k = torch.zeros(4, 3)
    with pytest.raises(ValueError, match="k and v must have the same shape"):
        rc.rwkv_wkv(k, torch.zeros(4, 2), torch.ones(3), torch.ones(3))
    with pytest.raises(ValueError, match=r"w must have shape \(3,\)"):
        rc.rwkv_wkv(k, k, torch.ones(2), torch.ones(3))
    with pytest.raises(ValueError, match="lam must be > 0"):
        rc.rwkv_su_form(k, k, torch.zeros(3), torch.ones(3))
    with pytest.raises(ValueError, match="k must have at least 2"):
        rc.rwkv_wkv(torch.zeros(3), torch.zeros(3), torch.ones(3), torch.ones(3))


def test_scans_do_not_modify_their_inputs():
    g = _gen(10)
    lam, u = _random_lam(4, g), torch.randn(2, 19, 4, generator=g, dtype=C128)
    lam0, u0 = lam.clone(), u.clone()
    for m in rc.SCAN_METHODS:
        rc.linear_scan(lam, u, method=m)
    assert torch.equal(lam, lam0) and torch.equal(u, u0)
