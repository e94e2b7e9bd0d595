"""Checkpoints, resume after a kill, SIGTERM, NaN losses and refused checkpoints."""

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from transferlab.checkpoint import (
    CHECKPOINT_FILE, digest_path, file_sha256, load_checkpoint, restore, save_atomically, write_digest,
)
from transferlab.errors import RunInterrupted
from transferlab.models import build_model
from transferlab.run import Collaborators, run_training

from helpers import TINY, At, interrupt, start_transferlab, tiny_config, transferlab

# Three deterministic epochs of a few seconds each, so a test can stop the run in the middle.
SLOW_RUN = [*TINY, "data.num_train=1200", "data.num_test=200", "train.epochs=3", "deterministic=true",
            "save_model=true"]
METRICS = ("train_loss", "train_acc", "test_loss", "test_acc")
SMALL_RUN = ("data.num_train=64", "data.num_test=32")


def start_and_wait_for_an_epoch(name: str, cwd: Path, timeout: float = 300) -> tuple[subprocess.Popen, Path]:
    """Start SLOW_RUN as run `name`; return once its run.json records a finished epoch."""
    process = start_transferlab("train", *SLOW_RUN, f"name={name}", cwd=cwd)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read()
        for run_json in (cwd / "outputs" / name).glob("*/run.json"):
            try:
                if json.loads(run_json.read_text())["history"]:
                    return process, run_json.parent
            except (json.JSONDecodeError, KeyError):
                pass  # being replaced this instant
        time.sleep(0.05)
    process.kill()
    raise AssertionError("the run did not finish an epoch in time")


def only_run(folder: Path) -> Path:
    [run_json] = folder.glob("*/run.json")
    return run_json.parent


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights_and_metrics(tmp_path):
    reference = transferlab("train", *SLOW_RUN, "name=whole", cwd=tmp_path)
    assert reference.returncode == 0, reference.stdout + reference.stderr
    whole = only_run(tmp_path / "outputs" / "whole")

    process, killed_dir = start_and_wait_for_an_epoch("killed", tmp_path)
    process.send_signal(signal.SIGKILL)  # no chance to clean up
    process.wait(timeout=60)
    killed = json.loads((killed_dir / "run.json").read_text())
    assert killed["status"] == "running" and 1 <= len(killed["history"]) < 3
    assert (killed_dir / CHECKPOINT_FILE).exists()

    resumed = transferlab("train", *SLOW_RUN, "name=killed", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming from" in resumed.stdout
    first, second = (json.loads((d / "run.json").read_text()) for d in (whole, killed_dir))
    assert second["status"] == "completed" and second["resumed_after_epoch"] >= 1
    assert [[e[m] for m in METRICS] for e in first["history"]] == [[e[m] for m in METRICS] for e in second["history"]]
    assert (first["test_acc"], first["test_loss"]) == (second["test_acc"], second["test_loss"])
    weights_a = torch.load(whole / "model.pt", weights_only=True)
    weights_b = torch.load(killed_dir / "model.pt", weights_only=True)
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    assert not (killed_dir / CHECKPOINT_FILE).exists()  # removed once completed (keep_checkpoint=false)


# AlexNet's dropout draws from the global torch RNG, so only a restored RNG state lets a resumed
# run draw the masks the uninterrupted one drew. Training only the head keeps it fast; the dropout
# before it still decides what the head learns.
ALEXNET_RUN = [*TINY, "model=alexnet", "data.image_size=64", "data.num_train=96", "data.num_test=32",
               "train.eval_batch_size=32", "train.epochs=2", "freeze=last_only", "deterministic=true", "save_model=true"]


@pytest.mark.slow
def test_a_killed_and_resumed_alexnet_run_restores_the_rng_and_equals_an_uninterrupted_one(tmp_path):
    whole = run_training(tiny_config(*ALEXNET_RUN), tmp_path / "whole")
    assert whole["status"] == "completed", whole.get("error")

    with pytest.raises(RunInterrupted):  # in epoch 2, once its first batch drew dropout masks
        run_training(tiny_config(*ALEXNET_RUN), tmp_path / "killed", callbacks=[At(2, 1, interrupt)])
    assert load_checkpoint(tmp_path / "killed" / CHECKPOINT_FILE).epoch == 1

    resumed = run_training(tiny_config(*ALEXNET_RUN), tmp_path / "killed")
    assert resumed["status"] == "completed" and resumed["resumed_after_epoch"] == 1
    assert [[e[m] for m in METRICS] for e in resumed["history"]] == [[e[m] for m in METRICS] for e in whole["history"]]
    weights_a = torch.load(tmp_path / "whole" / "model.pt", weights_only=True)
    weights_b = torch.load(tmp_path / "killed" / "model.pt", weights_only=True)
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)


@pytest.mark.slow
def test_sigterm_stops_cleanly_marks_interrupted_and_resumes(tmp_path):
    process, run_dir = start_and_wait_for_an_epoch("term", tmp_path)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, output
    assert output.count("is marked interrupted") == 1 and "run the same command again to resume" in output
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "interrupted" and len(record["history"]) >= 1
    assert load_checkpoint(run_dir / CHECKPOINT_FILE).epoch == len(record["history"])

    resumed = transferlab("train", *SLOW_RUN, "name=term", "keep_checkpoint=true", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "completed" and [e["epoch"] for e in record["history"]] == [1, 2, 3]
    assert load_checkpoint(run_dir / CHECKPOINT_FILE).epoch == 3  # kept


@pytest.mark.slow  # a run to its NaN (about 2 s): the fast tier stays under 3 min
def test_a_non_finite_loss_fails_the_run_naming_epoch_and_batch(tmp_path):
    """Epoch 2's third batch (of 10) holds a NaN image: the run stops there and says so."""
    from transferlab.data import make_loader as real_make_loader

    class PoisonedLoader:
        def __init__(self, loader):
            self.loader = loader

        def __len__(self):
            return len(self.loader)

        def epoch(self, epoch):
            for batch, (images, labels) in enumerate(self.loader.epoch(epoch), start=1):
                if (epoch, batch) == (2, 3):
                    images = images.clone()
                    images[0, 0, 0, 0] = float("nan")
                yield images, labels

    def make_loader(*args, train, **kwargs):
        loader = real_make_loader(*args, train=train, **kwargs)
        return PoisonedLoader(loader) if train else loader

    record = run_training(tiny_config("train.epochs=3"), tmp_path, parts=Collaborators(make_loader=make_loader))
    assert record["status"] == "failed"
    assert record["error"].startswith("epoch 2, batch 3: the training loss is not finite"), record["error"]
    assert [e["epoch"] for e in record["history"]] == [1]


@pytest.fixture(scope="module")
def interrupted_template(tmp_path_factory):
    """A folder as an interrupted run leaves it: Ctrl-C during epoch 2 of 2 (made once per module;
    each test gets a copy, see interrupted_run)."""
    folder = tmp_path_factory.mktemp("interrupted")
    with pytest.raises(RunInterrupted) as interrupted:
        run_training(tiny_config("train.epochs=2"), folder, callbacks=[At(2, 1, interrupt)])
    assert interrupted.value.run_dir == str(folder) and interrupted.value.exit_code == 130
    record = json.loads((folder / "run.json").read_text())
    assert record["status"] == "interrupted" and len(record["history"]) == 1
    return folder


@pytest.fixture
def interrupted_run(interrupted_template, tmp_path):
    """A copy of the interrupted run's folder in the test's own tmp_path (its files byte for byte)."""
    shutil.copytree(interrupted_template, tmp_path, dirs_exist_ok=True)
    return tmp_path


@pytest.mark.slow
def test_resume_continues_from_the_checkpoint_and_resume_false_starts_over(interrupted_run, tmp_path_factory):
    copy = tmp_path_factory.mktemp("copy") / "run"
    shutil.copytree(interrupted_run, copy)
    record = run_training(tiny_config("train.epochs=2"), interrupted_run)
    assert record["status"] == "completed" and record["resumed_after_epoch"] == 1
    assert [e["epoch"] for e in record["history"]] == [1, 2]
    assert load_checkpoint(copy / CHECKPOINT_FILE).epoch == 1  # the same folder, checkpoint and all
    fresh = run_training(tiny_config("train.epochs=2", "resume=false"), copy)
    assert fresh["status"] == "completed" and "resumed_after_epoch" not in fresh
    assert [e["epoch"] for e in fresh["history"]] == [1, 2]
    assert fresh["history"][0]["epoch_seconds"] != record["history"][0]["epoch_seconds"]  # epoch 1 trained again


@pytest.mark.slow
def test_force_trains_from_the_first_epoch_whatever_checkpoint_the_folder_holds(tmp_path):
    kept = run_training(tiny_config("deterministic=true", "keep_checkpoint=true"), tmp_path)
    assert kept["status"] == "completed" and load_checkpoint(tmp_path / CHECKPOINT_FILE).epoch == 1
    forced = run_training(tiny_config("deterministic=true", "keep_checkpoint=true", "force=true"), tmp_path)
    assert forced["status"] == "completed" and "resumed_after_epoch" not in forced
    assert forced["history"][0]["train_loss"] == kept["history"][0]["train_loss"]  # epoch 1 trained again
    assert forced["history"][0]["epoch_seconds"] != kept["history"][0]["epoch_seconds"]
    # A checkpoint of another config (kept from the run being replaced) is no obstacle either.
    other = run_training(tiny_config("deterministic=true", "force=true", "optim.lr=0.01"), tmp_path)
    assert other["status"] == "completed", other.get("error")
    assert "resumed_after_epoch" not in other and not (tmp_path / CHECKPOINT_FILE).exists()


DIGEST_MISMATCH = "does not match the digest recorded when it was written (corrupt?); pass resume=false to start over"


@pytest.mark.parametrize("damage, message, verified", [
    ("truncate", DIGEST_MISMATCH, True),
    ("truncate", "is not a readable transferlab checkpoint", False),
    ("state_dict", DIGEST_MISMATCH, True),
    ("state_dict", "is not a transferlab checkpoint", False),
    ("pickle", "is not a readable transferlab checkpoint", False),
    ("other_config", "was written by a run of another config; delete it or pass resume=false", True),
])
def test_corrupt_or_foreign_checkpoints_are_refused(interrupted_run, damage, message, verified):
    """Damage is caught by the checkpoint's digest; where there is none (a checkpoint of a
    transferlab before digests), by what torch.load and the format check find."""
    path = interrupted_run / CHECKPOINT_FILE
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:1000])
    elif damage == "state_dict":
        torch.save(build_model("resnet18", pretrained=False).state_dict(), path)
    elif damage == "pickle":
        torch.save({"format": "transferlab-checkpoint-1", "epoch": 1, "payload": Path("/etc/hostname")}, path)
    if not verified:
        digest_path(path).unlink()
    config = tiny_config("train.epochs=2", *(["optim.lr=0.5"] if damage == "other_config" else []))
    record = run_training(config, interrupted_run)
    assert record["status"] == "failed" and message in record["error"]
    assert "\n" not in record["error"]


def flip_inside_a_tensor(path: Path, count: int = 4096) -> None:
    """Invert ``count`` bytes in the middle of the largest tensor of the checkpoint's model, as a
    bad sector or a torn copy would (4 KB elsewhere may hit a zip record header, which torch
    does notice)."""
    weights = torch.load(path, weights_only=True)["model"]
    largest = max(weights.values(), key=lambda tensor: tensor.numel()).numpy().tobytes()
    data = bytearray(path.read_bytes())
    start = data.find(largest[:256]) + len(largest) // 2
    assert start > len(largest) // 2 and start + count < len(data)
    data[start:start + count] = bytes(255 - b for b in data[start:start + count])
    path.write_bytes(bytes(data))


@pytest.mark.slow  # two runs (3.9 s); the digest refusal is also test_corrupt_or_foreign_checkpoints_are_refused's
def test_a_checkpoint_with_4_kb_flipped_inside_a_tensor_is_refused_and_resume_false_starts_over(interrupted_run):
    """Inside a tensor, the damage loads (torch.load checks no checksum) and would train on."""
    path = interrupted_run / CHECKPOINT_FILE
    flip_inside_a_tensor(path)
    assert load_checkpoint(path).epoch == 1  # torch.load takes it
    record = run_training(tiny_config("train.epochs=2"), interrupted_run)
    assert record["status"] == "failed" and record["error"] == f"{path} {DIGEST_MISMATCH}"
    assert json.loads((interrupted_run / "run.json").read_text())["status"] == "failed"
    fresh = run_training(tiny_config("train.epochs=2", "resume=false"), interrupted_run)
    assert fresh["status"] == "completed" and "resumed_after_epoch" not in fresh
    assert [e["epoch"] for e in fresh["history"]] == [1, 2]
    assert not path.exists() and not digest_path(path).exists()  # removed with the completed run


def rewrite_checkpoint(path: Path, **changes) -> None:
    """The checkpoint at ``path`` with ``changes``, and its digest recorded, as if a run had
    written it so."""
    state = torch.load(path, weights_only=True)
    state.update(changes)
    torch.save(state, path)
    write_digest(path, file_sha256(path), replaces=None)


@pytest.mark.parametrize("epoch, history_epochs, message", [
    (99, [1], "says it was written after epoch 99, but its history holds epochs [1]"),
    (-2, [1], "says it was written after epoch -2, but its history holds epochs [1]"),
    (2, [1, 1], "says it was written after epoch 2, but its history holds epochs [1, 1]"),
    (5, [1, 2, 3, 4, 5], "says it was written after epoch 5, but this run's epochs are 1 to 2 (train.epochs=2)"),
])
def test_a_checkpoint_whose_epoch_fits_neither_its_history_nor_the_run_is_refused(interrupted_run, epoch,
                                                                                   history_epochs, message):
    path = interrupted_run / CHECKPOINT_FILE
    [entry] = load_checkpoint(path).history
    rewrite_checkpoint(path, epoch=epoch, history=[{**entry, "epoch": e} for e in history_epochs])
    record = run_training(tiny_config("train.epochs=2"), interrupted_run)
    assert record["status"] == "failed", record["history"]
    assert record["error"] == f"{path} {message}; delete it or pass resume=false"


@pytest.mark.slow  # trains 4 epochs three times (5.5 s)
def test_a_kill_between_the_digest_and_the_rename_leaves_a_checkpoint_that_verifies(tmp_path):
    """The digest file lands before its checkpoint's rename and names the checkpoint it replaces,
    so a kill between the two leaves the older checkpoint with a digest that matches it, also when
    the resumed run is killed there again."""
    renames, failing = [], []

    def killed_before_a_rename(state, path, before_rename):
        def digest_then_killed(digest):
            before_rename(digest)  # the digest file lands; the rename would come next
            renames.append(path)
            if len(renames) in failing:
                raise OSError(5, "killed before the rename (as the test has it)")

        return save_atomically(state, path, before_rename=digest_then_killed)

    config = tiny_config("train.epochs=4", *SMALL_RUN)
    path = tmp_path / CHECKPOINT_FILE
    killed = Collaborators(save_checkpoint=killed_before_a_rename)
    failing[:] = [2]  # epoch 2's checkpoint; the run stops at the next save
    assert run_training(config, tmp_path, parts=killed)["status"] == "failed"
    digests = json.loads(digest_path(path).read_text())
    assert load_checkpoint(path).epoch == 1 and digests["replaces_sha256"] == file_sha256(path) != digests["sha256"]

    renames.clear()
    failing[:] = [1]  # the resumed run's first checkpoint, epoch 2 again, replacing epoch 1's again
    again = run_training(config, tmp_path, parts=killed)
    assert again["status"] == "failed" and again["resumed_after_epoch"] == 1
    assert load_checkpoint(path).epoch == 1
    resumed = run_training(config, tmp_path)
    assert resumed["status"] == "completed", resumed.get("error")
    assert resumed["resumed_after_epoch"] == 1 and [e["epoch"] for e in resumed["history"]] == [1, 2, 3, 4]


@pytest.mark.slow
def test_a_corrupt_checkpoint_fails_the_command_in_one_line_and_resume_false_starts_over(tmp_path):
    run = ["train", *TINY, *SMALL_RUN, "train.epochs=2", "keep_checkpoint=true", "name=flipped"]
    assert transferlab(*run, cwd=tmp_path).returncode == 0
    folder = only_run(tmp_path / "outputs" / "flipped")
    record = json.loads((folder / "run.json").read_text())
    (folder / "run.json").write_text(json.dumps({**record, "status": "interrupted"}))  # as if killed at the end
    flip_inside_a_tensor(folder / CHECKPOINT_FILE)

    refused = transferlab(*run, cwd=tmp_path)
    assert refused.returncode == 1
    lines = [line for line in (refused.stdout + refused.stderr).splitlines() if "checkpoint.pt" in line]
    assert lines == [f"run failed: {folder.resolve() / CHECKPOINT_FILE} {DIGEST_MISMATCH}"], lines
    fresh = transferlab(*run, "resume=false", cwd=tmp_path)
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    record = json.loads((folder / "run.json").read_text())
    assert record["status"] == "completed" and "resumed_after_epoch" not in record


def test_a_checkpoint_that_does_not_fit_loads_nothing(interrupted_run):
    checkpoint = load_checkpoint(interrupted_run / CHECKPOINT_FILE)
    model = build_model("resnet18", pretrained=False)
    checkpoint.model["fc.weight"] = torch.zeros(3, 512)  # one tensor of the wrong shape
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    with pytest.raises(Exception, match="does not fit ResNet: keys wrong shape 1 \\(e.g. fc.weight\\)"):
        restore(checkpoint, model, optimizer, None, interrupted_run / CHECKPOINT_FILE)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.slow
def test_a_failed_runs_log_holds_its_traceback(tmp_path):
    result = transferlab("train", *TINY, "freeze.modules=[layer9]", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stdout + result.stderr
    log = (only_run(tmp_path / "outputs" / "runs") / "train.log").read_text()
    assert "run failed: freeze.modules: unknown module(s) layer9" in log and "Traceback" in log


# Checkpoints off the critical path, and a disk too small for them.


def test_checkpoints_are_written_while_the_next_epoch_trains_and_the_last_is_skipped(tmp_path):
    """Epoch 1's checkpoint is written by another thread, which can only finish once epoch 2 has
    trained (so a save in the loop itself would time out); the final epoch writes none, since a
    completed run deletes it; the run records what checkpoints cost it."""
    import threading

    epoch_two_trained, writes = threading.Event(), []

    def save_after_epoch_two(state, path, **kwargs):
        on_main_thread = threading.current_thread() is threading.main_thread()
        writes.append((state["epoch"], on_main_thread, epoch_two_trained.wait(timeout=0 if on_main_thread else 120)))
        return save_atomically(state, path, **kwargs)

    record = run_training(tiny_config("train.epochs=2", "data.num_train=64", "data.num_test=32"), tmp_path,
                          callbacks=[At(2, 1, epoch_two_trained.set)],
                          parts=Collaborators(save_checkpoint=save_after_epoch_two))
    assert record["status"] == "completed", record.get("error")
    assert writes == [(1, False, True)]
    assert record["checkpoint_seconds"] > 0
    assert json.loads((tmp_path / "run.json").read_text())["checkpoint_seconds"] == record["checkpoint_seconds"]
    assert not (tmp_path / CHECKPOINT_FILE).exists()


def test_a_temporary_file_left_by_a_killed_write_is_removed_at_the_next_start(tmp_path):
    leftovers = [tmp_path / ".checkpoint.pt.tmp", tmp_path / ".model.pt.tmp", tmp_path / ".run.json.x1y2.tmp"]
    for leftover in leftovers:
        leftover.write_bytes(b"\0" * 4096)
    record = run_training(tiny_config("data.num_train=64", "data.num_test=32"), tmp_path)
    assert record["status"] == "completed", record.get("error")
    assert not any(leftover.exists() for leftover in leftovers)


@pytest.fixture
def small_disk(tmp_path):
    """A 150 MiB file system (tmpfs): room for one ResNet18 checkpoint (about 85 MiB), not for
    its successor beside it. Skipped with the reason where this process may not mount one."""
    import shutil
    import subprocess

    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no `mount` command here to make a small tmpfs")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=150m", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root or CAP_SYS_ADMIN): {made.stderr.strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(disk: Path) -> Path:
    """Write a file that takes every free byte of ``disk``."""
    import os

    filler = disk / "filler"
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for chunk in (b"\0" * 2**20, b"\0" * 4096):
            try:
                while True:
                    os.write(descriptor, chunk)
            except OSError:
                pass
    finally:
        os.close(descriptor)
    return filler



@pytest.mark.slow  # mounts a file system
def test_a_checkpoint_that_does_not_fit_fails_the_run_keeping_the_last_one(small_disk):
    """Epoch 2's checkpoint does not fit beside epoch 1's: the run stops at the next epoch end as
    failed, with one line that says the disk is full, where, and how much is needed; the partial
    file is gone, epoch 1's checkpoint and record stay; once there is room, it resumes."""
    import subprocess

    run_dir = small_disk / "run"
    config = tiny_config("train.epochs=4", *SMALL_RUN)
    record = run_training(config, run_dir)
    error = record["error"]
    assert record["status"] == "failed"
    assert "the disk is full" in error and str(run_dir / CHECKPOINT_FILE) in error and "needs about" in error
    assert "the run stops after epoch 3" in error and "a resume starts after epoch 1" in error and "\n" not in error
    assert [entry["epoch"] for entry in record["history"]] == [1]
    on_disk = json.loads((run_dir / "run.json").read_text())
    assert on_disk["status"] == "failed" and on_disk["error"] == error and len(on_disk["history"]) == 1
    assert load_checkpoint(run_dir / CHECKPOINT_FILE).epoch == 1
    assert not list(run_dir.glob(".*.tmp"))

    subprocess.run(["mount", "-o", "remount,size=400m", str(small_disk)], check=True)
    resumed = run_training(config, run_dir)
    assert resumed["status"] == "completed", resumed.get("error")
    assert resumed["resumed_after_epoch"] == 1 and [e["epoch"] for e in resumed["history"]] == [1, 2, 3, 4]


@pytest.mark.slow  # mounts a file system
def test_when_the_disk_is_too_full_even_for_run_json_it_stays_whole_and_the_error_says_so(small_disk):
    from transferlab.errors import TransferlabError

    run_dir = small_disk / "run"
    config = tiny_config("train.epochs=2", *SMALL_RUN)

    def fill_the_disk() -> None:  # in epoch 2, once epoch 1's checkpoint and record are on disk
        deadline = time.monotonic() + 120
        while not json.loads((run_dir / "run.json").read_text())["history"] and time.monotonic() < deadline:
            time.sleep(0.05)
        fill(small_disk)

    with pytest.raises(TransferlabError) as failed:
        run_training(config, run_dir, callbacks=[At(2, 1, fill_the_disk)])
    message = str(failed.value)
    # The last epoch's first write, its test predictions, meets the full disk before the final run.json does.
    assert message.startswith("the run failed (the run's test predictions could not be saved: the disk is full: ")
    assert str(run_dir / "predictions.npz") in message and "\n" not in message
    assert f"but its record could not be saved: the disk is full: {run_dir / 'run.json'}" in message
    assert "still shows the last saved epoch" in message
    on_disk = json.loads((run_dir / "run.json").read_text())
    assert on_disk["status"] == "running" and [e["epoch"] for e in on_disk["history"]] == [1]
    assert load_checkpoint(run_dir / CHECKPOINT_FILE).epoch == 1  # kept: run.json does not say completed
    assert not list(run_dir.glob(".*.tmp"))

    (small_disk / "filler").unlink()
    resumed = run_training(config, run_dir)
    assert resumed["status"] == "completed" and resumed["resumed_after_epoch"] == 1


def test_the_host_copy_is_the_models_state_at_the_save_and_reuses_the_last_copys_memory():
    """The writer writes while the next epoch trains, so its copy must not change with the model;
    the next save writes over the last copy's tensors instead of allocating them again."""
    from transferlab.checkpoint import checkpoint_state

    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    first = checkpoint_state(model, optimizer, None, 1, [{"epoch": 1}], {"seed": 1})
    before = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)  # the next epoch trains
    assert torch.equal(first["model"]["weight"], before)
    assert first["optimizer"]["state"][0]["momentum_buffer"].data_ptr() != \
        optimizer.state[model.weight]["momentum_buffer"].data_ptr()
    second = checkpoint_state(model, optimizer, None, 2, [{"epoch": 1}, {"epoch": 2}], {"seed": 1}, reuse=first)
    assert torch.equal(second["model"]["weight"], model.weight.detach())
    assert second["model"]["weight"].data_ptr() == first["model"]["weight"].data_ptr()
    assert second["epoch"] == 2 and len(second["history"]) == 2


@pytest.mark.slow
def test_predictions_are_the_final_evaluations_on_resume_and_a_fresh_start_drops_an_earlier_runs(interrupted_run):
    import numpy as np

    from transferlab.records import PREDICTIONS_FILE

    assert not (interrupted_run / PREDICTIONS_FILE).exists()  # stopped in its last epoch: no final evaluation yet
    record = run_training(tiny_config("train.epochs=2"), interrupted_run)
    assert record["status"] == "completed" and record["resumed_after_epoch"] == 1
    with np.load(interrupted_run / PREDICTIONS_FILE) as kept:
        assert int(np.sum(kept["predicted"] == kept["labels"])) == round(record["test_acc"] * record["num_test_images"])
    # Started over and stopped in epoch 1: the completed run's predictions are gone with its record.
    with pytest.raises(RunInterrupted):
        run_training(tiny_config("train.epochs=2", "resume=false"), interrupted_run, callbacks=[At(1, 1, interrupt)])
    assert not (interrupted_run / PREDICTIONS_FILE).exists()


def test_a_cpu_run_resumed_with_another_thread_count_is_told_it_does_not_continue_bit_for_bit():
    from transferlab.checkpoint import other_thread_count

    one, default = {"train": {"threads": 1}}, {"train": {"threads": None}}
    assert other_thread_count(one, {"train": {"threads": 1}}, "cpu") is None
    assert other_thread_count(one, default, "cuda:0") is None  # the GPU's sums do not depend on it
    assert other_thread_count(default, one, "cpu") == (
        "resuming with train.threads=1, but the checkpoint's epochs trained with train.threads=null (torch's "
        "default): the CPU sums in another order with another thread count, so the run does not continue bit for "
        "bit; resume with train.threads=null for that")
    assert other_thread_count(one, default, "cpu").endswith("resume with train.threads=1 for that")


@pytest.mark.slow
def test_resuming_with_another_thread_count_warns_and_continues(interrupted_run, caplog):
    """train.threads is not part of a run's identity (a resume with another count is allowed), but
    docs/performance.md says another count breaks bit-exact resume: the resume says so."""
    record = run_training(tiny_config("train.epochs=2", "train.threads=1"), interrupted_run)
    assert record["status"] == "completed" and record["resumed_after_epoch"] == 1
    [warning] = [r.getMessage() for r in caplog.records if "train.threads" in r.getMessage()]
    assert warning.startswith("resuming with train.threads=1, but the checkpoint's epochs trained with "
                              "train.threads=null (torch's default)")
