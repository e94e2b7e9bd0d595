"""Building a model from its source, and what every model shares: its head, freezing, image sizes.

Which library builds ``model.name`` (torchvision's NAME, timm's timm/NAME[.TAG]) and how it loads
weights is the sources' business (transferlab.sources: a table, one module per source); this module
asks the source and applies the same rules to every model. Freezing is data:
``trainable_parameter_names`` is a pure function of a model and a list of dotted names.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from transferlab.errors import ConfigError
from transferlab.sources import MODELS, Init, build, source_for, source_of

DEFAULT_NUM_CLASSES = 10  # CIFAR-10's; a run passes its dataset's class count


def check_model_name(name: str) -> None:
    """A ConfigError, with close matches, unless the source of ``name`` can build it."""
    source_for(name).check_name(name)


def build_model(name: str, pretrained: bool, weights_path: str | None = None,
                num_classes: int = DEFAULT_NUM_CLASSES, image_size: int | None = None) -> nn.Module:
    """A torchvision (or ``timm/``) model with a fresh ``num_classes``-way head, initialised from
    its source's pretrained weights, from a local state_dict (``weights_path``, which wins over
    ``pretrained``) or at random; see ``build_model_with_init``."""
    return build_model_with_init(name, pretrained, weights_path, num_classes, image_size)[0]


def build_model_with_init(name: str, pretrained: bool, weights_path: str | None = None,
                          num_classes: int = DEFAULT_NUM_CLASSES, image_size: int | None = None,
                          digest_memo: Path | None = None, classes: Sequence[str] | None = None,
                          new_head: bool = False, weights_name: str | None = None) -> tuple[nn.Module, Init]:
    """(model, how it was initialised, with the SHA-256 of the weights it loaded). ``image_size``
    sizes the models whose input size is fixed (timm's ViTs); torchvision's take their own size.
    ``digest_memo``: where weights files' digests are remembered (diskcache.file_sha256). A weights
    file's head is kept only when it fits (sources.local_file): ``classes`` are the data's class
    names (None: unknown), ``new_head`` forces a fresh head; ``weights_name`` names the file in the
    report."""
    return build(name, pretrained, None if weights_path is None else str(weights_path), num_classes, image_size,
                 digest_memo, classes, new_head, weights_name)


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
    else:
        source, advice = source_for(name).weights_place(name, init)
    raise ConfigError(f"{source} hold NaN or infinite values in {len(bad)} tensor(s) (e.g. {', '.join(bad[:3])}); "
                      f"a run cannot start from them: {advice}, or pass other weights")


def pretrained_state(name: str) -> dict[str, object]:
    """The state_dict of ``name``'s own pretrained weights, with their own head (ImageNet's classes)."""
    return source_for(name).pretrained_state(name)


def preprocessing(model: nn.Module) -> dict[str, object] | None:
    """The mean, std, interpolation and crop_pct of ``model``'s own preprocessing (a timm model's
    pretrained_cfg), or None: ImageNet's statistics (a torchvision model)."""
    return source_of(model).preprocessing(model)


# --- the head -------------------------------------------------------------------------------------

def head_name(model_name: str, model: nn.Module) -> str:
    """The head of ``model`` (built as ``model_name``), as its source names it."""
    return head_modules(model_name, model)[0]


def head_modules(model_name: str, model: nn.Module) -> tuple[str, ...]:
    """Every classifier head of ``model``: head_name's, and the others of a timm model that has
    several (a distilled DeiT's ``head`` and ``head_dist``, whose predictions it averages). Each
    is replaced for the data's classes, and each is the head: freeze=last_only trains them all."""
    return source_for(model_name).heads(model_name, model)


def is_inside_heads(parameter_name: str, heads: tuple[str, ...]) -> bool:
    return any(parameter_name.startswith(f"{head}.") for head in heads)


# --- image sizes ----------------------------------------------------------------------------------

def check_image_size(model: nn.Module, model_name: str, image_size: int) -> None:
    """Refuse an image size ``model`` cannot take: other than the one size of a vision
    transformer, below the model's minimum, or one its layers cannot divide (MaxViT's windows)."""
    fixed = getattr(model, "image_size", None)  # torchvision's ViTs take exactly this size
    if isinstance(fixed, int):
        if image_size != fixed:
            raise ConfigError(f"data.image_size={image_size} does not fit {model_name}; it needs exactly {fixed}")
        return
    minimum = source_for(model_name).min_image_size(model_name)
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


# --- freezing -------------------------------------------------------------------------------------

def frozen_modules(model: nn.Module, model_name: str, preset: str, modules: list[str] | None) -> tuple[str, ...]:
    """The dotted names to freeze in ``model`` (built as ``model_name``): the explicit list when
    given, else the preset's. ``early``/``middle`` need the model's stages, which its source knows
    (torchvision's: for the models of ``MODELS``; timm's: for every model with a group_matcher)."""
    if modules is not None:
        return tuple(modules)
    if preset == "none":
        return ()
    if preset == "last_only":
        return tuple(_all_but(model, head_modules(model_name, model)))
    presets = source_for(model_name).freeze_presets(model_name, model)
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
