"""Long-tailed training sets (Cui et al. 2019 profile) and the FMNIST-C style corruption suite with mCE."""

import math

import numpy as np
import pytest
import torch

from conftest import make_dataset
from protosphere.data.corruptions import (
    CORRUPTIONS,
    corrupt,
    corruption_errors,
    evaluate_corruptions,
    mean_corruption_error,
)
from protosphere.data.imbalance import long_tail_counts, long_tail_dataset, long_tail_indices


# long tail --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_max,classes,ratio", [(6000, 10, 0.01), (500, 100, 0.01), (5000, 10, 0.02), (40, 7, 0.1)])
def test_long_tail_counts_follow_the_exponential_profile(n_max, classes, ratio):
    counts = long_tail_counts(n_max, classes, ratio)
    assert counts == [max(1, int(math.floor(n_max * ratio ** (c / (classes - 1))))) for c in range(classes)]
    assert counts[0] == n_max and counts == sorted(counts, reverse=True)


def test_long_tail_counts_reproduce_cifar10_lt():
    counts = long_tail_counts(5000, 10, 0.01)
    assert counts == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50] and sum(counts) == 12406
    assert long_tail_counts(5, 3, 0.01) == [5, 1, 1]  # floor(0.5) → at least one sample
    assert long_tail_counts(9, 1) == [9]
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="ratio"):
            long_tail_counts(10, 3, bad)


def test_long_tail_subset_counts_order_and_seed():
    labels = np.repeat(np.arange(5), 100)
    rows = long_tail_indices(labels, 0.05, seed=1)
    expected = long_tail_counts(100, 5, 0.05)
    assert np.bincount(labels[rows]).tolist() == expected
    assert (np.diff(rows) > 0).all()
    assert np.array_equal(rows, long_tail_indices(labels, 0.05, seed=1))
    assert not np.array_equal(rows, long_tail_indices(labels, 0.05, seed=2))
    order = [3, 0, 4, 1, 2]  # head → tail
    by_order = np.bincount(labels[long_tail_indices(labels, 0.05, seed=1, class_order=order)], minlength=5)
    assert [by_order[c] for c in order] == expected
    # n_max is the smallest class, so every class can supply its count
    uneven = np.concatenate([np.full(30, 0), np.full(20, 1), np.full(25, 2)])
    assert np.bincount(uneven[long_tail_indices(uneven, 0.1)]).tolist() == long_tail_counts(20, 3, 0.1)
    with pytest.raises(ValueError, match="permutation"):
        long_tail_indices(labels, 0.1, class_order=[0, 1, 2, 3, 3])


def test_long_tail_dataset_changes_training_data_only():
    dataset = make_dataset(num_classes=4, per_class_train=30, per_class_test=5)
    lt = long_tail_dataset(dataset, ratio=0.1, seed=0)
    assert np.bincount(lt.train_labels).tolist() == long_tail_counts(30, 4, 0.1) == [30, 13, 6, 3]
    assert lt.test_images is dataset.test_images and lt.test_labels is dataset.test_labels
    rows = long_tail_indices(dataset.train_labels, 0.1, seed=0)
    assert np.array_equal(lt.train_images, dataset.train_images[rows])
    assert lt.num_classes == 4 and "long-tailed" in lt.source


# corruptions ------------------------------------------------------------------------------------------------------
def structured_images(n=24, size=28, seed=0):
    """Grayscale images with edges, flat regions and texture (rectangles and discs of random intensity)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    images = torch.zeros(n, 1, size, size)
    for i in range(n):
        for _ in range(3):
            x0, y0 = torch.randint(0, size - 8, (2,), generator=g).tolist()
            w, h = torch.randint(4, 14, (2,), generator=g).tolist()
            images[i, 0, y0 : y0 + h, x0 : x0 + w] = 0.3 + 0.7 * torch.rand((), generator=g)
        cx, cy, r = (torch.rand(3, generator=g) * torch.tensor([size, size, size / 4])).tolist()
        images[i, 0][(xx - cx) ** 2 + (yy - cy) ** 2 < (r + 2) ** 2] = torch.rand((), generator=g)
    images += 0.05 * torch.rand(images.shape, generator=g)
    return images.clamp(0, 1).mul(255).round().to(torch.uint8)


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_corruption_is_monotone_in_severity_keeps_dtype_and_is_seeded(name):
    clean = structured_images()
    outputs = [corrupt(clean, name, s, seed=5) for s in range(1, 6)]
    for out in outputs:
        assert out.dtype == torch.uint8 and out.shape == clean.shape
    mse = [float((out.float() - clean.float()).pow(2).mean()) for out in outputs]
    assert mse[0] > 0 and all(b > a for a, b in zip(mse, mse[1:])), mse
    assert torch.equal(corrupt(clean, name, 3, seed=5), outputs[2])
    colour = structured_images(4, 32).expand(-1, 3, -1, -1).contiguous()
    assert corrupt(colour, name, 2).shape == colour.shape


def test_random_corruptions_depend_on_the_seed_and_inputs_are_checked():
    clean = structured_images(8)
    for name in ("gaussian_noise", "shot_noise", "impulse_noise", "elastic"):
        assert not torch.equal(corrupt(clean, name, 3, seed=0), corrupt(clean, name, 3, seed=1))
    for name in ("gaussian_blur", "contrast", "brightness", "pixelate"):  # deterministic operations
        assert torch.equal(corrupt(clean, name, 3, seed=0), corrupt(clean, name, 3, seed=1))
    with pytest.raises(ValueError, match="severity"):
        corrupt(clean, "contrast", 6)
    with pytest.raises(ValueError, match="uint8"):
        corrupt(clean.float(), "contrast", 1)
    with pytest.raises(ValueError, match="Unknown corruption"):
        corrupt(clean, "fog", 1)


def test_contrast_and_brightness_match_their_formulas():
    clean = structured_images(4)
    x = clean.float() / 255
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    expected = ((x - mean) * 0.4 + mean).clamp(0, 1).mul(255).round().to(torch.uint8)
    assert torch.equal(corrupt(clean, "contrast", 3), expected)
    assert torch.equal(corrupt(clean, "brightness", 5), (x + 0.3).clamp(0, 1).mul(255).round().to(torch.uint8))


def test_mean_corruption_error():
    errors = {"a": [10.0, 20.0], "b": [5.0, 5.0]}
    baseline = {"a": [20.0, 20.0], "b": [10.0, 10.0]}
    assert corruption_errors(errors, baseline) == {"a": 75.0, "b": 50.0}
    assert mean_corruption_error(errors, baseline) == 62.5
    assert mean_corruption_error(baseline, baseline) == 100.0
    with pytest.raises(ValueError, match="baseline has no errors"):
        mean_corruption_error({"c": [1.0]}, baseline)
    with pytest.raises(ValueError, match="no error"):
        mean_corruption_error({"a": [1.0, 2.0]}, {"a": [0.0, 0.0]})


def test_evaluate_corruptions_errors_and_determinism():
    images = structured_images(20)
    labels = (images.float().mean(dim=(1, 2, 3)) > images.float().mean()).long()

    def brightness_rule(x):  # a "classifier" that thresholds the mean intensity of the clean images
        score = x.mean(dim=(1, 2, 3)) - images.float().mean() / 255
        return torch.stack([-score, score], dim=1)

    names = ["gaussian_noise", "contrast", "brightness"]
    errors = evaluate_corruptions(brightness_rule, images, labels, names, severities=(1, 3, 5), batch_size=7, seed=2)
    assert list(errors) == names and all(len(v) == 3 for v in errors.values())
    assert all(0 <= e <= 100 for v in errors.values() for e in v)
    assert errors["brightness"][-1] > 0  # brightening pushes dark images over the threshold
    assert errors == evaluate_corruptions(brightness_rule, images, labels, names, (1, 3, 5), batch_size=7, seed=2)
    constant = evaluate_corruptions(
        lambda x: torch.tensor([[1.0, 0.0]]).expand(len(x), 2),
        images,
        torch.zeros(20, dtype=torch.long),
        ["pixelate"],
        (1, 2),
    )
    assert constant == {"pixelate": [0.0, 0.0]}
