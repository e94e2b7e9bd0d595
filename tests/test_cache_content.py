"""Caches are keyed by content and checked when opened (issue 23, section 1 and the cache items of
section 4): a cache is never used for inputs that changed, and a damaged one is never used silently.

Offline throughout: weights are state_dicts the tests save (in a temporary TORCH_HOME, a Hugging Face
cache laid out as the Hub lays it out, a local-dir folder), on timm's tiny test_* architectures."""

from __future__ import annotations

import hashlib
import json
import os

import pytest
import torch

timm = pytest.importorskip("timm")
from safetensors.torch import save_file  # noqa: E402

from helpers import tiny_config  # noqa: E402
from transferlab import diskcache, probe  # noqa: E402
from transferlab.errors import ConfigError, TransferlabError  # noqa: E402
from transferlab.models import build_model, build_model_with_init  # noqa: E402


def _sha256(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _local_dir(folder, seed: int, architecture: str = "test_resnet"):
    """A timm model saved as the Hub stores one (config.json, model.safetensors) into ``folder``."""
    from timm.models._hub import save_for_hf

    torch.manual_seed(seed)
    save_for_hf(timm.create_model(architecture, pretrained=False), str(folder), safe_serialization=True)
    return folder


def _hub_snapshot(cache, revision: str, seed: int):
    """A snapshot of timm/test_resnet.r160_in1k in the Hugging Face cache ``cache``, made refs/main:
    its model.safetensors a link to a blob, as the Hub's client lays them out."""
    repo = cache / "models--timm--test_resnet.r160_in1k"
    torch.manual_seed(seed)
    blob = repo / "blobs" / f"blob{seed}"
    blob.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in timm.create_model("test_resnet", pretrained=False).state_dict().items()},
              str(blob))
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (snapshot / "model.safetensors").symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    return snapshot / "model.safetensors"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


# --- weights are named by their bytes ------------------------------------------------------------------

def test_the_digest_memo_sees_a_rewrite_that_keeps_size_and_modification_time(tmp_path, monkeypatch):
    monkeypatch.setattr(diskcache, "RACY_SECONDS", 0.0)  # the file was just written: remember it all the same
    path, memo = tmp_path / "weights.pt", tmp_path / "memo"
    path.write_bytes(b"a" * 1000)
    stat = path.stat()
    assert diskcache.file_sha256(path, memo) == _sha256(path) and len(list(memo.iterdir())) == 1
    assert diskcache.file_sha256(path, memo) == _sha256(path)  # from the memo
    path.write_bytes(b"b" * 1000)  # in place, as a generator or `rsync -t` rewrites a file
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    assert diskcache.file_sha256(path, memo) == _sha256(path)  # its change time moved: hashed again


def test_the_digest_memo_is_not_written_for_a_file_changed_a_moment_ago(tmp_path):
    path, memo = tmp_path / "weights.pt", tmp_path / "memo"
    path.write_bytes(b"a" * 1000)
    assert diskcache.file_sha256(path, memo) == _sha256(path)
    assert not memo.exists()  # a rewrite within the same clock tick would keep every time it has


def test_new_weights_saved_into_a_local_dir_folder_are_other_weights(tmp_path):
    folder = _local_dir(tmp_path / "folder", seed=1)
    _, first = build_model_with_init("timm/test_resnet", False, f"local-dir:{folder}", 5)
    _local_dir(folder, seed=2)  # the same folder, the same path: other weights
    _, second = build_model_with_init("timm/test_resnet", False, f"local-dir:{folder}", 5)
    assert first.weights_sha256 and second.weights_sha256 and first.weights_sha256 != second.weights_sha256
    assert probe.weights_identity(first.init, first.weights_sha256, 0) != \
        probe.weights_identity(second.init, second.weights_sha256, 0)
    assert first.as_record()["weights_sha256"] == first.weights_sha256  # run.json says which weights


def test_a_new_snapshot_of_a_timm_tag_is_other_weights(hub_cache):
    old = _hub_snapshot(hub_cache, "a" * 40, seed=1)
    _, first = build_model_with_init("timm/test_resnet.r160_in1k", True, num_classes=3)
    new = _hub_snapshot(hub_cache, "b" * 40, seed=2)  # refs/main moved to a new revision of the tag
    _, second = build_model_with_init("timm/test_resnet.r160_in1k", True, num_classes=3)
    assert (first.init, second.init) == ("timm:r160_in1k", "timm:r160_in1k")
    assert (first.weights_sha256, second.weights_sha256) == (_sha256(old), _sha256(new))
    assert first.weights_sha256 != second.weights_sha256


def test_weights_identity_names_weights_by_their_digest_never_by_name():
    digest = "0" * 64
    assert probe.weights_identity("file:/a.pt", digest, 1) == probe.weights_identity("local-dir:/b", digest, 2)
    assert probe.weights_identity("random", None, 1) != probe.weights_identity("random", None, 2)
    # weights of unknown digest get a key no later run finds
    assert probe.weights_identity("timm:x", None, 1) != probe.weights_identity("timm:x", None, 1)


@pytest.mark.slow
def test_a_cached_probe_on_a_local_dir_folder_extracts_again_when_its_weights_change(tmp_path):
    from transferlab.run import run_training

    folder = _local_dir(tmp_path / "folder", seed=1)
    overrides = ["data.num_train=40", "data.num_test=20", "model.name=timm/test_resnet",
                 f"model.weights=local-dir:{folder}", f"data.cache_dir={tmp_path / 'cache'}", "freeze=last_only",
                 "data.augment=none", "freeze.cached_features=true"]
    first = run_training(tiny_config(*overrides), tmp_path / "first", overrides)
    assert first["status"] == "completed", first.get("error")
    _local_dir(folder, seed=2)
    second = run_training(tiny_config(*overrides), tmp_path / "second", overrides)
    assert second["status"] == "completed", second.get("error")
    assert second["feature_cache_built"] is True and second["feature_cache"] != first["feature_cache"]
    assert second["pretraining"]["weights_sha256"] != first["pretraining"]["weights_sha256"]


# --- torchvision's weights in TORCH_HOME -----------------------------------------------------------------

def test_weights_in_torch_home_that_are_not_torchvisions_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    path.parent.mkdir(parents=True)
    torch.save(build_model("resnet18", False, None, 1000).state_dict(), path)  # a random state_dict, by that name
    with pytest.raises(TransferlabError) as error:
        build_model_with_init("resnet18", True, num_classes=10)
    line = str(error.value)
    assert "\n" not in line and str(path) in line and "not f37072fd" in line and "transferlab prepare" in line


def test_a_hub_file_whose_digest_begins_as_its_name_says_is_keyed_by_its_whole_digest(tmp_path):
    from transferlab.sources.torchvision_source import hub_file_sha256

    source = tmp_path / "weights.pth"
    torch.save({"w": torch.ones(3)}, source)
    digest = _sha256(source)
    named = source.rename(tmp_path / f"net-{digest[:8]}.pth")
    assert hub_file_sha256(named) == digest
    wrong = named.rename(tmp_path / f"net-{'0' * 8 if digest[0] != '0' else '1' * 8}.pth")
    with pytest.raises(TransferlabError, match="as its name says"):
        hub_file_sha256(wrong)


# --- local-dir folders of another architecture, damaged safetensors ------------------------------------

def test_a_local_dir_folder_of_another_architecture_is_refused_in_one_line(tmp_path):
    folder = _local_dir(tmp_path / "folder", seed=1, architecture="test_convnext")
    with pytest.raises(ConfigError) as error:
        build_model_with_init("timm/test_resnet", False, f"local-dir:{folder}", 5)
    line = str(error.value)
    assert "\n" not in line and "holds a test_convnext model" in line and "model.name='timm/test_resnet'" in line
    assert "model.name=timm/test_convnext" in line


def test_a_truncated_safetensors_file_in_the_hugging_face_cache_is_one_line_naming_it(hub_cache):
    link = _hub_snapshot(hub_cache, "c" * 40, seed=1)
    os.truncate(link.resolve(), link.resolve().stat().st_size // 2)
    with pytest.raises(TransferlabError) as error:
        build_model_with_init("timm/test_resnet.r160_in1k", True, num_classes=3)
    line = str(error.value)
    assert "\n" not in line and str(link) in line and "damaged" in line
    assert "transferlab prepare model.name=timm/test_resnet.r160_in1k" in line


def test_a_truncated_safetensors_file_in_a_local_dir_folder_is_one_line(tmp_path):
    folder = _local_dir(tmp_path / "folder", seed=1)
    os.truncate(folder / "model.safetensors", 100)
    with pytest.raises(ConfigError, match="damaged") as error:
        build_model_with_init("timm/test_resnet", False, f"local-dir:{folder}", 5)
    assert "\n" not in str(error.value) and str(folder) in str(error.value)


def test_the_local_dir_config_is_what_save_for_hf_writes(tmp_path):
    """The architecture check reads the key that timm's own save writes."""
    folder = _local_dir(tmp_path / "folder", seed=1)
    assert json.loads((folder / "config.json").read_text())["architecture"] == "test_resnet"


# --- the image cache ---------------------------------------------------------------------------------------

def _load_folder(root, cache, **settings):
    from transferlab.data import load_imagefolder

    return load_imagefolder(root, **{"stored_size": 24, "test_fraction": 0.25, "seed": 0, "cache_dir": cache,
                                     "workers": 1, **settings})


def test_an_image_rewritten_in_place_with_its_size_and_modification_time_is_decoded_again(tmp_path):
    from PIL import Image

    from helpers import write_image_folder

    root = write_image_folder(tmp_path / "pets", per_class=2, classes=("cat", "dog"))
    path = root / "train" / "cat" / "train_cat_0.png"
    Image.new("RGB", (24, 24), (0, 0, 0)).save(path, format="BMP")  # BMP: the same size whatever the pixels
    stat = path.stat()
    first, _ = _load_folder(root, tmp_path / "cache")
    assert int(first.images[0].max()) == 0
    Image.new("RGB", (24, 24), (255, 255, 255)).save(path, format="BMP")  # as a generator that overwrites
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # as `rsync -t` or an unpacked archive
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    again, _ = _load_folder(root, tmp_path / "cache")
    assert int(again.images[0].min()) == 255  # the new pixels, not the cache's old ones


def _overwrite_inside(path, offset_from_end: int, data: bytes) -> None:
    """Write ``data`` into the file ``path`` in place, as a stray process (or a bad disk) would."""
    with open(path, "r+b") as handle:
        handle.seek(os.path.getsize(path) - offset_from_end)
        handle.write(data)


def test_pixels_zeroed_in_the_image_cache_are_found_and_the_images_decoded_again(tmp_path, caplog):
    import logging

    from helpers import write_image_folder

    root = write_image_folder(tmp_path / "pets", per_class=2, classes=("cat", "dog"))
    train, _ = _load_folder(root, tmp_path / "cache")
    expected = train.images.clone()
    [folder] = [p for p in (tmp_path / "cache" / "imagefolder").iterdir() if p.is_dir()]
    assert json.loads((folder / "about.json").read_text())["sha256"]["images.npy"] == _sha256(folder / "images.npy")
    _overwrite_inside(folder / "images.npy", 3 * 24 * 24 * 2, bytes(3 * 24 * 24))  # one image, all black
    with caplog.at_level(logging.WARNING, logger="transferlab"):
        again, _ = _load_folder(root, tmp_path / "cache")
    assert any("images.npy does not match the SHA-256 recorded when it was written" in r.getMessage()
               for r in caplog.records)
    assert torch.equal(again.images, expected)


def test_finite_values_written_into_a_feature_cache_are_found_and_the_features_extracted_again(tmp_path, caplog):
    import logging

    import numpy as np

    from transferlab.data import make_synthetic
    from test_probe import build_cache, tiny_backbone_model

    train, test = make_synthetic(48, 24, seed=3)
    model = tiny_backbone_model()
    first, _ = build_cache(tmp_path / "features", model, "fc", {"train": train, "test": test})
    expected = first["train"].features.clone()
    folder = tmp_path / "features" / probe.cache_key({"model": "test"})
    _overwrite_inside(folder / "train.npy", 4 * 32, np.full(32, 7.0, dtype=np.float32).tobytes())  # finite, wrong
    with caplog.at_level(logging.WARNING, logger="transferlab.probe"):
        features, built = build_cache(tmp_path / "features", model, "fc", {"train": train, "test": test})
    assert built
    assert any("train.npy does not match the SHA-256" in r.getMessage() for r in caplog.records)
    torch.testing.assert_close(features["train"].features, expected)


# --- a full disk while the feature cache is written -----------------------------------------------------

def test_a_feature_cache_that_does_not_fit_is_one_line_with_what_it_needs_and_nothing_is_left(tmp_path, monkeypatch):
    import errno

    from transferlab.data import make_synthetic
    from test_probe import build_cache, tiny_backbone_model

    def full_disk(descriptor, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full_disk)
    train, test = make_synthetic(48, 24, seed=3)
    with pytest.raises(TransferlabError) as error:
        build_cache(tmp_path / "features", tiny_backbone_model(), "fc", {"train": train, "test": test})
    line = str(error.value)
    # 48 images x 32 features x 4 bytes
    assert "\n" not in line and line.startswith(f"the feature cache needs 6.1 KB in {tmp_path / 'features'}, which has ")
    assert "free (No space left on device)" in line and "data.cache_dir" in line
    assert [p.name for p in (tmp_path / "features").iterdir() if not p.name.endswith(".lock")] == []


@pytest.mark.slow  # mounts a tmpfs; a subprocess (before, the process died of SIGBUS)
def test_a_full_disk_under_a_cached_probe_fails_the_run_in_one_line(tmp_path):
    import shutil
    import subprocess

    from helpers import DRY_RUN, transferlab

    disk = tmp_path / "disk"
    disk.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no `mount` command here to make a tmpfs")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], capture_output=True,
                          text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {made.stderr.strip()}")
    try:
        result = transferlab("train", *DRY_RUN, "data.num_train=400", "data.num_test=200", "freeze=last_only",
                             "freeze.cached_features=true", f"data.cache_dir={disk}", "hydra.run.dir=run", cwd=tmp_path)
        assert result.returncode == 1, result.stdout + result.stderr
        [line] = [line for line in (result.stdout + result.stderr).splitlines() if "run failed:" in line]
        assert "the feature cache needs" in line and "free" in line and "data.cache_dir" in line
        record = json.loads((tmp_path / "run" / "run.json").read_text())
        assert record["status"] == "failed" and "the feature cache needs" in record["error"]
        assert [p.name for p in (disk / "features").iterdir() if not p.name.endswith(".lock")] == []
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


# --- locks: a wait that says so, a read-only cache, a cache dir that is a file -----------------------------

def _flock(path):
    """An exclusive flock on ``path`` for the block, on a descriptor of its own (another open file
    description conflicts with filelock's even in this process, as another process's would)."""
    import contextlib
    import fcntl

    @contextlib.contextmanager
    def held():
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)  # drops the flock

    return held()


@pytest.mark.parametrize("holder", ["transferlab", "another program"])
def test_a_cached_probe_waiting_for_the_feature_cache_lock_says_who_holds_it(tmp_path, caplog, holder):
    import logging
    import threading
    import time

    from transferlab.data import make_synthetic
    from test_probe import build_cache, tiny_backbone_model

    train, test = make_synthetic(48, 24, seed=3)
    folder = tmp_path / "features" / probe.cache_key({"model": "test"})
    lock = folder.with_name(f"{folder.name}.lock")
    folder.parent.mkdir(parents=True)
    if holder == "transferlab":  # another run extracting these features, which names itself
        from transferlab.locks import cache_lock

        holding = cache_lock(lock, "a test")
    else:  # a process that writes no line: a flock on the file, as the kernel sees it
        holding = _flock(lock)
    results = []
    with caplog.at_level(logging.INFO, logger="transferlab"):
        with holding:
            waiting = threading.Thread(target=lambda: results.append(
                build_cache(tmp_path / "features", tiny_backbone_model(), "fc", {"train": train, "test": test})))
            waiting.start()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not any("waiting" in r.getMessage() for r in caplog.records):
                time.sleep(0.05)
            lines = [r.getMessage() for r in caplog.records if "waiting" in r.getMessage()]
        waiting.join(timeout=60)
    named = f"pid {os.getpid()} on host " if holder == "transferlab" else "another process (which has not written"
    assert lines and lines[0].startswith(f"the feature cache {folder} is in use by {named}")
    assert lines[0].endswith("; waiting for it")
    assert results and results[0][1]  # then it took the lock and extracted the features
    assert not folder.with_name(f"{folder.name}.lock.holder").exists()


def test_a_cache_dir_that_is_a_file_is_one_line_naming_data_cache_dir(tmp_path):
    from helpers import write_image_folder

    root = write_image_folder(tmp_path / "pets", per_class=2, classes=("cat", "dog"))
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(ConfigError) as error:
        _load_folder(root, tmp_path / "file")
    assert "\n" not in str(error.value) and str(error.value).startswith(f"data.cache_dir='{tmp_path / 'file'}' is a file")
    with pytest.raises(TransferlabError) as error:
        _load_folder(root, tmp_path / "file" / "below")
    assert "\n" not in str(error.value) and "Not a directory" in str(error.value) and "data.cache_dir" in str(error.value)


@pytest.mark.slow  # mounts a tmpfs, then makes it read-only (root)
def test_a_whole_cache_on_a_read_only_file_system_is_read_without_its_lock(tmp_path):
    import shutil
    import subprocess

    from helpers import write_image_folder
    from transferlab.data import make_synthetic
    from test_probe import build_cache, tiny_backbone_model

    disk = tmp_path / "disk"
    disk.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no `mount` command here to make a tmpfs")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {made.stderr.strip()}")
    try:
        root = write_image_folder(tmp_path / "pets", per_class=2, classes=("cat", "dog"))
        images, _ = _load_folder(root, disk)
        expected = images.images.clone()
        train, test = make_synthetic(48, 24, seed=3)
        model = tiny_backbone_model()
        features, _ = build_cache(disk / "features", model, "fc", {"train": train, "test": test})
        expected_features = features["train"].features.clone()
        del images, features
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        again, _ = _load_folder(root, disk)  # the image cache's lock file cannot be opened for writing
        assert torch.equal(again.images, expected)
        read, built = build_cache(disk / "features", model, "fc", {"train": train, "test": test})
        assert not built and torch.equal(read["train"].features, expected_features)
        with pytest.raises(TransferlabError) as error:  # a cache that is not there cannot be made here
            _load_folder(root, disk, stored_size=16)
        assert "\n" not in str(error.value) and "data.cache_dir" in str(error.value)
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
