"""One run per folder: a run folder's lock names its holder to a second process, and dies with its
holder."""

import json
import os
import platform
import subprocess
import sys
import time

import pytest

from transferlab.locks import RUN_LOCK_FILE, RunFolderBusy, run_folder_lock

from helpers import TINY, start_transferlab, transferlab

# Holds the run folder argv[1] until killed; says so once it holds it.
HOLDER = """
import sys, time
from transferlab.locks import run_folder_lock

with run_folder_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(300)
"""


def test_the_line_of_a_holder_that_died_does_not_block_and_a_released_lock_leaves_an_empty_file(tmp_path):
    lock_file = tmp_path / RUN_LOCK_FILE
    lock_file.write_text("pid 999999 on host gone (started 2024-01-01T00:00:00+00:00)\n")  # killed, no lock held
    with run_folder_lock(tmp_path):
        line = lock_file.read_text()
        assert line.startswith(f"pid {os.getpid()} on host {platform.node()} (started ")
    assert lock_file.read_text() == ""
    assert not list(tmp_path.glob(".*.tmp"))  # not taken for a leftover temporary file


@pytest.mark.slow
def test_a_run_folder_held_by_another_process_is_refused_naming_it_until_that_process_dies(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = (tmp_path / RUN_LOCK_FILE).read_bytes()
        with pytest.raises(RunFolderBusy) as refused:
            with run_folder_lock(tmp_path):
                pass
        message = str(refused.value)
        assert message.startswith(f"{tmp_path} is in use by pid {holder.pid} on host {platform.node()} (started ")
        assert message.endswith("; wait for it to finish or stop it") and "\n" not in message
        assert (tmp_path / RUN_LOCK_FILE).read_bytes() == before  # the refused process wrote nothing
        holder.kill()  # no chance to clean up: its line stays, its lock goes
        holder.wait(timeout=30)
        with run_folder_lock(tmp_path):
            assert f"pid {holder.pid} " not in (tmp_path / RUN_LOCK_FILE).read_text()
    finally:
        holder.kill()


@pytest.mark.slow
def test_a_second_run_of_one_folder_is_refused_naming_the_first_which_completes_undisturbed(tmp_path):
    run = ["train", *TINY, "data.num_train=1200", "data.num_test=200", "train.epochs=3", "name=twice"]
    first = start_transferlab(*run, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 300
        while not list((tmp_path / "outputs" / "twice").glob("*/run.json")) and time.monotonic() < deadline:
            assert first.poll() is None, first.stdout.read()
            time.sleep(0.05)
        [folder] = [p.parent for p in (tmp_path / "outputs" / "twice").glob("*/run.json")]
        second = transferlab(*run, cwd=tmp_path)
        assert first.poll() is None, "the first run ended before the second could be refused"
        output, _ = first.communicate(timeout=600)
    finally:
        first.kill()
    assert second.returncode == 1
    refusals = [line for line in (second.stdout + second.stderr).splitlines() if "in use" in line]
    assert refusals == [f"run not started: {folder.resolve()} is in use by pid {first.pid} on host {platform.node()} "
                        f"(started {refusals[0].partition('(started ')[2]}"], second.stdout + second.stderr
    assert first.returncode == 0, output
    record = json.loads((folder / "run.json").read_text())
    assert record["status"] == "completed" and [e["epoch"] for e in record["history"]] == [1, 2, 3]
    assert "in use" not in (folder / "train.log").read_text()  # the second wrote nothing there
    assert (folder / RUN_LOCK_FILE).read_text() == ""


def test_a_second_hold_of_a_held_folder_is_refused_even_in_the_same_process_and_leaves_the_line(tmp_path):
    """The lock is an flock of its own file: a second attempt (another thread, a test) is refused
    like another process, and neither its attempt nor its refusal touches the holder's line or
    drops the lock (a POSIX lock would have been taken again, and dropped when it closed)."""
    with run_folder_lock(tmp_path):
        line = (tmp_path / RUN_LOCK_FILE).read_text()
        with pytest.raises(RunFolderBusy, match=f"^{tmp_path} is in use by pid {os.getpid()} on host "):
            with run_folder_lock(tmp_path):
                pass
        assert (tmp_path / RUN_LOCK_FILE).read_text() == line
        with pytest.raises(RunFolderBusy):  # still held
            with run_folder_lock(tmp_path):
                pass
    with run_folder_lock(tmp_path):  # released at the end of the first hold
        pass
