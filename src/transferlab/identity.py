"""A run's identity: what decides its results. Two configs with one identity are one run, wherever
their folders; a run folder's name, the skip and resume checks and the report's arms leave out the
rest: the settings that cannot change results (config.NOT_RESULT_KEYS) and those that do nothing in
this run (inert_settings)."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from transferlab import model_names
from transferlab.config import NOT_RESULT_KEYS
from transferlab.datasets import identity_keys


def inert_settings(config: Any) -> dict[str, str]:
    """{key: why it does nothing} for the settings that cannot change the run ``config`` (a composed
    or validated config, as nested mappings) describes: LoRA's with another adapter, the step
    schedule's with another, compile_mode without compile, crop_scale without random_resized_crop,
    and the optimizer (a key ``optim`` stands for all of optim.*) and train.epochs for an L-BFGS
    probe without LP-FT. They are left out of the run's identity (its folder's name, the skip and
    resume checks: result_config), so that runs differing only in them are one run."""
    def get(key: str) -> Any:
        node = config
        try:
            for part in key.split("."):
                node = node[part]
        except Exception:  # missing, or an interpolation that does not resolve (validation says why)
            return None
        return node

    inert: dict[str, str] = {}
    adapter = get("adapt.name")
    if adapter != "lora":
        inert.update(dict.fromkeys(("adapt.rank", "adapt.alpha", "adapt.dropout"), f"LoRA's, and adapt={adapter}"))
    schedule = get("optim.schedule")
    if schedule != "step":
        inert.update(dict.fromkeys(("optim.step_epochs", "optim.step_gamma"),
                                   f"optim.schedule=step's, and optim.schedule={schedule}"))
    if get("train.compile") is False:
        inert["train.compile_mode"] = "train.compile=true's, and train.compile=false"
    augment = get("data.augment")
    if augment != "random_resized_crop":
        inert["data.crop_scale"] = f"data.augment=random_resized_crop's, and data.augment={augment}"
    if get("freeze.cached_features") and get("freeze.probe") == "lbfgs" and get("freeze.unfreeze_at_epoch") is None:
        why = "the optimizer's epochs', and freeze.probe=lbfgs fits the head by L-BFGS (no LP-FT)"
        inert.update(dict.fromkeys(("optim", "train.epochs"), why))
    return inert


def is_inert(key: str, inert: dict[str, str]) -> bool:
    """Whether the override key ``key`` sets one of ``inert``'s settings (``optim.lr`` when ``optim`` is)."""
    key = key.lstrip("+~")
    return any(key == name or key.startswith(f"{name}.") for name in inert)


def result_config(config: dict[str, Any]) -> dict[str, Any]:
    """A config dict without the keys that cannot change a run's results (data.root stays for
    data=imagefolder: there the folder is the dataset), nor those that do nothing in this run
    (inert_settings)."""
    node = OmegaConf.create(config)
    kept = identity_keys(OmegaConf.select(node, "data.name"))
    for key in (*NOT_RESULT_KEYS, *inert_settings(config)):
        if key in kept:
            continue
        parent, _, leaf = key.rpartition(".")
        container = OmegaConf.select(node, parent) if parent else node
        if isinstance(container, DictConfig) and leaf in container:
            del container[leaf]
    return OmegaConf.to_container(node)


def model_implementation(model_name: str) -> str:
    """Which library builds ``model_name``: ``timm`` (timm/NAME[.TAG]) or ``torchvision``. timm's
    resnet50 and torchvision's are two implementations, two models (their initialisations differ)."""
    return model_names.library(model_name)


def model_as_run(model_name: str, pretrained: bool, weights: str | None, normalize: str | None) -> str:
    """``model_name`` as far as a run's results go: a timm model trained from scratch loses its
    pretraining tag (timm/resnet50.a1_in1k -> timm/resnet50), which picks weights such a run never
    loads; not with data.normalize=auto, where the tag's pretrained_cfg gives the mean and std."""
    if pretrained or weights or normalize == "auto" or model_implementation(model_name) != "timm":
        return model_name
    return str(model_name).partition(".")[0]


def run_identity(config: dict[str, Any]) -> dict[str, Any]:
    """What decides a run's results (result_config), with model.name as the run builds it
    (model_as_run): two configs with one identity are one run, wherever their folders."""
    identity = result_config(config)
    model, data = identity.get("model") or {}, identity.get("data") or {}
    if "name" in model:
        model["name"] = model_as_run(model["name"], model.get("pretrained"), model.get("weights"),
                                     data.get("normalize"))
    return identity
