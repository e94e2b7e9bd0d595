"""Models build offline with the right head; freezing selects exactly the expected parameters;
weights load from local files and through torchvision's weights API."""

import json
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from transferlab.config import validate
from transferlab.engine import make_optimizer
from transferlab.errors import ConfigError, TransferlabError
from transferlab.models import (
    MODELS, apply_freeze, build_model, build_model_with_init, check_image_size, count_parameters, frozen_modules,
    trainable_parameter_names,
)
from transferlab.records import shorten


def numel(*modules: nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


# The expected trainable count of each preset, from the modules themselves (not from names).
EXPECTED_TRAINABLE = {
    "resnet18": {
        "none": lambda m: numel(m),
        "early": lambda m: numel(m) - numel(m.layer1, m.layer2),
        "middle": lambda m: numel(m) - numel(m.layer2, m.layer3),
        "last_only": lambda m: numel(m.fc),
    },
    "alexnet": {
        "none": lambda m: numel(m),
        "early": lambda m: numel(m) - numel(m.features[0], m.features[3]),
        "middle": lambda m: numel(m) - numel(m.features[6], m.features[8]),
        "last_only": lambda m: numel(m.classifier[6]),
    },
    "vgg16": {
        "none": lambda m: numel(m),
        "early": lambda m: numel(m) - numel(m.features[0:10]),
        "middle": lambda m: numel(m) - numel(m.features[10:24]),
        "last_only": lambda m: numel(m.classifier[6]),
    },
}
HEAD_IN_FEATURES = {"alexnet": 4096, "resnet18": 512, "vgg16": 4096}


@pytest.fixture(scope="module", params=sorted(EXPECTED_TRAINABLE))  # the protocol's; the others: test_any_model.py
def scratch(request):
    return request.param, build_model(request.param, pretrained=False)


def test_head_is_a_fresh_10_class_linear(scratch):
    name, model = scratch
    head = model.get_submodule(MODELS[name].head)
    assert isinstance(head, nn.Linear)
    assert (head.in_features, head.out_features) == (HEAD_IN_FEATURES[name], 10)


@pytest.mark.parametrize("preset", ["none", "early", "middle", "last_only"])
def test_freeze_preset_trains_the_expected_parameters(scratch, preset):
    name, model = scratch
    trainable = trainable_parameter_names(model, frozen_modules(model, name, preset, None))
    apply_freeze(model, trainable)
    total, trainable_count = count_parameters(model)
    assert total == numel(model)
    assert trainable_count == EXPECTED_TRAINABLE[name][preset](model)
    optimizer = make_optimizer("sgd", [p for p in model.parameters() if p.requires_grad], 0.001, 0.9, 0.0, (0.9, 0.999))
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert held == {id(p) for p in model.parameters() if p.requires_grad}
    assert sum(p.numel() for group in optimizer.param_groups for p in group["params"]) == trainable_count
    apply_freeze(model, [n for n, _ in model.named_parameters()])  # leave the shared model unfrozen


def test_explicit_modules_override_the_preset():
    model = build_model("resnet18", pretrained=False)
    frozen = frozen_modules(model, "resnet18", "last_only", ["layer1", "layer2.0"])
    apply_freeze(model, trainable_parameter_names(model, frozen))
    assert count_parameters(model)[1] == numel(model) - numel(model.layer1, model.layer2[0])
    assert not model.layer2[0].conv1.weight.requires_grad and model.layer2[1].conv1.weight.requires_grad


def test_unknown_module_lists_the_models_modules():
    model = build_model("resnet18", pretrained=False)
    with pytest.raises(ConfigError, match=r"unknown module\(s\) layer9; this model's modules are: conv1, bn1, layer1"):
        trainable_parameter_names(model, ["layer9"])


def test_unknown_preset_lists_the_choices():
    with pytest.raises(ConfigError, match="freeze.name='everything' is not allowed; choose one of: none, early, middle"):
        validate({"freeze": {"name": "everything"}})


def test_alexnet_needs_63_pixels():
    model = build_model("alexnet", pretrained=False)
    check_image_size(model, "alexnet", 63)
    with pytest.raises(ConfigError, match="data.image_size=62 is too small for alexnet; it needs at least 63"):
        check_image_size(model, "alexnet", 62)


def test_weights_file_with_an_imagenet_head_is_loaded_and_the_head_replaced(tmp_path):
    source = torchvision.models.resnet18(weights=None)
    torch.save(source.state_dict(), tmp_path / "imagenet.pth")
    model = build_model("resnet18", pretrained=True, weights_path=str(tmp_path / "imagenet.pth"))
    assert torch.equal(model.conv1.weight, source.conv1.weight)
    assert torch.equal(model.layer4[1].bn2.running_var, source.layer4[1].bn2.running_var)
    assert model.fc.out_features == 10


def test_weights_file_with_a_10_class_head_is_loaded_whole(tmp_path):
    source = torchvision.models.resnet18(weights=None, num_classes=10)  # not AlexNet: 5x fewer weights to draw
    torch.save({"model": source.state_dict(), "epoch": 3}, tmp_path / "checkpoint.pt")
    model = build_model("resnet18", pretrained=False, weights_path=str(tmp_path / "checkpoint.pt"))
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


LETTERS, DIGITS = [chr(ord("A") + i) for i in range(10)], [str(i) for i in range(10)]


def _letters_checkpoint(folder: Path, run_json: bool = True) -> tuple[str, nn.Module]:
    """A 10-class ResNet18 model.pt as a letters run leaves it, with (or without) its run.json beside it."""
    folder.mkdir(parents=True)
    source = torchvision.models.resnet18(weights=None, num_classes=10)
    torch.save(source.state_dict(), folder / "model.pt")
    if run_json:
        (folder / "run.json").write_text(json.dumps({"status": "completed", "model": "resnet18", "dataset": "letters",
                                                      "classes": LETTERS}))
    return str(folder / "model.pt"), source


def test_a_checkpoint_of_other_class_names_gets_a_new_head_though_the_count_is_the_same(tmp_path):
    path, source = _letters_checkpoint(tmp_path / "letters")
    model, init = build_model_with_init("resnet18", False, path, 10, classes=DIGITS)
    assert init.new_head and not torch.equal(model.fc.weight, source.fc.weight)
    assert torch.equal(model.conv1.weight, source.conv1.weight)
    assert init.head == "a new head starts: its classes (A, B, C, D, ...) are not the data's (0, 1, 2, 3, ...)"
    kept, init = build_model_with_init("resnet18", False, path, 10, classes=LETTERS)
    assert not init.new_head and torch.equal(kept.fc.weight, source.fc.weight)
    assert init.head == "its head is kept: its classes are the data's (A, B, C, D, ...)"
    _, init = build_model_with_init("resnet18", False, path, 10, classes=LETTERS[::-1])
    assert init.new_head and init.head.endswith("(in another order)")


def test_new_head_true_starts_a_new_head_even_for_the_same_classes(tmp_path):
    path, source = _letters_checkpoint(tmp_path / "letters")
    model, init = build_model_with_init("resnet18", False, path, 10, classes=LETTERS, new_head=True)
    assert init.new_head and not torch.equal(model.fc.weight, source.fc.weight)
    assert init.head == "a new head starts: model.new_head=true"


def test_a_checkpoint_whose_classes_are_unknown_keeps_a_fitting_head_and_says_so(tmp_path):
    path, source = _letters_checkpoint(tmp_path / "bare", run_json=False)
    model, init = build_model_with_init("resnet18", False, path, 10, classes=DIGITS)
    assert not init.new_head and torch.equal(model.fc.weight, source.fc.weight)
    assert "whose names it does not record" in init.head and "model.new_head=true" in init.head


def test_a_weights_file_without_a_head_says_it_has_none(tmp_path):
    state = torchvision.models.resnet18(weights=None).state_dict()
    torch.save({k: v for k, v in state.items() if not k.startswith("fc.")}, tmp_path / "headless.pt")
    _, init = build_model_with_init("resnet18", False, str(tmp_path / "headless.pt"), 10)
    assert init.new_head and init.head == "it has no head: a new head starts"
    torch.save(state, tmp_path / "imagenet.pt")
    _, init = build_model_with_init("resnet18", False, str(tmp_path / "imagenet.pt"), 10)
    assert init.head == "its head does not have the data's 10 classes: a new head starts"


def test_a_weights_file_is_labelled_by_its_name_its_run_or_its_folder_never_its_whole_path(tmp_path):
    path, _ = _letters_checkpoint(tmp_path / ("very" * 30) / "letters-run")
    assert build_model_with_init("resnet18", False, path, 10, weights_name="letters")[1].label == "letters"
    assert build_model_with_init("resnet18", False, path, 10)[1].label == "resnet18 on letters (letters-run)"
    bare, _ = _letters_checkpoint(tmp_path / "x" / ("run" + "-a" * 40), run_json=False)
    label = build_model_with_init("resnet18", False, bare, 10)[1].label
    assert len(label) <= 40 and label.startswith("run-a") and label.endswith("a-a/model.pt") and "…" in label
    assert shorten("x" * 100, 20) == "x" * 9 + "…" + "x" * 10


def test_weights_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        build_model("resnet18", False, str(tmp_path / "missing.pt"))
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    with pytest.raises(ConfigError, match="is not a state_dict"):
        build_model("resnet18", False, str(tmp_path / "tensor.pt"))
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ConfigError, match="not a state_dict torch can load safely"):
        build_model("resnet18", False, str(tmp_path / "junk.pt"))
    torch.save(torchvision.models.squeezenet1_1(weights=None).state_dict(), tmp_path / "squeezenet.pt")  # small
    with pytest.raises(ConfigError, match="does not fit ResNet: keys missing"):
        build_model("resnet18", False, str(tmp_path / "squeezenet.pt"))


def test_pretrained_goes_through_torchvisions_weights_api(tmp_path, monkeypatch):
    """The cached file of IMAGENET1K_V1 (here one the test saves, a stand-in: its SHA-256 is not
    torchvision's) is what pretrained=true loads."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("TRANSFERLAB_STAND_IN_WEIGHTS", "1")
    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    source = torchvision.models.resnet18(weights=None)
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(source.state_dict(), cache / Path(weights.url).name)
    model = build_model("resnet18", pretrained=True)
    assert torch.equal(model.layer1[0].conv1.weight, source.layer1[0].conv1.weight)
    assert model.fc.out_features == 10


def test_pretrained_offline_without_the_file_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(TransferlabError, match=r"put resnet18-f37072fd.pth into .*checkpoints, or pass model.weights=PATH"):
        build_model("resnet18", pretrained=True)
