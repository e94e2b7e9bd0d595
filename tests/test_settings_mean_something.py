"""Settings that silently mean nothing, and bounds (issue 23, sections 3 and 4): each is refused in
one line naming the setting and what is allowed, or left out of a run's identity where it does nothing."""

import pytest
import torch
import torchvision

from transferlab.run import run_training

from conftest import tiny_config


def test_weights_holding_nan_are_refused_naming_the_file_not_blamed_on_the_learning_rate(tmp_path):
    weights = torchvision.models.resnet18(weights=None).state_dict()
    weights["layer2.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    path = tmp_path / "diverged.pth"
    torch.save(weights, path)
    record = run_training(tiny_config(f"model.weights={path}"), tmp_path / "run")
    assert record["status"] == "failed" and record["history"] == []
    assert record["error"] == (f"model.weights={str(path)!r} hold NaN or infinite values in 1 tensor(s) (e.g. "
                               "layer2.0.conv1.weight); a run cannot start from them: save them again from a good "
                               "run, or pass other weights")
