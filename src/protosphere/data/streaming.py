"""Dataset images on the training device: a whole task at once, or one batch per step when the task is larger.

A run keeps its images as uint8 on the host (:mod:`protosphere.data.scenarios`). A task whose training images fit
the run's **device budget** (``data.device_budget``: bytes of dataset images kept on the device at once; default
:data:`DEFAULT_BUDGET_FRACTION` of the device's free memory, on the CPU of the available RAM) is moved to the device
whole and its batches are indexed there. A larger task stays on the host: each step gathers its rows on the host
(into pinned memory when the device is a CUDA GPU), copies them with ``non_blocking=True`` on a side CUDA stream, and
issues the next step's copy before the current step's batch is handed out, so the copy and the host-side gather
overlap the previous step's compute (:func:`device_batches`). The row indices are the same either way, so the same
seed gives the same batches bit for bit; only where the rows are gathered differs.

The host arrays may be anything indexable by rows: a torch tensor (also one over a memory-mapped file, e.g.
``torch.from_numpy(np.load(path, mmap_mode="r"))``), a numpy array or ``np.memmap``. Only the rows of each batch are
read (:func:`gather`), so a task larger than the host's RAM streams from disk through the page cache.

Replay buffers are not dataset images: they live on the device wherever the task is (methods store the device
batches they are handed).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch

# half of the free memory: the other half is the network's activations, gradients and optimiser state
DEFAULT_BUDGET_FRACTION = 0.5


def nbytes(array) -> int:
    """Bytes an array of rows takes (torch tensor, numpy array or memmap), without reading it."""
    if isinstance(array, torch.Tensor):
        return array.numel() * array.element_size()
    return int(np.prod(array.shape)) * np.dtype(array.dtype).itemsize


def free_memory(device: torch.device) -> int | None:
    """Free bytes on ``device``: ``torch.cuda.mem_get_info`` on a CUDA GPU, the available RAM on the CPU (where the
    host is the device; ``MemAvailable`` of /proc/meminfo, or the free pages the system reports), None where
    unknown."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return None
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


class DeviceBudget:
    """Bytes of dataset images that may stay on the device: ``limit`` given (``data.device_budget``), or
    ``fraction`` of the device's free memory when this budget is made; None where neither is known (no limit).

    :meth:`reserve` takes bytes for as long as the run (the test sets); :meth:`fits` asks whether one more array (a
    task's training images, held while the task trains) fits in what is left."""

    def __init__(self, device, limit: int | None = None, fraction: float = DEFAULT_BUDGET_FRACTION):
        if limit is None:
            free = free_memory(device)
            limit = None if free is None else int(free * fraction)
        self.limit = limit
        self.reserved = 0

    @property
    def left(self) -> int | None:
        return None if self.limit is None else self.limit - self.reserved

    def fits(self, size: int) -> bool:
        return self.left is None or size <= self.left

    def reserve(self, size: int) -> bool:
        """Take ``size`` bytes if they fit (True), else take nothing (False)."""
        if not self.fits(size):
            return False
        self.reserved += size
        return True


def pinned(device) -> bool:
    """Whether host batches bound for ``device`` go through page-locked memory (CUDA: asynchronous copies)."""
    return torch.device(device).type == "cuda" and torch.cuda.is_available()


def as_tensor(array):
    """A torch view of a numpy array or memmap (no copy; a read-only memmap stays read-only: rows are only read)."""
    if isinstance(array, torch.Tensor) or not isinstance(array, np.ndarray):
        return array
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


def gather(array, rows: torch.Tensor, pin: bool = False, out: torch.Tensor | None = None) -> torch.Tensor:
    """``array[rows]`` as a contiguous host tensor: only those rows are read, so a memory-mapped array is never read
    whole. ``rows``: int64 (B,) on the CPU. The rows go into ``out`` when given, else into a new tensor, page-locked
    when ``pin`` (the caching host allocator then hands the same blocks back step after step). Torch tensors and
    numpy arrays (memmaps included) are copied row by row with ``torch.index_select``; any other array-like is
    indexed with the row numbers (``array[rows.numpy()]``)."""
    array = as_tensor(array)
    if not isinstance(array, torch.Tensor):
        batch = torch.from_numpy(np.ascontiguousarray(array[rows.numpy()]))
        return out.copy_(batch) if out is not None else (batch.pin_memory() if pin else batch)
    if array.device.type != "cpu":
        return array[rows.to(array.device)]
    if out is None:
        out = torch.empty((len(rows), *array.shape[1:]), dtype=array.dtype, pin_memory=pin)
    return torch.index_select(array, 0, rows, out=out)


def to_device(batch: torch.Tensor, device) -> torch.Tensor:
    """``batch`` on ``device`` (unchanged when it is there or ``device`` is None); a host batch bound for a CUDA GPU
    goes through page-locked memory with ``non_blocking=True`` (ordered on the current stream, so it is ready for
    the kernels queued after it)."""
    if device is None or batch.device == torch.device(device):
        return batch
    if pinned(device) and batch.device.type == "cpu":
        if not batch.is_pinned():
            batch = batch.pin_memory()
        return batch.to(device, non_blocking=True)
    return batch.to(device)


class _Copy:
    """One batch being copied to the device: its rows gathered on the host, the copy issued on ``stream`` (a side
    CUDA stream, or None: the current stream / a synchronous copy)."""

    def __init__(self, arrays: Sequence, rows: torch.Tensor, device, stream):
        self.stream = stream
        host = [gather(a, rows, pin=stream is not None) for a in arrays]
        with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
            self.tensors = [x.to(device, non_blocking=stream is not None) for x in host]

    def ready(self) -> tuple[torch.Tensor, ...]:
        """The batch, usable on the current stream: wait for the copy, and tell the caching allocator that the
        current stream uses memory allocated on the side stream (so it is not reused while the step runs)."""
        if self.stream is not None:
            current = torch.cuda.current_stream(self.stream.device)
            current.wait_stream(self.stream)
            for x in self.tensors:
                x.record_stream(current)
        return tuple(self.tensors)


def device_batches(
    arrays: Sequence, batches: Iterable[torch.Tensor], device, stream: bool = False
) -> Iterator[tuple[torch.Tensor, ...]]:
    """For each index tensor of ``batches`` (int64 (B,) on the CPU), the rows of every array in ``arrays`` (same
    length N), on ``device``: ``tuple(a[rows] for a in arrays)``.

    ``stream`` False: every array is moved to the device once and indexed there (the in-memory path; arrays must be
    tensors). True: the rows are gathered on the host and copied per batch, the next batch's copy issued before the
    current batch is yielded (on a side CUDA stream from pinned memory when the device is a CUDA GPU). Both give the
    same tensors."""
    device = torch.device(device)
    if not stream:
        arrays = [a.to(device) for a in arrays]
        for rows in batches:
            rows = to_device(rows, device)  # asynchronous: no wait for the previous step per batch
            yield tuple(a[rows] for a in arrays)
        return
    side = torch.cuda.Stream(device) if pinned(device) else None
    pending = None
    for rows in batches:
        issued = _Copy(arrays, rows, device, side)  # the next batch's gather and copy, before this batch's compute
        if pending is not None:
            yield pending.ready()
        pending = issued
    if pending is not None:
        yield pending.ready()
