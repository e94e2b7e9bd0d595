"""The figures: PNGs per group, and the sample image grid. matplotlib only, never torch.

Every band and error bar is the 95 % interval of a mean (Student's t over the replicates; of the
paired differences in a difference figure); one run, or one pair, is a point without one. Each
figure says n, draws every run (or pair) as a dot beside the means, says what its bands are or why
there are none, draws chance accuracy, and names the comparisons that had no pairs. Lines that
would lie on top of each other stay visible: each arm has its own marker and line style, and
curves over the epochs are offset sideways by a fraction of an epoch.
"""

from __future__ import annotations

import io
import re
import textwrap
import zipfile
import zlib
from functools import partial
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from transferlab.records import SAMPLES_FILE, write_atomic
from transferlab.report.testset import confusion
from transferlab.report.arms import Arm, Contrast, exact_by_replicate, facet_title, is_scratch
from transferlab.report.stats import LOSS_BOUNDS, NO_INTERVAL, NO_SPREAD_PAIRS, PERCENT_BOUNDS, summarize
from transferlab.report.studies import Group
from transferlab.report.tables import per_class, percent_label

# Per-epoch metrics: axis label, and the factor that turns a stored value into the plotted one.
METRICS = {
    "train_loss": ("training loss (cross-entropy, lower is better)", 1.0),
    "train_acc": ("training accuracy (%)", 100.0),
    "test_loss": ("test loss (cross-entropy, lower is better)", 1.0),
    "test_acc": ("test accuracy (%)", 100.0),
}
BOUNDS = {"train_loss": LOSS_BOUNDS, "test_loss": LOSS_BOUNDS, "train_acc": PERCENT_BOUNDS, "test_acc": PERCENT_BOUNDS}
REFERENCE_METRICS = {"test_acc": "test_acc", "test_loss": "test_loss"}  # a metric's key in REFERENCE
MARKERS = "osD^vPX*<>"  # distinct shapes, so that lines lying on top of each other stay visible
LINE_STYLES = ("-", "--", "-.", ":")


def pyplot():
    """matplotlib's pyplot on the Agg backend, with every text drawn as it is: a ``$`` in a class,
    folder or setting name is a dollar sign, never the start of mathtext (which would misdraw
    ``$5 to $10`` and fail on ``a$x^$``). Read when a text is made (tick labels: when drawn), so it
    is set before any figure."""
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["text.parse_math"] = False
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: Path) -> None:
    """The figure as a PNG, written atomically (drawn in memory, then records.write_atomic): a full
    disk or a read-only folder leaves no empty or half PNG, only the OSError. Closes the figure."""
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", bbox_inches="tight")
    finally:
        pyplot().close(fig)
    write_atomic(path, buffer.getvalue())


def _metric_name(metric: str) -> str:
    return METRICS[metric][0].split(" (")[0]  # "test accuracy (%)" -> "test accuracy"


def _wrap(text: str, width: int = 24) -> str:
    return textwrap.fill(text, width, break_on_hyphens=False)


def _title(group: Group, what: str) -> str:
    return f"{_wrap(group.title, 90)}\n{what}"


def _finish(ax, title: str, xlabel: str, ylabel: str, legend_title: str | None = None) -> None:
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    from matplotlib.ticker import ScalarFormatter

    for axis in ("x", "y"):
        if isinstance(getattr(ax, f"{axis}axis").get_major_formatter(), ScalarFormatter):
            ax.ticklabel_format(axis=axis, style="plain", useOffset=False)  # no "+2.302" above the axis
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(title=legend_title, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9)


def _repeats(group: Group) -> bool:
    return any(len(arm.runs) > 1 for arm in group.arms)


def _n_text(arms: list[Arm]) -> str:
    """``n=3 runs per arm``, ``n=1–3 runs per arm``."""
    counts = sorted({len(arm.runs) for arm in arms})
    n = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
    return f"n={n} run{'s' if counts[-1] > 1 else ''} per arm"


def _band_text(group: Group, what: str = "bands") -> str:
    """What the shaded bands (or error bars) are, or why there are none."""
    if _repeats(group):
        return f"{what}: 95 % interval of the mean; dots: single runs"
    return f"no {what}: one run per arm gives no interval"


def chance_level(group: Group) -> float | None:
    """Chance accuracy in % (one over the classes), where every run of the group has the same classes."""
    counts = {len(c) for c in group.runs.get("classes", []) if isinstance(c, list) and c}
    return 100.0 / counts.pop() if len(counts) == 1 else None


def _chance_line(ax, group: Group, metric: str) -> None:
    """A dotted grey line at chance accuracy (accuracy metrics only), named at its right end, not in the legend."""
    chance = chance_level(group)
    if chance is None or not metric.endswith("_acc"):
        return
    ax.axhline(chance, color="grey", linestyle=":", linewidth=1.2)
    ax.annotate(f"chance ({chance:g} %)", xy=(1.0, chance), xycoords=("axes fraction", "data"), xytext=(-4, 3),
                textcoords="offset points", ha="right", va="bottom", fontsize=8, color="grey")


def _pair_differences(c: Contrast) -> list[float]:
    """The contrast's paired differences in points, one per pair, from the runs' correct counts."""
    a, b = exact_by_replicate(c.arm), exact_by_replicate(c.baseline)
    return [float(100 * (a[k] - b[k])) for k in c.pairs]


def _no_pairs_note(fig, contrasts: list[Contrast]) -> None:
    """A line under the figure naming the comparisons that had no pair (so are not drawn)."""
    missing = [c for c in contrasts if c.result.n == 0]
    if missing:
        names = "; ".join(c.label + (f" ({', '.join(c.context.values())})" if c.context else "") for c in missing)
        fig.text(0.01, -0.02, _wrap(f"Not drawn, no replicate on both sides: {names}", 110), ha="left", va="top",
                 fontsize=8)


def _style(group: Group, index: int, arm: Arm) -> dict:
    """Colour, line style and marker of an arm. Where a group varies both the data amount and the
    initialisation (Part A), a colour per amount and a line style per initialisation."""
    plt = pyplot()
    colours = plt.get_cmap("tab10")
    names = [f.name for f in group.facets]
    if "data amount" in names and "init" in names:
        amounts = list(dict.fromkeys(a.values["data amount"] for a in group.arms))
        inits = list(dict.fromkeys(a.values["init"] for a in group.arms))
        inner = inits.index(arm.values["init"])
        return dict(color=colours(amounts.index(arm.values["data amount"]) % 10),
                    linestyle=LINE_STYLES[inner % len(LINE_STYLES)], marker=MARKERS[inner % len(MARKERS)])
    return dict(color=colours(index % 10), linestyle=LINE_STYLES[index % len(LINE_STYLES)],
                marker=MARKERS[index % len(MARKERS)])


def _epoch_summaries(arm: Arm, metric: str, scale: float) -> pd.DataFrame:
    """Per epoch: mean, the t interval of the mean (nan for one run) and n of ``metric`` over the arm's runs."""
    values: dict[int, list] = {}
    for history in arm.runs["history"]:
        for entry in history:
            if "epoch" in entry:
                values.setdefault(int(entry["epoch"]), []).append(entry.get(metric))
    rows = {epoch: summarize(found, scale, BOUNDS[metric]) for epoch, found in sorted(values.items())}
    return pd.DataFrame({"mean": [s.mean for s in rows.values()], "low": [s.low for s in rows.values()],
                         "high": [s.high for s in rows.values()], "n": [s.n for s in rows.values()]},
                        index=list(rows), dtype=float)


MAX_CURVES = 6  # arms in one curve plot at most; more are drawn as small multiples, a panel per few arms
PANEL_COLUMNS = 3


def curve_panels(group: Group) -> list[tuple[str, list[tuple[int, Arm]]]]:
    """The arms of a curve figure by panel: (panel title, [(index in the group, arm)]). One panel
    for up to MAX_CURVES arms; more are split by the varying facet with the most values (Part A: a
    panel per data amount, its pretrained and from-scratch arms together), or, with one facet, into
    panels of up to MAX_CURVES // 2 arms."""
    indexed = list(enumerate(group.arms))
    if len(indexed) <= MAX_CURVES:
        return [("", indexed)]
    varying = [f.name for f in group.facets if len({arm.values[f.name] for arm in group.arms}) > 1]
    if len(varying) > 1:
        facet = max(varying, key=lambda name: len({arm.values[name] for arm in group.arms}))
        panels: dict[str, list[tuple[int, Arm]]] = {}
        for index, arm in indexed:
            panels.setdefault(arm.values[facet], []).append((index, arm))
        return list(panels.items())
    size = MAX_CURVES // 2
    return [("", indexed[start:start + size]) for start in range(0, len(indexed), size)]


def curve_figure(group: Group, metric: str):
    """One line per arm over the epochs, a band of the 95 % interval of the mean where runs repeat,
    each arm offset sideways by a little so that equal curves stay visible; a dotted vertical line
    where an LP-FT arm unfreezes its frozen modules. More than MAX_CURVES arms are small multiples
    (``curve_panels``) on one y axis."""
    plt = pyplot()
    label, scale = METRICS[metric]
    panels = curve_panels(group)
    if len(panels) == 1:
        fig, ax = plt.subplots(figsize=(8, 4.8), dpi=100)
        epochs = _draw_curves(ax, group, panels[0][1], metric, lambda arm: arm.label)
        note = f"; {_n_text(group.arms)}; {_band_text(group, 'bands' if len(epochs) > 1 else 'error bars')}"
        _finish(ax, _title(group, f"{_metric_name(metric)} per epoch{note}"),
                "epoch" + (" (arms offset sideways by up to 0.15)" if len(group.arms) > 1 else ""), label,
                group.legend_title)
        return fig
    columns = min(PANEL_COLUMNS, len(panels))
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.4 * columns, 3.4 * rows + 0.8), dpi=100, sharey=True,
                             squeeze=False, layout="constrained")
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    epochs: set[int] = set()
    for ax, (title, members) in zip(axes.flat, panels):
        epochs |= _draw_curves(ax, group, members, metric, lambda arm, title=title: _without_value(arm, title))
        ax.set_title(_wrap(title, 40), fontsize=10)
        ax.set_xlabel("epoch" + (" (offset)" if len(members) > 1 else ""), fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    for ax in axes[:, 0]:
        ax.set_ylabel(label, fontsize=9)
    note = f"; {_n_text(group.arms)}; {_band_text(group, 'bands' if len(epochs) > 1 else 'error bars')}"
    fig.suptitle(_title(group, f"{_metric_name(metric)} per epoch, {len(group.arms)} arms in {len(panels)} panels"
                               f"{note}"), fontsize=10)
    return fig


def _without_value(arm: Arm, value: str) -> str:
    """An arm's label in a panel titled by one of its values: the other values."""
    return ", ".join(v for v in arm.values.values() if v != value) or arm.label


def _draw_curves(ax, group: Group, members: list[tuple[int, Arm]], metric: str, label_of) -> set[int]:
    """The curves of ``members`` ((index in the group, arm)) on ``ax``, and chance; the epochs drawn."""
    _, scale = METRICS[metric]
    count = len(members)
    spread = 0.3 if count > 1 else 0.0  # of an epoch, over all arms
    epochs: set[int] = set()
    for position, (index, arm) in enumerate(members):
        stats = _epoch_summaries(arm, metric, scale).dropna(subset=["mean"])
        if stats.empty:
            continue
        epochs |= set(stats.index)
        style = _style(group, index, arm)
        x = stats.index.to_numpy(dtype=float) + (spread * (position / (count - 1) - 0.5) if count > 1 else 0.0)
        ax.plot(x, stats["mean"], markersize=5, label=_wrap(label_of(arm), 32), **style)
        if (stats["n"] > 1).any():
            if len(x) > 1:
                ax.fill_between(x, stats["low"], stats["high"], color=style["color"], alpha=0.15, linewidth=0)
            else:  # one epoch: a band of one point would not show; an error bar does
                ax.errorbar(x, stats["mean"], yerr=[stats["mean"] - stats["low"], stats["high"] - stats["mean"]],
                            color=style["color"], capsize=4, linestyle="none")
            runs = [(epoch + x[0] - stats.index[0], scale * entry[metric]) for history in arm.runs["history"]
                    for entry in history if "epoch" in entry and entry.get(metric) is not None
                    for epoch in [int(entry["epoch"])]]
            ax.scatter(*zip(*runs), s=9, color=style["color"], alpha=0.45, linewidths=0, zorder=3)
        switch = arm.runs["config"].iloc[0].get("freeze.unfreeze_at_epoch")
        if switch is not None:
            ax.axvline(switch + 0.5, linestyle=":", linewidth=1.5, color=style["color"],
                       label=_wrap(f"its switch: all train from epoch {switch + 1}", 32))
    ax.set_xticks(sorted(epochs))
    _chance_line(ax, group, metric)
    return epochs


def bar_figure(group: Group, metric: str):
    """One bar per arm: the mean of its runs, an error bar of the 95 % interval of the mean where runs
    repeat, and a black diamond for the reference's result where the group has one."""
    plt = pyplot()
    label, scale = METRICS[metric]
    summaries = [summarize(arm.runs[metric], scale, BOUNDS[metric]) for arm in group.arms]
    means = np.array([s.mean for s in summaries])
    errors = np.array([[s.mean - s.low, s.high - s.mean] if s.n > 1 else [np.nan, np.nan] for s in summaries]).T
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(summaries) + 2.5), 4.8), dpi=100)
    x = np.arange(len(summaries))
    repeats = _repeats(group)
    bars = ax.bar(x, means, yerr=errors if repeats else None, capsize=5, color="tab:blue", alpha=0.8,
                  label="these runs" + (" (mean, 95 % interval)" if repeats else ""))
    ax.bar_label(bars, labels=[f"{m:.{2 if scale > 1 else 4}f}" for m in means], label_type="center",
                 color="white", fontsize=9, fontweight="bold")
    if repeats:  # each run as a dot beside its bar
        for position, arm in zip(x, group.arms):
            values = scale * pd.to_numeric(arm.runs[metric], errors="coerce").dropna().to_numpy(dtype=float)
            ax.scatter(np.full(len(values), position + 0.3), values, s=14, color="tab:gray", zorder=3, linewidths=0)
    _chance_line(ax, group, metric)
    reference = [group.reference_arms.get(arm.label, {}).get(REFERENCE_METRICS.get(metric)) for arm in group.arms]
    if any(r is not None for r in reference):
        ax.scatter(x, [np.nan if r is None else r for r in reference], marker="D", color="black", zorder=3,
                   label="reference (one seed; docs/study.md)")
    ax.set_xticks(x, [_wrap(arm.label) + f"\n(n={s.n})" for arm, s in zip(group.arms, summaries)], fontsize=9)
    if scale > 1:
        ax.set_ylim(0, 105)
    note = f"; {_band_text(group, 'error bars')}"
    _finish(ax, _title(group, f"{_metric_name(metric)} after the last epoch{note}"), group.legend_title, label)
    if len(ax.get_legend_handles_labels()[0]) < 2:  # a legend only to tell our bars from the reference
        ax.get_legend().remove()
    return fig


def amount_positions(group: Group, per_class_axis: bool,
                     arms: list[Arm] | None = None) -> dict[str, tuple[float, str]]:
    """Data amount label -> (x position, tick label) of ``arms`` (by default the group's): images per
    class (K of a per-class run, else the mean count of the runs at that amount), or the share of the
    training set in %."""
    by_amount: dict[str, list[pd.DataFrame]] = {}
    for arm in group.arms if arms is None else arms:
        by_amount.setdefault(arm.values["data amount"], []).append(arm.runs)
    positions = {}
    for amount, frames in by_amount.items():
        runs = pd.concat(frames)
        first = runs.iloc[0]
        if per_class_axis:
            k = first["per_class"]
            x = float(k) if k is not None and not pd.isna(k) else float(np.nanmean(runs["images_per_class"]))
            share = f"\n({percent_label(first['fraction'])})" if not pd.isna(first["fraction"]) else ""
            positions[amount] = (x, per_class(runs) + share)
        else:
            images = runs["train_images"].dropna()
            positions[amount] = (100 * first["fraction"], percent_label(first["fraction"]) + (
                f"\n({images.iloc[0]:,.0f} images)" if len(images) else ""))
    return positions


LOG_FRACTIONS = 5  # fractions spanning this factor or more get a log axis (1, 2 and 5 % apart, not on top)


def _set_amount_axis(ax, positions: dict[str, tuple[float, str]], per_class_axis: bool) -> str:
    plt = pyplot()
    xs = sorted(positions.values())
    logarithmic = per_class_axis or (xs and xs[0][0] > 0 and xs[-1][0] / xs[0][0] >= LOG_FRACTIONS)
    if logarithmic:
        ax.set_xscale("log")
        ax.xaxis.set_minor_locator(plt.NullLocator())  # only the ticks of the runs' own sizes
    ax.set_xticks([x for x, _ in xs], [tick for _, tick in xs], fontsize=9)
    if _ticks_overlap(ax):  # close amounts: their first lines alone (the tables give the image counts)
        ax.set_xticks([x for x, _ in xs], [tick.split("\n")[0] for _, tick in xs], fontsize=9)
    if _ticks_overlap(ax):
        for label in ax.get_xticklabels():
            label.set(rotation=40, horizontalalignment="right", rotation_mode="anchor")
    if per_class_axis:
        return "training images per class (log scale)"
    return "training data used (% of the training set" + (", log scale)" if logarithmic else ")")


def _ticks_overlap(ax) -> bool:
    """Whether two of the x tick labels, as drawn, overlap."""
    renderer = ax.figure.canvas.get_renderer()
    boxes = sorted((label.get_window_extent(renderer) for label in ax.get_xticklabels() if label.get_text()),
                   key=lambda box: box.x0)
    return any(left.x1 > right.x0 for left, right in zip(boxes, boxes[1:]))


def _without(arm: Arm, facet: str) -> str:
    return ", ".join(v for k, v in arm.values.items() if k != facet) or "these runs"


def data_figure(group: Group, metric: str, per_class_axis: bool):
    """The metric after the last epoch against the training data used, a line per setting of the
    other facets (Part A: pretrained and from scratch), with a band of the 95 % interval of the mean
    where runs repeat, and the reference's points (dotted) where the group has them. The x axis is the
    training images per class on a log axis (``per_class_axis``), which compares datasets of any size
    and class count, or the share of the training set."""
    plt = pyplot()
    label, scale = METRICS[metric]
    fig, ax = plt.subplots(figsize=(8, 4.8), dpi=100)
    # By fraction: the arms that train on a fraction (a study may mix in per-class amounts, which the
    # per-class figure shows).
    arms = group.arms if per_class_axis else [arm for arm in group.arms if arm.runs["fraction"].notna().all()]
    positions = amount_positions(group, per_class_axis, arms)
    lines: dict[str, list[tuple[int, Arm]]] = {}
    for index, arm in enumerate(group.arms):
        if arm in arms:
            lines.setdefault(_without(arm, "data amount"), []).append((index, arm))
    references = []
    colours = plt.get_cmap("tab10")
    for index, (name, members) in enumerate(lines.items()):
        colour = colours(index % 10)
        points = sorted((positions[arm.values["data amount"]][0], summarize(arm.runs[metric], scale, BOUNDS[metric]),
                         index) for index, arm in members)
        x = [p[0] for p in points]
        ax.plot(x, [p[1].mean for p in points], label=name, markersize=6, color=colour,
                linestyle=LINE_STYLES[index % len(LINE_STYLES)], marker=MARKERS[index % len(MARKERS)])
        if any(p[1].n > 1 for p in points):
            ax.fill_between(x, [p[1].low for p in points], [p[1].high for p in points], color=colour, alpha=0.15,
                            linewidth=0)
            runs = [(positions[arm.values["data amount"]][0], scale * value) for _, arm in members
                    for value in pd.to_numeric(arm.runs[metric], errors="coerce").dropna()]
            ax.scatter(*zip(*runs), s=12, color=colour, alpha=0.5, linewidths=0, zorder=3)
        ref = [(xx, group.reference_arms.get(group.arms[i].label, {}).get(REFERENCE_METRICS.get(metric)))
               for xx, _, i in points]
        if ref := [(xx, r) for xx, r in ref if r is not None]:
            references.append((ref, colour, f"{name}, reference (one seed; docs/study.md)"))
    for points, colour, name in references:  # after ours, so that the legend lists ours first
        ax.plot(*zip(*points), ":", marker="D", color=colour, label=name)
    xlabel = _set_amount_axis(ax, positions, per_class_axis)
    _chance_line(ax, group, metric)
    what = "by training images per class" if per_class_axis else "by training data"
    note = f"; {_n_text(group.arms)}; {_band_text(group)}"
    others = [facet_title(f, group.runs) for f in group.facets if f.name != "data amount"]
    _finish(ax, _title(group, f"{_metric_name(metric)} after the last epoch, {what}{note}"), xlabel, label,
            ", ".join(others) or None)
    return fig


def gain_figure(group: Group, metric: str = "test_acc"):
    """The headline of a sweep over the data amount: pretrained minus from scratch (paired by
    replicate, in points) against training images per class on a log axis, with its 95 % interval;
    a hollow marker where one pair gives no interval; the reference's differences where they apply."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.8), dpi=100)
    positions = amount_positions(group, per_class_axis=True)
    contrasts = gain_contrasts(group)
    compared = list(dict.fromkeys(c.label for c in contrasts))  # pretrained, or local weights, − from scratch
    lines: dict[str, list[Contrast]] = {}
    for c in contrasts:
        held = [v for k, v in c.context.items() if k != "data amount"] + ([c.label] if len(compared) > 1 else [])
        lines.setdefault(", ".join(held) or c.label, []).append(c)
    colours = plt.get_cmap("tab10")
    ax.axhline(0.0, color="black", linewidth=0.8)
    single = False
    for index, (name, members) in enumerate(lines.items()):
        colour = colours(index % 10)
        points = sorted((positions[c.arm.values["data amount"]][0], c) for c in members if c.result.n)
        x, y = [p[0] for p in points], [p[1].result.mean for p in points]
        low = [p[1].result.mean - p[1].result.low if p[1].result.has_interval else np.nan for p in points]
        high = [p[1].result.high - p[1].result.mean if p[1].result.has_interval else np.nan for p in points]
        ax.errorbar(x, y, yerr=[low, high], color=colour, marker=MARKERS[index % len(MARKERS)],
                    linestyle=LINE_STYLES[index % len(LINE_STYLES)], capsize=5,
                    label=name if len(lines) > 1 else f"{points[0][1].label}" if points else name)
        for xx, c in points:
            ax.annotate(f"n={c.result.n}", (xx, c.result.mean), xytext=(6, -12), textcoords="offset points",
                        fontsize=8, color=colour)
            if c.result.n > 1:
                pairs = _pair_differences(c)
                ax.scatter([xx * 1.04] * len(pairs), pairs, s=12, color=colour, alpha=0.5, linewidths=0, zorder=3)
        lone = [(xx, c.result.mean) for xx, c in points if not c.result.has_interval]
        if lone:
            single = True
            ax.scatter(*zip(*lone), s=90, facecolors="white", edgecolors=colour, zorder=3, linewidths=1.5)
        ref = [(xx, group.reference_of(c)) for xx, c in points if group.reference_of(c) is not None]
        if ref:
            ax.plot(*zip(*ref), ":", marker="D", color="black", label="reference (one seed; docs/study.md)")
    if single:
        ax.scatter([], [], s=90, facecolors="white", edgecolors="grey", label=f"hollow: {_no_interval(contrasts)}")
    xlabel = _set_amount_axis(ax, positions, per_class_axis=True)
    _no_pairs_note(fig, contrasts)
    _finish(ax, _title(group, f"pretraining gain: test accuracy, {'; '.join(compared)}, paired by replicate "
                              "(95 % t interval; dots: single pairs; n: pairs)"), xlabel,
            "difference in test accuracy (percentage points)",
            ", ".join(facet_title(f, group.runs) for f in group.facets if f.name not in ("data amount", "init"))
            or None)
    return fig


def _no_interval(contrasts: list[Contrast]) -> str:
    """Why a hollow marker has no interval: one pair, or pairs that all differ by the same amount."""
    lone = [c.result.n for c in contrasts if c.result.n and not c.result.has_interval]
    return "; ".join(([NO_INTERVAL] if 1 in lone else []) + ([NO_SPREAD_PAIRS] if any(n > 1 for n in lone) else []))


def gain_contrasts(group: Group) -> list[Contrast]:
    """Each initialisation against from scratch: ImageNet's weights, or a local state_dict's (a
    pretraining source against ``from scratch (timm)``, ...)."""
    return [c for c in group.contrasts if c.facet == "init" and is_scratch(c.baseline.values["init"])]


def differences_figure(group: Group, metric: str = "test_acc"):
    """Every difference the group compares, one row each: the mean of the paired differences (points)
    with its 95 % t interval, a hollow marker where one pair gives none, zero marked."""
    plt = pyplot()
    contrasts = [c for c in group.contrasts if c.result.n]
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.45 * len(contrasts) + 1.6)), dpi=100)
    y = np.arange(len(contrasts))[::-1]
    ax.axvline(0.0, color="black", linewidth=0.8)
    for row, c in zip(y, contrasts):
        if c.result.n > 1:
            pairs = _pair_differences(c)
            ax.scatter(pairs, [row - 0.18] * len(pairs), s=12, color="tab:gray", linewidths=0, zorder=3)
        if c.result.has_interval:
            ax.errorbar([c.result.mean], [row], xerr=[[c.result.mean - c.result.low], [c.result.high - c.result.mean]],
                        fmt="o", color="tab:blue", capsize=4)
        else:
            ax.scatter([c.result.mean], [row], s=60, facecolors="white", edgecolors="tab:blue", zorder=3)
    ax.set_yticks(y, [_wrap(f"{c.label}" + (f" ({', '.join(c.context.values())})" if c.context else "")
                            + f", n={c.result.n}", 48) for c in contrasts], fontsize=9)
    single = any(not c.result.has_interval for c in contrasts)
    _no_pairs_note(fig, group.contrasts)
    _finish(ax, _title(group, f"{_metric_name(metric)}: paired differences, 95 % t interval, dots: single pairs"
                              + (f"; hollow: {_no_interval(contrasts)}" if single else "")),
            "difference (percentage points)", "")
    return fig


def confusion_figure(group: Group, arm: Arm, counts: np.ndarray, runs: int):
    """An arm's confusion matrix: rows the true class, columns the predicted one, each row in % of
    its class's test images (summed over the arm's runs with predictions), the class names where
    there are up to 20 classes and the percentages written in where there are up to 10."""
    plt = pyplot()
    classes = len(counts)
    names = next((list(c) for c in group.runs["classes"] if isinstance(c, list) and len(c) >= classes), None)
    names = names or [str(i) for i in range(classes)]
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = 100 * counts / counts.sum(axis=1, keepdims=True)
    size = min(12.0, 3.0 + 0.55 * classes)
    fig, ax = plt.subplots(figsize=(size + 1.5, size), dpi=100)
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=100)
    fig.colorbar(image, ax=ax, label="% of the true class's test images")
    if classes <= 20:
        ax.set_xticks(range(classes), [_wrap(n, 12) for n in names[:classes]], rotation=90, fontsize=8)
        ax.set_yticks(range(classes), [_wrap(n, 12) for n in names[:classes]], fontsize=8)
    if classes <= 10:
        for (row, column), share in np.ndenumerate(shares):
            if not np.isnan(share):
                ax.text(column, row, f"{share:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if share > 60 else "black")
    images = int(counts.sum()) // runs
    ax.set_title(f"{_wrap(group.title, 90)}\n{_wrap(arm.label, 90)}: confusion matrix, n={runs} run(s) × "
                 f"{images:,} test images", fontsize=10)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    return fig


def confusion_figures(group: Group, out: Path) -> list[tuple[str, str]]:
    """A confusion matrix per arm whose runs kept their test predictions: (file name, caption) of each."""
    written = []
    for index, arm in enumerate(group.arms, start=1):
        found = confusion(arm.runs)
        if found is None:
            continue
        file = f"{group.stem}-confusion-{index}.png"
        save_png(confusion_figure(group, arm, *found), out / file)
        written.append((file, f"{group.part.label}: confusion matrix of {arm.label} (n={found[1]})"))
    return written


class Samples(NamedTuple):
    images: np.ndarray  # (N, H, W, 3) uint8
    labels: np.ndarray  # (N,) int, each an index into classes
    classes: np.ndarray  # (C,) str: every class of the dataset


def read_samples(path: Path) -> Samples:
    """The arrays of a samples.npz; ValueError (saying what is wrong) when it is not one."""
    try:
        with np.load(path, allow_pickle=False) as samples:
            images, labels, classes = samples["images"], samples["labels"], samples["classes"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise ValueError(f"not readable as a samples file ({type(error).__name__}: {error})") from error
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or not len(images):
        raise ValueError(f"images are {images.dtype} {images.shape}, not (N, H, W, 3) uint8")
    if classes.ndim != 1 or classes.dtype.kind != "U":
        raise ValueError(f"classes are {classes.dtype} {classes.shape}, not a list of names")
    if labels.shape != images.shape[:1] or labels.dtype.kind not in "iu" or labels.min() < 0 \
            or labels.max() >= len(classes):
        raise ValueError(f"labels are {labels.dtype} {labels.shape}, not one class index (0 to {len(classes) - 1}) "
                         "per image")
    return Samples(images, labels, classes)


def samples_figure(path: Path, title: str):
    """The training images of a samples.npz by class, each class under its name: a row per class
    (its name at the left) where there are several of each, a grid of one image per class (its name
    above it) otherwise; the title says how many images of how many of the classes it shows.
    ValueError when the file is not a samples file."""
    plt = pyplot()
    images, labels, classes = read_samples(path)
    shown = np.unique(labels)  # the classes in their dataset's order
    of_class = [np.flatnonzero(labels == label) for label in shown]
    per_class = max(len(indices) for indices in of_class)
    by_row = per_class > 1
    columns = per_class if by_row else min(10, len(shown))
    rows = len(shown) if by_row else -(-len(shown) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(1.3 * columns + (1.4 if by_row else 0), 1.4 * rows + 0.6),
                             dpi=100, squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for place, (label, indices) in enumerate(zip(shown, of_class)):
        name = _wrap(str(classes[label]), 16)  # the dataset's own names, any count
        for ax, index in zip(axes[place] if by_row else [axes.flat[place]], indices):
            ax.imshow(images[index], interpolation="nearest")
        if by_row:  # the name left of the row: an axis label, with the axis itself hidden
            first = axes[place, 0]
            first.axis("on")
            first.set_xticks([])
            first.set_yticks([])
            first.spines[:].set_visible(False)
            first.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
        else:
            axes.flat[place].set_title(name, fontsize=9)
    each = f"{per_class}" if len({len(indices) for indices in of_class}) == 1 else f"up to {per_class}"
    which = f"{len(shown)} of its {len(classes)} classes" if len(shown) < len(classes) else f"its {len(classes)} classes"
    fig.suptitle(f"{title}\n{each} image{'s' if by_row else ''} of each of {which}")
    return fig


FIGURES = {"curve": (curve_figure, "{what} per epoch"), "bars": (bar_figure, "{what} by {rows}"),
           "vs_fraction": (partial(data_figure, per_class_axis=False), "{what} vs training data"),
           "vs_per_class": (partial(data_figure, per_class_axis=True), "{what} vs training images per class"),
           "gain": (gain_figure, "pretraining gain in {what} (paired difference) vs training images per class"),
           "differences": (differences_figure, "paired differences in {what}")}


def applies(group: Group, kind: str) -> bool:
    """Whether a figure of ``kind`` says something about ``group``."""
    varies = {f.name for f in group.facets}
    if kind in ("vs_fraction", "vs_per_class", "gain") and "data amount" not in varies:
        return False
    if kind == "vs_fraction":  # the arms by fraction; a study that mixes in per-class amounts keeps them apart
        return bool(group.runs["fraction"].notna().any())
    if kind == "vs_per_class":
        return bool((group.runs["per_class"].notna() | group.runs["images_per_class"].notna()).all())
    if kind == "gain":
        return len(gain_contrasts(group)) > 0 and applies(group, "vs_per_class")
    if kind == "differences":  # what the gain figure does not already show
        shown = gain_contrasts(group) if applies(group, "gain") else []
        return any(c.result.n and all(c is not g for g in shown) for c in group.contrasts)
    if kind == "curve":
        return any(len(h) for h in group.runs["history"])
    return True


def draw_group_figures(group: Group, out: Path) -> list[tuple[str, str]]:
    """Writes the group's PNGs; returns (file name, caption) of each."""
    written = []
    for kind, metric in group.part.figures:
        if not applies(group, kind):
            continue
        draw, caption = FIGURES[kind]
        file = f"{group.stem}-{metric}-{kind}.png"
        save_png(draw(group, metric), out / file)
        if not group.legend_title:  # one arm: nothing to go by
            caption = caption.replace(" by {rows}", " after the last epoch")
        written.append((file, f"{group.part.label}: " + caption.format(what=_metric_name(metric),
                                                                       rows=group.legend_title)))
    return written + confusion_figures(group, out)


def draw_samples(runs: pd.DataFrame, out: Path) -> tuple[list[tuple[str, str, str]], list[str]]:
    """A grid of sample images per dataset, from the dataset's first run (by folder) that kept a
    readable samples.npz: (file name, dataset, run folder) of each, and a line for each samples.npz
    that could not be read (the dataset's next run is tried instead)."""
    written, unreadable = [], []
    for dataset, of_dataset in runs.groupby("dataset", sort=True) if len(runs) else []:
        for run in of_dataset.sort_values("path").itertuples():
            source = Path(run.path) / SAMPLES_FILE
            if not source.is_file():
                continue
            file = f"samples-{re.sub(r'[^A-Za-z0-9_.-]+', '_', dataset).strip('_')}.png"
            try:
                fig = samples_figure(source, f"Sample training images of {dataset}, before augmentation, "
                                             "with their classes")
            except ValueError as error:
                unreadable.append(f"{source.as_posix()}: {error}")
                continue
            save_png(fig, out / file)
            written.append((file, dataset, run.path))
            break
    return written, unreadable
