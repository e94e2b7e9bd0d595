"""Run records: run.json and metrics.csv, written atomically (a temporary file, then a rename),
so a reader never sees half a file and a killed run leaves its last complete record.

This module must not import torch: the report reads records with it."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

RUN_FILE = "run.json"
METRICS_FILE = "metrics.csv"
SAMPLES_FILE = "samples.npz"  # images (N, H, W, 3) uint8, labels (N,), classes (10,) str
METRIC_COLUMNS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "epoch_seconds", "images_per_second")
# Columns after those, only in runs that have a validation split (data.val_fraction > 0).
VALIDATION_COLUMNS = ("val_loss", "val_acc")
STATUSES = ("running", "completed", "failed", "interrupted")


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_record(run_dir: Path, record: dict[str, Any]) -> None:
    """run.json and metrics.csv (one row per finished epoch) from one record."""
    write_atomic(run_dir / RUN_FILE, json.dumps(record, indent=2, sort_keys=False) + "\n")
    history = record.get("history", [])
    columns = [*METRIC_COLUMNS, *(c for c in VALIDATION_COLUMNS if any(c in entry for entry in history))]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    write_atomic(run_dir / METRICS_FILE, buffer.getvalue())


def read_record(path: Path) -> dict[str, Any]:
    """A run.json as a dict; ValueError when it is not a run record."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not readable as JSON ({error})") from error
    if not isinstance(record, dict) or record.get("status") not in STATUSES or not isinstance(record.get("config"), dict):
        raise ValueError(f"{path}: not a transferlab run record (no valid 'status' and 'config')")
    return record


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
