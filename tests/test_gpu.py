"""Runs on a CUDA GPU: mixed precision, channels_last, the device pipeline for real, and a batch
loop that never waits for the GPU. Skipped where there is no GPU (select them with `-m gpu`)."""

import io

import pytest
import torch
from PIL import Image

from transferlab.data import CROP_PADDING, DeviceLoader, epoch_generator, make_synthetic, reference_transform
from transferlab.engine import ProgressBar, evaluate, make_optimizer, train_one_epoch
from transferlab.models import build_model
from transferlab.run import run_training

from conftest import tiny_config
from test_pipeline import TOLERANCE, pil_reference

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
CUDA = torch.device("cuda")
METRICS = ("train_loss", "train_acc", "test_loss", "test_acc")


@pytest.mark.parametrize("precision, recorded", [("auto", "bf16"), ("fp16", "fp16"), ("fp32", "fp32")])
def test_a_cuda_run_learns_in_each_precision(tmp_path, precision, recorded):
    config = tiny_config("device=cuda", f"precision={precision}", "data.num_train=2000", "data.num_test=500",
                         "train.epochs=3", "train.batch_size=64")
    record = run_training(config, tmp_path)
    assert record["status"] == "completed", record.get("error")
    assert record["device"].startswith("cuda") and record["precision"] == recorded
    assert record["test_acc"] > 0.5


@pytest.mark.parametrize("pipeline", ["device", "reference"])
def test_deterministic_fp32_cuda_runs_repeat_exactly(tmp_path, pipeline):
    config = tiny_config("device=cuda", "precision=fp32", "deterministic=true", f"data.pipeline={pipeline}",
                         "data.num_train=1000", "data.num_test=200", "train.epochs=2", "model=alexnet",
                         "data.image_size=64")
    first = run_training(config, tmp_path / "a")
    second = run_training(config, tmp_path / "b")
    assert first["status"] == second["status"] == "completed", (first.get("error"), second.get("error"))
    assert [[e[m] for m in METRICS] for e in first["history"]] == [[e[m] for m in METRICS] for e in second["history"]]
    assert (first["test_acc"], first["test_loss"]) == (second["test_acc"], second["test_loss"])


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


@pytest.mark.parametrize("size", [32, 224])
def test_the_device_pipeline_on_cuda_matches_torchvisions_transforms(size):
    """The training augmentation (resize, padded crop, flip) and the test transform, computed on the
    GPU, within 1/255 of the protocol's PIL transforms."""
    train_set, _ = make_synthetic(16, 1, seed=size)
    loader = DeviceLoader(train_set.to(CUDA), batch_size=16, image_size=size, train=True, seed=3)
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

    test_loader = DeviceLoader(train_set.to(CUDA), batch_size=16, image_size=size, train=False, seed=0)
    [(tested, _)] = list(test_loader.epoch(1))
    transform = reference_transform(size, train=False)
    for i in range(16):
        reference = transform(Image.fromarray(train_set.images[i].permute(1, 2, 0).numpy()))
        assert (tested[i].cpu() - reference).abs().max() <= TOLERANCE / float(std.min())


def strict(batches):
    """``batches`` with every implicit wait of the host for the GPU an error, from the making of the
    first batch until the last batch has gone through the loop (the reads after it are allowed)."""
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield from batches
    finally:
        torch.cuda.set_sync_debug_mode("default")


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
    trained = train_one_epoch(model, strict(train_batches.epoch(1)), optimizer, CUDA, precision, scaler, bar)
    tested = evaluate(model, strict(test_batches.epoch(1)), CUDA, precision)
    assert trained.images == 1600 and tested.images == 800
    assert 0.0 <= tested.accuracy <= 1.0 and tested.loss == tested.loss  # read after the loop: not NaN


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
    trained = train_one_epoch(model, strict(train_batches.epoch(1)), optimizer, CUDA, torch.float16,
                              torch.amp.GradScaler("cuda"), scheduler=scheduler, label_smoothing=0.1,
                              clip_grad_norm=1.0)
    assert trained.images == 800 and scheduler.last_epoch == len(train_batches)


def test_the_sync_check_would_catch_a_wait():
    """The check above can fail: a read of a GPU value inside the strict region is an error."""
    batches = strict(iter([torch.ones(2, device=CUDA)]))
    with pytest.raises(RuntimeError, match="synchroniz"):
        for images in batches:
            images.sum().item()
    batches.close()
    assert torch.cuda.get_sync_debug_mode() == 0 and torch.ones(2, device=CUDA).sum().item() == 2.0


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


def test_a_bf16_cuda_run_writes_predictions_that_match_its_record(tmp_path):
    import numpy as np

    from transferlab.records import PREDICTIONS_FILE

    record = run_training(tiny_config("device=cuda", "precision=auto", "data.num_test=500"), tmp_path)
    assert record["status"] == "completed", record.get("error")
    with np.load(tmp_path / PREDICTIONS_FILE) as kept:
        assert int(np.sum(kept["predicted"] == kept["labels"])) == round(record["test_acc"] * 500)
