"""Every use of Hydra's private API, in one place: what transferlab needs that Hydra's public API
does not give (its app object driven with a list of overrides instead of sys.argv, its own
argument parser, its basic sweeper to subclass, a job's outcome read without Hydra printing a line
of its own). A Hydra release may change any of them; tests/test_hydra_internals.py exercises each
and fails on a Hydra version not in CHECKED_ON, so that a new release is checked before it is used.
Only Hydra is imported here (hydra_plugins/ imports this module whenever Hydra starts)."""

from __future__ import annotations

import argparse
from typing import Any

from hydra.core.utils import JobReturn

CHECKED_ON = ("1.3.8",)  # hydra-core versions whose private API below was checked (pyproject allows >=1.3,<1.4)


def basic_sweeper() -> type:
    """Hydra's basic sweeper, the base of transferlab's (hydra_plugins/transferlab_sweeper.py), as
    its module defines it now: Hydra's plugin scan runs each plugin module again, so a class taken
    once at import would be an older copy than the one Hydra instantiates."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    return BasicSweeper


def main_hydra(task_name: str, primary_config_dir: str, extra_config_dir: str | None = None) -> Any:
    """Hydra's app object (``hydra._internal.hydra.Hydra``, what ``hydra.main`` builds) over the
    configs in ``primary_config_dir``, with ``extra_config_dir`` searched first (--config-dir)."""
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path

    search_path = create_config_search_path(f"file://{primary_config_dir}")
    if extra_config_dir is not None:
        search_path.prepend(provider="command-line", path=f"file://{extra_config_dir}")
    return Hydra.create_main_hydra2(task_name=task_name, config_search_path=search_path)


def hydra_args_parser() -> argparse.ArgumentParser:
    """The argument parser of a ``hydra.main`` app (-m, --cfg, --help, ... and the overrides)."""
    from hydra._internal.utils import get_args_parser

    return get_args_parser()


def job_outcome(job_return: JobReturn) -> Any:
    """What a job returned, or the exception it raised, without raising it: Hydra's public
    ``return_value`` raises a failed job's exception and prints a line of its own first."""
    return job_return._return_value
