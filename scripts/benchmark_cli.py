"""Command-line latency: how long `transferlab` takes to answer a Tab press, `train --help` and
`train --cfg job`, and whether answering imported torch (which alone costs seconds on a small
machine). Nothing here trains or writes outside a temporary folder.

    python scripts/benchmark_cli.py            # median of 5 runs of each command
    python scripts/benchmark_cli.py --runs 9 --transferlab .venv/bin/transferlab

Each command runs --runs times as a subprocess of its own (a fresh interpreter, as from the shell)
and the median wall time is printed; then once more with PYTHONPROFILEIMPORTTIME=1 (Python's
`-X importtime`), which is not timed, to tell whether torch or torchvision was imported. The Tab
press is what Hydra's installed bash script does: `transferlab -sc query=bash` with COMP_LINE set
to the line typed so far. The load average is printed before and after: the figures mean little
on a busy machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

# (what is measured, the arguments after `transferlab`, extra environment)
COMMANDS = (
    ("Tab after `transferlab train model=v`", ["-sc", "query=bash"], {"COMP_LINE": "transferlab train model=v"}),
    ("transferlab train --help", ["train", "--help"], {}),
    ("transferlab train --cfg job", ["train", "--cfg", "job"], {}),
)
HEAVY_MODULES = ("torch", "torchvision")


def environment(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "PYTHONPROFILEIMPORTTIME")}
    env.update(extra)
    return env


def run_seconds(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    """Wall seconds of one run of ``argv``; a failing command stops the benchmark."""
    start = time.perf_counter()
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"benchmark_cli: {' '.join(argv)} failed (exit {result.returncode}): {result.stderr.strip()}")
    return seconds


def imported_heavy_modules(argv: list[str], env: dict[str, str], cwd: Path) -> list[str]:
    """Which of HEAVY_MODULES one run of ``argv`` imported, read from Python's import-time report
    (one line a module: `import time: self | cumulative | <indent>name`)."""
    result = subprocess.run(argv, cwd=cwd, env={**env, "PYTHONPROFILEIMPORTTIME": "1"}, capture_output=True,
                            text=True)
    imported = {line.rpartition("|")[2].strip() for line in result.stderr.splitlines()
                if line.startswith("import time:")}
    return [name for name in HEAVY_MODULES if name in imported]


def load_average() -> str:
    return " ".join(f"{load:.2f}" for load in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of each command (default 5); the median is printed")
    parser.add_argument("--transferlab", default=str(Path(sys.executable).parent / "transferlab"),
                        help="the console script (default: the one beside this Python)")
    options = parser.parse_args()
    if options.runs < 1:
        parser.error(f"--runs={options.runs} is not allowed; it must be >= 1")

    print(f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.machine()}, {os.cpu_count()} CPU cores, "
          f"Python {platform.python_version()}; {options.transferlab}")
    print(f"load average (1, 5, 15 min) before: {load_average()}")
    print(f"{'command':<40} {'median s':>9} {'min s':>7} {'max s':>7}  imports")
    with tempfile.TemporaryDirectory() as folder:
        cwd = Path(folder)
        for label, args, extra in COMMANDS:
            argv, env = [options.transferlab, *args], environment(extra)
            seconds = [run_seconds(argv, env, cwd) for _ in range(options.runs)]
            heavy = imported_heavy_modules(argv, env, cwd)
            print(f"{label:<40} {statistics.median(seconds):9.2f} {min(seconds):7.2f} {max(seconds):7.2f}  "
                  f"{', '.join(heavy) if heavy else 'no torch'}")
    print(f"load average (1, 5, 15 min) after: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
