"""transferlab's default sweeper (conf/hydra/sweeper/transferlab.yaml): Hydra's basic sweeper, then
a summary of the sweep counted from what each job returned, and exit status 1 when any run did not
complete. The job returns reach this process from every launcher (basic, joblib, submitit), whose
jobs may run in other processes. Hydra loads sweepers only from the hydra_plugins package and
imports every module here at start-up, so this stays small: at start-up it imports only
transferlab.hydra_internals (Hydra's basic sweeper, whose private API lives there), the rest when it sweeps.

Before any job runs, every job's config is composed (as Hydra's basic sweeper does to catch
composition errors early) and validated, and its run folder computed: a sweep with a config that
is not allowed, or with two jobs for one folder, is refused before any run; jobs that are one run in
two folders (transferlab.run_folders.same_run_lines) are named in a warning. Under the joblib launcher, SIGTERM to this process stops the workers too
(transferlab.workers)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser

from transferlab.hydra_internals import basic_sweeper  # Hydra's private API: all of it in that module

# Launchers whose jobs run in worker processes of this one (class names).
WORKER_LAUNCHERS = ("JoblibLauncher",)


class TransferlabSweeper(basic_sweeper()):  # type: ignore[misc]
    def sweep(self, arguments: list[str]) -> Any:
        from transferlab.errors import RunInterrupted
        from transferlab.jobs import finish_sweep, log
        from transferlab.run_folders import refuse_shared_run_folders, same_run_lines
        from transferlab.workers import workers_stop_with_the_sweep

        jobs = self._jobs(arguments)
        refuse_shared_run_folders([(overrides, folder) for overrides, folder, _ in jobs])
        for line in same_run_lines([(overrides, config) for overrides, _, config in jobs]):
            log.warning("warning: %s", line)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        in_workers = type(self.launcher).__name__ in WORKER_LAUNCHERS
        with workers_stop_with_the_sweep(sweep_dir) if in_workers else contextlib.nullcontext() as stop:
            try:
                returns = super().sweep(arguments)
            except Exception as error:
                if stop is None or stop.signal is None:
                    raise
                # A worker that the signal reached before its first job ended at once, and the
                # launcher gave up on the others.
                raise RunInterrupted(str(sweep_dir), 128 + stop.signal, sweep=True) from error
        finish_sweep([job for batch in returns for job in batch], sweep_dir,
                     stopped_by=stop.signal if stop is not None else None)
        return returns

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        """Nothing left to check: sweep() composed every job of the sweep before the first ran."""

    def _jobs(self, arguments: list[str]) -> list[tuple[list[str], Path, dict[str, Any]]]:
        """(overrides, run folder, config) of every job of the sweep, in order, as Hydra's launchers
        will compose them."""
        from transferlab.config import as_dict, validate

        loader = self.hydra_context.config_loader
        parsed = OverridesParser.create(config_loader=loader).parse_overrides([*self._parse_config(), *arguments])
        jobs = [job for batch in self.split_arguments(parsed, None) for job in batch]
        folders = []
        for overrides in jobs:
            job_config = loader.load_sweep_config(master_config=self.config, sweep_overrides=list(overrides))
            config = validate(job_config)
            folder = Path(str(job_config.hydra.sweep.dir)) / str(job_config.hydra.sweep.subdir)
            folders.append((list(overrides), folder, as_dict(config)))
        return folders
