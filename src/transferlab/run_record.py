"""The record a run starts with: its settings, the versions and machine it runs on, its Slurm job.
records.RunRecord is the type; run.py fills it in as the run learns the rest."""

from __future__ import annotations

import os
import platform

from transferlab import __version__
from transferlab.config import Config, DataConfig, as_dict
from transferlab.data import Transforms, data_source, dataset_name
from transferlab.records import RunRecord, utc_now


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
