"""What it costs to key and check the disk caches by content (issue 23): the figures behind
docs/performance.md's "Cache keys and digests".

1. The image cache's key: scanning a folder of --images small JPEGs (written into a temporary
   folder under /tmp) and hashing what git looks at (size, mtime, ctime, inode: one stat per file,
   transferlab's key; the whole scan, and the stats alone), against reading every file and hashing
   its bytes (a content digest). Everything runs with the folder in the page cache, as it is just
   after it was written (a cold cache or a network file system makes reading every file dearer).
2. The cached arrays' check: the SHA-256 of a --gib GiB file (a cached array) read from the page
   cache, in seconds per GiB, against reading the digest memo when the file's stat is unchanged
   (diskcache.file_sha256, which the caches use), and for comparison hashlib's BLAKE2b and zlib's CRC-32.

    python scripts/benchmark_cache_digests.py                  # 50,000 JPEGs, a 1 GiB array
    python scripts/benchmark_cache_digests.py --images 5000 --gib 0.25

Every figure is one measurement, not a median: on a shared machine, say so beside it.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import shutil
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np


def write_jpegs(root: Path, count: int) -> None:
    """``count`` 32x32 JPEGs of noise in root/train/<two classes>/: each its own bytes, of about 1 KB."""
    from PIL import Image

    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buffer, format="JPEG", quality=80)
    template = buffer.getvalue()
    for name in ("a", "b"):
        (root / "train" / name).mkdir(parents=True)
    for index in range(count):
        # The same JPEG with its index in a comment: distinct files without encoding 50,000 images.
        data = template[:2] + b"\xff\xfe\x00\x0a" + index.to_bytes(8, "big") + template[2:]
        (root / "train" / ("a", "b")[index % 2] / f"{index:06d}.jpg").write_bytes(data)


def time_keys(root: Path) -> dict[str, float]:
    from transferlab.data import scan_folder

    figures = {}
    for attempt in ("first", "second"):
        start = time.perf_counter()
        listing = scan_folder(root)
        listing.content_key(256)
        figures[f"stat key, {attempt} scan"] = time.perf_counter() - start
    start = time.perf_counter()
    for _, path, _ in listing.files():
        path.stat()
    figures["one stat of every file alone"] = time.perf_counter() - start
    start = time.perf_counter()
    digest = hashlib.sha256()
    for _, path, _ in listing.files():
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    figures["content digest (read + SHA-256 of every file)"] = time.perf_counter() - start
    return figures


def time_array(path: Path, gib: float) -> dict[str, float]:
    from transferlab import diskcache

    with open(path, "wb") as handle:
        block = np.random.default_rng(1).integers(0, 256, 2**24, dtype=np.uint8).tobytes()  # 16 MiB
        for _ in range(int(gib * 64)):
            handle.write(block)
    size_gib = path.stat().st_size / 2**30
    data = path.read_bytes()  # in the page cache from here on, as a cache just written or read is
    figures = {}
    for name, digest in (("SHA-256", lambda: hashlib.sha256(data).digest()),
                         ("BLAKE2b", lambda: hashlib.blake2b(data).digest()),
                         ("CRC-32", lambda: zlib.crc32(data))):
        start = time.perf_counter()
        digest()
        figures[f"{name} in memory, s/GiB"] = (time.perf_counter() - start) / size_gib
    del data
    start = time.perf_counter()
    diskcache.file_sha256(path)
    figures["diskcache.file_sha256 (reads the file), s/GiB"] = (time.perf_counter() - start) / size_gib
    memo = path.parent / "memo"
    time.sleep(diskcache.RACY_SECONDS + 0.1)  # a file changed a moment ago is not remembered; now it is settled
    diskcache.file_sha256(path, memo)  # hashed, and remembered
    start = time.perf_counter()
    diskcache.file_sha256(path, memo)
    figures["diskcache.file_sha256, unchanged file (the memo), s"] = time.perf_counter() - start
    return figures


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=50_000, help="JPEGs in the folder (default 50,000)")
    parser.add_argument("--gib", type=float, default=1.0, help="size of the array file in GiB (default 1)")
    options = parser.parse_args(argv)
    if options.images < 2 or options.gib <= 0:
        parser.error("--images must be at least 2 and --gib above 0")
    work = Path(tempfile.mkdtemp(prefix="transferlab-digests-", dir="/tmp"))
    try:
        start = time.perf_counter()
        write_jpegs(work / "folder", options.images)
        print(f"wrote {options.images:,} JPEGs in {time.perf_counter() - start:.1f} s; load {os.getloadavg()[0]:.1f}, "
              f"{os.cpu_count()} cores")
        for name, seconds in time_keys(work / "folder").items():
            print(f"image cache key, {options.images:,} files: {name}: {seconds:.2f} s")
        shutil.rmtree(work / "folder")
        for name, value in time_array(work / "array.npy", options.gib).items():
            print(f"cached array, {options.gib:g} GiB: {name}: {value:.3f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
