"""transferlab from Python (a notebook, a script): the same runs, records and report as the CLI.

    import transferlab
    runs = transferlab.train(["data=digits", "data.per_class=8", "model.pretrained=false"])
    frame = transferlab.runs("outputs")                 # the tidy table of runs the report reads
    report = transferlab.report("outputs")              # its tables (DataFrames) and figures (matplotlib)

Errors are exceptions (transferlab.errors.TransferlabError, ConfigError) whose message is the line
the CLI prints; nothing here calls sys.exit. docs/python.md says more.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from transferlab.errors import TransferlabError
from transferlab.records import RunRecord


@dataclass(frozen=True)
class Run:
    """One run that train() started or found done: its folder, its record as a RunRecord (run.json's
    fields; those a run that never started has not are None), and whether it was skipped as done."""

    folder: Path
    record: RunRecord
    skipped: bool = False

    @property
    def completed(self) -> bool:
        return self.record.status == "completed"


def as_record(values: dict[str, Any]) -> RunRecord:
    """run.json's dict as a RunRecord; its schema_version and any field this version does not know are left out."""
    known = {item.name for item in fields(RunRecord)}
    required = {item.name: None for item in fields(RunRecord)
                if item.default is item.default_factory}  # both MISSING: a field without a default
    return RunRecord(**{**required, **{key: value for key, value in values.items() if key in known}})


def train(overrides: Sequence[str] = (), multirun: bool = False, callbacks: Sequence[Any] = ()) -> list[Run]:
    """`transferlab train [-m] OVERRIDES`: each run's Run, in sweep order (a sweep when ``multirun`` or
    when an override sweeps, ``key=a,b``, with multirun=True). Runs completed before are skipped, not
    repeated. A run that fails is a Run whose record says so; a ConfigError means nothing ran."""
    from transferlab.launch import launch

    return [Run(result.run_dir, as_record(result.record), result.skipped)
            for result in launch(list(overrides), multirun=multirun, callbacks=callbacks)]


def study_digits(overrides: Sequence[str] = (), callbacks: Sequence[Any] = ()) -> list[Run]:
    """`transferlab study digits OVERRIDES` without its report: the pretraining run first, then the
    transfer sweep's runs (transferlab.digits_study); report() them with the folders of their ``folder``s."""
    from transferlab.digits_study import run_study

    study = run_study(list(overrides), callbacks)
    return [Run(result.run_dir, as_record(result.record), result.skipped)
            for result in (study.pretraining, *study.transfer)]


def runs(*paths: str | Path) -> Any:
    """The tidy pandas DataFrame of completed runs that the report reads (one row per run, the same
    study, settings and replicate once), from every run.json under ``paths`` (default: outputs)."""
    from transferlab.report.reading import completed_frame, find_run_files, one_per_seed, read_runs
    from transferlab.report.tuning import split_trials

    folders = _existing(paths)
    found, _ = read_runs(find_run_files(folders, Path(tempfile.gettempdir()) / "transferlab-no-report"))
    found, _ = split_trials(found)
    if not found:
        raise TransferlabError(f"no readable run.json under {', '.join(folders)}")
    return one_per_seed(completed_frame(found))[0]


@dataclass
class Report:
    """`transferlab report`'s output: each table by its file stem (the numbers of its CSV), each
    figure by its PNG's name, open matplotlib figures (Jupyter shows one that a cell returns), the
    folder it was written to, and report.md's text."""

    folder: Path
    markdown: str
    tables: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)

    def differences(self, study: str) -> Any:
        """The table of paired differences of ``study``'s first group (an empty DataFrame where it has none)."""
        import pandas as pd

        stems = [stem for stem in self.tables if stem.startswith(study) and stem.endswith("-differences")]
        return self.tables[min(stems, key=len)] if stems else pd.DataFrame()


def report(*paths: str | Path, out: str | Path | None = None, show: bool = False) -> Report:
    """`transferlab report PATHS --out OUT` (default paths: outputs; out None: a temporary folder),
    its tables and figures returned; ``show`` prints what the CLI prints. Errors (no runs, a missing
    folder, an --out that cannot take it) are TransferlabErrors with the CLI's line."""
    import pandas as pd

    from transferlab.report import main as report_main

    folders = _existing(paths)
    folder = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="transferlab-report-"))
    printed, errors = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(errors):
        code = report_main([*folders, "--out", str(folder)])
    if show:
        print(printed.getvalue(), end="")
    lines = errors.getvalue().splitlines()
    if code != 0:
        raise TransferlabError(_without_prefix(next((line for line in lines if ": error: " in line), lines[-1])))
    for line in lines:  # the warnings (a skipped record, a run counted once) are the CLI's too
        print(line)
    tables = {csv.stem: pd.read_csv(csv) for csv in sorted(folder.glob("*.csv"))}
    return Report(folder, (folder / "report.md").read_text(encoding="utf-8"), tables, _figures(folders, folder))


def _figures(folders: list[str], out: Path) -> dict[str, Any]:
    """Each group's figures, drawn again and left open (the report wrote and closed its PNGs)."""
    from transferlab.report.figures import FIGURES, applies, pyplot
    from transferlab.report.studies import make_groups

    pyplot()  # the Agg backend's text settings; Jupyter's inline backend still shows returned figures
    figures = {}
    for group in make_groups(runs(*folders)):
        for kind, metric in group.part.figures:
            if applies(group, kind):
                figures[f"{group.stem}-{metric}-{kind}.png"] = FIGURES[kind][0](group, metric)
    return figures


def _existing(paths: Sequence[str | Path]) -> list[str]:
    folders = [str(path) for path in paths] or ["outputs"]
    missing = [folder for folder in folders if not Path(folder).exists()]
    if missing:
        raise TransferlabError(f"{missing[0]}: no such file or folder (give the folder the runs were written to, "
                               "outputs by default)")
    return folders


def _without_prefix(line: str) -> str:
    return line.split(": error: ", 1)[-1]
