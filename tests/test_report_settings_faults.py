"""Four faults of the report's settings found in review (docs/faults.md): a weights file is its
content, inert settings are no settings, model.new_head is part of the init, and a probe on cached
features has no small-last-batch note."""

from report_records import groups_of, hand_record, make_report, read_frame

LETTERS_A, LETTERS_B = "a" * 64, "b" * 64  # two weights files' SHA-256


def weights_record(path: str, digest: str, seed: int, **fields) -> dict:
    record = hand_record("data.fraction=0.1", f"model.weights={path}", seed=seed, test_acc=0.7 + 0.01 * seed,
                         keys={"model.weights_name": "letters"}, **fields)
    record["pretraining"] = {"source": "file", "tag": None, "label": "letters", "new_head": True,
                             "weights_sha256": digest}
    return record


def test_two_weights_files_of_one_name_are_told_apart_by_content_with_a_short_label(tmp_path, capsys):
    long_a, long_b = "/data/" + "deep/" * 12 + "a/model.pt", "/data/" + "deep/" * 12 + "b/model.pt"
    records = {f"a-{seed}": weights_record(long_a, LETTERS_A, seed) for seed in (1, 2)}
    records |= {f"b-{seed}": weights_record(long_b, LETTERS_B, seed) for seed in (1, 2)}
    [group] = groups_of(records)
    assert sorted(arm.values["init"] for arm in group.arms) == [
        "weights letters [model.weights=sha256:aaaaaaaaaaaa]", "weights letters [model.weights=sha256:bbbbbbbbbbbb]"]
    _, text, _ = make_report(tmp_path, records, capsys)
    assert "deep/deep" not in text  # the label never carries the path


def test_one_weights_file_at_two_paths_is_one_arm(tmp_path, capsys):
    records = {"here-1": weights_record("/data/here/model.pt", LETTERS_A, 1),
               "copy-2": weights_record("/scratch/copy/model.pt", LETTERS_A, 2)}
    [group] = groups_of(records)
    [arm] = group.arms
    assert arm.values == {} and len(arm.runs) == 2


def test_a_setting_that_does_nothing_in_a_run_splits_no_arm(tmp_path, capsys):
    """adapt.rank with adapt=none (identity.inert_settings) is no setting: the two runs are one arm of n=2."""
    records = {f"run-{seed}": hand_record("name=ranks", seed=seed, test_acc=0.6 + 0.01 * seed,
                                          keys={"adapt.rank": rank})
               for seed, rank in ((1, 4), (2, 8))}
    [group] = groups_of(records)
    assert len(group.arms) == 1 and len(group.arms[0].runs) == 2
    out, text, _ = make_report(tmp_path, records, capsys)
    assert "rank=" not in text and list(read_frame(out / "ranks.csv")["n"]) == [2]


def test_a_lora_rank_still_tells_lora_runs_apart():
    records = {f"run-{rank}": hand_record("name=ranks", "adapt=lora", f"adapt.rank={rank}", seed=1)
               for rank in (4, 8)}
    [group] = groups_of(records)
    assert len(group.arms) == 2


def test_model_new_head_is_part_of_the_init(tmp_path, capsys):
    """Part A's local weights with and without model.new_head=true: two arms of the init, in its words,
    in one group (not two groups by an unswept key)."""
    records = {}
    for new_head in (False, True):
        for seed in (1, 2):
            record = weights_record("/data/model.pt", LETTERS_A, seed, **{"name": "part_a"})
            record["config"]["name"] = "part_a"
            record["config"]["model"]["new_head"] = new_head
            records[f"{new_head}-{seed}"] = record
    [group] = groups_of(records)
    assert [f.name for f in group.facets] == ["init"]
    assert sorted(arm.values["init"] for arm in group.arms) == ["weights letters", "weights letters, new head"]


def probe_record(seed: int, cached: bool, probe: str = "lbfgs", unfreeze_at=None) -> dict:
    """A linear probe on 1,030 images in batches of 64: a last batch of 6."""
    return hand_record("name=probe", "freeze=last_only", seed=seed, num_train_images=1030,
                       keys={"freeze.cached_features": cached, "freeze.probe": probe,
                             "freeze.unfreeze_at_epoch": unfreeze_at})


def test_a_probe_on_cached_features_gets_no_small_last_batch_note():
    for probe in ("lbfgs", "optimizer"):
        [group] = groups_of({f"cached-{seed}": probe_record(seed, True, probe) for seed in (1, 2)})
        assert "small last batch" not in group.note
    [group] = groups_of({f"loop-{seed}": probe_record(seed, False, "optimizer") for seed in (1, 2)})
    assert "**A small last batch**" in group.note and "the last of 6" in group.note
