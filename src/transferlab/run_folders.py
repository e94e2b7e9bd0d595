"""Run folders: a run's folder is named by its overrides (outputs/<name>/<overrides>), each value
spelt one way, leaving out the settings that cannot change its results, so that the same command
finds the same folder again; what a folder already holds (a completed run of this config or of
another), jobs of a sweep that would share a folder or are one run, and the files a job writes
into its folder before the run (.hydra/, train.log)."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import re
import sys
import typing
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from transferlab import config as schema
from transferlab.config import Config
from transferlab.identity import inert_settings, is_inert, result_config, run_identity
from transferlab.datasets import identity_keys
from transferlab.errors import ConfigError, TransferlabError
from transferlab.files import disk_full
from transferlab.records import METRICS_FILE, RUN_FILE, read_record, write_atomic

LOG_FILE = "train.log"
HYDRA_DIR = ".hydra"
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"
# The overrides a run folder's name leaves out (Hydra's hydra.job.config.override_dirname.exclude_keys,
# which conf/config.yaml takes from run_folder_excluded_keys): config.NOT_RESULT_KEYS, and the two that
# pick the study (its folder outputs/<name>/ already says it) or an experiment file (its values appear
# as the overrides it stands for are not part of the folder's name either).
RUN_FOLDER_ONLY_EXCLUDED_KEYS = ("experiment", "name")
DEFAULT_DIRNAME = "defaults"
MAX_DIRNAME = 200  # file systems allow 255 bytes a name
FIRST_REPEAT = "repeat=0"  # the run itself: `repeat=0,1,2` finds it where the run without repeat= is
BOOLEAN_SPELLINGS = ("true", "false")  # Hydra reads True, TRUE, ... as these too
TRAILING_ZEROS = re.compile(r"(?P<number>[+-]?\d+\.\d)(?P<digits>\d*?)0+")  # 0.10, 1.500, 2.00




@functools.cache
def schema_types() -> dict[str, type]:
    """The type of each key of the schema (``model.pretrained``: bool, ``optim.lr``: float, ...),
    Optional[...] unwrapped; lists and other types are left out."""
    types: dict[str, type] = {}

    def walk(schema: type, prefix: str) -> None:
        for name, hint in typing.get_type_hints(schema).items():
            arguments = [a for a in typing.get_args(hint) if a is not type(None)]
            hint = arguments[0] if typing.get_origin(hint) is typing.Union and len(arguments) == 1 else hint
            if dataclasses.is_dataclass(hint):
                walk(hint, f"{prefix}{name}.")
            elif hint in (bool, float):
                types[f"{prefix}{name}"] = hint

    walk(Config, "")
    return types


def canonical_override(item: str) -> str:
    """One override of a run folder's name with the value spelt one way for each value that Hydra
    reads the same: a switch's False, FALSE or false is ``false`` (a sweep may write Python's
    False); a float's 0.10 is 0.1 (trailing zeros after the first decimal dropped). The usual
    spellings (false, 0.1, 1.0, 1e-3) are left as they are, so existing run folders keep their names."""
    key, equals, value = item.partition("=")
    kind = schema_types().get(key.lstrip("+~"))
    if not equals or kind is None:
        return item
    if kind is bool and value.lower() in BOOLEAN_SPELLINGS:
        return f"{key}={value.lower()}"
    if kind is float:
        match = TRAILING_ZEROS.fullmatch(value)
        if match:
            return f"{key}={match['number']}{match['digits']}"
    return item


def run_dirname(override_dirname: str, data_name: str = "", data_root: str = "", _root_: Any = None) -> str:
    """The folder of a run inside outputs/<name>/: its overrides ('defaults' when it has none),
    each value in one spelling (canonical_override), with '/' replaced, and cut short with a hash
    of the whole when it is too long for a file name.
    data.root is left out of the overrides (a CIFAR-10 copy elsewhere is the same data) except for
    data=imagefolder, whose folder is the dataset: runs on two folders must not share a run folder.
    repeat=0 is left out too: it is the same run as no repeat= at all, so a sweep repeat=0,1,2 after
    a plain sweep skips the runs that sweep completed. So are the settings that do nothing in this
    run (inert_settings of the composed config, ``_root_``)."""
    inert = inert_settings(_root_) if _root_ is not None else {}
    items = [canonical_override(item) for item in _dirname_items(override_dirname)
             if not is_inert(item.partition("=")[0], inert)]
    override_dirname = ",".join(item for item in items if item != FIRST_REPEAT)
    if "data.root" in identity_keys(data_name):
        override_dirname = ",".join(filter(None, [override_dirname, f"data.root={data_root}"]))
    name = (override_dirname or DEFAULT_DIRNAME).replace("/", "_")
    if len(name.encode()) <= MAX_DIRNAME:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:12]
    return f"{name.encode()[:MAX_DIRNAME - 13].decode(errors='ignore')}-{digest}"


def _dirname_items(override_dirname: str) -> list[str]:
    """Hydra's override_dirname (``a=1,b=[x,y]``) as its overrides: split at the commas outside brackets."""
    items, depth, start = [], 0, 0
    for at, character in enumerate(override_dirname):
        depth += {"[": 1, "{": 1, "]": -1, "}": -1}.get(character, 0)
        if character == "," and depth == 0:
            items.append(override_dirname[start:at])
            start = at + 1
    return [*items, override_dirname[start:]]


def run_folder_excluded_keys() -> list[str]:
    """conf/config.yaml's hydra.job.config.override_dirname.exclude_keys: the overrides that do
    not name a run folder (the settings of NOT_RESULT_KEYS, the study and the experiment file)."""
    return [*RUN_FOLDER_ONLY_EXCLUDED_KEYS, *schema.NOT_RESULT_KEYS]


class RunFolderTaken(TransferlabError):
    """The run folder holds a completed run of another config."""


def completed_record(run_dir: Path) -> dict[str, Any] | None:
    """The record in ``run_dir`` when it is a completed run's; None when there is none. A run.json
    that cannot be read (cut short, edited by hand) may be a completed run's, whose scores
    metrics.csv still holds: RunFolderTaken, so that nothing trains over it without force=true
    (transferlab writes run.json atomically, so a run of its own never leaves one damaged)."""
    path = run_dir / RUN_FILE
    if not path.exists():
        return None
    try:
        record = read_record(path)
    except ValueError as error:
        metrics = run_dir / METRICS_FILE
        scores = f", and {metrics} holds the scores of a run" if metrics.exists() else ""
        raise RunFolderTaken(f"{path} is damaged ({str(error).removeprefix(f'{path}: ')}){scores}; nothing was "
                             "trained over it: restore it, or pass force=true to train the run again and replace "
                             "the folder's files") from error
    return record if record["status"] == "completed" else None


def completed_run(run_dir: Path, config: dict[str, Any]) -> dict[str, Any] | None:
    """The completed record in ``run_dir`` when it was made by the same config, None when the
    folder holds no completed run. A completed run of another config is an error."""
    record = completed_record(run_dir)
    if record is None or result_config(record["config"]) == result_config(config):
        return record
    if "sampling" not in record["config"].get("data", {}):  # recorded before subsets were stratified
        raise RunFolderTaken(
            f"{run_dir} holds a completed run of a different config: its training subset was drawn by the old "
            "uniform sampling (its config has no data.sampling); data.sampling=uniform reproduces it, force=true "
            "replaces it"
        )
    raise RunFolderTaken(
        f"{run_dir} holds a completed run of a different config; pass force=true to replace it, "
        "or choose another name=..."
    )


@contextlib.contextmanager
def run_folder_files(run_dir: Path, cfg: DictConfig, hydra_cfg: DictConfig) -> Iterator[None]:
    """Write what Hydra would have written before the job (.hydra/config.yaml, hydra.yaml and
    overrides.yaml) and log the block to the run's train.log. The job calls this only once the
    folder is its to write (Hydra's own output_subdir and log file are off in conf/config.yaml)."""
    hydra_dir = run_dir / HYDRA_DIR
    for name, node in (("config.yaml", cfg), ("hydra.yaml", hydra_cfg), ("overrides.yaml", hydra_cfg.hydra.overrides.task)):
        text = OmegaConf.to_yaml(node)
        with writing_run_file(hydra_dir / name):
            write_atomic(hydra_dir / name, text)
    with writing_run_file(run_dir / LOG_FILE):
        handler = RunLogHandler(run_dir / LOG_FILE)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.setLevel(logging.DEBUG)  # the console shows INFO; the log keeps the debug tracebacks too
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()


class RunFilesError(TransferlabError):
    """A file of the run folder (.hydra/, train.log, run.json) could not be written before the run."""


@contextlib.contextmanager
def writing_run_file(path: Path) -> Iterator[None]:
    """Turns an OSError of the block, which writes ``path`` (a full disk, a folder that cannot be
    written), into a RunFilesError that says which file and why: the CLI prints it as one line."""
    try:
        yield
    except OSError as error:
        full = disk_full(error, path.parent)
        reason = "the disk is full" if full else f"{type(error).__name__}: {error.strerror or error}"
        raise RunFilesError(f"cannot write the run's file {path} ({reason})") from error


class RunLogHandler(logging.FileHandler):
    """The run's train.log. When a line cannot be written (a full disk), stderr gets one line that
    says so, and the log goes on on the console only: logging's own report is a traceback per
    line, which would bury the run's outcome."""

    def __init__(self, path: Path):
        super().__init__(path, encoding="utf-8")
        self.failure: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.failure is None:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        self._give_up(sys.exc_info()[1])

    def close(self) -> None:
        try:
            super().close()  # flushes what is buffered: on a full disk that fails too
        except OSError as error:
            self._give_up(error)

    def _give_up(self, error: BaseException | None) -> None:
        if self.failure is None:
            self.failure = f"{type(error).__name__}: {error}"
            print(f"transferlab: {self.baseFilename} could not be written ({self.failure}); the rest of the "
                  "run's log is on the console only", file=sys.stderr)


def refuse_shared_run_folders(jobs: Sequence[tuple[Sequence[str], Path]]) -> None:
    """ConfigError naming the first two jobs, given as (overrides, run folder) in sweep order, that
    would run in one folder: in parallel they would train over each other."""
    first_job: dict[Path, int] = {}
    for index, (overrides, folder) in enumerate(jobs):
        if folder not in first_job:
            first_job[folder] = index
            continue
        earlier = first_job[folder]
        earlier_overrides = list(jobs[earlier][0])
        if list(overrides) == earlier_overrides:
            raise ConfigError(f"jobs #{earlier} and #{index} of this sweep are the same run "
                              f"({' '.join(overrides) or 'no overrides'}), in {folder}; nothing was run: "
                              "list each value once")
        only_earlier = [o for o in earlier_overrides if o not in overrides]
        only_this = [o for o in overrides if o not in earlier_overrides]
        raise ConfigError(f"jobs #{earlier} ({' '.join(only_earlier) or 'no overrides'}) and #{index} "
                          f"({' '.join(only_this) or 'no overrides'}) of this sweep would both run in {folder}, "
                          "as a run folder is named by the settings that can change results; nothing was run: "
                          "sweep over these in separate commands")


def same_run_lines(jobs: Sequence[tuple[Sequence[str], dict[str, Any]]]) -> list[str]:
    """A warning for each set of a sweep's jobs, given as (overrides, config) in sweep order, that
    are one run in several folders: the same settings once those that do nothing are left out
    (identity.run_identity: a timm tag of a model trained from scratch; ``source=torchvision
    model.pretrained=false`` is ``source=scratch``). Each folder trains the same run again, and the
    report counts it once."""
    same: dict[str, list[int]] = {}
    for index, (_, config) in enumerate(jobs):
        same.setdefault(json.dumps(run_identity(config), sort_keys=True, default=str), []).append(index)
    lines = []
    for indices in (indices for indices in same.values() if len(indices) > 1):
        shared = set.intersection(*(set(jobs[i][0]) for i in indices))  # each job named by what sets it apart
        named = ", ".join(f"#{i} ({' '.join(o for o in jobs[i][0] if o not in shared) or 'no overrides'})"
                          for i in indices)
        lines.append(f"jobs {named} of this sweep are one run: they differ only in settings that do nothing "
                     "here (such as a timm pretraining tag, from scratch); each trains it again in a folder of "
                     "its own, and the report counts it once")
    return lines
