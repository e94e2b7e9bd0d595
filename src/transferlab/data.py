"""Datasets as uint8 tensors, the nested training subsets, and the two input pipelines.

``device``: the whole dataset lives on the training device as uint8 (CIFAR-10's 50,000 x 3 x 32 x 32
is 150 MB) and each batch is resized, padded, cropped, flipped and normalised there by small
batched tensor functions, with no per-image Python work and no worker processes.
``reference``: the protocol's torchvision transforms on PIL images in a DataLoader, for comparison
and exact reproduction of the reference loop.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from transferlab.errors import TransferlabError

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)
CROP_PADDING = 4
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"


@dataclass(frozen=True)
class ImageSet:
    """Images as uint8 (N, 3, H, W), labels as int64 (N,), and the class names."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: torch.Tensor) -> ImageSet:
        return ImageSet(self.images[indices], self.labels[indices], self.classes)

    def to(self, device: torch.device) -> ImageSet:
        return ImageSet(self.images.to(device), self.labels.to(device), self.classes)


def subset_indices(num_items: int, fraction: float, seed: int) -> torch.Tensor:
    """The first ``round(fraction * num_items)`` items of one fixed permutation of the dataset.

    The permutation depends on ``seed`` alone, so every model and the pretrained/scratch pair
    train on the same images, and smaller fractions are nested inside larger ones."""
    size = max(1, round(fraction * num_items))
    order = torch.randperm(num_items, generator=torch.Generator().manual_seed(seed))
    return order[:size].sort().values


def load_cifar10(root: str | Path, download: bool) -> tuple[ImageSet, ImageSet]:
    """CIFAR-10's training and test sets through torchvision's loader (MD5-checked by it)."""
    from torchvision.datasets import CIFAR10

    root = Path(root).expanduser()
    try:
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


def make_synthetic(num_train: int, num_test: int, seed: int, size: int = 32) -> tuple[ImageSet, ImageSet]:
    """A CIFAR-shaped 10-class dataset made in-process, the same for the same arguments.

    Each class is a smooth random colour pattern; every image is its class's pattern, shifted by a
    few pixels, blended with a smooth pattern of its own and pixel noise. A small CNN learns it
    within a few epochs, but not in one step."""
    templates = _smooth_patterns(10, size, torch.Generator().manual_seed(seed))

    def sample(count: int, generator: torch.Generator) -> ImageSet:
        labels = torch.arange(count) % 10
        labels = labels[torch.randperm(count, generator=generator)]
        shifts = torch.randint(-3, 4, (count, 2), generator=generator)
        base = torch.stack(
            [templates[c].roll((int(dy), int(dx)), dims=(1, 2)) for c, (dy, dx) in zip(labels, shifts)]
        )
        own = _smooth_patterns(count, size, generator)
        noise = torch.randn(count, 3, size, size, generator=generator) * 0.06
        images = (0.55 * base + 0.45 * own + noise).clamp(0, 1)
        return ImageSet((images * 255).round().to(torch.uint8), labels, tuple(f"class {k}" for k in range(10)))

    return (
        sample(num_train, torch.Generator().manual_seed(seed + 1)),
        sample(num_test, torch.Generator().manual_seed(seed + 2)),
    )


def _smooth_patterns(count: int, size: int, generator: torch.Generator) -> torch.Tensor:
    coarse = torch.rand(count, 3, 4, 4, generator=generator)
    return F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)


# Batched augmentations of the device pipeline: float images in [0, 1], shape (B, 3, H, W).


def batch_resize(images: torch.Tensor, size: int) -> torch.Tensor:
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=False)


def batch_crop(images: torch.Tensor, offsets: torch.Tensor, padding: int = CROP_PADDING) -> torch.Tensor:
    """Zero-pad by ``padding`` and crop each image back to its size at ``offsets`` (B, 2) = (top, left)
    into the padded image, as torchvision's RandomCrop(size, padding) does."""
    batch, _, height, width = images.shape
    padded = F.pad(images, (padding,) * 4)
    rows = offsets[:, 0, None] + torch.arange(height, device=images.device)  # (B, H)
    cols = offsets[:, 1, None] + torch.arange(width, device=images.device)  # (B, W)
    index = torch.arange(batch, device=images.device)[:, None, None]
    # Advanced indexing around the channel slice gives (B, H, W, C).
    return padded[index, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def batch_flip(images: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def batch_normalize(images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(CIFAR10_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD, device=images.device).view(1, 3, 1, 1)
    return (images - mean) / std


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The RNG of one epoch's order and augmentation: a function of (seed, epoch) alone, so an
    epoch draws the same whatever ran before it."""
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


class DeviceLoader:
    """Batches of an ImageSet that already lives on the training device."""

    def __init__(self, data: ImageSet, batch_size: int, image_size: int, train: bool, seed: int,
                 memory_format: torch.memory_format = torch.contiguous_format):
        self.data = data
        self.batch_size = batch_size
        self.image_size = image_size
        self.train = train
        self.seed = seed
        self.memory_format = memory_format

    def __len__(self) -> int:
        return math.ceil(len(self.data) / self.batch_size)

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        count, device = len(self.data), self.data.images.device
        if self.train:
            generator = epoch_generator(self.seed, epoch)
            order = torch.randperm(count, generator=generator).to(device)
            offsets = torch.randint(0, 2 * CROP_PADDING + 1, (count, 2), generator=generator).to(device)
            flips = (torch.rand(count, generator=generator) < 0.5).to(device)
        else:
            order = torch.arange(count, device=device)
        for start in range(0, count, self.batch_size):
            index = order[start:start + self.batch_size]
            images = batch_resize(self.data.images[index].float().div_(255), self.image_size)
            if self.train:
                images = batch_flip(batch_crop(images, offsets[start:start + len(index)]),
                                    flips[start:start + len(index)])
            images = batch_normalize(images).contiguous(memory_format=self.memory_format)
            yield images, self.data.labels[index]


class _PILDataset(Dataset):
    def __init__(self, data: ImageSet, transform):
        self.images = data.images.permute(0, 2, 3, 1).numpy()  # HWC for PIL
        self.labels = data.labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[index])), self.labels[index]


def reference_transform(image_size: int, train: bool):
    """The protocol's torchvision transforms."""
    from torchvision import transforms as T

    steps = [T.Resize(image_size)]
    if train:
        steps += [T.RandomCrop(image_size, padding=CROP_PADDING), T.RandomHorizontalFlip()]
    steps += [T.ToTensor(), T.Normalize(CIFAR10_MEAN, CIFAR10_STD)]
    return T.Compose(steps)


class ReferenceLoader:
    """The reference loop's input pipeline: PIL decode and transforms in DataLoader workers."""

    def __init__(self, data: ImageSet, batch_size: int, image_size: int, train: bool, seed: int,
                 device: torch.device, num_workers: int,
                 memory_format: torch.memory_format = torch.contiguous_format):
        self.dataset = _PILDataset(data.to(torch.device("cpu")), reference_transform(image_size, train))
        self.batch_size = batch_size
        self.train = train
        self.seed = seed
        self.device = device
        self.num_workers = num_workers
        self.memory_format = memory_format

    def __len__(self) -> int:
        return math.ceil(len(self.dataset) / self.batch_size)

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        loader = DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            shuffle=self.train,
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
            generator=epoch_generator(self.seed, epoch),
        )
        for images, labels in loader:
            yield (images.to(self.device, non_blocking=True, memory_format=self.memory_format),
                   labels.to(self.device, non_blocking=True))


def make_loader(data: ImageSet, pipeline: str, batch_size: int, image_size: int, train: bool, seed: int,
                device: torch.device, num_workers: int,
                memory_format: torch.memory_format = torch.contiguous_format) -> DeviceLoader | ReferenceLoader:
    if pipeline == "device":
        return DeviceLoader(data.to(device), batch_size, image_size, train, seed, memory_format)
    return ReferenceLoader(data, batch_size, image_size, train, seed, device, num_workers, memory_format)
