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
from transferlab.report.reading import IGNORED_KEYS, flatten
from transferlab.report.studies import PARTS, varying_keys
from transferlab.report.page import Section
from transferlab.report.tables import cell, display, short_names, sort_key
from transferlab.tuning import TRIALS_SUFFIX, TUNED_SUFFIX

Run = tuple[Path, dict[str, Any]]
FIXED_ACC, TUNED_ACC, VAL_ACC = "fixed: test acc (%)", "tuned: test acc (%)", "tuned: validation acc (%)"
DIFFERENCE, TRIALS = "tuned - fixed (points)", "trials"


def split_trials(runs: list[Run]) -> tuple[list[Run], list[Run]]:
    """(the runs the report shows, the tuning trials)."""
    trials = [run for run in runs if str(run[1].get("name", "")).endswith(TRIALS_SUFFIX)]
    return [run for run in runs if run not in trials], trials


def tuning_tables(runs: list[Run]) -> list[tuple[str, pd.DataFrame]]:
    """(study, table) for each tuned study: a row per arm with its fixed and its tuned setting and
    their test accuracies, mean ± std where seeds repeat an arm."""
    defaults = flatten(as_dict(Config()))
    completed = [(_settings(r, defaults), r) for _, r in runs if r["status"] == "completed"]
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
            fixed_acc, tuned_acc = _accuracies([r for _, r in there]), _accuracies(here)
            rows.append((tuple(sort_key(config.get(k)) for k in label_keys), {
                "arm": ", ".join(f"{names[k]}={display(config.get(k))}" for k in label_keys) or "all",
                **{f"fixed {tuned_names[k]}": _values(c.get(k) for c, _ in there) for k in keys},
                FIXED_ACC: cell(100 * fixed_acc, 2),
                **{f"tuned {tuned_names[k]}": _values(r["tuning"]["keys"].get(k) for r in here) for k in keys},
                VAL_ACC: cell(100 * pd.Series([r["tuning"].get("best_val_acc") for r in here], dtype=float), 2),
                TUNED_ACC: cell(100 * tuned_acc, 2),
                DIFFERENCE: "" if fixed_acc.empty else f"{100 * (tuned_acc.mean() - fixed_acc.mean()):.2f}",
                TRIALS: _values(r["tuning"].get("trials") for r in here),
            }))
        tables.append((study, pd.DataFrame([row for _, row in sorted(rows, key=lambda item: item[0])])))
    return tables


def tuning_sections(runs: list[Run], trials: list[Run]) -> list[Section]:
    """The report's sections on tuning, one per tuned study; none when nothing was tuned."""
    failed = sum(r["status"] != "completed" for _, r in trials)
    return [Section(
        stem=f"{study}-tuned-vs-fixed",
        title=f"{PARTS[study].label if study in PARTS else study} — fixed learning rate vs tuned per arm",
        table=table,
        note=(f"*Fixed*: the runs of `{study}`, all arms with one setting. *Tuned*: `transferlab tune` chose each "
              f"arm's setting (Optuna, log scale) by the validation accuracy on a held-out share of that arm's "
              f"training subset, then trained on the whole subset (study `{study}{TUNED_SUFFIX}`). The test set "
              f"took no part in the choice. {len(trials)} tuning trial run(s) read ({failed} did not complete); "
              "they are in no other table or figure."),
    ) for study, table in tuning_tables(runs)]


def _accuracies(records: list[dict[str, Any]]) -> pd.Series:
    return pd.Series([r.get("test_acc") for r in records], dtype=float).dropna()


def _settings(record: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """A run's flat config without the keys that cannot change its result; a key its record lacks
    (the run predates it) has its default, so that older runs still meet their tuned arm."""
    config = {**defaults, **flatten(record["config"])}
    return {k: v for k, v in config.items() if k not in IGNORED_KEYS}


def _values(values) -> str:
    """The distinct values in order, ' / ' between them; '' for none."""
    distinct = sorted({v for v in values if v is not None}, key=sort_key)
    return " / ".join(f"{v:.3g}" if isinstance(v, float) else display(v) for v in distinct)
