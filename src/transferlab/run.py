"""The one assembly point: a validated Config and a run folder in, a finished run record out.

Everything below this module takes plain values; everything above it (the CLI, Hydra) only
composes and validates the config and picks the folder.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import signal
import sys
import threading
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from transferlab import __version__
from transferlab.checkpoint import CHECKPOINT_FILE, CheckpointError, load_checkpoint, restore, save_checkpoint
from transferlab.config import Config, DataConfig, as_dict, result_config
from transferlab.data import ImageSet, load_cifar10, make_loader, make_synthetic, subset_indices
from transferlab.engine import (
    EpochResult, NonFiniteLoss, ProgressBar, configure_determinism, evaluate, make_optimizer, select_amp_dtype,
    select_device, train_one_epoch,
)
from transferlab.errors import ConfigError, RunInterrupted, TransferlabError
from transferlab.gpus import claimed_gpu
from transferlab.loggers import MetricLogger, make_logger
from transferlab.models import (
    apply_freeze, build_model, check_image_size, count_parameters, frozen_modules, model_spec,
    trainable_parameter_names,
)
from transferlab.records import SAMPLES_FILE, utc_now, write_record

log = logging.getLogger(__name__)
MODEL_FILE = "model.pt"


def load_datasets(data: DataConfig) -> tuple[ImageSet, ImageSet]:
    """(training subset, full test set) for the data config."""
    if data.name == "synthetic":
        train, test = make_synthetic(data.num_train, data.num_test, seed=data.subset_seed)
    else:
        train, test = load_cifar10(data.root, data.download)
    return train.subset(subset_indices(len(train), data.fraction, data.subset_seed)), test


def run_training(config: Config, run_dir: Path, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Train and evaluate one run, saving a checkpoint and rewriting run.json and metrics.csv in
    ``run_dir`` at every epoch end. Returns the final record; its ``status`` is ``completed`` or
    ``failed`` (with ``error``). Ctrl-C or SIGTERM marks the record ``interrupted`` and raises
    RunInterrupted; the last epoch-end checkpoint stays for ``resume``."""
    run_dir = Path(run_dir)
    record = _new_record(config, overrides)
    # Made before run.json is rewritten: a resumed run's MLflow run id is read from it.
    metric_logger = make_logger(config.logger, run_dir, config.resume and (run_dir / CHECKPOINT_FILE).exists())
    write_record(run_dir, record)
    try:
        metric_logger.start(record)  # a tracker that cannot be used fails the run here, before any training
        with _sigterm_interrupts(), _run_device(config.device) as device:
            _train(config, device, run_dir, record, metric_logger)
        record["status"] = "completed"
    except TransferlabError as error:
        record.update(status="failed", error=str(error))
        log.error("run failed: %s", error)
        log.debug("traceback:", exc_info=True)
    except KeyboardInterrupt as interrupt:
        record.update(status="interrupted", error="interrupted by a signal; run the same command again to resume")
        log.warning("run interrupted after %d finished epoch(s); run the same command again to resume",
                    len(record["history"]))
        raise RunInterrupted(str(run_dir), getattr(interrupt, "exit_code", 130)) from None
    except Exception as error:  # a bug or a library failure: keep the traceback in the run's log
        record.update(status="failed", error=f"{type(error).__name__}: {error}", traceback=traceback.format_exc())
        log.error("run failed: %s: %s", type(error).__name__, error)
        log.debug("traceback:\n%s", record["traceback"])
    finally:
        record["finished_at"] = utc_now()
        write_record(run_dir, record)
        metric_logger.end(record)  # the final status, and run.json among the tracked files
    return record


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """Turn SIGTERM (a cluster's or `kill`'s request to stop) into an interrupt, like Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
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
    with claimed_gpu(count) as index:
        torch.cuda.set_device(index)
        yield torch.device("cuda", index)


def _train(config: Config, device: torch.device, run_dir: Path, record: dict[str, Any],
           metric_logger: MetricLogger) -> None:
    check_image_size(config.model.name, config.data.image_size)
    frozen = frozen_modules(config.model.name, config.freeze.name, config.freeze.modules)
    record["frozen_modules"] = list(frozen)
    amp_dtype = select_amp_dtype(config.precision, device)
    configure_determinism(config.seed, config.deterministic, device)
    record.update(device=str(device), device_name=_device_name(device),
                  precision="fp32" if amp_dtype is None else str(amp_dtype).removeprefix("torch."))

    train_set, test_set = load_datasets(config.data)
    record.update(num_train_images=len(train_set), num_test_images=len(test_set),
                  num_classes=len(train_set.classes), classes=list(train_set.classes))
    memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    model = _build_model(config, len(train_set.classes), frozen, device, memory_format, record)
    optimizer = make_optimizer(
        config.optim.name, [p for p in model.parameters() if p.requires_grad], lr=config.optim.lr,
        momentum=config.optim.momentum, weight_decay=config.optim.weight_decay, betas=tuple(config.optim.betas),
    )
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None
    checkpoint_path = run_dir / CHECKPOINT_FILE
    first_epoch = 1
    if config.resume and checkpoint_path.exists():
        first_epoch = _resume(checkpoint_path, model, optimizer, scaler, record) + 1
    forward = torch.compile(model) if config.train.compile else model

    write_samples(run_dir / SAMPLES_FILE, train_set)
    loader_args = dict(image_size=config.data.image_size, seed=config.seed, device=device,
                       num_workers=config.data.num_workers, memory_format=memory_format)
    train_batches = make_loader(train_set, config.data.pipeline, config.train.batch_size, train=True, **loader_args)
    test_batches = make_loader(test_set, config.data.pipeline, config.train.eval_batch_size, train=False, **loader_args)
    show_progress = config.progress == "on" or (config.progress == "auto" and sys.stdout.isatty())
    log.info("%s (%s), %d of %d parameters train, %d training / %d test images, on %s, %s",
             config.model.name, record["init"], record["params_trainable"], record["params_total"],
             len(train_set), len(test_set), record["device_name"], record["precision"])

    epochs = config.train.epochs
    try:
        for epoch in range(first_epoch, epochs + 1):
            bar = ProgressBar(f"epoch {epoch}/{epochs}", len(train_batches), sys.stdout) if show_progress else None
            try:
                trained = train_one_epoch(forward, train_batches.epoch(epoch), optimizer, device, amp_dtype, scaler,
                                          bar)
            except NonFiniteLoss as error:
                raise TransferlabError(f"epoch {epoch}, batch {error.batch}: the training loss is not finite "
                                       "(NaN or inf); try a lower optim.lr or precision=fp32") from error
            tested = evaluate(forward, test_batches.epoch(epoch), device, amp_dtype)
            entry = _history_entry(epoch, trained, tested)
            record["history"].append(entry)
            record.update(test_acc=tested.accuracy, test_loss=tested.loss)
            save_checkpoint(checkpoint_path, model, optimizer, scaler, epoch, record["history"], record["config"])
            write_record(run_dir, record)
            metric_logger.log_epoch(entry)
            log.info("epoch %d/%d  train loss %.4f acc %.2f%%  test loss %.4f acc %.2f%%  %.1f s  %.0f img/s",
                     epoch, epochs, trained.loss, 100 * trained.accuracy, tested.loss, 100 * tested.accuracy,
                     trained.seconds, trained.images_per_second)
    finally:
        metric_logger.close()

    if config.save_model:
        _save_state_dict(model, run_dir / MODEL_FILE)
        record["model_file"] = MODEL_FILE
    if not config.keep_checkpoint:
        checkpoint_path.unlink(missing_ok=True)


def _build_model(config: Config, num_classes: int, frozen: tuple[str, ...], device: torch.device,
                 memory_format: torch.memory_format, record: dict[str, Any]) -> torch.nn.Module:
    model = build_model(config.model.name, config.model.pretrained, config.model.weights, num_classes)
    trainable = trainable_parameter_names(model, frozen)
    if not trainable:
        head = model_spec(config.model.name).head
        raise ConfigError(f"freeze.modules={list(frozen)} leaves no parameter to train; keep {head} out of it")
    apply_freeze(model, trainable)
    model.to(device, memory_format=memory_format)
    record["params_total"], record["params_trainable"] = count_parameters(model)
    return model


def _resume(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
            scaler: torch.amp.GradScaler | None, record: dict[str, Any]) -> int:
    """Restore the run from its checkpoint; the number of epochs it had finished."""
    checkpoint = load_checkpoint(path)
    if result_config(checkpoint.config) != result_config(record["config"]):
        raise CheckpointError(f"{path} was written by a run of another config; delete it or pass resume=false")
    restore(checkpoint, model, optimizer, scaler, path)
    record["history"] = list(checkpoint.history)
    record["resumed_after_epoch"] = checkpoint.epoch
    if checkpoint.history:
        record.update(test_acc=checkpoint.history[-1]["test_acc"], test_loss=checkpoint.history[-1]["test_loss"])
    log.info("resuming from %s after epoch %d", path, checkpoint.epoch)
    return checkpoint.epoch


def write_samples(path: Path, data: ImageSet, count: int = 32) -> None:
    """The first ``count`` training images (before augmentation) with their class names, for the
    report's sample grid: numpy arrays, so the report reads them without torch."""
    import numpy as np

    count = min(count, len(data))
    temporary = path.with_name(f".{path.name}.tmp.npz")
    np.savez_compressed(temporary, images=data.images[:count].permute(0, 2, 3, 1).cpu().numpy(),
                        labels=data.labels[:count].cpu().numpy(), classes=np.array(data.classes))
    os.replace(temporary, path)


def _history_entry(epoch: int, trained: EpochResult, tested: EpochResult) -> dict[str, Any]:
    return {
        "epoch": epoch,
        "train_loss": trained.loss,
        "train_acc": trained.accuracy,
        "test_loss": tested.loss,
        "test_acc": tested.accuracy,
        "epoch_seconds": trained.seconds,
        "eval_seconds": tested.seconds,
        "images_per_second": trained.images_per_second,
    }


def _save_state_dict(model: torch.nn.Module, path: Path) -> None:
    """A state_dict that ``torchvision.models.get_model(name, num_classes=K)`` loads as it is, K being
    the run's ``num_classes``."""
    state_dict = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    temporary = path.with_name(f".{path.name}.tmp")
    torch.save(state_dict, temporary)
    os.replace(temporary, path)


def _new_record(config: Config, overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    if config.model.weights is not None:
        init = f"file:{config.model.weights}"
    else:
        init = "IMAGENET1K_V1" if config.model.pretrained else "random"
    return {
        "status": "running",
        "name": config.name,
        "model": config.model.name,
        "pretrained": config.model.pretrained or config.model.weights is not None,
        "init": init,
        "data": config.data.name,
        "fraction": config.data.fraction,
        "image_size": config.data.image_size,
        "freeze": "custom" if config.freeze.modules is not None else config.freeze.name,
        "frozen_modules": None,
        "seed": config.seed,
        "config": as_dict(config),
        "overrides": list(overrides),
        "num_classes": None,
        "classes": None,
        "params_total": None,
        "params_trainable": None,
        "history": [],
        "test_acc": None,
        "test_loss": None,
        "started_at": utc_now(),
        "finished_at": None,
        "versions": _versions(),
        "host": platform.node(),
    }


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
