"""Sy-CON / PNR (Cha et al., "Regularizing with Pseudo-Negatives for Continual Self-Supervised Learning", ICML 2024,
arXiv 2306.05101; official code csm9493/PNR): pseudo-negatives from the current and the past model.

MoCo base (``base: moco``, default). Task 0 is plain MoCo v2+ (the ``moco`` method). From task 1 on the loss is
½[pnr_moco(view 1) + pnr_moco(view 2)], which **replaces** the MoCo loss; for query view v and other view v̄

    pnr_moco(q_v, k_v̄, p_v, f_v, cat(queue[v̄], past_queue[v̄]), τ, τ_d)

with q_v = normalize(projector(backbone(x_v))), k_v̄ the momentum key of the other view, p_v = normalize(predictor(q_v))
(predictor Linear(d, 2048)–BN–ReLU–Linear(2048, d)), f_v = the past model's normalised projection of the **same** view
v, and both queue slots read before this step's enqueue. After the loss the gathered keys go into ``queue`` and the
gathered f_1, f_2 into ``past_queue`` (slot v ← f_v). The past-model queue has the key queue's shape, holds random unit
vectors until task 1 starts filling it (at its own pointer), and carries over between tasks like the key queue and the
predictor. The past model is a frozen eval-mode copy of encoder + projector taken at the start of every task ≥ 1.

Mapping to the official ``moco_pnr_loss_func(query1, key1, queue1, distill1, query2, key2, queue2, distill2)``: it is
called as ``(z1, k2, queue[1], p1, frozen_z1, k1, past_queue[1], p2)``, so its second term
``l_pos2 = distill1·query2`` is p_1·f_1 — the predictor output of view 1 against the past model's projection of the
same view 1 — with negatives ``distill1·cat(queue1, queue2)`` = p_1 against the other view's slots of both queues;
``key2`` and ``distill2`` are unused. This is DESIGN §3's p = normalize(predictor(q_v)), f = f_v. (The official code
enqueues the f's before the loss but computes it on a copy taken earlier, which is the same as enqueuing after.)

SimCLR base (``base: simclr``): task 0 is the ``simclr`` loss; from task 1 on pnr_simclr(z1, z2, p1, p2, f1, f2, τ_d)
replaces it, with p_v = normalize(predictor(raw projection of view v)) as in the official SimCLR distiller (the
official average over the two view orders equals one call, the loss being symmetric in the views).

The predictor takes no part in task 0, so under ``fabric.strategy=ddp`` the runner asks DDP to allow unused parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..losses import nt_xent, pnr_moco, pnr_simclr
from ..models import Predictor
from ..registry import METHODS
from .cassle import PastPredictorConfig
from .moco import RENAMED_MOCO_STATE, symmetric_moco_loss
from .parts import KeyQueue, MomentumEncoder, clamp_to_task
from .simclr import SelfSupervisedMethod


class SyConConfig(PastPredictorConfig):
    name: str = "sycon"


@METHODS.register("sycon")
class SyCon(SelfSupervisedMethod):
    config_class = SyConConfig
    unused_parameters = True  # the predictor is idle in task 0; DDP must not wait for its gradients
    renamed_state = {**RENAMED_MOCO_STATE, "past_queue": "past_queue.keys", "past_queue_ptr": "past_queue.ptr"}

    def __init__(self, config, backbone, num_classes, transforms):
        super().__init__(config, backbone, num_classes, transforms)
        self.queues: list[KeyQueue] = []
        if config.base == "moco":
            self.momentum_encoder = MomentumEncoder(self.backbone, self.projector, config.base_momentum,
                                                    config.final_momentum)
            self.queue = KeyQueue(config.queue_size, config.projection_dim, clamp=config.clamp_queue)
        self.predictor = Predictor(config.projection_dim, config.predictor_hidden)
        self.register_snapshot("past", lambda: nn.Sequential(self.backbone, self.projector))
        if config.base == "moco":  # the past model's projections, with the key queue's shape
            self.past_queue = KeyQueue(config.queue_size, config.projection_dim, clamp=config.clamp_queue)
            self.queues = [self.queue, self.past_queue]

    def begin_task(self, task):
        super().begin_task(task)
        for queue in self.queues:
            queue.begin_task(len(task.train_labels))
        if task.index > 0:
            self.take_snapshot("past")

    def training_step(self, images, labels, step):
        cfg, views = self.config, self.views(images)
        h, z = self.encode_views(views)
        q = [F.normalize(v, dim=1) for v in z]
        past = self.snapshot("past")
        if past is not None:
            with torch.no_grad():
                f = [F.normalize(past(x), dim=1) for x in views]
            p = [F.normalize(self.predictor(v), dim=1) for v in (q if cfg.base == "moco" else z)]
        if cfg.base == "simclr":
            if past is None:
                loss = nt_xent(*self.scope(*q), temperature=cfg.temperature)
                return self.finish(loss, {"nt_xent": loss.detach()}, h, labels)
            loss = pnr_simclr(*self.scope(*q, *p, *f), temperature=cfg.distill_temperature)
            return self.finish(loss, {"pnr": loss.detach()}, h, labels)
        self.momentum_encoder.update(step, self.backbone, self.projector)
        k = [self.momentum_encoder(x) for x in views]
        keys = torch.stack([self.gather(v) for v in k])
        clamp_to_task(self.queues, keys.shape[1], cfg.name, self.task)
        if past is None:
            loss = symmetric_moco_loss(q, k, self.queue.read(), cfg.temperature)
            self.queue.enqueue(keys)
            return self.finish(loss, {"moco": loss.detach()}, h, labels)
        queue, past_queue = self.queue.read(), self.past_queue.read()
        loss = 0.5 * sum(pnr_moco(q[v], k[1 - v], p[v], f[v], torch.cat([queue[1 - v], past_queue[1 - v]]),
                                  cfg.temperature, cfg.distill_temperature) for v in (0, 1))
        self.queue.enqueue(keys)
        self.past_queue.enqueue(torch.stack([self.gather(f[0]), self.gather(f[1])]))
        return self.finish(loss, {"pnr": loss.detach()}, h, labels)
