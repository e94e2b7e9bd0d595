"""Run records written by hand for the report's tests, in run.json's shape, and the report run on them.

A record is the real config composed with some overrides, with made-up results: fast, and each test
names the one thing it varies. Keys the data contract adds (data.sampling, data.per_class, repeat,
subset_seed, train_images_per_class) are set here explicitly, so that the tests read the same on a
branch whose config has them and on one whose config does not.
"""

from __future__ import annotations

import csv
import functools
import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from transferlab import report

# Trainable parameters of ResNet18 with a 10-class head, by freeze preset (counted by real runs).
TRAINABLE = {"none": 11_181_642, "early": 10_508_106, "middle": 8_556_362, "last_only": 5_130}
FROZEN = {"none": [], "early": ["layer1", "layer2"], "middle": ["layer2", "layer3"],
          "last_only": ["conv1", "bn1", "layer1", "layer2", "layer3", "layer4"]}


@functools.cache
def _config_json(overrides: tuple[str, ...]) -> str:
    from transferlab.config import as_dict
    from transferlab.composition import compose_config

    return json.dumps(as_dict(compose_config(list(overrides))))


def hand_record(*overrides: str, seed: int = 42, test_acc: float = 0.5, test_loss: float = 1.0,
                finished_at: str = "2026-01-01T10:00:00+00:00", keys: dict | None = None,
                sampling: str | None = "stratified", **fields) -> dict:
    """A completed record of the real config composed with ``overrides`` (``keys``: dotted config
    keys set afterwards, e.g. one that another branch adds; ``sampling``: data.sampling, None for a
    record from before it), with made-up results."""
    config = json.loads(_config_json(overrides))
    config["data"].pop("sampling", None)
    for key, value in {**({"data.sampling": sampling} if sampling else {}), **(keys or {})}.items():
        *parents, leaf = key.split(".")
        node = config
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    config["seed"] = seed
    epochs = config["train"]["epochs"]
    history = [{"epoch": e, "train_loss": 2.0 / e, "train_acc": test_acc * e / epochs, "test_loss": test_loss,
                "test_acc": test_acc * e / epochs, "epoch_seconds": 10.0, "eval_seconds": 1.0,
                "images_per_second": 100.0} for e in range(1, epochs + 1)]
    preset = config["freeze"]["name"]
    record = {
        "status": "completed", "name": config["name"], "model": config["model"]["name"],
        "pretrained": config["model"]["pretrained"], "data": config["data"]["name"],
        "dataset": config["data"]["name"], "fraction": config["data"]["fraction"],
        "image_size": config["data"]["image_size"], "freeze": preset, "frozen_modules": FROZEN[preset],
        "seed": seed, "config": config, "num_classes": 10, "classes": [f"class {i}" for i in range(10)],
        "params_total": 11_181_642, "params_trainable": TRAINABLE[preset],
        "num_train_images": round(50_000 * config["data"]["fraction"]), "num_test_images": 10_000,
        "history": history, "test_acc": test_acc, "test_loss": test_loss, "device": "cpu", "precision": "fp32",
        "started_at": "2026-01-01T09:00:00+00:00", "finished_at": finished_at,
    }
    record.update(fields)
    return record


def write_record(folder: Path, record: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "run.json").write_text(json.dumps(record, indent=2))
    return folder / "run.json"


def make_report(tmp_path: Path, records: dict[str, dict], capsys) -> tuple[Path, str, str]:
    """Writes ``records`` ({folder: record}) under tmp_path/runs, runs the report into tmp_path/out;
    (out, report.md, stderr)."""
    for folder, record in records.items():
        write_record(tmp_path / "runs" / folder, record)
    assert report.main([str(tmp_path / "runs"), "--out", str(tmp_path / "out")]) == 0
    return tmp_path / "out", (tmp_path / "out" / "report.md").read_text(), capsys.readouterr().err


def read_csv(path: Path) -> tuple[list[str], dict[str, dict[str, str]]]:
    """(columns, {first column: row}) of a report table, as text."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    return reader.fieldnames, {row[reader.fieldnames[0]]: row for row in rows}


def read_frame(path: Path) -> pd.DataFrame:
    """A report CSV as pandas reads it: numbers come back as numbers."""
    return pd.read_csv(path)


def groups_of(records: dict[str, dict]):
    """The report's groups of ``records``, as make_groups builds them."""
    from transferlab.report.reading import completed_frame, one_per_seed
    from transferlab.report.studies import make_groups

    runs, _ = one_per_seed(completed_frame([(Path(f) / "run.json", r) for f, r in records.items()]))
    return make_groups(runs)


def t_interval(values) -> tuple[float, float]:
    """The 95 % Student-t interval of the mean, computed here with scipy, independently of the report."""
    values = np.asarray(values, dtype=float)
    return scipy_stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=scipy_stats.sem(values))


def bca(values) -> tuple[float, float]:
    """scipy's BCa bootstrap interval of the mean, with the report's settings (9,999 resamples, seed 0)."""
    result = scipy_stats.bootstrap((np.asarray(values, dtype=float),), np.mean, confidence_level=0.95,
                                   n_resamples=9999, method="BCa", random_state=np.random.default_rng(0))
    return result.confidence_interval.low, result.confidence_interval.high
