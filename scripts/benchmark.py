"""Training throughput of the device pipeline against the reference pipeline, per model.

Both pipelines are measured in the same process, interleaved (device, reference, device, ...), on
generated CIFAR-shaped data (no download), and the median of --repeats passes is reported, with
the ratio device / reference and, on CUDA, the peak GPU memory of each. Optionally it also times
one whole protocol-sized run, or the whole 12-run study, end to end (evaluation included).

    python scripts/benchmark.py --mode cpu     # 64x64, a few hundred images: for a laptop or CI box
    python scripts/benchmark.py --mode gpu     # 224x224, batch 64, bf16: the protocol's setting
    python scripts/benchmark.py --mode gpu --whole-run --study --compile
    python scripts/benchmark.py --mode gpu --levers --compile    # each speed lever against the default
    python scripts/benchmark.py --mode tiny --whole-run --study  # every part in seconds on a CPU (a dry run)

--levers times the device pipeline's training step with one setting changed at a time (memory
format, optimizer implementation, torch.compile mode, which in reduce-overhead replays CUDA
graphs) and evaluation at several batch sizes, each against the default, interleaved like the rest.

Figures are printed as a table and saved as JSON (--out), written again after each model, run and
part, so that a benchmark stopped by a time limit keeps what it measured. Pretrained weights do not
change speed, so every model starts from random weights here.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import torchvision

from transferlab.config import validate
from transferlab.data import PROTOCOL_TRANSFORMS, Transforms, make_loader, make_synthetic
from transferlab.engine import (
    StepSettings, configure_determinism, evaluate, make_optimizer, select_amp_dtype, select_device, train_one_epoch,
)
from transferlab.models import build_model
from transferlab.run import run_training

MODES = {
    # image size, training images per pass, batch size, precision, data-loader workers of the reference
    "cpu": dict(image_size=64, images=256, batch_size=64, precision="fp32", device="cpu"),
    "gpu": dict(image_size=224, images=6400, batch_size=64, precision="bf16", device="cuda"),
    # every part in seconds, to check that the script works (scripts/gpu-check.sh --dry-run): no figure
    "tiny": dict(image_size=64, images=64, batch_size=32, precision="fp32", device="cpu"),
}
# The whole run and the study: training and test images, epochs (None: the recipe's 10).
RUN_SIZES = {"cpu": (1024, 256, 1), "gpu": (50_000, 10_000, None), "tiny": (100, 20, 1)}


@dataclasses.dataclass(frozen=True)
class Variant:
    """How the training step runs; the default is what `transferlab train` does."""
    pipeline: str = "device"
    channels_last: bool | None = None  # None: as transferlab does (on CUDA only)
    optimizer: str = "auto"  # optim.implementation
    compile_mode: str | None = None  # None: eager
    transforms: Transforms = PROTOCOL_TRANSFORMS

    def label(self) -> str:
        changed = [f"{f.name}={getattr(self, f.name)}" for f in dataclasses.fields(self)
                   if getattr(self, f.name) != f.default]
        return ",".join(changed) or "default"


def measure(model_name: str, data, settings: dict, device: torch.device, workers: int,
            variant: Variant = Variant()) -> dict:
    """One timed training pass over ``data`` after a short warm-up; images/s and peak memory."""
    amp_dtype = select_amp_dtype(settings["precision"], device)
    channels_last = device.type == "cuda" if variant.channels_last is None else variant.channels_last
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = build_model(model_name, pretrained=False).to(device, memory_format=memory_format)
    forward = torch.compile(model, mode=variant.compile_mode) if variant.compile_mode else model
    optimizer = make_optimizer("sgd", list(model.parameters()), 0.001, 0.9, 0.0, (0.9, 0.999), variant.optimizer)
    loader = make_loader(data, variant.pipeline, settings["batch_size"], settings["image_size"], train=True, seed=0,
                         device=device, num_workers=workers, memory_format=memory_format,
                         transforms=variant.transforms)
    warmup = make_loader(data.subset(torch.arange(min(len(data), 3 * settings["batch_size"]))), variant.pipeline,
                         settings["batch_size"], settings["image_size"], train=True, seed=0, device=device,
                         num_workers=workers, memory_format=memory_format, transforms=variant.transforms)
    train_one_epoch(forward, torch.nn.CrossEntropyLoss(), warmup.epoch(0), optimizer, device, StepSettings(amp_dtype))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    result = train_one_epoch(forward, torch.nn.CrossEntropyLoss(), loader.epoch(1), optimizer, device,
                             StepSettings(amp_dtype))
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    del model, forward, optimizer
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"images_per_second": result.images_per_second, "seconds": result.seconds, "peak_memory_mib": peak}


def measure_evaluation(model_name: str, data, settings: dict, device: torch.device, batch_size: int) -> dict:
    """One timed evaluation pass over ``data`` at ``batch_size`` after a warm-up."""
    amp_dtype = select_amp_dtype(settings["precision"], device)
    memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    model = build_model(model_name, pretrained=False).to(device, memory_format=memory_format)
    loader = make_loader(data, "device", batch_size, settings["image_size"], train=False, seed=0, device=device,
                         num_workers=0, memory_format=memory_format)
    evaluate(model, loader.epoch(0), device, amp_dtype)
    result = evaluate(model, loader.epoch(1), device, amp_dtype)
    del model
    return {"images_per_second": result.images_per_second, "seconds": result.seconds, "peak_memory_mib": None}


def lever_table(models: list[str], settings: dict, device: torch.device, repeats: int, compile_modes: list[str],
                workers: int, eval_batch_sizes: list[int]) -> list[dict]:
    """Each lever against the default, per model: training images/s of the device pipeline with one
    setting changed, and evaluation images/s by batch size (the first is the default's)."""
    default = Variant()
    levers = [default, Variant(channels_last=device.type != "cuda"),
              *(Variant(optimizer=name) for name in ("for_loop", "foreach", "fused")),
              *(Variant(compile_mode=mode) for mode in compile_modes)]
    data, _ = make_synthetic(settings["images"], 1, seed=0)
    rows = []
    for model_name in models:
        samples: dict[str, list[dict]] = {}
        for _ in range(repeats):
            for variant in levers:
                samples.setdefault(f"train:{variant.label()}", []).append(
                    measure(model_name, data, settings, device, workers, variant))
            for batch_size in eval_batch_sizes:
                samples.setdefault(f"eval:batch={batch_size}", []).append(
                    measure_evaluation(model_name, data, settings, device, batch_size))
        baselines = {"train": statistics.median(r["images_per_second"] for r in samples[f"train:{default.label()}"]),
                     "eval": statistics.median(r["images_per_second"]
                                               for r in samples[f"eval:batch={eval_batch_sizes[0]}"])}
        for key, runs in samples.items():
            kind, _, lever = key.partition(":")
            median = statistics.median(r["images_per_second"] for r in runs)
            row = {"model": model_name, "kind": kind, "lever": lever, "images_per_second": median,
                   "all_images_per_second": [r["images_per_second"] for r in runs],
                   "all_seconds": [r["seconds"] for r in runs], "ratio_over_default": median / baselines[kind]}
            rows.append(row)
            print(f"{model_name:<9} {kind:<6} {lever:<40} {median:>12,.0f} {row['ratio_over_default']:>7.2f}x",
                  flush=True)
    return rows


def pipeline_table(models: list[str], settings: dict, device: torch.device, repeats: int, compiled: bool,
                   workers: int) -> list[dict]:
    """Per model, the device and reference pipelines' figures and their ratio; with ``compiled``, the
    compiled device pipeline's figures alone (main measures those after every model's eager ones, so
    that slow compilations cannot keep a model's eager figures from being measured)."""
    data, _ = make_synthetic(settings["images"], 1, seed=0)
    variants = [("device", True)] if compiled else [("device", False), ("reference", False)]
    rows = []
    for model_name in models:
        samples = {variant: [] for variant in variants}
        for _ in range(repeats):  # interleaved, so drifts in machine load hit every variant alike
            for pipeline, compile_model in variants:
                variant = Variant(pipeline=pipeline, compile_mode="default" if compile_model else None)
                samples[(pipeline, compile_model)].append(measure(model_name, data, settings, device, workers,
                                                                  variant))
        row = {"model": model_name}
        for (pipeline, compile_model), runs in samples.items():
            label = pipeline + ("+compile" if compile_model else "")
            row[f"{label}_images_per_second"] = statistics.median(r["images_per_second"] for r in runs)
            row[f"{label}_all_images_per_second"] = [r["images_per_second"] for r in runs]
            row[f"{label}_all_seconds"] = [r["seconds"] for r in runs]  # images per pass / each: its img/s
            peaks = [r["peak_memory_mib"] for r in runs if r["peak_memory_mib"] is not None]
            row[f"{label}_peak_memory_mib"] = max(peaks) if peaks else None
        if not compiled:
            row["ratio_device_over_reference"] = row["device_images_per_second"] / row["reference_images_per_second"]
        rows.append(row)
        print_row(row)
    return rows


def print_row(row: dict) -> None:
    def memory(key: str) -> str:
        return "-" if row[key] is None else f"{row[key]:,.0f}"

    if "device+compile_images_per_second" in row:
        print(f"{row['model']:<9} {row['device+compile_images_per_second']:>14,.0f} "
              f"{memory('device+compile_peak_memory_mib'):>10}", flush=True)
        return
    print(f"{row['model']:<9} {row['device_images_per_second']:>12,.0f} {row['reference_images_per_second']:>12,.0f} "
          f"{row['ratio_device_over_reference']:>7.2f}x {memory('device_peak_memory_mib'):>10} "
          f"{memory('reference_peak_memory_mib'):>10}", flush=True)


def timed_runs(configs: list[dict], folder: Path, each_run=lambda seconds: None) -> float:
    """Seconds to train and evaluate every run of ``configs`` through transferlab's own run_training;
    ``each_run`` hears each run's seconds as it ends."""
    start = time.perf_counter()
    for index, overrides in enumerate(configs):
        run_start = time.perf_counter()
        record = run_training(validate(overrides), folder / f"run{index}")
        if record["status"] != "completed":
            raise SystemExit(f"benchmark run failed: {record.get('error')}")
        each_run(time.perf_counter() - run_start)
    return time.perf_counter() - start


def checkpoint_costs(base: dict, model_name: str, epochs: int, folder: Path) -> dict:
    """What checkpoints cost a run of ``epochs`` short epochs: the seconds the run itself recorded
    (``checkpoint_seconds``: host copies and waits for the background writer), against the seconds
    of one synchronous save of the same state, as the loop did at every epoch before."""
    from transferlab.checkpoint import checkpoint_state, save_atomically, tensor_bytes

    config = {**base, "model": {"name": model_name, "pretrained": False}, "train": {**base["train"], "epochs": epochs}}
    start = time.perf_counter()
    record = run_training(validate(config), folder / "checkpoints")
    wall = time.perf_counter() - start
    if record["status"] != "completed":
        raise SystemExit(f"benchmark run failed: {record.get('error')}")
    model = build_model(model_name, pretrained=False)
    optimizer = make_optimizer("sgd", list(model.parameters()), 0.001, 0.9, 0.0, (0.9, 0.999))
    model(torch.zeros(2, 3, 64, 64)).sum().backward()
    optimizer.step()  # momentum buffers exist from the first step on
    saves = []
    for _ in range(3):
        start = time.perf_counter()
        state = checkpoint_state(model, optimizer, None, 1, record["history"], record["config"])
        save_atomically(state, folder / "synchronous.pt")
        saves.append(time.perf_counter() - start)
    return {"model": model_name, "epochs": epochs, "checkpoint_bytes": tensor_bytes(state),
            "run_seconds": wall, "train_seconds": sum(e["epoch_seconds"] for e in record["history"]),
            "eval_seconds": sum(e["eval_seconds"] for e in record["history"]),
            "checkpoint_seconds": record["checkpoint_seconds"],
            "synchronous_save_seconds": statistics.median(saves),
            "synchronous_saves_before": epochs}


def study_configs(base: dict) -> list[dict]:
    """The study's 12 runs (docs/study.md), from random weights."""
    def run(model: str, fraction: float, freeze: str = "none") -> dict:
        return {**base, "model": {"name": model, "pretrained": False},
                "data": {**base["data"], "fraction": fraction}, "freeze": {"name": freeze}}

    part_a = [run("alexnet", f) for f in (0.1, 0.2, 0.5) for _ in ("pretrained", "scratch")]
    part_b = [run(m, 0.5) for m in ("resnet18", "vgg16")]
    part_c = [run("resnet18", 0.5, f) for f in ("none", "early", "middle", "last_only")]
    return part_a + part_b + part_c


def save_results(results: dict, path: Path) -> None:
    """The figures so far, written whole (a temporary file renamed over the last one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(results, indent=2) + "\n")
    temporary.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=sorted(MODES), default="gpu" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", nargs="+", default=["alexnet", "resnet18", "vgg16"],
                        choices=["alexnet", "resnet18", "vgg16"])
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per model and pipeline (median)")
    parser.add_argument("--images", type=int, help="training images per pass (default: the mode's)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the reference pipeline")
    parser.add_argument("--compile", action="store_true", help="also measure the device pipeline with torch.compile")
    parser.add_argument("--whole-run", action="store_true",
                        help="time one protocol run end to end: ResNet18, 25,000 images, 10 epochs, 10,000 test "
                             "images (cpu mode: 512 images, 1 epoch; tiny: 50 images)")
    parser.add_argument("--study", action="store_true", help="time the whole 12-run study end to end")
    parser.add_argument("--no-pipelines", dest="pipelines", action="store_false",
                        help="leave out the pipelines' comparison (to run --levers, --whole-run or --study alone)")
    parser.add_argument("--levers", action="store_true",
                        help="also time each speed lever against the default (with --compile: torch.compile's modes)")
    parser.add_argument("--checkpoints", type=int, metavar="EPOCHS",
                        help="time what checkpoints cost one VGG16 run of EPOCHS short epochs (--images training "
                             "images each), against a synchronous save per epoch as before")
    parser.add_argument("--eval-batch-sizes", type=int, nargs="+", default=[128, 256, 512],
                        help="evaluation batch sizes that --levers times (the first is the default's)")
    parser.add_argument("--out", type=Path, default=Path("outputs/benchmark"), help="folder for the JSON")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats={args.repeats} is not allowed; it must be >= 1")
    if min(args.eval_batch_sizes) < 1:
        parser.error(f"--eval-batch-sizes={args.eval_batch_sizes} is not allowed; each must be >= 1")

    settings = dict(MODES[args.mode], **({"images": args.images} if args.images else {}))
    device = select_device(settings["device"])
    configure_determinism(0, deterministic=False, device=device)
    environment = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "cpu_threads": torch.get_num_threads(), "python": platform.python_version(), "torch": torch.__version__,
        "torchvision": torchvision.__version__, "cuda": torch.version.cuda, "command": " ".join(sys.argv),
    }
    print(f"transferlab benchmark, {args.mode} mode: {settings['image_size']}x{settings['image_size']}, batch "
          f"{settings['batch_size']}, {settings['precision']}, {settings['images']} images per pass, median of "
          f"{args.repeats}, on {environment['device']} (torch {torch.__version__})")
    out = args.out / f"benchmark-{args.mode}.json"
    results = {"environment": environment, "settings": settings, "pipelines": []}
    if args.pipelines:
        print(f"{'model':<9} {'device img/s':>12} {'ref img/s':>12} {'ratio':>8} {'dev MiB':>10} {'ref MiB':>10}")
        for model_name in args.models:
            results["pipelines"] += pipeline_table([model_name], settings, device, args.repeats, False, args.workers)
            save_results(results, out)
    if args.levers:
        compile_modes = ["default", "reduce-overhead", "max-autotune-no-cudagraphs"] if args.compile else []
        if device.type != "cuda":
            compile_modes = [mode for mode in compile_modes if mode == "default"]  # the others need CUDA
        print(f"\n{'model':<9} {'kind':<6} {'lever (one setting changed)':<40} {'img/s':>12} {'ratio':>8}")
        results["levers"] = []
        for model_name in args.models:
            results["levers"] += lever_table([model_name], settings, device, args.repeats, compile_modes,
                                             args.workers, args.eval_batch_sizes)
            save_results(results, out)

    base = {"data": {"name": "synthetic", "image_size": settings["image_size"], "num_workers": args.workers},
            "device": settings["device"], "precision": settings["precision"], "progress": "off",
            "train": {"batch_size": settings["batch_size"]}}
    num_train, num_test, epochs = RUN_SIZES[args.mode]
    base["data"].update(num_train=num_train, num_test=num_test)
    if epochs is not None:
        base["train"]["epochs"] = epochs
    with tempfile.TemporaryDirectory() as folder:
        if args.whole_run:
            seconds = timed_runs([{**base, "model": {"name": "resnet18", "pretrained": False}}], Path(folder))
            results["whole_run_seconds"] = seconds
            save_results(results, out)
            print(f"one protocol run (ResNet18, 50 % of {base['data']['num_train']:,} images, "
                  f"{base['train'].get('epochs', 10)} epochs, evaluation included): {seconds:,.1f} s")
        if args.checkpoints:
            data = {**base["data"], "num_train": settings["images"], "num_test": 64, "fraction": 1.0}
            costs = checkpoint_costs({**base, "data": data},
                                     "vgg16", args.checkpoints, Path(folder))
            results["checkpoints"] = costs
            save_results(results, out)
            print(f"checkpoints of one VGG16 run, {costs['epochs']} epochs of {settings['images']} images "
                  f"({costs['checkpoint_bytes'] / 2**30:.2f} GiB each): {costs['checkpoint_seconds']:.2f} s on the "
                  f"training's path (the run took {costs['run_seconds']:.1f} s, training {costs['train_seconds']:.1f} s); "
                  f"one synchronous save, as every epoch paid before: {costs['synchronous_save_seconds']:.2f} s")
        if args.study:
            results["study_run_seconds"] = []  # each run's, as it ends: what a stopped study had done

            def each_run(seconds: float) -> None:
                results["study_run_seconds"].append(seconds)
                save_results(results, out)

            seconds = timed_runs(study_configs(base), Path(folder), each_run)
            results["study_seconds"] = seconds
            print(f"the 12-run study ({base['train'].get('epochs', 10)} epochs each, evaluation included): "
                  f"{seconds / 60:,.1f} min")

    # Last: compiling each model takes long, and the figures above do not wait for it.
    if args.pipelines and args.compile:
        print(f"\n{'model':<9} {'compiled img/s':>14} {'dev MiB':>10}   (the device pipeline, torch.compile)")
        for row in results["pipelines"]:
            row.update(pipeline_table([row["model"]], settings, device, args.repeats, True, args.workers)[0])
            save_results(results, out)
    save_results(results, out)
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
