"""How often the report's learning-curve intervals hold the truth, and how often a true curve's fit
is said to hold (report/curves.py; the figures in docs/report.md, "Learning curves").

Curves err(n) = c + a n^-b with known parameters, measured at 6 amounts (40 to 2,000 images) with k
replicates of normal noise (standard deviation 0.01), are fitted as the report fits them; for each k
it prints the share of simulations whose 95 % interval holds c, b, and the effective data of a known
pretrained curve at 40 and 200 images, and the share of fits that hold (the lack-of-fit F test, and
for comparison a chi-square on each amount's own standard error).

    .venv/bin/python scripts/curve_coverage.py [--simulations 200] [--replicates 3 5]
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy import stats

from transferlab.report.curves import HOLDS, Point, PowerLaw, curve_of, effective_data

SCRATCH = PowerLaw(c=0.10, a=4.0, b=0.5)
PRETRAINED = PowerLaw(c=0.05, a=1.5, b=0.5)
AMOUNTS = (40, 80, 200, 400, 1000, 2000)
NOISE = 0.01


def simulate(replicates: int, rng: np.random.Generator) -> dict[str, bool]:
    def points(law):
        return [Point(None, float(n), law.error(n) + rng.normal(0.0, NOISE, replicates)) for n in AMOUNTS]

    scratch_points = points(SCRATCH)
    scratch = curve_of("from scratch", (), "from scratch", scratch_points)
    pretrained = curve_of("pretrained", (), "pretrained", points(PRETRAINED))
    hit = {}
    for name in ("c", "b"):
        low, high = scratch.interval(lambda fit: getattr(fit, name))
        hit[name] = bool(low <= getattr(SCRATCH, name) <= high)
    for effective in effective_data([pretrained, scratch]):
        if effective.point.images in (40, 200) and effective.reading.kind in ("interpolated", "extrapolated"):
            truth = SCRATCH.images_for(PRETRAINED.error(effective.point.images))
            hit[f"effective data at {effective.point.images:.0f}"] = bool(
                effective.reading.low <= truth <= effective.reading.high)
    hit["fit holds (lack-of-fit F)"] = scratch.status == HOLDS
    means = np.array([p.mean for p in scratch_points])
    ses = np.array([np.std(p.errors, ddof=1) / np.sqrt(replicates) for p in scratch_points])
    chi2 = float(np.sum(((means - scratch.fit.error(np.array(AMOUNTS, dtype=float))) / ses) ** 2))
    hit["fit holds (chi-square, own SEs)"] = stats.chi2.sf(chi2, len(AMOUNTS) - 3) >= 0.05
    return hit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--simulations", type=int, default=200)
    parser.add_argument("--replicates", type=int, nargs="+", default=[3, 5])
    options = parser.parse_args()
    rng = np.random.default_rng(0)
    for replicates in options.replicates:
        counts: dict[str, list[bool]] = {}
        for _ in range(options.simulations):
            for key, value in simulate(replicates, rng).items():
                counts.setdefault(key, []).append(value)
        shown = ", ".join(f"{key} {np.mean(values):.3f} (of {len(values)})" for key, values in counts.items())
        print(f"{replicates} replicates: {shown}")


if __name__ == "__main__":
    main()
