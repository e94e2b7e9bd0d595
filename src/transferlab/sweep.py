"""Hydra jobs: validate, skip a run that already completed with the same config, run, and make
the process exit non-zero when a run (or any run of a sweep) did not complete.

A run's folder is named by its overrides (outputs/<name>/<overrides>), so running the same
command again finds the same folder: a completed run with the same config is skipped, a failed
or unfinished one is run again, and a completed run of a different config is never overwritten
unless ``force=true``.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from transferlab.config import as_dict, result_config, validate
from transferlab.errors import TransferlabError
from transferlab.records import RUN_FILE, read_record, utc_now, write_record
from transferlab.run import run_training

log = logging.getLogger(__name__)


class RunFolderTaken(TransferlabError):
    """The run folder holds a completed run of another config."""


def completed_run(run_dir: Path, config: dict[str, Any]) -> dict[str, Any] | None:
    """The completed record in ``run_dir`` when it was made by the same config, None when the
    folder holds no completed run. A completed run of another config is an error."""
    path = run_dir / RUN_FILE
    if not path.exists():
        return None
    try:
        record = read_record(path)
    except ValueError:
        return None
    if record["status"] != "completed":
        return None
    if result_config(record["config"]) != result_config(config):
        raise RunFolderTaken(
            f"{run_dir} holds a completed run of a different config; pass force=true to replace it, "
            "or choose another name=..."
        )
    return record


def run_job(cfg: DictConfig, run_dir: Path, overrides: list[str]) -> dict[str, Any]:
    """One Hydra job: the finished (or skipped) run's record. Never raises for a failed run,
    so that one failure does not stop a sweep; Ctrl-C does propagate."""
    try:
        config = validate(cfg)
        if not config.force:
            finished = completed_run(run_dir, as_dict(config))
            if finished is not None:
                log.info("skipped: %s already completed with this config (test acc %.2f%%); force=true re-runs it",
                         run_dir, 100 * finished["test_acc"])
                return finished
    except TransferlabError as error:
        log.error("run not started: %s", error)
        record = {"status": "failed", "config": OmegaConf.to_container(cfg), "overrides": overrides,
                  "error": str(error), "history": [], "finished_at": utc_now()}
        if not isinstance(error, RunFolderTaken):  # never overwrite another config's results
            write_record(run_dir, record)
        return record
    return run_training(config, run_dir, overrides)


class RunStatusCallback(Callback):
    """Makes ``transferlab train`` exit 1 when its run, or any run of its sweep, did not complete,
    and ends a sweep with a summary that names the failed runs."""

    def __init__(self) -> None:
        self.sweep_started = 0.0

    def on_run_end(self, config: DictConfig, job_return: JobReturn | None = None, **kwargs: Any) -> None:
        if job_return is None:
            return
        if job_return.status != JobStatus.COMPLETED:
            raise SystemExit(1)
        record = job_return.return_value
        if not isinstance(record, dict) or record.get("status") != "completed":
            raise SystemExit(1)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.sweep_started = float(int(time.time()))  # records keep whole seconds

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        ran, failed = [], []
        for path in sorted(sweep_dir.glob(f"*/{RUN_FILE}")):
            try:
                record = read_record(path)
            except ValueError:
                continue
            finished = record.get("finished_at")
            if not finished or datetime.fromisoformat(finished).timestamp() < self.sweep_started:
                continue  # not run by this sweep (skipped, or from an earlier one)
            ran.append(path.parent)
            if record["status"] != "completed":
                failed.append(f"{path.parent.name} ({record['status']}: {record.get('error', '')})")
        log.info("sweep finished in %s: %d run(s) ran, %d did not complete", sweep_dir, len(ran), len(failed))
        if failed:
            for line in failed:
                log.error("not completed: %s", line)
            raise SystemExit(1)
