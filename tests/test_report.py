"""`transferlab report` on real tiny sweeps (generated data, CPU, a few seconds each): tables that
match the run files, valid figures that report.md links, repeats as mean ± std, the runs that did
not complete kept apart, and the reference column only where the protocol on CIFAR-10 was followed."""

import copy
import functools
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
    assert columns == ["fraction", "images per class", "pretrained acc (%)", "scratch acc (%)", "difference (points)",
                       "pretrained loss", "scratch loss", "precision, determinism", "n"]
    assert list(rows) == ["10 %", "20 %", "50 %"]
    records = completed_records(study, "part_a")
    assert len(records) == 6
    for record in records:
        row = rows[f"{100 * record['fraction']:g} %"]
        arm = "pretrained" if record["pretrained"] else "scratch"
        assert row[f"{arm} acc (%)"] == f"{100 * record['test_acc']:.2f}"
        assert row[f"{arm} loss"] == f"{record['test_loss']:.4f}"
        assert row["n"] == "1"
        assert row["images per class"] == f"{record['num_train_images'] / record['num_classes']:.3g}"
    for fraction, row in rows.items():
        accuracy = {r["pretrained"]: r["test_acc"] for r in records if f"{100 * r['fraction']:g} %" == fraction}
        assert row["difference (points)"] == f"{100 * (accuracy[True] - accuracy[False]):.2f}"


def test_part_b_table_matches_the_runs(study, made):
    columns, rows = read_csv(made.out / "part_b.csv")
    assert columns == ["model", "test acc (%)", "test loss", "params", "seconds per epoch", "images/s",
                       "precision, determinism", "n"]
    assert list(rows) == ["resnet18", "vgg16"]
    for record in completed_records(study, "part_b"):
        row = rows[record["model"]]
        epochs = record["history"]
        assert row["test acc (%)"] == f"{100 * record['test_acc']:.2f}"
        assert row["test loss"] == f"{record['test_loss']:.4f}"
        assert row["params"] == f"{record['params_total']:,}"
        assert row["seconds per epoch"] == f"{statistics.mean(e['epoch_seconds'] for e in epochs):.2f}"
        assert row["images/s"] == f"{statistics.mean(e['images_per_second'] for e in epochs):.0f}"
        assert row["precision, determinism"] == "fp32, not deterministic"  # a CPU run of precision=auto
        assert row["n"] == "1"


def test_part_c_table_matches_the_runs(study, made):
    columns, rows = read_csv(made.out / "part_c.csv")
    assert columns == ["strategy", "frozen", "test acc (%)", "test loss", "trainable / total params",
                       "seconds per epoch", "precision, determinism", "n"]
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
    assert columns == ["lr", "test acc (%)", "test loss", "seconds per epoch", "precision, determinism",
                       "n"]  # seed is not a setting
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
    expected = {"samples-synthetic.png", "part_a-test_acc-vs_fraction.png", "part_a-test_loss-vs_fraction.png",
                "part_a-test_acc-vs_per_class.png", "part_a-test_acc-curve.png", "lr_sweep-test_acc-curve.png"}
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
    assert headings == ["Sample training images — data=synthetic", "Part A — data=synthetic, image_size=64, epochs=2",
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
    """``template`` (a real record) as if it had followed the study's recipe on CIFAR-10, with made-up results."""
    record = copy.deepcopy(template)
    for section, values in [*PROTOCOL.items(), *config.items()]:
        record["config"][section].update(values)
    record.update(data="cifar10", dataset="cifar10", image_size=224, test_acc=test_acc, test_loss=test_loss,
                  fraction=record["config"]["data"]["fraction"], pretrained=record["config"]["model"]["pretrained"])
    return record


def test_the_reference_column_appears_only_for_protocol_cifar10_runs(study, made, tmp_path, capsys):
    for name in ("part_a", "part_b", "part_c"):
        columns, _ = read_csv(made.out / f"{name}.csv")
        assert not [c for c in columns if "reference" in c]  # synthetic data: nothing to compare with
    assert "No reference column: these runs differ from the study's recipe on CIFAR-10 in data=synthetic, " \
           "image_size=32, epochs=2, batch_size=20, eval_batch_size=20, pretrained=false." in made.texts["report.md"].decode()

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
    assert rows["none"]["reference precision, determinism"] == "fp32, deterministic"
    columns, rows = read_csv(tmp_path / "out" / "part_a.csv")
    assert list(rows) == ["50 %"]
    assert rows["50 %"]["pretrained acc (%)"] == "80.00" and rows["50 %"]["reference pretrained acc (%)"] == "89.68"
    assert rows["50 %"]["reference scratch loss"] == "1.3601"
    assert rows["50 %"]["reference difference (points)"] == "38.62"
    columns, _ = read_csv(tmp_path / "out" / "part_b.csv")
    assert not [c for c in columns if "reference" in c]
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "## Part C — data=cifar10, image_size=224, epochs=10" in markdown
    assert "the reference columns are the reference implementation's results (one seed each)" in markdown
    assert "docs/study.md" in markdown
    assert "differ from the study's recipe on CIFAR-10 in lr=0.01." in markdown
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


# Records written by hand, in run.json's shape, for what tiny real runs cannot show (GPUs, other
# datasets, repeats, LP-FT): fast, and each names the one thing it varies.
@functools.cache
def _config_json(overrides: tuple[str, ...]) -> str:
    from transferlab.config import as_dict, compose_config

    return json.dumps(as_dict(compose_config(list(overrides))))


def hand_record(*overrides: str, seed: int = 42, test_acc: float = 0.5, test_loss: float = 1.0,
                finished_at: str = "2026-01-01T10:00:00+00:00", keys: dict | None = None, **fields) -> dict:
    """A completed record of the real config composed with ``overrides`` (``keys``: dotted config
    keys set afterwards, e.g. one that another branch adds), with made-up results."""
    config = json.loads(_config_json(overrides))
    for key, value in (keys or {}).items():
        *parents, leaf = key.split(".")
        node = config
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    config["seed"] = seed
    epochs = config["train"]["epochs"]
    history = [{"epoch": e, "train_loss": 2.0 / e, "train_acc": test_acc * e / epochs, "test_loss": test_loss,
                "test_acc": test_acc * e / epochs, "epoch_seconds": 10.0, "eval_seconds": 1.0,
                "images_per_second": 100.0} for e in range(1, epochs + 1)]
    frozen = {"none": [], "early": ["layer1", "layer2"], "middle": ["layer2", "layer3"],
              "last_only": ["conv1", "bn1", "layer1", "layer2", "layer3", "layer4"]}[config["freeze"]["name"]]
    record = {
        "status": "completed", "name": config["name"], "model": config["model"]["name"],
        "pretrained": config["model"]["pretrained"], "data": config["data"]["name"],
        "dataset": config["data"]["name"], "fraction": config["data"]["fraction"],
        "image_size": config["data"]["image_size"], "freeze": config["freeze"]["name"], "frozen_modules": frozen,
        "seed": seed, "config": config, "num_classes": 10, "classes": [f"class {i}" for i in range(10)],
        "params_total": 11_181_642, "params_trainable": 5_130 if frozen and frozen[0] == "conv1" else 11_181_642,
        "num_train_images": round(50_000 * config["data"]["fraction"]), "num_test_images": 10_000,
        "history": history, "test_acc": test_acc, "test_loss": test_loss, "device": "cpu", "precision": "fp32",
        "started_at": "2026-01-01T09:00:00+00:00", "finished_at": finished_at,
    }
    record.update(fields)
    return record


def make_report(tmp_path: Path, records: dict[str, dict], capsys) -> tuple[Path, str, str]:
    """Writes ``records`` ({folder: record}) under tmp_path/runs, runs the report into tmp_path/out;
    (out, report.md, stderr)."""
    for folder, record in records.items():
        write_record(tmp_path / "runs" / folder, record)
    assert report.main([str(tmp_path / "runs"), "--out", str(tmp_path / "out")]) == 0
    return tmp_path / "out", (tmp_path / "out" / "report.md").read_text(), capsys.readouterr().err


def test_one_config_and_seed_run_twice_counts_once_and_says_which(tmp_path, capsys):
    """A plain run and the same run elsewhere (another hydra.run.dir) are one observation: n counts seeds."""
    out, markdown, err = make_report(tmp_path, {
        "outputs/runs/defaults": hand_record(test_acc=0.70, finished_at="2026-01-01T10:00:00+00:00"),
        "elsewhere/again": hand_record(test_acc=0.80, finished_at="2026-01-02T10:00:00+00:00"),
        "outputs/runs/seed=1": hand_record(seed=1, test_acc=0.60),
    }, capsys)
    _, rows = read_csv(out / "runs.csv")
    [row] = rows.values()
    assert row["n"] == "2"
    assert row["test acc (%)"] == mean_std([80.0, 60.0], 2)  # the copy that finished last, and seed 1
    runs = tmp_path / "runs"
    line = (f"one run (study runs, same settings, seed 42) in 2 folders: kept {(runs / 'elsewhere/again').as_posix()} "
            f"(finished last), left out {(runs / 'outputs/runs/defaults').as_posix()}")
    assert f"transferlab report: warning: {line}" in err.splitlines()
    assert f"## Repeated runs counted once" in markdown and f"- {line}" in markdown
    assert "1 run(s) repeat another's study, settings and seed, and count once" in markdown


def test_of_repeats_that_finished_together_the_last_folder_is_kept():
    from transferlab.report.reading import completed_frame, one_per_seed

    runs = completed_frame([(Path(folder) / "run.json", hand_record(test_acc=acc))
                            for folder, acc in (("b", 0.2), ("c", 0.3), ("a", 0.1))])
    kept, [line] = one_per_seed(runs)
    assert list(kept["path"]) == ["c"] and list(kept["test_acc"]) == [0.3]
    assert line.endswith("kept c (finished last), left out a, b")


def test_runs_group_on_the_precision_and_device_they_used_not_on_auto(tmp_path, capsys):
    """precision=auto on a GPU (bf16) and on a CPU (fp32) are different settings, also at one seed;
    every table says how its runs computed, beside how the reference did."""
    out, markdown, _ = make_report(tmp_path, {
        "gpu": hand_record("name=part_b", precision="bfloat16", device="cuda:0", test_acc=0.9),
        "cpu": hand_record("name=part_b", test_acc=0.8),
        "cpu-deterministic": hand_record("name=part_b", "deterministic=true", test_acc=0.7,
                                         nondeterministic_ops=["aten::index_put", "aten::scatter"]),
    }, capsys)
    titles = re.findall(r"^## (Part B .*)$", markdown, flags=re.MULTILINE)
    assert titles == [f"Part B — data=cifar10, image_size=224, epochs=10, {setting}" for setting in (
        "deterministic=false, device=cpu, precision=fp32", "deterministic=false, device=cuda, precision=bf16",
        "deterministic=true, device=cpu, precision=fp32")]
    tables = [read_csv(out / f"part_b-{index}.csv") for index in (1, 2, 3)]
    for columns, _ in tables:
        assert columns[-3:] == ["precision, determinism", "reference precision, determinism", "n"]
    assert [(row["test acc (%)"], row["precision, determinism"], row["reference precision, determinism"], row["n"])
            for _, rows in tables for row in rows.values()] == [
        ("80.00", "fp32, not deterministic", "fp32, deterministic", "1"),
        ("90.00", "bf16, not deterministic", "fp32, deterministic", "1"),
        ("70.00", "fp32, deterministic but for 2 op(s)", "fp32, deterministic", "1")]


def test_the_lpft_experiment_has_its_table_and_figures(tmp_path, capsys):
    from transferlab.report.figures import curve_figure
    from transferlab.report.reading import completed_frame
    from transferlab.report.studies import make_groups

    lpft = ("name=lpft", "train.epochs=4")
    records = {
        "freeze=none": hand_record(*lpft, test_acc=0.90, keys={"freeze.unfreeze_at_epoch": None}),
        "freeze=last_only": hand_record(*lpft, "freeze=last_only", test_acc=0.80,
                                        keys={"freeze.unfreeze_at_epoch": None}),
        **{f"lpft-seed={seed}": hand_record(*lpft, "freeze=last_only", seed=seed, test_acc=acc,
                                            keys={"freeze.unfreeze_at_epoch": 2},
                                            params_trainable_after_unfreeze=11_181_642)
           for seed, acc in ((1, 0.92), (2, 0.94))},
    }
    out, markdown, _ = make_report(tmp_path, records, capsys)
    columns, rows = read_csv(out / "lpft.csv")
    assert columns == ["strategy", "what trains when", "test acc (%)", "test loss", "trainable params",
                       "total params", "seconds per epoch", "precision, determinism", "n"]
    assert list(rows) == ["full fine-tuning", "linear probe", "LP-FT, switch after epoch 2"]
    assert [rows[s]["what trains when"] for s in rows] == [
        "everything in epochs 1–4", "the head in epochs 1–4", "the head in epochs 1–2, everything in 3–4"]
    assert [rows[s]["trainable params"] for s in rows] == ["11,181,642", "5,130", "5,130 → 11,181,642"]
    lp_ft = rows["LP-FT, switch after epoch 2"]
    assert lp_ft["test acc (%)"] == mean_std([92.0, 94.0], 2) and lp_ft["n"] == "2"
    assert "## LP-FT — data=cifar10, image_size=224, epochs=4" in markdown
    for figure in ("lpft-test_acc-curve.png", "lpft-train_loss-curve.png", "lpft-test_acc-bars.png"):
        assert f"]({figure})" in markdown and png_size(out / figure)[0] > 200

    [group] = make_groups(completed_frame([(Path(f) / "run.json", r) for f, r in records.items()]))
    ax = curve_figure(group, "test_acc").axes[0]
    switches = [line for line in ax.lines if list(line.get_xdata()) == [2.5, 2.5]]
    assert len(switches) == 1  # between epoch 2 and 3, for the LP-FT series only
    assert "all train from epoch 3" in switches[0].get_label().replace("\n", " ")


def test_fraction_sweeps_show_images_per_class_on_a_log_axis(tmp_path, capsys):
    from transferlab.report.figures import data_figure
    from transferlab.report.reading import completed_frame
    from transferlab.report.studies import make_groups

    cifar100 = dict(data="cifar100", dataset="cifar100", num_classes=100,
                    classes=[f"class {i}" for i in range(100)])
    records = {}
    for fraction in (0.1, 0.5):
        for pretrained in ("true", "false"):
            records[f"part_a/{fraction}-{pretrained}"] = hand_record(
                "name=part_a", "model=alexnet", f"data.fraction={fraction}", f"model.pretrained={pretrained}",
                keys={"data.name": "cifar100"}, **cifar100)
        for model in ("resnet18", "vgg16"):
            records[f"frac/{fraction}-{model}"] = hand_record(
                "name=frac", f"model={model}", f"data.fraction={fraction}", keys={"data.name": "cifar100"},
                **cifar100)
    out, markdown, _ = make_report(tmp_path, records, capsys)
    columns, rows = read_csv(out / "part_a.csv")
    assert columns[:2] == ["fraction", "images per class"] and not [c for c in columns if "reference" in c]
    assert [row["images per class"] for row in rows.values()] == ["50", "250"]  # 5,000 and 25,000 / 100 classes
    with open(out / "frac.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0])[:3] == ["fraction", "model", "images per class"]
    assert [(row["fraction"], row["model"], row["images per class"]) for row in rows] == [
        ("0.1", "resnet18", "50"), ("0.1", "vgg16", "50"), ("0.5", "resnet18", "250"), ("0.5", "vgg16", "250")]
    assert "![Part A: test accuracy vs training images per class](part_a-test_acc-vs_per_class.png)" in markdown
    assert "](frac-test_acc-vs_per_class.png)" in markdown

    groups = make_groups(completed_frame([(Path(f) / "run.json", r) for f, r in records.items()]))
    for group in groups:
        ax = data_figure(group, "test_acc", per_class_axis=True).axes[0]
        assert ax.get_xscale() == "log"
        assert list(ax.get_xticks()) == [50, 250]
        assert ax.get_xlabel() == "training images per class (log scale)"
    sweep_lines = data_figure(groups[1], "test_acc", per_class_axis=True).axes[0].get_legend_handles_labels()[1]
    assert sweep_lines == ["model=resnet18", "model=vgg16"]  # a line per setting besides the fraction


def test_freeze_comparisons_show_trainable_parameters(tmp_path, capsys):
    out, _, _ = make_report(tmp_path, {f"freeze={preset}": hand_record("name=frozen", f"freeze={preset}")
                                       for preset in ("none", "last_only")}, capsys)
    columns, rows = read_csv(out / "frozen.csv")
    assert columns == ["freeze", "test acc (%)", "test loss", "trainable / total params", "seconds per epoch",
                       "precision, determinism", "n"]
    assert rows["last_only"]["trainable / total params"] == "5,130 / 11,181,642"


def test_every_heading_names_the_dataset_and_each_image_folder_is_its_own_group(tmp_path, capsys):
    folder = dict(data="imagefolder", keys={"data.name": "imagefolder"})
    out, markdown, _ = make_report(tmp_path, {
        "flowers": hand_record("name=part_c", dataset="flowers", **folder),
        "pets": hand_record("name=part_c", dataset="pets", **folder),
        "cifar10": hand_record("name=datasets"),
        "cifar100": hand_record("name=datasets", data="cifar100", dataset="cifar100", keys={"data.name": "cifar100"}),
    }, capsys)
    headings = re.findall(r"^## (.*)$", markdown, flags=re.MULTILINE)
    assert headings == [
        "Part C — data=flowers (imagefolder), image_size=224, epochs=10",  # data.root never splits: the dataset does
        "Part C — data=pets (imagefolder), image_size=224, epochs=10",
        "Sweep datasets — data=cifar10 or cifar100, image_size=224, epochs=10"]
    _, rows = read_csv(out / "datasets.csv")
    assert list(rows) == ["cifar10", "cifar100"]


def test_the_sample_grid_shows_the_dataset_own_class_names(tmp_path, capsys):
    import numpy as np

    from transferlab.report.figures import samples_figure

    classes = np.array([f"name {i:03d}" for i in range(100)])
    labels = np.arange(60, 92)
    record = hand_record(data="cifar100", dataset="cifar100", num_classes=100, classes=list(classes),
                         keys={"data.name": "cifar100"})
    write_record(tmp_path / "runs" / "c100", record)
    np.savez_compressed(tmp_path / "runs" / "c100" / "samples.npz", images=np.zeros((32, 8, 8, 3), np.uint8),
                        labels=labels, classes=classes)
    figure = samples_figure(tmp_path / "runs" / "c100" / "samples.npz", "title")
    # One of each class: a grid, each image under its class's name.
    assert [ax.get_title() for ax in figure.axes if ax.images] == [f"name {label:03d}" for label in labels]
    out, markdown, _ = make_report(tmp_path, {}, capsys)
    assert "## Sample training images — data=cifar100" in markdown
    assert "![Sample training images of cifar100 with their classes](samples-cifar100.png)" in markdown
    assert png_size(out / "samples-cifar100.png")[0] > 200


def test_a_section_builder_adds_its_own_table_to_the_report(tmp_path, capsys, monkeypatch):
    import pandas as pd

    def extra(runs, out):
        return [report.Section("extra", "Extra — data=cifar10", pd.DataFrame({"runs": [len(runs)]}))]

    monkeypatch.setattr(report, "SECTION_BUILDERS", [*report.SECTION_BUILDERS, extra])
    out, markdown, _ = make_report(tmp_path, {"a": hand_record(), "b": hand_record(seed=1)}, capsys)
    assert markdown.index("## Sweep runs") < markdown.index("## Extra — data=cifar10\n\n| runs |\n| --- |\n| 2 |")
    assert (out / "extra.csv").read_text() == "runs\n2\n"
