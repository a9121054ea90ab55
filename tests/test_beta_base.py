"""Tests for kexue_lib.beta_base (P34): brute-force digits, closed forms, the post's numbers."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from kexue_lib import beta_base as bb
from kexue_lib.positions import rope_frequencies

F64 = torch.float64


def _digits_loop(n: int, bases: list[int]) -> list[int]:
    out = []
    for base in bases:
        n, r = divmod(n, base)
        out.append(r)
    return out


def test_digits_match_divmod_loop_and_clock_example():
    bases = [60, 60, 24, 7]
    ns = [0, 59, 60, 3725, 86399, 86400, 604799]
    got = bb.mixed_radix_digits(torch.tensor(ns), torch.tensor(bases))
    assert got.tolist() == [_digits_loop(n, bases) for n in ns]
    assert got.shape == (len(ns), 4) and got.dtype == torch.int64
    # 3725 s = 1 h 2 min 5 s
    assert got[3].tolist() == [5, 2, 1, 0]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(2, 40), min_size=1, max_size=6), st.integers(0, 10**6))
def test_digits_reconstruct_n_and_are_in_range(bases, n):
    cap = math.prod(bases)
    n = n % cap
    d = bb.mixed_radix_digits(torch.tensor([n], dtype=torch.int32), torch.tensor(bases))[0]
    assert d.dtype == torch.int32
    place = [math.prod(bases[:i]) for i in range(len(bases))]
    assert sum(int(x) * p for x, p in zip(d, place)) == n
    assert all(0 <= int(x) < b for x, b in zip(d, bases))


def test_relative_position_counts_brute_force():
    for L in (1, 2, 8, 33):
        i = torch.arange(L)
        rel = (i[:, None] - i[None, :])
        rel = rel[rel >= 0]
        ref = torch.bincount(rel, minlength=L)
        assert bb.relative_position_counts(L).tolist() == ref.tolist()
    assert bb.relative_position_counts(8).tolist() == [8, 7, 6, 5, 4, 3, 2, 1]


def test_post_frequency_ratio_numbers():
    d, k = 128, 8
    fixed = bb.frequency_ratios(d, k, method="fixed")
    mixed = bb.frequency_ratios(d, k, method="mixed", b=0.625)
    old = bb.frequency_ratios(d, k, method="old")
    pi = bb.frequency_ratios(d, k, method="pi")
    assert fixed.shape == (64,) and fixed.dtype == F64
    assert abs(fixed[0] - 8 ** (-2 / 128)) < 1e-14 and abs(fixed[0] - 0.9680) < 5e-5
    assert abs(fixed[32] - 0.3423) < 5e-5 and abs(fixed[63] - 0.125) < 1e-14
    assert abs(mixed[0] - 0.8568) < 5e-5 and abs(mixed[32] - 0.2530) < 5e-5 and abs(mixed[63] - 0.125) < 1e-14
    torch.testing.assert_close(pi, torch.full((64,), 0.125, dtype=F64), rtol=1e-14, atol=0)
    assert old[0] == 1.0 and abs(old[63] - 8 ** (-126 / 128)) < 1e-14 and abs(old[63] - 0.12913) < 5e-6


@pytest.mark.parametrize("d,k", [(2, 3.0), (16, 4.0), (128, 8.0), (128, 1.0)])
def test_mixed_limits_and_product(d, k):
    torch.testing.assert_close(bb.scale_factors(d, k, method="mixed", b=1.0),
                               bb.scale_factors(d, k, method="fixed"), rtol=1e-13, atol=0)
    torch.testing.assert_close(bb.scale_factors(d, k, method="mixed", b=0.0),
                               bb.scale_factors(d, k, method="pi"), rtol=1e-13, atol=0)
    for method in ("fixed", "mixed", "pi"):
        assert abs(float(bb.scale_factors(d, k, method=method).prod()) - k) < 1e-12 * k
    assert abs(float(bb.scale_factors(d, k, method="old").prod()) - k ** ((d - 2) / d)) < 1e-12 * k


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 128), st.floats(1.0, 64.0), st.floats(0.0, 1.0))
def test_mixed_factors_monotone_and_at_least_one(half, k, b):
    lam = bb.scale_factors(2 * half, k, method="mixed", b=b)
    assert bool((lam >= 1 - 1e-12).all())
    assert bool((lam[1:] <= lam[:-1] * (1 + 1e-12)).all())
    ratios = bb.frequency_ratios(2 * half, k, method="mixed", b=b)
    torch.testing.assert_close(ratios, 1 / torch.cumprod(lam, 0), rtol=1e-10, atol=0)


def test_exponent_closed_form():
    assert abs(bb.mixed_base_exponent(128, 8, b=0.625) - math.log(8) / 64 ** 0.625) < 1e-15
    assert bb.mixed_base_exponent(10, 1, b=0.3) == 0.0


def test_old_is_base_times_k_and_fixed_is_old_over_lambda():
    d, k, base = 64, 16.0, 10000.0
    old = bb.extended_rope_frequencies(d, k, method="old", base=base)
    torch.testing.assert_close(old, rope_frequencies(d, base=base * k), rtol=1e-12, atol=0)
    fixed = bb.extended_rope_frequencies(d, k, method="fixed", base=base, dtype=torch.float32)
    assert fixed.dtype == torch.float32
    torch.testing.assert_close(fixed.double(), old / k ** (2 / d), rtol=1e-6, atol=0)


def test_reddit_variant_is_base_times_k_to_d_over_d_minus_2():
    d, k = 32, 8.0
    got = bb.extended_rope_frequencies(d, k, method="reddit")
    torch.testing.assert_close(got, rope_frequencies(d, base=10000.0 * k ** (d / (d - 2))), rtol=1e-12, atol=0)
    lam = bb.scale_factors(d, k, method="reddit")
    assert lam[0] == 1.0 and abs(float(lam.prod()) - k) < 1e-12 and bool((lam[1:] > lam[0]).all())
    with pytest.raises(ValueError, match="d must be >= 4"):
        bb.frequency_ratios(2, k, method="reddit")


def test_logn_dagger_scale():
    n = torch.tensor([1, 2, 511, 512, 513, 4096])
    got = bb.logn_dagger_scale(n, maxlen=512)
    ref = torch.tensor([max(1.0, math.log(v) / math.log(512)) for v in n.tolist()], dtype=F64)
    torch.testing.assert_close(got, ref, rtol=1e-14, atol=0)
    assert abs(float(got[-1]) - 4 / 3) < 1e-14
    got32 = bb.logn_dagger_scale(n.float(), maxlen=512)
    assert got32.dtype == torch.float32


def test_validation_errors():
    with pytest.raises(TypeError, match="n must"):
        bb.mixed_radix_digits([1, 2], torch.tensor([10]))
    with pytest.raises(TypeError, match="n must"):
        bb.mixed_radix_digits(torch.tensor([True]), torch.tensor([10]))
    with pytest.raises(TypeError, match="bases must"):
        bb.mixed_radix_digits(torch.tensor([1]), torch.tensor([True, False]))
    with pytest.raises(ValueError, match="bases must"):
        bb.mixed_radix_digits(torch.tensor([1]), torch.tensor([[10]]))
    with pytest.raises(ValueError, match="bases must"):
        bb.mixed_radix_digits(torch.tensor([1]), torch.tensor([], dtype=torch.int64))
    with pytest.raises(ValueError, match="bases must"):
        bb.mixed_radix_digits(torch.tensor([1]), torch.tensor([10, 1]))
    with pytest.raises(ValueError, match="n must"):
        bb.mixed_radix_digits(torch.tensor([-1]), torch.tensor([10]))
    with pytest.raises(ValueError, match="length"):
        bb.relative_position_counts(0)
    with pytest.raises(ValueError, match="d must be even"):
        bb.frequency_ratios(7, 2.0)
    with pytest.raises(ValueError, match="d must"):
        bb.frequency_ratios(0, 2.0)
    with pytest.raises(ValueError, match="k must"):
        bb.scale_factors(8, 0.5)
    with pytest.raises(ValueError, match="b must"):
        bb.scale_factors(8, 2.0, method="mixed", b=-0.5)
    with pytest.raises(ValueError, match="b must"):
        bb.mixed_base_exponent(8, 2.0, b=1.5)
    with pytest.raises(ValueError, match="method"):
        bb.scale_factors(8, 2.0, method="yarn")
    with pytest.raises(ValueError, match="method"):
        bb.frequency_ratios(8, 2.0, method="ntk")
    with pytest.raises(TypeError, match="dtype"):
        bb.scale_factors(8, 2.0, dtype=torch.int64)
    with pytest.raises(TypeError, match="dtype"):
        bb.frequency_ratios(8, 2.0, dtype=torch.int64)
    with pytest.raises(ValueError, match="base"):
        bb.extended_rope_frequencies(8, 2.0, base=1.0)
    with pytest.raises(ValueError, match="positions must"):
        bb.logn_dagger_scale(torch.tensor([0, 5]), maxlen=512)
    with pytest.raises(ValueError, match="positions"):
        bb.logn_dagger_scale(torch.tensor([float("nan")]), maxlen=512)
    with pytest.raises(ValueError, match="maxlen"):
        bb.logn_dagger_scale(torch.tensor([3]), maxlen=1)
