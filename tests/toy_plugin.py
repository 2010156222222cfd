"""A user's module that registers a dataset and a backbone of its own (imported by tests/test_registry.py through
``protosphere --import toy_plugin``).

``toy_quadrants``: 8×8 grey images of 4 classes, class c lighting quadrant c; ``toy_linear``: flatten → Linear.
"""

import numpy as np
import torch
import torch.nn as nn

from protosphere.data import ImageDataset
from protosphere.registry import BACKBONES, DATASETS

CALLS = {"dataset": 0, "backbone": 0}


@DATASETS.register("toy_quadrants")
def toy_quadrants(root, download, *, image_size=None) -> ImageDataset:
    CALLS["dataset"] += 1
    rng = np.random.default_rng(0)

    def split(n: int):
        labels = np.arange(n, dtype=np.int64) % 4
        images = rng.integers(0, 60, size=(n, 8, 8, 1), dtype=np.uint8)
        for i, c in enumerate(labels):
            row, col = divmod(int(c), 2)
            images[i, 4 * row : 4 * row + 4, 4 * col : 4 * col + 4] += 180
        return images, labels

    train, test = split(160), split(40)
    return ImageDataset("toy_quadrants", *train, *test, class_names=("tl", "tr", "bl", "br"), source="toy_plugin")


class ToyLinear(nn.Module):
    def __init__(self, in_features: int, out_dim: int = 12):
        super().__init__()
        self.out_dim = out_dim
        self.toy_layer = nn.Linear(in_features, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.toy_layer(x.flatten(1)))


@BACKBONES.register("toy_linear")
def toy_linear(in_channels: int, image_size: int, **options) -> nn.Module:
    CALLS["backbone"] += 1
    return ToyLinear(in_channels * image_size * image_size)
