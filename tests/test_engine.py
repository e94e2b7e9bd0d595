"""The engine: device and precision choice, and a batch loop that never waits for the device."""

import contextlib
import io
import sys
from collections import Counter

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from transferlab.data import DeviceLoader, make_synthetic
from transferlab.engine import (
    NonFiniteLoss, ProgressBar, _Totals, evaluate, precision_name, recording_nondeterministic_ops, select_amp_dtype,
    select_device, train_one_epoch,
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


# The ops that, on a GPU, make the host wait for the device's queued work or copy host data to it:
# reading a value (.item(), int(), bool(), `if tensor`), a tensor made from host numbers
# (torch.tensor), and results whose size depends on the data.
WAITING_OPS = ("aten._local_scalar_dense", "aten.lift_fresh", "aten.nonzero", "aten.masked_select", "aten._unique")


class WaitingOps(TorchDispatchMode):
    """Records every waiting op that runs while it is active."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if str(func).startswith(WAITING_OPS):
            self.seen.append(str(func))
        return func(*args, **(kwargs or {}))


# The host reads that reach no aten op, so WaitingOps cannot see them: .tolist() and .numpy() read
# the memory directly, .cpu() of a CPU tensor returns the tensor itself, synchronize() waits outright.
# On a GPU each one waits for the queued work. .item() reaches an op too; it is here for the name.
HOST_READS = {torch.Tensor: ("cpu", "tolist", "numpy", "item"), torch.cuda: ("synchronize",),
              torch.mps: ("synchronize",)}


class HostReads:
    """Records, while it is active, every call of the HOST_READS, as "Tensor.cpu", "cuda.synchronize"...;
    except the one read the loops are allowed: _Totals.peek reading its own host copy (on a GPU a
    pinned buffer that the device copies into behind the queued work; it never waits)."""

    def __init__(self):
        self.seen = []
        self._originals = []

    def _recording(self, owner, name: str, original):
        label = f"{getattr(owner, '__name__', '').rsplit('.', 1)[-1]}.{name}"

        def read(*args, **kwargs):
            caller = sys._getframe(1)
            peeks_its_copy = (caller.f_code is _Totals.peek.__code__ and args
                              and args[0] is caller.f_locals["self"]._host)
            if not peeks_its_copy:
                self.seen.append(label)
            return original(*args, **kwargs)

        return read

    def __enter__(self):
        for owner, names in HOST_READS.items():
            for name in names:
                self._originals.append((owner, name, vars(owner).get(name)))  # None: inherited
                setattr(owner, name, self._recording(owner, name, getattr(owner, name)))
        return self

    def __exit__(self, *exc):
        while self._originals:
            owner, name, original = self._originals.pop()
            if original is None:
                delattr(owner, name)
            else:
                setattr(owner, name, original)


def watched(batches, *recorders):
    """``batches`` with ``recorders`` active from the first batch's making until the last batch has
    gone through the loop: the per-batch path, without what the loop does once before and after."""
    with contextlib.ExitStack() as active:
        for recorder in recorders:
            active.enter_context(recorder)
        yield from batches


def test_the_batch_loops_never_make_the_host_wait():
    """The device pipeline's batches, the training step, the NaN check (every 50 batches) and the
    progress bar (drawn at every batch here): not one op that would wait for a GPU, not one read of
    a tensor by the host (the epoch's totals are read once, after the last batch)."""
    train_set, test_set = make_synthetic(8 * 60, 8 * 30, seed=0)  # 60 batches: past the first NaN check
    model = nn.Sequential(nn.Conv2d(3, 4, 3, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    bar = ProgressBar("epoch 1/1", total_batches=60, stream=io.StringIO(), per_second=1e9)
    cpu = torch.device("cpu")
    ops, reads = WaitingOps(), HostReads()
    trained = train_one_epoch(model, nn.CrossEntropyLoss(), watched(DeviceLoader(train_set, 8, 16, train=True, seed=0).epoch(1), ops, reads),
                              optimizer, cpu, on_batch=bar)
    assert trained.images == 480 and "60/60" in bar.stream.getvalue()
    tested = evaluate(model, watched(DeviceLoader(test_set, 8, 16, train=False, seed=0).epoch(1), ops, reads), cpu)
    assert tested.images == 240
    assert ops.seen == [], f"ops inside the batch loops that wait for a GPU: {Counter(ops.seen)}"
    assert reads.seen == [], f"host reads inside the batch loops (60 + 30 batches): {Counter(reads.seen)}"
    assert 0 < trained.loss < 10 and 0 < tested.loss < 10  # the reads after the loop still happened


def test_the_host_read_recorder_sees_the_reads_it_looks_for_but_not_a_peek():
    totals = _Totals(torch.device("cpu"))
    x = torch.tensor([1.0, 2.0])
    with HostReads() as reads:
        x.cpu(), x.tolist(), x.numpy(), x[0].item()
        totals.add(torch.tensor(0.5), torch.tensor([[0.0, 1.0]]), torch.tensor([1]))
        assert totals.running() == (0.5, 1.0, 1)  # a peek: reads its host copy, not recorded
        with contextlib.suppress(RuntimeError):  # no GPU here: synchronize raises after it was recorded
            torch.cuda.synchronize()
    assert reads.seen == ["Tensor.cpu", "Tensor.tolist", "Tensor.numpy", "Tensor.item", "cuda.synchronize"]
    assert "tolist" not in vars(torch.Tensor) and torch.cuda.synchronize.__module__ == "torch.cuda"  # put back


def test_the_recorder_sees_the_waits_it_looks_for():
    recorder = WaitingOps()
    with recorder:
        x = torch.tensor([1.0, float("nan")])
        bool(x.sum() > 0), x[0].item(), x.nonzero()
    assert recorder.seen == ["aten.lift_fresh.default", "aten._local_scalar_dense.default",
                             "aten._local_scalar_dense.default", "aten.nonzero.default"]


def test_a_non_finite_loss_is_caught_by_the_check_and_at_the_end():
    def poisoned(count: int, bad: int):
        for step, (images, labels) in enumerate(batches(count), start=1):
            yield (images * float("nan") if step == bad else images), labels

    def fresh() -> tuple[nn.Module, torch.optim.Optimizer]:  # a NaN gradient spoils the weights
        model = nn.Linear(4, 2)
        return model, torch.optim.SGD(model.parameters(), lr=0.0)

    consumed = []
    counted = ((consumed.append(1) or batch) for batch in poisoned(200, bad=7))
    with pytest.raises(NonFiniteLoss) as caught:
        model, optimizer = fresh()
        train_one_epoch(model, nn.CrossEntropyLoss(), counted, optimizer, torch.device("cpu"), finite_check_every=10)
    assert caught.value.batch == 7 and len(consumed) == 10  # on the CPU the check sees every batch so far
    with pytest.raises(NonFiniteLoss) as caught:
        model, optimizer = fresh()
        train_one_epoch(model, nn.CrossEntropyLoss(), poisoned(5, bad=4), optimizer, torch.device("cpu"))
    assert caught.value.batch == 4


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
    trained = train_one_epoch(model, nn.CrossEntropyLoss(), batches(5), optimizer, torch.device("cpu"))
    assert trained.accuracy == 1.0 and trained.loss == pytest.approx(expected_loss, rel=1e-5)
    assert trained.seconds > 0 and trained.images_per_second == pytest.approx(40 / trained.seconds)


def test_progress_bar_shows_batches_loss_accuracy_and_rate(capsys):
    import io

    stream = io.StringIO()
    model = nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    bar = ProgressBar("epoch 1/1", total_batches=3, stream=stream)
    train_one_epoch(model, nn.CrossEntropyLoss(), batches(3), optimizer, torch.device("cpu"), on_batch=bar)
    text = stream.getvalue()
    assert "epoch 1/1 [" in text and "3/3" in text and "loss " in text and "acc " in text and "img/s" in text


@pytest.mark.parametrize("override, message", [
    ("optim.implementation=fast", "optim.implementation='fast' is not allowed; choose one of: auto, for_loop, "
                                  "foreach, fused"),
    ("train.compile_mode=turbo", "train.compile_mode='turbo' is not allowed; choose one of: default, "
                                 "reduce-overhead, max-autotune, max-autotune-no-cudagraphs"),
])
def test_the_speed_settings_refuse_unknown_values(override, message):
    from helpers import tiny_config

    with pytest.raises(ConfigError) as refused:
        tiny_config(override)
    assert message in str(refused.value)


# What each optim.implementation asks torch for: the optimizer's (foreach, fused) settings. None
# leaves the choice to torch at each step (foreach on a GPU, the for-loop on the CPU).
KERNELS = {"auto": (None, None), "for_loop": (False, None), "foreach": (True, None), "fused": (None, True)}


@pytest.mark.parametrize("name", ["sgd", "adamw"])
@pytest.mark.parametrize("implementation", ["for_loop", "foreach", "fused"])
def test_every_optimizer_implementation_is_the_one_asked_for_and_takes_the_same_step(implementation, name):
    from transferlab.engine import make_optimizer

    def one_step(choice: str) -> tuple[torch.Tensor, tuple]:
        torch.manual_seed(0)
        model = nn.Linear(4, 2)
        optimizer = make_optimizer(name, list(model.parameters()), 0.1, 0.9, 0.01, (0.9, 0.999), choice)
        for images, labels in batches(3):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(images), labels).backward()
            optimizer.step()
        [group] = optimizer.param_groups
        return model.weight.detach(), (group["foreach"], group["fused"])

    weight, kernels = one_step(implementation)
    default_weight, default_kernels = one_step("auto")
    assert kernels == KERNELS[implementation], f"optim.implementation={implementation}: (foreach, fused) = {kernels}"
    assert default_kernels == KERNELS["auto"]
    assert torch.allclose(weight, default_weight, atol=1e-6)


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
        train_one_epoch(model, nn.CrossEntropyLoss(), poisoned(), torch.optim.SGD(model.parameters(), lr=0.1), torch.device("cpu"))
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


@pytest.mark.parametrize("precision", ["bf16", "fp16", "fp32"])
def test_a_run_records_its_precision_as_the_setting_names_it(precision):
    # run.json's precision is what the report groups on: the setting's own names, never torch's dtype names.
    assert precision_name(select_amp_dtype(precision, torch.device("cpu"))) == precision
