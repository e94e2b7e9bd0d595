"""Runs that start at once on a fresh machine prepare one data.root: one process unpacks CIFAR-10
while the others wait, and every process reads the whole dataset."""

import subprocess
import sys
import tarfile

import pytest

import transferlab.data.cifar as cifar
from transferlab.data import load_cifar10

from helpers import write_cifar10

# A process that loads CIFAR-10 from ROOT when the file GO appears, and logs to LOG when it unpacks
# the archive: torchvision's unpacking, slowed down so that unguarded processes would meet in it.
LOADER = """
import os, sys, time
from pathlib import Path
import torchvision.datasets.cifar as tv_cifar
import torchvision.datasets.utils as tv_utils
from transferlab.data import load_cifar10

root, log, go = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
tv_utils.check_md5 = lambda *args, **kwargs: True  # the test's archive is not the real one
unpack = tv_cifar.download_and_extract_archive

def logged_unpack(*args, **kwargs):
    with open(log, "a") as handle:
        handle.write(f"start {time.monotonic()}\\n")
    time.sleep(0.5)
    unpack(*args, **kwargs)
    with open(log, "a") as handle:
        handle.write(f"end {time.monotonic()}\\n")

tv_cifar.download_and_extract_archive = logged_unpack
print("ready", flush=True)
while not go.exists():
    time.sleep(0.01)
train, test = load_cifar10(root, download=True)
print(len(train), len(test), sorted(set(train.labels.tolist())) == list(range(10)), flush=True)
"""


@pytest.mark.slow
def test_parallel_runs_unpack_a_data_root_once(tmp_path):
    root, log, go = tmp_path / "data", tmp_path / "unpack.log", tmp_path / "go"
    root.mkdir()
    write_cifar10(root, train_per_batch=40, num_test=80)
    loaders = [subprocess.Popen([sys.executable, "-c", LOADER, str(root), str(log), str(go)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        assert all(loader.stdout.readline().strip() == "ready" for loader in loaders)
        go.touch()  # both start loading at the same moment
        outputs = [loader.communicate(timeout=120) for loader in loaders]
    finally:
        for loader in loaders:
            loader.kill()
    assert [loader.returncode for loader in loaders] == [0, 0], [err for _, err in outputs]
    assert [out.strip() for out, _ in outputs] == ["200 80 True"] * 2
    # One process unpacked; the other waited for it and found the root prepared.
    assert [line.split()[0] for line in log.read_text().splitlines()] == ["start", "end"]


def test_a_read_only_data_root_is_read_without_a_lock(tmp_path, monkeypatch, skip_md5):
    with tarfile.open(write_cifar10(tmp_path, train_per_batch=10, num_test=20)) as archive:
        archive.extractall(tmp_path)
    # As for a root that someone else prepared and this user may not write to (root may write anywhere).
    monkeypatch.setattr(cifar.os, "access", lambda path, mode: False)
    train, test = load_cifar10(tmp_path, download=True)
    assert (len(train), len(test)) == (50, 20)
    assert not (tmp_path / cifar.ROOT_LOCK_FILE).exists()
