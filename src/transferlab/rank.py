"""`transferlab rank`: score pretrained candidates on a dataset from their frozen features, before
fine-tuning any of them (transferlab.scores; docs/scores.md).

    transferlab rank [--candidate "OVERRIDES"] ... [--out DIR] [OVERRIDES ...]

Each candidate is a set of overrides of conf/ (``source=timm_a1``, ``model=resnet18
model.weights=a.pt``), composed after the common OVERRIDES (the dataset: ``data=imagefolder
data.root=DIR``...); without --candidate, the sources study's arms (conf/experiment/sources.yaml's
``source`` sweep). For each: the frozen backbone's features of the target's training subset, its
validation split and test set come from probe.py's feature cache (a run with
freeze.cached_features=true of the same candidate and data shares it), then LogME, H-score, the
leave-one-out kNN accuracy and a linear probe's validation accuracy (probe.fit_logistic_regression)
on them, and NCE and LEEP from the source classifier's predictions where the candidate keeps one
(torchvision's and timm's ImageNet heads, a weights file's own head). Each score's seconds are
recorded. One ``score.json`` per candidate (``kind: score``) goes to
``DIR/<dataset>/<candidate>/``; the report ranks them (report/ranking.py) and never averages them
with training runs, whose records are run.json. A candidate that cannot be scored (its weights
missing on an offline machine, a bad override) is one line on stderr, and the others go on.
"""

from __future__ import annotations

import argparse
import logging
import platform
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from transferlab import scores
from transferlab.caches import DIGEST_MEMO, default_cache_dir
from transferlab.config import Config, as_dict, compose_config, config_dir
from transferlab.data import ImageSet, data_source, dataset_name, make_loader, scan_folder, stratified_split
from transferlab.datasets import load_datasets
from transferlab.engine import precision_name, select_amp_dtype, select_device
from transferlab.errors import ConfigError, TransferlabError
from transferlab.models import build_model_with_init, head_name
from transferlab.probe import Features, feature_identity, fit_logistic_regression, probe_features, weights_identity
from transferlab.records import utc_now, write_atomic

log = logging.getLogger(__name__)

SCORE_FILE = "score.json"
SCORE_KIND = "score"
DEFAULT_OUT = "outputs/scores"
DEFAULT_VAL_FRACTION = 0.2  # the linear probe's validation split, where the overrides hold none out
SOURCES_EXPERIMENT = "experiment/sources.yaml"

HELP = f"""usage: transferlab rank [--candidate "OVERRIDES"] ... [--out DIR] [OVERRIDES ...]

Scores each candidate (a pretrained model: overrides such as "source=timm_a1" or
"model=resnet18 model.weights=a.pt") on the data the OVERRIDES choose, from its frozen features of
the training subset: LogME, H-score, leave-one-out kNN accuracy, a linear probe's validation
accuracy, and NCE and LEEP where the candidate keeps its source classifier. Without --candidate:
the sources study's arms ({SOURCES_EXPERIMENT}). Writes DIR/<dataset>/<candidate>/{SCORE_FILE}
(default DIR: {DEFAULT_OUT}); `transferlab report` ranks them. data.val_fraction defaults to
{DEFAULT_VAL_FRACTION} here (the probe's validation split). docs/scores.md says what each score means."""


def default_candidates() -> list[str]:
    """The sources study's arms: ``+source=NAME`` for each value of its ``source`` sweep."""
    experiment = yaml.safe_load((config_dir() / SOURCES_EXPERIMENT).read_text(encoding="utf-8"))
    sources = str(experiment["hydra"]["sweeper"]["params"]["source"]).split(",")
    return [f"+source={source.strip()}" for source in sources]


def parse_args(args: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="transferlab rank", usage=HELP, add_help=False)
    parser.add_argument("-h", "--help", action="store_true")
    parser.add_argument("--candidate", action="append", default=None, metavar="OVERRIDES")
    parser.add_argument("--out", default=DEFAULT_OUT, metavar="DIR")
    parser.add_argument("overrides", nargs="*")
    return parser.parse_args(args)


def main(args: list[str]) -> int:
    """0 when every candidate was scored, 1 (after scoring the others) when any was not."""
    options = parse_args(args)
    if options.help:
        print(HELP)
        return 0
    overrides = list(options.overrides)
    if not any(override.lstrip("+").startswith("data.val_fraction=") for override in overrides):
        overrides.append(f"data.val_fraction={DEFAULT_VAL_FRACTION}")
    candidates = options.candidate or default_candidates()
    failed = 0
    for candidate in candidates:
        try:
            path, record = score_candidate(candidate, overrides, Path(options.out))
        except (TransferlabError, OSError, RuntimeError) as error:
            failed += 1
            reason = " ".join(str(error).split()) or type(error).__name__
            print(f"transferlab rank: candidate {candidate!r} not scored: {reason}", file=sys.stderr)
            continue
        shown = ", ".join(f"{name} {value:.4g}" for name, value in record["scores"].items() if value is not None)
        print(f"{candidate}: {shown} ({path})")
    print(f"{len(candidates) - failed} of {len(candidates)} candidates scored")
    return 1 if failed else 0


def candidate_folder(candidate: str) -> str:
    """A plain folder name for a candidate's overrides: ``source=timm_a1`` -> ``source=timm_a1``,
    ``model.weights=/x/a.pt`` -> ``model.weights=_x_a.pt``."""
    return re.sub(r"[^A-Za-z0-9._=+-]+", "_", candidate.strip()).strip("_") or "default"


def score_candidate(candidate: str, overrides: list[str], out: Path) -> tuple[Path, dict[str, Any]]:
    """Score one candidate; (its score.json, the record written)."""
    candidate_overrides = candidate.split()
    config = compose_config([*overrides, *candidate_overrides])
    record = score_config(config)
    record.update(candidate=candidate, overrides=[*overrides, *candidate_overrides])
    folder = out / candidate_folder(record["dataset"] or config.data.name) / candidate_folder(candidate)
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / SCORE_FILE, _json(record))
    return folder / SCORE_FILE, record


def _json(record: dict[str, Any]) -> str:
    import json

    return json.dumps(record, indent=2) + "\n"


def score_config(config: Config) -> dict[str, Any]:
    """The score record of the candidate ``config`` describes, on its data."""
    started = time.perf_counter()
    device = select_device(config.device)
    amp_dtype = select_amp_dtype(config.precision, device)
    data = config.data
    train_set, test_set = load_datasets(data, config.effective_subset_seed)
    train_set, val_set = _hold_out(train_set, data.val_fraction, config.effective_subset_seed)
    classes = list(train_set.classes)
    cache_root = Path(data.cache_dir).expanduser() if data.cache_dir is not None else default_cache_dir()
    model, init = build_model_with_init(config.model.name, config.model.pretrained, config.model.weights, len(classes),
                                        data.image_size, cache_root / DIGEST_MEMO, classes=classes,
                                        new_head=config.model.new_head, weights_name=config.model.weights_name)
    model.to(device)
    from transferlab.run import transforms_of  # the transforms a training run of this config would use

    transforms = transforms_of(data, model)
    loader_args = dict(image_size=data.image_size, seed=config.effective_seed, device=device,
                       num_workers=data.num_workers, transforms=transforms)
    head = head_name(config.model.name, model)
    versions = _versions()
    identity = feature_identity(
        model_name=config.model.name, init=weights_identity(init.init, init.weights_sha256, config.effective_seed),
        image_size=data.image_size,
        test_view={**{k: v for k, v in transforms.describe(data.image_size).items() if k != "train"},
                   "pipeline": data.pipeline},
        data=_source_identity(config), subset={"sampling": data.sampling, "seed": config.effective_subset_seed,
                                               "fraction": data.fraction, "per_class": data.per_class,
                                               "val_fraction": data.val_fraction},
        device_type=device.type, precision=precision_name(amp_dtype), versions=versions)
    sets = {"train": train_set, "test": test_set, "val": val_set}  # as a cached-probe run's: one cache for both
    features, about = probe_features(
        model, head, sets,
        lambda split: make_loader(split, data.pipeline, config.train.eval_batch_size, train=False, **loader_args),
        cache_root, identity, device, amp_dtype)
    train = features["train"].to(torch.device("cpu"))
    values, seconds = feature_scores(train, features["val"].to(torch.device("cpu")))
    source = source_head(config, model, head)
    if source is not None:
        probabilities = torch.softmax(train.features @ source[0].T + source[1], dim=1).numpy()
        for name, score in (("nce", scores.nce), ("leep", scores.leep)):
            start = time.perf_counter()
            values[name] = float(score(probabilities, train.labels.numpy()))
            seconds[name] = round(time.perf_counter() - start, 4)
    else:
        values.update(nce=None, leep=None)
    return {
        "kind": SCORE_KIND, "schema_version": 1, "status": "completed", "name": config.name,
        "model": config.model.name, "init": init.init, "pretraining": init.as_record(),
        "pretrained": config.model.pretrained or config.model.weights is not None,
        "data": data.name, "dataset": dataset_name(data), "data_source": data_source(data),
        "image_size": data.image_size, "fraction": data.fraction, "per_class": data.per_class,
        "num_train_images": len(train_set), "num_val_images": len(val_set), "num_classes": len(classes),
        "classes": classes, "source_classes": None if source is None else int(source[0].shape[0]),
        "features": int(train.features.shape[1]), "device": str(device), "precision": precision_name(amp_dtype),
        "scores": values, "score_seconds": seconds, **about,
        "seconds": round(time.perf_counter() - started, 3), "config": as_dict(config), "versions": versions,
        "host": platform.node(), "finished_at": utc_now(),
    }


def feature_scores(train: Features, val: Features) -> tuple[dict[str, float | None], dict[str, float]]:
    """({score: value}, {score: seconds}) of the scores of the training features (and the linear
    probe fitted on them, by its validation accuracy)."""
    features, labels = train.features.double().numpy(), train.labels.numpy()
    values: dict[str, float | None] = {}
    seconds: dict[str, float] = {}
    for name, score in (("logme", scores.logme), ("h_score", scores.h_score), ("knn_accuracy", scores.knn_accuracy)):
        start = time.perf_counter()
        values[name] = float(score(features, labels))
        seconds[name] = round(time.perf_counter() - start, 4)
    start = time.perf_counter()
    probe = torch.nn.Linear(train.features.shape[1], int(max(labels.max(), val.labels.max())) + 1)
    values["probe_val_accuracy"] = fit_logistic_regression(probe, train, val).val_accuracy
    seconds["probe_val_accuracy"] = round(time.perf_counter() - start, 4)
    return values, seconds


def source_head(config: Config, model: torch.nn.Module, head: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(weight (Z, D), bias (Z,)) of the candidate's source classifier, on the CPU: its weights
    file's own head, torchvision's or timm's ImageNet head; None for a random initialisation or a
    head that is not one linear layer of the features' width."""
    width = model.get_submodule(head).in_features if isinstance(model.get_submodule(head), torch.nn.Linear) else None
    state = None
    if config.model.weights is not None and Path(config.model.weights).is_file():
        state = torch.load(config.model.weights, map_location="cpu", weights_only=True)
        state = state.get("model", state) if isinstance(state, dict) else None
    elif config.model.pretrained and config.model.name.startswith("timm/"):
        import timm

        source = timm.create_model(config.model.name.removeprefix("timm/"), pretrained=True)
        state = source.state_dict()
    elif config.model.pretrained:
        from transferlab.models import pretrained_weights

        state = pretrained_weights(config.model.name).get_state_dict(progress=False)
    if not isinstance(state, dict):
        return None
    weight, bias = state.get(f"{head}.weight"), state.get(f"{head}.bias")
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2 or weight.shape[1] != width:
        return None
    bias = bias if isinstance(bias, torch.Tensor) else torch.zeros(weight.shape[0])
    return weight.float(), bias.float()


def _hold_out(train: ImageSet, fraction: float, seed: int) -> tuple[ImageSet, ImageSet]:
    """(images scored, the probe's validation split), drawn as a run draws its validation split."""
    kept, held_out = stratified_split(train.labels, fraction, seed) if fraction > 0 else (None, [])
    if len(held_out) == 0:
        raise ConfigError(f"data.val_fraction={fraction} holds out no image of the {len(train)}-image training subset; "
                          "transferlab rank needs a validation split for its linear probe: raise data.val_fraction")
    return train.subset(kept), train.subset(held_out)


def _source_identity(config: Config) -> dict[str, Any]:
    """The data's part of the feature cache's key, as a training run's (run.py's _feature_identity)."""
    data = config.data
    source: dict[str, Any] = {"name": data.name}
    if data.name == "synthetic":
        source.update(num_train=data.num_train, num_test=data.num_test, seed=data.subset_seed)
    elif data.name == "imagefolder":
        source.update(content=scan_folder(data.root).content_key(data.stored_size), stored_size=data.stored_size,
                      test_fraction=data.test_fraction, test_seed=data.subset_seed)
    return source


def _versions() -> dict[str, str]:
    import torchvision

    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "numpy": np.__version__}
