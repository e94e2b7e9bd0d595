"""Decoded images on disk: every file is decoded once, in parallel, into one uint8 array of
(N, 3, S, S) that later runs memory-map in a fraction of a second.

A cache is a folder named by its key (a hash of the file list, sizes, modification times and the
stored size; see imagefolder.py) holding ``images.npy``, ``labels.npy`` and ``about.json``. It is
built in a temporary folder and published with one rename, under a file lock, so parallel runs
on one image folder decode it once and nobody ever reads half a cache.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from transferlab.errors import TransferlabError
from transferlab.locks import file_lock

log = logging.getLogger(__name__)

IMAGES_FILE, LABELS_FILE, ABOUT_FILE = "images.npy", "labels.npy", "about.json"
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")  # 16-bit PNG/TIFF greyscale opens as one of these


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "transferlab"


def decode_image(path: Path, size: int) -> np.ndarray:
    """One image file as (3, size, size) uint8 RGB: its centre square, resized with Pillow's
    antialiased bilinear filter. Greyscale, palette, RGBA (alpha dropped, as torchvision's loader
    does), CMYK and 16-bit images all become 8-bit RGB."""
    from PIL import Image

    with Image.open(path) as image:
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
                  show_progress: bool, description: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (N, 3, size, size) uint8, memory-mapped; labels (N,) int64) of ``files``, from the
    cache in ``folder``, which is built first when it is not there."""
    with file_lock(folder.with_name(f"{folder.name}.lock")):
        if (folder / ABOUT_FILE).exists():
            log.info("image cache: %s", folder)
        else:
            _build(folder, files, labels, size, workers, show_progress, description)
    # Copy-on-write: the tensor is writable (torch wants that) but nothing is ever written back.
    images = torch.from_numpy(np.load(folder / IMAGES_FILE, mmap_mode="c"))
    return images, torch.from_numpy(np.load(folder / LABELS_FILE))


def _build(folder: Path, files: list[Path], labels: list[int], size: int, workers: int,
           show_progress: bool, description: dict) -> None:
    workers = min(workers or os.cpu_count() or 1, len(files))
    temporary = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    try:
        images_path = temporary / IMAGES_FILE
        _allocate(images_path, (len(files), 3, size, size))
        log.info("decoding %d images of %s to %dx%d with %d worker(s) into %s", len(files),
                 description["root"], size, size, workers, folder)
        start = time.perf_counter()
        _decode_all(images_path, files, size, workers, show_progress)
        seconds = time.perf_counter() - start
        with open(images_path, "rb+") as handle:
            os.fsync(handle.fileno())
        np.save(temporary / LABELS_FILE, np.asarray(labels, dtype=np.int64))
        about = {**description, "images": len(files), "stored_size": size, "decode_seconds": round(seconds, 2),
                 "decode_workers": workers}
        (temporary / ABOUT_FILE).write_text(json.dumps(about, indent=2) + "\n")
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
    needed = int(np.prod(shape))
    if hasattr(os, "posix_fallocate") and needed:
        with open(path, "rb+") as handle:
            try:
                os.posix_fallocate(handle.fileno(), offset, needed)
            except OSError as error:
                raise TransferlabError(
                    f"the image cache needs {needed / 1e9:.1f} GB in {path.parent.parent} ({error}); free some "
                    "space, point data.cache_dir elsewhere, or lower data.stored_size"
                ) from error


def _decode_all(images_path: Path, files: list[Path], size: int, workers: int, show_progress: bool) -> None:
    tasks = list(enumerate(files))
    progress = _Progress(len(files)) if show_progress else None
    if workers <= 1:
        _open_target(images_path, size)
        try:
            _collect(map(_decode_into, tasks), progress)
        finally:
            _target.clear()
        return
    # fork where there is one: the workers need only Pillow and numpy, and start at once.
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    with context.Pool(workers, initializer=_open_target, initargs=(images_path, size)) as pool:
        _collect(pool.imap_unordered(_decode_into, tasks, chunksize=16), progress)


def _collect(results, progress: _Progress | None) -> None:
    for done, error in enumerate(results, start=1):
        if error is not None:
            raise TransferlabError(error)
        if progress is not None:
            progress.update(done)
    if progress is not None:
        progress.close()


# Each decoding process opens the cache's memory map once (a Pool initializer cannot hand back an
# object), and writes every image it decodes straight into its row: no pixels cross a pipe.
_target: dict = {}


def _open_target(images_path: Path, size: int) -> None:
    _target.update(images=np.load(images_path, mmap_mode="r+"), size=size)


def _decode_into(task: tuple[int, Path]) -> str | None:
    """Decode one file into its row of the cache; the error line when it cannot be read."""
    position, path = task
    try:
        _target["images"][position] = decode_image(path, _target["size"])
    except Exception as error:  # Pillow raises several types for unreadable, truncated or foreign files
        return f"{path} is not an image Pillow can read ({type(error).__name__}: {error}); remove or replace it"
    return None


class _Progress:
    """A one-line decoding progress bar on stderr, redrawn at most 4 times a second."""

    def __init__(self, total: int):
        self.total, self.start, self.last = total, time.perf_counter(), 0.0

    def update(self, done: int) -> None:
        now = time.perf_counter()
        if now - self.last < 0.25 and done < self.total:
            return
        self.last = now
        width, rate = 24, done / max(now - self.start, 1e-9)
        filled = int(width * done / self.total)
        sys.stderr.write(f"\rdecoding [{'=' * filled}{' ' * (width - filled)}] {done}/{self.total} "
                         f"{rate:,.0f} images/s")
        sys.stderr.flush()

    def close(self) -> None:
        sys.stderr.write("\r\033[K")
        sys.stderr.flush()
