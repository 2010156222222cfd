"""CaSSLe (Fini et al., "Self-Supervised Models are Continual Learners", CVPR 2022): a self-supervised loss plus a
predictive contrastive distillation towards the frozen model of the previous task.

loss = L_base + distill_weight · cassle_distill(cat(p1, p2), cat(f1, f2), τ_d), the second term from task 1 on, with

* L_base = the SimCLR NT-Xent (``base: simclr``) or the MoCo v2+ symmetric InfoNCE with momentum encoder and queue
  (``base: moco``; :class:`~protosphere.methods.parts.MomentumEncoder`, :class:`~protosphere.methods.parts.KeyQueue`),
  exactly as the ``simclr`` / ``moco`` methods compute it;
* p_v = normalize(predictor(z_v)), predictor = Linear(d, 2048)–BN–ReLU–Linear(2048, d), applied per view; z_v is the
  projection the base method hands over in the official code: the normalised projection for MoCo v2+, the raw
  projector output for SimCLR;
* f_v = normalize(past projector(past backbone(x_v))): the past model is a frozen eval-mode copy of encoder +
  projector taken at the start of every task ≥ 1, before any step, fed the same augmented views.

With ``contrast_scope: global`` the distillation (and the SimCLR loss) sees the rows of every process. The predictor
takes no part in task 0, so under ``fabric.strategy=ddp`` the runner asks DDP to allow unused parameters.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ..losses import cassle_distill, nt_xent
from ..models import Predictor
from ..registry import METHODS
from .moco import RENAMED_MOCO_STATE, MoCoConfig, symmetric_moco_loss
from .parts import KeyQueue, MomentumEncoder, clamp_to_task
from .simclr import SelfSupervisedMethod


class PastPredictorConfig(MoCoConfig):
    """Settings shared by ``cassle`` and ``sycon``: the base loss, the predictor and the distillation temperature."""

    base: Literal["simclr", "moco"] = "moco"
    distill_temperature: float = Field(0.2, gt=0)
    predictor_hidden: int = Field(2048, ge=1)


class CaSSLeConfig(PastPredictorConfig):
    name: str = "cassle"
    distill_weight: float = Field(1.0, ge=0)


@METHODS.register("cassle")
class CaSSLe(SelfSupervisedMethod):
    config_class = CaSSLeConfig
    unused_parameters = True  # the predictor is idle in task 0; DDP must not wait for its gradients
    renamed_state = RENAMED_MOCO_STATE

    def __init__(self, config, backbone, num_classes, transforms):
        super().__init__(config, backbone, num_classes, transforms)
        if config.base == "moco":
            self.momentum_encoder = MomentumEncoder(self.backbone, self.projector, config.base_momentum,
                                                    config.final_momentum)
            self.queue = KeyQueue(config.queue_size, config.projection_dim, clamp=config.clamp_queue)
        self.predictor = Predictor(config.projection_dim, config.predictor_hidden)
        self.register_snapshot("past", lambda: nn.Sequential(self.backbone, self.projector))

    def begin_task(self, task):
        super().begin_task(task)
        if self.config.base == "moco":
            self.queue.begin_task(len(task.train_labels))
        if task.index > 0:
            self.take_snapshot("past")

    def base_loss(self, views, q, step):
        """The base SSL loss; with MoCo it also enqueues this step's keys (after the loss)."""
        if self.config.base == "simclr":
            return nt_xent(*self.scope(*q), temperature=self.config.temperature)
        self.momentum_encoder.update(step, self.backbone, self.projector)
        k = [self.momentum_encoder(x) for x in views]
        keys = torch.stack([self.gather(v) for v in k])
        clamp_to_task([self.queue], keys.shape[1], self.config.name, self.task)
        loss = symmetric_moco_loss(q, k, self.queue.read(), self.config.temperature)
        self.queue.enqueue(keys)
        return loss

    def training_step(self, images, labels, step):
        views = self.views(images)
        h, z = self.encode_views(views)
        q = [F.normalize(v, dim=1) for v in z]
        loss = self.base_loss(views, q, step)
        terms = {self.config.base: loss.detach()}
        past = self.snapshot("past")
        if past is not None:
            with torch.no_grad():
                f = [F.normalize(past(x), dim=1) for x in views]
            p = [F.normalize(self.predictor(v), dim=1) for v in (q if self.config.base == "moco" else z)]
            distill = cassle_distill(*self.scope(torch.cat(p), torch.cat(f)),
                                     temperature=self.config.distill_temperature)
            loss = loss + self.config.distill_weight * distill
            terms["distill"] = distill.detach()
        return self.finish(loss, terms, h, labels)
