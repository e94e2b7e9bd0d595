"""Data: one module per source (cifar, synthetic) and one for the input pipelines; every source
gives ImageSets (uint8 images, labels, class names) that both pipelines take."""

from transferlab.data.cifar import CIFAR10_ARCHIVE, CIFAR10_URL, load_cifar10
from transferlab.data.images import ImageSet, stratified_split, subset_indices
from transferlab.data.pipelines import (
    CIFAR10_MEAN, CIFAR10_STD, CROP_PADDING, DeviceLoader, ReferenceLoader, batch_crop, batch_flip, batch_normalize,
    batch_resize, channel_statistics, epoch_generator, make_loader, reference_transform,
)
from transferlab.data.synthetic import make_synthetic

__all__ = [
    "CIFAR10_ARCHIVE", "CIFAR10_MEAN", "CIFAR10_STD", "CIFAR10_URL", "CROP_PADDING", "DeviceLoader", "ImageSet",
    "ReferenceLoader", "batch_crop", "batch_flip", "batch_normalize", "batch_resize", "channel_statistics", "epoch_generator",
    "load_cifar10", "make_loader", "make_synthetic", "reference_transform", "stratified_split", "subset_indices",
]
