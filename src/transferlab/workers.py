"""The worker processes of a sweep (hydra/launcher=joblib runs its jobs in loky worker processes of
the sweep's process) stop with it.

Left alone, SIGTERM to the sweep's process ends it at once, silently, while its workers, orphans
now, train on and start the jobs still queued for them; a rerun would then resume from checkpoints
they are still writing. Instead:

- In the sweep's process (``workers_stop_with_the_sweep``, for the sweep), SIGTERM is passed on to
  the workers and the sweep goes on collecting what its jobs return. Each worker marks the run it
  trains interrupted (its last epoch-end checkpoint kept), returns it, and starts no further job:
  every job still queued returns at once as not started. The sweep then ends with its summary and
  exit status 143. A second SIGTERM stops the sweep without waiting (joblib then kills the
  workers, as for an error).
- In a worker (``worker_stop``, from its first job on), SIGTERM outside a run only marks the
  worker stopped, and a thread watches the sweep's process: when it is gone (killed with
  SIGKILL, say), the worker sends itself SIGTERM and ends once its run has been marked
  interrupted.

The sweep's process names itself to its workers in $TRANSFERLAB_SWEEP ("host pid"), which they
inherit; a process is a worker when it runs on that host as a child of that pid, so that jobs of
another launcher (Slurm's, on other nodes) that inherit the variable are not taken for workers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from transferlab.errors import RunInterrupted

log = logging.getLogger(__name__)
SWEEP_ENV = "TRANSFERLAB_SWEEP"
PARENT_POLL_SECONDS = 1.0


class SweepStop:
    """What the sweep's process knows of a stop request: the signal, once one came."""

    def __init__(self) -> None:
        self.signal: int | None = None


@contextlib.contextmanager
def workers_stop_with_the_sweep(sweep_dir: Path) -> Iterator[SweepStop]:
    """For a sweep whose jobs run in worker processes of this one: SIGTERM stops them (see the
    module's docstring). Must be entered in the main thread."""
    stop = SweepStop()

    def stop_the_workers(signum: int, frame) -> None:
        workers = child_processes()
        if stop.signal is not None or not workers:  # a second request, or no worker to wait for
            log.warning("%s: stopping the sweep now", signal_name(signum))
            raise RunInterrupted(str(sweep_dir), 128 + signum, sweep=True)
        stop.signal = signum
        log.warning("%s: stopping the sweep: its %d worker process(es) (pid %s) mark their runs interrupted and "
                    "start no further job", signal_name(signum), len(workers), ", ".join(map(str, workers)))
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    saved_env = os.environ.get(SWEEP_ENV)
    os.environ[SWEEP_ENV] = f"{platform.node()} {os.getpid()}"
    previous = signal.signal(signal.SIGTERM, stop_the_workers)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGTERM, previous)
        if saved_env is None:
            os.environ.pop(SWEEP_ENV, None)
        else:
            os.environ[SWEEP_ENV] = saved_env


def signal_name(signum: int | None) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def child_processes(parent: int | None = None) -> list[int]:
    """The pids of the processes whose parent is ``parent`` (this process), from Linux's /proc
    (none where there is none), but for the resource trackers of multiprocessing and loky, which
    ignore SIGTERM and end with the sweep."""
    parent = os.getpid() if parent is None else parent
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()  # after "pid (command name)"
            if len(fields) > 1 and int(fields[1]) == parent:
                if b"resource_tracker" not in (stat.parent / "cmdline").read_bytes():
                    children.append(int(stat.parent.name))
        except OSError:
            continue  # ended meanwhile
    return sorted(children)


class WorkerStop:
    """A worker process's stop request: the signal, once one came (a SIGTERM, or the run it
    trained interrupted)."""

    def __init__(self, sweep_pid: int) -> None:
        self.sweep_pid = sweep_pid
        self.requested: int | None = None

    def stop(self, signum: int) -> None:
        self.requested = signum

    def reason(self) -> str:
        return f"the sweep was stopped ({signal_name(self.requested)}); run the same command again to run it"

    def _on_signal(self, signum: int, frame) -> None:
        self.stop(signum)

    def _watch_the_sweep(self) -> None:
        while os.getppid() == self.sweep_pid:
            time.sleep(PARENT_POLL_SECONDS)
        log.warning("the sweep's process (pid %d) is gone: stopping this worker (pid %d)", self.sweep_pid,
                    os.getpid())
        os.kill(os.getpid(), signal.SIGTERM)
        # Nobody is left to collect what the job returns, nor to tell this process to end: once the
        # run in progress has saved its record and checkpoint (and so stopped), end it.
        while self.requested is None:
            time.sleep(0.1)
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(128 + signal.SIGTERM)


# One per worker process, made by its first job: a signal's disposition belongs to the process.
_worker: WorkerStop | None = None


def worker_stop() -> WorkerStop | None:
    """In a worker process of a sweep (see the module's docstring), its stop request, set up at the
    first call (a SIGTERM handler and the thread that watches the sweep's process; call it from the
    main thread); None in any other process."""
    global _worker
    if _worker is not None:
        return _worker
    host, _, pid = os.environ.get(SWEEP_ENV, "").partition(" ")
    if host != platform.node() or not pid.isdigit() or int(pid) != os.getppid():
        return None
    if threading.current_thread() is not threading.main_thread():
        return None  # only the main thread may handle signals (loky runs jobs there)
    _worker = WorkerStop(int(pid))
    signal.signal(signal.SIGTERM, _worker._on_signal)
    threading.Thread(target=_worker._watch_the_sweep, name="watch-the-sweep", daemon=True).start()
    return _worker
