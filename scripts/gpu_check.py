"""The Python half of scripts/gpu-check.sh: which carried wheels a machine needs, and the summary.

    python scripts/gpu_check.py needs WHEEL_DIR      # the wheels to install: one path a line
    python scripts/gpu_check.py summary OUT_DIR      # the table of targets against figures

``needs`` reads the requirements from pyproject.toml (the dependencies, the timm extra and pytest)
and prints the wheels of WHEEL_DIR that satisfy the ones this Python does not meet, with the
requirements of those wheels in turn; it reports each unmet requirement that no wheel meets on
stderr. It imports nothing outside the standard library but ``packaging`` (or pip's copy of it), so
that it runs before anything is installed.

``summary`` reads what the check wrote (steps.tsv, the JUnit XML, the benchmarks' JSON) and prints
one table: each step's exit, each target of docs/performance.md against its figure. It never
fails on a missing or partial file: a part that did not run says so.
"""

from __future__ import annotations

import json
import re
import sys
import tomllib
import xml.etree.ElementTree as ElementTree
from importlib import metadata
from pathlib import Path
from zipfile import ZipFile

try:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
except ImportError:  # pip carries its own copy
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]

# Training images/s of the device pipeline (224 px, batch 64, bf16, one H100), issue 30's targets.
THROUGHPUT_TARGETS = {"resnet18": 10_000, "vgg16": 3_000, "alexnet": 20_000}
RATIO_TARGET = 5.0  # the device pipeline over the reference pipeline
STUDY_TARGET_SECONDS = 600.0  # the whole 12-run study
STUDY_RUNS = 12


# --- which wheels ------------------------------------------------------------------------------------

def project_requirements(pyproject: Path = ROOT / "pyproject.toml") -> list[Requirement]:
    """What transferlab needs to run and to run its tests: its dependencies, the timm extra (timm,
    peft, safetensors) and pytest, as pyproject.toml says."""
    project = tomllib.loads(pyproject.read_text())["project"]
    extras = project["optional-dependencies"]
    pytest = [spec for spec in extras["test"] if canonicalize_name(Requirement(spec).name) == "pytest"]
    return [Requirement(spec) for spec in [*project["dependencies"], *extras["timm"], *pytest]]


def is_met(requirement: Requirement) -> bool:
    try:
        installed = metadata.version(requirement.name)
    except metadata.PackageNotFoundError:
        return False
    return requirement.specifier.contains(installed, prereleases=True)


def wheel_name_version(wheel: Path) -> tuple[str, str]:
    name, version = wheel.name.split("-")[:2]
    return canonicalize_name(name), version


def wheel_requirements(wheel: Path) -> list[Requirement]:
    """The requirements a wheel declares for this Python (extras' left out)."""
    with ZipFile(wheel) as archive:
        [name] = [n for n in archive.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n)]
        lines = archive.read(name).decode().splitlines()
    requirements = []
    for line in lines:
        if line.startswith("Requires-Dist:"):
            requirement = Requirement(line.partition(":")[2].strip())
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                requirements.append(requirement)
        elif not line.strip():
            break  # the headers end at the first empty line
    return requirements


def needed_wheels(wheel_dir: Path, requirements: list[Requirement]) -> tuple[list[Path], list[str]]:
    """(the wheels to install, the unmet requirements no wheel meets), following each chosen wheel's
    own requirements."""
    wheels = {wheel_name_version(w)[0]: w for w in sorted(wheel_dir.glob("*.whl"))} if wheel_dir.is_dir() else {}
    chosen: dict[str, Path] = {}
    missing: dict[str, str] = {}  # name: the first unmet requirement of that name
    pending = list(requirements)
    while pending:
        requirement = pending.pop(0)
        name = canonicalize_name(requirement.name)
        if name in chosen or name in missing or is_met(requirement):
            continue
        wheel = wheels.get(name)
        if wheel is None or not requirement.specifier.contains(wheel_name_version(wheel)[1], prereleases=True):
            missing[name] = str(requirement)
            continue
        chosen[name] = wheel
        pending += wheel_requirements(wheel)
    return list(chosen.values()), list(missing.values())


# --- the summary -------------------------------------------------------------------------------------

def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def read_steps(out_dir: Path) -> list[dict]:
    """steps.tsv: name, exit (a number or 'skipped'), seconds, budget, note."""
    rows = []
    path = out_dir / "steps.tsv"
    for line in path.read_text().splitlines() if path.exists() else []:
        name, status, seconds, budget, note = (line.split("\t") + [""] * 5)[:5]
        rows.append({"name": name, "status": status, "seconds": seconds, "budget": budget, "note": note})
    return rows


def test_counts(junit: Path) -> dict[str, int] | None:
    """passed, failed (failures and errors) and skipped of a JUnit XML file; None without one."""
    try:
        root = ElementTree.parse(junit).getroot()
    except (OSError, ElementTree.ParseError):
        return None
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    for case in root.iter("testcase"):
        outcome = {child.tag for child in case}
        if outcome & {"failure", "error"}:
            counts["failed"] += 1
        elif "skipped" in outcome:
            counts["skipped"] += 1
        else:
            counts["passed"] += 1
    return counts


def verdict(met: bool | None, dry_run: bool) -> str:
    if met is None:
        return "not measured"
    if dry_run:
        return "n/a (dry run)"
    return "met" if met else "NOT MET"


def target_rows(out_dir: Path, dry_run: bool) -> list[tuple[str, str, str, str]]:
    """(what, target, figure, verdict) for each target, from the benchmarks' JSON."""
    mode = "tiny" if dry_run else "gpu"
    bench = read_json(out_dir / "benchmark" / f"benchmark-{mode}.json")
    rows = []
    pipelines = {row["model"]: row for row in bench.get("pipelines", [])}
    for model, target in THROUGHPUT_TARGETS.items():
        row = pipelines.get(model, {})
        figure = row.get("device_images_per_second")
        rows.append((f"{model} training img/s", f">= {target:,}", "-" if figure is None else f"{figure:,.0f}",
                     verdict(None if figure is None else figure >= target, dry_run)))
    for model in THROUGHPUT_TARGETS:
        ratio = pipelines.get(model, {}).get("ratio_device_over_reference")
        rows.append((f"{model} device / reference", f">= {RATIO_TARGET:g}x", "-" if ratio is None else f"{ratio:.2f}x",
                     verdict(None if ratio is None else ratio >= RATIO_TARGET, dry_run)))
    for model in THROUGHPUT_TARGETS:
        compiled = pipelines.get(model, {}).get("device+compile_images_per_second")
        if compiled is not None:
            rows.append((f"{model} compiled img/s", "-", f"{compiled:,.0f}", ""))
    if "whole_run_seconds" in bench:
        rows.append(("one protocol run (ResNet18)", "-", f"{bench['whole_run_seconds']:,.1f} s", ""))
    study_bench = read_json(out_dir / "study" / f"benchmark-{mode}.json") or bench
    done = study_bench.get("study_run_seconds")
    if "study_seconds" in study_bench:
        seconds = study_bench["study_seconds"]
        rows.append(("the 12-run study", f"< {STUDY_TARGET_SECONDS / 60:g} min", f"{seconds / 60:,.1f} min",
                     verdict(seconds < STUDY_TARGET_SECONDS, dry_run)))
    elif done:
        spent = sum(done)
        over = spent >= STUDY_TARGET_SECONDS
        rows.append(("the 12-run study", f"< {STUDY_TARGET_SECONDS / 60:g} min",
                     f"stopped after {len(done)} of {STUDY_RUNS} runs, {spent / 60:,.1f} min",
                     verdict(False if over else None, dry_run)))
    else:
        rows.append(("the 12-run study", f"< {STUDY_TARGET_SECONDS / 60:g} min", "-", verdict(None, dry_run)))
    probe = read_json(out_dir / "probe.json").get("runs", {})
    for name in ("cached, cold", "cached, warm", "L-BFGS, cold"):
        if "speedup" in probe.get(name, {}):
            rows.append((f"probe {name} vs in the loop", "-", f"{probe[name]['speedup']}x", ""))
    return rows


def table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    lines = [header, tuple("-" * w for w in widths), *rows]
    return "\n".join("  ".join(str(cell).ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines)


def summary(out_dir: Path) -> str:
    dry_run = (out_dir / "DRY_RUN").exists()
    steps = read_steps(out_dir)
    step_rows = [(s["name"], s["status"] if s["status"] == "skipped" else f"exit {s['status']}"
                  + (" (timed out)" if s["status"] in ("124", "137") else ""),
                  f"{s['seconds']} s / {s['budget']} s" if s["budget"] else f"{s['seconds']} s", s["note"])
                 for s in steps]
    counts = test_counts(out_dir / "gpu-tests.xml")
    tests = ("no JUnit XML" if counts is None
             else f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped")
    parts = [("GPU CHECK, DRY RUN on the CPU: tiny sizes, figures are no measurement" if dry_run
              else "GPU CHECK"), "", table(("step", "exit", "time / budget", "note"), step_rows), "",
             f"gpu tests: {tests}", "",
             table(("target", "wanted", "figure", "verdict"), target_rows(out_dir, dry_run))]
    return "\n".join(parts) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("needs", "summary"):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    if argv[0] == "needs":
        wheels, missing = needed_wheels(Path(argv[1]), project_requirements())
        for requirement in missing:
            print(f"unmet, and no wheel carried for it: {requirement}", file=sys.stderr)
        print("\n".join(map(str, wheels)))
        return 1 if missing else 0
    print(summary(Path(argv[1])), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
