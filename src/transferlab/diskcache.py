"""One disk cache: a folder per key, built once under a lock, verified at every opening.

transferlab keeps two caches on disk, the decoded images of data=imagefolder (data/cache.py) and the
features of cached linear probes (probe.py), and this module is the mechanism of both. The caches
of one kind live in ``<cache dir>/<kind>/`` (``imagefolder``, ``features``): one folder per key (24
hex digits, a digest of everything its content depends on), beside its lock file ``<key>.lock``,
holding .npy arrays and ``about.json``, which describes them and records the SHA-256 of each.

``DiskCache.open(key, arrays=..., build=..., load=...)``:

- removes the temporaries that no process is writing (``.<key>.<pid>.tmp/``, left by a build
  killed with SIGKILL or by a power cut): a temporary is only written under its key's lock, so
  one whose lock is free is stale, whatever machine or process made it;
- takes the key's lock (a wait names who holds it). Where it cannot be taken (a read-only file
  system, a folder of another user), a whole cache is read without it; anything else is one
  line naming data.cache_dir;
- checks the cache: about.json, each array's shape, dtype and length (``arrays(about)``, read
  from the .npy headers), the caller's ``check`` of the content, and each array's SHA-256
  against about.json's (hashed again only for a file whose stat changed: ``file_sha256``'s memo
  in ``<cache dir>/digests/``). A damaged cache is removed, with a warning, and built again;
- builds a missing one in ``.<key>.<pid>.tmp/``: ``build(temporary)`` writes the arrays
  (reserving their disk space with ``allocate``: a full disk is one line, not a SIGBUS) and
  returns about.json's description; the digests are added and the folder is published with one
  rename, so nobody ever reads half a cache and parallel runs build it once;
- sets the folder's modification time (its last use, which `transferlab cache list` shows) and
  returns ``load(folder)``, read under the lock.

`transferlab cache` (caches.py) lists and removes the caches of every kind through ``entries``,
``remove`` and ``leftovers``. Nothing here imports torch, and numpy only where arrays are checked
or allocated, so that `transferlab cache` answers at once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from transferlab.errors import TransferlabError
from transferlab.files import free_bytes, write_atomic
from transferlab.locks import cache_lock, lock_if_free

log = logging.getLogger(__name__)

ABOUT_FILE = "about.json"
KEY = re.compile(r"[0-9a-f]{24}")  # a cache folder's name
TEMPORARY = re.compile(r"^\.(?P<key>[^.]+)\.(?P<pid>\d+)\.tmp$")  # .<key>.<pid of its writer>.tmp
DIGEST_MEMO = "digests"  # <cache dir>/digests/: files' SHA-256 (weights, cached arrays), remembered by their stat
RACY_SECONDS = 2.0  # a file changed this recently is hashed again next time (git's "racily clean" files)

Arrays = dict[str, tuple[tuple[int, ...], Any]]  # a cache's .npy files: name -> (shape, dtype)
Loaded = TypeVar("Loaded")


@dataclass(frozen=True)
class DiskCache:
    """The caches of one kind, in ``root`` (``<cache dir>/<kind>``), and the words a run's log and
    error lines use for them: ``name`` ("image cache"), what is done to a damaged one
    (``rebuild``: "decoding it again") and what leaves temporaries (``builder``: "decoding")."""

    root: Path
    name: str
    rebuild: str
    builder: str

    def open(self, key: str, *, arrays: Callable[[dict[str, Any]], Arrays | str],
             build: Callable[[Path], dict[str, Any]], load: Callable[[Path], Loaded],
             check: Callable[[Path], str | None] | None = None) -> tuple[Loaded, bool]:
        """(``load(folder)``, whether the cache was built now) for the cache of ``key``, built first
        when it is missing or damaged (see the module's docstring). ``arrays(about)``: the .npy
        files that about.json's description calls for, or one line on why it describes another
        cache; ``check(folder)``: what is wrong with their content beyond shapes and digests, or
        None. A TransferlabError naming data.cache_dir when the cache cannot be written."""
        folder = self.root / key
        try:
            self.remove_stale_temporaries()
            with cache_lock(lock_path(folder), f"the {self.name} {folder}") as locked:
                built = False
                if locked:
                    built = self._open_or_build(folder, arrays, build, check)
                else:
                    damage = self.damage(folder, arrays, check) if os.path.lexists(folder) else "it is missing"
                    if damage is not None:
                        raise TransferlabError(f"the {self.name} {folder} cannot be locked here (a read-only file "
                                               f"system, or a folder of another user) and cannot be read as it is "
                                               f"({damage}); point data.cache_dir at a folder you can write")
                    log.info("%s: %s (whole; read without its lock, which cannot be taken here)", self.name, folder)
                _mark_used(folder)
                return load(folder), built
        except OSError as error:
            raise TransferlabError(f"the {self.name} cannot be written in {self.root} ({error.strerror or error}); "
                                   "point data.cache_dir at a folder you can write") from error

    def damage(self, folder: Path, arrays: Callable[[dict[str, Any]], Arrays | str],
               check: Callable[[Path], str | None] | None = None) -> str | None:
        """What is wrong with the cache in ``folder`` (about.json, the arrays' shapes, ``check``,
        the arrays' digests, in that order), or None when it is whole."""
        about = read_about(folder)
        if isinstance(about, str):
            return about
        expected = arrays(about)
        if isinstance(expected, str):
            return expected
        damage = arrays_damage(folder, expected)
        if damage is None and check is not None:
            damage = check(folder)
        return damage if damage is not None else digests_damage(folder, about, expected)

    def remove_stale_temporaries(self) -> None:
        """Remove the temporaries in ``root`` whose key's lock is free. One whose lock is taken is
        left alone (the next opening of that key removes it, under its lock, if its writer is gone)."""
        for path, key, pid in temporaries(self.root):
            try:
                with lock_if_free(self.root / f"{key}.lock") as free:
                    if free:
                        self._remove_temporary(path, pid)
            except OSError:
                pass  # its lock cannot be taken here (a read-only file system): nor can it be removed

    def _open_or_build(self, folder: Path, arrays, build, check) -> bool:
        """Under the key's lock: remove what an interrupted build left, check the cache, and build
        it when it is missing or damaged; whether it was built now."""
        for path, key, pid in temporaries(self.root):
            if key == folder.name:  # its lock is ours now, so whoever wrote it is gone
                self._remove_temporary(path, pid)
        damage = self.damage(folder, arrays, check) if os.path.lexists(folder) else None
        if damage is not None:
            log.warning("warning: the %s %s is damaged (%s); %s", self.name, folder, damage, self.rebuild)
            self._remove(folder, damage)
        if os.path.lexists(folder):
            log.info("%s: %s", self.name, folder)
            return False
        self._build(folder, arrays, build)
        return True

    def _build(self, folder: Path, arrays, build) -> None:
        temporary = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir(parents=True)
        try:
            about = build(temporary)
            about["sha256"] = {name: file_sha256(temporary / name) for name in arrays(about)}
            write_atomic(temporary / ABOUT_FILE, json.dumps(about, indent=2) + "\n")
            os.replace(temporary, folder)
        except BaseException:
            shutil.rmtree(temporary, ignore_errors=True)  # never leave half a cache behind
            raise

    def _remove(self, folder: Path, damage: str) -> None:
        try:
            if folder.is_dir() and not folder.is_symlink():
                shutil.rmtree(folder)
            else:
                folder.unlink()
        except OSError as error:
            raise TransferlabError(f"the {self.name} {folder} is damaged ({damage}) and cannot be removed ({error}); "
                                   "delete it, or point data.cache_dir elsewhere") from error

    def _remove_temporary(self, path: Path, pid: str) -> None:
        log.info("removing %s, left by an interrupted %s (process %s)", path, self.builder, pid)
        shutil.rmtree(path, ignore_errors=True)


def _mark_used(folder: Path) -> None:
    """The cache's last use, for `transferlab cache list`: its folder's modification time."""
    try:
        os.utime(folder)
    except OSError:
        pass  # a cache someone else owns, or on a read-only file system, is used all the same


# --- checking a cache ------------------------------------------------------------------------------

def read_about(folder: Path) -> dict[str, Any] | str:
    """A cache folder's about.json as a mapping (empty when it holds something else, which
    describes no cache), or one line on why it cannot be read."""
    try:
        about = json.loads((folder / ABOUT_FILE).read_text())
    except FileNotFoundError:
        return f"{ABOUT_FILE} is missing"
    except (OSError, ValueError) as error:
        return f"{ABOUT_FILE} cannot be read: {error}"
    return about if isinstance(about, dict) else {}


def arrays_damage(folder: Path, arrays: Arrays) -> str | None:
    """What is wrong with the first of the .npy files ``arrays`` names in ``folder``, or None when
    each has its shape, dtype and length."""
    import numpy as np

    for name, (shape, dtype) in arrays.items():
        damage = _array_damage(folder / name, shape, np.dtype(dtype))
        if damage is not None:
            return damage
    return None


def _array_damage(path: Path, shape: tuple[int, ...], dtype) -> str | None:
    """What is wrong with the .npy file at ``path`` for an array of ``shape`` and ``dtype``: read
    from its header and its length, without reading the array."""
    import numpy as np

    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    try:
        with open(path, "rb") as handle:
            reader = readers.get(np.lib.format.read_magic(handle))
            if reader is None:
                return f"{path.name} is in an unknown .npy version"
            header_shape, fortran_order, header_dtype = reader(handle)
            expected = handle.tell() + int(np.prod(shape)) * dtype.itemsize
            length = os.fstat(handle.fileno()).st_size
    except FileNotFoundError:
        return f"{path.name} is missing"
    except (OSError, ValueError, EOFError) as error:  # numpy raises ValueError for a short or garbled header
        return f"{path.name} cannot be read: {error}"
    if (tuple(header_shape), header_dtype, fortran_order) != (shape, dtype, False):
        return f"{path.name} holds {header_dtype} {tuple(header_shape)}, not {dtype} {shape}"
    if length != expected:
        return f"{path.name} holds {length:,} bytes, not {expected:,}"
    return None


def digests_damage(folder: Path, about: dict[str, Any], names: Iterable[str]) -> str | None:
    """Which of the files ``names`` in the cache ``folder`` does not match the SHA-256 that its
    about.json recorded when it was written, or None. A file is hashed in full when its stat
    (size, modification and change times, inode) is not the one it had when last hashed
    (remembered in <cache dir>/digests/, as weights files are: ``file_sha256``): any write to it,
    through any path, changes its change time, so a cache opened again unchanged costs one stat
    per file, and one written into is hashed and found out."""
    recorded = about.get("sha256")
    if not isinstance(recorded, dict):
        return f"{ABOUT_FILE} records no digests of its arrays (written by an older transferlab)"
    memo = folder.parent.parent / DIGEST_MEMO
    for name in names:
        try:
            digest = file_sha256(folder / name, memo)
        except OSError as error:
            return f"{name} cannot be read: {error}"
        if digest != recorded.get(name):
            return f"{name} does not match the SHA-256 recorded when it was written"
    return None


def file_sha256(path: Path, memo_folder: Path | None = None) -> str:
    """The SHA-256 (hex) of the file at ``path`` (links followed). With ``memo_folder``, remembered
    there by what git looks at to see a change (size, modification and change times in ns, inode,
    device): a later call for the unchanged file reads the memo instead of the file. Writing a
    file sets its change time, which nobody can set back; a file changed within RACY_SECONDS of
    its hashing is not remembered (a rewrite in the same tick of the clock keeps its times)."""
    path = Path(path)
    memo = memo_folder / f"{hashlib.sha256(os.path.realpath(path).encode()).hexdigest()[:24]}.json" \
        if memo_folder is not None else None
    before = _stat_key(path)
    if memo is not None:
        try:
            entry = json.loads(memo.read_text())
            if isinstance(entry, dict) and entry.get("stat") == before and isinstance(entry.get("sha256"), str):
                return entry["sha256"]
        except (OSError, ValueError):
            pass  # no memo yet, or one that cannot be read: hash the file
    started = time.time_ns()
    sha256 = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(2**22):
            sha256.update(chunk)
    digest = sha256.hexdigest()
    settled = started - max(before[2], before[3]) > RACY_SECONDS * 1e9
    if memo is not None and settled and _stat_key(path) == before:
        try:
            write_atomic(memo, json.dumps({"path": os.path.realpath(path), "stat": before, "sha256": digest}) + "\n")
        except OSError:
            pass  # a read-only cache dir: hashed again next time
    return digest


def _stat_key(path: Path) -> list[int]:
    """[size, mtime_ns, ctime_ns, inode, device] of the file ``path`` reaches (a list: as JSON reads it)."""
    stat = os.stat(path)
    return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, stat.st_dev]


# --- writing a cache -------------------------------------------------------------------------------

def allocate(path: Path, shape: tuple[int, ...], dtype, what: str, advice: str):
    """A new memory-mapped .npy file of ``shape`` and ``dtype`` at ``path`` (in a cache's
    temporary folder) with its disk space reserved, so that a full disk is one line here, naming
    ``what`` needs how much and how much is free, and ``advice``, instead of a SIGBUS when a write
    into the memory map finds no block."""
    import numpy as np

    array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    if hasattr(os, "posix_fallocate") and array.nbytes:
        with open(path, "rb+") as handle:
            try:
                os.posix_fallocate(handle.fileno(), array.offset, array.nbytes)
            except OSError as error:
                free = free_bytes(path.parent)
                has = f"{format_size(free)} free" if free is not None else "free space unknown"
                raise TransferlabError(f"{what} needs {format_size(array.nbytes)} in {path.parent.parent}, which has "
                                       f"{has} ({error.strerror or error}); {advice}") from error
    return array


def format_size(num_bytes: float) -> str:
    """A size in bytes for people: 13.8 KB, 4.2 MB, 1.4 GB (powers of 1000)."""
    for unit in ("bytes", "KB", "MB", "GB"):
        if num_bytes < 1000:
            return f"{num_bytes:.0f} bytes" if unit == "bytes" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1000
    return f"{num_bytes:.1f} TB"


# --- the caches on disk, for `transferlab cache` ---------------------------------------------------

def lock_path(folder: Path) -> Path:
    """The lock file of the cache in ``folder``, beside it."""
    return folder.with_name(f"{folder.name}.lock")


def temporaries(root: Path) -> list[tuple[Path, str, str]]:
    """(path, cache key, writer's process id) of each temporary folder in ``root``."""
    try:
        names = sorted(os.listdir(root))
    except FileNotFoundError:
        return []
    matches = [(name, TEMPORARY.match(name)) for name in names]
    return [(root / name, match["key"], match["pid"]) for name, match in matches if match]


@dataclass(frozen=True)
class Entry:
    """One cache folder: its about.json (empty when missing or unreadable), the space it takes
    on disk, and its last use (seconds since the epoch: its modification time, set at each opening)."""

    path: Path
    about: dict[str, Any]
    disk_bytes: int
    last_used: float


def entries(root: Path) -> list[Entry]:
    """The caches in ``root``, most recently used first."""
    try:
        found = [entry for entry in os.scandir(root) if KEY.fullmatch(entry.name) and entry.is_dir()]
    except FileNotFoundError:
        return []
    caches = []
    for entry in found:
        about = read_about(Path(entry.path))
        caches.append(Entry(Path(entry.path), about if isinstance(about, dict) else {}, disk_bytes(Path(entry.path)),
                            entry.stat().st_mtime))
    return sorted(caches, key=lambda cache: cache.last_used, reverse=True)


def is_cache(folder: Path, kinds: Iterable[str]) -> bool:
    """Whether ``folder`` is a cache folder ``<cache dir>/<kind>/<key>/`` of one of ``kinds``."""
    return (KEY.fullmatch(folder.name) is not None and folder.parent.name in kinds and folder.is_dir()
            and not folder.is_symlink())


def remove(folder: Path) -> int | None:
    """Remove the cache in ``folder`` under its lock: the bytes it took on disk, or None, removing
    nothing, when a run holds its lock (building or opening it)."""
    with lock_if_free(lock_path(folder)) as free:
        if not free:
            return None
        size = disk_bytes(folder)
        shutil.rmtree(folder)
        return size


def leftovers(root: Path) -> list[tuple[Path, str, bool]]:
    """(path, writer's process id, whether a build is writing it now) of each temporary in ``root``."""
    found = []
    for path, key, pid in temporaries(root):
        with lock_if_free(root / f"{key}.lock") as free:
            found.append((path, pid, not free))
    return found


def remove_leftovers(root: Path) -> list[tuple[Path, int]]:
    """Remove the temporaries in ``root`` that no process is writing: (path, bytes) of each."""
    removed = []
    for path, key, _ in temporaries(root):
        with lock_if_free(root / f"{key}.lock") as free:
            if free:
                size = disk_bytes(path)
                shutil.rmtree(path, ignore_errors=True)
                removed.append((path, size))
    return removed


def disk_bytes(folder: Path) -> int:
    """The space the files of ``folder`` (and its subfolders) take on disk."""
    total = 0
    for parent, _, names in os.walk(folder):
        for name in names:
            try:
                total += os.lstat(os.path.join(parent, name)).st_blocks * 512
            except OSError:
                pass  # removed meanwhile
    return total
