"""The study's sweeps: what each experiment expands to, and how sweeps behave when re-run or
when one run fails."""

import itertools
import json
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from transferlab.config import validate

from helpers import compose_config, transferlab

# Small and fast: these keep each part's own swept keys free.
DRY_RUN = ["data=synthetic", "data.image_size=32", "data.num_train=60", "data.num_test=40", "train.epochs=1",
           "train.batch_size=30", "device=cpu", "progress=off"]


def expand(experiment: str, extra: list[str] = ()) -> list:
    """The validated configs of every job of `transferlab train -m experiment=...`, expanded the
    way Hydra's basic sweeper does it."""
    base = [f"experiment={experiment}", *extra]
    params = compose_config(base, return_hydra_config=True).hydra.sweeper.params
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    choices = [[f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()] for o in parsed]
    return [validate(compose_config([*base, *combo])) for combo in itertools.product(*choices)]


def protocol_recipe(config) -> tuple:
    return (config.data.name, config.data.image_size, config.optim.name, config.optim.lr, config.optim.momentum,
            config.optim.weight_decay, config.train.epochs, config.train.batch_size, config.train.eval_batch_size,
            config.seed, config.freeze.modules)


PROTOCOL_RECIPE = ("cifar10", 224, "sgd", 0.001, 0.9, 0.0, 10, 64, 128, 42, None)


def test_part_a_is_alexnet_pretrained_and_scratch_by_fraction():
    configs = expand("part_a")
    assert sorted((c.data.fraction, c.model.pretrained) for c in configs) == [
        (0.1, False), (0.1, True), (0.2, False), (0.2, True), (0.5, False), (0.5, True)]
    for config in configs:
        assert (config.name, config.model.name, config.freeze.name) == ("part_a", "alexnet", "none")
        assert protocol_recipe(config) == PROTOCOL_RECIPE


def test_part_b_is_pretrained_resnet18_and_vgg16_on_half_the_data():
    configs = expand("part_b")
    assert sorted(c.model.name for c in configs) == ["resnet18", "vgg16"]
    for config in configs:
        assert (config.name, config.model.pretrained, config.data.fraction, config.freeze.name) == (
            "part_b", True, 0.5, "none")
        assert protocol_recipe(config) == PROTOCOL_RECIPE


def test_part_c_is_pretrained_resnet18_by_freeze_strategy():
    configs = expand("part_c")
    assert sorted(c.freeze.name for c in configs) == ["early", "last_only", "middle", "none"]
    for config in configs:
        assert (config.name, config.model.name, config.model.pretrained, config.data.fraction) == (
            "part_c", "resnet18", True, 0.5)
        assert protocol_recipe(config) == PROTOCOL_RECIPE


def test_command_line_overrides_apply_on_top():
    configs = expand("part_c", ["data=synthetic", "train.epochs=1"])
    assert len(configs) == 4
    assert all((c.data.name, c.train.epochs, c.data.fraction) == ("synthetic", 1, 0.5) for c in configs)


def records(folder: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in folder.glob("*/run.json")}


@pytest.mark.slow
def test_a_failing_run_does_not_stop_the_sweep_and_rerunning_trains_nothing(tmp_path):
    sweep = ["train", "-m", "experiment=part_c", *DRY_RUN, "model.pretrained=false", "freeze.modules=[layer9],null"]
    first = transferlab(*sweep, cwd=tmp_path)
    output = first.stdout + first.stderr
    assert first.returncode == 1, output
    runs = records(tmp_path / "outputs" / "part_c")
    assert len(runs) == 8  # 4 strategies x 2 module lists
    failed = {name for name, r in runs.items() if r["status"] == "failed"}
    assert len(failed) == 4 and all("freeze.modules=[layer9]" in name for name in failed)
    assert all("unknown module(s) layer9" in runs[name]["error"] for name in failed)
    assert sum(r["status"] == "completed" for r in runs.values()) == 4
    assert "8 run(s) ran, 4 did not complete, 0 skipped (completed before)" in output
    assert all(f"not completed: {name}" in output for name in failed)

    second = transferlab(*sweep, cwd=tmp_path)
    output = second.stdout + second.stderr
    assert second.returncode == 1  # the failed runs were tried again and failed again
    assert output.count("skipped:") == 4
    assert "4 run(s) ran, 4 did not complete, 4 skipped (completed before)" in output
    again = records(tmp_path / "outputs" / "part_c")
    for name, record in runs.items():
        if record["status"] == "completed":
            assert again[name] == record  # untouched: nothing was trained


@pytest.mark.slow
def test_force_reruns_and_a_changed_config_is_refused(tmp_path):
    run = ["train", *DRY_RUN, "model.pretrained=false", "name=solo"]
    assert transferlab(*run, cwd=tmp_path).returncode == 0
    [(name, record)] = records(tmp_path / "outputs" / "solo").items()
    skipped = transferlab(*run, cwd=tmp_path)
    assert skipped.returncode == 0 and "skipped:" in skipped.stdout
    assert records(tmp_path / "outputs" / "solo")[name]["started_at"] == record["started_at"]
    # Settings that cannot change results neither move the folder nor count as another config.
    quiet = transferlab(*run, "progress=on", "logger=tensorboard", "keep_checkpoint=true", cwd=tmp_path)
    assert quiet.returncode == 0 and "skipped:" in quiet.stdout

    forced = transferlab(*run, "force=true", cwd=tmp_path)
    assert forced.returncode == 0 and "skipped:" not in forced.stdout
    assert len(records(tmp_path / "outputs" / "solo")) == 1  # force does not change the folder

    config_file = tmp_path / "outputs" / "solo" / name / "run.json"
    on_disk = json.loads(config_file.read_text())
    on_disk["config"]["optim"]["lr"] = 0.5  # as if conf/ had been edited since
    config_file.write_text(json.dumps(on_disk))
    refused = transferlab(*run, cwd=tmp_path)
    assert refused.returncode == 1
    assert "holds a completed run of a different config; pass force=true" in refused.stdout + refused.stderr
    assert json.loads(config_file.read_text())["config"]["optim"]["lr"] == 0.5  # never overwritten


def folder_bytes(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder``, by relative path, with its content."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_a_sweep_counts_what_its_jobs_did_and_leaves_refused_and_skipped_folders_as_they_were(tmp_path):
    sweep = ["train", "-m", *DRY_RUN, "model.pretrained=false", "name=taken", "seed=1,2"]
    assert transferlab(*sweep, cwd=tmp_path).returncode == 0
    runs = tmp_path / "outputs" / "taken"
    [edited, skewed] = sorted(p.parent for p in runs.glob("*/run.json"))
    record = json.loads((edited / "run.json").read_text())
    record["config"]["optim"]["lr"] = 0.5  # as if conf/ had been edited since
    (edited / "run.json").write_text(json.dumps(record))
    record = json.loads((skewed / "run.json").read_text())
    record["finished_at"] = "2999-01-01T00:00:00+00:00"  # written on a node whose clock runs ahead
    (skewed / "run.json").write_text(json.dumps(record))
    before = {folder: folder_bytes(folder) for folder in (edited, skewed)}

    again = transferlab(*sweep, "progress=on", cwd=tmp_path)  # progress: another overrides.yaml, the same folders
    output = again.stdout + again.stderr
    assert again.returncode == 1, output
    assert "1 run(s) ran, 1 did not complete, 1 skipped (completed before)" in output
    assert f"not completed: {edited.name} (failed: " in output and "holds a completed run of a different config" in output
    assert {folder: folder_bytes(folder) for folder in (edited, skewed)} == before  # .hydra/, train.log included


@pytest.mark.slow
def test_a_name_that_is_not_a_plain_folder_name_is_refused_before_anything_is_written(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    for mode in ([], ["-m"]):
        result = transferlab("train", *mode, *DRY_RUN, "name=../x", cwd=work)
        assert result.returncode == 1
        assert "name='../x' is not allowed; it must be a non-empty folder name, not a path" in result.stderr
        assert sorted(p.name for p in tmp_path.rglob("*")) == ["work"]  # neither ../x nor outputs/


@pytest.mark.slow
def test_study_runs_all_twelve_runs_of_the_three_parts(tmp_path):
    import torch
    import torchvision

    # Pretrained runs find these random "ImageNet" weights in TORCH_HOME instead of downloading.
    cache = tmp_path / "torch_home" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    for name in ("alexnet", "resnet18", "vgg16"):
        weights = torchvision.models.get_model_weights(name)["IMAGENET1K_V1"]
        torch.save(torchvision.models.get_model(name, weights=None).state_dict(), cache / Path(weights.url).name)
    dry_run = [o.replace("data.image_size=32", "data.image_size=64") for o in DRY_RUN]
    result = transferlab("study", *dry_run, cwd=tmp_path, TORCH_HOME=str(tmp_path / "torch_home"),
                         TRANSFERLAB_STAND_IN_WEIGHTS="1")
    assert result.returncode == 0, result.stdout + result.stderr
    counts = {part: len(records(tmp_path / "outputs" / part)) for part in ("part_a", "part_b", "part_c")}
    assert counts == {"part_a": 6, "part_b": 2, "part_c": 4}
    part_a = records(tmp_path / "outputs" / "part_a").values()
    assert sorted((r["fraction"], r["pretrained"]) for r in part_a) == [
        (0.1, False), (0.1, True), (0.2, False), (0.2, True), (0.5, False), (0.5, True)]
    assert all(r["status"] == "completed" for part in counts for r in records(tmp_path / "outputs" / part).values())


@pytest.mark.slow
def test_runs_on_two_image_folders_get_two_run_folders_and_neither_is_skipped(tmp_path):
    from helpers import write_image_folder

    for name in ("birds", "cars"):
        write_image_folder(tmp_path / name, per_class=4, classes=("a", "b"))
    sweep = ["train", "-m", *DRY_RUN, "data=imagefolder", "data.root=birds,cars", "data.cache_dir=cache",
             "data.stored_size=36", "model.pretrained=false", "name=mine"]
    result = transferlab(*sweep, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "skipped:" not in result.stdout
    runs = records(tmp_path / "outputs" / "mine")
    assert sorted(record["dataset"] for record in runs.values()) == ["birds", "cars"]
    assert all(record["status"] == "completed" for record in runs.values())


def test_a_completed_run_on_another_image_folder_is_not_taken_for_this_one(tmp_path):
    from transferlab.config import as_dict
    from transferlab.records import write_record
    from transferlab.run_folders import RunFolderTaken, completed_run

    def config(root: str) -> dict:
        return as_dict(validate(compose_config(["data=imagefolder", f"data.root={root}"])))

    write_record(tmp_path, {"status": "completed", "config": config("/photos/birds"), "history": []})
    assert completed_run(tmp_path, config("/photos/birds")) is not None
    with pytest.raises(RunFolderTaken):
        completed_run(tmp_path, config("/photos/cars"))


def test_two_jobs_for_one_folder_are_named_with_what_sets_them_apart():
    from transferlab.errors import ConfigError
    from transferlab.run_folders import refuse_shared_run_folders

    folder = Path("outputs/runs/defaults")
    with pytest.raises(ConfigError) as same:
        refuse_shared_run_folders([(["seed=5"], Path("outputs/runs/seed=5")), (["seed=6"], Path("outputs/runs/seed=6")),
                                   (["seed=5"], Path("outputs/runs/seed=5"))])
    assert str(same.value) == ("jobs #0 and #2 of this sweep are the same run (seed=5), in outputs/runs/seed=5; "
                               "nothing was run: list each value once")
    with pytest.raises(ConfigError) as apart:
        refuse_shared_run_folders([(["lr=1", "data.num_workers=0"], folder), (["lr=1", "data.num_workers=1"], folder)])
    assert str(apart.value).startswith("jobs #0 (data.num_workers=0) and #1 (data.num_workers=1) of this sweep would "
                                       "both run in outputs/runs/defaults, as a run folder is named by the settings "
                                       "that can change results; nothing was run")
    refuse_shared_run_folders([(["seed=5"], Path("a")), (["seed=6"], Path("b"))])  # one folder each: fine


@pytest.mark.slow
@pytest.mark.parametrize("swept, message", [
    ("seed=5,5", "jobs #0 and #1 of this sweep are the same run ("),
    ("data.num_workers=0,1", "jobs #0 (data.num_workers=0) and #1 (data.num_workers=1) of this sweep would both run in "
                             "outputs/shared/"),
])
def test_a_sweep_with_two_jobs_for_one_folder_is_refused_before_anything_runs(tmp_path, swept, message):
    result = transferlab("train", "-m", *DRY_RUN, "model.pretrained=false", "name=shared", swept, cwd=tmp_path)
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(f"transferlab train: error: {message}") and "nothing was run" in line, line
    assert list(tmp_path.iterdir()) == []  # no outputs/, not even the sweep's multirun.yaml


@pytest.mark.slow
def test_a_run_spelt_another_way_is_the_same_run_and_is_skipped(tmp_path):
    """model.pretrained=False (a sweep's Python spelling) and model.pretrained=false named two run
    folders, so the same run trained twice."""
    first = transferlab("train", *DRY_RUN, "model.pretrained=False", "optim.lr=0.010", cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    second = transferlab("train", *DRY_RUN, "model.pretrained=false", "optim.lr=0.01", cwd=tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "skipped:" in second.stdout + second.stderr
    assert list(records(tmp_path / "outputs" / "runs")) == [
        "data.image_size=32,data.num_test=40,data.num_train=60,data=synthetic,device=cpu,model.pretrained=false,"
        "optim.lr=0.01,train.batch_size=30,train.epochs=1"]


def test_jobs_that_are_one_run_in_other_folders_are_named_in_a_warning():
    """experiment=sources model.pretrained=false: torchvision's source is the scratch source, and the
    two timm tags are one timm model from scratch (issue 23). Before: four runs, trained and counted."""
    from transferlab.config import as_dict
    from transferlab.run_folders import same_run_lines

    jobs = [([f"source={source}"], as_dict(validate(compose_config(
        ["experiment=sources", f"source={source}", "model.pretrained=false", "data.fraction=0.1"]))))
        for source in ("torchvision", "timm_a1", "timm_swsl", "scratch")]
    assert same_run_lines(jobs) == [
        f"jobs {named} of this sweep are one run: they differ only in settings that do nothing here (such as a timm "
        "pretraining tag, from scratch); each trains it again in a folder of its own, and the report counts it once"
        for named in ("#0 (source=torchvision), #3 (source=scratch)", "#1 (source=timm_a1), #2 (source=timm_swsl)")]
    # Pretrained, each is a run of its own; and with data.normalize=auto a timm tag gives the mean and std.
    pretrained = [(o, {**c, "model": {**c["model"], "pretrained": True}}) for o, c in jobs[1:3]]
    assert same_run_lines(pretrained) == []
    auto = [(o, {**c, "data": {**c["data"], "normalize": "auto"}}) for o, c in jobs[1:3]]
    assert same_run_lines(auto) == []


@pytest.mark.slow
def test_a_sweep_says_which_of_its_jobs_are_one_run(tmp_path):
    result = transferlab("train", "-m", *DRY_RUN, "model.pretrained=false",
                         "model.name=timm/resnet18.a1_in1k,timm/resnet18.fb_swsl_ig1b_ft_in1k", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    [line] = [line for line in (result.stdout + result.stderr).splitlines() if "one run" in line]
    assert ("warning: jobs #0 (model.name=timm/resnet18.a1_in1k), #1 (model.name=timm/resnet18.fb_swsl_ig1b_ft_in1k) "
            "of this sweep are one run") in line, line
