"""Data written by the test: CIFAR-10 and CIFAR-100 archives in their own on-disk formats, and image
folders of mixed formats, sizes and modes."""

from __future__ import annotations

import pickle
import tarfile
from pathlib import Path

import numpy as np

def write_cifar10(root: Path, train_per_batch: int = 40, num_test: int = 80, seed: int = 0) -> Path:
    """cifar-10-python.tar.gz in CIFAR-10's own format (five training batches, a test batch and
    batches.meta, each a pickled dict) with random images; returns the archive's path."""
    rng = np.random.default_rng(seed)
    folder = root / "build" / "cifar-10-batches-py"
    folder.mkdir(parents=True)

    def batch(count: int, name: str) -> None:
        data = rng.integers(0, 256, size=(count, 3072), dtype=np.uint8)
        labels = [int(i % 10) for i in range(count)]
        with open(folder / name, "wb") as handle:
            pickle.dump({"batch_label": name, "labels": labels, "data": data,
                         "filenames": [f"{name}_{i}.png" for i in range(count)]}, handle)

    for index in range(1, 6):
        batch(train_per_batch, f"data_batch_{index}")
    batch(num_test, "test_batch")
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": names, "num_cases_per_batch": train_per_batch, "num_vis": 3072}, handle)
    archive = root / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    return archive


IMAGE_FOLDER_CLASSES = ("cat", "dog", "owl")
# (extension, Pillow mode, width, height): PNG and JPEG, mixed sizes, every common mode.
IMAGE_KINDS = [(".png", "RGB", 40, 30), (".jpg", "RGB", 64, 64), (".png", "L", 23, 50), (".png", "RGBA", 50, 50),
               (".png", "P", 36, 36), (".jpeg", "L", 48, 32), (".JPG", "CMYK", 32, 40), (".png", "I;16", 30, 30)]


def write_image_folder(root: Path, per_class: int = 8, splits: tuple[str, ...] = ("train", "val"),
                       classes: tuple[str, ...] = IMAGE_FOLDER_CLASSES, seed: int = 0) -> Path:
    """An image folder as torchvision's ImageFolder reads it: root/<split>/<class>/<file>, each class a
    colour of its own with noise (so it can be learnt), in the mixed formats, sizes and modes of IMAGE_KINDS."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split in splits:
        for label, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            colour = np.array([(label * 97) % 256, (label * 181 + 60) % 256, (255 - label * 71) % 256])
            for index in range(per_class):
                extension, mode, width, height = IMAGE_KINDS[index % len(IMAGE_KINDS)]
                pixels = (colour + rng.normal(0, 25, size=(height, width, 3))).clip(0, 255).astype(np.uint8)
                image = Image.fromarray(pixels)
                if mode == "I;16":
                    image = Image.fromarray((pixels.mean(axis=2) * 257).astype(np.uint16))
                elif mode == "P":
                    image = image.convert("P", palette=Image.Palette.ADAPTIVE)
                elif mode != "RGB":
                    image = image.convert(mode)
                image.save(folder / f"{split}_{name}_{index}{extension}",
                           format="JPEG" if extension.lower() in (".jpg", ".jpeg") else "PNG")
    return root


def write_cifar100(root: Path, num_train: int = 200, num_test: int = 100, seed: int = 0) -> Path:
    """cifar-100-python.tar.gz in CIFAR-100's own format (pickled train, test and meta, with fine and
    coarse labels) with random images; returns the archive's path."""
    rng = np.random.default_rng(seed)
    folder = root / "build" / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, count in (("train", num_train), ("test", num_test)):
        fine = [int(i % 100) for i in range(count)]
        with open(folder / name, "wb") as handle:
            pickle.dump({"batch_label": name, "fine_labels": fine, "coarse_labels": [f // 5 for f in fine],
                         "data": rng.integers(0, 256, size=(count, 3072), dtype=np.uint8),
                         "filenames": [f"{name}_{i}.png" for i in range(count)]}, handle)
    with open(folder / "meta", "wb") as handle:
        pickle.dump({"fine_label_names": [f"fine{k:02d}" for k in range(100)],
                     "coarse_label_names": [f"coarse{k:02d}" for k in range(20)]}, handle)
    archive = root / "cifar-100-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-100-python")
    return archive
