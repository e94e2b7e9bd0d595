"""Where a run starts: after the epochs of its verified checkpoint (resume=true, the default), or
at its first epoch, with the checkpoint of the run it starts over from removed. docs/resuming.md
says what a resume checks and refuses."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from transferlab.callbacks import start_fine_tuning
from transferlab.checkpoint import (
    CHECKPOINT_FILE, CheckpointError, CheckpointWriter, digest_path, load_checkpoint, other_thread_count,
    remove_checkpoint, restore, verify_digest,
)
from transferlab.config import Config
from transferlab.files import remove_leftover_temporaries
from transferlab.identity import result_config
from transferlab.records import PREDICTIONS_FILE, RunRecord, write_record

log = logging.getLogger("transferlab.run")


def resumes(config: Config, checkpoint_path: Path) -> bool:
    """Whether the run continues from its checkpoint. force=true re-runs from the first epoch: a
    checkpoint kept from the run it replaces (keep_checkpoint=true) or left by another config is
    no start for it."""
    return config.resume and not config.force and checkpoint_path.exists()


def starting_point(config: Config, run_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                   scaler: torch.amp.GradScaler | None, record: RunRecord,
                   scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
                   trained_on: str | None = None) -> tuple[int, str | None]:
    """(epochs already done, the SHA-256 of the checkpoint resumed from or None): (0, None) for a
    run that starts at its first epoch, which removes the checkpoint of the run it starts over
    from (resume=false, force=true), so that no later resume takes it for this run's. ``trained_on``
    is the data_digest of this run's training images, which a checkpoint to resume must have.
    Temporary files of writes a kill cut short (a checkpoint's is as big as one) are removed first;
    a resumed run's run.json is rewritten at once with the epochs it resumes after."""
    remove_leftover_temporaries(run_dir)
    path = run_dir / CHECKPOINT_FILE
    if resumes(config, path):
        start = resume(path, model, optimizer, scaler, record, config.freeze.unfreeze_at_epoch, config.train.epochs,
                       scheduler, trained_on)
        write_record(run_dir, record.to_dict())
        return start
    if path.exists() or digest_path(path).exists():
        log.info("starting over: removing %s of the earlier run", path)
        remove_checkpoint(path)
    (run_dir / PREDICTIONS_FILE).unlink(missing_ok=True)  # no earlier run's predictions stay beside its run.json
    return 0, None


def resume(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
           scaler: torch.amp.GradScaler | None, record: RunRecord, unfreeze_at: int | None,
           epochs: int, scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
           trained_on: str | None = None) -> tuple[int, str | None]:
    """Restore the run (of ``epochs`` epochs) from its checkpoint once its bytes match the digest
    recorded when it was written; (the number of epochs it had finished, its SHA-256 or None when
    it has no recorded digest). An LP-FT run whose checkpoint is from after the switch switches
    first, so that the optimizer has the checkpoint's parameter groups."""
    digest = verify_digest(path)
    if digest is None:
        log.warning("%s has no recorded digest (it was written before transferlab recorded them), so it is not "
                    "verified; pass resume=false to start over instead", path)
    checkpoint = load_checkpoint(path)
    if result_config(checkpoint.config) != result_config(record.config):
        raise CheckpointError(f"{path} was written by a run of another config; delete it or pass resume=false")
    if (line := other_thread_count(checkpoint.config, record.config, record.device)) is not None:
        log.warning(line)
    if checkpoint.data_digest is not None and trained_on is not None and checkpoint.data_digest != trained_on:
        raise CheckpointError(f"{path} was trained on other images than this run's training subset has now (images "
                              "added to, removed from or changed in the data since?); put the data back as it was "
                              "to resume, or pass resume=false to start over on the data as it is")
    if not 1 <= checkpoint.epoch <= epochs:
        raise CheckpointError(f"{path} says it was written after epoch {checkpoint.epoch}, but this run's epochs are "
                              f"1 to {epochs} (train.epochs={epochs}); delete it or pass resume=false")
    if unfreeze_at is not None and checkpoint.epoch > unfreeze_at:
        start_fine_tuning(model, optimizer, record, scheduler)
    restore(checkpoint, model, optimizer, scaler, path, scheduler)
    record.history = list(checkpoint.history)
    record.resumed_after_epoch = checkpoint.epoch
    record.checkpoint_seconds = checkpoint.checkpoint_seconds
    record.set_results(checkpoint.history[-1] if checkpoint.history else None)
    log.info("resuming from %s after epoch %d", path, checkpoint.epoch)
    return checkpoint.epoch, digest


def keep_what_was_saved(writer: CheckpointWriter, record: RunRecord) -> None:
    """A run that stops early keeps in its record the epochs a resume will find in the last
    checkpoint on disk (the write in progress is allowed to land first)."""
    error = writer.close()
    if error is not None:
        log.error("%s", error)
    record.history = list(writer.saved_history)
    record.set_results(record.history[-1] if record.history else None)
