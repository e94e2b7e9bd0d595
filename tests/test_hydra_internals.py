"""Hydra's private API, which transferlab.hydra_internals alone uses: each use exercised on the
installed Hydra, which must be a version the module was checked on."""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.global_hydra import GlobalHydra
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import RunMode

from transferlab import hydra_internals
from transferlab.composition import config_dir, register_with_hydra

SOURCE = Path(__file__).resolve().parents[1] / "src"


def test_the_installed_hydra_is_a_version_the_private_uses_were_checked_on():
    assert hydra.__version__ in hydra_internals.CHECKED_ON, (
        f"hydra-core {hydra.__version__} is not among the versions transferlab.hydra_internals was checked on "
        f"({', '.join(hydra_internals.CHECKED_ON)}): run tests/test_hydra_internals.py and the launch tests "
        "(test_launchers.py, test_sweep.py) on it, then add it to CHECKED_ON")


def test_no_other_module_touches_hydras_private_api():
    users = sorted(str(path.relative_to(SOURCE)) for path in SOURCE.rglob("*.py")
                   if any(private in path.read_text() for private in ("hydra._internal", "._return_value"))
                   and path.name != "hydra_internals.py")
    assert users == []


def test_the_app_object_composes_conf_with_an_extra_config_dir_searched_first(tmp_path):
    (tmp_path / "optim").mkdir()
    (tmp_path / "optim" / "mine.yaml").write_text("name: adamw\nlr: 0.02\n")
    register_with_hydra()
    try:
        app = hydra_internals.main_hydra("train", str(config_dir()), str(tmp_path))
        cfg = app.compose_config("config", overrides=["optim=mine"], run_mode=RunMode.RUN)
        assert (cfg.optim.name, cfg.optim.lr, cfg.model.name) == ("adamw", 0.02, "resnet18")
    finally:
        GlobalHydra.instance().clear()


def test_hydras_argument_parser_reads_the_multirun_flag_and_the_overrides():
    options = hydra_internals.hydra_args_parser().parse_args(["-m", "seed=1,2", "--cfg", "job"])
    assert (options.multirun, options.overrides, options.cfg) == (True, ["seed=1,2"], "job")


def test_a_jobs_outcome_is_read_without_raising_or_printing(capsys):
    error = ValueError("bad")
    failed = JobReturn(overrides=["seed=1"], status=JobStatus.FAILED, _return_value=error)
    assert hydra_internals.job_outcome(failed) is error
    assert hydra_internals.job_outcome(JobReturn(status=JobStatus.COMPLETED, _return_value=3)) == 3
    assert capsys.readouterr().err == ""


def test_the_sweeper_plugin_is_hydras_basic_sweeper():
    from hydra_plugins.transferlab_sweeper import TransferlabSweeper

    assert TransferlabSweeper.__mro__[1] is hydra_internals.basic_sweeper()
    assert TransferlabSweeper.__mro__[1].__module__ == "hydra._internal.core_plugins.basic_sweeper"
