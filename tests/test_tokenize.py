"""Tests for kexue_lib.tokenize (P24): brute-force enumeration, exact laws, sentencepiece as a peer."""
from __future__ import annotations

import collections
import itertools
import math
import struct

import pytest
import torch
from hypothesis import given, settings, strategies as st

from kexue_lib import tokenize as tk

F64 = torch.float64
COUNTS = {"w": 3, "a": 8, "t": 9, "c": 4, "h": 5, "i": 7, "n": 7, "g": 3, "watch": 2, "ing": 6,
          "wat": 1, "ching": 1, "atching": 1, "at": 4, "ch": 3, "in": 5}
VOCAB = {k: math.log(v / sum(COUNTS.values())) for k, v in COUNTS.items()}
TEXT = "watching"


def _gen(seed=0):
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def _all_segmentations_by_cuts(text, vocab):
    """Independent brute force: try every subset of cut positions."""
    L, out = len(text), []
    for mask in itertools.product([False, True], repeat=L - 1):
        cuts = [0] + [j + 1 for j, m in enumerate(mask) if m] + [L]
        pieces = tuple(text[a:b] for a, b in zip(cuts[:-1], cuts[1:]))
        if all(p in vocab for p in pieces):
            out.append(pieces)
    return out


def _tv(bounds, segs, probs):
    codes = tk.boundaries_to_codes(bounds)
    emp = torch.stack([(codes == tk.pieces_to_code(s)).double().mean() for s in segs])
    return 0.5 * float((emp - probs).abs().sum()), float(emp.sum())


def test_lattice_and_enumeration_match_brute_force():
    lat = tk.build_lattice(TEXT, VOCAB)
    segs = tk.enumerate_segmentations(TEXT, VOCAB)
    assert sorted(segs) == sorted(_all_segmentations_by_cuts(TEXT, VOCAB))
    assert len(segs) == 25
    subs = {(s, e) for s in range(len(TEXT)) for e in range(s + 1, len(TEXT) + 1) if TEXT[s:e] in VOCAB}
    assert set(zip(lat.starts.tolist(), lat.ends.tolist())) == subs
    assert lat.num_edges == len(subs) and lat.length == 8
    ends, starts = lat.ends.tolist(), lat.starts.tolist()
    assert ends == sorted(ends)
    for k in range(1, len(ends)):          # same end: longest first
        if ends[k] == ends[k - 1]:
            assert starts[k] > starts[k - 1]


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0, 4.0])
def test_log_partition_equals_logsumexp_of_enumeration(alpha):
    lat = tk.build_lattice(TEXT, VOCAB)
    scores = torch.tensor([sum(VOCAB[p] for p in s) for s in _all_segmentations_by_cuts(TEXT, VOCAB)], dtype=F64)
    torch.testing.assert_close(tk.log_partition(lat, alpha=alpha), torch.logsumexp(alpha * scores, 0),
                               rtol=0, atol=1e-12)
    pre = tk.log_partition(lat, alpha=alpha, prefixes=True)
    assert pre.shape == (9,) and float(pre[0]) == 0.0


def test_log_partition_gradient_is_alpha_times_edge_marginals():
    lat = tk.build_lattice(TEXT, VOCAB)
    logp = lat.logp.clone().requires_grad_(True)
    lat2 = tk.Lattice(lat.text, lat.starts, lat.ends, logp, lat.pieces)
    alpha = 0.7
    tk.log_partition(lat2, alpha=alpha).backward()
    segs, probs = tk.exact_distribution(TEXT, VOCAB, alpha=alpha)
    marg = torch.zeros(lat.num_edges, dtype=F64)
    for seg, p in zip(segs, probs):
        pos = 0
        for piece in seg:
            k = [i for i in range(lat.num_edges) if lat.starts[i] == pos and lat.pieces[i] == piece][0]
            marg[k] += p
            pos += len(piece)
    torch.testing.assert_close(logp.grad, alpha * marg, rtol=0, atol=1e-12)


def test_viterbi_matches_brute_force_argmax():
    lat = tk.build_lattice(TEXT, VOCAB)
    pieces, score = tk.viterbi_decode(lat)
    segs = _all_segmentations_by_cuts(TEXT, VOCAB)
    best = max(segs, key=lambda s: sum(VOCAB[p] for p in s))
    assert pieces == best == ("watch", "ing")
    assert score == pytest.approx(sum(VOCAB[p] for p in best), abs=1e-12)


@pytest.mark.parametrize("method", ["perfect", "reservoir"])
def test_exact_samplers_match_enumeration(method):
    lat = tk.build_lattice(TEXT, VOCAB)
    segs, probs = tk.exact_distribution(TEXT, VOCAB, alpha=0.5)
    tv, mass = _tv(tk.sample(lat, 100_000, alpha=0.5, method=method, generator=_gen(1)), segs, probs)
    assert mass == pytest.approx(1.0)
    assert tv < 0.01


@pytest.mark.parametrize("method", ["legacy", "path_score"])
def test_biased_samplers_are_visibly_biased(method):
    lat = tk.build_lattice(TEXT, VOCAB)
    segs, probs = tk.exact_distribution(TEXT, VOCAB, alpha=0.5)
    tv, mass = _tv(tk.sample(lat, 50_000, alpha=0.5, method=method, generator=_gen(2)), segs, probs)
    assert mass == pytest.approx(1.0)
    assert tv > 0.05


def test_legacy_dilution_on_the_commenters_example():
    # three segmentations of equal score, reported longest-last-token first
    vocab = {"w": -1.0, "atching": -1.0, "wat": -1.0, "ching": -1.0, "watch": -1.0, "ing": -1.0}
    lat = tk.build_lattice(TEXT, vocab)
    segs = [("w", "atching"), ("wat", "ching"), ("watch", "ing")]
    for method, law in [("legacy", [0.25, 0.25, 0.5]), ("reservoir", [1 / 3] * 3), ("perfect", [1 / 3] * 3)]:
        b = tk.sample(lat, 60_000, alpha=1.0, method=method, generator=_gen(3))
        codes = tk.boundaries_to_codes(b)
        freq = [float((codes == tk.pieces_to_code(s)).double().mean()) for s in segs]
        assert freq == pytest.approx(law, abs=0.01), method


@pytest.mark.parametrize("k", [2, 3, 5, 8])
def test_stream_select_laws(k):
    lw = torch.zeros(k, dtype=F64)
    n = 80_000
    legacy = torch.bincount(tk.stream_select(lw, n, rule="legacy", generator=_gen(k)), minlength=k) / n
    law = torch.tensor([2.0 ** -(k - 1)] + [2.0 ** -(k - j + 1) for j in range(2, k + 1)], dtype=F64)
    assert float(law.sum()) == pytest.approx(1.0)
    torch.testing.assert_close(legacy.double(), law, rtol=0, atol=0.01)
    res = torch.bincount(tk.stream_select(lw, n, generator=_gen(k + 1)), minlength=k) / n
    torch.testing.assert_close(res.double(), torch.full((k,), 1 / k, dtype=F64), rtol=0, atol=0.01)


def test_weighted_reservoir_arbitrary_weights():
    w = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=F64)
    idx = tk.stream_select(w.log(), 100_000, generator=_gen(5))
    torch.testing.assert_close(torch.bincount(idx, minlength=4).double() / 1e5, w / w.sum(), rtol=0, atol=0.006)
    assert tk.stream_select(w[:1].log(), 10).tolist() == [0] * 10


def test_alpha_limits():
    lat = tk.build_lattice(TEXT, VOCAB)
    segs, probs0 = tk.exact_distribution(TEXT, VOCAB, alpha=0.0)
    torch.testing.assert_close(probs0, torch.full((25,), 1 / 25, dtype=F64))
    tv, _ = _tv(tk.sample(lat, 50_000, alpha=0.0, generator=_gen(6)), segs, probs0)
    assert tv < 0.02
    b = tk.sample(lat, 2000, alpha=200.0, generator=_gen(7), method="reservoir")
    assert all(tk.boundaries_to_pieces(TEXT, row) == ("watch", "ing") for row in b[:50])
    assert bool((tk.boundaries_to_codes(b) == tk.pieces_to_code(("watch", "ing"))).all())
    _, s_star = tk.viterbi_decode(lat)
    for alpha in [10.0, 100.0, 1000.0]:      # S* <= log Z / alpha <= S* + log(25) / alpha
        r = float(tk.log_partition(lat, alpha=alpha)) / alpha
        assert s_star - 1e-12 <= r <= s_star + math.log(25) / alpha + 1e-12


def test_candidate_bound_attained_by_full_vocabulary():
    text = "abcdefghij"
    m = 4
    vocab = {text[s:s + n]: -float(n) for s in range(10) for n in range(1, m + 1) if s + n <= 10}
    assert tk.build_lattice(text, vocab).num_edges == tk.candidate_bound(10, m) == 34


def test_logsumexp2_stable_and_inf():
    x = torch.tensor([0.0, 1e4, -torch.inf, -torch.inf, 3.0], dtype=F64)
    y = torch.tensor([0.0, 0.0, 2.0, -torch.inf, 1e-4 + 3.0], dtype=F64)
    got = tk.logsumexp2(x, y)
    torch.testing.assert_close(got, torch.logaddexp(x, y), rtol=0, atol=1e-15)
    assert float(got[0]) == pytest.approx(math.log(2.0))


@settings(max_examples=30, deadline=None)
@given(st.text(alphabet="ab", min_size=1, max_size=9), st.floats(0.0, 3.0),
       st.lists(st.floats(-5.0, 0.0), min_size=6, max_size=6))
def test_property_log_partition_and_viterbi(text, alpha, lps):
    vocab = dict(zip(["a", "b", "ab", "ba", "aa", "bab"], lps))
    lat = tk.build_lattice(text, vocab)
    segs = _all_segmentations_by_cuts(text, vocab)
    scores = torch.tensor([sum(vocab[p] for p in s) for s in segs], dtype=F64)
    torch.testing.assert_close(tk.log_partition(lat, alpha=alpha), torch.logsumexp(alpha * scores, 0),
                               rtol=0, atol=1e-10)
    pieces, score = tk.viterbi_decode(lat)
    assert "".join(pieces) == text
    assert score == pytest.approx(float(scores.max()), abs=1e-10)
    b = tk.sample(lat, 4, alpha=alpha, generator=_gen(0))
    for row in b:
        assert "".join(tk.boundaries_to_pieces(text, row)) == text
        assert all(p in vocab for p in tk.boundaries_to_pieces(text, row))


def test_dead_end_edges_are_never_sampled():
    vocab = {"a": -1.0, "bc": -1.0, "abc": -2.0, "c": -0.5, "ab": -0.1}   # "b" alone missing
    lat = tk.build_lattice("abc", vocab)
    for method in tk.SAMPLING_METHODS:
        b = tk.sample(lat, 500, alpha=1.0, method=method, generator=_gen(8))
        for row in b[:100]:
            assert all(p in vocab for p in tk.boundaries_to_pieces("abc", row))


def test_first_edge_not_at_start():
    vocab = {"b": -1.0, "abc": -1.0, "a": -3.0, "c": -0.2}
    lat = tk.build_lattice("abc", vocab)
    assert lat.pieces[0] == "a" or int(lat.starts[0]) == 0
    lat2 = tk.build_lattice("abc", {"b": -1.0, "abc": -1.0})      # edge 0 is "b" at (1, 2), a dead end
    assert int(lat2.starts[0]) == 1
    for method in tk.SAMPLING_METHODS:
        b = tk.sample(lat2, 50, method=method, generator=_gen(4))
        assert b.tolist() == [[True, False, False, True]] * 50


def test_float32_lattice():
    lat = tk.build_lattice(TEXT, VOCAB, dtype=torch.float32)
    assert tk.log_partition(lat).dtype == torch.float32
    torch.testing.assert_close(tk.log_partition(lat).double(), tk.log_partition(tk.build_lattice(TEXT, VOCAB)),
                               rtol=1e-6, atol=1e-6)
    assert tk.sample(lat, 3, method="legacy").shape == (3, 9)


def test_segmentation_score_and_codes():
    assert tk.segmentation_score(("watch", "ing"), VOCAB) == pytest.approx(VOCAB["watch"] + VOCAB["ing"])
    assert tk.pieces_to_code(("wat", "ch", "ing")) == (1 << 2) | (1 << 4)
    b = torch.tensor([[True, False, False, True, False, True, False, False, True]])
    assert int(tk.boundaries_to_codes(b)[0]) == (1 << 2) | (1 << 4)
    assert tk.boundaries_to_pieces(TEXT, b[0]) == ("wat", "ch", "ing")


# ---- validation errors --------------------------------------------------------------------

def test_validation_errors():
    lat = tk.build_lattice(TEXT, VOCAB)
    with pytest.raises(TypeError, match="text"):
        tk.build_lattice(b"ab", VOCAB)
    with pytest.raises(ValueError, match="text"):
        tk.build_lattice("", VOCAB)
    with pytest.raises(TypeError, match="vocab"):
        tk.build_lattice("ab", ["a"])
    with pytest.raises(ValueError, match="vocab"):
        tk.build_lattice("ab", {})
    with pytest.raises(TypeError, match="vocab keys"):
        tk.build_lattice("ab", {1: 0.0})
    with pytest.raises(ValueError, match="empty string"):
        tk.build_lattice("ab", {"": 0.0})
    with pytest.raises(ValueError, match="vocab"):
        tk.build_lattice("ab", {"a": float("nan")})
    with pytest.raises(TypeError, match="dtype"):
        tk.build_lattice("ab", {"a": 0.0, "b": 0.0}, dtype=torch.int64)
    with pytest.raises(ValueError, match="cannot be segmented"):
        tk.build_lattice("abz", {"a": 0.0, "b": 0.0})
    with pytest.raises(ValueError, match="cannot be segmented"):
        tk.exact_distribution("abz", {"a": 0.0, "b": 0.0})
    with pytest.raises(TypeError, match="lattice"):
        tk.log_partition("watching")
    with pytest.raises(ValueError, match="alpha"):
        tk.log_partition(lat, alpha=-1.0)
    with pytest.raises(ValueError, match="num_samples"):
        tk.sample(lat, 0)
    with pytest.raises(ValueError, match="method"):
        tk.sample(lat, 2, method="gibbs")
    with pytest.raises(TypeError, match="generator"):
        tk.sample(lat, 2, generator=0)
    with pytest.raises(ValueError, match="log_weights"):
        tk.stream_select(torch.zeros(0, dtype=F64), 3)
    with pytest.raises(ValueError, match="log_weights"):
        tk.stream_select(torch.zeros(2, 2), 3)
    with pytest.raises(ValueError, match="rule"):
        tk.stream_select(torch.zeros(3), 3, rule="max")
    with pytest.raises(ValueError, match="max_len"):
        tk.candidate_bound(3, 4)
    with pytest.raises(ValueError, match="NaN"):
        tk.logsumexp2(torch.tensor([float("nan")]), torch.tensor([0.0]))
    with pytest.raises(TypeError, match="bool"):
        tk.boundaries_to_codes(torch.zeros(2, 5, dtype=torch.int64))
    with pytest.raises(ValueError, match="columns"):
        tk.boundaries_to_codes(torch.zeros(2, 70, dtype=torch.bool))
    with pytest.raises(TypeError, match="pieces"):
        tk.pieces_to_code("watching")
    with pytest.raises(ValueError, match="entries"):
        tk.boundaries_to_pieces("ab", torch.ones(5, dtype=torch.bool))
    with pytest.raises(ValueError, match="not in vocab"):
        tk.segmentation_score(("zz",), VOCAB)


# ---- sentencepiece as the peer (optional) --------------------------------------------------

def _pb_varint(n):
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def _pb_bytes(num, payload):
    return _pb_varint(num << 3 | 2) + _pb_varint(len(payload)) + payload


def _pb_int(num, v):
    return _pb_varint(num << 3) + _pb_varint(v)


def _unigram_model_proto(vocab):
    """A serialised sentencepiece ModelProto for a unigram model with exactly ``vocab``.

    Hand-encoded protobuf (no protobuf dependency): pieces (field 1: piece, score, type),
    trainer_spec.model_type = UNIGRAM (field 2), identity normaliser without a dummy prefix
    or whitespace handling (field 3).
    """
    def piece(tok, score, typ):
        return _pb_bytes(1, _pb_bytes(1, tok.encode()) + _pb_varint(2 << 3 | 5) + struct.pack("<f", score)
                         + _pb_int(3, typ))
    proto = piece("<unk>", 0.0, 2) + piece("<s>", 0.0, 3) + piece("</s>", 0.0, 3)
    proto += b"".join(piece(t, v, 1) for t, v in vocab.items())
    proto += _pb_bytes(2, _pb_int(3, 1))
    proto += _pb_bytes(3, _pb_bytes(1, b"identity") + _pb_int(3, 0) + _pb_int(4, 0) + _pb_int(5, 0))
    return proto


def test_sentencepiece_subword_regularisation_is_the_same_distribution():
    spm = pytest.importorskip("sentencepiece")
    sp = spm.SentencePieceProcessor(model_proto=_unigram_model_proto(VOCAB))
    lat = tk.build_lattice(TEXT, VOCAB)
    assert tuple(sp.encode(TEXT, out_type=str)) == tk.viterbi_decode(lat)[0]
    n, alpha = 20_000, 0.5
    counts = collections.Counter(
        tuple(p) for p in sp.encode([TEXT] * n, out_type=str, enable_sampling=True, alpha=alpha, nbest_size=-1))
    segs, probs = tk.exact_distribution(TEXT, VOCAB, alpha=alpha)
    assert sum(counts[s] for s in segs) == n
    emp = torch.tensor([counts[s] / n for s in segs], dtype=F64)
    assert 0.5 * float((emp - probs).abs().sum()) < 0.02
    _, probs_wrong = tk.exact_distribution(TEXT, VOCAB, alpha=1.0)     # the test can tell alphas apart
    assert 0.5 * float((emp - probs_wrong).abs().sum()) > 0.05
    ours = tk.sample(lat, n, alpha=alpha, generator=_gen(9))
    tv_ours, _ = _tv(ours, segs, probs)
    assert tv_ours < 0.02
