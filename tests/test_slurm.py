"""hydra/launcher=slurm: against a real Slurm, a one-node cluster on this machine started by
scripts/slurm-cluster.sh (CI does), skipped with the reason where there is none; and its parts."""

import json
import re
import shutil
import socket
import subprocess
import time
from types import SimpleNamespace

import pytest

pytest.importorskip("submitit")  # the `cluster` extra, which the `test` extra includes

import transferlab.slurm as slurm
from transferlab.errors import TransferlabError
from transferlab.slurm import NEVER_CLEARS, NodeSize, gpu_count, never_starts_line, parse_nodes

from helpers import DRY_RUN, start_transferlab, transferlab

FITS = ["hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1", "hydra.launcher.gpus_per_node=0",
        "hydra.launcher.timeout_min=10"]


def local_cluster() -> tuple[list[NodeSize], str]:
    """(this machine as a Slurm node, '') or ([], why the Slurm tests cannot run here)."""
    if shutil.which("sbatch") is None:
        return [], "Slurm is not installed; scripts/slurm-cluster.sh installs and starts a one-node cluster"
    nodes = subprocess.run(["sinfo", "-h", "-N", "-o", "%N|%c|%m|%G"], capture_output=True, text=True)
    if nodes.returncode != 0:
        return [], f"no Slurm controller answers ({nodes.stderr.strip()}); start one with scripts/slurm-cluster.sh"
    names = {line.split("|", 1)[0] for line in nodes.stdout.splitlines()}
    if names != {socket.gethostname().split(".")[0]}:
        return [], "the Slurm cluster is not this machine alone (its jobs must see this machine's files)"
    return parse_nodes("\n".join(line.split("|", 1)[1] for line in nodes.stdout.splitlines())), ""


NODES, NO_CLUSTER = local_cluster()


def submitted_jobs(sweep_dir) -> set[str]:
    """The Slurm jobs submitit submitted for a sweep (it names a folder after each)."""
    return {path.name for path in (sweep_dir / ".submitit").glob("*_*") if re.fullmatch(r"\d+_\d+", path.name)}


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.skipif(not NODES, reason=NO_CLUSTER)
def test_a_sweep_runs_as_slurm_jobs(tmp_path):
    command = start_transferlab("train", "-m", "experiment=part_c", "freeze=none,last_only", *DRY_RUN,
                                "hydra/launcher=slurm", *FITS, cwd=tmp_path)
    output, _ = command.communicate(timeout=300)
    assert command.returncode == 0, output
    sweep_dir = tmp_path / "outputs" / "part_c"
    records = [json.loads(path.read_text()) for path in sweep_dir.glob("*/run.json")]
    assert sorted(r["freeze"] for r in records) == ["last_only", "none"]
    assert all(r["status"] == "completed" for r in records)
    # Each run executed inside one of the two Slurm jobs the command submitted, not in the command.
    assert sorted(r["slurm_job_id"] for r in records) == sorted(submitted_jobs(sweep_dir))
    assert len({r["slurm_job_id"] for r in records}) == 2
    assert all(r["pid"] != command.pid for r in records)


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.skipif(not NODES, reason=NO_CLUSTER)
def test_a_request_no_node_can_meet_stops_with_one_line(tmp_path):
    too_many = max(node.cpus for node in NODES) + 1  # Slurm keeps such a job pending (PartitionConfig)
    started = time.monotonic()
    try:
        result = transferlab("train", "-m", "experiment=part_c", "freeze=none,last_only", *DRY_RUN,
                             "hydra/launcher=slurm", *FITS, f"hydra.launcher.cpus_per_task={too_many}",
                             cwd=tmp_path, timeout=120)
    finally:
        submitted = submitted_jobs(tmp_path / "outputs" / "part_c")
        if submitted:  # never leave jobs behind, even when the test fails
            subprocess.run(["scancel", *{job.split("_")[0] for job in submitted}], capture_output=True)
    assert time.monotonic() - started < 120
    assert result.returncode == 1
    assert result.stderr.splitlines() == [result.stderr.strip()], result.stderr  # one line
    assert result.stderr.startswith("transferlab train: error: Slurm can never start job ")
    assert "reason PartitionConfig" in result.stderr
    assert f"lower hydra.launcher.cpus_per_task={too_many} (a node has at most " in result.stderr
    assert "cancelled the sweep's 2 job(s)" in result.stderr
    assert len(submitted) == 2
    queued = subprocess.run(["squeue", "-h", "-r", "-j", ",".join({job.split("_")[0] for job in submitted})],
                            capture_output=True, text=True)
    assert queued.stdout.strip() == ""  # the command cancelled its jobs


def test_the_stop_line_names_the_key_behind_the_reason():
    nodes = parse_nodes("64|515000|gpu:a100:4(S:0-1),nic:1\n32|256000|(null)")
    assert nodes == [NodeSize(64, 515000, 4), NodeSize(32, 256000, 0)]
    assert gpu_count("gpu:2,gpu:v100:1") == 3
    request = {"cpus_per_task": 8, "mem_gb": 600, "gpus_per_node": 1, "tasks_per_node": 1}
    line = never_starts_line("Slurm can never start job 7_0", NEVER_CLEARS["PartitionConfig"], request, nodes, 3)
    assert line == ("Slurm can never start job 7_0: lower hydra.launcher.mem_gb=600 (a node has at most 502.9 GB); "
                    "cancelled the sweep's 3 job(s)")
    # A partition limit that fits every node: the keys that may be behind it.
    line = never_starts_line("x", NEVER_CLEARS["PartitionConfig"], {"cpus_per_task": 8}, nodes, 0)
    assert line == "x: change hydra.launcher.cpus_per_task, mem_gb, gpus_per_node or partition"
    line = never_starts_line("x", NEVER_CLEARS["QOSMaxWallDurationPerJobLimit"], request, nodes, 0)
    assert line == "x: change hydra.launcher.timeout_min"


def test_a_job_that_left_the_queue_without_a_result_ends_the_wait(tmp_path, monkeypatch):
    # Without accounting (sacct), submitit itself would wait for such a job forever.
    monkeypatch.setattr(slurm, "queued_jobs", lambda array_ids: [])  # squeue no longer lists it
    monkeypatch.setattr(slurm, "FINISHED_RESULT_GRACE_SECONDS", 0.0)
    paths = SimpleNamespace(result_pickle=tmp_path / "7_1_0_result.pkl", stderr=tmp_path / "7_1_0_log.err")
    with pytest.raises(TransferlabError, match=r"^Slurm job 7_1 ended without a result .*7_1_0_log\.err$"):
        slurm.wait_while_startable([SimpleNamespace(job_id="7_1", paths=paths)], {})
