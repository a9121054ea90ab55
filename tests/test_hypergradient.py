"""Tests for kexue_lib.hypergradient (P09): EG steps, hypergradients vs autograd, gain adaptation."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from kexue_lib import hypergradient as hg

F64 = torch.float64


def _rand(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=F64)


def _loss(theta):
    """A non-quadratic test loss: log-sum-exp plus a quartic, summed over the last dim."""
    return torch.logsumexp(theta, dim=-1) + 0.25 * (theta ** 4).sum(-1) - (0.3 * theta).sum(-1)


def _grad(theta):
    t = theta.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(_loss(t).sum(), t)
    return g


# ------------------------------------------------------------------------------------ eg_step
def test_eg_step_matches_formula_and_log_space_gd():
    theta, g = _rand(5, 3).abs() + 0.1, _rand(5, 3, seed=1)
    new = hg.eg_step(theta, g, lr=0.37)
    torch.testing.assert_close(new, torch.tensor([[t * math.exp(-0.37 * gg) for t, gg in zip(r1, r2)]
                                                  for r1, r2 in zip(theta.tolist(), g.tolist())], dtype=F64),
                               rtol=1e-14, atol=0)
    # GD on phi = log theta, with the chain-rule factor theta removed (per-coordinate lr lr/theta)
    phi = theta.log()
    grad_phi = theta * g                                  # d L(e^phi) / d phi
    torch.testing.assert_close(new.log(), phi - (0.37 / theta) * grad_phi, rtol=1e-13, atol=1e-15)


def test_eg_step_in_place_is_the_same_tensor():
    theta, g = _rand(4).abs(), _rand(4, seed=2)
    ref = hg.eg_step(theta, g, lr=0.5)
    out = hg.eg_step_(theta, g, lr=0.5)
    assert out is theta
    torch.testing.assert_close(theta, ref, rtol=0, atol=0)


def test_eg_step_first_order_error_is_quadratic():
    theta, g = _rand(50).abs() + 0.1, _rand(50, seed=3)
    errs = []
    for lr in (1e-2, 1e-3):
        step = hg.eg_step(theta, g, lr=lr) - theta
        errs.append((step + lr * theta * g).abs().max().item())
        bound = 0.5 * lr ** 2 * (theta * g ** 2).max().item() * math.exp(lr * g.abs().max().item())
        assert errs[-1] <= bound                                  # Taylor remainder of exp
    assert 80 < errs[0] / errs[1] < 120                           # 10x smaller lr -> 100x smaller error


def test_eg_step_clamp_limits_the_factor():
    theta = torch.ones(3, dtype=F64)
    g = torch.tensor([-1e5, 0.0, 1e5], dtype=F64)
    out = hg.eg_step(theta, g, lr=1.0, max_exponent=20.0)
    torch.testing.assert_close(out, torch.tensor([math.exp(20), 1.0, math.exp(-20)], dtype=F64), rtol=1e-14, atol=0)
    assert math.isinf(hg.eg_step(theta, g, lr=1.0)[0].item())


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 10_000), lr=st.floats(0.0, 1e3))
def test_eg_keeps_sign_for_any_lr(seed, lr):
    theta = _rand(20, seed=seed)
    g = _rand(20, seed=seed + 1)
    new = hg.eg_step(theta, g, lr=lr, max_exponent=30.0)
    assert bool((torch.sign(new) == torch.sign(theta)).all())


# ----------------------------------------------------------------------------- hypergradient
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), lr=st.floats(1e-3, 0.5))
def test_hypergradient_matches_autograd(seed, lr):
    theta_prev = _rand(3, 6, seed=seed)
    g_prev = _grad(theta_prev)
    # per-coordinate gain
    nu = (_rand(3, 6, seed=seed + 7).abs() + 0.5).requires_grad_(True)
    theta = theta_prev - lr * nu * g_prev
    (auto,) = torch.autograd.grad(_loss(theta).sum(), nu)
    formula = hg.lr_hypergradient(g_prev, _grad(theta.detach()), lr=lr, per_coordinate=True)
    torch.testing.assert_close(formula, auto, rtol=1e-10, atol=1e-12)
    # scalar gain (per run)
    nu_s = torch.full((3, 1), 1.3, dtype=F64, requires_grad=True)
    theta = theta_prev - lr * nu_s * g_prev
    (auto,) = torch.autograd.grad(_loss(theta).sum(), nu_s)
    formula = hg.lr_hypergradient(g_prev, _grad(theta.detach()), lr=lr, per_coordinate=False)
    assert formula.shape == (3, 1)
    torch.testing.assert_close(formula, auto, rtol=1e-10, atol=1e-12)


def test_gain_signal_normalisations():
    gp = torch.tensor([[1.0, -2.0, 0.0], [0.0, 0.0, 0.0]], dtype=F64)
    g = torch.tensor([[3.0, 1.0, 5.0], [1.0, 2.0, 3.0]], dtype=F64)
    torch.testing.assert_close(hg.gain_signal(gp, g), torch.tensor([[3.0, -2.0, 0.0], [0.0, 0.0, 0.0]], dtype=F64))
    torch.testing.assert_close(hg.gain_signal(gp, g, normalize="sign"),
                               torch.tensor([[1.0, -1.0, 0.0], [0.0, 0.0, 0.0]], dtype=F64))
    torch.testing.assert_close(hg.gain_signal(gp, g, per_coordinate=False), torch.tensor([[1.0], [0.0]], dtype=F64))
    cos = hg.gain_signal(gp, g, normalize="cosine", per_coordinate=False)
    torch.testing.assert_close(cos, torch.tensor([[1.0 / (math.sqrt(5) * math.sqrt(35))], [0.0]], dtype=F64))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_cosine_signal_is_bounded_and_matches_torch(seed):
    gp, g = _rand(4, 7, seed=seed), _rand(4, 7, seed=seed + 1)
    cos = hg.gain_signal(gp, g, normalize="cosine", per_coordinate=False)
    torch.testing.assert_close(cos[:, 0], torch.nn.functional.cosine_similarity(gp, g, dim=-1), rtol=1e-12, atol=1e-14)
    assert bool((cos.abs() <= 1 + 1e-12).all())


def test_adapt_gain_is_eg_on_the_gain():
    gain = torch.tensor([[0.5, 2.0]], dtype=F64)
    gp, g = torch.tensor([[1.0, -1.0]], dtype=F64), torch.tensor([[2.0, 3.0]], dtype=F64)
    out = hg.adapt_gain(gain, gp, g, gamma=0.1)
    torch.testing.assert_close(out, torch.tensor([[0.5 * math.exp(0.2), 2.0 * math.exp(-0.3)]], dtype=F64))
    # EG on nu with the hypergradient -lr g_{t-1} g_t and step gamma/lr: same thing
    lr = 0.25
    eg = hg.eg_step(gain, hg.lr_hypergradient(gp, g, lr=lr), lr=0.1 / lr)
    torch.testing.assert_close(out, eg, rtol=1e-14, atol=0)
    out = hg.adapt_gain(torch.ones(1, 1, dtype=F64), gp, g, gamma=100.0, per_coordinate=False, max_exponent=5.0)
    torch.testing.assert_close(out, torch.tensor([[math.exp(-5.0)]], dtype=F64))


# ---------------------------------------------------------------------- hypergradient_descent
def _reference_run(a, theta0, lr, gamma, steps, normalize):
    """Plain-Python float loop of the scalar rule on L = a theta^2 / 2."""
    th, eta, gp, etas = theta0, lr, 0.0, []
    for _ in range(steps):
        g = a * th
        s = gp * g
        if normalize == "sign":
            s = (s > 0) - (s < 0)
        eta = eta * math.exp(gamma * s)
        th = th - eta * g
        gp = g
        etas.append(eta)
    return th, etas


@pytest.mark.parametrize("normalize,gamma", [("none", 0.05), ("sign", 0.1), ("sign", 0.3)])
def test_descent_matches_python_loop_and_brief_numbers(normalize, gamma):
    thetas, lrs = hg.hypergradient_descent(lambda t: 4.0 * t, torch.ones(1, dtype=F64), lr=0.01, gamma=gamma,
                                           steps=60, normalize=normalize)
    th, etas = _reference_run(4.0, 1.0, 0.01, gamma, 60, normalize)
    assert thetas.shape == (61, 1) and lrs.shape == (60, 1)
    torch.testing.assert_close(lrs[:, 0], torch.tensor(etas, dtype=F64), rtol=1e-12, atol=0)
    assert math.isclose(thetas[-1, 0].item(), th, rel_tol=1e-9, abs_tol=1e-300)
    if normalize == "sign":             # the two levels bracket 1/a = 0.25 and are 0.01 e^{k gamma}
        levels = sorted({round(v, 4) for v in lrs[-10:, 0].tolist()})
        assert levels == ([0.2453, 0.2711] if gamma == 0.1 else [0.2009, 0.2711])


def test_descent_gamma_zero_is_gd_and_batch_is_independent_runs():
    A = torch.tensor([1.0, 10.0, 100.0], dtype=F64)
    theta0 = _rand(4, 3, seed=5)
    thetas, lrs = hg.hypergradient_descent(lambda t: A * t, theta0, lr=0.015, gamma=0.0, steps=20)
    ref = theta0 * (1 - 0.015 * A) ** 20
    torch.testing.assert_close(thetas[-1], ref, rtol=1e-12, atol=1e-15)
    assert bool((lrs == 0.015).all())
    batch, _ = hg.hypergradient_descent(lambda t: A * t, theta0, lr=1e-3, gamma=0.2, steps=30, normalize="sign")
    assert bool(torch.isfinite(batch).all())
    for i in range(4):
        single, _ = hg.hypergradient_descent(lambda t: A * t, theta0[i], lr=1e-3, gamma=0.2, steps=30,
                                             normalize="sign")
        torch.testing.assert_close(batch[:, i], single, rtol=1e-13, atol=1e-15)
    thetas, lrs = hg.hypergradient_descent(lambda t: A * t, theta0, lr=0.1, gamma=0.1, steps=0)
    assert thetas.shape == (1, 4, 3) and lrs.shape == (0, 4, 1)


def test_descent_per_coordinate_closed_form():
    theta0 = _rand(6, seed=9)
    gamma, lr, steps = 0.02, 0.05, 40
    thetas, lrs = hg.hypergradient_descent(_grad, theta0, lr=lr, gamma=gamma, steps=steps, per_coordinate=True)
    grads = torch.stack([_grad(t) for t in thetas[:-1]])             # g_0 ... g_{T-1}
    prods = torch.cat([torch.zeros(1, 6, dtype=F64), grads[:-1] * grads[1:]])   # g_{k-1} g_k, g_{-1} = 0
    assert bool(torch.isfinite(thetas).all()) and lrs.max() > 1.02 * lr
    torch.testing.assert_close(lrs, lr * torch.exp(gamma * prods.cumsum(0)), rtol=1e-10, atol=0)


# ------------------------------------------------------------------------------- HypergradEG
def _run_opt(opt_factory, theta0, grad_fn, steps):
    p = torch.nn.Parameter(theta0.clone())
    opt = opt_factory([p])
    out = [p.detach().clone()]
    for _ in range(steps):
        p.grad = grad_fn(p.detach())
        opt.step()
        out.append(p.detach().clone())
    return torch.stack(out), opt, p


@pytest.mark.parametrize("per_coordinate,normalize", [(True, "none"), (True, "sign"), (False, "none"),
                                                      (False, "cosine")])
def test_optimizer_matches_functional(per_coordinate, normalize):
    theta0 = _rand(5, seed=11)
    ref, lrs = hg.hypergradient_descent(_grad, theta0, lr=0.05, gamma=0.05, steps=25,
                                        per_coordinate=per_coordinate, normalize=normalize)
    path, opt, p = _run_opt(lambda ps: hg.HypergradEG(ps, lr=0.05, gamma=0.05, per_coordinate=per_coordinate,
                                                       normalize=normalize, max_exponent=None),
                            theta0, _grad, 25)
    assert bool(torch.isfinite(ref).all())
    torch.testing.assert_close(path, ref, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(0.05 * opt.state[p]["gain"].expand(5), lrs[-1].expand(5), rtol=1e-12, atol=0)


def test_optimizer_scalar_gain_spans_the_whole_group():
    theta0 = _rand(7, seed=12)
    ref, _ = hg.hypergradient_descent(_grad, theta0, lr=0.02, gamma=0.5, steps=15, normalize="sign")
    a = torch.nn.Parameter(theta0[:3].clone())
    b = torch.nn.Parameter(theta0[3:].clone())
    opt = hg.HypergradEG([a, b], lr=0.02, gamma=0.5, per_coordinate=False, normalize="sign")
    for _ in range(15):
        g = _grad(torch.cat([a.detach(), b.detach()]))
        a.grad, b.grad = g[:3].clone(), g[3:].clone()
        opt.step()
    torch.testing.assert_close(torch.cat([a.detach(), b.detach()]), ref[-1], rtol=1e-12, atol=1e-14)
    assert opt.state[a]["gain"].item() == opt.state[b]["gain"].item()


def test_optimizer_gamma_zero_is_sgd_with_closure_and_missing_grads():
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 2).double()
    net2 = torch.nn.Linear(4, 2).double()
    net2.load_state_dict(net.state_dict())
    x = _rand(8, 4, seed=13)
    frozen = torch.nn.Parameter(torch.ones(2, dtype=F64))
    opt = hg.HypergradEG(list(net.parameters()) + [frozen], lr=0.1, gamma=0.0)
    sgd = torch.optim.SGD(net2.parameters(), lr=0.1)
    for _ in range(5):
        def closure():
            opt.zero_grad()
            loss = net(x).pow(2).mean()
            loss.backward()
            return loss
        loss = opt.step(closure)
        sgd.zero_grad(); net2(x).pow(2).mean().backward(); sgd.step()
        assert torch.is_tensor(loss)
    for p1, p2 in zip(net.parameters(), net2.parameters()):
        torch.testing.assert_close(p1, p2, rtol=1e-14, atol=1e-15)
    assert bool((frozen == 1).all()) and frozen not in opt.state
    empty = hg.HypergradEG([torch.nn.Parameter(torch.ones(2))], lr=0.1)
    assert empty.step() is None


def test_optimizer_default_clamp_bounds_one_step_change():
    p = torch.nn.Parameter(torch.ones(2, dtype=F64))
    opt = hg.HypergradEG([p], lr=1e-3, gamma=10.0)
    for g in ([100.0, -100.0], [100.0, 100.0]):
        p.grad = torch.tensor(g, dtype=F64)
        opt.step()
    torch.testing.assert_close(opt.state[p]["gain"], torch.tensor([math.exp(20), math.exp(-20)], dtype=F64))


# ---------------------------------------------------------------------------------- validation
def test_validation_errors():
    t = torch.ones(3, dtype=F64)
    with pytest.raises(TypeError, match="param"):
        hg.eg_step([1.0], t, lr=0.1)
    with pytest.raises(ValueError, match="grad must have the shape"):
        hg.eg_step(t, torch.ones(2, dtype=F64), lr=0.1)
    with pytest.raises(ValueError, match="lr"):
        hg.eg_step(t, t, lr=-1.0)
    with pytest.raises(ValueError, match="max_exponent"):
        hg.eg_step_(t.clone(), t, lr=0.1, max_exponent=0.0)
    with pytest.raises(ValueError, match="grad contains NaN"):
        hg.eg_step_(t.clone(), torch.full((3,), float("nan"), dtype=F64), lr=0.1)
    with pytest.raises(ValueError, match="grad_prev"):
        hg.lr_hypergradient(torch.ones((), dtype=F64), torch.ones((), dtype=F64))
    with pytest.raises(ValueError, match="lr"):
        hg.lr_hypergradient(t, t, lr=0.0)
    with pytest.raises(TypeError, match="per_coordinate"):
        hg.lr_hypergradient(t, t, per_coordinate=1)
    with pytest.raises(ValueError, match="normalize"):
        hg.gain_signal(t, t, normalize="l2")
    with pytest.raises(ValueError, match="cosine"):
        hg.gain_signal(t, t, normalize="cosine", per_coordinate=True)
    with pytest.raises(ValueError, match="gain must be positive"):
        hg.adapt_gain(torch.zeros(3, dtype=F64), t, t, gamma=0.1)
    with pytest.raises(ValueError, match="gain must have shape"):
        hg.adapt_gain(torch.ones(3, dtype=F64), t, t, gamma=0.1, per_coordinate=False)
    with pytest.raises(ValueError, match="gamma"):
        hg.adapt_gain(t, t, t, gamma=-0.1)
    with pytest.raises(TypeError, match="grad_fn"):
        hg.hypergradient_descent(None, t, lr=0.1, gamma=0.1, steps=2)
    with pytest.raises(ValueError, match="theta0"):
        hg.hypergradient_descent(lambda x: x, torch.ones((), dtype=F64), lr=0.1, gamma=0.1, steps=2)
    with pytest.raises(ValueError, match="steps"):
        hg.hypergradient_descent(lambda x: x, t, lr=0.1, gamma=0.1, steps=-1)
    with pytest.raises(ValueError, match="gain0"):
        hg.hypergradient_descent(lambda x: x, t, lr=0.1, gamma=0.1, steps=2, gain0=0.0)
    with pytest.raises(ValueError, match="grad_fn must return"):
        hg.hypergradient_descent(lambda x: x[:2], t, lr=0.1, gamma=0.1, steps=2)
    with pytest.raises(ValueError, match="lr"):
        hg.HypergradEG([torch.nn.Parameter(t.clone())], lr=0.0)
    with pytest.raises(ValueError, match="normalize"):
        hg.HypergradEG([torch.nn.Parameter(t.clone())], lr=0.1, normalize="cos")
