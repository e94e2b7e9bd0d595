#!/usr/bin/env bash
# Creates .venv/ in the repository with transferlab (editable) and its test tools.
# Needs Python 3.10+ (set PYTHON to choose one) and access to PyPI. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip --version >/dev/null 2>&1 || .venv/bin/python -m ensurepip --upgrade >/dev/null
# uv resolves and installs the PyTorch stack far faster than pip.
.venv/bin/python -m pip install --quiet --disable-pip-version-check uv
# --compile-bytecode: every test starts fresh Python processes, and torch imports 3x faster compiled.
.venv/bin/python -m uv pip install --quiet --compile-bytecode --python .venv/bin/python -e ".[test]"
echo "transferlab is installed in .venv/ ($(.venv/bin/python -c 'import transferlab; print(transferlab.__version__)'))"
