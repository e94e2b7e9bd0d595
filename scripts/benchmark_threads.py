"""CPU training speed with torch's default intra-op threads vs fewer: images per second of a few
training steps of a small ResNet18 on generated 32x32 images, each setting in a fresh interpreter
(the thread count of a process is best set before torch starts its pool), in A B A B order so that
a change in the machine's load falls on both. The load average is printed before and after: on a
machine shared with other processes the figures are "under load", and say so.

    python scripts/benchmark_threads.py                      # default vs 1 thread, 2 rounds, about a minute
    python scripts/benchmark_threads.py --threads 0 1 2 --rounds 3 --steps 15

``--threads 0`` is torch's default (torch.get_num_threads(), the machine's cores). Nothing is written.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

# One measurement, run as `python -c` in a child: warm-up steps, then timed steps; prints JSON.
CHILD = r"""
import json, sys, time
import torch, torchvision
threads, steps, batch = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
if threads:
    torch.set_num_threads(threads)
torch.manual_seed(0)
model = torchvision.models.resnet18(num_classes=10)
optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
images, labels = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
def step():
    optimizer.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(model(images), labels).backward()
    optimizer.step()
for _ in range(3):
    step()
start = time.perf_counter()
for _ in range(steps):
    step()
seconds = time.perf_counter() - start
print(json.dumps({"threads": torch.get_num_threads(), "images_per_second": steps * batch / seconds}))
"""


def measure(threads: int, steps: int, batch: int) -> dict:
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    out = subprocess.run([sys.executable, "-c", CHILD, str(threads), str(steps), str(batch)], env=env,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[0, 1], help="0: torch's default")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per measurement")
    parser.add_argument("--batch", type=int, default=32)
    options = parser.parse_args()
    print(f"cores: {os.cpu_count()}; load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    results: dict[int, list[float]] = {t: [] for t in options.threads}
    shown: dict[int, int] = {}
    start = time.perf_counter()
    for round_ in range(options.rounds):
        order = options.threads if round_ % 2 == 0 else list(reversed(options.threads))
        for threads in order:
            result = measure(threads, options.steps, options.batch)
            results[threads].append(result["images_per_second"])
            shown[threads] = result["threads"]
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"{time.perf_counter() - start:.0f} s in all")
    print(f"ResNet18, 32x32, batch {options.batch}, {options.steps} steps per measurement, {options.rounds} rounds")
    for threads, rates in results.items():
        name = f"torch's default ({shown[threads]} threads)" if threads == 0 else f"{threads} thread(s)"
        print(f"{name:>32}: median {statistics.median(rates):6.1f} images/s  (each: "
              f"{', '.join(f'{r:.1f}' for r in rates)})")


if __name__ == "__main__":
    main()
