"""Tests for kexue_lib.crf (P14): brute force over all paths, forward-backward identities,
gradcheck, the lr-multiplier reparameterisation, and (optionally) pytorch-crf."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from kexue_lib import crf as C

F64, F32 = torch.float64, torch.float32


def _data(B=5, L=6, K=4, seed=0, dtype=F64, scale=1.0, lengths=None):
    g = torch.Generator().manual_seed(seed)
    e = torch.randn(B, L, K, generator=g, dtype=F64).to(dtype)
    A = (scale * torch.randn(K, K, generator=g, dtype=F64)).to(dtype)
    s = torch.randn(K, generator=g, dtype=F64).to(dtype)
    t = torch.randn(K, generator=g, dtype=F64).to(dtype)
    tags = torch.randint(0, K, (B, L), generator=g)
    if lengths is None:
        lengths = torch.randint(1, L + 1, (B,), generator=g)
        lengths[0] = L
    mask = torch.arange(L)[None] < torch.as_tensor(lengths)[:, None]
    return e, A, s, t, tags, mask


def _kw(s, t, use):
    return dict(start_transitions=s, end_transitions=t) if use else {}


# ------------------------------------------------------------------ brute force references
@pytest.mark.parametrize("use_se", [False, True])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("scale", [1.0, 200.0])          # 200: column range > 300, log-sum-exp path
def test_log_partition_and_viterbi_match_brute_force(use_se, masked, scale):
    e, A, s, t, _, mask = _data(scale=scale)
    m = mask if masked else None
    kw = _kw(s, t, use_se)
    torch.testing.assert_close(C.crf_log_partition(e, A, m, **kw), C.brute_force_log_partition(e, A, m, **kw),
                               rtol=1e-12, atol=1e-10)
    tags, score = C.viterbi_decode(e, A, m, **kw)
    tb, sb = C.brute_force_decode(e, A, m, **kw)
    assert torch.equal(tags, tb)
    torch.testing.assert_close(score, sb, rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(C.crf_score(e, tags, A, m, **kw), score, rtol=1e-12, atol=1e-10)


def test_forbidden_transitions_with_minus_inf_match_brute_force():
    e, A, _, _, _, mask = _data(K=4, L=7)
    A = A.masked_fill(~C.bmes_allowed_mask(), -math.inf)
    torch.testing.assert_close(C.crf_log_partition(e, A, mask), C.brute_force_log_partition(e, A, mask),
                               rtol=1e-12, atol=1e-12)
    tags, _ = C.viterbi_decode(e, A, mask, pad_tag=-1)
    assert torch.equal(tags, C.brute_force_decode(e, A, mask, pad_tag=-1)[0])
    allowed = C.bmes_allowed_mask()
    pairs = tags[:, :-1].clamp(min=0), tags[:, 1:].clamp(min=0)
    assert bool(allowed[pairs][mask[:, 1:]].all())
    # a column with no allowed predecessor gives -inf, not NaN
    A2 = A.clone()
    A2[:, 2] = -math.inf
    z = C.crf_log_partition(e, A2, mask)
    assert bool(torch.isfinite(z).all())
    node, _ = C.crf_marginals(e, A2, mask)
    assert float(node[:, 1:, 2].abs().max()) == 0.0 and not bool(torch.isnan(node).any())


def test_score_matches_explicit_sum():
    e, A, s, t, tags, mask = _data()
    got = C.crf_score(e, tags, A, mask, start_transitions=s, end_transitions=t)
    for b in range(e.shape[0]):
        n = int(mask[b].sum())
        y = tags[b, :n].tolist()
        ref = s[y[0]] + t[y[-1]] + sum(e[b, i, y[i]] for i in range(n)) + sum(A[y[i], y[i + 1]] for i in range(n - 1))
        assert math.isclose(float(got[b]), float(ref), rel_tol=1e-12, abs_tol=1e-12)


def test_batched_transitions_equal_per_sequence_calls():
    e, _, s, t, tags, mask = _data(B=4)
    g = torch.Generator().manual_seed(3)
    A = torch.randn(4, e.shape[2], e.shape[2], generator=g, dtype=F64)
    for scale in (1.0, 400.0):
        z = C.crf_log_partition(e, scale * A, mask, start_transitions=s, end_transitions=t)
        v, _ = C.viterbi_decode(e, scale * A, mask)
        node, pair = C.crf_marginals(e, scale * A, mask)
        nll = C.crf_nll(e, tags, scale * A, mask, reduction="none")
        for b in range(4):
            sl = slice(b, b + 1)
            torch.testing.assert_close(z[sl], C.crf_log_partition(e[sl], scale * A[b], mask[sl],
                                                                  start_transitions=s, end_transitions=t))
            assert torch.equal(v[sl], C.viterbi_decode(e[sl], scale * A[b], mask[sl])[0])
            n1, p1 = C.crf_marginals(e[sl], scale * A[b], mask[sl])
            torch.testing.assert_close(node[sl], n1)
            torch.testing.assert_close(pair[sl], p1)
            torch.testing.assert_close(nll[sl], C.crf_nll(e[sl], tags[sl], scale * A[b], mask[sl], reduction="none"))


def test_single_position_and_single_tag():
    e, A, s, t, tags, _ = _data(L=1)
    torch.testing.assert_close(C.crf_log_partition(e, A, start_transitions=s, end_transitions=t),
                               torch.logsumexp(e[:, 0] + s + t, -1))
    assert torch.equal(C.viterbi_decode(e, A)[0], e.argmax(-1))
    e1, A1, *_ = _data(K=1)
    torch.testing.assert_close(C.crf_log_partition(e1, A1), e1.sum((1, 2)) + (e1.shape[1] - 1) * A1[0, 0])


def test_float32_agrees_with_float64():
    e, A, s, t, tags, mask = _data(B=8, L=40, K=6)
    kw64 = dict(start_transitions=s, end_transitions=t)
    kw32 = dict(start_transitions=s.float(), end_transitions=t.float())
    torch.testing.assert_close(C.crf_log_partition(e.float(), A.float(), mask, **kw32).double(),
                               C.crf_log_partition(e, A, mask, **kw64), rtol=1e-5, atol=1e-4)
    assert torch.equal(C.viterbi_decode(e.float(), A.float(), mask)[0], C.viterbi_decode(e, A, mask)[0])


# ------------------------------------------------------------------ gradients and marginals
@pytest.mark.parametrize("scale", [1.0, 200.0])
def test_gradcheck_log_partition_and_nll(scale):
    e, A, s, t, tags, mask = _data(B=3, L=5, K=3, scale=scale)
    inputs = [x.clone().requires_grad_() for x in (e, A, s, t)]
    f = lambda e_, A_, s_, t_: C.crf_log_partition(e_, A_, mask, start_transitions=s_, end_transitions=t_)
    assert torch.autograd.gradcheck(f, inputs)
    g = lambda e_, A_, s_, t_: C.crf_nll(e_, tags, A_, mask, start_transitions=s_, end_transitions=t_, reduction="sum")
    assert torch.autograd.gradcheck(g, inputs)


@pytest.mark.parametrize("scale", [1.0, 200.0])
def test_nll_gradient_is_expected_minus_observed_counts(scale):
    e, A, s, t, tags, mask = _data(B=6, L=7, K=4, scale=scale)
    e_, A_, s_, t_ = (x.clone().requires_grad_() for x in (e, A, s, t))
    C.crf_nll(e_, tags, A_, mask, start_transitions=s_, end_transitions=t_, reduction="sum").backward()
    node, pair = C.crf_marginals(e, A, mask, start_transitions=s, end_transitions=t)
    observed = C.transition_counts(tags, 4, mask)
    torch.testing.assert_close(A_.grad, (pair.sum(1) - observed).sum(0), rtol=1e-9, atol=1e-10)
    onehot = torch.nn.functional.one_hot(tags, 4).to(F64) * mask[..., None]
    torch.testing.assert_close(e_.grad, node - onehot, rtol=1e-9, atol=1e-10)
    last = tags.gather(1, (mask.sum(1) - 1)[:, None]).squeeze(1)
    last_node = node.gather(1, (mask.sum(1) - 1).view(-1, 1, 1).expand(-1, 1, 4)).squeeze(1)
    torch.testing.assert_close(s_.grad, (node[:, 0] - torch.nn.functional.one_hot(tags[:, 0], 4)).sum(0))
    torch.testing.assert_close(t_.grad, (last_node - torch.nn.functional.one_hot(last, 4)).sum(0))


def test_marginals_match_brute_force_and_are_consistent():
    e, A, s, t, _, mask = _data(B=3, L=5, K=3)
    node, pair = C.crf_marginals(e, A, mask, start_transitions=s, end_transitions=t)
    for b, paths, sc in C._brute_scores(e, A, mask, s, t):
        p = torch.softmax(sc, 0)
        n = paths.shape[1]
        ref_node = torch.stack([torch.zeros(3, dtype=F64).index_add_(0, paths[:, i], p) for i in range(n)])
        torch.testing.assert_close(node[b, :n], ref_node, rtol=1e-12, atol=1e-12)
        for i in range(n - 1):
            ref_pair = torch.zeros(9, dtype=F64).index_add_(0, paths[:, i] * 3 + paths[:, i + 1], p).view(3, 3)
            torch.testing.assert_close(pair[b, i], ref_pair, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(pair.sum(-1), node[:, :-1] * mask[:, 1:, None])   # consistency
    assert float(node[~mask].abs().max()) == 0.0


def test_gradient_vanishes_when_emissions_fit():
    K, L = 4, 12
    tags = C.sample_bmes_tags(16, L, gen=torch.Generator().manual_seed(1))
    A = torch.zeros(K, K, dtype=F64, requires_grad=True)
    norms = []
    for strength in (0.0, 12.0):
        e = strength * torch.nn.functional.one_hot(tags, K).to(F64)
        e = e + 0.3 * torch.randn(16, L, K, generator=torch.Generator().manual_seed(2), dtype=F64)
        A.grad = None
        C.crf_nll(e, tags, A).backward()
        norms.append(float(A.grad.norm()))
    assert norms[1] < 1e-3 * norms[0]


# ------------------------------------------------------------------ properties
@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), K=st.integers(1, 5), L=st.integers(1, 9), shift=st.floats(-5, 5))
def test_log_partition_bounds_and_shift_invariance(seed, K, L, shift):
    e, A, _, _, _, mask = _data(B=3, L=L, K=K, seed=seed)
    z = C.crf_log_partition(e, A, mask)
    _, best = C.viterbi_decode(e, A, mask)
    n = mask.sum(1).to(F64)
    assert bool((z >= best - 1e-9).all()) and bool((z <= best + n * math.log(K) + 1e-9).all())
    z2 = C.crf_log_partition(e, A + shift, mask)
    torch.testing.assert_close(z2, z + shift * (n - 1), rtol=1e-10, atol=1e-9)
    assert torch.equal(C.viterbi_decode(e, A + shift, mask)[0], C.viterbi_decode(e, A, mask)[0])


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), batch=st.integers(1, 6), length=st.integers(1, 30), w=st.integers(1, 6))
def test_sample_bmes_tags_are_legal(seed, batch, length, w):
    tags = C.sample_bmes_tags(batch, length, max_word_len=w, gen=torch.Generator().manual_seed(seed))
    assert tags.shape == (batch, length) and tags.dtype == torch.long
    allowed = C.bmes_allowed_mask()
    assert bool(allowed[tags[:, :-1], tags[:, 1:]].all())
    assert bool(((tags[:, 0] == 0) | (tags[:, 0] == 1)).all())          # starts a word
    assert bool(((tags[:, -1] == 0) | (tags[:, -1] == 3)).all())        # ends a word
    if w == 1:
        assert bool((tags == 0).all())


def test_bmes_allowed_mask_lists_the_eight_legal_transitions():
    a = C.bmes_allowed_mask()
    legal = {("s", "s"), ("s", "b"), ("b", "m"), ("b", "e"), ("m", "m"), ("m", "e"), ("e", "s"), ("e", "b")}
    got = {(C.BMES_TAGS[i], C.BMES_TAGS[j]) for i in range(4) for j in range(4) if a[i, j]}
    assert got == legal


def test_transition_counts_match_a_loop():
    _, _, _, _, tags, mask = _data(B=4, L=9, K=5)
    got = C.transition_counts(tags, 5, mask)
    for b in range(4):
        ref = torch.zeros(5, 5, dtype=F64)
        n = int(mask[b].sum())
        for i in range(n - 1):
            ref[tags[b, i], tags[b, i + 1]] += 1
        assert torch.equal(got[b], ref)
    assert float(C.transition_counts(tags, 5).sum()) == 4 * 8


def test_reductions_and_integer_mask():
    e, A, _, _, tags, mask = _data()
    none = C.crf_nll(e, tags, A, mask, reduction="none")
    torch.testing.assert_close(C.crf_nll(e, tags, A, mask, reduction="sum"), none.sum())
    torch.testing.assert_close(C.crf_nll(e, tags, A, mask), none.mean())
    torch.testing.assert_close(C.crf_nll(e, tags, A, mask, reduction="token_mean"), none.sum() / mask.sum())
    torch.testing.assert_close(C.crf_nll(e, tags, A, reduction="token_mean"),
                               C.crf_nll(e, tags, A, reduction="sum") / tags.numel())
    torch.testing.assert_close(C.crf_nll(e, tags, A, mask.long(), reduction="none"), none)
    # padded tags may hold anything
    junk = tags.masked_fill(~mask, 99)
    torch.testing.assert_close(C.crf_nll(e, junk, A, mask, reduction="none"), none)


# ------------------------------------------------------------------ the module and the lr multiplier
def test_module_reparameterisation_keeps_the_init_and_scales_steps():
    K = 4
    base = C.LinearChainCRF(K, generator=torch.Generator().manual_seed(0), dtype=F64)
    bound = math.sqrt(6 / (2 * K))
    assert float(base.transitions.detach().abs().max()) <= bound
    e, _, _, _, tags, mask = _data(K=K)
    g_plain = None
    for lam in (1.0, 10.0, 1000.0):
        crf = C.LinearChainCRF(K, lr_multiplier=lam, generator=torch.Generator().manual_seed(0), dtype=F64)
        torch.testing.assert_close(crf.transitions, base.transitions, rtol=1e-15, atol=1e-15)
        # SGD: the effective step on A is lambda**2 times the plain one
        opt = torch.optim.SGD(crf.parameters(), lr=0.1)
        before = crf.transitions.detach().clone()
        crf(e, tags, mask).backward()
        grad_A = crf.raw_transitions.grad / lam
        if g_plain is None:
            g_plain = grad_A.clone()
        torch.testing.assert_close(grad_A, g_plain, rtol=1e-12, atol=1e-14)
        opt.step()
        torch.testing.assert_close(crf.transitions.detach() - before, -0.1 * lam**2 * g_plain, rtol=1e-9, atol=1e-13)


def test_module_adam_step_is_lambda_times_with_eps_over_lambda():
    K, lam, steps = 4, 30.0, 5
    e, _, _, _, tags, mask = _data(K=K)
    plain = C.LinearChainCRF(K, generator=torch.Generator().manual_seed(0), dtype=F64)
    scaled = C.LinearChainCRF(K, lr_multiplier=lam, generator=torch.Generator().manual_seed(0), dtype=F64)
    o1 = torch.optim.Adam(plain.parameters(), lr=1e-2 * lam, eps=1e-8 / lam)
    o2 = torch.optim.Adam(scaled.parameters(), lr=1e-2, eps=1e-8)
    for _ in range(steps):
        for crf, opt in ((plain, o1), (scaled, o2)):
            opt.zero_grad()
            crf(e, tags, mask).backward()
            opt.step()
    torch.testing.assert_close(scaled.transitions, plain.transitions, rtol=1e-10, atol=1e-12)


def test_module_methods_allowed_and_start_end():
    K = 4
    crf = C.LinearChainCRF(K, allowed=C.bmes_allowed_mask(), start_end=True, init="normal",
                           generator=torch.Generator().manual_seed(0), dtype=F64, lr_multiplier=5.0)
    assert bool(torch.isinf(crf.transitions[~C.bmes_allowed_mask()]).all())
    e, _, _, _, _, mask = _data(K=K)
    tags = C.sample_bmes_tags(e.shape[0], e.shape[1], gen=torch.Generator().manual_seed(4))
    with torch.no_grad():
        crf.raw_start.normal_()
        crf.raw_end.normal_()
    kw = dict(start_transitions=crf.start_transitions, end_transitions=crf.end_transitions)
    torch.testing.assert_close(crf.log_partition(e, mask), C.brute_force_log_partition(e, crf.transitions, mask, **kw))
    torch.testing.assert_close(crf.nll(e, tags, mask, reduction="none"),
                               crf.log_partition(e, mask) - C.crf_score(e, tags, crf.transitions, mask, **kw))
    assert torch.equal(crf.viterbi(e, mask)[0], C.brute_force_decode(e, crf.transitions, mask, **kw)[0])
    assert torch.equal(crf.decode(e, mask)[0], crf.viterbi(e, mask)[0])
    node, _ = crf.marginals(e, mask)
    torch.testing.assert_close(node.sum(-1), mask.to(F64))
    assert "lr_multiplier=5" in repr(crf)
    z = C.LinearChainCRF(3, init="zeros")
    assert float(z.transitions.detach().abs().max()) == 0.0 and z.start_transitions is None and z.end_transitions is None


# ------------------------------------------------------------------ reference implementation
def test_matches_pytorch_crf():
    torchcrf = pytest.importorskip("torchcrf")
    torch.manual_seed(0)
    B, L, K = 8, 30, 7
    ref = torchcrf.CRF(K, batch_first=True).double()
    e, _, _, _, tags, mask = _data(B=B, L=L, K=K)
    e = e.requires_grad_()
    ll = ref(e, tags, mask, reduction="sum")
    ours = C.crf_nll(e, tags, ref.transitions, mask, start_transitions=ref.start_transitions,
                     end_transitions=ref.end_transitions, reduction="sum")
    torch.testing.assert_close(ours, -ll, rtol=1e-12, atol=1e-10)
    g_ref = torch.autograd.grad(-ll, [e, ref.transitions])
    g_our = torch.autograd.grad(ours, [e, ref.transitions])
    for a, b in zip(g_ref, g_our):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    dec = ref.decode(e.detach(), mask)
    with torch.no_grad():
        ours_tags, _ = C.viterbi_decode(e, ref.transitions, mask, start_transitions=ref.start_transitions,
                                        end_transitions=ref.end_transitions)
    for b in range(B):
        assert ours_tags[b, : len(dec[b])].tolist() == dec[b]


# ------------------------------------------------------------------ validation
def test_validation_errors():
    e, A, s, t, tags, mask = _data()
    with pytest.raises(TypeError, match="emissions"):
        C.crf_log_partition(e.numpy(), A)
    with pytest.raises(ValueError, match="emissions"):
        C.crf_log_partition(e[0], A)
    with pytest.raises(ValueError, match="emissions"):
        C.crf_log_partition(e[:, :0], A)
    with pytest.raises(ValueError, match="emissions"):
        C.crf_log_partition(e.clone().index_fill_(0, torch.tensor([0]), math.nan), A)
    with pytest.raises(ValueError, match="transitions"):
        C.crf_log_partition(e, A[:3])
    with pytest.raises(TypeError, match="transitions"):
        C.crf_log_partition(e, A.float())
    with pytest.raises(ValueError, match="transitions"):
        C.crf_log_partition(e, A.clone().fill_(math.inf))
    with pytest.raises(ValueError, match="start_transitions"):
        C.crf_log_partition(e, A, start_transitions=s[:2])
    with pytest.raises(ValueError, match="end_transitions"):
        C.crf_log_partition(e, A, end_transitions=torch.full_like(t, math.nan))
    with pytest.raises(TypeError, match="mask"):
        C.crf_log_partition(e, A, [[1]])
    with pytest.raises(ValueError, match="mask"):
        C.crf_log_partition(e, A, mask[:, :2])
    with pytest.raises(TypeError, match="mask"):
        C.crf_log_partition(e, A, mask.double())
    with pytest.raises(ValueError, match="mask"):
        C.crf_log_partition(e, A, mask.long() * 2)
    with pytest.raises(ValueError, match="at least one position"):
        C.crf_log_partition(e, A, torch.zeros_like(mask))
    bad = mask.clone()
    bad[0, 2] = False
    with pytest.raises(ValueError, match="prefix"):
        C.crf_log_partition(e, A, bad)
    with pytest.raises(TypeError, match="tags"):
        C.crf_nll(e, tags.tolist(), A)
    with pytest.raises(TypeError, match="tags"):
        C.crf_nll(e, tags.int(), A)
    with pytest.raises(ValueError, match="tags"):
        C.crf_nll(e, tags[:, :2], A)
    with pytest.raises(ValueError, match="tags"):
        C.crf_nll(e, tags + 10, A)
    with pytest.raises(ValueError, match="reduction"):
        C.crf_nll(e, tags, A, reduction="avg")
    with pytest.raises(TypeError, match="pad_tag"):
        C.viterbi_decode(e, A, pad_tag=0.5)
    with pytest.raises(ValueError, match="too large"):
        C.brute_force_log_partition(torch.zeros(1, 12, 5, dtype=F64), torch.zeros(5, 5, dtype=F64))
    with pytest.raises(TypeError, match="tags"):
        C.transition_counts(tags.float(), 4)
    with pytest.raises(ValueError, match="num_tags"):
        C.transition_counts(tags, 0)
    with pytest.raises(ValueError, match="batch"):
        C.sample_bmes_tags(0, 5)
    with pytest.raises(ValueError, match="lr_multiplier"):
        C.LinearChainCRF(4, lr_multiplier=0.0)
    with pytest.raises(ValueError, match="num_tags"):
        C.LinearChainCRF(0)
    with pytest.raises(ValueError, match="init"):
        C.LinearChainCRF(4, init="orthogonal")
    with pytest.raises(TypeError, match="allowed"):
        C.LinearChainCRF(4, allowed=torch.ones(4, 4))
    with pytest.raises(ValueError, match="allowed"):
        C.LinearChainCRF(4, allowed=torch.ones(3, 3, dtype=torch.bool))


def test_device_mismatch_is_reported():
    e, A, _, _, tags, mask = _data()
    meta = torch.device("meta")                    # a second device that every build has
    with pytest.raises(ValueError, match="transitions must be on the device"):
        C.crf_log_partition(e, A.to(meta))
    with pytest.raises(ValueError, match="mask must be on the device"):
        C.crf_log_partition(e, A, mask.to(meta))
    with pytest.raises(ValueError, match="tags must be on the device"):
        C.crf_nll(e, tags.to(meta), A)


def test_sample_bmes_tags_default_generator_is_deterministic():
    assert torch.equal(C.sample_bmes_tags(3, 10), C.sample_bmes_tags(3, 10))
