"""A CIFAR-shaped 10-class dataset generated in-process: for trying the tool and for tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from transferlab.data.images import ImageSet


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
