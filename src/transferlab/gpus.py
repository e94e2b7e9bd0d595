"""One GPU per run on a machine with several: each run claims the first GPU that no other
transferlab run on this machine holds, through an exclusive lock file per GPU, and keeps it until
it ends. Parallel launchers (joblib, submitit_local) need nothing more than one job per GPU.
Locks die with their process, so a killed run never leaves a GPU claimed."""

from __future__ import annotations

import fcntl
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)


def default_lock_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"transferlab-gpu-locks-{os.getuid()}"


def try_claim(count: int, lock_dir: Path) -> tuple[int, IO] | None:
    """(index, open lock file) of the first of ``count`` GPUs not claimed by another process, or None."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        handle = open(lock_dir / f"gpu{index}.lock", "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        return index, handle
    return None


@contextmanager
def claimed_gpu(count: int, lock_dir: Path | None = None, poll_seconds: float = 5.0) -> Iterator[int]:
    """The index of a GPU this process holds for the duration of the block; waits while all
    ``count`` GPUs are held by other runs."""
    lock_dir = lock_dir or default_lock_dir()
    claim = try_claim(count, lock_dir)
    if claim is None:
        log.info("all %d GPUs are held by other transferlab runs; waiting for one to finish", count)
    while claim is None:
        time.sleep(poll_seconds)
        claim = try_claim(count, lock_dir)
    index, handle = claim
    try:
        yield index
    finally:
        handle.close()  # closing releases the lock
