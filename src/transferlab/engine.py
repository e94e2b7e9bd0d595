"""The training engine: device and precision choice, one training epoch, evaluation.

The functions take their collaborators (model, batches, optimizer) as arguments and return
numbers. Inside the batch loop nothing waits for the device: losses and correct counts are summed
on the device and read once per epoch (the progress bar reads them a few times a second, and only
when it is shown).
"""

from __future__ import annotations

import contextlib
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from transferlab.errors import ConfigError, TransferlabError

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
class EpochResult:
    loss: float
    accuracy: float  # a fraction in [0, 1]
    images: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


class NonFiniteLoss(TransferlabError):
    """The training loss became NaN or infinite at ``batch`` (1-based) of the epoch."""

    def __init__(self, batch: int):
        super().__init__(f"the training loss is not finite (NaN or inf) at batch {batch}")
        self.batch = batch


class _Totals:
    """Running sums kept on the device so the loop never waits for it."""

    def __init__(self, device: torch.device):
        self.loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        self.correct = torch.zeros((), device=device, dtype=torch.int64)
        self.first_nonfinite = torch.zeros((), device=device, dtype=torch.int64)  # a batch number; 0: none
        self.images = 0
        self.batches = 0

    def add(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.batches += 1
        loss = loss.detach()
        self.loss_sum += loss.double() * len(labels)
        self.correct += (logits.argmax(dim=1) == labels).sum()
        bad = (self.first_nonfinite == 0) & ~torch.isfinite(loss)
        self.first_nonfinite = torch.where(bad, self.batches, self.first_nonfinite)
        self.images += len(labels)

    def check_finite(self) -> None:
        """Raise NonFiniteLoss if a batch so far had a non-finite loss (waits for the device)."""
        batch = int(self.first_nonfinite.item())
        if batch:
            raise NonFiniteLoss(batch)

    def read(self) -> tuple[float, float]:
        """(mean loss, accuracy) so far; this synchronises with the device."""
        if self.images == 0:
            return 0.0, 0.0
        return self.loss_sum.item() / self.images, self.correct.item() / self.images


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def train_one_epoch(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
    on_batch: Callable[[int, _Totals], None] | None = None,
    finite_check_every: int = 50,
) -> EpochResult:
    """One pass over ``batches``. Every ``finite_check_every`` batches (one wait for the device)
    and at the end, a NaN or infinite loss stops the epoch with NonFiniteLoss."""
    model.train()
    loss_fn = nn.CrossEntropyLoss()
    totals = _Totals(device)
    _synchronize(device)
    start = time.perf_counter()
    for step, (images, labels) in enumerate(batches, start=1):
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            logits = model(images)
            loss = loss_fn(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        totals.add(loss, logits, labels)
        if step % finite_check_every == 0:
            totals.check_finite()
        if on_batch is not None:
            on_batch(step, totals)
    totals.check_finite()
    mean_loss, accuracy = totals.read()
    _synchronize(device)
    return EpochResult(mean_loss, accuracy, totals.images, time.perf_counter() - start)


def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
) -> EpochResult:
    model.eval()
    loss_fn = nn.CrossEntropyLoss()
    totals = _Totals(device)
    start = time.perf_counter()
    with torch.inference_mode():
        for images, labels in batches:
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                logits = model(images)
                loss = loss_fn(logits.float(), labels)
            totals.add(loss, logits, labels)
    mean_loss, accuracy = totals.read()
    return EpochResult(mean_loss, accuracy, totals.images, time.perf_counter() - start)


class ProgressBar:
    """A one-line bar on stderr, redrawn at most ``per_second`` times a second: batches, running
    loss and accuracy, images/s. Reading the running numbers waits for the device, so it is only
    done at a redraw."""

    def __init__(self, label: str, total_batches: int, stream=None, per_second: float = 4.0):
        self.label = label
        self.total = total_batches
        self.stream = stream if stream is not None else sys.stderr
        self.interval = 1.0 / per_second
        self.start = time.perf_counter()
        self.last_draw = 0.0

    def __call__(self, step: int, totals: _Totals) -> None:
        now = time.perf_counter()
        if now - self.last_draw < self.interval and step < self.total:
            return
        self.last_draw = now
        loss, accuracy = totals.read()
        width = 24
        filled = int(width * step / max(self.total, 1))
        rate = totals.images / max(now - self.start, 1e-9)
        self.stream.write(
            f"\r{self.label} [{'=' * filled}{' ' * (width - filled)}] {step}/{self.total} "
            f"loss {loss:.4f} acc {accuracy:.2%} {rate:,.0f} img/s"
        )
        if step >= self.total:
            self.stream.write("\r\033[K")
        self.stream.flush()


def make_optimizer(name: str, parameters: list[nn.Parameter], lr: float, momentum: float,
                   weight_decay: float, betas: tuple[float, float]) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(parameters, lr=lr, betas=betas, weight_decay=weight_decay)
    raise ConfigError(f"optim.name={name!r} is not allowed; choose one of: sgd, adamw")
