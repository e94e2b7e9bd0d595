"""`transferlab report [PATH ...] [--out DIR]`: run records in, tables and figures out.

Every run.json under the PATHs (default outputs/) is read. Completed runs are grouped by study (the
record's ``name``: part_a, part_b, part_c, or any other sweep) and, within a study, by every setting
that is not one of the study's own swept keys, so that a dry run on synthetic data is never averaged
with a CIFAR-10 run. Each group gives a table (CSV and Markdown, and printed) and PNG figures;
report.md puts them on one page. Runs that did not complete are listed, never averaged in. The same
runs give byte-identical report.md, CSV and Markdown files.

This module never imports torch (nor anything that does): the report reads records, it never trains.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from transferlab.config import NOT_RESULT_KEYS
from transferlab.records import RUN_FILE, SAMPLES_FILE, read_record, write_atomic

DEFAULT_PATH = "outputs"
DEFAULT_OUT = "outputs/report"
REPORT_FILE = "report.md"
SAMPLES_FIGURE = "samples.png"

# Settings that never split a group: repeats differ in seed, the rest cannot change a result.
IGNORED_KEYS = ("name", "seed", *NOT_RESULT_KEYS)
HEADLINE_KEYS = ("data.name", "data.image_size", "train.epochs")  # always named in a group's title
STRATEGIES = ("none", "early", "middle", "last_only")  # Part C's rows, in this order

# PROTOCOL.md's training on CIFAR-10. A group with all of these settings (and its part's own, in
# Part.protocol) is laid beside REFERENCE; any other group gets no reference column.
PROTOCOL_SETTINGS = {
    "data.name": "cifar10", "data.image_size": 224, "train.epochs": 10, "train.batch_size": 64,
    "train.eval_batch_size": 128, "optim.name": "sgd", "optim.lr": 0.001, "optim.momentum": 0.9,
    "optim.weight_decay": 0, "freeze.modules": None, "model.weights": None,
}

# Table column names; a reference column is named "reference <column>".
ACC, LOSS, SECONDS, IMAGES_PER_SECOND, N = "test acc (%)", "test loss", "seconds per epoch", "images/s", "n"
PRE_ACC, SCRATCH_ACC, DIFFERENCE = "pretrained acc (%)", "scratch acc (%)", "difference (points)"
PRE_LOSS, SCRATCH_LOSS = "pretrained loss", "scratch loss"

# PROTOCOL.md's reference results (one seed each): study -> table row -> column -> value.
REFERENCE: dict[str, dict[str, dict[str, float]]] = {
    "part_a": {
        "10 %": {PRE_ACC: 82.99, SCRATCH_ACC: 12.89, DIFFERENCE: 70.10},
        "20 %": {PRE_ACC: 87.18, SCRATCH_ACC: 37.41, DIFFERENCE: 49.77},
        "50 %": {PRE_ACC: 89.68, SCRATCH_ACC: 51.06, DIFFERENCE: 38.62, PRE_LOSS: 0.3249, SCRATCH_LOSS: 1.3601},
    },
    "part_b": {
        "resnet18": {ACC: 94.30, LOSS: 0.1665, SECONDS: 33},
        "vgg16": {ACC: 92.59, LOSS: 0.2633, SECONDS: 500},
    },
    "part_c": {
        "none": {ACC: 94.60, LOSS: 0.1713, SECONDS: 34},
        "early": {ACC: 93.58, LOSS: 0.1937, SECONDS: 30},
        "middle": {ACC: 93.50, LOSS: 0.1979, SECONDS: 31},
        "last_only": {ACC: 79.87, LOSS: 0.5901, SECONDS: 17.6},
    },
}

# Per-epoch metrics: axis label, and the factor that turns a stored value into the plotted one.
METRICS = {
    "train_loss": ("training loss (cross-entropy, lower is better)", 1.0),
    "train_acc": ("training accuracy (%)", 100.0),
    "test_loss": ("test loss (cross-entropy, lower is better)", 1.0),
    "test_acc": ("test accuracy (%)", 100.0),
}
METRIC_COLUMNS = {"test_acc": ACC, "test_loss": LOSS}  # a metric's column in REFERENCE


# ---------------------------------------------------------------------------------------- records


def find_run_files(paths: list[str], out: Path) -> list[Path]:
    """Every run.json under ``paths`` (a path may also be a run.json itself), sorted, none under
    ``out``. Each comes back as the given path joined with its place below it, so that what the
    report shows depends on the arguments, not on the working directory."""
    out = out.resolve()
    found: dict[Path, Path] = {}
    for given in paths:
        root = Path(given)
        files = [root] if root.is_file() else sorted(root.rglob(RUN_FILE)) if root.is_dir() else []
        for file in files:
            resolved = file.resolve()
            if out not in resolved.parents and resolved not in found:
                found[resolved] = root / file.relative_to(root) if file != root else root
    return sorted(found.values(), key=lambda p: p.as_posix())


def read_runs(files: list[Path]) -> tuple[list[tuple[Path, dict[str, Any]]], list[str]]:
    """(path, record) for each readable run.json, and a line for each file that is not one."""
    runs, skipped = [], []
    for file in files:
        try:
            runs.append((file, read_record(file)))
        except ValueError as error:
            skipped.append(f"{file.as_posix()}: {str(error).removeprefix(f'{file}: ')}")
    return runs, skipped


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as {dotted key: value}; lists stay values."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def completed_frame(runs: list[tuple[Path, dict[str, Any]]]) -> pd.DataFrame:
    """One row per completed run: what the tables and figures need, and its flat config."""
    rows = []
    for path, record in runs:
        if record["status"] != "completed":
            continue
        config = {k: v for k, v in flatten(record["config"]).items() if k not in IGNORED_KEYS}
        history = record.get("history") or []
        rows.append({
            "path": path.parent.as_posix(),
            "name": record.get("name") or record["config"].get("name", "runs"),
            "seed": record.get("seed", record["config"].get("seed")),
            "fraction": config.get("data.fraction"),
            "model": config.get("model.name"),
            "pretrained": bool(config.get("model.pretrained") or config.get("model.weights")),
            "strategy": strategy_label(config.get("freeze.name"), config.get("freeze.modules")),
            "test_acc": record.get("test_acc"),
            "test_loss": record.get("test_loss"),
            "params_total": record.get("params_total"),
            "params_trainable": record.get("params_trainable"),
            "frozen": ", ".join(record.get("frozen_modules") or []) or "nothing",
            "train_images": record.get("num_train_images"),
            "epoch_seconds": _mean(h.get("epoch_seconds") for h in history),
            "images_per_second": _mean(h.get("images_per_second") for h in history),
            "history": history,
            "config": config,
        })
    return pd.DataFrame(rows)


def not_completed_frame(runs: list[tuple[Path, dict[str, Any]]]) -> pd.DataFrame:
    """Runs that did not complete: folder, status and the error they recorded."""
    rows = [{"run": path.parent.as_posix(), "status": record["status"],
             "error": _first_line(record.get("error")) or "(no error recorded: still running, or killed)"}
            for path, record in runs if record["status"] != "completed"]
    return pd.DataFrame(rows, columns=["run", "status", "error"])


def strategy_label(preset: str | None, modules: list[str] | None) -> str:
    return f"custom [{', '.join(modules)}]" if modules is not None else str(preset)


def _mean(values) -> float:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else float("nan")


def _first_line(text: str | None) -> str:
    return str(text).strip().splitlines()[0] if text and str(text).strip() else ""


# ----------------------------------------------------------------------------------- the studies


@dataclass(frozen=True)
class Part:
    """What the report knows about one study: its sweep, its table and its figures."""

    label: str  # heading, e.g. "Part A"
    question: str  # what the study asks, in one line
    swept: tuple[str, ...]  # config keys its sweep varies: its rows; any other difference splits groups
    row_title: str  # heading of the table's first column and of the figures' legends
    row: Callable[[pd.Series], tuple[Any, str]]  # a run -> (sort key, label) of its table row
    series: Callable[[pd.Series], str]  # a run -> its line in the figures (its bar: the same per row)
    table: Callable[[pd.DataFrame], pd.DataFrame]  # its runs (in row order) -> its table
    figures: tuple[tuple[str, str], ...]  # (kind, metric) of each figure it draws
    protocol: dict[str, Any]  # settings, beyond PROTOCOL_SETTINGS, under which REFERENCE applies
    compares_init: bool = False  # Part A: pretrained vs scratch within each row


def percent_label(fraction: float) -> str:
    return f"{100 * fraction:g} %"


def cell(values: pd.Series, digits: int) -> str:
    """mean ± standard deviation over repeats; the value alone for one run; '' for none."""
    values = values.dropna()
    if values.empty:
        return ""
    if len(values) == 1:
        return f"{values.iloc[0]:.{digits}f}"
    return f"{values.mean():.{digits}f} ± {values.std():.{digits}f}"


def integers(values: pd.Series) -> str:
    return " or ".join(f"{int(v):,}" for v in sorted(values.dropna().unique()))


def by_row(runs: pd.DataFrame):
    return runs.groupby("row", sort=False)


def fraction_table(runs: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for label, at in by_row(runs):
        pre, scratch = at[at["pretrained"]], at[~at["pretrained"]]
        difference = 100 * (pre["test_acc"].mean() - scratch["test_acc"].mean())
        rows.append({
            "fraction": label,
            PRE_ACC: cell(100 * pre["test_acc"], 2), SCRATCH_ACC: cell(100 * scratch["test_acc"], 2),
            DIFFERENCE: "" if np.isnan(difference) else f"{difference:.2f}",
            PRE_LOSS: cell(pre["test_loss"], 4), SCRATCH_LOSS: cell(scratch["test_loss"], 4),
            N: str(len(pre)) if len(pre) == len(scratch) else f"{len(pre)} pretrained, {len(scratch)} scratch",
        })
    return pd.DataFrame(rows)


def model_table(runs: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame([{
        "model": label, ACC: cell(100 * at["test_acc"], 2), LOSS: cell(at["test_loss"], 4),
        "params": integers(at["params_total"]), SECONDS: cell(at["epoch_seconds"], 2),
        IMAGES_PER_SECOND: cell(at["images_per_second"], 0), N: str(len(at)),
    } for label, at in by_row(runs)])


def strategy_table(runs: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame([{
        "strategy": label, "frozen": at["frozen"].iloc[0],
        ACC: cell(100 * at["test_acc"], 2), LOSS: cell(at["test_loss"], 4),
        "trainable / total params": f"{integers(at['params_trainable'])} / {integers(at['params_total'])}",
        SECONDS: cell(at["epoch_seconds"], 2), N: str(len(at)),
    } for label, at in by_row(runs)])


def sweep_table(runs: pd.DataFrame, keys: tuple[str, ...]) -> pd.DataFrame:
    names = short_names(keys)
    return pd.DataFrame([{
        **{names[k]: display(at["config"].iloc[0].get(k)) for k in keys},
        ACC: cell(100 * at["test_acc"], 2), LOSS: cell(at["test_loss"], 4), SECONDS: cell(at["epoch_seconds"], 2),
        N: str(len(at)),
    } for _, at in by_row(runs)])


TRAINING_FIGURES = (("curve", "train_loss"), ("curve", "train_acc"), ("bars", "test_acc"), ("bars", "test_loss"),
                    ("curve", "test_acc"))
PARTS = {
    "part_a": Part(
        label="Part A", question="AlexNet, ImageNet-pretrained vs from scratch, by the share of the training set used.",
        swept=("data.fraction", "model.pretrained"), row_title="fraction",
        row=lambda run: (run["fraction"], percent_label(run["fraction"])),
        series=lambda run: f"{percent_label(run['fraction'])}, {'pretrained' if run['pretrained'] else 'scratch'}",
        table=fraction_table,
        figures=(("vs_fraction", "test_acc"), ("vs_fraction", "test_loss"), ("curve", "test_acc")),
        protocol={"model.name": "alexnet"}, compares_init=True,
    ),
    "part_b": Part(
        label="Part B", question="Pretrained ResNet18 vs VGG16, trained on 50 % of the training set.",
        swept=("model.name",), row_title="model",
        row=lambda run: (run["model"], run["model"]), series=lambda run: run["model"], table=model_table,
        figures=TRAINING_FIGURES, protocol={"data.fraction": 0.5, "model.pretrained": True},
    ),
    "part_c": Part(
        label="Part C", question="Pretrained ResNet18 on 50 % of the training set, by which layers train.",
        swept=("freeze.name", "freeze.modules"), row_title="strategy",
        row=lambda run: (_strategy_order(run["strategy"]), run["strategy"]),
        series=lambda run: f"{run['strategy']} (frozen: {run['frozen']})", table=strategy_table,
        figures=TRAINING_FIGURES,
        protocol={"model.name": "resnet18", "data.fraction": 0.5, "model.pretrained": True},
    ),
}


def sweep_part(name: str, keys: tuple[str, ...]) -> Part:
    """Any other study: its rows are whichever settings vary across its runs (the model when none does)."""
    keys = keys or ("model.name",)
    names = short_names(keys)

    def row(run: pd.Series) -> tuple[Any, str]:
        values = [run["config"].get(k) for k in keys]
        return tuple(sort_key(v) for v in values), ", ".join(f"{names[k]}={display(v)}" for k, v in zip(keys, values))

    return Part(label=f"Sweep {name}", question="", swept=keys, row_title=", ".join(names.values()), row=row,
                series=lambda run: row(run)[1],
                table=partial(sweep_table, keys=keys), figures=(("curve", "test_acc"),), protocol={})


def _strategy_order(strategy: str) -> tuple[int, str]:
    return (STRATEGIES.index(strategy), "") if strategy in STRATEGIES else (len(STRATEGIES), strategy)


# ---------------------------------------------------------------------------------------- groups


@dataclass(frozen=True)
class Group:
    """Completed runs of one study that differ only in the study's swept keys and in seed."""

    part: Part
    stem: str  # file name stem of its table and figures
    title: str
    note: str  # how it stands to the protocol
    runs: pd.DataFrame  # in table order, with columns row, row_order and series
    reference: dict[str, dict[str, float]]  # row label -> column -> PROTOCOL.md's value; {} when not comparable


def display(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return f"[{', '.join(display(v) for v in value)}]"
    return str(value)


def sort_key(value: Any) -> tuple[int, float, str]:
    """Numbers in numeric order, then text, then null."""
    if value is None:
        return (2, 0.0, "")
    if isinstance(value, (bool, int, float)):
        return (0, float(value), "")
    return (1, 0.0, json.dumps(value, sort_keys=True))


def short_names(keys: tuple[str, ...] | list[str]) -> dict[str, str]:
    """data.image_size -> image_size, model.name -> model; the full key where two would clash."""
    short = {k: k.rsplit(".", 2)[-2] if k.endswith(".name") else k.rsplit(".", 1)[-1] for k in keys}
    return {k: s if list(short.values()).count(s) == 1 else k for k, s in short.items()}


def varying_keys(configs: pd.Series) -> tuple[str, ...]:
    keys = sorted(set().union(*configs))
    return tuple(k for k in keys if len({json.dumps(c.get(k), sort_keys=True) for c in configs}) > 1)


def study_order(names) -> list[str]:
    return sorted(names, key=lambda name: (name not in PARTS, name))


def make_groups(runs: pd.DataFrame) -> list[Group]:
    """The completed runs split into groups, in report order: parts A, B, C, then other sweeps."""
    groups: list[Group] = []
    if runs.empty:
        return groups
    for name in study_order(runs["name"].unique()):
        of_study = runs[runs["name"] == name]
        part = PARTS.get(name) or sweep_part(name, varying_keys(of_study["config"]))
        split_keys = [k for k in varying_keys(of_study["config"]) if k not in part.swept]
        split = of_study["config"].map(lambda c: tuple(sort_key(c.get(k)) for k in split_keys))
        for index, key in enumerate(sorted(split.unique()), start=1):
            members = of_study[split == key]
            stem = name if split.nunique() == 1 else f"{name}-{index}"
            groups.append(make_group(part, stem, name, label_rows(part, members), split_keys))
    return groups


def label_rows(part: Part, runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` with their table row (label and order) and curve series, sorted in table order."""
    keyed = runs.apply(part.row, axis=1)
    runs = runs.assign(row_key=keyed.map(lambda k: k[0]), row=keyed.map(lambda k: k[1]))
    order = {key: i for i, key in enumerate(sorted(set(runs["row_key"])))}
    runs = runs.assign(row_order=runs["row_key"].map(order))
    runs = runs.assign(series=runs.apply(part.series, axis=1))
    return runs.sort_values(["row_order", "pretrained", "seed", "path"], ascending=[True, False, True, True])


def make_group(part: Part, stem: str, name: str, runs: pd.DataFrame, split_keys: list[str]) -> Group:
    config = runs["config"].iloc[0]  # every member shares the keys outside part.swept
    title_keys = [k for k in HEADLINE_KEYS if k not in part.swept] + [k for k in split_keys if k not in HEADLINE_KEYS]
    names = short_names(title_keys)
    title = f"{part.label} — " + ", ".join(f"{names[k]}={display(config.get(k))}" for k in title_keys)
    wanted = {k: v for k, v in {**PROTOCOL_SETTINGS, **part.protocol}.items() if k not in part.swept}
    differ = [k for k, v in wanted.items() if config.get(k) != v]
    reference = REFERENCE.get(name, {}) if not differ else {}
    if reference:
        note = "These runs follow the protocol on CIFAR-10: the reference columns are PROTOCOL.md's results (one seed)."
    elif name in REFERENCE:
        off = short_names(differ)
        note = ("No reference column: these runs differ from the protocol on CIFAR-10 in "
                + ", ".join(f"{off[k]}={display(config.get(k))}" for k in differ) + ".")
    else:
        note = ""
    return Group(part=part, stem=stem, title=title, note=note, runs=runs, reference=reference)


# ---------------------------------------------------------------------------------------- tables


def group_table(group: Group) -> pd.DataFrame:
    """The group's table, with PROTOCOL.md's figure beside each of our columns that has one."""
    table = group.part.table(group.runs)
    if not group.reference:
        return table
    rows = table.iloc[:, 0]
    for column in [c for c in table.columns if any(c in ref for ref in group.reference.values())]:
        values = [group.reference.get(row, {}).get(column) for row in rows]
        digits = 4 if "loss" in column else 2
        shown = ["" if v is None else f"{v:.{digits}f}" for v in values]
        table.insert(table.columns.get_loc(column) + 1, f"reference {column}", shown)
    return table


def markdown_table(table: pd.DataFrame) -> str:
    def line(cells) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(table.columns), line(["---"] * len(table.columns)),
                      *(line(row) for row in table.itertuples(index=False))]) + "\n"


def csv_text(table: pd.DataFrame) -> str:
    return table.to_csv(index=False, lineterminator="\n")


# --------------------------------------------------------------------------------------- figures


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


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
    a band of ± one standard deviation where runs repeat."""
    plt = pyplot()
    label, scale = METRICS[metric]
    fig, ax = plt.subplots(figsize=(8, 4.8), dpi=100)
    colours = plt.get_cmap("tab10")
    epochs = epochs_frame(group.runs)
    for index, (series, at) in enumerate(epochs.groupby("series", sort=False) if metric in epochs else []):
        stats = _stats(at, "epoch", metric, scale)
        by_fraction = group.part.compares_init
        colour = colours((at["row_order"].iloc[0] if by_fraction else index) % 10)
        style = "--" if by_fraction and not at["pretrained"].iloc[0] else "-"
        ax.plot(stats.index, stats["mean"], style, marker=MARKERS[index % len(MARKERS)], color=colour,
                label=_wrap(series, 32))
        low, high = (stats["mean"] - stats["std"]).clip(lower=0), stats["mean"] + stats["std"]
        ax.fill_between(stats.index, low, high.clip(upper=100) if scale > 1 else high, color=colour, alpha=0.15)
    ax.set_xticks(sorted(epochs["epoch"].unique()))
    _finish(ax, f"{group.title}\n{_metric_name(metric)} per epoch{_repeats_note(group.runs)}", "epoch", label,
            group.part.row_title)
    return fig


def bar_figure(group: Group, metric: str):
    """One bar per table row: the mean of its runs, an error bar of one standard deviation where
    runs repeat, and a black diamond for PROTOCOL.md's result where the group has one."""
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
                   label="reference (PROTOCOL.md)")
    ax.set_xticks(x, [_wrap(s) + (f"\n(n={n})" if repeats else "") for s, n in zip(stats.index, stats["count"])],
                  fontsize=9)
    if scale > 1:
        ax.set_ylim(0, 105)
    _finish(ax, f"{group.title}\n{_metric_name(metric)} after the last epoch", group.part.row_title, label)
    if len(ax.get_legend_handles_labels()[0]) < 2:  # a legend only to tell our bars from the reference
        ax.get_legend().remove()
    return fig


def fraction_figure(group: Group, metric: str):
    """Part A: the metric after the last epoch against the share of the training set, pretrained
    vs from scratch, with PROTOCOL.md's points (dotted) where the group has them."""
    plt = pyplot()
    label, scale = METRICS[metric]
    fig, ax = plt.subplots(figsize=(8, 4.8), dpi=100)
    columns = {"test_acc": (PRE_ACC, SCRATCH_ACC), "test_loss": (PRE_LOSS, SCRATCH_LOSS)}[metric]
    arms = (("pretrained (ImageNet weights)", True, "tab:blue", columns[0]),
            ("from scratch (random init)", False, "tab:orange", columns[1]))
    references = []
    for name, pretrained, colour, column in arms:
        runs = group.runs[group.runs["pretrained"] == pretrained]
        if runs.empty:
            continue
        stats = _stats(runs, "fraction", metric, scale)
        ax.plot(100 * stats.index, stats["mean"], "-o", color=colour, label=name)
        if stats["count"].max() > 1:
            ax.errorbar(100 * stats.index, stats["mean"], yerr=stats["std"], fmt="none", ecolor=colour, capsize=5)
        points = [(100 * f, group.reference.get(percent_label(f), {}).get(column)) for f in stats.index]
        if points := [(f, r) for f, r in points if r is not None]:
            references.append((points, colour, f"{name.split(' (')[0]}, reference (PROTOCOL.md)"))
    for points, colour, name in references:  # after ours, so that the legend lists ours first
        ax.plot(*zip(*points), ":", marker="D", color=colour, label=name)
    images = group.runs.groupby("fraction")["train_images"].first()
    ax.set_xticks(100 * images.index, [percent_label(f) + (f"\n({n:,.0f} images)" if pd.notna(n) else "")
                                       for f, n in images.items()])
    _finish(ax, f"{group.title}\n{_metric_name(metric)} after the last epoch, by training data"
                f"{_repeats_note(group.runs)}", "training data used (% of the training set)", label)
    return fig


def samples_figure(path: Path, title: str):
    """A grid of the training images in a samples.npz, each with its class name."""
    plt = pyplot()
    with np.load(path, allow_pickle=False) as samples:
        images, labels, classes = samples["images"], samples["labels"], samples["classes"]
    columns = 8
    rows = max(1, -(-len(images) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(1.4 * columns, 1.5 * rows + 0.7), dpi=100, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, label in zip(axes.flat, images, labels):
        ax.imshow(image, interpolation="nearest")
        ax.set_title(str(classes[label]), fontsize=9)
    fig.suptitle(title)
    return fig


FIGURES = {"curve": (curve_figure, "{what} per epoch"), "bars": (bar_figure, "{what} by {rows}"),
           "vs_fraction": (fraction_figure, "{what} vs training data")}


def draw_group_figures(group: Group, out: Path) -> list[tuple[str, str]]:
    """Writes the group's PNGs; returns (file name, caption) of each."""
    plt = pyplot()
    written = []
    for kind, metric in group.part.figures:
        draw, caption = FIGURES[kind]
        file = f"{group.stem}-{metric}-{kind}.png"
        fig = draw(group, metric)
        fig.savefig(out / file, bbox_inches="tight")
        plt.close(fig)
        written.append((file, f"{group.part.label}: " + caption.format(what=_metric_name(metric),
                                                                       rows=group.part.row_title)))
    return written


def draw_samples(groups: list[Group], out: Path) -> str | None:
    """samples.png from the first run, in report order, that kept a samples.npz; its folder, or None."""
    for run in (run for group in groups for run in group.runs.sort_values("path").itertuples()):
        source = Path(run.path) / SAMPLES_FILE
        if source.is_file():
            plt = pyplot()
            fig = samples_figure(source, f"Sample training images (data={run.config.get('data.name')}), "
                                         "before augmentation, with their classes")
            fig.savefig(out / SAMPLES_FIGURE, bbox_inches="tight")
            plt.close(fig)
            return run.path
    return None


# ---------------------------------------------------------------------------------------- report


@dataclass(frozen=True)
class Section:
    """One group as the report shows it."""

    group: Group
    table: pd.DataFrame
    figures: list[tuple[str, str]]  # (PNG file name, caption)


def report_markdown(sources: list[str], read: int, sections: list[Section], samples_from: str | None,
                    not_completed: pd.DataFrame, skipped: list[str]) -> str:
    skipped_note = f"; {len(skipped)} file(s) skipped (not run records)." if skipped else "."
    lines = [
        "# transferlab report", "",
        f"{read} run records read from {', '.join(f'`{s}`' for s in sources)}: {read - len(not_completed)} "
        f"completed, {len(not_completed)} did not complete{skipped_note}", "",
        "Accuracies are in %, losses are cross-entropy, both after the last epoch. Where runs repeat a setting "
        "with other seeds, a cell shows mean ± standard deviation over its n runs. Seconds per epoch is training "
        "time, mean over the epochs.", "",
    ]
    if samples_from:
        lines += ["## Sample training images", "", f"From `{samples_from}`.", "",
                  f"![Sample training images with their classes]({SAMPLES_FIGURE})", ""]
    else:
        lines += ["No sample image grid: no completed run kept a samples.npz.", ""]
    for section in sections:
        group = section.group
        lines += [f"## {group.title}", ""]
        lines += [f"*{group.part.question}*", ""] if group.part.question else []
        lines += [markdown_table(section.table)]
        lines += [group.note, ""] if group.note else []
        lines += [line for file, caption in section.figures for line in (f"![{caption}]({file})", "")]
    if len(not_completed):
        lines += ["## Runs that did not complete", "", "Not in any table or figure above.", "",
                  markdown_table(not_completed)]
    if skipped:
        lines += ["## Files skipped", "", *(f"- `{line}`" for line in skipped), ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def parse_args(args: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="transferlab report",
        description="Tables (CSV, Markdown) and figures (PNG) from the run.json files under PATH, and report.md.")
    parser.add_argument("paths", nargs="*", metavar="PATH", default=[DEFAULT_PATH],
                        help=f"folders to search for {RUN_FILE} (default: {DEFAULT_PATH})")
    parser.add_argument("--out", default=DEFAULT_OUT, metavar="DIR", help=f"where to write (default: {DEFAULT_OUT})")
    return parser.parse_args(args)


def main(args: list[str]) -> int:
    options = parse_args(args)
    out = Path(options.out)
    runs, skipped = read_runs(find_run_files(options.paths, out))
    for line in skipped:
        print(f"transferlab report: warning: skipped {line}", file=sys.stderr)
    if not runs:
        print(f"transferlab report: error: no readable {RUN_FILE} under {', '.join(options.paths)}", file=sys.stderr)
        return 1

    out.mkdir(parents=True, exist_ok=True)
    groups = make_groups(completed_frame(runs))
    sections = [Section(group, group_table(group), draw_group_figures(group, out)) for group in groups]
    samples_from = draw_samples(groups, out)
    not_completed = not_completed_frame(runs)
    for section in sections:
        write_atomic(out / f"{section.group.stem}.csv", csv_text(section.table))
        write_atomic(out / f"{section.group.stem}.md", f"## {section.group.title}\n\n{markdown_table(section.table)}")
        print(f"\n{section.group.title}\n\n{markdown_table(section.table)}", end="")
    if len(not_completed):
        print(f"\nRuns that did not complete\n\n{markdown_table(not_completed)}", end="")
    report = report_markdown(options.paths, len(runs), sections, samples_from, not_completed, skipped)
    write_atomic(out / REPORT_FILE, report)
    print(f"\n{len(runs)} run records read, {len(not_completed)} did not complete; "
          f"report: {(out / REPORT_FILE).as_posix()}")
    return 0
