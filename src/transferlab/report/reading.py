"""Reading run records: every run.json under the given paths, as one row per observation.

A completed run's *settings* are its config as it actually ran: ``precision`` and ``device`` are
what the run used (a bf16 GPU run and an fp32 CPU run of ``precision=auto`` are different
settings), and ``data.name`` names the dataset (an image folder's own name). The same study,
settings and seed is one observation however often it was run: the report keeps the run that
finished last and names the ones it left out."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from transferlab.config import NOT_RESULT_KEYS
from transferlab.records import RUN_FILE, read_record, record_problem

# Settings that never split a group: repeats differ in seed, the rest cannot change a result.
IGNORED_KEYS = ("name", "seed", *NOT_RESULT_KEYS)
# How torch names an autocast dtype (records before the contract's short names) -> the short name.
PRECISION_NAMES = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}


def find_run_files(paths: list[str], out: Path) -> list[Path]:
    """Every run.json under ``paths`` (a path may also be a run.json itself), sorted, none under
    ``out`` and none in a hidden folder below them (such as outputs/.mlflow/, where MLflow keeps
    copies of run.json). Each comes back as the given path joined with its place below it, so that what the
    report shows depends on the arguments, not on the working directory.

    Symbolic links to folders are followed, and a run.json reached more than once (through a link
    and directly, through two links, through a link back up the tree, under two of the paths) is
    read once: by the way with the fewest links, under the path given first among those."""
    out = out.resolve()
    found: dict[Path, tuple[int, int, Path]] = {}  # resolved -> (links crossed, which path, the path shown)
    for order, given in enumerate(paths):
        root = Path(given)
        for file, links in [(root, 0)] if root.is_file() else _run_files_below(root, out) if root.is_dir() else []:
            resolved = file.resolve()
            if out not in resolved.parents and (resolved not in found or (links, order) < found[resolved][:2]):
                found[resolved] = (links, order, file)
    return sorted((file for _, _, file in found.values()), key=lambda p: p.as_posix())


def _run_files_below(root: Path, out: Path) -> list[tuple[Path, int]]:
    """(run.json, the links crossed to reach it) under ``root``, following links to folders: every
    folder reached without a link is walked before any that takes one link, and so on, and none is
    walked twice (which also ends a link that loops back to a folder above it)."""
    files, walked = [], set()
    level, links = [root], 0  # folders reached through ``links`` links
    while level:
        through_link = []
        while level:
            folder = level.pop()
            resolved = folder.resolve()
            if resolved in walked or resolved == out or out in resolved.parents:
                continue
            walked.add(resolved)
            try:
                entries = sorted(os.scandir(folder), key=lambda entry: entry.name, reverse=True)
            except OSError:  # unreadable, or gone since it was listed: as rglob, pass it by
                continue
            for entry in entries:
                if entry.name == RUN_FILE and entry.is_file():
                    files.append((folder / entry.name, links))
                elif not entry.name.startswith(".") and entry.is_dir():
                    (through_link if entry.is_symlink() else level).append(folder / entry.name)
        level, links = through_link[::-1], links + 1
    return files


def read_runs(files: list[Path]) -> tuple[list[tuple[Path, dict[str, Any]]], list[str]]:
    """(path, record) for each readable run.json, and a line for each file that is not one: not
    JSON, not a run record, or a completed record with a field that the report cannot use (the line
    names the field, such as a test_acc that is not a finite number in [0, 1])."""
    runs, skipped = [], []
    for file in files:
        try:
            record = read_record(file)
        except ValueError as error:
            skipped.append(f"{file.as_posix()}: {str(error).removeprefix(f'{file}: ')}")
            continue
        if record["status"] == "completed" and (problem := record_problem(record)):
            skipped.append(f"{file.as_posix()}: {problem}")
            continue
        runs.append((file, record))
    return runs, skipped


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as {dotted key: value}; lists stay values."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def settings(record: dict[str, Any]) -> dict[str, Any]:
    """The flat config of a run as it actually ran: the settings that can change its results."""
    config = {k: v for k, v in flatten(record["config"]).items() if k not in IGNORED_KEYS}
    if record.get("precision"):
        config["precision"] = PRECISION_NAMES.get(record["precision"], record["precision"])
    if record.get("device"):
        config["device"] = str(record["device"]).split(":")[0]  # cuda:1 and cuda:0 are one setting
    config["data.name"] = dataset_label(record)
    return config


def dataset_label(record: dict[str, Any]) -> str:
    """The dataset's name, and its source where the two differ: ``cifar10``, ``flowers (imagefolder)``."""
    source = record["config"].get("data", {}).get("name", record.get("data"))
    dataset = record.get("dataset") or record.get("data") or source
    return str(dataset) if dataset == source else f"{dataset} ({source})"


def completed_frame(runs: list[tuple[Path, dict[str, Any]]]) -> pd.DataFrame:
    """One row per completed run: what the tables and figures need, and its settings (as ``config``)."""
    rows = []
    for path, record in runs:
        if record["status"] != "completed":
            continue
        config = settings(record)
        history = record.get("history") or []
        num_classes = record.get("num_classes") or len(record.get("classes") or []) or None
        train_images = record.get("num_train_images")
        rows.append({
            "path": path.parent.as_posix(),
            "name": record.get("name") or record["config"].get("name", "runs"),
            "seed": record.get("seed", record["config"].get("seed")),
            "finished_at": record.get("finished_at") or "",
            "dataset": config["data.name"],
            "fraction": config.get("data.fraction"),
            "model": config.get("model.name"),
            "pretrained": bool(config.get("model.pretrained") or config.get("model.weights")),
            "strategy": strategy_label(config.get("freeze.name"), config.get("freeze.modules"),
                                       config.get("freeze.unfreeze_at_epoch")),
            "test_acc": record.get("test_acc"),
            "test_loss": record.get("test_loss"),
            "params_total": record.get("params_total"),
            "params_trainable": record.get("params_trainable"),
            "params_trainable_after": record.get("params_trainable_after_unfreeze"),
            "frozen": ", ".join(record.get("frozen_modules") or []) or "nothing",
            "train_images": train_images,
            "images_per_class": train_images / num_classes if train_images and num_classes else None,
            "run_as": run_as(config.get("precision"), config.get("deterministic"),
                             record.get("nondeterministic_ops")),
            "epoch_seconds": _mean(h.get("epoch_seconds") for h in history),
            "images_per_second": _mean(h.get("images_per_second") for h in history),
            "history": history,
            "config": config,
        })
    return pd.DataFrame(rows)


def one_per_seed(runs: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The runs with one run per (study, settings, seed), and a line for each set of repeats.

    Of runs that repeat one another (a plain run and the same run in a sweep, a run copied elsewhere),
    the one that finished last is kept (the newest result, as if the command had been run again),
    the one whose folder sorts last where they finished together; the others are left out."""
    if runs.empty:
        return runs, []
    identity = runs.apply(lambda run: (run["name"], json.dumps(run["config"], sort_keys=True), run["seed"]), axis=1)
    ordered = runs.assign(identity=identity).sort_values(["finished_at", "path"])
    kept, lines = [], []
    for (name, _, seed), copies in ordered.groupby("identity", sort=False):
        kept.append(copies.index[-1])
        if len(copies) > 1:
            left_out = ", ".join(sorted(copies["path"].iloc[:-1]))
            lines.append(f"one run (study {name}, same settings, seed {seed}) in {len(copies)} folders: "
                         f"kept {copies['path'].iloc[-1]} (finished last), left out {left_out}")
    return runs.loc[sorted(kept)], sorted(lines)


def not_completed_frame(runs: list[tuple[Path, dict[str, Any]]]) -> pd.DataFrame:
    """Runs that did not complete: folder, status and the error they recorded."""
    rows = [{"run": path.parent.as_posix(), "status": record["status"],
             "error": _first_line(record.get("error")) or "(no error recorded: still running, or killed)"}
            for path, record in runs if record["status"] != "completed"]
    return pd.DataFrame(rows, columns=["run", "status", "error"])


def strategy_label(preset: str | None, modules: list[str] | None, unfreeze_at: int | None = None) -> str:
    label = f"custom [{', '.join(modules)}]" if modules is not None else str(preset)
    return label if unfreeze_at is None else f"{label}, all train from epoch {unfreeze_at + 1}"


def run_as(precision: str | None, deterministic: bool | None, nondeterministic_ops: list[str] | None) -> str:
    """How a run computed: ``bf16, not deterministic``; a deterministic run that used
    non-deterministic operations says how many."""
    if not deterministic:
        return f"{precision}, not deterministic"
    if nondeterministic_ops:
        return f"{precision}, deterministic but for {len(nondeterministic_ops)} op(s)"
    return f"{precision}, deterministic"


def _mean(values) -> float:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else float("nan")


def _first_line(text: str | None) -> str:
    return str(text).strip().splitlines()[0] if text and str(text).strip() else ""
