"""MoCo v2+ (He et al., CVPR 2020; Chen et al., "Improved Baselines with Momentum Contrastive Learning", arXiv
2003.04297, 2020; the symmetric "v2+" recipe of solo-learn, da Costa et al., JMLR 2022) trained task after task, and
the MoCo base of ``cassle`` and ``sycon``.

Momentum encoder (:class:`~protosphere.methods.parts.MomentumEncoder`): an EMA copy of backbone + projector,
m_s = m_T − (m_T − m_0)(1 + cos(π s / S)) / 2 at step s of the S steps of a task (m_0 = 0.99 → m_T = 0.999,
restarting every task; solo-learn's ``MomentumUpdater``). The update is applied at the start of step s, before the
keys are computed (solo-learn applies it after the previous step).

Queue (:class:`~protosphere.methods.parts.KeyQueue`): a buffer (2, M, d) of unit keys (M = 65,536 by default) with a
pointer; slot v holds the keys of view v. Step: q_v = normalize(projector(backbone(x_v))), k_v = the momentum
encoder's unit key of x_v; loss = ½[moco_infonce(q1, k2, queue[1]) + moco_infonce(q2, k1, queue[0])]; after the loss
the keys of this step, gathered from every process, are written FIFO at the pointer (queues are identical on every
process). The queues carry over between tasks. When M exceeds a task's training set, rounded down to a multiple of
the global batch, the queues are shrunk to that size at the task's first step (keeping the most recent keys) and a
warning says so; they never grow back (``clamp_queue: false`` keeps M, as the official code does: a queue then holds
several epochs' keys per image). Momentum encoder, queues and pointers are part of ``state_dict``.

As the base of Sy-CON (PNR, Cha et al., ICML 2024) from task 1 on, for query view v and other view v̄::

    loss = ½ Σ_v pnr_moco(q_v, k_v̄, p_v, f_v, cat(queue[v̄], past_queue[v̄]), τ, τ_d)

with p_v = normalize(predictor(q_v)), f_v the past model's normalised projection of the same view v, and both queue
slots read before this step's enqueue. After the loss the gathered keys go into ``queue`` and the gathered f_1, f_2
into ``past_queue`` (slot v ← f_v), a second queue of the key queue's shape that holds random unit vectors until task
1 starts filling it (at its own pointer), is clamped with the key queue and carries over between tasks like it.
CaSSLe's predictor, too, takes the normalised projection q_v.
"""

from __future__ import annotations

import torch
from pydantic import Field, model_validator

from ..losses import moco_infonce, pnr_moco
from ..registry import METHODS
from .parts import KeyQueue, MomentumEncoder, clamp_to_task, momentum_at  # noqa: F401  (momentum_at: public here)
from .self_supervised import SSL_BASES, SelfSupervisedBase, SelfSupervisedConfig, SelfSupervisedMethod


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


@SSL_BASES.register("moco")
class MoCoBase(SelfSupervisedBase):
    """Registers ``momentum_encoder`` and ``queue`` (and, for Sy-CON, ``past_queue``) on the method."""

    term = "moco"
    # checkpoints written before the momentum encoder and the queues were parts
    renamed_state = {
        "momentum_backbone.": "momentum_encoder.backbone.",
        "momentum_projector.": "momentum_encoder.projector.",
        "queue": "queue.keys",
        "queue_ptr": "queue.ptr",
        "past_queue": "past_queue.keys",
        "past_queue_ptr": "past_queue.ptr",
    }

    def __init__(self, method):
        super().__init__(method)
        cfg = method.config
        method.momentum_encoder = MomentumEncoder(
            method.backbone, method.projector, cfg.base_momentum, cfg.final_momentum
        )
        method.queue = KeyQueue(cfg.queue_size, cfg.projection_dim, clamp=cfg.clamp_queue)
        self.queues = [method.queue]

    def prepare_pseudo_negatives(self):
        cfg = self.method.config
        self.method.past_queue = KeyQueue(cfg.queue_size, cfg.projection_dim, clamp=cfg.clamp_queue)
        self.queues.append(self.method.past_queue)

    def begin_task(self, task):
        for queue in self.queues:
            queue.begin_task(len(task.train_labels))

    def keys(self, views, step) -> tuple[list[torch.Tensor], torch.Tensor]:
        """After the momentum update: each view's key on this process, and (2, global batch, d) the keys of every
        process, which every process enqueues alike (so the queues stay identical). Clamps the queues at a task's
        first step."""
        method = self.method
        method.momentum_encoder.update(step, method.backbone, method.projector)
        k = [method.momentum_encoder(x) for x in views]
        keys = torch.stack([method.gather(v) for v in k])
        clamp_to_task(self.queues, keys.shape[1], method.config.name, method.task)
        return k, keys

    def loss(self, views, q, z, step):
        k, keys = self.keys(views, step)
        loss = symmetric_moco_loss(q, k, self.method.queue.read(), self.method.config.temperature)
        self.method.queue.enqueue(keys)
        return loss

    def pseudo_negative_loss(self, views, q, p, f, step, distill_temperature):
        method = self.method
        k, keys = self.keys(views, step)
        queue, past_queue = method.queue.read(), method.past_queue.read()
        loss = 0.5 * sum(
            pnr_moco(
                q[v],
                k[1 - v],
                p[v],
                f[v],
                torch.cat([queue[1 - v], past_queue[1 - v]]),
                method.config.temperature,
                distill_temperature,
            )
            for v in (0, 1)
        )
        method.queue.enqueue(keys)
        method.past_queue.enqueue(torch.stack([method.gather(f[0]), method.gather(f[1])]))
        return loss


@METHODS.register("moco")
class MoCo(SelfSupervisedMethod):
    config_class = MoCoConfig
    recipe = "ssl/moco-class-il"
    base_class = MoCoBase
