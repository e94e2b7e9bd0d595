"""The device pipeline computes what the protocol's torchvision transforms compute."""

import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from transferlab.data import (
    CIFAR10_MEAN, CIFAR10_STD, CROP_PADDING, DeviceLoader, ImageSet, ReferenceLoader, batch_crop, batch_flip,
    batch_normalize, batch_resize, make_synthetic, reference_transform,
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


# PROTOCOL.md's normalisation, written out here so that a change of the code's constants shows.
PROTOCOL_MEAN = (0.4914, 0.4822, 0.4465)
PROTOCOL_STD = (0.2023, 0.1994, 0.2010)


def unnormalize(images: torch.Tensor) -> torch.Tensor:
    """Normalised images back to their uint8 values, by the protocol's statistics."""
    mean, std = torch.tensor(PROTOCOL_MEAN).view(1, 3, 1, 1), torch.tensor(PROTOCOL_STD).view(1, 3, 1, 1)
    return (images * std + mean).mul(255).round()


def test_both_pipelines_normalize_with_the_protocols_mean_and_std():
    levels = torch.tensor([[0, 0, 0], [255, 255, 255], [10, 128, 240]], dtype=torch.uint8)
    data = ImageSet(levels.view(3, 3, 1, 1).expand(3, 3, 32, 32).contiguous(), torch.arange(3), ("a", "b", "c"))
    expected = torch.stack([torch.tensor([(v / 255 - m) / s for v, m, s in zip(image.tolist(), PROTOCOL_MEAN,
                                                                                PROTOCOL_STD)]) for image in levels])
    device = DeviceLoader(data, batch_size=3, image_size=32, train=False, seed=0)
    reference = ReferenceLoader(data, batch_size=3, image_size=32, train=False, seed=0, device=torch.device("cpu"),
                                num_workers=0)
    for loader in (device, reference):
        [(images, _)] = list(loader.epoch(1))
        assert torch.allclose(images, expected.view(3, 3, 1, 1).expand(3, 3, 32, 32), atol=1e-5), type(loader)


def position_coded(count: int) -> ImageSet:
    """``count`` copies of one 32x32 image whose red channel is its row + 1 and green its column + 1
    (never 0, so the crop's zero padding shows), so that a crop offset and a flip can be read back."""
    rows = torch.arange(1, 33, dtype=torch.uint8).view(32, 1).expand(32, 32)
    image = torch.stack([rows, rows.T, torch.full((32, 32), 200, dtype=torch.uint8)])
    return ImageSet(image.expand(count, 3, 32, 32).contiguous(), torch.zeros(count, dtype=torch.long), ("a",))


def read_augmentation(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(offsets (B, 2) = (top, left) into the padded image, flips (B,)) of position-coded images
    cropped to 32x32 with 4 pixels of padding: the centre pixel shows image row top + 12 (value
    top + 13), and its column left + 12 (value left + 13), or, flipped, left + 11."""
    values = unnormalize(images)
    flips = values[:, 1, 16, 20] < values[:, 1, 16, 10]  # the columns run right to left
    top = values[:, 0, 16, 16] - 13
    left = values[:, 1, 16, 16] - 13 + flips.long()
    return torch.stack([top, left], dim=1).long(), flips


def check_crops_and_flips(offsets: torch.Tensor, flips: torch.Tensor) -> None:
    """Offsets 0..8 (4 pixels of padding a side), each about as often; flips about half the time."""
    assert int(offsets.min()) == 0 and int(offsets.max()) == 8
    for side in (0, 1):
        frequencies = torch.bincount(offsets[:, side], minlength=9).float() / len(offsets)
        assert ((frequencies - 1 / 9).abs() < 0.04).all(), frequencies
    assert abs(flips.float().mean().item() - 0.5) < 0.05


@pytest.mark.parametrize("pipeline", [DeviceLoader, ReferenceLoader])
def test_training_crops_are_0_to_8_pixels_a_side_and_half_the_images_are_flipped(pipeline):
    """Both pipelines' training transforms, read back from their output: the draws follow the
    protocol, and each image is exactly the device pipeline's crop and flip at the drawn place."""
    data = position_coded(1800)
    extra = {"device": torch.device("cpu"), "num_workers": 0} if pipeline is ReferenceLoader else {}
    loader = pipeline(data, batch_size=600, image_size=32, train=True, seed=3, **extra)
    images = torch.cat([batch for batch, _ in loader.epoch(1)])
    offsets, flips = read_augmentation(images)
    check_crops_and_flips(offsets, flips)
    source = data.images.float() / 255
    assert (batch_normalize(batch_flip(batch_crop(source, offsets), flips)) - images).abs().max() < 1e-5


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
