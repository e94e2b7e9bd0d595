"""Linear probe, then fine-tune (freeze.unfreeze_at_epoch): the frozen modules train from epoch
N+1 on, in a new optimizer parameter group, and a run stopped on either side of the switch
resumes to exactly the weights and metrics of an uninterrupted one (CPU, deterministic=true)."""

import json

import pytest
import torch
import torchvision

from transferlab.checkpoint import CHECKPOINT_FILE, load_checkpoint
from transferlab.config import validate
from transferlab.errors import ConfigError, RunInterrupted
from transferlab.run import MODEL_FILE, run_training

from helpers import At, compose_config, interrupt, tiny_config

METRICS = ("train_loss", "train_acc", "test_loss", "test_acc")
# freeze=lp_ft probes for half of the 3 epochs: the switch comes at the start of epoch 2.
LPFT = ("freeze=lp_ft", "train.epochs=3", "data.num_train=64", "data.num_test=32", "deterministic=true",
        "save_model=true")


@pytest.mark.parametrize("overrides, message", [
    (["freeze=last_only", "freeze.unfreeze_at_epoch=0"], "freeze.unfreeze_at_epoch=0 is not allowed; it must be >= 1"),
    (["freeze=last_only", "freeze.unfreeze_at_epoch=10"],
     "freeze.unfreeze_at_epoch=10 is not allowed; it must be < train.epochs=10"),
    # lp_ft sets freeze.unfreeze_at_epoch itself: the error names the key the user set.
    (["freeze=lp_ft", "train.epochs=1"], "freeze=lp_ft needs train.epochs >= 2 (a linear probe for the first half of "
                                         "the epochs, then fine-tuning), but train.epochs=1; raise train.epochs"),
    (["freeze.unfreeze_at_epoch=2"], "freeze.unfreeze_at_epoch=2 needs something frozen to unfreeze"),
    (["freeze=early", "freeze.modules=[]", "freeze.unfreeze_at_epoch=2"], "needs something frozen to unfreeze"),
])
def test_unfreeze_at_epoch_is_checked(overrides, message):
    with pytest.raises(ConfigError) as error:
        validate(compose_config(overrides))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_lp_ft_is_a_linear_probe_for_half_the_epochs():
    assert validate(compose_config(["freeze=lp_ft"])).freeze.unfreeze_at_epoch == 5
    freeze = validate(compose_config(["freeze=lp_ft", "train.epochs=7"])).freeze
    assert (freeze.name, freeze.modules, freeze.unfreeze_at_epoch) == ("last_only", None, 3)


def test_the_lpft_experiment_sweeps_the_three_strategies_on_the_protocols_resnet18():
    cfg = compose_config(["experiment=lpft"], return_hydra_config=True)
    assert cfg.hydra.sweeper.params == {"freeze": "none,last_only,lp_ft"}
    config = validate(cfg)
    assert (config.name, config.model.name, config.model.pretrained, config.data.fraction, config.train.epochs) == (
        "lpft", "resnet18", True, 0.5, 10)


@pytest.fixture(scope="module")
def start_weights(tmp_path_factory):
    """A file to start from, so that the test knows every weight before training."""
    path = tmp_path_factory.mktemp("weights") / "start.pt"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, start_weights):
    run_dir = tmp_path_factory.mktemp("whole")
    record = run_training(tiny_config(*LPFT, f"model.weights={start_weights}"), run_dir)
    assert record["status"] == "completed", record.get("error")
    return record, torch.load(run_dir / MODEL_FILE, weights_only=True)


def stop_after_epoch(epochs: int, config, run_dir) -> None:
    """Run until ``epochs`` epochs are done and checkpointed, then interrupt the next one."""
    with pytest.raises(RunInterrupted):
        run_training(config, run_dir, callbacks=[At(epochs + 1, 1, interrupt)])


def test_the_frozen_modules_join_the_optimizer_at_the_switch(uninterrupted, start_weights):
    record, weights = uninterrupted
    total, head = record["params_total"], 512 * 10 + 10
    assert (record["params_trainable"], record["params_trainable_after_unfreeze"]) == (head, total)
    start = torch.load(start_weights, weights_only=True)
    assert not torch.equal(weights["layer1.0.conv1.weight"], start["layer1.0.conv1.weight"])  # trained after all


@pytest.mark.slow
@pytest.mark.parametrize("stopped_after, groups", [(1, 1), (2, 2)], ids=["before the switch", "after the switch"])
def test_a_run_stopped_on_either_side_of_the_switch_resumes_exactly(tmp_path, monkeypatch, uninterrupted,
                                                                    start_weights, stopped_after, groups):
    config = tiny_config(*LPFT, f"model.weights={start_weights}")
    stop_after_epoch(stopped_after, config, tmp_path)
    checkpoint = load_checkpoint(tmp_path / CHECKPOINT_FILE)
    assert checkpoint.epoch == stopped_after
    param_groups = checkpoint.optimizer["param_groups"]
    assert [len(group["params"]) for group in param_groups] == [2, 60][:groups]  # fc; then the 60 frozen tensors
    assert all(group["lr"] == 0.001 and group["momentum"] == 0.9 for group in param_groups)
    start = torch.load(start_weights, weights_only=True)
    backbone_trained = not torch.equal(checkpoint.model["layer1.0.conv1.weight"], start["layer1.0.conv1.weight"])
    assert backbone_trained == (stopped_after > 1)  # frozen during the linear probe (epoch 1) only

    record = run_training(config, tmp_path)
    whole, whole_weights = uninterrupted
    assert record["status"] == "completed" and record["resumed_after_epoch"] == stopped_after
    assert [[e[m] for m in METRICS] for e in record["history"]] == [[e[m] for m in METRICS] for e in whole["history"]]
    weights = torch.load(tmp_path / MODEL_FILE, weights_only=True)
    assert all(torch.equal(weights[k], whole_weights[k]) for k in whole_weights)
    saved = json.loads((tmp_path / "run.json").read_text())
    assert saved["params_trainable_after_unfreeze"] == whole["params_trainable_after_unfreeze"] == whole["params_total"]
