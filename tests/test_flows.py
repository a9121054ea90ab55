"""Tests for kexue_lib.flows (P11) against scipy, closed forms, autograd and brute force."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from scipy import integrate, linalg, optimize, stats

from kexue_lib import flows as F

F64, F32 = torch.float64, torch.float32
INF = math.inf


def _rng(seed=0):
    return torch.Generator().manual_seed(seed)


def _spd(d, seed=0):
    g = _rng(seed)
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=F64))
    return Q @ torch.diag(torch.logspace(0, 1, d, dtype=F64)) @ Q.T


# ---------------------------------------------------------------- flows on R^d

def test_quadratic_flow_matches_scipy_expm_batched_and_scalar_t():
    A = _spd(4)
    x0 = torch.randn(3, 4, generator=_rng(1), dtype=F64)
    ts = torch.tensor([0.0, 0.3, 1.7], dtype=F64)
    got = F.quadratic_flow(A, x0, ts)
    assert got.shape == (3, 3, 4)
    for k, t in enumerate(ts.tolist()):
        ref = x0.numpy() @ linalg.expm(-t * A.numpy()).T
        np.testing.assert_allclose(got[k].numpy(), ref, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(F.quadratic_flow(A, x0, 0.3), got[1], rtol=1e-14, atol=0)
    assert F.quadratic_flow(A.float(), x0.float(), 0.5).dtype == F32


def test_gd_path_closed_form_and_per_run_lr():
    lam = torch.tensor([1.0, 10.0], dtype=F64)
    x0 = torch.ones(2, dtype=F64)
    path = F.gd_path(lambda x: lam * x, x0, lr=0.01, steps=100)
    assert path.shape == (101, 2)
    torch.testing.assert_close(path[-1], (1 - 0.01 * lam) ** 100, rtol=1e-12, atol=0)
    np.testing.assert_allclose(path[-1].numpy(), [0.366032, 2.656e-5], rtol=1e-4)   # the brief's numbers
    lrs = torch.tensor([[0.01], [0.05], [0.21]], dtype=F64)
    batch = F.gd_path(lambda x: lam * x, x0.expand(3, 2), lr=lrs, steps=50)
    torch.testing.assert_close(batch[-1], (1 - lrs * lam) ** 50, rtol=1e-12, atol=0)
    assert batch[-1, 2, 1].abs() > 100 and batch[-1, 1, 1].abs() < 1e-6   # diverges past 2/10 = 0.2


def _banana(x):
    return (1 - x[..., 0]) ** 2 + 3.0 * (x[..., 1] - x[..., 0] ** 2) ** 2


def _banana_grad(x):
    a, b = x[..., 0], x[..., 1]
    return torch.stack([-2 * (1 - a) - 12.0 * a * (b - a * a), 6.0 * (b - a * a)], dim=-1)


def test_gradient_flow_rk4_matches_solve_ivp_and_has_order_four():
    x0 = torch.tensor([-1.0, 1.5], dtype=F64)
    ts = torch.linspace(0, 2, 21, dtype=F64)
    sol = integrate.solve_ivp(lambda t, x: -_banana_grad(torch.tensor(x)).numpy(), (0, 2), x0.numpy(),
                              t_eval=ts.numpy(), rtol=1e-12, atol=1e-12, method="DOP853")
    got = F.gradient_flow(_banana_grad, x0, ts, substeps=40)
    np.testing.assert_allclose(got.numpy(), sol.y.T, atol=1e-8)
    errs = [np.abs(F.gradient_flow(_banana_grad, x0, ts, substeps=s)[-1].numpy() - sol.y[:, -1]).max() for s in (8, 16)]
    assert 12 < errs[0] / errs[1] < 20                      # fourth order: halving h divides the error by ~16
    assert bool((_banana(got)[1:] <= _banana(got)[:-1]).all())   # f decreases along the flow


def test_gradient_flow_euler_is_gd_and_quadratic_matches_expm():
    A = _spd(3, seed=2)
    x0 = torch.randn(5, 3, generator=_rng(3), dtype=F64)
    ts = torch.arange(0, 31, dtype=F64) * 0.05
    eul = F.gradient_flow(lambda x: x @ A, x0, ts, method="euler")
    torch.testing.assert_close(eul, F.gd_path(lambda x: x @ A, x0, lr=0.05, steps=30), rtol=1e-12, atol=1e-14)
    rk = F.gradient_flow(lambda x: x @ A, x0, ts, substeps=10)
    torch.testing.assert_close(rk, F.quadratic_flow(A, x0, ts), rtol=0, atol=1e-7)
    assert F.gradient_flow(lambda x: x, x0, ts[:1]).shape == (1, 5, 3)


# ---------------------------------------------------------------- steepest descent

@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), p=st.sampled_from([1.0, 1.2, 1.5, 2.0, 3.0, 7.0, INF]), d=st.integers(1, 9))
def test_steepest_direction_is_unit_and_attains_minus_dual_norm(seed, p, d):
    g = torch.randn(4, d, generator=_rng(seed), dtype=F64) * 10 ** (torch.rand(1, generator=_rng(seed)) * 4 - 2).item()
    phi, dual = F.steepest_direction(g, p)
    q = 1.0 if p == INF else (INF if p == 1.0 else p / (p - 1))
    torch.testing.assert_close(torch.linalg.vector_norm(phi, ord=p, dim=-1), torch.ones(4, dtype=F64), rtol=1e-10, atol=0)
    torch.testing.assert_close(dual, torch.linalg.vector_norm(g, ord=q, dim=-1), rtol=1e-10, atol=0)
    torch.testing.assert_close((phi * g).sum(-1), -dual, rtol=1e-10, atol=0)


@pytest.mark.parametrize("p", [1.0, 1.5, 2.0, 4.0, INF])
def test_steepest_direction_beats_brute_force_on_the_unit_sphere(p):
    g = torch.tensor([0.8, -2.1], dtype=F64)
    th = np.linspace(0, 2 * np.pi, 200_001)
    u = np.stack([np.cos(th), np.sin(th)], 1)
    u = u / np.linalg.norm(u, ord=p, axis=1, keepdims=True)
    brute = (u @ g.numpy()).min()
    phi, dual = F.steepest_direction(g, p)
    assert float((phi * g).sum()) <= brute + 1e-12
    assert abs(brute + float(dual)) < 1e-6


def test_steepest_direction_limits_zero_gradient_and_extreme_p():
    g = torch.tensor([[0.5, -3.0, 2.0], [0.0, 0.0, 0.0]], dtype=F64)
    phi2, _ = F.steepest_direction(g, 2)
    torch.testing.assert_close(phi2[0], -g[0] / g[0].norm(), rtol=1e-14, atol=0)
    assert torch.equal(F.steepest_direction(g, INF)[0][0], -torch.sign(g[0]))
    assert torch.equal(F.steepest_direction(g, 1)[0][0], torch.tensor([0.0, 1.0, 0.0], dtype=F64))
    for p in (1.0, 1.0001, 2.0, 50.0, INF):
        phi, dual = F.steepest_direction(g, p)
        assert torch.equal(phi[1], torch.zeros(3, dtype=F64)) and dual[1] == 0
        assert bool(torch.isfinite(phi).all())
    huge = torch.tensor([1e300, -1e299], dtype=F64)                   # |g|^(q-1) would overflow unscaled
    phi, dual = F.steepest_direction(huge, 1.01)
    expected = float(torch.linalg.vector_norm(huge / 1e300, ord=101)) * 1e300          # q = 1.01 / 0.01 = 101
    assert bool(torch.isfinite(phi).all()) and math.isclose(float(dual), expected, rel_tol=1e-10)


@pytest.mark.parametrize("p", [1.5, 2.0, 3.0])
def test_steepest_step_matches_scipy_minimize(p):
    g = np.array([0.7, -1.3, 0.2, 2.2])
    lr = 0.3
    obj = lambda D: np.linalg.norm(D, ord=p) ** 2 / (2 * lr) + g @ D          # noqa: E731
    ref = optimize.minimize(obj, -lr * g, method="Nelder-Mead", options=dict(xatol=1e-11, fatol=1e-14, maxiter=40_000)).x
    got = F.steepest_step(torch.tensor(g), lr=lr, p=p).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-6)
    assert obj(got) <= obj(ref) + 1e-12
    if p == 2.0:
        np.testing.assert_allclose(got, -lr * g, rtol=1e-14)


def test_steepest_step_inf_norm_brute_force_2d():
    g = np.array([0.4, -1.1])
    lr = 0.5
    grid = np.linspace(-2, 2, 801)
    D = np.stack(np.meshgrid(grid, grid), -1).reshape(-1, 2)
    vals = np.abs(D).max(1) ** 2 / (2 * lr) + D @ g
    got = F.steepest_step(torch.tensor(g), lr=lr, p=INF).numpy()
    np.testing.assert_allclose(got, -lr * np.abs(g).sum() * np.sign(g), rtol=1e-14)
    assert np.abs(D[vals.argmin()] - got).max() < 1e-2


# ---------------------------------------------------------------- Gaussian KL flow

def test_gaussian_kl_flow_numbers_and_ode():
    mu, var = F.gaussian_kl_flow(torch.tensor(3.0, dtype=F64), torch.tensor(0.25, dtype=F64), torch.tensor(2.0, dtype=F64))
    assert math.isclose(float(mu), 0.406006, abs_tol=1e-6) and math.isclose(float(var), 0.986263, abs_tol=1e-6)
    # against the moment ODE for a non-standard target, integrated by scipy
    mp, vp = 1.5, 2.0
    sol = integrate.solve_ivp(lambda t, y: [-(y[0] - mp) / vp, 2 - 2 * y[1] / vp], (0, 3), [-1.0, 0.1],
                              t_eval=[0.5, 3.0], rtol=1e-12, atol=1e-12)
    ts = torch.tensor([0.5, 3.0], dtype=F64)
    m, v = F.gaussian_kl_flow(torch.tensor(-1.0, dtype=F64), torch.tensor(0.1, dtype=F64), ts, mu_p=mp, var_p=vp)
    np.testing.assert_allclose(m.numpy(), sol.y[0], rtol=1e-9)
    np.testing.assert_allclose(v.numpy(), sol.y[1], rtol=1e-9)


def test_gaussian_kl_against_quadrature_and_the_briefs_table():
    for mq, vq, mp, vp in [(3.0, 0.25, 0.0, 1.0), (-0.4, 2.0, 1.0, 0.5)]:
        q, p = stats.norm(mq, math.sqrt(vq)), stats.norm(mp, math.sqrt(vp))
        ref = integrate.quad(lambda x: q.pdf(x) * (q.logpdf(x) - p.logpdf(x)), -30, 30, limit=200)[0]
        got = F.gaussian_kl(torch.tensor(mq, dtype=F64), torch.tensor(vq, dtype=F64), mp, vp)
        assert math.isclose(float(got), ref, rel_tol=1e-8)
    ts = torch.arange(0, 3.01, 0.5, dtype=F64)
    m, v = F.gaussian_kl_flow(torch.full_like(ts, 3.0), torch.full_like(ts, 0.25), ts)
    table = [4.8181, 1.6789, 0.6118, 0.2244, 0.0825, 0.0303, 0.0112]          # the brief's KL values
    np.testing.assert_allclose(F.gaussian_kl(m, v).numpy(), table, atol=6e-5)


# ---------------------------------------------------------------- scores and particles

def test_gaussian_fit_score_matches_numpy_mle_fit():
    mix = torch.tensor([[1.0, 0.3, 0], [0, 0.5, 0.2], [0, 0, 2.0]], dtype=F64)
    x = torch.randn(500, 3, generator=_rng(4), dtype=F64) @ mix
    C = np.cov(x.numpy().T, bias=True)
    ref = -(x.numpy() - x.numpy().mean(0)) @ np.linalg.inv(C)
    np.testing.assert_allclose(F.gaussian_fit_score(x).numpy(), ref, rtol=1e-10, atol=1e-12)


def test_kde_score_matches_autograd_of_log_kde():
    y = torch.randn(40, 2, generator=_rng(5), dtype=F64)
    x = torch.randn(7, 2, generator=_rng(6), dtype=F64).requires_grad_(True)
    h = 0.4
    logq = torch.logsumexp(-((x[:, None, :] - y[None]) ** 2).sum(-1) / (2 * h * h), dim=1)
    (ref,) = torch.autograd.grad(logq.sum(), x)
    torch.testing.assert_close(F.kde_score(x.detach(), bandwidth=h, ref=y), ref, rtol=1e-10, atol=1e-12)
    far = torch.tensor([[60.0, 0.0]], dtype=F64)                       # every kernel underflows naively
    assert bool(torch.isfinite(F.kde_score(far, bandwidth=0.1, ref=y)).all())
    assert F.kde_score(y, bandwidth=h).shape == y.shape


def test_particle_ode_moves_empirical_moments_along_the_closed_form():
    x0 = 3.0 + 0.5 * torch.randn(2000, 1, generator=_rng(7), dtype=F64)
    dt, steps = 2e-3, 500
    path = F.wflow_kl_particles(x0, lambda x: -x, dt=dt, steps=steps, record_every=125)
    assert path.shape == (5, 2000, 1)
    m0, v0 = x0.mean(), x0.var(unbiased=False)
    for k in range(5):
        t = torch.tensor(k * 125 * dt, dtype=F64)
        m, v = F.gaussian_kl_flow(m0, v0, t)
        assert abs(float(path[k].mean() - m)) < 4e-3 and abs(float(path[k].var(unbiased=False) - v)) < 4e-3
    # the KDE version also transports the cloud towards the target
    kde = F.wflow_kl_particles(x0[:300], lambda x: -x, dt=0.04, steps=50, q_score="kde", bandwidth=0.3, record_every=50)
    assert abs(float(kde[-1].mean()) - 3 * math.exp(-2)) < 0.05


def test_langevin_moments_match_the_exact_euler_maruyama_recursion():
    n, dt, steps = 20_000, 0.01, 200
    x0 = 3.0 + 0.5 * torch.randn(n, 1, generator=_rng(8), dtype=F64)
    path = F.langevin(x0, lambda x: -x, dt=dt, steps=steps, gen=torch.Generator().manual_seed(9), record_every=100)
    assert path.shape == (3, n, 1)
    m, v = float(x0.mean()), float(x0.var(unbiased=False))
    for _ in range(steps):                                    # x <- (1 - dt) x + sqrt(2 dt) xi
        m, v = (1 - dt) * m, (1 - dt) ** 2 * v + 2 * dt
    assert abs(float(path[-1].mean()) - m) < 4 * math.sqrt(v / n)
    assert abs(float(path[-1].var()) - v) < 4 * v * math.sqrt(2 / n)
    again = F.langevin(x0, lambda x: -x, dt=dt, steps=steps, gen=torch.Generator().manual_seed(9), record_every=100)
    assert torch.equal(path, again)
    assert torch.equal(F.langevin(x0[:3], lambda x: -x, dt=dt, steps=2), F.langevin(x0[:3], lambda x: -x, dt=dt, steps=2))


def test_langevin_chunked_noise(monkeypatch):
    monkeypatch.setattr(F, "NOISE_CHUNK", 10)
    x0 = torch.zeros(4, 1, dtype=F32)
    path = F.langevin(x0, lambda x: -x, dt=0.1, steps=7)
    assert path.shape == (8, 4, 1) and path.dtype == F32 and bool(torch.isfinite(path).all())
    assert not torch.equal(path[3], path[4])


# ---------------------------------------------------------------- validation

def _ok_grad(x):
    return x


EYE, ONE = torch.eye(2, dtype=F64), torch.ones(2, dtype=F64)
P5 = torch.ones(5, 1)


@pytest.mark.parametrize("call, exc, match", [
    (lambda: F.quadratic_flow(torch.eye(2, dtype=F64)[0], torch.ones(2, dtype=F64), 1.0), ValueError, "A must have 2"),
    (lambda: F.quadratic_flow(torch.ones(2, 3, dtype=F64), torch.ones(3, dtype=F64), 1.0), ValueError, "A must be square"),
    (lambda: F.quadratic_flow(torch.eye(2, dtype=F64), torch.ones(3, dtype=F64), 1.0), ValueError, "x0 must end"),
    (lambda: F.quadratic_flow(EYE, ONE, torch.ones(2, 2)), ValueError, "t must be a scalar"),
    (lambda: F.quadratic_flow(EYE, ONE, float("nan")), ValueError, "t must be finite"),
    (lambda: F.gd_path(3, torch.ones(2), lr=0.1, steps=2), TypeError, "grad_fn must be callable"),
    (lambda: F.gd_path(_ok_grad, torch.ones(2), lr=-0.1, steps=2), ValueError, "lr must be > 0"),
    (lambda: F.gd_path(_ok_grad, torch.ones(2), lr=torch.tensor([0.1, -1.0]), steps=2), ValueError, "lr must be > 0"),
    (lambda: F.gd_path(_ok_grad, torch.ones(2), lr=0.1, steps=-1), ValueError, "steps must be >= 0"),
    (lambda: F.gd_path(lambda x: x[:1], torch.ones(2), lr=0.1, steps=2), ValueError, "grad_fn must return"),
    (lambda: F.gd_path(lambda x: 1.0, torch.ones(2), lr=0.1, steps=2), ValueError, "grad_fn must return"),
    (lambda: F.gradient_flow(_ok_grad, torch.ones(2), torch.tensor([1.0, 0.0])), ValueError, "non-decreasing"),
    (lambda: F.gradient_flow(_ok_grad, torch.ones(2), torch.zeros(0)), ValueError, "at least one"),
    (lambda: F.gradient_flow(_ok_grad, torch.ones(2), torch.zeros(2), method="rk45"), ValueError, "method must be"),
    (lambda: F.gradient_flow(_ok_grad, torch.ones(2), torch.zeros(2), substeps=0), ValueError, "substeps must be"),
    (lambda: F.steepest_direction(torch.ones(3), 0.5), ValueError, "p must be >= 1"),
    (lambda: F.steepest_direction(torch.ones(3), "inf"), TypeError, "p must be a real"),
    (lambda: F.steepest_direction(torch.tensor(1.0), 2), ValueError, "g must have at least 1"),
    (lambda: F.steepest_direction(torch.tensor([1, 2]), 2), TypeError, "g must have a floating"),
    (lambda: F.steepest_step(torch.ones(3), lr=0.0, p=2), ValueError, "lr must be > 0"),
    (lambda: F.gaussian_kl_flow(torch.zeros(1), -torch.ones(1), torch.ones(1)), ValueError, "var0 must be > 0"),
    (lambda: F.gaussian_kl_flow(torch.zeros(1), torch.ones(1), -torch.ones(1)), ValueError, "t must be >= 0"),
    (lambda: F.gaussian_kl_flow(torch.zeros(1), torch.ones(1), torch.ones(1), var_p=0.0), ValueError, "var_p must be > 0"),
    (lambda: F.gaussian_kl(torch.zeros(1), torch.zeros(1)), ValueError, "var_q and var_p"),
    (lambda: F.gaussian_fit_score(torch.ones(2, 3)), ValueError, "more particles"),
    (lambda: F.gaussian_fit_score(torch.ones(5)), ValueError, "x must have 2"),
    (lambda: F.kde_score(torch.ones(5, 2), bandwidth=0.0), ValueError, "bandwidth must be > 0"),
    (lambda: F.kde_score(torch.ones(5, 2), bandwidth=0.1, ref=torch.ones(4, 3)), ValueError, "ref must have 2 columns"),
    (lambda: F.wflow_kl_particles(P5, _ok_grad, dt=0.1, steps=4, q_score="kde"), ValueError, "bandwidth is required"),
    (lambda: F.wflow_kl_particles(P5, _ok_grad, dt=0.1, steps=4, q_score="svgd"), ValueError, "q_score must be"),
    (lambda: F.wflow_kl_particles(P5, _ok_grad, dt=0.1, steps=4, record_every=3), ValueError, "must divide"),
    (lambda: F.wflow_kl_particles(torch.ones(5, 1), _ok_grad, dt=0.0, steps=4), ValueError, "dt must be > 0"),
    (lambda: F.wflow_kl_particles(torch.ones(5, 1), None, dt=0.1, steps=4), TypeError, "score_p must be callable"),
    (lambda: F.langevin(P5, _ok_grad, dt=0.1, steps=4, gen=3), TypeError, "gen must be a CPU"),
    (lambda: F.langevin(P5, _ok_grad, dt=0.1, steps=4, record_every=0), ValueError, "record_every must be >= 1"),
    (lambda: F.langevin(torch.full((5, 1), float("nan")), _ok_grad, dt=0.1, steps=4), ValueError, "x0 contains NaN"),
])
def test_validation_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
