"""transferlab's Python API (transferlab.api, exported lazily by the package): the same runs, records and
report as the CLI, its errors as exceptions with the CLI's one line, never SystemExit."""

import subprocess
import sys
from pathlib import Path

import pytest
from report_records import hand_record, write_record

import transferlab
from transferlab.api import Report, Run, as_record
from transferlab.errors import ConfigError, TransferlabError
from transferlab.records import RunRecord


def _study(tmp_path: Path) -> Path:
    """Two replicates of from scratch and of pretrained, on 10 % of CIFAR-10 (hand-written records)."""
    runs = tmp_path / "outputs"
    for pretrained, accuracies in ((True, (0.80, 0.84)), (False, (0.40, 0.46))):
        for seed, accuracy in zip((42, 43), accuracies):
            record = hand_record("name=api", "data.fraction=0.1", f"model.pretrained={str(pretrained).lower()}",
                                 seed=seed, test_acc=accuracy)
            write_record(runs / f"pretrained={pretrained},seed={seed}", record)
    return runs


def test_an_unknown_override_is_a_config_error_with_the_clis_line_not_system_exit():
    with pytest.raises(ConfigError) as error:
        transferlab.train(["train.epochz=3"])
    assert "train.epochz" in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(ConfigError, match=r"data.classes=\[3\] is not allowed"):
        transferlab.train(["data=digits", "data.classes=[3]"])


@pytest.mark.parametrize("call", [transferlab.runs, transferlab.report])
def test_a_missing_folder_is_an_error_that_names_it(call, tmp_path):
    missing = tmp_path / "no-such-runs"
    with pytest.raises(TransferlabError) as error:
        call(missing)
    assert str(error.value).startswith(f"{missing}: no such file or folder")


def test_a_folder_without_runs_is_the_reports_own_error_line(tmp_path):
    with pytest.raises(TransferlabError, match=r"^no readable run.json under "):
        transferlab.report(tmp_path, out=tmp_path / "report")


def test_runs_is_the_tidy_frame_the_report_reads(tmp_path):
    frame = transferlab.runs(_study(tmp_path))
    assert len(frame) == 4
    assert sorted(frame["test_acc"]) == [0.40, 0.46, 0.80, 0.84]
    assert set(frame["pretrained"]) == {True, False} and set(frame["fraction"]) == {0.1}


def test_report_returns_its_tables_as_frames_and_its_figures_as_matplotlib_figures(tmp_path, capsys):
    from matplotlib.figure import Figure

    result = transferlab.report(_study(tmp_path), out=tmp_path / "report")
    assert isinstance(result, Report) and result.folder == tmp_path / "report"
    assert (tmp_path / "report" / "report.md").read_text() == result.markdown
    arms = result.tables["api"]
    assert sorted(arms["test_acc_mean"].round(4)) == [43.0, 82.0]  # in percent, as the CSV has it
    differences = result.differences("api")
    assert differences["difference_mean"].round(4).tolist() == [39.0]  # (80-40 + 84-46) / 2 points
    assert result.figures and all(isinstance(figure, Figure) for figure in result.figures.values())
    assert set(result.figures) <= {path.name for path in (tmp_path / "report").glob("*.png")}
    assert capsys.readouterr().out == ""  # quiet unless show=True


def test_a_run_json_becomes_a_typed_record_whatever_it_lacks_or_adds():
    record = as_record({"schema_version": 9, "status": "failed", "error": "boom", "a_later_field": 1})
    assert isinstance(record, RunRecord) and (record.status, record.error, record.test_acc) == ("failed", "boom", None)


@pytest.mark.slow
def test_import_transferlab_stays_light_and_exports_the_api_lazily(tmp_path):
    code = ("import sys, transferlab; light = 'torch' not in sys.modules; transferlab.runs; "
            "print(light, 'torch' in sys.modules, callable(transferlab.train))")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == ["True", "False", "True"], result.stderr  # runs and report need no torch


@pytest.mark.slow
def test_train_runs_a_run_returns_its_typed_record_and_skips_it_when_done(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    overrides = ["data=digits", "data.per_class=2", "data.classes=[0,1,2]", "model.pretrained=false",
                 "train.epochs=1", "progress=off"]
    [run] = transferlab.train(overrides)
    assert isinstance(run, Run) and isinstance(run.record, RunRecord) and run.completed and not run.skipped
    assert run.record.classes == ["0", "1", "2"] and run.record.num_train_images == 6
    assert run.record.num_test_images == 44 + 46 + 44  # the fixed test split's digits 0, 1 and 2
    assert (run.folder / "run.json").is_file()
    [again] = transferlab.train(overrides)
    assert again.skipped and again.record.test_acc == run.record.test_acc
