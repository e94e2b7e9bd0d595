"""The LP-FT comparison (experiment ``lpft``): full fine-tuning, a linear probe, and a linear probe
then full fine-tuning (Kumar et al., ICLR 2022), an arm per strategy, LP-FT compared with both of
its neighbours.

A run's strategy follows from ``freeze.name``, ``freeze.modules`` and ``freeze.unfreeze_at_epoch``
(N: the frozen modules train from epoch N + 1 on)."""

from __future__ import annotations

import pandas as pd

from transferlab.report.arms import Arm, Contrast, by_context, contrast, freeze_label
from transferlab.report.reading import probe_words

FULL, PROBE, LP_FT = "full fine-tuning", "linear probe", "linear probe, then fine-tune after epoch"
THEN_FINE_TUNE = ", then fine-tune after epoch"  # what an LP-FT label holds after its probe's words


def switch_epoch(run: pd.Series) -> int | None:
    """N of an LP-FT run, whose frozen modules train from epoch N + 1 on; None for no switch."""
    return run["config"].get("freeze.unfreeze_at_epoch")


def lpft_label(run: pd.Series) -> str:
    """The study's words: full fine-tuning, linear probe, linear probe, then fine-tune after epoch N;
    any other freeze setting as its preset or modules. A probe on cached features says so:
    ``linear probe (cached features)``."""
    preset, modules, switch = run["config"].get("freeze.name"), run["config"].get("freeze.modules"), switch_epoch(run)
    if modules is None and switch is None and preset in ("none", "last_only"):
        if preset == "none":
            return FULL
        cached = run["config"].get("freeze.cached_features")
        return f"{PROBE} ({probe_words(run['config'].get('freeze.probe'))})" if cached else PROBE
    return freeze_label(run)


def lpft_contrasts(arms: list[Arm]) -> list[Contrast]:
    """Each LP-FT arm against both of its neighbours: full fine-tuning and the linear probe of its
    own kind (in the loop, or on cached features)."""
    contrasts = []
    for _, group in by_context(arms, "freeze"):
        by_label = {arm.values["freeze"]: arm for arm in group}
        for arm in group:
            label = arm.values["freeze"]
            if label.startswith(PROBE) and THEN_FINE_TUNE in label:
                probe = label.split(THEN_FINE_TUNE)[0]
                contrasts += [contrast("freeze", arm, by_label[other]) for other in (FULL, probe) if other in by_label]
    return contrasts


def what_trains(run: pd.Series) -> str:
    """Which parameters train in which epochs, e.g. 'the head in epochs 1–5, everything in 6–10'."""
    config, switch = run["config"], switch_epoch(run)
    epochs = config.get("train.epochs")
    if run["frozen"] == "nothing":
        first = "everything"
    elif config.get("freeze.name") == "last_only" and config.get("freeze.modules") is None:
        first = "the head (on cached features)" if config.get("freeze.cached_features") else "the head"
    else:
        first = f"all but {run['frozen']}"
    if switch is None or switch >= epochs or first == "everything":
        return f"{first} in epochs 1–{epochs}"
    if switch < 1:
        return f"everything in epochs 1–{epochs}"
    return f"{first} in epochs 1–{switch}, everything in {switch + 1}–{epochs}"
