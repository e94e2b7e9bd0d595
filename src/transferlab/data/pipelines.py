"""The two input pipelines.

``device``: the whole dataset lives on the training device as uint8 (CIFAR-10's 50,000 x 3 x 32 x 32
is 150 MB) and each batch is resized, padded, cropped, flipped and normalised there by small
batched tensor functions, with no per-image Python work and no worker processes.
``reference``: the protocol's torchvision transforms on PIL images in a DataLoader, for comparison
and exact reproduction of the reference loop.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from transferlab.data.images import ImageSet

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)
CROP_PADDING = 4


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


def channel_statistics(mean: tuple[float, ...], std: tuple[float, ...],
                       device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std as (1, C, 1, 1) tensors on ``device``. Build them once per loader:
    making a tensor from host numbers is a copy that waits for the GPU's queued work."""
    return (torch.tensor(mean, device=device).view(1, -1, 1, 1),
            torch.tensor(std, device=device).view(1, -1, 1, 1))


def batch_normalize(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``mean`` and ``std`` from channel_statistics, on the images' device."""
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
        self.mean, self.std = channel_statistics(CIFAR10_MEAN, CIFAR10_STD, data.images.device)

    def __len__(self) -> int:
        return math.ceil(len(self.data) / self.batch_size)

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        count, device = len(self.data), self.data.images.device
        if self.train:  # drawn on the CPU, so that an epoch draws the same on every device
            generator = epoch_generator(self.seed, epoch)
            order = _to_device(torch.randperm(count, generator=generator), device)
            offsets = _to_device(torch.randint(0, 2 * CROP_PADDING + 1, (count, 2), generator=generator), device)
            flips = _to_device(torch.rand(count, generator=generator) < 0.5, device)
        else:
            order = torch.arange(count, device=device)
        for start in range(0, count, self.batch_size):
            index = order[start:start + self.batch_size]
            images = batch_resize(self.data.images[index].float().div_(255), self.image_size)
            if self.train:
                images = batch_flip(batch_crop(images, offsets[start:start + len(index)]),
                                    flips[start:start + len(index)])
            images = batch_normalize(images, self.mean, self.std).contiguous(memory_format=self.memory_format)
            yield images, self.data.labels[index]


def _to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on ``device`` without waiting for the GPU: a copy from pageable memory waits
    for all queued work, one from pinned memory is queued behind it."""
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


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
