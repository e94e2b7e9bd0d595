"""report.md: every table and figure on one page."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from transferlab.report.figures import SAMPLES_FIGURE
from transferlab.report.studies import Group
from transferlab.report.tables import markdown_table


@dataclass(frozen=True)
class Section:
    """One group as the report shows it."""

    group: Group
    table: pd.DataFrame
    figures: list[tuple[str, str]]  # (PNG file name, caption)


def report_markdown(sources: list[str], read: int, sections: list[Section], samples_from: str | None,
                    not_completed: pd.DataFrame, skipped: list[str], tuning: str = "") -> str:
    skipped_note = f"; {len(skipped)} file(s) skipped (not run records)." if skipped else "."
    lines = [
        "# transferlab report", "",
        f"{read} run records read from {', '.join(f'`{s}`' for s in sources)}: {read - len(not_completed)} "
        f"completed, {len(not_completed)} did not complete{skipped_note}", "",
        "Accuracies are in %, losses are cross-entropy, both after the last epoch. Where runs repeat a setting "
        "with other seeds, a cell shows mean ± standard deviation over its n runs. Seconds per epoch is training "
        "time, mean over the epochs.", "",
    ]
    if samples_from:
        lines += ["## Sample training images", "", f"From `{samples_from}`.", "",
                  f"![Sample training images with their classes]({SAMPLES_FIGURE})", ""]
    else:
        lines += ["No sample image grid: no completed run kept a samples.npz.", ""]
    for section in sections:
        group = section.group
        lines += [f"## {group.title}", ""]
        lines += [f"*{group.part.question}*", ""] if group.part.question else []
        lines += [markdown_table(section.table)]
        lines += [group.note, ""] if group.note else []
        lines += [line for file, caption in section.figures for line in (f"![{caption}]({file})", "")]
    lines += [tuning] if tuning else []
    if len(not_completed):
        lines += ["## Runs that did not complete", "", "Not in any table or figure above.", "",
                  markdown_table(not_completed)]
    if skipped:
        lines += ["## Files skipped", "", *(f"- `{line}`" for line in skipped), ""]
    return "\n".join(lines).rstrip("\n") + "\n"
