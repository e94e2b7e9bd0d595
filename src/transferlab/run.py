"""The one assembly point: a validated Config and a run folder in, a finished run record out.

``_train`` tells the story of a run, as nanoGPT's train.py does: the device, the data, the model,
the optimizer, where it starts (a resume), the batches, then ``fit`` with the callbacks that record,
checkpoint and log each epoch, then model.pt. Everything below this module takes plain values;
everything above it (the CLI, Hydra) only composes and validates the config and picks the folder.
Side paths live beside what they use: run_model.py (the model as the config says), resume.py,
probe_fit.py (probes on cached features), devices.py, run_record.py, outputs.py.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from transferlab import adapt, schedules
from transferlab.callbacks import record_bytes, run_callbacks
from transferlab.checkpoint import (
    CHECKPOINT_FILE, CheckpointWriter, data_digest, remove_checkpoint, save_atomically, write_failure,
)
from transferlab.config import Config, DataConfig
from transferlab.data import ImageSet, Transforms, hold_out_validation, images_per_class, load_datasets, make_loader
from transferlab.data.pipelines import batch_sizes
from transferlab.devices import cpu_threads, device_name, run_device, training_precision
from transferlab.diskcache import DIGEST_MEMO
from transferlab.engine import (
    StepSettings, configure_determinism, make_optimizer, precision_name, recording_nondeterministic_ops,
)
from transferlab.errors import ConfigError, RunInterrupted, TransferlabError
from transferlab.fit import Batches, Callback, fit
from transferlab.identity import inert_settings, is_inert
from transferlab.interrupts import sigterm_interrupts
from transferlab.loggers import MetricLogger, make_logger
from transferlab.models import check_model_name, preprocessing
from transferlab.outputs import MODEL_FILE, save_model, write_samples
from transferlab.probe_fit import FitPlan, cache_root, on_cached_features
from transferlab.records import RUN_FILE, SAMPLES_FILE, RunRecord, utc_now, write_record
from transferlab.resume import keep_what_was_saved, resumes, starting_point
from transferlab.run_model import build_run_model
from transferlab.run_record import config_transforms, new_record

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Collaborators:
    """Where a run gets its images and batches, and how it writes its checkpoints and its record at
    its start and end: the real ones by default. A test hands in its own (a loader with a NaN image,
    a write killed before its rename, a disk full for the final run.json) instead of patching a module."""

    load_datasets: Callable[..., tuple[ImageSet, ImageSet]] = load_datasets  # datasets.load_datasets's signature
    make_loader: Callable[..., Batches] = make_loader  # data.pipelines.make_loader's
    save_checkpoint: Callable[..., str] = save_atomically  # checkpoint.save_atomically's
    write_record: Callable[[Path, dict[str, Any]], None] = write_record  # records.write_record


def transforms_of(data: DataConfig, model: torch.nn.Module | None = None) -> Transforms:
    """The data's transforms. data.normalize=auto takes the model's own preprocessing: a timm
    model's mean, std, interpolation and crop (its pretrained_cfg), ImageNet's statistics for a
    torchvision model (or before the model is built)."""
    own = preprocessing(adapt.plain_base(model)) if model is not None and data.normalize == "auto" else None
    if own is None:
        return config_transforms(data)
    # The batched resize knows bilinear and bicubic; timm's few others (bicubic variants, nearest) resize bilinearly.
    interpolation = own["interpolation"] if own["interpolation"] in ("bilinear", "bicubic") else "bilinear"
    return Transforms(data.augment, "auto", own["crop_pct"], tuple(data.crop_scale), mean=own["mean"], std=own["std"],
                      interpolation=interpolation)


def run_training(config: Config, run_dir: Path, overrides: list[str] | tuple[str, ...] = (),
                 callbacks: Sequence[Callback] = (), parts: Collaborators = Collaborators()) -> dict[str, Any]:
    """Train and evaluate one run, saving a checkpoint and rewriting run.json and metrics.csv in
    ``run_dir`` at every epoch end. Returns the final record (run.json's dict); its ``status`` is
    ``completed`` or ``failed`` (with ``error``). Ctrl-C or SIGTERM marks the record ``interrupted``
    and raises RunInterrupted; the last epoch-end checkpoint stays for ``resume``. ``callbacks`` run
    at each epoch after the run's own (a test stops a run with one); ``parts`` are the run's data
    and checkpoint collaborators."""
    run_dir = Path(run_dir)
    record = new_record(config, overrides)
    _warn_of_inert_overrides(record, overrides)
    # Made before run.json is rewritten: a resumed run's MLflow run id is read from it.
    tracker = make_logger(config.logger, run_dir, resumes(config, run_dir / CHECKPOINT_FILE))
    parts.write_record(run_dir, record.to_dict())
    try:
        try:
            tracker.start(record.to_dict())  # a tracker that cannot be used fails the run here, before any training
        finally:
            for field_name, value in tracker.record_fields().items():  # with MLflow, the run id a resume continues
                setattr(record, field_name, value)
        # deterministic=true: the ops that warn go straight into the record's list, so every rewrite
        # of run.json carries them.
        ops = record.nondeterministic_ops
        recording = recording_nondeterministic_ops(ops) if ops is not None else contextlib.nullcontext()
        with sigterm_interrupts(), recording, run_device(config.device) as device, \
                cpu_threads(config.train.threads, device):
            _train(config, device, run_dir, record, tracker, callbacks, parts)
        record.status = "completed"
    except TransferlabError as error:
        record.status, record.error = "failed", str(error)
        log.error("run failed: %s", error)
        log.debug("traceback:", exc_info=True)
    except KeyboardInterrupt as interrupt:
        raise _interrupted(record, run_dir, getattr(interrupt, "exit_code", 130)) from None
    except Exception as error:  # a bug or a library failure: keep the traceback in the run's log
        record.status, record.error = "failed", f"{type(error).__name__}: {error}"
        record.traceback = traceback.format_exc()
        log.error("run failed: %s: %s", type(error).__name__, error)
        log.debug("traceback:\n%s", record.traceback)
    finally:
        record.finished_at = utc_now()
        try:
            _write_final_record(run_dir, record, parts.write_record)
        finally:
            tracker.end(record.to_dict())  # the final status, and run.json among the tracked files
    if record.status == "completed":
        _completed(config, run_dir, record)
    return record.to_dict()


def _warn_of_inert_overrides(record: RunRecord, overrides: Sequence[str]) -> None:
    """A warning for each override whose setting does nothing in this run."""
    inert = inert_settings(record.config)
    for override in overrides:
        key = override.partition("=")[0].lstrip("+~")
        if is_inert(key, inert):
            why = next(why for name, why in inert.items() if key == name or key.startswith(f"{name}."))
            log.warning("%s does nothing in this run (the setting is %s): it is left out of the run's identity (its "
                        "folder, and the checks that skip or resume it)", override, why)


def _write_final_record(run_dir: Path, record: RunRecord, write: Callable[[Path, dict[str, Any]], None]) -> None:
    """run.json with the run's outcome. When even that cannot be written (a full disk), the run.json
    on disk stays as it was, a whole record of the last saved epoch, and the error says so."""
    try:
        write(run_dir, record.to_dict())
    except OSError as error:
        outcome = record.status + (f" ({record.error})" if record.error else "")
        raise TransferlabError(f"the run {outcome}, but its record could not be saved: "
                               f"{write_failure(run_dir / RUN_FILE, record_bytes(record), error)}; {RUN_FILE} "
                               "still shows the last saved epoch") from error


def _interrupted(record: RunRecord, run_dir: Path, exit_code: int) -> RunInterrupted:
    """Ctrl-C or SIGTERM: the record marked interrupted, and the RunInterrupted that says so."""
    record.status = "interrupted"
    saved = record.history[-1]["epoch"] if record.history else 0  # an L-BFGS probe is one entry for its epochs
    record.error = "interrupted by a signal; run the same command again to " + (
        "resume" if saved else "start it (no epoch had finished)")
    log.warning("run interrupted %s; it is marked interrupted in %s: run the same command again to %s",
                f"after {saved} finished epoch(s)" if saved else "before its first epoch finished",
                run_dir / RUN_FILE, "resume from its last epoch-end checkpoint" if saved else "start it")
    return RunInterrupted(str(run_dir), exit_code, record.to_dict())


def _completed(config: Config, run_dir: Path, record: RunRecord) -> None:
    if not config.keep_checkpoint:
        remove_checkpoint(run_dir / CHECKPOINT_FILE)  # only once run.json says completed
    log.info("run completed: %s%s", run_dir.resolve(),
             f"; its model: {run_dir.resolve() / record.model_file}" if record.model_file else
             " (save_model=true also writes its model.pt)")


def _train(config: Config, device: torch.device, run_dir: Path, record: RunRecord, tracker: MetricLogger,
           extra_callbacks: Sequence[Callback], parts: Collaborators) -> None:
    """Build data, model and optimizer, find where the run starts, fit, then write model.pt."""
    check_model_name(config.model.name)
    amp_dtype = training_precision(config.precision, device)
    configure_determinism(config.effective_seed, config.deterministic, device)
    record.device, record.device_name, record.precision = str(device), device_name(device), precision_name(amp_dtype)

    show_progress = config.progress == "on" or (config.progress == "auto" and sys.stdout.isatty())
    train_set, val_set, test_set = _datasets(config, parts, show_progress, record)
    memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    model, stages = build_run_model(config, list(train_set.classes), device, memory_format, record,
                                    cache_root(config) / DIGEST_MEMO)
    _refuse_batches_of_one(model, config, len(train_set))
    optimizer = _optimizer(model, stages, config)
    record.param_groups = schedules.describe_groups(optimizer)
    transforms = transforms_of(config.data, model)
    record.transforms = transforms.describe(config.data.image_size)

    def batches(images: ImageSet, train: bool = False) -> Batches:
        return parts.make_loader(images, config.data.pipeline, config.train.batch_size if train else
                                 config.train.eval_batch_size, train=train, image_size=config.data.image_size,
                                 seed=config.effective_seed, device=device, num_workers=config.data.num_workers,
                                 memory_format=memory_format, transforms=transforms)

    train_batches = batches(train_set, train=True)
    record.last_batch_size = (batch_sizes(len(train_set), config.train.batch_size, train=True) or [0])[-1]
    scheduler = _make_scheduler(optimizer, config, len(train_batches))  # its steps per epoch: the loader's batches
    step = StepSettings(amp_dtype, torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None,
                        config.optim.clip_grad_norm)
    trained_on = data_digest(train_set.images, train_set.labels, train_set.classes)
    epochs_done, digest = starting_point(config, run_dir, model, optimizer, step.scaler, record, scheduler, trained_on)
    forward = torch.compile(model, mode=config.train.compile_mode) if config.train.compile else model
    write_samples(run_dir / SAMPLES_FILE, train_set)
    sets = {"train": train_set, "test": test_set, **({"val": val_set} if val_set is not None else {})}
    plan = FitPlan(forward, train_batches, {split: batches(sets[split]) for split in ("test", "val") if split in sets},
                   epochs_done)
    log.info("%s (%s), %d of %d parameters train, %d training / %d test images, on %s, %s",
             config.model.name, record.init, record.params_trainable, record.params_total,
             len(train_set), len(test_set), record.device_name, record.precision)

    writer = CheckpointWriter(run_dir / CHECKPOINT_FILE, record.history, record.checkpoint_seconds or 0.0, digest,
                              trained_on, save=parts.save_checkpoint)
    callbacks = [*run_callbacks(config, run_dir, record, tracker, writer, model, optimizer, step, scheduler,
                                len(train_batches) if show_progress else None), *extra_callbacks]
    try:
        plan = on_cached_features(config, plan, model, sets, batches, device, amp_dtype, record, callbacks)
        fit(plan.forward, torch.nn.CrossEntropyLoss(label_smoothing=config.train.label_smoothing), plan.train_batches,
            optimizer, range(plan.epochs_done + 1, config.train.epochs + 1), device=device,
            evaluations=plan.evaluations, step=step, scheduler=scheduler, callbacks=callbacks)
        if config.save_model:
            save_model(model, run_dir, config.train.epochs, writer)
            record.model_file = MODEL_FILE
    except BaseException:
        keep_what_was_saved(writer, record)
        raise
    finally:
        writer.close()
        record.checkpoint_seconds = writer.seconds
        tracker.close()


def _datasets(config: Config, parts: Collaborators, show_progress: bool,
              record: RunRecord) -> tuple[ImageSet, ImageSet | None, ImageSet]:
    """(images that train, validation split or None, test set), recorded in ``record``."""
    train_set, test_set = parts.load_datasets(config.data, config.effective_subset_seed, show_progress)
    train_set, val_set = hold_out_validation(train_set, config.data.val_fraction, config.effective_subset_seed)
    record.num_train_images, record.train_images_per_class = len(train_set), images_per_class(train_set)
    record.num_test_images, record.num_val_images = len(test_set), len(val_set) if val_set is not None else 0
    record.num_classes, record.classes = len(train_set.classes), list(train_set.classes)
    return train_set, val_set, test_set




def _refuse_batches_of_one(model: torch.nn.Module, config: Config, train_images: int) -> None:
    """A ConfigError when the network trains on batches of one image and has BatchNorm layers, which
    cannot normalise one image (torch's own error comes at the first batch). A last batch of one
    joins the batch before it (data.pipelines.batch_sizes); a probe on cached features runs no
    BatchNorm in training."""
    if config.freeze.cached_features and config.freeze.unfreeze_at_epoch is None:
        return
    if config.train.batch_size > 1 and train_images > 1:
        return
    norms = [name for name, module in model.named_modules()
             if isinstance(module, torch.nn.modules.batchnorm._BatchNorm)]
    if norms:
        what = f"train.batch_size={config.train.batch_size}" if config.train.batch_size == 1 else \
            f"a training subset of {train_images} image"
        raise ConfigError(f"{what} trains on batches of one image, which the BatchNorm layers of {config.model.name} "
                          f"({norms[0]}, ...) cannot normalise; use train.batch_size >= 2 (and at least 2 training "
                          "images), or a model without BatchNorm")


def _optimizer(model: torch.nn.Module, stages: list[list[str]], config: Config) -> torch.optim.Optimizer:
    """The optimizer over the parameters that train: one group, or with optim.layer_decay one group
    per stage."""
    optim = config.optim
    groups = ([p for p in model.parameters() if p.requires_grad] if optim.layer_decay is None else
              schedules.layer_decay_groups(model, stages, optim.lr, optim.layer_decay,
                                           base_name=adapt.base_parameter_name))
    return make_optimizer(optim.name, groups, lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay,
                          betas=tuple(optim.betas), implementation=optim.implementation)


def _make_scheduler(optimizer: torch.optim.Optimizer, config: Config,
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The per-batch learning-rate scheduler; None for a constant rate without warm-up (the protocol's).
    A warm-up shorter than one batch, which would warm up nothing, is a ConfigError."""
    optim = config.optim
    if 0 < optim.warmup_epochs * steps_per_epoch < 1:
        shortest = math.ceil(1000 / steps_per_epoch) / 1000
        raise ConfigError(f"optim.warmup_epochs={optim.warmup_epochs} is shorter than one batch (an epoch is "
                          f"{steps_per_epoch} batch(es) of train.batch_size={config.train.batch_size}); it must be 0 "
                          f"or at least {shortest:g}")
    if optim.schedule == "constant" and optim.warmup_epochs == 0:
        return None
    return schedules.make_scheduler(optimizer, schedules.ScheduleFactor(
        optim.schedule, steps_per_epoch, config.train.epochs, optim.warmup_epochs, optim.step_epochs, optim.step_gamma))
