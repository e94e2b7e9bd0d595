"""The `transferlab` command run as a user runs it, in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TRANSFERLAB = str(Path(sys.executable).parent / "transferlab")  # the installed console script


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a `transferlab` subprocess: this one, without HYDRA_FULL_ERROR (which
    would show Hydra's tracebacks instead of transferlab's one-line errors)."""
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env.update(extra)
    return env


def transferlab(*args: str, cwd: Path, timeout: int = 600, **env: str) -> subprocess.CompletedProcess:
    """Run the `transferlab` command as a user would, and wait for it."""
    return subprocess.run([TRANSFERLAB, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=cli_env(**env))


def start_transferlab(*args: str, cwd: Path, **env: str) -> subprocess.Popen:
    """Start the `transferlab` command in the background; its stdout and stderr are one pipe."""
    return subprocess.Popen([TRANSFERLAB, *args], cwd=cwd, env=cli_env(**env), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
