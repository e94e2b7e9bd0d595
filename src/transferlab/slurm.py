"""`hydra/launcher=slurm` (hydra_plugins.transferlab_launchers): hydra-submitit-launcher's Slurm
launcher, which also watches the jobs it submitted while it waits for them.

A request that no node of the partition can meet (the defaults ask for 8 CPUs and 32 GB) leaves the
jobs pending for a reason that never clears, e.g. ``PartitionConfig``, and the plugin would wait for
them forever, silently. This launcher polls ``squeue`` instead; on such a reason it cancels every job
of the sweep and stops with one line that names the ``hydra.launcher`` key to change. A request that
``sbatch`` refuses outright ends the same way. The module is imported only when the launcher
launches, so submitit (the ``cluster`` extra) is installed by then.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import submitit
from submitit.core.utils import FailedJobError

from transferlab.errors import TransferlabError

log = logging.getLogger(__name__)

# Pending reasons that only an administrator, or a smaller request, can clear; each with the
# hydra.launcher keys to change. PartitionConfig (the request exceeds what the partition's nodes
# have or the partition allows) is narrowed down by comparing the request with the nodes' sizes.
RESOURCE_KEYS = ("cpus_per_task", "mem_gb", "gpus_per_node")
NEVER_CLEARS: dict[str, tuple[str, ...]] = {
    "PartitionConfig": (*RESOURCE_KEYS, "partition"),
    "PartitionTimeLimit": ("timeout_min",),
    "BadConstraints": ("constraint",),
    "InvalidAccount": ("account",),
    "InvalidQOS": ("qos",),
    **{f"{scope}Max{limit}": keys for scope in ("QOS", "Assoc") for limit, keys in (
        ("CpuPerJobLimit", ("cpus_per_task",)),
        ("GRESPerJob", ("gpus_per_node",)),
        ("NodePerJobLimit", ("nodes",)),
        ("WallDurationPerJobLimit", ("timeout_min",)),
        ("CpuMinutesPerJobLimit", ("timeout_min", "cpus_per_task")),
    )},
    "QOSMaxMemoryPerJob": ("mem_gb",),
    "AssocMaxMemPerJob": ("mem_gb",),
}
# sbatch refuses a job outright for a request no node can meet, or an unknown account, QOS, partition.
REFUSAL_KEYS = (*RESOURCE_KEYS, "partition", "account", "qos", "constraint")
FINISHED_RESULT_GRACE_SECONDS = 60.0  # a shared file system may show a job's result file late


@dataclass(frozen=True)
class QueuedJob:
    """One line of ``squeue -o %i|%T|%r|%P``."""

    job_id: str
    state: str
    reason: str
    partition: str


@dataclass(frozen=True)
class NodeSize:
    """What one node of a partition has: CPUs, memory in MB, GPUs."""

    cpus: int
    memory_mb: int
    gpus: int


def parse_queue(text: str) -> list[QueuedJob]:
    return [QueuedJob(*line.split("|", 3)) for line in text.splitlines() if line.count("|") == 3]


def parse_nodes(text: str) -> list[NodeSize]:
    """Nodes from ``sinfo -h -N -o %c|%m|%G``."""
    nodes = []
    for line in text.splitlines():
        cpus, memory, gres = line.split("|", 2)
        nodes.append(NodeSize(int(cpus.rstrip("+")), int(memory.rstrip("+")), gpu_count(gres)))
    return nodes


def gpu_count(gres: str) -> int:
    """GPUs in a GRES string such as ``gpu:a100:4(S:0-1),nic:1`` (``(null)`` when none)."""
    count = 0
    for item in gres.split(","):
        number = item.split("(")[0].rsplit(":", 1)[-1]
        if item.startswith("gpu:") and number.isdigit():
            count += int(number)
    return count


def oversized_keys(request: dict[str, Any], nodes: Sequence[NodeSize]) -> list[str]:
    """The hydra.launcher keys whose request exceeds what the largest of ``nodes`` has, each as
    ``hydra.launcher.KEY=VALUE (a node has at most ...)``."""
    if not nodes:
        return []
    cpus, memory_mb, gpus = (max(getattr(node, size) for node in nodes) for size in ("cpus", "memory_mb", "gpus"))
    asked = {  # key: (asked for, the largest node has, said in words)
        "cpus_per_task": ((request.get("cpus_per_task") or 1) * (request.get("tasks_per_node") or 1), cpus,
                          f"{cpus} CPUs"),
        "mem_gb": ((request.get("mem_gb") or 0) * 1024, memory_mb, f"{memory_mb / 1024:.1f} GB"),
        "gpus_per_node": (request.get("gpus_per_node") or 0, gpus, f"{gpus} GPUs"),
    }
    return [f"hydra.launcher.{key}={request.get(key)} (a node has at most {largest_in_words})"
            for key, (wanted, largest, largest_in_words) in asked.items() if wanted > largest]


def never_starts_line(cause: str, keys: tuple[str, ...], request: dict[str, Any], nodes: Sequence[NodeSize],
                      cancelled: int) -> str:
    """The one line that stops the sweep: what Slurm said (``cause``), and which of the
    hydra.launcher ``keys`` to change; of the resource keys, only those too big for every node."""
    too_big = oversized_keys(request, nodes) if set(keys) & set(RESOURCE_KEYS) else []
    if too_big:
        advice = f"lower {', '.join(too_big)}"
    else:
        advice = f"change hydra.launcher.{keys[0]}" + "".join(
            f"{' or' if index == len(keys) - 1 else ','} {key}" for index, key in enumerate(keys) if index)
    cancelled_note = f"; cancelled the sweep's {cancelled} job(s)" if cancelled else ""
    return f"{cause}: {advice}{cancelled_note}"


def queued_jobs(array_ids: Sequence[str]) -> list[QueuedJob] | None:
    """Our jobs still pending or running (one line per array element); None when squeue failed."""
    result = subprocess.run(["squeue", "-h", "-r", "-j", ",".join(array_ids), "-o", "%i|%T|%r|%P"],
                            capture_output=True, text=True)
    if result.returncode != 0:
        if "Invalid job id" in result.stderr:
            return []  # every job ended long enough ago that Slurm forgot it
        log.warning("squeue failed (%s); still waiting for the jobs", result.stderr.strip())
        return None
    return parse_queue(result.stdout)


def partition_nodes(partition: str | None) -> list[NodeSize]:
    """The nodes of ``partition`` (of the default partition when None); empty when sinfo fails."""
    result = subprocess.run(["sinfo", "-h", "-N", "-o", "%P|%c|%m|%G"], capture_output=True, text=True)
    if result.returncode != 0:
        return []
    lines = [line.split("|", 1) for line in result.stdout.splitlines() if "|" in line]
    wanted = [rest for name, rest in lines
              if (name.rstrip("*") == partition if partition else name.endswith("*"))]
    return parse_nodes("\n".join(wanted))


def wait_while_startable(jobs: Sequence[Any], request: dict[str, Any], max_poll_seconds: float = 60.0) -> None:
    """Wait until every submitit job in ``jobs`` left Slurm's queue. Raises TransferlabError, after
    cancelling them all, when one is pending for a reason that never clears, or when one left the
    queue without a result (cancelled or killed outside this command)."""
    array_ids = sorted({job.job_id.split("_")[0] for job in jobs})
    started = next_check = time.monotonic()
    gone_since = None
    while not all(job.paths.result_pickle.exists() for job in jobs):
        now = time.monotonic()
        if gone_since is not None and now - gone_since > FINISHED_RESULT_GRACE_SECONDS:
            lost = next(job for job in jobs if not job.paths.result_pickle.exists())
            raise TransferlabError(f"Slurm job {lost.job_id} ended without a result (cancelled, or killed by "
                                   f"Slurm); see {lost.paths.stderr}")
        if gone_since is None and now >= next_check:
            queued = queued_jobs(array_ids)
            hopeless = [job for job in queued or [] if job.state == "PENDING" and job.reason in NEVER_CLEARS]
            if hopeless:
                subprocess.run(["scancel", *array_ids], capture_output=True)
                job = hopeless[0]
                raise TransferlabError(never_starts_line(
                    f"Slurm can never start job {job.job_id} (pending, reason {job.reason}, partition "
                    f"{job.partition})", NEVER_CLEARS[job.reason], request, partition_nodes(job.partition),
                    len(jobs)))
            if queued == []:
                gone_since = now
            # Often at first, when a hopeless request shows; then rarely, as submitit itself does.
            next_check = now + min(max_poll_seconds, max(2.0, (now - started) / 4))
        time.sleep(1.0)


class _WatchingExecutor(submitit.AutoExecutor):
    """submitit's executor whose map_array returns only once the jobs left the queue, and turns a
    refused submission into one line."""

    def __init__(self, *args: Any, request: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.request = request

    def map_array(self, fn: Any, *iterable: Any) -> list[Any]:
        try:
            # submitit prints sbatch's complaint before raising; it goes into our one line instead.
            with contextlib.redirect_stderr(io.StringIO()):
                jobs = super().map_array(fn, *iterable)
        except FailedJobError as error:  # sbatch refused the job array
            said = "; ".join(line.strip().removeprefix("sbatch: error: ") for line in str(error).splitlines()
                             if line.strip())
            raise TransferlabError(never_starts_line(
                f"Slurm refused the sweep's jobs ({said})", REFUSAL_KEYS, self.request,
                partition_nodes(self.request.get("partition")), 0)) from None
        wait_while_startable(jobs, self.request)
        return jobs


@contextlib.contextmanager
def watching_executor(request: dict[str, Any]) -> Iterator[None]:
    # The plugin's launch() makes its executor and waits for the results in one method, with no hook
    # in between: for the duration of the call, it gets an executor that watches while it submits.
    original = submitit.AutoExecutor
    submitit.AutoExecutor = functools.partial(_WatchingExecutor, request=dict(request))
    try:
        yield
    finally:
        submitit.AutoExecutor = original
