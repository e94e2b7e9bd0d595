"""What the figures show beside the means: n, each run (or pair) as a dot, a band or why there is
none, the chance level, and the comparisons that had no pairs."""

import numpy as np
import pytest

from report_records import groups_of, hand_record


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
