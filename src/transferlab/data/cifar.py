"""CIFAR-10 through torchvision's loader, as uint8 ImageSets."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch

from transferlab.data.images import ImageSet
from transferlab.errors import TransferlabError
from transferlab.locks import file_lock

CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
# Runs of one sweep that start at once would all download and unpack into the same data.root, and
# torchvision writes neither atomically: one process prepares the root while the others wait.
ROOT_LOCK_FILE = ".transferlab-prepare.lock"


def load_cifar10(root: str | Path, download: bool) -> tuple[ImageSet, ImageSet]:
    """CIFAR-10's training and test sets through torchvision's loader (MD5-checked by it)."""
    from torchvision.datasets import CIFAR10

    root = Path(root).expanduser()
    try:
        # Locked while torchvision may write into it; a root we cannot write to (prepared by someone
        # else), or a missing one that we will not download into, is only read.
        writes = os.access(root, os.W_OK) if root.exists() else download
        with file_lock(root / ROOT_LOCK_FILE) if writes else contextlib.nullcontext():
            train = CIFAR10(str(root), train=True, download=download)
            test = CIFAR10(str(root), train=False, download=download)
    except (RuntimeError, OSError) as error:  # not found / corrupt, or no network (URLError)
        raise TransferlabError(
            f"CIFAR-10 is not in data.root={str(root)!r} and could not be downloaded ({error}); put "
            f"{CIFAR10_ARCHIVE} (from {CIFAR10_URL}) into {root}, or use data=synthetic to try the tool "
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
