"""SimCLR (Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations", ICML 2020) trained
task after task, and the common base of the self-supervised methods (``simclr``, ``moco``, ``cassle``, ``sycon``).

Step: two augmentations x1, x2 of the B images; each view passes the encoder and the projector on its own (BatchNorm
statistics per view, as in solo-learn); z_v = normalize(projector(backbone(x_v))); loss = nt_xent(z1, z2, τ).
Labels never enter the loss. ``contrast_scope: global`` gathers z1 and z2 from every process (with gradients) so the
loss is over the global batch; ``local`` keeps it per process, as the official CaSSLe/PNR code does.

Projector: ``projection_hidden`` (2048) wide, Linear–BN–ReLU–Linear as in solo-learn's SimCLR / MoCo v2+ projector
(``projection_batch_norm: false`` gives the Linear–ReLU–Linear projector of the CaSSLe/PNR fork of solo-learn).

Evaluation after each task uses labels only there: a linear probe and a weighted kNN on frozen encoder features,
fitted on the training data of every task seen so far (``probe_data: seen``; ``current`` uses the last task only).
``online_classifier: true`` also trains a linear classifier on **detached** encoder features of both views for
display (its cross-entropy is added to the loss, but the encoder receives no gradient from it).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ..losses import nt_xent
from ..registry import METHODS
from .base import StepOutput
from .representation import Classifier, RepresentationConfig, RepresentationMethod


class SelfSupervisedConfig(RepresentationConfig):
    name: str = "simclr"
    temperature: float = Field(0.2, gt=0)
    projection_hidden: int | None = Field(2048, ge=1, description="default: the encoder's feature size")
    projection_batch_norm: bool = True
    contrast_scope: Literal["local", "global"] = "global"
    online_classifier: bool = False
    probe_data: Literal["seen", "current"] = "seen"
    classifiers: list[Classifier] = Field(default_factory=lambda: ["linear_probe", "knn"])


class SelfSupervisedMethod(RepresentationMethod):
    """Shared pieces: two views, per-view encoding, contrast scope, the optional online classifier, evaluation data."""

    config_class = SelfSupervisedConfig

    def __init__(self, config, backbone, num_classes, transforms):
        super().__init__(config, backbone, num_classes, transforms)
        self.online = nn.Linear(backbone.out_dim, num_classes) if config.online_classifier else None

    def views(self, images: torch.Tensor) -> list[torch.Tensor]:
        return [self.transforms.train(images), self.transforms.train(images)]

    def encode_views(self, views):
        """Per view: encoder features h_v and raw projections z_v (normalise before a loss)."""
        h = [self.backbone(x) for x in views]
        return h, [self.projector(f) for f in h]

    def scope(self, *tensors: torch.Tensor) -> list[torch.Tensor]:
        """The rows a batch-contrastive loss sees: gathered from every process (global) or this process's (local)."""
        return [self.gather(t) for t in tensors] if self.config.contrast_scope == "global" else list(tensors)

    def finish(self, loss: torch.Tensor, terms: dict, h, labels: torch.Tensor) -> StepOutput:
        if self.online is not None:
            logits = self.online(torch.cat(h).detach())
            targets = labels.repeat(len(h))
            ce = F.cross_entropy(logits, targets)
            loss = loss + ce
            terms["online_ce"] = ce.detach()
            terms["online_acc"] = (logits.detach().argmax(1) == targets).float().mean() * 100
        return StepOutput(loss, terms)

    def evaluation_data(self, task):
        if self.config.probe_data == "current":
            return task.train_images, task.train_labels
        return task.seen_data()

    def classifier_data(self):
        data = super().classifier_data()
        if self.config.probe_data == "seen":
            seen = "the training data of every task seen so far (the CaSSLe/PNR linear evaluation)"
            data.update(ncm=seen, linear_probe=seen, knn=seen)
        return data


@METHODS.register("simclr")
class SimCLR(SelfSupervisedMethod):
    config_class = SelfSupervisedConfig

    def training_step(self, images, labels, step):
        h, z = self.encode_views(self.views(images))
        z1, z2 = (F.normalize(v, dim=1) for v in z)
        loss = nt_xent(*self.scope(z1, z2), temperature=self.config.temperature)
        return self.finish(loss, {"nt_xent": loss.detach()}, h, labels)
