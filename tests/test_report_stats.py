"""report/stats.py against scipy, computed here from the same values: arm summaries with Student-t
intervals, paired differences from exact correct counts with their t intervals, paired t and exact
sign test p-values, Holm's adjustment, only intervals whose simulated coverage holds, and no
interval from one value."""

import math

import numpy as np
import pytest

from fractions import Fraction

from scipy import stats as scipy_stats

from report_records import t_interval
from transferlab.report.stats import (
    MIN_COVERAGE, NO_INTERVAL, SIMULATED_COVERAGE, comparison_text, exact_accuracy, finite, holds_coverage, holm,
    interval_text, number_text, paired_difference, summarize,
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
    assert comparison_text(result) == f"+{np.mean(differences):.2f} {interval_text(*t_interval(differences))}"


def test_p_values_are_scipys_paired_t_and_exact_sign_test():
    a = {(seed, 7): value for seed, value in enumerate([0.61, 0.58, 0.66, 0.60, 0.64, 0.59, 0.70])}
    b = {(seed, 7): value for seed, value in enumerate([0.60, 0.59, 0.61, 0.62, 0.60, 0.60, 0.61])}
    differences = [100 * (a[k] - b[k]) for k in sorted(a)]  # 4 above 0, 3 below
    result = paired_difference(a, b, scale=100.0)
    assert (result.low, result.high) == pytest.approx(t_interval(differences))
    assert result.t_p == pytest.approx(scipy_stats.ttest_rel([a[k] for k in sorted(a)],
                                                             [b[k] for k in sorted(a)]).pvalue)
    assert result.sign_p == pytest.approx(scipy_stats.binomtest(4, 7).pvalue)
    assert result.excludes_zero == (t_interval(differences)[0] > 0 or t_interval(differences)[1] < 0)
    # Five pairs all one way: the sign test's smallest p, 2 / 2**5, above 0.05 whatever the sizes.
    five = paired_difference({(s, 0): 0.9 for s in range(5)}, {(s, 0): 0.5 + s / 100 for s in range(5)}, 100.0)
    assert five.sign_p == pytest.approx(0.0625)
    assert five.t_p < 1e-6


def test_holm_adjusts_the_comparisons_of_a_table_step_down():
    # By hand: sorted 0.01, 0.02, 0.04 -> 3 * 0.01, max(0.03, 2 * 0.02), max(0.04, 1 * 0.04); nan is no test.
    assert holm([0.04, 0.01, float("nan"), 0.02]) == pytest.approx([0.04, 0.03, float("nan"), 0.04], nan_ok=True)
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1, never below an earlier step
    assert holm([]) == []


def test_differences_are_taken_between_correct_counts_so_equal_differences_are_equal():
    """Fractions of 100 test images: 0.57 - 0.50 and 0.29 - 0.22 are both 7 images (7 points), though
    100 * (a - b) in floating point gives 7.000000000000006 and 6.999999999999995."""
    assert 100 * (0.57 - 0.50) != 100 * (0.29 - 0.22)
    assert exact_accuracy(0.57, 100) == Fraction(57, 100)
    assert exact_accuracy(0.5712, 100) == 0.5712  # not a whole number of 100 images: as it is
    assert exact_accuracy(0.57, None) == 0.57
    a = {(1, 0): exact_accuracy(0.57, 100), (2, 0): exact_accuracy(0.29, 100), (3, 0): exact_accuracy(0.64, 100)}
    b = {(1, 0): exact_accuracy(0.50, 100), (2, 0): exact_accuracy(0.22, 100), (3, 0): exact_accuracy(0.64, 100)}
    result = paired_difference(a, b, scale=100.0)
    assert result.mean == 14 / 3
    assert (result.low, result.high) == pytest.approx(t_interval([7.0, 7.0, 0.0]))
    # A zero difference is zero, and no text says -0.00.
    zero = paired_difference({(1, 0): exact_accuracy(0.29, 100)}, {(1, 0): exact_accuracy(0.29, 100)}, 100.0)
    assert zero.mean == 0.0 and comparison_text(zero) == "0.00 (n=1: no interval)"
    assert number_text(-0.001, sign=True) == "0.00" and number_text(-0.004) == "0.00"
    assert number_text(-0.006, sign=True) == "-0.01" and number_text(0.3, sign=True) == "+0.30"
    assert interval_text(-0.001, 2.0) == "[0.00, 2.00]"


def test_only_the_t_interval_holds_its_simulated_coverage_at_every_n_the_report_sees():
    """scripts/coverage.py's table (docs/report.md): the report prints the t interval alone, since
    the bootstraps cover too seldom at the n people run (BCa: 0.82 at 5 pairs)."""
    assert all(holds_coverage("t", n) for n in range(2, 100))
    assert not any(holds_coverage("BCa bootstrap", n) for n in range(2, 100))
    assert not holds_coverage("percentile bootstrap", 5) and not holds_coverage("studentized bootstrap", 30)
    assert min(SIMULATED_COVERAGE["t"].values()) >= MIN_COVERAGE == 0.93


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


def test_pairs_for_80_percent_power_follow_the_noncentral_t():
    """A paired t test at 0.05: a difference of one standard deviation needs 10 pairs, of half a one
    34 (the textbook figures), recomputed here with scipy's noncentral t at n and n - 1."""
    from transferlab.report.stats import power_pairs

    def power(n: int, effect: float) -> float:
        critical = scipy_stats.t.ppf(0.975, n - 1)
        shift = effect * math.sqrt(n)
        return scipy_stats.nct.sf(critical, n - 1, shift) + scipy_stats.nct.cdf(-critical, n - 1, shift)

    for std, difference in ((1.0, 1.0), (1.0, -0.5), (2.5, 1.3), (0.8, 3.0)):
        n = power_pairs(std, difference)
        assert power(int(n), abs(difference) / std) >= 0.8 > power(int(n) - 1, abs(difference) / std) or n == 2
    assert (power_pairs(1.0, 1.0), power_pairs(1.0, 0.5)) == (10, 34)
    assert math.isinf(power_pairs(5.0, 0.01)) and math.isnan(power_pairs(0.0, 1.0))
    assert math.isnan(power_pairs(float("nan"), 1.0)) and math.isnan(power_pairs(1.0, 0.0))
