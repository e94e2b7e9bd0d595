"""Exclusive file locks between processes (runs of one sweep, jobs of a cluster array): a lock dies
with its process, so a killed holder never leaves it taken.

``file_lock`` waits its turn (the data root, the image cache). ``run_folder_lock`` does not wait: a
run folder holds one run, and a second process that finds its lock taken is refused with one line
that names the holder. It is a POSIX record lock (``fcntl.lockf``), which the kernel drops when the
holding process dies and which NFS carries between the nodes of a cluster (lockd for NFSv3, the
protocol itself for NFSv4), so runs of one sweep on several nodes that share a folder exclude each
other too. POSIX locks belong to a process, not to an open file: a process that opened and closed
the lock file a second time while it held the lock would drop it, so only this module opens it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from transferlab.errors import TransferlabError

# Hidden, and not *.tmp (the leftover temporaries a run removes when it starts); the report reads
# only run.json. It stays in the folder, empty once its holder ended cleanly.
RUN_LOCK_FILE = ".transferlab-run.lock"
HOLDER_WAIT_SECONDS = 1.0  # how long a refused process waits for the holder to write its name


class RunFolderBusy(TransferlabError):
    """Another process holds the run folder; nothing was written to it."""


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the block; waits while another
    process holds it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def holder_line() -> str:
    """How this process names itself in a lock file it holds."""
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return f"pid {os.getpid()} on host {platform.node()} (started {started})"


@contextmanager
def run_folder_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir`` (an existing folder) for this process during the block, or raise
    RunFolderBusy naming the process that holds it. The lock file records the holder while it
    holds it; a holder that was killed leaves its line behind but not its lock."""
    run_dir = Path(run_dir)
    path = run_dir / RUN_LOCK_FILE
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.lockf(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        try:
            if error.errno not in (errno.EACCES, errno.EAGAIN):  # ENOLCK: an NFS mount without lockd, ...
                raise TransferlabError(f"cannot lock {path} ({os.strerror(error.errno)}); runs need a file system "
                                       "with POSIX locks (on NFS: lockd running, or NFSv4)") from error
            raise RunFolderBusy(f"{run_dir} is in use by {_holder(descriptor)}; wait for it to finish or stop "
                                "it") from None
        finally:
            os.close(descriptor)
    try:
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{holder_line()}\n".encode(), 0)
        os.fsync(descriptor)  # on NFS, what another node reads comes from the server
        yield
    finally:
        try:
            os.ftruncate(descriptor, 0)
        except OSError:
            pass  # the line stays behind, as after a kill; the lock goes with the close all the same
        os.close(descriptor)


def _holder(descriptor: int) -> str:
    """The line the lock's holder wrote; it writes it just after taking the lock, so wait a moment
    for it."""
    deadline = time.monotonic() + HOLDER_WAIT_SECONDS
    while True:
        line = os.pread(descriptor, 4096, 0).decode(errors="replace").strip()
        if line or time.monotonic() > deadline:
            return line or "another process (which has not written its pid and host)"
        time.sleep(0.05)
