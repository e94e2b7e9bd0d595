"""Hydra jobs, a single run's as a sweep's: validate, skip a run that already completed with the
same config, run, and make the process exit non-zero when a run (or any run of a sweep) did not
complete; a sweep's summary.

A run's folder is named by its overrides (transferlab.run_folders), so running the same command
again finds the same folder: a completed run with the same config is skipped, a failed or
unfinished one is run again, and a completed run of a different config is never overwritten
unless ``force=true``: its folder is left byte for byte as it was, and the run counts as not
completed.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from transferlab.config import Config, as_dict, validate
from transferlab.errors import ConfigError, JobRaised, RunInterrupted, TransferlabError
from transferlab.hydra_internals import job_outcome
from transferlab.locks import RUN_LOCK_FILE, run_folder_lock
from transferlab.records import RunResult, utc_now
from transferlab.run import run_training
from transferlab.run_folders import RunFilesError, RunFolderTaken, completed_run, run_folder_files, writing_run_file
from transferlab.workers import worker_stop

log = logging.getLogger(__name__)
LOG_FILE = "train.log"
HYDRA_DIR = ".hydra"
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"


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
            with writing_run_file(run_dir / RUN_LOCK_FILE):  # the run's first write: the holder's line
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
            summary.not_completed.append(f"{folder} (error: {job_outcome(job)!r})")
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


class RunStatusCallback(Callback):
    """Hands the error of a single run's job that raised (a config that is not allowed, files that
    could not be written, a bug) to transferlab.launch as JobRaised, before Hydra prints a line of
    its own about it."""

    def on_run_end(self, config: DictConfig, job_return: JobReturn | None = None, **kwargs: Any) -> None:
        if job_return is not None and job_return.status != JobStatus.COMPLETED:
            raise JobRaised(job_outcome(job_return))  # Hydra's `return_value` would print a line of its own
