"""What the report's arm tables say about how each arm trained (issue 31): a cached probe's
feature-extraction time beside its training time."""

from __future__ import annotations

from report_records import hand_record, make_report, read_frame


def _probe_records() -> dict[str, dict]:
    records = {}
    for seed in (1, 2):
        records[f"probe-{seed}"] = hand_record("freeze=last_only", "freeze.cached_features=true", seed=seed,
                                               test_acc=0.6, feature_seconds=40.0 + seed, feature_cache_built=True,
                                               probe="cached features, BN in evaluation mode, no augmentation")
        records[f"full-{seed}"] = hand_record("freeze=none", seed=seed, test_acc=0.7)
    return records


def test_a_cached_probes_feature_seconds_stand_beside_its_training_time(tmp_path, capsys):
    out, text, _ = make_report(tmp_path, _probe_records(), capsys)
    [header] = [line for line in text.splitlines() if line.startswith("| freeze") and "seconds per epoch" in line]
    columns = [c.strip() for c in header.strip("|").split("|")]
    assert columns[columns.index("seconds per epoch") + 1] == "feature seconds"
    assert "41.50 ± 0.71 (extracted)" in text
    [csv] = [path for path in out.glob("*.csv") if "feature_seconds_mean" in path.read_text()]
    assert sorted(read_frame(csv)["feature_seconds_mean"].dropna()) == [41.5]


def test_how_adapted_calls_a_linear_probe_so_and_lora_rows_say_what_they_freeze(tmp_path, capsys):
    arms = {"full": ("adapt=none", "freeze=none", {"name": "none"}, 11_181_642, 0.8),
            "probe": ("adapt=none", "freeze=last_only", {"name": "none"}, 5_130, 0.6),
            "lora": ("adapt=lora", "freeze=none", {"name": "lora", "rank": 8}, 300_000, 0.78)}
    records = {}
    for name, (adapter, freeze, adapt, trainable, accuracy) in arms.items():
        for seed in (1, 2):
            record = hand_record("name=adapters", adapter, freeze, seed=seed, test_acc=accuracy + seed / 100,
                                 params_trainable=trainable)
            record["adapt"] = adapt
            records[f"{name}-{seed}"] = record
    out, text, _ = make_report(tmp_path, records, capsys)
    rows = {line.split("|")[2].strip(): line for line in text.splitlines() if line.startswith("| ")}
    assert {"full fine-tuning", "linear probe", "LoRA r=8"} <= rows.keys()
    assert "| all but the LoRA adapters and the head |" in rows["LoRA r=8"]
    assert "| conv1, bn1, layer1, layer2, layer3, layer4 |" in rows["linear probe"]
    assert "| nothing |" in rows["full fine-tuning"]
