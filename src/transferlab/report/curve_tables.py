"""The learning-curve tables of a group (curves.py): each curve's fit, the effective data of each
pretrained arm at each amount it was measured at, and the data each arm needs for a target accuracy;
each as tidy numbers for the CSV and formatted for Markdown (docs/report.md, "Learning curves")."""

from __future__ import annotations

import math

import pandas as pd

from transferlab.report.curves import (
    FAR, FIT_P, HOLDS, MIN_AMOUNTS, RESAMPLES, Curve, Effective, Reading, data_needed, effective_data,
)
from transferlab.report.page import Table


def images_text(images: float) -> str:
    return f"{images:,.0f}"


def times_text(value: float) -> str:
    return f"{value:.3g}x" if value < 100 else f"{value:,.0f}x"


def reading_cells(reading: Reading, per: float | None = None) -> tuple[str, str]:
    """(the images, or the multiplier where ``per`` is the images measured; its interval) as shown."""
    if reading.kind == "none":
        return "", ""
    if reading.kind in ("more than", "less than", "at most"):
        value = reading.bound / per if per else reading.bound
        return f"{reading.kind} {times_text(value) if per else images_text(value)}", ""
    shown = (lambda v: times_text(v / per)) if per else images_text
    value = shown(reading.images)
    if math.isnan(reading.low):
        return value, ""
    fewest, most = reading.reach  # an end beyond what the fit may say is a bound
    low = f"less than {shown(fewest)}" if reading.low < fewest else shown(reading.low)
    high = f"more than {shown(most)}" if reading.high > most else shown(reading.high)
    return value, f"[{low}, {high}]"


def reading_note(reading: Reading) -> str:
    if reading.kind == "extrapolated":
        return f"extrapolated: {reading.note}"
    if reading.kind == "interpolated":
        return "within the amounts measured" + (f" ({reading.note})" if reading.note else "")
    return reading.note


def interval_of(curve: Curve, name: str) -> tuple[float, float]:
    return curve.interval(lambda fit: getattr(fit, name))


def fit_tables(curves: list[Curve]) -> tuple[pd.DataFrame, pd.DataFrame]:
    shown, numbers = [], []
    for curve in curves:
        fit = curve.fit
        lowest, highest = curve.images if curve.points else (math.nan, math.nan)
        row = {"arm": curve.label, "amounts": len(curve.points),
               "training images": f"{lowest:,.0f}–{highest:,.0f}" if curve.points else ""}
        number = {"arm": curve.label, "amounts": len(curve.points), "images_min": lowest, "images_max": highest}
        for name in ("c", "a", "b"):
            value = getattr(fit, name) if fit else math.nan
            low, high = interval_of(curve, name) if fit else (math.nan, math.nan)
            number |= {name: value, f"{name}_ci95_low": low, f"{name}_ci95_high": high}
        if fit:
            c_low, c_high = interval_of(curve, "c")
            b_low, b_high = interval_of(curve, "b")
            row["ceiling: 100 − 100c (%)"] = f"{100 * (1 - fit.c):.2f}" + (
                f" [{100 * (1 - c_high):.2f}, {100 * (1 - c_low):.2f}]" if not math.isnan(c_low) else "")
            row["exponent b"] = f"{fit.b:.3f}" + (f" [{b_low:.3f}, {b_high:.3f}]" if not math.isnan(b_low) else "")
            row["a"] = f"{fit.a:.4g}"
        else:
            row |= {"ceiling: 100 − 100c (%)": "", "exponent b": "", "a": ""}
        row["fit"] = curve.reason
        number |= {"status": curve.status, "lack_of_fit_f": curve.statistic, "dof": curve.dof,
                   "noise_dof": curve.noise_dof, "p": curve.p,
                   "points_within_ci95": curve.within if curve.fit else math.nan, "reason": curve.reason}
        shown.append(row)
        numbers.append(number)
    return pd.DataFrame(shown), pd.DataFrame(numbers)


def effective_tables(found: list[Effective]) -> tuple[pd.DataFrame, pd.DataFrame]:
    shown, numbers = [], []
    for effective in found:
        point, reading = effective.point, effective.reading
        images, images_ci = reading_cells(reading)
        times, times_ci = reading_cells(reading, per=point.images)
        shown.append({"pretrained arm": effective.curve.label, "training images": f"{point.images:,.0f}",
                      "test acc (%)": f"{100 * (1 - point.mean):.2f}", "from scratch": effective.scratch.label,
                      "images from scratch": images, "95 % CI": images_ci, "multiplier": times,
                      "multiplier 95 % CI": times_ci, "read": reading_note(reading)})
        numbers.append({"arm": effective.curve.label, "scratch_arm": effective.scratch.label,
                        "train_images": point.images, "test_acc": 100 * (1 - point.mean),
                        "scratch_images": reading.images, "scratch_images_ci95_low": reading.low,
                        "scratch_images_ci95_high": reading.high, "multiplier": effective.multiplier,
                        "multiplier_ci95_low": effective.multiplier_interval[0],
                        "multiplier_ci95_high": effective.multiplier_interval[1], "kind": reading.kind,
                        "bound_images": reading.bound, "note": reading.note})
    return pd.DataFrame(shown), pd.DataFrame(numbers)


def needed_tables(needed) -> tuple[pd.DataFrame, pd.DataFrame]:
    shown, numbers = [], []
    for curve, error, source, reading in needed:
        images, interval = reading_cells(reading)
        shown.append({"arm": curve.label, "target acc (%)": f"{100 * (1 - error):.2f}", "target": source,
                      "training images needed": images, "95 % CI": interval, "read": reading_note(reading)})
        numbers.append({"arm": curve.label, "target_acc": 100 * (1 - error), "target": source,
                        "images": reading.images, "images_ci95_low": reading.low, "images_ci95_high": reading.high,
                        "kind": reading.kind, "bound_images": reading.bound, "note": reading.note})
    return pd.DataFrame(shown), pd.DataFrame(numbers)


FIT_CAPTION = (f"Each arm's test error against its training images, fitted as err(n) = c + a·n^(−b) "
               f"(Hernandez et al. 2021) where it was measured at {MIN_AMOUNTS} or more amounts; 95 % intervals: "
               f"percentiles of {RESAMPLES} fits to bootstrap resamples of the replicates at each amount. A fit "
               f"holds where the lack-of-fit F test (residuals against the replicates' pooled variance) gives p ≥ "
               f"{FIT_P:g}; only a fit that "
               f"holds is read beyond the amounts measured (at most {FAR:g}x beyond).")
EFFECTIVE_CAPTION = ("Effective data: the training images the from-scratch arm would need for the pretrained arm's "
                     "mean accuracy, read off the from-scratch fit, and the multiplier (those images / the images "
                     "used). Beyond what the fit may say, a bound from what was measured.")


def curve_tables(stem: str, curves: list[Curve], target_accuracy: float | None = None) -> list[Table]:
    """The group's learning-curve tables: <stem>-curves, <stem>-effective-data, <stem>-data-needed."""
    if not curves:
        return []
    tables = [Table(f"{stem}-curves", *fit_tables(curves), caption=FIT_CAPTION, heading=": learning curves")]
    if found := effective_data(curves):
        scratch = {id(e.scratch): e.scratch for e in found}.values()
        caption = EFFECTIVE_CAPTION + "".join(  # the one line that refuses to extrapolate, per scratch fit
            f" Arm {c.label}: no extrapolation ({c.reason})." for c in scratch if c.status != HOLDS)
        tables.append(Table(f"{stem}-effective-data", *effective_tables(found), caption=caption,
                            heading=": effective data of pretraining"))
    if needed := data_needed(curves, target_accuracy):
        tables.append(Table(f"{stem}-data-needed", *needed_tables(needed), caption=(
            "Training images each arm needs for the target accuracy (--target-accuracy, else the best mean "
            "accuracy its from-scratch arm reached), read off its fit, with the bootstrap's 95 % interval."),
            heading=": data needed"))
    return tables
