"""How a model adapts (``adapt=``): all of what freeze leaves trainable (``none``), LoRA adapters
through Hugging Face peft (``lora``), or BitFit (``bitfit``: biases and normalisation parameters).
The head trains fully in each. Both adapters work on torchvision and timm models alike, and only
inside what ``freeze`` leaves trainable: ``freeze=early adapt=lora`` puts no adapter into the
frozen stages.

LoRA's default targets (``adapt.target_modules=null``) are the linear layers outside the head (a
ViT's attention and MLP; torchvision's attention, an ``nn.MultiheadAttention``, is adapted as a whole,
since it reads its output projection's weight directly), else, for a model without them (a CNN),
its convolutions; grouped (depthwise) convolutions are left out, as peft cannot merge them.

``plain_state_dict`` is what ``model.pt`` holds: the adapters merged into the weights
(``merge_and_unload``), so that the plain architecture loads it with ``strict=True``. Checkpoints
hold the adapted model's own state (adapters apart), which a run rebuilt the same way resumes.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from transferlab.config import ADAPTERS as ADAPTER_NAMES
from transferlab.errors import ConfigError

# Layers whose parameters BitFit trains besides the biases: every normalisation layer.
NORM_TYPES: tuple[type[nn.Module], ...] = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm,
                                           nn.LocalResponseNorm)
LORA_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv2d, nn.MultiheadAttention)


@dataclass(frozen=True)
class LoraSettings:
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] | None = None  # None: default_lora_targets


def _inside(name: str, modules: tuple[str, ...] | list[str]) -> bool:
    return any(name == module or name.startswith(f"{module}.") for module in modules)


def _is_norm(module: nn.Module) -> bool:
    # timm's own norms (LayerNorm2d, BatchNormAct2d...) subclass torch's; RMSNorm where torch has it.
    rms = getattr(nn, "RMSNorm", None)
    return isinstance(module, NORM_TYPES) or (rms is not None and isinstance(module, rms))


def default_lora_targets(model: nn.Module, head: str, frozen: tuple[str, ...] = ()) -> list[str]:
    """The modules ``adapt=lora`` adapts by default: the linears outside the head and the frozen
    modules, else the ungrouped convolutions."""
    modules = [(name, module) for name, module in model.named_modules()
               if name and not _inside(name, (head,)) and not _inside(name, frozen)]
    attention = [name for name, module in modules if isinstance(module, nn.MultiheadAttention)]
    linears = [name for name, module in modules
               if isinstance(module, nn.Linear) and not _inside(name, attention)] + attention
    if linears:
        return sorted(linears, key=[name for name, _ in modules].index)
    return [name for name, module in modules if isinstance(module, nn.Conv2d) and module.groups == 1]


def lora_targets(model: nn.Module, head: str, frozen: tuple[str, ...], names: tuple[str, ...] | None) -> list[str]:
    """The full names of the modules LoRA adapts: the defaults, or the modules whose name is, or
    ends with, one of ``names`` (peft's rule), outside the head and the frozen modules."""
    if names is None:
        targets = default_lora_targets(model, head, frozen)
        if not targets:
            raise ConfigError(f"adapt=lora found no linear layer or ungrouped convolution outside the head "
                              f"{'and the frozen modules ' if frozen else ''}to adapt; name them with "
                              "adapt.target_modules=[...]")
        return targets
    candidates = [(name, module) for name, module in model.named_modules()
                  if name and not _inside(name, (head,)) and not _inside(name, frozen)]
    matched = [(name, module) for name, module in candidates
               if any(name == wanted or name.endswith(f".{wanted}") for wanted in names)]
    unmatched = [wanted for wanted in names if not any(name == wanted or name.endswith(f".{wanted}")
                                                       for name, _ in candidates)]
    if matched and unmatched:  # a misspelled entry beside one that matches would be dropped without a word
        raise ConfigError(f"adapt.target_modules={list(names)}: {', '.join(map(repr, unmatched))} matches no module "
                          f"outside the head{' and the frozen modules' if frozen else ''}; this model's adaptable "
                          f"modules are e.g. {', '.join(_examples(candidates))}")
    if not matched:
        types = sorted({type(module).__name__ for _, module in candidates if isinstance(module, LORA_TYPES)})
        raise ConfigError(f"adapt.target_modules={list(names)} matches no module outside the head"
                          f"{' and the frozen modules' if frozen else ''}; this model's adaptable types: "
                          f"{', '.join(types) or 'none'} (e.g. {', '.join(_examples(candidates))})")
    unsupported = [f"{name} ({type(module).__name__})" for name, module in matched
                   if not isinstance(module, LORA_TYPES) or (isinstance(module, nn.Conv2d) and module.groups > 1)]
    if unsupported:
        raise ConfigError(f"adapt.target_modules={list(names)} matches modules LoRA cannot adapt and merge: "
                          f"{', '.join(unsupported[:3])}; it adapts Linear, ungrouped Conv2d and MultiheadAttention")
    return [name for name, _ in matched]


def _check_rank(model: nn.Module, targets: list[str], rank: int) -> None:
    """A ConfigError when ``rank`` is larger than a target layer's inputs or outputs: B A then has
    more parameters than the layer it adapts, and no more expressive power than rank min(in, out)."""
    for name in targets:
        module = model.get_submodule(name)
        if isinstance(module, nn.Linear):
            sizes = (module.in_features, module.out_features)
        elif isinstance(module, nn.Conv2d):  # A sees each output's whole receptive field
            sizes = (module.in_channels * module.kernel_size[0] * module.kernel_size[1], module.out_channels)
        elif isinstance(module, nn.MultiheadAttention):
            sizes = (module.embed_dim, module.embed_dim)
        else:
            continue
        if rank > min(sizes):
            raise ConfigError(f"adapt.rank={rank} is larger than a layer it adapts ({name}: {sizes[0]} inputs, "
                              f"{sizes[1]} outputs); it must be at most {min(sizes)} here")


def _examples(candidates: list[tuple[str, nn.Module]], count: int = 4) -> list[str]:
    """A few leaf names of adaptable modules (what adapt.target_modules takes), in model order."""
    leaves = [name.rpartition(".")[2] for name, module in candidates if isinstance(module, LORA_TYPES)]
    return list(dict.fromkeys(leaves))[:count]


def apply_lora(model: nn.Module, head: str, frozen: tuple[str, ...],
               settings: LoraSettings) -> tuple[nn.Module, list[str]]:
    """(the model with LoRA adapters on its targets and a fully trainable head, the targets). Only
    the adapters and the head train."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as error:
        raise ConfigError("adapt=lora needs peft: pip install 'transferlab[timm]'") from error
    targets = lora_targets(model, head, frozen, settings.target_modules)
    _check_rank(model, targets, settings.rank)
    config = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=targets, modules_to_save=[head])
    return get_peft_model(model, config), targets


def bitfit_trainable(model: nn.Module, head: str, trainable: list[str]) -> list[str]:
    """BitFit's share of ``trainable`` (the parameters freeze leaves): biases, normalisation layers'
    parameters, and the head."""
    norms = [name for name, module in model.named_modules() if name and _is_norm(module)]
    return [name for name in trainable
            if name.rpartition(".")[2] == "bias" or _inside(name, (head,)) or _inside(name.rpartition(".")[0], norms)]


def _full(model, head, frozen, trainable, lora) -> tuple[nn.Module, dict[str, object]]:
    return model, {"name": "none"}


def _bitfit(model, head, frozen, trainable, lora) -> tuple[nn.Module, dict[str, object]]:
    kept = set(bitfit_trainable(model, head, trainable))
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name in kept)
    return model, {"name": "bitfit"}


def _lora(model, head, frozen, trainable, lora) -> tuple[nn.Module, dict[str, object]]:
    adapted, targets = apply_lora(model, head, frozen, lora)
    return adapted, {"name": "lora", "rank": lora.rank, "alpha": lora.alpha, "dropout": lora.dropout,
                     "target_modules": list(lora.target_modules) if lora.target_modules else None,
                     "adapted_modules": len(targets), "adapted_examples": targets[:4]}


# adapt.name -> how it adapts a model that freeze has already frozen (the names: config.ADAPTERS, in order).
ADAPTERS = dict(zip(ADAPTER_NAMES, (_full, _lora, _bitfit), strict=True))


def adapt_model(model: nn.Module, adapter: str, head: str, frozen: tuple[str, ...], trainable: list[str],
                lora: LoraSettings) -> tuple[nn.Module, dict[str, object]]:
    """``model`` (frozen as ``trainable`` says) adapted by ``adapter``, and what run.json records
    of it (``adapt``). Sets ``requires_grad`` on every parameter."""
    if adapter not in ADAPTERS:
        raise ConfigError(f"adapt={adapter!r} is not allowed; choose one of: {', '.join(ADAPTERS)}")
    return ADAPTERS[adapter](model, head, frozen, trainable, lora)


def is_peft(model: nn.Module) -> bool:
    return hasattr(model, "merge_and_unload") and hasattr(model, "peft_config")


def plain_base(model: nn.Module) -> nn.Module:
    """The architecture inside an adapted model (sharing its modules), or the model itself."""
    return model.get_base_model() if is_peft(model) else model


def plain_model(model: nn.Module) -> nn.Module:
    """The architecture without adapters: LoRA merged into a copy of the weights (``model`` keeps its
    adapters, so a run can go on); any other model as it is."""
    return copy.deepcopy(model).merge_and_unload() if is_peft(model) else model


def plain_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model.pt``'s state_dict: the plain architecture's keys, adapters merged."""
    return plain_model(model).state_dict()


def base_parameter_name(name: str) -> str:
    """The name a parameter of a peft-wrapped model has in the plain architecture
    (``base_model.model.blocks.0.attn.qkv.base_layer.weight`` -> ``blocks.0.attn.qkv.weight``); its
    adapters' parameters map onto the layer they adapt (``...qkv.lora_A.default.weight`` ->
    ``...qkv.weight``)."""
    name = name.removeprefix("base_model.model.")
    for part in (".base_layer", ".original_module", ".modules_to_save.default"):
        name = name.replace(part, "")
    for adapter in (".lora_A.default", ".lora_B.default", ".lora_embedding_A.default", ".lora_embedding_B.default"):
        if adapter in name:
            return name.split(adapter)[0] + ".weight"
    return name
