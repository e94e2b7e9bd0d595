"""Hydra's launchers (the optional `cluster` extra), and one GPU per run on a multi-GPU machine."""

import json
import subprocess
import sys

import pytest
import torch

import transferlab.gpus as gpus
import transferlab.run as run_module

from conftest import compose_config, transferlab

DRY_RUN = ["data=synthetic", "data.image_size=32", "data.num_train=48", "data.num_test=24", "train.epochs=1",
           "model.pretrained=false", "device=cpu", "progress=off"]


@pytest.mark.parametrize("launcher", [["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10"],
                                      ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]],
                         ids=["submitit_local", "joblib"])
def test_a_sweep_runs_through_a_parallel_launcher(tmp_path, launcher):
    result = transferlab("train", "-m", "experiment=part_c", "freeze=none,last_only", *DRY_RUN, *launcher, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    records = [json.loads(p.read_text()) for p in (tmp_path / "outputs" / "part_c").glob("*/run.json")]
    assert sorted(r["freeze"] for r in records) == ["last_only", "none"]
    assert all(r["status"] == "completed" for r in records)
    assert "2 run(s) ran, 0 did not complete" in result.stdout + result.stderr


def test_slurm_launcher_config_is_what_sbatch_needs(tmp_path, monkeypatch):
    submitit = pytest.importorskip("submitit")
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", lambda *args: 1)  # as if srun were installed
    cfg = compose_config(["experiment=part_b", "hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                          "hydra.launcher.timeout_min=90"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.partition, launcher.timeout_min, launcher.gpus_per_node, launcher.array_parallelism) == (
        "gpu", 90, 1, 12)
    assert launcher.max_num_timeout == 3
    # Hand the settings to submitit the way the plugin does, and read the sbatch script it writes.
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from omegaconf import OmegaConf

    params = {k: v for k, v in OmegaConf.to_container(launcher, resolve=False).items()
              if k not in ("_target_", "submitit_folder", "max_num_timeout", "name")}
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor = submitit.AutoExecutor(folder=str(tmp_path), cluster="slurm", slurm_max_num_timeout=3)
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    script = executor._executor._make_submission_file_text("python -m job", "0")
    for line in ("#SBATCH --partition=gpu", "#SBATCH --time=90", "#SBATCH --gpus-per-node=1",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --mem=32GB", "#SBATCH --signal=USR2@120"):
        assert line in script, script


def test_a_missing_launcher_says_what_to_install(tmp_path):
    result = transferlab("train", "hydra/launcher=ray", cwd=tmp_path)
    assert result.returncode == 1
    assert "Could not find 'hydra/launcher/ray'" in result.stderr
    assert "pip install 'transferlab[cluster]'" in result.stderr


def test_each_process_claims_a_different_gpu(tmp_path):
    code = ("import sys, time; from pathlib import Path; from transferlab.gpus import try_claim; "
            "claim = try_claim(2, Path(sys.argv[1])); print(claim[0] if claim else 'none', flush=True); "
            "time.sleep(30 if claim else 0)")
    holders = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
               for _ in range(2)]
    try:
        claimed = sorted(holder.stdout.readline().strip() for holder in holders)
        assert claimed == ["0", "1"]
        third = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
        assert third.stdout.strip() == "none"  # both GPUs are held
        holders[0].kill()
        holders[0].wait()
        assert gpus.try_claim(2, tmp_path) is not None  # a killed run's claim is released with its process
    finally:
        for holder in holders:
            holder.kill()


def test_runs_on_a_multi_gpu_machine_get_distinct_gpus(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: None)
    monkeypatch.setattr(gpus, "default_lock_dir", lambda: tmp_path)
    with run_module._run_device("cuda") as first, run_module._run_device("auto") as second:
        assert {first, second} == {torch.device("cuda", 0), torch.device("cuda", 1)}
    with run_module._run_device("cuda") as again:
        assert again == torch.device("cuda", 0)  # released when the run ended
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with run_module._run_device("cuda") as only:
        assert only == torch.device("cuda")  # one GPU: nothing to claim
