"""The timm source: ``model.name=timm/<architecture>[.<tag>]``, any architecture ``timm.list_models()``
knows, with the weights of its pretraining tag (``timm/resnet50.a1_in1k``; no tag: timm's default
tag of the architecture).

Weights come from the Hugging Face cache (timm's own download; ``HF_HUB_OFFLINE=1`` keeps it off
the network, and ``transferlab prepare model.name=timm/...`` fills the cache on a connected
machine), from ``model.weights=FILE`` (a ``.safetensors`` or ``.pth`` state_dict, loaded through
timm's pretrained loading, so its checkpoint filter applies: a ViT's position embedding is resampled
to the run's image size), or from ``model.weights=local-dir:FOLDER`` (a folder as the Hub stores a
model: config.json and model.safetensors). The head is sized with timm's ``reset_classifier``;
the stages of the freeze presets and of layer-wise learning-rate decay come from the model's own
``group_matcher``. A model whose input size is fixed (ViTs) is built for the run's image size
(``img_size=``), so ``model.pt`` of such a run loads into
``timm.create_model(name, num_classes=K, img_size=S)``; every other one into
``timm.create_model(name, num_classes=K)``.

timm is an optional extra (``pip install 'transferlab[timm]'``); it is imported only here, and only
when a run of a timm model starts. The functions that base.ModelSource names are the source's
answers; the others deal in timm's names, tags and files.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from transferlab import model_names
from transferlab.diskcache import file_sha256
from transferlab.errors import ConfigError, TransferlabError
from transferlab.sources.base import HEAD_KEPT, HEAD_MISFIT, HEAD_MISSING, HEAD_REFUSED, Fetch, Init

PREFIX = model_names.TIMM_PREFIX
LOCAL_DIR = "local-dir:"


# --- the source's answers (transferlab.sources.base.ModelSource) ----------------------------------

def owns_module(model: nn.Module) -> bool:
    return isinstance(getattr(model, "pretrained_cfg", None), Mapping) and hasattr(model, "group_matcher")


def owns_weights(weights: str) -> bool:
    return weights.startswith(LOCAL_DIR)


def heads(name: str, model: nn.Module) -> tuple[str, ...]:
    """The classifier layer(s), from the model's pretrained_cfg (a distilled ViT has two)."""
    classifier = model.pretrained_cfg.get("classifier") or "head"
    return (classifier,) if isinstance(classifier, str) else tuple(classifier)


def min_image_size(name: str) -> int:
    return 0  # timm's ViTs are built for the run's size; what a model cannot take shows in a forward pass


def preprocessing(model: nn.Module) -> dict[str, Any] | None:
    """The model's own preprocessing (timm.data.resolve_data_config): mean, std, interpolation, crop_pct."""
    from timm.data import resolve_data_config

    resolved = resolve_data_config(model=model)
    return {"mean": tuple(resolved["mean"]), "std": tuple(resolved["std"]),
            "interpolation": resolved["interpolation"], "crop_pct": float(resolved["crop_pct"])}


def stages(model: nn.Module) -> list[list[str]] | None:
    """Single blocks by the model's ``group_matcher``, for layer-wise decay; None without one."""
    try:
        return _stage_groups(model, coarse=False)
    except NotImplementedError:  # the few timm models without a group_matcher: the generic rule
        return None


def weights_place(name: str, init: Init) -> tuple[str, str]:
    return f"the {init.label} weights of {name}", "delete them from the Hugging Face cache to download them again"


def _timm():
    try:
        import timm
    except ImportError as error:
        raise ConfigError("model.name=timm/... needs timm: pip install 'transferlab[timm]'") from error
    return timm


def split_name(model_name: str) -> tuple[str, str | None]:
    """``timm/resnet50.a1_in1k`` -> (``resnet50``, ``a1_in1k``); no tag -> (architecture, None)."""
    return model_names.split(model_name)


def check_name(name: str) -> None:
    """A ConfigError unless timm knows the architecture and, when one is named, its tag."""
    timm = _timm()
    architecture, tag = split_name(name)
    names = timm.list_models()
    if architecture not in names:
        close = difflib.get_close_matches(architecture, names, n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(PREFIX + c for c in close)}?" if close else ""
        raise ConfigError(f"model.name={name!r}: timm has no model {architecture!r}{hint} "
                          "(timm.list_models() lists them all)")
    if tag is not None:
        tags = pretrained_tags(architecture)
        if tag not in tags:
            close = difflib.get_close_matches(tag, tags, n=3, cutoff=0.5)
            known = f"; its tags: {', '.join(tags)}" if tags else "; it has no pretrained weights in timm"
            hint = f" (did you mean {' or '.join(close)}?)" if close else ""
            raise ConfigError(f"model.name={name!r}: {architecture} has no pretraining tag {tag!r}{hint}{known}")


def pretrained_tags(architecture: str) -> list[str]:
    """The tags timm has weights for, its default first."""
    timm = _timm()
    return [name.partition(".")[2] for name in timm.list_pretrained(f"{architecture}.*")]


def resolved_tag(model_name: str) -> str | None:
    """The tag a run of ``model_name`` loads: the named one, else timm's default for the architecture."""
    architecture, tag = split_name(model_name)
    if tag is not None:
        return tag
    cfg = _timm().models.get_pretrained_cfg(architecture)
    return getattr(cfg, "tag", None) if cfg is not None else None


def weights_location(model_name: str) -> str:
    """Where timm looks for (and downloads) the weights of ``model_name``'s tag: its folder in the
    Hugging Face cache, or torch.hub's checkpoints folder for weights timm fetches by URL."""
    architecture = split_name(model_name)[0]
    tag = resolved_tag(model_name)
    cfg = _timm().models.get_pretrained_cfg(f"{architecture}.{tag}" if tag else architecture)
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if hub_id:
        from huggingface_hub import constants

        return str(Path(constants.HF_HUB_CACHE) / f"models--{hub_id.replace('/', '--')}")
    return str(Path(torch.hub.get_dir()) / "checkpoints")


def build(name: str, pretrained: bool, weights: str | None, num_classes: int,
          image_size: int | None = None, digest_memo: Path | None = None) -> tuple[nn.Module, Init]:
    """A timm model with a ``num_classes``-way head, initialised from its tag's weights
    (``pretrained``), from a ``local-dir:`` folder (``weights``, which wins), or at random, and the
    SHA-256 of the weights it loaded (``digest_memo``: diskcache.file_sha256's). Models of a fixed input
    size are built for ``image_size``. (A weights file: ``load_file``.)"""
    timm, architecture, tag, full_name, kwargs = _named(name, image_size)
    if weights is not None and weights.startswith(LOCAL_DIR):
        folder = Path(weights.removeprefix(LOCAL_DIR)).expanduser()
        if not (folder / "config.json").is_file():
            raise ConfigError(f"model.weights={weights!r}: {folder} has no config.json (a local-dir: folder holds "
                              "config.json and model.safetensors, as the Hugging Face Hub stores a timm model)")
        _check_folder_architecture(folder, weights, name)
        model = _create(timm, f"{LOCAL_DIR}{folder}", True, num_classes, kwargs, weights)
        model.reset_classifier(num_classes)  # a fresh head, as for a tag's weights, whatever the folder's classes
        return model, Init(weights, "local-dir", None, True, _folder_sha256(folder, digest_memo))
    if not pretrained:
        model = timm.create_model(architecture, pretrained=False, num_classes=num_classes, **kwargs)
        return model, Init("random", "scratch", None, new_head=True)
    if tag is None:
        raise ConfigError(f"model.name={name!r}: timm has no pretrained weights for {architecture}; "
                          "use model.pretrained=false (or model.weights=FILE)")
    model = _create(timm, full_name, True, num_classes, kwargs, None, name)
    # timm keeps the pretrained head when the class counts agree (1000 classes): a fresh one all the same,
    # as torchvision's weights get, so that pretrained means the same body and a new head for every dataset.
    model.reset_classifier(num_classes)
    # The tag names weights, the file names what was loaded: a new snapshot of the tag is other weights.
    loaded = tag_weights_file(full_name)
    return model, Init(f"timm:{tag}", "timm", tag, True,
                       file_sha256(loaded, digest_memo) if loaded is not None else None)


def pretrained_state(name: str) -> dict[str, Any]:
    """The state_dict of the tag's weights, with the head they were trained with."""
    timm, architecture, tag, full_name, _ = _named(name)
    if tag is None:
        raise ConfigError(f"model.name={name!r}: timm has no pretrained weights for {architecture}")
    return _create(timm, full_name, True, None, {}, None, name).state_dict()


def _named(name: str, image_size: int | None = None) -> tuple[Any, str, str | None, str, dict[str, Any]]:
    """(timm, the architecture, its resolved tag or None, architecture.tag, the size arguments for
    ``image_size``) of a checked ``model.name``."""
    check_name(name)
    architecture, _ = split_name(name)
    tag = resolved_tag(name)
    full_name = f"{architecture}.{tag}" if tag else architecture
    return _timm(), architecture, tag, full_name, _size_kwargs(full_name, image_size)


def tag_weights_file(full_name: str) -> Path | None:
    """The file in the Hugging Face cache (its snapshot that ``refs/main`` names, or the one a
    revision in the hub id names), else in torch.hub's checkpoints folder, that timm loads for the
    tag ``full_name`` (``resnet50.a1_in1k``); None when there is none."""
    cfg = _timm().models.get_pretrained_cfg(full_name)
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if hub_id:
        from huggingface_hub import try_to_load_from_cache

        repo, _, revision = hub_id.partition("@")
        filename = getattr(cfg, "hf_hub_filename", None) or "pytorch_model.bin"  # timm's HF_WEIGHTS_NAME
        try:  # timm's own choice of a safetensors file in place of a pickled one (a private helper)
            from timm.models._hub import _get_safe_alternatives

            alternatives = list(_get_safe_alternatives(filename))
        except ImportError:
            alternatives = ["model.safetensors"]
        names = [filename] if filename.endswith(".safetensors") else [*alternatives, filename]
        for name in names:  # timm's order: a safetensors alternative first
            found = try_to_load_from_cache(repo, name, revision=revision or None)
            if isinstance(found, str):
                return Path(found)
        return None
    url = getattr(cfg, "url", None) if cfg is not None else None
    if url:
        path = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
        return path if path.is_file() else None
    return None


def _folder_sha256(folder: Path, digest_memo: Path | None) -> str:
    """One digest of what timm may load from a local-dir folder: config.json and every weights
    file in it (timm picks one of them by its own preference), each by its SHA-256."""
    names = sorted(path.name for path in folder.iterdir()
                   if path.name == "config.json" or path.name.endswith((".safetensors", ".pth", ".pth.tar", ".bin")))
    lines = "".join(f"{name}\0{file_sha256(folder / name, digest_memo)}\n" for name in names if (folder / name).is_file())
    return hashlib.sha256(lines.encode()).hexdigest()


def _check_folder_architecture(folder: Path, weights: str, model_name: str) -> None:
    """A ConfigError unless the folder's config.json names the architecture of ``model_name``
    (timm builds the architecture that config.json names, whatever model.name says)."""
    try:
        config = json.loads((folder / "config.json").read_text())
        architecture = config.get("architecture") if isinstance(config, dict) else None
    except (OSError, ValueError) as error:
        raise ConfigError(f"model.weights={weights!r}: {folder / 'config.json'} cannot be read ({error})") from error
    expected = split_name(model_name)[0]
    if architecture != expected:
        raise ConfigError(f"model.weights={weights!r} holds a {architecture} model ({folder / 'config.json'}), but "
                          f"model.name={model_name!r} is a {expected}; set model.name=timm/{architecture}, or use "
                          f"a folder of a {expected}")


def _size_kwargs(full_name: str, image_size: int | None) -> dict[str, Any]:
    """``img_size=image_size`` for a model whose input size is fixed (a ViT's position embedding
    has one entry per patch), nothing for the others (whose constructors take no img_size)."""
    cfg = _timm().models.get_pretrained_cfg(full_name)
    fixed = bool(getattr(cfg, "fixed_input_size", False)) if cfg is not None else False
    return {"img_size": image_size} if fixed and image_size is not None else {}


def _create(timm, name: str, pretrained: bool, num_classes: int | None, kwargs: dict[str, Any],
            weights: str | None, model_name: str | None = None, overlay: dict[str, Any] | None = None) -> nn.Module:
    """timm.create_model with a pretrained load whose failure (offline, not cached) is one line."""
    from safetensors import SafetensorError

    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=num_classes,
                                 pretrained_cfg_overlay=overlay, **kwargs)
    except SafetensorError as error:  # a truncated or garbled .safetensors file
        if weights is not None:
            raise ConfigError(f"model.weights={weights!r}: a .safetensors file in it is damaged ({_first_line(error)}); "
                              "save or copy the weights again") from error
        damaged = tag_weights_file(name)
        where = f"{damaged} (the file {damaged.resolve()})" if damaged is not None else weights_location(model_name)
        raise TransferlabError(
            f"the weights of {model_name} in the Hugging Face cache are damaged ({_first_line(error)}): delete {where} "
            f"and run `transferlab prepare model.name={model_name}` on a connected machine, or copy that file again"
        ) from error
    except (RuntimeError, OSError, ValueError) as error:
        if "size mismatch" in str(error) or "Error(s) in loading state_dict" in str(error):
            source = f"model.weights={weights!r}" if weights else model_name
            raise ConfigError(f"{source} does not fit {name.partition(':')[2] or name}: "
                              f"{_first_line(error)}") from error
        if weights is not None:
            raise ConfigError(f"model.weights={weights!r}: timm could not load it: {_first_line(error)}") from error
        offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") not in (None, "", "0") else ""
        # huggingface_hub's LocalEntryNotFoundError: offline, and not in the cache (its message is a paragraph)
        why = "they are not in the local cache" if "LocalEntryNotFound" in type(error).__name__ else _first_line(error)
        raise TransferlabError(
            f"could not load the weights of {model_name}{offline}: {why}; they go into "
            f"{weights_location(model_name)}: run `transferlab prepare model.name={model_name}` on a connected "
            "machine and copy that folder, or pass model.weights=FILE, or model.pretrained=false"
        ) from error


def prepare(name: str, fetch: Fetch | None = None) -> str:
    """`transferlab prepare model.name=timm/...`: the tag's weights into the Hugging Face cache
    (timm downloads them, not ``fetch``; a second call finds them there)."""
    check_name(name)
    architecture = split_name(name)[0]
    tag = resolved_tag(name)
    if tag is None:
        raise TransferlabError(f"{name}: timm has no pretrained weights for {architecture}")
    _create(_timm(), f"{architecture}.{tag}", True, 1000, {}, None, name)
    return f"{name} weights ({tag}): in place, {weights_location(name)}"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def load_file(name: str, path: Path, num_classes: int, image_size: int | None = None,
              keep_head: bool = True) -> tuple[nn.Module, str]:
    """A weights file through timm's pretrained loading (its checkpoint filter applies), and what
    became of its head (HEAD_STATES). A head that does not fit ``num_classes``, or none at all, leaves
    a fresh head, as does ``keep_head=False``; every other key must be there."""
    timm, _, _, full_name, kwargs = _named(name, image_size)
    source = f"model.weights={str(path)!r}"
    if not path.is_file():
        raise ConfigError(f"{source}: no such file")
    try:
        state_dict = timm.models.load_state_dict(str(path), weights_only=True)
    except Exception as error:  # torch and safetensors raise several types for foreign or corrupt files
        raise ConfigError(f"{source} is not a state_dict timm can load safely: {_first_line(error)}") from error
    if not state_dict or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise ConfigError(f"{source} is not a state_dict (a mapping of parameter names to tensors)")
    with torch.device("meta"):  # shapes only: which keys the architecture has
        shape = timm.create_model(full_name.partition(".")[0], pretrained=False, num_classes=num_classes, **kwargs)
    head_keys = {f"{head}.{leaf}" for head in heads(name, shape) for leaf in ("weight", "bias")}
    fits = all(key in state_dict and state_dict[key].shape == tensor.shape
               for key, tensor in shape.state_dict().items() if key in head_keys)
    head = (HEAD_MISSING if not head_keys & set(state_dict) else HEAD_MISFIT if not fits
            else HEAD_KEPT if keep_head else HEAD_REFUSED)
    fits = head == HEAD_KEPT
    expected = set(shape.state_dict()) - head_keys
    given = set(state_dict) - head_keys
    missing, unexpected = sorted(expected - given), sorted(given - expected)
    if missing or unexpected:
        problems = [f"{label} {len(keys)} (e.g. {', '.join(keys[:3])})"
                    for label, keys in (("missing", missing), ("unexpected", unexpected)) if keys]
        raise ConfigError(f"{source} does not fit {full_name.partition('.')[0]}: keys {'; '.join(problems)}")
    if not fits:  # timm drops the head when the class counts differ, and loads the rest
        state_dict = {k: v for k, v in state_dict.items() if k not in head_keys}
    overlay = {"state_dict": state_dict, "num_classes": num_classes if fits else -1}
    model = _create(timm, full_name, True, num_classes, kwargs, str(path), overlay=overlay)
    model.pretrained_cfg.pop("state_dict", None)  # the model holds the weights; the cfg need not keep a copy
    return model, head


def _stage_groups(model: nn.Module, coarse: bool = True) -> list[list[str]]:
    """The model's parameter names by stage, input to output, as its ``group_matcher`` groups them:
    the stem first, the head (and what timm groups with it) last. ``coarse`` groups whole stages
    (ResNet's layer1..4), else single blocks (for layer-wise learning-rate decay)."""
    from timm.models import group_parameters

    groups = group_parameters(model, model.group_matcher(coarse=coarse))
    return [groups[index] for index in sorted(groups)]


def freeze_presets(name: str, model: nn.Module) -> dict[str, tuple[str, ...]]:
    """``early`` (the first half of the stages between the stem and the head) and ``middle`` (the
    middle half), the protocol's rule for ResNet18 applied to the model's own stages, as the fewest
    module names that cover their parameters."""
    try:
        inner = _stage_groups(model)[1:-1]
    except NotImplementedError:  # the few timm models without a group_matcher: no stages known
        return {}
    if not inner:
        return {}
    half, quarter = max(1, len(inner) // 2), len(inner) // 4
    return {"early": covering_names(model, [n for group in inner[:half] for n in group]),
            "middle": covering_names(model, [n for group in inner[quarter:quarter + half] for n in group])}


def covering_names(model: nn.Module, parameter_names: list[str]) -> tuple[str, ...]:
    """The fewest dotted names (modules, or parameters) that cover exactly ``parameter_names``."""
    wanted = set(parameter_names)

    def cover(module: nn.Module, prefix: str) -> list[str]:
        names = [f"{prefix}{name}" for name, _ in module.named_parameters()]
        if names and all(name in wanted for name in names):
            return [prefix.rstrip(".")] if prefix else names
        out = [f"{prefix}{name}" for name, _ in module.named_parameters(recurse=False) if f"{prefix}{name}" in wanted]
        for child_name, child in module.named_children():
            out += cover(child, f"{prefix}{child_name}.")
        return out

    return tuple(cover(model, ""))

