"""data=imagefolder: the layout, decoding any format and mode, the cache, the held-out split, and
the one-line errors, on folders the tests write (PNG and JPEG, mixed sizes and modes)."""

import errno
import json
import logging
import multiprocessing
import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import transferlab.data.cache as cache_module
from transferlab.data import load_imagefolder, scan_folder
from transferlab.data.cache import decode_image
from transferlab.errors import ConfigError, TransferlabError

from helpers import IMAGE_KINDS, write_image_folder


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
        return build(*args, **kwargs)

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


@pytest.mark.parametrize("workers", [1, 2])
def test_every_unreadable_file_is_counted_and_the_first_by_path_is_named(tmp_path, workers):
    """All files are decoded before the error (a pool stopped with tasks queued can hang), so the
    line names the first bad file by path, whichever worker met it first, and counts the others."""
    root = write_image_folder(tmp_path / "pets", per_class=6)
    bad = [root / "train" / "cat" / "train_cat_1.jpg", root / "val" / "owl" / "val_owl_1.jpg"]
    for path in bad:
        path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(TransferlabError) as error:
        load(root, tmp_path / "cache", workers=workers)
    assert str(error.value).startswith(f"{min(bad)} is not an image Pillow can read")
    assert str(error.value).endswith("remove or replace it (and 1 more file(s) that cannot be read)")
    assert cache_entries(tmp_path / "cache") == []


# Links, and the same image twice: a test image that also trains is a wrong answer, never a warning.


def test_links_to_folders_are_refused_and_links_to_files_read_once(tmp_path):
    """The tester's folder: `ln -s . train/cat/self` and `ln -s .. train/dog/up` made 16 files 7,216
    images, cats labelled dog, and put the same images in both splits."""
    root = write_image_folder(tmp_path / "pets", per_class=8, splits=("train",), classes=("cat", "dog"))
    (root / "train" / "cat" / "self").symlink_to(".")
    (root / "train" / "dog" / "up").symlink_to("..")
    with pytest.raises(ConfigError) as error:
        load(root, tmp_path / "cache")
    message = str(error.value)
    assert message.startswith(f"{root / 'train' / 'cat' / 'self'} is a link to the folder {root / 'train' / 'cat'}")
    assert "following it would loop" in message and "\n" not in message
    assert not (tmp_path / "cache").exists()
    (root / "train" / "cat" / "self").unlink()
    with pytest.raises(ConfigError) as error:
        load(root, tmp_path / "cache")
    assert str(error.value).startswith(f"{root / 'train' / 'dog' / 'up'} is a link to the folder {root / 'train'}, a "
                                       "folder that contains it: following it would loop")
    (root / "train" / "dog" / "up").unlink()
    # What is followed: a link to a file (here outside the folder), and a class folder that is a link.
    outside = write_image_folder(tmp_path / "more", per_class=1, splits=("train",), classes=("owl", "cow"), seed=1)
    (root / "train" / "dog" / "linked.png").symlink_to(outside / "train" / "owl" / "train_owl_0.png")
    (root / "train" / "cow").symlink_to(outside / "train" / "cow", target_is_directory=True)
    train, test = load(root, tmp_path / "cache")
    assert len(train) + len(test) == 8 + 9 + 1 and train.classes == ("cat", "cow", "dog")
    assert torch.bincount(torch.cat([train.labels, test.labels])).tolist() == [8, 1, 9]


@pytest.mark.parametrize("link, target, why", [
    ("train/cat/sub/again", "..", "following it would loop"),
    ("train/cat/twin", "sub", "its images would be read twice"),
    ("train/cat/extra", "{outside}", "outside its class folder"),
])
def test_every_link_to_a_folder_in_a_class_folder_is_one_line_that_names_it(tmp_path, link, target, why):
    root = write_image_folder(tmp_path / "pets", per_class=2, classes=("cat", "dog"))
    (root / "train" / "cat" / "sub").mkdir()
    (root / "train" / "cat" / "train_cat_0.png").rename(root / "train" / "cat" / "sub" / "train_cat_0.png")
    (tmp_path / "outside").mkdir()
    (root / link).symlink_to(target.format(outside=tmp_path / "outside"), target_is_directory=True)
    with pytest.raises(ConfigError) as error:
        scan_folder(root)
    message = str(error.value)
    assert message.startswith(f"{root / link} is a link to the folder ") and why in message and "\n" not in message
    assert "remove the link" in message


def _link_beside(root):
    (root / "train" / "cat" / "again.png").symlink_to("train_cat_0.png")
    return root / "train" / "cat" / "train_cat_0.png", root / "train" / "cat" / "again.png", "read twice"  # by name


def _hard_link(root):
    (root / "train" / "cat" / "sub").mkdir()
    os.link(root / "train" / "cat" / "train_cat_0.png", root / "train" / "cat" / "sub" / "copy.png")
    return root / "train" / "cat" / "sub" / "copy.png", root / "train" / "cat" / "train_cat_0.png", "read twice"


def _cat_linked_as_dog(root):
    (root / "train" / "dog" / "cat.png").symlink_to(root / "train" / "cat" / "train_cat_0.png")
    return root / "train" / "dog" / "cat.png", root / "train" / "cat" / "train_cat_0.png", "read twice"


def _val_links_to_train(root):
    (root / "val" / "cat" / "leak.png").symlink_to(root / "train" / "cat" / "train_cat_0.png")
    return (root / "val" / "cat" / "leak.png", root / "train" / "cat" / "train_cat_0.png",
            "a training image would be tested")


def _val_is_train(root):
    shutil.rmtree(root / "val")
    (root / "val").symlink_to("train", target_is_directory=True)
    return (root / "val" / "cat" / "train_cat_0.png", root / "train" / "cat" / "train_cat_0.png",
            "a training image would be tested")


@pytest.mark.parametrize("make", [_link_beside, _hard_link, _cat_linked_as_dog, _val_links_to_train, _val_is_train])
def test_a_file_reached_twice_is_one_line_naming_both_paths(tmp_path, make):
    root = write_image_folder(tmp_path / "pets", per_class=2, classes=("cat", "dog"))
    second, first, why = make(root)  # in the order of the scan: a folder's files, then its subfolders
    with pytest.raises(ConfigError) as error:
        load(root, tmp_path / "cache")
    message = str(error.value)
    assert message.startswith(f"{second} ") and str(first) in message and "are one file" in message, message
    assert why in message and "\n" not in message
    assert not (tmp_path / "cache").exists()


def test_a_link_that_leads_nowhere_is_named(tmp_path):
    root = write_image_folder(tmp_path / "pets", per_class=2, classes=("cat", "dog"))
    (root / "train" / "dog" / "gone.png").symlink_to(tmp_path / "deleted.png")
    with pytest.raises(ConfigError) as error:
        load(root, tmp_path / "cache")
    assert str(error.value).startswith(f"{root / 'train' / 'dog' / 'gone.png'} is a link to "
                                       f"{tmp_path / 'deleted.png'}, which does not exist")


@pytest.mark.parametrize("copy, splits, why", [
    ("val/cat/copy.png", ("train", "val"), "one in train/ and one in val/: a training image would be tested"),
    ("train/dog/copy.png", ("train", "val"), "in two classes (cat and dog)"),
    ("train/cat/sub/copy.png", ("train",), "data.test_fraction could put one in each split"),
])
def test_the_same_image_in_two_files_that_could_leak_is_one_line(tmp_path, copy, splits, why):
    root = write_image_folder(tmp_path / "pets", per_class=3, classes=("cat", "dog"), splits=splits)
    original = root / "train" / "cat" / "train_cat_1.jpg"
    (root / copy).parent.mkdir(exist_ok=True)
    shutil.copyfile(original, root / copy)
    with pytest.raises(TransferlabError) as error:
        load(root, tmp_path / "cache")
    message = str(error.value)
    assert message.startswith(f"{original} and {root / copy} hold the same image (identical bytes)"), message
    assert why in message and "\n" not in message


def test_a_copy_in_its_own_class_with_a_separate_test_split_is_a_warning(tmp_path, caplog):
    root = write_image_folder(tmp_path / "pets", per_class=3, classes=("cat", "dog"))
    shutil.copyfile(root / "train" / "cat" / "train_cat_1.jpg", root / "train" / "cat" / "copy.jpg")
    with caplog.at_level(logging.WARNING, logger="transferlab"):
        train, test = load(root, tmp_path / "cache")
    assert (len(train), len(test)) == (7, 6)
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"{root / 'train' / 'cat' / 'copy.jpg'}" in warning and "identical bytes" in warning


# The cache: verified when it is opened, rebuilt with a warning when damaged; no temporary outlives its process.


def _truncate(path):
    with open(path, "rb+") as handle:
        handle.truncate(path.stat().st_size // 2)


@pytest.mark.parametrize("damage, reason", [
    (lambda folder: _truncate(folder / "images.npy"), "images.npy holds"),
    (lambda folder: (folder / "about.json").unlink(), "about.json is missing"),
    (lambda folder: (folder / "about.json").write_text('{"images": 3'), "about.json"),
    (lambda folder: _truncate(folder / "labels.npy"), "labels.npy"),
])
def test_a_damaged_cache_is_rebuilt_with_a_warning(tmp_path, caplog, damage, reason):
    root = write_image_folder(tmp_path / "pets", per_class=2, classes=("cat", "dog"))
    train, test = load(root, tmp_path / "cache")
    expected = train.images.clone(), test.images.clone()  # the damage below reaches into this memory map
    [entry] = cache_entries(tmp_path / "cache")
    folder = tmp_path / "cache" / "imagefolder" / entry
    damage(folder)
    with caplog.at_level(logging.WARNING, logger="transferlab"):
        again, again_test = load(root, tmp_path / "cache")
    assert torch.equal(again.images, expected[0]) and torch.equal(again_test.images, expected[1])
    assert torch.equal(again.labels, train.labels)
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert str(folder) in warning and "is damaged" in warning and reason in warning and "decoding it again" in warning
    assert cache_entries(tmp_path / "cache") == [entry]
    caplog.clear()
    load(root, tmp_path / "cache")  # now whole: read without a word
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_temporaries_that_no_process_is_writing_are_removed(tmp_path):
    from transferlab.locks import file_lock

    root = write_image_folder(tmp_path / "pets", per_class=2, classes=("cat", "dog"))
    folder = tmp_path / "cache" / "imagefolder"
    stale, busy = folder / ".0123abcd0123abcd0123abcd.4242.tmp", folder / ".4567cdef4567cdef4567cdef.4343.tmp"
    for temporary in (stale, busy):
        temporary.mkdir(parents=True)
        (temporary / "images.npy").write_bytes(b"\0" * 1000)
    with file_lock(folder / "4567cdef4567cdef4567cdef.lock"):  # as a process that is decoding that cache
        load(root, tmp_path / "cache")
        assert not stale.exists() and busy.exists()
    load(root, tmp_path / "cache")
    assert not busy.exists()


def test_the_cache_size_error_gives_a_readable_size(tmp_path, monkeypatch):
    root = write_image_folder(tmp_path / "pets", per_class=2, classes=("cat", "dog"))

    def full_disk(descriptor, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache_module.os, "posix_fallocate", full_disk)
    with pytest.raises(TransferlabError) as error:
        load(root, tmp_path / "cache")
    assert f"the image cache needs 13.8 KB in {tmp_path / 'cache' / 'imagefolder'}" in str(error.value)  # 8 x 3 x 24 x 24 bytes
    assert cache_entries(tmp_path / "cache") == []


def _decode_until_killed(root, cache, workers):
    def slow(path, size):
        time.sleep(0.2)
        return decode_image(path, size)

    cache_module.decode_image = slow
    load(root, cache, workers=workers)


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_a_decoding_killed_with_sigkill_leaves_nothing_the_next_run_keeps(tmp_path, workers):
    """kill -9 during decoding left a temporary (1.4 GB for the tester) that nothing removed."""
    root = write_image_folder(tmp_path / "pets", per_class=16, classes=("cat", "dog"))
    child = multiprocessing.get_context("fork").Process(target=_decode_until_killed,
                                                        args=(root, tmp_path / "cache", workers))
    child.start()
    folder = tmp_path / "cache" / "imagefolder"
    deadline = time.monotonic() + 60
    while not list(folder.glob(f".*.{child.pid}.tmp")) and time.monotonic() < deadline:
        time.sleep(0.05)
    [temporary] = folder.glob(f".*.{child.pid}.tmp")
    time.sleep(0.5)  # into the decoding (0.2 s an image)
    os.kill(child.pid, signal.SIGKILL)
    child.join(timeout=60)
    assert temporary.exists()  # kill -9: nothing in the process could remove it
    # With 2 workers the load waits for the orphaned ones to end their chunk and let go of the lock.
    train, test = load(root, tmp_path / "cache")
    assert len(train) + len(test) == 64 and not temporary.exists()
    assert len(cache_entries(tmp_path / "cache")) == 1


def _decode_recording_signals(folder):
    def recording(path, size):
        handlers = (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT))
        names = ["default" if h == signal.SIG_DFL else "ignored" if h == signal.SIG_IGN else "the run's"
                 for h in handlers]
        (folder / f"{os.getpid()}.txt").write_text(" ".join(names))
        return decode_image(path, size)

    return recording


@pytest.mark.parametrize("corrupt", [False, True])
def test_decoding_workers_do_not_inherit_the_runs_signal_handlers(tmp_path, monkeypatch, capfd, corrupt):
    """Under the run's SIGTERM handler (run.py raises RunInterrupted), the SIGTERM with which the pool
    ends its workers printed a traceback from each worker before the one-line error."""
    root = write_image_folder(tmp_path / "pets", per_class=8)
    if corrupt:
        path = root / "val" / "owl" / "val_owl_1.jpg"
        path.write_bytes(path.read_bytes()[:200])
    seen = tmp_path / "workers"
    seen.mkdir()
    monkeypatch.setattr(cache_module, "decode_image", _decode_recording_signals(seen))

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        if corrupt:
            with pytest.raises(TransferlabError, match="is not an image Pillow can read"):
                load(root, tmp_path / "cache", workers=2)
        else:
            load(root, tmp_path / "cache", workers=2)
    finally:
        signal.signal(signal.SIGTERM, previous)
    workers = {path.stem: path.read_text() for path in seen.iterdir()}
    assert workers and str(os.getpid()) not in workers
    assert set(workers.values()) == {"default ignored"}  # SIGTERM ends a worker quietly; Ctrl-C stops the run
    assert "Traceback" not in capfd.readouterr().err


# The stored size, and `transferlab cache`: 7 MB of 8x8 PNGs became 337 MB of 256x256 in ~/.cache.


def _small_folder(root, sides=((8, 8), (6, 10), (8, 5))):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for name in ("cat", "dog"):
            (root / split / name).mkdir(parents=True)
            for index, (width, height) in enumerate(sides):
                pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{index}.png")
    return root


def test_small_images_are_stored_at_the_largest_centre_square_not_blown_up(tmp_path, monkeypatch):
    root = _small_folder(tmp_path / "tiny")
    train, test = load(root, tmp_path / "cache", stored_size=256)
    assert tuple(train.images.shape[1:]) == tuple(test.images.shape[1:]) == (3, 8, 8)  # the largest square is 8x8
    assert torch.equal(train.images[0], torch.from_numpy(decode_image(root / "train" / "cat" / "0.png", 8).copy()))
    [folder] = (tmp_path / "cache" / "imagefolder").glob("[0-9a-f]*[!k]")
    about = json.loads((folder / "about.json").read_text())
    assert (about["stored_size"], about["requested_stored_size"]) == (8, 256)
    assert (folder / "images.npy").stat().st_size < 12 * 3 * 8 * 8 + 200  # 12 images of 8x8 and the header

    def refuse(path, size):
        raise AssertionError("decoded again")

    monkeypatch.setattr(cache_module, "decode_image", refuse)
    again, _ = load(root, tmp_path / "cache", stored_size=256)  # the cache is whole and read as it is
    assert torch.equal(again.images, train.images)
    monkeypatch.undo()
    # Larger images than data.stored_size are stored at data.stored_size, as before.
    assert tuple(load(root, tmp_path / "cache", stored_size=8)[0].images.shape[2:]) == (8, 8)
    big = write_image_folder(tmp_path / "pets", per_class=3)  # centre squares from 23 to 64 pixels
    assert tuple(load(big, tmp_path / "cache", stored_size=256)[0].images.shape[2:]) == (64, 64)
    assert tuple(load(big, tmp_path / "cache", stored_size=24)[0].images.shape[2:]) == (24, 24)


def test_cache_list_shows_each_cache_and_remove_frees_it(tmp_path, capsys):
    from transferlab import caches, diskcache
    from transferlab.locks import file_lock

    cache = tmp_path / "cache"
    birds, pets = _small_folder(tmp_path / "birds"), write_image_folder(tmp_path / "pets", per_class=3)
    load(birds, cache, stored_size=256)
    load(pets, cache, stored_size=24)
    assert caches.main(["list", "--dir", str(cache)]) == 0
    header, *rows, total = capsys.readouterr().out.splitlines()
    assert header.split() == ["CACHE", "SOURCE", "IMAGES", "STORED", "ON", "DISK", "LAST", "USED"]
    assert len(rows) == 2 and rows[0].split()[1] == str(pets.resolve())  # the last used first
    assert rows[0].split()[2:4] == ["18", "24x24"] and rows[1].split()[1:4] == [str(birds.resolve()), "12", "8x8"]
    listed = {Path(row.split()[0]) for row in rows}
    assert listed == {path for path in (cache / "imagefolder").iterdir() if path.is_dir()}
    assert total.startswith("2 cache(s), ") and total.endswith(f"on disk in {cache / 'imagefolder'}")

    pets_cache = next(path for path in listed if json.loads((path / "about.json").read_text())["images"] == 18)
    with file_lock(diskcache.lock_path(pets_cache)):  # a run decoding or opening it
        assert caches.main(["remove", str(pets_cache), "--dir", str(cache)]) == 1
    assert f"{pets_cache} is in use: a run is decoding or opening it" in capsys.readouterr().err
    assert pets_cache.exists()
    assert caches.main(["remove", str(tmp_path / "pets"), "--dir", str(cache)]) == 1  # not a cache: left alone
    assert "is not an image cache" in capsys.readouterr().err and (tmp_path / "pets" / "train").exists()
    assert caches.main(["remove", str(pets_cache)]) == 0
    assert capsys.readouterr().out.startswith(f"removed {pets_cache} (")
    assert not pets_cache.exists() and len(caches.image_caches(cache)) == 1
    assert caches.main(["remove", "--all", "--dir", str(cache)]) == 0
    assert caches.image_caches(cache) == []
    capsys.readouterr()
    assert caches.main(["list", "--dir", str(cache)]) == 0
    assert capsys.readouterr().out.strip() == f"no image caches in {cache / 'imagefolder'}"
    train, test = load(pets, cache, stored_size=24)  # a removed cache is decoded again
    assert len(train) + len(test) == 18 and len(caches.image_caches(cache)) == 1
