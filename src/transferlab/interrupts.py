"""SIGTERM (a cluster's or `kill`'s request to stop) ends a run as Ctrl-C does: its record marked
interrupted, its last epoch-end checkpoint kept for a resume."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

from transferlab.errors import RunInterrupted


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Turn SIGTERM (a cluster's or `kill`'s request to stop) into an interrupt, like Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        # Once: a second SIGTERM (a sweep's process passes one on to its workers, which Slurm or a
        # `kill` of the process group may also reach) would cut short the saving of the run's
        # record and checkpoint. SIGKILL still stops it.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise RunInterrupted("", 128 + signum)

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
