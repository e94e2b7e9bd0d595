"""The typed config schema: Hydra composes conf/ onto these dataclasses, so a misspelled key or a
wrong type fails at composition, and the value checks in ``__post_init__`` run when
``validate`` turns the composed config into objects. Model-specific checks (image size, module
names) need the model table and happen where the model is built."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from transferlab.errors import ConfigError

DEVICES = ("auto", "cuda", "cpu", "mps")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
DATASETS = ("cifar10", "synthetic")
PIPELINES = ("device", "reference")
OPTIMIZERS = ("sgd", "adamw")
PROGRESS = ("auto", "on", "off")
LOGGERS = ("none", "tensorboard", "mlflow")
# Settings that change where or how visibly a run happens, not its results.
NOT_RESULT_KEYS = ("force", "progress", "resume", "keep_checkpoint", "logger", "data.root", "data.num_workers")


def _choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not allowed; choose one of: {', '.join(allowed)}")


def _at_least(key: str, value: float, low: float) -> None:
    if value < low:
        raise ConfigError(f"{key}={value} is not allowed; it must be >= {low}")


@dataclass
class ModelConfig:
    name: str = "resnet18"
    pretrained: bool = True
    # A local state_dict to start from instead of downloading; see README "Working offline".
    weights: Optional[str] = None


@dataclass
class FreezeConfig:
    name: str = "none"
    # Dotted module names to freeze instead of the preset, e.g. [layer1, layer2.0].
    modules: Optional[list[str]] = None


@dataclass
class DataConfig:
    name: str = "cifar10"
    root: str = "data"
    download: bool = True
    fraction: float = 0.5
    image_size: int = 224
    subset_seed: int = 42
    pipeline: str = "device"
    num_workers: int = 2
    # Sizes of data=synthetic; CIFAR-10's sizes are fixed by the dataset.
    num_train: int = 5000
    num_test: int = 1000

    def __post_init__(self) -> None:
        _choice("data.name", self.name, DATASETS)
        _choice("data.pipeline", self.pipeline, PIPELINES)
        if not 0.0 < self.fraction <= 1.0:
            raise ConfigError(f"data.fraction={self.fraction} is not allowed; it must be in (0, 1]")
        _at_least("data.image_size", self.image_size, 8)
        _at_least("data.num_workers", self.num_workers, 0)
        _at_least("data.num_train", self.num_train, 1)
        _at_least("data.num_test", self.num_test, 1)


@dataclass
class OptimConfig:
    name: str = "sgd"
    lr: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])

    def __post_init__(self) -> None:
        _choice("optim.name", self.name, OPTIMIZERS)
        if self.lr <= 0:
            raise ConfigError(f"optim.lr={self.lr} is not allowed; it must be > 0")
        _at_least("optim.momentum", self.momentum, 0.0)
        _at_least("optim.weight_decay", self.weight_decay, 0.0)
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"optim.betas={list(self.betas)} is not allowed; give two values in [0, 1)")


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 64
    eval_batch_size: int = 128
    compile: bool = False

    def __post_init__(self) -> None:
        _at_least("train.epochs", self.epochs, 1)
        _at_least("train.batch_size", self.batch_size, 1)
        _at_least("train.eval_batch_size", self.eval_batch_size, 1)


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    freeze: FreezeConfig = field(default_factory=FreezeConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    # The study a run belongs to (experiment configs set it); sweeps are written to outputs/<name>/.
    name: str = "runs"
    seed: int = 42
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
        if not self.name or "/" in self.name:
            raise ConfigError(f"name={self.name!r} is not allowed; it must be a non-empty folder name")


DEFAULT_DIRNAME = "defaults"
MAX_DIRNAME = 200  # file systems allow 255 bytes a name


def run_dirname(override_dirname: str) -> str:
    """The folder of a run inside outputs/<name>/: its overrides ('defaults' when it has none),
    with '/' replaced, and cut short with a hash of the whole when it is too long for a file name."""
    name = (override_dirname or DEFAULT_DIRNAME).replace("/", "_")
    if len(name.encode()) <= MAX_DIRNAME:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:12]
    return f"{name.encode()[:MAX_DIRNAME - 13].decode(errors='ignore')}-{digest}"


def register_with_hydra() -> None:
    """Put the schema in Hydra's ConfigStore (conf/config.yaml lists it first in its defaults) and
    register the resolver that names run folders."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="transferlab_schema", node=Config)
    OmegaConf.register_new_resolver("transferlab_dirname", run_dirname, replace=True)


def compose_config(overrides: list[str]) -> Config:
    """conf/ composed with ``overrides`` and validated, outside of a Hydra run (for commands
    other than `train`)."""
    from hydra import compose, initialize_config_module
    from hydra.errors import HydraException

    register_with_hydra()
    try:
        with initialize_config_module(config_module="transferlab.conf", version_base="1.3"):
            return validate(compose(config_name="config", overrides=overrides))
    except (HydraException, OmegaConfBaseException) as error:
        raise ConfigError(composition_error_line(error)) from error


def composition_error_line(error: Exception) -> str:
    """Hydra's and OmegaConf's multi-line composition errors as one line that names the key and,
    where it can, what is allowed."""
    cause = error.__cause__ if isinstance(error.__cause__, OmegaConfBaseException) else error
    text = str(error).split("Config search path:")[0]
    if "Available options in" in text:  # an unknown option of a config group
        head, _, options = text.partition("Available options in")
        group, _, names = options.partition(":")
        missing = head.replace("In 'config':", "").strip()
        line = f"{missing}; choose one of {group.strip()}: {', '.join(names.split())}"
        if "hydra/launcher" in group:
            line += " (the submitit and joblib launchers come with pip install 'transferlab[cluster]')"
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


def validate(cfg: DictConfig | dict[str, Any]) -> Config:
    """The composed config as checked objects, or a ConfigError naming the bad key."""
    node = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
    try:
        node = OmegaConf.merge(OmegaConf.structured(Config), {k: v for k, v in node.items() if k != "hydra"})
        return OmegaConf.to_object(node)
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", None)
        message = str(error).splitlines()[0]
        raise ConfigError(f"{key}: {message}" if key else message) from error


def as_dict(config: Config) -> dict[str, Any]:
    """A plain, JSON-ready copy of a validated config."""
    return OmegaConf.to_container(OmegaConf.structured(config), resolve=True)


def result_config(config: dict[str, Any]) -> dict[str, Any]:
    """A config dict without the keys that cannot change a run's results."""
    node = OmegaConf.create(config)
    for key in NOT_RESULT_KEYS:
        parent, _, leaf = key.rpartition(".")
        container = OmegaConf.select(node, parent) if parent else node
        if isinstance(container, DictConfig) and leaf in container:
            del container[leaf]
    return OmegaConf.to_container(node)
