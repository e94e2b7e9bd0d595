"""transferlab's Slurm launcher (the `_target_` of conf/hydra/launcher/slurm.yaml). It lives here
because Hydra takes launchers only from the `hydra_plugins` namespace package; what it adds to
hydra-submitit-launcher's Slurm launcher is in `transferlab.slurm`. Hydra imports this module at
every start, so it imports nothing heavy, and nothing at all without the `cluster` extra."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

try:
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as _SubmititSlurmLauncher
except ImportError:  # no `cluster` extra: hydra/launcher=slurm then says what to install
    _SubmititSlurmLauncher = None

if _SubmititSlurmLauncher is not None:

    class TransferlabSlurmLauncher(_SubmititSlurmLauncher):
        """The plugin's Slurm launcher that stops, instead of waiting forever, when Slurm can never
        start the jobs it submitted."""

        def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Any:
            from transferlab.slurm import watching_executor

            with watching_executor(self.params):
                return super().launch(job_overrides, initial_job_idx)
