"""Tuning on a validation split with Hydra's Optuna sweeper; the test set never takes part.

Under ``hydra/sweeper=optuna`` each run returns its final validation accuracy (``data.val_fraction``
of the training subset, held out) for the sweeper to maximise (the direction's default here). A
sweep that has no validation split, or that is told to minimise, is refused before any trial runs.
(``transferlab tune`` is transferlab.tune.)

No torch here: every run imports this module.
"""

from __future__ import annotations

import enum
from typing import Any

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from transferlab.errors import SweepRefused

OPTUNA_SWEEPER = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"


def is_optuna_sweep(hydra_config: DictConfig) -> bool:
    return hydra_config.mode == RunMode.MULTIRUN and hydra_config.sweeper.get("_target_") == OPTUNA_SWEEPER


def objective(record: dict[str, Any]) -> float | None:
    """What a run returns to the Optuna sweeper: its final validation accuracy, never a test figure.
    None for a run that did not complete: the sweeper cannot make a number of it and records the
    trial as failed, and the study goes on (a NaN would stop the sweeper with an error instead)."""
    if record.get("status") != "completed" or record.get("val_acc") is None:
        return None
    return float(record["val_acc"])


class RequireValidationSplit(Callback):
    """Makes an Optuna sweep maximise unless told otherwise (runs return their validation accuracy),
    and refuses one that has no validation split to score, or that is told to minimise."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweeper = config.hydra.sweeper
        if sweeper.get("_target_") != OPTUNA_SWEEPER:
            return
        if config.data.val_fraction == 0:
            raise SweepRefused("hydra/sweeper=optuna maximises the validation accuracy, but data.val_fraction=0 "
                               "holds out no validation split; set data.val_fraction in (0, 1), e.g. 0.2 (the "
                               "test set is never used for tuning)")
        # The plugin's schema default is its Direction.minimize member; a direction that anyone set (on
        # the command line, in a config file) is a string. The sweeper is made from this config next.
        if isinstance(sweeper.direction, enum.Enum):
            sweeper.direction = "maximize"
        direction = getattr(sweeper.direction, "name", sweeper.direction)
        if direction != "maximize":
            raise SweepRefused(f"hydra.sweeper.direction={direction} is not allowed: runs return their validation "
                               "accuracy; set hydra.sweeper.direction=maximize")
