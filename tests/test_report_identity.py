"""The report never pools or pairs runs that saw different data or different models (issue 23,
section 2; issue 31's sources table): records of a layout it does not know and hand-edited fields
are skipped with one warning, from hand-written records."""

from __future__ import annotations

from pathlib import Path

import pytest

from transferlab import report

from report_records import groups_of, hand_record, make_report, read_csv, read_frame, t_interval, write_record


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
    ({"config.data.sampling": [1]}, "config.data.sampling", "[1]"),
    ({"config.optim.name": 1.5}, "config.optim.name", "1.5"),
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


def test_a_null_data_subset_seed_is_read_as_none_given(tmp_path, capsys):
    """Before: a TypeError traceback (None + 0)."""
    record = hand_record(seed=2, test_acc=0.1, keys={"data.subset_seed": None})
    write_record(tmp_path / "runs" / "null", record)
    status, err = run_report(tmp_path, capsys)
    assert status == 0 and "warning" not in err, err
    _, rows = read_csv(tmp_path / "out" / "runs.csv")
    [row] = rows.values()
    assert row["n"] == "1" and row["replicates_vary"] == ""
    assert "subset seed 42" in (tmp_path / "out" / "report.md").read_text()


# --- a dataset is what it is, not its name -----------------------------------------------------------

def folder_record(root: str, *overrides: str, test: str = "val/", keys: dict | None = None, **fields) -> dict:
    """A completed run on the image folder ``root`` (named by its last part, as run.json names it)."""
    return hand_record(*overrides, data="imagefolder", dataset=root.rsplit("/", 1)[-1],
                       keys={"data.name": "imagefolder", "data.root": root, **(keys or {})},
                       data_source={"root": root, "train": "train/", "test": test}, **fields)


def test_two_image_folders_of_one_name_are_two_datasets_never_one_run(tmp_path, capsys):
    """Before: one was left out as a "copy" of the other (same study, settings and seed)."""
    out, markdown, err = make_report(tmp_path, {
        "a": folder_record("/data/a/imgs", "name=part_c", seed=1, test_acc=0.9),
        "b": folder_record("/data/b/imgs", "name=part_c", seed=1, test_acc=0.3),
    }, capsys)
    assert "warning" not in err
    headings = [line for line in markdown.splitlines() if line.startswith("## Part C")]
    assert [h.split(", ")[2] for h in headings] == ["a/imgs (imagefolder)", "b/imgs (imagefolder)"]
    accuracies = sorted(float(read_frame(out / f"part_c-{i}.csv")["test_acc_mean"].iloc[0]) for i in (1, 2))
    assert accuracies == [30.0, 90.0]


def test_runs_on_two_image_folders_of_one_name_are_never_paired(tmp_path, capsys):
    """Before: pretrained on /a/imgs minus from scratch on /b/imgs, paired by seed, as if one dataset."""
    records = {}
    for seed in (1, 2, 3):
        records[f"a-{seed}"] = folder_record("/data/a/imgs", "name=part_a", "model.pretrained=true", seed=seed,
                                             test_acc=0.9)
        records[f"b-{seed}"] = folder_record("/data/b/imgs", "name=part_a", "model.pretrained=false", seed=seed,
                                             test_acc=0.3)
    groups = groups_of(records)
    assert [(g.runs["dataset"].unique().tolist(), g.runs["pretrained"].unique().tolist(), g.contrasts)
            for g in groups] == [(["a/imgs (imagefolder)"], [True], []), (["b/imgs (imagefolder)"], [False], [])]
    out, _, _ = make_report(tmp_path, records, capsys)
    assert not list(out.glob("*-differences.csv"))


def test_the_shortest_end_of_a_path_that_differs_names_a_folder():
    from transferlab.report.reading import shortest_unique_ends

    assert shortest_unique_ends(["/x/a/imgs", "/y/a/imgs", "/x/b/imgs"]) == {
        "/x/a/imgs": "x/a/imgs", "/y/a/imgs": "y/a/imgs", "/x/b/imgs": "b/imgs"}
    assert shortest_unique_ends(["/imgs", "/a/imgs"]) == {"/imgs": "/imgs", "/a/imgs": "a/imgs"}


def _repeat_and_seed_records(*overrides: str, **fields) -> dict[str, dict]:
    """Two runs of one replicate (seed 43, subset seed 43): repeat=1, and seed=43 data.subset_seed=43."""
    repeat = hand_record(*overrides, seed=42, keys={"repeat": 1, "data.subset_seed": 42}, subset_seed=43,
                         test_acc=0.6, **fields)
    repeat["seed"] = 43
    seeded = hand_record(*overrides, seed=43, keys={"data.subset_seed": 43}, subset_seed=43, test_acc=0.2,
                         finished_at="2026-01-01T11:00:00+00:00", **fields)
    return {"repeat=1": repeat, "seed=43,data.subset_seed=43": seeded}


def test_synthetic_runs_of_another_data_subset_seed_saw_other_images_and_are_never_one_run(tmp_path, capsys):
    """Before: taken for one run (same seed and subset seed), the repeat=1 run left out."""
    out, markdown, err = make_report(tmp_path, _repeat_and_seed_records("data=synthetic"), capsys)
    assert "warning" not in err
    assert "synthetic (data.subset_seed=42)" in markdown and "synthetic (data.subset_seed=43)" in markdown
    accuracies = read_frame(out / "runs.csv").set_index("data")["test_acc_mean"].to_dict()
    assert accuracies == {"synthetic (data.subset_seed=42)": 60.0, "synthetic (data.subset_seed=43)": 20.0}


def test_on_cifar10_the_same_two_runs_are_one_run_the_data_and_subset_being_the_same(tmp_path, capsys):
    _, _, err = make_report(tmp_path, _repeat_and_seed_records(), capsys)
    assert "seed 43, subset seed 43) in 2 folders: kept" in err


def test_an_image_folder_that_holds_out_its_test_split_by_data_subset_seed_is_other_data_for_another_seed():
    records = _repeat_and_seed_records()
    for record in records.values():
        record.update(folder_record("/data/imgs", test="a stratified 0.2 of train/ (data.test_fraction)",
                                    subset_seed=43, seed=record["config"]["seed"],
                                    keys={"repeat": record["config"].get("repeat", 0),
                                          "data.subset_seed": record["config"]["data"]["subset_seed"]})
                      | {k: record[k] for k in ("seed", "test_acc", "finished_at")})
    [group] = groups_of(records)  # runs of no study: what varies, the data here, makes the arms
    assert [arm.values["data"] for arm in group.arms] == [
        "imgs (imagefolder, data.subset_seed=42)", "imgs (imagefolder, data.subset_seed=43)"]
    for record in records.values():  # with a val/ folder, data.subset_seed picks the training subset alone
        record["data_source"]["test"] = "val/"
    [group] = groups_of(records)
    assert len(group.runs) == 1


# --- arms differ wherever the model's implementation differs (issue 31) -----------------------------

# Issue 31's sources study from scratch and pretrained, five seeds each: torchvision's resnet18 from
# scratch at 49.9 %, timm's at 15.5 %, timm's a1_in1k checkpoint at 73.4 %.
TORCHVISION_SCRATCH = [0.48, 0.49, 0.50, 0.51, 0.515]
TIMM_SCRATCH = [0.14, 0.15, 0.155, 0.16, 0.17]
TIMM_PRETRAINED = [0.70, 0.72, 0.74, 0.75, 0.76]
FROM_SCRATCH = {"source": "scratch", "tag": None, "label": "from scratch", "new_head": True}


def _sources_from_scratch_records(tag: str = "a1_in1k") -> dict[str, dict]:
    records = {}
    for seed in range(1, 6):
        for folder, model, pretrained, pretraining, accuracies in (
                ("tv-scratch", "resnet18", "false", FROM_SCRATCH, TORCHVISION_SCRATCH),
                ("timm-scratch", f"timm/resnet18.{tag}", "false", FROM_SCRATCH, TIMM_SCRATCH),
                ("timm-a1", "timm/resnet18.a1_in1k", "true",
                 {"source": "timm", "tag": "a1_in1k", "label": "timm a1_in1k", "new_head": True}, TIMM_PRETRAINED)):
            records[f"sources/{folder}-{seed}"] = hand_record(
                "experiment=sources", f"model.name={model}", f"model.pretrained={pretrained}", "data.fraction=0.1",
                seed=seed, test_acc=accuracies[seed - 1], pretraining=pretraining)
    return records


def test_sources_from_scratch_of_two_implementations_are_two_arms_each_compared_with_its_own():
    """Before (issue 31): one from-scratch arm of 10 runs (32.70 ± 19.38, an interval over runs that
    are not replicates), and timm's checkpoint minus it +23.5, paired with torchvision's scratch runs."""
    [group] = groups_of(_sources_from_scratch_records())
    arms = {arm.values["init"]: arm for arm in group.arms}
    assert {label: (len(arm.runs), round(arm.accuracy().mean, 6)) for label, arm in arms.items()} == {
        "timm a1_in1k": (5, 73.4), "from scratch (timm)": (5, 15.5), "from scratch (torchvision)": (5, 49.9)}
    [gain] = group.contrasts
    assert (gain.label, gain.baseline is arms["from scratch (timm)"]) == ("timm a1_in1k − from scratch (timm)", True)
    differences = [100 * (a - b) for a, b in zip(TIMM_PRETRAINED, TIMM_SCRATCH)]
    low, high = t_interval(differences)
    assert (round(gain.result.mean, 6), round(gain.result.low, 6), round(gain.result.high, 6)) == (
        57.9, round(low, 6), round(high, 6))


def test_a_source_whose_implementation_has_no_scratch_arm_is_compared_with_the_one_there_is_named_as_such():
    records = {k: v for k, v in _sources_from_scratch_records().items() if "timm-scratch" not in k}
    [group] = groups_of(records)
    assert [(c.label, round(c.result.mean, 6)) for c in group.contrasts] == [
        ("timm a1_in1k − from scratch (torchvision)", 23.5)]


def test_two_timm_tags_from_scratch_are_one_run_counted_once(tmp_path, capsys):
    """Before: the same scratch run of two tags was two runs of one arm with the same seeds (n=10)."""
    records = _sources_from_scratch_records()
    records |= {k.replace("timm-scratch", "timm-scratch-swsl"): hand_record(
        "experiment=sources", "model.name=timm/resnet18.fb_swsl_ig1b_ft_in1k", "model.pretrained=false",
        "data.fraction=0.1", seed=v["seed"], test_acc=v["test_acc"], pretraining=FROM_SCRATCH,
        finished_at="2026-01-01T11:00:00+00:00") for k, v in records.items() if "timm-scratch" in k}
    out, _, err = make_report(tmp_path, records, capsys)
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert len(warnings) == 5 and all("in 2 folders: kept" in line and "timm-scratch-swsl" in line for line in warnings)
    assert sorted(read_frame(out / "sources.csv")["n"]) == [5, 5, 5]


def test_with_data_normalize_auto_two_timm_tags_from_scratch_are_two_arms_each_with_its_own_source():
    """There a timm tag gives the mean and std: the tags' runs from scratch are not one run."""
    records = _sources_from_scratch_records()
    records |= {k.replace("timm-scratch", "timm-scratch-swsl"): hand_record(
        "experiment=sources", "model.name=timm/resnet18.fb_swsl_ig1b_ft_in1k", "model.pretrained=false",
        "data.fraction=0.1", seed=v["seed"], test_acc=0.3, pretraining=FROM_SCRATCH)
        for k, v in records.items() if "timm-scratch" in k}
    for record in records.values():
        record["config"]["data"]["normalize"] = "auto"
    [group] = groups_of(records)
    assert sorted((arm.values["init"], len(arm.runs)) for arm in group.arms) == [
        ("from scratch (timm/resnet18.a1_in1k)", 5), ("from scratch (timm/resnet18.fb_swsl_ig1b_ft_in1k)", 5),
        ("from scratch (torchvision)", 5), ("timm a1_in1k", 5)]
    assert [(c.label, round(c.result.mean, 6)) for c in group.contrasts] == [
        ("timm a1_in1k − from scratch (timm/resnet18.a1_in1k)", 57.9)]


def test_runs_whose_labels_read_alike_but_whose_settings_differ_are_never_one_arm():
    """The guard under every label: an arm's runs share every setting of its facets, whatever its
    label says; two that read alike are told apart by the settings that differ."""
    from transferlab.report.arms import facets_of, make_arms
    from transferlab.report.reading import completed_frame

    records = {f"{model}-{seed}": hand_record("name=models", f"model.name={model}", seed=seed, test_acc=accuracy)
               for model, accuracy in (("resnet18", 0.8), ("vgg16", 0.4)) for seed in (1, 2)}
    runs = completed_frame([(Path(folder) / "run.json", record) for folder, record in records.items()])
    arms = make_arms(runs, facets_of(["model.name"]), labels={"model": lambda run: "one model"})
    assert [(arm.label, len(arm.runs), round(arm.accuracy().mean, 6)) for arm in arms] == [
        ("one model [model.name=resnet18]", 2, 80.0), ("one model [model.name=vgg16]", 2, 40.0)]


def test_a_folder_name_with_brackets_keeps_them_when_told_apart():
    from transferlab.report.reading import dataset_identity, dataset_names

    records = [folder_record(root) for root in ("/x/imgs (v2)", "/y/imgs (v2)")]
    names = dataset_names(records)
    assert [names[dataset_identity(r)] for r in records] == ["x/imgs (v2) (imagefolder)", "y/imgs (v2) (imagefolder)"]
