"""Helpers for running one continual loop on several processes (DDP through lightning-fabric).

What is global and what is per rank (see docs/scaling.md):

* ``train.batch_size`` is the **global** batch. Every rank draws the same shuffled order (a function of seed, task
  and epoch) and takes its own contiguous slice of each global batch (:func:`shard_rows`), so the ranks see disjoint
  shards of the stream and the gathered batch is, row for row, the batch a single process would see.
* Contrastive losses are computed on the global batch: a method calls ``self.gather(z)``, which the engine sets to
  :func:`gather_with_grad`. Its backward pass **sums** the gradients that all ranks send to each rank's rows
  (``torch.distributed.nn.functional.all_gather``: reduce-scatter / all-to-all with SUM). Every rank computes the same
  loss L on the same global batch, so rank r's rows receive W · ∂L/∂z_r; DDP then **averages** parameter gradients
  over the W ranks, which cancels the factor W. Hence the per-rank loss needs **no** world-size scaling: DDP with
  gathered losses equals single-process training on the global batch (tests/test_ddp.py checks it to 1e-5).
  (Implementations whose gather returns only the local slice of the gradient, without the sum, must multiply the
  loss by W instead — solo-learn's and SupContrast's GatherLayer sum, like this one.)
  Per-rank terms (a cross-entropy on the local rows) are averaged by DDP to the global mean, as usual.
* Replay buffers are per rank (each fills from its own shard), and ``method.buffer_size`` is the **global** memory:
  each of W ranks keeps buffer_size / W (the runner refuses a size W does not divide). MoCo/PNR queues are filled with
  gathered keys, so they are identical on every rank.
* Logged losses are the global ones: the engine logs the mean over ranks of the loss and every term.
"""

from __future__ import annotations

from typing import Callable

import torch

from .config import RunConfig
from .errors import ConfigError, ProtosphereError


def gather_with_grad(fabric) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function concatenating a (B, ...) tensor from all ranks into (W·B, ...), rank-major, with gradients."""
    if fabric.world_size == 1:
        return lambda tensor: tensor
    return lambda tensor: fabric.all_gather(tensor, sync_grads=True).flatten(0, 1)


def shard_rows(rows: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """This rank's contiguous slice of a global batch of row indices (all of it on one process)."""
    if world_size == 1:
        return rows
    per_rank = len(rows) // world_size
    return rows[rank * per_rank : (rank + 1) * per_rank]


def to_cpu(obj):
    """A copy of a nested dict/list/tuple structure with every tensor moved to the CPU (for gathering objects)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {key: to_cpu(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(value) for value in obj)
    return obj


def gather_objects(fabric, obj) -> list:
    """``obj`` of every rank, in rank order (a one-element list on one process). Tensors come back on the CPU."""
    obj = to_cpu(obj)
    if fabric.world_size == 1:
        return [obj]
    import torch.distributed as dist

    out: list = [None] * fabric.world_size
    dist.all_gather_object(out, obj)
    return out


def rank_zero_first(fabric, fn: Callable):
    """Run ``fn`` on global rank 0 only and give its result to every rank; a :class:`ProtosphereError` raised there
    is raised on every rank (so no rank waits forever for one that stopped)."""
    result, error = None, None
    if fabric.is_global_zero:
        try:
            result = fn()
        except ProtosphereError as exc:
            error = exc
    if fabric.world_size > 1:
        result, error = fabric.broadcast((result, error), src=0)
    if error is not None:
        raise error
    return result


def rng_state(device: torch.device) -> dict:
    """The global RNG states this process's training draws from (CPU, and the CUDA device it trains on)."""
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)


def check_processes(config: RunConfig, world_size: int) -> None:
    """What the number of processes must divide, checked before anything is written: the global batch, and the
    global replay memory ``method.buffer_size`` (each of W ranks keeps buffer_size / W over its own shard)."""
    if world_size == 1:
        return
    if config.train.batch_size % world_size:
        raise ConfigError(
            f"train.batch_size={config.train.batch_size} is the global batch and must be divisible by "
            f"the number of processes ({world_size}); use a multiple of {world_size}."
        )
    size = getattr(config.method, "buffer_size", 0) or 0
    if size % world_size:
        raise ConfigError(
            f"method.buffer_size={size} is the global replay memory, split evenly over the "
            f"{world_size} processes, so it must be divisible by {world_size}; use a multiple of "
            f"{world_size}, e.g. {size - size % world_size or world_size}."
        )
