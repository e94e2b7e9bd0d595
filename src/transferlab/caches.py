"""The caches on disk as a user sees them: where they live, and `transferlab cache`, which lists
and removes them. Every cache is a transferlab.diskcache cache (the mechanism: lock, temporary
folder, about.json, digests, publish by rename, listing and removal), one folder per kind in the
cache dir: ``imagefolder/`` (data=imagefolder's decoded images, data/cache.py) and ``features/``
(the cached linear probes' features, ``freeze.cached_features=true``, transferlab.probe). This
module imports neither torch nor numpy, so that the command answers at once.

A cache is a folder ``<cache dir>/<kind>/<key>/`` (the key: 24 hex digits) beside its lock file
``<key>.lock``, which a run holds while it builds or opens the cache; a build in progress writes
``.<key>.<pid>.tmp/``. A run that trains on a cache only reads its memory map: removing the cache
then costs that run nothing (the kernel keeps the file until the map is gone, on a local disk) and
the next run builds it again.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from transferlab import diskcache
from transferlab.diskcache import ABOUT_FILE, format_size, lock_path
from transferlab.errors import TransferlabError

KIND = "imagefolder"  # the caches' folder inside the cache dir (data=imagefolder's)
FEATURES_KIND = "features"  # the feature caches' folder (transferlab.probe's)
KINDS = (KIND, FEATURES_KIND)


def default_cache_dir() -> Path:
    """data.cache_dir's default: $XDG_CACHE_HOME/transferlab, else ~/.cache/transferlab."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "transferlab"


@dataclass(frozen=True)
class CacheEntry:
    """One cache folder, as its about.json and the file system describe it."""

    path: Path
    # the image folder it was decoded from, or a feature cache's model and weights (None: about.json
    # missing or unreadable)
    source: str | None
    images: int | None
    stored_size: int | None  # pixels a side (a feature cache's: the image size its features were taken at)
    disk_bytes: int  # space taken on disk
    last_used: float  # seconds since the epoch: the folder's modification time, set at each opening


def image_caches(cache_dir: Path, kind: str = KIND) -> list[CacheEntry]:
    """The caches in ``cache_dir`` (data.cache_dir), most recently used first: the image caches, or
    with ``kind=FEATURES_KIND`` the feature caches."""
    caches = []
    for entry in diskcache.entries(Path(cache_dir) / kind):
        about = entry.about
        if kind == FEATURES_KIND:
            splits = about.get("splits")
            images = sum(splits.values()) if isinstance(splits, dict) else None
            source = f"{about['model']} features ({about.get('init')})" if "model" in about else None
            if source is not None and isinstance(about.get("split"), str):  # a cache per split (probe.split_identity)
                source += f", {about['split']} split"
            caches.append(CacheEntry(entry.path, source, images, about.get("image_size"), entry.disk_bytes,
                                     entry.last_used))
        else:
            caches.append(CacheEntry(entry.path, about.get("root"), about.get("images"), about.get("stored_size"),
                                     entry.disk_bytes, entry.last_used))
    return caches


def remove_cache(folder: Path) -> int:
    """Remove the cache in ``folder``, under its lock; the bytes it took on disk. A TransferlabError
    when ``folder`` is not a cache folder, or when a run holds its lock (decoding or opening it)."""
    folder = Path(folder).absolute()
    if not diskcache.is_cache(folder, KINDS):
        raise TransferlabError(f"{folder} is not an image cache (a folder <cache dir>/{KIND}/<key>/ or "
                               f"<cache dir>/{FEATURES_KIND}/<key>/ that `transferlab cache list` lists); "
                               "nothing was removed")
    size = diskcache.remove(folder)
    if size is None:
        raise TransferlabError(f"{folder} is in use: a run is decoding or opening it (it holds "
                               f"{lock_path(folder).name}); try again when it has started training")
    return size


def remove_all(cache_dir: Path) -> tuple[list[str], list[str]]:
    """Remove every cache in ``cache_dir`` and the temporaries no process is writing: (what was
    removed, what was refused), one line each."""
    removed, refused = [], []
    for cache in image_caches(cache_dir) + image_caches(cache_dir, FEATURES_KIND):
        try:
            removed.append(f"removed {cache.path} ({format_size(remove_cache(cache.path))})")
        except TransferlabError as error:
            refused.append(str(error))
    for kind in KINDS:
        for path, size in diskcache.remove_leftovers(Path(cache_dir) / kind):
            removed.append(f"removed {path}, left by an interrupted {_BUILDS[kind]} ({format_size(size)})")
    return removed, refused


_BUILDS = {KIND: "decoding", FEATURES_KIND: "feature extraction"}  # what writes each kind's temporaries


def listing(cache_dir: Path) -> str:
    """`transferlab cache list`'s table: each cache with its source, image count, stored size, space
    on disk and last use, then the total; decodings in progress or left behind after it."""
    caches = image_caches(cache_dir)
    folder = Path(cache_dir) / KIND
    features = _feature_listing(cache_dir)
    leftovers = _leftover_lines(folder, "decoding", "being decoded")
    if not caches and not leftovers:
        return "\n".join([f"no image caches in {folder}", *features])
    lines = _table(("CACHE", "SOURCE", "IMAGES", "STORED", "ON DISK", "LAST USED"), caches)
    total = sum(cache.disk_bytes for cache in caches)
    lines.append(f"{len(caches)} cache(s), {format_size(total)} on disk in {folder}")
    return "\n".join([*lines, *leftovers, *features])


def _leftover_lines(root: Path, build: str, busy: str) -> list[str]:
    """A line for each temporary in ``root``: being written, or left by an interrupted ``build``."""
    return [f"{path}: {busy if writing else f'left by an interrupted {build} (cache remove --all removes it)'}, "
            f"process {pid}, {format_size(diskcache.disk_bytes(path))}"
            for path, pid, writing in diskcache.leftovers(root)]


def _table(header: tuple[str, ...], caches) -> list[str]:
    """The lines of a cache table: ``header``, then a row per cache, columns padded to their widest."""
    rows = [header]
    for cache in caches:
        rows.append((str(cache.path), cache.source or f"({ABOUT_FILE} missing or unreadable)",
                     f"{cache.images:,}" if isinstance(cache.images, int) else "?",
                     f"{cache.stored_size}x{cache.stored_size}" if cache.stored_size else "?",
                     format_size(cache.disk_bytes), time.strftime("%Y-%m-%d %H:%M", time.localtime(cache.last_used))))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return ["  ".join(value.ljust(width) for value, width in zip(row, widths)).rstrip() for row in rows]


def _feature_listing(cache_dir: Path) -> list[str]:
    """The feature caches' lines of `cache list` (none where there are none): a blank line, a table
    of each cache's folder, model and weights, images, image size, space on disk and last use, the total."""
    caches = image_caches(cache_dir, FEATURES_KIND)
    leftovers = _leftover_lines(Path(cache_dir) / FEATURES_KIND, "feature extraction", "being extracted")
    if not caches and not leftovers:
        return []
    lines = ["", *_table(("FEATURE CACHE", "SOURCE", "IMAGES", "SIZE", "ON DISK", "LAST USED"), caches)]
    lines.append(f"{len(caches)} feature cache(s), {format_size(sum(c.disk_bytes for c in caches))} on disk in "
                 f"{Path(cache_dir) / FEATURES_KIND}")
    return [*lines, *leftovers]


def parse_args(args: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="transferlab cache",
        description="The decoded-image caches of data=imagefolder (docs/imagefolder.md) and the feature caches of "
                    "cached linear probes (docs/probes.md): list them, or remove them to free the disk. A removed "
                    "cache is made again by the next run that needs it.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{list,remove}")
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--dir", type=Path, default=None, metavar="DIR",
                       help="the runs' data.cache_dir (default: $XDG_CACHE_HOME/transferlab or ~/.cache/transferlab)")
    commands.add_parser("list", parents=[where], help="each cache: its folder, source, image count, stored size, "
                                                      "size on disk and last use")
    remove = commands.add_parser("remove", parents=[where], help="remove caches (refused while a run is decoding "
                                                                 "or opening one)")
    remove.add_argument("paths", nargs="*", type=Path, metavar="PATH", help="a cache folder, as `cache list` shows it")
    remove.add_argument("--all", action="store_true", help="every cache in DIR, and decodings left behind")
    options = parser.parse_args(args)
    if options.command == "remove" and bool(options.paths) == options.all:
        parser.error("remove takes PATH ... or --all (one of them)")
    options.dir = (Path(options.dir).expanduser() if options.dir is not None else default_cache_dir()).absolute()
    return options


def main(args: list[str]) -> int:
    options = parse_args(args)
    if options.command == "list":
        print(listing(options.dir))
        return 0
    if options.all:
        removed, refused = remove_all(options.dir)
    else:
        removed, refused = [], []
        for path in options.paths:
            try:
                removed.append(f"removed {path} ({format_size(remove_cache(path))})")
            except TransferlabError as error:
                refused.append(str(error))
    for line in removed:
        print(line)
    if not removed and not refused:
        print(f"no image caches in {options.dir / KIND}")
    for line in refused:
        print(f"transferlab cache: error: {line}", file=sys.stderr)
    return 1 if refused else 0
