"""Hydra plumbing: where conf/ is, the schema and resolvers registered with Hydra, conf/ composed
with a command line's overrides, and Hydra's, OmegaConf's and PyYAML's multi-line errors as the one
line a ConfigError carries. The schema itself is transferlab.config."""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from transferlab.config import Config, check_name, validate
from transferlab.errors import ConfigError, TransferlabError
from transferlab.run_folders import run_dirname, run_folder_excluded_keys
from transferlab.settings_reference import settings_help

MAX_LISTED_OPTIONS = 20  # a config group with more options is not listed in full in an error line


def config_dir() -> Path:
    """The folder of transferlab's configs: ``transferlab/conf`` in an installed package (the wheel
    ships the top-level conf/ there), else the checkout's own top-level conf/ (an editable install,
    or running from the source tree), so that edits there take effect."""
    package = Path(__file__).resolve().parent
    candidates = (package / "conf", package.parents[1] / "conf")
    for candidate in candidates:
        if (candidate / "config.yaml").is_file():
            return candidate
    raise TransferlabError(f"transferlab's configs are missing: no config.yaml in {' or '.join(map(str, candidates))}; "
                           "reinstall transferlab")


def register_with_hydra() -> None:
    """Put the schema in Hydra's ConfigStore (conf/config.yaml lists it first in its defaults) and
    register the resolvers (run folders, lp_ft's switch, the default data.fraction, --help's list
    of settings). Every torchvision classification model is an option of the `model` group through
    hydra_plugins/transferlab_models.py (conf/model/ has files for the models of the table in
    transferlab.models; those win), from names shipped with transferlab: composing, --help and Tab
    never import torch."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="transferlab_schema", node=Config)
    OmegaConf.register_new_resolver("transferlab_dirname", run_dirname, replace=True)
    OmegaConf.register_new_resolver("transferlab_name", check_name, replace=True)
    OmegaConf.register_new_resolver("transferlab_excluded_keys", run_folder_excluded_keys, replace=True)
    OmegaConf.register_new_resolver("transferlab_half_of", half_of, replace=True)
    OmegaConf.register_new_resolver("transferlab_fraction_default", fraction_default, replace=True)
    OmegaConf.register_new_resolver("transferlab_settings_help", settings_help, replace=True)


def compose_config(overrides: list[str]) -> Config:
    """conf/ composed with ``overrides`` and validated, outside of a Hydra run (for commands
    other than `train`)."""
    return validate(compose_with_hydra(overrides, with_hydra=False))


def compose_with_hydra(overrides: list[str], with_hydra: bool = True, conf: Path | None = None) -> DictConfig:
    """conf/ (or the config folder ``conf``) composed with ``overrides`` (no sweeps), with the
    ``hydra`` section a run of them gets (its run folder, ``hydra.run.dir``, and sweeper); not
    validated."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    register_with_hydra()
    try:
        with initialize_config_dir(config_dir=str(conf or config_dir()), version_base="1.3"):
            return compose(config_name="config", overrides=command_line_overrides(overrides),
                           return_hydra_config=with_hydra)
    except (HydraException, OmegaConfBaseException) as error:
        raise ConfigError(composition_error_line(error)) from error
    except yaml.YAMLError as error:
        raise ConfigError(yaml_error_line(error)) from error


def composition_error_line(error: Exception) -> str:
    """Hydra's and OmegaConf's multi-line composition errors as one line that names the key and,
    where it can, what is allowed."""
    from hydra.errors import OverrideParseException

    if isinstance(error, OverrideParseException):
        return override_error_line(error.override, error.message)
    cause = error.__cause__ if isinstance(error.__cause__, OmegaConfBaseException) else error
    text = str(error).split("Config search path:")[0]
    if "Available options in" in text:  # an unknown option of a config group
        head, _, options = text.partition("Available options in")
        group, _, names = options.partition(":")
        missing = head.replace("In 'config':", "").strip()
        wanted = missing.rpartition("/")[2].rstrip("'")
        close = difflib.get_close_matches(wanted, names.split(), n=3, cutoff=0.6)
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        if "'model/timm/" in missing:  # the group holds torchvision's models; timm's are names
            return f"{missing}: the model group holds torchvision's models; a timm model is model.name=timm/NAME[.TAG]"
        if len(names.split()) > MAX_LISTED_OPTIONS:  # the model group: every torchvision model
            return f"{missing}{hint}; {group.strip()} has {len(names.split())} options: transferlab train --help lists them"
        line = f"{missing}{hint}; choose one of {group.strip()}: {', '.join(names.split())}"
        if "hydra/launcher" in group:
            line += " (the submitit and joblib launchers come with pip install 'transferlab[cluster]')"
        if "hydra/sweeper" in group:
            line += " (the optuna sweeper comes with pip install 'transferlab[optuna]')"
        return line
    key = getattr(cause, "full_key", None)
    message = str(cause).strip().splitlines()[0]
    if key and "not in" in message:  # a misspelled key
        parent = key.rpartition(".")[0]
        schema = OmegaConf.structured(Config)
        node = OmegaConf.select(schema, parent) if parent else schema
        allowed = f"; allowed keys{f' in {parent}' if parent else ''}: {', '.join(node)}" if node is not None else ""
        return f"unknown key {key}{allowed}"
    return f"{key}: {message}" if key else " ".join(line.strip() for line in text.splitlines() if line.strip())


HOME_PREFIX = re.compile(r"~[A-Za-z0-9._-]*(?=/|$)")  # ~ or ~user, alone or before a '/'


def home_expanded_overrides(overrides: Sequence[str]) -> list[str]:
    """``overrides`` with a leading ``~`` (or ``~user``) of each value made the home folder's path,
    as bash would have done: zsh and sh leave ``data.root=~/pets`` as it is, and Hydra's grammar
    reads no unquoted ``~``. Each value of a sweep's list (``data.root=~/a,~/b``) counts; a quoted
    value, and the ``~KEY`` that deletes a key, are left as they are."""
    expanded = []
    for override in overrides:
        key, equals, value = override.partition("=")
        if equals and not value.startswith(("'", '"')) and "~" in value:
            value = ",".join(HOME_PREFIX.sub(lambda home: os.path.expanduser(home[0]), item, count=1)
                             if item.startswith("~") else item for item in value.split(","))
        expanded.append(f"{key}{equals}{value}")
    return expanded


def command_line_overrides(overrides: Sequence[str]) -> list[str]:
    """``overrides`` as Hydra is to read them (home_expanded_overrides), once none deletes a setting of
    transferlab's (``~model``, ``~optim.lr``): Hydra's delete would leave the schema's default in its
    place (resnet18 for ``~model``) without a word."""
    settings = {entry.name for entry in dataclasses.fields(Config)}
    for override in overrides:
        key = override.partition("=")[0]
        if key.startswith("~") and key[1:].replace("/", ".").split(".")[0] in settings:
            raise ConfigError(f"{override} is not allowed: deleting {key[1:]} would leave its default in its place "
                              f"(model.name=resnet18 for ~model); set {key[1:]}=... to what the run should use")
    return home_expanded_overrides(overrides)


GRAMMAR_URL = "https://hydra.cc/docs/1.2/advanced/override_grammar/basic"
LEXER_ERROR = "LexerNoViableAltException: "  # Hydra's message: this, the override, then a line with ^ under the bad character


def override_error_line(override: str, message: str) -> str:
    """Hydra's message for an override it cannot parse (``seed=10^23``, ``model=[``) as one line
    that names the override and, for a character the grammar does not allow, that character."""
    lines = message.splitlines()
    if lines[0].startswith(LEXER_ERROR) and len(lines) > 1 and "^" in lines[1]:
        at = lines[1].index("^") - len(LEXER_ERROR)
        character = f"{override[at]!r} " if 0 <= at < len(override) else ""
        key, _, value = override.partition("=")
        if character == "'~' ":  # the shell (zsh, sh; bash expands it) left a home folder's ~ to us
            quoted = f"quote it for Hydra inside the shell's quotes: {key}=\"'{value}'\""
            home = f"write {key}={value.replace('~', '$HOME', 1)}, or " if value.startswith("~") else ""
            return (f"cannot read the override {override!r}: Hydra's override grammar does not allow an unquoted "
                    f"'~' in a value; {home}{quoted} (see {GRAMMAR_URL})")
        reason = (f"the character {character}is not allowed in an unquoted value; quote the value "
                  "(KEY='VALUE') or write a number in digits")
    elif "mismatched input '='" in lines[0] and "=" in override.partition("=")[2]:
        # A path into a run folder (outputs/runs/seed=1,data.fraction=0.1/model.pt) holds '=' and ','.
        key, _, value = override.partition("=")
        reason = (f"{lines[0]}; a value with '=' or ',' in it (a path into a run folder) must be quoted, "
                  f"with the whole override in single quotes for the shell: '{key}=\"{value}\"'")
    else:
        reason = lines[0]
    return f"cannot read the override {override!r}: {reason} (see {GRAMMAR_URL})"


def yaml_error_line(error: Exception) -> str:
    """A YAML syntax error in one of conf/'s files (PyYAML's message is several lines, with the
    file, line and column in them) as one line that starts with the file and line."""
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    where = f"{mark.name}, line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "a file in conf/"
    what = "; ".join(str(part) for part in (getattr(error, "context", None), getattr(error, "problem", None)) if part)
    return f"{where}: not valid YAML ({what or type(error).__name__}); fix that file or reinstall transferlab"




def fraction_default(per_class: Optional[int], default: float) -> Optional[float]:
    """conf/data/cifar10.yaml's data.fraction: ``default``, or null when data.per_class is set, so
    that data.per_class=K alone replaces the default share and with data.fraction=F fails."""
    return None if per_class is not None else default


def half_of(epochs: int) -> int:
    """conf/freeze/lp_ft.yaml's switch: a linear probe for the first half of the epochs. A run of
    one epoch has no second half: the error names train.epochs, which the user set, rather than
    the freeze.unfreeze_at_epoch=0 it would resolve to."""
    if int(epochs) < 2:
        raise ConfigError(f"freeze=lp_ft needs train.epochs >= 2 (a linear probe for the first half of the "
                          f"epochs, then fine-tuning), but train.epochs={epochs}; raise train.epochs")
    return int(epochs) // 2


