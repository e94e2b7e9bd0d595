"""What the figures show beside the means: n, each run (or pair) as a dot, a band or why there is
none, the chance level, and the comparisons that had no pairs.
Figures a reader can read: many arms as small multiples, fraction ticks apart, and a
Part A study that mixes fractions and per-class amounts keeps its figures and its order."""

from __future__ import annotations

import numpy as np
import pytest

from report_records import groups_of, hand_record, make_report, read_frame

from transferlab.report.arms import amount_label
from transferlab.report.figures import MAX_CURVES, curve_figure, data_figure


def freezes(preset: str, seed: int, test_acc: float, *overrides: str) -> dict:
    return hand_record("name=freezes", f"freeze={preset}", *overrides, seed=seed, test_acc=test_acc)  # no reference


def dots(ax) -> list[tuple[float, float]]:
    """The points of every scatter on the axes."""
    from matplotlib.collections import PathCollection

    return [tuple(p) for collection in ax.collections if isinstance(collection, PathCollection)
            for p in np.asarray(collection.get_offsets())]


def test_bars_and_curves_show_n_each_run_and_the_chance_level():
    from transferlab.report.figures import bar_figure, curve_figure

    accuracies = {"none": [0.80, 0.84, 0.82], "early": [0.70, 0.75, 0.71]}
    [group] = groups_of({f"{p}-{s}": freezes(p, s, a) for p, values in accuracies.items()
                         for s, a in enumerate(values, start=1)})
    ax = bar_figure(group, "test_acc").axes[0]
    shown = sorted(y for _, y in dots(ax))
    assert shown == pytest.approx(sorted(100 * a for values in accuracies.values() for a in values))
    assert [line.get_ydata()[0] for line in ax.get_lines() if line.get_linestyle() == ":"] == [10.0]  # 10 classes
    assert "chance (10 %)" in [t.get_text() for t in ax.texts]
    assert "dots: single runs" in ax.get_title()
    curve = curve_figure(group, "test_acc").axes[0]
    assert "n=3 runs per arm" in curve.get_title() and "bands: 95 % interval of the mean" in curve.get_title()
    epochs = len(group.runs.iloc[0]["history"])
    assert len(dots(curve)) == 6 * epochs  # every run at every epoch


def test_one_epoch_repeats_get_error_bars_and_single_runs_say_why_there_is_no_band():
    from transferlab.report.figures import curve_figure

    [repeated] = groups_of({f"{p}-{s}": freezes(p, s, a, "train.epochs=1")
                            for p, a0 in (("none", 0.8), ("early", 0.7)) for s, a in ((1, a0), (2, a0 + 0.03))})
    ax = curve_figure(repeated, "test_acc").axes[0]
    assert len(ax.containers) == 2  # an error bar per arm: a band of one epoch would not show
    assert "error bars: 95 % interval of the mean" in ax.get_title().replace("\n", " ")
    [single] = groups_of({p: freezes(p, 1, a) for p, a in (("none", 0.8), ("early", 0.7))})
    title = curve_figure(single, "test_acc").axes[0].get_title().replace("\n", " ")
    assert "n=1 run per arm" in title and "no bands: one run per arm gives no interval" in title


def test_the_gain_and_difference_figures_give_n_the_pairs_and_name_comparisons_without_pairs():
    from transferlab.report.figures import differences_figure, gain_figure

    def part_a(fraction, pretrained, seed, acc):
        return hand_record("name=part_a", "model=alexnet", f"data.fraction={fraction}",
                           f"model.pretrained={str(pretrained).lower()}", seed=seed, test_acc=acc)

    records = {f"{f}-{p}-{s}": part_a(f, p, s, (0.8 if p else 0.4) + 0.01 * s * (1 if p else 2))
               for f in (0.1, 0.5) for p in (True, False) for s in (1, 2, 3)}
    records |= {"0.2-True-1": part_a(0.2, True, 1, 0.7), "0.2-False-9": part_a(0.2, False, 9, 0.5)}  # no pair
    [group] = groups_of(records)
    figure = gain_figure(group)
    ax = figure.axes[0]
    assert sorted(t.get_text() for t in ax.texts) == ["n=3", "n=3"]
    pairs = sorted(y for _, y in dots(ax))
    assert pairs == pytest.approx(sorted([100 * (0.4 - 0.01 * s) for s in (1, 2, 3)] * 2))
    note = " ".join(t.get_text() for t in figure.texts).replace("\n", " ")
    assert "Not drawn, no replicate on both sides: pretrained − from scratch (20 %)" in note
    differences = differences_figure(group)
    assert "Not drawn, no replicate on both sides: pretrained − from scratch (20 %)" in " ".join(
        t.get_text() for t in differences.texts).replace("\n", " ")



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
    assert len(_lines(curve_figure(few, "test_acc").axes[0])) == 4 <= MAX_CURVES  # one plot as before (chance unlabelled)


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


@pytest.mark.slow  # a report with figures of several arms (about 2 s): the fast tier stays under 3 min
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
