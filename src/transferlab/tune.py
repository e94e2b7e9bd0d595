"""``transferlab tune PART``: for each arm of an experiment's sweep (Part A: pretrained and scratch at
each fraction), an Optuna study over ``optim.lr`` on a log scale on a validation split, its trials in
``outputs/<PART>-tuning/<arm>/``; then each arm's best learning rate as a normal run (the whole
training subset, no split) in the study ``<PART>-tuned``, whose run.json records how it was chosen.
The test set never takes part (transferlab.tuning)."""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import math
import sys
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import OmegaConf

from transferlab.config import validate
from transferlab.composition import compose_with_hydra, composition_error_line
from transferlab.errors import ConfigError, TransferlabError
from transferlab.launch import launch
from transferlab.records import TRIALS_SUFFIX, TUNED_SUFFIX, write_record

RESULTS_FILE = "optimization_results.yaml"  # the Optuna sweeper's best trial, in its sweep folder
TUNED_KEY = "optim.lr"
# Keys that tune sets itself; an override of one would be silently replaced, so it is refused.
SET_BY_TUNE = (TUNED_KEY, "data.val_fraction", "name")


def parse_args(args: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="transferlab tune",
        description="For each arm of PART's sweep, an Optuna study over optim.lr (log scale) on a validation "
                    "split of the training subset, then the best learning rate as a normal run in the study "
                    "PART-tuned. Finished trials and runs are skipped when run again.")
    parser.add_argument("part", metavar="PART", help="an experiment: part_a, part_b, part_c")
    # default=[]: without it, parse_intermixed_args reports OVERRIDE as required when PART is missing.
    parser.add_argument("overrides", nargs="*", default=[], metavar="OVERRIDE",
                        help="applied to every run, as in `transferlab train`; a sweep (KEY=A,B) replaces that "
                             "key's arms")
    parser.add_argument("--trials", type=int, default=8, help="trials per arm (default 8)")
    parser.add_argument("--val-fraction", type=float, default=0.2,
                        help="share of the training subset held out to score trials (default 0.2)")
    parser.add_argument("--lr", type=float, nargs=2, default=(1e-4, 1e-1), metavar=("LOW", "HIGH"),
                        help="the learning rates tried, log-uniformly (default 1e-4 0.1)")
    options = parser.parse_intermixed_args(args)  # options may stand between the overrides
    if options.trials < 1:
        raise ConfigError(f"--trials={options.trials} is not allowed; it must be >= 1")
    if not 0 < options.val_fraction < 1:
        raise ConfigError(f"--val-fraction={options.val_fraction} is not allowed; it must be in (0, 1)")
    if not 0 < options.lr[0] < options.lr[1] < math.inf:
        raise ConfigError(f"--lr {options.lr[0]} {options.lr[1]} is not allowed; give finite numbers 0 < LOW < HIGH")
    return options


def arms(part: str, overrides: list[str]) -> tuple[list[list[str]], list[str]]:
    """(the overrides of each arm, the overrides every run shares). The arms are the product of the
    experiment's ``hydra.sweeper.params``; an override of one of those keys replaces its values,
    and any other sweep adds a key, as in `transferlab train -m`."""
    parser = OverridesParser.create()
    try:
        given = parser.parse_overrides(overrides)
    except HydraException as error:
        raise ConfigError(composition_error_line(error)) from error
    for override in given:
        if override.get_key_element() in SET_BY_TUNE:
            raise ConfigError(f"{override.input_line}: tune sets {override.get_key_element()} itself; "
                              f"leave it out (see transferlab tune --help)")
    shared = [o.input_line for o in given if not o.is_sweep_override()]
    params = compose_with_hydra([f"experiment={part}", *shared]).hydra.sweeper.params or {}
    choices = {o.get_key_element(): _choices(o) for o in parser.parse_overrides([f"{k}={v}" for k, v in params.items()])}
    for override in given:
        if override.is_sweep_override() or override.get_key_element() in choices:
            choices[override.get_key_element()] = _choices(override)
    shared = [o.input_line for o in given if o.get_key_element() not in choices]
    return [list(arm) for arm in itertools.product(*choices.values())], shared


def _choices(override) -> list[str]:
    """A sweep override as one override per value; any other as it is."""
    if override.is_sweep_override():
        return [f"{override.get_key_element()}={value}" for value in override.sweep_string_iterator()]
    return [override.input_line]


def main(args: list[str]) -> int:
    options = parse_args(args)
    if importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is None:
        raise TransferlabError("transferlab tune needs Hydra's Optuna sweeper: pip install 'transferlab[optuna]'")
    arm_list, shared = arms(options.part, options.overrides)
    plans = []
    for arm in arm_list:  # every arm's config is checked before anything runs
        base = [f"experiment={options.part}", *arm, *shared]
        trials = compose_with_hydra([*base, f"data.val_fraction={options.val_fraction}",
                                     f"name={options.part}{TRIALS_SUFFIX}"])
        plans.append((",".join(arm) or "defaults", base, Path(trials.hydra.run.dir),
                      validate(trials).effective_seed))
    failed = []
    for label, base, trials_dir, seed in plans:
        print(f"transferlab tune: {label}: {options.trials} trial(s) of {TUNED_KEY} in {trials_dir}")
        try:
            print(f"transferlab tune: {label}: {tune_arm(options, base, trials_dir, seed)}")
        except TransferlabError as error:
            failed.append(f"{label}: {error}")
    for line in failed:
        print(f"transferlab tune: not tuned: {line}", file=sys.stderr)
    return 1 if failed else 0


def tune_arm(options: argparse.Namespace, base: list[str], trials_dir: Path, seed: int) -> str:
    """One arm: its Optuna study, then its best setting as a normal run; a line that says what was
    chosen. A TransferlabError when no trial, or the final run, completed."""
    low, high = options.lr
    (trials_dir / RESULTS_FILE).unlink(missing_ok=True)  # only this study's best counts
    try:  # trials that do not complete (a learning rate too high diverges) count as failed for Optuna
        launch([*base, f"data.val_fraction={options.val_fraction}", f"name={options.part}{TRIALS_SUFFIX}",
                "hydra/sweeper=optuna", "hydra.sweeper.direction=maximize", f"hydra.sweeper.n_trials={options.trials}",
                "hydra.sweeper.n_jobs=1", f"hydra.sweep.dir={_quoted(str(trials_dir))}",
                # Seeded, the sampler proposes the same learning rates again, so that tuning again finds the
                # same trial folders and skips the trials that completed.
                f"hydra.sweeper.sampler.seed={seed}", f"{TUNED_KEY}=tag(log,interval({low!r},{high!r}))"],
               multirun=True)
    except TransferlabError as error:  # when none completed, Optuna's "No trials are completed yet."
        raise TransferlabError(f"no trial completed ({error}); see the run.json files under {trials_dir}") from error
    if not (trials_dir / RESULTS_FILE).exists():
        raise TransferlabError(f"no trial completed; see the run.json files under {trials_dir}")
    best = OmegaConf.load(trials_dir / RESULTS_FILE)
    best_lr, best_val_acc = float(best.best_params[TUNED_KEY]), float(best.best_value)

    [result] = launch([*base, f"name={options.part}{TUNED_SUFFIX}", f"{TUNED_KEY}={best_lr!r}"])
    if not result.completed:
        raise TransferlabError(f"the run with {TUNED_KEY}={best_lr!r} did not complete "
                               f"({result.record.get('error')}); see {result.run_dir}")
    tuning = {"study": options.part, "keys": {TUNED_KEY: best_lr}, "trials": options.trials,
              "best_val_acc": best_val_acc, "val_fraction": options.val_fraction, "trials_dir": str(trials_dir)}
    if result.record.get("tuning") != tuning:
        write_record(result.run_dir, {**result.record, "tuning": tuning})
    return (f"{TUNED_KEY}={best_lr:.3g}, validation acc {100 * best_val_acc:.2f}% (best of {options.trials} "
            f"trial(s)); the run: {result.run_dir}")


def _quoted(value: str) -> str:
    """A Hydra override value as a quoted string, so that '=' and ',' in a folder name stay literal."""
    return "'" + value.replace("'", "\\'") + "'"
