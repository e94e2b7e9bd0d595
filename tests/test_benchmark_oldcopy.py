"""The benchmark script measures both pipelines and reports their ratio (its figures are not
checked here: timings on a shared machine are no test)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "benchmark.py"


@pytest.mark.slow
def test_benchmark_cpu_mode_writes_its_table_and_json(tmp_path):
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--mode", "cpu", "--models", "resnet18", "--repeats", "2", "--images", "64",
         "--workers", "0", "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "device img/s" in result.stdout and "resnet18" in result.stdout
    saved = json.loads((tmp_path / "benchmark-cpu.json").read_text())
    assert saved["settings"]["image_size"] == 64 and saved["environment"]["torch"]
    [row] = saved["pipelines"]
    assert len(row["device_all_images_per_second"]) == 2 and len(row["reference_all_images_per_second"]) == 2
    assert row["device_images_per_second"] > 0 and row["reference_images_per_second"] > 0
    assert row["ratio_device_over_reference"] == row["device_images_per_second"] / row["reference_images_per_second"]


@pytest.mark.slow
def test_benchmark_rejects_bad_repeats(tmp_path):
    result = subprocess.run([sys.executable, str(SCRIPT), "--repeats", "0", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "--repeats=0 is not allowed; it must be >= 1" in result.stderr


@pytest.mark.slow
def test_benchmark_levers_time_each_setting_against_the_default(tmp_path):
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--mode", "cpu", "--models", "alexnet", "--repeats", "1", "--images", "64",
         "--workers", "0", "--levers", "--eval-batch-sizes", "32", "64", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    levers = json.loads((tmp_path / "benchmark-cpu.json").read_text())["levers"]
    by_lever = {(row["kind"], row["lever"]): row for row in levers}
    assert set(by_lever) == {("train", "default"), ("train", "channels_last=True"), ("train", "optimizer=for_loop"),
                             ("train", "optimizer=foreach"), ("train", "optimizer=fused"), ("eval", "batch=32"),
                             ("eval", "batch=64")}
    assert by_lever[("train", "default")]["ratio_over_default"] == 1.0
    assert by_lever[("eval", "batch=32")]["ratio_over_default"] == 1.0
    fused = by_lever[("train", "optimizer=fused")]
    assert fused["images_per_second"] > 0
    assert fused["ratio_over_default"] == fused["images_per_second"] / by_lever[("train", "default")]["images_per_second"]
