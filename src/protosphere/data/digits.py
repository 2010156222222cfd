"""scikit-learn's bundled 8×8 handwritten digits: a real dataset that needs no download, for tests and demos.

The 1,797 images hold values 0–16; they are scaled to uint8 0–255 (``round(v · 255 / 16)``) so that every dataset
shares one pixel convention. scikit-learn ships no train/test split, so each class is shuffled with a generator seeded
by ``seed`` and ``round(0.2 · n)`` of its n images become test images (a stratified 80/20 split, the same on every
machine).
"""

from __future__ import annotations

import numpy as np

from protosphere.data.base import ImageDataset
from protosphere.errors import DatasetError

__all__ = ["load_digits", "stratified_split"]


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted train and test indices with ``round(test_fraction · n_c)`` test rows from each class c."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        rows = rows[rng.permutation(len(rows))]
        n_test = int(round(test_fraction * len(rows)))
        test.append(rows[:n_test])
        train.append(rows[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def load_digits(seed: int = 0) -> ImageDataset:
    """The scikit-learn digits as an :class:`ImageDataset` (8×8×1, 10 classes, ≈1,437 train / 360 test)."""
    try:
        import sklearn
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as exc:
        raise DatasetError(
            "the digits dataset comes with scikit-learn, which is not installed in this environment; install it with "
            "`pip install scikit-learn` (or `pip install protosphere[dev]`)."
        ) from exc
    bunch = sk_load_digits()
    images = np.rint(np.asarray(bunch.images, dtype=np.float64) * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    labels = np.asarray(bunch.target, dtype=np.int64)
    train, test = stratified_split(labels, 0.2, seed)
    return ImageDataset(
        name="digits",
        train_images=images[train][..., None],
        train_labels=labels[train],
        test_images=images[test][..., None],
        test_labels=labels[test],
        class_names=tuple(str(i) for i in range(10)),
        source=f"scikit-learn {sklearn.__version__} sklearn.datasets.load_digits (bundled, seeded 80/20 split, "
        f"seed {seed})",
    )
