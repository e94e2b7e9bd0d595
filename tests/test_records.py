"""Run records on disk: the files transferlab writes keep the permissions the umask gives (0666 less
the umask), as any other tool's output would, also where they are written atomically."""

import json
import os
import stat
from pathlib import Path

import pytest

from transferlab.records import METRICS_FILE, RUN_FILE, write_atomic, write_record

from helpers import tiny_config, write_image_folder


@pytest.fixture(params=[0o022, 0o027], ids=["umask-022", "umask-027"])
def umask(request):
    """Runs the test under this umask, and sets the one before back afterwards."""
    before = os.umask(request.param)
    yield request.param
    os.umask(before)


@pytest.fixture
def umask_027():
    before = os.umask(0o027)
    yield 0o027
    os.umask(before)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_writes_get_0666_less_the_umask(tmp_path, umask):
    write_atomic(tmp_path / "table.csv", "a,b\n1,2\n")
    write_record(tmp_path / "run", {"status": "completed", "config": {}, "history": [{"epoch": 1}]})
    for path in (tmp_path / "table.csv", tmp_path / "run" / RUN_FILE, tmp_path / "run" / METRICS_FILE):
        assert oct(mode(path)) == oct(0o666 & ~umask), path.name
    write_atomic(tmp_path / "figure.png", b"\x89PNG")  # bytes too: the report's PNGs
    assert oct(mode(tmp_path / "figure.png")) == oct(0o666 & ~umask)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["figure.png", "metrics.csv", "run", "run.json",
                                                           "table.csv"]  # no temporary file left


@pytest.mark.slow
def test_every_file_of_a_run_and_its_report_gets_0666_less_the_umask(tmp_path, umask_027, capsys):
    """A tiny image-folder run that keeps its checkpoint and model, with its image cache, and its report."""
    umask = umask_027
    from transferlab import report
    from transferlab.run import run_training

    root = write_image_folder(tmp_path / "birds", per_class=4, classes=("crow", "owl"))
    config = tiny_config("data=imagefolder", f"data.root={root}", f"data.cache_dir={tmp_path / 'cache'}",
                         "data.stored_size=40", "data.num_workers=0", "data.decode_workers=1", "train.epochs=2",
                         "keep_checkpoint=true", "save_model=true")
    record = run_training(config, tmp_path / "run")
    assert record["status"] == "completed", record.get("error")
    assert report.main([str(tmp_path / "run"), "--out", str(tmp_path / "report")]) == 0
    written = {path.relative_to(tmp_path).as_posix(): mode(path) for folder in ("run", "cache", "report")
               for path in (tmp_path / folder).rglob("*") if path.is_file()}
    for name in ("run/run.json", "run/metrics.csv", "run/samples.npz", "run/predictions.npz", "run/checkpoint.pt",
                 "run/model.pt", "report/report.md", "report/runs.csv"):
        assert name in written
    assert any(name.startswith("cache/") and name.endswith(".npy") for name in written)
    assert any(name.startswith("report/") and name.endswith(".png") for name in written)
    wrong = {name: oct(m) for name, m in written.items() if m != 0o666 & ~umask and not name.endswith(".lock")}
    assert wrong == {}, f"not {oct(0o666 & ~umask)}"
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "completed"
