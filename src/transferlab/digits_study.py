"""`transferlab study digits`: a real transfer study that runs anywhere, offline, in minutes.

ResNet18 learns digits 0-4 from scratch (experiment=digits_pretrain, which saves its model.pt); then
digits 5-9 are learnt from that model.pt (a checkpoint of other classes: a new head starts) and from
scratch, at K = 1 ... 64 images of each digit with 3 repeats (experiment=digits); then the report.
Every run goes through launch(), so a second call skips what is done.

Overrides apply to both steps, except the study's swept settings (data.per_class, data.fraction,
repeat), which replace the transfer sweep's values only: `transferlab study digits
data.per_class=1,8 train.epochs=3` is a small version of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transferlab.errors import TransferlabError
from transferlab.records import RunResult

PRETRAINING = "digits_pretrain"  # the experiment and study of the pretraining run
TRANSFER = "digits"              # the experiment and study of the transfer sweep
SWEPT = ("data.per_class", "data.fraction", "repeat")  # overrides that go to the transfer sweep alone
REPORT_FOLDER = "digits-report"  # beside the studies' folders: outputs/digits-report


@dataclass(frozen=True)
class DigitsStudy:
    """What `transferlab study digits` ran: the pretraining run and the transfer sweep's runs."""

    pretraining: RunResult
    transfer: list[RunResult]

    @property
    def completed(self) -> bool:
        return self.pretraining.completed and all(result.completed for result in self.transfer)

    @property
    def folders(self) -> list[Path]:
        """The two studies' folders (outputs/digits_pretrain, outputs/digits): what the report reads."""
        return [self.pretraining.run_dir.parent, *sorted({result.run_dir.parent for result in self.transfer})]

    @property
    def report_folder(self) -> Path:
        return self.pretraining.run_dir.parent.parent / REPORT_FOLDER


def run_study(overrides: Sequence[str] = (), callbacks: Sequence[Any] = ()) -> DigitsStudy:
    """Pretrain on digits 0-4, then the transfer sweep on digits 5-9 from its model.pt; runs done
    before are skipped. A TransferlabError when the pretraining did not complete (nothing to transfer)."""
    from transferlab.launch import launch

    common = [item for item in overrides if _key(item) not in SWEPT]
    swept = [item for item in overrides if _key(item) in SWEPT]
    pretraining = launch([f"experiment={PRETRAINING}", *common], callbacks=callbacks)[0]
    weights = pretraining.run_dir / "model.pt"
    if not pretraining.completed or not weights.is_file():
        raise TransferlabError(f"the digits study's pretraining run in {pretraining.run_dir} did not complete "
                               f"({(pretraining.record or {}).get('error', 'no model.pt')}); nothing to transfer")
    transfer = launch([f"experiment={TRANSFER}", f"model.weights={_quoted(_shortest(weights))},null", *common, *swept],
                      multirun=True, callbacks=callbacks)
    return DigitsStudy(pretraining, transfer)


def _key(override: str) -> str:
    return override.partition("=")[0].lstrip("+~")


def _shortest(path: Path) -> str:
    """``path`` relative to the working directory where it lies below it (the run folders' names
    hold it), else absolute."""
    absolute = path.resolve()
    try:
        return absolute.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return absolute.as_posix()


def _quoted(value: str) -> str:
    """A value for Hydra's override grammar: a run folder's name holds '=' and ','."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def transfer_summary(differences: Any) -> list[str]:
    """The transfer effect in words, from the report's paired differences of the study (its CSV as a
    DataFrame): a verdict, then each amount's difference in points with its 95 % interval and n. The
    verdict says where an interval lies wholly above 0 (transfer helps) or below it, or that none does."""
    if differences is None or len(differences) == 0:
        return ["no transfer effect to show: the study has no pretrained and from-scratch runs to pair"]
    rows = differences[differences["compared"] == "init"] if "compared" in differences else differences
    amount = "per_class" if "per_class" in rows else "fraction" if "fraction" in rows else None
    lines, above, below = [], 0, 0
    for _, row in rows.iterrows():
        where = f"K={row[amount]:g} per class" if amount == "per_class" else f"fraction {row[amount]:g}" if amount else ""
        if not row["n"] or row["ci95_low"] != row["ci95_low"]:  # no pairs, or one: no interval
            lines.append(f"  {where}: {row['difference_mean']:+.1f} points, n={row['n']}: no interval")
            continue
        lines.append(f"  {where}: {row['difference_mean']:+.1f} points, 95 % interval "
                     f"[{row['ci95_low']:+.1f}, {row['ci95_high']:+.1f}], n={row['n']} pairs")
        above += bool(row["ci95_low"] > 0)
        below += bool(row["ci95_high"] < 0)
    if above and not below:
        verdict = f"transfer helps: its 95 % interval lies above 0 at {above} of {len(lines)} amounts"
    elif below and not above:
        verdict = f"transfer hurts: its 95 % interval lies below 0 at {below} of {len(lines)} amounts"
    elif above and below:
        verdict = f"mixed: the interval lies above 0 at {above} and below 0 at {below} of {len(lines)} amounts"
    else:
        verdict = f"no transfer effect shown: each of the {len(lines)} intervals includes 0"
    return [verdict, *lines]
