"""Decoded images on disk: every file is decoded once, in parallel, into one uint8 array of
(N, 3, S, S) that later runs memory-map in a fraction of a second. S is the stored size asked for
(data.stored_size), or the largest centre square among the files when that is smaller: a folder of
8x8 images is stored at 8x8, not blown up to 256x256 (each file's header is read first).

A cache is a folder named by its key (a hash of the file list, each file's size, modification and
change times and inode, and the stored size asked for; see imagefolder.py) holding ``images.npy``,
``labels.npy``, ``digests.npy`` (the SHA-256 of each file's bytes, which find copies of one image) and
``about.json``, which records the SHA-256 of each of those arrays. It is built in a temporary folder
and published with one rename, under a file lock, so parallel runs on one image folder decode it
once and nobody ever reads half a cache; a run that waits for the lock says so. Opening a cache
checks its files' shapes, sizes and digests against about.json and the folder (a damaged one is
decoded again, with a warning; the digests are hashed again only for a file whose stat changed, see
``digests_damage``), and first removes the temporaries that no process is writing (a decoding killed
with SIGKILL). A whole cache whose lock cannot be taken (a read-only file system) is read without it. Each
opening sets the folder's modification time: its last use, which `transferlab cache list` shows
(transferlab.caches, which also says where caches live and removes them).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import multiprocessing
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from transferlab.caches import (ABOUT_FILE, DIGEST_MEMO, DIGESTS_FILE, IMAGES_FILE, LABELS_FILE, file_sha256,
                                format_size, lock_if_free, lock_path, temporaries)
from transferlab.errors import TransferlabError
from transferlab.files import free_bytes, write_atomic
from transferlab.locks import cache_lock
from transferlab.progress import decoding_bar

log = logging.getLogger(__name__)

DIGEST_BYTES = 32  # SHA-256: 47 us for a 42 KB JPEG that takes 3.3 ms to decode (measured on the dev machine)
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")  # 16-bit PNG/TIFF greyscale opens as one of these


def decode_image(source: Path | io.BytesIO, size: int) -> np.ndarray:
    """One image file (a path, or its bytes) as (3, size, size) uint8 RGB: its centre square, resized
    with Pillow's antialiased bilinear filter. Greyscale, palette, RGBA (alpha dropped, as
    torchvision's loader does), CMYK and 16-bit images all become 8-bit RGB."""
    from PIL import Image

    with Image.open(source) as image:
        image.draft("RGB", (size, size))  # JPEG: decode at the smallest 1/2^k scale that is still >= size
        if image.mode in SIXTEEN_BIT_MODES:  # convert() would clip these at 255 instead of scaling them
            image = Image.fromarray((np.asarray(image, dtype=np.float32) / 257).clip(0, 255).astype(np.uint8))
        elif image.mode == "P" and "transparency" in image.info:
            image = image.convert("RGBA")
        image = image.convert("RGB")
        width, height = image.size
        side = min(width, height)
        left, top = (width - side) / 2, (height - side) / 2
        image = image.resize((size, size), Image.BILINEAR, box=(left, top, left + side, top + side))
        return np.asarray(image).transpose(2, 0, 1)


def cached_images(folder: Path, files: list[Path], labels: list[int], size: int, workers: int,
                  show_progress: bool, description: dict) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """(images (N, 3, S, S) uint8, memory-mapped, S at most ``size`` (see the module's docstring);
    labels (N,) int64; SHA-256 digests (N, 32) uint8 of the files' bytes) of ``files``, from the
    cache in ``folder``, which is built first when it is not there or is damaged. A cache whose
    lock cannot be taken (a read-only file system, a folder of another user) is read without it
    when it is whole; a TransferlabError naming data.cache_dir when it is not, or when the cache
    folder cannot be written."""
    try:
        return _cached_images(folder, files, labels, size, workers, show_progress, description)
    except OSError as error:
        raise TransferlabError(f"the image cache cannot be written in {folder.parent} ({error.strerror or error}); "
                               "point data.cache_dir at a folder you can write") from error


def _cached_images(folder: Path, files: list[Path], labels: list[int], size: int, workers: int,
                   show_progress: bool, description: dict) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    _remove_stale_temporaries(folder.parent)
    with cache_lock(lock_path(folder), f"the image cache {folder}") as locked:
        if not locked:
            damage = _damage(folder, len(files), size, labels) if os.path.lexists(folder) else "it is missing"
            if damage is not None:
                raise TransferlabError(f"the image cache {folder} cannot be locked here (a read-only file system, or "
                                       f"a folder of another user) and cannot be read as it is ({damage}); point "
                                       "data.cache_dir at a folder you can write")
            log.info("image cache: %s (whole; read without its lock, which cannot be taken here)", folder)
        else:
            _open_or_build(folder, files, labels, size, workers, show_progress, description)
        _mark_used(folder)
        # Copy-on-write: the tensor is writable (torch wants that) but nothing is ever written back.
        images = torch.from_numpy(np.load(folder / IMAGES_FILE, mmap_mode="c"))
        return images, torch.from_numpy(np.load(folder / LABELS_FILE)), np.load(folder / DIGESTS_FILE)


def _open_or_build(folder: Path, files: list[Path], labels: list[int], size: int, workers: int,
                   show_progress: bool, description: dict) -> None:
    """Under the cache's lock: remove what an interrupted decoding left, check the cache, and
    decode it again when it is missing or damaged."""
    # This cache's own: its lock is ours now, so whoever wrote them is gone (a process killed
    # while decoding it, or its pool workers, which held the lock a moment longer).
    for path, key, pid in temporaries(folder.parent):
        if key == folder.name:
            _remove_temporary(path, pid)
    damage = _damage(folder, len(files), size, labels) if os.path.lexists(folder) else None
    if damage is not None:
        log.warning("warning: the image cache %s is damaged (%s); decoding it again", folder, damage)
        _remove(folder, damage)
    if os.path.lexists(folder):
        log.info("image cache: %s", folder)
    else:
        _build(folder, files, labels, size, workers, show_progress, description)


def _mark_used(folder: Path) -> None:
    """The cache's last use, for `transferlab cache list`: its folder's modification time."""
    try:
        os.utime(folder)
    except OSError:
        pass  # a cache someone else owns, or on a read-only file system, is used all the same


def _damage(folder: Path, count: int, size: int, labels: list[int]) -> str | None:
    """What is wrong with the cache in ``folder`` for ``count`` images asked for at ``size`` (files
    missing, shorter or of another shape than about.json and the folder say), or None when it is whole."""
    about = read_about(folder)
    if isinstance(about, str):
        return about
    stored = about.get("stored_size")
    if (not isinstance(stored, int) or not 1 <= stored <= size
            or (about.get("images"), about.get("requested_stored_size")) != (count, size)):
        return f"{ABOUT_FILE} does not describe {count} images asked for at {size}x{size}"
    damage = arrays_damage(folder, ((IMAGES_FILE, (count, 3, stored, stored), np.uint8),
                                    (LABELS_FILE, (count,), np.int64), (DIGESTS_FILE, (count, DIGEST_BYTES), np.uint8)))
    if damage is not None:
        return damage
    if not np.array_equal(np.load(folder / LABELS_FILE), np.asarray(labels, dtype=np.int64)):
        return f"{LABELS_FILE} does not hold the folder's labels"
    return digests_damage(folder, about, (IMAGES_FILE, LABELS_FILE, DIGESTS_FILE))


def read_about(folder: Path) -> dict[str, Any] | str:
    """A cache folder's about.json as a mapping (empty when it holds something else, which
    describes no cache), or one line on why it cannot be read. The image cache and the feature
    cache (transferlab.probe) share it."""
    try:
        about = json.loads((folder / ABOUT_FILE).read_text())
    except FileNotFoundError:
        return f"{ABOUT_FILE} is missing"
    except (OSError, ValueError) as error:
        return f"{ABOUT_FILE} cannot be read: {error}"
    return about if isinstance(about, dict) else {}


def arrays_damage(folder: Path, arrays: Iterable[tuple[str, tuple[int, ...], Any]]) -> str | None:
    """What is wrong with the first of the .npy files ``arrays`` names in ``folder``, given as
    (file name, shape, dtype), or None when each has its shape, dtype and length."""
    for name, shape, dtype in arrays:
        damage = _array_damage(folder / name, shape, np.dtype(dtype))
        if damage is not None:
            return damage
    return None


def array_digests(folder: Path, names: Iterable[str]) -> dict[str, str]:
    """The SHA-256 of each of the files ``names`` in ``folder`` (a cache being written), for its
    about.json."""
    return {name: file_sha256(folder / name) for name in names}


def digests_damage(folder: Path, about: dict[str, Any], names: Iterable[str]) -> str | None:
    """Which of the files ``names`` in the cache ``folder`` does not match the SHA-256 that its
    about.json recorded when it was written, or None. A file is hashed in full when its stat
    (size, modification and change times, inode) is not the one it had when last hashed
    (remembered in <cache dir>/digests/, as weights files are; caches.file_sha256): any write
    to it, through any path, changes its change time, so a cache opened again unchanged costs
    one stat per file, and one written into is hashed and found out."""
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


def _array_damage(path: Path, shape: tuple[int, ...], dtype: np.dtype) -> str | None:
    """What is wrong with the .npy file at ``path`` for an array of ``shape`` and ``dtype``: read
    from its header and its length, without reading the array."""
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


def _remove(path: Path, damage: str) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except OSError as error:
        raise TransferlabError(f"the image cache {path} is damaged ({damage}) and cannot be removed ({error}); "
                               "delete it, or point data.cache_dir elsewhere") from error


def _remove_stale_temporaries(cache_folder: Path) -> None:
    """Remove the temporary folders in ``cache_folder`` that no process is writing: those of a
    decoding killed with SIGKILL (or by a power cut), which can hold gigabytes. A temporary is
    only written under its cache's lock, so one whose lock is free is stale, whatever machine
    (on a shared file system) or process id made it. One whose lock is taken is left alone (the
    next run on that cache removes it, under its lock, if its writer is gone)."""
    for path, key, pid in temporaries(cache_folder):
        try:
            with lock_if_free(cache_folder / f"{key}.lock") as free:
                if free:
                    _remove_temporary(path, pid)
        except OSError:
            pass  # its lock cannot be taken here (a read-only file system): nor can it be removed


def _remove_temporary(path: Path, pid: str) -> None:
    log.info("removing %s, left by an interrupted decoding (process %s)", path, pid)
    shutil.rmtree(path, ignore_errors=True)


def _build(folder: Path, files: list[Path], labels: list[int], size: int, workers: int,
           show_progress: bool, description: dict) -> None:
    workers = min(workers or os.cpu_count() or 1, len(files))
    temporary = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    try:
        images_path, digests_path = temporary / IMAGES_FILE, temporary / DIGESTS_FILE
        with _decoding_processes(workers) as each:
            # Every result of both passes is taken before the pool ends: Pool.terminate() with tasks
            # still queued can hang for good (its task thread waits on a queue lock), as a test here once did.
            largest = max(each(_square_side, files), default=0)  # 0: no header could be read
            stored = min(size, largest) if largest else size
            _allocate(images_path, (len(files), 3, stored, stored))
            _allocate(digests_path, (len(files), DIGEST_BYTES))
            log.info("decoding %d images of %s to %dx%d with %d worker(s) into %s", len(files),
                     description["root"], stored, stored, workers, folder)
            start = time.perf_counter()
            tasks = [(temporary, stored, position, path) for position, path in enumerate(files)]
            errors = _collect(each(_decode_into, tasks), decoding_bar(len(files)) if show_progress else None)
            seconds = time.perf_counter() - start
        if errors:
            more = f" (and {len(errors) - 1} more file(s) that cannot be read)" if len(errors) > 1 else ""
            raise TransferlabError(sorted(errors)[0] + more)
        for path in (images_path, digests_path):
            with open(path, "rb+") as handle:
                os.fsync(handle.fileno())
        write_atomic(temporary / LABELS_FILE, lambda handle: np.save(handle, np.asarray(labels, dtype=np.int64)))
        about = {**description, "images": len(files), "stored_size": stored, "requested_stored_size": size,
                 "decode_seconds": round(seconds, 2), "decode_workers": workers,
                 "sha256": array_digests(temporary, (IMAGES_FILE, LABELS_FILE, DIGESTS_FILE))}
        write_atomic(temporary / ABOUT_FILE, json.dumps(about, indent=2) + "\n")
        os.replace(temporary, folder)
        log.info("decoded %d images in %.1f s (%.0f images/s)", len(files), seconds, len(files) / max(seconds, 1e-9))
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)  # never leave half a cache behind
        raise


def _allocate(path: Path, shape: tuple[int, ...]) -> None:
    """An .npy file of ``shape`` uint8 with its disk space reserved, so that a full disk is an
    error here instead of a crash (SIGBUS) while writing into the memory map."""
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)
    offset = array.offset
    del array
    reserve(path, offset, int(np.prod(shape)), "the image cache",
            "free some space, point data.cache_dir elsewhere, or lower data.stored_size")


def reserve(path: Path, offset: int, needed: int, what: str, advice: str) -> None:
    """Reserve on disk the ``needed`` bytes from ``offset`` of the file ``path`` (a memory-mapped
    .npy of a cache being written), so that a full disk is one line here, naming ``what`` needs
    how much and how much is free, and ``advice``, instead of a SIGBUS when a write into the
    memory map finds no block."""
    if not hasattr(os, "posix_fallocate") or not needed:
        return
    with open(path, "rb+") as handle:
        try:
            os.posix_fallocate(handle.fileno(), offset, needed)
        except OSError as error:
            free = free_bytes(path.parent)
            has = f"{format_size(free)} free" if free is not None else "free space unknown"
            raise TransferlabError(f"{what} needs {format_size(needed)} in {path.parent.parent}, which has {has} "
                                   f"({error.strerror or error}); {advice}") from error


@contextmanager
def _decoding_processes(workers: int) -> Iterator[Callable[[Callable, Iterable], Iterable]]:
    """``each(function, tasks)``, the results of ``function`` over ``tasks`` in any order: in this
    process for one worker, else in a pool of ``workers`` processes (forked where there is fork:
    the workers need only Pillow and numpy, and start at once)."""
    if workers <= 1:
        try:
            yield map
        finally:
            _target.clear()  # this process's memory maps of the temporary cache
        return
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    with context.Pool(workers, initializer=_start_worker) as pool:
        yield lambda function, tasks: pool.imap_unordered(function, tasks, chunksize=16)


def _collect(results, progress: tqdm | None) -> list[str]:
    """The error lines among ``results``, after taking every one of them."""
    errors = []
    try:
        for error in results:
            if error is not None:
                errors.append(error)
            if progress is not None:
                progress.update(1)
    finally:
        if progress is not None:
            progress.close()
    return errors


# Each decoding process opens the temporary cache's memory maps once, at its first image, and writes
# every image it decodes, and its digest, straight into its row: no pixels cross a pipe.
_target: dict = {}


def _start_worker() -> None:
    """A decoding process's start. A forked worker inherits the run's signal handlers, and the run's
    SIGTERM handler raises to stop the run: the SIGTERM with which the pool ends its workers (and any
    other) would print a traceback from each worker. A worker ends quietly on SIGTERM, and ignores
    SIGINT (Ctrl-C reaches the whole process group): the run stops, and its pool ends the workers."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _square_side(path: Path) -> int:
    """The side in pixels of the centre square of the image in ``path``, from its header; 0 when it
    cannot be read (decoding it then names the file)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return min(image.size)
    except Exception:  # Pillow raises several types for unreadable, truncated or foreign files
        return 0


def _decode_into(task: tuple[Path, int, int, Path]) -> str | None:
    """Decode one file into its row of the temporary cache at its stored size, and its bytes' digest
    into the digests' row; the error line when it cannot be read. The file is read once, for both."""
    temporary, size, position, path = task
    if _target.get("temporary") != temporary:
        _target.update(temporary=temporary, images=np.load(temporary / IMAGES_FILE, mmap_mode="r+"),
                       digests=np.load(temporary / DIGESTS_FILE, mmap_mode="r+"))
    try:
        data = Path(path).read_bytes()
        _target["digests"][position] = np.frombuffer(hashlib.sha256(data).digest(), dtype=np.uint8)
        _target["images"][position] = decode_image(io.BytesIO(data), size)
    except Exception as error:  # Pillow raises several types for unreadable, truncated or foreign files
        return f"{path} is not an image Pillow can read ({type(error).__name__}: {error}); remove or replace it"
    return None
