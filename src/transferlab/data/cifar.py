"""CIFAR-10 and CIFAR-100 through torchvision's loaders, as uint8 ImageSets."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch

from transferlab.data.images import ImageSet
from transferlab.errors import TransferlabError
from transferlab.locks import file_lock

CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR100_ARCHIVE = "cifar-100-python.tar.gz"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"  # both datasets' page
# Runs of one sweep that start at once would all download and unpack into the same data.root, and
# torchvision writes neither atomically: one process prepares the root while the others wait.
ROOT_LOCK_FILE = ".transferlab-prepare.lock"


def load_cifar10(root: str | Path, download: bool) -> tuple[ImageSet, ImageSet]:
    """CIFAR-10's training and test sets through torchvision's loader (MD5-checked by it)."""
    from torchvision.datasets import CIFAR10

    return _load_cifar(CIFAR10, "CIFAR-10", CIFAR10_ARCHIVE, root, download)


def load_cifar100(root: str | Path, download: bool) -> tuple[ImageSet, ImageSet]:
    """CIFAR-100's training and test sets (its 100 fine classes) through torchvision's loader."""
    from torchvision.datasets import CIFAR100

    return _load_cifar(CIFAR100, "CIFAR-100", CIFAR100_ARCHIVE, root, download)


def _load_cifar(dataset_class, title: str, archive: str, root: str | Path,
                download: bool) -> tuple[ImageSet, ImageSet]:
    root = Path(root).expanduser()
    try:
        # Locked while torchvision may write into it; a root we cannot write to (prepared by someone
        # else), or a missing one that we will not download into, is only read.
        writes = os.access(root, os.W_OK) if root.exists() else download
        with file_lock(root / ROOT_LOCK_FILE) if writes else contextlib.nullcontext():
            train = dataset_class(str(root), train=True, download=download)
            test = dataset_class(str(root), train=False, download=download)
    except (RuntimeError, OSError) as error:  # not found / corrupt, or no network (URLError)
        raise TransferlabError(
            f"{title} is not in data.root={str(root)!r} and could not be downloaded ({error}); put "
            f"{archive} (from {CIFAR10_URL}) into {root}, or use data=synthetic to try the tool "
            "without it"
        ) from error
    classes = tuple(train.classes)
    return _from_hwc(train.data, train.targets, classes), _from_hwc(test.data, test.targets, classes)


def _from_hwc(images, labels, classes: tuple[str, ...]) -> ImageSet:
    return ImageSet(
        torch.as_tensor(images).permute(0, 3, 1, 2).contiguous(),
        torch.as_tensor(labels, dtype=torch.int64),
        classes,
    )
