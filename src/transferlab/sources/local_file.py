"""The local-file source: ``model.weights=FILE``, a state_dict (``.pth``/``.pt`` or ``.safetensors``)
loaded into the architecture of either library (the library's ``load_file``: timm's applies its
checkpoint filter). What every file shares lives here: the run.json beside it (the classes it was
trained on), whether its head may be kept, the line the log says about the head, the report's label
and the file's SHA-256.

A file's head loads with the rest only when it has the data's number of classes and, where they are
known (the ``classes`` of the run.json beside the file), the data's class names in the data's order;
otherwise, or with ``model.new_head=true``, everything else loads and a fresh head starts
(``Init.new_head``; ``Init.head`` says why). Any other mismatch is an error that names the keys.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from transferlab.diskcache import file_sha256
from transferlab.errors import ConfigError
from transferlab.records import shorten
from transferlab.sources.base import HEAD_KEPT, HEAD_MISFIT, HEAD_MISSING, HEAD_REFUSED, Init, ModelSource


def build(source: ModelSource, name: str, weights: str, num_classes: int, image_size: int | None,
          digest_memo: Path | None, classes: Sequence[str] | None, new_head: bool,
          weights_name: str | None) -> tuple[nn.Module, Init]:
    """``source``'s architecture ``name`` loaded from the file ``weights``; see the module's docstring."""
    path = Path(weights)
    trained_on = weights_record(path)
    refusal = head_refusal(trained_on, classes, new_head)
    model, state = source.load_file(name, path, num_classes, image_size, keep_head=refusal is None)
    return model, Init(f"file:{weights}", "file", None, state != HEAD_KEPT, file_sha256(path, digest_memo),
                       head_reason(state, refusal, num_classes, trained_on), weights_label(path, weights_name, trained_on))


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


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The state_dict in a ``.pth``/``.pt`` torch file or a ``.safetensors`` file: the file itself, or
    its 'model' / 'state_dict' entry (the layout of torchvision's reference checkpoints and of
    transferlab's). A ConfigError naming the file when there is none, or it cannot load safely."""
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
    if isinstance(loaded, Mapping):
        for key in ("model", "state_dict"):
            if isinstance(loaded.get(key), Mapping):
                loaded = loaded[key]
                break
        if loaded and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in loaded.items()):
            return dict(loaded)
    raise ConfigError(f"model.weights={str(path)!r} is not a state_dict (a mapping of parameter names to tensors)")


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
