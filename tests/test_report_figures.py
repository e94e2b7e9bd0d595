"""Figures a reader can read (issue 31): many arms as small multiples, fraction ticks apart, and a
Part A study that mixes fractions and per-class amounts keeps its figures and its order."""

from __future__ import annotations

from report_records import groups_of, hand_record, make_report, read_frame

from transferlab.report.arms import amount_label
from transferlab.report.figures import MAX_CURVES, curve_figure, data_figure


def _fraction_records(fractions=(0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)) -> dict[str, dict]:
    records = {}
    for fraction in fractions:
        for pretrained in ("true", "false"):
            for seed in (1, 2):
                records[f"{fraction}-{pretrained}-{seed}"] = hand_record(
                    "experiment=part_a", f"data.fraction={fraction}", f"model.pretrained={pretrained}", seed=seed,
                    test_acc=0.3 + fraction / 2 + (0.1 if pretrained == "true" else 0.0))
    return records


def _lines(ax) -> list[str]:
    return [line.get_label() for line in ax.get_lines() if not line.get_label().startswith("_")]


def test_twelve_arms_are_small_multiples_of_a_few_curves_each():
    [group] = groups_of(_fraction_records((0.01, 0.02, 0.05, 0.1, 0.2, 0.5)))
    assert len(group.arms) == 12
    fig = curve_figure(group, "test_acc")
    panels = [ax for ax in fig.axes if ax.get_lines()]
    assert len(panels) == 6 and all(_lines(ax) == ["pretrained", "from scratch"] for ax in panels)
    assert [ax.get_title() for ax in panels] == ["1 %", "2 %", "5 %", "10 %", "20 %", "50 %"]
    few = groups_of(_fraction_records((0.1, 0.5)))[0]
    assert len(curve_figure(few, "test_acc").axes[0].get_lines()) == 4 <= MAX_CURVES  # one plot as before


def test_fraction_tick_labels_never_overlap():
    [group] = groups_of(_fraction_records())
    fig = data_figure(group, "test_acc", per_class_axis=False)
    ax = fig.axes[0]
    renderer = fig.canvas.get_renderer()
    boxes = sorted((label.get_window_extent(renderer) for label in ax.get_xticklabels() if label.get_text()),
                   key=lambda box: box.x0)
    assert len(boxes) == 7 and all(left.x1 <= right.x0 for left, right in zip(boxes, boxes[1:]))


def _mixed_records() -> dict[str, dict]:
    records = {}
    for seed in (1, 2):
        for pretrained in ("true", "false"):
            gain = 0.2 if pretrained == "true" else 0.0
            for fraction in (0.1, 0.5):
                records[f"f{fraction}-{pretrained}-{seed}"] = hand_record(
                    "experiment=part_a", f"data.fraction={fraction}", f"model.pretrained={pretrained}", seed=seed,
                    test_acc=0.4 + gain + fraction / 4)
            for k in (5, 50):
                record = hand_record("experiment=part_a", f"model.pretrained={pretrained}", seed=seed,
                                     test_acc=0.2 + gain + k / 1000, keys={"data.per_class": k}, per_class=k,
                                     fraction=None, num_train_images=10 * k,
                                     train_images_per_class={f"class {i}": k for i in range(10)})
                record["config"]["data"]["fraction"] = None
                records[f"k{k}-{pretrained}-{seed}"] = record
    return records


def test_a_part_a_of_fractions_and_per_class_amounts_keeps_its_figures_and_its_order(tmp_path, capsys):
    [group] = groups_of(_mixed_records())
    amounts = list(dict.fromkeys(arm.values["data amount"] for arm in group.arms))
    assert amounts == ["5 per class", "50 per class", "10 %", "50 %"]  # fewest images per class first
    fig = data_figure(group, "test_acc", per_class_axis=False)  # the arms by fraction alone
    assert [tick.get_text().split("\n")[0] for tick in fig.axes[0].get_xticklabels()] == ["10 %", "50 %"]
    out, text, _ = make_report(tmp_path, _mixed_records(), capsys)
    for figure in ("part_a-test_acc-vs_fraction.png", "part_a-test_loss-vs_fraction.png",
                   "part_a-test_acc-vs_per_class.png"):
        assert f"]({figure})" in text and (out / figure).is_file()
    arms = read_frame(out / "part_a.csv")
    assert list(arms["per_class"].fillna(0))[:4] == [5, 5, 50, 50]
    assert amount_label(group.arms[-1].runs.iloc[0]) == "50 %"
