"""`transferlab report` on real tiny sweeps (generated data, CPU, a few seconds each): tables that
match the run files, valid figures that report.md links, repeats as mean ± std, the runs that did
not complete kept apart, and the reference column only where the protocol on CIFAR-10 was followed."""

import copy
import csv
import json
import re
import shutil
import statistics
import struct
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

from transferlab import report

from conftest import start_transferlab, transferlab

# Sweeps of seconds: 40 generated images, 2 epochs of one or two batches. One thread per process,
# because the sweeps run side by side.
TINY_SWEEP = ["data=synthetic", "data.num_train=40", "data.num_test=20", "train.epochs=2", "train.batch_size=20",
              "train.eval_batch_size=20", "device=cpu", "progress=off"]
SWEEPS = {
    "part_a": ["experiment=part_a", "data.image_size=64"],  # AlexNet needs 63 px or more
    # AlexNet tried in Part B at 32 px: a run that fails.
    "part_b": ["experiment=part_b", "model=resnet18,vgg16,alexnet", "data.image_size=32", "model.pretrained=false"],
    "part_c": ["experiment=part_c", "data.image_size=32", "model.pretrained=false"],
    "lr_sweep": ["name=lr_sweep", "optim.lr=0.01,0.001", "seed=1,2", "data.image_size=32", "model.pretrained=false"],
}
PROTOCOL = {"data": {"name": "cifar10", "image_size": 224, "fraction": 0.5},
            "train": {"epochs": 10, "batch_size": 64, "eval_batch_size": 128},
            "model": {"pretrained": True}}


def completed_runs(root: Path, name: str) -> dict[Path, dict]:
    """{run folder: record} of the completed runs of one sweep, read here without the report's code."""
    runs = {}
    for path in sorted((root / "outputs" / name).glob("*/run.json")):
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError:  # the truncated one
            continue
        if record["status"] == "completed":
            runs[path.parent] = record
    return runs


def completed_records(root: Path, name: str) -> list[dict]:
    return list(completed_runs(root, name).values())


def read_csv(path: Path) -> tuple[list[str], dict[str, dict[str, str]]]:
    """(columns, {first column: row}) of a report table."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    return reader.fieldnames, {row[reader.fieldnames[0]]: row for row in rows}


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def mean_std(values: list[float], digits: int) -> str:
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def write_record(folder: Path, record: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "run.json").write_text(json.dumps(record, indent=2))
    return folder / "run.json"


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """Four real sweeps, side by side, plus a run that is still `running` and a truncated run.json."""
    import torch
    import torchvision

    root = tmp_path_factory.mktemp("study")
    # Part A sweeps model.pretrained=true,false: torchvision finds these random "ImageNet" weights in
    # TORCH_HOME instead of downloading them.
    weights_url = torchvision.models.AlexNet_Weights.IMAGENET1K_V1.url
    weights = root / "torch_home" / "hub" / "checkpoints" / weights_url.rsplit("/", 1)[1]
    weights.parent.mkdir(parents=True)
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), weights)
    sweeps = {name: start_transferlab("train", "-m", *TINY_SWEEP, *overrides, cwd=root, OMP_NUM_THREADS="1",
                                      TORCH_HOME=str(root / "torch_home"))
              for name, overrides in SWEEPS.items()}
    for name, process in sweeps.items():
        output, _ = process.communicate(timeout=300)
        assert process.returncode == (1 if name == "part_b" else 0), f"{name}:\n{output}"
    weights.unlink()

    [(lr_run, record)] = [(folder, record) for folder, record in completed_runs(root, "lr_sweep").items()
                          if record["config"]["optim"]["lr"] == 0.01 and record["seed"] == 1]
    still_running = {**record, "status": "running", "history": record["history"][:1], "finished_at": None}
    write_record(root / "outputs" / "lr_sweep" / "still-running", still_running)
    (root / "outputs" / "part_c" / "truncated").mkdir()
    (root / "outputs" / "part_c" / "truncated" / "run.json").write_text((lr_run / "run.json").read_text()[:300])
    return root


class Made(NamedTuple):
    result: subprocess.CompletedProcess
    out: Path
    texts: dict[str, bytes]  # file name -> bytes of every .md and .csv written


@pytest.fixture(scope="module")
def made(study) -> Made:
    """`transferlab report` with its defaults (outputs/ -> outputs/report/), and what it wrote."""
    result = transferlab("report", cwd=study)
    assert result.returncode == 0, result.stdout + result.stderr
    out = study / "outputs" / "report"
    return Made(result, out, {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.suffix in (".md", ".csv")})


def test_the_report_never_imports_torch():
    code = "import transferlab.report, sys; assert 'torch' not in sys.modules, 'torch was imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_part_a_table_matches_the_runs(study, made):
    columns, rows = read_csv(made.out / "part_a.csv")
    assert columns == ["fraction", "pretrained acc (%)", "scratch acc (%)", "difference (points)", "pretrained loss",
                       "scratch loss", "n"]
    assert list(rows) == ["10 %", "20 %", "50 %"]
    records = completed_records(study, "part_a")
    assert len(records) == 6
    for record in records:
        row = rows[f"{100 * record['fraction']:g} %"]
        arm = "pretrained" if record["pretrained"] else "scratch"
        assert row[f"{arm} acc (%)"] == f"{100 * record['test_acc']:.2f}"
        assert row[f"{arm} loss"] == f"{record['test_loss']:.4f}"
        assert row["n"] == "1"
    for fraction, row in rows.items():
        accuracy = {r["pretrained"]: r["test_acc"] for r in records if f"{100 * r['fraction']:g} %" == fraction}
        assert row["difference (points)"] == f"{100 * (accuracy[True] - accuracy[False]):.2f}"


def test_part_b_table_matches_the_runs(study, made):
    columns, rows = read_csv(made.out / "part_b.csv")
    assert columns == ["model", "test acc (%)", "test loss", "params", "seconds per epoch", "images/s", "n"]
    assert list(rows) == ["resnet18", "vgg16"]
    for record in completed_records(study, "part_b"):
        row = rows[record["model"]]
        epochs = record["history"]
        assert row["test acc (%)"] == f"{100 * record['test_acc']:.2f}"
        assert row["test loss"] == f"{record['test_loss']:.4f}"
        assert row["params"] == f"{record['params_total']:,}"
        assert row["seconds per epoch"] == f"{statistics.mean(e['epoch_seconds'] for e in epochs):.2f}"
        assert row["images/s"] == f"{statistics.mean(e['images_per_second'] for e in epochs):.0f}"
        assert row["n"] == "1"


def test_part_c_table_matches_the_runs(study, made):
    columns, rows = read_csv(made.out / "part_c.csv")
    assert columns == ["strategy", "frozen", "test acc (%)", "test loss", "trainable / total params",
                       "seconds per epoch", "n"]
    assert list(rows) == ["none", "early", "middle", "last_only"]  # the protocol's order, not the alphabet's
    for record in completed_records(study, "part_c"):
        row = rows[record["freeze"]]
        assert row["test acc (%)"] == f"{100 * record['test_acc']:.2f}"
        assert row["test loss"] == f"{record['test_loss']:.4f}"
        assert row["trainable / total params"] == f"{record['params_trainable']:,} / {record['params_total']:,}"
        assert row["frozen"] == (", ".join(record["frozen_modules"]) or "nothing")
        assert row["n"] == "1"
    assert rows["last_only"]["trainable / total params"] == "5,130 / 11,181,642"  # only the 512 -> 10 head
    assert rows["early"]["frozen"] == "layer1, layer2"
    assert "| none | nothing | " in made.texts["part_c.md"].decode()


def test_repeats_show_mean_std_and_n_in_a_row_per_setting_the_sweep_varies(study, made):
    columns, rows = read_csv(made.out / "lr_sweep.csv")
    assert columns == ["lr", "test acc (%)", "test loss", "seconds per epoch", "n"]  # seed is not a setting
    assert list(rows) == ["0.001", "0.01"]
    records = completed_records(study, "lr_sweep")
    for lr, row in rows.items():
        repeats = [r for r in records if f"{r['config']['optim']['lr']:g}" == lr]
        assert sorted(r["seed"] for r in repeats) == [1, 2]
        assert row["n"] == "2"  # the run still `running` is not one of them
        assert row["test acc (%)"] == mean_std([100 * r["test_acc"] for r in repeats], 2)
        assert row["test loss"] == mean_std([r["test_loss"] for r in repeats], 4)
        seconds = [statistics.mean(e["epoch_seconds"] for e in r["history"]) for r in repeats]
        assert row["seconds per epoch"] == mean_std(seconds, 2)


def test_every_figure_is_a_png_that_report_md_links(made):
    pngs = sorted(p.name for p in made.out.glob("*.png"))
    expected = {"samples.png", "part_a-test_acc-vs_fraction.png", "part_a-test_loss-vs_fraction.png",
                "part_a-test_acc-curve.png", "lr_sweep-test_acc-curve.png"}
    for part in ("part_b", "part_c"):
        expected |= {f"{part}-train_loss-curve.png", f"{part}-train_acc-curve.png", f"{part}-test_acc-bars.png",
                     f"{part}-test_loss-bars.png", f"{part}-test_acc-curve.png"}
    assert set(pngs) == expected
    for name in pngs:
        width, height = png_size(made.out / name)
        assert 200 <= width <= 4000 and 200 <= height <= 4000, (name, width, height)
        assert (made.out / name).stat().st_size > 8000, f"{name} looks empty"
    markdown = made.texts["report.md"].decode()
    linked = re.findall(r"!\[[^\]]+\]\(([^)]+)\)", markdown)
    assert sorted(linked) == pngs


def test_report_md_reads_as_one_page(study, made):
    markdown = made.texts["report.md"].decode()
    assert "18 run records read from `outputs`: 16 completed, 2 did not complete; 1 file(s) skipped" in markdown
    headings = re.findall(r"^## (.*)$", markdown, flags=re.MULTILINE)
    assert headings == ["Sample training images", "Part A — data=synthetic, image_size=64, epochs=2",
                        "Part B — data=synthetic, image_size=32, epochs=2",
                        "Part C — data=synthetic, image_size=32, epochs=2",
                        "Sweep lr_sweep — data=synthetic, image_size=32, epochs=2",
                        "Runs that did not complete", "Files skipped"]
    heading, table = made.texts["part_b.md"].decode().split("\n\n", 1)
    assert heading == "## Part B — data=synthetic, image_size=32, epochs=2" and table in markdown
    assert str(study) not in markdown  # paths are relative to the PATH given
    printed = made.result.stdout
    assert "Part C — data=synthetic, image_size=32, epochs=2\n\n| strategy | frozen | test acc (%)" in printed


def test_a_truncated_record_is_skipped_with_a_warning(made):
    [warning] = [line for line in made.result.stderr.splitlines() if "warning" in line]
    assert warning.startswith("transferlab report: warning: skipped outputs/part_c/truncated/run.json: not readable "
                              "as JSON")
    assert "- `outputs/part_c/truncated/run.json: not readable as JSON" in made.texts["report.md"].decode()


def test_runs_that_did_not_complete_are_listed_and_never_averaged(made):
    markdown = made.texts["report.md"].decode()
    section = markdown.split("## Runs that did not complete")[1].split("## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| outputs/")]
    assert rows[0] == "| outputs/lr_sweep/still-running | running | (no error recorded: still running, or killed) |"
    assert rows[1].startswith("| outputs/part_b/") and "model=alexnet" in rows[1]
    assert rows[1].endswith("| failed | data.image_size=32 is too small for alexnet; it needs at least 63 |")
    assert len(rows) == 2
    assert "| outputs/lr_sweep/still-running | running |" in made.result.stdout
    _, part_b = read_csv(made.out / "part_b.csv")
    assert "alexnet" not in part_b  # the failed run is in no table


def test_the_report_is_byte_identical_when_run_again(study, made, monkeypatch):
    monkeypatch.chdir(study)
    assert report.main(["outputs", "--out", "outputs/report"]) == 0
    again = {p.name: p.read_bytes() for p in sorted(made.out.iterdir()) if p.suffix in (".md", ".csv")}
    assert set(made.texts) == {"report.md", "part_a.csv", "part_a.md", "part_b.csv", "part_b.md", "part_c.csv",
                               "part_c.md", "lr_sweep.csv", "lr_sweep.md"}
    assert again == made.texts


def test_no_run_records_is_a_clear_error(tmp_path, monkeypatch, capsys):
    (tmp_path / "empty").mkdir()
    result = transferlab("report", "empty", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr == "transferlab report: error: no readable run.json under empty\n"
    monkeypatch.chdir(tmp_path)
    assert report.main([]) == 1  # the default outputs/ does not exist
    assert capsys.readouterr().err == "transferlab report: error: no readable run.json under outputs\n"
    write_record(tmp_path / "broken" / "run", {"status": "done"})
    assert report.main(["broken"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "transferlab report: warning: skipped broken/run/run.json: not a transferlab run record (no valid 'status' "
        "and 'config')", "transferlab report: error: no readable run.json under broken"]
    assert not (tmp_path / "outputs").exists()


def test_different_settings_make_separate_groups(study, tmp_path, capsys):
    """A Part B run at another image size is its own group, titled by what sets it apart."""
    shutil.copytree(study / "outputs" / "part_b", tmp_path / "runs" / "part_b")
    [record] = [r for r in completed_records(study, "part_b") if r["model"] == "vgg16"]
    record["config"]["data"]["image_size"] = 48
    record["config"]["data"]["num_workers"] = 7  # not a result setting: must not split groups
    write_record(tmp_path / "runs" / "part_b" / "vgg16-at-48px", record)

    assert report.main([str(tmp_path / "runs"), "--out", str(tmp_path / "out")]) == 0
    assert "Part B — data=synthetic, image_size=32, epochs=2" in capsys.readouterr().out
    _, small = read_csv(tmp_path / "out" / "part_b-1.csv")
    _, large = read_csv(tmp_path / "out" / "part_b-2.csv")
    assert list(small) == ["resnet18", "vgg16"] and list(large) == ["vgg16"]
    assert small["vgg16"]["n"] == "1" and large["vgg16"]["n"] == "1"
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "## Part B — data=synthetic, image_size=48, epochs=2" in markdown
    assert "![Part B: test accuracy by model](part_b-2-test_acc-bars.png)" in markdown
    assert not (tmp_path / "out" / "part_b.csv").exists()


def protocol_record(template: dict, test_acc: float, test_loss: float, **config: dict) -> dict:
    """``template`` (a real record) as if it had followed PROTOCOL.md on CIFAR-10, with made-up results."""
    record = copy.deepcopy(template)
    for section, values in [*PROTOCOL.items(), *config.items()]:
        record["config"][section].update(values)
    record.update(data="cifar10", image_size=224, test_acc=test_acc, test_loss=test_loss,
                  fraction=record["config"]["data"]["fraction"], pretrained=record["config"]["model"]["pretrained"])
    return record


def test_the_reference_column_appears_only_for_protocol_cifar10_runs(study, made, tmp_path, capsys):
    for name in ("part_a", "part_b", "part_c"):
        columns, _ = read_csv(made.out / f"{name}.csv")
        assert not [c for c in columns if "reference" in c]  # synthetic data: nothing to compare with
    assert "No reference column: these runs differ from the protocol on CIFAR-10 in data=synthetic, image_size=32, " \
           "epochs=2, batch_size=20, eval_batch_size=20, pretrained=false." in made.texts["report.md"].decode()

    runs = tmp_path / "runs"
    for template in completed_records(study, "part_c"):
        write_record(runs / "part_c" / template["freeze"], protocol_record(template, 0.9, 0.2))
    for pretrained in (True, False):
        [template] = [r for r in completed_records(study, "part_a") if r["fraction"] == 0.5
                      and r["pretrained"] == pretrained]
        write_record(runs / "part_a" / str(pretrained), protocol_record(
            template, 0.8 if pretrained else 0.4, 0.5, model={"pretrained": pretrained}))
    # Part B at another learning rate is not the protocol: no reference column.
    template = completed_records(study, "part_b")[0]
    write_record(runs / "part_b" / "lr", protocol_record(template, 0.9, 0.2, optim={"lr": 0.01}))

    assert report.main([str(runs), "--out", str(tmp_path / "out")]) == 0
    columns, rows = read_csv(tmp_path / "out" / "part_c.csv")
    assert columns[2:5] == ["test acc (%)", "reference test acc (%)", "test loss"]
    assert [rows[s]["reference test acc (%)"] for s in rows] == ["94.60", "93.58", "93.50", "79.87"]
    assert rows["none"]["reference test loss"] == "0.1713"
    assert rows["last_only"]["reference seconds per epoch"] == "17.60"
    columns, rows = read_csv(tmp_path / "out" / "part_a.csv")
    assert list(rows) == ["50 %"]
    assert rows["50 %"]["pretrained acc (%)"] == "80.00" and rows["50 %"]["reference pretrained acc (%)"] == "89.68"
    assert rows["50 %"]["reference scratch loss"] == "1.3601"
    assert rows["50 %"]["reference difference (points)"] == "38.62"
    columns, _ = read_csv(tmp_path / "out" / "part_b.csv")
    assert not [c for c in columns if "reference" in c]
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "## Part C — data=cifar10, image_size=224, epochs=10" in markdown
    assert "the reference columns are PROTOCOL.md's results" in markdown
    assert "differ from the protocol on CIFAR-10 in lr=0.01." in markdown
    assert "reference test acc (%)" in capsys.readouterr().out


def test_the_reference_table_is_consistent():
    for fraction, row in report.REFERENCE["part_a"].items():
        assert row["difference (points)"] == pytest.approx(row["pretrained acc (%)"] - row["scratch acc (%)"]), fraction
    assert list(report.REFERENCE["part_c"]) == list(report.STRATEGIES)
    assert report.REFERENCE["part_c"]["middle"]["test acc (%)"] == 93.50


def test_cells_and_flat_configs():
    import pandas as pd

    assert report.cell(pd.Series([0.5]), 4) == "0.5000"
    assert report.cell(pd.Series([1.0, 2.0, 3.0]), 2) == "2.00 ± 1.00"
    assert report.cell(pd.Series([], dtype=float), 2) == ""
    assert report.flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": None}) == {"a.b": 1, "a.c.d": [1, 2], "e": None}
    assert report.short_names(["data.name", "data.image_size", "train.epochs", "optim.lr"]) == {
        "data.name": "data", "data.image_size": "image_size", "train.epochs": "epochs", "optim.lr": "lr"}
