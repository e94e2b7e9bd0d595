"""The benchmark script measures both pipelines and reports their ratio. How fast is not checked
here (timings on a shared machine are no test), but every figure is checked against the passes it
came from: images per pass over the seconds of each timed pass, the median of those, their ratio."""

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "benchmark.py"
IMAGES = 64  # --images: the training images of each timed pass (one batch of 64 in cpu mode)


def benchmark(tmp_path: Path, *args: str) -> tuple[dict, str, float]:
    """(the JSON, stdout, wall-clock seconds) of a cpu-mode benchmark of IMAGES images per pass."""
    started = time.perf_counter()
    result = subprocess.run([sys.executable, str(SCRIPT), "--mode", "cpu", "--images", str(IMAGES), "--workers", "0",
                             "--out", str(tmp_path), *args], capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - started
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads((tmp_path / "benchmark-cpu.json").read_text()), result.stdout, wall


def median_rate(seconds: list[float], recorded: list[float]) -> float:
    """The median images/s of passes of ``seconds`` each, once the recorded images/s of each pass
    are checked to be IMAGES over its seconds."""
    rates = [IMAGES / s for s in seconds]
    assert recorded == pytest.approx(rates, rel=1e-9), (recorded, rates)
    return statistics.median(rates)


@pytest.mark.slow
def test_benchmark_cpu_mode_writes_its_table_and_json(tmp_path):
    saved, stdout, wall = benchmark(tmp_path, "--models", "resnet18", "--repeats", "2")
    assert "device img/s" in stdout and "resnet18" in stdout
    assert saved["settings"]["image_size"] == 64 and saved["settings"]["images"] == IMAGES
    assert saved["environment"]["torch"]
    [row] = saved["pipelines"]
    measured = {}
    for pipeline in ("device", "reference"):
        seconds = row[f"{pipeline}_all_seconds"]
        assert len(seconds) == 2 and min(seconds) > 0
        measured[pipeline] = median_rate(seconds, row[f"{pipeline}_all_images_per_second"])
        assert row[f"{pipeline}_images_per_second"] == pytest.approx(measured[pipeline], rel=1e-9), pipeline
    # Seconds, not another unit: the four timed passes ran inside the process.
    assert sum(row["device_all_seconds"] + row["reference_all_seconds"]) < wall
    ratio = row["ratio_device_over_reference"]
    assert ratio == pytest.approx(measured["device"] / measured["reference"], rel=1e-9)
    assert 0.01 < ratio < 100  # two pipelines of one model on one machine: not orders of magnitude apart
    assert f"{ratio:>7.2f}x" in stdout  # the table prints the figure the JSON holds


@pytest.mark.slow
def test_benchmark_rejects_bad_repeats(tmp_path):
    result = subprocess.run([sys.executable, str(SCRIPT), "--repeats", "0", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "--repeats=0 is not allowed; it must be >= 1" in result.stderr


@pytest.mark.slow
def test_benchmark_levers_time_each_setting_against_the_default(tmp_path):
    saved, _, wall = benchmark(tmp_path, "--models", "alexnet", "--repeats", "1", "--levers",
                               "--eval-batch-sizes", "32", "64")
    by_lever = {(row["kind"], row["lever"]): row for row in saved["levers"]}
    assert set(by_lever) == {("train", "default"), ("train", "channels_last=True"), ("train", "optimizer=for_loop"),
                             ("train", "optimizer=foreach"), ("train", "optimizer=fused"), ("eval", "batch=32"),
                             ("eval", "batch=64")}
    measured = {lever: median_rate(row["all_seconds"], row["all_images_per_second"]) for lever, row in by_lever.items()}
    defaults = {"train": measured[("train", "default")], "eval": measured[("eval", "batch=32")]}  # the first batch size
    for (kind, lever), row in by_lever.items():
        assert row["images_per_second"] == pytest.approx(measured[(kind, lever)], rel=1e-9), lever
        assert row["ratio_over_default"] == pytest.approx(measured[(kind, lever)] / defaults[kind], rel=1e-9), lever
        assert 0.01 < row["ratio_over_default"] < 100, lever
    assert sum(sum(row["all_seconds"]) for row in by_lever.values()) < wall
