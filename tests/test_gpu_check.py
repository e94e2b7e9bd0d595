"""scripts/gpu-check.sh, the GPU check, and its Python half scripts/gpu_check.py: which carried wheels
a machine needs, the summary of targets against figures, and the dry run on the CPU (so that the
script cannot rot before a GPU comes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu-check.sh"
sys.path.insert(0, str(ROOT / "scripts"))
import gpu_check  # noqa: E402


def fake_wheel(folder: Path, name: str, version: str, *requires: str) -> Path:
    """A wheel that holds only its METADATA, with ``requires`` as its Requires-Dist lines."""
    path = folder / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    headers = [f"Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}",
               *(f"Requires-Dist: {r}" for r in requires)]
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{name.replace('-', '_')}-{version}.dist-info/METADATA",
                         "\n".join(headers) + "\n\nRequires-Dist: not-a-header (the description)\n")
    return path


def test_needs_takes_the_wheels_of_unmet_requirements_and_what_those_need(tmp_path):
    one = fake_wheel(tmp_path, "tlfake-one", "1.0", "tlfake-two>=2", "pytest>=7", "tlfake-docs; extra == 'docs'")
    two = fake_wheel(tmp_path, "tlfake-two", "2.1")
    fake_wheel(tmp_path, "tlfake-old", "0.9")
    fake_wheel(tmp_path, "tlfake-unused", "1.0")
    wanted = [Requirement(r) for r in ("tlfake-one>=1", "pytest>=7", "tlfake-old>=1", "tlfake-absent")]
    wheels, missing = gpu_check.needed_wheels(tmp_path, wanted)
    # pytest is installed here (met), the docs extra is not asked for, the unused wheel is not needed.
    assert wheels == [one, two]
    assert missing == ["tlfake-old>=1", "tlfake-absent"]


def test_needs_reads_transferlabs_requirements_and_here_every_one_is_met():
    names = {requirement.name for requirement in gpu_check.project_requirements()}
    assert {"torch", "hydra-core", "omegaconf", "timm", "peft", "pytest"} <= names
    assert gpu_check.needed_wheels(ROOT / "no-such-folder", gpu_check.project_requirements()) == ([], [])


def write_check_output(folder: Path) -> None:
    """What a GPU check that ran out of time in its study leaves: made-up figures."""
    (folder / "benchmark").mkdir(parents=True)
    (folder / "study").mkdir()
    (folder / "steps.tsv").write_text("tests\t1\t95\t150\tfailed: see tests.log\n"
                                      "benchmark\t0\t120\t150\t\n"
                                      "study\t124\t240\t240\ttimed out after 240 s\n")
    pipelines = [{"model": "resnet18", "device_images_per_second": 12_345.6, "ratio_device_over_reference": 6.25,
                  "device+compile_images_per_second": 15_000.0},
                 {"model": "vgg16", "device_images_per_second": 2_999.0, "ratio_device_over_reference": 4.0}]
    (folder / "benchmark" / "benchmark-gpu.json").write_text(json.dumps({"pipelines": pipelines,
                                                                         "whole_run_seconds": 61.25}))
    (folder / "study" / "benchmark-gpu.json").write_text(json.dumps({"study_run_seconds": [60.0] * 4}))
    (folder / "probe.json").write_text(json.dumps({"runs": {"cached, warm": {"speedup": 31.5}}}))
    (folder / "gpu-tests.xml").write_text(
        '<testsuites><testsuite><testcase name="a"/><testcase name="b"/>'
        '<testcase name="c"><failure message="x"/></testcase><testcase name="d"><skipped/></testcase>'
        '</testsuite></testsuites>')


def summary_rows(text: str) -> dict[str, list[str]]:
    """The summary's table rows by their first cell (cells are two or more spaces apart)."""
    import re

    return {cells[0]: cells[1:] for cells in (re.split(r"\s{2,}", line.strip()) for line in text.splitlines())
            if len(cells) > 1}


def test_the_summary_sets_each_target_against_its_figure(tmp_path):
    write_check_output(tmp_path)
    text = gpu_check.summary(tmp_path)
    rows = summary_rows(text)
    assert text.startswith("GPU CHECK\n") and "DRY RUN" not in text
    assert rows["resnet18 training img/s"] == [">= 10,000", "12,346", "met"]
    assert rows["vgg16 training img/s"] == [">= 3,000", "2,999", "NOT MET"]
    assert rows["alexnet training img/s"] == [">= 20,000", "-", "not measured"]
    assert rows["resnet18 device / reference"] == [">= 5x", "6.25x", "met"]
    assert rows["vgg16 device / reference"] == [">= 5x", "4.00x", "NOT MET"]
    assert rows["resnet18 compiled img/s"] == ["-", "15,000"]
    assert rows["one protocol run (ResNet18)"] == ["-", "61.2 s"]
    # 4 runs of 12 in 4 minutes: not over the 10 minutes yet, so no verdict either way
    assert rows["the 12-run study"] == ["< 10 min", "stopped after 4 of 12 runs, 4.0 min", "not measured"]
    assert rows["probe cached, warm vs in the loop"] == ["-", "31.5x"]
    assert rows["study"] == ["exit 124 (timed out)", "240 s / 240 s", "timed out after 240 s"]
    assert rows["tests"] == ["exit 1", "95 s / 150 s", "failed: see tests.log"]
    assert "gpu tests: 2 passed, 1 failed, 1 skipped" in text


def test_a_study_past_its_target_is_not_met_even_unfinished_and_a_finished_one_is_judged(tmp_path):
    write_check_output(tmp_path)
    study = tmp_path / "study" / "benchmark-gpu.json"
    study.write_text(json.dumps({"study_run_seconds": [70.0] * 9}))
    assert summary_rows(gpu_check.summary(tmp_path))["the 12-run study"] == [
        "< 10 min", "stopped after 9 of 12 runs, 10.5 min", "NOT MET"]
    study.write_text(json.dumps({"study_run_seconds": [40.0] * 12, "study_seconds": 480.0}))
    assert summary_rows(gpu_check.summary(tmp_path))["the 12-run study"] == ["< 10 min", "8.0 min", "met"]


def test_a_summary_of_nothing_says_so(tmp_path):
    text = gpu_check.summary(tmp_path)
    assert "gpu tests: no JUnit XML" in text
    assert summary_rows(text)["resnet18 training img/s"] == [">= 10,000", "-", "not measured"]


def check(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHON": sys.executable, **env})


@pytest.mark.slow
def test_bad_options_and_a_check_without_cuda_are_one_line_each_and_no_step_passes_the_total(tmp_path):
    result = check("--fast")
    assert result.returncode == 2
    assert result.stderr == "gpu-check.sh: unknown option --fast; allowed: --dry-run, --prepare, --out DIR, --help\n"
    # An output folder that holds the checkout is refused before anything is emptied (a copy of the
    # script in a checkout of its own, so that a broken guard could only empty tmp_path).
    (tmp_path / "checkout" / "scripts").mkdir(parents=True)
    (tmp_path / "checkout" / "scripts" / "gpu-check.sh").write_text(SCRIPT.read_text())
    for out in (tmp_path, tmp_path / "checkout", tmp_path / "checkout" / ".."):
        result = subprocess.run(["bash", str(tmp_path / "checkout" / "scripts" / "gpu-check.sh"), "--out", str(out)],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 2 and result.stderr == (
            f"gpu-check.sh: --out {out.resolve()} holds the checkout, and the check empties its folder first; "
            "name a folder of its own\n")
        assert (tmp_path / "checkout" / "scripts" / "gpu-check.sh").exists()
    if torch.cuda.is_available():
        return
    result = check("--out", str(tmp_path / "check"), STEPS="env deps", BUDGET_TOTAL="5")
    assert result.returncode == 2
    assert result.stderr == "gpu-check.sh: torch sees no CUDA device here; on a CPU run scripts/gpu-check.sh --dry-run\n"
    # No step starts with under 10 s left of BUDGET_TOTAL.
    assert (tmp_path / "check" / "steps.tsv").read_text() == ("env\tskipped\t0\t\tno time left of BUDGET_TOTAL\n"
                                                             "deps\tskipped\t0\t\tno time left of BUDGET_TOTAL\n"
                                                             "imports\tskipped\t0\t\tnot in STEPS\n")


@pytest.mark.slow
def test_the_dry_run_runs_every_step_and_packs_what_it_wrote(tmp_path):
    """The whole check at tiny sizes on the CPU, as the device tool would run it (with $OUT); the
    limits are raised so that a busy machine cannot time a step out."""
    out = tmp_path / "OUT"
    out.mkdir()
    budgets = {f"BUDGET_{step}": "900" for step in ("ENV", "DEPS", "IMPORTS", "TESTS", "BENCHMARK", "LEVERS", "PROBE")}
    result = check("--dry-run", "--out", str(tmp_path / "check"), OUT=str(out), **budgets)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    folder = tmp_path / "check"
    steps = [line.split("\t") for line in (folder / "steps.tsv").read_text().splitlines()]
    assert [(name, status) for name, status, *_ in steps] == [
        ("env", "0"), ("deps", "0"), ("imports", "0"), ("tests", "0"), ("benchmark", "0"), ("levers", "0"),
        ("probe", "0"), ("study", "skipped")]
    counts = gpu_check.test_counts(folder / "gpu-tests.xml")
    collected = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "--collect-only", "-q",
                                str(ROOT / "tests" / "test_gpu.py")], capture_output=True, text=True, cwd=ROOT)
    assert counts["failed"] == 0 and counts["passed"] + counts["skipped"] == collected.stdout.count("::")
    if not torch.cuda.is_available():
        assert counts == {"passed": 0, "failed": 0, "skipped": collected.stdout.count("::")}
    bench = json.loads((folder / "benchmark" / "benchmark-tiny.json").read_text())
    [row] = bench["pipelines"]
    assert row["model"] == "alexnet" and row["device_images_per_second"] > 0 and bench["whole_run_seconds"] > 0
    levers = json.loads((folder / "levers" / "benchmark-tiny.json").read_text())
    assert levers["pipelines"] == [] and {r["lever"] for r in levers["levers"]} >= {"default", "optimizer=fused"}
    assert set(json.loads((folder / "probe.json").read_text())["runs"]) == {
        "in the loop", "cached, cold", "cached, warm", "L-BFGS, cold"}
    summary = (folder / "summary.txt").read_text()
    assert summary.startswith("GPU CHECK, DRY RUN on the CPU") and summary in result.stdout
    assert summary_rows(summary)["alexnet training img/s"] == [
        ">= 20,000", f"{row['device_images_per_second']:,.0f}", "n/a (dry run)"]
    assert "nvidia-smi" in (folder / "env.log").read_text() and "torch" in (folder / "env.log").read_text()
    # What the device tool brings back: the summary, and the whole folder in one archive.
    assert (out / "gpu-check-summary.txt").read_text() == summary
    with tarfile.open(out / "gpu-check.tar.gz") as archive:
        names = set(archive.getnames())
    assert {"check/summary.txt", "check/steps.tsv", "check/gpu-tests.xml", "check/benchmark/benchmark-tiny.json",
            "check/probe.json", "check/tests.log"} <= names


@pytest.mark.slow
def test_a_step_over_its_limit_is_recorded_as_timed_out_and_the_next_steps_run(tmp_path):
    result = check("--dry-run", "--out", str(tmp_path / "check"), STEPS="imports deps", BUDGET_IMPORTS="1")
    assert result.returncode == 1  # not every step that ran exited 0
    steps = [line.split("\t") for line in (tmp_path / "check" / "steps.tsv").read_text().splitlines()]
    assert steps[0][:2] == ["env", "skipped"] and steps[1][:2] == ["deps", "0"]
    assert steps[2] == ["imports", "124", steps[2][2], "1", "timed out after 1 s"]
    assert [step[0] for step in steps] == ["env", "deps", "imports", "tests", "benchmark", "levers", "probe", "study"]
    rows = summary_rows((tmp_path / "check" / "summary.txt").read_text())
    assert rows["imports"][0] == "exit 124 (timed out)" and rows["benchmark"] == ["skipped", "0 s", "not in STEPS"]


@pytest.mark.slow
def test_a_benchmark_stopped_by_a_time_limit_keeps_the_figures_it_measured(tmp_path):
    """benchmark.py writes its JSON after each model: stopped (SIGTERM, as `timeout` stops it) in
    the second model, the first model's figures are on disk, whole."""
    import signal
    import time

    out = tmp_path / "benchmark-tiny.json"
    process = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "benchmark.py"), "--mode", "tiny",
                                "--models", "alexnet", "vgg16", "--repeats", "1", "--images", "32", "--workers", "0",
                                "--out", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600
        while not out.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    finally:
        process.kill()
    assert process.returncode == -signal.SIGTERM  # stopped before its end
    saved = json.loads(out.read_text())
    assert [row["model"] for row in saved["pipelines"]] == ["alexnet"]
    assert saved["pipelines"][0]["device_images_per_second"] > 0
