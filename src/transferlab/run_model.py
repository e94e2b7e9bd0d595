"""The model of a run: built from its source as the config says, checked (weights, image size),
frozen, adapted, and on its device; the record learns how it was initialised and what trains.
run.py calls ``build_run_model`` once; everything about a model below it is models.py's and the
sources' (transferlab.sources)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from transferlab import adapt, schedules
from transferlab.config import Config
from transferlab.errors import ConfigError
from transferlab.models import (
    apply_freeze, build_model_with_init, check_image_size, count_parameters, frozen_modules, head_modules, head_name,
    is_inside_heads, refuse_non_finite_weights, trainable_parameter_names,
)
from transferlab.probe import PROBE_CACHED, PROBE_IN_LOOP, check_head_only
from transferlab.records import RunRecord

log = logging.getLogger("transferlab.run")  # the run's log: a weights file's head line is one of its lines


def build_run_model(config: Config, classes: list[str], device: torch.device, memory_format: torch.memory_format,
                    record: RunRecord, digest_memo: Path | None = None) -> tuple[torch.nn.Module, list[list[str]]]:
    """(the model, frozen and adapted as the config says, on ``device``; its stages by parameter
    name, for optim.layer_decay). ``digest_memo``: where weights files' digests are remembered."""
    model, init = build_model_with_init(config.model.name, config.model.pretrained, config.model.weights, len(classes),
                                        config.data.image_size, digest_memo, classes=classes,
                                        new_head=config.model.new_head, weights_name=config.model.weights_name)
    record.init, record.pretraining = init.init, init.as_record()
    refuse_non_finite_weights(model, config.model.name, init)
    if init.head:  # a weights file: which head the run starts with, and why
        log.info("%s: %s", init.init, init.head)
    check_image_size(model, config.model.name, config.data.image_size)
    frozen = frozen_modules(model, config.model.name, config.freeze.name, config.freeze.modules)
    record.frozen_modules = list(frozen)
    trainable = trainable_parameter_names(model, frozen)
    head = head_name(config.model.name, model)
    if not trainable:
        raise ConfigError(f"freeze.modules={list(frozen)} leaves no parameter to train; keep {head} out of it")
    apply_freeze(model, trainable)
    heads = head_modules(config.model.name, model)  # a distilled DeiT has two: each one is the head
    if config.freeze.cached_features:  # (a model of several heads is refused by probe.py: none is its last step)
        check_head_only(trainable, head)
    if all(is_inside_heads(name, heads) for name in trainable):  # a linear probe (LP-FT's first phase included)
        if config.adapt.name != "none":  # as Config refuses freeze=last_only with it, whatever the spelling
            spelling = (f"freeze.modules={list(config.freeze.modules)}" if config.freeze.modules is not None
                        else f"freeze={config.freeze.name}")
            raise ConfigError(f"adapt={config.adapt.name} with {spelling} leaves only the head "
                              f"({head}), which trains fully anyway; freeze fewer modules, or use adapt=none for a "
                              "linear probe")
        record.probe = PROBE_CACHED if config.freeze.cached_features else PROBE_IN_LOOP
    stages = schedules.stage_parameter_names(model) if config.optim.layer_decay is not None else []
    lora = adapt.LoraSettings(config.adapt.rank, config.adapt.alpha, config.adapt.dropout,
                              tuple(config.adapt.target_modules) if config.adapt.target_modules else None)
    architecture_total = count_parameters(model)[0]
    model, record.adapt = adapt.adapt_model(model, config.adapt.name, head, frozen, trainable, lora)
    model.to(device, memory_format=memory_format)
    # params_total is the architecture's (what model.pt holds), so that arms adapted differently compare;
    # LoRA's adapters (and peft's copy of the head) are counted apart.
    adapted_total, record.params_trainable = count_parameters(model)
    record.params_total = architecture_total
    if adapted_total != architecture_total:
        record.adapt["params_added"] = adapted_total - architecture_total
    return model, stages
