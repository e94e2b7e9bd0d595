"""The ``transferlab`` command: parse, call, and turn known errors into one line and an exit code.

    transferlab train [OVERRIDES ...]      one run, or a sweep with -m (Hydra)
    transferlab study [OVERRIDES ...]     the three sweeps of the study
    transferlab study digits [OVERRIDES]  the digits transfer study, then its report
    transferlab report [PATH ...] [--out DIR]
    transferlab tune PART [--trials N] [OVERRIDES ...]
    transferlab prepare [model=NAME] [data.root=DIR]
    transferlab cache list | remove PATH ... | remove --all
    transferlab rank [--candidate "OVERRIDES"] ... [OVERRIDES ...]
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable

from transferlab.errors import ConfigError, RunInterrupted, TransferlabError

USAGE = """usage: transferlab COMMAND [ARGS ...]

transferlab: how much does pretraining help, with how much data, for which model, with which
layers trained? On CIFAR-10, CIFAR-100 or your own image folder.

commands:
  train    train and evaluate one run, or a sweep with -m (Hydra overrides: KEY=VALUE ...)
           e.g. transferlab train model=alexnet data.fraction=0.1
                transferlab train -m experiment=part_a
           transferlab train --help lists every setting
  study    the whole study: the sweeps experiment=part_a, part_b and part_c (12 runs);
           transferlab study digits: the digits transfer study, offline, minutes on a CPU
           e.g. transferlab study    or, a dry run without downloads:
                transferlab study data=synthetic data.image_size=64 model.pretrained=false train.epochs=1
  report   tables and figures from finished runs: transferlab report [PATH ...] [--out DIR]
  tune     tune optim.lr per arm of a part on a validation split, then run each arm's best:
           transferlab tune part_a [--trials 8] [OVERRIDES ...]  (needs transferlab[optuna])
  prepare  download and verify CIFAR-10 (or data=cifar100; data=imagefolder: decode its cache) and the
           pretrained weights for offline machines: transferlab prepare [data=NAME] [model=NAME] [data.root=DIR]
  rank     score pretrained candidates from their frozen features before fine-tuning (LogME, H-score, kNN,
           a linear probe, NCE, LEEP): transferlab rank [--candidate "OVERRIDES"] ... [OVERRIDES ...]
  cache    the decoded-image caches of data=imagefolder: transferlab cache list, transferlab cache remove PATH|--all

Run `transferlab COMMAND --help` for a command's options."""


def train(args: list[str]) -> int:
    """`transferlab train [-m] OVERRIDES`: 0 when every run completed (or had completed before), 1
    when any did not; Hydra's own flags (--help, --cfg, -sc, --info) print what Hydra prints."""
    from transferlab.hydra_internals import hydra_args_parser
    from transferlab.launch import hydra_command, launch

    parser = hydra_args_parser()
    try:
        options = parser.parse_args(args)
    except SystemExit as exit_:  # argparse has printed its usage line; --version exits 0 after printing
        return int(exit_.code or 0)
    if options.help or options.hydra_help or options.cfg or options.shell_completion or options.info:
        hydra_command(options, parser)
        return 0
    if options.experimental_rerun or options.config_path or options.config_name:
        raise ConfigError("--experimental-rerun, --config-path and --config-name are not supported by transferlab "
                          "train; use --config-dir DIR to put your own config group files first")
    results = launch(options.overrides, multirun=options.multirun, extra_config_dir=options.config_dir)
    return 0 if all(result.completed for result in results) else 1


STUDY_PARTS = ("part_a", "part_b", "part_c")


def study(args: list[str]) -> int:
    """The whole study: the three experiment sweeps in turn, with the same extra overrides. A part
    that fails does not stop the next; the exit code is non-zero when any run did not complete."""
    from transferlab.launch import launch

    if args[:1] == ["digits"]:
        return digits_study(args[1:])
    if any(arg in ("-h", "--help") for arg in args):
        print("usage: transferlab study [OVERRIDES ...]\n\nRuns `transferlab train -m experiment=PART OVERRIDES` "
              f"for PART in {', '.join(STUDY_PARTS)} (12 runs); finished runs are skipped.")
        return 0
    failed = [part for part in STUDY_PARTS
              if not all(result.completed for result in launch([f"experiment={part}", *args], multirun=True))]
    if failed:
        print(f"transferlab study: runs did not complete in: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def digits_study(args: list[str]) -> int:
    """`transferlab study digits [OVERRIDES]`: the digits transfer study (transferlab.digits_study), then
    its report, and the transfer effect in one line per amount."""
    from transferlab.api import report as make_report
    from transferlab.digits_study import run_study, transfer_summary

    if any(arg in ("-h", "--help") for arg in args):
        print("usage: transferlab study digits [OVERRIDES ...]\n\nPretrains ResNet18 on digits 0-4 "
              "(experiment=digits_pretrain), transfers its model.pt to digits 5-9 against from scratch at K = 1 "
              "... 64 images per digit, 3 repeats (experiment=digits), then reports; offline, finished runs are "
              "skipped. data.per_class, data.fraction and repeat replace the sweep's values.")
        return 0
    study = run_study(args)
    report = make_report(*study.folders, out=study.report_folder, show=True)
    print("\n".join(["", "Transfer effect (pretrained on digits 0-4 minus from scratch, test accuracy):",
                     *transfer_summary(report.differences(TRANSFER_STUDY))]))
    if not study.completed:
        print("transferlab study digits: some runs did not complete (listed in the report)", file=sys.stderr)
        return 1
    return 0


TRANSFER_STUDY = "digits"


def prepare(args: list[str]) -> int:
    from transferlab.prepare import main as prepare_main

    return prepare_main(args)


def tune(args: list[str]) -> int:
    from transferlab.tune import main as tune_main

    return tune_main(args)


def cache(args: list[str]) -> int:
    from transferlab.caches import main as cache_main

    return cache_main(args)


def rank(args: list[str]) -> int:
    from transferlab.rank import main as rank_main

    return rank_main(args)


def report(args: list[str]) -> int:
    from transferlab.report import main as report_main

    return report_main(args)


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "train": train, "study": study, "report": report, "prepare": prepare, "tune": tune, "cache": cache,
    "rank": rank,
}

COMPLETION_FLAGS = ("-sc", "--shell-completion")  # Hydra's
# Commands whose arguments are Hydra overrides of conf/ (study's are given to every part's sweep,
# prepare's are composed like train's), so Hydra completes them.
OVERRIDE_COMMANDS = ("train", "study", "prepare")
COMMAND_WORD = re.compile(r"(\s*\S+\s+)(\S*)(\s.*)?", re.DOTALL)  # app, command word, the rest


def is_completion_request(argv: list[str]) -> bool:
    """`transferlab -sc ...` (what the installed shell script calls) or `transferlab train -sc ...`."""
    return argv[0] in COMPLETION_FLAGS or (argv[0] in OVERRIDE_COMMANDS and any(a in COMPLETION_FLAGS for a in argv))


def shell_completion(argv: list[str]) -> int:
    """Hydra's shell completion for the whole command. ``install=SHELL`` and ``uninstall=SHELL``
    print Hydra's script (it registers `transferlab` and calls `transferlab -sc query=SHELL` with
    COMP_LINE set to the line typed so far). A query completes the command names in the first
    word, and after train, study or prepare hands Hydra the line without the command word, which
    it would otherwise read as an override."""
    args = [arg for arg in argv if arg not in (*COMPLETION_FLAGS, *COMMANDS)]
    query = next((arg.partition("=")[2] for arg in args if arg.startswith("query=")), None)
    try:
        if query is None:
            return train(["-sc", *args])
        parts = COMMAND_WORD.fullmatch(os.environ.get("COMP_LINE", ""))
        if parts is None:  # the cursor is still on `transferlab`
            return 0
        app, command, rest = parts.groups()
        if rest is None:  # the cursor is on the command word
            separator = "\n" if query == "fish" else " "  # how Hydra's scripts for these shells read the reply
            print(separator.join(name for name in COMMANDS if name.startswith(command)))
            return 0
        if command not in OVERRIDE_COMMANDS:
            return 0  # report takes paths: the shell's own file completion applies
        os.environ["COMP_LINE"] = app + rest.lstrip()
        return train(["-sc", *args])
    except TransferlabError as error:
        print(f"transferlab: error: {' '.join(str(error).split())}", file=sys.stderr)  # Hydra's are multi-line
        return 1


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    if is_completion_request(argv):
        return shell_completion(argv)
    command, args = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"transferlab: unknown command {command!r}; choose one of: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    try:
        return COMMANDS[command](args)
    except TransferlabError as error:
        print(f"transferlab {command}: error: {error}", file=sys.stderr)
        return 1
    except RunInterrupted as interrupt:
        if interrupt.sweep:
            print(f"transferlab {command}: interrupted; the runs of the sweep in {interrupt.run_dir} that were "
                  "training are marked interrupted and keep their last epoch-end checkpoints: run the same command "
                  "again to resume", file=sys.stderr)
            return interrupt.exit_code
        return interrupt.exit_code  # the run has said what it keeps and what to do
    except KeyboardInterrupt:
        print(f"transferlab {command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
