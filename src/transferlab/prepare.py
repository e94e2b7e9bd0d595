"""`transferlab prepare`: fetch and verify the data (CIFAR-10 or CIFAR-100; an image folder is
checked and decoded into its cache) and the pretrained weights ahead of time, so that a machine
without internet (a cluster's compute node) can then run everything."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import torch

from transferlab.config import DataConfig, compose_config
from transferlab.datasets import DATASETS
from transferlab.errors import TransferlabError
from transferlab.models import pretrained_weights

HASH_IN_NAME = re.compile(r"-([a-f0-9]+)\.")  # torch.hub's convention: name-<sha256 prefix>.pth
STUDY_MODELS = ("alexnet", "resnet18", "vgg16")  # the protocol's, prepared when no model is named


def weights_file(model_name: str) -> tuple[str, Path]:
    """(download address, cache path) of the weights ``model.pretrained=true`` loads for a model."""
    url = pretrained_weights(model_name).url
    return url, Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name


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
    url, path = weights_file(model_name)
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


def prepare(data: DataConfig, model_names: list[str], weights: bool = True) -> tuple[list[str], list[str]]:
    """(what is ready, what could not be made ready), one line each."""
    steps = [lambda: prepare_data(data)]
    if weights:
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
        print("usage: transferlab prepare [data=cifar10|cifar100|imagefolder] [data.root=DIR] [model=NAME] "
              "[model.pretrained=false]\n\n"
              "Downloads and verifies the data (CIFAR-10 unless data=... is given) into data.root and the\n"
              "ImageNet weights that model.pretrained=true loads into torch's cache (those of\n"
              f"{', '.join(STUDY_MODELS)} unless model=NAME names any torchvision model), so that runs need no\n"
              "internet. Anything already in place is only verified. data=imagefolder\n"
              "checks the folder and decodes it into its cache, so that runs start at once.")
        return 0
    config = compose_config(args)
    chosen = any(arg.startswith(("model=", "model.name=")) for arg in args)
    ready, problems = prepare(config.data, [config.model.name] if chosen else list(STUDY_MODELS),
                              weights=config.model.pretrained)
    for line in ready:
        print(f"ok: {line}")
    for line in problems:
        print(f"transferlab prepare: error: {line}")
    return 1 if problems else 0
