"""The figures: PNGs per group, and the sample image grid. matplotlib only, never torch."""

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
from transferlab.report.studies import Group
from transferlab.report.tables import (
    ACC, LOSS, PRE_ACC, PRE_LOSS, SCRATCH_ACC, SCRATCH_LOSS, per_class, percent_label,
)

# Per-epoch metrics: axis label, and the factor that turns a stored value into the plotted one.
METRICS = {
    "train_loss": ("training loss (cross-entropy, lower is better)", 1.0),
    "train_acc": ("training accuracy (%)", 100.0),
    "test_loss": ("test loss (cross-entropy, lower is better)", 1.0),
    "test_acc": ("test accuracy (%)", 100.0),
}
METRIC_COLUMNS = {"test_acc": ACC, "test_loss": LOSS}  # a metric's column in REFERENCE


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


def epochs_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per run and finished epoch: the history entries, with the run's series."""
    rows = [{"series": run.series, "row_order": run.row_order, "pretrained": run.pretrained, **entry}
            for run in runs.itertuples() for entry in run.history]
    return pd.DataFrame(rows, columns=list(rows[0]) if rows else ["series", "row_order", "pretrained", "epoch"])


def _stats(frame: pd.DataFrame, by: str, metric: str, scale: float) -> pd.DataFrame:
    """mean and standard deviation (0 for one run) of ``metric`` times ``scale``, and n, per ``by``."""
    stats = frame.groupby(by, sort=False)[metric].agg(["mean", "std", "count"])
    return stats.assign(mean=scale * stats["mean"], std=scale * stats["std"].fillna(0.0))


def _metric_name(metric: str) -> str:
    return METRICS[metric][0].split(" (")[0]  # "test accuracy (%)" -> "test accuracy"


def _repeats_note(runs: pd.DataFrame) -> str:
    low, high = runs.groupby("series").size().agg(["min", "max"])
    return "" if high == 1 else f"\nmean ± std over {high if low == high else f'{low}–{high}'} seeds"


def _wrap(text: str, width: int = 24) -> str:
    return textwrap.fill(text, width, break_on_hyphens=False)


def _finish(ax, title: str, xlabel: str, ylabel: str, legend_title: str | None = None) -> None:
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.ticklabel_format(axis="y", style="plain", useOffset=False)  # no "+2.302" above the axis
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(title=legend_title, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9)


MARKERS = "osD^vPX*"  # distinct shapes, so that lines lying on top of each other stay visible


def curve_figure(group: Group, metric: str):
    """One line per series over the epochs (Part A: a colour per fraction, dashed from scratch);
    a band of ± one standard deviation where runs repeat; a dotted vertical line where an LP-FT
    series unfreezes its frozen modules."""
    plt = pyplot()
    label, scale = METRICS[metric]
    fig, ax = plt.subplots(figsize=(8, 4.8), dpi=100)
    colours = plt.get_cmap("tab10")
    epochs = epochs_frame(group.runs)
    switches = {run.series: run.config.get("freeze.unfreeze_at_epoch") for run in group.runs.itertuples()}
    for index, (series, at) in enumerate(epochs.groupby("series", sort=False) if metric in epochs else []):
        stats = _stats(at, "epoch", metric, scale)
        by_fraction = group.part.compares_init
        colour = colours((at["row_order"].iloc[0] if by_fraction else index) % 10)
        style = "--" if by_fraction and not at["pretrained"].iloc[0] else "-"
        ax.plot(stats.index, stats["mean"], style, marker=MARKERS[index % len(MARKERS)], color=colour,
                label=_wrap(series, 32))
        low, high = (stats["mean"] - stats["std"]).clip(lower=0), stats["mean"] + stats["std"]
        ax.fill_between(stats.index, low, high.clip(upper=100) if scale > 1 else high, color=colour, alpha=0.15)
        if (switch := switches[series]) is not None:
            ax.axvline(switch + 0.5, linestyle=":", linewidth=1.5, color=colour,
                       label=_wrap(f"{series}: all train from epoch {switch + 1}", 32))
    ax.set_xticks(sorted(epochs["epoch"].unique()))
    _finish(ax, f"{group.title}\n{_metric_name(metric)} per epoch{_repeats_note(group.runs)}", "epoch", label,
            group.part.row_title)
    return fig


def bar_figure(group: Group, metric: str):
    """One bar per table row: the mean of its runs, an error bar of one standard deviation where
    runs repeat, and a black diamond for the reference's result where the group has one."""
    plt = pyplot()
    label, scale = METRICS[metric]
    stats = _stats(group.runs, "series", metric, scale)
    rows = group.runs.groupby("series", sort=False)["row"].first()
    repeats = stats["count"].max() > 1
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(stats) + 2.5), 4.8), dpi=100)
    x = np.arange(len(stats))
    bars = ax.bar(x, stats["mean"], yerr=stats["std"] if repeats else None, capsize=5, color="tab:blue", alpha=0.8,
                  label="these runs" + (" (mean ± std)" if repeats else ""))
    ax.bar_label(bars, labels=[f"{m:.{2 if scale > 1 else 4}f}" for m in stats["mean"]], label_type="center",
                 color="white", fontsize=9, fontweight="bold")
    reference = [group.reference.get(row, {}).get(METRIC_COLUMNS[metric]) for row in rows]
    if any(r is not None for r in reference):
        ax.scatter(x, [np.nan if r is None else r for r in reference], marker="D", color="black", zorder=3,
                   label="reference (one seed; docs/study.md)")
    ax.set_xticks(x, [_wrap(s) + (f"\n(n={n})" if repeats else "") for s, n in zip(stats.index, stats["count"])],
                  fontsize=9)
    if scale > 1:
        ax.set_ylim(0, 105)
    _finish(ax, f"{group.title}\n{_metric_name(metric)} after the last epoch", group.part.row_title, label)
    if len(ax.get_legend_handles_labels()[0]) < 2:  # a legend only to tell our bars from the reference
        ax.get_legend().remove()
    return fig


# Part A's arms: legend, colour, and the reference column of each metric.
ARMS = {
    "pretrained": ("pretrained (ImageNet weights)", "tab:blue", {"test_acc": PRE_ACC, "test_loss": PRE_LOSS}),
    "scratch": ("from scratch (random init)", "tab:orange", {"test_acc": SCRATCH_ACC, "test_loss": SCRATCH_LOSS}),
}


def data_figure(group: Group, metric: str, per_class_axis: bool):
    """A sweep over data.fraction: the metric after the last epoch against the training data used, a
    line per arm (Part A: pretrained vs from scratch), with the reference's points (dotted) where the
    group has them. The x axis is the share of the training set, or (``per_class_axis``) the training
    images per class on a log axis, which compares datasets of any size and class count."""
    plt = pyplot()
    label, scale = METRICS[metric]
    fig, ax = plt.subplots(figsize=(8, 4.8), dpi=100)
    runs = group.runs.assign(arm=group.runs.apply(group.part.arm, axis=1))
    by_fraction = runs.groupby("fraction")  # x positions and tick labels, in fraction order
    x_of = by_fraction["images_per_class"].mean() if per_class_axis else 100 * by_fraction["fraction"].first()
    references = []
    for index, (arm, at) in enumerate(runs.groupby("arm", sort=False)):
        name, colour, columns = ARMS.get(arm, (arm, plt.get_cmap("tab10")(index % 10), {}))
        stats = _stats(at, "fraction", metric, scale)
        x = x_of[stats.index]
        ax.plot(x, stats["mean"], "-o", color=colour, label=name)
        if stats["count"].max() > 1:
            ax.errorbar(x, stats["mean"], yerr=stats["std"], fmt="none", ecolor=colour, capsize=5)
        points = [(x_of[f], group.reference.get(percent_label(f), {}).get(columns.get(metric))) for f in stats.index]
        if points := [(f, r) for f, r in points if r is not None]:
            references.append((points, colour, f"{name.split(' (')[0]}, reference (one seed; docs/study.md)"))
    for points, colour, name in references:  # after ours, so that the legend lists ours first
        ax.plot(*zip(*points), ":", marker="D", color=colour, label=name)
    images = by_fraction["train_images"].first()
    if per_class_axis:
        ax.set_xscale("log")
        ax.xaxis.set_minor_locator(plt.NullLocator())  # only the ticks of the runs' own sizes
        ax.set_xticks(list(x_of), [f"{per_class(pd.Series([v]))}\n({percent_label(f)})" for f, v in x_of.items()])
        xlabel = "training images per class (log scale)"
    else:
        ax.set_xticks(list(x_of), [percent_label(f) + (f"\n({n:,.0f} images)" if pd.notna(n) else "")
                                   for f, n in images.items()])
        xlabel = "training data used (% of the training set)"
    what = "by training images per class" if per_class_axis else "by training data"
    _finish(ax, f"{group.title}\n{_metric_name(metric)} after the last epoch, {what}{_repeats_note(group.runs)}",
            xlabel, label)
    return fig


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
           "vs_per_class": (partial(data_figure, per_class_axis=True), "{what} vs training images per class")}


def draw_group_figures(group: Group, out: Path) -> list[tuple[str, str]]:
    """Writes the group's PNGs; returns (file name, caption) of each."""
    written = []
    for kind, metric in group.part.figures:
        if kind == "vs_per_class" and group.runs["images_per_class"].isna().any():
            continue  # records written before run.json had num_classes
        draw, caption = FIGURES[kind]
        file = f"{group.stem}-{metric}-{kind}.png"
        save_png(draw(group, metric), out / file)
        written.append((file, f"{group.part.label}: " + caption.format(what=_metric_name(metric),
                                                                       rows=group.part.row_title)))
    return written


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
