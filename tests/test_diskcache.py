"""One disk-cache mechanism (transferlab.diskcache) for the image and feature caches: built once under
a lock and published whole, verified at each opening, rebuilt with a warning when damaged, its
leftovers removed, listed and removed by `transferlab cache` whatever its kind."""

from __future__ import annotations

import json
import logging
import os
import time

import numpy as np
import pytest

from transferlab import caches, diskcache
from transferlab.errors import TransferlabError
from transferlab.locks import file_lock

KEY = "0123abcd" * 3
VALUES = np.arange(12, dtype=np.float32).reshape(3, 4)


def squares(root, builds: list | None = None, values=VALUES, fail: bool = False):
    """A small cache of one array, ``squares.npy``, as the image and feature caches use the mechanism;
    (its array, whether it was built now). Each build is appended to ``builds``; with ``fail``, the
    build raises halfway."""
    cache = diskcache.DiskCache(root, "test cache", rebuild="computing it again", builder="computation")

    def build(temporary):
        if builds is not None:
            builds.append(temporary)
        array = diskcache.allocate(temporary / "squares.npy", values.shape, np.float32, "the test cache", "free some")
        array[:] = values ** 2
        if fail:
            raise RuntimeError("the build fails halfway")
        array.flush()
        return {"rows": len(values)}

    def arrays(about):
        if about.get("rows") != len(values):
            return f"about.json does not describe {len(values)} rows"
        return {"squares.npy": ((len(values), 4), np.float32)}

    return cache.open(KEY, arrays=arrays, build=build, load=lambda folder: np.load(folder / "squares.npy"))


def test_a_cache_is_built_once_with_the_digests_of_its_arrays_and_then_read(tmp_path):
    builds = []
    first, built = squares(tmp_path / "kind", builds)
    again, built_again = squares(tmp_path / "kind", builds)
    assert (built, built_again) == (True, False) and len(builds) == 1
    assert np.array_equal(first, VALUES ** 2) and np.array_equal(again, VALUES ** 2)
    about = json.loads((tmp_path / "kind" / KEY / "about.json").read_text())
    assert about["rows"] == 3 and about["sha256"] == {"squares.npy": diskcache.file_sha256(tmp_path / "kind" / KEY /
                                                                                           "squares.npy")}
    assert sorted(p.name for p in (tmp_path / "kind").iterdir()) == [KEY, f"{KEY}.lock"]  # no temporary left


@pytest.mark.parametrize("damage, reason", [
    ("bytes", "squares.npy does not match the SHA-256 recorded when it was written"),
    ("truncate", "squares.npy holds 130 bytes, not 176"),
    ("about", "about.json does not describe 3 rows"),
])
def test_a_damaged_cache_is_rebuilt_with_a_warning_naming_it_and_why(tmp_path, caplog, damage, reason):
    squares(tmp_path)
    folder = tmp_path / KEY
    if damage == "bytes":
        with open(folder / "squares.npy", "r+b") as handle:
            handle.seek(-4, os.SEEK_END)
            handle.write(np.float32(-1).tobytes())
    elif damage == "truncate":
        os.truncate(folder / "squares.npy", 130)  # the header whole, the array short
    else:
        about = json.loads((folder / "about.json").read_text())
        (folder / "about.json").write_text(json.dumps({**about, "rows": 2}))
    with caplog.at_level(logging.WARNING, logger="transferlab"):
        values, built = squares(tmp_path)
    assert built and np.array_equal(values, VALUES ** 2)
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith(f"warning: the test cache {folder} is damaged ({reason}")
    assert warning.endswith("; computing it again")


def test_a_build_that_fails_leaves_neither_a_cache_nor_a_temporary(tmp_path):
    with pytest.raises(RuntimeError, match="halfway"):
        squares(tmp_path, fail=True)
    assert [p.name for p in tmp_path.iterdir()] == [f"{KEY}.lock"]


def test_a_temporary_whose_lock_is_free_is_removed_and_one_being_written_is_left(tmp_path):
    other = "4567cdef" * 3
    stale, busy = tmp_path / f".{other}.999999.tmp", tmp_path / f".{'89ab0123' * 3}.999998.tmp"
    for temporary in (stale, busy):
        temporary.mkdir()
        (temporary / "squares.npy").write_bytes(b"\0" * 100)
    with file_lock(tmp_path / f"{'89ab0123' * 3}.lock"):  # as a process that is building that cache
        squares(tmp_path)
        assert not stale.exists() and busy.exists()


def test_each_opening_sets_the_last_use_of_the_cache(tmp_path):
    squares(tmp_path)
    long_ago = time.time() - 86400
    os.utime(tmp_path / KEY, (long_ago, long_ago))
    squares(tmp_path)
    assert (tmp_path / KEY).stat().st_mtime > long_ago + 3600


def test_a_cache_that_cannot_be_written_is_one_line_naming_data_cache_dir(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(TransferlabError) as error:
        squares(tmp_path / "file" / "kind")
    line = str(error.value)
    assert "\n" not in line and line.startswith(f"the test cache cannot be written in {tmp_path / 'file' / 'kind'} (")
    assert line.endswith("point data.cache_dir at a folder you can write")


def test_cache_list_and_remove_all_see_the_leftovers_of_a_feature_extraction_too(tmp_path, capsys):
    """Before the one mechanism, `transferlab cache` saw only the image caches' temporaries."""
    features = tmp_path / "features"
    squares(features)
    leftover = features / f".{'4567cdef' * 3}.4242.tmp"
    leftover.mkdir()
    (leftover / "train.npy").write_bytes(b"\0" * 5000)
    assert caches.main(["list", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"{leftover}: left by an interrupted feature extraction (cache remove --all removes it), process 4242" in out
    assert caches.main(["remove", "--all", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"removed {features / KEY} (" in out and f"removed {leftover}, left by an interrupted feature extraction" in out
    assert [p.name for p in features.iterdir() if not p.name.endswith(".lock")] == []
