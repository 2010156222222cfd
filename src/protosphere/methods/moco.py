"""MoCo v2+ (He et al., CVPR 2020; Chen et al., "Improved Baselines with Momentum Contrastive Learning", arXiv
2003.04297, 2020; the symmetric "v2+" recipe of solo-learn, da Costa et al., JMLR 2022) trained task after task.

Momentum encoder (:class:`~protosphere.methods.parts.MomentumEncoder`): an EMA copy of backbone + projector,
m_s = m_T − (m_T − m_0)(1 + cos(π s / S)) / 2 at step s of the
S steps of a task (m_0 = 0.99 → m_T = 0.999, restarting every task; solo-learn's ``MomentumUpdater``). The update is
applied at the start of step s, before the keys are computed (solo-learn applies it after the previous step).

Queue (:class:`~protosphere.methods.parts.KeyQueue`): a buffer (2, M, d) of unit keys (M = 65,536 by default) with a
pointer; slot v holds the keys of view v. Step: q_v = normalize(projector(backbone(x_v))), k_v = the momentum encoder's
unit key of x_v;
loss = ½[moco_infonce(q1, k2, queue[1]) + moco_infonce(q2, k1, queue[0])]; after the loss the keys of this step,
gathered from every process, are written FIFO at the pointer (queues are identical on every process). The queues carry
over between tasks. When M exceeds a task's training set, rounded down to a multiple of the global batch, the queues
are shrunk to that size at the task's first step (keeping the most recent keys) and a warning says so; they never grow
back (``clamp_queue: false`` keeps M, as the official code does: a queue then holds several epochs' keys per image).
Momentum encoder, queues and pointers are part of ``state_dict``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from ..losses import moco_infonce
from ..registry import METHODS
from .parts import KeyQueue, MomentumEncoder, clamp_to_task, momentum_at  # noqa: F401  (momentum_at: public here)
from .simclr import SelfSupervisedConfig, SelfSupervisedMethod


class MoCoConfig(SelfSupervisedConfig):
    name: str = "moco"
    queue_size: int = Field(65536, ge=1, description="keys per view")
    base_momentum: float = Field(0.99, ge=0, le=1)
    final_momentum: float = Field(0.999, ge=0, le=1)
    clamp_queue: bool = Field(True, description="shrink a queue larger than the task (false: keep M, as official code)")

    @model_validator(mode="after")
    def _ordered(self):
        if self.base_momentum > self.final_momentum:
            raise ValueError("base_momentum must not exceed final_momentum")
        return self


def symmetric_moco_loss(q: list[torch.Tensor], k: list[torch.Tensor], queue: torch.Tensor, tau: float):
    """½[moco_infonce(q1, k2, queue[1]) + moco_infonce(q2, k1, queue[0])]: each view's query against the other
    view's key, with the negatives of that view's queue slot."""
    return (moco_infonce(q[0], k[1], queue[1], tau) + moco_infonce(q[1], k[0], queue[0], tau)) / 2


# checkpoints written before the momentum encoder and the queue were parts
RENAMED_MOCO_STATE = {"momentum_backbone.": "momentum_encoder.backbone.",
                      "momentum_projector.": "momentum_encoder.projector.",
                      "queue": "queue.keys", "queue_ptr": "queue.ptr"}


@METHODS.register("moco")
class MoCo(SelfSupervisedMethod):
    config_class = MoCoConfig
    renamed_state = RENAMED_MOCO_STATE

    def __init__(self, config, backbone, num_classes, transforms):
        super().__init__(config, backbone, num_classes, transforms)
        self.momentum_encoder = MomentumEncoder(self.backbone, self.projector, config.base_momentum,
                                                config.final_momentum)
        self.queue = KeyQueue(config.queue_size, config.projection_dim, clamp=config.clamp_queue)

    def begin_task(self, task):
        super().begin_task(task)
        self.queue.begin_task(len(task.train_labels))

    def training_step(self, images, labels, step):
        views = self.views(images)
        h, z = self.encode_views(views)
        q = [F.normalize(v, dim=1) for v in z]
        self.momentum_encoder.update(step, self.backbone, self.projector)
        k = [self.momentum_encoder(x) for x in views]
        keys = torch.stack([self.gather(v) for v in k])  # every process's keys: the queues stay identical
        clamp_to_task([self.queue], keys.shape[1], self.config.name, self.task)
        loss = symmetric_moco_loss(q, k, self.queue.read(), self.config.temperature)
        self.queue.enqueue(keys)
        return self.finish(loss, {"moco": loss.detach()}, h, labels)
