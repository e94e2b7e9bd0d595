"""transferlab.progress: the training bar reads only the numbers the host already has, at most a
few times a second; a log line never lands on a bar's line; the decoding bar counts images."""

import io
import logging
import re
import sys

from transferlab.data.cache import _collect
from transferlab.engine import ProgressBar
from transferlab.progress import ConsoleHandler, decoding_bar


class HostTotals:
    """Stands in for engine._Totals: ``running()`` is all a bar may read; anything else (``read``,
    which waits for the device, the device sums) fails the test."""

    def __init__(self):
        self.calls = 0

    def running(self):
        self.calls += 1
        return 0.5, 0.25, 64 * self.calls

    def __getattr__(self, name):
        raise AssertionError(f"the bar read totals.{name}, which may wait for the device")


def test_the_bar_reads_only_what_the_host_has_and_only_when_it_redraws():
    stream, totals = io.StringIO(), HostTotals()
    bar = ProgressBar("epoch 1/2", total_batches=1000, stream=stream, per_second=4.0)
    for step in range(1, 1001):  # far faster than 4 a second
        bar(step, totals)
    assert 2 <= totals.calls <= 3  # the first batch, (perhaps one more,) and the last
    text = stream.getvalue()
    assert "epoch 1/2 [" in text and "1000/1000" in text and "loss 0.5000 acc 25.00%" in text and "img/s" in text


def test_close_removes_the_bar_and_may_be_called_again():
    stream = io.StringIO()
    bar = ProgressBar("epoch 1/1", total_batches=10, stream=stream, per_second=1e9)
    bar(3, HostTotals())
    drawn = stream.getvalue()
    bar.close()
    bar.close()
    cleared = stream.getvalue()[len(drawn):]
    assert "3/10" in drawn and cleared.startswith("\r") and "3/10" not in cleared


def test_a_message_logged_while_a_bar_is_drawn_gets_a_line_of_its_own(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stdout", stream)  # the console as the handler finds it when it writes
    logger = logging.getLogger("transferlab.test_progress")
    handler = ConsoleHandler(io.StringIO())  # the stream given when logging was configured, since replaced
    logger.addHandler(handler)
    try:
        bar = ProgressBar("epoch 1/1", total_batches=3, stream=stream, per_second=1e9)
        bar(1, HostTotals())
        logger.warning("a message from the run")
        bar(3, HostTotals())
    finally:
        logger.removeHandler(handler)
    lines = [re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", line).rpartition("\r")[2].strip()
             for line in stream.getvalue().split("\n")]
    assert "a message from the run" in lines  # not "epoch 1/1 [...] 1/3 ... img/sa message from the run"


def test_the_decoding_bar_counts_every_image_and_removes_itself(capsys):
    bar = decoding_bar(3)
    errors = _collect(iter([None, "b.jpg is not an image", None]), bar)
    assert errors == ["b.jpg is not an image"] and bar.n == 3
    written = capsys.readouterr().err
    assert "decoding [" in written and "/3 " in written and written.endswith("\r")  # drawn, then wiped
