"""The device pipeline computes what the protocol's torchvision transforms compute."""

import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from transferlab.data import (
    CIFAR10_MEAN, CIFAR10_STD, CROP_PADDING, DeviceLoader, ImageSet, ReferenceLoader, batch_crop, batch_flip,
    batch_normalize, batch_resize, channel_statistics, make_synthetic, reference_transform,
)

# PIL resizes in two separable passes and rounds to uint8 after each, so it can sit up to
# 2 x 0.5/255 away from exact bilinear interpolation; 1e-6 absorbs float32 rounding on our side.
TOLERANCE = 1 / 255 + 1e-6


def pil_reference(image: torch.Tensor, size: int, top: int, left: int, flip: bool) -> torch.Tensor:
    """What T.Resize, T.RandomCrop(size, padding=4) and T.RandomHorizontalFlip do to a PIL image
    when they draw (top, left) and flip, then T.ToTensor."""
    pil = Image.fromarray(image.permute(1, 2, 0).numpy())
    pil = TF.resize(pil, [size, size])
    pil = TF.crop(TF.pad(pil, CROP_PADDING), top, left, size, size)
    if flip:
        pil = TF.hflip(pil)
    return TF.to_tensor(pil)


@pytest.mark.parametrize("size", [32, 64, 224])
def test_training_augmentation_matches_the_reference_transforms(size):
    generator = torch.Generator().manual_seed(size)
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8, generator=generator)
    offsets = torch.randint(0, 2 * CROP_PADDING + 1, (6, 2), generator=generator)
    offsets[0] = torch.tensor([0, 0])  # the corners, where padding shows most
    offsets[1] = torch.tensor([2 * CROP_PADDING, 2 * CROP_PADDING])
    flips = torch.tensor([True, False, True, False, True, False])
    ours = batch_flip(batch_crop(batch_resize(images.float() / 255, size), offsets), flips)
    for i in range(len(images)):
        reference = pil_reference(images[i], size, int(offsets[i, 0]), int(offsets[i, 1]), bool(flips[i]))
        assert ours[i].shape == reference.shape == (3, size, size)
        assert (ours[i] - reference).abs().max() <= TOLERANCE


def test_test_transform_matches_the_reference_after_normalization():
    test, _ = make_synthetic(16, 1, seed=0)
    loader = DeviceLoader(test, batch_size=16, image_size=96, train=False, seed=0)
    [(ours, labels)] = list(loader.epoch(1))
    transform = reference_transform(96, train=False)
    for i in range(16):
        reference = transform(Image.fromarray(test.images[i].permute(1, 2, 0).numpy()))
        assert (ours[i] - reference).abs().max() <= TOLERANCE / min(CIFAR10_STD)
    assert torch.equal(labels, test.labels)


def test_normalize_uses_the_protocol_statistics():
    ones = torch.ones(1, 3, 2, 2)
    expected = torch.tensor([(1 - m) / s for m, s in zip(CIFAR10_MEAN, CIFAR10_STD)])
    mean, std = channel_statistics(CIFAR10_MEAN, CIFAR10_STD, ones.device)
    assert torch.allclose(batch_normalize(ones, mean, std)[0, :, 0, 0], expected)


def test_device_loader_epochs_cover_every_image_once_and_differ():
    data = ImageSet(torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 3, 4, 4).contiguous(),
                    torch.arange(10), tuple("abcdefghij"))
    loader = DeviceLoader(data, batch_size=4, image_size=4, train=True, seed=1)
    assert len(loader) == 3
    orders = [torch.cat([labels for _, labels in loader.epoch(epoch)]) for epoch in (1, 2)]
    assert [len(batch) for batch, _ in loader.epoch(1)] == [4, 4, 2]
    assert sorted(orders[0].tolist()) == list(range(10))
    assert not torch.equal(orders[0], orders[1])
    assert torch.equal(orders[0], torch.cat([labels for _, labels in loader.epoch(1)]))  # an epoch repeats


def test_both_pipelines_give_the_same_batches_shapes_and_labels():
    data, _ = make_synthetic(20, 1, seed=0)
    device = DeviceLoader(data, batch_size=8, image_size=40, train=False, seed=0)
    reference = ReferenceLoader(data, batch_size=8, image_size=40, train=False, seed=0,
                                device=torch.device("cpu"), num_workers=0)
    for (a, la), (b, lb) in zip(device.epoch(1), reference.epoch(1), strict=True):
        assert a.shape == b.shape and torch.equal(la, lb)
        assert (a - b).abs().max() <= TOLERANCE / min(CIFAR10_STD)
