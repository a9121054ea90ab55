"""Tests for kexue_lib.gan_flow (P36): closed forms, autograd references and the toy's behaviour."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from kexue_lib import gan_flow as gf

F64 = torch.float64


def _gauss_logpdf(x, mu, var):
    return -0.5 * (x - mu) ** 2 / var - 0.5 * math.log(2 * math.pi * var)


@given(st.floats(-3, 3), st.floats(0.1, 4), st.floats(-3, 3), st.floats(0.1, 4))
@settings(max_examples=40, deadline=None)
def test_logratio_coeffs_match_difference_of_log_densities(mp, vp, mq, vq):
    c = gf.gaussian_logratio_coeffs(*(torch.tensor(v, dtype=F64) for v in (mp, vp, mq, vq)))
    x = torch.linspace(-5, 5, 11, dtype=F64)
    ref = _gauss_logpdf(x, mp, vp) - _gauss_logpdf(x, mq, vq)
    got = gf.quadratic_disc(c)(x[:, None])
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)


def test_flow_step_matches_hand_gradient_and_h():
    c = torch.tensor([0.3, -0.7, -0.4], dtype=F64)
    x = torch.linspace(-2, 2, 9, dtype=F64)[:, None]
    got = gf.flow_step(x, gf.quadratic_disc(c), eps=0.1)
    torch.testing.assert_close(got, x + 0.1 * (c[1] + 2 * c[2] * x))
    # MonoFlow: grad h(D) = h'(D) grad D
    d = gf.quadratic_disc(c)(x)
    got_h = gf.flow_step(x, gf.quadratic_disc(c), eps=0.1, h=torch.nn.functional.logsigmoid)
    torch.testing.assert_close(got_h, x + 0.1 * torch.sigmoid(-d)[:, None] * (c[1] + 2 * c[2] * x))
    assert not got.requires_grad


def test_one_regression_step_equals_one_negd_step_on_mlp():
    """Post's key identity: grad of the (scaled) regression loss at theta_t = grad of E[-D(g)]."""
    torch.manual_seed(0)
    g = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).double()
    d = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).double()
    disc = lambda x: d(x)[:, 0]                                 # noqa: E731
    z = torch.randn(64, 2, dtype=F64)
    target = gf.flow_step(g(z), disc, eps=0.05)
    g1 = torch.autograd.grad(gf.regression_loss(g(z), target, eps=0.05), list(g.parameters()))
    g2 = torch.autograd.grad(gf.neg_d_loss(g(z), disc), list(g.parameters()))
    for u, v in zip(g1, g2):
        torch.testing.assert_close(u, v, rtol=1e-10, atol=1e-12)


def test_neg_d_loss_with_h():
    c = torch.tensor([0.1, 0.2, 0.3], dtype=F64)
    x = torch.tensor([[0.5], [-1.0]], dtype=F64)
    ref = -torch.nn.functional.softplus(c[0] + c[1] * x[:, 0] + c[2] * x[:, 0] ** 2).mean()
    torch.testing.assert_close(gf.neg_d_loss(x, gf.quadratic_disc(c), h=torch.nn.functional.softplus), ref)


def test_logistic_discriminator_recovers_log_ratio():
    gen = torch.Generator().manual_seed(1)
    xp = 2.0 + 0.5 * torch.randn(200_000, generator=gen, dtype=F64)
    xq = -1.0 + 1.5 * torch.randn(200_000, generator=gen, dtype=F64)
    got = gf.fit_quadratic_logistic(xp, xq)
    ref = gf.gaussian_logratio_coeffs(*(torch.tensor(v, dtype=F64) for v in (2.0, 0.25, -1.0, 2.25)))
    torch.testing.assert_close(got, ref, rtol=0.03, atol=0.05)


def _train_autograd(theta0, *, mu_p, std_p, outer_steps, inner_steps, lr, eps, loss, n_z, seed):
    """Reference: the same toy on explicit samples with autograd."""
    gen = torch.Generator().manual_seed(seed)
    z_all = torch.randn(outer_steps, n_z, generator=gen, dtype=F64)
    th = theta0.clone()
    out = [th.clone()]
    for t in range(outer_steps):
        c = gf.gaussian_logratio_coeffs(*(torch.as_tensor(v, dtype=F64) for v in (mu_p, std_p**2, th[1], th[0] ** 2)))
        disc = gf.quadratic_disc(c)
        z = z_all[t][:, None]
        target = gf.flow_step(th[0] * z + th[1], disc, eps=eps)
        for _ in range(inner_steps):
            p = th.clone().requires_grad_(True)
            fake = p[0] * z + p[1]
            lv = gf.neg_d_loss(fake, disc) if loss == "negD" else gf.regression_loss(fake, target, eps=eps)
            (gr,) = torch.autograd.grad(lv, p)
            th = (p - lr * gr).detach()
        out.append(th.clone())
    return torch.stack(out)


@pytest.mark.parametrize("loss", ["negD", "regression"])
@pytest.mark.parametrize("k", [1, 3])
def test_training_loop_matches_autograd_reference(loss, k):
    th0 = torch.tensor([1.5, -1.0], dtype=F64)
    kw = dict(mu_p=2.0, std_p=0.5, outer_steps=15, inner_steps=k, lr=0.05, eps=0.05, loss=loss, n_z=500)
    got = gf.train_affine_gan(th0, gen=torch.Generator().manual_seed(3), **kw)
    ref = _train_autograd(th0, seed=3, **kw)
    torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-10)


def test_one_inner_step_same_for_both_losses_and_toy_behaviour():
    th0 = torch.tensor([1.5, -1.0], dtype=F64)
    kw = dict(mu_p=2.0, std_p=0.5, outer_steps=200, lr=0.05, eps=0.05, n_z=4000)
    t1 = gf.train_affine_gan(th0, inner_steps=1, loss="negD", **kw)
    r1 = gf.train_affine_gan(th0, inner_steps=1, loss="regression", **kw)
    torch.testing.assert_close(t1, r1, rtol=1e-9, atol=1e-9)
    target = torch.tensor([0.5, 2.0], dtype=F64)
    torch.testing.assert_close(t1[-1], target, rtol=0, atol=1e-6)
    r20 = gf.train_affine_gan(th0, inner_steps=20, loss="regression", **kw)
    torch.testing.assert_close(r20[-1], target, rtol=0, atol=1e-6)
    t20 = gf.train_affine_gan(th0, inner_steps=20, loss="negD", **kw)
    assert t20[:, 0].abs().nan_to_num(math.inf).max() > 1e10


def test_blow_up_fills_nan_and_float32_device_dtype():
    th0 = torch.tensor([1.5, -1.0], dtype=torch.float32)
    out = gf.train_affine_gan(th0, mu_p=2.0, std_p=0.5, outer_steps=40, inner_steps=60, lr=0.05, eps=0.05, n_z=100)
    assert out.dtype == torch.float32 and out.shape == (41, 2)
    assert torch.isnan(out[-1]).all()


def test_validation_errors():
    x = torch.zeros(4, 1, dtype=F64)
    c = torch.tensor([0.0, 1.0, 0.0], dtype=F64)
    disc = gf.quadratic_disc(c)
    with pytest.raises(ValueError, match="x"):
        gf.flow_step(torch.zeros(4, dtype=F64), disc, eps=0.1)
    with pytest.raises(TypeError, match="disc"):
        gf.flow_step(x, 3, eps=0.1)
    with pytest.raises(TypeError, match="h"):
        gf.flow_step(x, disc, eps=0.1, h=1)
    with pytest.raises(ValueError, match="eps"):
        gf.flow_step(x, disc, eps=0.0)
    with pytest.raises(ValueError, match="disc"):
        gf.flow_step(x, lambda u: u, eps=0.1)
    with pytest.raises(TypeError, match="disc"):
        gf.neg_d_loss(x, None)
    with pytest.raises(TypeError, match="h"):
        gf.neg_d_loss(x, disc, h="id")
    with pytest.raises(ValueError, match="target"):
        gf.regression_loss(x, torch.zeros(3, 1, dtype=F64), eps=0.1)
    with pytest.raises(ValueError, match="eps"):
        gf.regression_loss(x, x, eps=-1.0)
    one = torch.tensor(1.0, dtype=F64)
    with pytest.raises(ValueError, match="var_p"):
        gf.gaussian_logratio_coeffs(one, -one, one, one)
    with pytest.raises(ValueError, match="coeffs"):
        gf.quadratic_disc(torch.zeros(2, dtype=F64))
    with pytest.raises(ValueError, match="n_newton"):
        gf.fit_quadratic_logistic(torch.zeros(4, dtype=F64), torch.ones(4, dtype=F64), n_newton=0)
    with pytest.raises(ValueError, match="at least 2"):
        gf.fit_quadratic_logistic(torch.zeros(1, dtype=F64), torch.ones(4, dtype=F64))
    th = torch.tensor([1.0, 0.0], dtype=F64)
    kw = dict(mu_p=0.0, std_p=1.0, outer_steps=2, inner_steps=1, lr=0.1, eps=0.1)
    with pytest.raises(ValueError, match="theta0"):
        gf.train_affine_gan(torch.zeros(3, dtype=F64), **kw)
    with pytest.raises(ValueError, match="theta0"):
        gf.train_affine_gan(torch.tensor([0.0, 1.0], dtype=F64), **kw)
    with pytest.raises(ValueError, match="loss"):
        gf.train_affine_gan(th, loss="hinge", **kw)
    with pytest.raises(ValueError, match="inner_steps"):
        gf.train_affine_gan(th, **{**kw, "inner_steps": 0})
    with pytest.raises(ValueError, match="std_p"):
        gf.train_affine_gan(th, **{**kw, "std_p": 0.0})
