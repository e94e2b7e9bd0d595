"""Reading run records: every run.json under the given paths, as one row per observation.

A completed run's *settings* are its config as it actually ran: ``precision`` and ``device`` are
what the run used (a bf16 GPU run and an fp32 CPU run of ``precision=auto`` are different
settings), ``data.name`` names the dataset, one name per dataset: what the run saw (an image
folder's resolved root, data.subset_seed where it decides the images: dataset_identity), never its
name alone, a weights file (``model.weights``) is its content, not its path (``sha256:1a2b3c4d5e6f``,
run.json's pretraining.weights_sha256, where the record has it), and a timm model from scratch has
no pretraining tag (identity.model_as_run). A run's
seed, its subset seed and its ``repeat`` are not settings: they make it one *replicate* of its arm,
named by (effective seed, effective subset seed). A config without ``data.sampling`` predates stratified
subsets and was drawn uniformly: its settings say ``data.sampling=uniform``, so that it never meets a
stratified run. The same study, settings and replicate is one observation however often it was
run: the report keeps the run that finished last and names the ones it left out."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from transferlab.config import NOT_RESULT_KEYS, AdaptConfig
from transferlab.datasets import DATASETS
from transferlab.identity import inert_settings, is_inert, model_as_run
from transferlab.records import RUN_FILE, flatten, future_schema, read_record, record_problem

# Settings that never split a group: replicates differ in seed, subset seed and repeat (see
# replicate()), the rest cannot change a result.
IGNORED_KEYS = ("name", "seed", "repeat", "data.subset_seed", *NOT_RESULT_KEYS)
DEFAULT_SUBSET_SEED = 42  # data.subset_seed of a config that does not name one
OLD_SAMPLING = "uniform"  # how a record without data.sampling drew its subset
# How torch names an autocast dtype (records before the contract's short names) -> the short name.
PRECISION_NAMES = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}


def find_run_files(paths: list[str], out: Path) -> list[Path]:
    """Every run.json under ``paths`` (a path may also be a run.json itself), sorted, none under
    ``out`` and none in a hidden folder below them (such as outputs/.mlflow/, where MLflow keeps
    copies of run.json). Each comes back as the given path joined with its place below it, so that what the
    report shows depends on the arguments, not on the working directory.

    Symbolic links to folders are followed, and a run.json reached more than once (through a link
    and directly, through two links, through a link back up the tree, under two of the paths) is
    read once: by the way with the fewest links, under the path given first among those."""
    out = out.resolve()
    found: dict[Path, tuple[int, int, Path]] = {}  # resolved -> (links crossed, which path, the path shown)
    for order, given in enumerate(paths):
        root = Path(given)
        for file, links in [(root, 0)] if root.is_file() else _run_files_below(root, out) if root.is_dir() else []:
            resolved = file.resolve()
            if out not in resolved.parents and (resolved not in found or (links, order) < found[resolved][:2]):
                found[resolved] = (links, order, file)
    return sorted((file for _, _, file in found.values()), key=lambda p: p.as_posix())


def _run_files_below(root: Path, out: Path) -> list[tuple[Path, int]]:
    """(run.json, the links crossed to reach it) under ``root``, following links to folders: every
    folder reached without a link is walked before any that takes one link, and so on, and none is
    walked twice (which also ends a link that loops back to a folder above it)."""
    files, walked = [], set()
    level, links = [root], 0  # folders reached through ``links`` links
    while level:
        through_link = []
        while level:
            folder = level.pop()
            resolved = folder.resolve()
            if resolved in walked or resolved == out or out in resolved.parents:
                continue
            walked.add(resolved)
            try:
                entries = sorted(os.scandir(folder), key=lambda entry: entry.name, reverse=True)
            except OSError:  # unreadable, or gone since it was listed: as rglob, pass it by
                continue
            for entry in entries:
                if entry.name == RUN_FILE and entry.is_file():
                    files.append((folder / entry.name, links))
                elif not entry.name.startswith(".") and entry.is_dir():
                    (through_link if entry.is_symlink() else level).append(folder / entry.name)
        level, links = through_link[::-1], links + 1
    return files


def read_runs(files: list[Path]) -> tuple[list[tuple[Path, dict[str, Any]]], list[str]]:
    """(path, record) for each readable run.json, and a line for each file that is not one: not
    JSON, not a run record, a record of a newer layout than this transferlab reads (its
    schema_version), or a completed record with a field that the report cannot use (the line names
    the field, such as a test_acc that is not a finite number in [0, 1])."""
    runs, skipped = [], []
    for file in files:
        try:
            record = read_record(file)
        except ValueError as error:
            skipped.append(f"{file.as_posix()}: {str(error).removeprefix(f'{file}: ')}")
            continue
        if problem := future_schema(record):
            skipped.append(f"{file.as_posix()}: {problem}")
            continue
        if record["status"] == "completed" and (problem := record_problem(record)):
            skipped.append(f"{file.as_posix()}: {problem}")
            continue
        runs.append((file, record))
    return runs, skipped


def normalised(config: dict[str, Any]) -> dict[str, Any]:
    """A flat config as the report compares it: ``data.sampling`` where the record has none is the
    old uniform draw, and a run of ``data.per_class`` K has no fraction (its ``data.fraction`` is unused)."""
    config = {**config, "data.sampling": config.get("data.sampling") or OLD_SAMPLING,
              "data.per_class": config.get("data.per_class"),
              # Records from before cached-feature probes trained their heads in the loop.
              "freeze.cached_features": bool(config.get("freeze.cached_features")),
              "freeze.probe": config.get("freeze.probe") or "optimizer"}
    if config["data.per_class"] is not None:
        config.pop("data.fraction", None)
    return config


def settings(record: dict[str, Any], dataset: str | None = None) -> dict[str, Any]:
    """The flat config of a run as it actually ran: the settings that can change its results, without
    those that do nothing in it (identity.inert_settings: LoRA's with adapt=none, the step schedule's
    with another schedule...), so that runs differing only in them are one arm.
    ``data.name`` is ``dataset``, the data's name in this report (dataset_names), where given."""
    inert = inert_settings(record["config"])  # settings that do nothing in this run (a LoRA rank with adapt=none)
    config = normalised({k: v for k, v in flatten(record["config"]).items()
                         if k not in IGNORED_KEYS and not is_inert(k, inert)})
    if record.get("precision"):
        config["precision"] = PRECISION_NAMES.get(record["precision"], record["precision"])
    if record.get("device"):
        config["device"] = str(record["device"]).split(":")[0]  # cuda:1 and cuda:0 are one setting
    config["data.name"] = dataset or dataset_label(record)
    if config.get("model.weights") and (digest := weights_digest(record)):
        config["model.weights"] = digest  # a weights file is its content: one file at two paths is one arm
    if "model.name" in config:  # a timm model from scratch without its tag: one run whichever tag it was given
        config["model.name"] = model_as_run(config["model.name"], config.get("model.pretrained"),
                                            config.get("model.weights"), config.get("data.normalize"))
    return config


WEIGHTS_DIGEST_CHARACTERS = 12  # of the SHA-256: short in a label, and 2**-48 from a collision


def weights_digest(record: dict[str, Any]) -> str | None:
    """``sha256:1a2b3c4d5e6f``, the start of run.json's pretraining.weights_sha256 (the weights that
    were loaded); None for a record without it (its model.weights path stands for the file)."""
    pretraining = record.get("pretraining")
    digest = pretraining.get("weights_sha256") if isinstance(pretraining, dict) else None
    return f"sha256:{digest[:WEIGHTS_DIGEST_CHARACTERS]}" if isinstance(digest, str) and digest else None


def dataset_label(record: dict[str, Any]) -> str:
    """The dataset's name, and its source where the two differ: ``cifar10``, ``flowers (imagefolder)``."""
    source = record["config"].get("data", {}).get("name", record.get("data"))
    dataset = record.get("dataset") or record.get("data") or source
    # A dataset's own name with what data.classes keeps (``digits (classes 5-9)``) names its source already.
    return str(dataset) if str(dataset) == str(source) or str(dataset).startswith(f"{source} (") else f"{dataset} ({source})"


def dataset_identity(record: dict[str, Any]) -> tuple[str, str | None, int | None]:
    """Which data a run saw: (its name, dataset_label; the folder it read; the data.subset_seed its
    images follow), None where one plays no part. The folder, for a dataset that is one (data.root
    is an identity key), is the resolved root run.json's data_source recorded (the config's data.root
    for a record without one): two folders called ``imgs`` are two datasets. The data.subset_seed, for
    a dataset whose images it decides (images_follow_subset_seed: synthetic generates them from it, an
    image folder without a test folder holds out its test split by it): another one is other data."""
    data = record["config"].get("data") or {}
    source = str(data.get("name", record.get("data")))
    spec, label = DATASETS.get(source), dataset_label(record)
    if spec is None:
        return label, None, None
    described = record.get("data_source") if isinstance(record.get("data_source"), dict) else {}
    root = str(described.get("root") or data.get("root")) if "data.root" in spec.identity_keys else None
    # An image folder with a test folder of its own (data_source's test is "val/") holds nothing out.
    held_out = not str(described.get("test", "")).endswith("/")
    seed = _subset_seed(data) if spec.images_follow_subset_seed and held_out else None
    return label, root, seed


def _subset_seed(data: dict[str, Any]) -> int:
    """A data config's data.subset_seed; DEFAULT_SUBSET_SEED where it has none (or null)."""
    seed = data.get("subset_seed")
    return DEFAULT_SUBSET_SEED if seed is None else seed


def dataset_names(records: list[dict[str, Any]]) -> dict[tuple, str]:
    """A name for each dataset (dataset_identity) of ``records``, one per dataset: its own
    (dataset_label), told apart from another of the same name by the shortest end of its folder's
    path that differs (``a/imgs (imagefolder)``, ``b/imgs (imagefolder)``) and by the
    data.subset_seed its images follow (``synthetic (data.subset_seed=43)``)."""
    identities = {dataset_identity(record) for record in records}
    names = {}
    for label in {label for label, _, _ in identities}:
        same = [identity for identity in identities if identity[0] == label]
        if len(same) == 1:
            names[same[0]] = label
            continue
        ends = shortest_unique_ends([root for _, root, _ in same if root is not None])
        seeds_differ = len({seed for _, _, seed in same}) > 1
        # dataset_label's "NAME (SOURCE)", or NAME alone; NAME may hold brackets of its own.
        name, _, qualifier = label.rpartition(" (") if label.endswith(")") else (label, "", "")
        for identity in same:
            _, root, seed = identity
            qualifiers = [qualifier.removesuffix(")")] if qualifier else []
            if seeds_differ:
                qualifiers.append(f"data.subset_seed={seed}")
            shown = ends.get(root, name) if len({r for _, r, _ in same}) > 1 else name
            names[identity] = f"{shown} ({', '.join(qualifiers)})" if qualifiers else shown
    return names


def shortest_unique_ends(paths: list[str]) -> dict[str, str]:
    """Each distinct path -> its fewest last parts that no other path ends with (``/a/imgs`` and
    ``/b/imgs`` -> ``a/imgs``, ``b/imgs``); a path that no other one's end tells apart stays whole."""
    parts = {path: Path(path).parts for path in set(paths)}
    ends = {}
    for path, own in parts.items():
        others = [other for other_path, other in parts.items() if other_path != path]
        for count in range(1, len(own) + 1):
            if all(other[-count:] != own[-count:] for other in others):
                ends[path] = Path(*own[-count:]).as_posix()
                break
        else:
            ends[path] = path
    return ends


def replicate(record: dict[str, Any]) -> tuple[int, int]:
    """(effective training seed, effective subset seed) of a run: the record's ``seed`` and
    ``subset_seed`` (seed + repeat, data.subset_seed + repeat); a record from before ``subset_seed``
    was recorded has its config's data.subset_seed (42 where the config has none either)."""
    config = record["config"]
    repeat = config.get("repeat") or 0
    seed = record.get("seed")
    if seed is None:
        seed = (config.get("seed") or 0) + repeat
    subset_seed = record.get("subset_seed")
    if subset_seed is None:
        subset_seed = _subset_seed(config.get("data") or {}) + repeat
    return int(seed), int(subset_seed)


def images_per_class(record: dict[str, Any]) -> tuple[float, float, float]:
    """(fewest, most, mean) training images per class. The fewest and the most come from the
    record's ``train_images_per_class`` counts (nan where it has none: a record from before them);
    the mean from those counts, else from num_train_images / num_classes (nan where neither is known)."""
    counts = record.get("train_images_per_class")
    if isinstance(counts, dict) and counts:
        values = [float(v) for v in counts.values()]
        return min(values), max(values), float(np.mean(values))
    num_classes = record.get("num_classes") or len(record.get("classes") or []) or None
    train_images = record.get("num_train_images")
    mean = train_images / num_classes if train_images and num_classes else math.nan
    return math.nan, math.nan, mean


def completed_frame(runs: list[tuple[Path, dict[str, Any]]]) -> pd.DataFrame:
    """One row per completed run: what the tables and figures need, and its settings (as ``config``)."""
    rows = []
    names = dataset_names([record for _, record in runs if record["status"] == "completed"])
    for path, record in runs:
        if record["status"] != "completed":
            continue
        config = settings(record, names[dataset_identity(record)])
        history = record.get("history") or []
        seed, subset_seed = replicate(record)
        fewest, most, mean_per_class = images_per_class(record)
        rows.append({
            "path": path.parent.as_posix(),
            "name": record.get("name") or record["config"].get("name", "runs"),
            "seed": seed,
            "subset_seed": subset_seed,
            "replicate": (seed, subset_seed),
            "finished_at": record.get("finished_at") or "",
            "dataset": config["data.name"],
            "fraction": config.get("data.fraction"),
            "per_class": config.get("data.per_class"),
            "sampling": config["data.sampling"],
            "model": config.get("model.name"),
            "pretrained": bool(config.get("model.pretrained") or config.get("model.weights")),
            "init": record.get("init"),
            # The pretraining source in the report's words (torchvision IMAGENET1K_V1, timm a1_in1k,
            # from scratch...); older records, from before run.json had it, get it from their init.
            "source": pretraining_label(record),
            "adapt": adapt_label(record.get("adapt")),
            "strategy": strategy_label(config.get("freeze.name"), config.get("freeze.modules"),
                                       config.get("freeze.unfreeze_at_epoch"), config.get("freeze.cached_features"),
                                       config.get("freeze.probe")),
            "test_acc": record.get("test_acc"),
            "test_loss": record.get("test_loss"),
            "test_images": record.get("num_test_images"),  # test_acc * test_images: the correct count
            "classes": record.get("classes"),  # class names by label, for the per-class tables
            "params_total": record.get("params_total"),
            "params_trainable": record.get("params_trainable"),
            "params_trainable_after": record.get("params_trainable_after_unfreeze"),
            "frozen": ", ".join(record.get("frozen_modules") or []) or "nothing",
            "train_images": record.get("num_train_images"),
            "num_classes": record.get("num_classes"),
            "last_batch_size": record.get("last_batch_size"),
            "feature_seconds": record.get("feature_seconds"),  # a cached probe's: extracting (or reading) its features
            "feature_cache_built": record.get("feature_cache_built"),
            "images_per_class": mean_per_class,
            "images_per_class_min": fewest,
            "images_per_class_max": most,
            "run_as": run_as(config.get("precision"), config.get("deterministic"),
                             record.get("nondeterministic_ops")),
            "epoch_seconds": _mean(h.get("epoch_seconds") for h in history),
            "images_per_second": _mean(h.get("images_per_second") for h in history),
            "history": history,
            "config": config,
        })
    return pd.DataFrame(rows)


def one_per_seed(runs: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The runs with one run per (study, settings, seed, subset seed), and a line for each set of repeats.

    Of runs that repeat one another (a plain run and the same run in a sweep, a run copied elsewhere),
    the one that finished last is kept (the newest result, as if the command had been run again),
    the one whose folder sorts last where they finished together; the others are left out."""
    if runs.empty:
        return runs, []
    identity = runs.apply(lambda run: (run["name"], json.dumps(run["config"], sort_keys=True), run["seed"],
                                       run["subset_seed"]), axis=1)
    ordered = runs.assign(identity=identity).sort_values(["finished_at", "path"])
    kept, lines = [], []
    for (name, _, seed, subset_seed), copies in ordered.groupby("identity", sort=False):
        kept.append(copies.index[-1])
        if len(copies) > 1:
            left_out = ", ".join(sorted(copies["path"].iloc[:-1]))
            lines.append(f"one run (study {name}, same settings, seed {seed}, subset seed {subset_seed}) in "
                         f"{len(copies)} folders: kept {copies['path'].iloc[-1]} (finished last), left out {left_out}")
    return runs.loc[sorted(kept)], sorted(lines)


def not_completed_frame(runs: list[tuple[Path, dict[str, Any]]]) -> pd.DataFrame:
    """Runs that did not complete: folder, status and the error they recorded."""
    rows = [{"run": path.parent.as_posix(), "status": record["status"],
             "error": _first_line(record.get("error")) or "(no error recorded: still running, or killed)"}
            for path, record in runs if record["status"] != "completed"]
    return pd.DataFrame(rows, columns=["run", "status", "error"])


def pretraining_label(record: dict[str, Any]) -> str | None:
    """How a run was initialised, as run.json's ``pretraining.label`` says, else from its ``init``
    (None where the record has neither)."""
    pretraining = record.get("pretraining")
    if isinstance(pretraining, dict) and isinstance(pretraining.get("label"), str):
        return pretraining["label"]
    init = record.get("init")
    if init is None:
        return None
    if init == "random":
        return "from scratch"
    if str(init).startswith("file:"):
        return str(init)
    return f"torchvision {init}"


def adapt_label(adapt: dict[str, Any] | None) -> str:
    """How a run adapted its model: ``full fine-tuning``, ``LoRA r=8``, ``BitFit``; a LoRA setting
    other than its default is named too (``LoRA r=8, alpha=32.0, target_modules=['qkv']``), so that
    runs adapted differently are never one arm."""
    name = (adapt or {}).get("name") or "none"
    if name == "lora":
        defaults = AdaptConfig()
        others = [f"{key}={adapt[key]}" for key in ("alpha", "dropout", "target_modules")
                  if key in adapt and adapt[key] != getattr(defaults, key)]
        return ", ".join([f"LoRA r={adapt.get('rank')}", *others])
    return {"none": "full fine-tuning", "bitfit": "BitFit"}.get(name, str(name))


def strategy_label(preset: str | None, modules: list[str] | None, unfreeze_at: int | None = None,
                   cached_features: bool | None = False, probe: str | None = "optimizer") -> str:
    """A freeze setting in the study's words: the preset (``none``, ``early``...), ``custom [layer1]``,
    and for LP-FT (last_only until epoch N) ``linear probe, then fine-tune after epoch N``. A head
    fitted on cached features (freeze.cached_features) is another experiment than one trained in
    the loop, and says so: ``last_only (cached features)``, ``linear probe (cached features, L-BFGS),
    then fine-tune after epoch N``."""
    label = f"custom [{', '.join(modules)}]" if modules is not None else str(preset)
    cached = f" ({probe_words(probe)})" if cached_features else ""
    if unfreeze_at is None:
        return label + cached
    if modules is None and preset == "last_only":
        return f"linear probe{cached}, then fine-tune after epoch {unfreeze_at}"
    return f"{label}{cached}, then all train after epoch {unfreeze_at}"


def probe_words(probe: str | None) -> str:
    """How a head on cached features was fitted, in a label's words."""
    return "cached features, L-BFGS" if probe == "lbfgs" else "cached features"


def run_as(precision: str | None, deterministic: bool | None, nondeterministic_ops: list[str] | None) -> str:
    """How a run computed: ``bf16, not deterministic``; a deterministic run that used
    non-deterministic operations says how many."""
    if not deterministic:
        return f"{precision}, not deterministic"
    if nondeterministic_ops:
        return f"{precision}, deterministic but for {len(nondeterministic_ops)} op(s)"
    return f"{precision}, deterministic"


def _mean(values) -> float:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else float("nan")


def _first_line(text: str | None) -> str:
    return str(text).strip().splitlines()[0] if text and str(text).strip() else ""
