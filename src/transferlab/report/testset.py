"""The test set's own noise, from each run's predictions.npz (the final evaluation's prediction for
every test image): per-class accuracies, confusion matrices, and for each comparison the interval
that the test images alone allow and the one that covers seeds and test images together.

- **Test set alone**: a paired bootstrap over the test images (percentile, 9,999 resamples, seeded)
  of the mean difference, image by image, averaged over the comparison's pairs: how much the
  difference would move on another test set of the same size, for these trained models. With one
  pair, McNemar's exact test beside it (the images one side got right and the other wrong).
  Resampling N images of a few distinct values is a multinomial draw over those values: exact, and
  fast for any N.
- **Seeds and test set** (n >= 2 pairs): the t interval with both variance components, the pairs'
  spread over n (seeds, subsets) plus the per-image differences' spread over N (the test set), with
  Welch-Satterthwaite degrees of freedom. Not a two-level bootstrap: its seed level is a bootstrap
  over 3 to 5 pairs, which covers 0.82 of the time at 5 (docs/report.md, "Which interval").

A run without a predictions.npz (a record from before it), or with one that does not match its
run.json, has none of these: its columns are empty and the report says why, once.
numpy and scipy only: the report never imports torch.
"""

from __future__ import annotations

import functools
import math
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from transferlab.records import PREDICTIONS_FILE
from transferlab.report.stats import CONFIDENCE, POINTS_BOUNDS, clip

TEST_RESAMPLES = 9999
TEST_SEED = 0  # the same runs give the same report, byte for byte
NO_PREDICTIONS = f"no {PREDICTIONS_FILE} beside run.json (a record from before runs kept their test predictions)"


class Predictions(NamedTuple):
    predicted: np.ndarray  # (N,) the predicted class of each test image
    labels: np.ndarray  # (N,) its label
    true_probability: np.ndarray  # (N,) the probability the model gave the label

    @property
    def correct(self) -> np.ndarray:
        return self.predicted == self.labels


@functools.cache
def _read(path: str, test_acc: float, test_images: float, stamp: tuple[int, int]) -> Predictions | str:
    """The predictions in ``path``, or why there are none: missing, unreadable, or not the run's own
    (another count of images, another count of correct ones than run.json's test_acc says)."""
    file = Path(path) / PREDICTIONS_FILE
    if not file.is_file():
        return NO_PREDICTIONS
    try:
        with np.load(file, allow_pickle=False) as kept:
            found = Predictions(kept["predicted"], kept["labels"], kept["true_probability"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        return f"{file.as_posix()} is not readable ({type(error).__name__})"
    n = len(found.labels)
    if found.predicted.shape != (n,) or found.true_probability.shape != (n,) or (
            math.isfinite(test_images) and n != int(test_images)) or (
            math.isfinite(test_acc) and int(found.correct.sum()) != round(test_acc * n)):
        return f"{file.as_posix()} does not match its run.json (its count of images or of correct ones)"
    return found


def predictions_of(run: pd.Series) -> Predictions | str:
    """A run's predictions (a row of the report's runs), or the reason it has none."""
    images = run.get("test_images")
    images = float(images) if images is not None and not pd.isna(images) else math.nan
    accuracy = float(run["test_acc"]) if run["test_acc"] is not None and not pd.isna(run["test_acc"]) else math.nan
    try:  # read again when the file changes (size, modification time)
        stat = (Path(run["path"]) / PREDICTIONS_FILE).stat()
        stamp = (stat.st_size, stat.st_mtime_ns)
    except OSError:
        stamp = (-1, -1)
    return _read(str(run["path"]), accuracy, images, stamp)


@dataclass(frozen=True)
class TestSetComparison:
    """The test set's part of a comparison (points): its interval alone, McNemar's p for one pair,
    the interval over seeds and test images for several, the test images; ``missing``: why not."""

    low: float = math.nan
    high: float = math.nan
    mcnemar_p: float = math.nan
    both_low: float = math.nan
    both_high: float = math.nan
    images: int = 0
    missing: str = ""


def compare(arm_runs: pd.DataFrame, baseline_runs: pd.DataFrame, pairs) -> TestSetComparison:
    """``arm - baseline`` image by image over ``pairs`` (replicates on both sides)."""
    if not pairs:
        return TestSetComparison()
    sides = []
    for runs in (arm_runs, baseline_runs):
        by_replicate = {r: run for r, (_, run) in zip(runs["replicate"], runs.iterrows())}
        sides.append([predictions_of(by_replicate[pair]) for pair in pairs])
    for found in (*sides[0], *sides[1]):
        if isinstance(found, str):
            return TestSetComparison(missing=found)
    labels = sides[0][0].labels
    if any(len(p.labels) != len(labels) or (p.labels != labels).any() for p in (*sides[0], *sides[1])):
        return TestSetComparison(missing="the two sides were tested on different test images")
    per_pair = np.stack([a.correct.astype(np.int8) - b.correct.astype(np.int8) for a, b in zip(*sides)])
    low, high = bootstrap_images(per_pair.mean(axis=0))
    if len(pairs) == 1:
        return TestSetComparison(low, high, mcnemar(per_pair[0]), images=len(labels))
    return TestSetComparison(low, high, math.nan, *seeds_and_images(per_pair), images=len(labels))


def bootstrap_images(differences: np.ndarray) -> tuple[float, float]:
    """The percentile bootstrap interval (points) of the mean of per-image ``differences``,
    resampling the images: a multinomial draw over the distinct values, exactly as resampling them."""
    values, counts = np.unique(differences, return_counts=True)
    n = len(differences)
    rng = np.random.default_rng(TEST_SEED)
    means = rng.multinomial(n, counts / n, size=TEST_RESAMPLES) @ values / n
    alpha = 1 - CONFIDENCE
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(100 * low), float(100 * high)


def mcnemar(differences: np.ndarray) -> float:
    """McNemar's exact test (two-sided): of the images only one side got right, is either side's
    share other than a half? 1 where no image tells the two apart."""
    from scipy import stats

    arm_only, baseline_only = int(np.sum(differences > 0)), int(np.sum(differences < 0))
    if arm_only + baseline_only == 0:
        return 1.0
    return float(stats.binomtest(arm_only, arm_only + baseline_only, 0.5).pvalue)


def seeds_and_images(per_pair: np.ndarray) -> tuple[float, float]:
    """The 95 % t interval (points) of the mean difference with both variance components: the
    pairs' accuracy differences (seeds, subsets) and the test images' (the per-image differences
    averaged over the pairs), with Welch-Satterthwaite degrees of freedom; nan without spread."""
    from scipy import stats

    n, images = per_pair.shape
    pair_means = per_pair.mean(axis=1)
    seed_var = float(np.var(pair_means, ddof=1)) / n
    image_var = float(np.var(per_pair.mean(axis=0), ddof=1)) / images
    se = math.sqrt(seed_var + image_var)
    if se == 0:
        return math.nan, math.nan
    df = (seed_var + image_var) ** 2 / ((seed_var ** 2) / (n - 1) + (image_var ** 2) / (images - 1))
    mean = float(pair_means.mean())
    low, high = stats.t.interval(CONFIDENCE, df, loc=mean, scale=se)
    return clip((100 * float(low), 100 * float(high)), POINTS_BOUNDS)


def per_class_accuracy(runs: pd.DataFrame) -> tuple[np.ndarray, int] | None:
    """Per class (by label), the arm's accuracy in % averaged over its runs, and the runs behind it;
    None where no run of the arm has predictions."""
    found = [p for p in (predictions_of(run) for _, run in runs.iterrows()) if not isinstance(p, str)]
    if not found:
        return None
    classes = int(max(p.labels.max() for p in found)) + 1
    accuracies = []
    for p in found:
        labels = p.labels.astype(np.int64)
        correct = np.bincount(labels, weights=p.correct, minlength=classes)
        total = np.bincount(labels, minlength=classes)
        with np.errstate(invalid="ignore", divide="ignore"):
            accuracies.append(100 * correct / total)
    return np.nanmean(np.stack(accuracies), axis=0), len(found)


def confusion(runs: pd.DataFrame) -> tuple[np.ndarray, int] | None:
    """The arm's confusion counts (rows: label, columns: predicted), summed over its runs with
    predictions, and how many runs; None where none has them."""
    found = [p for p in (predictions_of(run) for _, run in runs.iterrows()) if not isinstance(p, str)]
    if not found:
        return None
    classes = int(max(max(p.labels.max(), p.predicted.max()) for p in found)) + 1
    counts = np.zeros((classes, classes), dtype=np.int64)
    for p in found:
        np.add.at(counts, (p.labels.astype(np.int64), p.predicted.astype(np.int64)), 1)
    return counts, len(found)


def missing_reasons(runs: pd.DataFrame) -> list[str]:
    """Why runs have no test-set columns, each reason once, with how many runs it holds for."""
    reasons: dict[str, int] = {}
    for _, run in runs.iterrows():
        found = predictions_of(run)
        if isinstance(found, str):
            reasons[found] = reasons.get(found, 0) + 1
    return [f"{count} run(s): {reason}" for reason, count in reasons.items()]
