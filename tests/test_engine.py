"""The engine: device and precision choice, and a batch loop that never waits for the device."""

import pytest
import torch
from torch import nn

from transferlab.engine import (
    NonFiniteLoss, ProgressBar, evaluate, recording_nondeterministic_ops, select_amp_dtype, select_device,
    train_one_epoch,
)
from transferlab.errors import ConfigError


def test_precision_choice():
    cpu = torch.device("cpu")
    assert select_amp_dtype("auto", cpu) is None
    assert select_amp_dtype("fp32", cpu) is None
    assert select_amp_dtype("bf16", cpu) is torch.bfloat16
    assert select_amp_dtype("fp16", cpu) is torch.float16


def test_device_choice():
    assert select_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert select_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="device=cuda but this machine has no CUDA device"):
            select_device("cuda")


def batches(count: int, batch_size: int = 8):
    generator = torch.Generator().manual_seed(0)
    for _ in range(count):
        images = torch.randn(batch_size, 4, generator=generator)
        yield images, (images[:, 0] > 0).long()


def test_the_batch_loop_reads_its_numbers_once_per_epoch(monkeypatch):
    """`.item()` waits for the GPU; the loop must not call it per batch."""
    model = nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    calls = []
    original = torch.Tensor.item
    monkeypatch.setattr(torch.Tensor, "item", lambda self: calls.append(1) or original(self))
    result = train_one_epoch(model, batches(200), optimizer, torch.device("cpu"))
    # mean loss, accuracy, and the NaN check every 50 batches and at the end: not one per batch
    assert result.images == 1600 and len(calls) <= 2 + 200 // 50 + 1
    calls.clear()
    tested = evaluate(model, batches(50), torch.device("cpu"))
    assert tested.images == 400 and len(calls) <= 2


def test_train_and_evaluate_return_true_means():
    model = nn.Linear(4, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[-10.0, 0, 0, 0], [10.0, 0, 0, 0]]))
        model.bias.zero_()
    tested = evaluate(model, batches(5), torch.device("cpu"))
    assert tested.accuracy == 1.0
    expected_loss = sum(nn.functional.cross_entropy(model(x), y, reduction="sum").item() for x, y in batches(5)) / 40
    assert tested.loss == pytest.approx(expected_loss, rel=1e-5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    trained = train_one_epoch(model, batches(5), optimizer, torch.device("cpu"))
    assert trained.accuracy == 1.0 and trained.loss == pytest.approx(expected_loss, rel=1e-5)
    assert trained.seconds > 0 and trained.images_per_second == pytest.approx(40 / trained.seconds)


def test_progress_bar_shows_batches_loss_accuracy_and_rate(capsys):
    import io

    stream = io.StringIO()
    model = nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    bar = ProgressBar("epoch 1/1", total_batches=3, stream=stream)
    train_one_epoch(model, batches(3), optimizer, torch.device("cpu"), on_batch=bar)
    text = stream.getvalue()
    assert "epoch 1/1 [" in text and "3/3" in text and "loss " in text and "acc " in text and "img/s" in text


@pytest.mark.parametrize("bad", [3, 50, 57])
def test_a_non_finite_loss_is_reported_at_the_batch_where_it_first_happened(bad):
    """Checked every 50 batches and at the end, but the batch named is the first with a NaN loss
    (once the weights are NaN every later loss is too)."""
    def poisoned():
        for step, (images, labels) in enumerate(batches(60), start=1):
            if step == bad:
                images = images.clone()
                images[0, 0] = float("nan")
            yield images, labels

    model = nn.Linear(4, 2)
    with pytest.raises(NonFiniteLoss) as error:
        train_one_epoch(model, poisoned(), torch.optim.SGD(model.parameters(), lr=0.1), torch.device("cpu"))
    assert error.value.batch == bad


def test_recording_nondeterministic_ops_names_each_op_once_and_lets_other_warnings_through():
    import warnings

    ops = []
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with pytest.warns(UserWarning, match="an unrelated warning"), recording_nondeterministic_ops(ops):
            for _ in range(3):  # put_ (accumulate=False) has no deterministic implementation, on the CPU too
                torch.zeros(4).put_(torch.tensor([0, 0]), torch.tensor([1.0, 2.0]))
            warnings.warn("an unrelated warning")
    finally:
        torch.use_deterministic_algorithms(False)
    assert ops == ["put_"]
