"""The model table, model building (pretrained, scratch or a local state_dict) and freezing.

Any torchvision classification model can be built (``model.name``, one of
``torchvision.models.list_models(module=torchvision.models)``). Every model-specific fact lives in
``MODELS``; a model that is not in it gets the generic treatment: its head is found as its final
classifier layer (``find_head``), its minimum image size is torchvision's own, and only the
presets that need no stages (``none``, ``last_only``) apply. Freezing is data:
``trainable_parameter_names`` is a pure function of a model and a list of dotted names.

``model.name=timm/<name>[.<tag>]`` builds a timm model instead (transferlab.timm_models): its head,
stages and preprocessing come from timm's own metadata rather than from ``MODELS``.

A weights file (``model.weights``) loads whole, head included, only when its head has the data's
number of classes and, where they are known (the ``classes`` of the run.json beside the file), the
data's class names in the data's order; otherwise, or with ``model.new_head=true``, it loads
everything else and starts a fresh head (``Init.new_head``, and ``Init.head`` says why). Any other
mismatch is an error that names the keys.
"""

from __future__ import annotations

import difflib
import itertools
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torchvision
from torch import nn

from transferlab import timm_models
from transferlab.caches import file_sha256
from transferlab.errors import ConfigError, TransferlabError
from transferlab.records import shorten

log = logging.getLogger(__name__)

# Tests (and dry runs) put random weights under torchvision's file names; this lets them load, with a warning.
STAND_IN_WEIGHTS = "TRANSFERLAB_STAND_IN_WEIGHTS"
DEFAULT_NUM_CLASSES = 10  # CIFAR-10's; a run passes its dataset's class count
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


def model_names() -> list[str]:
    """Every torchvision classification model transferlab can build."""
    return torchvision.models.list_models(module=torchvision.models)


def check_model_name(name: str) -> None:
    if timm_models.is_timm(name):
        timm_models.check_name(name)
        return
    names = model_names()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"model.name={name!r} is not a torchvision classification model{hint} "
                          "(torchvision.models.list_models(module=torchvision.models) lists them all; "
                          "timm's models are model.name=timm/NAME)")


def pretrained_weights(name: str) -> torchvision.models.WeightsEnum:
    """The ImageNet weights ``model.pretrained=true`` means: IMAGENET1K_V1, the protocol's, where
    torchvision has them, else the model's DEFAULT weights (vit_h_14, regnet_y_128gf)."""
    check_model_name(name)
    weights = torchvision.models.get_model_weights(name)
    return weights[PRETRAINED_WEIGHTS] if PRETRAINED_WEIGHTS in weights.__members__ else weights.DEFAULT


def find_head(model: nn.Module) -> str:
    """The dotted name of a model's final classifier layer: the last module (in definition order)
    that holds parameters of its own, which must be a Linear or a 1x1 Conv2d (SqueezeNet's)."""
    if timm_models.is_timm_module(model):
        return timm_models.head_names(model)[0]
    owners = [name for name, module in model.named_modules() if any(True for _ in module.parameters(recurse=False))]
    head = owners[-1] if owners else ""
    layer = model.get_submodule(head)
    if not (isinstance(layer, nn.Linear) or (isinstance(layer, nn.Conv2d) and layer.kernel_size == (1, 1))):
        raise ConfigError(f"{type(model).__name__}: its last layer with parameters, {head or '(none)'}, is a "
                          f"{type(layer).__name__}, not a classifier transferlab can replace; choose another model.name")
    return head


def head_name(model_name: str, model: nn.Module) -> str:
    """The head of ``model`` (built as ``model_name``): the table's, timm's, else the one found generically."""
    if timm_models.is_timm(model_name):
        return timm_models.head_names(model)[0]
    return MODELS[model_name].head if model_name in MODELS else find_head(model)


def head_modules(model_name: str, model: nn.Module) -> tuple[str, ...]:
    """Every classifier head of ``model``: head_name's, and the others of a timm model that has
    several (a distilled DeiT's ``head`` and ``head_dist``, whose predictions it averages). Each
    is replaced for the data's classes, and each is the head: freeze=last_only trains them all."""
    if timm_models.is_timm(model_name):
        return timm_models.head_names(model)
    return (head_name(model_name, model),)


def is_inside_heads(parameter_name: str, heads: tuple[str, ...]) -> bool:
    return any(parameter_name.startswith(f"{head}.") for head in heads)


def frozen_modules(model: nn.Module, model_name: str, preset: str, modules: list[str] | None) -> tuple[str, ...]:
    """The dotted names to freeze in ``model`` (built as ``model_name``): the explicit list when
    given, else the preset's. ``early``/``middle`` need the model's stages from ``MODELS``."""
    if modules is not None:
        return tuple(modules)
    if preset == "none":
        return ()
    if preset == "last_only":
        return tuple(_all_but(model, head_modules(model_name, model)))
    if timm_models.is_timm(model_name):
        presets = timm_models.freeze_presets(model)
    else:
        presets = MODELS[model_name].freeze_presets if model_name in MODELS else {}
    if preset not in presets:
        with_stages = [name for name, spec in MODELS.items() if preset in spec.freeze_presets]
        raise ConfigError(
            f"freeze={preset} needs the stages of the model, which transferlab knows for {', '.join(with_stages)} "
            f"and timm's models only; for {model_name} use freeze=none, freeze=last_only or freeze.modules=[...] "
            "with its blocks: "
            f"{', '.join(freezable_module_names(model))}"
        )
    return presets[preset]


def _all_but(module: nn.Module, heads: tuple[str, ...], prefix: str = "") -> list[str]:
    """The fewest dotted names (modules, or parameters held directly, like ViT's class_token) that
    cover every parameter outside ``heads``."""
    names = [f"{prefix}{name}" for name, _ in module.named_parameters(recurse=False)]
    for child_name, child in module.named_children():
        name = f"{prefix}{child_name}"
        if any(head.startswith(f"{name}.") for head in heads):
            names += _all_but(child, heads, f"{name}.")
        elif name not in heads and any(True for _ in child.parameters()):
            names.append(name)
    return names


def min_image_size(model_name: str) -> int:
    spec = MODELS.get(model_name)
    if spec is not None and spec.min_image_size is not None:
        return spec.min_image_size
    return max(pretrained_weights(model_name).meta["min_size"])


def check_image_size(model: nn.Module, model_name: str, image_size: int) -> None:
    """Refuse an image size ``model`` cannot take: other than the one size of a vision
    transformer, below the model's minimum, or one its layers cannot divide (MaxViT's windows)."""
    fixed = getattr(model, "image_size", None)  # torchvision's ViTs take exactly this size
    if isinstance(fixed, int):
        if image_size != fixed:
            raise ConfigError(f"data.image_size={image_size} does not fit {model_name}; it needs exactly {fixed}")
        return
    # timm's ViTs are built for the run's size; what a timm model cannot take shows in a forward pass.
    minimum = 0 if timm_models.is_timm(model_name) else min_image_size(model_name)
    if image_size < minimum:
        raise ConfigError(f"data.image_size={image_size} is too small for {model_name}; it needs at least {minimum}")
    problem = _forward_problem(model, image_size)
    if problem is not None:
        raise ConfigError(f"data.image_size={image_size} does not fit {model_name}: {problem}")


def _forward_problem(model: nn.Module, image_size: int) -> str | None:
    """Why one image of ``image_size`` cannot pass through ``model``, or None. Runs on the meta
    device, with every parameter and buffer swapped for a meta tensor: shapes only, no arithmetic."""
    meta = {name: torch.empty_like(tensor, device="meta")
            for name, tensor in itertools.chain(model.named_parameters(), model.named_buffers())}
    training = model.training
    model.eval()  # BatchNorm's statistics stay untouched
    try:
        with torch.no_grad():
            torch.func.functional_call(model, meta, (torch.empty(1, 3, image_size, image_size, device="meta"),))
    except (RuntimeError, AssertionError, ValueError) as error:
        return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    finally:
        model.train(training)
    return None


@dataclass(frozen=True)
class Init:
    """How a built model was initialised (run.json's ``init`` and ``pretraining``)."""

    init: str  # the weights' name (IMAGENET1K_V1, timm:a1_in1k), random, file:PATH or local-dir:FOLDER
    source: str  # torchvision, timm, file, local-dir or scratch
    tag: str | None  # the torchvision weights' or the timm pretraining tag; None for files and scratch
    new_head: bool  # the head was started afresh (the weights' head did not fit the data's classes, or was missing)
    # The SHA-256 of the weights loaded (of a local-dir folder: of its files' digests); None for scratch.
    weights_sha256: str | None = None
    head: str = ""  # a weights file's: why its head was kept or started afresh, for the log
    name: str | None = None  # a weights file's name for the report (model.weights_name, or from its run.json)

    @property
    def label(self) -> str:
        """How the report names the pretraining source: ``torchvision IMAGENET1K_V1``, ``timm a1_in1k``,
        a weights file's name (``letters``)..."""
        if self.source == "scratch":
            return "from scratch"
        if self.name:
            return self.name
        return f"{self.source} {self.tag}" if self.tag else self.init

    def as_record(self) -> dict[str, object]:
        return {"source": self.source, "tag": self.tag, "label": self.label, "new_head": self.new_head,
                "weights_sha256": self.weights_sha256}


# What became of a weights file's head (timm_models uses the same words).
HEAD_KEPT, HEAD_MISSING, HEAD_MISFIT, HEAD_REFUSED = timm_models.HEAD_STATES


def weights_record(path: Path) -> dict[str, object] | None:
    """The run.json beside a weights file (a run's model.pt or checkpoint.pt), or None: what the
    weights were trained on (``classes``, ``dataset``, ``model``)."""
    try:
        record = json.loads((path.parent / "run.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None


def _known_classes(trained_on: Mapping[str, object] | None) -> list[str] | None:
    classes = (trained_on or {}).get("classes")
    return [str(c) for c in classes] if isinstance(classes, list) else None


def head_refusal(trained_on: Mapping[str, object] | None, classes: Sequence[str] | None,
                 new_head: bool) -> str | None:
    """Why a weights file's head must not be kept whatever its shape (None: it may be, if it fits):
    ``model.new_head=true``, or class names, known on both sides, that are not the data's."""
    if new_head:
        return "model.new_head=true"
    weights_classes = _known_classes(trained_on)
    if weights_classes is not None and classes is not None and weights_classes != list(classes):
        order = " (in another order)" if sorted(weights_classes) == sorted(classes) else ""
        return (f"its classes ({_listed(weights_classes)}) are not the data's ({_listed(classes)}){order}")
    return None


def head_reason(state: str, refusal: str | None, num_classes: int,
                trained_on: Mapping[str, object] | None) -> str:
    """One line for the log: which head the run has, and why."""
    if state == HEAD_REFUSED:
        return f"a new head starts: {refusal}"
    if state == HEAD_MISSING:
        return "it has no head: a new head starts"
    if state == HEAD_MISFIT:
        return f"its head does not have the data's {num_classes} classes: a new head starts"
    if _known_classes(trained_on) is not None:
        return f"its head is kept: its classes are the data's ({_listed(_known_classes(trained_on))})"
    return (f"its head is kept: it has the data's {num_classes} classes, whose names it does not record (no run.json "
            "beside it); model.new_head=true starts a new one")


def _listed(names: Sequence[str], shown: int = 4) -> str:
    return ", ".join(names[:shown]) + (", ..." if len(names) > shown else "")


def weights_label(path: Path, weights_name: str | None, trained_on: Mapping[str, object] | None) -> str:
    """How the report names a weights file: ``model.weights_name``; else what its run.json says it
    was trained on and its run folder (``resnet18 on letters (seed=1)``: the report's arms go by
    label, so that runs of two files must not share one); else its folder and file name; shortened
    to records.LABEL_LIMIT characters."""
    if weights_name:
        return shorten(weights_name)
    record = trained_on or {}
    if isinstance(record.get("model"), str) and isinstance(record.get("dataset"), str):
        return shorten(f"{record['model']} on {record['dataset']} ({path.parent.name})")
    return shorten(f"{path.parent.name}/{path.name}" if path.parent.name else path.name)


def build_model(name: str, pretrained: bool, weights_path: str | None = None,
                num_classes: int = DEFAULT_NUM_CLASSES, image_size: int | None = None) -> nn.Module:
    """A torchvision (or ``timm/``) model with a fresh ``num_classes``-way head, initialised from
    ImageNet weights (``pretrained_weights``), from a local state_dict (``weights_path``, which wins
    over ``pretrained``) or at random; see ``build_model_with_init``."""
    return build_model_with_init(name, pretrained, weights_path, num_classes, image_size)[0]


def build_model_with_init(name: str, pretrained: bool, weights_path: str | None = None,
                          num_classes: int = DEFAULT_NUM_CLASSES, image_size: int | None = None,
                          digest_memo: Path | None = None, classes: Sequence[str] | None = None,
                          new_head: bool = False, weights_name: str | None = None) -> tuple[nn.Module, Init]:
    """(model, how it was initialised, with the SHA-256 of the weights it loaded). ``image_size``
    sizes the models whose input size is fixed (timm's ViTs); torchvision's take their own size.
    ``digest_memo``: where weights files' digests are remembered (caches.file_sha256). A weights
    file's head is kept only when it fits (``head_refusal``): ``classes`` are the data's class names
    (None: unknown), ``new_head`` forces a fresh head; ``weights_name`` names the file in the report."""
    check_model_name(name)
    local_dir = timm_models.is_timm(name) and str(weights_path).startswith(timm_models.LOCAL_DIR)
    file = Path(weights_path) if weights_path is not None and not local_dir else None  # a state_dict file
    trained_on = weights_record(file) if file is not None else None
    refusal = head_refusal(trained_on, classes, new_head)
    if timm_models.is_timm(name):
        model, init = timm_models.build(name, pretrained, weights_path, num_classes, image_size, digest_memo,
                                        keep_head=refusal is None)
        if file is None:  # a tag's weights, a local-dir: folder (a new head) or none
            return model, Init(init.init, init.source, init.tag, init.new_head, init.weights_sha256,
                               name=shorten(weights_name) if weights_name else None)
        return model, Init(init.init, init.source, init.tag, init.new_head, init.weights_sha256,
                           head_reason(init.head, refusal, num_classes, trained_on),
                           weights_label(file, weights_name, trained_on))
    if weights_path is not None:
        model = _architecture(name, weights=None)
        state = _load_state_dict_file(model, name, file, num_classes, keep_head=refusal is None)
        return model, Init(f"file:{weights_path}", "file", None, state != HEAD_KEPT, file_sha256(file, digest_memo),
                           head_reason(state, refusal, num_classes, trained_on),
                           weights_label(file, weights_name, trained_on))
    if not pretrained:
        return _build_torchvision(name, None, num_classes), Init("random", "scratch", None, True)
    weights = pretrained_weights(name)
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name  # where torch.hub keeps them
    digest = None
    if path.is_file() and os.environ.get(STAND_IN_WEIGHTS) == "1":
        log.warning("warning: %s=1: %s is loaded as %s's %s weights without checking its SHA-256", STAND_IN_WEIGHTS,
                    path, name, weights.name)
    elif path.is_file():  # torch.hub checks the digest of the weights it downloads, never of those it finds
        digest = hub_file_sha256(path, digest_memo, f"torchvision's {weights.name} weights of {name}")
    model = _build_torchvision(name, weights, num_classes)
    return model, Init(weights.name, "torchvision", weights.name, True, digest or file_sha256(path, digest_memo))


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


def refuse_non_finite_weights(model: nn.Module, name: str, init: Init) -> None:
    """A ConfigError naming the weights' file when the weights ``model`` was initialised from hold
    NaN or infinite values (a damaged download, a diverged run's save): its first loss would be NaN,
    which the run would blame on the learning rate."""
    if init.source == "scratch":
        return
    bad = [key for key, tensor in model.state_dict().items()
           if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
    if not bad:
        return
    if init.source in ("file", "local-dir"):
        source, advice = f"model.weights={init.init.removeprefix('file:')!r}", "save them again from a good run"
    elif init.source == "torchvision":
        file = Path(torch.hub.get_dir()) / "checkpoints" / Path(pretrained_weights(name).url).name
        source, advice = f"the {init.tag} weights of {name} ({file})", "delete the file to download it again"
    else:
        source = f"the {init.label} weights of {name}"
        advice = "delete them from the Hugging Face cache to download them again"
    raise ConfigError(f"{source} hold NaN or infinite values in {len(bad)} tensor(s) (e.g. {', '.join(bad[:3])}); "
                      f"a run cannot start from them: {advice}, or pass other weights")


def _build_torchvision(name: str, weights: torchvision.models.WeightsEnum | None, num_classes: int) -> nn.Module:
    try:
        model = _architecture(name, weights)
    except (OSError, RuntimeError) as error:  # urllib's URLError is an OSError
        file_name = Path(weights.url).name
        raise TransferlabError(
            f"could not load the {weights.name} weights of {name} ({error}); on an offline machine put "
            f"{file_name} into {Path(torch.hub.get_dir()) / 'checkpoints'}, or pass model.weights=PATH, "
            "or model.pretrained=false"
        ) from error
    _replace_head(model, head_name(name, model), num_classes)
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


def _load_state_dict_file(model: nn.Module, name: str, path: Path, num_classes: int, keep_head: bool = True) -> str:
    """Load a state_dict (a ``.pth``/``.pt`` torch file or ``.safetensors``) into ``model``, an
    ImageNet-shaped architecture, and leave ``model`` with a ``num_classes`` head; what became of
    the file's head (HEAD_KEPT...). A head of ``num_classes`` classes loads with the rest unless
    ``keep_head`` is false; any other (ImageNet's 1000, the 4 of an earlier run on other data) or
    none at all is replaced by a fresh one, as with the downloaded weights. The weights of auxiliary
    classifiers, which ``model`` does not have, are ignored; every other key must fit."""
    if not path.is_file():
        raise ConfigError(f"model.weights={str(path)!r}: no such file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            loaded = load_file(path, device="cpu")
        else:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for foreign or corrupt files
        raise ConfigError(f"model.weights={str(path)!r} is not a state_dict torch can load safely: {error}") from error
    state_dict = _unwrap_state_dict(loaded)
    if state_dict is None:
        raise ConfigError(
            f"model.weights={str(path)!r} is not a state_dict (a mapping of parameter names to tensors)"
        )
    aux_prefixes = tuple(f"{aux}." for aux in (MODELS[name].aux_heads if name in MODELS else ()))
    state_dict = {k: v for k, v in state_dict.items() if not k.startswith(aux_prefixes)}
    head = head_name(name, model)
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
    return state


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
    """Names of the parameters that train when the modules (or parameters) named in ``frozen`` are
    frozen. An unknown name is a ConfigError that lists the model's modules."""
    known = set(dict(model.named_modules())) | {name for name, _ in model.named_parameters()}
    unknown = [name for name in frozen if name not in known or name == ""]
    if unknown:
        raise ConfigError(
            f"freeze.modules: unknown module(s) {', '.join(unknown)}; this model's modules are: "
            f"{', '.join(freezable_module_names(model))}"
        )
    prefixes = tuple(f"{name}." for name in frozen)
    return [name for name, _ in model.named_parameters() if name not in frozen and not name.startswith(prefixes)]


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


def unfreeze(model: nn.Module) -> list[nn.Parameter]:
    """Switch ``requires_grad`` on for every frozen parameter (LP-FT's switch from the linear probe
    to fine-tuning); the parameters switched, in the model's order, for the optimizer to take."""
    frozen = [parameter for parameter in model.parameters() if not parameter.requires_grad]
    for parameter in frozen:
        parameter.requires_grad_(True)
    return frozen
