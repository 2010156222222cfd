"""Training img/s with the whole task on the device vs batches streamed from the host, side by side in one process.

The engine moves a task to the device whole when its training images fit ``data.device_budget``, else it gathers
each step's rows on the host and copies them one step ahead (:mod:`protosphere.data.streaming`). This script times
the same training steps (``runs.engine.train_step``: a method's step, backward, SGD) on batches from three sources:
``whole`` (the task tensor on the device, indexed there), ``streamed`` (the task tensor on the host, rows gathered per
step) and ``streamed-mmap`` (the task's images saved with ``np.save`` and read back with ``np.load(mmap_mode="r")``,
so each step reads its rows from the memory-mapped file). The three run interleaved in blocks of ``--block`` steps
so that machine load affects them alike; the table gives the median img/s over the blocks, and the cost of
gathering one batch on the host alone. Then the host-side gather at ImageNet shapes: ``--batch-size`` random rows of
``--gather-images`` random 3×224×224 uint8 images (150,528 B each), from a tensor and from a memory-mapped file (in the
page cache), in GB/s of rows gathered (what the host must deliver per second of training, see docs/scaling.md).

    python benchmarks/qa/streamed_batches.py --steps 300 --out benchmarks/results/streamed_batches.txt
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import protosphere  # noqa: F401  (before torch: protosphere's OpenMP wait policy applies, as in a run)

# isort: split
import numpy as np
import torch

from protosphere.config import validate_config
from protosphere.data.scenarios import model_input
from protosphere.data.streaming import device_batches, gather
from protosphere.methods.base import StepContext, TaskContext
from protosphere.optim import build_optimizer
from protosphere.runs.engine import batch_rows, train_step
from protosphere.runs.runner import build_method, build_scenario_from_config


def cpu_name() -> str:
    """The processor's model name (/proc/cpuinfo), else what the platform module says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gather_bandwidth(folder: Path, count: int, batch: int, repeats: int = 40) -> list[str]:
    """GB/s of rows gathered for batches of ``batch`` random 3×224×224 uint8 rows (host only, as the streamed path
    gathers them before the copy), from a tensor and from a memory-mapped file."""
    images = torch.randint(0, 256, (count, 3, 224, 224), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    np.save(folder / "images224.npy", images.numpy())
    mapped = np.load(folder / "images224.npy", mmap_mode="r")
    generator = torch.Generator().manual_seed(1)
    reused = torch.empty((batch, 3, 224, 224), dtype=torch.uint8)
    lines = [f"host gather of {batch} random rows of {count} images 3x224x224 uint8 ({batch * 150528 / 1e6:.1f} MB):"]
    for name, source in (("tensor", images), ("memory-mapped file (page cache)", mapped)):
        for into, out in (("a new buffer", None), ("a reused buffer", reused)):
            gather(source, torch.randperm(count, generator=generator)[:batch], out=out)  # first touch
            times = []
            for _ in range(repeats):
                rows = torch.randperm(count, generator=generator)[:batch]
                start = time.perf_counter()
                gather(source, rows, out=out)
                times.append(time.perf_counter() - start)
            median = statistics.median(times)
            lines.append(
                f"  {name:<32} into {into:<16} {median * 1e3:7.2f} ms per batch (median of {repeats}), "
                f"{batch * 150528 / median / 1e9:5.2f} GB/s, {batch / median:,.0f} img/s"
            )
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--method", default="finetune")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=300, help="timed steps per source")
    parser.add_argument("--block", type=int, default=25, help="steps per source before switching to the next")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--gather-images", type=int, default=2000, help="224-px images for the gather measurement")
    parser.add_argument("--out", type=Path, default=None, help="also write the report to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    config = validate_config(
        {
            "data": {"dataset": args.dataset},
            "model": {"backbone": "small_cnn"},
            "method": {"name": args.method},
            "train": {"batch_size": args.batch_size},
            "scenario": {"num_tasks": 5},
        }
    )
    scenario = build_scenario_from_config(config)
    torch.manual_seed(0)
    method = build_method(config, scenario).to(device)
    task = scenario.tasks[0]
    context = TaskContext.of(scenario, 0, device)
    method.train()
    method.begin_task(context)
    optimizer = build_optimizer(config.optimizer, method.parameters())
    folder = Path(tempfile.mkdtemp(prefix="streamed-batches-"))
    np.save(folder / "images.npy", task.train_images.numpy())
    mapped = np.load(folder / "images.npy", mmap_mode="r")

    n, batch = len(task.train_labels), args.batch_size
    steps_per_epoch = n // batch
    total = args.steps + args.block  # one block of warm-up per source
    rank = SimpleNamespace(global_rank=0, world_size=1)

    def rows():
        return batch_rows(config.seed, 0, n, batch, steps_per_epoch, range(total), rank)

    sources = {
        "whole": device_batches((task.train_images, task.train_labels), rows(), device, stream=False),
        "streamed": device_batches((task.train_images, task.train_labels), rows(), device, stream=True),
        "streamed-mmap": device_batches((mapped, task.train_labels), rows(), device, stream=True),
    }
    speeds: dict[str, list[float]] = {name: [] for name in sources}
    step = 0
    for block in range(total // args.block):
        for name, batches in sources.items():
            start = time.perf_counter()
            for _ in range(args.block):
                x, y = next(batches)
                where = StepContext(task=0, epoch=0, step=step % total, steps_in_task=total, global_step=step)
                train_step(method, optimizer, model_input(x, config.model.channels_last), y, where)
                step += 1
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if block > 0:  # the first block warms up
                speeds[name].append(args.block * batch / (time.perf_counter() - start))

    gather_ms = {}
    probe = [next(iter(batch_rows(7, 0, n, batch, steps_per_epoch, range(i, i + 1), rank))) for i in range(50)]
    for name, source in (("tensor", task.train_images), ("mmap", mapped)):
        start = time.perf_counter()
        for r in probe:
            gather(source, r)
        gather_ms[name] = (time.perf_counter() - start) / len(probe) * 1e3

    lines = [
        f"# {Path(__file__).name}: training img/s, whole task on the device vs streamed batches",
        f"# command: python benchmarks/qa/{Path(__file__).name} {' '.join(argv if argv is not None else sys.argv[1:])}",
        f"# machine: {cpu_name()}, {os.cpu_count()} cores, device {device}, "
        f"torch {torch.__version__}, {args.threads} thread(s); load average at the end "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        f"# {args.dataset} task 0 ({n} images {'x'.join(map(str, task.train_images.shape[1:]))}), method "
        f"{args.method}, small_cnn, batch {batch}, {args.steps} timed steps per source in blocks of {args.block}, "
        f"interleaved",
        "",
        f"{'source':<15} {'img/s (median)':>15} {'min':>8} {'max':>8} {'vs whole':>9}",
    ]
    whole = statistics.median(speeds["whole"])
    for name, values in speeds.items():
        median = statistics.median(values)
        lines.append(f"{name:<15} {median:>15,.0f} {min(values):>8,.0f} {max(values):>8,.0f} {median / whole:>8.3f}x")
    lines += [
        "",
        f"host gather of one batch of {batch} rows (mean of {len(probe)}): task tensor {gather_ms['tensor']:.3f} ms, "
        f"memory-mapped file {gather_ms['mmap']:.3f} ms",
    ]
    lines += ["", *gather_bandwidth(folder, args.gather_images, batch)]
    report = "\n".join(lines)
    print(report)
    if args.out is not None:
        args.out.write_text(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
