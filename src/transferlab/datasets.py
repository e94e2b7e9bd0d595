"""The dataset table: every fact about a ``data.name`` lives in ``DATASETS``, as ``models.MODELS``
holds the facts about a model; nothing else asks ``if data.name == ...``.

Each entry gives the dataset's loader, the step ``transferlab prepare`` takes for it, the settings
besides data.name that say which data it is (its identity keys: a run's result depends on them
even where they name a place, as data.root names an image folder), the transforms its
conf/data/<name>.yaml gives it, and, where it has them, its own human name, the description of
its source that run.json keeps, and what the feature cache's key holds of it (``feature_source``).

This module is imported when a config is composed, so it must not import torch: the loaders and
prepare steps import what they need when they are called.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the config's types, for reading; config.py imports this module
    from transferlab.config import DataConfig
    from transferlab.data.images import ImageSet


@dataclass(frozen=True)
class DatasetSpec:
    """What transferlab knows about one ``data.name``."""

    # (data config, show a decoding progress bar) -> (full training set, full test set); the
    # training subset is drawn from it afterwards (load_datasets).
    load: Callable[[DataConfig, bool], tuple[ImageSet, ImageSet]]
    # `transferlab prepare`: fetch and verify it; one line saying what is ready, TransferlabError if not.
    prepare: Callable[[DataConfig], str]
    # The transforms conf/data/<name>.yaml gives it (tests/test_datasets.py checks that they agree).
    transforms: Mapping[str, Any]
    # Config keys besides data.name that decide which images these are (result_config keeps them,
    # and run_dirname puts them in the run folder's name, even where NOT_RESULT_KEYS lists them).
    identity_keys: tuple[str, ...] = ()
    # A short human name of the data (run.json's "dataset"); None: data.name itself.
    display_name: Callable[[DataConfig], str] | None = None
    # run.json's "data_source": where its splits come from; None: the dataset has no such entry.
    describe: Callable[[DataConfig], dict[str, str]] | None = None
    # True where data.subset_seed decides which images the data holds, not only which of them train
    # (synthetic generates them from it; an image folder without a test folder holds out its test
    # split by it): runs with another data.subset_seed saw other data, and the report never pairs them.
    images_follow_subset_seed: bool = False
    # The settings besides data.name that the images' features depend on (the feature cache's key:
    # run.json's ``feature_cache``); None: data.name alone says which images these are.
    feature_key: Callable[[DataConfig], dict[str, Any]] | None = None
    # How many classes it has, where that is fixed (data.classes is checked against it when the config
    # is composed); None: known only once loaded (an image folder), where only_classes checks it.
    num_classes: int | None = None


def _load_cifar10(data: DataConfig, show_progress: bool) -> tuple[ImageSet, ImageSet]:
    from transferlab.data.cifar import load_cifar10

    return load_cifar10(data.root, data.download)


def _load_cifar100(data: DataConfig, show_progress: bool) -> tuple[ImageSet, ImageSet]:
    from transferlab.data.cifar import load_cifar100

    return load_cifar100(data.root, data.download)


def _load_imagefolder(data: DataConfig, show_progress: bool) -> tuple[ImageSet, ImageSet]:
    from transferlab.data.imagefolder import load_imagefolder

    return load_imagefolder(data.root, data.stored_size, data.test_fraction, data.subset_seed, data.cache_dir,
                            decode_workers(data.decode_workers), show_progress)


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity: a Slurm job's or taskset's share)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def decode_workers(requested: int) -> int:
    """data.decode_workers as processes to start: one per usable core for 0, and never more than
    there are cores (with a warning): more processes decode no faster and each holds a decoder."""
    cores = usable_cores()
    if requested > cores:
        logging.getLogger(__name__).warning(
            "data.decode_workers=%d is more than the %d CPU core(s) this process may use: decoding with %d",
            requested, cores, cores)
    return cores if requested == 0 else min(requested, cores)


def _load_synthetic(data: DataConfig, show_progress: bool) -> tuple[ImageSet, ImageSet]:
    from transferlab.data.synthetic import make_synthetic

    # The images follow data.subset_seed alone: every repeat of a run is tested alike.
    return make_synthetic(data.num_train, data.num_test, seed=data.subset_seed)


def _load_digits(data: DataConfig, show_progress: bool) -> tuple[ImageSet, ImageSet]:
    from transferlab.data.digits import load_digits

    return load_digits(data.image_size)


def prepare_digits(data: DataConfig) -> str:
    from transferlab.data.digits import digit_images

    return f"digits: {len(digit_images()[1])} images inside scikit-learn's wheel, nothing to fetch"


def _describe_digits(data: DataConfig) -> dict[str, str]:
    from transferlab.data.digits import describe_source

    return describe_source()


def prepare_cifar10(data: DataConfig) -> str:
    return _prepare_cifar("CIFAR-10", _load_cifar10, data)


def prepare_cifar100(data: DataConfig) -> str:
    return _prepare_cifar("CIFAR-100", _load_cifar100, data)


def _prepare_cifar(title: str, load: Callable[[DataConfig, bool], Any], data: DataConfig) -> str:
    from dataclasses import replace

    from transferlab.errors import TransferlabError

    try:
        load(replace(data, download=True), False)  # torchvision checks the MD5 of the archive and of every file
    except TransferlabError as error:
        raise TransferlabError(f"{title}: {error}") from error
    return f"{title}: in place and verified, {Path(data.root).expanduser()}"


def prepare_imagefolder(data: DataConfig) -> str:
    """Check the folder and decode it into the cache (a no-op when the cache is already there)."""
    from transferlab.errors import TransferlabError

    try:
        train, test = _load_imagefolder(data, sys.stderr.isatty())
    except TransferlabError as error:
        raise TransferlabError(f"image folder: {error}") from error
    return (f"image folder {Path(data.root).expanduser()}: {len(train)} training and {len(test)} test images in "
            f"{len(train.classes)} classes, decoded and cached at {train.images.shape[-1]}x{train.images.shape[-1]}")


def prepare_synthetic(data: DataConfig) -> str:
    return "synthetic data: generated in-process, nothing to fetch"


def _image_folder_name(data: DataConfig) -> str:
    return Path(data.root).expanduser().resolve().name


def _image_folder_feature_key(data: DataConfig) -> dict[str, Any]:
    from transferlab.data.imagefolder import scan_folder

    return {"content": scan_folder(data.root).content_key(data.stored_size), "stored_size": data.stored_size,
            "test_fraction": data.test_fraction, "test_seed": data.subset_seed}


def _synthetic_feature_key(data: DataConfig) -> dict[str, Any]:
    return {"num_train": data.num_train, "num_test": data.num_test, "seed": data.subset_seed}


def _describe_image_folder(data: DataConfig) -> dict[str, str]:
    from transferlab.data.imagefolder import describe_source

    return describe_source(data.root, data.test_fraction)


# The protocol's transforms (CIFAR-10's): resize, pad 4 and random crop, flip; test: a plain resize.
_CIFAR10_TRANSFORMS = {"augment": "pad_crop_flip", "normalize": "cifar10", "test_crop": 1.0, "crop_scale": [0.08, 1.0]}

# In the order the error for an unknown data.name lists them.
DATASETS: dict[str, DatasetSpec] = {
    "cifar10": DatasetSpec(load=_load_cifar10, prepare=prepare_cifar10, transforms=_CIFAR10_TRANSFORMS,
                           num_classes=10),
    "cifar100": DatasetSpec(load=_load_cifar100, prepare=prepare_cifar100,
                            transforms={**_CIFAR10_TRANSFORMS, "normalize": "cifar100"}, num_classes=100),
    # The folder is the dataset: runs on two folders are two datasets. Pretrained torchvision models'
    # transforms: RandomResizedCrop and a flip; test: resize to 256 for 224 and centre crop.
    "imagefolder": DatasetSpec(load=_load_imagefolder, prepare=prepare_imagefolder, identity_keys=("data.root",),
                               transforms={"augment": "random_resized_crop", "normalize": "imagenet",
                                           "test_crop": 0.875, "crop_scale": [0.08, 1.0]},
                               display_name=_image_folder_name, describe=_describe_image_folder,
                               images_follow_subset_seed=True, feature_key=_image_folder_feature_key),
    "synthetic": DatasetSpec(load=_load_synthetic, prepare=prepare_synthetic, transforms=_CIFAR10_TRANSFORMS,
                             images_follow_subset_seed=True, feature_key=_synthetic_feature_key, num_classes=10),
    # scikit-learn's 8x8 digits, upscaled: a digit flipped is another digit, so pad and crop without a flip.
    "digits": DatasetSpec(load=_load_digits, prepare=prepare_digits, describe=_describe_digits,
                          transforms={**_CIFAR10_TRANSFORMS, "augment": "pad_crop", "normalize": "digits"},
                          num_classes=10),
}


def identity_keys(data_name: str) -> tuple[str, ...]:
    """The identity keys of ``data_name``; none for a name that is not in the table (the schema
    refuses those, with the list of names)."""
    spec = DATASETS.get(data_name)
    return spec.identity_keys if spec is not None else ()


def dataset_name(data: DataConfig) -> str:
    """A short human name of the data: the dataset's, or an image folder's own folder name, and the
    classes data.classes keeps (``digits (classes 5-9)``): the report never pools runs on other classes."""
    spec = DATASETS[data.name]
    name = spec.display_name(data) if spec.display_name is not None else data.name
    return name if data.classes is None else f"{name} (classes {classes_label(data.classes)})"


def classes_label(classes: Sequence[int]) -> str:
    """data.classes in words: ``5-9`` for a run of consecutive labels, else ``0,2,4``."""
    labels = list(classes)
    if len(labels) > 2 and labels == list(range(labels[0], labels[0] + len(labels))):
        return f"{labels[0]}-{labels[-1]}"
    return ",".join(map(str, labels))


def data_source(data: DataConfig) -> dict[str, str] | None:
    """run.json's ``data_source``: where the splits come from (an image folder's), or None."""
    spec = DATASETS[data.name]
    return spec.describe(data) if spec.describe is not None else None


def feature_source(data: DataConfig) -> dict[str, Any]:
    """Which images these are, as the feature cache's key says it: data.name, the classes kept
    (data.classes) and the dataset's feature_key."""
    spec = DATASETS[data.name]
    return {"name": data.name, **({"classes": list(data.classes)} if data.classes else {}),
            **(spec.feature_key(data) if spec.feature_key is not None else {})}


def load_datasets(data: DataConfig, subset_seed: int, show_progress: bool = False) -> tuple[ImageSet, ImageSet]:
    """(training subset, full test set) for the data config, the subset drawn by ``subset_seed``
    (a run's Config.effective_subset_seed). The images themselves (data=synthetic, and an image
    folder's held-out test split) follow data.subset_seed alone: every repeat is tested alike."""
    from transferlab.data.images import subset_indices

    train, test = DATASETS[data.name].load(data, show_progress)
    if data.classes is not None:
        train, test = (only_classes(train, data.classes), only_classes(test, data.classes))
    indices = subset_indices(train.labels, train.classes, subset_seed, fraction=data.fraction,
                             per_class=data.per_class, sampling=data.sampling)
    if len(indices) == len(train):  # all of it: an image folder's training images stay memory-mapped, uncopied
        return train, test
    return train.subset(indices), test


def check_classes(classes: Sequence[int], num_classes: int) -> None:
    """A ConfigError, in one line, for a label of data.classes that a dataset of ``num_classes`` has not."""
    from transferlab.errors import ConfigError

    missing = [label for label in classes if label >= num_classes]
    if missing:
        raise ConfigError(f"data.classes={list(classes)} is not allowed: the data has {num_classes} classes, labels "
                          f"0 to {num_classes - 1}; {missing[0]} is not one of them")


def only_classes(data: ImageSet, classes: Sequence[int]) -> ImageSet:
    """The images of ``classes`` (data.classes: labels of the full dataset, in the order given), relabelled
    0..len(classes)-1 in that order, with their class names; a ConfigError for a label the data has not."""
    import torch

    from transferlab.data.images import ImageSet

    check_classes(classes, len(data.classes))
    new_label = torch.full((len(data.classes),), -1, dtype=torch.int64)
    new_label[torch.as_tensor(list(classes))] = torch.arange(len(classes))
    relabelled = new_label[data.labels.cpu()]
    kept = torch.nonzero(relabelled >= 0).flatten()
    return ImageSet(data.images[kept], relabelled[kept].to(data.labels.device),
                    tuple(data.classes[label] for label in classes))
