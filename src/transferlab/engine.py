"""The training engine: device and precision choice, one training epoch, evaluation.

The functions take their collaborators (model, batches, optimizer) as arguments and return
numbers.

The rule of the batch loops (training and evaluation, the device pipeline's batches included):
the host never waits for the device between the first batch and the last. Nothing in them reads
a device value (``.item()``, ``int()``, ``if tensor``), makes a tensor from host numbers
(``torch.tensor``: constants are built once, outside), or copies from pageable host memory;
losses, correct counts and the first non-finite batch are summed on the device and read once,
after the last batch. The NaN check and the progress bar look at a copy that travels to pinned
host memory behind the queued work. On the CPU, tests/test_engine.py checks this op by op; on a
GPU, tests/test_gpu.py runs an epoch and an evaluation under
``torch.cuda.set_sync_debug_mode("error")`` (not yet run: no GPU so far). The one known exception
is fp16 with a GradScaler and an optimizer that is not fused: its step reads whether the
gradients overflowed (``optim.implementation=fused`` avoids that).
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from transferlab.errors import ConfigError, TransferlabError
from transferlab.progress import ProgressBar  # noqa: F401 (the training loop's bar, drawn by on_batch)

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}


def select_device(name: str) -> torch.device:
    """``auto`` takes CUDA, then Apple MPS, then the CPU; a named device must exist."""
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if (name == "cuda" and not cuda) or (name == "mps" and not mps):
        raise ConfigError(f"device={name} but this machine has no {name.upper()} device; use device=auto or device=cpu")
    return torch.device(name)


def select_amp_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for plain fp32. ``auto`` is bf16 on a CUDA GPU that supports
    it and fp32 elsewhere."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    return AMP_DTYPES[precision]


def precision_name(amp_dtype: torch.dtype | None) -> str:
    """The precision a run used, named as the ``precision`` setting names it (bf16, fp16, fp32)."""
    return next(name for name, dtype in AMP_DTYPES.items() if dtype == amp_dtype)


def busy_machine_advice(threads: int, cores: int, load: float) -> str | None:
    """A line for a CPU run about to train with ``threads`` threads on a machine whose 1-minute
    load average leaves fewer cores free than that, or None. On a 2-core machine shared at load 5-8,
    torch's default (a thread per core) trained ResNet18 at 13 images/s and one thread at 82
    (scripts/benchmark_threads.py, docs/performance.md). The thread count is not chosen from the
    load: a run and its resume must compute alike, whatever the load did in between."""
    free = max(1, cores - round(load))
    if threads <= free:
        return None
    return (f"the machine is busy (load average {load:.1f} on {cores} cores): {threads} CPU threads wait for cores; "
            f"on a shared machine train.threads={free} trained up to 6x faster (docs/performance.md)")


def configure_determinism(seed: int, deterministic: bool, device: torch.device) -> None:
    """Seed every RNG; ``deterministic`` trades cuDNN's autotuner for repeatable kernels."""
    import os
    import random

    if deterministic:  # cuBLAS is only deterministic with a fixed workspace; read when CUDA starts
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    torch.manual_seed(seed)  # seeds CUDA and MPS too
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    if device.type == "cuda":
        torch.backends.cudnn.deterministic = deterministic
        torch.backends.cudnn.benchmark = not deterministic


# How torch words the warning of an operation without a deterministic implementation under
# torch.use_deterministic_algorithms(True, warn_only=True): "<op> does not have a deterministic ...".
NONDETERMINISTIC_WARNING = " does not have a deterministic implementation"


@contextlib.contextmanager
def recording_nondeterministic_ops(ops: list[str]) -> Iterator[list[str]]:
    """Append to ``ops`` the name of each operation that warns, inside the block, that it ran
    without a deterministic implementation (each name once). ``deterministic=true`` only warns
    (warn_only), so this is what tells a run that was deterministic from one that was not. Other
    warnings are shown as usual."""
    with warnings.catch_warnings():  # restores the filters and warnings.showwarning on exit
        show = warnings.showwarning

        def record(message, category, filename, lineno, file=None, line=None):
            text = str(message)
            if NONDETERMINISTIC_WARNING not in text:
                show(message, category, filename, lineno, file, line)
                return
            op = text.split(NONDETERMINISTIC_WARNING)[0].strip()
            if op not in ops:
                ops.append(op)

        warnings.showwarning = record
        # Every occurrence reaches `record`, not only the first of each source line.
        warnings.filterwarnings("always", message=f".*{NONDETERMINISTIC_WARNING}", category=UserWarning)
        yield ops


@dataclass(frozen=True)
class Predictions:
    """Per test image, in the test set's order: the predicted class, the label, and the model's
    probability of the label (softmax of the logits)."""

    predicted: np.ndarray  # (N,) int16
    labels: np.ndarray  # (N,) int16
    true_probability: np.ndarray  # (N,) float16

    @property
    def correct_count(self) -> int:
        return int(np.sum(self.predicted == self.labels))


@dataclass(frozen=True)
class EpochResult:
    loss: float
    accuracy: float  # a fraction in [0, 1]
    images: int
    seconds: float
    predictions: Predictions | None = None  # evaluate(keep_predictions=True) only

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


class NonFiniteLoss(TransferlabError):
    """The training loss became NaN or infinite at ``batch`` (1-based) of the epoch."""

    def __init__(self, batch: int):
        super().__init__(f"the training loss is not finite (NaN or inf) at batch {batch}")
        self.batch = batch


class _Totals:
    """Running sums kept on the device: [loss sum, correct, first non-finite batch (0: none)].

    The loop never waits for them. The host sees them either through ``peek``, which copies them
    to (pinned) host memory behind the queued work and returns the last copy that has landed, or
    exactly, once per epoch, through ``read``, which waits."""

    def __init__(self, device: torch.device):
        self.sums = torch.zeros(3, device=device, dtype=torch.float64)
        self.images = 0
        self.batches = 0
        self._async = device.type == "cuda"  # elsewhere a copy to the host is done when it returns
        self._host = torch.zeros(3, dtype=torch.float64, pin_memory=self._async)
        self._host_images = 0
        self._landed: torch.cuda.Event | None = None  # set while a copy to _host is on its way
        self._seen = (0.0, 0.0, 0.0)
        self._seen_images = 0

    def add(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.batches += 1
        loss = loss.detach().double()
        correct = (logits.argmax(dim=1) == labels).sum()
        # The batch number lands in the flag only for the first non-finite loss: (flag == 0) & bad.
        first_bad = (self.sums[2] == 0) & ~torch.isfinite(loss)
        self.sums += torch.stack([loss * len(labels), correct.double(), first_bad.double() * self.batches])
        self.images += len(labels)

    def peek(self) -> tuple[float, float, int, int]:
        """(loss sum, correct, first non-finite batch, images) as of the last copy that reached
        the host, and a new copy started; never waits for the device."""
        if self._landed is not None and self._landed.query():
            self._landed = None
            self._seen, self._seen_images = tuple(self._host.tolist()), self._host_images
        if self._landed is None:
            self._host.copy_(self.sums, non_blocking=self._async)
            self._host_images = self.images
            if self._async:
                self._landed = torch.cuda.Event()
                self._landed.record()
            else:
                self._seen, self._seen_images = tuple(self._host.tolist()), self._host_images
        loss_sum, correct, first_bad = self._seen
        return loss_sum, correct, int(first_bad), self._seen_images

    def check_finite(self) -> None:
        """Raise NonFiniteLoss if a batch whose numbers have reached the host had a non-finite
        loss; never waits (on a GPU it sees the batches of an earlier check)."""
        first_bad = self.peek()[2]
        if first_bad:
            raise NonFiniteLoss(first_bad)

    def read(self) -> tuple[float, float, int]:
        """(mean loss, accuracy, first non-finite batch or 0) of every batch so far; waits for
        the device."""
        loss_sum, correct, first_bad = self.sums.tolist()
        if self.images == 0:
            return 0.0, 0.0, 0
        return loss_sum / self.images, correct / self.images, int(first_bad)

    def running(self) -> tuple[float, float, int]:
        """(mean loss, accuracy, images) as far as the host has seen them, for display; never waits."""
        loss_sum, correct, _, images = self.peek()
        return (loss_sum / images, correct / images, images) if images else (0.0, 0.0, 0)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


@dataclass(frozen=True)
class StepSettings:
    """How each training step runs, beside the model, loss, batches and optimizer it is given:
    ``amp_dtype`` is the autocast dtype (None: plain fp32; evaluation uses it too), ``scaler`` the
    fp16 GradScaler (None without one), ``clip_grad_norm`` the largest total L2 norm the gradients
    keep (None: no clipping)."""

    amp_dtype: torch.dtype | None = None
    scaler: torch.amp.GradScaler | None = None
    clip_grad_norm: float | None = None


def train_one_epoch(
    model: nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    step: StepSettings = StepSettings(),
    *,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    on_batch: Callable[[int, _Totals], None] | None = None,
    finite_check_every: int = 50,
) -> EpochResult:
    """One pass over ``batches``, minimising ``loss_fn(logits, labels)`` (the epoch's reported loss
    is that loss: label-smoothed where ``loss_fn`` smooths). A NaN or infinite loss stops the epoch
    with NonFiniteLoss: at the end, and on the way at a check every ``finite_check_every`` batches
    (which does not wait for the device, so on a GPU it notices the loss some batches later).

    ``scheduler`` steps after every optimizer step; ``step.clip_grad_norm`` rescales the gradients
    to at most that total L2 norm before each step (after unscaling them, with a GradScaler), on the
    device: the norm is never read on the host."""
    model.train()
    amp_dtype, scaler, clip_grad_norm = step.amp_dtype, step.scaler, step.clip_grad_norm
    clipped = ([p for group in optimizer.param_groups for p in group["params"]]
               if clip_grad_norm is not None else [])
    totals = _Totals(device)
    _synchronize(device)
    start = time.perf_counter()
    for batch, (images, labels) in enumerate(batches, start=1):
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            logits = model(images)
            loss = loss_fn(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            if clipped:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(clipped, clip_grad_norm, foreach=True)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            if clipped:
                torch.nn.utils.clip_grad_norm_(clipped, clip_grad_norm, foreach=True)
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        totals.add(loss, logits, labels)
        if batch % finite_check_every == 0:
            totals.check_finite()
        if on_batch is not None:
            on_batch(batch, totals)
    mean_loss, accuracy, first_bad = totals.read()
    if first_bad:
        raise NonFiniteLoss(first_bad)
    _synchronize(device)
    return EpochResult(mean_loss, accuracy, totals.images, time.perf_counter() - start)


def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    keep_predictions: bool = False,
) -> EpochResult:
    """Mean loss and accuracy over ``batches``; with ``keep_predictions``, also each image's predicted
    class and probability of its label (kept on the device, read once at the end)."""
    model.eval()
    loss_fn = nn.CrossEntropyLoss()
    totals = _Totals(device)
    kept: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    start = time.perf_counter()
    with torch.inference_mode():
        for images, labels in batches:
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                logits = model(images)
                loss = loss_fn(logits.float(), labels)
            totals.add(loss, logits, labels)
            if keep_predictions:
                probability = logits.float().softmax(dim=1).gather(1, labels[:, None])[:, 0]
                kept.append((logits.argmax(dim=1), labels, probability))
    mean_loss, accuracy, _ = totals.read()
    predictions = None
    if keep_predictions:
        predicted, labels, probability = ([torch.cat(parts).cpu().numpy() for parts in zip(*kept)] if kept
                                          else [np.zeros(0)] * 3)
        predictions = Predictions(predicted.astype(np.int16), labels.astype(np.int16), probability.astype(np.float16))
    return EpochResult(mean_loss, accuracy, totals.images, time.perf_counter() - start, predictions)


# optim.implementation: how the step runs over the parameters (the same update, other kernels).
# "fused" also lets a GradScaler step without reading the overflow flag on the host.
OPTIMIZER_KERNELS = {"auto": {}, "for_loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def make_optimizer(name: str, parameters: list[nn.Parameter], lr: float, momentum: float,
                   weight_decay: float, betas: tuple[float, float],
                   implementation: str = "auto") -> torch.optim.Optimizer:
    if implementation not in OPTIMIZER_KERNELS:
        raise ConfigError(f"optim.implementation={implementation!r} is not allowed; choose one of: "
                          f"{', '.join(OPTIMIZER_KERNELS)}")
    kernels = OPTIMIZER_KERNELS[implementation]
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=lr, momentum=momentum, weight_decay=weight_decay, **kernels)
    if name == "adamw":
        return torch.optim.AdamW(parameters, lr=lr, betas=betas, weight_decay=weight_decay, **kernels)
    raise ConfigError(f"optim.name={name!r} is not allowed; choose one of: sgd, adamw")
