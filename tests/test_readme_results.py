"""The README's Results table is what scripts/readme_results.py makes of a saved run of the digits
study (docs/results/digits), never typed by hand."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("readme_results", ROOT / "scripts" / "readme_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _saved_study(folder: Path, load: float = 6.0) -> Path:
    folder.mkdir()
    (folder / "digits.csv").write_text(
        "per_class,weights,test_acc_mean,test_acc_std,test_acc_ci95_low,test_acc_ci95_high,n\n"
        "1,outputs/p/model.pt,61.25,3,55.5,67.0,3\n1,,30.0,2,25.0,35.0,3\n"
        "64,outputs/p/model.pt,97.0,1,95.0,99.0,3\n64,,95.5,1,93.0,98.0,3\n")
    (folder / "digits-differences.csv").write_text(
        "per_class,weights,compared,n,difference_mean,ci95_low,ci95_high,test_images\n"
        "1,,init,3,31.25,20.0,42.5,225\n64,,init,3,1.5,-1.25,4.0,225\n")
    (folder / "digits_pretrain.csv").write_text("test_acc_mean,n\n99.56,1\n")
    (folder / "report.md").write_text("# transferlab report\n\n## Digits transfer (0-4 to 5-9) — resnet18, "
                                      "all layers train, 10 epochs, 32 px\n")
    (folder / "timing.json").write_text(json.dumps({
        "command": "transferlab study digits", "seconds": 421.4, "exit_code": 0, "date": "2026-12-05",
        "cpu_cores": 2, "processor": "Test CPU", "load_before": [load, 1, 1], "load_after": [load, 1, 1]}))
    return folder


def test_the_table_holds_each_amounts_arms_their_difference_and_n(script, tmp_path):
    block = script.results_block(_saved_study(tmp_path / "study"))
    lines = block.splitlines()
    assert lines[2] == "| 1 | 61.2 [55.5, 67.0] | 30.0 [25.0, 35.0] | +31.2 [+20.0, +42.5] | 3 |"
    assert lines[3] == "| 64 | 97.0 [95.0, 99.0] | 95.5 [93.0, 98.0] | +1.5 [-1.2, +4.0] | 3 |"
    assert "Settings: resnet18, all layers train, 10 epochs, 32 px." in block
    assert "to 99.6 % test accuracy" in block and "the 225 test images are fixed" in block
    assert "`transferlab study digits`, 7 min 01 s" in block and "2 CPU cores (Test CPU)" in block
    assert "shared with other work (load average 6 before" in block
    assert "otherwise idle" in script.results_block(_saved_study(tmp_path / "idle", load=0.3))


def test_writing_replaces_only_the_block_between_the_markers(script, tmp_path):
    readme = f"# x\n\n## Results\n\n{script.BEGIN}\nold\n{script.END}\n\nafter\n"
    written = script.with_block(readme, "new table")
    assert written == f"# x\n\n## Results\n\n{script.BEGIN}\nnew table\n{script.END}\n\nafter\n"
    with pytest.raises(ValueError, match="no results markers"):
        script.with_block("# no markers\n", "new table")


def test_the_readme_holds_what_the_script_makes_of_the_saved_study(script):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert script.with_block(readme, script.results_block(script.DEFAULT_FOLDER)) == readme
