"""The studies the report knows (Parts A, B, C, the LP-FT comparison, any other sweep), the grouping
of runs into them, and each group's heading, arms and comparisons, all read from the runs.

A study's runs are split into groups by every setting that is not one of its swept keys (and always
by ``data.sampling``: a subset drawn uniformly and one stratified by class are never paired). Within
a group, the swept settings that vary make the arms (arms.py); a heading names the settings its runs
share and nothing else, so no text of the report can say what a run's settings contradict.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from transferlab.config import schema_default
from transferlab.report.arms import (
    FACET_BY_NAME, FACETS, STRATEGIES, Arm, Contrast, Facet, against_baseline, all_pairs, architecture_label,
    by_context, contrast, display, facet_title, facets_of, is_scratch, make_arms, percent_label, replicates_text,
    scratch_label, short_names, sort_key, source_label,
)
from transferlab.report.lpft import lpft_contrasts, lpft_label

ALWAYS_SPLIT = ("data.sampling",)  # never a swept key: runs that differ in it are never paired

# The study's training on CIFAR-10 (docs/study.md). A group with all of these settings (and its
# part's own, in Part.protocol) is laid beside REFERENCE; any other group gets no reference column.
# A key a record does not have (it predates the key) counts as the study's value. The values are the
# schema's defaults, which reproduce the study (docs/study.md): written once, on the fields.
PROTOCOL_SETTINGS = {key: schema_default(key) for key in (
    "data.name", "data.image_size", "train.epochs", "train.batch_size", "train.eval_batch_size", "optim.name",
    "optim.lr", "optim.momentum", "optim.weight_decay", "freeze.modules", "freeze.unfreeze_at_epoch",
    "model.weights", "data.val_fraction", "data.augment", "data.normalize", "data.test_crop", "data.per_class",
    "data.sampling", "freeze.cached_features")}

# The reference implementation's results (one seed each; docs/study.md), in percent where they are
# accuracies: study -> [(the settings of its arm, {metric: value})], and Part A's differences.
REFERENCE: dict[str, list[tuple[dict[str, Any], dict[str, float]]]] = {
    "part_a": [
        ({"data.fraction": 0.1, "model.pretrained": True, "model.weights": None}, {"test_acc": 82.99}),
        ({"data.fraction": 0.1, "model.pretrained": False, "model.weights": None}, {"test_acc": 12.89}),
        ({"data.fraction": 0.2, "model.pretrained": True, "model.weights": None}, {"test_acc": 87.18}),
        ({"data.fraction": 0.2, "model.pretrained": False, "model.weights": None}, {"test_acc": 37.41}),
        ({"data.fraction": 0.5, "model.pretrained": True, "model.weights": None},
         {"test_acc": 89.68, "test_loss": 0.3249}),
        ({"data.fraction": 0.5, "model.pretrained": False, "model.weights": None},
         {"test_acc": 51.06, "test_loss": 1.3601}),
    ],
    "part_b": [
        ({"model.name": "resnet18"}, {"test_acc": 94.30, "test_loss": 0.1665, "epoch_seconds": 33}),
        ({"model.name": "vgg16"}, {"test_acc": 92.59, "test_loss": 0.2633, "epoch_seconds": 500}),
    ],
    "part_c": [
        ({"freeze.name": preset, "freeze.modules": None}, {"test_acc": acc, "test_loss": loss, "epoch_seconds": seconds})
        for preset, acc, loss, seconds in (("none", 94.60, 0.1713, 34), ("early", 93.58, 0.1937, 30),
                                           ("middle", 93.50, 0.1979, 31), ("last_only", 79.87, 0.5901, 17.6))
    ],
}
# Part A's pretrained minus from scratch, in points, by the arms' shared settings.
REFERENCE_DIFFERENCES: dict[str, list[tuple[dict[str, Any], float]]] = {
    "part_a": [({"data.fraction": 0.1}, 70.10), ({"data.fraction": 0.2}, 49.77), ({"data.fraction": 0.5}, 38.62)],
}
REFERENCE_RUN_AS = "fp32, deterministic"  # how the reference computed: fp32, cuDNN deterministic

# The LP-FT study's arms; a probe on cached features is an arm of its own, never one with the loop's.
FREEZE_KEYS = ("freeze.name", "freeze.modules", "freeze.unfreeze_at_epoch", "freeze.cached_features",
               "freeze.probe")
TRAINING_FIGURES = (("differences", "test_acc"), ("bars", "test_acc"), ("bars", "test_loss"), ("curve", "train_loss"),
                    ("curve", "train_acc"), ("curve", "test_acc"))


def by_init(arms: list[Arm], facets: tuple[Facet, ...]) -> list[Contrast]:
    return against_baseline(arms, _facet(facets, "init")) if _facet(facets, "init") else []


def by_source(arms: list[Arm], facets: tuple[Facet, ...]) -> list[Contrast]:
    """Pretraining sources: each source against from scratch of its own implementation (timm's
    a1_in1k against timm's resnet50 from scratch), at each setting of the others; against the one
    from-scratch arm there is where its implementation has none (experiment=sources' torchvision
    baseline, which the baseline's label names: ``from scratch (torchvision)``)."""
    if _facet(facets, "init") is None:
        return []
    contrasts = []
    for _, group in by_context(arms, "init"):
        scratch = {arm.values["init"]: arm for arm in group if is_scratch(arm.values["init"])}
        for arm in (arm for arm in group if not is_scratch(arm.values["init"])):
            own = scratch.get(scratch_label(arm.runs.iloc[0]))
            baseline = own or (next(iter(scratch.values())) if len(scratch) == 1 else None)
            if baseline is not None:
                contrasts.append(contrast("init", arm, baseline))
    return contrasts


def by_each_facet(arms: list[Arm], facets: tuple[Facet, ...]) -> list[Contrast]:
    """Any sweep: each value of each varying setting against the first (from scratch, for the init),
    the others held fixed; the pretraining gain first, where there is one."""
    ordered = sorted(facets, key=lambda facet: facet.name != "init")
    return [c for facet in ordered for c in against_baseline(arms, facet)]


def _facet(facets: tuple[Facet, ...], name: str) -> Facet | None:
    return next((f for f in facets if f.name == name), None)


@dataclass(frozen=True)
class Part:
    """What the report knows about one study: its sweep, what it compares and its figures."""

    label: str  # heading, e.g. "Part A"
    swept: tuple[str, ...]  # config keys its sweep varies: its arms; any other difference splits groups
    compare: Callable[[list[Arm], tuple[Facet, ...]], list[Contrast]]  # its arms -> the differences it reports
    figures: tuple[tuple[str, str], ...]  # (kind, metric) of each figure it may draw
    protocol: dict[str, Any] = field(default_factory=dict)  # settings, beyond PROTOCOL_SETTINGS, for REFERENCE
    labels: dict[str, Callable[[pd.Series], str]] = field(default_factory=dict)  # facet -> its own wording


AMOUNT_FIGURES = (("gain", "test_acc"), ("vs_fraction", "test_acc"), ("vs_per_class", "test_acc"))
PARTS = {
    "part_a": Part(
        # model.weights: a local state_dict is a pretrained arm too, compared with from scratch
        label="Part A", swept=("data.fraction", "data.per_class", "model.pretrained", "model.weights",
                               "model.new_head"),
        compare=by_init,
        figures=(*AMOUNT_FIGURES, ("vs_fraction", "test_loss"), ("curve", "test_acc")),
        protocol={"model.name": "alexnet"},
    ),
    "part_b": Part(
        label="Part B", swept=("model.name",),
        compare=lambda arms, facets: all_pairs(arms, _facet(facets, "model")) if _facet(facets, "model") else [],
        figures=TRAINING_FIGURES, protocol={"data.fraction": 0.5, "model.pretrained": True},
    ),
    "part_c": Part(
        # Every preset against every other (6 for the study's 4): with one seed the test set's interval
        # says whether neighbours such as early and middle are distinguishable at all; Holm's p adjusts.
        label="Part C", swept=("freeze.name", "freeze.modules"),
        compare=lambda arms, facets: all_pairs(arms, _facet(facets, "freeze")) if _facet(facets, "freeze") else [],
        figures=TRAINING_FIGURES,
        protocol={"model.name": "resnet18", "data.fraction": 0.5, "model.pretrained": True},
    ),
    # experiment=sources: one architecture from several pretraining sources, each against from scratch.
    "sources": Part(
        label="Pretraining sources", swept=("data.fraction", "data.per_class", "model.name", "model.pretrained",
                                            "model.weights", "model.new_head"),
        compare=by_source, figures=(*AMOUNT_FIGURES, ("curve", "test_acc")),
        labels={"model": architecture_label, "init": source_label},
    ),
    # experiment=digits (transferlab study digits): digits 5-9 from a model.pt of digits 0-4 vs from scratch, by K.
    "digits": Part(
        label="Digits transfer (0-4 to 5-9)", swept=("data.fraction", "data.per_class", "model.pretrained",
                                                      "model.weights"),
        compare=by_init, figures=(*AMOUNT_FIGURES, ("curve", "test_acc")),
    ),
    "lpft": Part(
        label="LP-FT", swept=FREEZE_KEYS, compare=lambda arms, facets: lpft_contrasts(arms),
        figures=(("differences", "test_acc"), ("curve", "test_acc"), ("curve", "train_loss"), ("bars", "test_acc")),
        labels={"freeze": lpft_label},
    ),
}
DEFAULT_STUDY = "runs"  # the name of runs that belong to no study (Config's default)


def sweep_part(name: str, keys: tuple[str, ...]) -> Part:
    """Any other study: its arms are whichever settings vary across its runs."""
    label = "Runs" if name == DEFAULT_STUDY else f"Study {name}"
    return Part(label=label, swept=keys, compare=by_each_facet,
                figures=(*AMOUNT_FIGURES, ("differences", "test_acc"), ("curve", "test_acc")))


@dataclass(frozen=True)
class Group:
    """Completed runs of one study that differ only in the study's swept keys and in their replicate."""

    part: Part
    name: str  # the study
    stem: str  # file name stem of its tables and figures
    title: str  # its heading: the study and the settings all its runs share
    note: str  # how it stands to the protocol
    runs: pd.DataFrame  # in arm order, with the columns arm (label) and arm_order
    facets: tuple[Facet, ...]  # what varies: the tables' first columns, the legends
    arms: list[Arm]
    contrasts: list[Contrast]
    reference_arms: dict[str, dict[str, float]]  # arm label -> metric -> the reference's value; {}: none
    reference_contrasts: dict[tuple, float]  # (facet, arm, baseline, context) -> the reference's difference

    @property
    def legend_title(self) -> str:
        return ", ".join(facet_title(f, self.runs) for f in self.facets)

    @property
    def replicates(self) -> str:
        return replicates_text(self.arms)

    @property
    def question(self) -> str:
        return question_text(self)

    def reference_of(self, contrast: Contrast) -> float | None:
        return self.reference_contrasts.get(contrast_key(contrast))


def contrast_key(contrast: Contrast) -> tuple:
    return (contrast.facet, contrast.arm.label, contrast.baseline.label)


def varying_keys(configs: pd.Series) -> tuple[str, ...]:
    keys = sorted(set().union(*configs))
    return tuple(k for k in keys if len({json.dumps(c.get(k), sort_keys=True) for c in configs}) > 1)


def study_order(names) -> list[str]:
    """Parts A, B, C and LP-FT in that order, then other studies by name, then runs of no study."""
    parts = list(PARTS)
    return sorted(names, key=lambda name: (parts.index(name) if name in parts else len(parts),
                                           name == DEFAULT_STUDY, name))


def make_groups(runs: pd.DataFrame) -> list[Group]:
    """The completed runs split into groups, in report order: parts A, B, C, LP-FT, then other studies."""
    groups: list[Group] = []
    if runs.empty:
        return groups
    for name in study_order(runs["name"].unique()):
        of_study = runs[runs["name"] == name]
        varying = varying_keys(of_study["config"])
        part = PARTS.get(name) or sweep_part(name, tuple(k for k in varying if k not in ALWAYS_SPLIT))
        split_keys = [k for k in varying if k not in part.swept or k in ALWAYS_SPLIT]
        split = of_study["config"].map(lambda c: tuple(sort_key(c.get(k)) for k in split_keys))
        for index, key in enumerate(sorted(split.unique()), start=1):
            stem = name if split.nunique() == 1 else f"{name}-{index}"
            groups.append(make_group(part, name, stem, of_study[split == key], split_keys))
    return groups


def make_group(part: Part, name: str, stem: str, runs: pd.DataFrame, split_keys: list[str]) -> Group:
    swept = [k for k in varying_keys(runs["config"]) if k in part.swept]
    facets = facets_of(swept)
    arms = make_arms(runs, facets, part.labels)
    order = {arm.label: index for index, arm in enumerate(arms)}
    runs = pd.concat([arm.runs.assign(arm=arm.label, arm_order=order[arm.label]) for arm in arms])
    contrasts = part.compare(arms, facets)
    config = runs["config"].iloc[0]  # every member shares the keys outside part.swept
    wanted = {k: v for k, v in {**PROTOCOL_SETTINGS, **part.protocol}.items() if k not in part.swept}
    differ = [k for k, v in wanted.items() if config.get(k, v) != v]
    comparable = name in REFERENCE and not differ
    if comparable:
        note = ("These runs follow the study's recipe on CIFAR-10 (docs/study.md): the reference columns are the "
                "reference implementation's results (one seed each).")
    elif name in REFERENCE:
        off = short_names(differ)
        note = ("No reference column: these runs differ from the study's recipe on CIFAR-10 in "
                + ", ".join(f"{off[k]}={display(config.get(k))}" for k in differ) + ".")
    else:
        note = ""
    note = " ".join(line for line in (note, *degenerate_notes(arms)) if line)
    return Group(
        part=part, name=name, stem=stem, title=f"{part.label} — {heading(runs, split_keys)}", note=note, runs=runs,
        facets=facets, arms=arms, contrasts=contrasts,
        reference_arms=reference_arms(name, arms) if comparable else {},
        reference_contrasts=reference_contrasts(name, contrasts) if comparable else {},
    )


CHANCE_SE = 2  # an accuracy within this many binomial standard errors of 1/classes is at chance
SMALL_LAST_BATCH = 0.25  # a last training batch under this share of train.batch_size is named


def at_chance(run: pd.Series) -> bool:
    """Whether a run's test accuracy is within noise of guessing: within CHANCE_SE binomial standard
    errors (of its test set's size) of 1/classes."""
    classes, tested, accuracy = run.get("num_classes"), run.get("test_images"), run.get("test_acc")
    if not (_positive(classes) and _positive(tested) and isinstance(accuracy, numbers.Real) and accuracy == accuracy):
        return False
    chance = 1 / classes
    return abs(accuracy - chance) <= CHANCE_SE * math.sqrt(chance * (1 - chance) / tested)


def last_batch(run: pd.Series) -> tuple[int, int] | None:
    """(last training batch, train.batch_size) of a run whose last batch is far smaller than the
    others (under SMALL_LAST_BATCH of them); None otherwise, and for a head fitted on cached features
    (probe_only: optimizer or L-BFGS, it never trains the network). A record from before ``last_batch_size``
    gets it from its training images: the remainder (a remainder of one joins the batch before it)."""
    size, images = run["config"].get("train.batch_size"), run.get("train_images")
    last = run.get("last_batch_size")
    if not _positive(size) or probe_only(run):
        return None
    if not _positive(last):
        if not _positive(images) or images <= size:
            return None
        last = int(images) % size
        if last == 1:
            return None  # merged: one batch of size + 1
    return (int(last), size) if 0 < last < SMALL_LAST_BATCH * size else None


def probe_only(run: pd.Series) -> bool:
    """Whether a run trained only a head on cached features (freeze.cached_features without LP-FT):
    no batch went through the network, so no BatchNorm statistics a small last batch could spoil."""
    config = run["config"]
    return bool(config.get("freeze.cached_features")) and config.get("freeze.unfreeze_at_epoch") is None


def _positive(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and value == value and value > 0


def degenerate_notes(arms: list) -> list[str]:
    """Lines naming the arms whose point says little: every run at chance, or every run with a last
    training batch far smaller than the others (BatchNorm's statistics from a handful of images)."""
    notes = []
    chance = [arm for arm in arms if len(arm.runs) and all(at_chance(run) for _, run in arm.runs.iterrows())]
    if chance:
        shown = ", ".join(f"{arm.label} ({100 * arm.runs['test_acc'].mean():.1f} %, chance "
                          f"{100 / arm.runs['num_classes'].iloc[0]:.1f} %)" for arm in chance)
        notes.append(f"**At chance**: {shown}: within {CHANCE_SE} standard errors of guessing in every run; "
                     "such an arm learnt nothing the test set can tell.")
    small = [(arm, last_batch(arm.runs.iloc[0])) for arm in arms
             if len(arm.runs) and all(last_batch(run) for _, run in arm.runs.iterrows())]
    if small:
        shown = ", ".join(f"{arm.label} ({int(arm.runs['train_images'].iloc[0])} training images in batches of "
                          f"{size}: the last of {last})" for arm, (last, size) in small)
        notes.append(f"**A small last batch**: {shown}; with BatchNorm, a batch of a few images can spoil the "
                     "running statistics and the point (data.fraction or train.batch_size can avoid it).")
    return notes


def _matches(run: pd.Series, settings: dict[str, Any]) -> bool:
    return all(run["config"].get(k) == v for k, v in settings.items())


def reference_arms(name: str, arms: list[Arm]) -> dict[str, dict[str, float]]:
    return {arm.label: values for arm in arms for settings, values in REFERENCE.get(name, [])
            if _matches(arm.runs.iloc[0], settings)}


def reference_contrasts(name: str, contrasts: list[Contrast]) -> dict[tuple, float]:
    """Part A's reference differences, for its pretrained − from scratch contrasts."""
    return {contrast_key(c): value for c in contrasts for settings, value in REFERENCE_DIFFERENCES.get(name, [])
            if c.facet == "init" and c.label == "pretrained − from scratch" and _matches(c.arm.runs.iloc[0], settings)}


# --- headings -----------------------------------------------------------------------------------

SAMPLING_WORDS = {"stratified": "stratified by class", "uniform": "drawn uniformly"}
HEADING_KEYS = {key for facet in FACETS for key in facet.keys} | {
    "data.sampling", "optim.name", "optim.lr", "train.epochs", "data.image_size"}


class Shared:
    """What every run of a group shares: a value, or None where the runs differ."""

    def __init__(self, runs: pd.DataFrame):
        self.runs = runs

    def column(self, name: str) -> Any:
        return self._one(self.runs[name])

    def key(self, key: str) -> Any:
        return self._one(self.runs["config"].map(lambda config: config.get(key)))

    def label(self, facet: str) -> Any:
        return self._one(self.runs.apply(FACET_BY_NAME[facet].label, axis=1))

    @staticmethod
    def _one(values: pd.Series) -> Any:
        distinct = {json.dumps(None if _missing(v) else v, sort_keys=True, default=str) for v in values}
        return None if len(distinct) != 1 or _missing(values.iloc[0]) else values.iloc[0]


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def heading(runs: pd.DataFrame, split_keys: list[str]) -> str:
    """The settings every run of ``runs`` shares, in words: the model, its initialisation, the data
    and how much of it, the freeze strategy, the optimizer and learning rate, epochs and image size,
    then any other setting that sets this group apart from the study's others. What varies is left
    to the table's columns and the figures' legends; the dataset is always named."""
    shared = Shared(runs)
    parts = []
    if (model := shared.column("model")) is not None:
        parts.append(str(model))
    if (init := shared.label("init")) is not None:
        weights = shared.column("init")  # the weights' name, as run.json records it
        parts.append(f"pretrained ({weights})" if init == "pretrained" and weights not in (None, "random") else init)
    parts.append(data_words(runs, shared))
    if (freeze := shared.label("freeze")) is not None:
        frozen = shared.column("frozen")
        if freeze == "none":
            parts.append("all layers train")
        elif freeze in STRATEGIES or freeze.startswith("custom"):
            parts.append(f"freeze={freeze}" + (f" ({frozen} frozen)" if frozen and frozen != "nothing" else ""))
        else:  # in words already: "linear probe, then fine-tune after epoch 5"
            parts.append(freeze)
    optimizer, lr = shared.key("optim.name"), shared.key("optim.lr")
    if optimizer is not None or lr is not None:
        parts.append(" ".join(p for p in (optimizer, None if lr is None else f"lr={display(lr)}") if p))
    if (epochs := shared.key("train.epochs")) is not None:
        parts.append(f"{epochs} epoch{'' if epochs == 1 else 's'}")
    if (size := shared.key("data.image_size")) is not None:
        parts.append(f"{size} px")
    names = short_names(split_keys)
    parts += [f"{names[k]}={display(runs['config'].iloc[0].get(k))}" for k in split_keys if k not in HEADING_KEYS]
    return ", ".join(parts)


def data_words(runs: pd.DataFrame, shared: Shared) -> str:
    """``cifar10, 30 % of the training set (15,000 images, stratified by class)``."""
    text = " or ".join(sorted(set(runs["dataset"])))
    per_class, fraction = shared.column("per_class"), shared.column("fraction")
    amount = (f"{int(per_class)} images per class" if per_class is not None else
              f"{percent_label(fraction)} of the training set" if fraction is not None else None)
    details = []
    if amount and (images := shared.column("train_images")) is not None:
        details.append(f"{int(images):,} images")
    sampling = shared.key("data.sampling")
    if sampling is not None and not runs["per_class"].notna().any():  # K per class says how it was drawn
        details.append(SAMPLING_WORDS.get(sampling, f"sampling={sampling}"))
    if amount:
        text += f", {amount}"
    return text + (f" ({', '.join(details)})" if details else "")


def question_text(group: Group) -> str:
    """What the group compares, read from its contrasts: ``pretrained against from scratch at each
    fraction``."""
    pieces: dict[tuple[str, str], list[Contrast]] = {}
    for c in group.contrasts:
        pieces.setdefault((c.facet, c.baseline.values[c.facet]), []).append(c)
    texts = []
    for (facet, baseline), contrasts in pieces.items():
        values = list(dict.fromkeys(c.arm.values[facet] for c in contrasts))
        held = [f for f in group.facets if f.name != facet and len({c.context.get(f.name) for c in contrasts}) > 1]
        at = f" at each {' and '.join(facet_title(f, group.runs) for f in held)}" if held else ""
        texts.append(f"{', '.join(values)} against {baseline}{at}")
    if not texts:
        return ""
    return "Paired differences (the same seed and subset on both sides): " + "; ".join(texts) + "."
