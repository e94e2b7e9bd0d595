"""Exclusive file locks between processes (runs of one sweep, jobs of a cluster array), through
the ``filelock`` package: a lock is an ``flock`` on a file, which the kernel drops when its
process dies, so a killed holder never leaves it taken.

``file_lock`` waits its turn (the data root, the image cache); ``lock_if_free`` never waits.
``run_folder_lock`` does not wait either: a run folder holds one run, and a second process that
finds its lock taken is refused with one line that names the holder. The holder writes that line
into a file of its own beside the lock (RUN_LOCK_FILE; filelock before 3.29.8 truncates its lock
file at every attempt, a refused one's too). On NFS, Linux carries an ``flock`` between the nodes
as a lock on the whole file (NFSv4 itself, NFSv3 through lockd), so runs of one sweep on several
nodes that share a folder exclude each other too; such a lock belongs to a process, and a process
that closed a second descriptor of the lock file would drop it, so only filelock opens that file.
"""

from __future__ import annotations

import errno
import logging
import os
import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime, timezone
from pathlib import Path

from filelock import FileLock, Timeout

from transferlab.errors import TransferlabError

log = logging.getLogger(__name__)

# Hidden, and not *.tmp (the leftover temporaries a run removes when it starts); the report reads
# only run.json. The holder's line: it stays in the folder, empty once its holder ended cleanly.
RUN_LOCK_FILE = ".transferlab-run.lock"
RUN_FLOCK_FILE = ".transferlab-run.flock"  # the lock itself (empty)
HOLDER_WAIT_SECONDS = 1.0  # how long a refused process waits for the holder to write its name


class RunFolderBusy(TransferlabError):
    """Another process holds the run folder; nothing was written to it."""


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the block; waits while another
    process holds it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(path):
        yield


@contextmanager
def cache_lock(path: Path, what: str) -> Iterator[bool]:
    """Hold the lock on ``path`` (a disk cache's, created if missing) for the block and yield
    True, waiting while another process holds it; the wait is announced once, naming ``what`` is
    awaited and the process that holds it (each holder writes its line beside the lock, in
    ``<lock>.holder``, as a run folder's holder does, and removes it before it lets go). Yields False, holding nothing, where the
    lock file cannot be made or opened (a read-only file system, a folder of another user): the
    caller may then read a cache that is whole, and nothing else."""
    path = Path(path)
    holder = path.with_name(f"{path.name}.holder")
    lock = FileLock(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            log.warning("%s is in use by %s; waiting for it", what, _holder(holder))
            lock.acquire()
    except OSError as error:
        if error.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise
        locked = False
    else:
        locked = True
    if not locked:
        yield False
        return
    try:
        try:
            _write_holder(holder, f"{holder_line()}\n")
        except OSError:
            pass  # a waiting process then names no holder, and waits all the same
        yield True
    finally:
        with suppress(OSError):
            holder.unlink(missing_ok=True)  # while the lock is still ours: nobody else writes it now
        lock.release()


@contextmanager
def lock_if_free(path: Path) -> Iterator[bool]:
    """Hold the lock on ``path`` for the block when no process holds it (yields True); never waits
    (yields False when it is taken)."""
    lock = FileLock(path, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


def holder_line() -> str:
    """How this process names itself in a lock file it holds."""
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return f"pid {os.getpid()} on host {platform.node()} (started {started})"


@contextmanager
def run_folder_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir`` (an existing folder) for this process during the block, or raise
    RunFolderBusy naming the process that holds it. RUN_LOCK_FILE records the holder while it
    holds the lock; a holder that was killed leaves its line behind but not its lock."""
    run_dir = Path(run_dir)
    lock, holder = FileLock(run_dir / RUN_FLOCK_FILE, timeout=0), run_dir / RUN_LOCK_FILE
    try:
        lock.acquire()
    except Timeout:
        raise RunFolderBusy(f"{run_dir} is in use by {_holder(holder)}; wait for it to finish or stop it") from None
    except OSError as error:  # ENOLCK: an NFS mount without lockd, ...
        raise TransferlabError(f"cannot lock {run_dir / RUN_FLOCK_FILE} ({error.strerror or error}); runs need a "
                               "file system with locks (on NFS: lockd running, or NFSv4)") from error
    try:
        _write_holder(holder, f"{holder_line()}\n")
        yield
    finally:
        try:
            _write_holder(holder, "")
        except OSError:
            pass  # the line stays behind, as after a kill; the lock goes with the release all the same
        lock.release()


def _write_holder(path: Path, line: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, line.encode(), 0)
        os.fsync(descriptor)  # on NFS, what another node reads comes from the server
    finally:
        os.close(descriptor)


def _holder(path: Path) -> str:
    """The line the lock's holder wrote; it writes it just after taking the lock, so wait a moment
    for it."""
    deadline = time.monotonic() + HOLDER_WAIT_SECONDS
    while True:
        try:
            line = path.read_text(errors="replace").strip()
        except FileNotFoundError:
            line = ""
        if line or time.monotonic() > deadline:
            return line or "another process (which has not written its pid and host)"
        time.sleep(0.05)
