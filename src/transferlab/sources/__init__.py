"""Model sources as a table: which library builds a ``model.name``, and everything that depends on it.

    SOURCES = {"timm/": timm_source, "": torchvision_source}   # model.name prefix -> source

Each source is a module with the functions of ``base.ModelSource``: check a name, build (its own
pretrained weights, its own kind of ``model.weights``, or random), load a state_dict file, name the
head(s), map the freeze presets onto its stages, the minimum image size, its preprocessing for
``data.normalize=auto``, its blocks for layer-wise decay, where its weights live, and `transferlab
prepare`. The run's record of the weights (``base.Init``: source, tag, SHA-256) comes from the
source that loaded them. ``local_file`` is the third source, of weights rather than architectures:
``model.weights=FILE`` loads into the architecture of whichever library ``model.name`` names.

Nothing outside this package asks "is this a timm model?": it asks ``source_for(name)`` or
``source_of(model)``, and a new library is one module, one line here and its prefix in
``model_names.LIBRARIES`` (what composition and the report read without torch; a test keeps the two
in step).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from torch import nn

from transferlab.records import shorten
from transferlab.sources import local_file, timm_source, torchvision_source
from transferlab.sources.base import Init, ModelSource
from transferlab.sources.local_file import load_state_dict_strict, read_state_dict
from transferlab.sources.torchvision_source import MODELS

# The longest prefix that model.name starts with wins: "" (torchvision) takes every name no other claims.
SOURCES: dict[str, ModelSource] = {timm_source.PREFIX: timm_source, "": torchvision_source}

__all__ = ["MODELS", "SOURCES", "Init", "ModelSource", "build", "load_state_dict_strict", "read_state_dict",
           "source_for", "source_of"]


def _longest_prefix_first() -> list[str]:
    return sorted(SOURCES, key=len, reverse=True)


def source_for(model_name: str) -> ModelSource:
    """The source that builds ``model.name=model_name``."""
    return SOURCES[next(prefix for prefix in _longest_prefix_first() if model_name.startswith(prefix))]


def source_of(model: nn.Module) -> ModelSource:
    """The source that built ``model`` (unadapted), for callers that hold a model but not its name:
    the first that owns it, torchvision's (which owns every model) last."""
    return next(SOURCES[prefix] for prefix in _longest_prefix_first() if SOURCES[prefix].owns_module(model))


def build(name: str, pretrained: bool, weights: str | None, num_classes: int, image_size: int | None,
          digest_memo: Path | None, classes: Sequence[str] | None, new_head: bool,
          weights_name: str | None) -> tuple[nn.Module, Init]:
    """``name`` with a ``num_classes``-way head from its source: a state_dict file (``weights`` that
    is not the source's own kind) through the local-file source, else the source's own weights,
    its ``local-dir:`` folder or random ones (see models.build_model_with_init)."""
    source = source_for(name)
    source.check_name(name)
    if weights is not None and not source.owns_weights(weights):
        return local_file.build(source, name, weights, num_classes, image_size, digest_memo, classes, new_head,
                                weights_name)
    model, init = source.build(name, pretrained, weights, num_classes, image_size, digest_memo)
    return model, replace(init, name=shorten(weights_name) if weights_name and weights is not None else None)
