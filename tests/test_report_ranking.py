"""The report's ranking of `transferlab rank`'s score records (report/ranking.py): the table per
dataset, the rank correlation of each score with the fine-tuned runs' accuracy with its bootstrap
interval, the scatter figure; score records are never read as runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from report_records import hand_record, read_csv, write_record
from transferlab import report
from transferlab.report.ranking import rank_correlations

CANDIDATES = {  # pretraining label -> (LogME, H-score, fine-tuned test accuracy)
    "alpha": (0.9, 1.0, 0.90), "beta": (0.5, 2.0, 0.80), "gamma": (0.1, 3.0, 0.70), "delta": (-0.3, 4.0, 0.60),
}
KNN = {  # the same up to rounding, as H-score is for every candidate with fewer images than dimensions
    "alpha": 4.000000000000085, "beta": 3.999999999999636, "gamma": 4.0, "delta": 4.000000000000607,
}
DATA = ("data=synthetic", "data.image_size=32")


def score_record(label: str, logme: float, h_score: float, config: dict) -> dict:
    return {"kind": "score", "schema_version": 1, "status": "completed", "candidate": f"model.weights={label}.pt",
            "model": "resnet18", "pretraining": {"label": label}, "data": "synthetic", "dataset": "synthetic",
            "config": config, "fraction": config["data"]["fraction"], "per_class": None, "image_size": 32,
            "num_train_images": 400, "scores": {"logme": logme, "h_score": h_score, "knn_accuracy": KNN[label],
                                                "probe_val_accuracy": 0.5, "nce": None, "leep": None},
            "score_seconds": {"logme": 0.1, "h_score": 0.1}, "feature_seconds": 1.0}


def write_study(root: Path, with_runs: bool = True) -> None:
    for label, (logme, h, accuracy) in CANDIDATES.items():
        run = hand_record(*DATA, "name=sources", f"model.weights={label}.pt", test_acc=accuracy,
                          pretraining={"label": label})
        if with_runs:
            write_record(root / "sources" / label, run)
        folder = root / "scores" / "synthetic" / label
        folder.mkdir(parents=True)
        (folder / "score.json").write_text(json.dumps(score_record(label, logme, h, run["config"])))


def test_a_score_that_orders_the_candidates_as_fine_tuning_did_has_tau_and_rho_one():
    result = rank_correlations(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), np.array([0.1, 0.2, 0.3, 0.4, 0.5]))
    assert result["tau"] == pytest.approx(1.0) and result["rho"] == pytest.approx(1.0)
    assert result["tau_high"] == pytest.approx(1.0) and result["tau_low"] <= 1.0
    reversed_ = rank_correlations(np.array([5.0, 4.0, 3.0, 2.0, 1.0]), np.array([0.1, 0.2, 0.3, 0.4, 0.5]))
    assert reversed_["tau"] == pytest.approx(-1.0)


def test_the_bootstraps_correlations_are_scipys_for_every_resample_ties_included():
    from scipy.stats import kendalltau, spearmanr

    from transferlab.report.ranking import _kendall_tau_b, _spearman_rho

    rng = np.random.default_rng(3)
    a = rng.integers(0, 4, (200, 6)).astype(float)  # few values: many ties
    b = rng.normal(size=(200, 6)).round(1)
    a, b = a[(np.ptp(a, axis=1) > 0) & (np.ptp(b, axis=1) > 0)], b[(np.ptp(a, axis=1) > 0) & (np.ptp(b, axis=1) > 0)]
    assert len(a) > 150
    np.testing.assert_allclose(_kendall_tau_b(a, b), [kendalltau(x, y).statistic for x, y in zip(a, b)], atol=1e-12)
    np.testing.assert_allclose(_spearman_rho(a, b), [spearmanr(x, y).statistic for x, y in zip(a, b)], atol=1e-12)


def test_the_bootstrap_is_seeded_and_leaves_out_constant_resamples():
    score, accuracy = np.array([0.3, 0.1, 0.4, 0.2]), np.array([0.5, 0.2, 0.6, 0.55])
    first, second = rank_correlations(score, accuracy), rank_correlations(score, accuracy)
    assert first == second
    assert 0 < first["tau_resamples"] < 2000  # some resamples draw one candidate four times
    assert first["tau_low"] < first["tau"] < first["tau_high"] or first["tau_low"] <= first["tau_high"]


def test_the_report_ranks_the_candidates_and_correlates_each_score_with_fine_tuning(tmp_path, capsys):
    write_study(tmp_path / "outputs")
    broken = tmp_path / "outputs" / "scores" / "synthetic" / "broken" / "score.json"
    broken.parent.mkdir()
    broken.write_text(json.dumps({"kind": "score", "config": {}, "scores": {"logme": "high"}}))
    assert report.main([str(tmp_path / "outputs"), "--out", str(tmp_path / "report")]) == 0
    out, err = capsys.readouterr()
    assert f"skipped {broken.as_posix()}: scores.logme is not a finite number" in err  # and the others are read
    assert "4 run records read" in out  # the 4 runs; the score records are not runs
    _, ranking = read_csv(tmp_path / "report" / "ranking-1.csv")
    assert list(ranking) == [f"model.weights={label}.pt" for label in CANDIDATES]  # by LogME, highest first
    assert float(ranking["model.weights=alpha.pt"]["tuned_acc"]) == pytest.approx(0.90)
    _, correlation = read_csv(tmp_path / "report" / "ranking-1-correlation.csv")
    assert float(correlation["logme"]["tau"]) == pytest.approx(1.0)
    assert float(correlation["h_score"]["rho"]) == pytest.approx(-1.0)
    assert "knn_accuracy" not in correlation  # the same for every candidate up to rounding: no correlation
    assert (tmp_path / "report" / "ranking-1-scatter.png").stat().st_size > 0
    page = (tmp_path / "report" / "report.md").read_text()
    assert "Ranking of pretrained candidates" in page and "![Each score against" in page


def test_scores_without_fine_tuned_runs_give_the_ranking_alone(tmp_path, capsys):
    write_study(tmp_path / "outputs", with_runs=False)
    assert report.main([str(tmp_path / "outputs"), "--out", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "ranking-1.csv").exists()
    assert not (tmp_path / "report" / "ranking-1-correlation.csv").exists()
    assert not (tmp_path / "report" / "ranking-1-scatter.png").exists()
