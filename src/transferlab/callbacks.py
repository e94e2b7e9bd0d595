"""What a run does at each epoch's end, as callbacks of transferlab.fit: each finished epoch into the
record, its checkpoint (with the run.json that goes with it), the trackers, the log line, the
LP-FT switch, the last epoch's test predictions and the progress bar. ``run_callbacks`` lists a
run's in their order; each does one thing."""

from __future__ import annotations

import copy
import io
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from transferlab.checkpoint import RESUME_ADVICE, CheckpointWriteError, CheckpointWriter, write_failure
from transferlab.config import Config
from transferlab.engine import ProgressBar, StepSettings
from transferlab.errors import TransferlabError
from transferlab.fit import Callback, EpochEnd
from transferlab.loggers import MetricLogger
from transferlab.models import count_parameters, unfreeze
from transferlab.records import PREDICTIONS_FILE, RUN_FILE, RunRecord, write_atomic, write_record

log = logging.getLogger("transferlab.run")
SPLIT_NAMES = {"test": "test", "val": "validation"}


def history_entry(end: EpochEnd) -> dict[str, Any]:
    """The epoch as run.json's ``history`` and metrics.csv hold it."""
    tested, validated = end.evaluated["test"], end.evaluated.get("val")
    validation = {} if validated is None else {"val_loss": validated.loss, "val_acc": validated.accuracy}
    return {
        "epoch": end.epoch,
        "train_loss": end.trained.loss,
        "train_acc": end.trained.accuracy,
        "test_loss": tested.loss,
        "test_acc": tested.accuracy,
        **validation,
        "epoch_seconds": end.trained.seconds,
        "eval_seconds": tested.seconds,
        "images_per_second": end.trained.images_per_second,
        "lr": end.lr,
    }


class FiniteEvaluation(Callback):
    """A NaN or infinite test (or validation) loss fails the run: its weights have diverged, even
    where the training loss of the epoch, summed before the last steps, was still finite."""

    def on_epoch_end(self, end: EpochEnd) -> None:
        for split, result in end.evaluated.items():
            if not math.isfinite(result.loss):
                raise TransferlabError(f"epoch {end.epoch}: the {SPLIT_NAMES.get(split, split)} loss is not finite "
                                       f"({result.loss}); the weights diverged: try a lower optim.lr or precision=fp32")


class SavePredictions(Callback):
    """The last epoch's per-image test predictions as predictions.npz beside run.json, written
    atomically before the run is marked completed: a few hundred KB at most for 10,000 images."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir

    def on_epoch_end(self, end: EpochEnd) -> None:
        predictions = end.evaluated["test"].predictions
        if end.epoch != end.last_epoch or predictions is None:
            return
        buffer = io.BytesIO()
        np.savez_compressed(buffer, predicted=predictions.predicted, labels=predictions.labels,
                            true_probability=predictions.true_probability)
        path = self.run_dir / PREDICTIONS_FILE
        try:
            write_atomic(path, buffer.getvalue())
        except OSError as error:  # a full disk: one line; the last checkpoint stays for a resume
            raise TransferlabError(f"the run's test predictions could not be saved: "
                                   f"{write_failure(path, len(buffer.getvalue()), error)}") from error


class RecordEpochs(Callback):
    """Each finished epoch into the record: its history entry, and the run's figures so far."""

    def __init__(self, record: RunRecord):
        self.record = record

    def on_epoch_end(self, end: EpochEnd) -> None:
        entry = history_entry(end)
        self.record.history.append(entry)
        self.record.set_results(entry)


def record_bytes(record: RunRecord) -> int:
    """About the size of ``record``'s run.json: what a full disk must make room for."""
    return len(json.dumps(record.to_dict(), indent=2).encode())


class CheckpointEpochs(Callback):
    """Hands each epoch's checkpoint to the background writer, and with it the run.json to write
    once the checkpoint is on disk (so run.json never counts an epoch a resume would redo). The
    last epoch's checkpoint would only be deleted at the end: it is written only when kept
    (``keep_last``) or when what the run writes after its last epoch may fail (``write_last``:
    save_model's model.pt, which a rerun then writes from it without training again). A failed
    earlier write stops the run at the next epoch's end."""

    def __init__(self, writer: CheckpointWriter, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 scaler: torch.amp.GradScaler | None, run_dir: Path, record: RunRecord, keep_last: bool,
                 scheduler: torch.optim.lr_scheduler.LRScheduler | None = None, write_last: bool = False):
        self.writer, self.model, self.optimizer, self.scaler = writer, model, optimizer, scaler
        self.run_dir, self.record, self.keep_last, self.scheduler = run_dir, record, keep_last, scheduler
        self.write_last = keep_last or write_last

    def on_epoch_end(self, end: EpochEnd) -> None:
        if end.epoch == end.last_epoch and not self.write_last:
            return
        self.record.checkpoint_seconds = self.writer.seconds
        saved = copy.deepcopy(self.record)  # the record of this epoch: the run goes on changing its own

        def write_saved_record() -> None:
            try:
                write_record(self.run_dir, saved.to_dict())
            except OSError as error:
                raise CheckpointWriteError(write_failure(self.run_dir / RUN_FILE, record_bytes(saved), error)) from error

        try:
            self.writer.save(self.model, self.optimizer, self.scaler, end.epoch, self.record.history,
                             self.record.config, after=write_saved_record, scheduler=self.scheduler)
        except CheckpointWriteError as error:
            raise CheckpointWriteError(f"the run stops after epoch {end.epoch}, as its files could not be saved (a "
                                       f"resume starts after epoch {len(self.writer.saved_history)}): {error}") from error

    def on_fit_end(self) -> None:
        """Wait for the last write. When it failed and the checkpoint is not to be kept, nothing is
        lost: the run is complete, and that checkpoint would be deleted."""
        try:
            self.writer.finish()
        except CheckpointWriteError as error:
            if self.keep_last:
                raise CheckpointWriteError(f"the run finished, but the checkpoint it was asked to keep "
                                           f"(keep_checkpoint=true) could not be saved: {error}") from error
            log.warning("a checkpoint could not be saved (%s), but the run finished without needing it: nothing is "
                        "lost", str(error).replace(RESUME_ADVICE, ""))


class Trackers(Callback):
    """Each epoch to the run's tracker (TensorBoard, MLflow; none: nothing)."""

    def __init__(self, tracker: MetricLogger):
        self.tracker = tracker

    def on_epoch_end(self, end: EpochEnd) -> None:
        self.tracker.log_epoch(history_entry(end))


class EpochLog(Callback):
    """One line per epoch on the console and in train.log."""

    def on_epoch_end(self, end: EpochEnd) -> None:
        tested = end.evaluated["test"]
        log.info("epoch %d/%d  train loss %.4f acc %.2f%%  test loss %.4f acc %.2f%%  %.1f s  %.0f img/s",
                 end.epoch, end.last_epoch, end.trained.loss, 100 * end.trained.accuracy, tested.loss,
                 100 * tested.accuracy, end.trained.seconds, end.trained.images_per_second)


class LpFtSwitch(Callback):
    """LP-FT's switch: after ``unfreeze_at`` epochs of the linear probe, the frozen parameters train
    too, in a new parameter group of the optimizer with its settings (learning rate, momentum...)."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, record: RunRecord, unfreeze_at: int,
                 scheduler: torch.optim.lr_scheduler.LRScheduler | None = None):
        self.model, self.optimizer, self.record, self.unfreeze_at = model, optimizer, record, unfreeze_at
        self.scheduler = scheduler

    def on_epoch_start(self, epoch: int) -> None:
        if epoch == self.unfreeze_at + 1:
            start_fine_tuning(self.model, self.optimizer, self.record, self.scheduler)


def start_fine_tuning(model: torch.nn.Module, optimizer: torch.optim.Optimizer, record: RunRecord,
                      scheduler: torch.optim.lr_scheduler.LRScheduler | None = None) -> None:
    """The switch itself (also when a resumed run's checkpoint is from after it): the new group is
    scheduled like the others."""
    from transferlab.schedules import follow_new_group

    from transferlab.schedules import describe_groups

    optimizer.add_param_group({"params": unfreeze(model)})
    if scheduler is not None:
        follow_new_group(scheduler, optimizer)
    record.param_groups = describe_groups(optimizer)
    record.params_trainable_after_unfreeze = count_parameters(model)[1]
    log.info("fine-tuning from now on: %d of %d parameters train", record.params_trainable_after_unfreeze,
             record.params_total)


class Progress(Callback):
    """A progress bar per training epoch (progress=on, or auto on a terminal). It is cleared when
    the epoch ends or stops, so that what is printed next starts on a line of its own."""

    def __init__(self, batches_per_epoch: int, last_epoch: int, stream=None):
        self.batches, self.last_epoch = batches_per_epoch, last_epoch
        self.stream = stream if stream is not None else sys.stdout
        self.bar: ProgressBar | None = None

    def on_epoch_start(self, epoch: int) -> None:
        self.bar = ProgressBar(f"epoch {epoch}/{self.last_epoch}", self.batches, self.stream)

    def on_batch(self, step: int, totals) -> None:
        self.bar(step, totals)

    def on_epoch_end(self, end: EpochEnd) -> None:
        self._close()

    def on_fit_stop(self) -> None:
        self._close()

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def run_callbacks(config: Config, run_dir: Path, record: RunRecord, tracker: MetricLogger, writer: CheckpointWriter,
                   model: torch.nn.Module, optimizer: torch.optim.Optimizer, step: StepSettings,
                   scheduler: torch.optim.lr_scheduler.LRScheduler | None,
                   progress_batches: int | None) -> list[Callback]:
    """The run's own epoch-end callbacks, in the order they run (docs/development.md): the LP-FT
    switch, the progress bar (over ``progress_batches`` batches an epoch; None: no bar), the finite
    check, the predictions, the record, the checkpoint, the trackers, the log line."""
    unfreeze_at, epochs = config.freeze.unfreeze_at_epoch, config.train.epochs
    return [
        *([LpFtSwitch(model, optimizer, record, unfreeze_at, scheduler)] if unfreeze_at is not None else []),
        *([Progress(progress_batches, epochs)] if progress_batches is not None else []),
        FiniteEvaluation(),
        SavePredictions(run_dir),
        RecordEpochs(record),
        CheckpointEpochs(writer, model, optimizer, step.scaler, run_dir, record, keep_last=config.keep_checkpoint,
                         scheduler=scheduler, write_last=config.save_model),
        Trackers(tracker),
        EpochLog(),
    ]
