"""transferlab.files: the one atomic write (a temporary beside the target, fsynced, renamed), whose
temporaries the start-up cleanup finds whoever wrote them, and the one full-disk test."""

import errno
import os
import re

import numpy as np
import pytest
import torch

import transferlab.files as files_module
from transferlab.callbacks import SavePredictions
from transferlab.checkpoint import save_atomically, write_digest
from transferlab.data import make_synthetic
from transferlab.engine import EpochResult, Predictions
from transferlab.fit import EpochEnd
from transferlab.files import (
    disk_full, leftover_temporaries, remove_leftover_temporaries, write_atomic, write_failure,
)
from transferlab.records import write_record
from transferlab.outputs import write_samples

TEMPORARY_NAME = re.compile(r"^\.(?P<name>.+)\.[0-9a-f]{12}\.tmp$")


@pytest.fixture
def fsynced(monkeypatch):
    """The descriptors os.fsync was called on, as (file name) of what they had open."""
    names, real_fsync = [], os.fsync

    def fsync(descriptor):
        names.append(os.path.basename(os.readlink(f"/proc/self/fd/{descriptor}")))
        real_fsync(descriptor)

    monkeypatch.setattr(files_module.os, "fsync", fsync)
    return names


@pytest.mark.parametrize("content", ["text é\n", b"\x00bytes", lambda handle: handle.write(b"from a writer")],
                         ids=["text", "bytes", "writer"])
def test_a_write_lands_whole_through_a_fsynced_temporary_named_for_the_cleanup(tmp_path, content, fsynced):
    target = tmp_path / "deep" / "file.bin"
    write_atomic(target, content)
    expected = {str: lambda: content.encode(), bytes: lambda: content}.get(type(content), lambda: b"from a writer")()
    assert target.read_bytes() == expected
    assert [TEMPORARY_NAME.match(name)["name"] for name in fsynced] == ["file.bin"]
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.bin"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "run.json"
    target.write_text("old")

    def half_then_fail(handle):
        handle.write(b"half")
        raise RuntimeError("the writer broke")

    with pytest.raises(RuntimeError, match="the writer broke"):
        write_atomic(target, half_then_fail)
    with pytest.raises(OSError) as refused:
        write_atomic(target, "new", before_rename=lambda: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
    assert refused.value.filename == str(target) and refused.value.errno == errno.ENOSPC
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]


def test_a_temporary_of_every_kind_of_write_a_kill_cuts_short_is_found_and_removed(tmp_path, monkeypatch):
    """Every writer of a run folder, killed between its fsync and its rename (the rename is skipped
    here): each leaves a temporary, and the cleanup at the next start finds every one."""
    monkeypatch.setattr(files_module, "_publish", lambda temporary, path: None)
    run_dir = tmp_path / "run"
    write_record(run_dir, {"status": "running", "config": {}, "history": [{"epoch": 1}]})  # run.json, metrics.csv
    write_samples(run_dir / "samples.npz", make_synthetic(20, 10, seed=0)[0])
    save_atomically({"weights": torch.zeros(3)}, run_dir / "checkpoint.pt", before_rename=lambda digest: None)
    save_atomically({"weights": torch.zeros(3)}, run_dir / "model.pt")
    write_digest(run_dir / "checkpoint.pt", "ab" * 32, replaces=None)
    write_atomic(run_dir / ".hydra" / "config.yaml", "seed: 1\n")  # as sweep.run_folder_files writes .hydra/
    tested = EpochResult(1.0, 0.5, 2, 1.0, Predictions(np.array([1, 0], np.int16), np.array([1, 1], np.int16),
                                                        np.array([0.9, 0.2], np.float16)))
    SavePredictions(run_dir).on_epoch_end(EpochEnd(1, 1, tested, {"test": tested}, lr=0.1))
    left = sorted(TEMPORARY_NAME.match(path.name)["name"] for path in leftover_temporaries(run_dir))
    assert left == ["checkpoint.pt", "checkpoint.pt.sha256", "config.yaml", "metrics.csv", "model.pt",
                    "predictions.npz", "run.json", "samples.npz"]
    remove_leftover_temporaries(run_dir)  # what a run does when it starts (run.py)
    assert [p.name for p in run_dir.rglob("*") if p.is_file()] == []


def test_a_full_disk_is_one_test_the_os_error_or_too_little_free_space(tmp_path, monkeypatch):
    assert disk_full(OSError(errno.ENOSPC, "No space left on device"), tmp_path)
    assert disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"), tmp_path)
    assert not disk_full(PermissionError(errno.EACCES, "Permission denied"), tmp_path)
    torch_full = RuntimeError("[enforce fail at inline_container.cc] . unexpected pos 64 vs 0")
    assert not disk_full(torch_full, tmp_path, needed_bytes=1)
    monkeypatch.setattr(files_module, "free_bytes", lambda folder: 10 * 2**20)
    assert disk_full(torch_full, tmp_path, needed_bytes=11 * 2**20) and not disk_full(torch_full, tmp_path)
    assert write_failure(tmp_path / "checkpoint.pt", 11 * 2**20, torch_full) == (
        f"the disk is full: {tmp_path / 'checkpoint.pt'} needs about 11.0 MiB and {tmp_path} has 10.0 MiB free; "
        "free some space and run the same command again to resume")
