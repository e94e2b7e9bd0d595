"""What every model source answers, and what a built model says of the weights it started from.

A source is a module (``torchvision_source``, ``timm_source``) with the functions of ``ModelSource``;
``transferlab.sources.SOURCES`` maps a ``model.name`` prefix to it. ``local_file`` loads a weights
file into either source's architecture through the source's ``load_file``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from torch import nn

# What became of a weights file's head: loaded with the rest, absent from the file, of another
# shape than the data's classes, or refused by the caller (other class names, model.new_head=true).
HEAD_KEPT, HEAD_MISSING, HEAD_MISFIT, HEAD_REFUSED = HEAD_STATES = ("kept", "missing", "misfit", "refused")

# prepare's fetcher of a file by torch.hub's convention: (model name, url, path) -> one line for the user
Fetch = Callable[[str, str, Path], str]


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


class ModelSource(Protocol):
    """The functions of a source module. ``name`` is the model.name as the user wrote it."""

    def check_name(self, name: str) -> None:
        """A ConfigError (with close matches) unless the source can build ``name``."""

    def owns_module(self, model: nn.Module) -> bool:
        """Whether ``model`` was built by this source (for callers that hold a model, not its name)."""

    def owns_weights(self, weights: str) -> bool:
        """Whether ``model.weights`` is the source's own kind (timm's ``local-dir:``), not a state_dict file."""

    def build(self, name: str, pretrained: bool, weights: str | None, num_classes: int, image_size: int | None,
              digest_memo: Path | None) -> tuple[nn.Module, Init]:
        """A ``num_classes``-way model from the source's pretrained weights, its own kind of weights, or at random."""

    def load_file(self, name: str, path: Path, num_classes: int, image_size: int | None,
                  keep_head: bool) -> tuple[nn.Module, str]:
        """A ``num_classes``-way model loaded from a state_dict file; what became of its head (HEAD_STATES)."""

    def heads(self, name: str, model: nn.Module) -> tuple[str, ...]:
        """The dotted names of the classifier head(s), the main one first."""

    def freeze_presets(self, name: str, model: nn.Module) -> Mapping[str, tuple[str, ...]]:
        """``early``/``middle`` -> the dotted modules they freeze; empty when the stages are unknown."""

    def min_image_size(self, name: str) -> int:
        """The smallest input side the architecture takes (0: a forward pass decides)."""

    def preprocessing(self, model: nn.Module) -> dict[str, Any] | None:
        """The model's own mean, std, interpolation and crop_pct for data.normalize=auto; None: ImageNet's."""

    def stages(self, model: nn.Module) -> list[list[str]] | None:
        """Parameter names by block, input to output, for layer-wise decay; None: schedules' generic rule."""

    def pretrained_state(self, name: str) -> dict[str, Any]:
        """The state_dict of the source's own pretrained weights of ``name``, head and all (ImageNet's
        classes): the source classifier that transferlab rank's NCE and LEEP read."""

    def weights_place(self, name: str, init: Init) -> tuple[str, str]:
        """(where the pretrained weights that ``init`` names live, how to get them again), for errors."""

    def prepare(self, name: str, fetch: Fetch) -> str:
        """`transferlab prepare`: the pretrained weights in place (``fetch`` downloads a torch.hub file)."""
