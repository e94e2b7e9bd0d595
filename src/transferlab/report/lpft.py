"""The LP-FT comparison (experiment ``lpft``): full fine-tuning, a linear probe, and a linear probe
then full fine-tuning (Kumar et al., ICLR 2022), a table row per strategy.

A run's strategy follows from ``freeze.name``, ``freeze.modules`` and ``freeze.unfreeze_at_epoch``
(N: the frozen modules train from epoch N + 1 on)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from transferlab.report.tables import ACC, LOSS, N, SECONDS, by_row, cell, integers, seeds, trainable_params


def switch_epoch(run: pd.Series) -> int | None:
    """N of an LP-FT run, whose frozen modules train from epoch N + 1 on; None for no switch."""
    return run["config"].get("freeze.unfreeze_at_epoch")


def lpft_row(run: pd.Series) -> tuple[Any, str]:
    """(sort key, label): full fine-tuning, linear probe, LP-FT by switch epoch, then anything else."""
    preset, modules, switch = run["config"].get("freeze.name"), run["config"].get("freeze.modules"), switch_epoch(run)
    if modules is None and switch is None and preset in ("none", "last_only"):
        return (0 if preset == "none" else 1, 0, ""), "full fine-tuning" if preset == "none" else "linear probe"
    if modules is None and preset == "last_only":
        return (2, switch, ""), f"LP-FT, switch after epoch {switch}"
    return (3, 0, run["strategy"]), run["strategy"]


def what_trains(run: pd.Series) -> str:
    """Which parameters train in which epochs, e.g. 'the head in epochs 1–5, everything in 6–10'."""
    config, switch = run["config"], switch_epoch(run)
    epochs = config.get("train.epochs")
    if run["frozen"] == "nothing":
        first = "everything"
    elif config.get("freeze.name") == "last_only" and config.get("freeze.modules") is None:
        first = "the head"
    else:
        first = f"all but {run['frozen']}"
    if switch is None or switch >= epochs or first == "everything":
        return f"{first} in epochs 1–{epochs}"
    if switch < 1:
        return f"everything in epochs 1–{epochs}"
    return f"{first} in epochs 1–{switch}, everything in {switch + 1}–{epochs}"


def lpft_table(runs: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame([{
        "strategy": label, "what trains when": what_trains(at.iloc[0]),
        ACC: cell(100 * at["test_acc"], 2), LOSS: cell(at["test_loss"], 4),
        "trainable params": trainable_params(at), "total params": integers(at["params_total"]),
        SECONDS: cell(at["epoch_seconds"], 2), N: seeds(at),
    } for label, at in by_row(runs)])
