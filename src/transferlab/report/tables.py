"""The tables of a group: its arms (mean, standard deviation, 95 % interval of the mean and n of
each) and its comparisons (paired differences with their intervals), each twice: as tidy numbers for
the CSV (accuracies in percent, differences in percentage points) and formatted for Markdown, with
the study's reference figures (docs/study.md) beside ours where they apply, and in every arm table
the precision and determinism its runs used.

CSV columns (docs/report.md): the settings that vary (one column per config key, as the runs set
it), then ``test_acc_mean, test_acc_std, test_acc_ci95_low, test_acc_ci95_high, n`` and the rest;
a comparison CSV has ``compared, arm, baseline, n, difference_mean, ci95_low, ci95_high,
excludes_zero, t_p, sign_p, holm_t_p`` (the interval is Student's t, the only one whose simulated
coverage holds at 3 to 30 pairs: report/stats.py).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from transferlab.report.arms import (
    Contrast, display, facet_title, percent_label, replicates_vary, short_names, sort_key,
)
from transferlab.report.lpft import what_trains
from transferlab.report.stats import (
    LOSS_BOUNDS, NO_INTERVAL, NO_SPREAD_PAIRS, NO_SPREAD_RUNS, Comparison, Summary, finite, holm, interval_text,
    MOST_PAIRS, number_text, p_text, power_pairs, summarize,
)
from transferlab.report.testset import compare, missing_reasons, per_class_accuracy

if TYPE_CHECKING:
    from transferlab.report.studies import Group

__all__ = ["ACC", "LOSS", "N", "cell", "csv_text", "display", "markdown_table", "percent_label", "short_names",
           "sort_key"]

# Markdown column names; a reference column is named "reference <column>".
ACC, CI, LOSS, SECONDS, IMAGES_PER_SECOND, N = ("test acc (%)", "95 % CI", "test loss", "seconds per epoch",
                                               "images/s", "n")
PER_CLASS, TRAIN_IMAGES, TRAINABLE, RUN_AS = ("images per class", "training images", "trainable / total params",
                                              "precision, determinism")
DIFFERENCE, EXCLUDES_ZERO = "difference (points)", "t CI excludes 0"
T_P, SIGN_P, HOLM_P = "p (paired t)", "p (sign test)", "Holm p (t, this table)"
TEST_CI, MCNEMAR_P, BOTH_CI = ("test-set 95 % CI (bootstrap over images)", "p (McNemar, one pair)",
                               "seeds + test set 95 % CI")
FEATURE_SECONDS = "feature seconds"  # a cached probe's, beside its training time
NO_PAIRS = "no replicate on both sides"
# Reference metric -> (our Markdown column, the column it follows, its CSV column, digits); the
# reference accuracy follows our mean, interval and n.
REFERENCE_COLUMNS = {"test_acc": (ACC, N, "reference_test_acc", 2), "test_loss": (LOSS, LOSS, "reference_test_loss", 4),
                     "epoch_seconds": (SECONDS, SECONDS, "reference_seconds_per_epoch", 2)}


def cell(values: pd.Series, digits: int) -> str:
    """mean ± standard deviation of the finite values; the value alone for one; '' for none."""
    return summary_cell(summarize(values), digits)


def summary_cell(summary: Summary, digits: int) -> str:
    if summary.n == 0:
        return ""
    if summary.n == 1:
        return f"{summary.mean:.{digits}f}"
    return f"{summary.mean:.{digits}f} ± {summary.std:.{digits}f}"


def interval_cell(summary_or_comparison) -> str:
    """The 95 % interval; ``n=1: no interval`` for one value, never an interval the data cannot support."""
    if summary_or_comparison.n == 0:
        return ""
    if summary_or_comparison.n == 1:
        return NO_INTERVAL
    if math.isnan(summary_or_comparison.low):  # n >= 2 equal values
        return NO_SPREAD_PAIRS if isinstance(summary_or_comparison, Comparison) else NO_SPREAD_RUNS
    return interval_text(summary_or_comparison.low, summary_or_comparison.high)


def integers(values: pd.Series) -> str:
    return " or ".join(f"{int(v):,}" for v in sorted(set(finite(values))))


def per_class(runs: pd.DataFrame) -> str:
    """Training images per class as the records count them: ``50``, or ``48–52`` where classes (or
    replicates) differ; ``≈13.5`` (the mean) for records without per-class counts."""
    fewest, most = finite(runs["images_per_class_min"]), finite(runs["images_per_class_max"])
    if len(fewest) == len(runs) and len(runs):
        low, high = int(fewest.min()), int(most.max())
        return f"{low:,}" if low == high else f"{low:,}–{high:,}"
    means = sorted(set(finite(runs["images_per_class"])))
    return " or ".join(f"≈{v:,.0f}" if v >= 100 else f"≈{v:.3g}" for v in means)


def trainable_params(runs: pd.DataFrame) -> str:
    """Trainable parameters at the start, '→' those after an LP-FT switch."""
    after = runs["params_trainable_after"].dropna()
    return integers(runs["params_trainable"]) + (f" → {integers(after)}" if len(after) else "")


def _one(values: pd.Series) -> Any:
    """The value all of ``values`` share (as a number where it is one), else nan."""
    distinct = set(values.dropna())
    return next(iter(distinct)) if len(distinct) == 1 else math.nan


def _mean(values: pd.Series) -> float:
    kept = finite(values)
    return float(kept.mean()) if len(kept) else math.nan


def _raw(value: Any) -> Any:
    """A config value as a CSV cell: numbers and booleans as they are, lists as text, null empty."""
    if value is None:
        return None
    return display(value) if isinstance(value, (list, dict)) else value


def _swept_keys(group: Group) -> list[str]:
    return [k for f in group.facets for k in f.keys
            if len({repr(run.config.get(k)) for run in group.runs.itertuples()}) > 1]


def _varies(group: Group, name: str) -> bool:
    return any(f.name == name for f in group.facets)


def arm_tables(group: Group) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(shown, numbers): a row per arm, in order."""
    keys = _swept_keys(group)
    names = short_names(keys)
    by_amount, by_model, by_freeze = (_varies(group, n) for n in ("data amount", "model", "freeze"))
    by_freeze = by_freeze or _varies(group, "how adapted")  # an adapter's table: what trains, as freeze's
    cached_probes = "feature_seconds" in group.runs and len(finite(group.runs["feature_seconds"])) > 0
    shown, numbers = [], []
    for arm in group.arms:
        runs, accuracy, loss = arm.runs, arm.accuracy(), summarize(arm.runs["test_loss"], bounds=LOSS_BOUNDS)
        first = runs.iloc[0]
        reference = group.reference_arms.get(arm.label, {})
        row = {facet_title(f, group.runs): arm.values[f.name] for f in group.facets}
        if by_amount:
            row |= {TRAIN_IMAGES: integers(runs["train_images"]), PER_CLASS: per_class(runs)}
        if by_model:
            row["params"] = integers(runs["params_total"])
        if by_freeze:
            row["frozen"] = frozen_cell(first)
            if group.name == "lpft":
                row["what trains when"] = what_trains(first)
            row[TRAINABLE] = f"{trainable_params(runs)} / {integers(runs['params_total'])}"
        row |= {ACC: summary_cell(accuracy, 2), CI: interval_cell(accuracy), N: accuracy.n,
                LOSS: summary_cell(loss, 4), SECONDS: cell(runs["epoch_seconds"], 2)}
        if cached_probes:
            row[FEATURE_SECONDS] = feature_cell(runs)
        if by_model:
            row[IMAGES_PER_SECOND] = cell(runs["images_per_second"], 0)
        row[RUN_AS] = " or ".join(sorted(set(runs["run_as"])))
        if group.reference_arms:
            row = _with_reference(row, reference)
        shown.append(row)

        number = {names[k]: _raw(first["config"].get(k)) for k in keys}
        number |= {"test_acc_mean": accuracy.mean, "test_acc_std": accuracy.std, "test_acc_ci95_low": accuracy.low,
                   "test_acc_ci95_high": accuracy.high, "n": accuracy.n,
                   "test_loss_mean": loss.mean, "test_loss_std": loss.std}
        if by_amount:
            number |= {"train_images": _mean(runs["train_images"]),
                       "images_per_class_min": _min(runs["images_per_class_min"]),
                       "images_per_class_max": _max(runs["images_per_class_max"])}
        if by_model or by_freeze:
            number |= {"params_total": _one(runs["params_total"])}
        if by_freeze:
            number |= {"params_trainable": _one(runs["params_trainable"]),
                       "params_trainable_after": _one(runs["params_trainable_after"]), "frozen": first["frozen"]}
        number |= {"seconds_per_epoch_mean": _mean(runs["epoch_seconds"]),
                   "images_per_second_mean": _mean(runs["images_per_second"]),
                   "precision_determinism": row[RUN_AS], "replicates_vary": replicates_vary(runs["replicate"])}
        if cached_probes:
            number |= {"feature_seconds_mean": _mean(runs["feature_seconds"])}
        if group.reference_arms:
            number |= {csv_name: reference.get(metric, math.nan)
                       for metric, (_, _, csv_name, _) in REFERENCE_COLUMNS.items()}
        numbers.append(number)
    return pd.DataFrame(shown), numeric_columns(pd.DataFrame(numbers))


# What an adapter freezes on top of freeze's modules (the record's frozen_modules name only those).
ADAPTER_FROZEN = {"LoRA": "all but the LoRA adapters and the head", "BitFit": "all but biases, norms and the head"}


def frozen_cell(run: pd.Series) -> str:
    """The frozen column: freeze's modules, and for an adapter what it leaves frozen besides."""
    adapter = next((words for name, words in ADAPTER_FROZEN.items() if str(run.get("adapt")).startswith(name)), None)
    if adapter is None:
        return run["frozen"]
    return adapter if run["frozen"] in (None, "nothing") else f"{run['frozen']}; in the rest, {adapter}"


def feature_cell(runs: pd.DataFrame) -> str:
    """A cached probe's seconds to extract its features (or read them from the cache), mean ± std,
    and which of the two its runs did; '' for an arm without a cached probe."""
    seconds = cell(runs["feature_seconds"], 2)
    built = set(runs["feature_cache_built"].dropna())
    how = {frozenset({True}): "extracted", frozenset({False}): "read from the cache"}.get(frozenset(built),
                                                                                        "extracted or read")
    return f"{seconds} ({how})" if seconds else ""


def _min(values: pd.Series) -> float:
    kept = finite(values)
    return float(kept.min()) if len(kept) == len(values) and len(kept) else math.nan


def _max(values: pd.Series) -> float:
    kept = finite(values)
    return float(kept.max()) if len(kept) == len(values) and len(kept) else math.nan


def _with_reference(row: dict[str, Any], reference: dict[str, float]) -> dict[str, Any]:
    """``row`` with the reference's value after each of our columns that has one, and how the reference computed."""
    out = {}
    for column, value in row.items():
        out[column] = value
        for metric, (ours, after, _, digits) in REFERENCE_COLUMNS.items():
            if column == after:
                out[f"reference {ours}"] = f"{reference[metric]:.{digits}f}" if metric in reference else ""
        if column == RUN_AS:
            out[f"reference {RUN_AS}"] = REFERENCE_RUN_AS
    return out


REFERENCE_RUN_AS = "fp32, deterministic"  # how the reference computed: fp32, cuDNN deterministic


def power_heading(min_difference: float | None) -> str:
    at = "the observed difference" if min_difference is None else f"{min_difference:g} points"
    return f"pairs for 80 % power at {at}"


def contrast_tables(group: Group, min_difference: float | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(shown, numbers): a row per comparison the group makes, arm minus baseline in points; the
    pairs that would resolve ``min_difference`` points (else the observed difference) with 80 % power."""
    keys = _swept_keys(group)
    names = short_names(keys)
    shown, numbers = [], []
    adjusted = holm([c.result.t_p for c in group.contrasts])  # over the comparisons of this section
    for c, holm_p in zip(group.contrasts, adjusted):
        result = c.result
        reference = group.reference_of(c)
        row = {facet_title(f, group.runs): c.label if f.name == c.facet else c.arm.values[f.name]
               for f in group.facets}
        row |= {N: result.n, DIFFERENCE: "" if result.n == 0 else number_text(result.mean, sign=True),
                CI: NO_PAIRS if result.n == 0 else interval_cell(result),
                EXCLUDES_ZERO: {True: "yes", False: "no", None: ""}[result.excludes_zero],
                T_P: p_text(result.t_p), SIGN_P: p_text(result.sign_p), HOLM_P: p_text(holm_p)}
        tested = compare(c.arm.runs, c.baseline.runs, c.pairs)
        row |= {TEST_CI: interval_text(tested.low, tested.high), MCNEMAR_P: p_text(tested.mcnemar_p),
                BOTH_CI: interval_text(tested.both_low, tested.both_high)}
        target = result.mean if min_difference is None else min_difference
        pairs_needed = power_pairs(result.std, target)
        row[power_heading(min_difference)] = ("" if math.isnan(pairs_needed) else f"> {MOST_PAIRS:,}"
                                              if math.isinf(pairs_needed) else f"{pairs_needed:,.0f}")
        if group.reference_contrasts:
            row[f"reference {DIFFERENCE}"] = "" if reference is None else number_text(reference, sign=True)
        shown.append(row)

        facet_keys = next(f.keys for f in group.facets if f.name == c.facet)
        config = c.arm.runs.iloc[0]["config"]
        number = {names[k]: None if k in facet_keys else _raw(config.get(k)) for k in keys}
        number |= {"compared": c.facet, "arm": c.arm.values[c.facet], "baseline": c.baseline.values[c.facet],
                   "n": result.n, "difference_mean": result.mean, "ci95_low": result.low, "ci95_high": result.high,
                   "excludes_zero": result.excludes_zero, "t_p": result.t_p, "sign_p": result.sign_p,
                   "holm_t_p": holm_p, "test_ci95_low": tested.low, "test_ci95_high": tested.high,
                   "mcnemar_p": tested.mcnemar_p, "seeds_and_test_ci95_low": tested.both_low,
                   "seeds_and_test_ci95_high": tested.both_high, "test_images": tested.images or math.nan,
                   "power_target": abs(target) if result.n else math.nan, "pairs_for_80_power": pairs_needed,
                   "replicates_vary": replicates_vary(c.pairs)}
        if group.reference_contrasts:
            number["reference_difference"] = math.nan if reference is None else reference
        numbers.append(number)
    return pd.DataFrame(shown), numeric_columns(pd.DataFrame(numbers))


def numeric_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Columns of numbers (with empty cells) as floats, not objects."""
    for column in frame.columns:
        values = frame[column].dropna()
        if len(values) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            if frame[column].isna().any() or any(isinstance(v, float) for v in values):
                frame[column] = frame[column].astype(float)
    return frame


def arm_caption(group: Group) -> str:
    return (f"{group.replicates} Accuracy: mean ± standard deviation over the n runs of each arm, "
            "and the 95 % interval of the mean (Student's t).")


def contrast_caption(group: Group) -> str:
    return ("Differences in percentage points (arm − baseline), paired by replicate: n pairs with the same seed "
            "and subset on both sides, each from the runs' correct counts. 95 % CI: Student's t over the paired "
            "differences (a bootstrap interval covers too seldom at these n: docs/report.md). p: the paired t test "
            "and the exact sign test (no normality assumed; it cannot go below 0.0625 with 5 pairs); Holm p: the t "
            f"test's p adjusted for the {len(group.contrasts)} comparisons of this table. From the runs' per-image "
            "test predictions: the test set's own interval (a paired bootstrap over the test images; McNemar's "
            "exact test for one pair) and, from 2 pairs, the interval over seeds and test images together (t with "
            "both variance components). Pairs for 80 % power: how many pairs a paired t test at 0.05 needs to "
            "detect that difference 4 times in 5, were the pairs' spread what these pairs show." + testset_note(group))


def testset_note(group: Group, lead: str = "Test-set columns empty where a side has") -> str:
    """`` Test-set columns empty where a side has 1 run(s): no predictions.npz ...`` where runs of the
    group have no usable predictions, each reason once."""
    reasons = missing_reasons(group.runs)
    return f" {lead} {'; '.join(reasons)}." if reasons else ""


def per_class_tables(group: Group) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """(shown, numbers): per arm, the test accuracy of each class (%, mean over the arm's runs with
    predictions) and those runs' count; None where no run has predictions."""
    found = [(arm, per_class_accuracy(arm.runs)) for arm in group.arms]
    if all(result is None for _, result in found):
        return None
    width = max(len(result[0]) for _, result in found if result is not None)
    names = next((list(c) for c in group.runs["classes"] if isinstance(c, list) and len(c) >= width), None)
    names = names or [f"class {i}" for i in range(width)]
    shown, numbers = [], []
    for arm, result in found:
        row = {facet_title(f, group.runs): arm.values[f.name] for f in group.facets} or {"arm": arm.label}
        accuracies = result[0] if result is not None else [math.nan] * width
        runs = result[1] if result is not None else 0
        shown.append(row | {"runs with predictions": runs}
                     | {names[i]: "" if math.isnan(v) else f"{v:.1f}" for i, v in enumerate(accuracies)})
        numbers.append(row | {"n": runs} | {names[i]: float(v) for i, v in enumerate(accuracies)})
    return pd.DataFrame(shown), numeric_columns(pd.DataFrame(numbers))


def markdown_table(table: pd.DataFrame) -> str:
    def line(cells) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(table.columns), line(["---"] * len(table.columns)),
                      *(line(row) for row in table.itertuples(index=False))]) + "\n"


# Columns that count things (images, parameters): whole numbers in the CSV, also where a missing
# value would otherwise make pandas store them as floats (50, not 50.0).
COUNT_COLUMNS = ("n", "pairs_for_80_power", "per_class", "train_images", "images_per_class_min",
                 "images_per_class_max", "params_total", "params_trainable", "params_trainable_after")


def csv_text(table: pd.DataFrame) -> str:
    """The table as CSV: floats to 10 significant digits (80.0, not 80.00000000000001; a float column
    keeps its decimal point, so that a reader reads it as floats), counts as whole numbers, empty
    where there is none."""
    table = table.copy()
    for column in table.columns:
        if table[column].dtype != float:
            continue
        values = table[column].dropna()
        if column in COUNT_COLUMNS and np.isfinite(values).all() and (values == values.round()).all():
            table[column] = table[column].astype("Int64")
        else:
            table[column] = table[column].map(lambda v: float(f"{v:.10g}"))
    return table.to_csv(index=False, lineterminator="\n")
