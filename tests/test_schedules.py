"""Tests for kexue_lib.schedules (P07 Amos-style schedules) against closed forms, sympy and plain loops."""
from __future__ import annotations

import math

import pytest
import sympy as sp
import torch
from hypothesis import given, settings, strategies as st

from kexue_lib import schedules as ks

F64 = torch.float64


# ------------------------------------------------------------------------------ closed forms
def test_closed_forms_solve_the_odes_sympy():
    t, c = sp.symbols("t c", positive=True)
    S = sp.Function("S")
    for power, closed in ((1, 1 / (c * t + 1) ** 2), (2, 1 / (2 * c * t + 1))):
        sol = sp.dsolve(sp.Eq(S(t).diff(t), c * sp.exp(-power * S(t))), S(t), ics={S(0): 0})
        sols = sol if isinstance(sol, list) else [sol]
        real = [s.rhs for s in sols if sp.simplify(s.rhs.subs({t: 1, c: 1})).is_real]
        decay = sp.simplify(sp.exp(-2 * real[0]))
        assert sp.simplify(decay - closed) == 0
        kwargs = dict(alpha0=0.5, p=1.5) if power == 1 else dict(alpha0=0.5, p0=1.5)
        fn = ks.amos_inverse_square if power == 1 else ks.amos_inverse_time
        for tv in (0.0, 1.0, 7.5, 1e4):
            assert math.isclose(fn(tv, **kwargs), float(closed.subs({t: tv, c: 0.75})), rel_tol=1e-13)


def test_tensor_input_shape_dtype_device():
    t = torch.arange(6, dtype=F64).reshape(2, 3)
    out = ks.amos_inverse_square(t, alpha0=1e-2, p=0.5)
    assert out.shape == (2, 3) and out.dtype == F64
    torch.testing.assert_close(out, 1 / (5e-3 * t + 1) ** 2, rtol=1e-15, atol=0)
    ti = torch.arange(4)
    out = ks.amos_inverse_time(ti, alpha0=1e-2, p0=0.5)
    assert out.dtype == torch.get_default_dtype()
    torch.testing.assert_close(out, 1 / (1e-2 * ti.to(out.dtype) + 1), rtol=1e-6, atol=0)


def test_amos_decay_dispatch():
    t = torch.tensor([0.0, 10.0, 100.0], dtype=F64)
    torch.testing.assert_close(ks.amos_decay(t, alpha0=1e-2, p=0.3, kind="inv_square"),
                               ks.amos_inverse_square(t, alpha0=1e-2, p=0.3))
    torch.testing.assert_close(ks.amos_decay(t, alpha0=1e-2, p=0.3, kind="inv_time"),
                               ks.amos_inverse_time(t, alpha0=1e-2, p0=0.3))
    assert torch.equal(ks.amos_decay(t, alpha0=1e-2, p=0.3, kind="constant"), torch.ones(3, dtype=F64))
    assert ks.amos_decay(5, alpha0=1e-2, p=0.3, kind="constant") == 1.0


# ------------------------------------------------------------------------------ recursion
def _plain_recursion(c, power, steps):
    s, out = 0.0, [0.0]
    for _ in range(steps):
        s += c * math.exp(-power * s)
        out.append(s)
    return out


def test_recursion_matches_plain_loop_and_brief_numbers():
    S = ks.solve_S_recursion(1000, alpha0=1e-3, p=1.0)
    assert S.shape == (1001,) and S.dtype == F64
    torch.testing.assert_close(S, torch.tensor(_plain_recursion(1e-3, 1, 1000), dtype=F64), rtol=1e-14, atol=0)
    assert abs(math.exp(-2 * S[-1].item()) - 0.249913) < 1e-6                  # number in the brief
    S = ks.solve_S_recursion(1000, alpha0=1e-3, p0=1.0)
    assert abs(math.exp(-2 * S[-1].item()) - 0.333211) < 1e-6


def test_recursion_batch_broadcast_device_dtype():
    a = torch.tensor([1e-3, 1e-2], dtype=torch.float32)
    S = ks.solve_S_recursion(50, alpha0=a, p=0.5)
    assert S.shape == (2, 51) and S.dtype == torch.float32
    for i, c in enumerate((5e-4, 5e-3)):
        torch.testing.assert_close(S[i], torch.tensor(_plain_recursion(c, 1, 50), dtype=torch.float32))
    S = ks.solve_S_recursion(20, alpha0=1e-2, p0=torch.tensor([0.1, 0.2, 0.3], dtype=F64))
    assert S.shape == (3, 21)
    torch.testing.assert_close(S[2], torch.tensor(_plain_recursion(3e-3, 2, 20), dtype=F64), rtol=1e-14, atol=0)
    assert ks.solve_S_recursion(0, alpha0=1.0, p=1.0).tolist() == [0.0]


@settings(max_examples=25, deadline=None)
@given(c=st.floats(1e-5, 1e-2), steps=st.integers(100, 2000))
def test_recursion_below_closed_form_and_close(c, steps):
    """The discrete solution lags the ODE: 1 + c t <= exp(S_t) <= 1 + c t + (c/2) log(1 + c t) + c."""
    S = ks.solve_S_recursion(steps, alpha0=c, p=1.0)
    t = torch.arange(steps + 1, dtype=F64)
    x = torch.exp(S)
    assert bool((x >= 1 + c * t - 1e-12).all())
    assert bool((x <= 1 + c * t + 0.5 * c * torch.log1p(c * t) + c + 1e-12).all())


@settings(max_examples=25, deadline=None)
@given(t=st.floats(0, 1e6), c=st.floats(1e-6, 1.0))
def test_decays_are_in_unit_interval_and_monotone(t, c):
    for fn, kw in ((ks.amos_inverse_square, "p"), (ks.amos_inverse_time, "p0")):
        a, b = fn(t, alpha0=c, **{kw: 1.0}), fn(t + 1.0, alpha0=c, **{kw: 1.0})
        assert 0 < b <= a <= 1


# ------------------------------------------------------------------------------ half-life
@pytest.mark.parametrize("kind", ["inv_square", "inv_time"])
def test_half_life_roundtrip(kind):
    T = 1e4
    rate = ks.half_life_to_rate(T, kind=kind)
    fn = ks.amos_inverse_square if kind == "inv_square" else ks.amos_inverse_time
    kw = "p" if kind == "inv_square" else "p0"
    assert math.isclose(fn(T, alpha0=1.0, **{kw: rate}), 0.5, rel_tol=1e-13)
    assert math.isclose(ks.rate_to_half_life(rate, kind=kind), T, rel_tol=1e-13)
    f = ks.amos_lr_lambda(half_life=T, kind=kind)
    assert f(0) == 1.0 and math.isclose(f(int(T)), 0.5, rel_tol=1e-13)
    if kind == "inv_square":
        assert abs(rate - 4.1421e-5) < 1e-9                     # number in the brief


def test_lambda_lr_with_adamw_decays_lr_and_absolute_decay():
    p = torch.nn.Parameter(torch.ones(3, dtype=F64))
    opt = torch.optim.AdamW([p], lr=0.1, weight_decay=0.2)
    f = ks.amos_lr_lambda(half_life=4, kind="inv_time")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, f)
    for step in range(10):
        assert math.isclose(opt.param_groups[0]["lr"], 0.1 * f(step), rel_tol=1e-14)
        before = p.detach().clone()
        p.grad = torch.zeros_like(p)
        opt.step()
        # zero gradient: AdamW's step is the decoupled decay alone, rho_t = lr_t * wd
        torch.testing.assert_close(p.detach(), before * (1 - 0.1 * f(step) * 0.2), rtol=1e-14, atol=0)
        sched.step()


# ------------------------------------------------------------------------------ scales and rules
def test_eps0_norm():
    assert math.isclose(ks.amos_eps0_norm(768, sigma=0.5), math.sqrt(768) * 0.5)
    assert math.isclose(ks.amos_eps0_norm(768, sigma=0.5, random_init=True), math.sqrt(2 * 768) * 0.5)
    g = torch.Generator().manual_seed(0)
    k, s = 200_000, 0.03
    d = (s * torch.randn(k, generator=g, dtype=F64) - s * torch.randn(k, generator=g, dtype=F64)).norm().item()
    assert abs(d / ks.amos_eps0_norm(k, sigma=s, random_init=True) - 1) < 5e-3


def test_lr_wd_formula_and_tensors():
    a, r = ks.amos_lr_wd(100.0, alpha0=1e-3, eps0_norm=2.0, u_norm=4.0, p=0.5, q=0.5, kind="inv_square")
    f = 1 / (1e-3 * 0.5 * 100 + 1) ** 2
    assert math.isclose(a, 1e-3 * 2 / 4 * f, rel_tol=1e-14) and math.isclose(r, 1e-6 / 1.0 * f, rel_tol=1e-14)
    un = torch.tensor([1.0, 2.0, 4.0], dtype=F64)
    a, r = ks.amos_lr_wd(torch.tensor(0.0, dtype=F64), alpha0=1e-2, eps0_norm=torch.tensor(3.0, dtype=F64),
                         u_norm=un, p=1.0)
    torch.testing.assert_close(a, 3e-2 / un, rtol=1e-14, atol=0)
    assert math.isclose(float(r), 5e-5, rel_tol=1e-14)


def test_amos_step_matches_plain_formula_and_zero_u():
    g = torch.Generator().manual_seed(1)
    th = torch.randn(4, 7, generator=g, dtype=F64)
    u = torch.randn(4, 7, generator=g, dtype=F64)
    u[2] = 0.0
    decay = torch.tensor([1.0, 0.5, 0.25, 0.1], dtype=F64)
    out = ks.amos_step(th, u, alpha0=1e-2, eps0_norm=2.0, decay=decay, q=0.8)
    for i in range(4):
        un = u[i].norm().item()
        step = 1e-2 * 2.0 * decay[i].item() / un * u[i] if un > 0 else 0.0 * u[i]
        ref = th[i] - step - 1e-4 / 1.6 * decay[i].item() * th[i]
        torch.testing.assert_close(out[i], ref, rtol=1e-14, atol=1e-16)
    out1 = ks.amos_step(th[0], u[0], alpha0=1e-2, eps0_norm=torch.tensor(2.0, dtype=F64), decay=1.0)
    torch.testing.assert_close(out1, out[0] - (1e-4 / 2 - 1e-4 / 1.6) * th[0], rtol=1e-13, atol=1e-16)


def test_cancellation_leaves_third_order_remainder():
    """With 2 rho theta.eps = alpha^2 ||u||^2 the one-step change is -2 alpha u.eps + O(alpha^3)."""
    g = torch.Generator().manual_seed(2)
    theta, star, u = (torch.randn(500, generator=g, dtype=F64) for _ in range(3))
    eps = theta - star
    assert (theta @ eps).item() > 0
    rems = []
    for alpha in (1e-2, 5e-3):
        rho = alpha**2 * (u @ u) / (2 * theta @ eps)
        new = theta - alpha * u - rho * theta - star
        rems.append(abs((new @ new - eps @ eps + 2 * alpha * u @ eps).item()))
    assert 7.5 < rems[0] / rems[1] < 8.5


def test_lion_hparams_post_numbers():
    sigma = math.sqrt(1 / 768)
    lr, wd = ks.amos_lion_hparams(alpha0=1.11e-3, sigma=sigma)
    assert math.isclose(lr, 4.005e-5, rel_tol=1e-3) and math.isclose(wd, 0.01538, rel_tol=1e-3)
    lr2, wd2 = ks.amos_lion_hparams(alpha0=1.11e-3, sigma=sigma, eps0_factor=math.sqrt(2), kappa=1e-3, t=1000)
    assert math.isclose(lr2, lr * math.sqrt(2) / 2, rel_tol=1e-13) and math.isclose(wd2, wd / math.sqrt(2), rel_tol=1e-13)


# ------------------------------------------------------------------------------ validation
def test_validation_errors():
    with pytest.raises(ValueError, match="^t must be >= 0"):
        ks.amos_inverse_square(-1.0, alpha0=1e-3, p=1.0)
    with pytest.raises(ValueError, match="^t must be >= 0"):
        ks.amos_inverse_square(torch.tensor([1.0, -1.0]), alpha0=1e-3, p=1.0)
    with pytest.raises(ValueError, match="^t contains NaN"):
        ks.amos_inverse_time(torch.tensor([float("nan")]), alpha0=1e-3, p0=1.0)
    with pytest.raises(TypeError, match="^t must be a real"):
        ks.amos_inverse_time(torch.tensor([True]), alpha0=1e-3, p0=1.0)
    with pytest.raises(TypeError, match="^t must be a real number"):
        ks.amos_inverse_time("3", alpha0=1e-3, p0=1.0)
    with pytest.raises(ValueError, match="^alpha0 must be > 0"):
        ks.amos_inverse_square(1.0, alpha0=0.0, p=1.0)
    with pytest.raises(ValueError, match="^p must be > 0"):
        ks.amos_inverse_square(1.0, alpha0=1e-3, p=-1.0)
    with pytest.raises(ValueError, match="^p0 must be > 0"):
        ks.amos_inverse_time(1.0, alpha0=1e-3, p0=0.0)
    with pytest.raises(ValueError, match="^kind must be one of"):
        ks.amos_decay(1.0, alpha0=1e-3, p=1.0, kind="cosine")
    with pytest.raises(TypeError, match="^kind must be a str"):
        ks.amos_lr_lambda(half_life=10, kind=1)
    with pytest.raises(ValueError, match="^kind must be one of"):
        ks.half_life_to_rate(10, kind="constant")
    with pytest.raises(ValueError, match="^half_life must be > 0"):
        ks.half_life_to_rate(0)
    with pytest.raises(ValueError, match="^rate must be > 0"):
        ks.rate_to_half_life(-1.0)


def test_recursion_validation_errors():
    with pytest.raises(ValueError, match="exactly one of p"):
        ks.solve_S_recursion(10, alpha0=1e-3)
    with pytest.raises(ValueError, match="exactly one of p"):
        ks.solve_S_recursion(10, alpha0=1e-3, p=1.0, p0=1.0)
    with pytest.raises(ValueError, match="^steps must be >= 0"):
        ks.solve_S_recursion(-1, alpha0=1e-3, p=1.0)
    with pytest.raises(TypeError, match="^steps must be an int"):
        ks.solve_S_recursion(1.5, alpha0=1e-3, p=1.0)
    with pytest.raises(ValueError, match="^alpha0 must have 1 dimension"):
        ks.solve_S_recursion(10, alpha0=torch.ones(2, 2), p=1.0)
    with pytest.raises(ValueError, match="^alpha0 must not be empty"):
        ks.solve_S_recursion(10, alpha0=torch.ones(0), p=1.0)
    with pytest.raises(ValueError, match="^p0 must be > 0"):
        ks.solve_S_recursion(10, alpha0=1e-3, p0=torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match="incompatible batch sizes"):
        ks.solve_S_recursion(10, alpha0=torch.ones(2), p=torch.ones(3))


def test_rule_validation_errors():
    with pytest.raises(ValueError, match="^numel must be >= 1"):
        ks.amos_eps0_norm(0, sigma=1.0)
    with pytest.raises(ValueError, match="^sigma must be > 0"):
        ks.amos_eps0_norm(3, sigma=0.0)
    with pytest.raises(TypeError, match="^random_init must be a bool"):
        ks.amos_eps0_norm(3, sigma=1.0, random_init=1)
    with pytest.raises(ValueError, match="^q must be > 0"):
        ks.amos_lr_wd(1.0, alpha0=1e-3, eps0_norm=1.0, u_norm=1.0, p=1.0, q=0.0)
    with pytest.raises(ValueError, match="^u_norm must be > 0"):
        ks.amos_lr_wd(1.0, alpha0=1e-3, eps0_norm=1.0, u_norm=torch.tensor([1.0, 0.0]), p=1.0)
    with pytest.raises(ValueError, match="^eps0_norm must be > 0"):
        ks.amos_lr_wd(1.0, alpha0=1e-3, eps0_norm=-1.0, u_norm=1.0, p=1.0)
    th = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="^u must have the shape of theta"):
        ks.amos_step(th, torch.zeros(3), alpha0=1e-3, eps0_norm=1.0, decay=1.0)
    with pytest.raises(ValueError, match="^theta must have at least 1"):
        ks.amos_step(torch.tensor(0.0), torch.tensor(0.0), alpha0=1e-3, eps0_norm=1.0, decay=1.0)
    with pytest.raises(TypeError, match="^u must be a torch.Tensor"):
        ks.amos_step(th, [0.0], alpha0=1e-3, eps0_norm=1.0, decay=1.0)
    with pytest.raises(ValueError, match="^decay must be > 0"):
        ks.amos_step(th, th, alpha0=1e-3, eps0_norm=1.0, decay=torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="^q must be > 0"):
        ks.amos_step(th, th, alpha0=1e-3, eps0_norm=1.0, decay=1.0, q=-1.0)
    with pytest.raises(ValueError, match="^kappa must be >= 0"):
        ks.amos_lion_hparams(alpha0=1e-3, sigma=0.1, kappa=-1.0)
    with pytest.raises(ValueError, match="^eps0_factor must be > 0"):
        ks.amos_lion_hparams(alpha0=1e-3, sigma=0.1, eps0_factor=0.0)
