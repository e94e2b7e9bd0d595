"""data=digits (scikit-learn's bundled 8x8 digits) and data.classes, which trains on a subset of any
dataset's classes; the digits study's pieces that need no training (the slow tier trains it)."""

import pandas as pd
import pytest
import torch

from transferlab.composition import compose_config
from transferlab.config import ConfigError, DataConfig
from transferlab.data import STATISTICS, ImageSet, load_datasets
from transferlab.data.digits import SPLIT_SEED, TEST_FRACTION, digit_images, load_digits
from transferlab.datasets import DATASETS, data_source, dataset_name, only_classes
from transferlab.digits_study import SWEPT, transfer_summary


def test_digits_are_real_8x8_images_upscaled_grey_in_three_channels():
    train, test = load_digits(32)
    assert (len(train), len(test)) == (1347, 450)  # all 1,797 images, none in both
    assert train.images.shape[1:] == (3, 32, 32) and train.images.dtype == torch.uint8
    assert torch.equal(train.images[:, 0], train.images[:, 1]) and torch.equal(train.images[:, 0], train.images[:, 2])
    assert train.classes == tuple("0123456789")
    assert int(train.images.max()) == 255 and int(train.images.min()) == 0


def test_the_test_split_is_fixed_and_stratified_whatever_the_runs_seeds():
    first, again = load_digits(32)[1], load_digits(40)[1]
    assert torch.equal(first.labels, again.labels)  # the same images whatever the size
    counts = torch.bincount(first.labels, minlength=10)
    assert counts.min() >= 44 and counts.max() <= 46  # 25 % of each digit
    assert TEST_FRACTION == 0.25 and SPLIT_SEED == 0
    # subset_seed draws the training subset only: the test set is the same for every repeat
    data = compose_config(["data=digits", "data.per_class=3"]).data
    tests = [load_datasets(data, seed)[1] for seed in (1, 2)]
    assert torch.equal(tests[0].labels, tests[1].labels) and torch.equal(tests[0].images, tests[1].images)


def test_digits_normalisation_is_the_digits_own_training_statistics():
    pixels, labels = digit_images()
    train, _ = load_digits(8)  # at their own size: no resampling
    values = train.images[:, 0].float() / 255
    mean, std = STATISTICS["digits"]
    assert mean[0] == pytest.approx(values.mean().item(), abs=1e-4)
    assert std[0] == pytest.approx(values.std().item(), abs=1e-4)
    assert len(pixels) == 1797 and pixels.shape[1:] == (1, 8, 8)


def test_data_digits_composes_with_its_own_transforms_and_records_its_split():
    config = compose_config(["data=digits"])
    assert (config.data.name, config.data.normalize, config.data.augment, config.data.image_size) == (
        "digits", "digits", "pad_crop", 32)
    source = data_source(config.data)
    assert "load_digits" in source["source"] and "450" in source["test"]


def _images(per_class: int, classes: int) -> ImageSet:
    labels = torch.arange(per_class * classes) % classes
    images = labels.view(-1, 1, 1, 1).expand(len(labels), 3, 4, 4).to(torch.uint8).contiguous()
    return ImageSet(images, labels, tuple(f"c{k}" for k in range(classes)))


def test_only_classes_keeps_those_classes_relabelled_in_the_order_given():
    kept = only_classes(_images(3, 6), [4, 1])
    assert kept.classes == ("c4", "c1")
    assert sorted(kept.labels.tolist()) == [0, 0, 0, 1, 1, 1]
    assert all(int(image[0, 0, 0]) == [4, 1][label] for image, label in zip(kept.images, kept.labels))


def test_data_classes_works_for_any_dataset_with_per_class_and_fraction():
    for amount in ("data.per_class=4", "data.fraction=0.5"):
        data = compose_config(["data=synthetic", "data.num_train=200", "data.num_test=50", "data.classes=[7,2,5]",
                               amount]).data
        train, test = load_datasets(data, subset_seed=3)
        assert train.classes == test.classes == ("class 7", "class 2", "class 5")
        assert set(train.labels.tolist()) == set(test.labels.tolist()) == {0, 1, 2}
        counts = torch.bincount(train.labels).tolist()
        assert counts == [4, 4, 4] if amount.endswith("=4") else sum(counts) == 30  # 200 images, 20 of each class


@pytest.mark.parametrize("classes, expected", [
    ("[3]", "data.classes=[3] is not allowed; give two or more distinct class labels"),
    ("[1,1,2]", "data.classes=[1, 1, 2] is not allowed; give two or more distinct class labels"),
    ("[-1,2]", "data.classes=[-1, 2] is not allowed; give two or more distinct class labels"),
    ("[0,10]", "data.classes=[0, 10] is not allowed: the data has 10 classes, labels 0 to 9; 10 is not one of them"),
])
def test_data_classes_that_cannot_be_are_one_line_errors_at_composition(classes, expected):
    with pytest.raises(ConfigError) as error:
        compose_config(["data=digits", f"data.classes={classes}"])
    assert str(error.value).startswith(expected) and "\n" not in str(error.value)


def test_an_image_folder_checks_data_classes_once_it_knows_its_classes():
    with pytest.raises(ConfigError, match=r"the data has 6 classes, labels 0 to 5; 6 is not one of them"):
        only_classes(_images(2, 6), [0, 6])
    assert DATASETS["imagefolder"].num_classes is None


def test_the_data_name_says_the_classes_so_the_report_never_pools_two_subsets():
    assert dataset_name(DataConfig(name="digits", classes=[5, 6, 7, 8, 9])) == "digits (classes 5-9)"
    assert dataset_name(DataConfig(name="digits", classes=[0, 2, 4])) == "digits (classes 0,2,4)"
    assert dataset_name(DataConfig(name="digits")) == "digits"


def test_the_report_keeps_runs_on_other_classes_apart(tmp_path):
    from report_records import hand_record, write_record

    from transferlab.report.reading import completed_frame, read_runs
    from transferlab.report.studies import make_groups

    files = []
    for classes, label in (([0, 1, 2, 3, 4], "digits (classes 0-4)"), ([5, 6, 7, 8, 9], "digits (classes 5-9)")):
        for seed in (42, 43):
            record = hand_record("data=digits", "name=mixed", f"data.classes=[{','.join(map(str, classes))}]",
                                 seed=seed, dataset=label)
            files.append(write_record(tmp_path / f"{label}-{seed}", record))
    runs, _ = read_runs(files)
    groups = make_groups(completed_frame(runs))
    arms = [arm for group in groups for arm in group.arms]
    assert len(arms) == 2 and [len(arm.runs) for arm in arms] == [2, 2]  # one per class subset, never 4 runs pooled
    assert {run["dataset"] for arm in arms for run in [arm.runs.iloc[0]]} == {"digits (classes 0-4)",
                                                                            "digits (classes 5-9)"}
    assert not [c for group in groups for c in group.contrasts]  # nor paired: their test sets differ


def _differences(rows):
    return pd.DataFrame([{"per_class": k, "compared": "init", "n": n, "difference_mean": d, "ci95_low": lo,
                          "ci95_high": hi} for k, n, d, lo, hi in rows])


def test_the_study_says_transfer_helps_only_where_an_interval_lies_above_zero():
    helps = transfer_summary(_differences([(1, 3, 30.0, 12.5, 47.5), (64, 3, 1.0, -2.0, 4.0)]))
    assert helps[0] == "transfer helps: its 95 % interval lies above 0 at 1 of 2 amounts"
    assert helps[1] == "  K=1 per class: +30.0 points, 95 % interval [+12.5, +47.5], n=3 pairs"
    none = transfer_summary(_differences([(1, 3, 5.0, -2.0, 12.0)]))
    assert none[0] == "no transfer effect shown: each of the 1 intervals includes 0"
    hurts = transfer_summary(_differences([(1, 3, -5.0, -9.0, -1.0)]))
    assert hurts[0].startswith("transfer hurts")
    assert transfer_summary(pd.DataFrame())[0].startswith("no transfer effect to show")


def test_the_studys_sweep_is_dense_enough_for_learning_curves():
    from omegaconf import OmegaConf

    from transferlab.composition import config_dir

    sweep = OmegaConf.load(config_dir() / "experiment" / "digits.yaml").hydra.sweeper.params
    amounts = [int(k) for k in str(sweep["data.per_class"]).split(",")]
    assert len(amounts) >= 6 and amounts == sorted(amounts) and amounts[-1] / amounts[0] >= 32  # log-spread
    assert len(str(sweep.repeat).split(",")) == 3
    assert set(SWEPT) >= {"data.per_class", "repeat"}


@pytest.mark.slow
def test_a_class_subset_trains_with_cached_probes_and_adapters_and_its_features_are_its_own(tmp_path, monkeypatch):
    import transferlab

    monkeypatch.chdir(tmp_path)
    common = ["data=digits", "data.per_class=5", "model.pretrained=false", "train.epochs=1", "progress=off",
              f"data.cache_dir={tmp_path / 'cache'}"]
    probes = [transferlab.train([*common, f"data.classes={classes}", "freeze=last_only",
                                 "freeze.cached_features=true"])[0] for classes in ("[3,4,5]", "[5,4,3]")]
    [bitfit] = transferlab.train([*common, "data.classes=[3,4,5]", "adapt=bitfit"])
    for run in (*probes, bitfit):
        assert run.completed and run.record.num_classes == 3 and run.record.num_train_images == 15
        assert run.record.num_test_images == 46 + 45 + 46  # digits 3, 4 and 5 of the fixed test split
    assert probes[0].record.classes == ["3", "4", "5"] and probes[1].record.classes == ["5", "4", "3"]
    assert probes[0].record.feature_cache != probes[1].record.feature_cache  # other labels: other cached features


def test_study_digits_explains_itself_and_refuses_bad_input_in_one_line(capsys):
    from transferlab.cli import main

    assert main(["study", "digits", "--help"]) == 0
    assert "Pretrains ResNet18 on digits 0-4" in capsys.readouterr().out
    assert main(["study", "digits", "data.classes=[3]"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("transferlab study: error: data.classes=[3] is not allowed") and error.count("\n") == 1
