"""The typed config schema: Hydra composes conf/ onto these dataclasses, so a misspelled key or a
wrong type fails at composition, and the value checks in ``__post_init__`` run when
``validate`` turns the composed config into objects. Model-specific checks (image size, module
names) need the model table and happen where the model is built."""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import math
import os
import re
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from transferlab.datasets import DATASETS as DATASET_TABLE
from transferlab.datasets import check_classes, identity_keys
from transferlab.errors import ConfigError, TransferlabError

DEVICES = ("auto", "cuda", "cpu", "mps")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
DATASETS = tuple(DATASET_TABLE)  # transferlab.datasets holds what each one is
PIPELINES = ("device", "reference")
# How the training subset is drawn (data/images.py subset_indices): each class keeps its share, or
# a uniformly random share of all images (transferlab's draw before data.sampling existed).
SAMPLINGS = ("stratified", "uniform")
# The training augmentations and normalisation statistics a dataset can be given (see data/pipelines.py).
# pad_crop and resized_crop are pad_crop_flip and random_resized_crop without the horizontal flip (digits, text).
AUGMENTATIONS = ("pad_crop_flip", "random_resized_crop", "flip", "none", "pad_crop", "resized_crop")
# auto: the model's own (a timm model's pretrained_cfg: mean, std, interpolation, crop; ImageNet's for torchvision).
NORMALIZATIONS = ("cifar10", "cifar100", "imagenet", "digits", "auto")
OPTIMIZERS = ("sgd", "adamw")
# How the optimizer's step runs: PyTorch's choice (foreach on a GPU), one kernel per parameter,
# batched kernels, or one fused kernel.
OPTIMIZER_IMPLEMENTATIONS = ("auto", "for_loop", "foreach", "fused")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
PROGRESS = ("auto", "on", "off")
LOGGERS = ("none", "tensorboard", "mlflow")
FREEZE_PRESETS = ("none", "early", "middle", "last_only")
# How the model is adapted (transferlab.adapt): all its trainable parameters, LoRA adapters (peft),
# or BitFit (biases and normalisation parameters); the head trains fully in each.
ADAPTERS = ("none", "lora", "bitfit")
# The learning-rate schedules (transferlab.schedules), stepped per batch after optim.warmup_epochs.
SCHEDULES = ("constant", "cosine", "step")
# How a head fitted on cached features trains (transferlab.probe): the run's optimizer over its
# epochs, or L-BFGS logistic regression with its L2 strength chosen on the validation split.
PROBE_FITS = ("optimizer", "lbfgs")
# Settings that change where or how visibly a run happens, not its results.
# data.root is one of them except where the dataset table (transferlab.datasets) makes it an identity key:
# for data=imagefolder the folder is the dataset (see result_config).
NOT_RESULT_KEYS = ("force", "progress", "resume", "keep_checkpoint", "logger", "data.root", "data.num_workers",
                   "data.cache_dir", "data.decode_workers", "model.weights_name",
                   "train.threads")
# The overrides a run folder's name leaves out (Hydra's hydra.job.config.override_dirname.exclude_keys,
# which conf/config.yaml takes from run_folder_excluded_keys): those above, and the two that pick
# the study (its folder outputs/<name>/ already says it) or an experiment file (its values appear
# as the overrides it stands for are not part of the folder's name either).
RUN_FOLDER_ONLY_EXCLUDED_KEYS = ("experiment", "name")


TIMM_PREFIX = "timm/"  # model.name=timm/NAME[.TAG] (transferlab.timm_models)

# A study's folder inside outputs/: one plain folder name, never a path (no '/', '..' or leading '.').
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def check_name(name: str) -> str:
    """``name`` when it is a plain folder name, else a ConfigError. Hydra makes the run folder
    from it, so this runs as a resolver of the folder's path, before anything is written."""
    if not NAME_PATTERN.fullmatch(str(name)):
        raise ConfigError(f"name={name!r} is not allowed; it must be a non-empty folder name, not a path "
                          "(letters, digits, '.', '_' and '-', starting with a letter or digit)")
    return str(name)


def _choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not allowed; choose one of: {', '.join(allowed)}")


def _at_least(key: str, value: float, low: float) -> None:
    if value < low:
        raise ConfigError(f"{key}={value} is not allowed; it must be >= {low}")


# Seeds every RNG a run seeds accepts (Python's, torch's, numpy's), with room for the per-epoch seeds
# derived from them (transferlab.data.pipelines.epoch_generator).
MAX_SEED = 2**32 - 1


def _seed_in_range(key: str, value: int) -> None:
    if not 0 <= value <= MAX_SEED:
        raise ConfigError(f"{key}={value} is not allowed; it must be an integer in [0, {MAX_SEED}] (2**32 - 1)")


def _refuse_non_finite(section: Any, prefix: str = "") -> None:
    """A ConfigError for the first float setting of ``section`` (a schema dataclass, searched
    through its sub-sections) that is NaN or infinite: such a value passes every range check
    written as a comparison, and a run with it trains on NaN."""
    for entry in dataclasses.fields(section):
        key, value = f"{prefix}{entry.name}", getattr(section, entry.name)
        if dataclasses.is_dataclass(value):
            _refuse_non_finite(value, f"{key}.")
        elif isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key}={value} is not allowed; it must be a finite number")
        elif isinstance(value, list) and any(isinstance(v, float) and not math.isfinite(v) for v in value):
            raise ConfigError(f"{key}={list(value)} is not allowed; its values must be finite numbers")


def _home_expanded(path: Optional[str]) -> Optional[str]:
    """A path setting with a leading ~ (written quoted on the command line, or in a config file)
    made the home folder's path, as a shell would have done."""
    return None if path is None else os.path.expanduser(path)


@dataclass
class ModelConfig:
    name: str = "resnet18"
    pretrained: bool = True
    # A local state_dict to start from instead of downloading; see README "Working offline".
    weights: Optional[str] = None
    # model.weights' name in the report's tables and legends (default: from the run.json beside the file,
    # "resnet18 on letters", else the file's folder and name); it does not change the run's result.
    weights_name: Optional[str] = None
    # true: model.weights' head is never kept, even where its classes are the data's.
    new_head: bool = False

    def __post_init__(self) -> None:
        self.weights = _home_expanded(self.weights)
        for key, value in (("model.weights_name", self.weights_name), ("model.new_head", "true" if self.new_head else None)):
            if value is not None and self.weights is None:
                raise ConfigError(f"{key}={value} applies to a weights file; set model.weights=FILE too "
                                  "(every other source starts a new head and has its own name)")
        if self.name.startswith(TIMM_PREFIX):
            architecture, dot, tag = self.name.removeprefix(TIMM_PREFIX).partition(".")
            if not architecture or (dot and not tag):
                raise ConfigError(f"model.name={self.name!r} is not allowed; write timm/NAME or timm/NAME.TAG, with "
                                  f"a tag after the '.' (timm/NAME alone takes timm's default tag)")


@dataclass
class FreezeConfig:
    name: str = "none"
    # Dotted module names to freeze instead of the preset, e.g. [layer1, layer2.0] (a timm model's own names).
    modules: Optional[list[str]] = None
    # LP-FT: the frozen modules train from epoch unfreeze_at_epoch + 1 on (null: they never do).
    unfreeze_at_epoch: Optional[int] = None
    # A linear probe on features the frozen backbone computes once (evaluation mode, no augmentation)
    # instead of in the training loop; for runs in which only the head trains (docs/probes.md).
    cached_features: bool = False
    probe: str = "optimizer"  # how the head fits on them: optimizer | lbfgs

    def __post_init__(self) -> None:
        _choice("freeze.name", self.name, FREEZE_PRESETS)
        _choice("freeze.probe", self.probe, PROBE_FITS)
        if self.cached_features and self.modules is None and self.name != "last_only":
            raise ConfigError(f"freeze.cached_features=true needs a run in which only the head trains, but freeze="
                              f"{self.name} trains more; use freeze=last_only or freeze=lp_ft")
        if self.probe == "lbfgs" and not self.cached_features:
            raise ConfigError("freeze.probe=lbfgs fits the head on cached features; add freeze.cached_features=true")
        if self.unfreeze_at_epoch is not None:
            _at_least("freeze.unfreeze_at_epoch", self.unfreeze_at_epoch, 1)
            if self.modules == [] or (self.modules is None and self.name == "none"):
                raise ConfigError(f"freeze.unfreeze_at_epoch={self.unfreeze_at_epoch} needs something frozen to "
                                  "unfreeze; use it with freeze=last_only, early, middle or freeze.modules=[...]")


@dataclass
class AdaptConfig:
    name: str = "none"
    # LoRA (adapt=lora): the rank r of each adapter, its scale alpha (the update is alpha / r * B A),
    # dropout on its input, and the modules it adapts (null: the linears outside the head, as in
    # a ViT's attention and MLP; a model without them, a CNN: its convolutions).
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: Optional[list[str]] = None

    def __post_init__(self) -> None:
        _choice("adapt.name", self.name, ADAPTERS)
        _at_least("adapt.rank", self.rank, 1)
        if self.alpha <= 0:
            raise ConfigError(f"adapt.alpha={self.alpha} is not allowed; it must be > 0")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"adapt.dropout={self.dropout} is not allowed; it must be in [0, 1)")
        if self.target_modules is not None and self.name != "lora":
            raise ConfigError(f"adapt.target_modules={list(self.target_modules)} is LoRA's; use it with adapt=lora")
        if self.target_modules == []:
            raise ConfigError("adapt.target_modules=[] adapts nothing; name modules (e.g. [qkv,fc1,fc2]) or pass null")


@dataclass
class DataConfig:
    name: str = "cifar10"
    root: str = "data"
    download: bool = True
    # The training subset: a share of the training set (fraction), or K images of every class
    # (per_class; conf/data/cifar10.yaml then turns the default fraction off), drawn by subset_seed.
    fraction: Optional[float] = 0.5
    per_class: Optional[int] = None
    sampling: str = "stratified"
    image_size: int = 224
    subset_seed: int = 42
    pipeline: str = "device"
    num_workers: int = 2
    # Sizes of data=synthetic; CIFAR-10's sizes are fixed by the dataset.
    num_train: int = 5000
    num_test: int = 1000
    # Share of the training subset held out (stratified, by subset_seed) and scored every epoch, for
    # tuning without the test set; 0 trains on the whole subset, as the protocol does.
    val_fraction: float = 0.0
    # Transforms (defaults: the protocol's; conf/data/<name>.yaml sets each dataset's own).
    augment: str = "pad_crop_flip"
    crop_scale: list[float] = field(default_factory=lambda: [0.08, 1.0])  # area share of random_resized_crop
    normalize: str = "cifar10"
    # Test images are resized to image_size / test_crop and centre-cropped to image_size (1.0: plain resize).
    test_crop: float = 1.0
    # data=imagefolder: decoded once to stored_size x stored_size and cached in cache_dir (null: ~/.cache/transferlab),
    # by decode_workers processes (0: one per CPU core); test_fraction of train/ is held out as the test split
    # when the folder has neither val/ nor test/.
    stored_size: int = 256
    cache_dir: Optional[str] = None
    decode_workers: int = 0
    test_fraction: float = 0.2
    # Train and test on these classes only (labels of the dataset, relabelled 0..k-1 in this order; null: all).
    classes: Optional[list[int]] = None

    def __post_init__(self) -> None:
        self.root, self.cache_dir = _home_expanded(self.root), _home_expanded(self.cache_dir)
        _choice("data.name", self.name, DATASETS)
        _choice("data.pipeline", self.pipeline, PIPELINES)
        _choice("data.augment", self.augment, AUGMENTATIONS)
        _choice("data.normalize", self.normalize, NORMALIZATIONS)
        _seed_in_range("data.subset_seed", self.subset_seed)
        _choice("data.sampling", self.sampling, SAMPLINGS)
        if self.fraction is not None and self.per_class is not None:
            raise ConfigError(f"data.fraction={self.fraction} and data.per_class={self.per_class} are both set; give "
                              "one of them (data.fraction=null data.per_class=K where a config sets data.fraction)")
        if self.fraction is None and self.per_class is None:
            raise ConfigError("data.fraction=null needs data.per_class=K (images per class); give one of them")
        if self.fraction is not None and not 0.0 < self.fraction <= 1.0:
            raise ConfigError(f"data.fraction={self.fraction} is not allowed; it must be in (0, 1]")
        if self.per_class is not None:
            _at_least("data.per_class", self.per_class, 1)
            if self.sampling == "uniform":
                raise ConfigError(f"data.per_class={self.per_class} takes K images of every class, which "
                                  "data.sampling=uniform cannot; use data.sampling=stratified")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction={self.val_fraction} is not allowed; it must be in [0, 1)")
        _at_least("data.image_size", self.image_size, 8)
        _at_least("data.num_workers", self.num_workers, 0)
        _at_least("data.num_train", self.num_train, 1)
        _at_least("data.num_test", self.num_test, 1)
        _at_least("data.stored_size", self.stored_size, 8)
        _at_least("data.decode_workers", self.decode_workers, 0)
        if self.name == "imagefolder" and self.stored_size < self.image_size:
            raise ConfigError(f"data.stored_size={self.stored_size} is not allowed below data.image_size="
                              f"{self.image_size}: the model would see images enlarged from fewer pixels; set "
                              f"data.stored_size >= {self.image_size} (or a smaller data.image_size)")
        if not 0.0 < self.test_fraction < 1.0:
            raise ConfigError(f"data.test_fraction={self.test_fraction} is not allowed; it must be in (0, 1)")
        if self.classes is not None and (len(self.classes) < 2 or len(set(self.classes)) < len(self.classes)
                                         or min(self.classes) < 0):
            raise ConfigError(f"data.classes={list(self.classes)} is not allowed; give two or more distinct class "
                              "labels >= 0, e.g. [0,1,2,3,4] (null: every class)")
        if self.classes is not None and DATASET_TABLE[self.name].num_classes is not None:
            check_classes(self.classes, DATASET_TABLE[self.name].num_classes)
        if not 0.0 < self.test_crop <= 1.0:
            raise ConfigError(f"data.test_crop={self.test_crop} is not allowed; it must be in (0, 1]")
        if len(self.crop_scale) != 2 or not 0.0 < self.crop_scale[0] <= self.crop_scale[1] <= 1.0:
            raise ConfigError(f"data.crop_scale={list(self.crop_scale)} is not allowed; give [low, high] with "
                              "0 < low <= high <= 1")


MAX_LR = 100.0  # far above any rate that trains; 1e308 overflowed inside torch's optimizer
MIN_CLIP_GRAD_NORM = 1e-4  # below it, clipping stops training without a word


@dataclass
class OptimConfig:
    name: str = "sgd"
    lr: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    implementation: str = "auto"
    # The learning rate over the run, stepped after every batch: constant (the protocol's), cosine
    # (to 0 at the last batch), step (times step_gamma every step_epochs epochs); after a linear
    # warm-up from 0 over warmup_epochs epochs (0: none; fractions of an epoch allowed).
    schedule: str = "constant"
    warmup_epochs: float = 0.0
    step_epochs: int = 30
    step_gamma: float = 0.1
    # Layer-wise learning-rate decay: the head trains at lr, each stage before it at layer_decay
    # times the next one's (null: every parameter at lr).
    layer_decay: Optional[float] = None
    # Gradients are rescaled to at most this L2 norm (over all parameters) before each step (null: never).
    clip_grad_norm: Optional[float] = None

    def __post_init__(self) -> None:
        _choice("optim.name", self.name, OPTIMIZERS)
        _choice("optim.implementation", self.implementation, OPTIMIZER_IMPLEMENTATIONS)
        _choice("optim.schedule", self.schedule, SCHEDULES)
        _at_least("optim.warmup_epochs", self.warmup_epochs, 0.0)
        _at_least("optim.step_epochs", self.step_epochs, 1)
        if not 0.0 < self.step_gamma <= 1.0:
            raise ConfigError(f"optim.step_gamma={self.step_gamma} is not allowed; it must be in (0, 1]")
        if self.layer_decay is not None and not 0.0 < self.layer_decay <= 1.0:
            raise ConfigError(f"optim.layer_decay={self.layer_decay} is not allowed; it must be in (0, 1] "
                              "(null: no decay)")
        if self.clip_grad_norm is not None and self.clip_grad_norm < MIN_CLIP_GRAD_NORM:  # NaN: refused below
            raise ConfigError(f"optim.clip_grad_norm={self.clip_grad_norm} is not allowed; it must be >= "
                              f"{MIN_CLIP_GRAD_NORM} (a smaller norm leaves the weights as they are; null: no clipping)")
        if self.lr <= 0 or MAX_LR < self.lr < math.inf:  # NaN and inf pass: _refuse_non_finite names them
            raise ConfigError(f"optim.lr={self.lr} is not allowed; it must be > 0 and at most {MAX_LR}")
        if self.momentum < 0.0 or self.momentum >= 1.0:
            raise ConfigError(f"optim.momentum={self.momentum} is not allowed; it must be in [0, 1) (1 and more "
                              "make every step larger than the last)")
        _at_least("optim.weight_decay", self.weight_decay, 0.0)
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"optim.betas={list(self.betas)} is not allowed; give two values in [0, 1)")


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 64
    eval_batch_size: int = 128
    compile: bool = False
    # torch.compile's mode when compile is true; reduce-overhead replays the step as CUDA graphs.
    compile_mode: str = "default"
    # The training loss's label smoothing (0: plain cross-entropy); the test loss never smooths.
    label_smoothing: float = 0.0
    # CPU runs: torch's intra-op threads (null: torch's default, a thread per core; a run on a busy machine
    # is told that fewer trained faster there). docs/performance.md has the measurement.
    threads: Optional[int] = None

    def __post_init__(self) -> None:
        _choice("train.compile_mode", self.compile_mode, COMPILE_MODES)
        if self.threads is not None:
            _at_least("train.threads", self.threads, 1)
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"train.label_smoothing={self.label_smoothing} is not allowed; it must be in [0, 1)")
        _at_least("train.epochs", self.epochs, 1)
        _at_least("train.batch_size", self.batch_size, 1)
        _at_least("train.eval_batch_size", self.eval_batch_size, 1)


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    freeze: FreezeConfig = field(default_factory=FreezeConfig)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    # The study a run belongs to (experiment configs set it); sweeps are written to outputs/<name>/.
    name: str = "runs"
    seed: int = 42
    # A replicate of the run: it trains with seed + repeat on the subset drawn by data.subset_seed +
    # repeat (effective_seed, effective_subset_seed); repeat=0,1,2 repeats a sweep (docs/repeats.md).
    repeat: int = 0
    device: str = "auto"
    precision: str = "auto"
    deterministic: bool = False
    save_model: bool = False
    # Re-run even when the run folder holds a completed run of the same config.
    force: bool = False
    progress: str = "auto"
    # Continue an unfinished run from its last epoch-end checkpoint instead of starting over.
    resume: bool = True
    # Keep checkpoint.pt after the run completed (it is removed by default; see save_model).
    keep_checkpoint: bool = False
    logger: str = "none"

    def __post_init__(self) -> None:
        _choice("device", self.device, DEVICES)
        _choice("precision", self.precision, PRECISIONS)
        _choice("progress", self.progress, PROGRESS)
        _choice("logger", self.logger, LOGGERS)
        check_name(self.name)
        _at_least("repeat", self.repeat, 0)
        _seed_in_range("seed", self.seed)
        _seed_in_range("seed + repeat", self.effective_seed)
        _seed_in_range("data.subset_seed + repeat", self.effective_subset_seed)
        _refuse_non_finite(self)  # the sections' own checks ran first: these are the floats they let through
        unfreeze_at = self.freeze.unfreeze_at_epoch
        if self.freeze.probe == "lbfgs" and self.data.val_fraction == 0:
            raise ConfigError("freeze.probe=lbfgs chooses its L2 strength on the validation split; set "
                              "data.val_fraction > 0 (e.g. 0.1)")
        if self.freeze.probe == "lbfgs" and unfreeze_at is not None and (
                self.optim.schedule != "constant" or self.optim.warmup_epochs > 0):
            raise ConfigError(f"freeze.probe=lbfgs with LP-FT fits the probe without the optimizer, so "
                              f"optim.schedule={self.optim.schedule} (warm-up {self.optim.warmup_epochs}) would not "
                              "have run its probe epochs at the switch; use optim.schedule=constant and "
                              "optim.warmup_epochs=0, or freeze.probe=optimizer")
        if unfreeze_at is not None and unfreeze_at >= self.train.epochs:
            raise ConfigError(f"freeze.unfreeze_at_epoch={unfreeze_at} is not allowed; it must be < "
                              f"train.epochs={self.train.epochs} (the frozen modules train from epoch "
                              f"{unfreeze_at + 1} on)")
        self._check_adapt_and_freeze()
        if self.optim.warmup_epochs >= self.train.epochs:
            raise ConfigError(f"optim.warmup_epochs={self.optim.warmup_epochs} is not allowed; it must be < "
                              f"train.epochs={self.train.epochs}")
        if self.optim.layer_decay is not None and unfreeze_at is not None:
            raise ConfigError(f"optim.layer_decay={self.optim.layer_decay} does not combine with LP-FT "
                              "(freeze.unfreeze_at_epoch): its switch adds the unfrozen parameters at optim.lr; "
                              "use one of them")

    def _check_adapt_and_freeze(self) -> None:
        """adapt=lora and adapt=bitfit adapt what freeze leaves trainable; with nothing left to adapt
        (freeze=last_only) or an LP-FT switch that would make everything train, they refuse."""
        adapter = self.adapt.name
        if adapter == "none":
            return
        if self.freeze.unfreeze_at_epoch is not None:
            raise ConfigError(f"adapt={adapter} does not combine with LP-FT (freeze.unfreeze_at_epoch), whose switch "
                              "trains every parameter; use adapt=none, or a freeze preset without the switch")
        if self.freeze.name == "last_only" and self.freeze.modules is None:
            raise ConfigError(f"adapt={adapter} with freeze=last_only leaves only the head, which trains fully "
                              "anyway; use freeze=none, early or middle (or freeze.modules=[...]) with it")
    @property
    def effective_seed(self) -> int:
        """The seed of the initialisation, batch order and augmentation: seed + repeat."""
        return self.seed + self.repeat

    @property
    def effective_subset_seed(self) -> int:
        """The seed that draws the training subset and its validation split: data.subset_seed + repeat."""
        return self.data.subset_seed + self.repeat


# What each key means, one line each: `transferlab train --help` lists them with their composed
# values (settings_help); docs/configuration.md says more. tests/test_startup.py checks that every
# key of the schema is here.
KEY_MEANINGS: dict[str, str] = {
    "model.name": "any torchvision classification model (model=NAME picks it too), or timm/NAME[.TAG]",
    "model.pretrained": "start from torchvision's ImageNet weights (false: random initialisation)",
    "model.weights": "a state_dict file (.pth, .safetensors) or local-dir:FOLDER to start from instead",
    "model.weights_name": "model.weights' name in the report (null: from the run.json beside it, or its file)",
    "model.new_head": "true: never keep model.weights' head, even where its classes are the data's",
    "freeze.name": "the freeze preset: none | early | middle | last_only (freeze=lp_ft: LP-FT)",
    "freeze.modules": "dotted module names to freeze instead of the preset, e.g. [layer1,layer2.0]",
    "freeze.unfreeze_at_epoch": "LP-FT: the frozen modules train from epoch N+1 on (null: never)",
    "freeze.cached_features": "linear probe on features computed once (eval mode, no augmentation)",
    "freeze.probe": "how the head fits on cached features: optimizer (optim.*, train.epochs) | lbfgs",
    "adapt.name": "how the model adapts: none (its parameters) | lora | bitfit (adapt=NAME)",
    "adapt.rank": "LoRA: the rank of each adapter, >= 1",
    "adapt.alpha": "LoRA: the adapters' scale (the update is alpha / rank * B A), > 0",
    "adapt.dropout": "LoRA: dropout on the adapters' input, in [0, 1)",
    "adapt.target_modules": "LoRA: module names to adapt (null: linears outside the head, else the convs)",
    "data.name": "the dataset: cifar10 | cifar100 | imagefolder | synthetic | digits (data=NAME)",
    "data.root": "where CIFAR lives (relative to the working directory); or the image folder",
    "data.download": "download CIFAR-10/100 into data.root when it is missing",
    "data.fraction": "share of the training set to train on, in (0, 1] (null: use data.per_class)",
    "data.per_class": "K training images of each class instead of data.fraction (null: none)",
    "data.sampling": "how the subset is drawn: stratified (each class keeps its share) | uniform",
    "data.image_size": "the size in pixels the model sees (images are resized to it)",
    "data.subset_seed": "which images the subset holds (plus repeat); nested across fractions and K",
    "data.pipeline": "device (batched augmentation on the device) | reference (PIL, DataLoader)",
    "data.num_workers": "DataLoader workers of the reference pipeline",
    "data.num_train": "training images data=synthetic generates (before data.fraction)",
    "data.num_test": "test images data=synthetic generates",
    "data.val_fraction": "share of the training subset held out, scored every epoch, in [0, 1)",
    "data.augment": "training augmentation: pad_crop_flip | random_resized_crop | flip | none | pad_crop | "
                    "resized_crop (the last two: no flip)",
    "data.crop_scale": "[low, high]: the share of the image's area random_resized_crop draws from",
    "data.normalize": "the mean and std images are normalised with: cifar10 | cifar100 | imagenet | digits | auto",
    "data.test_crop": "test images: resized to image_size / test_crop, then centre-cropped",
    "data.stored_size": "imagefolder: each image's centre square is cached at this size, >= image_size",
    "data.cache_dir": "where decoded images and cached features are kept (null: ~/.cache/transferlab)",
    "data.decode_workers": "imagefolder: processes decoding images on the first run (0: one per core)",
    "data.test_fraction": "imagefolder without val/ or test/: the share of train/ held out for testing",
    "data.classes": "train and test on these class labels only, e.g. [0,1,2,3,4] (null: every class)",
    "optim.name": "the optimizer: sgd | adamw (optim=NAME picks it)",
    "optim.lr": "learning rate, > 0, <= 100 (the head's, with optim.layer_decay; the peak of a schedule)",
    "optim.momentum": "SGD's momentum, in [0, 1)",
    "optim.weight_decay": "weight decay, >= 0",
    "optim.betas": "AdamW's [beta1, beta2], each in [0, 1)",
    "optim.implementation": "how the step runs (the same update): auto | for_loop | foreach | fused",
    "optim.schedule": "the learning rate per batch: constant | cosine | step",
    "optim.warmup_epochs": "a linear warm-up from 0 over this many epochs, >= 0, < train.epochs",
    "optim.step_epochs": "optim.schedule=step: the rate drops every this many epochs, >= 1",
    "optim.step_gamma": "optim.schedule=step: the factor of each drop, in (0, 1]",
    "optim.layer_decay": "the head at optim.lr, each earlier stage times this, in (0, 1] (null: none)",
    "optim.clip_grad_norm": "clip the gradients' total L2 norm to this, >= 1e-4 (null: no clipping)",
    "train.epochs": "passes over the training subset, >= 1",
    "train.batch_size": "training batch, >= 1",
    "train.eval_batch_size": "test and validation batch, >= 1",
    "train.compile": "torch.compile the model",
    "train.compile_mode": "default | reduce-overhead | max-autotune | max-autotune-no-cudagraphs",
    "train.label_smoothing": "the training loss's label smoothing, in [0, 1) (0: none)",
    "train.threads": "CPU runs' torch threads, >= 1 (null: torch's default, a thread per core)",
    "name": "the study: runs go to outputs/<name>/ (a folder name, not a path)",
    "seed": "initialisation, batch order and augmentation (plus repeat)",
    "repeat": "the replicate: seed + repeat, on the subset of data.subset_seed + repeat",
    "device": "auto (CUDA, else MPS, else CPU) | cuda | cpu | mps",
    "precision": "auto (bf16 on a CUDA GPU that has it, else fp32) | bf16 | fp16 | fp32",
    "deterministic": "deterministic kernels, no cuDNN autotuning (the protocol's setting; slower)",
    "save_model": "write model.pt, a state_dict the plain architecture loads (adapters merged)",
    "force": "re-run even when the run folder holds a completed run",
    "progress": "progress bar: auto (when stdout is a terminal) | on | off",
    "resume": "continue an unfinished run from its last epoch-end checkpoint",
    "keep_checkpoint": "keep checkpoint.pt after the run completed",
    "logger": "also track the run in: none | tensorboard | mlflow",
}


def settings_help(_root_: DictConfig) -> str:
    """`transferlab train --help`'s settings (the resolver transferlab_settings_help in
    conf/hydra/help/transferlab.yaml): each key of KEY_MEANINGS with its composed value and meaning."""
    width = max(map(len, KEY_MEANINGS))
    lines = [f"  {key:<{width}} {_as_yaml(OmegaConf.select(_root_, key)):<14} {meaning}"
             for key, meaning in KEY_MEANINGS.items()]
    # Hydra fills the help template in with string.Template: a '$' of ours must not start a placeholder.
    return "\n".join(lines).replace("$", "$$")


def _as_yaml(value: Any) -> str:
    if OmegaConf.is_list(value):
        return f"[{', '.join(_as_yaml(item) for item in value)}]"
    if value is None:
        return "null"
    return str(value).lower() if isinstance(value, bool) else str(value)


MAX_LISTED_OPTIONS = 20  # a config group with more options is not listed in full in an error line
DEFAULT_DIRNAME = "defaults"
MAX_DIRNAME = 200  # file systems allow 255 bytes a name
FIRST_REPEAT = "repeat=0"  # the run itself: `repeat=0,1,2` finds it where the run without repeat= is
BOOLEAN_SPELLINGS = ("true", "false")  # Hydra reads True, TRUE, ... as these too
TRAILING_ZEROS = re.compile(r"(?P<number>[+-]?\d+\.\d)(?P<digits>\d*?)0+")  # 0.10, 1.500, 2.00


@functools.cache
def schema_types() -> dict[str, type]:
    """The type of each key of the schema (``model.pretrained``: bool, ``optim.lr``: float, ...),
    Optional[...] unwrapped; lists and other types are left out."""
    types: dict[str, type] = {}

    def walk(schema: type, prefix: str) -> None:
        for name, hint in typing.get_type_hints(schema).items():
            arguments = [a for a in typing.get_args(hint) if a is not type(None)]
            hint = arguments[0] if typing.get_origin(hint) is typing.Union and len(arguments) == 1 else hint
            if dataclasses.is_dataclass(hint):
                walk(hint, f"{prefix}{name}.")
            elif hint in (bool, float):
                types[f"{prefix}{name}"] = hint

    walk(Config, "")
    return types


def canonical_override(item: str) -> str:
    """One override of a run folder's name with the value spelt one way for each value that Hydra
    reads the same: a switch's False, FALSE or false is ``false`` (a sweep may write Python's
    False); a float's 0.10 is 0.1 (trailing zeros after the first decimal dropped). The usual
    spellings (false, 0.1, 1.0, 1e-3) are left as they are, so existing run folders keep their names."""
    key, equals, value = item.partition("=")
    kind = schema_types().get(key.lstrip("+~"))
    if not equals or kind is None:
        return item
    if kind is bool and value.lower() in BOOLEAN_SPELLINGS:
        return f"{key}={value.lower()}"
    if kind is float:
        match = TRAILING_ZEROS.fullmatch(value)
        if match:
            return f"{key}={match['number']}{match['digits']}"
    return item


def inert_settings(config: Any) -> dict[str, str]:
    """{key: why it does nothing} for the settings that cannot change the run ``config`` (a composed
    or validated config, as nested mappings) describes: LoRA's with another adapter, the step
    schedule's with another, compile_mode without compile, crop_scale without random_resized_crop,
    and the optimizer (a key ``optim`` stands for all of optim.*) and train.epochs for an L-BFGS
    probe without LP-FT. They are left out of the run's identity (its folder's name, the skip and
    resume checks: result_config), so that runs differing only in them are one run."""
    def get(key: str) -> Any:
        node = config
        try:
            for part in key.split("."):
                node = node[part]
        except Exception:  # missing, or an interpolation that does not resolve (validation says why)
            return None
        return node

    inert: dict[str, str] = {}
    adapter = get("adapt.name")
    if adapter != "lora":
        inert.update(dict.fromkeys(("adapt.rank", "adapt.alpha", "adapt.dropout"), f"LoRA's, and adapt={adapter}"))
    schedule = get("optim.schedule")
    if schedule != "step":
        inert.update(dict.fromkeys(("optim.step_epochs", "optim.step_gamma"),
                                   f"optim.schedule=step's, and optim.schedule={schedule}"))
    if get("train.compile") is False:
        inert["train.compile_mode"] = "train.compile=true's, and train.compile=false"
    augment = get("data.augment")
    if augment != "random_resized_crop":
        inert["data.crop_scale"] = f"data.augment=random_resized_crop's, and data.augment={augment}"
    if get("freeze.cached_features") and get("freeze.probe") == "lbfgs" and get("freeze.unfreeze_at_epoch") is None:
        why = "the optimizer's epochs', and freeze.probe=lbfgs fits the head by L-BFGS (no LP-FT)"
        inert.update(dict.fromkeys(("optim", "train.epochs"), why))
    return inert


def is_inert(key: str, inert: dict[str, str]) -> bool:
    """Whether the override key ``key`` sets one of ``inert``'s settings (``optim.lr`` when ``optim`` is)."""
    key = key.lstrip("+~")
    return any(key == name or key.startswith(f"{name}.") for name in inert)


def run_dirname(override_dirname: str, data_name: str = "", data_root: str = "", _root_: Any = None) -> str:
    """The folder of a run inside outputs/<name>/: its overrides ('defaults' when it has none),
    each value in one spelling (canonical_override), with '/' replaced, and cut short with a hash
    of the whole when it is too long for a file name.
    data.root is left out of the overrides (a CIFAR-10 copy elsewhere is the same data) except for
    data=imagefolder, whose folder is the dataset: runs on two folders must not share a run folder.
    repeat=0 is left out too: it is the same run as no repeat= at all, so a sweep repeat=0,1,2 after
    a plain sweep skips the runs that sweep completed. So are the settings that do nothing in this
    run (inert_settings of the composed config, ``_root_``)."""
    inert = inert_settings(_root_) if _root_ is not None else {}
    items = [canonical_override(item) for item in _dirname_items(override_dirname)
             if not is_inert(item.partition("=")[0], inert)]
    override_dirname = ",".join(item for item in items if item != FIRST_REPEAT)
    if "data.root" in identity_keys(data_name):
        override_dirname = ",".join(filter(None, [override_dirname, f"data.root={data_root}"]))
    name = (override_dirname or DEFAULT_DIRNAME).replace("/", "_")
    if len(name.encode()) <= MAX_DIRNAME:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:12]
    return f"{name.encode()[:MAX_DIRNAME - 13].decode(errors='ignore')}-{digest}"


def _dirname_items(override_dirname: str) -> list[str]:
    """Hydra's override_dirname (``a=1,b=[x,y]``) as its overrides: split at the commas outside brackets."""
    items, depth, start = [], 0, 0
    for at, character in enumerate(override_dirname):
        depth += {"[": 1, "{": 1, "]": -1, "}": -1}.get(character, 0)
        if character == "," and depth == 0:
            items.append(override_dirname[start:at])
            start = at + 1
    return [*items, override_dirname[start:]]


def run_folder_excluded_keys() -> list[str]:
    """conf/config.yaml's hydra.job.config.override_dirname.exclude_keys: the overrides that do
    not name a run folder (the settings of NOT_RESULT_KEYS, the study and the experiment file)."""
    return [*RUN_FOLDER_ONLY_EXCLUDED_KEYS, *NOT_RESULT_KEYS]


def fraction_default(per_class: Optional[int], default: float) -> Optional[float]:
    """conf/data/cifar10.yaml's data.fraction: ``default``, or null when data.per_class is set, so
    that data.per_class=K alone replaces the default share and with data.fraction=F fails."""
    return None if per_class is not None else default


def half_of(epochs: int) -> int:
    """conf/freeze/lp_ft.yaml's switch: a linear probe for the first half of the epochs. A run of
    one epoch has no second half: the error names train.epochs, which the user set, rather than
    the freeze.unfreeze_at_epoch=0 it would resolve to."""
    if int(epochs) < 2:
        raise ConfigError(f"freeze=lp_ft needs train.epochs >= 2 (a linear probe for the first half of the "
                          f"epochs, then fine-tuning), but train.epochs={epochs}; raise train.epochs")
    return int(epochs) // 2


def config_dir() -> Path:
    """The folder of transferlab's configs: ``transferlab/conf`` in an installed package (the wheel
    ships the top-level conf/ there), else the checkout's own top-level conf/ (an editable install,
    or running from the source tree), so that edits there take effect."""
    package = Path(__file__).resolve().parent
    candidates = (package / "conf", package.parents[1] / "conf")
    for candidate in candidates:
        if (candidate / "config.yaml").is_file():
            return candidate
    raise TransferlabError(f"transferlab's configs are missing: no config.yaml in {' or '.join(map(str, candidates))}; "
                           "reinstall transferlab")


def register_with_hydra() -> None:
    """Put the schema in Hydra's ConfigStore (conf/config.yaml lists it first in its defaults) and
    register the resolvers (run folders, lp_ft's switch, the default data.fraction, --help's list
    of settings). Every torchvision classification model is an option of the `model` group through
    hydra_plugins/transferlab_models.py (conf/model/ has files for the models of the table in
    transferlab.models; those win), from names shipped with transferlab: composing, --help and Tab
    never import torch."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="transferlab_schema", node=Config)
    OmegaConf.register_new_resolver("transferlab_dirname", run_dirname, replace=True)
    OmegaConf.register_new_resolver("transferlab_name", check_name, replace=True)
    OmegaConf.register_new_resolver("transferlab_excluded_keys", run_folder_excluded_keys, replace=True)
    OmegaConf.register_new_resolver("transferlab_half_of", half_of, replace=True)
    OmegaConf.register_new_resolver("transferlab_fraction_default", fraction_default, replace=True)
    OmegaConf.register_new_resolver("transferlab_settings_help", settings_help, replace=True)


def compose_config(overrides: list[str]) -> Config:
    """conf/ composed with ``overrides`` and validated, outside of a Hydra run (for commands
    other than `train`)."""
    return validate(compose_with_hydra(overrides, with_hydra=False))


def compose_with_hydra(overrides: list[str], with_hydra: bool = True) -> DictConfig:
    """conf/ composed with ``overrides`` (no sweeps), with the ``hydra`` section a run of them gets
    (its run folder, ``hydra.run.dir``, and sweeper); not validated."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    register_with_hydra()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            return compose(config_name="config", overrides=command_line_overrides(overrides),
                           return_hydra_config=with_hydra)
    except (HydraException, OmegaConfBaseException) as error:
        raise ConfigError(composition_error_line(error)) from error
    except yaml.YAMLError as error:
        raise ConfigError(yaml_error_line(error)) from error


def composition_error_line(error: Exception) -> str:
    """Hydra's and OmegaConf's multi-line composition errors as one line that names the key and,
    where it can, what is allowed."""
    from hydra.errors import OverrideParseException

    if isinstance(error, OverrideParseException):
        return override_error_line(error.override, error.message)
    cause = error.__cause__ if isinstance(error.__cause__, OmegaConfBaseException) else error
    text = str(error).split("Config search path:")[0]
    if "Available options in" in text:  # an unknown option of a config group
        head, _, options = text.partition("Available options in")
        group, _, names = options.partition(":")
        missing = head.replace("In 'config':", "").strip()
        wanted = missing.rpartition("/")[2].rstrip("'")
        close = difflib.get_close_matches(wanted, names.split(), n=3, cutoff=0.6)
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        if "'model/timm/" in missing:  # the group holds torchvision's models; timm's are names
            return f"{missing}: the model group holds torchvision's models; a timm model is model.name=timm/NAME[.TAG]"
        if len(names.split()) > MAX_LISTED_OPTIONS:  # the model group: every torchvision model
            return f"{missing}{hint}; {group.strip()} has {len(names.split())} options: transferlab train --help lists them"
        line = f"{missing}{hint}; choose one of {group.strip()}: {', '.join(names.split())}"
        if "hydra/launcher" in group:
            line += " (the submitit and joblib launchers come with pip install 'transferlab[cluster]')"
        if "hydra/sweeper" in group:
            line += " (the optuna sweeper comes with pip install 'transferlab[optuna]')"
        return line
    key = getattr(cause, "full_key", None)
    message = str(cause).strip().splitlines()[0]
    if key and "not in" in message:  # a misspelled key
        parent = key.rpartition(".")[0]
        schema = OmegaConf.structured(Config)
        node = OmegaConf.select(schema, parent) if parent else schema
        allowed = f"; allowed keys{f' in {parent}' if parent else ''}: {', '.join(node)}" if node is not None else ""
        return f"unknown key {key}{allowed}"
    return f"{key}: {message}" if key else " ".join(line.strip() for line in text.splitlines() if line.strip())


HOME_PREFIX = re.compile(r"~[A-Za-z0-9._-]*(?=/|$)")  # ~ or ~user, alone or before a '/'


def home_expanded_overrides(overrides: Sequence[str]) -> list[str]:
    """``overrides`` with a leading ``~`` (or ``~user``) of each value made the home folder's path,
    as bash would have done: zsh and sh leave ``data.root=~/pets`` as it is, and Hydra's grammar
    reads no unquoted ``~``. Each value of a sweep's list (``data.root=~/a,~/b``) counts; a quoted
    value, and the ``~KEY`` that deletes a key, are left as they are."""
    expanded = []
    for override in overrides:
        key, equals, value = override.partition("=")
        if equals and not value.startswith(("'", '"')) and "~" in value:
            value = ",".join(HOME_PREFIX.sub(lambda home: os.path.expanduser(home[0]), item, count=1)
                             if item.startswith("~") else item for item in value.split(","))
        expanded.append(f"{key}{equals}{value}")
    return expanded


def command_line_overrides(overrides: Sequence[str]) -> list[str]:
    """``overrides`` as Hydra is to read them (home_expanded_overrides), once none deletes a setting of
    transferlab's (``~model``, ``~optim.lr``): Hydra's delete would leave the schema's default in its
    place (resnet18 for ``~model``) without a word."""
    settings = {entry.name for entry in dataclasses.fields(Config)}
    for override in overrides:
        key = override.partition("=")[0]
        if key.startswith("~") and key[1:].replace("/", ".").split(".")[0] in settings:
            raise ConfigError(f"{override} is not allowed: deleting {key[1:]} would leave its default in its place "
                              f"(model.name=resnet18 for ~model); set {key[1:]}=... to what the run should use")
    return home_expanded_overrides(overrides)


GRAMMAR_URL = "https://hydra.cc/docs/1.2/advanced/override_grammar/basic"
LEXER_ERROR = "LexerNoViableAltException: "  # Hydra's message: this, the override, then a line with ^ under the bad character


def override_error_line(override: str, message: str) -> str:
    """Hydra's message for an override it cannot parse (``seed=10^23``, ``model=[``) as one line
    that names the override and, for a character the grammar does not allow, that character."""
    lines = message.splitlines()
    if lines[0].startswith(LEXER_ERROR) and len(lines) > 1 and "^" in lines[1]:
        at = lines[1].index("^") - len(LEXER_ERROR)
        character = f"{override[at]!r} " if 0 <= at < len(override) else ""
        key, _, value = override.partition("=")
        if character == "'~' ":  # the shell (zsh, sh; bash expands it) left a home folder's ~ to us
            quoted = f"quote it for Hydra inside the shell's quotes: {key}=\"'{value}'\""
            home = f"write {key}={value.replace('~', '$HOME', 1)}, or " if value.startswith("~") else ""
            return (f"cannot read the override {override!r}: Hydra's override grammar does not allow an unquoted "
                    f"'~' in a value; {home}{quoted} (see {GRAMMAR_URL})")
        reason = (f"the character {character}is not allowed in an unquoted value; quote the value "
                  "(KEY='VALUE') or write a number in digits")
    elif "mismatched input '='" in lines[0] and "=" in override.partition("=")[2]:
        # A path into a run folder (outputs/runs/seed=1,data.fraction=0.1/model.pt) holds '=' and ','.
        key, _, value = override.partition("=")
        reason = (f"{lines[0]}; a value with '=' or ',' in it (a path into a run folder) must be quoted, "
                  f"with the whole override in single quotes for the shell: '{key}=\"{value}\"'")
    else:
        reason = lines[0]
    return f"cannot read the override {override!r}: {reason} (see {GRAMMAR_URL})"


def yaml_error_line(error: Exception) -> str:
    """A YAML syntax error in one of conf/'s files (PyYAML's message is several lines, with the
    file, line and column in them) as one line that starts with the file and line."""
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    where = f"{mark.name}, line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "a file in conf/"
    what = "; ".join(str(part) for part in (getattr(error, "context", None), getattr(error, "problem", None)) if part)
    return f"{where}: not valid YAML ({what or type(error).__name__}); fix that file or reinstall transferlab"


def validate(cfg: DictConfig | dict[str, Any]) -> Config:
    """The composed config as checked objects, or a ConfigError naming the bad key."""
    node = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
    try:
        node = OmegaConf.merge(OmegaConf.structured(Config), {k: v for k, v in node.items() if k != "hydra"})
        return OmegaConf.to_object(node)
    except OmegaConfBaseException as error:
        cause: BaseException | None = error
        while cause is not None and not isinstance(cause, TransferlabError):
            cause = cause.__cause__ or cause.__context__
        if cause is not None:  # raised by one of our resolvers (lp_ft's switch)
            raise cause from None
        key = getattr(error, "full_key", None)
        message = str(error).splitlines()[0]
        raise ConfigError(f"{key}: {message}" if key else message) from error


def as_dict(config: Config) -> dict[str, Any]:
    """A plain, JSON-ready copy of a validated config."""
    return OmegaConf.to_container(OmegaConf.structured(config), resolve=True)


def result_config(config: dict[str, Any]) -> dict[str, Any]:
    """A config dict without the keys that cannot change a run's results (data.root stays for
    data=imagefolder: there the folder is the dataset), nor those that do nothing in this run
    (inert_settings)."""
    node = OmegaConf.create(config)
    kept = identity_keys(OmegaConf.select(node, "data.name"))
    for key in (*NOT_RESULT_KEYS, *inert_settings(config)):
        if key in kept:
            continue
        parent, _, leaf = key.rpartition(".")
        container = OmegaConf.select(node, parent) if parent else node
        if isinstance(container, DictConfig) and leaf in container:
            del container[leaf]
    return OmegaConf.to_container(node)


def model_implementation(model_name: str) -> str:
    """Which library builds ``model_name``: ``timm`` (timm/NAME[.TAG]) or ``torchvision``. timm's
    resnet50 and torchvision's are two implementations, two models (their initialisations differ)."""
    return "timm" if str(model_name).startswith("timm/") else "torchvision"


def model_as_run(model_name: str, pretrained: bool, weights: str | None, normalize: str | None) -> str:
    """``model_name`` as far as a run's results go: a timm model trained from scratch loses its
    pretraining tag (timm/resnet50.a1_in1k -> timm/resnet50), which picks weights such a run never
    loads; not with data.normalize=auto, where the tag's pretrained_cfg gives the mean and std."""
    if pretrained or weights or normalize == "auto" or model_implementation(model_name) != "timm":
        return model_name
    return str(model_name).partition(".")[0]


def run_identity(config: dict[str, Any]) -> dict[str, Any]:
    """What decides a run's results (result_config), with model.name as the run builds it
    (model_as_run): two configs with one identity are one run, wherever their folders."""
    identity = result_config(config)
    model, data = identity.get("model") or {}, identity.get("data") or {}
    if "name" in model:
        model["name"] = model_as_run(model["name"], model.get("pretrained"), model.get("weights"),
                                     data.get("normalize"))
    return identity
