"""Runs on a CUDA GPU: mixed precision, channels_last, the device pipeline for real, a batch loop
that never waits for the GPU, the streamed image-folder path, timm models, adapters and cached
probes. Skipped where there is no GPU (select them with `-m gpu`; scripts/gpu-check.sh runs them).

Where a check's logic also runs on the CPU, its body is a function of the device that a CPU test
(its twin, below it) calls too, so that the code of the GPU tests cannot rot on machines without one."""

import io
import logging

import pytest
import torch
import torchvision
from PIL import Image

from transferlab.data import (
    CROP_PADDING, DeviceLoader, Transforms, epoch_generator, make_synthetic, reference_transform,
)
from transferlab.data.imagefolder import load_imagefolder
from transferlab.engine import ProgressBar, StepSettings, evaluate, make_optimizer, train_one_epoch
from transferlab.models import build_model
from transferlab.run import run_training

from helpers import tiny_config, write_image_folder
from test_pipeline import TOLERANCE, pil_reference

CUDA = torch.device("cuda")
METRICS = ("train_loss", "train_acc", "test_loss", "test_acc")


def on_cuda(test):
    """Marks a test gpu and skips it where torch sees no CUDA device."""
    return pytest.mark.gpu(pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")(test))


@on_cuda
@pytest.mark.parametrize("precision, recorded", [("auto", "bf16"), ("fp16", "fp16"), ("fp32", "fp32")])
def test_a_cuda_run_learns_in_each_precision(tmp_path, precision, recorded):
    config = tiny_config("device=cuda", f"precision={precision}", "data.num_train=2000", "data.num_test=500",
                         "train.epochs=3", "train.batch_size=64")
    record = run_training(config, tmp_path)
    assert record["status"] == "completed", record.get("error")
    assert record["device"].startswith("cuda") and record["precision"] == recorded
    assert record["test_acc"] > 0.5


def deterministic_runs_repeat_exactly(folder, device: str, pipeline: str, num_train: int, num_test: int,
                                      epochs: int) -> None:
    """Two ``precision=fp32 deterministic=true`` AlexNet runs on ``device``: the same metrics, to the bit."""
    config = tiny_config(f"device={device}", "precision=fp32", "deterministic=true", f"data.pipeline={pipeline}",
                         f"data.num_train={num_train}", f"data.num_test={num_test}", f"train.epochs={epochs}",
                         "model=alexnet", "data.image_size=64")
    first = run_training(config, folder / "a")
    second = run_training(config, folder / "b")
    assert first["status"] == second["status"] == "completed", (first.get("error"), second.get("error"))
    assert first["device"].startswith(device)
    assert [[e[m] for m in METRICS] for e in first["history"]] == [[e[m] for m in METRICS] for e in second["history"]]
    assert (first["test_acc"], first["test_loss"]) == (second["test_acc"], second["test_loss"])


@on_cuda
@pytest.mark.parametrize("pipeline", ["device", "reference"])
def test_deterministic_fp32_cuda_runs_repeat_exactly(tmp_path, pipeline):
    deterministic_runs_repeat_exactly(tmp_path, "cuda", pipeline, num_train=1000, num_test=200, epochs=2)


@pytest.mark.slow
def test_deterministic_fp32_cpu_runs_repeat_exactly(tmp_path):
    deterministic_runs_repeat_exactly(tmp_path, "cpu", "device", num_train=64, num_test=32, epochs=1)


@on_cuda
def test_bf16_learns_as_well_as_fp32_within_run_to_run_noise(tmp_path):
    """bf16 autocast against fp32 on generated data; the noise is how far two fp32 runs that differ
    only in their seed land apart (with a floor of 2 points)."""
    def accuracy(precision: str, seed: int) -> float:
        config = tiny_config("device=cuda", f"precision={precision}", f"seed={seed}", "data.num_train=3000",
                             "data.num_test=1000", "train.epochs=3", "train.batch_size=64")
        record = run_training(config, tmp_path / f"{precision}-{seed}")
        assert record["status"] == "completed", record.get("error")
        return record["test_acc"]

    fp32 = [accuracy("fp32", seed) for seed in (1, 2)]
    bf16 = [accuracy("bf16", seed) for seed in (1, 2)]
    noise = max(abs(fp32[0] - fp32[1]), 0.02)
    assert abs(sum(bf16) / 2 - sum(fp32) / 2) <= noise, (fp32, bf16)


def device_pipeline_matches_torchvision(device: torch.device, size: int) -> None:
    """The training augmentation (resize, padded crop, flip) and the test transform, computed on
    ``device``, within 1/255 of the protocol's PIL transforms."""
    train_set, _ = make_synthetic(16, 1, seed=size)
    loader = DeviceLoader(train_set.to(device), batch_size=16, image_size=size, train=True, seed=3)
    [(ours, labels)] = list(loader.epoch(1))
    # The loader's own draws for epoch 1, made again on the host.
    generator = epoch_generator(3, 1)
    order = torch.randperm(16, generator=generator)
    offsets = torch.randint(0, 2 * CROP_PADDING + 1, (16, 2), generator=generator)
    flips = torch.rand(16, generator=generator) < 0.5
    mean, std = loader.mean.cpu(), loader.std.cpu()
    for i in range(16):
        reference = pil_reference(train_set.images[order[i]], size, int(offsets[i, 0]), int(offsets[i, 1]),
                                  bool(flips[i]))
        assert (ours[i].cpu() * std[0] + mean[0] - reference).abs().max() <= TOLERANCE + 1e-5
    assert torch.equal(labels.cpu(), train_set.labels[order])

    test_loader = DeviceLoader(train_set.to(device), batch_size=16, image_size=size, train=False, seed=0)
    [(tested, _)] = list(test_loader.epoch(1))
    assert tested.device.type == device.type
    transform = reference_transform(size, train=False)
    for i in range(16):
        reference = transform(Image.fromarray(train_set.images[i].permute(1, 2, 0).numpy()))
        assert (tested[i].cpu() - reference).abs().max() <= TOLERANCE / float(std.min())


@on_cuda
@pytest.mark.parametrize("size", [32, 224])
def test_the_device_pipeline_on_cuda_matches_torchvisions_transforms(size):
    device_pipeline_matches_torchvision(CUDA, size)


def test_the_device_pipeline_on_the_cpu_matches_torchvisions_transforms():
    device_pipeline_matches_torchvision(torch.device("cpu"), 32)


def strict(batches):
    """``batches`` with every implicit wait of the host for the GPU an error, from the making of the
    first batch until the last batch has gone through the loop (the reads after it are allowed)."""
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield from batches
    finally:
        torch.cuda.set_sync_debug_mode("default")


@on_cuda
@pytest.mark.parametrize("precision, implementation", [(torch.bfloat16, "auto"), (None, "auto"),
                                                       (torch.bfloat16, "fused"), (torch.float16, "fused")])
def test_an_epoch_and_an_evaluation_never_wait_for_the_gpu(precision, implementation):
    """The rule in engine.py's docstring, on a GPU: 100 training batches (two NaN checks) with the
    progress bar drawn at every batch, and an evaluation, under torch.cuda.set_sync_debug_mode("error")."""
    train_set, test_set = make_synthetic(1600, 800, seed=0)
    model = build_model("resnet18", pretrained=False).to(CUDA, memory_format=torch.channels_last)
    optimizer = make_optimizer("sgd", list(model.parameters()), lr=0.01, momentum=0.9, weight_decay=0.0,
                               betas=(0.9, 0.999), implementation=implementation)
    scaler = torch.amp.GradScaler("cuda") if precision == torch.float16 else None
    train_batches = DeviceLoader(train_set.to(CUDA), 16, 32, train=True, seed=0, memory_format=torch.channels_last)
    test_batches = DeviceLoader(test_set.to(CUDA), 100, 32, train=False, seed=0, memory_format=torch.channels_last)
    bar = ProgressBar("epoch 1/1", total_batches=len(train_batches), stream=io.StringIO(), per_second=1e9)
    trained = train_one_epoch(model, torch.nn.CrossEntropyLoss(), strict(train_batches.epoch(1)), optimizer, CUDA,
                              StepSettings(precision, scaler), on_batch=bar)
    tested = evaluate(model, strict(test_batches.epoch(1)), CUDA, precision)
    assert trained.images == 1600 and tested.images == 800
    assert 0.0 <= tested.accuracy <= 1.0 and tested.loss == tested.loss  # read after the loop: not NaN


@on_cuda
def test_an_epoch_with_a_schedule_clipping_and_label_smoothing_never_waits_for_the_gpu():
    """optim.schedule, optim.clip_grad_norm and train.label_smoothing inside the batch loop, under
    torch.cuda.set_sync_debug_mode("error"), fp16 with a fused optimizer (the GradScaler unscales
    before clipping)."""
    from transferlab.schedules import ScheduleFactor, make_scheduler

    train_set, _ = make_synthetic(800, 100, seed=0)
    model = build_model("resnet18", pretrained=False).to(CUDA, memory_format=torch.channels_last)
    optimizer = make_optimizer("sgd", list(model.parameters()), lr=0.01, momentum=0.9, weight_decay=0.0,
                               betas=(0.9, 0.999), implementation="fused")
    train_batches = DeviceLoader(train_set.to(CUDA), 16, 32, train=True, seed=0, memory_format=torch.channels_last)
    scheduler = make_scheduler(optimizer, ScheduleFactor("cosine", len(train_batches), 1, warmup_epochs=0.5))
    trained = train_one_epoch(model, torch.nn.CrossEntropyLoss(label_smoothing=0.1), strict(train_batches.epoch(1)),
                              optimizer, CUDA, StepSettings(torch.float16, torch.amp.GradScaler("cuda"), 1.0),
                              scheduler=scheduler)
    assert trained.images == 800 and scheduler.last_epoch == len(train_batches)


@on_cuda
def test_the_sync_check_would_catch_a_wait():
    """The check above can fail: a read of a GPU value inside the strict region is an error."""
    batches = strict(iter([torch.ones(2, device=CUDA)]))
    with pytest.raises(RuntimeError, match="synchroniz"):
        for images in batches:
            images.sum().item()
    batches.close()
    assert torch.cuda.get_sync_debug_mode() == 0 and torch.ones(2, device=CUDA).sum().item() == 2.0


@on_cuda
@pytest.mark.parametrize("precision", [torch.bfloat16, torch.float16, None])
def test_keeping_the_test_predictions_never_waits_for_the_gpu_and_agrees_with_the_accuracy(precision):
    """evaluate(keep_predictions=True) under torch.cuda.set_sync_debug_mode("error") while the batches
    run (the predictions reach the host once, after the loop), and their correct count is the
    evaluation's accuracy in every precision."""
    import numpy as np

    _, test_set = make_synthetic(100, 800, seed=0)
    model = build_model("resnet18", pretrained=False).to(CUDA, memory_format=torch.channels_last)
    test_batches = DeviceLoader(test_set.to(CUDA), 100, 32, train=False, seed=0, memory_format=torch.channels_last)
    tested = evaluate(model, strict(test_batches.epoch(1)), CUDA, precision, keep_predictions=True)
    kept = tested.predictions
    assert kept.predicted.dtype == np.int16 and kept.true_probability.dtype == np.float16
    assert list(kept.labels) == test_set.labels.tolist()  # the test set's order
    assert kept.correct_count == round(tested.accuracy * 800)
    assert np.isfinite(kept.true_probability.astype(float)).all()


@on_cuda
def test_a_bf16_cuda_run_writes_predictions_that_match_its_record(tmp_path):
    import numpy as np

    from transferlab.records import PREDICTIONS_FILE

    record = run_training(tiny_config("device=cuda", "precision=auto", "data.num_test=500"), tmp_path)
    assert record["status"] == "completed", record.get("error")
    with np.load(tmp_path / PREDICTIONS_FILE) as kept:
        assert int(np.sum(kept["predicted"] == kept["labels"])) == round(record["test_acc"] * 500)


# --- the streamed image-folder path -----------------------------------------------------------------

IMAGE_FOLDER = Transforms(augment="random_resized_crop", normalize="imagenet", test_crop=0.875)


def streamed_batches_are_the_resident_batches(folder, device: torch.device) -> None:
    """An image folder's training set, read from its memory-mapped cache and streamed batch by batch
    to ``device`` (gathered by a background thread, on CUDA through pinned memory and a copy queued
    behind the work), gives the very batches the same set gives when it lives on ``device``; on CUDA
    the streamed epoch never makes the host wait for the GPU."""
    root = write_image_folder(folder / "images", per_class=10)
    train, _ = load_imagefolder(root, stored_size=48, test_fraction=0.2, seed=0, cache_dir=folder / "cache")
    resident = DeviceLoader(train.to(device), 8, 32, train=True, seed=3, transforms=IMAGE_FOLDER)
    streamed = DeviceLoader(train, 8, 32, train=True, seed=3, transforms=IMAGE_FOLDER, device=device, stream=True)
    assert train.images.device.type == "cpu"
    batches = streamed.epoch(2)
    streamed_batches = list(strict(batches) if device.type == "cuda" else batches)
    resident_batches = list(resident.epoch(2))
    assert len(streamed_batches) == len(resident_batches) == 4  # 30 images in batches of 8, 8, 8 and 6
    for (a, labels_a), (b, labels_b) in zip(streamed_batches, resident_batches, strict=True):
        assert a.device.type == device.type and torch.equal(a, b) and torch.equal(labels_a, labels_b)


@on_cuda
def test_streamed_image_folder_batches_on_cuda_are_the_resident_batches(tmp_path):
    streamed_batches_are_the_resident_batches(tmp_path, CUDA)


def test_streamed_image_folder_batches_on_the_cpu_are_the_resident_batches(tmp_path):
    streamed_batches_are_the_resident_batches(tmp_path, torch.device("cpu"))


@on_cuda
def test_a_cuda_run_on_an_image_folder_too_big_for_the_gpu_streams_it(tmp_path, monkeypatch, caplog):
    """A whole run whose sets do not fit (free memory reported as nothing): both are streamed from
    host memory (the training set straight from the memory-mapped cache, with val/ as the test
    split), and the run trains and evaluates in bf16 on the GPU."""
    root = write_image_folder(tmp_path / "images", per_class=16)
    free, total = torch.cuda.mem_get_info()
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (0, total))
    config = tiny_config("device=cuda", "precision=bf16", "data=imagefolder", f"data.root={root}",
                         f"data.cache_dir={tmp_path / 'cache'}", "data.image_size=32", "train.epochs=2",
                         "train.batch_size=16")
    with caplog.at_level(logging.INFO, logger="transferlab"):
        record = run_training(config, tmp_path / "run")
    assert record["status"] == "completed", record.get("error")
    assert record["device"].startswith("cuda") and record["precision"] == "bf16"
    streamed = [r.getMessage() for r in caplog.records if "streamed from host memory" in r.getMessage()]
    assert any(m.startswith("the training images") for m in streamed), streamed
    assert any(m.startswith("the test images") for m in streamed), streamed
    assert [e["epoch"] for e in record["history"]] == [1, 2]
    assert all(e["train_loss"] == e["train_loss"] and e["test_loss"] == e["test_loss"] for e in record["history"])


# --- timm models, adapters and cached probes ---------------------------------------------------------

def timm_run_loads_into_timm(folder, device: str, precision: str, name: str, **kwargs) -> dict:
    """A run of a tiny timm model of ``name`` on ``device``: its model.pt loads into timm's own."""
    timm = pytest.importorskip("timm")
    config = tiny_config(f"device={device}", f"precision={precision}", f"model.name=timm/{name}", "save_model=true",
                         "data.normalize=auto", "data.num_train=64", "data.num_test=32")
    record = run_training(config, folder)
    assert record["status"] == "completed", record.get("error")
    assert record["device"].startswith(device) and record["precision"] == precision
    model = timm.create_model(name, num_classes=record["num_classes"], **kwargs)
    model.load_state_dict(torch.load(folder / "model.pt", weights_only=True), strict=True)
    return record


@on_cuda
@pytest.mark.parametrize("name, kwargs", [("test_resnet", {}), ("test_convnext", {}), ("test_vit", {"img_size": 32})])
def test_a_tiny_timm_model_of_each_family_trains_on_cuda(tmp_path, name, kwargs):
    timm_run_loads_into_timm(tmp_path, "cuda", "bf16", name, **kwargs)


@pytest.mark.slow
def test_a_tiny_timm_model_trains_on_the_cpu(tmp_path):
    timm_run_loads_into_timm(tmp_path, "cpu", "fp32", "test_vit", img_size=32)


def adapted_run(folder, device: str, precision: str, adapt: str) -> None:
    """LoRA on a timm ViT, or BitFit on ResNet18, on ``device``: fewer parameters train than the
    model holds, and model.pt is the plain architecture, adapters merged."""
    pytest.importorskip("peft")
    timm = pytest.importorskip("timm")
    model = ("model.name=timm/test_vit", "adapt.rank=2") if adapt == "lora" else ("model=resnet18", "freeze=early")
    config = tiny_config(f"device={device}", f"precision={precision}", f"adapt={adapt}", *model, "save_model=true",
                         "data.num_train=64", "data.num_test=32")
    record = run_training(config, folder)
    assert record["status"] == "completed", record.get("error")
    assert record["device"].startswith(device) and record["adapt"]["name"] == adapt
    assert 0 < record["params_trainable"] < record["params_total"] / 2
    plain = (timm.create_model("test_vit", num_classes=10, img_size=32) if adapt == "lora"
             else torchvision.models.resnet18(num_classes=10))
    plain.load_state_dict(torch.load(folder / "model.pt", weights_only=True), strict=True)


@on_cuda
@pytest.mark.parametrize("adapt", ["lora", "bitfit"])
def test_an_adapted_run_trains_on_cuda(tmp_path, adapt):
    adapted_run(tmp_path, "cuda", "bf16", adapt)


@pytest.mark.slow
def test_an_adapted_run_trains_on_the_cpu(tmp_path):
    adapted_run(tmp_path, "cpu", "fp32", "lora")


def cached_probe_runs(folder, device: str, precision: str) -> None:
    """A linear probe on cached features on ``device``: the first run extracts them, a second run
    with another seed reads them, and model.pt is the whole network with the loaded backbone."""
    from test_probe import _probe_run, _weights_file

    from transferlab import probe
    from transferlab.models import build_model

    common = (f"device={device}", f"precision={precision}", "freeze.cached_features=true", "train.epochs=2",
              "save_model=true")
    first = _probe_run(folder, "first", *common)
    assert first["status"] == "completed", first.get("error")
    assert first["device"].startswith(device) and first["probe"] == probe.PROBE_CACHED
    assert first["feature_cache_built"] is True
    second = _probe_run(folder, "second", *common, "seed=7")
    assert second["status"] == "completed", second.get("error")
    assert second["feature_cache_built"] is False and second["feature_cache"] == first["feature_cache"]
    saved = torch.load(folder / "first" / "model.pt", weights_only=True)
    loaded = build_model("resnet18", False, str(_weights_file(folder)), 10).state_dict()
    assert torch.equal(saved["layer1.0.conv1.weight"], loaded["layer1.0.conv1.weight"])  # the backbone as loaded
    assert not torch.equal(saved["fc.weight"], loaded["fc.weight"])  # the head trained


@on_cuda
def test_a_cached_probe_on_cuda_reuses_its_features(tmp_path):
    cached_probe_runs(tmp_path, "cuda", "bf16")


@pytest.mark.slow
def test_a_cached_probe_on_the_cpu_reuses_its_features(tmp_path):
    cached_probe_runs(tmp_path, "cpu", "fp32")
