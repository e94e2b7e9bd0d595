"""The report's ranking of pretrained candidates by their transferability scores (`transferlab rank`'s
score.json records), and how well each score predicted the fine-tuning that followed.

A score record is not a run: it is read here alone and never averaged with training runs. Per
dataset (and training subset: data.fraction, data.per_class, image size), a table ranks the
candidates by LogME with every score beside it. Where completed fine-tuned runs (freeze=none,
adapt=none) of the same candidates (model and pretraining) on the same data and subset exist, each
score's rank correlation with their mean test accuracy: Kendall's tau and Spearman's rho (scipy),
each with a 95 % percentile bootstrap interval over candidates (seeded, so the report is the same
each time), and a scatter figure of each score against the fine-tuned accuracy. docs/scores.md.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from transferlab.report.page import Section, Table
from transferlab.report.reading import dataset_label, pretraining_label

SCORE_FILE = "score.json"  # rank.SCORE_FILE (the report never imports torch, hence not imported from there)
SCORE_KIND = "score"
SCORES = {  # score -> its name in the tables, and whether it is a fraction shown in %
    "logme": ("LogME", False), "h_score": ("H-score", False), "knn_accuracy": ("kNN LOO acc (%)", True),
    "probe_val_accuracy": ("probe val acc (%)", True), "nce": ("NCE", False), "leep": ("LEEP", False),
}
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
MIN_CANDIDATES = 3  # fewer give no correlation


def find_score_files(paths: list[str], out: Path) -> list[Path]:
    """Every score.json under ``paths`` (or a path that is one), none under ``out`` nor in a hidden folder."""
    out = out.resolve()
    found: set[Path] = set()
    for given in paths:
        root = Path(given)
        if root.is_file() and root.name == SCORE_FILE:
            found.add(root)
            continue
        for folder, folders, files in os.walk(root, followlinks=False) if root.is_dir() else []:
            folders[:] = sorted(name for name in folders if not name.startswith("."))
            if SCORE_FILE in files and out not in Path(folder).resolve().parents and Path(folder).resolve() != out:
                found.add(Path(folder) / SCORE_FILE)
    return sorted(found, key=lambda path: path.as_posix())


def read_scores(files: list[Path]) -> tuple[pd.DataFrame, list[str]]:
    """(one row per readable score record, a line for each file skipped)."""
    rows, skipped = [], []
    for path in files:
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            skipped.append(f"{path.as_posix()}: not readable ({error})")
            continue
        problem = _problem(record)
        if problem is not None:
            skipped.append(f"{path.as_posix()}: {problem}")
            continue
        rows.append({"path": path.parent.as_posix(), "candidate": record.get("candidate") or path.parent.name,
                     "dataset": dataset_label(record), "fraction": record.get("fraction"),
                     "per_class": record.get("per_class"), "image_size": record.get("image_size"),
                     "model": record["model"], "source": pretraining_label(record),
                     "train_images": record.get("num_train_images"),
                     "score_seconds": sum(record.get("score_seconds", {}).values()),
                     "feature_seconds": record.get("feature_seconds"),
                     **{name: record["scores"].get(name) for name in SCORES}})
    return pd.DataFrame(rows), skipped


def _problem(record: Any) -> str | None:
    if not isinstance(record, dict) or record.get("kind") != SCORE_KIND:
        return f"not a score record (kind is not {SCORE_KIND!r})"
    if not isinstance(record.get("scores"), dict) or not isinstance(record.get("config"), dict):
        return "no scores or config"
    for name, value in record["scores"].items():
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value)):
            return f"scores.{name} is not a finite number"
    return None


def fine_tuned_accuracy(scored: pd.DataFrame, completed: pd.DataFrame) -> pd.Series:
    """Each scored candidate's mean test accuracy (a fraction) over the completed fine-tuned runs
    (nothing frozen, no adapter) of its model and pretraining on its dataset and training subset; NaN
    where there is none."""
    if completed.empty:
        return pd.Series(np.nan, index=scored.index)
    settings = completed["config"]
    tuned = completed[settings.map(lambda c: c.get("freeze.name") == "none" and c.get("adapt.name", "none") == "none"
                                   and not c.get("freeze.modules"))]
    means = []
    for _, row in scored.iterrows():
        same = tuned[(tuned["dataset"] == row["dataset"]) & (tuned["model"] == row["model"])
                     & (tuned["source"] == row["source"]) & (tuned["fraction"] == row["fraction"])
                     & (tuned["per_class"].isna() if row["per_class"] is None else tuned["per_class"] == row["per_class"])
                     & (tuned["config"].map(lambda c: c.get("data.image_size")) == row["image_size"])]
        means.append(float(same["test_acc"].mean()) if len(same) else np.nan)
    return pd.Series(means, index=scored.index)


def rank_correlations(score: np.ndarray, accuracy: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES,
                      seed: int = BOOTSTRAP_SEED) -> dict[str, float]:
    """Kendall's tau and Spearman's rho of ``score`` against ``accuracy`` (one value per candidate),
    each with the 2.5 and 97.5 percentiles of its bootstrap over candidates (resamples in which
    either side is constant give no correlation and are left out; ``*_resamples`` counts those kept)."""
    from scipy.stats import kendalltau, spearmanr

    result = {"n": len(score), "tau": float(kendalltau(score, accuracy).statistic),
              "rho": float(spearmanr(score, accuracy).statistic)}
    chosen = np.random.default_rng(seed).integers(0, len(score), (resamples, len(score)))
    a, b = score[chosen], accuracy[chosen]
    kept = (np.ptp(a, axis=1) > 0) & (np.ptp(b, axis=1) > 0)
    taus, rhos = _kendall_tau_b(a[kept], b[kept]), _spearman_rho(a[kept], b[kept])
    for name, values in (("tau", taus), ("rho", rhos)):
        values = values[np.isfinite(values)]
        low, high = np.percentile(values, [2.5, 97.5]) if len(values) else (np.nan, np.nan)
        result.update({f"{name}_low": float(low), f"{name}_high": float(high), f"{name}_resamples": len(values)})
    return result


def _kendall_tau_b(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Kendall's tau-b of each row of ``a`` against the same row of ``b`` (scipy's kendalltau, its
    default variant, for every resample at once): concordant minus discordant pairs over the root
    of the untied pairs of each side."""
    sign_a = np.sign(a[:, :, None] - a[:, None, :])
    sign_b = np.sign(b[:, :, None] - b[:, None, :])
    # Each pair is counted twice (i, j and j, i): the ratio is the same.
    return (sign_a * sign_b).sum(axis=(1, 2)) / np.sqrt(np.abs(sign_a).sum(axis=(1, 2)) *
                                                       np.abs(sign_b).sum(axis=(1, 2)))


def _spearman_rho(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row of ``a`` against the same row of ``b``: the Pearson correlation of
    their average ranks (ties share their mean rank), as scipy's spearmanr."""
    from scipy.stats import rankdata

    rank_a, rank_b = rankdata(a, axis=1), rankdata(b, axis=1)
    rank_a -= rank_a.mean(axis=1, keepdims=True)
    rank_b -= rank_b.mean(axis=1, keepdims=True)
    return (rank_a * rank_b).sum(axis=1) / np.sqrt((rank_a ** 2).sum(axis=1) * (rank_b ** 2).sum(axis=1))


def ranking_sections(paths: list[str], completed: pd.DataFrame, out: Path) -> tuple[list[Section], list[str]]:
    """A section per dataset and training subset of the score records under ``paths``: the ranking
    table, the correlations with fine-tuned accuracy and their scatter figure where fine-tuned runs
    exist; and a line for each score file skipped."""
    scored, skipped = read_scores(find_score_files(paths, out))
    if scored.empty:
        return [], skipped
    scored = scored.assign(tuned_acc=fine_tuned_accuracy(scored, completed))
    sections = []
    keys = ["dataset", "fraction", "per_class", "image_size"]
    for index, (key, group) in enumerate(scored.groupby(keys, dropna=False, sort=True)):
        dataset, fraction, per_class, size = key
        subset = f"data.per_class={int(per_class)}" if pd.notna(per_class) else f"data.fraction={fraction:g}"
        stem = f"ranking-{index + 1}"
        title = f"Ranking of pretrained candidates by transferability scores: data={dataset}, {subset}, {size} px"
        group = group.sort_values(["logme", "candidate"], ascending=[False, True])
        tables = [Table(stem, _ranking_shown(group), _ranking_numbers(group), caption=(
            f"{len(group)} candidates scored from their frozen features of the training subset "
            f"({int(group['train_images'].max())} images), ranked by LogME (higher is better for every score). "
            "Fine-tuned acc: the mean test accuracy of the completed fine-tuned runs of the same candidate and data "
            "(– where none). docs/scores.md says what each score means and when not to trust it."))]
        figures = []
        paired = group.dropna(subset=["tuned_acc"])
        if len(paired) >= MIN_CANDIDATES:
            correlations = _correlation_table(paired)
            tables.append(Table(f"{stem}-correlation", *correlations, heading=": scores against fine-tuned accuracy",
                                caption=(f"Rank correlation of each score with the fine-tuned test accuracy over the "
                                         f"{len(paired)} candidates that have both, with 95 % percentile bootstrap "
                                         f"intervals over candidates ({BOOTSTRAP_RESAMPLES} resamples, seed "
                                         f"{BOOTSTRAP_SEED}); with few candidates the intervals are wide.")))
            figure = f"{stem}-scatter.png"
            _scatter(paired, out / figure, title)
            figures.append((figure, "Each score against the fine-tuned test accuracy, one point per candidate"))
        sections.append(Section(stem, title, tables, figures,
                                question="Which pretrained candidate will fine-tune best, judged before fine-tuning?"))
    return sections, skipped


def _value_text(value: float | None, percent: bool) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{100 * value:.1f}" if percent else f"{value:.4g}"


def _ranking_shown(group: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for rank, (_, row) in enumerate(group.iterrows(), start=1):
        rows.append({"rank": rank, "candidate": row["candidate"], "model": row["model"], "pretraining": row["source"],
                     **{label: _value_text(row[name], percent) for name, (label, percent) in SCORES.items()},
                     "scoring s": f"{row['score_seconds']:.2f}",
                     "fine-tuned acc (%)": _value_text(row["tuned_acc"], True)})
    return pd.DataFrame(rows)


def _ranking_numbers(group: pd.DataFrame) -> pd.DataFrame:
    columns = ["candidate", "model", "source", *SCORES, "score_seconds", "feature_seconds", "tuned_acc", "path"]
    return group[columns].reset_index(drop=True)


def _correlation_table(paired: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    shown, numbers = [], []
    accuracy = paired["tuned_acc"].to_numpy(float)
    for name, (label, _) in SCORES.items():
        values = paired[name].to_numpy(float)
        kept = ~np.isnan(values)
        if kept.sum() < MIN_CANDIDATES or _constant(values[kept]) or _constant(accuracy[kept]):
            continue
        result = rank_correlations(values[kept], accuracy[kept])
        numbers.append({"score": name, **result})
        shown.append({"score": label, "n": result["n"],
                      "Kendall's tau [95 % CI]": _with_interval(result, "tau"),
                      "Spearman's rho [95 % CI]": _with_interval(result, "rho")})
    return pd.DataFrame(shown), pd.DataFrame(numbers)


def _constant(values: np.ndarray) -> bool:
    """Whether every value is the same up to rounding (H-score is classes - 1 for every candidate with
    fewer images than feature dimensions, to the last few bits: no order to correlate)."""
    return bool(np.allclose(values, values[0], rtol=1e-9, atol=1e-12))


def _with_interval(result: dict[str, float], name: str) -> str:
    low, high = result[f"{name}_low"], result[f"{name}_high"]
    interval = "no interval" if math.isnan(low) else f"[{low:+.2f}, {high:+.2f}]"
    return f"{result[name]:+.2f} {interval}"


def _scatter(paired: pd.DataFrame, path: Path, title: str) -> None:
    from transferlab.report.figures import pyplot, save_png

    plt = pyplot()
    names = [name for name in SCORES if paired[name].notna().sum() >= 1]
    columns = min(3, len(names))
    rows = math.ceil(len(names) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.6 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        label, percent = SCORES[name]
        scale = 100 if percent else 1
        for _, row in paired.dropna(subset=[name]).iterrows():
            ax.scatter(scale * row[name], 100 * row["tuned_acc"], color="tab:blue")
            ax.annotate(str(row["candidate"])[:28], (scale * row[name], 100 * row["tuned_acc"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel(label)
        ax.set_ylabel("fine-tuned test acc (%)")
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    save_png(fig, path)

