"""How often each candidate 95 % interval of a mean difference covers the true mean, at the n people
run (3, 5, 10, 30 paired differences), for normal, skewed and heavy-tailed differences. The report
prints only intervals whose coverage here is at least 0.93 at that n (report/stats.py, docs/report.md).

Intervals (each of the mean of n values):
  t            Student's t, n - 1 degrees of freedom
  percentile   percentile bootstrap
  BCa          bias-corrected and accelerated bootstrap (scipy.stats.bootstrap's method="BCa", vectorised here)
  studentized  bootstrap-t: the t statistic's bootstrap distribution instead of Student's (an unbounded
               end, where a resample has no spread, counts as covering)

Distributions (every one centred on a true mean of 0; the scale does not matter to coverage):
  normal                  N(0, 1)
  skewed                  Gamma(shape 4) - 4, skewness 1
  strongly skewed         Exponential - 1, skewness 2
  heavy-tailed            Student's t, 3 degrees of freedom

numpy and scipy only; every cell is one vectorised simulation of --sims samples with --resamples
bootstrap resamples each, seeded. Prints a Markdown table (coverage, and the Monte Carlo standard
error of a coverage near 0.95) and the wall time.

    python scripts/coverage.py                      # 2,000 samples per cell, 999 resamples: about a minute
    python scripts/coverage.py --sims 10000         # tighter, slower
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
from scipy import special, stats

CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE
SIZES = (3, 5, 10, 30)
METHODS = ("t", "percentile", "BCa", "studentized")
DISTRIBUTIONS = {
    "normal": lambda rng, shape: rng.standard_normal(shape),
    "skewed": lambda rng, shape: rng.gamma(4.0, size=shape) - 4.0,
    "strongly skewed": lambda rng, shape: rng.exponential(size=shape) - 1.0,
    "heavy-tailed": lambda rng, shape: rng.standard_t(3, size=shape),
}


def t_bounds(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = x.shape[1]
    mean, sem = x.mean(axis=1), x.std(axis=1, ddof=1) / math.sqrt(n)
    q = stats.t.ppf(1 - ALPHA / 2, n - 1)
    return mean - q * sem, mean + q * sem


def row_quantiles(sorted_values: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Per row, the quantile at that row's probability (linear interpolation, as numpy's default)."""
    count = sorted_values.shape[1]
    position = np.clip(probabilities, 0.0, 1.0) * (count - 1)
    below = np.floor(position).astype(int)
    above = np.minimum(below + 1, count - 1)
    rows = np.arange(len(sorted_values))
    weight = position - below
    return (1 - weight) * sorted_values[rows, below] + weight * sorted_values[rows, above]


def bootstrap_bounds(x: np.ndarray, resamples: int, rng: np.random.Generator) -> dict[str, tuple]:
    """Percentile, BCa and studentized bootstrap intervals of each row's mean."""
    sims, n = x.shape
    picks = rng.integers(0, n, size=(sims, resamples, n))
    resampled = np.take_along_axis(x[:, None, :], picks, axis=2)
    means = resampled.mean(axis=2)
    ordered = np.sort(means, axis=1)
    mean = x.mean(axis=1)
    percentile = (np.quantile(means, ALPHA / 2, axis=1), np.quantile(means, 1 - ALPHA / 2, axis=1))

    # BCa as scipy computes it: bias from the share of resampled means below (ties count half), the
    # acceleration from the jackknife.
    share = ((means < mean[:, None]).sum(axis=1) + (means <= mean[:, None]).sum(axis=1)) / (2 * resamples)
    with np.errstate(divide="ignore", invalid="ignore"):
        z0 = special.ndtri(share)
        jackknife = (x.sum(axis=1, keepdims=True) - x) / (n - 1)
        spread = jackknife.mean(axis=1, keepdims=True) - jackknife
        acceleration = (spread ** 3).sum(axis=1) / (6 * ((spread ** 2).sum(axis=1)) ** 1.5)
        ends = []
        for z_alpha in (special.ndtri(ALPHA / 2), special.ndtri(1 - ALPHA / 2)):
            level = special.ndtr(z0 + (z0 + z_alpha) / (1 - acceleration * (z0 + z_alpha)))
            ends.append(np.where(np.isfinite(level), row_quantiles(ordered, np.nan_to_num(level)), np.nan))
    bca = (ends[0], ends[1])

    sem = x.std(axis=1, ddof=1) / math.sqrt(n)
    with np.errstate(divide="ignore", invalid="ignore"):
        resampled_sem = resampled.std(axis=2, ddof=1) / math.sqrt(n)
        t_stats = (means - mean[:, None]) / resampled_sem  # +-inf where a resample has no spread
    t_stats = np.where(np.isnan(t_stats), 0.0, t_stats)  # 0/0: a resample equal to the sample's mean
    # Order statistics, not interpolation: between two infinite ends, interpolation gives nan.
    low_q, high_q = np.quantile(t_stats, [ALPHA / 2, 1 - ALPHA / 2], axis=1, method="inverted_cdf")
    with np.errstate(invalid="ignore"):
        studentized = (mean - high_q * sem, mean - low_q * sem)
    return {"percentile": percentile, "BCa": bca, "studentized": studentized}


def coverage(distribution: str, n: int, sims: int, resamples: int, seed: int, chunk: int = 200) -> dict[str, float]:
    """The share of ``sims`` samples whose interval covers the true mean 0, by method."""
    rng = np.random.default_rng(seed)
    covered = dict.fromkeys(METHODS, 0)
    for start in range(0, sims, chunk):
        x = DISTRIBUTIONS[distribution](rng, (min(chunk, sims - start), n))
        intervals = {"t": t_bounds(x), **bootstrap_bounds(x, resamples, rng)}
        for method, (low, high) in intervals.items():
            with np.errstate(invalid="ignore"):
                covered[method] += int(np.sum((low <= 0.0) & (high >= 0.0)))  # nan: not covered
    return {method: count / sims for method, count in covered.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sims", type=int, default=2000, help="samples per cell (default 2000)")
    parser.add_argument("--resamples", type=int, default=999, help="bootstrap resamples per sample (default 999)")
    parser.add_argument("--seed", type=int, default=0)
    options = parser.parse_args()
    start = time.perf_counter()
    names = list(DISTRIBUTIONS)
    print(f"Coverage of 95 % intervals of a mean: {options.sims:,} samples per cell, {options.resamples:,} "
          f"bootstrap resamples, seed {options.seed}. Monte Carlo standard error of a coverage near 0.95: "
          f"{math.sqrt(0.95 * 0.05 / options.sims):.4f} (near 0.85: {math.sqrt(0.85 * 0.15 / options.sims):.4f}).\n")
    print("| interval | n | " + " | ".join(names) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in names) + " |")
    results = {(d, n): coverage(d, n, options.sims, options.resamples, options.seed + 1000 * i + n)
               for i, d in enumerate(names) for n in SIZES}
    for method in METHODS:
        for n in SIZES:
            print(f"| {method} | {n} | " + " | ".join(f"{results[d, n][method]:.3f}" for d in names) + " |")
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
