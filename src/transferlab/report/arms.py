"""Arms and what a study compares: the runs of a group split into arms by the settings that vary,
and the paired differences between arms.

A *facet* is one thing a reader tells runs apart by (the data amount, the model, the initialisation,
the freeze strategy, the learning rate...): a few config keys, a label in the study's own words and a
meaningful order. An *arm* is the runs of a group that share every setting: its *replicates* differ
only in the seed and the subset seed (``repeat`` moves both). A *contrast* is one arm minus another,
paired by replicate (the same seed and subset seed on both sides), with the other facets held fixed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from transferlab import model_names
from transferlab.config import FREEZE_PRESETS
from transferlab.identity import model_implementation
from transferlab.records import shorten
from transferlab.report.reading import strategy_label
from transferlab.report.stats import (
    POINTS_BOUNDS, PERCENT_BOUNDS, Comparison, Summary, exact_accuracy, paired_difference, summarize,
)

STRATEGIES = FREEZE_PRESETS  # most trainable first
SCRATCH = "from scratch"  # the init label of a random initialisation


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


def percent_label(fraction: float) -> str:
    return f"{100 * fraction:g} %"


# --- facets: what a run's label and order are made of ---------------------------------------------

def amount_label(run: pd.Series) -> str:
    """``10 %`` of the training set, or ``5 per class``."""
    if run["per_class"] is not None and not pd.isna(run["per_class"]):
        return f"{int(run['per_class'])} per class"
    return percent_label(run["fraction"]) if run["fraction"] is not None else "null"


def amount_order(run: pd.Series) -> tuple:
    """Fewest training images per class first, so that a study mixing fractions and per-class amounts
    reads in one order (5 per class before 10 %); a fraction whose per-class count is unknown (an
    older record) goes by the fraction, after them."""
    per_class = run["per_class"] is not None and not pd.isna(run["per_class"])
    if per_class:
        return (0, float(run["per_class"]))
    images = run.get("images_per_class")
    if images is not None and not pd.isna(images):
        return (0, float(images))
    return (1, float(run["fraction"] or 0.0))


def init_label(run: pd.Series) -> str:
    """``pretrained`` (torchvision's ImageNet weights), ``pretrained (timm a1_in1k)`` for another
    source, ``weights NAME`` (a weights file by its name: model.weights_name, or what it was trained
    on, ``resnet18 on letters``; a record from before names it by its path, shortened; ``, new head``
    added with model.new_head=true) or ``from scratch``."""
    weights = run["config"].get("model.weights")
    if weights:
        source = run.get("source")
        named = isinstance(source, str) and not source.startswith(("file:", "local-dir:"))
        new_head = ", new head" if run["config"].get("model.new_head") else ""  # model.new_head=true
        return f"weights {source if named else shorten(str(weights))}{new_head}"
    if not run["pretrained"]:
        return "from scratch"
    source = run.get("source")
    return "pretrained" if not isinstance(source, str) or source.startswith("torchvision") else f"pretrained ({source})"


def source_label(run: pd.Series) -> str:
    """The pretraining source alone: ``torchvision IMAGENET1K_V1``, ``timm a1_in1k``; from scratch,
    the implementation it starts from: ``from scratch (torchvision)``, ``from scratch (timm)`` (two
    implementations of one architecture initialise it differently: never one arm)."""
    source = run.get("source")
    label = source if isinstance(source, str) else init_label(run)
    return scratch_label(run) if label == SCRATCH else label


def scratch_label(run: pd.Series) -> str:
    """From scratch, named by the implementation a run (from scratch or not) starts from: ``from
    scratch (torchvision)``, ``from scratch (timm)``; with data.normalize=auto a timm tag gives the
    mean and std, and is named too: ``from scratch (timm/resnet50.a1_in1k)``."""
    model = str(run["model"])
    if model_implementation(model) == "timm" and run["config"].get("data.normalize") == "auto":
        return f"{SCRATCH} ({model})"
    return f"{SCRATCH} ({model_implementation(model)})"


def is_scratch(label: str) -> bool:
    """Whether an init label (init_label's, source_label's) is from scratch."""
    return label == SCRATCH or label.startswith(f"{SCRATCH} ")  # from scratch (timm), from scratch [...]


def architecture_label(run: pd.Series) -> str:
    """The architecture without its source: ``timm/resnet50.a1_in1k`` and ``resnet50`` are both ``resnet50``."""
    return model_names.split(str(run["model"]))[0]


def adapt_facet_label(run: pd.Series) -> str:
    """How a run adapted: the adapter (``LoRA r=8``, ``BitFit``), or without one what its freeze
    left training: ``full fine-tuning`` only where nothing is frozen, ``linear probe`` (freeze=last_only,
    its cached or LP-FT variants in the freeze's words), else ``fine-tuning, early frozen``."""
    label = run.get("adapt")
    label = label if isinstance(label, str) else "full fine-tuning"
    frozen, strategy = run.get("frozen"), run.get("strategy")
    if label != "full fine-tuning" or frozen in (None, "nothing") or not isinstance(strategy, str):
        return label
    if strategy.startswith("linear probe"):
        return strategy
    if strategy.startswith("last_only"):
        return "linear probe" + strategy.removeprefix("last_only")
    return f"fine-tuning, {strategy} frozen"


def adapt_order(run: pd.Series) -> tuple:
    """Full fine-tuning first (the baseline), then the adapters by their trainable parameters, most first."""
    label = adapt_facet_label(run)
    trainable = trainable_epochs(run)
    return (label != "full fine-tuning", -trainable if trainable == trainable else 0.0, label)


def init_order(run: pd.Series) -> tuple:
    return (0 if init_label(run) == "pretrained" else 2 if init_label(run) == "from scratch" else 1, init_label(run))


def freeze_label(run: pd.Series) -> str:
    config = run["config"]
    return strategy_label(config.get("freeze.name"), config.get("freeze.modules"),
                          config.get("freeze.unfreeze_at_epoch"), config.get("freeze.cached_features"),
                          config.get("freeze.probe"))


def trainable_epochs(run: pd.Series) -> float:
    """Trainable parameters averaged over the epochs (an LP-FT run trains its head alone until its
    switch, everything after); nan where the record does not count them."""
    before, after = run["params_trainable"], run["params_trainable_after"]
    switch, epochs = run["config"].get("freeze.unfreeze_at_epoch"), run["config"].get("train.epochs")
    if before is None or pd.isna(before):
        return float("nan")
    if switch is None or after is None or pd.isna(after) or not epochs:
        return float(before)
    return (switch * before + (epochs - switch) * after) / epochs


def freeze_order(run: pd.Series) -> tuple:
    """Most trainable parameters first (full fine-tuning, then less and less), the presets' own
    order where the counts tie or are missing."""
    trainable = trainable_epochs(run)
    preset = run["config"].get("freeze.name")
    preset_order = STRATEGIES.index(preset) if preset in STRATEGIES else len(STRATEGIES)
    return (-trainable if trainable == trainable else 0.0, preset_order, freeze_label(run))


def model_order(run: pd.Series) -> tuple:
    total = run["params_total"]
    return (float(total) if total is not None and not pd.isna(total) else 0.0, str(run["model"]))


@dataclass(frozen=True)
class Facet:
    """Settings a reader tells runs apart by: its config keys, its column heading and legend title,
    a run's label in the study's own words and its place in a meaningful order."""

    name: str
    keys: tuple[str, ...]
    label: Callable[[pd.Series], str]
    order: Callable[[pd.Series], tuple]
    baseline: str | None = None  # the label each other value is compared with; None: the first in order


FACETS = (  # in the order of table columns
    Facet("data", ("data.name",), lambda run: run["dataset"], lambda run: (run["dataset"],)),
    Facet("data amount", ("data.fraction", "data.per_class"), amount_label, amount_order),
    Facet("model", ("model.name",), lambda run: str(run["model"]), model_order),
    Facet("init", ("model.pretrained", "model.weights", "model.new_head"), init_label, init_order,
          baseline="from scratch"),
    Facet("freeze", ("freeze.name", "freeze.modules", "freeze.unfreeze_at_epoch", "freeze.cached_features",
                     "freeze.probe"), freeze_label, freeze_order),
    Facet("how adapted", ("adapt.name", "adapt.rank", "adapt.alpha", "adapt.dropout", "adapt.target_modules"),
          adapt_facet_label, adapt_order, baseline="full fine-tuning"),
)
FACET_OF_KEY = {key: facet for facet in FACETS for key in facet.keys}
FACET_BY_NAME = {facet.name: facet for facet in FACETS}


def key_facet(key: str) -> Facet:
    """The facet of a config key: one of FACETS, or the key alone (``lr``, ``batch_size``...)."""
    if key in FACET_OF_KEY:
        return FACET_OF_KEY[key]
    name = short_names([key])[key]
    return Facet(name, (key,), lambda run: display(run["config"].get(key)),
                 lambda run: (sort_key(run["config"].get(key)),))


def facets_of(keys) -> tuple[Facet, ...]:
    """The facets of ``keys``, each once, in FACETS' order then the keys' own."""
    found: dict[str, Facet] = {}
    for key in keys:
        facet = key_facet(key)
        found.setdefault(facet.name, facet)
    known = [f for f in FACETS if f.name in found]
    return (*known, *(f for name, f in found.items() if f not in known))


def facet_title(facet: Facet, runs: pd.DataFrame) -> str:
    """A facet's column heading: the data amount is ``fraction`` or ``per class`` where the runs use one."""
    if facet.name != "data amount":
        return facet.name
    per_class = runs["per_class"].notna()
    return "per class" if per_class.all() else "fraction" if not per_class.any() else "data amount"


# --- arms and contrasts ---------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)  # compared by identity: an arm holds a DataFrame
class Arm:
    """The runs of a group that share every setting; their replicates differ in seed and subset seed."""

    values: dict[str, str]  # facet name -> label
    order: tuple
    runs: pd.DataFrame

    @property
    def label(self) -> str:
        return ", ".join(self.values.values()) or "these runs"

    def accuracy(self) -> Summary:
        return summarize(self.runs["test_acc"], scale=100.0, bounds=PERCENT_BOUNDS)


@dataclass(frozen=True, eq=False)
class Contrast:
    """``arm - baseline`` of one facet, paired by replicate, the other facets held at ``context``."""

    facet: str
    arm: Arm
    baseline: Arm
    context: dict[str, str]  # facet name -> label of the facets held fixed
    result: Comparison
    pairs: tuple[tuple[int, int], ...]  # the replicates (seed, subset seed) on both sides

    @property
    def label(self) -> str:
        return f"{self.arm.values[self.facet]} − {self.baseline.values[self.facet]}"


def make_arms(runs: pd.DataFrame, facets: tuple[Facet, ...],
              labels: dict[str, Callable[[pd.Series], str]] | None = None) -> list[Arm]:
    """``runs`` split into arms by the labels of ``facets`` (``labels``: a facet's own wording in a
    study), in order."""
    labels = labels or {}
    keys = [key for facet in facets for key in facet.keys]
    arms: dict[tuple, Arm] = {}
    for index, run in runs.iterrows():
        values = {f.name: labels.get(f.name, f.label)(run) for f in facets}
        # An arm's runs share every setting: labels that read alike never pool two (arm_settings).
        key = (*values.values(), arm_settings(run, keys))
        if key not in arms:
            arms[key] = Arm(values, tuple(f.order(run) for f in facets), runs.loc[[index]])
        else:
            arm = arms[key]
            arms[key] = Arm(arm.values, arm.order, pd.concat([arm.runs, runs.loc[[index]]]))
    ordered = sorted(told_apart(list(arms.values()), facets), key=lambda arm: arm.order)
    return [Arm(arm.values, arm.order, arm.runs.sort_values(["seed", "subset_seed", "path"])) for arm in ordered]


def exact_by_replicate(arm: Arm) -> dict:
    """Replicate -> test accuracy as correct / test images, exactly, where the record counts its test images."""
    runs = arm.runs
    images = runs["test_images"] if "test_images" in runs else [None] * len(runs)
    return {r: exact_accuracy(acc, n) for r, acc, n in zip(runs["replicate"], runs["test_acc"], images)}


def arm_settings(run: pd.Series, keys: list[str]) -> str:
    return json.dumps({key: run["config"].get(key) for key in keys}, sort_keys=True, default=str)


def told_apart(arms: list[Arm], facets: tuple[Facet, ...]) -> list[Arm]:
    """``arms``, where two have one label but other settings, each with the settings that tell them
    apart added to the label of their facet (``from scratch [model.name=timm/resnet18]``)."""
    by_label: dict[str, list[Arm]] = {}
    for arm in arms:
        by_label.setdefault(arm.label, []).append(arm)
    apart = []
    for same in by_label.values():
        if len(same) == 1:
            apart += same
            continue
        keys = [key for facet in facets for key in facet.keys]
        settings = [json.loads(arm_settings(arm.runs.iloc[0], keys)) for arm in same]
        differ = [key for key in keys if len({json.dumps(s.get(key), default=str) for s in settings}) > 1]
        for arm, own in zip(same, settings):
            values = dict(arm.values)
            for facet in (f for f in facets if any(key in f.keys for key in differ)):
                told = ", ".join(f"{key}={display(own.get(key))}" for key in differ if key in facet.keys)
                values[facet.name] = f"{values[facet.name]} [{told}]"
            apart.append(Arm(values, arm.order, arm.runs))
    return apart


def contrast(facet: str, arm: Arm, baseline: Arm) -> Contrast:
    a, b = exact_by_replicate(arm), exact_by_replicate(baseline)
    result = paired_difference(a, b, scale=100.0, bounds=POINTS_BOUNDS)
    pairs = tuple(sorted(k for k in a.keys() & b.keys() if _finite(a[k]) and _finite(b[k])))
    context = {name: value for name, value in arm.values.items() if name != facet}
    return Contrast(facet, arm, baseline, context, result, pairs)


def against_baseline(arms: list[Arm], facet: Facet) -> list[Contrast]:
    """Each value of ``facet`` against its baseline (``facet.baseline``, else the first value in
    order), at each setting of the other facets."""
    contrasts = []
    for context, group in by_context(arms, facet.name):
        values = [arm.values[facet.name] for arm in group]
        wanted = facet.baseline if facet.baseline in values else values[0]
        [baseline] = [arm for arm in group if arm.values[facet.name] == wanted]
        contrasts += [contrast(facet.name, arm, baseline) for arm in group if arm is not baseline]
    return contrasts


def all_pairs(arms: list[Arm], facet: Facet) -> list[Contrast]:
    """Each value of ``facet`` against each earlier one (later minus earlier), at each setting of the others."""
    return [contrast(facet.name, later, earlier) for _, group in by_context(arms, facet.name)
            for i, earlier in enumerate(group) for later in group[i + 1:]]


def by_context(arms: list[Arm], facet: str) -> list[tuple[tuple, list[Arm]]]:
    """The arms grouped by the labels of every facet but ``facet``, in arm order."""
    groups: dict[tuple, list[Arm]] = {}
    for arm in arms:
        groups.setdefault(tuple((k, v) for k, v in arm.values.items() if k != facet), []).append(arm)
    return list(groups.items())


def _finite(value) -> bool:
    return value is not None and not pd.isna(value)


def replicates_vary(replicates) -> str:
    """What the replicates differ in: ``seed``, ``subset``, ``seed and subset``; '' for one or none."""
    replicates = list(replicates)
    seeds, subsets = {r[0] for r in replicates}, {r[1] for r in replicates}
    varies = [what for what, values in (("seed", seeds), ("subset", subsets)) if len(values) > 1]
    return " and ".join(varies)


def replicates_text(arms: list[Arm]) -> str:
    """A line saying what the replicates of these arms vary: the seed, the subset, or both."""
    replicates = [r for arm in arms for r in arm.runs["replicate"]]
    counts = sorted({len(arm.runs) for arm in arms})
    seeds = _listed(sorted({r[0] for r in replicates}))
    subsets = _listed(sorted({r[1] for r in replicates}))
    if counts == [1]:
        return f"One run per arm (seed {seeds}, subset seed {subsets}): no replicates, so no intervals."
    n = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
    varies = replicates_vary(r for arm in arms for r in arm.runs["replicate"] if len(arm.runs) > 1)
    if varies == "seed":
        what = f"the seed ({seeds}) on one training subset (subset seed {subsets})"
    elif varies == "subset":
        what = f"the training subset (subset seeds {subsets}) with one seed ({seeds})"
    elif varies:
        what = f"both the seed ({seeds}) and the training subset (subset seeds {subsets})"
    else:
        what = f"nothing recorded (seed {seeds}, subset seed {subsets})"
    return f"Replicates: {n} runs per arm, differing in {what}."


def _listed(values: list[int]) -> str:
    if len(values) > 3 and values == list(range(values[0], values[-1] + 1)):
        return f"{values[0]}–{values[-1]}"
    return ", ".join(str(v) for v in values)
