"""Image-folder figures: first-run decoding against torchvision's ImageFolder in a DataLoader, the
second run's start-up, and training images/s on an image folder against CIFAR-10-shaped data at the
same size.

It writes a folder of JPEGs of photo-like sizes (no download), then measures, in this order:

1. decoding: transferlab's first load (every file decoded to --stored-size into a fresh cache, with
   --workers processes) against one pass of torchvision's ImageFolder in a DataLoader with the same
   number of workers doing the same work (decode, Resize + CenterCrop to --stored-size, to a tensor);
2. start-up: the second load of the same folder (the cache exists): scanning the folder, hashing the
   file list and memory-mapping the cache;
3. training: images/s of one model on the image folder (random-resized crop from --stored-size to
   --image-size) and on CIFAR-10-shaped 32x32 data (the protocol's pad-crop-flip, resized to
   --image-size), both with the device pipeline, interleaved, median of --repeats.

    python scripts/benchmark_imagefolder.py --mode cpu     # 64 px training, 1,000 images: a laptop or CI box
    python scripts/benchmark_imagefolder.py --mode gpu     # 224 px training from 256 px, 10,000 images, bf16

Figures are printed and saved as JSON (--out).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torchvision

from benchmark import measure, save_results  # scripts/benchmark.py: one timed training pass, saving JSON
from transferlab.data import Transforms, load_imagefolder, make_synthetic
from transferlab.engine import configure_determinism, select_device

MODES = {
    "cpu": dict(images=1000, stored_size=72, image_size=64, batch_size=64, train_images=256, precision="fp32",
                device="cpu"),
    "gpu": dict(images=10_000, stored_size=256, image_size=224, batch_size=64, train_images=6400, precision="bf16",
                device="cuda"),
}
PHOTO_SIZES = [(500, 375), (375, 500), (640, 480), (400, 400), (800, 600), (333, 500)]  # ImageNet-like


def write_folder(root: Path, count: int, classes: int = 10, seed: int = 0) -> None:
    """``count`` JPEGs (quality 90) in train/ and val/ (5:1), smooth random colours with noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for index in range(count):
        split = "val" if (index // classes) % 6 == 5 else "train"  # every class in both splits
        folder = root / split / f"class{index % classes:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        width, height = PHOTO_SIZES[index % len(PHOTO_SIZES)]
        coarse = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((width, height), Image.BILINEAR)
        noisy = np.asarray(image, dtype=np.int16) + rng.integers(-20, 21, size=(height, width, 3))
        Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(folder / f"{index:06d}.jpg", quality=90)


def torchvision_pass(root: Path, stored_size: int, workers: int, batch_size: int) -> float:
    """Seconds for one pass of torchvision's ImageFolder over train/ and val/ in a DataLoader."""
    from torch.utils.data import ConcatDataset, DataLoader
    from torchvision import transforms as T
    from torchvision.datasets import ImageFolder

    transform = T.Compose([T.Resize(stored_size), T.CenterCrop(stored_size), T.PILToTensor()])
    start = time.perf_counter()
    dataset = ConcatDataset([ImageFolder(str(root / split), transform) for split in ("train", "val")])
    for _ in DataLoader(dataset, batch_size=batch_size, num_workers=workers):
        pass
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=sorted(MODES), default="gpu" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--images", type=int, help="JPEGs in the generated folder (default: the mode's)")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)),
                        help="decoding processes, and DataLoader workers of torchvision's ImageFolder")
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--repeats", type=int, default=3, help="timed training passes per dataset (median)")
    parser.add_argument("--out", type=Path, default=Path("outputs/benchmark"), help="folder for the JSON")
    args = parser.parse_args(argv)
    settings = dict(MODES[args.mode], **({"images": args.images} if args.images else {}))
    device = select_device(settings["device"])
    configure_determinism(0, deterministic=False, device=device)
    environment = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "cpu_cores": len(os.sched_getaffinity(0)), "load_average": os.getloadavg(), "python": platform.python_version(),
        "torch": torch.__version__, "torchvision": torchvision.__version__, "command": " ".join(sys.argv),
    }
    results: dict = {"environment": environment, "settings": settings, "workers": args.workers}
    size = settings["stored_size"]
    with tempfile.TemporaryDirectory() as folder:
        root, cache = Path(folder) / "photos", Path(folder) / "cache"
        write_folder(root, settings["images"])
        print(f"{settings['images']} JPEGs of {len(PHOTO_SIZES)} photo sizes (333x500 to 800x600), stored at "
              f"{size}x{size}, {args.workers} worker(s), on {environment['device']}")

        start = time.perf_counter()
        train, test = load_imagefolder(root, size, 0.2, 0, cache, args.workers)
        first = time.perf_counter() - start
        reference = torchvision_pass(root, size, args.workers, settings["batch_size"])
        start = time.perf_counter()
        train, test = load_imagefolder(root, size, 0.2, 0, cache, args.workers)
        second = time.perf_counter() - start
        results.update(first_load_seconds=first, first_load_images_per_second=settings["images"] / first,
                       torchvision_pass_seconds=reference,
                       torchvision_images_per_second=settings["images"] / reference, second_load_seconds=second)
        print(f"first load (decode into the cache): {first:,.2f} s, {settings['images'] / first:,.0f} images/s")
        print(f"torchvision ImageFolder + DataLoader, one pass: {reference:,.2f} s, "
              f"{settings['images'] / reference:,.0f} images/s")
        print(f"second load (cache present): {second:,.3f} s")

        count = min(settings["train_images"], len(train))
        folder_data = train.subset(torch.arange(count))
        cifar_shaped, _ = make_synthetic(count, 1, seed=0)
        variants = {"imagefolder": (folder_data, Transforms("random_resized_crop", "imagenet", 0.875)),
                    "cifar10-shaped": (cifar_shaped, Transforms())}
        samples: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.repeats):  # interleaved, so drifts in machine load hit both alike
            for name, (data, transforms) in variants.items():
                samples[name].append(measure(args.model, "device", data, settings, device, False, 0,
                                             transforms)["images_per_second"])
        for name, values in samples.items():
            results[f"train_{name}_images_per_second"] = statistics.median(values)
            results[f"train_{name}_all_images_per_second"] = values
            print(f"training {args.model} at {settings['image_size']}x{settings['image_size']}, {name}: "
                  f"{statistics.median(values):,.0f} images/s (median of {args.repeats})")

    save_results(results, args.out / f"benchmark-imagefolder-{args.mode}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
