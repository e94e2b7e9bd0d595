"""report.md: every section's tables and figures on one page."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from transferlab.report.tables import markdown_table


@dataclass(frozen=True)
class Table:
    """One table, written as <stem>.csv (its numbers) and <stem>.md (as shown)."""

    stem: str
    shown: pd.DataFrame  # formatted, for Markdown
    numbers: pd.DataFrame | None = None  # tidy numbers for the CSV; None: the shown table is the CSV
    caption: str = ""  # a line above it: what its rows hold and what their replicates vary
    heading: str = ""  # added to the section's title in the table's own .md and where it is printed

    @property
    def csv(self) -> pd.DataFrame:
        return self.shown if self.numbers is None else self.numbers

    def markdown(self) -> str:
        return (f"{self.caption}\n\n" if self.caption else "") + markdown_table(self.shown)


@dataclass(frozen=True)
class Section:
    """Tables and figures under one heading."""

    stem: str  # file name stem of its first table
    title: str  # its heading: the study and the settings its runs share
    tables: list[Table]
    figures: list[tuple[str, str]] = field(default_factory=list)  # (PNG file name, caption)
    question: str = ""  # what it compares, read from its runs
    note: str = ""  # how it stands to the reference


INTRO = ("Accuracies are in %, differences between arms in percentage points, losses are cross-entropy, all after "
         "the last epoch. An *arm* is the runs of one setting; its runs are *replicates* that differ only in the "
         "seed and/or the training subset (each table says which). An arm's accuracy is the mean ± standard "
         "deviation over its n runs, with the 95 % interval of the mean (Student's t); a comparison is the mean of "
         "the differences paired by replicate (the same seed and subset on both sides), from correct counts, with "
         "its 95 % t interval (the interval whose simulated coverage holds at 3 to 30 pairs), n, whether that "
         "interval excludes zero, the paired t test's and the exact sign test's p and Holm's p over the "
         "comparisons of its table. From each run's per-image test predictions, a comparison also gets the test "
         "set's own interval, and one over seeds and test images together. One run or one pair gives no interval. "
         "Seconds per epoch is training time, mean over the epochs. How to read each column: "
         "docs/report.md; the study and its reference figures: docs/study.md.")


def report_markdown(sources: list[str], read: int, sections: list[Section], samples: list[tuple[str, str, str]],
                    not_completed: pd.DataFrame, skipped: list[str], repeats: list[str]) -> str:
    skipped_note = f"; {len(skipped)} file(s) skipped (not usable run records: see the end)" if skipped else ""
    repeats_note = (f"; {len(repeats)} run(s) repeat another's study, settings, seed and subset seed, and count "
                    "once (see the end)") if repeats else ""
    lines = [
        "# transferlab report", "",
        f"{read} run records read from {', '.join(f'`{s}`' for s in sources)}: {read - len(not_completed)} "
        f"completed, {len(not_completed)} did not complete{skipped_note}{repeats_note}.", "",
        INTRO, "",
    ]
    for file, dataset, source in samples:
        lines += [f"## Sample training images — data={dataset}", "", f"From `{source}`.", "",
                  f"![Sample training images of {dataset} with their classes]({file})", ""]
    if not samples:
        lines += ["No sample image grid: no completed run kept a samples.npz.", ""]
    for section in sections:
        lines += [f"## {section.title}", ""]
        lines += [f"*{section.question}*", ""] if section.question else []
        lines += [table.markdown() for table in section.tables]
        lines += [section.note, ""] if section.note else []
        lines += [line for file, caption in section.figures for line in (f"![{caption}]({file})", "")]
    if len(not_completed):
        lines += ["## Runs that did not complete", "", "Not in any table or figure above.", "",
                  markdown_table(not_completed)]
    if repeats:
        lines += ["## Repeated runs counted once", "",
                  "Runs of one study with the same settings, seed and subset seed are one observation: the one that "
                  "finished last is kept.", "", *(f"- {line}" for line in repeats), ""]
    if skipped:
        lines += ["## Files skipped", "", *(f"- `{line}`" for line in skipped), ""]
    return "\n".join(lines).rstrip("\n") + "\n"
