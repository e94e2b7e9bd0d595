#!/usr/bin/env python
"""How long `transferlab study digits` takes, start to report, in a fresh folder (no run done before).

    .venv/bin/python scripts/benchmark_digits.py [--keep DIR] [--save docs/results/digits] [-- OVERRIDES ...]

Prints the wall time, the machine (CPU cores, load average before and after: a shared machine is
slower) and the date. --save copies the report's tables of the study and a timing.json there: what
scripts/readme_results.py turns into the README's Results table. The runs are in a temporary folder
(or --keep DIR), removed afterwards unless --keep is given.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMAND = ["transferlab", "study", "digits"]
SAVED = ("digits.csv", "digits-differences.csv", "digits_pretrain.csv", "report.md")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", metavar="DIR", help="run in DIR (must not exist yet) and keep it")
    parser.add_argument("--save", metavar="DIR", help="copy the study's tables and timing.json into DIR")
    parser.add_argument("overrides", nargs="*", help="after --: overrides given to the study")
    options = parser.parse_args()
    if options.keep and Path(options.keep).exists():
        parser.error(f"--keep {options.keep}: it exists; give a new folder (the study must start from nothing)")
    work = Path(options.keep or tempfile.mkdtemp(prefix="transferlab-digits-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    executable = Path(sys.executable).with_name("transferlab")
    command = [str(executable), *COMMAND[1:], "progress=off", *options.overrides]
    load_before = os.getloadavg()
    start = time.perf_counter()
    finished = subprocess.run(command, cwd=work, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    load_after = os.getloadavg()
    summary = [line for line in finished.stdout.splitlines()[-12:] if line.startswith(("  K=", "transfer", "no ", "mixed"))]
    timing = {
        "command": " ".join([*COMMAND, *options.overrides]), "seconds": round(seconds, 1), "exit_code": finished.returncode,
        "date": datetime.date.today().isoformat(), "cpu_cores": os.cpu_count(), "machine": platform.machine(),
        "processor": _cpu_name(), "load_before": [round(x, 1) for x in load_before],
        "load_after": [round(x, 1) for x in load_after],
    }
    print(f"{timing['command']}: {seconds / 60:.1f} min ({seconds:.0f} s), exit code {finished.returncode}")
    print(f"machine: {timing['cpu_cores']} CPU cores ({timing['processor']}), load average before "
          f"{load_before[0]:.1f}, after {load_after[0]:.1f} (1 min); {timing['date']}")
    print("\n".join(summary))
    if finished.returncode != 0:
        print(finished.stderr[-3000:], file=sys.stderr)
    if options.save:
        target = Path(options.save)
        target.mkdir(parents=True, exist_ok=True)
        for name in SAVED:
            shutil.copyfile(work / "outputs" / "digits-report" / name, target / name)
        (target / "timing.json").write_text(json.dumps(timing, indent=2) + "\n", encoding="utf-8")
        print(f"saved: {target}")
    if not options.keep:
        shutil.rmtree(work, ignore_errors=True)
    return finished.returncode


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    sys.exit(main())
