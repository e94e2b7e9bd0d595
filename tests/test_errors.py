"""Never silent, never a traceback: bad settings, broken config files and a run folder that cannot be
written each end in one line that names the setting or the file, and a non-zero exit (docs/faults.md
lists every fault the project is tested against)."""

import dataclasses
import errno
import json
import math
import shutil
import subprocess
from pathlib import Path

import pytest

from transferlab.cli import main
from transferlab.config import MAX_SEED, Config, validate
from transferlab.composition import compose_with_hydra, config_dir
from transferlab.errors import ConfigError, TransferlabError
from transferlab.locks import RUN_LOCK_FILE
from transferlab.data import make_loader
from transferlab.run import Collaborators, run_training

from helpers import TINY, compose_config, tiny_config

SMALL_RUN = ("data.num_train=32", "data.num_test=16")


def exit_code(*argv: str) -> int:
    """What `transferlab ARGV` exits with, run in this process: main returns it, never exits."""
    return main(list(argv))


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


# --- settings that are not finite numbers ---------------------------------------------------------

def float_settings(section=None, prefix: str = "") -> list[tuple[str, object]]:
    """(key, default) of every float setting of the schema, and of every list of floats."""
    section = Config() if section is None else section
    found = []
    for entry in dataclasses.fields(section):
        key, value = f"{prefix}{entry.name}", getattr(section, entry.name)
        if dataclasses.is_dataclass(value):
            found += float_settings(value, f"{key}.")
        elif isinstance(value, float) or (isinstance(value, list) and value and isinstance(value[0], float)):
            found.append((key, value))
    return found


@pytest.mark.parametrize("override, message", [
    ("optim.lr=nan", "optim.lr=nan is not allowed; it must be a finite number"),
    ("optim.lr=inf", "optim.lr=inf is not allowed; it must be a finite number"),
    ("optim.momentum=nan", "optim.momentum=nan is not allowed; it must be a finite number"),
    ("optim.weight_decay=inf", "optim.weight_decay=inf is not allowed; it must be a finite number"),
])
def test_non_finite_optimizer_settings_are_refused(override, message):
    """They passed every check written as a comparison, and the run ended `completed` with NaN."""
    with pytest.raises(ConfigError) as error:
        validate(compose_config([override]))
    assert str(error.value) == message


@pytest.mark.parametrize("bad", ["nan", "inf"])
def test_every_float_setting_of_the_schema_refuses_nan_and_infinity(bad):
    """Settings added later are covered too: the check walks the schema."""
    settings = float_settings()
    assert {"optim.lr", "optim.momentum", "optim.weight_decay", "optim.betas", "data.fraction",
            "data.crop_scale", "data.test_crop"} <= {key for key, _ in settings}
    for key, default in settings:
        value = f"[{bad},{','.join(map(str, default[1:]))}]" if isinstance(default, list) else bad
        with pytest.raises(ConfigError) as error:
            validate(compose_config([f"{key}={value}"]))
        assert str(error.value).startswith(f"{key}=") and "is not allowed" in str(error.value), key


class NanImages:
    """A loader whose images are all NaN (what weights left NaN make of any image)."""

    def __init__(self, loader):
        self.loader = loader

    def __len__(self):
        return len(self.loader)

    def epoch(self, epoch):
        for images, labels in self.loader.epoch(epoch):
            yield images * math.nan, labels


def test_a_non_finite_test_loss_fails_the_run(tmp_path):
    """One training batch can end finite while its step leaves the weights NaN: the test loss is
    then NaN, which made a `completed` run. Here the training is finite and the test images are
    NaN: the test loss is NaN all the same."""
    def nan_test_images(*args, train, **kwargs):
        loader = make_loader(*args, train=train, **kwargs)
        return loader if train else NanImages(loader)

    record = run_training(tiny_config(*SMALL_RUN), tmp_path, parts=Collaborators(make_loader=nan_test_images))
    assert record["status"] == "failed"
    assert record["error"] == ("epoch 1: the test loss is not finite (nan); the weights diverged: try a lower "
                               "optim.lr or precision=fp32")
    assert record["history"] == [] and record["test_loss"] is None
    assert json.loads((tmp_path / "run.json").read_text())["status"] == "failed"


# --- seeds, overrides and conf/ files that cannot be read ------------------------------------------

@pytest.mark.parametrize("override", ["seed=100000000000000000000000", "seed=-1", f"data.subset_seed={2**63}"])
def test_a_seed_the_rngs_cannot_take_is_refused(override):
    """10**23 reached the run and failed there as `ValueError: Overflow when unpacking long long`."""
    key, _, value = override.partition("=")
    with pytest.raises(ConfigError) as error:
        validate(compose_config([override]))
    assert str(error.value) == f"{key}={value} is not allowed; it must be an integer in [0, {MAX_SEED}] (2**32 - 1)"


def test_the_largest_seed_allowed_fits_every_rng_a_run_seeds_and_one_more_is_refused():
    import torch

    from transferlab.data import make_synthetic
    from transferlab.data.pipelines import epoch_generator
    from transferlab.engine import configure_determinism

    config = validate(compose_config([f"seed={MAX_SEED}", f"data.subset_seed={MAX_SEED}"]))
    configure_determinism(config.seed, False, torch.device("cpu"))
    epoch_generator(config.seed, 10_000)
    make_synthetic(2, 2, seed=config.data.subset_seed, size=8)
    for key in ("seed", "data.subset_seed"):
        with pytest.raises(ConfigError, match=rf"^{key}={MAX_SEED + 1} is not allowed"):
            validate(compose_config([f"{key}={MAX_SEED + 1}"]))


def test_an_override_hydra_cannot_parse_is_one_line_naming_it(capsys):
    assert exit_code("train", "seed=10^23") == 1
    [line] = error_lines(capsys.readouterr().err)
    assert line == ("transferlab train: error: cannot read the override 'seed=10^23': the character '^' is not "
                    "allowed in an unquoted value; quote the value (KEY='VALUE') or write a number in digits "
                    "(see https://hydra.cc/docs/1.2/advanced/override_grammar/basic)")


@pytest.fixture
def broken_conf(tmp_path, monkeypatch) -> Path:
    """A copy of conf/ whose optim/sgd.yaml is not YAML (line 2 opens a list it never closes)."""
    conf = tmp_path / "conf"
    shutil.copytree(config_dir(), conf)
    (conf / "optim" / "sgd.yaml").write_text("name: sgd\nlr: [0.1\nmomentum: 0.9\n")
    monkeypatch.chdir(tmp_path)
    return conf


def test_a_yaml_syntax_error_in_conf_is_one_line_naming_the_file_and_line(broken_conf, capsys):
    expected = (f"{broken_conf / 'optim' / 'sgd.yaml'}, line 3, column 9: not valid YAML (while parsing a flow "
                "sequence; expected ',' or ']', but got ':'); fix that file or reinstall transferlab")
    assert exit_code("train", "--config-dir", str(broken_conf), *TINY) == 1  # its files first, as conf/ would be
    assert error_lines(capsys.readouterr().err) == [f"transferlab train: error: {expected}"]
    assert not (broken_conf.parent / "outputs").exists()
    with pytest.raises(ConfigError) as error:  # how tune and prepare compose the config
        compose_with_hydra([], conf=broken_conf)
    assert str(error.value) == expected


def test_lp_ft_with_one_epoch_names_train_epochs_not_the_key_it_sets_itself():
    with pytest.raises(ConfigError) as error:
        validate(compose_config(["freeze=lp_ft", "train.epochs=1"]))
    assert str(error.value) == ("freeze=lp_ft needs train.epochs >= 2 (a linear probe for the first half of the "
                                "epochs, then fine-tuning), but train.epochs=1; raise train.epochs")


def test_tune_without_arguments_asks_for_the_part_alone(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["tune"])
    assert exit_.value.code == 2
    assert error_lines(capsys.readouterr().err)[-1] == "transferlab tune: error: the following arguments are required: PART"


def test_tune_refuses_an_infinite_learning_rate_bound(capsys):
    """It reached Optuna, whose sampler failed with `OverflowError: Range exceeds valid bounds`."""
    assert exit_code("tune", "part_a", "--lr", "1e-4", "inf") == 1
    assert error_lines(capsys.readouterr().err) == [
        "transferlab tune: error: --lr 0.0001 inf is not allowed; give finite numbers 0 < LOW < HIGH"]


def test_fp16_on_the_cpu_is_announced_once_at_the_start(tmp_path, caplog):
    """float16 autocast on the CPU trains 50-150x slower than fp32 (measured: ResNet18, 2-core Xeon)."""
    def stop(*args, **kwargs):
        raise TransferlabError("stopped before training")

    stopped = Collaborators(load_datasets=stop)
    for precision, warned in (("fp16", 1), ("fp32", 0), ("bf16", 0)):
        caplog.clear()
        record = run_training(tiny_config(f"precision={precision}"), tmp_path / precision, parts=stopped)
        assert record["precision"] == precision and record["error"] == "stopped before training"
        warnings = [r for r in caplog.records if r.levelname == "WARNING" and "precision=fp16" in r.getMessage()]
        assert len(warnings) == warned
    caplog.clear()
    run_training(tiny_config("precision=fp16"), tmp_path / "again", parts=stopped)
    [warning] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warning.startswith("precision=fp16 on the CPU trains about 50-150x slower than fp32")
    assert "use precision=fp32 or auto, or bf16" in warning


# --- a run folder that cannot be written --------------------------------------------------------

def run_folder(*overrides: str) -> Path:
    """The folder `transferlab train OVERRIDES` writes, relative to the working directory."""
    return Path(str(compose_with_hydra(list(overrides)).hydra.run.dir))


def test_an_unwritable_hydra_folder_is_one_line_not_a_silent_exit(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    folder = run_folder(*TINY)
    folder.mkdir(parents=True)
    (folder / ".hydra").write_text("a file where the run's .hydra/ folder goes")
    assert exit_code("train", *TINY) == 1
    [line] = error_lines(capsys.readouterr().err)
    assert line.startswith("transferlab train: error: cannot write the run's file ")
    assert line.endswith(f"{folder / '.hydra' / 'config.yaml'} (FileExistsError: File exists)")
    assert not (folder / "run.json").exists()


def test_a_log_that_cannot_be_written_is_one_line_not_a_logging_traceback(tmp_path, monkeypatch, capsys):
    """The disk is full for train.log (/dev/full): one line says so, and the run goes on to the end."""
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    monkeypatch.chdir(tmp_path)
    overrides = (*TINY, *SMALL_RUN)
    folder = run_folder(*overrides)
    folder.mkdir(parents=True)
    (folder / "train.log").symlink_to("/dev/full")
    assert exit_code("train", *overrides) == 0
    errors = capsys.readouterr().err
    assert "Traceback" not in errors and "Logging error" not in errors
    assert error_lines(errors) == [
        f"transferlab: {(folder / 'train.log').absolute()} could not be written (OSError: [Errno 28] No space left "
        "on device); the rest of the run's log is on the console only"]
    assert json.loads((folder / "run.json").read_text())["status"] == "completed"


def test_a_record_that_cannot_be_saved_is_one_line_and_run_json_keeps_the_last_saved_epoch(tmp_path, capsys):
    """The run completes, then the disk is full for the final run.json (the run's record writer,
    handed in: it fails for every record but a running one's)."""
    from transferlab.records import write_record

    def full_at_the_end(run_dir, record):
        if record["status"] != "running":
            raise OSError(errno.ENOSPC, "No space left on device")
        write_record(run_dir, record)

    folder = tmp_path / "run"
    with pytest.raises(TransferlabError) as error:
        run_training(tiny_config(*SMALL_RUN), folder, parts=Collaborators(write_record=full_at_the_end))
    assert str(error.value).startswith("the run completed, but its record could not be saved: the disk is full: ")
    assert str(error.value).endswith("run.json still shows the last saved epoch")
    assert "Traceback" not in capsys.readouterr().err
    assert json.loads((folder / "run.json").read_text())["status"] == "running"


@pytest.fixture
def full_disk(tmp_path) -> Path:
    """A 1 MiB file system (tmpfs) with no byte free; skipped where this process may not mount one."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no `mount` command here to make a small tmpfs")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root or CAP_SYS_ADMIN): {made.stderr.strip()}")
    try:
        with open(disk / "filler", "wb") as filler:
            filler.write(b"\0" * 2**21)
    except OSError:
        pass
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


@pytest.mark.slow  # mounts a file system
def test_a_full_disk_before_the_first_write_is_one_line_not_a_silent_exit(full_disk, monkeypatch, capsys):
    monkeypatch.chdir(full_disk)
    assert exit_code("train", *TINY) == 1
    [line] = error_lines(capsys.readouterr().err)
    folder = run_folder(*TINY)
    # The run's first write is the holder's line in its lock file (transferlab.locks.run_folder_lock).
    assert line == f"transferlab train: error: cannot write the run's file {(folder / RUN_LOCK_FILE).absolute()} (the disk is full)"
