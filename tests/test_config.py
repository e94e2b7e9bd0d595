"""The composed defaults are the protocol's recipe, and bad values fail with the key named."""

import re

import pytest

from transferlab.config import validate
from transferlab.errors import ConfigError

from helpers import compose_config


def test_defaults_reproduce_the_protocol():
    config = validate(compose_config([]))
    assert (config.model.name, config.model.pretrained, config.model.weights) == ("resnet18", True, None)
    assert config.freeze.name == "none" and config.freeze.modules is None
    assert (config.data.name, config.data.fraction, config.data.image_size) == ("cifar10", 0.5, 224)
    assert (config.optim.name, config.optim.lr, config.optim.momentum, config.optim.weight_decay) == (
        "sgd", 0.001, 0.9, 0.0)
    assert (config.train.epochs, config.train.batch_size, config.train.eval_batch_size) == (10, 64, 128)
    assert config.seed == 42


@pytest.mark.parametrize("group, option, key, value", [
    ("model", "alexnet", "name", "alexnet"),
    ("model", "vgg16", "name", "vgg16"),
    ("freeze", "last_only", "name", "last_only"),
    ("data", "synthetic", "name", "synthetic"),
    ("data", "cifar100", "name", "cifar100"),
    ("data", "imagefolder", "name", "imagefolder"),
    ("optim", "adamw", "name", "adamw"),
])
def test_each_group_option_composes(group, option, key, value):
    config = validate(compose_config([f"{group}={option}"]))
    assert getattr(getattr(config, group), key) == value


def test_synthetic_keeps_the_protocol_schedule_and_transforms():
    config = validate(compose_config(["data=synthetic"]))
    assert (config.data.fraction, config.data.image_size, config.train.batch_size) == (0.5, 224, 64)


def test_an_image_folder_trains_on_all_of_its_images_unless_asked():
    """data.fraction's 0.5 is the study's CIFAR recipe: a user's own folder was silently halved."""
    folder = validate(compose_config(["data=imagefolder"])).data
    assert (folder.fraction, folder.per_class) == (1.0, None)
    assert validate(compose_config(["data=imagefolder", "data.fraction=0.5"])).data.fraction == 0.5
    assert validate(compose_config(["data=imagefolder", "data.per_class=5"])).data.fraction is None
    assert validate(compose_config(["data=cifar10"])).data.fraction == 0.5


@pytest.mark.parametrize("override, message", [
    ("data.fraction=0", "data.fraction=0.0 is not allowed; it must be in (0, 1]"),
    ("data.fraction=1.01", "data.fraction=1.01 is not allowed"),
    ("train.epochs=0", "train.epochs=0 is not allowed; it must be >= 1"),
    ("train.batch_size=0", "train.batch_size=0 is not allowed"),
    ("train.eval_batch_size=-1", "train.eval_batch_size=-1 is not allowed"),
    ("device=tpu", "device='tpu' is not allowed; choose one of: auto, cuda, cpu, mps"),
    ("precision=fp8", "precision='fp8' is not allowed; choose one of: auto, bf16, fp16, fp32"),
    ("data.pipeline=gpu", "data.pipeline='gpu' is not allowed; choose one of: device, reference"),
    ("optim.lr=0", "optim.lr=0.0 is not allowed"),
    ("progress=maybe", "progress='maybe' is not allowed"),
    ("logger=wandb", "logger='wandb' is not allowed; choose one of: none, tensorboard, mlflow"),
    ("name=a/b", "name='a/b' is not allowed; it must be a non-empty folder name"),
    ("data.image_size=4", "data.image_size=4 is not allowed; it must be >= 8"),
    ("data.num_workers=-1", "data.num_workers=-1 is not allowed; it must be >= 0"),
    ("data.num_train=0", "data.num_train=0 is not allowed; it must be >= 1"),
    ("optim.momentum=-0.5", "optim.momentum=-0.5 is not allowed; it must be in [0, 1)"),
    ("optim.betas=[0.9]", "optim.betas=[0.9] is not allowed; give two values in [0, 1)"),
    ("data.augment=cutmix", "data.augment='cutmix' is not allowed; choose one of: pad_crop_flip, random_resized_crop"),
    ("data.normalize=mnist", "data.normalize='mnist' is not allowed; choose one of: cifar10, cifar100, imagenet"),
    ("data.test_fraction=0", "data.test_fraction=0.0 is not allowed; it must be in (0, 1)"),
    ("data.test_fraction=1", "data.test_fraction=1.0 is not allowed; it must be in (0, 1)"),
    ("data.test_crop=0", "data.test_crop=0.0 is not allowed; it must be in (0, 1]"),
    ("data.crop_scale=[0.5,0.2]", "data.crop_scale=[0.5, 0.2] is not allowed; give [low, high] with 0 < low <= high"),
    ("data.stored_size=4", "data.stored_size=4 is not allowed; it must be >= 8"),
    ("data.decode_workers=-1", "data.decode_workers=-1 is not allowed; it must be >= 0"),
])
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError) as error:
        validate(compose_config([override]))
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_unknown_key_in_a_plain_dict_names_it():
    with pytest.raises(ConfigError, match="train.epochz"):
        validate({"train": {"epochz": 3}})


@pytest.mark.parametrize("key", ["resume", "keep_checkpoint", "force", "save_model", "deterministic"])
def test_switches_take_booleans_only(key):
    with pytest.raises(ConfigError, match=f"^{key}: Value 'maybe' is not a valid bool"):
        validate({key: "maybe"})


def test_run_folder_names_are_safe_and_distinct():
    from transferlab.run_folders import run_dirname

    assert run_dirname("") == "defaults"
    assert run_dirname("model=alexnet") == "model=alexnet"
    assert run_dirname("model.weights=/tmp/w.pt") == "model.weights=_tmp_w.pt"
    long_a, long_b = ",".join(f"key{i}=value" for i in range(40)), ",".join(f"key{i}=value" for i in range(41))
    assert len(run_dirname(long_a).encode()) <= 200 and run_dirname(long_a) != run_dirname(long_b)
    assert run_dirname(long_a).startswith("key0=value,key1=value")


def test_equal_spellings_of_a_value_name_one_run_folder():
    """model.pretrained=False (as a sweep writes it) and model.pretrained=false named two folders,
    so the same run trained twice instead of being skipped."""
    def folder(*overrides: str) -> str:
        return compose_config(list(overrides), return_hydra_config=True).hydra.run.dir

    assert folder("model.pretrained=False") == folder("model.pretrained=FALSE") == "outputs/runs/model.pretrained=false"
    assert folder("model.pretrained=True", "optim.lr=0.10") == "outputs/runs/model.pretrained=true,optim.lr=0.1"
    assert folder("data.fraction=1.00") == folder("data.fraction=1.0") == "outputs/runs/data.fraction=1.0"
    # The usual spellings keep their folders (existing outputs are still found); strings stay as typed.
    assert folder("optim.lr=1e-3", "save_model=true") == "outputs/runs/optim.lr=1e-3,save_model=true"
    assert folder("name=False") == "outputs/False/defaults"
    assert folder("data=imagefolder", "data.root=False") == "outputs/runs/data=imagefolder,data.root=False"


def test_a_home_folder_in_a_path_setting_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    config = validate(compose_config(["data=imagefolder", "data.root='~/photos/birds'", "data.cache_dir='~/cache'",
                                      "model.weights='~/w.pt'"]))
    assert (config.data.root, config.data.cache_dir, config.model.weights) == (
        f"{tmp_path}/photos/birds", f"{tmp_path}/cache", f"{tmp_path}/w.pt")
    assert validate(compose_config([])).data.root == "data"  # relative paths stay relative


def test_an_unquoted_tilde_is_the_home_folder_as_bash_would_have_made_it(tmp_path, monkeypatch, capsys):
    """The docs' own data.root=~/photos/birds failed in Hydra's grammar where the shell (zsh, sh) does
    not expand it; a leading ~ of a value is now expanded before Hydra reads the override."""
    from transferlab.composition import compose_config as compose_and_validate
    from transferlab.composition import home_expanded_overrides

    monkeypatch.setenv("HOME", str(tmp_path))
    unquoted = compose_and_validate(["data=imagefolder", "data.root=~/photos/birds"])
    assert unquoted.data.root == f"{tmp_path}/photos/birds"
    # What the shell hands on of the quoted spelling works, and is the home folder too.
    quoted = compose_and_validate(["data=imagefolder", "data.root='~/photos/birds'"])
    assert quoted.data.root == f"{tmp_path}/photos/birds"
    # Each value of a sweep; not a ~ inside a value, nor Hydra's ~KEY (delete).
    assert home_expanded_overrides(["data.root=~/a,~/b", "name=a~b", "~logger", "data.root=~"]) == [
        f"data.root={tmp_path}/a,{tmp_path}/b", "name=a~b", "~logger", f"data.root={tmp_path}"]
    # The command line's path (transferlab.launch) expands it too.
    from transferlab.cli import main

    capsys.readouterr()
    assert main(["train", "--cfg", "job", "data=imagefolder", "data.root=~/photos/birds"]) == 0
    assert f"root: {tmp_path}/photos/birds" in capsys.readouterr().out
    # A ~ Hydra still cannot read (no such user) is the one line that says how to write it.
    with pytest.raises(ConfigError) as error:
        compose_and_validate(["data=imagefolder", "data.root=~nosuchuser0/birds"])
    line = str(error.value)
    assert "\n" not in line and line.startswith("cannot read the override 'data.root=~nosuchuser0/birds': ")
    assert "write data.root=$HOME" in line and "quote it for Hydra inside the shell's quotes" in line


def test_each_dataset_gets_its_own_transforms_and_cifar10_keeps_the_protocols():
    def transforms(data: str) -> tuple:
        d = validate(compose_config([f"data={data}"])).data
        return d.augment, d.normalize, d.test_crop, d.image_size

    assert transforms("cifar10") == transforms("synthetic") == ("pad_crop_flip", "cifar10", 1.0, 224)
    assert transforms("cifar100") == ("pad_crop_flip", "cifar100", 1.0, 224)
    assert transforms("imagefolder") == ("random_resized_crop", "imagenet", 0.875, 224)
    folder = validate(compose_config(["data=imagefolder", "data.normalize=cifar10", "data.augment=flip"])).data
    assert (folder.normalize, folder.augment, folder.stored_size) == ("cifar10", "flip", 256)  # a user can switch


def test_an_image_folder_is_part_of_the_result_and_of_the_run_folder():
    from transferlab.config import as_dict
    from transferlab.identity import result_config
    from transferlab.run_folders import run_dirname

    def result(*overrides: str) -> dict:
        return result_config(as_dict(validate(compose_config(list(overrides)))))

    # Where CIFAR-10 lives, or where an image folder's cache lives, does not change results ...
    assert result("data.root=/a") == result("data.root=/b")
    assert result("data=imagefolder", "data.cache_dir=/a") == result("data=imagefolder", "data.cache_dir=/b")
    # ... but an image folder is the dataset itself.
    assert result("data=imagefolder", "data.root=/a") != result("data=imagefolder", "data.root=/b")
    assert run_dirname("model=alexnet", "cifar10", "/a") == run_dirname("model=alexnet", "cifar10", "/b")
    assert run_dirname("data=imagefolder", "imagefolder", "/photos/birds") == "data=imagefolder,data.root=_photos_birds"
    assert run_dirname("", "imagefolder", "a") != run_dirname("", "imagefolder", "b")


def test_a_run_folder_name_leaves_out_exactly_the_settings_that_do_not_change_results(monkeypatch):
    """NOT_RESULT_KEYS is the one list: Hydra's exclude_keys is made from it, so a key added there
    leaves the run folder's name too."""
    import transferlab.config as config_module
    from transferlab.config import NOT_RESULT_KEYS
    from transferlab.composition import compose_with_hydra

    hydra = compose_with_hydra(["seed=3"]).hydra
    assert list(hydra.job.config.override_dirname.exclude_keys) == ["experiment", "name", *NOT_RESULT_KEYS]
    settings = ["force=true", "progress=off", "resume=false", "keep_checkpoint=true", "logger=tensorboard",
                "data.root=/elsewhere", "data.num_workers=1", "data.cache_dir=/cache", "data.decode_workers=2",
                "model.weights_name=letters", "train.threads=1"]
    assert sorted(setting.partition("=")[0] for setting in settings) == sorted(NOT_RESULT_KEYS)
    assert compose_with_hydra(["seed=3", *settings]).hydra.run.dir == "outputs/runs/seed=3"
    monkeypatch.setattr(config_module, "NOT_RESULT_KEYS", (*NOT_RESULT_KEYS, "deterministic"))
    assert compose_with_hydra(["seed=3", "deterministic=true"]).hydra.run.dir == "outputs/runs/seed=3"


def test_weights_name_and_new_head_need_a_weights_file():
    with pytest.raises(ConfigError, match=r"^model.weights_name=letters applies to a weights file; set model.weights"):
        validate(compose_config(["model.weights_name=letters"]))
    with pytest.raises(ConfigError, match=r"^model.new_head=true applies to a weights file"):
        validate(compose_config(["model.new_head=true"]))
    config = validate(compose_config(["model.weights=/w/model.pt", "model.weights_name=letters", "model.new_head=true"]))
    assert (config.model.weights_name, config.model.new_head) == ("letters", True)


def test_train_threads_is_at_least_one_or_null():
    with pytest.raises(ConfigError, match=r"^train.threads=0 is not allowed; it must be >= 1"):
        validate(compose_config(["train.threads=0"]))
    assert validate(compose_config(["train.threads=1"])).train.threads == 1
    assert validate(compose_config([])).train.threads is None


def test_a_busy_machine_is_told_that_fewer_threads_train_faster():
    from transferlab.engine import busy_machine_advice

    assert busy_machine_advice(2, cores=2, load=0.4) is None  # idle: torch's default stands
    assert busy_machine_advice(1, cores=2, load=7.0) is None  # already one thread
    advice = busy_machine_advice(2, cores=2, load=6.5)
    assert advice.startswith("the machine is busy (load average 6.5 on 2 cores): 2 CPU threads wait for cores")
    assert "train.threads=1" in advice
    assert "train.threads=12" in busy_machine_advice(16, cores=16, load=4.0)


def test_each_setting_is_described_once_on_its_field_and_the_checks_and_help_read_it_there():
    """A setting's meaning, the names it allows and its lowest value sit on its field: the value
    checks, --help's line and NOT_RESULT_KEYS are made from them."""
    from omegaconf import OmegaConf

    from transferlab.config import NOT_RESULT_KEYS, settings
    from transferlab.settings_reference import KEY_MEANINGS

    described = dict(settings())
    assert all(entry.metadata["meaning"] for entry in described.values())
    choices = {key: entry.metadata["choices"] for key, entry in described.items() if entry.metadata["choices"]}
    assert choices["optim.schedule"] == ("constant", "cosine", "step") and len(choices) == 16
    for key, names in choices.items():
        with pytest.raises(ConfigError, match=rf"^{re.escape(key)}='nope' is not allowed; choose one of: "
                                              rf"{re.escape(', '.join(names))}$"):
            validate(OmegaConf.from_dotlist([f"{key}=nope"]))
        assert KEY_MEANINGS[key].endswith(f": {' | '.join(names)}")
    lowest = {key: entry.metadata["at_least"] for key, entry in described.items()
              if entry.metadata["at_least"] is not None and key not in ("optim.clip_grad_norm", "freeze.unfreeze_at_epoch")}
    assert lowest["train.epochs"] == 1 and lowest["data.image_size"] == 8
    for key, low in lowest.items():
        below = low - 1
        with pytest.raises(ConfigError, match=rf"^{re.escape(key)}={below} is not allowed; it must be >= {low}$"):
            validate(OmegaConf.from_dotlist([f"{key}={below}"]))
        assert KEY_MEANINGS[key].endswith(f", >= {low}")
    assert set(NOT_RESULT_KEYS) == {key for key, entry in described.items() if not entry.metadata["result"]}


def test_the_reports_protocol_settings_are_the_schemas_defaults_and_conf_composes_them():
    """The report lays a group beside the study's reference figures when it has the study's settings:
    those are the schema's defaults (written once, on the fields), and conf/ composes them."""
    from transferlab.config import as_dict
    from transferlab.report.studies import PROTOCOL_SETTINGS

    composed = as_dict(validate(compose_config([])))
    assert PROTOCOL_SETTINGS["optim.lr"] == 0.001 and PROTOCOL_SETTINGS["data.augment"] == "pad_crop_flip"
    for key, value in PROTOCOL_SETTINGS.items():
        section, _, leaf = key.rpartition(".")
        assert composed[section][leaf] == value, key


def test_conf_composes_the_schemas_default_of_every_setting():
    """conf/*.yaml hold values for Hydra; the defaults they compose with no overrides are the ones the
    fields say (and --help and docs/configuration.md show), not a second set."""
    from transferlab.config import as_dict, schema_default, settings

    composed = as_dict(validate(compose_config([])))

    def value(key: str):
        node = composed
        for part in key.split("."):
            node = node[part]
        return node

    differing = [(key, value(key), schema_default(key)) for key, _ in settings() if value(key) != schema_default(key)]
    assert differing == []
