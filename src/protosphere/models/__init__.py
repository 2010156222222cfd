"""Backbones (MLP, small CNN, ResNet-18 full and reduced with a CIFAR or ImageNet stem) and heads (projection,
predictor, linear, fixed prototypes, mixture of experts)."""

from protosphere.models.backbones import (
    BACKBONES,
    INIT_SCHEMES,
    MLP,
    STEMS,
    BasicBlock,
    CifarResNet18,
    SmallCNN,
    build_backbone,
    count_parameters,
    init_weights,
    to_channels_last,
)
from protosphere.models.heads import (
    FixedPrototypeClassifier,
    LinearClassifier,
    MixtureOfExperts,
    MoEOutput,
    Predictor,
    ProjectionHead,
)

__all__ = [
    "BACKBONES",
    "MLP",
    "BasicBlock",
    "CifarResNet18",
    "STEMS",
    "SmallCNN",
    "build_backbone",
    "count_parameters",
    "init_weights",
    "INIT_SCHEMES",
    "to_channels_last",
    "FixedPrototypeClassifier",
    "LinearClassifier",
    "MixtureOfExperts",
    "MoEOutput",
    "Predictor",
    "ProjectionHead",
]
