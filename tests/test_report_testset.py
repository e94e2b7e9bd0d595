"""The test set's own noise, from hand-written records with per-image predictions (predictions.npz):
the report's test-set intervals, McNemar's p, the interval over seeds and test images, per-class
accuracies and confusion matrices, recomputed here with numpy and scipy; and a record from before
predictions still reports, its test-set columns empty, with one note that says why."""

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from report_records import hand_record, make_report, read_frame, write_record
from transferlab.records import PREDICTIONS_FILE

IMAGES = 400
LABELS = np.arange(IMAGES) % 10  # 40 test images of each class


def part_c(preset: str, seed: int, correct: np.ndarray) -> dict:
    return hand_record("name=part_c", f"freeze={preset}", seed=seed, test_acc=float(correct.mean()),
                       num_test_images=IMAGES)


def write_predictions(folder, correct: np.ndarray, seed: int) -> None:
    """predictions.npz of a run that got ``correct`` (a mask over the test images) right: a wrong
    image is predicted as the next class; the label's probability is made up."""
    rng = np.random.default_rng(seed)
    predicted = np.where(correct, LABELS, (LABELS + 1) % 10)
    probability = np.where(correct, rng.uniform(0.5, 1.0, IMAGES), rng.uniform(0.0, 0.4, IMAGES))
    folder.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(folder / PREDICTIONS_FILE, predicted=predicted.astype(np.int16),
                        labels=LABELS.astype(np.int16), true_probability=probability.astype(np.float16))


def correct_mask(accuracy_by_class: list[float], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(size=IMAGES) < np.array(accuracy_by_class)[LABELS]


BETTER = [0.95, 0.9, 0.85, 0.9, 0.8, 0.9, 0.95, 0.9, 0.9, 0.92]
WORSE = [0.9, 0.85, 0.8, 0.85, 0.7, 0.85, 0.9, 0.9, 0.85, 0.9]


def write_runs(tmp_path, masks: dict[tuple[str, int], np.ndarray], without: set = frozenset()) -> dict:
    records = {}
    for (preset, seed), correct in masks.items():
        folder = f"part_c/{preset}-{seed}"
        records[folder] = part_c(preset, seed, correct)
        if (preset, seed) not in without:
            write_predictions(tmp_path / "runs" / folder, correct, seed)
    return records


def test_one_seed_per_arm_gets_the_test_sets_interval_and_mcnemars_p(tmp_path, capsys):
    """Part C from one seed is no longer silent: the test images say whether early vs none is
    distinguishable (the reference study is one seed per cell)."""
    masks = {("none", 1): correct_mask(BETTER, 1), ("early", 1): correct_mask(WORSE, 2)}
    out, markdown, _ = make_report(tmp_path, write_runs(tmp_path, masks), capsys)
    row = read_frame(out / "part_c-differences.csv").iloc[0]
    per_image = masks["early", 1].astype(int) - masks["none", 1].astype(int)
    assert row["n"] == 1 and row["difference_mean"] == pytest.approx(100 * per_image.mean())
    assert math.isnan(row["ci95_low"])  # one pair: no interval over seeds ...
    # ... but the test set's: a paired bootstrap over the images (scipy's own, here), and McNemar's exact p.
    scipy_ci = scipy_stats.bootstrap((per_image,), np.mean, method="percentile", n_resamples=9999,
                                     random_state=np.random.default_rng(5)).confidence_interval
    assert row["test_ci95_low"] == pytest.approx(100 * scipy_ci.low, abs=0.3)
    assert row["test_ci95_high"] == pytest.approx(100 * scipy_ci.high, abs=0.3)
    early_only, none_only = int((per_image > 0).sum()), int((per_image < 0).sum())
    assert row["mcnemar_p"] == pytest.approx(scipy_stats.binomtest(early_only, early_only + none_only).pvalue)
    assert row["test_images"] == IMAGES and math.isnan(row["seeds_and_test_ci95_low"])
    assert "Test-set columns empty" not in markdown
    # Per class: each class's accuracy, as the masks make it, and a confusion matrix per arm.
    per_class = read_frame(out / "part_c-per-class.csv").set_index("freeze")
    for preset in ("none", "early"):
        expected = [100 * masks[preset, 1][LABELS == k].mean() for k in range(10)]
        assert list(per_class.loc[preset, [f"class {k}" for k in range(10)]]) == pytest.approx(expected)
    assert (out / "part_c-confusion-1.png").stat().st_size > 0 and (out / "part_c-confusion-2.png").is_file()
    assert "confusion matrix of none (n=1)" in markdown


def test_several_seeds_get_an_interval_over_seeds_and_test_images(tmp_path, capsys):
    masks = {(preset, seed): correct_mask(rates, 10 * seed + offset)
             for seed in (1, 2, 3) for preset, rates, offset in (("none", BETTER, 0), ("early", WORSE, 1))}
    out, _, _ = make_report(tmp_path, write_runs(tmp_path, masks), capsys)
    row = read_frame(out / "part_c-differences.csv").iloc[0]
    per_pair = np.stack([masks["early", s].astype(int) - masks["none", s].astype(int) for s in (1, 2, 3)])
    pair_means = per_pair.mean(axis=1)
    assert row["n"] == 3 and row["difference_mean"] == pytest.approx(100 * pair_means.mean())
    # Both variance components, Welch-Satterthwaite degrees of freedom, scipy's t quantile.
    seed_var, image_var = pair_means.var(ddof=1) / 3, per_pair.mean(axis=0).var(ddof=1) / IMAGES
    df = (seed_var + image_var) ** 2 / (seed_var ** 2 / 2 + image_var ** 2 / (IMAGES - 1))
    low, high = scipy_stats.t.interval(0.95, df, loc=pair_means.mean(), scale=math.sqrt(seed_var + image_var))
    assert (row["seeds_and_test_ci95_low"], row["seeds_and_test_ci95_high"]) == pytest.approx((100 * low, 100 * high))
    # It is wider than the seeds' t interval alone: the test set's noise is in it too.
    assert row["seeds_and_test_ci95_high"] - row["seeds_and_test_ci95_low"] > row["ci95_high"] - row["ci95_low"]
    scipy_ci = scipy_stats.bootstrap((per_pair.mean(axis=0),), np.mean, method="percentile", n_resamples=9999,
                                     random_state=np.random.default_rng(5)).confidence_interval
    assert (row["test_ci95_low"], row["test_ci95_high"]) == pytest.approx((100 * scipy_ci.low, 100 * scipy_ci.high),
                                                                          abs=0.3)
    assert math.isnan(row["mcnemar_p"])  # McNemar's test is for one pair


@pytest.mark.slow  # a report with figures of several arms (about 2 s): the fast tier stays under 3 min
def test_a_record_from_before_predictions_reports_with_its_test_set_columns_empty_and_one_note(tmp_path, capsys):
    masks = {("none", 1): correct_mask(BETTER, 1), ("early", 1): correct_mask(WORSE, 2),
             ("middle", 1): correct_mask(WORSE, 3)}
    out, markdown, err = make_report(tmp_path, write_runs(tmp_path, masks, without={("middle", 1)}), capsys)
    rows = read_frame(out / "part_c-differences.csv").set_index(["arm", "baseline"])
    assert not math.isnan(rows.loc[("early", "none"), "test_ci95_low"])
    old = rows.loc[("middle", "none")]
    assert old["difference_mean"] == pytest.approx(100 * (masks["middle", 1].mean() - masks["none", 1].mean()))
    assert all(math.isnan(old[c]) for c in ("test_ci95_low", "test_ci95_high", "mcnemar_p", "test_images"))
    differences = (out / "part_c-differences.md").read_text()
    assert differences.count("Test-set columns empty where a side has 1 run(s): no predictions.npz beside run.json "
                             "(a record from before runs kept their test predictions).") == 1
    assert "| middle − none | 1 |" in differences and err == ""
    # A predictions.npz that is not its run's (another correct count) is refused the same way, saying so.
    write_predictions(tmp_path / "runs" / "part_c/middle-1", correct_mask(BETTER, 9), 3)
    out, _, _ = make_report(tmp_path, {}, capsys)
    assert "part_c/middle-1/predictions.npz does not match its run.json (its count of images or of correct ones)" in (
        out / "part_c-differences.md").read_text()
    rows = read_frame(out / "part_c-differences.csv").set_index(["arm", "baseline"])
    assert math.isnan(rows.loc[("middle", "none"), "test_ci95_low"])


def test_the_power_column_says_how_many_pairs_resolve_the_asked_difference(tmp_path, capsys):
    from transferlab import report
    from transferlab.report.stats import power_pairs

    masks = {(preset, seed): correct_mask(rates, 10 * seed + offset)
             for seed in (1, 2, 3) for preset, rates, offset in (("none", BETTER, 0), ("early", WORSE, 1))}
    records = write_runs(tmp_path, masks, without=set(masks))
    for folder, record in records.items():
        write_record(tmp_path / "runs" / folder, record)
    assert report.main([str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--min-difference", "2"]) == 0
    row = read_frame(tmp_path / "out" / "part_c-differences.csv").iloc[0]
    pairs = [100 * (masks["early", s].mean() - masks["none", s].mean()) for s in (1, 2, 3)]
    assert row["power_target"] == 2.0
    assert row["pairs_for_80_power"] == power_pairs(float(np.std(pairs, ddof=1)), 2.0)
    assert "pairs for 80 % power at 2 points" in (tmp_path / "out" / "part_c-differences.md").read_text()
    # A difference far inside the spread: more pairs than the report looks at, said as such.
    assert report.main([str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--min-difference", "0.01"]) == 0
    assert math.isinf(read_frame(tmp_path / "out" / "part_c-differences.csv").iloc[0]["pairs_for_80_power"])
    assert "| > 1,000 |" in (tmp_path / "out" / "part_c-differences.md").read_text()
    assert report.main([str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--min-difference", "0"]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "transferlab report: error: --min-difference=0 is not allowed; give a difference in percentage points above 0 "
        "and at most 100")
