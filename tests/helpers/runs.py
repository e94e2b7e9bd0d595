"""The real config composed and shrunk to seconds on the CPU, and a test's hand in a run."""

from __future__ import annotations

from collections.abc import Callable

from hydra import compose, initialize_config_dir

import transferlab.composition as composition_module
from transferlab.composition import config_dir, register_with_hydra
from transferlab.config import Config
from transferlab.fit import Callback

# A CPU run of a few seconds: small images, a few hundred generated images, no download.
TINY = [
    "data=synthetic", "data.image_size=32", "data.num_train=320", "data.num_test=160", "data.fraction=1.0",
    "model.pretrained=false", "train.epochs=1", "train.batch_size=32", "train.eval_batch_size=80",
    "device=cpu", "progress=off",
]


# A sweep's runs of a second or so each, for the launcher tests.
DRY_RUN = ["data=synthetic", "data.image_size=32", "data.num_train=48", "data.num_test=24", "train.epochs=1",
           "model.pretrained=false", "device=cpu", "progress=off"]


def compose_config(overrides: list[str], return_hydra_config: bool = False):
    """The real conf/ composed with ``overrides``, as Hydra would for `transferlab train`."""
    register_with_hydra()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=return_hydra_config)


def tiny_config(*overrides: str) -> Config:
    return composition_module.compose_config([*TINY, *overrides])


class At(Callback):
    """A test's hand in a run (``run_training(..., callbacks=[At(2, 1, interrupt)])``): calls ``do()``
    after training batch ``batch`` of epoch ``epoch``, or at that epoch's end with batch=None
    (after the run's own callbacks: its checkpoint is handed to the writer); every batch of every
    epoch with epoch=None."""

    def __init__(self, epoch: int | None, batch: int | None, do: Callable[[], object]):
        self.epoch, self.batch, self.do, self.current = epoch, batch, do, 0

    def on_epoch_start(self, epoch: int) -> None:
        self.current = epoch

    def on_batch(self, step: int, totals) -> None:
        if self.epoch is None or (self.batch is not None and (self.current, step) == (self.epoch, self.batch)):
            self.do()

    def on_epoch_end(self, end) -> None:
        if self.batch is None and end.epoch == self.epoch:
            self.do()


def interrupt() -> None:
    """What Ctrl-C does."""
    raise KeyboardInterrupt
