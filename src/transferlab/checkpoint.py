"""Epoch-end checkpoints: everything needed to continue a run as if it had never stopped.

A checkpoint holds the model, optimizer and grad-scaler states, the RNG states, the epochs done
and their history, and the config that made it. It is loaded with ``weights_only=True``; a file
that is corrupt, foreign, or from another config is refused before anything is loaded into the
model or optimizer.

Writing one costs the training loop only a copy of the state into host memory: a background
thread (CheckpointWriter) writes the copy to a temporary file, fsyncs it and renames it over the
last checkpoint while the next epoch trains, so the file on disk is always a whole checkpoint. A
write that fails (a full disk, any OS error) removes its temporary file, keeps the checkpoint
before it, and reaches the training loop as a CheckpointWriteError at its next save or at the end.
"""

from __future__ import annotations

import errno
import os
import random
import shutil
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
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


class CheckpointWriteError(TransferlabError):
    """A file could not be written (the message says why, and for a full disk how much it needs);
    the file it was to replace is intact."""


@dataclass
class Checkpoint:
    epoch: int  # epochs completed
    history: list[dict[str, Any]]
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scaler: dict[str, Any] | None
    rng: dict[str, Any]
    config: dict[str, Any]
    checkpoint_seconds: float = 0.0  # what the run had paid for its checkpoints when this one was taken


def checkpoint_state(model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None,
                     epoch: int, history: list[dict[str, Any]], config: dict[str, Any],
                     reuse: dict[str, Any] | None = None) -> dict[str, Any]:
    """The checkpoint of the run as it stands, copied into host memory (into the tensors of
    ``reuse``, an earlier state that is no longer needed, where they fit): the training may go on
    changing its tensors while the copy is written."""
    state = {
        "format": FORMAT,
        "epoch": epoch,
        "history": history,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": _rng_state(),
        "config": config,
    }
    return host_copy(state, reuse)


def host_copy(value: Any, reuse: Any = None) -> Any:
    """``value`` (dicts, lists and tuples of tensors and plain values) with every container and
    tensor copied into host memory; a tensor at the same place in ``reuse`` with the same shape and
    dtype is written over instead of allocating a new one (allocating a GiB costs more than copying
    it). Tensors on a GPU go to pinned memory with copies queued behind the training's work, and
    one synchronisation at the end waits for them all."""
    from_gpu = []

    def copy(item: Any, old: Any) -> Any:
        if isinstance(item, torch.Tensor):
            item = item.detach()
            gpu = item.device.type == "cuda"
            fits = isinstance(old, torch.Tensor) and old.shape == item.shape and old.dtype == item.dtype
            host = old if fits else torch.empty(item.shape, dtype=item.dtype, pin_memory=gpu)
            host.copy_(item, non_blocking=gpu)
            from_gpu.extend([host] if gpu else [])
            return host
        if isinstance(item, dict):
            old = old if isinstance(old, dict) else {}
            return {key: copy(entry, old.get(key)) for key, entry in item.items()}
        if isinstance(item, (list, tuple)):
            old = old if isinstance(old, (list, tuple)) and len(old) == len(item) else [None] * len(item)
            return type(item)(copy(entry, previous) for entry, previous in zip(item, old))
        return item  # numbers, strings, None: immutable

    copied = copy(value, reuse)
    if from_gpu:
        torch.cuda.synchronize()
    return copied


def save_atomically(state: Any, path: Path) -> None:
    """``torch.save`` through a temporary file that is fsynced and then renamed over ``path``, so
    ``path`` always holds a whole file. On failure the temporary file is removed, ``path`` is
    untouched, and CheckpointWriteError says why."""
    temporary = temporary_path(path)
    try:
        with open(temporary, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        if not isinstance(error, Exception):  # Ctrl-C
            raise
        # torch reports a full disk as a RuntimeError of its zip writer ("unexpected pos ..."), so
        # the free space decides what to call it.
        raise CheckpointWriteError(write_failure(path, tensor_bytes(state), error)) from error


def temporary_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


def write_failure(path: Path, needed_bytes: int, error: BaseException) -> str:
    """One line on why ``path`` could not be written: a full disk (where, how much the file needs,
    how much is free), or the OS's or torch's own reason."""
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        free = None
    full = getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or (free is not None and free < needed_bytes)
    if full:
        free_text = f"{_mib(free)} free" if free is not None else "free space unknown"
        return (f"the disk is full: {path} needs about {_mib(needed_bytes)} and {path.parent} has {free_text}; "
                "free some space and run the same command again to resume")
    reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return f"could not write {path} ({type(error).__name__}: {reason})"


def tensor_bytes(value: Any) -> int:
    """The bytes of the tensors in ``value`` (nested dicts, lists, tuples): about its size on disk."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(tensor_bytes(entry) for entry in value.values())
    if isinstance(value, (list, tuple)):
        return sum(tensor_bytes(entry) for entry in value)
    return 0


def _mib(count: int) -> str:
    return f"{count / 2**20:,.1f} MiB"


class CheckpointWriter:
    """Epoch-end checkpoints written by a background thread while the next epoch trains.

    ``save`` waits for the write before it (long done, unless writing is slower than an epoch),
    raises that write's error, copies the state into host memory (the only part on the training's
    critical path) and hands the copy to the thread, which writes it with ``save_atomically`` and
    then calls ``after`` (the run rewrites run.json there, so run.json never counts an epoch that a
    resume would redo). ``finish`` waits for the last write and raises its error. ``seconds`` is
    what the run paid: copying, and waiting for writes. ``saved_history`` is the history of the
    last checkpoint on disk."""

    def __init__(self, path: Path, saved_history: list[dict[str, Any]], seconds: float = 0.0):
        self.path = path
        self.saved_history = list(saved_history)
        self.seconds = seconds
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint-writer")
        self._pending: Future | None = None
        self._last_state: dict[str, Any] | None = None  # written; its tensors are reused by the next copy

    def save(self, model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None,
             epoch: int, history: list[dict[str, Any]], config: dict[str, Any],
             after: Callable[[], None] | None = None) -> None:
        start = time.perf_counter()
        try:
            self._wait()
            state = checkpoint_state(model, optimizer, scaler, epoch, history, config, reuse=self._last_state)
            state["checkpoint_seconds"] = self.seconds + time.perf_counter() - start
            self._last_state = state
            self._pending = self._thread.submit(self._write, state, after)
        finally:
            self.seconds += time.perf_counter() - start

    def finish(self) -> None:
        """Wait for the write in progress; raise its error."""
        start = time.perf_counter()
        try:
            self._wait()
        finally:
            self.seconds += time.perf_counter() - start

    def close(self) -> BaseException | None:
        """Let the write in progress land (a resume needs it) and stop the thread; the write's
        error, if it failed, is returned rather than raised."""
        try:
            self.finish()
            return None
        except Exception as error:
            return error
        finally:
            self._thread.shutdown(wait=True)

    def _write(self, state: dict[str, Any], after: Callable[[], None] | None) -> None:
        save_atomically(state, self.path)
        self.saved_history = state["history"]
        if after is not None:
            after()

    def _wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()


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
    return Checkpoint(**{k: state[k] for k in Checkpoint.__dataclass_fields__ if k in state})


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
