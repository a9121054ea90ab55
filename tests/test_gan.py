"""Tests for kexue_lib.gan (P16: GAN losses from the likelihood-ratio construction)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, optimize, stats

from kexue_lib import gan

f64 = torch.float64
R = torch.tensor([0.05, 0.25, 0.5, 1.0, 2.0, 4.0, 20.0], dtype=f64)
SMOOTH = ["vanilla", "log", "exp", "lsgan", "vanilla-t", "vanilla-ns"]


def _bounds(fam):
    lo, hi = fam.t_bounds
    return (max(lo, -12.0), min(hi, 12.0))


@pytest.mark.parametrize("name", SMOOTH)
def test_argmax_matches_omega_scipy(name):
    fam = gan.FAMILIES[name]
    lo, hi = _bounds(fam)
    for r in R.tolist():
        f = lambda t: -float(fam.phi(torch.tensor(t, dtype=f64)) + r * fam.psi(torch.tensor(t, dtype=f64)))
        eps = 1e-12
        res = optimize.minimize_scalar(f, bounds=(lo + eps, hi - eps), method="bounded",
                                       options={"xatol": 1e-11})
        assert abs(res.x - float(fam.omega(torch.tensor(r, dtype=f64)))) < 1e-5


@pytest.mark.parametrize("name", SMOOTH)
def test_numeric_max_matches_closed_form(name):
    fam = gan.FAMILIES[name]
    d_num, t_num = gan.d_of_r_numeric(fam.phi, fam.psi, R, t_bounds=_bounds(fam))
    t = gan.optimal_discriminator(fam, R)
    torch.testing.assert_close(t_num, t, atol=1e-6, rtol=0)
    torch.testing.assert_close(d_num, fam.phi(t) + R * fam.psi(t), atol=1e-10, rtol=0)


def test_tv_boundary_max():
    fam = gan.FAMILIES["tv"]
    r = torch.tensor([0.0, 0.3, 2.5], dtype=f64)
    d, t = gan.d_of_r_numeric(fam.phi, fam.psi, r, t_bounds=fam.t_bounds, n_refine=0)
    torch.testing.assert_close(d, (1 - r).abs())
    torch.testing.assert_close(gan.d_of_r("tv", r), (1 - r).abs())
    torch.testing.assert_close(t, torch.tensor([1.0, 1.0, -1.0], dtype=f64))


@pytest.mark.parametrize(
    "name, ref",
    [
        ("vanilla", lambda r: r * math.log(2) + r * np.log(r) - (r + 1) * np.log(r + 1)),
        ("log", lambda r: r * math.log(2) + r * np.log(r) - (r + 1) * np.log(r + 1)),
        ("exp", lambda r: r - 2 * np.sqrt(r)),
        ("lsgan", lambda r: (r - 1) ** 2 / (r + 1)),
        ("vanilla-t", lambda r: r * np.log(r)),
        ("vanilla-ns", lambda r: (1 + r) * np.log1p(r)),
    ],
)
def test_d_closed_forms(name, ref):
    torch.testing.assert_close(gan.d_of_r(name, R), torch.from_numpy(ref(R.numpy())), atol=1e-12, rtol=0)


@pytest.mark.parametrize("name", ["vanilla", "log", "exp", "lsgan"])
def test_conclusion1_identities(name):
    fam = gan.FAMILIES[name]
    lo, hi = _bounds(fam)
    t = torch.linspace(lo, hi, 41, dtype=f64)[1:-1].requires_grad_(True)
    dphi, = torch.autograd.grad(fam.phi(t).sum(), t)
    dpsi, = torch.autograd.grad(fam.psi(t).sum(), t)
    t = t.detach()
    torch.testing.assert_close(dpsi, fam.rho(t))
    torch.testing.assert_close(dphi, -fam.omega_inv(t) * fam.rho(t))
    assert bool((fam.rho(t) > 0).all())
    one = torch.ones((), dtype=f64)
    assert abs(float(fam.psi(fam.omega(one)))) < 1e-14
    torch.testing.assert_close(fam.omega(fam.omega_inv(t)), t)


def test_lsgan_family_general_ab():
    fam = gan.lsgan_family(0.0, 1.0)
    r = R
    d_num, t_num = gan.d_of_r_numeric(fam.phi, fam.psi, r, t_bounds=fam.t_bounds)
    torch.testing.assert_close(t_num, (0 + 1 * r) / (1 + r), atol=1e-6, rtol=0)
    torch.testing.assert_close(gan.d_of_r(fam, r), (r - 1) ** 2 / (r + 1))


def _quad(f):
    return integrate.quad(f, -30, 30, limit=400, epsabs=1e-13)[0]


def test_fdiv_quadrature_js_and_hellinger():
    p, q = stats.norm(0, 1), stats.norm(1, 1.5)
    x = torch.linspace(-20, 20, 40001, dtype=f64)
    pp, qq = torch.from_numpy(p.pdf(x.numpy())), torch.from_numpy(q.pdf(x.numpy()))
    m = lambda z: 0.5 * (p.pdf(z) + q.pdf(z))
    js = 0.5 * _quad(lambda z: p.pdf(z) * math.log(p.pdf(z) / m(z))) + 0.5 * _quad(
        lambda z: q.pdf(z) * math.log(q.pdf(z) / m(z)))
    v = gan.fdiv_quadrature(lambda r: gan.d_of_r("vanilla", r), pp, qq, x)
    assert abs(float(v) - (2 * js - math.log(2))) < 1e-8
    assert abs(float(v) - (-0.494567)) < 1e-6
    bc = _quad(lambda z: math.sqrt(p.pdf(z) * q.pdf(z)))
    v = gan.fdiv_quadrature(lambda r: gan.d_of_r("exp", r), pp, qq, x)
    assert abs(float(v) - (1 - 2 * bc)) < 1e-8
    kl = math.log(1 / 1.5) + (1.5**2 + 1) / 2 - 0.5
    v = gan.fdiv_quadrature(lambda r: gan.d_of_r("vanilla-t", r), pp, qq, x)
    assert abs(float(v) - kl) < 1e-8


def test_losses_match_manual():
    gen = torch.Generator().manual_seed(0)
    tr, tf = torch.randn(50, generator=gen, dtype=f64), torch.randn(70, generator=gen, dtype=f64)
    ref = -(torch.log(1 - torch.sigmoid(tr)).mean() + torch.log(torch.sigmoid(tf)).mean() + math.log(2))
    torch.testing.assert_close(gan.disc_loss("vanilla", tr, tf), ref)
    torch.testing.assert_close(gan.gen_loss("vanilla-ns", tf), -torch.log(1 - torch.sigmoid(tf)).mean())
    torch.testing.assert_close(gan.gen_loss("vanilla", tf), math.log(2) + torch.log(torch.sigmoid(tf)).mean())
    torch.testing.assert_close(gan.generator_signal("vanilla-t", R), torch.log(R))
    torch.testing.assert_close(gan.generator_signal(gan.FAMILIES["exp"], R), 1 - R ** -0.5)


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(["vanilla", "log", "exp", "lsgan", "vanilla-t", "vanilla-ns"]),
       st.floats(0.01, 50.0))
def test_d_minimal_at_one_and_convex(name, r):
    """Jensen-type invariants: d(r) >= d(1) and d(r) is midpoint-convex."""
    rr = torch.tensor([r, 1.0, (r + 1) / 2], dtype=f64)
    d = gan.d_of_r(name, rr)
    if name in ("vanilla", "log", "exp", "lsgan"):
        assert float(d[0]) >= float(d[1]) - 1e-12
    assert float(d[2]) <= 0.5 * float(d[0] + d[1]) + 1e-12


@settings(max_examples=30, deadline=None)
@given(st.floats(0.01, 50.0))
def test_envelope_derivative(r):
    """d'(r) = psi(omega(r)) for Conclusion-1 families (envelope theorem)."""
    for name in ("vanilla", "log", "exp", "lsgan"):
        fam = gan.FAMILIES[name]
        rr = torch.tensor([r], dtype=f64, requires_grad=True)
        t = fam.omega(rr)
        dval = fam.phi(t) + rr * fam.psi(t)
        g, = torch.autograd.grad(dval.sum(), rr)
        torch.testing.assert_close(g, fam.psi(fam.omega(rr.detach())), atol=1e-9, rtol=1e-9)


def test_validation_errors():
    r = torch.ones(3, dtype=f64)
    with pytest.raises(ValueError, match="family"):
        gan.d_of_r("nope", r)
    with pytest.raises(TypeError, match="family"):
        gan.d_of_r(3, r)
    with pytest.raises(ValueError, match="r must be >= 0"):
        gan.optimal_discriminator("vanilla", -r)
    with pytest.raises(TypeError, match="r must be a torch.Tensor"):
        gan.generator_signal("vanilla", [1.0])
    with pytest.raises(ValueError, match="NaN"):
        gan.d_of_r("vanilla", torch.tensor([float("nan")]))
    fam = gan.FAMILIES["vanilla"]
    with pytest.raises(ValueError, match="r must have 1"):
        gan.d_of_r_numeric(fam.phi, fam.psi, r[None], t_bounds=(-1.0, 1.0))
    with pytest.raises(TypeError, match="t_bounds"):
        gan.d_of_r_numeric(fam.phi, fam.psi, r, t_bounds=[-1.0, 1.0])
    with pytest.raises(ValueError, match=r"t_bounds\[1\]"):
        gan.d_of_r_numeric(fam.phi, fam.psi, r, t_bounds=(1.0, -1.0))
    with pytest.raises(ValueError, match="n_grid"):
        gan.d_of_r_numeric(fam.phi, fam.psi, r, t_bounds=(-1.0, 1.0), n_grid=2)
    with pytest.raises(ValueError, match="b must be >"):
        gan.lsgan_family(1.0, 1.0)
    with pytest.raises(TypeError, match="family must be a DualFamily"):
        gan.with_generator("vanilla", alpha=None, beta=lambda t: t, name="x")
    with pytest.raises(TypeError, match="beta must be callable"):
        gan.with_generator(fam, alpha=None, beta=1.0, name="x")
    with pytest.raises(ValueError, match="t_real"):
        gan.disc_loss("vanilla", torch.tensor(1.0), r)
    with pytest.raises(ValueError, match="t_fake"):
        gan.gen_loss("vanilla", torch.tensor(1.0))
    x = torch.linspace(0, 1, 3, dtype=f64)
    with pytest.raises(TypeError, match="d must be callable"):
        gan.fdiv_quadrature(1.0, r, r, x)
    with pytest.raises(ValueError, match="same shape"):
        gan.fdiv_quadrature(torch.abs, r, r[:2], x)
    with pytest.raises(ValueError, match="strictly increasing"):
        gan.fdiv_quadrature(torch.abs, r, r, x.flip(0))
    with pytest.raises(ValueError, match="p_pdf must be > 0"):
        gan.fdiv_quadrature(torch.abs, 0 * r, r, x)
    with pytest.raises(ValueError, match="q_pdf must be >= 0"):
        gan.fdiv_quadrature(torch.abs, r, -r, x)


def test_device_dtype_preserved():
    r = torch.tensor([0.5, 2.0], dtype=torch.float32)
    for name in gan.FAMILIES:
        out = gan.d_of_r(name, r)
        assert out.dtype == torch.float32 and out.shape == r.shape
    assert gan.FAMILIES["vanilla"].gen_alpha is gan.FAMILIES["vanilla"].phi
