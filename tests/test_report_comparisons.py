"""How sure: hand-written records with known differences, and what `transferlab report` makes of them:
paired differences with their intervals checked against scipy computed here, replicates (seed,
subset seed, repeat) in one row, headings read from the runs, tidy CSVs of numbers, legends that name
only what varies in a meaningful order, and subsets drawn two ways never paired."""

import math
import re

import numpy as np
import pandas as pd
import pytest

from transferlab import report

from scipy import stats as scipy_stats

from report_records import groups_of, hand_record, make_report, read_frame, t_interval, write_record

ARM_COLUMNS = ["test_acc_mean", "test_acc_std", "test_acc_ci95_low", "test_acc_ci95_high", "n"]
DIFFERENCE_COLUMNS = ["compared", "arm", "baseline", "n", "difference_mean", "ci95_low", "ci95_high",
                      "excludes_zero", "t_p", "sign_p", "holm_t_p"]


def part_a(fraction: float, pretrained: bool, seed: int, test_acc: float, **kw) -> dict:
    return hand_record("name=part_a", "model=alexnet", f"data.fraction={fraction}",
                       f"model.pretrained={str(pretrained).lower()}", seed=seed, test_acc=test_acc, **kw)


# Part A at 10 %: three seeds; at 50 %: six seeds and one lone pair at 20 %.
PRETRAINED = {0.1: [0.80, 0.82, 0.85], 0.2: [0.86], 0.5: [0.90, 0.91, 0.89, 0.92, 0.90, 0.93]}
SCRATCH = {0.1: [0.40, 0.45, 0.41], 0.2: [0.50], 0.5: [0.52, 0.50, 0.55, 0.51, 0.49, 0.53]}


@pytest.fixture(scope="module")
def part_a_report(tmp_path_factory):
    """(out, report.md, None): the report of Part A's records, made once for the tests that only read it."""
    root = tmp_path_factory.mktemp("part_a_report")
    for fraction in PRETRAINED:
        for pretrained, accuracies in ((True, PRETRAINED[fraction]), (False, SCRATCH[fraction])):
            for seed, accuracy in enumerate(accuracies, start=1):
                write_record(root / "runs" / f"part_a/{fraction}-{pretrained}-{seed}",
                             part_a(fraction, pretrained, seed, accuracy))
    assert report.main([str(root / "runs"), "--out", str(root / "out")]) == 0
    return root / "out", (root / "out" / "report.md").read_text(), None


def test_pretrained_minus_scratch_is_paired_by_seed_with_scipys_intervals(part_a_report):
    out, markdown, _ = part_a_report
    differences = read_frame(out / "part_a-differences.csv")
    assert list(differences.columns)[:1] == ["fraction"] and list(differences.columns)[2:13] == DIFFERENCE_COLUMNS
    assert list(differences["fraction"]) == [0.1, 0.2, 0.5]
    assert set(differences["arm"]) == {"pretrained"} and set(differences["baseline"]) == {"from scratch"}
    rows = differences.set_index("fraction")
    for fraction in (0.1, 0.5):
        paired = [100 * (p - s) for p, s in zip(PRETRAINED[fraction], SCRATCH[fraction])]
        row = rows.loc[fraction]
        assert row["n"] == len(paired)
        assert row["difference_mean"] == pytest.approx(np.mean(paired))
        assert (row["ci95_low"], row["ci95_high"]) == pytest.approx(t_interval(paired))
        assert bool(row["excludes_zero"]) is True
    # The p-values, scipy's here: the paired t test, the exact sign test, and Holm's over the section's two tests.
    t_p = {f: scipy_stats.ttest_rel(PRETRAINED[f], SCRATCH[f]).pvalue for f in (0.1, 0.5)}
    for fraction in (0.1, 0.5):
        assert rows.loc[fraction, "t_p"] == pytest.approx(t_p[fraction])
        assert rows.loc[fraction, "sign_p"] == pytest.approx(scipy_stats.binomtest(len(PRETRAINED[fraction]),
                                                                                 len(PRETRAINED[fraction])).pvalue)
    smaller, larger = sorted(t_p.values())
    holm = {p: min(1.0, 2 * smaller) if p == smaller else max(min(1.0, 2 * smaller), larger) for p in t_p.values()}
    assert [rows.loc[f, "holm_t_p"] for f in (0.1, 0.5)] == pytest.approx([holm[t_p[f]] for f in (0.1, 0.5)])
    assert math.isnan(rows.loc[0.2, "t_p"]) and math.isnan(rows.loc[0.2, "holm_t_p"])  # one pair: no test
    # One pair: the difference, and no interval that the data cannot support.
    assert rows.loc[0.2, "n"] == 1 and rows.loc[0.2, "difference_mean"] == pytest.approx(36.0)
    assert math.isnan(rows.loc[0.2, "ci95_low"]) and math.isnan(rows.loc[0.2, "ci95_high"])
    low, high = t_interval([100 * (p - s) for p, s in zip(PRETRAINED[0.1], SCRATCH[0.1])])
    three = np.mean([40.0, 37.0, 44.0])
    assert (f"| 10 % | pretrained − from scratch | 3 | +{three:.2f} | [{low:.2f}, {high:.2f}] | yes | "
            f"{t_p[0.1]:.3f} | 0.250 | {holm[t_p[0.1]]:.3f} |") in markdown
    assert "| n | difference (points) | 95 % CI | t CI excludes 0 | p (paired t) | p (sign test) |" in markdown
    assert "| 20 % | pretrained − from scratch | 1 | +36.00 | n=1: no interval |" in markdown


def test_arm_tables_give_mean_std_interval_and_n_as_numbers(part_a_report):
    out, markdown, _ = part_a_report
    arms = read_frame(out / "part_a.csv")
    assert list(arms.columns)[:7] == ["fraction", "pretrained", *ARM_COLUMNS]
    for column in ("fraction", *ARM_COLUMNS[:4], "test_loss_mean"):
        assert arms[column].dtype == np.float64, column
    assert arms["n"].dtype == np.int64 and arms["pretrained"].dtype == bool
    assert [(f, p) for f, p in zip(arms["fraction"], arms["pretrained"])] == [
        (0.1, True), (0.1, False), (0.2, True), (0.2, False), (0.5, True), (0.5, False)]
    row = arms.iloc[0]
    accuracies = [100 * a for a in PRETRAINED[0.1]]
    assert row["test_acc_mean"] == pytest.approx(np.mean(accuracies))
    assert row["test_acc_std"] == pytest.approx(np.std(accuracies, ddof=1))
    assert (row["test_acc_ci95_low"], row["test_acc_ci95_high"]) == pytest.approx(t_interval(accuracies))
    assert row["n"] == 3
    lone = arms.iloc[2]
    assert lone["n"] == 1 and math.isnan(lone["test_acc_std"]) and math.isnan(lone["test_acc_ci95_low"])
    low, high = t_interval(accuracies)
    assert (f"| 10 % | pretrained | 5,000 | ≈500 | {np.mean(accuracies):.2f} ± {np.std(accuracies, ddof=1):.2f} | "
            f"[{low:.2f}, {high:.2f}] | 3 |") in markdown  # records without per-class counts: the mean, marked ≈
    assert "| 20 % | pretrained | 10,000 | ≈1,000 | 86.00 | n=1: no interval | 1 |" in markdown
    # Every table says what its replicates vary.
    assert "Replicates: 1–6 runs per arm, differing in the seed (1–6) on one training subset " \
           "(subset seed 42)." in markdown


def test_the_headline_figure_is_the_gain_with_its_interval_on_a_log_axis(part_a_report, tmp_path):
    from transferlab.report.figures import gain_figure

    out, markdown, _ = part_a_report
    assert "![Part A: pretraining gain in test accuracy (paired difference) vs training images per class]" \
           "(part_a-test_acc-gain.png)" in markdown
    records = {}
    for fraction in PRETRAINED:
        for pretrained, accuracies in ((True, PRETRAINED[fraction]), (False, SCRATCH[fraction])):
            for seed, accuracy in enumerate(accuracies, start=1):
                records[f"{fraction}-{pretrained}-{seed}"] = part_a(fraction, pretrained, seed, accuracy)
    [group] = groups_of(records)
    ax = gain_figure(group).axes[0]
    assert ax.get_xscale() == "log" and list(ax.get_xticks()) == [500, 1000, 2500]
    [gain] = [c for c in ax.containers if c.get_label() == "pretrained − from scratch"]
    line, _, (bars,) = gain.lines
    expected = [np.mean([100 * (p - s) for p, s in zip(PRETRAINED[f], SCRATCH[f])]) for f in (0.1, 0.2, 0.5)]
    assert list(line.get_xdata()) == [500, 1000, 2500] and list(line.get_ydata()) == pytest.approx(expected)
    segments = {s[0][0]: (s[0][1], s[1][1]) for s in bars.get_segments() if len(s) == 2 and np.isfinite(s).all()}
    assert segments[500] == pytest.approx(t_interval([40.0, 37.0, 44.0]))
    assert 1000 not in segments  # one pair at 20 %: a point without an interval
    assert "hollow: n=1: no interval" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_headings_and_titles_are_read_from_the_runs_not_from_the_study(tmp_path, capsys):
    """Part C from scratch at 30 % of the data: nothing may say pretrained or 50 %."""
    from transferlab.report.figures import bar_figure, curve_figure

    records = {f"part_c/{preset}": hand_record("name=part_c", f"freeze={preset}", "model.pretrained=false",
                                               "data.fraction=0.3", "optim.lr=0.01", "train.epochs=4",
                                               "data.image_size=64")
               for preset in ("none", "early", "middle", "last_only")}
    out, markdown, _ = make_report(tmp_path, records, capsys)
    [heading] = re.findall(r"^## (Part C.*)$", markdown, flags=re.MULTILINE)
    assert heading == ("Part C — resnet18, from scratch, cifar10, 30 % of the training set (15,000 images, "
                       "stratified by class), sgd lr=0.01, 4 epochs, 64 px")
    section = markdown.split(heading)[1]
    assert "pretrained" not in section.lower().replace("pretrained=false", "") and "50 %" not in section
    assert ("Paired differences (the same seed and subset on both sides): early, middle, last_only against none; "
            "middle, last_only against early; last_only against middle.") in section
    [group] = groups_of(records)
    for figure in (curve_figure(group, "test_acc"), bar_figure(group, "test_acc")):
        title = figure.axes[0].get_title().replace("\n", " ")
        assert "from scratch" in title and "30 % of the training set" in title and "Pretrained" not in title
    # Pretrained from what: the weights run.json names.
    [pretrained] = groups_of({"a": hand_record("name=part_b", init="IMAGENET1K_V1")})
    assert pretrained.title.startswith("Part B — resnet18, pretrained (IMAGENET1K_V1), cifar10, 50 % of the")


def test_seed_and_subset_seed_replicates_are_one_row(tmp_path, capsys):
    """data.subset_seed=1,2 x seed=1,2 at two learning rates: two rows of four replicates each, and
    the difference paired on (seed, subset seed)."""
    accuracy = {(lr, seed, subset): 0.5 + (0.1 if lr == 0.01 else 0.0) + 0.01 * seed + 0.02 * subset
                for lr in (0.001, 0.01) for seed in (1, 2) for subset in (1, 2)}
    accuracy[(0.01, 2, 2)] += 0.03  # so that the paired differences are not all equal
    out, markdown, _ = make_report(tmp_path, {
        f"sweep/{lr}-{seed}-{subset}": hand_record("name=sweep", f"optim.lr={lr}", f"data.subset_seed={subset}",
                                                   seed=seed, test_acc=value)
        for (lr, seed, subset), value in accuracy.items()}, capsys)
    arms = read_frame(out / "sweep.csv")
    assert list(arms.columns)[:6] == ["lr", *ARM_COLUMNS]
    assert list(arms["lr"]) == [0.001, 0.01] and list(arms["n"]) == [4, 4]
    assert list(arms["replicates_vary"]) == ["seed and subset", "seed and subset"]
    [row] = read_frame(out / "sweep-differences.csv").itertuples()
    paired = [100 * (accuracy[(0.01, s, u)] - accuracy[(0.001, s, u)]) for s in (1, 2) for u in (1, 2)]
    assert (row.compared, row.arm, row.baseline, row.n) == ("lr", 0.01, 0.001, 4)
    assert row.difference_mean == pytest.approx(np.mean(paired))
    assert (row.ci95_low, row.ci95_high) == pytest.approx(t_interval(paired))
    assert "differing in both the seed (1, 2) and the training subset (subset seeds 1, 2)" in markdown


def test_repeat_moves_seed_and_subset_together_and_pairs_across_arms(tmp_path, capsys):
    """Records of the data contract: repeat=r trains with seed + r on subset seed + r (run.json's
    seed and subset_seed); older records without subset_seed have their config's data.subset_seed."""
    records = {}
    for pretrained, base in ((True, 0.8), (False, 0.4)):
        for repeat in (0, 1, 2):
            records[f"few/{pretrained}-{repeat}"] = hand_record(
                "name=few", f"model.pretrained={str(pretrained).lower()}", seed=42 + repeat,
                test_acc=base + 0.01 * repeat * (2 if pretrained else 1), keys={"repeat": repeat},
                subset_seed=42 + repeat, repeat=repeat)
    out, markdown, _ = make_report(tmp_path, records, capsys)
    [row] = read_frame(out / "few-differences.csv").itertuples()
    assert (row.arm, row.baseline, row.n) == ("pretrained", "from scratch", 3)
    assert row.difference_mean == pytest.approx(np.mean([40.0, 41.0, 42.0]))
    assert "differing in both the seed (42, 43, 44) and the training subset (subset seeds 42, 43, 44)" in markdown
    from transferlab.report.reading import replicate

    old = hand_record(keys={"data.subset_seed": 7})
    assert replicate(old) == (42, 7)
    del old["config"]["data"]["subset_seed"]
    assert replicate(old) == (42, 42)


def test_the_same_seed_on_another_subset_is_another_replicate_not_a_repeat(tmp_path, capsys):
    out, markdown, err = make_report(tmp_path, {
        "a": hand_record(test_acc=0.6, keys={"data.subset_seed": 1}),
        "b": hand_record(test_acc=0.7, keys={"data.subset_seed": 2}),
        "c": hand_record(test_acc=0.9, keys={"data.subset_seed": 2}, finished_at="2026-01-02T10:00:00+00:00"),
    }, capsys)
    [row] = read_frame(out / "runs.csv").itertuples()
    assert row.n == 2 and row.test_acc_mean == pytest.approx(75.0)  # subsets 1 and 2; of subset 2, the later run
    assert "one run (study runs, same settings, seed 42, subset seed 2) in 2 folders" in err
    assert "## Runs — resnet18, pretrained, cifar10" in markdown and "Sweep" not in markdown


def test_unpaired_replicates_give_no_difference(tmp_path, capsys):
    out, markdown, _ = make_report(tmp_path, {
        **{f"p{s}": hand_record("name=part_a", "model=alexnet", seed=s, test_acc=0.8) for s in (1, 2)},
        **{f"s{s}": hand_record("name=part_a", "model=alexnet", "model.pretrained=false", seed=s, test_acc=0.4)
           for s in (3, 4)},
    }, capsys)
    [row] = read_frame(out / "part_a-differences.csv").itertuples()
    assert row.n == 0 and math.isnan(row.difference_mean)
    assert "| pretrained − from scratch | 0 |  | no replicate on both sides |" in markdown


def test_uniform_and_stratified_subsets_are_never_paired(tmp_path, capsys):
    """A record without data.sampling drew its subset the old way: its own group, never paired with
    a stratified run of the same seed."""
    records = {}
    for sampling in ("stratified", None):
        for pretrained, accuracy in ((True, 0.8), (False, 0.4 if sampling else 0.2)):
            for seed in (1, 2):
                records[f"part_a/{sampling}-{pretrained}-{seed}"] = part_a(
                    0.1, pretrained, seed, accuracy + 0.01 * seed, sampling=sampling)
    out, markdown, _ = make_report(tmp_path, records, capsys)
    headings = re.findall(r"^## (Part A.*)$", markdown, flags=re.MULTILINE)
    assert headings == ["Part A — alexnet, cifar10, 10 % of the training set (5,000 images, stratified by class), "
                        "all layers train, sgd lr=0.001, 10 epochs, 224 px",
                        "Part A — alexnet, cifar10, 10 % of the training set (5,000 images, drawn uniformly), "
                        "all layers train, sgd lr=0.001, 10 epochs, 224 px"]
    stratified, uniform = (read_frame(out / f"part_a-{i}-differences.csv") for i in (1, 2))
    assert list(stratified["difference_mean"]) == pytest.approx([40.0]) and list(stratified["n"]) == [2]
    assert list(uniform["difference_mean"]) == pytest.approx([60.0]) and list(uniform["n"]) == [2]
    assert [len(g.runs) for g in groups_of(records)] == [4, 4]


def test_legends_name_what_varies_in_the_studys_words_by_trainable_parameters(tmp_path, capsys):
    """freeze=none,last_only,lp_ft: LP-FT is "linear probe, then fine-tune after epoch 5", between
    full fine-tuning and the linear probe; no legend says unfreeze_at_epoch=null, and the LP-FT curve
    stays visible beside the linear probe's identical one."""
    from transferlab.report.figures import curve_figure

    lp_ft = {"params_trainable_after_unfreeze": 11_181_642}
    records = {
        "none": hand_record("name=frozen", "freeze=none", test_acc=0.9),
        "last_only": hand_record("name=frozen", "freeze=last_only", test_acc=0.7),
        "lp_ft": hand_record("name=frozen", "freeze=lp_ft", test_acc=0.7, **lp_ft),
    }
    out, markdown, _ = make_report(tmp_path, records, capsys)
    [group] = groups_of(records)
    ax = curve_figure(group, "test_acc").axes[0]
    labels = [t.get_text().replace("\n", " ") for t in ax.get_legend().get_texts()]
    assert labels == ["none", "linear probe, then fine-tune after epoch 5",
                      "its switch: all train from epoch 6", "last_only"]
    assert ax.get_legend().get_title().get_text() == "freeze"
    assert not any("null" in label or "unfreeze" in label for label in labels)
    lp, probe = [line for line in ax.get_lines() if line.get_label().replace("\n", " ") in (
        "linear probe, then fine-tune after epoch 5", "last_only")]
    assert list(lp.get_ydata()) == list(probe.get_ydata())  # the same accuracies...
    assert lp.get_marker() != probe.get_marker() and list(lp.get_xdata()) != list(probe.get_xdata())  # ...both seen
    arms = read_frame(out / "frozen.csv")
    assert list(arms.columns)[:3] == ["freeze", "unfreeze_at_epoch", "test_acc_mean"]
    assert list(arms["freeze"]) == ["none", "last_only", "last_only"]
    assert list(arms["unfreeze_at_epoch"].fillna(0)) == [0, 5, 0] and arms["unfreeze_at_epoch"].dtype == np.float64
    assert "| linear probe, then fine-tune after epoch 5 − none |" in markdown


@pytest.mark.slow  # a report with figures of several arms (about 2 s): the fast tier stays under 3 min
def test_part_c_and_lpft_compare_as_the_study_asks(tmp_path, capsys):
    """Part C: each preset against each other (early against middle too); LP-FT: against both of its neighbours."""
    seeds = (1, 2, 3)
    acc = {"none": [0.90, 0.91, 0.92], "early": [0.89, 0.91, 0.90], "middle": [0.88, 0.90, 0.89],
           "last_only": [0.70, 0.72, 0.71], "lp_ft": [0.93, 0.92, 0.95]}
    records = {f"part_c/{p}-{s}": hand_record("name=part_c", f"freeze={p}", seed=s, test_acc=a)
               for p in ("last_only", "middle", "none", "early") for s, a in zip(seeds, acc[p])}
    lp_ft = {"params_trainable_after_unfreeze": 11_181_642}
    records |= {f"lpft/{p}-{s}": hand_record("name=lpft", f"freeze={p}", seed=s, test_acc=a,
                                             **(lp_ft if p == "lp_ft" else {}))
                for p in ("none", "last_only", "lp_ft") for s, a in zip(seeds, acc[p])}
    out, markdown, _ = make_report(tmp_path, records, capsys)
    part_c = read_frame(out / "part_c-differences.csv")
    assert list(zip(part_c["arm"], part_c["baseline"])) == [
        ("early", "none"), ("middle", "none"), ("last_only", "none"), ("middle", "early"), ("last_only", "early"),
        ("last_only", "middle")]
    for row in part_c.itertuples():
        paired = [100 * (a - b) for a, b in zip(acc[row.arm], acc[row.baseline])]
        assert row.difference_mean == pytest.approx(np.mean(paired))
        if len(set(np.round(paired, 9))) > 1:  # middle − early: -1 point in every pair, no interval
            assert (row.ci95_low, row.ci95_high) == pytest.approx(t_interval(paired))
        else:
            assert math.isnan(row.ci95_low) and row.n == 3
    assert list(read_frame(out / "part_c.csv")["freeze"]) == ["none", "early", "middle", "last_only"]
    lpft = read_frame(out / "lpft-differences.csv")
    assert list(zip(lpft["arm"], lpft["baseline"])) == [
        ("linear probe, then fine-tune after epoch 5", "full fine-tuning"),
        ("linear probe, then fine-tune after epoch 5", "linear probe")]
    for row, other in zip(lpft.itertuples(), ("none", "last_only")):
        assert row.difference_mean == pytest.approx(np.mean([100 * (a - b) for a, b in zip(acc["lp_ft"], acc[other])]))
    _, rows = markdown_table_rows(out / "lpft.md")
    assert [r[0] for r in rows] == ["full fine-tuning", "linear probe, then fine-tune after epoch 5", "linear probe"]


def markdown_table_rows(path):
    """(header, rows) of the Markdown table in a report .md file."""
    lines = [line for line in path.read_text().splitlines() if line.startswith("| ")]
    cells = [[c.strip() for c in line.strip("|").split(" | ")] for line in lines]
    return cells[0], cells[2:]


def test_part_b_compares_each_model_with_the_other_smallest_first(tmp_path, capsys):
    records = {f"{model}-{seed}": hand_record("name=part_b", f"model={model}", seed=seed, test_acc=acc,
                                              params_total=total)
               for model, total, accuracies in (("vgg16", 134_301_514, (0.92, 0.93)),
                                                ("resnet18", 11_181_642, (0.94, 0.96)))
               for seed, acc in zip((1, 2), accuracies)}
    out, _, _ = make_report(tmp_path, records, capsys)
    assert list(read_frame(out / "part_b.csv")["model"]) == ["resnet18", "vgg16"]
    [row] = read_frame(out / "part_b-differences.csv").itertuples()
    assert (row.arm, row.baseline, row.n) == ("vgg16", "resnet18", 2)
    assert row.difference_mean == pytest.approx(-2.5)
    assert (row.ci95_low, row.ci95_high) == pytest.approx(t_interval([-2.0, -3.0]))


def test_images_per_class_are_counted_not_averaged(tmp_path, capsys):
    counts = {f"class {i}": 13 + (i % 2) for i in range(10)}  # 135 images: 13 or 14 per class, not 13.5
    records = {f"{fraction}": hand_record("name=data", f"data.fraction={fraction}", num_train_images=n,
                                          train_images_per_class=c)
               for fraction, n, c in ((0.1, 135, counts), (0.2, 270, {k: 2 * v for k, v in counts.items()}))}
    out, markdown, _ = make_report(tmp_path, records, capsys)
    arms = read_frame(out / "data.csv")
    assert list(arms["images_per_class_min"]) == [13, 26] and list(arms["images_per_class_max"]) == [14, 28]
    assert "| 10 % | 135 | 13–14 |" in markdown and "13.5" not in markdown


def test_per_class_runs_are_a_data_amount_axis_of_images_per_class(tmp_path, capsys):
    """few_shot: data.per_class=1,2,5 x pretrained: the fraction (unused) is nowhere; the gain is
    against images per class on a log axis."""
    from transferlab.report.figures import data_figure

    records = {}
    for k in (1, 2, 5):
        for pretrained, base in ((True, 0.5), (False, 0.1)):
            records[f"{k}-{pretrained}"] = hand_record(
                "name=few_shot", f"model.pretrained={str(pretrained).lower()}", test_acc=base + 0.01 * k,
                keys={"data.per_class": k}, per_class=k, fraction=None, num_train_images=10 * k,
                train_images_per_class={f"class {i}": k for i in range(10)})
    out, markdown, _ = make_report(tmp_path, records, capsys)
    arms = read_frame(out / "few_shot.csv")
    assert list(arms.columns)[:2] == ["per_class", "pretrained"] and "fraction" not in arms.columns
    assert list(arms["per_class"]) == [1, 1, 2, 2, 5, 5]
    [heading] = re.findall(r"^## (Study few_shot.*)$", markdown, flags=re.MULTILINE)
    assert "%" not in heading
    assert "](few_shot-test_acc-gain.png)" in markdown and "](few_shot-test_acc-vs_per_class.png)" in markdown
    assert "vs_fraction" not in markdown
    [group] = groups_of(records)
    ax = data_figure(group, "test_acc", per_class_axis=True).axes[0]
    assert ax.get_xscale() == "log" and list(ax.get_xticks()) == [1, 2, 5]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["pretrained", "from scratch"]


def test_counts_are_whole_numbers_in_the_csvs(tmp_path, capsys):
    """Images, images per class and K are written as 10, never 10.0, in the arm and the differences CSVs."""
    records = {f"{k}-{p}-{seed}": hand_record(
        "name=few_shot", f"model.pretrained={str(p).lower()}", seed=seed, test_acc=0.3 + 0.1 * p + 0.01 * seed,
        keys={"data.per_class": k}, per_class=k, fraction=None, num_train_images=10 * k,
        train_images_per_class={f"class {i}": k for i in range(10)})
        for k in (1, 5) for p in (True, False) for seed in (1, 2)}
    out, _, _ = make_report(tmp_path, records, capsys)
    arms = (out / "few_shot.csv").read_text().splitlines()
    header = arms[0].split(",")
    first = dict(zip(header, arms[1].split(",")))
    assert (first["per_class"], first["train_images"], first["images_per_class_min"], first["n"]) == ("1", "10", "1", "2")
    differences = (out / "few_shot-differences.csv").read_text().splitlines()
    row = dict(zip(differences[0].split(","), differences[1].split(",")))
    assert row["per_class"] == "1" and row["n"] == "2"


def test_tuned_against_fixed_is_a_paired_difference(tmp_path, capsys):
    fixed = {1: 0.60, 2: 0.62, 3: 0.61}
    tuned = {1: 0.66, 2: 0.65, 3: 0.69}
    tuning = {"study": "part_a", "keys": {"optim.lr": 0.01}, "trials": 4, "best_val_acc": 0.7}
    records = {f"part_a/{s}": hand_record("name=part_a", "model=alexnet", seed=s, test_acc=a) for s, a in fixed.items()}
    records |= {f"part_a-tuned/{s}": hand_record("name=part_a-tuned", "model=alexnet", "optim.lr=0.01", seed=s,
                                                 test_acc=a, tuning=tuning) for s, a in tuned.items()}
    out, markdown, _ = make_report(tmp_path, records, capsys)
    [row] = read_frame(out / "part_a-tuned-vs-fixed.csv").itertuples()
    paired = [100 * (tuned[s] - fixed[s]) for s in fixed]
    assert (row.fixed_lr, row.tuned_lr, row.n, row.trials) == (0.001, 0.01, 3, 4)
    assert row.difference_mean == pytest.approx(np.mean(paired))
    assert (row.ci95_low, row.ci95_high) == pytest.approx(t_interval(paired))
    assert row.fixed_test_acc_mean == pytest.approx(61.0) and row.tuned_n == 3
    assert f"+{np.mean(paired):.2f}" in markdown


def test_the_same_records_give_byte_identical_outputs(tmp_path, capsys):
    records = {f"{p}-{s}": part_a(0.1, p, s, (0.8 + 0.013 * (s % 3)) if p else (0.4 + 0.007 * (s % 4)))
               for p in (True, False) for s in range(1, 7)}
    first, _, _ = make_report(tmp_path / "one", records, capsys)
    second, _, _ = make_report(tmp_path / "two", records, capsys)
    texts = lambda out: {p.name: p.read_bytes().replace(str(out.parent).encode(), b"") for p in sorted(out.iterdir())
                         if p.suffix in (".md", ".csv")}  # noqa: E731
    assert texts(first) == texts(second)
    assert not read_frame(first / "part_a-differences.csv")["ci95_low"].isna().any()


def test_a_report_over_fifty_records_is_fast(tmp_path, capsys):
    import time

    records = {f"{f}-{p}-{s}": part_a(f, p, s, 0.5 + 0.01 * s) for f in (0.1, 0.2, 0.5) for p in (True, False)
               for s in range(1, 9)}
    for folder, record in records.items():
        write_record(tmp_path / "runs" / folder, record)
    started = time.process_time()
    assert report.main([str(tmp_path / "runs"), "--out", str(tmp_path / "out")]) == 0
    assert time.process_time() - started < 10.0  # CPU seconds, so that a loaded machine does not fail it
    assert pd.read_csv(tmp_path / "out" / "part_a.csv")["n"].tolist() == [8] * 6


def test_part_a_with_local_weights_compares_them_with_scratch_in_one_group(tmp_path, capsys):
    """Part A where the pretrained arm is a local state_dict (model.weights, offline): one group, the
    weights minus from scratch paired by seed, its headline gain figure, and no reference laid beside
    the weights arm."""
    from transferlab.report.figures import applies, gain_figure

    weights = "/data/donor.pt"
    gain = {0.1: [(0.80, 0.40), (0.82, 0.45), (0.85, 0.41)], 0.5: [(0.90, 0.52), (0.91, 0.50), (0.89, 0.55)]}
    records = {}
    for fraction, pairs in gain.items():
        for seed, (tuned, scratch) in enumerate(pairs, start=1):
            records[f"w{fraction}-{seed}"] = part_a(fraction, False, seed, tuned, keys={"model.weights": weights})
            records[f"s{fraction}-{seed}"] = part_a(fraction, False, seed, scratch)
    [group] = groups_of(records)
    assert [arm.values["init"] for arm in group.arms] == [f"weights {weights}", "from scratch"] * 2
    label = f"weights {weights} − from scratch"
    assert [(c.label, c.result.n) for c in group.contrasts] == [(label, 3)] * 2
    assert group.contrasts[0].result.mean == pytest.approx(np.mean([40.0, 37.0, 44.0]))
    assert set(group.reference_arms) == {"10 %, from scratch", "50 %, from scratch"}  # the recipe's scratch arms
    assert not group.reference_contrasts
    assert applies(group, "gain")
    ax = gain_figure(group).axes[0]
    [line] = [c for c in ax.containers if c.get_label() == label]
    assert list(line.lines[0].get_ydata()) == pytest.approx([np.mean([40.0, 37.0, 44.0]), np.mean([38.0, 41.0, 34.0])])
    assert label in ax.get_title()


def test_a_heading_of_one_epoch_says_epoch():
    [group] = groups_of({"a": hand_record("name=part_c", "train.epochs=1")})
    assert ", 1 epoch, " in group.title and "epochs" not in group.title
