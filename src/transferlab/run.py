"""The one assembly point: a validated Config and a run folder in, a finished run record out.

Everything below this module takes plain values; everything above it (the CLI, Hydra) only
composes and validates the config and picks the folder.
"""

from __future__ import annotations

import logging
import os
import platform
import sys
import traceback
from pathlib import Path
from typing import Any

import torch

from transferlab import __version__
from transferlab.config import Config, DataConfig, as_dict
from transferlab.data import ImageSet, load_cifar10, make_loader, make_synthetic, subset_indices
from transferlab.engine import (
    EpochResult, ProgressBar, configure_determinism, evaluate, make_optimizer, select_amp_dtype,
    select_device, train_one_epoch,
)
from transferlab.errors import ConfigError, TransferlabError
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
    """Train and evaluate one run, rewriting run.json and metrics.csv in ``run_dir`` at every
    epoch end. Returns the final record; its ``status`` is ``completed`` or ``failed`` (with
    ``error``). Ctrl-C marks the record ``interrupted`` and is re-raised."""
    run_dir = Path(run_dir)
    record = _new_record(config, overrides)
    write_record(run_dir, record)
    try:
        _train(config, run_dir, record)
        record["status"] = "completed"
    except TransferlabError as error:
        record.update(status="failed", error=str(error))
        log.error("run failed: %s", error)
    except KeyboardInterrupt:
        record.update(status="interrupted", error="interrupted by the user")
        log.warning("run interrupted; the record keeps the epochs that finished")
        raise
    except Exception as error:  # a bug or a library failure: keep the traceback in the run's log
        record.update(status="failed", error=f"{type(error).__name__}: {error}",
                      traceback=traceback.format_exc())
        log.error("run failed: %s: %s", type(error).__name__, error)
        log.debug("traceback:\n%s", record["traceback"])
    finally:
        record["finished_at"] = utc_now()
        write_record(run_dir, record)
    return record


def _train(config: Config, run_dir: Path, record: dict[str, Any]) -> None:
    spec = model_spec(config.model.name)
    check_image_size(config.model.name, config.data.image_size)
    frozen = frozen_modules(config.model.name, config.freeze.name, config.freeze.modules)
    record["frozen_modules"] = list(frozen)
    device = select_device(config.device)
    amp_dtype = select_amp_dtype(config.precision, device)
    configure_determinism(config.seed, config.deterministic, device)
    record.update(device=str(device), device_name=_device_name(device),
                  precision="fp32" if amp_dtype is None else str(amp_dtype).removeprefix("torch."))

    model = build_model(config.model.name, config.model.pretrained, config.model.weights)
    trainable = trainable_parameter_names(model, frozen)
    if not trainable:
        raise ConfigError(f"freeze.modules={list(frozen)} leaves no parameter to train; keep {spec.head} out of it")
    apply_freeze(model, trainable)
    memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    model.to(device, memory_format=memory_format)
    record["params_total"], record["params_trainable"] = count_parameters(model)
    optimizer = make_optimizer(
        config.optim.name, [p for p in model.parameters() if p.requires_grad], lr=config.optim.lr,
        momentum=config.optim.momentum, weight_decay=config.optim.weight_decay, betas=tuple(config.optim.betas),
    )
    forward = torch.compile(model) if config.train.compile else model

    train_set, test_set = load_datasets(config.data)
    record.update(num_train_images=len(train_set), num_test_images=len(test_set))
    write_samples(run_dir / SAMPLES_FILE, train_set)
    loader_args = dict(image_size=config.data.image_size, seed=config.seed, device=device,
                       num_workers=config.data.num_workers, memory_format=memory_format)
    train_batches = make_loader(train_set, config.data.pipeline, config.train.batch_size, train=True, **loader_args)
    test_batches = make_loader(test_set, config.data.pipeline, config.train.eval_batch_size, train=False, **loader_args)
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None
    show_progress = config.progress == "on" or (config.progress == "auto" and sys.stdout.isatty())
    log.info("%s (%s), %d of %d parameters train, %d training / %d test images, on %s, %s",
             config.model.name, record["init"], record["params_trainable"], record["params_total"],
             len(train_set), len(test_set), record["device_name"], record["precision"])

    epochs = config.train.epochs
    for epoch in range(1, epochs + 1):
        bar = ProgressBar(f"epoch {epoch}/{epochs}", len(train_batches), sys.stdout) if show_progress else None
        trained = train_one_epoch(forward, train_batches.epoch(epoch), optimizer, device, amp_dtype, scaler, bar)
        tested = evaluate(forward, test_batches.epoch(epoch), device, amp_dtype)
        record["history"].append(_history_entry(epoch, trained, tested))
        record.update(test_acc=tested.accuracy, test_loss=tested.loss)
        write_record(run_dir, record)
        log.info("epoch %d/%d  train loss %.4f acc %.2f%%  test loss %.4f acc %.2f%%  %.1f s  %.0f img/s",
                 epoch, epochs, trained.loss, 100 * trained.accuracy, tested.loss, 100 * tested.accuracy,
                 trained.seconds, trained.images_per_second)

    if config.save_model:
        _save_state_dict(model, run_dir / MODEL_FILE)
        record["model_file"] = MODEL_FILE


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
    """A state_dict that ``torchvision.models.get_model(name, num_classes=10)`` loads as it is."""
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
