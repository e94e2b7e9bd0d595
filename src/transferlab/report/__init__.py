"""`transferlab report [PATH ...] [--out DIR] [--min-difference POINTS] [--target-accuracy FRACTION]`: run records in, tables and figures out.

Every run.json under the PATHs (default outputs/) is read. A study, settings, seed and subset seed
run more than once counts once (the run that finished last; the others are named in a warning).
Completed runs are grouped by study (the record's ``name``: part_a, part_b, part_c, lpft, or any
other sweep) and, within a study, by every setting that is not one of the study's own swept keys,
the precision and device a run actually used among them, and always by data.sampling, so that a dry
run on synthetic data is never averaged with a CIFAR-10 run, nor a bf16 GPU run with an fp32 CPU
run, nor a stratified subset paired with a uniform one. Within a group, runs that differ only in
seed and subset seed are replicates of one arm. Each group gives an arm table and a table of the
differences the study compares, paired by replicate with their 95 % intervals, p-values (paired
t, exact sign test, Holm over the table) and the pairs that would give 80 % power (at the observed
difference or --min-difference points), and where runs kept their per-image test predictions
(predictions.npz) the test set's own intervals, a per-class table and a confusion matrix per arm
(CSV of numbers, Markdown, and printed), and PNG figures; where its arms were measured at several amounts of
data, their learning curves, the effective data of pretraining and the data needed for --target-accuracy
(curves.py); report.md puts them on one page (docs/report.md explains every column). Runs that did not complete are listed, never averaged in. The same runs give
byte-identical report.md, CSV and Markdown files (every resampling is seeded).

A completed record with a field the report cannot use (a test_acc that is not a finite number in
[0, 1], a history entry that is not numbers...) is skipped with a warning that names the file and
the field; so is a samples.npz that cannot be read (the report goes on without its grid). A report
that cannot be written (--out a file, a read-only folder, a full disk) is one error line, exit 1.

This module never imports torch (nor anything that does): the report reads records, it never trains.
"""

from __future__ import annotations

import argparse
import types
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pandas as pd

from transferlab.records import RUN_FILE, write_atomic
from transferlab.report.curve_figures import draw_curve_figures
from transferlab.report.curve_tables import curve_tables
from transferlab.report.curves import group_curves
from transferlab.report.figures import draw_group_figures, draw_samples
from transferlab.report.page import Section, Table, report_markdown
from transferlab.report.ranking import find_score_files, ranking_sections
from transferlab.report.reading import (
    completed_frame, find_run_files, flatten, not_completed_frame, one_per_seed, read_runs,
)
from transferlab.report.studies import REFERENCE, STRATEGIES, Group, make_groups
from transferlab.report.tables import (
    arm_caption, arm_tables, cell, contrast_caption, contrast_tables, csv_text, markdown_table, per_class_tables,
    short_names, testset_note,
)
from transferlab.report.tuning import split_trials, tuning_sections

__all__ = ["REFERENCE", "SECTION_BUILDERS", "STRATEGIES", "Section", "Table", "cell", "flatten", "main",
           "short_names"]

DEFAULT_PATH = "outputs"
DEFAULT_OUT = "outputs/report"
REPORT_FILE = "report.md"


def parse_args(args: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="transferlab report",
        description="Tables (CSV, Markdown) and figures (PNG) from the run.json files under PATH, and report.md.")
    parser.add_argument("paths", nargs="*", metavar="PATH", default=[DEFAULT_PATH],
                        help=f"folders to search for {RUN_FILE} (default: {DEFAULT_PATH})")
    parser.add_argument("--out", default=DEFAULT_OUT, metavar="DIR", help=f"where to write (default: {DEFAULT_OUT})")
    parser.add_argument("--min-difference", type=float, default=None, metavar="POINTS",
                        help="the difference (percentage points) the power column asks about: how many pairs "
                             "would resolve it with 80 %% power (default: each comparison's observed difference)")
    parser.add_argument("--target-accuracy", type=float, default=None, metavar="FRACTION",
                        help="the test accuracy (a fraction, 0.9 for 90 %%) the data-needed table asks about: "
                             "the training images each arm needs for it (default: the best accuracy its "
                             "from-scratch arm reached)")
    return parser.parse_args(args)


def group_tables(group: Group, min_difference: float | None = None) -> list[Table]:
    """A group's arm table, where it compares arms its table of differences (<stem>-differences,
    with the pairs needed to resolve ``min_difference`` points), and where its runs kept their test
    predictions, its accuracy per class (<stem>-per-class)."""
    tables = [Table(group.stem, *arm_tables(group), caption=arm_caption(group))]
    if group.contrasts:
        tables.append(Table(f"{group.stem}-differences", *contrast_tables(group, min_difference),
                            caption=contrast_caption(group),
                            heading=": paired differences"))
    if (per_class := per_class_tables(group)) is not None:
        tables.append(Table(f"{group.stem}-per-class", *per_class, caption=(
            "Test accuracy (%) of each class, mean over the arm's runs that kept their test predictions "
            "(predictions.npz)." + testset_note(group, "Not in it:")), heading=": accuracy per class"))
    return tables


def group_sections(runs: pd.DataFrame, out: Path, min_difference: float | None = None,
                   target_accuracy: float | None = None) -> list[Section]:
    """A section per group of runs of each study: its tables, with the reference where it applies, and
    its figures; where its arms were measured at several amounts of data, its learning curves (curves.py)."""
    sections = []
    for group in make_groups(runs):
        curves = group_curves(group.arms, [facet.name for facet in group.facets])
        tables = group_tables(group, min_difference) + curve_tables(group.stem, curves, target_accuracy)
        figures = draw_group_figures(group, out) + draw_curve_figures(group.stem, group.part.label, group.title,
                                                                      curves, out)
        sections.append(Section(group.stem, group.title, tables, figures, group.question, group.note))
    return sections


# What the report shows, in this order: each builder turns the completed runs (one per study,
# settings and seed) into sections, writing its figures into the output folder.
SECTION_BUILDERS: list[Callable[[pd.DataFrame, Path], list[Section]]] = [group_sections]


def main(args: list[str]) -> int:
    """The report; 1 with one line on stderr when there is nothing to report or it cannot be written
    (--out is a file, a read-only folder, a full disk: the OS's reason); the files already written
    stay whole, none is left empty or half written."""
    options = parse_args(args)
    out = Path(options.out)
    if options.min_difference is not None and not (0 < options.min_difference <= 100):
        print(f"transferlab report: error: --min-difference={options.min_difference:g} is not allowed; give a "
              "difference in percentage points above 0 and at most 100", file=sys.stderr)
        return 1
    if options.target_accuracy is not None and not (0 < options.target_accuracy < 1):
        print(f"transferlab report: error: --target-accuracy={options.target_accuracy:g} is not allowed; give an "
              "accuracy as a fraction above 0 and below 1 (0.9 for 90 %)", file=sys.stderr)
        return 1
    refusal = _out_holding_runs(options.paths, out)
    if refusal is not None:
        print(f"transferlab report: error: --out {out.as_posix()} {refusal}; choose a folder that holds no run "
              f"(the default is {DEFAULT_OUT})", file=sys.stderr)
        return 1
    try:
        return make_report(options, out)
    except OSError as error:
        print(f"transferlab report: error: cannot write the report to {out.as_posix()}: {_write_failure(error, out)}",
              file=sys.stderr)
        return 1


def _out_holding_runs(paths: list[str], out: Path) -> str | None:
    """Why ``out`` may not take the report, or None: it is (or is inside) a run folder, or holds
    runs or a PATH to report, which the report would leave out (it reads no run.json under --out)."""
    resolved = out.resolve()
    for folder in (resolved, *resolved.parents):
        if (folder / RUN_FILE).is_file():
            return f"is {'' if folder == resolved else 'inside '}the run folder {folder.as_posix()}"
    for given in paths:
        path = Path(given).resolve()
        if path == resolved or resolved in path.parents:
            return f"holds {given}, which it would report"
    if resolved.is_dir():
        held = next(resolved.rglob(RUN_FILE), None)
        if held is not None:
            return f"holds runs ({held.as_posix()}), which the report would leave out"
    return None


def _write_failure(error: OSError, out: Path) -> str:
    """Why: ``it is a file, not a folder``, or the OS's reason and the file it was writing."""
    if out.exists() and not out.is_dir():
        return "it is a file, not a folder"
    reason = error.strerror or str(error)
    if error.filename is None or Path(error.filename) == out:
        return reason
    return f"{reason} ({Path(error.filename).as_posix()})"


def make_report(options: argparse.Namespace, out: Path) -> int:
    runs, skipped = read_runs(find_run_files(options.paths, out))
    runs, trials = split_trials(runs)
    for line in skipped:
        print(f"transferlab report: warning: skipped {line}", file=sys.stderr)
    if not runs and not trials and not find_score_files(options.paths, out):
        print(f"transferlab report: error: no readable {RUN_FILE} under {', '.join(options.paths)}", file=sys.stderr)
        return 1

    completed, repeats = one_per_seed(completed_frame(runs))
    for line in repeats:
        print(f"transferlab report: warning: {line}", file=sys.stderr)

    out.mkdir(parents=True, exist_ok=True)
    builders = [partial(build, min_difference=options.min_difference, target_accuracy=options.target_accuracy)
                if build is group_sections else build for build in SECTION_BUILDERS]
    sections = [section for build in builders for section in build(completed, out)] + tuning_sections(runs, trials)
    rankings, unread_scores = ranking_sections(options.paths, completed, out)  # `transferlab rank`'s score.json
    sections += rankings
    for line in unread_scores:
        print(f"transferlab report: warning: skipped {line}", file=sys.stderr)
    samples, unreadable = draw_samples(completed, out)
    for line in unreadable:
        print(f"transferlab report: warning: no sample grid from {line}", file=sys.stderr)
    not_completed = not_completed_frame(runs)
    for section in sections:
        for table in section.tables:
            write_atomic(out / f"{table.stem}.csv", csv_text(table.csv))
            write_atomic(out / f"{table.stem}.md", f"## {section.title}{table.heading}\n\n{table.markdown()}")
            print(f"\n{section.title}{table.heading}\n\n{table.markdown()}", end="")
    if len(not_completed):
        print(f"\nRuns that did not complete\n\n{markdown_table(not_completed)}", end="")
    report = report_markdown(options.paths, len(runs), sections, samples, not_completed, skipped, repeats)
    write_atomic(out / REPORT_FILE, report)
    print(f"\n{len(runs)} run records read, {len(not_completed)} did not complete; "
          f"report: {(out / REPORT_FILE).as_posix()}")
    return 0


class _CallablePackage(types.ModuleType):
    """`transferlab.report(PATH, out=None)`, the Python API's report (transferlab.api.report), is this
    package called: the package and the function share the name `transferlab.report`, and importing the
    package sets that attribute of transferlab to it, so the package answers the call."""

    def __call__(self, *paths, out=None, show=False):
        import importlib  # the API uses this package: it is looked up when called, never imported with it

        return importlib.import_module("transferlab.api").report(*paths, out=out, show=show)


sys.modules[__name__].__class__ = _CallablePackage
