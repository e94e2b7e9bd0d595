"""The one way a run or a sweep starts: ``launch(overrides)`` composes conf/ with Hydra, runs each
job (transferlab.jobs.run_job) and returns what each run did. ``transferlab train``, ``study`` and
``tune`` all call it; Hydra's own flags (--help, --cfg, -sc, --info) go through ``hydra_command``.

Hydra is driven through its Python API (the ``Hydra`` object that ``hydra.main`` builds), with the
overrides as a list: nothing reads or rewrites sys.argv or the environment. Composition errors
(an unknown key or option, a bad type, a YAML file that does not parse) and a config that is not
allowed come out as one ConfigError line; no run folder is written for them.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from transferlab.composition import command_line_overrides, composition_error_line, config_dir, register_with_hydra, yaml_error_line
from transferlab.errors import ConfigError, JobRaised, SweepRefused, TransferlabError
from transferlab.hydra_internals import job_outcome, main_hydra
from transferlab.records import RunResult
from transferlab.tuning import is_optuna_sweep, objective

CONFIG_NAME = "config"


def launch(overrides: Sequence[str], multirun: bool = False, callbacks: Sequence[Any] = (),
           extra_config_dir: str | None = None) -> list[RunResult]:
    """Run what ``transferlab train [-m] OVERRIDES`` runs; the result of each run in sweep order
    (a run that completed before with the same config is skipped: its result says so). A run that
    fails is a result, not an error; a ConfigError or TransferlabError means nothing ran (or, for
    the run's own files, that they could not be written). ``callbacks`` (transferlab.fit) are
    given to every run that trains in this process (tests stop runs with them)."""
    job, overrides = _Job(tuple(callbacks)), command_line_overrides(overrides)
    with _hydra(extra_config_dir) as hydra:
        # As `hydra.main` does: -m, or hydra.mode=MULTIRUN in the config or the overrides, sweeps.
        mode = hydra.get_mode(config_name=CONFIG_NAME, overrides=overrides)
        if mode is None or (multirun and mode == RunMode.RUN):
            mode = RunMode.MULTIRUN if multirun else RunMode.RUN
            overrides.append(f"hydra.mode={mode.name}")
        if mode == RunMode.RUN:
            returned = hydra.run(config_name=CONFIG_NAME, task_function=job, overrides=overrides)
            return [returned.return_value]
        returned = hydra.multirun(config_name=CONFIG_NAME, task_function=job, overrides=overrides)
    if returned is None:  # the Optuna sweeper, whose jobs return their objective: results kept in-process
        return job.results
    return [_result(job_return) for batch in returned for job_return in batch]


def hydra_command(options: argparse.Namespace, args_parser: argparse.ArgumentParser) -> None:
    """Hydra's flags of `transferlab train` other than -m: --help, --hydra-help, --cfg (with
    --package, --resolve), --shell-completion, --info; what they print, Hydra prints."""
    with _hydra(options.config_dir) as hydra:
        name = options.config_name or CONFIG_NAME
        if options.help:
            hydra.app_help(config_name=name, args_parser=args_parser, args=options)
        elif options.hydra_help:
            hydra.hydra_help(config_name=name, args_parser=args_parser, args=options)
        elif options.cfg:
            hydra.show_cfg(config_name=name, overrides=command_line_overrides(options.overrides),
                           cfg_type=options.cfg, package=options.package, resolve=options.resolve)
        elif options.shell_completion:
            hydra.shell_completion(config_name=name, overrides=options.overrides)
        elif options.info:
            hydra.show_info(options.info, config_name=name, overrides=command_line_overrides(options.overrides))


class _Job:
    """The task function Hydra calls for each job. Under the Optuna sweeper a job returns the number
    it maximises, the run's validation accuracy (never a test figure), and the results stay here."""

    def __init__(self, callbacks: tuple[Any, ...]):
        self.callbacks = callbacks
        self.results: list[RunResult] = []

    def __call__(self, cfg: DictConfig) -> RunResult | float | None:
        from transferlab.jobs import run_job  # torch: only once a run starts, never for --help or Tab

        hydra_config = HydraConfig.instance().cfg  # the `hydra` node of this job, as Hydra would save it
        result = run_job(cfg, Path(hydra_config.hydra.runtime.output_dir), hydra_config, self.callbacks)
        if is_optuna_sweep(hydra_config.hydra):
            self.results.append(result)
            return objective(result.record)
        return result


def _result(job_return: JobReturn) -> RunResult:
    """A sweep job's result; a job that raised (in a launcher's worker) becomes a failed one."""
    outcome = job_outcome(job_return)
    if job_return.status == JobStatus.COMPLETED and isinstance(outcome, RunResult):
        return outcome
    folder = Path(str(job_return.hydra_cfg.hydra.runtime.output_dir)) if job_return.hydra_cfg else Path()
    error = outcome
    return RunResult(folder, {"status": "failed", "error": f"{type(error).__name__}: {error}",
                              "overrides": list(job_return.overrides or [])})


@contextlib.contextmanager
def _hydra(extra_config_dir: str | None = None) -> Iterator[Any]:
    """Hydra's app object over conf/ (and ``extra_config_dir`` first, Hydra's --config-dir), its
    errors as one line; Hydra's global state is cleared afterwards."""
    from hydra.core.global_hydra import GlobalHydra

    register_with_hydra()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level  # Hydra configures the runs' logging; put it back after
    folder = None if extra_config_dir is None else Path(extra_config_dir).expanduser().resolve()
    if folder is not None and not folder.is_dir():
        raise ConfigError(f"--config-dir {extra_config_dir}: no such folder")
    try:
        yield main_hydra("train", str(config_dir()), None if folder is None else str(folder))
    except (HydraException, OmegaConfBaseException) as error:
        cause = _transferlab_cause(error)
        if cause is not None:  # raised by one of our resolvers (e.g. a bad name)
            raise cause from None
        raise ConfigError(composition_error_line(error)) from error
    except yaml.YAMLError as error:  # a file of conf/ that is not YAML: Hydra lets PyYAML's report through
        raise ConfigError(yaml_error_line(error)) from error
    except SweepRefused as refused:
        raise ConfigError(str(refused)) from None
    except JobRaised as raised:  # the job raised: its config is not allowed, its files could not be written, a bug
        if isinstance(raised.error, OSError):
            raise TransferlabError(f"cannot write the run's files: {raised.error}") from raised.error
        raise raised.error from None
    except ValueError as error:  # Hydra's check of its own flags
        raise ConfigError(str(error)) from error
    except OSError as error:  # Hydra could not make the run folder or write its files
        raise TransferlabError(f"cannot write the run's files: {error}") from error
    finally:
        GlobalHydra.instance().clear()
        root.handlers[:] = handlers
        root.setLevel(level)


def _transferlab_cause(error: BaseException) -> TransferlabError | None:
    """The TransferlabError that Hydra or OmegaConf wrapped into ``error``, if any."""
    while error is not None and not isinstance(error, TransferlabError):
        error = error.__cause__ or error.__context__
    return error
