"""The image caches (and the cached probes' feature caches) on disk as a user sees them: where they live, what a cache folder holds, and
`transferlab cache`, which lists them and removes them. Building and opening a cache is
data/cache.py's; this module imports neither torch nor numpy, so that the command answers at once.

A cache is a folder ``<cache dir>/imagefolder/<key>/`` (the key: 24 hex digits, see
data/imagefolder.py) beside its lock file ``<key>.lock``, which a run holds while it decodes or
opens the cache; a decoding in progress writes ``.<key>.<pid>.tmp/``. A run that trains on a cache
only reads its memory map: removing the cache then costs that run nothing (the kernel keeps the
file until the map is gone, on a local disk) and the next run decodes the folder again.

A feature cache (transferlab.probe: a linear probe's features, ``freeze.cached_features=true``) is
laid out alike in ``<cache dir>/features/<key>/``; `transferlab cache` lists and removes it too.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from transferlab.errors import TransferlabError
from transferlab.files import write_atomic
from transferlab.locks import lock_if_free  # noqa: F401 (cache.py takes it from here too)

IMAGES_FILE, LABELS_FILE, DIGESTS_FILE, ABOUT_FILE = "images.npy", "labels.npy", "digests.npy", "about.json"
KIND = "imagefolder"  # the caches' folder inside the cache dir (data=imagefolder's)
FEATURES_KIND = "features"  # the feature caches' folder (transferlab.probe's)
KEY = re.compile(r"[0-9a-f]{24}")  # a cache folder's name
TEMPORARY = re.compile(r"^\.(?P<key>[^.]+)\.(?P<pid>\d+)\.tmp$")  # .<key>.<pid of its writer>.tmp


DIGEST_MEMO = "digests"  # <cache dir>/digests/: files' SHA-256 (weights, cached arrays), remembered by their stat
RACY_SECONDS = 2.0  # a file changed this recently is hashed again next time (git's "racily clean" files)


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


def default_cache_dir() -> Path:
    """data.cache_dir's default: $XDG_CACHE_HOME/transferlab, else ~/.cache/transferlab."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "transferlab"


def format_size(num_bytes: float) -> str:
    """A size in bytes for people: 13.8 KB, 4.2 MB, 1.4 GB (powers of 1000)."""
    for unit in ("bytes", "KB", "MB", "GB"):
        if num_bytes < 1000:
            return f"{num_bytes:.0f} bytes" if unit == "bytes" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1000
    return f"{num_bytes:.1f} TB"


def lock_path(folder: Path) -> Path:
    """The lock file of the cache in ``folder``, beside it."""
    return folder.with_name(f"{folder.name}.lock")


def temporaries(cache_folder: Path) -> list[tuple[Path, str, str]]:
    """(path, cache key, writer's process id) of each temporary folder in ``cache_folder``."""
    try:
        names = sorted(os.listdir(cache_folder))
    except FileNotFoundError:
        return []
    matches = [(name, TEMPORARY.match(name)) for name in names]
    return [(cache_folder / name, match["key"], match["pid"]) for name, match in matches if match]


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
    folder = Path(cache_dir) / kind
    try:
        entries = [entry for entry in os.scandir(folder) if KEY.fullmatch(entry.name) and entry.is_dir()]
    except FileNotFoundError:
        return []
    caches = []
    for entry in entries:
        path = Path(entry.path)
        try:
            about = json.loads((path / ABOUT_FILE).read_text())
        except (OSError, ValueError):
            about = None
        about = about if isinstance(about, dict) else {}
        if kind == FEATURES_KIND:
            splits = about.get("splits")
            images = sum(splits.values()) if isinstance(splits, dict) else None
            source = f"{about['model']} features ({about.get('init')})" if "model" in about else None
            caches.append(CacheEntry(path, source, images, about.get("image_size"), _disk_bytes(path),
                                     entry.stat().st_mtime))
            continue
        caches.append(CacheEntry(path, about.get("root"), about.get("images"), about.get("stored_size"),
                                 _disk_bytes(path), entry.stat().st_mtime))
    return sorted(caches, key=lambda cache: cache.last_used, reverse=True)


def _disk_bytes(folder: Path) -> int:
    """The space the files of ``folder`` (and its subfolders) take on disk."""
    total = 0
    for parent, _, names in os.walk(folder):
        for name in names:
            try:
                total += os.lstat(os.path.join(parent, name)).st_blocks * 512
            except OSError:
                pass  # removed meanwhile
    return total


def remove_cache(folder: Path) -> int:
    """Remove the cache in ``folder``, under its lock; the bytes it took on disk. A TransferlabError
    when ``folder`` is not a cache folder, or when a run holds its lock (decoding or opening it)."""
    folder = Path(folder).absolute()
    if not (KEY.fullmatch(folder.name) and folder.parent.name in (KIND, FEATURES_KIND) and folder.is_dir()
            and not folder.is_symlink()):
        raise TransferlabError(f"{folder} is not an image cache (a folder <cache dir>/{KIND}/<key>/ or "
                               f"<cache dir>/{FEATURES_KIND}/<key>/ that `transferlab cache list` lists); "
                               "nothing was removed")
    with lock_if_free(lock_path(folder)) as free:
        if not free:
            raise TransferlabError(f"{folder} is in use: a run is decoding or opening it (it holds "
                                   f"{lock_path(folder).name}); try again when it has started training")
        size = _disk_bytes(folder)
        shutil.rmtree(folder)
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
    for path, key, pid in temporaries(Path(cache_dir) / KIND):
        with lock_if_free(path.with_name(f"{key}.lock")) as free:
            if free:
                size = _disk_bytes(path)
                shutil.rmtree(path, ignore_errors=True)
                removed.append(f"removed {path}, left by an interrupted decoding ({format_size(size)})")
    return removed, refused


def listing(cache_dir: Path) -> str:
    """`transferlab cache list`'s table: each cache with its source, image count, stored size, space
    on disk and last use, then the total; decodings in progress or left behind after it."""
    caches = image_caches(cache_dir)
    folder = Path(cache_dir) / KIND
    features = _feature_listing(cache_dir)
    if not caches and not temporaries(folder):
        return "\n".join([f"no image caches in {folder}", *features])
    lines = _table(("CACHE", "SOURCE", "IMAGES", "STORED", "ON DISK", "LAST USED"), caches)
    total = sum(cache.disk_bytes for cache in caches)
    lines.append(f"{len(caches)} cache(s), {format_size(total)} on disk in {folder}")
    for path, key, pid in temporaries(folder):
        with lock_if_free(path.with_name(f"{key}.lock")) as free:
            state = "left by an interrupted decoding (cache remove --all removes it)" if free else "being decoded"
        lines.append(f"{path}: {state}, process {pid}, {format_size(_disk_bytes(path))}")
    return "\n".join([*lines, *features])


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
    if not caches:
        return []
    lines = ["", *_table(("FEATURE CACHE", "SOURCE", "IMAGES", "SIZE", "ON DISK", "LAST USED"), caches)]
    lines.append(f"{len(caches)} feature cache(s), {format_size(sum(c.disk_bytes for c in caches))} on disk in "
                 f"{Path(cache_dir) / FEATURES_KIND}")
    return lines


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
