"""The paper configs follow their sources' image pipelines: the CaSSLe/PNR class split, solo-learn's asymmetric
ImageNet-100 recipe with torchvision's ImageNet stem, its CIFAR recipe with solo-learn's CIFAR stem, and Co2L's and
FNC2's Tiny-ImageNet crop scale and blur — read from the configs and built as a run builds them."""

from __future__ import annotations

import pytest
import torch

from protosphere.config import SHIPPED_CONFIGS, load_config
from protosphere.data.augment import GaussianBlur, RandomSolarize, ViewTransforms, build_augmentation
from protosphere.models import build_backbone

PAPER = SHIPPED_CONFIGS / "paper"
SSL = [f"{m}-{d}.yaml" for m in ("cassle", "sycon") for d in ("cifar100-5t", "imagenet100-5t", "imagenet100-10t")]
TINY = [f"{m}-seq-tinyimagenet-{b}.yaml" for m in ("co2l", "fnc2") for b in (0, 200, 500)]


def _augmentation(config, size: int):
    aug = config.train.augment
    return build_augmentation(config.train.augmentation, size, 3, 0.5, 0.25, views=aug.view_options(), **aug.options())


def _kinds(pipeline) -> dict[str, object]:
    return {type(t).__name__: t for t in pipeline.transforms}


@pytest.mark.parametrize("name", SSL)
def test_cassle_and_pnr_split_classes_as_their_code(name):
    """``torch.randperm(100).chunk(T)`` after ``seed_everything(5)`` (CaSSLe's main_pretrain.py; PNR's default seed)."""
    config = load_config(PAPER / name)
    torch.manual_seed(5)
    expected = torch.randperm(100)
    assert config.scenario.class_order == expected.tolist()
    assert config.scenario.classes_per_task is None  # equal blocks of the order, as chunk(T) cuts it
    assert [len(c) for c in expected.chunk(config.scenario.num_tasks)] == [100 // config.scenario.num_tasks] * (
        config.scenario.num_tasks
    )
    assert config.method.projection_batch_norm is False  # mocov2plus.py: Linear-ReLU-Linear


@pytest.mark.parametrize("name", [n for n in SSL if "imagenet100" in n])
def test_imagenet100_ssl_configs_are_solo_learns_asymmetric_recipe(name):
    config = load_config(PAPER / name)
    assert config.data.image_size == 224 and config.model.stem == "imagenet"
    assert build_backbone("resnet18", 3, 224, stem=config.model.stem).conv1.kernel_size == (7, 7)
    aug = _augmentation(config, config.data.image_size)
    assert isinstance(aug, ViewTransforms) and len(aug.pipelines) == 2
    for view, (blur_p, solarize_p) in enumerate(((1.0, 0.0), (0.1, 0.2))):
        kinds = _kinds(aug.pipelines[view])
        crop, jitter, grey = kinds["RandomResizedCrop"], kinds["ColorJitter"], kinds["RandomGrayscale"]
        assert crop.scale == (0.08, 1.0) and crop.flip_p == 0.5
        assert (jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue, jitter.p) == (
            0.4,
            0.4,
            0.2,
            0.1,
            0.8,
        )
        assert grey.p == 0.2
        blur = kinds["GaussianBlur"]
        assert isinstance(blur, GaussianBlur) and blur.p == blur_p
        assert blur.kernel_size == 23 and blur.sigma == (0.1, 2.0)  # solo-learn's DALI window, sigma 0.1-2
        assert (kinds["RandomSolarize"].p if "RandomSolarize" in kinds else 0.0) == solarize_p


@pytest.mark.parametrize("name", [n for n in SSL if "cifar100" in n])
def test_cifar100_ssl_configs_are_solo_learns_cifar_recipe(name):
    config = load_config(PAPER / name)
    assert config.model.stem == "cifar_pad2"
    aug = _augmentation(config, 32)
    first, second = (_kinds(p) for p in aug.pipelines)
    assert "GaussianBlur" not in first and "GaussianBlur" not in second  # --gaussian_prob 0.0 0.0
    assert "RandomSolarize" not in first and isinstance(second["RandomSolarize"], RandomSolarize)
    assert second["RandomSolarize"].p == 0.2
    assert first["RandomResizedCrop"].scale == (0.08, 1.0) and first["ColorJitter"].saturation == 0.2


@pytest.mark.parametrize("name", TINY)
def test_tiny_imagenet_configs_use_the_authors_crop_and_blur(name):
    """Co2L's main.py and FNC2's transforms_utils.py: scale (0.1, 1), GaussianBlur(64 // 20 * 2 + 1, (0.1, 2)) p 0.5."""
    config = load_config(PAPER / name)
    assert config.model.stem == "cifar"  # resnet_big.py, at 64 px too
    kinds = _kinds(_augmentation(config, 64))
    assert kinds["RandomResizedCrop"].scale == (0.1, 1.0)
    blur = kinds["GaussianBlur"]
    assert (blur.kernel_size, blur.sigma, blur.p) == (7, (0.1, 2.0), 0.5)
    assert "RandomSolarize" not in kinds
