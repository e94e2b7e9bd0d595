"""`transferlab rank` end to end on scikit-learn's bundled digits, written as an image folder: a
checkpoint pretrained on digits 0-4, the same architecture with random weights and one pretrained
on shuffled labels are scored on digits 5-9, the first ranked first by LogME; their fine-tuned
runs give the report its correlation table and scatter figure. And the command's one-line refusal
of a candidate whose weights are missing, while the others are scored."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from transferlab.composition import compose_config
from transferlab.rank import SCORE_FILE, candidate_folder, default_candidates
from transferlab.rank import main as rank_main
from transferlab.report import main as report_main

PER_CLASS = 50  # digits of each class in the target's folder
PRETRAIN_PER_CLASS = 170  # ... and in the pretraining folder (about all of digits 0-4)
SHUFFLED_PER_CLASS = 60  # ... and in the shuffled-label folder (few enough to memorise in 15 epochs)
SMALL = ["data=imagefolder", "data.image_size=32", "data.stored_size=32", "data.augment=none", "model=resnet18",
         "device=cpu",
         "progress=off", "train.threads=1", "train.batch_size=32", "train.eval_batch_size=128", "precision=fp32"]


def write_digits(root: Path, digits: range, shuffle_labels: bool = False, seed: int = 0,
                 per_class: int = PER_CLASS) -> Path:
    """``root/train/<digit>/<i>.png``: ``per_class`` of scikit-learn's 8x8 digits of each of ``digits``,
    upscaled to 32 px; with ``shuffle_labels`` each image goes to a class folder drawn at random."""
    from PIL import Image
    from sklearn.datasets import load_digits

    images, labels = load_digits(return_X_y=True)
    rng = np.random.default_rng(seed)
    chosen = np.concatenate([np.flatnonzero(labels == digit)[:per_class] for digit in digits])
    folders = rng.permutation(labels[chosen]) if shuffle_labels else labels[chosen]
    for index, (image, folder) in enumerate(zip(images[chosen], folders)):
        pixels = (image.reshape(8, 8) * (255 / 16)).astype(np.uint8)
        path = root / "train" / f"digit{folder}" / f"{index}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels, "L").resize((32, 32), Image.BILINEAR).convert("RGB").save(path)
    return root


def train(tmp_path: Path, name: str, *overrides: str) -> dict:
    from transferlab.run import run_training

    config = compose_config([*SMALL, f"data.cache_dir={tmp_path / 'cache'}", *overrides])
    record = run_training(config, tmp_path / "outputs" / name)
    assert record["status"] == "completed", record.get("error")
    return record


@pytest.mark.slow
def test_digits_pretraining_ranks_first_by_logme_and_the_report_correlates_fine_tuning(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    source = write_digits(tmp_path / "digits0-4", range(5), per_class=PRETRAIN_PER_CLASS)
    shuffled = write_digits(tmp_path / "shuffled0-4", range(5), shuffle_labels=True, per_class=SHUFFLED_PER_CLASS)
    target = write_digits(tmp_path / "digits5-9", range(5, 10))
    pretrain = ["model.pretrained=false", "save_model=true", "train.epochs=3", "optim=adamw", "data.augment=pad_crop"]
    train(tmp_path, "pretrain-digits", f"data.root={source}", *pretrain)
    # Shuffled labels trained until they are largely memorised (about 85 % of them): features worse than random.
    train(tmp_path, "pretrain-shuffled", f"data.root={shuffled}", *pretrain, "train.epochs=15", "data.augment=none")
    candidates = {
        "pretrained": f"model.weights={tmp_path}/outputs/pretrain-digits/model.pt",
        "random": "model.pretrained=false",
        "shuffled": f"model.weights={tmp_path}/outputs/pretrain-shuffled/model.pt",
    }
    data = [f"data.root={target}", f"data.cache_dir={tmp_path / 'cache'}"]
    code = rank_main([arg for candidate in candidates.values() for arg in ("--candidate", candidate)]
                     + ["--out", str(tmp_path / "outputs" / "scores"), *SMALL, *data])
    assert code == 0, capsys.readouterr().err
    records = {name: json.loads(next((tmp_path / "outputs" / "scores").glob(
        f"*/{candidate_folder(candidate)}/{SCORE_FILE}")).read_text()) for name, candidate in candidates.items()}
    logme = {name: record["scores"]["logme"] for name, record in records.items()}
    # Pretraining on the other digits first, random weights next, memorised shuffled labels last. (After
    # only 3 epochs on shuffled labels, about 25 % of them learnt, LogME put them above random weights.)
    assert logme["pretrained"] > logme["random"] > logme["shuffled"], logme
    assert all(record["kind"] == "score" and record["score_seconds"]["logme"] >= 0 for record in records.values())
    # a weights file keeps its source classifier (digits 0-4): NCE and LEEP; random weights have none
    assert records["pretrained"]["source_classes"] == 5 and records["pretrained"]["scores"]["leep"] < 0
    assert records["random"]["scores"]["nce"] is None

    for name, candidate in candidates.items():  # fine-tune each candidate on digits 5-9
        train(tmp_path, f"finetune-{name}", *data, "train.epochs=2", "optim=adamw", "optim.lr=3e-4", *candidate.split())
    assert report_main(["outputs", "--out", "report"]) == 0
    page = (tmp_path / "report" / "report.md").read_text()
    assert "Ranking of pretrained candidates by transferability scores" in page
    assert "Kendall's tau [95 % CI]" in page and "ranking-1-scatter.png" in page
    assert (tmp_path / "report" / "ranking-1-scatter.png").stat().st_size > 0
    correlation = {row["score"]: row for row in _csv(tmp_path / "report" / "ranking-1-correlation.csv")}
    assert correlation["logme"]["n"] == "3"
    assert -1 <= float(correlation["logme"]["tau"]) <= 1


def _csv(path: Path) -> list[dict[str, str]]:
    import csv

    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_a_candidate_whose_weights_are_missing_is_one_line_and_the_others_are_scored(tmp_path, capsys):
    target = write_digits(tmp_path / "digits5-9", range(5, 10))
    code = rank_main(["--candidate", f"model.weights={tmp_path}/missing.pt", "--candidate", "model.pretrained=false",
                      "--out", str(tmp_path / "scores"), *SMALL, f"data.root={target}",
                      f"data.cache_dir={tmp_path / 'cache'}"])
    captured = capsys.readouterr()
    assert code == 1
    refusals = [line for line in captured.err.splitlines() if "not scored" in line]
    assert len(refusals) == 1 and "missing.pt" in refusals[0] and "no such file" in refusals[0]
    assert len(list((tmp_path / "scores").glob(f"*/*/{SCORE_FILE}"))) == 1
    assert "1 of 2 candidates scored" in captured.out


def test_the_default_candidates_are_the_sources_studys_arms():
    assert default_candidates() == ["+source=torchvision", "+source=timm_a1", "+source=timm_swsl", "+source=scratch"]
    config = compose_config(["+source=timm_a1"])
    assert config.model.name == "timm/resnet50.a1_in1k" and config.model.pretrained


def test_rank_refuses_a_validation_split_of_nothing_before_loading_anything(tmp_path, capsys):
    assert rank_main(["--candidate", "model.pretrained=false", "--out", str(tmp_path / "scores"), *SMALL,
                      f"data.root={tmp_path}", "data.val_fraction=0"]) == 1
    err = capsys.readouterr().err
    assert "data.val_fraction=0 holds out no validation split" in err and "not scored" in err
    assert not (tmp_path / "scores").exists()


@pytest.mark.slow
def test_the_benchmark_prints_scoring_and_fine_tuning_times_and_their_ratio(tmp_path):
    import subprocess
    import sys

    script = Path(__file__).parents[1] / "scripts" / "benchmark_scores.py"
    result = subprocess.run([sys.executable, str(script), "--candidates", "2", "--images", "40", "--test-images", "20",
                             "--epochs", "1", "--threads", "1", "--out", str(tmp_path / "figures.json")],
                            capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    figures = json.loads((tmp_path / "figures.json").read_text())
    assert figures["candidates"] == 2 and figures["scoring_seconds"] > 0 and figures["fine_tuning_seconds"] > 0
    # the ratio printed to one decimal
    assert figures["ratio"] == pytest.approx(figures["fine_tuning_seconds"] / figures["scoring_seconds"], abs=0.051)
    assert f"fine-tuning takes {figures['ratio']}x the scoring time" in result.stdout


@pytest.mark.slow
def test_rank_and_a_cached_probe_run_of_the_same_candidate_share_its_features_whichever_runs_first(tmp_path):
    from transferlab.candidates import score_config
    from transferlab.run import run_training

    common = ["data=synthetic", "data.image_size=32", "data.num_train=120", "data.num_test=40", "data.fraction=1.0",
              "data.val_fraction=0.2", "model=resnet18", "model.pretrained=false", "device=cpu", "progress=off",
              "precision=fp32", "train.threads=1", f"data.cache_dir={tmp_path / 'cache'}"]
    probe_run = [*common, "freeze=last_only", "freeze.cached_features=true", "train.epochs=1"]
    record = score_config(compose_config(common))  # rank first: the training and validation splits, no test split
    assert record["feature_splits_built"] == ["train", "val"] and set(record["feature_cache"]) == {"train", "val"}
    run = run_training(compose_config(probe_run), tmp_path / "run")
    assert run["status"] == "completed" and run["feature_splits_built"] == ["test"]  # only what rank left out
    assert {split: run["feature_cache"][split] for split in ("train", "val")} == record["feature_cache"]
    reread = score_config(compose_config(common))
    assert reread["feature_cache"] == record["feature_cache"] and reread["feature_splits_built"] == []
    # A run first (in another cache): rank extracts nothing. The key says a random initialisation is its
    # seed's: extracted by the run, after the process drew other random numbers, its features (and so the
    # scores) are those rank extracted itself.
    torch.rand(1000)
    fresh = [*common[:-1], f"data.cache_dir={tmp_path / 'fresh'}"]
    first = run_training(compose_config([*fresh, *probe_run[len(common):]]), tmp_path / "first")
    assert first["feature_splits_built"] == ["train", "test", "val"]
    after = score_config(compose_config(fresh))
    assert after["feature_splits_built"] == [] and after["feature_cache"] == {
        split: first["feature_cache"][split] for split in ("train", "val")}
    assert {k: v for k, v in after["scores"].items() if v is not None} == pytest.approx(
        {k: v for k, v in record["scores"].items() if v is not None}, rel=1e-6)
