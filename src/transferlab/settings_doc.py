"""docs/configuration.md's settings table, written from the schema's fields (transferlab.config.setting)
and the defaults conf/ composes:

    .venv/bin/python -m transferlab.settings_doc          # rewrite the table in docs/configuration.md
    .venv/bin/python -m transferlab.settings_doc --check  # exit 1 when it is not current
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from omegaconf import OmegaConf

from transferlab.composition import compose_with_hydra, config_dir
from transferlab.config import allowed_values, settings
from transferlab.settings_reference import as_yaml

REGENERATE = "python -m transferlab.settings_doc"
BEGIN = f"<!-- settings: generated from the schema's fields by `{REGENERATE}`; edit them there -->"
END = "<!-- end of settings -->"
DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
GROUPS = ("model", "freeze", "adapt", "data", "optim")  # conf/'s groups of the settings: their options' defaults


def reference_table(conf: Path) -> str:
    """docs/configuration.md's settings table: each setting's key, its default as conf/ composes
    it (and where an option of its group composes another, that option's), what it allows, and
    its meaning."""
    default = compose_with_hydra([], with_hydra=False)
    options = {f"{group}={path.stem}": compose_with_hydra([f"{group}={path.stem}"], with_hydra=False)
               for group in GROUPS for path in sorted((conf / group).glob("*.yaml"))}
    rows = ["| key | default | allowed | meaning |", "| --- | --- | --- | --- |"]
    for key, entry in settings():
        value = as_yaml(OmegaConf.select(default, key))
        others = [f"{option}: `{as_yaml(OmegaConf.select(node, key))}`" for option, node in options.items()
                  if key.split(".")[0] == option.split("=")[0] and key != f"{option.split('=')[0]}.name"
                  and as_yaml(OmegaConf.select(node, key)) != value]
        shown = f"`{value}`" + (f" ({'; '.join(others)})" if others else "")
        choices = entry.metadata["choices"]
        allowed = ", ".join(f"`{name}`" for name in choices) if choices else allowed_values(entry)
        rows.append(f"| `{key}` | {shown} | {allowed} | {entry.metadata['meaning'].replace('|', '/')} |")
    return "\n".join(rows)


def current_doc(text: str, table: str) -> str:
    """``text`` (docs/configuration.md) with the table between its BEGIN and END lines replaced."""
    head, begin, rest = text.partition(BEGIN)
    _, end, tail = rest.partition(END)
    if not begin or not end:
        raise ValueError(f"{DOC} has lost its lines {BEGIN!r} and {END!r}; put them back around the table")
    return f"{head}{BEGIN}\n{table}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=REGENERATE, description="docs/configuration.md's settings table")
    parser.add_argument("--check", action="store_true", help="exit 1 when the table is not current")
    options = parser.parse_args(argv)
    text = DOC.read_text()
    wanted = current_doc(text, reference_table(config_dir()))
    if options.check:
        if wanted != text:
            print(f"{DOC} is not current: run {REGENERATE}", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
