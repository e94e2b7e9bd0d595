"""Coverage of the report's interval over seeds and test images (report/testset.py) against a
two-level bootstrap (resample the pairs, then the test images), simulated: how often each 95 %
interval covers the mean difference over new seeds *and* new test sets.

The simulated world: each image of the population has a difficulty for each arm (correlated, as two
models of one architecture are); a seed shifts each arm's log-odds by its own normal draw; a run is
right on an image with the logistic of difficulty plus its seed's shift. The truth (the difference
of the two arms' accuracies, averaged over images and seeds) comes from a large draw of both. Each
simulated study draws a test set of --images images and n pairs of seeds.

    python scripts/coverage_testset.py      # 300 studies per cell, 1,000 images, 499 resamples: about 2 minutes
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
from scipy import special, stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from transferlab.report.testset import seeds_and_images  # noqa: E402  (the report's own interval)

ALPHA = 0.05
SEED_SPREAD = {"small": 0.05, "large": 0.25}  # log-odds standard deviation of a seed's shift


def draw_images(rng, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Log-odds of arm A and arm B per image: B a little worse on average, the two correlated."""
    shared = rng.normal(2.0, 1.5, count)
    return shared + rng.normal(0, 0.5, count), shared - 0.1 + rng.normal(0, 0.5, count)


def truth(seed_spread: float, rng) -> float:
    a, b = draw_images(rng, 100_000)
    shifts = rng.normal(0, seed_spread, (2, 300))
    return float(np.mean([special.expit(a + sa).mean() - special.expit(b + sb).mean() for sa, sb in shifts.T]))


def two_level_bootstrap(per_pair: np.ndarray, resamples: int, rng) -> tuple[float, float]:
    """Percentile interval: resample the pairs, then the test images (one draw of images for all
    pairs; Poisson(1) weights per image, the Poisson bootstrap, which for thousands of images is the
    multinomial resampling but for a total that varies by a few per cent)."""
    n, images = per_pair.shape
    pair_counts = rng.multinomial(n, np.full(n, 1 / n), size=resamples).astype(np.float32)  # (B, n)
    image_weights = rng.poisson(1.0, size=(resamples, images)).astype(np.float32)  # (B, N)
    by_image = pair_counts @ per_pair.astype(np.float32)  # (B, N): each image's difference summed over the pairs drawn
    means = (by_image * image_weights).sum(axis=1) / (n * image_weights.sum(axis=1))
    low, high = np.quantile(means, [ALPHA / 2, 1 - ALPHA / 2])
    return 100 * low, 100 * high


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=300, help="simulated studies per cell (default 300)")
    parser.add_argument("--images", type=int, default=1000, help="test images per study (default 1000)")
    parser.add_argument("--resamples", type=int, default=499, help="two-level bootstrap resamples (default 499)")
    parser.add_argument("--seed", type=int, default=0)
    options = parser.parse_args()
    start = time.perf_counter()
    rng = np.random.default_rng(options.seed)
    print(f"{options.studies} simulated studies per cell, {options.images:,} test images each, "
          f"{options.resamples} resamples; Monte Carlo SE near 0.95: "
          f"{math.sqrt(0.95 * 0.05 / options.studies):.3f}\n")
    print("| seed spread (log-odds SD) | n pairs | seeds + test set (t, both variances) | two-level bootstrap | "
          "seeds' t interval alone |")
    print("| --- | --- | --- | --- | --- |")
    for name, spread in SEED_SPREAD.items():
        true = 100 * truth(spread, rng)
        for n in (3, 5, 10):
            covered = np.zeros(3)
            for _ in range(options.studies):
                a, b = draw_images(rng, options.images)
                shifts = rng.normal(0, spread, (2, n, 1))
                right_a = rng.uniform(size=(n, options.images)) < special.expit(a + shifts[0])
                right_b = rng.uniform(size=(n, options.images)) < special.expit(b + shifts[1])
                per_pair = right_a.astype(np.int8) - right_b.astype(np.int8)
                pair_means = 100 * per_pair.mean(axis=1)
                t_low, t_high = stats.t.interval(1 - ALPHA, n - 1, loc=pair_means.mean(),
                                                 scale=pair_means.std(ddof=1) / math.sqrt(n))
                for k, (low, high) in enumerate((seeds_and_images(per_pair),
                                                 two_level_bootstrap(per_pair, options.resamples, rng),
                                                 (t_low, t_high))):
                    covered[k] += low <= true <= high
            shares = covered / options.studies
            print(f"| {name} ({spread}) | {n} | {shares[0]:.3f} | {shares[1]:.3f} | {shares[2]:.3f} |")
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
