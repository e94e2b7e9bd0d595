"""Linear probes on cached frozen features (transferlab.probe): the cache, its batches, the
L-BFGS fit, and the cached probe against the probe in the training loop."""

from __future__ import annotations

import json
import logging
import os

import pytest
import torch
from torch import nn

from transferlab import probe
from transferlab.data import Transforms, make_loader, make_synthetic
from transferlab.errors import ConfigError, TransferlabError
from transferlab.models import build_model

CPU = torch.device("cpu")
NO_AUGMENTATION = Transforms(augment="none")


def tiny_backbone_model() -> nn.Module:
    """A BatchNorm- and dropout-free CNN whose head, ``fc``, is its last step: its training and
    evaluation modes compute the same."""
    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("conv", nn.Conv2d(3, 8, 3, stride=2))
    model.add_module("relu", nn.ReLU())
    model.add_module("pool", nn.AdaptiveAvgPool2d(2))
    model.add_module("flat", nn.Flatten())
    model.add_module("fc", nn.Linear(32, 10))
    return model


def image_batches(data, train: bool, seed: int = 0, batch_size: int = 16):
    return make_loader(data, "device", batch_size, 32, train, seed, CPU, 0, transforms=NO_AUGMENTATION)


def build_cache(folder, model, head, sets, identity=None):
    identity = identity or {"model": "test"}
    return probe.features_cache(
        folder / probe.cache_key(identity), {split: data.labels for split, data in sets.items()}, identity,
        {split: (lambda data=data: probe.extract_features(model, head, image_batches(data, False).epoch(1), CPU))
         for split, data in sets.items()})


@pytest.fixture(scope="module")
def synthetic():
    return make_synthetic(48, 24, seed=3)


def test_features_are_the_heads_input_in_evaluation_mode(synthetic):
    train, _ = synthetic
    model = build_model("resnet18", False, None, 10)
    model.train()
    batches = list(probe.extract_features(model, "fc", image_batches(train, False).epoch(1), CPU))
    features = torch.cat([f for f, _ in batches])
    model.fc = nn.Identity()
    model.eval()
    with torch.no_grad():
        expected = torch.cat([model(images) for images, _ in image_batches(train, False).epoch(1)])
    assert features.shape == (48, 512)
    torch.testing.assert_close(features, expected)


def test_extraction_restores_the_training_mode(synthetic):
    train, _ = synthetic
    model = build_model("resnet18", False, None, 10).train()
    list(probe.extract_features(model, "fc", image_batches(train, False).epoch(1), CPU))
    assert model.training and model.layer1[0].bn1.training


def test_a_head_that_is_not_the_last_step_is_refused(synthetic):
    train, _ = synthetic
    model = tiny_backbone_model()
    with pytest.raises(ConfigError, match="needs a model whose head .*conv.* is its last step"):
        list(probe.extract_features(model, "conv", image_batches(train, False).epoch(1), CPU))


def test_the_cache_is_built_once_and_then_read(tmp_path, synthetic):
    train, test = synthetic
    model = tiny_backbone_model()
    built_features, built = build_cache(tmp_path, model, "fc", {"train": train, "test": test})
    assert built
    calls = []

    def never(*args):
        calls.append(args)
        return iter(())

    identity = {"model": "test"}
    read, rebuilt = probe.features_cache(tmp_path / probe.cache_key(identity),
                                         {"train": train.labels, "test": test.labels}, identity,
                                         {"train": never, "test": never})
    assert not rebuilt and not calls
    torch.testing.assert_close(read["train"].features, built_features["train"].features)
    assert torch.equal(read["test"].labels, test.labels)
    about = json.loads((tmp_path / probe.cache_key(identity) / probe.ABOUT_FILE).read_text())
    assert about["splits"] == {"train": 48, "test": 24} and about["features"] == 32


def test_cache_list_shows_the_feature_caches_a_row_per_split_and_remove_frees_one(tmp_path, synthetic, capsys):
    from transferlab import caches

    train, test = synthetic
    identity = {"model": "resnet18", "init": "torchvision IMAGENET1K_V1", "image_size": 32}
    _, about = probe.probe_features(tiny_backbone_model(), "fc", {"train": train, "test": test},
                                    lambda data: image_batches(data, False), tmp_path / "cache", identity, CPU)
    assert about["feature_splits_built"] == ["train", "test"]
    assert caches.main(["list", "--dir", str(tmp_path / "cache")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"no image caches in {tmp_path / 'cache' / 'imagefolder'}"
    header, *rows, total = lines[2:]
    assert header.split()[:3] == ["FEATURE", "CACHE", "SOURCE"]
    folders = {split: tmp_path / "cache" / "features" / probe.cache_key(probe.split_identity(identity, split))
               for split in ("train", "test")}
    assert {split: str(folder) for split, folder in folders.items()} == about["feature_cache"]
    shown = {row.split()[0]: row for row in rows}
    for split, images in (("train", "48"), ("test", "24")):
        assert shown[str(folders[split])].startswith(f"{folders[split]}  resnet18 features (torchvision "
                                                      f"IMAGENET1K_V1), {split} split")
        assert shown[str(folders[split])].split()[-6:-4] == [images, "32x32"]
    assert total.startswith("2 feature cache(s), ")
    assert caches.main(["remove", str(folders["test"])]) == 0 and not folders["test"].exists()
    assert folders["train"].exists()


def test_runs_on_other_training_subsets_share_the_test_splits_features_and_nothing_else(tmp_path, synthetic):
    train, test = synthetic
    model, built = tiny_backbone_model(), []

    def features(subset):
        identity = {"model": "test", "data": {"name": "synthetic", "seed": 0}, "subset": subset}
        read, about = probe.probe_features(model, "fc", {"train": train, "test": test},
                                           lambda data: image_batches(data, False), tmp_path, identity, CPU)
        built.append(about["feature_splits_built"])
        return about["feature_cache"]

    half, whole = features({"fraction": 0.5, "seed": 1}), features({"fraction": 1.0, "seed": 1})
    assert built == [["train", "test"], ["train"]]
    assert half["test"] == whole["test"] and half["train"] != whole["train"]
    identity = {"model": "test", "subset": {"fraction": 0.5}}
    assert probe.split_identity(identity, "val") == {**identity, "split": "val"}


@pytest.mark.parametrize("damage", ["truncate", "about", "labels"])
def test_a_damaged_cache_is_rebuilt_with_a_warning(tmp_path, synthetic, caplog, damage):
    train, test = synthetic
    model = tiny_backbone_model()
    first, _ = build_cache(tmp_path, model, "fc", {"train": train, "test": test})
    expected = first["train"].features.clone()
    folder = tmp_path / probe.cache_key({"model": "test"})
    if damage == "truncate":
        os.truncate(folder / "train.npy", 1000)
    elif damage == "about":
        (folder / probe.ABOUT_FILE).write_text("{not json")
    else:
        (folder / "test_labels.npy").write_bytes((folder / "train_labels.npy").read_bytes())
    with caplog.at_level(logging.WARNING, logger="transferlab.probe"):
        features, built = build_cache(tmp_path, model, "fc", {"train": train, "test": test})
    assert built
    assert any("feature cache" in r.getMessage() and "damaged" in r.getMessage() for r in caplog.records)
    torch.testing.assert_close(features["train"].features, expected)


def test_an_unwritable_cache_folder_is_one_line(tmp_path, synthetic):
    train, test = synthetic
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(TransferlabError) as error:
        build_cache(blocker / "features", tiny_backbone_model(), "fc", {"train": train, "test": test})
    assert "feature cache cannot be written" in str(error.value) and "data.cache_dir" in str(error.value)
    assert "\n" not in str(error.value)


def test_only_the_head_may_train():
    probe.check_head_only(["fc.weight", "fc.bias"], "fc")
    with pytest.raises(ConfigError, match=r"^freeze.cached_features=true needs a run in which only the head \(fc\) "
                                          r"trains, but layer4.1.conv2.weight train too"):
        probe.check_head_only(["layer4.1.conv2.weight", "fc.weight", "fc.bias"], "fc")


def test_feature_batches_come_in_the_image_pipelines_order(synthetic):
    train, _ = synthetic
    images = image_batches(train, True, seed=7, batch_size=10)
    features = probe.FeatureBatches(probe.Features(torch.arange(48.0)[:, None], train.labels), 10, True, seed=7)
    assert len(features) == len(images) == 5
    for epoch in (1, 2):
        image_labels = [labels for _, labels in images.epoch(epoch)]
        feature_batches = list(features.epoch(epoch))
        assert [len(b) for b, _ in feature_batches] == [len(labels) for labels in image_labels]
        assert all(torch.equal(a, b) for (_, a), b in zip(feature_batches, image_labels))
    first, second = (torch.cat([f for f, _ in features.epoch(e)]).flatten() for e in (1, 2))
    assert not torch.equal(first, second) and sorted(first.tolist()) == list(range(48))


def test_weights_identity_names_the_weights_by_their_digest(tmp_path):
    from transferlab.models import build_model_with_init

    path = tmp_path / "weights.pt"
    torch.save(build_model("resnet18", False, None, 10).state_dict(), path)
    _, init = build_model_with_init("resnet18", False, str(path), 10)
    first = probe.weights_identity(init.init, init.weights_sha256, 1)
    assert first == probe.weights_identity(init.init, init.weights_sha256, 2)  # the seed does not change a loaded backbone
    torch.save(build_model("resnet18", False, None, 10).state_dict(), path)  # the same path, other weights
    _, init = build_model_with_init("resnet18", False, str(path), 10)
    assert probe.weights_identity(init.init, init.weights_sha256, 1) != first
    assert probe.weights_identity("random", None, 1) != probe.weights_identity("random", None, 2)  # a random one, it does


def _blobs(count: int, seed: int, flip: bool = False) -> probe.Features:
    """Two classes apart in the first of 20 dimensions, the others noise: with few training
    images, a weak penalty fits the noise."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(count) % 2
    features = torch.randn(count, 20, generator=generator)
    features[:, 0] += 1.5 * (2 * labels - 1)
    return probe.Features(features, 1 - labels if flip else labels)


SWEEP = dict(coarse=(1e-4, 1e-2, 1.0, 100.0), fine_steps=2)


@pytest.mark.slow
def test_lbfgs_chooses_the_l2_on_the_validation_split():
    train, val = _blobs(24, 0), _blobs(200, 1)
    head = nn.Linear(20, 2)
    fit = probe.fit_logistic_regression(head, train, val, **SWEEP)
    accuracies = {l2: accuracy for l2, (accuracy, _) in fit.sweep.items()}
    assert fit.val_accuracy == max(accuracies.values()) > accuracies[1e-4]  # the penalty mattered
    assert len(fit.sweep) > 4  # the fine sweep ran around the best coarse value
    assert probe._scores(head, val) == pytest.approx((fit.val_accuracy, fit.val_loss))  # the head holds that fit
    # The same training images, a validation split that contradicts them: another choice.
    flipped = probe.fit_logistic_regression(nn.Linear(20, 2), train, _blobs(200, 1, flip=True), **SWEEP)
    assert flipped.l2 != fit.l2
    assert flipped.val_accuracy == max(accuracy for accuracy, _ in flipped.sweep.values())


def test_lbfgs_without_a_validation_split_is_refused():
    with pytest.raises(ConfigError, match="data.val_fraction"):
        probe.fit_logistic_regression(nn.Linear(20, 2), _blobs(10, 0),
                                      probe.Features(torch.zeros(0, 20), torch.zeros(0, dtype=torch.long)))


def test_the_cached_probe_trains_the_head_as_the_training_loop_does(tmp_path, synthetic):
    """A frozen backbone without BatchNorm or dropout, no augmentation, the same optimizer and seed:
    the head trained on cached features (as run.py hands them to fit) ends where the head trained
    in the loop does."""
    from transferlab.fit import Callback, fit

    train, test = synthetic
    in_loop = tiny_backbone_model()
    for name, parameter in in_loop.named_parameters():
        parameter.requires_grad_(name.startswith("fc."))
    cached = tiny_backbone_model()
    features, _ = build_cache(tmp_path, cached, "fc", {"train": train, "test": test})

    class Losses(Callback):
        def __init__(self):
            self.train, self.test = [], []

        def on_epoch_end(self, end):
            self.train.append(end.trained.loss)
            self.test.append(end.evaluated["test"].loss)

    looped, fitted = Losses(), Losses()
    fit(in_loop, torch.nn.CrossEntropyLoss(), image_batches(train, True, seed=5), torch.optim.SGD(
        [p for p in in_loop.parameters() if p.requires_grad], lr=0.05, momentum=0.9), range(1, 4), device=CPU,
        evaluations={"test": image_batches(test, False)}, callbacks=[looped])
    fit(probe.HeadOrNetwork(cached, cached.fc), torch.nn.CrossEntropyLoss(), probe.PhasedBatches(
        probe.FeatureBatches(features["train"], 16, True, seed=5), image_batches(train, True, seed=5), 3),
        torch.optim.SGD(cached.fc.parameters(), lr=0.05, momentum=0.9), range(1, 4), device=CPU,
        evaluations={"test": probe.FeatureBatches(features["test"], 16, False, seed=5)}, callbacks=[fitted])
    assert fitted.train == pytest.approx(looped.train, rel=1e-4)
    assert fitted.test == pytest.approx(looped.test, rel=1e-4)
    torch.testing.assert_close(cached.fc.weight, in_loop.fc.weight, rtol=1e-4, atol=1e-5)
    assert not torch.equal(cached.fc.weight, tiny_backbone_model().fc.weight)  # it did train


def test_phased_batches_switch_from_features_to_images_after_the_probe(synthetic):
    train, _ = synthetic
    images = image_batches(train, True, seed=1)
    features = probe.FeatureBatches(probe.Features(torch.zeros(48, 4), train.labels), 16, True, seed=1)
    phased = probe.PhasedBatches(features, images, last_feature_epoch=2)
    shapes = [next(iter(phased.epoch(epoch)))[0].dim() for epoch in (1, 2, 3, 4)]
    assert shapes == [2, 2, 4, 4]
    model = tiny_backbone_model()
    both = probe.HeadOrNetwork(model, model.fc)
    batch = next(iter(images.epoch(1)))[0]
    torch.testing.assert_close(both(batch), model(batch))
    torch.testing.assert_close(both(torch.ones(3, 32)), model.fc(torch.ones(3, 32)))


@pytest.mark.parametrize("overrides, message", [
    (["freeze=early", "freeze.cached_features=true"],
     "freeze.cached_features=true needs a run in which only the head trains, but freeze=early trains more"),
    (["freeze=none", "freeze.cached_features=true"], "but freeze=none trains more"),
    (["freeze=last_only", "freeze.probe=lbfgs"], "freeze.probe=lbfgs fits the head on cached features"),
    (["freeze=last_only", "freeze.cached_features=true", "freeze.probe=lbfgs"], "set data.val_fraction > 0"),
    (["freeze.probe=sgd"], "freeze.probe='sgd' is not allowed; choose one of: optimizer, lbfgs"),
    (["freeze=lp_ft", "freeze.cached_features=true", "freeze.probe=lbfgs", "data.val_fraction=0.2",
      "optim.schedule=cosine"], "freeze.probe=lbfgs with LP-FT fits the probe without the optimizer, so "
                                "optim.schedule=cosine"),
])
def test_cached_features_config_is_refused_in_one_line(overrides, message):
    from transferlab.composition import compose_config

    with pytest.raises(ConfigError) as error:
        compose_config(["data=synthetic", *overrides])
    assert message in str(error.value) and "\n" not in str(error.value)


def test_cached_features_config_for_a_probe():
    from transferlab.composition import compose_config

    config = compose_config(["freeze=lp_ft", "freeze.cached_features=true", "train.epochs=4"])
    assert config.freeze.cached_features and config.freeze.probe == "optimizer"
    config = compose_config(["freeze=last_only", "freeze.cached_features=true", "freeze.probe=lbfgs",
                             "data.val_fraction=0.1"])
    assert config.freeze.probe == "lbfgs"


def test_the_report_keeps_cached_and_in_loop_probes_apart():
    """A cached-feature probe is never an arm of the loop's: the LP-FT study gives each its own row
    and compares each LP-FT arm with the probe of its own kind."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from report_records import groups_of, hand_record

    lpft = ("name=lpft", "train.epochs=4")
    records = {}
    for seed in (1, 2):
        records[f"full-{seed}"] = hand_record(*lpft, seed=seed, test_acc=0.9)
        records[f"probe-{seed}"] = hand_record(*lpft, "freeze=last_only", seed=seed, test_acc=0.6)
        records[f"cached-{seed}"] = hand_record(*lpft, "freeze=last_only", "freeze.cached_features=true",
                                                seed=seed, test_acc=0.7)
        records[f"lpft-cached-{seed}"] = hand_record(*lpft, "freeze=lp_ft", "freeze.cached_features=true",
                                                     seed=seed, test_acc=0.92, params_trainable_after_unfreeze=11)
    [group] = groups_of(records)
    labels = [arm.label for arm in group.arms]
    assert sorted(labels) == sorted(["full fine-tuning", "linear probe", "linear probe (cached features)",
                                     "linear probe (cached features), then fine-tune after epoch 2"])
    assert all(len(arm.runs) == 2 for arm in group.arms)
    compared = {(c.arm.label, c.baseline.label) for c in group.contrasts}
    assert compared == {("linear probe (cached features), then fine-tune after epoch 2", "full fine-tuning"),
                        ("linear probe (cached features), then fine-tune after epoch 2",
                         "linear probe (cached features)")}


def test_a_cached_probe_in_part_c_is_its_own_group_without_the_reference():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from report_records import groups_of, hand_record

    groups = groups_of({"loop": hand_record("name=part_c", "freeze=last_only"),
                        "cached": hand_record("name=part_c", "freeze=last_only", "freeze.cached_features=true")})
    assert len(groups) == 2
    [cached] = [g for g in groups if g.runs["config"].iloc[0]["freeze.cached_features"]]
    assert "last_only (cached features)" in cached.title
    assert cached.note.startswith("No reference column") and "cached_features=true" in cached.note
    [loop] = [g for g in groups if g is not cached]
    assert "(cached features)" not in loop.title and not loop.note.startswith("No reference column")


# --- whole runs ---------------------------------------------------------------------------------------

def _weights_file(folder):
    """An ImageNet-shaped ResNet18 state_dict, saved by the test: the backbone every run loads."""
    path = folder / "resnet18.pt"
    if not path.exists():
        torch.manual_seed(0)
        torch.save(build_model("resnet18", False, None, 1000).state_dict(), path)
    return path


def _probe_run(tmp_path, name, *overrides):
    from helpers import tiny_config

    from transferlab.run import run_training

    overrides = ("data.num_train=40", "data.num_test=20", f"model.weights={_weights_file(tmp_path)}",
                 f"data.cache_dir={tmp_path / 'cache'}", "freeze=last_only", "data.augment=none", *overrides)
    record = run_training(tiny_config(*overrides), tmp_path / name, list(overrides))
    return record.to_dict() if hasattr(record, "to_dict") else record


@pytest.mark.slow
def test_a_cached_probe_reuses_its_features_across_seeds_and_saves_the_whole_network(tmp_path):
    import torchvision

    from transferlab.data import make_synthetic

    first = _probe_run(tmp_path, "first", "freeze.cached_features=true", "train.epochs=2", "save_model=true")
    assert first["status"] == "completed", first.get("error")
    assert first["probe"] == probe.PROBE_CACHED and first["feature_cache_built"] is True
    second = _probe_run(tmp_path, "second", "freeze.cached_features=true", "train.epochs=2", "seed=7",
                        "optim.lr=0.01")
    assert second["status"] == "completed" and second["feature_cache_built"] is False  # not extracted again
    assert second["feature_cache"] == first["feature_cache"] and second["test_acc"] is not None
    # model.pt is the whole network with the fitted head: torchvision's ResNet18 loads it as it is, and
    # in evaluation mode on the test images it scores what the run recorded.
    model = torchvision.models.resnet18(num_classes=10)
    model.load_state_dict(torch.load(tmp_path / "first" / "model.pt", weights_only=True))
    _, test = make_synthetic(40, 20, seed=42)
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(images) for images, _ in image_batches(test, False).epoch(1)])
    assert (logits.argmax(1) == test.labels).float().mean().item() == pytest.approx(first["test_acc"])
    initial = build_model("resnet18", False, str(_weights_file(tmp_path)), 10)
    assert torch.equal(model.layer1[0].conv1.weight, initial.layer1[0].conv1.weight)  # the backbone as loaded
    in_loop = _probe_run(tmp_path, "in_loop", "train.epochs=1")
    assert in_loop["probe"] == probe.PROBE_IN_LOOP and "feature_cache" not in in_loop


def test_a_run_with_more_than_the_head_training_is_refused_in_one_line(tmp_path):
    record = _probe_run(tmp_path, "refused", "freeze.cached_features=true",
                        "freeze.modules=[conv1,bn1,layer1,layer2,layer3]")
    assert record["status"] == "failed"
    assert record["error"].startswith("freeze.cached_features=true needs a run in which only the head (fc) trains, "
                                      "but layer4.0.conv1.weight")
    assert "\n" not in record["error"] and not (tmp_path / "cache" / "features").exists()


@pytest.mark.slow
def test_a_cached_lp_ft_run_stopped_in_its_probe_resumes_exactly(tmp_path):
    """LP-FT on cached features: stopped after the first probe epoch, resumed, it ends bit for bit
    where an uninterrupted run ends, without extracting the features again."""
    from helpers import At, interrupt, tiny_config

    from transferlab.errors import RunInterrupted
    from transferlab.run import run_training

    overrides = ("data.num_train=40", "data.num_test=20", f"model.weights={_weights_file(tmp_path)}",
                 f"data.cache_dir={tmp_path / 'cache'}", "freeze=lp_ft", "freeze.cached_features=true",
                 "train.epochs=4", "deterministic=true", "save_model=true")
    whole = run_training(tiny_config(*overrides), tmp_path / "whole")
    assert whole["status"] == "completed", whole.get("error")
    assert whole["feature_cache_built"] and whole["params_trainable_after_unfreeze"] == whole["params_total"]
    with pytest.raises(RunInterrupted):
        run_training(tiny_config(*overrides), tmp_path / "stopped", callbacks=[At(2, 1, interrupt)])
    resumed = run_training(tiny_config(*overrides), tmp_path / "stopped")
    assert resumed["status"] == "completed" and resumed["resumed_after_epoch"] == 1
    assert resumed["feature_cache_built"] is False
    assert [e["test_acc"] for e in resumed["history"]] == [e["test_acc"] for e in whole["history"]]
    ours, theirs = (torch.load(tmp_path / name / "model.pt", weights_only=True) for name in ("stopped", "whole"))
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    start = build_model("resnet18", False, str(_weights_file(tmp_path)), 10).state_dict()
    assert not torch.equal(ours["layer1.0.conv1.weight"], start["layer1.0.conv1.weight"])  # fine-tuned after the switch


@pytest.mark.slow
def test_an_lbfgs_probe_records_its_l2_sweep(tmp_path):
    record = _probe_run(tmp_path, "lbfgs", "freeze.cached_features=true", "freeze.probe=lbfgs",
                        "data.val_fraction=0.25", "train.epochs=3")
    assert record["status"] == "completed", record.get("error")
    sweep = {entry["l2"]: entry["val_acc"] for entry in record["probe_l2_sweep"]}
    assert record["probe_l2"] in sweep and sweep[record["probe_l2"]] == max(sweep.values()) == record["val_acc"]
    assert [entry["epoch"] for entry in record["history"]] == [3]


@pytest.mark.slow
def test_an_lbfgs_lp_ft_run_resumes_after_its_switch_and_its_record_is_one_the_report_reads(tmp_path):
    """The L-BFGS probe is one history entry for the probe's epochs: a checkpoint of the fine-tuning
    that follows must still load, and a resume after the switch never touches the feature cache."""
    import shutil

    from helpers import At, interrupt, tiny_config

    from transferlab.errors import RunInterrupted
    from transferlab.records import record_problem
    from transferlab.run import run_training

    overrides = ("data.num_train=40", "data.num_test=20", f"model.weights={_weights_file(tmp_path)}",
                 f"data.cache_dir={tmp_path / 'cache'}", "freeze=lp_ft", "freeze.cached_features=true",
                 "freeze.probe=lbfgs", "data.val_fraction=0.25", "train.epochs=4")
    with pytest.raises(RunInterrupted) as interrupted:
        run_training(tiny_config(*overrides), tmp_path / "run", callbacks=[At(4, 1, interrupt)])
    assert [e["epoch"] for e in interrupted.value.record["history"]] == [2, 3]
    shutil.rmtree(tmp_path / "cache" / "features")  # a resume after the switch must not need (or remake) it
    resumed = run_training(tiny_config(*overrides), tmp_path / "run")
    assert resumed["status"] == "completed", resumed.get("error")
    assert resumed["resumed_after_epoch"] == 3 and [e["epoch"] for e in resumed["history"]] == [2, 3, 4]
    assert resumed["history"][0]["lr"] is None and record_problem(resumed) is None
    assert not (tmp_path / "cache" / "features").exists()
