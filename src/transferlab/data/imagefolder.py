"""Your own images, laid out as torchvision's ImageFolder: ``root/train/<class>/...`` and
``root/val/<class>/...`` (or ``test/``); the classes are the sorted folder names.

The folder is checked before anything is decoded (one clear error naming the folder or file), then
decoded once into the on-disk cache of data/cache.py, which every later run memory-maps.

No image may reach both splits, nor be read twice (docs/data.md): links to files are followed,
links to folders inside a class folder never are (they loop, or reach another class or split); a
file reached by two paths (links, hard links) is refused before decoding, and two files with the
same bytes (their SHA-256, computed while decoding) are refused where they could leak: in train/
and the test split, in two classes, or in a train/ that the test split is held out of.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from transferlab.caches import default_cache_dir
from transferlab.data.cache import cached_images
from transferlab.data.images import ImageSet, stratified_split
from transferlab.errors import ConfigError, TransferlabError

log = logging.getLogger(__name__)

LAYOUT = ("DIR/train/<class>/<images> and DIR/val/<class>/<images> (or DIR/test/<class>/...; with neither, "
          "data.test_fraction of train/ is held out)")
COMMON_EXTENSIONS = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")  # named in errors
# Bump when what the cache stores, or which files a scan finds, changes (2: digests, no folder links;
# 3: stored at most at the largest centre square among the files; 4: keyed by ctime and inode too).
CACHE_FORMAT = 4
FOLDER_LINKS = ("data=imagefolder follows links to files but not to folders inside a class folder: remove the link, "
                "or put the folder itself (or links to its files) there")


@dataclass(frozen=True)
class FolderListing:
    """The image files of a folder, each with its class index, and where the test split comes from."""

    root: Path
    classes: tuple[str, ...]
    train: list[tuple[Path, int]]
    test: list[tuple[Path, int]]  # empty when the test split is held out of train/
    test_folder: str | None  # "val", "test", or None (held out)
    # Each file's (size in bytes, modification time in ns, change time in ns, inode), from the scan.
    stamps: dict[Path, tuple[int, int, int, int]]

    def content_key(self, stored_size: int) -> str:
        """A hash of everything the decoded images depend on: the files (relative path, class,
        and what git looks at to see a change: size, modification and change times, inode) of
        both splits and the stored size asked for (the size stored follows from it and the files).
        A file rewritten in place with its size and modification time kept (an archive unpacked
        with normalised times, `rsync -t`, a generator that overwrites) has a new change time,
        which nobody can set back; one replaced by a rename has a new inode too."""
        digest = hashlib.sha256(json.dumps({"format": CACHE_FORMAT, "stored_size": stored_size,
                                            "classes": self.classes}).encode())
        for split, files in (("train", self.train), (self.test_folder, self.test)):
            for path, label in files:
                size, mtime_ns, ctime_ns, inode = self.stamps[path]
                digest.update(f"{split}\0{path.relative_to(self.root)}\0{label}\0{size}\0{mtime_ns}\0{ctime_ns}\0"
                              f"{inode}\n".encode())
        return digest.hexdigest()[:24]

    def files(self) -> list[tuple[str, Path, int]]:
        """(split folder, path, class index) of every file, train/ first: the cache's order."""
        return ([("train", path, label) for path, label in self.train]
                + [(self.test_folder, path, label) for path, label in self.test])


def image_extensions() -> frozenset[str]:
    """The file extensions Pillow can open (.jpg, .png, .bmp, .webp, .tif, ...), lower case."""
    from PIL import Image

    Image.init()
    return frozenset(extension.lower() for extension in Image.registered_extensions())


def test_folder_name(root: Path) -> str | None:
    return next((name for name in ("val", "test") if (root / name).is_dir()), None)


def scan_folder(root: str | Path) -> FolderListing:
    """The folder's files by class, each statted once; a ConfigError naming the folder when the
    layout is wrong, the link when one leads to a folder inside a class folder or to nothing, and
    both paths when two reach one file."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ConfigError(f"data.root={str(root)!r} is not a folder; data=imagefolder needs {LAYOUT}")
    if not (root / "train").is_dir():
        raise ConfigError(f"data.root={str(root)!r} has no train/ folder; data=imagefolder needs {LAYOUT}")
    extensions = image_extensions()
    classes = _class_folders(root / "train")
    if len(classes) < 2:
        raise ConfigError(f"{root / 'train'} has one class folder ({classes[0]}); a classifier needs at least two")
    train = _class_files(root / "train", classes, extensions)
    test_folder = test_folder_name(root)
    test: list[tuple[Path, int]] = []
    if test_folder is not None:
        other = _class_folders(root / test_folder)
        if other != classes:
            missing, extra = sorted(set(classes) - set(other)), sorted(set(other) - set(classes))
            raise ConfigError(
                f"{root / test_folder} and {root / 'train'} have different classes ("
                + "; ".join(filter(None, [missing and f"missing from {test_folder}/: {', '.join(missing)}",
                                          extra and f"not in train/: {', '.join(extra)}"]))
                + "); both need the same class folders"
            )
        test = _class_files(root / test_folder, classes, extensions)
        if test_folder == "val" and (root / "test").is_dir():
            log.info("%s: the test split is val/; test/ is not used", root)
    split_files = [("train", path) for path, _ in train] + [(test_folder, path) for path, _ in test]
    return FolderListing(root, classes, train, test, test_folder, _stamps_of_distinct_files(split_files))


def _class_folders(split: Path) -> tuple[str, ...]:
    # Hidden folders (.ipynb_checkpoints, .DS_Store's kin) are not classes.
    classes = tuple(sorted(entry.name for entry in os.scandir(split)
                           if entry.is_dir() and not entry.name.startswith(".")))
    if not classes:
        raise ConfigError(f"{split} has no class folders; data=imagefolder needs {LAYOUT}")
    return classes


def _class_files(split: Path, classes: tuple[str, ...], extensions: frozenset[str]) -> list[tuple[Path, int]]:
    files = []
    for label, name in enumerate(classes):
        found = list(_image_files(split / name, extensions))
        if not found:
            raise ConfigError(f"{split / name} has no images (files Pillow reads: "
                              f"{', '.join(sorted(e for e in extensions if e in COMMON_EXTENSIONS))}, ...)")
        files += [(path, label) for path in found]
    return files


def _image_files(class_folder: Path, extensions: frozenset[str]) -> Iterator[Path]:
    """The image files under ``class_folder``, in os.walk's order (each folder's files by name, then
    its subfolders, by name); hidden files and folders are skipped. The class folder itself may be a
    link; a link to a folder inside it is a ConfigError naming the link."""
    pending = [class_folder]
    while pending:
        folder = pending.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
        except OSError as error:
            raise ConfigError(f"{folder} cannot be read ({error.strerror}); data=imagefolder reads every "
                              "folder of train/ and the test split") from error
        subfolders = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir():  # follows a link
                if entry.is_symlink():
                    raise ConfigError(_folder_link_error(Path(entry.path), class_folder))
                subfolders.append(Path(entry.path))
            elif Path(entry.name).suffix.lower() in extensions:
                yield Path(entry.path)
        pending += reversed(subfolders)


def _folder_link_error(link: Path, class_folder: Path) -> str:
    target, home = link.resolve(), class_folder.resolve()
    if link.parent.resolve().is_relative_to(target):
        why = "a folder that contains it: following it would loop"
    elif target.is_relative_to(home):
        why = f"in its class folder {class_folder}: its images would be read twice"
    else:
        why = f"outside its class folder {class_folder}"
    return f"{link} is a link to the folder {target}, {why}; {FOLDER_LINKS}"


def _stamps_of_distinct_files(split_files: list[tuple[str, Path]]) -> dict[Path, tuple[int, int, int, int]]:
    """(size, modification time in ns, change time in ns, inode) of each file, one stat each; a ConfigError naming both paths
    when two of them are one file (links to it, hard links), and one naming a link to nothing."""
    stamps: dict[Path, tuple[int, int, int, int]] = {}
    seen: dict[object, tuple[str, Path]] = {}
    for split, path in split_files:
        try:
            stat = path.stat()
        except FileNotFoundError as error:
            if path.is_symlink():
                raise ConfigError(f"{path} is a link to {os.readlink(path)}, which does not exist; remove the link "
                                  "or restore what it points to") from error
            raise ConfigError(f"{path} was removed while the folder was read; run again") from error
        except OSError as error:
            raise ConfigError(f"{path} cannot be read ({error.strerror})") from error
        # The device and inode say which file a path reaches; file systems without inode numbers report 0.
        identity = (stat.st_dev, stat.st_ino) if stat.st_ino else os.path.realpath(path)
        first_split, first = seen.setdefault(identity, (split, path))
        if first != path:
            why = ("a training image would be tested; keep it in one split only" if first_split != split
                   else "it would be read twice; remove one of them")
            raise ConfigError(f"{path} and {first} are one file (a link, or a hard link): {why}")
        stamps[path] = (stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)
    return stamps


def _check_copies(listing: FolderListing, digests: np.ndarray) -> None:
    """Files with the same bytes (``digests``: SHA-256, one row per file in listing.files() order):
    a TransferlabError naming two of them where the copies could leak or contradict each other (in
    train/ and the test split; in two classes; in a train/ that the test split is held out of), a
    warning where they only count twice (one class of one split, beside a val/ or test/ folder)."""
    if len(digests) < 2:
        return
    rows = np.ascontiguousarray(digests).view(np.dtype((np.void, digests.shape[1]))).ravel()
    _, group, counts = np.unique(rows, return_inverse=True, return_counts=True)
    repeated = np.flatnonzero(counts[group] > 1)
    if len(repeated) == 0:
        return
    files = listing.files()
    copies: dict[int, list[int]] = {}
    for position in repeated.tolist():
        copies.setdefault(int(group[position]), []).append(position)
    harmless = []
    for positions in copies.values():
        (split, path, label), *others = [files[position] for position in positions]
        for other_split, other_path, other_label in others:
            if other_split != split:
                why = f"one in {split}/ and one in {other_split}/: a training image would be tested"
            elif other_label != label:
                why = f"in two classes ({listing.classes[label]} and {listing.classes[other_label]})"
            elif listing.test_folder is None:
                why = "in train/: data.test_fraction could put one in each split"
            else:
                harmless.append((path, other_path))
                continue
            raise TransferlabError(f"{path} and {other_path} hold the same image (identical bytes), {why}; "
                                   f"remove one of them ({len(copies)} image(s) in {listing.root} have copies)")
    if harmless:
        first, second = harmless[0]
        log.warning("warning: %s and %s hold the same image (identical bytes; %d such pair(s) in %s): each counts "
                    "twice in its split", second, first, len(harmless), listing.root)


def load_imagefolder(root: str | Path, stored_size: int, test_fraction: float, seed: int,
                     cache_dir: str | Path | None = None, workers: int = 0,
                     show_progress: bool = False) -> tuple[ImageSet, ImageSet]:
    """(training set, test set) of an image folder, every image S x S uint8: S is ``stored_size``,
    or the largest centre square among the files when that is smaller (data/cache.py).

    The images come from the cache (decoded on the first run, memory-mapped after); without val/
    or test/, a stratified ``test_fraction`` of train/, fixed by ``seed``, is the test set."""
    listing = scan_folder(root)
    cache_root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    if cache_root.exists() and not cache_root.is_dir():
        raise ConfigError(f"data.cache_dir={str(cache_root)!r} is a file, not a folder; point data.cache_dir at a "
                          f"folder for the caches (unset, it is {default_cache_dir()})")
    files = listing.files()
    images, labels, digests = cached_images(
        cache_root / "imagefolder" / listing.content_key(stored_size),
        [path for _, path, _ in files], [label for _, _, label in files], stored_size, workers, show_progress,
        description={"root": str(listing.root.resolve()), "classes": list(listing.classes),
                     "train_images": len(listing.train), "test_folder": listing.test_folder},
    )
    _check_copies(listing, digests)
    count = len(listing.train)
    train = ImageSet(images[:count], labels[:count], listing.classes)  # views into the memory map
    if listing.test_folder is not None:
        return train, ImageSet(images[count:], labels[count:], listing.classes)
    kept, held_out = stratified_split(train.labels, test_fraction, seed)
    if len(held_out) == 0:
        raise TransferlabError(f"{listing.root / 'train'}: data.test_fraction={test_fraction} holds out no image; "
                               "add images, raise data.test_fraction, or add a val/ folder")
    return train.subset(kept), train.subset(held_out)


def describe_source(root: str | Path, test_fraction: float) -> dict[str, str]:
    """Where an image folder's splits come from, for run.json."""
    root = Path(root).expanduser()
    test_folder = test_folder_name(root)
    test = f"{test_folder}/" if test_folder else f"a stratified {test_fraction:g} of train/ (data.test_fraction)"
    return {"root": str(root.resolve()), "train": "train/", "test": test}
