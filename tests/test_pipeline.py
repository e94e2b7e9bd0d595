"""The device pipeline computes what the protocol's torchvision transforms compute."""

import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from transferlab.data import (
    CIFAR10_MEAN, CIFAR10_STD, CROP_PADDING, PROTOCOL_TRANSFORMS, STATISTICS, DeviceLoader, ImageSet, ReferenceLoader,
    Transforms, batch_crop, batch_flip, batch_normalize, batch_resize, batch_resized_crop, fits_on_device,
    make_synthetic, random_resized_boxes, reference_transform,
)
from transferlab.data.pipelines import IMAGENET_MEAN, IMAGENET_STD

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


# The study's normalisation (docs/study.md), written out here so that a change of the code's constants shows.
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


@pytest.mark.parametrize("pipeline", [DeviceLoader, ReferenceLoader])
def test_pad_crop_shifts_and_never_flips(pipeline):
    """data.augment=pad_crop (digits, letters, text): the crops of pad_crop_flip, no mirror image."""
    data = position_coded(1800)
    extra = {"device": torch.device("cpu"), "num_workers": 0} if pipeline is ReferenceLoader else {}
    loader = pipeline(data, batch_size=600, image_size=32, train=True, seed=3, transforms=Transforms(augment="pad_crop"),
                      **extra)
    images = torch.cat([batch for batch, _ in loader.epoch(1)])
    offsets, flips = read_augmentation(images)
    assert not flips.any()
    assert int(offsets.min()) == 0 and int(offsets.max()) == 8 and len(set(offsets[:, 1].tolist())) == 9
    source = data.images.float() / 255
    assert (batch_normalize(batch_crop(source, offsets)) - images).abs().max() < 1e-5


@pytest.mark.parametrize("pipeline", [DeviceLoader, ReferenceLoader])
def test_resized_crop_crops_and_never_flips(pipeline):
    """data.augment=resized_crop: random resized crops whose columns still run left to right."""
    data = position_coded(400)
    extra = {"device": torch.device("cpu"), "num_workers": 0} if pipeline is ReferenceLoader else {}
    loader = pipeline(data, batch_size=200, image_size=32, train=True, seed=3,
                      transforms=Transforms(augment="resized_crop", crop_scale=(0.3, 1.0)), **extra)
    values = unnormalize(torch.cat([batch for batch, _ in loader.epoch(1)]))
    columns = values[:, 1, 16, :]  # the green channel: the source column + 1, left to right unless mirrored
    assert (columns[:, -1] > columns[:, 0]).all()
    assert len({tuple(row.tolist()) for row in columns}) > 50  # the crops differ


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


IMAGE_FOLDER_TRANSFORMS = Transforms(augment="random_resized_crop", normalize="imagenet", test_crop=0.75)


def test_random_resized_crop_is_torchvisions_resized_crop_of_each_box():
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (8, 3, 40, 40), dtype=torch.uint8, generator=generator)
    boxes = random_resized_boxes(8, 40, 40, (0.08, 1.0), generator)
    ours = batch_resized_crop(images.float() / 255, boxes, 32)
    for image, box, mine in zip(images, boxes.tolist(), ours):
        exact = TF.resized_crop(image.float() / 255, *box, [32, 32], antialias=False)
        assert torch.allclose(mine, exact, atol=1e-5)
        if box[2] <= 32 and box[3] <= 32:  # enlarging, where PIL's filter is plain bilinear too
            pil = TF.to_tensor(TF.resized_crop(Image.fromarray(image.permute(1, 2, 0).numpy()), *box, [32, 32]))
            assert (mine - pil).abs().max() <= TOLERANCE


def test_random_resized_boxes_follow_torchvisions_rules():
    from torchvision.transforms import RandomResizedCrop

    boxes = random_resized_boxes(2000, 50, 80, (0.2, 0.6), torch.Generator().manual_seed(1))
    top, left, height, width = boxes.T
    assert (top >= 0).all() and (left >= 0).all() and (top + height <= 50).all() and (left + width <= 80).all()
    area = (height * width).float() / (50 * 80)
    assert area.min() > 0.18 and area.max() < 0.62 and area.std() > 0.1  # (rounding to whole pixels)
    aspect = width.float() / height
    assert aspect.min() > 0.7 and aspect.max() < 1.4
    assert len({tuple(b) for b in boxes.tolist()}) > 1900  # random, ...
    assert torch.equal(boxes, random_resized_boxes(2000, 50, 80, (0.2, 0.6), torch.Generator().manual_seed(1)))
    # ... and where no try can fit, torchvision's fallback: the whole image cut to the ratio range, centred.
    [fallback] = random_resized_boxes(1, 20, 60, (1.0, 1.0), torch.Generator().manual_seed(0)).tolist()
    assert fallback == list(RandomResizedCrop.get_params(torch.zeros(3, 20, 60), [1.0, 1.0], [3 / 4, 4 / 3]))


def test_the_test_view_is_the_reference_resize_and_centre_crop_with_the_datasets_statistics():
    generator = torch.Generator().manual_seed(2)
    data = ImageSet(torch.randint(0, 256, (6, 3, 80, 80), dtype=torch.uint8, generator=generator),
                    torch.arange(6), tuple("abcdef"))
    loader = DeviceLoader(data, batch_size=6, image_size=48, train=False, seed=0, transforms=IMAGE_FOLDER_TRANSFORMS)
    [(ours, _)] = list(loader.epoch(1))
    transform = reference_transform(48, train=False, transforms=IMAGE_FOLDER_TRANSFORMS)
    assert [type(step).__name__ for step in transform.transforms] == [
        "Resize", "CenterCrop", "ToTensor", "Normalize"]
    assert transform.transforms[0].size == 64 and tuple(transform.transforms[-1].mean) == IMAGENET_MEAN
    for i in range(6):
        reference = transform(Image.fromarray(data.images[i].permute(1, 2, 0).numpy()))
        # Shrinking 80 -> 64: torch's antialiased bilinear against PIL's, within 2/255 before normalising.
        assert (ours[i] - reference).abs().max() <= 2 * TOLERANCE / min(IMAGENET_STD)


def test_normalisation_uses_the_chosen_statistics():
    data = ImageSet(torch.full((2, 3, 8, 8), 255, dtype=torch.uint8), torch.arange(2), ("a", "b"))
    for name, (mean, std) in STATISTICS.items():
        loader = DeviceLoader(data, 2, 8, train=False, seed=0, transforms=Transforms(normalize=name))
        [(images, _)] = list(loader.epoch(1))
        assert torch.allclose(images[0, :, 0, 0], torch.tensor([(1 - m) / s for m, s in zip(mean, std)]))


@pytest.mark.parametrize("transforms", [PROTOCOL_TRANSFORMS, IMAGE_FOLDER_TRANSFORMS])
def test_streamed_batches_are_the_resident_batches(transforms):
    data, _ = make_synthetic(40, 1, seed=0)
    resident = DeviceLoader(data, 16, 24, train=True, seed=3, transforms=transforms)
    streamed = DeviceLoader(data, 16, 24, train=True, seed=3, transforms=transforms, stream=True)
    for (a, la), (b, lb) in zip(resident.epoch(2), streamed.epoch(2), strict=True):
        assert torch.equal(a, b) and torch.equal(la, lb)


def test_a_set_streams_when_it_would_take_over_half_the_free_gpu_memory(monkeypatch):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (1000, 4000))
    assert fits_on_device(500, torch.device("cuda")) and not fits_on_device(501, torch.device("cuda"))
    assert fits_on_device(10**15, torch.device("cpu"))


def batch_norm_model(num_classes: int) -> torch.nn.Module:
    """A BatchNorm layer on 1 x 1 features, as at the end of ResNet18 on 32 x 32 images: training
    mode cannot normalise a batch of one image there."""
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.BatchNorm2d(4),
                               torch.nn.Flatten(), torch.nn.Linear(4, num_classes))


@pytest.mark.parametrize("pipeline", [DeviceLoader, ReferenceLoader])
def test_a_last_training_batch_of_one_image_joins_the_batch_before(pipeline):
    """65 images in batches of 64 (data.num_train=130 at data.fraction=0.5) train as one batch of
    65, so BatchNorm never sees a batch of one; evaluation keeps its batches of 64 and 1."""
    from transferlab.engine import evaluate, train_one_epoch

    extra = {"device": torch.device("cpu"), "num_workers": 0} if pipeline is ReferenceLoader else {}
    cpu = torch.device("cpu")
    everything, _ = make_synthetic(130, 1, seed=0, size=8)
    for count, expected in ((65, [65]), (129, [64, 65]), (130, [64, 64, 2]), (1, [1])):
        data = everything.subset(torch.arange(count))
        loader = pipeline(data, batch_size=64, image_size=8, train=True, seed=0, **extra)
        batches = list(loader.epoch(1))
        assert [len(labels) for _, labels in batches] == expected and len(loader) == len(expected)
        assert sorted(torch.cat([labels for _, labels in batches]).tolist()) == sorted(data.labels.tolist())
    data = everything.subset(torch.arange(65))
    model = batch_norm_model(len(data.classes))
    trained = train_one_epoch(model, torch.nn.CrossEntropyLoss(), pipeline(data, batch_size=64, image_size=8, train=True, seed=0,
                                              **extra).epoch(1), torch.optim.SGD(model.parameters(), lr=0.1), cpu)
    assert trained.images == 65
    test_batches = pipeline(data, batch_size=64, image_size=8, train=False, seed=0, **extra)
    assert [len(labels) for _, labels in test_batches.epoch(1)] == [64, 1] and len(test_batches) == 2
    assert evaluate(model, test_batches.epoch(1), cpu).images == 65  # eval mode: a batch of one is fine


def test_the_reference_loaders_order_is_the_data_loaders():
    """Batching by sizes draws what DataLoader(shuffle=True) draws: runs keep their images' order."""
    from torch.utils.data import DataLoader

    from transferlab.data import epoch_generator

    data, _ = make_synthetic(10, 1, seed=0, size=8)
    data = ImageSet(data.images, torch.arange(10), data.classes)
    loader = ReferenceLoader(data, batch_size=4, image_size=8, train=True, seed=5, device=torch.device("cpu"),
                             num_workers=0)
    ours = [labels.tolist() for _, labels in loader.epoch(3)]
    plain = DataLoader(list(range(10)), batch_size=4, shuffle=True, generator=epoch_generator(5, 3))
    assert ours == [batch.tolist() for batch in plain]
