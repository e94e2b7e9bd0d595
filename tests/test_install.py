"""The standard build (sdist, then a wheel built from that sdist, as PyPI, pip and `uv build` do)
ships the configs, and the installed wheel runs from any directory; an editable install and the
checkout read the top-level conf/ itself."""

import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from transferlab.composition import config_dir

REPO = Path(__file__).resolve().parents[1]
CONF_FILES = sorted(str(p.relative_to(REPO / "conf")) for p in (REPO / "conf").rglob("*.yaml"))


@pytest.fixture(scope="session")
def installed_wheel(tmp_path_factory):
    """(sdist, wheel, site): built once per test session, offline, with this environment's
    hatchling (no build isolation), and the wheel alone installed into ``site``."""
    root = tmp_path_factory.mktemp("build")
    dist, site = root / "dist", root / "site"
    uv = [sys.executable, "-m", "uv"]
    subprocess.run([*uv, "build", "--offline", "--no-build-isolation", "--python", sys.executable,
                    "--out-dir", str(dist), str(REPO)], check=True, capture_output=True, text=True, timeout=300)
    [sdist], [wheel] = dist.glob("*.tar.gz"), dist.glob("*.whl")
    subprocess.run([*uv, "pip", "install", "--offline", "--quiet", "--no-deps", "--target", str(site),
                    "--python", sys.executable, str(wheel)], check=True, capture_output=True, text=True, timeout=300)
    return sdist, wheel, site


def test_the_wheel_built_from_the_sdist_carries_every_config(installed_wheel):
    sdist, wheel, _ = installed_wheel
    with tarfile.open(sdist) as archive:
        members = {m.name.split("/", 1)[1]: m for m in archive.getmembers() if "/" in m.name}
    assert {f"conf/{name}" for name in CONF_FILES} <= set(members)  # the sdist keeps conf/ where users edit it
    assert not any(m.issym() or m.islnk() for m in members.values())
    with zipfile.ZipFile(wheel) as archive:
        for name in CONF_FILES:
            assert archive.read(f"transferlab/conf/{name}") == (REPO / "conf" / name).read_bytes(), name
        assert "hydra_plugins/transferlab_sweeper.py" in archive.namelist()


def python_in(site: Path, cwd: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """Python with ``site`` (the installed wheel) ahead of this checkout's editable install."""
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env["PYTHONPATH"] = str(site)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_the_installed_wheel_composes_and_trains_from_another_directory(installed_wheel, tmp_path):
    _, _, site = installed_wheel
    where = python_in(site, tmp_path, "-c", "import transferlab.composition as c; print(c.__file__); print(c.config_dir())")
    module, conf = where.stdout.split()
    assert module.startswith(str(site)) and conf == str(site / "transferlab" / "conf"), where.stdout + where.stderr
    job = python_in(site, tmp_path, "-m", "transferlab.cli", "train", "--cfg", "job", "model=alexnet", "data=synthetic")
    assert job.returncode == 0, job.stdout + job.stderr
    assert "name: alexnet" in job.stdout and "name: synthetic" in job.stdout and "lr: 0.001" in job.stdout
    assert not list(tmp_path.iterdir())
    run = python_in(site, tmp_path, "-m", "transferlab.cli", "train", "-m", "data=synthetic", "data.image_size=32",
                    "data.num_train=64", "data.num_test=32", "model.pretrained=false", "train.epochs=1", "device=cpu",
                    "progress=off")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 run(s) ran, 0 did not complete" in run.stdout  # the installed sweeper plugin summarised the sweep
    assert len(list((tmp_path / "outputs" / "runs").glob("*/run.json"))) == 1


def test_the_checkout_and_an_editable_install_read_the_top_level_conf():
    assert config_dir() == REPO / "conf"  # these tests import transferlab from src/ (editable install)
    assert not (REPO / "src" / "transferlab" / "conf").exists()  # no link: links break on Windows and in sdists


# APIs that transferlab's code (src/) calls and that older releases lack, with the release that
# added each, from the release notes. The floors declared in pyproject.toml must be at least the
# newest of them. When the code starts to call something newer, add it here; an entry the code no
# longer calls fails the test below, so that the table stays what the code uses.
APIS_SINCE = {
    "torch": {
        "torch.amp.GradScaler(": "2.3",  # the device-generic scaler (before 2.3: torch.cuda.amp.GradScaler)
        "torch.func.functional_call(": "2.0",  # torch.func is new in 2.0
        "torch.compile(": "2.0",
        "torch.mps.synchronize(": "2.0",
    },
    "torchvision": {
        "torchvision.models.get_model(": "0.14",  # the model registry is new in 0.14
        "torchvision.models.list_models(": "0.14",
        "torchvision.models.get_model_weights(": "0.14",
    },
}


def floor_of(specifier) -> "Version":
    """The lowest release ``specifier`` allows, as its lower bound says (0 without one)."""
    from packaging.version import Version

    return max((Version(s.version) for s in specifier if s.operator in (">=", ">", "~=", "==", "===")),
               default=Version("0"))


@pytest.mark.parametrize("package", sorted(APIS_SINCE))
def test_the_declared_floor_has_what_the_code_uses(package):
    """pyproject.toml's floor for torch and torchvision, against the release that added each API the
    code calls; and the installed release, which the tests run on, satisfies the declaration."""
    import importlib
    import tomllib
    from importlib.metadata import version

    from packaging.requirements import Requirement
    from packaging.version import Version

    declared = {r.name: r for r in map(Requirement, tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
                                       ["dependencies"])}[package]
    source = "\n".join(path.read_text() for path in sorted((REPO / "src").rglob("*.py")))
    apis = APIS_SINCE[package]
    assert [api for api in apis if api not in source] == [], "the code no longer calls these: drop them from APIS_SINCE"
    for api in apis:  # each entry names a real API (of the installed release)
        module, _, name = api.rstrip("(").rpartition(".")
        assert hasattr(importlib.import_module(module), name), api
    newest = max(apis, key=lambda api: Version(apis[api]))
    floor = floor_of(declared.specifier)
    assert floor >= Version(apis[newest]), (f"pyproject.toml declares {declared}, but the code calls {newest.rstrip('(')}"
                                            f", which {package} has since {apis[newest]}")
    assert declared.specifier.contains(Version(version(package)).base_version), (declared, version(package))
