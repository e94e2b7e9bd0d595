"""The epoch loop: train, evaluate, tell the callbacks. Everything a run does at an epoch's end
(its record and checkpoint, trackers, the log line, the LP-FT switch, a progress bar) is a
callback that run.py hands in; the loop itself knows none of them.

    fit(model, nn.CrossEntropyLoss(), train_batches, optimizer, range(1, 11), device=device,
        evaluations={"test": test_batches}, callbacks=[...])

Anything a callback raises stops the fit: that is also how a test stops a run at a given point.
A fit that is not a loop (an L-BFGS probe, fitted at once) tells its callbacks the same way:
``end_epoch`` inside ``stopping(callbacks)``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from transferlab.engine import EpochResult, NonFiniteLoss, StepSettings, evaluate, train_one_epoch
from transferlab.errors import TransferlabError


class Batches(Protocol):
    """A data loader as the loop sees it (transferlab.data.pipelines makes them)."""

    def __len__(self) -> int:
        """Batches per epoch."""

    def epoch(self, epoch: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        """The (inputs, labels) batches of ``epoch`` (1-based), on the device; the order may depend
        on the epoch, so a resumed run sees what it would have seen."""


@dataclass(frozen=True)
class EpochEnd:
    """What an epoch did, as the callbacks get it."""

    epoch: int  # 1-based, just finished
    last_epoch: int  # the run's last epoch (train.epochs)
    trained: EpochResult
    evaluated: dict[str, EpochResult]  # by split: "test", and "val" with a validation split
    lr: float | None  # the first parameter group's learning rate when the epoch started (None: no optimizer ran)


class Callback:
    """What the loop calls, in the order of its list; each method does nothing unless overridden."""

    def on_epoch_start(self, epoch: int) -> None:
        pass

    def on_batch(self, step: int, totals) -> None:
        """After training batch ``step`` (1-based); ``totals`` is engine's running sums, which
        ``running()`` reads without waiting for the device. Called only where overridden."""

    def on_epoch_end(self, end: EpochEnd) -> None:
        pass

    def on_fit_end(self) -> None:
        """The last epoch finished."""

    def on_fit_stop(self) -> None:
        """The fit stopped early (an error, Ctrl-C, SIGTERM); the exception goes on after this."""


def fit(model: nn.Module, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], train_batches: Batches,
        optimizer: torch.optim.Optimizer, epochs: range, *, device: torch.device, evaluations: Mapping[str, Batches],
        step: StepSettings = StepSettings(), scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        callbacks: Sequence[Callback] = ()) -> None:
    """Train ``model`` on ``loss_fn`` for each epoch of ``epochs`` (``range(4, 11)`` continues after
    epoch 3), evaluating on each of ``evaluations`` after each epoch. ``scheduler`` is stepped after
    every optimizer step; ``step`` (autocast dtype, GradScaler, clipping) goes to
    engine.train_one_epoch. A NaN or infinite training loss stops the fit with a TransferlabError."""
    batch_hooks = [c.on_batch for c in callbacks if type(c).on_batch is not Callback.on_batch]

    def on_batch(batch: int, totals) -> None:
        for hook in batch_hooks:
            hook(batch, totals)

    with stopping(callbacks):
        for epoch in epochs:
            for callback in callbacks:
                callback.on_epoch_start(epoch)
            lr = optimizer.param_groups[0]["lr"]
            try:
                trained = train_one_epoch(model, loss_fn, train_batches.epoch(epoch), optimizer, device, step,
                                          scheduler=scheduler, on_batch=on_batch if batch_hooks else None)
            except NonFiniteLoss as error:
                raise TransferlabError(f"epoch {epoch}, batch {error.batch}: the training loss is not finite "
                                       "(NaN or inf); try a lower optim.lr or precision=fp32") from error
            # The test set's per-image predictions of the last epoch: the run's final evaluation.
            evaluated = {split: evaluate(model, batches.epoch(epoch), device, step.amp_dtype,
                                         keep_predictions=split == "test" and epoch == epochs[-1])
                         for split, batches in evaluations.items()}
            end_epoch(callbacks, EpochEnd(epoch, epochs[-1], trained, evaluated, lr))
    for callback in callbacks:
        callback.on_fit_end()


def end_epoch(callbacks: Sequence[Callback], end: EpochEnd) -> None:
    """Tell every callback, in list order, that an epoch ended."""
    for callback in callbacks:
        callback.on_epoch_end(end)


@contextlib.contextmanager
def stopping(callbacks: Sequence[Callback]) -> Iterator[None]:
    """Whatever stops the block (an error, Ctrl-C, SIGTERM, a callback) is told to every callback
    (``stop_callbacks``), then goes on."""
    try:
        yield
    except BaseException:
        stop_callbacks(callbacks)
        raise


def stop_callbacks(callbacks: Sequence[Callback]) -> None:
    """Tell every callback that the fit stopped; one that fails is logged, and the others are told
    too (the exception that stopped the fit is the one that goes on)."""
    for callback in callbacks:
        try:
            callback.on_fit_stop()
        except Exception:
            logging.getLogger(__name__).exception("%s could not stop cleanly", type(callback).__name__)
