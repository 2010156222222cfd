"""Supervised contrastive learning (Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020) with the
class-mean classifier of "Neural Collapse by Design".

A batch of B images becomes two augmented views ``cat(view1, view2)``; ``z = normalize(projector(backbone(·)))`` and
the loss is :func:`protosphere.losses.supcon` on the gathered 2B rows (global batch under DDP). NC by Design shows that
SupCon already optimises a classifier whose weights are the class-mean embeddings, so no linear probe is needed: every
step updates :class:`~protosphere.geometry.RunningClassMeans` (EMA, momentum 0.99) with the L2-normalised encoder
features (``class_mean_space: encoder``; ``projection`` uses z instead) of both views.

Classifiers, side by side (the first is the headline):

* ``class_mean_ema`` — cosine to the EMA class means accumulated during training (no extra pass, no stored data);
* ``ncm`` — cosine to exact class means recomputed on the clean training images after each task (representation base);
* ``linear_probe`` — the two-stage protocol, for comparison.
"""

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from ..evaluation import ncm_logits
from ..geometry import RunningClassMeans
from ..losses import supcon
from ..registry import METHODS
from .base import StepOutput
from .representation import RepresentationConfig, RepresentationMethod

SupConClassifier = Literal["class_mean_ema", "nearest_prototype", "ncm", "linear_probe", "knn"]


class SupConConfig(RepresentationConfig):
    name: str = "supcon"
    temperature: float = Field(0.1, gt=0)
    base_temperature: float = Field(0.07, gt=0, description="SupContrast's loss scale τ/τ_base")
    class_mean_momentum: float = Field(0.99, ge=0, lt=1)
    class_mean_space: Literal["encoder", "projection"] = "encoder"
    classifiers: list[SupConClassifier] = Field(default_factory=lambda: ["class_mean_ema", "ncm", "linear_probe"])


@METHODS.register("supcon")
class SupCon(RepresentationMethod):
    config_class = SupConConfig
    views_per_image = 2
    recipe = "nc/supcon"

    def __init__(self, config, backbone, num_classes, transforms):
        super().__init__(config, backbone, num_classes, transforms)
        dim = backbone.out_dim if config.class_mean_space == "encoder" else config.projection_dim
        self.running_means = RunningClassMeans(num_classes, dim, momentum=config.class_mean_momentum)

    def training_step(self, images, labels, step):
        cfg = self.config
        h = self.backbone(self.two_views(images))
        z = F.normalize(self.projector(h), dim=1)
        y = self.gather(torch.cat([labels, labels]))
        loss = supcon(self.gather(z), y, temperature=cfg.temperature, base_temperature=cfg.base_temperature)
        tracked = h if cfg.class_mean_space == "encoder" else z
        self.running_means.update(self.gather(tracked.detach()), y)
        return StepOutput(loss, {"supcon": loss.detach()})

    def _mean_space(self, images):
        if self.config.class_mean_space == "encoder":
            return self.features(images)
        return self(self.transforms.eval(images))

    def extra_classifiers(self):
        return {"class_mean_ema": lambda x: ncm_logits(self._mean_space(x), self.running_means.means)}

    def classifier_weights(self):
        """The EMA class means when they live in encoder space (where the NC metrics are measured)."""
        return self.running_means.means if self.config.class_mean_space == "encoder" else self.class_means
