"""A run's linear probe on cached features (freeze.cached_features=true), beside the feature cache
of probe.py: the frozen backbone's features of every split come from the cache (extracted on the
first run), and the head fits on them, either through the training loop until LP-FT's switch (or
the run's end), or at once by L-BFGS logistic regression (freeze.probe=lbfgs).

run.py calls ``on_cached_features`` with what fit would get; what comes back is what fit gets.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from transferlab.caches import default_cache_dir
from transferlab.config import Config
from transferlab.data import ImageSet
from transferlab.datasets import feature_source
from transferlab.engine import EpochResult, evaluate
from transferlab.fit import Batches, Callback, EpochEnd, end_epoch, stopping
from transferlab.models import head_name
from transferlab.probe import (
    FeatureBatches, HeadOrNetwork, PhasedBatches, feature_identity, fit_logistic_regression, probe_features,
    weights_identity,
)
from transferlab.records import RunRecord

log = logging.getLogger("transferlab.run")


@dataclass(frozen=True)
class FitPlan:
    """What fit trains: the module it calls, its training and evaluation batches (by split), and the
    epochs already done (a resumed run's, or the probe's when L-BFGS fitted it)."""

    forward: torch.nn.Module
    train_batches: Batches
    evaluations: dict[str, Batches]
    epochs_done: int


@dataclass(frozen=True)
class CachedProbe:
    """A head and the cached features it fits on, until its ``last_epoch`` (LP-FT's switch, or the
    run's last epoch): training batches, and evaluation batches by split ("test", "val")."""

    head: torch.nn.Module
    train: FeatureBatches
    evaluations: dict[str, FeatureBatches]
    last_epoch: int


def on_cached_features(config: Config, plan: FitPlan, model: torch.nn.Module, sets: dict[str, ImageSet],
                       eval_batches: Callable[[ImageSet], Batches], device: torch.device,
                       amp_dtype: torch.dtype | None, record: RunRecord, callbacks: Sequence[Callback]) -> FitPlan:
    """The plan with the head training on cached features until the probe's last epoch (through
    PhasedBatches, then the network's own batches after LP-FT's switch), or with the probe's epochs
    done by L-BFGS. A run resumed after the switch needs no features (and its restored backbone,
    fine-tuned, must never make features for the cache): its plan stays as it was.
    ``sets`` holds the images by split ("train", "test", "val")."""
    epochs, unfreeze_at = config.train.epochs, config.freeze.unfreeze_at_epoch
    if not config.freeze.cached_features or plan.epochs_done >= (unfreeze_at or epochs):
        return plan
    probe = cached_probe(config, model, sets, eval_batches, device, amp_dtype, record)
    if config.freeze.probe == "lbfgs" and plan.epochs_done < probe.last_epoch:
        fit_lbfgs(probe, device, callbacks, epochs, record)
        return replace(plan, epochs_done=probe.last_epoch)
    return replace(plan, forward=HeadOrNetwork(plan.forward, probe.head),
                   train_batches=PhasedBatches(probe.train, plan.train_batches, probe.last_epoch),
                   evaluations={split: PhasedBatches(probe.evaluations[split], batches, probe.last_epoch)
                                for split, batches in plan.evaluations.items()})


def cached_probe(config: Config, model: torch.nn.Module, sets: dict[str, ImageSet],
                 eval_batches: Callable[[ImageSet], Batches], device: torch.device, amp_dtype: torch.dtype | None,
                 record: RunRecord) -> CachedProbe:
    """The frozen backbone's features of every split (evaluation mode, the test-time transform,
    ``eval_batches``), from the feature cache (extracted on the first run), and the model's head
    with its batches over them."""
    head = head_name(config.model.name, model)
    features, about = probe_features(model, head, sets, eval_batches, cache_root(config),
                                     run_feature_identity(config, record), device, amp_dtype)
    record.feature_cache, record.feature_cache_built, record.feature_seconds = (
        about["feature_cache"], about["feature_cache_built"], about["feature_seconds"])
    record.feature_splits_built = about["feature_splits_built"]
    built = ", ".join(record.feature_splits_built)
    log.info("features: %s (%s, %.1f s)", " ".join(record.feature_cache.values()),
             f"extracted now: {built}" if built else "from the cache", record.feature_seconds)
    seed, eval_batch = config.effective_seed, config.train.eval_batch_size
    unfreeze_at = config.freeze.unfreeze_at_epoch
    return CachedProbe(
        model.get_submodule(head), FeatureBatches(features["train"], config.train.batch_size, train=True, seed=seed),
        {split: FeatureBatches(features[split], eval_batch, train=False, seed=seed) for split in ("test", "val")
         if split in features},
        unfreeze_at if unfreeze_at is not None else config.train.epochs)


def cache_root(config: Config) -> Path:
    """Where the run's caches live: data.cache_dir, or the default cache folder."""
    return Path(config.data.cache_dir).expanduser() if config.data.cache_dir is not None else default_cache_dir()


def run_feature_identity(config: Config, record: RunRecord) -> dict[str, Any]:
    """What the features of this run depend on (probe.feature_identity): the cache's key."""
    data = config.data
    # The weights by the digest of the files loaded (a file, torchvision's, a timm tag's snapshot, a local-dir folder).
    init = weights_identity(record.init, (record.pretraining or {}).get("weights_sha256"), config.effective_seed)
    view = record.transforms
    return feature_identity(model_name=config.model.name, init=init, image_size=data.image_size,
                            # the test-time view: everything of the transforms but the training augmentation
                            test_view={**{k: v for k, v in view.items() if k != "train"}, "pipeline": data.pipeline},
                            data=feature_source(data), subset={**record.subset, "val_fraction": data.val_fraction},
                            device_type=record.device.split(":")[0], precision=record.precision,
                            versions=record.versions)


def fit_lbfgs(probe: CachedProbe, device: torch.device, callbacks: Sequence[Callback], epochs: int,
              record: RunRecord) -> None:
    """freeze.probe=lbfgs: the head fitted once by L-BFGS logistic regression, its L2 strength chosen
    on the validation split, and told to the callbacks as the end of the probe's last epoch (its
    record entry, checkpoint, trackers, log line), as the loop tells them of an epoch."""
    log.info("fitting the head by L-BFGS logistic regression, choosing its L2 strength on the validation split")
    with stopping(callbacks):
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
        end_epoch(callbacks, EpochEnd(probe.last_epoch, epochs, trained, evaluated, lr=None))  # no rate: L-BFGS
