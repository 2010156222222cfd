"""Normalised classifier losses on the unit hypersphere: ``normface``, ``ntce`` and ``nonl``.

NormFace (Wang et al., "NormFace: L2 hypersphere embedding for face verification", ACM MM 2017) and the two losses
of "Neural Collapse by Design", which import contrastive learning's large negative set (NTCE: the class
weight is the anchor and every batch feature a candidate) and its decoupled alignment/uniformity terms (NONL: the
positive is left out of the denominator; ``bidirectional`` adds the other classes' weights as negatives).

The training step *is* the loss: ``u = normalize(backbone(augment(x)))`` (N, d) — or the normalised projection with
``embedding: projection`` — and raw learnable class weights W (K, d), row-normalised inside the loss; u and the labels
are gathered over processes first (the global batch under DDP). Evaluation logits are ``u · Ŵᵀ`` (the classifier
``head``); ``classifier_weights`` returns Ŵ for the NC3/NC4 metrics when u lives in encoder space.
"""

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ..config import MethodConfig
from ..losses import nonl, normface, ntce
from ..models import ProjectionHead
from ..registry import METHODS
from .base import Method, StepOutput


class NormalizedConfig(MethodConfig):
    temperature: float = Field(0.2, gt=0, description="τ: 0.2 on CIFAR, 0.1 in the NONL recipe")
    embedding: Literal["encoder", "projection"] = "encoder"
    projection_dim: int = Field(128, ge=1)


class NormalizedMethod(Method):
    """Shared part: the embedding u, the class weights and the cosine classifier; subclasses define ``loss``."""

    config_class = NormalizedConfig
    loss_name = ""

    def __init__(self, config, backbone, num_classes, transforms):
        super().__init__(config, backbone, num_classes, transforms)
        dim = backbone.out_dim
        self.projector = None
        if config.embedding == "projection":
            self.projector = ProjectionHead(dim, dim, config.projection_dim)
            dim = config.projection_dim
        self.weight = nn.Parameter(torch.empty(num_classes, dim))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Linear's initialisation

    def embed(self, normalized_images):
        h = self.backbone(normalized_images)
        return F.normalize(h if self.projector is None else self.projector(h), dim=1)

    def forward(self, normalized_images):
        return self.embed(normalized_images)

    def loss(self, u, labels):
        raise NotImplementedError

    def training_step(self, images, labels, step):
        u = self.embed(self.transforms.train(images))
        loss = self.loss(self.gather(u), self.gather(labels))
        return StepOutput(loss, {self.loss_name: loss.detach()})

    def logits(self, images):
        return self.embed(self.transforms.eval(images)) @ F.normalize(self.weight, dim=1).T

    def classifier_weights(self):
        return F.normalize(self.weight, dim=1) if self.projector is None else None


class NormFaceConfig(NormalizedConfig):
    name: str = "normface"


@METHODS.register("normface")
class NormFace(NormalizedMethod):
    """NormFace: cross-entropy on cosine logits u·Ŵᵀ/τ (Wang et al., "NormFace: L2 hypersphere embedding for face
    verification", ACM MM 2017)."""

    config_class = NormFaceConfig
    recipe = "nc/normface"
    loss_name = "normface"

    def loss(self, u, labels):
        return normface(u, labels, self.weight, self.config.temperature)


class NTCEConfig(NormalizedConfig):
    name: str = "ntce"


@METHODS.register("ntce")
class NTCE(NormalizedMethod):
    """NTCE: the class weight as anchor, every batch feature a candidate ("Neural Collapse by Design")."""

    config_class = NTCEConfig
    recipe = "nc/ntce"
    loss_name = "ntce"

    def loss(self, u, labels):
        return ntce(u, labels, self.weight, self.config.temperature)


class NONLConfig(NormalizedConfig):
    name: str = "nonl"
    temperature: float = Field(0.1, gt=0)
    bidirectional: bool = False


@METHODS.register("nonl")
class NONL(NormalizedMethod):
    """NONL: NTCE without the positive in the denominator, optionally bidirectional ("Neural Collapse by
    Design")."""

    config_class = NONLConfig
    recipe = "nc/nonl"
    loss_name = "nonl"

    def loss(self, u, labels):
        return nonl(u, labels, self.weight, self.config.temperature, bidirectional=self.config.bidirectional)
