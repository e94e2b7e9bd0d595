"""The learning rate over time (``optim.schedule``, ``optim.warmup_epochs``) and over depth
(``optim.layer_decay``).

A schedule is a factor of each parameter group's own learning rate, stepped after every optimizer
step (a torch ``LambdaLR``, so its state_dict resumes it exactly): ``constant`` (the protocol's),
``cosine`` (from 1 after the warm-up towards 0, which the step after the run's last would reach) and ``step`` (times
``step_gamma`` every ``step_epochs`` epochs). A warm-up rises linearly over ``warmup_epochs``
epochs (fractions allowed), reaching the full rate at its last batch.

Layer-wise decay is explicit parameter groups: the head's stage trains at ``optim.lr``, each stage
before it at ``layer_decay`` times the next one's (timm's ``lr_scale`` would only work with timm's
own schedulers). A timm model's stages are its ``group_matcher``'s blocks; a torchvision model's
are its top-level modules in order, any module holding more than half of the parameters replaced
by its children (a ViT's encoder by its blocks, a CNN's ``features`` by its stages).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from transferlab.config import SCHEDULES
from transferlab.errors import ConfigError


@dataclass
class ScheduleFactor:
    """The factor of the base learning rate at optimizer step ``step`` (0-based) of the run: a plain
    object, so that LambdaLR's state_dict carries its settings."""

    schedule: str
    steps_per_epoch: int
    epochs: int
    warmup_epochs: float = 0.0
    step_epochs: int = 30
    step_gamma: float = 0.1

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"optim.schedule={self.schedule!r} is not allowed; choose one of: {', '.join(SCHEDULES)}")

    @property
    def warmup_steps(self) -> int:
        return round(self.warmup_epochs * self.steps_per_epoch)

    def __call__(self, step: int) -> float:
        warmup, total = self.warmup_steps, self.steps_per_epoch * self.epochs
        if step < warmup:
            return (step + 1) / warmup
        if self.schedule == "cosine":
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        if self.schedule == "step":
            return self.step_gamma ** ((step // self.steps_per_epoch) // self.step_epochs)
        return 1.0


def make_scheduler(optimizer: torch.optim.Optimizer, factor: ScheduleFactor) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-batch scheduler of ``optimizer``'s groups (each scaled from its own learning rate)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, [factor] * len(optimizer.param_groups))


def follow_new_group(scheduler: torch.optim.lr_scheduler.LambdaLR, optimizer: torch.optim.Optimizer) -> None:
    """Schedule a group added to ``optimizer`` after ``scheduler`` was made (LP-FT's switch) like the
    others, from its own learning rate, at the current step."""
    for group in optimizer.param_groups[len(scheduler.base_lrs):]:
        group.setdefault("initial_lr", group["lr"])
        scheduler.base_lrs.append(group["initial_lr"])
        scheduler.lr_lambdas.append(scheduler.lr_lambdas[0])
        group["lr"] = group["initial_lr"] * scheduler.lr_lambdas[0](scheduler.last_epoch)


# --- layer-wise learning-rate decay ---------------------------------------------------------------

def stage_parameter_names(model: nn.Module) -> list[list[str]]:
    """The parameter names of the (unadapted) model by stage, input to output, the head's last."""
    from transferlab.sources import source_of

    known = source_of(model).stages(model)  # timm's group_matcher; None: the generic rule below
    return known if known is not None else _torchvision_stages(model)


def _torchvision_stages(model: nn.Module, prefix: str = "", total: int | None = None) -> list[list[str]]:
    total = total if total is not None else sum(p.numel() for p in model.parameters())
    groups: list[list[str]] = [[f"{prefix}{name}"] for name, _ in model.named_parameters(recurse=False)]
    for name, child in model.named_children():
        names = [f"{prefix}{name}.{n}" for n, _ in child.named_parameters()]
        if not names:
            continue
        big = sum(p.numel() for p in child.parameters()) > total / 2
        with_children = sum(1 for c in child.children() if any(True for _ in c.parameters())) > 1
        groups += _torchvision_stages(child, f"{prefix}{name}.", total) if big and with_children else [names]
    return groups


def layer_decay_groups(model: nn.Module, stages: list[list[str]], lr: float, decay: float,
                       base_name=lambda name: name) -> list[dict]:
    """The trainable parameters of ``model`` as optimizer groups, one per stage that has any, the head's
    first (so that the first group's learning rate, which a run's history records, is ``lr``): the
    last stage (the head) at ``lr``, stage i of n at ``lr * decay ** (n - 1 - i)``. ``base_name`` maps
    a parameter's name to its name in ``stages`` (an adapted model's names differ); a parameter of no
    stage joins the head's."""
    if not 0.0 < decay <= 1.0:
        raise ConfigError(f"optim.layer_decay={decay} is not allowed; it must be in (0, 1]")
    stage_of = {name: index for index, names in enumerate(stages) for name in names}
    last = len(stages) - 1
    by_stage: dict[int, list[nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            by_stage.setdefault(stage_of.get(base_name(name), last), []).append(parameter)
    return [{"params": params, "lr": lr * decay ** (last - stage), "stage": stage}
            for stage, params in sorted(by_stage.items(), reverse=True)]


def describe_groups(optimizer: torch.optim.Optimizer) -> list[dict]:
    """run.json's ``param_groups``: each group's stage, learning rate and parameter count."""
    return [{"stage": group.get("stage", index), "lr": group.get("initial_lr", group["lr"]),
             "parameters": sum(p.numel() for p in group["params"])}
            for index, group in enumerate(optimizer.param_groups)]
