"""What each setting means, as the schema's fields say it (transferlab.config.setting): the list
of `transferlab train --help` (settings_help, with the composed values). docs/configuration.md's
table is written from the same fields by transferlab.settings_doc."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from transferlab.config import allowed_values, settings


def help_line(entry: Any) -> str:
    """A setting's one line: its meaning, then what it allows."""
    meaning, allowed = entry.metadata["meaning"], allowed_values(entry)
    if entry.metadata["choices"]:
        return f"{meaning}: {allowed}"
    return f"{meaning}, {allowed}" if allowed else meaning


KEY_MEANINGS: dict[str, str] = {key: help_line(entry) for key, entry in settings()}


def settings_help(_root_: DictConfig) -> str:
    """`transferlab train --help`'s settings (the resolver transferlab_settings_help in
    conf/hydra/help/transferlab.yaml): each setting with its composed value and meaning."""
    width = max(map(len, KEY_MEANINGS))
    lines = [f"  {key:<{width}} {as_yaml(OmegaConf.select(_root_, key)):<14} {meaning}"
             for key, meaning in KEY_MEANINGS.items()]
    # Hydra fills the help template in with string.Template: a '$' of ours must not start a placeholder.
    return "\n".join(lines).replace("$", "$$")


def as_yaml(value: Any) -> str:
    if OmegaConf.is_list(value):
        return f"[{', '.join(as_yaml(item) for item in value)}]"
    if value is None:
        return "null"
    return str(value).lower() if isinstance(value, bool) else str(value)
