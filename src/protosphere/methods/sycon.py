"""Sy-CON / PNR (Cha et al., "Regularizing with Pseudo-Negatives for Continual Self-Supervised Learning", ICML 2024,
arXiv 2306.05101; official code csm9493/PNR): pseudo-negatives from the current and the past model.

Task 0 is the base alone (``method.base``: ``moco``, default, or ``simclr``; exactly the method of that name). From
task 1 on the base's pseudo-negative form **replaces** its loss (``pseudo_negative_loss``; each base's file gives the
equation): it compares p_v = normalize(predictor(z_v)) (predictor Linear(d, 2048)–BN–ReLU–Linear(2048, d); z_v the
projection the base hands over, as for CaSSLe) with f_v, the past model's normalised projection of the **same** view
v, and takes the negatives of both models. The past model is a frozen eval-mode copy of encoder + projector taken at
the start of every task ≥ 1; the predictor and any state of the pseudo-negative form (MoCo: the past model's queue)
carry over between tasks.

Mapping of the MoCo form to the official ``moco_pnr_loss_func(query1, key1, queue1, distill1, query2, key2, queue2,
distill2)``: it is called as ``(z1, k2, queue[1], p1, frozen_z1, k1, past_queue[1], p2)``, so its second term
``l_pos2 = distill1·query2`` is p_1·f_1 — the predictor output of view 1 against the past model's projection of the
same view 1 — with negatives ``distill1·cat(queue1, queue2)`` = p_1 against the other view's slots of both queues;
``key2`` and ``distill2`` are unused. Hence p = normalize(predictor(q_v)), f = f_v. (The official code enqueues the
f's before the loss but computes it on a copy taken earlier, which is the same as enqueuing after.)

The predictor takes no part in task 0, so under ``fabric.strategy=ddp`` the runner asks DDP to allow unused parameters.
"""

from __future__ import annotations

import torch.nn.functional as F

from ..errors import ConfigError
from ..models import Predictor
from ..registry import METHODS
from .cassle import PastPredictorConfig
from .parts import PastModel
from .self_supervised import SelfSupervisedBase, SelfSupervisedMethod


class SyConConfig(PastPredictorConfig):
    name: str = "sycon"


@METHODS.register("sycon")
class SyCon(SelfSupervisedMethod):
    config_class = SyConConfig
    recipe = "ssl/sycon-class-il"
    unused_parameters = True  # the predictor is idle in task 0; DDP must not wait for its gradients

    def __init__(self, config, backbone, num_classes, transforms):
        super().__init__(config, backbone, num_classes, transforms)
        if type(self.base).pseudo_negative_loss is SelfSupervisedBase.pseudo_negative_loss:
            raise ConfigError(
                f"sycon: the base `{config.base}` has no pseudo-negative form; choose another method.base."
            )
        self.predictor = Predictor(config.projection_dim, config.predictor_hidden)
        self.past = PastModel(self)
        self.base.prepare_pseudo_negatives()

    def begin_task(self, task):
        super().begin_task(task)
        self.past.begin_task(task)

    def training_step(self, images, labels, step):
        views = self.views(images)
        h, z, q = self.encode_views(views)
        if self.past.model is None:
            loss = self.base.loss(views, q, z, step)
            return self.finish(loss, {self.base.term: loss.detach()}, h, labels)
        f = [self.past.embed(x) for x in views]
        p = [F.normalize(self.predictor(v), dim=1) for v in self.base.distill_input(q, z)]
        loss = self.base.pseudo_negative_loss(views, q, p, f, step, self.config.distill_temperature)
        return self.finish(loss, {"pnr": loss.detach()}, h, labels)
