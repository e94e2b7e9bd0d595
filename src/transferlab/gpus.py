"""One GPU per run on a machine with several: each run claims the first GPU that no other
transferlab run on this machine holds, through an exclusive lock file per GPU (a ``filelock``
lock), and keeps it until it ends. Parallel launchers (joblib, submitit_local) need nothing more
than one job per GPU. Locks die with their process, so a killed run never leaves a GPU claimed.

A lock is named by the GPU's UUID, not its index (which CUDA_VISIBLE_DEVICES renumbers), and lives
in one folder that does not follow TMPDIR (which Slurm sets per job), so every run on the machine
agrees on which GPU a lock stands for."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from filelock import FileLock, Timeout

log = logging.getLogger(__name__)
LOCK_DIR_ENV = "TRANSFERLAB_GPU_LOCK_DIR"


def default_lock_dir() -> Path:
    """$TRANSFERLAB_GPU_LOCK_DIR, else /tmp/transferlab-gpu-locks-<uid> (never $TMPDIR)."""
    return Path(os.environ.get(LOCK_DIR_ENV) or f"/tmp/transferlab-gpu-locks-{os.getuid()}")


def visible_gpu_uuids() -> list[str]:
    """The UUIDs of the GPUs this process sees, by index."""
    return [str(torch.cuda.get_device_properties(index).uuid) for index in range(torch.cuda.device_count())]


def try_claim(uuids: Sequence[str], lock_dir: Path) -> tuple[int, FileLock] | None:
    """(index, held lock) of the first of the GPUs ``uuids`` (by index) that no other process
    claimed, or None."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    for index, uuid in enumerate(uuids):
        lock = FileLock(lock_dir / f"gpu-{uuid}.lock", timeout=0)
        try:
            lock.acquire()
        except Timeout:
            continue
        return index, lock
    return None


@contextmanager
def claimed_gpu(uuids: Sequence[str], lock_dir: Path | None = None, poll_seconds: float = 5.0) -> Iterator[int]:
    """The index of one of the GPUs ``uuids`` (by index) that this process holds for the duration
    of the block; waits while all are held by other runs."""
    lock_dir = lock_dir or default_lock_dir()
    claim = try_claim(uuids, lock_dir)
    if claim is None:
        log.info("all %d GPUs are held by other transferlab runs; waiting for one to finish", len(uuids))
    while claim is None:
        time.sleep(poll_seconds)
        claim = try_claim(uuids, lock_dir)
    index, lock = claim
    try:
        yield index
    finally:
        lock.release()
