"""The one assembly point: a validated Config and a run folder in, a finished run record out.

Everything below this module takes plain values; everything above it (the CLI, Hydra) only
composes and validates the config and picks the folder.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import platform
import signal
import sys
import threading
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from transferlab import __version__, adapt, schedules, timm_models
from transferlab.caches import DIGEST_MEMO, default_cache_dir
from transferlab.callbacks import (
    CheckpointEpochs, EpochLog, FiniteEvaluation, LpFtSwitch, Progress, RecordEpochs, SavePredictions, Trackers,
    record_bytes, start_fine_tuning,
)
from transferlab.checkpoint import (
    CHECKPOINT_FILE, RESUME_ADVICE, CheckpointError, CheckpointWriteError, CheckpointWriter, data_digest,
    digest_path, load_checkpoint, remove_checkpoint, restore,
    save_atomically, verify_digest, write_failure,
)
from transferlab.config import Config, DataConfig, as_dict, inert_settings, is_inert, result_config
from transferlab.data import (
    ImageSet, Transforms, data_source, dataset_name, images_per_class, load_datasets, make_loader, scan_folder,
    stratified_split,
)
from transferlab.data.pipelines import batch_sizes
from transferlab.engine import (
    EpochResult, busy_machine_advice, configure_determinism, evaluate, make_optimizer, precision_name,
    recording_nondeterministic_ops, select_amp_dtype, select_device,
)
from transferlab.errors import ConfigError, RunInterrupted, TransferlabError
from transferlab.files import remove_leftover_temporaries
from transferlab.fit import Callback, EpochEnd, fit, stop_callbacks
from transferlab.gpus import claimed_gpu, visible_gpu_uuids
from transferlab.loggers import MetricLogger, make_logger
from transferlab.models import (
    apply_freeze, build_model_with_init, check_image_size, check_model_name, count_parameters, frozen_modules,
    head_modules, head_name, is_inside_heads, refuse_non_finite_weights, trainable_parameter_names,
)
from transferlab.probe import (
    PROBE_CACHED, PROBE_IN_LOOP, FeatureBatches, HeadOrNetwork, PhasedBatches, check_head_only, feature_identity,
    fit_logistic_regression, probe_features, weights_identity,
)
from transferlab.records import PREDICTIONS_FILE, RUN_FILE, SAMPLES_FILE, RunRecord, utc_now, write_atomic, write_record

log = logging.getLogger(__name__)
MODEL_FILE = "model.pt"
SAMPLE_SIZE = 96  # the largest side of the sample images kept for the report
SAMPLES_PER_CLASS = 4  # images of each class in the report's sample grid...
MAX_SAMPLE_IMAGES = 100  # ...fewer of each where there are many classes


def hold_out_validation(train: ImageSet, fraction: float, seed: int) -> tuple[ImageSet, ImageSet | None]:
    """(images that train, validation split): a stratified ``fraction`` of the training subset, fixed
    by ``seed``, that never trains; (train, None) for fraction 0."""
    if fraction == 0:
        return train, None
    kept, held_out = stratified_split(train.labels, fraction, seed)
    if len(held_out) == 0:
        raise ConfigError(f"data.val_fraction={fraction} holds out no image of the {len(train)}-image training "
                          "subset; raise data.val_fraction or data.fraction")
    return train.subset(kept), train.subset(held_out)


def transforms_of(data: DataConfig, model: torch.nn.Module | None = None) -> Transforms:
    """The data's transforms. data.normalize=auto takes the model's own preprocessing: a timm
    model's mean, std, interpolation and crop (its pretrained_cfg), ImageNet's statistics for a
    torchvision model (or before the model is built)."""
    if data.normalize != "auto":
        return Transforms(data.augment, data.normalize, data.test_crop, tuple(data.crop_scale))
    base = adapt.plain_base(model) if model is not None else None
    if base is None or not timm_models.is_timm_module(base):
        return Transforms(data.augment, "imagenet", data.test_crop, tuple(data.crop_scale))
    own = timm_models.data_config(base)
    # The batched resize knows bilinear and bicubic; timm's few others (bicubic variants, nearest) resize bilinearly.
    interpolation = own["interpolation"] if own["interpolation"] in ("bilinear", "bicubic") else "bilinear"
    return Transforms(data.augment, "auto", own["crop_pct"], tuple(data.crop_scale), mean=own["mean"], std=own["std"],
                      interpolation=interpolation)


def run_training(config: Config, run_dir: Path, overrides: list[str] | tuple[str, ...] = (),
                 callbacks: Sequence[Callback] = ()) -> dict[str, Any]:
    """Train and evaluate one run, saving a checkpoint and rewriting run.json and metrics.csv in
    ``run_dir`` at every epoch end. Returns the final record (run.json's dict); its ``status`` is
    ``completed`` or ``failed`` (with ``error``). Ctrl-C or SIGTERM marks the record ``interrupted``
    and raises RunInterrupted; the last epoch-end checkpoint stays for ``resume``. ``callbacks`` run
    at each epoch after the run's own (a test stops a run with one)."""
    run_dir = Path(run_dir)
    record = new_record(config, overrides)
    inert = inert_settings(record.config)
    for override in overrides:
        key = override.partition("=")[0].lstrip("+~")
        if is_inert(key, inert):
            why = next(why for name, why in inert.items() if key == name or key.startswith(f"{name}."))
            log.warning("%s does nothing in this run (the setting is %s): it is left out of the run's identity (its "
                        "folder, and the checks that skip or resume it)", override, why)
    # Made before run.json is rewritten: a resumed run's MLflow run id is read from it.
    tracker = make_logger(config.logger, run_dir, _resumes(config, run_dir / CHECKPOINT_FILE))
    write_record(run_dir, record.to_dict())
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
        with _sigterm_interrupts(), recording, _run_device(config.device) as device, \
                _cpu_threads(config.train.threads, device):
            _train(config, device, run_dir, record, tracker, callbacks)
        record.status = "completed"
    except TransferlabError as error:
        record.status, record.error = "failed", str(error)
        log.error("run failed: %s", error)
        log.debug("traceback:", exc_info=True)
    except KeyboardInterrupt as interrupt:
        record.status = "interrupted"
        saved = record.history[-1]["epoch"] if record.history else 0  # an L-BFGS probe is one entry for its epochs
        record.error = "interrupted by a signal; run the same command again to " + (
            "resume" if saved else "start it (no epoch had finished)")
        log.warning("run interrupted %s; it is marked interrupted in %s: run the same command again to %s",
                    f"after {saved} finished epoch(s)" if saved else "before its first epoch finished",
                    run_dir / RUN_FILE, "resume from its last epoch-end checkpoint" if saved else "start it")
        raise RunInterrupted(str(run_dir), getattr(interrupt, "exit_code", 130), record.to_dict()) from None
    except Exception as error:  # a bug or a library failure: keep the traceback in the run's log
        record.status, record.error = "failed", f"{type(error).__name__}: {error}"
        record.traceback = traceback.format_exc()
        log.error("run failed: %s: %s", type(error).__name__, error)
        log.debug("traceback:\n%s", record.traceback)
    finally:
        record.finished_at = utc_now()
        try:
            _write_final_record(run_dir, record)
        finally:
            tracker.end(record.to_dict())  # the final status, and run.json among the tracked files
    if record.status == "completed" and not config.keep_checkpoint:
        remove_checkpoint(run_dir / CHECKPOINT_FILE)  # only once run.json says completed
    if record.status == "completed":
        log.info("run completed: %s%s", Path(run_dir).resolve(),
                 f"; its model: {Path(run_dir).resolve() / record.model_file}" if record.model_file else
                 " (save_model=true also writes its model.pt)")
    return record.to_dict()


def _write_final_record(run_dir: Path, record: RunRecord) -> None:
    """run.json with the run's outcome. When even that cannot be written (a full disk), the run.json
    on disk stays as it was, a whole record of the last saved epoch, and the error says so."""
    try:
        write_record(run_dir, record.to_dict())
    except OSError as error:
        outcome = record.status + (f" ({record.error})" if record.error else "")
        raise TransferlabError(f"the run {outcome}, but its record could not be saved: "
                               f"{write_failure(run_dir / RUN_FILE, record_bytes(record), error)}; {RUN_FILE} "
                               "still shows the last saved epoch") from error


@contextlib.contextmanager
def _cpu_threads(threads: int | None, device: torch.device) -> Iterator[None]:
    """A CPU run trains with train.threads threads (torch's count is the process's: put back after
    the run), or with torch's default, with advice where the machine is busy."""
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    elif advice := busy_machine_advice(before, os.cpu_count() or 1, os.getloadavg()[0]):
        log.info("%s", advice)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """Turn SIGTERM (a cluster's or `kill`'s request to stop) into an interrupt, like Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        # Once: a second SIGTERM (a sweep's process passes one on to its workers, which Slurm or a
        # `kill` of the process group may also reach) would cut short the saving of the run's
        # record and checkpoint. SIGKILL still stops it.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise RunInterrupted("", 128 + signum)

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _run_device(name: str) -> Iterator[torch.device]:
    """The run's device; on a machine with several GPUs, one that no other run holds."""
    device = select_device(name)
    count = torch.cuda.device_count() if device.type == "cuda" else 0
    if count <= 1:
        yield device
        return
    with claimed_gpu(visible_gpu_uuids()) as index:
        torch.cuda.set_device(index)
        yield torch.device("cuda", index)


def _train(config: Config, device: torch.device, run_dir: Path, record: RunRecord, tracker: MetricLogger,
           extra_callbacks: Sequence[Callback]) -> None:
    """Assemble the run's collaborators (data, model, optimizer, checkpoint writer), then fit."""
    check_model_name(config.model.name)
    amp_dtype = select_amp_dtype(config.precision, device)
    if amp_dtype == torch.float16 and device.type == "cpu":  # allowed, but the user should know at once
        log.warning("precision=fp16 on the CPU trains about 50-150x slower than fp32 (float16 has no fast CPU "
                    "kernels); use precision=fp32 or auto, or bf16 on a CPU with bfloat16 instructions")
    configure_determinism(config.effective_seed, config.deterministic, device)
    record.device, record.device_name, record.precision = str(device), _device_name(device), precision_name(amp_dtype)

    show_progress = config.progress == "on" or (config.progress == "auto" and sys.stdout.isatty())
    train_set, val_set, test_set = _datasets(config, show_progress, record)
    memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    model, stages = _build_model(config, list(train_set.classes), device, memory_format, record)
    _refuse_batches_of_one(model, config, len(train_set))
    optimizer = make_optimizer(
        config.optim.name, _parameter_groups(model, stages, config), lr=config.optim.lr,
        momentum=config.optim.momentum, weight_decay=config.optim.weight_decay, betas=tuple(config.optim.betas),
        implementation=config.optim.implementation,
    )
    record.param_groups = schedules.describe_groups(optimizer)
    transforms = transforms_of(config.data, model)
    record.transforms = transforms.describe(config.data.image_size)
    loader_args = dict(image_size=config.data.image_size, seed=config.effective_seed, device=device,
                       num_workers=config.data.num_workers, memory_format=memory_format, transforms=transforms)
    train_batches = make_loader(train_set, config.data.pipeline, config.train.batch_size, train=True, **loader_args)
    record.last_batch_size = (batch_sizes(len(train_set), config.train.batch_size, train=True) or [0])[-1]
    scheduler = _make_scheduler(optimizer, config, len(train_batches))  # its steps per epoch: the loader's batches
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None
    checkpoint_path = run_dir / CHECKPOINT_FILE
    remove_leftover_temporaries(run_dir)  # of writes a kill cut short: a checkpoint's is as big as one
    trained_on = data_digest(train_set.images, train_set.labels, train_set.classes)
    epochs_done, digest = _starting_point(config, checkpoint_path, model, optimizer, scaler, record, scheduler,
                                          trained_on)
    if epochs_done:
        write_record(run_dir, record.to_dict())
    else:  # a run from its first epoch: no earlier run's predictions stay beside its run.json
        (run_dir / PREDICTIONS_FILE).unlink(missing_ok=True)
    forward = torch.compile(model, mode=config.train.compile_mode) if config.train.compile else model

    write_samples(run_dir / SAMPLES_FILE, train_set)
    evaluations = {split: make_loader(images, config.data.pipeline, config.train.eval_batch_size, train=False,
                                      **loader_args)
                   for split, images in (("test", test_set), ("val", val_set)) if images is not None}
    log.info("%s (%s), %d of %d parameters train, %d training / %d test images, on %s, %s",
             config.model.name, record.init, record.params_trainable, record.params_total,
             len(train_set), len(test_set), record.device_name, record.precision)

    epochs = config.train.epochs
    writer = CheckpointWriter(checkpoint_path, record.history, record.checkpoint_seconds or 0.0, digest, trained_on)
    unfreeze_at = config.freeze.unfreeze_at_epoch
    callbacks = [
        *([LpFtSwitch(model, optimizer, record, unfreeze_at, scheduler)] if unfreeze_at is not None else []),
        *([Progress(len(train_batches), epochs)] if show_progress else []),
        FiniteEvaluation(),
        SavePredictions(run_dir),
        RecordEpochs(record),
        CheckpointEpochs(writer, model, optimizer, scaler, run_dir, record, keep_last=config.keep_checkpoint,
                         scheduler=scheduler, write_last=config.save_model),
        Trackers(tracker),
        EpochLog(),
        *extra_callbacks,
    ]
    try:
        # The head trains on cached features until LP-FT's switch; a run resumed after it needs none
        # (and its restored backbone, fine-tuned, must never make features for the cache).
        if config.freeze.cached_features and epochs_done < (unfreeze_at or epochs):
            probe = _cached_probe(config, model, device, amp_dtype, train_set, val_set, test_set, loader_args, record)
            if config.freeze.probe == "lbfgs" and epochs_done < probe.last_epoch:
                _fit_lbfgs(probe, device, callbacks, epochs, record)
                epochs_done = probe.last_epoch
            else:
                forward = HeadOrNetwork(forward, probe.head)
                train_batches = PhasedBatches(probe.train, train_batches, probe.last_epoch)
                evaluations = {split: PhasedBatches(probe.evaluations[split], batches, probe.last_epoch)
                               for split, batches in evaluations.items()}
        fit(forward, train_batches, optimizer, range(epochs_done + 1, epochs + 1), device=device,
            evaluations=evaluations, amp_dtype=amp_dtype, scaler=scaler, scheduler=scheduler,
            label_smoothing=config.train.label_smoothing, clip_grad_norm=config.optim.clip_grad_norm,
            callbacks=callbacks)
        if config.save_model:  # the plain architecture, adapters merged
            _save_model(model, run_dir, epochs, writer)
            record.model_file = MODEL_FILE
    except BaseException:
        _keep_what_was_saved(writer, record)
        raise
    finally:
        writer.close()
        record.checkpoint_seconds = writer.seconds
        tracker.close()


def _save_model(model: torch.nn.Module, run_dir: Path, epochs: int, writer: CheckpointWriter) -> None:
    """save_model's model.pt. When it cannot be written (a full disk) the run fails, but keeps the
    scores of its epochs and the checkpoint after its last one (CheckpointEpochs writes it with
    save_model): the same command then resumes after the last epoch and only writes model.pt."""
    try:
        save_atomically(_state_dict_on_host(adapt.plain_model(model)), run_dir / MODEL_FILE)
    except CheckpointWriteError as error:
        saved = writer.saved_history[-1]["epoch"] if writer.saved_history else 0
        kept = (f"its scores and the checkpoint after epoch {saved} are kept, and the same command run again only "
                f"writes {MODEL_FILE}" if saved == epochs else
                f"its last checkpoint (after epoch {saved}) could not be saved either, so the same command run "
                "again trains from there")
        raise CheckpointWriteError(f"the run's {epochs} epoch(s) finished, but {MODEL_FILE} could not be saved "
                                   f"({str(error).replace(RESUME_ADVICE, '')}); {kept} once there is room") from error


def _datasets(config: Config, show_progress: bool, record: RunRecord) -> tuple[ImageSet, ImageSet | None, ImageSet]:
    """(images that train, validation split or None, test set), recorded in ``record``."""
    train_set, test_set = load_datasets(config.data, config.effective_subset_seed, show_progress)
    train_set, val_set = hold_out_validation(train_set, config.data.val_fraction, config.effective_subset_seed)
    record.num_train_images, record.train_images_per_class = len(train_set), images_per_class(train_set)
    record.num_test_images, record.num_val_images = len(test_set), len(val_set) if val_set is not None else 0
    record.num_classes, record.classes = len(train_set.classes), list(train_set.classes)
    return train_set, val_set, test_set


def _keep_what_was_saved(writer: CheckpointWriter, record: RunRecord) -> None:
    """A run that stops early keeps in its record the epochs a resume will find in the last
    checkpoint on disk (the write in progress is allowed to land first)."""
    error = writer.close()
    if error is not None:
        log.error("%s", error)
    record.history = list(writer.saved_history)
    record.set_results(record.history[-1] if record.history else None)


def _build_model(config: Config, classes: list[str], device: torch.device, memory_format: torch.memory_format,
                 record: RunRecord) -> tuple[torch.nn.Module, list[list[str]]]:
    """(the model, frozen and adapted as the config says, on ``device``; its stages by parameter
    name, for optim.layer_decay)."""
    model, init = build_model_with_init(config.model.name, config.model.pretrained, config.model.weights, len(classes),
                                        config.data.image_size, _cache_root(config) / DIGEST_MEMO, classes=classes,
                                        new_head=config.model.new_head, weights_name=config.model.weights_name)
    record.init, record.pretraining = init.init, init.as_record()
    refuse_non_finite_weights(model, config.model.name, init)
    if init.head:  # a weights file: which head the run starts with, and why
        log.info("%s: %s", init.init, init.head)
    check_image_size(model, config.model.name, config.data.image_size)
    frozen = frozen_modules(model, config.model.name, config.freeze.name, config.freeze.modules)
    record.frozen_modules = list(frozen)
    trainable = trainable_parameter_names(model, frozen)
    head = head_name(config.model.name, model)
    if not trainable:
        raise ConfigError(f"freeze.modules={list(frozen)} leaves no parameter to train; keep {head} out of it")
    apply_freeze(model, trainable)
    heads = head_modules(config.model.name, model)  # a distilled DeiT has two: each one is the head
    if config.freeze.cached_features:  # (a model of several heads is refused by probe.py: none is its last step)
        check_head_only(trainable, head)
    if all(is_inside_heads(name, heads) for name in trainable):  # a linear probe (LP-FT's first phase included)
        if config.adapt.name != "none":  # as Config refuses freeze=last_only with it, whatever the spelling
            spelling = (f"freeze.modules={list(config.freeze.modules)}" if config.freeze.modules is not None
                        else f"freeze={config.freeze.name}")
            raise ConfigError(f"adapt={config.adapt.name} with {spelling} leaves only the head "
                              f"({head}), which trains fully anyway; freeze fewer modules, or use adapt=none for a "
                              "linear probe")
        record.probe = PROBE_CACHED if config.freeze.cached_features else PROBE_IN_LOOP
    stages = schedules.stage_parameter_names(model) if config.optim.layer_decay is not None else []
    lora = adapt.LoraSettings(config.adapt.rank, config.adapt.alpha, config.adapt.dropout,
                              tuple(config.adapt.target_modules) if config.adapt.target_modules else None)
    architecture_total = count_parameters(model)[0]
    model, record.adapt = adapt.adapt_model(model, config.adapt.name, head, frozen, trainable, lora)
    model.to(device, memory_format=memory_format)
    # params_total is the architecture's (what model.pt holds), so that arms adapted differently compare;
    # LoRA's adapters (and peft's copy of the head) are counted apart.
    adapted_total, record.params_trainable = count_parameters(model)
    record.params_total = architecture_total
    if adapted_total != architecture_total:
        record.adapt["params_added"] = adapted_total - architecture_total
    return model, stages


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


def _parameter_groups(model: torch.nn.Module, stages: list[list[str]], config: Config) -> list:
    """The optimizer's parameters: one group, or with optim.layer_decay one group per stage."""
    if config.optim.layer_decay is None:
        return [p for p in model.parameters() if p.requires_grad]
    return schedules.layer_decay_groups(model, stages, config.optim.lr, config.optim.layer_decay,
                                        base_name=adapt.base_parameter_name)


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


@dataclass(frozen=True)
class _CachedProbe:
    """A head and the cached features it fits on, until its ``last_epoch`` (LP-FT's switch, or the
    run's last epoch): training batches, and evaluation batches by split ("test", "val")."""

    head: torch.nn.Module
    train: FeatureBatches
    evaluations: dict[str, FeatureBatches]
    last_epoch: int


def _cached_probe(config: Config, model: torch.nn.Module, device: torch.device, amp_dtype: torch.dtype | None,
                  train_set: ImageSet, val_set: ImageSet | None, test_set: ImageSet, loader_args: dict[str, Any],
                  record: RunRecord) -> _CachedProbe:
    """freeze.cached_features=true: the frozen backbone's features of every split (evaluation mode,
    the test-time transform), from the feature cache (extracted on the first run), and the model's
    head with its batches over them."""
    head = head_name(config.model.name, model)
    sets = {"train": train_set, "test": test_set, **({"val": val_set} if val_set is not None else {})}
    cache_root = _cache_root(config)
    features, about = probe_features(
        model, head, sets,
        lambda data: make_loader(data, config.data.pipeline, config.train.eval_batch_size, train=False, **loader_args),
        cache_root, _feature_identity(config, record), device, amp_dtype)
    record.feature_cache, record.feature_cache_built, record.feature_seconds = (
        about["feature_cache"], about["feature_cache_built"], about["feature_seconds"])
    log.info("features: %s (%s, %.1f s)", record.feature_cache,
             "extracted now" if record.feature_cache_built else "from the cache", record.feature_seconds)
    seed, eval_batch = config.effective_seed, config.train.eval_batch_size
    unfreeze_at = config.freeze.unfreeze_at_epoch
    return _CachedProbe(
        model.get_submodule(head), FeatureBatches(features["train"], config.train.batch_size, train=True, seed=seed),
        {split: FeatureBatches(features[split], eval_batch, train=False, seed=seed) for split in ("test", "val")
         if split in features},
        unfreeze_at if unfreeze_at is not None else config.train.epochs)


def _cache_root(config: Config) -> Path:
    return Path(config.data.cache_dir).expanduser() if config.data.cache_dir is not None else default_cache_dir()


def _feature_identity(config: Config, record: RunRecord) -> dict[str, Any]:
    """What the features of this run depend on (probe.feature_identity): the cache's key."""
    data = config.data
    source: dict[str, Any] = {"name": data.name, **({"classes": list(data.classes)} if data.classes else {})}
    if data.name == "synthetic":
        source.update(num_train=data.num_train, num_test=data.num_test, seed=data.subset_seed)
    elif data.name == "imagefolder":
        source.update(content=scan_folder(data.root).content_key(data.stored_size), stored_size=data.stored_size,
                      test_fraction=data.test_fraction, test_seed=data.subset_seed)
    # The weights by the digest of the files loaded (a file, torchvision's, a timm tag's snapshot, a local-dir folder).
    init = weights_identity(record.init, (record.pretraining or {}).get("weights_sha256"), config.effective_seed)
    view = record.transforms
    return feature_identity(model_name=config.model.name, init=init, image_size=data.image_size,
                            # the test-time view: everything of the transforms but the training augmentation
                            test_view={**{k: v for k, v in view.items() if k != "train"}, "pipeline": data.pipeline},
                            data=source, subset={**record.subset, "val_fraction": data.val_fraction},
                            device_type=record.device.split(":")[0], precision=record.precision,
                            versions=record.versions)


def _fit_lbfgs(probe: _CachedProbe, device: torch.device, callbacks: Sequence[Callback], epochs: int,
               record: RunRecord) -> None:
    """freeze.probe=lbfgs: the head fitted once by L-BFGS logistic regression, its L2 strength chosen
    on the validation split, and told to the callbacks as the end of the probe's last epoch (its
    record entry, checkpoint, trackers, log line), as the loop tells them of an epoch."""
    log.info("fitting the head by L-BFGS logistic regression, choosing its L2 strength on the validation split")
    try:
        fitted = fit_logistic_regression(probe.head, probe.train.data, probe.evaluations["val"].data)
        record.probe_l2, record.probe_seconds = fitted.l2, round(fitted.seconds, 3)
        record.probe_l2_sweep = [{"l2": l2, "val_acc": accuracy, "val_loss": loss}
                                 for l2, (accuracy, loss) in fitted.sweep.items()]
        log.info("L-BFGS chose l2=%g (validation accuracy %.2f%%) of %d values in %.1f s", fitted.l2,
                 100 * fitted.val_accuracy, len(fitted.sweep), fitted.seconds)
        trained = evaluate(probe.head, probe.train.epoch(1), device)
        trained = EpochResult(trained.loss, trained.accuracy, trained.images, fitted.seconds)
        evaluated = {split: evaluate(probe.head, batches.epoch(1), device, keep_predictions=split == "test")
                     for split, batches in probe.evaluations.items()}
        end = EpochEnd(probe.last_epoch, epochs, trained, evaluated, lr=None)  # no learning rate: L-BFGS
        for callback in callbacks:
            callback.on_epoch_end(end)
    except BaseException:
        stop_callbacks(callbacks)
        raise


def _resumes(config: Config, checkpoint_path: Path) -> bool:
    """Whether the run continues from its checkpoint. force=true re-runs from the first epoch: a
    checkpoint kept from the run it replaces (keep_checkpoint=true) or left by another config is
    no start for it."""
    return config.resume and not config.force and checkpoint_path.exists()


def _starting_point(config: Config, path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scaler: torch.amp.GradScaler | None, record: RunRecord,
                    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
                    trained_on: str | None = None) -> tuple[int, str | None]:
    """(epochs already done, the SHA-256 of the checkpoint resumed from or None): (0, None) for a
    run that starts at its first epoch, which removes the checkpoint of the run it starts over
    from (resume=false, force=true), so that no later resume takes it for this run's. ``trained_on``
    is the data_digest of this run's training images, which a checkpoint to resume must have."""
    if _resumes(config, path):
        return _resume(path, model, optimizer, scaler, record, config.freeze.unfreeze_at_epoch, config.train.epochs,
                       scheduler, trained_on)
    if path.exists() or digest_path(path).exists():
        log.info("starting over: removing %s of the earlier run", path)
        remove_checkpoint(path)
    return 0, None


def _resume(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
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


def write_samples(path: Path, data: ImageSet, per_class: int = SAMPLES_PER_CLASS,
                  max_images: int = MAX_SAMPLE_IMAGES) -> None:
    """A few training images of each class (before augmentation) with the class names, for the
    report's sample grid: numpy arrays, so the report reads them without torch.

    The first ``per_class`` images of each class in training-set order (the same images every time),
    fewer of each where the classes are many, so that at most ``max_images`` are kept: 4 of each
    of CIFAR-10's 10 classes, 1 of each of CIFAR-100's 100, 1 of each of the first ``max_images``
    classes of a dataset with more. A class with fewer training images has fewer in the grid."""
    import numpy as np

    per_class = max(1, min(per_class, max_images // max(1, len(data.classes))))
    labels = data.labels.cpu().numpy()
    shown_classes = range(min(len(data.classes), max_images // per_class))
    indices = np.concatenate([np.flatnonzero(labels == label)[:per_class] for label in shown_classes] or [[]])
    indices = torch.from_numpy(indices.astype(np.int64))
    images = data.images[indices]
    if images.shape[-1] > SAMPLE_SIZE:  # an image folder's stored images: thumbnails are enough for a grid
        images = F.interpolate(images.float(), size=(SAMPLE_SIZE, SAMPLE_SIZE), mode="bilinear", antialias=True)
        images = images.round().clamp(0, 255).to(torch.uint8)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, images=images.permute(0, 2, 3, 1).cpu().numpy(), labels=labels[indices.numpy()],
                        classes=np.array(data.classes))
    write_atomic(path, buffer.getvalue())


def _state_dict_on_host(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A state_dict that ``torchvision.models.get_model(name, num_classes=K)`` (or
    ``timm.create_model(name, num_classes=K)``) loads as it is, K being the run's ``num_classes``."""
    return {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}


def new_record(config: Config, overrides: list[str] | tuple[str, ...]) -> RunRecord:
    """The record of a run that starts: its settings; the rest is filled in as the run learns it."""
    data = config.data
    return RunRecord(
        status="running", name=config.name, model=config.model.name,
        pretrained=config.model.pretrained or config.model.weights is not None, init=None,
        data=data.name, dataset=dataset_name(data), transforms=transforms_of(data).describe(data.image_size),
        fraction=data.fraction, per_class=data.per_class,
        subset={"sampling": data.sampling, "seed": config.effective_subset_seed, "fraction": data.fraction,
                "per_class": data.per_class},
        image_size=data.image_size, freeze="custom" if config.freeze.modules is not None else config.freeze.name,
        repeat=config.repeat, seed=config.effective_seed, subset_seed=config.effective_subset_seed,
        config=as_dict(config), overrides=list(overrides), started_at=utc_now(), versions=_versions(),
        host=platform.node(), pid=os.getpid(), slurm_job_id=_slurm_job_id(),
        nondeterministic_ops=[] if config.deterministic else None,
        data_source=data_source(data),
    )


def _slurm_job_id() -> str | None:
    """The Slurm job this run executes in, named as squeue names it (``ARRAYID_TASK`` for an element
    of a job array, which is how hydra/launcher=slurm submits a sweep); None outside Slurm."""
    if "SLURM_ARRAY_JOB_ID" in os.environ:
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}"
    return os.environ.get("SLURM_JOB_ID")


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple MPS"
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _versions() -> dict[str, str]:
    import hydra
    import omegaconf
    import torchvision

    return {
        "transferlab": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "hydra": hydra.__version__,
        "omegaconf": omegaconf.__version__,
        "cuda": torch.version.cuda or "none",
    }
