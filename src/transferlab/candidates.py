"""Scoring one candidate (`transferlab rank`'s work, rank.py): its frozen features of the target's
training subset and validation split from probe.py's feature cache (shared with a
freeze.cached_features=true run of the same candidate and data; no score needs the test set, so its
features are never extracted here: at the study's sizes, a 10,000-image test set beside 5,000
training images, they would be two thirds of the work), the scores of transferlab.scores on
the training features, the linear probe's validation accuracy, NCE and LEEP from its source
classifier where it keeps one, each score's seconds, and the record of it all (score.json's dict)."""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from transferlab import scores
from transferlab.config import Config, as_dict
from transferlab.data import ImageSet, data_source, dataset_name, make_loader, stratified_split
from transferlab.datasets import feature_source, load_datasets
from transferlab.diskcache import DIGEST_MEMO
from transferlab.engine import configure_determinism, precision_name, select_amp_dtype, select_device
from transferlab.errors import ConfigError
from transferlab.models import build_model_with_init, head_name, pretrained_state
from transferlab.probe import Features, feature_identity, fit_logistic_regression, probe_features, weights_identity
from transferlab.probe_fit import cache_root
from transferlab.records import utc_now
from transferlab.sources import read_state_dict

SCORE_KIND = "score"


def score_config(config: Config) -> dict[str, Any]:
    """The score record of the candidate ``config`` describes, on its data."""
    started = time.perf_counter()
    device = select_device(config.device)
    threads = torch.get_num_threads()
    if device.type == "cpu" and config.train.threads is not None:  # as a run's train.threads: a busy machine's lever
        torch.set_num_threads(config.train.threads)
    try:
        return _score(config, device, started)
    finally:
        torch.set_num_threads(threads)


def _score(config: Config, device: torch.device, started: float) -> dict[str, Any]:
    amp_dtype = select_amp_dtype(config.precision, device)
    # Seeded as a training run is before it loads its data and builds its model: a random initialisation is
    # the run's own, as the feature cache's key (weights_identity: random and the seed) says it is.
    configure_determinism(config.effective_seed, config.deterministic, device)
    data = config.data
    train_set, _ = load_datasets(data, config.effective_subset_seed)
    train_set, val_set = _hold_out(train_set, data.val_fraction, config.effective_subset_seed)
    classes = list(train_set.classes)
    caches = cache_root(config)
    model, init = build_model_with_init(config.model.name, config.model.pretrained, config.model.weights, len(classes),
                                        data.image_size, caches / DIGEST_MEMO, classes=classes,
                                        new_head=config.model.new_head, weights_name=config.model.weights_name)
    model.to(device)
    from transferlab.run import transforms_of  # the transforms a training run of this config would use

    transforms = transforms_of(data, model)
    loader_args = dict(image_size=data.image_size, seed=config.effective_seed, device=device,
                       num_workers=data.num_workers, transforms=transforms)
    head = head_name(config.model.name, model)
    versions = _versions()
    identity = feature_identity(
        model_name=config.model.name, init=weights_identity(init.init, init.weights_sha256, config.effective_seed),
        image_size=data.image_size,
        test_view={**{k: v for k, v in transforms.describe(data.image_size).items() if k != "train"},
                   "pipeline": data.pipeline},
        data=feature_source(data), subset={"sampling": data.sampling, "seed": config.effective_subset_seed,
                                               "fraction": data.fraction, "per_class": data.per_class,
                                               "val_fraction": data.val_fraction},
        device_type=device.type, precision=precision_name(amp_dtype), versions=versions)
    sets = {"train": train_set, "val": val_set}  # a cached-probe run's keys: the same caches
    features, about = probe_features(
        model, head, sets,
        lambda split: make_loader(split, data.pipeline, config.train.eval_batch_size, train=False, **loader_args),
        caches, identity, device, amp_dtype)
    train = features["train"].to(torch.device("cpu"))
    values, seconds = feature_scores(train, features["val"].to(torch.device("cpu")))
    source = source_head(config, model, head)
    if source is not None:
        probabilities = torch.softmax(train.features @ source[0].T + source[1], dim=1).numpy()
        for name, score in (("nce", scores.nce), ("leep", scores.leep)):
            start = time.perf_counter()
            values[name] = float(score(probabilities, train.labels.numpy()))
            seconds[name] = round(time.perf_counter() - start, 4)
    else:
        values.update(nce=None, leep=None)
    return {
        "kind": SCORE_KIND, "schema_version": 1, "status": "completed", "name": config.name,
        "model": config.model.name, "init": init.init, "pretraining": init.as_record(),
        "pretrained": config.model.pretrained or config.model.weights is not None,
        "data": data.name, "dataset": dataset_name(data), "data_source": data_source(data),
        "image_size": data.image_size, "fraction": data.fraction, "per_class": data.per_class,
        "num_train_images": len(train_set), "num_val_images": len(val_set), "num_classes": len(classes),
        "classes": classes, "source_classes": None if source is None else int(source[0].shape[0]),
        "features": int(train.features.shape[1]), "device": str(device), "precision": precision_name(amp_dtype),
        "scores": values, "score_seconds": seconds, **about,
        "seconds": round(time.perf_counter() - started, 3), "config": as_dict(config), "versions": versions,
        "host": platform.node(), "finished_at": utc_now(),
    }


def feature_scores(train: Features, val: Features) -> tuple[dict[str, float | None], dict[str, float]]:
    """({score: value}, {score: seconds}) of the scores of the training features (and the linear
    probe fitted on them, by its validation accuracy)."""
    features, labels = train.features.double().numpy(), train.labels.numpy()
    values: dict[str, float | None] = {}
    seconds: dict[str, float] = {}
    for name, score in (("logme", scores.logme), ("h_score", scores.h_score), ("knn_accuracy", scores.knn_accuracy)):
        start = time.perf_counter()
        values[name] = float(score(features, labels))
        seconds[name] = round(time.perf_counter() - start, 4)
    start = time.perf_counter()
    probe = torch.nn.Linear(train.features.shape[1], int(max(labels.max(), val.labels.max())) + 1)
    values["probe_val_accuracy"] = fit_logistic_regression(probe, train, val).val_accuracy
    seconds["probe_val_accuracy"] = round(time.perf_counter() - start, 4)
    return values, seconds


def source_head(config: Config, model: torch.nn.Module, head: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(weight (Z, D), bias (Z,)) of the candidate's source classifier, on the CPU: its weights
    file's own head, torchvision's or timm's ImageNet head; None for a random initialisation or a
    head that is not one linear layer of the features' width."""
    width = model.get_submodule(head).in_features if isinstance(model.get_submodule(head), torch.nn.Linear) else None
    state = None
    if config.model.weights is not None:  # its own head, or none: never the library's in its place
        if not Path(config.model.weights).is_file():  # a timm local-dir: folder
            return None
        state = read_state_dict(Path(config.model.weights))  # .pth or .safetensors, as the run loads it
    elif config.model.pretrained:
        state = pretrained_state(config.model.name)
    if not isinstance(state, dict):
        return None
    weight, bias = state.get(f"{head}.weight"), state.get(f"{head}.bias")
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2 or weight.shape[1] != width:
        return None
    bias = bias if isinstance(bias, torch.Tensor) else torch.zeros(weight.shape[0])
    return weight.float(), bias.float()


def _hold_out(train: ImageSet, fraction: float, seed: int) -> tuple[ImageSet, ImageSet]:
    """(images scored, the probe's validation split), drawn as a run draws its validation split."""
    kept, held_out = stratified_split(train.labels, fraction, seed) if fraction > 0 else (None, [])
    if len(held_out) == 0:
        raise ConfigError(f"data.val_fraction={fraction} holds out no image of the {len(train)}-image training subset; "
                          "transferlab rank needs a validation split for its linear probe: raise data.val_fraction")
    return train.subset(kept), train.subset(held_out)


def _versions() -> dict[str, str]:
    import torchvision

    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "numpy": np.__version__}
