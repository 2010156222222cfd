"""How many CPU threads a run uses: chosen from the run's configuration alone, never from the machine's load.

Why it matters: torch's intra-op threads wait for each other at the end of every parallel operation (OpenMP). When
another process holds one of the cores, every such wait lasts until the scheduler gives the descheduled thread its turn,
and a small-step workload (the Mammoth protocol: an MLP at batch 10, thousands of tiny operations per second) loses
most of its speed — measured 5–13× slower beside one busy process with 2 threads, while 1 thread keeps its speed.
Small steps gain nothing from a second thread on a quiet machine either, so they run single-threaded; large steps keep
torch's default (all cores). The choice must not follow the momentary load: the thread count changes float sums, and a
seed must give the same numbers on a quiet and on a busy machine. ``fabric.threads`` overrides it.

Threads that do run wait passively (``OMP_WAIT_POLICY=PASSIVE``, set by ``import protosphere`` unless the user set
it): with torch's default spinning, a 2-thread CNN step beside busy processes ran 3–4× slower than with passive waits.

The work of a step is estimated as the backbone's forward FLOPs for one training batch (counted once with
``torch.utils.flop_counter.FlopCounterMode`` on a 2-image batch, scaled to ``train.batch_size``).
Measurements behind the threshold: ``benchmarks/qa/throughput_loaded.py``
(``benchmarks/results/throughput-loaded.txt``).
"""

from __future__ import annotations

import os

import torch
import torch.nn as nn

_TORCH_DEFAULT = torch.get_num_threads()  # one per core, or OMP_NUM_THREADS; read before any run changes it

__all__ = ["SINGLE_THREAD_FLOPS", "forward_flops_per_image", "default_threads", "apply_threads"]

# forward FLOPs per training batch below which one thread is as fast as two on a quiet machine and far faster on a
# busy one (benchmarks/results/throughput-loaded.txt); above it torch's default (one thread per core) is kept
SINGLE_THREAD_FLOPS = 50e6


@torch.no_grad()
def forward_flops_per_image(backbone: nn.Module, image_shape) -> float:
    """Forward FLOPs of ``backbone`` per image of ``image_shape`` (C, H, W), counted on a 2-image batch in eval mode."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = backbone.training
    backbone.eval()
    try:
        parameter = next(backbone.parameters(), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
        x = torch.zeros(2, *image_shape, device=device)
        if getattr(backbone, "channels_last", False) and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with FlopCounterMode(display=False) as counter:
            backbone(x)
        return counter.get_total_flops() / 2
    finally:
        backbone.train(was_training)


def usable_cores() -> int:
    """CPU cores this process may run on (a SLURM job or a container may get fewer than the machine has)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_threads(flops_per_batch: float, cores: int | None = None) -> int:
    """The run's thread count from its step size: 1 below :data:`SINGLE_THREAD_FLOPS`, else ``cores`` (torch's
    default, one per core)."""
    cores = _TORCH_DEFAULT if cores is None else int(cores)
    return 1 if flops_per_batch < SINGLE_THREAD_FLOPS else max(1, cores)


def apply_threads(config, method, image_shape) -> int:
    """Set torch's intra-op threads for this run (``fabric.threads`` if given, else :func:`default_threads` on the
    run's backbone and batch size) and return the number. CPU runs only; on GPUs the count is left alone."""
    if config.fabric.threads is not None:
        threads = int(config.fabric.threads)
    elif config.fabric.accelerator != "cpu" and (torch.cuda.is_available() or torch.backends.mps.is_available()):
        return torch.get_num_threads()  # the model runs on an accelerator
    else:
        backbone = getattr(method, "backbone", method)
        threads = default_threads(forward_flops_per_image(backbone, image_shape) * config.train.batch_size)
    torch.set_num_threads(threads)
    return threads
