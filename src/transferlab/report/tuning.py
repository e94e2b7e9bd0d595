"""Fixed learning rate vs tuned per arm: each arm of a study ``<part>-tuned`` (made by `transferlab tune`)
beside the runs of ``<part>`` that differ from it only in the tuned keys, with the values chosen.

The trials (studies ``<part>-tuning``) are kept out of every other table and figure: they were scored
on a validation split, and showing their test accuracies would invite choosing by the test set.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from transferlab.config import Config, as_dict
from transferlab.records import TRIALS_SUFFIX, TUNED_SUFFIX
from transferlab.report.arms import display, short_names, sort_key
from transferlab.report.page import Section, Table
from transferlab.report.reading import IGNORED_KEYS, dataset_identity, dataset_names, flatten, normalised, replicate
from transferlab.report.stats import (
    PERCENT_BOUNDS, POINTS_BOUNDS, exact_accuracy, number_text, paired_difference, summarize,
)
from transferlab.report.studies import PARTS, varying_keys
from transferlab.report.tables import CI, EXCLUDES_ZERO, N, numeric_columns, interval_cell, summary_cell

Run = tuple[Path, dict[str, Any]]
FIXED_ACC, TUNED_ACC, VAL_ACC = "fixed: test acc (%)", "tuned: test acc (%)", "tuned: validation acc (%)"
DIFFERENCE, TRIALS = "tuned − fixed (points)", "trials"


def split_trials(runs: list[Run]) -> tuple[list[Run], list[Run]]:
    """(the runs the report shows, the tuning trials)."""
    trials = [run for run in runs if str(run[1].get("name", "")).endswith(TRIALS_SUFFIX)]
    return [run for run in runs if run not in trials], trials


def tuning_tables(runs: list[Run]) -> list[tuple[str, pd.DataFrame, pd.DataFrame]]:
    """(study, shown, numbers) for each tuned study: a row per arm with its fixed and its tuned setting,
    their test accuracies (mean, std, 95 % interval, n), and tuned minus fixed paired by replicate
    (the same seed and subset seed on both sides)."""
    defaults = flatten(as_dict(Config()))
    names = dataset_names([r for _, r in runs if r["status"] == "completed"])
    completed = [(_settings(r, defaults, names), r) for _, r in runs if r["status"] == "completed"]
    tables = []
    for study in sorted({r["tuning"]["study"] for _, r in completed if isinstance(r.get("tuning"), dict)}):
        tuned = [(c, r) for c, r in completed if r.get("name") == f"{study}{TUNED_SUFFIX}" and r.get("tuning")]
        fixed = [(c, r) for c, r in completed if r.get("name") == study]
        keys = sorted({k for _, r in tuned for k in r["tuning"]["keys"]})

        def arm_of(config: dict[str, Any]) -> str:  # what an arm is: every setting but the tuned ones
            return json.dumps({k: v for k, v in config.items() if k not in keys}, sort_keys=True)

        arms = sorted({arm_of(c) for c, _ in tuned})
        label_keys = varying_keys(pd.Series([json.loads(arm) for arm in arms])) if len(arms) > 1 else ()
        names, tuned_names = short_names(label_keys), short_names(keys)
        rows = []
        for arm in arms:
            config = json.loads(arm)
            here = [r for c, r in tuned if arm_of(c) == arm]
            # Tuned again with more trials, an arm may have an older run with another pick: the largest budget counts.
            here = [r for r in here if r["tuning"].get("trials") == max(r["tuning"].get("trials", 0) for r in here)]
            there = [(c, r) for c, r in fixed if arm_of(c) == arm]
            fixed_acc = {replicate(r): exact_accuracy(r.get("test_acc"), r.get("num_test_images")) for _, r in there}
            tuned_acc = {replicate(r): exact_accuracy(r.get("test_acc"), r.get("num_test_images")) for r in here}
            fixed_summary, tuned_summary = (summarize(fixed_acc.values(), 100.0, PERCENT_BOUNDS),
                                            summarize(tuned_acc.values(), 100.0, PERCENT_BOUNDS))
            val = summarize([r["tuning"].get("best_val_acc") for r in here], 100.0, PERCENT_BOUNDS)
            difference = paired_difference(tuned_acc, fixed_acc, scale=100.0, bounds=POINTS_BOUNDS)
            fixed_values = {k: _values(c.get(k) for c, _ in there) for k in keys}
            tuned_values = {k: _values(r["tuning"]["keys"].get(k) for r in here) for k in keys}
            shown = {
                "arm": ", ".join(f"{names[k]}={display(config.get(k))}" for k in label_keys) or "all",
                **{f"fixed {tuned_names[k]}": _text(fixed_values[k]) for k in keys},
                FIXED_ACC: summary_cell(fixed_summary, 2), "fixed n": fixed_summary.n,
                **{f"tuned {tuned_names[k]}": _text(tuned_values[k]) for k in keys},
                VAL_ACC: summary_cell(val, 2), TUNED_ACC: summary_cell(tuned_summary, 2), "tuned n": tuned_summary.n,
                N: difference.n, DIFFERENCE: number_text(difference.mean, sign=True) if difference.n else "",
                CI: interval_cell(difference) if difference.n else "no replicate on both sides",
                EXCLUDES_ZERO: {True: "yes", False: "no", None: ""}[difference.excludes_zero],
                TRIALS: _text(_values(r["tuning"].get("trials") for r in here)),
            }
            numbers = {
                **{names[k]: config.get(k) for k in label_keys},
                **{f"fixed_{tuned_names[k]}": _number(fixed_values[k]) for k in keys},
                "fixed_test_acc_mean": fixed_summary.mean, "fixed_test_acc_std": fixed_summary.std,
                "fixed_test_acc_ci95_low": fixed_summary.low, "fixed_test_acc_ci95_high": fixed_summary.high,
                "fixed_n": fixed_summary.n,
                **{f"tuned_{tuned_names[k]}": _number(tuned_values[k]) for k in keys},
                "tuned_val_acc_mean": val.mean,
                "tuned_test_acc_mean": tuned_summary.mean, "tuned_test_acc_std": tuned_summary.std,
                "tuned_test_acc_ci95_low": tuned_summary.low, "tuned_test_acc_ci95_high": tuned_summary.high,
                "tuned_n": tuned_summary.n,
                "n": difference.n, "difference_mean": difference.mean, "ci95_low": difference.low,
                "ci95_high": difference.high, "t_p": difference.t_p, "sign_p": difference.sign_p,
                "excludes_zero": difference.excludes_zero,
                "trials": _number(_values(r["tuning"].get("trials") for r in here)),
            }
            rows.append((tuple(sort_key(config.get(k)) for k in label_keys), shown, numbers))
        rows.sort(key=lambda item: item[0])
        tables.append((study, pd.DataFrame([row for _, row, _ in rows]),
                       numeric_columns(pd.DataFrame([number for _, _, number in rows]))))
    return tables


def tuning_sections(runs: list[Run], trials: list[Run]) -> list[Section]:
    """The report's sections on tuning, one per tuned study; none when nothing was tuned."""
    failed = sum(r["status"] != "completed" for _, r in trials)
    return [Section(
        stem=f"{study}-tuned-vs-fixed",
        title=f"{PARTS[study].label if study in PARTS else study} — fixed learning rate vs tuned per arm",
        tables=[Table(f"{study}-tuned-vs-fixed", shown, numbers, caption=(
            "Test accuracy: mean ± standard deviation over each side's n runs. Tuned − fixed in percentage points, "
            "paired by replicate (the same seed and subset seed on both sides; n pairs), with the 95 % t interval "
            "of the mean difference."))],
        note=(f"*Fixed*: the runs of `{study}`, all arms with one setting. *Tuned*: `transferlab tune` chose each "
              f"arm's setting (Optuna, log scale) by the validation accuracy on a held-out share of that arm's "
              f"training subset, then trained on the whole subset (study `{study}{TUNED_SUFFIX}`). The test set "
              f"took no part in the choice. {len(trials)} tuning trial run(s) read ({failed} did not complete); "
              "they are in no other table or figure."),
    ) for study, shown, numbers in tuning_tables(runs)]


def _settings(record: dict[str, Any], defaults: dict[str, Any], names: dict[tuple, str]) -> dict[str, Any]:
    """A run's flat config without the keys that cannot change its result; a key its record lacks
    (the run predates it) has its default, so that older runs still meet their tuned arm, except
    data.sampling: a record without it drew its subset the old, uniform way. data.name is the
    dataset's name in the report (``names``: one per dataset, reading.dataset_names)."""
    own = flatten(record["config"])
    config = normalised({**defaults, **own, "data.sampling": own.get("data.sampling")})
    config["data.name"] = names[dataset_identity(record)]
    return {k: v for k, v in config.items() if k not in IGNORED_KEYS}


def _values(values) -> list:
    """The distinct values in order."""
    return sorted({v for v in values if v is not None}, key=sort_key)


def _text(values: list) -> str:
    """The values, ' / ' between them; '' for none."""
    return " / ".join(f"{v:.3g}" if isinstance(v, float) else display(v) for v in values)


def _number(values: list):
    """The one value (a number stays a number), the values as text where there are several, None for none."""
    return values[0] if len(values) == 1 else _text(values) or None
