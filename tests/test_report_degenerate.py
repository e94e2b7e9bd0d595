"""The report names the points that say little: an arm at chance, an arm whose last training batch was
a handful of images (issue 31)."""

from __future__ import annotations

from report_records import groups_of, hand_record, make_report


def _fraction_records(last_batch_size: int | None = 6) -> dict[str, dict]:
    """A from-scratch fraction sweep: at 0.05 (70 images in batches of 64) every run at chance (10 %)."""
    records = {}
    for seed in (1, 2):
        for fraction, images, accuracy in ((0.05, 70, 0.1 + 0.001 * seed), (0.5, 700, 0.55 + 0.01 * seed)):
            extra = {"last_batch_size": last_batch_size if fraction == 0.05 else 60} if last_batch_size else {}
            records[f"f{fraction}-{seed}"] = hand_record(
                f"data.fraction={fraction}", "model.pretrained=false",
                "train.batch_size=64", seed=seed, test_acc=accuracy, num_train_images=images,
                num_test_images=1000, **extra)
    return records


def test_an_arm_at_chance_and_an_arm_with_a_tiny_last_batch_are_named(tmp_path, capsys):
    [group] = groups_of(_fraction_records())
    assert "**At chance**: 5 % (10.2 %, chance 10.0 %)" in group.note
    assert "**A small last batch**: 5 % (70 training images in batches of 64: the last of 6)" in group.note
    assert "50 %" not in group.note
    _, text, _ = make_report(tmp_path, _fraction_records(), capsys)
    assert "**At chance**: 5 %" in text and "the last of 6" in text


def test_a_record_from_before_last_batch_size_gets_it_from_its_training_images():
    [group] = groups_of(_fraction_records(last_batch_size=None))
    assert "5 % (70 training images in batches of 64: the last of 6)" in group.note


def test_an_arm_above_chance_or_with_a_full_last_batch_is_not_named():
    records = {name: {**record, "test_acc": record["test_acc"] + 0.2, "last_batch_size": 64}
               for name, record in _fraction_records().items()}
    [group] = groups_of(records)
    assert "At chance" not in group.note and "small last batch" not in group.note
