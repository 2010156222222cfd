"""Time the augmentation presets: milliseconds per batch of 256 images, CPU, written to benchmarks/results/augment.txt.

Run: OMP_NUM_THREADS=1 python benchmarks/qa/augment.py [--threads N] [--repeats 20]

On a machine shared with other busy processes, more threads than free cores make every op wait for a descheduled
thread (milliseconds per op); measure with the threads that are actually free.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

from protosphere.data.augment import PRESETS, build_augmentation

SETTINGS = [("FMNIST-like 1×28×28", 1, 28), ("CIFAR-like 3×32×32", 3, 32)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    lines = [
        f"augmentation, batch {args.batch}, torch {torch.__version__}, {args.threads} thread(s), "
        f"{platform.processor() or platform.machine()}; median of {args.repeats} runs",
        f"{'data':<22} {'preset':<12} {'ms/batch':>9} {'img/s':>9}",
    ]
    for label, channels, size in SETTINGS:
        x = torch.rand(args.batch, channels, size, size)
        for preset in PRESETS:
            aug = build_augmentation(preset, size, channels, [0.5] * channels, [0.25] * channels)
            gen = torch.Generator().manual_seed(0)
            for _ in range(3):
                aug(x, gen)
            times = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                aug(x, gen)
                times.append(time.perf_counter() - t)
            ms = sorted(times)[len(times) // 2] * 1e3
            lines.append(f"{label:<22} {preset:<12} {ms:9.2f} {args.batch / ms * 1e3:9.0f}")
    text = "\n".join(lines)
    print(text)
    (Path(__file__).resolve().parents[1] / "results" / "augment.txt").write_text(text + "\n")


if __name__ == "__main__":
    main()
