"""MoCo v2+ (He et al., CVPR 2020; Chen et al., "Improved Baselines with Momentum Contrastive Learning", arXiv
2003.04297, 2020; the symmetric "v2+" recipe of solo-learn, da Costa et al., JMLR 2022) trained task after task.

Momentum encoder: an EMA copy of backbone + projector, m_s = m_T − (m_T − m_0)(1 + cos(π s / S)) / 2 at step s of the
S steps of a task (m_0 = 0.99 → m_T = 0.999, restarting every task; solo-learn's ``MomentumUpdater``). The update is
applied at the start of step s, before the keys are computed (solo-learn applies it after the previous step).

Queues: one per view, a buffer (2, M, d) of unit keys (M = 65,536 by default) with a pointer buffer; slot v holds the
keys of view v. Step: q_v = normalize(projector(backbone(x_v))), k_v = the momentum encoder's unit key of x_v;
loss = ½[moco_infonce(q1, k2, queue[1]) + moco_infonce(q2, k1, queue[0])]; after the loss the keys of this step,
gathered from every process, are written FIFO at the pointer (queues are identical on every process). The queues carry
over between tasks. When M exceeds a task's training set, rounded down to a multiple of the global batch, the queues
are shrunk to that size at the task's first step (keeping the most recent keys) and a warning says so; they never grow
back (``clamp_queue: false`` keeps M, as the official code does: a queue then holds several epochs' keys per image).
Momentum encoder, queues and pointers are part of ``state_dict``.
"""

from __future__ import annotations

import copy
import logging
import math

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from ..losses import moco_infonce
from ..registry import METHODS
from .simclr import SelfSupervisedConfig, SelfSupervisedMethod

log = logging.getLogger(__name__)


def momentum_at(step: int, steps: int, base: float = 0.99, final: float = 0.999) -> float:
    """Cosine momentum schedule: ``base`` at step 0, ``final`` at step ``steps``."""
    return final - (final - base) * (math.cos(math.pi * step / max(1, steps)) + 1) / 2


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


@METHODS.register("moco")
class MoCo(SelfSupervisedMethod):
    config_class = MoCoConfig

    def __init__(self, config, backbone, num_classes, transforms):
        super().__init__(config, backbone, num_classes, transforms)
        self.queues: list[str] = []
        self._task_size: int | None = None
        if getattr(config, "base", "moco") != "moco":  # cassle / sycon on a SimCLR base need none of this
            return
        self.momentum_backbone = copy.deepcopy(self.backbone).requires_grad_(False)
        self.momentum_projector = copy.deepcopy(self.projector).requires_grad_(False)
        self.add_queue("queue")

    def add_queue(self, name: str) -> None:
        """A (2, M, d) buffer of random unit vectors and its pointer ``<name>_ptr``."""
        shape = (2, self.config.queue_size, self.config.projection_dim)
        self.register_buffer(name, F.normalize(torch.randn(shape), dim=2))
        self.register_buffer(f"{name}_ptr", torch.zeros((), dtype=torch.long))
        self.queues.append(name)

    def begin_task(self, task):
        super().begin_task(task)
        self._task_size = len(task.train_labels)

    # momentum encoder -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def momentum_keys(self, views, step):
        """EMA update for ``step``, then unit keys: ([k1, k2] of this process, (2, B_global, d) gathered)."""
        m = momentum_at(step.step, step.steps_in_task, self.config.base_momentum, self.config.final_momentum)
        online = [*self.backbone.parameters(), *self.projector.parameters()]
        target = [*self.momentum_backbone.parameters(), *self.momentum_projector.parameters()]
        torch._foreach_mul_(target, m)
        torch._foreach_add_(target, [p.detach() for p in online], alpha=1 - m)
        self.momentum = m
        k = [F.normalize(self.momentum_projector(self.momentum_backbone(x)), dim=1) for x in views]
        gathered = torch.stack([self.gather(v) for v in k])
        if self._task_size is not None and self.config.clamp_queue:
            self.clamp_queues(gathered.shape[1])
        return k, gathered

    # queues ---------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def clamp_queues(self, batch: int) -> None:
        size, self._task_size = self._task_size, None
        limit = max(batch, size // batch * batch)
        current = getattr(self, self.queues[0]).shape[1]
        if current <= limit:
            return
        log.warning(f"{self.config.name}: queue_size {current} exceeds the {size} training images of task "
                    f"{self.task.index if self.task else 0} (rounded down to a multiple of the batch of {batch}: "
                    f"{limit}); the queues now hold {limit} entries per view.")
        for name in self.queues:
            queue, ptr = getattr(self, name), getattr(self, f"{name}_ptr")
            keep = (ptr - limit + torch.arange(limit, device=queue.device)) % current  # most recent, oldest first
            queue.data = queue[:, keep].contiguous()
            ptr.zero_()

    @torch.no_grad()
    def enqueue(self, name: str, values: torch.Tensor) -> None:
        """Write (2, n, d) ``values`` FIFO at the pointer of queue ``name`` (wrapping around)."""
        queue, ptr = getattr(self, name), getattr(self, f"{name}_ptr")
        size = queue.shape[1]
        values = values[:, -size:]
        rows = (ptr + torch.arange(values.shape[1], device=queue.device)) % size
        queue[:, rows] = values.to(queue.dtype)
        ptr.copy_((ptr + values.shape[1]) % size)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in self.queues:  # a queue clamped before the checkpoint was written
            saved = state_dict.get(prefix + name)
            if saved is not None and saved.shape != getattr(self, name).shape:
                getattr(self, name).data = saved.new_empty(saved.shape).to(getattr(self, name))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def moco_loss(self, q, k) -> torch.Tensor:
        queue = self.queue.clone()  # read before this step's enqueue (a copy: the buffer is written before backward)
        tau = self.config.temperature
        return (moco_infonce(q[0], k[1], queue[1], tau) + moco_infonce(q[1], k[0], queue[0], tau)) / 2

    def training_step(self, images, labels, step):
        views = self.views(images)
        h, z = self.encode_views(views)
        q = [F.normalize(v, dim=1) for v in z]
        k, keys = self.momentum_keys(views, step)
        loss = self.moco_loss(q, k)
        self.enqueue("queue", keys)
        return self.finish(loss, {"moco": loss.detach()}, h, labels)
