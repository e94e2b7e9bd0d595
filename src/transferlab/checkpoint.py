"""Epoch-end checkpoints: everything needed to continue a run as if it had never stopped.

A checkpoint holds the model, optimizer and grad-scaler states, the RNG states, the epochs done
and their history, and the config that made it. It is written atomically and loaded with
``weights_only=True``; a file that is corrupt, foreign, or from another config is refused before
anything is loaded into the model or optimizer.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from transferlab.errors import TransferlabError
from transferlab.models import load_state_dict_strict

CHECKPOINT_FILE = "checkpoint.pt"
FORMAT = "transferlab-checkpoint-1"


class CheckpointError(TransferlabError):
    """A checkpoint that cannot be used; nothing was loaded from it."""


@dataclass
class Checkpoint:
    epoch: int  # epochs completed
    history: list[dict[str, Any]]
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scaler: dict[str, Any] | None
    rng: dict[str, Any]
    config: dict[str, Any]


def save_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scaler: torch.amp.GradScaler | None, epoch: int, history: list[dict[str, Any]],
                    config: dict[str, Any]) -> None:
    state = {
        "format": FORMAT,
        "epoch": epoch,
        "history": history,
        "model": {k: v.detach().to("cpu") for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": _rng_state(),
        "config": config,
    }
    temporary = path.with_name(f".{path.name}.tmp")
    torch.save(state, temporary)
    os.replace(temporary, path)


def load_checkpoint(path: Path) -> Checkpoint:
    """The checkpoint at ``path``, or a CheckpointError that says why it cannot be used."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated, not a torch file, or holding objects that are not plain data
        raise CheckpointError(f"{path} is not a readable transferlab checkpoint ({type(error).__name__}: "
                              f"{str(error).splitlines()[0] if str(error) else ''}); delete it or pass resume=false") from error
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a transferlab checkpoint (no '{FORMAT}' format tag); "
                              "delete it or pass resume=false")
    missing = [k for k in ("epoch", "history", "model", "optimizer", "scaler", "rng", "config") if k not in state]
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)}; delete it or pass resume=false")
    return Checkpoint(**{k: state[k] for k in Checkpoint.__dataclass_fields__})


def restore(checkpoint: Checkpoint, model: nn.Module, optimizer: torch.optim.Optimizer,
            scaler: torch.amp.GradScaler | None, source: Path) -> None:
    """Load a checkpoint into a freshly built model and optimizer: all of it, or (on a mismatch)
    nothing."""
    groups = optimizer.state_dict()["param_groups"]
    saved_groups = checkpoint.optimizer.get("param_groups", [])
    if [len(g["params"]) for g in groups] != [len(g["params"]) for g in saved_groups]:
        raise CheckpointError(f"{source}: its optimizer state does not fit this run's trainable parameters")
    if (checkpoint.scaler is None) != (scaler is None):
        raise CheckpointError(f"{source}: it was written with another precision")
    load_state_dict_strict(model, checkpoint.model, f"checkpoint {source}")
    optimizer.load_state_dict(checkpoint.optimizer)
    if scaler is not None:
        scaler.load_state_dict(checkpoint.scaler)
    _set_rng_state(checkpoint.rng)


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(value):
    """random.getstate() is nested tuples; a round trip through torch.save keeps them, but be lenient."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value
