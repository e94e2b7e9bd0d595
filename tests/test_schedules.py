"""Fine-tuning recipes: learning-rate schedules with warm-up stepped per batch, label smoothing,
gradient clipping, layer-wise learning-rate decay (issue 17, items 3 and 4)."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision

from helpers import tiny_config
from transferlab.checkpoint import CHECKPOINT_FILE, load_checkpoint
from transferlab.engine import StepSettings, train_one_epoch
from transferlab.errors import ConfigError
from transferlab.run import run_training
from transferlab.schedules import (
    ScheduleFactor, describe_groups, follow_new_group, layer_decay_groups, make_scheduler, stage_parameter_names,
)


def test_constant_is_one_and_a_warm_up_rises_linearly_to_it():
    assert [ScheduleFactor("constant", 4, 3)(step) for step in range(12)] == [1.0] * 12
    warm = ScheduleFactor("constant", 4, 3, warmup_epochs=1.0)
    assert [warm(step) for step in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert ScheduleFactor("constant", 10, 3, warmup_epochs=0.5).warmup_steps == 5


def test_cosine_falls_from_one_after_the_warm_up_and_stays_above_zero_in_the_run():
    cosine = ScheduleFactor("cosine", 5, 4, warmup_epochs=1.0)
    factors = [cosine(step) for step in range(20)]
    assert factors[4] == 1.0 and factors[5] == 1.0  # the warm-up's last step, then the cosine's first
    after = factors[5:]
    assert all(a > b for a, b in zip(after, after[1:])) and after[-1] > 0
    assert after[7] == pytest.approx(0.5 * (1 + math.cos(math.pi * 7 / 15)))  # step 12: 7 of the 15 after warm-up


def test_step_multiplies_by_gamma_every_step_epochs():
    step = ScheduleFactor("step", 2, 6, step_epochs=2, step_gamma=0.5)
    assert [step(s) for s in range(12)] == [1.0] * 4 + [0.5] * 4 + [0.25] * 4


@pytest.mark.parametrize("overrides, message", [
    (["optim.schedule=linear"], "optim.schedule='linear' is not allowed; choose one of: constant, cosine, step"),
    (["optim.layer_decay=0"], r"optim.layer_decay=0.0 is not allowed; it must be in \(0, 1\]"),
    (["optim.layer_decay=1.5"], r"optim.layer_decay=1.5 is not allowed; it must be in \(0, 1\]"),
    (["optim.warmup_epochs=1"], "optim.warmup_epochs=1.0 is not allowed; it must be < train.epochs=1"),
    (["train.label_smoothing=1.0"], r"train.label_smoothing=1.0 is not allowed; it must be in \[0, 1\)"),
    (["optim.clip_grad_norm=0"], "optim.clip_grad_norm=0.0 is not allowed; it must be >= 0.0001"),
    (["optim.layer_decay=0.5", "freeze=lp_ft", "train.epochs=2"], "optim.layer_decay=0.5 does not combine with LP-FT"),
])
def test_recipe_settings_out_of_range_are_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message) as error:
        tiny_config(*overrides)
    assert "\n" not in str(error.value)


def _batches(count: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(4, 8, generator=generator), torch.randint(0, 3, (4,), generator=generator))
            for _ in range(count)]


def test_train_one_epoch_steps_the_scheduler_after_every_batch():
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = make_scheduler(optimizer, ScheduleFactor("step", 3, 2, step_epochs=1, step_gamma=0.1))
    train_one_epoch(model, torch.nn.CrossEntropyLoss(), _batches(3), optimizer, torch.device("cpu"), scheduler=scheduler)
    assert scheduler.last_epoch == 3 and optimizer.param_groups[0]["lr"] == pytest.approx(0.01)


def test_label_smoothing_is_the_training_loss():
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 3)
    images, labels = _batches(1)[0]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # no update: the loss of the same weights
    smoothed = train_one_epoch(model, torch.nn.CrossEntropyLoss(label_smoothing=0.2), [(images, labels)], optimizer,
                               torch.device("cpu")).loss
    expected = torch.nn.functional.cross_entropy(model(images), labels, label_smoothing=0.2).item()
    assert smoothed == pytest.approx(expected) and smoothed != pytest.approx(
        torch.nn.functional.cross_entropy(model(images), labels).item())


def test_clip_grad_norm_bounds_each_step():
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 3)
    images, labels = _batches(1)[0]
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    train_one_epoch(model, torch.nn.CrossEntropyLoss(), [(images * 100, labels)], optimizer, torch.device("cpu"),
                    StepSettings(clip_grad_norm=0.01))
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert (after - before).norm().item() == pytest.approx(0.01, rel=1e-3)  # lr 1 x a gradient clipped to 0.01


def test_layer_decay_groups_give_the_head_the_learning_rate_and_each_earlier_stage_the_factor_more():
    model = torchvision.models.resnet18(weights=None, num_classes=3)
    stages = stage_parameter_names(model)
    assert [names[0] for names in stages] == ["conv1.weight", "bn1.weight", "layer1.0.conv1.weight",
                                              "layer2.0.conv1.weight", "layer3.0.conv1.weight",
                                              "layer4.0.conv1.weight", "layer4.1.conv1.weight", "fc.weight"]
    groups = layer_decay_groups(model, stages, lr=0.1, decay=0.5)
    assert [g["lr"] for g in groups] == pytest.approx([0.1 * 0.5 ** k for k in range(8)])  # the head's first
    optimizer = torch.optim.SGD(groups, lr=0.1)
    described = describe_groups(optimizer)
    assert described[0] == {"stage": 7, "lr": 0.1, "parameters": 3 * 512 + 3}
    assert sum(g["parameters"] for g in described) == sum(p.numel() for p in model.parameters())
    with torch.device("meta"):
        vit = torchvision.models.vit_b_16()
    vit_stages = stage_parameter_names(vit)
    assert len(vit_stages) == 17 and vit_stages[3][0].startswith("encoder.layers.encoder_layer_0.")


def test_layer_decay_leaves_frozen_parameters_out():
    model = torchvision.models.resnet18(weights=None, num_classes=3)
    for parameter in model.layer1.parameters():
        parameter.requires_grad_(False)
    groups = layer_decay_groups(model, stage_parameter_names(model), lr=1.0, decay=0.9)
    assert [g["stage"] for g in groups] == [7, 6, 5, 4, 3, 1, 0]


def test_a_group_added_later_is_scheduled_like_the_others():
    first, second = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([first], lr=1.0)
    scheduler = make_scheduler(optimizer, ScheduleFactor("step", 1, 4, step_epochs=1, step_gamma=0.5))
    optimizer.step()
    scheduler.step()
    optimizer.add_param_group({"params": [second], "lr": 0.2})
    follow_new_group(scheduler, optimizer)
    assert [g["lr"] for g in optimizer.param_groups] == [0.5, 0.1]
    optimizer.step()
    scheduler.step()
    assert [g["lr"] for g in optimizer.param_groups] == [0.25, 0.05]


@pytest.mark.slow
def test_a_run_records_each_epochs_learning_rate_and_its_checkpoint_the_scheduler(tmp_path):
    pytest.importorskip("timm")  # its test_resnet: a run of seconds
    config = tiny_config("model.name=timm/test_resnet", "train.epochs=3", "optim.schedule=step", "optim.step_epochs=1",
                         "optim.step_gamma=0.5",
                         "optim.lr=0.01", "keep_checkpoint=true", "data.num_train=64", "data.num_test=32",
                         "train.label_smoothing=0.1", "optim.clip_grad_norm=5")
    record = run_training(config, tmp_path)
    assert record["status"] == "completed", record.get("error")
    assert [entry["lr"] for entry in record["history"]] == pytest.approx([0.01, 0.005, 0.0025])
    assert record["param_groups"] == [{"stage": 0, "lr": 0.01, "parameters": record["params_trainable"]}]
    checkpoint = load_checkpoint(tmp_path / CHECKPOINT_FILE)
    assert checkpoint.scheduler["last_epoch"] == 3 * 2  # 64 images, fraction 1, batches of 32: 2 a epoch


def test_the_schedule_clipping_and_smoothing_keep_the_batch_loop_from_waiting_for_the_device():
    """engine.py's rule with the recipe's three additions: no op that would wait for a GPU, no host
    read of a tensor, per batch (test_engine's recorders)."""
    from test_engine import HostReads, WaitingOps, watched

    from transferlab.data import DeviceLoader, make_synthetic

    train_set, _ = make_synthetic(8 * 12, 8, seed=0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, stride=4), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(4, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scheduler = make_scheduler(optimizer, ScheduleFactor("cosine", 12, 1, warmup_epochs=0.5))
    ops, reads = WaitingOps(), HostReads()
    batches = watched(DeviceLoader(train_set, 8, 16, train=True, seed=0).epoch(1), ops, reads)
    trained = train_one_epoch(model, torch.nn.CrossEntropyLoss(label_smoothing=0.1), batches, optimizer,
                              torch.device("cpu"), StepSettings(clip_grad_norm=0.5), scheduler=scheduler)
    assert trained.images == 96 and scheduler.last_epoch == 12
    assert ops.seen == [] and reads.seen == [], (ops.seen, reads.seen)
