"""The typed config schema: Hydra composes conf/ onto these dataclasses, so a misspelled key or a
wrong type fails at composition, and the value checks in ``__post_init__`` run when
``validate`` turns the composed config into objects. Model-specific checks (image size, module
names) need the model table and happen where the model is built.

Each setting is described once, on its field (``setting``): what it means, the names or the
lowest value it allows, and whether it can change a run's results. The checks of allowed names
and lowest values, `transferlab train --help`'s list (transferlab.settings_reference) and
docs/configuration.md's table (generated from it) all read them from there."""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from transferlab import model_names
from transferlab.datasets import DATASETS as DATASET_TABLE
from transferlab.datasets import check_classes
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
# batched kernels, or one fused kernel (transferlab.engine's OPTIMIZER_KERNELS).
OPTIMIZER_IMPLEMENTATIONS = ("auto", "for_loop", "foreach", "fused")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
PROGRESS = ("auto", "on", "off")
LOGGERS = ("none", "tensorboard", "mlflow")
FREEZE_PRESETS = ("none", "early", "middle", "last_only")  # most trainable first (the report's order)
# How the model is adapted (transferlab.adapt): all its trainable parameters, LoRA adapters (peft),
# or BitFit (biases and normalisation parameters); the head trains fully in each.
ADAPTERS = ("none", "lora", "bitfit")
# The learning-rate schedules (transferlab.schedules), stepped per batch after optim.warmup_epochs.
SCHEDULES = ("constant", "cosine", "step")
# How a head fitted on cached features trains (transferlab.probe): the run's optimizer over its
# epochs, or L-BFGS logistic regression with its L2 strength chosen on the validation split.
PROBE_FITS = ("optimizer", "lbfgs")


# A study's folder inside outputs/: one plain folder name, never a path (no '/', '..' or leading '.').
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def setting(default: Any, meaning: str, *, choices: tuple[str, ...] = (), at_least: float | None = None,
            result: bool = True) -> Any:
    """A field of the schema with its description: ``meaning`` (one line), the names it allows
    (``choices``) or the lowest value (``at_least``; null passes where the field allows null),
    and ``result=False`` for a setting that changes where or how visibly a run happens, not its
    results (NOT_RESULT_KEYS)."""
    metadata = {"meaning": meaning, "choices": choices, "at_least": at_least, "result": result}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def settings(schema: Any = None, prefix: str = "") -> Iterator[tuple[str, dataclasses.Field]]:
    """(dotted key, field) of each setting of ``schema`` (a schema dataclass; default: Config), in
    the schema's order, through its sections."""
    for entry in dataclasses.fields(schema or Config):
        section = entry.default_factory if entry.default_factory is not dataclasses.MISSING else None
        if section is not None and dataclasses.is_dataclass(section):
            yield from settings(section, f"{prefix}{entry.name}.")
        else:
            yield f"{prefix}{entry.name}", entry


def schema_default(key: str) -> Any:
    """The schema's default of the setting ``key`` (``optim.lr``: 0.001)."""
    entry = dict(settings())[key]
    return entry.default_factory() if entry.default_factory is not dataclasses.MISSING else entry.default


def allowed_values(entry: dataclasses.Field) -> str:
    """What ``entry`` allows, as --help and the docs say it: its names, or its lowest value."""
    if entry.metadata["choices"]:
        return " | ".join(entry.metadata["choices"])
    return "" if entry.metadata["at_least"] is None else f">= {entry.metadata['at_least']}"


def _check_described(section: Any, prefix: str) -> None:
    """The checks that each field's description says: a name among its choices, at least its lowest value."""
    for entry in dataclasses.fields(section):
        key, value = f"{prefix}{entry.name}", getattr(section, entry.name)
        if entry.metadata.get("choices") and value not in entry.metadata["choices"]:
            raise ConfigError(f"{key}={value!r} is not allowed; choose one of: {', '.join(entry.metadata['choices'])}")
        if entry.metadata.get("at_least") is not None and value is not None and value < entry.metadata["at_least"]:
            raise ConfigError(f"{key}={value} is not allowed; it must be >= {entry.metadata['at_least']}")


def check_name(name: str) -> str:
    """``name`` when it is a plain folder name, else a ConfigError. Hydra makes the run folder
    from it, so this runs as a resolver of the folder's path, before anything is written."""
    if not NAME_PATTERN.fullmatch(str(name)):
        raise ConfigError(f"name={name!r} is not allowed; it must be a non-empty folder name, not a path "
                          "(letters, digits, '.', '_' and '-', starting with a letter or digit)")
    return str(name)


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
    name: str = setting("resnet18", "any torchvision classification model (model=NAME picks it too), or "
                                    "timm/NAME[.TAG]")
    pretrained: bool = setting(True, "start from torchvision's ImageNet weights (false: random initialisation)")
    weights: Optional[str] = setting(None, "a state_dict file (.pth, .safetensors) or local-dir:FOLDER to start "
                                           "from instead")
    weights_name: Optional[str] = setting(None, "model.weights' name in the report (null: from the run.json beside "
                                                "it, or its file)", result=False)
    new_head: bool = setting(False, "true: never keep model.weights' head, even where its classes are the data's")

    def __post_init__(self) -> None:
        self.weights = _home_expanded(self.weights)
        for key, value in (("model.weights_name", self.weights_name), ("model.new_head", "true" if self.new_head else None)):
            if value is not None and self.weights is None:
                raise ConfigError(f"{key}={value} applies to a weights file; set model.weights=FILE too "
                                  "(every other source starts a new head and has its own name)")
        model_names.check_spelling(self.name)


@dataclass
class FreezeConfig:
    name: str = setting("none", "the freeze preset (freeze=lp_ft: LP-FT)", choices=FREEZE_PRESETS)
    modules: Optional[list[str]] = setting(None, "dotted module names to freeze instead of the preset, e.g. "
                                                 "[layer1,layer2.0]")
    unfreeze_at_epoch: Optional[int] = setting(None, "LP-FT: the frozen modules train from epoch N+1 on (null: "
                                                     "never)", at_least=1)
    cached_features: bool = setting(False, "linear probe on features computed once (eval mode, no augmentation)")
    probe: str = setting("optimizer", "how the head fits on cached features (optimizer: optim.*, train.epochs)",
                         choices=PROBE_FITS)

    def __post_init__(self) -> None:
        _check_described(self, "freeze.")
        if self.cached_features and self.modules is None and self.name != "last_only":
            raise ConfigError(f"freeze.cached_features=true needs a run in which only the head trains, but freeze="
                              f"{self.name} trains more; use freeze=last_only or freeze=lp_ft")
        if self.probe == "lbfgs" and not self.cached_features:
            raise ConfigError("freeze.probe=lbfgs fits the head on cached features; add freeze.cached_features=true")
        if self.unfreeze_at_epoch is not None and (self.modules == [] or (self.modules is None and self.name == "none")):
            raise ConfigError(f"freeze.unfreeze_at_epoch={self.unfreeze_at_epoch} needs something frozen to "
                              "unfreeze; use it with freeze=last_only, early, middle or freeze.modules=[...]")


@dataclass
class AdaptConfig:
    name: str = setting("none", "how the model adapts (adapt=NAME; none: its parameters)", choices=ADAPTERS)
    rank: int = setting(8, "LoRA: the rank of each adapter", at_least=1)
    alpha: float = setting(16.0, "LoRA: the adapters' scale (the update is alpha / rank * B A), > 0")
    dropout: float = setting(0.0, "LoRA: dropout on the adapters' input, in [0, 1)")
    target_modules: Optional[list[str]] = setting(None, "LoRA: module names to adapt (null: linears outside the "
                                                        "head, else the convs)")

    def __post_init__(self) -> None:
        _check_described(self, "adapt.")
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
    name: str = setting("cifar10", "the dataset (data=NAME)", choices=DATASETS)
    # data.root is an identity key where the dataset table makes it one: for data=imagefolder the
    # folder is the dataset (see result_config).
    root: str = setting("data", "where CIFAR lives (relative to the working directory); or the image folder",
                        result=False)
    download: bool = setting(True, "download CIFAR-10/100 into data.root when it is missing")
    fraction: Optional[float] = setting(0.5, "share of the training set to train on, in (0, 1] (null: use "
                                             "data.per_class)")
    per_class: Optional[int] = setting(None, "K training images of each class instead of data.fraction (null: none)",
                                       at_least=1)
    sampling: str = setting("stratified", "how the subset is drawn (stratified: each class keeps its share)",
                            choices=SAMPLINGS)
    image_size: int = setting(224, "the size in pixels the model sees (images are resized to it)", at_least=8)
    subset_seed: int = setting(42, "which images the subset holds (plus repeat); nested across fractions and K")
    pipeline: str = setting("device", "where augmentation runs (device: batched, on the device; reference: PIL, DataLoader)",
                            choices=PIPELINES)
    num_workers: int = setting(2, "DataLoader workers of the reference pipeline", at_least=0, result=False)
    num_train: int = setting(5000, "training images data=synthetic generates (before data.fraction)", at_least=1)
    num_test: int = setting(1000, "test images data=synthetic generates", at_least=1)
    val_fraction: float = setting(0.0, "share of the training subset held out, scored every epoch, in [0, 1)")
    augment: str = setting("pad_crop_flip", "training augmentation (pad_crop, resized_crop: no flip)",
                           choices=AUGMENTATIONS)
    crop_scale: list[float] = setting([0.08, 1.0], "[low, high]: the share of the image's area random_resized_crop "
                                                   "draws from")
    normalize: str = setting("cifar10", "the mean and std images are normalised with", choices=NORMALIZATIONS)
    test_crop: float = setting(1.0, "test images: resized to image_size / test_crop, then centre-cropped")
    stored_size: int = setting(256, "imagefolder: each image's centre square is cached at this size, >= image_size",
                               at_least=8)
    cache_dir: Optional[str] = setting(None, "where decoded images and cached features are kept (null: "
                                             "~/.cache/transferlab)", result=False)
    decode_workers: int = setting(0, "imagefolder: processes decoding images on the first run (0: one per core)",
                                  at_least=0, result=False)
    test_fraction: float = setting(0.2, "imagefolder without val/ or test/: the share of train/ held out for testing")
    classes: Optional[list[int]] = setting(None, "train and test on these class labels only, e.g. [0,1,2,3,4] "
                                                 "(relabelled 0..k-1 in this order; null: every class)")

    def __post_init__(self) -> None:
        self.root, self.cache_dir = _home_expanded(self.root), _home_expanded(self.cache_dir)
        _check_described(self, "data.")
        _seed_in_range("data.subset_seed", self.subset_seed)
        if self.fraction is not None and self.per_class is not None:
            raise ConfigError(f"data.fraction={self.fraction} and data.per_class={self.per_class} are both set; give "
                              "one of them (data.fraction=null data.per_class=K where a config sets data.fraction)")
        if self.fraction is None and self.per_class is None:
            raise ConfigError("data.fraction=null needs data.per_class=K (images per class); give one of them")
        if self.fraction is not None and not 0.0 < self.fraction <= 1.0:
            raise ConfigError(f"data.fraction={self.fraction} is not allowed; it must be in (0, 1]")
        if self.per_class is not None and self.sampling == "uniform":
            raise ConfigError(f"data.per_class={self.per_class} takes K images of every class, which "
                              "data.sampling=uniform cannot; use data.sampling=stratified")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction={self.val_fraction} is not allowed; it must be in [0, 1)")
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
    name: str = setting("sgd", "the optimizer (optim=NAME picks it)", choices=OPTIMIZERS)
    lr: float = setting(0.001, f"learning rate, > 0, <= {MAX_LR:g} (the head's, with optim.layer_decay; the peak "
                               "of a schedule)")
    momentum: float = setting(0.9, "SGD's momentum, in [0, 1)")
    weight_decay: float = setting(0.0, "weight decay", at_least=0.0)
    betas: list[float] = setting([0.9, 0.999], "AdamW's [beta1, beta2], each in [0, 1)")
    implementation: str = setting("auto", "how the step runs (the same update)", choices=OPTIMIZER_IMPLEMENTATIONS)
    schedule: str = setting("constant", "the learning rate per batch (cosine: to 0 at the last batch)",
                            choices=SCHEDULES)
    warmup_epochs: float = setting(0.0, "a linear warm-up from 0 over this many epochs, < train.epochs", at_least=0.0)
    step_epochs: int = setting(30, "optim.schedule=step: the rate drops every this many epochs", at_least=1)
    step_gamma: float = setting(0.1, "optim.schedule=step: the factor of each drop, in (0, 1]")
    layer_decay: Optional[float] = setting(None, "the head at optim.lr, each earlier stage times this, in (0, 1] "
                                                 "(null: none)")
    clip_grad_norm: Optional[float] = setting(None, "clip the gradients' total L2 norm to this before each step "
                                                    "(null: no clipping)", at_least=MIN_CLIP_GRAD_NORM)

    def __post_init__(self) -> None:
        if self.clip_grad_norm is not None and self.clip_grad_norm < MIN_CLIP_GRAD_NORM:  # NaN: refused below
            raise ConfigError(f"optim.clip_grad_norm={self.clip_grad_norm} is not allowed; it must be >= "
                              f"{MIN_CLIP_GRAD_NORM} (a smaller norm leaves the weights as they are; null: no clipping)")
        _check_described(self, "optim.")
        if not 0.0 < self.step_gamma <= 1.0:
            raise ConfigError(f"optim.step_gamma={self.step_gamma} is not allowed; it must be in (0, 1]")
        if self.layer_decay is not None and not 0.0 < self.layer_decay <= 1.0:
            raise ConfigError(f"optim.layer_decay={self.layer_decay} is not allowed; it must be in (0, 1] "
                              "(null: no decay)")
        if self.lr <= 0 or MAX_LR < self.lr < math.inf:  # NaN and inf pass: _refuse_non_finite names them
            raise ConfigError(f"optim.lr={self.lr} is not allowed; it must be > 0 and at most {MAX_LR}")
        if self.momentum < 0.0 or self.momentum >= 1.0:
            raise ConfigError(f"optim.momentum={self.momentum} is not allowed; it must be in [0, 1) (1 and more "
                              "make every step larger than the last)")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"optim.betas={list(self.betas)} is not allowed; give two values in [0, 1)")


@dataclass
class TrainConfig:
    epochs: int = setting(10, "passes over the training subset", at_least=1)
    batch_size: int = setting(64, "training batch", at_least=1)
    eval_batch_size: int = setting(128, "test and validation batch", at_least=1)
    compile: bool = setting(False, "torch.compile the model")
    compile_mode: str = setting("default", "torch.compile's mode (reduce-overhead: CUDA graphs)", choices=COMPILE_MODES)
    label_smoothing: float = setting(0.0, "the training loss's label smoothing, in [0, 1) (0: none)")
    # docs/performance.md has the measurement; a resume with another count is told it is not bit for bit.
    threads: Optional[int] = setting(None, "CPU runs' torch threads (null: torch's default, a thread per core)",
                                     at_least=1, result=False)

    def __post_init__(self) -> None:
        _check_described(self, "train.")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"train.label_smoothing={self.label_smoothing} is not allowed; it must be in [0, 1)")


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    freeze: FreezeConfig = field(default_factory=FreezeConfig)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    name: str = setting("runs", "the study: runs go to outputs/<name>/ (a folder name, not a path)")
    seed: int = setting(42, "initialisation, batch order and augmentation (plus repeat)")
    repeat: int = setting(0, "the replicate: seed + repeat, on the subset of data.subset_seed + repeat", at_least=0)
    device: str = setting("auto", "the device (auto: CUDA, else MPS, else CPU)", choices=DEVICES)
    precision: str = setting("auto", "autocast precision (auto: bf16 on a CUDA GPU that has it, else fp32)", choices=PRECISIONS)
    deterministic: bool = setting(False, "deterministic kernels, no cuDNN autotuning (the protocol's setting; slower)")
    save_model: bool = setting(False, "write model.pt, a state_dict the plain architecture loads (adapters merged)")
    force: bool = setting(False, "re-run even when the run folder holds a completed run", result=False)
    progress: str = setting("auto", "progress bar (auto: when stdout is a terminal)", choices=PROGRESS, result=False)
    resume: bool = setting(True, "continue an unfinished run from its last epoch-end checkpoint", result=False)
    keep_checkpoint: bool = setting(False, "keep checkpoint.pt after the run completed", result=False)
    logger: str = setting("none", "also track the run in", choices=LOGGERS, result=False)

    def __post_init__(self) -> None:
        _check_described(self, "")
        check_name(self.name)
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


# Settings that change where or how visibly a run happens, not its results (result=False on the field).
# data.root is one of them except where the dataset table (transferlab.datasets) makes it an identity key.
NOT_RESULT_KEYS = tuple(key for key, entry in settings() if not entry.metadata["result"])


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
