"""The model table, model building (pretrained, scratch or a local state_dict) and freezing.

Every model-specific fact lives in ``MODELS``. Freezing is data: ``trainable_parameter_names``
is a pure function of a model and a list of dotted module names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn

from transferlab.errors import ConfigError, TransferlabError

DEFAULT_NUM_CLASSES = 10  # CIFAR-10's; a run passes its dataset's class count
PRETRAINED_WEIGHTS = "IMAGENET1K_V1"


@dataclass(frozen=True)
class ModelSpec:
    """What transferlab needs to know about one torchvision architecture."""

    head: str  # dotted name of the ImageNet classifier that is replaced by Linear(in_features, number of classes)
    min_image_size: int  # smaller inputs collapse to nothing inside the network
    freeze_presets: Mapping[str, tuple[str, ...]]  # preset name -> dotted modules it freezes


_ALEXNET_CONVS = ("features.0", "features.3", "features.6", "features.8", "features.10")
_VGG16_BLOCKS = (
    ("features.0", "features.2"),
    ("features.5", "features.7"),
    ("features.10", "features.12", "features.14"),
    ("features.17", "features.19", "features.21"),
    ("features.24", "features.26", "features.28"),
)

# ResNet18's presets are the protocol's. AlexNet and VGG16 follow the same idea over their own
# stages (AlexNet: its five convolutions; VGG16: its five conv blocks): "early" freezes the first
# two stages, "middle" two stages in the middle, "last_only" everything but the new head.
MODELS: dict[str, ModelSpec] = {
    "alexnet": ModelSpec(
        head="classifier.6",
        min_image_size=63,
        freeze_presets={
            "none": (),
            "early": _ALEXNET_CONVS[0:2],
            "middle": _ALEXNET_CONVS[2:4],
            "last_only": ("features", "classifier.1", "classifier.4"),
        },
    ),
    "resnet18": ModelSpec(
        head="fc",
        min_image_size=32,
        freeze_presets={
            "none": (),
            "early": ("layer1", "layer2"),
            "middle": ("layer2", "layer3"),
            "last_only": ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4"),
        },
    ),
    "vgg16": ModelSpec(
        head="classifier.6",
        min_image_size=32,
        freeze_presets={
            "none": (),
            "early": _VGG16_BLOCKS[0] + _VGG16_BLOCKS[1],
            "middle": _VGG16_BLOCKS[2] + _VGG16_BLOCKS[3],
            "last_only": ("features", "classifier.0", "classifier.3"),
        },
    ),
}


def model_spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise ConfigError(f"model.name={name!r} is not allowed; choose one of: {', '.join(MODELS)}")
    return MODELS[name]


def frozen_modules(model_name: str, preset: str, modules: list[str] | None) -> tuple[str, ...]:
    """The dotted module names to freeze: the explicit list when given, else the preset's."""
    if modules is not None:
        return tuple(modules)
    presets = model_spec(model_name).freeze_presets
    if preset not in presets:
        raise ConfigError(f"freeze.name={preset!r} is not allowed; choose one of: {', '.join(presets)}")
    return presets[preset]


def check_image_size(model_name: str, image_size: int) -> None:
    minimum = model_spec(model_name).min_image_size
    if image_size < minimum:
        raise ConfigError(
            f"data.image_size={image_size} is too small for {model_name}; it needs at least {minimum}"
        )


def build_model(name: str, pretrained: bool, weights_path: str | None = None,
                num_classes: int = DEFAULT_NUM_CLASSES) -> nn.Module:
    """A torchvision model with a fresh ``num_classes``-way head, initialised from ImageNet weights,
    from a local state_dict (``weights_path``, which wins over ``pretrained``) or at random."""
    spec = model_spec(name)
    if weights_path is not None:
        model = torchvision.models.get_model(name, weights=None)
        _load_state_dict_file(model, spec.head, Path(weights_path), num_classes)
        return model
    weights = torchvision.models.get_model_weights(name)[PRETRAINED_WEIGHTS] if pretrained else None
    try:
        model = torchvision.models.get_model(name, weights=weights)
    except (OSError, RuntimeError) as error:  # urllib's URLError is an OSError
        file_name = Path(weights.url).name
        raise TransferlabError(
            f"could not load the {PRETRAINED_WEIGHTS} weights of {name} ({error}); on an offline machine put "
            f"{file_name} into {Path(torch.hub.get_dir()) / 'checkpoints'}, or pass model.weights=PATH, "
            "or model.pretrained=false"
        ) from error
    _replace_head(model, spec.head, num_classes)
    return model


def _replace_head(model: nn.Module, head: str, num_classes: int) -> None:
    parent_name, _, child_name = head.rpartition(".")
    parent = model.get_submodule(parent_name)
    old = parent.get_submodule(child_name)
    setattr(parent, child_name, nn.Linear(old.in_features, num_classes))


def _load_state_dict_file(model: nn.Module, head: str, path: Path, num_classes: int) -> None:
    """Load an ImageNet (1000-class head) or a transferlab (``num_classes`` head) state_dict
    into ``model``, an ImageNet-shaped architecture, and leave ``model`` with a ``num_classes`` head.
    An ImageNet head is replaced by a fresh one, as with the downloaded weights."""
    if not path.is_file():
        raise ConfigError(f"model.weights={str(path)!r}: no such file")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for foreign or corrupt files
        raise ConfigError(f"model.weights={str(path)!r} is not a state_dict torch can load safely: {error}") from error
    state_dict = _unwrap_state_dict(loaded)
    if state_dict is None:
        raise ConfigError(
            f"model.weights={str(path)!r} is not a state_dict (a mapping of parameter names to tensors)"
        )
    head_weight = state_dict.get(f"{head}.weight")
    if head_weight is not None and head_weight.shape[0] == num_classes:
        _replace_head(model, head, num_classes)
        load_state_dict_strict(model, state_dict, f"model.weights={str(path)!r}")
    else:
        load_state_dict_strict(model, state_dict, f"model.weights={str(path)!r}")
        _replace_head(model, head, num_classes)


def _unwrap_state_dict(loaded: object) -> dict[str, torch.Tensor] | None:
    """The state_dict in a loaded file: the file itself, or its 'model' / 'state_dict' entry
    (the layout of torchvision's reference checkpoints and of transferlab's)."""
    if isinstance(loaded, Mapping):
        for key in ("model", "state_dict"):
            if isinstance(loaded.get(key), Mapping):
                loaded = loaded[key]
                break
        if loaded and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in loaded.items()):
            return dict(loaded)
    return None


def load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Load all of ``state_dict`` into ``model`` or, when any key or shape does not fit, nothing:
    the error (naming ``source``) comes before a single tensor is copied."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    misshapen = sorted(
        k for k in set(expected) & set(state_dict) if expected[k].shape != state_dict[k].shape
    )
    if missing or unexpected or misshapen:
        problems = [
            f"{label} {len(keys)} (e.g. {', '.join(keys[:3])})"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshapen))
            if keys
        ]
        raise ConfigError(f"{source} does not fit {type(model).__name__}: keys {'; '.join(problems)}")
    model.load_state_dict(state_dict)


def trainable_parameter_names(model: nn.Module, frozen: tuple[str, ...] | list[str]) -> list[str]:
    """Names of the parameters that train when the modules named in ``frozen`` are frozen.
    An unknown module name is a ConfigError that lists the model's modules."""
    modules = dict(model.named_modules())
    unknown = [name for name in frozen if name not in modules or name == ""]
    if unknown:
        raise ConfigError(
            f"freeze.modules: unknown module(s) {', '.join(unknown)}; this model's modules are: "
            f"{', '.join(freezable_module_names(model))}"
        )
    prefixes = tuple(f"{name}." for name in frozen)
    return [name for name, _ in model.named_parameters() if not name.startswith(prefixes)]


def freezable_module_names(model: nn.Module, max_depth: int = 2) -> list[str]:
    """Dotted names of the modules that hold parameters, down to ``max_depth`` levels."""
    return [
        name
        for name, module in model.named_modules()
        if name and name.count(".") < max_depth and any(True for _ in module.parameters())
    ]


def apply_freeze(model: nn.Module, trainable_names: list[str]) -> None:
    """Switch ``requires_grad`` off for every parameter not in ``trainable_names``. As in the
    protocol's reference, BatchNorm layers in frozen blocks still update their running statistics."""
    keep = set(trainable_names)
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name in keep)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable
