"""logger=mlflow against the real MLflow: every run, sweep and failure read back with MlflowClient
from a real local store (outputs/.mlflow/, SQLite). MLflow's import and the making of its
database are slow, so the tests share one store."""

import json
import socket
import sys

import pytest

from transferlab.checkpoint import CHECKPOINT_FILE
from transferlab.errors import RunInterrupted
from transferlab.loggers import PARENT_RUN_ENV, MlflowLogger
from transferlab.records import read_record
from transferlab.report.reading import find_run_files, flatten
from transferlab.run import run_training

from helpers import tiny_config, transferlab

PER_EPOCH = ("train_loss", "train_acc", "test_loss", "test_acc", "images_per_second", "epoch_seconds")
SMALL = ["data.num_train=64", "data.num_test=32"]  # two batches an epoch: these tests need no learning
DRY_RUN = ["data=synthetic", "data.image_size=32", "data.num_train=48", "data.num_test=24", "train.epochs=1",
           "model.pretrained=false", "device=cpu", "progress=off", "logger=mlflow"]


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tracking")


@pytest.fixture
def client(store_dir, monkeypatch):
    """Runs of this test log to the shared folder's local store, as from `transferlab train` run there.
    MLflow is imported here, not at collection (where it took seconds of every fast tier)."""
    MlflowClient = pytest.importorskip("mlflow.tracking").MlflowClient
    monkeypatch.chdir(store_dir)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv(PARENT_RUN_ENV, raising=False)
    return MlflowClient(f"sqlite:///{store_dir}/outputs/.mlflow/mlflow.db")


def runs_of(client, experiment: str) -> list:
    found = client.get_experiment_by_name(experiment)
    return [] if found is None else client.search_runs([found.experiment_id])


def steps(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_a_run_is_one_mlflow_run_with_its_config_metrics_tags_and_files(client, tmp_path):
    overrides = ["train.epochs=2", "save_model=true", "logger=mlflow", "name=study_a"]
    record = run_training(tiny_config(*SMALL, *overrides), tmp_path, overrides)
    assert record["status"] == "completed", record.get("error")
    [tracked] = runs_of(client, "study_a")
    assert tracked.info.run_id == record["mlflow_run_id"] == read_record(tmp_path / "run.json")["mlflow_run_id"]
    assert tracked.info.status == "FINISHED"
    params = tracked.data.params
    assert params.keys() == flatten(record["config"]).keys()
    assert (params["data.fraction"], params["model.name"], params["model.pretrained"], params["optim.betas"]) == (
        "1.0", "resnet18", "false", "[0.9, 0.999]")
    for key in PER_EPOCH:
        assert steps(client, tracked.info.run_id, key) == [(e["epoch"], pytest.approx(e[key])) for e in record["history"]]
    tags = tracked.data.tags
    assert (tags["status"], tags["device"], tags["precision"]) == ("completed", "cpu", "fp32")
    assert tags["run_dir"] == str(tmp_path.resolve()) and "save_model=true" in tags["overrides"]
    assert {a.path for a in client.list_artifacts(tracked.info.run_id)} == {"run.json", "metrics.csv", "model.pt"}
    copy = client.download_artifacts(tracked.info.run_id, "run.json", str(tmp_path / "download"))
    assert json.loads(open(copy).read()) == read_record(tmp_path / "run.json")
    assert find_run_files(["outputs"], tmp_path / "report") == []  # the report never reads the store's copies


@pytest.mark.slow
def test_an_interrupted_run_is_killed_and_resumes_into_the_same_mlflow_run(client, tmp_path, monkeypatch):
    real_log_epoch = MlflowLogger.log_epoch

    def log_then_interrupt(self, entry):
        real_log_epoch(self, entry)
        raise KeyboardInterrupt  # Ctrl-C once epoch 1 is checkpointed and tracked

    config = tiny_config(*SMALL, "train.epochs=2", "logger=mlflow", "name=study_b")
    with monkeypatch.context() as patch:
        patch.setattr(MlflowLogger, "log_epoch", log_then_interrupt)
        with pytest.raises(RunInterrupted):
            run_training(config, tmp_path)
    [interrupted] = runs_of(client, "study_b")
    assert interrupted.info.status == "KILLED" and interrupted.data.tags["status"] == "interrupted"
    assert [step for step, _ in steps(client, interrupted.info.run_id, "test_acc")] == [1]

    # The tracking server is down: the run stops before training, keeping its MLflow run id and checkpoint.
    with monkeypatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{closed_port()}")
        patch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        patch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
        unreachable = run_training(config, tmp_path)
    assert unreachable["status"] == "failed" and unreachable["params_total"] is None  # no model was even built
    assert "\n" not in unreachable["error"]
    assert unreachable["error"].startswith("logger=mlflow: cannot use the MLflow tracking store http://127.0.0.1:")
    assert "Connection refused" in unreachable["error"] and "or pass logger=none" in unreachable["error"]
    assert read_record(tmp_path / "run.json")["mlflow_run_id"] == interrupted.info.run_id
    assert (tmp_path / CHECKPOINT_FILE).exists()

    resumed = run_training(config, tmp_path)
    assert resumed["status"] == "completed" and resumed["resumed_after_epoch"] == 1
    [tracked] = runs_of(client, "study_b")  # still one MLflow run
    assert tracked.info.run_id == interrupted.info.run_id == resumed["mlflow_run_id"]
    assert tracked.info.status == "FINISHED" and tracked.data.tags["status"] == "completed"
    assert [step for step, _ in steps(client, tracked.info.run_id, "test_acc")] == [1, 2]


@pytest.mark.slow
def test_a_failed_run_ends_failed_with_its_record(client, tmp_path):
    record = run_training(tiny_config(*SMALL, "optim.lr=100", "logger=mlflow", "name=study_c"), tmp_path)  # the largest allowed
    assert record["status"] == "failed" and "not finite" in record["error"]
    [tracked] = runs_of(client, "study_c")
    assert tracked.info.status == "FAILED" and tracked.data.tags["status"] == "failed"
    copy = client.download_artifacts(tracked.info.run_id, "run.json", str(tmp_path / "download"))
    assert json.loads(open(copy).read())["error"] == record["error"]


def test_mlflow_missing_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)  # as if MLflow were not installed
    record = run_training(tiny_config(*SMALL, "logger=mlflow"), tmp_path)
    assert record["status"] == "failed" and record["params_total"] is None
    assert record["error"] == "logger=mlflow needs MLflow; install it with pip install 'transferlab[mlflow]'"


@pytest.mark.slow
def test_parallel_jobs_of_a_sweep_are_children_of_one_parent_and_a_rerun_adds_nothing(client, store_dir):
    sweep = ["train", "-m", "experiment=part_c", "freeze=none,last_only", *DRY_RUN]
    result = transferlab(*sweep, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", cwd=store_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    records = {record["freeze"]: record for record in
               (read_record(path) for path in (store_dir / "outputs" / "part_c").glob("*/run.json"))}
    assert sorted(records) == ["last_only", "none"]
    tracked = runs_of(client, "part_c")
    [parent] = [run for run in tracked if "sweep" in run.data.tags]
    children = {run.info.run_id: run for run in tracked if run is not parent}
    assert parent.info.status == "FINISHED" and len(children) == 2
    for freeze, record in records.items():  # each run.json names its own MLflow run, and nothing is mixed
        child = children[record["mlflow_run_id"]]
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.params["freeze.name"] == freeze and child.info.status == "FINISHED"
        assert steps(client, child.info.run_id, "test_acc") == [(1, pytest.approx(record["test_acc"]))]

    again = transferlab(*sweep, "progress=on", cwd=store_dir)  # the same sweep (launcher and progress aside)
    assert again.returncode == 0 and (again.stdout + again.stderr).count("skipped:") == 2
    assert sorted(run.info.run_id for run in runs_of(client, "part_c")) == sorted(run.info.run_id for run in tracked)


@pytest.mark.slow
def test_an_unreachable_tracking_server_stops_a_sweep_before_any_run(tmp_path):
    pytest.importorskip("mlflow")
    result = transferlab("train", "-m", "experiment=part_c", "freeze=none,early", *DRY_RUN, cwd=tmp_path,
                         MLFLOW_TRACKING_URI=f"http://127.0.0.1:{closed_port()}", MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
                         MLFLOW_HTTP_REQUEST_TIMEOUT="5")
    assert result.returncode == 1
    [line] = [line for line in result.stderr.splitlines() if "error" in line]
    assert line.startswith("transferlab train: error: logger=mlflow: cannot use the MLflow tracking store http://127.0.0.1:")
    assert not list(tmp_path.glob("outputs/part_c/*/run.json"))
