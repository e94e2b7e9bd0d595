"""`transferlab report` on real tiny sweeps (generated data, CPU, a few seconds each) and on records
written by hand: tables that match the run files, valid figures that report.md links, replicates as
one row with mean, std, interval and n, the runs that did not complete kept apart, and the reference
column only where the protocol on CIFAR-10 was followed. (Known differences and their intervals:
test_report_comparisons.py; the statistics against scipy: test_report_stats.py.)"""

import copy
import json
import math
import re
import shutil
import statistics
import struct
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

from transferlab import report

from helpers import start_transferlab, transferlab
from report_records import groups_of, hand_record, make_report, read_frame, t_interval, write_record

# Sweeps of seconds: 40 generated images (Part A: 100), 2 epochs of one or two batches. One thread per process,
# because the sweeps run side by side.
TINY_SWEEP = ["data=synthetic", "data.num_test=20", "train.epochs=2", "train.batch_size=20",
              "train.eval_batch_size=20", "device=cpu", "progress=off"]
SWEEPS = {
    # AlexNet needs 63 px or more; 100 images, so that the 10 % subset gives each class one.
    "part_a": ["experiment=part_a", "data.image_size=64", "data.num_train=100"],
    # AlexNet tried in Part B at 32 px: a run that fails.
    "part_b": ["experiment=part_b", "model=resnet18,vgg16,alexnet", "data.image_size=32", "model.pretrained=false",
               "data.num_train=40"],
    "part_c": ["experiment=part_c", "data.image_size=32", "model.pretrained=false", "data.num_train=40"],
    "lr_sweep": ["name=lr_sweep", "optim.lr=0.01,0.001", "seed=1,2", "data.image_size=32", "model.pretrained=false",
                 "data.num_train=40"],
}
PROTOCOL = {"data": {"name": "cifar10", "image_size": 224, "fraction": 0.5, "sampling": "stratified"},
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


def sampling_words(records: list[dict]) -> str:
    """How the heading names the records' subsets: a record without data.sampling was drawn uniformly."""
    [sampling] = {r["config"]["data"].get("sampling", "uniform") for r in records}
    return {"stratified": "stratified by class", "uniform": "drawn uniformly"}[sampling]


def per_class_text(record: dict) -> str:
    """Training images per class as the report shows them: counted, or the mean (≈) without counts."""
    counts = record.get("train_images_per_class")
    if counts:
        low, high = min(counts.values()), max(counts.values())
        return f"{low}" if low == high else f"{low}–{high}"
    return f"≈{record['num_train_images'] / record['num_classes']:.3g}"


def markdown_rows(text: str) -> list[dict[str, str]]:
    """The rows of the first Markdown table in ``text``, as {column: cell}."""
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    cells = [[c.strip() for c in line.strip()[2:-2].split(" | ")] for line in lines]
    header, end = cells[0], next((i for i, c in enumerate(cells[2:], 2) if len(c) != len(cells[0])), len(cells))
    return [dict(zip(header, row)) for row in cells[2:end]]


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def mean_std(values: list[float], digits: int) -> str:
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


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
                                      TORCH_HOME=str(root / "torch_home"), TRANSFERLAB_STAND_IN_WEIGHTS="1")
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


# `transferlab report` as the console script runs it, then the modules that loaded on the way.
REPORT_AND_LIST_MODULES = """
import json, sys
from transferlab.cli import main
status = main(["report", sys.argv[1], "--out", sys.argv[2]])
print(json.dumps({"status": status, "modules": sorted(sys.modules)}))
"""


@pytest.mark.slow
def test_the_report_never_imports_torch(tmp_path):
    """A whole report, every code path a study takes (tables, paired differences and their
    intervals, figures, the sample grid, runs that did not complete), in a fresh interpreter:
    afterwards neither torch nor torchvision is among its modules."""
    for seed, (pretrained, scratch) in enumerate([(0.80, 0.40), (0.82, 0.45), (0.85, 0.41)], start=1):
        for accuracy, flag in ((pretrained, "true"), (scratch, "false")):
            write_record(tmp_path / "runs" / f"{flag}-{seed}", hand_record(
                "name=part_a", "model=alexnet", f"model.pretrained={flag}", seed=seed, test_acc=accuracy))
    np.savez_compressed(tmp_path / "runs" / "true-1" / "samples.npz", images=np.zeros((10, 8, 8, 3), np.uint8),
                        labels=np.arange(10), classes=np.array([f"class {i}" for i in range(10)]))
    write_record(tmp_path / "runs" / "failed", {**hand_record(seed=9), "status": "failed", "error": "boom"})
    result = subprocess.run([sys.executable, "-c", REPORT_AND_LIST_MODULES, str(tmp_path / "runs"),
                             str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    outcome = json.loads(result.stdout.splitlines()[-1])
    assert outcome["status"] == 0, result.stderr
    assert {"part_a.csv", "part_a-differences.csv", "samples-cifar10.png", "report.md"} <= {
        p.name for p in (tmp_path / "out").iterdir()}  # the report did its work, figures included
    assert "scipy.stats" in outcome["modules"] and "matplotlib.pyplot" in outcome["modules"]
    heavy = [name for name in outcome["modules"] if name.split(".")[0] in ("torch", "torchvision")]
    assert heavy == [], f"`transferlab report` imported {heavy[:5]}"


@pytest.mark.slow
def test_part_a_table_matches_the_runs(study, made):
    arms = read_frame(made.out / "part_a.csv")
    assert list(arms.columns)[:7] == ["fraction", "pretrained", "test_acc_mean", "test_acc_std", "test_acc_ci95_low",
                                      "test_acc_ci95_high", "n"]
    assert list(zip(arms["fraction"], arms["pretrained"])) == [
        (0.1, True), (0.1, False), (0.2, True), (0.2, False), (0.5, True), (0.5, False)]
    records = completed_records(study, "part_a")
    assert len(records) == 6
    rows = {(row["fraction"], row["pretrained"]): row for _, row in arms.iterrows()}
    shown = {(row["fraction"], row["init"]): row for row in markdown_rows(made.texts["part_a.md"].decode())}
    for record in records:
        row = rows[(record["fraction"], record["pretrained"])]
        assert row["test_acc_mean"] == pytest.approx(100 * record["test_acc"])
        assert row["test_loss_mean"] == pytest.approx(record["test_loss"])
        assert row["n"] == 1 and math.isnan(row["test_acc_ci95_low"])
        assert row["train_images"] == record["num_train_images"]
        cells = shown[(f"{100 * record['fraction']:g} %", "pretrained" if record["pretrained"] else "from scratch")]
        assert cells["test acc (%)"] == f"{100 * record['test_acc']:.2f}" and cells["95 % CI"] == "n=1: no interval"
        assert cells["images per class"] == per_class_text(record)
    differences = read_frame(made.out / "part_a-differences.csv")
    for row in differences.itertuples():
        accuracy = {r["pretrained"]: r["test_acc"] for r in records if r["fraction"] == row.fraction}
        assert (row.arm, row.baseline, row.n) == ("pretrained", "from scratch", 1)
        assert row.difference_mean == pytest.approx(100 * (accuracy[True] - accuracy[False]))
        assert math.isnan(row.ci95_low)


@pytest.mark.slow
def test_part_b_table_matches_the_runs(study, made):
    arms = read_frame(made.out / "part_b.csv")
    assert list(arms.columns)[:2] == ["model", "test_acc_mean"]
    assert list(arms["model"]) == ["resnet18", "vgg16"]  # the smaller model first
    shown = {row["model"]: row for row in markdown_rows(made.texts["part_b.md"].decode())}
    for record in completed_records(study, "part_b"):
        [row] = [row for _, row in arms.iterrows() if row["model"] == record["model"]]
        epochs = record["history"]
        assert row["test_acc_mean"] == pytest.approx(100 * record["test_acc"])
        assert row["test_loss_mean"] == pytest.approx(record["test_loss"])
        assert row["params_total"] == record["params_total"]
        assert row["seconds_per_epoch_mean"] == pytest.approx(statistics.mean(e["epoch_seconds"] for e in epochs))
        assert row["images_per_second_mean"] == pytest.approx(statistics.mean(e["images_per_second"] for e in epochs))
        assert row["precision_determinism"] == "fp32, not deterministic"  # a CPU run of precision=auto
        assert row["n"] == 1
        cells = shown[record["model"]]
        assert cells["params"] == f"{record['params_total']:,}" and cells["test loss"] == f"{record['test_loss']:.4f}"
        assert cells["images/s"] == f"{statistics.mean(e['images_per_second'] for e in epochs):.0f}"
    [difference] = read_frame(made.out / "part_b-differences.csv").itertuples()
    accuracy = {r["model"]: r["test_acc"] for r in completed_records(study, "part_b")}
    assert (difference.arm, difference.baseline) == ("vgg16", "resnet18")
    assert difference.difference_mean == pytest.approx(100 * (accuracy["vgg16"] - accuracy["resnet18"]))


@pytest.mark.slow
def test_part_c_table_matches_the_runs(study, made):
    arms = read_frame(made.out / "part_c.csv")
    assert list(arms["freeze"]) == ["none", "early", "middle", "last_only"]  # by trainable parameters, not alphabet
    shown = {row["freeze"]: row for row in markdown_rows(made.texts["part_c.md"].decode())}
    for record in completed_records(study, "part_c"):
        [row] = [row for _, row in arms.iterrows() if row["freeze"] == record["freeze"]]
        assert row["test_acc_mean"] == pytest.approx(100 * record["test_acc"])
        assert row["params_trainable"] == record["params_trainable"]
        assert row["frozen"] == (", ".join(record["frozen_modules"]) or "nothing")
        cells = shown[record["freeze"]]
        assert cells["trainable / total params"] == f"{record['params_trainable']:,} / {record['params_total']:,}"
        assert cells["n"] == "1"
    assert shown["last_only"]["trainable / total params"] == "5,130 / 11,181,642"  # only the 512 -> 10 head
    assert shown["early"]["frozen"] == "layer1, layer2"
    assert "| none | nothing | " in made.texts["part_c.md"].decode()
    differences = read_frame(made.out / "part_c-differences.csv")
    # every preset against every other, the more trainable one as the baseline (Holm over the six)
    assert list(zip(differences["arm"], differences["baseline"])) == [
        ("early", "none"), ("middle", "none"), ("last_only", "none"),
        ("middle", "early"), ("last_only", "early"), ("last_only", "middle")]


@pytest.mark.slow
def test_replicates_show_mean_std_interval_and_n_in_a_row_per_setting_the_sweep_varies(study, made):
    arms = read_frame(made.out / "lr_sweep.csv")
    assert list(arms.columns)[:7] == ["lr", "test_acc_mean", "test_acc_std", "test_acc_ci95_low",
                                      "test_acc_ci95_high", "n", "test_loss_mean"]  # seed is not a setting
    assert list(arms["lr"]) == [0.001, 0.01]
    records = completed_records(study, "lr_sweep")
    shown = {row["lr"]: row for row in markdown_rows(made.texts["lr_sweep.md"].decode())}
    for _, row in arms.iterrows():
        repeats = [r for r in records if r["config"]["optim"]["lr"] == row["lr"]]
        assert sorted(r["seed"] for r in repeats) == [1, 2]
        accuracies = [100 * r["test_acc"] for r in repeats]
        assert row["n"] == 2  # the run still `running` is not one of them
        assert row["test_acc_mean"] == pytest.approx(statistics.mean(accuracies))
        assert row["test_acc_std"] == pytest.approx(statistics.stdev(accuracies))
        low, high = t_interval(accuracies)
        assert (row["test_acc_ci95_low"], row["test_acc_ci95_high"]) == pytest.approx((max(low, 0), min(high, 100)))
        assert row["replicates_vary"] == "seed"
        cells = shown[f"{row['lr']:g}"]
        assert cells["test acc (%)"] == mean_std(accuracies, 2)
        assert cells["test loss"] == mean_std([r["test_loss"] for r in repeats], 4)
        seconds = [statistics.mean(e["epoch_seconds"] for e in r["history"]) for r in repeats]
        assert cells["seconds per epoch"] == mean_std(seconds, 2)
    assert "Replicates: 2 runs per arm, differing in the seed (1, 2) on one training subset" in \
           made.texts["lr_sweep.md"].decode()
    [difference] = read_frame(made.out / "lr_sweep-differences.csv").itertuples()
    by_seed = {(r["config"]["optim"]["lr"], r["seed"]): 100 * r["test_acc"] for r in records}
    paired = [by_seed[(0.01, seed)] - by_seed[(0.001, seed)] for seed in (1, 2)]
    assert difference.n == 2 and difference.difference_mean == pytest.approx(statistics.mean(paired))


@pytest.mark.slow
def test_every_figure_is_a_png_that_report_md_links(made):
    pngs = sorted(p.name for p in made.out.glob("*.png"))
    expected = {"samples-synthetic.png", "part_a-test_acc-gain.png", "part_a-test_acc-vs_fraction.png",
                "part_a-test_loss-vs_fraction.png", "part_a-test_acc-vs_per_class.png", "part_a-test_acc-curve.png",
                "lr_sweep-test_acc-differences.png", "lr_sweep-test_acc-curve.png"}
    for part in ("part_b", "part_c"):
        expected |= {f"{part}-train_loss-curve.png", f"{part}-train_acc-curve.png", f"{part}-test_acc-bars.png",
                     f"{part}-test_loss-bars.png", f"{part}-test_acc-curve.png", f"{part}-test_acc-differences.png"}
    arms = {"part_a": 6, "part_b": 2, "part_c": 4, "lr_sweep": 2}  # a confusion matrix per arm (its predictions)
    expected |= {f"{stem}-confusion-{k}.png" for stem, count in arms.items() for k in range(1, count + 1)}
    expected.add("part_a-learning-curves.png")  # Part A's three fractions are learning curves
    effective = made.out / "part_a-effective-data.csv"
    if effective.exists() and set(read_frame(effective)["kind"]) != {"none"}:  # something read off a curve
        expected.add("part_a-effective-data.png")
    assert set(pngs) == expected
    for name in pngs:
        width, height = png_size(made.out / name)
        assert 200 <= width <= 4000 and 200 <= height <= 4000, (name, width, height)
        assert (made.out / name).stat().st_size > 8000, f"{name} looks empty"
    markdown = made.texts["report.md"].decode()
    linked = re.findall(r"!\[[^\]]+\]\(([^)]+)\)", markdown)
    assert sorted(linked) == pngs


@pytest.mark.slow
def test_report_md_reads_as_one_page(study, made):
    markdown = made.texts["report.md"].decode()
    assert "18 run records read from `outputs`: 16 completed, 2 did not complete; 1 file(s) skipped" in markdown
    headings = re.findall(r"^## (.*)$", markdown, flags=re.MULTILINE)
    drawn = sampling_words(completed_records(study, "part_a"))
    half = f"50 % of the training set (20 images, {drawn})"
    assert headings == ["Sample training images — data=synthetic",
                        f"Part A — alexnet, synthetic ({drawn}), all layers train, sgd lr=0.001, 2 epochs, 64 px",
                        f"Part B — from scratch, synthetic, {half}, all layers train, sgd lr=0.001, 2 epochs, 32 px",
                        f"Part C — resnet18, from scratch, synthetic, {half}, sgd lr=0.001, 2 epochs, 32 px",
                        f"Study lr_sweep — resnet18, from scratch, synthetic, {half}, all layers train, sgd, 2 epochs, "
                        "32 px",
                        "Runs that did not complete", "Files skipped"]
    heading, table = made.texts["part_b.md"].decode().split("\n\n", 1)
    assert heading == f"## {headings[2]}" and table in markdown
    assert made.texts["part_b-differences.md"].decode().startswith(f"## {headings[2]}: paired differences\n\n")
    assert str(study) not in markdown  # paths are relative to the PATH given
    printed = made.result.stdout
    assert f"{headings[3]}\n\nOne run per arm (seed 42, subset seed 42): no replicates, so no intervals." in printed
    assert "| freeze | frozen | trainable / total params | test acc (%) | 95 % CI | n |" in printed
    assert ("*Paired differences (the same seed and subset on both sides): early, middle, last_only against none; "
            "middle, last_only against early; last_only against middle.*") in markdown


@pytest.mark.slow
def test_a_truncated_record_is_skipped_with_a_warning(made):
    [warning] = [line for line in made.result.stderr.splitlines() if "warning" in line]
    assert warning.startswith("transferlab report: warning: skipped outputs/part_c/truncated/run.json: not readable "
                              "as JSON")
    assert "- `outputs/part_c/truncated/run.json: not readable as JSON" in made.texts["report.md"].decode()


@pytest.mark.slow
def test_runs_that_did_not_complete_are_listed_and_never_averaged(made):
    markdown = made.texts["report.md"].decode()
    section = markdown.split("## Runs that did not complete")[1].split("## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| outputs/")]
    assert rows[0] == "| outputs/lr_sweep/still-running | running | (no error recorded: still running, or killed) |"
    assert rows[1].startswith("| outputs/part_b/") and "model=alexnet" in rows[1]
    assert rows[1].endswith("| failed | data.image_size=32 is too small for alexnet; it needs at least 63 |")
    assert len(rows) == 2
    assert "| outputs/lr_sweep/still-running | running |" in made.result.stdout
    assert "alexnet" not in set(read_frame(made.out / "part_b.csv")["model"])  # the failed run is in no table


@pytest.mark.slow
def test_the_report_is_byte_identical_when_run_again(study, made, monkeypatch):
    monkeypatch.chdir(study)
    assert report.main(["outputs", "--out", "outputs/report"]) == 0
    again = {p.name: p.read_bytes() for p in sorted(made.out.iterdir()) if p.suffix in (".md", ".csv")}
    assert set(made.texts) == {"report.md", *(f"{stem}{kind}.{suffix}" for stem in ("part_a", "part_b", "part_c",
                                                                                 "lr_sweep")
                                              for kind in ("", "-differences", "-per-class") for suffix in ("csv", "md"))
                              # Part A's three fractions are learning curves (report/curves.py)
                              } | {f"part_a-{kind}.{suffix}" for kind in ("curves", "effective-data", "data-needed")
                                   for suffix in ("csv", "md")}
    assert again == made.texts


@pytest.mark.slow
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


@pytest.mark.slow
def test_different_settings_make_separate_groups(study, tmp_path, capsys):
    """A Part B run at another image size is its own group, titled by what sets it apart."""
    shutil.copytree(study / "outputs" / "part_b", tmp_path / "runs" / "part_b")
    [record] = [r for r in completed_records(study, "part_b") if r["model"] == "vgg16"]
    record["config"]["data"]["image_size"] = 48
    record["config"]["data"]["num_workers"] = 7  # not a result setting: must not split groups
    write_record(tmp_path / "runs" / "part_b" / "vgg16-at-48px", record)

    assert report.main([str(tmp_path / "runs"), "--out", str(tmp_path / "out")]) == 0
    assert ", 32 px\n" in capsys.readouterr().out
    small, large = read_frame(tmp_path / "out" / "part_b-1.csv"), read_frame(tmp_path / "out" / "part_b-2.csv")
    assert list(small["model"]) == ["resnet18", "vgg16"] and "model" not in large  # one model: named in its heading
    assert list(small["n"]) == [1, 1] and list(large["n"]) == [1]
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert re.search(r"^## Part B — vgg16, from scratch, synthetic, .*, 48 px$", markdown, flags=re.MULTILINE)
    assert "![Part B: test accuracy after the last epoch](part_b-2-test_acc-bars.png)" in markdown
    assert "![Part B: test accuracy by model](part_b-1-test_acc-bars.png)" in markdown
    assert not (tmp_path / "out" / "part_b.csv").exists()


def protocol_record(template: dict, test_acc: float, test_loss: float, **config: dict) -> dict:
    """``template`` (a real record) as if it had followed the study's recipe on CIFAR-10, with made-up results."""
    record = copy.deepcopy(template)
    for section, values in [*PROTOCOL.items(), *config.items()]:
        record["config"][section].update(values)
    pretrained = record["config"]["model"]["pretrained"]
    record.update(data="cifar10", dataset="cifar10", image_size=224, test_acc=test_acc, test_loss=test_loss,
                  fraction=record["config"]["data"]["fraction"], pretrained=pretrained,
                  init="IMAGENET1K_V1" if pretrained else "random",
                  pretraining={"source": "torchvision" if pretrained else "scratch",
                               "tag": "IMAGENET1K_V1" if pretrained else None,
                               "label": "torchvision IMAGENET1K_V1" if pretrained else "from scratch",
                               "new_head": True})
    return record


@pytest.mark.slow
def test_the_reference_column_appears_only_for_protocol_cifar10_runs(study, made, tmp_path, capsys):
    for name in ("part_a", "part_b", "part_c"):
        assert not [c for c in read_frame(made.out / f"{name}.csv").columns if "reference" in c]  # synthetic data
    uniform = ", sampling=uniform" if sampling_words(completed_records(study, "part_b")) == "drawn uniformly" else ""
    assert ("No reference column: these runs differ from the study's recipe on CIFAR-10 in data=synthetic, "
            f"image_size=32, epochs=2, batch_size=20, eval_batch_size=20{uniform}, pretrained=false.") \
           in made.texts["report.md"].decode()

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
    part_c = read_frame(tmp_path / "out" / "part_c.csv")
    assert list(part_c["reference_test_acc"]) == [94.60, 93.58, 93.50, 79.87]
    assert list(part_c["reference_test_loss"])[0] == 0.1713
    assert list(part_c["reference_seconds_per_epoch"])[-1] == 17.6
    [header, *_] = [line for line in (tmp_path / "out" / "part_c.md").read_text().splitlines() if line.startswith("| ")]
    assert "| test acc (%) | 95 % CI | n | reference test acc (%) | test loss | reference test loss |" in header
    shown = {row["freeze"]: row for row in markdown_rows((tmp_path / "out" / "part_c.md").read_text())}
    assert [shown[s]["reference test acc (%)"] for s in shown] == ["94.60", "93.58", "93.50", "79.87"]
    assert shown["last_only"]["reference seconds per epoch"] == "17.60"
    assert shown["none"]["reference precision, determinism"] == "fp32, deterministic"
    part_a = read_frame(tmp_path / "out" / "part_a.csv")
    assert list(part_a["pretrained"]) == [True, False] and list(part_a["test_acc_mean"]) == [80.0, 40.0]
    assert list(part_a["reference_test_acc"]) == [89.68, 51.06]
    assert list(part_a["reference_test_loss"]) == [0.3249, 1.3601]
    [difference] = read_frame(tmp_path / "out" / "part_a-differences.csv").itertuples()
    assert difference.difference_mean == pytest.approx(40.0) and difference.reference_difference == 38.62
    assert not [c for c in read_frame(tmp_path / "out" / "part_b.csv").columns if "reference" in c]
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "## Part C — resnet18, pretrained (IMAGENET1K_V1), cifar10, 50 % of the training set" in markdown
    assert "the reference columns are the reference implementation's results (one seed each)" in markdown
    assert "docs/study.md" in markdown
    assert "differ from the study's recipe on CIFAR-10 in lr=0.01." in markdown
    assert "reference test acc (%)" in capsys.readouterr().out


def test_the_reference_table_is_consistent():
    from transferlab.report.studies import REFERENCE_DIFFERENCES

    arms = {(s["data.fraction"], s["model.pretrained"]): v["test_acc"] for s, v in report.REFERENCE["part_a"]}
    for settings, difference in REFERENCE_DIFFERENCES["part_a"]:
        fraction = settings["data.fraction"]
        assert difference == pytest.approx(arms[(fraction, True)] - arms[(fraction, False)]), fraction
    assert [s["freeze.name"] for s, _ in report.REFERENCE["part_c"]] == list(report.STRATEGIES)
    assert dict((s["freeze.name"], v) for s, v in report.REFERENCE["part_c"])["middle"]["test_acc"] == 93.50


def test_cells_and_flat_configs():
    import pandas as pd

    assert report.cell(pd.Series([0.5]), 4) == "0.5000"
    assert report.cell(pd.Series([1.0, 2.0, 3.0]), 2) == "2.00 ± 1.00"
    assert report.cell(pd.Series([1.0, float("nan"), 3.0]), 2) == "2.00 ± 1.41"  # only finite values count
    assert report.cell(pd.Series([], dtype=float), 2) == ""
    assert report.flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": None}) == {"a.b": 1, "a.c.d": [1, 2], "e": None}
    assert report.short_names(["data.name", "data.image_size", "train.epochs", "optim.lr"]) == {
        "data.name": "data", "data.image_size": "image_size", "train.epochs": "epochs", "optim.lr": "lr"}


def test_one_config_and_seed_run_twice_counts_once_and_says_which(tmp_path, capsys):
    """A plain run and the same run elsewhere (another hydra.run.dir) are one observation: n counts replicates."""
    out, markdown, err = make_report(tmp_path, {
        "outputs/runs/defaults": hand_record(test_acc=0.70, finished_at="2026-01-01T10:00:00+00:00"),
        "elsewhere/again": hand_record(test_acc=0.80, finished_at="2026-01-02T10:00:00+00:00"),
        "outputs/runs/seed=1": hand_record(seed=1, test_acc=0.60),
    }, capsys)
    [row] = read_frame(out / "runs.csv").itertuples()
    assert row.n == 2
    assert row.test_acc_mean == pytest.approx(70.0)  # the copy that finished last, and seed 1
    assert mean_std([80.0, 60.0], 2) in markdown
    runs = tmp_path / "runs"
    line = (f"one run (study runs, same settings, seed 42, subset seed 42) in 2 folders: kept "
            f"{(runs / 'elsewhere/again').as_posix()} (finished last), left out "
            f"{(runs / 'outputs/runs/defaults').as_posix()}")
    assert f"transferlab report: warning: {line}" in err.splitlines()
    assert "## Repeated runs counted once" in markdown and f"- {line}" in markdown
    assert "1 run(s) repeat another's study, settings, seed and subset seed, and count once" in markdown


def test_of_repeats_that_finished_together_the_last_folder_is_kept():
    from transferlab.report.reading import completed_frame, one_per_seed

    runs = completed_frame([(Path(folder) / "run.json", hand_record(test_acc=acc))
                            for folder, acc in (("b", 0.2), ("c", 0.3), ("a", 0.1))])
    kept, [line] = one_per_seed(runs)
    assert list(kept["path"]) == ["c"] and list(kept["test_acc"]) == [0.3]
    assert line.endswith("kept c (finished last), left out a, b")


@pytest.mark.slow  # a report with figures of several arms (about 2 s): the fast tier stays under 3 min
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
    recipe = ("resnet18, pretrained, cifar10, 50 % of the training set (25,000 images, stratified by class), "
              "all layers train, sgd lr=0.001, 10 epochs, 224 px")
    assert titles == [f"Part B — {recipe}, {setting}" for setting in (
        "deterministic=false, device=cpu, precision=fp32", "deterministic=false, device=cuda, precision=bf16",
        "deterministic=true, device=cpu, precision=fp32")]
    shown = [markdown_rows((out / f"part_b-{index}.md").read_text()) for index in (1, 2, 3)]
    for [row] in shown:
        assert list(row)[-2:] == ["precision, determinism", "reference precision, determinism"]
    assert [(row["test acc (%)"], row["precision, determinism"], row["reference precision, determinism"], row["n"])
            for [row] in shown] == [
        ("80.00", "fp32, not deterministic", "fp32, deterministic", "1"),
        ("90.00", "bf16, not deterministic", "fp32, deterministic", "1"),
        ("70.00", "fp32, deterministic but for 2 op(s)", "fp32, deterministic", "1")]
    assert list(read_frame(out / "part_b-2.csv")["precision_determinism"]) == ["bf16, not deterministic"]


def test_the_lpft_experiment_has_its_table_and_figures(tmp_path, capsys):
    from transferlab.report.figures import curve_figure

    lpft = ("name=lpft", "train.epochs=4")
    records = {
        **{f"freeze=none-{seed}": hand_record(*lpft, seed=seed, test_acc=acc)
           for seed, acc in ((1, 0.90), (2, 0.91))},
        **{f"freeze=last_only-{seed}": hand_record(*lpft, "freeze=last_only", seed=seed, test_acc=acc)
           for seed, acc in ((1, 0.80), (2, 0.83))},
        **{f"lpft-seed={seed}": hand_record(*lpft, "freeze=lp_ft", seed=seed, test_acc=acc,
                                            params_trainable_after_unfreeze=11_181_642)
           for seed, acc in ((1, 0.92), (2, 0.94))},
    }
    out, markdown, _ = make_report(tmp_path, records, capsys)
    rows = {row["freeze"]: row for row in markdown_rows((out / "lpft.md").read_text())}
    assert list(rows) == ["full fine-tuning", "linear probe, then fine-tune after epoch 2", "linear probe"]
    assert [rows[s]["what trains when"] for s in rows] == [
        "everything in epochs 1–4", "the head in epochs 1–2, everything in 3–4", "the head in epochs 1–4"]
    assert [rows[s]["trainable / total params"] for s in rows] == [
        "11,181,642 / 11,181,642", "5,130 → 11,181,642 / 11,181,642", "5,130 / 11,181,642"]
    lp_ft = rows["linear probe, then fine-tune after epoch 2"]
    assert lp_ft["test acc (%)"] == mean_std([92.0, 94.0], 2) and lp_ft["n"] == "2"
    differences = read_frame(out / "lpft-differences.csv")
    assert list(differences["baseline"]) == ["full fine-tuning", "linear probe"]
    assert list(differences["difference_mean"]) == pytest.approx([2.5, 11.5])
    assert "## LP-FT — resnet18, pretrained, cifar10, 50 % of the training set (25,000 images, stratified by class), " \
           "sgd lr=0.001, 4 epochs, 224 px" in markdown
    for figure in ("lpft-test_acc-curve.png", "lpft-train_loss-curve.png", "lpft-test_acc-bars.png",
                   "lpft-test_acc-differences.png"):
        assert f"]({figure})" in markdown and png_size(out / figure)[0] > 200

    [group] = groups_of(records)
    ax = curve_figure(group, "test_acc").axes[0]
    switches = [line for line in ax.lines if list(line.get_xdata()) == [2.5, 2.5]]
    assert len(switches) == 1  # between epoch 2 and 3, for the LP-FT arm only
    assert "all train from epoch 3" in switches[0].get_label().replace("\n", " ")


@pytest.mark.slow
def test_fraction_sweeps_show_images_per_class_on_a_log_axis(tmp_path, capsys):
    from transferlab.report.figures import data_figure

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
    assert not [c for c in read_frame(out / "part_a.csv").columns if "reference" in c]
    rows = markdown_rows((out / "part_a.md").read_text())
    assert [row["images per class"] for row in rows] == ["≈50", "≈50", "≈250", "≈250"]  # 5,000 and 25,000 / 100
    frac = read_frame(out / "frac.csv")
    assert list(frac.columns)[:3] == ["fraction", "model", "test_acc_mean"]
    assert list(zip(frac["fraction"], frac["model"], frac["train_images"])) == [
        (0.1, "resnet18", 5000), (0.1, "vgg16", 5000), (0.5, "resnet18", 25000), (0.5, "vgg16", 25000)]
    assert "![Part A: test accuracy vs training images per class](part_a-test_acc-vs_per_class.png)" in markdown
    assert "](frac-test_acc-vs_per_class.png)" in markdown

    groups = groups_of(records)
    for group in groups:
        ax = data_figure(group, "test_acc", per_class_axis=True).axes[0]
        assert ax.get_xscale() == "log"
        assert list(ax.get_xticks()) == [50, 250]
        assert ax.get_xlabel() == "training images per class (log scale)"
    legend = data_figure(groups[1], "test_acc", per_class_axis=True).axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["resnet18", "vgg16"]  # a line per setting besides the data
    assert legend.get_title().get_text() == "model"


def test_freeze_comparisons_show_trainable_parameters(tmp_path, capsys):
    out, _, _ = make_report(tmp_path, {f"freeze={preset}": hand_record("name=frozen", f"freeze={preset}")
                                       for preset in ("none", "last_only")}, capsys)
    assert list(read_frame(out / "frozen.csv").columns)[:2] == ["freeze", "test_acc_mean"]
    rows = {row["freeze"]: row for row in markdown_rows((out / "frozen.md").read_text())}
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
    rest = ("50 % of the training set (25,000 images, stratified by class), all layers train, sgd lr=0.001, 10 epochs, "
            "224 px")
    assert headings == [
        f"Part C — resnet18, pretrained, flowers (imagefolder), {rest}",  # data.root never splits: the dataset does
        f"Part C — resnet18, pretrained, pets (imagefolder), {rest}",
        f"Study datasets — resnet18, pretrained, cifar10 or cifar100, {rest}"]
    assert list(read_frame(out / "datasets.csv")["data"]) == ["cifar10", "cifar100"]


def test_the_sample_grid_shows_the_dataset_own_class_names(tmp_path, capsys):
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
        table = report.Table("extra", pd.DataFrame({"runs": [len(runs)]}))
        return [report.Section("extra", "Extra — data=cifar10", [table])]

    monkeypatch.setattr(report, "SECTION_BUILDERS", [*report.SECTION_BUILDERS, extra])
    out, markdown, _ = make_report(tmp_path, {"a": hand_record(), "b": hand_record(seed=1)}, capsys)
    assert markdown.index("## Runs — resnet18") < markdown.index("## Extra — data=cifar10\n\n| runs |\n| --- |\n| 2 |")
    assert (out / "extra.csv").read_text() == "runs\n2\n"
