"""Progress bars (tqdm) and the console log handler that keeps log lines off them.

``ProgressBar`` draws a training epoch's batches; ``decoding_bar`` an image cache's decoding.
``ConsoleHandler`` is the runs' console handler (conf/hydra/job_logging/transferlab.yaml): it
writes each message through ``tqdm.write``, which lifts any bar drawn on the terminal, writes the
line and draws the bar again, so a message never ends up glued onto a bar's line.

This module must not import torch: logging is configured with it before a run imports anything.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import IO, Any

from tqdm import tqdm

BAR_WIDTH = 24  # characters between the brackets


class ProgressBar:
    """A one-line bar of a training epoch, redrawn at most ``per_second`` times a second: batches,
    running loss and accuracy, images/s. Called as ``bar(step, totals)`` after each batch (the
    engine's ``on_batch``); ``totals`` is read only through ``totals.running()``, the numbers the
    host has already received (on a GPU, those of a few batches earlier), and only when the bar is
    redrawn, so drawing it never waits for the device. It removes itself after the last batch,
    or at ``close()``."""

    def __init__(self, label: str, total_batches: int, stream: IO[str] | None = None, per_second: float = 4.0):
        self.label = label
        self.total = total_batches
        self.stream = stream if stream is not None else sys.stderr
        self.interval = 1.0 / per_second
        self.start = time.perf_counter()
        self.last_draw = 0.0
        # tqdm's own clock is off (mininterval=0): this class decides when to redraw, and tqdm
        # draws when it is told to.
        self._bar = _EpochBar(total=total_batches, desc=label, file=self.stream, leave=False, mininterval=0,
                              miniters=1, ascii=" =",
                              bar_format=f"{{desc}} [{{bar:{BAR_WIDTH}}}] {{n_fmt}}/{{total_fmt}} {{numbers}}")

    def __call__(self, step: int, totals: Any) -> None:
        now = time.perf_counter()
        if now - self.last_draw < self.interval and step < self.total:
            return
        self.last_draw = now
        loss, accuracy, images = totals.running()
        rate = images / max(now - self.start, 1e-9)
        self._bar.numbers = f"loss {loss:.4f} acc {accuracy:.2%} {rate:,.0f} img/s"
        self._bar.update(step - self._bar.n)
        if step >= self.total:
            self.close()

    def close(self) -> None:
        """Remove the bar from the terminal (idempotent)."""
        self._bar.close()


class _EpochBar(tqdm):
    """A tqdm bar with one more field for its format, ``{numbers}`` (tqdm's own ``{postfix}``
    would start with a comma)."""

    numbers = ""

    @property
    def format_dict(self) -> dict[str, Any]:
        return {**super().format_dict, "numbers": self.numbers}


def decoding_bar(total_images: int, stream: IO[str] | None = None) -> tqdm:
    """The image cache's decoding bar on stderr, redrawn at most 4 times a second; ``update(1)``
    for each image decoded, ``close()`` removes it."""
    return tqdm(total=total_images, desc="decoding", unit=" images", file=stream if stream is not None else sys.stderr,
                leave=False, mininterval=0.25, ascii=" =",
                bar_format=f"{{desc}} [{{bar:{BAR_WIDTH}}}] {{n_fmt}}/{{total_fmt}} {{rate_fmt}}")


class ConsoleHandler(logging.StreamHandler):
    """A StreamHandler that writes through ``tqdm.write``: a progress bar on the terminal is lifted
    for the message and drawn again below it. It writes to sys.stdout as it is when the line is
    logged, not as it was when logging was configured: a redirect made since is followed, and a
    stream closed since (a finished test's capture) is never written to."""

    @property
    def stream(self) -> IO[str]:
        return sys.stdout

    @stream.setter
    def stream(self, value: IO[str]) -> None:
        """The stream given (conf/hydra/job_logging says ext://sys.stdout) is today's sys.stdout."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=self.stream)
            self.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)
