"""Run records: run.json and metrics.csv, written atomically (transferlab.files.write_atomic: a
temporary file, then a rename), so a reader never sees half a file and a killed run leaves its
last complete record. Every file written here gets the permissions any other tool's output would:
0666 less the umask.

``record_problem`` says which field of a completed record the report cannot use, so that one
mistyped or non-finite value skips that record with its name instead of breaking the report.

This module must not import torch: the report reads records with it."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from transferlab.files import write_atomic  # noqa: F401 (the report and run write through records)

RUN_FILE = "run.json"
METRICS_FILE = "metrics.csv"
# images (N, H, W, 3) uint8, labels (N,), classes (C,) str: a few training images of each class.
SAMPLES_FILE = "samples.npz"
# predicted (N,) int16, labels (N,) int16, true_probability (N,) float16: the final evaluation's
# prediction for each test image, in the test set's order (the report's test-set intervals).
PREDICTIONS_FILE = "predictions.npz"
METRIC_COLUMNS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "epoch_seconds", "images_per_second")
# Columns after those, only in runs that have a validation split (data.val_fraction > 0).
VALIDATION_COLUMNS = ("val_loss", "val_acc")
STATUSES = ("running", "completed", "failed", "interrupted")
# run.json's layout. 2 added schema_version itself (records without it are version 1: the same
# fields, less those added since); a reader takes any version up to its own and uses the fields it
# knows, and refuses a newer one (future_schema): its fields may mean something else.
SCHEMA_VERSION = 2
# Study names of `transferlab tune`: <part>-tuning holds the trials, <part>-tuned the tuned runs.
TRIALS_SUFFIX, TUNED_SUFFIX = "-tuning", "-tuned"
LABEL_LIMIT = 40  # the characters of a label (a weights file's name) in tables and legends, at most


@dataclass
class RunRecord:
    """One run's record, as run.json holds it (docs/records.md says what each field means).

    run.py fills it in as the run learns each fact, each in one place: the settings when the run
    starts, the device, data and model facts once known, each epoch's results in ``history`` (the
    epoch-end callback of transferlab.fit), the outcome at the end. ``to_dict()`` is run.json's
    JSON; the fields after ``slurm_job_id`` are left out while they are None."""

    status: str
    name: str
    model: str
    pretrained: bool
    init: str | None  # IMAGENET1K_V1 (the torchvision weights), timm:TAG, random, file:PATH or local-dir:DIR; once known
    data: str
    dataset: str
    transforms: Any
    fraction: float | None  # null with data.per_class
    per_class: int | None
    subset: dict[str, Any]  # how the training subset was drawn: another draw trained on other images
    image_size: int
    freeze: str
    repeat: int  # the replicate (docs/repeats.md); it ran with seed + repeat, data.subset_seed + repeat
    seed: int
    subset_seed: int
    config: dict[str, Any]
    overrides: list[str]
    started_at: str
    versions: dict[str, str]
    host: str
    pid: int
    slurm_job_id: str | None
    frozen_modules: list[str] | None = None
    num_classes: int | None = None
    classes: list[str] | None = None
    params_total: int | None = None
    params_trainable: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    test_acc: float | None = None
    test_loss: float | None = None
    nondeterministic_ops: list[str] | None = None  # the ops that ran without a deterministic kernel; null: not checked
    finished_at: str | None = None
    # Written only once set:
    data_source: dict[str, Any] | None = None  # an image folder's files (data.describe_source)
    device: str | None = None
    device_name: str | None = None
    precision: str | None = None
    num_train_images: int | None = None
    train_images_per_class: Any = None
    num_test_images: int | None = None
    num_val_images: int | None = None
    # The size of an epoch's last training batch (data.pipelines.batch_sizes): a batch far smaller than
    # train.batch_size (70 images in batches of 64: 64 + 6) can ruin BatchNorm's statistics; the report names it.
    last_batch_size: int | None = None
    params_trainable_after_unfreeze: int | None = None
    val_acc: float | None = None
    val_loss: float | None = None
    resumed_after_epoch: int | None = None
    checkpoint_seconds: float | None = None  # what the checkpoints cost the training loop
    model_file: str | None = None
    pretraining: dict[str, Any] | None = None  # {source, tag, label, new_head, weights_sha256}: how the model was initialised
    adapt: dict[str, Any] | None = None  # {name}; with lora its settings, adapted_modules and params_added
    param_groups: list[dict[str, Any]] | None = None  # the optimizer's groups: [{stage, lr, parameters}]
    mlflow_run_id: str | None = None
    tuning: dict[str, Any] | None = None
    # A linear probe (only the head trains at first): which kind (transferlab.probe's PROBE_CACHED or
    # PROBE_IN_LOOP), and for one on cached features each split's cache folder, whether this run
    # extracted any (and which), the seconds that took (or reading them), and with freeze.probe=lbfgs
    # its L2 sweep.
    probe: str | None = None
    feature_cache: dict[str, str] | None = None
    feature_cache_built: bool | None = None
    feature_splits_built: list[str] | None = None
    feature_seconds: float | None = None
    probe_l2: float | None = None
    probe_l2_sweep: list[dict[str, float]] | None = None
    probe_seconds: float | None = None
    error: str | None = None
    traceback: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """run.json's JSON: ``schema_version`` first, then the fields in order."""
        values = {"schema_version": SCHEMA_VERSION}
        for item in fields(self):
            value = getattr(self, item.name)
            if value is not None or item.name in _ALWAYS_WRITTEN:
                values[item.name] = value
        return values

    def set_results(self, entry: dict[str, Any] | None) -> None:
        """The run's test (and validation) figures from a history entry: the last finished epoch's;
        None for a run that has none."""
        entry = entry or {}
        self.test_acc, self.test_loss = entry.get("test_acc"), entry.get("test_loss")
        self.val_acc, self.val_loss = entry.get("val_acc"), entry.get("val_loss")


@dataclass(frozen=True)
class RunResult:
    """What one job of `transferlab train` did: its run folder and record (run.json's dict; a run
    that was not started has a record that was never saved), and whether it was skipped as
    completed before."""

    run_dir: Path
    record: dict[str, Any]
    skipped: bool = False

    @property
    def completed(self) -> bool:
        return self.record.get("status") == "completed"


_FIELD_NAMES = [item.name for item in fields(RunRecord)]
_ALWAYS_WRITTEN = frozenset(_FIELD_NAMES[:_FIELD_NAMES.index("data_source")])


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as {dotted key: value}; lists stay values."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


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


def future_schema(record: dict[str, Any]) -> str | None:
    """Why a record's ``schema_version`` is not one this transferlab reads (a newer layout, or not a
    version number at all), as one line; None for a version it reads (or none: version 1)."""
    version = record.get("schema_version")
    if version is None or (_whole(version) and 1 <= version <= SCHEMA_VERSION):
        return None
    if _whole(version) and version > SCHEMA_VERSION:
        return (f"field schema_version is {version}, a newer run.json layout than this transferlab reads "
                f"(1 to {SCHEMA_VERSION}): upgrade transferlab to read it")
    return f"field schema_version is {_shown(version)}, not a whole number from 1 to {SCHEMA_VERSION}"


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _finite(value: Any) -> bool:
    return _number(value) and math.isfinite(value)


def _fraction(value: Any) -> bool:
    return _finite(value) and 0.0 <= value <= 1.0


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _texts(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


Check = tuple[str, Callable[[Any], bool]]  # (what the value must be, the test)
FRACTION: Check = ("a finite number in [0, 1]", _fraction)
LOSS: Check = ("a finite number ≥ 0", lambda v: _finite(v) and v >= 0)
SECONDS: Check = ("a finite number ≥ 0", lambda v: _finite(v) and v >= 0)
WHOLE: Check = ("a whole number", _whole)
COUNT: Check = ("a whole number ≥ 0", lambda v: _whole(v) and v >= 0)
TEXT: Check = ("a string", lambda v: isinstance(v, str))
TEXTS: Check = ("a list of strings", _texts)
COUNTS: Check = ("a mapping of class names to whole numbers ≥ 0",
                 lambda v: isinstance(v, dict) and all(_whole(n) and n >= 0 for n in v.values()))
FLAG: Check = ("true or false", lambda v: isinstance(v, bool))
MAPPING: Check = ("a mapping", lambda v: isinstance(v, dict))

# What the report reads from a completed record, by dotted path: a value must pass its check; null
# or absent is allowed (an older record lacks the newer fields) except for REQUIRED ones. A mapping
# comes before the fields inside it.
REQUIRED_FIELDS = ("test_acc",)
RECORD_FIELDS: dict[str, Check] = {
    "test_acc": FRACTION, "test_loss": LOSS, "val_acc": FRACTION, "val_loss": LOSS,
    "name": TEXT, "seed": WHOLE, "subset_seed": WHOLE, "finished_at": TEXT, "data": TEXT, "dataset": TEXT,
    "precision": TEXT,
    "device": TEXT, "num_classes": COUNT, "classes": TEXTS, "num_train_images": COUNT,
    "train_images_per_class": COUNTS, "params_total": COUNT,
    "params_trainable": COUNT, "params_trainable_after_unfreeze": COUNT, "frozen_modules": TEXTS,
    "nondeterministic_ops": TEXTS, "history": ("a list of mappings",
                                               lambda v: isinstance(v, list) and all(isinstance(e, dict) for e in v)),
    "pretraining": MAPPING, "pretraining.label": TEXT, "adapt": MAPPING, "adapt.name": TEXT,
    "tuning": MAPPING, "tuning.study": TEXT, "tuning.keys": MAPPING, "tuning.trials": COUNT,
    "tuning.best_val_acc": FRACTION,
    "config.name": TEXT, "config.seed": WHOLE, "config.repeat": COUNT, "config.deterministic": FLAG,
    "config.precision": TEXT,
    "config.device": TEXT, "config.data": MAPPING, "config.data.name": TEXT,
    "config.data.fraction": ("a finite number in (0, 1]", lambda v: _fraction(v) and v > 0),
    "config.data.per_class": ("a whole number ≥ 1", lambda v: _whole(v) and v >= 1),
    "config.data.subset_seed": WHOLE, "config.data.sampling": TEXT,
    "config.optim": MAPPING, "config.optim.name": TEXT,
    "config.model": MAPPING, "config.model.name": TEXT, "config.model.pretrained": FLAG,
    "config.freeze": MAPPING, "config.freeze.name": TEXT, "config.freeze.modules": TEXTS,
    "config.freeze.unfreeze_at_epoch": COUNT, "config.train": MAPPING,
}
# Each entry of ``history`` (one finished epoch); ``epoch`` is required.
HISTORY_FIELDS: dict[str, Check] = {
    "epoch": ("a whole number ≥ 1", lambda v: _whole(v) and v >= 1),
    "train_loss": LOSS, "train_acc": FRACTION, "test_loss": LOSS, "test_acc": FRACTION,
    "val_loss": LOSS, "val_acc": FRACTION,
    "epoch_seconds": SECONDS, "eval_seconds": SECONDS, "images_per_second": SECONDS,
    "lr": ("a finite number ≥ 0", lambda v: _finite(v) and v >= 0),
}


def record_problem(record: dict[str, Any]) -> str | None:
    """The first field of a completed run record that the report cannot use, as one line
    (``field test_acc is 'abc', not a finite number in [0, 1]``); None when every field can be used."""
    problem = _first_problem(record, RECORD_FIELDS, REQUIRED_FIELDS)
    if problem:
        return problem
    for index, entry in enumerate(record.get("history") or []):
        if problem := _first_problem(entry, HISTORY_FIELDS, ("epoch",), prefix=f"history[{index}]."):
            return problem
    return None


def _first_problem(values: dict[str, Any], checks: dict[str, Check], required: tuple[str, ...],
                   prefix: str = "") -> str | None:
    for name, (allowed, check) in checks.items():
        value = _lookup(values, name)
        if value is None:
            if name in required:
                return f"field {prefix}{name} is missing (it must be {allowed})"
        elif not check(value):
            return f"field {prefix}{name} is {_shown(value)}, not {allowed}"
    return None


def _lookup(values: dict[str, Any], dotted: str) -> Any:
    """The value at a dotted path; None where it, or a mapping on the way, is absent (a mapping
    that is something else was already named by its own check)."""
    for key in dotted.split("."):
        if not isinstance(values, dict):
            return None
        values = values.get(key)
    return values


def _shown(value: Any, limit: int = 40) -> str:
    text = json.dumps(value) if _number(value) else repr(value)  # NaN as JSON writes it: NaN
    return text if len(text) <= limit else f"{text[:limit - 3]}..."


def shorten(text: str, limit: int = LABEL_LIMIT) -> str:
    """``text`` if it is at most ``limit`` characters, else its start and end around an ellipsis:
    a label in run.json, a table or a figure's legend never grows with a path's length."""
    if len(text) <= limit:
        return text
    head = (limit - 1) // 2
    return f"{text[:head]}…{text[len(text) - (limit - 1 - head):]}"


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
