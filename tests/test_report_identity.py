"""The report never pools or pairs runs that saw different data or different models (issue 23,
section 2; issue 31's sources table): records of a layout it does not know and hand-edited fields
are skipped with one warning, from hand-written records."""

from __future__ import annotations

import pytest

from transferlab import report

from report_records import hand_record, read_csv, write_record


def run_report(tmp_path, capsys) -> tuple[int, str]:
    status = report.main([str(tmp_path / "runs"), "--out", str(tmp_path / "out")])
    return status, capsys.readouterr().err


# --- records the report cannot read -----------------------------------------------------------------

def test_a_record_of_a_newer_schema_version_is_skipped_with_a_warning(tmp_path, capsys):
    """Before: read as the current layout, and averaged in."""
    write_record(tmp_path / "runs" / "now", hand_record(seed=1, test_acc=0.7, schema_version=2))
    write_record(tmp_path / "runs" / "old", hand_record(seed=2, test_acc=0.9))  # version 1: no schema_version
    future = write_record(tmp_path / "runs" / "future", hand_record(seed=3, test_acc=0.1, schema_version=3))
    status, err = run_report(tmp_path, capsys)
    assert status == 0, err
    assert (f"transferlab report: warning: skipped {future.as_posix()}: field schema_version is 3, a newer run.json "
            "layout than this transferlab reads (1 to 2): upgrade transferlab to read it") in err.splitlines()
    _, rows = read_csv(tmp_path / "out" / "runs.csv")
    [row] = rows.values()
    assert row["n"] == "2" and float(row["test_acc_mean"]) == 80.0


def _set(record: dict, dotted: str, value) -> dict:
    *parents, leaf = dotted.split(".")
    node = record
    for parent in parents:
        node = node[parent]
    node[leaf] = value
    return record


@pytest.mark.parametrize(("changes", "field", "shown"), [
    ({"subset_seed": "abc"}, "subset_seed", "'abc'"),
    ({"subset_seed": 1.5}, "subset_seed", "1.5"),  # as seed: 42.5 is
    ({"seed": None, "config.repeat": "1"}, "config.repeat", "'1'"),
    ({"config.data.per_class": "abc"}, "config.data.per_class", "'abc'"),
    ({"config.data.subset_seed": 4.5}, "config.data.subset_seed", "4.5"),
    ({"train_images_per_class": {"class 0": "abc"}}, "train_images_per_class", "{'class 0': 'abc'}"),
])
def test_a_hand_edited_field_is_one_warning_naming_file_and_field_not_a_traceback(tmp_path, capsys, changes, field,
                                                                                   shown):
    """Before: ValueError or TypeError tracebacks (int('abc'), 0 + '1', float('abc')); 1.5 was read as 1."""
    write_record(tmp_path / "runs" / "good", hand_record(seed=1, test_acc=0.7))
    record = hand_record(seed=2, test_acc=0.1)
    for dotted, value in changes.items():
        _set(record, dotted, value)
    bad = write_record(tmp_path / "runs" / "bad", record)
    status, err = run_report(tmp_path, capsys)
    assert status == 0, err
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and warnings[0].startswith(
        f"transferlab report: warning: skipped {bad.as_posix()}: field {field} is {shown}, not "), warnings
    _, rows = read_csv(tmp_path / "out" / "runs.csv")
    [row] = rows.values()
    assert row["n"] == "1" and float(row["test_acc_mean"]) == 70.0
