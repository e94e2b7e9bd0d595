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
``source_of(model)``, and a new library is one module and one line here.
"""

from __future__ import annotations

from torch import nn

from transferlab.sources import local_file, timm_source, torchvision_source
from transferlab.sources.base import Init, ModelSource
from transferlab.sources.local_file import load_state_dict_strict
from transferlab.sources.torchvision_source import MODELS

# In order: the first prefix that model.name starts with wins; "" (torchvision) takes the rest.
SOURCES: dict[str, ModelSource] = {timm_source.PREFIX: timm_source, "": torchvision_source}

__all__ = ["MODELS", "SOURCES", "Init", "ModelSource", "load_state_dict_strict", "local_file", "source_for",
           "source_of"]


def source_for(model_name: str) -> ModelSource:
    """The source that builds ``model.name=model_name``."""
    return next(source for prefix, source in SOURCES.items() if model_name.startswith(prefix))


def source_of(model: nn.Module) -> ModelSource:
    """The source that built ``model`` (unadapted), for callers that hold a model but not its name."""
    return next(source for source in SOURCES.values() if source.owns_module(model))
