"""Statistics checked against hand computations."""

import math

import numpy as np
import pytest

from kurabe.analysis.stats import median_ci, paired_ratio


def test_median_is_the_sample_median_and_inside_its_interval():
    values = [10.0, 12.0, 11.0, 50.0, 9.0, 10.5]
    est = median_ci(values)
    assert est.median == pytest.approx(10.75)  # (10.5 + 11) / 2 by hand
    assert est.n == 6
    assert min(values) <= est.ci_low <= est.median <= est.ci_high <= max(values)


def test_median_interval_is_reproducible_and_narrows_with_more_data():
    rng = np.random.default_rng(1)
    small = list(rng.normal(100, 10, 8))
    large = list(rng.normal(100, 10, 200))
    a, b = median_ci(small), median_ci(small)
    assert (a.ci_low, a.ci_high) == (b.ci_low, b.ci_high)  # fixed seed
    wide = a.ci_high - a.ci_low
    narrow = median_ci(large).ci_high - median_ci(large).ci_low
    assert narrow < wide
    # The median of N(100, 10) is 100: a 95% interval from 200 draws must hold it.
    assert median_ci(large).ci_low < 100 < median_ci(large).ci_high


def test_median_of_one_value_has_no_interval_and_none_values_are_dropped():
    est = median_ci([None, 3.0, float("nan")])
    assert (est.median, est.ci_low, est.ci_high, est.n) == (3.0, None, None, 1)
    assert median_ci([]).median is None


def test_paired_ratio_is_geometric_mean_of_pair_ratios():
    a = [2.0, 8.0, 4.0]
    b = [1.0, 2.0, 4.0]
    # pair ratios 2, 4, 1 -> geometric mean (2*4*1)^(1/3) = 2
    r = paired_ratio(a, b)
    assert r.ratio == pytest.approx(2.0)
    assert r.n == 3
    assert r.ci_low <= 2.0 <= r.ci_high


def test_paired_ratio_constant_speedup_has_a_tight_decided_interval():
    b = [100.0, 90.0, 110.0, 95.0, 105.0]
    a = [x * 1.41 for x in b]
    r = paired_ratio(a, b)
    assert r.ratio == pytest.approx(1.41)
    assert r.ci_low == pytest.approx(1.41) and r.ci_high == pytest.approx(1.41)
    assert r.decided


def test_paired_ratio_with_noise_around_one_is_undecided():
    a = [100.0, 102.0, 98.0, 101.0, 99.0, 100.5]
    b = [101.0, 99.0, 100.0, 100.0, 100.5, 99.5]
    r = paired_ratio(a, b)
    assert r.ci_low < 1.0 < r.ci_high
    assert not r.decided
    expected = math.exp(sum(math.log(x / y) for x, y in zip(a, b, strict=True)) / len(a))
    assert r.ratio == pytest.approx(expected)


def test_paired_ratio_rejects_unmatched_lengths():
    with pytest.raises(ValueError):
        paired_ratio([1.0], [1.0, 2.0])


def test_ratio_of_medians_between_two_runs():
    from kurabe.analysis.stats import ratio_of_medians

    before = [100.0, 98.0, 103.0, 101.0, 99.0]
    after = [x * 1.25 for x in before]
    r = ratio_of_medians(after, before)
    assert r.ratio == pytest.approx(1.25)  # median 125.0 / median 100.0
    assert r.ci_low <= 1.25 <= r.ci_high and r.decided
    same = ratio_of_medians([100.0, 101.0, 99.0, 100.5], [100.2, 99.8, 100.9, 99.1])
    assert not same.decided
