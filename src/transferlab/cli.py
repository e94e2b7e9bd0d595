"""The ``transferlab`` command: parse, call, and turn known errors into one line and an exit code.

    transferlab train [OVERRIDES ...]      one run, or a sweep with -m (Hydra)
    transferlab study [OVERRIDES ...]     the three sweeps of the study
    transferlab report [PATH ...] [--out DIR]
    transferlab tune PART [--trials N] [OVERRIDES ...]
    transferlab prepare [model=NAME] [data.root=DIR]
    transferlab cache list | remove PATH ... | remove --all
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

import hydra
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from transferlab.config import composition_error_line, yaml_error_line
from transferlab.errors import ConfigError, JobRaised, RunInterrupted, TransferlabError
from transferlab.tuning import SweepRefused, is_optuna_sweep, objective

USAGE = """usage: transferlab COMMAND [ARGS ...]

transferlab: how much does pretraining help, with how much data, for which model, with which
layers trained? On CIFAR-10, CIFAR-100 or your own image folder.

commands:
  train    train and evaluate one run, or a sweep with -m (Hydra overrides: KEY=VALUE ...)
           e.g. transferlab train model=alexnet data.fraction=0.1
                transferlab train -m experiment=part_a
           transferlab train --help lists every setting
  study    the whole study: the sweeps experiment=part_a, part_b and part_c (12 runs)
           e.g. transferlab study    or, a dry run without downloads:
                transferlab study data=synthetic data.image_size=64 model.pretrained=false train.epochs=1
  report   tables and figures from finished runs: transferlab report [PATH ...] [--out DIR]
  tune     tune optim.lr per arm of a part on a validation split, then run each arm's best:
           transferlab tune part_a [--trials 8] [OVERRIDES ...]  (needs transferlab[optuna])
  prepare  download and verify CIFAR-10 (or data=cifar100; data=imagefolder: decode its cache) and the
           pretrained weights for offline machines: transferlab prepare [data=NAME] [model=NAME] [data.root=DIR]
  cache    the decoded-image caches of data=imagefolder: transferlab cache list, transferlab cache remove PATH|--all

Run `transferlab COMMAND --help` for a command's options."""


def _train_job(cfg: DictConfig) -> dict | float | None:
    """One Hydra job (a run, or one run of a sweep): its run record; under the Optuna sweeper, which
    maximises what a job returns, its validation accuracy (never a test figure)."""
    from transferlab.sweep import run_job

    hydra_config = HydraConfig.instance().cfg  # the `hydra` node of this job, as Hydra would save it
    record = run_job(cfg, Path(hydra_config.hydra.runtime.output_dir), hydra_config)
    return objective(record) if is_optuna_sweep(hydra_config.hydra) else record


def train(args: list[str]) -> int:
    from transferlab.config import config_dir, register_with_hydra

    register_with_hydra()
    train_app = hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")(_train_job)
    saved_argv, saved_full_error = sys.argv, os.environ.get("HYDRA_FULL_ERROR")
    sys.argv = [saved_argv[0], *args]  # Hydra parses sys.argv
    # Let composition errors reach us instead of Hydra's multi-line report, unless the user asked for it.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        train_app()
    except (HydraException, OmegaConfBaseException) as error:
        if saved_full_error:
            raise
        cause = _transferlab_cause(error)
        if cause is not None:  # raised by one of our resolvers (e.g. a bad name)
            raise cause from None
        raise ConfigError(composition_error_line(error)) from error
    except yaml.YAMLError as error:  # a file of conf/ that is not YAML: Hydra lets PyYAML's report through
        if saved_full_error:
            raise
        raise ConfigError(yaml_error_line(error)) from error
    except SweepRefused as refused:
        raise ConfigError(str(refused)) from None
    except JobRaised as raised:  # the run's own files could not be written, or a bug (its traceback stays)
        if isinstance(raised.error, OSError):
            raise TransferlabError(f"cannot write the run's files: {raised.error}") from raised.error
        raise raised.error from None
    except ValueError as error:  # Hydra's check of its own flags; runs never raise out of their job
        raise ConfigError(str(error)) from error
    except OSError as error:  # Hydra could not make the run folder or write its files
        raise TransferlabError(f"cannot write the run's files: {error}") from error
    finally:
        sys.argv = saved_argv
        if saved_full_error is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
    return 0


def _transferlab_cause(error: BaseException) -> TransferlabError | None:
    """The TransferlabError that Hydra or OmegaConf wrapped into ``error``, if any."""
    while error is not None and not isinstance(error, TransferlabError):
        error = error.__cause__ or error.__context__
    return error


STUDY_PARTS = ("part_a", "part_b", "part_c")


def study(args: list[str]) -> int:
    """The whole study: the three experiment sweeps in turn, with the same extra overrides. A part
    that fails does not stop the next; the exit code is non-zero when any run did not complete."""
    if any(arg in ("-h", "--help") for arg in args):
        print("usage: transferlab study [OVERRIDES ...]\n\nRuns `transferlab train -m experiment=PART OVERRIDES` "
              f"for PART in {', '.join(STUDY_PARTS)} (12 runs); finished runs are skipped.")
        return 0
    failed = []
    for part in STUDY_PARTS:
        try:
            train(["-m", f"experiment={part}", *args])
        except SystemExit as exit_:
            if exit_.code:
                failed.append(part)
    if failed:
        print(f"transferlab study: runs did not complete in: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def prepare(args: list[str]) -> int:
    from transferlab.prepare import main as prepare_main

    return prepare_main(args)


def tune(args: list[str]) -> int:
    from transferlab.tuning import tune as tune_main

    return tune_main(args)


def cache(args: list[str]) -> int:
    from transferlab.caches import main as cache_main

    return cache_main(args)


def report(args: list[str]) -> int:
    from transferlab.report import main as report_main

    return report_main(args)


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "train": train, "study": study, "report": report, "prepare": prepare, "tune": tune, "cache": cache,
}

COMPLETION_FLAGS = ("-sc", "--shell-completion")  # Hydra's
# Commands whose arguments are Hydra overrides of conf/ (study's are given to every part's sweep,
# prepare's are composed like train's), so Hydra completes them.
OVERRIDE_COMMANDS = ("train", "study", "prepare")
COMMAND_WORD = re.compile(r"(\s*\S+\s+)(\S*)(\s.*)?", re.DOTALL)  # app, command word, the rest


def is_completion_request(argv: list[str]) -> bool:
    """`transferlab -sc ...` (what the installed shell script calls) or `transferlab train -sc ...`."""
    return argv[0] in COMPLETION_FLAGS or (argv[0] in OVERRIDE_COMMANDS and any(a in COMPLETION_FLAGS for a in argv))


def shell_completion(argv: list[str]) -> int:
    """Hydra's shell completion for the whole command. ``install=SHELL`` and ``uninstall=SHELL``
    print Hydra's script (it registers `transferlab` and calls `transferlab -sc query=SHELL` with
    COMP_LINE set to the line typed so far). A query completes the command names in the first
    word, and after train, study or prepare hands Hydra the line without the command word, which
    it would otherwise read as an override."""
    args = [arg for arg in argv if arg not in (*COMPLETION_FLAGS, *COMMANDS)]
    query = next((arg.partition("=")[2] for arg in args if arg.startswith("query=")), None)
    try:
        if query is None:
            return train(["-sc", *args])
        parts = COMMAND_WORD.fullmatch(os.environ.get("COMP_LINE", ""))
        if parts is None:  # the cursor is still on `transferlab`
            return 0
        app, command, rest = parts.groups()
        if rest is None:  # the cursor is on the command word
            separator = "\n" if query == "fish" else " "  # how Hydra's scripts for these shells read the reply
            print(separator.join(name for name in COMMANDS if name.startswith(command)))
            return 0
        if command not in OVERRIDE_COMMANDS:
            return 0  # report takes paths: the shell's own file completion applies
        os.environ["COMP_LINE"] = app + rest.lstrip()
        return train(["-sc", *args])
    except TransferlabError as error:
        print(f"transferlab: error: {' '.join(str(error).split())}", file=sys.stderr)  # Hydra's are multi-line
        return 1


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    if is_completion_request(argv):
        return shell_completion(argv)
    command, args = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"transferlab: unknown command {command!r}; choose one of: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    try:
        return COMMANDS[command](args)
    except TransferlabError as error:
        print(f"transferlab {command}: error: {error}", file=sys.stderr)
        return 1
    except RunInterrupted as interrupt:
        if interrupt.sweep:
            print(f"transferlab {command}: interrupted; the runs of the sweep in {interrupt.run_dir} that were "
                  "training are marked interrupted and keep their last epoch-end checkpoints: run the same command "
                  "again to resume", file=sys.stderr)
            return interrupt.exit_code
        print(f"transferlab {command}: interrupted; the run in {interrupt.run_dir} is marked interrupted and "
              "keeps its last epoch-end checkpoint: run the same command again to resume", file=sys.stderr)
        return interrupt.exit_code
    except KeyboardInterrupt:
        print(f"transferlab {command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
