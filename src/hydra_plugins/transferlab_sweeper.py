"""transferlab's default sweeper (conf/hydra/sweeper/transferlab.yaml): Hydra's basic sweeper, then
a summary of the sweep counted from what each job returned, and exit status 1 when any run did not
complete. The job returns reach this process from every launcher (basic, joblib, submitit), whose
jobs may run in other processes. Hydra loads sweepers only from the hydra_plugins package and
imports every module here at start-up, so this stays small and imports transferlab when it sweeps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper


class TransferlabSweeper(BasicSweeper):
    def sweep(self, arguments: list[str]) -> Any:
        from transferlab.sweep import finish_sweep

        returns = super().sweep(arguments)
        finish_sweep([job for batch in returns for job in batch], Path(str(self.config.hydra.sweep.dir)))
        return returns
