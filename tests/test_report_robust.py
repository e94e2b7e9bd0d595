"""`transferlab report` against what users' folders hold: run folders reached through symbolic
links, records with a mistyped or non-finite field, `$` in names, an --out that cannot be written,
a garbled samples.npz; and the sample grid that shows every class (written by run.write_samples)."""

import errno
import json
import math
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from transferlab import report
from transferlab.report.reading import find_run_files

from report_records import hand_record, read_csv, write_record
from test_report import png_size

PNG_END = b"IEND\xaeB`\x82"  # the last chunk of a whole PNG


def run_report(tmp_path: Path, capsys, out: Path | None = None) -> tuple[int, str]:
    """The report of tmp_path/runs into ``out`` (default tmp_path/out): (exit status, stderr)."""
    status = report.main([str(tmp_path / "runs"), "--out", str(out or tmp_path / "out")])
    return status, capsys.readouterr().err


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if "error" in line.lower() or "Traceback" in line]


# --- symbolic links ---------------------------------------------------------------------------------

def test_symlinked_run_folders_are_read_once_and_a_link_loop_ends(tmp_path):
    runs, elsewhere = tmp_path / "runs", tmp_path / "elsewhere"
    write_record(runs / "real" / "a", hand_record())
    write_record(elsewhere / "b", hand_record(seed=1))
    write_record(elsewhere / ".hidden" / "c", hand_record(seed=2))
    (runs / "linked").symlink_to(elsewhere, target_is_directory=True)  # a sweep kept on another disk
    (runs / "again").symlink_to(runs / "real", target_is_directory=True)  # the same folder a second way
    (runs / "real" / "a" / "up").symlink_to(runs, target_is_directory=True)  # a loop back to the top
    (runs / "broken").symlink_to(tmp_path / "gone", target_is_directory=True)
    write_record(tmp_path / "out" / "copy", hand_record(seed=3))
    (runs / "report").symlink_to(tmp_path / "out", target_is_directory=True)  # the report's own folder: not read
    found = find_run_files([str(runs)], tmp_path / "out")
    assert found == [runs / "linked" / "b" / "run.json", runs / "real" / "a" / "run.json"]
    # Given twice, through a link and directly: each read once, by the way with the fewest links,
    # under the path given first where two ways cross as many.
    assert find_run_files([str(runs / "again"), str(runs)], tmp_path / "out") == [
        runs / "again" / "a" / "run.json", runs / "linked" / "b" / "run.json"]


# --- records with fields the report cannot use -----------------------------------------------------

@pytest.mark.parametrize(("change", "field", "shown"), [
    (dict(test_acc="abc"), "test_acc", "'abc'"),
    (dict(test_acc=math.nan), "test_acc", "NaN"),
    (dict(test_acc=math.inf), "test_acc", "Infinity"),
    (dict(test_acc=57.0), "test_acc", "57.0"),  # a percentage where a fraction belongs
    (dict(test_acc=None), "test_acc", None),
    (dict(test_loss="0.3"), "test_loss", "'0.3'"),
    (dict(seed="one"), "seed", "'one'"),
    (dict(frozen_modules="layer1"), "frozen_modules", "'layer1'"),
    (dict(num_train_images=2.5e4), "num_train_images", "25000.0"),
    (dict(history={"epoch": 1}), "history", "{'epoch': 1}"),
    (dict(history=[{"epoch": 1, "train_loss": "abc"}]), "history[0].train_loss", "'abc'"),
    (dict(history=[{"train_loss": 1.0}]), "history[0].epoch", None),
    (dict(config_data="cifar10"), "config.data", "'cifar10'"),
    (dict(config_fraction="half"), "config.data.fraction", "'half'"),
    (dict(config_pretrained="yes"), "config.model.pretrained", "'yes'"),
])
def test_record_problem_names_the_field_and_its_value(change, field, shown):
    from transferlab.records import record_problem

    record = hand_record()
    for key, value in change.items():  # set after hand_record, which computes a history from test_acc
        if key == "config_data":
            record["config"]["data"] = value
        elif key == "config_fraction":
            record["config"]["data"]["fraction"] = value
        elif key == "config_pretrained":
            record["config"]["model"]["pretrained"] = value
        else:
            record[key] = value
    problem = record_problem(record)
    if shown is None:
        assert problem.startswith(f"field {field} is missing (it must be ")
    else:
        assert problem.startswith(f"field {field} is {shown}, not ")
    assert record_problem(hand_record()) is None


def test_a_mistyped_field_skips_its_record_with_a_warning_naming_file_and_field(tmp_path, capsys):
    write_record(tmp_path / "runs" / "good", hand_record(seed=1, test_acc=0.7))
    bad = write_record(tmp_path / "runs" / "bad", {**hand_record(seed=2), "test_acc": "abc"})
    # A run that did not complete is listed whatever its results: they are never used.
    write_record(tmp_path / "runs" / "failed", {**hand_record(seed=3), "test_acc": "abc", "status": "failed",
                                                "error": "boom"})
    status, err = run_report(tmp_path, capsys)
    assert status == 0, err
    assert "failed" not in err
    assert (f"transferlab report: warning: skipped {bad.as_posix()}: field test_acc is 'abc', "
            "not a finite number in [0, 1]") in err.splitlines()
    _, rows = read_csv(tmp_path / "out" / "runs.csv")
    [row] = rows.values()
    assert row["n"] == "1" and float(row["test_acc_mean"]) == 70.0
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert f"- `{bad.as_posix()}: field test_acc is 'abc'" in markdown
    assert f"| {(tmp_path / 'runs' / 'failed').as_posix()} | failed | boom |" in markdown


def test_a_nan_test_accuracy_is_not_counted(tmp_path, capsys):
    """Before: "6.00" with n=2, from one value."""
    write_record(tmp_path / "runs" / "good", hand_record(seed=1, test_acc=0.06))
    (tmp_path / "runs" / "nan").mkdir()
    nan = tmp_path / "runs" / "nan" / "run.json"
    nan.write_text(json.dumps({**hand_record(seed=2), "test_acc": math.nan}))  # written as NaN, read back as nan
    status, err = run_report(tmp_path, capsys)
    assert status == 0, err
    assert f"skipped {nan.as_posix()}: field test_acc is NaN, not a finite number in [0, 1]" in err
    _, rows = read_csv(tmp_path / "out" / "runs.csv")
    [row] = rows.values()
    assert (float(row["test_acc_mean"]), row["n"]) == (6.0, "1")


# --- `$` is text, never mathtext --------------------------------------------------------------------

def test_dollar_signs_in_names_are_drawn_as_text(tmp_path, capsys):
    from matplotlib.text import Text

    from transferlab.report.figures import samples_figure

    # mathtext would fail on "$x^$" and draw "$5 to $10" as italic math
    classes = ["a$x^$b", "costs $5 to $10", *(f"class {i}" for i in range(2, 10))]
    folder = dict(data="imagefolder", dataset="deals$x^$", classes=classes, name="sweep$x^$",
                  keys={"data.name": "imagefolder", "name": "sweep$x^$"})
    for seed in (1, 2):
        write_record(tmp_path / "runs" / f"deals$x^$-{seed}", hand_record(seed=seed, **folder))
    samples = tmp_path / "runs" / "deals$x^$-1" / "samples.npz"
    np.savez_compressed(samples, images=np.zeros((10, 8, 8, 3), np.uint8), labels=np.arange(10),
                        classes=np.array(classes))
    status, err = run_report(tmp_path, capsys)
    assert status == 0, err
    pngs = sorted((tmp_path / "out").glob("*.png"))
    assert "samples-deals_x_imagefolder.png" in [p.name for p in pngs] and len(pngs) >= 2
    assert all(png_size(p)[0] > 200 for p in pngs)
    figure = samples_figure(samples, "Sample training images of deals$x^$")
    figure.canvas.draw()
    texts = [t for t in figure.findobj(Text) if t.get_text()]
    assert "costs $5 to $10" in [t.get_text() for t in texts]
    assert not [t.get_text() for t in texts if t.get_parse_math()]


# --- an --out that cannot be written ----------------------------------------------------------------

def one_good_run(tmp_path: Path) -> None:
    for seed in (1, 2):
        write_record(tmp_path / "runs" / f"seed={seed}", hand_record(seed=seed))


def assert_whole_files_only(out: Path) -> None:
    """No empty or half-written file and no temporary file in ``out``."""
    for file in out.rglob("*"):
        assert not file.name.startswith("."), f"temporary file left: {file.name}"
        assert file.stat().st_size > 0, f"empty file left: {file.name}"
        if file.suffix == ".png":
            assert file.read_bytes().endswith(PNG_END), f"half a PNG left: {file.name}"


def test_out_pointing_at_a_file_is_one_error_line(tmp_path, capsys):
    one_good_run(tmp_path)
    out = tmp_path / "report.txt"
    out.write_text("not a folder\n")
    status, err = run_report(tmp_path, capsys, out)
    assert status == 1
    assert error_lines(err) == [f"transferlab report: error: cannot write the report to {out.as_posix()}: "
                                "it is a file, not a folder"]
    assert out.read_text() == "not a folder\n"


@pytest.fixture
def tmpfs(tmp_path):
    """A function mounting a tmpfs with the given options at a new folder; skipped where this
    process may not mount one. Unmounted afterwards."""
    mounted = []

    def mount(options: str) -> Path:
        point = tmp_path / f"disk{len(mounted)}"
        point.mkdir()
        if shutil.which("mount") is None:
            pytest.skip("no `mount` command here to make a tmpfs")
        made = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)],
                              capture_output=True, text=True)
        if made.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {made.stderr.strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)


@pytest.mark.slow  # mounts a tmpfs (a subprocess)
def test_a_read_only_out_folder_is_one_error_line(tmp_path, capsys, tmpfs):
    one_good_run(tmp_path)
    if os.geteuid() == 0:  # root writes through any mode: a read-only file system
        out, reason = tmpfs("size=1m,ro"), "Read-only file system"
        status, err = run_report(tmp_path, capsys, out)
    else:
        out, reason = tmp_path / "read-only", "Permission denied"
        out.mkdir(mode=0o555)
        try:
            status, err = run_report(tmp_path, capsys, out)
        finally:
            out.chmod(0o755)  # so that pytest can remove it
    assert status == 1
    [line] = error_lines(err)
    assert line.startswith(f"transferlab report: error: cannot write the report to {out.as_posix()}: {reason} (")
    assert list(out.iterdir()) == []


@pytest.mark.slow  # mounts a tmpfs (a subprocess)
def test_a_full_disk_is_one_error_line_and_leaves_no_empty_or_half_png(tmp_path, capsys, tmpfs):
    one_good_run(tmp_path)
    out = tmpfs("size=4k")  # one page: less than the report's first PNG
    status, err = run_report(tmp_path, capsys, out)
    assert status == 1
    [line] = error_lines(err)
    assert line.startswith(f"transferlab report: error: cannot write the report to {out.as_posix()}: "
                           "No space left on device (")
    assert_whole_files_only(out)


def test_a_write_that_fails_at_fsync_is_one_error_line_and_leaves_nothing(tmp_path, capsys, monkeypatch):
    """A full disk as network file systems report it: at fsync (runs where no tmpfs can be mounted too)."""
    import transferlab.files as files

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    one_good_run(tmp_path)
    monkeypatch.setattr(files.os, "fsync", full)
    status, err = run_report(tmp_path, capsys)
    assert status == 1
    [line] = error_lines(err)
    assert line.startswith(f"transferlab report: error: cannot write the report to {(tmp_path / 'out').as_posix()}: "
                           "No space left on device (")
    assert list((tmp_path / "out").iterdir()) == []


# --- a garbled samples.npz --------------------------------------------------------------------------

@pytest.mark.parametrize("garble", ["bytes", "truncated", "labels"])
def test_a_garbled_samples_file_is_a_warning_and_the_next_run_gives_the_grid(tmp_path, capsys, garble):
    classes = np.array([f"class {i}" for i in range(10)])
    arrays = dict(images=np.zeros((10, 8, 8, 3), np.uint8), labels=np.arange(10), classes=classes)
    for seed in (1, 2, 3):
        write_record(tmp_path / "runs" / f"seed={seed}", hand_record(seed=seed))
        np.savez_compressed(tmp_path / "runs" / f"seed={seed}" / "samples.npz", **arrays)
    garbled = tmp_path / "runs" / "seed=1" / "samples.npz"
    if garble == "bytes":
        garbled.write_bytes(os.urandom(2000))
    elif garble == "truncated":
        garbled.write_bytes(garbled.read_bytes()[:200])
    else:
        np.savez_compressed(garbled, **{**arrays, "labels": np.arange(10) + 5})  # names no class has
    status, err = run_report(tmp_path, capsys)
    assert status == 0, err
    [warning] = [line for line in err.splitlines() if "samples.npz" in line]
    assert warning.startswith(f"transferlab report: warning: no sample grid from {garbled.as_posix()}: ")
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert f"From `{(tmp_path / 'runs' / 'seed=2').as_posix()}`." in markdown
    assert png_size(tmp_path / "out" / "samples-cifar10.png")[0] > 200


def test_a_report_whose_only_samples_file_is_garbled_goes_on_without_a_grid(tmp_path, capsys):
    write_record(tmp_path / "runs" / "a", hand_record())
    (tmp_path / "runs" / "a" / "samples.npz").write_bytes(b"PK\x03\x04 not a zip")
    status, err = run_report(tmp_path, capsys)
    assert status == 0, err
    assert "no sample grid from" in err
    assert not list((tmp_path / "out").glob("samples-*.png"))
    assert (tmp_path / "out" / "runs.csv").is_file()


# --- a few images of every class ------------------------------------------------------------------

def image_set(labels: list[int], num_classes: int):
    """Images whose pixels all hold their index (mod 256), so that a test can tell which were picked."""
    import torch

    from transferlab.data import ImageSet

    count = len(labels)
    images = (torch.arange(count) % 256).to(torch.uint8).view(count, 1, 1, 1).expand(count, 3, 8, 8).contiguous()
    return ImageSet(images, torch.tensor(labels), tuple(f"class {i}" for i in range(num_classes)))


@pytest.mark.parametrize(("num_classes", "per_class", "kept_classes"), [(10, 4, 10), (30, 3, 30), (100, 1, 100),
                                                                         (250, 1, 100)])
def test_the_samples_are_the_first_few_of_each_class(tmp_path, num_classes, per_class, kept_classes):
    from transferlab.outputs import write_samples

    # Sorted by class, as many datasets are on disk: the first 32 images would be 1 or 2 classes.
    labels = [label for label in range(num_classes) for _ in range(5)]
    data = image_set(labels, num_classes)
    write_samples(tmp_path / "samples.npz", data)
    with np.load(tmp_path / "samples.npz") as samples:
        picked, classes, images = samples["labels"], samples["classes"], samples["images"]
    assert list(classes) == [f"class {i}" for i in range(num_classes)]
    assert list(picked) == [label for label in range(kept_classes) for _ in range(per_class)]
    expected_index = [5 * label + k for label in range(kept_classes) for k in range(per_class)]
    assert list(images[:, 0, 0, 0]) == [i % 256 for i in expected_index]  # the first of each class, in order
    assert images.shape[1:] == (8, 8, 3) and len(images) <= 100


def test_a_class_with_few_training_images_keeps_what_it_has(tmp_path):
    from transferlab.outputs import write_samples

    data = image_set([0, 1, 1, 1, 1, 1, 2, 2] * 1, 4)  # class 3: no training image (a small subset)
    write_samples(tmp_path / "samples.npz", data)
    with np.load(tmp_path / "samples.npz") as samples:
        assert list(samples["labels"]) == [0, 1, 1, 1, 1, 2, 2]


def test_the_sample_grid_has_a_row_per_class_under_its_name(tmp_path):
    from transferlab.report.figures import samples_figure
    from transferlab.outputs import write_samples

    data = image_set([i % 10 for i in range(60)], 10)  # class of image i: i % 10
    write_samples(tmp_path / "samples.npz", data)
    figure = samples_figure(tmp_path / "samples.npz", "Sample training images of cifar10")
    rows = np.array(figure.axes).reshape(10, 4)
    assert [ax.get_ylabel() for ax in rows[:, 0]] == [f"class {i}" for i in range(10)]
    for label, row in enumerate(rows):
        shown = [int(ax.images[0].get_array()[0, 0, 0]) for ax in row]
        assert [index % 10 for index in shown] == [label] * 4  # every image of the row is of its class
    assert figure._suptitle.get_text() == "Sample training images of cifar10\n4 images of each of its 10 classes"

    data = image_set([0, 0, 1, 1, 1], 3)  # class 2 has no image in this subset
    write_samples(tmp_path / "few.npz", data)
    figure = samples_figure(tmp_path / "few.npz", "title")
    assert figure._suptitle.get_text() == "title\nup to 3 images of each of 2 of its 3 classes"


@pytest.mark.parametrize("where", ["the runs", "a run folder", "inside a run folder", "above the runs"])
def test_an_out_that_holds_the_runs_or_sits_in_one_is_refused_in_one_line(tmp_path, capsys, where):
    one_good_run(tmp_path)
    runs = tmp_path / "runs"
    out = {"the runs": runs, "a run folder": runs / "seed=1", "inside a run folder": runs / "seed=1" / "rp",
           "above the runs": tmp_path}[where]
    before = sorted(runs.rglob("*"))
    status, err = run_report(tmp_path, capsys, out)
    assert status == 1
    why = {"the runs": f"holds {runs}, which it would report",
           "a run folder": f"is the run folder {(runs / 'seed=1').as_posix()}",
           "inside a run folder": f"is inside the run folder {(runs / 'seed=1').as_posix()}",
           "above the runs": f"holds {runs}, which it would report"}[where]
    assert error_lines(err) == [f"transferlab report: error: --out {out.as_posix()} {why}; choose a folder that "
                                "holds no run (the default is outputs/report)"]
    assert sorted(runs.rglob("*")) == before  # nothing written among the runs


def test_an_out_inside_the_searched_folder_but_outside_every_run_is_the_usual_place(tmp_path, capsys):
    one_good_run(tmp_path)
    status, err = run_report(tmp_path, capsys, tmp_path / "runs" / "report")
    assert status == 0, err
    assert (tmp_path / "runs" / "report" / "report.md").is_file()
