"""The report on pretraining sources (experiment=sources) and on how models adapted (adapt=...),
from hand-written records (issue 17, items 1 and 3)."""

from __future__ import annotations

from report_records import groups_of, hand_record, make_report, read_frame

SOURCES = {  # source config -> (record's pretraining label, accuracy at seeds 1 and 2)
    "torchvision": ("torchvision IMAGENET1K_V1", [0.80, 0.82]),
    "timm_a1": ("timm a1_in1k", [0.84, 0.85]),
    "timm_swsl": ("timm fb_swsl_ig1b_ft_in1k", [0.86, 0.88]),
    "scratch": ("from scratch", [0.40, 0.42]),
}


def _sources_records() -> dict[str, dict]:
    records = {}
    for source, (label, accuracies) in SOURCES.items():
        for seed, accuracy in enumerate(accuracies, start=1):
            record = hand_record("experiment=sources", f"source={source}", "data.fraction=0.1", seed=seed,
                                 test_acc=accuracy)
            record["pretraining"] = {"source": label.split()[0], "label": label, "tag": None, "new_head": True}
            records[f"sources/{source}-{seed}"] = record
    return records


def test_sources_are_one_group_labelled_by_their_pretraining_source_each_against_scratch():
    [group] = groups_of(_sources_records())
    assert group.part.label == "Pretraining sources"
    assert {arm.values["model"] for arm in group.arms} == {"resnet50"}  # one architecture, four sources
    # from scratch names the implementation it starts from (issue 31): torchvision's resnet50 here
    assert sorted(arm.values["init"] for arm in group.arms) == sorted(
        label.replace("from scratch", "from scratch (torchvision)") for label, _ in SOURCES.values())
    differences = {c.label: c.result.mean for c in group.contrasts}
    assert differences.keys() == {f"{label} − from scratch (torchvision)" for label, _ in list(SOURCES.values())[:3]}
    assert round(differences["timm fb_swsl_ig1b_ft_in1k − from scratch (torchvision)"], 6) == 46.0  # points, by seed


def test_the_sources_report_names_each_source(tmp_path, capsys):
    out, text, _ = make_report(tmp_path, _sources_records(), capsys)
    assert "## Pretraining sources — cifar10" in text and "| resnet50 | timm a1_in1k |" in text
    differences = read_frame(out / "sources-differences.csv")
    assert list(differences["arm"]) == ["torchvision IMAGENET1K_V1", "timm a1_in1k", "timm fb_swsl_ig1b_ft_in1k"]
    assert set(differences["baseline"]) == {"from scratch (torchvision)"}


def test_an_older_record_without_pretraining_is_labelled_from_its_init():
    from transferlab.report.reading import pretraining_label

    assert pretraining_label({"init": "IMAGENET1K_V1"}) == "torchvision IMAGENET1K_V1"
    assert pretraining_label({"init": "random"}) == "from scratch"
    assert pretraining_label({"init": "file:a.pt"}) == "file:a.pt"
    assert pretraining_label({}) is None


def test_how_adapted_tables_give_trainable_parameters_accuracy_and_the_difference_to_full_fine_tuning(tmp_path,
                                                                                                      capsys):
    arms = {"none": ({"name": "none"}, 11_181_642, [0.80, 0.81]),
            "lora": ({"name": "lora", "rank": 8}, 300_000, [0.78, 0.80]),
            "bitfit": ({"name": "bitfit"}, 20_000, [0.70, 0.72])}
    records = {}
    for adapter, (adapt, trainable, accuracies) in arms.items():
        for seed, accuracy in enumerate(accuracies, start=1):
            record = hand_record("name=adapters", f"adapt={adapter}", seed=seed, test_acc=accuracy,
                                 params_trainable=trainable)
            record["adapt"] = adapt
            records[f"adapters/{adapter}-{seed}"] = record
    [group] = groups_of(records)
    assert [arm.values["how adapted"] for arm in group.arms] == ["full fine-tuning", "LoRA r=8", "BitFit"]
    assert {c.label: round(c.result.mean, 6) for c in group.contrasts} == {
        "LoRA r=8 − full fine-tuning": -1.5, "BitFit − full fine-tuning": -9.5}
    out, text, _ = make_report(tmp_path, records, capsys)
    assert "how adapted" in text and "300,000 / 11,181,642" in text and "resnet18, pretrained, cifar10" in text
    assert list(read_frame(out / "adapters.csv")["params_trainable"]) == [11_181_642, 300_000, 20_000]
    differences = read_frame(out / "adapters-differences.csv")
    assert list(differences["baseline"]) == ["full fine-tuning"] * 2 and list(differences["difference_mean"]) == [
        -1.5, -9.5]


def test_a_weights_file_is_named_in_the_report_by_its_label_not_its_path(tmp_path, capsys):
    """A local checkpoint's arm is ``weights letters`` (model.weights_name, as run.json's label keeps
    it); a record from before the label names it by its path, shortened: no figure grows with a path."""
    long_path = "/data/" + "deep-folder/" * 20 + "model.pt"
    records = {}
    for seed, accuracy in ((1, 0.7), (2, 0.72)):
        named = hand_record("data.fraction=0.1", f"model.weights={long_path}", seed=seed, test_acc=accuracy,
                            keys={"model.weights_name": "letters"})
        named["pretraining"] = {"source": "file", "tag": None, "label": "letters", "new_head": True}
        records[f"named-{seed}"] = named
        records[f"scratch-{seed}"] = hand_record("data.fraction=0.1", "model.pretrained=false", seed=seed,
                                                 test_acc=accuracy - 0.2)
    [group] = groups_of(records)
    assert sorted(arm.values["init"] for arm in group.arms) == ["from scratch", "weights letters"]
    _, text, _ = make_report(tmp_path, records, capsys)
    assert "weights letters" in text and "deep-folder/deep" not in text
    older = {k: {**r, "pretraining": None} if k.startswith("named") else r for k, r in records.items()}
    [group] = groups_of(older)
    [label] = [arm.values["init"] for arm in group.arms if arm.values["init"] != "from scratch"]
    assert label.startswith("weights /data/deep") and label.endswith("/model.pt") and len(label) <= 48
    from PIL import Image

    out, _, _ = make_report(tmp_path / "older", older, capsys)
    widths = {png.name: Image.open(png).size[0] for png in out.glob("*.png")}
    assert widths and max(widths.values()) < 1400, widths  # no figure grows with the path
