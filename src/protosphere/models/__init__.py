"""Backbones (MLP, small CNN, CIFAR ResNet-18 full and reduced) and heads (projection, predictor, linear, fixed
prototypes, mixture of experts)."""

from protosphere.models.backbones import (
    BACKBONES,
    INIT_SCHEMES,
    MLP,
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
