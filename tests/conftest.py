import os

import numpy as np
import pytest
import torch

torch.set_num_threads(int(os.environ.get("PROTOSPHERE_TEST_THREADS", "2")))


@pytest.fixture(autouse=True)
def decode_cache(tmp_path_factory, monkeypatch):
    """Each test decodes image-file datasets into its own empty cache (never the user's ~/.cache), also for the
    processes it starts."""
    folder = tmp_path_factory.mktemp("decoded")
    monkeypatch.setenv("PROTOSPHERE_DECODE_CACHE", str(folder))
    return folder


def make_dataset(num_classes=4, per_class_train=12, per_class_test=5, size=8, channels=1, seed=0, name="toy"):
    """A tiny ImageDataset whose pixel values encode the label, so it is learnable in a few steps."""
    from protosphere.data.base import ImageDataset

    rng = np.random.default_rng(seed)

    def split(per_class):
        labels = np.repeat(np.arange(num_classes), per_class).astype(np.int64)
        images = rng.integers(0, 40, size=(len(labels), size, size, channels)).astype(np.uint8)
        for c in range(num_classes):  # a bright stripe whose row depends on the class
            images[labels == c, (c * size) // num_classes, :, :] = 255
        return images, labels

    train_x, train_y = split(per_class_train)
    test_x, test_y = split(per_class_test)
    return ImageDataset(name, train_x, train_y, test_x, test_y, tuple(f"c{c}" for c in range(num_classes)), "memory")


@pytest.fixture
def toy_dataset():
    return make_dataset()
