"""The learning-curve figures of a group (curves.py): accuracy against training images on a log axis
(measured means with their 95 % t intervals, each run as a dot, fitted curves with their bootstrap
bands, dashed where extrapolated), and the effective-data multiplier against the images used."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from transferlab.report.curves import FAR, HOLDS, Curve, Effective, effective_data
from transferlab.report.figures import MARKERS, _finish, _wrap, pyplot, save_png
from transferlab.report.stats import PERCENT_BOUNDS, summarize

GRID = 120  # points along a fitted curve


def _extent(curve: Curve) -> tuple[float, float]:
    """How far the fitted curve is drawn: the amounts measured, FAR times beyond where the fit holds."""
    low, high = curve.images
    return (low / FAR, high * FAR) if curve.status == HOLDS else (low, high)


def _log_axis(ax, which: str) -> None:
    """A log scale on ``which`` axis (x or y) with plain numbers at its ticks (1, 10, 1,000, 0.1): the
    report draws no mathtext."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    getattr(ax, f"set_{which}scale")("log")
    axis = getattr(ax, f"{which}axis")
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}" if value >= 1 else f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


def accuracy_figure(title: str, curves: list[Curve]):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    for index, curve in enumerate(c for c in curves if c.points):
        color = f"C{index % 10}"
        images = [p.images for p in curve.points]
        summaries = [summarize(1 - p.errors, scale=100.0, bounds=PERCENT_BOUNDS) for p in curve.points]
        means = [s.mean for s in summaries]
        below = [0.0 if math.isnan(s.low) else s.mean - s.low for s in summaries]
        above = [0.0 if math.isnan(s.high) else s.high - s.mean for s in summaries]
        label = curve.label if curve.fit else f"{curve.label} ({curve.reason})"
        ax.errorbar(images, means, yerr=[below, above], fmt=MARKERS[index % len(MARKERS)],
                    color=color, capsize=3, label=_wrap(label, 40))
        for p in curve.points:
            ax.scatter([p.images] * len(p.errors), 100 * (1 - p.errors), s=8, color=color, alpha=0.35)
        if curve.fit is None:
            continue
        low, high = _extent(curve)
        grid = np.geomspace(low, high, GRID)
        accuracy = 100 * (1 - curve.fit.error(grid))
        accuracy[accuracy < 0] = np.nan  # an error above 1 is no accuracy: the fit is not drawn there
        inside = (grid >= curve.images[0]) & (grid <= curve.images[1])
        ax.plot(grid[inside], accuracy[inside], color=color, linestyle="-")
        ax.plot(grid[grid <= curve.images[0]], accuracy[grid <= curve.images[0]], color=color, linestyle="--")
        ax.plot(grid[grid >= curve.images[1]], accuracy[grid >= curve.images[1]], color=color, linestyle="--")
        fits = [fit for fit in curve.resampled if fit is not None]
        if fits:
            drawn = 100 * (1 - np.array([fit.error(grid) for fit in fits]))
            low_band, high_band = np.percentile(drawn, 2.5, axis=0), np.percentile(drawn, 97.5, axis=0)
            shown = ~np.isnan(accuracy)
            ax.fill_between(grid[shown], np.clip(low_band[shown], 0, 100), np.clip(high_band[shown], 0, 100),
                            color=color, alpha=0.15, linewidth=0)
    _log_axis(ax, "x")
    _finish(ax, title + "\nlines: fits (dashed: extrapolated), bands: bootstrap 95 %, bars: 95 % t interval",
            "training images (log scale)", "test accuracy (%)", "arm")
    return fig


def multiplier_figure(title: str, found: list[Effective]):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    by_curve: dict[str, list[Effective]] = {}
    for effective in found:
        by_curve.setdefault(effective.curve.label, []).append(effective)
    for index, (label, members) in enumerate(by_curve.items()):
        color = f"C{index % 10}"
        read = [e for e in members if e.reading.kind in ("interpolated", "extrapolated")]
        if read:
            x = np.array([e.point.images for e in read])
            ax.plot(x, [e.multiplier for e in read], color=color, marker=MARKERS[index % len(MARKERS)],
                    label=_wrap(label, 40))
            low = np.array([e.multiplier_interval[0] for e in read])
            high = np.array([e.multiplier_interval[1] for e in read])
            if not np.isnan(low).all():
                ax.fill_between(x, low, np.minimum(high, 1e6), color=color, alpha=0.15, linewidth=0)
            hollow = [e for e in read if e.reading.kind == "extrapolated"]
            ax.scatter([e.point.images for e in hollow], [e.multiplier for e in hollow], s=80, facecolors="white",
                       edgecolors=color, zorder=3)
        for e in (e for e in members if e.reading.kind in ("more than", "less than", "at most")):
            ax.scatter([e.point.images], [e.reading.bound / e.point.images], color=color, zorder=3,
                       marker="^" if e.reading.kind == "more than" else "v", s=60)
    ax.axhline(1.0, color="grey", linestyle=":", linewidth=1.2)
    _log_axis(ax, "x")
    _log_axis(ax, "y")
    _finish(ax, title + "\nhollow: extrapolated, triangles: bounds (up: more than, down: at most or less than), bands: bootstrap 95 %",
            "training images used (log scale)", "effective-data multiplier (from-scratch images / images used)",
            "pretrained arm")
    return fig


def draw_curve_figures(stem: str, label: str, title: str, curves: list[Curve], out: Path) -> list[tuple[str, str]]:
    """Writes the learning-curve PNGs; (file name, caption) of each."""
    if not any(curve.points for curve in curves):
        return []
    written = []
    file = f"{stem}-learning-curves.png"
    save_png(accuracy_figure(_wrap(title, 90), curves), out / file)
    written.append((file, f"{label}: test accuracy vs training images, with fitted learning curves"))
    found = effective_data(curves)
    if any(e.reading.kind != "none" for e in found):
        file = f"{stem}-effective-data.png"
        save_png(multiplier_figure(_wrap(title, 90), found), out / file)
        written.append((file, f"{label}: effective-data multiplier of pretraining vs training images"))
    return written
