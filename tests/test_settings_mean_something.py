"""Settings that silently mean nothing, and bounds (issue 23, sections 3 and 4): each is refused in
one line naming the setting and what is allowed, or left out of a run's identity where it does nothing."""

import pytest
import torch
import torchvision

from transferlab.config import as_dict
from transferlab.identity import result_config
from transferlab.composition import compose_config, compose_with_hydra
from transferlab.errors import ConfigError
from transferlab.run import run_training

from helpers import TINY, tiny_config, write_image_folder


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


def run_folder(*overrides: str) -> str:
    return str(compose_with_hydra(list(overrides)).hydra.run.dir)


LBFGS = ("freeze=last_only", "freeze.cached_features=true", "freeze.probe=lbfgs", "data.val_fraction=0.1")


@pytest.mark.parametrize("base, inert", [
    (("adapt=bitfit",), ("adapt.rank=4", "adapt.alpha=2", "adapt.dropout=0.1")),
    (("optim.schedule=constant",), ("optim.step_epochs=5", "optim.step_gamma=0.5")),
    (("optim.schedule=cosine",), ("optim.step_epochs=5",)),
    (("train.compile=false",), ("train.compile_mode=max-autotune",)),
    (("data.augment=pad_crop_flip",), ("data.crop_scale=[0.5,1.0]",)),
    (LBFGS, ("optim.lr=0.1", "optim=adamw", "optim.weight_decay=0.01", "train.epochs=3")),
])
def test_settings_that_do_nothing_neither_move_the_run_folder_nor_make_another_config(base, inert):
    assert run_folder(*base, *inert) == run_folder(*base)
    plain, with_inert = (as_dict(compose_config([*TINY, *base, *extra])) for extra in ((), inert))
    assert with_inert != plain and result_config(with_inert) == result_config(plain)


@pytest.mark.parametrize("overrides", [
    ("adapt=lora", "adapt.rank=4"), ("optim.schedule=step", "optim.step_epochs=5"),
    ("train.compile=true", "train.compile_mode=max-autotune"),
    ("data.augment=random_resized_crop", "data.crop_scale=[0.5,1.0]"),
    ("freeze=lp_ft", "freeze.cached_features=true", "freeze.probe=lbfgs", "data.val_fraction=0.1", "train.epochs=2",
     "optim.lr=0.1"),  # LP-FT's fine-tuning uses the optimizer
])
def test_the_same_settings_where_they_act_still_name_the_folder_and_the_config(overrides):
    assert run_folder(*overrides) != run_folder(*overrides[:-1])
    with_it, without = (as_dict(compose_config([*TINY, *o])) for o in (overrides, overrides[:-1]))
    assert result_config(with_it) != result_config(without)


def test_a_completed_run_is_skipped_for_a_config_that_differs_only_in_a_setting_that_does_nothing(tmp_path):
    from transferlab.records import write_record
    from transferlab.run_folders import completed_run

    done = as_dict(compose_config([*TINY, "optim.schedule=constant"]))
    write_record(tmp_path, {"status": "completed", "config": done, "history": []})
    assert completed_run(tmp_path, as_dict(compose_config([*TINY, "optim.step_epochs=5"]))) is not None


def test_a_setting_that_does_nothing_is_named_in_a_warning_when_the_run_starts(tmp_path, caplog):
    overrides = ["optim.step_epochs=5"]
    record = run_training(tiny_config(*overrides, "data.num_train=32", "data.num_test=16"), tmp_path, overrides)
    assert record["status"] == "completed", record.get("error")
    assert ("optim.step_epochs=5 does nothing in this run (the setting is optim.schedule=step's, and "
            "optim.schedule=constant): it is left out of the run's identity (its folder, and the checks that skip "
            "or resume it)") in [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]


DISTILLED = "timm/deit_tiny_distilled_patch16_224"  # two heads: head and head_dist, averaged at test time


def test_every_head_of_a_model_with_two_is_the_head_and_freeze_last_only_trains_both():
    from transferlab.models import build_model_with_init, frozen_modules, trainable_parameter_names

    model, _ = build_model_with_init(DISTILLED, pretrained=False, num_classes=3, image_size=32)
    assert (model.head.out_features, model.head_dist.out_features) == (3, 3)  # both replaced
    trainable = trainable_parameter_names(model, frozen_modules(model, DISTILLED, "last_only", None))
    assert trainable == ["head.weight", "head.bias", "head_dist.weight", "head_dist.bias"]


@pytest.mark.slow  # trains a ViT for an epoch
def test_a_linear_probe_of_a_model_with_two_heads_is_recorded_as_one_with_both_heads_trainable(tmp_path):
    from transferlab.probe import PROBE_IN_LOOP

    record = run_training(tiny_config(f"model.name={DISTILLED}", "freeze=last_only", "data.num_train=64",
                                      "data.num_test=32"), tmp_path / "run")
    assert record["status"] == "completed", record.get("error")
    assert record["params_trainable"] == 2 * (192 * 10 + 10) and record["probe"] == PROBE_IN_LOOP



# --- bounds, one line each ----------------------------------------------------------------------------

@pytest.mark.parametrize("override, message", [
    ("optim.lr=1e308", "optim.lr=1e+308 is not allowed; it must be > 0 and at most 100.0"),
    ("optim.clip_grad_norm=1e-30", "optim.clip_grad_norm=1e-30 is not allowed; it must be >= 0.0001 (a smaller norm "
                                   "leaves the weights as they are; null: no clipping)"),
    ("optim.momentum=5", "optim.momentum=5.0 is not allowed; it must be in [0, 1) (1 and more make every step larger "
                         "than the last)"),
    ("data.stored_size=64", "data.stored_size=64 is not allowed below data.image_size=224: the model would see images "
                            "enlarged from fewer pixels; set data.stored_size >= 224 (or a smaller data.image_size)"),
])
def test_values_out_of_their_bounds_are_one_line_naming_the_setting(override, message):
    with pytest.raises(ConfigError) as refused:
        compose_config(["data=imagefolder", override])
    assert str(refused.value) == message


@pytest.mark.parametrize("deletion", ["~model", "~optim.lr", "~data"])
def test_deleting_a_setting_is_refused_not_replaced_by_its_default(deletion):
    key = deletion[1:]
    with pytest.raises(ConfigError) as refused:
        compose_config([deletion])
    assert str(refused.value) == (f"{deletion} is not allowed: deleting {key} would leave its default in its place "
                                  f"(model.name=resnet18 for ~model); set {key}=... to what the run should use")


def test_a_lora_rank_larger_than_the_layers_it_adapts_is_refused():
    import timm

    from transferlab import adapt

    vit = timm.create_model("test_vit", pretrained=False, num_classes=3, img_size=32)
    trainable = [name for name, _ in vit.named_parameters()]
    with pytest.raises(ConfigError) as refused:
        adapt.adapt_model(vit, "lora", "head", (), trainable, adapt.LoraSettings(rank=512))
    assert str(refused.value) == ("adapt.rank=512 is larger than a layer it adapts (blocks.0.attn.qkv: 64 inputs, "
                                  "192 outputs); it must be at most 64 here")


def test_a_misspelled_lora_target_beside_one_that_matches_is_refused_not_dropped():
    import timm

    from transferlab import adapt

    vit = timm.create_model("test_vit", pretrained=False, num_classes=3, img_size=32)
    with pytest.raises(ConfigError) as refused:
        adapt.lora_targets(vit, "head", (), ("qkv", "fc3"))
    assert str(refused.value).startswith("adapt.target_modules=['qkv', 'fc3']: 'fc3' matches no module outside the "
                                         "head; this model's adaptable modules are e.g. ")


def test_a_warmup_shorter_than_one_batch_is_refused(tmp_path):
    record = run_training(tiny_config("train.epochs=2", "optim.warmup_epochs=0.01", "data.num_train=64",
                                      "data.num_test=16"), tmp_path / "run")  # 2 batches an epoch
    assert record["status"] == "failed" and record["history"] == []
    assert record["error"] == ("optim.warmup_epochs=0.01 is shorter than one batch (an epoch is 2 batch(es) of "
                               "train.batch_size=32); it must be 0 or at least 0.5")


def test_batches_of_one_image_with_batchnorm_are_one_line_not_torchs_error(tmp_path):
    record = run_training(tiny_config("train.batch_size=1", "data.num_train=16", "data.num_test=8"), tmp_path / "run")
    assert record["status"] == "failed" and record["history"] == []
    assert record["error"] == ("train.batch_size=1 trains on batches of one image, which the BatchNorm layers of "
                               "resnet18 (bn1, ...) cannot normalise; use train.batch_size >= 2 (and at least 2 "
                               "training images), or a model without BatchNorm")


def test_more_decode_workers_than_cores_are_capped_at_the_cores_with_a_warning(caplog):
    from transferlab.datasets import decode_workers, usable_cores

    cores = usable_cores()
    assert decode_workers(cores + 62) == cores and decode_workers(0) == cores and decode_workers(1) == 1
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        f"data.decode_workers={cores + 62} is more than the {cores} CPU core(s) this process may use: decoding "
        f"with {cores}"]


@pytest.mark.slow  # decodes in worker processes
def test_an_image_folder_decoded_with_too_many_workers_starts_one_per_core(tmp_path):
    import json

    from transferlab.datasets import prepare_imagefolder, usable_cores

    root = write_image_folder(tmp_path / "birds", per_class=8)
    data = compose_config(["data=imagefolder", f"data.root={root}", f"data.cache_dir={tmp_path / 'cache'}",
                           "data.image_size=32", "data.stored_size=32", "data.decode_workers=64"]).data
    prepare_imagefolder(data)
    [about] = (tmp_path / "cache").rglob("about.json")
    assert json.loads(about.read_text())["decode_workers"] == min(usable_cores(), 48)
