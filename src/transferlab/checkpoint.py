"""Epoch-end checkpoints: everything needed to continue a run as if it had never stopped.

A checkpoint holds the model, optimizer, learning-rate scheduler and grad-scaler states, the RNG states, the epochs done
and their history, and the config that made it. It is loaded with ``weights_only=True``; a file
that is corrupt, foreign, or from another config is refused before anything is loaded into the
model or optimizer.

torch.load checks no checksum, so damage inside a tensor would load and train on. The SHA-256 of
each checkpoint's bytes is computed as they are written and recorded beside it, in
checkpoint.pt.sha256 (DIGEST_FILE), which lands before the checkpoint is renamed into place and
also names the digest of the checkpoint it replaces: a kill between the two renames leaves that
older checkpoint, which still verifies. ``verify_digest`` checks a checkpoint before a resume.

Writing one costs the training loop only a copy of the state into host memory: a background
thread (CheckpointWriter) writes the copy to a temporary file, fsyncs it and renames it over the
last checkpoint while the next epoch trains, so the file on disk is always a whole checkpoint. A
write that fails (a full disk, any OS error) removes its temporary file, keeps the checkpoint
before it, and reaches the training loop as a CheckpointWriteError at its next save or at the end.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from transferlab.errors import TransferlabError
from transferlab.files import RESUME_ADVICE, write_atomic, write_failure  # noqa: F401 (callbacks and run.py use them)
from transferlab.sources import load_state_dict_strict

CHECKPOINT_FILE = "checkpoint.pt"
DIGEST_FILE = "checkpoint.pt.sha256"  # {"sha256": hex digest, "replaces_sha256": hex digest or null}
FORMAT = "transferlab-checkpoint-1"
READ_CHUNK_BYTES = 2**20


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
    scheduler: dict[str, Any] | None = None  # None: the run has no scheduler (optim.schedule=constant, no warm-up)
    data_digest: str | None = None  # the images it trained on (data_digest); None: written before digests were kept


def checkpoint_state(model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None,
                     epoch: int, history: list[dict[str, Any]], config: dict[str, Any],
                     reuse: dict[str, Any] | None = None,
                     scheduler: torch.optim.lr_scheduler.LRScheduler | None = None) -> dict[str, Any]:
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
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "rng": _rng_state(),
        "config": config,
    }
    return host_copy(state, reuse)


THUMBNAIL_SIDE = 16  # data_digest hashes each image at about this many pixels a side


def data_digest(images: torch.Tensor, labels: torch.Tensor, classes: Sequence[str]) -> str:
    """The SHA-256 (hex) of a run's training images: the class names, every label and each image
    subsampled to about THUMBNAIL_SIDE x THUMBNAIL_SIDE pixels, in order. A checkpoint keeps it, so
    that a resume on other images (added to or removed from an image folder, another subset) is
    refused; hashing thumbnails keeps it cheap (about 0.8 KB an image) where a folder's stored
    images are GBs."""
    sha256 = hashlib.sha256(json.dumps(list(classes)).encode())
    sha256.update(labels.cpu().to(torch.int64).contiguous().numpy().tobytes())
    if len(images):
        step = max(1, images.shape[-1] // THUMBNAIL_SIDE)
        sha256.update(images[..., ::step, ::step].cpu().contiguous().numpy().tobytes())
    return sha256.hexdigest()


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


def save_atomically(state: Any, path: Path, before_rename: Callable[[str], None] | None = None) -> str:
    """``torch.save`` through files.write_atomic (a temporary file, fsynced, renamed over ``path``),
    so ``path`` always holds a whole file; the SHA-256 (hex) of its bytes, hashed as they are
    written. ``before_rename`` gets the digest once the file is on disk and before it is renamed.
    On failure the temporary file is removed, ``path`` is untouched, and CheckpointWriteError says
    why."""
    sha256 = hashlib.sha256()

    def write(handle) -> None:
        torch.save(state, _HashingFile(handle, sha256))

    try:
        write_atomic(path, write, None if before_rename is None else lambda: before_rename(sha256.hexdigest()))
        return sha256.hexdigest()
    except CheckpointWriteError:
        raise
    except Exception as error:  # Ctrl-C goes through as it is
        # torch reports a full disk as a RuntimeError of its zip writer ("unexpected pos ..."), so
        # the free space decides what to call it.
        raise CheckpointWriteError(write_failure(path, tensor_bytes(state), error)) from error


class _HashingFile:
    """A binary file that hashes what is written through it (torch.save writes through ``write``)."""

    def __init__(self, handle, sha256):
        self.handle = handle
        self.sha256 = sha256

    def write(self, data) -> int:
        self.sha256.update(data)
        return self.handle.write(data)

    def flush(self) -> None:
        self.handle.flush()


def digest_path(path: Path) -> Path:
    return path.with_name(f"{path.name}.sha256")


def write_digest(path: Path, digest: str, replaces: str | None) -> None:
    """Record ``digest`` as that of the checkpoint about to be renamed to ``path``, and ``replaces``
    as that of the checkpoint now there (which a kill before the rename leaves)."""
    write_atomic(digest_path(path), json.dumps({"sha256": digest, "replaces_sha256": replaces}) + "\n")


def file_sha256(path: Path) -> str:
    sha256 = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(READ_CHUNK_BYTES):
            sha256.update(chunk)
    return sha256.hexdigest()


def verify_digest(path: Path) -> str | None:
    """The SHA-256 of the checkpoint at ``path``, once it matches a digest recorded when it was
    written; None when no digest was recorded (written by a transferlab before digests were
    recorded; not verified). CheckpointError when it matches none."""
    recorded = digest_path(path)
    if not recorded.exists():
        return None
    try:
        entry = json.loads(recorded.read_text(encoding="utf-8"))
        digests = {entry["sha256"], entry["replaces_sha256"]} - {None}
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"{recorded} is not readable ({type(error).__name__}), so {path} cannot be verified; "
                              "pass resume=false to start over") from error
    digest = file_sha256(path)
    if digest not in digests:
        raise CheckpointError(f"{path} does not match the digest recorded when it was written (corrupt?); "
                              "pass resume=false to start over")
    return digest


def remove_checkpoint(path: Path) -> None:
    """The checkpoint at ``path`` and its digest file, where they exist."""
    path.unlink(missing_ok=True)
    digest_path(path).unlink(missing_ok=True)


def tensor_bytes(value: Any) -> int:
    """The bytes of the tensors in ``value`` (nested dicts, lists, tuples): about its size on disk."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(tensor_bytes(entry) for entry in value.values())
    if isinstance(value, (list, tuple)):
        return sum(tensor_bytes(entry) for entry in value)
    return 0


class CheckpointWriter:
    """Epoch-end checkpoints written by a background thread while the next epoch trains.

    ``save`` waits for the write before it (long done, unless writing is slower than an epoch),
    raises that write's error, copies the state into host memory (the only part on the training's
    critical path) and hands the copy to the thread, which writes it with ``save_atomically`` and
    then calls ``after`` (the run rewrites run.json there, so run.json never counts an epoch that a
    resume would redo). ``finish`` waits for the last write and raises its error. ``seconds`` is
    what the run paid: copying, and waiting for writes. ``saved_history`` is the history of the
    last checkpoint on disk, ``digest`` its SHA-256 (None: no checkpoint, or not known);
    ``data_digest`` (transferlab.checkpoint.data_digest) goes into every checkpoint. ``save`` writes
    each one, as ``save_atomically`` does (a test hands in one that fails where it says)."""

    def __init__(self, path: Path, saved_history: list[dict[str, Any]], seconds: float = 0.0,
                 digest: str | None = None, data_digest: str | None = None,
                 save: Callable[..., str] = save_atomically):
        self.path = path
        self._save = save
        self.data_digest = data_digest  # kept in every checkpoint: the images the run trains on
        self.saved_history = list(saved_history)
        self.seconds = seconds
        self.digest = digest
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint-writer")
        self._pending: Future | None = None
        self._last_state: dict[str, Any] | None = None  # written; its tensors are reused by the next copy

    def save(self, model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None,
             epoch: int, history: list[dict[str, Any]], config: dict[str, Any],
             after: Callable[[], None] | None = None,
             scheduler: torch.optim.lr_scheduler.LRScheduler | None = None) -> None:
        start = time.perf_counter()
        try:
            self._wait()
            state = checkpoint_state(model, optimizer, scaler, epoch, history, config, reuse=self._last_state,
                                     scheduler=scheduler)
            state["checkpoint_seconds"] = self.seconds + time.perf_counter() - start
            state["data_digest"] = self.data_digest
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
        def record_digest(digest: str) -> None:
            try:
                write_digest(self.path, digest, replaces=self.digest)
            except OSError as error:
                raise CheckpointWriteError(write_failure(digest_path(self.path), 4096, error)) from error

        self.digest = self._save(state, self.path, before_rename=record_digest)
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
    epoch, history = state["epoch"], state["history"]
    listed = [entry.get("epoch") if isinstance(entry, dict) else None for entry in history] \
        if isinstance(history, list) else None
    if type(epoch) is not int or listed != list(range(first_recorded_epoch(state["config"]), epoch + 1)):
        held = "no list" if listed is None else f"epochs {listed[:10]}{' ...' if len(listed) > 10 else ''}"
        raise CheckpointError(f"{path} says it was written after epoch {epoch!r}, but its history holds {held}; "
                              "delete it or pass resume=false")
    return Checkpoint(**{k: state[k] for k in Checkpoint.__dataclass_fields__ if k in state})


def first_recorded_epoch(config: Any) -> int:
    """The epoch of a run's first history entry: 1, except for a linear probe fitted once by L-BFGS
    (freeze.probe=lbfgs), whose one entry stands for the probe's epochs (those before LP-FT's switch,
    or all of them)."""
    freeze = config.get("freeze", {}) if isinstance(config, dict) else {}
    if isinstance(freeze, dict) and freeze.get("cached_features") and freeze.get("probe") == "lbfgs":
        last = freeze.get("unfreeze_at_epoch") or config.get("train", {}).get("epochs")
        return last if type(last) is int and last >= 1 else 1
    return 1


def restore(checkpoint: Checkpoint, model: nn.Module, optimizer: torch.optim.Optimizer,
            scaler: torch.amp.GradScaler | None, source: Path,
            scheduler: torch.optim.lr_scheduler.LRScheduler | None = None) -> None:
    """Load a checkpoint into a freshly built model and optimizer: all of it, or (on a mismatch)
    nothing."""
    groups = optimizer.state_dict()["param_groups"]
    saved_groups = checkpoint.optimizer.get("param_groups", [])
    if [len(g["params"]) for g in groups] != [len(g["params"]) for g in saved_groups]:
        raise CheckpointError(f"{source}: its optimizer state does not fit this run's trainable parameters")
    if (checkpoint.scaler is None) != (scaler is None):
        raise CheckpointError(f"{source}: it was written with another precision")
    if (checkpoint.scheduler is None) != (scheduler is None):
        raise CheckpointError(f"{source}: it was written {'with' if scheduler is None else 'without'} a "
                              "learning-rate schedule, this run is not; delete it or pass resume=false")
    load_state_dict_strict(model, checkpoint.model, f"checkpoint {source}")
    optimizer.load_state_dict(checkpoint.optimizer)
    if scaler is not None:
        scaler.load_state_dict(checkpoint.scaler)
    if scheduler is not None:
        scheduler.load_state_dict(checkpoint.scheduler)
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


def other_thread_count(trained_with: dict[str, Any], resumed_with: dict[str, Any], device: str | None) -> str | None:
    """A warning for a CPU run resumed with another train.threads than its checkpoint's epochs were
    trained with (the configs of both, as dicts), else None. train.threads is not part of a run's
    identity (config.NOT_RESULT_KEYS), so the resume goes on; but the CPU's sums run in another order
    with another thread count, and the run no longer continues bit for bit (docs/performance.md)."""
    before, now = ((config.get("train") or {}).get("threads") for config in (trained_with, resumed_with))
    if before == now or not str(device).startswith("cpu"):
        return None
    shown = {None: "null (torch's default)"}
    return (f"resuming with train.threads={shown.get(now, now)}, but the checkpoint's epochs trained with "
            f"train.threads={shown.get(before, before)}: the CPU sums in another order with another thread count, so "
            f"the run does not continue bit for bit; resume with train.threads={'null' if before is None else before} "
            "for that")
