"""Repeats and the training subset's settings (docs/repeats.md): the repeat key, data.per_class and
data.sampling in the config, in run folder names, in run.json, and in the skip-if-completed check.
The draw itself is tested in test_data.py."""

import collections
import copy
import json
from pathlib import Path

import pytest

from transferlab.config import as_dict, validate
from transferlab.errors import ConfigError
from transferlab.records import write_record
from transferlab.run import run_training
from transferlab.run_folders import RunFolderTaken, completed_run

from helpers import DRY_RUN, compose_config, tiny_config, transferlab
from test_sweep import expand


def test_a_repeat_shifts_both_seeds_and_leaves_the_config_as_it_was():
    protocol = validate(compose_config([]))
    assert (protocol.repeat, protocol.effective_seed, protocol.effective_subset_seed) == (0, 42, 42)
    second = validate(compose_config(["repeat=2"]))
    assert (second.effective_seed, second.effective_subset_seed) == (44, 44)
    assert (second.seed, second.data.subset_seed) == (42, 42)  # derived, not written into the config
    mixed = validate(compose_config(["seed=7", "data.subset_seed=9", "repeat=1"]))
    assert (mixed.effective_seed, mixed.effective_subset_seed) == (8, 10)


@pytest.mark.parametrize("data", ["cifar10", "cifar100", "imagefolder", "synthetic"])
def test_per_class_alone_replaces_the_default_fraction_of_every_dataset(data):
    default = validate(compose_config([f"data={data}"])).data
    whole = 1.0 if data == "imagefolder" else 0.5  # your own images all train; the study's recipe takes half
    assert (default.fraction, default.per_class, default.sampling) == (whole, None, "stratified")
    few = validate(compose_config([f"data={data}", "data.per_class=5"])).data
    assert (few.fraction, few.per_class) == (None, 5)
    part_c = validate(compose_config([f"data={data}", "experiment=part_c", "data.per_class=5"])).data
    assert (part_c.fraction, part_c.per_class) == (None, 5)


@pytest.mark.parametrize("overrides, message", [
    (["repeat=-1"], "repeat=-1 is not allowed; it must be >= 0"),
    (["data.per_class=0"], "data.per_class=0 is not allowed; it must be >= 1"),
    (["data.sampling=random"], "data.sampling='random' is not allowed; choose one of: stratified, uniform"),
    (["data.per_class=5", "data.fraction=0.2"],
     "data.fraction=0.2 and data.per_class=5 are both set; give one of them"),
    (["experiment=part_a", "data.per_class=5", "data.fraction=0.1"],
     "data.fraction=0.1 and data.per_class=5 are both"),
    (["data.fraction=null"], "data.fraction=null needs data.per_class=K (images per class); give one of them"),
    (["data.per_class=5", "data.sampling=uniform"],
     "data.per_class=5 takes K images of every class, which data.sampling=uniform cannot; use data.sampling=stratified"),
])
def test_bad_subset_settings_are_refused_in_one_line(overrides, message):
    with pytest.raises(ConfigError) as error:
        validate(compose_config(overrides))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_few_shot_compares_pretrained_and_scratch_resnet18_at_k_images_per_class():
    configs = expand("few_shot")
    assert sorted((c.data.per_class, c.model.pretrained) for c in configs) == [
        (k, pretrained) for k in (1, 2, 5, 10, 25, 100) for pretrained in (False, True)]
    for config in configs:
        assert (config.name, config.model.name, config.freeze.name, config.data.fraction) == (
            "few_shot", "resnet18", "none", None)
        assert (config.data.sampling, config.repeat, config.train.epochs) == ("stratified", 0, 10)


def test_runs_differing_in_seed_subset_seed_or_repeat_get_folders_of_their_own():
    def folder(*overrides: str) -> str:
        return compose_config([*overrides], return_hydra_config=True).hydra.run.dir

    folders = [folder(), folder("seed=43"), folder("data.subset_seed=43"), folder("repeat=1"), folder("repeat=2"),
               folder("seed=43", "repeat=1")]
    assert len(set(folders)) == len(folders)
    # repeat=0 is the run itself: a sweep repeat=0,1,2 finds an earlier plain run's folder.
    assert folder("repeat=0") == folder() and folder("model=alexnet", "repeat=0") == folder("model=alexnet")


def test_a_record_drawn_before_stratified_subsets_is_another_config_and_the_error_says_why(tmp_path):
    config = as_dict(validate(compose_config([])))
    assert config["data"]["sampling"] == "stratified"
    old = copy.deepcopy(config)
    for keys in (("data", "sampling"), ("data", "per_class")):
        del old[keys[0]][keys[1]]
    del old["repeat"]
    write_record(tmp_path / "old", {"status": "completed", "config": old, "history": []})
    with pytest.raises(RunFolderTaken) as error:
        completed_run(tmp_path / "old", config)
    assert str(error.value) == (
        f"{tmp_path / 'old'} holds a completed run of a different config: its training subset was drawn by the "
        "old uniform sampling (its config has no data.sampling); data.sampling=uniform reproduces it, force=true "
        "replaces it")
    write_record(tmp_path / "new", {"status": "completed", "config": config, "history": []})
    assert completed_run(tmp_path / "new", config) is not None
    uniform = as_dict(validate(compose_config(["data.sampling=uniform"])))
    with pytest.raises(RunFolderTaken, match="holds a completed run of a different config; pass force=true"):
        completed_run(tmp_path / "new", uniform)  # a uniform draw is another config than a stratified one


def test_the_record_says_which_replicate_ran_and_on_which_images(tmp_path):
    config = tiny_config("data.fraction=null", "data.per_class=8", "repeat=1", "data.val_fraction=0.25")
    record = run_training(config, tmp_path)
    assert record["status"] == "completed", record.get("error")
    on_disk = json.loads((tmp_path / "run.json").read_text())
    assert (on_disk["repeat"], on_disk["seed"], on_disk["subset_seed"]) == (1, 43, 43)
    assert (on_disk["fraction"], on_disk["per_class"]) == (None, 8)
    assert on_disk["subset"] == {"sampling": "stratified", "seed": 43, "fraction": None, "per_class": 8}
    # 8 images of each class drawn, 2 of them held out for validation: 6 of each train.
    assert on_disk["train_images_per_class"] == {f"class {k}": 6 for k in range(10)}
    assert (on_disk["num_train_images"], on_disk["num_val_images"]) == (60, 20)
    assert (on_disk["config"]["seed"], on_disk["config"]["data"]["subset_seed"]) == (42, 42)


def records(folder: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in folder.glob("*/run.json")}


@pytest.mark.slow
def test_a_repeat_sweep_runs_each_replicate_in_its_own_folder_and_skips_a_completed_run(tmp_path):
    sweep = ["train", "-m", *DRY_RUN, "name=rep"]
    assert transferlab(*sweep, cwd=tmp_path).returncode == 0  # a sweep of one run, without repeat=
    result = transferlab(*sweep, "repeat=0,1", cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "1 run(s) ran, 0 did not complete, 1 skipped (completed before)" in output
    runs = records(tmp_path / "outputs" / "rep")
    assert sorted((r["repeat"], r["seed"], r["subset_seed"]) for r in runs.values()) == [(0, 42, 42), (1, 43, 43)]
    assert [",repeat=1," in name for name in sorted(runs, key=lambda n: runs[n]["repeat"])] == [False, True]


@pytest.mark.slow
def test_study_repeats_every_part_over_the_replicates_given(tmp_path):
    # CIFAR-10 missing from data.root (and no download) fails every run as it starts, so this checks only
    # what the study's sweeps expand to (each run still leaves its record), in seconds instead of 24
    # trainings. (A config that is not allowed would refuse the whole study before any run.)
    dry_run = [o for o in DRY_RUN if not o.startswith(("model.pretrained=", "data="))]  # Part A sweeps it
    missing = ["data=cifar10", f"data.root={tmp_path / 'no-cifar'}", "data.download=false"]
    result = transferlab("study", *dry_run, *missing, "repeat=0,1", cwd=tmp_path)
    assert result.returncode == 1
    jobs = collections.Counter()
    for part in ("part_a", "part_b", "part_c"):
        for name, record in records(tmp_path / "outputs" / part).items():
            assert record["status"] == "failed" and "cifar-10-python.tar.gz" in record["error"], record["error"]
            jobs[part, record["config"]["repeat"]] += 1
    assert jobs == {("part_a", 0): 6, ("part_a", 1): 6, ("part_b", 0): 2, ("part_b", 1): 2,
                    ("part_c", 0): 4, ("part_c", 1): 4}
