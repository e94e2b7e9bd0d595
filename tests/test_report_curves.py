"""Learning curves in the report (report/curves.py, docs/report.md "Learning curves"): fits of
err(n) = c + a n^-b to records made from known curves with known noise, the effective data of
pretraining, the data needed for a target accuracy, the refusals, the figures and experiment=data_value."""

import numpy as np
import pytest

from transferlab import report
from transferlab.report.curves import (
    FAILS, HOLDS, REFUSED, UNTESTED, Point, PowerLaw, curve_of, data_needed, effective_data, read_images,
)

from report_records import make_report, read_frame, hand_record, write_record

SCRATCH = PowerLaw(c=0.10, a=4.0, b=0.5)  # 10 % error at best; 50 % at 100 images
PRETRAINED = PowerLaw(c=0.05, a=1.5, b=0.5)
AMOUNTS = (40, 80, 200, 400, 1000, 2000)
NOISE = 0.01  # the standard deviation of a replicate's test error


def points(law: PowerLaw, amounts=AMOUNTS, replicates: int = 6, seed: int = 1) -> list[Point]:
    rng = np.random.default_rng(seed)
    return [Point(None, float(n), law.error(n) + rng.normal(0.0, NOISE, replicates)) for n in amounts]


def test_a_fit_recovers_the_known_curve_within_its_intervals():
    curve = curve_of("from scratch", (), "from scratch", points(SCRATCH))
    assert curve.status == HOLDS, curve.reason
    for name in ("c", "a", "b"):
        low, high = curve.interval(lambda fit: getattr(fit, name))
        assert low < getattr(SCRATCH, name) < high, (name, low, high)
        assert high - low < getattr(SCRATCH, name)  # an interval that says something
    assert curve.within >= 5 and curve.p >= 0.05


def test_effective_data_is_recovered_within_its_interval_and_marked_where_extrapolated():
    scratch = curve_of("from scratch", (), "from scratch", points(SCRATCH))
    pretrained = curve_of("pretrained", (), "pretrained", points(PRETRAINED, seed=2))
    found = effective_data([pretrained, scratch])
    assert [e.point.images for e in found] == list(AMOUNTS)
    for effective in found:
        truth = SCRATCH.images_for(PRETRAINED.error(effective.point.images))
        reading = effective.reading
        if truth <= AMOUNTS[-1]:
            assert reading.kind == "interpolated"
        if reading.kind in ("interpolated", "extrapolated"):
            assert reading.low < truth < reading.high, (effective.point.images, truth, reading)
            assert effective.multiplier_interval[0] < truth / effective.point.images < effective.multiplier_interval[1]
        else:  # far beyond the amounts measured, or never (below the floor): a bound, and a true one
            assert reading.kind == "more than" and truth > reading.bound
    kinds = [e.reading.kind for e in found]
    # 40 images pretrained are worth about 330 from scratch (within); 2,000 more than any (a bound).
    assert kinds[0] == "interpolated" and "extrapolated" in kinds and kinds[-1] == "more than"
    assert found[-1].reading.bound == 10 * AMOUNTS[-1]


def test_data_needed_for_a_target_accuracy_is_recovered_within_its_interval():
    scratch = curve_of("from scratch", (), "from scratch", points(SCRATCH))
    pretrained = curve_of("pretrained", (), "pretrained", points(PRETRAINED, seed=2))
    needed = {curve.label: (error, source, reading) for curve, error, source, reading
              in data_needed([pretrained, scratch], target_accuracy=0.8)}
    for curve, law in ((scratch, SCRATCH), (pretrained, PRETRAINED)):
        error, source, reading = needed[curve.label]
        assert error == pytest.approx(0.2) and source == "--target-accuracy"
        assert reading.low < law.images_for(0.2) < reading.high
    # By default the target is the best the from-scratch arm reached: it needs about its largest amount.
    default = {curve.label: reading for curve, _, source, reading in data_needed([pretrained, scratch], None)}
    assert AMOUNTS[-2] < default["from scratch"].images < 1.5 * AMOUNTS[-1]
    assert AMOUNTS[1] < default["pretrained"].images < AMOUNTS[2]  # about 116


def test_an_arm_at_two_amounts_gets_no_fit_and_says_so():
    curve = curve_of("from scratch", (), "from scratch", points(SCRATCH, amounts=(100, 1000)))
    assert curve.status == REFUSED and curve.fit is None
    assert curve.reason == "measured at 2 amounts of data; a fit needs 3 or more"


@pytest.mark.parametrize("law, words", [
    (PowerLaw(c=0.3, a=0.02, b=0.5), "flat"),  # a fall of 0.3 points, under the noise
    (PowerLaw(c=0.6, a=-2.0, b=0.5), "rising"),  # error grows with data
])
def test_a_flat_or_rising_curve_is_refused_not_fitted(law, words):
    curve = curve_of("from scratch", (), "from scratch", points(law))
    assert curve.status == REFUSED and curve.fit is None and words in curve.reason
    assert curve.reason.startswith("not fitted: ")
    assert read_images(curve, 0.2).kind == "none"  # no bound either: more data need not help


def test_a_fit_that_does_not_hold_is_not_read_beyond_the_amounts_measured():
    """A curve that bends back up (not a power law) is fitted, said not to hold, and read only as a bound."""
    rng = np.random.default_rng(3)
    errors = [0.6, 0.4, 0.3, 0.15, 0.3, 0.12]
    bent = [Point(None, float(n), e + rng.normal(0.0, NOISE, 6)) for n, e in zip(AMOUNTS, errors)]
    curve = curve_of("from scratch", (), "from scratch", bent)
    assert curve.status == FAILS and curve.reason.startswith("does not hold: lack-of-fit F")
    beyond = read_images(curve, 0.05)
    assert beyond.kind == "more than" and beyond.bound == AMOUNTS[-1] and "does not hold" in beyond.note


def test_a_bound_never_says_more_images_than_the_arm_was_measured_reaching_it_with():
    """The digits study's from-scratch arm: flat, then a steep fall at its last amounts, so its fit does
    not hold. An accuracy it reached at its largest amount needs at most that many images, never
    "more than" them."""
    rng = np.random.default_rng(0)
    amounts = (5, 10, 20, 40, 80, 160, 320)
    means = (0.78, 0.63, 0.62, 0.63, 0.37, 0.16, 0.025)  # 1 - the study's from-scratch accuracies
    scratch = curve_of("from scratch", (), "from scratch",
                       [Point(None, float(n), m + rng.normal(0.0, 0.01, 3)) for n, m in zip(amounts, means)])
    assert scratch.status == FAILS, scratch.reason
    for error in (0.06, 0.1, 0.14):  # about the pretrained arm's errors at 320, 160 and 80 images
        reached_at = next(p.images for p in scratch.points if p.mean <= error)
        reading = read_images(scratch, error)
        assert reading.kind in ("at most", "interpolated"), (error, reading)
        if reading.kind == "at most":
            assert reading.bound == reached_at and f"reached it at {reached_at:,.0f} images" in reading.note
        else:
            assert reading.images <= reached_at * 1.05
    assert read_images(scratch, 0.001).kind == "more than"  # lower than any amount reached: a true bound


def test_three_amounts_give_an_untested_fit_that_is_never_extrapolated():
    curve = curve_of("from scratch", (), "from scratch", points(SCRATCH, amounts=(100, 400, 1600)))
    assert curve.status == UNTESTED and curve.reason == "untested: 3 amounts for 3 parameters"
    assert read_images(curve, float(SCRATCH.error(800))).kind == "interpolated"
    assert read_images(curve, float(SCRATCH.error(5000))).kind == "more than"
    # Its own best point is within what it measured, not beyond it by a rounding.
    assert read_images(curve, float(curve.fit.error(1600))).kind == "interpolated"


def data_value_records(per_class=(2, 5, 10, 20, 50, 100), seeds=(0, 1, 2)) -> dict[str, dict]:
    """data_value's runs from known curves: 10 classes, K images of each, each replicate with noise."""
    rng = np.random.default_rng(7)
    records = {}
    for k in per_class:
        for pretrained, law in ((True, PRETRAINED), (False, SCRATCH)):
            for seed in seeds:
                error = float(law.error(10 * k) + rng.normal(0.0, NOISE))
                records[f"{k}-{pretrained}-{seed}"] = hand_record(
                    "name=data_value", f"model.pretrained={str(pretrained).lower()}", seed=seed,
                    test_acc=round(1 - error, 4), keys={"data.per_class": k}, per_class=k, fraction=None,
                    num_train_images=10 * k, train_images_per_class={f"class {i}": k for i in range(10)})
    return records


@pytest.mark.slow  # 2 curves x 200 bootstrap fits, twice
def test_the_report_shows_curves_effective_data_data_needed_and_figures_byte_identically(tmp_path, capsys):
    records = data_value_records()
    out, markdown, _ = make_report(tmp_path, records, capsys)
    fits = read_frame(out / "data_value-curves.csv").set_index("arm")
    assert list(fits.index) == ["pretrained", "from scratch"] and set(fits["amounts"]) == {6}
    assert fits.loc["from scratch", "c_ci95_low"] < SCRATCH.c < fits.loc["from scratch", "c_ci95_high"]
    effective = read_frame(out / "data_value-effective-data.csv")
    assert list(effective["train_images"]) == [20, 50, 100, 200, 500, 1000]
    assert effective["kind"].iloc[0] == "interpolated" and effective["kind"].iloc[-1] == "more than"
    needed = read_frame(out / "data_value-data-needed.csv").set_index("arm")
    assert needed.loc["from scratch", "target"] == "the best accuracy of from scratch"
    for file in ("data_value-learning-curves.png", "data_value-effective-data.png"):
        assert f"]({file})" in markdown and (out / file).stat().st_size > 10_000
    assert "## Study data_value" in markdown and ": effective data of pretraining" in (
        out / "data_value-effective-data.md").read_text()
    # The same runs, the same report: every resampling is seeded.
    again = tmp_path / "again"
    assert report.main([str(tmp_path / "runs"), "--out", str(again), "--target-accuracy", "0.8"]) == 0
    for table in ("curves", "effective-data"):
        assert (again / f"data_value-{table}.csv").read_bytes() == (out / f"data_value-{table}.csv").read_bytes()
    target = read_frame(again / "data_value-data-needed.csv").set_index("arm")
    assert set(target["target_acc"]) == {80.0} and set(target["target"]) == {"--target-accuracy"}
    assert target.loc["from scratch", "images_ci95_low"] < SCRATCH.images_for(0.2) < target.loc[
        "from scratch", "images_ci95_high"]


def test_a_study_at_two_amounts_says_its_arms_get_no_fit(tmp_path, capsys):
    records = data_value_records(per_class=(5, 50), seeds=(0,))
    out, markdown, _ = make_report(tmp_path, records, capsys)
    fits = read_frame(out / "data_value-curves.csv")
    assert set(fits["status"]) == {"no fit"}
    assert "Arm from scratch: no extrapolation (measured at 2 amounts of data; a fit needs 3 or more)." in markdown
    # Only what was measured: the pretrained arm at 50 images beat scratch at 500, so more than 10x.
    effective = read_frame(out / "data_value-effective-data.csv")
    assert set(effective["kind"]) == {"more than"} and set(effective["bound_images"]) == {500}
    assert "more than 10x" in markdown


@pytest.mark.parametrize("value", ["0", "1", "90", "-0.5"])
def test_a_target_accuracy_outside_0_to_1_is_refused_in_one_line(tmp_path, capsys, value):
    write_record(tmp_path / "runs" / "a", hand_record())
    assert report.main([str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--target-accuracy", value]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and f"--target-accuracy={float(value):g} is not allowed" in error
    assert "fraction above 0 and below 1" in error


def test_data_value_runs_pretrained_and_scratch_at_six_amounts_on_a_log_scale_with_repeats():
    from omegaconf import OmegaConf

    from transferlab.composition import compose_with_hydra

    params = compose_with_hydra(["experiment=data_value"]).hydra.sweeper.params
    amounts = [int(k) for k in str(params["data.per_class"]).split(",")]
    assert len(amounts) >= 6 and amounts == sorted(amounts) and amounts[-1] / amounts[0] >= 10
    ratios = np.diff(np.log(amounts))
    assert ratios.max() / ratios.min() < 1.5  # spread evenly on a log scale
    assert str(params["model.pretrained"]) == "true,false" and len(str(params["repeat"]).split(",")) >= 3
    config = compose_with_hydra(["experiment=data_value", "data=synthetic", "data.per_class=100"], with_hydra=False)
    assert OmegaConf.select(config, "name") == "data_value" and config.data.num_train // 10 >= amounts[-1]
