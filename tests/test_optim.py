"""Tests for kexue_lib.optim (P06 Lion, P22 Tiger/Signum) against plain float64 references."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from kexue_lib import optim as ko

F64, F32 = torch.float64, torch.float32
# sizes below, at and above the CPU block (split into views), plus a matrix and a scalar
SHAPES = [(ko.CPU_BLOCK * 2 + 7,), (300, 257), (5,), (ko.CPU_BLOCK,), ()]


def _params(shapes=SHAPES, dtype=F64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=g, dtype=F64).to(dtype)) for s in shapes]


def _grad_stream(params, steps, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(p.shape, generator=g, dtype=F64).to(p.dtype) for p in params] for _ in range(steps)]


def _run(make, grads, shapes=SHAPES, dtype=F64):
    ps = _params(shapes, dtype)
    opt = make(ps)
    for gs in grads:
        for p, g in zip(ps, gs):
            p.grad = g.clone()
        opt.step()
    return ps, opt


def _same(xs, ys):
    return all(torch.equal(x, y) for x, y in zip(xs, ys))


# ------------------------------------------------------------------------------ plain references
def _lion_reference(theta, grads, lr, beta1, beta2, wd):
    """The paper's pseudo-code, float64, one tensor, plain mul/add (no lerp)."""
    theta, m = theta.clone(), torch.zeros_like(theta)
    for g in grads:
        u = torch.sign(beta1 * m + (1 - beta1) * g)
        theta = theta - lr * (u + wd * theta)
        m = beta2 * m + (1 - beta2) * g
    return theta, m


def _tiger_reference(theta, grads, lr, beta, wd, k=1, scale_by_rms=True):
    """Explicit accumulation: average k micro-gradients, then one Tiger step."""
    theta, m = theta.clone(), torch.zeros_like(theta)
    for i in range(0, len(grads) - len(grads) % k, k):
        gbar = sum(grads[i:i + k]) / k
        m = beta * m + (1 - beta) * gbar
        eta = lr * theta.pow(2).mean().sqrt() if scale_by_rms else lr
        theta = theta - eta * (torch.sign(m) + wd * theta)
    return theta, m


# ------------------------------------------------------------------------------------------ Lion
@pytest.mark.parametrize("wd", [0.0, 0.3])
def test_lion_matches_the_paper_pseudocode(wd):
    grads = _grad_stream(_params(), 6)
    ps, opt = _run(lambda p: ko.Lion(p, lr=0.01, betas=(0.9, 0.99), weight_decay=wd), grads)
    for i, p in enumerate(ps):
        ref_t, ref_m = _lion_reference(_params()[i].detach(), [gs[i] for gs in grads], 0.01, 0.9, 0.99, wd)
        torch.testing.assert_close(p.detach(), ref_t, rtol=1e-14, atol=1e-15)
        torch.testing.assert_close(opt.state[p]["exp_avg"], ref_m, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("dtype", [F64, F32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("make", [
    lambda fe: (lambda p: ko.Lion(p, lr=1e-2, betas=(0.95, 0.98), weight_decay=0.1, foreach=fe)),
    lambda fe: (lambda p: ko.Lion(p, lr=1e-2, maximize=True, foreach=fe)),
    lambda fe: (lambda p: ko.Tiger(p, lr=1e-2, weight_decay=0.1, foreach=fe)),
    lambda fe: (lambda p: ko.Tiger(p, lr=1e-2, grad_accum_steps=3, foreach=fe)),
    lambda fe: (lambda p: ko.Tiger(p, lr=1e-2, scale_by_rms=False, maximize=True, weight_decay=0.1, foreach=fe)),
])
def test_foreach_and_per_tensor_paths_agree_bit_for_bit(make, dtype):
    grads = _grad_stream(_params(dtype=dtype), 7)
    a, oa = _run(make(None), grads, dtype=dtype)
    b, ob = _run(make(False), grads, dtype=dtype)
    assert _same(a, b)
    assert _same([oa.state[p]["exp_avg"] for p in a], [ob.state[p]["exp_avg"] for p in b])


def test_non_contiguous_and_mixed_dtype_parameters():
    base = torch.randn(ko.CPU_BLOCK // 64, 130, dtype=F64)
    mk = lambda: [torch.nn.Parameter(base.t().contiguous().t()), torch.nn.Parameter(torch.ones(4, dtype=F32))]  # noqa: E731
    pa, pb = mk(), mk()
    assert not pa[0].is_contiguous()
    oa, ob = ko.Lion(pa, lr=0.1), ko.Lion(pb, lr=0.1, foreach=False)
    for _ in range(3):
        for p, q in zip(pa, pb):
            g = torch.randn(p.shape, dtype=p.dtype)
            p.grad, q.grad = g.clone(), g.clone()
        oa.step(), ob.step()
    assert _same(pa, pb)


def test_lion_equals_signum_and_tiger_when_betas_are_equal():
    grads = _grad_stream(_params(), 10)
    lion, ol = _run(lambda p: ko.Lion(p, lr=0.05, betas=(0.9, 0.9)), grads)
    sig, os_ = _run(lambda p: ko.Signum(p, lr=0.05, beta=0.9), grads)
    tig, ot = _run(lambda p: ko.Tiger(p, lr=0.05, beta=0.9, weight_decay=0.0, scale_by_rms=False), grads)
    assert _same(lion, sig) and _same(lion, tig)
    assert _same([ol.state[p]["exp_avg"] for p in lion], [os_.state[p]["exp_avg"] for p in sig])
    # and SIGNUM as written in the paper (plain float64 loop): same parameters bit for bit
    for i, p in enumerate(sig):
        theta, m = _params()[i].detach().clone(), torch.zeros(SHAPES[i], dtype=F64)
        for gs in grads:
            m = 0.9 * m + 0.1 * gs[i]
            theta = theta - 0.05 * torch.sign(m)
        assert torch.equal(p.detach(), theta)


def test_lion_decay_bounds_the_weights_by_one_over_lambda():
    lam, lr = 2.0, 0.05
    p = torch.nn.Parameter(torch.tensor([3.0, -5.0, 0.1, 0.0], dtype=F64))
    opt = ko.Lion([p], lr=lr, weight_decay=lam)
    far = [p.detach().abs().max().item()]
    for _ in range(400):
        p.grad = -torch.sign(p.detach()) - (p.detach() == 0).double()   # adversarial: push outwards
        opt.step()
        far.append(p.detach().abs().max().item())
    # |theta'| - 1/lam <= (1 - lr lam)(|theta| - 1/lam): contraction towards the fixed point 1/lam
    assert all(b - 1 / lam <= (1 - lr * lam) * (a - 1 / lam) + 1e-12 for a, b in zip(far, far[1:]))
    torch.testing.assert_close(p.detach().abs(), torch.full((4,), 1 / lam, dtype=F64), rtol=1e-9, atol=0)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 200), lr=st.sampled_from([2.0**-k for k in range(3, 12)]))
def test_every_coordinate_moves_by_exactly_lr(seed, n, lr):
    g = torch.Generator().manual_seed(seed)
    p = torch.nn.Parameter(torch.zeros(n, dtype=F64))
    opt = ko.Lion([p], lr=lr, betas=(0.9, 0.99))
    opt.state[p]["exp_avg"] = torch.randn(n, generator=g, dtype=F64)
    p.grad = torch.randn(n, generator=g, dtype=F64)
    opt.step()
    step = p.detach()
    assert bool((step.abs() == lr).all())
    assert math.isclose(step.norm().item(), lr * math.sqrt(n), rel_tol=1e-14)   # ||sign|| = sqrt(k)


def test_maximize_equals_negated_gradients_and_closure_returns_loss():
    grads = _grad_stream(_params(), 4)
    a, _ = _run(lambda p: ko.Lion(p, lr=0.01, maximize=True), grads)
    b, _ = _run(lambda p: ko.Lion(p, lr=0.01), [[-g for g in gs] for gs in grads])
    assert _same(a, b)
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = ko.Lion([p], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = (p**2).sum()
        loss.backward()
        return loss
    assert opt.step(closure).item() == 5.0
    torch.testing.assert_close(p.detach(), torch.tensor([0.9, -1.9]))


def test_zero_grad_none_and_empty_parameters_are_skipped():
    p, q, e = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(0))
    for opt in (ko.Lion([p, q, e], lr=0.1), ko.Tiger([p, q, e], lr=0.1)):
        p.grad, e.grad = torch.ones(3), torch.ones(0)
        opt.step()
        assert q not in opt.state and e not in opt.state
    assert torch.equal(q.detach(), torch.ones(3))


# ----------------------------------------------------------------------------------------- Tiger
@pytest.mark.parametrize("scale_by_rms", [True, False])
@pytest.mark.parametrize("k", [1, 4])
def test_tiger_matches_explicit_accumulation(k, scale_by_rms):
    grads = _grad_stream(_params(), 12)
    kw = dict(lr=0.01, beta=0.965, weight_decay=0.01, scale_by_rms=scale_by_rms)
    ps, opt = _run(lambda p: ko.Tiger(p, grad_accum_steps=k, **kw), grads)
    for i, p in enumerate(ps):
        theta, m = _tiger_reference(_params()[i].detach(), [gs[i] for gs in grads], 0.01, 0.965, 0.01, k,
                                    scale_by_rms)
        torch.testing.assert_close(p.detach(), theta, rtol=1e-14, atol=1e-15)
        torch.testing.assert_close(opt.state[p]["exp_avg"], m, rtol=1e-12, atol=1e-15)


def test_tiger_accumulation_is_exact_on_dyadic_numbers():
    # beta = 3/4, k = 4 and gradients on a 2^-8 grid: every operation is exact in float64,
    # so the built-in accumulation must equal the explicit one bit for bit (momentum included).
    g = torch.Generator().manual_seed(3)
    grads = [torch.randint(-256, 257, (50,), generator=g).double() / 256 for _ in range(16)]
    p = torch.nn.Parameter(torch.zeros(50, dtype=F64))
    opt = ko.Tiger([p], lr=2.0**-6, beta=0.75, weight_decay=0.0, grad_accum_steps=4, scale_by_rms=False)
    for gr in grads:
        p.grad = gr
        opt.step()
    theta, m = _tiger_reference(torch.zeros(50, dtype=F64), grads, 2.0**-6, 0.75, 0.0, 4, False)
    assert torch.equal(p.detach(), theta) and torch.equal(opt.state[p]["exp_avg"], m)


def test_tiger_accumulation_with_missing_micro_gradients():
    # a parameter without gradient at some micro-steps: its window still decays once and it
    # still moves at the end of the window (explicit accumulation with a zero contribution)
    p = torch.nn.Parameter(torch.tensor([0.5, -0.25], dtype=F64))
    opt = ko.Tiger([p], lr=0.1, beta=0.5, weight_decay=0.0, grad_accum_steps=3, scale_by_rms=False)
    gs = [None, torch.tensor([1.0, -3.0], dtype=F64), None, None, None, torch.tensor([-2.0, 1.0], dtype=F64)]
    for gr in gs:
        p.grad = gr
        opt.step()
    g1, g2 = torch.tensor([1.0, -3.0], dtype=F64) / 3, torch.tensor([-2.0, 1.0], dtype=F64) / 3
    m1 = 0.5 * g1
    t1 = torch.tensor([0.5, -0.25], dtype=F64) - 0.1 * torch.sign(m1)
    m2 = 0.5 * m1 + 0.5 * g2
    torch.testing.assert_close(p.detach(), t1 - 0.1 * torch.sign(m2), rtol=0, atol=0)
    torch.testing.assert_close(opt.state[p]["exp_avg"], m2, rtol=1e-15, atol=0)
    assert opt.param_groups[0]["step"] == 6


def test_tiger_relative_update_equals_lr():
    ps = _params([(64, 48), (1000,)])
    opt = ko.Tiger(ps, lr=1.7e-3, weight_decay=0.0)
    before = [p.detach().clone() for p in ps]
    for p in ps:
        p.grad = torch.randn(p.shape, dtype=F64)
    opt.step()
    for p, b in zip(ps, before):
        assert math.isclose(((p.detach() - b).norm() / b.norm()).item(), 1.7e-3, rel_tol=1e-13)


@pytest.mark.parametrize("foreach", [None, False])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_tiger_nan_rule(bad, foreach):
    ps = [torch.nn.Parameter(torch.randn(5, 4, dtype=F64)), torch.nn.Parameter(1 + 0.1 * torch.randn(4, dtype=F64))]
    opt = ko.Tiger([dict(params=ps[:1]), dict(params=ps[1:], nan_center=1.0, scale_by_rms=False)],
                   lr=0.01, nan_shrink=0.99, foreach=foreach)
    for p in ps:
        p.grad = torch.randn(p.shape, dtype=F64)
    opt.step()
    m_before = [opt.state[p]["exp_avg"].clone() for p in ps]
    th_before = [p.detach().clone() for p in ps]
    ps[1].grad = torch.randn(4, dtype=F64)
    ps[1].grad[2] = bad
    ps[0].grad = torch.randn(5, 4, dtype=F64)
    opt.step()
    assert torch.equal(opt.state[ps[1]]["exp_avg"], m_before[1])          # momentum untouched
    torch.testing.assert_close(ps[1].detach() - 1.0, (th_before[1] - 1.0) * 0.99, rtol=1e-15, atol=1e-16)
    assert not torch.equal(opt.state[ps[0]]["exp_avg"], m_before[0])     # the healthy tensor updated
    assert (ps[0].detach() - th_before[0]).abs().max() > 0


def test_tiger_without_guard_freezes_a_nan_coordinate_and_half_precision_guard():
    # torch.sign(nan) = 0: without the guard the NaN sits in the momentum and the coordinate
    # silently stops moving (only the decay acts on it) for good
    p = torch.nn.Parameter(torch.ones(3, dtype=F64))
    opt = ko.Tiger([p], lr=0.01, nan_shrink=None, scale_by_rms=False, weight_decay=0.0)
    p.grad = torch.tensor([1.0, float("nan"), 1.0], dtype=F64)
    opt.step()
    for _ in range(3):
        p.grad = torch.ones(3, dtype=F64)
        opt.step()
    assert torch.isnan(opt.state[p]["exp_avg"]).tolist() == [False, True, False]
    assert p.detach().tolist() == [1.0 - 4 * 0.01, 1.0, 1.0 - 4 * 0.01]
    q = torch.nn.Parameter(torch.full((3,), 60000.0, dtype=torch.float16))
    opt = ko.Tiger([q], lr=0.01, nan_shrink=0.5, scale_by_rms=False)
    q.grad = torch.full((3,), 60000.0, dtype=torch.float16)      # sum overflows float16, not float32
    opt.step()
    assert torch.equal(opt.state[q]["exp_avg"] > 0, torch.ones(3, dtype=torch.bool))


@pytest.mark.parametrize("cls,kw", [(ko.Lion, dict(lr=0.01, weight_decay=0.1)),
                                    (ko.Tiger, dict(lr=0.01, grad_accum_steps=3))])
def test_state_dict_round_trip(cls, kw):
    grads = _grad_stream(_params(), 8)
    ps = _params()
    opt = cls(ps, **kw)
    for gs in grads[:4]:                       # stop in the middle of an accumulation window
        for p, g in zip(ps, gs):
            p.grad = g.clone()
        opt.step()
    saved, ps2 = copy.deepcopy(opt.state_dict()), [torch.nn.Parameter(p.detach().clone()) for p in ps]
    opt2 = cls(ps2, **kw)
    opt2.load_state_dict(saved)
    for gs in grads[4:]:
        for p, q, g in zip(ps, ps2, gs):
            p.grad, q.grad = g.clone(), g.clone()
        opt.step(), opt2.step()
    assert _same(ps, ps2)


def test_param_groups_use_their_own_hyperparameters():
    a, b = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(3))
    opt = ko.Lion([dict(params=[a], lr=0.1), dict(params=[b], lr=0.01, betas=(0.5, 0.5))], lr=1.0)
    a.grad, b.grad = torch.ones(3), -torch.ones(3)
    opt.step()
    torch.testing.assert_close(a.detach(), torch.full((3,), -0.1))
    torch.testing.assert_close(b.detach(), torch.full((3,), 0.01))
    t = ko.Tiger([a], lr=0.1)
    t.add_param_group(dict(params=[b], lr=0.2))
    assert t.param_groups[1]["step"] == 0 and t.param_groups[1]["beta"] == 0.965


def test_tiger_param_groups_classify_kernels_gains_and_biases():
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 2))
    model[0].bias.requires_grad_(False)
    groups = ko.tiger_param_groups(model, lr=2e-3, weight_decay=0.02)
    kinds = [(len(g["params"]), g["lr"], g["weight_decay"], g["scale_by_rms"], g["nan_center"]) for g in groups]
    assert kinds == [(2, 2e-3, 0.02, True, 0.0), (1, 1e-3, 0.0, False, 1.0), (2, 1e-3, 0.0, False, 0.0)]
    opt = ko.Tiger(groups)
    assert [g["lr"] for g in opt.param_groups] == [2e-3, 1e-3, 1e-3]
    only = ko.tiger_param_groups(torch.nn.Linear(2, 2, bias=False))
    assert len(only) == 1 and only[0]["scale_by_rms"] and len(only[0]["params"]) == 1


def test_state_memory_one_buffer_for_sign_optimizers_two_for_adamw():
    def buffers(make):
        model = torch.nn.Linear(16, 16)
        opt = make(model.parameters())
        model(torch.randn(2, 16)).sum().backward()
        opt.step()
        return sum(v.numel() for s in opt.state.values() for v in s.values() if torch.is_tensor(v) and v.ndim > 0)
    n = 16 * 16 + 16
    assert buffers(lambda p: ko.Lion(p)) == n and buffers(lambda p: ko.Tiger(p)) == n
    assert buffers(lambda p: torch.optim.AdamW(p)) == 2 * n


# ------------------------------------------------------------------------------------ validation
@pytest.mark.parametrize("kw,exc,word", [
    (dict(lr=-1.0), ValueError, "lr"), (dict(lr="a"), TypeError, "lr"),
    (dict(betas=0.9), TypeError, "betas"), (dict(betas=(0.9,)), TypeError, "betas"),
    (dict(betas=(1.1, 0.9)), ValueError, "betas[0]"), (dict(betas=(0.9, -0.1)), ValueError, "betas[1]"),
    (dict(weight_decay=-0.1), ValueError, "weight_decay"), (dict(maximize=1), TypeError, "maximize"),
    (dict(foreach="yes"), TypeError, "foreach"),
])
def test_lion_validation(kw, exc, word):
    with pytest.raises(exc, match=word.replace("[", r"\[").replace("]", r"\]")):
        ko.Lion([torch.nn.Parameter(torch.zeros(2))], **kw)


@pytest.mark.parametrize("kw,exc,word", [
    (dict(lr=-1.0), ValueError, "lr"), (dict(beta=1.0), ValueError, "beta"),
    (dict(weight_decay=-1.0), ValueError, "weight_decay"), (dict(grad_accum_steps=0), ValueError, "grad_accum"),
    (dict(grad_accum_steps=2.0), TypeError, "grad_accum"), (dict(nan_shrink=0.0), ValueError, "nan_shrink"),
    (dict(nan_shrink=1.5), ValueError, "nan_shrink"), (dict(nan_center=float("nan")), ValueError, "nan_center"),
    (dict(scale_by_rms=1), TypeError, "scale_by_rms"), (dict(maximize=None), TypeError, "maximize"),
    (dict(foreach=0), TypeError, "foreach"),
])
def test_tiger_validation(kw, exc, word):
    with pytest.raises(exc, match=word):
        ko.Tiger([torch.nn.Parameter(torch.zeros(2))], **kw)


def test_group_overrides_are_validated_too():
    with pytest.raises(ValueError, match="beta"):
        ko.Tiger([dict(params=[torch.nn.Parameter(torch.zeros(2))], beta=2.0)])
    opt = ko.Tiger([torch.nn.Parameter(torch.zeros(2))])
    with pytest.raises(ValueError, match="lr"):
        opt.add_param_group(dict(params=[torch.nn.Parameter(torch.zeros(2))], lr=-3.0))


@pytest.mark.parametrize("cls", [ko.Lion, ko.Tiger, ko.Signum])
def test_complex_integer_and_sparse_are_rejected(cls):
    with pytest.raises(TypeError, match="complex"):
        cls([torch.nn.Parameter(torch.zeros(2, dtype=torch.complex64))])
    with pytest.raises(TypeError, match="floating"):
        cls([torch.zeros(2, dtype=torch.int64)])
    emb = torch.nn.Embedding(10, 3, sparse=True)
    opt = cls(emb.parameters())
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(TypeError, match="sparse"):
        opt.step()


def test_tiger_param_groups_validation():
    with pytest.raises(TypeError, match="model"):
        ko.tiger_param_groups([torch.zeros(2)])
    with pytest.raises(ValueError, match="vector_lr_scale"):
        ko.tiger_param_groups(torch.nn.Linear(2, 2), vector_lr_scale=0.0)


def test_unblocked_lists_as_on_cuda_give_the_same_result(monkeypatch):
    grads = _grad_stream(_params(), 5)
    blocked, _ = _run(lambda p: ko.Tiger(p, lr=1e-2, weight_decay=0.1), grads)
    blocked_lion, _ = _run(lambda p: ko.Lion(p, lr=1e-2, weight_decay=0.1), grads)
    monkeypatch.setattr(ko, "_block_size", lambda device: None)     # one multi-tensor call per op
    whole, _ = _run(lambda p: ko.Tiger(p, lr=1e-2, weight_decay=0.1), grads)
    whole_lion, _ = _run(lambda p: ko.Lion(p, lr=1e-2, weight_decay=0.1), grads)
    for a, b in zip(blocked + blocked_lion, whole + whole_lion):
        torch.testing.assert_close(a, b, rtol=1e-15, atol=1e-15)


def test_groups_without_gradients_and_tiger_closure():
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    opt = ko.Lion([dict(params=[a]), dict(params=[b])], lr=0.5)
    a.grad = torch.ones(2)
    opt.step()
    assert torch.equal(b.detach(), torch.ones(2)) and torch.equal(a.detach(), torch.full((2,), 0.5))
    t = ko.Tiger([b], lr=0.25, weight_decay=0.0, scale_by_rms=False)

    def closure():
        t.zero_grad()
        loss = (b**2).sum()
        loss.backward()
        return loss
    assert t.step(closure).item() == 2.0
    assert torch.equal(b.detach(), torch.full((2,), 0.75))
