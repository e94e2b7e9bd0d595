"""`transferlab prepare`: fetch and verify the data (CIFAR-10 or CIFAR-100; an image folder is
checked and decoded into its cache) and the pretrained weights ahead of time, so that a machine
without internet (a cluster's compute node) can then run everything.

It prepares what it is asked for (models_to_prepare): the data of ``data=``, and the weights of the
model that ``model=NAME`` names; with neither, the study (CIFAR-10 and its three models' weights).
torch is imported when something is prepared, not for ``--help``."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from transferlab.config import Config, DataConfig
from transferlab.composition import compose_config
from transferlab.datasets import DATASETS
from transferlab.errors import TransferlabError

HASH_IN_NAME = re.compile(r"-([a-f0-9]+)\.")  # torch.hub's convention: name-<sha256 prefix>.pth
STUDY_MODELS = ("alexnet", "resnet18", "vgg16")  # the protocol's, prepared when neither data nor model is named
MODEL_KEYS, DATA_KEYS = ("model=", "model.name="), ("data=", "data.name=")  # overrides that name one

HELP = f"""usage: transferlab prepare [data=cifar10|cifar100|imagefolder] [data.root=DIR] [model=NAME]
                           [model.pretrained=false]

Downloads and verifies what runs will need, so that they need no internet; anything already in
place is only verified:
  - the data of data=... into data.root (CIFAR-10 or CIFAR-100; data=imagefolder checks the folder
    and decodes it into its cache, so that runs start at once);
  - the ImageNet weights of model=NAME (any torchvision model) into torch's cache, unless
    model.pretrained=false; a timm model's (model.name=timm/NAME.TAG) into the Hugging Face cache.
With neither data=... nor model=..., the study: CIFAR-10 and the weights of {', '.join(STUDY_MODELS)}.
With data=... alone, only the data (no weights)."""


def models_to_prepare(args: list[str], config: Config) -> list[str]:
    """The models whose weights ``transferlab prepare ARGS`` fetches: the one model=NAME names;
    with no model and no data named, the study's; else none (the data was asked for, not weights)."""
    if not config.model.pretrained:
        return []
    if any(arg.lstrip("+").startswith(MODEL_KEYS) for arg in args):
        return [config.model.name]
    if any(arg.lstrip("+").startswith(DATA_KEYS) for arg in args):
        return []
    return list(STUDY_MODELS)


def sha256_matches(path: Path) -> bool:
    """Whether the file's SHA-256 starts with the prefix in its name (how torch.hub checks)."""
    match = HASH_IN_NAME.search(path.name)
    if match is None:
        return True
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest().startswith(match.group(1))


def prepare_weights(model_name: str) -> str:
    """The weights of ``model_name`` in place, as its source fetches them (torchvision's: ``fetch``)."""
    from transferlab.sources import source_for

    return source_for(model_name).prepare(model_name, fetch)


def fetch(model_name: str, url: str, path: Path) -> str:
    """A weights file that torch.hub names by its digest (``resnet18-f37072fd.pth``) downloaded to
    ``path`` and verified, or found there and verified."""
    import torch

    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        prefix = HASH_IN_NAME.search(path.name)
        try:
            torch.hub.download_url_to_file(url, str(path), hash_prefix=prefix.group(1) if prefix else None)
        except Exception as error:  # no network, HTTP errors, a hash mismatch
            raise TransferlabError(f"{model_name} weights: could not fetch {url} ({error}); put "
                                   f"{path.name} into {path.parent}") from error
        return f"{model_name} weights: downloaded and verified, {path}"
    if not sha256_matches(path):
        raise TransferlabError(f"{model_name} weights: {path} does not match its SHA-256; delete it and run "
                               "transferlab prepare again")
    return f"{model_name} weights: already in place and verified, {path}"


def prepare_data(data: DataConfig) -> str:
    return DATASETS[data.name].prepare(data)


def prepare(data: DataConfig, model_names: list[str]) -> tuple[list[str], list[str]]:
    """(what is ready, what could not be made ready), one line each: the data, then the weights of
    each of ``model_names``."""
    steps = [lambda: prepare_data(data)]
    steps += [lambda name=name: prepare_weights(name) for name in model_names]
    ready, problems = [], []
    for step in steps:
        try:
            ready.append(step())
        except TransferlabError as error:
            problems.append(str(error))
    return ready, problems


def main(args: list[str]) -> int:
    if any(arg in ("-h", "--help") for arg in args):
        print(HELP)
        return 0
    config = compose_config(args)
    ready, problems = prepare(config.data, models_to_prepare(args, config))
    for line in ready:
        print(f"ok: {line}")
    for line in problems:
        print(f"transferlab prepare: error: {line}")
    return 1 if problems else 0
