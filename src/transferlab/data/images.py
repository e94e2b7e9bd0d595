"""Datasets as uint8 tensors and the nested training subsets that every source shares."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

import torch

from transferlab.errors import ConfigError


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


def images_per_class(data: ImageSet) -> dict[str, int]:
    """{class name: number of images of that class in ``data``}, in class order."""
    counts = torch.bincount(data.labels.cpu(), minlength=len(data.classes)).tolist()
    return dict(zip(data.classes, counts))


def subset_indices(labels: torch.Tensor, classes: Sequence[str], seed: int, *, fraction: float | None = None,
                   per_class: int | None = None, sampling: str = "stratified") -> torch.Tensor:
    """Sorted indices into ``labels`` of the training subset: ``fraction`` of the images, or
    ``per_class`` images of every class. Every source (CIFAR, image folders, synthetic) draws its
    subset here.

    The draw depends on ``seed`` alone, so every model and the pretrained/scratch pair train on
    the same images. It starts from one permutation of all the images, fixed by ``seed``:

    - ``stratified``: each class is taken in the order its images have in that permutation, and
      the subset is the first ``round(fraction * n_c)`` (rounded half up) or the first
      ``per_class`` of each class c. Each class keeps its share, and a smaller fraction or K lies
      inside a larger one.
    - ``uniform``: the first ``round(fraction * N)`` images of the permutation, whatever their
      class, as transferlab drew subsets before data.sampling existed (also nested; a class's
      share varies from draw to draw).

    A ConfigError, in one line, when a class would get no image or, with ``per_class``, has fewer."""
    if (fraction is None) == (per_class is None):
        raise ValueError("give exactly one of fraction and per_class")
    if sampling not in ("stratified", "uniform") or (sampling == "uniform" and per_class is not None):
        raise ValueError(f"sampling={sampling!r} with per_class={per_class}: use stratified or uniform, and "
                         "per_class with stratified only")
    counts = torch.bincount(labels.cpu(), minlength=len(classes)).tolist()
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    if sampling == "uniform":
        chosen = order[:max(1, round(fraction * len(labels)))]
        drawn = torch.bincount(labels.cpu()[chosen], minlength=len(classes)).tolist()
        if 0 in drawn:
            raise ConfigError(f"data.fraction={fraction} with data.sampling=uniform draws no image of class "
                              f"{classes[drawn.index(0)]!r}; raise data.fraction or use data.sampling=stratified")
        return chosen.sort().values
    _check_smallest_class(classes, counts, fraction, per_class)
    quotas = [per_class if per_class is not None else stratified_count(fraction, count) for count in counts]
    ordered_labels = labels.cpu()[order]
    return torch.cat([order[ordered_labels == label][:quota] for label, quota in enumerate(quotas)]).sort().values


def _check_smallest_class(classes: Sequence[str], counts: list[int], fraction: float | None,
                          per_class: int | None) -> None:
    """A ConfigError unless the smallest class (and so every class) gets at least one image, and
    ``per_class`` images where it is given."""
    name, count = min(zip(classes, counts), key=lambda named: named[1])
    if count == 0:
        raise ConfigError(f"class {name!r} has no training image to draw a subset from")
    if per_class is not None and count < per_class:
        raise ConfigError(f"data.per_class={per_class} is more than class {name!r} has ({count} training "
                          f"image(s)); data.per_class must be at most {count} here")
    if fraction is not None and stratified_count(fraction, count) == 0:
        raise ConfigError(f"data.fraction={fraction} gives class {name!r} ({count} training image(s)) no image; "
                          f"the smallest data.fraction allowed here is {smallest_fraction(count):g}")


def stratified_count(fraction: float, count: int) -> int:
    """``round(fraction * count)``, rounded half up in decimal (0.05 of 10 images is 1 image, where
    binary floats and Python's round to even would give 0): monotone in ``fraction``, so subsets nest."""
    return int((Decimal(repr(fraction)) * count + Decimal("0.5")).to_integral_value(rounding=ROUND_FLOOR))


def smallest_fraction(count: int) -> float:
    """The smallest fraction, to 3 significant digits, that takes at least one of ``count`` images."""
    exact = Decimal(1) / (2 * count)
    step = Decimal(1).scaleb(exact.adjusted() - 2)
    return float((exact / step).to_integral_value(rounding=ROUND_CEILING) * step)


def stratified_split(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept, held out) indices into ``labels``: ``round(fraction * n_c)`` items of each class c held
    out, at least one where the class has two or more, chosen by ``seed`` alone; both sorted."""
    generator = torch.Generator().manual_seed(seed)
    held = []
    for label in torch.unique(labels).tolist():
        members = torch.nonzero(labels == label).flatten()
        count = round(fraction * len(members))
        if fraction > 0 and len(members) >= 2:
            count = min(max(count, 1), len(members) - 1)
        held.append(members[torch.randperm(len(members), generator=generator)[:count]])
    held_out = torch.cat(held).sort().values if held else torch.empty(0, dtype=torch.int64)
    mask = torch.ones(len(labels), dtype=torch.bool)
    mask[held_out] = False
    return torch.nonzero(mask).flatten(), held_out


def hold_out_validation(train: ImageSet, fraction: float, seed: int) -> tuple[ImageSet, ImageSet | None]:
    """(images that train, validation split): a stratified ``fraction`` of the training subset, fixed
    by ``seed``, that never trains; (train, None) for fraction 0."""
    if fraction == 0:
        return train, None
    kept, held_out = stratified_split(train.labels, fraction, seed)
    if len(held_out) == 0:
        raise ConfigError(f"data.val_fraction={fraction} holds out no image of the {len(train)}-image training "
                          "subset; raise data.val_fraction or data.fraction")
    return train.subset(kept), train.subset(held_out)
