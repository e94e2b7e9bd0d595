"""Any torchvision classification model: the head found and replaced is the ImageNet classifier,
`none`, `last_only` and explicit modules freeze every model, the table's stage presets name real
blocks, and bad names, presets and image sizes are refused in one line.

Every model of torchvision is built here with its parameters on the meta device (shapes, no
memory, no arithmetic), so all of them, vit_h_14 and regnet_y_128gf included, take seconds."""

import contextlib
import json

import pytest
import torch
import torchvision
from torch import nn

from transferlab.composition import compose_config
from transferlab.errors import ConfigError
from transferlab.models import (
    MODELS, apply_freeze, build_model, check_image_size, count_parameters, frozen_modules, head_name,
    trainable_parameter_names,
)
from transferlab.sources.torchvision_source import find_head, model_names, pretrained_weights
from transferlab.prepare import main as prepare_main
from transferlab.sources.torchvision_source import weights_file
from transferlab.run import run_training

from helpers import tiny_config

# GoogLeNet and Inception v3 warn that their default initialisation will change; not our concern.
pytestmark = pytest.mark.filterwarnings("ignore:The default weight initialization:FutureWarning")


@contextlib.contextmanager
def parameters_on_meta():
    """Models built inside get every parameter and buffer on the meta device. (A plain
    ``torch.device("meta")`` cannot build the RegNets, whose constructor computes with tensors.)"""
    register_parameter, register_buffer = nn.Module.register_parameter, nn.Module.register_buffer

    def parameter_on_meta(module, name, parameter):
        register_parameter(module, name, parameter)
        if parameter is not None:
            module._parameters[name] = nn.Parameter(parameter.to("meta"), requires_grad=parameter.requires_grad)

    def buffer_on_meta(module, name, tensor, persistent=True):
        register_buffer(module, name, tensor, persistent)
        if tensor is not None:
            module._buffers[name] = tensor.to("meta")

    nn.Module.register_parameter, nn.Module.register_buffer = parameter_on_meta, buffer_on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter, nn.Module.register_buffer = register_parameter, register_buffer


def meta_model(name: str, num_classes: int = 10) -> nn.Module:
    with parameters_on_meta():
        return build_model(name, pretrained=False, num_classes=num_classes)


def numel(*modules: nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


def out_size(layer: nn.Module) -> int:
    return layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels


@pytest.mark.parametrize("name", model_names())
def test_every_model_gets_a_fresh_head_in_place_of_its_imagenet_classifier_and_freezes(name):
    with parameters_on_meta():
        imagenet = torchvision.models.get_model(name, weights=None)
        model = build_model(name, pretrained=False, num_classes=7)
    head = head_name(name, model)
    old, new = imagenet.get_submodule(head), model.get_submodule(head)
    assert out_size(old) == 1000 and out_size(new) == 7  # the ImageNet classifier, now 7-way
    assert type(new) is type(old) and new.weight.shape[1:] == old.weight.shape[1:]
    if name in MODELS:
        assert find_head(model) == head  # the table agrees with the generic rule
    names = [n for n, _ in model.named_parameters()]
    assert trainable_parameter_names(model, frozen_modules(model, name, "none", None)) == names
    assert trainable_parameter_names(model, frozen_modules(model, name, "last_only", None)) == [
        f"{head}.weight", f"{head}.bias"]
    first_block = next(n for n, m in model.named_children() if any(True for _ in m.parameters()))
    trainable = trainable_parameter_names(model, frozen_modules(model, name, "none", [first_block]))
    assert len(trainable) == len(names) - len(list(model.get_submodule(first_block).parameters()))


def test_a_model_whose_last_layer_is_no_classifier_is_refused():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 10), nn.BatchNorm1d(10))
    with pytest.raises(ConfigError, match=r"^Sequential: its last layer with parameters, 3, is a BatchNorm1d, "
                                          r"not a classifier transferlab can replace"):
        find_head(model)
    assert find_head(model[:3]) == "2"


@pytest.mark.parametrize("name, size", [("googlenet", 64), ("inception_v3", 75), ("squeezenet1_1", 32)])
def test_models_with_aux_or_convolutional_heads_return_plain_logits_while_training(name, size):
    model = meta_model(name, num_classes=7).train()
    output = model(torch.empty(2, 3, size, size, device="meta"))
    assert isinstance(output, torch.Tensor) and output.shape == (2, 7)


# What each stage preset of the table trains, from the modules themselves.
STAGE_TRAINABLE = {
    "resnet50": {"early": lambda m: numel(m) - numel(m.layer1, m.layer2),
                 "middle": lambda m: numel(m) - numel(m.layer2, m.layer3)},
    "efficientnet_b0": {"early": lambda m: numel(m) - numel(m.features[2:4]),
                        "middle": lambda m: numel(m) - numel(m.features[3:6])},
    "mobilenet_v3_large": {"early": lambda m: numel(m) - numel(m.features[2:7]),
                           "middle": lambda m: numel(m) - numel(m.features[4:13])},
    "convnext_tiny": {"early": lambda m: numel(m) - numel(m.features[1:4]),
                      "middle": lambda m: numel(m) - numel(m.features[2:6])},
    "vit_b_16": {"early": lambda m: numel(m) - numel(m.encoder.layers[0:6]),
                 "middle": lambda m: numel(m) - numel(m.encoder.layers[3:9])},
}


@pytest.mark.parametrize("name, preset", [(n, p) for n in STAGE_TRAINABLE for p in ("early", "middle")])
def test_stage_presets_of_the_new_table_entries(name, preset):
    model = meta_model(name)
    apply_freeze(model, trainable_parameter_names(model, frozen_modules(model, name, preset, None)))
    assert count_parameters(model)[1] == STAGE_TRAINABLE[name][preset](model)
    assert model.get_submodule(MODELS[name].head).weight.requires_grad


def test_stage_presets_of_a_model_outside_the_table_are_refused_listing_its_blocks():
    model = meta_model("densenet121")
    with pytest.raises(ConfigError) as error:
        frozen_modules(model, "densenet121", "middle", None)
    message = str(error.value)
    assert message.startswith("freeze=middle needs the stages of the model, which transferlab knows for alexnet")
    assert "for densenet121 use freeze=none, freeze=last_only or freeze.modules=[...]" in message
    assert "its blocks: features, features.conv0, features.norm0, features.denseblock1" in message
    assert "\n" not in message


def test_last_only_freezes_parameters_held_outside_any_module():
    model = meta_model("vit_b_16")
    assert frozen_modules(model, "vit_b_16", "last_only", None) == ("class_token", "conv_proj", "encoder")
    assert trainable_parameter_names(model, ["class_token", "encoder.pos_embedding"])[0] == "conv_proj.weight"


def test_an_unknown_model_name_is_one_line_with_close_matches():
    with pytest.raises(ConfigError, match=r"^model.name='resnet5' is not a torchvision classification model; "
                                          r"did you mean resnet50, .*\? \(torchvision.models.list_models"):
        build_model("resnet5", pretrained=False)
    with pytest.raises(ConfigError, match="model.name='eficientnet_b0' is not a .*; did you mean efficientnet_b0"):
        pretrained_weights("eficientnet_b0")  # what `transferlab prepare` asks first


def test_any_model_is_an_option_of_the_model_group():
    assert compose_config(["model=densenet121"]).model.name == "densenet121"
    assert compose_config(["model=resnet50"]).model.name == "resnet50"  # conf/model/resnet50.yaml
    with pytest.raises(ConfigError, match=r"^Could not find 'model/resnt50' \(did you mean resnet50 or .*\); "
                                          r"'model' has \d+ options: transferlab train --help lists them$"):
        compose_config(["model=resnt50"])


@pytest.mark.parametrize("name, size, message", [
    ("vit_b_16", 64, "data.image_size=64 does not fit vit_b_16; it needs exactly 224"),
    ("vit_l_32", 256, "data.image_size=256 does not fit vit_l_32; it needs exactly 224"),
    ("inception_v3", 74, "data.image_size=74 is too small for inception_v3; it needs at least 75"),  # torchvision's
    ("alexnet", 62, "data.image_size=62 is too small for alexnet; it needs at least 63"),  # the table's
    ("maxvit_t", 256, "data.image_size=256 does not fit maxvit_t: shape '[1, 64, 9, 7, 9, 7]' is invalid"),
])
def test_image_sizes_a_model_cannot_take_are_refused(name, size, message):
    model = meta_model(name)
    with pytest.raises(ConfigError) as error:
        check_image_size(model, name, size)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


@pytest.mark.parametrize("name, size", [("vit_b_16", 224), ("inception_v3", 75), ("maxvit_t", 224), ("googlenet", 32)])
def test_image_sizes_a_model_takes_pass(name, size):
    check_image_size(meta_model(name), name, size)


def test_pretrained_means_imagenet1k_v1_else_the_default_weights():
    assert pretrained_weights("resnet50").name == "IMAGENET1K_V1"  # not its DEFAULT, IMAGENET1K_V2
    assert pretrained_weights("vit_h_14") is torchvision.models.ViT_H_14_Weights.DEFAULT
    assert pretrained_weights("regnet_y_128gf").name == "IMAGENET1K_SWAG_E2E_V1"


def test_pretrained_weights_of_a_model_outside_the_table_load_through_torchvision(tmp_path, monkeypatch):
    """SqueezeNet's ImageNet classifier is a 1x1 convolution: the file loads, the head is a fresh one."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("TRANSFERLAB_STAND_IN_WEIGHTS", "1")  # random weights under torchvision's file name
    source = torchvision.models.squeezenet1_1(weights=None)
    url, path = weights_file("squeezenet1_1")
    path.parent.mkdir(parents=True)
    torch.save(source.state_dict(), path)
    model = build_model("squeezenet1_1", pretrained=True)
    assert torch.equal(model.features[0].weight, source.features[0].weight)
    assert isinstance(model.classifier[1], nn.Conv2d) and model.classifier[1].out_channels == 10


def test_a_weights_file_with_auxiliary_classifiers_loads_without_them(tmp_path):
    """torchvision's Inception v3 file holds AuxLogits, which transferlab drops."""
    with parameters_on_meta():
        torch.save(torchvision.models.inception_v3(weights=None, init_weights=False).state_dict(),
                   tmp_path / "inception.pt")
        model = build_model("inception_v3", pretrained=False, weights_path=str(tmp_path / "inception.pt"))
    assert model.AuxLogits is None and model.fc.out_features == 10


def test_prepare_takes_any_model_and_its_pretrained_weights(tmp_path, monkeypatch, capsys):
    import urllib.error
    import urllib.request

    def refuse(*args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(torch.hub, "urlopen", refuse)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert prepare_main(["model=vit_h_14", f"data.root={tmp_path / 'data'}"]) == 1
    output = capsys.readouterr().out
    assert "error: vit_h_14 weights: could not fetch https://download.pytorch.org/models/vit_h_14_swag-80465313.pth" \
        in output
    assert prepare_main(["model.name=efficientnet_b0", f"data.root={tmp_path / 'data'}"]) == 1
    assert "put efficientnet_b0_rwightman-7f5810bc.pth into" in capsys.readouterr().out


def test_a_small_model_outside_the_table_trains_end_to_end(tmp_path):
    """SqueezeNet 1.1, whose head is a 1x1 convolution, as a linear probe."""
    record = run_training(tiny_config("model.name=squeezenet1_1", "freeze=last_only", "save_model=true",
                                      "data.num_train=64", "data.num_test=32"), tmp_path)
    assert record["status"] == "completed", record.get("error")
    assert record["params_trainable"] == 512 * 10 + 10 and record["frozen_modules"] == ["features"]
    assert json.loads((tmp_path / "run.json").read_text())["init"] == "random"
    plain = torchvision.models.squeezenet1_1(num_classes=10)
    plain.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True))  # plain torchvision loads it
