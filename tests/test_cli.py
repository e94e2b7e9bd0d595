"""The `transferlab` command end to end, in subprocesses, as a user runs it."""

import json

import pytest
import torch
import torchvision

from transferlab.records import METRIC_COLUMNS

from helpers import TINY, transferlab

RECORD_FIELDS = {"status", "config", "overrides", "model", "pretrained", "fraction", "freeze", "seed",
                 "params_total", "params_trainable", "history", "test_acc", "test_loss", "device", "versions"}


def test_help_lists_the_commands(tmp_path):
    result = transferlab("--help", cwd=tmp_path)
    assert result.returncode == 0
    assert "train" in result.stdout and "report" in result.stdout
    assert "transferlab cache list, transferlab cache remove PATH|--all" in result.stdout
    unknown = transferlab("fly", cwd=tmp_path)
    assert unknown.returncode == 2 and "unknown command 'fly'; choose one of: train, study, report, prepare" in unknown.stderr


@pytest.mark.slow
def test_hydras_own_flags_work(tmp_path):
    help_text = transferlab("train", "--help", cwd=tmp_path)
    assert help_text.returncode == 0
    [models] = [line for line in help_text.stdout.splitlines() if line.startswith("model: ")]
    assert {"alexnet", "resnet18", "vgg16", "efficientnet_b0", "vit_h_14"} <= set(models[7:].split(", "))
    assert "freeze: early, last_only, lp_ft, middle, none" in help_text.stdout
    job = transferlab("train", "--cfg", "job", "model=alexnet", "data.fraction=0.1", cwd=tmp_path)
    assert job.returncode == 0
    assert "name: alexnet" in job.stdout and "fraction: 0.1" in job.stdout and "lr: 0.001" in job.stdout
    info = transferlab("train", "--info", cwd=tmp_path)
    assert info.returncode == 0 and "Config search path" in info.stdout
    assert not list(tmp_path.iterdir())  # none of these trains or writes a run


@pytest.mark.slow
def test_a_run_writes_its_record_and_metrics(tmp_path):
    result = transferlab("train", *TINY, "train.epochs=2", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "epoch 2/2" in result.stdout
    [run_dir] = [p.parent for p in (tmp_path / "outputs" / "runs").glob("*/run.json")]
    assert run_dir.name.startswith("data.fraction=1.0,data.image_size=32")  # named by its overrides
    record = json.loads((run_dir / "run.json").read_text())
    assert RECORD_FIELDS <= set(record)
    assert record["status"] == "completed" and record["data"] == "synthetic"
    assert "train.epochs=2" in record["overrides"]
    assert len(record["history"]) == 2 and 0.0 <= record["test_acc"] <= 1.0
    rows = (run_dir / "metrics.csv").read_text().splitlines()
    assert rows[0] == ",".join(METRIC_COLUMNS) and len(rows) == 3
    assert (run_dir / ".hydra" / "config.yaml").exists() and (run_dir / ".hydra" / "overrides.yaml").exists()
    assert "epoch 2/2" in (run_dir / "train.log").read_text()


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    torch.save(torch.arange(4), folder / "tensor.pt")
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), folder / "alexnet.pt")
    return folder


BAD_INPUTS = [
    (["data.fraction=0"], "data.fraction=0.0 is not allowed; it must be in (0, 1]"),
    (["data.fraction=1.5"], "data.fraction=1.5 is not allowed; it must be in (0, 1]"),
    (["model=resnt50"], "Could not find 'model/resnt50' (did you mean resnet50 or"),
    (["model.name=resnt50"], "model.name='resnt50' is not a torchvision classification model; did you mean resnet50"),
    (["freeze=all"], "Could not find 'freeze/all'; choose one of 'freeze': early, last_only, lp_ft, middle, none"),
    (["freeze.modules=[layer9]"], "unknown module(s) layer9; this model's modules are: conv1, bn1, layer1"),
    (["model.weights=MISSING"], "no such file"),
    (["model.weights=WEIGHTS/tensor.pt"], "is not a state_dict"),
    (["model.weights=WEIGHTS/alexnet.pt"], "does not fit ResNet"),
    (["model=alexnet", "data.image_size=32"], "data.image_size=32 is too small for alexnet; it needs at least 63"),
    (["train.epochs=0"], "train.epochs=0 is not allowed; it must be >= 1"),
    (["train.batch_size=0"], "train.batch_size=0 is not allowed; it must be >= 1"),
    (["train.eval_batch_size=0"], "train.eval_batch_size=0 is not allowed; it must be >= 1"),
    (["device=cuda"], "device=cuda but this machine has no CUDA device"),
    (["data=cifar10", "data.root=EMPTY", "data.download=false"], "put cifar-10-python.tar.gz"),
    (["train.epochz=3"], "unknown key train.epochz; allowed keys in train: epochs, batch_size"),
    (["train.epochs=ten"], "train.epochs: Value 'ten' of type 'str' could not be converted to Integer"),
]


@pytest.mark.parametrize("overrides, message", BAD_INPUTS, ids=[" ".join(o) for o, _ in BAD_INPUTS])
def test_bad_input_exits_nonzero_with_one_clear_line(tmp_path, weight_files, overrides, message, capsys, monkeypatch):
    """Each bad input through `transferlab train`'s main, in this process (the console script around
    it: the test below)."""
    from transferlab.cli import main

    if "device=cuda" in overrides and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    monkeypatch.chdir(tmp_path)
    assert main(["train", *TINY, *_placed(overrides, tmp_path, weight_files)]) != 0
    captured = capsys.readouterr()
    _one_clear_line(captured.out + captured.err, message)


AS_A_USER = [BAD_INPUTS[0], BAD_INPUTS[2], BAD_INPUTS[8]]  # the schema's, Hydra's and the model's errors


@pytest.mark.slow
@pytest.mark.parametrize("overrides, message", AS_A_USER, ids=[" ".join(o) for o, _ in AS_A_USER])
def test_bad_input_exits_the_console_script_nonzero_with_one_clear_line(tmp_path, weight_files, overrides, message):
    result = transferlab("train", *TINY, *_placed(overrides, tmp_path, weight_files), cwd=tmp_path)
    assert result.returncode != 0
    _one_clear_line(result.stdout + result.stderr, message)


def _placed(overrides: list[str], tmp_path, weight_files) -> list[str]:
    return [o.replace("WEIGHTS", str(weight_files)).replace("MISSING", str(tmp_path / "missing.pt"))
            .replace("EMPTY", str(tmp_path / "empty")) for o in overrides]


def _one_clear_line(output: str, message: str) -> None:
    assert message in output
    assert "Traceback" not in output
    [line] = [line for line in output.splitlines() if message in line]
    assert len(line) < 600


@pytest.mark.slow
def test_the_cache_command_lists_and_removes_image_caches_without_torch(tmp_path):
    import subprocess
    import sys

    from helpers import cli_env, write_image_folder

    root = write_image_folder(tmp_path / "pets", per_class=2)
    decoded = transferlab("prepare", "data=imagefolder", f"data.root={root}", "data.cache_dir=cache", cwd=tmp_path)
    assert decoded.returncode == 0, decoded.stdout + decoded.stderr
    listed = transferlab("cache", "list", "--dir", "cache", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    [row] = [line for line in listed.stdout.splitlines() if line.startswith(str(tmp_path / "cache"))]
    assert row.split()[1:4] == [str(root), "12", "64x64"]
    script = ("import sys\nfrom transferlab.cli import main\n"
              "assert main(['cache', 'remove', '--all', '--dir', 'cache']) == 0\n"
              "heavy = ('torch', 'torchvision', 'numpy')\n"
              "print(sorted(name for name in sys.modules if name.partition('.')[0] in heavy))")
    removed = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=cli_env(), capture_output=True,
                             text=True, timeout=120)
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.startswith(f"removed {row.split()[0]} (") and removed.stdout.splitlines()[-1] == "[]"
    assert not [path for path in (tmp_path / "cache" / "imagefolder").iterdir() if path.is_dir()]
    refused = transferlab("cache", "remove", str(root), cwd=tmp_path)
    assert refused.returncode == 1
    assert refused.stderr.startswith(f"transferlab cache: error: {root} is not an image cache")


def test_config_dir_puts_the_users_group_files_first_for_training_too(tmp_path, monkeypatch):
    """--config-dir was honoured by --help and --cfg but not by the run itself."""
    from transferlab.cli import main

    (tmp_path / "mine" / "optim").mkdir(parents=True)
    (tmp_path / "mine" / "optim" / "fast.yaml").write_text("name: sgd\nlr: 0.05\nmomentum: 0.5\n")
    (tmp_path / "mine" / "optim" / "adamw.yaml").write_text("name: adamw\nlr: 0.02\n")  # one of conf/'s, replaced
    monkeypatch.chdir(tmp_path)
    for option, lr, momentum in (("fast", 0.05, 0.5), ("adamw", 0.02, None)):
        assert main(["train", "--config-dir", "mine", f"optim={option}", *TINY, "data.num_train=32",
                     "data.num_test=16"]) == 0
        [run] = [json.loads(path.read_text()) for path in (tmp_path / "outputs").rglob("run.json")
                 if f"optim={option}" in str(path)]
        assert run["config"]["optim"]["lr"] == lr
        if momentum is not None:
            assert run["config"]["optim"]["momentum"] == momentum
