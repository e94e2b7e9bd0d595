"""Linear probes: the probe in the training loop against the probe on cached features (docs/probes.md),
and what running a frozen prefix without autograd would save.

1. Whole runs of ``freeze=last_only`` through ``transferlab.run.run_training`` in this process (the
   imports paid once, before the first), on generated data (no download) from a ResNet18 state_dict
   the script saves (so the cache can be reused by a run with another seed):

   - in the loop: every epoch sends every training and test image through the frozen backbone;
   - cached, cold: ``freeze.cached_features=true`` with an empty cache folder (one backbone pass
     over the training and test images, then the head trains on the features);
   - cached, warm: the same with the cache in place and another seed (no backbone pass at all);
   - L-BFGS, cold: ``freeze.probe=lbfgs`` with ``data.val_fraction`` held out for its L2 sweep.

   It prints each run's wall seconds and the speed-ups of the cached runs over the loop.

2. A frozen prefix (``freeze.modules=[conv1,bn1,layer1,layer2]``: the stem and the first two
   stages, the only kind of frozen block that nothing trainable comes before): training steps with
   the prefix run as usual against run under ``torch.no_grad()``, with the bytes autograd saves for
   the backward pass (and, on CUDA, the peak memory) and the median step time of each (in the
   order A B B A, repeated, so that neither gains from coming second).

    python scripts/benchmark_probe.py                 # CPU: ResNet18, 64 px, 2,000 images, 10 epochs
    python scripts/benchmark_probe.py --device cuda --image-size 224 --images 25000 --precision bf16

Figures are printed and saved as JSON (--out).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import nn

from transferlab.composition import compose_config
from transferlab.models import apply_freeze, build_model, trainable_parameter_names
from transferlab.run import run_training

PREFIX = ["conv1", "bn1", "layer1", "layer2"]  # ResNet18's stem and first two stages


def whole_runs(args: argparse.Namespace, folder: Path) -> dict:
    weights = folder / "resnet18.pt"
    torch.manual_seed(0)
    torch.save(build_model("resnet18", False, None, 1000).state_dict(), weights)  # ImageNet-shaped, random
    common = [
        "data=synthetic", f"data.num_train={args.images}", f"data.num_test={args.test_images}", "data.fraction=1.0",
        f"data.image_size={args.image_size}", "data.augment=none", f"data.cache_dir={folder / 'cache'}",
        "model=resnet18", f"model.weights={weights}", "freeze=last_only", f"train.epochs={args.epochs}",
        f"train.batch_size={args.batch_size}", f"device={args.device}", f"precision={args.precision}",
        "progress=off", "resume=false",
    ]
    variants = {
        "in the loop": [],
        "cached, cold": ["freeze.cached_features=true"],
        "cached, warm": ["freeze.cached_features=true", "seed=43"],
        "L-BFGS, cold": ["freeze.cached_features=true", "freeze.probe=lbfgs", "data.val_fraction=0.1"],
    }
    results = {}
    for name, overrides in variants.items():
        config = compose_config(common + overrides)
        start = time.perf_counter()
        record = run_training(config, folder / name.replace(" ", "_").replace(",", ""), common + overrides)
        seconds = time.perf_counter() - start
        record = record.to_dict() if hasattr(record, "to_dict") else record
        if record["status"] != "completed":
            raise SystemExit(f"{name}: the run {record['status']}: {record.get('error')}")
        results[name] = {"wall_seconds": round(seconds, 2), "test_acc": record["test_acc"],
                         "probe": record.get("probe"), "feature_cache": record.get("feature_cache"),
                         "feature_seconds": record.get("feature_seconds")}
        print(f"{name:<14} {seconds:8.1f} s  test acc {100 * record['test_acc']:.1f} %  "
              f"({record.get('feature_cache') or 'no cache'})", flush=True)
    loop = results["in the loop"]["wall_seconds"]
    for name in ("cached, cold", "cached, warm", "L-BFGS, cold"):
        results[name]["speedup"] = round(loop / results[name]["wall_seconds"], 1)
        print(f"{name}: {results[name]['speedup']}x faster than in the loop")
    return results


def frozen_prefix(args: argparse.Namespace) -> dict:
    """Training steps of ResNet18 with PREFIX frozen, the prefix run as usual and under no_grad."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model("resnet18", False, None, 10)
    apply_freeze(model, trainable_parameter_names(model, PREFIX))
    model.to(device).train()
    prefix = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool, model.layer1, model.layer2)
    rest = nn.Sequential(model.layer3, model.layer4, model.avgpool, nn.Flatten(), model.fc)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    images = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
    labels = torch.randint(0, 10, (args.batch_size,), device=device)
    amp = dict(device_type=device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16")

    def plain() -> torch.Tensor:
        return model(images)

    def without_graph() -> torch.Tensor:
        with torch.no_grad():
            features = prefix(images)
        return rest(features)

    def step(forward) -> tuple[int, float]:
        saved = [0]

        def pack(tensor):
            saved[0] += tensor.numel() * tensor.element_size()
            return tensor

        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor), torch.autocast(**amp):
            loss = nn.functional.cross_entropy(forward(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return saved[0], time.perf_counter() - start

    variants = {"as usual": plain, "under no_grad": without_graph}
    figures = {name: {"saved_bytes": 0, "seconds": []} for name in variants}
    # One warm-up step of each, then A B B A B A A B ...: an order that favours neither (the step
    # after another variant's runs slower or faster on a busy CPU).
    order = list(variants) + [name for _ in range(args.steps) for name in (*variants, *reversed(variants))]
    for index, name in enumerate(order):
        saved, seconds = step(variants[name])
        figures[name]["saved_bytes"] = saved
        if index >= len(variants):
            figures[name]["seconds"].append(seconds)
        if device.type == "cuda":
            figures[name]["peak_bytes"] = torch.cuda.max_memory_allocated()
    for name, figure in figures.items():
        figure["median_step_seconds"] = round(statistics.median(figure.pop("seconds")), 4)
        peak = f", peak {figure['peak_bytes'] / 1e6:.0f} MB" if "peak_bytes" in figure else ""
        print(f"frozen prefix {name:<14} saved for backward {figure['saved_bytes'] / 1e6:7.1f} MB{peak}, "
              f"median step {1000 * figure['median_step_seconds']:.0f} ms")
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--images", type=int, default=2000, help="training images")
    parser.add_argument("--test-images", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4,
                        help="frozen prefix: pairs of timed steps of each variant (after one warm-up step each)")
    parser.add_argument("--skip-runs", action="store_true", help="only the frozen-prefix measurement")
    parser.add_argument("--out", type=Path, default=Path("outputs/benchmark/probe.json"))
    args = parser.parse_args(argv)
    machine = (torch.cuda.get_device_name() if args.device.startswith("cuda")
               else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads")
    print(f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {machine}, torch {torch.__version__}, "
          f"python {platform.python_version()}; command: {' '.join(sys.argv)}", flush=True)
    results = {"machine": machine, "torch": torch.__version__, "args": {k: str(v) for k, v in vars(args).items()},
               "date": datetime.now(timezone.utc).isoformat(timespec="minutes")}
    with tempfile.TemporaryDirectory() as folder:
        if not args.skip_runs:
            results["runs"] = whole_runs(args, Path(folder))
    results["frozen_prefix"] = frozen_prefix(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
