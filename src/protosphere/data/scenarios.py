"""Continual-learning scenarios: how a dataset becomes a sequence of tasks.

* **class-IL** — the classes are split into tasks in a class order (given, seeded shuffle, or natural). Labels are
  re-indexed so that task t owns a contiguous block of label ids; the original ids stay in ``Scenario.class_order``.
  Task-IL evaluation uses the same tasks with logits masked to each task's classes.
* **data-IL** — every task has all classes; the training set is cut into disjoint, class-stratified shards.
* **domain-IL** — every task has all classes in a different domain: FMNIST-style rotations (seeded angle per task) or
  pixel permutations (task 0 keeps the identity), or one real domain per task (DomainNet,
  :func:`scenario_from_domains`).

Images are kept as uint8 tensors (N, C, H, W) on the host; the engine moves one task at a time to the device, and
:func:`model_input` turns a batch of them into what a network takes. A dataset memory-mapped from the decoded cache
(:mod:`protosphere.data._decode_cache`, stored (N, C, H, W)) is not read whole here: the training set is indexed only
when ``train_fraction`` < 1, and a task whose rows form one contiguous range (class-IL in the natural class order of
a class-sorted dataset) is a view of the file; other tasks copy their own rows only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ScenarioError


@dataclass
class Task:
    index: int
    classes: tuple[int, ...]
    train_images: torch.Tensor  # uint8 (N, C, H, W)
    train_labels: torch.Tensor  # int64 (N,)
    test_images: torch.Tensor
    test_labels: torch.Tensor

    @property
    def num_train(self) -> int:
        return int(self.train_labels.shape[0])


@dataclass
class Scenario:
    name: str
    kind: str
    tasks: list[Task]
    num_classes: int
    class_order: list[int]
    class_names: list[str]
    image_shape: tuple[int, int, int]  # (C, H, W)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    extra: dict = field(default_factory=dict)

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    @property
    def task_il(self) -> bool:
        """Task-IL evaluation (masking to the task's classes) only makes sense when tasks own disjoint classes."""
        return self.kind == "class_il"

    def classes_up_to(self, task: int) -> list[int]:
        return sorted({c for t in self.tasks[: task + 1] for c in t.classes})


def model_input(images: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """A batch as a network takes it: uint8 pixels (as scenarios and replay buffers hold them) become floats in
    [0, 1] in the default dtype (float32, or float64 in a ``fabric.precision=64-true`` run), floats are cast to it;
    ``channels_last`` puts a 4-D batch in that memory format, the one a convolutional
    backbone built with ``model.channels_last`` keeps its weights in (so no layout conversion happens per layer)."""
    dtype = torch.get_default_dtype()
    x = images.to(dtype).div_(255) if images.dtype == torch.uint8 else images.to(dtype)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def _to_nchw(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, C) → a (N, C, H, W) tensor: a copy of an in-memory array, a view of a memory-mapped cache file
    (whose rows are already (C, H, W), so the transpose is contiguous)."""
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


def _rows(array: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """``array[keep]``, or ``array`` itself (no copy) when ``keep`` is every row in order."""
    return array if len(keep) == len(array) else array[keep]


def _take(images: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``images[rows]`` for sorted ``rows``; a view (no copy) when they are one contiguous range."""
    if len(rows) and int(rows[-1]) - int(rows[0]) + 1 == len(rows):
        return images[int(rows[0]) : int(rows[-1]) + 1]
    return images[rows]


def _subset(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Class-stratified random subset of indices (sorted), at least one sample per present class."""
    if fraction >= 1.0:
        return np.arange(len(labels))
    keep = []
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        count = max(1, int(round(len(rows) * fraction)))
        keep.append(rng.choice(rows, size=count, replace=False))
    return np.sort(np.concatenate(keep))


def split_classes(num_classes: int, num_tasks: int, classes_per_task: list[int] | None = None) -> list[list[int]]:
    """Consecutive blocks of re-indexed class ids, one per task (equal split unless sizes are given)."""
    if classes_per_task is None:
        if num_tasks > num_classes:
            raise ScenarioError(
                f"Cannot split {num_classes} classes into {num_tasks} tasks: at least one task would be empty; "
                f"set scenario.num_tasks to at most {num_classes}."
            )
        base, rest = divmod(num_classes, num_tasks)
        classes_per_task = [base + (1 if t < rest else 0) for t in range(num_tasks)]
    total = sum(classes_per_task)
    if total != num_classes:
        raise ScenarioError(
            f"scenario.classes_per_task sums to {total} but the dataset has {num_classes} classes; "
            f"make the sizes add up to {num_classes}."
        )
    blocks, start = [], 0
    for size in classes_per_task:
        blocks.append(list(range(start, start + size)))
        start += size
    return blocks


def rotate_images(images: torch.Tensor, degrees: float) -> torch.Tensor:
    """Rotate a uint8 (N, C, H, W) batch about the centre by `degrees` (bilinear, zero fill)."""
    if degrees % 360 == 0:
        return images.clone()
    theta = math.radians(degrees)
    matrix = torch.tensor([[math.cos(theta), -math.sin(theta), 0.0], [math.sin(theta), math.cos(theta), 0.0]])
    out = torch.empty_like(images)
    for start in range(0, len(images), 4096):
        chunk = images[start : start + 4096].float()
        grid = F.affine_grid(matrix.expand(len(chunk), 2, 3), list(chunk.shape), align_corners=False)
        rotated = F.grid_sample(chunk, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        out[start : start + 4096] = rotated.round().clamp_(0, 255).to(torch.uint8)
    return out


def permute_pixels(images: torch.Tensor, permutation: torch.Tensor) -> torch.Tensor:
    n, c, h, w = images.shape
    return images.reshape(n, c, h * w)[:, :, permutation].reshape(n, c, h, w).contiguous()


def build_scenario(
    dataset,
    kind: str = "class_il",
    num_tasks: int = 5,
    *,
    classes_per_task: list[int] | None = None,
    class_order: list[int] | None = None,
    shuffle_classes: bool = False,
    seed: int = 0,
    train_fraction: float = 1.0,
    domain: str = "rotation",
    max_rotation: float = 180.0,
) -> Scenario:
    """Split an :class:`~protosphere.data.ImageDataset` into tasks. One ``seed`` fixes class order, shards, domains."""
    rng = np.random.default_rng(seed)
    num_classes = dataset.num_classes
    train_keep = _subset(dataset.train_labels, train_fraction, rng)
    train_x, train_y = _to_nchw(_rows(dataset.train_images, train_keep)), dataset.train_labels[train_keep]
    test_x, test_y = _to_nchw(dataset.test_images), dataset.test_labels
    mean, std = dataset.channel_stats()
    names = list(dataset.class_names)
    common = dict(image_shape=tuple(train_x.shape[1:]), mean=tuple(mean), std=tuple(std))

    if kind == "class_il":
        if class_order is not None:
            if sorted(class_order) != list(range(num_classes)):
                raise ScenarioError(
                    f"scenario.class_order must be a permutation of 0..{num_classes - 1} "
                    f"({dataset.name} has {num_classes} classes), got {class_order}."
                )
            order = list(class_order)
        elif shuffle_classes:
            order = rng.permutation(num_classes).tolist()
        else:
            order = list(range(num_classes))
        blocks = split_classes(num_classes, num_tasks, classes_per_task)
        relabel = np.empty(num_classes, dtype=np.int64)
        relabel[order] = np.arange(num_classes)
        train_new = torch.from_numpy(relabel[train_y])
        test_new = torch.from_numpy(relabel[test_y])
        tasks = []
        for index, block in enumerate(blocks):
            block_t = torch.tensor(block)
            train_rows = torch.isin(train_new, block_t).nonzero().flatten()
            test_rows = torch.isin(test_new, block_t).nonzero().flatten()
            if len(train_rows) == 0:
                raise ScenarioError(
                    f"Task {index} (classes {block}) has no training images; "
                    f"raise data.train_fraction or use fewer tasks."
                )
            tasks.append(
                Task(
                    index,
                    tuple(block),
                    _take(train_x, train_rows),
                    train_new[train_rows],
                    _take(test_x, test_rows),
                    test_new[test_rows],
                )
            )
        return Scenario(f"seq-{dataset.name}", kind, tasks, num_classes, order, [names[c] for c in order], **common)

    if kind not in ("data_il", "domain_il"):
        raise ScenarioError(f"Unknown scenario kind {kind!r}; use class_il, data_il or domain_il.")
    all_classes = tuple(range(num_classes))
    train_y_t, test_y_t = torch.from_numpy(train_y), torch.from_numpy(test_y)
    if kind == "data_il":
        shards: list[list[int]] = [[] for _ in range(num_tasks)]
        for c in range(num_classes):
            rows = rng.permutation(np.flatnonzero(train_y == c))
            for t, part in enumerate(np.array_split(rows, num_tasks)):
                shards[t].extend(part.tolist())
        tasks = []
        for t, rows in enumerate(shards):
            if not rows:
                raise ScenarioError(
                    f"Data-IL shard {t} is empty: {len(train_y)} training images cannot fill "
                    f"{num_tasks} shards; use fewer tasks."
                )
            rows_t = torch.tensor(sorted(rows))
            tasks.append(Task(t, all_classes, train_x[rows_t], train_y_t[rows_t], test_x, test_y_t))
        return Scenario(f"{dataset.name}-data-il", kind, tasks, num_classes, list(all_classes), names, **common)

    tasks = []
    domains = []
    generator = torch.Generator().manual_seed(seed)
    for t in range(num_tasks):
        if domain == "rotation":
            angle = 0.0 if t == 0 else float(torch.rand((), generator=generator)) * max_rotation
            domains.append(angle)
            make = lambda x, a=angle: rotate_images(x, a)  # noqa: E731
        elif domain == "permutation":
            pixels = train_x.shape[2] * train_x.shape[3]
            perm = torch.arange(pixels) if t == 0 else torch.randperm(pixels, generator=generator)
            domains.append(t)
            make = lambda x, p=perm: permute_pixels(x, p)  # noqa: E731
        else:
            raise ScenarioError(f"Unknown domain {domain!r}; use rotation or permutation.")
        tasks.append(Task(t, all_classes, make(train_x), train_y_t, make(test_x), test_y_t))
    return Scenario(
        f"{dataset.name}-{domain}-domain-il",
        kind,
        tasks,
        num_classes,
        list(all_classes),
        names,
        extra={"domains": domains},
        **common,
    )


def scenario_from_domains(datasets, train_fraction: float = 1.0, seed: int = 0) -> Scenario:
    """Domain-IL from one :class:`~protosphere.data.ImageDataset` per domain (same label space, e.g. DomainNet's):
    task t = domain t's training images and test images. Normalisation statistics pool every domain's training
    pixels; ``train_fraction`` keeps a class-stratified subset of each domain."""
    if not datasets:
        raise ScenarioError("a domain-IL scenario needs at least one domain.")
    names = list(datasets[0].class_names)
    shapes = {tuple(d.train_images.shape[1:]) for d in datasets}
    if any(list(d.class_names) != names for d in datasets) or len(shapes) != 1:
        raise ScenarioError("every domain must share the class list and the image size.")
    rng = np.random.default_rng(seed)
    all_classes = tuple(range(len(names)))
    tasks, weights, means, squares = [], [], [], []
    for t, dataset in enumerate(datasets):
        keep = _subset(dataset.train_labels, train_fraction, rng)
        tasks.append(
            Task(
                t,
                all_classes,
                _to_nchw(_rows(dataset.train_images, keep)),
                torch.from_numpy(dataset.train_labels[keep]),
                _to_nchw(dataset.test_images),
                torch.from_numpy(dataset.test_labels),
            )
        )
        mean, std = dataset.channel_stats()
        weights.append(dataset.train_images.size)
        means.append(np.asarray(mean))
        squares.append(np.asarray(std) ** 2 + np.asarray(mean) ** 2)
    w = np.asarray(weights, dtype=np.float64) / sum(weights)
    mean = sum(wi * m for wi, m in zip(w, means))
    std = np.sqrt(np.maximum(sum(wi * q for wi, q in zip(w, squares)) - mean**2, 1e-12))
    domains = [d.name.removeprefix("domainnet_") for d in datasets]
    return Scenario(
        f"{datasets[0].name.split('_')[0]}-domain-il",
        "domain_il",
        tasks,
        len(names),
        list(all_classes),
        names,
        image_shape=tuple(tasks[0].train_images.shape[1:]),
        mean=tuple(map(float, mean)),
        std=tuple(map(float, std)),
        extra={"domains": domains},
    )
