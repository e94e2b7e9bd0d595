"""The torchvision source: ``model.name=NAME``, any of torchvision's classification models
(``torchvision.models.list_models(module=torchvision.models)``), with ImageNet weights from
torch.hub's cache or at random.

Every model-specific fact lives in ``MODELS``; a model that is not in it gets the generic
treatment: its head is found as its final classifier layer (``find_head``), its minimum image size
is torchvision's own, and only the presets that need no stages (``none``, ``last_only``) apply.

``TRANSFERLAB_STAND_IN_WEIGHTS=1`` (tests and dry runs) loads random weights that a test saved under
torchvision's file name, with a warning; without it such a file is refused, as its SHA-256 is not
the one its name says (docs/development.md says why this stays an environment variable).
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from transferlab.diskcache import file_sha256
from transferlab.errors import ConfigError, TransferlabError
from transferlab.sources.base import HEAD_KEPT, HEAD_MISFIT, HEAD_MISSING, HEAD_REFUSED, Fetch, Init
from transferlab.sources.local_file import load_state_dict_strict, read_state_dict

log = logging.getLogger(__name__)

STAND_IN_WEIGHTS = "TRANSFERLAB_STAND_IN_WEIGHTS"
PRETRAINED_WEIGHTS = "IMAGENET1K_V1"  # the protocol's; models that lack it use their DEFAULT weights


@dataclass(frozen=True)
class ModelSpec:
    """What transferlab knows about one torchvision architecture beyond the generic rules."""

    head: str  # dotted name of the ImageNet classifier that is replaced by a fresh num_classes-way layer
    # Smaller inputs collapse to nothing inside the network; None: torchvision's own minimum
    # (the ``min_size`` in the meta data of the model's weights).
    min_image_size: int | None = None
    freeze_presets: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # early/middle -> dotted modules
    # Auxiliary classifiers that only feed an extra training loss; transferlab drops them and trains
    # the main head alone (with them the model returns a tuple while training).
    aux_heads: tuple[str, ...] = ()


_ALEXNET_CONVS = ("features.0", "features.3", "features.6", "features.8", "features.10")
_VGG16_BLOCKS = (
    ("features.0", "features.2"),
    ("features.5", "features.7"),
    ("features.10", "features.12", "features.14"),
    ("features.17", "features.19", "features.21"),
    ("features.24", "features.26", "features.28"),
)
_VIT_B_16_BLOCKS = tuple(f"encoder.layers.encoder_layer_{i}" for i in range(12))


def _features(*indices: int) -> tuple[str, ...]:
    return tuple(f"features.{i}" for i in indices)


# ResNet18's presets are the protocol's: "early" freezes its first two stages (layer1, layer2, at
# 56 and 28 pixels for a 224-pixel input), "middle" the two in the middle (layer2, layer3, at 28 and
# 14 pixels), never the stem. AlexNet and VGG16 follow the same idea over their own stages
# (AlexNet: its five convolutions; VGG16: its five conv blocks). The CNNs added later take the
# blocks that work at ResNet18's resolutions; ViT-B/16, whose blocks all work at one resolution,
# takes the first half of its 12 encoder blocks for "early" and the middle half for "middle".
# "none" and "last_only" (everything but the new head) are the same rule for every model.
MODELS: dict[str, ModelSpec] = {
    "alexnet": ModelSpec(
        head="classifier.6",
        min_image_size=63,
        freeze_presets={"early": _ALEXNET_CONVS[0:2], "middle": _ALEXNET_CONVS[2:4]},
    ),
    "resnet18": ModelSpec(
        head="fc",
        min_image_size=32,
        freeze_presets={"early": ("layer1", "layer2"), "middle": ("layer2", "layer3")},
    ),
    "vgg16": ModelSpec(
        head="classifier.6",
        min_image_size=32,
        freeze_presets={"early": _VGG16_BLOCKS[0] + _VGG16_BLOCKS[1], "middle": _VGG16_BLOCKS[2] + _VGG16_BLOCKS[3]},
    ),
    "resnet50": ModelSpec(
        head="fc",
        min_image_size=32,
        freeze_presets={"early": ("layer1", "layer2"), "middle": ("layer2", "layer3")},
    ),
    "efficientnet_b0": ModelSpec(  # stages features.1-7; features.2 works at 56 px, 3 at 28, 4-5 at 14
        head="classifier.1",
        freeze_presets={"early": _features(2, 3), "middle": _features(3, 4, 5)},
    ),
    "mobilenet_v3_large": ModelSpec(  # blocks features.1-15; 2-3 at 56 px, 4-6 at 28, 7-12 at 14
        head="classifier.3",
        freeze_presets={"early": _features(2, 3, 4, 5, 6), "middle": _features(*range(4, 13))},
    ),
    "convnext_tiny": ModelSpec(  # stages features.1/3/5/7, each after its downsampling layer features.2/4/6
        head="classifier.2",
        freeze_presets={"early": _features(1, 2, 3), "middle": _features(2, 3, 4, 5)},
    ),
    "vit_b_16": ModelSpec(
        head="heads.head",
        freeze_presets={"early": _VIT_B_16_BLOCKS[0:6], "middle": _VIT_B_16_BLOCKS[3:9]},
    ),
    "googlenet": ModelSpec(head="fc", aux_heads=("aux1", "aux2")),
    "inception_v3": ModelSpec(head="fc", aux_heads=("AuxLogits",)),
}


# --- the source's answers (transferlab.sources.base.ModelSource) ----------------------------------

def check_name(name: str) -> None:
    names = model_names()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"model.name={name!r} is not a torchvision classification model{hint} "
                          "(torchvision.models.list_models(module=torchvision.models) lists them all; "
                          "timm's models are model.name=timm/NAME)")


def owns_module(model: nn.Module) -> bool:
    return True  # the last entry of the table: every model no other source claims


def owns_weights(weights: str) -> bool:
    return False  # torchvision's weights come from torch.hub; model.weights is always a file


def build(name: str, pretrained: bool, weights: str | None, num_classes: int, image_size: int | None,
          digest_memo: Path | None) -> tuple[nn.Module, Init]:
    """ImageNet weights (``pretrained_weights``) from torch.hub's cache, checked against the digest
    their file name carries, or random ones; a fresh ``num_classes``-way head either way."""
    if not pretrained:
        return _build(name, None, num_classes), Init("random", "scratch", None, True)
    imagenet = pretrained_weights(name)
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(imagenet.url).name  # where torch.hub keeps them
    digest = None
    if path.is_file() and os.environ.get(STAND_IN_WEIGHTS) == "1":
        log.warning("warning: %s=1: %s is loaded as %s's %s weights without checking its SHA-256", STAND_IN_WEIGHTS,
                    path, name, imagenet.name)
    elif path.is_file():  # torch.hub checks the digest of the weights it downloads, never of those it finds
        digest = hub_file_sha256(path, digest_memo, f"torchvision's {imagenet.name} weights of {name}")
    model = _build(name, imagenet, num_classes)
    return model, Init(imagenet.name, "torchvision", imagenet.name, True, digest or file_sha256(path, digest_memo))


def load_file(name: str, path: Path, num_classes: int, image_size: int | None,
              keep_head: bool = True) -> tuple[nn.Module, str]:
    """The ImageNet-shaped architecture loaded from a state_dict file and left with a ``num_classes``
    head; what became of the file's head (HEAD_STATES). A head of ``num_classes`` classes loads with
    the rest unless ``keep_head`` is false; any other (ImageNet's 1000, the 4 of an earlier run on
    other data) or none at all is replaced by a fresh one. The weights of auxiliary classifiers,
    which the model does not have, are ignored; every other key must fit."""
    model = _architecture(name, weights=None)
    state_dict = read_state_dict(path)
    aux_prefixes = tuple(f"{aux}." for aux in (MODELS[name].aux_heads if name in MODELS else ()))
    state_dict = {k: v for k, v in state_dict.items() if not k.startswith(aux_prefixes)}
    head = heads(name, model)[0]
    _replace_head(model, head, num_classes)
    head_keys = {key for key in model.state_dict() if key.startswith(f"{head}.")}
    expected = model.state_dict()
    if not any(key in state_dict for key in head_keys):
        state = HEAD_MISSING
    elif not all(key in state_dict and state_dict[key].shape == expected[key].shape for key in head_keys):
        state = HEAD_MISFIT
    else:
        state = HEAD_KEPT if keep_head else HEAD_REFUSED
    if state != HEAD_KEPT:  # the new head keeps its fresh initialisation; the rest must load
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith(f"{head}.")}
        state_dict.update({key: expected[key] for key in head_keys})
    load_state_dict_strict(model, state_dict, f"model.weights={str(path)!r}")
    return model, state


def heads(name: str, model: nn.Module) -> tuple[str, ...]:
    """The table's head, else the one found generically."""
    return (MODELS[name].head if name in MODELS else find_head(model),)


def freeze_presets(name: str, model: nn.Module) -> Mapping[str, tuple[str, ...]]:
    return MODELS[name].freeze_presets if name in MODELS else {}


def min_image_size(name: str) -> int:
    spec = MODELS.get(name)
    if spec is not None and spec.min_image_size is not None:
        return spec.min_image_size
    return max(pretrained_weights(name).meta["min_size"])


def preprocessing(model: nn.Module) -> dict[str, Any] | None:
    return None  # ImageNet's statistics, the transforms' default


def stages(model: nn.Module) -> list[list[str]] | None:
    return None  # schedules' generic rule splits the model by its children


def weights_place(name: str, init: Init) -> tuple[str, str]:
    return f"the {init.tag} weights of {name} ({weights_file(name)[1]})", "delete the file to download it again"


def prepare(name: str, fetch: Fetch) -> str:
    return fetch(name, *weights_file(name))


# --- torchvision's names, weights and heads -------------------------------------------------------

def model_names() -> list[str]:
    """Every torchvision classification model transferlab can build."""
    return torchvision.models.list_models(module=torchvision.models)


def pretrained_weights(name: str) -> torchvision.models.WeightsEnum:
    """The ImageNet weights ``model.pretrained=true`` means: IMAGENET1K_V1, the protocol's, where
    torchvision has them, else the model's DEFAULT weights (vit_h_14, regnet_y_128gf)."""
    check_name(name)
    weights = torchvision.models.get_model_weights(name)
    return weights[PRETRAINED_WEIGHTS] if PRETRAINED_WEIGHTS in weights.__members__ else weights.DEFAULT


def pretrained_state(name: str) -> dict[str, Any]:
    """The state_dict of ``model.pretrained=true``'s weights, with their ImageNet head."""
    return pretrained_weights(name).get_state_dict(progress=False)


def weights_file(name: str) -> tuple[str, Path]:
    """(download address, cache path) of the weights ``model.pretrained=true`` loads for a model."""
    url = pretrained_weights(name).url
    return url, Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name


def hub_file_sha256(path: Path, digest_memo: Path | None = None, what: str = "") -> str:
    """The SHA-256 of a weights file named as torch.hub names them (``resnet18-f37072fd.pth``: the
    digest's first hex digits after the last ``-``), once it begins with those digits; a
    TransferlabError naming the file otherwise (``what``: whose weights it should hold)."""
    digest = file_sha256(path, digest_memo)
    match = torch.hub.HASH_REGEX.search(path.name)
    if match is not None and not digest.startswith(match.group(1)):
        raise TransferlabError(
            f"{path} is not {what or 'the file its name says'}: its SHA-256 begins {digest[:len(match.group(1))]}, "
            f"not {match.group(1)} as its name says; delete it and run `transferlab prepare` on a connected machine "
            "(or pass model.weights=PATH)")
    return digest


def find_head(model: nn.Module) -> str:
    """The dotted name of a model's final classifier layer: the last module (in definition order)
    that holds parameters of its own, which must be a Linear or a 1x1 Conv2d (SqueezeNet's)."""
    owners = [name for name, module in model.named_modules() if any(True for _ in module.parameters(recurse=False))]
    head = owners[-1] if owners else ""
    layer = model.get_submodule(head)
    if not (isinstance(layer, nn.Linear) or (isinstance(layer, nn.Conv2d) and layer.kernel_size == (1, 1))):
        raise ConfigError(f"{type(model).__name__}: its last layer with parameters, {head or '(none)'}, is a "
                          f"{type(layer).__name__}, not a classifier transferlab can replace; choose another model.name")
    return head


def _build(name: str, weights: torchvision.models.WeightsEnum | None, num_classes: int) -> nn.Module:
    try:
        model = _architecture(name, weights)
    except (OSError, RuntimeError) as error:  # urllib's URLError is an OSError
        file_name = Path(weights.url).name
        raise TransferlabError(
            f"could not load the {weights.name} weights of {name} ({error}); on an offline machine put "
            f"{file_name} into {Path(torch.hub.get_dir()) / 'checkpoints'}, or pass model.weights=PATH, "
            "or model.pretrained=false"
        ) from error
    _replace_head(model, heads(name, model)[0], num_classes)
    return model


def _architecture(name: str, weights: torchvision.models.WeightsEnum | None) -> nn.Module:
    """The ImageNet-shaped model, without auxiliary classifiers."""
    model = torchvision.models.get_model(name, weights=weights)
    aux_heads = MODELS[name].aux_heads if name in MODELS else ()
    for aux in aux_heads:
        setattr(model, aux, None)
    if aux_heads:
        model.aux_logits = False  # GoogLeNet and Inception v3 then return plain logits while training
    return model


def _replace_head(model: nn.Module, head: str, num_classes: int) -> None:
    parent_name, _, child_name = head.rpartition(".")
    parent = model.get_submodule(parent_name)
    old = parent.get_submodule(child_name)
    if isinstance(old, nn.Conv2d):  # SqueezeNet classifies with a 1x1 convolution before its pooling
        new = nn.Conv2d(old.in_channels, num_classes, kernel_size=1)
    else:
        new = nn.Linear(old.in_features, num_classes)
    setattr(parent, child_name, new.to(old.weight.device))
