"""The tables: one per study, with the study's reference figures (docs/study.md) beside ours where
they apply, and in every table the precision and determinism its runs used."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from transferlab.report.studies import Group

# Table column names; a reference column is named "reference <column>".
ACC, LOSS, SECONDS, IMAGES_PER_SECOND, N = "test acc (%)", "test loss", "seconds per epoch", "images/s", "n"
PER_CLASS, TRAINABLE, RUN_AS = "images per class", "trainable / total params", "precision, determinism"
PRE_ACC, SCRATCH_ACC, DIFFERENCE = "pretrained acc (%)", "scratch acc (%)", "difference (points)"
PRE_LOSS, SCRATCH_LOSS = "pretrained loss", "scratch loss"

# The reference implementation's results (one seed each; docs/study.md): study -> table row -> column -> value.
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
REFERENCE_RUN_AS = "fp32, deterministic"  # how the reference computed: fp32, cuDNN deterministic


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


def per_class(values: pd.Series) -> str:
    """Training images per class: whole numbers with thousands separators, small ones to 3 digits."""
    shown = sorted({f"{v:,.0f}" if v >= 100 else f"{v:.3g}" for v in values.dropna()})
    return " or ".join(shown)


def trainable_params(runs: pd.DataFrame) -> str:
    """Trainable parameters at the start, '→' those after an LP-FT switch."""
    after = runs["params_trainable_after"].dropna()
    return integers(runs["params_trainable"]) + (f" → {integers(after)}" if len(after) else "")


def trainable(runs: pd.DataFrame) -> str:
    return f"{trainable_params(runs)} / {integers(runs['params_total'])}"


def seeds(runs: pd.DataFrame) -> str:
    """n: the distinct seeds behind a cell (a repeated config and seed was already left out)."""
    return str(runs["seed"].nunique())


def by_row(runs: pd.DataFrame):
    return runs.groupby("row", sort=False)


def fraction_table(runs: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for label, at in by_row(runs):
        pre, scratch = at[at["pretrained"]], at[~at["pretrained"]]
        difference = 100 * (pre["test_acc"].mean() - scratch["test_acc"].mean())
        rows.append({
            "fraction": label, PER_CLASS: per_class(at["images_per_class"]),
            PRE_ACC: cell(100 * pre["test_acc"], 2), SCRATCH_ACC: cell(100 * scratch["test_acc"], 2),
            DIFFERENCE: "" if np.isnan(difference) else f"{difference:.2f}",
            PRE_LOSS: cell(pre["test_loss"], 4), SCRATCH_LOSS: cell(scratch["test_loss"], 4),
            N: seeds(pre) if seeds(pre) == seeds(scratch) else f"{seeds(pre)} pretrained, {seeds(scratch)} scratch",
        })
    return pd.DataFrame(rows)


def model_table(runs: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame([{
        "model": label, ACC: cell(100 * at["test_acc"], 2), LOSS: cell(at["test_loss"], 4),
        "params": integers(at["params_total"]), SECONDS: cell(at["epoch_seconds"], 2),
        IMAGES_PER_SECOND: cell(at["images_per_second"], 0), N: seeds(at),
    } for label, at in by_row(runs)])


def strategy_table(runs: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame([{
        "strategy": label, "frozen": at["frozen"].iloc[0],
        ACC: cell(100 * at["test_acc"], 2), LOSS: cell(at["test_loss"], 4),
        TRAINABLE: trainable(at), SECONDS: cell(at["epoch_seconds"], 2), N: seeds(at),
    } for label, at in by_row(runs)])


def sweep_table(runs: pd.DataFrame, keys: tuple[str, ...]) -> pd.DataFrame:
    """A row per setting of ``keys``; a sweep over data.fraction also shows images per class, one
    over freeze settings the trainable parameters."""
    names = short_names(keys)
    by_fraction, by_freeze = "data.fraction" in keys, any(k.startswith("freeze.") for k in keys)
    return pd.DataFrame([{
        **{names[k]: display(at["config"].iloc[0].get(k)) for k in keys},
        **({PER_CLASS: per_class(at["images_per_class"])} if by_fraction else {}),
        ACC: cell(100 * at["test_acc"], 2), LOSS: cell(at["test_loss"], 4),
        **({TRAINABLE: trainable(at)} if by_freeze else {}),
        SECONDS: cell(at["epoch_seconds"], 2), N: seeds(at),
    } for _, at in by_row(runs)])


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


def group_table(group: Group) -> pd.DataFrame:
    """The group's table, with how its runs computed before n, and the reference's figure beside
    each of our columns that has one."""
    table = group.part.table(group.runs)
    table.insert(table.columns.get_loc(N), RUN_AS, [" or ".join(sorted(set(at["run_as"])))
                                                    for _, at in by_row(group.runs)])
    if not group.reference:
        return table
    table.insert(table.columns.get_loc(RUN_AS) + 1, f"reference {RUN_AS}", REFERENCE_RUN_AS)
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
