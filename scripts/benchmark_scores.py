"""Transferability scores against fine-tuning (docs/scores.md): the time `transferlab rank` takes to
score N candidates, against fine-tuning each of them with the study's recipe (10 epochs, SGD, nothing
frozen, no validation split, the test set scored at the end), in this process. What a process pays
once is paid before either side: the imports, Hydra's first composition, torch's first optimizer (it
imports torch._dynamo, about 1 s) and a first training step and evaluation pass of a throwaway
ResNet18 (the convolution kernels' setup for those shapes, about 0.3 s at 64 px). Both see the same training subset of --images images: rank holds 20 % of it out for
its linear probe's validation split (its default), fine-tuning trains on all of it, as the study does
(--fine-tune-val-fraction 0.2 holds the same 20 % out and scores it every epoch).

The candidates are ResNet18 state_dicts the script saves (ImageNet-shaped heads, random weights of
different seeds: no download), so each keeps a 1000-class source classifier and gets NCE and LEEP
too; the data is generated (data=synthetic). Each side has a cache dir of its own, empty at the
start (neither finds the other's weights digests), so scoring's time includes the backbone's pass over the training and validation images (no score needs the test set). It prints each candidate's scoring seconds (and of
those, the linear probe's, the slowest score), each fine-tuning run's seconds, and the ratios:
fine-tuning / scoring with every score, and with LogME, H-score and kNN alone.

    python scripts/benchmark_scores.py                          # CPU: 3 candidates, 32 px, 400 images
    python scripts/benchmark_scores.py --device cuda --image-size 224 --images 5000 --candidates 4
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from transferlab.composition import compose_config
from transferlab.models import build_model
from transferlab.candidates import score_config
from transferlab.rank import DEFAULT_VAL_FRACTION
from transferlab.run import run_training

FEATURE_ONLY = ("logme", "h_score", "knn_accuracy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidates", type=int, default=3)
    parser.add_argument("--images", type=int, default=400, help="training images generated")
    parser.add_argument("--test-images", type=int, default=100)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=10, help="fine-tuning epochs (the study's recipe: 10)")
    parser.add_argument("--fine-tune-val-fraction", type=float, default=0.0,
                        help="the fine-tuning runs' data.val_fraction (the study's recipe: 0)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--threads", type=int, default=None, help="train.threads (1 on a busy shared CPU)")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        common = ["data=synthetic", f"data.num_train={args.images}", f"data.num_test={args.test_images}",
                  "data.fraction=1.0", f"data.image_size={args.image_size}",
                  "model=resnet18", f"device={args.device}",
                  f"precision={args.precision}", "progress=off", "resume=false",
                  *([f"train.threads={args.threads}"] if args.threads else [])]
        weights = []
        for seed in range(args.candidates):
            torch.manual_seed(seed)
            weights.append(folder / f"candidate{seed}.pt")
            torch.save(build_model("resnet18", False, None, 1000).state_dict(), weights[-1])
        _warm_up(compose_config(common))  # what the process pays once, before either side
        scoring, probe, feature_only = [], [], []
        for path in weights:
            start = time.perf_counter()
            record = score_config(compose_config([*common, f"data.val_fraction={DEFAULT_VAL_FRACTION}", f"data.cache_dir={folder / 'scores'}",
                                                  f"model.weights={path}"]))
            scoring.append(time.perf_counter() - start)
            probe.append(record["score_seconds"]["probe_val_accuracy"])
            feature_only.append(scoring[-1] - sum(v for k, v in record["score_seconds"].items() if k not in FEATURE_ONLY))
            print(f"scored {path.name} in {scoring[-1]:.1f} s (features {record['feature_seconds']:.1f} s, probe "
                  f"{probe[-1]:.1f} s): " + ", ".join(f"{k} {v:.4g}" for k, v in record["scores"].items() if v is not None))
        tuning = []
        for index, path in enumerate(weights):
            start = time.perf_counter()
            record = run_training(compose_config([*common, f"data.val_fraction={args.fine_tune_val_fraction}",
                                                  f"data.cache_dir={folder / 'runs'}",
                                                  f"model.weights={path}", "freeze=none", "optim=sgd",
                                                  f"train.epochs={args.epochs}"]), folder / f"run{index}")
            tuning.append(time.perf_counter() - start)
            print(f"fine-tuned {path.name} ({args.epochs} epochs) in {tuning[-1]:.1f} s: test acc {record['test_acc']:.3f}")
    totals = {name: round(sum(values), 2) for name, values in (
        ("scoring_seconds", scoring), ("probe_seconds", probe), ("feature_only_seconds", feature_only),
        ("fine_tuning_seconds", tuning))}
    figures = {
        "candidates": args.candidates, "images": args.images, "test_images": args.test_images,
        "image_size": args.image_size, "epochs": args.epochs, "fine_tune_val_fraction": args.fine_tune_val_fraction,
        "device": args.device, "host": platform.node(), "torch": torch.__version__, **totals,
        "ratio": round(totals["fine_tuning_seconds"] / totals["scoring_seconds"], 1),
        "ratio_feature_only": round(totals["fine_tuning_seconds"] / totals["feature_only_seconds"], 1),
    }
    print(f"\n{args.candidates} candidates: scoring {figures['scoring_seconds']} s (of which the linear probe "
          f"{figures['probe_seconds']} s), fine-tuning {figures['fine_tuning_seconds']} s: fine-tuning takes "
          f"{figures['ratio']}x the scoring time with every score, {figures['ratio_feature_only']}x with LogME, "
          "H-score and kNN alone")
    if args.out is not None:
        args.out.write_text(json.dumps(figures, indent=2) + "\n")


def _warm_up(config) -> None:
    """One training step and one evaluation batch of a throwaway ResNet18 at the run's sizes, with
    torch's first optimizer: the first-time costs of the process, which the side run first would pay."""
    device = torch.device(config.device)
    model = build_model("resnet18", False, None, 10).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.optim.lr, momentum=0.9)
    size = config.data.image_size
    images = torch.randn(config.train.batch_size, 3, size, size, device=device)
    torch.nn.functional.cross_entropy(model(images), torch.zeros(len(images), dtype=torch.long, device=device)).backward()
    optimizer.step()
    with torch.inference_mode():
        model.eval()(torch.randn(config.train.eval_batch_size, 3, size, size, device=device))


if __name__ == "__main__":
    main()
