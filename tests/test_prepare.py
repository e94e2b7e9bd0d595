"""`transferlab prepare`, offline: what cannot be fetched is named; what is in place is a no-op."""

import hashlib
import subprocess
import sys

import pytest
import torch
import torchvision

import transferlab.prepare as prepare_module
from transferlab.prepare import main, prepare, sha256_matches
from transferlab.sources.torchvision_source import weights_file

from transferlab.config import DataConfig

from helpers import cli_env, write_cifar10, write_cifar100, write_image_folder


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network: every download fails at once, as on a compute node; torch's cache is empty."""
    import urllib.error
    import urllib.request

    def refuse(*args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(torch.hub, "urlopen", refuse)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))


def test_offline_prepare_names_everything_it_could_not_fetch(tmp_path, offline, capsys):
    assert main([f"data.root={tmp_path / 'data'}"]) == 1
    output = capsys.readouterr().out
    assert "error: CIFAR-10: CIFAR-10 is not in data.root=" in output and "put cifar-10-python.tar.gz" in output
    for name, file_name in [("alexnet", "alexnet-owt-7be5be79.pth"), ("resnet18", "resnet18-f37072fd.pth"),
                            ("vgg16", "vgg16-397923af.pth")]:
        assert f"error: {name} weights: could not fetch https://download.pytorch.org/models/{file_name}" in output
        assert f"put {file_name} into {tmp_path / 'torch' / 'hub' / 'checkpoints'}" in output


def test_prepare_with_everything_in_place_is_a_verified_no_op(tmp_path, offline, skip_md5, monkeypatch, capsys):
    write_cifar10(tmp_path / "data")
    url, path = weights_file("resnet18")
    path.parent.mkdir(parents=True)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    # Our file is not torchvision's, so its hash cannot match (tests only; see the next test).
    monkeypatch.setattr(prepare_module, "sha256_matches", lambda path: True)
    assert main(["model=resnet18", f"data.root={tmp_path / 'data'}"]) == 0
    output = capsys.readouterr().out
    assert "ok: CIFAR-10: in place and verified" in output
    assert f"ok: resnet18 weights: already in place and verified, {path}" in output
    assert "alexnet" not in output and "error" not in output
    assert main(["model=resnet18", f"data.root={tmp_path / 'data'}", "model.pretrained=false"]) == 0
    assert "weights" not in capsys.readouterr().out


def test_weights_are_checked_against_the_hash_in_their_name(tmp_path):
    content = b"pretend weights"
    prefix = hashlib.sha256(content).hexdigest()[:8]
    good, bad = tmp_path / f"model-{prefix}.pth", tmp_path / "model-00000000.pth"
    good.write_bytes(content)
    bad.write_bytes(content)
    assert sha256_matches(good) and not sha256_matches(bad)


def test_corrupt_cached_weights_are_reported(tmp_path, offline, skip_md5):
    write_cifar10(tmp_path / "data")
    _, path = weights_file("alexnet")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"truncated download")
    ready, problems = prepare(DataConfig(root=str(tmp_path / "data")), ["alexnet"])
    assert ready == [f"CIFAR-10: in place and verified, {tmp_path / 'data'}"]
    assert problems == [f"alexnet weights: {path} does not match its SHA-256; delete it and run transferlab prepare again"]


def test_prepare_fetches_or_verifies_cifar100_when_asked(tmp_path, offline, skip_md5, capsys):
    assert main(["data=cifar100", f"data.root={tmp_path / 'data'}", "model.pretrained=false"]) == 1
    assert "error: CIFAR-100: CIFAR-100 is not in data.root=" in capsys.readouterr().out
    write_cifar100(tmp_path / "data")
    assert main(["data=cifar100", f"data.root={tmp_path / 'data'}", "model.pretrained=false"]) == 0
    output = capsys.readouterr().out
    assert f"ok: CIFAR-100: in place and verified, {tmp_path / 'data'}" in output and "CIFAR-10:" not in output


def test_prepare_decodes_an_image_folder_into_its_cache(tmp_path, capsys):
    root = write_image_folder(tmp_path / "birds", per_class=3, splits=("train",))
    run = ["data=imagefolder", f"data.root={root}", f"data.cache_dir={tmp_path / 'cache'}", "model.pretrained=false"]
    assert main(run) == 0
    assert f"ok: image folder {root}: 6 training and 3 test images in 3 classes" in capsys.readouterr().out
    assert len(list((tmp_path / "cache" / "imagefolder").glob("*/images.npy"))) == 1
    (root / "train" / "cat" / "train_cat_0.png").write_bytes(b"not a png")
    assert main(run) == 1
    assert "error: image folder: " in capsys.readouterr().out


def test_prepare_fetches_the_weights_of_a_named_model_only(tmp_path, offline, capsys):
    """`transferlab prepare data=imagefolder ...` failed offline unless model.pretrained=false was
    added: it fetched the study's three models' weights too."""
    root = write_image_folder(tmp_path / "birds", per_class=3, splits=("train",))
    folder = ["data=imagefolder", f"data.root={root}", f"data.cache_dir={tmp_path / 'cache'}"]
    assert main(folder) == 0
    output = capsys.readouterr().out
    assert output.startswith(f"ok: image folder {root}:") and "weights" not in output
    assert main([*folder, "model=vgg16"]) == 1  # a model named: its weights, and only its
    output = capsys.readouterr().out
    assert "error: vgg16 weights: could not fetch" in output and output.count("weights:") == 1
    assert main(["data=cifar10", f"data.root={tmp_path / 'data'}"]) == 1  # data named: the data only
    output = capsys.readouterr().out
    assert "error: CIFAR-10: " in output and "weights" not in output
    assert main(["--help"]) == 0
    assert "With data=... alone, only the data (no weights)." in capsys.readouterr().out


@pytest.mark.slow
def test_prepare_help_does_not_import_torch(tmp_path):
    script = ("import contextlib, io, sys\nfrom transferlab.cli import main\n"
              "with contextlib.redirect_stdout(io.StringIO()) as out:\n    assert main(['prepare', '--help']) == 0\n"
              "assert 'usage: transferlab prepare' in out.getvalue()\n"
              "print(sorted(name for name in sys.modules if name.partition('.')[0] in ('torch', 'torchvision')))")
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=cli_env(), capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"
