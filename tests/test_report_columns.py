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
