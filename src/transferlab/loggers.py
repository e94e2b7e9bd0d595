"""Optional experiment trackers beside metrics.csv (which every run writes): TensorBoard and MLflow.

run.py calls a logger in this order: ``start(record)`` before any training (a tracker that cannot
be used fails the run there, before work is spent), ``log_epoch(entry)`` after each epoch,
``close()`` when the epochs stop, and ``end(record)`` once the final record is written (its status
and files); ``record_fields()`` is what the tracker adds to run.json. After ``start``, a tracker
that fails only warns: the run's results are in run.json. A logger reads records, never changes them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, read_write

from transferlab.config import NOT_RESULT_KEYS
from transferlab.errors import ConfigError, SweepRefused, TransferlabError
from transferlab.records import METRICS_FILE, RUN_FILE, flatten, read_record

log = logging.getLogger(__name__)

TENSORBOARD_DIR = "tensorboard"
# history key -> TensorBoard tag
TAGS = {
    "train_loss": "loss/train", "test_loss": "loss/test", "train_acc": "accuracy/train", "test_acc": "accuracy/test",
    "epoch_seconds": "time/epoch_seconds", "images_per_second": "time/images_per_second",
}


class MetricLogger:
    """What run.py calls on every logger; as it is, logger=none."""

    def start(self, record: dict[str, Any]) -> None:
        pass

    def log_epoch(self, entry: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass

    def end(self, record: dict[str, Any]) -> None:
        pass

    def record_fields(self) -> dict[str, Any]:
        """Fields for run.json (none here)."""
        return {}


class TensorBoardLogger(MetricLogger):
    """Writes each epoch's metrics as TensorBoard scalars under <run dir>/tensorboard/."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.writer = None

    def start(self, record: dict[str, Any]) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:
            raise ConfigError("logger=tensorboard needs the tensorboard package; install it with "
                              "pip install 'transferlab[tensorboard]'") from error
        self.writer = SummaryWriter(log_dir=str(self.run_dir / TENSORBOARD_DIR))

    def log_epoch(self, entry: dict[str, Any]) -> None:
        for key, tag in TAGS.items():
            self.writer.add_scalar(tag, entry[key], global_step=entry["epoch"])
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


# MLflow ----------------------------------------------------------------------------------------

# The local store when MLFLOW_TRACKING_URI is not set: a SQLite database and the artifacts. A
# hidden folder, so that `transferlab report outputs/` does not read the run.json copies in it.
LOCAL_STORE = Path("outputs") / ".mlflow"
RUN_ID_KEY = "mlflow_run_id"  # in run.json: the MLflow run that a resumed run continues
PARENT_RUN_ENV = "TRANSFERLAB_MLFLOW_PARENT_RUN_ID"  # set for a sweep's jobs by MlflowSweepCallback
MLFLOW_STATUS = {"completed": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}
MAX_PARAMS_PER_CALL = 100  # MLflow's limit for one log_batch


def tracking_store() -> tuple[str, str | None]:
    """(tracking URI, artifact root for the experiments it makes): MLFLOW_TRACKING_URI when set
    (then MLflow, or its server, places the artifacts), else the SQLite store in outputs/.mlflow/
    below the working directory, with its artifacts beside it."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri, None
    folder = LOCAL_STORE.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}", (folder / "artifacts").as_uri()


def mlflow_client(uri: str):
    try:
        from mlflow.tracking import MlflowClient
    except ImportError as error:
        raise ConfigError("logger=mlflow needs MLflow; install it with pip install 'transferlab[mlflow]'") from error
    return MlflowClient(uri)


@contextlib.contextmanager
def store_errors(uri: str) -> Iterator[None]:
    """A failure of the store at ``uri`` as one TransferlabError line: the OS's reason when there is
    one (connection refused, name not known) rather than MLflow's whole request report."""
    try:
        yield
    except TransferlabError:
        raise
    except Exception as error:
        text = str(error)
        reason = re.search(r"\[Errno -?\d+\][^\"')]*", text)
        short = reason.group(0).strip() if reason else " ".join(text.split())[:300]
        raise TransferlabError(f"logger=mlflow: cannot use the MLflow tracking store {uri} ({short}); start its "
                               "server or fix MLFLOW_TRACKING_URI, or pass logger=none") from error


def experiment_id(client, name: str, artifact_root: str | None) -> str:
    """The id of the MLflow experiment named ``name`` (the study), made when it does not exist
    (with its artifacts in ``artifact_root``/``name`` when a root is given)."""
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(name, artifact_location=artifact_root and f"{artifact_root}/{name}")
        except MlflowException:  # a parallel job made it meanwhile
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage == "deleted":
        raise TransferlabError(f"logger=mlflow: the MLflow experiment {name!r} is deleted; restore it "
                               "(mlflow experiments restore) or remove it for good (mlflow gc), or choose another name=")
    return experiment.experiment_id


def config_params(config: dict[str, Any]) -> dict[str, str]:
    """The resolved config as MLflow params: dotted keys, values as on the command line."""
    return {key: value if isinstance(value, str) else json.dumps(value) for key, value in flatten(config).items()}


class MlflowLogger(MetricLogger):
    """One MLflow run per transferlab run, in the experiment named after the study; a resumed run
    continues the MLflow run whose id its run.json kept; a sweep's runs are children of the
    sweep's parent run (PARENT_RUN_ENV)."""

    def __init__(self, run_dir: Path, resumed_run_id: str | None = None):
        self.run_dir = Path(run_dir)
        self.run_id = resumed_run_id
        self.client = None
        self.warned = False

    def record_fields(self) -> dict[str, Any]:
        """The MLflow run a resume continues: kept even when the store cannot be reached now."""
        return {} if self.run_id is None else {RUN_ID_KEY: self.run_id}

    def start(self, record: dict[str, Any]) -> None:
        uri, artifact_root = tracking_store()
        with store_errors(uri):
            client = mlflow_client(uri)
            experiment = experiment_id(client, record["name"], artifact_root)
            run = self._continued_run(client) or client.create_run(
                experiment, run_name=self.run_dir.name,
                tags={"run_dir": str(self.run_dir.resolve()), "overrides": " ".join(record["overrides"])})
            from mlflow.entities import Param, RunTag

            tags = [RunTag("status", "running")]
            if os.environ.get(PARENT_RUN_ENV):
                tags.append(RunTag("mlflow.parentRunId", os.environ[PARENT_RUN_ENV]))
            params = [Param(k, v) for k, v in config_params(record["config"]).items() if k not in run.data.params]
            client.log_batch(run.info.run_id, tags=tags)
            for first in range(0, len(params), MAX_PARAMS_PER_CALL):
                client.log_batch(run.info.run_id, params=params[first:first + MAX_PARAMS_PER_CALL])
        self.client, self.run_id = client, run.info.run_id
        log.info("MLflow run %s in experiment %r of %s", self.run_id, record["name"], uri)

    def _continued_run(self, client):
        """The MLflow run of the run this one resumes, reopened; None when there is none to continue."""
        from mlflow.exceptions import MlflowException

        if self.run_id is None:
            return None
        try:
            run = client.get_run(self.run_id)
        except MlflowException as error:
            if error.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            run = None
        if run is None or run.info.lifecycle_stage == "deleted":
            log.warning("MLflow run %s (in run.json) is not in this tracking store; starting a new one", self.run_id)
            return None
        client.update_run(self.run_id, status="RUNNING")
        return run

    def log_epoch(self, entry: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(key, float(value), now, entry["epoch"]) for key, value in entry.items()
                   if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool)]
        self._guarded(f"epoch {entry['epoch']}", lambda: self.client.log_batch(self.run_id, metrics=metrics))

    def end(self, record: dict[str, Any]) -> None:
        if self.client is None:  # start failed: nothing was opened
            return

        def finish() -> None:
            from mlflow.entities import RunTag

            tags = [RunTag(key, str(record[key])) for key in ("status", "device", "precision") if record.get(key)]
            self.client.log_batch(self.run_id, tags=tags)
            for name in (RUN_FILE, METRICS_FILE, record.get("model_file")):
                if name and (self.run_dir / name).exists():
                    self.client.log_artifact(self.run_id, str(self.run_dir / name))
            self.client.set_terminated(self.run_id, MLFLOW_STATUS.get(record["status"], "KILLED"))

        self._guarded("the end of the run", finish)

    def _guarded(self, what: str, call) -> None:
        """Once started, a tracker that fails never stops or loses a run: warn (once) and go on."""
        try:
            call()
        except Exception as error:
            if not self.warned:
                log.warning("MLflow logging failed at %s (%s); the run goes on and its results are in %s",
                            what, " ".join(str(error).split())[:300], self.run_dir / RUN_FILE)
                self.warned = True


def _resumed_mlflow_run(run_dir: Path) -> str | None:
    try:
        return read_record(Path(run_dir) / RUN_FILE).get(RUN_ID_KEY)
    except ValueError:
        return None


def make_logger(name: str, run_dir: Path, resuming: bool = False) -> MetricLogger:
    """The logger for ``logger=name``; ``resuming``: the run continues from its checkpoint (then an
    MLflow run continues the MLflow run in the folder's run.json). Call it before run.json is
    rewritten."""
    if name == "tensorboard":
        return TensorBoardLogger(run_dir)
    if name == "mlflow":
        return MlflowLogger(run_dir, _resumed_mlflow_run(run_dir) if resuming else None)
    return MetricLogger()


class MlflowSweepCallback(Callback):
    """With logger=mlflow, groups a sweep's runs under one MLflow parent run, made in the launching
    process before any job starts (so an unusable store stops the sweep there, with one line).
    The same sweep command run again continues its parent, and a new parent that got no run (all
    were skipped) is deleted at the end, so a sweep of skipped runs leaves nothing new. The jobs
    get the parent's id and store through ``hydra.job.env_set``, which every launcher (joblib,
    submitit) applies in the job's own process."""

    def __init__(self) -> None:
        self.client = None
        self.experiment_id = ""
        self.parent_id: str | None = None
        self.made_parent = False

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.get("logger") != "mlflow":
            return
        sweep = sweep_key(list(config.hydra.overrides.task))
        uri, artifact_root = tracking_store()
        try:
            with store_errors(uri):
                client = mlflow_client(uri)
                experiment = experiment_id(client, config.name, artifact_root)
                key = hashlib.sha1(sweep.encode()).hexdigest()
                found = client.search_runs([experiment], filter_string=f"tags.sweep_key = '{key}'", max_results=1)
                if found:
                    self.parent_id = found[0].info.run_id
                    client.update_run(self.parent_id, status="RUNNING")
                else:
                    self.parent_id = client.create_run(experiment, run_name=sweep or "sweep", tags={
                        "sweep": sweep, "sweep_key": key, "run_dir": str(Path(config.hydra.sweep.dir).resolve())},
                    ).info.run_id
                    self.made_parent = True
        except TransferlabError as error:  # Hydra would turn it into a warning and go on
            raise SweepRefused(str(error)) from error
        self.client, self.experiment_id = client, experiment
        with read_write(config.hydra.overrides.hydra):
            config.hydra.overrides.hydra.extend([
                f"++hydra.job.env_set.{PARENT_RUN_ENV}={self.parent_id}",
                f"++hydra.job.env_set.MLFLOW_TRACKING_URI={_quoted(uri)}",
            ])
        log.info("MLflow parent run %s for this sweep, in %s", self.parent_id, uri)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.client is not None:
            try:
                children = self.client.search_runs([self.experiment_id], max_results=1,
                                                   filter_string=f"tags.`mlflow.parentRunId` = '{self.parent_id}'")
                if self.made_parent and not children:
                    self.client.delete_run(self.parent_id)
                else:
                    self.client.set_terminated(self.parent_id, "FINISHED")  # each run's own status is on its run
            except Exception as error:
                log.warning("MLflow: could not end the sweep's parent run %s (%s)", self.parent_id, error)


def sweep_key(overrides: list[str]) -> str:
    """The sweep's command-line overrides that can change its runs, sorted: the same sweep run
    again (for instance with progress=off) finds its parent run."""
    return " ".join(sorted(o for o in overrides if o.partition("=")[0].lstrip("+~") not in NOT_RESULT_KEYS))


def _quoted(value: str) -> str:
    """A Hydra override value quoted, so that ':' and '/' of a URI stay as they are."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
