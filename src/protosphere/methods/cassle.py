"""CaSSLe (Fini et al., "Self-Supervised Models are Continual Learners", CVPR 2022): a self-supervised loss plus a
predictive contrastive distillation towards the frozen model of the previous task.

loss = L_base + distill_weight · cassle_distill(cat(p1, p2), cat(f1, f2), τ_d), the second term from task 1 on, with

* L_base = the loss of the base ``method.base`` names (``moco``: MoCo v2+ with momentum encoder and queue;
  ``simclr``: NT-Xent; any :data:`~protosphere.methods.self_supervised.SSL_BASES` entry), exactly as the method of
  that name computes it — the base is an object this method wraps, as the authors' ``distill_wrapper`` wraps a
  solo-learn method;
* p_v = normalize(predictor(z_v)), predictor = Linear(d, 2048)–BN–ReLU–Linear(2048, d), applied per view; z_v is the
  projection the base hands over in the official code (``distill_input``): the normalised projection for MoCo v2+,
  the raw projector output for SimCLR;
* f_v = normalize(past projector(past backbone(x_v))): the past model is a frozen eval-mode copy of encoder +
  projector taken at the start of every task ≥ 1, before any step, fed the same augmented views.

With ``contrast_scope: global`` the distillation (and the SimCLR loss) sees the rows of every process. The predictor
takes no part in task 0, so under ``fabric.strategy=ddp`` the runner asks DDP to allow unused parameters.
"""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field

from ..config import Registered
from ..losses import cassle_distill
from ..models import Predictor
from ..registry import METHODS
from .moco import MoCoConfig
from .parts import PastModel
from .self_supervised import SSL_BASES, SelfSupervisedMethod


class PastPredictorConfig(MoCoConfig):
    """Settings shared by ``cassle`` and ``sycon``: the base, the predictor and the distillation temperature (and,
    for the MoCo base, its queue and momentum)."""

    base: Annotated[str, Registered(SSL_BASES)] = Field("moco", description="the self-supervised loss it wraps")
    distill_temperature: float = Field(0.2, gt=0)
    predictor_hidden: int = Field(2048, ge=1)


class CaSSLeConfig(PastPredictorConfig):
    name: str = "cassle"
    distill_weight: float = Field(1.0, ge=0)


@METHODS.register("cassle")
class CaSSLe(SelfSupervisedMethod):
    config_class = CaSSLeConfig
    recipe = "ssl/cassle-class-il"
    unused_parameters = True  # the predictor is idle in task 0; DDP must not wait for its gradients

    def __init__(self, config, backbone, num_classes, transforms):
        super().__init__(config, backbone, num_classes, transforms)
        self.predictor = Predictor(config.projection_dim, config.predictor_hidden)
        self.past = PastModel(self)

    def begin_task(self, task):
        super().begin_task(task)
        self.past.begin_task(task)

    def training_step(self, images, labels, step):
        cfg, views = self.config, self.views(images)
        h, z, q = self.encode_views(views)
        loss = self.base.loss(views, q, z, step)
        terms = {cfg.base: loss.detach()}
        if self.past.model is not None:
            f = [self.past.embed(x) for x in views]
            p = [F.normalize(self.predictor(v), dim=1) for v in self.base.distill_input(q, z)]
            distill = cassle_distill(*self.scope(torch.cat(p), torch.cat(f)), temperature=cfg.distill_temperature)
            loss = loss + cfg.distill_weight * distill
            terms["distill"] = distill.detach()
        return self.finish(loss, terms, h, labels)
