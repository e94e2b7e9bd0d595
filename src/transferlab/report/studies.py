"""The studies the report knows (Parts A, B, C, the LP-FT comparison, any other sweep) and the
grouping of runs into them."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import pandas as pd

from transferlab.report.lpft import lpft_row, lpft_table
from transferlab.report.tables import (
    REFERENCE, display, fraction_table, model_table, percent_label, sort_key, short_names, strategy_table,
    sweep_table,
)

HEADLINE_KEYS = ("data.name", "data.image_size", "train.epochs")  # always named in a group's title
STRATEGIES = ("none", "early", "middle", "last_only")  # Part C's rows, in this order

# The study's training on CIFAR-10 (docs/study.md). A group with all of these settings (and its
# part's own, in Part.protocol) is laid beside REFERENCE; any other group gets no reference column.
# A key a record does not have (it predates the key) counts as the study's value.
PROTOCOL_SETTINGS = {
    "data.name": "cifar10", "data.image_size": 224, "train.epochs": 10, "train.batch_size": 64,
    "train.eval_batch_size": 128, "optim.name": "sgd", "optim.lr": 0.001, "optim.momentum": 0.9,
    "optim.weight_decay": 0, "freeze.modules": None, "freeze.unfreeze_at_epoch": None, "model.weights": None,
    "data.val_fraction": 0, "data.augment": "pad_crop_flip", "data.normalize": "cifar10", "data.test_crop": 1.0,
}


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
    # A sweep over data.fraction: a run -> its line in the figures against the training data used
    arm: Callable[[pd.Series], str] | None = None


TRAINING_FIGURES = (("curve", "train_loss"), ("curve", "train_acc"), ("bars", "test_acc"), ("bars", "test_loss"),
                    ("curve", "test_acc"))
PARTS = {
    "part_a": Part(
        label="Part A", question="AlexNet, ImageNet-pretrained vs from scratch, by the share of the training set used.",
        swept=("data.fraction", "model.pretrained"), row_title="fraction",
        row=lambda run: (run["fraction"], percent_label(run["fraction"])),
        series=lambda run: f"{percent_label(run['fraction'])}, {'pretrained' if run['pretrained'] else 'scratch'}",
        table=fraction_table,
        figures=(("vs_fraction", "test_acc"), ("vs_fraction", "test_loss"), ("vs_per_class", "test_acc"),
                 ("curve", "test_acc")),
        protocol={"model.name": "alexnet"}, compares_init=True,
        arm=lambda run: "pretrained" if run["pretrained"] else "scratch",
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
    "lpft": Part(
        label="LP-FT", question="Pretrained ResNet18 on 50 % of the training set: full fine-tuning, a linear probe, "
                                "and a linear probe then full fine-tuning (LP-FT).",
        swept=("freeze.name", "freeze.modules", "freeze.unfreeze_at_epoch"), row_title="strategy",
        row=lpft_row, series=lambda run: run["row"], table=lpft_table,
        figures=(("curve", "test_acc"), ("curve", "train_loss"), ("bars", "test_acc")), protocol={},
    ),
}


def sweep_part(name: str, keys: tuple[str, ...]) -> Part:
    """Any other study: its rows are whichever settings vary across its runs (the model when none does)."""
    keys = keys or ("model.name",)
    names = short_names(keys)

    def row(run: pd.Series) -> tuple[Any, str]:
        values = [run["config"].get(k) for k in keys]
        return tuple(sort_key(v) for v in values), ", ".join(f"{names[k]}={display(v)}" for k, v in zip(keys, values))

    others = tuple(k for k in keys if k != "data.fraction")

    def arm(run: pd.Series) -> str:
        return ", ".join(f"{names[k]}={display(run['config'].get(k))}" for k in others) or "these runs"

    by_fraction = len(others) < len(keys)
    figures = (("vs_per_class", "test_acc"),) if by_fraction else ()
    return Part(label=f"Sweep {name}", question="", swept=keys, row_title=", ".join(names.values()), row=row,
                series=lambda run: row(run)[1], table=partial(sweep_table, keys=keys),
                figures=(*figures, ("curve", "test_acc")), protocol={}, arm=arm if by_fraction else None)


def _strategy_order(strategy: str) -> tuple[int, str]:
    return (STRATEGIES.index(strategy), "") if strategy in STRATEGIES else (len(STRATEGIES), strategy)


@dataclass(frozen=True)
class Group:
    """Completed runs of one study that differ only in the study's swept keys and in seed."""

    part: Part
    stem: str  # file name stem of its table and figures
    title: str
    note: str  # how it stands to the protocol
    runs: pd.DataFrame  # in table order, with columns row, row_order and series
    reference: dict[str, dict[str, float]]  # row label -> column -> the reference's value; {} when not comparable


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
    title_keys = [*HEADLINE_KEYS, *(k for k in split_keys if k not in HEADLINE_KEYS)]
    names = short_names(title_keys)
    # The dataset leads every title, also where a sweep varies it.
    values = {k: " or ".join(sorted({display(c.get(k)) for c in runs["config"]})) for k in title_keys}
    title = f"{part.label} — " + ", ".join(f"{names[k]}={values[k]}" for k in title_keys
                                            if k == "data.name" or k not in part.swept)
    wanted = {k: v for k, v in {**PROTOCOL_SETTINGS, **part.protocol}.items() if k not in part.swept}
    differ = [k for k, v in wanted.items() if config.get(k, v) != v]
    reference = REFERENCE.get(name, {}) if not differ else {}
    if reference:
        note = ("These runs follow the study's recipe on CIFAR-10 (docs/study.md): the reference columns are the "
                "reference implementation's results (one seed each).")
    elif name in REFERENCE:
        off = short_names(differ)
        note = ("No reference column: these runs differ from the study's recipe on CIFAR-10 in "
                + ", ".join(f"{off[k]}={display(config.get(k))}" for k in differ) + ".")
    else:
        note = ""
    return Group(part=part, stem=stem, title=title, note=note, runs=runs, reference=reference)
