"""report.md: every section's table and figures on one page."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from transferlab.report.tables import markdown_table


@dataclass(frozen=True)
class Section:
    """One table (also written as <stem>.csv and <stem>.md) and its figures, under one heading."""

    stem: str  # file name stem of its table
    title: str  # its heading, which names the dataset
    table: pd.DataFrame
    figures: list[tuple[str, str]] = field(default_factory=list)  # (PNG file name, caption)
    question: str = ""  # what it asks, in one line
    note: str = ""  # how it stands to the reference


def report_markdown(sources: list[str], read: int, sections: list[Section], samples: list[tuple[str, str, str]],
                    not_completed: pd.DataFrame, skipped: list[str], repeats: list[str]) -> str:
    skipped_note = f"; {len(skipped)} file(s) skipped (not run records)" if skipped else ""
    repeats_note = (f"; {len(repeats)} run(s) repeat another's study, settings and seed, and count once "
                    "(see the end)") if repeats else ""
    lines = [
        "# transferlab report", "",
        f"{read} run records read from {', '.join(f'`{s}`' for s in sources)}: {read - len(not_completed)} "
        f"completed, {len(not_completed)} did not complete{skipped_note}{repeats_note}.", "",
        "Accuracies are in %, losses are cross-entropy, both after the last epoch. Where runs repeat a setting "
        "with other seeds, a cell shows mean ± standard deviation over its n seeds. Seconds per epoch is training "
        "time, mean over the epochs. The study and its reference figures: docs/study.md.", "",
    ]
    for file, dataset, source in samples:
        lines += [f"## Sample training images — data={dataset}", "", f"From `{source}`.", "",
                  f"![Sample training images of {dataset} with their classes]({file})", ""]
    if not samples:
        lines += ["No sample image grid: no completed run kept a samples.npz.", ""]
    for section in sections:
        lines += [f"## {section.title}", ""]
        lines += [f"*{section.question}*", ""] if section.question else []
        lines += [markdown_table(section.table)]
        lines += [section.note, ""] if section.note else []
        lines += [line for file, caption in section.figures for line in (f"![{caption}]({file})", "")]
    if len(not_completed):
        lines += ["## Runs that did not complete", "", "Not in any table or figure above.", "",
                  markdown_table(not_completed)]
    if repeats:
        lines += ["## Repeated runs counted once", "",
                  "Runs of one study with the same settings and seed are one observation: the one that finished "
                  "last is kept.", "", *(f"- {line}" for line in repeats), ""]
    if skipped:
        lines += ["## Files skipped", "", *(f"- `{line}`" for line in skipped), ""]
    return "\n".join(lines).rstrip("\n") + "\n"
