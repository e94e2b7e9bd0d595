"""Data: one module per source (cifar, imagefolder with its on-disk cache, synthetic) and one for
the input pipelines; every source gives ImageSets (uint8 images, labels, class names) that both
pipelines take."""

from transferlab.data.cifar import CIFAR10_ARCHIVE, CIFAR10_URL, CIFAR100_ARCHIVE, load_cifar10, load_cifar100
from transferlab.data.imagefolder import describe_source, load_imagefolder, scan_folder
from transferlab.data.images import ImageSet, hold_out_validation, images_per_class, stratified_split, subset_indices
from transferlab.data.pipelines import (
    CIFAR10_MEAN, CIFAR10_STD, CROP_PADDING, PROTOCOL_TRANSFORMS, STATISTICS, DeviceLoader, ReferenceLoader,
    Transforms, batch_center_crop, batch_crop, batch_flip, batch_normalize, batch_resize, batch_resized_crop,
    epoch_generator, fits_on_device, make_loader, normalization, random_resized_boxes, reference_transform,
)
from transferlab.data.synthetic import make_synthetic
from transferlab.datasets import DATASETS, DatasetSpec, data_source, dataset_name, load_datasets

__all__ = [
    "CIFAR100_ARCHIVE", "CIFAR10_ARCHIVE", "CIFAR10_MEAN", "CIFAR10_STD", "CIFAR10_URL", "CROP_PADDING", "DATASETS",
    "DatasetSpec", "DeviceLoader", "ImageSet", "PROTOCOL_TRANSFORMS", "ReferenceLoader", "STATISTICS", "Transforms",
    "batch_center_crop", "batch_crop", "batch_flip", "batch_normalize", "batch_resize", "batch_resized_crop",
    "data_source", "dataset_name", "describe_source", "epoch_generator", "fits_on_device", "hold_out_validation",
    "images_per_class",
    "load_cifar10", "load_cifar100", "load_datasets", "load_imagefolder", "make_loader", "make_synthetic",
    "normalization", "random_resized_boxes", "reference_transform", "scan_folder", "stratified_split",
    "subset_indices"
]
