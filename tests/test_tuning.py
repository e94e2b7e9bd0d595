"""The validation split, Hydra's Optuna sweeper maximising it, `transferlab tune` and the report's
tuning table: real Optuna trials on generated data, a few seconds of training each."""

import csv
import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from transferlab.config import validate
from transferlab.composition import compose_with_hydra
from transferlab.errors import ConfigError
from transferlab.data import hold_out_validation
from transferlab.run import load_datasets, run_training
from transferlab.errors import SweepRefused
from transferlab.tuning import RequireValidationSplit, objective

from helpers import start_transferlab, tiny_config, transferlab

# ResNet18 at 32 px on 60 generated images: each run trains two batches of 30 or fewer.
TUNE_RUN = ["data=synthetic", "data.image_size=32", "data.num_train=60", "data.num_test=40", "train.epochs=1",
            "train.batch_size=30", "train.eval_batch_size=40", "model=resnet18", "model.pretrained=false",
            "device=cpu", "progress=off"]


def records(folder: Path) -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted(folder.rglob("run.json"))]


def test_the_validation_split_is_a_stratified_seed_fixed_share_of_the_training_subset():
    config = tiny_config("data.fraction=0.5", "data.val_fraction=0.25")
    subset, _ = load_datasets(config.data, config.effective_subset_seed)
    train, val = hold_out_validation(subset, 0.25, seed=config.data.subset_seed)
    assert len(train) + len(val) == len(subset) == 160
    assert torch.bincount(val.labels, minlength=10).tolist() == (torch.bincount(subset.labels, minlength=10) * 0.25
                                                                 ).round().long().tolist()
    # The held-out images are not among those that train (the synthetic images are all distinct).
    trained = {bytes(image.numpy()) for image in train.images}
    assert not any(bytes(image.numpy()) in trained for image in val.images)
    _, again = hold_out_validation(subset, 0.25, seed=config.data.subset_seed)
    assert torch.equal(again.images, val.images)
    assert hold_out_validation(subset, 0.0, seed=1) == (subset, None)


def test_a_run_scores_its_validation_split_every_epoch(tmp_path):
    config = tiny_config("train.epochs=2", "data.num_train=100", "data.num_test=20", "data.val_fraction=0.2")
    record = run_training(config, tmp_path)
    assert record["status"] == "completed", record.get("error")
    assert (record["num_train_images"], record["num_val_images"], record["num_test_images"]) == (80, 20, 20)
    assert all({"val_loss", "val_acc"} <= set(entry) for entry in record["history"])
    assert (record["val_acc"], record["val_loss"]) == (record["history"][-1]["val_acc"],
                                                       record["history"][-1]["val_loss"])
    with open(tmp_path / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [float(row["val_acc"]) for row in rows] == [entry["val_acc"] for entry in record["history"]]


@pytest.mark.parametrize("value", ["1.0", "-0.1"])
def test_val_fraction_outside_0_to_1_is_refused(value):
    with pytest.raises(ConfigError, match=rf"^data.val_fraction={value} is not allowed; it must be in \[0, 1\)$"):
        validate(compose_with_hydra([f"data.val_fraction={value}"], with_hydra=False))


def test_the_sweeper_gets_the_validation_accuracy_and_nothing_for_a_run_that_failed():
    assert objective({"status": "completed", "val_acc": 0.625, "test_acc": 0.9}) == 0.625
    assert objective({"status": "completed", "test_acc": 0.9}) is None  # no split: never the test figure
    assert objective({"status": "failed", "val_acc": 0.5, "error": "not finite"}) is None


def test_an_optuna_sweep_maximises_unless_told_to_minimise_which_is_refused():
    """The sweep refused to start until hydra.sweeper.direction=maximize was typed, though a run
    always returns its validation accuracy."""
    config = compose_with_hydra(["hydra/sweeper=optuna", "data.val_fraction=0.2"])
    RequireValidationSplit().on_multirun_start(config)
    assert config.hydra.sweeper.direction == "maximize"  # what the sweeper is then made from
    told = compose_with_hydra(["hydra/sweeper=optuna", "data.val_fraction=0.2", "hydra.sweeper.direction=minimize"])
    with pytest.raises(SweepRefused, match="hydra.sweeper.direction=minimize is not allowed"):
        RequireValidationSplit().on_multirun_start(told)
    RequireValidationSplit().on_multirun_start(compose_with_hydra(
        ["hydra/sweeper=optuna", "data.val_fraction=0.2", "hydra.sweeper.direction=maximize"]))


@pytest.mark.slow
def test_an_optuna_sweep_without_a_direction_maximises(tmp_path):
    result = transferlab("train", "-m", *TUNE_RUN, "hydra/sweeper=optuna", "data.val_fraction=0.3",
                         "hydra.sweeper.n_trials=1", "hydra.sweeper.n_jobs=1", "optim.lr=tag(log,interval(0.001,0.1))",
                         cwd=tmp_path, OMP_NUM_THREADS="1")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Directions: ['maximize']" in output
    assert len(records(tmp_path / "outputs")) == 1


@pytest.mark.slow
def test_an_optuna_sweep_without_a_validation_split_is_refused_before_any_trial(tmp_path):
    result = transferlab("train", "-m", *TUNE_RUN, "hydra/sweeper=optuna", "hydra.sweeper.direction=maximize",
                         "optim.lr=tag(log,interval(0.001,0.1))", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "transferlab train: error: hydra/sweeper=optuna maximises the validation accuracy, but data.val_fraction=0 "
        "holds out no validation split; set data.val_fraction in (0, 1), e.g. 0.2 (the test set is never used for "
        "tuning)")
    assert not (tmp_path / "outputs").exists()


@pytest.fixture(scope="module")
def tuned(tmp_path_factory) -> Path:
    """`transferlab tune part_a` over two arms (scratch at 50 % and 100 % of the data), two trials each,
    beside Part A's fixed-learning-rate sweep of the same arms."""
    root = tmp_path_factory.mktemp("tune")
    arms = ["data.fraction=0.5,1.0", "model.pretrained=false"]
    fixed = start_transferlab("train", "-m", "experiment=part_a", *TUNE_RUN, *arms, cwd=root, OMP_NUM_THREADS="1")
    tune = transferlab("tune", "part_a", "--trials", "2", "--val-fraction", "0.3", *TUNE_RUN, *arms, cwd=root,
                       OMP_NUM_THREADS="1")
    assert tune.returncode == 0, tune.stdout + tune.stderr
    output, _ = fixed.communicate(timeout=300)
    assert fixed.returncode == 0, output
    return root


@pytest.mark.slow  # its fixture runs `transferlab train` and `tune` in subprocesses (16 s)
def test_tune_runs_each_arms_best_validation_setting_as_a_normal_run(tuned):
    studies = sorted((tuned / "outputs" / "part_a-tuning").iterdir())  # one folder per arm, named by its settings
    assert len(studies) == 2 and all("data.val_fraction=0.3" in study.name for study in studies)
    assert "data.fraction=0.5" in studies[0].name and "data.fraction=1.0" in studies[1].name
    final = {r["fraction"]: r for r in records(tuned / "outputs" / "part_a-tuned")}
    assert sorted(final) == [0.5, 1.0]
    for study in studies:
        trials = records(study)
        assert len(trials) == 2 and all(t["status"] == "completed" and t["name"] == "part_a-tuning" for t in trials)
        assert len({t["config"]["optim"]["lr"] for t in trials}) == 2
        # Optuna's own record of the study: it maximised the validation accuracy, not the test accuracy.
        best = OmegaConf.load(study / "optimization_results.yaml")
        [chosen] = [t for t in trials if t["config"]["optim"]["lr"] == best.best_params["optim.lr"]]
        assert best.best_value == chosen["val_acc"] == max(t["val_acc"] for t in trials)
        assert all(1e-4 <= t["config"]["optim"]["lr"] <= 0.1 for t in trials)

        run = final[chosen["fraction"]]
        assert run["status"] == "completed" and run["name"] == "part_a-tuned"
        assert run["config"]["optim"]["lr"] == best.best_params["optim.lr"]
        assert run["tuning"] == {"study": "part_a", "keys": {"optim.lr": best.best_params["optim.lr"]}, "trials": 2,
                                 "best_val_acc": best.best_value, "val_fraction": 0.3, "trials_dir": str(
                                     study.relative_to(tuned))}
        # A normal run: the whole training subset trains, with no split held out.
        assert run["num_val_images"] == 0 and "val_acc" not in run
        assert run["num_train_images"] == chosen["num_train_images"] + chosen["num_val_images"]


@pytest.mark.slow
def test_tuning_again_skips_every_finished_trial_and_run(tuned):
    before = {json.dumps(r["config"]): r["started_at"] for r in records(tuned / "outputs")}
    again = transferlab("tune", "part_a", "--trials", "2", "--val-fraction", "0.3", *TUNE_RUN,
                        "data.fraction=0.5,1.0", "model.pretrained=false", cwd=tuned)
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.count("skipped:") == 6  # 2 arms x (2 trials + the tuned run)
    assert {json.dumps(r["config"]): r["started_at"] for r in records(tuned / "outputs")} == before


@pytest.mark.slow  # its fixture runs `transferlab train` and `tune` in subprocesses (16 s)
def test_the_report_lays_fixed_beside_tuned_and_leaves_trials_out(tuned):
    result = transferlab("report", cwd=tuned)
    assert result.returncode == 0, result.stdout + result.stderr
    fixed = {r["fraction"]: r for r in records(tuned / "outputs" / "part_a")}
    final = {r["fraction"]: r for r in records(tuned / "outputs" / "part_a-tuned")}
    with open(tuned / "outputs" / "report" / "part_a-tuned-vs-fixed.csv", newline="") as handle:
        rows = {float(row["fraction"]): row for row in csv.DictReader(handle)}  # the report's tidy numbers
    assert sorted(rows) == [0.5, 1.0]
    for fraction, row in rows.items():
        assert float(row["fixed_lr"]) == 0.001
        assert float(row["tuned_lr"]) == pytest.approx(final[fraction]["tuning"]["keys"]["optim.lr"])
        assert float(row["fixed_test_acc_mean"]) == pytest.approx(100 * fixed[fraction]["test_acc"])
        assert float(row["tuned_test_acc_mean"]) == pytest.approx(100 * final[fraction]["test_acc"])
        assert float(row["tuned_val_acc_mean"]) == pytest.approx(100 * final[fraction]["tuning"]["best_val_acc"])
        assert row["trials"] == "2"
        # Tuned minus fixed, paired by replicate: both ran seed 42 on subset seed 42.
        assert row["n"] == "1" and float(row["difference_mean"]) == pytest.approx(
            100 * (final[fraction]["test_acc"] - fixed[fraction]["test_acc"]))
    report = (tuned / "outputs" / "report" / "report.md").read_text()
    assert "## Part A — fixed learning rate vs tuned per arm" in report
    assert "4 tuning trial run(s) read (0 did not complete)" in report
    assert "part_a-tuning" not in report  # no trial's test accuracy is shown


@pytest.mark.slow
def test_a_failed_trial_does_not_stop_the_study(tmp_path):
    result = transferlab("tune", "part_a", "--trials", "2", *TUNE_RUN, "data.fraction=1.0", "model.pretrained=false",
                         "freeze.modules=[layer9]", cwd=tmp_path)  # every trial fails at its start
    assert result.returncode == 1
    trials = records(tmp_path / "outputs" / "part_a-tuning")
    assert len(trials) == 2 and all(t["status"] == "failed" and "unknown module(s) layer9" in t["error"]
                                    for t in trials)
    assert "transferlab tune: not tuned: data.fraction=1.0,model.pretrained=false: no trial completed" in result.stderr
    assert not (tmp_path / "outputs" / "part_a-tuned").exists()
