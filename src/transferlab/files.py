"""Writing files so that a reader never sees half of one: every file transferlab writes (run.json,
metrics.csv, the samples, checkpoints and their digests, model.pt, the image cache's files, the
report) goes through ``write_atomic``, which writes a temporary file beside the target, fsyncs it
and renames it over the target.

A temporary is named ``.<name>.<random>.tmp``: hidden, and found by ``leftover_temporaries`` (a
write that a kill cut short leaves one, which can be as big as a checkpoint). ``disk_full`` is the
one test of whether a failed write ran out of space.

This module must not import torch: the report writes its files with it."""

from __future__ import annotations

import errno
import logging
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Union

log = logging.getLogger(__name__)
TEMPORARY_SUFFIX = ".tmp"
# How a full-disk line ends; a run that completed anyway has nothing to resume.
RESUME_ADVICE = "; free some space and run the same command again to resume"
# A writer's output: text (written as UTF-8), bytes, or a function that writes into a binary file.
Content = Union[str, bytes, Callable[[IO[bytes]], None]]


def file_mode() -> int:
    """0666 less the process's umask: the mode ``open()`` gives a new file. (os.umask can only be
    read by setting it; it is set back at once.)"""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def temporary_path(path: Path) -> Path:
    """A new name for a temporary file beside ``path``: ``.<name>.<random>.tmp``."""
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}{TEMPORARY_SUFFIX}")


def write_atomic(path: Path, content: Content, before_rename: Callable[[], None] | None = None) -> None:
    """``content`` into ``path`` through a temporary file beside it that is fsynced and renamed
    over it. ``before_rename`` runs once the file is on disk, before the rename (a checkpoint's
    digest is recorded there). On any failure the temporary file is removed and ``path`` is as it
    was. The file gets 0666 less the umask. An OSError names ``path``, not the temporary file; any
    other error (torch.save's, Ctrl-C) is raised as it is."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = temporary_path(path)
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError as error:
        raise _naming(error, path) from error
    try:
        with os.fdopen(descriptor, "wb") as handle:
            if callable(content):
                content(handle)
            else:
                handle.write(content.encode("utf-8") if isinstance(content, str) else content)
            handle.flush()
            os.fchmod(handle.fileno(), file_mode())
            os.fsync(handle.fileno())
        if before_rename is not None:
            before_rename()
        _publish(temporary, path)
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        if isinstance(error, OSError) and error.filename in (None, str(temporary)):
            raise _naming(error, path) from error
        raise


def _publish(temporary: Path, path: Path) -> None:
    os.replace(temporary, path)


def _naming(error: OSError, path: Path) -> OSError:
    """``error`` as the same kind of OSError (PermissionError, ENOSPC...) about ``path``."""
    return OSError(error.errno, error.strerror or str(error), str(path))


def leftover_temporaries(folder: Path) -> Iterator[Path]:
    """The temporary files of writes into ``folder`` and its hidden sub-folders (a run's .hydra/)
    that never finished: hidden files named ``*.tmp``."""
    folder = Path(folder)
    for path in folder.glob(f".*{TEMPORARY_SUFFIX}"):
        if path.is_file() or path.is_symlink():
            yield path
    for sub in folder.glob(".*"):
        if sub.is_dir() and not sub.is_symlink():
            yield from leftover_temporaries(sub)


def remove_leftover_temporaries(folder: Path) -> None:
    """Remove the leftover temporaries in ``folder`` (a run folder, when its run starts): nothing
    reads them, and they may be what fills the disk."""
    for leftover in list(leftover_temporaries(folder)):
        log.info("removing %s, left by an earlier write that did not finish", leftover)
        leftover.unlink(missing_ok=True)


def disk_full(error: BaseException, folder: Path, needed_bytes: int | None = None) -> bool:
    """Whether writing into ``folder`` failed for want of space: the OS said so (ENOSPC, or a quota:
    EDQUOT), or, where the write needs about ``needed_bytes``, fewer than that are free (torch
    reports a full disk as a RuntimeError of its zip writer, "unexpected pos ...")."""
    if getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
        return True
    if needed_bytes is None:
        return False
    free = free_bytes(folder)
    return free is not None and free < needed_bytes


def free_bytes(folder: Path) -> int | None:
    """The bytes free for this user in ``folder``'s file system; None when that cannot be read."""
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def write_failure(path: Path, needed_bytes: int, error: BaseException) -> str:
    """One line on why ``path`` could not be written: a full disk (where, how much the file needs,
    how much is free), or the OS's or torch's own reason."""
    if disk_full(error, path.parent, needed_bytes):
        free = free_bytes(path.parent)
        free_text = f"{_mib(free)} free" if free is not None else "free space unknown"
        return f"the disk is full: {path} needs about {_mib(needed_bytes)} and {path.parent} has {free_text}{RESUME_ADVICE}"
    reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return f"could not write {path} ({type(error).__name__}: {reason})"


def _mib(count: int) -> str:
    return f"{count / 2**20:,.1f} MiB"
