"""Reading run records: every run.json under the given paths, as one row per completed run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from transferlab.config import NOT_RESULT_KEYS
from transferlab.records import RUN_FILE, read_record

# Settings that never split a group: repeats differ in seed, the rest cannot change a result.
IGNORED_KEYS = ("name", "seed", *NOT_RESULT_KEYS)


def find_run_files(paths: list[str], out: Path) -> list[Path]:
    """Every run.json under ``paths`` (a path may also be a run.json itself), sorted, none under
    ``out`` and none in a hidden folder below them (such as outputs/.mlflow/, where MLflow keeps
    copies of run.json). Each comes back as the given path joined with its place below it, so that what the
    report shows depends on the arguments, not on the working directory."""
    out = out.resolve()
    found: dict[Path, Path] = {}
    for given in paths:
        root = Path(given)
        files = [root] if root.is_file() else sorted(root.rglob(RUN_FILE)) if root.is_dir() else []
        for file in files:
            if any(part.startswith(".") for part in file.relative_to(root).parts[:-1]):
                continue
            resolved = file.resolve()
            if out not in resolved.parents and resolved not in found:
                found[resolved] = root / file.relative_to(root) if file != root else root
    return sorted(found.values(), key=lambda p: p.as_posix())


def read_runs(files: list[Path]) -> tuple[list[tuple[Path, dict[str, Any]]], list[str]]:
    """(path, record) for each readable run.json, and a line for each file that is not one."""
    runs, skipped = [], []
    for file in files:
        try:
            runs.append((file, read_record(file)))
        except ValueError as error:
            skipped.append(f"{file.as_posix()}: {str(error).removeprefix(f'{file}: ')}")
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


def completed_frame(runs: list[tuple[Path, dict[str, Any]]]) -> pd.DataFrame:
    """One row per completed run: what the tables and figures need, and its flat config."""
    rows = []
    for path, record in runs:
        if record["status"] != "completed":
            continue
        config = {k: v for k, v in flatten(record["config"]).items() if k not in IGNORED_KEYS}
        history = record.get("history") or []
        rows.append({
            "path": path.parent.as_posix(),
            "name": record.get("name") or record["config"].get("name", "runs"),
            "seed": record.get("seed", record["config"].get("seed")),
            "fraction": config.get("data.fraction"),
            "model": config.get("model.name"),
            "pretrained": bool(config.get("model.pretrained") or config.get("model.weights")),
            "strategy": strategy_label(config.get("freeze.name"), config.get("freeze.modules")),
            "test_acc": record.get("test_acc"),
            "test_loss": record.get("test_loss"),
            "params_total": record.get("params_total"),
            "params_trainable": record.get("params_trainable"),
            "frozen": ", ".join(record.get("frozen_modules") or []) or "nothing",
            "train_images": record.get("num_train_images"),
            "epoch_seconds": _mean(h.get("epoch_seconds") for h in history),
            "images_per_second": _mean(h.get("images_per_second") for h in history),
            "history": history,
            "config": config,
        })
    return pd.DataFrame(rows)


def not_completed_frame(runs: list[tuple[Path, dict[str, Any]]]) -> pd.DataFrame:
    """Runs that did not complete: folder, status and the error they recorded."""
    rows = [{"run": path.parent.as_posix(), "status": record["status"],
             "error": _first_line(record.get("error")) or "(no error recorded: still running, or killed)"}
            for path, record in runs if record["status"] != "completed"]
    return pd.DataFrame(rows, columns=["run", "status", "error"])


def strategy_label(preset: str | None, modules: list[str] | None) -> str:
    return f"custom [{', '.join(modules)}]" if modules is not None else str(preset)


def _mean(values) -> float:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else float("nan")


def _first_line(text: str | None) -> str:
    return str(text).strip().splitlines()[0] if text and str(text).strip() else ""
