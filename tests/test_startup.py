"""Composing a config, `train --help`, `--cfg job` and a Tab press stay light: they never import
torch or torchvision (seconds on a small machine; docs/performance.md, "Command-line latency"),
the `model` group offers every torchvision model from names shipped as data, and `--help` says what
each key means."""

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from helpers import TRANSFERLAB, cli_env
from transferlab.cli import main
from transferlab.config import Config
from transferlab.settings_reference import KEY_MEANINGS
from transferlab.composition import config_dir, register_with_hydra
from transferlab.torchvision_models import CLASSIFICATION_MODELS

# In a fresh interpreter (this one may have imported torch for other tests): what a user's shell
# runs, then the heavy modules it left in sys.modules, on the last line.
LIGHT_COMMANDS = textwrap.dedent("""
    import contextlib, io, os, sys
    from transferlab.cli import main
    from transferlab.composition import compose_config
    assert compose_config(["model=vit_h_14"]).model.name == "vit_h_14"  # no file in conf/model/
    for argv in (["train", "--help"], ["train", "--cfg", "job"]):
        with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
            main(argv)
    os.environ["COMP_LINE"] = "transferlab train model=v"
    with contextlib.redirect_stdout(io.StringIO()) as reply:
        main(["-sc", "query=bash"])
    assert "model=vit_h_14" in reply.getvalue().split(), reply.getvalue()
    print(sorted(name for name in sys.modules if name.partition(".")[0] in ("torch", "torchvision")))
""")


@pytest.mark.slow  # starts `transferlab` subprocesses
def test_composing_help_and_tab_never_import_torch(tmp_path):
    result = subprocess.run([sys.executable, "-c", LIGHT_COMMANDS], cwd=tmp_path, env=cli_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"


def test_the_shipped_model_names_are_the_installed_torchvisions():
    import torchvision

    installed = torchvision.models.list_models(module=torchvision.models)
    assert list(CLASSIFICATION_MODELS) == installed, (
        f"src/transferlab/torchvision_models.py lists torchvision {torchvision.__version__}'s models no longer; "
        f"missing: {sorted(set(installed) - set(CLASSIFICATION_MODELS))}, "
        f"gone: {sorted(set(CLASSIFICATION_MODELS) - set(installed))}")


def test_a_model_file_wins_over_the_shipped_name_and_other_apps_get_no_model_group(tmp_path):
    register_with_hydra()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        repository = GlobalHydra.instance().config_loader().repository
        assert repository.load_config("model/alexnet").path == f"file://{config_dir()}"
        assert repository.load_config("model/resnet34").path == "transferlab://models"
        assert compose(config_name="config", overrides=["model=resnet34"]).model.name == "resnet34"
        assert len(GlobalHydra.instance().config_loader().get_group_options("model")) == len(CLASSIFICATION_MODELS)
    # Hydra runs search-path plugins for every Hydra app: another app's configs stay its own.
    (tmp_path / "config.yaml").write_text("size: 1\n")
    with initialize_config_dir(config_dir=str(tmp_path), version_base="1.3"):
        assert GlobalHydra.instance().config_loader().get_group_options("model") == []


def schema_keys(node, prefix: str = "") -> list[str]:
    """The dotted keys of the schema's leaves, in the schema's order."""
    keys = []
    for key in node:
        child = node._get_node(key)
        keys += schema_keys(child, f"{prefix}{key}.") if OmegaConf.is_dict(child) else [f"{prefix}{key}"]
    return keys


def test_every_key_of_the_schema_has_a_meaning_in_its_order():
    assert list(KEY_MEANINGS) == schema_keys(OmegaConf.structured(Config))


def test_help_lists_each_key_with_its_composed_value_and_meaning(capsys):
    assert main(["train", "--help", "data.per_class=5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    [fraction] = [line.split() for line in lines if line.startswith("  data.fraction ")]
    # The composed value, resolved: data.per_class replaces the default share.
    assert fraction[:2] == ["data.fraction", "null"]
    assert " ".join(fraction[2:]) == "share of the training set to train on, in (0, 1] (null: use data.per_class)"
    assert [line.split()[:2] for line in lines if line.startswith("  data.crop_scale ")] == [
        ["data.crop_scale", "[0.08,"]]
    listed = [line.split()[0] for line in lines if line.startswith("  ") and line.split()[0] in KEY_MEANINGS]
    assert listed == list(KEY_MEANINGS)


@pytest.mark.slow
def test_the_latency_benchmark_times_each_command_and_tells_whether_torch_was_imported(tmp_path):
    script = Path(__file__).resolve().parents[1] / "scripts" / "benchmark_cli.py"
    spec = importlib.util.spec_from_file_location("benchmark_cli", script)
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    assert benchmark.imported_heavy_modules([sys.executable, "-c", "import torch"], cli_env(), tmp_path) == ["torch"]
    result = subprocess.run([sys.executable, str(script), "--runs", "1", "--transferlab", TRANSFERLAB],
                            env=cli_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith(("Tab ", "transferlab "))]
    assert [row.split("  ")[0] for row in rows] == [label for label, _, _ in benchmark.COMMANDS]
    assert all(row.endswith("no torch") for row in rows), result.stdout
