"""Settings that silently mean nothing, and bounds (issue 23, sections 3 and 4): each is refused in
one line naming the setting and what is allowed, or left out of a run's identity where it does nothing."""

import pytest
import torch
import torchvision

from transferlab.errors import ConfigError
from transferlab.run import run_training

from conftest import TINY, tiny_config


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


@pytest.mark.parametrize("name", ["timm/resnet18.", "timm/", "timm/.a1_in1k"])
def test_a_timm_name_with_an_empty_tag_or_architecture_is_refused(name):
    with pytest.raises(ConfigError) as refused:
        tiny_config(f"model.name={name}")
    assert str(refused.value) == (f"model.name={name!r} is not allowed; write timm/NAME or timm/NAME.TAG, with a tag "
                                  "after the '.' (timm/NAME alone takes timm's default tag)")


def test_bitfit_with_freeze_modules_that_leave_only_the_head_is_refused_as_freeze_last_only_is(tmp_path):
    modules = "[conv1,bn1,layer1,layer2,layer3,layer4]"  # everything of ResNet18 but fc
    record = run_training(tiny_config("adapt=bitfit", f"freeze.modules={modules}"), tmp_path / "run")
    assert record["status"] == "failed" and record["history"] == []
    assert record["error"] == ("adapt=bitfit with freeze.modules=['conv1', 'bn1', 'layer1', 'layer2', 'layer3', "
                               "'layer4'] leaves only the head (fc), which trains fully anyway; freeze fewer modules, "
                               "or use adapt=none for a linear probe")
    fewer = run_training(tiny_config("adapt=bitfit", "freeze.modules=[conv1,bn1,layer1]"), tmp_path / "fewer")
    assert fewer["status"] == "completed", fewer.get("error")


@pytest.mark.slow  # trains a run after the refusal
def test_a_sweep_experiment_without_dash_m_is_refused_saying_it_is_a_sweep(tmp_path, monkeypatch):
    from transferlab.launch import launch

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as refused:  # it trained one run of TINY's data.fraction, no run of the sweep
        launch(["experiment=few_shot", *TINY])
    assert str(refused.value) == (
        "experiment=few_shot is a sweep of 12 runs (data.per_class: 1,2,5,10,25,100; model.pretrained: true,false); "
        "add -m to run it (transferlab train -m experiment=few_shot ...), or give data.per_class for one of its runs")
    assert not list(tmp_path.rglob("run.json"))
    # Every swept setting given: one run of the sweep, as asked.
    [one] = launch(["experiment=few_shot", *TINY, "data.fraction=null", "data.per_class=2", "train.batch_size=8"])
    assert one.completed and one.record["config"]["data"]["per_class"] == 2
