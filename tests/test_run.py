"""In-process runs on the CPU: a run learns, records itself, and saves a model torchvision loads."""

import json

import pytest
import torch
import torchvision

from transferlab.checkpoint import CHECKPOINT_FILE
from transferlab.records import METRIC_COLUMNS
from transferlab.run import run_training

from helpers import At, tiny_config, write_cifar10, write_cifar100, write_image_folder


@pytest.mark.slow
def test_a_synthetic_run_learns(tmp_path):
    config = tiny_config("data.num_train=1000", "data.num_test=300", "train.epochs=3")
    record = run_training(config, tmp_path)
    assert record["status"] == "completed", record.get("error")
    assert len(record["history"]) == 3
    assert record["test_acc"] > 0.8  # chance is 0.1; the synthetic data is meant to be learnable to this
    assert record["history"][-1]["train_loss"] < record["history"][0]["train_loss"]


def test_the_record_describes_the_run(tmp_path):
    config = tiny_config("train.epochs=2", "freeze=early", "data.fraction=0.5")
    record = run_training(config, tmp_path, ["freeze=early"])
    on_disk = json.loads((tmp_path / "run.json").read_text())
    assert on_disk == json.loads(json.dumps(record))
    assert on_disk["status"] == "completed"
    assert (on_disk["model"], on_disk["pretrained"], on_disk["fraction"], on_disk["freeze"], on_disk["seed"]) == (
        "resnet18", False, 0.5, "early", 42)
    assert on_disk["overrides"] == ["freeze=early"]
    assert on_disk["config"]["train"]["epochs"] == 2
    assert on_disk["num_train_images"] == 160
    model = torchvision.models.resnet18(num_classes=10)
    frozen = sum(p.numel() for m in (model.layer1, model.layer2) for p in m.parameters())
    assert on_disk["params_total"] == sum(p.numel() for p in model.parameters())
    assert on_disk["params_trainable"] == on_disk["params_total"] - frozen
    assert on_disk["device"] == "cpu" and on_disk["versions"]["torch"] == torch.__version__
    assert [entry["epoch"] for entry in on_disk["history"]] == [1, 2]
    for entry in on_disk["history"]:
        assert set(METRIC_COLUMNS) <= set(entry)
        assert 0.0 <= entry["train_acc"] <= 1.0 and 0.0 <= entry["test_acc"] <= 1.0
        assert entry["epoch_seconds"] > 0 and entry["images_per_second"] > 0
    assert on_disk["test_acc"] == on_disk["history"][-1]["test_acc"]
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert rows[0] == ",".join(METRIC_COLUMNS) and len(rows) == 3


# What a run learned, epoch by epoch (the timings aside).
LEARNED = ("train_loss", "train_acc", "test_loss", "test_acc")


def learned(seed: int, folder) -> tuple[list[list[float]], dict[str, torch.Tensor]]:
    """(each epoch's LEARNED, the saved weights) of a deterministic run with ``seed`` whose conv1
    is frozen, so that its saved conv1 weights are the ones the seed drew at the start."""
    config = tiny_config("deterministic=true", "save_model=true", "freeze.modules=[conv1]", f"seed={seed}")
    record = run_training(config, folder)
    assert record["status"] == "completed", record.get("error")
    return [[entry[m] for m in LEARNED] for entry in record["history"]], torch.load(folder / "model.pt",
                                                                                    weights_only=True)


@pytest.mark.slow
def test_same_seed_same_result_and_another_seed_another(tmp_path):
    """Two runs with one seed agree bit for bit, in every metric and every weight; a run with another
    seed starts from other weights and ends with other results."""
    history, weights = learned(1, tmp_path / "a")
    again_history, again_weights = learned(1, tmp_path / "b")
    other_history, other_weights = learned(2, tmp_path / "c")
    assert again_history == history
    assert again_weights.keys() == weights.keys()
    assert [key for key in weights if not torch.equal(again_weights[key], weights[key])] == []
    same_start = torch.equal(other_weights["conv1.weight"], weights["conv1.weight"])
    assert not same_start, "seed=2 drew the initial weights that seed=1 drew"
    assert other_history[0][0] != history[0][0], f"seed=1 and seed=2 had one training loss: {history}"
    assert not torch.equal(other_weights["fc.weight"], weights["fc.weight"])


@pytest.mark.slow
def test_from_one_start_another_seed_draws_other_batches(tmp_path):
    """The seed also orders the batches and draws the augmentation: two runs that start from one
    weights file, head included (and ResNet18 has no dropout), and differ in their seed alone learn
    differently."""
    start = tmp_path / "start.pth"
    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), start)  # the head too: nothing is drawn

    def first_epoch(seed: int) -> list[float]:
        config = tiny_config(f"model.weights={start}", "deterministic=true", f"seed={seed}", "data.num_train=64",
                             "data.num_test=32")
        record = run_training(config, tmp_path / str(seed))
        assert record["status"] == "completed", record.get("error")
        return [record["history"][0][m] for m in LEARNED]

    one, other = first_epoch(1), first_epoch(2)
    assert one[0] != other[0], f"seed=1 and seed=2 trained on the same batches: {one} {other}"


@pytest.mark.slow
def test_a_run_steps_with_the_optimizer_implementation_it_was_given(tmp_path):
    """optim.implementation reaches the optimizer the run builds: its kept checkpoint holds the
    optimizer's settings (auto would leave foreach None)."""
    config = tiny_config("optim.implementation=foreach", "keep_checkpoint=true", "data.num_train=64",
                         "data.num_test=32")
    record = run_training(config, tmp_path)
    assert record["status"] == "completed", record.get("error")
    [group] = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)["optimizer"]["param_groups"]
    assert (group["foreach"], group["fused"]) == (True, None), "optim.implementation=foreach was not used"


@pytest.mark.slow
def test_saved_model_loads_into_plain_torchvision(tmp_path):
    config = tiny_config("model=alexnet", "data.image_size=64", "save_model=true", "train.batch_size=64")
    record = run_training(config, tmp_path)
    assert record["status"] == "completed", record.get("error")
    model = torchvision.models.alexnet(num_classes=10)
    model.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True))
    assert model.classifier[6].out_features == 10


def test_a_run_starts_from_a_saved_model(tmp_path):
    first = run_training(tiny_config("save_model=true"), tmp_path / "first")
    assert first["status"] == "completed"
    saved = torch.load(tmp_path / "first" / "model.pt", weights_only=True)
    from transferlab.models import build_model

    model = build_model("resnet18", pretrained=False, weights_path=str(tmp_path / "first" / "model.pt"))
    for key, value in saved.items():
        assert torch.equal(model.state_dict()[key], value), key


@pytest.mark.slow
def test_a_finished_run_says_where_its_folder_and_model_pt_are(tmp_path, caplog):
    caplog.set_level("INFO", logger="transferlab")
    threads_before = torch.get_num_threads()
    record = run_training(tiny_config("save_model=true", "train.threads=1"), tmp_path / "saved")
    assert record["status"] == "completed", record.get("error")
    assert record["device_name"].endswith(", 1 threads)")  # train.threads=1 set it, for this run only
    assert torch.get_num_threads() == threads_before
    folder = (tmp_path / "saved").resolve()
    assert f"run completed: {folder}; its model: {folder / 'model.pt'}" in caplog.messages
    run_training(tiny_config(), tmp_path / "plain")
    assert f"run completed: {(tmp_path / 'plain').resolve()} (save_model=true also writes its model.pt)" in caplog.messages


@pytest.mark.slow
def test_a_run_starts_from_a_weights_file_end_to_end(tmp_path):
    """model.weights=FILE with an ImageNet-shaped state_dict: the run loads it, replaces the head,
    trains and records where it started; the frozen modules still hold the file's weights."""
    source = torchvision.models.resnet18(weights=None).state_dict()
    weights = tmp_path / "imagenet.pth"
    torch.save(source, weights)
    config = tiny_config(f"model.weights={weights}", "freeze.modules=[conv1,layer1]", "save_model=true")
    record = run_training(config, tmp_path / "run")
    assert record["status"] == "completed", record.get("error")
    assert (record["init"], record["pretrained"]) == (f"file:{weights}", True)
    trained = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    for key in ("conv1.weight", "layer1.0.conv1.weight", "layer1.1.conv2.weight"):
        assert torch.equal(trained[key], source[key]), key
    assert not torch.equal(trained["layer4.1.conv2.weight"], source["layer4.1.conv2.weight"])  # it trained
    assert trained["fc.weight"].shape == (10, 512)


@pytest.mark.slow
def test_a_deterministic_run_records_the_ops_that_had_no_deterministic_implementation(tmp_path):
    """deterministic=true only warns (warn_only) where torch has no deterministic kernel; run.json
    names those ops. On the CPU a training step has none, so one is added to it."""
    def put() -> None:
        torch.zeros(4).put_(torch.tensor([0, 0]), torch.tensor([1.0, 2.0]))  # warns on the CPU too

    record = run_training(tiny_config("deterministic=true", "train.epochs=2"), tmp_path / "checked",
                          callbacks=[At(None, None, put)])
    assert record["status"] == "completed", record.get("error")
    assert record["nondeterministic_ops"] == ["put_"]
    assert json.loads((tmp_path / "checked" / "run.json").read_text())["nondeterministic_ops"] == ["put_"]
    unchecked = run_training(tiny_config("deterministic=false"), tmp_path / "unchecked")
    assert unchecked["status"] == "completed" and unchecked["nondeterministic_ops"] is None


def test_the_real_cifar10_path_trains(tmp_path, skip_md5):
    write_cifar10(tmp_path / "cifar", train_per_batch=40, num_test=60)
    config = tiny_config("data=cifar10", f"data.root={tmp_path / 'cifar'}", "data.fraction=0.5")
    record = run_training(config, tmp_path / "run")
    assert record["status"] == "completed", record.get("error")
    assert (record["data"], record["num_train_images"], record["num_test_images"]) == ("cifar10", 100, 60)
    assert len(record["history"]) == 1
    # The class names are the archive's (batches.meta), in its order, and the head has one output each.
    assert record["num_classes"] == 10 and record["classes"][:3] == ["airplane", "automobile", "bird"]


@pytest.mark.parametrize("override, message", [
    ("freeze.modules=[fc,layer4,layer3,layer2,layer1,conv1,bn1]", "leaves no parameter to train"),
    ("device=cuda", "no CUDA device"),
])
def test_failures_are_recorded(tmp_path, override, message):
    if override == "device=cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    record = run_training(tiny_config(override), tmp_path)
    assert record["status"] == "failed" and message in record["error"]
    assert json.loads((tmp_path / "run.json").read_text())["status"] == "failed"


@pytest.mark.slow
def test_the_reference_pipeline_trains_like_the_device_pipeline(tmp_path):
    """Same data, same seed: the two pipelines draw different crops, but both learn."""
    results = {}
    for pipeline in ("device", "reference"):
        config = tiny_config(f"data.pipeline={pipeline}", "data.num_workers=2", "data.num_train=800",
                             "data.num_test=200", "train.epochs=2")
        record = run_training(config, tmp_path / pipeline)
        assert record["status"] == "completed", record.get("error")
        results[pipeline] = record["test_acc"]
    assert min(results.values()) > 0.3, results  # chance is 0.1


@pytest.mark.slow
def test_tensorboard_logger_writes_events_tensorboard_reads(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    record = run_training(tiny_config("train.epochs=2", "logger=tensorboard"), tmp_path)
    assert record["status"] == "completed", record.get("error")
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    test_acc = events.Scalars("accuracy/test")
    assert [event.step for event in test_acc] == [1, 2]
    assert [event.value for event in test_acc] == pytest.approx([e["test_acc"] for e in record["history"]])
    assert "loss/train" in events.Tags()["scalars"]


def test_tensorboard_logger_missing_says_what_to_install(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    record = run_training(tiny_config("logger=tensorboard"), tmp_path)
    assert record["status"] == "failed"
    assert "logger=tensorboard needs the tensorboard package" in record["error"]
    assert "pip install 'transferlab[tensorboard]'" in record["error"]


def _loads_into_plain_torchvision(path, name: str, num_classes: int) -> torch.nn.Module:
    model = torchvision.models.get_model(name, num_classes=num_classes)  # no transferlab code
    model.load_state_dict(torch.load(path, weights_only=True))
    return model


def test_a_cifar100_run_has_a_100_class_head_and_its_model_loads_into_torchvision(tmp_path, skip_md5):
    write_cifar100(tmp_path / "cifar", num_train=100, num_test=40)
    config = tiny_config("data=cifar100", f"data.root={tmp_path / 'cifar'}", "data.fraction=0.5", "save_model=true")
    record = run_training(config, tmp_path / "run")
    assert record["status"] == "completed", record.get("error")
    assert (record["data"], record["dataset"], record["num_classes"]) == ("cifar100", "cifar100", 100)
    assert record["classes"][:2] == ["fine00", "fine01"] and len(record["classes"]) == 100
    assert record["transforms"]["normalize"] == "cifar100"
    assert record["transforms"]["train"] == "Resize(32), RandomCrop(32, padding=4), RandomHorizontalFlip()"
    model = _loads_into_plain_torchvision(tmp_path / "run" / "model.pt", "resnet18", 100)
    assert model.fc.out_features == 100


@pytest.mark.parametrize("pipeline", ["device", "reference"])
def test_an_image_folder_run_has_one_output_per_class_folder_and_says_what_it_used(tmp_path, pipeline):
    import numpy as np

    root = write_image_folder(tmp_path / "birds", per_class=6, classes=("crow", "finch", "owl", "wren"))
    config = tiny_config("data=imagefolder", f"data.root={root}", f"data.cache_dir={tmp_path / 'cache'}",
                         "data.stored_size=40", f"data.pipeline={pipeline}",
                         "data.num_workers=0", "save_model=true")
    record = run_training(config, tmp_path / "run")
    assert record["status"] == "completed", record.get("error")
    assert (record["data"], record["dataset"], record["num_classes"]) == ("imagefolder", "birds", 4)
    assert record["classes"] == ["crow", "finch", "owl", "wren"]
    assert (record["num_train_images"], record["num_test_images"]) == (24, 24)
    assert record["data_source"] == {"root": str(root), "train": "train/", "test": "val/"}
    assert record["transforms"]["train"] == "RandomResizedCrop(32, scale=(0.08, 1.0)), RandomHorizontalFlip()"
    assert record["transforms"]["test"] == "Resize(37), CenterCrop(32)" and record["transforms"]["normalize"] == "imagenet"
    model = _loads_into_plain_torchvision(tmp_path / "run" / "model.pt", "resnet18", 4)
    assert model.fc.out_features == 4
    samples = np.load(tmp_path / "run" / "samples.npz")
    assert list(samples["classes"]) == record["classes"] and samples["images"].shape[1:] == (40, 40, 3)


@pytest.mark.slow  # a run (about 2 s): the fast tier stays under 3 min
def test_a_run_keeps_its_final_test_predictions_small_beside_run_json(tmp_path):
    """predictions.npz: per test image (in the test set's order) the predicted class, the label and
    the probability of the label, written for the last epoch's evaluation; its correct count is the
    record's test accuracy, and 10,000 images would take 60 KB before compression."""
    import numpy as np

    from transferlab.records import PREDICTIONS_FILE

    record = run_training(tiny_config("train.epochs=2", "data.num_test=120"), tmp_path)
    assert record["status"] == "completed", record.get("error")
    with np.load(tmp_path / PREDICTIONS_FILE) as kept:
        predicted, labels, probability = kept["predicted"], kept["labels"], kept["true_probability"]
    assert (predicted.dtype, labels.dtype, probability.dtype) == (np.int16, np.int16, np.float16)
    assert predicted.shape == labels.shape == probability.shape == (record["num_test_images"],) == (120,)
    assert int(np.sum(predicted == labels)) == round(record["test_acc"] * 120)
    assert ((probability >= 0) & (probability <= 1)).all() and len(set(labels.tolist())) > 1
    # A prediction is the class of the highest probability: where it is right, its probability is the largest.
    assert (probability[predicted == labels] >= 0.099).all()
    assert (tmp_path / PREDICTIONS_FILE).stat().st_size < 120 * 6 + 1000
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically: no temporary left


def test_predictions_that_cannot_be_written_fail_the_run_in_one_line(tmp_path):
    import numpy as np

    from transferlab.callbacks import SavePredictions
    from transferlab.engine import EpochResult, Predictions
    from transferlab.errors import TransferlabError
    from transferlab.fit import EpochEnd

    tested = EpochResult(1.0, 0.5, 2, 1.0, Predictions(np.array([1, 0], np.int16), np.array([1, 1], np.int16),
                                                        np.array([0.9, 0.2], np.float16)))
    (tmp_path / "taken").write_text("a file, not a folder")
    with pytest.raises(TransferlabError) as failed:
        SavePredictions(tmp_path / "taken").on_epoch_end(EpochEnd(1, 1, tested, {"test": tested}, lr=0.1))
    assert str(failed.value).startswith(f"the run's test predictions could not be saved: could not write "
                                        f"{tmp_path / 'taken' / 'predictions.npz'} (")
    assert "\n" not in str(failed.value)


@pytest.mark.slow
def test_a_letters_model_pt_gets_a_new_head_in_a_digits_run_and_the_log_says_why(tmp_path, caplog):
    """Letters A-J and digits 0-9: ten classes each, so the head's shape fits, but its rows are the
    letters'. The run starts a new head, logs why, and names its source by the letters run."""
    letters = write_image_folder(tmp_path / "letters", per_class=4, classes=tuple("ABCDEFGHIJ"))
    digits = write_image_folder(tmp_path / "digits", per_class=4, classes=tuple("0123456789"), seed=1)
    folder = ["data=imagefolder", "data.image_size=32", "data.cache_dir=null", "model.pretrained=false",
              "train.epochs=1", "device=cpu", "progress=off"]
    first = run_training(tiny_config(*folder, f"data.root={letters}", "save_model=true"), tmp_path / "first")
    assert first["status"] == "completed", first.get("error")
    weights = tmp_path / "first" / "model.pt"
    caplog.set_level("INFO", logger="transferlab")
    record = run_training(tiny_config(*folder, f"data.root={digits}", f"model.weights={weights}"), tmp_path / "second")
    assert record["status"] == "completed", record.get("error")
    assert record["pretraining"]["new_head"] is True
    assert (record["num_train_images"], record["last_batch_size"]) == (40, 8)  # batches of 32: 32 + 8
    assert record["pretraining"]["label"] == "resnet18 on letters (first)"
    assert (f"file:{weights}: a new head starts: its classes (A, B, C, D, ...) are not the data's (0, 1, 2, 3, ...)"
            in caplog.messages)
    same = run_training(tiny_config(*folder, f"data.root={letters}", f"model.weights={weights}",
                                    "model.weights_name=letters"), tmp_path / "third")
    assert same["pretraining"]["new_head"] is False and same["pretraining"]["label"] == "letters"
    assert f"file:{weights}: its head is kept: its classes are the data's (A, B, C, D, ...)" in caplog.messages
