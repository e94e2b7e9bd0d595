"""The training core: the epoch loop and its callbacks, the typed record, one launch path, and a
package without import cycles."""

from __future__ import annotations

import ast
import json
import os
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from helpers import DRY_RUN, At, interrupt, tiny_config
from transferlab.errors import RunInterrupted
from transferlab.fit import Callback, fit
from transferlab.records import SCHEMA_VERSION, RunRecord
from transferlab.run import run_training
from transferlab.run_record import new_record

SOURCE = Path(__file__).resolve().parents[1] / "src" / "transferlab"


class Batches:
    """Four batches of 8 random points of 2 classes, the same every epoch."""

    def __init__(self, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        self.batches = [(torch.randn(8, 3, generator=generator), torch.randint(0, 2, (8,), generator=generator))
                        for _ in range(4)]

    def __len__(self) -> int:
        return len(self.batches)

    def epoch(self, epoch: int):
        return iter(self.batches)


class Journal(Callback):
    """Writes down every call it gets."""

    def __init__(self, calls: list, name: str, batches: bool = False):
        self.calls, self.name, self.batches = calls, name, batches

    def on_epoch_start(self, epoch):
        self.calls.append((self.name, "start", epoch))

    def on_epoch_end(self, end):
        self.calls.append((self.name, "end", end.epoch, end.last_epoch, sorted(end.evaluated), end.lr))

    def on_fit_end(self):
        self.calls.append((self.name, "fit end"))

    def on_fit_stop(self):
        self.calls.append((self.name, "fit stop"))


class CountBatches(Callback):
    def __init__(self):
        self.steps = []

    def on_batch(self, step, totals):
        self.steps.append(step)


def fit_linear(epochs: range, callbacks, scheduler_gamma: float | None = None) -> nn.Module:
    model = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    scheduler = None if scheduler_gamma is None else torch.optim.lr_scheduler.ExponentialLR(optimizer, scheduler_gamma)
    fit(model, nn.CrossEntropyLoss(), Batches(), optimizer, epochs, device=torch.device("cpu"),
        evaluations={"test": Batches(1), "val": Batches(2)}, scheduler=scheduler, callbacks=callbacks)
    return model


def test_fit_runs_the_epochs_it_is_given_and_calls_the_callbacks_in_their_order():
    calls, counter = [], CountBatches()
    fit_linear(range(3, 5), [Journal(calls, "a"), Journal(calls, "b"), counter])
    assert calls == [
        ("a", "start", 3), ("b", "start", 3),
        ("a", "end", 3, 4, ["test", "val"], 0.5), ("b", "end", 3, 4, ["test", "val"], 0.5),
        ("a", "start", 4), ("b", "start", 4),
        ("a", "end", 4, 4, ["test", "val"], 0.5), ("b", "end", 4, 4, ["test", "val"], 0.5),
        ("a", "fit end"), ("b", "fit end"),
    ]
    assert counter.steps == [1, 2, 3, 4] * 2


def test_a_scheduler_steps_after_every_batch_and_each_epoch_reports_its_starting_rate():
    calls = []
    fit_linear(range(1, 3), [Journal(calls, "a")], scheduler_gamma=0.5)
    rates = [call[-1] for call in calls if call[1] == "end"]
    assert rates == [0.5, 0.5 * 0.5 ** 4]  # four batches per epoch


def test_what_a_callback_raises_stops_the_fit_and_every_callback_hears_of_it():
    calls = []
    with pytest.raises(KeyboardInterrupt):
        fit_linear(range(1, 4), [Journal(calls, "a"), At(2, 1, interrupt)])
    assert calls[-2:] == [("a", "start", 2), ("a", "fit stop")]
    assert ("a", "fit end") not in calls


def test_the_record_is_written_with_its_schema_version_and_leaves_out_unset_optional_fields():
    record = new_record(tiny_config(), ["seed=1"])
    written = record.to_dict()
    assert list(written)[:2] == ["schema_version", "status"] and written["schema_version"] == SCHEMA_VERSION
    assert written["test_acc"] is None and written["history"] == [] and written["overrides"] == ["seed=1"]
    assert "val_acc" not in written and "error" not in written and "device" not in written
    record.val_acc, record.error = 0.5, "x"
    assert record.to_dict()["val_acc"] == 0.5 and record.to_dict()["error"] == "x"
    assert json.loads(json.dumps(written)) == written
    assert set(written) - {"schema_version"} <= {f for f in RunRecord.__dataclass_fields__}


@pytest.mark.slow
def test_a_run_interrupted_before_its_first_epoch_ends_says_there_is_nothing_to_resume(tmp_path, caplog):
    with pytest.raises(RunInterrupted) as interrupted:
        run_training(tiny_config(), tmp_path, callbacks=[At(1, 1, interrupt)])
    assert interrupted.value.record["status"] == "interrupted" and interrupted.value.record["history"] == []
    [warning] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "before its first epoch finished" in warning and "run the same command again to start it" in warning
    assert "checkpoint" not in warning
    assert json.loads((tmp_path / "run.json").read_text())["error"].endswith("start it (no epoch had finished)")


@pytest.mark.slow
def test_launch_returns_each_runs_result_and_leaves_argv_and_the_environment_alone(tmp_path, monkeypatch):
    from transferlab.launch import launch

    monkeypatch.chdir(tmp_path)
    argv, environment = list(sys.argv), dict(os.environ)
    results = launch([*DRY_RUN, "progress=off", "seed=1,2"], multirun=True)
    assert [r.record["seed"] for r in results] == [1, 2] and all(r.completed and not r.skipped for r in results)
    assert all((r.run_dir / "run.json").exists() for r in results)
    again = launch([*DRY_RUN, "progress=off", "seed=2"])
    assert [(r.run_dir, r.skipped) for r in again] == [(results[1].run_dir, True)]
    assert sys.argv == argv and dict(os.environ) == environment


def imports_of(path: Path) -> set[str]:
    """The transferlab modules a module imports anywhere in it (functions too), except under
    TYPE_CHECKING."""
    found = set()

    class Visitor(ast.NodeVisitor):
        def visit_If(self, node):
            if "TYPE_CHECKING" in ast.unparse(node.test):
                for child in node.orelse:
                    self.visit(child)
                return
            self.generic_visit(node)

        def visit_Import(self, node):
            found.update(alias.name for alias in node.names if alias.name.startswith("transferlab"))

        def visit_ImportFrom(self, node):
            if node.module and node.module.startswith("transferlab"):
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)

    Visitor().visit(ast.parse(path.read_text()))
    return found


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SOURCE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_the_package_has_no_import_cycles():
    modules = {module_name(path): path for path in SOURCE.rglob("*.py")}
    graph = {name: {m for m in imports_of(path) if m in modules and m != name} for name, path in modules.items()}
    cycles, done = [], set()

    def visit(name, path):
        if name in path:
            cycles.append(path[path.index(name):] + [name])
            return
        if name in done:
            return
        for imported in sorted(graph[name]):
            visit(imported, [*path, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])
    assert cycles == []


@pytest.mark.parametrize("overrides", [["data.fraction=1.5"], ["train.epochs=ten"], ["-m", "data.fraction=0.5,1.5"]],
                         ids=["a value not allowed", "a type error", "one job of a sweep"])
def test_a_config_that_is_not_allowed_is_one_error_and_writes_nothing(tmp_path, monkeypatch, overrides):
    from transferlab.errors import ConfigError
    from transferlab.launch import launch

    monkeypatch.chdir(tmp_path)
    multirun = overrides[0] == "-m"
    with pytest.raises(ConfigError) as refused:
        launch([*DRY_RUN, *overrides[multirun:]], multirun=multirun)
    assert str(refused.value).startswith(("data.fraction=1.5 is not allowed", "train.epochs: Value 'ten'"))
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_a_failed_checkpoint_write_in_a_run_that_then_completed_says_nothing_is_lost(tmp_path, caplog):
    import errno

    from transferlab.checkpoint import CheckpointWriteError, write_failure
    from transferlab.run import Collaborators

    def full_disk(state, path, **kwargs):
        raise CheckpointWriteError(write_failure(path, 2**30, OSError(errno.ENOSPC, "No space left on device")))

    record = run_training(tiny_config("train.epochs=2"), tmp_path, parts=Collaborators(save_checkpoint=full_disk))
    assert record["status"] == "completed", record.get("error")
    [warning] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warning.startswith("a checkpoint could not be saved (the disk is full: ") and "nothing is lost" in warning
    assert "resume" not in warning
