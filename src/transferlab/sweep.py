"""Hydra jobs: validate, skip a run that already completed with the same config, run, and make
the process exit non-zero when a run (or any run of a sweep) did not complete.

A run's folder is named by its overrides (outputs/<name>/<overrides>), so running the same
command again finds the same folder: a completed run with the same config is skipped, a failed
or unfinished one is run again, and a completed run of a different config is never overwritten
unless ``force=true``: its folder is left byte for byte as it was, and the run counts as not
completed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from transferlab.config import Config, as_dict, result_config, run_identity, validate
from transferlab.errors import ConfigError, JobRaised, RunInterrupted, TransferlabError
from transferlab.files import disk_full
from transferlab.locks import RUN_LOCK_FILE, run_folder_lock
from transferlab.records import METRICS_FILE, RUN_FILE, RunResult, read_record, utc_now, write_atomic
from transferlab.run import run_training
from transferlab.workers import worker_stop

log = logging.getLogger(__name__)
LOG_FILE = "train.log"
HYDRA_DIR = ".hydra"
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"


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


def run_job(cfg: DictConfig, run_dir: Path, hydra_cfg: DictConfig, callbacks: Sequence[Any] = ()) -> RunResult:
    """One Hydra job: the finished run, or the completed run it skipped. Never raises for a failed
    run, so that one failure does not stop a sweep; a config that is not allowed raises its
    ConfigError before anything is written (a sweep checks every job's config before the first
    runs), Ctrl-C propagates (in a launcher's worker process an interrupted run is returned
    instead: see transferlab.workers), and so does a TransferlabError when the run's own files
    cannot be written (a full disk: the runs after it would fail the same way), for the CLI to
    print. ``hydra_cfg`` is the job's ``hydra`` node, saved into .hydra/; ``callbacks`` go to
    run_training.

    The folder is written only under its lock (transferlab.locks.run_folder_lock), which the job
    holds to the end of the run: a second process for the same folder is refused with one line
    naming the first. What only reads the folder (a skipped or a refused run) is decided before
    the lock is taken, so that such a folder stays byte for byte as it was, and again once it is
    held, as the holder it waited for may have completed the run meanwhile."""
    overrides = list(hydra_cfg.hydra.overrides.task)
    worker = worker_stop()
    try:
        refuse_a_sweep_run_as_one(hydra_cfg)
        config = validate(cfg)
    except ConfigError:
        with contextlib.suppress(OSError):
            run_dir.rmdir()  # made by Hydra just now, if it is empty: a refused config leaves nothing
        raise
    if (done := _trains_nothing(config, cfg, run_dir, overrides)) is not None:
        return done
    with contextlib.ExitStack() as held:
        try:
            with _writing(run_dir / RUN_LOCK_FILE):  # the run's first write: the holder's line
                held.enter_context(run_folder_lock(run_dir))
        except RunFilesError:
            raise  # a full disk: the runs after it would fail the same way
        except TransferlabError as busy:  # and nothing written: the folder is another process's
            return _not_started(cfg, run_dir, overrides, str(busy))
        if (done := _trains_nothing(config, cfg, run_dir, overrides)) is not None:
            return done  # the holder it waited for completed the run meanwhile
        if worker is not None and worker.requested:  # the sweep is stopping: this worker starts no run
            return _not_started(cfg, run_dir, overrides, worker.reason(), status="interrupted")
        try:
            with run_folder_files(run_dir, cfg, hydra_cfg):
                return RunResult(run_dir, run_training(config, run_dir, overrides, callbacks))
        except RunInterrupted as interrupted:
            if worker is None or interrupted.record is None:
                raise
            worker.stop(interrupted.exit_code - 128)  # this worker starts no further job of the sweep
            return RunResult(run_dir, interrupted.record)


def refuse_a_sweep_run_as_one(hydra_cfg: DictConfig) -> None:
    """A ConfigError when a single run (no -m) is of an experiment that is a sweep (its
    hydra.sweeper.params) with some swept setting not given: Hydra would train one run with that
    setting's default, which no job of the sweep is."""
    from hydra.types import RunMode

    params = OmegaConf.select(hydra_cfg, "hydra.sweeper.params")
    if hydra_cfg.hydra.mode != RunMode.RUN or not params:
        return
    given = {item.partition("=")[0].lstrip("+~") for item in hydra_cfg.hydra.overrides.task}
    missing = [key for key in params if key not in given]
    if not missing:  # every swept setting given: one run of the sweep, as asked
        return
    runs = math.prod(len(str(values).split(",")) for values in params.values())
    experiment = OmegaConf.select(hydra_cfg, "hydra.runtime.choices.experiment")
    swept = "; ".join(f"{key}: {values}" for key, values in params.items())
    raise ConfigError(f"experiment={experiment} is a sweep of {runs} runs ({swept}); add -m to run it "
                      f"(transferlab train -m experiment={experiment} ...), or give {', '.join(missing)} for one of "
                      "its runs")


def _trains_nothing(config: Config, cfg: DictConfig, run_dir: Path, overrides: list[str]) -> RunResult | None:
    """The result of a job whose folder already decides it, read without writing: this config's
    completed run (skipped, unless force=true) or another config's (not started); None otherwise."""
    try:
        finished = None if config.force else completed_run(run_dir, as_dict(config))
    except RunFolderTaken as error:
        return _not_started(cfg, run_dir, overrides, str(error))
    return None if finished is None else _skipped(run_dir, finished)


def _skipped(run_dir: Path, finished: dict[str, Any]) -> RunResult:
    log.info("skipped: %s already completed with this config (test acc %.2f%%); force=true re-runs it",
             run_dir, 100 * finished["test_acc"])
    return RunResult(run_dir, finished, skipped=True)


def _not_started(cfg: DictConfig, run_dir: Path, overrides: list[str], error: str,
                 status: str = "failed") -> RunResult:
    """A job that wrote nothing: the folder holds another config's completed run, or another
    process holds it, or the sweep is stopping. Its record is returned, never saved."""
    log.error("run not started: %s", error)
    return RunResult(run_dir, {"status": status, "config": OmegaConf.to_container(cfg), "overrides": overrides,
                               "error": error, "history": [], "finished_at": utc_now()})


@contextlib.contextmanager
def run_folder_files(run_dir: Path, cfg: DictConfig, hydra_cfg: DictConfig) -> Iterator[None]:
    """Write what Hydra would have written before the job (.hydra/config.yaml, hydra.yaml and
    overrides.yaml) and log the block to the run's train.log. The job calls this only once the
    folder is its to write (Hydra's own output_subdir and log file are off in conf/config.yaml)."""
    hydra_dir = run_dir / HYDRA_DIR
    for name, node in (("config.yaml", cfg), ("hydra.yaml", hydra_cfg), ("overrides.yaml", hydra_cfg.hydra.overrides.task)):
        text = OmegaConf.to_yaml(node)
        with _writing(hydra_dir / name):
            write_atomic(hydra_dir / name, text)
    with _writing(run_dir / LOG_FILE):
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
def _writing(path: Path) -> Iterator[None]:
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


@dataclass
class SweepSummary:
    """What the jobs of a sweep did, by run folder name."""

    completed: list[str] = field(default_factory=list)  # trained to completion by this sweep
    skipped: list[str] = field(default_factory=list)  # had completed before with the same config
    not_completed: list[str] = field(default_factory=list)  # "folder (status: error)"


def summarize_sweep(job_returns: Iterable[JobReturn]) -> SweepSummary:
    """Count a sweep's runs from what each job returned (never from files, which a refused run
    leaves alone and a skipped one leaves as they were)."""
    summary = SweepSummary()
    for job in job_returns:
        folder = Path(str(job.hydra_cfg.hydra.runtime.output_dir)).name if job.hydra_cfg else str(job.overrides)
        if job.status != JobStatus.COMPLETED:  # the job raised: a bug, not a recorded failure
            summary.not_completed.append(f"{folder} (error: {job._return_value!r})")
            continue
        result = job.return_value
        if not isinstance(result, RunResult):
            summary.not_completed.append(f"{folder} (returned no run record)")
        elif result.skipped:
            summary.skipped.append(folder)
        elif result.completed:
            summary.completed.append(folder)
        else:
            summary.not_completed.append(f"{folder} ({result.record.get('status')}: {result.record.get('error', '')})")
    return summary


def finish_sweep(job_returns: Iterable[JobReturn], sweep_dir: Path, stopped_by: int | None = None) -> None:
    """Log the sweep's summary, or raise RunInterrupted when the signal ``stopped_by`` stopped the
    sweep. (The command's exit status comes from the results: see transferlab.cli.)"""
    summary = summarize_sweep(job_returns)
    ran = len(summary.completed) + len(summary.not_completed)  # a refused run ran (and did not complete)
    log.info("sweep finished in %s: %d run(s) ran, %d did not complete, %d skipped (completed before)",
             sweep_dir, ran, len(summary.not_completed), len(summary.skipped))
    for line in summary.not_completed:
        log.error("not completed: %s", line)
    if stopped_by is not None:
        raise RunInterrupted(str(sweep_dir), 128 + stopped_by, sweep=True)


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
    (config.run_identity: a timm tag of a model trained from scratch; ``source=torchvision
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


class RunStatusCallback(Callback):
    """Hands the error of a single run's job that raised (a config that is not allowed, files that
    could not be written, a bug) to transferlab.launch as JobRaised, before Hydra prints a line of
    its own about it."""

    def on_run_end(self, config: DictConfig, job_return: JobReturn | None = None, **kwargs: Any) -> None:
        if job_return is not None and job_return.status != JobStatus.COMPLETED:
            raise JobRaised(job_return._return_value)  # Hydra's `return_value` would print a line of its own
