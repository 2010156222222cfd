"""Long-tailed training sets with the exponential profile of Cui et al., "Class-Balanced Loss Based on Effective
Number of Samples" (CVPR 2019), also used for CIFAR-10/100-LT by LDAM (Cao et al., NeurIPS 2019):

    n_c = floor(n_max · ratio^(c / (C − 1))),   c = 0 … C−1 (rank of the class in ``class_order``),

with imbalance ratio ``ratio = n_min / n_max`` (0.01 by default, "imbalance factor 100"); every class keeps at least
one sample. n_max is the size of the smallest class of the given data, so every class can supply its count (for the
balanced datasets protosphere loads, n_max is simply the per-class size: 5,000 on CIFAR-10 gives the 12,406 images of
CIFAR-10-LT). Which rows of a class are kept is a seeded draw without replacement. Only training data is subsampled;
the test set stays balanced.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Sequence

import numpy as np

from .base import ImageDataset

__all__ = ["long_tail_counts", "long_tail_indices", "long_tail_dataset"]


def long_tail_counts(n_max: int, num_classes: int, ratio: float = 0.01) -> list[int]:
    """Per-rank sample counts ``[floor(n_max · ratio^(c/(C−1))) for c in 0..C−1]``, each at least 1."""
    if n_max < 1 or num_classes < 1:
        raise ValueError(f"long_tail_counts needs n_max >= 1 and num_classes >= 1, got {n_max}, {num_classes}.")
    if not 0 < ratio <= 1:
        raise ValueError(f"The imbalance ratio n_min/n_max must be in (0, 1], got {ratio} (0.01 = factor 100).")
    if num_classes == 1:
        return [int(n_max)]
    return [max(1, math.floor(n_max * ratio ** (c / (num_classes - 1)))) for c in range(num_classes)]


def long_tail_indices(
    labels, ratio: float = 0.01, seed: int = 0, class_order: Sequence[int] | None = None
) -> np.ndarray:
    """Sorted row indices of a long-tailed subset of ``labels`` (int array (N,) with classes 0..C−1).

    ``class_order`` lists the classes from head to tail (default: 0, 1, …, C−1, as in Cui et al.); the class at
    rank c keeps ``long_tail_counts(n_max, C, ratio)[c]`` rows, drawn with ``numpy.random.default_rng(seed)``.
    """
    labels = np.asarray(labels)
    num_classes = int(labels.max()) + 1 if labels.size else 0
    order = list(range(num_classes)) if class_order is None else [int(c) for c in class_order]
    if sorted(order) != list(range(num_classes)):
        raise ValueError(f"class_order must be a permutation of 0..{num_classes - 1}, got {order}.")
    available = np.bincount(labels, minlength=num_classes)
    if (available == 0).any():
        missing = np.flatnonzero(available == 0).tolist()
        raise ValueError(f"Cannot build a long-tailed subset: classes {missing} have no training samples.")
    counts = long_tail_counts(int(available.min()), num_classes, ratio)
    rng = np.random.default_rng(seed)
    keep = [rng.choice(np.flatnonzero(labels == c), size=n, replace=False) for c, n in zip(order, counts)]
    return np.sort(np.concatenate(keep))


def long_tail_dataset(
    dataset: ImageDataset, ratio: float = 0.01, seed: int = 0, class_order: Sequence[int] | None = None
) -> ImageDataset:
    """A copy of ``dataset`` whose training split is long-tailed (:func:`long_tail_indices`); test split unchanged."""
    rows = long_tail_indices(dataset.train_labels, ratio, seed, class_order)
    return replace(
        dataset,
        train_images=dataset.train_images[rows],
        train_labels=dataset.train_labels[rows],
        source=f"{dataset.source} (long-tailed, ratio {ratio:g}, seed {seed})",
    )
