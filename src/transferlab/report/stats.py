"""How sure: the mean of an arm with its 95 % interval, and the paired difference between two arms.

Two arms are compared replicate by replicate: a replicate is one (seed, subset seed) pair, so both
sides of a pair trained on the same images from the same initialisation draw, and what is left in
their difference is the effect of the arm. A difference is taken between correct counts (an
accuracy is ``correct / images``, exact as a Fraction), never between rounded fractions, so equal
differences are equal and a zero difference is zero.

The interval of the mean difference is Student's t over the paired differences: the only interval
of those scripts/coverage.py simulates (t, percentile bootstrap, BCa, studentized bootstrap) whose
coverage is at least ``MIN_COVERAGE`` at every n from 3 to 30 for normal, skewed and heavy-tailed
differences (the table: docs/report.md). Beside it, each difference has its paired t test's p, an
exact sign test's p (no assumption of normality) and, over the comparisons of one section, Holm's
adjusted p. One pair, or one run, gives no interval: never an interval that the data cannot support.
Where the values are bounded (an accuracy lies in [0, 100] %, a difference of two in [-100, 100]
points), ``bounds`` clips a t interval to what is possible: with two runs, the t interval of a mean
spans 12.7 standard errors each way, and an accuracy interval that reached below 0 % would claim
what no run could show.

numpy and scipy only: the report never imports torch.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

CONFIDENCE = 0.95
MIN_COVERAGE = 0.93  # an interval is printed only where its simulated coverage reaches this
# The lowest coverage of each 95 % interval over normal, skewed (gamma, skewness 1) and heavy-tailed
# (t, 3 df) differences, by n: scripts/coverage.py, 4,000 samples per cell (Monte Carlo SE 0.0034).
SIMULATED_COVERAGE = {
    "t": {3: 0.939, 5: 0.937, 10: 0.939, 30: 0.951},
    "percentile bootstrap": {3: 0.738, 5: 0.824, 10: 0.885, 30: 0.929},
    "BCa bootstrap": {3: 0.715, 5: 0.822, 10: 0.860, 30: 0.898},
    "studentized bootstrap": {3: 0.997, 5: 0.947, 10: 0.931, 30: 0.926},  # at n=3 it is unbounded: no use
}
NO_INTERVAL = "n=1: no interval"
NO_SPREAD_RUNS = "every run the same: no interval"  # n >= 2 equal values: no spread to estimate the error from
NO_SPREAD_PAIRS = "every pair the same: no interval"
PERCENT_BOUNDS = (0.0, 100.0)  # an accuracy in percent
POINTS_BOUNDS = (-100.0, 100.0)  # a difference of two accuracies, in percentage points
LOSS_BOUNDS = (0.0, math.inf)  # a cross-entropy


def finite(values: Iterable[float | None]) -> np.ndarray:
    """The finite values among ``values`` (None, NaN and inf left out), as floats."""
    array = np.array([np.nan if v is None else v for v in values], dtype=float)
    return array[np.isfinite(array)]


def all_equal(values: np.ndarray) -> bool:
    """Whether the values are one value but for float rounding: 100 * (0.17 - 0.16) and
    100 * (0.12 - 0.11), both one image of 100, differ in the 14th digit."""
    return bool(np.allclose(values, values[0], rtol=1e-9, atol=1e-9))


def t_interval(values: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Student's t interval of the mean of ``values`` (at least two); (nan, nan) for fewer, and for
    values that are all equal: no spread to estimate the error from (two runs of 16 % on a 100-image
    test set), and a zero-width interval would claim a certainty (and a difference that "excludes 0")
    that the data cannot show."""
    from scipy import stats

    if len(values) < 2:
        return math.nan, math.nan
    if all_equal(values):
        return math.nan, math.nan
    mean = float(np.mean(values))
    sem = float(np.std(values, ddof=1)) / math.sqrt(len(values))
    low, high = stats.t.interval(confidence, len(values) - 1, loc=mean, scale=sem)
    return float(low), float(high)


def holds_coverage(method: str, n: int) -> bool:
    """Whether ``method``'s simulated coverage at the largest simulated n not above ``n`` (3 for 2)
    is at least MIN_COVERAGE: the report prints only intervals for which this holds."""
    simulated = SIMULATED_COVERAGE[method]
    at = max([size for size in simulated if size <= n], default=min(simulated))
    return simulated[at] >= MIN_COVERAGE


def t_test_p(values: np.ndarray) -> float:
    """The two-sided p of the paired (one-sample) t test that the mean is 0; nan under two values or
    when every value is the same (no spread: as the t interval, no claim)."""
    from scipy import stats

    if len(values) < 2 or all_equal(values):
        return math.nan
    return float(stats.ttest_1samp(values, 0.0).pvalue)


def sign_test_p(values: np.ndarray) -> float:
    """The two-sided p of the exact sign test that positive and negative values are equally likely
    (zeros left out); nan where every value is zero or there are none. It assumes nothing of the
    values' distribution, and so it cannot fall below 0.0625 with five pairs (2 / 2**5)."""
    from scipy import stats

    positive, negative = int(np.sum(values > 0)), int(np.sum(values < 0))
    if positive + negative == 0:
        return math.nan
    return float(stats.binomtest(positive, positive + negative, 0.5).pvalue)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of ``p_values`` (nan ones are no test: left nan and not counted),
    controlling the chance of any false "excludes 0" among them at the nominal level."""
    tested = sorted((p, i) for i, p in enumerate(p_values) if not math.isnan(p))
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(tested):
        running = max(running, min(1.0, (len(tested) - rank) * p))
        adjusted[i] = running
    return adjusted


def exact_accuracy(accuracy: float | None, images: float | None) -> Fraction | float | None:
    """An accuracy as its correct count over the test images, exactly (Fraction(9358, 10000)), where
    ``images`` is known and ``accuracy * images`` is a whole number of images; else as it is."""
    if accuracy is None or not math.isfinite(accuracy) or images is None or not math.isfinite(images) or images < 1:
        return accuracy
    correct = round(accuracy * images)
    if abs(correct - accuracy * images) > 1e-6 * max(1.0, images):
        return accuracy
    return Fraction(correct, int(images))


@dataclass(frozen=True)
class Summary:
    """One arm's values: mean, standard deviation (nan for one), the t interval of the mean
    (nan for one value) and n, the number of finite values."""

    mean: float
    std: float
    low: float
    high: float
    n: int


def clip(interval: tuple[float, float], bounds: tuple[float, float] | None) -> tuple[float, float]:
    """``interval`` within ``bounds`` (low, high); as it is for None or a missing interval."""
    low, high = interval
    if bounds is None or math.isnan(low):
        return low, high
    return max(low, bounds[0]), min(high, bounds[1])


def summarize(values: Iterable[float | None], scale: float = 1.0,
              bounds: tuple[float, float] | None = None) -> Summary:
    """The Summary of the finite values times ``scale`` (100 for accuracies in percent), its
    interval clipped to ``bounds`` (such as (0, 100) for accuracies in percent)."""
    array = scale * finite(values)
    if len(array) == 0:
        return Summary(math.nan, math.nan, math.nan, math.nan, 0)
    low, high = clip(t_interval(array), bounds)
    std = float(np.std(array, ddof=1)) if len(array) > 1 else math.nan
    return Summary(float(np.mean(array)), std, low, high, len(array))


@dataclass(frozen=True)
class Comparison:
    """``a - b`` paired by replicate: the mean difference, its t interval (nan where there is none),
    n, the number of pairs, and the p of the paired t test and of the exact sign test (nan where
    there is no test)."""

    mean: float
    low: float
    high: float
    n: int
    t_p: float = math.nan
    sign_p: float = math.nan
    std: float = math.nan  # of the paired differences (n - 1), nan under two

    @property
    def has_interval(self) -> bool:
        return self.n >= 2 and not math.isnan(self.low)

    @property
    def excludes_zero(self) -> bool | None:
        """Whether the t interval lies wholly above or below zero; None without an interval."""
        if not self.has_interval:
            return None
        return self.low > 0.0 or self.high < 0.0


def paired_difference(a: Mapping[Hashable, float | None], b: Mapping[Hashable, float | None],
                      scale: float = 1.0, bounds: tuple[float, float] | None = None) -> Comparison:
    """``a - b`` over the replicates both have a finite value for (each mapping: replicate key,
    such as (seed, subset seed), -> value), times ``scale``, its t interval clipped to ``bounds``
    (such as (-100, 100) for accuracies in percent). Replicates on one side only are left out."""
    keys = sorted((k for k in a.keys() & b.keys() if _is_finite(a[k]) and _is_finite(b[k])), key=repr)
    exact = [a[k] - b[k] for k in keys]  # Fractions where both sides are correct counts: exact
    if not exact:
        return Comparison(math.nan, math.nan, math.nan, 0)
    if all(isinstance(d, Fraction) for d in exact):
        exact = [Fraction(scale) * d for d in exact]
        mean = float(sum(exact) / len(exact))
    else:
        exact = [scale * d for d in exact]
        mean = float(np.mean(np.array(exact, dtype=float)))
    differences = np.array([float(d) for d in exact])  # equal exact differences are equal floats
    low, high = clip(t_interval(differences), bounds)
    std = float(np.std(differences, ddof=1)) if len(differences) > 1 else math.nan
    return Comparison(mean, low, high, len(differences), t_test_p(differences), sign_test_p(differences), std)


POWER = 0.8
MOST_PAIRS = 1000  # the largest number of pairs power_pairs looks at


def power_pairs(std: float, difference: float, power: float = POWER, confidence: float = CONFIDENCE) -> float:
    """The fewest pairs with which a two-sided paired t test at 1 - ``confidence`` detects a true mean
    difference of ``difference`` with probability ``power``, were the paired differences' standard
    deviation ``std`` (noncentral t); nan where it cannot be said (no spread, a zero difference),
    inf beyond MOST_PAIRS."""
    from scipy import stats

    if not (math.isfinite(std) and math.isfinite(difference)) or std <= 0 or difference == 0:
        return math.nan
    n = np.arange(2, MOST_PAIRS + 1)
    critical = stats.t.ppf(1 - (1 - confidence) / 2, n - 1)
    shift = abs(difference) / (std / np.sqrt(n))
    reached = stats.nct.sf(critical, n - 1, shift) + stats.nct.cdf(-critical, n - 1, shift) >= power
    return float(n[np.argmax(reached)]) if reached.any() else math.inf


def _is_finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def number_text(value: float, digits: int = 2, sign: bool = False) -> str:
    """``value`` to ``digits`` decimals (``+`` before a positive one with ``sign``), and never
    ``-0.00``: a value that rounds to zero is ``0.00``."""
    text = f"{value:{'+' if sign else ''}.{digits}f}"
    return text.lstrip("+-") if float(text) == 0 else text


def p_text(p: float) -> str:
    """A p-value for Markdown: ``0.032``, ``<0.001``; '' where there is no test."""
    if math.isnan(p):
        return ""
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def interval_text(low: float, high: float, digits: int = 2) -> str:
    """``[low, high]`` for Markdown; '' where there is no interval."""
    if math.isnan(low) or math.isnan(high):
        return ""
    return f"[{number_text(low, digits)}, {number_text(high, digits)}]"


def comparison_text(comparison: Comparison, digits: int = 2) -> str:
    """A difference as a reader sees it: ``+12.30 [10.10, 14.50]``, ``+3.10 (n=1: no interval)``."""
    if comparison.n == 0:
        return ""
    shown = number_text(comparison.mean, digits, sign=True)
    if comparison.n == 1:
        return f"{shown} ({NO_INTERVAL})"
    if not comparison.has_interval:
        return f"{shown} ({NO_SPREAD_PAIRS})"
    return f"{shown} {interval_text(comparison.low, comparison.high, digits)}"
