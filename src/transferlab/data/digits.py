"""scikit-learn's 1,797 real 8x8 handwritten digits (``sklearn.datasets.load_digits``, inside its
wheel: no download), as ImageSets: upscaled to the run's image size, grey copied to 3 channels.

The test split is fixed: TEST_FRACTION of every class, held out by SPLIT_SEED whatever the run's
seeds, so that every run on digits is tested on the same 450 images (run.json's data_source says so)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from transferlab.data.images import ImageSet, stratified_split

TEST_FRACTION = 0.25  # 450 of the 1,797 images, 44 to 46 of each digit
SPLIT_SEED = 0        # the test split never follows data.subset_seed: repeats differ in their training draws only
CLASSES = tuple(str(digit) for digit in range(10))
MAX_VALUE = 16  # load_digits' pixels are counts of set pixels in 4x4 blocks of the original 32x32 bitmaps: 0..16
# data.normalize=digits is data/pipelines.py's DIGITS_MEAN and DIGITS_STD: the training images' mean and
# std of a pixel in [0, 1], the same in the three channels (tests/test_digits.py checks them against the data).


def digit_images() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 digits as uint8 (N, 1, 8, 8) in [0, 255], and their labels as int64 (N,)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1)
    pixels = (images * (255 / MAX_VALUE)).round().clamp(0, 255).to(torch.uint8)
    return pixels, torch.as_tensor(bunch.target, dtype=torch.int64)


def load_digits(image_size: int) -> tuple[ImageSet, ImageSet]:
    """(training set, test set) of the digits at ``image_size`` pixels, the fixed stratified split."""
    pixels, labels = digit_images()
    kept, held_out = stratified_split(labels, TEST_FRACTION, SPLIT_SEED)
    images = upscaled(pixels, image_size).expand(-1, 3, -1, -1).contiguous()
    return (ImageSet(images[kept], labels[kept], CLASSES), ImageSet(images[held_out], labels[held_out], CLASSES))


def upscaled(pixels: torch.Tensor, image_size: int) -> torch.Tensor:
    """uint8 (N, 1, 8, 8) images resized bilinearly to (N, 1, image_size, image_size), uint8."""
    if pixels.shape[-1] == image_size:
        return pixels
    resized = F.interpolate(pixels.float(), size=(image_size, image_size), mode="bilinear", align_corners=False,
                            antialias=image_size < pixels.shape[-1])
    return resized.round().clamp(0, 255).to(torch.uint8)


def describe_source() -> dict[str, str]:
    """run.json's ``data_source`` for data=digits: where the images come from and how they are split."""
    return {"source": "sklearn.datasets.load_digits (1,797 8x8 images, bundled with scikit-learn)",
            "test": f"stratified: {TEST_FRACTION:g} of each class held out by seed {SPLIT_SEED} (fixed; 450 images)",
            "train": "the rest (1,347 images), from which data.fraction or data.per_class draw"}
