"""The record a run starts with: its settings, the versions and machine it runs on, its Slurm job;
and its last write, with the run's outcome. records.RunRecord is the type; run.py fills it in as
the run learns the rest."""

from __future__ import annotations

import os
import platform
from pathlib import Path

from transferlab import __version__
from transferlab.callbacks import record_bytes
from transferlab.checkpoint import write_failure
from transferlab.config import Config, DataConfig, as_dict
from transferlab.data import Transforms, data_source, dataset_name
from transferlab.errors import TransferlabError
from transferlab.records import RUN_FILE, RunRecord, utc_now, write_record


def config_transforms(data: DataConfig) -> Transforms:
    """The data's transforms as the config gives them, before a model is known (data.normalize=auto:
    ImageNet's statistics)."""
    normalize = "imagenet" if data.normalize == "auto" else data.normalize
    return Transforms(data.augment, normalize, data.test_crop, tuple(data.crop_scale))


def new_record(config: Config, overrides: list[str] | tuple[str, ...]) -> RunRecord:
    """The record of a run that starts: its settings; the rest is filled in as the run learns it."""
    data = config.data
    return RunRecord(
        status="running", name=config.name, model=config.model.name,
        pretrained=config.model.pretrained or config.model.weights is not None, init=None,
        data=data.name, dataset=dataset_name(data), transforms=config_transforms(data).describe(data.image_size),
        fraction=data.fraction, per_class=data.per_class,
        subset={"sampling": data.sampling, "seed": config.effective_subset_seed, "fraction": data.fraction,
                "per_class": data.per_class},
        image_size=data.image_size, freeze="custom" if config.freeze.modules is not None else config.freeze.name,
        repeat=config.repeat, seed=config.effective_seed, subset_seed=config.effective_subset_seed,
        config=as_dict(config), overrides=list(overrides), started_at=utc_now(), versions=versions(),
        host=platform.node(), pid=os.getpid(), slurm_job_id=slurm_job_id(),
        nondeterministic_ops=[] if config.deterministic else None,
        data_source=data_source(data),
    )


def slurm_job_id() -> str | None:
    """The Slurm job this run executes in, named as squeue names it (``ARRAYID_TASK`` for an element
    of a job array, which is how hydra/launcher=slurm submits a sweep); None outside Slurm."""
    if "SLURM_ARRAY_JOB_ID" in os.environ:
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}"
    return os.environ.get("SLURM_JOB_ID")


def versions() -> dict[str, str]:
    """The versions a result depends on: transferlab, Python, torch, torchvision, Hydra, OmegaConf, CUDA."""
    import hydra
    import omegaconf
    import torch
    import torchvision

    return {
        "transferlab": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "hydra": hydra.__version__,
        "omegaconf": omegaconf.__version__,
        "cuda": torch.version.cuda or "none",
    }


def write_final_record(run_dir: Path, record: RunRecord) -> None:
    """run.json with the run's outcome. When even that cannot be written (a full disk), the run.json
    on disk stays as it was, a whole record of the last saved epoch, and the error says so."""
    try:
        write_record(run_dir, record.to_dict())
    except OSError as error:
        outcome = record.status + (f" ({record.error})" if record.error else "")
        raise TransferlabError(f"the run {outcome}, but its record could not be saved: "
                               f"{write_failure(run_dir / RUN_FILE, record_bytes(record), error)}; {RUN_FILE} "
                               "still shows the last saved epoch") from error
