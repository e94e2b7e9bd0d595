"""Learning curves: each arm's test error against its training images, fitted as a saturating power
law, and what the fits say: the effective data of pretraining and the data needed for a target.

A *curve* is the arms of a group that differ only in the data amount (fractions or data.per_class,
counted in training images: run.json's num_train_images), measured at MIN_AMOUNTS or more amounts.
Its fit is ``err(n) = c + a * n**(-b)`` (Hernandez et al. 2021, "Scaling Laws for Transfer"; c is
the error it tends to, a and b how fast it gets there): least squares on the mean error at each
amount, each weighing as its replicates (least squares over every run), with 0 <= c <= 1, a >= 0,
0 <= b <= MAX_EXPONENT, solved exactly for c and a at each b of a fine grid (fit_power_law: no
starting point, nothing that fails to converge). Its intervals are percentiles of RESAMPLES fits to
bootstrap resamples of the replicates at each amount, seeded: the same runs give the same numbers.

A curve is refused, not fitted, where its error does not fall (rising, or flat within twice the
standard error of the drop from its fewest to its most images). A fit *holds* where the lack-of-fit F
test (its residuals' mean square against the replicates' own variance, pooled over the amounts)
gives p >= FIT_P; it is *untested* at 3 amounts (3 parameters through 3 points) or without replicates
that vary. Only a fit that holds is read beyond the amounts measured, and at most FAR times beyond
(below) them; further out, or from a fit that does not hold, the report gives a bound only
(``more than 20x``), taken from what was measured.

numpy and scipy only: the report never imports torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from transferlab.report.arms import Arm, is_scratch, scratch_label

AMOUNT = "data amount"  # the facet along a curve
MIN_AMOUNTS = 3  # a curve is fitted from this many amounts or more (three parameters)
MAX_EXPONENT = 5.0  # b's upper bound: a steeper fall is no power law of these amounts
RESAMPLES = 200  # bootstrap fits per curve
SEED = 0  # the bootstrap's seed: the report is byte-identical on the same runs
CONFIDENCE = 0.95
FIT_P = 0.05  # a fit whose lack-of-fit p is below this does not hold
FAR = 10.0  # a fit is read at most this many times beyond its largest (below its smallest) amount
FLAT_SE = 2.0  # a drop in error under this many standard errors is flat
ROUNDING = 1e-6  # a reading this close (relatively) to a measured amount is at it: a curve's own best is not beyond it

HOLDS, UNTESTED, FAILS, REFUSED = "holds", "untested", "does not hold", "no fit"


@dataclass(frozen=True)
class PowerLaw:
    """``err(n) = c + a * n**(-b)``, errors as fractions, n in training images."""

    c: float
    a: float
    b: float

    def error(self, images):
        return self.c + self.a * np.asarray(images, dtype=float) ** (-self.b)

    def images_for(self, error: float) -> float:
        """The training images at which the curve reaches ``error``; inf where it never does (at or
        below its floor c)."""
        if error <= self.c or self.a <= 0 or self.b <= 0:
            return math.inf
        return float((self.a / (error - self.c)) ** (1.0 / self.b))


@dataclass(frozen=True)
class Point:
    """One measured amount of a curve: its arm, training images and each replicate's test error."""

    arm: Arm
    images: float
    errors: np.ndarray  # 1 - test_acc of each replicate, in replicate order

    @property
    def mean(self) -> float:
        return float(np.mean(self.errors))


@dataclass(frozen=True)
class Curve:
    """The arms of a group that differ only in their data amount, and their fit."""

    label: str  # the arms' label without the amount
    context: tuple  # (facet, label) of every facet but the amount and the init
    init: str  # the init facet's label, '' where the init does not vary
    points: list[Point]  # fewest images first
    status: str  # HOLDS, UNTESTED, FAILS or REFUSED
    reason: str  # one line: why it holds or not, or why there is no fit
    fit: PowerLaw | None = None
    resampled: list[PowerLaw] = field(default_factory=list)  # one per bootstrap draw
    statistic: float = math.nan  # the lack-of-fit F
    dof: int = 0  # amounts - 3
    noise_dof: int = 0  # replicates - amounts
    p: float = math.nan
    within: int = 0  # points whose 95 % interval holds the fitted value

    @property
    def images(self) -> tuple[float, float]:
        return self.points[0].images, self.points[-1].images

    @property
    def scratch(self) -> bool:
        return is_scratch(self.init) if self.init else False

    def interval(self, value) -> tuple[float, float]:
        """The bootstrap percentile interval of ``value(fit)`` over the resampled fits; nan without any."""
        values = [value(fit) for fit in self.resampled if fit is not None]
        return percentiles(values) if values else (math.nan, math.nan)


def percentiles(values) -> tuple[float, float]:
    """The 2.5th and 97.5th percentiles, read off the sorted values (no interpolation, so that an
    infinite value, an amount never reached, is a bound and never a nan)."""
    array = np.sort(np.asarray(values, dtype=float))
    tail = (1 - CONFIDENCE) / 2
    return (float(np.quantile(array, tail, method="inverted_cdf")),
            float(np.quantile(array, 1 - tail, method="inverted_cdf")))


def _best_linear(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each column of ``x`` (one exponent b each), the (c, a) of least weighted squares of
    ``y - c - a * x`` with 0 <= c <= 1 and a >= 0, and its cost: the best of the unconstrained
    solution (where it is feasible) and the best on each edge of the constraints (a convex quadratic's
    minimum over a box lies inside it or on an edge)."""
    sw, sy = w.sum(), (w * y).sum()
    sx, sxx, sxy = (w[:, None] * x).sum(0), (w[:, None] * x * x).sum(0), (w[:, None] * x * y[:, None]).sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        det = sw * sxx - sx * sx
        a_free = np.where(det > 0, (sw * sxy - sx * sy) / det, -1.0)
        c_free = (sy - a_free * sx) / sw
        candidates = [
            (c_free, a_free, (a_free >= 0) & (c_free >= 0) & (c_free <= 1)),
            (np.zeros_like(sx), np.maximum(np.where(sxx > 0, sxy / sxx, 0.0), 0.0), True),  # c = 0
            (np.ones_like(sx), np.maximum(np.where(sxx > 0, (sxy - sx) / sxx, 0.0), 0.0), True),  # c = 1
            (np.full_like(sx, min(max(sy / sw, 0.0), 1.0)), np.zeros_like(sx), True),  # a = 0
        ]
    best_c, best_a, best_cost = None, None, None
    for c, a, feasible in candidates:
        cost = np.where(feasible, (w[:, None] * (y[:, None] - c - a * x) ** 2).sum(0), np.inf)
        if best_cost is None:
            best_c, best_a, best_cost = c, a, cost
        else:
            better = cost < best_cost
            best_c, best_a, best_cost = (np.where(better, c, best_c), np.where(better, a, best_a),
                                         np.where(better, cost, best_cost))
    return best_c, best_a, best_cost


EXPONENTS = np.linspace(0.0, MAX_EXPONENT, 501)  # the first search over b; then a finer one around the best


def fit_power_law(images: np.ndarray, errors: np.ndarray, sigma: np.ndarray | None = None) -> PowerLaw:
    """The least-squares ``c + a * n**(-b)`` through (images, errors), weighted by 1/sigma**2 where
    given, with 0 <= c <= 1, a >= 0 and 0 <= b <= MAX_EXPONENT. For a given b the model is linear
    in c and a, so each b has its exact constrained best (c, a) (_best_linear); b is searched on a
    grid of 0.01, then of 0.0001 around the best: the global minimum to that step, with no starting
    point and nothing that can fail to converge. n is scaled by its geometric mean while fitting,
    which keeps n**(-b) of the order of one."""
    scale = float(np.exp(np.mean(np.log(images))))
    x = images / scale
    w = np.ones_like(errors) if sigma is None else 1.0 / sigma ** 2
    exponents = EXPONENTS
    for _ in range(2):
        c, a, cost = _best_linear(x[:, None] ** (-exponents[None, :]), errors, w)
        best = int(np.argmin(cost))
        step = exponents[1] - exponents[0]
        b = float(exponents[best])
        exponents = np.clip(np.linspace(b - step, b + step, 201), 0.0, MAX_EXPONENT)
    return PowerLaw(float(c[best]), float(a[best] * scale ** b), b)


def pure_error(points: list[Point]) -> tuple[float, int]:
    """(the replicates' variance around their amount's mean, pooled over the amounts; its degrees of
    freedom, replicates - amounts): the noise a fit's residuals are measured against. Pooled, because
    3 replicates give each amount's own variance on 2 degrees of freedom, too few to judge a residual by."""
    dof = sum(len(p.errors) - 1 for p in points)
    if dof < 1:
        return math.nan, 0
    return float(sum(np.sum((p.errors - p.mean) ** 2) for p in points) / dof), dof


def curve_of(label: str, context: tuple, init: str, points: list[Point]) -> Curve:
    """A curve's fit, its resampled fits and whether it holds; or why it has none."""
    from scipy import stats

    points = sorted(points, key=lambda point: point.images)
    base = dict(label=label, context=context, init=init, points=points)
    if len(points) < MIN_AMOUNTS:
        return Curve(**base, status=REFUSED, reason=f"measured at {len(points)} amount{'s' if len(points) != 1 else ''}"
                     f" of data; a fit needs {MIN_AMOUNTS} or more")
    variance, noise_dof = pure_error(points)
    first, last = points[0], points[-1]
    drop = first.mean - last.mean
    drop_se = math.sqrt(variance * (1 / len(first.errors) + 1 / len(last.errors))) if noise_dof else math.nan
    words = (f"its error goes from {100 * first.mean:.2f} % at {first.images:,.0f} images to "
             f"{100 * last.mean:.2f} % at {last.images:,.0f}")
    if drop <= 0:
        return Curve(**base, status=REFUSED, reason=f"not fitted: a rising or flat curve ({words})")
    if drop_se > 0 and drop < FLAT_SE * drop_se:
        return Curve(**base, status=REFUSED, reason=f"not fitted: flat within noise ({words}, a drop under "
                     f"{FLAT_SE:g} standard errors)")
    images = np.array([p.images for p in points])
    means = np.array([p.mean for p in points])
    counts = np.array([len(p.errors) for p in points], dtype=float)
    sigma = 1 / np.sqrt(counts)  # each mean weighs as its replicates: least squares over every run
    fit = fit_power_law(images, means, sigma)
    resampled = []
    if all(len(p.errors) > 1 for p in points):
        rng = np.random.default_rng(SEED)
        for _ in range(RESAMPLES):
            drawn = np.array([np.mean(rng.choice(p.errors, size=len(p.errors))) for p in points])
            resampled.append(fit_power_law(images, drawn, sigma))
    residuals = means - fit.error(images)
    dof = len(points) - 3
    if not noise_dof or variance <= 0:
        return Curve(**base, status=UNTESTED, fit=fit, resampled=resampled, dof=dof,
                     reason="untested: no replicates that vary, so the residuals have no noise to be judged by")
    half_widths = stats.t.ppf(0.5 + CONFIDENCE / 2, noise_dof) * np.sqrt(variance / counts)
    within = int(np.sum(np.abs(residuals) <= half_widths))
    if dof < 1:
        return Curve(**base, status=UNTESTED, fit=fit, resampled=resampled, dof=dof, within=within,
                     reason=f"untested: {len(points)} amounts for 3 parameters")
    # The lack-of-fit F test of a regression with replicates: the residuals' mean square against the
    # replicates' own (pure error).
    statistic = float(np.sum(counts * residuals ** 2) / dof / variance)
    p = float(stats.f.sf(statistic, dof, noise_dof))
    status = HOLDS if p >= FIT_P else FAILS
    reason = (f"{'holds' if status == HOLDS else 'does not hold'}: lack-of-fit F {statistic:.2f} on {dof} and "
              f"{noise_dof} degrees of freedom, p {p:.3f}; within {within} of {len(points)} points' 95 % intervals")
    return Curve(**base, status=status, fit=fit, resampled=resampled, statistic=statistic, dof=dof,
                 noise_dof=noise_dof, p=p, within=within, reason=reason)


def group_curves(arms: list[Arm], facet_names: list[str]) -> list[Curve]:
    """The curves of a group's arms: one per setting of every facet but the data amount, in arm order;
    none where the data amount does not vary or the records do not count their training images."""
    if AMOUNT not in facet_names:
        return []
    by_rest: dict[tuple, list[Arm]] = {}
    for arm in arms:
        by_rest.setdefault(tuple((k, v) for k, v in arm.values.items() if k != AMOUNT), []).append(arm)
    curves = []
    for rest, members in by_rest.items():
        points = []
        for arm in members:
            images = pd.to_numeric(arm.runs["train_images"], errors="coerce")
            accuracy = pd.to_numeric(arm.runs["test_acc"], errors="coerce")
            if images.isna().any() or accuracy.isna().any():
                points = []
                break
            points.append(Point(arm, float(images.mean()), 1.0 - accuracy.to_numpy(dtype=float)))
        label = ", ".join(v for _, v in rest) or "these runs"
        init = dict(rest).get("init", "")
        context = tuple((k, v) for k, v in rest if k != "init")
        if not points:
            curves.append(Curve(label, context, init, [], REFUSED, "no fit: the records do not count their "
                                                                 "training images (num_train_images)"))
            continue
        curves.append(curve_of(label, context, init, points))
    return curves


def scratch_curve(curve: Curve, curves: list[Curve]) -> Curve | None:
    """The from-scratch curve that ``curve`` is compared with: the one at its other settings, of its own
    implementation where there are several (arms.scratch_label)."""
    same = [c for c in curves if c.scratch and c.context == curve.context]
    if len(same) < 2:
        return same[0] if same else None
    own = [c for c in same if curve.points and c.init == scratch_label(curve.points[0].arm.runs.iloc[0])]
    return own[0] if own else None


# --- reading a fit: images for an error ---------------------------------------------------------------

@dataclass(frozen=True)
class Reading:
    """The images a curve needs to reach an error, with its interval, and how far it is to be trusted."""

    images: float  # nan where there is none (a bound, or no reading)
    low: float
    high: float
    kind: str  # "interpolated", "extrapolated", "more than", "less than", "at most" (a measured amount), "none"
    bound: float = math.nan  # the images of a bound ("more than", "less than" or "at most" N)
    note: str = ""
    reach: tuple[float, float] = (math.nan, math.nan)  # the fewest and most images the fit may be read at


def read_images(curve: Curve, error: float, resampled_errors: list[float] | None = None) -> Reading:
    """The images at which ``curve`` reaches ``error`` (a fraction), read from its fit where that is
    allowed: within the amounts measured by a fit that holds or is untested; beyond them, up to FAR
    times, by one that holds; else a bound from what was measured, which never contradicts the
    measured points (an arm that reached the error at N images needs at most N). ``resampled_errors``:
    the error to reach in each bootstrap draw (the pretrained arm's resampled mean), else ``error``
    in each."""
    reading = _read_images(curve, error, resampled_errors)
    reached = sorted(p.images for p in curve.points if p.mean <= error)
    if reading.kind == "more than" and reached:  # the fit's floor or its misfit said never; a point did
        return Reading(math.nan, math.nan, math.nan, "at most", reached[0],
                       f"{curve.label} reached it at {reached[0]:,.0f} images; {reading.note}")
    if reading.kind == "less than" and curve.status != HOLDS and reached[:1] != [min(curve.images)]:
        if not reached:  # a misfit read below the smallest amount, but no amount reached it
            return Reading(math.nan, math.nan, math.nan, "more than", max(curve.images),
                           f"{curve.label} measured no error this low; {reading.note}")
        return Reading(math.nan, math.nan, math.nan, "at most", reached[0],
                       f"{curve.label} reached it at {reached[0]:,.0f} images; {reading.note}")
    return reading


def _read_images(curve: Curve, error: float, resampled_errors: list[float] | None) -> Reading:
    """read_images' reading of the fit, before the measured points are checked."""
    smallest, largest = curve.images if curve.points else (math.nan, math.nan)
    measured = [p.mean for p in curve.points]
    if curve.fit is None:
        if len(curve.points) < MIN_AMOUNTS and measured and error < min(measured):  # too few to fit, not flat
            return Reading(math.nan, math.nan, math.nan, "more than", largest,
                           f"{curve.label} measured no lower error; {curve.reason}")
        return Reading(math.nan, math.nan, math.nan, "none", note=f"{curve.label}: {curve.reason}")
    images = curve.fit.images_for(error)
    holds = curve.status == HOLDS
    reach = (smallest / FAR, largest * FAR) if holds else (smallest, largest)
    errors = resampled_errors or [error] * len(curve.resampled)
    draws = [fit.images_for(e) for fit, e in zip(curve.resampled, errors) if fit is not None]
    low, high = percentiles(draws) if draws else (math.nan, math.nan)
    if math.isinf(images):  # below the fitted floor: never, were the fit to hold at any amount
        bound = FAR * largest if holds else largest
        why = f"below {curve.label}'s fitted floor of {100 * curve.fit.c:.2f} % error" if holds else \
            f"fit {curve.reason}"
        return Reading(math.nan, math.nan, math.nan, "more than", bound, why)
    if smallest * (1 - ROUNDING) <= images <= largest * (1 + ROUNDING):  # any fit, between its points
        note = f"fit {curve.reason}" if curve.status == FAILS else ""  # one that does not hold says so
        return Reading(images, low, high, "interpolated", note=note, reach=reach)
    if images > largest:
        if holds and images <= FAR * largest:
            return Reading(images, low, high, "extrapolated", reach=reach,
                           note=f"beyond the largest amount measured ({largest:,.0f})")
        bound = FAR * largest if holds else largest
        why = f"more than {FAR:g}x the largest amount measured" if holds else f"fit {curve.reason}"
        return Reading(math.nan, math.nan, math.nan, "more than", bound, why)
    if holds and images >= smallest / FAR:
        return Reading(images, low, high, "extrapolated", note=f"below the smallest amount measured ({smallest:,.0f})",
                       reach=reach)
    bound = smallest / FAR if holds else smallest
    why = f"under 1/{FAR:g} of the smallest amount measured" if holds else f"fit {curve.reason}"
    return Reading(math.nan, math.nan, math.nan, "less than", bound, why)


@dataclass(frozen=True)
class Effective:
    """What pretraining is worth at one measured amount: the images from scratch for the same accuracy."""

    curve: Curve  # the pretrained arm's
    scratch: Curve
    point: Point
    reading: Reading

    @property
    def multiplier(self) -> float:
        return self.reading.images / self.point.images

    @property
    def multiplier_interval(self) -> tuple[float, float]:
        return self.reading.low / self.point.images, self.reading.high / self.point.images


def effective_data(curves: list[Curve]) -> list[Effective]:
    """For every pretrained curve and each amount it was measured at, the images its scratch curve
    needs for the same mean error; the interval resamples the pretrained arm's replicates alongside
    each bootstrap fit of the scratch curve (its draw's own seed, so the report stays byte-identical)."""
    found = []
    for curve in curves:
        if curve.scratch or not curve.init:
            continue
        scratch = scratch_curve(curve, curves)
        if scratch is None:
            continue
        for index, point in enumerate(curve.points):
            rng = np.random.default_rng([SEED, index])
            drawn = [float(np.mean(rng.choice(point.errors, size=len(point.errors))))
                     for _ in range(len(scratch.resampled))] if len(point.errors) > 1 else None
            found.append(Effective(curve, scratch, point, read_images(scratch, point.mean, drawn)))
    return found


def target_error(curve: Curve, curves: list[Curve], target_accuracy: float | None) -> tuple[float, str] | None:
    """(the error to reach, where the target comes from): ``target_accuracy`` where given, else the
    best mean accuracy the matching scratch curve reached; None where there is neither."""
    if target_accuracy is not None:
        return 1.0 - target_accuracy, "--target-accuracy"
    scratch = curve if curve.scratch else scratch_curve(curve, curves)
    if scratch is None or not scratch.points:
        return None
    return min(p.mean for p in scratch.points), f"the best accuracy of {scratch.label}"


def data_needed(curves: list[Curve], target_accuracy: float | None) -> list[tuple[Curve, float, str, Reading]]:
    """(curve, target error, where it comes from, the images it needs) of each curve with a target."""
    needed = []
    for curve in curves:
        target = target_error(curve, curves, target_accuracy)
        if target is not None and curve.points:
            needed.append((curve, *target, read_images(curve, target[0])))
    return needed
