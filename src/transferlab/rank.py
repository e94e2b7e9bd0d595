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
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

from transferlab.composition import compose_config, config_dir
from transferlab.errors import ConfigError, TransferlabError
from transferlab.records import write_atomic

SCORE_FILE = "score.json"
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
    from transferlab.candidates import score_config  # torch: not for --help

    candidate_overrides = candidate.split()
    config = compose_config([*overrides, *candidate_overrides])
    if config.data.val_fraction <= 0:
        raise ConfigError(f"data.val_fraction={config.data.val_fraction:g} holds out no validation split; transferlab "
                          "rank needs one for its linear probe: use a data.val_fraction between 0 and 1 (default 0.2)")
    record = score_config(config)
    record.update(candidate=candidate, overrides=[*overrides, *candidate_overrides])
    folder = out / candidate_folder(record["dataset"] or config.data.name) / candidate_folder(candidate)
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / SCORE_FILE, _json(record))
    return folder / SCORE_FILE, record


def _json(record: dict[str, Any]) -> str:
    return json.dumps(record, indent=2) + "\n"
