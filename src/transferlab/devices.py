"""The run's device, and how the process uses it: the GPU a run claims on a machine with several,
the CPU threads it trains with, the name run.json gives the device, and the precision it trains in
(engine.select_device and engine.select_amp_dtype choose; this module holds a run to its choice)."""

from __future__ import annotations

import contextlib
import logging
import os
import platform
from collections.abc import Iterator

import torch

from transferlab.engine import busy_machine_advice, select_amp_dtype, select_device
from transferlab.gpus import claimed_gpu, visible_gpu_uuids

log = logging.getLogger("transferlab.run")


@contextlib.contextmanager
def run_device(name: str) -> Iterator[torch.device]:
    """The run's device; on a machine with several GPUs, one that no other run holds."""
    device = select_device(name)
    count = torch.cuda.device_count() if device.type == "cuda" else 0
    if count <= 1:
        yield device
        return
    with claimed_gpu(visible_gpu_uuids()) as index:
        torch.cuda.set_device(index)
        yield torch.device("cuda", index)


@contextlib.contextmanager
def cpu_threads(threads: int | None, device: torch.device) -> Iterator[None]:
    """A CPU run trains with train.threads threads (torch's count is the process's: put back after
    the run), or with torch's default, with advice where the machine is busy."""
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    elif advice := busy_machine_advice(before, os.cpu_count() or 1, os.getloadavg()[0]):
        log.info("%s", advice)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def device_name(device: torch.device) -> str:
    """run.json's device_name: the GPU's model, Apple MPS, or the CPU and its thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple MPS"
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def training_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """engine.select_amp_dtype's choice, announced at once where it is allowed but slow (fp16 on
    the CPU has no fast kernels)."""
    amp_dtype = select_amp_dtype(precision, device)
    if amp_dtype == torch.float16 and device.type == "cpu":
        log.warning("precision=fp16 on the CPU trains about 50-150x slower than fp32 (float16 has no fast CPU "
                    "kernels); use precision=fp32 or auto, or bf16 on a CPU with bfloat16 instructions")
    return amp_dtype
