"""The two input pipelines, and the transforms each dataset is given.

``device``: the dataset lives on the training device as uint8 (CIFAR-10's 50,000 x 3 x 32 x 32 is
150 MB) and each batch is resized, cropped, flipped and normalised there by small batched tensor
functions, with no per-image Python work and no worker processes. A dataset that would take more
than half of a CUDA device's free memory stays in host memory (an image folder's memory-mapped
cache) and its batches are gathered there by a background thread and copied over as they are needed.
``reference``: torchvision's transforms on PIL images in a DataLoader, for comparison and exact
reproduction of the protocol's reference loop.

Both batch an epoch alike (batch_sizes): full batches and the remainder, except that a training
epoch's last batch of one image joins the batch before it (docs/data.md).
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler, SequentialSampler

from transferlab.data.images import ImageSet

log = logging.getLogger(__name__)

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
# data=digits: scikit-learn's 8x8 digits' training images (transferlab.data.digits keeps them beside the data).
DIGITS_MEAN, DIGITS_STD = (0.3062, 0.3062, 0.3062), (0.3766, 0.3766, 0.3766)
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # what torchvision's pretrained weights were trained with
IMAGENET_STD = (0.229, 0.224, 0.225)
STATISTICS = {
    "cifar10": (CIFAR10_MEAN, CIFAR10_STD),
    "cifar100": (CIFAR100_MEAN, CIFAR100_STD),
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "digits": (DIGITS_MEAN, DIGITS_STD),
}
CROP_PADDING = 4
RESIZED_CROP_RATIO = (3 / 4, 4 / 3)  # torchvision's RandomResizedCrop aspect-ratio range


@dataclass(frozen=True)
class Transforms:
    """What a dataset's images go through (the config's data.augment, data.crop_scale,
    data.normalize and data.test_crop). The defaults are the protocol's CIFAR-10 transforms.

    augment: ``pad_crop_flip`` (resize, zero-pad by 4 and crop back, flip: the protocol's),
    ``random_resized_crop`` (torchvision's RandomResizedCrop with ``crop_scale``, then a flip),
    ``flip`` (the test view, flipped), ``none`` (the test view); without the flip, for images a
    mirror changes (digits, letters, text): ``pad_crop`` (a shift by up to 4 pixels each way) and
    ``resized_crop`` (the RandomResizedCrop alone). The test view resizes to
    ``image_size / test_crop`` and centre-crops ``image_size``.

    ``mean`` and ``std``, when given, replace the statistics of ``normalize`` (data.normalize=auto:
    a timm model's own, from its pretrained_cfg); ``interpolation`` is how images are resized
    (bilinear, or a timm model's bicubic)."""

    augment: str = "pad_crop_flip"
    normalize: str = "cifar10"
    test_crop: float = 1.0
    crop_scale: tuple[float, float] = (0.08, 1.0)
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    interpolation: str = "bilinear"

    def statistics(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) per channel that images are normalised with."""
        if self.mean is not None and self.std is not None:
            return tuple(self.mean), tuple(self.std)
        return STATISTICS[self.normalize]

    def test_resize(self, image_size: int) -> int:
        return image_size if self.test_crop == 1.0 else round(image_size / self.test_crop)

    def describe(self, image_size: int) -> dict[str, object]:
        """The transforms in torchvision's words, for run.json."""
        resize = self.test_resize(image_size)
        test = f"Resize({resize}), CenterCrop({image_size})" if resize != image_size else f"Resize({image_size})"
        train = {
            "pad_crop_flip": f"Resize({image_size}), RandomCrop({image_size}, padding={CROP_PADDING}), "
                             "RandomHorizontalFlip()",
            "random_resized_crop": f"RandomResizedCrop({image_size}, scale={tuple(self.crop_scale)}), "
                                   "RandomHorizontalFlip()",
            "flip": f"{test}, RandomHorizontalFlip()",
            "none": test,
            "pad_crop": f"Resize({image_size}), RandomCrop({image_size}, padding={CROP_PADDING})",
            "resized_crop": f"RandomResizedCrop({image_size}, scale={tuple(self.crop_scale)})",
        }[self.augment]
        mean, std = self.statistics()
        described = {"train": train, "test": test, "normalize": self.normalize, "mean": list(mean), "std": list(std)}
        return described | ({"interpolation": self.interpolation} if self.interpolation != "bilinear" else {})


PROTOCOL_TRANSFORMS = Transforms()
FLIPPING = ("pad_crop_flip", "random_resized_crop", "flip")  # the augmentations that mirror half the images
PAD_CROPS, RESIZED_CROPS = ("pad_crop_flip", "pad_crop"), ("random_resized_crop", "resized_crop")


# Batched augmentations of the device pipeline: float images in [0, 1], shape (B, 3, H, W).


def batch_resize(images: torch.Tensor, size: int, mode: str = "bilinear") -> torch.Tensor:
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    # Antialiasing only matters when shrinking (an image folder's stored images), as PIL's resize does;
    # CIFAR's 32 -> 224 is unaffected.
    shrinking = size < images.shape[-1]
    resized = F.interpolate(images, size=(size, size), mode=mode, align_corners=False, antialias=shrinking)
    return resized.clamp_(0.0, 1.0) if mode == "bicubic" else resized  # bicubic overshoots [0, 1], as PIL's does not


def batch_center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    top, left = (images.shape[-2] - size) // 2, (images.shape[-1] - size) // 2
    return images[..., top:top + size, left:left + size]


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


def random_resized_boxes(count: int, height: int, width: int, scale: tuple[float, float],
                         generator: torch.Generator, ratio: tuple[float, float] = RESIZED_CROP_RATIO,
                         attempts: int = 10) -> torch.Tensor:
    """(count, 4) crop boxes (top, left, height, width), drawn as torchvision's
    RandomResizedCrop.get_params draws one: up to ``attempts`` tries of an area share in ``scale``
    and a log-uniform aspect ratio, else the whole image cut to the ratio range."""
    area = height * width
    target = area * torch.empty(count, attempts).uniform_(scale[0], scale[1], generator=generator)
    log_ratio = torch.empty(count, attempts).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    aspect = torch.exp(log_ratio)
    widths = torch.sqrt(target * aspect).round().long()
    heights = torch.sqrt(target / aspect).round().long()
    valid = (widths > 0) & (widths <= width) & (heights > 0) & (heights <= height)
    first = valid.int().argmax(dim=1, keepdim=True)  # the first try that fits
    w, h = widths.gather(1, first).squeeze(1), heights.gather(1, first).squeeze(1)
    found = valid.any(dim=1)
    in_ratio = width / height  # the fallback, for rows where no try fitted
    if in_ratio < ratio[0]:
        fallback_w, fallback_h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        fallback_w, fallback_h = round(height * ratio[1]), height
    else:
        fallback_w, fallback_h = width, height
    w, h = torch.where(found, w, fallback_w), torch.where(found, h, fallback_h)
    draws = torch.rand(count, 2, generator=generator)
    top = torch.where(found, (draws[:, 0] * (height - h + 1)).long(), (height - h) // 2)
    left = torch.where(found, (draws[:, 1] * (width - w + 1)).long(), (width - w) // 2)
    return torch.stack([top, left, h, w], dim=1)


def batch_resized_crop(images: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Each image's box (top, left, height, width) resized to size x size, bilinear: what
    torchvision's resized_crop computes without antialiasing (the boxes of an image folder's stored
    images are at most stored_size / image_size times the output, where aliasing is negligible)."""
    _, _, height, width = images.shape
    steps = (torch.arange(size, device=images.device, dtype=torch.float32) + 0.5) / size  # (S,)
    boxes = boxes.to(images.device, torch.float32)
    top, left, box_h, box_w = (boxes[:, k, None] for k in range(4))  # (B, 1) each
    # Source pixel coordinates as F.interpolate computes them inside the box, clamped to it.
    rows = top + (steps * box_h - 0.5).clamp(min=0).minimum(box_h - 1)  # (B, S)
    cols = left + (steps * box_w - 0.5).clamp(min=0).minimum(box_w - 1)
    grid_y = ((rows + 0.5) / height * 2 - 1)[:, :, None].expand(-1, size, size)
    grid_x = ((cols + 0.5) / width * 2 - 1)[:, None, :].expand(-1, size, size)
    grid = torch.stack([grid_x, grid_y], dim=-1)  # (B, S, S, 2) as (x, y)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def batch_flip(images: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def normalization(name: str | Transforms, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) of STATISTICS[name] (or of a Transforms' own statistics) as (1, 3, 1, 1) tensors on
    ``device``: made once per loader."""
    mean, std = name.statistics() if isinstance(name, Transforms) else STATISTICS[name]
    return (torch.tensor(mean, device=device).view(1, 3, 1, 1), torch.tensor(std, device=device).view(1, 3, 1, 1))


def batch_normalize(images: torch.Tensor, mean: torch.Tensor | None = None,
                    std: torch.Tensor | None = None) -> torch.Tensor:
    """(images - mean) / std; CIFAR-10's statistics unless a loader passes its own."""
    if mean is None or std is None:
        mean, std = normalization("cifar10", images.device)
    return (images - mean) / std


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The RNG of one epoch's order and augmentation: a function of (seed, epoch) alone, so an
    epoch draws the same whatever ran before it."""
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


def batch_sizes(count: int, batch_size: int, train: bool) -> list[int]:
    """The sizes of an epoch's batches of ``count`` images: full batches, then the remainder. In
    training a last batch of one image joins the batch before it (one batch of batch_size + 1):
    BatchNorm cannot normalise a batch of one, and merging keeps every image in every epoch."""
    sizes = [batch_size] * (count // batch_size) + ([count % batch_size] if count % batch_size else [])
    if train and len(sizes) > 1 and sizes[-1] == 1:
        sizes[-2:] = [batch_size + 1]
    return sizes


def fits_on_device(num_bytes: int, device: torch.device) -> bool:
    """The memory rule: on a CUDA device a dataset lives on the device when it takes at most half
    of the device's free memory, leaving the rest to the model, its activations and the other set;
    otherwise its batches are streamed from host memory. CPU (and MPS, which shares the host's
    memory) runs read their batches where the data is."""
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return num_bytes <= free // 2


class DeviceLoader:
    """Batches of an ImageSet, augmented on ``device`` (by default where the set lives). Batches
    are indexed in place, or with ``stream`` (a set too big for the device) gathered from the set
    in host memory by a background thread, one batch ahead, and copied over."""

    def __init__(self, data: ImageSet, batch_size: int, image_size: int, train: bool, seed: int,
                 memory_format: torch.memory_format = torch.contiguous_format,
                 transforms: Transforms = PROTOCOL_TRANSFORMS, device: torch.device | None = None,
                 stream: bool = False):
        self.data = data
        self.batch_size = batch_size
        self.image_size = image_size
        self.train = train
        self.seed = seed
        self.memory_format = memory_format
        self.transforms = transforms
        self.device = data.images.device if device is None else torch.device(device)
        self.stream = stream
        self.labels = data.labels.to(self.device)
        self.mean, self.std = normalization(transforms, self.device)
        self.sizes = batch_sizes(len(data), batch_size, train)

    def __len__(self) -> int:
        return len(self.sizes)

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        count, device, augment = len(self.data), self.device, self.transforms.augment
        if self.train:  # drawn on the CPU, so that an epoch draws the same on every device
            generator = epoch_generator(self.seed, epoch)
            order = torch.randperm(count, generator=generator)
            if augment in PAD_CROPS:
                crops = _to_device(torch.randint(0, 2 * CROP_PADDING + 1, (count, 2), generator=generator), device)
            elif augment in RESIZED_CROPS:
                _, _, height, width = self.data.images.shape
                crops = _to_device(random_resized_boxes(count, height, width, tuple(self.transforms.crop_scale),
                                                        generator), device)
            if augment in FLIPPING:
                flips = _to_device(torch.rand(count, generator=generator) < 0.5, device)
        else:
            order = torch.arange(count)
        on_host = torch.split(order, self.sizes)
        on_device = torch.split(_to_device(order, device), self.sizes)
        starts = itertools.accumulate(self.sizes, initial=0)
        for start, index, images in zip(starts, on_device, self._uint8_batches(on_host, on_device)):
            images = images.float().div_(255)
            if not self.train or augment in ("flip", "none"):
                images = self._test_view(images)
            if self.train:
                chosen = slice(start, start + len(index))
                if augment in PAD_CROPS:
                    images = batch_crop(batch_resize(images, self.image_size, self.transforms.interpolation),
                                        crops[chosen])
                elif augment in RESIZED_CROPS:
                    images = batch_resized_crop(images, crops[chosen], self.image_size)
                if augment in FLIPPING:
                    images = batch_flip(images, flips[chosen])
            images = batch_normalize(images, self.mean, self.std).contiguous(memory_format=self.memory_format)
            yield images, self.labels[index]

    def _test_view(self, images: torch.Tensor) -> torch.Tensor:
        resized = batch_resize(images, self.transforms.test_resize(self.image_size), self.transforms.interpolation)
        return batch_center_crop(resized, self.image_size)

    def _uint8_batches(self, on_host: tuple[torch.Tensor, ...],
                       on_device: tuple[torch.Tensor, ...]) -> Iterator[torch.Tensor]:
        """The uint8 images of each batch of indices, on the device."""
        if not self.stream:
            for index in on_device:
                yield self.data.images[index]
            return

        def gather(index: torch.Tensor) -> torch.Tensor:
            images = self.data.images[index]
            return images.pin_memory() if self.device.type == "cuda" else images

        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(gather, on_host[0]) if on_host else None
            for position in range(len(on_host)):
                images = pending.result()
                if position + 1 < len(on_host):
                    pending = pool.submit(gather, on_host[position + 1])
                yield images.to(self.device, non_blocking=True)


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


def reference_transform(image_size: int, train: bool, transforms: Transforms = PROTOCOL_TRANSFORMS):
    """torchvision's transforms for ``transforms`` (by default the protocol's)."""
    from torchvision import transforms as T

    resize = transforms.test_resize(image_size)
    mode = T.InterpolationMode(transforms.interpolation)
    test_view = ([T.Resize(resize, interpolation=mode), T.CenterCrop(image_size)] if resize != image_size
                 else [T.Resize(image_size, interpolation=mode)])
    if not train or transforms.augment == "none":
        steps = test_view
    elif transforms.augment in PAD_CROPS:
        steps = [T.Resize(image_size, interpolation=mode), T.RandomCrop(image_size, padding=CROP_PADDING)]
    elif transforms.augment in RESIZED_CROPS:
        steps = [T.RandomResizedCrop(image_size, scale=tuple(transforms.crop_scale), ratio=RESIZED_CROP_RATIO,
                                     interpolation=mode)]
    else:  # flip
        steps = test_view
    if train and transforms.augment in FLIPPING:
        steps = steps + [T.RandomHorizontalFlip()]
    mean, std = transforms.statistics()
    return T.Compose(steps + [T.ToTensor(), T.Normalize(mean, std)])


class ReferenceLoader:
    """The reference loop's input pipeline: PIL decode and transforms in DataLoader workers."""

    def __init__(self, data: ImageSet, batch_size: int, image_size: int, train: bool, seed: int,
                 device: torch.device, num_workers: int,
                 memory_format: torch.memory_format = torch.contiguous_format,
                 transforms: Transforms = PROTOCOL_TRANSFORMS):
        self.dataset = _PILDataset(data.to(torch.device("cpu")), reference_transform(image_size, train, transforms))
        self.batch_size = batch_size
        self.train = train
        self.seed = seed
        self.device = device
        self.num_workers = num_workers
        self.memory_format = memory_format
        self.sizes = batch_sizes(len(self.dataset), batch_size, train)

    def __len__(self) -> int:
        return len(self.sizes)

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        # The sampler DataLoader(shuffle=True, generator=...) would make, so the order is the same.
        generator = epoch_generator(self.seed, epoch)
        order = RandomSampler(self.dataset, generator=generator) if self.train else SequentialSampler(self.dataset)
        loader = DataLoader(
            self.dataset,
            batch_sampler=_Batches(order, self.sizes),
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
            generator=generator,
        )
        for images, labels in loader:
            yield (images.to(self.device, non_blocking=True, memory_format=self.memory_format),
                   labels.to(self.device, non_blocking=True))


class _Batches(Sampler[list[int]]):
    """The indices of ``order`` cut into batches of ``sizes``."""

    def __init__(self, order: Sampler[int], sizes: list[int]):
        self.order, self.sizes = order, sizes

    def __len__(self) -> int:
        return len(self.sizes)

    def __iter__(self) -> Iterator[list[int]]:
        indices = iter(self.order)
        for size in self.sizes:
            yield list(itertools.islice(indices, size))


def make_loader(data: ImageSet, pipeline: str, batch_size: int, image_size: int, train: bool, seed: int,
                device: torch.device, num_workers: int,
                memory_format: torch.memory_format = torch.contiguous_format,
                transforms: Transforms = PROTOCOL_TRANSFORMS) -> DeviceLoader | ReferenceLoader:
    if pipeline == "device":
        resident = fits_on_device(data.images.nbytes, device)
        if not resident:
            log.info("the %s images (%.1f GB) take more than half of the free memory of %s: their batches are "
                     "streamed from host memory", "training" if train else "test", data.images.nbytes / 1e9, device)
        return DeviceLoader(data.to(device) if resident else data, batch_size, image_size, train, seed,
                            memory_format, transforms, device, stream=not resident)
    return ReferenceLoader(data, batch_size, image_size, train, seed, device, num_workers, memory_format,
                           transforms)
