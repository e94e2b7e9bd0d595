"""Your own images, laid out as torchvision's ImageFolder: ``root/train/<class>/...`` and
``root/val/<class>/...`` (or ``test/``); the classes are the sorted folder names.

The folder is checked before anything is decoded (one clear error naming the folder or file), then
decoded once into the on-disk cache of data/cache.py, which every later run memory-maps.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path


from transferlab.data.cache import cached_images, default_cache_dir
from transferlab.data.images import ImageSet, stratified_split
from transferlab.errors import ConfigError, TransferlabError

log = logging.getLogger(__name__)

LAYOUT = ("DIR/train/<class>/<images> and DIR/val/<class>/<images> (or DIR/test/<class>/...; with neither, "
          "data.test_fraction of train/ is held out)")
COMMON_EXTENSIONS = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")  # named in errors
CACHE_FORMAT = 1  # bump when what the cache stores changes, so old caches are not read


@dataclass(frozen=True)
class FolderListing:
    """The image files of a folder, each with its class index, and where the test split comes from."""

    root: Path
    classes: tuple[str, ...]
    train: list[tuple[Path, int]]
    test: list[tuple[Path, int]]  # empty when the test split is held out of train/
    test_folder: str | None  # "val", "test", or None (held out)

    def content_key(self, stored_size: int) -> str:
        """A hash of everything the decoded images depend on: the files (relative path, class,
        size, modification time) of both splits and the stored size."""
        digest = hashlib.sha256(json.dumps({"format": CACHE_FORMAT, "stored_size": stored_size,
                                            "classes": self.classes}).encode())
        for split, files in (("train", self.train), (self.test_folder, self.test)):
            for path, label in files:
                stat = path.stat()
                digest.update(f"{split}\0{path.relative_to(self.root)}\0{label}\0{stat.st_size}\0"
                              f"{stat.st_mtime_ns}\n".encode())
        return digest.hexdigest()[:24]


def image_extensions() -> frozenset[str]:
    """The file extensions Pillow can open (.jpg, .png, .bmp, .webp, .tif, ...), lower case."""
    from PIL import Image

    Image.init()
    return frozenset(extension.lower() for extension in Image.registered_extensions())


def test_folder_name(root: Path) -> str | None:
    return next((name for name in ("val", "test") if (root / name).is_dir()), None)


def scan_folder(root: str | Path) -> FolderListing:
    """The folder's files by class; a ConfigError naming the folder when the layout is wrong."""
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
    return FolderListing(root, classes, train, test, test_folder)


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
        found = []
        for folder, subfolders, names in os.walk(split / name, followlinks=True):
            subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
            found += [Path(folder) / n for n in sorted(names)
                      if not n.startswith(".") and Path(n).suffix.lower() in extensions]
        if not found:
            raise ConfigError(f"{split / name} has no images (files Pillow reads: "
                              f"{', '.join(sorted(e for e in extensions if e in COMMON_EXTENSIONS))}, ...)")
        files += [(path, label) for path in found]
    return files


def load_imagefolder(root: str | Path, stored_size: int, test_fraction: float, seed: int,
                     cache_dir: str | Path | None = None, workers: int = 0,
                     show_progress: bool = False) -> tuple[ImageSet, ImageSet]:
    """(training set, test set) of an image folder, every image stored_size x stored_size uint8.

    The images come from the cache (decoded on the first run, memory-mapped after); without val/
    or test/, a stratified ``test_fraction`` of train/, fixed by ``seed``, is the test set."""
    listing = scan_folder(root)
    cache_root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    files = listing.train + listing.test
    images, labels = cached_images(
        cache_root / "imagefolder" / listing.content_key(stored_size),
        [path for path, _ in files], [label for _, label in files], stored_size, workers, show_progress,
        description={"root": str(listing.root.resolve()), "classes": list(listing.classes),
                     "train_images": len(listing.train), "test_folder": listing.test_folder},
    )
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
