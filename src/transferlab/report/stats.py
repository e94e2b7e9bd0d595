"""How sure: the mean of an arm with its 95 % interval, and the paired difference between two arms.

Two arms are compared replicate by replicate: a replicate is one (seed, subset seed) pair, so both
sides of a pair trained on the same images from the same initialisation draw, and what is left in
their difference is the effect of the arm. The interval of the mean difference is Student's t over
the paired differences; with at least ``BOOTSTRAP_MIN_PAIRS`` pairs a bootstrap interval
(scipy.stats.bootstrap, BCa) is given beside it. One pair, or one run, gives no interval: never an
interval that the data cannot support. Where the values are bounded (an accuracy lies in [0, 100] %,
a difference of two in [-100, 100] points), ``bounds`` clips a t interval to what is possible: with
two runs, the t interval of a mean spans 12.7 standard errors each way, and an accuracy interval
that reached below 0 % would claim what no run could show.

numpy and scipy only: the report never imports torch.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
BOOTSTRAP_MIN_PAIRS = 5
BOOTSTRAP_RESAMPLES = 9999
BOOTSTRAP_SEED = 0  # the same runs give the same report, byte for byte
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


def bootstrap_interval(values: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """scipy's BCa bootstrap interval of the mean of ``values``, seeded; (nan, nan) under
    BOOTSTRAP_MIN_PAIRS values or when every value is the same (a degenerate resampling)."""
    from scipy import stats

    if len(values) < BOOTSTRAP_MIN_PAIRS or all_equal(values):
        return math.nan, math.nan
    with warnings.catch_warnings():  # a degenerate resampling gives nan, said as such, not a warning
        warnings.simplefilter("ignore")
        result = stats.bootstrap((values,), np.mean, confidence_level=confidence, n_resamples=BOOTSTRAP_RESAMPLES,
                                 method="BCa", random_state=np.random.default_rng(BOOTSTRAP_SEED))
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    return (low, high) if math.isfinite(low) and math.isfinite(high) else (math.nan, math.nan)


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
    """``a - b`` paired by replicate: the mean difference, its t interval and, with enough pairs, its
    bootstrap interval (nan where there is none), and n, the number of pairs."""

    mean: float
    low: float
    high: float
    boot_low: float
    boot_high: float
    n: int

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
    differences = scale * np.array([a[k] - b[k] for k in keys], dtype=float)
    if len(differences) == 0:
        return Comparison(math.nan, math.nan, math.nan, math.nan, math.nan, 0)
    low, high = clip(t_interval(differences), bounds)
    boot_low, boot_high = bootstrap_interval(differences)
    return Comparison(float(np.mean(differences)), low, high, boot_low, boot_high, len(differences))


def _is_finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def interval_text(low: float, high: float, digits: int = 2) -> str:
    """``[low, high]`` for Markdown; '' where there is no interval."""
    if math.isnan(low) or math.isnan(high):
        return ""
    return f"[{low:.{digits}f}, {high:.{digits}f}]"


def comparison_text(comparison: Comparison, digits: int = 2) -> str:
    """A difference as a reader sees it: ``+12.30 [10.10, 14.50]``, ``+3.10 (n=1: no interval)``."""
    if comparison.n == 0:
        return ""
    shown = f"{comparison.mean:+.{digits}f}"
    if comparison.n == 1:
        return f"{shown} ({NO_INTERVAL})"
    if not comparison.has_interval:
        return f"{shown} ({NO_SPREAD_PAIRS})"
    return f"{shown} {interval_text(comparison.low, comparison.high, digits)}"
