"""Nothing thrown away, nothing done twice (issue 23, section 4): a model.pt that cannot be written
keeps the run's scores and the same command finishes the job; a damaged run.json beside finished
scores is refused, never trained over; a resume on other data than the checkpoint's is refused."""

import errno
import json
from pathlib import Path

import pytest
import torch

import transferlab.checkpoint as checkpoint_module
from transferlab.checkpoint import CHECKPOINT_FILE, load_checkpoint
from transferlab.errors import RunInterrupted
from transferlab.launch import launch
from transferlab.run import MODEL_FILE, run_training

from helpers import TINY, At, interrupt, tiny_config, write_image_folder

SMALL_RUN = ("data.num_train=64", "data.num_test=32")


@pytest.mark.slow  # two runs (about 2 s): the fast tier stays under 3 min
def test_a_model_file_that_cannot_be_written_keeps_the_scores_and_the_same_command_only_writes_it(tmp_path,
                                                                                                  monkeypatch):
    config = tiny_config("train.epochs=2", "save_model=true", *SMALL_RUN)
    real_write_atomic = checkpoint_module.write_atomic

    def full_for_the_model(path, content, before_rename=None):
        if Path(path).name == MODEL_FILE:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_write_atomic(path, content, before_rename)

    monkeypatch.setattr(checkpoint_module, "write_atomic", full_for_the_model)
    failed = run_training(config, tmp_path)
    assert failed["status"] == "failed"
    error = failed["error"]
    assert error.startswith("the run's 2 epoch(s) finished, but model.pt could not be saved (the disk is full: ")
    assert "needs about" in error and "\n" not in error
    assert error.endswith("its scores and the checkpoint after epoch 2 are kept, and the same command run again only "
                          "writes model.pt once there is room")
    assert [entry["epoch"] for entry in failed["history"]] == [1, 2]
    on_disk = json.loads((tmp_path / "run.json").read_text())
    assert on_disk["history"] == failed["history"] and on_disk["test_acc"] == failed["history"][-1]["test_acc"]
    checkpoint = load_checkpoint(tmp_path / CHECKPOINT_FILE)
    assert checkpoint.epoch == 2
    assert not (tmp_path / MODEL_FILE).exists()

    monkeypatch.undo()
    trained = []
    finished = run_training(config, tmp_path, callbacks=[At(None, None, lambda: trained.append(1))])
    assert finished["status"] == "completed", finished.get("error")
    assert trained == []  # no batch trained: it only wrote model.pt
    assert finished["resumed_after_epoch"] == 2 and finished["history"] == failed["history"]
    assert finished["model_file"] == MODEL_FILE
    weights = torch.load(tmp_path / MODEL_FILE, weights_only=True)  # the weights the run trained, not others
    assert set(weights) == set(checkpoint.model)
    assert all(torch.equal(weights[name], checkpoint.model[name]) for name in weights)
    assert not (tmp_path / CHECKPOINT_FILE).exists()  # removed once run.json says completed


def folder_bytes(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder``, by relative path, with its content."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_completed_run_whose_run_json_is_damaged_is_refused_naming_the_file_and_force(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    [first] = launch([*TINY, *SMALL_RUN])
    assert first.completed
    run_json = first.run_dir / "run.json"
    whole = run_json.read_bytes()
    run_json.write_bytes(whole[:len(whole) // 2])  # cut in half
    before = folder_bytes(first.run_dir)

    [again] = launch([*TINY, *SMALL_RUN])
    assert again.record["status"] == "failed" and not again.skipped
    error = again.record["error"]
    assert error.startswith(f"{run_json} is damaged (not readable as JSON (")
    assert f"{first.run_dir / 'metrics.csv'} holds the scores of a run" in error and "\n" not in error
    assert error.endswith("restore it, or pass force=true to train the run again and replace the folder's files")
    assert folder_bytes(first.run_dir) == before  # nothing trained over it

    [forced] = launch([*TINY, *SMALL_RUN, "force=true"])
    assert forced.completed and json.loads(run_json.read_text())["status"] == "completed"


def test_a_resume_on_other_images_than_the_checkpoint_trained_on_is_refused_in_one_line(tmp_path):
    from PIL import Image

    root = write_image_folder(tmp_path / "birds", per_class=6, classes=("crow", "owl"))
    config = tiny_config("data=imagefolder", f"data.root={root}", f"data.cache_dir={tmp_path / 'cache'}",
                         "data.stored_size=32", "data.num_workers=0", "train.epochs=2")
    with pytest.raises(RunInterrupted):
        run_training(config, tmp_path / "run", callbacks=[At(1, None, interrupt)])
    assert load_checkpoint(tmp_path / "run" / CHECKPOINT_FILE).epoch == 1
    Image.new("RGB", (32, 32), (200, 10, 10)).save(root / "train" / "crow" / "added.png")  # a new image

    refused = run_training(config, tmp_path / "run")
    assert refused["status"] == "failed"
    assert refused["error"] == (
        f"{tmp_path / 'run' / CHECKPOINT_FILE} was trained on other images than this run's training subset has now "
        "(images added to, removed from or changed in the data since?); put the data back as it was to resume, or "
        "pass resume=false to start over on the data as it is")
    assert load_checkpoint(tmp_path / "run" / CHECKPOINT_FILE).epoch == 1  # kept for a resume

    (root / "train" / "crow" / "added.png").unlink()  # the data as it was: the run resumes
    resumed = run_training(config, tmp_path / "run")
    assert resumed["status"] == "completed", resumed.get("error")
    assert resumed["resumed_after_epoch"] == 1
