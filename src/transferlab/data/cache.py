"""Decoded images on disk: every file is decoded once, in parallel, into one uint8 array of
(N, 3, S, S) that later runs memory-map in a fraction of a second. S is the stored size asked for
(data.stored_size), or the largest centre square among the files when that is smaller: a folder of
8x8 images is stored at 8x8, not blown up to 256x256 (each file's header is read first).

A cache is a folder named by its key (a hash of the file list, each file's size, modification and
change times and inode, and the stored size asked for; see imagefolder.py) in
``<data.cache_dir>/imagefolder/``, holding ``images.npy``, ``labels.npy``, ``digests.npy`` (the SHA-256
of each file's bytes, which find copies of one image) and ``about.json``. It is a disk cache of
transferlab.diskcache, which builds it once under a lock, publishes it with one rename, verifies it
at each opening against about.json (shapes, sizes, the arrays' digests; here also the folder's
labels) and decodes a damaged one again with a warning; `transferlab cache` lists and removes it.
"""

from __future__ import annotations

import hashlib
import io
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from transferlab.diskcache import ABOUT_FILE, Arrays, DiskCache, allocate
from transferlab.errors import TransferlabError
from transferlab.files import write_atomic
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


IMAGES_FILE, LABELS_FILE, DIGESTS_FILE = "images.npy", "labels.npy", "digests.npy"


def cached_images(folder: Path, files: list[Path], labels: list[int], size: int, workers: int,
                  show_progress: bool, description: dict) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """(images (N, 3, S, S) uint8, memory-mapped, S at most ``size`` (see the module's docstring);
    labels (N,) int64; SHA-256 digests (N, 32) uint8 of the files' bytes) of ``files``, from the
    cache in ``folder``, which is built first when it is not there or is damaged. A cache whose
    lock cannot be taken (a read-only file system, a folder of another user) is read without it
    when it is whole; a TransferlabError naming data.cache_dir when it is not, or when the cache
    folder cannot be written."""
    count = len(files)

    def arrays(about: dict[str, Any]) -> Arrays | str:
        stored = about.get("stored_size")
        if (not isinstance(stored, int) or not 1 <= stored <= size
                or (about.get("images"), about.get("requested_stored_size")) != (count, size)):
            return f"{ABOUT_FILE} does not describe {count} images asked for at {size}x{size}"
        return {IMAGES_FILE: ((count, 3, stored, stored), np.uint8), LABELS_FILE: ((count,), np.int64),
                DIGESTS_FILE: ((count, DIGEST_BYTES), np.uint8)}

    def check(cache: Path) -> str | None:
        if not np.array_equal(np.load(cache / LABELS_FILE), np.asarray(labels, dtype=np.int64)):
            return f"{LABELS_FILE} does not hold the folder's labels"
        return None

    def load(cache: Path) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        # Copy-on-write: the tensor is writable (torch wants that) but nothing is ever written back.
        images = torch.from_numpy(np.load(cache / IMAGES_FILE, mmap_mode="c"))
        return images, torch.from_numpy(np.load(cache / LABELS_FILE)), np.load(cache / DIGESTS_FILE)

    cache = DiskCache(folder.parent, "image cache", rebuild="decoding it again", builder="decoding")
    loaded, _ = cache.open(folder.name, arrays=arrays, check=check, load=load,
                           build=lambda temporary: _build(temporary, folder, files, labels, size, workers,
                                                          show_progress, description))
    return loaded


def _build(temporary: Path, folder: Path, files: list[Path], labels: list[int], size: int, workers: int,
           show_progress: bool, description: dict) -> dict[str, Any]:
    """Decode ``files`` into the arrays of the cache's ``temporary`` folder; about.json's description."""
    workers = min(workers or os.cpu_count() or 1, len(files))
    images_path, digests_path = temporary / IMAGES_FILE, temporary / DIGESTS_FILE
    with _decoding_processes(workers) as each:
        # Every result of both passes is taken before the pool ends: Pool.terminate() with tasks
        # still queued can hang for good (its task thread waits on a queue lock), as a test here once did.
        largest = max(each(_square_side, files), default=0)  # 0: no header could be read
        stored = min(size, largest) if largest else size
        advice = "free some space, point data.cache_dir elsewhere, or lower data.stored_size"
        allocate(images_path, (len(files), 3, stored, stored), np.uint8, "the image cache", advice)
        allocate(digests_path, (len(files), DIGEST_BYTES), np.uint8, "the image cache", advice)
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
    log.info("decoded %d images in %.1f s (%.0f images/s)", len(files), seconds, len(files) / max(seconds, 1e-9))
    return {**description, "images": len(files), "stored_size": stored, "requested_stored_size": size,
            "decode_seconds": round(seconds, 2), "decode_workers": workers}


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
