"""GPU check: every paper config trains for a few dozen steps at its real shapes, in each precision and launch path.

The first thing to run when a GPU is available (no internet, no dataset: the images are synthetic). For each config
in ``configs/paper/`` (read through the library's config loading, so whatever the configs say is what runs), a
synthetic dataset of the config's image size, channel count and class count (random uint8 pixels) is split into the
config's scenario; the method is built by the runner's ``build_method`` and trained through the engine's own pieces
(lightning-fabric's module and optimiser wrappers, :func:`protosphere.runs.engine.train_step` with
``fabric.backward``, the engine's batch order and :func:`protosphere.data.streaming.device_batches`): a few steps of
task 0, ``end_task``, then task 1 (where replay, past models and distillation are active), whose last ``--steps``
steps are timed. Each config runs in these variants:

* ``32-true``    float32, channels-first (NCHW) tensors, the task on the device;
* ``bf16-cl``    ``fabric.precision=bf16-mixed`` (autocast) and ``model.channels_last=true``;
* ``ddp``        the config as written, launched by lightning-fabric with ``strategy=ddp, devices=1`` (the
  DistributedDataParallel wrapper, the process group and the gradient all-reduce of a multi-GPU run, on one GPU);
* ``streamed``   the config as written with the task left on the host (``data.device_budget`` exceeded): batches
  gathered into pinned memory and copied on a side CUDA stream one step ahead; before training, the first batches
  are checked equal, tensor for tensor, to those of the whole task on the device.

It prints one row per config and variant (img/s of the timed steps, peak memory ``torch.cuda.max_memory_allocated``,
the shapes) and exits non-zero if any row failed (the row says why). ``--device cpu --tiny`` (20-px images, batch 8,
one step of task 0 and one timed step of task 1; every config in ``32-true``, every variant on the first config) runs
in the test suite on the CPU.

    python benchmarks/gpu_check.py                          # one GPU: every paper config, every variant
    python benchmarks/gpu_check.py --configs configs/paper/fnc2-*.yaml --variants bf16-cl --steps 50
    python benchmarks/gpu_check.py --device cpu --tiny      # what the tests run
"""

from __future__ import annotations

import argparse
import gc
import glob
import math
import os
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import protosphere  # noqa: F401  (before torch: protosphere's OpenMP wait policy applies, as in a run)

# isort: split
import numpy as np
import torch

from protosphere.config import load_config
from protosphere.data.base import ImageDataset
from protosphere.data.scenarios import model_input
from protosphere.data.streaming import device_batches, to_device
from protosphere.methods.base import StepContext, TaskContext
from protosphere.optim import build_optimizer, lr_factor, set_lr
from protosphere.runs.engine import batch_rows, train_step
from protosphere.runs.runner import build_fabric, build_method, build_scenario_from_config
from protosphere.validation import set_validation

REPO = Path(__file__).resolve().parents[1]
# the datasets' shapes as a run holds them: (channels, image size, classes, whether data.image_size resizes them).
# Image-folder datasets (Tiny-ImageNet, ImageNet-100, DomainNet) are resized on loading to data.image_size, 64 by
# default (data/registry.py); the others keep their native size
DATASET_SHAPES = {
    "cifar10": (3, 32, 10, False),
    "cifar100": (3, 32, 100, False),
    "tiny_imagenet": (3, 64, 200, True),
    "imagenet100": (3, 64, 100, True),
    "domainnet": (3, 64, 345, True),
    "fashion_mnist": (1, 28, 10, False),
    "mnist": (1, 28, 10, False),
    "digits": (1, 8, 10, False),
}
VARIANTS = {  # name: (config overrides, whether the task is streamed from the host)
    "32-true": (["fabric.precision=32-true", "model.channels_last=false"], False),
    "bf16-cl": (["fabric.precision=bf16-mixed", "model.channels_last=true"], False),
    "ddp": (["fabric.strategy=ddp"], False),
    "streamed": ([], True),
}


@dataclass
class Row:
    config: str
    variant: str
    status: str = "ok"
    img_per_s: float | None = None
    peak_bytes: int | None = None
    shape: str = ""
    batch: int | None = None
    seconds: float = 0.0


def synthetic_dataset(channels: int, size: int, classes: int, per_class: int, seed: int = 0) -> ImageDataset:
    """Random uint8 images (classes × per_class training rows, 2 test rows per class), labels in class blocks."""
    rng = np.random.default_rng(seed)

    def split(n):
        labels = np.repeat(np.arange(classes, dtype=np.int64), n)
        return rng.integers(0, 256, size=(len(labels), size, size, channels), dtype=np.uint8), labels

    (train_x, train_y), (test_x, test_y) = split(per_class), split(2)
    return ImageDataset("synthetic", train_x, train_y, test_x, test_y, tuple(map(str, range(classes))), "synthetic")


TINY_SIZE = 20  # the smallest side whose default blur kernel (side // 20 * 2 + 1, as Co2L/FNC2) is a real blur


def shape_of(config, tiny: bool) -> tuple[int, int, int]:
    name = config.data.dataset
    if name not in DATASET_SHAPES:
        raise ValueError(f"no stored shape for dataset {name!r}; add it to DATASET_SHAPES in {Path(__file__).name}")
    channels, size, classes, resized = DATASET_SHAPES[name]
    if resized and config.data.image_size is not None:
        size = config.data.image_size
    return channels, TINY_SIZE if tiny else size, classes


def smallest_task(config, classes: int) -> int:
    sc = config.scenario
    if sc.kind != "class_il":
        return classes
    return min(sc.classes_per_task) if sc.classes_per_task else classes // sc.num_tasks


def check(path: Path, variant: str, args, device: torch.device, datasets: dict) -> Row:
    """Train one config in one variant; the row holds the speed and memory, or the failure."""
    row, start = Row(path.stem, variant), time.perf_counter()
    overrides, stream = VARIANTS[variant]
    tiny = ["train.batch_size=8"] if args.tiny else []
    config = load_config(
        path, [f"fabric.accelerator={device.type}", "fabric.devices=1", "fabric.num_nodes=1", *overrides, *tiny]
    )
    channels, size, classes = shape_of(config, args.tiny)
    batch = row.batch = config.train.batch_size
    per_class = max(2, math.ceil(batch / max(1, smallest_task(config, classes))))
    key = (channels, size, classes, per_class)
    if key not in datasets:
        datasets.clear()  # one at a time: a 224-px dataset is large
        datasets[key] = synthetic_dataset(channels, size, classes, per_class)
    row.shape = f"{channels}x{size}x{size}, {classes} classes"
    fabric = build_fabric(config)
    fabric.launch()
    fabric.seed_everything(config.seed, verbose=False)
    scenario = build_scenario_from_config(config, dataset=datasets[key])
    method = build_method(config, scenario).to(fabric.device)
    method.install_collectives(to_device=lambda x: to_device(x, fabric.device))
    model = fabric.setup_module(method)
    model.mark_forward_method("training_step")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    tasks = [0, 1] if scenario.num_tasks > 1 else [0]
    for t in tasks:
        timed = t == tasks[-1]
        steps = args.warmup + args.steps if timed else args.task0_steps
        row.img_per_s = train_task(
            config, fabric, model, method, scenario, t, steps, stream, args.warmup if timed else 0
        )
    if device.type == "cuda":
        row.peak_bytes = torch.cuda.max_memory_allocated(device)
    row.seconds = time.perf_counter() - start
    return row


def train_task(config, fabric, model, method, scenario, t, steps, stream, warmup) -> float | None:
    """``steps`` training steps of task ``t`` as the engine takes them; img/s of the steps after ``warmup``."""
    context = TaskContext.of(scenario, t, fabric.device, stream=stream)
    method.train()
    method.begin_task(context)
    optimizer = fabric.setup_optimizers(build_optimizer(config.optimizer, method.parameters()))
    images, labels = method.training_data(context)
    batch = config.train.batch_size
    per_epoch = max(1, len(labels) // batch)

    def batches(streamed):
        rows = batch_rows(config.seed, t, len(labels), batch, per_epoch, range(steps), fabric)
        return device_batches((images, labels), rows, fabric.device, stream=streamed)

    if stream:  # the streamed batches are the whole task's, tensor for tensor
        for (x, y), (wx, wy) in zip(batches(True), list(batches(False))[:3]):
            if not (torch.equal(x, wx) and torch.equal(y, wy)):
                raise AssertionError(f"task {t}: a streamed batch differs from the whole-task batch")
    speed, start = None, None
    for step, (x, y) in enumerate(batches(stream)):
        if step == warmup:
            fabric.barrier()
            if fabric.device.type == "cuda":
                torch.cuda.synchronize(fabric.device)
            start = time.perf_counter()
        set_lr(optimizer, config.optimizer.lr, lr_factor(config.optimizer, step, steps, per_epoch))
        where = StepContext(task=t, epoch=step // per_epoch, step=step, steps_in_task=steps, global_step=step)
        x = model_input(x, config.model.channels_last)
        # as in a run: the losses check their inputs at the first step of a task, and then no more (no host sync)
        set_validation(step == 0)
        output = train_step(model, optimizer, x, y, where, fabric.backward)
    if not torch.isfinite(output.loss.detach()).all():
        raise FloatingPointError(f"task {t}: the loss is {float(output.loss)}")
    if start is not None:
        if fabric.device.type == "cuda":
            torch.cuda.synchronize(fabric.device)
        speed = (steps - warmup) * batch / (time.perf_counter() - start)
    method.end_task(context)
    return speed


def table(rows: list[Row], device: torch.device) -> str:
    lines = [
        f"{'config':<34} {'variant':<9} {'img/s':>9} {'peak GiB':>9} {'batch':>6} {'images':<24} {'s':>5}  status",
    ]
    for r in rows:
        speed = f"{r.img_per_s:,.0f}" if r.img_per_s is not None else "-"
        peak = f"{r.peak_bytes / 2**30:.2f}" if r.peak_bytes is not None else "-"
        batch = "-" if r.batch is None else str(r.batch)
        lines.append(
            f"{r.config:<34} {r.variant:<9} {speed:>9} {peak:>9} {batch:>6} {r.shape:<24} {r.seconds:>5.1f}  {r.status}"
        )
    failed = sum(r.status != "ok" for r in rows)
    lines.append(f"{len(rows)} checks on {device}: {len(rows) - failed} ok, {failed} failed")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=[str(REPO / "configs" / "paper" / "*.yaml")])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=None)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="20-px images, batch 8, 2 steps (for the tests)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 20; --tiny 1)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps of the timed task (default 3)")
    parser.add_argument("--task0-steps", type=int, default=None, help="steps of task 0 (default 3; --tiny 1)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: 1 on --device cpu)")
    parser.add_argument("--out", type=Path, default=None, help="also write the table to this file")
    args = parser.parse_args(argv)
    args.steps = args.steps if args.steps is not None else (1 if args.tiny else 20)
    args.warmup = args.warmup if args.warmup is not None else (0 if args.tiny else 3)
    args.task0_steps = args.task0_steps if args.task0_steps is not None else (1 if args.tiny else 3)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device is visible; use --device cpu (with --tiny) to check on the CPU.")
        return 2
    if device.type == "cpu":
        torch.set_num_threads(args.threads or 1)
    # a pattern that matches nothing stays as given: loading it fails, and its row says so
    paths = sorted({Path(p) for pattern in args.configs for p in (glob.glob(pattern) or [pattern])})
    plan = []
    for i, path in enumerate(paths):
        names = args.variants or (list(VARIANTS) if not args.tiny or i == 0 else ["32-true"])
        plan += [(path, name) for name in names]
    rows, datasets, begun = [], {}, time.perf_counter()
    for path, variant in plan:
        try:
            row = check(path, variant, args, device, datasets)
        except Exception as exc:  # every failure is a row; the exit status reports them
            row = Row(path.stem, variant, status=f"FAIL {type(exc).__name__}: {' '.join(str(exc).split())[:300]}")
            if os.environ.get("GPU_CHECK_TRACEBACK"):
                traceback.print_exc()
        print(table([row], device).splitlines()[1], flush=True)
        rows.append(row)
        set_validation(True)
        if device.type == "cuda":  # the next config starts from an empty device
            gc.collect()
            torch.cuda.empty_cache()
    report = table(rows, device) + f" in {time.perf_counter() - begun:.0f} s; torch {torch.__version__}"
    if device.type == "cuda":
        report += f", {torch.cuda.get_device_name(device)}"
    print("\n" + report)
    if args.out is not None:
        args.out.write_text(report + "\n")
    return 1 if any(r.status != "ok" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
