"""timm models (model.name=timm/NAME[.TAG]) and weights files of any head (issue 17, items 1, 2, 5).

Offline throughout: models are built with pretrained=False from timm's tiny test_* architectures
(test_resnet, test_convnext, test_vit), and the weights files are state_dicts the tests save
themselves, as .pth and .safetensors."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
import torchvision

timm = pytest.importorskip("timm")
from safetensors.torch import save_file  # noqa: E402

from helpers import tiny_config  # noqa: E402
from transferlab.composition import compose_config  # noqa: E402
from transferlab.sources import timm_source as timm_models  # noqa: E402
from transferlab.errors import ConfigError, TransferlabError  # noqa: E402
from transferlab.models import (  # noqa: E402
    build_model_with_init, check_image_size, check_model_name, frozen_modules, head_name,
    trainable_parameter_names,
)
from transferlab.records import shorten  # noqa: E402
from transferlab.run import run_training, transforms_of  # noqa: E402


def _save(state_dict: dict[str, torch.Tensor], path) -> str:
    if str(path).endswith(".safetensors"):
        save_file({k: v.contiguous() for k, v in state_dict.items()}, str(path))
    else:
        torch.save(state_dict, path)
    return str(path)


# --- names -----------------------------------------------------------------------------------------

def test_an_unknown_timm_name_is_one_line_with_close_matches():
    with pytest.raises(ConfigError, match=r"timm has no model 'resnet5'; did you mean timm/resnet50") as error:
        check_model_name("timm/resnet5")
    assert "\n" not in str(error.value)


def test_an_unknown_tag_lists_the_architectures_tags():
    with pytest.raises(ConfigError, match=r"resnet50 has no pretraining tag 'a1_in1'.*did you mean a1_in1k.*its tags: "
                                          r"a1_in1k, a1h_in1k"):
        check_model_name("timm/resnet50.a1_in1")
    check_model_name("timm/resnet50.a1_in1k")
    check_model_name("timm/convnext_tiny.fb_in22k")
    check_model_name("timm/vit_small_patch16_224.augreg_in21k")


def test_a_torchvision_name_error_points_at_timm():
    with pytest.raises(ConfigError, match="timm's models are model.name=timm/NAME"):
        check_model_name("convnext_atto")


def test_model_equals_timm_says_to_use_model_name():
    with pytest.raises(ConfigError, match=r"Could not find 'model/timm/resnet50': .*a timm model is "
                                          r"model.name=timm/NAME\[.TAG\]"):
        compose_config(["model=timm/resnet50"])
    assert compose_config(["model.name=timm/resnet50.a1_in1k"]).model.name == "timm/resnet50.a1_in1k"


def test_the_default_tag_is_timms():
    assert timm_models.resolved_tag("timm/resnet50") == "a1_in1k"
    assert timm_models.resolved_tag("timm/resnet50.tv_in1k") == "tv_in1k"


# --- building, heads, freezing -----------------------------------------------------------------------

@pytest.mark.parametrize("name, head", [("test_resnet", "fc"), ("test_convnext", "head.fc"), ("test_vit", "head")])
def test_scratch_model_gets_a_head_of_the_datas_classes(name, head):
    model, init = build_model_with_init(f"timm/{name}", pretrained=False, num_classes=7, image_size=32)
    assert head_name(f"timm/{name}", model) == head
    assert model.get_submodule(head).out_features == 7
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 7)
    assert (init.init, init.source, init.label) == ("random", "scratch", "from scratch")


def test_a_vit_is_built_for_the_runs_image_size():
    model, _ = build_model_with_init("timm/test_vit", pretrained=False, num_classes=3, image_size=48)
    assert tuple(model.patch_embed.img_size) == (48, 48)
    model, _ = build_model_with_init("timm/test_resnet", pretrained=False, num_classes=3, image_size=48)
    assert model(torch.zeros(1, 3, 48, 48)).shape == (1, 3)  # a CNN takes any size; no img_size was passed


def test_freeze_presets_map_onto_the_models_stages():
    resnet, _ = build_model_with_init("timm/test_resnet", pretrained=False, num_classes=3)
    assert frozen_modules(resnet, "timm/test_resnet", "early", None) == ("layer1", "layer2")
    assert frozen_modules(resnet, "timm/test_resnet", "middle", None) == ("layer2", "layer3")
    vit, _ = build_model_with_init("timm/test_vit", pretrained=False, num_classes=3, image_size=32)
    assert frozen_modules(vit, "timm/test_vit", "early", None) == ("blocks.0", "blocks.1", "blocks.2")
    assert frozen_modules(vit, "timm/test_vit", "middle", None) == ("blocks.1", "blocks.2", "blocks.3")
    last_only = frozen_modules(vit, "timm/test_vit", "last_only", None)
    assert trainable_parameter_names(vit, last_only) == ["head.weight", "head.bias"]
    convnext, _ = build_model_with_init("timm/test_convnext", pretrained=False, num_classes=3)
    assert frozen_modules(convnext, "timm/test_convnext", "early", None) == ("stages.0", "stages.1")


def test_freeze_modules_works_by_timm_names():
    model, _ = build_model_with_init("timm/test_convnext", pretrained=False, num_classes=3)
    trainable = trainable_parameter_names(model, ["stem", "stages.0"])
    assert not any(name.startswith(("stem.", "stages.0.")) for name in trainable)
    assert "stages.1.blocks.0.conv_dw.weight" in trainable
    with pytest.raises(ConfigError, match="freeze.modules: unknown module.*stages.9"):
        trainable_parameter_names(model, ["stages.9"])


def test_image_sizes_a_timm_model_cannot_take_are_refused_before_training():
    vit, _ = build_model_with_init("timm/test_vit", pretrained=False, num_classes=3, image_size=40)
    with pytest.raises(ConfigError, match=r"data.image_size=40 does not fit timm/test_vit: .*divisible by patch size"):
        check_image_size(vit, "timm/test_vit", 40)
    convnext, _ = build_model_with_init("timm/test_convnext", pretrained=False, num_classes=3)
    with pytest.raises(ConfigError, match="data.image_size=24 does not fit timm/test_convnext"):
        check_image_size(convnext, "timm/test_convnext", 24)
    check_image_size(convnext, "timm/test_convnext", 32)


def test_normalize_auto_takes_the_models_pretrained_cfg():
    model, _ = build_model_with_init("timm/resnet10t", pretrained=False, num_classes=3)
    config = tiny_config("data.normalize=auto")
    transforms = transforms_of(config.data, model)
    cfg = timm.data.resolve_data_config(model=model)  # from its pretrained_cfg
    assert transforms.statistics() == (tuple(cfg["mean"]), tuple(cfg["std"])) != config.data and cfg["mean"][0] == 0.485
    assert transforms.test_crop == cfg["crop_pct"] == 0.875
    assert transforms.interpolation == cfg["interpolation"] == "bicubic"
    assert transforms.describe(32)["test"] == "Resize(37), CenterCrop(32)"
    torchvision_model = torchvision.models.resnet18(weights=None)
    assert transforms_of(config.data, torchvision_model).normalize == "imagenet"


# --- weights: files, local-dir, the cache --------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_a_weights_file_of_other_classes_loads_all_but_its_head(tmp_path, suffix):
    source = timm.create_model("test_resnet", pretrained=False, num_classes=4)
    path = _save(source.state_dict(), tmp_path / f"four{suffix}")
    model, init = build_model_with_init("timm/test_resnet", pretrained=False, weights_path=path, num_classes=10)
    assert init.new_head and init.source == "file" and init.init == f"file:{path}"
    assert model.fc.out_features == 10
    assert torch.equal(model.layer4[0].conv2.weight, source.layer4[0].conv2.weight)
    same, init = build_model_with_init("timm/test_resnet", pretrained=False, weights_path=path, num_classes=4)
    assert not init.new_head and torch.equal(same.fc.weight, source.fc.weight)


def test_a_weights_file_without_its_head_starts_a_new_one_and_any_other_gap_is_an_error(tmp_path):
    state = timm.create_model("test_resnet", pretrained=False, num_classes=4).state_dict()
    headless = _save({k: v for k, v in state.items() if not k.startswith("fc.")}, tmp_path / "headless.pth")
    model, init = build_model_with_init("timm/test_resnet", pretrained=False, weights_path=headless, num_classes=6)
    assert init.new_head and model.fc.out_features == 6
    broken = _save({k: v for k, v in state.items() if k != "layer1.0.conv1.weight"}, tmp_path / "broken.pth")
    with pytest.raises(ConfigError, match=r"does not fit test_resnet: keys missing 1 \(e.g. layer1.0.conv1.weight\)"):
        build_model_with_init("timm/test_resnet", pretrained=False, weights_path=broken, num_classes=6)


def test_a_vit_file_at_another_size_goes_through_timms_checkpoint_filter(tmp_path):
    source = timm.create_model("test_vit", pretrained=False)  # 160 px: 100 patches + the class token
    path = _save(source.state_dict(), tmp_path / "vit.safetensors")
    model, init = build_model_with_init("timm/test_vit", pretrained=False, weights_path=path, num_classes=3,
                                        image_size=32)
    assert model.pos_embed.shape[1] == 4 + 1 and init.new_head  # resampled to 2 x 2 patches
    assert torch.equal(model.blocks[5].mlp.fc2.weight, source.blocks[5].mlp.fc2.weight)


def test_a_torchvision_weights_file_of_four_classes_loads_into_a_ten_class_run(tmp_path):
    """Issue 17 item 2: this failed with `keys wrong shape ... fc.bias, fc.weight`, and with the head
    removed on missing keys."""
    source = torchvision.models.resnet18(weights=None, num_classes=4)
    for name, state in (("four.pt", source.state_dict()),
                        ("headless.safetensors", {k: v for k, v in source.state_dict().items() if not k.startswith("fc.")})):
        model, init = build_model_with_init("resnet18", pretrained=False, weights_path=_save(state, tmp_path / name),
                                            num_classes=10)
        assert init.new_head and model.fc.out_features == 10
        assert torch.equal(model.layer3[1].conv1.weight, source.layer3[1].conv1.weight)
    state = {k: v for k, v in source.state_dict().items() if k != "layer2.0.bn1.running_mean"}
    with pytest.raises(ConfigError, match=r"keys missing 1 \(e.g. layer2.0.bn1.running_mean\)"):
        build_model_with_init("resnet18", pretrained=False, weights_path=_save(state, tmp_path / "gap.pt"),
                              num_classes=10)


def test_a_local_dir_folder_loads_through_timm(tmp_path):
    from timm.models._hub import save_for_hf

    source = timm.create_model("test_resnet", pretrained=False)
    save_for_hf(source, str(tmp_path / "folder"))
    model, init = build_model_with_init("timm/test_resnet", pretrained=False,
                                        weights_path=f"local-dir:{tmp_path / 'folder'}", num_classes=5)
    assert init.source == "local-dir" and model.fc.out_features == 5
    assert torch.equal(model.layer2[0].conv1.weight, source.layer2[0].conv1.weight)
    with pytest.raises(ConfigError, match="has no config.json"):
        build_model_with_init("timm/test_resnet", False, f"local-dir:{tmp_path}", 5)


def _offline_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def test_a_tags_weights_load_from_the_hugging_face_cache_offline_with_a_fresh_head(tmp_path, monkeypatch):
    cache = _offline_cache(tmp_path, monkeypatch)
    revision = "0" * 40  # the cache's layout: refs/main names the snapshot the files are in
    repo = cache / "models--timm--test_resnet.r160_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    (repo / "snapshots" / revision).mkdir(parents=True)
    source = timm.create_model("test_resnet", pretrained=False)  # 1000 classes, as the tag's weights
    _save(source.state_dict(), repo / "snapshots" / revision / "model.safetensors")
    model, init = build_model_with_init("timm/test_resnet.r160_in1k", pretrained=True, num_classes=1000)
    assert (init.init, init.source, init.tag, init.label) == ("timm:r160_in1k", "timm", "r160_in1k", "timm r160_in1k")
    assert torch.equal(model.layer3[0].conv2.weight, source.layer3[0].conv2.weight)
    assert not torch.equal(model.fc.weight, source.fc.weight)  # reset_classifier: a new head, even of 1000 classes


def test_offline_and_missing_says_where_the_weights_go(tmp_path, monkeypatch):
    _offline_cache(tmp_path, monkeypatch)
    with pytest.raises(TransferlabError) as error:
        build_model_with_init("timm/test_resnet.r160_in1k", pretrained=True, num_classes=3)
    line = str(error.value)
    assert "\n" not in line and "HF_HUB_OFFLINE is set" in line
    assert str(tmp_path / "hub" / "models--timm--test_resnet.r160_in1k") in line
    assert "transferlab prepare model.name=timm/test_resnet.r160_in1k" in line


def test_a_path_into_a_run_folder_says_how_to_quote_it():
    path = "outputs/runs/data.fraction=0.1,seed=1/model.pt"
    with pytest.raises(ConfigError, match=r"must be quoted.*'model.weights=\"outputs/runs/data.fraction=0.1,seed=1/"
                                          r"model.pt\"'"):
        compose_config([f"model.weights={path}"])
    assert compose_config([f'model.weights="{path}"']).model.weights == path


# --- end to end ------------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("name, kwargs", [("test_resnet", {}), ("test_convnext", {}), ("test_vit", {"img_size": 32})])
def test_a_tiny_timm_model_of_each_family_trains_and_its_model_pt_loads_into_timm(tmp_path, name, kwargs):
    config = tiny_config(f"model.name=timm/{name}", "save_model=true", "data.normalize=auto",
                         "data.num_train=64", "data.num_test=32")
    record = run_training(config, tmp_path)
    assert record["status"] == "completed", record.get("error")
    assert record["init"] == "random" and record["pretraining"]["source"] == "scratch"
    model = timm.create_model(name, num_classes=record["num_classes"], **kwargs)
    model.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True), strict=True)
    saved = json.loads((tmp_path / "run.json").read_text())
    assert saved["transforms"]["mean"] == [0.5, 0.5, 0.5]  # the test models' own statistics


@pytest.mark.slow
def test_a_run_starts_from_the_model_pt_of_a_run_on_other_classes(tmp_path):
    first = run_training(tiny_config("model.name=timm/test_resnet", "save_model=true", "data.num_train=64",
                                     "data.num_test=32"), tmp_path / "first")
    assert first["status"] == "completed", first.get("error")
    # The synthetic data has 10 classes: a 4-class head stands for a run on other data.
    four = timm.create_model("test_resnet", num_classes=4).state_dict()
    four.update({k: v for k, v in torch.load(tmp_path / "first" / "model.pt").items() if not k.startswith("fc.")})
    torch.save(four, tmp_path / "four.pt")
    record = run_training(tiny_config("model.name=timm/test_resnet", f"model.weights={tmp_path / 'four.pt'}"),
                          tmp_path / "second")
    assert record["status"] == "completed", record.get("error")
    digest = hashlib.sha256((tmp_path / "four.pt").read_bytes()).hexdigest()
    assert record["pretraining"] == {"source": "file", "tag": None, "label": shorten(f"{tmp_path.name}/four.pt"),
                                     "new_head": True, "weights_sha256": digest}

