"""`transferlab prepare`: fetch and verify CIFAR-10 and the pretrained weights ahead of time, so
that a machine without internet (a cluster's compute node) can then run everything."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import torch

from transferlab.data import load_cifar10
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


def prepare_cifar10(root: Path) -> str:
    try:
        load_cifar10(root, download=True)  # torchvision checks the MD5 of the archive and of every file
    except TransferlabError as error:
        raise TransferlabError(f"CIFAR-10: {error}") from error
    return f"CIFAR-10: in place and verified, {Path(root).expanduser()}"


def prepare(data_root: Path, model_names: list[str], weights: bool = True) -> tuple[list[str], list[str]]:
    """(what is ready, what could not be made ready), one line each."""
    steps = [lambda: prepare_cifar10(data_root)]
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
        print("usage: transferlab prepare [model=NAME] [data.root=DIR] [model.pretrained=false]\n\n"
              "Downloads and verifies CIFAR-10 into data.root and the ImageNet weights that model.pretrained=true\n"
              f"loads into torch's cache (those of {', '.join(STUDY_MODELS)} unless model=NAME names any torchvision\n"
              "model), so that runs need no internet.\n"
              "Anything already in place is only verified.")
        return 0
    from transferlab.config import compose_config

    config = compose_config(args)
    chosen = any(arg.startswith(("model=", "model.name=")) for arg in args)
    ready, problems = prepare(Path(config.data.root), [config.model.name] if chosen else list(STUDY_MODELS),
                              weights=config.model.pretrained)
    for line in ready:
        print(f"ok: {line}")
    for line in problems:
        print(f"transferlab prepare: error: {line}")
    return 1 if problems else 0
