"""data=imagefolder: the layout, decoding any format and mode, the cache, the held-out split, and
the one-line errors, on folders the tests write (PNG and JPEG, mixed sizes and modes)."""

import multiprocessing
import os

import numpy as np
import pytest
import torch
from PIL import Image

import transferlab.data.cache as cache_module
from transferlab.data import load_imagefolder, scan_folder
from transferlab.data.cache import decode_image
from transferlab.errors import ConfigError, TransferlabError

from conftest import IMAGE_KINDS, write_image_folder


def load(root, cache, **settings):
    arguments = dict(stored_size=24, test_fraction=0.25, seed=0, cache_dir=cache, workers=1)
    return load_imagefolder(root, **{**arguments, **settings})


def cache_entries(cache):
    folder = cache / "imagefolder"
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock")) if folder.exists() else []


def test_files_and_classes_are_torchvisions_imagefolder(tmp_path):
    from torchvision.datasets import ImageFolder

    root = write_image_folder(tmp_path / "pets", per_class=8)
    listing = scan_folder(root)
    reference = ImageFolder(str(root / "train"))
    assert listing.classes == tuple(reference.classes) == ("cat", "dog", "owl")
    assert [(str(path), label) for path, label in listing.train] == reference.samples
    assert listing.test_folder == "val" and len(listing.test) == 24


def test_every_format_size_and_mode_becomes_rgb_at_the_stored_size(tmp_path):
    root = write_image_folder(tmp_path / "f", per_class=len(IMAGE_KINDS), splits=("train",), classes=("owl", "cat"))
    for index, (extension, mode, width, height) in enumerate(IMAGE_KINDS):
        path = root / "train" / "owl" / f"train_owl_{index}{extension}"
        with Image.open(path) as image:
            assert (image.mode, image.size) == (mode, (width, height))
            # What the file holds, as 8-bit RGB: the mean colour the decoded image must keep.
            if mode == "I;16":
                expected = np.asarray(image, dtype=np.float32).mean() / 257
            else:
                expected = np.asarray(image.convert("RGB"), dtype=np.float32).mean()
        decoded = decode_image(path, 20)
        assert decoded.shape == (3, 20, 20) and decoded.dtype == np.uint8, path.name
        assert abs(decoded.astype(np.float32).mean() - expected) < 6, path.name  # not clipped, not blackened
        if mode in ("L", "I;16"):
            assert (decoded[0] == decoded[1]).all() and (decoded[1] == decoded[2]).all(), path.name


def test_the_second_load_reads_the_cache_and_a_changed_file_is_decoded_again(tmp_path, monkeypatch):
    root = write_image_folder(tmp_path / "pets", per_class=4)
    train, test = load(root, tmp_path / "cache")
    assert train.images.shape == (12, 3, 24, 24) and test.images.shape == (12, 3, 24, 24)
    assert train.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4 and train.classes == ("cat", "dog", "owl")

    def refuse(path, size):
        raise AssertionError(f"decoded {path} again")

    monkeypatch.setattr(cache_module, "decode_image", refuse)
    again, again_test = load(root, tmp_path / "cache")  # from the cache alone: nothing is decoded
    assert torch.equal(again.images, train.images) and torch.equal(again_test.images, test.images)
    assert torch.equal(again.labels, train.labels)
    assert len(cache_entries(tmp_path / "cache")) == 1

    monkeypatch.undo()
    changed = root / "train" / "dog" / "train_dog_0.png"
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    load(root, tmp_path / "cache")  # a file's modification time changed: a new cache is decoded
    assert len(cache_entries(tmp_path / "cache")) == 2
    load(root, tmp_path / "cache", stored_size=16)  # so does another stored size
    assert len(cache_entries(tmp_path / "cache")) == 3


def test_parallel_decoding_stores_what_one_process_stores(tmp_path):
    root = write_image_folder(tmp_path / "pets", per_class=8)
    one, one_test = load(root, tmp_path / "one", workers=1)
    two, two_test = load(root, tmp_path / "two", workers=2)
    assert torch.equal(one.images, two.images) and torch.equal(one_test.images, two_test.images)


def _load_in_child(root, cache, log):
    build = cache_module._build

    def logged_build(*args, **kwargs):
        with open(log, "a") as handle:
            handle.write(f"{os.getpid()}\n")
        build(*args, **kwargs)

    cache_module._build = logged_build
    train, _ = load(root, cache)
    assert len(train) == 48


def test_processes_loading_one_folder_at_once_decode_it_once(tmp_path):
    root = write_image_folder(tmp_path / "pets", per_class=16)
    log = tmp_path / "builds.log"
    context = multiprocessing.get_context("fork")
    children = [context.Process(target=_load_in_child, args=(root, tmp_path / "cache", log)) for _ in range(3)]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=120)
    assert [child.exitcode for child in children] == [0, 0, 0]
    assert len(log.read_text().splitlines()) == 1


def test_without_val_a_stratified_share_of_train_is_the_test_set(tmp_path):
    root = write_image_folder(tmp_path / "pets", per_class=8, splits=("train",))
    train, test = load(root, tmp_path / "cache", test_fraction=0.25, seed=3)
    assert torch.bincount(test.labels).tolist() == [2, 2, 2] and torch.bincount(train.labels).tolist() == [6, 6, 6]
    pixels = {tuple(image.flatten().tolist()) for image in torch.cat([train.images, test.images])}
    assert len(pixels) == 24  # every image once: the two sets do not overlap
    same_train, same_test = load(root, tmp_path / "cache", test_fraction=0.25, seed=3)
    assert torch.equal(same_test.images, test.images)
    other_train, other_test = load(root, tmp_path / "cache", test_fraction=0.25, seed=4)
    assert not torch.equal(other_test.images, test.images)


def _no_images(root):
    (root / "train" / "dog").mkdir(parents=True)
    write_image_folder(root / "x", per_class=1, splits=("train",), classes=("cat",))
    (root / "x" / "train" / "cat").rename(root / "train" / "cat")
    (root / "train" / "dog" / "notes.txt").write_text("not an image")


def _different_classes(root):
    write_image_folder(root, per_class=1, classes=("cat", "dog"))
    (root / "val" / "dog").rename(root / "val" / "wolf")


@pytest.mark.parametrize("make, message", [
    (lambda root: None, "is not a folder; data=imagefolder needs DIR/train/<class>/<images>"),
    (lambda root: (root / "val" / "cat").mkdir(parents=True), "has no train/ folder"),
    (lambda root: (root / "train").mkdir(parents=True), "train has no class folders"),
    (lambda root: write_image_folder(root, per_class=2, classes=("cat",)), "has one class folder (cat)"),
    (_no_images, "train/dog has no images (files Pillow reads: .bmp, .jpeg, .jpg, .png"),
    (_different_classes, "have different classes (missing from val/: dog; not in train/: wolf)"),
])
def test_a_bad_folder_is_one_line_that_names_it_and_nothing_is_cached(tmp_path, make, message):
    root = tmp_path / "folder"
    make(root)
    with pytest.raises(ConfigError) as error:
        load(root, tmp_path / "cache")
    assert message in str(error.value) and str(root) in str(error.value)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("workers", [1, 2])
def test_a_corrupt_file_is_named_and_leaves_no_half_written_cache(tmp_path, workers):
    root = write_image_folder(tmp_path / "pets", per_class=6)
    corrupt = root / "val" / "owl" / "val_owl_1.jpg"
    corrupt.write_bytes(corrupt.read_bytes()[:200])  # a truncated download
    with pytest.raises(TransferlabError) as error:
        load(root, tmp_path / "cache", workers=workers)
    assert str(error.value).startswith(f"{corrupt} is not an image Pillow can read")
    assert "remove or replace it" in str(error.value) and "\n" not in str(error.value)
    assert cache_entries(tmp_path / "cache") == []  # no key folder, no temporary folder
    corrupt.unlink()
    train, test = load(root, tmp_path / "cache", workers=workers)
    assert (len(train), len(test)) == (18, 17)
