"""A non-editable install carries its configs and runs from any directory."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_non_editable_install_runs_from_another_directory(tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "uv", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
                    "--python", sys.executable, str(REPO)], check=True, capture_output=True, text=True, timeout=300)
    installed_conf = target / "transferlab" / "conf"
    assert (installed_conf / "config.yaml").is_file() and not installed_conf.is_symlink()
    assert (installed_conf / "model" / "alexnet.yaml").is_file()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}  # ahead of the editable install of this checkout
    where = subprocess.run([sys.executable, "-c", "import transferlab; print(transferlab.__file__)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, check=True)
    assert where.stdout.strip().startswith(str(target))
    run = subprocess.run(
        [sys.executable, "-m", "transferlab.cli", "train", "data=synthetic", "data.image_size=32", "data.num_train=64",
         "data.num_test=32", "model.pretrained=false", "train.epochs=1", "device=cpu", "progress=off"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert len(list((elsewhere / "outputs" / "runs").glob("*/run.json"))) == 1
