"""Hydra's launchers (the optional `cluster` extra), and one GPU per run on a multi-GPU machine."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import transferlab.gpus as gpus
import transferlab.devices as devices_module

from helpers import DRY_RUN, compose_config, start_transferlab, transferlab


@pytest.mark.parametrize("launcher", [["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10"],
                                      ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]],
                         ids=["submitit_local", "joblib"])
@pytest.mark.slow
def test_a_sweep_runs_through_a_parallel_launcher(tmp_path, launcher):
    command = start_transferlab("train", "-m", "experiment=part_c", "freeze=none,last_only", *DRY_RUN, *launcher,
                                cwd=tmp_path)
    output, _ = command.communicate(timeout=600)
    assert command.returncode == 0, output
    records = [json.loads(p.read_text()) for p in (tmp_path / "outputs" / "part_c").glob("*/run.json")]
    assert sorted(r["freeze"] for r in records) == ["last_only", "none"]
    assert all(r["status"] == "completed" for r in records)
    assert "2 run(s) ran, 0 did not complete" in output
    # The launcher ran them, not Hydra's basic launcher inside the command's own process.
    assert all(r["pid"] != command.pid for r in records), [r["pid"] for r in records]


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


@pytest.mark.slow
def test_a_missing_launcher_says_what_to_install(tmp_path):
    result = transferlab("train", "hydra/launcher=ray", cwd=tmp_path)
    assert result.returncode == 1
    assert "Could not find 'hydra/launcher/ray'" in result.stderr
    assert "pip install 'transferlab[cluster]'" in result.stderr


@pytest.mark.slow
def test_each_process_claims_a_different_gpu(tmp_path):
    code = ("import sys, time; from pathlib import Path; from transferlab.gpus import try_claim; "
            "claim = try_claim(['GPU-a', 'GPU-b'], Path(sys.argv[1])); print(claim[0] if claim else 'none', "
            "flush=True); time.sleep(30 if claim else 0)")
    holders = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
               for _ in range(2)]
    try:
        claimed = sorted(holder.stdout.readline().strip() for holder in holders)
        assert claimed == ["0", "1"]
        third = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
        assert third.stdout.strip() == "none"  # both GPUs are held
        holders[0].kill()
        holders[0].wait()
        assert gpus.try_claim(["GPU-a", "GPU-b"], tmp_path) is not None  # released with the killed process
    finally:
        for holder in holders:
            holder.kill()


def test_a_gpu_lock_follows_the_gpu_not_its_index(tmp_path):
    # Under CUDA_VISIBLE_DEVICES=1 a run sees GPU b as its GPU 0; a run that sees both must still get a.
    held = gpus.try_claim(["GPU-b"], tmp_path)
    assert held is not None and held[0] == 0
    claim = gpus.try_claim(["GPU-a", "GPU-b"], tmp_path)
    assert claim is not None and claim[0] == 0  # index 0 of this view is GPU a, which nobody holds
    assert gpus.try_claim(["GPU-b", "GPU-a"], tmp_path) is None  # both held, whatever their order here


def test_gpu_locks_live_in_one_folder_whatever_tmpdir_says(monkeypatch, tmp_path):
    monkeypatch.delenv(gpus.LOCK_DIR_ENV, raising=False)
    folders = set()
    for tmpdir in ("/var/tmp", str(tmp_path)):  # Slurm gives every job its own TMPDIR
        monkeypatch.setenv("TMPDIR", tmpdir)
        monkeypatch.setattr(tempfile, "tempdir", None)  # forget the cached temp directory
        folders.add(gpus.default_lock_dir())
    assert len(folders) == 1
    monkeypatch.setenv(gpus.LOCK_DIR_ENV, str(tmp_path / "locks"))
    assert gpus.default_lock_dir() == tmp_path / "locks"


def test_runs_on_a_multi_gpu_machine_get_distinct_gpus(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: None)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: SimpleNamespace(uuid=f"uuid-{index}"))
    monkeypatch.setenv(gpus.LOCK_DIR_ENV, str(tmp_path))
    with devices_module.run_device("cuda") as first, devices_module.run_device("auto") as second:
        assert {first, second} == {torch.device("cuda", 0), torch.device("cuda", 1)}
    with devices_module.run_device("cuda") as again:
        assert again == torch.device("cuda", 0)  # released when the run ended
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with devices_module.run_device("cuda") as only:
        assert only == torch.device("cuda")  # one GPU: nothing to claim


# Three deterministic epochs of a few seconds each, so that a test can stop a sweep in the middle.
EPOCHS_OF_SECONDS = [*DRY_RUN, "data.num_train=1200", "data.num_test=200", "train.epochs=3", "train.batch_size=32"]


def wait_for_training(folder, count: int, process: subprocess.Popen, timeout: float = 300) -> list[dict]:
    """The records of ``count`` runs under ``folder`` once each has finished an epoch."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read()
        records = []
        for run_json in folder.glob("*/run.json"):
            try:
                records.append(json.loads(run_json.read_text()))
            except json.JSONDecodeError:
                pass  # being replaced this instant
        if sum(bool(r["history"]) for r in records) >= count:
            return records
        time.sleep(0.1)
    process.kill()
    raise AssertionError(f"{count} runs did not finish an epoch in time")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2][:3]


def wait_until_gone(pids, timeout: float = 60) -> list[int]:
    """The pids still alive after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    return [pid for pid in pids if alive(pid)]


def start_joblib_sweep(tmp_path: Path, name: str) -> tuple[subprocess.Popen, Path, set[int]]:
    """A 3-run sweep (seed=1,2,3) in 2 joblib workers, once both workers train: (the sweep's
    process, its folder, the workers' pids)."""
    sweep = start_transferlab("train", "-m", *EPOCHS_OF_SECONDS, f"name={name}", "seed=1,2,3",
                              "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", cwd=tmp_path)
    folder = tmp_path / "outputs" / name
    return sweep, folder, {r["pid"] for r in wait_for_training(folder, 2, sweep)}


@pytest.mark.slow
def test_sigterm_to_a_joblib_sweep_stops_its_workers_marks_their_runs_interrupted_and_says_so(tmp_path):
    sweep, folder, workers = start_joblib_sweep(tmp_path, "term")
    sweep.send_signal(signal.SIGTERM)
    output, _ = sweep.communicate(timeout=300)
    assert sweep.returncode == 128 + signal.SIGTERM, output
    assert f"SIGTERM: stopping the sweep: its 2 worker process(es) (pid {', '.join(map(str, sorted(workers)))}) mark " \
           "their runs interrupted and start no further job" in output
    assert "transferlab train: interrupted; the runs of the sweep in outputs/term that were training are marked " \
           "interrupted" in output
    assert "3 run(s) ran, 3 did not complete" in output
    assert output.count("(interrupted: interrupted by a signal; run the same command again to resume)") == 2
    assert output.count("(interrupted: the sweep was stopped (SIGTERM); run the same command again to run it)") == 1
    records = {p.parent.name: json.loads(p.read_text()) for p in folder.glob("*/run.json")}
    assert sorted(r["seed"] for r in records.values()) == [1, 2]  # seed=3 never started
    assert all(r["status"] == "interrupted" and r["history"] for r in records.values())
    assert not wait_until_gone(workers, timeout=30)  # no orphan trains on

    again = transferlab("train", "-m", *EPOCHS_OF_SECONDS, "name=term", "seed=1,2,3", "hydra/launcher=joblib",
                        "hydra.launcher.n_jobs=2", cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.count("resuming from") == 2
    records = [json.loads(p.read_text()) for p in folder.glob("*/run.json")]
    assert [r["status"] for r in records] == ["completed"] * 3


@pytest.mark.slow
def test_the_workers_of_a_killed_joblib_sweep_stop_and_mark_their_runs_interrupted(tmp_path):
    sweep, folder, workers = start_joblib_sweep(tmp_path, "orphans")
    sweep.kill()  # SIGKILL: the sweep's process can tell nobody
    sweep.communicate(timeout=60)
    assert not wait_until_gone(workers, timeout=120)
    records = [json.loads(p.read_text()) for p in folder.glob("*/run.json")]
    assert sorted((r["seed"], r["status"]) for r in records) == [(1, "interrupted"), (2, "interrupted")]


def test_only_children_of_the_sweeps_process_on_its_host_take_themselves_for_its_workers(monkeypatch):
    """A Slurm job inherits the sweep's environment too, but runs on another node (or under
    slurmstepd): it must keep Slurm's own signal handling."""
    import platform

    from transferlab import workers

    monkeypatch.setattr(workers, "_worker", None)
    node = platform.node()
    for sweep in (f"other-node {os.getppid()}", f"{node} {os.getpid()}", f"{node} {os.getppid() + 1}", ""):
        monkeypatch.setenv(workers.SWEEP_ENV, sweep)
        assert workers.worker_stop() is None, sweep
