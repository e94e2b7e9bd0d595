"""report/stats.py against scipy, computed here from the same values: arm summaries with Student-t
intervals, paired differences with t and BCa bootstrap intervals, and no interval from one value."""

import math

import numpy as np
import pytest

from report_records import bca, t_interval
from transferlab.report.stats import (
    BOOTSTRAP_MIN_PAIRS, NO_INTERVAL, comparison_text, finite, interval_text, paired_difference, summarize,
)


def test_an_arm_summary_is_the_mean_std_and_t_interval_of_its_finite_values():
    accuracies = [0.81, 0.83, None, 0.80, float("nan"), 0.86, float("inf")]
    kept = [81.0, 83.0, 80.0, 86.0]
    summary = summarize(accuracies, scale=100.0)
    assert summary.n == 4
    assert summary.mean == pytest.approx(np.mean(kept))
    assert summary.std == pytest.approx(np.std(kept, ddof=1))
    assert (summary.low, summary.high) == pytest.approx(t_interval(kept))
    assert list(finite([1, None, float("nan"), 2])) == [1.0, 2.0]


def test_one_value_has_no_interval_and_none_has_nothing():
    one = summarize([0.7], scale=100.0)
    assert (one.mean, one.n) == (70.0, 1)
    assert math.isnan(one.std) and math.isnan(one.low) and math.isnan(one.high)
    empty = summarize([None, float("nan")])
    assert empty.n == 0 and math.isnan(empty.mean)


def test_bounds_clip_an_interval_to_what_an_accuracy_can_be():
    values = [0.05, 0.15]  # two runs: the t interval spans 12.7 standard errors each way
    low, high = t_interval([5.0, 15.0])
    assert low < 0
    summary = summarize(values, scale=100.0, bounds=(0.0, 100.0))
    assert (summary.low, summary.high) == (0.0, pytest.approx(high))
    assert summarize(values, scale=100.0).low == pytest.approx(low)  # no bounds: scipy's interval as it is


def test_a_paired_difference_pairs_by_replicate_and_leaves_out_the_unpaired():
    pretrained = {(1, 42): 0.80, (2, 42): 0.84, (3, 42): 0.81, (4, 42): 0.90, (5, 42): None}
    scratch = {(1, 42): 0.40, (2, 42): 0.47, (3, 42): 0.42, (5, 42): 0.30, (6, 42): 0.35}
    differences = [40.0, 37.0, 39.0]  # seeds 1-3: seed 4 has no scratch run, seed 5 no finite pretrained one
    result = paired_difference(pretrained, scratch, scale=100.0)
    assert result.n == 3
    assert result.mean == pytest.approx(np.mean(differences))
    assert (result.low, result.high) == pytest.approx(t_interval(differences))
    assert result.excludes_zero is True
    assert math.isnan(result.boot_low) and math.isnan(result.boot_high)  # under 5 pairs: no bootstrap
    assert comparison_text(result) == f"+{np.mean(differences):.2f} {interval_text(*t_interval(differences))}"


def test_from_five_pairs_on_the_bootstrap_interval_is_scipys_bca():
    a = {(seed, 7): value for seed, value in enumerate([0.61, 0.58, 0.66, 0.60, 0.64, 0.59, 0.70])}
    b = {(seed, 7): value for seed, value in enumerate([0.60, 0.59, 0.61, 0.62, 0.60, 0.60, 0.61])}
    differences = [100 * (a[k] - b[k]) for k in sorted(a)]
    assert len(differences) >= BOOTSTRAP_MIN_PAIRS
    result = paired_difference(a, b, scale=100.0)
    assert (result.boot_low, result.boot_high) == pytest.approx(bca(differences))
    assert (result.low, result.high) == pytest.approx(t_interval(differences))
    assert result.excludes_zero == (t_interval(differences)[0] > 0 or t_interval(differences)[1] < 0)
    assert paired_difference(a, b, scale=100.0) == result  # seeded: the same values, the same interval


def test_one_pair_gives_the_difference_and_no_interval():
    result = paired_difference({(1, 1): 0.75}, {(1, 1): 0.70, (2, 1): 0.6}, scale=100.0)
    assert (result.n, result.mean) == (1, pytest.approx(5.0))
    assert math.isnan(result.low) and result.excludes_zero is None
    assert comparison_text(result) == f"+5.00 ({NO_INTERVAL})"
    assert NO_INTERVAL == "n=1: no interval"
    nothing = paired_difference({(1, 1): 0.75}, {(2, 1): 0.70})
    assert nothing.n == 0 and comparison_text(nothing) == ""


def test_pairs_that_all_differ_by_the_same_amount_give_no_interval():
    """Two pairs both +1 point (one image of 100): no spread to estimate the error from, so no
    zero-width interval that would 'exclude 0', in the stats, the tables and the figures' legends."""
    from transferlab.report.tables import interval_cell

    result = paired_difference({(1, 1): 0.17, (2, 2): 0.12}, {(1, 1): 0.16, (2, 2): 0.11}, scale=100.0)
    assert result.n == 2 and result.mean == pytest.approx(1.0)
    assert math.isnan(result.low) and math.isnan(result.high) and result.excludes_zero is None
    assert interval_cell(result) == "every pair the same: no interval"
    assert comparison_text(result) == "+1.00 (every pair the same: no interval)"
    arm = summarize([0.16, 0.16], scale=100.0)
    assert arm.n == 2 and arm.mean == pytest.approx(16.0) and arm.std == 0.0 and math.isnan(arm.low)
    assert interval_cell(arm) == "every run the same: no interval"
